#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sev-guest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "agent_proto.h"
#include "le.h"
#include "log.h"
#include "version.h"

#define READ_CHUNK (64 * 1024)

/* Why the agent killed a handler before it finished on its own; the first reason wins. */
typedef enum kill_reason {
        KILL_NONE,
        KILL_TIMEOUT,
        KILL_TOO_LARGE,
        KILL_ERROR, /* The agent failed supervising it; error says how. */
        KILL_STOPPING,
} kill_reason;

typedef struct invocation invocation;
typedef struct attestation attestation;

struct cvm_agent {
        uv_loop_t *loop;
        uv_pipe_t conn;
        cvm_agent_decoder dec;
        char *const *argv;
        uint16_t concurrency;
        uint32_t max_request, max_response, max_stderr;
        invocation *invocations; /* Every live one, running or finishing. */
        size_t n_invocations;
        uint16_t n_running;
        /* The VM's identity: generated at start, never written anywhere; the
         * private half is for decrypting end-to-end encrypted invocations. */
        EVP_PKEY *key;
        uint8_t *public_key; /* Its DER SubjectPublicKeyInfo, as sent in ATTEST_RESULT. */
        size_t public_key_len;
        char *sev_guest;
        attestation *attests; /* Every live one: in the thread pool or being written. */
        size_t n_attests;
        bool stopping;     /* No more frames are read; waiting for invocations to end. */
        bool ack_shutdown; /* Stopping because of SHUTDOWN: acknowledge before closing. */
        uint64_t shutdown_id;
        int stop_status;
        int exit_status; /* Set when the connection has closed. */
        bool freed;
        uint8_t readbuf[READ_CHUNK];
        uint8_t errbuf[READ_CHUNK];
};

struct invocation {
        cvm_agent *agent;
        invocation *next;
        uint64_t id;
        int refs; /* One per handle not yet closed, one while running, one per pending write. */
        bool running;
        uv_process_t proc;
        uv_pipe_t in, out, err;
        uv_timer_t timer;
        uv_write_t stdin_req, result_req;
        int pid; /* 0 until spawned. */
        bool exited;
        int64_t exit_status;
        int term_signal;
        kill_reason killed;
        uint64_t start_ns;
        uint8_t *body;
        size_t body_len;
        uint8_t *out_buf;
        size_t out_len, out_cap;
        uint8_t *err_tail;
        size_t err_len;
        char error[256]; /* Why the agent could not start or supervise the handler. */
};

/* One ATTEST: the report is requested on the thread pool, since the
 * firmware's answer comes through the (untrusted, possibly slow) host and must
 * not stall the agent's loop. */
struct attestation {
        uv_work_t work;
        uv_write_t req;
        cvm_agent *agent;
        attestation *next;
        uint64_t id;
        const char *device;             /* The agent's, which outlives this. */
        bool writing;                   /* The result is being written: no longer in the pool. */
        uint32_t resp_status;           /* The firmware's MSG_REPORT_RSP status, for the log. */
        cvm_agent_attest_result result; /* Borrows the agent's key and report below. */
        uint8_t report[CVM_AGENT_SNP_REPORT_MAX];
};

/* A message with no borrowed parts that outlives the call that queued it. */
typedef struct small_write {
        uv_write_t req;
        cvm_agent_msg msg;
        bool close_after; /* The SHUTDOWN acknowledgement: close the connection once sent. */
} small_write;

static void agent_check(cvm_agent *a);
static void agent_stop(cvm_agent *a, int status);
static void free_key(cvm_agent *a);

static void close_if_open(uv_handle_t *h, uv_close_cb cb) {
        if (!uv_is_closing(h))
                uv_close(h, cb);
}

static size_t msg_bufs(cvm_agent_msg *m, uv_buf_t bufs[3]) {
        size_t n = 0;
        bufs[n++] = uv_buf_init((char *)m->head, (unsigned)m->head_len);
        for (int i = 0; i < 2; i++)
                if (m->part_len[i] > 0)
                        bufs[n++] = uv_buf_init((char *)m->part[i], (unsigned)m->part_len[i]);
        return n;
}

/* ---- Writing to the host ---- */

static void on_conn_closed(uv_handle_t *h) {
        cvm_agent *a = h->data;
        a->exit_status = a->stop_status;
        agent_check(a);
}

static void write_failed(cvm_agent *a, int status) {
        if (status == UV_ECANCELED)
                return;
        log_error("agent: writing to the host failed: %s", uv_strerror(status));
        agent_stop(a, 1);
}

static void on_small_written(uv_write_t *req, int status) {
        small_write *w = (small_write *)req;
        cvm_agent *a = req->data;
        bool close_after = w->close_after;
        free(w);
        if (status < 0)
                write_failed(a, status);
        if (close_after)
                close_if_open((uv_handle_t *)&a->conn, on_conn_closed);
}

static int send_small(cvm_agent *a, const cvm_agent_msg *msg, bool close_after) {
        if (uv_is_closing((uv_handle_t *)&a->conn))
                return -ESHUTDOWN;
        small_write *w = malloc(sizeof(*w));
        if (!w) {
                log_error("agent: out of memory queueing a message to the host");
                agent_stop(a, 1);
                return -ENOMEM;
        }
        w->msg = *msg;
        w->close_after = close_after;
        w->req.data = a;
        uv_buf_t bufs[3];
        size_t n = msg_bufs(&w->msg, bufs);
        int r = uv_write(&w->req, (uv_stream_t *)&a->conn, bufs, (unsigned)n, on_small_written);
        if (r < 0) {
                free(w);
                write_failed(a, r);
        }
        return r;
}

/* ---- Invocations ---- */

static void inv_unref(invocation *inv) {
        if (--inv->refs > 0)
                return;
        cvm_agent *a = inv->agent;
        for (invocation **p = &a->invocations; *p; p = &(*p)->next)
                if (*p == inv) {
                        *p = inv->next;
                        break;
                }
        a->n_invocations--;
        free(inv->body);
        free(inv->out_buf);
        free(inv->err_tail);
        free(inv);
        agent_check(a);
}

static void on_inv_handle_closed(uv_handle_t *h) {
        inv_unref(h->data);
}

static void kill_group(invocation *inv, kill_reason why) {
        if (inv->killed == KILL_NONE)
                inv->killed = why;
        /* Once the leader is reaped its group may be empty: ESRCH is expected. */
        if (inv->pid > 0 && kill(-inv->pid, SIGKILL) < 0 && errno != ESRCH)
                log_warn("agent: invocation %" PRIu64 ": killing process group %d: %s", inv->id,
                         inv->pid, strerror(errno));
}

static void build_result(invocation *inv, cvm_agent_result *r) {
        *r = (cvm_agent_result){
                .exec_us = (uv_hrtime() - inv->start_ns) / 1000,
                .stderr_tail = inv->err_tail,
                .stderr_len = inv->err_len,
        };
        switch (inv->killed) {
        case KILL_ERROR:
                r->status = CVM_AGENT_STATUS_SPAWN_ERROR;
                r->stderr_tail = (const uint8_t *)inv->error;
                r->stderr_len = strlen(inv->error);
                return;
        case KILL_TIMEOUT: r->status = CVM_AGENT_STATUS_TIMEOUT; return;
        case KILL_TOO_LARGE: r->status = CVM_AGENT_STATUS_TOO_LARGE; return;
        case KILL_NONE:
        case KILL_STOPPING: break;
        }
        r->output = inv->out_buf;
        r->output_len = inv->out_len;
        if (inv->term_signal > 0) {
                r->status = CVM_AGENT_STATUS_FAILED;
                r->term_signal = (uint8_t)inv->term_signal;
        } else if (inv->exit_status != 0) {
                r->status = CVM_AGENT_STATUS_FAILED;
                r->exit_code = (uint16_t)(inv->exit_status & 0xff);
        } else {
                r->status = CVM_AGENT_STATUS_OK;
        }
}

static void on_result_written(uv_write_t *req, int status) {
        invocation *inv = req->data;
        if (status < 0)
                write_failed(inv->agent, status);
        inv_unref(inv);
}

static void send_result(invocation *inv) {
        cvm_agent *a = inv->agent;
        if (a->stopping || uv_is_closing((uv_handle_t *)&a->conn)) {
                log_info("agent: invocation %" PRIu64 ": abandoned: the agent is stopping",
                         inv->id);
                return;
        }
        cvm_agent_result r;
        build_result(inv, &r);
        log_info("agent: invocation %" PRIu64 ": %s (exit code %u, signal %u), %zu bytes out, "
                 "%" PRIu64 " us",
                 inv->id, cvm_agent_status_name(r.status), r.exit_code, r.term_signal, r.output_len,
                 r.exec_us);
        cvm_agent_msg msg;
        cvm_error err = {0};
        if (cvm_agent_encode_result(inv->id, &r, &msg, &err) < 0) {
                log_error("agent: invocation %" PRIu64 ": %s", inv->id, err.message);
                agent_stop(a, 1);
                return;
        }
        uv_buf_t bufs[3];
        size_t n = msg_bufs(&msg, bufs);
        inv->result_req.data = inv;
        int ret = uv_write(&inv->result_req, (uv_stream_t *)&a->conn, bufs, (unsigned)n,
                           on_result_written);
        if (ret < 0)
                write_failed(a, ret);
        else
                inv->refs++;
}

/* An invocation is complete when the handler has exited (or never started)
 * and both output pipes are closed (at EOF, or early by a kill). */
static void inv_maybe_complete(invocation *inv) {
        if (!inv->running)
                return;
        if (inv->pid > 0 && !(inv->exited && uv_is_closing((uv_handle_t *)&inv->out) &&
                              uv_is_closing((uv_handle_t *)&inv->err)))
                return;
        inv->running = false;
        inv->agent->n_running--;
        close_if_open((uv_handle_t *)&inv->proc, on_inv_handle_closed);
        close_if_open((uv_handle_t *)&inv->in, on_inv_handle_closed);
        close_if_open((uv_handle_t *)&inv->out, on_inv_handle_closed);
        close_if_open((uv_handle_t *)&inv->err, on_inv_handle_closed);
        close_if_open((uv_handle_t *)&inv->timer, on_inv_handle_closed);
        send_result(inv);
        inv_unref(inv);
}

/* Stops reading the handler's output: whatever it writes after a kill is moot. */
static void inv_abort(invocation *inv, kill_reason why) {
        kill_group(inv, why);
        close_if_open((uv_handle_t *)&inv->out, on_inv_handle_closed);
        close_if_open((uv_handle_t *)&inv->err, on_inv_handle_closed);
        inv_maybe_complete(inv);
}

static void on_handler_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
        invocation *inv = proc->data;
        inv->exited = true;
        inv->exit_status = exit_status;
        inv->term_signal = term_signal;
        /* Whatever the handler left running in its group goes with it. */
        kill_group(inv, KILL_NONE);
        inv_maybe_complete(inv);
}

static void on_timeout(uv_timer_t *t) {
        invocation *inv = t->data;
        log_warn("agent: invocation %" PRIu64 ": timed out; killing process group %d", inv->id,
                 inv->pid);
        inv_abort(inv, KILL_TIMEOUT);
}

static void out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        invocation *inv = h->data;
        /* One byte beyond the limit is enough to know the limit was passed. */
        size_t limit = (size_t)inv->agent->max_response + 1;
        if (inv->out_cap - inv->out_len < suggested / 4 && inv->out_cap < limit) {
                size_t cap = inv->out_cap ? inv->out_cap * 2 : suggested;
                if (cap > limit)
                        cap = limit;
                uint8_t *p = realloc(inv->out_buf, cap);
                if (!p) {
                        *buf = uv_buf_init(NULL, 0); /* Read fails with UV_ENOBUFS. */
                        return;
                }
                inv->out_buf = p;
                inv->out_cap = cap;
        }
        *buf = uv_buf_init((char *)inv->out_buf + inv->out_len,
                           (unsigned)(inv->out_cap - inv->out_len));
}

static void on_out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        invocation *inv = s->data;
        (void)buf;
        if (nread > 0) {
                inv->out_len += (size_t)nread;
                if (inv->out_len > inv->agent->max_response) {
                        log_warn("agent: invocation %" PRIu64 ": response exceeds %" PRIu32
                                 " bytes; killing process group %d",
                                 inv->id, inv->agent->max_response, inv->pid);
                        inv_abort(inv, KILL_TOO_LARGE);
                }
        } else if (nread == UV_ENOBUFS) {
                snprintf(inv->error, sizeof(inv->error),
                         "agent: out of memory buffering the handler's output");
                log_error("agent: invocation %" PRIu64 ": %s", inv->id, inv->error);
                inv_abort(inv, KILL_ERROR);
        } else if (nread < 0) {
                close_if_open((uv_handle_t *)s, on_inv_handle_closed);
                inv_maybe_complete(inv);
        }
}

static void err_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        invocation *inv = h->data;
        (void)suggested;
        *buf = uv_buf_init((char *)inv->agent->errbuf, sizeof(inv->agent->errbuf));
}

/* Keeps the last max_stderr bytes. */
static void tail_append(invocation *inv, const uint8_t *p, size_t n) {
        size_t cap = inv->agent->max_stderr;
        if (n >= cap) {
                memcpy(inv->err_tail, p + n - cap, cap);
                inv->err_len = cap;
                return;
        }
        if (inv->err_len + n > cap) {
                size_t drop = inv->err_len + n - cap;
                memmove(inv->err_tail, inv->err_tail + drop, inv->err_len - drop);
                inv->err_len -= drop;
        }
        memcpy(inv->err_tail + inv->err_len, p, n);
        inv->err_len += n;
}

static void on_err_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        invocation *inv = s->data;
        if (nread > 0) {
                tail_append(inv, (const uint8_t *)buf->base, (size_t)nread);
        } else if (nread < 0) {
                close_if_open((uv_handle_t *)s, on_inv_handle_closed);
                inv_maybe_complete(inv);
        }
}

static void on_stdin_written(uv_write_t *req, int status) {
        invocation *inv = req->data;
        /* A handler may exit without reading its input (EPIPE): not an error. */
        if (status < 0 && status != UV_EPIPE && status != UV_ECANCELED)
                log_warn("agent: invocation %" PRIu64 ": writing stdin: %s", inv->id,
                         uv_strerror(status));
        free(inv->body);
        inv->body = NULL;
        close_if_open((uv_handle_t *)&inv->in, on_inv_handle_closed);
}

static void inv_start(cvm_agent *a, uint64_t id, const cvm_agent_invoke *req) {
        invocation *inv = calloc(1, sizeof(*inv));
        uint8_t *tail = malloc(a->max_stderr);
        uint8_t *body = req->body_len ? malloc(req->body_len) : NULL;
        if (!inv || !tail || (req->body_len && !body)) {
                free(inv);
                free(tail);
                free(body);
                log_error("agent: invocation %" PRIu64 ": out of memory", id);
                cvm_agent_result r = {.status = CVM_AGENT_STATUS_SPAWN_ERROR};
                cvm_agent_msg msg;
                if (cvm_agent_encode_result(id, &r, &msg, NULL) == 0)
                        send_small(a, &msg, false);
                return;
        }
        if (req->body_len)
                memcpy(body, req->body, req->body_len);
        *inv = (invocation){
                .agent = a,
                .id = id,
                .refs = 6, /* Five handles, and running. */
                .running = true,
                .start_ns = uv_hrtime(),
                .body = body,
                .body_len = req->body_len,
                .err_tail = tail,
                .next = a->invocations,
        };
        a->invocations = inv;
        a->n_invocations++;
        a->n_running++;
        uv_pipe_init(a->loop, &inv->in, 0);
        uv_pipe_init(a->loop, &inv->out, 0);
        uv_pipe_init(a->loop, &inv->err, 0);
        uv_timer_init(a->loop, &inv->timer);
        inv->proc.data = inv->in.data = inv->out.data = inv->err.data = inv->timer.data = inv;
        inv->stdin_req.data = inv;

        uv_stdio_container_t stdio[3] = {
                {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
                 .data.stream = (uv_stream_t *)&inv->in},
                {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                 .data.stream = (uv_stream_t *)&inv->out},
                {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                 .data.stream = (uv_stream_t *)&inv->err},
        };
        uv_process_options_t po = {
                .exit_cb = on_handler_exit,
                .file = a->argv[0],
                .args = (char **)a->argv,
                /* A new session makes the handler the leader of its own process group. */
                .flags = UV_PROCESS_DETACHED,
                .stdio_count = 3,
                .stdio = stdio,
        };
        int r = uv_spawn(a->loop, &inv->proc, &po);
        /* The process handle is initialized even when uv_spawn fails. */
        inv->proc.data = inv;
        if (r < 0) {
                snprintf(inv->error, sizeof(inv->error), "agent: spawning %s: %s", a->argv[0],
                         uv_strerror(r));
                log_error("agent: invocation %" PRIu64 ": %s", id, inv->error);
                inv->killed = KILL_ERROR;
                inv_maybe_complete(inv);
                return;
        }
        inv->pid = inv->proc.pid;
        log_debug("agent: invocation %" PRIu64 ": started pid %d, %zu bytes in, timeout %" PRIu32
                  " ms",
                  id, inv->pid, req->body_len, req->timeout_ms);
        uv_timer_start(&inv->timer, on_timeout, req->timeout_ms, 0);
        uv_read_start((uv_stream_t *)&inv->out, out_alloc, on_out_read);
        uv_read_start((uv_stream_t *)&inv->err, err_alloc, on_err_read);
        if (inv->body_len == 0) {
                close_if_open((uv_handle_t *)&inv->in, on_inv_handle_closed);
                return;
        }
        /* Written while stdout is read, so large bodies cannot deadlock against a full pipe. */
        uv_buf_t b = uv_buf_init((char *)inv->body, (unsigned)inv->body_len);
        r = uv_write(&inv->stdin_req, (uv_stream_t *)&inv->in, &b, 1, on_stdin_written);
        if (r < 0)
                on_stdin_written(&inv->stdin_req, r);
}

/* ---- Attestation ---- */

/* MSG_REPORT_RSP (SEV-SNP firmware ABI): status u32, report_size u32, 24
 * reserved bytes, then the ATTESTATION_REPORT. */
#define SNP_RSP_STATUS 0
#define SNP_RSP_REPORT_SIZE 4
#define SNP_RSP_REPORT 0x20

/* Asks the SNP firmware, through the guest driver, for a report carrying
 * at's REPORT_DATA. Runs on the thread pool: touches only at. Written
 * against linux/sev-guest.h and the SNP firmware ABI; it cannot run outside
 * an SNP guest, so only its failure paths are tested. */
static void snp_get_report(int fd, attestation *at) {
        cvm_agent_attest_result *r = &at->result;
        struct snp_report_req req = {.vmpl = 0}; /* The agent's own VMPL: 0 without an SVSM. */
        struct snp_report_resp resp;
        memset(&resp, 0, sizeof(resp));
        memcpy(req.user_data, r->report_data, sizeof(req.user_data));
        struct snp_guest_request_ioctl g = {
                .msg_version = 1,
                .req_data = (uint64_t)(uintptr_t)&req,
                .resp_data = (uint64_t)(uintptr_t)&resp,
        };
        int ret;
        do
                ret = ioctl(fd, SNP_GET_REPORT, &g);
        while (ret < 0 && errno == EINTR);
        if (ret < 0) {
                r->status = CVM_AGENT_ATTEST_FAILED;
                r->error = (uint32_t)errno;
                r->exitinfo2 = g.exitinfo2;
                return;
        }
        const uint8_t *d = resp.data;
        uint32_t status = cvm_le32(d + SNP_RSP_STATUS), size = cvm_le32(d + SNP_RSP_REPORT_SIZE);
        at->resp_status = status;
        /* The response comes from outside the agent: every field is checked before use. */
        if (status != 0 || size < CVM_AGENT_SNP_REPORT_MIN ||
            size > sizeof(resp.data) - SNP_RSP_REPORT || size > sizeof(at->report) ||
            memcmp(d + SNP_RSP_REPORT + CVM_AGENT_SNP_REPORT_DATA_OFFSET, r->report_data,
                   CVM_AGENT_REPORT_DATA_SIZE) != 0) {
                r->status = CVM_AGENT_ATTEST_FAILED;
                r->error = EIO;
                r->exitinfo2 = g.exitinfo2;
                return;
        }
        memcpy(at->report, d + SNP_RSP_REPORT, size);
        r->status = CVM_AGENT_ATTEST_REPORT;
        r->report = at->report;
        r->report_len = size;
}

static void attest_work(uv_work_t *w) {
        attestation *at = w->data;
        cvm_agent_attest_result *r = &at->result;
        int fd = open(at->device, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                /* No device: not an SNP guest (the sim host's PSP signs reports itself). */
                if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
                        r->status = CVM_AGENT_ATTEST_NO_DEVICE;
                else {
                        r->status = CVM_AGENT_ATTEST_FAILED;
                        r->error = (uint32_t)errno;
                }
                return;
        }
        snp_get_report(fd, at);
        close(fd);
}

static void attest_free(attestation *at) {
        cvm_agent *a = at->agent;
        for (attestation **p = &a->attests; *p; p = &(*p)->next)
                if (*p == at) {
                        *p = at->next;
                        break;
                }
        a->n_attests--;
        free(at);
        agent_check(a);
}

static void on_attest_written(uv_write_t *req, int status) {
        attestation *at = req->data;
        if (status < 0)
                write_failed(at->agent, status);
        attest_free(at);
}

static void attest_done(uv_work_t *w, int status) {
        attestation *at = w->data;
        cvm_agent *a = at->agent;
        cvm_agent_attest_result *r = &at->result;
        if (status < 0 || a->stopping || uv_is_closing((uv_handle_t *)&a->conn)) {
                log_info("agent: attestation %" PRIu64 ": abandoned: the agent is stopping",
                         at->id);
                attest_free(at);
                return;
        }
        if (r->status == CVM_AGENT_ATTEST_FAILED)
                log_warn("agent: attestation %" PRIu64 ": no report from %s: %s (exitinfo2 "
                         "0x%" PRIx64 ", response status 0x%" PRIx32 ")",
                         at->id, CVM_QUOTE(at->device), strerror((int)r->error), r->exitinfo2,
                         at->resp_status);
        else
                log_info("agent: attestation %" PRIu64 ": %s, %zu report bytes", at->id,
                         cvm_agent_attest_status_name(r->status), r->report_len);
        cvm_agent_msg msg;
        cvm_error err = {0};
        if (cvm_agent_encode_attest_result(at->id, r, &msg, &err) < 0) {
                log_error("agent: attestation %" PRIu64 ": %s", at->id, err.message);
                attest_free(at);
                agent_stop(a, 1);
                return;
        }
        uv_buf_t bufs[3];
        size_t n = msg_bufs(&msg, bufs);
        at->writing = true;
        at->req.data = at;
        int ret = uv_write(&at->req, (uv_stream_t *)&a->conn, bufs, (unsigned)n, on_attest_written);
        if (ret < 0) {
                write_failed(a, ret);
                attest_free(at);
        }
}

/* Computes REPORT_DATA now, and asks the device for a report off the loop. */
static void attest_start(cvm_agent *a, uint64_t id,
                         const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE]) {
        attestation *at = calloc(1, sizeof(*at));
        cvm_error err = {0};
        if (!at) {
                log_error("agent: attestation %" PRIu64 ": out of memory", id);
                agent_stop(a, 1);
                return;
        }
        at->agent = a;
        at->id = id;
        at->device = a->sev_guest;
        at->result.public_key = a->public_key;
        at->result.public_key_len = a->public_key_len;
        if (cvm_agent_attest_report_data(a->public_key, a->public_key_len, nonce,
                                         at->result.report_data, &err) < 0) {
                log_error("agent: attestation %" PRIu64 ": %s", id, err.message);
                free(at);
                agent_stop(a, 1);
                return;
        }
        at->work.data = at;
        int r = uv_queue_work(a->loop, &at->work, attest_work, attest_done);
        if (r < 0) {
                log_error("agent: attestation %" PRIu64 ": %s", id, uv_strerror(r));
                free(at);
                agent_stop(a, 1);
                return;
        }
        at->next = a->attests;
        a->attests = at;
        a->n_attests++;
}

/* ---- The host connection ---- */

static void violation(cvm_agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(cvm_agent *a, const char *fmt, ...) {
        char why[CVM_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        log_error("agent: dropping the host: protocol violation: %s", why);
        agent_stop(a, 1);
}

static void handle_frame(cvm_agent *a, const cvm_agent_frame *f) {
        cvm_error err = {0};
        cvm_agent_msg msg;
        switch (f->type) {
        case CVM_AGENT_MSG_INVOKE: {
                cvm_agent_invoke req;
                if (cvm_agent_invoke_decode(f, &req, &err) < 0) {
                        violation(a, "%s", err.message);
                        return;
                }
                for (invocation *i = a->invocations; i; i = i->next)
                        if (i->running && i->id == f->id) {
                                violation(a, "INVOKE reuses the running id %" PRIu64, f->id);
                                return;
                        }
                if (a->n_running >= a->concurrency) {
                        log_info("agent: invocation %" PRIu64 ": busy (%u running)", f->id,
                                 a->n_running);
                        cvm_agent_result r = {.status = CVM_AGENT_STATUS_BUSY};
                        if (cvm_agent_encode_result(f->id, &r, &msg, NULL) == 0)
                                send_small(a, &msg, false);
                        return;
                }
                inv_start(a, f->id, &req);
                return;
        }
        case CVM_AGENT_MSG_ATTEST: {
                uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE];
                if (cvm_agent_attest_decode(f, nonce, &err) < 0) {
                        violation(a, "%s", err.message);
                        return;
                }
                /* Outstanding means not yet answered; the id names the answer, so
                 * two outstanding ATTESTs may not share one. */
                size_t outstanding = 0;
                for (attestation *at = a->attests; at; at = at->next) {
                        if (at->writing)
                                continue;
                        outstanding++;
                        if (at->id == f->id) {
                                violation(a, "ATTEST reuses the outstanding id %" PRIu64, f->id);
                                return;
                        }
                }
                /* Results whose write callback has not run yet are not outstanding for
                 * the host, but still hold memory: a host that stops reading is dropped. */
                if (outstanding >= CVM_AGENT_MAX_ATTEST_INFLIGHT ||
                    a->n_attests >= 4 * CVM_AGENT_MAX_ATTEST_INFLIGHT) {
                        violation(a, "more than %d ATTESTs outstanding",
                                  CVM_AGENT_MAX_ATTEST_INFLIGHT);
                        return;
                }
                attest_start(a, f->id, nonce);
                return;
        }
        case CVM_AGENT_MSG_PING:
                if (f->len != 0) {
                        violation(a, "PING %" PRIu64 " has a payload", f->id);
                        return;
                }
                cvm_agent_encode_empty(CVM_AGENT_MSG_PONG, f->id, &msg);
                send_small(a, &msg, false);
                return;
        case CVM_AGENT_MSG_SHUTDOWN:
                if (f->len != 0) {
                        violation(a, "SHUTDOWN %" PRIu64 " has a payload", f->id);
                        return;
                }
                log_info("agent: shutdown requested by the host");
                a->ack_shutdown = true;
                a->shutdown_id = f->id;
                agent_stop(a, 0);
                return;
        default:
                violation(a, "unexpected %s from the host", cvm_agent_msg_type_name(f->type));
                return;
        }
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        cvm_agent *a = h->data;
        (void)suggested;
        *buf = uv_buf_init((char *)a->readbuf, sizeof(a->readbuf));
}

static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        cvm_agent *a = s->data;
        if (nread < 0) {
                if (nread == UV_EOF)
                        /* How every VM's life ends on the host's side: not an error. */
                        log_info("agent: the host closed the connection");
                else
                        log_error("agent: reading from the host: %s", uv_strerror((int)nread));
                agent_stop(a, 1);
                return;
        }
        const uint8_t *p = (const uint8_t *)buf->base;
        size_t len = (size_t)nread;
        while (len > 0 && !a->stopping) {
                cvm_agent_frame f;
                size_t used;
                cvm_error err = {0};
                int r = cvm_agent_decoder_feed(&a->dec, p, len, &used, &f, &err);
                if (r < 0) {
                        violation(a, "%s", err.message);
                        return;
                }
                p += used;
                len -= used;
                if (r == 1)
                        handle_frame(a, &f);
        }
}

/* Stops taking requests and kills every running handler; agent_check
 * finishes once they are all gone. */
static void agent_stop(cvm_agent *a, int status) {
        if (a->stopping)
                return;
        a->stopping = true;
        a->stop_status = status;
        uv_read_stop((uv_stream_t *)&a->conn);
        for (invocation *inv = a->invocations, *next; inv; inv = next) {
                next = inv->next;
                if (inv->running)
                        inv_abort(inv, KILL_STOPPING);
        }
        agent_check(a);
}

static void agent_check(cvm_agent *a) {
        if (a->n_invocations > 0)
                return;
        if (a->stopping && !uv_is_closing((uv_handle_t *)&a->conn)) {
                if (a->ack_shutdown) {
                        a->ack_shutdown = false;
                        cvm_agent_msg msg;
                        cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, a->shutdown_id, &msg);
                        if (send_small(a, &msg, true) == 0)
                                return;
                }
                close_if_open((uv_handle_t *)&a->conn, on_conn_closed);
                return;
        }
        /* A report request cannot be cancelled once running: the memory waits for it. */
        if (a->freed && a->exit_status >= 0 && a->n_attests == 0) {
                cvm_agent_decoder_release(&a->dec);
                free_key(a);
                free(a);
        }
}

static void free_key(cvm_agent *a) {
        EVP_PKEY_free(a->key);
        OPENSSL_free(a->public_key);
        free(a->sev_guest);
        a->key = NULL;
        a->public_key = NULL;
        a->sev_guest = NULL;
}

/* The key lives in this process's memory only; OpenSSL clears the private
 * scalar when it is freed. */
static int generate_key(cvm_agent *a, const char *sev_guest, cvm_error *err) {
        a->sev_guest = strdup(sev_guest ? sev_guest : CVM_AGENT_DEFAULT_SEV_GUEST);
        if (!a->sev_guest)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        a->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        if (!a->key)
                return cvm_error_set(err, -EIO, "agent: cannot generate the EC P-384 key pair");
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(a->key, &der);
        if (n <= 0 || n > (int)CVM_AGENT_MAX_PUBLIC_KEY) {
                OPENSSL_free(der);
                return cvm_error_set(err, -EIO, "agent: cannot encode the public key");
        }
        a->public_key = der;
        a->public_key_len = (size_t)n;
        return 0;
}

int cvm_agent_new(uv_loop_t *loop, int fd, const cvm_agent_opts *opts, cvm_agent **ret,
                  cvm_error *err) {
        uint32_t max_stderr = opts->max_stderr ? opts->max_stderr : CVM_AGENT_DEFAULT_MAX_STDERR;
        if (!opts->argv || !opts->argv[0]) {
                close(fd);
                return cvm_error_set(err, -EINVAL, "agent: no handler command");
        }
        if (max_stderr > CVM_AGENT_MAX_STDERR) {
                close(fd);
                return cvm_error_set(err, -EINVAL,
                                     "agent: max stderr %" PRIu32
                                     " exceeds the protocol limit %" PRIu32,
                                     max_stderr, CVM_AGENT_MAX_STDERR);
        }
        /* Handlers must never inherit the host connection. */
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                int r = -errno;
                close(fd);
                return cvm_error_set_errno(err, r, "agent: fd %d", fd);
        }
        cvm_agent *a = calloc(1, sizeof(*a));
        if (!a) {
                close(fd);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        /* Made before the connection is set up, so a failure has only memory to free. */
        int r = generate_key(a, opts->sev_guest, err);
        if (r < 0) {
                free_key(a);
                free(a);
                close(fd);
                return r;
        }
        a->loop = loop;
        a->argv = opts->argv;
        a->concurrency = opts->concurrency ? opts->concurrency : 1;
        a->max_request = opts->max_request ? opts->max_request : CVM_AGENT_DEFAULT_MAX_PAYLOAD;
        a->max_response = opts->max_response ? opts->max_response : CVM_AGENT_DEFAULT_MAX_RESPONSE;
        a->max_stderr = max_stderr;
        a->exit_status = -1;
        cvm_agent_decoder_init(&a->dec, a->max_request);
        uv_pipe_init(loop, &a->conn, 0);
        a->conn.data = a;
        r = uv_pipe_open(&a->conn, fd);
        if (r < 0) {
                close(fd);
                a->freed = true;
                agent_stop(a, 1);
                return cvm_error_set(err, r, "agent: fd %d: %s", fd, uv_strerror(r));
        }
        cvm_agent_hello hello = {
                .proto_version = CVM_AGENT_PROTO_VERSION,
                .max_concurrency = a->concurrency,
                /* ATTEST frames must fit what the agent reads. */
                .capabilities =
                        CVM_AGENT_CAP_EXEC |
                        (a->max_request >= CVM_AGENT_ATTEST_NONCE_SIZE ? CVM_AGENT_CAP_ATTEST : 0),
                .max_request = a->max_request,
                .max_response = a->max_response,
                .max_stderr = a->max_stderr,
        };
        snprintf(hello.agent_version, sizeof(hello.agent_version), "%s", CVM_VERSION);
        cvm_agent_msg msg;
        r = cvm_agent_encode_hello(&hello, &msg, err);
        if (r == 0)
                r = send_small(a, &msg, false);
        if (r == 0)
                r = uv_read_start((uv_stream_t *)&a->conn, conn_alloc, on_conn_read);
        if (r < 0) {
                a->freed = true;
                agent_stop(a, 1);
                return cvm_error_set(err, r, "agent: cannot start on fd %d", fd);
        }
        log_info("agent: %s ready: handler %s, concurrency %u", CVM_VERSION, CVM_QUOTE(a->argv[0]),
                 a->concurrency);
        *ret = a;
        return 0;
}

int cvm_agent_exit_status(const cvm_agent *a) {
        return a->exit_status;
}

void cvm_agent_free(cvm_agent *a) {
        if (!a)
                return;
        a->freed = true;
        if (a->exit_status >= 0) {
                agent_check(a);
                return;
        }
        /* Abrupt: close every handle now instead of waiting for handlers to exit. */
        a->stopping = true;
        a->ack_shutdown = false;
        close_if_open((uv_handle_t *)&a->conn, on_conn_closed);
        for (invocation *inv = a->invocations, *next; inv; inv = next) {
                next = inv->next;
                if (!inv->running)
                        continue;
                kill_group(inv, KILL_STOPPING);
                inv->running = false;
                a->n_running--;
                close_if_open((uv_handle_t *)&inv->proc, on_inv_handle_closed);
                close_if_open((uv_handle_t *)&inv->in, on_inv_handle_closed);
                close_if_open((uv_handle_t *)&inv->out, on_inv_handle_closed);
                close_if_open((uv_handle_t *)&inv->err, on_inv_handle_closed);
                close_if_open((uv_handle_t *)&inv->timer, on_inv_handle_closed);
                inv_unref(inv);
        }
}
