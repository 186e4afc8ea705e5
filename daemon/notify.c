#include <stdbool.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

static void on_watchdog(uv_timer_t *t) {
        (void)t;
        sd_notify(0, "WATCHDOG=1");
}

void cvm_notify_init(cvm_notify *n, uv_loop_t *loop) {
        uint64_t usec = 0;
        uv_timer_init(loop, &n->watchdog);
        n->watchdog_on = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
        if (n->watchdog_on) {
                /* Ping at half the interval, as sd_watchdog_enabled(3) advises. */
                uint64_t ms = usec / 2000;
                uv_timer_start(&n->watchdog, on_watchdog, ms ? ms : 1, ms ? ms : 1);
        }
}

void cvm_notify_ready(const char *status) {
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void cvm_notify_status(const char *status) {
        sd_notifyf(0, "STATUS=%s", status);
}

void cvm_notify_stopping(const char *status) {
        sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

void cvm_notify_done(cvm_notify *n) {
        uv_timer_stop(&n->watchdog);
        uv_close((uv_handle_t *)&n->watchdog, NULL);
}
