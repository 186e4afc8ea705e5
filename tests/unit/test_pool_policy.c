/* Pool policies: the fixed keep-alive, the hybrid histogram's windows,
 * fallbacks, decay, overlapping invocations, parameters and kind names.
 * Times are passed explicitly; no clock is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "clock.h"
#include "pool_policy.h"

#define SEC CVM_NSEC_PER_SEC
#define MIN (60 * SEC)

/* A function driven by a sequence of invocations, each starting the given
 * idle time after the previous one ended and running for dur_ns. */
typedef struct driver {
        cvm_policy *p;
        uint64_t now;
} driver;

static void invoke_after(driver *d, uint64_t idle_ns, uint64_t dur_ns) {
        d->now += idle_ns;
        cvm_policy_invocation_started(d->p, d->now);
        d->now += dur_ns;
        cvm_policy_invocation_ended(d->p, d->now);
}

static cvm_policy *new_policy(cvm_policy_kind kind) {
        cvm_policy_params params;
        cvm_policy_params_default(&params);
        params.kind = kind;
        cvm_policy *p = NULL;
        assert_int_equal(cvm_policy_new(&params, &p, NULL), 0);
        return p;
}

static void assert_decision(const cvm_policy *p, uint64_t prewarm_s, uint64_t keep_s, bool hist) {
        cvm_policy_decision d;
        cvm_policy_decide(p, &d);
        assert_int_equal(d.prewarm_ns, prewarm_s * SEC);
        assert_int_equal(d.keep_alive_ns, keep_s * SEC);
        assert_int_equal(d.from_histogram, hist);
}

/* n invocations whose idle times are exactly idle_ns (the first records none). */
static void periodic(driver *d, int n, uint64_t idle_ns) {
        for (int i = 0; i < n; i++)
                invoke_after(d, idle_ns, 2 * SEC);
}

static void test_defaults_and_fixed(void **state) {
        (void)state;
        cvm_policy_params params;
        cvm_policy_params_default(&params);
        assert_int_equal(params.kind, CVM_POLICY_FIXED);
        assert_int_equal(params.keep_alive_s, 600);
        assert_int_equal(params.min_samples, 10);
        assert_true(params.cv_threshold == 2.0);
        assert_true(params.oob_fraction_max == 0.5);

        params.keep_alive_s = 90;
        cvm_policy *p;
        assert_int_equal(cvm_policy_new(&params, &p, NULL), 0);
        assert_decision(p, 0, 90, false);
        /* A perfectly periodic function changes nothing: fixed never pre-warms. */
        driver d = {.p = p, .now = 1000 * SEC};
        periodic(&d, 21, 10 * MIN);
        assert_decision(p, 0, 90, false);
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 20);
        assert_true(st.representative); /* Recorded anyway, for a later switch of kind. */
        cvm_policy_free(p);
        cvm_policy_free(NULL);
}

static void test_too_few_samples(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        assert_decision(p, 0, 600, false);
        driver d = {.p = p};
        periodic(&d, 10, 10 * MIN); /* 9 idle times, one fewer than min_samples. */
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 9);
        assert_false(st.representative);
        assert_string_equal(st.reason, "too_few_samples");
        assert_decision(p, 0, 600, false);
        periodic(&d, 1, 10 * MIN);
        assert_decision(p, 540, 186, true);
        cvm_policy_free(p);
}

static void test_periodic(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        driver d = {.p = p, .now = 5 * SEC};
        periodic(&d, 21, 10 * MIN);
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 20);
        assert_int_equal(st.recorded, 20);
        assert_int_equal(st.out_of_bounds, 0);
        assert_null(st.reason);
        /* All in one bin: cv = sqrt(240 - 1). */
        assert_true(fabs(st.cv - sqrt(239.0)) < 1e-9);
        /* Head: bin [10, 11) min, lower edge 600 s, minus 10%: 540 s. Tail:
         * upper edge 660 s, plus 10%: 726 s after the end, 186 s past the pre-warm. */
        assert_decision(p, 540, 186, true);

        json_t *j = cvm_policy_to_json(p);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "kind")), "histogram");
        assert_int_equal(json_integer_value(json_object_get(j, "samples")), 20);
        assert_int_equal(json_integer_value(json_object_get(j, "out_of_bounds")), 0);
        assert_true(json_is_true(json_object_get(j, "representative")));
        assert_true(json_is_null(json_object_get(j, "reason")));
        json_t *dec = json_object_get(j, "decision");
        assert_int_equal(json_integer_value(json_object_get(dec, "prewarm_s")), 540);
        assert_int_equal(json_integer_value(json_object_get(dec, "keep_alive_s")), 186);
        assert_true(json_is_true(json_object_get(dec, "from_histogram")));
        json_decref(j);
        cvm_policy_free(p);

        /* An idle time a second short of 10 minutes falls in bin 9: the head
         * is 9 min (486 s), the tail's end 10 min plus 10% (660 s). */
        p = new_policy(CVM_POLICY_HISTOGRAM);
        d = (driver){.p = p};
        periodic(&d, 21, 10 * MIN - SEC);
        assert_decision(p, 486, 174, true);
        cvm_policy_free(p);

        /* Idle times under a minute: no pre-warm; the histogram says 66 s, the floor 600 s. */
        p = new_policy(CVM_POLICY_HISTOGRAM);
        d = (driver){.p = p};
        periodic(&d, 21, 30 * SEC);
        /* No pre-warm: the fixed keep-alive is the floor (docs/pool-policy.md). */
        assert_decision(p, 0, 600, true);
        cvm_policy_free(p);
}

static void test_uniform_low_cv(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        driver d = {.p = p};
        invoke_after(&d, 0, SEC);
        for (uint64_t m = 1; m <= 60; m++)
                invoke_after(&d, m * MIN + 30 * SEC, SEC);
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 60);
        /* 60 equal bins of 240: cv = sqrt(240 / 60 - 1) = sqrt(3). */
        assert_true(fabs(st.cv - sqrt(3.0)) < 1e-9);
        assert_string_equal(st.reason, "low_cv");
        assert_decision(p, 0, 600, false);

        /* Below the threshold the same histogram is used: head rank
         * ceil(0.05 * 60) = 3 is bin 3 (162 s), tail rank 60 is bin 60,
         * whose upper edge plus 10% is 4026 s. */
        cvm_policy_params params;
        cvm_policy_get_params(p, &params);
        params.cv_threshold = 1.5;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 162, 4026 - 162, true);
        cvm_policy_free(p);
}

static void test_out_of_bounds(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        driver d = {.p = p};
        periodic(&d, 11, 10 * MIN);
        /* 4 hours exactly is out of bounds; a nanosecond less is bin 239. */
        periodic(&d, 10, 240 * MIN);
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 20);
        assert_int_equal(st.out_of_bounds, 10);
        /* Half out of bounds is not more than 0.5: the in-bounds ITs decide. */
        assert_true(st.representative);
        assert_decision(p, 540, 186, true);

        periodic(&d, 1, 5 * 60 * MIN);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.out_of_bounds, 11);
        assert_string_equal(st.reason, "out_of_bounds");
        assert_decision(p, 0, 600, false);

        cvm_policy_params params;
        cvm_policy_get_params(p, &params);
        params.oob_fraction_max = 0.6;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 540, 186, true);

        /* Only out-of-bounds ITs: nothing to take percentiles of, whatever the fraction. */
        params.oob_fraction_max = 1.0;
        params.cv_threshold = 0.0;
        cvm_policy_free(p);
        assert_int_equal(cvm_policy_new(&params, &p, NULL), 0);
        d = (driver){.p = p};
        periodic(&d, 11, 240 * MIN);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.out_of_bounds, 10);
        assert_true(st.cv == 0.0);
        assert_string_equal(st.reason, "out_of_bounds");
        assert_decision(p, 0, 600, false);

        /* The last in-bounds bin. */
        cvm_policy_free(p);
        p = new_policy(CVM_POLICY_HISTOGRAM);
        d = (driver){.p = p};
        periodic(&d, 11, 240 * MIN - 1);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.out_of_bounds, 0);
        assert_decision(p, 239 * 54, 240 * 66 - 239 * 54, true);
        cvm_policy_free(p);
}

static void test_decay(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        driver d = {.p = p};
        invoke_after(&d, 0, SEC);
        cvm_policy_stats st;
        /* Counts halve when the total reaches 256: 255 -> 256 -> 128, then
         * 44 more make 172. The total never reaches 256 between events. */
        for (int i = 0; i < 300; i++) {
                invoke_after(&d, 10 * MIN, SEC);
                cvm_policy_get_stats(p, &st);
                assert_true(st.samples < CVM_POLICY_DECAY_TOTAL);
        }
        assert_int_equal(st.samples, 172);
        assert_int_equal(st.recorded, 300);
        assert_int_equal(st.decays, 1);
        assert_decision(p, 540, 186, true);

        /* The period grows to 30 minutes. The tail follows at once: after
         * two ITs they are more than 1% (rank ceil(0.99 * 174) = 173 > 172). */
        periodic(&d, 1, 30 * MIN);
        assert_decision(p, 540, 186, true);
        periodic(&d, 1, 30 * MIN);
        assert_decision(p, 540, 31 * 66 - 540, true);
        /* The head waits until decay brings the old bin under 5%: the 543rd
         * new IT leaves 10 old of 201 (rank ceil(0.05 * 201) = 11). */
        periodic(&d, 540, 30 * MIN);
        assert_decision(p, 540, 31 * 66 - 540, true);
        periodic(&d, 1, 30 * MIN);
        assert_decision(p, 1620, 31 * 66 - 1620, true);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.samples, 201);
        assert_int_equal(st.decays, 5);
        cvm_policy_free(p);

        /* The other way, shorter ITs take the head over quickly: after 300
         * 30-minute ITs (172 left), the 10th 10-minute IT reaches rank
         * ceil(0.05 * 182) = 10. */
        p = new_policy(CVM_POLICY_HISTOGRAM);
        d = (driver){.p = p};
        periodic(&d, 301, 30 * MIN);
        assert_decision(p, 1620, 31 * 66 - 1620, true);
        periodic(&d, 9, 10 * MIN);
        assert_decision(p, 1620, 31 * 66 - 1620, true);
        periodic(&d, 1, 10 * MIN);
        assert_decision(p, 540, 31 * 66 - 540, true);
        cvm_policy_free(p);
}

static void test_overlapping(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_HISTOGRAM);
        /* An end without a start is ignored and makes no idle period. */
        cvm_policy_invocation_ended(p, 10 * SEC);
        cvm_policy_invocation_started(p, 100 * SEC);
        cvm_policy_stats st;
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.recorded, 0);
        assert_int_equal(st.running, 1);

        /* B starts before A ends: no IT; the idle period starts when B ends. */
        cvm_policy_invocation_started(p, 130 * SEC);
        cvm_policy_invocation_ended(p, 140 * SEC);
        cvm_policy_invocation_ended(p, 200 * SEC);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.recorded, 0);
        assert_int_equal(st.overlapped, 1);
        assert_int_equal(st.running, 0);
        cvm_policy_invocation_started(p, 200 * SEC + 5 * MIN);
        cvm_policy_invocation_ended(p, 201 * SEC + 5 * MIN);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.recorded, 1);

        /* Ten more 5-minute ITs: the one above counted from B's end, so all in bin 5. */
        driver d = {.p = p, .now = 201 * SEC + 5 * MIN};
        periodic(&d, 10, 5 * MIN);
        assert_decision(p, 270, 6 * 66 - 270, true);

        /* A time before the idle start records an IT of zero, not a wrapped one. */
        cvm_policy_invocation_started(p, d.now - SEC);
        cvm_policy_invocation_ended(p, d.now);
        cvm_policy_get_stats(p, &st);
        assert_int_equal(st.recorded, 12);
        assert_int_equal(st.out_of_bounds, 0);
        cvm_policy_free(p);
}

static void test_params_change_keeps_histogram(void **state) {
        (void)state;
        cvm_policy *p = new_policy(CVM_POLICY_FIXED);
        driver d = {.p = p};
        periodic(&d, 21, 10 * MIN);
        assert_decision(p, 0, 600, false);

        cvm_policy_params params;
        cvm_policy_get_params(p, &params);
        params.kind = CVM_POLICY_HISTOGRAM;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 540, 186, true);

        params.min_samples = 21;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 0, 600, false);

        /* A rejected change leaves the policy as it was. */
        cvm_error err = {0};
        cvm_policy_params bad = params;
        bad.keep_alive_s = 86401;
        assert_int_equal(cvm_policy_set_params(p, &bad, &err), -EINVAL);
        assert_string_equal(err.message, "pool.keep_alive_s must be between 0 and 86400");
        cvm_policy_params now;
        cvm_policy_get_params(p, &now);
        assert_int_equal(now.keep_alive_s, 600);
        assert_int_equal(now.min_samples, 21);

        params.min_samples = 10;
        params.keep_alive_s = 0;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 540, 186, true);
        params.kind = CVM_POLICY_FIXED;
        assert_int_equal(cvm_policy_set_params(p, &params, NULL), 0);
        assert_decision(p, 0, 0, false);

        json_t *j = cvm_policy_to_json(p);
        assert_string_equal(json_string_value(json_object_get(j, "kind")), "fixed");
        assert_int_equal(json_integer_value(json_object_get(j, "keep_alive_s")), 0);
        assert_int_equal(json_integer_value(json_object_get(j, "samples")), 20);
        json_decref(j);
        cvm_policy_free(p);
}

static void test_params_check(void **state) {
        (void)state;
        cvm_policy_params ok, bad;
        cvm_policy_params_default(&ok);
        cvm_error err = {0};
        cvm_policy *p = NULL;

        bad = ok;
        bad.min_samples = 0;
        assert_int_equal(cvm_policy_new(&bad, &p, &err), -EINVAL);
        assert_string_equal(err.message, "pool.min_samples must be between 1 and 128");
        assert_null(p);
        bad.min_samples = 129;
        assert_int_equal(cvm_policy_params_check(&bad, "functions.f", &err), -EINVAL);
        assert_string_equal(err.message, "functions.f.min_samples must be between 1 and 128");
        bad = ok;
        bad.cv_threshold = NAN;
        assert_int_equal(cvm_policy_params_check(&bad, "pool", &err), -EINVAL);
        assert_string_equal(err.message, "pool.cv_threshold must be between 0 and 100");
        bad.cv_threshold = -1;
        assert_int_equal(cvm_policy_params_check(&bad, "pool", &err), -EINVAL);
        bad = ok;
        bad.oob_fraction_max = 1.5;
        assert_int_equal(cvm_policy_params_check(&bad, "pool", &err), -EINVAL);
        assert_string_equal(err.message, "pool.oob_fraction_max must be between 0 and 1");
        bad = ok;
        bad.kind = (cvm_policy_kind)7;
        assert_int_equal(cvm_policy_params_check(&bad, "pool", &err), -EINVAL);
        assert_string_equal(err.message, "pool.policy must be \"fixed\" or \"histogram\"");
        bad = ok;
        bad.keep_alive_s = 86400;
        bad.min_samples = 128;
        bad.cv_threshold = 100;
        bad.oob_fraction_max = 0;
        assert_int_equal(cvm_policy_params_check(&bad, "pool", &err), 0);
}

static void test_params_parse(void **state) {
        (void)state;
        cvm_policy_params params;
        cvm_policy_params_default(&params);
        cvm_error err = {0};
        json_t *obj = json_pack("{s:s, s:i, s:i, s:f, s:i, s:i}", "policy", "histogram",
                                "keep_alive_s", 120, "min_samples", 20, "cv_threshold", 1.5,
                                "oob_fraction_max", 1, "min_warm", 2);
        assert_int_equal(cvm_policy_params_parse(obj, "pool", &params, &err), 0);
        assert_int_equal(params.kind, CVM_POLICY_HISTOGRAM);
        assert_int_equal(params.keep_alive_s, 120);
        assert_int_equal(params.min_samples, 20);
        assert_true(params.cv_threshold == 1.5);
        assert_true(params.oob_fraction_max == 1.0);
        json_decref(obj);

        cvm_policy_params before = params;
        obj = json_pack("{s:s, s:i}", "policy", "lru", "keep_alive_s", 5);
        assert_int_equal(cvm_policy_params_parse(obj, "pool", &params, &err), -EINVAL);
        assert_string_equal(err.message, "field 'pool.policy' must be \"fixed\" or \"histogram\"");
        json_decref(obj);
        obj = json_pack("{s:i}", "keep_alive_s", 86401);
        assert_int_equal(cvm_policy_params_parse(obj, "pool", &params, &err), -EINVAL);
        assert_string_equal(err.message, "field 'pool.keep_alive_s' must be between 0 and 86400");
        json_decref(obj);
        obj = json_pack("{s:i, s:s}", "keep_alive_s", 5, "cv_threshold", "2");
        assert_int_equal(cvm_policy_params_parse(obj, "pool", &params, &err), -EINVAL);
        assert_string_equal(err.message,
                            "field 'pool.cv_threshold' must be a number between 0 and 100");
        json_decref(obj);
        obj = json_pack("{s:f}", "oob_fraction_max", 1.01);
        assert_int_equal(cvm_policy_params_parse(obj, "pool", &params, &err), -EINVAL);
        json_decref(obj);
        assert_memory_equal(&params, &before, sizeof(params));
}

static void test_kind_names(void **state) {
        (void)state;
        cvm_policy_kind k = CVM_POLICY_HISTOGRAM;
        assert_int_equal(cvm_policy_kind_from_string("fixed", &k), 0);
        assert_int_equal(k, CVM_POLICY_FIXED);
        assert_int_equal(cvm_policy_kind_from_string("histogram", &k), 0);
        assert_int_equal(k, CVM_POLICY_HISTOGRAM);
        assert_int_equal(cvm_policy_kind_from_string("Fixed", &k), -EINVAL);
        assert_int_equal(cvm_policy_kind_from_string("", &k), -EINVAL);
        assert_int_equal(cvm_policy_kind_from_string("histogram ", &k), -EINVAL);
        assert_int_equal(cvm_policy_kind_from_string(NULL, &k), -EINVAL);
        assert_int_equal(k, CVM_POLICY_HISTOGRAM);
        assert_string_equal(cvm_policy_kind_to_string(CVM_POLICY_FIXED), "fixed");
        assert_string_equal(cvm_policy_kind_to_string(CVM_POLICY_HISTOGRAM), "histogram");
        assert_string_equal(cvm_policy_kind_to_string((cvm_policy_kind)42), "unknown");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_and_fixed),
                cmocka_unit_test(test_too_few_samples),
                cmocka_unit_test(test_periodic),
                cmocka_unit_test(test_uniform_low_cv),
                cmocka_unit_test(test_out_of_bounds),
                cmocka_unit_test(test_decay),
                cmocka_unit_test(test_overlapping),
                cmocka_unit_test(test_params_change_keeps_histogram),
                cmocka_unit_test(test_params_check),
                cmocka_unit_test(test_params_parse),
                cmocka_unit_test(test_kind_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
