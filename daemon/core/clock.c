#include "clock_internal.h"

#include <errno.h>
#include <stdlib.h>

uint64_t cvm_clock_now(cvm_clock *clock) {
        return clock->ops->now(clock);
}

int cvm_timer_new(cvm_clock *clock, cvm_timer_cb cb, void *userdata, cvm_timer **ret,
                  cvm_error *err) {
        cvm_timer *t = calloc(1, sizeof(*t));
        if (!t)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        t->clock = clock;
        t->cb = cb;
        t->userdata = userdata;
        int r = clock->ops->timer_init(t, err);
        if (r < 0) {
                free(t);
                return r;
        }
        *ret = t;
        return 0;
}

void cvm_timer_start_at(cvm_timer *timer, uint64_t due_ns) {
        if (timer->armed)
                timer->clock->ops->timer_disarm(timer);
        timer->armed = true;
        timer->due_ns = due_ns;
        timer->clock->ops->timer_arm(timer, due_ns);
}

void cvm_timer_start(cvm_timer *timer, uint64_t delay_ns) {
        uint64_t now = cvm_clock_now(timer->clock);
        uint64_t due = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
        cvm_timer_start_at(timer, due);
}

void cvm_timer_stop(cvm_timer *timer) {
        if (!timer || !timer->armed)
                return;
        timer->clock->ops->timer_disarm(timer);
        timer->armed = false;
}

bool cvm_timer_active(const cvm_timer *timer) {
        return timer && timer->armed;
}

void cvm_timer_free(cvm_timer *timer) {
        if (!timer)
                return;
        cvm_timer_stop(timer);
        timer->clock->ops->timer_release(timer);
}
