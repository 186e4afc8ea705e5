/* The VM routes: /v1/vms (create, list, show, delete, invoke) and /v1/psp. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cleanup.h"
#include "daemon.h"
#include "json.h"
#include "list.h"
#include "log.h"
#include "function.h"
#include "guest_policy.h"
#include "snp_report.h"
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "vm.h"

#define INVOKE_TIMEOUT_DEFAULT_MS 30000
#define INVOKE_TIMEOUT_MAX_MS 3600000
#define VM_CONCURRENCY_MAX 64

/* Every request on a bare VM waiting for a callback is a cvm_vm_op on
 * d->vm_ops, so that the exit can end it (see cvm_api_vms_release). */
typedef struct cvm_vm_op {
        void (*end)(struct cvm_vm_op *op);
        struct cvm_vm_op *prev, *next;
} cvm_vm_op;

static void op_add(cvmd *d, cvm_vm_op *op, void (*end)(cvm_vm_op *op)) {
        op->end = end;
        CVM_LIST_PREPEND(d->vm_ops, op);
}

static void op_remove(cvmd *d, cvm_vm_op *op) {
        if (op->end)
                CVM_LIST_REMOVE(d->vm_ops, op);
        op->end = NULL;
}

void cvm_api_vms_release(cvmd *d) {
        while (d->vm_ops)
                d->vm_ops->end(d->vm_ops);
}

/* POST /v1/vms */

typedef struct create_ctx {
        cvm_vm_op op; /* First: the op is the context. */
        cvmd *d;
        cvm_http_req *req;
        cvm_handler_spec handler;
        uint32_t concurrency;
        cvm_image_req *image_req;
        cvm_vm *vm;
} create_ctx;

static void create_ctx_free(create_ctx *c) {
        if (c->d)
                op_remove(c->d, &c->op);
        cvm_handler_spec_done(&c->handler);
        free(c);
}

/* At exit: the VM, if any, is stopped with the others. */
static void create_end(cvm_vm_op *op) {
        create_ctx *c = (create_ctx *)op;
        cvm_image_cache_cancel(c->image_req);
        if (c->vm)
                cvm_vm_forget_launch(c->vm);
        create_ctx_free(c);
}

static void create_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        create_ctx *c = ud;
        cvm_image_cache_cancel(c->image_req);
        /* The VM carries on: it shows in GET /v1/vms and can be deleted. */
        if (c->vm)
                cvm_vm_forget_launch(c->vm);
        create_ctx_free(c);
}

static void create_reply_error(create_ctx *c, const cvm_error *err) {
        cvm_http_req_set_cancel(c->req, NULL, NULL);
        cvm_http_reply_cvm_error(c->req, err);
        create_ctx_free(c);
}

static void on_vm_launched(cvm_vm *vm, const cvm_error *err, void *ud) {
        create_ctx *c = ud;
        if (err) {
                create_reply_error(c, err);
                return;
        }
        char location[64];
        snprintf(location, sizeof(location), "/v1/vms/%s", vm->id);
        cvm_http_req_set_cancel(c->req, NULL, NULL);
        cvm_http_req_add_header(c->req, "Location", location);
        cvm_http_reply_json(c->req, 201, cvm_vm_to_json(vm));
        create_ctx_free(c);
}

static void on_image(cvm_image *img, const cvm_error *err, void *ud) {
        create_ctx *c = ud;
        c->image_req = NULL;
        if (!img) {
                create_reply_error(c, err);
                return;
        }
        cvm_error e = {0};
        int r = cvm_vms_launch(c->d->vms, img, &c->handler, c->concurrency, NULL, true,
                               on_vm_launched, c, &c->vm, &e);
        cvm_image_unref(img);
        if (r < 0)
                create_reply_error(c, &e);
}

static const char *const create_fields[] = {"image", "handler", "concurrency", NULL};

void cvm_api_create_vm(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        json_t *body = cvm_http_req_json(req);
        cvm_error err = {0};
        json_t *image_obj = NULL, *handler_obj = NULL;
        int64_t conc = 1;
        cvm_image_spec spec = {0};
        create_ctx *c = calloc(1, sizeof(*c));
        int r = c ? 0 : cvm_error_set(&err, -ENOMEM, "out of memory");
        if (r >= 0 && !body)
                r = cvm_error_set(&err, -EINVAL,
                                  "a JSON body {\"handler\": {\"exec\": [...]}} is required");
        if (r >= 0)
                r = cvm_json_check_fields(body, "", create_fields, &err);
        if (r >= 0)
                r = cvm_json_get_object(body, "", "image", false, &image_obj, &err);
        if (r >= 0)
                r = cvm_json_get_object(body, "", "handler", true, &handler_obj, &err);
        if (r >= 0)
                r = cvm_json_get_int(body, "", "concurrency", false, 1, VM_CONCURRENCY_MAX, &conc,
                                     &err);
        if (r >= 0)
                r = cvm_image_spec_parse(image_obj, &d->image_defaults, "image", &spec, &err);
        if (r >= 0 && (r = cvm_guest_policy_check(spec.guest_policy, d->allow_debug, &err)) < 0)
                cvm_error_prefix(&err, "image.guest_policy: ");
        if (r >= 0)
                r = cvm_handler_spec_parse(handler_obj, "handler", d->host_runs_handlers,
                                           &c->handler, &err);
        if (r >= 0) {
                c->d = d;
                op_add(d, &c->op, create_end);
                c->req = req;
                c->concurrency = (uint32_t)conc;
                cvm_http_req_set_cancel(req, create_cancelled, c);
                r = cvm_image_cache_get(d->images, &spec, on_image, c, &c->image_req, &err);
                if (r < 0)
                        cvm_http_req_set_cancel(req, NULL, NULL);
        }
        cvm_image_spec_done(&spec);
        if (r < 0) {
                if (c)
                        create_ctx_free(c);
                cvm_http_reply_cvm_error(req, &err);
        }
}

/* GET /v1/vms, GET and DELETE /v1/vms/{id} */

static cvm_vm *find_vm(cvm_http_req *req, cvmd *d) {
        const char *id = cvm_http_req_param(req, "id");
        cvm_vm *vm = cvm_vms_find(d->vms, id);
        if (!vm)
                cvm_http_reply_error(req, 404, "not_found", "no VM %s", CVM_QUOTE(id));
        return vm;
}

void cvm_api_list_vms(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        const char *function = cvm_http_req_query(req, "function");
        json_t *list = json_array();
        for (cvm_vm *vm = cvm_vms_first(d->vms); vm; vm = vm->next)
                if (!function || (vm->function && strcmp(function, vm->function) == 0))
                        json_array_append_new(list, cvm_vm_to_json(vm));
        cvm_http_reply_json(req, 200, json_pack("{s:o}", "vms", list));
}

void cvm_api_get_vm(cvm_http_req *req, void *ud) {
        cvm_vm *vm = find_vm(req, ud);
        if (vm)
                cvm_http_reply_json(req, 200, cvm_vm_to_json(vm));
}

void cvm_api_delete_vm(cvm_http_req *req, void *ud) {
        cvm_vm *vm = find_vm(req, ud);
        if (!vm)
                return;
        /* Teardown happens off the request path; the answer says it started.
         * The VM may be gone when retire returns: keep its id. */
        char id[CVM_VM_ID_SIZE];
        snprintf(id, sizeof(id), "%s", vm->id);
        cvm_vm_retire(vm, "deleted through the API");
        cvm_http_reply_json(req, 202, json_pack("{s:s, s:s}", "id", id, "state", "stopping"));
}

/* POST /v1/vms/{id}/invoke */

typedef struct invoke_ctx {
        cvm_vm_op op; /* First: the op is the context. */
        cvmd *d;
        cvm_http_req *req;
        char id[32];
        char vm_id[CVM_VM_ID_SIZE];
        int64_t started_ms;
        uint64_t started_ns;
        size_t bytes_in;
        uint32_t timeout_ms;
        bool cancelled;
} invoke_ctx;

static void invoke_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        /* The VM still answers later; the context notes nobody listens. */
        ((invoke_ctx *)ud)->cancelled = true;
}

static void invoke_record(invoke_ctx *c, const cvm_inv_result *r, const char *status,
                          uint64_t exec_ns) {
        cvm_invocation_record rec = {
                .id = c->id,
                .vm_id = c->vm_id,
                .start_kind = "warm",
                .status = status,
                .error = r->http_status == 200 ? NULL : r->message,
                .started_ms = c->started_ms,
                .exec_ns = exec_ns,
                .total_ns = r->total_ns,
                .exit_code = r->exit_code,
                .bytes_in = c->bytes_in,
                .bytes_out = r->output_len,
        };
        cvm_vms_record_invocation(c->d->vms, &rec);
        op_remove(c->d, &c->op);
        free(c);
}

/* At exit: recorded as cancelled, as a function's invocation is. */
static void invoke_end(cvm_vm_op *op) {
        invoke_ctx *c = (invoke_ctx *)op;
        cvm_inv_result r = {.http_status = 503,
                            .message = "the daemon shut down before the invocation ended",
                            .exit_code = -1,
                            .total_ns = uv_hrtime() - c->started_ns};
        invoke_record(c, &r, "cancelled", 0);
}

static void on_invoked(cvm_vm *vm, const cvm_vm_outcome *out, void *ud) {
        invoke_ctx *c = ud;
        char msg[CVM_ERROR_MESSAGE_MAX];
        cvm_inv_result r = {.id = c->id, .vm_id = c->vm_id};
        cvm_inv_result_from_outcome(out, c->timeout_ms, &r, msg, sizeof(msg));
        r.total_ns = uv_hrtime() - c->started_ns;
        cvm_log_handler_stderr(c->id, vm->id, out->agent);
        if (!c->cancelled) {
                cvm_http_req_set_cancel(c->req, NULL, NULL);
                cvm_api_reply_invocation(c->req, &r);
        }
        invoke_record(c, &r, c->cancelled ? "cancelled" : r.status, out->exec_ns);
}

static int parse_timeout(cvm_http_req *req, uint32_t *ret, cvm_error *err) {
        const char *t = cvm_http_req_query(req, "timeout_ms");
        *ret = INVOKE_TIMEOUT_DEFAULT_MS;
        if (!t)
                return 0;
        char *end;
        long v = strtol(t, &end, 10);
        /* Digits only: strtol would also take leading blanks and a sign. */
        if (!isdigit((unsigned char)*t) || *end || v < 1 || v > INVOKE_TIMEOUT_MAX_MS)
                return cvm_error_set(err, -EINVAL,
                                     "query parameter 'timeout_ms' must be between 1 and %d",
                                     INVOKE_TIMEOUT_MAX_MS);
        *ret = (uint32_t)v;
        return 0;
}

void cvm_api_invoke_vm(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_vm *vm = find_vm(req, d);
        if (!vm)
                return;
        cvm_error err = {0};
        uint32_t timeout_ms;
        if (parse_timeout(req, &timeout_ms, &err) < 0) {
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        invoke_ctx *c = calloc(1, sizeof(*c));
        if (!c)
                cvm_error_set(&err, -ENOMEM, "out of memory");
        if (!c || cvm_random_id("inv-", c->id, sizeof(c->id), &err) < 0) {
                free(c);
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        size_t len;
        const void *body = cvm_http_req_body(req, &len);
        c->d = d;
        c->req = req;
        c->timeout_ms = timeout_ms;
        c->bytes_in = len;
        c->started_ms = cvm_wall_ms();
        c->started_ns = uv_hrtime();
        snprintf(c->vm_id, sizeof(c->vm_id), "%s", vm->id);
        cvm_vm_invocation inv = {.invocation_id = c->id, .start_kind = "warm"};
        op_add(d, &c->op, invoke_end);
        if (cvm_vm_invoke(vm, &inv, timeout_ms, body, len, on_invoked, c, &err) < 0) {
                op_remove(d, &c->op);
                free(c);
                if (err.code == -EAGAIN)
                        cvm_http_req_add_header(req, "Retry-After", "1");
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_req_set_cancel(req, invoke_cancelled, c);
}

/* GET /v1/psp */

void cvm_api_psp(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        json_t *j = d->host->ops->psp_json(d->host);
        if (j)
                json_object_set_new(j, "scheduler", cvm_sched_to_json(d->sched));
        cvm_http_reply_json(req, 200, j);
}

/* Attestation: POST /v1/vms/{id}/attestation (and, through api_functions.c,
 * /v1/functions/{name}/attestation). The daemon relays; the client verifies. */

int cvm_api_parse_nonce(cvm_http_req *req, uint8_t nonce[64], cvm_error *err) {
        static const char *const fields[] = {"nonce", NULL};
        json_t *body = cvm_http_req_json(req);
        const char *hex = NULL;
        int r;
        if (!body)
                return cvm_error_set(err, -EINVAL,
                                     "a JSON body {\"nonce\": \"128 hex digits\"} is required");
        if ((r = cvm_json_check_fields(body, "", fields, err)) < 0 ||
            (r = cvm_json_get_string(body, "", "nonce", true, &hex, err)) < 0)
                return r;
        if (strlen(hex) != 128 || cvm_snp_unhex(hex, nonce, 64) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "field 'nonce' must be 64 bytes as 128 hex digits");
        return 0;
}

static json_t *b64_json(const uint8_t *p, size_t n) {
        size_t cap = 4 * ((n + 2) / 3) + 1;
        _cleanup_free_ unsigned char *out = malloc(cap);
        if (!out)
                return NULL;
        int len = EVP_EncodeBlock(out, p, (int)n);
        return json_stringn((const char *)out, (size_t)len);
}

static json_t *pem_key_json(const uint8_t *der, size_t len) {
        const unsigned char *p = der;
        EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)len);
        BIO *bio = BIO_new(BIO_s_mem());
        json_t *j = NULL;
        char *data;
        if (key && bio && PEM_write_bio_PUBKEY(bio, key) == 1) {
                long n = BIO_get_mem_data(bio, &data);
                j = json_stringn(data, (size_t)n);
        }
        BIO_free(bio);
        EVP_PKEY_free(key);
        return j;
}

void cvm_api_reply_attestation(cvm_http_req *req, cvm_vm *vm, const cvm_host_attestation *a,
                               const cvm_error *err) {
        cvm_http_req_set_cancel(req, NULL, NULL);
        if (err) {
                cvm_http_reply_cvm_error(req, err);
                return;
        }
        cvm_http_reply_json(req, 200,
                            json_pack("{s:s, s:s?, s:s, s:o, s:o, s:s}", "vm_id", vm->id,
                                      "function", vm->function, "measurement",
                                      vm->image->digest_hex, "report",
                                      b64_json(a->report, a->report_len), "public_key",
                                      pem_key_json(a->public_key, a->public_key_len), "cert_chain",
                                      a->cert_chain_pem));
}

static void vm_attest_cancelled(cvm_http_req *req, void *ud) {
        (void)req;
        /* The host answers later into nothing: forget the request. */
        *(cvm_http_req **)ud = NULL;
}

typedef struct vm_attest_ctx {
        cvm_vm_op op; /* First: the op is the context. */
        cvmd *d;
        cvm_http_req *req;
} vm_attest_ctx;

static void attest_end(cvm_vm_op *op) {
        vm_attest_ctx *c = (vm_attest_ctx *)op;
        op_remove(c->d, &c->op);
        free(c);
}

static void on_vm_attested(cvm_vm *vm, const cvm_host_attestation *a, const cvm_error *err,
                           void *ud) {
        vm_attest_ctx *c = ud;
        if (c->req)
                cvm_api_reply_attestation(c->req, vm, a, err);
        attest_end(&c->op);
}

void cvm_api_attest_vm(cvm_http_req *req, void *ud) {
        cvmd *d = ud;
        cvm_vm *vm = find_vm(req, d);
        if (!vm)
                return;
        uint8_t nonce[64];
        cvm_error err = {0};
        vm_attest_ctx *c = calloc(1, sizeof(*c));
        int r = c ? cvm_api_parse_nonce(req, nonce, &err) : cvm_error_set(&err, -ENOMEM, "oom");
        if (r >= 0) {
                c->d = d;
                c->req = req;
                op_add(d, &c->op, attest_end);
                r = d->host->ops->attest(d->host, vm, nonce, on_vm_attested, c, &err);
        }
        if (r < 0) {
                if (c)
                        op_remove(d, &c->op);
                free(c);
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_req_set_cancel(req, vm_attest_cancelled, &c->req);
}
