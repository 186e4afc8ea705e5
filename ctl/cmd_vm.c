/* cvmctl vm: list, show and stop the daemon's VMs.
 *
 *   cvmctl vm ls [--function NAME] | show ID | rm ID */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_vm, __VA_ARGS__)

static int ls(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"function", required_argument, NULL, 'f'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *function = NULL;
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
                switch (c) {
                case 'f': function = optarg; break;
                case 'h': return cvmctl_help(&cvmctl_cmd_vm);
                default: return cvmctl_usage_hint(&cvmctl_cmd_vm);
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument %s", CVM_QUOTE(argv[optind]));
        char esc[256], path[320] = "/v1/vms";
        if (function)
                snprintf(path, sizeof(path), "/v1/vms?function=%s",
                         cvmctl_escape(esc, sizeof(esc), function));
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, "GET", path, NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json) {
                cvmctl_print_json(doc);
                json_decref(doc);
                return CVMCTL_EXIT_OK;
        }
        static const char *const cols[] = {"ID",   "FUNCTION", "STATE",  "ACTIVE", "INVOCATIONS",
                                           "ASID", "MEMORY",   "LAUNCH", "AGE",    NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *vm;
        json_array_foreach(json_object_get(doc, "vms"), i, vm) {
                char act[24], inv[24], asid[24], mem[24], launch[24], age[24];
                json_t *host = json_object_get(vm, "host");
                snprintf(act, sizeof(act), "%lld/%lld", cvmctl_jint(vm, "active"),
                         cvmctl_jint(vm, "concurrency"));
                snprintf(inv, sizeof(inv), "%lld", cvmctl_jint(vm, "invocations"));
                /* ASID 0: not launched yet. */
                if (cvmctl_jint(host, "asid") > 0)
                        snprintf(asid, sizeof(asid), "%lld", cvmctl_jint(host, "asid"));
                else
                        snprintf(asid, sizeof(asid), "-");
                cvmctl_format_mib(mem, sizeof(mem),
                                  cvmctl_jnum(json_object_get(vm, "image"), "memory_mib"));
                /* A launch in progress has no total yet. */
                double total = cvmctl_jnum(json_object_get(vm, "phases"), "total_ms");
                cvmctl_format_ms(launch, sizeof(launch), total > 0 ? total : NAN);
                cvmctl_format_age(age, sizeof(age), cvmctl_jnum(vm, "created_at_ms"));
                const char *fn = cvmctl_jstr(vm, "function");
                const char *row[] = {cvmctl_jstr(vm, "id"),
                                     fn ? fn : "-",
                                     cvmctl_jstr(vm, "state"),
                                     act,
                                     inv,
                                     asid,
                                     mem,
                                     launch,
                                     age};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t))
                cvmctl_table_print(t, stdout, 0);
        else
                fprintf(stderr, "no VMs\n");
        cvmctl_table_free(t);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static void print_vm(json_t *vm) {
        json_t *ph = json_object_get(vm, "phases"), *img = json_object_get(vm, "image");
        json_t *host = json_object_get(vm, "host");
        char a[32], b[32], c[32], d[32], e[32];
        const char *fn = cvmctl_jstr(vm, "function");
        printf("id:           %s\n", cvmctl_jstr(vm, "id"));
        printf("state:        %s\n", cvmctl_jstr(vm, "state"));
        printf("function:     %s\n", fn ? fn : "- (created on its own)");
        printf("created:      %s (%s ago)\n",
               cvmctl_format_time(a, sizeof(a), cvmctl_jnum(vm, "created_at_ms")),
               cvmctl_format_age(b, sizeof(b), cvmctl_jnum(vm, "created_at_ms")));
        printf("measurement:  %s\n", cvmctl_jstr(vm, "measurement"));
        printf("invocations:  %lld answered, %lld running (concurrency %lld)\n",
               cvmctl_jint(vm, "invocations"), cvmctl_jint(vm, "active"),
               cvmctl_jint(vm, "concurrency"));
        printf("launch:       %s: prepare %s, psp wait %s, psp %s, boot %s\n",
               cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(ph, "total_ms")),
               cvmctl_format_ms(b, sizeof(b), cvmctl_jnum(ph, "prepare_ms")),
               cvmctl_format_ms(c, sizeof(c), cvmctl_jnum(ph, "psp_wait_ms")),
               cvmctl_format_ms(d, sizeof(d), cvmctl_jnum(ph, "psp_ms")),
               cvmctl_format_ms(e, sizeof(e), cvmctl_jnum(ph, "boot_ms")));
        printf("handler:     ");
        size_t i;
        json_t *arg;
        json_array_foreach(json_object_get(json_object_get(vm, "handler"), "exec"), i, arg)
                printf(" %s", json_string_value(arg));
        printf("\n");
        printf("image:        firmware %s",
               cvmctl_jstr(img, "firmware") ? cvmctl_jstr(img, "firmware") : "-");
        if (cvmctl_jstr(img, "kernel"))
                printf(", kernel %s", cvmctl_jstr(img, "kernel"));
        if (cvmctl_jstr(img, "initrd"))
                printf(", initrd %s", cvmctl_jstr(img, "initrd"));
        printf("\n              %lld vCPU %s, %s, policy %s\n", cvmctl_jint(img, "vcpus"),
               cvmctl_jstr(img, "vcpu_type"),
               cvmctl_format_mib(a, sizeof(a), cvmctl_jnum(img, "memory_mib")),
               cvmctl_jstr(img, "guest_policy"));
        printf("host:         %s", cvmctl_jstr(host, "type") ? cvmctl_jstr(host, "type") : "-");
        if (cvmctl_jint(host, "asid") > 0)
                printf(", ASID %lld", cvmctl_jint(host, "asid"));
        if (cvmctl_jint(host, "pid") > 0)
                printf(", pid %lld", cvmctl_jint(host, "pid"));
        if (cvmctl_jstr(host, "workdir"))
                printf(", %s", cvmctl_jstr(host, "workdir"));
        printf("\n");
}

static int one(cvmctl *ctl, int argc, char **argv, bool remove) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
                return c == 'h' ? cvmctl_help(&cvmctl_cmd_vm) : cvmctl_usage_hint(&cvmctl_cmd_vm);
        if (argc - optind != 1)
                return usage_error("name one VM (vm-...)");
        const char *id = argv[optind];
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/vms/%s", cvmctl_escape(esc, sizeof(esc), id));
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, remove ? "DELETE" : "GET", path, NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json)
                cvmctl_print_json(doc);
        else if (remove)
                printf("vm %s stopping\n", id);
        else
                print_vm(doc);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        if (argc < 2)
                return usage_error("name a subcommand: ls, show or rm");
        const char *sub = argv[1];
        if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0)
                return cvmctl_help(&cvmctl_cmd_vm);
        static char prog[] = "cvmctl vm"; /* getopt names argv[0] in its messages. */
        argv[1] = prog;
        if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
                return ls(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "show") == 0 || strcmp(sub, "get") == 0)
                return one(ctl, argc - 1, argv + 1, false);
        if (strcmp(sub, "rm") == 0 || strcmp(sub, "delete") == 0)
                return one(ctl, argc - 1, argv + 1, true);
        return usage_error("unknown subcommand %s", CVM_QUOTE(sub));
}

const cvmctl_command cvmctl_cmd_vm = {
        .name = "vm",
        .summary = "list, show and stop VMs",
        .usage = "vm ls [--function NAME]\n"
                 "       cvmctl vm show ID\n"
                 "       cvmctl vm rm ID\n"
                 "ls lists every VM, newest first (ACTIVE is running/concurrency, LAUNCH the time\n"
                 "from creation to ready); rm stops one (teardown continues in the background).\n"
                 "Example: cvmctl vm ls --function hello",
        .run = run,
};
