/* Requests and results of memory, storage and tool syscalls.
 *
 * These kinds carry the AIOS query as sent (operation and params, JSON), so
 * the same executor serves the AIOS /query route, the SDKs and the kernel
 * itself. The executor (a pool thread, see sched_pool_start) validates the
 * params, performs the operation for sc->agent, and ends the syscall with
 * syscall_finish(sc, kq_res_new(response_json), kq_res_free) or with
 * syscall_fail(sc, AIOS_E*, http_status, "message a person can act on"). */
#ifndef AIOS_KERNEL_QUERY_H
#define AIOS_KERNEL_QUERY_H

#include <jansson.h>

/* (memory syscalls carry a typed struct mem_req instead, memory/mem_req.h) */
struct kq_req {
    char *op;       /* operation_type: "write", "mount", ... ; tools: "call" */
    json_t *params; /* owned; for tools {"tool_calls":[...]} */
};

struct kq_res {
    json_t *response; /* owned: the AIOS response object, e.g.
                       * {"response_class":"memory","memory_id":...,"success":true} */
};

/* steals params; NULL on allocation failure (params released) */
struct kq_req *kq_req_new(const char *op, json_t *params);
void kq_req_free(void *p);
/* steals response */
struct kq_res *kq_res_new(json_t *response);
void kq_res_free(void *p);

#endif
