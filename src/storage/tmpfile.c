/* A write's new content on its way into its file's place: a temp file, or
 * a recycled "spare".
 *
 * A storage write puts its content in a file of its own and then puts that
 * file in the target's place in one step (storage.c, "Writes"), so nobody
 * ever sees a torn file. The plain way makes a new temp file in the target
 * directory, exchanges it with the file (renameat2 RENAME_EXCHANGE: a
 * rename over the file would make ext4 start writing the new data out at
 * once, its auto_da_alloc) and removes the old one. That creates one inode
 * and frees one per write; on ext4 without a journal, allocating an inode
 * skips every inode freed in the last seconds (recently_deleted, one inode
 * table lookup each), so under a stream of writes the create alone was 8%
 * of the kernel's CPU (docs/performance.md, "Recycled files").
 *
 * Spares keep the inodes. They live under root/.lsfs/spare, a directory
 * of the kernel's own (no agent, tool or view ever reaches it), in a pool
 * directory per kernel (k<random>, flock'ed while that kernel runs: several
 * kernels may share one root), named s<N>. A write takes an idle spare,
 * overwrites it from offset 0 and cuts it to the new length (not to 0
 * first: that too would start a write-out at close), and exchanges it
 * with the target; the old file, now named s<N>, is the next idle spare.
 * A new file (nothing to exchange with) takes the spare's name and the
 * pool makes another when it needs one. A kernel removes its pool when it
 * closes, and at start the pools of kernels that are gone (unlocked).
 *
 * A spare is reused only when nothing can see it. It is a regular file
 * with one link (a hard link made to the old file would show its new
 * content elsewhere), with the owner of a file the kernel makes there
 * (not a file someone else put in an agent's tree), and no descriptor of
 * it is open anywhere: the old file may still be open by a read that started before the exchange, and
 * that read must get the old content, not the next write's (perhaps
 * another agent's). The test is a write lease (fcntl F_SETLEASE F_WRLCK):
 * Linux grants one only while no other descriptor or mapping of the inode
 * exists, and it is let go at once (nobody can open the spare by name
 * meanwhile). Whatever fails the tests (or a file system without leases)
 * is removed and a fresh spare made, which is always safe. At most
 * SPARE_IDLE_MAX idle spares of at most SPARE_KEEP_BYTES each are kept;
 * the rest are removed as the plain way removes the old file.
 *
 * A durable write (sync, the start-up repair) and a target on another
 * file system than the spares take the plain way; a target on another
 * mount of the same file system (a bind mount inside the root: rename
 * answers EXDEV) gets the spare's content copied into a temp file.
 *
 * Threads: any; the pool's mutex is a leaf lock, held only to pop or push
 * a slot number (under a writer's stripe at most). */
#include "storage/sto_int.h"

#include "util/err.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPARE_DIR ".lsfs/spare"
#define SPARE_IDLE_MAX 64
#define SPARE_KEEP_BYTES (256 * 1024)
#define SPARE_SWEEP_AGE_S 60

struct sto_spares {
    pthread_mutex_t mu;
    int top;      /* root/.lsfs/spare */
    int fd;       /* top/<name>: this kernel's pool, flock'ed while it runs */
    char name[32];
    dev_t dev;
    uid_t uid; /* the owner a file the kernel makes there has: a spare */
    gid_t gid; /* must have it (not a file someone else put in a tree) */
    unsigned next;                   /* the next new name */
    /* spares that exist and nobody uses, a stack: the one put back last
     * is reused first (its pages are the likeliest in memory and not
     * being written out; oldest first measured slower, docs/performance.md) */
    unsigned idle[SPARE_IDLE_MAX];
    int n_idle;
};

/* 64 random bits for a name (the clock when getrandom fails) */
static unsigned long long name_bits(int salt)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)util_now_us() ^ (uint64_t)salt;
    return (unsigned long long)r;
}

/* Remove the pools of kernels that are gone: a pool (k...) whose lock
 * can be taken; a pool being made (n..., locked, then renamed to k...)
 * that a crash left, once unchanged for SPARE_SWEEP_AGE_S; any file. */
static void sweep_pools(int fd)
{
    int dfd = dup(fd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d && dfd >= 0) close(dfd);
    time_t now = time(NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (!S_ISDIR(st.st_mode)) {
            unlinkat(fd, e->d_name, 0);
            continue;
        }
        if (e->d_name[0] != 'k' && now - st.st_mtime < SPARE_SWEEP_AGE_S) continue;
        int k = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (k >= 0 && flock(k, LOCK_EX | LOCK_NB) == 0) sto_rmtree(fd, e->d_name);
        if (k >= 0) close(k);
    }
    if (d) closedir(d);
}

struct sto_spares *sto_spares_open(int rootfd)
{
    if (mkdirat(rootfd, SPARE_DIR, 0700) != 0 && errno != EEXIST) return NULL;
    int top = openat(rootfd, SPARE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0) return NULL;
    sweep_pools(top);
    /* this kernel's pool: a directory of its own, locked while it runs
     * (several kernels may share the root, docs/postgres.md) */
    char name[32] = "", made[32];
    int fd = -1;
    for (int tries = 0; tries < 8 && fd < 0; tries++) {
        unsigned long long r = name_bits(tries);
        snprintf(made, sizeof made, "n%016llx", r);
        snprintf(name, sizeof name, "k%016llx", r);
        if (mkdirat(top, made, 0700) != 0) continue;
        fd = openat(top, made, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        /* locked before it has the name others sweep when unlocked */
        if (fd >= 0 && (flock(fd, LOCK_EX | LOCK_NB) != 0 || renameat(top, made, top, name) != 0)) {
            close(fd);
            fd = -1;
            unlinkat(top, made, AT_REMOVEDIR);
        }
    }
    struct stat st, pst;
    bool ok = fd >= 0 && fstat(fd, &st) == 0;
    int probe = ok ? openat(fd, "probe", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)
                   : -1;
    ok = probe >= 0 && fstat(probe, &pst) == 0;
    if (probe >= 0) {
        close(probe);
        unlinkat(fd, "probe", 0);
    }
    struct sto_spares *sp = ok ? calloc(1, sizeof *sp) : NULL;
    if (!sp) {
        if (fd >= 0) {
            close(fd);
            unlinkat(top, name, AT_REMOVEDIR);
        }
        close(top);
        return NULL;
    }
    pthread_mutex_init(&sp->mu, NULL);
    sp->top = top;
    sp->fd = fd;
    snprintf(sp->name, sizeof sp->name, "%s", name);
    sp->dev = st.st_dev;
    sp->uid = pst.st_uid;
    sp->gid = pst.st_gid;
    return sp;
}

void sto_spares_close(struct sto_spares *sp)
{
    if (!sp) return;
    sto_rmtree(sp->top, sp->name); /* while it is still locked */
    close(sp->fd);
    close(sp->top);
    pthread_mutex_destroy(&sp->mu);
    free(sp);
}

static bool spare_like(const struct sto_spares *sp, const struct stat *st)
{
    return S_ISREG(st->st_mode) && !(st->st_mode & (S_ISUID | S_ISGID | S_ISVTX)) &&
           st->st_nlink == 1 && st->st_uid == sp->uid && st->st_gid == sp->gid;
}

/* an idle spare back in the pool, or removed when the pool is full or the
 * file is not worth keeping */
static void spare_put(struct sto_spares *sp, const char *name, unsigned id, const struct stat *known)
{
    struct stat st;
    if (known) st = *known;
    bool keep = (known || fstatat(sp->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) &&
                spare_like(sp, &st) && st.st_size <= SPARE_KEEP_BYTES;
    if (keep) {
        pthread_mutex_lock(&sp->mu);
        keep = sp->n_idle < SPARE_IDLE_MAX;
        if (keep) sp->idle[sp->n_idle++] = id;
        pthread_mutex_unlock(&sp->mu);
    }
    if (!keep) unlinkat(sp->fd, name, 0);
}

/* Open an idle spare that nothing else can see, for writing; -1 when it
 * does not pass (then it is gone). */
static int spare_reuse(struct sto_spares *sp, const char *name, off_t *size)
{
    int fd = openat(sp->fd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && spare_like(sp, &st) &&
        fcntl(fd, F_SETLEASE, F_WRLCK) == 0) {
        fcntl(fd, F_SETLEASE, F_UNLCK);
        *size = st.st_size;
        return fd;
    }
    if (fd >= 0) close(fd);
    unlinkat(sp->fd, name, 0);
    return -1;
}

/* A spare to write into: *fd open for writing, t named; false when the
 * pool cannot serve dirfd (then the plain way). */
static bool spare_take(struct sto_spares *sp, int dirfd, struct sto_tmp *t, int *fd,
                       off_t *size)
{
    struct stat st;
    if (!sp || fstat(dirfd, &st) != 0 || st.st_dev != sp->dev) return false;
    for (int tries = 0; tries < 4; tries++) {
        pthread_mutex_lock(&sp->mu);
        bool idle = sp->n_idle > 0;
        unsigned id = idle ? sp->idle[--sp->n_idle] : sp->next++;
        pthread_mutex_unlock(&sp->mu);
        snprintf(t->name, sizeof t->name, "s%u", id);
        *size = 0;
        *fd = idle ? spare_reuse(sp, t->name, size)
                   : openat(sp->fd, t->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0644);
        if (*fd < 0 && !idle && errno != EEXIST) break;
        if (*fd >= 0) {
            t->dfd = sp->fd;
            t->spare = id + 1;
            return true;
        }
    }
    t->name[0] = 0;
    return false;
}

static int write_all(int fd, const char *p, size_t n, off_t at, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            snprintf(err, errlen, "write failed: %s", strerror(e));
            return e == ENOSPC || e == EDQUOT ? AIOS_ENOSPC : AIOS_EIO;
        }
        p += w;
        n -= (size_t)w;
        at += w;
    }
    return 0;
}

/* a new temp file in dirfd, open for writing (t names it), or -1 */
static int tmp_create(int dirfd, struct sto_tmp *t)
{
    int fd = -1;
    t->dfd = dirfd;
    t->spare = 0;
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        snprintf(t->name, sizeof t->name, "%s%016llx", STO_TMP_PREFIX, name_bits(tries));
        fd = openat(dirfd, t->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) t->name[0] = 0;
    return fd;
}

int sto_tmp_write(struct sto_spares *sp, int dirfd, const void *data, size_t n, bool sync,
                  struct sto_tmp *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    int fd = -1;
    off_t old = 0;
    if ((sync || !spare_take(sp, dirfd, t, &fd, &old)) && (fd = tmp_create(dirfd, t)) < 0) {
        snprintf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
        return AIOS_EIO;
    }
    int rc = write_all(fd, data, n, 0, err, errlen);
    if (!rc && old > (off_t)n && ftruncate(fd, (off_t)n) != 0) {
        snprintf(err, errlen, "truncate failed: %s", strerror(errno));
        rc = AIOS_EIO;
    }
    if (!rc && sync && fsync(fd) != 0) {
        rc = errno == ENOSPC || errno == EDQUOT ? AIOS_ENOSPC : AIOS_EIO;
        snprintf(err, errlen, "fsync failed: %s", strerror(errno));
    }
    close(fd);
    if (rc) sto_tmp_drop(sp, t);
    return rc;
}

/* t given up; known: t's stat when the caller has it */
static void tmp_drop(struct sto_spares *sp, struct sto_tmp *t, const struct stat *known)
{
    if (!t->name[0]) return;
    if (t->spare) spare_put(sp, t->name, t->spare - 1, known);
    else unlinkat(t->dfd, t->name, 0);
    t->name[0] = 0;
}

void sto_tmp_drop(struct sto_spares *sp, struct sto_tmp *t) { tmp_drop(sp, t, NULL); }

/* Put t in leaf's place by exchanging the two: 1 done (the old file, now
 * under t's name, is removed or becomes an idle spare), 0 not done (leaf
 * does not exist, or the file system cannot exchange: rename then). Why
 * not rename: see the top. Only a regular file is exchanged: anything
 * else put there meanwhile (an agent's own process may) is exchanged back
 * and the rename answers as it would have. */
static int exchange_file(struct sto_spares *sp, int dirfd, struct sto_tmp *t, const char *leaf)
{
    if (renameat2(t->dfd, t->name, dirfd, leaf, RENAME_EXCHANGE) != 0) return 0;
    struct stat st;
    if (fstatat(t->dfd, t->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        tmp_drop(sp, t, &st); /* the old file */
        return 1;
    }
    renameat2(t->dfd, t->name, dirfd, leaf, RENAME_EXCHANGE); /* as it was */
    return 0;
}

/* The target directory is on another mount than the spares (a bind mount
 * inside the root: the same device, yet a rename between them answers
 * EXDEV): copy the spare into a temp file there instead; the spare goes
 * back to the pool. 0 done (t is that temp file), else t is unchanged. */
static int spare_to_tmp(struct sto_spares *sp, int dirfd, struct sto_tmp *t)
{
    struct sto_tmp nt;
    int in = openat(t->dfd, t->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), out = -1, rc = -1;
    if (in >= 0 && (out = tmp_create(dirfd, &nt)) >= 0) {
        char buf[16384];
        off_t at = 0;
        ssize_t r;
        char e[8];
        while ((r = read(in, buf, sizeof buf)) > 0 && !write_all(out, buf, (size_t)r, at, e, sizeof e))
            at += r;
        rc = r == 0 ? 0 : -1;
        close(out);
        if (rc) unlinkat(dirfd, nt.name, 0);
    }
    if (in >= 0) close(in);
    if (!rc) {
        sto_tmp_drop(sp, t);
        *t = nt;
    }
    return rc;
}

int sto_tmp_commit(struct sto_spares *sp, int dirfd, struct sto_tmp *t, const char *leaf,
                   bool sync, char *err, size_t errlen)
{
    if (!sync && exchange_file(sp, dirfd, t, leaf)) return 0;
    if (renameat(t->dfd, t->name, dirfd, leaf) != 0) {
        if (errno == EXDEV && t->spare && spare_to_tmp(sp, dirfd, t) == 0)
            return sto_tmp_commit(sp, dirfd, t, leaf, sync, err, errlen);
        snprintf(err, errlen, "rename failed: %s", strerror(errno));
        sto_tmp_drop(sp, t);
        return AIOS_EIO;
    }
    t->name[0] = 0; /* it is the file now */
    if (sync && fsync(dirfd) != 0) {
        snprintf(err, errlen, "fsync of the directory failed: %s", strerror(errno));
        return AIOS_EIO;
    }
    return 0;
}
