#include "psp_sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "json.h"
#include "list.h"
#include "log.h"

/* The correction factor moves a quarter of the way to each new sample: recent
 * launches dominate within a handful, one odd launch cannot swing it. */
#define EWMA_ALPHA 0.25
/* Samples are clamped so that a bogus report (a launch that died at once, a
 * cost of a different image) cannot make predictions absurd. */
#define SAMPLE_MIN (1.0 / 16)
#define SAMPLE_MAX 16.0

typedef enum job_state {
        JOB_QUEUED,
        JOB_RUNNING,
} job_state;

/* Ranks, best first: releases under ASID pressure, then aged jobs (oldest
 * first), then each class in priority order (shortest first). */
enum {
        TIER_PRESSURE = 0,
        TIER_AGED = 1,
        TIER_CLASS = 2, /* + the class. */
};

struct cvm_sched_job {
        cvm_sched_job *prev, *next; /* In the queued or the running list. */
        cvm_sched *s;
        uint64_t seq; /* Submit order: the tie-break, so equal jobs go FIFO. */
        cvm_sched_class cls;
        bool launch; /* Submitted as DEMAND or PREWARM: its cost is corrected. */
        job_state state;
        uint64_t expected_ns;
        uint64_t submit_ns, start_ns;
        char owner[CVM_SCHED_OWNER_MAX];
        cvm_sched_start_cb start;
        void *userdata;
        /* The rank computed by the last ranking pass, for sorting. */
        int tier;
        uint64_t key;
};

typedef struct job_list {
        cvm_sched_job *head, *tail;
        size_t n;
} job_list;

struct cvm_sched {
        cvm_clock *clock;
        cvm_timer *timer;
        uint64_t timer_due; /* While the timer is armed. */
        cvm_sched_config cfg;
        cvm_sched_asids_fn asids;
        void *asids_ud;

        job_list queued;  /* In submit order. */
        job_list running; /* In start order. */
        size_t queued_by[CVM_SCHED_CLASS_COUNT], running_by[CVM_SCHED_CLASS_COUNT];
        uint64_t next_seq;

        double factor; /* EWMA of actual / expected over finished launches. */
        uint64_t samples;
        uint64_t started, completed, cancelled, rejected;
};

static const char *const class_names[CVM_SCHED_CLASS_COUNT] = {
        [CVM_SCHED_DEMAND] = "demand",
        [CVM_SCHED_ATTEST] = "attest",
        [CVM_SCHED_PREWARM] = "prewarm",
        [CVM_SCHED_RELEASE] = "release",
};

const char *cvm_sched_class_to_string(cvm_sched_class cls) {
        return (unsigned)cls < CVM_SCHED_CLASS_COUNT ? class_names[cls] : "unknown";
}

void cvm_sched_config_default(cvm_sched_config *c) {
        *c = (cvm_sched_config){
                .enabled = true,
                .window = CVM_SCHED_WINDOW_DEFAULT,
                .aging_ms = CVM_SCHED_AGING_MS_DEFAULT,
                .asid_reserve = CVM_SCHED_ASID_RESERVE_DEFAULT,
                .max_queue = CVM_SCHED_QUEUE_DEFAULT,
        };
}

int cvm_sched_config_parse(json_t *psp, const char *path, cvm_sched_config *c, cvm_error *err) {
        if (!psp)
                return 0;
        cvm_sched_config p = *c;
        const char *schedule = NULL;
        int64_t window = p.window, aging = p.aging_ms, reserve = p.asid_reserve,
                max_queue = p.max_queue;
        int r;
        if ((r = cvm_json_get_string(psp, path, "schedule", false, &schedule, err)) < 0 ||
            (r = cvm_json_get_int(psp, path, "window", false, 1, CVM_SCHED_WINDOW_MAX, &window,
                                  err)) < 0 ||
            (r = cvm_json_get_int(psp, path, "aging_ms", false, 1, CVM_SCHED_AGING_MS_MAX, &aging,
                                  err)) < 0 ||
            (r = cvm_json_get_int(psp, path, "asid_reserve", false, 0, CVM_SCHED_ASID_RESERVE_MAX,
                                  &reserve, err)) < 0 ||
            (r = cvm_json_get_int(psp, path, "max_queue", false, 1, CVM_SCHED_QUEUE_MAX, &max_queue,
                                  err)) < 0)
                return r;
        if (schedule) {
                if (strcmp(schedule, "cvmd") == 0) {
                        p.enabled = true;
                } else if (strcmp(schedule, "none") == 0) {
                        p.enabled = false;
                } else {
                        char name[256];
                        return cvm_error_set(
                                err, -EINVAL, "field '%s' must be \"cvmd\" or \"none\", not %s",
                                cvm_json_field_name(name, sizeof(name), path, "schedule"),
                                CVM_QUOTE(schedule));
                }
        }
        p.window = (uint32_t)window;
        p.aging_ms = (uint32_t)aging;
        p.asid_reserve = (uint32_t)reserve;
        p.max_queue = (uint32_t)max_queue;
        *c = p;
        return 0;
}

static void on_timer(cvm_timer *timer, void *userdata);

int cvm_sched_new(cvm_clock *clock, const cvm_sched_config *cfg, cvm_sched_asids_fn asids,
                  void *asids_ud, cvm_sched **ret, cvm_error *err) {
        if (cfg->window < 1 || cfg->window > CVM_SCHED_WINDOW_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP scheduler window must be between 1 and %d, not %u",
                                     CVM_SCHED_WINDOW_MAX, cfg->window);
        if (cfg->aging_ms < 1 || cfg->aging_ms > CVM_SCHED_AGING_MS_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP scheduler aging_ms must be between 1 and %d, not %u",
                                     CVM_SCHED_AGING_MS_MAX, cfg->aging_ms);
        if (cfg->asid_reserve > CVM_SCHED_ASID_RESERVE_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP scheduler asid_reserve must be at most %d, not %u",
                                     CVM_SCHED_ASID_RESERVE_MAX, cfg->asid_reserve);
        if (cfg->max_queue < 1 || cfg->max_queue > CVM_SCHED_QUEUE_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP scheduler queue limit must be between 1 and %d, not %u",
                                     CVM_SCHED_QUEUE_MAX, cfg->max_queue);
        _cleanup_free_ cvm_sched *s = calloc(1, sizeof(*s));
        if (!s)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        s->clock = clock;
        s->cfg = *cfg;
        s->asids = asids;
        s->asids_ud = asids_ud;
        s->next_seq = 1;
        s->factor = 1.0;
        int r = cvm_timer_new(clock, on_timer, s, &s->timer, err);
        if (r < 0)
                return r;
        *ret = CVM_TAKE_PTR(s);
        return 0;
}

static void free_list(job_list *l) {
        while (l->head) {
                cvm_sched_job *next = l->head->next;
                free(l->head);
                l->head = next;
        }
}

void cvm_sched_free(cvm_sched *s) {
        if (!s)
                return;
        cvm_timer_free(s->timer);
        free_list(&s->queued);
        free_list(&s->running);
        free(s);
}

static void list_append(job_list *l, cvm_sched_job *j) {
        CVM_QUEUE_APPEND(l->head, l->tail, j);
        l->n++;
}

static void list_remove(job_list *l, cvm_sched_job *j) {
        CVM_QUEUE_REMOVE(l->head, l->tail, j);
        j->prev = j->next = NULL;
        l->n--;
}

/* Arms the timer for due unless it already fires by then. */
static void arm_at(cvm_sched *s, uint64_t due) {
        if (cvm_timer_active(s->timer) && s->timer_due <= due)
                return;
        s->timer_due = due;
        cvm_timer_start_at(s->timer, due);
}

/* Schedules a dispatch pass for the next clock turn; starting jobs there
 * rather than here means no caller is ever re-entered. */
static void kick(cvm_sched *s) {
        arm_at(s, cvm_clock_now(s->clock));
}

static uint64_t corrected_ns(const cvm_sched *s, const cvm_sched_job *j) {
        if (!j->launch)
                return j->expected_ns;
        return (uint64_t)((double)j->expected_ns * s->factor + 0.5);
}

/* The PSP time a running job still needs: its corrected cost less the time
 * since it started (exact with a window of 1, optimistic above). */
static uint64_t remaining_ns(const cvm_sched *s, const cvm_sched_job *j, uint64_t now) {
        uint64_t cost = corrected_ns(s, j), elapsed = now - j->start_ns;
        return cost > elapsed ? cost - elapsed : 0;
}

static bool asid_pressure(cvm_sched *s) {
        return s->asids && s->asids(s->asids_ud) <= s->cfg.asid_reserve;
}

static uint64_t aging_ns(const cvm_sched *s) {
        return (uint64_t)s->cfg.aging_ms * CVM_NSEC_PER_MSEC;
}

static void rank_job(cvm_sched *s, cvm_sched_job *j, uint64_t now, bool pressure) {
        if (j->cls == CVM_SCHED_RELEASE && pressure) {
                j->tier = TIER_PRESSURE;
                j->key = j->submit_ns;
        } else if (now - j->submit_ns >= aging_ns(s)) {
                j->tier = TIER_AGED;
                j->key = j->submit_ns;
        } else {
                j->tier = TIER_CLASS + (int)j->cls;
                j->key = corrected_ns(s, j);
        }
}

static int rank_cmp(const cvm_sched_job *a, const cvm_sched_job *b) {
        if (a->tier != b->tier)
                return a->tier < b->tier ? -1 : 1;
        if (a->key != b->key)
                return a->key < b->key ? -1 : 1;
        return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int rank_qsort_cmp(const void *a, const void *b) {
        return rank_cmp(*(cvm_sched_job *const *)a, *(cvm_sched_job *const *)b);
}

/* A release neither under pressure nor aged waits for an idle PSP. */
static bool deferred(const cvm_sched_job *j) {
        return j->tier == TIER_CLASS + CVM_SCHED_RELEASE;
}

/* The best queued job submitted before seq_limit if it may start now, else
 * NULL. A deferred release ranks last, so when it is the best, no launch or
 * attestation waits and it needs only an idle PSP. */
static cvm_sched_job *pick(cvm_sched *s, uint64_t now, uint64_t seq_limit) {
        bool pressure = asid_pressure(s);
        cvm_sched_job *best = NULL;
        for (cvm_sched_job *j = s->queued.head; j && j->seq < seq_limit; j = j->next) {
                rank_job(s, j, now, pressure);
                if (!best || rank_cmp(j, best) < 0)
                        best = j;
        }
        if (best && deferred(best) && s->running.n > 0)
                return NULL;
        return best;
}

static void start_job(cvm_sched *s, cvm_sched_job *j, uint64_t now) {
        list_remove(&s->queued, j);
        s->queued_by[j->cls]--;
        j->state = JOB_RUNNING;
        j->start_ns = now;
        list_append(&s->running, j);
        s->running_by[j->cls]++;
        s->started++;
        /* The callback may finish, cancel or submit jobs: j is not used after. */
        j->start(j, j->userdata);
}

/* A deferred release becomes eligible when it ages even if nothing else
 * happens, so wake up then. */
static void arm_for_aging(cvm_sched *s) {
        if (s->running.n >= s->cfg.window)
                return;
        uint64_t due = UINT64_MAX;
        for (cvm_sched_job *j = s->queued.head; j; j = j->next)
                if (j->cls == CVM_SCHED_RELEASE && j->submit_ns + aging_ns(s) < due)
                        due = j->submit_ns + aging_ns(s);
        if (due != UINT64_MAX)
                arm_at(s, due);
}

static void dispatch(cvm_sched *s) {
        uint64_t now = cvm_clock_now(s->clock);
        /* Jobs submitted by start callbacks wait for the next pass, so a
         * callback that always submits cannot keep this loop going. */
        uint64_t seq_limit = s->next_seq;
        if (!s->cfg.enabled) {
                while (s->queued.head && s->queued.head->seq < seq_limit)
                        start_job(s, s->queued.head, now);
                return;
        }
        while (s->running.n < s->cfg.window) {
                cvm_sched_job *j = pick(s, now, seq_limit);
                if (!j)
                        break;
                start_job(s, j, now);
        }
        arm_for_aging(s);
}

static void on_timer(cvm_timer *timer, void *userdata) {
        (void)timer;
        dispatch(userdata);
}

static int copy_owner(char dst[static CVM_SCHED_OWNER_MAX], const char *owner, cvm_error *err) {
        if (!owner)
                owner = "";
        size_t n = strlen(owner);
        if (n >= CVM_SCHED_OWNER_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP scheduler owner label %s is longer than %d bytes",
                                     CVM_QUOTE(owner), CVM_SCHED_OWNER_MAX - 1);
        memcpy(dst, owner, n + 1);
        return 0;
}

int cvm_sched_submit(cvm_sched *s, cvm_sched_class cls, uint64_t expected_ns, const char *owner,
                     cvm_sched_start_cb start, void *userdata, cvm_sched_job **ret,
                     cvm_error *err) {
        if ((unsigned)cls >= CVM_SCHED_CLASS_COUNT)
                return cvm_error_set(err, -EINVAL, "unknown PSP scheduler class %d", (int)cls);
        const char *name = class_names[cls];
        if (!start)
                return cvm_error_set(err, -EINVAL, "%s job %s has no start callback", name,
                                     CVM_QUOTE(owner));
        if (expected_ns > CVM_SCHED_EXPECTED_MAX_NS)
                return cvm_error_set(
                        err, -EINVAL,
                        "%s job %s: expected PSP time of %llu ms is over the limit "
                        "of %llu ms",
                        name, CVM_QUOTE(owner),
                        (unsigned long long)(expected_ns / CVM_NSEC_PER_MSEC),
                        (unsigned long long)(CVM_SCHED_EXPECTED_MAX_NS / CVM_NSEC_PER_MSEC));
        if (s->queued.n >= s->cfg.max_queue) {
                s->rejected++;
                return cvm_error_set(err, -EAGAIN,
                                     "%s job %s: PSP scheduler queue is full (%u jobs)", name,
                                     CVM_QUOTE(owner), s->cfg.max_queue);
        }
        _cleanup_free_ cvm_sched_job *j = calloc(1, sizeof(*j));
        if (!j)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r = copy_owner(j->owner, owner, err);
        if (r < 0)
                return r;
        j->s = s;
        j->seq = s->next_seq++;
        j->cls = cls;
        j->launch = cls == CVM_SCHED_DEMAND || cls == CVM_SCHED_PREWARM;
        j->state = JOB_QUEUED;
        j->expected_ns = expected_ns;
        j->submit_ns = cvm_clock_now(s->clock);
        j->start = start;
        j->userdata = userdata;
        cvm_sched_job *queued = CVM_TAKE_PTR(j);
        list_append(&s->queued, queued);
        s->queued_by[cls]++;
        kick(s);
        if (ret)
                *ret = queued;
        return 0;
}

/* Unlinks and frees a job; a freed slot is refilled on the next turn. */
static void job_remove(cvm_sched_job *j) {
        cvm_sched *s = j->s;
        if (j->state == JOB_RUNNING) {
                list_remove(&s->running, j);
                s->running_by[j->cls]--;
                kick(s);
        } else {
                list_remove(&s->queued, j);
                s->queued_by[j->cls]--;
        }
        free(j);
}

void cvm_sched_done(cvm_sched_job *j, uint64_t actual_ns) {
        if (!j)
                return;
        cvm_sched *s = j->s;
        if (j->state != JOB_RUNNING) {
                /* Done before it started: the owner gave up on it. */
                s->cancelled++;
                job_remove(j);
                return;
        }
        if (j->launch && actual_ns > 0 && j->expected_ns > 0) {
                double sample = (double)actual_ns / (double)j->expected_ns;
                if (sample < SAMPLE_MIN)
                        sample = SAMPLE_MIN;
                if (sample > SAMPLE_MAX)
                        sample = SAMPLE_MAX;
                s->factor += EWMA_ALPHA * (sample - s->factor);
                s->samples++;
        }
        s->completed++;
        job_remove(j);
}

void cvm_sched_cancel(cvm_sched_job *j) {
        if (!j)
                return;
        j->s->cancelled++;
        job_remove(j);
}

void cvm_sched_promote(cvm_sched_job *j, cvm_sched_class cls) {
        if (!j || (unsigned)cls >= CVM_SCHED_CLASS_COUNT || cls >= j->cls)
                return;
        cvm_sched *s = j->s;
        size_t *by = j->state == JOB_RUNNING ? s->running_by : s->queued_by;
        by[j->cls]--;
        by[cls]++;
        j->cls = cls;
        /* A promoted release may no longer be deferred. */
        if (j->state == JOB_QUEUED)
                kick(s);
}

/* Sorts order[0..n) (queued jobs, possibly with a hypothetical one) into the
 * order they would be served now and predicts each start into pred[]. The
 * PSP work ahead of a job is the running jobs' remaining time plus the costs
 * of the jobs before it; divided by the window, which is exact for a window
 * of 1 and a rough fair-share estimate above. */
static void forecast(cvm_sched *s, uint64_t now, cvm_sched_job **order, size_t n, uint64_t *pred) {
        bool pressure = asid_pressure(s);
        for (size_t i = 0; i < n; i++)
                rank_job(s, order[i], now, pressure);
        qsort(order, n, sizeof(*order), rank_qsort_cmp);
        uint64_t work = 0;
        for (const cvm_sched_job *j = s->running.head; j; j = j->next)
                work += remaining_ns(s, j, now);
        size_t running = s->running.n;
        bool blocked = false;
        for (size_t i = 0; i < n; i++) {
                /* The dispatcher's rule: free slots go in rank order until the
                 * best job may not start. */
                if (!blocked && running < s->cfg.window && (!deferred(order[i]) || running == 0)) {
                        pred[i] = now;
                        running++;
                } else {
                        blocked = true;
                        pred[i] = now + work / s->cfg.window;
                }
                work += corrected_ns(s, order[i]);
        }
}

uint64_t cvm_sched_predict_start(cvm_sched *s, cvm_sched_class cls, uint64_t expected_ns) {
        uint64_t now = cvm_clock_now(s->clock);
        if ((unsigned)cls >= CVM_SCHED_CLASS_COUNT)
                return UINT64_MAX;
        if (!s->cfg.enabled)
                return now;
        cvm_sched_job probe = {
                .s = s,
                .seq = s->next_seq,
                .cls = cls,
                .launch = cls == CVM_SCHED_DEMAND || cls == CVM_SCHED_PREWARM,
                .expected_ns = expected_ns > CVM_SCHED_EXPECTED_MAX_NS ? CVM_SCHED_EXPECTED_MAX_NS
                                                                       : expected_ns,
                .submit_ns = now,
        };
        size_t n = s->queued.n + 1;
        _cleanup_free_ cvm_sched_job **order = calloc(n, sizeof(*order));
        _cleanup_free_ uint64_t *pred = calloc(n, sizeof(*pred));
        if (!order || !pred) {
                /* Without memory, assume every queued job goes first. */
                uint64_t work = 0;
                for (const cvm_sched_job *j = s->running.head; j; j = j->next)
                        work += remaining_ns(s, j, now);
                for (const cvm_sched_job *j = s->queued.head; j; j = j->next)
                        work += corrected_ns(s, j);
                return now + work / s->cfg.window;
        }
        size_t i = 0;
        for (cvm_sched_job *j = s->queued.head; j; j = j->next)
                order[i++] = j;
        order[i] = &probe;
        forecast(s, now, order, n, pred);
        for (i = 0; i < n; i++)
                if (order[i] == &probe)
                        return pred[i];
        return now; /* Not reached: the probe is in the order. */
}

static double ms(uint64_t ns) {
        return (double)(ns / CVM_NSEC_PER_USEC) / 1e3;
}

static json_t *job_json(cvm_sched *s, const cvm_sched_job *j, uint64_t now, uint64_t pred) {
        bool running = j->state == JOB_RUNNING;
        json_t *o = json_pack("{s:s, s:s, s:f, s:b, s:f}", "class", class_names[j->cls], "owner",
                              j->owner, "expected_ms", ms(corrected_ns(s, j)), "running", running,
                              "waiting_ms", ms((running ? j->start_ns : now) - j->submit_ns));
        if (!o)
                return NULL;
        int r;
        if (running)
                r = json_object_set_new(o, "remaining_ms", json_real(ms(remaining_ns(s, j, now))));
        else if ((r = json_object_set_new(o, "predicted_start_in_ms", json_real(ms(pred - now)))) ==
                 0)
                r = json_object_set_new(o, "aged", json_boolean(j->tier == TIER_AGED));
        if (r < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

json_t *cvm_sched_to_json(cvm_sched *s) {
        uint64_t now = cvm_clock_now(s->clock);
        size_t n = s->queued.n;
        _cleanup_free_ cvm_sched_job **order = calloc(n ? n : 1, sizeof(*order));
        _cleanup_free_ uint64_t *pred = calloc(n ? n : 1, sizeof(*pred));
        if (!order || !pred)
                return NULL;
        size_t i = 0;
        for (cvm_sched_job *j = s->queued.head; j; j = j->next)
                order[i++] = j;
        forecast(s, now, order, n, pred);

        json_auto_t *jobs = json_array();
        json_auto_t *classes = json_object();
        if (!jobs || !classes)
                return NULL;
        size_t listed = 0;
        for (const cvm_sched_job *j = s->running.head; j && listed < CVM_SCHED_LIST_MAX;
             j = j->next, listed++)
                if (json_array_append_new(jobs, job_json(s, j, now, 0)) < 0)
                        return NULL;
        for (i = 0; i < n && listed < CVM_SCHED_LIST_MAX; i++, listed++)
                if (json_array_append_new(jobs, job_json(s, order[i], now, pred[i])) < 0)
                        return NULL;
        for (int c = 0; c < CVM_SCHED_CLASS_COUNT; c++)
                if (json_object_set_new(classes, class_names[c],
                                        json_pack("{s:I, s:I}", "queued",
                                                  (json_int_t)s->queued_by[c], "running",
                                                  (json_int_t)s->running_by[c])) < 0)
                        return NULL;
        json_t *asids = s->asids ? json_integer(s->asids(s->asids_ud)) : json_null();
        return json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:I, s:o, s:b, s:I, s:I, s:O, s:I, s:I, "
                         "s:I, s:I, s:O, s:I}",
                         "schedule", s->cfg.enabled ? "cvmd" : "none", "window", (int)s->cfg.window,
                         "aging_ms", (int)s->cfg.aging_ms, "asid_reserve", (int)s->cfg.asid_reserve,
                         "max_queue", (int)s->cfg.max_queue, "correction", s->factor,
                         "correction_samples", (json_int_t)s->samples, "asids_available", asids,
                         "asid_pressure", asid_pressure(s), "queued", (json_int_t)s->queued.n,
                         "running", (json_int_t)s->running.n, "classes", classes, "started",
                         (json_int_t)s->started, "completed", (json_int_t)s->completed, "cancelled",
                         (json_int_t)s->cancelled, "rejected", (json_int_t)s->rejected, "jobs",
                         jobs, "jobs_omitted", (json_int_t)(s->queued.n + s->running.n - listed));
}
