/* Metrics: in-memory counters and histograms that the daemon updates on its
 * loop as invocations and launches end, their Prometheus text exposition
 * (GET /metrics), and invocation statistics computed from the store off the
 * loop (GET /v1/stats). docs/metrics.md lists every metric and field. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "error.h"
#include "store.h"
#include "vm.h"

/* Function label values tracked by default; the rest count under "_other". */
#define CVM_METRICS_MAX_FUNCTIONS 256
/* Distinct invocation statuses tracked; the rest count under "_other". */
#define CVM_METRICS_MAX_STATUSES 16
/* Rows a stats query considers at most (the most recent in its range). */
#define CVM_STATS_MAX_ROWS 1000000
/* The longest time range a stats query may cover. */
#define CVM_STATS_MAX_RANGE_MS (90LL * 24 * 3600 * 1000)
#define CVM_STATS_DEFAULT_RANGE_MS (3600LL * 1000)
/* Stats queries running at once; more are refused (429). */
#define CVM_STATS_MAX_JOBS 4

typedef struct cvm_metrics cvm_metrics;

/* store may be NULL (no stats queries then). max_functions 0: the default. */
int cvm_metrics_new(uv_loop_t *loop, cvm_store *store, uint32_t max_functions, cvm_metrics **ret,
                    cvm_error *err);
/* Waits for stats queries running on worker threads (they use the store, so
 * call this before closing it) and frees; their callbacks never run. NULL-safe. */
void cvm_metrics_free(cvm_metrics *m);

/* The hooks, on the loop; m may be NULL. */
void cvm_metrics_invocation(cvm_metrics *m, const cvm_invocation_record *rec);
void cvm_metrics_launch(cvm_metrics *m, bool demand, bool ok, uint64_t psp_wait_ns,
                        uint64_t psp_ns);

/* Prometheus text exposition format 0.0.4. */
#define CVM_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct cvm_prom_buf {
        char *data;
        size_t len, cap;
        bool failed; /* Out of memory: data is incomplete. */
} cvm_prom_buf;

typedef struct cvm_prom_label {
        const char *name, *value;
} cvm_prom_label;

void cvm_prom_buf_done(cvm_prom_buf *b);
/* Appends value escaped for a label: backslash, double quote and newline. */
void cvm_prom_escape(cvm_prom_buf *b, const char *value);
/* The HELP and TYPE lines of a metric family. */
void cvm_prom_family(cvm_prom_buf *b, const char *name, const char *type, const char *help);
void cvm_prom_sample_u64(cvm_prom_buf *b, const char *name, const cvm_prom_label *labels,
                         size_t n_labels, uint64_t value);
void cvm_prom_sample(cvm_prom_buf *b, const char *name, const cvm_prom_label *labels,
                     size_t n_labels, double value);
/* Appends the counters and histograms the hooks keep. */
void cvm_metrics_render(const cvm_metrics *m, cvm_prom_buf *b);

/* /v1/stats. */
typedef struct cvm_stats_query {
        char function[64]; /* Empty: every function (and bare VMs). */
        bool function_exists;
        int64_t since_ms, until_ms; /* [since, until), unix ms. */
} cvm_stats_query;

/* A time: unix ms ("1718000000000") or a duration before now_ms ("90s",
 * "15m", "1h", "7d", "500ms"). */
int cvm_stats_parse_time(const char *s, int64_t now_ms, int64_t *ret);
/* Checks the query parameters (any may be NULL); errors name the parameter. */
int cvm_stats_parse_query(const char *function, const char *since, const char *until,
                          int64_t now_ms, cvm_stats_query *ret, cvm_error *err);
/* Computes the stats answer from the store; blocks (worker threads, tests). */
int cvm_stats_compute(cvm_store *store, const cvm_stats_query *q, json_t **ret, cvm_error *err);

typedef struct cvm_stats_job cvm_stats_job;
/* Runs once on the loop; result is borrowed, NULL with err on failure. */
typedef void (*cvm_stats_cb)(json_t *result, const cvm_error *err, void *userdata);
/* Computes on a worker thread; cb runs later, never inside this call. */
int cvm_metrics_stats(cvm_metrics *m, const cvm_stats_query *q, cvm_stats_cb cb, void *userdata,
                      cvm_stats_job **ret, cvm_error *err);
/* The caller stops listening (client gone); the query finishes unheard. */
void cvm_stats_job_forget(cvm_stats_job *job);
