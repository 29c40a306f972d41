/* Unit tests for src/kernel/config.c: defaults, the AIOS-layout example,
 * every validation error (code, offending key, line number), YAML syntax
 * errors, PyYAML-style scalar typing, model lookup, file loading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernel/config.h"
#include "util/err.h"

static const char k_example[] =
    "api_keys: {openai: \"\", gemini: \"\"}\n"
    "llms:\n"
    "  models:\n"
    "    - name: \"qwen2.5:7b\"\n"
    "      backend: \"ollama\"\n"
    "      hostname: \"http://localhost:11434\"\n"
    "    - name: \"tiny\"\n"
    "      backend: \"llamacpp\"       # ours: embedded engine\n"
    "      path: \"/models/x.gguf\"\n"
    "      n_ctx: 4096\n"
    "      n_threads: 2\n"
    "      price: {prompt_per_1m: 0.5, completion_per_1m: 2}\n"
    "  log_mode: \"console\"\n"
    "memory: {log_mode: console, quota_bytes: 1048576}\n"
    "storage: {root_dir: \"root\", use_vector_db: false}\n"
    "scheduler: {log_mode: console, policy: fifo}\n"
    "agent_factory: {max_workers: 64}\n"
    "server: {host: \"localhost\", port: 8000, max_body_bytes: 8388608}\n";

static int load(struct aios_config *cfg, const char *yaml, char *err, size_t errlen)
{
    return config_load_string(cfg, yaml, strlen(yaml), err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[256];

    config_init_defaults(&cfg);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.port, 8000);
    assert_string_equal(cfg.data_dir, "./aios-data");
    assert_int_equal(cfg.max_body_bytes, 8u << 20);
    assert_int_equal(cfg.max_connections, 4096);
    assert_int_equal(cfg.max_connections_per_ip, 1024);
    assert_int_equal(cfg.request_timeout_s, 10);
    assert_int_equal(cfg.idle_timeout_s, 60);
    assert_string_equal(cfg.sched_policy, "fair");
    assert_string_equal(cfg.storage_root, "root");
    assert_int_equal(cfg.n_models, 0);
    assert_non_null(cfg.raw);
    assert_true(json_is_object(cfg.raw));
    config_free(&cfg);
    assert_null(cfg.host);
    config_free(&cfg); /* idempotent */

    /* empty text, comments only, and a bare document all give defaults */
    const char *empties[] = {"", "# nothing here\n", "---\n", "---\n...\n", "~\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        assert_int_equal(load(&cfg, empties[i], err, sizeof(err)), 0);
        assert_string_equal(cfg.host, "127.0.0.1");
        assert_int_equal(cfg.port, 8000);
        assert_true(json_is_object(cfg.raw));
        assert_int_equal(json_object_size(cfg.raw), 0);
        config_free(&cfg);
    }
    assert_int_equal(config_load_string(&cfg, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 8000);
    config_free(&cfg);
}

static void test_full_example(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[256];

    assert_int_equal(load(&cfg, k_example, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.host, "localhost");
    assert_int_equal(cfg.port, 8000);
    assert_int_equal(cfg.max_body_bytes, 8388608);
    assert_string_equal(cfg.sched_policy, "fifo");
    assert_string_equal(cfg.storage_root, "root");
    assert_string_equal(cfg.data_dir, "./aios-data");
    assert_int_equal(cfg.n_models, 2);

    assert_string_equal(cfg.models[0].name, "qwen2.5:7b");
    assert_string_equal(cfg.models[0].backend, "ollama");
    assert_string_equal(cfg.models[0].hostname, "http://localhost:11434");
    assert_null(cfg.models[0].path);
    assert_int_equal(cfg.models[0].n_ctx, 4096);
    assert_int_equal(cfg.models[0].n_threads, 0);

    assert_string_equal(cfg.models[1].name, "tiny");
    assert_string_equal(cfg.models[1].backend, "llamacpp");
    assert_string_equal(cfg.models[1].path, "/models/x.gguf");
    assert_null(cfg.models[1].hostname);
    assert_int_equal(cfg.models[1].n_ctx, 4096);
    assert_int_equal(cfg.models[1].n_threads, 2);
    assert_true(cfg.models[1].price_prompt == 0.5e-6 && cfg.models[1].price_completion == 2e-6);
    assert_true(cfg.models[0].price_prompt == 0 && cfg.models[0].price_completion == 0);

    /* unknown keys stay in raw */
    json_t *v = config_lookup(&cfg, "agent_factory.max_workers");
    assert_true(json_is_integer(v));
    assert_int_equal(json_integer_value(v), 64);
    v = config_lookup(&cfg, "memory.quota_bytes");
    assert_int_equal(json_integer_value(v), 1048576);
    assert_true(json_is_false(config_lookup(&cfg, "storage.use_vector_db")));
    assert_string_equal(json_string_value(config_lookup(&cfg, "api_keys.openai")), "");
    assert_string_equal(json_string_value(config_lookup(&cfg, "llms.log_mode")), "console");
    assert_null(config_lookup(&cfg, "agent_factory.nope"));
    assert_null(config_lookup(&cfg, "agent_factory.max_workers.deeper"));
    config_free(&cfg);
}

static void test_overrides_and_normalising(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[256];
    const char *y = "data_dir: /var/lib/aios\n"
                    "storage: {root_dir: files}\n"
                    "scheduler: {policy: RR}\n"
                    "server: {host: 0.0.0.0, port: 9001, max_body_bytes: 1024}\n"
                    "llms:\n"
                    "  models:\n"
                    "    - {name: a, backend: OpenAI, hostname: \"\"}\n"
                    "    - {name: b, backend: llama.cpp, path: m.gguf, n_ctx: 16}\n"
                    "    - {name: c, backend: vllm, hostname: \"http://h:1\", extra: [1, 2]}\n";
    assert_int_equal(load(&cfg, y, err, sizeof(err)), 0);
    assert_string_equal(cfg.data_dir, "/var/lib/aios");
    assert_string_equal(cfg.storage_root, "files");
    assert_string_equal(cfg.sched_policy, "rr");
    assert_string_equal(cfg.host, "0.0.0.0");
    assert_int_equal(cfg.port, 9001);
    assert_int_equal(cfg.max_body_bytes, 1024);
    assert_int_equal(cfg.max_connections_per_ip, 1024);
    assert_int_equal(cfg.n_models, 3);
    assert_string_equal(cfg.models[0].backend, "openai");
    assert_null(cfg.models[0].hostname); /* "" means none */
    assert_string_equal(cfg.models[1].backend, "llamacpp");
    assert_int_equal(cfg.models[1].n_ctx, 16);
    assert_string_equal(cfg.models[2].hostname, "http://h:1");

    char *p = config_resolve_path(&cfg, cfg.storage_root);
    assert_string_equal(p, "/var/lib/aios/files");
    free(p);
    p = config_resolve_path(&cfg, "/abs/x");
    assert_string_equal(p, "/abs/x");
    free(p);
    config_free(&cfg);

    /* null sections and null models are treated as absent */
    assert_int_equal(load(&cfg, "server:\nllms:\n  models:\nscheduler: ~\n", err, sizeof(err)),
                     0);
    assert_int_equal(cfg.port, 8000);
    assert_int_equal(cfg.n_models, 0);
    assert_int_equal(cfg.idle_timeout_s, 60);
    p = config_resolve_path(&cfg, cfg.storage_root);
    assert_string_equal(p, "./aios-data/root");
    free(p);
    config_free(&cfg);

    /* the connection limits and timeouts; a lower max_connections lowers
     * the per-address default with it */
    assert_int_equal(load(&cfg, "server: {max_connections: 100, request_timeout_s: 2, "
                                "idle_timeout_s: 30}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.max_connections, 100);
    assert_int_equal(cfg.max_connections_per_ip, 100);
    assert_int_equal(cfg.request_timeout_s, 2);
    assert_int_equal(cfg.idle_timeout_s, 30);
    config_free(&cfg);
    assert_int_equal(load(&cfg, "server: {max_connections_per_ip: 8}\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.max_connections, 4096);
    assert_int_equal(cfg.max_connections_per_ip, 8);
    config_free(&cfg);
}

struct bad_case {
    const char *yaml;
    const char *want1; /* substrings the message must contain */
    const char *want2;
};

static const struct bad_case k_bad[] = {
    {"server: {port: 0}\n", "server.port", "line 1"},
    {"server:\n  port: 70000\n", "server.port", "line 2 col 9"},
    {"server:\n  port: -1\n", "server.port", "1..65535"},
    {"server: {port: \"8000\"}\n", "server.port", "string \"8000\""},
    {"server: {port: 80.5}\n", "server.port", "float"},
    {"server: {port: yes}\n", "server.port", "boolean"},
    {"server: {host: 5}\n", "server.host", "string"},
    {"server: {host: \"\"}\n", "server.host", "empty"},
    {"server: 5\n", "server", "mapping"},
    {"server: {max_body_bytes: 100}\n", "server.max_body_bytes", "1024"},
    {"server: {max_body_bytes: big}\n", "server.max_body_bytes", "string"},
    {"server: {max_connections: 8}\n", "server.max_connections", "16"},
    {"server: {max_connections: 64, max_connections_per_ip: 65}\n",
     "server.max_connections_per_ip", "1..64"},
    {"server: {max_connections_per_ip: 0}\n", "server.max_connections_per_ip", "1..4096"},
    {"server: {request_timeout_s: 0}\n", "server.request_timeout_s", "1..3600"},
    {"server: {idle_timeout_s: soon}\n", "server.idle_timeout_s", "string"},
    {"scheduler: {policy: lifo}\n", "scheduler.policy", "lifo"},
    {"scheduler: {policy: 3}\n", "scheduler.policy", "string"},
    {"storage: [a]\n", "storage", "list"},
    {"storage: {root_dir: 7}\n", "storage.root_dir", "string"},
    {"data_dir: [x]\n", "data_dir", "string"},
    {"llms: {models: {a: 1}}\n", "llms.models", "list"},
    {"llms: {models: 3}\n", "llms.models", "list"},
    {"llms: {models: [3]}\n", "llms.models[0]", "mapping"},
    {"llms:\n  models:\n    - backend: openai\n", "llms.models[0].name", "line 3"},
    {"llms:\n  models:\n    - name: gpt\n", "llms.models[0].backend", "line 3"},
    {"llms:\n  models:\n    - {name: 2.5, backend: openai}\n", "llms.models[0].name", "float"},
    {"llms:\n  models:\n    - {name: x, backend: openai}\n    - {name: y, backend: llamacpp}\n",
     "llms.models[1].path", "line 4"},
    {"llms:\n  models:\n    - {name: y, backend: llamacpp, path: \"\"}\n",
     "llms.models[0].path", "GGUF"},
    {"llms:\n  models:\n    - {name: x, backend: openai}\n    - {name: x, backend: ollama}\n",
     "llms.models[1].name", "duplicate"},
    {"llms:\n  models:\n    - {name: x, backend: openai, n_ctx: 8}\n", "llms.models[0].n_ctx",
     "8"},
    {"llms:\n  models:\n    - {name: x, backend: openai, n_ctx: \"4096\"}\n",
     "llms.models[0].n_ctx", "string"},
    {"llms:\n  models:\n    - {name: x, backend: openai, n_threads: -1}\n",
     "llms.models[0].n_threads", "-1"},
    {"llms:\n  models:\n    - {name: x, backend: openai, price: {prompt_per_1m: -1}}\n",
     "llms.models[0].price.prompt_per_1m", "price"},
    {"llms:\n  models:\n    - {name: x, backend: openai, price: 3}\n", "llms.models[0].price",
     "mapping"},
    {"llms: [1]\n", "llms", "mapping"},
    {"- a\n- b\n", "top level", "list"},
    {"just a string\n", "top level", "string"},
};

static void test_validation_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        struct aios_config cfg;
        char err[512] = "";
        int rc = load(&cfg, k_bad[i].yaml, err, sizeof(err));
        if (rc != AIOS_ECONFIG || !strstr(err, k_bad[i].want1) || !strstr(err, k_bad[i].want2))
            fail_msg("case %zu (%s): rc %d, message \"%s\"", i, k_bad[i].yaml, rc, err);
        /* a failed load leaves nothing half-filled */
        assert_null(cfg.host);
        assert_null(cfg.raw);
        assert_null(cfg.models);
        assert_int_equal(cfg.n_models, 0);
        config_free(&cfg);
    }
}

/* state.backend / state.url, and AIOS_STATE_URL over the file */
static void test_state_backend(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[512] = "";
    unsetenv("AIOS_STATE_URL");
    assert_int_equal(load(&cfg, "data_dir: x\n", err, sizeof err), 0);
    assert_string_equal(cfg.state_backend, "sqlite");
    assert_null(cfg.state_url);
    assert_false(config_state_pg(&cfg));
    config_free(&cfg);
    assert_int_equal(load(&cfg, "state: {backend: PostgreSQL, url: \"postgresql://u@h/db\"}\n",
                          err, sizeof err), 0);
    assert_true(config_state_pg(&cfg));
    assert_string_equal(cfg.state_url, "postgresql://u@h/db");
    config_free(&cfg);
    assert_int_equal(load(&cfg, "state: {backend: mysql}\n", err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "state.backend"));
    assert_int_equal(load(&cfg, "state: {backend: postgres}\n", err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "state.url"));
    assert_int_equal(load(&cfg, "state: {backend: postgres, url: 5}\n", err, sizeof err),
                     AIOS_ECONFIG);
    setenv("AIOS_STATE_URL", "host=/tmp dbname=aios", 1);
    assert_int_equal(load(&cfg, "state: {backend: sqlite}\n", err, sizeof err), 0);
    assert_true(config_state_pg(&cfg));
    assert_string_equal(cfg.state_url, "host=/tmp dbname=aios");
    config_free(&cfg);
    unsetenv("AIOS_STATE_URL");
}

/* cluster: (KV affinity): this kernel, its peers, AIOS_CLUSTER_NAME */
static void test_cluster(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[512] = "";
    unsetenv("AIOS_STATE_URL");
    unsetenv("AIOS_CLUSTER_NAME");
    static const char pg[] = "state: {backend: postgres, url: \"postgresql://u@h/db\"}\n";
    char y[1024];
    assert_int_equal(load(&cfg, pg, err, sizeof err), 0);
    assert_null(cfg.cluster.name);
    config_free(&cfg);
    /* one list for every kernel: its own entry is left out (and gives its url) */
    snprintf(y, sizeof y, "%scluster:\n  name: k2\n  max_outstanding: 4\n  peers:\n"
             "    - {name: k1, url: \"http://10.0.0.1:8000\"}\n"
             "    - {name: k2, url: \"http://10.0.0.2:8000\"}\n"
             "    - {name: k3, url: \"https://k3.example\"}\n", pg);
    assert_int_equal(load(&cfg, y, err, sizeof err), 0);
    assert_string_equal(cfg.cluster.name, "k2");
    assert_string_equal(cfg.cluster.url, "http://10.0.0.2:8000");
    assert_int_equal(cfg.cluster.n_peers, 2);
    assert_string_equal(cfg.cluster.peers[0].name, "k1");
    assert_string_equal(cfg.cluster.peers[1].url, "https://k3.example");
    assert_int_equal(cfg.cluster.max_outstanding, 4);
    assert_int_equal(cfg.cluster.peer_down_s, CONFIG_DEFAULT_CLUSTER_PEER_DOWN_S);
    config_free(&cfg);
    /* the environment names the kernel */
    setenv("AIOS_CLUSTER_NAME", "k1", 1);
    assert_int_equal(load(&cfg, y, err, sizeof err), 0);
    assert_string_equal(cfg.cluster.name, "k1");
    assert_int_equal(cfg.cluster.n_peers, 2);
    assert_string_equal(cfg.cluster.peers[0].name, "k2");
    config_free(&cfg);
    setenv("AIOS_CLUSTER_NAME", "bad name", 1);
    assert_int_equal(load(&cfg, y, err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "AIOS_CLUSTER_NAME"));
    unsetenv("AIOS_CLUSTER_NAME");
    /* mistakes */
    static const struct { const char *yaml, *needle; } bad[] = {
        {"cluster: {peers: []}\n", "cluster.name"},
        {"cluster: {name: \"a/b\"}\n", "cluster.name"},
        {"cluster: {name: k1, url: \"ftp://x\"}\n", "cluster.url"},
        {"cluster: {name: k1, peers: {k2: x}}\n", "cluster.peers"},
        {"cluster: {name: k1, peers: [k2]}\n", "cluster.peers[0]"},
        {"cluster: {name: k1, peers: [{name: k2}]}\n", "cluster.peers[0].url"},
        {"cluster: {name: k1, peers: [{name: k2, url: \"10.0.0.2:80\"}]}\n", "cluster.peers[0].url"},
        {"cluster: {name: k1, peers: [{name: k2, url: \"http://a\"}, {name: k2, url: \"http://b\"}]}\n",
         "named twice"},
        {"cluster: {name: k1, max_outstanding: 0}\n", "cluster.max_outstanding"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(y, sizeof y, "%s%s", pg, bad[i].yaml);
        assert_int_equal(load(&cfg, y, err, sizeof err), AIOS_ECONFIG);
        if (!strstr(err, bad[i].needle)) fail_msg("%s: %s", bad[i].yaml, err);
    }
    /* a cluster shares its state: not with SQLite */
    assert_int_equal(load(&cfg, "cluster: {name: k1}\n", err, sizeof err), AIOS_ECONFIG);
    assert_non_null(strstr(err, "postgres"));
}

static void test_syntax_errors(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[512];

    assert_int_equal(load(&cfg, "a: 1\nb: 2\n  c: 3\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "line 3"));
    assert_null(cfg.raw);

    assert_int_equal(load(&cfg, "server:\n  port: 8000\n  host: [a, b\n", err, sizeof(err)),
                     AIOS_ECONFIG);
    assert_non_null(strstr(err, "line "));

    assert_int_equal(load(&cfg, "a: \"unterminated\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "line "));

    /* tabs for indentation */
    assert_int_equal(load(&cfg, "server:\n\tport: 1\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "line 2"));

    /* invalid UTF-8 is a reader error; still a line number */
    assert_int_equal(load(&cfg, "a: 1\nb: \xff\xfe\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "line 2"));

    /* duplicate keys, anchors, aliases, multiple documents, unknown tags */
    assert_int_equal(load(&cfg, "server: {port: 1}\nserver: {port: 2}\n", err, sizeof(err)),
                     AIOS_ECONFIG);
    assert_non_null(strstr(err, "duplicate key 'server'"));
    assert_non_null(strstr(err, "line 2"));

    assert_int_equal(load(&cfg, "a: &x {p: 1}\nb: *x\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "anchors"));
    assert_non_null(strstr(err, "line 1"));

    assert_int_equal(load(&cfg, "a: 1\n---\nb: 2\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "more than one YAML document"));
    assert_non_null(strstr(err, "line 2"));

    assert_int_equal(load(&cfg, "a: !python/object x\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "unsupported tag"));

    assert_int_equal(load(&cfg, "? [a, b]\n: 1\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "complex mapping keys"));

    /* nesting is bounded, not a stack overflow */
    size_t depth = 5000;
    char *deep = malloc(depth * 2 + 1);
    assert_non_null(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[depth * 2] = '\0';
    json_t *j = NULL;
    int rc = config_yaml_to_json(deep, depth * 2, &j, err, sizeof(err));
    assert_int_equal(rc, AIOS_ECONFIG);
    assert_null(j);
    free(deep);

    /* err may be NULL */
    assert_int_equal(load(&cfg, "a: [", NULL, 0), AIOS_ECONFIG);
}

static json_t *y2j(const char *yaml)
{
    json_t *j = NULL;
    char err[256];
    int rc = config_yaml_to_json(yaml, strlen(yaml), &j, err, sizeof(err));
    if (rc) fail_msg("%s: %s", yaml, err);
    return j;
}

static void test_scalar_typing(void **state)
{
    (void)state;
    json_t *j = y2j("i: 8000\n"
                    "qs: \"8000\"\n"
                    "ss: '8000'\n"
                    "neg: -12\n"
                    "pos: +12\n"
                    "und: 1_000\n"
                    "oct: 0755\n"
                    "hex: 0x1F\n"
                    "bin: 0b101\n"
                    "zero: 0\n"
                    "f: 1.5\n"
                    "f2: -.5\n"
                    "f3: 1e3\n"
                    "f4: 6.02e+23\n"
                    "qf: \"1.5\"\n"
                    "b1: yes\n"
                    "b2: True\n"
                    "b3: on\n"
                    "b4: NO\n"
                    "b5: false\n"
                    "b6: Off\n"
                    "qb: \"yes\"\n"
                    "y: y\n"
                    "n1: null\n"
                    "n2: ~\n"
                    "n3:\n"
                    "qn: 'null'\n"
                    "inf: .inf\n"
                    "huge: 99999999999999999999\n"
                    "ver: 1.2.3\n"
                    "s08: 08\n"
                    "tagged: !!str 123\n"
                    "tint: !!int \"42\"\n"
                    "tfl: !!float 3\n"
                    "lit: |\n  two\n  lines\n"
                    "esc: \"a\\tb\\u00e9\"\n"
                    "123: numeric key\n"
                    "true: bool key\n"
                    "list: [1, \"1\", x, ~]\n");
    assert_true(json_is_object(j));
    assert_int_equal(json_integer_value(json_object_get(j, "i")), 8000);
    assert_true(json_is_integer(json_object_get(j, "i")));
    assert_string_equal(json_string_value(json_object_get(j, "qs")), "8000");
    assert_string_equal(json_string_value(json_object_get(j, "ss")), "8000");
    assert_int_equal(json_integer_value(json_object_get(j, "neg")), -12);
    assert_int_equal(json_integer_value(json_object_get(j, "pos")), 12);
    assert_int_equal(json_integer_value(json_object_get(j, "und")), 1000);
    assert_int_equal(json_integer_value(json_object_get(j, "oct")), 0755);
    assert_int_equal(json_integer_value(json_object_get(j, "hex")), 31);
    assert_int_equal(json_integer_value(json_object_get(j, "bin")), 5);
    assert_true(json_is_integer(json_object_get(j, "zero")));
    assert_true(json_is_real(json_object_get(j, "f")));
    assert_true(json_real_value(json_object_get(j, "f")) == 1.5);
    assert_true(json_real_value(json_object_get(j, "f2")) == -0.5);
    assert_true(json_real_value(json_object_get(j, "f3")) == 1000.0);
    assert_true(json_is_real(json_object_get(j, "f4")));
    assert_string_equal(json_string_value(json_object_get(j, "qf")), "1.5");
    assert_true(json_is_true(json_object_get(j, "b1")));
    assert_true(json_is_true(json_object_get(j, "b2")));
    assert_true(json_is_true(json_object_get(j, "b3")));
    assert_true(json_is_false(json_object_get(j, "b4")));
    assert_true(json_is_false(json_object_get(j, "b5")));
    assert_true(json_is_false(json_object_get(j, "b6")));
    assert_string_equal(json_string_value(json_object_get(j, "qb")), "yes");
    assert_string_equal(json_string_value(json_object_get(j, "y")), "y"); /* as PyYAML */
    assert_true(json_is_null(json_object_get(j, "n1")));
    assert_true(json_is_null(json_object_get(j, "n2")));
    assert_true(json_is_null(json_object_get(j, "n3")));
    assert_string_equal(json_string_value(json_object_get(j, "qn")), "null");
    assert_string_equal(json_string_value(json_object_get(j, "inf")), ".inf");
    assert_string_equal(json_string_value(json_object_get(j, "huge")), "99999999999999999999");
    assert_string_equal(json_string_value(json_object_get(j, "ver")), "1.2.3");
    assert_string_equal(json_string_value(json_object_get(j, "s08")), "08");
    assert_string_equal(json_string_value(json_object_get(j, "tagged")), "123");
    assert_int_equal(json_integer_value(json_object_get(j, "tint")), 42);
    assert_true(json_real_value(json_object_get(j, "tfl")) == 3.0);
    assert_string_equal(json_string_value(json_object_get(j, "lit")), "two\nlines\n");
    assert_string_equal(json_string_value(json_object_get(j, "esc")), "a\tb\xc3\xa9");
    assert_string_equal(json_string_value(json_object_get(j, "123")), "numeric key");
    assert_string_equal(json_string_value(json_object_get(j, "true")), "bool key");
    json_t *l = json_object_get(j, "list");
    assert_int_equal(json_array_size(l), 4);
    assert_true(json_is_integer(json_array_get(l, 0)));
    assert_true(json_is_string(json_array_get(l, 1)));
    assert_true(json_is_string(json_array_get(l, 2)));
    assert_true(json_is_null(json_array_get(l, 3)));
    json_decref(j);

    /* empty stream -> null; scalar document -> that scalar */
    j = y2j("");
    assert_true(json_is_null(j));
    json_decref(j);
    j = y2j("42\n");
    assert_int_equal(json_integer_value(j), 42);
    json_decref(j);

    /* a tag that does not fit the text is an error */
    char err[256];
    j = NULL;
    assert_int_equal(config_yaml_to_json("a: !!int abc\n", 13, &j, err, sizeof(err)),
                     AIOS_ECONFIG);
    assert_null(j);
    assert_non_null(strstr(err, "line 1"));

    /* the typing decides validation: quoted port is an error, plain is not */
    struct aios_config cfg;
    assert_int_equal(load(&cfg, "server: {port: \"8000\"}\n", err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, "server.port"));
    assert_int_equal(load(&cfg, "server: {port: 8000}\nstorage: {use_vector_db: yes}\n", err,
                          sizeof(err)),
                     0);
    assert_int_equal(cfg.port, 8000);
    assert_true(json_is_true(config_lookup(&cfg, "storage.use_vector_db")));
    config_free(&cfg);
}

static void test_find_model(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[256];

    assert_int_equal(load(&cfg, k_example, err, sizeof(err)), 0);
    const struct cfg_model *m = config_find_model(&cfg, "tiny");
    assert_non_null(m);
    assert_string_equal(m->path, "/models/x.gguf");
    m = config_find_model(&cfg, "qwen2.5:7b");
    assert_non_null(m);
    assert_string_equal(m->backend, "ollama");
    assert_null(config_find_model(&cfg, "Tiny"));
    assert_null(config_find_model(&cfg, "nope"));
    assert_null(config_find_model(&cfg, NULL));
    assert_null(config_find_model(NULL, "tiny"));
    config_free(&cfg);
}

static void test_load_file(void **state)
{
    (void)state;
    struct aios_config cfg;
    char err[512];
    char path[] = "/tmp/aios-test-config-XXXXXX";

    int rc = config_load_file(&cfg, "/nonexistent/dir/aios.yaml", err, sizeof(err));
    assert_int_equal(rc, AIOS_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/dir/aios.yaml"));
    assert_non_null(strstr(err, "No such file"));
    assert_null(cfg.raw);

    rc = config_load_file(&cfg, "/tmp", err, sizeof(err));
    assert_int_equal(rc, AIOS_EIO);
    assert_non_null(strstr(err, "/tmp"));

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, k_example, strlen(k_example)), (ssize_t)strlen(k_example));
    close(fd);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), 0);
    assert_int_equal(cfg.n_models, 2);
    assert_string_equal(cfg.host, "localhost");
    config_free(&cfg);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("server:\n  port: 8000\n  port: 9000\n", f);
    fclose(f);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), AIOS_ECONFIG);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line 3"));
    assert_non_null(strstr(err, "port"));

    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 8000);
    config_free(&cfg);
    unlink(path);
}

/* Garbage must never crash the parser (ASan watches this). */
static void test_garbage(void **state)
{
    (void)state;
    static const char alphabet[] = "ab:-[]{},\"'#&*!|>?%@`\n \t0123.~\\";
    uint32_t seed = 12345;
    char buf[96];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 0, len = 1 + iter % (sizeof(buf) - 1);
        for (; n < len; n++) {
            seed = seed * 1103515245u + 12345u;
            buf[n] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        struct aios_config cfg;
        char err[256];
        int rc = config_load_string(&cfg, buf, n, err, sizeof(err));
        assert_true(rc == 0 || rc == AIOS_ECONFIG);
        config_free(&cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_overrides_and_normalising),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_scalar_typing),
        cmocka_unit_test(test_find_model),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_state_backend),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
