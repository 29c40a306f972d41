/* `aios model`: make and inspect model files.
 *
 *   aios model create-test OUT [--shape tiny|tiny-q8|qwen2.5-0.5b|embed] [--seed N] [--threads N]
 *   aios model info FILE.gguf
 *
 * create-test wraps testmodel_create() (llm/testmodel.c) and reports what it
 * wrote. info loads a GGUF with llama.cpp (mmap, CPU only) and prints its
 * shape. Both run in the CLI process alone, on the main thread, without a
 * kernel: they set llama.cpp's process-wide log callback to a quiet one
 * (llama.cpp's chatter shows with AIOS_LOG=debug). Exit codes: 0 ok, 1 the
 * operation failed, 2 bad usage. */
#include "cli/cli.h"

#include "llm/testmodel.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <llama.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXIT_USAGE 2

static void model_usage(FILE *f)
{
    fprintf(f,
            "usage: aios model create-test OUT [--shape tiny|tiny-q8|qwen2.5-0.5b|embed] [--seed N]\n"
            "                              [--threads N]\n"
            "       aios model info FILE.gguf\n"
            "\n"
            "create-test  write a GGUF with the real Qwen2 tokenizer and random weights\n"
            "             (default shape tiny, seed 0, threads = CPUs); same shape and\n"
            "             seed give a byte-identical file\n"
            "info         print architecture, parameters, layers, width, vocabulary\n"
            "             and chat template of a GGUF model\n");
}

static void model_quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)level;
    (void)ud;
    if (log_get_level() == LOG_LEVEL_DEBUG) fputs(text, stderr);
}

static bool model_quiet_progress(float progress, void *ud)
{
    (void)progress;
    (void)ud;
    return true;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]; advances *i past it. */
static int take_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) return -1;
    *val = argv[++*i];
    return 1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-') return AIOS_EINVAL;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return AIOS_EINVAL;
    *out = (uint64_t)v;
    return 0;
}

static int cmd_create_test(int argc, char **argv)
{
    const char *out = NULL;
    enum testmodel_shape shape = TESTMODEL_SHAPE_TINY;
    uint64_t seed = 0, threads = 0;

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if ((r = take_opt(argc, argv, &i, "--shape", &v)) != 0) {
            if (r < 0 || testmodel_shape_parse(v, &shape) != 0) {
                fprintf(stderr, "aios model create-test: --shape must be tiny, qwen2.5-0.5b or embed\n");
                return EXIT_USAGE;
            }
        } else if ((r = take_opt(argc, argv, &i, "--seed", &v)) != 0) {
            if (r < 0 || parse_u64(v, &seed) != 0) {
                fprintf(stderr, "aios model create-test: --seed needs a non-negative integer\n");
                return EXIT_USAGE;
            }
        } else if ((r = take_opt(argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || parse_u64(v, &threads) != 0 || threads > 1024) {
                fprintf(stderr, "aios model create-test: --threads needs an integer 0..1024\n");
                return EXIT_USAGE;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            model_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != 0) {
            fprintf(stderr, "aios model create-test: unknown option %s\n", argv[i]);
            model_usage(stderr);
            return EXIT_USAGE;
        } else if (!out) {
            out = argv[i];
        } else {
            fprintf(stderr, "aios model create-test: more than one output path\n");
            model_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!out) {
        fprintf(stderr, "aios model create-test: missing output path\n");
        model_usage(stderr);
        return EXIT_USAGE;
    }

    char err[512] = "";
    int64_t t0 = util_now_us();
    int rc = testmodel_create(out, shape, seed, (int)threads, err, sizeof err);
    double secs = (double)(util_now_us() - t0) / 1e6;
    if (rc) {
        fprintf(stderr, "aios model create-test: %s (%s)\n", err[0] ? err : aios_strerror(rc),
                aios_strerror(rc));
        return 1;
    }
    struct stat st;
    long long size = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("wrote %s\n  shape   %s\n  seed    %" PRIu64 "\n  size    %lld bytes (%.1f MiB)\n"
           "  time    %.2f s\n",
           out, testmodel_shape_name(shape), seed, size, (double)size / (1024.0 * 1024.0), secs);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            model_usage(stdout);
            return 0;
        }
        fprintf(stderr, "aios model info: expects exactly one FILE.gguf\n");
        model_usage(stderr);
        return EXIT_USAGE;
    }
    const char *path = argv[1];
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "aios model info: %s: %s\n", path, strerror(errno));
        return 1;
    }

    llama_backend_init();
    llama_log_set(model_quiet_log, NULL);
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = model_quiet_progress;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "aios model info: %s: llama.cpp cannot load it as a model "
                        "(AIOS_LOG=debug shows why)\n", path);
        return 1;
    }

    char arch[64] = "?", name[256] = "", desc[128] = "";
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch);
    llama_model_meta_val_str(model, "general.name", name, sizeof name);
    llama_model_desc(model, desc, sizeof desc);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const char *tmpl = llama_model_chat_template(model, NULL);

    printf("file          %s\n", path);
    printf("size          %lld bytes (%.1f MiB)\n", (long long)st.st_size,
           (double)st.st_size / (1024.0 * 1024.0));
    printf("architecture  %s\n", arch);
    if (name[0]) printf("name          %s\n", name);
    printf("description   %s\n", desc);
    printf("file type     %s\n", llama_ftype_name(llama_model_ftype(model)));
    printf("n_params      %" PRIu64 "\n", llama_model_n_params(model));
    printf("n_layer       %d\n", llama_model_n_layer(model));
    printf("n_embd        %d\n", llama_model_n_embd(model));
    printf("n_head        %d (kv %d)\n", llama_model_n_head(model), llama_model_n_head_kv(model));
    printf("n_ctx_train   %d\n", llama_model_n_ctx_train(model));
    printf("n_vocab       %d\n", llama_vocab_n_tokens(vocab));
    if (tmpl)
        printf("chat template yes (%zu bytes%s)\n", strlen(tmpl),
               strstr(tmpl, "<|im_start|>") ? ", ChatML" : "");
    else
        printf("chat template no\n");
    llama_model_free(model);
    return 0;
}

int cli_model_main(int argc, char **argv)
{
    if (argc < 2) {
        model_usage(stderr);
        return EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "create-test")) return cmd_create_test(argc - 1, argv + 1);
    if (!strcmp(sub, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
        model_usage(stdout);
        return 0;
    }
    fprintf(stderr, "aios model: unknown subcommand '%s'\n", sub);
    model_usage(stderr);
    return EXIT_USAGE;
}
