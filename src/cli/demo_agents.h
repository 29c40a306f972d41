/* The agents part of `aios demo` (demo_agents.c). */
#ifndef AIOS_CLI_DEMO_AGENTS_H
#define AIOS_CLI_DEMO_AGENTS_H

/* Run the example agents concurrently on the kernel at base (its agents
 * directory is agents_dir), show progress live, print results and
 * per-agent accounting. *n_failed counts agents that failed (exit other
 * than 0 or 3) or did not finish within timeout_s. Returns 0. */
int demo_run_agents(const char *base, const char *agents_dir, int timeout_s, int *n_failed);

#endif
