/* cvmd: command line, configuration, then the loop. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "version.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *f) {
        fprintf(f,
                "Usage: cvmd [OPTIONS]\n"
                "The cvmd daemon: warm pools of SEV-SNP microVMs, a PSP launch scheduler and\n"
                "function invocation over an HTTP API.\n\n"
                "Options:\n"
                "  --config PATH        JSON config file (default %s; a missing default\n"
                "                       file means built-in defaults)\n"
                "  --listen ADDR        unix:PATH or tcp:HOST:PORT; repeatable; replaces the\n"
                "                       config's list (default unix:$RUNTIME_DIRECTORY/cvmd.sock\n"
                "                       or unix:/run/cvmd/cvmd.sock)\n"
                "  --state-dir DIR      state directory (default $STATE_DIRECTORY or "
                "/var/lib/cvmd)\n"
                "  --db PATH            database file (default STATE_DIR/cvmd.db)\n"
                "  --host sim|libvirt   where VMs run (default sim)\n"
                "  --log-level LEVEL    error, warn, info or debug (default info)\n"
                "  --check-config       validate the configuration, print it as JSON, exit\n"
                "  --version            print the version and exit\n"
                "  -h, --help           show this help\n\n"
                "Exit status: 0 on a clean shutdown, 1 on failure, 2 on a usage error.\n",
                CVM_CONFIG_DEFAULT_PATH);
}

/* libuv (1.44, Debian 12) registers a pthread_atfork child handler at the
 * first uv_loop_init: it closes the two fds of its signal lock pipe, by
 * number, and opens a new pipe. libvirt starts QEMU with fork, a mass close
 * of inherited fds, a pipe (the lowest free fds: 3 and 4) and a second fork
 * (virCommandDaemonize). In that second child the handler runs again and
 * closes the numbers its pipe got in the first child -- the lowest free fds
 * at the first fork, 4 and 5 when libuv's pipe is cvmd's second fd -- so it
 * closes libvirt's handshake pipe and QEMU never starts ("Unable to notify
 * child process: Bad file descriptor" in the domain's log). Holding the low
 * fds from the start keeps libuv's pipe, and every fd free at a fork,
 * above the few libvirt's intermediate child uses. */
#define LOW_FDS 8

static void reserve_low_fds(void) {
        for (int fd = 0; fd < LOW_FDS; fd++) {
                if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
                        continue;
                /* stdin, stdout and stderr stay inheritable, as if the daemon had them. */
                int r = open("/dev/null", O_RDWR | (fd > 2 ? O_CLOEXEC : 0));
                if (r < 0)
                        return;
                if (r != fd) {
                        close(r);
                        return;
                }
        }
}

int main(int argc, char **argv) {
        reserve_low_fds();
        cvm_log_setup("cvmd");
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"listen", required_argument, NULL, 'l'},
                {"state-dir", required_argument, NULL, 's'},
                {"db", required_argument, NULL, 'd'},
                {"host", required_argument, NULL, 'H'},
                {"log-level", required_argument, NULL, 'L'},
                {"check-config", no_argument, NULL, 'C'},
                {"version", no_argument, NULL, 'V'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *config_path = NULL, *state_dir = NULL, *db = NULL, *host = NULL,
                   *log_level = NULL;
        char *listen[CVM_CONFIG_MAX_LISTEN];
        size_t n_listen = 0;
        bool check = false;
        int c;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'c': config_path = optarg; break;
                case 'l':
                        if (n_listen == CVM_CONFIG_MAX_LISTEN) {
                                fprintf(stderr, "cvmd: at most %d --listen options\n",
                                        CVM_CONFIG_MAX_LISTEN);
                                return EXIT_USAGE;
                        }
                        listen[n_listen++] = optarg;
                        break;
                case 's': state_dir = optarg; break;
                case 'd': db = optarg; break;
                case 'H': host = optarg; break;
                case 'L': log_level = optarg; break;
                case 'C': check = true; break;
                case 'V': printf("cvmd %s\n", CVM_VERSION); return 0;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return EXIT_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "cvmd: unexpected argument %s\n", CVM_QUOTE(argv[optind]));
                return EXIT_USAGE;
        }

        cvm_config cfg;
        cvm_error err = {0};
        int r = cvm_config_init(&cfg, &err);
        if (r >= 0)
                r = cvm_config_load_file(&cfg, config_path ? config_path : CVM_CONFIG_DEFAULT_PATH,
                                         !config_path, &err);
        /* Flags override the file, and are validated the same way. */
        if (r >= 0 && n_listen)
                r = cvm_config_set_listen(&cfg, listen, n_listen, &err);
        if (r >= 0 && state_dir)
                r = cvm_config_set_string(&cfg.state_dir, state_dir, &err);
        if (r >= 0 && db)
                r = cvm_config_set_string(&cfg.db_path, db, &err);
        if (r >= 0 && host && (r = cvm_config_validate_host(host, &err)) >= 0)
                r = cvm_config_set_string(&cfg.host, host, &err);
        if (r >= 0 && log_level && cvm_log_level_from_string(log_level, &cfg.log_level) < 0)
                r = cvm_error_set(&err, -EINVAL,
                                  "--log-level must be one of error, warn, info, debug");
        if (r < 0) {
                log_error("%s", err.message);
                cvm_config_done(&cfg);
                return EXIT_FAILURE;
        }
        if (r >= 0)
                r = cvmd_check_sections(&cfg, &err);
        if (r < 0) {
                log_error("%s", err.message);
                cvm_config_done(&cfg);
                return EXIT_FAILURE;
        }
        if (check) {
                json_auto_t *j = cvm_config_to_json(&cfg);
                json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
                putchar('\n');
                cvm_config_done(&cfg);
                return 0;
        }

        cvmd d;
        r = cvmd_start(&d, &cfg, &err);
        if (r < 0) {
                log_error("cannot start: %s", err.message);
                cvmd_done(&d);
                return EXIT_FAILURE;
        }
        int status = cvmd_run(&d);
        cvmd_done(&d);
        return status;
}
