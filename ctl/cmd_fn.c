/* cvmctl fn: deploy, list, show and delete functions.
 *
 *   cvmctl fn deploy SPEC.json [--name N] [--min-warm N] [--max-vms M] ...
 *   cvmctl fn ls | show NAME | rm NAME */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_fn, __VA_ARGS__)
#define help() cvmctl_help(&cvmctl_cmd_fn)

/* Options common to the subcommands without their own: --help only. */
static int parse_plain(int argc, char **argv, int want_args) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                if (c == 'h')
                        return help();
                return cvmctl_usage_hint(&cvmctl_cmd_fn);
        }
        if (argc - optind != want_args)
                return want_args ? usage_error("name one function")
                                 : usage_error("unexpected argument %s", CVM_QUOTE(argv[optind]));
        return -1;
}

static const char *basename_of(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

/* The function's name from --name, else the spec file's name without .json. */
static char *name_from_path(const char *path) {
        const char *base = basename_of(path);
        size_t n = strlen(base);
        if (n > 5 && strcmp(base + n - 5, ".json") == 0)
                n -= 5;
        return strndup(base, n);
}

typedef struct deploy_opts {
        const char *name, *policy;
        long min_warm, max_vms, keep_alive_s; /* -1: unset. */
} deploy_opts;

static int apply_overrides(json_t *spec, const deploy_opts *o, const char *path, cvm_error *err) {
        if (o->min_warm < 0 && o->max_vms < 0 && o->keep_alive_s < 0 && !o->policy)
                return 0;
        json_t *pool = json_object_get(spec, "pool");
        if (!pool) {
                pool = json_object();
                if (!pool || json_object_set_new(spec, "pool", pool) < 0)
                        return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        if (!json_is_object(pool))
                return cvm_error_set(err, -EINVAL, "%s: field 'pool' must be an object", path);
        int r = 0;
        if (o->min_warm >= 0)
                r |= json_object_set_new(pool, "min_warm", json_integer(o->min_warm));
        if (o->max_vms >= 0)
                r |= json_object_set_new(pool, "max_vms", json_integer(o->max_vms));
        if (o->keep_alive_s >= 0)
                r |= json_object_set_new(pool, "keep_alive_s", json_integer(o->keep_alive_s));
        if (o->policy)
                r |= json_object_set_new(pool, "policy", json_string(o->policy));
        return r ? cvm_error_set(err, -ENOMEM, "out of memory") : 0;
}

static int deploy(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"name", required_argument, NULL, 'n'},
                {"min-warm", required_argument, NULL, 'w'},
                {"max-vms", required_argument, NULL, 'm'},
                {"policy", required_argument, NULL, 'p'},
                {"keep-alive-s", required_argument, NULL, 'k'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        deploy_opts o = {.min_warm = -1, .max_vms = -1, .keep_alive_s = -1};
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
                switch (c) {
                case 'n': o.name = optarg; break;
                case 'w':
                        if (cvmctl_parse_uint(optarg, 0, 256, &o.min_warm) < 0)
                                return usage_error("--min-warm must be a number from 0 to 256, "
                                                   "not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'm':
                        if (cvmctl_parse_uint(optarg, 1, 256, &o.max_vms) < 0)
                                return usage_error("--max-vms must be a number from 1 to 256, "
                                                   "not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'k':
                        if (cvmctl_parse_uint(optarg, 0, 86400, &o.keep_alive_s) < 0)
                                return usage_error("--keep-alive-s must be a number from 0 to "
                                                   "86400, not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'p': o.policy = optarg; break;
                case 'h': return help();
                default: return cvmctl_usage_hint(&cvmctl_cmd_fn);
                }
        }
        if (argc - optind != 1)
                return usage_error("deploy needs one spec file (SPEC.json, or - for stdin)");
        const char *path = argv[optind];
        if (strcmp(path, "-") == 0 && !o.name)
                return usage_error("a spec from %s needs --name", "stdin");
        _cleanup_free_ char *name = o.name ? strdup(o.name) : name_from_path(path);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        cvm_error err = {0};
        if (!name) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                return cvmctl_fail(&err);
        }
        if (cvmctl_read_all(path, &text, &len, &err) < 0)
                return cvmctl_fail(&err);
        json_error_t jerr;
        json_t *spec = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!spec) {
                cvm_error_set(&err, -EINVAL, "%s: line %d column %d: %s", path, jerr.line,
                              jerr.column, jerr.text);
                return cvmctl_fail(&err);
        }
        int r = json_is_object(spec)
                        ? apply_overrides(spec, &o, path, &err)
                        : cvm_error_set(&err, -EINVAL, "%s: the spec must be a JSON object", path);
        json_t *doc = NULL;
        long status = 0;
        char esc[256], api_path[320];
        snprintf(api_path, sizeof(api_path), "/v1/functions/%s",
                 cvmctl_escape(esc, sizeof(esc), name));
        if (r >= 0 && (r = cvmctl_api(ctl->client, "PUT", api_path, spec, &doc, &status, &err)) < 0)
                cvm_error_prefix(&err, "deploying %s: ", CVM_QUOTE(name));
        json_decref(spec);
        if (r < 0)
                return cvmctl_fail(&err);
        if (ctl->json) {
                cvmctl_print_json(doc);
        } else {
                const char *m = cvmctl_jstr(doc, "measurement");
                printf("function %s %s (measurement %.16s…)\n", name,
                       status == 201 ? "created" : "updated", m ? m : "-");
        }
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static int ls(cvmctl *ctl, int argc, char **argv) {
        int r = parse_plain(argc, argv, 0);
        if (r >= 0)
                return r;
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, "GET", "/v1/functions", NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json) {
                cvmctl_print_json(doc);
                json_decref(doc);
                return CVMCTL_EXIT_OK;
        }
        static const char *const cols[] = {"NAME",        "READY",       "BUSY",  "LAUNCHING",
                                           "WAITING",     "INVOCATIONS", "COLD%", "POLICY",
                                           "MEASUREMENT", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(doc, "functions"), i, f) {
                json_t *p = json_object_get(f, "pool");
                char n[5][24], cold[16], meas[16];
                snprintf(n[0], sizeof(n[0]), "%lld", cvmctl_jint(p, "ready"));
                snprintf(n[1], sizeof(n[1]), "%lld", cvmctl_jint(p, "busy"));
                snprintf(n[2], sizeof(n[2]), "%lld", cvmctl_jint(p, "launching"));
                snprintf(n[3], sizeof(n[3]), "%lld", cvmctl_jint(p, "waiting"));
                long long inv = cvmctl_jint(p, "invocations");
                snprintf(n[4], sizeof(n[4]), "%lld", inv);
                cvmctl_format_percent(cold, sizeof(cold),
                                      inv ? (double)cvmctl_jint(p, "cold") / (double)inv : NAN);
                const char *m = cvmctl_jstr(f, "measurement");
                snprintf(meas, sizeof(meas), "%.12s", m ? m : "-");
                const char *policy =
                        cvmctl_jstr(json_object_get(json_object_get(f, "spec"), "pool"), "policy");
                const char *row[] = {
                        cvmctl_jstr(f, "name"), n[0], n[1], n[2], n[3], n[4], cold, policy, meas};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t) == 0)
                fprintf(stderr, "no functions\n");
        else
                cvmctl_table_print(t, stdout, 0);
        cvmctl_table_free(t);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static void print_vms(json_t *vms) {
        static const char *const cols[] = {"VM",   "STATE",  "ACTIVE", "INVOCATIONS",
                                           "ASID", "LAUNCH", "AGE",    NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *vm;
        json_array_foreach(vms, i, vm) {
                char act[24], inv[24], asid[24], launch[24], age[24];
                snprintf(act, sizeof(act), "%lld", cvmctl_jint(vm, "active"));
                snprintf(inv, sizeof(inv), "%lld", cvmctl_jint(vm, "invocations"));
                snprintf(asid, sizeof(asid), "%lld",
                         cvmctl_jint(json_object_get(vm, "host"), "asid"));
                cvmctl_format_ms(launch, sizeof(launch),
                                 cvmctl_jnum(json_object_get(vm, "phases"), "total_ms"));
                cvmctl_format_age(age, sizeof(age), cvmctl_jnum(vm, "created_at_ms"));
                const char *row[] = {cvmctl_jstr(vm, "id"),
                                     cvmctl_jstr(vm, "state"),
                                     act,
                                     inv,
                                     asid,
                                     launch,
                                     age};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t)) {
                printf("\n");
                cvmctl_table_print(t, stdout, 0);
        }
        cvmctl_table_free(t);
}

static void print_function(json_t *f, json_t *vms) {
        json_t *spec = json_object_get(f, "spec"), *img = json_object_get(spec, "image");
        json_t *sp = json_object_get(spec, "pool"), *p = json_object_get(f, "pool");
        json_t *pol = json_object_get(p, "policy"), *dec = json_object_get(pol, "decision");
        char a[32], b[32], c[32];
        printf("name:         %s\n", cvmctl_jstr(f, "name"));
        if (cvmctl_jstr(f, "tenant"))
                printf("tenant:       %s\n", cvmctl_jstr(f, "tenant"));
        printf("created:      %s\n",
               cvmctl_format_time(a, sizeof(a), cvmctl_jnum(f, "created_at_ms")));
        printf("updated:      %s\n",
               cvmctl_format_time(a, sizeof(a), cvmctl_jnum(f, "updated_at_ms")));
        printf("measurement:  %s\n", cvmctl_jstr(f, "measurement"));
        printf("psp launch:   %s alone\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(f, "expected_psp_ms")));
        printf("handler:     ");
        size_t i;
        json_t *arg;
        json_array_foreach(json_object_get(json_object_get(spec, "handler"), "exec"), i, arg)
                printf(" %s", json_string_value(arg));
        printf("\n");
        printf("image:        firmware %s",
               cvmctl_jstr(img, "firmware") ? cvmctl_jstr(img, "firmware") : "-");
        if (cvmctl_jstr(img, "kernel"))
                printf(", kernel %s", cvmctl_jstr(img, "kernel"));
        if (cvmctl_jstr(img, "initrd"))
                printf(", initrd %s", cvmctl_jstr(img, "initrd"));
        if (cvmctl_jstr(img, "cmdline"))
                printf(", cmdline %s", CVM_QUOTE(cvmctl_jstr(img, "cmdline")));
        printf("\n              %lld vCPU %s, %s, policy %s, features %s\n",
               cvmctl_jint(img, "vcpus"), cvmctl_jstr(img, "vcpu_type"),
               cvmctl_format_mib(a, sizeof(a), cvmctl_jnum(img, "memory_mib")),
               cvmctl_jstr(img, "guest_policy"), cvmctl_jstr(img, "guest_features"));
        printf("limits:       timeout %s, request %s, response %s, concurrency %lld\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(spec, "timeout_ms")),
               cvmctl_format_bytes(b, sizeof(b), (uint64_t)cvmctl_jint(spec, "max_request_bytes")),
               cvmctl_format_bytes(c, sizeof(c), (uint64_t)cvmctl_jint(spec, "max_response_bytes")),
               cvmctl_jint(spec, "concurrency"));
        printf("pool:         min_warm %lld, max_vms %lld, policy %s, keep-alive %s\n",
               cvmctl_jint(sp, "min_warm"), cvmctl_jint(sp, "max_vms"), cvmctl_jstr(sp, "policy"),
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(sp, "keep_alive_s") * 1e3));
        printf("VMs:          %lld ready, %lld busy, %lld launching, %lld retiring; %lld waiting\n",
               cvmctl_jint(p, "ready"), cvmctl_jint(p, "busy"), cvmctl_jint(p, "launching"),
               cvmctl_jint(p, "retiring"), cvmctl_jint(p, "waiting"));
        long long inv = cvmctl_jint(p, "invocations");
        printf("invocations:  %lld (%lld cold, %lld warm; cold %s), %lld rejected\n", inv,
               cvmctl_jint(p, "cold"), cvmctl_jint(p, "warm"),
               cvmctl_format_percent(a, sizeof(a),
                                     inv ? (double)cvmctl_jint(p, "cold") / (double)inv : NAN),
               cvmctl_jint(p, "rejected"));
        printf("launches:     %lld (%lld failed), %lld evictions\n", cvmctl_jint(p, "launches"),
               cvmctl_jint(p, "launch_failures"), cvmctl_jint(p, "evictions"));
        printf("keep-alive:   %s now, prewarm %s (%s policy, %lld samples%s%s)\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(dec, "keep_alive_s") * 1e3),
               cvmctl_format_ms(b, sizeof(b), cvmctl_jnum(dec, "prewarm_s") * 1e3),
               cvmctl_jstr(pol, "kind"), cvmctl_jint(pol, "samples"),
               cvmctl_jstr(pol, "reason") ? ": " : "",
               cvmctl_jstr(pol, "reason") ? cvmctl_jstr(pol, "reason") : "");
        print_vms(vms);
}

static int show(cvmctl *ctl, int argc, char **argv) {
        int r = parse_plain(argc, argv, 1);
        if (r >= 0)
                return r;
        const char *name = argv[optind];
        char esc[256], path[320];
        cvmctl_escape(esc, sizeof(esc), name);
        snprintf(path, sizeof(path), "/v1/functions/%s", esc);
        cvm_error err = {0};
        json_t *doc = NULL, *vms = NULL;
        if (cvmctl_request_json(ctl->client, "GET", path, NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json) {
                cvmctl_print_json(doc);
                json_decref(doc);
                return CVMCTL_EXIT_OK;
        }
        /* The VMs are a detail: the function is shown without them if they fail. */
        snprintf(path, sizeof(path), "/v1/vms?function=%s", esc);
        if (cvmctl_request_json(ctl->client, "GET", path, NULL, &vms, &err) < 0)
                vms = NULL;
        print_function(doc, json_object_get(vms, "vms"));
        json_decref(doc);
        json_decref(vms);
        return CVMCTL_EXIT_OK;
}

static int rm(cvmctl *ctl, int argc, char **argv) {
        int r = parse_plain(argc, argv, 1);
        if (r >= 0)
                return r;
        const char *name = argv[optind];
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/functions/%s", cvmctl_escape(esc, sizeof(esc), name));
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, "DELETE", path, NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json)
                cvmctl_print_json(doc);
        else
                printf("function %s deleted; its VMs are draining\n", name);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        if (argc < 2)
                return usage_error("name a subcommand: %s", "deploy, ls, show or rm");
        const char *sub = argv[1];
        if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0)
                return help();
        /* getopt names argv[0] in its messages. */
        static char prog[] = "cvmctl fn";
        argv[1] = prog;
        if (strcmp(sub, "deploy") == 0)
                return deploy(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
                return ls(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "show") == 0 || strcmp(sub, "get") == 0)
                return show(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "rm") == 0 || strcmp(sub, "delete") == 0)
                return rm(ctl, argc - 1, argv + 1);
        return usage_error("unknown subcommand %s", CVM_QUOTE(sub));
}

const cvmctl_command cvmctl_cmd_fn = {
        .name = "fn",
        .summary = "deploy, list, show and delete functions",
        .usage = "fn deploy SPEC.json [--name NAME] [--min-warm N] [--max-vms M]\n"
                 "                 [--policy fixed|histogram] [--keep-alive-s S]\n"
                 "       cvmctl fn ls\n"
                 "       cvmctl fn show NAME\n"
                 "       cvmctl fn rm NAME\n"
                 "deploy creates or replaces the function named by --name, else by the spec\n"
                 "file's name without .json (SPEC - reads stdin); the pool options override\n"
                 "the spec's \"pool\" object. ls shows each function's pool, show one function\n"
                 "with its VMs; rm deletes it (its VMs drain).\n"
                 "Example: cvmctl fn deploy hello.json --min-warm 1 && cvmctl fn ls",
        .run = run,
};
