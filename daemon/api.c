#include "api.h"

#include <jansson.h>
#include <string.h>
#include <strings.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <uv.h>

#include "cleanup.h"
#include "daemon.h"
#include "json.h"
#include "log.h"
#include "tenants.h"
#include "version.h"

static void api_health(cvm_http_req *req, void *userdata) {
        cvmd *d = userdata;
        cvm_store_stats st;
        cvm_store_get_stats(d->store, &st);
        json_t *warnings = json_array();
        if (st.dropped) {
                char w[128];
                snprintf(w, sizeof(w), "store dropped %llu write(s): its queue was full",
                         (unsigned long long)st.dropped);
                json_array_append_new(warnings, json_string(w));
        }
        if (st.failed) {
                char w[128];
                snprintf(w, sizeof(w), "store failed %llu write(s); see the log",
                         (unsigned long long)st.failed);
                json_array_append_new(warnings, json_string(w));
        }
        bool running = d->state == CVMD_RUNNING;
        json_t *body = json_pack(
                "{s:s, s:s, s:s, s:s, s:f, s:{s:I, s:I, s:I, s:I, s:I, s:i}, s:{s:I}, s:o}",
                "status", running ? "ok" : "stopping", "version", CVM_VERSION, "instance",
                d->instance, "host", d->cfg.host, "uptime_s",
                (double)((uv_hrtime() - d->started_ns) / 1000000) / 1e3, "store", "queued",
                (json_int_t)st.queued, "capacity", (json_int_t)st.capacity, "written",
                (json_int_t)st.written, "failed", (json_int_t)st.failed, "dropped",
                (json_int_t)st.dropped, "schema_version", st.schema_version, "http", "in_flight",
                (json_int_t)cvm_http_server_pending(d->http), "warnings", warnings);
        cvm_http_reply_json(req, running ? 200 : 503, body);
}

static void api_version(cvm_http_req *req, void *userdata) {
        (void)userdata;
        cvm_http_reply_json(req, 200,
                            json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}}", "version",
                                      CVM_VERSION, "api", CVM_API_VERSION, "libraries", "libuv",
                                      uv_version_string(), "libmicrohttpd", MHD_get_version(),
                                      "sqlite", sqlite3_libversion(), "jansson", JANSSON_VERSION,
                                      "openssl", OpenSSL_version(OPENSSL_VERSION_STRING)));
}

static void api_get_log_level(cvm_http_req *req, void *userdata) {
        (void)userdata;
        cvm_http_reply_json(
                req, 200,
                json_pack("{s:s}", "level", cvm_log_level_to_string(cvm_log_get_level())));
}

static void api_put_log_level(cvm_http_req *req, void *userdata) {
        cvmd *d = userdata;
        json_t *body = cvm_http_req_json(req);
        cvm_error err = {0};
        const char *level = NULL;
        static const char *const fields[] = {"level", NULL};
        cvm_log_level lv;
        if (!body) {
                cvm_error_set(&err, -EINVAL, "a JSON body {\"level\": ...} is required");
        } else if (cvm_json_check_fields(body, "", fields, &err) >= 0 &&
                   cvm_json_get_string(body, "", "level", true, &level, &err) >= 0 &&
                   cvm_log_level_from_string(level, &lv) < 0) {
                cvm_error_set(&err, -EINVAL,
                              "field 'level' must be one of error, warn, info, debug");
        }
        if (err.code) {
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_log_set_level(lv);
        d->cfg.log_level = lv;
        log_info("log level set to %s through the API", cvm_log_level_to_string(lv));
        api_get_log_level(req, userdata);
}

static const cvm_http_route routes[] = {
        {"GET", "/v1/health", api_health, CVM_HTTP_OPEN},
        {"GET", "/v1/version", api_version, CVM_HTTP_OPEN},
        {"GET", "/v1/log-level", api_get_log_level, 0},
        {"PUT", "/v1/log-level", api_put_log_level, CVM_HTTP_JSON},
        {"POST", "/v1/vms", cvm_api_create_vm, CVM_HTTP_JSON},
        {"GET", "/v1/vms", cvm_api_list_vms, 0},
        {"GET", "/v1/vms/{id}", cvm_api_get_vm, 0},
        {"DELETE", "/v1/vms/{id}", cvm_api_delete_vm, 0},
        {"POST", "/v1/vms/{id}/invoke", cvm_api_invoke_vm, 0},
        {"GET", "/v1/psp", cvm_api_psp, 0},
        {"POST", "/v1/vms/{id}/attestation", cvm_api_attest_vm, CVM_HTTP_JSON},
        {"POST", "/v1/functions/{name}/attestation", cvm_api_attest_function,
         CVM_HTTP_JSON | CVM_HTTP_TENANT},
        {"GET", "/v1/functions", cvm_api_list_functions, CVM_HTTP_TENANT},
        {"PUT", "/v1/functions/{name}", cvm_api_put_function, CVM_HTTP_JSON | CVM_HTTP_TENANT},
        {"GET", "/v1/functions/{name}", cvm_api_get_function, CVM_HTTP_TENANT},
        {"DELETE", "/v1/functions/{name}", cvm_api_delete_function, CVM_HTTP_TENANT},
        {"PUT", "/v1/functions/{name}/pool", cvm_api_put_pool, CVM_HTTP_JSON | CVM_HTTP_TENANT},
        {"POST", "/v1/functions/{name}/invoke", cvm_api_invoke_function, CVM_HTTP_TENANT},
        {"GET", "/v1/invocations/{id}", cvm_api_get_invocation, CVM_HTTP_TENANT},
        {"GET", "/v1/pool", cvm_api_get_pool, 0},
        {"GET", "/v1/stats", cvm_api_stats, 0},
        {"GET", "/metrics", cvm_api_metrics, 0},
};

int cvm_api_authorize(cvm_http_req *req, unsigned flags, void *userdata, cvm_error *err) {
        cvmd *d = userdata;
        /* Operators reach the daemon through its Unix socket, guarded by file mode. */
        if ((flags & CVM_HTTP_OPEN) || cvm_http_req_trusted(req))
                return 0;
        const char *auth = cvm_http_req_header(req, "Authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
                return cvm_error_set(err, -EACCES,
                                     "authentication required: send Authorization: Bearer TOKEN");
        const char *tenant = cvm_tenants_lookup(d->tenants, auth + 7);
        if (!tenant)
                return cvm_error_set(err, -EACCES, "unknown API token");
        if (!(flags & CVM_HTTP_TENANT))
                return cvm_error_set(err, -EPERM,
                                     "tenant %s may not call %s %s: it is for the host's "
                                     "operators",
                                     tenant, cvm_http_req_method(req), cvm_http_req_path(req));
        if (cvm_http_req_set_tenant(req, tenant) < 0)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        return 0;
}

const cvm_http_route *cvm_api_routes(size_t *ret_n) {
        *ret_n = CVM_ARRAY_SIZE(routes);
        return routes;
}
