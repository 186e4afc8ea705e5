/* The real clock: uv_hrtime for now, a uv_timer_t per timer. */
#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "clock_internal.h"

typedef struct uv_clock {
        cvm_clock base;
        uv_loop_t *loop;
} uv_clock;

static uint64_t uvc_now(cvm_clock *clock) {
        (void)clock;
        return uv_hrtime();
}

static void uvc_fire(uv_timer_t *handle) {
        cvm_timer *t = handle->data;
        t->armed = false;
        t->cb(t, t->userdata);
}

static int uvc_timer_init(cvm_timer *timer, cvm_error *err) {
        uv_clock *c = (uv_clock *)timer->clock;
        uv_timer_t *h = calloc(1, sizeof(*h));
        if (!h)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r = uv_timer_init(c->loop, h);
        if (r < 0) {
                free(h);
                return cvm_error_set(err, r, "uv_timer_init: %s", uv_strerror(r));
        }
        h->data = timer;
        timer->impl = h;
        return 0;
}

static void uvc_timer_arm(cvm_timer *timer, uint64_t due_ns) {
        uint64_t now = uv_hrtime();
        uint64_t delay_ns = due_ns > now ? due_ns - now : 0;
        /* Round up so a timer never fires before its due time. */
        uint64_t delay_ms = (delay_ns + CVM_NSEC_PER_MSEC - 1) / CVM_NSEC_PER_MSEC;
        uv_update_time(((uv_clock *)timer->clock)->loop);
        uv_timer_start(timer->impl, uvc_fire, delay_ms, 0);
}

static void uvc_timer_disarm(cvm_timer *timer) {
        uv_timer_stop(timer->impl);
}

static void uvc_closed(uv_handle_t *handle) {
        free(handle);
}

static void uvc_timer_release(cvm_timer *timer) {
        uv_close((uv_handle_t *)timer->impl, uvc_closed);
        free(timer);
}

static const cvm_clock_ops uv_ops = {
        .now = uvc_now,
        .timer_init = uvc_timer_init,
        .timer_arm = uvc_timer_arm,
        .timer_disarm = uvc_timer_disarm,
        .timer_release = uvc_timer_release,
};

int cvm_clock_uv_new(uv_loop_t *loop, cvm_clock **ret, cvm_error *err) {
        uv_clock *c = calloc(1, sizeof(*c));
        if (!c)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        c->base.ops = &uv_ops;
        c->loop = loop;
        *ret = &c->base;
        return 0;
}

void cvm_clock_uv_free(cvm_clock *clock) {
        free(clock);
}
