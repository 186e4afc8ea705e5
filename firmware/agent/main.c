/* cvm-agent: the guest agent program. Connects to the host (an inherited
 * socket, a Unix socket path, or a virtio-serial port), then serves
 * invocations until SHUTDOWN (exit 0) or until the host is lost (exit 1). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"
#include "agent_proto.h"
#include "cleanup.h"
#include "log.h"
#include "version.h"

static void usage(FILE *f) {
        fprintf(f,
                "usage: cvm-agent [--fd N | --connect unix:PATH | --device PATH]\n"
                "                 [--concurrency N] [--max-response BYTES] [--max-stderr BYTES]\n"
                "                 [--sev-guest PATH] [--log-level error|warn|info|debug]\n"
                "                 -- HANDLER [ARGS...]\n");
}

static int parse_u32(const char *opt, const char *s, uint64_t min, uint64_t max, uint32_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
                log_error("%s: %s is not an integer in %" PRIu64 "..%" PRIu64, opt, CVM_QUOTE(s),
                          min, max);
                return -EINVAL;
        }
        *ret = (uint32_t)v;
        return 0;
}

static int connect_unix(const char *spec) {
        if (strncmp(spec, "unix:", 5) != 0) {
                log_error("--connect: %s is not unix:PATH", CVM_QUOTE(spec));
                return -EINVAL;
        }
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *path = spec + 5;
        if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
                log_error("--connect: bad socket path %s", CVM_QUOTE(path));
                return -EINVAL;
        }
        memcpy(sa.sun_path, path, strlen(path));
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                log_error("--connect: %s: %s", CVM_QUOTE(path), strerror(-r));
                return r;
        }
        return CVM_TAKE_FD(fd);
}

static int open_device(const char *path) {
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                int r = -errno;
                log_error("--device: %s: %s", CVM_QUOTE(path), strerror(-r));
                return r;
        }
        return fd;
}

int main(int argc, char **argv) {
        enum {
                OPT_FD = 256,
                OPT_CONNECT,
                OPT_DEVICE,
                OPT_CONC,
                OPT_RESP,
                OPT_STDERR,
                OPT_LEVEL,
                OPT_SEV_GUEST
        };
        static const struct option longopts[] = {
                {"fd", required_argument, NULL, OPT_FD},
                {"connect", required_argument, NULL, OPT_CONNECT},
                {"device", required_argument, NULL, OPT_DEVICE},
                {"concurrency", required_argument, NULL, OPT_CONC},
                {"max-response", required_argument, NULL, OPT_RESP},
                {"max-stderr", required_argument, NULL, OPT_STDERR},
                {"log-level", required_argument, NULL, OPT_LEVEL},
                {"sev-guest", required_argument, NULL, OPT_SEV_GUEST},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {0},
        };
        cvm_log_setup("cvm-agent");
        cvm_agent_opts opts = {0};
        const char *connect_spec = NULL, *device = NULL;
        uint32_t fd_arg = 0, conc = 1;
        int sources = 0, c;
        while ((c = getopt_long(argc, argv, "+hV", longopts, NULL)) != -1) {
                int r = 0;
                cvm_log_level level;
                switch (c) {
                case OPT_FD:
                        r = parse_u32("--fd", optarg, 0, INT_MAX, &fd_arg);
                        sources++;
                        break;
                case OPT_CONNECT:
                        connect_spec = optarg;
                        sources++;
                        break;
                case OPT_DEVICE:
                        device = optarg;
                        sources++;
                        break;
                case OPT_CONC: r = parse_u32("--concurrency", optarg, 1, UINT16_MAX, &conc); break;
                case OPT_RESP:
                        r = parse_u32("--max-response", optarg, 1, UINT32_MAX - (1u << 20),
                                      &opts.max_response);
                        break;
                case OPT_STDERR:
                        r = parse_u32("--max-stderr", optarg, 1, CVM_AGENT_MAX_STDERR,
                                      &opts.max_stderr);
                        break;
                case OPT_SEV_GUEST: opts.sev_guest = optarg; break;
                case OPT_LEVEL:
                        if (cvm_log_level_from_string(optarg, &level) < 0) {
                                log_error("--log-level: unknown level %s", CVM_QUOTE(optarg));
                                return 2;
                        }
                        cvm_log_set_level(level);
                        break;
                case 'h': usage(stdout); return 0;
                case 'V': printf("cvm-agent %s\n", CVM_VERSION); return 0;
                default: usage(stderr); return 2;
                }
                if (r < 0)
                        return 2;
        }
        if (sources != 1 || optind >= argc) {
                log_error(sources != 1 ? "exactly one of --fd, --connect, --device is required"
                                       : "no handler command after --");
                usage(stderr);
                return 2;
        }
        opts.concurrency = (uint16_t)conc;
        opts.argv = argv + optind;

        int fd = connect_spec ? connect_unix(connect_spec)
                 : device     ? open_device(device)
                              : (int)fd_arg;
        if (fd < 0)
                return 1;
        /* A vanished host must surface as a write error, not kill the agent. */
        signal(SIGPIPE, SIG_IGN);
        /* The private key generated below must never reach a core dump, and
         * handlers (same user) must not read it through ptrace or /proc. */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
                log_error("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
                return 1;
        }

        uv_loop_t loop;
        int r = uv_loop_init(&loop);
        if (r < 0) {
                log_error("uv_loop_init: %s", uv_strerror(r));
                return 1;
        }
        cvm_error err = {0};
        cvm_agent *agent = NULL;
        r = cvm_agent_new(&loop, fd, &opts, &agent, &err);
        if (r < 0)
                log_error("%s", err.message);
        uv_run(&loop, UV_RUN_DEFAULT);
        int status = agent ? cvm_agent_exit_status(agent) : 1;
        cvm_agent_free(agent);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return status;
}
