/* Test-model creator.
 *
 * No pretrained weights can be downloaded where aios is built and tested, so
 * tests and benchmarks run on models we make: the real Qwen2 tokenizer
 * (llama.cpp's models/ggml-vocab-qwen2.gguf, embedded in the binary by
 * vocab_blob.S), random weights, real compute. The text is noise; batching,
 * KV state, timing and grammar-constrained output are real.
 *
 * Pipeline (every file lives next to out_path, so the last step is an atomic
 * rename on one file system):
 *   1. metadata: the tokenizer.* keys of the embedded vocab + general.* and
 *      qwen2.* hyperparameters of the shape;
 *   2. llama_model_init_from_user() builds the model in memory and calls
 *      fill_tensor() for each tensor; llama_model_save_to_file() writes it
 *      (F32) to "<out>.raw-XXXXXX";
 *   3. rewrite to "<out>.tmp-XXXXXX": add tokenizer.chat_template (the saver
 *      writes no template) and keep only the tensors a real Qwen2.5 GGUF has
 *      (qwen2_keeps()). With no file to read, llama.cpp's loader creates
 *      every optional tensor: an untied output.weight, output.bias and
 *      per-matmul scales. Dropping output.weight gives tied embeddings like
 *      the real Qwen2.5-0.5B (tie_word_embeddings) and halves the file; the
 *      scales would distort every projection. Tensor bytes are copied
 *      unchanged; gguf recomputes the offsets;
 *   4. qwen2.5-0.5b only: llama_model_quantize() to Q8_0 into "<out>.q8-XXXXXX"
 *      (quantize copies every key, the template included);
 *   5. load the result with llama_model_load_from_file() and check shape and
 *      chat template, chmod 0644, fsync, rename to out_path.
 * Any failure unlinks every temp file; out_path is either the old file or a
 * complete new one.
 *
 * Reproducibility: a weight depends only on (seed, tensor name, element
 * index). Each tensor is cut into blocks of FILL_BLOCK elements; a block's
 * splitmix64 stream is seeded from seed ^ FNV-1a(name) and the block number,
 * so the bytes do not depend on the thread count. Values are uniform with
 * standard deviation FILL_STDEV, computed with integer ops and exact float
 * scaling (no libm), so they are the same on every IEEE machine. Tensors
 * whose name contains "norm" are 1.0 so activations stay sane. Q8_0
 * quantization is per row and also thread-count independent.
 *
 * Threads: testmodel_create() may be called from any thread but not
 * concurrently with itself. While it runs it swaps llama.cpp's process-wide
 * log callback for a quiet one (unless AIOS_LOG=debug) and restores the
 * previous one at the end. It calls llama_backend_init() once per process. */
#include "llm/testmodel.h"

#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

#include <ggml-backend.h>
#include <ggml.h>
#include <gguf.h>
#include <llama.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const unsigned char aios_vocab_qwen2[], aios_vocab_qwen2_end[];

#define FILL_BLOCK ((size_t)1 << 16)   /* elements per PRNG stream */
#define FILL_STAGE_BLOCKS 64           /* blocks per staging buffer (16 MiB) */
#define FILL_STDEV 0.02f
#define COPY_BUF ((size_t)4 << 20)

static const char CHATML_TEMPLATE[] =
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

struct shape_def {
    const char *name;         /* what testmodel_shape_parse accepts */
    const char *general_name; /* general.name in the file */
    uint32_t n_ctx_train;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t n_ff;
    bool quantize_q8_0;
    uint32_t pooling; /* qwen2.pooling_type (llama_pooling_type); 0 = none written */
};

static const struct shape_def g_shapes[] = {
    [TESTMODEL_SHAPE_TINY] = {"tiny", "aios-test-tiny", 4096, 64, 2, 4, 2, 128, false, 0},
    [TESTMODEL_SHAPE_QWEN05B] = {"qwen2.5-0.5b", "aios-test-qwen2.5-0.5b", 32768, 896, 24, 14, 2,
                                 4864, true, 0},
    /* an embedding model for the hybrid retrieval of memory and storage:
     * the tiny geometry, mean pooling in the metadata, so llama.cpp run in
     * embeddings mode pools real (if meaningless) vectors */
    [TESTMODEL_SHAPE_EMBED] = {"embed", "aios-test-embed", 512, 64, 2, 4, 2, 128, false, 1},
    /* the tiny geometry in Q8_0: matrices that ggml multiplies alike for
     * one row and for several (the engine's padding of lone rows) */
    [TESTMODEL_SHAPE_TINY_Q8] = {"tiny-q8", "aios-test-tiny-q8", 4096, 64, 2, 4, 2, 128, true, 0},
};
#define N_SHAPES (sizeof g_shapes / sizeof g_shapes[0])

int testmodel_shape_parse(const char *s, enum testmodel_shape *out)
{
    if (!s || !out) return AIOS_EINVAL;
    for (size_t i = 0; i < N_SHAPES; i++) {
        if (!strcmp(s, g_shapes[i].name)) {
            *out = (enum testmodel_shape)i;
            return 0;
        }
    }
    return AIOS_EINVAL;
}

const char *testmodel_shape_name(enum testmodel_shape shape)
{
    if ((unsigned)shape >= N_SHAPES) return "?";
    return g_shapes[shape].name;
}

/* printf into err (util_errf) */
#define set_err(err, errlen, ...) ((void)util_errf(err, errlen, AIOS_OK, __VA_ARGS__))

/* ---- llama.cpp process state ---------------------------------------- */

static pthread_once_t g_backend_once = PTHREAD_ONCE_INIT;

static void backend_init_once(void) { llama_backend_init(); }

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    (void)level;
    if (log_get_level() == LOG_LEVEL_DEBUG) fputs(text, stderr);
}

static bool quiet_progress(float progress, void *ud)
{
    (void)progress;
    (void)ud;
    return true;
}

/* ---- which tensors a Qwen2 file has ---------------------------------- */

/* With no file to read, llama.cpp's loader creates every optional tensor of
 * the architecture: output.weight (untied head), output.bias, and per-matmul
 * "scale" / "input_scale" tensors meant for FP8/NVFP4 checkpoints. Random
 * values there would scale every projection by a small random number, which
 * no real Qwen2 does, so only the tensors of a real Qwen2.5 GGUF are kept. */
static bool qwen2_keeps(const char *name)
{
    static const char *const per_layer[] = {
        "attn_norm.weight", "attn_q.weight",  "attn_k.weight",   "attn_v.weight",
        "attn_q.bias",      "attn_k.bias",    "attn_v.bias",     "attn_output.weight",
        "ffn_norm.weight",  "ffn_gate.weight", "ffn_up.weight",  "ffn_down.weight",
    };
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight")) return true;
    if (strncmp(name, "blk.", 4) != 0) return false;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != '.') return false;
    for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++)
        if (!strcmp(p, per_layer[i])) return true;
    return false;
}
#define QWEN2_TENSORS_PER_LAYER 12

/* ---- deterministic weights ------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 24 random bits -> [-1, 1) exactly (24-bit integers and powers of two are
 * exact in float). */
static inline float unit24(uint32_t u24) { return (float)u24 * 0x1p-23f - 1.0f; }

/* Fills n (<= FILL_BLOCK) elements of block number blk of a tensor. */
static void fill_block(float *dst, size_t n, uint64_t base, uint64_t blk, float amp)
{
    uint64_t s = base ^ (blk * 0xD1B54A32D192ED03ull);
    (void)splitmix64(&s);
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t u = splitmix64(&s);
        dst[i] = unit24((uint32_t)(u >> 40)) * amp;
        dst[i + 1] = unit24((uint32_t)(u >> 16) & 0xFFFFFFu) * amp;
    }
    if (i < n) dst[i] = unit24((uint32_t)(splitmix64(&s) >> 40)) * amp;
}

struct fill_ctx {
    uint64_t seed;
    int n_threads;
    float *stage; /* FILL_STAGE_BLOCKS * FILL_BLOCK floats */
    int err;      /* first failure; later callbacks do nothing */
    char errmsg[160];
};

struct fill_part {
    float *stage;     /* start of this stage */
    size_t n;         /* elements in this stage */
    uint64_t blk0;    /* tensor block number of stage[0] */
    uint64_t base;    /* seed ^ name hash */
    float amp;
    size_t part, n_parts; /* this worker does blocks part, part+n_parts, ... */
};

static void *fill_worker(void *arg)
{
    const struct fill_part *p = arg;
    size_t n_blocks = (p->n + FILL_BLOCK - 1) / FILL_BLOCK;
    for (size_t b = p->part; b < n_blocks; b += p->n_parts) {
        size_t off = b * FILL_BLOCK;
        size_t len = p->n - off < FILL_BLOCK ? p->n - off : FILL_BLOCK;
        fill_block(p->stage + off, len, p->base, p->blk0 + b, p->amp);
    }
    return NULL;
}

/* Fills one staging buffer with up to n_threads threads. A thread that
 * cannot be started has its share done here instead. */
static void fill_stage(struct fill_ctx *fc, size_t n, uint64_t blk0, uint64_t base, float amp)
{
    enum { MAX_THREADS = 64 };
    struct fill_part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS];
    size_t n_blocks = (n + FILL_BLOCK - 1) / FILL_BLOCK;
    size_t n_parts = (size_t)fc->n_threads;
    if (n_parts > MAX_THREADS) n_parts = MAX_THREADS;
    if (n_parts > n_blocks) n_parts = n_blocks;
    if (n_parts == 0) n_parts = 1;

    for (size_t i = 0; i < n_parts; i++) {
        parts[i] = (struct fill_part){fc->stage, n, blk0, base, amp, i, n_parts};
        started[i] = i > 0 && pthread_create(&tid[i], NULL, fill_worker, &parts[i]) == 0;
    }
    for (size_t i = 0; i < n_parts; i++)
        if (!started[i]) fill_worker(&parts[i]);
    for (size_t i = 1; i < n_parts; i++)
        if (started[i]) pthread_join(tid[i], NULL);
}

/* llama_model_set_tensor_data_t: called once per tensor by the loader. */
static void fill_tensor(struct ggml_tensor *t, void *ud)
{
    struct fill_ctx *fc = ud;
    if (fc->err) return;
    size_t nbytes = ggml_nbytes(t);
    if (!qwen2_keeps(t->name)) {
        /* dropped by the rewrite step; zero it so no stale memory is written */
        ggml_backend_tensor_memset(t, 0, 0, nbytes);
        return;
    }
    if (t->type != GGML_TYPE_F32) {
        fc->err = AIOS_EENGINE;
        snprintf(fc->errmsg, sizeof fc->errmsg, "tensor %s has type %s, expected f32", t->name,
                 ggml_type_name(t->type));
        return;
    }
    size_t n = (size_t)ggml_nelements(t);
    size_t stage_n = FILL_STAGE_BLOCKS * FILL_BLOCK;
    bool is_norm = strstr(t->name, "norm") != NULL;
    uint64_t base = fc->seed ^ util_fnv1a64(t->name);
    /* uniform on [-a, a) has stdev a / sqrt(3) */
    const float amp = FILL_STDEV * 1.7320508f;

    for (size_t off = 0; off < n; off += stage_n) {
        size_t len = n - off < stage_n ? n - off : stage_n;
        if (is_norm) {
            for (size_t i = 0; i < len; i++) fc->stage[i] = 1.0f;
        } else {
            fill_stage(fc, len, off / FILL_BLOCK, base, amp);
        }
        ggml_backend_tensor_set(t, fc->stage, off * sizeof(float), len * sizeof(float));
    }
}

/* ---- metadata -------------------------------------------------------- */

/* Builds the metadata for init_from_user; *n_vocab gets the token count. */
static int build_meta(const struct shape_def *d, struct gguf_context **out, uint32_t *n_vocab,
                      char *err, size_t errlen)
{
    int rc = 0;
    struct gguf_context *vocab = NULL, *meta = NULL;
    *out = NULL;

    struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
    size_t vsize = (size_t)(aios_vocab_qwen2_end - aios_vocab_qwen2);
    vocab = gguf_init_from_buffer(aios_vocab_qwen2, vsize, gp);
    if (!vocab) {
        set_err(err, errlen, "embedded Qwen2 tokenizer (%zu bytes) is not a valid GGUF", vsize);
        rc = AIOS_EENGINE;
        goto fail;
    }
    int64_t kid = gguf_find_key(vocab, "tokenizer.ggml.tokens");
    if (kid < 0 || gguf_get_kv_type(vocab, kid) != GGUF_TYPE_ARRAY) {
        set_err(err, errlen, "embedded tokenizer has no tokenizer.ggml.tokens");
        rc = AIOS_EENGINE;
        goto fail;
    }
    *n_vocab = (uint32_t)gguf_get_arr_n(vocab, kid);

    meta = gguf_init_empty();
    if (!meta) {
        rc = AIOS_ENOMEM;
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    /* keep only tokenizer.* (minus the template, which the saver would drop
     * anyway and which we replace with our own ChatML one) */
    gguf_set_kv(meta, vocab);
    for (int64_t i = gguf_get_n_kv(meta) - 1; i >= 0; i--) {
        const char *key = gguf_get_key(meta, i);
        if (strncmp(key, "tokenizer.", 10) != 0 || !strcmp(key, "tokenizer.chat_template")) {
            char name[256];
            snprintf(name, sizeof name, "%s", key);
            gguf_remove_key(meta, name);
        }
    }
    gguf_set_val_str(meta, "general.architecture", "qwen2");
    gguf_set_val_str(meta, "general.name", d->general_name);
    gguf_set_val_u32(meta, "qwen2.vocab_size", *n_vocab);
    gguf_set_val_u32(meta, "qwen2.context_length", d->n_ctx_train);
    gguf_set_val_u32(meta, "qwen2.embedding_length", d->n_embd);
    gguf_set_val_u32(meta, "qwen2.block_count", d->n_layer);
    gguf_set_val_u32(meta, "qwen2.feed_forward_length", d->n_ff);
    gguf_set_val_u32(meta, "qwen2.attention.head_count", d->n_head);
    gguf_set_val_u32(meta, "qwen2.attention.head_count_kv", d->n_head_kv);
    gguf_set_val_f32(meta, "qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
    gguf_set_val_f32(meta, "qwen2.rope.freq_base", 1000000.0f);
    if (d->pooling) gguf_set_val_u32(meta, "qwen2.pooling_type", d->pooling);

    /* A tensor info in the metadata overrides the type init_from_user gives
     * that tensor (F32 otherwise). output.weight is dropped later, so make it
     * Q4_0: 7x less memory and raw-file I/O than F32 (545 MB for 0.5b). */
    struct ggml_tensor out_w;
    memset(&out_w, 0, sizeof out_w);
    out_w.type = GGML_TYPE_Q4_0;
    out_w.ne[0] = d->n_embd;
    out_w.ne[1] = *n_vocab;
    out_w.ne[2] = out_w.ne[3] = 1;
    out_w.nb[0] = ggml_type_size(GGML_TYPE_Q4_0);
    out_w.nb[1] = ggml_row_size(GGML_TYPE_Q4_0, out_w.ne[0]);
    out_w.nb[2] = out_w.nb[3] = out_w.nb[1] * (size_t)out_w.ne[1];
    ggml_set_name(&out_w, "output.weight");
    gguf_add_tensor(meta, &out_w);

    gguf_free(vocab);
    *out = meta;
    return 0;
fail:
    if (meta) gguf_free(meta);
    if (vocab) gguf_free(vocab);
    return rc;
}

/* ---- files ----------------------------------------------------------- */

/* Creates an empty "<out_path>.<tag>-XXXXXX" and returns its malloc'd name. */
static int make_temp(const char *out_path, const char *tag, char **path, char *err, size_t errlen)
{
    *path = NULL;
    char *p = NULL;
    if (asprintf(&p, "%s.%s-XXXXXX", out_path, tag) < 0) {
        set_err(err, errlen, "out of memory");
        return AIOS_ENOMEM;
    }
    int fd = mkstemp(p);
    if (fd < 0) {
        set_err(err, errlen, "cannot create a temp file next to %s: %s", out_path, strerror(errno));
        free(p);
        return AIOS_EIO;
    }
    close(fd);
    *path = p;
    return 0;
}

static void drop_temp(char **path)
{
    if (*path) {
        unlink(*path);
        free(*path);
        *path = NULL;
    }
}

static int write_zeros(FILE *f, size_t n)
{
    static const char zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return AIOS_EIO;
        n -= k;
    }
    return 0;
}

/* Copies src to dst with tokenizer.chat_template set to tmpl and only the
 * tensors keep() accepts, which must be n_expect. Tensor bytes are copied as
 * they are; gguf recomputes the offsets (each padded to the alignment). */
static int gguf_rewrite(const char *src, const char *dst, const char *tmpl,
                        bool (*keep)(const char *name), int64_t n_expect, char *err,
                        size_t errlen)
{
    int rc = 0;
    struct ggml_context *tctx = NULL;
    struct gguf_context *in = NULL, *out = NULL;
    FILE *fi = NULL, *fo = NULL;
    char *buf = NULL;

    struct gguf_init_params gp = {.no_alloc = true, .ctx = &tctx};
    in = gguf_init_from_file(src, gp);
    if (!in) {
        set_err(err, errlen, "llama.cpp wrote %s but it does not read back as GGUF", src);
        rc = AIOS_EIO;
        goto fail;
    }
    out = gguf_init_empty();
    buf = malloc(COPY_BUF);
    if (!out || !buf) {
        set_err(err, errlen, "out of memory");
        rc = AIOS_ENOMEM;
        goto fail;
    }
    gguf_set_kv(out, in);
    gguf_set_val_str(out, "tokenizer.chat_template", tmpl);
    /* the saver writes no file type; every kept tensor is F32 here (the
     * quantizer overwrites this) */
    if (gguf_find_key(out, "general.file_type") < 0)
        gguf_set_val_u32(out, "general.file_type", LLAMA_FTYPE_ALL_F32);
    int64_t n_tensors = gguf_get_n_tensors(in);
    for (int64_t i = 0; i < n_tensors; i++) {
        const char *name = gguf_get_tensor_name(in, i);
        if (!keep(name)) continue;
        struct ggml_tensor *t = ggml_get_tensor(tctx, name);
        if (!t) {
            set_err(err, errlen, "%s: tensor %s has no metadata", src, name);
            rc = AIOS_EIO;
            goto fail;
        }
        gguf_add_tensor(out, t);
    }
    if (gguf_get_n_tensors(out) != n_expect) {
        set_err(err, errlen, "%s has %lld of the %lld expected qwen2 tensors", src,
                (long long)gguf_get_n_tensors(out), (long long)n_expect);
        rc = AIOS_EENGINE;
        goto fail;
    }

    fi = fopen(src, "rb");
    fo = fopen(dst, "wb");
    if (!fi || !fo) {
        set_err(err, errlen, "cannot open %s: %s", fi ? dst : src, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    if (!gguf_write_to_file_ptr(out, fo, true)) {
        set_err(err, errlen, "cannot write GGUF metadata to %s", dst);
        rc = AIOS_EIO;
        goto fail;
    }
    off_t data_out = ftello(fo);
    size_t align = gguf_get_alignment(out);
    size_t data_in = gguf_get_data_offset(in);
    int64_t n_out = gguf_get_n_tensors(out);
    for (int64_t j = 0; j < n_out; j++) {
        const char *name = gguf_get_tensor_name(out, j);
        int64_t i = gguf_find_tensor(in, name);
        size_t size = gguf_get_tensor_size(in, i);
        if (ftello(fo) != data_out + (off_t)gguf_get_tensor_offset(out, j) ||
            size != gguf_get_tensor_size(out, j)) {
            set_err(err, errlen, "%s: layout mismatch at tensor %s", dst, name);
            rc = AIOS_EIO;
            goto fail;
        }
        if (fseeko(fi, (off_t)(data_in + gguf_get_tensor_offset(in, i)), SEEK_SET) != 0) {
            set_err(err, errlen, "%s: cannot seek to tensor %s", src, name);
            rc = AIOS_EIO;
            goto fail;
        }
        for (size_t left = size; left > 0;) {
            size_t k = left < COPY_BUF ? left : COPY_BUF;
            if (fread(buf, 1, k, fi) != k) {
                set_err(err, errlen, "%s is truncated (tensor %s)", src, name);
                rc = AIOS_EIO;
                goto fail;
            }
            if (fwrite(buf, 1, k, fo) != k) {
                set_err(err, errlen, "cannot write %s: %s", dst, strerror(errno));
                rc = AIOS_EIO;
                goto fail;
            }
            left -= k;
        }
        if (write_zeros(fo, GGML_PAD(size, align) - size) != 0) {
            set_err(err, errlen, "cannot write %s: %s", dst, strerror(errno));
            rc = AIOS_EIO;
            goto fail;
        }
    }
    int cr = fclose(fo);
    fo = NULL;
    if (cr != 0) {
        set_err(err, errlen, "cannot write %s: %s", dst, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
fail:
    if (fo) fclose(fo);
    if (fi) fclose(fi);
    free(buf);
    if (out) gguf_free(out);
    if (in) gguf_free(in);
    if (tctx) ggml_free(tctx);
    return rc;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return AIOS_EIO;
    int rc = fsync(fd) == 0 ? 0 : AIOS_EIO;
    close(fd);
    return rc;
}

/* Loads what we wrote and checks shape and chat template. */
static int verify(const char *path, const struct shape_def *d, uint32_t n_vocab, char *err,
                  size_t errlen)
{
    int rc = 0;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = quiet_progress;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        set_err(err, errlen, "llama.cpp cannot load the model it just wrote (%s)", path);
        return AIOS_EENGINE;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    if (llama_model_n_layer(model) != (int32_t)d->n_layer ||
        llama_model_n_embd(model) != (int32_t)d->n_embd ||
        llama_vocab_n_tokens(vocab) != (int32_t)n_vocab) {
        set_err(err, errlen, "written model has n_layer %d n_embd %d n_vocab %d, expected %u %u %u",
                llama_model_n_layer(model), llama_model_n_embd(model), llama_vocab_n_tokens(vocab),
                d->n_layer, d->n_embd, n_vocab);
        rc = AIOS_EENGINE;
        goto fail;
    }
    if (d->pooling) {
        char pt[16] = "";
        if (llama_model_meta_val_str(model, "qwen2.pooling_type", pt, sizeof pt) < 0 ||
            (uint32_t)atoi(pt) != d->pooling) {
            set_err(err, errlen, "written model has qwen2.pooling_type '%s', expected %u", pt,
                    d->pooling);
            rc = AIOS_EENGINE;
            goto fail;
        }
    }
    const char *tmpl = llama_model_chat_template(model, NULL);
    if (!tmpl || !strstr(tmpl, "<|im_start|>")) {
        set_err(err, errlen, "written model has no ChatML chat template");
        rc = AIOS_EENGINE;
        goto fail;
    }
    struct llama_chat_message msgs[] = {{"system", "You are a test."}, {"user", "Hello"}};
    char out[512];
    int32_t n = llama_chat_apply_template(tmpl, msgs, 2, true, out, (int32_t)sizeof out);
    if (n <= 0 || n >= (int32_t)sizeof out) {
        set_err(err, errlen, "llama_chat_apply_template failed on the written template (%d)", n);
        rc = AIOS_EENGINE;
        goto fail;
    }
    out[n] = 0;
    if (!strstr(out, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")) {
        set_err(err, errlen, "chat template renders unexpected text");
        rc = AIOS_EENGINE;
        goto fail;
    }
fail:
    llama_model_free(model);
    return rc;
}

/* ---- the pipeline ---------------------------------------------------- */

int testmodel_create(const char *out_path, enum testmodel_shape shape, uint64_t seed,
                     int n_threads, char *err, size_t errlen)
{
    int rc = 0;
    struct gguf_context *meta = NULL;
    struct llama_model *model = NULL;
    struct fill_ctx fc = {0};
    char *raw = NULL, *tmp = NULL, *q8 = NULL;
    ggml_log_callback prev_log = NULL;
    void *prev_log_ud = NULL;
    uint32_t n_vocab = 0;
    int64_t t0 = util_now_us(), t = t0; /* step times for AIOS_LOG=debug */

    if (err && errlen) err[0] = 0;
    if (!out_path || !*out_path || (unsigned)shape >= N_SHAPES) {
        set_err(err, errlen, "bad arguments to testmodel_create");
        return AIOS_EINVAL;
    }
    const struct shape_def *d = &g_shapes[shape];
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 64) n_threads = 64;

    pthread_once(&g_backend_once, backend_init_once);
    llama_log_get(&prev_log, &prev_log_ud);
    llama_log_set(quiet_log, NULL);

    rc = build_meta(d, &meta, &n_vocab, err, errlen);
    if (rc) goto fail;

    fc.seed = seed;
    fc.n_threads = n_threads;
    fc.stage = malloc(FILL_STAGE_BLOCKS * FILL_BLOCK * sizeof(float));
    if (!fc.stage) {
        set_err(err, errlen, "out of memory");
        rc = AIOS_ENOMEM;
        goto fail;
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = quiet_progress;
    model = llama_model_init_from_user(meta, fill_tensor, &fc, mp);
    if (!model) {
        set_err(err, errlen, "llama_model_init_from_user failed for shape %s", d->name);
        rc = AIOS_EENGINE;
        goto fail;
    }
    if (fc.err) {
        set_err(err, errlen, "%s", fc.errmsg);
        rc = fc.err;
        goto fail;
    }

    LOG_DEBUG("model", "%s: metadata + init_from_user %.0f ms", d->name,
              (util_now_us() - t) / 1e3);
    t = util_now_us();

    rc = make_temp(out_path, "raw", &raw, err, errlen);
    if (rc) goto fail;
    /* returns nothing; a failed write shows up when gguf_rewrite reads it */
    llama_model_save_to_file(model, raw);
    LOG_DEBUG("model", "%s: save_to_file %.0f ms", d->name, (util_now_us() - t) / 1e3);
    t = util_now_us();
    llama_model_free(model);
    model = NULL;
    free(fc.stage);
    fc.stage = NULL;

    rc = make_temp(out_path, "tmp", &tmp, err, errlen);
    if (rc) goto fail;
    rc = gguf_rewrite(raw, tmp, CHATML_TEMPLATE, qwen2_keeps,
                      2 + (int64_t)QWEN2_TENSORS_PER_LAYER * d->n_layer, err, errlen);
    if (rc) goto fail;
    drop_temp(&raw);
    LOG_DEBUG("model", "%s: rewrite %.0f ms", d->name, (util_now_us() - t) / 1e3);
    t = util_now_us();

    if (d->quantize_q8_0) {
        rc = make_temp(out_path, "q8", &q8, err, errlen);
        if (rc) goto fail;
        struct llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.nthread = n_threads;
        qp.ftype = LLAMA_FTYPE_MOSTLY_Q8_0;
        uint32_t qr = llama_model_quantize(tmp, q8, &qp);
        if (qr != 0) {
            set_err(err, errlen, "llama_model_quantize to Q8_0 failed (%u)", qr);
            rc = AIOS_EENGINE;
            goto fail;
        }
        drop_temp(&tmp);
        tmp = q8;
        q8 = NULL;
        LOG_DEBUG("model", "%s: quantize %.0f ms", d->name, (util_now_us() - t) / 1e3);
        t = util_now_us();
    }

    rc = verify(tmp, d, n_vocab, err, errlen);
    if (rc) goto fail;
    if (chmod(tmp, 0644) != 0 || fsync_path(tmp) != 0) {
        set_err(err, errlen, "cannot finish %s: %s", tmp, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    if (rename(tmp, out_path) != 0) {
        set_err(err, errlen, "cannot rename to %s: %s", out_path, strerror(errno));
        rc = AIOS_EIO;
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    LOG_DEBUG("model", "%s: verify + rename %.0f ms, total %.0f ms", d->name,
              (util_now_us() - t) / 1e3, (util_now_us() - t0) / 1e3);
fail:
    drop_temp(&q8);
    drop_temp(&tmp);
    drop_temp(&raw);
    if (model) llama_model_free(model);
    free(fc.stage);
    if (meta) gguf_free(meta);
    llama_log_set(prev_log, prev_log_ud);
    return rc;
}

int testmodel_cached(enum testmodel_shape shape, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if ((unsigned)shape >= N_SHAPES) return AIOS_EINVAL;
    char *cache = util_cache_dir();
    if (!cache) return AIOS_ENOMEM;
    char dir[4096], path[4300];
    snprintf(dir, sizeof dir, "%s/models", cache);
    free(cache);
    if (util_mkdirs(dir)) {
        set_err(err, errlen, "cannot create the model cache %s", dir);
        return AIOS_EIO;
    }
    snprintf(path, sizeof path, "%s/aios-test-%s-seed0.gguf", dir, g_shapes[shape].name);
    if (access(path, R_OK) != 0) {
        int rc = testmodel_create(path, shape, 0, 0, err, errlen);
        if (rc) return rc;
    }
    *out = strdup(path);
    return *out ? 0 : AIOS_ENOMEM;
}
