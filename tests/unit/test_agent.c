/* The guest agent and the host client end to end: both on one libuv loop,
 * joined by a socketpair, running real handler programs. Raw peers written
 * from the test stand in for a misbehaving agent or host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"
#include "agent_client.h"
#include "agent_proto.h"
#include "cleanup.h"
#include "unit_tmp.h"

CVM_DEFINE_CLEANUP(DIR *, closedir)

typedef struct result {
        bool done;
        uint64_t id;
        int err_code; /* 0 when the agent answered. */
        int status, exit_code, term_signal;
        uint8_t *out;
        size_t out_len;
        char stderr_tail[1024];
        uint64_t exec_us;
        uint64_t at_ns; /* When the callback ran. */
} result;

typedef struct attest_res {
        bool done;
        int err_code;
        int status;
        uint32_t error;
        uint8_t key[CVM_AGENT_MAX_PUBLIC_KEY];
        size_t key_len;
        uint8_t report_data[64];
        size_t report_len;
        bool has_report;
} attest_res;

typedef struct harness {
        uv_loop_t loop;
        cvm_agent *agent;
        cvm_agent_client *client;
        int agent_fd, peer_fd; /* The agent's end; a raw peer's end when one side is the test. */
        bool hello, closed;
        bool lost;               /* on_lost ran... */
        size_t answered_at_lost; /* ...after this many invocation and attestation answers. */
        cvm_error closed_err;
        result res[4];
        bool free_in_callback;
        const char *sev_guest; /* The agent's SNP device; NULL: one that does not exist. */
        attest_res att[8];
        size_t n_att;
} harness;

static void on_hello(cvm_agent_client *c, const cvm_agent_hello *h, void *userdata) {
        harness *t = userdata;
        (void)c, (void)h;
        t->hello = true;
}

static void on_closed(cvm_agent_client *c, const cvm_error *err, void *userdata) {
        harness *t = userdata;
        (void)c;
        assert_false(t->closed);
        t->closed = true;
        t->closed_err = *err;
}

static void on_result(cvm_agent_client *c, uint64_t id, const cvm_agent_result *r,
                      const cvm_error *err, void *userdata) {
        harness *t = userdata;
        result *res = &t->res[id];
        assert_false(res->done);
        *res = (result){.done = true, .id = id, .at_ns = uv_hrtime()};
        if (err) {
                assert_null(r);
                res->err_code = err->code;
        } else {
                res->status = r->status;
                res->exit_code = r->exit_code;
                res->term_signal = r->term_signal;
                res->exec_us = r->exec_us;
                res->out = malloc(r->output_len + 1);
                memcpy(res->out, r->output, r->output_len);
                res->out_len = r->output_len;
                size_t n = r->stderr_len < sizeof(res->stderr_tail) - 1
                                   ? r->stderr_len
                                   : sizeof(res->stderr_tail) - 1;
                memcpy(res->stderr_tail, r->stderr_tail, n);
        }
        if (t->free_in_callback) {
                cvm_agent_client_free(c);
                t->client = NULL;
        }
}

static void on_lost(cvm_agent_client *c, const cvm_error *err, void *userdata) {
        harness *t = userdata;
        (void)c, (void)err;
        assert_false(t->lost);
        assert_false(t->closed);
        t->lost = true;
        for (size_t i = 0; i < sizeof(t->res) / sizeof(t->res[0]); i++)
                t->answered_at_lost += t->res[i].done;
        t->answered_at_lost += t->n_att;
}

static const cvm_agent_client_cbs cbs = {
        .on_hello = on_hello, .on_closed = on_closed, .on_lost = on_lost};

static void on_tick(uv_timer_t *timer) {
        (void)timer;
}

/* Runs the loop until *flag is set, failing after timeout_ms. */
static void run_until(harness *t, const bool *flag, uint64_t timeout_ms) {
        uv_timer_t tick;
        uv_timer_init(&t->loop, &tick);
        uv_timer_start(&tick, on_tick, 10, 10);
        uint64_t deadline = uv_hrtime() + timeout_ms * 1000000;
        while (!*flag && uv_hrtime() < deadline)
                uv_run(&t->loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&tick, NULL);
        uv_run(&t->loop, UV_RUN_NOWAIT);
        assert_true(*flag);
}

static void run_for(harness *t, uint64_t ms) {
        uv_timer_t tick;
        uv_timer_init(&t->loop, &tick);
        uv_timer_start(&tick, on_tick, 5, 5);
        uint64_t deadline = uv_hrtime() + ms * 1000000;
        while (uv_hrtime() < deadline)
                uv_run(&t->loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&tick, NULL);
        uv_run(&t->loop, UV_RUN_NOWAIT);
}

static void make_pair(int fds[2]) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

static void start_agent(harness *t, int fd, char *const *argv, uint16_t concurrency,
                        uint32_t max_response) {
        /* Tests never reach a real SNP device, even when run inside an SNP guest. */
        cvm_agent_opts opts = {.argv = argv,
                               .concurrency = concurrency,
                               .max_response = max_response,
                               .sev_guest = t->sev_guest ? t->sev_guest : "/nonexistent/sev-guest"};
        cvm_error err = {0};
        t->agent_fd = fd;
        assert_int_equal(cvm_agent_new(&t->loop, fd, &opts, &t->agent, &err), 0);
}

static void start_client(harness *t, int fd, const cvm_agent_client_opts *opts) {
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_new(&t->loop, fd, opts, &cbs, t, &t->client, &err), 0);
}

/* A client whose agent the test plays on the raw end, t->peer_fd. A
 * positive sndbuf sets the client's send buffer. */
static harness *raw_peer(const cvm_agent_client_opts *opts, int sndbuf) {
        harness *t = calloc(1, sizeof(*t));
        assert_int_equal(uv_loop_init(&t->loop), 0);
        int fds[2];
        make_pair(fds);
        if (sndbuf > 0)
                assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)),
                                 0);
        t->peer_fd = fds[1];
        start_client(t, fds[0], opts);
        return t;
}

/* The raw peer says HELLO; returns once the client has it. */
static void peer_hello(harness *t, const cvm_agent_hello *h) {
        cvm_agent_msg m;
        assert_int_equal(cvm_agent_encode_hello(h, &m, NULL), 0);
        assert_int_equal(write(t->peer_fd, m.head, m.head_len), (ssize_t)m.head_len);
        run_until(t, &t->hello, 2000);
}

static harness *setup_with(char *const *argv, uint16_t concurrency, uint32_t max_response,
                           const char *sev_guest) {
        harness *t = calloc(1, sizeof(*t));
        t->sev_guest = sev_guest;
        assert_int_equal(uv_loop_init(&t->loop), 0);
        int fds[2];
        make_pair(fds);
        t->peer_fd = -1;
        start_agent(t, fds[1], argv, concurrency, max_response);
        start_client(t, fds[0], NULL);
        run_until(t, &t->hello, 2000);
        return t;
}

/* Agent and client connected; returns once HELLO has arrived. */
static harness *setup(char *const *argv, uint16_t concurrency, uint32_t max_response) {
        return setup_with(argv, concurrency, max_response, NULL);
}

static void teardown(harness *t) {
        cvm_agent_client_free(t->client);
        if (t->agent) {
                /* The agent sees the host go, kills its handlers and finishes. */
                uint64_t deadline = uv_hrtime() + UINT64_C(3000000000);
                while (cvm_agent_exit_status(t->agent) < 0 && uv_hrtime() < deadline)
                        uv_run(&t->loop, UV_RUN_ONCE);
                assert_int_equal(cvm_agent_exit_status(t->agent), 1);
                cvm_agent_free(t->agent);
        }
        uv_run(&t->loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&t->loop), 0);
        if (t->peer_fd >= 0)
                close(t->peer_fd);
        for (size_t i = 0; i < CVM_ARRAY_SIZE(t->res); i++)
                free(t->res[i].out);
        free(t);
}

static void invoke(harness *t, uint64_t id, uint32_t timeout_ms, const void *body, size_t len) {
        cvm_error err = {0};
        int r = cvm_agent_client_invoke(t->client, id, timeout_ms, body, len, on_result, t, &err);
        if (r < 0)
                fail_msg("invoke %llu: %s", (unsigned long long)id, err.message);
}

/* A handler argv that lives as long as the enclosing block. */
#define SH(script) ((char *const[]){"/bin/sh", "-c", script, NULL})

static void test_cat_small_and_large(void **state) {
        (void)state;
        char *argv[] = {"/bin/cat", NULL};
        harness *t = setup(argv, 1, 0);
        const cvm_agent_hello *h = cvm_agent_client_hello(t->client);
        assert_non_null(h);
        assert_int_equal(h->max_concurrency, 1);
        assert_true(h->capabilities & CVM_AGENT_CAP_EXEC);

        invoke(t, 0, 5000, "hello, agent", 12);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].err_code, 0);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_OK);
        assert_int_equal(t->res[0].out_len, 12);
        assert_memory_equal(t->res[0].out, "hello, agent", 12);
        assert_true(t->res[0].exec_us > 0 && t->res[0].exec_us < 5000000);

        /* 4 MiB through the handler and back: stdin is written while stdout is read. */
        size_t len = 4u << 20;
        uint8_t *big = malloc(len);
        for (size_t i = 0; i < len; i++)
                big[i] = (uint8_t)(i ^ (i >> 11));
        invoke(t, 1, 20000, big, len);
        run_until(t, &t->res[1].done, 20000);
        assert_int_equal(t->res[1].status, CVM_AGENT_STATUS_OK);
        assert_int_equal(t->res[1].out_len, len);
        assert_memory_equal(t->res[1].out, big, len);
        free(big);

        /* An empty body gives the handler an immediate EOF. */
        invoke(t, 2, 5000, NULL, 0);
        run_until(t, &t->res[2].done, 5000);
        assert_int_equal(t->res[2].status, CVM_AGENT_STATUS_OK);
        assert_int_equal(t->res[2].out_len, 0);
        assert_int_equal(cvm_agent_client_pending(t->client), 0);
        teardown(t);
}

static void test_failures(void **state) {
        (void)state;
        /* One handler script acting on its input: fail by exit, by signal, or ignore stdin. */
        harness *t = setup(SH("read mode; case $mode in "
                              "exit) echo oops >&2; echo partial; exit 3;; "
                              "signal) kill -TERM $$;; "
                              "*) exit 0;; esac"),
                           1, 0);
        invoke(t, 0, 5000, "exit\n", 5);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_FAILED);
        assert_int_equal(t->res[0].exit_code, 3);
        assert_int_equal(t->res[0].term_signal, 0);
        assert_string_equal(t->res[0].stderr_tail, "oops\n");
        assert_int_equal(t->res[0].out_len, 8);
        assert_memory_equal(t->res[0].out, "partial\n", 8);

        invoke(t, 1, 5000, "signal\n", 7);
        run_until(t, &t->res[1].done, 5000);
        assert_int_equal(t->res[1].status, CVM_AGENT_STATUS_FAILED);
        assert_int_equal(t->res[1].exit_code, 0);
        assert_int_equal(t->res[1].term_signal, SIGTERM);

        /* The handler exits without reading 1 MiB of input: not an agent error. */
        size_t len = 1u << 20;
        uint8_t *big = calloc(1, len);
        big[0] = 'x', big[1] = '\n';
        invoke(t, 2, 5000, big, len);
        run_until(t, &t->res[2].done, 5000);
        assert_int_equal(t->res[2].status, CVM_AGENT_STATUS_OK);
        free(big);
        teardown(t);
}

static void test_spawn_error(void **state) {
        (void)state;
        char *argv[] = {"/nonexistent/handler", NULL};
        harness *t = setup(argv, 1, 0);
        invoke(t, 0, 5000, "x", 1);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_SPAWN_ERROR);
        assert_non_null(strstr(t->res[0].stderr_tail, "/nonexistent/handler"));
        assert_non_null(strstr(t->res[0].stderr_tail, "no such file"));
        teardown(t);
}

/* Live (not zombie) processes in a process group, from /proc. */
static int live_in_group(int pgid) {
        CVM_CLEANUP(closedirp) DIR *d = opendir("/proc");
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                char path[300], buf[512];
                snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
                _cleanup_fclose_ FILE *f = fopen(path, "re");
                if (!f || !fgets(buf, sizeof(buf), f))
                        continue;
                char *p = strrchr(buf, ')');
                char state;
                int ppid, pgrp;
                if (p && sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
                    state != 'Z' && state != 'X')
                        n++;
        }
        return n;
}

static void test_timeout_kills_group(void **state) {
        (void)state;
        /* The shell prints its pid (= its process group) and leaves a background child. */
        harness *t = setup(SH("echo $$ >&2; sleep 10 & sleep 10; wait"), 1, 0);
        uint64_t start = uv_hrtime();
        invoke(t, 0, 200, NULL, 0);
        run_until(t, &t->res[0].done, 5000);
        uint64_t took_ms = (t->res[0].at_ns - start) / 1000000;
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_TIMEOUT);
        /* libuv's loop clock counts whole milliseconds, so the timer may fire up to 1 ms early. */
        assert_true(took_ms >= 199 && took_ms < 2000);
        assert_int_equal(t->res[0].out_len, 0);
        int pgid = atoi(t->res[0].stderr_tail);
        assert_true(pgid > 1);
        uint64_t deadline = uv_hrtime() + UINT64_C(2000000000);
        while (live_in_group(pgid) > 0 && uv_hrtime() < deadline)
                usleep(10000);
        assert_int_equal(live_in_group(pgid), 0);
        teardown(t);
}

static void test_busy(void **state) {
        (void)state;
        harness *t = setup(SH("sleep 0.3; cat"), 1, 0);
        invoke(t, 0, 5000, "first", 5);
        invoke(t, 1, 5000, "second", 6);
        run_until(t, &t->res[1].done, 5000);
        assert_int_equal(t->res[1].status, CVM_AGENT_STATUS_BUSY);
        assert_false(t->res[0].done);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_OK);
        assert_memory_equal(t->res[0].out, "first", 5);
        /* The slot is free again. */
        invoke(t, 2, 5000, "third", 5);
        run_until(t, &t->res[2].done, 5000);
        assert_int_equal(t->res[2].status, CVM_AGENT_STATUS_OK);
        teardown(t);
}

static void test_response_too_large(void **state) {
        (void)state;
        /* yes never stops on its own: the limit must kill it. */
        char *argv[] = {"yes", NULL};
        harness *t = setup(argv, 1, 1000);
        assert_int_equal(cvm_agent_client_hello(t->client)->max_response, 1000);
        invoke(t, 0, 10000, NULL, 0);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_TOO_LARGE);
        assert_int_equal(t->res[0].out_len, 0);
        teardown(t);
}

static void test_agent_dies_mid_invocation(void **state) {
        (void)state;
        harness *t = setup(SH("exec sleep 10"), 2, 0);
        invoke(t, 0, 20000, NULL, 0);
        invoke(t, 1, 20000, NULL, 0);
        run_for(t, 100);
        assert_int_equal(cvm_agent_client_pending(t->client), 2);
        /* The connection breaks as if the agent's VM died. */
        assert_int_equal(shutdown(t->agent_fd, SHUT_RDWR), 0);
        run_until(t, &t->closed, 5000);
        assert_int_equal(t->closed_err.code, -ECONNRESET);
        /* The owner heard of the loss before any invocation failed. */
        assert_true(t->lost);
        assert_int_equal(t->answered_at_lost, 0);
        for (int i = 0; i < 2; i++) {
                assert_true(t->res[i].done);
                assert_int_equal(t->res[i].err_code, -ECONNRESET);
        }
        assert_int_equal(cvm_agent_client_pending(t->client), 0);
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_invoke(t->client, 3, 100, "", 0, on_result, t, &err),
                         -ENOTCONN);
        teardown(t);
}

static void test_shutdown(void **state) {
        (void)state;
        harness *t = setup(SH("exec sleep 10"), 1, 0);
        invoke(t, 0, 20000, NULL, 0);
        run_for(t, 50);
        uint64_t start = uv_hrtime();
        assert_int_equal(cvm_agent_client_shutdown(t->client, NULL), 0);
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_invoke(t->client, 1, 100, "", 0, on_result, t, &err),
                         -ESHUTDOWN);
        run_until(t, &t->closed, 5000);
        assert_true(uv_hrtime() - start < UINT64_C(2000000000));
        assert_int_equal(t->closed_err.code, 0);
        assert_int_equal(t->res[0].err_code, -ECANCELED);
        uint64_t deadline = uv_hrtime() + UINT64_C(2000000000);
        while (cvm_agent_exit_status(t->agent) < 0 && uv_hrtime() < deadline)
                uv_run(&t->loop, UV_RUN_ONCE);
        assert_int_equal(cvm_agent_exit_status(t->agent), 0);
        cvm_agent_free(t->agent);
        t->agent = NULL;
        teardown(t);
}

static void test_heartbeat(void **state) {
        (void)state;
        /* A live agent answers every PING. */
        char *argv[] = {"/bin/cat", NULL};
        harness *t = calloc(1, sizeof(*t));
        assert_int_equal(uv_loop_init(&t->loop), 0);
        int fds[2];
        make_pair(fds);
        t->peer_fd = -1;
        start_agent(t, fds[1], argv, 1, 0);
        cvm_agent_client_opts opts = {.heartbeat_interval_ms = 20, .heartbeat_misses = 2};
        start_client(t, fds[0], &opts);
        run_for(t, 300);
        assert_true(t->hello);
        assert_false(t->closed);
        teardown(t);

        /* Before its HELLO a peer is not pinged, however long it takes: the
         * host's boot timeout bounds that wait, not the heartbeat. */
        t = raw_peer(&opts, 0);
        run_for(t, 200);
        assert_false(t->closed);
        uint8_t none[64];
        assert_int_equal(recv(t->peer_fd, none, sizeof(none), MSG_DONTWAIT), -1);
        assert_int_equal(errno, EAGAIN);
        teardown(t);

        /* A peer that says HELLO and then nothing is declared dead. */
        t = raw_peer(&opts, 0);
        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 1,
                             .max_request = 100,
                             .agent_version = "fake"};
        peer_hello(t, &h);
        run_until(t, &t->closed, 2000);
        assert_true(t->hello);
        assert_int_equal(t->closed_err.code, -ETIMEDOUT);
        assert_non_null(strstr(t->closed_err.message, "heartbeat"));
        teardown(t);
}

/* Reads n frames from the raw end of t into frames (their payloads are
 * not kept). Runs the loop while waiting, unless run is false: then the
 * frames must be on the socket already. */
static void read_frames(harness *t, bool run, size_t n, cvm_agent_frame *frames) {
        cvm_agent_decoder d;
        cvm_agent_decoder_init(&d, 0);
        static uint8_t buf[1 << 16];
        size_t got = 0;
        uint64_t deadline = uv_hrtime() + UINT64_C(2000000000);
        while (got < n && uv_hrtime() < deadline) {
                if (run)
                        uv_run(&t->loop, UV_RUN_NOWAIT);
                ssize_t k = recv(t->peer_fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (k <= 0) {
                        assert_true(run);
                        usleep(1000);
                        continue;
                }
                /* Whole frames only, and no more than n of them. */
                for (size_t off = 0; off < (size_t)k;) {
                        size_t used;
                        cvm_agent_frame f;
                        int r = cvm_agent_decoder_feed(&d, buf + off, (size_t)k - off, &used, &f,
                                                       NULL);
                        assert_true(r >= 0);
                        off += used;
                        if (r == 1) {
                                if (got == n)
                                        fail_msg("more than %zu frames from the peer", n);
                                frames[got] = f;
                                frames[got++].payload = NULL;
                                cvm_agent_decoder_release(&d);
                        }
                }
        }
        if (got < n || d.header_len)
                fail_msg("%zu of %zu frames from the peer, or one cut short", got, n);
        cvm_agent_decoder_release(&d);
}

/* Frames leave at once when nothing waits before them, so that the agent
 * can start while the loop turn goes on; behind a frame the socket did not
 * take whole, they wait their turn. */
static void test_frames_leave_early_in_order(void **state) {
        (void)state;
        /* A send buffer far below the 3 MiB frame, whatever the host's default. */
        harness *t = raw_peer(NULL, 64 << 10);
        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 4,
                             .max_request = 4u << 20,
                             .max_response = 100,
                             .agent_version = "fake"};
        peer_hello(t, &h);

        /* Both on the socket before the loop runs again. */
        cvm_agent_frame f[2];
        invoke(t, 0, 1000, "a", 1);
        invoke(t, 1, 1000, "bc", 2);
        read_frames(t, false, 2, f);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(f[i].type, CVM_AGENT_MSG_INVOKE);
                assert_int_equal(f[i].id, i);
        }
        assert_true(f[1].len == f[0].len + 1); /* Frames hold their bodies whole. */

        /* 3 MiB do not fit the socket: the small frame after them waits. */
        size_t big = 3u << 20;
        char *body = calloc(1, big);
        assert_non_null(body);
        invoke(t, 2, 1000, body, big);
        free(body);
        invoke(t, 3, 1000, "d", 1);
        read_frames(t, true, 2, f);
        assert_int_equal(f[0].type, CVM_AGENT_MSG_INVOKE);
        assert_int_equal(f[0].id, 2);
        assert_true(f[0].len > big);
        assert_int_equal(f[1].type, CVM_AGENT_MSG_INVOKE);
        assert_int_equal(f[1].id, 3);
        assert_true(f[1].len < 100);

        /* The peer goes away: every invocation learns of it. */
        close(t->peer_fd);
        t->peer_fd = -1;
        run_until(t, &t->closed, 2000);
        for (int i = 0; i < 4; i++)
                assert_true(t->res[i].done);
        teardown(t);
}

/* A raw "agent" sends bytes to a fresh client; returns how the client closed. */
static int client_sees(const void *bytes, size_t len, bool with_hello, char *message,
                       size_t message_size) {
        harness *t = raw_peer(NULL, 0);
        if (with_hello) {
                cvm_agent_hello h = {.proto_version = 1,
                                     .max_concurrency = 1,
                                     .max_request = 100,
                                     .max_response = 100,
                                     .agent_version = "fake"};
                peer_hello(t, &h);
                /* One invocation in flight, so RESULT 0 is expected and others are not. */
                invoke(t, 0, 1000, "x", 1);
        }
        assert_int_equal(write(t->peer_fd, bytes, len), (ssize_t)len);
        run_until(t, &t->closed, 2000);
        int code = t->closed_err.code;
        snprintf(message, message_size, "%s", t->closed_err.message);
        if (with_hello) {
                /* The pending invocation learned of the failure too. */
                assert_true(t->res[0].done);
                assert_int_equal(t->res[0].err_code, code);
        }
        teardown(t);
        return code;
}

static void test_client_rejects_bad_agent(void **state) {
        (void)state;
        char msg[CVM_ERROR_MESSAGE_MAX];
        uint8_t buf[256];
        cvm_agent_msg m;

        assert_int_equal(client_sees("GARBAGE GARBAGE GARBAGE", 23, false, msg, sizeof(msg)),
                         -EPROTO);
        assert_non_null(strstr(msg, "magic"));

        cvm_agent_encode_empty(CVM_AGENT_MSG_PONG, 1, &m);
        assert_int_equal(client_sees(m.head, m.head_len, false, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "PONG before HELLO"));

        cvm_agent_hello h = {.proto_version = 2,
                             .max_concurrency = 1,
                             .max_request = 100,
                             .agent_version = "future"};
        assert_int_equal(cvm_agent_encode_hello(&h, &m, NULL), 0);
        assert_int_equal(client_sees(m.head, m.head_len, false, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "protocol version 2"));

        h.proto_version = 1;
        h.max_response = 9u << 20; /* Results could not fit in the host's 8 MiB frames. */
        assert_int_equal(cvm_agent_encode_hello(&h, &m, NULL), 0);
        assert_int_equal(client_sees(m.head, m.head_len, false, msg, sizeof(msg)), -EMSGSIZE);

        h.max_response = 100;
        assert_int_equal(cvm_agent_encode_hello(&h, &m, NULL), 0);
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "second HELLO"));

        cvm_agent_result r = {.status = CVM_AGENT_STATUS_OK};
        assert_int_equal(cvm_agent_encode_result(77, &r, &m, NULL), 0);
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "unknown invocation 77"));

        /* RESULT 0 with output beyond what the agent announced. */
        uint8_t out[101] = {0};
        r.output = out;
        r.output_len = sizeof(out);
        assert_int_equal(cvm_agent_encode_result(0, &r, &m, NULL), 0);
        size_t n = m.head_len;
        memcpy(buf, m.head, n);
        memcpy(buf + n, out, sizeof(out));
        assert_int_equal(client_sees(buf, n + sizeof(out), true, msg, sizeof(msg)), -EPROTO);

        cvm_agent_encode_empty(CVM_AGENT_MSG_PONG, 1, &m);
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "answers no PING"));

        cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, 0, &m);
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EPROTO);

        assert_int_equal(cvm_agent_encode_invoke(1, 10, NULL, 0, &m, NULL), 0);
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "unexpected INVOKE"));

        /* A header announcing 1 GiB is refused before anything is allocated. */
        cvm_agent_encode_empty(CVM_AGENT_MSG_RESULT, 0, &m);
        m.head[19] = 0x40;
        assert_int_equal(client_sees(m.head, m.head_len, true, msg, sizeof(msg)), -EMSGSIZE);
}

/* A raw "host" talks to a fresh agent; returns the agent's exit status. */
static int agent_sees(const void *bytes, size_t len) {
        char *argv[] = {"/bin/cat", NULL};
        harness *t = calloc(1, sizeof(*t));
        assert_int_equal(uv_loop_init(&t->loop), 0);
        int fds[2];
        make_pair(fds);
        t->peer_fd = fds[0];
        start_agent(t, fds[1], argv, 1, 0);
        cvm_agent_frame f;
        read_frames(t, true, 1, &f);
        assert_int_equal(f.type, CVM_AGENT_MSG_HELLO);

        /* The agent answers a PING with its id. */
        cvm_agent_msg m;
        cvm_agent_encode_empty(CVM_AGENT_MSG_PING, 31, &m);
        assert_int_equal(write(t->peer_fd, m.head, m.head_len), (ssize_t)m.head_len);
        read_frames(t, true, 1, &f);
        assert_int_equal(f.type, CVM_AGENT_MSG_PONG);
        assert_int_equal(f.id, 31);

        assert_int_equal(write(t->peer_fd, bytes, len), (ssize_t)len);
        uint64_t deadline = uv_hrtime() + UINT64_C(2000000000);
        while (cvm_agent_exit_status(t->agent) < 0 && uv_hrtime() < deadline)
                uv_run(&t->loop, UV_RUN_ONCE);
        int status = cvm_agent_exit_status(t->agent);
        cvm_agent_free(t->agent);
        t->agent = NULL;
        teardown(t);
        return status;
}

static void test_agent_rejects_bad_host(void **state) {
        (void)state;
        cvm_agent_msg m;
        assert_int_equal(agent_sees("NOT A FRAME AT ALL!!!!", 22), 1);
        cvm_agent_result r = {.status = CVM_AGENT_STATUS_OK};
        assert_int_equal(cvm_agent_encode_result(1, &r, &m, NULL), 0);
        assert_int_equal(agent_sees(m.head, m.head_len), 1);
        cvm_agent_encode_empty(CVM_AGENT_MSG_PONG, 1, &m);
        assert_int_equal(agent_sees(m.head, m.head_len), 1);
        assert_int_equal(cvm_agent_encode_invoke(1, 10, NULL, 0, &m, NULL), 0);
        m.head[CVM_AGENT_HEADER_SIZE] = 0; /* Timeout 0. */
        assert_int_equal(agent_sees(m.head, m.head_len), 1);
        cvm_agent_encode_empty(CVM_AGENT_MSG_INVOKE, 1, &m);
        m.head[19] = 0x7f; /* ~2 GiB. */
        assert_int_equal(agent_sees(m.head, m.head_len), 1);
        /* A clean SHUTDOWN is acknowledged and exits 0. */
        cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, 5, &m);
        assert_int_equal(agent_sees(m.head, m.head_len), 0);
}

static void test_free_from_callback(void **state) {
        (void)state;
        harness *t = setup(SH("exec cat"), 2, 0);
        t->free_in_callback = true;
        invoke(t, 0, 5000, "a", 1);
        invoke(t, 1, 5000, "b", 1);
        run_for(t, 500);
        /* The first result frees the client; nothing is reported after that. */
        assert_null(t->client);
        assert_int_equal(t->res[0].done + t->res[1].done, 1);
        assert_false(t->closed);
        teardown(t);
}

/* ---- Attestation ---- */

/* Records attestation answers in the order they arrive. */
static void on_attest(cvm_agent_client *c, const cvm_agent_attest_result *r, const cvm_error *err,
                      void *userdata) {
        harness *t = userdata;
        (void)c;
        assert_true(t->n_att < CVM_ARRAY_SIZE(t->att));
        attest_res *a = &t->att[t->n_att++];
        a->done = true;
        if (err) {
                assert_null(r);
                a->err_code = err->code;
                return;
        }
        a->status = r->status;
        a->error = r->error;
        assert_true(r->public_key_len <= sizeof(a->key));
        memcpy(a->key, r->public_key, r->public_key_len);
        a->key_len = r->public_key_len;
        memcpy(a->report_data, r->report_data, 64);
        a->report_len = r->report_len;
        a->has_report = r->report != NULL;
}

static void attest(harness *t, const uint8_t nonce[64]) {
        cvm_error err = {0};
        if (cvm_agent_client_attest(t->client, nonce, on_attest, t, &err) < 0)
                fail_msg("attest: %s", err.message);
}

static void run_until_attests(harness *t, size_t n) {
        uint64_t deadline = uv_hrtime() + UINT64_C(5000000000);
        while (t->n_att < n && uv_hrtime() < deadline)
                uv_run(&t->loop, UV_RUN_ONCE);
        assert_int_equal(t->n_att, n);
}

/* REPORT_DATA recomputed here from the formula in docs/agent-protocol.md. */
static void check_binding(const attest_res *a, const uint8_t nonce[64]) {
        uint8_t buf[13 + 48 + 64], expect[64];
        memcpy(buf, "cvm-attest-v1", 13);
        assert_int_equal(EVP_Digest(a->key, a->key_len, buf + 13, NULL, EVP_sha384(), NULL), 1);
        memcpy(buf + 13 + 48, nonce, 64);
        assert_int_equal(EVP_Digest(buf, sizeof(buf), expect, NULL, EVP_sha512(), NULL), 1);
        assert_memory_equal(a->report_data, expect, 64);
        const unsigned char *p = a->key;
        EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)a->key_len);
        assert_non_null(k);
        assert_true(EVP_PKEY_is_a(k, "EC"));
        assert_int_equal(EVP_PKEY_get_bits(k), 384);
        EVP_PKEY_free(k);
}

static void test_attest(void **state) {
        (void)state;
        char *argv[] = {"/bin/cat", NULL};
        harness *t = setup(argv, 1, 0);
        assert_true(cvm_agent_client_hello(t->client)->capabilities & CVM_AGENT_CAP_ATTEST);
        uint8_t n1[64], n2[64];
        for (int i = 0; i < 64; i++)
                n1[i] = (uint8_t)i, n2[i] = (uint8_t)(255 - i);

        attest(t, n1);
        assert_int_equal(cvm_agent_client_attests_pending(t->client), 1);
        run_until_attests(t, 1);
        attest_res *a = &t->att[0];
        assert_int_equal(a->err_code, 0);
        /* No SNP device: the key and REPORT_DATA, and no report. */
        assert_int_equal(a->status, CVM_AGENT_ATTEST_NO_DEVICE);
        assert_false(a->has_report);
        assert_int_equal(a->report_len, 0);
        check_binding(a, n1);

        /* The bound of requests in flight is the client's: the fifth waits. */
        attest(t, n2);
        attest(t, n1);
        attest(t, n2);
        attest(t, n1);
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_attest(t->client, n1, on_attest, t, &err), -EBUSY);
        assert_int_equal(cvm_agent_client_attests_pending(t->client), 4);
        run_until_attests(t, 5);
        assert_int_equal(cvm_agent_client_attests_pending(t->client), 0);
        /* Answers may come in any order: each is matched to its nonce by REPORT_DATA. */
        int n1_count = 0;
        for (size_t i = 1; i < 5; i++) {
                /* One key for the agent's life; REPORT_DATA follows the nonce. */
                assert_int_equal(t->att[i].err_code, 0);
                assert_int_equal(t->att[i].key_len, a->key_len);
                assert_memory_equal(t->att[i].key, a->key, a->key_len);
                bool is_n1 = memcmp(t->att[i].report_data, a->report_data, 64) == 0;
                n1_count += is_n1;
                check_binding(&t->att[i], is_n1 ? n1 : n2);
        }
        assert_int_equal(n1_count, 2);
        /* Invocations still work alongside. */
        invoke(t, 0, 5000, "x", 1);
        run_until(t, &t->res[0].done, 5000);
        assert_int_equal(t->res[0].status, CVM_AGENT_STATUS_OK);
        attest_res first = *a;
        teardown(t);

        /* Another agent has another key. */
        t = setup(argv, 1, 0);
        attest(t, n1);
        run_until_attests(t, 1);
        assert_int_equal(t->att[0].key_len, first.key_len);
        assert_memory_not_equal(t->att[0].key, first.key, first.key_len);
        check_binding(&t->att[0], n1);
        teardown(t);
}

static void test_attest_device_fails(void **state) {
        (void)state;
        /* A device that is not the SNP guest driver: the ioctl fails, and the agent says so. */
        char path[UNIT_TMP_MAX];
        unit_tmp_path(path, sizeof(path), "cvm-sev-guest-XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        char *argv[] = {"/bin/cat", NULL};
        harness *t = setup_with(argv, 1, 0, path);
        uint8_t nonce[64] = {42};
        attest(t, nonce);
        run_until_attests(t, 1);
        assert_int_equal(t->att[0].err_code, 0);
        assert_int_equal(t->att[0].status, CVM_AGENT_ATTEST_FAILED);
        assert_int_equal(t->att[0].error, ENOTTY);
        assert_false(t->att[0].has_report);
        check_binding(&t->att[0], nonce);
        teardown(t);
        unlink(path);
}

static void test_attest_connection_dies(void **state) {
        (void)state;
        char *argv[] = {"/bin/cat", NULL};
        harness *t = setup(argv, 1, 0);
        uint8_t nonce[64] = {1};
        attest(t, nonce);
        attest(t, nonce);
        /* The VM dies before the agent can answer. */
        assert_int_equal(shutdown(t->agent_fd, SHUT_RDWR), 0);
        run_until(t, &t->closed, 5000);
        assert_int_equal(t->closed_err.code, -ECONNRESET);
        assert_true(t->lost);
        assert_int_equal(t->answered_at_lost, 0);
        assert_int_equal(t->n_att, 2);
        assert_int_equal(t->att[0].err_code, -ECONNRESET);
        assert_int_equal(t->att[1].err_code, -ECONNRESET);
        assert_int_equal(cvm_agent_client_attests_pending(t->client), 0);
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_attest(t->client, nonce, on_attest, t, &err), -ENOTCONN);
        teardown(t);
}

/* A client facing a raw agent that has sent the given HELLO capabilities. */
static harness *raw_agent(uint32_t capabilities) {
        harness *t = raw_peer(NULL, 0);
        cvm_error err = {0};
        uint8_t nonce[64] = {0};
        assert_int_equal(cvm_agent_client_attest(t->client, nonce, on_attest, t, &err), -ENOTCONN);
        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 1,
                             .capabilities = capabilities,
                             .max_request = 100,
                             .max_response = 100,
                             .agent_version = "fake"};
        peer_hello(t, &h);
        return t;
}

static void test_attest_old_agent(void **state) {
        (void)state;
        /* An agent without the capability is never sent an ATTEST. */
        harness *t = raw_agent(CVM_AGENT_CAP_EXEC | 0x80);
        uint8_t nonce[64] = {0}, buf[64];
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_attest(t->client, nonce, on_attest, t, &err), -ENOTSUP);
        assert_non_null(strstr(err.message, "does not attest"));
        run_for(t, 20);
        assert_int_equal(recv(t->peer_fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
        assert_int_equal(errno, EAGAIN);
        assert_int_equal(t->n_att, 0);
        teardown(t);

        /* A frame limit too small for an answer is refused up front. */
        cvm_agent_client_opts opts = {.max_payload = 1000};
        t = raw_peer(&opts, 0);
        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 1,
                             .capabilities = CVM_AGENT_CAP_ATTEST,
                             .max_request = 100,
                             .max_response = 100,
                             .agent_version = "fake"};
        peer_hello(t, &h);
        assert_int_equal(cvm_agent_client_attest(t->client, nonce, on_attest, t, &err), -EMSGSIZE);
        teardown(t);
}

/* Reads the client's ATTEST from the raw agent's end. */
static void read_attest(harness *t, uint64_t *id, uint8_t nonce[64]) {
        uint8_t buf[CVM_AGENT_HEADER_SIZE + 64];
        size_t got = 0;
        uint64_t deadline = uv_hrtime() + UINT64_C(2000000000);
        while (got < sizeof(buf) && uv_hrtime() < deadline) {
                uv_run(&t->loop, UV_RUN_NOWAIT);
                ssize_t n = recv(t->peer_fd, buf + got, sizeof(buf) - got, MSG_DONTWAIT);
                if (n > 0)
                        got += (size_t)n;
                else
                        usleep(1000);
        }
        assert_int_equal(got, sizeof(buf));
        cvm_agent_decoder d;
        cvm_agent_decoder_init(&d, 0);
        cvm_agent_frame f;
        size_t used;
        assert_int_equal(cvm_agent_decoder_feed(&d, buf, got, &used, &f, NULL), 1);
        assert_int_equal(f.type, CVM_AGENT_MSG_ATTEST);
        assert_int_equal(cvm_agent_attest_decode(&f, nonce, NULL), 0);
        *id = f.id;
        cvm_agent_decoder_release(&d);
}

/* Sends an ATTEST_RESULT for id from the raw agent, with key and report_data as given. */
static void send_attest_result(harness *t, uint64_t id, const uint8_t *key, size_t key_len,
                               const uint8_t report_data[64]) {
        cvm_agent_attest_result r = {
                .status = CVM_AGENT_ATTEST_NO_DEVICE, .public_key = key, .public_key_len = key_len};
        memcpy(r.report_data, report_data, 64);
        cvm_agent_msg m;
        assert_int_equal(cvm_agent_encode_attest_result(id, &r, &m, NULL), 0);
        uint8_t buf[1024];
        size_t n = m.head_len;
        memcpy(buf, m.head, n);
        memcpy(buf + n, key, key_len);
        n += key_len;
        assert_int_equal(write(t->peer_fd, buf, n), (ssize_t)n);
}

static size_t new_key(uint8_t *der) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        assert_non_null(k);
        unsigned char *p = der;
        int n = i2d_PUBKEY(k, &p);
        assert_true(n > 0 && n <= CVM_AGENT_MAX_PUBLIC_KEY);
        EVP_PKEY_free(k);
        return (size_t)n;
}

static void test_client_rejects_bad_attest(void **state) {
        (void)state;
        uint8_t key[CVM_AGENT_MAX_PUBLIC_KEY], key2[CVM_AGENT_MAX_PUBLIC_KEY], rd[64], nonce[64];
        size_t key_len = new_key(key), key2_len = new_key(key2);
        uint8_t mine[64] = {7};
        uint64_t id;

        /* REPORT_DATA that does not bind the key to the client's nonce. */
        harness *t = raw_agent(CVM_AGENT_CAP_ATTEST);
        attest(t, mine);
        read_attest(t, &id, nonce);
        assert_memory_equal(nonce, mine, 64);
        nonce[0] ^= 1;
        assert_int_equal(cvm_agent_attest_report_data(key, key_len, nonce, rd, NULL), 0);
        send_attest_result(t, id, key, key_len, rd);
        run_until(t, &t->closed, 2000);
        assert_int_equal(t->closed_err.code, -EPROTO);
        assert_non_null(strstr(t->closed_err.message, "REPORT_DATA does not bind"));
        assert_int_equal(t->n_att, 1);
        assert_int_equal(t->att[0].err_code, -EPROTO);
        teardown(t);

        /* An answer to no request. */
        t = raw_agent(CVM_AGENT_CAP_ATTEST);
        attest(t, mine);
        read_attest(t, &id, nonce);
        assert_int_equal(cvm_agent_attest_report_data(key, key_len, nonce, rd, NULL), 0);
        send_attest_result(t, id + 1, key, key_len, rd);
        run_until(t, &t->closed, 2000);
        assert_int_equal(t->closed_err.code, -EPROTO);
        assert_non_null(strstr(t->closed_err.message, "unknown request"));
        teardown(t);

        /* A second answer with another key. */
        t = raw_agent(CVM_AGENT_CAP_ATTEST);
        attest(t, mine);
        read_attest(t, &id, nonce);
        assert_int_equal(cvm_agent_attest_report_data(key, key_len, nonce, rd, NULL), 0);
        send_attest_result(t, id, key, key_len, rd);
        run_until_attests(t, 1);
        assert_int_equal(t->att[0].err_code, 0);
        assert_false(t->closed);
        attest(t, mine);
        read_attest(t, &id, nonce);
        assert_int_equal(cvm_agent_attest_report_data(key2, key2_len, nonce, rd, NULL), 0);
        send_attest_result(t, id, key2, key2_len, rd);
        run_until(t, &t->closed, 2000);
        assert_int_equal(t->closed_err.code, -EPROTO);
        assert_non_null(strstr(t->closed_err.message, "changes the agent's key"));
        assert_int_equal(t->att[1].err_code, -EPROTO);
        teardown(t);

        /* A requested shutdown cancels what is pending. */
        t = raw_agent(CVM_AGENT_CAP_ATTEST);
        attest(t, mine);
        read_attest(t, &id, nonce);
        assert_int_equal(cvm_agent_client_shutdown(t->client, NULL), 0);
        cvm_error err = {0};
        assert_int_equal(cvm_agent_client_attest(t->client, mine, on_attest, t, &err), -ESHUTDOWN);
        cvm_agent_msg m;
        cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, 0, &m);
        assert_int_equal(write(t->peer_fd, m.head, m.head_len), (ssize_t)m.head_len);
        run_until(t, &t->closed, 2000);
        assert_int_equal(t->closed_err.code, 0);
        assert_int_equal(t->att[0].err_code, -ECANCELED);
        teardown(t);
}

/* n ATTEST frames with the given ids, back to back, then an optional SHUTDOWN. */
static size_t attest_frames(uint8_t *buf, const uint64_t *ids, size_t n, bool shutdown_after) {
        uint8_t nonce[64] = {5};
        size_t len = 0;
        cvm_agent_msg m;
        for (size_t i = 0; i < n; i++) {
                cvm_agent_encode_attest(ids[i], nonce, &m);
                memcpy(buf + len, m.head, m.head_len);
                len += m.head_len;
        }
        if (shutdown_after) {
                cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, 9, &m);
                memcpy(buf + len, m.head, m.head_len);
                len += m.head_len;
        }
        return len;
}

static void test_agent_rejects_bad_attest(void **state) {
        (void)state;
        uint8_t buf[1024];
        cvm_agent_msg m;
        uint8_t nonce[64] = {0};
        /* A nonce of 63 bytes. */
        cvm_agent_encode_attest(1, nonce, &m);
        m.head[16] = 63;
        assert_int_equal(agent_sees(m.head, m.head_len - 1), 1);
        /* Two outstanding with one id; five outstanding (sent in one write, so none is
         * answered before the agent reads them all). */
        uint64_t ids[5] = {1, 2, 3, 4, 5}, dup[2] = {7, 7};
        assert_int_equal(agent_sees(buf, attest_frames(buf, dup, 2, false)), 1);
        assert_int_equal(agent_sees(buf, attest_frames(buf, ids, 5, false)), 1);
        /* Four are allowed; a SHUTDOWN behind them abandons their answers and exits 0. */
        assert_int_equal(agent_sees(buf, attest_frames(buf, ids, 4, true)), 0);
        /* An ATTEST_RESULT is the agent's to send. */
        uint8_t key[120] = {0};
        cvm_agent_attest_result r = {.status = CVM_AGENT_ATTEST_NO_DEVICE,
                                     .public_key = key,
                                     .public_key_len = sizeof(key)};
        assert_int_equal(cvm_agent_encode_attest_result(1, &r, &m, NULL), 0);
        memcpy(buf, m.head, m.head_len);
        memcpy(buf + m.head_len, key, sizeof(key));
        assert_int_equal(agent_sees(buf, m.head_len + sizeof(key)), 1);

        /* Freed abruptly with a report request in the thread pool: the memory waits for it. */
        char *argv[] = {"/bin/cat", NULL};
        harness *t = calloc(1, sizeof(*t));
        assert_int_equal(uv_loop_init(&t->loop), 0);
        int fds[2];
        make_pair(fds);
        t->peer_fd = fds[0];
        start_agent(t, fds[1], argv, 1, 0);
        size_t len = attest_frames(buf, ids, 3, false);
        assert_int_equal(write(t->peer_fd, buf, len), (ssize_t)len);
        uv_run(&t->loop, UV_RUN_NOWAIT);
        cvm_agent_free(t->agent);
        t->agent = NULL;
        teardown(t);
}

int main(void) {
        /* A dropped peer must surface as a write error, not kill the test. */
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cat_small_and_large),
                cmocka_unit_test(test_failures),
                cmocka_unit_test(test_spawn_error),
                cmocka_unit_test(test_timeout_kills_group),
                cmocka_unit_test(test_busy),
                cmocka_unit_test(test_response_too_large),
                cmocka_unit_test(test_agent_dies_mid_invocation),
                cmocka_unit_test(test_shutdown),
                cmocka_unit_test(test_heartbeat),
                cmocka_unit_test(test_frames_leave_early_in_order),
                cmocka_unit_test(test_client_rejects_bad_agent),
                cmocka_unit_test(test_agent_rejects_bad_host),
                cmocka_unit_test(test_free_from_callback),
                cmocka_unit_test(test_attest),
                cmocka_unit_test(test_attest_device_fails),
                cmocka_unit_test(test_attest_connection_dies),
                cmocka_unit_test(test_attest_old_agent),
                cmocka_unit_test(test_client_rejects_bad_attest),
                cmocka_unit_test(test_agent_rejects_bad_attest),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
