/* Preloaded into the kernel by bench/callgrind_load.sh, read by valgrind
 * only: it replaces ggml_cpu_init (in the aios executable, valgrind's
 * soname NONE) with an empty function under valgrind.
 *
 * Why: GET /status lists ggml's devices, and the first listing runs
 * ggml_cpu_init, whose fp16 tables the llama.cpp build vectorises with
 * AVX-512, which valgrind cannot decode (SIGILL). The tables are used by
 * model computation only, which a callgrind run never does (its model is
 * remote and never called), and ggml_cpu_init runs once, so the counts per
 * request are those of the real kernel. Outside valgrind the symbol below is
 * an unused function. */
#include <valgrind/valgrind.h>

void I_WRAP_SONAME_FNNAME_ZU(NONE, ggml_cpu_init)(void);
void I_WRAP_SONAME_FNNAME_ZU(NONE, ggml_cpu_init)(void) {}
