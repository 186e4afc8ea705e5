/* cvmctl: the command line. main.c parses the global options and dispatches
 * to one command per file (cmd_*.c) through the table in main.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "client.h"
#include "snp_measure.h"

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
extern const cvmctl_command cvmctl_cmd_attest;
extern const cvmctl_command cvmctl_cmd_fn;
extern const cvmctl_command cvmctl_cmd_invoke;
extern const cvmctl_command cvmctl_cmd_pool;
extern const cvmctl_command cvmctl_cmd_vm;
extern const cvmctl_command cvmctl_cmd_psp;
extern const cvmctl_command cvmctl_cmd_stats;
extern const cvmctl_command cvmctl_cmd_top;
extern const cvmctl_command cvmctl_cmd_bench;
extern const cvmctl_command cvmctl_cmd_image;

/* Reports err on stderr as one line and returns CVMCTL_EXIT_FAILURE. */
int cvmctl_fail(const cvm_error *err);
/* Handles `--help` / unexpected arguments for commands without options:
 * returns -1 to go on, or an exit status. */
int cvmctl_no_args(const cvmctl_command *cmd, int argc, char **argv);
/* A launch image as the measure and attest commands take it from flags. */
typedef struct cvmctl_image {
        const char *firmware, *kernel, *initrd, *append;
        unsigned vcpus;          /* 0: 1. */
        const char *vcpu_type;   /* NULL: EPYC-v4. */
        uint64_t guest_features; /* 0: the SNP default. */
} cvmctl_image;
/* Reads the files and computes the launch digest (cmd_measure.c). */
int cvmctl_measure_image(const cvmctl_image *img, uint8_t digest[48], cvm_snp_launch_pages *pages,
                         cvm_error *err);

/* Prints a JSON document as --json does. */
void cvmctl_print_json(json_t *doc);
