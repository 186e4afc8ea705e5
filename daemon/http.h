/* The HTTP server: libmicrohttpd in external-epoll mode on the daemon's libuv
 * loop (each listener's epoll fd under a uv_poll, its timeout in a uv_timer),
 * so handlers run on the loop thread. A handler answers at once or later:
 * if it returns without replying, the connection is suspended until a reply
 * function is called (from the loop thread). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "error.h"

typedef struct cvm_http_server cvm_http_server;
typedef struct cvm_http_req cvm_http_req;

typedef void (*cvm_http_handler)(cvm_http_req *req, void *userdata);
/* Called, instead of any further use, when a request that has not been
 * answered goes away (client gone or server stopped). req is freed after. */
typedef void (*cvm_http_cancel_cb)(cvm_http_req *req, void *userdata);

enum {
        /* A body, if present, must be a JSON object (415/400 otherwise). */
        CVM_HTTP_JSON = 1 << 0,
        /* Anyone may call it, on any listener (health, version). */
        CVM_HTTP_OPEN = 1 << 1,
        /* Tenants may call it too (scoped to their own objects); without
         * this or OPEN a route is for operators only. */
        CVM_HTTP_TENANT = 1 << 2,
};

/* Decides who a request is before its handler runs: returns 0 (setting the
 * principal with cvm_http_req_set_tenant, or leaving it NULL for an
 * operator) or a negative errno with err set, which is the answer. */
typedef int (*cvm_http_auth_fn)(cvm_http_req *req, unsigned route_flags, void *userdata,
                                cvm_error *err);

typedef struct cvm_http_route {
        const char *method;  /* "GET", "PUT", ... (HEAD is served by GET routes). */
        const char *pattern; /* "/v1/vms/{id}": a {name} segment captures a parameter. */
        cvm_http_handler handler;
        unsigned flags;
} cvm_http_route;

typedef struct cvm_http_limits {
        uint64_t max_body_bytes;
        uint32_t max_connections;      /* Per listener. */
        uint32_t connection_timeout_s; /* Idle time before a connection is closed. */
} cvm_http_limits;

int cvm_http_server_new(uv_loop_t *loop, const cvm_http_route *routes, size_t n_routes,
                        void *userdata, const cvm_http_limits *limits, cvm_http_server **ret,
                        cvm_error *err);
/* Serves a listening socket; takes ownership of fd. name is for logs.
 * trusted: callers on it are the host's operators (a Unix socket whose file
 * mode decides who may connect); others must authenticate. */
int cvm_http_server_listen_fd(cvm_http_server *srv, int fd, const char *name, bool trusted,
                              cvm_error *err);
void cvm_http_server_set_auth(cvm_http_server *srv, cvm_http_auth_fn auth, void *userdata);
/* Stops accepting connections; open ones are still served. */
void cvm_http_server_stop_listening(cvm_http_server *srv);
/* Requests handled but not yet answered. */
size_t cvm_http_server_pending(cvm_http_server *srv);
/* Answers every pending request with the error (shutdown's last step). */
void cvm_http_server_fail_pending(cvm_http_server *srv, const cvm_error *error);
/* Stops everything; NULL-safe. Handles close on the loop's next turns. */
void cvm_http_server_free(cvm_http_server *srv);

/* Request accessors; strings live as long as the request. */
const char *cvm_http_req_method(const cvm_http_req *req);
const char *cvm_http_req_path(const cvm_http_req *req);
const char *cvm_http_req_param(const cvm_http_req *req, const char *name);
const char *cvm_http_req_query(const cvm_http_req *req, const char *name);
const char *cvm_http_req_header(const cvm_http_req *req, const char *name);
const void *cvm_http_req_body(const cvm_http_req *req, size_t *ret_len);
/* The parsed body of a CVM_HTTP_JSON route, or NULL when the body was empty. */
json_t *cvm_http_req_json(const cvm_http_req *req);
void cvm_http_req_set_cancel(cvm_http_req *req, cvm_http_cancel_cb cb, void *userdata);
/* Whether the request came on a trusted listener. */
bool cvm_http_req_trusted(const cvm_http_req *req);
/* The tenant the request acts for; NULL for an operator. */
const char *cvm_http_req_tenant(const cvm_http_req *req);
int cvm_http_req_set_tenant(cvm_http_req *req, const char *tenant);

/* Replying: exactly once per request. Headers must be added before. */
int cvm_http_req_add_header(cvm_http_req *req, const char *name, const char *value);
void cvm_http_reply(cvm_http_req *req, unsigned status, const char *content_type, const void *data,
                    size_t len);
/* Steals the reference to body. */
void cvm_http_reply_json(cvm_http_req *req, unsigned status, json_t *body);
void cvm_http_reply_error(cvm_http_req *req, unsigned status, const char *code, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
/* Maps err->code to a status and a code name (the one error model). */
void cvm_http_reply_cvm_error(cvm_http_req *req, const cvm_error *err);
unsigned cvm_http_status_for_errno(int code);
