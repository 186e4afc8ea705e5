/* scale: the daemon's memory and warm latency with many functions and VMs.
 * Measures the daemon's RSS (/proc/PID/status) at start, after creating F
 * functions (min_warm 0), and after bringing V of them to one ready VM each
 * (PUT /v1/functions/{name}/pool, min_warm 1); reports the growth per
 * function and per VM, the agents' own memory for context, and the warm
 * latency of invocations spread round-robin over the V functions against
 * one function alone on the same daemon. Usage: scale SOCKET --pid PID
 * [--functions 1000] [--vms 500] [--invocations 3000]. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_BODY (8u << 20)
#include "bench.h"

#define HANDLER "/bin/true"
/* The smallest memory_mib an image accepts (docs/images.md). */
#define MEMORY_MIB 16
#define MAX_FUNCTIONS 4096
#define MAX_VMS 4000
#define MAX_INVOCATIONS 1000000L
/* 500 launches at ~30 ms of PSP time each take ~15 s; this bounds a stuck daemon. */
#define READY_TIMEOUT_MS 120000
#define DRAIN_TIMEOUT_MS 20000
#define POLL_MS 100
#define IDLE_SAMPLE_MS 3000

typedef struct mem {
        long rss_kib, anon_kib;
} mem;

static size_t on_header(char *d, size_t s, size_t n, void *ud) {
        bool *warm = ud;
        size_t len = s * n;
        if (len >= 15 && strncasecmp(d, "Cvm-Start: warm", 15) == 0)
                *warm = true;
        return len;
}

/* A JSON request: fails unless the answer is one of the expected statuses. */
static json_t *request(const char *method, const char *path, const char *body, long ok1, long ok2) {
        long status;
        char *out = bench_perform(method, path, body, &status, NULL, NULL);
        if (status != ok1 && status != ok2)
                die("%s %s answered %ld: %s", method, path, status, out ? out : "(empty)");
        json_error_t jerr;
        json_t *j = out ? json_loads(out, 0, &jerr) : NULL;
        if (!j)
                die("%s %s: a body that is not JSON: %s", method, path, out ? out : "(empty)");
        free(out);
        return j;
}

/* VmRSS and RssAnon of a process, in KiB; zeros if it is gone. */
static mem read_mem(pid_t pid) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        FILE *f = fopen(path, "r");
        mem m = {0};
        if (!f)
                return m;
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "VmRSS:", 6) == 0)
                        m.rss_kib = strtol(line + 6, NULL, 10);
                else if (strncmp(line, "RssAnon:", 8) == 0)
                        m.anon_kib = strtol(line + 8, NULL, 10);
        }
        fclose(f);
        return m;
}

/* CPU seconds (user + system, all threads) of a process so far; 0 if unknown. */
static double cpu_seconds(pid_t pid) {
        char path[64], line[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return 0;
        size_t k = fread(line, 1, sizeof(line) - 1, f);
        fclose(f);
        line[k] = '\0';
        /* Fields 14 and 15 follow the command name, which may contain spaces. */
        const char *p = strrchr(line, ')');
        unsigned long long ut, st;
        if (!p ||
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return 0;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double secs_since(uint64_t t) {
        return (double)(now_ns() - t) / 1e9;
}

static void fn_name(char *out, size_t size, long i) {
        snprintf(out, size, "scale-%04ld", i);
}

/* Every function: the no-op handler on the smallest image, at most one VM. */
static void fn_spec(char *out, size_t size, int min_warm) {
        snprintf(out, size,
                 "{\"image\": {\"memory_mib\": %d}, \"handler\": {\"exec\": [\"" HANDLER
                 "\"]}, \"pool\": {\"min_warm\": %d, \"max_vms\": 1}}",
                 MEMORY_MIB, min_warm);
}

static json_int_t pool_vms(void) {
        json_t *p = request("GET", "/v1/pool", NULL, 200, 200);
        json_int_t vms = -1;
        if (json_unpack(p, "{s:I}", "vms", &vms) < 0)
                die("GET /v1/pool without vms");
        json_decref(p);
        return vms;
}

/* Counts the ready VMs and sums the memory of their agents. */
static long ready_vms(mem *agents) {
        json_t *j = request("GET", "/v1/vms", NULL, 200, 200);
        json_t *vms = json_object_get(j, "vms"), *vm;
        size_t i;
        long ready = 0;
        if (agents)
                *agents = (mem){0};
        json_array_foreach(vms, i, vm) {
                const char *state = json_string_value(json_object_get(vm, "state"));
                if (!state || strcmp(state, "ready") != 0)
                        continue;
                ready++;
                json_int_t pid =
                        json_integer_value(json_object_get(json_object_get(vm, "host"), "pid"));
                if (agents && pid > 0) {
                        mem m = read_mem((pid_t)pid);
                        agents->rss_kib += m.rss_kib;
                        agents->anon_kib += m.anon_kib;
                }
        }
        json_decref(j);
        return ready;
}

/* Waits until the daemon holds exactly `want` VMs, all ready. */
static void wait_vms(long want, int timeout_ms) {
        uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
        for (;;) {
                json_int_t vms = pool_vms();
                if (vms == want && (want == 0 || ready_vms(NULL) == want))
                        return;
                if (now_ns() > deadline)
                        die("after %d ms the daemon holds %lld VMs, not %ld ready ones", timeout_ms,
                            (long long)vms, want);
                sleep_ms(POLL_MS);
        }
}

typedef struct lat {
        double p50, p99, max;
        long warm;
        double cpu_us; /* The daemon's CPU per invocation. */
} lat;

static pid_t daemon_pid;

/* Sequential warm invocations, round-robin over functions [first, first + count). */
static lat invoke_round_robin(long first, long count, long n) {
        double *v = calloc((size_t)n, sizeof(*v));
        if (!v)
                die("out of memory");
        lat r = {0};
        double c0 = cpu_seconds(daemon_pid);
        for (long i = 0; i < n; i++) {
                char name[32], path[96];
                fn_name(name, sizeof(name), first + i % count);
                snprintf(path, sizeof(path), "/v1/functions/%s/invoke", name);
                bool warm = false;
                long status;
                uint64_t t = now_ns();
                free(bench_perform("POST", path, NULL, &status, on_header, &warm));
                v[i] = (double)(now_ns() - t) / 1e3;
                if (status != 200)
                        die("POST %s answered %ld", path, status);
                r.warm += warm;
        }
        r.cpu_us = (cpu_seconds(daemon_pid) - c0) / (double)n * 1e6;
        qsort(v, (size_t)n, sizeof(*v), cmp_double);
        r.p50 = percentile(v, (size_t)n, 0.5);
        r.p99 = percentile(v, (size_t)n, 0.99);
        r.max = v[n - 1];
        free(v);
        return r;
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
        fprintf(stderr, "usage: scale SOCKET --pid DAEMON_PID [--functions 1000] [--vms 500] "
                        "[--invocations 3000]\n");
        exit(2);
}

static void print_mem(const char *label, mem m) {
        printf("  %-44s %8.1f MiB  (anon %.1f MiB)\n", label, (double)m.rss_kib / 1024,
               (double)m.anon_kib / 1024);
}

int main(int argc, char **argv) {
        bench_prog = "scale";
        long nfn = 1000, nvm = 500, ninv = 3000;
        pid_t pid = 0;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--functions") == 0 && i + 1 < argc)
                        nfn = parse_num("--functions", argv[++i], 1, MAX_FUNCTIONS - 1);
                else if (strcmp(argv[i], "--vms") == 0 && i + 1 < argc)
                        nvm = parse_num("--vms", argv[++i], 1, MAX_VMS);
                else if (strcmp(argv[i], "--invocations") == 0 && i + 1 < argc)
                        ninv = parse_num("--invocations", argv[++i], 100, MAX_INVOCATIONS);
                else if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc)
                        pid = (pid_t)parse_num("--pid", argv[++i], 1, INT_MAX);
                else if (argv[i][0] == '-' || bench_sock)
                        usage();
                else
                        bench_sock = argv[i];
        }
        if (!bench_sock || !pid)
                usage();
        daemon_pid = pid;
        if (nvm > nfn)
                die("--vms (%ld) must not exceed --functions (%ld)", nvm, nfn);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(bench_ctl = curl_easy_init()))
                die("cannot initialise libcurl");
        mem m_start = read_mem(pid);
        if (!m_start.rss_kib)
                die("cannot read /proc/%d/status", (int)pid);
        if (pool_vms() != 0)
                die("the daemon already holds VMs: run scale against an idle daemon");
        uint64_t t_all = now_ns();
        printf("scale: %ld functions (handler " HANDLER ", memory_mib %d), %ld of them with one "
               "warm VM, daemon pid %d\n",
               nfn, MEMORY_MIB, nvm, (int)pid);

        /* The baseline: one function, one VM, on the same daemon before the others exist. */
        char body[320];
        fn_spec(body, sizeof(body), 1);
        json_decref(request("PUT", "/v1/functions/scale-base", body, 201, 200));
        wait_vms(1, READY_TIMEOUT_MS);
        /* The base function's name is outside the scale-NNNN range: invoke it by path. */
        double *v = calloc((size_t)ninv, sizeof(*v));
        if (!v)
                die("out of memory");
        long base_warm = 0;
        double base_c0 = 0;
        for (long i = 0; i < ninv + 200; i++) {
                if (i == 200)
                        base_c0 = cpu_seconds(pid);
                bool warm = false;
                long status;
                uint64_t t = now_ns();
                free(bench_perform("POST", "/v1/functions/scale-base/invoke", NULL, &status,
                                   on_header, &warm));
                double us = (double)(now_ns() - t) / 1e3;
                if (status != 200)
                        die("POST /v1/functions/scale-base/invoke answered %ld", status);
                /* The first 200 warm the connection and the caches. */
                if (i >= 200) {
                        v[i - 200] = us;
                        base_warm += warm;
                }
        }
        qsort(v, (size_t)ninv, sizeof(*v), cmp_double);
        lat base = {percentile(v, (size_t)ninv, 0.5), percentile(v, (size_t)ninv, 0.99),
                    v[ninv - 1], base_warm, (cpu_seconds(pid) - base_c0) / (double)ninv * 1e6};
        free(v);
        json_decref(request("DELETE", "/v1/functions/scale-base", NULL, 202, 202));
        wait_vms(0, DRAIN_TIMEOUT_MS);
        mem m_base = read_mem(pid);

        uint64_t t = now_ns();
        fn_spec(body, sizeof(body), 0);
        for (long i = 0; i < nfn; i++) {
                char name[32], path[96];
                fn_name(name, sizeof(name), i);
                snprintf(path, sizeof(path), "/v1/functions/%s", name);
                json_decref(request("PUT", path, body, 201, 200));
        }
        double t_fns = secs_since(t);
        mem m_fns = read_mem(pid);

        t = now_ns();
        for (long i = 0; i < nvm; i++) {
                char name[32], path[96];
                fn_name(name, sizeof(name), i);
                snprintf(path, sizeof(path), "/v1/functions/%s/pool", name);
                json_decref(request("PUT", path, "{\"min_warm\": 1}", 200, 200));
        }
        wait_vms(nvm, READY_TIMEOUT_MS);
        double t_vms = secs_since(t);
        mem m_vms = read_mem(pid), agents;
        long ready = ready_vms(&agents);
        /* What the idle VMs cost the daemon: heartbeats and timers. */
        double c0 = cpu_seconds(pid);
        uint64_t t_idle = now_ns();
        sleep_ms(IDLE_SAMPLE_MS);
        double idle_cpu = (cpu_seconds(pid) - c0) / secs_since(t_idle);

        lat spread = invoke_round_robin(0, nvm, ninv);
        /* The same load on one of the VMs separates what the others cost by being there. */
        lat one = invoke_round_robin(0, 1, ninv);
        mem m_inv = read_mem(pid);

        print_mem("daemon RSS at start", m_start);
        print_mem("after 1 function x 1 VM, deleted (baseline)", m_base);
        char label[96];
        snprintf(label, sizeof(label), "after %ld functions (%.1f s to create)", nfn, t_fns);
        print_mem(label, m_fns);
        snprintf(label, sizeof(label), "after %ld ready VMs (%.1f s to launch)", nvm, t_vms);
        print_mem(label, m_vms);
        snprintf(label, sizeof(label), "after %ld warm invocations over them", ninv);
        print_mem(label, m_inv);
        double per_fn = (double)(m_fns.rss_kib - m_base.rss_kib) / (double)nfn;
        double per_vm = (double)(m_vms.rss_kib - m_fns.rss_kib) / (double)nvm;
        printf("  daemon growth: %.1f KiB per function (anon %.1f), %.1f KiB per VM (anon %.1f; "
               "target < 100 KiB per VM: %s)\n",
               per_fn, (double)(m_fns.anon_kib - m_base.anon_kib) / (double)nfn, per_vm,
               (double)(m_vms.anon_kib - m_fns.anon_kib) / (double)nvm,
               per_vm < 100 ? "met" : "missed");
        printf("  agents (separate processes, not the daemon's memory): %ld ready, RSS sum %.1f "
               "MiB (%.1f MiB per agent; anon sum %.1f MiB)\n",
               ready, (double)agents.rss_kib / 1024,
               ready ? (double)agents.rss_kib / 1024 / (double)ready : 0.0,
               (double)agents.anon_kib / 1024);
        printf("  daemon CPU while the %ld VMs idle: %.1f%% of a core (over %d ms)\n", nvm,
               idle_cpu * 100, IDLE_SAMPLE_MS);
        printf("  warm latency, %ld sequential invocations (us):\n", ninv);
        printf("    %-40s p50 %8.1f  p99 %8.1f  max %9.1f  warm %ld/%ld  daemon CPU %.0f\n",
               "1 function, 1 VM (before the others)", base.p50, base.p99, base.max, base.warm,
               ninv, base.cpu_us);
        snprintf(label, sizeof(label), "round-robin over %ld (%ld fns live)", nvm, nfn);
        printf("    %-40s p50 %8.1f  p99 %8.1f  max %9.1f  warm %ld/%ld  daemon CPU %.0f\n", label,
               spread.p50, spread.p99, spread.max, spread.warm, ninv, spread.cpu_us);
        snprintf(label, sizeof(label), "1 of them only (%ld fns live)", nfn);
        printf("    %-40s p50 %8.1f  p99 %8.1f  max %9.1f  warm %ld/%ld  daemon CPU %.0f\n", label,
               one.p50, one.p99, one.max, one.warm, ninv, one.cpu_us);
        printf("    p99 ratio against 1 function alone: round-robin %.2f, 1 of them %.2f\n",
               spread.p99 / base.p99, one.p99 / base.p99);

        /* Deleting the functions tears their VMs down off the request path. */
        t = now_ns();
        for (long i = 0; i < nfn; i++) {
                char name[32], path[96];
                fn_name(name, sizeof(name), i);
                snprintf(path, sizeof(path), "/v1/functions/%s", name);
                json_decref(request("DELETE", path, NULL, 202, 202));
        }
        wait_vms(0, DRAIN_TIMEOUT_MS);
        printf("  cleanup: %ld functions deleted and their VMs torn down in %.1f s; whole run "
               "%.1f s\n",
               nfn, secs_since(t), secs_since(t_all));
        curl_easy_cleanup(bench_ctl);
        curl_global_cleanup();
        if (base.warm != ninv || spread.warm != ninv || one.warm != ninv)
                die("not every invocation was warm");
        return 0;
}
