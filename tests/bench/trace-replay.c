/* trace-replay: replays an Azure Functions 2019 trace folder (invocations.csv,
 * durations.csv, memory.csv) through the real warm pool, pool policy, PSP
 * scheduler and simulated PSP on a virtual clock, with a model of the
 * daemon's VMs as the pool's backend, and reports cold starts, idle VM
 * memory-time and PSP figures per policy. It touches no network and starts
 * no process. docs/trace-replay.md describes the model and its assumptions.
 *
 * Usage: trace-replay [--policy fixed|histogram|both] [--keep-alive-s 600]
 *        [--schedule cvmd|none] [--minutes N] [--functions N] [--seed S]
 *        [--memory-budget-mib M] [--asids N] [--ovmf] [--boot-ms 125]
 *        [--prepare-ms 10] [--verbose] [--per-function] TRACE_DIR */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "log.h"
#include "pool.h"
#include "pool_policy.h"
#include "psp_cost.h"
#include "psp_sched.h"
#include "psp_sim.h"

#define MS CVM_NSEC_PER_MSEC
#define SEC CVM_NSEC_PER_SEC
#define MINUTE_NS (60 * SEC)
#define MEMORY_MIN_MIB 128
/* Percentile columns of durations.csv, in order, with their ranks. */
#define NPCT 7
static const double pct_rank[NPCT] = {0, 1, 25, 50, 75, 99, 100};
static const char *const pct_col[NPCT] = {"percentile_Average_0",  "percentile_Average_1",
                                          "percentile_Average_25", "percentile_Average_50",
                                          "percentile_Average_75", "percentile_Average_99",
                                          "percentile_Average_100"};

/* Options. */

typedef struct options {
        int policies; /* Bit 0: fixed, bit 1: histogram. */
        uint32_t keep_alive_s;
        bool schedule;
        uint32_t minutes, functions;
        uint64_t seed;
        uint64_t memory_budget_mib;
        uint32_t asids;
        bool ovmf;
        uint64_t boot_ns, prepare_ns;
        bool verbose, per_function;
        const char *dir;
} options;

/* The trace. */

typedef struct fn_rec {
        char key[200]; /* Owner, app and function hashes, joined. */
        uint32_t *counts;
        double pct_ms[NPCT];
        bool has_duration;
        uint32_t memory_mib;
        bool has_memory;
        uint64_t total;
        cvm_pool_fn *pool; /* During a replay. */
} fn_rec;

typedef struct trace {
        fn_rec *fns;
        uint32_t nfns, minutes;
        uint64_t invocations;
        uint32_t missing_duration, missing_memory;
} trace;

/* A value spread over log-spaced buckets (1/64 relative width) so that
 * percentiles need bounded memory whatever the number of samples. */
#define HIST_SUB 64
#define HIST_BUCKETS (HIST_SUB * 60)
typedef struct hist {
        uint64_t n;
        uint64_t counts[HIST_BUCKETS];
} hist;

static size_t hist_bucket(uint64_t us) {
        if (us < HIST_SUB)
                return (size_t)us;
        int e = 63 - __builtin_clzll(us); /* >= 6 */
        size_t b = HIST_SUB + (size_t)(e - 6) * HIST_SUB + (size_t)((us >> (e - 6)) - HIST_SUB);
        return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* The middle of a bucket, in microseconds. */
static double hist_value(size_t b) {
        if (b < HIST_SUB)
                return (double)b;
        size_t e = (b - HIST_SUB) / HIST_SUB + 6, sub = (b - HIST_SUB) % HIST_SUB;
        double lo = (double)((HIST_SUB + sub) << (e - 6));
        return lo + (double)(UINT64_C(1) << (e - 6)) / 2;
}

static void hist_add(hist *h, uint64_t ns) {
        h->counts[hist_bucket(ns / 1000)]++;
        h->n++;
}

/* Nearest-rank percentile in milliseconds; 0 with no sample. */
static double hist_pct_ms(const hist *h, double p) {
        if (!h->n)
                return 0;
        uint64_t rank = (uint64_t)(p / 100 * (double)h->n + 0.999999);
        if (rank < 1)
                rank = 1;
        uint64_t c = 0;
        for (size_t b = 0; b < HIST_BUCKETS; b++) {
                c += h->counts[b];
                if (c >= rank)
                        return hist_value(b) / 1000;
        }
        return hist_value(HIST_BUCKETS - 1) / 1000;
}

/* splitmix64: small, fast and reproducible across platforms. */
static uint64_t rng_next(uint64_t *s) {
        uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s) {
        return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* One replay's state. */

typedef struct replay replay;

typedef enum mvm_state {
        MVM_PREPARING,
        MVM_QUEUED,
        MVM_PSP,
        MVM_BOOTING,
        MVM_READY,
        MVM_GONE
} mvm_state;

/* A modelled VM: prepare timer, scheduler job, PSP launch, boot timer. */
typedef struct mvm {
        replay *r;
        cvm_pool_vm *pvm; /* NULL once the pool forgot it. */
        fn_rec *f;
        mvm_state state;
        bool demand;
        cvm_timer *timer;
        cvm_sched_job *job;
        cvm_psp_launch *launch;
        uint32_t asid;
        uint32_t active;
        uint64_t prepared_ns, idle_since_ns;
        struct mvm *prev, *next;
} mvm;

/* An ASID on its way back through a RELEASE job. */
typedef struct release {
        replay *r;
        uint32_t asid;
        cvm_sched_job *job;
        struct release *prev, *next;
} release;

/* An invocation: waits for a VM, runs for its duration, releases. */
typedef struct inv {
        replay *r;
        fn_rec *f;
        cvm_timer *timer;
        cvm_pool_vm *pvm;
        uint64_t duration_ns;
        struct inv *next_free;
} inv;

typedef struct arrival {
        uint64_t at_ns;
        uint32_t fn;
        uint32_t seq;
} arrival;

typedef struct result {
        const char *policy;
        uint64_t invocations, cold, warm, failed, rejected;
        uint64_t launches, launch_failures, evictions, df_flushes;
        uint64_t demand_launches;
        double idle_gib_s, psp_busy_s, wall_s;
        double wait_p50_ms, wait_p99_ms, cold_p50_ms, cold_p99_ms;
        double fn_cold_mean_pct, fn_cold_p75_pct; /* Across functions with invocations. */
        uint32_t peak_vms;
        uint64_t end_ns; /* The trace's end (not the drain after it). */
} result;

struct replay {
        const options *o;
        trace *t;
        cvm_clock *clock;
        cvm_psp_sim *psp;
        cvm_sched *sched;
        cvm_pool *pool;
        cvm_psp_launch_plan plan;
        cvm_psp_region region;
        uint64_t launch_ns, decommission_ns;
        uint64_t end_ns; /* The end of the trace: idle time is counted up to here. */
        mvm *vms;
        release *releases;
        inv *free_invs;
        inv **all_invs;
        size_t nall_invs, call_invs;
        uint64_t inflight;
        /* Arrivals of the current minute, in time order. */
        arrival *arr;
        size_t narr, carr, next_arr;
        uint32_t minute;
        cvm_timer *arrival_timer;
        uint64_t rng_arrivals, rng_durations;
        /* Figures. */
        double idle_mib_ns;
        hist wait, cold_wait;
        uint64_t invocations, cold, warm, failed, rejected, demand_launches;
        uint32_t peak_vms, vms_now;
        int fatal; /* A negative errno that stops the replay. */
        cvm_error fatal_err;
};

/* Idle memory-time: a ready VM with no invocation, up to the trace's end. */
static void idle_add(replay *r, mvm *m) {
        uint64_t now = cvm_clock_now(r->clock);
        uint64_t a = m->idle_since_ns < r->end_ns ? m->idle_since_ns : r->end_ns;
        uint64_t b = now < r->end_ns ? now : r->end_ns;
        if (b > a)
                r->idle_mib_ns += (double)(b - a) * m->f->memory_mib;
}

static void mvm_free(mvm *m) {
        replay *r = m->r;
        if (m->prev)
                m->prev->next = m->next;
        else
                r->vms = m->next;
        if (m->next)
                m->next->prev = m->prev;
        cvm_timer_free(m->timer);
        r->vms_now--;
        free(m);
}

static void set_fatal(replay *r, const cvm_error *err) {
        if (r->fatal)
                return;
        r->fatal = err->code ? err->code : -EIO;
        r->fatal_err = *err;
}

/* The backend: each VM's steps. */

static void on_boot_timer(cvm_timer *t, void *ud);

static void on_psp_launched(const cvm_psp_launch_result *res, void *ud) {
        mvm *m = ud;
        replay *r = m->r;
        m->launch = NULL;
        cvm_sched_done(m->job, res->service_ns);
        m->job = NULL;
        if (res->result < 0) {
                cvm_pool_vm *pvm = m->pvm;
                mvm_free(m);
                cvm_pool_vm_failed(pvm, res->err);
                return;
        }
        if (m->demand)
                r->demand_launches++;
        m->asid = res->asid;
        uint64_t psp_wait = res->submit_ns - m->prepared_ns + res->wait_ns;
        if (m->demand)
                hist_add(&r->wait, psp_wait);
        m->state = MVM_BOOTING;
        cvm_timer_start(m->timer, r->o->boot_ns);
}

static void on_launch_turn(cvm_sched_job *job, void *ud) {
        (void)job;
        mvm *m = ud;
        replay *r = m->r;
        m->state = MVM_PSP;
        cvm_error err = {0};
        if (cvm_psp_sim_launch(r->psp, &r->plan, NULL, on_psp_launched, m, &m->launch, &err) < 0) {
                cvm_sched_done(m->job, 0);
                m->job = NULL;
                cvm_pool_vm *pvm = m->pvm;
                mvm_free(m);
                cvm_pool_vm_failed(pvm, &err);
        }
}

static void on_prepare_timer(cvm_timer *t, void *ud) {
        (void)t;
        mvm *m = ud;
        replay *r = m->r;
        m->prepared_ns = cvm_clock_now(r->clock);
        m->state = MVM_QUEUED;
        cvm_error err = {0};
        if (cvm_sched_submit(r->sched, m->demand ? CVM_SCHED_DEMAND : CVM_SCHED_PREWARM,
                             r->launch_ns, NULL, on_launch_turn, m, &m->job, &err) < 0) {
                cvm_pool_vm *pvm = m->pvm;
                mvm_free(m);
                cvm_pool_vm_failed(pvm, &err);
        }
}

static void on_boot_timer(cvm_timer *t, void *ud) {
        (void)t;
        mvm *m = ud;
        m->state = MVM_READY;
        m->idle_since_ns = cvm_clock_now(m->r->clock);
        /* Grants inside this call end the idle time at once. */
        cvm_pool_vm_ready(m->pvm);
}

/* The next turn after a retire: the pool hears that the VM is gone. */
static void on_gone_timer(cvm_timer *t, void *ud) {
        (void)t;
        mvm *m = ud;
        cvm_pool_vm *pvm = m->pvm;
        m->pvm = NULL;
        m->state = MVM_GONE;
        if (!m->active)
                mvm_free(m);
        cvm_pool_vm_gone(pvm);
}

static void on_timer(cvm_timer *t, void *ud) {
        mvm *m = ud;
        switch (m->state) {
        case MVM_PREPARING: on_prepare_timer(t, ud); break;
        case MVM_BOOTING: on_boot_timer(t, ud); break;
        case MVM_GONE: on_gone_timer(t, ud); break;
        default: break;
        }
}

static int be_launch(void *ud, cvm_pool_vm *pvm, bool demand, cvm_error *err) {
        replay *r = ud;
        mvm *m = calloc(1, sizeof(*m));
        if (!m)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int ret = cvm_timer_new(r->clock, on_timer, m, &m->timer, err);
        if (ret < 0) {
                free(m);
                return ret;
        }
        m->r = r;
        m->pvm = pvm;
        m->f = cvm_pool_fn_userdata(cvm_pool_vm_fn(pvm));
        m->demand = demand;
        m->state = MVM_PREPARING;
        m->next = r->vms;
        if (r->vms)
                r->vms->prev = m;
        r->vms = m;
        if (++r->vms_now > r->peak_vms)
                r->peak_vms = r->vms_now;
        cvm_pool_vm_set_handle(pvm, m);
        cvm_timer_start(m->timer, r->o->prepare_ns);
        return 0;
}

static void be_promote(void *ud, cvm_pool_vm *pvm) {
        (void)ud;
        mvm *m = cvm_pool_vm_handle(pvm);
        m->demand = true;
        if (m->job)
                cvm_sched_promote(m->job, CVM_SCHED_DEMAND);
}

static void on_decommissioned(const cvm_psp_completion *c, void *ud) {
        release *rel = ud;
        replay *r = rel->r;
        cvm_sched_done(rel->job, c->service_ns);
        if (rel->prev)
                rel->prev->next = rel->next;
        else
                r->releases = rel->next;
        if (rel->next)
                rel->next->prev = rel->prev;
        free(rel);
}

static void on_release_turn(cvm_sched_job *job, void *ud) {
        (void)job;
        release *rel = ud;
        cvm_error err = {0};
        if (cvm_psp_sim_decommission(rel->r->psp, rel->asid, NULL, on_decommissioned, rel, &err) <
            0) {
                /* The ASID leaks in the model; the replay stops, so it is seen. */
                set_fatal(rel->r, &err);
                cvm_sched_done(rel->job, 0);
                rel->job = NULL;
        }
}

static void release_asid(replay *r, uint32_t asid) {
        cvm_error err = {0};
        release *rel = calloc(1, sizeof(*rel));
        if (!rel) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                set_fatal(r, &err);
                return;
        }
        rel->r = r;
        rel->asid = asid;
        rel->next = r->releases;
        if (r->releases)
                r->releases->prev = rel;
        r->releases = rel;
        if (cvm_sched_submit(r->sched, CVM_SCHED_RELEASE, r->decommission_ns, NULL, on_release_turn,
                             rel, &rel->job, &err) < 0)
                set_fatal(r, &err);
}

static void be_retire(void *ud, cvm_pool_vm *pvm, const char *reason) {
        (void)reason;
        replay *r = ud;
        mvm *m = cvm_pool_vm_handle(pvm);
        if (m->state == MVM_READY && !m->active)
                idle_add(r, m);
        cvm_timer_stop(m->timer);
        if (m->job) {
                cvm_sched_cancel(m->job);
                m->job = NULL;
        }
        if (m->launch) {
                /* An unfinished launch gives back its own ASID. */
                cvm_psp_sim_launch_abort(m->launch);
                m->launch = NULL;
        }
        if (m->asid) {
                release_asid(r, m->asid);
                m->asid = 0;
        }
        m->state = MVM_GONE;
        cvm_timer_start(m->timer, 0);
}

static const cvm_pool_backend backend = {
        .launch = be_launch,
        .promote = be_promote,
        .retire = be_retire,
};

/* Invocations. */

static void mvm_take(replay *r, cvm_pool_vm *pvm) {
        mvm *m = cvm_pool_vm_handle(pvm);
        if (m->active++ == 0 && m->state == MVM_READY)
                idle_add(r, m);
}

static void on_inv_done(cvm_timer *t, void *ud) {
        (void)t;
        inv *iv = ud;
        replay *r = iv->r;
        cvm_pool_vm *pvm = iv->pvm;
        mvm *m = cvm_pool_vm_handle(pvm);
        iv->pvm = NULL;
        iv->next_free = r->free_invs;
        r->free_invs = iv;
        r->inflight--;
        if (--m->active == 0) {
                if (m->state == MVM_READY)
                        m->idle_since_ns = cvm_clock_now(r->clock);
                else if (m->state == MVM_GONE && !m->pvm)
                        mvm_free(m); /* Gone while busy: the pool frees its side here too. */
        }
        cvm_pool_release(pvm);
}

static void start_inv(replay *r, inv *iv, cvm_pool_vm *pvm) {
        iv->pvm = pvm;
        mvm_take(r, pvm);
        cvm_timer_start(iv->timer, iv->duration_ns);
}

static void inv_recycle(replay *r, inv *iv) {
        iv->next_free = r->free_invs;
        r->free_invs = iv;
        r->inflight--;
}

static void on_grant(cvm_pool_waiter *w, const cvm_pool_grant *g, void *ud) {
        (void)w;
        inv *iv = ud;
        replay *r = iv->r;
        if (!g->vm) {
                r->failed++;
                inv_recycle(r, iv);
                return;
        }
        r->invocations++;
        if (g->cold) {
                r->cold++;
                hist_add(&r->cold_wait, g->queue_ns);
        } else {
                r->warm++;
        }
        start_inv(r, iv, g->vm);
}

static inv *inv_get(replay *r) {
        inv *iv = r->free_invs;
        if (iv) {
                r->free_invs = iv->next_free;
                return iv;
        }
        if (r->nall_invs == r->call_invs) {
                size_t cap = r->call_invs ? r->call_invs * 2 : 1024;
                inv **a = realloc(r->all_invs, cap * sizeof(*a));
                if (!a)
                        return NULL;
                r->all_invs = a;
                r->call_invs = cap;
        }
        iv = calloc(1, sizeof(*iv));
        if (!iv)
                return NULL;
        iv->r = r;
        if (cvm_timer_new(r->clock, on_inv_done, iv, &iv->timer, NULL) < 0) {
                free(iv);
                return NULL;
        }
        r->all_invs[r->nall_invs++] = iv;
        return iv;
}

/* A duration drawn uniformly by rank between the function's percentiles
 * (piecewise linear), at least 1 ms. */
static uint64_t draw_duration(replay *r, const fn_rec *f) {
        double u = rng_unit(&r->rng_durations) * 100, ms = f->pct_ms[NPCT - 1];
        for (int i = 1; i < NPCT; i++)
                if (u <= pct_rank[i]) {
                        double w = (u - pct_rank[i - 1]) / (pct_rank[i] - pct_rank[i - 1]);
                        ms = f->pct_ms[i - 1] + w * (f->pct_ms[i] - f->pct_ms[i - 1]);
                        break;
                }
        if (ms < 1)
                ms = 1;
        return (uint64_t)(ms * (double)MS);
}

static void invoke(replay *r, fn_rec *f) {
        /* Drawn first so both policies see the same durations. */
        uint64_t d = draw_duration(r, f);
        cvm_error err = {0};
        inv *iv = inv_get(r);
        if (!iv) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                set_fatal(r, &err);
                return;
        }
        iv->f = f;
        iv->duration_ns = d;
        r->inflight++;
        cvm_pool_vm *pvm = NULL;
        cvm_pool_waiter *w = NULL;
        int ret = cvm_pool_acquire(f->pool, on_grant, iv, &pvm, &w, &err);
        if (ret < 0) {
                r->rejected++;
                inv_recycle(r, iv);
        } else if (ret == 1) {
                r->invocations++;
                r->warm++;
                start_inv(r, iv, pvm);
        }
}

static int arrival_cmp(const void *a, const void *b) {
        const arrival *x = a, *y = b;
        if (x->at_ns != y->at_ns)
                return x->at_ns < y->at_ns ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Spreads each function's count for the minute uniformly at random over it. */
static int fill_minute(replay *r) {
        const trace *t = r->t;
        size_t n = 0;
        for (uint32_t i = 0; i < t->nfns; i++)
                n += t->fns[i].counts[r->minute];
        if (n > r->carr) {
                arrival *a = realloc(r->arr, n * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                r->arr = a;
                r->carr = n;
        }
        uint64_t base = (uint64_t)r->minute * MINUTE_NS;
        size_t k = 0;
        for (uint32_t i = 0; i < t->nfns; i++)
                for (uint32_t j = 0; j < t->fns[i].counts[r->minute]; j++) {
                        r->arr[k] =
                                (arrival){.at_ns = base + rng_next(&r->rng_arrivals) % MINUTE_NS,
                                          .fn = i,
                                          .seq = (uint32_t)k};
                        k++;
                }
        qsort(r->arr, n, sizeof(*r->arr), arrival_cmp);
        r->narr = n;
        r->next_arr = 0;
        return 0;
}

static void on_arrival_timer(cvm_timer *t, void *ud) {
        replay *r = ud;
        uint64_t now = cvm_clock_now(r->clock);
        for (;;) {
                while (r->next_arr < r->narr && r->arr[r->next_arr].at_ns <= now)
                        invoke(r, &r->t->fns[r->arr[r->next_arr++].fn]);
                if (r->next_arr < r->narr) {
                        cvm_timer_start_at(t, r->arr[r->next_arr].at_ns);
                        return;
                }
                if (++r->minute >= r->t->minutes)
                        return;
                if (fill_minute(r) < 0) {
                        cvm_error err;
                        cvm_error_set(&err, -ENOMEM, "out of memory");
                        set_fatal(r, &err);
                        return;
                }
        }
}

/* One replay. */

static uint32_t asids_available(void *ud) {
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(((replay *)ud)->psp, &st);
        return st.asids_free + st.asids_dirty;
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void replay_free(replay *r) {
        /* Nothing calls back from here on: the pool, scheduler and PSP free
         * their own state silently, then the model's. */
        cvm_pool_free(r->pool);
        cvm_sched_free(r->sched);
        cvm_psp_sim_free(r->psp);
        while (r->vms)
                mvm_free(r->vms);
        while (r->releases) {
                release *rel = r->releases;
                r->releases = rel->next;
                free(rel);
        }
        for (size_t i = 0; i < r->nall_invs; i++) {
                cvm_timer_free(r->all_invs[i]->timer);
                free(r->all_invs[i]);
        }
        free(r->all_invs);
        free(r->arr);
        cvm_timer_free(r->arrival_timer);
        cvm_clock_virtual_free(r->clock);
}

static int double_cmp(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static int run_one(const options *o, trace *t, cvm_policy_kind kind, result *res, cvm_error *err) {
        double wall0 = now_s();
        replay *r = calloc(1, sizeof(*r));
        if (!r)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        r->o = o;
        r->t = t;
        r->rng_arrivals = o->seed;
        r->rng_durations = o->seed ^ UINT64_C(0x5eed5eed5eed5eed);
        r->end_ns = (uint64_t)t->minutes * MINUTE_NS;
        r->region = (cvm_psp_region){.type = CVM_SNP_PAGE_NORMAL, .npages = o->ovmf ? 512 : 4};
        r->plan = (cvm_psp_launch_plan){.regions = &r->region, .nregions = 1, .vmsa_pages = 1};

        cvm_psp_sim_config pc;
        cvm_psp_sim_config_default(&pc);
        pc.asids = o->asids;
        r->launch_ns = cvm_psp_costs_launch_ns(&pc.costs, &r->plan);
        r->decommission_ns = cvm_psp_costs_command_ns(&pc.costs, CVM_PSP_CMD_DECOMMISSION, 0);
        cvm_sched_config sc;
        cvm_sched_config_default(&sc);
        sc.enabled = o->schedule;
        cvm_pool_budget budget = {.memory_mib = o->memory_budget_mib, .vms = o->asids};
        int ret = cvm_clock_virtual_new(0, &r->clock, err);
        if (ret >= 0)
                ret = cvm_psp_sim_new(r->clock, &pc, &r->psp, err);
        if (ret >= 0)
                ret = cvm_sched_new(r->clock, &sc, asids_available, r, &r->sched, err);
        if (ret >= 0)
                ret = cvm_pool_new(r->clock, &backend, r, &budget, &r->pool, err);
        if (ret >= 0)
                ret = cvm_timer_new(r->clock, on_arrival_timer, r, &r->arrival_timer, err);
        for (uint32_t i = 0; ret >= 0 && i < t->nfns; i++) {
                cvm_pool_settings s = {.min_warm = 0,
                                       .max_vms = o->asids,
                                       .concurrency = 1,
                                       .memory_mib = t->fns[i].memory_mib,
                                       .max_waiting = UINT32_MAX,
                                       .expected_launch_ns =
                                               o->prepare_ns + r->launch_ns + o->boot_ns};
                cvm_policy_params_default(&s.policy);
                s.policy.kind = kind;
                s.policy.keep_alive_s = o->keep_alive_s;
                char name[32];
                snprintf(name, sizeof(name), "fn%u", i);
                ret = cvm_pool_fn_new(r->pool, name, &s, &t->fns[i], &t->fns[i].pool, err);
        }
        if (ret >= 0 && t->minutes) {
                ret = fill_minute(r);
                if (ret < 0)
                        cvm_error_set(err, ret, "out of memory");
        }
        if (ret < 0) {
                replay_free(r);
                free(r);
                return ret;
        }
        cvm_timer_start_at(r->arrival_timer, 0);
        /* Runs to the trace's end in one-minute steps, then lets the
         * invocations in flight finish (idle time is not counted past the end). */
        for (uint64_t at = 0; at < r->end_ns && !r->fatal; at += MINUTE_NS)
                cvm_clock_virtual_advance(r->clock, MINUTE_NS);
        while (r->inflight && !r->fatal && cvm_clock_virtual_run(r->clock, 100000) > 0)
                ;
        if (r->fatal) {
                ret = r->fatal;
                *err = r->fatal_err;
        }
        for (mvm *m = r->vms; m; m = m->next)
                if (m->state == MVM_READY && !m->active)
                        idle_add(r, m);

        *res = (result){.policy = cvm_policy_kind_to_string(kind),
                        .invocations = r->invocations,
                        .cold = r->cold,
                        .warm = r->warm,
                        .failed = r->failed,
                        .rejected = r->rejected,
                        .demand_launches = r->demand_launches,
                        .idle_gib_s = r->idle_mib_ns / 1024 / 1e9,
                        .wait_p50_ms = hist_pct_ms(&r->wait, 50),
                        .wait_p99_ms = hist_pct_ms(&r->wait, 99),
                        .cold_p50_ms = hist_pct_ms(&r->cold_wait, 50),
                        .cold_p99_ms = hist_pct_ms(&r->cold_wait, 99),
                        .peak_vms = r->peak_vms,
                        .end_ns = r->end_ns};
        /* The paper's view: each function's own cold-start fraction. */
        double *fr = calloc(t->nfns ? t->nfns : 1, sizeof(*fr));
        size_t nfr = 0;
        for (uint32_t i = 0; i < t->nfns; i++) {
                cvm_pool_fn_stats st;
                cvm_pool_fn_get_stats(t->fns[i].pool, &st);
                if (fr && st.invocations)
                        fr[nfr++] = 100.0 * (double)st.cold / (double)st.invocations;
                res->launches += st.launches;
                res->launch_failures += st.launch_failures;
                res->evictions += st.evictions;
                if (o->per_function)
                        printf("  %s %-8s %10" PRIu64 " inv %8" PRIu64 " cold %8" PRIu64
                               " launches %6u MiB %s\n",
                               cvm_policy_kind_to_string(kind), cvm_pool_fn_name(t->fns[i].pool),
                               st.invocations, st.cold, st.launches, t->fns[i].memory_mib,
                               t->fns[i].key + 130);
        }
        if (nfr) {
                qsort(fr, nfr, sizeof(*fr), double_cmp);
                double sum = 0;
                for (size_t i = 0; i < nfr; i++)
                        sum += fr[i];
                res->fn_cold_mean_pct = sum / (double)nfr;
                size_t rank = (75 * nfr + 99) / 100;
                res->fn_cold_p75_pct = fr[rank ? rank - 1 : 0];
        }
        free(fr);
        cvm_psp_sim_stats ps;
        cvm_psp_sim_stats_get(r->psp, &ps);
        res->psp_busy_s = (double)ps.busy_ns / 1e9;
        res->df_flushes = ps.df_flushes;
        replay_free(r);
        free(r);
        res->wall_s = now_s() - wall0;
        return ret;
}

/* CSV loading. */

typedef struct csv {
        char *data;
        char **lines;
        size_t nlines;
} csv;

static void csv_free(csv *c) {
        free(c->data);
        free(c->lines);
}

static int csv_load(const char *dir, const char *name, csv *c, cvm_error *err) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        *c = (csv){0};
        FILE *f = fopen(path, "r");
        if (!f)
                return cvm_error_set_errno(err, -errno, "cannot open %s", path);
        int ret = 0;
        if (fseek(f, 0, SEEK_END) < 0)
                ret = cvm_error_set_errno(err, -errno, "cannot seek %s", path);
        long size = ret < 0 ? -1 : ftell(f);
        if (ret >= 0 && (size < 0 || fseek(f, 0, SEEK_SET) < 0))
                ret = cvm_error_set_errno(err, -errno, "cannot seek %s", path);
        if (ret >= 0 && !(c->data = malloc((size_t)size + 1)))
                ret = cvm_error_set(err, -ENOMEM, "out of memory");
        if (ret >= 0 && fread(c->data, 1, (size_t)size, f) != (size_t)size)
                ret = cvm_error_set(err, -EIO, "cannot read %s", path);
        fclose(f);
        if (ret < 0) {
                csv_free(c);
                return ret;
        }
        c->data[size] = 0;
        size_t cap = 0;
        for (char *p = c->data; *p;) {
                char *nl = strchr(p, '\n');
                if (nl)
                        *nl = 0;
                size_t len = strlen(p);
                if (len && p[len - 1] == '\r')
                        p[len - 1] = 0;
                if (*p) {
                        if (c->nlines == cap) {
                                cap = cap ? cap * 2 : 256;
                                char **l = realloc(c->lines, cap * sizeof(*l));
                                if (!l) {
                                        csv_free(c);
                                        return cvm_error_set(err, -ENOMEM, "out of memory");
                                }
                                c->lines = l;
                        }
                        c->lines[c->nlines++] = p;
                }
                if (!nl)
                        break;
                p = nl + 1;
        }
        if (!c->nlines) {
                csv_free(c);
                return cvm_error_set(err, -EINVAL, "%s is empty", path);
        }
        return 0;
}

/* Splits a line in place at commas into at most max fields; returns the count. */
static size_t split(char *line, char **fields, size_t max) {
        size_t n = 0;
        for (char *p = line; n < max;) {
                fields[n++] = p;
                char *c = strchr(p, ',');
                if (!c)
                        break;
                *c = 0;
                p = c + 1;
        }
        return n;
}

static int col_index(char **hdr, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(hdr[i], name))
                        return (int)i;
        return -1;
}

static fn_rec *find_fn(trace *t, const char *key) {
        for (uint32_t i = 0; i < t->nfns; i++)
                if (!strcmp(t->fns[i].key, key))
                        return &t->fns[i];
        return NULL;
}

#define MAX_COLS 2048

static int load_trace(const options *o, trace *t, cvm_error *err) {
        *t = (trace){0};
        char **fld = calloc(MAX_COLS, sizeof(*fld));
        if (!fld)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        csv ic = {0}, dur = {0}, mem = {0};
        int ret = csv_load(o->dir, "invocations.csv", &ic, err);
        if (ret >= 0)
                ret = csv_load(o->dir, "durations.csv", &dur, err);
        if (ret >= 0)
                ret = csv_load(o->dir, "memory.csv", &mem, err);
        size_t ncols = 0;
        if (ret >= 0) {
                ncols = split(ic.lines[0], fld, MAX_COLS);
                if (ncols < 5 || strcmp(fld[0], "HashOwner") || strcmp(fld[3], "Trigger"))
                        ret = cvm_error_set(err, -EINVAL,
                                            "invocations.csv: unexpected header (want "
                                            "HashOwner,HashApp,HashFunction,Trigger,minutes...)");
        }
        if (ret >= 0) {
                uint32_t minutes = (uint32_t)(ncols - 4);
                t->minutes = o->minutes && o->minutes < minutes ? o->minutes : minutes;
                size_t rows = ic.nlines - 1;
                t->nfns = (uint32_t)(o->functions && o->functions < rows ? o->functions : rows);
                t->fns = calloc(t->nfns, sizeof(*t->fns));
                if (!t->fns)
                        ret = cvm_error_set(err, -ENOMEM, "out of memory");
        }
        for (uint32_t i = 0; ret >= 0 && i < t->nfns; i++) {
                fn_rec *f = &t->fns[i];
                size_t n = split(ic.lines[i + 1], fld, MAX_COLS);
                if (n != ncols) {
                        ret = cvm_error_set(err, -EINVAL,
                                            "invocations.csv line %u: %zu fields, want %zu", i + 2,
                                            n, ncols);
                        break;
                }
                snprintf(f->key, sizeof(f->key), "%.64s/%.64s/%.64s", fld[0], fld[1], fld[2]);
                if (!(f->counts = calloc(t->minutes, sizeof(*f->counts)))) {
                        ret = cvm_error_set(err, -ENOMEM, "out of memory");
                        break;
                }
                for (uint32_t m = 0; m < t->minutes; m++) {
                        char *end;
                        errno = 0;
                        unsigned long v = strtoul(fld[4 + m], &end, 10);
                        if (errno || end == fld[4 + m] || *end || v > 1000000) {
                                ret = cvm_error_set(err, -EINVAL,
                                                    "invocations.csv line %u: bad count %s", i + 2,
                                                    CVM_QUOTE(fld[4 + m]));
                                break;
                        }
                        f->counts[m] = (uint32_t)v;
                        f->total += v;
                }
                t->invocations += f->total;
                f->memory_mib = MEMORY_MIN_MIB;
        }
        /* durations.csv: percentiles of each function's execution time (ms). */
        int dcol[NPCT] = {0}, d_owner = -1, d_app = -1, d_fn = -1;
        if (ret >= 0) {
                size_t n = split(dur.lines[0], fld, MAX_COLS);
                d_owner = col_index(fld, n, "HashOwner");
                d_app = col_index(fld, n, "HashApp");
                d_fn = col_index(fld, n, "HashFunction");
                for (int k = 0; k < NPCT; k++)
                        if ((dcol[k] = col_index(fld, n, pct_col[k])) < 0)
                                d_owner = -1;
                if (d_owner < 0 || d_app < 0 || d_fn < 0)
                        ret = cvm_error_set(err, -EINVAL, "durations.csv: unexpected header");
        }
        for (size_t l = 1; ret >= 0 && l < dur.nlines; l++) {
                size_t n = split(dur.lines[l], fld, MAX_COLS);
                if (n <= (size_t)dcol[NPCT - 1])
                        continue;
                char key[200];
                snprintf(key, sizeof(key), "%.64s/%.64s/%.64s", fld[d_owner], fld[d_app],
                         fld[d_fn]);
                fn_rec *f = find_fn(t, key);
                if (!f)
                        continue;
                for (int k = 0; k < NPCT; k++)
                        f->pct_ms[k] = strtod(fld[dcol[k]], NULL);
                f->has_duration = true;
        }
        /* memory.csv: AverageAllocatedMb per function. */
        int m_owner = -1, m_app = -1, m_fn = -1, m_avg = -1;
        if (ret >= 0) {
                size_t n = split(mem.lines[0], fld, MAX_COLS);
                m_owner = col_index(fld, n, "HashOwner");
                m_app = col_index(fld, n, "HashApp");
                m_fn = col_index(fld, n, "HashFunction");
                m_avg = col_index(fld, n, "AverageAllocatedMb");
                if (m_owner < 0 || m_app < 0 || m_fn < 0 || m_avg < 0)
                        ret = cvm_error_set(err, -EINVAL, "memory.csv: unexpected header");
        }
        for (size_t l = 1; ret >= 0 && l < mem.nlines; l++) {
                size_t n = split(mem.lines[l], fld, MAX_COLS);
                if (n <= (size_t)m_avg)
                        continue;
                char key[200];
                snprintf(key, sizeof(key), "%.64s/%.64s/%.64s", fld[m_owner], fld[m_app],
                         fld[m_fn]);
                fn_rec *f = find_fn(t, key);
                if (!f)
                        continue;
                double mb = strtod(fld[m_avg], NULL);
                f->memory_mib = mb > MEMORY_MIN_MIB ? (uint32_t)(mb + 0.5) : MEMORY_MIN_MIB;
                f->has_memory = true;
        }
        for (uint32_t i = 0; ret >= 0 && i < t->nfns; i++) {
                if (!t->fns[i].has_duration) {
                        /* No figure: a 1 s invocation, counted in the report. */
                        t->missing_duration++;
                        for (int k = 0; k < NPCT; k++)
                                t->fns[i].pct_ms[k] = 1000;
                }
                if (!t->fns[i].has_memory)
                        t->missing_memory++;
        }
        if (ret >= 0) {
                t->invocations = 0;
                for (uint32_t i = 0; i < t->nfns; i++)
                        t->invocations += t->fns[i].total;
        }
        csv_free(&ic);
        csv_free(&dur);
        csv_free(&mem);
        free(fld);
        return ret;
}

static void trace_free(trace *t) {
        for (uint32_t i = 0; i < t->nfns; i++)
                free(t->fns[i].counts);
        free(t->fns);
}

/* Output. */

static void print_result(const result *r) {
        uint64_t served = r->invocations;
        printf("policy %s\n", r->policy);
        printf("  invocations       %" PRIu64 " served, %" PRIu64 " failed, %" PRIu64 " rejected\n",
               served, r->failed, r->rejected);
        printf("  cold starts       %" PRIu64 " (%.4f%%), warm %" PRIu64 "\n", r->cold,
               served ? 100.0 * (double)r->cold / (double)served : 0.0, r->warm);
        printf("  per function      cold-start %% mean %.2f, p75 %.2f\n", r->fn_cold_mean_pct,
               r->fn_cold_p75_pct);
        printf("  cold start wait   p50 %.1f ms, p99 %.1f ms (request to VM)\n", r->cold_p50_ms,
               r->cold_p99_ms);
        printf("  launches          %" PRIu64 " (%" PRIu64 " on demand), %" PRIu64
               " failed, %" PRIu64 " evictions, peak %u VMs\n",
               r->launches, r->demand_launches, r->launch_failures, r->evictions, r->peak_vms);
        printf("  idle memory-time  %.1f GiB*s (%.2f GiB on average)\n", r->idle_gib_s,
               r->end_ns ? r->idle_gib_s / ((double)r->end_ns / 1e9) : 0.0);
        printf("  PSP busy          %.1f s (%.3f%% of %.0f s), %" PRIu64 " DF_FLUSH\n",
               r->psp_busy_s, r->end_ns ? 100 * r->psp_busy_s / ((double)r->end_ns / 1e9) : 0.0,
               (double)r->end_ns / 1e9, r->df_flushes);
        printf("  demand PSP wait   p50 %.2f ms, p99 %.2f ms\n", r->wait_p50_ms, r->wait_p99_ms);
        printf("  wall time         %.1f s\n", r->wall_s);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int usage(void) {
        fprintf(stderr, "usage: trace-replay [--policy fixed|histogram|both] [--keep-alive-s 600]\n"
                        "       [--schedule cvmd|none] [--minutes N] [--functions N] [--seed S]\n"
                        "       [--memory-budget-mib M] [--asids N] [--ovmf] [--boot-ms 125]\n"
                        "       [--prepare-ms 10] [--verbose] [--per-function] TRACE_DIR\n");
        return 2;
}

int main(int argc, char **argv) {
        options o = {.policies = 3,
                     .keep_alive_s = CVM_POLICY_KEEP_ALIVE_DEFAULT_S,
                     .schedule = true,
                     .seed = 1,
                     .memory_budget_mib = UINT64_C(1) << 20,
                     .asids = CVM_PSP_ASIDS_DEFAULT,
                     .boot_ns = 125 * MS,
                     .prepare_ns = 10 * MS};
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                uint64_t n;
                if (!strcmp(a, "--ovmf")) {
                        o.ovmf = true;
                        continue;
                }
                if (!strcmp(a, "--verbose")) {
                        o.verbose = true;
                        continue;
                }
                if (!strcmp(a, "--per-function")) {
                        o.per_function = true;
                        continue;
                }
                if (a[0] != '-') {
                        if (o.dir)
                                return usage();
                        o.dir = a;
                        continue;
                }
                if (!v)
                        return usage();
                i++;
                if (!strcmp(a, "--policy")) {
                        if (!strcmp(v, "fixed"))
                                o.policies = 1;
                        else if (!strcmp(v, "histogram"))
                                o.policies = 2;
                        else if (!strcmp(v, "both"))
                                o.policies = 3;
                        else
                                return usage();
                } else if (!strcmp(a, "--schedule")) {
                        if (!strcmp(v, "cvmd"))
                                o.schedule = true;
                        else if (!strcmp(v, "none"))
                                o.schedule = false;
                        else
                                return usage();
                } else if (!strcmp(a, "--keep-alive-s") &&
                           !parse_u64(v, CVM_POLICY_KEEP_ALIVE_MAX_S, &n)) {
                        o.keep_alive_s = (uint32_t)n;
                } else if (!strcmp(a, "--minutes") && !parse_u64(v, UINT32_MAX, &n)) {
                        o.minutes = (uint32_t)n;
                } else if (!strcmp(a, "--functions") && !parse_u64(v, UINT32_MAX, &n)) {
                        o.functions = (uint32_t)n;
                } else if (!strcmp(a, "--seed") && !parse_u64(v, UINT64_MAX, &n)) {
                        o.seed = n;
                } else if (!strcmp(a, "--memory-budget-mib") && !parse_u64(v, UINT64_MAX, &n)) {
                        o.memory_budget_mib = n;
                } else if (!strcmp(a, "--asids") && !parse_u64(v, CVM_PSP_ASIDS_MAX, &n) && n) {
                        o.asids = (uint32_t)n;
                } else if (!strcmp(a, "--boot-ms") && !parse_u64(v, 3600000, &n)) {
                        o.boot_ns = n * MS;
                } else if (!strcmp(a, "--prepare-ms") && !parse_u64(v, 3600000, &n)) {
                        o.prepare_ns = n * MS;
                } else {
                        return usage();
                }
        }
        if (!o.dir)
                return usage();
        cvm_log_set_level(o.verbose ? CVM_LOG_INFO : CVM_LOG_ERROR);

        cvm_error err = {0};
        trace t;
        if (load_trace(&o, &t, &err) < 0) {
                fprintf(stderr, "trace-replay: %s\n", err.message);
                trace_free(&t);
                return 1;
        }
        printf("# trace %s: %u functions, %u minutes, %" PRIu64 " invocations"
               " (no duration: %u, no memory: %u)\n",
               o.dir, t.nfns, t.minutes, t.invocations, t.missing_duration, t.missing_memory);
        printf("# seed %" PRIu64 ", schedule %s, keep-alive %u s, %s image (%s), ASIDs %u,"
               " memory budget %" PRIu64 " MiB, boot %" PRIu64 " ms, prepare %" PRIu64 " ms\n",
               o.seed, o.schedule ? "cvmd" : "none", o.keep_alive_s,
               o.ovmf ? "OVMF-sized" : "verifier-sized",
               o.ovmf ? "512 pages + 1 VMSA" : "4 pages + 1 VMSA", o.asids, o.memory_budget_mib,
               o.boot_ns / MS, o.prepare_ns / MS);
        result res[2];
        int nres = 0, rc = 0;
        for (int k = 0; k < 2; k++) {
                if (!(o.policies & (1 << k)))
                        continue;
                cvm_policy_kind kind = k ? CVM_POLICY_HISTOGRAM : CVM_POLICY_FIXED;
                if (run_one(&o, &t, kind, &res[nres], &err) < 0) {
                        fprintf(stderr, "trace-replay: %s: %s\n", cvm_policy_kind_to_string(kind),
                                err.message);
                        rc = 1;
                        break;
                }
                print_result(&res[nres]);
                fflush(stdout);
                nres++;
        }
        if (nres == 2) {
                const result *f = &res[0], *h = &res[1];
                double fc = f->invocations ? (double)f->cold / (double)f->invocations : 0;
                double hc = h->invocations ? (double)h->cold / (double)h->invocations : 0;
                printf("comparison (histogram vs fixed)\n");
                printf("  cold-start fraction  %.4f%% vs %.4f%% (%.2fx)\n", 100 * hc, 100 * fc,
                       fc > 0 ? hc / fc : 0.0);
                printf("  per-function cold %%  mean %.2f vs %.2f, p75 %.2f vs %.2f\n",
                       h->fn_cold_mean_pct, f->fn_cold_mean_pct, h->fn_cold_p75_pct,
                       f->fn_cold_p75_pct);
                printf("  idle memory-time     %.1f vs %.1f GiB*s (%.2fx)\n", h->idle_gib_s,
                       f->idle_gib_s, f->idle_gib_s > 0 ? h->idle_gib_s / f->idle_gib_s : 0.0);
                printf("  PSP busy             %.1f vs %.1f s\n", h->psp_busy_s, f->psp_busy_s);
                printf("  target (fewer cold starts, no more idle memory-time): %s\n",
                       hc < fc && h->idle_gib_s <= f->idle_gib_s ? "met" : "not met");
        }
        trace_free(&t);
        return rc;
}
