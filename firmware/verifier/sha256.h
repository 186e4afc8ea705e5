/* SHA-256 for the verifier, which runs with no library under it. The host
 * side uses OpenSSL; tests/unit/test_verifier.c checks this one against it. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define VF_SHA256_SIZE 32

typedef struct vf_sha256 {
        uint32_t h[8];
        uint64_t total;
        uint8_t block[64];
        size_t fill;
} vf_sha256;

void vf_sha256_init(vf_sha256 *s);
void vf_sha256_update(vf_sha256 *s, const void *data, size_t len);
void vf_sha256_final(vf_sha256 *s, uint8_t out[VF_SHA256_SIZE]);
