/* SHA-256 block compression with the x86 SHA extensions (SHA-NI), which
 * AMD EPYC processors have: ~10x the portable code, so hashing a kernel and
 * initrd takes milliseconds instead of ~100 ms. Built with SSE enabled
 * (verifier.mk); called only once vf_main has turned SSE on and CPUID has
 * said the instructions exist. */
#define _MM_MALLOC_H_INCLUDED /* immintrin.h would pull in stdlib.h for it */
#include <immintrin.h>

#include "sha256.h"

/* A target attribute, not a pragma: GCC and clang both take it. */
__attribute__((target("sse4.1,sha"))) void vf_sha256_blocks_ni(uint32_t h[8], const uint8_t *p,
                                                               size_t nblocks) {
        /* Big-endian message words. */
        const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        /* The state as SHA256RNDS2 wants it: ABEF and CDGH. */
        __m128i t = _mm_loadu_si128((const __m128i *)&h[0]); /* A B C D (low to high: a, b, c, d) */
        __m128i s1 = _mm_loadu_si128((const __m128i *)&h[4]); /* E F G H */
        t = _mm_shuffle_epi32(t, 0xb1);                       /* b a d c */
        s1 = _mm_shuffle_epi32(s1, 0x1b);                     /* h g f e */
        __m128i abef = _mm_alignr_epi8(t, s1, 8);             /* f e b a */
        __m128i cdgh = _mm_blend_epi16(s1, t, 0xf0);          /* h g d c */
        for (; nblocks; nblocks--, p += 64) {
                __m128i abef0 = abef, cdgh0 = cdgh;
                __m128i w[4];
                for (int i = 0; i < 4; i++)
                        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)),
                                                bswap);
                for (int r = 0; r < 16; r++) {
                        __m128i wk = _mm_add_epi32(
                                w[r % 4], _mm_load_si128((const __m128i *)&vf_sha256_k[4 * r]));
                        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
                        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0e));
                        if (r < 12) {
                                /* The schedule: W[16..63] from the previous 16 words. */
                                __m128i next = _mm_sha256msg1_epu32(w[r % 4], w[(r + 1) % 4]);
                                next = _mm_add_epi32(
                                        next, _mm_alignr_epi8(w[(r + 3) % 4], w[(r + 2) % 4], 4));
                                w[r % 4] = _mm_sha256msg2_epu32(next, w[(r + 3) % 4]);
                        }
                }
                abef = _mm_add_epi32(abef, abef0);
                cdgh = _mm_add_epi32(cdgh, cdgh0);
        }
        /* Back to A..H. */
        t = _mm_shuffle_epi32(abef, 0x1b);             /* a b e f */
        cdgh = _mm_shuffle_epi32(cdgh, 0xb1);          /* d c h g -> c d g h */
        __m128i abcd = _mm_blend_epi16(t, cdgh, 0xf0); /* a b c d */
        __m128i efgh = _mm_alignr_epi8(cdgh, t, 8);    /* e f g h */
        _mm_storeu_si128((__m128i *)&h[0], abcd);
        _mm_storeu_si128((__m128i *)&h[4], efgh);
}
