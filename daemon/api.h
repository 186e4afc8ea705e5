/* The HTTP API (/v1): the route table and its handlers. Handlers get the
 * cvmd as userdata and answer through http.h. docs/api.md documents each. */
#pragma once

#include <stddef.h>

#include "http.h"

const cvm_http_route *cvm_api_routes(size_t *ret_n);
/* Who a request is: everyone for open routes, an operator on a trusted
 * listener, else the tenant of its bearer token (tenant routes only). */
int cvm_api_authorize(cvm_http_req *req, unsigned flags, void *userdata, cvm_error *err);

/* api_vms.c */
void cvm_api_create_vm(cvm_http_req *req, void *userdata);
void cvm_api_list_vms(cvm_http_req *req, void *userdata);
void cvm_api_get_vm(cvm_http_req *req, void *userdata);
void cvm_api_delete_vm(cvm_http_req *req, void *userdata);
void cvm_api_invoke_vm(cvm_http_req *req, void *userdata);
void cvm_api_psp(cvm_http_req *req, void *userdata);
void cvm_api_attest_vm(cvm_http_req *req, void *userdata);
struct cvmd;
/* At exit, before the host is freed: ends the requests on bare VMs still
 * open (the HTTP server answered them; their callbacks will not come). */
void cvm_api_vms_release(struct cvmd *d);
/* The body of an attestation request: {"nonce": "128 hex digits"}. */
int cvm_api_parse_nonce(cvm_http_req *req, uint8_t nonce[64], cvm_error *err);
struct cvm_vm;
struct cvm_host_attestation;
void cvm_api_reply_attestation(cvm_http_req *req, struct cvm_vm *vm,
                               const struct cvm_host_attestation *a, const cvm_error *err);

/* api_functions.c */
struct cvm_inv_result;
void cvm_api_reply_invocation(cvm_http_req *req, const struct cvm_inv_result *result);
void cvm_api_put_function(cvm_http_req *req, void *userdata);
void cvm_api_put_pool(cvm_http_req *req, void *userdata);
void cvm_api_list_functions(cvm_http_req *req, void *userdata);
void cvm_api_get_function(cvm_http_req *req, void *userdata);
void cvm_api_delete_function(cvm_http_req *req, void *userdata);
void cvm_api_invoke_function(cvm_http_req *req, void *userdata);
void cvm_api_get_invocation(cvm_http_req *req, void *userdata);
void cvm_api_get_pool(cvm_http_req *req, void *userdata);
void cvm_api_attest_function(cvm_http_req *req, void *userdata);

/* api_metrics.c */
void cvm_api_metrics(cvm_http_req *req, void *userdata);
void cvm_api_stats(cvm_http_req *req, void *userdata);
