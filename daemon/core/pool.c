#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "list.h"
#include "log.h"

#define BACKOFF_MIN_NS (500 * CVM_NSEC_PER_MSEC)
#define BACKOFF_MAX_NS (60 * CVM_NSEC_PER_SEC)

typedef enum pvm_state {
        PVM_LAUNCHING,
        PVM_READY,
        PVM_RETIRING,
        PVM_GONE, /* Gone, kept only until its last invocation is released. */
} pvm_state;

struct cvm_pool_vm {
        cvm_pool_fn *fn;
        void *handle;
        pvm_state state;
        bool demand;
        bool used; /* Served an invocation since it became ready. */
        uint32_t active;
        uint64_t ready_ns, last_used_ns;
        cvm_timer *keepalive;
        cvm_pool_vm *prev, *next;
};

struct cvm_pool_waiter {
        cvm_pool_fn *fn;
        cvm_pool_grant_cb cb;
        void *userdata;
        uint64_t arrived_ns;
        cvm_pool_waiter *prev, *next;
};

struct cvm_pool_fn {
        cvm_pool *pool;
        char *name;
        void *userdata;
        cvm_pool_settings s;
        cvm_policy *policy;
        cvm_pool_vm *vms;
        uint32_t n_launching, n_ready, n_retiring;
        uint32_t running; /* Invocations running on this function's VMs. */
        cvm_pool_waiter *wait_head, *wait_tail;
        uint32_t n_waiting;
        /* The waiter cvm_pool_acquire is adding: a launch that fails at once
         * while it plans fails the acquire itself, never a callback inside it. */
        cvm_pool_waiter *acquiring;
        bool acquire_failed;
        cvm_error acquire_err;
        cvm_timer *prewarm_timer; /* The histogram policy's pre-warm. */
        cvm_timer *retry_timer;   /* Refills after a failed launch back off. */
        uint64_t backoff_ns, backoff_until_ns;
        bool deleting;
        void (*done)(void *);
        void *done_ud;
        cvm_pool_fn_stats st;
        cvm_pool_fn *prev, *next;
};

struct cvm_pool {
        cvm_clock *clock;
        const cvm_pool_backend *be;
        void *be_ud;
        cvm_pool_budget budget;
        uint64_t memory_mib, retiring_mib;
        uint32_t vms, retiring_vms;
        uint32_t waiting; /* Invocations waiting, all functions. */
        cvm_pool_fn *fns;
        uint32_t n_fns;
};

static void plan(cvm_pool_fn *fn);

static uint64_t now(const cvm_pool_fn *fn) {
        return cvm_clock_now(fn->pool->clock);
}

int cvm_pool_new(cvm_clock *clock, const cvm_pool_backend *backend, void *backend_ud,
                 const cvm_pool_budget *budget, cvm_pool **ret, cvm_error *err) {
        cvm_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        p->clock = clock;
        p->be = backend;
        p->be_ud = backend_ud;
        p->budget = *budget;
        *ret = p;
        return 0;
}

static void vm_free(cvm_pool_vm *vm) {
        cvm_timer_free(vm->keepalive);
        free(vm);
}

static void fn_free(cvm_pool_fn *fn) {
        cvm_pool *p = fn->pool;
        CVM_LIST_REMOVE(p->fns, fn);
        p->n_fns--;
        while (fn->vms) {
                cvm_pool_vm *vm = fn->vms;
                fn->vms = vm->next;
                vm_free(vm);
        }
        while (fn->wait_head) {
                cvm_pool_waiter *w = fn->wait_head;
                fn->wait_head = w->next;
                free(w);
        }
        cvm_timer_free(fn->prewarm_timer);
        cvm_timer_free(fn->retry_timer);
        cvm_policy_free(fn->policy);
        free(fn->name);
        free(fn);
}

void cvm_pool_free(cvm_pool *pool) {
        if (!pool)
                return;
        while (pool->fns)
                fn_free(pool->fns);
        free(pool);
}

static void on_prewarm_timer(cvm_timer *t, void *ud);
static void on_retry_timer(cvm_timer *t, void *ud);

static int check_settings(const cvm_pool_settings *s, cvm_error *err) {
        if (!s->max_vms || !s->concurrency)
                return cvm_error_set(err, -EINVAL, "pool.max_vms and concurrency must be >= 1");
        if (s->min_warm > s->max_vms)
                return cvm_error_set(err, -EINVAL,
                                     "pool.min_warm (%u) must not exceed pool.max_vms (%u)",
                                     s->min_warm, s->max_vms);
        return 0;
}

int cvm_pool_fn_new(cvm_pool *pool, const char *name, const cvm_pool_settings *settings,
                    void *userdata, cvm_pool_fn **ret, cvm_error *err) {
        int r = check_settings(settings, err);
        if (r < 0)
                return r;
        cvm_pool_fn *fn = calloc(1, sizeof(*fn));
        if (!fn)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        fn->pool = pool;
        fn->s = *settings;
        fn->userdata = userdata;
        fn->name = strdup(name);
        if (!fn->name)
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0)
                r = cvm_policy_new(&settings->policy, &fn->policy, err);
        if (r >= 0)
                r = cvm_timer_new(pool->clock, on_prewarm_timer, fn, &fn->prewarm_timer, err);
        if (r >= 0)
                r = cvm_timer_new(pool->clock, on_retry_timer, fn, &fn->retry_timer, err);
        CVM_LIST_PREPEND(pool->fns, fn);
        pool->n_fns++;
        if (r < 0) {
                fn_free(fn);
                return r;
        }
        plan(fn);
        *ret = fn;
        return 0;
}

void *cvm_pool_fn_userdata(const cvm_pool_fn *fn) {
        return fn->userdata;
}

const char *cvm_pool_fn_name(const cvm_pool_fn *fn) {
        return fn->name;
}

void cvm_pool_vm_set_handle(cvm_pool_vm *vm, void *handle) {
        vm->handle = handle;
}

void *cvm_pool_vm_handle(const cvm_pool_vm *vm) {
        return vm->handle;
}

cvm_pool_fn *cvm_pool_vm_fn(const cvm_pool_vm *vm) {
        return vm->fn;
}

static uint32_t alive(const cvm_pool_fn *fn) {
        return fn->n_launching + fn->n_ready;
}

static void retire(cvm_pool_vm *vm, const char *reason) {
        cvm_pool_fn *fn = vm->fn;
        cvm_pool *p = fn->pool;
        if (vm->state == PVM_LAUNCHING)
                fn->n_launching--;
        else if (vm->state == PVM_READY)
                fn->n_ready--;
        else
                return;
        vm->state = PVM_RETIRING;
        fn->n_retiring++;
        p->retiring_mib += fn->s.memory_mib;
        p->retiring_vms++;
        cvm_timer_stop(vm->keepalive);
        p->be->retire(p->be_ud, vm, reason);
}

/* Budget room for one more VM of fn: 1 yes, 0 not yet (retiring VMs will
 * free it), -1 no. */
static int budget_room(cvm_pool_fn *fn) {
        cvm_pool *p = fn->pool;
        uint64_t m = fn->s.memory_mib;
        bool mem_ok = !p->budget.memory_mib || p->memory_mib + m <= p->budget.memory_mib;
        bool vms_ok = !p->budget.vms || p->vms + 1 <= p->budget.vms;
        if (mem_ok && vms_ok)
                return 1;
        bool mem_later = !p->budget.memory_mib ||
                         p->memory_mib - p->retiring_mib + m <= p->budget.memory_mib;
        bool vms_later = !p->budget.vms || p->vms - p->retiring_vms + 1 <= p->budget.vms;
        return mem_later && vms_later ? 0 : -1;
}

/* Retires the least recently used idle VM of another function, preferring
 * functions above their min_warm. Returns false when there is none. */
static bool evict_for(cvm_pool_fn *fn) {
        cvm_pool_vm *best = NULL;
        bool best_spare = false;
        for (cvm_pool_fn *f = fn->pool->fns; f; f = f->next) {
                if (f == fn)
                        continue;
                bool spare = alive(f) > f->s.min_warm;
                for (cvm_pool_vm *vm = f->vms; vm; vm = vm->next) {
                        if (vm->state != PVM_READY || vm->active)
                                continue;
                        if (!best || (spare && !best_spare) ||
                            (spare == best_spare && vm->last_used_ns < best->last_used_ns)) {
                                best = vm;
                                best_spare = spare;
                        }
                }
        }
        if (!best)
                return false;
        best->fn->st.evictions++;
        log_info("pool: retiring an idle VM of %s to make room for %s", best->fn->name, fn->name);
        retire(best, "evicted to make room for another function");
        return true;
}

static void fail_oldest_waiter(cvm_pool_fn *fn, const cvm_error *err);

/* Starts one launch; false when limits or budgets forbid it now. */
static void schedule_retry(cvm_pool_fn *fn);

static bool try_launch(cvm_pool_fn *fn, bool demand) {
        cvm_pool *p = fn->pool;
        if (alive(fn) >= fn->s.max_vms)
                return false;
        if (!demand && now(fn) < fn->backoff_until_ns)
                return false;
        for (;;) {
                int room = budget_room(fn);
                if (room > 0)
                        break;
                if (room == 0 || !demand || !evict_for(fn))
                        return false;
        }
        cvm_pool_vm *vm = calloc(1, sizeof(*vm));
        cvm_error err = {0};
        if (!vm) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                if (demand)
                        fail_oldest_waiter(fn, &err);
                return false;
        }
        vm->fn = fn;
        vm->state = PVM_LAUNCHING;
        vm->demand = demand;
        CVM_LIST_PREPEND(fn->vms, vm);
        fn->n_launching++;
        p->memory_mib += fn->s.memory_mib;
        p->vms++;
        if (p->be->launch(p->be_ud, vm, demand, &err) < 0) {
                log_warn("pool: cannot launch a VM for %s: %s", fn->name, err.message);
                fn->n_launching--;
                p->memory_mib -= fn->s.memory_mib;
                p->vms--;
                CVM_LIST_REMOVE(fn->vms, vm);
                vm_free(vm);
                fn->st.launch_failures++;
                schedule_retry(fn);
                if (demand)
                        fail_oldest_waiter(fn, &err);
                return false;
        }
        fn->st.launches++;
        return true;
}

static void schedule_retry(cvm_pool_fn *fn) {
        fn->backoff_ns = fn->backoff_ns ? fn->backoff_ns * 2 : BACKOFF_MIN_NS;
        if (fn->backoff_ns > BACKOFF_MAX_NS)
                fn->backoff_ns = BACKOFF_MAX_NS;
        fn->backoff_until_ns = now(fn) + fn->backoff_ns;
        cvm_timer_start(fn->retry_timer, fn->backoff_ns);
}

static void on_retry_timer(cvm_timer *t, void *ud) {
        (void)t;
        plan(ud);
}

/* Re-plans a function after any event: demand launches for waiters that
 * the VMs on the way cannot serve, prewarm launches up to min_warm, and
 * promotion of prewarm launches that waiters will take. */
static void plan(cvm_pool_fn *fn) {
        if (fn->deleting)
                return;
        uint32_t promoted = 0;
        for (cvm_pool_vm *vm = fn->vms; vm; vm = vm->next)
                if (vm->state == PVM_LAUNCHING && vm->demand)
                        promoted++;
        for (cvm_pool_vm *vm = fn->vms; vm && promoted * fn->s.concurrency < fn->n_waiting;
             vm = vm->next)
                if (vm->state == PVM_LAUNCHING && !vm->demand) {
                        vm->demand = true;
                        promoted++;
                        fn->pool->be->promote(fn->pool->be_ud, vm);
                }
        while ((uint64_t)fn->n_launching * fn->s.concurrency < fn->n_waiting)
                if (!try_launch(fn, true))
                        break;
        while (alive(fn) < fn->s.min_warm)
                if (!try_launch(fn, false))
                        break;
}

/* Slots. */

static void take(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        vm->active++;
        vm->used = true;
        vm->last_used_ns = now(fn);
        cvm_timer_stop(vm->keepalive);
        if (fn->running++ == 0)
                cvm_policy_invocation_started(fn->policy, now(fn));
        fn->st.invocations++;
}

static cvm_pool_vm *free_slot(cvm_pool_fn *fn) {
        /* The most recently used VM first, so the others can expire. */
        cvm_pool_vm *best = NULL;
        for (cvm_pool_vm *vm = fn->vms; vm; vm = vm->next)
                if (vm->state == PVM_READY && vm->active < fn->s.concurrency &&
                    (!best || vm->last_used_ns > best->last_used_ns))
                        best = vm;
        return best;
}

static cvm_pool_waiter *pop_waiter(cvm_pool_fn *fn) {
        cvm_pool_waiter *w = fn->wait_head;
        if (!w)
                return NULL;
        CVM_QUEUE_REMOVE(fn->wait_head, fn->wait_tail, w);
        fn->n_waiting--;
        fn->pool->waiting--;
        return w;
}

static void fail_oldest_waiter(cvm_pool_fn *fn, const cvm_error *err) {
        cvm_pool_waiter *w = pop_waiter(fn);
        if (!w)
                return;
        if (w == fn->acquiring) {
                fn->acquire_failed = true;
                fn->acquire_err = *err;
                free(w);
                return;
        }
        cvm_pool_grant g = {.err = err, .queue_ns = now(fn) - w->arrived_ns};
        w->cb(w, &g, w->userdata);
        free(w);
}

static void on_keepalive(cvm_timer *t, void *ud);

/* Lets every function with waiters but skip re-plan: budget room may exist
 * now. skip is NULL or a live function (the one that just planned). */
static void plan_waiting(cvm_pool *p, cvm_pool_fn *skip) {
        for (cvm_pool_fn *f = p->fns, *next; f; f = next) {
                next = f->next;
                if (f != skip && f->n_waiting)
                        plan(f);
        }
}

/* A ready VM with nothing to do: keep it, time it out, or unload it. */
static void idle(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        if (fn->deleting) {
                retire(vm, "function deleted");
                return;
        }
        if (alive(fn) <= fn->s.min_warm)
                return;
        cvm_policy_decision d;
        cvm_policy_decide(fn->policy, &d);
        if (d.prewarm_ns && vm->used) {
                /* The histogram says the next call is far: unload now, pre-warm later. */
                retire(vm, "unloaded until the policy's pre-warm time");
                /* Start the launch early enough for the VM to be ready in time. */
                /* Counted from this (the latest) end, so an early call moves it. */
                uint64_t lead = fn->s.expected_launch_ns;
                cvm_timer_start(fn->prewarm_timer, d.prewarm_ns > lead ? d.prewarm_ns - lead : 0);
                return;
        }
        if (!d.keep_alive_ns) {
                retire(vm, "keep-alive is zero");
                return;
        }
        if (!vm->keepalive &&
            cvm_timer_new(fn->pool->clock, on_keepalive, vm, &vm->keepalive, NULL) < 0) {
                retire(vm, "out of memory for its keep-alive timer");
                return;
        }
        cvm_timer_start(vm->keepalive, d.keep_alive_ns);
}

static void on_keepalive(cvm_timer *t, void *ud) {
        (void)t;
        cvm_pool_vm *vm = ud;
        cvm_pool_fn *fn = vm->fn;
        if (vm->state == PVM_READY && !vm->active && alive(fn) > fn->s.min_warm)
                retire(vm, "keep-alive expired");
}

static void on_prewarm_timer(cvm_timer *t, void *ud) {
        (void)t;
        cvm_pool_fn *fn = ud;
        if (fn->deleting || free_slot(fn) || fn->n_launching)
                return;
        try_launch(fn, false);
}

/* Gives vm's free slots to waiters, oldest first. */
static void dispatch(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        while (vm->state == PVM_READY && vm->active < fn->s.concurrency && fn->wait_head) {
                cvm_pool_waiter *w = pop_waiter(fn);
                take(vm);
                cvm_pool_grant g = {.vm = vm,
                                    .cold = vm->ready_ns > w->arrived_ns,
                                    .queue_ns = now(fn) - w->arrived_ns};
                if (g.cold)
                        fn->st.cold++;
                else
                        fn->st.warm++;
                w->cb(w, &g, w->userdata);
                free(w);
        }
}

int cvm_pool_acquire(cvm_pool_fn *fn, cvm_pool_grant_cb cb, void *userdata, cvm_pool_vm **ret_vm,
                     cvm_pool_waiter **ret_waiter, cvm_error *err) {
        if (fn->deleting)
                return cvm_error_set(err, -ENOENT, "function %s is being deleted", fn->name);
        cvm_pool_vm *vm = free_slot(fn);
        if (vm) {
                take(vm);
                fn->st.warm++;
                *ret_vm = vm;
                return 1;
        }
        if (fn->n_waiting >= fn->s.max_waiting) {
                fn->st.rejected++;
                return cvm_error_set(err, -EAGAIN,
                                     "function %s has %u invocations waiting for a VM already",
                                     fn->name, fn->n_waiting);
        }
        cvm_pool_waiter *w = calloc(1, sizeof(*w));
        if (!w)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *w = (cvm_pool_waiter){.fn = fn, .cb = cb, .userdata = userdata, .arrived_ns = now(fn)};
        CVM_QUEUE_APPEND(fn->wait_head, fn->wait_tail, w);
        fn->n_waiting++;
        fn->pool->waiting++;
        fn->acquiring = w;
        fn->acquire_failed = false;
        plan(fn);
        fn->acquiring = NULL;
        if (fn->acquire_failed) {
                /* The launch for this request failed at once (w is freed). */
                fn->acquire_failed = false;
                if (err)
                        *err = fn->acquire_err;
                return fn->acquire_err.code;
        }
        *ret_waiter = w;
        return 0;
}

void cvm_pool_cancel(cvm_pool_waiter *w) {
        if (!w)
                return;
        cvm_pool_fn *fn = w->fn;
        CVM_QUEUE_REMOVE(fn->wait_head, fn->wait_tail, w);
        fn->n_waiting--;
        fn->pool->waiting--;
        free(w);
}

static void maybe_finish_delete(cvm_pool_fn *fn) {
        if (!fn->deleting || fn->vms)
                return;
        void (*done)(void *) = fn->done;
        void *ud = fn->done_ud;
        fn_free(fn);
        if (done)
                done(ud);
}

static void unlink_vm(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        CVM_LIST_REMOVE(fn->vms, vm);
        vm_free(vm);
}

void cvm_pool_release(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        vm->active--;
        vm->last_used_ns = now(fn);
        if (--fn->running == 0)
                cvm_policy_invocation_ended(fn->policy, now(fn));
        if (vm->state == PVM_GONE) {
                if (!vm->active) {
                        unlink_vm(vm);
                        maybe_finish_delete(fn);
                }
                return;
        }
        if (vm->state != PVM_READY)
                return;
        if (fn->deleting) {
                if (!vm->active)
                        retire(vm, "function deleted");
                return;
        }
        dispatch(vm);
        if (vm->state == PVM_READY && !vm->active) {
                idle(vm);
                /* An idle VM can make room for another function held back by the budget. */
                if (vm->state == PVM_READY && fn->pool->waiting > fn->n_waiting)
                        plan_waiting(fn->pool, fn);
        }
}

void cvm_pool_vm_ready(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        if (vm->state != PVM_LAUNCHING)
                return;
        fn->n_launching--;
        fn->n_ready++;
        vm->state = PVM_READY;
        vm->ready_ns = vm->last_used_ns = now(fn);
        fn->backoff_ns = 0;
        if (fn->deleting) {
                retire(vm, "function deleted");
                return;
        }
        dispatch(vm);
        if (vm->state == PVM_READY && !vm->active)
                idle(vm);
        plan(fn);
        /* Idle now, it can be evicted for a function held back by the budget. */
        if (vm->state == PVM_READY && !vm->active && fn->pool->waiting > fn->n_waiting)
                plan_waiting(fn->pool, fn);
}

void cvm_pool_vm_failed(cvm_pool_vm *vm, const cvm_error *err) {
        cvm_pool_fn *fn = vm->fn;
        cvm_pool *p = fn->pool;
        if (vm->state == PVM_LAUNCHING)
                fn->n_launching--;
        else if (vm->state == PVM_RETIRING) {
                fn->n_retiring--;
                p->retiring_mib -= fn->s.memory_mib;
                p->retiring_vms--;
        }
        p->memory_mib -= fn->s.memory_mib;
        p->vms--;
        bool was_launching = vm->state == PVM_LAUNCHING, deleting = fn->deleting;
        unlink_vm(vm);
        fn->st.launch_failures++;
        if (!was_launching) {
                maybe_finish_delete(fn);
        } else {
                /* The oldest waiter hears why, unless other launches will serve it. */
                if (fn->n_waiting > (uint64_t)fn->n_launching * fn->s.concurrency)
                        fail_oldest_waiter(fn, err);
                schedule_retry(fn);
                if (fn->deleting)
                        maybe_finish_delete(fn);
                else
                        plan(fn);
        }
        /* Its room in the budget may be what another function waits for (fn
         * may be freed by now, p is not; fn planned already if it is live). */
        plan_waiting(p, was_launching && !deleting ? fn : NULL);
}

void cvm_pool_vm_gone(cvm_pool_vm *vm) {
        cvm_pool_fn *fn = vm->fn;
        cvm_pool *p = fn->pool;
        switch (vm->state) {
        case PVM_LAUNCHING: fn->n_launching--; break;
        case PVM_READY: fn->n_ready--; break;
        case PVM_RETIRING:
                fn->n_retiring--;
                p->retiring_mib -= fn->s.memory_mib;
                p->retiring_vms--;
                break;
        case PVM_GONE: return;
        }
        p->memory_mib -= fn->s.memory_mib;
        p->vms--;
        cvm_timer_stop(vm->keepalive);
        if (vm->active)
                vm->state = PVM_GONE; /* Freed when its last invocation is released. */
        else
                unlink_vm(vm);
        if (fn->deleting) {
                /* A drained function's room goes to the others (fn may be freed). */
                maybe_finish_delete(fn);
                plan_waiting(p, NULL);
                return;
        }
        plan(fn);
        /* Room freed for others. */
        plan_waiting(fn->pool, fn);
}

int cvm_pool_fn_update(cvm_pool_fn *fn, const cvm_pool_settings *settings, cvm_error *err) {
        int r = check_settings(settings, err);
        if (r >= 0)
                r = cvm_policy_set_params(fn->policy, &settings->policy, err);
        if (r < 0)
                return r;
        fn->s = *settings;
        /* Idle VMs get timers by the new settings; extra ones go. */
        for (cvm_pool_vm *vm = fn->vms, *next; vm; vm = next) {
                next = vm->next;
                if (vm->state == PVM_READY && !vm->active)
                        idle(vm);
        }
        while (alive(fn) > fn->s.max_vms) {
                cvm_pool_vm *victim = NULL;
                for (cvm_pool_vm *vm = fn->vms; vm; vm = vm->next)
                        if ((vm->state == PVM_READY && !vm->active) || vm->state == PVM_LAUNCHING)
                                victim = vm;
                if (!victim)
                        break;
                retire(victim, "above the function's new max_vms");
        }
        plan(fn);
        return 0;
}

void cvm_pool_fn_move_waiters(cvm_pool_fn *from, cvm_pool_fn *to) {
        if (!from->wait_head)
                return;
        for (cvm_pool_waiter *w; (w = pop_waiter(from));) {
                w->fn = to;
                CVM_QUEUE_APPEND(to->wait_head, to->wait_tail, w);
                to->n_waiting++;
                to->pool->waiting++;
        }
        plan(to);
}

void cvm_pool_fn_delete(cvm_pool_fn *fn, void (*done)(void *userdata), void *userdata) {
        fn->deleting = true;
        fn->done = done;
        fn->done_ud = userdata;
        cvm_timer_stop(fn->prewarm_timer);
        cvm_timer_stop(fn->retry_timer);
        cvm_error err;
        cvm_error_set(&err, -ENOENT, "function %s was deleted", fn->name);
        while (fn->wait_head)
                fail_oldest_waiter(fn, &err);
        for (cvm_pool_vm *vm = fn->vms, *next; vm; vm = next) {
                next = vm->next;
                if (vm->state == PVM_LAUNCHING || (vm->state == PVM_READY && !vm->active))
                        retire(vm, "function deleted");
        }
        maybe_finish_delete(fn);
}

void cvm_pool_fn_get_stats(const cvm_pool_fn *fn, cvm_pool_fn_stats *ret) {
        *ret = fn->st;
        ret->launching = fn->n_launching;
        ret->retiring = fn->n_retiring;
        ret->waiting = fn->n_waiting;
        ret->ready = ret->busy = 0;
        for (cvm_pool_vm *vm = fn->vms; vm; vm = vm->next)
                if (vm->state == PVM_READY) {
                        if (vm->active)
                                ret->busy++;
                        else
                                ret->ready++;
                }
}

json_t *cvm_pool_fn_to_json(const cvm_pool_fn *fn) {
        cvm_pool_fn_stats st;
        cvm_pool_fn_get_stats(fn, &st);
        return json_pack("{s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
                         "ready", (int)st.ready, "busy", (int)st.busy, "launching",
                         (int)st.launching, "retiring", (int)st.retiring, "waiting",
                         (int)st.waiting, "invocations", (json_int_t)st.invocations, "cold",
                         (json_int_t)st.cold, "warm", (json_int_t)st.warm, "launches",
                         (json_int_t)st.launches, "launch_failures", (json_int_t)st.launch_failures,
                         "evictions", (json_int_t)st.evictions, "rejected", (json_int_t)st.rejected,
                         "policy", cvm_policy_to_json(fn->policy));
}

void cvm_pool_get_stats(const cvm_pool *pool, cvm_pool_stats *ret) {
        *ret = (cvm_pool_stats){.memory_mib_in_use = pool->memory_mib,
                                .vms = pool->vms,
                                .functions = pool->n_fns,
                                .budget = pool->budget};
}
