#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "json.h"
#include "list.h"
#include "log.h"

#define MAX_PARAMS 4
#define MAX_HEADERS 16
#define MAX_SEGMENTS 16
/* How often suspended requests are checked for clients that went away
 * (libmicrohttpd does not watch a suspended connection). */
#define GONE_CHECK_MS 250

typedef struct listener listener;

struct cvm_http_req {
        cvm_http_server *srv;
        listener *listener;
        struct MHD_Connection *conn;
        cvm_http_req *prev, *next; /* In srv->reqs. */
        char *method;
        char *path;
        const cvm_http_route *route;
        struct {
                const char *name; /* Points into the route pattern. */
                size_t name_len;
                char *value;
        } params[MAX_PARAMS];
        size_t n_params;
        char *body;
        size_t body_len, body_cap;
        bool body_too_large;
        bool handled;   /* The handler ran. */
        bool suspended; /* The connection waits for a late reply. */
        bool gone;      /* The client went away while it waited: cancelled. */
        int fd;         /* The connection's socket, while suspended. */
        json_t *json;
        struct MHD_Response *response;
        unsigned status;
        struct {
                char *name, *value;
        } headers[MAX_HEADERS];
        size_t n_headers;
        cvm_http_cancel_cb cancel;
        void *cancel_data;
        uint64_t started_ns;
        char *tenant;
};

struct listener {
        cvm_http_server *srv;
        struct MHD_Daemon *mhd;
        char *name;
        uv_poll_t poll;
        uv_timer_t timer;
        uv_idle_t flush;       /* Runs MHD for resumed connections at the end of the loop turn. */
        uv_timer_t gone_check; /* Runs while requests are suspended. */
        /* MHD is closing a gone request's connection: its "internal error"
         * line is expected. */
        bool closing_gone;
        bool listening;
        bool trusted;
        int handles_open;
        listener *next;
};

struct cvm_http_server {
        uv_loop_t *loop;
        const cvm_http_route *routes;
        size_t n_routes;
        void *userdata;
        cvm_http_limits limits;
        listener *listeners;
        cvm_http_auth_fn auth;
        void *auth_data;
        cvm_http_req *reqs;
        size_t n_reqs;
        size_t pending; /* Handled, not yet answered. */
        bool freed;
};

unsigned cvm_http_status_for_errno(int code) {
        switch (-code) {
        case EINVAL: return 400;
        case EACCES:
        case EPERM: return 403;
        case ENOENT: return 404;
        case EEXIST:
        case EBUSY:
        case ECANCELED: return 409;
        case EMSGSIZE:
        case E2BIG: return 413;
        case EAGAIN: return 429;
        case ENOTSUP: return 501;
        case EPROTO:
        case ECONNRESET:
        case EPIPE: return 502;
        case ENOSPC:
        case ESHUTDOWN: return 503;
        case ETIMEDOUT: return 504;
        default: return 500;
        }
}

/* Routing. */

static size_t split_path(const char *path, const char **segs, size_t *lens) {
        size_t n = 0;
        const char *p = path;
        if (*p != '/')
                return SIZE_MAX;
        while (*p == '/') {
                p++;
                const char *e = strchr(p, '/');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                if (n == MAX_SEGMENTS)
                        return SIZE_MAX;
                segs[n] = p;
                lens[n++] = len;
                p += len;
        }
        return n;
}

/* Matches path against pattern, filling req params when req is non-NULL. */
static bool route_matches(const char *pattern, const char *path, cvm_http_req *req) {
        const char *ps[MAX_SEGMENTS], *us[MAX_SEGMENTS];
        size_t pl[MAX_SEGMENTS], ul[MAX_SEGMENTS];
        size_t np = split_path(pattern, ps, pl), nu = split_path(path, us, ul);
        if (np == SIZE_MAX || np != nu)
                return false;
        for (size_t i = 0; i < np; i++) {
                bool capture = pl[i] > 2 && ps[i][0] == '{' && ps[i][pl[i] - 1] == '}';
                if (capture ? ul[i] == 0 : (pl[i] != ul[i] || memcmp(ps[i], us[i], ul[i]) != 0))
                        return false;
        }
        if (!req)
                return true;
        for (size_t i = 0; i < np; i++) {
                if (!(pl[i] > 2 && ps[i][0] == '{') || req->n_params == MAX_PARAMS)
                        continue;
                req->params[req->n_params].name = ps[i] + 1;
                req->params[req->n_params].name_len = pl[i] - 2;
                req->params[req->n_params].value = strndup(us[i], ul[i]);
                if (!req->params[req->n_params].value)
                        return false;
                req->n_params++;
        }
        return true;
}

static bool method_matches(const char *route_method, const char *method) {
        return strcmp(route_method, method) == 0 ||
               (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

/* Responses. */

static void on_flush(uv_idle_t *handle);
static void listener_run(listener *l);

static void req_set_response(cvm_http_req *req, unsigned status, struct MHD_Response *resp) {
        if (!resp) {
                log_error("out of memory building a response for %s %s", req->method,
                          CVM_QUOTE(req->path));
                resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
                status = 500;
                if (!resp)
                        return;
        }
        for (size_t i = 0; i < req->n_headers; i++)
                MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
        req->response = resp;
        req->status = status;
        if (req->handled)
                req->srv->pending--;
        if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->conn);
                /* MHD does not wake its epoll fd on resume in external mode: it runs
                 * once more at the end of this loop turn, before the loop polls,
                 * and never from inside its own callbacks. A client woken on this
                 * CPU (about half the time: a Unix socket's wake-up is
                 * synchronous) waits for the turn's end either way. An idle
                 * handle keeps the poll from blocking when the answer comes while
                 * MHD runs. */
                uv_idle_start(&req->listener->flush, on_flush);
        }
}

void cvm_http_reply(cvm_http_req *req, unsigned status, const char *content_type, const void *data,
                    size_t len) {
        if (req->response) {
                log_error("second reply to %s %s ignored", req->method, CVM_QUOTE(req->path));
                return;
        }
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
        if (resp && content_type)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        req_set_response(req, status, resp);
}

void cvm_http_reply_json(cvm_http_req *req, unsigned status, json_t *body) {
        _cleanup_free_ char *text =
                body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
        json_decref(body);
        if (!text) {
                cvm_http_reply(req, 500, "application/json",
                               "{\"error\":\"internal\",\"message\":\"out of memory\"}\n", 46);
                return;
        }
        size_t len = strlen(text);
        /* A trailing newline keeps curl output readable. */
        char *nl = realloc(text, len + 2);
        if (nl) {
                text = nl;
                text[len++] = '\n';
                text[len] = '\0';
        }
        cvm_http_reply(req, status, "application/json", text, len);
}

void cvm_http_reply_error(cvm_http_req *req, unsigned status, const char *code, const char *fmt,
                          ...) {
        char msg[CVM_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (status >= 500)
                log_warn("%s %s: %u %s", req->method, CVM_QUOTE(req->path), status, msg);
        else
                log_debug("%s %s: %u %s", req->method, CVM_QUOTE(req->path), status, msg);
        cvm_http_reply_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
}

void cvm_http_reply_cvm_error(cvm_http_req *req, const cvm_error *err) {
        cvm_http_reply_error(req, cvm_http_status_for_errno(err->code),
                             cvm_error_code_name(err->code), "%s", err->message);
}

int cvm_http_req_add_header(cvm_http_req *req, const char *name, const char *value) {
        if (req->n_headers == MAX_HEADERS)
                return -E2BIG;
        char *n = strdup(name), *v = strdup(value);
        if (!n || !v) {
                free(n);
                free(v);
                return -ENOMEM;
        }
        req->headers[req->n_headers].name = n;
        req->headers[req->n_headers++].value = v;
        return 0;
}

/* Accessors. */

const char *cvm_http_req_method(const cvm_http_req *req) {
        return req->method;
}

const char *cvm_http_req_path(const cvm_http_req *req) {
        return req->path;
}

const char *cvm_http_req_param(const cvm_http_req *req, const char *name) {
        size_t len = strlen(name);
        for (size_t i = 0; i < req->n_params; i++)
                if (req->params[i].name_len == len && memcmp(req->params[i].name, name, len) == 0)
                        return req->params[i].value;
        return NULL;
}

const char *cvm_http_req_query(const cvm_http_req *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *cvm_http_req_header(const cvm_http_req *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const void *cvm_http_req_body(const cvm_http_req *req, size_t *ret_len) {
        *ret_len = req->body_len;
        return req->body ? req->body : "";
}

json_t *cvm_http_req_json(const cvm_http_req *req) {
        return req->json;
}

bool cvm_http_req_trusted(const cvm_http_req *req) {
        return req->listener->trusted;
}

const char *cvm_http_req_tenant(const cvm_http_req *req) {
        return req->tenant;
}

int cvm_http_req_set_tenant(cvm_http_req *req, const char *tenant) {
        char *t = tenant ? strdup(tenant) : NULL;
        if (tenant && !t)
                return -ENOMEM;
        free(req->tenant);
        req->tenant = t;
        return 0;
}

void cvm_http_server_set_auth(cvm_http_server *srv, cvm_http_auth_fn auth, void *userdata) {
        srv->auth = auth;
        srv->auth_data = userdata;
}

void cvm_http_req_set_cancel(cvm_http_req *req, cvm_http_cancel_cb cb, void *userdata) {
        req->cancel = cb;
        req->cancel_data = userdata;
}

/* Request lifecycle. */

static void req_free(cvm_http_req *req) {
        cvm_http_server *srv = req->srv;
        CVM_LIST_REMOVE(srv->reqs, req);
        srv->n_reqs--;
        if (req->handled && !req->response)
                srv->pending--;
        for (size_t i = 0; i < req->n_params; i++)
                free(req->params[i].value);
        for (size_t i = 0; i < req->n_headers; i++) {
                free(req->headers[i].name);
                free(req->headers[i].value);
        }
        if (req->response)
                MHD_destroy_response(req->response);
        json_decref(req->json);
        free(req->tenant);
        free(req->body);
        free(req->method);
        free(req->path);
        free(req);
}

static bool is_json_content_type(const char *ct) {
        if (!ct)
                return false;
        size_t n = strlen("application/json");
        return strncasecmp(ct, "application/json", n) == 0 &&
               (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Picks the route on the first call; answers 404/405/413/415 early. */
static void req_route(cvm_http_req *req) {
        cvm_http_server *srv = req->srv;
        char allow[128] = "";
        for (size_t i = 0; i < srv->n_routes; i++) {
                const cvm_http_route *r = &srv->routes[i];
                if (!route_matches(r->pattern, req->path, NULL))
                        continue;
                if (method_matches(r->method, req->method)) {
                        if (!route_matches(r->pattern, req->path, req)) {
                                cvm_http_reply_error(req, 500, "internal", "out of memory");
                                return;
                        }
                        req->route = r;
                        break;
                }
                if (!strstr(allow, r->method)) {
                        size_t l = strlen(allow);
                        snprintf(allow + l, sizeof(allow) - l, "%s%s", l ? ", " : "", r->method);
                        if (strcmp(r->method, "GET") == 0 && !strstr(allow, "HEAD"))
                                strncat(allow, ", HEAD", sizeof(allow) - strlen(allow) - 1);
                }
        }
        if (!req->route) {
                if (allow[0]) {
                        cvm_http_req_add_header(req, MHD_HTTP_HEADER_ALLOW, allow);
                        cvm_http_reply_error(req, 405, "method_not_allowed",
                                             "method %s is not allowed on %s (allowed: %s)",
                                             req->method, req->path, allow);
                } else {
                        cvm_http_reply_error(req, 404, "not_found", "no such endpoint: %s %s",
                                             req->method, CVM_QUOTE(req->path));
                }
                return;
        }
        if (srv->auth) {
                cvm_error err = {0};
                if (srv->auth(req, req->route->flags, srv->auth_data, &err) < 0) {
                        if (err.code == -EACCES)
                                cvm_http_req_add_header(req, "WWW-Authenticate", "Bearer");
                        unsigned status = err.code == -EACCES ? 401
                                          : err.code == -EPERM
                                                  ? 403
                                                  : cvm_http_status_for_errno(err.code);
                        cvm_http_reply_error(req, status,
                                             status == 401 ? "unauthenticated"
                                                           : cvm_error_code_name(err.code),
                                             "%s", err.message);
                        return;
                }
        }
        const char *cl = cvm_http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *te = cvm_http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        unsigned long long len = cl ? strtoull(cl, NULL, 10) : 0;
        if (len > srv->limits.max_body_bytes) {
                cvm_http_reply_error(req, 413, "payload_too_large",
                                     "request body of %llu bytes exceeds the limit of %llu bytes",
                                     len, (unsigned long long)srv->limits.max_body_bytes);
                return;
        }
        bool has_body = len > 0 || te;
        if ((req->route->flags & CVM_HTTP_JSON) && has_body &&
            !is_json_content_type(cvm_http_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
                cvm_http_reply_error(req, 415, "unsupported_media_type",
                                     "request body must have Content-Type: application/json");
                return;
        }
        if (len > 0 && !(req->body = malloc(len))) {
                cvm_http_reply_error(req, 503, "resource_exhausted",
                                     "out of memory for a %llu-byte body", len);
                return;
        }
        req->body_cap = len;
}

static void req_append(cvm_http_req *req, const char *data, size_t size) {
        uint64_t limit = req->srv->limits.max_body_bytes;
        if (req->body_too_large || req->body_len + size > limit) {
                req->body_too_large = true;
                return;
        }
        if (req->body_len + size > req->body_cap) {
                size_t cap = req->body_cap ? req->body_cap * 2 : 4096;
                while (cap < req->body_len + size)
                        cap *= 2;
                if (cap > limit)
                        cap = limit;
                char *b = realloc(req->body, cap);
                if (!b) {
                        req->body_too_large = true;
                        return;
                }
                req->body = b;
                req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, data, size);
        req->body_len += size;
}

static void req_dispatch(cvm_http_req *req) {
        cvm_http_server *srv = req->srv;
        if (req->body_too_large) {
                cvm_http_reply_error(req, 413, "payload_too_large",
                                     "request body exceeds the limit of %llu bytes",
                                     (unsigned long long)srv->limits.max_body_bytes);
                return;
        }
        if ((req->route->flags & CVM_HTTP_JSON) && req->body_len > 0) {
                cvm_error err = {0};
                if (cvm_json_parse_object(req->body, req->body_len, &req->json, &err) < 0) {
                        cvm_http_reply_error(req, 400, "invalid_argument", "%s", err.message);
                        return;
                }
        }
        if (srv->freed) {
                /* The last run before MHD stops may read new requests: a handler
                 * would suspend them, and MHD refuses to stop with any suspended. */
                cvm_http_reply_error(req, 503, "shutting_down", "the daemon is shutting down");
                return;
        }
        req->handled = true;
        srv->pending++;
        req->route->handler(req, srv->userdata);
}

/* The client of a suspended request went away: its owner forgets it (and
 * never answers), and the connection is resumed for MHD to close. */
static void req_gone(cvm_http_req *req) {
        cvm_http_cancel_cb cb = req->cancel;
        void *data = req->cancel_data;
        req->cancel = NULL;
        req->gone = true;
        log_info("%s %s: the client went away after %.3f ms: cancelled", req->method,
                 CVM_QUOTE(req->path), (double)(uv_hrtime() - req->started_ns) / 1e6);
        cb(req, data);
        if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->conn);
                uv_idle_start(&req->listener->flush, on_flush);
        }
}

/* Polls the sockets of this listener's suspended requests that can be
 * cancelled: a peer that closed or shut down its side (POLLRDHUP), or an
 * error, means nobody waits for the answer. Requests are freed only in MHD's
 * callbacks, never in here, so the list stays valid while owners cancel. */
static void on_gone_check(uv_timer_t *t) {
        listener *l = t->data;
        cvm_http_server *srv = l->srv;
        size_t n = 0, suspended = 0;
        for (cvm_http_req *r = srv->reqs; r; r = r->next)
                if (r->listener == l && r->suspended)
                        suspended++;
        if (!suspended)
                return;
        struct pollfd *fds = calloc(suspended, sizeof(*fds));
        cvm_http_req **reqs = calloc(suspended, sizeof(*reqs));
        if (fds && reqs) {
                for (cvm_http_req *r = srv->reqs; r; r = r->next)
                        if (r->listener == l && r->suspended && r->cancel && r->fd >= 0) {
                                fds[n] = (struct pollfd){.fd = r->fd, .events = POLLRDHUP};
                                reqs[n++] = r;
                        }
                if (n && poll(fds, n, 0) > 0)
                        for (size_t i = 0; i < n; i++)
                                if ((fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) &&
                                    reqs[i]->suspended && reqs[i]->cancel)
                                        req_gone(reqs[i]);
        }
        free(fds);
        free(reqs);
        uv_timer_start(t, on_gone_check, GONE_CHECK_MS, 0);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
        (void)version;
        listener *l = cls;
        cvm_http_server *srv = l->srv;
        cvm_http_req *req = *con_cls;
        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->srv = srv;
                req->listener = l;
                req->conn = conn;
                req->started_ns = uv_hrtime();
                req->method = strdup(method);
                req->path = strdup(url);
                CVM_LIST_PREPEND(srv->reqs, req);
                srv->n_reqs++;
                *con_cls = req;
                if (!req->method || !req->path)
                        return MHD_NO;
                req_route(req);
        } else if (req->gone) {
                /* Resumed only to be closed: the client is gone. */
                l->closing_gone = true;
                return MHD_NO;
        } else if (*upload_data_size) {
                if (!req->response)
                        req_append(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        } else if (!req->response && !req->handled) {
                req_dispatch(req);
        }
        if (req->response)
                return MHD_queue_response(conn, req->status, req->response);
        if (req->handled && !req->suspended) {
                /* The handler will answer later: park the connection. */
                req->suspended = true;
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                req->fd = ci ? ci->connect_fd : -1;
                MHD_suspend_connection(conn);
                if (!uv_is_active((uv_handle_t *)&l->gone_check))
                        uv_timer_start(&l->gone_check, on_gone_check, GONE_CHECK_MS, 0);
        }
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        (void)cls;
        (void)conn;
        cvm_http_req *req = *con_cls;
        if (!req)
                return;
        *con_cls = NULL;
        if (req->gone)
                req->listener->closing_gone = false;
        if (req->response) {
                log_debug("%s %s %u %.3fms", req->method, CVM_QUOTE(req->path), req->status,
                          (double)(uv_hrtime() - req->started_ns) / 1e6);
        } else if (req->handled && !req->gone) {
                log_info("%s %s: client went away before the reply (reason %d)", req->method,
                         CVM_QUOTE(req->path), (int)toe);
                if (req->cancel)
                        req->cancel(req, req->cancel_data);
        }
        req_free(req);
}

/* The loop side of each listener. */

static void on_poll(uv_poll_t *handle, int status, int events) {
        (void)status;
        (void)events;
        listener_run(handle->data);
}

static void on_timer(uv_timer_t *handle) {
        listener_run(handle->data);
}

static void on_flush(uv_idle_t *handle) {
        listener *l = handle->data;
        uv_idle_stop(handle);
        MHD_run(l->mhd);
        /* Answering re-adds the resumed connections to MHD's epoll set with
         * EPOLLOUT, ready at once: taken here, it costs no extra loop turn. */
        listener_run(l);
}

static void listener_run(listener *l) {
        MHD_run(l->mhd);
        MHD_UNSIGNED_LONG_LONG timeout;
        if (MHD_get_timeout(l->mhd, &timeout) == MHD_YES)
                uv_timer_start(&l->timer, on_timer, timeout, 0);
        else
                uv_timer_stop(&l->timer);
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
        listener *l = cls;
        char msg[512];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                msg[--n] = '\0';
        if (l->closing_gone && strstr(msg, "Application reported internal error")) {
                l->closing_gone = false;
                log_debug("http: %s (a cancelled request's connection)", msg);
                return;
        }
        log_warn("http: %s", msg);
}

int cvm_http_server_new(uv_loop_t *loop, const cvm_http_route *routes, size_t n_routes,
                        void *userdata, const cvm_http_limits *limits, cvm_http_server **ret,
                        cvm_error *err) {
        cvm_http_server *srv = calloc(1, sizeof(*srv));
        if (!srv)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        srv->loop = loop;
        srv->routes = routes;
        srv->n_routes = n_routes;
        srv->userdata = userdata;
        srv->limits = *limits;
        *ret = srv;
        return 0;
}

static void listener_closed(uv_handle_t *h) {
        listener *l = h->data;
        if (--l->handles_open == 0) {
                free(l->name);
                free(l);
        }
}

int cvm_http_server_listen_fd(cvm_http_server *srv, int fd, const char *name, bool trusted,
                              cvm_error *err) {
        listener *l = calloc(1, sizeof(*l));
        if (!l || !(l->name = strdup(name))) {
                free(l);
                close(fd);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        l->srv = srv;
        l->trusted = trusted;
        l->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                on_access, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, l, MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->limits.max_connections,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)srv->limits.connection_timeout_s,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
        if (!l->mhd) {
                close(fd);
                free(l->name);
                free(l);
                return cvm_error_set(err, -EIO, "cannot serve HTTP on %s (libmicrohttpd refused)",
                                     name);
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        int r = uv_poll_init(srv->loop, &l->poll, info->epoll_fd);
        if (r < 0) {
                /* MHD closes a listening socket it still holds when it stops:
                 * take it back first, so it is closed once. */
                MHD_socket q = MHD_quiesce_daemon(l->mhd);
                MHD_stop_daemon(l->mhd);
                if (q != MHD_INVALID_SOCKET)
                        close(q);
                free(l->name);
                free(l);
                return cvm_error_set(err, r, "uv_poll_init: %s", uv_strerror(r));
        }
        uv_timer_init(srv->loop, &l->timer);
        uv_idle_init(srv->loop, &l->flush);
        uv_timer_init(srv->loop, &l->gone_check);
        l->poll.data = l->timer.data = l->flush.data = l->gone_check.data = l;
        l->handles_open = 4;
        l->listening = true;
        uv_poll_start(&l->poll, UV_READABLE, on_poll);
        l->next = srv->listeners;
        srv->listeners = l;
        listener_run(l);
        return 0;
}

void cvm_http_server_stop_listening(cvm_http_server *srv) {
        for (listener *l = srv->listeners; l; l = l->next) {
                if (!l->listening)
                        continue;
                l->listening = false;
                MHD_socket fd = MHD_quiesce_daemon(l->mhd);
                if (fd != MHD_INVALID_SOCKET)
                        close(fd);
        }
}

size_t cvm_http_server_pending(cvm_http_server *srv) {
        return srv->pending;
}

void cvm_http_server_fail_pending(cvm_http_server *srv, const cvm_error *error) {
        for (cvm_http_req *r = srv->reqs; r; r = r->next)
                if (r->handled && !r->response && !r->gone)
                        cvm_http_reply_cvm_error(r, error);
}

void cvm_http_server_free(cvm_http_server *srv) {
        if (!srv)
                return;
        /* MHD refuses to stop with suspended connections: answer them first,
         * and from now on every new request at once. */
        srv->freed = true;
        cvm_error shutdown = {.code = -ESHUTDOWN, .message = "the daemon is shutting down"};
        cvm_http_server_fail_pending(srv, &shutdown);
        listener *l = srv->listeners;
        while (l) {
                listener *next = l->next;
                uv_poll_stop(&l->poll);
                uv_timer_stop(&l->timer);
                /* The failed requests' answers are written (or dropped) before MHD stops. */
                if (uv_is_active((uv_handle_t *)&l->flush)) {
                        uv_idle_stop(&l->flush);
                        MHD_run(l->mhd);
                }
                /* Completion callbacks free every request still open. */
                if (l->listening) {
                        MHD_socket fd = MHD_quiesce_daemon(l->mhd);
                        MHD_stop_daemon(l->mhd);
                        if (fd != MHD_INVALID_SOCKET)
                                close(fd);
                } else {
                        MHD_stop_daemon(l->mhd);
                }
                uv_close((uv_handle_t *)&l->poll, listener_closed);
                uv_close((uv_handle_t *)&l->timer, listener_closed);
                uv_close((uv_handle_t *)&l->flush, listener_closed);
                uv_close((uv_handle_t *)&l->gone_check, listener_closed);
                l = next;
        }
        free(srv);
}
