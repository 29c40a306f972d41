/* The live model table: models added, changed and removed by
 * POST /core/refresh without a restart. See models.c. */
#ifndef AIOS_KERNEL_MODELS_H
#define AIOS_KERNEL_MODELS_H

#include "kernel/kernel.h"

#include <jansson.h>

/* Merge the keys POST /core/config/update stored in <data_dir>/api_keys.json
 * into cfg->raw's api_keys (the stored ones win). Missing or unreadable
 * file: nothing changes. Before any core is built from cfg. */
void kernel_models_merge_keys(struct aios_config *cfg);

/* After the cores of k->cfg are built and started: record what each was
 * built from. 0 or AIOS_ENOMEM. */
int kernel_models_start(struct kernel *k);
void kernel_models_stop(struct kernel *k);

/* Apply the model part of a reloaded config nc (api_keys.json already
 * merged, data_dir the running one): build and start new or changed
 * models, retire removed and replaced ones. Appends one change record
 * {"key","old","new","applied"[,"note"]} per model name that changed, and
 * one for api_keys / llms.remote when they changed (values of keys never
 * shown). Names of models kept as they were are appended to unchanged.
 * 0, or AIOS_EBUSY when
 * another refresh is running (nothing done). HTTP thread; may take as long
 * as loading a model. */
int kernel_models_refresh(struct kernel *k, const struct aios_config *nc, json_t *changes,
                          json_t *unchanged);

/* Append {"key","old","new","applied"[,"note"]} to changes (the
 * /core/refresh report); old and new (may be NULL) are stolen. */
void kernel_models_add_change(json_t *changes, const char *key, json_t *old, json_t *new,
                              bool applied, const char *note);

/* GET /core/llms/list: [{"name","backend","served","n_ctx"[,"path"]
 * [,"hostname"][,"replicas"]}] of the models as now applied. */
json_t *kernel_models_list(struct kernel *k);

#endif
