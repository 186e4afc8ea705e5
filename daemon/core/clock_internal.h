/* What a clock implementation provides; users see only clock.h. */
#pragma once

#include "clock.h"

typedef struct cvm_clock_ops {
        uint64_t (*now)(cvm_clock *clock);
        int (*timer_init)(cvm_timer *timer, cvm_error *err);
        void (*timer_arm)(cvm_timer *timer, uint64_t due_ns);
        void (*timer_disarm)(cvm_timer *timer);
        /* Releases the implementation's part and eventually frees the timer. */
        void (*timer_release)(cvm_timer *timer);
} cvm_clock_ops;

struct cvm_clock {
        const cvm_clock_ops *ops;
};

struct cvm_timer {
        cvm_clock *clock;
        cvm_timer_cb cb;
        void *userdata;
        bool armed;
        uint64_t due_ns;
        uint64_t seq;  /* Arm order, for ties on the virtual clock. */
        size_t heap_i; /* Position in the virtual clock's heap. */
        void *impl;    /* The uv_timer_t on the real clock. */
};
