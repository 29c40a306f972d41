/* SHA-256 for content-addressed version blobs. See sha256.c. */
#ifndef AIOS_STORAGE_SHA256_H
#define AIOS_STORAGE_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sto_sha256 {
    uint32_t h[8];
    uint64_t n_bytes;
    uint8_t buf[64];
    size_t n_buf;
};

void sto_sha256_init(struct sto_sha256 *c);
void sto_sha256_update(struct sto_sha256 *c, const void *data, size_t len);
void sto_sha256_final(struct sto_sha256 *c, uint8_t out[32]);
/* one-shot: lowercase hex digest, NUL-terminated */
void sto_sha256_hex(const void *data, size_t len, char out[65]);

#endif
