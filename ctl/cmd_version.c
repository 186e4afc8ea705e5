/* cvmctl version: the client's and the daemon's versions. */
#include <stdio.h>

#include "ctl.h"
#include "version.h"

static int run(cvmctl *ctl, int argc, char **argv) {
        int r = cvmctl_no_args(&cvmctl_cmd_version, argc, argv);
        if (r >= 0)
                return r;
        cvm_error err = {0};
        json_t *doc = NULL;
        r = cvmctl_request_json(ctl->client, "GET", "/v1/version", NULL, &doc, &err);
        if (ctl->json) {
                if (r < 0)
                        return cvmctl_fail(&err);
                cvmctl_print_json(doc);
                json_decref(doc);
                return CVMCTL_EXIT_OK;
        }
        printf("cvmctl %s\n", CVM_VERSION);
        if (r < 0)
                return cvmctl_fail(&err);
        printf("cvmd   %s (API %s)\n", json_string_value(json_object_get(doc, "version")),
               json_string_value(json_object_get(doc, "api")));
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

const cvmctl_command cvmctl_cmd_version = {
        .name = "version",
        .summary = "show the versions of cvmctl and of the daemon",
        .usage = "version [--json]",
        .run = run,
};
