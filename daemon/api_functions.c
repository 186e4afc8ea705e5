/* The function routes: /v1/functions (create or replace, list, show,
 * delete, pool settings, invoke), /v1/invocations/{id} and /v1/pool; and the
 * one way every invocation result becomes an HTTP response. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cleanup.h"
#include "daemon.h"
#include "function.h"
#include "json.h"
#include "log.h"

/* Bytes from a handler as a JSON string: invalid UTF-8 becomes '?'. */
static json_t *text_json(const uint8_t *p, size_t n) {
        json_t *s = json_stringn(p ? (const char *)p : "", p ? n : 0);
        if (s)
                return s;
        _cleanup_free_ char *copy = malloc(n + 1);
        if (!copy)
                return json_string("");
        for (size_t i = 0; i < n; i++)
                copy[i] = (p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' ? (char)p[i] : '?';
        return json_stringn(copy, n);
}

void cvm_api_reply_invocation(cvm_http_req *req, const cvm_inv_result *r) {
        /* Milliseconds with 3 decimals, as "%.3f" would print them, but from
         * integers: seven doubles through printf cost microseconds. */
        uint64_t us[] = {r->queue_ns, r->prepare_ns, r->psp_wait_ns, r->psp_ns,
                         r->boot_ns,  r->exec_ns,    r->total_ns};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(us); i++)
                us[i] = (us[i] + 500) / 1000;
#define MS "%" PRIu64 ".%03" PRIu64
#define MS_ARG(i) us[i] / 1000, us[i] % 1000
        char timing[256];
        snprintf(timing, sizeof(timing),
                 "queue;dur=" MS ", prepare;dur=" MS ", psp_wait;dur=" MS ", psp;dur=" MS
                 ", boot;dur=" MS ", exec;dur=" MS ", total;dur=" MS,
                 MS_ARG(0), MS_ARG(1), MS_ARG(2), MS_ARG(3), MS_ARG(4), MS_ARG(5), MS_ARG(6));
#undef MS
#undef MS_ARG
        cvm_http_req_add_header(req, "Cvm-Start", r->cold ? "cold" : "warm");
        if (r->vm_id)
                cvm_http_req_add_header(req, "Cvm-Vm-Id", r->vm_id);
        cvm_http_req_add_header(req, "Cvm-Invocation-Id", r->id);
        cvm_http_req_add_header(req, "Server-Timing", timing);
        if (r->retry_after_s) {
                char ra[16];
                snprintf(ra, sizeof(ra), "%u", r->retry_after_s);
                cvm_http_req_add_header(req, "Retry-After", ra);
        }
        if (r->http_status == 200) {
                cvm_http_reply(req, 200, "application/octet-stream", r->output, r->output_len);
                return;
        }
        if (r->http_status >= 500 && r->http_status != 500)
                log_warn("invocation %s of %s: %u %s", r->id, r->function ? r->function : "-",
                         r->http_status, r->message);
        json_t *body = json_pack("{s:s, s:s}", "error", r->error_code, "message", r->message);
        if (body && !strcmp(r->error_code, "function_failed")) {
                json_object_set_new(body, "stderr", text_json(r->stderr_tail, r->stderr_len));
                if (r->exit_code >= 0)
                        json_object_set_new(body, "exit_code", json_integer(r->exit_code));
                if (r->term_signal)
                        json_object_set_new(body, "signal", json_integer(r->term_signal));
        }
        cvm_http_reply_json(req, r->http_status, body);
}

/* A function the caller may see: another tenant's is as good as absent. */
static cvm_function *find_fn(cvm_http_req *req, cvmd *d) {
        const char *name = cvm_http_req_param(req, "name");
        cvm_function *fn = cvm_functions_find(d->functions, name);
        if (fn && !cvm_function_visible(fn, cvm_http_req_tenant(req)))
                fn = NULL;
        if (!fn)
                cvm_http_reply_error(req, 404, "not_found", "no function %s", CVM_QUOTE(name));
        return fn;
}

/* PUT /v1/functions/{name}, PUT /v1/functions/{name}/pool */

static void put_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        /* The update goes on: the client just will not hear how it ended. */
        cvm_fn_put_forget(ud);
}

static void on_put(cvm_function *fn, bool created, const cvm_error *err, void *ud) {
        cvm_http_req *req = ud;
        cvm_http_req_set_cancel(req, NULL, NULL);
        if (err) {
                cvm_http_reply_cvm_error(req, err);
                return;
        }
        if (created) {
                char location[128];
                snprintf(location, sizeof(location), "/v1/functions/%s", cvm_function_name(fn));
                cvm_http_req_add_header(req, "Location", location);
        }
        cvm_http_reply_json(req, created ? 201 : 200, cvm_function_to_json(fn));
}

void cvm_api_put_function(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        json_t *body = cvm_http_req_json(req);
        cvm_error err = {0};
        cvm_fn_put *put;
        if (!body) {
                cvm_error_set(&err, -EINVAL, "a JSON function spec is required");
        } else if (cvm_functions_put(d->functions, cvm_http_req_param(req, "name"),
                                     cvm_http_req_tenant(req), body, on_put, req, &put,
                                     &err) >= 0) {
                cvm_http_req_set_cancel(req, put_cancelled, put);
                return;
        }
        cvm_http_reply_cvm_error(req, &err);
}

static void on_pool_set(cvm_function *fn, bool created, const cvm_error *err, void *ud) {
        (void)created;
        on_put(fn, false, err, ud);
}

void cvm_api_put_pool(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_function *fn = find_fn(req, d);
        if (!fn)
                return;
        json_t *body = cvm_http_req_json(req);
        cvm_error err = {0};
        if (!body)
                cvm_error_set(&err, -EINVAL, "a JSON body with pool settings is required");
        else if (cvm_function_set_pool(fn, body, on_pool_set, req, &err) >= 0)
                return;
        cvm_http_reply_cvm_error(req, &err);
}

/* GET, DELETE */

void cvm_api_list_functions(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        json_t *list = json_array();
        for (cvm_function *fn = cvm_functions_first(d->functions); fn; fn = cvm_function_next(fn))
                if (cvm_function_visible(fn, cvm_http_req_tenant(req)))
                        json_array_append_new(list, cvm_function_to_json(fn));
        cvm_http_reply_json(req, 200, json_pack("{s:o}", "functions", list));
}

void cvm_api_get_function(cvm_http_req *req, void *ud) {
        cvm_function *fn = find_fn(req, ud);
        if (fn)
                cvm_http_reply_json(req, 200, cvm_function_to_json(fn));
}

void cvm_api_delete_function(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        const char *name = cvm_http_req_param(req, "name");
        cvm_error err = {0};
        if (!find_fn(req, d))
                return;
        if (cvm_functions_delete(d->functions, name, &err) < 0) {
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_reply_json(req, 202, json_pack("{s:s, s:s}", "name", name, "state", "draining"));
}

/* POST /v1/functions/{name}/invoke */

static void invoke_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        cvm_invocation_forget(ud);
}

static void on_invoked(cvm_invocation *inv, const cvm_inv_result *r, void *ud) {
        (void)inv;
        cvm_http_req *req = ud;
        cvm_http_req_set_cancel(req, NULL, NULL);
        cvm_api_reply_invocation(req, r);
}

void cvm_api_invoke_function(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_function *fn = find_fn(req, d);
        if (!fn)
                return;
        const char *mode = cvm_http_req_query(req, "mode");
        cvm_error err = {0};
        if (mode && strcmp(mode, "async") != 0 && strcmp(mode, "sync") != 0) {
                cvm_error_set(&err, -EINVAL, "query parameter 'mode' must be sync or async");
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        bool async = mode && !strcmp(mode, "async");
        size_t len;
        const void *body = cvm_http_req_body(req, &len);
        cvm_invocation *inv = NULL;
        uint32_t retry_after_s;
        if (cvm_function_invoke(fn, body, len, async, on_invoked, req, &inv, &retry_after_s, &err) <
            0) {
                if (err.code == -EAGAIN || err.code == -ENOSPC) {
                        char ra[16];
                        snprintf(ra, sizeof(ra), "%u", retry_after_s);
                        cvm_http_req_add_header(req, "Retry-After", ra);
                }
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        if (async) {
                char location[64];
                snprintf(location, sizeof(location), "/v1/invocations/%s", cvm_invocation_id(inv));
                cvm_http_req_add_header(req, "Location", location);
                cvm_http_reply_json(req, 202,
                                    json_pack("{s:s, s:s, s:s}", "id", cvm_invocation_id(inv),
                                              "function", cvm_function_name(fn), "status",
                                              "running"));
                return;
        }
        /* A warm start may have answered already; otherwise wait. */
        if (inv)
                cvm_http_req_set_cancel(req, invoke_cancelled, inv);
}

void cvm_api_get_invocation(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        const char *id = cvm_http_req_param(req, "id");
        json_t *j = cvm_functions_async_result(d->functions, id, cvm_http_req_tenant(req));
        if (!j) {
                cvm_http_reply_error(req, 404, "not_found",
                                     "no async invocation %s (unknown, or its result expired)",
                                     CVM_QUOTE(id));
                return;
        }
        cvm_http_reply_json(req, 200, j);
}

void cvm_api_get_pool(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_http_reply_json(req, 200, cvm_functions_pool_json(d->functions));
}

/* POST /v1/functions/{name}/attestation */

static void fn_attest_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        cvm_fn_attest_forget(ud);
}

static void on_fn_attested(cvm_vm *vm, const cvm_host_attestation *a, const cvm_error *err,
                           void *ud) {
        cvm_api_reply_attestation(ud, vm, a, err);
}

void cvm_api_attest_function(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_function *fn = find_fn(req, d);
        if (!fn)
                return;
        uint8_t nonce[64];
        cvm_error err = {0};
        cvm_fn_attest *a;
        if (cvm_api_parse_nonce(req, nonce, &err) < 0 ||
            cvm_function_attest(fn, nonce, on_fn_attested, req, &a, &err) < 0) {
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_req_set_cancel(req, fn_attest_cancelled, a);
}
