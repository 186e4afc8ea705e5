/* The clock-and-timer interface of the deciding core (pools, pool policies,
 * the PSP scheduler, the simulated PSP). The core sees time only through it,
 * so the same code runs on the daemon's libuv loop (clock_uv.c) and on a
 * virtual clock in unit tests and trace replays (clock_virtual.c).
 *
 * Times are monotonic nanoseconds. Timers are one-shot. On the real loop a
 * timer may fire up to about a millisecond late (libuv's resolution), so code
 * computes due times from its own model and, when woken, handles everything
 * due at cvm_clock_now() rather than assuming it woke exactly on time. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define CVM_NSEC_PER_USEC UINT64_C(1000)
#define CVM_NSEC_PER_MSEC UINT64_C(1000000)
#define CVM_NSEC_PER_SEC UINT64_C(1000000000)

typedef struct cvm_clock cvm_clock;
typedef struct cvm_timer cvm_timer;
typedef void (*cvm_timer_cb)(cvm_timer *timer, void *userdata);

uint64_t cvm_clock_now(cvm_clock *clock);

/* Creates a stopped timer. The callback runs on the clock's thread. */
int cvm_timer_new(cvm_clock *clock, cvm_timer_cb cb, void *userdata, cvm_timer **ret,
                  cvm_error *err);
/* Arms (or re-arms) the timer to fire delay_ns from now. */
void cvm_timer_start(cvm_timer *timer, uint64_t delay_ns);
/* Arms the timer to fire at an absolute time (now if already past). */
void cvm_timer_start_at(cvm_timer *timer, uint64_t due_ns);
void cvm_timer_stop(cvm_timer *timer);
bool cvm_timer_active(const cvm_timer *timer);
/* Stops and frees; NULL-safe. The callback never runs after this returns. */
void cvm_timer_free(cvm_timer *timer);

/* The real clock, driven by a libuv loop (daemon only). */
struct uv_loop_s;
int cvm_clock_uv_new(struct uv_loop_s *loop, cvm_clock **ret, cvm_error *err);
void cvm_clock_uv_free(cvm_clock *clock);

/* The virtual clock: time stands still until advanced. Timers due at the
 * same instant fire in the order they were armed, so runs are deterministic. */
int cvm_clock_virtual_new(uint64_t start_ns, cvm_clock **ret, cvm_error *err);
void cvm_clock_virtual_free(cvm_clock *clock);
/* Fires, in due order, every timer due at or before now + delta_ns (timers
 * armed by callbacks included), then sets now to now + delta_ns. */
void cvm_clock_virtual_advance(cvm_clock *clock, uint64_t delta_ns);
/* Fires timers in due order until none is armed or max_fired were fired;
 * returns how many fired. Time jumps to each timer's due time. */
uint64_t cvm_clock_virtual_run(cvm_clock *clock, uint64_t max_fired);
/* The due time of the earliest armed timer, or UINT64_MAX. */
uint64_t cvm_clock_virtual_next_due(cvm_clock *clock);
