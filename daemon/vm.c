#include "vm.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "list.h"
#include "log.h"
#include "metrics.h"

struct cvm_vms {
        cvm_host *host;
        cvm_store *store;
        cvm_sched *sched;
        cvm_clock *clock;
        cvm_metrics *metrics;
        cvm_vm *head;
        size_t count;
        uint64_t next_invoke_id;
};

static const char *const state_names[] = {
        [CVM_VM_PREPARING] = "preparing", [CVM_VM_LAUNCHING] = "launching",
        [CVM_VM_BOOTING] = "booting",     [CVM_VM_READY] = "ready",
        [CVM_VM_STOPPING] = "stopping",
};

const char *cvm_vm_state_to_string(cvm_vm_state state) {
        return state_names[state];
}

int64_t cvm_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Each RAND_bytes call costs microseconds (locks, a fork check, a DRBG
 * round), a tenth of a warm invocation's path, so one call fills a batch that
 * serves CVM_ID_BATCH ids. Ids must be unguessable, not secret; every child
 * the daemon forks execs at once and never makes one. */
#define CVM_ID_RAW 8
#define CVM_ID_BATCH 64

int cvm_random_id(const char *prefix, char *buf, size_t size, cvm_error *err) {
        static const char hex[] = "0123456789abcdef";
        static _Thread_local unsigned char batch[CVM_ID_RAW * CVM_ID_BATCH];
        static _Thread_local size_t used = sizeof(batch);
        size_t n = strlen(prefix);
        if (n + 2 * CVM_ID_RAW >= size)
                return cvm_error_set(err, -ENOBUFS, "an id with prefix %s needs %zu bytes",
                                     CVM_QUOTE(prefix), n + 2 * CVM_ID_RAW + 1);
        if (used == sizeof(batch)) {
                if (RAND_bytes(batch, sizeof(batch)) != 1)
                        return cvm_error_set(err, -EIO, "cannot get random bytes from OpenSSL");
                used = 0;
        }
        memcpy(buf, prefix, n);
        for (size_t i = 0; i < CVM_ID_RAW; i++) {
                unsigned char b = batch[used + i];
                buf[n++] = hex[b >> 4];
                buf[n++] = hex[b & 0xf];
        }
        buf[n] = '\0';
        used += CVM_ID_RAW;
        return 0;
}

int cvm_vms_new(cvm_host *host, cvm_store *store, cvm_sched *sched, cvm_clock *clock,
                cvm_metrics *metrics, cvm_vms **ret, cvm_error *err) {
        cvm_vms *vms = calloc(1, sizeof(*vms));
        if (!vms)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        vms->host = host;
        vms->store = store;
        vms->sched = sched;
        vms->clock = clock;
        vms->metrics = metrics;
        vms->next_invoke_id = 1;
        *ret = vms;
        return 0;
}

typedef struct invoke_ctx {
        cvm_vm_invoke_cb cb;
        void *userdata;
        uint64_t started_ns;
        struct invoke_ctx *prev, *next;
} invoke_ctx;

static void vm_unlink_free(cvm_vm *vm) {
        cvm_vms *vms = vm->vms;
        CVM_LIST_REMOVE(vms->head, vm);
        /* Only at exit, after the host dropped them without callbacks. */
        while (vm->invokes) {
                invoke_ctx *ctx = vm->invokes;
                CVM_LIST_REMOVE(vm->invokes, ctx);
                free(ctx);
        }
        vms->count--;
        cvm_image_unref(vm->image);
        cvm_handler_spec_done(&vm->handler);
        free(vm->function);
        free(vm->retire_reason);
        free(vm);
}

void cvm_vms_free(cvm_vms *vms) {
        if (!vms)
                return;
        /* The host kills its VMs without callbacks when it is freed; here only memory. */
        while (vms->head)
                vm_unlink_free(vms->head);
        free(vms);
}

cvm_vm *cvm_vms_find(cvm_vms *vms, const char *id) {
        for (cvm_vm *vm = vms->head; vm; vm = vm->next)
                if (strcmp(vm->id, id) == 0)
                        return vm;
        return NULL;
}

cvm_vm *cvm_vms_first(cvm_vms *vms) {
        return vms->head;
}

size_t cvm_vms_count(cvm_vms *vms) {
        return vms->count;
}

static uint64_t us(uint64_t ns) {
        return ns / 1000;
}

static void record_launch(cvm_vm *vm, const cvm_error *err) {
        uint64_t total = cvm_clock_now(vm->vms->clock) - vm->created_ns;
        const cvm_snp_launch_pages *p = &vm->image->pages;
        uint64_t pages = p->normal + p->zero + p->secrets + p->cpuid + p->kernel_hashes + p->vmsa +
                         p->unmeasured;
        cvm_store_val v[] = {
                CVM_STORE_S(vm->id),
                CVM_STORE_S(vm->function),
                CVM_STORE_S(vm->demand ? "demand" : "prewarm"),
                CVM_STORE_I(vm->created_ms),
                CVM_STORE_I((int64_t)us(vm->prepare_ns)),
                CVM_STORE_I((int64_t)us(vm->psp_wait_ns)),
                CVM_STORE_I((int64_t)us(vm->psp_ns)),
                CVM_STORE_I((int64_t)us(vm->boot_ns)),
                CVM_STORE_I((int64_t)us(total)),
                CVM_STORE_I((int64_t)pages),
                vm->asid ? CVM_STORE_I(vm->asid) : CVM_STORE_NUL,
                CVM_STORE_S(err ? "failed" : "ok"),
                CVM_STORE_S(err ? err->message : NULL),
        };
        cvm_store_write(vm->vms->store, CVM_STORE_LAUNCH, v, CVM_ARRAY_SIZE(v), NULL, NULL);
        cvm_metrics_launch(vm->vms->metrics, vm->demand, !err, vm->psp_wait_ns, vm->psp_ns);
}

static void end_launch(cvm_vm *vm, const cvm_error *err) {
        cvm_vm_launch_cb cb = vm->launch_cb;
        vm->launch_cb = NULL;
        if (cb)
                cb(vm, err, vm->launch_data);
}

static void on_torn_down(cvm_vm *vm, const cvm_host_step *step) {
        (void)step;
        if (vm->on_gone)
                vm->on_gone(vm, vm->owner);
        cvm_store_val v[] = {CVM_STORE_S(vm->id), CVM_STORE_I(cvm_wall_ms()),
                             CVM_STORE_S(vm->retire_reason), CVM_STORE_I((int64_t)vm->served)};
        cvm_store_write(vm->vms->store, CVM_STORE_VM_RETIRE, v, CVM_ARRAY_SIZE(v), NULL, NULL);
        log_info("vm %s retired (%s) after %llu invocation(s)", vm->id, vm->retire_reason,
                 (unsigned long long)vm->served);
        vm_unlink_free(vm);
}

void cvm_vm_retire(cvm_vm *vm, const char *reason) {
        if (vm->state == CVM_VM_STOPPING)
                return;
        bool launching = vm->state != CVM_VM_READY;
        vm->state = CVM_VM_STOPPING;
        vm->retire_reason = strdup(reason);
        cvm_sched_cancel(vm->sched_job);
        vm->sched_job = NULL;
        if (launching) {
                cvm_error e;
                cvm_error_set(&e, -ECANCELED, "vm %s was stopped during its launch (%s)", vm->id,
                              reason);
                record_launch(vm, &e);
                end_launch(vm, &e);
        }
        vm->vms->host->ops->teardown(vm->vms->host, vm, on_torn_down);
}

static void fail_launch(cvm_vm *vm, const cvm_error *err) {
        log_warn("vm %s: launch failed: %s", vm->id, err->message);
        cvm_sched_cancel(vm->sched_job);
        vm->sched_job = NULL;
        record_launch(vm, err);
        end_launch(vm, err);
        if (vm->state != CVM_VM_STOPPING) {
                vm->state = CVM_VM_STOPPING;
                vm->retire_reason = strdup("launch failed");
                vm->vms->host->ops->teardown(vm->vms->host, vm, on_torn_down);
        }
}

static void on_booted(cvm_vm *vm, const cvm_host_step *step) {
        if (step->result < 0) {
                fail_launch(vm, step->err);
                return;
        }
        vm->boot_ns = step->duration_ns;
        vm->ready_ns = cvm_clock_now(vm->vms->clock) - vm->created_ns;
        vm->state = CVM_VM_READY;
        cvm_store_val v[] = {CVM_STORE_S(vm->id), CVM_STORE_I(cvm_wall_ms())};
        cvm_store_write(vm->vms->store, CVM_STORE_VM_READY, v, CVM_ARRAY_SIZE(v), NULL, NULL);
        record_launch(vm, NULL);
        log_info("vm %s ready in %.1f ms (prepare %.1f, psp wait %.1f, psp %.1f, boot %.1f)",
                 vm->id, (double)vm->ready_ns / 1e6, (double)vm->prepare_ns / 1e6,
                 (double)vm->psp_wait_ns / 1e6, (double)vm->psp_ns / 1e6,
                 (double)vm->boot_ns / 1e6);
        end_launch(vm, NULL);
}

static void on_launched(cvm_vm *vm, const cvm_host_step *step) {
        /* The PSP is free for the next launch the scheduler picks. */
        cvm_sched_done(vm->sched_job, step->psp_ns);
        vm->sched_job = NULL;
        if (step->result < 0) {
                fail_launch(vm, step->err);
                return;
        }
        vm->psp_wait_ns = vm->sched_wait_ns + step->psp_wait_ns;
        vm->psp_ns = step->psp_ns;
        vm->asid = step->asid;
        vm->state = CVM_VM_BOOTING;
        cvm_error err = {0};
        if (vm->vms->host->ops->boot(vm->vms->host, vm, on_booted, &err) < 0)
                fail_launch(vm, &err);
}

static void on_launch_turn(cvm_sched_job *job, void *userdata) {
        (void)job;
        cvm_vm *vm = userdata;
        /* Time waiting for the scheduler is time waiting for the PSP. */
        vm->sched_wait_ns = cvm_clock_now(vm->vms->clock) - vm->launch_queued_ns;
        cvm_error err = {0};
        if (vm->vms->host->ops->launch(vm->vms->host, vm, on_launched, &err) < 0)
                fail_launch(vm, &err);
}

void cvm_vm_promote(cvm_vm *vm) {
        vm->demand = true;
        if (vm->sched_job)
                cvm_sched_promote(vm->sched_job, CVM_SCHED_DEMAND);
}

static void on_prepared(cvm_vm *vm, const cvm_host_step *step) {
        if (step->result < 0) {
                fail_launch(vm, step->err);
                return;
        }
        vm->prepare_ns = step->duration_ns;
        vm->state = CVM_VM_LAUNCHING;
        vm->launch_queued_ns = cvm_clock_now(vm->vms->clock);
        /* The scheduler decides when this VM's launch runs on the PSP. */
        cvm_error err = {0};
        if (cvm_sched_submit(vm->vms->sched, vm->demand ? CVM_SCHED_DEMAND : CVM_SCHED_PREWARM,
                             vm->image->psp_ns, vm->id, on_launch_turn, vm, &vm->sched_job,
                             &err) < 0)
                fail_launch(vm, &err);
}

int cvm_vms_launch(cvm_vms *vms, cvm_image *image, const cvm_handler_spec *handler,
                   uint32_t concurrency, const char *function, bool demand, cvm_vm_launch_cb cb,
                   void *userdata, cvm_vm **ret, cvm_error *err) {
        if (vms->count >= CVM_VMS_MAX)
                return cvm_error_set(err, -ENOSPC, "too many VMs: at most %d", CVM_VMS_MAX);
        cvm_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r = cvm_random_id("vm-", vm->id, sizeof(vm->id), err);
        if (r >= 0)
                r = cvm_handler_spec_copy(handler, &vm->handler, err);
        if (r >= 0 && function && !(vm->function = strdup(function)))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r < 0) {
                cvm_handler_spec_done(&vm->handler);
                free(vm);
                return r;
        }
        vm->vms = vms;
        vm->image = cvm_image_ref(image);
        vm->concurrency = concurrency ? concurrency : 1;
        vm->demand = demand;
        vm->state = CVM_VM_PREPARING;
        vm->created_ns = cvm_clock_now(vms->clock);
        vm->created_ms = cvm_wall_ms();
        vm->launch_cb = cb;
        vm->launch_data = userdata;
        CVM_LIST_PREPEND(vms->head, vm);
        vms->count++;
        /* A step that cannot start is the caller's error: cb never runs inside this call. */
        r = vms->host->ops->prepare(vms->host, vm, on_prepared, err);
        if (r < 0) {
                vm_unlink_free(vm);
                return r;
        }
        cvm_store_val v[] = {CVM_STORE_S(vm->id),
                             CVM_STORE_S(vm->function),
                             CVM_STORE_S(image->digest_hex),
                             CVM_STORE_I(image->spec.vcpus),
                             CVM_STORE_I(image->spec.memory_mib),
                             CVM_STORE_I(vm->created_ms)};
        cvm_store_write(vms->store, CVM_STORE_VM_CREATE, v, CVM_ARRAY_SIZE(v), NULL, NULL);
        if (ret)
                *ret = vm;
        return 0;
}

void cvm_vm_forget_launch(cvm_vm *vm) {
        vm->launch_cb = NULL;
        vm->launch_data = NULL;
}

void cvm_vm_lost(cvm_vm *vm) {
        if (vm->state != CVM_VM_READY || !vm->on_gone)
                return;
        void (*gone)(cvm_vm *, void *) = vm->on_gone;
        vm->on_gone = NULL;
        gone(vm, vm->owner);
}

static void on_invoked(cvm_vm *vm, const cvm_agent_result *result, const cvm_error *err,
                       void *userdata) {
        invoke_ctx *ctx = userdata;
        CVM_LIST_REMOVE(vm->invokes, ctx);
        vm->active--;
        vm->served++;
        cvm_vm_outcome out = {.result = err ? err->code : 0,
                              .err = err,
                              .agent = result,
                              .exec_ns = cvm_clock_now(vm->vms->clock) - ctx->started_ns};
        cvm_vm_invoke_cb cb = ctx->cb;
        void *ud = ctx->userdata;
        free(ctx);
        cb(vm, &out, ud);
}

int cvm_vm_invoke(cvm_vm *vm, const cvm_vm_invocation *inv, uint32_t timeout_ms, const void *body,
                  size_t len, cvm_vm_invoke_cb cb, void *userdata, cvm_error *err) {
        (void)inv;
        if (vm->state != CVM_VM_READY)
                return cvm_error_set(err, -EBUSY, "vm %s is %s, not ready", vm->id,
                                     cvm_vm_state_to_string(vm->state));
        if (vm->active >= vm->concurrency)
                return cvm_error_set(err, -EAGAIN, "vm %s is busy (%u of %u invocations running)",
                                     vm->id, vm->active, vm->concurrency);
        invoke_ctx *ctx = malloc(sizeof(*ctx));
        if (!ctx)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *ctx = (invoke_ctx){
                .cb = cb, .userdata = userdata, .started_ns = cvm_clock_now(vm->vms->clock)};
        int r = vm->vms->host->ops->invoke(vm->vms->host, vm, vm->vms->next_invoke_id++, timeout_ms,
                                           body, len, on_invoked, ctx, err);
        if (r < 0) {
                free(ctx);
                return r;
        }
        CVM_LIST_PREPEND(vm->invokes, ctx);
        vm->active++;
        return 0;
}

static double ms(uint64_t ns) {
        return (double)(ns / 1000) / 1e3;
}

json_t *cvm_vm_to_json(cvm_vm *vm) {
        json_t *phases = json_pack("{s:f, s:f, s:f, s:f, s:f}", "prepare_ms", ms(vm->prepare_ns),
                                   "psp_wait_ms", ms(vm->psp_wait_ns), "psp_ms", ms(vm->psp_ns),
                                   "boot_ms", ms(vm->boot_ns), "total_ms", ms(vm->ready_ns));
        json_t *j = json_pack("{s:s, s:s, s:s?, s:s, s:I, s:i, s:i, s:I, s:o, s:o, s:o}", "id",
                              vm->id, "state", cvm_vm_state_to_string(vm->state), "function",
                              vm->function, "measurement", vm->image->digest_hex, "created_at_ms",
                              (json_int_t)vm->created_ms, "concurrency", (int)vm->concurrency,
                              "active", (int)vm->active, "invocations", (json_int_t)vm->served,
                              "phases", phases, "image", cvm_image_spec_to_json(&vm->image->spec),
                              "handler", cvm_handler_spec_to_json(&vm->handler));
        json_t *host = vm->vms->host->ops->vm_json(vm->vms->host, vm);
        if (j && host)
                json_object_set_new(j, "host", host);
        else
                json_decref(host);
        return j;
}

void cvm_vms_record_invocation(cvm_vms *vms, const cvm_invocation_record *r) {
        cvm_store_val v[] = {
                CVM_STORE_S(r->id),
                CVM_STORE_S(r->function),
                CVM_STORE_S(r->vm_id),
                CVM_STORE_S(r->start_kind),
                CVM_STORE_I(r->started_ms),
                CVM_STORE_I((int64_t)us(r->queue_ns)),
                CVM_STORE_I((int64_t)us(r->psp_wait_ns)),
                CVM_STORE_I((int64_t)us(r->psp_ns)),
                CVM_STORE_I((int64_t)us(r->boot_ns)),
                CVM_STORE_I((int64_t)us(r->exec_ns)),
                CVM_STORE_I((int64_t)us(r->total_ns)),
                CVM_STORE_S(r->status),
                r->exit_code >= 0 ? CVM_STORE_I(r->exit_code) : CVM_STORE_NUL,
                CVM_STORE_I((int64_t)r->bytes_in),
                CVM_STORE_I((int64_t)r->bytes_out),
                CVM_STORE_S(r->error),
        };
        cvm_store_write(vms->store, CVM_STORE_INVOCATION, v, CVM_ARRAY_SIZE(v), NULL, NULL);
        /* Function and bare VM invocations alike end here. */
        cvm_metrics_invocation(vms->metrics, r);
}
