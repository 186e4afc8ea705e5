/* Warm pools: for every function, the VMs it has (launching, ready, busy),
 * the invocations waiting for one, and the decisions that keep invocations
 * warm: late binding (a waiting invocation takes the first VM of its
 * function that becomes free, whether idle, just released, or newly
 * launched), demand launches when waiting demand exceeds the VMs on the way,
 * min_warm refills and keep-alive by the function's policy (pool_policy.h),
 * and global budgets (VM memory and VM count), retiring other functions'
 * idle VMs, least recently used first, to make room.
 *
 * Part of the deciding core: it sees time only through clock.h and acts on
 * VMs only through a backend (the daemon's VMs, or a model in replays). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "error.h"
#include "pool_policy.h"

typedef struct cvm_pool cvm_pool;
typedef struct cvm_pool_fn cvm_pool_fn;
typedef struct cvm_pool_vm cvm_pool_vm;
typedef struct cvm_pool_waiter cvm_pool_waiter;

typedef struct cvm_pool_backend {
        /* Starts launching a VM for fn; the backend reports the end with
         * cvm_pool_vm_ready or cvm_pool_vm_failed, never inside this call.
         * demand: an invocation waits for it (else a prewarm). */
        int (*launch)(void *userdata, cvm_pool_vm *vm, bool demand, cvm_error *err);
        /* A prewarm launch an invocation now waits for. */
        void (*promote)(void *userdata, cvm_pool_vm *vm);
        /* Stops a VM in any state; the backend reports cvm_pool_vm_gone when it is gone. */
        void (*retire)(void *userdata, cvm_pool_vm *vm, const char *reason);
} cvm_pool_backend;

typedef struct cvm_pool_budget {
        uint64_t memory_mib; /* VM memory of all functions; 0: unlimited. */
        uint32_t vms;        /* VMs of all functions (the host's ASIDs); 0: unlimited. */
} cvm_pool_budget;

typedef struct cvm_pool_settings {
        uint32_t min_warm;    /* VMs kept ready (or launching) at all times. */
        uint32_t max_vms;     /* VMs of this function at most, busy ones included. */
        uint32_t concurrency; /* Invocations one VM runs at once. */
        uint32_t memory_mib;  /* Each VM's memory, for the budget. */
        uint32_t max_waiting; /* Invocations queued for a VM at most; more get -EAGAIN. */
        /* How long a launch takes (PSP and boot): pre-warms start this much early. */
        uint64_t expected_launch_ns;
        cvm_policy_params policy;
} cvm_pool_settings;

int cvm_pool_new(cvm_clock *clock, const cvm_pool_backend *backend, void *backend_ud,
                 const cvm_pool_budget *budget, cvm_pool **ret, cvm_error *err);
/* Frees everything without calling the backend or any waiter (daemon exit). */
void cvm_pool_free(cvm_pool *pool);

int cvm_pool_fn_new(cvm_pool *pool, const char *name, const cvm_pool_settings *settings,
                    void *userdata, cvm_pool_fn **ret, cvm_error *err);
/* New settings take effect at once: refills, keep-alives, the policy's parameters. */
int cvm_pool_fn_update(cvm_pool_fn *fn, const cvm_pool_settings *settings, cvm_error *err);
/* Moves every waiter of from to the end of to's queue, oldest first, each
 * keeping its arrival time and callback, then plans to: what waited for a
 * replaced function's VMs waits for the new version's. The waiters were
 * admitted already, so to's max_waiting does not apply. */
void cvm_pool_fn_move_waiters(cvm_pool_fn *from, cvm_pool_fn *to);
/* Drains the function: waiters fail with -ENOENT, idle VMs retire now, busy
 * ones when their invocations end, launching ones when launched. done runs
 * (later) when the last VM is gone; then fn is freed. */
void cvm_pool_fn_delete(cvm_pool_fn *fn, void (*done)(void *userdata), void *userdata);
void *cvm_pool_fn_userdata(const cvm_pool_fn *fn);
const char *cvm_pool_fn_name(const cvm_pool_fn *fn);

/* Asks for a VM to run one invocation on. Returns 1 with *ret_vm when one is
 * free now (a warm start; the slot is taken), 0 when the request waits (cb
 * runs later, with a VM or an error), or a negative errno (-EAGAIN: too many
 * waiting). */
typedef struct cvm_pool_grant {
        cvm_pool_vm *vm; /* NULL with err set when the wait failed. */
        const cvm_error *err;
        bool cold;         /* The VM became ready after the request arrived. */
        uint64_t queue_ns; /* Time spent waiting. */
} cvm_pool_grant;
/* The waiter is consumed by its callback: do not cancel it there. */
typedef void (*cvm_pool_grant_cb)(cvm_pool_waiter *w, const cvm_pool_grant *grant, void *userdata);
int cvm_pool_acquire(cvm_pool_fn *fn, cvm_pool_grant_cb cb, void *userdata, cvm_pool_vm **ret_vm,
                     cvm_pool_waiter **ret_waiter, cvm_error *err);
/* Stops waiting; cb never runs. NULL-safe. */
void cvm_pool_cancel(cvm_pool_waiter *w);
/* The invocation on vm ended; its slot goes to the next waiter or idles. */
void cvm_pool_release(cvm_pool_vm *vm);

/* Backend reports. */
void cvm_pool_vm_set_handle(cvm_pool_vm *vm, void *handle);
void *cvm_pool_vm_handle(const cvm_pool_vm *vm);
cvm_pool_fn *cvm_pool_vm_fn(const cvm_pool_vm *vm);
void cvm_pool_vm_ready(cvm_pool_vm *vm);
/* The launch failed: the oldest waiter gets err if no other VM is on the way. */
void cvm_pool_vm_failed(cvm_pool_vm *vm, const cvm_error *err);
/* The VM is gone (retired, or died): the pool forgets it and re-plans. */
void cvm_pool_vm_gone(cvm_pool_vm *vm);

typedef struct cvm_pool_fn_stats {
        uint32_t launching, ready, busy, retiring, waiting;
        uint64_t invocations, cold, warm, launches, launch_failures, evictions, rejected;
} cvm_pool_fn_stats;
void cvm_pool_fn_get_stats(const cvm_pool_fn *fn, cvm_pool_fn_stats *ret);
json_t *cvm_pool_fn_to_json(const cvm_pool_fn *fn);

typedef struct cvm_pool_stats {
        uint64_t memory_mib_in_use;
        uint32_t vms;
        uint32_t functions;
        cvm_pool_budget budget;
} cvm_pool_stats;
void cvm_pool_get_stats(const cvm_pool *pool, cvm_pool_stats *ret);
