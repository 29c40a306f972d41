/* The local hub: Cerebrum's tool and agent hubs, served from data_dir.
 *
 * Cerebrum's SDK uploads a package as one JSON object ({author, name,
 * version, license, entry, module, files: [{path, content (base64)}]}, for
 * agents also the whole config.json), downloads the same object back, and
 * lists the hub as an object of {author, name, version, description}
 * values (cerebrum/manager/tool.py, agent.py). This module keeps every
 * version of every package in a folder of its own:
 *
 *   data_dir/hub/{tools,agents}/<author>/<name>/<version>/
 *       package.json   the upload payload as it was accepted (the download answer)
 *       meta.json      {author, name, version, license, entry, module,
 *                       description, requirements, network}
 *       files/         the package's files, decoded (tools run from here,
 *                      agents are launched from here)
 *       tool.zip       tools only: Cerebrum's cache file (hub_tool.c)
 *
 * Versions are immutable: a publish builds the whole folder under a
 * temporary name in the kind's folder and renames it into place, so a
 * reader sees a version completely or not at all, and a second publish of
 * the same version fails the rename (409). Nothing is indexed in memory:
 * the folders are the index (hubs are small; listing reads each meta.json).
 *
 * Parse at the edge: every name, version and file path is checked here
 * (hub_name_ok, hub_version_ok, hub_path_ok) before it becomes a path, so
 * no package can name a file outside its folder.
 *
 * Locks: mu (hub_int.h) is a leaf; this file takes it only for the
 * temporary-name counter. */
#include "hub/hub.h"
#include "hub/hub_int.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- pure checks ---- */

bool hub_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > HUB_NAME_MAX || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

bool hub_version_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 40) return false;
    int parts = 0;
    const char *p = s;
    for (;;) {
        if (!isdigit((unsigned char)*p)) return false;
        size_t digits = 0;
        while (isdigit((unsigned char)*p)) p++, digits++;
        if (digits > 9) return false;
        parts++;
        if (!*p) break;
        if (*p != '.' || parts == 4) return false;
        p++;
    }
    return true;
}

bool hub_path_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > HUB_MAX_PATH || s[0] == '/' || strchr(s, '\\')) return false;
    const char *seg = s;
    for (;;) {
        const char *e = strchr(seg, '/');
        size_t len = e ? (size_t)(e - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)seg[i] < 0x20 || seg[i] == 0x7f) return false;
        if (!e) break;
        seg = e + 1;
    }
    return true;
}

int hub_version_cmp(const char *a, const char *b)
{
    for (;;) {
        long x = 0, y = 0;
        if (*a) x = strtol(a, (char **)&a, 10);
        if (*b) y = strtol(b, (char **)&b, 10);
        if (x != y) return x < y ? -1 : 1;
        if (*a == '.') a++;
        if (*b == '.') b++;
        if (!*a && !*b) return 0;
    }
}

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

unsigned char *hub_b64_decode(const char *s, size_t len, size_t *n)
{
    while (len > 0 && s[len - 1] == '=') len--;
    if (len % 4 == 1) return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64v((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *n = o;
    return out;
}

/* ---- helpers ---- */

bool hub_pathf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r >= 0 && (size_t)r < n;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

static void rm_tree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int write_all(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return AIOS_EIO;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return e == ENOSPC || e == EDQUOT ? AIOS_ENOSPC : AIOS_EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    return close(fd) == 0 ? 0 : AIOS_EIO;
}

/* mkdir -p of the parents of rel below base, 0755 */
static int mkparents(const char *base, const char *rel)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/%s", base, rel) >= (int)sizeof p) return AIOS_EINVAL;
    char *sl = strrchr(p, '/');
    *sl = 0;
    return util_mkdirs(p);
}

const char *hub_root(const struct hub *h, enum hub_kind kind) { return h->dirs[kind]; }

bool hub_network_allowed(const struct hub *h, const char *tool)
{
    size_t i;
    json_t *v;
    json_array_foreach(h->network, i, v) {
        const char *s = json_string_value(v);
        if (s && (!strcmp(s, "*") || !strcmp(s, tool))) return true;
    }
    return false;
}

/* the description of a package: its payload's, else its config.json's
 * (a string, or a list of strings joined) */
static char *describe(json_t *desc)
{
    if (json_is_string(desc)) return strdup(json_string_value(desc));
    if (!json_is_array(desc)) return strdup("");
    size_t len = 1, i;
    json_t *x;
    json_array_foreach(desc, i, x) len += json_string_length(x);
    char *s = calloc(1, len);
    if (!s) return NULL;
    json_array_foreach(desc, i, x) if (json_is_string(x)) strcat(s, json_string_value(x));
    return s;
}

/* the package lines of a requirements file: names before any version
 * specifier, comments and options skipped */
static json_t *requirements(const unsigned char *data, size_t n)
{
    json_t *arr = json_array();
    char line[256];
    size_t i = 0;
    while (arr && i < n) {
        size_t l = 0;
        while (i < n && data[i] != '\n') {
            if (l + 1 < sizeof line) line[l++] = (char)data[i];
            i++;
        }
        i++;
        line[l] = 0;
        char *c = strchr(line, '#');
        if (c) *c = 0;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p || *p == '-') continue;
        size_t k = strcspn(p, "<>=!~;[ \t\r@");
        p[k] = 0;
        if (*p && json_array_size(arr) < 64) json_array_append_new(arr, json_string(p));
    }
    return arr;
}

static char *vdir(const struct hub *h, enum hub_kind kind, const char *author, const char *name,
                  const char *version)
{
    char *p;
    if (asprintf(&p, "%s/%s/%s/%s", h->dirs[kind], author, name, version) < 0) return NULL;
    return p;
}

/* ---- lifecycle ---- */

int hub_open(struct hub **out, const char *data_dir, json_t *section, char *err, size_t errlen)
{
    *out = NULL;
    if (section && !json_is_null(section)) {
        if (!json_is_object(section)) return util_errf(err, errlen, AIOS_ECONFIG, "hub: expected a mapping");
        const char *key;
        json_t *v;
        json_object_foreach(section, key, v) {
            if (strcmp(key, "network"))
                return util_errf(err, errlen, AIOS_ECONFIG, "hub: unknown key '%s' (known: network)", key);
            size_t i;
            json_t *x;
            if (!json_is_array(v))
                return util_errf(err, errlen, AIOS_ECONFIG,
                                 "hub.network: expected a list of tool names (author/name) or \"*\"");
            json_array_foreach(v, i, x) if (!json_is_string(x))
                return util_errf(err, errlen, AIOS_ECONFIG, "hub.network[%zu]: expected a tool name", i);
        }
    }
    struct hub *h = calloc(1, sizeof *h);
    if (!h) return AIOS_ENOMEM;
    pthread_mutex_init(&h->mu, NULL);
    json_t *net = section ? json_object_get(section, "network") : NULL;
    h->network = net ? json_incref(net) : json_array();
    if (asprintf(&h->dirs[HUB_TOOL], "%s/hub/tools", data_dir) < 0) h->dirs[HUB_TOOL] = NULL;
    if (asprintf(&h->dirs[HUB_AGENT], "%s/hub/agents", data_dir) < 0) h->dirs[HUB_AGENT] = NULL;
    if (!h->dirs[0] || !h->dirs[1]) {
        hub_close(h);
        return AIOS_ENOMEM;
    }
    for (int k = 0; k < 2; k++)
        if (util_mkdirs(h->dirs[k])) {
            snprintf(err, errlen, "cannot create the hub's folder %s: %s", h->dirs[k], strerror(errno));
            hub_close(h);
            return AIOS_EIO;
        }
    *out = h;
    return 0;
}

void hub_close(struct hub *h)
{
    if (!h) return;
    hub_tools_free(h);
    json_decref(h->network);
    free(h->dirs[0]);
    free(h->dirs[1]);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* ---- publish ---- */

struct pkg_file {
    const char *path;
    unsigned char *data;
    size_t n;
};

static const char *str_field(json_t *p, const char *key)
{
    return json_string_value(json_object_get(p, key));
}

int hub_publish(struct hub *h, enum hub_kind kind, json_t *payload, json_t **info, char *err,
                size_t errlen)
{
    *info = NULL;
    const char *what = kind == HUB_TOOL ? "tool" : "agent";
    if (!json_is_object(payload))
        return util_errf(err, errlen, AIOS_EINVAL, "the %s package must be a JSON object", what);
    const char *author = str_field(payload, "author"), *name = str_field(payload, "name"),
               *version = str_field(payload, "version");
    const char *entry = str_field(payload, "entry"), *module = str_field(payload, "module");
    if (!hub_name_ok(author))
        return util_errf(err, errlen, AIOS_EINVAL, "author: expected 1 to %d of [A-Za-z0-9_.-] "
                         "(config.json meta.author)", HUB_NAME_MAX);
    if (!hub_name_ok(name))
        return util_errf(err, errlen, AIOS_EINVAL, "name: expected 1 to %d of [A-Za-z0-9_.-] "
                         "(config.json name)", HUB_NAME_MAX);
    if (!hub_version_ok(version))
        return util_errf(err, errlen, AIOS_EINVAL, "version: expected 1 to 4 dot-separated "
                         "numbers such as 0.0.1 (config.json meta.version)");
    if (!entry) entry = kind == HUB_TOOL ? "tool.py" : "agent.py";
    if (!module) module = kind == HUB_TOOL ? "Tool" : "Agent";
    if (!hub_path_ok(entry))
        return util_errf(err, errlen, AIOS_EINVAL, "entry: '%.200s' is not a path inside the package", entry);
    for (const char *c = module; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_') || strlen(module) > 128)
            return util_errf(err, errlen, AIOS_EINVAL, "module: expected a Python class name");
    if (!*module || isdigit((unsigned char)module[0]))
        return util_errf(err, errlen, AIOS_EINVAL, "module: expected a Python class name");
    json_t *files = json_object_get(payload, "files");
    if (!json_is_array(files) || json_array_size(files) == 0 ||
        json_array_size(files) > HUB_MAX_FILES)
        return util_errf(err, errlen, AIOS_EINVAL, "files: expected a list of 1 to %d "
                         "{\"path\", \"content\" (base64)}", HUB_MAX_FILES);

    int rc = 0;
    size_t nf = json_array_size(files);
    struct pkg_file *pf = calloc(nf, sizeof *pf);
    char *tmp = NULL, *final = NULL, *desc = NULL;
    json_t *meta = NULL, *reqs = NULL, *config = NULL;
    if (!pf) return AIOS_ENOMEM;
    bool has_entry = false;
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(files, i);
        const char *path = str_field(f, "path");
        json_t *c = json_object_get(f, "content");
        if (!hub_path_ok(path)) {
            rc = util_errf(err, errlen, AIOS_EINVAL, "files[%zu].path: '%.200s' is not a relative "
                           "path inside the package (no '..', no leading '/')", i, path ? path : "");
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(pf[j].path, path)) {
                rc = util_errf(err, errlen, AIOS_EINVAL, "files[%zu].path: '%.200s' twice", i, path);
                goto out;
            }
        /* a file and a folder of the same name cannot both exist */
        for (size_t j = 0; j < i; j++) {
            size_t a = strlen(pf[j].path), b = strlen(path);
            if ((a < b && !strncmp(pf[j].path, path, a) && path[a] == '/') ||
                (b < a && !strncmp(pf[j].path, path, b) && pf[j].path[b] == '/')) {
                rc = util_errf(err, errlen, AIOS_EINVAL, "files[%zu].path: '%.200s' is both a file "
                               "and a folder", i, path);
                goto out;
            }
        }
        if (!json_is_string(c) ||
            !(pf[i].data = hub_b64_decode(json_string_value(c), json_string_length(c), &pf[i].n))) {
            rc = util_errf(err, errlen, AIOS_EINVAL, "files[%zu].content (%s): expected base64 text",
                           i, path);
            goto out;
        }
        pf[i].path = path;
        if (!strcmp(path, entry)) has_entry = true;
        if (!strcmp(path, kind == HUB_TOOL ? "requirements.txt" : "meta_requirements.txt"))
            reqs = requirements(pf[i].data, pf[i].n);
        if (!strcmp(path, "config.json")) config = json_loadb((const char *)pf[i].data, pf[i].n, 0, NULL);
    }
    if (!has_entry) {
        rc = util_errf(err, errlen, AIOS_EINVAL, "entry: the package has no file '%s' "
                       "(config.json build.entry)", entry);
        goto out;
    }
    if (kind == HUB_AGENT && !json_is_object(config)) {
        rc = util_errf(err, errlen, AIOS_EINVAL, "an agent package needs its config.json (a JSON "
                       "object) among its files");
        goto out;
    }
    json_t *d = json_object_get(payload, "description");
    desc = describe(d ? d : json_object_get(config, "description"));
    bool net = json_is_true(json_object_get(json_object_get(config, "aios"), "network"));
    const char *license = str_field(payload, "license");
    meta = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:b}", "author", author, "name", name,
                     "version", version, "license", license ? license : "Unknown", "entry", entry,
                     "module", module, "description", desc ? desc : "", "requirements",
                     reqs ? json_incref(reqs) : json_array(), "network", net);
    if (!desc || !meta) {
        rc = AIOS_ENOMEM;
        goto out;
    }

    /* build the version's folder under a temporary name, then rename it */
    pthread_mutex_lock(&h->mu);
    unsigned long seq = ++h->seq;
    pthread_mutex_unlock(&h->mu);
    if (asprintf(&tmp, "%s/.tmp-%ld-%lu", h->dirs[kind], (long)getpid(), seq) < 0) tmp = NULL;
    final = vdir(h, kind, author, name, version);
    if (!tmp || !final) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    char fdir[PATH_MAX];
    snprintf(fdir, sizeof fdir, "%s/files", tmp);
    if (util_mkdirs(fdir)) {
        rc = util_errf(err, errlen, AIOS_EIO, "cannot create %s: %s", fdir, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < nf && !rc; i++) {
        char p[PATH_MAX];
        (void)hub_pathf(p, sizeof p, "%s/%s", fdir, pf[i].path);
        rc = mkparents(fdir, pf[i].path);
        if (!rc) rc = write_all(p, pf[i].data, pf[i].n, 0644);
        if (rc) snprintf(err, errlen, "cannot write %s: %s", p, strerror(errno));
    }
    char p[PATH_MAX];
    if (!rc) {
        snprintf(p, sizeof p, "%s/meta.json", tmp);
        rc = json_dump_file(meta, p, JSON_INDENT(1)) ? AIOS_EIO : 0;
    }
    if (!rc) {
        snprintf(p, sizeof p, "%s/package.json", tmp);
        rc = json_dump_file(payload, p, JSON_COMPACT) ? AIOS_EIO : 0;
    }
    if (!rc && kind == HUB_TOOL) {
        /* Cerebrum's cache file: metadata.json and the files, stored */
        struct hub_zip_entry *ze = calloc(nf + 1, sizeof *ze);
        json_t *zm = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "author", author, "name", name,
                               "version", version, "license", license ? license : "Unknown",
                               "entry", entry, "module", module);
        char *zms = zm ? json_dumps(zm, JSON_COMPACT) : NULL;
        if (!ze || !zms) {
            rc = AIOS_ENOMEM;
        } else {
            ze[0] = (struct hub_zip_entry){"metadata.json", (const unsigned char *)zms, strlen(zms)};
            for (size_t i = 0; i < nf; i++)
                ze[i + 1] = (struct hub_zip_entry){pf[i].path, pf[i].data, pf[i].n};
            snprintf(p, sizeof p, "%s/tool.zip", tmp);
            rc = hub_zip_write(p, ze, nf + 1, err, errlen);
        }
        free(ze);
        free(zms);
        json_decref(zm);
    }
    if (rc) {
        if (!err[0]) snprintf(err, errlen, "cannot store the %s: %s", what, aios_strerror(rc));
        goto out;
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s/%s/%s", h->dirs[kind], author, name);
    if (util_mkdirs(parent) || rename(tmp, final) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            rc = util_errf(err, errlen, AIOS_EBUSY, "%s %s/%s version %s is already in the hub; "
                           "versions do not change: raise meta.version", what, author, name, version);
        else
            rc = util_errf(err, errlen, AIOS_EIO, "cannot store %s: %s", final, strerror(errno));
        goto out;
    }
    LOG_INFO("hub", "published %s %s/%s %s (%zu files)", what, author, name, version, nf);
    *info = json_pack("{s:s,s:s,s:s,s:s,s:O}", "author", author, "name", name, "version", version,
                      "kind", what, "requirements", json_object_get(meta, "requirements"));
    if (!*info) rc = AIOS_ENOMEM;
out:
    if (tmp && rc) rm_tree(tmp);
    free(tmp);
    free(final);
    free(desc);
    json_decref(meta);
    json_decref(reqs);
    json_decref(config);
    for (size_t i = 0; i < nf; i++) free(pf[i].data);
    free(pf);
    return rc;
}

/* ---- reading ---- */

int hub_newest(struct hub *h, enum hub_kind kind, const char *author, const char *name, char *ver,
               size_t verlen)
{
    ver[0] = 0;
    if (!hub_name_ok(author) || !hub_name_ok(name)) return AIOS_ENOTFOUND;
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/%s/%s", h->dirs[kind], author, name);
    DIR *dir = opendir(d);
    if (!dir) return AIOS_ENOTFOUND;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (hub_version_ok(e->d_name) && (!ver[0] || hub_version_cmp(e->d_name, ver) > 0))
            snprintf(ver, verlen, "%s", e->d_name);
    closedir(dir);
    return ver[0] ? 0 : AIOS_ENOTFOUND;
}

int hub_get(struct hub *h, enum hub_kind kind, const char *author, const char *name,
            const char *version, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *what = kind == HUB_TOOL ? "tool" : "agent";
    if (!hub_name_ok(author) || !hub_name_ok(name))
        return util_errf(err, errlen, AIOS_EINVAL, "author and name must be given, each 1 to %d "
                         "of [A-Za-z0-9_.-]", HUB_NAME_MAX);
    if (version && !hub_version_ok(version))
        return util_errf(err, errlen, AIOS_EINVAL, "version: expected dot-separated numbers");
    char ver[48];
    if (version) snprintf(ver, sizeof ver, "%s", version);
    else if (hub_newest(h, kind, author, name, ver, sizeof ver))
        return util_errf(err, errlen, AIOS_ENOTFOUND, "no %s %s/%s in the hub", what, author, name);
    char *d = vdir(h, kind, author, name, ver);
    if (!d) return AIOS_ENOMEM;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/package.json", d);
    free(d);
    *out = json_load_file(p, 0, NULL);
    if (!*out)
        return util_errf(err, errlen, AIOS_ENOTFOUND, "no %s %s/%s version %s in the hub", what,
                         author, name, ver);
    return 0;
}

int hub_check_updates(struct hub *h, enum hub_kind kind, const char *author, const char *name,
                      const char *current, bool *newer, char *err, size_t errlen)
{
    *newer = false;
    if (!current || !hub_version_ok(current))
        return util_errf(err, errlen, AIOS_EINVAL, "current_version: expected dot-separated numbers");
    char ver[48];
    if (hub_newest(h, kind, author, name, ver, sizeof ver))
        return util_errf(err, errlen, AIOS_ENOTFOUND, "no %s %s/%s in the hub",
                         kind == HUB_TOOL ? "tool" : "agent", author ? author : "", name ? name : "");
    *newer = hub_version_cmp(ver, current) > 0;
    return 0;
}

json_t *hub_list(struct hub *h, enum hub_kind kind)
{
    json_t *out = json_object();
    size_t n = 0;
    DIR *da = opendir(h->dirs[kind]);
    struct dirent *a;
    while (out && da && (a = readdir(da))) {
        if (!hub_name_ok(a->d_name)) continue;
        char pa[PATH_MAX];
        snprintf(pa, sizeof pa, "%s/%s", h->dirs[kind], a->d_name);
        DIR *dn = opendir(pa);
        struct dirent *nm;
        while (dn && (nm = readdir(dn))) {
            if (!hub_name_ok(nm->d_name)) continue;
            char pn[PATH_MAX];
            (void)hub_pathf(pn, sizeof pn, "%s/%s", pa, nm->d_name);
            DIR *dv = opendir(pn);
            struct dirent *v;
            while (dv && (v = readdir(dv))) {
                if (!hub_version_ok(v->d_name)) continue;
                char pm[PATH_MAX + 300];
                snprintf(pm, sizeof pm, "%s/%s/meta.json", pn, v->d_name);
                json_t *m = json_load_file(pm, 0, NULL);
                if (!m) continue;
                char key[3 * HUB_NAME_MAX];
                (void)hub_pathf(key, sizeof key, "%s/%s/%s", a->d_name, nm->d_name, v->d_name);
                json_object_set_new(out, key, m);
                n++;
            }
            if (dv) closedir(dv);
        }
        if (dn) closedir(dn);
    }
    if (da) closedir(da);
    if (out && kind == HUB_AGENT) json_object_set_new(out, "aios_total", json_integer((json_int_t)n));
    return out;
}
