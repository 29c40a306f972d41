/* Subcommands of the aios command line. Each takes the argv that starts at
 * its own name (argv[0] is "model", "serve", ...) and returns the process
 * exit code: 0 ok, 1 failure, 2 bad usage. */
#ifndef AIOS_CLI_CLI_H
#define AIOS_CLI_CLI_H

/* aios model create-test OUT [--shape tiny|qwen2.5-0.5b] [--seed N] [--threads N]
 * aios model info FILE.gguf */
int cli_model_main(int argc, char **argv);

/* aios demo: start a kernel on the built-in test model, make a few calls
 * over HTTP (one streamed), print what happened, stop it. */
int cli_demo_main(int argc, char **argv);

/* aios bench agents [...]: the multi-agent workload (bench.c) */
int cli_bench_main(int argc, char **argv);
/* agents_cli.c: aios run PATH_OR_NAME --task T [--url U] | ps | kill ID | logs ID [-f] */
/* forward.c: pid 1 of a launched agent's sandbox (agents/agent.c) */
int cli_forward_main(int argc, char **argv);
int cli_run_main(int argc, char **argv);
int cli_ps_main(int argc, char **argv);
/* aios top (top.c) */
int cli_top_main(int argc, char **argv);
int cli_kill_main(int argc, char **argv);
int cli_logs_main(int argc, char **argv);
/* access manager (access_cli.c): audit, approvals, approve, deny,
 * register-agent; cli_load_token sets the operator's token for hc_* */
int cli_audit_main(int argc, char **argv);
int cli_approvals_main(int argc, char **argv);
int cli_budgets_main(int argc, char **argv);
int cli_approve_main(int argc, char **argv);
int cli_deny_main(int argc, char **argv);
int cli_register_agent_main(int argc, char **argv);
void cli_load_token(void);
/* hub_cli.c: aios hub add FOLDER [--tool|--agent] | aios hub list */
int cli_hub_main(int argc, char **argv);

#endif
