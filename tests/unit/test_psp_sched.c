/* The PSP scheduler on a virtual clock: class order, shortest first, the
 * window, aging, deferred releases and ASID pressure, promotion,
 * cancellation, predictions, the EWMA correction, the config parser, the
 * "none" baseline, and the 50-launch comparison on the simulated PSP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "psp_sched.h"
#include "psp_sim.h"

#define MS CVM_NSEC_PER_MSEC
#define US CVM_NSEC_PER_USEC

typedef struct work work;

/* The scheduler under test and a log of the jobs it started. */
typedef struct ctx {
        cvm_clock *clock;
        cvm_sched *sched;
        uint32_t asids; /* What the host answers to the ASID question. */
        bool in_call;   /* Set around submit, done and cancel: no start may run then. */
        char log[1024]; /* Names of started jobs, space-separated. */
        int running, max_running;
        work *works[256];
        int nworks;
} ctx;

/* A job whose PSP work is a timer: it runs for duration (0: the test ends it
 * by hand) and reports actual (duration when 0) as its PSP time. */
struct work {
        ctx *c;
        const char *name;
        uint64_t duration, actual;
        bool fail_at_start; /* Reports done inside the start callback. */
        cvm_sched_job *job;
        cvm_timer *timer;
        int starts;
        uint64_t submit_ns, start_ns, finish_ns;
};

static uint32_t asids_of(void *userdata) {
        return ((ctx *)userdata)->asids;
}

static void setup_cfg(ctx *c, const cvm_sched_config *cfg) {
        memset(c, 0, sizeof(*c));
        c->asids = 100;
        assert_int_equal(cvm_clock_virtual_new(0, &c->clock, NULL), 0);
        cvm_error err = {0};
        if (cvm_sched_new(c->clock, cfg, asids_of, c, &c->sched, &err) < 0)
                fail_msg("cvm_sched_new: %s", err.message);
}

static void setup(ctx *c, uint32_t window) {
        cvm_sched_config cfg;
        cvm_sched_config_default(&cfg);
        cfg.window = window;
        setup_cfg(c, &cfg);
}

static void teardown(ctx *c) {
        for (int i = 0; i < c->nworks; i++)
                cvm_timer_free(c->works[i]->timer);
        cvm_sched_free(c->sched);
        cvm_clock_virtual_free(c->clock);
}

static void on_work_timer(cvm_timer *timer, void *userdata) {
        (void)timer;
        work *w = userdata;
        w->finish_ns = cvm_clock_now(w->c->clock);
        w->c->running--;
        cvm_sched_job *job = w->job;
        w->job = NULL;
        w->c->in_call = true;
        cvm_sched_done(job, w->actual ? w->actual : w->duration);
        w->c->in_call = false;
}

static void on_start(cvm_sched_job *job, void *userdata) {
        work *w = userdata;
        ctx *c = w->c;
        assert_false(c->in_call);
        assert_ptr_equal(job, w->job);
        w->starts++;
        w->start_ns = cvm_clock_now(c->clock);
        size_t len = strlen(c->log);
        snprintf(c->log + len, sizeof(c->log) - len, "%s%s", len ? " " : "", w->name);
        if (w->fail_at_start) {
                w->job = NULL;
                cvm_sched_done(job, 0);
                return;
        }
        if (++c->running > c->max_running)
                c->max_running = c->running;
        if (w->duration)
                cvm_timer_start(w->timer, w->duration);
}

static void submit(ctx *c, work *w, cvm_sched_class cls, uint64_t expected, const char *name,
                   uint64_t duration) {
        *w = (work){.c = c, .name = name, .duration = duration};
        assert_int_equal(cvm_timer_new(c->clock, on_work_timer, w, &w->timer, NULL), 0);
        assert_true(c->nworks < (int)CVM_ARRAY_SIZE(c->works));
        c->works[c->nworks++] = w;
        w->submit_ns = cvm_clock_now(c->clock);
        cvm_error err = {0};
        c->in_call = true;
        int r = cvm_sched_submit(c->sched, cls, expected, name, on_start, w, &w->job, &err);
        c->in_call = false;
        if (r < 0)
                fail_msg("submit %s: %s", name, err.message);
}

/* Ends a job's work by hand (for jobs of duration 0). */
static void finish(work *w, uint64_t actual) {
        assert_non_null(w->job);
        w->c->running--;
        w->finish_ns = cvm_clock_now(w->c->clock);
        cvm_sched_job *job = w->job;
        w->job = NULL;
        w->c->in_call = true;
        cvm_sched_done(job, actual);
        w->c->in_call = false;
}

static void run(ctx *c) {
        cvm_clock_virtual_run(c->clock, 100000);
}

/* Advances the clock to the absolute time t. */
static void at(ctx *c, uint64_t t) {
        uint64_t now = cvm_clock_now(c->clock);
        assert_true(t >= now);
        cvm_clock_virtual_advance(c->clock, t - now);
}

static void test_order(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        work w[8];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "blocker", 10 * MS);
        submit(&c, &w[1], CVM_SCHED_PREWARM, 10 * MS, "p10", 10 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 30 * MS, "d30", 30 * MS);
        submit(&c, &w[3], CVM_SCHED_DEMAND, 20 * MS, "d20a", 20 * MS);
        submit(&c, &w[4], CVM_SCHED_ATTEST, 3 * MS, "att", 3 * MS);
        submit(&c, &w[5], CVM_SCHED_DEMAND, 20 * MS, "d20b", 20 * MS);
        submit(&c, &w[6], CVM_SCHED_PREWARM, 5 * MS, "p5", 5 * MS);
        submit(&c, &w[7], CVM_SCHED_RELEASE, 1 * MS, "rel", 1 * MS);
        /* Nothing starts inside submit. */
        assert_string_equal(c.log, "");
        run(&c);
        /* Demand, shortest first with FIFO ties, then attest, then prewarm
         * shortest first, then the deferred release. */
        assert_string_equal(c.log, "blocker d20a d20b d30 att p5 p10 rel");
        uint64_t want[] = {0, 88, 50, 10, 80, 30, 83, 98};
        for (int i = 0; i < 8; i++) {
                assert_int_equal(w[i].starts, 1);
                assert_int_equal(w[i].start_ns, want[i] * MS);
        }
        assert_int_equal(c.max_running, 1);
        assert_int_equal(cvm_clock_now(c.clock), 99 * MS);
        teardown(&c);
}

static void test_window_two(void **state) {
        (void)state;
        ctx c;
        setup(&c, 2);
        work w[5];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 30 * MS, "a", 30 * MS);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 10 * MS, "b", 10 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 20 * MS, "c", 20 * MS);
        submit(&c, &w[3], CVM_SCHED_PREWARM, 5 * MS, "d", 5 * MS);
        submit(&c, &w[4], CVM_SCHED_ATTEST, 3 * MS, "e", 3 * MS);
        run(&c);
        /* b and c at once; a when b ends, e (attest) when c ends, d when e ends. */
        assert_string_equal(c.log, "b c a e d");
        uint64_t want[] = {10, 0, 0, 23, 20};
        for (int i = 0; i < 5; i++)
                assert_int_equal(w[i].start_ns, want[i] * MS);
        assert_int_equal(c.max_running, 2);
        teardown(&c);
}

static void test_aging(void **state) {
        (void)state;
        /* A prewarm that waited past aging_ms beats a fresh demand, and among
         * aged jobs the oldest goes first. */
        ctx c;
        setup(&c, 1);
        work w[4];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 3000 * MS, "blocker", 3000 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        submit(&c, &w[1], CVM_SCHED_PREWARM, 10 * MS, "p", 10 * MS);
        cvm_clock_virtual_advance(c.clock, 499 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 50 * MS, "d-old", 50 * MS);
        cvm_clock_virtual_advance(c.clock, 2000 * MS);
        submit(&c, &w[3], CVM_SCHED_DEMAND, 10 * MS, "d-new", 10 * MS);
        run(&c);
        assert_string_equal(c.log, "blocker p d-old d-new");
        assert_int_equal(w[1].start_ns, 3000 * MS);
        assert_int_equal(w[2].start_ns, 3010 * MS);
        assert_int_equal(w[3].start_ns, 3060 * MS);
        teardown(&c);

        /* Before aging_ms, class and cost decide. */
        setup(&c, 1);
        submit(&c, &w[0], CVM_SCHED_DEMAND, 1500 * MS, "blocker", 1500 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        submit(&c, &w[1], CVM_SCHED_PREWARM, 10 * MS, "p", 10 * MS);
        cvm_clock_virtual_advance(c.clock, 999 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 10 * MS, "d", 10 * MS);
        run(&c);
        assert_string_equal(c.log, "blocker d p");
        teardown(&c);
}

static void test_release_deferred(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        work w[8];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 33 * MS, "l1", 33 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        submit(&c, &w[1], CVM_SCHED_RELEASE, 1 * MS, "r1", 1 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        submit(&c, &w[2], CVM_SCHED_PREWARM, 33 * MS, "l2", 33 * MS);
        /* Not while a launch runs or waits. */
        cvm_clock_virtual_advance(c.clock, 48 * MS);
        assert_string_equal(c.log, "l1 l2");
        assert_int_equal(w[1].starts, 0);
        /* Once the PSP is idle from launches. */
        cvm_clock_virtual_advance(c.clock, 16 * MS);
        assert_string_equal(c.log, "l1 l2 r1");
        assert_int_equal(w[1].start_ns, 66 * MS);
        run(&c);

        /* Submitted to an idle PSP, a release starts at once. */
        at(&c, 100 * MS);
        submit(&c, &w[3], CVM_SCHED_RELEASE, 1 * MS, "r2", 1 * MS);
        run(&c);
        assert_int_equal(w[3].start_ns, 100 * MS);

        /* Under ASID pressure releases go first, before any launch. */
        at(&c, 200 * MS);
        submit(&c, &w[4], CVM_SCHED_DEMAND, 33 * MS, "l3", 33 * MS);
        at(&c, 201 * MS);
        submit(&c, &w[5], CVM_SCHED_DEMAND, 10 * MS, "l4", 10 * MS);
        submit(&c, &w[6], CVM_SCHED_RELEASE, 1 * MS, "r3", 1 * MS);
        c.asids = 9;
        json_auto_t *j = cvm_sched_to_json(c.sched);
        assert_false(json_boolean_value(json_object_get(j, "asid_pressure")));
        c.asids = 8;
        run(&c);
        assert_string_equal(c.log, "l1 l2 r1 r2 l3 r3 l4");
        assert_int_equal(w[6].start_ns, 233 * MS);
        assert_int_equal(w[5].start_ns, 234 * MS);
        teardown(&c);
}

static void test_release_window_two(void **state) {
        (void)state;
        /* Deferred releases run one at a time and only on an idle PSP; a
         * launch may join a running release. */
        ctx c;
        setup(&c, 2);
        work w[5];
        submit(&c, &w[0], CVM_SCHED_RELEASE, 1 * MS, "r1", 1 * MS);
        submit(&c, &w[1], CVM_SCHED_RELEASE, 5 * MS, "r2", 5 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        assert_string_equal(c.log, "r1");
        submit(&c, &w[2], CVM_SCHED_DEMAND, 33 * MS, "l1", 33 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        assert_string_equal(c.log, "r1 l1");
        cvm_clock_virtual_advance(c.clock, 32 * MS);
        assert_int_equal(w[1].starts, 0);
        run(&c);
        assert_string_equal(c.log, "r1 l1 r2");
        assert_int_equal(w[1].start_ns, 33 * MS);

        /* An aged release no longer waits for the launches: it takes a free
         * slot when it ages, without any other event. */
        uint64_t t0 = cvm_clock_now(c.clock);
        submit(&c, &w[3], CVM_SCHED_DEMAND, 5000 * MS, "long", 5000 * MS);
        submit(&c, &w[4], CVM_SCHED_RELEASE, 1 * MS, "r3", 1 * MS);
        run(&c);
        assert_string_equal(c.log, "r1 l1 r2 long r3");
        assert_int_equal(w[4].start_ns, t0 + 2000 * MS);
        assert_int_equal(c.max_running, 2);
        teardown(&c);
}

static void test_promote(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        work w[4];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "blocker", 10 * MS);
        submit(&c, &w[1], CVM_SCHED_PREWARM, 5 * MS, "p", 5 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 50 * MS, "d", 50 * MS);
        submit(&c, &w[3], CVM_SCHED_PREWARM, 5 * MS, "p2", 5 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 20 * MS), 10 * MS);
        cvm_sched_promote(w[1].job, CVM_SCHED_DEMAND);
        /* Promotion only moves up: these change nothing. */
        cvm_sched_promote(w[2].job, CVM_SCHED_PREWARM);
        cvm_sched_promote(w[3].job, CVM_SCHED_RELEASE);
        cvm_sched_promote(w[3].job, (cvm_sched_class)42);
        cvm_sched_promote(NULL, CVM_SCHED_DEMAND);
        /* The promoted launch is now ahead of a new 20 ms demand. */
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 20 * MS), 15 * MS);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        json_t *classes = json_object_get(j, "classes");
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(classes, "demand"), "queued")),
                2);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(classes, "prewarm"), "queued")),
                1);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(classes, "demand"), "running")),
                1);
        run(&c);
        assert_string_equal(c.log, "blocker p d p2");
        assert_int_equal(w[1].start_ns, 10 * MS);
        assert_int_equal(w[3].start_ns, 65 * MS);
        teardown(&c);
}

static void test_cancel(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        work w[4];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "a", 10 * MS);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 20 * MS, "b", 20 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 30 * MS, "c", 30 * MS);
        /* Queued: its start never runs. */
        c.in_call = true;
        cvm_sched_cancel(w[1].job);
        c.in_call = false;
        w[1].job = NULL;
        cvm_clock_virtual_advance(c.clock, 5 * MS);
        assert_string_equal(c.log, "a");
        /* Running: the owner stops its work, the slot is refilled at once. */
        cvm_timer_stop(w[0].timer);
        c.running--;
        c.in_call = true;
        cvm_sched_cancel(w[0].job);
        c.in_call = false;
        w[0].job = NULL;
        cvm_sched_cancel(NULL);
        run(&c);
        assert_string_equal(c.log, "a c");
        assert_int_equal(w[1].starts, 0);
        assert_int_equal(w[2].start_ns, 5 * MS);

        /* Cancelled before the next clock turn: never started. */
        submit(&c, &w[3], CVM_SCHED_DEMAND, 10 * MS, "d", 10 * MS);
        cvm_sched_cancel(w[3].job);
        w[3].job = NULL;
        run(&c);
        assert_int_equal(w[3].starts, 0);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        assert_int_equal(json_integer_value(json_object_get(j, "cancelled")), 3);
        assert_int_equal(json_integer_value(json_object_get(j, "completed")), 1);
        assert_int_equal(json_integer_value(json_object_get(j, "started")), 2);
        teardown(&c);
}

/* A start callback that submits another job: it starts on a later turn. */
static work chained;

static void on_start_submit(cvm_sched_job *job, void *userdata) {
        work *w = userdata;
        on_start(job, w);
        ctx *c = w->c;
        size_t before = strlen(c->log);
        submit(c, &chained, CVM_SCHED_DEMAND, 1 * MS, "chained", 1 * MS);
        assert_int_equal(strlen(c->log), before);
}

static void test_reentrant_callbacks(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        work w[3];
        /* A launch that fails at once reports done inside its start; the
         * next job starts at the same instant. */
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "fails", 0);
        w[0].fail_at_start = true;
        submit(&c, &w[1], CVM_SCHED_DEMAND, 20 * MS, "next", 20 * MS);
        run(&c);
        assert_string_equal(c.log, "fails next");
        assert_int_equal(w[1].start_ns, 0);

        w[2] = (work){.c = &c, .name = "parent", .duration = 2 * MS};
        assert_int_equal(cvm_timer_new(c.clock, on_work_timer, &w[2], &w[2].timer, NULL), 0);
        c.works[c.nworks++] = &w[2];
        assert_int_equal(cvm_sched_submit(c.sched, CVM_SCHED_DEMAND, 2 * MS, "parent",
                                          on_start_submit, &w[2], &w[2].job, NULL),
                         0);
        run(&c);
        assert_string_equal(c.log, "fails next parent chained");
        assert_int_equal(chained.start_ns, 22 * MS);
        teardown(&c);
}

static void test_predict_start(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        /* Idle: now (the next turn). */
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 33 * MS), 0);
        work w[4];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 33 * MS, "a", 33 * MS);
        /* a has not started yet: a shorter demand would still go first. */
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 20 * MS), 0);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 40 * MS), 33 * MS);
        cvm_clock_virtual_advance(c.clock, 10 * MS);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 20 * MS, "b", 20 * MS);
        submit(&c, &w[2], CVM_SCHED_PREWARM, 10 * MS, "p", 10 * MS);
        /* a has 23 ms left; then b (20), then p (10). */
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 5 * MS), 33 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 20 * MS), 53 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_ATTEST, 3 * MS), 53 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_PREWARM, 15 * MS), 63 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_RELEASE, 1 * MS), 63 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, (cvm_sched_class)-1, 1 * MS), UINT64_MAX);

        /* The listing shows the same forecast, and it comes true. */
        json_auto_t *j = cvm_sched_to_json(c.sched);
        json_t *jobs = json_object_get(j, "jobs");
        assert_int_equal(json_array_size(jobs), 3);
        json_t *a = json_array_get(jobs, 0), *b = json_array_get(jobs, 1),
               *p = json_array_get(jobs, 2);
        assert_string_equal(json_string_value(json_object_get(a, "owner")), "a");
        assert_true(json_boolean_value(json_object_get(a, "running")));
        assert_true(json_real_value(json_object_get(a, "remaining_ms")) == 23.0);
        assert_string_equal(json_string_value(json_object_get(b, "owner")), "b");
        assert_true(json_real_value(json_object_get(b, "predicted_start_in_ms")) == 23.0);
        assert_string_equal(json_string_value(json_object_get(p, "class")), "prewarm");
        assert_true(json_real_value(json_object_get(p, "predicted_start_in_ms")) == 43.0);
        assert_true(json_real_value(json_object_get(p, "waiting_ms")) == 0.0);
        run(&c);
        assert_int_equal(w[1].start_ns, 33 * MS);
        assert_int_equal(w[2].start_ns, 53 * MS);
        teardown(&c);

        /* Window 2: the work ahead is shared by the window (an approximation). */
        setup(&c, 2);
        submit(&c, &w[0], CVM_SCHED_DEMAND, 30 * MS, "a", 0);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 30 * MS, "b", 0);
        cvm_clock_virtual_advance(c.clock, 10 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 10 * MS), 30 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 10 * MS, "c", 0);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_PREWARM, 10 * MS), 35 * MS);
        cvm_clock_virtual_advance(c.clock, 20 * MS);
        finish(&w[0], 30 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        assert_int_equal(w[2].start_ns, 30 * MS);
        finish(&w[1], 30 * MS);
        finish(&w[2], 10 * MS);
        teardown(&c);

        /* A free slot takes a launch now, but a release only on an idle PSP. */
        setup(&c, 2);
        submit(&c, &w[0], CVM_SCHED_PREWARM, 30 * MS, "a", 30 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_PREWARM, 10 * MS), 0);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_RELEASE, 1 * MS), 15 * MS);
        run(&c);
        teardown(&c);

        /* "none": everything starts now. */
        cvm_sched_config cfg;
        cvm_sched_config_default(&cfg);
        cfg.enabled = false;
        setup_cfg(&c, &cfg);
        submit(&c, &w[0], CVM_SCHED_DEMAND, 30 * MS, "a", 30 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_PREWARM, 30 * MS), 1 * MS);
        run(&c);
        teardown(&c);
}

static double correction(ctx *c) {
        json_auto_t *j = cvm_sched_to_json(c->sched);
        return json_real_value(json_object_get(j, "correction"));
}

static void test_ewma_correction(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        assert_true(correction(&c) == 1.0);
        work w[6];
        /* Launches take twice what their images' costs say. */
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "a", 20 * MS);
        run(&c);
        assert_true(correction(&c) == 1.25);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 10 * MS, "b", 20 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        uint64_t t = cvm_clock_now(c.clock);
        /* b's 10 ms count as 12.5 ms. */
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 1 * MS),
                         t + 12500 * US);
        submit(&c, &w[2], CVM_SCHED_PREWARM, 8 * MS, "p", 8 * MS);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        json_t *p = json_array_get(json_object_get(j, "jobs"), 1);
        assert_true(json_real_value(json_object_get(p, "expected_ms")) == 10.0);
        run(&c);
        /* b's sample moved it on: 1.25 + (2 - 1.25) / 4; p's 1.0 back down. */
        assert_true(correction(&c) == (1.4375 + (1.0 - 1.4375) / 4));
        json_decref(j);
        j = cvm_sched_to_json(c.sched);
        assert_int_equal(json_integer_value(json_object_get(j, "correction_samples")), 3);

        /* Attestations and releases are not launches: not corrected, no sample. */
        double f = correction(&c);
        submit(&c, &w[3], CVM_SCHED_ATTEST, 10 * MS, "att", 30 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        t = cvm_clock_now(c.clock);
        assert_int_equal(cvm_sched_predict_start(c.sched, CVM_SCHED_DEMAND, 1 * MS), t + 10 * MS);
        run(&c);
        assert_true(correction(&c) == f);
        /* An unknown actual time (0) teaches nothing; an absurd one is clamped
         * to 16 x expected. */
        submit(&c, &w[4], CVM_SCHED_DEMAND, 10 * MS, "unknown", 0);
        cvm_clock_virtual_advance(c.clock, 0);
        finish(&w[4], 0);
        assert_true(correction(&c) == f);
        submit(&c, &w[5], CVM_SCHED_DEMAND, 1 * MS, "absurd", 0);
        cvm_clock_virtual_advance(c.clock, 0);
        finish(&w[5], 1000 * MS);
        assert_true(correction(&c) == f + (16.0 - f) / 4);
        teardown(&c);
}

static json_t *parse(const char *text) {
        json_t *v = json_loads(text, 0, NULL);
        assert_non_null(v);
        return v;
}

static void test_config_parse(void **state) {
        (void)state;
        cvm_sched_config cfg, before;
        cvm_sched_config_default(&cfg);
        assert_true(cfg.enabled);
        assert_int_equal(cfg.window, 1);
        assert_int_equal(cfg.aging_ms, 2000);
        assert_int_equal(cfg.asid_reserve, 8);
        assert_int_equal(cfg.max_queue, 4096);
        cvm_error err = {0};
        assert_int_equal(cvm_sched_config_parse(NULL, "psp", &cfg, &err), 0);

        /* Other modules' keys are left alone. */
        json_auto_t *ok = parse("{\"schedule\": \"none\", \"window\": 4, \"aging_ms\": 500, "
                                "\"asid_reserve\": 0, \"max_queue\": 10, \"asids\": 509, "
                                "\"costs\": {\"bogus\": 1}}");
        assert_int_equal(cvm_sched_config_parse(ok, "psp", &cfg, &err), 0);
        assert_false(cfg.enabled);
        assert_int_equal(cfg.window, 4);
        assert_int_equal(cfg.aging_ms, 500);
        assert_int_equal(cfg.asid_reserve, 0);
        assert_int_equal(cfg.max_queue, 10);
        json_auto_t *cvmd = parse("{\"schedule\": \"cvmd\"}");
        assert_int_equal(cvm_sched_config_parse(cvmd, "psp", &cfg, &err), 0);
        assert_true(cfg.enabled);
        assert_int_equal(cfg.window, 4);

        const struct {
                const char *json, *message;
        } bad[] = {
                {"{\"schedule\": \"fifo\"}",
                 "field 'psp.schedule' must be \"cvmd\" or \"none\", not \"fifo\""},
                {"{\"schedule\": true}", "field 'psp.schedule' must be a string"},
                {"{\"window\": 0}", "field 'psp.window' must be between 1 and 16"},
                {"{\"window\": 17}", "field 'psp.window' must be between 1 and 16"},
                {"{\"window\": \"2\"}", "field 'psp.window' must be an integer"},
                {"{\"aging_ms\": 0}", "field 'psp.aging_ms' must be between 1 and 3600000"},
                {"{\"asid_reserve\": -1}", "field 'psp.asid_reserve' must be between 0 and 4096"},
                {"{\"max_queue\": 1048577}", "field 'psp.max_queue' must be between 1 and 1048576"},
                {"{\"window\": 2, \"schedule\": \"NONE\"}",
                 "field 'psp.schedule' must be \"cvmd\" or \"none\", not \"NONE\""},
        };
        for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
                json_auto_t *v = parse(bad[i].json);
                before = cfg;
                assert_int_equal(cvm_sched_config_parse(v, "psp", &cfg, &err), -EINVAL);
                assert_string_equal(err.message, bad[i].message);
                assert_memory_equal(&cfg, &before, sizeof(cfg));
        }

        /* cvm_sched_new checks a config built by hand. */
        cvm_clock *clock;
        assert_int_equal(cvm_clock_virtual_new(0, &clock, NULL), 0);
        cvm_sched *s = NULL;
        cvm_sched_config_default(&cfg);
        cfg.window = 0;
        assert_int_equal(cvm_sched_new(clock, &cfg, NULL, NULL, &s, &err), -EINVAL);
        assert_string_equal(err.message, "PSP scheduler window must be between 1 and 16, not 0");
        cvm_sched_config_default(&cfg);
        cfg.max_queue = 0;
        assert_int_equal(cvm_sched_new(clock, &cfg, NULL, NULL, &s, &err), -EINVAL);
        assert_string_equal(err.message,
                            "PSP scheduler queue limit must be between 1 and 1048576, not 0");
        assert_null(s);
        cvm_sched_free(NULL);
        cvm_clock_virtual_free(clock);
}

static void test_submit_errors_and_queue_limit(void **state) {
        (void)state;
        cvm_sched_config cfg;
        cvm_sched_config_default(&cfg);
        cfg.max_queue = 2;
        ctx c;
        setup_cfg(&c, &cfg);
        work w[3];
        cvm_error err = {0};
        cvm_sched_job *job = NULL;
        assert_int_equal(
                cvm_sched_submit(c.sched, (cvm_sched_class)4, MS, "x", on_start, NULL, &job, &err),
                -EINVAL);
        assert_string_equal(err.message, "unknown PSP scheduler class 4");
        assert_int_equal(
                cvm_sched_submit(c.sched, CVM_SCHED_DEMAND, MS, "x", NULL, NULL, &job, &err),
                -EINVAL);
        assert_string_equal(err.message, "demand job \"x\" has no start callback");
        assert_int_equal(cvm_sched_submit(c.sched, CVM_SCHED_PREWARM, 3601 * CVM_NSEC_PER_SEC, "x",
                                          on_start, NULL, &job, &err),
                         -EINVAL);
        assert_string_equal(err.message, "prewarm job \"x\": expected PSP time of 3601000 ms is "
                                         "over the limit of 3600000 ms");
        char owner[CVM_SCHED_OWNER_MAX + 1];
        memset(owner, 'x', CVM_SCHED_OWNER_MAX);
        owner[CVM_SCHED_OWNER_MAX] = '\0';
        assert_int_equal(
                cvm_sched_submit(c.sched, CVM_SCHED_DEMAND, MS, owner, on_start, NULL, &job, &err),
                -EINVAL);
        assert_null(job);

        /* Two waiting fill a queue of two; a running job does not count. */
        submit(&c, &w[0], CVM_SCHED_DEMAND, 10 * MS, "a", 10 * MS);
        submit(&c, &w[1], CVM_SCHED_DEMAND, 10 * MS, "b", 10 * MS);
        assert_int_equal(
                cvm_sched_submit(c.sched, CVM_SCHED_DEMAND, MS, "c", on_start, &w[2], &job, &err),
                -EAGAIN);
        assert_string_equal(err.message, "demand job \"c\": PSP scheduler queue is full (2 jobs)");
        cvm_clock_virtual_advance(c.clock, 0);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 10 * MS, "c", 10 * MS);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        assert_int_equal(json_integer_value(json_object_get(j, "rejected")), 1);
        assert_int_equal(json_integer_value(json_object_get(j, "queued")), 2);
        assert_int_equal(json_integer_value(json_object_get(j, "running")), 1);
        run(&c);
        assert_string_equal(c.log, "a b c");
        teardown(&c);
}

static void test_none_starts_everything(void **state) {
        (void)state;
        cvm_sched_config cfg;
        cvm_sched_config_default(&cfg);
        cfg.enabled = false;
        ctx c;
        setup_cfg(&c, &cfg);
        c.asids = 0;
        work w[5];
        submit(&c, &w[0], CVM_SCHED_PREWARM, 30 * MS, "a", 30 * MS);
        submit(&c, &w[1], CVM_SCHED_RELEASE, 1 * MS, "r", 1 * MS);
        submit(&c, &w[2], CVM_SCHED_DEMAND, 50 * MS, "b", 50 * MS);
        submit(&c, &w[3], CVM_SCHED_DEMAND, 5 * MS, "d", 5 * MS);
        assert_string_equal(c.log, "");
        cvm_clock_virtual_advance(c.clock, 0);
        /* In submit order, all at once, no gating, no deferral. */
        assert_string_equal(c.log, "a r b d");
        for (int i = 0; i < 4; i++)
                assert_int_equal(w[i].start_ns, 0);
        cvm_clock_virtual_advance(c.clock, 5 * MS);
        submit(&c, &w[4], CVM_SCHED_ATTEST, 3 * MS, "e", 3 * MS);
        cvm_clock_virtual_advance(c.clock, 0);
        assert_int_equal(w[4].start_ns, 5 * MS);
        assert_int_equal(c.max_running, 4);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        assert_string_equal(json_string_value(json_object_get(j, "schedule")), "none");
        run(&c);
        teardown(&c);
}

static void test_to_json(void **state) {
        (void)state;
        ctx c;
        setup(&c, 1);
        enum { N = 150 };
        static work w[N];
        submit(&c, &w[0], CVM_SCHED_DEMAND, 33 * MS, "vm-0", 33 * MS);
        cvm_clock_virtual_advance(c.clock, 3 * MS);
        for (int i = 1; i < N; i++)
                submit(&c, &w[i], i % 2 ? CVM_SCHED_PREWARM : CVM_SCHED_DEMAND, 33 * MS,
                       i == 1 ? "vm-1" : NULL, 33 * MS);
        cvm_clock_virtual_advance(c.clock, 1 * MS);
        json_auto_t *j = cvm_sched_to_json(c.sched);
        assert_string_equal(json_string_value(json_object_get(j, "schedule")), "cvmd");
        assert_int_equal(json_integer_value(json_object_get(j, "window")), 1);
        assert_int_equal(json_integer_value(json_object_get(j, "aging_ms")), 2000);
        assert_int_equal(json_integer_value(json_object_get(j, "asids_available")), 100);
        assert_false(json_boolean_value(json_object_get(j, "asid_pressure")));
        assert_int_equal(json_integer_value(json_object_get(j, "queued")), N - 1);
        assert_int_equal(json_integer_value(json_object_get(j, "running")), 1);
        json_t *classes = json_object_get(j, "classes");
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(classes, "prewarm"), "queued")),
                75);
        json_t *jobs = json_object_get(j, "jobs");
        assert_int_equal(json_array_size(jobs), CVM_SCHED_LIST_MAX);
        assert_int_equal(json_integer_value(json_object_get(j, "jobs_omitted")),
                         N - CVM_SCHED_LIST_MAX);
        json_t *first = json_array_get(jobs, 0), *second = json_array_get(jobs, 1);
        assert_true(json_real_value(json_object_get(first, "remaining_ms")) == 29.0);
        assert_true(json_real_value(json_object_get(first, "waiting_ms")) == 0.0);
        /* Demands first (vm-2 is the first), each 33 ms after the last. */
        assert_string_equal(json_string_value(json_object_get(second, "class")), "demand");
        assert_string_equal(json_string_value(json_object_get(second, "owner")), "");
        assert_true(json_real_value(json_object_get(second, "waiting_ms")) == 1.0);
        assert_false(json_boolean_value(json_object_get(second, "aged")));
        json_t *third = json_array_get(jobs, 2);
        assert_true(json_real_value(json_object_get(third, "predicted_start_in_ms")) == 62.0);
        json_t *vm1 = json_array_get(jobs, 75);
        assert_string_equal(json_string_value(json_object_get(vm1, "owner")), "vm-1");
        assert_string_equal(json_string_value(json_object_get(vm1, "class")), "prewarm");
        cvm_sched_free(c.sched);
        c.sched = NULL;
        /* Freeing with jobs queued and running runs no callback. */
        assert_string_equal(c.log, "vm-0");
        teardown(&c);
}

/* The headline: 50 simultaneous verifier-sized launches on the simulated PSP,
 * each start running cvm_psp_sim_launch and reporting its service time. */

static const cvm_psp_region verifier_regions[] = {
        {CVM_SNP_PAGE_NORMAL, 4},
        {CVM_SNP_PAGE_ZERO, 2},
        {CVM_SNP_PAGE_SECRETS, 1},
        {CVM_SNP_PAGE_CPUID, 1},
};
static const cvm_psp_launch_plan verifier_plan = {
        .regions = verifier_regions,
        .nregions = CVM_ARRAY_SIZE(verifier_regions),
        .vmsa_pages = 1,
};

typedef struct launch {
        cvm_psp_sim *psp;
        cvm_sched_job *job;
        char owner[16];
        uint64_t submit_ns, finish_ns;
        int result;
} launch;

static void on_launch_done(const cvm_psp_launch_result *r, void *userdata) {
        launch *l = userdata;
        l->finish_ns = r->finish_ns;
        l->result = r->result;
        cvm_sched_done(l->job, r->service_ns);
        l->job = NULL;
}

static void on_launch_start(cvm_sched_job *job, void *userdata) {
        launch *l = userdata;
        (void)job;
        cvm_error err;
        if (cvm_psp_sim_launch(l->psp, &verifier_plan, l->owner, on_launch_done, l, NULL, &err) < 0)
                fail_msg("launch: %s", err.message);
}

typedef struct burst {
        uint64_t mean_ns, first_ns, last_ns;
        uint64_t demand_mean_ns; /* Over the DEMAND launches only. */
        double correction;
} burst;

/* N launches submitted at once: the first `prewarm` as PREWARM, the rest as
 * DEMAND. Latency is from submit to the end of LAUNCH_FINISH. */
static burst run_burst(bool enabled, uint32_t window, int prewarm) {
        enum { N = 50 };
        cvm_clock *clock;
        assert_int_equal(cvm_clock_virtual_new(0, &clock, NULL), 0);
        cvm_psp_sim_config pcfg;
        cvm_psp_sim_config_default(&pcfg);
        cvm_psp_sim *psp;
        assert_int_equal(cvm_psp_sim_new(clock, &pcfg, &psp, NULL), 0);
        cvm_sched_config cfg;
        cvm_sched_config_default(&cfg);
        cfg.enabled = enabled;
        cfg.window = window;
        cvm_sched *s;
        assert_int_equal(cvm_sched_new(clock, &cfg, NULL, NULL, &s, NULL), 0);
        uint64_t cost = cvm_psp_costs_launch_ns(&pcfg.costs, &verifier_plan);
        assert_int_equal(cost, 33 * MS);
        launch l[N];
        for (int i = 0; i < N; i++) {
                l[i] = (launch){.psp = psp, .submit_ns = cvm_clock_now(clock), .result = 1};
                snprintf(l[i].owner, sizeof(l[i].owner), "vm-%d", i);
                cvm_sched_class cls = i < prewarm ? CVM_SCHED_PREWARM : CVM_SCHED_DEMAND;
                assert_int_equal(cvm_sched_submit(s, cls, cost, l[i].owner, on_launch_start, &l[i],
                                                  &l[i].job, NULL),
                                 0);
        }
        cvm_clock_virtual_run(clock, 1000000);
        burst b = {.first_ns = UINT64_MAX};
        uint64_t sum = 0, demand_sum = 0;
        for (int i = 0; i < N; i++) {
                assert_int_equal(l[i].result, 0);
                uint64_t lat = l[i].finish_ns - l[i].submit_ns;
                sum += lat;
                if (i >= prewarm)
                        demand_sum += lat;
                b.first_ns = lat < b.first_ns ? lat : b.first_ns;
                b.last_ns = lat > b.last_ns ? lat : b.last_ns;
        }
        b.mean_ns = sum / N;
        b.demand_mean_ns = demand_sum / (uint64_t)(N - prewarm);
        json_auto_t *j = cvm_sched_to_json(s);
        b.correction = json_real_value(json_object_get(j, "correction"));
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(psp, &st);
        assert_int_equal(st.busy_ns, N * 33 * MS);
        assert_int_equal(st.asids_in_use, N);
        cvm_sched_free(s);
        cvm_psp_sim_free(psp);
        cvm_clock_virtual_free(clock);
        return b;
}

static void test_fifty_launches_none_vs_cvmd(void **state) {
        (void)state;
        /* "none": the VMMs' commands interleave; everyone ends near N x 33 ms. */
        burst none = run_burst(false, 1, 0);
        assert_int_equal(none.mean_ns, 1601 * MS);
        assert_int_equal(none.first_ns, 1552 * MS);
        assert_int_equal(none.last_ns, 1650 * MS);
        /* "cvmd": one launch at a time, shortest first; launch i ends at
         * (i + 1) x 33 ms, so the mean is 33 x 51 / 2 = 841.5 ms. */
        burst cvmd = run_burst(true, 1, 0);
        assert_int_equal(cvmd.mean_ns, 841500 * US);
        assert_int_equal(cvmd.first_ns, 33 * MS);
        assert_int_equal(cvmd.last_ns, 1650 * MS);
        assert_true(cvmd.mean_ns * 10 <= none.mean_ns * 6);
        assert_true(cvmd.last_ns <= none.last_ns + 3 * MS && none.last_ns <= cvmd.last_ns + 3 * MS);
        assert_true(cvmd.correction == 1.0);
        /* A window of 2 runs launches in overlapping pairs whose commands
         * interleave: each finishes about 31 ms later than alone. */
        burst two = run_burst(true, 2, 0);
        assert_int_equal(two.mean_ns, 857 * MS);
        assert_int_equal(two.first_ns, 64 * MS);
        assert_int_equal(two.last_ns, 1650 * MS);
        print_message("N=50 mean: none %.1f ms, cvmd w1 %.1f ms, w2 %.1f ms\n",
                      (double)none.mean_ns / 1e6, (double)cvmd.mean_ns / 1e6,
                      (double)two.mean_ns / 1e6);
}

static void test_demand_behind_prewarm(void **state) {
        (void)state;
        /* 40 pool refills then 10 invocations' launches, all at once. Under
         * "none" the demand launches were submitted last and end last; "cvmd"
         * runs them first. */
        burst none = run_burst(false, 1, 40);
        assert_int_equal(none.demand_mean_ns, 1641 * MS);
        burst cvmd = run_burst(true, 1, 40);
        assert_int_equal(cvmd.demand_mean_ns, 181500 * US);
        assert_int_equal(cvmd.mean_ns, 841500 * US);
        assert_int_equal(cvmd.last_ns, 1650 * MS);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_order),
                cmocka_unit_test(test_window_two),
                cmocka_unit_test(test_aging),
                cmocka_unit_test(test_release_deferred),
                cmocka_unit_test(test_release_window_two),
                cmocka_unit_test(test_promote),
                cmocka_unit_test(test_cancel),
                cmocka_unit_test(test_reentrant_callbacks),
                cmocka_unit_test(test_predict_start),
                cmocka_unit_test(test_ewma_correction),
                cmocka_unit_test(test_config_parse),
                cmocka_unit_test(test_submit_errors_and_queue_limit),
                cmocka_unit_test(test_none_starts_everything),
                cmocka_unit_test(test_to_json),
                cmocka_unit_test(test_fifty_launches_none_vs_cvmd),
                cmocka_unit_test(test_demand_behind_prewarm),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
