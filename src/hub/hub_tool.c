/* Hub tools at run time: Cerebrum's cache for agents, and the kernel
 * running a hub tool's Python class.
 *
 * Agents. Cerebrum's AutoTool.from_preloaded("author/name") asks its
 * ToolManager, which looks in platformdirs.user_cache_dir("cerebrum_tools")
 * (on Linux $XDG_CACHE_HOME/cerebrum_tools) for author/name/<version with
 * '-'>.tool, a zip of metadata.json plus the tool's files, and only goes
 * to the hub's URL when none is there. hub_fill_cache writes the newest
 * version of every hub tool there for each run (the agent factory sets
 * XDG_CACHE_HOME to the run's own folder), so stock agents load their
 * tools offline, unchanged. The .tool files are built once, at publish
 * (hub_zip_write: a stored zip, as zipfile writes by default).
 *
 * The kernel. A tool call naming a hub tool (the registry does not know
 * it; the tool manager asks hub_tool_resolve) runs the tool's class in the
 * tool sandbox through a small Python host (HOST below, passed with -c,
 * so nothing else needs to be bound into the sandbox): it checks the
 * package's declared requirements (requirements.txt) and reports the
 * missing ones by name (nothing is installed at run time), imports the
 * entry, instantiates build.module, and either prints
 * get_tool_call_format() ("describe") or reads the arguments from stdin,
 * calls run(params) and prints the result as JSON ("run"). What the tool
 * prints itself goes to stderr, so it cannot corrupt the result. The
 * first call of a version describes it once (the schema then validates
 * every call in C like any other tool's); the resolved tool lives until
 * hub_close, since the tool manager may be running it. Limits: the
 * operator's tools.defaults; a package's config.json "aios" properties
 * may only lower them. Network: only when the package declares
 * "aios": {"network": true} and the operator lists it in hub.network.
 *
 * Locks: h->mu (leaf) guards the resolved tools; the describe run happens
 * outside it (two threads may both describe a version once; the second
 * result is dropped). */
#include "hub/hub.h"
#include "hub/hub_int.h"

#include "llm/schema.h"
#include "tools/tools.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a stored zip ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    uint32_t *table = crc_table;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put16(unsigned char *b, uint16_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *b, uint32_t v)
{
    put16(b, (uint16_t)v);
    put16(b + 2, (uint16_t)(v >> 16));
}

int hub_zip_write(const char *path, const struct hub_zip_entry *e, size_t n, char *err,
                  size_t errlen)
{
    if (n > 0xFFFF) return util_errf(err, errlen, AIOS_ETOOBIG, "too many files for one archive");
    FILE *f = fopen(path, "wbx");
    if (!f) return util_errf(err, errlen, AIOS_EIO, "cannot create %s: %s", path, strerror(errno));
    uint32_t *offs = calloc(n ? n : 1, sizeof *offs), *crcs = calloc(n ? n : 1, sizeof *crcs);
    int rc = offs && crcs ? 0 : AIOS_ENOMEM;
    uint64_t off = 0;
    unsigned char h[46];
    for (size_t i = 0; i < n && !rc; i++) {
        size_t nl = strlen(e[i].name);
        if (e[i].n > 0xFFFFFFF0u || off > 0xFFFFFFF0u) {
            rc = util_errf(err, errlen, AIOS_ETOOBIG, "the archive would exceed 4 GiB");
            break;
        }
        crcs[i] = crc32_of(e[i].data, e[i].n);
        offs[i] = (uint32_t)off;
        memset(h, 0, sizeof h);
        put32(h, 0x04034b50);
        put16(h + 4, 20);          /* version needed */
        put16(h + 8, 0);           /* stored */
        put16(h + 12, 0x21);       /* 1980-01-01 */
        put32(h + 14, crcs[i]);
        put32(h + 18, (uint32_t)e[i].n);
        put32(h + 22, (uint32_t)e[i].n);
        put16(h + 26, (uint16_t)nl);
        if (fwrite(h, 1, 30, f) != 30 || fwrite(e[i].name, 1, nl, f) != nl ||
            (e[i].n && fwrite(e[i].data, 1, e[i].n, f) != e[i].n))
            rc = AIOS_EIO;
        off += 30 + nl + e[i].n;
    }
    uint64_t cd = off;
    for (size_t i = 0; i < n && !rc; i++) {
        size_t nl = strlen(e[i].name);
        memset(h, 0, sizeof h);
        put32(h, 0x02014b50);
        put16(h + 4, 0x0314);      /* made by: unix, 2.0 */
        put16(h + 6, 20);
        put16(h + 14, 0x21);
        put32(h + 16, crcs[i]);
        put32(h + 20, (uint32_t)e[i].n);
        put32(h + 24, (uint32_t)e[i].n);
        put16(h + 28, (uint16_t)nl);
        put32(h + 38, (uint32_t)0644 << 16); /* external attributes: -rw-r--r-- */
        put32(h + 42, offs[i]);
        if (fwrite(h, 1, 46, f) != 46 || fwrite(e[i].name, 1, nl, f) != nl) rc = AIOS_EIO;
        off += 46 + nl;
    }
    if (!rc) {
        memset(h, 0, 22);
        put32(h, 0x06054b50);
        put16(h + 8, (uint16_t)n);
        put16(h + 10, (uint16_t)n);
        put32(h + 12, (uint32_t)(off - cd));
        put32(h + 16, (uint32_t)cd);
        if (fwrite(h, 1, 22, f) != 22) rc = AIOS_EIO;
    }
    if (fclose(f) != 0 && !rc) rc = AIOS_EIO;
    if (rc && !err[0]) snprintf(err, errlen, "cannot write %s: %s", path, aios_strerror(rc));
    if (rc) unlink(path);
    free(offs);
    free(crcs);
    return rc;
}

/* ---- Cerebrum's cache for a run ---- */

static int copy_file(const char *from, const char *to, uid_t uid)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return AIOS_EIO;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = out < 0 ? AIOS_EIO : 0;
    char buf[65536];
    ssize_t r;
    while (!rc && (r = read(in, buf, sizeof buf)) != 0) {
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = AIOS_EIO;
            break;
        }
        for (ssize_t o = 0; o < r && !rc;) {
            ssize_t w = write(out, buf + o, (size_t)(r - o));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) rc = AIOS_EIO;
            else o += w;
        }
    }
    close(in);
    if (out >= 0) {
        if (!rc && uid && fchown(out, uid, uid) != 0) rc = AIOS_EIO;
        if (close(out) != 0) rc = AIOS_EIO;
    }
    return rc;
}

/* mkdir (0700) owned by uid */
static int mkdir_own(const char *p, uid_t uid)
{
    if (mkdir(p, 0700) != 0 && errno != EEXIST) return AIOS_EIO;
    if (uid && chown(p, uid, uid) != 0) return AIOS_EIO;
    return 0;
}

int hub_fill_cache(struct hub *h, const char *cache_home, uid_t uid, char *err, size_t errlen)
{
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%s/cerebrum_tools", cache_home);
    if (mkdir_own(cache_home, uid) || mkdir_own(base, uid))
        return util_errf(err, errlen, AIOS_EIO, "cannot create %s: %s", base, strerror(errno));
    int rc = 0, n = 0;
    DIR *da = opendir(h->dirs[HUB_TOOL]);
    struct dirent *a;
    while (!rc && da && (a = readdir(da))) {
        if (!hub_name_ok(a->d_name)) continue;
        char pa[PATH_MAX];
        snprintf(pa, sizeof pa, "%s/%s", h->dirs[HUB_TOOL], a->d_name);
        DIR *dn = opendir(pa);
        struct dirent *nm;
        bool made = false;
        while (!rc && dn && (nm = readdir(dn))) {
            char ver[48];
            if (!hub_name_ok(nm->d_name) ||
                hub_newest(h, HUB_TOOL, a->d_name, nm->d_name, ver, sizeof ver))
                continue;
            char da_[PATH_MAX], dn_[PATH_MAX + 80], from[PATH_MAX + 200], to[PATH_MAX + 200];
            (void)hub_pathf(da_, sizeof da_, "%s/%s", base, a->d_name);
            (void)hub_pathf(dn_, sizeof dn_, "%s/%s", da_, nm->d_name);
            if ((!made && mkdir_own(da_, uid)) || mkdir_own(dn_, uid)) {
                rc = util_errf(err, errlen, AIOS_EIO, "cannot create %s: %s", dn_, strerror(errno));
                break;
            }
            made = true;
            (void)hub_pathf(from, sizeof from, "%s/%s/%s/tool.zip", pa, nm->d_name, ver);
            for (char *c = ver; *c; c++)
                if (*c == '.') *c = '-'; /* Cerebrum's _version_to_path */
            (void)hub_pathf(to, sizeof to, "%s/%s.tool", dn_, ver);
            if (copy_file(from, to, uid))
                rc = util_errf(err, errlen, AIOS_EIO, "cannot copy %s to %s: %s", from, to,
                               strerror(errno));
            n++;
        }
        if (dn) closedir(dn);
    }
    if (da) closedir(da);
    if (!rc) LOG_DEBUG("hub", "%d hub tools in %s", n, base);
    return rc;
}

char *hub_agent_dir(struct hub *h, const char *ref)
{
    char author[HUB_NAME_MAX + 1], name[HUB_NAME_MAX + 1], ver[48];
    const char *sl = ref ? strchr(ref, '/') : NULL;
    if (!sl || (size_t)(sl - ref) > HUB_NAME_MAX || strlen(sl + 1) > HUB_NAME_MAX) return NULL;
    snprintf(author, sizeof author, "%.*s", (int)(sl - ref), ref);
    snprintf(name, sizeof name, "%s", sl + 1);
    if (hub_newest(h, HUB_AGENT, author, name, ver, sizeof ver)) return NULL;
    char *p;
    if (asprintf(&p, "%s/%s/%s/%s/files", h->dirs[HUB_AGENT], author, name, ver) < 0) return NULL;
    return p;
}

/* ---- the Python host ---- */

/* argv: python3 -I -B -c HOST FOLDER ENTRY MODULE MODE; exit 3: it cannot
 * run here (missing packages, a broken package), with the reason on stderr */
static const char HOST[] =
    "import importlib, importlib.util, json, os, re, sys, types\n"
    "out = sys.stdout\n"
    "sys.stdout = sys.stderr\n"
    "d, entry, module, mode = sys.argv[1:5]\n"
    "def fail(msg):\n"
    "    sys.stderr.write(msg + '\\n')\n"
    "    sys.exit(3)\n"
    "missing = []\n"
    "rq = os.path.join(d, 'requirements.txt')\n"
    "if os.path.exists(rq):\n"
    "    import importlib.metadata as md\n"
    "    for line in open(rq, encoding='utf-8', errors='replace'):\n"
    "        line = line.split('#')[0].strip()\n"
    "        if not line or line.startswith('-'):\n"
    "            continue\n"
    "        name = re.split(r'[<>=!~;\\[\\s@]', line, maxsplit=1)[0]\n"
    "        try:\n"
    "            md.version(name)\n"
    "        except Exception:\n"
    "            try:\n"
    "                found = importlib.util.find_spec(name.replace('-', '_').lower()) is not None\n"
    "            except Exception:\n"
    "                found = False\n"
    "            if not found:\n"
    "                missing.append(name)\n"
    "if missing:\n"
    "    fail('missing Python packages: %s (declared in requirements.txt); aios installs nothing '\n"
    "         'at run time: the operator installs them on the kernel host (Debian: apt install '\n"
    "         'python3-NAME where packaged, else pip)' % ', '.join(missing))\n"
    "try:\n"
    "    import cerebrum.tool.base\n"
    "except ImportError:\n"
    "    class BaseTool:\n"
    "        def __init__(self):\n"
    "            pass\n"
    "        def run(self, params):\n"
    "            pass\n"
    "        def get_tool_call_format(self):\n"
    "            pass\n"
    "    class BaseRapidAPITool(BaseTool):\n"
    "        pass\n"
    "    class BaseHuggingfaceTool(BaseTool):\n"
    "        pass\n"
    "    def get_from_env(env_key, default=None):\n"
    "        if os.environ.get(env_key):\n"
    "            return os.environ[env_key]\n"
    "        if default is not None:\n"
    "            return default\n"
    "        raise ValueError('Did not find %s: the tool sandbox has no such environment variable' % env_key)\n"
    "    for n in ('cerebrum', 'cerebrum.tool', 'cerebrum.tool.base', 'cerebrum.utils'):\n"
    "        sys.modules.setdefault(n, types.ModuleType(n))\n"
    "    base = sys.modules['cerebrum.tool.base']\n"
    "    base.BaseTool, base.BaseRapidAPITool, base.BaseHuggingfaceTool = BaseTool, BaseRapidAPITool, BaseHuggingfaceTool\n"
    "    sys.modules['cerebrum.utils'].get_from_env = get_from_env\n"
    "sys.path.insert(0, d)\n"
    "try:\n"
    "    spec = importlib.util.spec_from_file_location(module, os.path.join(d, entry))\n"
    "    mod = importlib.util.module_from_spec(spec)\n"
    "    sys.modules[module] = mod\n"
    "    spec.loader.exec_module(mod)\n"
    "except ModuleNotFoundError as e:\n"
    "    fail('missing Python module %r, imported by %s; aios installs nothing at run time: the '\n"
    "         'operator installs it on the kernel host' % (e.name, entry))\n"
    "cls = getattr(mod, module, None)\n"
    "if cls is None:\n"
    "    fail('%s defines no class %s (config.json build.module)' % (entry, module))\n"
    "tool = cls()\n"
    "if mode == 'describe':\n"
    "    out.write(json.dumps(tool.get_tool_call_format()))\n"
    "    sys.exit(0)\n"
    "params = json.load(sys.stdin)\n"
    "res = tool.run(params)\n"
    "try:\n"
    "    text = json.dumps(res)\n"
    "except (TypeError, ValueError):\n"
    "    text = json.dumps(str(res))\n"
    "out.write(text)\n";

static const char *python3(void)
{
    static const char *const cands[] = {"/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], X_OK) == 0) return cands[i];
    return NULL;
}

static char **host_argv(const char *py, const char *dir, const char *entry, const char *module,
                        const char *mode)
{
    const char *v[] = {py, "-I", "-B", "-c", HOST, dir, entry, module, mode};
    size_t n = sizeof v / sizeof v[0];
    char **argv = calloc(n + 1, sizeof *argv);
    for (size_t i = 0; argv && i < n; i++)
        if (!(argv[i] = strdup(v[i]))) {
            for (size_t j = 0; j < i; j++) free(argv[j]);
            free(argv);
            return NULL;
        }
    return argv;
}

static void free_argv(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++) free(argv[i]);
    free(argv);
}

void hub_tools_free(struct hub *h)
{
    for (size_t i = 0; i < h->n_ents; i++) tool_free(h->ents[i].t);
    free(h->ents);
    h->ents = NULL;
    h->n_ents = h->cap_ents = 0;
}

static struct tool *find_ent(struct hub *h, const char *key)
{
    struct tool *t = NULL;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_ents && !t; i++)
        if (!strcmp(h->ents[i].key, key)) t = h->ents[i].t;
    pthread_mutex_unlock(&h->mu);
    return t;
}

/* the limits of a hub tool: the operator's defaults, lowered (never
 * raised) by the package's "aios" properties */
static int tool_props(struct hub *h, struct tool *t, json_t *aios, char *err, size_t errlen)
{
    struct tool def = {0};
    json_t *empty = json_object();
    int rc = empty ? tool_cfg_props(empty, "tools.defaults", &def, err, errlen) : AIOS_ENOMEM;
    json_decref(empty);
    for (int i = 0; i < def.n_conflicts; i++) free(def.conflicts[i]);
    if (rc) return rc;
    json_t *props = json_is_object(aios) ? aios : NULL;
    if (props && (rc = tool_cfg_props(props, "config.json aios", t, err, errlen))) return rc;
    if (!props) t->limits = def.limits;
    if (t->limits.cpu_s > def.limits.cpu_s || t->limits.cpu_s <= 0) t->limits.cpu_s = def.limits.cpu_s;
    if (t->limits.mem_bytes > def.limits.mem_bytes || !t->limits.mem_bytes)
        t->limits.mem_bytes = def.limits.mem_bytes;
    if (t->limits.max_procs > def.limits.max_procs || t->limits.max_procs <= 0)
        t->limits.max_procs = def.limits.max_procs;
    t->limits.max_file_bytes = def.limits.max_file_bytes;
    if (t->timeout_ms <= 0 || t->timeout_ms > TOOL_DEFAULT_TIMEOUT_MS) t->timeout_ms = TOOL_DEFAULT_TIMEOUT_MS;
    if (!t->max_output_bytes || t->max_output_bytes > TOOL_DEFAULT_MAX_OUTPUT)
        t->max_output_bytes = TOOL_DEFAULT_MAX_OUTPUT;
    bool declared = t->network;
    t->network = declared && hub_network_allowed(h, t->name);
    if (declared && !t->network)
        LOG_WARN("hub", "hub tool %s declares network use, but hub.network does not allow it: it "
                 "runs without the network", t->name);
    return 0;
}

/* which author publishes a bare tool name: 0 with author, AIOS_ENOTFOUND,
 * or AIOS_EINVAL when several do */
static int bare_author(struct hub *h, const char *name, char *author, size_t alen, char *err,
                       size_t errlen)
{
    author[0] = 0;
    int n = 0;
    char others[256] = "";
    DIR *da = opendir(h->dirs[HUB_TOOL]);
    struct dirent *a;
    while (da && (a = readdir(da))) {
        char ver[48];
        if (!hub_name_ok(a->d_name) || hub_newest(h, HUB_TOOL, a->d_name, name, ver, sizeof ver))
            continue;
        if (!n++) (void)hub_pathf(author, alen, "%s", a->d_name);
        (void)hub_pathf(others + strlen(others), sizeof others - strlen(others), "%s%s/%s",
                 others[0] ? ", " : "", a->d_name, name);
    }
    if (da) closedir(da);
    if (n == 0) return AIOS_ENOTFOUND;
    if (n > 1)
        return util_errf(err, errlen, AIOS_EINVAL, "tool name '%s' is ambiguous in the hub (%s): "
                         "name it as author/name", name, others);
    return 0;
}

int hub_tool_canonical(struct hub *h, const char *name, char *out, size_t outlen)
{
    char author[HUB_NAME_MAX + 1], ver[48], why[8];
    const char *sl = strchr(name, '/');
    if (sl) {
        if ((size_t)(sl - name) > HUB_NAME_MAX || strlen(sl + 1) > HUB_NAME_MAX) return AIOS_ENOTFOUND;
        snprintf(author, sizeof author, "%.*s", (int)(sl - name), name);
        if (hub_newest(h, HUB_TOOL, author, sl + 1, ver, sizeof ver)) return AIOS_ENOTFOUND;
        return hub_pathf(out, outlen, "%s", name) ? 0 : AIOS_EINVAL;
    }
    if (strlen(name) > HUB_NAME_MAX || !hub_name_ok(name)) return AIOS_ENOTFOUND;
    int rc = bare_author(h, name, author, sizeof author, why, sizeof why);
    if (rc) return rc;
    return hub_pathf(out, outlen, "%s/%s", author, name) ? 0 : AIOS_EINVAL;
}

int hub_tool_resolve(void *ud, const char *name, struct tool **out, char *err, size_t errlen)
{
    struct hub *h = ud;
    *out = NULL;
    char author[HUB_NAME_MAX + 1], nm[HUB_NAME_MAX + 1], ver[48];
    const char *sl = strchr(name, '/');
    if (sl) {
        if ((size_t)(sl - name) > HUB_NAME_MAX || strlen(sl + 1) > HUB_NAME_MAX) return AIOS_ENOTFOUND;
        snprintf(author, sizeof author, "%.*s", (int)(sl - name), name);
        snprintf(nm, sizeof nm, "%s", sl + 1);
    } else {
        if (strlen(name) > HUB_NAME_MAX || !hub_name_ok(name)) return AIOS_ENOTFOUND;
        snprintf(nm, sizeof nm, "%s", name);
        int rc = bare_author(h, nm, author, sizeof author, err, errlen);
        if (rc) return rc;
    }
    if (hub_newest(h, HUB_TOOL, author, nm, ver, sizeof ver)) return AIOS_ENOTFOUND;
    char key[sizeof ((struct hub_tool_ent *)0)->key];
    snprintf(key, sizeof key, "%s/%s@%s", author, nm, ver);
    if ((*out = find_ent(h, key))) return 0;

    /* first call of this version: build the tool and learn its schema */
    int rc = 0;
    char vd[PATH_MAX], p[PATH_MAX + 16];
    snprintf(vd, sizeof vd, "%s/%s/%s/%s", h->dirs[HUB_TOOL], author, nm, ver);
    snprintf(p, sizeof p, "%s/meta.json", vd);
    json_t *meta = json_load_file(p, 0, NULL), *config = NULL, *fmt_ = NULL;
    char *sout = NULL, *serr = NULL;
    char **dargv = NULL;
    const char *py = python3();
    struct tool *t = calloc(1, sizeof *t);
    if (!t || !meta) {
        rc = t ? util_errf(err, errlen, AIOS_EIO, "hub tool %s/%s %s: cannot read %s", author, nm,
                           ver, p)
               : AIOS_ENOMEM;
        goto out;
    }
    if (!py) {
        rc = util_errf(err, errlen, TOOL_EUNAVAILABLE, "hub tool %s/%s needs python3, which is not "
                       "installed on the kernel host", author, nm);
        goto out;
    }
    (void)hub_pathf(p, sizeof p, "%s/files/config.json", vd);
    config = json_load_file(p, 0, NULL);
    t->kind = TOOL_KIND_EXEC;
    if (asprintf(&t->name, "%s/%s", author, nm) < 0) t->name = NULL;
    if (asprintf(&t->dir, "%s/files", vd) < 0) t->dir = NULL;
    const char *entry = json_string_value(json_object_get(meta, "entry"));
    const char *module = json_string_value(json_object_get(meta, "module"));
    if (!t->name || !t->dir || !entry || !module) {
        rc = t->name && t->dir ? util_errf(err, errlen, AIOS_EIO, "hub tool %s/%s %s: its meta.json "
                                           "lacks entry or module", author, nm, ver)
                               : AIOS_ENOMEM;
        goto out;
    }
    if ((rc = tool_props(h, t, json_object_get(config, "aios"), err, errlen))) goto out;
    t->argv = host_argv(py, t->dir, entry, module, "run");
    dargv = host_argv(py, t->dir, entry, module, "describe");
    if (!t->argv || !dargv) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    struct tool_spawn_opts o = {.argv = dargv, .cwd = t->dir, .network = false, .sandbox = true,
                                .limits = t->limits, .tool = t->name};
    size_t n_out = 0;
    bool trunc = false;
    int wst = -1;
    char perr[512] = "";
    rc = tool_proc_run(&o, "", 0, 1 << 20, util_now_us() + (int64_t)t->timeout_ms * 1000, &sout,
                       &n_out, &trunc, &serr, &wst, perr, sizeof perr);
    if (rc || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
        /* the last line of stderr says why (a traceback ends with it) */
        char *why = serr ? serr : perr;
        size_t l = strlen(why);
        while (l && (why[l - 1] == '\n' || why[l - 1] == ' ')) why[--l] = 0;
        char *last = strrchr(why, '\n');
        rc = util_errf(err, errlen, TOOL_EUNAVAILABLE, "hub tool %s/%s %s cannot run: %.900s",
                       author, nm, ver, rc == AIOS_EBUSY ? "it did not load within its timeout"
                       : last ? last + 1 : why[0] ? why : "its host exited");
        goto out;
    }
    fmt_ = trunc ? NULL : json_loadb(sout, n_out, 0, NULL);
    json_t *fn = json_object_get(fmt_, "function");
    json_t *params = json_object_get(fn, "parameters");
    char why[512];
    if (json_is_object(params) && schema_check_supported(params, why, sizeof why) == 0) {
        t->parameters = json_deep_copy(params);
    } else {
        if (params) LOG_WARN("hub", "hub tool %s: its parameters are not checked by the kernel (%s)",
                             t->name, json_is_object(params) ? why : "not a schema object");
        t->parameters = json_pack("{s:s}", "type", "object");
    }
    const char *fdesc = json_string_value(json_object_get(fn, "description"));
    const char *mdesc = json_string_value(json_object_get(meta, "description"));
    t->description = strdup(fdesc ? fdesc : mdesc ? mdesc : "");
    if (!t->parameters || !t->description) {
        rc = AIOS_ENOMEM;
        goto out;
    }

    pthread_mutex_lock(&h->mu);
    struct tool *have = NULL;
    for (size_t i = 0; i < h->n_ents && !have; i++)
        if (!strcmp(h->ents[i].key, key)) have = h->ents[i].t;
    if (!have && h->n_ents == h->cap_ents) {
        size_t nc = h->cap_ents ? h->cap_ents * 2 : 8;
        struct hub_tool_ent *ne = realloc(h->ents, nc * sizeof *ne);
        if (ne) {
            h->ents = ne;
            h->cap_ents = nc;
        }
    }
    if (!have && h->n_ents < h->cap_ents) {
        snprintf(h->ents[h->n_ents].key, sizeof h->ents[0].key, "%s", key);
        h->ents[h->n_ents++].t = t;
        *out = t;
        t = NULL;
    } else if (have) {
        *out = have;
    } else {
        rc = AIOS_ENOMEM;
    }
    pthread_mutex_unlock(&h->mu);
    if (*out && !t) LOG_INFO("hub", "hub tool %s (%s) is ready", (*out)->name, ver);
out:
    if (t) tool_free(t);
    free_argv(dargv);
    free(sout);
    free(serr);
    json_decref(meta);
    json_decref(config);
    json_decref(fmt_);
    return rc;
}
