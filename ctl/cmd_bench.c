/* cvmctl bench: a load generator over the API. C connections (libcurl
 * multi) each invoke the function again as soon as their last answer came,
 * for N requests or T seconds; the report gives throughput and latency
 * percentiles split by start kind (the Cvm-Start header). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_bench, __VA_ARGS__)

#define MAX_CONCURRENCY 1024
/* Error bodies are kept this long, for the first failure's message. */
#define MAX_ERROR_BODY 4096

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
        (void)sig;
        interrupted = 1;
}

typedef struct samples {
        double *v;
        size_t n, cap;
} samples;

typedef struct conn {
        CURL *h;
        struct curl_slist *headers;
        double started;
        char start[16];
        char body[MAX_ERROR_BODY];
        size_t body_len;
} conn;

typedef struct bench {
        long long target; /* -n; 0 with -t. */
        double deadline;  /* -t; 0 with -n. */
        long long started, done, ok, failed, transport_errors;
        long long by_status[600];
        samples all, warm, cold;
        char first_error[512];
        bool oom;
} bench;

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add_sample(bench *b, samples *s, double ms) {
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 1024;
                double *v = realloc(s->v, cap * sizeof(*v));
                if (!v) {
                        b->oom = true;
                        return;
                }
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = ms;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
        conn *c = userdata;
        size_t n = size * nmemb;
        /* Only the start of an answer is kept: outputs are not the point. */
        if (c->body_len < sizeof(c->body) - 1) {
                size_t take = n < sizeof(c->body) - 1 - c->body_len
                                      ? n
                                      : sizeof(c->body) - 1 - c->body_len;
                memcpy(c->body + c->body_len, data, take);
                c->body_len += take;
                c->body[c->body_len] = '\0';
        }
        return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata) {
        conn *c = userdata;
        size_t n = size * nmemb;
        if (n > 10 && strncasecmp(data, "Cvm-Start:", 10) == 0) {
                const char *v = data + 10;
                while (*v == ' ')
                        v++;
                size_t len = strcspn(v, "\r\n");
                snprintf(c->start, sizeof(c->start), "%.*s", (int)len, v);
        }
        return n;
}

static bool want_more(const bench *b, double now) {
        if (interrupted)
                return false;
        return b->target ? b->started < b->target : now < b->deadline;
}

static void launch(bench *b, CURLM *m, conn *c) {
        c->start[0] = '\0';
        c->body_len = 0;
        c->body[0] = '\0';
        c->started = now_s();
        curl_multi_add_handle(m, c->h);
        b->started++;
}

static void finish(bench *b, cvmctl_client *client, conn *c, CURLcode rc) {
        double ms = (now_s() - c->started) * 1e3;
        long status = 0;
        b->done++;
        if (rc != CURLE_OK) {
                b->failed++;
                b->transport_errors++;
                if (!b->first_error[0]) {
                        cvm_error err = {0};
                        cvmctl_curl_error(client, c->h, rc, &err);
                        snprintf(b->first_error, sizeof(b->first_error), "%s", err.message);
                }
                return;
        }
        curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 0 && status < 600)
                b->by_status[status]++;
        if (status != 200) {
                b->failed++;
                if (!b->first_error[0]) {
                        json_t *doc = json_loads(c->body, 0, NULL);
                        const char *msg = cvmctl_jstr(doc, "message");
                        snprintf(b->first_error, sizeof(b->first_error), "HTTP %ld: %s", status,
                                 msg ? msg : "no message");
                        json_decref(doc);
                }
                return;
        }
        b->ok++;
        add_sample(b, &b->all, ms);
        if (strcmp(c->start, "cold") == 0)
                add_sample(b, &b->cold, ms);
        else
                add_sample(b, &b->warm, ms);
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* Nearest rank, as GET /v1/stats computes it. */
static double percentile(const samples *s, double p) {
        if (s->n == 0)
                return NAN;
        size_t rank = (size_t)ceil(p / 100 * (double)s->n);
        return s->v[rank ? rank - 1 : 0];
}

static double mean(const samples *s) {
        double sum = 0;
        for (size_t i = 0; i < s->n; i++)
                sum += s->v[i];
        return s->n ? sum / (double)s->n : NAN;
}

static json_t *latency_json(const samples *s) {
        if (s->n == 0)
                return json_pack("{s:i}", "count", 0);
        return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)s->n, "min",
                         s->v[0], "mean", mean(s), "p50", percentile(s, 50), "p90",
                         percentile(s, 90), "p99", percentile(s, 99), "max", s->v[s->n - 1]);
}

static void report(const bench *b, const char *name, long conc, double elapsed, bool json) {
        const samples *kinds[] = {&b->all, &b->warm, &b->cold};
        static const char *const names[] = {"all", "warm", "cold"};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(kinds); i++)
                if (kinds[i]->n > 1) /* v is NULL without samples. */
                        qsort(kinds[i]->v, kinds[i]->n, sizeof(double), cmp_double);
        double rate = elapsed > 0 ? (double)b->ok / elapsed : 0;
        if (json) {
                json_t *by_status = json_object();
                for (int s = 0; s < 600; s++) {
                        char key[16];
                        snprintf(key, sizeof(key), "%d", s);
                        if (b->by_status[s])
                                json_object_set_new(by_status, key,
                                                    json_integer((json_int_t)b->by_status[s]));
                }
                json_t *doc = json_pack(
                        "{s:s, s:i, s:I, s:f, s:f, s:I, s:I, s:I, s:o, s:{s:o, s:o, s:o}, s:b}",
                        "function", name, "concurrency", (int)conc, "requests", (json_int_t)b->done,
                        "duration_s", elapsed, "throughput_rps", rate, "ok", (json_int_t)b->ok,
                        "failed", (json_int_t)b->failed, "transport_errors",
                        (json_int_t)b->transport_errors, "by_status", by_status, "latency_ms",
                        "all", latency_json(&b->all), "warm", latency_json(&b->warm), "cold",
                        latency_json(&b->cold), "interrupted", (bool)interrupted);
                cvmctl_print_json(doc);
                json_decref(doc);
                return;
        }
        char d[32];
        printf("bench %s: %lld requests over %ld connections in %s%s\n", name, b->done, conc,
               cvmctl_format_ms(d, sizeof(d), elapsed * 1e3), interrupted ? " (interrupted)" : "");
        printf("throughput:   %.1f invocations/s\n", rate);
        printf("results:      %lld ok, %lld failed", b->ok, b->failed);
        const char *sep = " (";
        for (int s = 0; s < 600; s++) {
                if (b->by_status[s] && s != 200) {
                        printf("%sHTTP %d: %lld", sep, s, b->by_status[s]);
                        sep = ", ";
                }
        }
        if (b->transport_errors) {
                printf("%sconnection errors: %lld", sep, b->transport_errors);
                sep = ", ";
        }
        printf("%s\n", *sep == ',' ? ")" : "");
        if (b->first_error[0])
                printf("first error:  %s\n", b->first_error);
        printf("\n");
        static const char *const cols[] = {"START", "COUNT", "MIN", "MEAN", "P50",
                                           "P90",   "P99",   "MAX", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        for (size_t i = 0; i < CVM_ARRAY_SIZE(kinds); i++) {
                const samples *s = kinds[i];
                char cells[7][24];
                snprintf(cells[0], sizeof(cells[0]), "%zu", s->n);
                cvmctl_format_ms(cells[1], sizeof(cells[1]), s->n ? s->v[0] : NAN);
                cvmctl_format_ms(cells[2], sizeof(cells[2]), mean(s));
                cvmctl_format_ms(cells[3], sizeof(cells[3]), percentile(s, 50));
                cvmctl_format_ms(cells[4], sizeof(cells[4]), percentile(s, 90));
                cvmctl_format_ms(cells[5], sizeof(cells[5]), percentile(s, 99));
                cvmctl_format_ms(cells[6], sizeof(cells[6]), s->n ? s->v[s->n - 1] : NAN);
                const char *row[] = {names[i], cells[0], cells[1], cells[2],
                                     cells[3], cells[4], cells[5], cells[6]};
                cvmctl_table_row(t, row);
        }
        cvmctl_table_print(t, stdout, 0);
        cvmctl_table_free(t);
}

static void progress(const bench *b, double t0, double now, int in_flight) {
        double el = now - t0;
        if (b->target)
                fprintf(stderr, "\r%lld/%lld done", b->done, b->target);
        else
                fprintf(stderr, "\r%.0fs/%.0fs, %lld done", el, b->deadline - t0, b->done);
        fprintf(stderr, ", %d in flight, %lld failed, %.1f/s\033[K", in_flight, b->failed,
                el > 0 ? (double)b->done / el : 0.0);
}

static int run_bench(cvmctl *ctl, const char *name, long conc, bench *b, double seconds,
                     const char *body, size_t len) {
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/functions/%s/invoke",
                 cvmctl_escape(esc, sizeof(esc), name));
        cvm_error err = {0};
        CURLM *m = curl_multi_init();
        conn *conns = calloc((size_t)conc, sizeof(*conns));
        int r = m && conns ? 0 : cvm_error_set(&err, -ENOMEM, "out of memory");
        for (long i = 0; r >= 0 && i < conc; i++) {
                conn *c = &conns[i];
                c->h = curl_easy_init();
                c->headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
                if (!c->h || !c->headers) {
                        r = cvm_error_set(&err, -ENOMEM, "out of memory");
                        break;
                }
                r = cvmctl_curl_setup(ctl->client, c->h, path, &c->headers, &err);
                curl_easy_setopt(c->h, CURLOPT_POST, 1L);
                /* Every connection sends the same body; libcurl does not copy it. */
                curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
                curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_body);
                curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
                curl_easy_setopt(c->h, CURLOPT_HEADERFUNCTION, on_header);
                curl_easy_setopt(c->h, CURLOPT_HEADERDATA, c);
                curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
        }
        bool tty = isatty(STDERR_FILENO);
        struct sigaction sa = {.sa_handler = on_sigint}, old;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old);
        double t0 = now_s(), last_progress = 0;
        if (seconds > 0)
                b->deadline = t0 + seconds;
        int in_flight = 0;
        for (long i = 0; r >= 0 && i < conc && want_more(b, t0); i++, in_flight++)
                launch(b, m, &conns[i]);
        while (r >= 0 && in_flight > 0) {
                int running;
                CURLMcode mc = curl_multi_perform(m, &running);
                if (mc == CURLM_OK)
                        mc = curl_multi_poll(m, NULL, 0, 100, NULL);
                if (mc != CURLM_OK) {
                        r = cvm_error_set(&err, -EIO, "libcurl: %s", curl_multi_strerror(mc));
                        break;
                }
                CURLMsg *msg;
                int left;
                while ((msg = curl_multi_info_read(m, &left))) {
                        if (msg->msg != CURLMSG_DONE)
                                continue;
                        conn *c = NULL;
                        CURL *h = msg->easy_handle;
                        CURLcode rc = msg->data.result;
                        curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&c);
                        curl_multi_remove_handle(m, h);
                        in_flight--;
                        finish(b, ctl->client, c, rc);
                        /* A daemon that is not there fails every request the same way. */
                        if (rc == CURLE_COULDNT_CONNECT && b->ok == 0) {
                                r = cvmctl_curl_error(ctl->client, h, rc, &err);
                                break;
                        }
                        if (want_more(b, now_s())) {
                                launch(b, m, c);
                                in_flight++;
                        }
                }
                double now = now_s();
                if (tty && now - last_progress >= 0.2) {
                        progress(b, t0, now, in_flight);
                        last_progress = now;
                }
        }
        double elapsed = now_s() - t0;
        if (tty && last_progress > 0)
                fprintf(stderr, "\r\033[K");
        sigaction(SIGINT, &old, NULL);
        for (long i = 0; conns && i < conc; i++) {
                if (conns[i].h) {
                        curl_multi_remove_handle(m, conns[i].h);
                        curl_easy_cleanup(conns[i].h);
                }
                curl_slist_free_all(conns[i].headers);
        }
        free(conns);
        if (m)
                curl_multi_cleanup(m);
        if (r >= 0 && b->oom)
                r = cvm_error_set(&err, -ENOMEM, "out of memory recording latencies");
        if (r < 0)
                return cvmctl_fail(&err);
        report(b, name, conc, elapsed, ctl->json);
        interrupted = 0;
        if (b->ok == 0) {
                fprintf(stderr, "cvmctl: bench %s: no invocation succeeded%s%s\n", CVM_QUOTE(name),
                        b->first_error[0] ? ": " : "", b->first_error);
                return CVMCTL_EXIT_FAILURE;
        }
        return CVMCTL_EXIT_OK;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"concurrency", required_argument, NULL, 'c'},
                {"requests", required_argument, NULL, 'n'},
                {"time", required_argument, NULL, 't'},
                {"data", required_argument, NULL, 'd'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        long conc = 1, count = 0;
        double seconds = 0;
        const char *data = NULL;
        int c;
        static char prog[] = "cvmctl bench"; /* getopt names argv[0] in its messages. */
        argv[0] = prog;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "c:n:t:d:h", opts, NULL)) != -1) {
                char *end;
                switch (c) {
                case 'c':
                        if (cvmctl_parse_uint(optarg, 1, MAX_CONCURRENCY, &conc) < 0)
                                return usage_error("-c must be a number from 1 to %d, not %s",
                                                   MAX_CONCURRENCY, CVM_QUOTE(optarg));
                        break;
                case 'n':
                        if (cvmctl_parse_uint(optarg, 1, 1000000000, &count) < 0)
                                return usage_error("-n must be a number from 1 to 1000000000, "
                                                   "not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 't':
                        seconds = strtod(optarg, &end);
                        if (*end == 's')
                                end++;
                        if (*end || end == optarg || !(seconds > 0 && seconds <= 86400))
                                return usage_error("-t must be seconds from 0 to 86400, not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'd': data = optarg; break;
                case 'h': return cvmctl_help(&cvmctl_cmd_bench);
                default: return cvmctl_usage_hint(&cvmctl_cmd_bench);
                }
        }
        if (argc - optind != 1)
                return usage_error("name one function");
        if ((count > 0) == (seconds > 0))
                return usage_error("give either -n COUNT or -t SECONDS");
        const char *name = argv[optind];
        _cleanup_free_ char *body = NULL;
        size_t len = data ? strlen(data) : 0;
        cvm_error err = {0};
        if (data && data[0] == '@' && cvmctl_read_all(data + 1, &body, &len, &err) < 0)
                return cvmctl_fail(&err);
        /* A function that does not exist is one clear error, not N failures. */
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/functions/%s", cvmctl_escape(esc, sizeof(esc), name));
        json_t *fn = NULL;
        if (cvmctl_request_json(ctl->client, "GET", path, NULL, &fn, &err) < 0)
                return cvmctl_fail(&err);
        json_decref(fn);
        bench b = {.target = count};
        int status = run_bench(ctl, name, conc, &b, seconds, body ? body : data ? data : "", len);
        free(b.all.v);
        free(b.warm.v);
        free(b.cold.v);
        return status;
}

const cvmctl_command cvmctl_cmd_bench = {
        .name = "bench",
        .summary = "load a function and report throughput and latency",
        .usage = "bench NAME [-c CONCURRENCY] (-n COUNT | -t SECONDS) [-d DATA | -d @FILE]\n"
                 "CONCURRENCY connections (default 1) each invoke NAME again as soon as the\n"
                 "last answer came, COUNT times in all or for SECONDS. The report gives\n"
                 "throughput, failures by HTTP status, and latency percentiles (measured here,\n"
                 "over successful invocations) of all, warm and cold starts. A progress line is\n"
                 "shown on stderr when it is a terminal; Ctrl-C stops early and reports.\n"
                 "Example: cvmctl bench hello -c 8 -n 1000 -d world",
        .run = run,
};
