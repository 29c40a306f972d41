/* Unit tests for src/kernel/syscall.c: ids, reference counting and the
 * destructors of req/res, stream output (emit / take_output), the notify
 * callback (called once per event, with no lock held, after the final
 * status is visible), first-final-state-wins, errors and cancellation, and
 * one producer/consumer stress run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/syscall.h"
#include "util/err.h"

/* ---- destructors that count their calls ---- */

struct tracked {
    int *n_freed; /* incremented by tracked_free */
    int tag;
};

static void tracked_free(void *p)
{
    struct tracked *t = p;
    (*t->n_freed)++;
    free(t);
}

static struct tracked *tracked_new(int *counter, int tag)
{
    struct tracked *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->n_freed = counter;
    t->tag = tag;
    return t;
}

/* ---- notify probe: records what the callback could observe ---- */

struct probe {
    int n_calls;
    int n_lock_ok;     /* trylock on sc->mu succeeded (no lock held by caller) */
    int n_final_seen;  /* status was already final inside the callback */
    enum syscall_status last_status;
    size_t last_n_out;
    int last_err;
    int last_http;
    char last_msg[SYSCALL_ERRMSG_MAX];
    bool res_set_when_final; /* res already stored when the final notify ran */
};

static void probe_notify(struct syscall *sc, void *ud)
{
    struct probe *p = ud;
    p->n_calls++;
    if (pthread_mutex_trylock(&sc->mu) == 0) {
        p->n_lock_ok++;
        p->last_status = sc->status;
        p->last_n_out = sc->n_out;
        p->last_err = sc->err;
        p->last_http = sc->http_status;
        snprintf(p->last_msg, sizeof p->last_msg, "%s", sc->errmsg);
        if (syscall_status_final(sc->status)) {
            p->n_final_seen++;
            p->res_set_when_final = sc->res != NULL;
        }
        pthread_mutex_unlock(&sc->mu);
    }
}

static struct syscall *new_probed(struct probe *p, int *req_freed)
{
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "agent-a", NULL,
                                     req_freed ? tracked_new(req_freed, 1) : NULL,
                                     req_freed ? tracked_free : NULL);
    assert_non_null(sc);
    memset(p, 0, sizeof *p);
    sc->notify = probe_notify;
    sc->notify_ud = p;
    return sc;
}

/* ---- names ---- */

static void test_names_and_final(void **state)
{
    (void)state;
    assert_string_equal(syscall_kind_name(SYSCALL_KIND_LLM), "llm");
    assert_string_equal(syscall_kind_name(SYSCALL_KIND_MEMORY), "memory");
    assert_string_equal(syscall_kind_name(SYSCALL_KIND_STORAGE), "storage");
    assert_string_equal(syscall_kind_name(SYSCALL_KIND_TOOL), "tool");
    assert_string_equal(syscall_kind_name(SYSCALL_KIND__COUNT), "?");
    assert_string_equal(syscall_status_name(SYSCALL_STATUS_QUEUED), "queued");
    assert_string_equal(syscall_status_name(SYSCALL_STATUS_CANCELLED), "cancelled");

    assert_false(syscall_status_final(SYSCALL_STATUS_NEW));
    assert_false(syscall_status_final(SYSCALL_STATUS_QUEUED));
    assert_false(syscall_status_final(SYSCALL_STATUS_RUNNING));
    assert_false(syscall_status_final(SYSCALL_STATUS_SUSPENDED));
    assert_false(syscall_status_final(SYSCALL_STATUS_AWAITING_APPROVAL));
    assert_true(syscall_status_final(SYSCALL_STATUS_DONE));
    assert_true(syscall_status_final(SYSCALL_STATUS_ERROR));
    assert_true(syscall_status_final(SYSCALL_STATUS_CANCELLED));
}

/* ---- creation and ids ---- */

static void test_new_fields(void **state)
{
    (void)state;
    int freed = 0;
    char agent[] = "alice";
    int target;
    struct tracked *req = tracked_new(&freed, 7);
    struct syscall *sc = syscall_new(SYSCALL_KIND_TOOL, agent, &target, req, tracked_free);
    assert_non_null(sc);
    agent[0] = 'X'; /* the agent name is copied */
    assert_string_equal(sc->agent, "alice");
    assert_int_equal(sc->kind, SYSCALL_KIND_TOOL);
    assert_ptr_equal(sc->target, &target);
    assert_ptr_equal(sc->req, req);
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    assert_int_equal(sc->refs, 1);
    assert_true(sc->t_created_us > 0);
    assert_int_equal(sc->t_start_us, 0);
    assert_int_equal(sc->t_end_us, 0);
    assert_null(sc->res);
    assert_int_equal(sc->n_out, 0);
    assert_false(sc->cancel_requested);
    assert_int_equal(freed, 0);
    syscall_unref(sc);
    assert_int_equal(freed, 1);

    sc = syscall_new(SYSCALL_KIND_LLM, NULL, NULL, NULL, NULL);
    assert_non_null(sc);
    assert_string_equal(sc->agent, "anonymous");
    syscall_unref(sc);
    sc = syscall_new(SYSCALL_KIND_LLM, "", NULL, NULL, NULL);
    assert_non_null(sc);
    assert_string_equal(sc->agent, "anonymous");
    syscall_unref(sc);
}

static void test_ids_unique_increasing(void **state)
{
    (void)state;
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
        assert_non_null(sc);
        assert_true(sc->id > prev);
        assert_true(sc->id != 0);
        prev = sc->id;
        syscall_unref(sc);
    }
}

#define ID_THREADS 4
#define ID_PER_THREAD 2000

static void *id_worker(void *arg)
{
    uint64_t *ids = arg;
    for (int i = 0; i < ID_PER_THREAD; i++) {
        struct syscall *sc = syscall_new(SYSCALL_KIND_MEMORY, "a", NULL, NULL, NULL);
        ids[i] = sc ? sc->id : 0;
        syscall_unref(sc);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_ids_unique_concurrent(void **state)
{
    (void)state;
    uint64_t *ids = calloc(ID_THREADS * ID_PER_THREAD, sizeof *ids);
    assert_non_null(ids);
    pthread_t th[ID_THREADS];
    for (int t = 0; t < ID_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, id_worker, ids + t * ID_PER_THREAD), 0);
    for (int t = 0; t < ID_THREADS; t++) pthread_join(th[t], NULL);
    /* each thread saw increasing ids */
    for (int t = 0; t < ID_THREADS; t++)
        for (int i = 1; i < ID_PER_THREAD; i++)
            assert_true(ids[t * ID_PER_THREAD + i] > ids[t * ID_PER_THREAD + i - 1]);
    qsort(ids, ID_THREADS * ID_PER_THREAD, sizeof *ids, cmp_u64);
    assert_true(ids[0] != 0);
    for (int i = 1; i < ID_THREADS * ID_PER_THREAD; i++) assert_true(ids[i] != ids[i - 1]);
    free(ids);
}

/* ---- reference counting ---- */

static void test_refcount_frees_once(void **state)
{
    (void)state;
    int freed = 0;
    struct syscall *sc = syscall_new(SYSCALL_KIND_STORAGE, "a", NULL, tracked_new(&freed, 1),
                                     tracked_free);
    assert_non_null(sc);
    syscall_ref(sc);
    syscall_ref(sc);
    assert_int_equal(sc->refs, 3);
    syscall_unref(sc);
    assert_int_equal(freed, 0);
    syscall_unref(sc);
    assert_int_equal(freed, 0);
    assert_int_equal(sc->refs, 1);
    syscall_unref(sc);
    assert_int_equal(freed, 1);

    syscall_unref(NULL); /* no-op */
}

static void test_refcount_frees_req_and_res(void **state)
{
    (void)state;
    int req_freed = 0, res_freed = 0;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, tracked_new(&req_freed, 1),
                                     tracked_free);
    assert_non_null(sc);
    syscall_ref(sc); /* a worker's reference */
    syscall_finish(sc, tracked_new(&res_freed, 2), tracked_free);
    assert_int_equal(res_freed, 0);
    syscall_unref(sc); /* worker done */
    assert_int_equal(req_freed, 0);
    assert_int_equal(res_freed, 0);
    syscall_unref(sc); /* caller done */
    assert_int_equal(req_freed, 1);
    assert_int_equal(res_freed, 1);
}

struct ref_arg {
    struct syscall *sc;
    int n;
};

static void *ref_worker(void *arg)
{
    struct ref_arg *a = arg;
    for (int i = 0; i < a->n; i++) syscall_ref(a->sc);
    for (int i = 0; i < a->n; i++) syscall_unref(a->sc);
    return NULL;
}

static void test_refcount_concurrent(void **state)
{
    (void)state;
    int freed = 0;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, tracked_new(&freed, 1),
                                     tracked_free);
    assert_non_null(sc);
    struct ref_arg a = {sc, 20000};
    pthread_t th[4];
    for (int t = 0; t < 4; t++) assert_int_equal(pthread_create(&th[t], NULL, ref_worker, &a), 0);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    assert_int_equal(freed, 0);
    assert_int_equal(sc->refs, 1);
    syscall_unref(sc);
    assert_int_equal(freed, 1);
}

/* ---- emit ---- */

static void test_emit_appends_and_notifies_unlocked(void **state)
{
    (void)state;
    struct probe p;
    struct syscall *sc = new_probed(&p, NULL);

    assert_int_equal(syscall_emit(sc, "ab", 2), 0);
    assert_int_equal(p.n_calls, 1);
    assert_int_equal(p.n_lock_ok, 1); /* would fail if notify ran under sc->mu */
    assert_int_equal(p.last_n_out, 2); /* the data is there before notify */
    assert_int_equal(syscall_emit(sc, "cde", 3), 0);
    assert_int_equal(p.n_calls, 2);
    assert_int_equal(p.n_lock_ok, 2);
    assert_int_equal(p.last_n_out, 5);
    assert_int_equal(sc->n_out, 5);
    assert_memory_equal(sc->out, "abcde", 6); /* NUL-terminated */

    /* empty emit: nothing appended, nobody woken */
    assert_int_equal(syscall_emit(sc, "zzz", 0), 0);
    assert_int_equal(p.n_calls, 2);
    assert_int_equal(sc->n_out, 5);

    /* emitting does not change the status */
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    syscall_unref(sc);
}

static void test_emit_grows(void **state)
{
    (void)state;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(sc);
    char piece[100];
    char *expect = malloc(100 * 1000 + 1);
    assert_non_null(expect);
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        size_t len = (size_t)(i % 97) + 1;
        for (size_t j = 0; j < len; j++) piece[j] = (char)('a' + (i + (int)j) % 26);
        assert_int_equal(syscall_emit(sc, piece, len), 0);
        memcpy(expect + n, piece, len);
        n += len;
    }
    assert_int_equal(sc->n_out, n);
    assert_true(sc->cap_out > n);
    assert_memory_equal(sc->out, expect, n);
    assert_int_equal(sc->out[n], 0);
    /* one piece larger than the initial capacity */
    char big[5000];
    memset(big, 'Q', sizeof big);
    assert_int_equal(syscall_emit(sc, big, sizeof big), 0);
    assert_int_equal(sc->n_out, n + sizeof big);
    assert_memory_equal(sc->out + n, big, sizeof big);
    free(expect);
    syscall_unref(sc);
}

/* ---- finish / fail ---- */

static void test_finish_sets_done(void **state)
{
    (void)state;
    struct probe p;
    int req_freed = 0, res_freed = 0;
    struct syscall *sc = new_probed(&p, &req_freed);
    struct tracked *res = tracked_new(&res_freed, 9);

    syscall_finish(sc, res, tracked_free);
    assert_int_equal(sc->status, SYSCALL_STATUS_DONE);
    assert_ptr_equal(sc->res, res);
    assert_true(sc->t_start_us > 0); /* never ran through sched: start = end */
    assert_true(sc->t_end_us >= sc->t_start_us);
    assert_true(sc->t_end_us >= sc->t_created_us);
    assert_int_equal(sc->err, 0);
    /* notified exactly once, without the lock held, with the final state
     * and the result already visible */
    assert_int_equal(p.n_calls, 1);
    assert_int_equal(p.n_lock_ok, 1);
    assert_int_equal(p.n_final_seen, 1);
    assert_int_equal(p.last_status, SYSCALL_STATUS_DONE);
    assert_true(p.res_set_when_final);
    assert_int_equal(res_freed, 0); /* owned by the syscall until the last unref */
    syscall_unref(sc);
    assert_int_equal(res_freed, 1);
    assert_int_equal(req_freed, 1);
}

static void test_finish_keeps_start_time(void **state)
{
    (void)state;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(sc);
    int64_t start = sc->t_created_us;
    sc->t_start_us = start; /* as sched_next would set it */
    syscall_finish(sc, NULL, NULL);
    assert_int_equal(sc->status, SYSCALL_STATUS_DONE);
    assert_int_equal(sc->t_start_us, start);
    assert_true(sc->t_end_us >= sc->t_start_us);
    syscall_unref(sc);
}

static void test_first_finish_wins(void **state)
{
    (void)state;
    struct probe p;
    int res1_freed = 0, res2_freed = 0;
    struct syscall *sc = new_probed(&p, NULL);
    struct tracked *res1 = tracked_new(&res1_freed, 1);

    syscall_finish(sc, res1, tracked_free);
    int64_t t_end = sc->t_end_us;
    assert_int_equal(p.n_calls, 1);

    /* second finish: its result is freed at once, nothing else changes */
    syscall_finish(sc, tracked_new(&res2_freed, 2), tracked_free);
    assert_int_equal(res2_freed, 1);
    assert_int_equal(res1_freed, 0);
    assert_ptr_equal(sc->res, res1);
    assert_int_equal(sc->status, SYSCALL_STATUS_DONE);
    assert_int_equal(sc->t_end_us, t_end);
    assert_int_equal(p.n_calls, 1); /* no second notify */

    /* a NULL result on a late finish is fine too */
    syscall_finish(sc, NULL, tracked_free);
    assert_int_equal(p.n_calls, 1);

    /* fail after finish: no effect */
    syscall_fail(sc, AIOS_EENGINE, 500, "late failure %d", 42);
    assert_int_equal(sc->status, SYSCALL_STATUS_DONE);
    assert_int_equal(sc->err, 0);
    assert_int_equal(sc->http_status, 0);
    assert_string_equal(sc->errmsg, "");
    assert_int_equal(sc->t_end_us, t_end);
    assert_int_equal(p.n_calls, 1);

    syscall_fail(sc, AIOS_ECANCELLED, 499, "cancel");
    assert_int_equal(sc->status, SYSCALL_STATUS_DONE);
    assert_int_equal(p.n_calls, 1);

    syscall_unref(sc);
    assert_int_equal(res1_freed, 1);
    assert_int_equal(res2_freed, 1);
}

static void test_first_fail_wins(void **state)
{
    (void)state;
    struct probe p;
    int res_freed = 0;
    struct syscall *sc = new_probed(&p, NULL);

    syscall_fail(sc, AIOS_EENGINE, 500, "first");
    assert_int_equal(p.n_calls, 1);
    syscall_fail(sc, AIOS_EIO, 502, "second");
    syscall_fail(sc, AIOS_ECANCELLED, 499, "third");
    assert_int_equal(sc->status, SYSCALL_STATUS_ERROR);
    assert_int_equal(sc->err, AIOS_EENGINE);
    assert_int_equal(sc->http_status, 500);
    assert_string_equal(sc->errmsg, "first");
    assert_int_equal(p.n_calls, 1);

    /* finish after fail: result freed immediately, stays ERROR */
    syscall_finish(sc, tracked_new(&res_freed, 1), tracked_free);
    assert_int_equal(res_freed, 1);
    assert_null(sc->res);
    assert_int_equal(sc->status, SYSCALL_STATUS_ERROR);
    assert_int_equal(p.n_calls, 1);
    syscall_unref(sc);
    assert_int_equal(res_freed, 1);
}

static void test_fail_error(void **state)
{
    (void)state;
    struct probe p;
    struct syscall *sc = new_probed(&p, NULL);
    syscall_fail(sc, AIOS_EENGINE, 502, "engine %s failed with %d", "llama", -3);
    assert_int_equal(sc->status, SYSCALL_STATUS_ERROR);
    assert_int_equal(sc->err, AIOS_EENGINE);
    assert_int_equal(sc->http_status, 502);
    assert_string_equal(sc->errmsg, "engine llama failed with -3");
    assert_true(sc->t_end_us >= sc->t_start_us);
    assert_true(sc->t_start_us > 0);
    assert_null(sc->res);
    /* the callback already saw the complete error */
    assert_int_equal(p.n_calls, 1);
    assert_int_equal(p.n_lock_ok, 1);
    assert_int_equal(p.last_status, SYSCALL_STATUS_ERROR);
    assert_int_equal(p.last_err, AIOS_EENGINE);
    assert_int_equal(p.last_http, 502);
    assert_string_equal(p.last_msg, "engine llama failed with -3");
    syscall_unref(sc);
}

static void test_fail_cancelled(void **state)
{
    (void)state;
    struct probe p;
    struct syscall *sc = new_probed(&p, NULL);
    syscall_fail(sc, AIOS_ECANCELLED, 499, "client went away");
    assert_int_equal(sc->status, SYSCALL_STATUS_CANCELLED);
    assert_int_equal(sc->err, AIOS_ECANCELLED);
    assert_int_equal(sc->http_status, 499);
    assert_string_equal(sc->errmsg, "client went away");
    assert_int_equal(p.n_calls, 1);
    assert_int_equal(p.last_status, SYSCALL_STATUS_CANCELLED);
    assert_int_equal(p.n_final_seen, 1);
    syscall_unref(sc);

    /* other errors are never CANCELLED */
    int errs[] = {AIOS_EINVAL, AIOS_ENOMEM, AIOS_ESHUTDOWN, AIOS_EPERM, AIOS_EBUSY};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
        assert_non_null(sc);
        syscall_fail(sc, errs[i], 500, "e");
        assert_int_equal(sc->status, SYSCALL_STATUS_ERROR);
        assert_int_equal(sc->err, errs[i]);
        syscall_unref(sc);
    }
}

static void test_fail_long_message_truncated(void **state)
{
    (void)state;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(sc);
    char big[SYSCALL_ERRMSG_MAX * 3];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = 0;
    syscall_fail(sc, AIOS_EINVAL, 400, "%s", big);
    assert_int_equal(strlen(sc->errmsg), SYSCALL_ERRMSG_MAX - 1);
    assert_memory_equal(sc->errmsg, big, SYSCALL_ERRMSG_MAX - 1);
    syscall_unref(sc);
}

/* ---- take_output ---- */

static void test_take_output(void **state)
{
    (void)state;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(sc);
    char *buf = NULL;
    size_t len = 0, cap = 0;

    /* nothing yet: buffer untouched */
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_NEW);
    assert_int_equal(len, 0);

    assert_int_equal(syscall_emit(sc, "hello", 5), 0);
    sc->status = SYSCALL_STATUS_RUNNING;
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_RUNNING);
    assert_non_null(buf);
    assert_int_equal(len, 5);
    assert_true(cap > 5);
    assert_string_equal(buf, "hello");
    assert_int_equal(sc->n_out, 0); /* moved, not copied */

    /* taking again adds nothing */
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_RUNNING);
    assert_int_equal(len, 5);

    /* output is appended to what the caller already has */
    assert_int_equal(syscall_emit(sc, ", ", 2), 0);
    assert_int_equal(syscall_emit(sc, "world", 5), 0);
    syscall_finish(sc, NULL, NULL);
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_DONE);
    assert_int_equal(len, 12);
    assert_string_equal(buf, "hello, world");
    assert_int_equal(sc->n_out, 0);

    /* large output forces the caller's buffer to grow */
    char big[3000];
    memset(big, 'z', sizeof big);
    assert_int_equal(syscall_emit(sc, big, sizeof big), 0);
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_DONE);
    assert_int_equal(len, 12 + sizeof big);
    assert_true(cap > len);
    assert_memory_equal(buf + 12, big, sizeof big);
    assert_int_equal(buf[len], 0);
    free(buf);

    /* a caller buffer with existing content and spare room */
    size_t cap2 = 64, len2 = 3;
    char *buf2 = malloc(cap2);
    assert_non_null(buf2);
    memcpy(buf2, "abc", 4);
    assert_int_equal(syscall_emit(sc, "def", 3), 0);
    assert_int_equal(syscall_take_output(sc, &buf2, &len2, &cap2), SYSCALL_STATUS_DONE);
    assert_int_equal(len2, 6);
    assert_int_equal(cap2, 64);
    assert_string_equal(buf2, "abcdef");
    free(buf2);
    syscall_unref(sc);
}

static void test_take_output_reports_error_status(void **state)
{
    (void)state;
    struct syscall *sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(sc);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(syscall_emit(sc, "partial", 7), 0);
    syscall_fail(sc, AIOS_ECANCELLED, 499, "gone");
    assert_int_equal(syscall_take_output(sc, &buf, &len, &cap), SYSCALL_STATUS_CANCELLED);
    assert_int_equal(len, 7);
    assert_string_equal(buf, "partial");
    free(buf);
    syscall_unref(sc);
}

/* ---- cancellation ---- */

static void test_cancel_request(void **state)
{
    (void)state;
    struct probe p;
    struct syscall *sc = new_probed(&p, NULL);
    assert_false(syscall_cancel_requested(sc));
    syscall_request_cancel(sc);
    assert_true(syscall_cancel_requested(sc));
    /* a request is only a flag: status unchanged, nobody notified */
    assert_int_equal(sc->status, SYSCALL_STATUS_NEW);
    assert_int_equal(p.n_calls, 0);
    syscall_request_cancel(sc); /* idempotent */
    assert_true(syscall_cancel_requested(sc));
    /* the worker honours it by failing with ECANCELLED */
    syscall_fail(sc, AIOS_ECANCELLED, 499, "cancelled");
    assert_int_equal(sc->status, SYSCALL_STATUS_CANCELLED);
    syscall_unref(sc);
}

/* ---- producer / consumer ---- */

#define STRESS_PIECES 10000

static size_t piece_len(int i) { return (size_t)(i % 13) + 1; }
static char piece_byte(int i, size_t j) { return (char)('A' + (i * 7 + (int)j) % 58); }

struct stress {
    struct syscall *sc;
    int n_notify; /* atomic */
    int emit_errors;
};

static void stress_notify(struct syscall *sc, void *ud)
{
    (void)sc;
    struct stress *st = ud;
    __atomic_add_fetch(&st->n_notify, 1, __ATOMIC_RELAXED);
}

static void *stress_producer(void *arg)
{
    struct stress *st = arg;
    char piece[16];
    for (int i = 0; i < STRESS_PIECES; i++) {
        size_t len = piece_len(i);
        for (size_t j = 0; j < len; j++) piece[j] = piece_byte(i, j);
        if (syscall_emit(st->sc, piece, len)) st->emit_errors++;
    }
    syscall_finish(st->sc, NULL, NULL);
    syscall_unref(st->sc); /* the producer's own reference */
    return NULL;
}

static void test_concurrent_emit_take(void **state)
{
    (void)state;
    struct stress st = {0};
    st.sc = syscall_new(SYSCALL_KIND_LLM, "a", NULL, NULL, NULL);
    assert_non_null(st.sc);
    st.sc->notify = stress_notify;
    st.sc->notify_ud = &st;
    syscall_ref(st.sc);

    size_t total = 0;
    for (int i = 0; i < STRESS_PIECES; i++) total += piece_len(i);
    char *expect = malloc(total);
    assert_non_null(expect);
    size_t k = 0;
    for (int i = 0; i < STRESS_PIECES; i++)
        for (size_t j = 0; j < piece_len(i); j++) expect[k++] = piece_byte(i, j);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stress_producer, &st), 0);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int n_takes = 0;
    enum syscall_status s;
    do {
        s = syscall_take_output(st.sc, &buf, &len, &cap);
        n_takes++;
        assert_true(len <= total);
    } while (!syscall_status_final(s));
    /* final status was observed under the same lock after moving the
     * output: nothing can be left behind */
    pthread_join(th, NULL);
    assert_int_equal(s, SYSCALL_STATUS_DONE);
    assert_int_equal(st.emit_errors, 0);
    assert_int_equal(st.sc->n_out, 0);
    assert_int_equal(len, total);
    assert_memory_equal(buf, expect, total);
    assert_int_equal(__atomic_load_n(&st.n_notify, __ATOMIC_RELAXED), STRESS_PIECES + 1);
    assert_true(n_takes >= 1);
    free(buf);
    free(expect);
    assert_int_equal(st.sc->refs, 1);
    syscall_unref(st.sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_final),
        cmocka_unit_test(test_new_fields),
        cmocka_unit_test(test_ids_unique_increasing),
        cmocka_unit_test(test_ids_unique_concurrent),
        cmocka_unit_test(test_refcount_frees_once),
        cmocka_unit_test(test_refcount_frees_req_and_res),
        cmocka_unit_test(test_refcount_concurrent),
        cmocka_unit_test(test_emit_appends_and_notifies_unlocked),
        cmocka_unit_test(test_emit_grows),
        cmocka_unit_test(test_finish_sets_done),
        cmocka_unit_test(test_finish_keeps_start_time),
        cmocka_unit_test(test_first_finish_wins),
        cmocka_unit_test(test_first_fail_wins),
        cmocka_unit_test(test_fail_error),
        cmocka_unit_test(test_fail_cancelled),
        cmocka_unit_test(test_fail_long_message_truncated),
        cmocka_unit_test(test_take_output),
        cmocka_unit_test(test_take_output_reports_error_status),
        cmocka_unit_test(test_cancel_request),
        cmocka_unit_test(test_concurrent_emit_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
