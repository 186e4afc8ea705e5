/* What the benchmark programs share: errors, clocks, response bodies and
 * percentiles. Header-only because every .c here is a program of its own.
 * A program sets bench_prog first thing in main. */
#pragma once

#include <errno.h>
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

static const char *bench_prog = "bench";

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
