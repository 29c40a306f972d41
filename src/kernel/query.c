/* Constructors for the memory/storage/tool syscall payloads; see query.h. */
#include "kernel/query.h"

#include <stdlib.h>
#include <string.h>

struct kq_req *kq_req_new(const char *op, json_t *params)
{
    struct kq_req *r = calloc(1, sizeof *r);
    if (!r) goto fail;
    r->op = strdup(op ? op : "");
    if (!r->op) goto fail;
    r->params = params ? params : json_object();
    return r;
fail:
    free(r);
    json_decref(params);
    return NULL;
}

void kq_req_free(void *p)
{
    struct kq_req *r = p;
    if (!r) return;
    free(r->op);
    json_decref(r->params);
    free(r);
}

struct kq_res *kq_res_new(json_t *response)
{
    struct kq_res *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(response);
        return NULL;
    }
    r->response = response;
    return r;
}

void kq_res_free(void *p)
{
    struct kq_res *r = p;
    if (!r) return;
    json_decref(r->response);
    free(r);
}
