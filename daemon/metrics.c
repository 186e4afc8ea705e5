#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "function.h"
#include "list.h"
#include "log.h"

/* Histograms. Bounds are kept as the label text and in ns, so that bucketing
 * compares integers and the le labels print exactly as written. */

typedef struct bucket_def {
        const char *le;
        uint64_t ns;
} bucket_def;

#define MS(x) ((uint64_t)((x)*1000000.0))

/* Invocations last from a millisecond (warm, trivial handler) to minutes. */
static const bucket_def duration_buckets[] = {
        {"0.001", MS(1)},    {"0.0025", MS(2.5)}, {"0.005", MS(5)},  {"0.01", MS(10)},
        {"0.025", MS(25)},   {"0.05", MS(50)},    {"0.1", MS(100)},  {"0.25", MS(250)},
        {"0.5", MS(500)},    {"1", MS(1000)},     {"2.5", MS(2500)}, {"5", MS(5000)},
        {"10", MS(10000)},   {"30", MS(30000)},   {"60", MS(60000)}, {"120", MS(120000)},
        {"300", MS(300000)},
};

/* A launch's PSP work takes tens of ms; waiting for the PSP, up to many launches' worth. */
static const bucket_def psp_buckets[] = {
        {"0.0005", MS(0.5)}, {"0.001", MS(1)},  {"0.0025", MS(2.5)}, {"0.005", MS(5)},
        {"0.01", MS(10)},    {"0.025", MS(25)}, {"0.05", MS(50)},    {"0.1", MS(100)},
        {"0.25", MS(250)},   {"0.5", MS(500)},  {"1", MS(1000)},     {"2.5", MS(2500)},
        {"5", MS(5000)},     {"10", MS(10000)}, {"30", MS(30000)},   {"60", MS(60000)},
};

#define MAX_BUCKETS 24

typedef struct histogram {
        const bucket_def *defs;
        size_t n_defs;
        uint64_t counts[MAX_BUCKETS + 1]; /* Per bucket, not cumulative; the last is +Inf. */
        uint64_t count, sum_ns;
} histogram;

static void histogram_init(histogram *h, const bucket_def *defs, size_t n) {
        *h = (histogram){.defs = defs, .n_defs = n};
}

static void histogram_observe(histogram *h, uint64_t ns) {
        size_t i = 0;
        /* le is inclusive: a value on a bound belongs to that bucket. */
        while (i < h->n_defs && ns > h->defs[i].ns)
                i++;
        h->counts[i]++;
        h->count++;
        h->sum_ns += ns;
}

/* Invocation series: one per function, start kind and status. */

enum { START_COLD, START_WARM, START_COUNT };
static const char *const start_names[START_COUNT] = {"cold", "warm"};
enum { TRIGGER_DEMAND, TRIGGER_PREWARM, TRIGGER_COUNT };
static const char *const trigger_names[TRIGGER_COUNT] = {"demand", "prewarm"};
enum { RESULT_OK, RESULT_FAILED, RESULT_COUNT };
static const char *const result_names[RESULT_COUNT] = {"ok", "failed"};

#define OTHER "_other"

typedef struct fn_series {
        char *name; /* "" for VMs created on their own. */
        /* The last status slot is "_other". */
        uint64_t counts[START_COUNT][CVM_METRICS_MAX_STATUSES + 1];
} fn_series;

typedef struct cvm_stats_job stats_job;

struct cvm_metrics {
        uv_loop_t *loop;
        cvm_store *store;
        uint32_t max_functions;
        fn_series *fns; /* Sorted by name, for bsearch and a stable output order. */
        size_t n_fns;
        fn_series other; /* Functions past max_functions. */
        bool other_used;
        char *statuses[CVM_METRICS_MAX_STATUSES];
        size_t n_statuses;
        histogram duration[START_COUNT];
        histogram psp_wait, psp;
        uint64_t launches[RESULT_COUNT][TRIGGER_COUNT];
        stats_job *jobs; /* Stats queries in flight. */
        size_t n_jobs;
};

int cvm_metrics_new(uv_loop_t *loop, cvm_store *store, uint32_t max_functions, cvm_metrics **ret,
                    cvm_error *err) {
        cvm_metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        m->loop = loop;
        m->store = store;
        m->max_functions = max_functions ? max_functions : CVM_METRICS_MAX_FUNCTIONS;
        m->fns = calloc(m->max_functions, sizeof(*m->fns));
        if (!m->fns) {
                free(m);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        for (int s = 0; s < START_COUNT; s++)
                histogram_init(&m->duration[s], duration_buckets, CVM_ARRAY_SIZE(duration_buckets));
        histogram_init(&m->psp_wait, psp_buckets, CVM_ARRAY_SIZE(psp_buckets));
        histogram_init(&m->psp, psp_buckets, CVM_ARRAY_SIZE(psp_buckets));
        *ret = m;
        return 0;
}

/* Finds or adds the series of a function; NULL means "_other". */
static fn_series *fn_lookup(cvm_metrics *m, const char *name) {
        size_t lo = 0, hi = m->n_fns;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(m->fns[mid].name, name);
                if (c == 0)
                        return &m->fns[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (m->n_fns == m->max_functions)
                return NULL;
        char *copy = strdup(name);
        if (!copy)
                return NULL;
        memmove(&m->fns[lo + 1], &m->fns[lo], (m->n_fns - lo) * sizeof(*m->fns));
        m->fns[lo] = (fn_series){.name = copy};
        m->n_fns++;
        return &m->fns[lo];
}

/* The status slot; CVM_METRICS_MAX_STATUSES is "_other". */
static size_t status_index(cvm_metrics *m, const char *status) {
        for (size_t i = 0; i < m->n_statuses; i++)
                if (strcmp(m->statuses[i], status) == 0)
                        return i;
        if (m->n_statuses == CVM_METRICS_MAX_STATUSES)
                return CVM_METRICS_MAX_STATUSES;
        char *copy = strdup(status);
        if (!copy)
                return CVM_METRICS_MAX_STATUSES;
        m->statuses[m->n_statuses] = copy;
        return m->n_statuses++;
}

void cvm_metrics_invocation(cvm_metrics *m, const cvm_invocation_record *rec) {
        if (!m)
                return;
        int start =
                rec->start_kind && strcmp(rec->start_kind, "cold") == 0 ? START_COLD : START_WARM;
        size_t st = status_index(m, rec->status ? rec->status : "unknown");
        fn_series *fs = fn_lookup(m, rec->function ? rec->function : "");
        if (!fs) {
                fs = &m->other;
                m->other_used = true;
        }
        fs->counts[start][st]++;
        histogram_observe(&m->duration[start], rec->total_ns);
}

void cvm_metrics_launch(cvm_metrics *m, bool demand, bool ok, uint64_t psp_wait_ns,
                        uint64_t psp_ns) {
        if (!m)
                return;
        m->launches[ok ? RESULT_OK : RESULT_FAILED][demand ? TRIGGER_DEMAND : TRIGGER_PREWARM]++;
        /* A failed launch may have stopped anywhere: only complete ones are timed. */
        if (ok) {
                histogram_observe(&m->psp_wait, psp_wait_ns);
                histogram_observe(&m->psp, psp_ns);
        }
}

/* The exposition buffer. */

void cvm_prom_buf_done(cvm_prom_buf *b) {
        free(b->data);
        *b = (cvm_prom_buf){0};
}

static bool buf_reserve(cvm_prom_buf *b, size_t more) {
        if (b->failed)
                return false;
        if (b->len + more + 1 <= b->cap)
                return true;
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more + 1)
                cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
                b->failed = true;
                return false;
        }
        b->data = p;
        b->cap = cap;
        return true;
}

static void buf_add(cvm_prom_buf *b, const char *s, size_t n) {
        if (!buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = '\0';
}

static void buf_puts(cvm_prom_buf *b, const char *s) {
        buf_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void buf_printf(cvm_prom_buf *b, const char *fmt,
                                                             ...) {
        char small[256];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(small, sizeof(small), fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->failed = true;
                return;
        }
        if ((size_t)n < sizeof(small)) {
                buf_add(b, small, (size_t)n);
                return;
        }
        if (!buf_reserve(b, (size_t)n))
                return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

void cvm_prom_escape(cvm_prom_buf *b, const char *value) {
        for (const char *p = value; *p; p++) {
                switch (*p) {
                case '\\': buf_add(b, "\\\\", 2); break;
                case '"': buf_add(b, "\\\"", 2); break;
                case '\n': buf_add(b, "\\n", 2); break;
                default: buf_add(b, p, 1); break;
                }
        }
}

void cvm_prom_family(cvm_prom_buf *b, const char *name, const char *type, const char *help) {
        /* HELP text escapes only backslash and newline; ours are constants without either. */
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_head(cvm_prom_buf *b, const char *name, const cvm_prom_label *labels,
                        size_t n_labels) {
        buf_puts(b, name);
        if (n_labels) {
                buf_add(b, "{", 1);
                for (size_t i = 0; i < n_labels; i++) {
                        buf_printf(b, "%s%s=\"", i ? "," : "", labels[i].name);
                        cvm_prom_escape(b, labels[i].value);
                        buf_add(b, "\"", 1);
                }
                buf_add(b, "}", 1);
        }
}

void cvm_prom_sample_u64(cvm_prom_buf *b, const char *name, const cvm_prom_label *labels,
                         size_t n_labels, uint64_t value) {
        sample_head(b, name, labels, n_labels);
        buf_printf(b, " %" PRIu64 "\n", value);
}

void cvm_prom_sample(cvm_prom_buf *b, const char *name, const cvm_prom_label *labels,
                     size_t n_labels, double value) {
        sample_head(b, name, labels, n_labels);
        if (isnan(value))
                buf_puts(b, " NaN\n");
        else if (isinf(value))
                buf_puts(b, value > 0 ? " +Inf\n" : " -Inf\n");
        else
                buf_printf(b, " %.15g\n", value);
}

/* A histogram's samples; label (may have a NULL name) comes before le. */
static void render_histogram(cvm_prom_buf *b, const char *name, cvm_prom_label label,
                             const histogram *h) {
        char metric[128];
        cvm_prom_label ls[2] = {label, {"le", NULL}};
        size_t first = label.name ? 0 : 1, n = 2 - first;
        uint64_t cum = 0;
        snprintf(metric, sizeof(metric), "%s_bucket", name);
        for (size_t i = 0; i <= h->n_defs; i++) {
                cum += h->counts[i];
                ls[1].value = i < h->n_defs ? h->defs[i].le : "+Inf";
                cvm_prom_sample_u64(b, metric, ls + first, n, cum);
        }
        /* The sum in exact decimal seconds from integer ns. */
        snprintf(metric, sizeof(metric), "%s_sum", name);
        sample_head(b, metric, ls + first, n - 1);
        buf_printf(b, " %" PRIu64 ".%09" PRIu64 "\n", h->sum_ns / 1000000000,
                   h->sum_ns % 1000000000);
        snprintf(metric, sizeof(metric), "%s_count", name);
        cvm_prom_sample_u64(b, metric, ls + first, n - 1, h->count);
}

static void render_fn(const cvm_metrics *m, cvm_prom_buf *b, const char *name,
                      const fn_series *fs) {
        for (int s = 0; s < START_COUNT; s++)
                for (size_t i = 0; i <= CVM_METRICS_MAX_STATUSES; i++) {
                        if (!fs->counts[s][i])
                                continue;
                        cvm_prom_label ls[] = {
                                {"function", name},
                                {"start", start_names[s]},
                                {"status", i < m->n_statuses ? m->statuses[i] : OTHER},
                        };
                        cvm_prom_sample_u64(b, "cvmd_invocations_total", ls, 3, fs->counts[s][i]);
                }
}

void cvm_metrics_render(const cvm_metrics *m, cvm_prom_buf *b) {
        cvm_prom_family(b, "cvmd_invocations_total", "counter",
                        "Invocations that ended, by function, start kind and status.");
        for (size_t i = 0; i < m->n_fns; i++)
                render_fn(m, b, m->fns[i].name, &m->fns[i]);
        if (m->other_used)
                render_fn(m, b, OTHER, &m->other);

        cvm_prom_family(b, "cvmd_invocation_duration_seconds", "histogram",
                        "Time from an invocation's arrival to its answer, by start kind.");
        for (int s = 0; s < START_COUNT; s++)
                render_histogram(b, "cvmd_invocation_duration_seconds",
                                 (cvm_prom_label){"start", start_names[s]}, &m->duration[s]);

        cvm_prom_family(b, "cvmd_launches_total", "counter",
                        "VM launches that ended, by result and trigger.");
        for (int r = 0; r < RESULT_COUNT; r++)
                for (int t = 0; t < TRIGGER_COUNT; t++) {
                        cvm_prom_label ls[] = {{"result", result_names[r]},
                                               {"trigger", trigger_names[t]}};
                        cvm_prom_sample_u64(b, "cvmd_launches_total", ls, 2, m->launches[r][t]);
                }

        cvm_prom_family(b, "cvmd_launch_psp_wait_seconds", "histogram",
                        "Time a successful launch waited for the PSP (scheduler and queue).");
        render_histogram(b, "cvmd_launch_psp_wait_seconds", (cvm_prom_label){0}, &m->psp_wait);
        cvm_prom_family(b, "cvmd_launch_psp_seconds", "histogram",
                        "PSP service time of a successful launch.");
        render_histogram(b, "cvmd_launch_psp_seconds", (cvm_prom_label){0}, &m->psp);
}

/* Stats: parameters. */

int cvm_stats_parse_time(const char *s, int64_t now_ms, int64_t *ret) {
        static const struct {
                const char *suffix;
                int64_t ms;
        } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
        size_t digits = strspn(s, "0123456789");
        /* 15 digits hold any unix ms until the year 33000 and cannot overflow. */
        if (digits == 0 || digits > 15)
                return -EINVAL;
        int64_t n = 0;
        for (size_t i = 0; i < digits; i++)
                n = n * 10 + (s[i] - '0');
        const char *suffix = s + digits;
        if (!*suffix) {
                *ret = n;
                return 0;
        }
        for (size_t i = 0; i < CVM_ARRAY_SIZE(units); i++)
                if (strcmp(suffix, units[i].suffix) == 0) {
                        /* Ten years back is far enough, and keeps the product in range. */
                        if (n > 3650 * 86400000LL / units[i].ms)
                                return -ERANGE;
                        *ret = now_ms - n * units[i].ms;
                        return 0;
                }
        return -EINVAL;
}

int cvm_stats_parse_query(const char *function, const char *since, const char *until,
                          int64_t now_ms, cvm_stats_query *ret, cvm_error *err) {
        *ret = (cvm_stats_query){.until_ms = now_ms};
        if (function) {
                int r = cvm_function_name_check(function, err);
                if (r < 0)
                        return cvm_error_prefix(err, "query parameter 'function': ");
                snprintf(ret->function, sizeof(ret->function), "%s", function);
        }
        const char *names[] = {"until", "since"};
        const char *vals[] = {until, since};
        int64_t *dst[] = {&ret->until_ms, &ret->since_ms};
        for (int i = 0; i < 2; i++) {
                if (!vals[i])
                        continue;
                int r = cvm_stats_parse_time(vals[i], now_ms, dst[i]);
                if (r == -ERANGE)
                        return cvm_error_set(err, -EINVAL,
                                             "query parameter '%s': %s reaches back more than "
                                             "3650 days",
                                             names[i], CVM_QUOTE(vals[i]));
                if (r < 0)
                        return cvm_error_set(err, -EINVAL,
                                             "query parameter '%s': %s is neither unix "
                                             "milliseconds nor a duration like 30s, 15m, 1h, 7d",
                                             names[i], CVM_QUOTE(vals[i]));
        }
        if (!since)
                ret->since_ms = ret->until_ms - CVM_STATS_DEFAULT_RANGE_MS;
        if (ret->since_ms >= ret->until_ms)
                return cvm_error_set(err, -EINVAL,
                                     "query parameter 'since' (%" PRId64
                                     ") must be before 'until' (%" PRId64 ")",
                                     ret->since_ms, ret->until_ms);
        if (ret->until_ms - ret->since_ms > CVM_STATS_MAX_RANGE_MS)
                return cvm_error_set(err, -EINVAL,
                                     "query parameter 'since': the range to 'until' spans more "
                                     "than %lld days",
                                     CVM_STATS_MAX_RANGE_MS / 86400000);
        return 0;
}

/* Stats: computation. Values are kept per start kind and phase, sorted, and
 * read at nearest ranks, so percentiles are exact for the rows considered. */

typedef struct vec {
        int64_t *v;
        size_t n, cap;
} vec;

static int vec_push(vec *x, int64_t v) {
        if (x->n == x->cap) {
                size_t cap = x->cap ? x->cap * 2 : 256;
                int64_t *p = realloc(x->v, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                x->v = p;
                x->cap = cap;
        }
        x->v[x->n++] = v;
        return 0;
}

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return (x > y) - (x < y);
}

/* Counts by a text key; past max keys, under "_other". */
#define COUNTER_KEYS 32
typedef struct counter_map {
        char *keys[COUNTER_KEYS];
        uint64_t counts[COUNTER_KEYS];
        size_t n;
        uint64_t other;
} counter_map;

static int counter_add(counter_map *c, const char *key) {
        key = key ? key : "unknown";
        for (size_t i = 0; i < c->n; i++)
                if (strcmp(c->keys[i], key) == 0) {
                        c->counts[i]++;
                        return 0;
                }
        if (c->n == COUNTER_KEYS) {
                c->other++;
                return 0;
        }
        if (!(c->keys[c->n] = strdup(key)))
                return -ENOMEM;
        c->counts[c->n++] = 1;
        return 0;
}

static uint64_t counter_get(const counter_map *c, const char *key) {
        for (size_t i = 0; i < c->n; i++)
                if (strcmp(c->keys[i], key) == 0)
                        return c->counts[i];
        return 0;
}

static json_t *counter_json(const counter_map *c) {
        json_t *j = json_object();
        for (size_t i = 0; i < c->n; i++)
                json_object_set_new(j, c->keys[i], json_integer((json_int_t)c->counts[i]));
        if (c->other)
                json_object_set_new(j, OTHER, json_integer((json_int_t)c->other));
        return j;
}

static void counter_done(counter_map *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->keys[i]);
}

enum { PH_TOTAL, PH_QUEUE, PH_PSP_WAIT, PH_PSP, PH_BOOT, PH_EXEC, PH_COUNT };
static const char *const phase_names[PH_COUNT] = {"total", "queue", "psp_wait",
                                                  "psp",   "boot",  "exec"};

typedef struct stats_acc {
        size_t rows;
        bool truncated;
        counter_map by_status, by_start, by_trigger;
        vec phases[START_COUNT][PH_COUNT];
        uint64_t launches, launches_failed;
        vec psp_wait, psp;
} stats_acc;

static int inv_row(sqlite3_stmt *row, void *ud, cvm_error *err) {
        stats_acc *a = ud;
        /* The query asks for one row past the limit to learn whether there are more. */
        if (a->rows == CVM_STATS_MAX_ROWS) {
                a->truncated = true;
                return 0;
        }
        a->rows++;
        const char *kind = (const char *)sqlite3_column_text(row, 0);
        const char *status = (const char *)sqlite3_column_text(row, 1);
        int r = counter_add(&a->by_start, kind);
        if (r >= 0)
                r = counter_add(&a->by_status, status);
        int s = !kind                   ? -1
                : !strcmp(kind, "cold") ? START_COLD
                : !strcmp(kind, "warm") ? START_WARM
                                        : -1;
        /* Columns 2..7: queue, psp_wait, psp, boot, exec, total. */
        static const int col_phase[] = {PH_QUEUE, PH_PSP_WAIT, PH_PSP, PH_BOOT, PH_EXEC, PH_TOTAL};
        for (int c = 0; r >= 0 && s >= 0 && c < PH_COUNT; c++)
                if (sqlite3_column_type(row, c + 2) != SQLITE_NULL)
                        r = vec_push(&a->phases[s][col_phase[c]], sqlite3_column_int64(row, c + 2));
        if (r < 0)
                return cvm_error_set(err, r, "out of memory computing stats");
        return 0;
}

static int launch_row(sqlite3_stmt *row, void *ud, cvm_error *err) {
        stats_acc *a = ud;
        if (a->launches == CVM_STATS_MAX_ROWS) {
                a->truncated = true;
                return 0;
        }
        a->launches++;
        const char *result = (const char *)sqlite3_column_text(row, 0);
        bool ok = result && strcmp(result, "ok") == 0;
        int r = counter_add(&a->by_trigger, (const char *)sqlite3_column_text(row, 1));
        if (!ok)
                a->launches_failed++;
        /* Only complete launches are timed, as in /metrics. */
        if (r >= 0 && ok && sqlite3_column_type(row, 2) != SQLITE_NULL)
                r = vec_push(&a->psp_wait, sqlite3_column_int64(row, 2));
        if (r >= 0 && ok && sqlite3_column_type(row, 3) != SQLITE_NULL)
                r = vec_push(&a->psp, sqlite3_column_int64(row, 3));
        if (r < 0)
                return cvm_error_set(err, r, "out of memory computing stats");
        return 0;
}

/* Nearest rank: the smallest value with at least p% of the values at or below it. */
static json_t *percentiles_json(vec *x, const int *ps, size_t n_ps) {
        json_t *j = json_object();
        if (x->n)
                qsort(x->v, x->n, sizeof(*x->v), cmp_i64);
        for (size_t i = 0; i < n_ps; i++) {
                char key[8];
                snprintf(key, sizeof(key), "p%d", ps[i]);
                if (!x->n) {
                        json_object_set_new(j, key, json_null());
                        continue;
                }
                size_t rank = ((size_t)ps[i] * x->n + 99) / 100;
                json_object_set_new(j, key, json_real((double)x->v[rank - 1] / 1000.0));
        }
        return j;
}

static void acc_done(stats_acc *a) {
        counter_done(&a->by_status);
        counter_done(&a->by_start);
        counter_done(&a->by_trigger);
        for (int s = 0; s < START_COUNT; s++)
                for (int p = 0; p < PH_COUNT; p++)
                        free(a->phases[s][p].v);
        free(a->psp_wait.v);
        free(a->psp.v);
}

static json_t *build_answer(const cvm_stats_query *q, stats_acc *inv, stats_acc *lau) {
        static const int p3[] = {50, 90, 99}, p2[] = {50, 99};
        json_t *latency = json_object();
        for (int s = 0; s < START_COUNT; s++) {
                json_t *k = json_pack("{s:I}", "count",
                                      (json_int_t)counter_get(&inv->by_start, start_names[s]));
                for (int p = 0; p < PH_COUNT; p++)
                        json_object_set_new(k, phase_names[p],
                                            percentiles_json(&inv->phases[s][p], p3, 3));
                json_object_set_new(latency, start_names[s], k);
        }
        json_t *by_start = counter_json(&inv->by_start);
        for (int s = 0; s < START_COUNT; s++)
                if (!json_object_get(by_start, start_names[s]))
                        json_object_set_new(by_start, start_names[s], json_integer(0));
        uint64_t cold = counter_get(&inv->by_start, "cold");
        json_t *invocations =
                json_pack("{s:I, s:b, s:o, s:o, s:o, s:o}", "total", (json_int_t)inv->rows,
                          "truncated", inv->truncated, "by_status", counter_json(&inv->by_status),
                          "by_start", by_start, "cold_fraction",
                          inv->rows ? json_real((double)cold / (double)inv->rows) : json_null(),
                          "latency_ms", latency);
        json_t *launches =
                json_pack("{s:I, s:I, s:b, s:o, s:o, s:o}", "total", (json_int_t)lau->launches,
                          "failed", (json_int_t)lau->launches_failed, "truncated", lau->truncated,
                          "by_trigger", counter_json(&lau->by_trigger), "psp_wait_ms",
                          percentiles_json(&lau->psp_wait, p2, 2), "psp_ms",
                          percentiles_json(&lau->psp, p2, 2));
        json_t *notes = json_array();
        if (q->function[0] && !q->function_exists)
                json_array_append_new(notes,
                                      json_string("no function has this name now; it may have been "
                                                  "deleted, so the stored rows are still counted"));
        if (inv->truncated || lau->truncated) {
                char n[160];
                snprintf(n, sizeof(n),
                         "more than %d rows in the range: only the most recent %d of each kind "
                         "were considered",
                         CVM_STATS_MAX_ROWS, CVM_STATS_MAX_ROWS);
                json_array_append_new(notes, json_string(n));
        }
        return json_pack("{s:s?, s:I, s:I, s:i, s:o, s:o, s:o}", "function",
                         q->function[0] ? q->function : NULL, "since_ms", (json_int_t)q->since_ms,
                         "until_ms", (json_int_t)q->until_ms, "max_rows", CVM_STATS_MAX_ROWS,
                         "invocations", invocations, "launches", launches, "notes", notes);
}

int cvm_stats_compute(cvm_store *store, const cvm_stats_query *q, json_t **ret, cvm_error *err) {
        stats_acc inv = {0}, lau = {0};
        /* The function name was checked, and %Q quotes it anyway. */
        char *filter = q->function[0] ? sqlite3_mprintf(" AND function = %Q", q->function)
                                      : sqlite3_mprintf("%s", "");
        char *inv_sql = NULL, *lau_sql = NULL;
        int r = 0;
        if (filter) {
                inv_sql = sqlite3_mprintf(
                        "SELECT start_kind, status, queue_us, psp_wait_us, psp_us, boot_us,"
                        " exec_us, total_us FROM invocations WHERE started_at_ms >= %lld"
                        " AND started_at_ms < %lld%s ORDER BY started_at_ms DESC LIMIT %d",
                        (long long)q->since_ms, (long long)q->until_ms, filter,
                        CVM_STATS_MAX_ROWS + 1);
                lau_sql =
                        sqlite3_mprintf("SELECT result, trigger, psp_wait_us, psp_us FROM launches"
                                        " WHERE started_at_ms >= %lld AND started_at_ms < %lld%s"
                                        " ORDER BY started_at_ms DESC LIMIT %d",
                                        (long long)q->since_ms, (long long)q->until_ms, filter,
                                        CVM_STATS_MAX_ROWS + 1);
        }
        if (!inv_sql || !lau_sql)
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0)
                r = cvm_store_read(store, inv_sql, inv_row, &inv, err);
        if (r >= 0)
                r = cvm_store_read(store, lau_sql, launch_row, &lau, err);
        if (r >= 0 && !(*ret = build_answer(q, &inv, &lau)))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        sqlite3_free(filter);
        sqlite3_free(inv_sql);
        sqlite3_free(lau_sql);
        acc_done(&inv);
        acc_done(&lau);
        return r;
}

/* Stats: jobs on libuv's worker pool. A job's completion flag lives in the
 * job and is guarded by one process-wide lock, so cvm_metrics_free can wait
 * for a running job without the job ever touching the metrics. */

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_done = PTHREAD_COND_INITIALIZER;

struct cvm_stats_job {
        uv_work_t work;
        cvm_metrics *m; /* NULL once the metrics are gone. */
        cvm_store *store;
        uint64_t submitted; /* The writes queued before the query: it sees them. */
        cvm_stats_query q;
        cvm_stats_cb cb;
        void *userdata;
        bool forgotten;
        bool work_done; /* Under jobs_lock. */
        json_t *result;
        int r;
        cvm_error err;
        stats_job *prev, *next;
};

static void job_unlink(stats_job *job) {
        cvm_metrics *m = job->m;
        CVM_LIST_REMOVE(m->jobs, job);
        m->n_jobs--;
        job->m = NULL;
}

static void stats_work(uv_work_t *w) {
        stats_job *job = w->data;
        cvm_store_wait_committed(job->store, job->submitted);
        job->r = cvm_stats_compute(job->store, &job->q, &job->result, &job->err);
        pthread_mutex_lock(&jobs_lock);
        job->work_done = true;
        pthread_cond_broadcast(&jobs_done);
        pthread_mutex_unlock(&jobs_lock);
}

static void stats_after(uv_work_t *w, int status) {
        stats_job *job = w->data;
        if (job->m)
                job_unlink(job);
        if (status == UV_ECANCELED && job->r >= 0)
                job->r = cvm_error_set(&job->err, -ECANCELED, "the stats query was cancelled");
        if (!job->forgotten && job->cb)
                job->cb(job->r < 0 ? NULL : job->result, job->r < 0 ? &job->err : NULL,
                        job->userdata);
        json_decref(job->result);
        free(job);
}

int cvm_metrics_stats(cvm_metrics *m, const cvm_stats_query *q, cvm_stats_cb cb, void *userdata,
                      cvm_stats_job **ret, cvm_error *err) {
        if (!m->store)
                return cvm_error_set(err, -ENOTSUP, "stats need the store");
        if (m->n_jobs >= CVM_STATS_MAX_JOBS)
                return cvm_error_set(err, -EAGAIN,
                                     "%d stats queries are running already; retry later",
                                     CVM_STATS_MAX_JOBS);
        stats_job *job = calloc(1, sizeof(*job));
        if (!job)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *job = (stats_job){.m = m,
                           .store = m->store,
                           .submitted = cvm_store_submitted(m->store),
                           .q = *q,
                           .cb = cb,
                           .userdata = userdata};
        job->work.data = job;
        int r = uv_queue_work(m->loop, &job->work, stats_work, stats_after);
        if (r < 0) {
                free(job);
                return cvm_error_set(err, r, "uv_queue_work: %s", uv_strerror(r));
        }
        CVM_LIST_PREPEND(m->jobs, job);
        m->n_jobs++;
        if (ret)
                *ret = job;
        return 0;
}

void cvm_stats_job_forget(cvm_stats_job *job) {
        if (job)
                job->forgotten = true;
}

void cvm_metrics_free(cvm_metrics *m) {
        if (!m)
                return;
        while (m->jobs) {
                stats_job *job = m->jobs;
                /* A job not started yet is cancelled; a running one is waited for,
                 * because it reads the store the caller is about to close. */
                if (uv_cancel((uv_req_t *)&job->work) != 0) {
                        pthread_mutex_lock(&jobs_lock);
                        while (!job->work_done)
                                pthread_cond_wait(&jobs_done, &jobs_lock);
                        pthread_mutex_unlock(&jobs_lock);
                }
                job->forgotten = true;
                job_unlink(job);
        }
        for (size_t i = 0; i < m->n_fns; i++)
                free(m->fns[i].name);
        free(m->fns);
        for (size_t i = 0; i < m->n_statuses; i++)
                free(m->statuses[i]);
        free(m);
}
