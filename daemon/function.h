/* Functions: named specs (a launch image, a handler, limits, pool settings)
 * that persist in the store and come back after a restart, each with a warm
 * pool (core/pool.h) of VMs launched from its image; and invocations, which
 * take a VM from the pool (late binding), run once on it, and are recorded
 * with their phases. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "pool.h"
#include "pool_policy.h"
#include "store.h"
#include "vm.h"

#define CVM_FUNCTION_NAME_MAX 63
#define CVM_FUNCTIONS_MAX 4096

typedef struct cvm_fn_spec {
        cvm_image_spec image;
        cvm_handler_spec handler;
        uint32_t timeout_ms;
        uint64_t max_request_bytes;
        uint64_t max_response_bytes;
        uint32_t concurrency;
        uint32_t min_warm;
        uint32_t max_vms;
        cvm_policy_params policy;
} cvm_fn_spec;

/* What parsing a spec needs from the daemon. */
typedef struct cvm_fn_limits {
        const cvm_image_spec *image_defaults;
        bool check_executable;      /* Handlers run on this machine (sim). */
        uint64_t max_request_bytes; /* The HTTP body limit. */
        uint64_t max_response_bytes;
        bool allow_debug; /* policy.allow_debug: debuggable guests may be launched. */
} cvm_fn_limits;

int cvm_function_name_check(const char *name, cvm_error *err);
int cvm_fn_spec_parse(json_t *obj, const cvm_fn_limits *limits, cvm_fn_spec *ret, cvm_error *err);
void cvm_fn_spec_done(cvm_fn_spec *spec);
json_t *cvm_fn_spec_to_json(const cvm_fn_spec *spec);

typedef struct cvm_functions cvm_functions;
typedef struct cvm_function cvm_function;

typedef struct cvm_functions_deps {
        uv_loop_t *loop;
        cvm_clock *clock;
        cvm_store *store;
        cvm_vms *vms;
        cvm_image_cache *images;
        cvm_sched *sched; /* For admission: when would a new launch start. */
        cvm_host *host;   /* For attestations. */
        cvm_fn_limits limits;
        cvm_pool_budget budget;
        uint32_t max_functions;
        uint32_t async_retention_s; /* How long async results are kept. */
        uint32_t async_max;         /* Async results kept at most. */
        uint32_t max_waiting;       /* Invocations of one function waiting for a VM at most. */
} cvm_functions_deps;

int cvm_functions_new(const cvm_functions_deps *deps, cvm_functions **ret, cvm_error *err);
/* Loads the stored functions (blocking: call it at start-up) and starts
 * measuring their images; their pools fill once measured. */
int cvm_functions_restore(cvm_functions *fns, cvm_error *err);
/* Frees without draining (the host is already gone at daemon exit). */
void cvm_functions_free(cvm_functions *fns);

/* Creates or replaces a function: validated, image measured, stored, then
 * applied. cb runs later (never inside) with the function, or an error that
 * changed nothing. A replacement that changes what VMs run (image, handler,
 * concurrency, limits) drains the old VMs; one that changes only pool
 * settings keeps them. */
typedef void (*cvm_fn_put_cb)(cvm_function *fn, bool created, const cvm_error *err, void *userdata);
typedef struct cvm_fn_put cvm_fn_put;
/* tenant: who the function belongs to (NULL: the host's operators); another
 * tenant's function of that name is -ENOENT and changes nothing. */
int cvm_functions_put(cvm_functions *fns, const char *name, const char *tenant, json_t *spec,
                      cvm_fn_put_cb cb, void *userdata, cvm_fn_put **ret, cvm_error *err);
/* Whether a caller acting for tenant (NULL: an operator) may see fn. */
bool cvm_function_visible(const cvm_function *fn, const char *tenant);
/* The caller stops listening; the update itself goes on. */
void cvm_fn_put_forget(cvm_fn_put *put);

cvm_function *cvm_functions_find(cvm_functions *fns, const char *name);
cvm_function *cvm_functions_first(cvm_functions *fns);
cvm_function *cvm_function_next(cvm_function *fn);
const char *cvm_function_name(const cvm_function *fn);
/* Forgets the function now (its name is free again) and drains its pool:
 * in-flight invocations finish, waiting ones fail, VMs are torn down. */
int cvm_functions_delete(cvm_functions *fns, const char *name, cvm_error *err);
/* Pool settings only (cvmctl pool set): min_warm, max_vms, policy; stored. */
int cvm_function_set_pool(cvm_function *fn, json_t *pool, cvm_fn_put_cb cb, void *userdata,
                          cvm_error *err);
json_t *cvm_function_to_json(const cvm_function *fn);

/* Invocations. */
typedef struct cvm_invocation cvm_invocation;

typedef struct cvm_inv_result {
        const char *id;
        const char *function;
        const char *vm_id;  /* NULL when it never reached a VM. */
        const char *status; /* ok, failed, timeout, rejected, vm_failed, cancelled, ... */
        unsigned http_status;
        const char *error_code; /* For non-200: the API's error code. */
        const char *message;
        bool cold;
        int exit_code, term_signal; /* -1 / 0 when not applicable. */
        const uint8_t *output;
        size_t output_len;
        const uint8_t *stderr_tail;
        size_t stderr_len;
        uint64_t queue_ns, prepare_ns, psp_wait_ns, psp_ns, boot_ns, exec_ns, total_ns;
        uint32_t retry_after_s; /* For 429/503. */
} cvm_inv_result;

/* Runs once, when the invocation ended; result is valid during the call. */
typedef void (*cvm_inv_cb)(cvm_invocation *inv, const cvm_inv_result *result, void *userdata);

/* Starts one invocation. body is copied when the invocation may outlive the
 * caller's buffer (async). A rejection before it starts (overload, a body
 * over the limit, a function being deleted) is an error here; an overload
 * (-EAGAIN, -ENOSPC) sets *ret_retry_after_s to when a retry may succeed. */
int cvm_function_invoke(cvm_function *fn, const void *body, size_t len, bool async, cvm_inv_cb cb,
                        void *userdata, cvm_invocation **ret, uint32_t *ret_retry_after_s,
                        cvm_error *err);
/* The caller stops listening (client gone): a waiting invocation is
 * withdrawn, a running one finishes unheard. */
void cvm_invocation_forget(cvm_invocation *inv);
const char *cvm_invocation_id(const cvm_invocation *inv);

/* Turns what a VM answered into a result (also for bare VM invocations);
 * msg receives the message the result points to. */
void cvm_inv_result_from_outcome(const cvm_vm_outcome *out, uint32_t timeout_ms, cvm_inv_result *r,
                                 char *msg, size_t msg_size);

/* An attestation of one of the function's VMs: a ready one, or one launched
 * for it (it waits like an invocation). cb runs once, later. */
typedef void (*cvm_fn_attest_cb)(cvm_vm *vm, const cvm_host_attestation *a, const cvm_error *err,
                                 void *userdata);
typedef struct cvm_fn_attest cvm_fn_attest;
int cvm_function_attest(cvm_function *fn, const uint8_t nonce[64], cvm_fn_attest_cb cb,
                        void *userdata, cvm_fn_attest **ret, cvm_error *err);
/* The caller stops listening; a waiting request is withdrawn. */
void cvm_fn_attest_forget(cvm_fn_attest *a);

/* Logs the tail of a handler's stderr (bounded, quoted), if it wrote any. */
void cvm_log_handler_stderr(const char *inv_id, const char *vm_id, const cvm_agent_result *a);

/* Async results: GET /v1/invocations/{id}. NULL when unknown or expired. */
json_t *cvm_functions_async_result(cvm_functions *fns, const char *id, const char *tenant);

json_t *cvm_functions_pool_json(cvm_functions *fns);
