/* cvm-guest-probe: drives the agent of a booted guest through the host's
 * own client (daemon/host/agent_client.h), over the Unix socket QEMU serves
 * for the agent's virtio-serial port. It connects (retrying until QEMU has
 * created the socket), waits for HELLO, runs its steps in order (INVOKEs,
 * checked against expectations, and ATTESTs), then sends SHUTDOWN and waits
 * for the acknowledgement. It prints one line per event, with the time from
 * --t0-ns (the moment QEMU was started) to HELLO, and exits 0 only if every
 * expectation held. Used by tests/integration/test_guest.sh. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "agent_client.h"
#include "agent_proto.h"
#include "log.h"

#define MAX_STEPS 64

typedef enum { STEP_INVOKE, STEP_ATTEST } step_kind;

typedef struct step {
        step_kind kind;
        const char *body;
        int want_status; /* -1: any. */
        const char *want_stdout;
        unsigned repeat;
} step;

typedef struct probe {
        uv_loop_t loop;
        uv_timer_t deadline;
        cvm_agent_client *client;
        step steps[MAX_STEPS];
        size_t n_steps, current;
        unsigned done_in_step;
        uint64_t *rtts; /* Round trips of the current step, in us. */
        uint64_t sent_ns;
        uint64_t next_id;
        uint64_t t0_ns;
        bool shutdown;
        bool failed;
        bool finished;
} probe;

static uint64_t now_ns(clockid_t clk) {
        struct timespec ts;
        clock_gettime(clk, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(probe *p, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("probe: FAIL: ", stdout);
        vprintf(fmt, ap);
        putchar('\n');
        va_end(ap);
        p->failed = true;
}

static void finish(probe *p) {
        if (p->finished)
                return;
        p->finished = true;
        cvm_agent_client_free(p->client);
        p->client = NULL;
        uv_close((uv_handle_t *)&p->deadline, NULL);
}

/* Prints a buffer as one line, escaping what a terminal would mangle. */
static void print_quoted(const char *label, const uint8_t *s, size_t len) {
        printf(" %s=\"", label);
        for (size_t i = 0; i < len && i < 512; i++) {
                if (s[i] == '\n')
                        fputs("\\n", stdout);
                else if (s[i] == '"' || s[i] == '\\')
                        printf("\\%c", s[i]);
                else if (s[i] < 0x20 || s[i] > 0x7e)
                        printf("\\x%02x", s[i]);
                else
                        putchar(s[i]);
        }
        putchar('"');
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void next_step(probe *p);

static void on_result(cvm_agent_client *c, uint64_t id, const cvm_agent_result *r,
                      const cvm_error *err, void *userdata) {
        (void)c;
        probe *p = userdata;
        step *s = &p->steps[p->current];
        if (!r) {
                fail(p, "invoke %" PRIu64 ": %s", id, err->message);
                finish(p);
                return;
        }
        uint64_t rtt_us = (now_ns(CLOCK_MONOTONIC) - p->sent_ns) / 1000;
        p->rtts[p->done_in_step++] = rtt_us;
        bool status_ok = s->want_status < 0 || r->status == s->want_status;
        bool stdout_ok = !s->want_stdout || (r->output_len == strlen(s->want_stdout) &&
                                             memcmp(r->output, s->want_stdout, r->output_len) == 0);
        /* A repeated step prints its first result and a summary, not every line. */
        if (p->done_in_step == 1 || !status_ok || !stdout_ok) {
                printf("invoke %" PRIu64 ": status=%s exit=%u signal=%u exec_us=%" PRIu64
                       " rtt_us=%" PRIu64,
                       id, cvm_agent_status_name(r->status), r->exit_code, r->term_signal,
                       r->exec_us, rtt_us);
                print_quoted("stdout", r->output, r->output_len);
                print_quoted("stderr", r->stderr_tail, r->stderr_len);
                putchar('\n');
        }
        if (!status_ok)
                fail(p, "invoke %" PRIu64 ": status %s, wanted %s", id,
                     cvm_agent_status_name(r->status), cvm_agent_status_name(s->want_status));
        if (!stdout_ok)
                fail(p, "invoke %" PRIu64 ": stdout differs from \"%s\"", id, s->want_stdout);
        if (p->failed) {
                finish(p);
                return;
        }
        if (p->done_in_step == s->repeat && s->repeat > 1) {
                qsort(p->rtts, s->repeat, sizeof(*p->rtts), cmp_u64);
                printf("invoke x%u: rtt_us min=%" PRIu64 " median=%" PRIu64 " max=%" PRIu64 "\n",
                       s->repeat, p->rtts[0], p->rtts[s->repeat / 2], p->rtts[s->repeat - 1]);
        }
        next_step(p);
}

static void on_attest(cvm_agent_client *c, const cvm_agent_attest_result *r, const cvm_error *err,
                      void *userdata) {
        (void)c;
        probe *p = userdata;
        if (!r) {
                fail(p, "attest: %s", err->message);
                finish(p);
                return;
        }
        printf("attest: status=%s key_len=%zu report_len=%zu (key bound to the nonce)\n",
               cvm_agent_attest_status_name(r->status), r->public_key_len, r->report_len);
        p->done_in_step++;
        next_step(p);
}

static void send_step(probe *p) {
        step *s = &p->steps[p->current];
        cvm_error err = {0};
        int r;
        if (s->kind == STEP_ATTEST) {
                uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE];
                for (size_t i = 0; i < sizeof(nonce); i++)
                        nonce[i] = (uint8_t)(i * 7 + 1);
                r = cvm_agent_client_attest(p->client, nonce, on_attest, p, &err);
        } else {
                p->sent_ns = now_ns(CLOCK_MONOTONIC);
                r = cvm_agent_client_invoke(p->client, ++p->next_id, 30000, s->body,
                                            strlen(s->body), on_result, p, &err);
        }
        if (r < 0) {
                fail(p, "step %zu: %s", p->current + 1, err.message);
                finish(p);
        }
}

/* Runs the current step again, the next one, or the shutdown after the last. */
static void next_step(probe *p) {
        if (p->current < p->n_steps && p->done_in_step < p->steps[p->current].repeat) {
                send_step(p);
                return;
        }
        if (p->current < p->n_steps) {
                p->current++;
                p->done_in_step = 0;
        }
        if (p->current < p->n_steps) {
                send_step(p);
                return;
        }
        if (!p->shutdown) {
                finish(p);
                return;
        }
        cvm_error err = {0};
        if (cvm_agent_client_shutdown(p->client, &err) < 0) {
                fail(p, "shutdown: %s", err.message);
                finish(p);
        }
}

static void on_hello(cvm_agent_client *c, const cvm_agent_hello *h, void *userdata) {
        (void)c;
        probe *p = userdata;
        printf("hello: agent=%s concurrency=%u capabilities=0x%" PRIx32 " max_request=%" PRIu32,
               h->agent_version, h->max_concurrency, h->capabilities, h->max_request);
        if (p->t0_ns)
                printf(" since_t0_ms=%.0f", (double)(now_ns(CLOCK_REALTIME) - p->t0_ns) / 1e6);
        putchar('\n');
        fflush(stdout);
        p->current = 0;
        p->done_in_step = 0;
        if (p->n_steps)
                send_step(p);
        else
                next_step(p);
}

static void on_closed(cvm_agent_client *c, const cvm_error *err, void *userdata) {
        (void)c;
        probe *p = userdata;
        if (err->code == 0)
                printf("shutdown: acknowledged\n");
        else
                fail(p, "connection ended: %s", err->message);
        finish(p);
}

static void on_deadline(uv_timer_t *t) {
        probe *p = t->data;
        fail(p, "timed out (step %zu of %zu)", p->current + 1, p->n_steps);
        finish(p);
}

/* QEMU creates the socket as it starts; until then connect fails. */
static int connect_retry(const char *path, uint64_t timeout_ms) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "probe: socket path too long: %s\n", path);
                return -1;
        }
        memcpy(sa.sun_path, path, strlen(path));
        uint64_t start = now_ns(CLOCK_MONOTONIC);
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        perror("probe: socket");
                        return -1;
                }
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return fd;
                int e = errno;
                close(fd);
                if ((e != ENOENT && e != ECONNREFUSED) ||
                    now_ns(CLOCK_MONOTONIC) - start > timeout_ms * 1000000u) {
                        fprintf(stderr, "probe: connect %s: %s\n", path, strerror(e));
                        return -1;
                }
                struct timespec ts = {.tv_nsec = 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
}

static int parse_status(const char *s) {
        for (int i = 0; i <= CVM_AGENT_STATUS_TOO_LARGE; i++)
                if (strcasecmp(s, cvm_agent_status_name(i)) == 0)
                        return i;
        return -1;
}

static void usage(FILE *f) {
        fprintf(f, "usage: cvm-guest-probe --socket PATH [--t0-ns NS] [--timeout-ms N]\n"
                   "         [--invoke BODY [--want-status NAME] [--want-stdout TEXT] [--repeat "
                   "N]]...\n"
                   "         [--attest]... [--no-shutdown]\n");
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                {"socket", required_argument, NULL, 's'},
                {"t0-ns", required_argument, NULL, 't'},
                {"timeout-ms", required_argument, NULL, 'T'},
                {"invoke", required_argument, NULL, 'i'},
                {"want-status", required_argument, NULL, 'S'},
                {"want-stdout", required_argument, NULL, 'O'},
                {"repeat", required_argument, NULL, 'r'},
                {"attest", no_argument, NULL, 'a'},
                {"no-shutdown", no_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        static probe p = {.shutdown = true};
        const char *sock = NULL;
        uint64_t timeout_ms = 60000;
        unsigned max_repeat = 1;
        int c;
        cvm_log_setup("cvm-guest-probe");
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                step *last = p.n_steps ? &p.steps[p.n_steps - 1] : NULL;
                switch (c) {
                case 's': sock = optarg; break;
                case 't': p.t0_ns = strtoull(optarg, NULL, 10); break;
                case 'T': timeout_ms = strtoull(optarg, NULL, 10); break;
                case 'i':
                case 'a':
                        if (p.n_steps == MAX_STEPS) {
                                fprintf(stderr, "probe: at most %d steps\n", MAX_STEPS);
                                return 2;
                        }
                        p.steps[p.n_steps++] = (step){
                                .kind = c == 'i' ? STEP_INVOKE : STEP_ATTEST,
                                .body = c == 'i' ? optarg : NULL,
                                .want_status = -1,
                                .repeat = 1,
                        };
                        break;
                case 'S':
                case 'O':
                case 'r':
                        if (!last || last->kind != STEP_INVOKE) {
                                fprintf(stderr, "probe: --%s must follow --invoke\n",
                                        c == 'S'   ? "want-status"
                                        : c == 'O' ? "want-stdout"
                                                   : "repeat");
                                return 2;
                        }
                        if (c == 'S' && (last->want_status = parse_status(optarg)) < 0) {
                                fprintf(stderr, "probe: unknown status %s\n", optarg);
                                return 2;
                        }
                        if (c == 'O')
                                last->want_stdout = optarg;
                        if (c == 'r') {
                                long n = strtol(optarg, NULL, 10);
                                if (n < 1 || n > 100000) {
                                        fprintf(stderr, "probe: --repeat 1..100000\n");
                                        return 2;
                                }
                                last->repeat = (unsigned)n;
                                if (last->repeat > max_repeat)
                                        max_repeat = last->repeat;
                        }
                        break;
                case 'n': p.shutdown = false; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (!sock || optind != argc) {
                usage(stderr);
                return 2;
        }
        p.rtts = calloc(max_repeat, sizeof(*p.rtts));
        if (!p.rtts) {
                fprintf(stderr, "probe: out of memory\n");
                return 1;
        }
        int fd = connect_retry(sock, timeout_ms);
        if (fd < 0)
                return 1;
        if (p.t0_ns)
                printf("probe: connected since_t0_ms=%.0f\n",
                       (double)(now_ns(CLOCK_REALTIME) - p.t0_ns) / 1e6);
        int r = uv_loop_init(&p.loop);
        if (r < 0) {
                fprintf(stderr, "probe: uv_loop_init: %s\n", uv_strerror(r));
                return 1;
        }
        uv_timer_init(&p.loop, &p.deadline);
        p.deadline.data = &p;
        uv_timer_start(&p.deadline, on_deadline, timeout_ms, 0);
        cvm_agent_client_cbs cbs = {.on_hello = on_hello, .on_closed = on_closed};
        cvm_agent_client_opts opts = {0};
        cvm_error err = {0};
        if (cvm_agent_client_new(&p.loop, fd, &opts, &cbs, &p, &p.client, &err) < 0) {
                fail(&p, "%s", err.message);
                finish(&p);
        }
        uv_run(&p.loop, UV_RUN_DEFAULT);
        uv_loop_close(&p.loop);
        free(p.rtts);
        return p.failed ? 1 : 0;
}
