/* The virtual clock: due order, ties in arm order, re-arming from callbacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"

typedef struct fired_log {
        int order[16];
        uint64_t at[16];
        int n;
        cvm_clock *clock;
} fired_log;

typedef struct tagged {
        fired_log *log;
        int tag;
        cvm_timer *timer;
        int rearm; /* How many more times to re-arm, 1 ms later. */
} tagged;

static void on_fire(cvm_timer *t, void *userdata) {
        tagged *tg = userdata;
        tg->log->order[tg->log->n] = tg->tag;
        tg->log->at[tg->log->n++] = cvm_clock_now(tg->log->clock);
        if (tg->rearm-- > 0)
                cvm_timer_start(t, CVM_NSEC_PER_MSEC);
}

static void test_due_order_and_ties(void **state) {
        (void)state;
        cvm_clock *c;
        assert_int_equal(cvm_clock_virtual_new(1000, &c, NULL), 0);
        fired_log log = {.clock = c};
        tagged t[4];
        uint64_t delays[4] = {5, 1, 5, 3};
        for (int i = 0; i < 4; i++) {
                t[i] = (tagged){.log = &log, .tag = i};
                assert_int_equal(cvm_timer_new(c, on_fire, &t[i], &t[i].timer, NULL), 0);
                cvm_timer_start(t[i].timer, delays[i]);
        }
        assert_int_equal(cvm_clock_virtual_next_due(c), 1001);
        cvm_clock_virtual_advance(c, 4);
        assert_int_equal(log.n, 2);
        assert_int_equal(cvm_clock_now(c), 1004);
        cvm_clock_virtual_advance(c, 10);
        assert_int_equal(log.n, 4);
        int want[4] = {1, 3, 0, 2};
        for (int i = 0; i < 4; i++)
                assert_int_equal(log.order[i], want[i]);
        assert_int_equal(log.at[2], 1005);
        assert_int_equal(cvm_clock_now(c), 1014);
        for (int i = 0; i < 4; i++)
                cvm_timer_free(t[i].timer);
        cvm_clock_virtual_free(c);
}

static void test_stop_rearm_and_run(void **state) {
        (void)state;
        cvm_clock *c;
        assert_int_equal(cvm_clock_virtual_new(0, &c, NULL), 0);
        fired_log log = {.clock = c};
        tagged a = {.log = &log, .tag = 7, .rearm = 2}, b = {.log = &log, .tag = 8};
        assert_int_equal(cvm_timer_new(c, on_fire, &a, &a.timer, NULL), 0);
        assert_int_equal(cvm_timer_new(c, on_fire, &b, &b.timer, NULL), 0);
        cvm_timer_start(a.timer, 0);
        cvm_timer_start(b.timer, 10);
        cvm_timer_stop(b.timer);
        assert_false(cvm_timer_active(b.timer));
        assert_int_equal(cvm_clock_virtual_run(c, 100), 3);
        assert_int_equal(log.n, 3);
        assert_int_equal(log.at[2], 2 * CVM_NSEC_PER_MSEC);
        assert_int_equal(cvm_clock_virtual_next_due(c), UINT64_MAX);
        /* Freeing an armed timer removes it. */
        cvm_timer_start(b.timer, 5);
        cvm_timer_free(b.timer);
        assert_int_equal(cvm_clock_virtual_run(c, 100), 0);
        cvm_timer_free(a.timer);
        cvm_timer_free(NULL);
        cvm_clock_virtual_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_due_order_and_ties),
                cmocka_unit_test(test_stop_rearm_and_run),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
