/* Kernel routes: GET /status (health, version, models, scheduler queues).
 * Later issues add the AIOS /core and /agents routes here. */
#include "api/api.h"

#include "cluster/cluster.h"
#include "llm/embed.h"
#include "llm/gpu.h"
#include "util/util.h"

enum MHD_Result api_route_status(struct api_req *r)
{
    struct kernel *k = r->k;
    struct sched_stats st;
    sched_get_stats(k->sched, &st);
    json_t *models = json_array();
    for (size_t i = 0; i < k->n_cores; i++) {
        struct llm_core *c = k->cores[i];
        json_t *o = json_object(); /* by hand: json_pack's format parse costs more */
        json_object_set_new(o, "name", json_string(c->name));
        json_object_set_new(o, "backend", json_string(c->backend));
        if (c->ops->describe) c->ops->describe(c, o);
        if (c->retired) json_object_set_new(o, "retired", json_true()); /* in-flight calls end here */
        json_array_append_new(models, o);
    }
    json_t *queued = json_object(), *running = json_object();
    for (int i = 0; i < SYSCALL_KIND__COUNT; i++) {
        json_object_set_new(queued, syscall_kind_name(i), json_integer((json_int_t)st.n_queued[i]));
        json_object_set_new(running, syscall_kind_name(i), json_integer((json_int_t)st.n_running[i]));
    }
    json_t *body = json_object(), *sched = json_object();
    json_object_set_new(body, "status", json_string("ok"));
    json_object_set_new(body, "version", json_string(k->version));
    json_object_set_new(body, "uptime_s", json_real((double)(util_now_us() - k->t_start_us) / 1e6));
    json_object_set_new(body, "models", models);
    json_object_set_new(body, "scheduler", sched);
    json_object_set_new(sched, "policy", json_string(st.policy));
    json_object_set_new(sched, "queued", queued);
    json_object_set_new(sched, "running", running);
    json_object_set_new(sched, "submitted", json_integer((json_int_t)st.n_submitted));
    json_object_set_new(sched, "finished", json_integer((json_int_t)st.n_finished));
    json_object_set_new(sched, "preempted", json_integer((json_int_t)st.n_preempted));
    if (k->embed) json_object_set_new(body, "embedding", emb_describe(k->embed)); /* llm/embed.c */
    json_object_set_new(body, "devices", gpu_devices_json()); /* ggml's devices, llm/gpu.c */
    /* KV affinity: this kernel's name, its peers, calls forwarded (cluster.c) */
    if (k->cluster) json_object_set_new(body, "cluster", clu_status_json(k->cluster));
    return api_send_json(r, 200, body);
}
