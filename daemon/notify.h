/* The service manager protocol (sd_notify): READY, STATUS, STOPPING and the
 * watchdog. All calls are no-ops when NOTIFY_SOCKET is unset. */
#pragma once

#include <uv.h>

typedef struct cvm_notify {
        uv_timer_t watchdog;
        bool watchdog_on;
} cvm_notify;

/* Starts the watchdog keep-alive if systemd asked for one. */
void cvm_notify_init(cvm_notify *n, uv_loop_t *loop);
void cvm_notify_ready(const char *status);
void cvm_notify_status(const char *status);
void cvm_notify_stopping(const char *status);
/* Stops the watchdog timer; its handle closes on the loop. */
void cvm_notify_done(cvm_notify *n);
