/* What the benchmark programs share: errors, clocks, the daemon's control
 * requests (libcurl on its Unix socket), response bodies and percentiles.
 * Header-only because every .c here is a program of its own. A program sets
 * bench_prog first thing in main, and bench_sock and bench_ctl before its
 * first request. */
#pragma once

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Response bodies are capped so a runaway answer cannot exhaust memory. */
#ifndef BENCH_MAX_BODY
#define BENCH_MAX_BODY (8u << 20)
#endif

/* A control request that takes longer means a stuck daemon. */
#define BENCH_REQUEST_TIMEOUT_S 60L

static const char *bench_prog = "bench";
static const char *bench_sock; /* The daemon's Unix socket. */
static CURL *bench_ctl;        /* One keep-alive handle for the control requests. */

typedef struct buf {
        char *data;
        size_t len;
} buf;

__attribute__((format(printf, 1, 2), noreturn, unused)) static void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", bench_prog);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

__attribute__((unused)) static uint64_t now_ns(void) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
                die("clock_gettime: %s", strerror(errno));
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((unused)) static double now_ms(void) {
        return (double)now_ns() / 1e6;
}

__attribute__((unused)) static void sleep_us(uint64_t us) {
        struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

__attribute__((unused)) static void sleep_ms(long ms) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* libcurl's write callback into a buf. */
__attribute__((unused)) static size_t on_data(char *d, size_t s, size_t n, void *ud) {
        buf *b = ud;
        size_t len = s * n;
        if (b->len + len > BENCH_MAX_BODY)
                return 0;
        char *p = realloc(b->data, b->len + len + 1);
        if (!p)
                return 0;
        memcpy(p + b->len, d, len);
        b->len += len;
        p[b->len] = '\0';
        b->data = p;
        return len;
}

__attribute__((unused)) static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least p of the sample at or below it. */
__attribute__((unused)) static double percentile(const double *sorted, size_t n, double p) {
        size_t rank = (size_t)ceil(p * (double)n);
        return sorted[rank ? rank - 1 : 0];
}

__attribute__((unused)) static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* libcurl's write callback for answers nobody reads. */
__attribute__((unused)) static size_t bench_discard(char *d, size_t s, size_t n, void *ud) {
        (void)d;
        (void)ud;
        return s * n;
}

/* Sets h up for METHOD http://cvmd/PATH on bench_sock, the answer's body into out. */
__attribute__((unused)) static void bench_setup(CURL *h, const char *method, const char *path,
                                                long timeout_s, buf *out) {
        char url[256];
        snprintf(url, sizeof(url), "http://cvmd%s", path);
        if (curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, bench_sock) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_WRITEDATA, out) != CURLE_OK)
                die("cannot set up a libcurl handle");
}

/* One request on bench_ctl, with a JSON body or none (a POST without one
 * sends an empty body): returns the answer's body (NUL-terminated, NULL when
 * empty) and its status; on_header, when set, sees every header line. A
 * transport error ends the program. */
__attribute__((unused)) static char *bench_perform(const char *method, const char *path,
                                                   const char *json_body, long *status,
                                                   curl_write_callback on_header, void *header_ud) {
        buf out = {0};
        struct curl_slist *hdrs = NULL;
        curl_easy_reset(bench_ctl);
        bench_setup(bench_ctl, method, path, BENCH_REQUEST_TIMEOUT_S, &out);
        if (on_header &&
            (curl_easy_setopt(bench_ctl, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
             curl_easy_setopt(bench_ctl, CURLOPT_HEADERDATA, header_ud) != CURLE_OK))
                die("cannot set up a libcurl handle");
        if (json_body) {
                hdrs = curl_slist_append(NULL, "Content-Type: application/json");
                if (!hdrs || curl_easy_setopt(bench_ctl, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
                    curl_easy_setopt(bench_ctl, CURLOPT_POSTFIELDS, json_body) != CURLE_OK)
                        die("cannot set up a libcurl handle");
        } else if (strcmp(method, "POST") == 0) {
                if (curl_easy_setopt(bench_ctl, CURLOPT_POSTFIELDS, "") != CURLE_OK ||
                    curl_easy_setopt(bench_ctl, CURLOPT_POSTFIELDSIZE, 0L) != CURLE_OK)
                        die("cannot set up a libcurl handle");
        }
        CURLcode rc = curl_easy_perform(bench_ctl);
        curl_slist_free_all(hdrs);
        if (rc != CURLE_OK)
                die("%s %s: %s", method, path, curl_easy_strerror(rc));
        if (curl_easy_getinfo(bench_ctl, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
                die("%s %s: no status", method, path);
        return out.data;
}

/* A control request whose answer is JSON: returns it parsed, with its status. */
__attribute__((unused)) static json_t *bench_request(const char *method, const char *path,
                                                     const char *json_body, long *status) {
        char *out = bench_perform(method, path, json_body, status, NULL, NULL);
        json_error_t jerr;
        json_t *j = out ? json_loads(out, 0, &jerr) : NULL;
        if (!j)
                die("%s %s: %ld with a body that is not JSON: %s", method, path, *status,
                    out ? out : "(empty)");
        free(out);
        return j;
}
