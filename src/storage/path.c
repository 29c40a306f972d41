/* Path rules of the storage manager: every path an agent sends is resolved
 * inside that agent's root, and nothing it sends can reach outside.
 *
 * Two layers. sto_path_norm() checks the text: NUL bytes, control
 * characters, absolute paths, "..", components over STO_NAME_MAX bytes,
 * paths over STO_PATH_MAX bytes or STO_DEPTH_MAX components, and the
 * reserved prefix of our temp files are refused with a message that says
 * which rule was broken; "." and empty components are dropped, so
 * "./a//b/" becomes "a/b". Then sto_walk() resolves the normalised path
 * with file descriptors: it opens the agent root, then each component with
 * openat(O_NOFOLLOW | O_DIRECTORY) relative to the previous descriptor, and
 * the leaf is used only through *at() calls on its parent descriptor with
 * O_NOFOLLOW / AT_SYMLINK_NOFOLLOW. A symbolic link is therefore never
 * followed, wherever it points (links inside the root are refused too: the
 * simplest rule that is obviously safe). Because no path string is resolved
 * twice there is no window between a check and a use (TOCTOU): replacing a
 * directory with a link after it was opened changes nothing, the walk holds
 * the directory itself.
 *
 * Agent names become directory names through sto_agent_dirname(), which
 * %-encodes everything outside [A-Za-z0-9_.-] and a leading dot, so an agent
 * directory can never be ".", "..", hidden (our .lsfs metadata) or nested.
 *
 * Threads: every function is reentrant; descriptors are the caller's. */
#include "storage/sto_int.h"

#include "util/err.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void show(const char *p, size_t n, char *out, size_t outlen)
{
    /* a short printable rendering of a rejected component for messages */
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < outlen; i++) {
        unsigned char c = (unsigned char)p[i];
        if (i >= 40) {
            j += (size_t)snprintf(out + j, outlen - j, "...");
            break;
        }
        if (c < 0x20 || c == 0x7f) j += (size_t)snprintf(out + j, outlen - j, "\\x%02x", c);
        else out[j++] = (char)c;
    }
    out[j] = 0;
}

int sto_path_norm(const char *p, size_t len, bool allow_root, char *out, size_t outlen, char *err,
                  size_t errlen)
{
    char shown[64];
    if (outlen) out[0] = 0;
    if (!p) {
        snprintf(err, errlen, "path is missing");
        return AIOS_EINVAL;
    }
    if (memchr(p, 0, len)) {
        snprintf(err, errlen, "path contains a NUL byte (at offset %zu)",
                 (size_t)((const char *)memchr(p, 0, len) - p));
        return AIOS_EINVAL;
    }
    if (len > STO_PATH_MAX) {
        snprintf(err, errlen, "path is %zu bytes long; the limit is %d", len, STO_PATH_MAX);
        return AIOS_ETOOBIG;
    }
    if (len > 0 && p[0] == '/') {
        show(p, len, shown, sizeof shown);
        snprintf(err, errlen, "absolute path '%s' is not allowed: paths are relative to the "
                 "agent's storage root (write \"notes/a.txt\", not \"/notes/a.txt\")", shown);
        return AIOS_EINVAL;
    }
    size_t o = 0;
    int depth = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && p[j] != '/') j++;
        const char *c = p + i;
        size_t n = j - i;
        i = j + 1;
        if (n == 0 || (n == 1 && c[0] == '.')) continue;
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            snprintf(err, errlen, "'..' is not allowed in storage paths (a path cannot leave the "
                     "agent's root)");
            return AIOS_EINVAL;
        }
        if (n > STO_NAME_MAX) {
            show(c, n, shown, sizeof shown);
            snprintf(err, errlen, "path component '%s' is %zu bytes long; the limit is %d", shown,
                     n, STO_NAME_MAX);
            return AIOS_ETOOBIG;
        }
        for (size_t k = 0; k < n; k++) {
            unsigned char ch = (unsigned char)c[k];
            if (ch < 0x20 || ch == 0x7f) {
                show(c, n, shown, sizeof shown);
                snprintf(err, errlen, "path component '%s' contains control character 0x%02x",
                         shown, ch);
                return AIOS_EINVAL;
            }
        }
        if (n >= strlen(STO_TMP_PREFIX) && !memcmp(c, STO_TMP_PREFIX, strlen(STO_TMP_PREFIX))) {
            snprintf(err, errlen, "names starting with '%s' are reserved for the storage manager",
                     STO_TMP_PREFIX);
            return AIOS_EINVAL;
        }
        if (++depth > STO_DEPTH_MAX) {
            snprintf(err, errlen, "path has more than %d components", STO_DEPTH_MAX);
            return AIOS_ETOOBIG;
        }
        if (o + n + 2 > outlen) {
            snprintf(err, errlen, "path is too long");
            return AIOS_ETOOBIG;
        }
        if (o) out[o++] = '/';
        memcpy(out + o, c, n);
        o += n;
    }
    out[o] = 0;
    if (o == 0 && !allow_root) {
        snprintf(err, errlen, "path is empty: name a file below the agent's root");
        return AIOS_EINVAL;
    }
    return 0;
}

int sto_agent_dirname(const char *agent, char *out, size_t outlen)
{
    size_t n = agent ? strlen(agent) : 0;
    if (n == 0 || n > STO_AGENT_MAX) return AIOS_EINVAL;
    return util_pct_encode(agent, out, outlen);
}

int sto_root_open(struct sto *s, const char *agent, bool create, int *fd, char *err, size_t errlen)
{
    char name[STO_AGENT_MAX * 3 + 1];
    *fd = -1;
    if (sto_agent_dirname(agent, name, sizeof name)) {
        snprintf(err, errlen, "agent name must be 1..%d bytes", STO_AGENT_MAX);
        return AIOS_EINVAL;
    }
    int top = open(s->agents_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0) {
        snprintf(err, errlen, "storage root %s cannot be opened: %s", s->agents_dir, strerror(errno));
        return AIOS_EIO;
    }
    int d = openat(top, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d < 0 && errno == ENOENT && create) {
        if (mkdirat(top, name, 0755) == 0 || errno == EEXIST) {
            fsync(top);
            d = openat(top, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
    }
    int e = errno;
    close(top);
    if (d < 0) {
        if (e == ENOENT) {
            snprintf(err, errlen, "no such file or directory");
            return AIOS_ENOTFOUND;
        }
        snprintf(err, errlen, "the agent's storage root cannot be opened: %s", strerror(e));
        return AIOS_EIO;
    }
    *fd = d;
    return 0;
}

/* explain why openat(dir, name, O_DIRECTORY|O_NOFOLLOW) failed */
static int walk_error(int dirfd, const char *name, const char *norm, size_t upto, int e, char *err,
                      size_t errlen)
{
    struct stat st;
    int plen = (int)upto;
    bool gone = e == ENOENT;
    if (!gone && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)
        gone = true; /* removed between the open and the look (a delete) */
    if (gone) {
        snprintf(err, errlen, "directory '%.*s' does not exist", plen, norm);
        return AIOS_ENOTFOUND;
    }
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode)) {
            snprintf(err, errlen, "'%.*s' is a symbolic link; storage paths never follow links",
                     plen, norm);
            return AIOS_EINVAL;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "'%.*s' is not a directory", plen, norm);
            return AIOS_EINVAL;
        }
    }
    if (e == ENOTDIR) { /* a file when opened, a directory now: replaced meanwhile */
        snprintf(err, errlen, "'%.*s' was replaced while the call ran; try again", plen, norm);
        return AIOS_EBUSY;
    }
    snprintf(err, errlen, "cannot open directory '%.*s': %s", plen, norm, strerror(e));
    return AIOS_EIO;
}

int sto_walk(int rootfd, const char *norm, bool create, int *dirfd, const char **leaf, char *err,
             size_t errlen)
{
    *dirfd = -1;
    *leaf = NULL;
    int fd = dup(rootfd);
    if (fd < 0) {
        snprintf(err, errlen, "out of file descriptors");
        return AIOS_EIO;
    }
    const char *c = norm;
    for (;;) {
        const char *slash = strchr(c, '/');
        if (!slash) break;
        char name[STO_NAME_MAX + 1];
        size_t n = (size_t)(slash - c);
        memcpy(name, c, n);
        name[n] = 0;
        int nfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, name, 0755) == 0) fsync(fd);
            nfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (nfd < 0) {
            int rc = walk_error(fd, name, norm, (size_t)(slash - norm), errno, err, errlen);
            close(fd);
            return rc;
        }
        close(fd);
        fd = nfd;
        c = slash + 1;
    }
    *dirfd = fd;
    *leaf = c;
    return 0;
}

int sto_open_dir(int rootfd, const char *norm, int *out, char *err, size_t errlen)
{
    *out = -1;
    if (!norm[0]) {
        *out = dup(rootfd);
        return *out < 0 ? AIOS_EIO : 0;
    }
    int dfd;
    const char *leaf;
    int rc = sto_walk(rootfd, norm, false, &dfd, &leaf, err, errlen);
    if (rc) return rc;
    int fd = openat(dfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) rc = walk_error(dfd, leaf, norm, strlen(norm), errno, err, errlen);
    close(dfd);
    *out = fd;
    return rc;
}

enum sto_kind sto_leaf_kind(int dirfd, const char *leaf, struct stat *st)
{
    struct stat tmp;
    if (!st) st = &tmp;
    if (fstatat(dirfd, leaf, st, AT_SYMLINK_NOFOLLOW) != 0) return STO_KIND_NONE;
    if (S_ISREG(st->st_mode)) return STO_KIND_FILE;
    if (S_ISDIR(st->st_mode)) return STO_KIND_DIR;
    if (S_ISLNK(st->st_mode)) return STO_KIND_LINK;
    return STO_KIND_OTHER;
}

int sto_read_leaf(int dirfd, const char *leaf, int64_t max, char **data, size_t *n, char *err,
                  size_t errlen)
{
    *data = NULL;
    *n = 0;
    int fd = openat(dirfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            snprintf(err, errlen, "no such file");
            return AIOS_ENOTFOUND;
        }
        if (errno == ELOOP) {
            snprintf(err, errlen, "'%s' is a symbolic link; storage paths never follow links", leaf);
            return AIOS_EINVAL;
        }
        snprintf(err, errlen, "cannot open '%s': %s", leaf, strerror(errno));
        return AIOS_EIO;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a regular file", leaf);
        rc = S_ISDIR(st.st_mode) ? AIOS_EBUSY : AIOS_EINVAL;
        goto out;
    }
    if (st.st_size > max) {
        snprintf(err, errlen, "'%s' is %lld bytes; reads are limited to %lld (storage.max_file_bytes)",
                 leaf, (long long)st.st_size, (long long)max);
        rc = AIOS_ETOOBIG;
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        rc = AIOS_ENOMEM;
        goto out;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if ((int64_t)cap > max + 1) {
                free(buf);
                snprintf(err, errlen, "'%s' grew past the read limit", leaf);
                rc = AIOS_ETOOBIG;
                goto out;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                rc = AIOS_ENOMEM;
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            snprintf(err, errlen, "read failed: %s", strerror(errno));
            rc = AIOS_EIO;
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    buf[len] = 0;
    *data = buf;
    *n = len;
out:
    close(fd);
    return rc;
}

int sto_rmtree(int dirfd, const char *leaf)
{
    int fd = openat(dirfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return unlinkat(dirfd, leaf, 0) == 0 ? 0 : AIOS_EIO;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return AIOS_EIO;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (sto_rmtree(fd, e->d_name)) rc = AIOS_EIO;
        } else if (unlinkat(fd, e->d_name, 0) != 0) {
            rc = AIOS_EIO;
        }
    }
    closedir(d);
    if (unlinkat(dirfd, leaf, AT_REMOVEDIR) != 0) rc = AIOS_EIO;
    return rc;
}
