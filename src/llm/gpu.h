/* Device offload of the embedded llama.cpp models (gpu.c): the per-model
 * knobs (n_gpu_layers, main_gpu, split_mode, tensor_split, offload_kqv,
 * gpu_mem_bytes), the devices ggml enumerates, and how many KV cells fit in
 * device memory. */
#ifndef AIOS_LLM_GPU_H
#define AIOS_LLM_GPU_H

#include <jansson.h>
#include <llama.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GPU_MAX_DEV 16

struct gpu_opts {
    int n_gpu_layers;   /* layers on devices; -1: all (default when a device exists) */
    int main_gpu;       /* index into gpu_device(): the device of split_mode none */
    int split_mode;     /* enum llama_split_mode: NONE, LAYER (default), ROW */
    float tensor_split[GPU_MAX_DEV]; /* share per device; all 0: by free memory */
    int n_tensor_split;
    bool offload_kqv;   /* KV cache and attention on the layers' devices (default) */
    int64_t mem_bytes;  /* gpu_mem_bytes: most device memory the model may use; -1: no cap */
};

/* The offload knobs of one model entry (a JSON object from the config, or
 * NULL) into o, defaults first. `where` names the entry in messages
 * ("llms.models[2]", "embedding"). 0, or AIOS_ECONFIG with "where.key:
 * what is wrong" in err. Devices are checked by gpu_resolve(). */
int gpu_opts_read(json_t *ent, const char *where, struct gpu_opts *o, char *err, size_t errlen);

/* True when key is one of the knobs above (for callers that reject
 * unknown keys). */
bool gpu_is_key(const char *key);

/* The offload devices ggml enumerates, in llama.cpp's order: discrete GPUs
 * (Vulkan, CUDA), else integrated ones. The CPU build has none. Vulkan
 * lists a CPU implementation (Mesa's lavapipe) only when
 * GGML_VK_VISIBLE_DEVICES names it. */
size_t gpu_device_count(void);
ggml_backend_dev_t gpu_device(size_t i);

/* Where a model goes, decided before it is loaded. */
struct gpu_plan {
    int n_gpu_layers;      /* what llama.cpp gets (0 when nothing is offloaded) */
    int n_devs;            /* devices used, in devs[] (NULL-terminated) */
    ggml_backend_dev_t devs[GPU_MAX_DEV + 1];
    int64_t free_bytes;    /* their free memory at load, summed */
    int64_t total_bytes;   /* their memory, summed */
};

/* Checks o against the devices (main_gpu, tensor_split, split_mode) and
 * fills the plan and the model params (devices, n_gpu_layers, main_gpu,
 * split_mode, tensor_split: they point into o and plan, which must outlive
 * the load). A model with n_gpu_layers > 0 on a host without devices runs
 * on the CPU (warning). 0 or AIOS_ECONFIG naming the field. */
int gpu_resolve(const struct gpu_opts *o, const char *where, struct gpu_plan *plan,
                struct llama_model_params *mp, char *err, size_t errlen);

/* Layers of a loaded model that live on devices: min(n_gpu_layers, n_layer)
 * repeating layers (the output layer goes too when n_gpu_layers > n_layer). */
int gpu_layers_offloaded(const struct gpu_plan *plan, const struct llama_model *model);

/* Device memory the engine may fill with KV cells: the smaller of the
 * devices' free memory at load less a margin (1/16, at least 256 MiB) and
 * gpu_mem_bytes, less the offloaded share of the weights and a reserve for
 * the compute buffers of n_batch rows. May be <= 0. */
int64_t gpu_kv_bytes_avail(const struct gpu_opts *o, const struct gpu_plan *plan,
                           const struct llama_model *model, int n_batch);

/* The estimate of the compute buffers on the devices for n_batch rows. */
int64_t gpu_compute_reserve(const struct gpu_plan *plan, const struct llama_model *model, int n_batch);

/* The offloaded share of the weights (bytes), an estimate by layers. */
int64_t gpu_model_bytes_on_device(const struct gpu_plan *plan, const struct llama_model *model);

/* [{index, name, description, type, memory_total, memory_free}] of every
 * ggml device (the CPU too), for GET /status. */
json_t *gpu_devices_json(void);

/* {n_gpu_layers, layers_offloaded, n_layer, devices, split_mode,
 * offload_kqv, model_bytes, model_bytes_on_device, ...} of a loaded model. */
json_t *gpu_placement_json(const struct gpu_opts *o, const struct gpu_plan *plan,
                           const struct llama_model *model);

const char *gpu_split_name(int split_mode);

#endif
