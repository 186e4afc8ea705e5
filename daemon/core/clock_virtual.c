/* The virtual clock: a binary min-heap of armed timers ordered by (due, seq). */
#include <errno.h>
#include <stdlib.h>

#include "clock_internal.h"

typedef struct virtual_clock {
        cvm_clock base;
        uint64_t now;
        uint64_t next_seq;
        cvm_timer **heap;
        size_t n, cap;
} virtual_clock;

static bool timer_before(const cvm_timer *a, const cvm_timer *b) {
        return a->due_ns != b->due_ns ? a->due_ns < b->due_ns : a->seq < b->seq;
}

static void heap_swap(virtual_clock *vc, size_t i, size_t j) {
        cvm_timer *t = vc->heap[i];
        vc->heap[i] = vc->heap[j];
        vc->heap[j] = t;
        vc->heap[i]->heap_i = i;
        vc->heap[j]->heap_i = j;
}

static void heap_up(virtual_clock *vc, size_t i) {
        while (i > 0) {
                size_t p = (i - 1) / 2;
                if (!timer_before(vc->heap[i], vc->heap[p]))
                        break;
                heap_swap(vc, i, p);
                i = p;
        }
}

static void heap_down(virtual_clock *vc, size_t i) {
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                if (l < vc->n && timer_before(vc->heap[l], vc->heap[m]))
                        m = l;
                if (r < vc->n && timer_before(vc->heap[r], vc->heap[m]))
                        m = r;
                if (m == i)
                        return;
                heap_swap(vc, i, m);
                i = m;
        }
}

static uint64_t vc_now(cvm_clock *clock) {
        return ((virtual_clock *)clock)->now;
}

static int vc_timer_init(cvm_timer *timer, cvm_error *err) {
        (void)timer;
        (void)err;
        return 0;
}

static void vc_timer_arm(cvm_timer *timer, uint64_t due_ns) {
        virtual_clock *vc = (virtual_clock *)timer->clock;
        if (vc->n == vc->cap) {
                size_t cap = vc->cap ? vc->cap * 2 : 64;
                cvm_timer **h = realloc(vc->heap, cap * sizeof(*h));
                if (!h)
                        abort(); /* A test clock has no way to report this. */
                vc->heap = h;
                vc->cap = cap;
        }
        timer->due_ns = due_ns < vc->now ? vc->now : due_ns;
        timer->seq = vc->next_seq++;
        timer->heap_i = vc->n;
        vc->heap[vc->n++] = timer;
        heap_up(vc, timer->heap_i);
}

static void vc_timer_disarm(cvm_timer *timer) {
        virtual_clock *vc = (virtual_clock *)timer->clock;
        size_t i = timer->heap_i;
        vc->n--;
        if (i != vc->n) {
                vc->heap[i] = vc->heap[vc->n];
                vc->heap[i]->heap_i = i;
                heap_up(vc, i);
                heap_down(vc, vc->heap[i]->heap_i);
        }
}

static void vc_timer_release(cvm_timer *timer) {
        free(timer);
}

static const cvm_clock_ops virtual_ops = {
        .now = vc_now,
        .timer_init = vc_timer_init,
        .timer_arm = vc_timer_arm,
        .timer_disarm = vc_timer_disarm,
        .timer_release = vc_timer_release,
};

int cvm_clock_virtual_new(uint64_t start_ns, cvm_clock **ret, cvm_error *err) {
        virtual_clock *vc = calloc(1, sizeof(*vc));
        if (!vc)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        vc->base.ops = &virtual_ops;
        vc->now = start_ns;
        *ret = &vc->base;
        return 0;
}

void cvm_clock_virtual_free(cvm_clock *clock) {
        if (!clock)
                return;
        virtual_clock *vc = (virtual_clock *)clock;
        free(vc->heap);
        free(vc);
}

uint64_t cvm_clock_virtual_next_due(cvm_clock *clock) {
        virtual_clock *vc = (virtual_clock *)clock;
        return vc->n ? vc->heap[0]->due_ns : UINT64_MAX;
}

/* Fires the earliest timer; the caller checked that one is armed. */
static void fire_first(virtual_clock *vc) {
        cvm_timer *t = vc->heap[0];
        vc_timer_disarm(t);
        t->armed = false;
        vc->now = t->due_ns;
        t->cb(t, t->userdata);
}

void cvm_clock_virtual_advance(cvm_clock *clock, uint64_t delta_ns) {
        virtual_clock *vc = (virtual_clock *)clock;
        uint64_t end = delta_ns > UINT64_MAX - vc->now ? UINT64_MAX : vc->now + delta_ns;
        while (vc->n && vc->heap[0]->due_ns <= end)
                fire_first(vc);
        vc->now = end;
}

uint64_t cvm_clock_virtual_run(cvm_clock *clock, uint64_t max_fired) {
        virtual_clock *vc = (virtual_clock *)clock;
        uint64_t fired = 0;
        while (vc->n && fired < max_fired) {
                fire_first(vc);
                fired++;
        }
        return fired;
}
