/* The simulated PSP of the sim host: one server that runs one SEV-SNP
 * firmware command at a time, in submit order, each taking the service time
 * of the cost model (psp_cost.h), and the machine's finite ASIDs. It sees
 * time only through clock.h, so unit tests and trace replays drive it on a
 * virtual clock.
 *
 * Finish times are exact model times: a command starts when the server
 * frees up (or when submitted, if idle) and finishes its service time later.
 * When the clock's timer fires late, every command due by then completes in
 * order, each at its model time, and a command submitted from a completion
 * callback counts as submitted at that completion's model time; so timer
 * lateness never stretches simulated PSP time. Callbacks never run inside
 * submit; they may submit, cancel, launch and abort, but not free the PSP.
 *
 * Two layers, usable separately: the FIFO server (cvm_psp_sim_submit) and
 * the launch-sequence helper (cvm_psp_sim_launch), which behaves like an
 * independent VMM process (psp.schedule = "none"): it submits each command
 * of a launch only when the previous one completed, so the commands of
 * concurrent launches interleave in the FIFO. A scheduler may instead submit
 * the commands of the launch it picks. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "error.h"
#include "psp_cost.h"

#define CVM_PSP_ASIDS_DEFAULT 509 /* SEV ASIDs of an EPYC 7003 (Milan) part. */
#define CVM_PSP_ASIDS_MAX 4096
#define CVM_PSP_QUEUE_DEFAULT 4096
#define CVM_PSP_QUEUE_MAX 1048576
#define CVM_PSP_OWNER_MAX 64 /* Owner tags, including the NUL. */

typedef struct cvm_psp_sim cvm_psp_sim;
typedef struct cvm_psp_launch cvm_psp_launch;

typedef struct cvm_psp_sim_config {
        cvm_psp_costs costs;
        uint32_t asids;     /* ASIDs usable by SNP guests, numbered 1..asids. */
        uint32_t max_queue; /* Commands waiting (not in service) at most. */
} cvm_psp_sim_config;

void cvm_psp_sim_config_default(cvm_psp_sim_config *cfg);
/* Applies the keys this module owns in the config section obj at path
 * ("psp"): "asids", "max_queue" and the object "costs". Other keys belong to
 * other modules (the scheduler's "schedule") and are left to the caller to
 * check. On error cfg is unchanged. */
int cvm_psp_sim_config_parse(json_t *obj, const char *path, cvm_psp_sim_config *cfg,
                             cvm_error *err);

int cvm_psp_sim_new(cvm_clock *clock, const cvm_psp_sim_config *cfg, cvm_psp_sim **ret,
                    cvm_error *err);
/* Frees the PSP, its queue and its launches without running any callback. */
void cvm_psp_sim_free(cvm_psp_sim *psp);

typedef struct cvm_psp_cmd {
        cvm_psp_cmd_type type;
        uint32_t page_type; /* LAUNCH_UPDATE only. */
        uint32_t asid;      /* The guest's; unused by LAUNCH_START and DF_FLUSH. */
        const char *owner;  /* Shown in the queue listing (copied); NULL for none. */
} cvm_psp_cmd;

typedef struct cvm_psp_completion {
        uint64_t id;
        cvm_psp_cmd_type type;
        uint32_t page_type;
        uint32_t asid; /* For LAUNCH_START, the ASID allocated (0 on failure). */
        int result;    /* 0, or a negative errno with err set. */
        const cvm_error *err;
        bool df_flushed; /* A LAUNCH_START that ran a DF_FLUSH first. */
        uint64_t submit_ns, start_ns, finish_ns;
        uint64_t wait_ns;    /* start - submit: time queued behind others. */
        uint64_t service_ns; /* finish - start: PSP time this command used. */
} cvm_psp_completion;

/* The completion is valid only during the call. */
typedef void (*cvm_psp_done_cb)(const cvm_psp_completion *c, void *userdata);

/* Queues a command; cb (may be NULL) runs when the clock reaches its finish.
 * Firmware-level failures (no ASID, ASID not in use) are reported through
 * the completion; submit itself fails only on a malformed command (-EINVAL)
 * or a full queue (-EAGAIN). ret_id (may be NULL) receives the command id. */
int cvm_psp_sim_submit(cvm_psp_sim *psp, const cvm_psp_cmd *cmd, cvm_psp_done_cb cb, void *userdata,
                       uint64_t *ret_id, cvm_error *err);
/* Removes a queued command; its callback never runs. -EBUSY if it is in
 * service, -ENOENT if unknown or finished. */
int cvm_psp_sim_cancel(cvm_psp_sim *psp, uint64_t id, cvm_error *err);

/* Submits DECOMMISSION: the ASID becomes dirty until a DF_FLUSH. */
int cvm_psp_sim_decommission(cvm_psp_sim *psp, uint32_t asid, const char *owner, cvm_psp_done_cb cb,
                             void *userdata, cvm_error *err);
/* Submits GUEST_REQUEST for an attestation report of the guest on asid. */
int cvm_psp_sim_attest(cvm_psp_sim *psp, uint32_t asid, const char *owner, cvm_psp_done_cb cb,
                       void *userdata, cvm_error *err);

typedef struct cvm_psp_launch_result {
        int result; /* 0, or a negative errno with err set. */
        const cvm_error *err;
        /* The guest's ASID on success, which it holds until decommissioned.
         * A failed launch releases its ASID itself and reports 0. */
        uint32_t asid;
        uint64_t submit_ns, finish_ns;
        uint64_t latency_ns; /* finish - submit. */
        uint64_t wait_ns;    /* Summed queue waits of its commands. */
        uint64_t service_ns; /* Summed PSP service time of its commands. */
        uint32_t commands;
} cvm_psp_launch_result;

/* The result is valid only during the call. */
typedef void (*cvm_psp_launch_cb)(const cvm_psp_launch_result *r, void *userdata);

/* Starts a launch: LAUNCH_START, ACTIVATE, one LAUNCH_UPDATE per page in plan
 * order, one per VMSA, LAUNCH_FINISH, each submitted when the previous one
 * completes. The plan is copied. ret (may be NULL) receives a handle valid
 * until cb returns or the launch is aborted. */
int cvm_psp_sim_launch(cvm_psp_sim *psp, const cvm_psp_launch_plan *plan, const char *owner,
                       cvm_psp_launch_cb cb, void *userdata, cvm_psp_launch **ret, cvm_error *err);
/* Stops a launch: its queued command is cancelled (one in service runs to
 * its end), an ASID it acquired is decommissioned, cb never runs. NULL-safe. */
void cvm_psp_sim_launch_abort(cvm_psp_launch *launch);

typedef struct cvm_psp_sim_stats {
        uint64_t now_ns;
        uint64_t since_ns; /* Creation time: utilisation is busy_ns / (now - since). */
        uint64_t busy_ns;  /* PSP service time so far, the command in service included. */
        bool busy;
        size_t queue_depth;                   /* Waiting commands, the one in service excluded. */
        size_t launches;                      /* Launch sequences in progress. */
        uint64_t commands[CVM_PSP_CMD_COUNT]; /* Commands that entered service. */
        uint64_t pages[CVM_SNP_PAGE_TYPE_MAX + 1]; /* Pages launch-updated, by type. */
        uint64_t df_flushes;                       /* Explicit and those run by LAUNCH_START. */
        uint64_t failed;
        uint64_t cancelled;
        uint32_t asids_total, asids_free, asids_dirty, asids_in_use;
} cvm_psp_sim_stats;

void cvm_psp_sim_stats_get(cvm_psp_sim *psp, cvm_psp_sim_stats *ret);

typedef struct cvm_psp_queue_entry {
        uint64_t id;
        cvm_psp_cmd_type type;
        uint32_t page_type;
        uint32_t asid;
        char owner[CVM_PSP_OWNER_MAX];
        uint64_t submit_ns;
        bool in_service;
        uint64_t start_ns, finish_ns; /* In service only. */
} cvm_psp_queue_entry;

/* Fills up to max entries, the command in service first, then the queue in
 * order; returns the total number of commands (so a caller can size a
 * second call). */
size_t cvm_psp_sim_list(cvm_psp_sim *psp, cvm_psp_queue_entry *entries, size_t max);
