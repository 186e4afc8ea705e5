/* The metrics routes: GET /metrics (Prometheus text format: the counters and
 * histograms metrics.c keeps, and gauges read from the daemon at scrape time)
 * and GET /v1/stats (invocation statistics from the store, computed on a
 * worker thread). docs/metrics.md documents both. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "cleanup.h"
#include "daemon.h"
#include "function.h"
#include "metrics.h"
#include "version.h"

static void gauge(cvm_prom_buf *b, const char *name, const char *help, double value) {
        cvm_prom_family(b, name, "gauge", help);
        cvm_prom_sample(b, name, NULL, 0, value);
}

static void counter(cvm_prom_buf *b, const char *name, const char *help, uint64_t value) {
        cvm_prom_family(b, name, "counter", help);
        cvm_prom_sample_u64(b, name, NULL, 0, value);
}

/* A number from a JSON object the daemon built; 0 when absent. */
static double num(json_t *obj, const char *key) {
        return json_number_value(json_object_get(obj, key));
}

static void render_daemon(cvmd *d, cvm_prom_buf *b) {
        cvm_prom_family(b, "cvmd_build_info", "gauge", "Always 1; the version of this cvmd.");
        cvm_prom_sample(b, "cvmd_build_info", &(cvm_prom_label){"version", CVM_VERSION}, 1, 1);
        gauge(b, "cvmd_uptime_seconds", "Time since this cvmd started.",
              (double)((uv_hrtime() - d->started_ns) / 1000000) / 1e3);
        gauge(b, "cvmd_http_requests_in_flight", "HTTP requests handled but not yet answered.",
              (double)cvm_http_server_pending(d->http));

        /* Every state is listed, zeros included, so a state that empties still shows. */
        uint64_t by_state[CVM_VM_STOPPING + 1] = {0};
        for (cvm_vm *vm = d->vms ? cvm_vms_first(d->vms) : NULL; vm; vm = vm->next)
                if ((unsigned)vm->state <= CVM_VM_STOPPING)
                        by_state[vm->state]++;
        cvm_prom_family(b, "cvmd_vms", "gauge", "VMs by state.");
        for (int s = 0; s <= CVM_VM_STOPPING; s++)
                cvm_prom_sample_u64(
                        b, "cvmd_vms",
                        &(cvm_prom_label){"state", cvm_vm_state_to_string((cvm_vm_state)s)}, 1,
                        by_state[s]);

        json_t *pool = d->functions ? cvm_functions_pool_json(d->functions) : NULL;
        gauge(b, "cvmd_functions", "Functions defined.", num(pool, "functions"));
        gauge(b, "cvmd_pool_vms", "VMs that belong to functions' pools.", num(pool, "vms"));
        gauge(b, "cvmd_pool_memory_bytes", "Memory of the pools' VMs.",
              num(pool, "memory_mib") * 1048576.0);
        gauge(b, "cvmd_pool_memory_budget_bytes", "The pools' memory budget (0: unlimited).",
              num(pool, "budget_memory_mib") * 1048576.0);
        json_decref(pool);

        cvm_store_stats st;
        cvm_store_get_stats(d->store, &st);
        counter(b, "cvmd_store_writes_total", "Store writes committed.", st.written);
        counter(b, "cvmd_store_writes_failed_total", "Store writes SQLite refused.", st.failed);
        counter(b, "cvmd_store_writes_dropped_total",
                "Store writes dropped because the writer's queue was full.", st.dropped);
        gauge(b, "cvmd_store_queue_writes", "Store writes waiting for the writer.",
              (double)st.queued);
        gauge(b, "cvmd_store_queue_capacity_writes", "The store writer's queue capacity.",
              (double)st.capacity);

        json_t *psp = d->host ? d->host->ops->psp_json(d->host) : NULL;
        cvm_prom_family(b, "cvmd_psp_busy_seconds_total", "counter",
                        "Time the PSP spent serving commands.");
        cvm_prom_sample(b, "cvmd_psp_busy_seconds_total", NULL, 0, num(psp, "busy_ms") / 1e3);
        gauge(b, "cvmd_psp_queue_depth", "PSP commands queued or in service.",
              num(psp, "queue_depth"));
        json_t *asids = json_object_get(psp, "asids");
        static const char *const asid_states[] = {"free", "dirty", "in_use"};
        cvm_prom_family(b, "cvmd_asids", "gauge",
                        "SEV ASIDs by state (dirty: released, awaiting a DF_FLUSH).");
        for (size_t i = 0; i < CVM_ARRAY_SIZE(asid_states); i++)
                cvm_prom_sample(b, "cvmd_asids", &(cvm_prom_label){"state", asid_states[i]}, 1,
                                num(asids, asid_states[i]));
        json_decref(psp);
}

/* GET /metrics */
void cvm_api_metrics(cvm_http_req *req, void *userdata) {
        cvmd *d = userdata;
        cvm_prom_buf b = {0};
        render_daemon(d, &b);
        cvm_metrics_render(d->metrics, &b);
        if (b.failed) {
                cvm_prom_buf_done(&b);
                cvm_http_reply_error(req, 500, "internal", "out of memory rendering metrics");
                return;
        }
        cvm_http_reply(req, 200, CVM_PROM_CONTENT_TYPE, b.data, b.len);
        cvm_prom_buf_done(&b);
}

/* GET /v1/stats */

static void stats_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        cvm_stats_job_forget(ud);
}

static void stats_done(json_t *result, const cvm_error *err, void *ud) {
        cvm_http_req *req = ud;
        cvm_http_req_set_cancel(req, NULL, NULL);
        if (err)
                cvm_http_reply_cvm_error(req, err);
        else
                cvm_http_reply_json(req, 200, json_incref(result));
}

void cvm_api_stats(cvm_http_req *req, void *userdata) {
        cvmd *d = userdata;
        cvm_stats_query q;
        cvm_error err = {0};
        cvm_stats_job *job;
        const char *function = cvm_http_req_query(req, "function");
        int r = cvm_stats_parse_query(function, cvm_http_req_query(req, "since"),
                                      cvm_http_req_query(req, "until"), cvm_wall_ms(), &q, &err);
        if (r >= 0) {
                /* A deleted function's rows are still answered; the answer says so. */
                q.function_exists = !function || cvm_functions_find(d->functions, function);
                r = cvm_metrics_stats(d->metrics, &q, stats_done, req, &job, &err);
        }
        if (r < 0) {
                if (r == -EAGAIN)
                        cvm_http_req_add_header(req, "Retry-After", "1");
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_req_set_cancel(req, stats_cancelled, job);
}
