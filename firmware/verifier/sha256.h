/* SHA-256 for the verifier, which runs with no library under it. The host
 * side uses OpenSSL; tests/unit/test_verifier.c checks this one against it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VF_SHA256_SIZE 32

typedef struct vf_sha256 {
        uint32_t h[8];
        uint64_t total;
        uint8_t block[64];
        size_t fill;
} vf_sha256;

/* The round constants, 16-byte aligned for the SHA-NI code. */
extern const uint32_t vf_sha256_k[64];

/* Use the SHA extensions from now on: only once SSE is enabled and CPUID
 * says SHA, SSSE3 and SSE4.1 are there. */
void vf_sha256_use_ni(bool on);
/* sha256_ni.c: whole 64-byte blocks into h. */
void vf_sha256_blocks_ni(uint32_t h[8], const uint8_t *p, size_t nblocks);

void vf_sha256_init(vf_sha256 *s);
void vf_sha256_update(vf_sha256 *s, const void *data, size_t len);
void vf_sha256_final(vf_sha256 *s, uint8_t out[VF_SHA256_SIZE]);
