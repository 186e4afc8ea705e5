/* cvmctl health: is the daemon up, and is anything wrong with it. */
#include <stdio.h>

#include "ctl.h"
#include "format.h"

static int run(cvmctl *ctl, int argc, char **argv) {
        int r = cvmctl_no_args(&cvmctl_cmd_health, argc, argv);
        if (r >= 0)
                return r;
        cvm_error err = {0};
        json_t *doc = NULL;
        /* A stopping daemon answers 503 with the same body: show it either way. */
        cvmctl_response resp;
        if (cvmctl_request(ctl->client, "GET", "/v1/health", NULL, NULL, 0, &resp, &err) < 0)
                return cvmctl_fail(&err);
        doc = json_loadb(resp.body, resp.len, 0, NULL);
        long status = resp.status;
        cvmctl_response_done(&resp);
        const char *state = json_string_value(json_object_get(doc, "status"));
        if (!doc || !state) {
                json_decref(doc);
                cvm_error_set(&err, -1, "unexpected answer from %s (HTTP %ld)",
                              cvmctl_client_target(ctl->client), status);
                return cvmctl_fail(&err);
        }
        if (ctl->json) {
                cvmctl_print_json(doc);
        } else {
                json_t *store = json_object_get(doc, "store");
                char up[32];
                printf("status:   %s\n", state);
                printf("version:  %s\n", json_string_value(json_object_get(doc, "version")));
                printf("host:     %s\n", json_string_value(json_object_get(doc, "host")));
                printf("uptime:   %s\n",
                       cvmctl_format_duration_ns(
                               up, sizeof(up),
                               (uint64_t)(json_number_value(json_object_get(doc, "uptime_s")) *
                                          1e9)));
                printf("store:    %lld written, %lld queued, %lld failed, %lld dropped\n",
                       (long long)json_integer_value(json_object_get(store, "written")),
                       (long long)json_integer_value(json_object_get(store, "queued")),
                       (long long)json_integer_value(json_object_get(store, "failed")),
                       (long long)json_integer_value(json_object_get(store, "dropped")));
                size_t i;
                json_t *w;
                json_array_foreach(json_object_get(doc, "warnings"), i, w)
                        printf("warning:  %s\n", json_string_value(w));
        }
        bool ok = status == 200;
        json_decref(doc);
        return ok ? CVMCTL_EXIT_OK : CVMCTL_EXIT_FAILURE;
}

const cvmctl_command cvmctl_cmd_health = {
        .name = "health",
        .summary = "show whether the daemon is up and healthy",
        .usage = "health [--json]",
        .run = run,
};
