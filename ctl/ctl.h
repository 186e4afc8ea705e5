/* cvmctl: the command line. main.c parses the global options and dispatches
 * to one command per file (cmd_*.c) through the table in main.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "client.h"

/* Exit statuses, as documented in `cvmctl --help`. */
enum {
        CVMCTL_EXIT_OK = 0,
        CVMCTL_EXIT_FAILURE = 1,
        CVMCTL_EXIT_USAGE = 2,
};

typedef struct cvmctl {
        cvmctl_client *client;
        bool json; /* --json: print the API's JSON unchanged. */
} cvmctl;

typedef struct cvmctl_command {
        const char *name;
        const char *summary;
        const char *usage; /* Shown by `cvmctl NAME --help`. */
        int (*run)(cvmctl *ctl, int argc, char **argv);
} cvmctl_command;

extern const cvmctl_command cvmctl_cmd_health;
extern const cvmctl_command cvmctl_cmd_version;
extern const cvmctl_command cvmctl_cmd_measure;

/* Reports err on stderr as one line and returns CVMCTL_EXIT_FAILURE. */
int cvmctl_fail(const cvm_error *err);
/* Handles `--help` / unexpected arguments for commands without options:
 * returns -1 to go on, or an exit status. */
int cvmctl_no_args(const cvmctl_command *cmd, int argc, char **argv);
/* Prints a JSON document as --json does. */
void cvmctl_print_json(json_t *doc);
