/* Tool views: how an external tool sees an agent's files without being
 * able to rewrite their history.
 *
 * A tool (src/tools) never gets the agent's storage root itself. Before it
 * runs, sto_view_make() copies the agent's current files into a fresh
 * directory below root_dir/.lsfs/views (owned by the tool's uid, 0700 /
 * 0600), and the sandbox binds that copy where the tool expects the root.
 * Whatever the tool does there (write, truncate, delete, rename, plant
 * links) only changes the copy. The copy's manifest ({path: sha256} of
 * what was copied) stays with the caller. After the tool ends,
 * sto_view_changes() compares the copy with that manifest, not with the
 * agent's files as they are now: a regular file that is new or whose
 * content differs from what was copied is a write, a copied file missing
 * from the copy is a delete. A file the agent wrote through storage while
 * the tool ran is therefore neither reverted nor deleted; when both
 * changed the same file, the tool's content becomes the newer version
 * (both are in the history). The tool manager sends each as
 * an ordinary storage syscall in the agent's name, so quotas, versions,
 * the approval of deletes and the audit apply exactly as to any other
 * call; then sto_view_drop() removes the copy.
 *
 * While the tool runs, the copy's size is the only thing on disk it can
 * grow: sto_view_make() gives the budget (the copy's size plus what the
 * agent's quota and the disk's reserve still allow) and sto_view_bytes()
 * measures it; the tool manager kills a tool that goes past it.
 *
 * Walks open every component relative to its parent with O_NOFOLLOW and
 * never follow links; links, devices and fifos in a view are skipped (and
 * named in the notes), as are names the path rules refuse.
 *
 * Threads: any thread; the functions share no state. The agent's tree is
 * copied without its stripe: a storage write running at the same time is
 * either in the copy or not, and in neither case lost. */
#include "storage/sto_int.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include "storage/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define VIEWS_DIR ".lsfs/views"

static bool skip_name(const char *n)
{
    return !strcmp(n, ".") || !strcmp(n, "..") ||
           !strncmp(n, STO_TMP_PREFIX, strlen(STO_TMP_PREFIX));
}

/* copy in to out; sha = the hex digest of what was copied */
static int copy_fd(int in, int out, char sha[65])
{
    char buf[65536];
    struct sto_sha256 h;
    sto_sha256_init(&h);
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return AIOS_EIO;
        if (r == 0) {
            uint8_t d[32];
            sto_sha256_final(&h, d);
            for (int i = 0; i < 32; i++) snprintf(sha + 2 * i, 3, "%02x", d[i]);
            return 0;
        }
        sto_sha256_update(&h, buf, (size_t)r);
        for (ssize_t o = 0; o < r;) {
            ssize_t w = write(out, buf + o, (size_t)(r - o));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) return errno == ENOSPC || errno == EDQUOT ? AIOS_ENOSPC : AIOS_EIO;
            o += w;
        }
    }
}

/* copy the tree below src (at rel) into dst (both directories), owned by
 * uid when uid != (uid_t)-1; *bytes += what was copied, manifest[path] =
 * its digest */
static int copy_tree(int src, int dst, uid_t uid, int depth, const char *rel, json_t *manifest,
                     int64_t *bytes)
{
    if (depth > STO_DEPTH_MAX) return 0;
    int sfd = dup(src);
    DIR *d = sfd >= 0 ? fdopendir(sfd) : NULL;
    if (!d) {
        if (sfd >= 0) close(sfd);
        return AIOS_EIO;
    }
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (skip_name(e->d_name)) continue;
        struct stat st;
        if (fstatat(src, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        char path[STO_PATH_MAX * 2];
        snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        if (strlen(path) > STO_PATH_MAX) continue;
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(dst, e->d_name, 0700) != 0) {
                rc = AIOS_EIO;
                break;
            }
            int s2 = openat(src, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d2 = openat(dst, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (d2 >= 0 && uid != (uid_t)-1 && fchown(d2, uid, uid) != 0) rc = AIOS_EIO;
            if (!rc && s2 >= 0 && d2 >= 0)
                rc = copy_tree(s2, d2, uid, depth + 1, path, manifest, bytes);
            if (s2 >= 0) close(s2);
            if (d2 >= 0) close(d2);
            else rc = AIOS_EIO;
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(src, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (in < 0) continue; /* gone meanwhile */
            int out = openat(dst, e->d_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                             0600);
            char sha[65] = "";
            if (out < 0) rc = AIOS_EIO;
            else if (!(rc = copy_fd(in, out, sha)) && uid != (uid_t)-1 && fchown(out, uid, uid) != 0)
                rc = AIOS_EIO;
            if (!rc) {
                *bytes += st.st_size;
                json_object_set_new(manifest, path, json_string(sha));
            }
            close(in);
            if (out >= 0) close(out);
        }
    }
    closedir(d);
    return rc;
}

int sto_view_make(struct sto *s, const char *agent, uid_t uid, char *dir, size_t dirlen,
                  int64_t *budget, json_t **manifest, char *err, size_t errlen)
{
    *budget = -1;
    *manifest = NULL;
    json_t *man = json_object();
    if (!man) return AIOS_ENOMEM;
    if (dirlen) dir[0] = 0;
    char views[PATH_MAX];
    snprintf(views, sizeof views, "%s/%s", s->agents_dir, VIEWS_DIR);
    if (util_mkdirs(views) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", views, strerror(errno));
        return AIOS_EIO;
    }
    if ((size_t)snprintf(dir, dirlen, "%s/XXXXXX", views) >= dirlen || !mkdtemp(dir)) {
        snprintf(err, errlen, "cannot create a view below %s: %s", views, strerror(errno));
        if (dirlen) dir[0] = 0;
        return AIOS_EIO;
    }
    int rc = 0, rootfd = -1;
    int vfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (vfd < 0 || (uid != (uid_t)-1 && fchown(vfd, uid, uid) != 0)) {
        snprintf(err, errlen, "cannot prepare the view %s: %s", dir, strerror(errno));
        rc = AIOS_EIO;
        goto out;
    }
    rc = sto_root_open(s, agent, true, &rootfd, err, errlen);
    if (rc) goto out;
    int64_t copied = 0;
    rc = copy_tree(rootfd, vfd, uid, 0, "", man, &copied);
    if (rc) {
        snprintf(err, errlen, "copying the agent's files into the tool's view failed%s",
                 rc == AIOS_ENOSPC ? ": the disk is full" : "");
        goto out;
    }
    /* what the copy may grow by: the agent's quota left, and the disk's
     * free space above the reserve */
    int64_t room = -1, used = 0, files = 0;
    if (s->cfg.quota_bytes > 0 && sto_st_usage(s, agent, &used, &files) == 0)
        room = s->cfg.quota_bytes > used ? s->cfg.quota_bytes - used : 0;
    struct statvfs vf;
    if (fstatvfs(vfd, &vf) == 0) {
        int64_t disk = (int64_t)vf.f_bavail * (int64_t)vf.f_frsize - s->cfg.reserve_bytes;
        if (disk < 0) disk = 0;
        if (room < 0 || disk < room) room = disk;
    }
    /* measured as sto_view_bytes measures (blocks), so a copy of many
     * small files does not start over its budget */
    *budget = room < 0 ? -1 : sto_view_bytes(dir) + room;
    *manifest = man;
    man = NULL;
out:
    json_decref(man);
    if (vfd >= 0) close(vfd);
    if (rootfd >= 0) close(rootfd);
    if (rc && dir[0]) {
        sto_view_drop(s, dir);
        dir[0] = 0;
    }
    return rc;
}

static int64_t tree_bytes(int fd, int depth)
{
    if (depth > STO_DEPTH_MAX + 8) return 0;
    int f2 = dup(fd);
    DIR *d = f2 >= 0 ? fdopendir(f2) : NULL;
    if (!d) {
        if (f2 >= 0) close(f2);
        return 0;
    }
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        /* blocks, not sizes: what the disk holds (a sparse file costs little) */
        n += (int64_t)st.st_blocks * 512;
        if (S_ISDIR(st.st_mode)) {
            int c = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (c >= 0) {
                n += tree_bytes(c, depth + 1);
                close(c);
            }
        }
    }
    closedir(d);
    return n;
}

int64_t sto_view_bytes(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    int64_t n = tree_bytes(fd, 0);
    close(fd);
    return n;
}

void sto_view_drop(struct sto *s, const char *dir)
{
    (void)s;
    if (!dir || !dir[0]) return;
    const char *slash = strrchr(dir, '/');
    if (!slash) return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0) return;
    if (sto_rmtree(pfd, slash + 1))
        LOG_WARN("storage", "the tool view %s could not be removed entirely", dir);
    close(pfd);
}

static void note(json_t *notes, const char *path, const char *why)
{
    if (notes && json_array_size(notes) < 64)
        json_array_append_new(notes, json_pack("{s:s,s:s}", "path", path, "skipped", why));
}

static int add_change(struct sto_view_change **v, size_t *n, size_t *cap, enum sto_op op,
                      const char *path, char *data, size_t len)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct sto_view_change *nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return AIOS_ENOMEM;
        *v = nv;
        *cap = nc;
    }
    struct sto_view_change *c = &(*v)[(*n)++];
    c->op = op;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->data = data;
    c->len = len;
    return 0;
}

struct diff {
    struct sto *s;
    json_t *manifest; /* what was copied: {path: sha} */
    json_t *seen;  /* view: paths of regular files (an object used as a set) */
    json_t *notes;
    struct sto_view_change *v;
    size_t n, cap;
};

/* the view below fd (at rel): every regular file that is new or changed */
static int scan_view(struct diff *df, int fd, const char *rel, int depth)
{
    int f2 = dup(fd);
    DIR *d = f2 >= 0 ? fdopendir(f2) : NULL;
    if (!d) {
        if (f2 >= 0) close(f2);
        return AIOS_EIO;
    }
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (skip_name(e->d_name)) continue;
        char path[STO_PATH_MAX * 2], norm[STO_PATH_MAX + 1], why[512];
        snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        if (sto_path_norm(path, strlen(path), false, norm, sizeof norm, why, sizeof why)) {
            note(df->notes, path, why);
            continue;
        }
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth >= STO_DEPTH_MAX) {
                note(df->notes, norm, "too deep");
                continue;
            }
            int c = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (c >= 0) {
                rc = scan_view(df, c, norm, depth + 1);
                close(c);
            }
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            note(df->notes, norm, S_ISLNK(st.st_mode) ? "a symbolic link (storage keeps none)"
                                                      : "not a regular file");
            continue;
        }
        json_object_set_new(df->seen, norm, json_true());
        char *data = NULL;
        size_t len = 0;
        int r = sto_read_leaf(fd, e->d_name, df->s->cfg.max_file_bytes, &data, &len, why,
                              sizeof why);
        if (r == AIOS_ENOMEM) {
            rc = r;
            break;
        }
        if (r) {
            note(df->notes, norm, r == AIOS_ETOOBIG ? "larger than storage.max_file_bytes" : why);
            continue;
        }
        char sha[65];
        sto_sha256_hex(data, len, sha);
        const char *was = json_string_value(json_object_get(df->manifest, norm));
        if (was && !strcmp(was, sha)) {
            free(data); /* as copied */
            continue;
        }
        if ((rc = add_change(&df->v, &df->n, &df->cap, STO_OP_WRITE, norm, data, len))) free(data);
    }
    closedir(d);
    return rc;
}

int sto_view_changes(struct sto *s, const char *dir, json_t *manifest,
                     struct sto_view_change **out, size_t *n_out, json_t *notes, char *err,
                     size_t errlen)
{
    *out = NULL;
    *n_out = 0;
    struct diff df = {.s = s, .manifest = manifest, .seen = json_object(), .notes = notes};
    int rc;
    int vfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (vfd < 0 || !df.seen) {
        snprintf(err, errlen, "the tool's view %s is gone", dir);
        rc = AIOS_EIO;
        goto out;
    }
    if ((rc = scan_view(&df, vfd, "", 0))) {
        snprintf(err, errlen, "reading the tool's view failed");
        goto out;
    }
    /* copied files the view no longer has: deleted by the tool */
    const char *path;
    json_t *v;
    json_object_foreach(manifest, path, v) {
        if (json_object_get(df.seen, path)) continue;
        if ((rc = add_change(&df.v, &df.n, &df.cap, STO_OP_DELETE_FILE, path, NULL, 0))) break;
    }
out:
    if (vfd >= 0) close(vfd);
    json_decref(df.seen);
    if (rc) {
        sto_view_changes_free(df.v, df.n);
        return rc;
    }
    *out = df.v;
    *n_out = df.n;
    return 0;
}

void sto_view_changes_free(struct sto_view_change *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) free(v[i].data);
    free(v);
}

void sto_view_sweep(struct sto *s)
{
    char lsfs[PATH_MAX];
    snprintf(lsfs, sizeof lsfs, "%s/.lsfs", s->agents_dir);
    int fd = open(lsfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstatat(fd, "views", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        sto_rmtree(fd, "views"))
        LOG_WARN("storage", "old tool views in %s/views could not be removed", lsfs);
    close(fd);
}
