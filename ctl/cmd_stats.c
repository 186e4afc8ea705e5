/* cvmctl stats: invocation and launch statistics over a time range, from
 * GET /v1/stats: counts, the cold-start fraction and latency percentiles by
 * start kind, or by phase. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_stats, __VA_ARGS__)

static const char *const starts[] = {"cold", "warm"};
static const char *const phases[] = {"total", "queue", "psp_wait", "psp", "boot", "exec"};

static void percentile_cells(json_t *p, char out[3][24]) {
        cvmctl_format_ms(out[0], sizeof(out[0]), cvmctl_jnum(p, "p50"));
        cvmctl_format_ms(out[1], sizeof(out[1]), cvmctl_jnum(p, "p90"));
        cvmctl_format_ms(out[2], sizeof(out[2]), cvmctl_jnum(p, "p99"));
}

static void print_by_start(json_t *lat) {
        static const char *const cols[] = {"START", "COUNT", "P50", "P90", "P99", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        for (size_t i = 0; i < CVM_ARRAY_SIZE(starts); i++) {
                json_t *s = json_object_get(lat, starts[i]);
                char count[24], p[3][24];
                snprintf(count, sizeof(count), "%lld", cvmctl_jint(s, "count"));
                percentile_cells(json_object_get(s, "total"), p);
                const char *row[] = {starts[i], count, p[0], p[1], p[2]};
                cvmctl_table_row(t, row);
        }
        cvmctl_table_print(t, stdout, 0);
        cvmctl_table_free(t);
}

static void print_by_phase(json_t *lat) {
        static const char *const cols[] = {"START", "PHASE", "P50", "P90", "P99", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        for (size_t i = 0; i < CVM_ARRAY_SIZE(starts); i++) {
                json_t *s = json_object_get(lat, starts[i]);
                /* A start kind without invocations has only nulls: skip it. */
                if (cvmctl_jint(s, "count") == 0)
                        continue;
                for (size_t k = 0; k < CVM_ARRAY_SIZE(phases); k++) {
                        char p[3][24];
                        percentile_cells(json_object_get(s, phases[k]), p);
                        const char *row[] = {starts[i], phases[k], p[0], p[1], p[2]};
                        cvmctl_table_row(t, row);
                }
        }
        if (cvmctl_table_rows(t))
                cvmctl_table_print(t, stdout, 0);
        cvmctl_table_free(t);
}

static void print_counts(const char *label, json_t *obj) {
        const char *key, *sep = ": ";
        json_t *v;
        printf("%s", label);
        json_object_foreach(obj, key, v) {
                printf("%s%s %lld", sep, key, (long long)json_number_value(v));
                sep = ", ";
        }
        printf("\n");
}

static void print_stats(json_t *doc, bool by_phase) {
        json_t *inv = json_object_get(doc, "invocations"), *la = json_object_get(doc, "launches");
        char a[32], b[32], c[32];
        const char *fn = cvmctl_jstr(doc, "function");
        double since = cvmctl_jnum(doc, "since_ms"), until = cvmctl_jnum(doc, "until_ms");
        printf("function:     %s\n", fn ? fn : "all");
        printf("range:        %s to %s (%s)\n", cvmctl_format_time(a, sizeof(a), since),
               cvmctl_format_time(b, sizeof(b), until),
               cvmctl_format_ms(c, sizeof(c), until - since));
        char label[64];
        snprintf(label, sizeof(label), "invocations:  %lld%s", cvmctl_jint(inv, "total"),
                 json_is_true(json_object_get(inv, "truncated")) ? " (truncated)" : "");
        print_counts(label, json_object_get(inv, "by_status"));
        json_t *by_start = json_object_get(inv, "by_start");
        printf("cold starts:  %lld of %lld (%s)\n", cvmctl_jint(by_start, "cold"),
               cvmctl_jint(inv, "total"),
               cvmctl_format_percent(a, sizeof(a), cvmctl_jnum(inv, "cold_fraction")));
        snprintf(label, sizeof(label), "launches:     %lld (%lld failed)", cvmctl_jint(la, "total"),
                 cvmctl_jint(la, "failed"));
        print_counts(label, json_object_get(la, "by_trigger"));
        json_t *pw = json_object_get(la, "psp_wait_ms"), *ps = json_object_get(la, "psp_ms");
        printf("psp wait:     p50 %s, p99 %s\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(pw, "p50")),
               cvmctl_format_ms(b, sizeof(b), cvmctl_jnum(pw, "p99")));
        printf("psp:          p50 %s, p99 %s\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(ps, "p50")),
               cvmctl_format_ms(b, sizeof(b), cvmctl_jnum(ps, "p99")));
        size_t i;
        json_t *note;
        json_array_foreach(json_object_get(doc, "notes"), i, note)
                printf("note:         %s\n", json_string_value(note));
        printf("\n");
        if (by_phase)
                print_by_phase(json_object_get(inv, "latency_ms"));
        else
                print_by_start(json_object_get(inv, "latency_ms"));
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"since", required_argument, NULL, 's'},
                {"until", required_argument, NULL, 'u'},
                {"by", required_argument, NULL, 'b'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *since = NULL, *until = NULL;
        bool by_phase = false;
        int c;
        static char prog[] = "cvmctl stats"; /* getopt names argv[0] in its messages. */
        argv[0] = prog;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 's': since = optarg; break;
                case 'u': until = optarg; break;
                case 'b':
                        if (strcmp(optarg, "phase") == 0)
                                by_phase = true;
                        else if (strcmp(optarg, "start") != 0)
                                return usage_error("--by must be start or phase, not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'h': return cvmctl_help(&cvmctl_cmd_stats);
                default: return cvmctl_usage_hint(&cvmctl_cmd_stats);
                }
        }
        if (argc - optind > 1)
                return usage_error("name at most one function");
        const char *fn = optind < argc ? argv[optind] : NULL;
        char path[1024] = "/v1/stats", esc[256];
        const char *sep = "?";
        size_t n = strlen(path);
        const char *keys[] = {"function", "since", "until"}, *vals[] = {fn, since, until};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(keys); i++) {
                if (!vals[i])
                        continue;
                n += (size_t)snprintf(path + n, sizeof(path) - n, "%s%s=%s", sep, keys[i],
                                      cvmctl_escape(esc, sizeof(esc), vals[i]));
                sep = "&";
        }
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, "GET", path, NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json)
                cvmctl_print_json(doc);
        else
                print_stats(doc, by_phase);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

const cvmctl_command cvmctl_cmd_stats = {
        .name = "stats",
        .summary = "show invocation counts, cold starts and latency percentiles",
        .usage = "stats [NAME] [--since T] [--until T] [--by start|phase]\n"
                 "Statistics of one function (or all) over a range: T is a duration before now\n"
                 "(30s, 15m, 1h, 7d) or Unix milliseconds; the default is the last hour.\n"
                 "Latency percentiles are by start kind (cold, warm), or with --by phase for\n"
                 "each phase (queue, psp_wait, psp, boot, exec) as well.\n"
                 "Example: cvmctl stats hello --since 15m --by phase",
        .run = run,
};
