/* Device offload of the embedded llama.cpp models.
 *
 * Purpose: the engine (llama.c) and the embedding model (embed.c) load their
 * GGUF models with llama.cpp; in a build with a GPU backend (make
 * GPU=vulkan, make GPU=cuda; docs/gpu.md) their layers and KV cache can live
 * on devices. This file reads the per-model knobs, picks the devices, tells
 * llama.cpp where layers go, and says how much device memory is left for KV
 * cells, so that the engine's KV budget (kv_size) is bounded by what fits.
 *
 * Devices: we hand llama.cpp an explicit list (llama_model_params.devices)
 * made the way llama.cpp makes its default one (discrete GPUs, else
 * integrated ones), so main_gpu and tensor_split index a list we know and
 * GET /status can say which devices hold a model. The CPU build enumerates
 * no such device and everything stays on the CPU.
 *
 * Budget: free device memory is read once, before the model is loaded
 * (ggml_backend_dev_memory). The weights' share on the devices is estimated
 * by layers (llama.cpp does not expose per-device buffer sizes), and the
 * compute buffers by n_batch rows of logits and activations; a margin stays
 * free. gpu_mem_bytes caps the total, which also lets tests on lavapipe
 * (whose "device memory" is host RAM) force a small budget.
 *
 * No state of its own: everything here is a pure function of the options,
 * the devices and the model. */
#include "llm/gpu.h"

#include "util/err.h"
#include "util/log.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define MARGIN_MIN (256LL << 20)

static const char *const knob_keys[] = {"n_gpu_layers", "main_gpu", "split_mode", "tensor_split",
                                        "offload_kqv", "gpu_mem_bytes"};

bool gpu_is_key(const char *key)
{
    for (size_t i = 0; i < sizeof knob_keys / sizeof *knob_keys; i++)
        if (!strcmp(key, knob_keys[i])) return true;
    return false;
}

const char *gpu_split_name(int split_mode)
{
    switch (split_mode) {
    case LLAMA_SPLIT_MODE_NONE: return "none";
    case LLAMA_SPLIT_MODE_LAYER: return "layer";
    case LLAMA_SPLIT_MODE_ROW: return "row";
    default: return "?";
    }
}

static int bad(char *err, size_t errlen, const char *where, const char *key, const char *what)
{
    snprintf(err, errlen, "%s.%s: %s", where, key, what);
    return AIOS_ECONFIG;
}

int gpu_opts_read(json_t *ent, const char *where, struct gpu_opts *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->n_gpu_layers = -1;
    o->main_gpu = 0;
    o->split_mode = LLAMA_SPLIT_MODE_LAYER;
    o->offload_kqv = true;
    o->mem_bytes = -1;
    if (!ent || !json_is_object(ent)) return 0;
    json_t *v = json_object_get(ent, "n_gpu_layers");
    if (v && !json_is_null(v)) {
        if (json_is_string(v) && !strcmp(json_string_value(v), "all")) o->n_gpu_layers = -1;
        else if (json_is_integer(v) && json_integer_value(v) >= -1 &&
                 json_integer_value(v) <= 1000000)
            o->n_gpu_layers = (int)json_integer_value(v);
        else
            return bad(err, errlen, where, "n_gpu_layers",
                       "expected \"all\", -1 (all) or a number of layers from 0 (none)");
    }
    v = json_object_get(ent, "main_gpu");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= GPU_MAX_DEV)
            return bad(err, errlen, where, "main_gpu",
                       "expected a device index (0 is the first GPU, see GET /status devices)");
        o->main_gpu = (int)json_integer_value(v);
    }
    v = json_object_get(ent, "split_mode");
    if (v && !json_is_null(v)) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (!strcmp(s, "none")) o->split_mode = LLAMA_SPLIT_MODE_NONE;
        else if (!strcmp(s, "layer")) o->split_mode = LLAMA_SPLIT_MODE_LAYER;
        else if (!strcmp(s, "row")) o->split_mode = LLAMA_SPLIT_MODE_ROW;
        else return bad(err, errlen, where, "split_mode", "expected \"none\", \"layer\" or \"row\"");
    }
    v = json_object_get(ent, "tensor_split");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > GPU_MAX_DEV)
            return bad(err, errlen, where, "tensor_split",
                       "expected a list of 1 to 16 shares, one per device (e.g. [3, 1])");
        double sum = 0;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_number(x) || json_number_value(x) < 0 || json_number_value(x) > 1e6)
                return bad(err, errlen, where, "tensor_split",
                           "expected shares that are numbers from 0 to 1000000");
            o->tensor_split[i] = (float)json_number_value(x);
            sum += json_number_value(x);
        }
        if (sum <= 0) return bad(err, errlen, where, "tensor_split", "all shares are 0");
        o->n_tensor_split = (int)json_array_size(v);
    }
    v = json_object_get(ent, "offload_kqv");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return bad(err, errlen, where, "offload_kqv", "expected true or false");
        o->offload_kqv = json_is_true(v);
    }
    v = json_object_get(ent, "gpu_mem_bytes");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < (1LL << 20))
            return bad(err, errlen, where, "gpu_mem_bytes",
                       "expected a number of bytes, at least 1048576 (1 MiB)");
        o->mem_bytes = json_integer_value(v);
    }
    return 0;
}

/* llama.cpp's default list (src/llama.cpp): GPUs, else integrated GPUs;
 * RPC devices are not ours to pick */
static size_t list_devices(ggml_backend_dev_t *out, size_t cap)
{
    size_t n = 0;
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        enum ggml_backend_dev_type want =
            pass == 0 ? GGML_BACKEND_DEVICE_TYPE_GPU : GGML_BACKEND_DEVICE_TYPE_IGPU;
        for (size_t i = 0; i < ggml_backend_dev_count() && n < cap; i++) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(d) != want) continue;
            if (!strcmp(ggml_backend_reg_name(ggml_backend_dev_backend_reg(d)), "RPC")) continue;
            out[n++] = d;
        }
    }
    return n;
}

size_t gpu_device_count(void)
{
    ggml_backend_dev_t d[GPU_MAX_DEV];
    return list_devices(d, GPU_MAX_DEV);
}

ggml_backend_dev_t gpu_device(size_t i)
{
    ggml_backend_dev_t d[GPU_MAX_DEV];
    size_t n = list_devices(d, GPU_MAX_DEV);
    return i < n ? d[i] : NULL;
}

int gpu_resolve(const struct gpu_opts *o, const char *where, struct gpu_plan *plan,
                struct llama_model_params *mp, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    ggml_backend_dev_t all[GPU_MAX_DEV];
    size_t n = list_devices(all, GPU_MAX_DEV);
    mp->main_gpu = 0;
    mp->split_mode = LLAMA_SPLIT_MODE_NONE;
    mp->tensor_split = NULL;
    plan->devs[0] = NULL;
    mp->devices = plan->devs; /* empty list: nothing offloaded */
    mp->n_gpu_layers = 0;
    if (o->n_gpu_layers == 0) return 0;
    if (n == 0) {
        if (o->n_gpu_layers > 0)
            LOG_WARN("gpu", "%s: n_gpu_layers is %d but this build or host has no GPU device; "
                     "the model runs on the CPU (docs/gpu.md)", where, o->n_gpu_layers);
        return 0;
    }
    if ((size_t)o->main_gpu >= n) {
        snprintf(err, errlen, "%s.main_gpu: %d, but there %s %zu GPU device%s (0..%zu)", where,
                 o->main_gpu, n == 1 ? "is" : "are", n, n == 1 ? "" : "s", n - 1);
        return AIOS_ECONFIG;
    }
    if (o->n_tensor_split > (int)n) {
        snprintf(err, errlen, "%s.tensor_split: %d shares for %zu GPU device%s", where,
                 o->n_tensor_split, n, n == 1 ? "" : "s");
        return AIOS_ECONFIG;
    }
    if (o->split_mode == LLAMA_SPLIT_MODE_NONE || n == 1) {
        plan->devs[0] = all[o->main_gpu];
        plan->n_devs = 1;
    } else {
        for (size_t i = 0; i < n; i++) plan->devs[i] = all[i];
        plan->n_devs = (int)n;
        mp->split_mode = (enum llama_split_mode)o->split_mode;
        mp->main_gpu = o->main_gpu; /* row mode: intermediate results live there */
        if (o->n_tensor_split > 0) mp->tensor_split = o->tensor_split;
    }
    plan->devs[plan->n_devs] = NULL;
    for (int i = 0; i < plan->n_devs; i++) {
        size_t fr = 0, tot = 0;
        ggml_backend_dev_memory(plan->devs[i], &fr, &tot);
        plan->free_bytes += (int64_t)fr;
        plan->total_bytes += (int64_t)tot;
    }
    plan->n_gpu_layers = o->n_gpu_layers < 0 ? 1000000 : o->n_gpu_layers;
    mp->n_gpu_layers = plan->n_gpu_layers;
    return 0;
}

int gpu_layers_offloaded(const struct gpu_plan *plan, const struct llama_model *model)
{
    int nl = llama_model_n_layer(model);
    return plan->n_gpu_layers < nl ? plan->n_gpu_layers : nl;
}

int64_t gpu_model_bytes_on_device(const struct gpu_plan *plan, const struct llama_model *model)
{
    int nl = llama_model_n_layer(model);
    if (plan->n_gpu_layers <= 0 || nl <= 0) return 0;
    int64_t size = (int64_t)llama_model_size(model);
    /* the output layer (and the token embeddings' copy it may tie to) counts
     * as one more layer when everything goes */
    if (plan->n_gpu_layers > nl) return size;
    return size / (nl + 1) * plan->n_gpu_layers;
}

int64_t gpu_kv_bytes_avail(const struct gpu_opts *o, const struct gpu_plan *plan,
                           const struct llama_model *model, int n_batch)
{
    int64_t avail = plan->free_bytes;
    int64_t margin = avail / 16 > MARGIN_MIN ? avail / 16 : MARGIN_MIN;
    avail -= margin;
    if (o->mem_bytes >= 0 && o->mem_bytes < avail) avail = o->mem_bytes;
    return avail - gpu_model_bytes_on_device(plan, model) - gpu_compute_reserve(plan, model, n_batch);
}

int64_t gpu_compute_reserve(const struct gpu_plan *plan, const struct llama_model *model, int n_batch)
{
    if (plan->n_gpu_layers <= 0) return 0;
    /* logits of n_batch rows (on the device only when the output layer is)
     * and a few activations of each */
    int64_t rows = n_batch;
    int64_t reserve = rows * 4 * (8 * (int64_t)llama_model_n_embd(model));
    if (plan->n_gpu_layers > llama_model_n_layer(model))
        reserve += rows * 4 * (int64_t)llama_vocab_n_tokens(llama_model_get_vocab(model));
    return reserve;
}

static const char *type_name(enum ggml_backend_dev_type t)
{
    switch (t) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
    default: return "other";
    }
}

json_t *gpu_devices_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        size_t fr = 0, tot = 0;
        ggml_backend_dev_memory(d, &fr, &tot);
        json_array_append_new(a, json_pack("{s:I,s:s,s:s,s:s,s:I,s:I}", "index", (json_int_t)i,
                                           "name", ggml_backend_dev_name(d), "description",
                                           ggml_backend_dev_description(d), "type",
                                           type_name(ggml_backend_dev_type(d)), "memory_total",
                                           (json_int_t)tot, "memory_free", (json_int_t)fr));
    }
    return a;
}

json_t *gpu_placement_json(const struct gpu_opts *o, const struct gpu_plan *plan,
                           const struct llama_model *model)
{
    json_t *g = json_object(), *devs = json_array();
    for (int i = 0; i < plan->n_devs && plan->n_gpu_layers > 0; i++)
        json_array_append_new(devs, json_string(ggml_backend_dev_name(plan->devs[i])));
    int nl = llama_model_n_layer(model);
    int off = gpu_layers_offloaded(plan, model);
    json_object_set_new(g, "n_layer", json_integer(nl));
    json_object_set_new(g, "layers_offloaded", json_integer(off));
    json_object_set_new(g, "output_offloaded", json_boolean(plan->n_gpu_layers > nl));
    json_object_set_new(g, "devices", devs);
    json_object_set_new(g, "split_mode", json_string(gpu_split_name(plan->n_devs > 1 ? o->split_mode
                                                                     : LLAMA_SPLIT_MODE_NONE)));
    json_object_set_new(g, "offload_kqv", json_boolean(o->offload_kqv));
    json_object_set_new(g, "model_bytes", json_integer((json_int_t)llama_model_size(model)));
    json_object_set_new(g, "model_bytes_on_device",
                        json_integer((json_int_t)gpu_model_bytes_on_device(plan, model)));
    if (o->mem_bytes >= 0) json_object_set_new(g, "gpu_mem_bytes", json_integer((json_int_t)o->mem_bytes));
    return g;
}
