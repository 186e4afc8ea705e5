#include "agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define READ_CHUNK (64 * 1024)

typedef struct pending {
        struct pending *next;
        uint64_t id;
        uint64_t deadline_ns; /* The agent's timeout plus the grace: a RESULT is overdue after. */
        cvm_agent_result_cb cb;
        void *userdata;
} pending;

typedef struct attest_pending {
        struct attest_pending *next;
        uint64_t id;
        uint64_t deadline_ns;
        uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE]; /* To check the answer against. */
        cvm_agent_attest_cb cb;
        void *userdata;
} attest_pending;

/* A queued frame and the bytes it borrows (an INVOKE's copied body). */
typedef struct out_write {
        struct out_write *next;
        uv_write_t req;
        size_t sent; /* Bytes the socket took before the rest went to uv_write. */
        cvm_agent_msg msg;
        uint8_t body[];
} out_write;

/* The most frames one flush hands to the socket at once (three buffers each). */
#define FLUSH_FRAMES 16

struct cvm_agent_client {
        uv_loop_t *loop;
        uv_pipe_t conn;
        uv_timer_t heartbeat;
        uv_idle_t flush; /* Writes what the socket did not take, at the end of the turn. */
        out_write *out, **out_tail;
        int open_handles; /* The memory goes when this is 0 and the user has freed it. */
        cvm_agent_decoder dec;
        cvm_agent_client_opts opts;
        cvm_agent_client_cbs cbs;
        void *userdata;
        bool have_hello;
        cvm_agent_hello hello;
        bool shutting_down;
        bool closed; /* The connection ended; no more frames are sent or read. */
        bool freed;
        pending *pending;
        size_t n_pending;
        attest_pending *attests;
        size_t n_attests;
        uint64_t attest_ids; /* The last ATTEST id used; ids count from 1. */
        /* The agent's key from its first ATTEST_RESULT: later ones must repeat it. */
        uint8_t public_key[CVM_AGENT_MAX_PUBLIC_KEY];
        size_t public_key_len;
        uint64_t ping_sent, ping_acked;
        uint32_t misses;
};

static void release(cvm_agent_client *c) {
        cvm_agent_decoder_release(&c->dec);
        free(c);
}

static void on_handle_closed(uv_handle_t *h) {
        cvm_agent_client *c = h->data;
        if (--c->open_handles == 0 && c->freed)
                release(c);
}

/* Closes the handles and drops the frames not yet written. */
static void close_handles(cvm_agent_client *c) {
        uv_close((uv_handle_t *)&c->conn, on_handle_closed);
        uv_close((uv_handle_t *)&c->heartbeat, on_handle_closed);
        uv_close((uv_handle_t *)&c->flush, on_handle_closed);
        while (c->out) {
                out_write *w = c->out;
                c->out = w->next;
                free(w);
        }
        c->out_tail = &c->out;
}

static void drop_pending(cvm_agent_client *c) {
        while (c->pending) {
                pending *p = c->pending;
                c->pending = p->next;
                free(p);
        }
        c->n_pending = 0;
        while (c->attests) {
                attest_pending *a = c->attests;
                c->attests = a->next;
                free(a);
        }
        c->n_attests = 0;
}

static void close_conn(cvm_agent_client *c, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Ends the connection once: fails every pending invocation, then reports
 * on_closed. Stops early if a callback frees the client. */
static void close_conn(cvm_agent_client *c, int code, const char *fmt, ...) {
        if (c->closed)
                return;
        c->closed = true;
        cvm_error e = {.code = code};
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e.message, sizeof(e.message), fmt, ap);
        va_end(ap);
        if (code == 0)
                log_info("agent connection closed: %s", e.message);
        else
                log_warn("agent connection dropped: %s", e.message);
        close_handles(c);
        if (c->cbs.on_lost)
                c->cbs.on_lost(c, &e, c->userdata);

        cvm_error pe = {.code = code ? code : -ECANCELED};
        snprintf(pe.message, sizeof(pe.message), "agent connection %s: %.400s",
                 code ? "failed" : "shut down", e.message);
        while (c->pending && !c->freed) {
                pending *p = c->pending;
                c->pending = p->next;
                c->n_pending--;
                p->cb(c, p->id, NULL, &pe, p->userdata);
                free(p);
        }
        while (c->attests && !c->freed) {
                attest_pending *a = c->attests;
                c->attests = a->next;
                c->n_attests--;
                a->cb(c, NULL, &pe, a->userdata);
                free(a);
        }
        if (!c->freed && c->cbs.on_closed)
                c->cbs.on_closed(c, &e, c->userdata);
}

static void on_written(uv_write_t *req, int status) {
        cvm_agent_client *c = req->data;
        free((char *)req - offsetof(out_write, req));
        if (status < 0 && status != UV_ECANCELED)
                close_conn(c, -ECONNRESET, "writing to the agent: %s", uv_strerror(status));
}

/* The buffers of what is left of w's frame; returns how many (at most 3). */
static unsigned frame_bufs(const out_write *w, uv_buf_t *bufs, size_t *ret_len) {
        const uint8_t *p[3] = {w->msg.head, w->msg.part[0], w->msg.part[1]};
        size_t len[3] = {w->msg.head_len, w->msg.part_len[0], w->msg.part_len[1]};
        size_t skip = w->sent;
        unsigned n = 0;
        *ret_len = 0;
        for (int i = 0; i < 3; i++) {
                if (skip >= len[i]) {
                        skip -= len[i];
                        continue;
                }
                bufs[n++] = uv_buf_init((char *)p[i] + skip, (unsigned)(len[i] - skip));
                *ret_len += len[i] - skip;
                skip = 0;
        }
        return n;
}

/* Frames the socket did not take at once leave together at the end of the
 * loop turn, just before the loop polls. An idle handle, not a prepare one:
 * a frame queued while another flush runs keeps the poll from blocking until
 * it is written. What the socket still does not take goes to uv_write, in
 * order. */
static void on_flush(uv_idle_t *h) {
        cvm_agent_client *c = h->data;
        uv_idle_stop(h);
        while (c->out && !c->closed) {
                uv_buf_t bufs[FLUSH_FRAMES * 3];
                unsigned n = 0, frames = 0;
                size_t len, total = 0;
                for (out_write *w = c->out; w && frames < FLUSH_FRAMES; w = w->next, frames++) {
                        n += frame_bufs(w, bufs + n, &len);
                        total += len;
                }
                int k = uv_try_write((uv_stream_t *)&c->conn, bufs, n);
                if (k < 0 && k != UV_EAGAIN) {
                        close_conn(c, -ECONNRESET, "writing to the agent: %s", uv_strerror(k));
                        return;
                }
                size_t done = k > 0 ? (size_t)k : 0;
                while (c->out) {
                        out_write *w = c->out;
                        frame_bufs(w, bufs, &len);
                        if (done < len) {
                                w->sent += done;
                                break;
                        }
                        done -= len;
                        c->out = w->next;
                        free(w);
                }
                if (!c->out)
                        c->out_tail = &c->out;
                if ((size_t)(k > 0 ? k : 0) < total)
                        break;
        }
        /* The socket is full: the rest waits for it in uv_write's queue. */
        while (c->out && !c->closed) {
                out_write *w = c->out;
                c->out = w->next;
                if (!c->out)
                        c->out_tail = &c->out;
                uv_buf_t bufs[3];
                size_t len;
                unsigned n = frame_bufs(w, bufs, &len);
                w->req.data = c;
                int r = uv_write(&w->req, (uv_stream_t *)&c->conn, bufs, n, on_written);
                if (r < 0) {
                        free(w);
                        close_conn(c, -ECONNRESET, "writing to the agent: %s", uv_strerror(r));
                        return;
                }
        }
}

/* Sends w, which is freed when written. A frame with nothing queued before
 * it leaves at once: the agent, often woken on the other CPU, starts while
 * this loop turn goes on (a wait of ~10 us when the frame waited for the
 * turn's end). The rest of a frame the socket does not take, and frames
 * behind it, wait for the flush; so does an error, so that the connection
 * closes outside the caller's call. */
static int send_write(cvm_agent_client *c, out_write *w) {
        w->next = NULL;
        w->sent = 0;
        if (!c->out && !c->closed) {
                uv_buf_t bufs[3];
                size_t len;
                unsigned n = frame_bufs(w, bufs, &len);
                /* uv_try_write refuses while uv_write has frames queued. */
                int k = uv_try_write((uv_stream_t *)&c->conn, bufs, n);
                if (k > 0 && (size_t)k == len) {
                        free(w);
                        return 0;
                }
                if (k > 0)
                        w->sent = (size_t)k;
        }
        int r = uv_idle_start(&c->flush, on_flush);
        if (r < 0) {
                free(w);
                return r;
        }
        *c->out_tail = w;
        c->out_tail = &w->next;
        return 0;
}

static int send_empty(cvm_agent_client *c, cvm_agent_msg_type type, uint64_t id) {
        out_write *w = malloc(sizeof(*w));
        if (!w)
                return -ENOMEM;
        cvm_agent_encode_empty(type, id, &w->msg);
        return send_write(c, w);
}

static void on_heartbeat(uv_timer_t *t) {
        cvm_agent_client *c = t->data;
        if (c->ping_acked < c->ping_sent && ++c->misses >= c->opts.heartbeat_misses) {
                close_conn(c, -ETIMEDOUT, "agent missed %" PRIu32 " heartbeats of %" PRIu32 " ms",
                           c->misses, c->opts.heartbeat_interval_ms);
                return;
        }
        uint64_t now = uv_hrtime();
        for (pending *p = c->pending; p; p = p->next)
                if (now > p->deadline_ns) {
                        close_conn(c, -ETIMEDOUT,
                                   "invocation %" PRIu64 " overdue: no RESULT %" PRIu32
                                   " ms after its timeout",
                                   p->id, c->opts.result_grace_ms);
                        return;
                }
        for (attest_pending *a = c->attests; a; a = a->next)
                if (now > a->deadline_ns) {
                        close_conn(c, -ETIMEDOUT,
                                   "attestation %" PRIu64 " overdue: no ATTEST_RESULT in %" PRIu32
                                   " ms",
                                   a->id, c->opts.attest_timeout_ms);
                        return;
                }
        int r = send_empty(c, CVM_AGENT_MSG_PING, c->ping_sent + 1);
        if (r < 0)
                close_conn(c, -ECONNRESET, "sending a heartbeat: %s", strerror(-r));
        else
                c->ping_sent++;
}

static void handle_hello(cvm_agent_client *c, const cvm_agent_frame *f) {
        cvm_error err = {0};
        cvm_agent_hello h;
        if (c->have_hello) {
                close_conn(c, -EPROTO, "protocol violation: second HELLO");
                return;
        }
        if (cvm_agent_hello_decode(f, &h, &err) < 0) {
                close_conn(c, -EPROTO, "protocol violation: %s", err.message);
                return;
        }
        if (h.proto_version != CVM_AGENT_PROTO_VERSION) {
                close_conn(c, -EPROTO, "agent %s speaks protocol version %u, not %u",
                           CVM_QUOTE(h.agent_version), h.proto_version, CVM_AGENT_PROTO_VERSION);
                return;
        }
        uint64_t largest = (uint64_t)CVM_AGENT_RESULT_FIXED + h.max_response + h.max_stderr;
        if (largest > c->opts.max_payload) {
                close_conn(c, -EMSGSIZE,
                           "agent results may reach %" PRIu64
                           " bytes, above the frame limit %" PRIu32,
                           largest, c->opts.max_payload);
                return;
        }
        c->hello = h;
        c->have_hello = true;
        /* Heartbeats start with the agent: before its HELLO, the host's own
         * boot timeout bounds the wait, however long a guest boots. */
        if (c->opts.heartbeat_interval_ms)
                uv_timer_start(&c->heartbeat, on_heartbeat, c->opts.heartbeat_interval_ms,
                               c->opts.heartbeat_interval_ms);
        log_debug("agent %s: protocol %u, concurrency %u, capabilities 0x%" PRIx32,
                  CVM_QUOTE(h.agent_version), h.proto_version, h.max_concurrency, h.capabilities);
        if (c->cbs.on_hello)
                c->cbs.on_hello(c, &c->hello, c->userdata);
}

static void handle_result(cvm_agent_client *c, const cvm_agent_frame *f) {
        cvm_error err = {0};
        pending **pp = &c->pending;
        while (*pp && (*pp)->id != f->id)
                pp = &(*pp)->next;
        if (!*pp) {
                close_conn(c, -EPROTO, "protocol violation: RESULT for unknown invocation %" PRIu64,
                           f->id);
                return;
        }
        cvm_agent_result r;
        if (cvm_agent_result_decode(f, &r, &err) < 0) {
                close_conn(c, -EPROTO, "protocol violation: %s", err.message);
                return;
        }
        if (r.output_len > c->hello.max_response || r.stderr_len > c->hello.max_stderr) {
                close_conn(c, -EPROTO,
                           "protocol violation: RESULT %" PRIu64 " exceeds the agent's own limits",
                           f->id);
                return;
        }
        pending *p = *pp;
        *pp = p->next;
        c->n_pending--;
        p->cb(c, p->id, &r, NULL, p->userdata);
        free(p);
}

static void handle_attest_result(cvm_agent_client *c, const cvm_agent_frame *f) {
        cvm_error err = {0};
        attest_pending **pp = &c->attests;
        while (*pp && (*pp)->id != f->id)
                pp = &(*pp)->next;
        if (!*pp) {
                close_conn(c, -EPROTO,
                           "protocol violation: ATTEST_RESULT for unknown request %" PRIu64, f->id);
                return;
        }
        cvm_agent_attest_result r;
        if (cvm_agent_attest_result_decode(f, &r, &err) < 0 ||
            cvm_agent_attest_verify(&r, (*pp)->nonce, &err) < 0) {
                close_conn(c, -EPROTO, "protocol violation: %s", err.message);
                return;
        }
        /* The key is the VM's identity for its life: a second one means a broken agent. */
        if (c->public_key_len == 0) {
                memcpy(c->public_key, r.public_key, r.public_key_len);
                c->public_key_len = r.public_key_len;
        } else if (r.public_key_len != c->public_key_len ||
                   memcmp(r.public_key, c->public_key, r.public_key_len) != 0) {
                close_conn(c, -EPROTO,
                           "protocol violation: ATTEST_RESULT %" PRIu64 " changes the agent's key",
                           f->id);
                return;
        }
        attest_pending *a = *pp;
        *pp = a->next;
        c->n_attests--;
        a->cb(c, &r, NULL, a->userdata);
        free(a);
}

static void handle_frame(cvm_agent_client *c, const cvm_agent_frame *f) {
        if (!c->have_hello && f->type != CVM_AGENT_MSG_HELLO) {
                close_conn(c, -EPROTO, "protocol violation: %s before HELLO",
                           cvm_agent_msg_type_name(f->type));
                return;
        }
        switch (f->type) {
        case CVM_AGENT_MSG_HELLO: handle_hello(c, f); return;
        case CVM_AGENT_MSG_RESULT: handle_result(c, f); return;
        case CVM_AGENT_MSG_ATTEST_RESULT: handle_attest_result(c, f); return;
        case CVM_AGENT_MSG_PONG:
                if (f->len != 0 || f->id <= c->ping_acked || f->id > c->ping_sent) {
                        close_conn(c, -EPROTO,
                                   "protocol violation: PONG %" PRIu64 " answers no PING", f->id);
                        return;
                }
                c->ping_acked = f->id;
                c->misses = 0;
                return;
        case CVM_AGENT_MSG_SHUTDOWN:
                if (!c->shutting_down || f->len != 0) {
                        close_conn(c, -EPROTO, "protocol violation: unrequested SHUTDOWN");
                        return;
                }
                close_conn(c, 0, "agent acknowledged shutdown");
                return;
        default:
                close_conn(c, -EPROTO, "protocol violation: unexpected %s from the agent",
                           cvm_agent_msg_type_name(f->type));
                return;
        }
}

/* One read buffer per thread serves every connection: on_read consumes it
 * before the loop reads again (the decoder copies partial frames), and a
 * buffer per VM would be most of the daemon's memory per VM. */
static _Thread_local uint8_t readbuf[READ_CHUNK];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void)h;
        (void)suggested;
        *buf = uv_buf_init((char *)readbuf, sizeof(readbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        cvm_agent_client *c = s->data;
        if (nread < 0) {
                if (c->shutting_down && nread == UV_EOF)
                        close_conn(c, 0, "agent closed the connection during shutdown");
                else
                        close_conn(c, -ECONNRESET, "%s",
                                   nread == UV_EOF ? "agent closed the connection"
                                                   : uv_strerror((int)nread));
                return;
        }
        const uint8_t *p = (const uint8_t *)buf->base;
        size_t len = (size_t)nread;
        /* A callback may end the connection or free the client: stop there. */
        while (len > 0 && !c->closed) {
                cvm_agent_frame f;
                size_t used;
                cvm_error err = {0};
                int r = cvm_agent_decoder_feed(&c->dec, p, len, &used, &f, &err);
                if (r < 0) {
                        close_conn(c, r, "protocol violation: %s", err.message);
                        return;
                }
                p += used;
                len -= used;
                if (r == 1)
                        handle_frame(c, &f);
        }
}

int cvm_agent_client_new(uv_loop_t *loop, int fd, const cvm_agent_client_opts *opts,
                         const cvm_agent_client_cbs *cbs, void *userdata, cvm_agent_client **ret,
                         cvm_error *err) {
        /* Nothing the daemon spawns may inherit a VM's agent connection. */
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                int r = -errno;
                close(fd);
                return cvm_error_set_errno(err, r, "agent connection fd %d", fd);
        }
        cvm_agent_client *c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        c->loop = loop;
        c->opts = opts ? *opts : (cvm_agent_client_opts){0};
        if (!c->opts.max_payload)
                c->opts.max_payload = CVM_AGENT_DEFAULT_MAX_PAYLOAD;
        if (!c->opts.heartbeat_misses)
                c->opts.heartbeat_misses = 3;
        if (!c->opts.result_grace_ms)
                c->opts.result_grace_ms = 5000;
        if (!c->opts.attest_timeout_ms)
                c->opts.attest_timeout_ms = 30000;
        if (cbs)
                c->cbs = *cbs;
        c->userdata = userdata;
        cvm_agent_decoder_init(&c->dec, c->opts.max_payload);
        uv_pipe_init(loop, &c->conn, 0);
        uv_timer_init(loop, &c->heartbeat);
        uv_idle_init(loop, &c->flush);
        c->conn.data = c->heartbeat.data = c->flush.data = c;
        c->open_handles = 3;
        c->out_tail = &c->out;
        int r = uv_pipe_open(&c->conn, fd);
        if (r < 0)
                close(fd);
        else
                r = uv_read_start((uv_stream_t *)&c->conn, on_alloc, on_read);
        if (r < 0) {
                c->closed = true;
                c->freed = true;
                close_handles(c);
                return cvm_error_set(err, r, "agent connection fd %d: %s", fd, uv_strerror(r));
        }
        *ret = c;
        return 0;
}

int cvm_agent_client_invoke(cvm_agent_client *c, uint64_t id, uint32_t timeout_ms, const void *body,
                            size_t len, cvm_agent_result_cb cb, void *userdata, cvm_error *err) {
        if (c->closed || !c->have_hello)
                return cvm_error_set(err, -ENOTCONN, "invocation %" PRIu64 ": agent %s", id,
                                     c->closed ? "connection closed" : "not ready");
        if (c->shutting_down)
                return cvm_error_set(err, -ESHUTDOWN, "invocation %" PRIu64 ": agent shutting down",
                                     id);
        for (pending *p = c->pending; p; p = p->next)
                if (p->id == id)
                        return cvm_error_set(err, -EEXIST, "invocation %" PRIu64 " already pending",
                                             id);
        if (len > c->hello.max_request - CVM_AGENT_INVOKE_FIXED)
                return cvm_error_set(err, -EMSGSIZE,
                                     "invocation %" PRIu64 ": body of %zu bytes exceeds the "
                                     "agent's limit of %" PRIu32,
                                     id, len, c->hello.max_request - CVM_AGENT_INVOKE_FIXED);
        pending *p = calloc(1, sizeof(*p));
        out_write *w = malloc(sizeof(*w) + len);
        if (!p || !w) {
                free(p);
                free(w);
                return cvm_error_set(err, -ENOMEM, "invocation %" PRIu64 ": out of memory", id);
        }
        if (len)
                memcpy(w->body, body, len);
        int r = cvm_agent_encode_invoke(id, timeout_ms, w->body, len, &w->msg, err);
        if (r == 0) {
                r = send_write(c, w);
                if (r < 0)
                        cvm_error_set(err, r, "invocation %" PRIu64 ": %s", id, uv_strerror(r));
        } else {
                free(w);
        }
        if (r < 0) {
                free(p);
                return r;
        }
        *p = (pending){
                .next = c->pending,
                .id = id,
                .deadline_ns = uv_hrtime() +
                               ((uint64_t)timeout_ms + c->opts.result_grace_ms) * UINT64_C(1000000),
                .cb = cb,
                .userdata = userdata,
        };
        c->pending = p;
        c->n_pending++;
        return 0;
}

int cvm_agent_client_attest(cvm_agent_client *c, const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                            cvm_agent_attest_cb cb, void *userdata, cvm_error *err) {
        if (c->closed || !c->have_hello)
                return cvm_error_set(err, -ENOTCONN, "attestation: agent %s",
                                     c->closed ? "connection closed" : "not ready");
        if (c->shutting_down)
                return cvm_error_set(err, -ESHUTDOWN, "attestation: agent shutting down");
        /* An old agent would drop the connection on an ATTEST: it is never sent one. */
        if (!(c->hello.capabilities & CVM_AGENT_CAP_ATTEST) ||
            c->hello.max_request < CVM_AGENT_ATTEST_NONCE_SIZE)
                return cvm_error_set(err, -ENOTSUP, "attestation: agent %s does not attest",
                                     CVM_QUOTE(c->hello.agent_version));
        if (c->opts.max_payload < CVM_AGENT_ATTEST_RESULT_MAX)
                return cvm_error_set(err, -EMSGSIZE,
                                     "attestation: the frame limit %" PRIu32
                                     " is below the largest ATTEST_RESULT",
                                     c->opts.max_payload);
        if (c->n_attests >= CVM_AGENT_MAX_ATTEST_INFLIGHT)
                return cvm_error_set(err, -EBUSY, "attestation: %d requests already pending",
                                     CVM_AGENT_MAX_ATTEST_INFLIGHT);
        attest_pending *a = calloc(1, sizeof(*a));
        out_write *w = malloc(sizeof(*w));
        if (!a || !w) {
                free(a);
                free(w);
                return cvm_error_set(err, -ENOMEM, "attestation: out of memory");
        }
        uint64_t id = c->attest_ids + 1;
        cvm_agent_encode_attest(id, nonce, &w->msg);
        int r = send_write(c, w);
        if (r < 0) {
                free(a);
                return cvm_error_set(err, r, "attestation %" PRIu64 ": %s", id, uv_strerror(r));
        }
        c->attest_ids = id;
        *a = (attest_pending){
                .next = c->attests,
                .id = id,
                .deadline_ns =
                        uv_hrtime() + (uint64_t)c->opts.attest_timeout_ms * UINT64_C(1000000),
                .cb = cb,
                .userdata = userdata,
        };
        memcpy(a->nonce, nonce, sizeof(a->nonce));
        c->attests = a;
        c->n_attests++;
        return 0;
}

int cvm_agent_client_shutdown(cvm_agent_client *c, cvm_error *err) {
        if (c->closed)
                return cvm_error_set(err, -ENOTCONN, "agent connection closed");
        if (c->shutting_down)
                return 0;
        int r = send_empty(c, CVM_AGENT_MSG_SHUTDOWN, 0);
        if (r < 0)
                return cvm_error_set(err, r, "sending SHUTDOWN to the agent: %s", strerror(-r));
        c->shutting_down = true;
        return 0;
}

const cvm_agent_hello *cvm_agent_client_hello(const cvm_agent_client *c) {
        return c->have_hello ? &c->hello : NULL;
}

size_t cvm_agent_client_pending(const cvm_agent_client *c) {
        return c->n_pending;
}

size_t cvm_agent_client_attests_pending(const cvm_agent_client *c) {
        return c->n_attests;
}

void cvm_agent_client_free(cvm_agent_client *c) {
        if (!c || c->freed)
                return;
        c->freed = true;
        drop_pending(c);
        if (!c->closed) {
                c->closed = true;
                close_handles(c);
        } else if (c->open_handles == 0) {
                release(c);
        }
}
