/* psp-burst: how concurrent VM launches share the PSP. For each N, sends N
 * POST /v1/vms at once (libcurl multi, one connection each, on the Unix
 * socket), reads each VM's phases from its 201 body and prints the launch
 * latency (prepare + PSP wait + PSP service) per N. Then it deletes the VMs
 * and waits until the daemon holds none before the next N. Usage: psp-burst
 * SOCKET [--firmware PATH] [--counts 1,5,10,20,30,40,50]. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_BODY (1u << 20)
#include "bench.h"

#define MAX_COUNTS 32
#define MAX_N 500
/* A launch of N OVMF VMs takes ~N x 0.55 s of PSP time; this bounds a stuck daemon. */
#define BURST_TIMEOUT_S 600L
#define IDLE_TIMEOUT_MS 60000
#define POLL_MS 20

typedef struct launch {
        CURL *h;
        buf body;
        bool done;
        double client_ms; /* Burst start to this 201, on the client's clock. */
        char id[64];
        int64_t created_at_ms;
        double prepare_ms, psp_wait_ms, psp_ms, total_ms;
} launch;

typedef struct row {
        size_t n;
        double mean, p50, p99, max, mean_total, mean_psp, last_ms, wall_ms;
} row;

static void buf_reset(buf *b) {
        free(b->data);
        b->data = NULL;
        b->len = 0;
}

static void parse_launch(launch *l, long status) {
        if (status != 201)
                die("POST /v1/vms answered %ld, not 201: %s", status,
                    l->body.data ? l->body.data : "(empty)");
        json_error_t jerr;
        json_t *j = json_loads(l->body.data ? l->body.data : "", 0, &jerr);
        const char *id = NULL;
        json_int_t created = 0;
        if (!j || json_unpack_ex(j, &jerr, 0, "{s:s, s:I, s:{s:F, s:F, s:F, s:F}}", "id", &id,
                                 "created_at_ms", &created, "phases", "prepare_ms", &l->prepare_ms,
                                 "psp_wait_ms", &l->psp_wait_ms, "psp_ms", &l->psp_ms, "total_ms",
                                 &l->total_ms) < 0)
                die("POST /v1/vms: a 201 without id, created_at_ms and phases (%s): %s", jerr.text,
                    l->body.data ? l->body.data : "(empty)");
        snprintf(l->id, sizeof(l->id), "%s", id);
        l->created_at_ms = created;
        json_decref(j);
}

/* Fires n launches at once and waits for every answer. */
static void burst(launch *ls, size_t n, const char *body, row *r) {
        CURLM *m = curl_multi_init();
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        if (!m || !hdrs)
                die("out of memory");
        for (size_t i = 0; i < n; i++) {
                launch *l = &ls[i];
                *l = (launch){.h = curl_easy_init()};
                if (!l->h)
                        die("curl_easy_init failed");
                bench_setup(l->h, "POST", "/v1/vms", BURST_TIMEOUT_S, &l->body);
                /* Each launch needs its own connection so all n reach the daemon together. */
                if (curl_easy_setopt(l->h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
                    curl_easy_setopt(l->h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
                    curl_easy_setopt(l->h, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK ||
                    curl_easy_setopt(l->h, CURLOPT_PRIVATE, l) != CURLE_OK)
                        die("cannot set up a libcurl handle");
        }
        double start = now_ms();
        for (size_t i = 0; i < n; i++)
                if (curl_multi_add_handle(m, ls[i].h) != CURLM_OK)
                        die("curl_multi_add_handle failed");
        int running = 1;
        while (running) {
                CURLMcode mc = curl_multi_perform(m, &running);
                if (mc == CURLM_OK && running)
                        mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
                if (mc != CURLM_OK)
                        die("libcurl multi: %s", curl_multi_strerror(mc));
                CURLMsg *msg;
                int left;
                while ((msg = curl_multi_info_read(m, &left))) {
                        if (msg->msg != CURLMSG_DONE)
                                continue;
                        launch *l = NULL;
                        long status = 0;
                        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&l) !=
                                    CURLE_OK ||
                            !l)
                                die("a finished transfer without its launch");
                        if (msg->data.result != CURLE_OK)
                                die("POST /v1/vms: %s", curl_easy_strerror(msg->data.result));
                        if (curl_easy_getinfo(l->h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
                                die("POST /v1/vms: no status");
                        l->client_ms = now_ms() - start;
                        l->done = true;
                        parse_launch(l, status);
                }
        }
        double *lat = calloc(n, sizeof(*lat));
        if (!lat)
                die("out of memory");
        double sum = 0, sum_total = 0, sum_psp = 0, wall = 0;
        int64_t first = INT64_MAX;
        double last_end = 0;
        for (size_t i = 0; i < n; i++) {
                launch *l = &ls[i];
                if (!l->done)
                        die("launch %zu never finished", i);
                lat[i] = l->prepare_ms + l->psp_wait_ms + l->psp_ms;
                sum += lat[i];
                sum_total += l->total_ms;
                sum_psp += l->psp_ms;
                if (l->client_ms > wall)
                        wall = l->client_ms;
                if (l->created_at_ms < first)
                        first = l->created_at_ms;
        }
        /* The last launch's end, relative to the first VM's creation (daemon clock, ms). */
        for (size_t i = 0; i < n; i++) {
                double end = (double)(ls[i].created_at_ms - first) + lat[i];
                if (end > last_end)
                        last_end = end;
        }
        qsort(lat, n, sizeof(*lat), cmp_double);
        *r = (row){.n = n,
                   .mean = sum / (double)n,
                   .p50 = percentile(lat, n, 0.5),
                   .p99 = percentile(lat, n, 0.99),
                   .max = lat[n - 1],
                   .mean_total = sum_total / (double)n,
                   .mean_psp = sum_psp / (double)n,
                   .last_ms = last_end,
                   .wall_ms = wall};
        free(lat);
        for (size_t i = 0; i < n; i++) {
                if (curl_multi_remove_handle(m, ls[i].h) != CURLM_OK)
                        die("curl_multi_remove_handle failed");
                curl_easy_cleanup(ls[i].h);
                buf_reset(&ls[i].body);
        }
        curl_slist_free_all(hdrs);
        curl_multi_cleanup(m);
}

/* Deletes the burst's VMs and waits until the daemon holds no VM and no ASID. */
static void drain(launch *ls, size_t n) {
        long status;
        for (size_t i = 0; i < n; i++) {
                char path[128];
                snprintf(path, sizeof(path), "/v1/vms/%s", ls[i].id);
                json_decref(bench_request("DELETE", path, NULL, &status));
                if (status != 202)
                        die("DELETE %s answered %ld, not 202", path, status);
        }
        double deadline = now_ms() + IDLE_TIMEOUT_MS;
        for (;;) {
                json_t *vms = bench_request("GET", "/v1/vms", NULL, &status);
                size_t left = json_array_size(json_object_get(vms, "vms"));
                json_decref(vms);
                if (status != 200)
                        die("GET /v1/vms answered %ld", status);
                json_t *psp = bench_request("GET", "/v1/psp", NULL, &status);
                json_int_t in_use = -1, depth = -1;
                if (status != 200 || json_unpack(psp, "{s:I, s:{s:I}}", "queue_depth", &depth,
                                                 "asids", "in_use", &in_use) < 0)
                        die("GET /v1/psp answered %ld without queue_depth and asids.in_use",
                            status);
                json_decref(psp);
                if (left == 0 && in_use == 0 && depth == 0)
                        return;
                if (now_ms() > deadline)
                        die("after %d ms the daemon still holds %zu VM(s), %lld ASID(s) in use",
                            IDLE_TIMEOUT_MS, left, (long long)in_use);
                sleep_ms(POLL_MS);
        }
}

static size_t parse_counts(const char *s, size_t *counts) {
        size_t k = 0;
        while (*s) {
                char *end;
                errno = 0;
                long v = strtol(s, &end, 10);
                if (errno || end == s || v < 1 || v > MAX_N || (*end && *end != ',') ||
                    k == MAX_COUNTS)
                        die("--counts: a list of at most %d numbers from 1 to %d, like 1,5,10",
                            MAX_COUNTS, MAX_N);
                counts[k++] = (size_t)v;
                s = *end ? end + 1 : end;
        }
        if (!k)
                die("--counts is empty");
        return k;
}

static void usage(void) {
        fprintf(stderr,
                "usage: psp-burst SOCKET [--firmware PATH] [--counts 1,5,10,20,30,40,50]\n");
        exit(2);
}

int main(int argc, char **argv) {
        bench_prog = "psp-burst";
        const char *firmware = NULL, *counts_arg = "1,5,10,20,30,40,50";
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--firmware") == 0 && i + 1 < argc)
                        firmware = argv[++i];
                else if (strcmp(argv[i], "--counts") == 0 && i + 1 < argc)
                        counts_arg = argv[++i];
                else if (argv[i][0] == '-' || bench_sock)
                        usage();
                else
                        bench_sock = argv[i];
        }
        if (!bench_sock)
                usage();
        size_t counts[MAX_COUNTS];
        size_t k = parse_counts(counts_arg, counts);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(bench_ctl = curl_easy_init()))
                die("cannot initialise libcurl");
        json_t *req = json_pack("{s:{s:[s]}}", "handler", "exec", "/bin/cat");
        if (req && firmware &&
            json_object_set_new(req, "image", json_pack("{s:s}", "firmware", firmware)) < 0)
                die("out of memory");
        char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        if (!body)
                die("out of memory");
        json_decref(req);

        size_t max_n = 0;
        for (size_t i = 0; i < k; i++)
                max_n = counts[i] > max_n ? counts[i] : max_n;
        launch *ls = calloc(max_n, sizeof(*ls));
        row *rows = calloc(k, sizeof(*rows));
        if (!ls || !rows)
                die("out of memory");

        printf("psp-burst: N concurrent POST /v1/vms (handler /bin/cat, firmware %s)\n",
               firmware ? firmware : "the daemon's default");
        printf("  launch = prepare + psp_wait + psp from each 201 (ms); total = until ready;\n"
               "  last = end of the last launch after the first VM's creation; wall = client "
               "time to the last 201\n");
        printf("  %4s %9s %9s %9s %9s %11s %9s %9s\n", "N", "mean", "p50", "p99", "max",
               "mean total", "last", "wall");
        for (size_t i = 0; i < k; i++) {
                row *r = &rows[i];
                burst(ls, counts[i], body, r);
                printf("  %4zu %9.1f %9.1f %9.1f %9.1f %11.1f %9.1f %9.1f\n", r->n, r->mean, r->p50,
                       r->p99, r->max, r->mean_total, r->last_ms, r->wall_ms);
                fflush(stdout);
                drain(ls, counts[i]);
        }

        /* The PSP time per VM is service time alone, so the smallest burst gives it. */
        size_t smallest = 0;
        for (size_t i = 1; i < k; i++)
                if (rows[i].n < rows[smallest].n)
                        smallest = i;
        double psp = rows[smallest].mean_psp;
        printf("  PSP time per VM alone (N=%zu psp_ms): %.1f ms\n", rows[smallest].n, psp);
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (size_t i = 0; i < k; i++) {
                double x = (double)rows[i].n, y = rows[i].mean;
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
        }
        double den = (double)k * sxx - sx * sx;
        if (den > 0) {
                double slope = ((double)k * sxy - sx * sy) / den;
                double icept = (sy - slope * sx) / (double)k;
                printf("  least-squares fit of mean launch latency over N: %.1f ms per VM "
                       "(%.2f x the PSP time per VM) + %.1f ms\n",
                       slope, psp > 0 ? slope / psp : 0.0, icept);
        }
        long status;
        json_t *st = bench_request("GET", "/v1/psp", NULL, &status);
        json_int_t flushes = 0;
        double busy = 0;
        if (status == 200 &&
            json_unpack(st, "{s:F, s:I}", "busy_ms", &busy, "df_flushes", &flushes) == 0)
                printf("  PSP since the daemon started: %.1f ms busy, %lld DF_FLUSH\n", busy,
                       (long long)flushes);
        json_decref(st);
        free(body);
        free(ls);
        free(rows);
        curl_easy_cleanup(bench_ctl);
        curl_global_cleanup();
        return 0;
}
