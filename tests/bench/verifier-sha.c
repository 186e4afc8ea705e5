/* verifier-sha: the boot verifier's SHA-256 (firmware/verifier/sha256.c),
 * portable and with the SHA extensions, against OpenSSL, over a kernel and
 * initrd's worth of data (12 MiB, or the files given), on this machine's CPU:
 * what the verifier's check costs on hardware, where it runs at native speed.
 * Usage: verifier-sha [FILE...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>

#include "file.h"
#include "verifier/sha256.c"
#include "verifier/sha256_ni.c"

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of 5 runs, in milliseconds. */
static double run_vf(const uint8_t *data, size_t len, bool ni, uint8_t out[32]) {
        double best = 1e9;
        vf_sha256_use_ni(ni);
        for (int i = 0; i < 5; i++) {
                double t = now_s();
                vf_sha256 s;
                vf_sha256_init(&s);
                vf_sha256_update(&s, data, len);
                vf_sha256_final(&s, out);
                t = now_s() - t;
                best = t < best ? t : best;
        }
        return best * 1e3;
}

static double run_openssl(const uint8_t *data, size_t len, uint8_t out[32]) {
        double best = 1e9;
        for (int i = 0; i < 5; i++) {
                double t = now_s();
                unsigned n = 32;
                EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
                t = now_s() - t;
                best = t < best ? t : best;
        }
        return best * 1e3;
}

int main(int argc, char **argv) {
        size_t len = 12u << 20;
        uint8_t *data = NULL;
        if (argc > 1) {
                len = 0;
                for (int i = 1; i < argc; i++) {
                        uint8_t *f = NULL;
                        size_t n = 0;
                        cvm_error err = {0};
                        if (cvm_file_read(argv[i], (size_t)1 << 30, &f, &n, NULL, &err) < 0) {
                                fprintf(stderr, "verifier-sha: %s\n", err.message);
                                return 1;
                        }
                        uint8_t *grown = realloc(data, len + n);
                        if (!grown)
                                return 1;
                        data = grown;
                        memcpy(data + len, f, n);
                        len += n;
                        free(f);
                }
        } else {
                data = malloc(len);
                if (!data)
                        return 1;
                for (size_t i = 0; i < len; i++)
                        data[i] = (uint8_t)(i * 131 + 7);
        }
        uint8_t a[32], b[32], c[32];
        double portable = run_vf(data, len, false, a);
        double mb = (double)len / (1 << 20);
        printf("verifier-sha: %.1f MiB, best of 5\n", mb);
        printf("  %-28s %8.1f ms %8.0f MiB/s\n", "verifier, portable C", portable,
               mb / portable * 1e3);
        __builtin_cpu_init();
        if (__builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")) {
                double ni = run_vf(data, len, true, b);
                printf("  %-28s %8.1f ms %8.0f MiB/s%s\n", "verifier, SHA extensions", ni,
                       mb / ni * 1e3, memcmp(a, b, 32) ? "  MISMATCH" : "");
        } else {
                printf("  verifier, SHA extensions: this CPU has none\n");
        }
        double ossl = run_openssl(data, len, c);
        printf("  %-28s %8.1f ms %8.0f MiB/s%s\n", "OpenSSL", ossl, mb / ossl * 1e3,
               memcmp(a, c, 32) ? "  MISMATCH" : "");
        free(data);
        return memcmp(a, c, 32) != 0;
}
