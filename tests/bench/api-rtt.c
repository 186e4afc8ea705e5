/* api-rtt: the daemon's own request overhead. Sends GET /v1/health over one
 * keep-alive connection (libcurl, Unix socket) and prints requests per
 * second and latency percentiles. Usage: api-rtt SOCKET [REQUESTS]. */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

int main(int argc, char **argv) {
        bench_prog = "api-rtt";
        if (argc < 2) {
                fprintf(stderr, "usage: api-rtt SOCKET [REQUESTS]\n");
                return 2;
        }
        long n = argc > 2 ? atol(argv[2]) : 20000;
        if (n < 100)
                n = 100;
        uint64_t *lat = calloc((size_t)n, sizeof(*lat));
        CURL *h = curl_easy_init();
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, argv[1]);
        curl_easy_setopt(h, CURLOPT_URL, "http://cvmd/v1/health");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, bench_discard);
        /* Warm up the connection and the daemon's caches. */
        for (int i = 0; i < 100; i++)
                curl_easy_perform(h);
        uint64_t start = now_ns();
        for (long i = 0; i < n; i++) {
                uint64_t t = now_ns();
                long status = 0;
                if (curl_easy_perform(h) != CURLE_OK ||
                    (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status), status != 200)) {
                        fprintf(stderr, "api-rtt: request %ld failed\n", i);
                        return 1;
                }
                lat[i] = now_ns() - t;
        }
        double secs = (double)(now_ns() - start) / 1e9;
        qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
        printf("api-rtt: GET /v1/health, 1 keep-alive connection over a Unix socket, %ld "
               "requests\n",
               n);
        printf("  throughput  %.0f req/s\n", (double)n / secs);
        printf("  latency     p50 %.1f us   p90 %.1f us   p99 %.1f us   max %.1f us\n",
               (double)lat[n / 2] / 1e3, (double)lat[n * 9 / 10] / 1e3,
               (double)lat[n * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3);
        curl_easy_cleanup(h);
        free(lat);
        return 0;
}
