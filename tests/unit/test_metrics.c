/* Metrics: histogram bucketing, label escaping, the caps on label series,
 * the exposition text for a known state, the stats parameters, and stats
 * computed from a real store (exact nearest-rank percentiles), on a worker
 * thread and cancelled at shutdown. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "metrics.h"
#include "vm.h"
#include "unit_tmp.h"

#define MSEC 1000000ULL

static cvm_metrics *new_metrics(uint32_t max_functions) {
        cvm_metrics *m = NULL;
        cvm_error err = {0};
        assert_int_equal(cvm_metrics_new(NULL, NULL, max_functions, &m, &err), 0);
        return m;
}

static void invoke(cvm_metrics *m, const char *fn, const char *start, const char *status,
                   uint64_t total_ns) {
        cvm_invocation_record rec = {.id = "inv-1",
                                     .function = fn,
                                     .start_kind = start,
                                     .status = status,
                                     .total_ns = total_ns,
                                     .exit_code = -1};
        cvm_metrics_invocation(m, &rec);
}

/* The rendered text; the caller frees it. */
static char *render(cvm_metrics *m) {
        cvm_prom_buf b = {0};
        cvm_metrics_render(m, &b);
        assert_false(b.failed);
        return b.data;
}

static void assert_line(const char *text, const char *line) {
        char want[512];
        snprintf(want, sizeof(want), "\n%s\n", line);
        if (!strstr(text, want))
                fail_msg("line %s not in:\n%s", line, text);
}

static void test_histogram_buckets(void **state) {
        (void)state;
        cvm_metrics *m = new_metrics(0);
        invoke(m, "f", "cold", "ok", 1 * MSEC);      /* On a bound: le is inclusive. */
        invoke(m, "f", "cold", "ok", 1 * MSEC + 1);  /* Just past it. */
        invoke(m, "f", "cold", "ok", 400000 * MSEC); /* Past the last bound: +Inf only. */
        invoke(m, "f", "warm", "ok", 0);
        char *t = render(m);
        assert_line(t, "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"0.001\"} 1");
        assert_line(t, "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"0.0025\"} 2");
        assert_line(t, "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"300\"} 2");
        assert_line(t, "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"+Inf\"} 3");
        assert_line(t, "cvmd_invocation_duration_seconds_count{start=\"cold\"} 3");
        /* The sum is exact decimal seconds: 1 ms + 1 ms + 1 ns + 400 s. */
        assert_line(t, "cvmd_invocation_duration_seconds_sum{start=\"cold\"} 400.002000001");
        assert_line(t, "cvmd_invocation_duration_seconds_bucket{start=\"warm\",le=\"0.001\"} 1");
        assert_line(t, "cvmd_invocation_duration_seconds_sum{start=\"warm\"} 0.000000000");
        free(t);

        cvm_metrics_launch(m, true, true, 500000, 30 * MSEC);
        cvm_metrics_launch(m, false, false, 99 * MSEC, 99 * MSEC); /* Failed: not timed. */
        t = render(m);
        assert_line(t, "cvmd_launch_psp_wait_seconds_bucket{le=\"0.0005\"} 1");
        assert_line(t, "cvmd_launch_psp_wait_seconds_count 1");
        assert_line(t, "cvmd_launch_psp_seconds_bucket{le=\"0.025\"} 0");
        assert_line(t, "cvmd_launch_psp_seconds_bucket{le=\"0.05\"} 1");
        assert_line(t, "cvmd_launches_total{result=\"ok\",trigger=\"demand\"} 1");
        assert_line(t, "cvmd_launches_total{result=\"failed\",trigger=\"prewarm\"} 1");
        free(t);
        cvm_metrics_free(m);
        cvm_metrics_launch(NULL, true, true, 0, 0);
        cvm_metrics_invocation(NULL, NULL);
}

static void test_label_escaping(void **state) {
        (void)state;
        cvm_prom_buf b = {0};
        cvm_prom_escape(&b, "a\"b\\c\nd");
        assert_string_equal(b.data, "a\\\"b\\\\c\\nd");
        cvm_prom_buf_done(&b);

        cvm_prom_label ls[] = {{"x", "q\""}, {"y", ""}};
        cvm_prom_sample(&b, "m", ls, 2, 0.5);
        cvm_prom_sample_u64(&b, "n", NULL, 0, 18446744073709551615ULL);
        cvm_prom_sample(&b, "o", NULL, 0, INFINITY);
        assert_string_equal(b.data, "m{x=\"q\\\"\",y=\"\"} 0.5\nn 18446744073709551615\no +Inf\n");
        cvm_prom_buf_done(&b);

        /* Hook input is escaped too, wherever it comes from. */
        cvm_metrics *m = new_metrics(0);
        invoke(m, "we\"ird\n", "cold", "o\\k", MSEC);
        char *t = render(m);
        assert_line(t, "cvmd_invocations_total{function=\"we\\\"ird\\n\",start=\"cold\",status="
                       "\"o\\\\k\"} 1");
        free(t);
        cvm_metrics_free(m);
}

static void test_series_caps(void **state) {
        (void)state;
        cvm_metrics *m = new_metrics(2);
        invoke(m, "c", "cold", "ok", MSEC);
        invoke(m, "a", "warm", "ok", MSEC);
        invoke(m, "d", "warm", "ok", MSEC); /* Past the cap of 2. */
        invoke(m, "e", "warm", "ok", MSEC);
        invoke(m, "a", "warm", "ok", MSEC); /* Tracked ones go on counting. */
        for (int i = 0; i < CVM_METRICS_MAX_STATUSES + 3; i++) {
                char s[16];
                snprintf(s, sizeof(s), "s%02d", i);
                invoke(m, "c", "warm", s, MSEC);
        }
        char *t = render(m);
        assert_line(t, "cvmd_invocations_total{function=\"a\",start=\"warm\",status=\"ok\"} 2");
        assert_line(t, "cvmd_invocations_total{function=\"c\",start=\"cold\",status=\"ok\"} 1");
        assert_line(t,
                    "cvmd_invocations_total{function=\"_other\",start=\"warm\",status=\"ok\"} 2");
        assert_null(strstr(t, "function=\"d\""));
        /* "ok" took one status slot, s00..s14 the rest; s15..s18 are "_other". */
        assert_line(t, "cvmd_invocations_total{function=\"c\",start=\"warm\",status=\"s14\"} 1");
        assert_line(t, "cvmd_invocations_total{function=\"c\",start=\"warm\",status=\"_other\"} 4");
        assert_null(strstr(t, "s15"));
        free(t);
        cvm_metrics_free(m);
}

static void test_exposition_known_state(void **state) {
        (void)state;
        cvm_metrics *m = new_metrics(0);
        invoke(m, "zeta", "warm", "ok", 2 * MSEC);
        invoke(m, "alpha", "cold", "failed", 70 * MSEC);
        invoke(m, "alpha", "cold", "ok", 70 * MSEC);
        invoke(m, NULL, "warm", "ok", MSEC); /* A bare VM's invocation. */
        cvm_metrics_launch(m, false, true, 0, 30 * MSEC);
        char *t = render(m);
        /* Families start with HELP and TYPE; series come by function name, start
         * kind, then status in the order statuses were first seen. */
        const char *want_inv =
                "# HELP cvmd_invocations_total Invocations that ended, by function, start kind "
                "and status.\n"
                "# TYPE cvmd_invocations_total counter\n"
                "cvmd_invocations_total{function=\"\",start=\"warm\",status=\"ok\"} 1\n"
                "cvmd_invocations_total{function=\"alpha\",start=\"cold\",status=\"ok\"} 1\n"
                "cvmd_invocations_total{function=\"alpha\",start=\"cold\",status=\"failed\"} 1\n"
                "cvmd_invocations_total{function=\"zeta\",start=\"warm\",status=\"ok\"} 1\n"
                "# HELP cvmd_invocation_duration_seconds ";
        assert_ptr_equal(strstr(t, want_inv), t);
        const char *want_launch = "# TYPE cvmd_launches_total counter\n"
                                  "cvmd_launches_total{result=\"ok\",trigger=\"demand\"} 0\n"
                                  "cvmd_launches_total{result=\"ok\",trigger=\"prewarm\"} 1\n"
                                  "cvmd_launches_total{result=\"failed\",trigger=\"demand\"} 0\n"
                                  "cvmd_launches_total{result=\"failed\",trigger=\"prewarm\"} 0\n"
                                  "# HELP cvmd_launch_psp_wait_seconds ";
        assert_non_null(strstr(t, want_launch));
        const char *want_cold_tail =
                "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"0.05\"} 0\n"
                "cvmd_invocation_duration_seconds_bucket{start=\"cold\",le=\"0.1\"} 2\n";
        assert_non_null(strstr(t, want_cold_tail));
        assert_line(t, "cvmd_invocation_duration_seconds_sum{start=\"cold\"} 0.140000000");
        assert_line(t, "cvmd_launch_psp_seconds_sum 0.030000000");
        /* Every line is a comment or a sample ending in a value, and the text ends in a newline. */
        size_t n = strlen(t), lines = 0;
        assert_int_equal(t[n - 1], '\n');
        for (char *l = t; *l; l = strchr(l, '\n') + 1, lines++)
                assert_true(*l == '#' || strncmp(l, "cvmd_", 5) == 0);
        /* Five families (two comment lines each): 4 invocation series, two
         * duration histograms of 18 buckets + sum + count, 4 launch series,
         * two PSP histograms of 17 buckets + sum + count. */
        assert_int_equal(lines, 5 * 2 + 4 + 2 * 20 + 4 + 2 * 19);
        free(t);
        cvm_metrics_free(m);
}

static void test_parse_params(void **state) {
        (void)state;
        int64_t now = 1700000000000, t;
        assert_int_equal(cvm_stats_parse_time("1699999000000", now, &t), 0);
        assert_int_equal(t, 1699999000000);
        assert_int_equal(cvm_stats_parse_time("30s", now, &t), 0);
        assert_int_equal(t, now - 30000);
        assert_int_equal(cvm_stats_parse_time("15m", now, &t), 0);
        assert_int_equal(t, now - 900000);
        assert_int_equal(cvm_stats_parse_time("1h", now, &t), 0);
        assert_int_equal(t, now - 3600000);
        assert_int_equal(cvm_stats_parse_time("2d", now, &t), 0);
        assert_int_equal(t, now - 2 * 86400000LL);
        assert_int_equal(cvm_stats_parse_time("250ms", now, &t), 0);
        assert_int_equal(t, now - 250);
        const char *bad[] = {"",    "h", "-5", "1.5h", "1y", "1h ", " 1h", "1H", "1234567890123456",
                             "0x10"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
                assert_int_equal(cvm_stats_parse_time(bad[i], now, &t), -EINVAL);
        assert_int_equal(cvm_stats_parse_time("999999999999999d", now, &t), -ERANGE);

        cvm_stats_query q;
        cvm_error err = {0};
        assert_int_equal(cvm_stats_parse_query(NULL, NULL, NULL, now, &q, &err), 0);
        assert_int_equal(q.until_ms, now);
        assert_int_equal(q.since_ms, now - 3600000);
        assert_string_equal(q.function, "");
        assert_int_equal(cvm_stats_parse_query("fn-1", NULL, "1h", now, &q, &err), 0);
        assert_string_equal(q.function, "fn-1");
        assert_int_equal(q.since_ms, now - 7200000);
        struct {
                const char *fn, *since, *until, *msg;
        } cases[] = {
                {"Bad", NULL, NULL, "query parameter 'function': invalid function name"},
                {NULL, "soon", NULL, "query parameter 'since': \"soon\" is neither"},
                {NULL, NULL, "1x", "query parameter 'until'"},
                {NULL, "1h", "2h", "query parameter 'since' (1699996400000) must be before"},
                {NULL, "1h", "1h", "must be before 'until'"},
                {NULL, "91d", NULL, "more than 90 days"},
                {NULL, "9999d", NULL, "more than 3650 days"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
                assert_int_equal(cvm_stats_parse_query(cases[i].fn, cases[i].since, cases[i].until,
                                                       now, &q, &err),
                                 -EINVAL);
                if (!strstr(err.message, cases[i].msg))
                        fail_msg("case %zu: %s", i, err.message);
        }
}

/* A store in a temporary directory. */
typedef struct fixture {
        char dir[UNIT_TMP_MAX];
        uv_loop_t loop;
        cvm_store *store;
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof(*f));
        unit_tmp_path(f->dir, sizeof(f->dir), "cvm-metrics-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        char path[UNIT_TMP_MAX + 32];
        snprintf(path, sizeof(path), "%s/cvmd.db", f->dir);
        uv_loop_init(&f->loop);
        cvm_error err = {0};
        cvm_store_options o = {.path = path};
        if (cvm_store_open(&f->loop, &o, &f->store, &err) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;
        cvm_store_close(f->store);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        uv_loop_close(&f->loop);
        if (unit_rm_rf(f->dir) != 0)
                return -1;
        free(f);
        return 0;
}

static void add_launch(cvm_store *s, const char *fn, const char *trigger, int64_t at_ms,
                       int64_t psp_us, bool ok) {
        cvm_store_val v[] = {CVM_STORE_S("vm-1"),
                             CVM_STORE_S(fn),
                             CVM_STORE_S(trigger),
                             CVM_STORE_I(at_ms),
                             CVM_STORE_I(100),
                             CVM_STORE_I(psp_us / 10),
                             CVM_STORE_I(psp_us),
                             CVM_STORE_I(1000),
                             CVM_STORE_I(psp_us * 2),
                             CVM_STORE_I(4),
                             CVM_STORE_I(1),
                             CVM_STORE_S(ok ? "ok" : "failed"),
                             CVM_STORE_S(ok ? NULL : "boom")};
        assert_int_equal(cvm_store_write(s, CVM_STORE_LAUNCH, v, 13, NULL, NULL), 0);
}

static double num(json_t *j, const char *path) {
        json_t *v = j;
        char buf[128];
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *save, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save))
                v = json_object_get(v, k);
        if (!v)
                fail_msg("no %s", path);
        return json_number_value(v);
}

/* 100 warm invocations of "fn" lasting 1..100 ms and 10 cold ones, one
 * failed; another function; rows outside the range; and launches. */
static void fill(fixture *f, cvm_metrics *m, int64_t now) {
        cvm_vms *vms;
        cvm_error err = {0};
        assert_int_equal(cvm_vms_new(NULL, f->store, NULL, NULL, m, &vms, &err), 0);
        for (int i = 1; i <= 110; i++) {
                bool cold = i > 100;
                cvm_invocation_record r = {
                        .id = "inv",
                        .function = "fn",
                        .vm_id = "vm-1",
                        .start_kind = cold ? "cold" : "warm",
                        .status = i == 110 ? "failed" : "ok",
                        .started_ms = now - 1000 - i,
                        .queue_ns = cold ? 0 : 5000,
                        .psp_ns = cold ? 30 * MSEC : 0,
                        .boot_ns = cold ? 20 * MSEC : 0,
                        .exec_ns = (uint64_t)i * MSEC / 2,
                        .total_ns = cold ? (uint64_t)(i - 100) * 100 * MSEC : (uint64_t)i * MSEC,
                        .exit_code = 0,
                };
                /* Distinct ids: the column is the primary key. */
                char id[32];
                snprintf(id, sizeof(id), "inv-%d", i);
                r.id = id;
                cvm_vms_record_invocation(vms, &r);
        }
        cvm_invocation_record other = {.id = "inv-o",
                                       .function = "other",
                                       .start_kind = "cold",
                                       .status = "ok",
                                       .started_ms = now - 5000,
                                       .total_ns = MSEC,
                                       .exit_code = -1};
        cvm_vms_record_invocation(vms, &other);
        cvm_invocation_record old = {.id = "inv-old",
                                     .function = "fn",
                                     .start_kind = "cold",
                                     .status = "ok",
                                     .started_ms = now - 7200 * 1000,
                                     .total_ns = MSEC,
                                     .exit_code = -1};
        cvm_vms_record_invocation(vms, &old);
        cvm_vms_free(vms);
        add_launch(f->store, "fn", "demand", now - 2000, 30000, true);
        add_launch(f->store, "fn", "prewarm", now - 2000, 40000, true);
        add_launch(f->store, "fn", "prewarm", now - 2000, 0, false);
        add_launch(f->store, "other", "demand", now - 2000, 50000, true);
        cvm_store_flush(f->store);
}

static void test_stats_compute(void **state) {
        fixture *f = *state;
        int64_t now = cvm_wall_ms();
        cvm_metrics *m = new_metrics(0);
        fill(f, m, now);
        /* The hook counted what went to the store. */
        char *t = render(m);
        assert_line(t, "cvmd_invocations_total{function=\"fn\",start=\"warm\",status=\"ok\"} 100");
        assert_line(t, "cvmd_invocations_total{function=\"fn\",start=\"cold\",status=\"ok\"} 10");
        free(t);
        cvm_metrics_free(m);

        cvm_stats_query q;
        cvm_error err = {0};
        assert_int_equal(cvm_stats_parse_query("fn", NULL, NULL, now, &q, &err), 0);
        q.function_exists = true;
        json_t *j = NULL;
        assert_int_equal(cvm_stats_compute(f->store, &q, &j, &err), 0);
        assert_int_equal(num(j, "invocations.total"), 110);
        assert_int_equal(num(j, "invocations.by_start.warm"), 100);
        assert_int_equal(num(j, "invocations.by_start.cold"), 10);
        assert_int_equal(num(j, "invocations.by_status.ok"), 109);
        assert_int_equal(num(j, "invocations.by_status.failed"), 1);
        assert_float_equal(num(j, "invocations.cold_fraction"), 10.0 / 110, 1e-9);
        /* Nearest rank over 1..100 ms. */
        assert_float_equal(num(j, "invocations.latency_ms.warm.total.p50"), 50, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.warm.total.p90"), 90, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.warm.total.p99"), 99, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.warm.queue.p50"), 0.005, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.warm.psp.p99"), 0, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.warm.exec.p99"), 49.5, 1e-9);
        /* Cold: 100..1000 ms in steps of 100; p90 is the 9th, p99 the 10th. */
        assert_float_equal(num(j, "invocations.latency_ms.cold.total.p50"), 500, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.cold.total.p90"), 900, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.cold.total.p99"), 1000, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.cold.psp.p50"), 30, 1e-9);
        assert_float_equal(num(j, "invocations.latency_ms.cold.boot.p90"), 20, 1e-9);
        assert_int_equal(num(j, "invocations.latency_ms.cold.count"), 10);
        assert_int_equal(num(j, "launches.total"), 3);
        assert_int_equal(num(j, "launches.failed"), 1);
        assert_int_equal(num(j, "launches.by_trigger.prewarm"), 2);
        /* Complete launches only: 30 and 40 ms. */
        assert_float_equal(num(j, "launches.psp_ms.p50"), 30, 1e-9);
        assert_float_equal(num(j, "launches.psp_ms.p99"), 40, 1e-9);
        assert_float_equal(num(j, "launches.psp_wait_ms.p99"), 4, 1e-9);
        assert_false(json_is_true(json_object_get(json_object_get(j, "invocations"), "truncated")));
        assert_int_equal(json_array_size(json_object_get(j, "notes")), 0);
        assert_string_equal(json_string_value(json_object_get(j, "function")), "fn");
        json_decref(j);

        /* Every function; a range that holds the old row too. */
        assert_int_equal(cvm_stats_parse_query(NULL, "3h", NULL, now, &q, &err), 0);
        assert_int_equal(cvm_stats_compute(f->store, &q, &j, &err), 0);
        assert_int_equal(num(j, "invocations.total"), 112);
        assert_int_equal(num(j, "launches.total"), 4);
        assert_true(json_is_null(json_object_get(j, "function")));
        json_decref(j);

        /* A name nobody has (now): zero counts, null percentiles, and a note. */
        assert_int_equal(cvm_stats_parse_query("gone", NULL, NULL, now, &q, &err), 0);
        q.function_exists = false;
        assert_int_equal(cvm_stats_compute(f->store, &q, &j, &err), 0);
        assert_int_equal(num(j, "invocations.total"), 0);
        assert_true(
                json_is_null(json_object_get(json_object_get(j, "invocations"), "cold_fraction")));
        assert_true(json_is_null(json_object_get(
                json_object_get(json_object_get(json_object_get(json_object_get(j, "invocations"),
                                                                "latency_ms"),
                                                "cold"),
                                "total"),
                "p50")));
        assert_non_null(strstr(json_string_value(json_array_get(json_object_get(j, "notes"), 0)),
                               "deleted"));
        json_decref(j);
}

static int jobs_answered;
static int jobs_expect = 110;

static void on_stats(json_t *result, const cvm_error *err, void *ud) {
        (void)ud;
        assert_null(err);
        assert_int_equal(num(result, "invocations.total"), jobs_expect);
        jobs_answered++;
}

static void test_stats_jobs(void **state) {
        fixture *f = *state;
        int64_t now = cvm_wall_ms();
        cvm_metrics *m;
        cvm_error err = {0};
        assert_int_equal(cvm_metrics_new(&f->loop, f->store, 0, &m, &err), 0);
        fill(f, m, now);
        cvm_stats_query q;
        assert_int_equal(cvm_stats_parse_query("fn", NULL, NULL, now, &q, &err), 0);
        jobs_answered = 0;
        cvm_stats_job *job;
        for (int i = 0; i < CVM_STATS_MAX_JOBS; i++)
                assert_int_equal(cvm_metrics_stats(m, &q, on_stats, NULL, &job, &err), 0);
        /* Beyond the limit: refused, to be retried. */
        assert_int_equal(cvm_metrics_stats(m, &q, on_stats, NULL, &job, &err), -EAGAIN);
        cvm_stats_job_forget(job);          /* The last accepted one finishes unheard. */
        assert_int_equal(jobs_answered, 0); /* Never inside the call. */
        /* The store's async handle keeps the loop alive: turn it until the answers are in. */
        while (jobs_answered < CVM_STATS_MAX_JOBS - 1)
                uv_run(&f->loop, UV_RUN_ONCE);

        /* Freed with queries in flight: they end (cancelled or waited for)
         * before the store may close, and their callbacks never run. */
        jobs_answered = 0;
        /* One fewer than the limit: the forgotten query may still be running. */
        for (int i = 0; i < CVM_STATS_MAX_JOBS - 1; i++)
                assert_int_equal(cvm_metrics_stats(m, &q, on_stats, NULL, NULL, &err), 0);
        cvm_metrics_free(m);
        for (int i = 0; i < 20; i++) {
                uv_run(&f->loop, UV_RUN_NOWAIT);
                usleep(5000);
        }
        assert_int_equal(jobs_answered, 0);

        assert_int_equal(cvm_metrics_new(NULL, NULL, 0, &m, &err), 0);
        assert_int_equal(cvm_metrics_stats(m, &q, on_stats, NULL, NULL, &err), -ENOTSUP);
        cvm_metrics_free(m);
        cvm_metrics_free(NULL);
}

/* A query sees every invocation recorded before it, though the store's
 * writer lingers before it commits. */
static void test_stats_see_recent_writes(void **state) {
        fixture *f = *state;
        int64_t now = cvm_wall_ms();
        cvm_metrics *m;
        cvm_vms *vms;
        cvm_error err = {0};
        assert_int_equal(cvm_metrics_new(&f->loop, f->store, 0, &m, &err), 0);
        assert_int_equal(cvm_vms_new(NULL, f->store, NULL, NULL, m, &vms, &err), 0);
        for (int i = 0; i < 3; i++) {
                char id[32];
                snprintf(id, sizeof(id), "inv-%d", i);
                cvm_invocation_record r = {.id = id,
                                           .function = "fn",
                                           .start_kind = "warm",
                                           .status = "ok",
                                           .started_ms = now - 10,
                                           .total_ns = MSEC,
                                           .exit_code = 0};
                cvm_vms_record_invocation(vms, &r);
        }
        cvm_vms_free(vms);
        cvm_stats_query q;
        assert_int_equal(cvm_stats_parse_query("fn", NULL, NULL, now, &q, &err), 0);
        jobs_answered = 0;
        jobs_expect = 3;
        assert_int_equal(cvm_metrics_stats(m, &q, on_stats, NULL, NULL, &err), 0);
        while (jobs_answered < 1)
                uv_run(&f->loop, UV_RUN_ONCE);
        jobs_expect = 110;
        cvm_metrics_free(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_histogram_buckets),
                cmocka_unit_test(test_label_escaping),
                cmocka_unit_test(test_series_caps),
                cmocka_unit_test(test_exposition_known_state),
                cmocka_unit_test(test_parse_params),
                cmocka_unit_test_setup_teardown(test_stats_compute, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stats_jobs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stats_see_recent_writes, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
