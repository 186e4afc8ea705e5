/* cvmctl psp: the PSP's state and the launch scheduler's queue: what runs,
 * what waits, in which class, and when the scheduler predicts it starts. */
#include <stdio.h>
#include <string.h>

#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "table.h"

static void print_jobs(json_t *jobs, long long omitted) {
        static const char *const cols[] = {"STATE",   "CLASS", "OWNER", "EXPECTED",
                                           "WAITING", "START", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j) {
                char exp[24], wait[24], d[24], start[48];
                bool running = json_is_true(json_object_get(j, "running"));
                cvmctl_format_ms(exp, sizeof(exp), cvmctl_jnum(j, "expected_ms"));
                cvmctl_format_ms(wait, sizeof(wait), cvmctl_jnum(j, "waiting_ms"));
                if (running)
                        snprintf(start, sizeof(start), "started, %s left",
                                 cvmctl_format_ms(d, sizeof(d), cvmctl_jnum(j, "remaining_ms")));
                else
                        snprintf(start, sizeof(start), "in %s%s",
                                 cvmctl_format_ms(d, sizeof(d),
                                                  cvmctl_jnum(j, "predicted_start_in_ms")),
                                 json_is_true(json_object_get(j, "aged")) ? " (aged)" : "");
                const char *row[] = {running ? "running" : "queued",
                                     cvmctl_jstr(j, "class"),
                                     cvmctl_jstr(j, "owner"),
                                     exp,
                                     wait,
                                     start};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t)) {
                printf("\n");
                cvmctl_table_print(t, stdout, 0);
                if (omitted > 0)
                        printf("... and %lld more\n", omitted);
        } else {
                printf("\nno launch work queued or running\n");
        }
        cvmctl_table_free(t);
}

static void print_commands(json_t *queue) {
        static const char *const cols[] = {"COMMAND", "OWNER", "STATE", "WAITING", "PAGE", NULL};
        cvmctl_table *t = cvmctl_table_new(cols);
        size_t i;
        json_t *q;
        json_array_foreach(queue, i, q) {
                char wait[24];
                cvmctl_format_ms(wait, sizeof(wait), cvmctl_jnum(q, "waiting_ms"));
                const char *row[] = {cvmctl_jstr(q, "command"), cvmctl_jstr(q, "owner"),
                                     json_is_true(json_object_get(q, "in_service")) ? "in service"
                                                                                    : "queued",
                                     wait, cvmctl_jstr(q, "page_type")};
                cvmctl_table_row(t, row);
        }
        if (cvmctl_table_rows(t)) {
                printf("\n");
                cvmctl_table_print(t, stdout, 0);
        }
        cvmctl_table_free(t);
}

static void print_psp(json_t *p) {
        json_t *as = json_object_get(p, "asids"), *s = json_object_get(p, "scheduler");
        char a[32], b[32];
        printf("host:         %s, schedule %s\n", cvmctl_jstr(p, "host"),
               cvmctl_jstr(p, "schedule"));
        printf("state:        %s, %lld commands waiting, %lld launches in progress\n",
               json_is_true(json_object_get(p, "busy")) ? "busy" : "idle",
               cvmctl_jint(p, "queue_depth"), cvmctl_jint(p, "launches"));
        printf("utilisation:  %s (busy %s since the daemon started)\n",
               cvmctl_format_percent(a, sizeof(a), cvmctl_jnum(p, "utilisation")),
               cvmctl_format_ms(b, sizeof(b), cvmctl_jnum(p, "busy_ms")));
        printf("ASIDs:        %lld in use, %lld dirty, %lld free of %lld\n",
               cvmctl_jint(as, "in_use"), cvmctl_jint(as, "dirty"), cvmctl_jint(as, "free"),
               cvmctl_jint(as, "total"));
        printf("commands:    ");
        const char *key;
        json_t *v;
        const char *sep = "";
        json_object_foreach(json_object_get(p, "commands"), key, v) {
                printf("%s %s %lld", sep, key, (long long)json_integer_value(v));
                sep = ",";
        }
        printf("\n              %lld DF_FLUSHes, %lld failed\n", cvmctl_jint(p, "df_flushes"),
               cvmctl_jint(p, "failed"));
        if (!s)
                return;
        printf("scheduler:    window %lld, aging %s, ASID reserve %lld%s; cost correction %.2f "
               "(%lld samples)\n",
               cvmctl_jint(s, "window"), cvmctl_format_ms(a, sizeof(a), cvmctl_jnum(s, "aging_ms")),
               cvmctl_jint(s, "asid_reserve"),
               json_is_true(json_object_get(s, "asid_pressure")) ? " (ASIDs short)" : "",
               cvmctl_jnum(s, "correction"), cvmctl_jint(s, "correction_samples"));
        printf("jobs:         %lld queued, %lld running; %lld started, %lld completed, %lld "
               "cancelled, %lld rejected\n",
               cvmctl_jint(s, "queued"), cvmctl_jint(s, "running"), cvmctl_jint(s, "started"),
               cvmctl_jint(s, "completed"), cvmctl_jint(s, "cancelled"),
               cvmctl_jint(s, "rejected"));
        printf("by class:    ");
        sep = "";
        json_object_foreach(json_object_get(s, "classes"), key, v) {
                printf("%s %s %lld+%lld", sep, key, cvmctl_jint(v, "running"),
                       cvmctl_jint(v, "queued"));
                sep = ",";
        }
        printf(" (running+queued)\n");
        print_jobs(json_object_get(s, "jobs"), cvmctl_jint(s, "jobs_omitted"));
        print_commands(json_object_get(p, "queue"));
}

static int run(cvmctl *ctl, int argc, char **argv) {
        int r = cvmctl_no_args(&cvmctl_cmd_psp, argc, argv);
        if (r >= 0)
                return r;
        cvm_error err = {0};
        json_t *doc = NULL;
        if (cvmctl_request_json(ctl->client, "GET", "/v1/psp", NULL, &doc, &err) < 0)
                return cvmctl_fail(&err);
        if (ctl->json)
                cvmctl_print_json(doc);
        else
                print_psp(doc);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

const cvmctl_command cvmctl_cmd_psp = {
        .name = "psp",
        .summary = "show the PSP's state and the launch scheduler's queue",
        .usage = "psp\n"
                 "Shows the PSP's utilisation, ASIDs and command counts, then the scheduler's\n"
                 "jobs (running first, then the queue in serving order, with each job's class\n"
                 "and predicted start) and the PSP's own command queue.\n"
                 "Example: cvmctl psp",
        .run = run,
};
