/* cvmctl pool: the warm pools of every function and the budgets they share,
 * and changes to one function's pool settings.
 *
 *   cvmctl pool ls
 *   cvmctl pool set NAME [--min-warm N] [--max-vms M] [--policy P] [--keep-alive-s S] */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_pool, __VA_ARGS__)

static int ls(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
                return c == 'h' ? cvmctl_help(&cvmctl_cmd_pool)
                                : cvmctl_usage_hint(&cvmctl_cmd_pool);
        if (optind < argc)
                return usage_error("unexpected argument %s", CVM_QUOTE(argv[optind]));
        cvm_error err = {0};
        json_t *fns = NULL, *pool = NULL;
        if (cvmctl_request_json(ctl->client, "GET", "/v1/pool", NULL, &pool, &err) < 0 ||
            cvmctl_request_json(ctl->client, "GET", "/v1/functions", NULL, &fns, &err) < 0) {
                json_decref(pool);
                return cvmctl_fail(&err);
        }
        if (ctl->json) {
                /* Both answers, unchanged, in one document. */
                json_t *doc = json_pack("{s:O, s:O}", "pool", pool, "functions",
                                        json_object_get(fns, "functions"));
                cvmctl_print_json(doc);
                json_decref(doc);
                json_decref(fns);
                json_decref(pool);
                return CVMCTL_EXIT_OK;
        }
        static const char *const cols[] = {"NAME",       "MIN-WARM", "MAX-VMS",   "POLICY",
                                           "KEEP-ALIVE", "READY",    "BUSY",      "LAUNCHING",
                                           "RETIRING",   "WAITING",  "EVICTIONS", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(fns, "functions"), i, f) {
                json_t *sp = json_object_get(json_object_get(f, "spec"), "pool");
                json_t *p = json_object_get(f, "pool");
                json_t *dec = json_object_get(json_object_get(p, "policy"), "decision");
                static const char *const keys[] = {"ready",    "busy",    "launching",
                                                   "retiring", "waiting", "evictions"};
                char n[8][24], ka[24];
                snprintf(n[0], sizeof(n[0]), "%lld", cvmctl_jint(sp, "min_warm"));
                snprintf(n[1], sizeof(n[1]), "%lld", cvmctl_jint(sp, "max_vms"));
                for (size_t k = 0; k < CVM_ARRAY_SIZE(keys); k++)
                        snprintf(n[k + 2], sizeof(n[k + 2]), "%lld", cvmctl_jint(p, keys[k]));
                /* What the policy decided now; for "fixed" that is the setting. */
                double keep = cvmctl_jnum(dec, "keep_alive_s");
                cvmctl_format_ms(ka, sizeof(ka),
                                 (keep == keep ? keep : cvmctl_jnum(sp, "keep_alive_s")) * 1e3);
                const char *row[] = {cvmctl_jstr(f, "name"),
                                     n[0],
                                     n[1],
                                     cvmctl_jstr(sp, "policy"),
                                     ka,
                                     n[2],
                                     n[3],
                                     n[4],
                                     n[5],
                                     n[6],
                                     n[7]};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t))
                cvmctl_table_print(t, stdout, 0);
        else
                printf("no functions\n");
        cvmctl_table_free(t);
        char a[32], b[32];
        double budget = cvmctl_jnum(pool, "budget_memory_mib");
        printf("\n%lld functions; %lld of %lld VMs, %s of %s memory in use\n",
               cvmctl_jint(pool, "functions"), cvmctl_jint(pool, "vms"),
               cvmctl_jint(pool, "budget_vms"),
               cvmctl_format_mib(a, sizeof(a), cvmctl_jnum(pool, "memory_mib")),
               budget > 0 ? cvmctl_format_mib(b, sizeof(b), budget) : "unlimited");
        json_decref(fns);
        json_decref(pool);
        return CVMCTL_EXIT_OK;
}

static int set(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"min-warm", required_argument, NULL, 'w'},
                {"max-vms", required_argument, NULL, 'm'},
                {"policy", required_argument, NULL, 'p'},
                {"keep-alive-s", required_argument, NULL, 'k'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        json_t *body = json_object();
        long v;
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                const char *key = NULL, *flag = NULL, *range = NULL;
                long min = 0, max = 0;
                switch (c) {
                case 'w':
                        key = "min_warm", flag = "--min-warm", min = 0, max = 256,
                        range = "0 to 256";
                        break;
                case 'm':
                        key = "max_vms", flag = "--max-vms", min = 1, max = 256, range = "1 to 256";
                        break;
                case 'k':
                        key = "keep_alive_s", flag = "--keep-alive-s", min = 0, max = 86400,
                        range = "0 to 86400";
                        break;
                case 'p':
                        if (strcmp(optarg, "fixed") != 0 && strcmp(optarg, "histogram") != 0) {
                                json_decref(body);
                                return usage_error("--policy must be fixed or histogram, not %s",
                                                   CVM_QUOTE(optarg));
                        }
                        json_object_set_new(body, "policy", json_string(optarg));
                        continue;
                case 'h': json_decref(body); return cvmctl_help(&cvmctl_cmd_pool);
                default: json_decref(body); return cvmctl_usage_hint(&cvmctl_cmd_pool);
                }
                if (cvmctl_parse_uint(optarg, min, max, &v) < 0) {
                        json_decref(body);
                        return usage_error("%s must be a number from %s, not %s", flag, range,
                                           CVM_QUOTE(optarg));
                }
                json_object_set_new(body, key, json_integer(v));
        }
        if (argc - optind != 1 || json_object_size(body) == 0) {
                json_decref(body);
                return argc - optind != 1 ? usage_error("name one function")
                                          : usage_error("say what to change: --min-warm, "
                                                        "--max-vms, --policy or --keep-alive-s");
        }
        const char *name = argv[optind];
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/functions/%s/pool",
                 cvmctl_escape(esc, sizeof(esc), name));
        cvm_error err = {0};
        json_t *doc = NULL;
        int r = cvmctl_request_json(ctl->client, "PUT", path, body, &doc, &err);
        json_decref(body);
        if (r < 0)
                return cvmctl_fail(&err);
        if (ctl->json) {
                cvmctl_print_json(doc);
        } else {
                json_t *sp = json_object_get(json_object_get(doc, "spec"), "pool");
                char ka[32];
                printf("pool of %s: min_warm %lld, max_vms %lld, policy %s, keep-alive %s\n", name,
                       cvmctl_jint(sp, "min_warm"), cvmctl_jint(sp, "max_vms"),
                       cvmctl_jstr(sp, "policy"),
                       cvmctl_format_ms(ka, sizeof(ka), cvmctl_jnum(sp, "keep_alive_s") * 1e3));
        }
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        if (argc < 2)
                return usage_error("name a subcommand: ls or set");
        const char *sub = argv[1];
        if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0)
                return cvmctl_help(&cvmctl_cmd_pool);
        static char prog[] = "cvmctl pool"; /* getopt names argv[0] in its messages. */
        argv[1] = prog;
        if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
                return ls(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "set") == 0)
                return set(ctl, argc - 1, argv + 1);
        return usage_error("unknown subcommand %s", CVM_QUOTE(sub));
}

const cvmctl_command cvmctl_cmd_pool = {
        .name = "pool",
        .summary = "show the warm pools and their budgets, change a function's pool",
        .usage = "pool ls\n"
                 "       cvmctl pool set NAME [--min-warm N] [--max-vms M]\n"
                 "                 [--policy fixed|histogram] [--keep-alive-s S]\n"
                 "ls shows each function's pool settings and VMs (KEEP-ALIVE is what the\n"
                 "policy decided now) and the budgets all pools share. set changes only the\n"
                 "settings given; warm VMs are kept.\n"
                 "Example: cvmctl pool set hello --min-warm 2 --policy histogram",
        .run = run,
};
