/* Fuzz target: the YAML config loader (src/kernel/config.c) from a buffer:
 * config_load_string (YAML -> JSON with positions, then every typed
 * setting), then what the kernel reads from it at start: the models, the
 * structured-output bounds and dotted lookups. */
#include "fuzz.h"

#include "kernel/config.h"
#include "llm/structured.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aios_config cfg;
    char err[512];
    if (config_load_string(&cfg, (const char *)data, size, err, sizeof err) == 0) {
        struct grammar_opts o;
        llm_structured_opts(&cfg, &o, err, sizeof err);
        for (size_t i = 0; i < cfg.n_models; i++) config_find_model(&cfg, cfg.models[i].name);
        static const char *keys[] = {"llms.models", "memory.auto_inject", "tools.mcp_servers",
                                     "access.agents", "scheduler.policy", "storage.root_dir"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) config_lookup(&cfg, keys[i]);
        char *p = config_resolve_path(&cfg, cfg.storage_root);
        free(p);
    }
    config_free(&cfg);
    return 0;
}
