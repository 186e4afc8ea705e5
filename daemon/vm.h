/* VMs: the daemon's registry of guests and their lifecycle on a host, the
 * launch of one VM through its steps, invocations, and the rows the store
 * keeps for each. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "host.h"
#include "psp_sched.h"
#include "image.h"
#include "store.h"

#define CVM_VM_ID_SIZE 20 /* "vm-" + 16 hex + NUL */
#define CVM_VMS_MAX 4096

typedef enum cvm_vm_state {
        CVM_VM_PREPARING,
        CVM_VM_LAUNCHING,
        CVM_VM_BOOTING,
        CVM_VM_READY,
        CVM_VM_STOPPING,
} cvm_vm_state;

const char *cvm_vm_state_to_string(cvm_vm_state state);

typedef struct cvm_vms cvm_vms;

/* Reports the end of a VM's launch: ready, or failed (the VM is then gone). */
typedef void (*cvm_vm_launch_cb)(cvm_vm *vm, const cvm_error *err, void *userdata);

struct cvm_vm {
        char id[CVM_VM_ID_SIZE];
        cvm_vms *vms;
        cvm_vm_state state;
        cvm_image *image;
        cvm_handler_spec handler;
        uint32_t concurrency;
        char *function; /* NULL for a VM created on its own. */
        /* Phase durations of the launch, in ns. */
        uint64_t created_ns, prepare_ns, psp_wait_ns, psp_ns, boot_ns, ready_ns;
        uint64_t launch_queued_ns, sched_wait_ns;
        int64_t created_ms; /* Wall clock, for the store. */
        uint32_t asid;
        uint32_t active;            /* Invocations running now. */
        struct invoke_ctx *invokes; /* Theirs, freed with the VM if the host never answers. */
        uint64_t served;            /* Invocations answered. */
        char *retire_reason;        /* Why it is stopping. */
        bool demand;                /* An invocation waits for its launch (else a prewarm). */
        cvm_sched_job *sched_job;
        cvm_vm_launch_cb launch_cb;
        void *launch_data;
        /* The owner (a function's pool) hears when the VM is gone. */
        void (*on_gone)(cvm_vm *vm, void *owner);
        void *owner;
        void *host_data; /* The host's per-VM state. */
        cvm_vm *prev, *next;
};

/* sched gates each VM's launch step (NULL: launch as soon as prepared). */
struct cvm_metrics; /* metrics.h; NULL: not counted. */
int cvm_vms_new(cvm_host *host, cvm_store *store, cvm_sched *sched, cvm_clock *clock,
                struct cvm_metrics *metrics, cvm_vms **ret, cvm_error *err);
/* Kills every VM (the host does it without callbacks) and frees; NULL-safe. */
void cvm_vms_free(cvm_vms *vms);

/* Creates a VM from a measured image and launches it: prepare, launch, boot.
 * cb runs once, later: when it is ready, or when it failed (then it is
 * gone). An error returned here means no VM was created and cb never runs. */
int cvm_vms_launch(cvm_vms *vms, cvm_image *image, const cvm_handler_spec *handler,
                   uint32_t concurrency, const char *function, bool demand, cvm_vm_launch_cb cb,
                   void *userdata, cvm_vm **ret, cvm_error *err);
/* An invocation now waits for this VM's launch: it moves up to demand. */
void cvm_vm_promote(cvm_vm *vm);
/* Stops interest in a launch: cb will not run; the VM carries on. */
void cvm_vm_forget_launch(cvm_vm *vm);

cvm_vm *cvm_vms_find(cvm_vms *vms, const char *id);
cvm_vm *cvm_vms_first(cvm_vms *vms);
size_t cvm_vms_count(cvm_vms *vms);

/* Tears a VM down off the request path; reason is kept in the store. */
void cvm_vm_retire(cvm_vm *vm, const char *reason);
/* The VM's agent is lost: its owner hears now (on_gone) that the VM is gone,
 * before the teardown, and stops handing it work. Only for a ready VM. */
void cvm_vm_lost(cvm_vm *vm);

typedef struct cvm_vm_invocation {
        const char *invocation_id;
        const char *start_kind; /* "warm" or "cold". */
        uint64_t queue_ns;      /* Time the request waited for this VM. */
} cvm_vm_invocation;

/* The outcome of one invocation, valid during the callback. */
typedef struct cvm_vm_outcome {
        int result; /* 0 when the agent answered; else -ECONNRESET, -ETIMEDOUT, ... */
        const cvm_error *err;
        const cvm_agent_result *agent; /* When result is 0. */
        uint64_t exec_ns;              /* Round trip to the agent. */
} cvm_vm_outcome;
typedef void (*cvm_vm_invoke_cb)(cvm_vm *vm, const cvm_vm_outcome *out, void *userdata);

/* Sends one invocation; -EAGAIN when the VM is at its concurrency, -EBUSY
 * when it is not ready. A VM that dies during it is retired by the host's
 * death notice. The caller records the invocation (cvm_vms_record_invocation). */
int cvm_vm_invoke(cvm_vm *vm, const cvm_vm_invocation *inv, uint32_t timeout_ms, const void *body,
                  size_t len, cvm_vm_invoke_cb cb, void *userdata, cvm_error *err);

json_t *cvm_vm_to_json(cvm_vm *vm);

/* One row of the invocations table. Durations in ns; exit_code < 0 is NULL. */
typedef struct cvm_invocation_record {
        const char *id, *function, *vm_id, *start_kind, *status, *error;
        int64_t started_ms;
        uint64_t queue_ns, psp_wait_ns, psp_ns, boot_ns, exec_ns, total_ns;
        int exit_code;
        uint64_t bytes_in, bytes_out;
} cvm_invocation_record;
void cvm_vms_record_invocation(cvm_vms *vms, const cvm_invocation_record *rec);

/* A fresh random id, prefix + 16 hex digits ("inv-0123456789abcdef"), into
 * buf; -ENOBUFS if it does not fit. */
int cvm_random_id(const char *prefix, char *buf, size_t size, cvm_error *err);
int64_t cvm_wall_ms(void);
