/* Shared by the fuzz targets (tests/fuzz/fuzz_*.c) and the replay driver. */
#ifndef AIOS_TESTS_FUZZ_H
#define AIOS_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
