/* cvmctl: global options, then one command from the table. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"
#include "version.h"

#define DEFAULT_SOCKET "/run/cvmd/cvmd.sock"

static const cvmctl_command *const commands[] = {
        &cvmctl_cmd_health, &cvmctl_cmd_version, &cvmctl_cmd_measure, &cvmctl_cmd_attest,
        &cvmctl_cmd_fn,     &cvmctl_cmd_invoke,  &cvmctl_cmd_pool,    &cvmctl_cmd_vm,
        &cvmctl_cmd_psp,    &cvmctl_cmd_stats,   &cvmctl_cmd_top,     &cvmctl_cmd_bench,
        &cvmctl_cmd_image,
};

static void usage(FILE *f) {
        fprintf(f, "Usage: cvmctl [OPTIONS] COMMAND [ARGS]\n"
                   "Talks to cvmd, the confidential serverless daemon.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(f, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
        fprintf(f,
                "\nOptions:\n"
                "  -s, --socket PATH  the daemon's Unix socket (default $CVMD_SOCKET, else %s)\n"
                "  -u, --url URL      the daemon's TCP address, e.g. http://host:8080\n"
                "                     (default $CVMD_URL)\n"
                "  -t, --token TOKEN  API token for TCP (default $CVMD_TOKEN); the Unix socket\n"
                "                     needs none\n"
                "      --json         print the API's JSON unchanged\n"
                "  -h, --help         show this help; `cvmctl COMMAND --help` for a command\n"
                "      --version      print cvmctl's version\n\n"
                "Exit status: 0 success, 1 failure (the reason is printed on stderr),\n"
                "2 usage error.\n",
                DEFAULT_SOCKET);
}

int cvmctl_fail(const cvm_error *err) {
        fprintf(stderr, "cvmctl: %s\n", err->message);
        return CVMCTL_EXIT_FAILURE;
}

int cvmctl_no_args(const cvmctl_command *cmd, int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        printf("Usage: cvmctl %s\n%s\n", cmd->usage, cmd->summary);
                        return CVMCTL_EXIT_OK;
                }
                fprintf(stderr, "cvmctl %s: unexpected argument %s\nUsage: cvmctl %s\n", cmd->name,
                        CVM_QUOTE(argv[i]), cmd->usage);
                return CVMCTL_EXIT_USAGE;
        }
        return -1;
}

void cvmctl_print_json(json_t *doc) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        putchar('\n');
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"socket", required_argument, NULL, 's'},
                {"url", required_argument, NULL, 'u'},
                {"json", no_argument, NULL, 'j'},
                {"token", required_argument, NULL, 't'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {0},
        };
        const char *socket_path = NULL, *url = NULL, *token = NULL;
        cvmctl ctl = {0};
        int c;
        /* "+" stops at the command, whose options are its own. */
        while ((c = getopt_long(argc, argv, "+s:u:t:h", opts, NULL)) != -1) {
                switch (c) {
                case 's': socket_path = optarg; break;
                case 'u': url = optarg; break;
                case 'j': ctl.json = true; break;
                case 't': token = optarg; break;
                case 'h': usage(stdout); return CVMCTL_EXIT_OK;
                case 'V': printf("cvmctl %s\n", CVM_VERSION); return CVMCTL_EXIT_OK;
                default: usage(stderr); return CVMCTL_EXIT_USAGE;
                }
        }
        if (socket_path && url) {
                fprintf(stderr, "cvmctl: --socket and --url exclude each other\n");
                return CVMCTL_EXIT_USAGE;
        }
        if (optind >= argc) {
                usage(stderr);
                return CVMCTL_EXIT_USAGE;
        }
        const char *name = argv[optind];
        const cvmctl_command *cmd = NULL;
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]) && !cmd; i++)
                if (strcmp(commands[i]->name, name) == 0)
                        cmd = commands[i];
        if (!cmd) {
                fprintf(stderr, "cvmctl: unknown command %s; see `cvmctl --help`\n",
                        CVM_QUOTE(name));
                return CVMCTL_EXIT_USAGE;
        }
        /* --json is also accepted after the command, where people tend to type it. */
        int cargc = 0;
        char **cargv = calloc((size_t)(argc - optind) + 1, sizeof(char *));
        if (!cargv)
                return CVMCTL_EXIT_FAILURE;
        bool after_dashdash = false;
        for (int i = optind; i < argc; i++) {
                if (!after_dashdash && strcmp(argv[i], "--json") == 0) {
                        ctl.json = true;
                        continue;
                }
                if (strcmp(argv[i], "--") == 0)
                        after_dashdash = true;
                cargv[cargc++] = argv[i];
        }

        if (!socket_path && !url) {
                url = getenv("CVMD_URL");
                socket_path = getenv("CVMD_SOCKET");
                if (url && *url)
                        socket_path = NULL;
                else if (!socket_path || !*socket_path)
                        socket_path = DEFAULT_SOCKET;
        }
        cvm_error err = {0};
        int status;
        if (!token)
                token = getenv("CVMD_TOKEN");
        if (cvmctl_client_new(socket_path, socket_path ? NULL : url, &ctl.client, &err) < 0 ||
            (token && *token && cvmctl_client_set_token(ctl.client, token, &err) < 0))
                status = cvmctl_fail(&err);
        else
                status = cmd->run(&ctl, cargc, cargv);
        cvmctl_client_free(ctl.client);
        free(cargv);
        return status;
}
