/* Pool policies: per function, how long an idle VM (beyond the pool's
 * min_warm) is kept after an invocation, and whether to unload it and
 * pre-warm one ahead of the next expected invocation.
 *
 * Two kinds: "fixed" keeps an idle VM for keep_alive_s and never pre-warms;
 * "histogram" is the hybrid histogram policy of Shahrad et al., "Serverless
 * in the Wild" (USENIX ATC'20): a histogram of the function's idle times in
 * 1-minute bins over 4 hours gives a pre-warm window (5th percentile minus a
 * 10% margin) and a keep-alive window (99th percentile plus a 10% margin,
 * minus the pre-warm), falling back to the fixed keep-alive while the
 * histogram is not representative. docs/pool-policy.md has the exact
 * definitions.
 *
 * Part of the deciding core: it keeps no clock and no timers. The pool
 * manager passes the clock's time with every event and applies the
 * decision itself. Memory per function is fixed (one small struct). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "error.h"

#define CVM_POLICY_BINS 240                       /* 4 hours of 1-minute bins. */
#define CVM_POLICY_BIN_NS (60 * CVM_NSEC_PER_SEC) /* One bin: a minute. */
/* Decay: when the histogram holds this many idle times (out-of-bounds
 * included), every count is halved, rounding down. */
#define CVM_POLICY_DECAY_TOTAL 256
#define CVM_POLICY_HEAD_PCT 5    /* The percentile the pre-warm window comes from. */
#define CVM_POLICY_TAIL_PCT 99   /* The percentile the keep-alive window covers. */
#define CVM_POLICY_MARGIN_PCT 10 /* Taken off the head, added to the tail. */

#define CVM_POLICY_KEEP_ALIVE_DEFAULT_S 600
#define CVM_POLICY_KEEP_ALIVE_MAX_S 86400
#define CVM_POLICY_MIN_SAMPLES_DEFAULT 10
/* At most half the decay total, so a decayed histogram can stay representative. */
#define CVM_POLICY_MIN_SAMPLES_MAX (CVM_POLICY_DECAY_TOTAL / 2)
#define CVM_POLICY_CV_THRESHOLD_DEFAULT 2.0
#define CVM_POLICY_CV_THRESHOLD_MAX 100.0
#define CVM_POLICY_OOB_FRACTION_MAX_DEFAULT 0.5

typedef enum { CVM_POLICY_FIXED, CVM_POLICY_HISTOGRAM } cvm_policy_kind;

typedef struct cvm_policy_params {
        cvm_policy_kind kind;
        uint32_t keep_alive_s;   /* Fixed keep-alive and the histogram's fallback; 0..86400. */
        uint32_t min_samples;    /* Idle times before the histogram is used; 1..128. */
        double cv_threshold;     /* Bin counts' coefficient of variation below it: fallback. */
        double oob_fraction_max; /* More out-of-bounds idle times than this fraction: fallback. */
} cvm_policy_params;

void cvm_policy_params_default(cvm_policy_params *p);
/* "fixed" or "histogram"; -EINVAL for anything else (NULL included). */
int cvm_policy_kind_from_string(const char *s, cvm_policy_kind *ret);
/* "fixed", "histogram", or "unknown" for a value out of range. */
const char *cvm_policy_kind_to_string(cvm_policy_kind k);
/* Checks every field's range; errors name PATH.FIELD ("pool.keep_alive_s"). */
int cvm_policy_params_check(const cvm_policy_params *p, const char *path, cvm_error *err);
/* Applies the keys this module owns in the JSON object obj at path ("pool"):
 * "policy" (the kind's name), "keep_alive_s", "min_samples", "cv_threshold",
 * "oob_fraction_max". Absent keys keep their value; other keys are left to
 * the caller to check. On error p is unchanged. */
int cvm_policy_params_parse(json_t *obj, const char *path, cvm_policy_params *p, cvm_error *err);

typedef struct cvm_policy cvm_policy; /* One per function. */

int cvm_policy_new(const cvm_policy_params *p, cvm_policy **ret, cvm_error *err);
/* NULL-safe. */
void cvm_policy_free(cvm_policy *p);
/* Parameters can change (pool set) without losing the histogram; the kind
 * too, since both kinds record idle times. On error nothing changes. */
int cvm_policy_set_params(cvm_policy *p, const cvm_policy_params *params, cvm_error *err);
void cvm_policy_get_params(const cvm_policy *p, cvm_policy_params *ret);

/* Events from the pool manager, with the clock's time, for the function's
 * invocations on any VM: for every one, or only for the first start and the
 * last end of a busy period, which records the same idle times. An idle time
 * is recorded when an invocation starts while none is running: the time
 * since the last one ended. An end without a matching start is ignored. */
void cvm_policy_invocation_started(cvm_policy *p, uint64_t now_ns);
void cvm_policy_invocation_ended(cvm_policy *p, uint64_t now_ns);

typedef struct cvm_policy_decision {
        uint64_t prewarm_ns; /* 0: keep warm now; else unload, and pre-warm this long after the last
                                end. */
        uint64_t keep_alive_ns; /* How long the (pre-warmed or kept) idle VM stays. */
        bool from_histogram;    /* False: the fixed keep-alive (or the histogram's fallback). */
} cvm_policy_decision;

/* The current windows (after the last invocation ended). A pre-warmed VM
 * should be ready prewarm_ns after the last end, so the pool manager starts
 * its launch earlier by the time a launch takes. */
void cvm_policy_decide(const cvm_policy *p, cvm_policy_decision *ret);

typedef struct cvm_policy_stats {
        uint32_t samples; /* Idle times in the histogram now (decayed), out-of-bounds included. */
        uint32_t out_of_bounds; /* Of which 4 hours or longer. */
        uint64_t recorded;      /* Idle times recorded since creation. */
        uint64_t overlapped;    /* Starts while another invocation ran (no idle time). */
        uint64_t decays;        /* Times the counts were halved. */
        uint32_t running;       /* Invocations running now. */
        double cv;              /* Of the 240 bin counts; 0 with no in-bounds idle time. */
        bool representative;    /* The histogram would be used (whatever the kind). */
        const char *reason; /* Why not: "too_few_samples", "out_of_bounds", "low_cv"; or NULL. */
} cvm_policy_stats;

void cvm_policy_get_stats(const cvm_policy *p, cvm_policy_stats *ret);

/* For GET /v1/functions/{name}: the kind, the parameters, the histogram's
 * statistics and the current decision in seconds. NULL on allocation failure. */
json_t *cvm_policy_to_json(const cvm_policy *p);
