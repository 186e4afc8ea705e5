/* The PSP scheduler: decides which job's PSP work runs next. Every SNP launch
 * goes through the PSP, one small core that serializes its commands; when
 * launches run concurrently their commands interleave and every launch ends
 * late. With psp.schedule = "cvmd" the scheduler lets at most `window`
 * launches onto the PSP at once, the most urgent and shortest first, and
 * defers teardown work until the PSP is idle. With "none" every job starts at
 * once, as independent VMM processes would (the baseline).
 *
 * The scheduler never touches the PSP: it tells a job's owner "start now"
 * through a callback and the owner reports when its PSP work finished. It
 * sees time only through clock.h, so tests and trace replays run it on a
 * virtual clock. Start callbacks run from a zero-delay timer on the clock's
 * thread, never inside submit, done, cancel or promote, so callers are never
 * re-entered. The design and the figures are in docs/scheduler.md. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "error.h"

#define CVM_SCHED_WINDOW_DEFAULT 1
#define CVM_SCHED_WINDOW_MAX 16
#define CVM_SCHED_AGING_MS_DEFAULT 2000
#define CVM_SCHED_AGING_MS_MAX 3600000 /* One hour. */
#define CVM_SCHED_ASID_RESERVE_DEFAULT 8
#define CVM_SCHED_ASID_RESERVE_MAX 4096 /* CVM_PSP_ASIDS_MAX. */
#define CVM_SCHED_QUEUE_DEFAULT 4096
#define CVM_SCHED_QUEUE_MAX 1048576
#define CVM_SCHED_OWNER_MAX 64 /* Owner labels, including the NUL. */
/* A job's expected PSP time is at most an hour, so sums over a full queue
 * cannot overflow. */
#define CVM_SCHED_EXPECTED_MAX_NS (3600 * CVM_NSEC_PER_SEC)
#define CVM_SCHED_LIST_MAX 100 /* Jobs shown by cvm_sched_to_json. */

/* In priority order. DEMAND: a launch an invocation waits for. ATTEST: an
 * attestation report. PREWARM: a pool refill. RELEASE: teardown work
 * (DECOMMISSION, DF_FLUSH), deferred until the PSP is idle from launches. */
typedef enum cvm_sched_class {
        CVM_SCHED_DEMAND,
        CVM_SCHED_ATTEST,
        CVM_SCHED_PREWARM,
        CVM_SCHED_RELEASE,
        CVM_SCHED_CLASS_COUNT,
} cvm_sched_class;

typedef struct cvm_sched_config {
        bool enabled;          /* psp.schedule: "cvmd" (true, the default) or "none". */
        uint32_t window;       /* Jobs on the PSP at once, 1..16. */
        uint32_t aging_ms;     /* A job waiting this long is served before younger jobs. */
        uint32_t asid_reserve; /* At or below this many ASIDs, RELEASE goes first. */
        uint32_t max_queue;    /* Jobs waiting (not started) at most. */
} cvm_sched_config;

void cvm_sched_config_default(cvm_sched_config *c);
/* Applies the scheduler's keys of the "psp" config section at path:
 * "schedule" ("cvmd" or "none"), "window", "aging_ms", "asid_reserve",
 * "max_queue". Other keys belong to other modules and are ignored here. On
 * error c is unchanged and the message names the field. */
int cvm_sched_config_parse(json_t *psp, const char *path, cvm_sched_config *c, cvm_error *err);

typedef struct cvm_sched cvm_sched;
typedef struct cvm_sched_job cvm_sched_job;

/* "start now": the owner submits the job's PSP work, then calls
 * cvm_sched_done (it may do so inside the callback, e.g. on failure). */
typedef void (*cvm_sched_start_cb)(cvm_sched_job *job, void *userdata);
/* How many ASIDs a launch could take now (free + dirty). */
typedef uint32_t (*cvm_sched_asids_fn)(void *userdata);

/* asids may be NULL: ASIDs then never run short. */
int cvm_sched_new(cvm_clock *clock, const cvm_sched_config *cfg, cvm_sched_asids_fn asids,
                  void *asids_ud, cvm_sched **ret, cvm_error *err);
/* Frees the scheduler and every job without running any callback; job
 * handles become invalid. NULL-safe. Not from a start callback. */
void cvm_sched_free(cvm_sched *s);

/* Queues a job. expected_ns: its PSP time when run alone (for launches,
 * cvm_psp_costs_launch_ns of the image); launch costs are corrected by an
 * EWMA of actual/expected over earlier launches. owner labels the job in
 * listings (copied; NULL for none). start runs later, never inside submit.
 * -EINVAL for a bad class, cost, owner or a NULL start; -EAGAIN when
 * max_queue jobs already wait. ret (may be NULL) receives the handle, valid
 * until cvm_sched_done or cvm_sched_cancel. */
int cvm_sched_submit(cvm_sched *s, cvm_sched_class cls, uint64_t expected_ns, const char *owner,
                     cvm_sched_start_cb start, void *userdata, cvm_sched_job **ret, cvm_error *err);
/* The job's PSP work ended; actual_ns is the PSP service time it used (0 if
 * unknown). Frees the job. NULL-safe. */
void cvm_sched_done(cvm_sched_job *job, uint64_t actual_ns);
/* Removes a job, started or not; its start never runs (again). The owner
 * stops its own PSP work. Frees the job. NULL-safe. */
void cvm_sched_cancel(cvm_sched_job *job);
/* Late binding: moves a job to a class of higher priority (a prewarm launch
 * that an invocation now waits for becomes DEMAND). A class of lower or equal
 * priority is ignored. The job keeps its submit time for aging. NULL-safe. */
void cvm_sched_promote(cvm_sched_job *job, cvm_sched_class cls);

/* The predicted start (absolute clock time) of a new job of this class and
 * cost if submitted now, for admission control. See docs/scheduler.md for
 * the approximation used when window > 1. */
uint64_t cvm_sched_predict_start(cvm_sched *s, cvm_sched_class cls, uint64_t expected_ns);
/* The state for GET /v1/psp: config, correction factor, counts per class, and
 * up to CVM_SCHED_LIST_MAX jobs, running ones first, then the queue in the
 * order it would be served. NULL on allocation failure. */
json_t *cvm_sched_to_json(cvm_sched *s);

/* "demand", "attest", "prewarm", "release"; "unknown" out of range. */
const char *cvm_sched_class_to_string(cvm_sched_class cls);
