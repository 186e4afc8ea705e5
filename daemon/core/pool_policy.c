#include "pool_policy.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

struct cvm_policy {
        cvm_policy_params params;
        /* bins[b] counts idle times in [b, b + 1) minutes; oob those of 4 h or more. */
        uint32_t bins[CVM_POLICY_BINS];
        uint32_t in_bounds, oob;
        uint32_t running;
        bool idle; /* idle_since_ns holds the end that made the function idle. */
        uint64_t idle_since_ns;
        uint64_t recorded, overlapped, decays;
};

static const char *const kind_names[] = {
        [CVM_POLICY_FIXED] = "fixed",
        [CVM_POLICY_HISTOGRAM] = "histogram",
};

void cvm_policy_params_default(cvm_policy_params *p) {
        *p = (cvm_policy_params){
                .kind = CVM_POLICY_FIXED,
                .keep_alive_s = CVM_POLICY_KEEP_ALIVE_DEFAULT_S,
                .min_samples = CVM_POLICY_MIN_SAMPLES_DEFAULT,
                .cv_threshold = CVM_POLICY_CV_THRESHOLD_DEFAULT,
                .oob_fraction_max = CVM_POLICY_OOB_FRACTION_MAX_DEFAULT,
        };
}

int cvm_policy_kind_from_string(const char *s, cvm_policy_kind *ret) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
                if (strcmp(s, kind_names[i]) == 0) {
                        *ret = (cvm_policy_kind)i;
                        return 0;
                }
        }
        return -EINVAL;
}

const char *cvm_policy_kind_to_string(cvm_policy_kind k) {
        if ((unsigned)k >= sizeof(kind_names) / sizeof(kind_names[0]))
                return "unknown";
        return kind_names[k];
}

int cvm_policy_params_check(const cvm_policy_params *p, const char *path, cvm_error *err) {
        char name[256];
        if ((unsigned)p->kind >= sizeof(kind_names) / sizeof(kind_names[0]))
                return cvm_error_set(err, -EINVAL, "%s must be \"fixed\" or \"histogram\"",
                                     cvm_json_field_name(name, sizeof(name), path, "policy"));
        if (p->keep_alive_s > CVM_POLICY_KEEP_ALIVE_MAX_S)
                return cvm_error_set(err, -EINVAL, "%s must be between 0 and %d",
                                     cvm_json_field_name(name, sizeof(name), path, "keep_alive_s"),
                                     CVM_POLICY_KEEP_ALIVE_MAX_S);
        if (p->min_samples < 1 || p->min_samples > CVM_POLICY_MIN_SAMPLES_MAX)
                return cvm_error_set(err, -EINVAL, "%s must be between 1 and %d",
                                     cvm_json_field_name(name, sizeof(name), path, "min_samples"),
                                     CVM_POLICY_MIN_SAMPLES_MAX);
        /* The negated comparisons also reject NaN. */
        if (!(p->cv_threshold >= 0.0 && p->cv_threshold <= CVM_POLICY_CV_THRESHOLD_MAX))
                return cvm_error_set(err, -EINVAL, "%s must be between 0 and %g",
                                     cvm_json_field_name(name, sizeof(name), path, "cv_threshold"),
                                     CVM_POLICY_CV_THRESHOLD_MAX);
        if (!(p->oob_fraction_max >= 0.0 && p->oob_fraction_max <= 1.0))
                return cvm_error_set(
                        err, -EINVAL, "%s must be between 0 and 1",
                        cvm_json_field_name(name, sizeof(name), path, "oob_fraction_max"));
        return 0;
}

/* A JSON number (integer or real) in [min, max]. */
static int get_number(json_t *obj, const char *path, const char *key, double min, double max,
                      double *ret, cvm_error *err) {
        json_t *v = json_object_get(obj, key);
        if (!v)
                return 0;
        double d = json_number_value(v);
        if (!json_is_number(v) || !(d >= min && d <= max)) {
                char name[256];
                return cvm_error_set(err, -EINVAL, "field '%s' must be a number between %g and %g",
                                     cvm_json_field_name(name, sizeof(name), path, key), min, max);
        }
        *ret = d;
        return 0;
}

int cvm_policy_params_parse(json_t *obj, const char *path, cvm_policy_params *p, cvm_error *err) {
        cvm_policy_params parsed = *p;
        const char *kind = NULL;
        int64_t keep_alive = parsed.keep_alive_s, min_samples = parsed.min_samples;
        int r;
        if ((r = cvm_json_get_string(obj, path, "policy", false, &kind, err)) < 0)
                return r;
        if (kind && cvm_policy_kind_from_string(kind, &parsed.kind) < 0) {
                char name[256];
                return cvm_error_set(err, -EINVAL, "field '%s' must be \"fixed\" or \"histogram\"",
                                     cvm_json_field_name(name, sizeof(name), path, "policy"));
        }
        if ((r = cvm_json_get_int(obj, path, "keep_alive_s", false, 0, CVM_POLICY_KEEP_ALIVE_MAX_S,
                                  &keep_alive, err)) < 0 ||
            (r = cvm_json_get_int(obj, path, "min_samples", false, 1, CVM_POLICY_MIN_SAMPLES_MAX,
                                  &min_samples, err)) < 0 ||
            (r = get_number(obj, path, "cv_threshold", 0.0, CVM_POLICY_CV_THRESHOLD_MAX,
                            &parsed.cv_threshold, err)) < 0 ||
            (r = get_number(obj, path, "oob_fraction_max", 0.0, 1.0, &parsed.oob_fraction_max,
                            err)) < 0)
                return r;
        parsed.keep_alive_s = (uint32_t)keep_alive;
        parsed.min_samples = (uint32_t)min_samples;
        *p = parsed;
        return 0;
}

int cvm_policy_new(const cvm_policy_params *params, cvm_policy **ret, cvm_error *err) {
        int r = cvm_policy_params_check(params, "pool", err);
        if (r < 0)
                return r;
        cvm_policy *p = calloc(1, sizeof(*p));
        if (!p)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        p->params = *params;
        *ret = p;
        return 0;
}

void cvm_policy_free(cvm_policy *p) {
        free(p);
}

int cvm_policy_set_params(cvm_policy *p, const cvm_policy_params *params, cvm_error *err) {
        int r = cvm_policy_params_check(params, "pool", err);
        if (r < 0)
                return r;
        p->params = *params;
        return 0;
}

void cvm_policy_get_params(const cvm_policy *p, cvm_policy_params *ret) {
        *ret = p->params;
}

/* Halving every count keeps the counters bounded and lets recent idle times
 * outweigh old ones, so the windows follow a function whose pattern changes.
 * Rounding down forgets bins that held a single old idle time. */
static void decay(cvm_policy *p) {
        p->in_bounds = 0;
        for (size_t b = 0; b < CVM_POLICY_BINS; b++) {
                p->bins[b] /= 2;
                p->in_bounds += p->bins[b];
        }
        p->oob /= 2;
        p->decays++;
}

static void record(cvm_policy *p, uint64_t it_ns) {
        uint64_t b = it_ns / CVM_POLICY_BIN_NS;
        if (b < CVM_POLICY_BINS) {
                p->bins[b]++;
                p->in_bounds++;
        } else {
                p->oob++;
        }
        p->recorded++;
        if (p->in_bounds + p->oob >= CVM_POLICY_DECAY_TOTAL)
                decay(p);
}

void cvm_policy_invocation_started(cvm_policy *p, uint64_t now_ns) {
        /* A monotonic clock never goes back; a caller that does gets an idle
         * time of 0 rather than a wrapped one. */
        if (p->running == 0 && p->idle)
                record(p, now_ns > p->idle_since_ns ? now_ns - p->idle_since_ns : 0);
        else if (p->running > 0)
                p->overlapped++;
        p->idle = false;
        if (p->running < UINT32_MAX)
                p->running++;
}

void cvm_policy_invocation_ended(cvm_policy *p, uint64_t now_ns) {
        if (p->running == 0)
                return;
        if (--p->running == 0) {
                p->idle = true;
                p->idle_since_ns = now_ns;
        }
}

/* The coefficient of variation (population standard deviation over mean) of
 * the bin counts: with N idle times and S the sum of squared counts over B
 * bins, sqrt(B * S - N^2) / N, computed in integers up to the square root. */
static double bins_cv(const cvm_policy *p) {
        if (p->in_bounds == 0)
                return 0.0;
        uint64_t sq = 0;
        for (size_t b = 0; b < CVM_POLICY_BINS; b++)
                sq += (uint64_t)p->bins[b] * p->bins[b];
        uint64_t n = p->in_bounds;
        return sqrt((double)(CVM_POLICY_BINS * sq - n * n)) / (double)n;
}

/* The bin of the pct-th percentile of the in-bounds idle times (nearest
 * rank): the first bin whose cumulative count reaches ceil(pct * N / 100). */
static size_t percentile_bin(const cvm_policy *p, uint32_t pct) {
        uint64_t rank = ((uint64_t)pct * p->in_bounds + 99) / 100;
        if (rank == 0)
                rank = 1;
        uint64_t cum = 0;
        for (size_t b = 0; b < CVM_POLICY_BINS; b++) {
                cum += p->bins[b];
                if (cum >= rank)
                        return b;
        }
        return CVM_POLICY_BINS - 1;
}

/* Why the histogram is not representative, or NULL when it is. */
static const char *unrepresentative(const cvm_policy *p, double cv) {
        uint32_t samples = p->in_bounds + p->oob;
        if (samples < p->params.min_samples)
                return "too_few_samples";
        if (p->in_bounds == 0 || (double)p->oob > p->params.oob_fraction_max * samples)
                return "out_of_bounds";
        if (cv < p->params.cv_threshold)
                return "low_cv";
        return NULL;
}

void cvm_policy_get_stats(const cvm_policy *p, cvm_policy_stats *ret) {
        double cv = bins_cv(p);
        const char *why = unrepresentative(p, cv);
        *ret = (cvm_policy_stats){
                .samples = p->in_bounds + p->oob,
                .out_of_bounds = p->oob,
                .recorded = p->recorded,
                .overlapped = p->overlapped,
                .decays = p->decays,
                .running = p->running,
                .cv = cv,
                .representative = !why,
                .reason = why,
        };
}

void cvm_policy_decide(const cvm_policy *p, cvm_policy_decision *ret) {
        *ret = (cvm_policy_decision){
                .keep_alive_ns = (uint64_t)p->params.keep_alive_s * CVM_NSEC_PER_SEC,
        };
        if (p->params.kind != CVM_POLICY_HISTOGRAM || unrepresentative(p, bins_cv(p)))
                return;
        /* The head's lower edge and the tail's upper edge, so both windows
         * err towards a warm VM: pre-warm earlier, keep longer. */
        uint64_t head_ns = percentile_bin(p, CVM_POLICY_HEAD_PCT) * CVM_POLICY_BIN_NS;
        uint64_t tail_ns = (percentile_bin(p, CVM_POLICY_TAIL_PCT) + 1) * CVM_POLICY_BIN_NS;
        uint64_t prewarm_ns = head_ns / 100 * (100 - CVM_POLICY_MARGIN_PCT);
        uint64_t end_ns = tail_ns / 100 * (100 + CVM_POLICY_MARGIN_PCT);
        ret->prewarm_ns = prewarm_ns;
        ret->keep_alive_ns = end_ns - prewarm_ns;
        /* Our deviation from the paper: with no pre-warm (calls come too soon to
         * unload between them) the VM stays at least the fixed keep-alive, so a
         * busy function is never worse off than under "fixed"; the histogram
         * saves memory on the functions it can unload and pre-warm. */
        if (!prewarm_ns && ret->keep_alive_ns < (uint64_t)p->params.keep_alive_s * CVM_NSEC_PER_SEC)
                ret->keep_alive_ns = (uint64_t)p->params.keep_alive_s * CVM_NSEC_PER_SEC;
        ret->from_histogram = true;
}

json_t *cvm_policy_to_json(const cvm_policy *p) {
        cvm_policy_stats st;
        cvm_policy_decision d;
        cvm_policy_get_stats(p, &st);
        cvm_policy_decide(p, &d);
        /* Windows are whole seconds by construction (minute bins, 10% margins). */
        return json_pack("{s:s, s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:b, s:s?, "
                         "s:{s:I, s:I, s:b}}",
                         "kind", cvm_policy_kind_to_string(p->params.kind), "keep_alive_s",
                         (json_int_t)p->params.keep_alive_s, "min_samples",
                         (json_int_t)p->params.min_samples, "cv_threshold", p->params.cv_threshold,
                         "oob_fraction_max", p->params.oob_fraction_max, "samples",
                         (json_int_t)st.samples, "out_of_bounds", (json_int_t)st.out_of_bounds,
                         "recorded", (json_int_t)st.recorded, "decays", (json_int_t)st.decays, "cv",
                         st.cv, "representative", st.representative, "reason", st.reason,
                         "decision", "prewarm_s", (json_int_t)(d.prewarm_ns / CVM_NSEC_PER_SEC),
                         "keep_alive_s", (json_int_t)(d.keep_alive_ns / CVM_NSEC_PER_SEC),
                         "from_histogram", d.from_histogram);
}
