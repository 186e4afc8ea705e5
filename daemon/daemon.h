/* The daemon: one libuv loop that owns all state. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "clock.h"
#include "config.h"
#include "host.h"
#include "http.h"
#include "image.h"
#include "notify.h"
#include "store.h"
#include "vm.h"

typedef enum cvmd_state {
        CVMD_RUNNING,
        CVMD_DRAINING, /* Not accepting; finishing in-flight requests. */
        CVMD_STOPPED,
} cvmd_state;

typedef struct cvmd {
        uv_loop_t loop;
        bool loop_ready;
        cvm_config cfg;
        cvm_clock *clock;
        cvm_store *store;
        cvm_http_server *http;
        cvm_host *host;
        cvm_sched *sched;
        bool host_runs_handlers; /* Handlers run on this machine: check they exist. */
        bool allow_debug;        /* policy.allow_debug: debuggable guests may be launched. */
        cvm_vms *vms;
        struct cvm_functions *functions;
        struct cvm_tenants *tenants; /* API tokens of the TCP listeners. */
        struct cvm_metrics *metrics; /* Counters and histograms for /metrics, /v1/stats. */
        cvm_image_cache *images;
        cvm_image_spec image_defaults; /* The config's "image" section over built-ins. */
        cvm_notify notify;
        uv_signal_t sig_term, sig_int;
        uv_timer_t drain_timer;
        cvmd_state state;
        uint64_t started_ns;
        uint64_t drain_deadline_ns;
        int lock_fd;
        bool unclean;             /* The host left guests or threads behind: exit non-zero. */
        struct cvm_vm_op *vm_ops; /* Requests on bare VMs in progress (api_vms.c). */
        char *unix_paths[CVM_CONFIG_MAX_LISTEN]; /* Sockets we created, removed on exit. */
        size_t n_unix_paths;
        char instance[33]; /* Random id of this run, also its daemon_runs row. */
} cvmd;

/* Takes ownership of cfg. Opens the store, listens, and tells systemd READY. */
int cvmd_start(cvmd *d, cvm_config *cfg, cvm_error *err);
/* Validates the config sections other modules own ("image", "sim", "psp"). */
int cvmd_check_sections(const cvm_config *cfg, cvm_error *err);
/* Runs the loop until shutdown completes; returns the exit status. */
int cvmd_run(cvmd *d);
/* Begins a graceful shutdown (idempotent; a second call hurries it). */
void cvmd_shutdown(cvmd *d, const char *why);
void cvmd_done(cvmd *d);
