/* Warm pools on a virtual clock with a fake backend: cold then warm starts,
 * late binding, demand launches per concurrency, min_warm refills,
 * keep-alive, budgets and eviction, max_waiting, cancel, launch failures
 * and back-off, settings updates, deletion, and the histogram policy's
 * unload and pre-warm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "pool.h"

#define MS CVM_NSEC_PER_MSEC
#define SEC CVM_NSEC_PER_SEC
#define LAUNCH_NS SEC /* The fake's launch time. */
#define MAX_FVMS 256

typedef struct ctx ctx;

/* A fake VM: its launch is a timer; a retire reports gone on a later turn. */
typedef struct fvm {
        ctx *c;
        cvm_pool_vm *pvm;
        cvm_timer *timer;
        bool demand, promoted, ready, retired, gone, failed;
        uint32_t fn_tag; /* The function's userdata, as an integer. */
} fvm;

struct ctx {
        cvm_clock *clock;
        cvm_pool *pool;
        bool fail_launches;
        bool refuse_launches; /* The backend refuses at once, inside the launch call. */
        uint64_t launch_ns;
        fvm *vms[MAX_FVMS];
        int nvms;
        int launches, demand_launches, promotes, retires, gones, failures;
        uint64_t budget_mib;      /* Checked at every launch when not 0. */
        uint64_t max_memory_seen; /* The most memory in use at a launch. */
};

/* An invocation's request. */
typedef struct req {
        ctx *c;
        cvm_pool_vm *vm;
        cvm_pool_waiter *w;
        int result; /* Of acquire. */
        int err;    /* The grant's error code, if the wait failed. */
        bool granted, cold;
        uint64_t queue_ns;
} req;

static void on_fvm_timer(cvm_timer *t, void *ud) {
        (void)t;
        fvm *v = ud;
        if (v->retired) {
                v->gone = true;
                v->c->gones++;
                cvm_pool_vm_gone(v->pvm);
                return;
        }
        if (v->c->fail_launches) {
                cvm_error err;
                cvm_error_set(&err, -EIO, "fake launch failed");
                v->failed = true;
                v->c->failures++;
                cvm_pool_vm_failed(v->pvm, &err);
                return;
        }
        v->ready = true;
        cvm_pool_vm_ready(v->pvm);
}

static int fake_launch(void *ud, cvm_pool_vm *pvm, bool demand, cvm_error *err) {
        ctx *c = ud;
        if (c->refuse_launches)
                return cvm_error_set(err, -EINVAL, "fake launch refused");
        if (c->nvms == MAX_FVMS)
                return cvm_error_set(err, -ENOSPC, "too many fake VMs");
        fvm *v = calloc(1, sizeof(*v));
        if (!v)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r = cvm_timer_new(c->clock, on_fvm_timer, v, &v->timer, err);
        if (r < 0) {
                free(v);
                return r;
        }
        v->c = c;
        v->pvm = pvm;
        v->demand = demand;
        v->fn_tag = (uint32_t)(uintptr_t)cvm_pool_fn_userdata(cvm_pool_vm_fn(pvm));
        c->vms[c->nvms++] = v;
        c->launches++;
        if (demand)
                c->demand_launches++;
        cvm_pool_stats st;
        cvm_pool_get_stats(c->pool, &st);
        if (st.memory_mib_in_use > c->max_memory_seen)
                c->max_memory_seen = st.memory_mib_in_use;
        if (c->budget_mib)
                assert_true(st.memory_mib_in_use <= c->budget_mib);
        cvm_pool_vm_set_handle(pvm, v);
        cvm_timer_start(v->timer, c->launch_ns);
        return 0;
}

static void fake_promote(void *ud, cvm_pool_vm *pvm) {
        ctx *c = ud;
        fvm *v = cvm_pool_vm_handle(pvm);
        assert_false(v->demand);
        v->promoted = true;
        c->promotes++;
}

static void fake_retire(void *ud, cvm_pool_vm *pvm, const char *reason) {
        ctx *c = ud;
        fvm *v = cvm_pool_vm_handle(pvm);
        assert_non_null(reason);
        assert_false(v->retired);
        v->retired = true;
        c->retires++;
        /* Gone on a later turn, never inside this call. */
        cvm_timer_start(v->timer, 0);
}

static const cvm_pool_backend fake = {
        .launch = fake_launch,
        .promote = fake_promote,
        .retire = fake_retire,
};

static void setup_budget(ctx *c, const cvm_pool_budget *b) {
        memset(c, 0, sizeof(*c));
        c->launch_ns = LAUNCH_NS;
        c->budget_mib = b->memory_mib;
        assert_int_equal(cvm_clock_virtual_new(0, &c->clock, NULL), 0);
        cvm_error err = {0};
        if (cvm_pool_new(c->clock, &fake, c, b, &c->pool, &err) < 0)
                fail_msg("cvm_pool_new: %s", err.message);
}

static void setup(ctx *c) {
        cvm_pool_budget b = {0};
        setup_budget(c, &b);
}

static void teardown(ctx *c) {
        cvm_pool_free(c->pool);
        for (int i = 0; i < c->nvms; i++) {
                cvm_timer_free(c->vms[i]->timer);
                free(c->vms[i]);
        }
        cvm_clock_virtual_free(c->clock);
}

static cvm_pool_settings settings(void) {
        cvm_pool_settings s = {.min_warm = 0,
                               .max_vms = 10,
                               .concurrency = 1,
                               .memory_mib = 256,
                               .max_waiting = 100,
                               .expected_launch_ns = LAUNCH_NS};
        cvm_policy_params_default(&s.policy);
        s.policy.keep_alive_s = 60;
        return s;
}

static cvm_pool_fn *new_fn(ctx *c, const char *name, const cvm_pool_settings *s, uint32_t tag) {
        cvm_pool_fn *fn = NULL;
        cvm_error err = {0};
        if (cvm_pool_fn_new(c->pool, name, s, (void *)(uintptr_t)tag, &fn, &err) < 0)
                fail_msg("cvm_pool_fn_new: %s", err.message);
        return fn;
}

static void on_grant(cvm_pool_waiter *w, const cvm_pool_grant *g, void *ud) {
        (void)w;
        req *r = ud;
        assert_false(r->granted);
        r->granted = true;
        r->w = NULL;
        r->vm = g->vm;
        r->cold = g->cold;
        r->queue_ns = g->queue_ns;
        r->err = g->vm ? 0 : g->err->code;
        if (g->vm)
                assert_null(g->err);
}

static int acquire(ctx *c, cvm_pool_fn *fn, req *r) {
        memset(r, 0, sizeof(*r));
        r->c = c;
        cvm_error err = {0};
        r->result = cvm_pool_acquire(fn, on_grant, r, &r->vm, &r->w, &err);
        if (r->result == 1)
                r->granted = true;
        else if (r->result < 0)
                r->err = r->result;
        return r->result;
}

static void release(req *r) {
        assert_non_null(r->vm);
        cvm_pool_release(r->vm);
        r->vm = NULL;
}

static cvm_pool_fn_stats fstats(cvm_pool_fn *fn) {
        cvm_pool_fn_stats st;
        cvm_pool_fn_get_stats(fn, &st);
        return st;
}

static void advance(ctx *c, uint64_t ns) {
        cvm_clock_virtual_advance(c->clock, ns);
}

static int alive_vms(ctx *c) {
        int n = 0;
        for (int i = 0; i < c->nvms; i++)
                if (!c->vms[i]->retired && !c->vms[i]->failed && !c->vms[i]->gone)
                        n++;
        return n;
}

/* The first acquire waits for one demand launch and is cold; after a
 * release the next one is warm and immediate. */
static void test_cold_then_warm(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        assert_int_equal(c.launches, 0);
        req r;
        assert_int_equal(acquire(&c, fn, &r), 0);
        assert_int_equal(c.launches, 1);
        assert_int_equal(c.demand_launches, 1);
        assert_false(r.granted);
        advance(&c, LAUNCH_NS);
        assert_true(r.granted);
        assert_true(r.cold);
        assert_int_equal(r.queue_ns, LAUNCH_NS);
        cvm_pool_vm *vm = r.vm;
        release(&r);
        advance(&c, SEC);
        req r2;
        assert_int_equal(acquire(&c, fn, &r2), 1);
        assert_ptr_equal(r2.vm, vm);
        assert_int_equal(c.launches, 1);
        release(&r2);
        cvm_pool_fn_stats st = fstats(fn);
        assert_int_equal(st.invocations, 2);
        assert_int_equal(st.cold, 1);
        assert_int_equal(st.warm, 1);
        assert_int_equal(st.ready, 1);
        teardown(&c);
}

/* Two waiters, one launch in flight (max_vms 2), and a VM released by
 * another invocation: the first waiter takes the released VM, warm; the
 * launch serves the second, cold. */
static void test_late_binding(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.max_vms = 2;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r0, r1, r2;
        acquire(&c, fn, &r0);
        advance(&c, LAUNCH_NS);
        assert_true(r0.granted);
        cvm_pool_vm *a = r0.vm;
        advance(&c, MS);
        assert_int_equal(acquire(&c, fn, &r1), 0);
        assert_int_equal(acquire(&c, fn, &r2), 0);
        assert_int_equal(c.launches, 2); /* max_vms: one launch for two waiters. */
        advance(&c, LAUNCH_NS / 2);
        release(&r0);
        assert_true(r1.granted);
        assert_ptr_equal(r1.vm, a);
        assert_false(r1.cold);
        assert_false(r2.granted);
        advance(&c, LAUNCH_NS / 2);
        assert_true(r2.granted);
        assert_true(r2.cold);
        assert_ptr_not_equal(r2.vm, a);
        release(&r1);
        release(&r2);
        assert_int_equal(c.launches, 2);
        teardown(&c);
}

/* N waiters with concurrency C need ceil(N / C) launches, capped by max_vms;
 * a VM with free slots serves several. */
static void test_launches_per_concurrency(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.concurrency = 3;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r[7];
        for (int i = 0; i < 7; i++) {
                assert_int_equal(acquire(&c, fn, &r[i]), 0);
                assert_int_equal(c.launches, i / 3 + 1);
        }
        advance(&c, LAUNCH_NS);
        for (int i = 0; i < 7; i++) {
                assert_true(r[i].granted);
                assert_true(r[i].cold);
        }
        assert_ptr_equal(r[0].vm, r[2].vm);
        assert_int_equal(fstats(fn).busy, 3);
        for (int i = 0; i < 7; i++)
                release(&r[i]);
        teardown(&c);

        setup(&c);
        s.max_vms = 2;
        fn = new_fn(&c, "f", &s, 1);
        for (int i = 0; i < 7; i++)
                acquire(&c, fn, &r[i]);
        assert_int_equal(c.launches, 2);
        advance(&c, LAUNCH_NS);
        for (int i = 0; i < 6; i++)
                assert_true(r[i].granted);
        assert_false(r[6].granted);
        assert_int_equal(fstats(fn).waiting, 1);
        release(&r[0]);
        assert_true(r[6].granted);
        assert_true(r[6].cold); /* It arrived before that VM was ready. */
        for (int i = 1; i < 7; i++)
                release(&r[i]);
        assert_int_equal(c.launches, 2);
        teardown(&c);
}

/* min_warm VMs are launched at creation (prewarm) and refilled after one dies. */
static void test_min_warm_refill(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.min_warm = 2;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        assert_int_equal(c.launches, 2);
        assert_int_equal(c.demand_launches, 0);
        advance(&c, LAUNCH_NS);
        assert_int_equal(fstats(fn).ready, 2);
        /* Kept for good: they are the minimum, whatever the keep-alive. */
        advance(&c, 3600 * SEC);
        assert_int_equal(c.retires, 0);
        req r;
        assert_int_equal(acquire(&c, fn, &r), 1);
        release(&r);
        /* One dies: the pool forgets it and launches a replacement. */
        c.vms[0]->gone = true;
        cvm_pool_vm_gone(c.vms[0]->pvm);
        assert_int_equal(c.launches, 3);
        assert_false(c.vms[2]->demand);
        assert_int_equal(fstats(fn).launching, 1);
        advance(&c, LAUNCH_NS);
        assert_int_equal(fstats(fn).ready, 2);
        teardown(&c);
}

/* An idle VM above min_warm retires after keep_alive_s; one at min_warm
 * stays. A prewarm launch a waiter needs is promoted, not doubled. */
static void test_keep_alive(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.min_warm = 1;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        assert_int_equal(c.launches, 1);
        req r0, r1;
        acquire(&c, fn, &r0);
        assert_int_equal(c.promotes, 1);
        assert_int_equal(c.launches, 1);
        acquire(&c, fn, &r1);
        assert_int_equal(c.launches, 2);
        assert_int_equal(c.demand_launches, 1);
        advance(&c, LAUNCH_NS);
        assert_true(r0.granted && r1.granted);
        release(&r0);
        release(&r1);
        advance(&c, 60 * SEC - 1);
        assert_int_equal(c.retires, 0);
        advance(&c, 1);
        assert_int_equal(c.retires, 1);
        advance(&c, 1);
        assert_int_equal(c.gones, 1);
        advance(&c, 3600 * SEC);
        assert_int_equal(c.retires, 1);
        assert_int_equal(fstats(fn).ready, 1);
        assert_int_equal(alive_vms(&c), 1);
        teardown(&c);
}

/* Memory budget full: a demand launch of B retires A's least recently used
 * idle VM first and launches when it is gone; the budget is never exceeded. */
static void test_budget_eviction(void **state) {
        (void)state;
        ctx c;
        cvm_pool_budget b = {.memory_mib = 512};
        setup_budget(&c, &b);
        cvm_pool_settings s = settings();
        s.policy.keep_alive_s = 3600;
        cvm_pool_fn *fa = new_fn(&c, "a", &s, 1);
        cvm_pool_fn *fb = new_fn(&c, "b", &s, 2);
        req r0, r1;
        acquire(&c, fa, &r0);
        acquire(&c, fa, &r1);
        advance(&c, LAUNCH_NS);
        cvm_pool_vm *older = r0.vm, *newer = r1.vm;
        release(&r0); /* Used first: the LRU one. */
        advance(&c, SEC);
        release(&r1);
        fvm *v_older = cvm_pool_vm_handle(older), *v_newer = cvm_pool_vm_handle(newer);
        req rb;
        assert_int_equal(acquire(&c, fb, &rb), 0);
        assert_true(v_older->retired);
        assert_false(v_newer->retired);
        assert_int_equal(c.launches, 2); /* B waits for the room. */
        assert_int_equal(fstats(fa).evictions, 1);
        advance(&c, 0);
        assert_true(v_older->gone);
        assert_int_equal(c.launches, 3);
        assert_int_equal(c.vms[2]->fn_tag, 2);
        advance(&c, LAUNCH_NS);
        assert_true(rb.granted);
        assert_true(rb.cold);
        /* B's VM is busy and A's is idle: a second B waiter evicts A's last. */
        req rb2;
        acquire(&c, fb, &rb2);
        assert_true(v_newer->retired);
        advance(&c, LAUNCH_NS);
        assert_true(rb2.granted);
        release(&rb);
        release(&rb2);
        /* With every VM busy nothing can be evicted: the waiter waits. */
        req x0, x1, x2;
        assert_int_equal(acquire(&c, fb, &x0), 1);
        assert_int_equal(acquire(&c, fb, &x1), 1);
        assert_int_equal(acquire(&c, fa, &x2), 0);
        assert_int_equal(c.launches, 4);
        assert_false(x2.granted);
        advance(&c, LAUNCH_NS);
        assert_false(x2.granted);
        cvm_pool_cancel(x2.w);
        release(&x0);
        release(&x1);
        assert_true(c.max_memory_seen <= 512);
        cvm_pool_stats ps;
        cvm_pool_get_stats(c.pool, &ps);
        assert_true(ps.memory_mib_in_use <= 512);
        teardown(&c);
}

/* The VM-count budget too: a second function's demand evicts the first's idle VM. */
static void test_budget_vms(void **state) {
        (void)state;
        ctx c;
        cvm_pool_budget b = {.vms = 1};
        setup_budget(&c, &b);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fa = new_fn(&c, "a", &s, 1);
        cvm_pool_fn *fb = new_fn(&c, "b", &s, 2);
        req r;
        acquire(&c, fa, &r);
        advance(&c, LAUNCH_NS);
        release(&r);
        req rb;
        acquire(&c, fb, &rb);
        assert_int_equal(c.retires, 1);
        assert_int_equal(c.launches, 1);
        advance(&c, 0);
        assert_int_equal(c.launches, 2);
        cvm_pool_stats ps;
        cvm_pool_get_stats(c.pool, &ps);
        assert_int_equal(ps.vms, 1);
        advance(&c, LAUNCH_NS);
        assert_true(rb.granted);
        release(&rb);
        teardown(&c);
}

/* A function held back by the budget is planned again when another's launch
 * fails (its room is free) and when another's VM becomes ready with nothing
 * to do (it can be evicted), not only when a VM is released. */
static void test_budget_replan(void **state) {
        (void)state;
        ctx c;
        cvm_pool_budget b = {.vms = 1};
        setup_budget(&c, &b);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fa = new_fn(&c, "a", &s, 1);
        cvm_pool_fn *fb = new_fn(&c, "b", &s, 2);
        req ra, rb;
        c.fail_launches = true;
        acquire(&c, fa, &ra);
        acquire(&c, fb, &rb);
        assert_int_equal(c.launches, 1);
        advance(&c, LAUNCH_NS);
        assert_true(ra.granted);
        assert_int_equal(ra.err, -EIO);
        assert_int_equal(c.launches, 2);
        c.fail_launches = false;
        advance(&c, LAUNCH_NS);
        assert_true(rb.granted);
        assert_non_null(rb.vm);
        release(&rb);

        /* B's VM is idle: A's demand evicts it and launches. Then B waits
         * behind A's launch; A's request goes away, so A's VM is ready with
         * nothing to do, and B evicts it. */
        acquire(&c, fa, &ra);
        advance(&c, 0);
        assert_int_equal(c.retires, 1);
        assert_int_equal(c.launches, 3);
        acquire(&c, fb, &rb);
        assert_false(rb.granted);
        cvm_pool_cancel(ra.w);
        advance(&c, LAUNCH_NS);
        assert_int_equal(c.retires, 2);
        advance(&c, LAUNCH_NS);
        assert_true(rb.granted);
        assert_non_null(rb.vm);
        release(&rb);
        teardown(&c);
}

/* More than max_waiting waiters: -EAGAIN, counted as rejected. */
static void test_max_waiting(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.max_waiting = 2;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r[3];
        assert_int_equal(acquire(&c, fn, &r[0]), 0);
        assert_int_equal(acquire(&c, fn, &r[1]), 0);
        assert_int_equal(acquire(&c, fn, &r[2]), -EAGAIN);
        assert_int_equal(fstats(fn).rejected, 1);
        assert_int_equal(c.launches, 2);
        advance(&c, LAUNCH_NS);
        release(&r[0]);
        release(&r[1]);
        teardown(&c);
}

/* A cancelled waiter is never called; its launch ends in an idle VM. */
static void test_cancel(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r0, r1;
        acquire(&c, fn, &r0);
        acquire(&c, fn, &r1);
        cvm_pool_cancel(r0.w);
        cvm_pool_cancel(NULL);
        assert_int_equal(fstats(fn).waiting, 1);
        advance(&c, LAUNCH_NS);
        assert_false(r0.granted);
        assert_true(r1.granted);
        cvm_pool_fn_stats st = fstats(fn);
        assert_int_equal(st.ready, 1);
        assert_int_equal(st.busy, 1);
        assert_int_equal(st.waiting, 0);
        release(&r1);
        teardown(&c);
}

/* A failed launch: the oldest waiter hears why, the next one gets a new launch. */
static void test_launch_failure_waiters(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        c.fail_launches = true;
        cvm_pool_settings s = settings();
        s.max_vms = 1;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r0, r1;
        acquire(&c, fn, &r0);
        acquire(&c, fn, &r1);
        assert_int_equal(c.launches, 1);
        advance(&c, LAUNCH_NS);
        assert_true(r0.granted);
        assert_null(r0.vm);
        assert_int_equal(r0.err, -EIO);
        assert_false(r1.granted);
        assert_int_equal(c.launches, 2);
        c.fail_launches = false;
        advance(&c, LAUNCH_NS);
        assert_true(r1.granted);
        assert_non_null(r1.vm);
        release(&r1);
        assert_int_equal(fstats(fn).launch_failures, 1);
        teardown(&c);
}

/* A launch the backend refuses at once fails the acquire that started it:
 * its callback never runs inside cvm_pool_acquire (the caller would still be
 * setting the request up). An older waiter hears it through its callback. */
static void test_launch_refused_in_acquire(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        c.refuse_launches = true;
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r0;
        assert_int_equal(acquire(&c, fn, &r0), -EINVAL);
        assert_false(r0.granted);
        assert_null(r0.w);
        cvm_pool_fn_stats st = fstats(fn);
        assert_int_equal(st.waiting, 0);
        assert_int_equal(st.launch_failures, 1);
        /* A waiter that came before, behind a launch on its way: a refused
         * launch for a newer request fails the oldest waiter, through its
         * callback, and the newer one takes the launch on its way. */
        c.refuse_launches = false;
        req r1, r2;
        assert_int_equal(acquire(&c, fn, &r1), 0);
        c.refuse_launches = true;
        assert_int_equal(acquire(&c, fn, &r2), 0);
        assert_true(r1.granted);
        assert_null(r1.vm);
        assert_int_equal(r1.err, -EINVAL);
        assert_non_null(r2.w);
        assert_false(r2.granted);
        advance(&c, LAUNCH_NS);
        assert_true(r2.granted);
        assert_non_null(r2.vm);
        release(&r2);
        teardown(&c);
}

/* Refills after failed launches back off: few launches in 10 s, not a loop. */
static void test_launch_failure_backoff(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        c.fail_launches = true;
        c.launch_ns = 100 * MS;
        cvm_pool_settings s = settings();
        s.min_warm = 1;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        advance(&c, 10 * SEC);
        /* Back-off 0.5, 1, 2, 4 s: launches at 0, 0.6, 1.7, 3.8 and 7.9 s. */
        assert_int_equal(c.launches, 5);
        assert_int_equal(fstats(fn).launch_failures, 5);
        /* A success resets the back-off. */
        c.fail_launches = false;
        advance(&c, 10 * SEC);
        assert_int_equal(c.launches, 6);
        assert_int_equal(fstats(fn).ready, 1);
        teardown(&c);
}

/* Settings change at once: min_warm up and down, max_vms down. */
static void test_fn_update(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        cvm_error err = {0};
        s.min_warm = 2;
        assert_int_equal(cvm_pool_fn_update(fn, &s, &err), 0);
        assert_int_equal(c.launches, 2);
        advance(&c, LAUNCH_NS);
        advance(&c, 3600 * SEC);
        assert_int_equal(fstats(fn).ready, 2);
        s.min_warm = 0;
        assert_int_equal(cvm_pool_fn_update(fn, &s, &err), 0);
        assert_int_equal(c.retires, 0);
        advance(&c, 60 * SEC);
        assert_int_equal(c.retires, 2);
        advance(&c, 0);
        assert_int_equal(alive_vms(&c), 0);

        /* max_vms down: extra idle VMs go at once, busy ones stay. */
        req r[3];
        for (int i = 0; i < 3; i++)
                acquire(&c, fn, &r[i]);
        advance(&c, LAUNCH_NS);
        release(&r[0]);
        release(&r[1]);
        s.max_vms = 1;
        assert_int_equal(cvm_pool_fn_update(fn, &s, &err), 0);
        assert_int_equal(c.retires, 4);
        assert_false(((fvm *)cvm_pool_vm_handle(r[2].vm))->retired);
        release(&r[2]);
        advance(&c, 0);
        assert_int_equal(alive_vms(&c), 1);

        /* Bad settings are refused and change nothing. */
        s.min_warm = 2;
        assert_int_equal(cvm_pool_fn_update(fn, &s, &err), -EINVAL);
        s.min_warm = 0;
        s.concurrency = 0;
        assert_int_equal(cvm_pool_fn_update(fn, &s, &err), -EINVAL);
        teardown(&c);
}

static void on_deleted(void *ud) {
        (*(int *)ud)++;
}

/* Deletion drains: idle VMs retire now, busy ones at release, done runs
 * after the last is gone; new requests fail. */
static void test_fn_delete_busy_idle(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r0, r1;
        acquire(&c, fn, &r0);
        acquire(&c, fn, &r1);
        advance(&c, LAUNCH_NS);
        release(&r1);
        fvm *busy = cvm_pool_vm_handle(r0.vm), *idle = c.vms[0] == busy ? c.vms[1] : c.vms[0];
        int done = 0;
        cvm_pool_fn_delete(fn, on_deleted, &done);
        assert_true(idle->retired);
        assert_false(busy->retired);
        req rx;
        assert_int_equal(acquire(&c, fn, &rx), -ENOENT);
        advance(&c, 0);
        assert_int_equal(done, 0);
        release(&r0);
        assert_true(busy->retired);
        assert_int_equal(done, 0);
        advance(&c, 0);
        assert_int_equal(done, 1);
        cvm_pool_stats ps;
        cvm_pool_get_stats(c.pool, &ps);
        assert_int_equal(ps.functions, 0);
        assert_int_equal(ps.vms, 0);
        assert_int_equal(ps.memory_mib_in_use, 0);
        teardown(&c);
}

/* A deleted function's last VM, gone, makes room for another function held
 * back by the budget (a replacement's waiters, for one). */
static void test_fn_delete_makes_room(void **state) {
        (void)state;
        ctx c;
        cvm_pool_budget b = {.vms = 1};
        setup_budget(&c, &b);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fa = new_fn(&c, "a", &s, 1);
        cvm_pool_fn *fb = new_fn(&c, "b", &s, 2);
        req ra, rb;
        acquire(&c, fa, &ra);
        advance(&c, LAUNCH_NS);
        assert_non_null(ra.vm);
        acquire(&c, fb, &rb);
        assert_int_equal(c.launches, 1);
        int done = 0;
        cvm_pool_fn_delete(fa, on_deleted, &done);
        release(&ra);
        advance(&c, 0);
        assert_int_equal(done, 1);
        assert_int_equal(c.launches, 2);
        advance(&c, LAUNCH_NS);
        assert_true(rb.granted);
        assert_non_null(rb.vm);
        release(&rb);
        teardown(&c);
}

/* A replaced function's waiters move to the new pool in order, keep their
 * arrival time, and are served by its launches; the old pool drains. */
static void test_move_waiters(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.max_vms = 1;
        cvm_pool_fn *old = new_fn(&c, "f", &s, 1);
        req r0, r1;
        acquire(&c, old, &r0);
        acquire(&c, old, &r1);
        advance(&c, LAUNCH_NS / 2);
        cvm_pool_fn *neu = new_fn(&c, "f", &s, 2);
        cvm_pool_fn_move_waiters(old, neu);
        assert_int_equal(fstats(old).waiting, 0);
        assert_int_equal(fstats(neu).waiting, 2);
        int done = 0;
        cvm_pool_fn_delete(old, on_deleted, &done);
        advance(&c, LAUNCH_NS);
        assert_true(r0.granted);
        assert_false(r1.granted);
        assert_int_equal(cvm_pool_fn_userdata(cvm_pool_vm_fn(r0.vm)), (void *)2);
        /* Waited from its arrival, not from the move. */
        assert_int_equal(r0.queue_ns, LAUNCH_NS * 3 / 2);
        release(&r0);
        assert_true(r1.granted);
        release(&r1);
        assert_int_equal(done, 1);
        teardown(&c);
}

/* Deletion with a waiter: it fails with -ENOENT and its launch is retired. */
static void test_fn_delete_waiters(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        req r;
        acquire(&c, fn, &r);
        int done = 0;
        cvm_pool_fn_delete(fn, on_deleted, &done);
        assert_true(r.granted);
        assert_int_equal(r.err, -ENOENT);
        assert_true(c.vms[0]->retired);
        assert_int_equal(done, 0);
        advance(&c, 10 * SEC);
        assert_int_equal(done, 1);
        assert_false(c.vms[0]->ready);
        teardown(&c);
}

/* Histogram policy, one call every 10 minutes: once the histogram is
 * representative, the VM is unloaded after each invocation and pre-warmed
 * (launch time early) before the next, which is warm. */
static void test_histogram_prewarm(void **state) {
        (void)state;
        ctx c;
        setup(&c);
        cvm_pool_settings s = settings();
        s.policy.kind = CVM_POLICY_HISTOGRAM;
        s.policy.keep_alive_s = 600;
        cvm_pool_fn *fn = new_fn(&c, "f", &s, 1);
        const uint64_t period = 600 * SEC, dur = SEC;
        int cold = 0;
        for (int i = 0; i < 20; i++) {
                uint64_t start = (uint64_t)i * period;
                advance(&c, start - cvm_clock_now(c.clock));
                req r;
                if (acquire(&c, fn, &r) == 0) {
                        advance(&c, LAUNCH_NS);
                        assert_true(r.granted && r.cold);
                        cold++;
                }
                int retires = c.retires;
                advance(&c, dur);
                release(&r);
                if (i < 11)
                        continue;
                /* 10+ idle times of 599 s: bin 9, pre-warm at 486 s, keep 174 s. */
                assert_int_equal(c.retires, retires + 1);
                int launches = c.launches;
                advance(&c, 484 * SEC);
                assert_int_equal(c.launches, launches);
                advance(&c, 2 * SEC);
                assert_int_equal(c.launches, launches + 1);
                assert_false(c.vms[c.nvms - 1]->demand);
                advance(&c, LAUNCH_NS);
                assert_int_equal(fstats(fn).ready, 1);
        }
        assert_int_equal(cold, 1);
        cvm_pool_fn_stats st = fstats(fn);
        assert_int_equal(st.cold, 1);
        assert_int_equal(st.warm, 19);
        /* After the last call the pre-warmed VM goes when its window ends. */
        advance(&c, 3600 * SEC);
        assert_int_equal(alive_vms(&c), 0);
        teardown(&c);
}

int main(void) {
        cvm_log_set_level(CVM_LOG_ERROR);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cold_then_warm),
                cmocka_unit_test(test_late_binding),
                cmocka_unit_test(test_launches_per_concurrency),
                cmocka_unit_test(test_min_warm_refill),
                cmocka_unit_test(test_keep_alive),
                cmocka_unit_test(test_budget_eviction),
                cmocka_unit_test(test_budget_vms),
                cmocka_unit_test(test_budget_replan),
                cmocka_unit_test(test_fn_delete_makes_room),
                cmocka_unit_test(test_move_waiters),
                cmocka_unit_test(test_max_waiting),
                cmocka_unit_test(test_cancel),
                cmocka_unit_test(test_launch_failure_waiters),
                cmocka_unit_test(test_launch_refused_in_acquire),
                cmocka_unit_test(test_launch_failure_backoff),
                cmocka_unit_test(test_fn_update),
                cmocka_unit_test(test_fn_delete_busy_idle),
                cmocka_unit_test(test_fn_delete_waiters),
                cmocka_unit_test(test_histogram_prewarm),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
