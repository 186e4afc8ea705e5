/* warm-overhead: what the daemon adds to a warm invocation. Deploys a no-op
 * function (handler /bin/true) with a warm pool, drives POST
 * /v1/functions/{name}/invoke over keep-alive HTTP (its own minimal HTTP/1.1
 * load generator, C connections on the Unix socket) for S seconds after a
 * warm-up. The one-connection run alternates in rounds with as many
 * invocations sent directly to a real cvm-agent on a socketpair
 * (daemon/host/agent_client.h on a libuv loop, no daemon); the difference
 * between these two sequential runs is the daemon's overhead. The same
 * direct client through a bare relay process (poll, read, write) in the same
 * rounds gives what any process between client and agent costs on this
 * host; GET /v1/health the HTTP floor; --pid the daemon's CPU per
 * invocation and its CPU set. Usage: warm-overhead SOCKET [--connections C]
 * [--seconds S] [--agent PATH] [--pid DAEMON_PID]; start the daemon and this
 * program under `taskset -c N` to measure with every process on one CPU. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define BENCH_MAX_BODY (1u << 20)
#include "bench.h"

#include "agent_client.h"
#include "log.h"

#define FN_NAME "warm-overhead-noop"
#define HANDLER "/bin/true"
#define MAX_CONNS 64
#define MAX_SECONDS 600
#define MAX_SAMPLES 10000000u
/* Every wait is bounded so a stuck daemon or agent ends the run with an error. */
#define READY_TIMEOUT_MS 30000
#define REQUEST_TIMEOUT_S 30L
#define AGENT_TIMEOUT_MS 10000
#define WARMUP_REQUESTS 300
#define POLL_MS 20
/* The sequential runs alternate in rounds of this many requests: short
 * rounds put both under the same background noise. */
#define ROUND 20
/* The pause after each answer of the sequential runs. Back to back, the
 * direct client's next request would reach the agent while it still tidies
 * up after its answer, awake, and skip the wake-up every request through the
 * daemon pays (the daemon's path gives the agent time to fall asleep): the
 * pause puts both runs on an idle agent, as sporadic invocations find it. */
#define THINK_US 300
/* The load generator's per-connection buffer: answers here are small. */
#define HC_BUF 16384

/* Latencies and the daemon's view of each request, in ns. */
typedef struct samples {
        uint64_t *lat, *exec, *total;
        size_t n, cap;
        size_t warm, cold;
        uint64_t client_cpu; /* This client's CPU from each send to its answer. */
} samples;

/* One keep-alive connection of the load generator. libcurl costs ~50 us of
 * CPU per request here, on the critical path, against ~25 for this client
 * and ~22 for the direct run's agent client (context switches included):
 * measured with it, the HTTP client's cost would count as the daemon's. So the measured requests go
 * through this minimal HTTP/1.1 client: one pre-formatted request, one answer framed by
 * Content-Length. */
typedef struct hconn {
        int fd;
        const char *req;
        bool invoke; /* Its answers carry the daemon's view of the phases (Server-Timing). */
        size_t req_len;
        bool busy;
        uint64_t started_ns, started_cpu;
        char buf[HC_BUF];
        size_t len;
        /* The last answer. */
        int status;
        bool warm, cold;
        double exec_ms, total_ms;
} hconn;

/* Deploys the no-op function with `warm` VMs kept ready and waits for them;
 * returns the VMs' memory size in MiB. */
static json_int_t deploy(int warm) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"handler\": {\"exec\": [\"" HANDLER "\"]}, \"concurrency\": 1, "
                 "\"pool\": {\"min_warm\": %d, \"max_vms\": %d, \"keep_alive_s\": 600}}",
                 warm, warm);
        long status;
        json_decref(bench_request("PUT", "/v1/functions/" FN_NAME, body, &status));
        if (status != 200 && status != 201)
                die("PUT /v1/functions/" FN_NAME " answered %ld", status);
        uint64_t deadline = now_ns() + (uint64_t)READY_TIMEOUT_MS * 1000000u;
        for (;;) {
                json_t *fn = bench_request("GET", "/v1/functions/" FN_NAME, NULL, &status);
                json_int_t ready = -1, memory_mib = 0;
                if (status != 200 ||
                    json_unpack(fn, "{s:{s:I}, s:{s:{s:I}}}", "pool", "ready", &ready, "spec",
                                "image", "memory_mib", &memory_mib) < 0)
                        die("GET /v1/functions/" FN_NAME " answered %ld without pool.ready and "
                            "spec.image.memory_mib",
                            status);
                json_decref(fn);
                if (ready >= warm)
                        return memory_mib;
                if (now_ns() > deadline)
                        die("only %lld of %d VMs ready after %d ms", (long long)ready, warm,
                            READY_TIMEOUT_MS);
                sleep_ms(POLL_MS);
        }
}

static void samples_push(samples *s, uint64_t lat, uint64_t exec, uint64_t total) {
        if (s->n == s->cap) {
                if (s->cap >= MAX_SAMPLES)
                        die("more than %u samples", MAX_SAMPLES);
                size_t cap = s->cap ? s->cap * 2 : 4096;
                uint64_t *a = realloc(s->lat, cap * sizeof(*a));
                if (!a)
                        die("out of memory");
                s->lat = a;
                if (!(a = realloc(s->exec, cap * sizeof(*a))))
                        die("out of memory");
                s->exec = a;
                if (!(a = realloc(s->total, cap * sizeof(*a))))
                        die("out of memory");
                s->total = a;
                s->cap = cap;
        }
        s->lat[s->n] = lat;
        s->exec[s->n] = exec;
        s->total[s->n] = total;
        s->n++;
}

static void samples_free(samples *s) {
        free(s->lat);
        free(s->exec);
        free(s->total);
        *s = (samples){0};
}

/* This thread's CPU time: the load generator's own cost per request. */
static uint64_t self_cpu_ns(void) {
        struct timespec ts;
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
                die("clock_gettime: %s", strerror(errno));
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hconn_open(hconn *c, const char *req, bool invoke) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(bench_sock) >= sizeof(sa.sun_path))
                die("socket path too long: %s", bench_sock);
        strcpy(sa.sun_path, bench_sock);
        *c = (hconn){.req = req, .req_len = strlen(req), .invoke = invoke};
        if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
            connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("connect %s: %s", bench_sock, strerror(errno));
}

static void hconn_close(hconn *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

static void hconn_send(hconn *c) {
        c->status = 0;
        c->warm = c->cold = false;
        c->exec_ms = c->total_ms = -1;
        c->busy = true;
        c->started_cpu = self_cpu_ns();
        c->started_ns = now_ns();
        for (size_t off = 0; off < c->req_len;) {
                ssize_t k = write(c->fd, c->req + off, c->req_len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        die("sending a request: %s", k < 0 ? strerror(errno) : "nothing written");
                off += (size_t)k;
        }
}

static bool header_is(const char *line, size_t len, const char *name, const char **ret_value) {
        size_t n = strlen(name);
        if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
                return false;
        const char *v = line + n + 1;
        while (*v == ' ')
                v++;
        *ret_value = v;
        return true;
}

/* Parses a complete answer at the start of c->buf; returns its length, or 0
 * while it is incomplete. Picks the status, Cvm-Start and the exec and total
 * phases of Server-Timing. */
static size_t hconn_parse(hconn *c) {
        c->buf[c->len] = '\0';
        const char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
                return 0;
        if (strncmp(c->buf, "HTTP/1.1 ", 9) != 0)
                die("an answer that is not HTTP/1.1: %.40s", c->buf);
        c->status = atoi(c->buf + 9);
        long clen = -1;
        for (const char *line = strstr(c->buf, "\r\n") + 2; line < end;) {
                const char *eol = strstr(line, "\r\n");
                size_t len = (size_t)(eol - line);
                const char *v;
                if (header_is(line, len, "Content-Length", &v)) {
                        clen = strtol(v, NULL, 10);
                } else if (header_is(line, len, "Cvm-Start", &v)) {
                        c->warm = strncmp(v, "warm", 4) == 0;
                        c->cold = strncmp(v, "cold", 4) == 0;
                } else if (header_is(line, len, "Server-Timing", &v)) {
                        const char *e = strstr(v, "exec;dur="), *t = strstr(v, "total;dur=");
                        if (e && e < eol)
                                c->exec_ms = strtod(e + 9, NULL);
                        if (t && t < eol)
                                c->total_ms = strtod(t + 10, NULL);
                } else if (header_is(line, len, "Connection", &v) &&
                           strncasecmp(v, "close", 5) == 0) {
                        die("the daemon closes a keep-alive connection: %.40s", c->buf);
                }
                line = eol + 2;
        }
        if (clen < 0)
                die("an answer without Content-Length: %.40s", c->buf);
        size_t total = (size_t)(end + 4 - c->buf) + (size_t)clen;
        if (total >= sizeof(c->buf))
                die("an answer of %zu bytes, more than this client buffers", total);
        return c->len >= total ? total : 0;
}

/* Reads what is there; true once the answer is complete. */
static bool hconn_read(hconn *c) {
        ssize_t k = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                return false;
        if (k <= 0)
                die("reading an answer: %s", k < 0 ? strerror(errno) : "the daemon closed");
        c->len += (size_t)k;
        size_t used = hconn_parse(c);
        if (!used)
                return false;
        if (used < c->len)
                die("%zu bytes after an answer that nobody asked for", c->len - used);
        c->len = 0;
        c->busy = false;
        return true;
}

/* Keeps `nc` invocations in flight (one per connection) until `count`
 * requests are done or `duration_ns` has passed; records into s if set. */
static void drive(hconn *cs, int nc, size_t count, uint64_t duration_ns, uint64_t think_us,
                  samples *s) {
        uint64_t start = now_ns();
        uint64_t stop = duration_ns ? start + duration_ns : UINT64_MAX;
        uint64_t hard = start + (duration_ns ? duration_ns : 0) +
                        (uint64_t)(REQUEST_TIMEOUT_S + 30) * 1000000000u;
        struct pollfd pfd[MAX_CONNS];
        size_t started = 0;
        int in_flight = 0;
        for (int i = 0; i < nc && started < count; i++, started++, in_flight++)
                hconn_send(&cs[i]);
        while (in_flight) {
                for (int i = 0; i < nc; i++)
                        pfd[i] = (struct pollfd){.fd = cs[i].fd, .events = cs[i].busy ? POLLIN : 0};
                int r = poll(pfd, (nfds_t)nc, 1000);
                if (r < 0 && errno != EINTR)
                        die("poll: %s", strerror(errno));
                if (now_ns() > hard)
                        die("the run did not end within %llu s of its deadline",
                            (unsigned long long)REQUEST_TIMEOUT_S + 30);
                for (int i = 0; r > 0 && i < nc; i++) {
                        hconn *c = &cs[i];
                        if (!pfd[i].revents || !hconn_read(c))
                                continue;
                        uint64_t t = now_ns();
                        in_flight--;
                        if (c->status != 200)
                                die("the request answered %d, not 200", c->status);
                        if (c->invoke && (c->exec_ms < 0 || c->total_ms < 0))
                                die("invoke: a 200 without Server-Timing exec and total");
                        if (s) {
                                uint64_t lat = t - c->started_ns;
                                s->client_cpu += self_cpu_ns() - c->started_cpu;
                                samples_push(s, lat, c->invoke ? (uint64_t)(c->exec_ms * 1e6) : 0,
                                             c->invoke ? (uint64_t)(c->total_ms * 1e6) : lat);
                                s->warm += c->warm;
                                s->cold += c->cold;
                        }
                        if (started < count && t < stop) {
                                if (think_us)
                                        sleep_us(think_us);
                                hconn_send(c);
                                started++;
                                in_flight++;
                        }
                }
        }
}

/* Nearest rank: the smallest value with at least p of the sample at or below it. */
static double pct_us(const uint64_t *sorted, size_t n, double p) {
        size_t rank = (size_t)ceil(p * (double)n);
        return (double)sorted[rank ? rank - 1 : 0] / 1e3;
}

typedef struct summary {
        double p50, p90, p99, max;
} summary;

static summary summarize(uint64_t *v, size_t n) {
        qsort(v, n, sizeof(*v), cmp_u64);
        return (summary){pct_us(v, n, 0.5), pct_us(v, n, 0.9), pct_us(v, n, 0.99),
                         (double)v[n - 1] / 1e3};
}

static void print_row(const char *label, int nc, size_t n, double secs, summary r,
                      const char *note) {
        printf("  %-16s %5d %9zu %9.0f %9.1f %9.1f %9.1f %9.1f  %s\n", label, nc, n,
               secs > 0 ? (double)n / secs : 0.0, r.p50, r.p90, r.p99, r.max, note);
}

#define INVOKE_REQUEST                                                                             \
        "POST /v1/functions/" FN_NAME "/invoke HTTP/1.1\r\nHost: cvmd\r\n"                         \
        "Content-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n"
#define HEALTH_REQUEST "GET /v1/health HTTP/1.1\r\nHost: cvmd\r\n\r\n"

/* C keep-alive connections to the daemon, each with one request in flight at
 * most; the warm-up opens them and warms the daemon's and agents' caches. */
static hconn *client_new(int nc, const char *req, bool invoke) {
        hconn *cs = calloc((size_t)nc, sizeof(*cs));
        if (!cs)
                die("out of memory");
        for (int i = 0; i < nc; i++)
                hconn_open(&cs[i], req, invoke);
        drive(cs, nc, WARMUP_REQUESTS, 0, 0, NULL);
        return cs;
}

static void client_free(hconn *cs, int nc) {
        for (int i = 0; i < nc; i++)
                hconn_close(&cs[i]);
        free(cs);
}

/* The direct run: a real cvm-agent on a socketpair, driven from this process. */
typedef struct direct {
        uv_loop_t loop;
        uv_timer_t tick;
        cvm_agent_client *client;
        pid_t pid, relay_pid;
        bool hello, closed, done;
        int status;
        uint64_t exec_us, next_id;
} direct;

static void d_hello(cvm_agent_client *c, const cvm_agent_hello *h, void *ud) {
        (void)c;
        (void)h;
        ((direct *)ud)->hello = true;
}

static void d_closed(cvm_agent_client *c, const cvm_error *err, void *ud) {
        direct *d = ud;
        (void)c;
        if (err->code != 0)
                die("direct: the agent connection ended: %s", err->message);
        d->closed = true;
}

static void d_result(cvm_agent_client *c, uint64_t id, const cvm_agent_result *r,
                     const cvm_error *err, void *ud) {
        direct *d = ud;
        (void)c;
        if (err)
                die("direct invocation %llu: %s", (unsigned long long)id, err->message);
        d->status = r->status;
        d->exec_us = r->exec_us;
        d->done = true;
}

static void on_tick(uv_timer_t *t) {
        (void)t;
}

/* Runs the loop until *flag is set; the tick timer bounds each turn. */
static void run_until(direct *d, const bool *flag, uint64_t timeout_ms, const char *what) {
        uint64_t deadline = uv_hrtime() + timeout_ms * 1000000u;
        while (!*flag) {
                if (uv_hrtime() > deadline)
                        die("direct: %s did not happen within %llu ms", what,
                            (unsigned long long)timeout_ms);
                uv_run(&d->loop, UV_RUN_ONCE);
        }
}

/* Starts the agent as the sim host does with its defaults, so that the two
 * runs differ only by the daemon: the same options, fd 3, stdin on
 * /dev/null, a session of its own, the VM's memory as its address-space
 * limit (sim.memory_limit). Its log goes to /dev/null. */
static pid_t spawn_agent(const char *agent, int fd, rlim_t memory) {
        char *argv[] = {(char *)agent,   "--fd",        "3",
                        "--concurrency", "1",           "--max-response",
                        "6291456",       "--sev-guest", "/nonexistent/sev-guest",
                        "--log-level",   "warn",        "--",
                        HANDLER,         NULL};
        char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", NULL};
        pid_t pid = fork();
        if (pid < 0)
                die("fork: %s", strerror(errno));
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
                    dup2(fd, 3) < 0)
                        _exit(126);
                close_range(4, ~0U, 0);
                struct rlimit rl = {memory, memory};
                if (setsid() < 0 || setrlimit(RLIMIT_AS, &rl) < 0)
                        _exit(126);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        return pid;
}

static void direct_invoke(direct *d, size_t n, uint64_t think_us, samples *s) {
        cvm_error err = {0};
        for (size_t i = 0; i < n; i++) {
                if (i && think_us)
                        sleep_us(think_us);
                d->done = false;
                uint64_t cpu = self_cpu_ns(), t = now_ns();
                if (cvm_agent_client_invoke(d->client, ++d->next_id, 30000, NULL, 0, d_result, d,
                                            &err) < 0)
                        die("invoke: %s", err.message);
                run_until(d, &d->done, AGENT_TIMEOUT_MS, "a RESULT");
                uint64_t lat = now_ns() - t;
                if (d->status != CVM_AGENT_STATUS_OK)
                        die("direct invocation %llu: status %d", (unsigned long long)d->next_id,
                            d->status);
                if (s) {
                        s->client_cpu += self_cpu_ns() - cpu;
                        samples_push(s, lat, d->exec_us * 1000u, lat);
                }
        }
}

/* Copies bytes both ways between a and b until either side closes. Blocking
 * writes cannot deadlock here: one invocation is in flight at a time, with
 * an empty body and result, and the direct client sends no heartbeats. A
 * reset ends the relay like an orderly close; the client then sees EOF. */
__attribute__((noreturn)) static void relay_loop(int a, int b) {
        static char data[65536];
        struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
        for (;;) {
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(1);
                }
                for (int i = 0; i < 2; i++) {
                        if (!p[i].revents)
                                continue;
                        ssize_t k = read(p[i].fd, data, sizeof(data));
                        if (k <= 0)
                                _exit(0);
                        for (ssize_t off = 0; off < k;) {
                                ssize_t w = write(p[1 - i].fd, data + off, (size_t)(k - off));
                                if (w <= 0)
                                        _exit(1);
                                off += w;
                        }
                }
        }
}

/* A process that only forwards bytes between fd and a new socketpair, the
 * least any process between client and agent costs; returns the client's end. */
static int spawn_relay(int fd, pid_t *ret_pid) {
        int fds[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
                die("socketpair: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
                die("fork: %s", strerror(errno));
        if (pid == 0) {
                /* Only its two sockets, as fds 3 and 4, besides stdio: a copy
                 * of the client's connections would keep them open after the
                 * client closes them. Duplicates above 9 first, so that
                 * neither dup2 overwrites the other socket. */
                int a = fcntl(fds[1], F_DUPFD, 10), b = fcntl(fd, F_DUPFD, 10);
                if (a < 0 || b < 0 || dup2(a, 3) < 0 || dup2(b, 4) < 0)
                        _exit(126);
                close_range(5, ~0U, 0);
                relay_loop(3, 4);
        }
        close(fds[1]);
        close(fd);
        *ret_pid = pid;
        return fds[0];
}

static direct *direct_new(const char *agent, rlim_t memory, bool relay) {
        int fds[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
                die("socketpair: %s", strerror(errno));
        direct *d = calloc(1, sizeof(*d));
        if (!d)
                die("out of memory");
        d->pid = spawn_agent(agent, fds[1], memory);
        close(fds[1]);
        if (relay)
                fds[0] = spawn_relay(fds[0], &d->relay_pid);
        int r = uv_loop_init(&d->loop);
        if (r < 0)
                die("uv_loop_init: %s", uv_strerror(r));
        if ((r = uv_timer_init(&d->loop, &d->tick)) < 0 ||
            (r = uv_timer_start(&d->tick, on_tick, 100, 100)) < 0)
                die("uv timer: %s", uv_strerror(r));
        /* No heartbeat: the daemon's one PING a second costs nothing measurable. */
        cvm_agent_client_opts opts = {.heartbeat_interval_ms = 0};
        cvm_agent_client_cbs cbs = {.on_hello = d_hello, .on_closed = d_closed};
        cvm_error err = {0};
        if (cvm_agent_client_new(&d->loop, fds[0], &opts, &cbs, d, &d->client, &err) < 0)
                die("cvm_agent_client_new: %s", err.message);
        run_until(d, &d->hello, AGENT_TIMEOUT_MS, "the agent's HELLO");
        direct_invoke(d, WARMUP_REQUESTS, 0, NULL);
        return d;
}

/* Waits up to 2 s for a child to exit, then kills it. */
static void reap(pid_t pid) {
        int wstatus;
        pid_t r = 0;
        for (int i = 0; i < 100 && (r = waitpid(pid, &wstatus, WNOHANG)) == 0; i++)
                sleep_ms(20);
        if (r == 0 && kill(pid, SIGKILL) == 0)
                waitpid(pid, &wstatus, 0);
}

static void direct_free(direct *d) {
        cvm_error err = {0};
        if (cvm_agent_client_shutdown(d->client, &err) < 0)
                die("shutdown: %s", err.message);
        run_until(d, &d->closed, AGENT_TIMEOUT_MS, "the agent's shutdown");
        cvm_agent_client_free(d->client);
        uv_close((uv_handle_t *)&d->tick, NULL);
        uv_run(&d->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&d->loop) < 0)
                die("the direct loop still has handles");
        /* The agent exits after its acknowledgement, and the relay when the
         * agent's side closes; a stuck one is killed. */
        reap(d->pid);
        if (d->relay_pid > 0)
                reap(d->relay_pid);
        free(d);
}

/* Nanoseconds on a CPU so far of one thread, from the scheduler's own
 * accounting (schedstat: exact, where /proc/PID/stat counts clock ticks that
 * rounds of a few ms cannot resolve); 0 if unknown. */
static uint64_t thread_cpu_ns(pid_t pid, const char *tid) {
        char path[96];
        snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, tid);
        FILE *f = fopen(path, "re");
        if (!f)
                return 0;
        unsigned long long ns = 0;
        if (fscanf(f, "%llu", &ns) != 1)
                ns = 0;
        fclose(f);
        return ns;
}

/* CPU time so far of a process's threads, or of its main thread alone. */
static uint64_t cpu_ns(pid_t pid, bool main_only) {
        char tid[32];
        if (main_only) {
                snprintf(tid, sizeof(tid), "%d", (int)pid);
                return thread_cpu_ns(pid, tid);
        }
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return 0;
        uint64_t sum = 0;
        for (struct dirent *e; (e = readdir(d));)
                if (e->d_name[0] != '.')
                        sum += thread_cpu_ns(pid, e->d_name);
        closedir(d);
        return sum;
}

/* The agent next to the bench's build directory: BUILD/bench/warm-overhead -> BUILD/cvm-agent. */
/* Writes a CPU set as a list ("0", "0-1,3") into out. */
static void cpuset_format(const cpu_set_t *set, char *out, size_t size) {
        size_t len = 0;
        out[0] = '\0';
        for (int c = 0; c < CPU_SETSIZE && len < size; c++) {
                if (!CPU_ISSET(c, set))
                        continue;
                int last = c;
                while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, set))
                        last++;
                int n = last == c ? snprintf(out + len, size - len, "%s%d", len ? "," : "", c)
                                  : snprintf(out + len, size - len, "%s%d-%d", len ? "," : "", c,
                                             last);
                if (n < 0)
                        break;
                len += (size_t)n;
                c = last;
        }
}

/* Says where the processes of the measurement run. The daemon's agents and
 * handlers inherit its set, this program's agent and relay inherit this one.
 * When all share one CPU, every wake-up on the path is a context switch; with
 * more, a wake-up may have to bring a halted CPU back, which in a VM is an
 * interrupt through the hypervisor (25-40 us on a Firecracker guest), paid
 * twice more per invocation through the daemon than directly. */
static void report_cpus(pid_t daemon_pid) {
        cpu_set_t self, dmn;
        char self_s[256], dmn_s[256];
        if (sched_getaffinity(0, sizeof(self), &self) < 0)
                die("sched_getaffinity: %s", strerror(errno));
        cpuset_format(&self, self_s, sizeof(self_s));
        if (!daemon_pid || sched_getaffinity(daemon_pid, sizeof(dmn), &dmn) < 0) {
                printf("  CPUs: this benchmark on %s; the daemon's not known (pass --pid)\n",
                       self_s);
                return;
        }
        cpuset_format(&dmn, dmn_s, sizeof(dmn_s));
        if (CPU_EQUAL(&self, &dmn) && CPU_COUNT(&self) == 1)
                printf("  CPUs: all processes on CPU %s (every wake-up a context switch)\n",
                       self_s);
        else
                printf("  CPUs: this benchmark, its agent and relay on %s; the daemon, its agents "
                       "and handlers on %s\n",
                       self_s, dmn_s);
}

static char *default_agent(void) {
        static char path[PATH_MAX];
        ssize_t k = readlink("/proc/self/exe", path, sizeof(path) - 1);
        if (k < 0)
                die("readlink /proc/self/exe: %s", strerror(errno));
        path[k] = '\0';
        for (int up = 0; up < 2; up++) {
                char *slash = strrchr(path, '/');
                if (!slash)
                        die("cannot find the build directory from %s; pass --agent", path);
                *slash = '\0';
        }
        if (strlen(path) + sizeof("/cvm-agent") > sizeof(path))
                die("path too long; pass --agent");
        strcat(path, "/cvm-agent");
        return path;
}

static long parse_num(const char *opt, const char *s, long min, long max) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max)
                die("%s: %s is not a number from %ld to %ld", opt, s, min, max);
        return v;
}

static void usage(void) {
        fprintf(stderr, "usage: warm-overhead SOCKET [--connections C] [--seconds S] "
                        "[--agent PATH] [--pid DAEMON_PID]\n");
        exit(2);
}

int main(int argc, char **argv) {
        bench_prog = "warm-overhead";
        int nc = 4, seconds = 10;
        pid_t daemon_pid = 0;
        const char *agent = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--connections") == 0 && i + 1 < argc)
                        nc = (int)parse_num("--connections", argv[++i], 1, MAX_CONNS);
                else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
                        seconds = (int)parse_num("--seconds", argv[++i], 1, MAX_SECONDS);
                else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
                        agent = argv[++i];
                else if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc)
                        daemon_pid = (pid_t)parse_num("--pid", argv[++i], 1, INT_MAX);
                else if (argv[i][0] == '-' || bench_sock)
                        usage();
                else
                        bench_sock = argv[i];
        }
        if (!bench_sock)
                usage();
        if (!agent)
                agent = default_agent();
        if (access(agent, X_OK) < 0)
                die("the agent %s: %s (pass --agent)", agent, strerror(errno));
        /* The agent client's info lines (a closed connection) are not part of the report. */
        cvm_log_set_level(CVM_LOG_WARN);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(bench_ctl = curl_easy_init()))
                die("cannot initialise libcurl");
        rlim_t memory = (rlim_t)deploy(nc) << 20;

        printf("warm-overhead: no-op function (" HANDLER "), %d warm VM%s, keep-alive HTTP on "
               "the Unix socket, %d s per run after %d warm-up requests\n",
               nc, nc > 1 ? "s" : "", seconds, WARMUP_REQUESTS);
        printf("  latencies in us; direct = the same agent and handler on a socketpair, no "
               "daemon; relay = direct\n  through a process that only forwards bytes; the "
               "1-connection, direct, relay and health runs\n  alternate in rounds of %d "
               "requests each\n",
               ROUND);
        report_cpus(daemon_pid);
        printf("  %-16s %5s %9s %9s %9s %9s %9s %9s\n", "run", "conns", "requests", "req/s", "p50",
               "p90", "p99", "max");

        /* Alternating rounds expose both runs to the same background noise. */
        hconn *one = client_new(1, INVOKE_REQUEST, true);
        direct *d = direct_new(agent, memory, false), *rl = direct_new(agent, memory, true);
        hconn *hh = client_new(1, HEALTH_REQUEST, false);
        samples s1 = {0}, sd = {0}, sr = {0}, sh = {0};
        double t1 = 0, td = 0, tr = 0;
        uint64_t cpu_d = 0, cpu_main = 0;
        while (t1 < seconds) {
                size_t before = s1.n;
                uint64_t c0 = daemon_pid ? cpu_ns(daemon_pid, false) : 0;
                uint64_t m0 = daemon_pid ? cpu_ns(daemon_pid, true) : 0;
                uint64_t t = now_ns();
                drive(one, 1, ROUND, 0, THINK_US, &s1);
                t1 += (double)(now_ns() - t) / 1e9;
                if (daemon_pid) {
                        cpu_d += cpu_ns(daemon_pid, false) - c0;
                        cpu_main += cpu_ns(daemon_pid, true) - m0;
                }
                t = now_ns();
                direct_invoke(d, s1.n - before, THINK_US, &sd);
                td += (double)(now_ns() - t) / 1e9;
                t = now_ns();
                direct_invoke(rl, s1.n - before, THINK_US, &sr);
                tr += (double)(now_ns() - t) / 1e9;
                drive(hh, 1, s1.n - before, 0, THINK_US, &sh);
        }
        client_free(hh, 1);
        direct_free(d);
        direct_free(rl);
        client_free(one, 1);
        if (s1.n == 0)
                die("no request finished");
        size_t n1 = s1.n, warm1 = s1.warm;
        /* Per request, the time outside the daemon's own accounting: HTTP and the client. */
        uint64_t *outside = calloc(s1.n, sizeof(*outside)), *inside = calloc(s1.n, sizeof(*inside));
        uint64_t *beyond = calloc(s1.n, sizeof(*beyond));
        if (!outside || !inside || !beyond)
                die("out of memory");
        for (size_t i = 0; i < s1.n; i++) {
                outside[i] = s1.lat[i] > s1.total[i] ? s1.lat[i] - s1.total[i] : 0;
                inside[i] = s1.total[i] > s1.exec[i] ? s1.total[i] - s1.exec[i] : 0;
                beyond[i] = s1.lat[i] > s1.exec[i] ? s1.lat[i] - s1.exec[i] : 0;
        }
        summary http1 = summarize(outside, s1.n), disp1 = summarize(inside, s1.n);
        summary beyond1 = summarize(beyond, s1.n);
        free(outside);
        free(inside);
        free(beyond);
        summary lat1 = summarize(s1.lat, s1.n), exec1 = summarize(s1.exec, s1.n);
        summary dlat = summarize(sd.lat, sd.n), dexec = summarize(sd.exec, sd.n);
        summary hlat = summarize(sh.lat, sh.n), rlat = summarize(sr.lat, sr.n);
        char note[96];
        /* A connection the daemon closed would have ended the run. */
        snprintf(note, sizeof(note), "%.1f%% warm, one connection kept alive",
                 100.0 * (double)warm1 / (double)n1);
        print_row("daemon", 1, n1, t1, lat1, note);
        print_row("direct agent", 1, sd.n, td, dlat, "");
        print_row("relay + agent", 1, sr.n, tr, rlat, "direct through a bare relay process");
        print_row("GET /v1/health", 1, sh.n, 0, hlat, "the HTTP floor, same rounds");
        fflush(stdout);

        size_t warmc = 0, nc_n = 0;
        if (nc > 1) {
                hconn *many = client_new(nc, INVOKE_REQUEST, true);
                samples sc = {0};
                uint64_t t = now_ns();
                drive(many, nc, SIZE_MAX, (uint64_t)seconds * 1000000000u, 0, &sc);
                double secs = (double)(now_ns() - t) / 1e9;
                client_free(many, nc);
                if (sc.n == 0)
                        die("no request finished");
                warmc = sc.warm;
                nc_n = sc.n;
                snprintf(note, sizeof(note), "%.1f%% warm, %d connections kept alive",
                         100.0 * (double)sc.warm / (double)sc.n, nc);
                print_row("daemon", nc, sc.n, secs, summarize(sc.lat, sc.n), note);
                samples_free(&sc);
        }

        printf("  1 connection, p50 / p99 in us: client+HTTP (latency - Server-Timing total) "
               "%.1f / %.1f;\n    daemon dispatch (total - exec) %.1f / %.1f; exec, the agent "
               "round trip as the daemon sees it, %.1f / %.1f;\n    direct round trip %.1f / "
               "%.1f, of which the handler inside the agent (exec_us) %.1f / %.1f\n",
               http1.p50, http1.p99, disp1.p50, disp1.p99, exec1.p50, exec1.p99, dlat.p50, dlat.p99,
               dexec.p50, dexec.p99);
        if (daemon_pid && n1)
                printf("  CPU per invocation, 1 connection: daemon %.1f us (loop thread %.1f, "
                       "other threads %.1f)\n",
                       (double)cpu_d / (double)n1 / 1e3, (double)cpu_main / (double)n1 / 1e3,
                       (double)(cpu_d - cpu_main) / (double)n1 / 1e3);
        printf("  this client's CPU per request, 1 connection: %.1f us over HTTP, %.1f us as the "
               "direct agent client, %.1f us through the relay\n",
               (double)s1.client_cpu / (double)n1 / 1e3, (double)sd.client_cpu / (double)sd.n / 1e3,
               (double)sr.client_cpu / (double)sr.n / 1e3);
        double add50 = lat1.p50 - dlat.p50, add99 = lat1.p99 - dlat.p99;
        printf("  daemon overhead over the direct agent round trip, sequential: p50 %+.1f us "
               "(target < 100: %s), p99 %+.1f us (target < 1000: %s)\n",
               add50, add50 < 100 ? "met" : "missed", add99, add99 < 1000 ? "met" : "missed");
        /* What no daemon design avoids here: one more process on the path, with
         * its two wake-ups, context switches and copies. */
        printf("  a bare relay process (poll, read, write; no HTTP) between the direct client "
               "and agent adds p50 %+.1f us, p99 %+.1f us;\n    the daemon beyond that relay: "
               "p50 %+.1f us, p99 %+.1f us\n",
               rlat.p50 - dlat.p50, rlat.p99 - dlat.p99, lat1.p50 - rlat.p50, lat1.p99 - rlat.p99);
        printf("  of which the HTTP floor (GET /v1/health p50 / p99) %.1f / %.1f us; the rest, "
               "invocation-specific: p50 %+.1f us, p99 %+.1f us\n",
               hlat.p50, hlat.p99, add50 - hlat.p50, add99 - hlat.p99);
        /* Per request, free of the handler's own variance: the time outside exec. */
        printf("  per request, latency - exec (everything but the agent round trip): p50 %.1f us "
               "(target < 100: %s), p99 %.1f us (target < 1000: %s)\n",
               beyond1.p50, beyond1.p50 < 100 ? "met" : "missed", beyond1.p99,
               beyond1.p99 < 1000 ? "met" : "missed");
        printf("  warm starts: %zu of %zu (1 connection)", warm1, n1);
        if (nc > 1)
                printf(", %zu of %zu (%d connections)", warmc, nc_n, nc);
        printf("\n");
        samples_free(&s1);
        samples_free(&sd);
        samples_free(&sr);
        samples_free(&sh);

        long status;
        json_decref(bench_request("DELETE", "/v1/functions/" FN_NAME, NULL, &status));
        if (status != 202)
                die("DELETE /v1/functions/" FN_NAME " answered %ld", status);
        curl_easy_cleanup(bench_ctl);
        curl_global_cleanup();
        if (warm1 != n1 || warmc != nc_n)
                die("not every invocation was warm");
        return 0;
}
