/* The host interface: what every host (the simulated SNP machine, libvirt)
 * implements. A VM goes through prepare (VMM set-up, CPU-bound, parallel),
 * launch (the PSP-bound phase: LAUNCH_START, LAUNCH_UPDATEs, VMSAs,
 * LAUNCH_FINISH), boot (firmware, kernel, agent start, until the agent's
 * HELLO), then any number of invocations, then teardown. The split between
 * prepare, launch and boot is the point: whoever drives the VMs decides when
 * each VM's launch runs on the PSP.
 *
 * Everything runs on the loop. A step reports once through its callback,
 * with its duration, unless teardown starts first: then the step's callback
 * never runs. At most one step runs per VM at a time. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "agent_proto.h"
#include "error.h"

typedef struct cvm_vm cvm_vm;
typedef struct cvm_host cvm_host;

typedef struct cvm_host_step {
        int result; /* 0 or a negative errno with err set. */
        const cvm_error *err;
        uint64_t duration_ns;
        /* The launch step: time queued behind other PSP work, PSP service time. */
        uint64_t psp_wait_ns;
        uint64_t psp_ns;
        uint32_t asid;
} cvm_host_step;

typedef void (*cvm_host_step_cb)(cvm_vm *vm, const cvm_host_step *step);
/* One call per accepted invocation: result from the agent, or err when the
 * VM could not answer (-ECONNRESET: it died, -ETIMEDOUT, -ECANCELED). */
typedef void (*cvm_host_invoke_cb)(cvm_vm *vm, const cvm_agent_result *result, const cvm_error *err,
                                   void *userdata);

/* An attestation as the host relays it to the client, who verifies it. */
typedef struct cvm_host_attestation {
        const uint8_t *report; /* ATTESTATION_REPORT, signed by the VCEK. */
        size_t report_len;
        const uint8_t *public_key; /* The VM's own key (DER SPKI), bound in REPORT_DATA. */
        size_t public_key_len;
        const char *cert_chain_pem; /* VCEK, ASK, ARK. */
} cvm_host_attestation;

/* One call per accepted request, with the attestation or an error. */
typedef void (*cvm_host_attest_cb)(cvm_vm *vm, const cvm_host_attestation *a, const cvm_error *err,
                                   void *userdata);

typedef struct cvm_host_ops {
        const char *name;
        int (*prepare)(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err);
        int (*launch)(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err);
        int (*boot)(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err);
        int (*invoke)(cvm_host *host, cvm_vm *vm, uint64_t id, uint32_t timeout_ms,
                      const void *body, size_t len, cvm_host_invoke_cb cb, void *userdata,
                      cvm_error *err);
        /* An attestation report of a ready VM binding the client's 64-byte nonce. */
        int (*attest)(cvm_host *host, cvm_vm *vm, const uint8_t nonce[64], cvm_host_attest_cb cb,
                      void *userdata, cvm_error *err);
        /* Stops the VM in any state and releases everything; cb always runs
         * (later, on the loop), after which the host holds nothing of the VM. */
        void (*teardown)(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb);
        /* Host-specific details of a VM for the API (pid, ASID, ...). */
        json_t *(*vm_json)(cvm_host *host, cvm_vm *vm);
        /* The PSP's state for GET /v1/psp. */
        json_t *(*psp_json)(cvm_host *host);
        /* ASIDs a launch could take now (free and dirty ones). */
        uint32_t (*asids_available)(cvm_host *host);
        /* Kills every VM at once without callbacks (daemon exit), then frees.
         * Returns a negative errno if it had to leave work behind (it logs
         * what, and keeps what that work still uses); the daemon then exits
         * non-zero. */
        int (*free)(cvm_host *host);
} cvm_host_ops;

/* Called when a ready VM dies outside any step (its agent exited, the guest
 * crashed); the owner tears it down. */
typedef void (*cvm_host_died_cb)(cvm_vm *vm, const cvm_error *why, void *userdata);

struct cvm_sched;

struct cvm_host {
        const cvm_host_ops *ops;
        /* PSP work of teardowns (DECOMMISSION) goes through the scheduler, which
         * defers it to idle moments; NULL runs it at once. */
        struct cvm_sched *sched;
        cvm_host_died_cb on_died;
        /* Called when a ready VM's agent is lost, before its pending invocations
         * and attestations fail (on_died follows): the owner stops handing the
         * VM work, or each freed slot would go to the next waiter and fail. */
        cvm_host_died_cb on_lost;
        void *userdata;
};
