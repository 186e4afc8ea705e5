/* cvmctl image build: a function's guest image from its handler. Builds the
 * initrd (cvm-init, the static agent, the kernel's virtio modules and the
 * handler, by firmware/tools/mkinitrd.sh), puts the kernel and the boot
 * verifier beside it, and prints the launch image spec to deploy with its
 * expected SEV-SNP measurement. Local: no daemon is involved. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "file.h"
#include "path.h"

#define MAX_FILES 64
#define MAX_ARGS 64
#define MAX_COPY ((size_t)1 << 30)
#define DEFAULT_APPEND "console=ttyS0 quiet panic=-1"

extern char **environ;

typedef struct build_opts {
        const char *handler, *out, *guest, *firmware, *append, *vcpu_type;
        const char *files[MAX_FILES];
        size_t nfiles;
        unsigned long concurrency, vcpus, memory_mib;
        char **argv; /* The handler's arguments after "--". */
        int argc;
} build_opts;

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_image, __VA_ARGS__)

static int need_file(const char *what, const char *path, int mode, cvm_error *err) {
        if (access(path, mode) < 0)
                return cvm_error_set_errno(err, -errno, "%s %s", what, path);
        return 0;
}

/* Copies src to dir/name; *ret is the new path. */
static int copy_into(const char *src, const char *dir, const char *name, char **ret,
                     cvm_error *err) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        int r = cvm_file_read(src, MAX_COPY, &data, &len, NULL, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *dst = NULL;
        if (asprintf(&dst, "%s/%s", dir, name) < 0)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        if ((r = cvm_file_write_atomic(dst, data, len, 0644, err)) < 0)
                return r;
        *ret = CVM_TAKE_PTR(dst);
        return 0;
}

/* Runs mkinitrd.sh; its own messages go to stderr as they come. */
static int run_mkinitrd(const build_opts *o, const char *initrd, cvm_error *err) {
        _cleanup_free_ char *script = cvm_path_shipped(CVM_PATH_MKINITRD);
        _cleanup_free_ char *modules = NULL, *init = NULL, *agent = NULL, *conc = NULL;
        if (!script || asprintf(&modules, "%s/kernel/modules", o->guest) < 0 ||
            asprintf(&init, "%s/cvm-init", o->guest) < 0 ||
            asprintf(&agent, "%s/cvm-agent", o->guest) < 0 ||
            asprintf(&conc, "%lu", o->concurrency) < 0)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r;
        if ((r = need_file("the initrd builder", script, X_OK, err)) < 0 ||
            (r = need_file("the guest's init (`make guest` builds it; --guest DIR names another):",
                           init, R_OK, err)) < 0 ||
            (r = need_file("the guest agent (`make guest` builds it; --guest DIR names another):",
                           agent, R_OK, err)) < 0 ||
            (r = need_file(
                     "the kernel's modules (`make guest` builds them; --guest DIR names others):",
                     modules, R_OK, err)) < 0)
                return r;
        const char *argv[20 + 2 * MAX_FILES + MAX_ARGS];
        size_t n = 0;
        argv[n++] = script;
        argv[n++] = "--out";
        argv[n++] = initrd;
        argv[n++] = "--gzip";
        argv[n++] = "--kernel-modules";
        argv[n++] = modules;
        argv[n++] = "--init";
        argv[n++] = init;
        argv[n++] = "--agent";
        argv[n++] = agent;
        argv[n++] = "--handler";
        argv[n++] = o->handler;
        argv[n++] = "--concurrency";
        argv[n++] = conc;
        for (size_t i = 0; i < o->nfiles; i++) {
                argv[n++] = "--file";
                argv[n++] = o->files[i];
        }
        /* mkinitrd takes the whole argv after "--": the handler, as installed, first. */
        _cleanup_free_ char *installed = NULL;
        if (o->argc > 0) {
                const char *base = strrchr(o->handler, '/');
                if (asprintf(&installed, "/fn/%s", base ? base + 1 : o->handler) < 0)
                        return cvm_error_set(err, -ENOMEM, "out of memory");
                argv[n++] = "--";
                argv[n++] = installed;
                for (int i = 0; i < o->argc; i++)
                        argv[n++] = o->argv[i];
        }
        argv[n] = NULL;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        pid_t pid;
        int e = posix_spawn(&pid, script, &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (e != 0)
                return cvm_error_set_errno(err, -e, "cannot run %s", script);
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return cvm_error_set_errno(err, -errno, "waiting for %s", script);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return cvm_error_set(err, -EIO, "building the initrd failed (%s, see above)",
                                     script);
        return 0;
}

/* The handler's argv inside the guest: mkinitrd installs it as /fn/NAME. */
static json_t *handler_exec(const build_opts *o) {
        const char *base = strrchr(o->handler, '/');
        base = base ? base + 1 : o->handler;
        json_t *exec = json_array();
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "/fn/%s", base);
        json_array_append_new(exec, json_string(path));
        for (int i = 0; i < o->argc; i++)
                json_array_append_new(exec, json_string(o->argv[i]));
        return exec;
}

static int build(cvmctl *ctl, build_opts *o) {
        cvm_error err = {0};
        int r;
        if ((r = need_file("the handler", o->handler, X_OK, &err)) < 0)
                return cvmctl_fail(&err);
        if (mkdir(o->out, 0755) < 0 && errno != EEXIST) {
                cvm_error_set_errno(&err, -errno, "cannot create %s", o->out);
                return cvmctl_fail(&err);
        }
        _cleanup_free_ char *out = realpath(o->out, NULL);
        _cleanup_free_ char *guest_default = o->guest ? NULL : cvm_path_shipped(CVM_PATH_GUEST);
        _cleanup_free_ char *fw_default = o->firmware ? NULL : cvm_path_shipped(CVM_PATH_VERIFIER);
        _cleanup_free_ char *kernel_src = NULL, *initrd = NULL, *kernel = NULL, *firmware = NULL;
        if (!out) {
                cvm_error_set_errno(&err, -errno, "cannot resolve %s", o->out);
                return cvmctl_fail(&err);
        }
        if (!o->guest)
                o->guest = guest_default;
        if (!o->firmware)
                o->firmware = fw_default;
        if (!o->guest || !o->firmware || asprintf(&initrd, "%s/initrd.cpio.gz", out) < 0 ||
            asprintf(&kernel_src, "%s/kernel/vmlinuz", o->guest) < 0) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                return cvmctl_fail(&err);
        }
        if ((r = need_file("the guest kernel (`make guest` builds it; --guest DIR names another):",
                           kernel_src, R_OK, &err)) < 0 ||
            (r = run_mkinitrd(o, initrd, &err)) < 0 ||
            (r = copy_into(kernel_src, out, "vmlinuz", &kernel, &err)) < 0 ||
            (r = copy_into(o->firmware, out, "verifier.bin", &firmware, &err)) < 0)
                return cvmctl_fail(&err);

        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        cvm_snp_launch_pages pages;
        cvmctl_image img = {.firmware = firmware,
                            .kernel = kernel,
                            .initrd = initrd,
                            .append = o->append,
                            .vcpus = (unsigned)o->vcpus,
                            .vcpu_type = o->vcpu_type};
        if (cvmctl_measure_image(&img, digest, &pages, &err) < 0)
                return cvmctl_fail(&err);
        char hex[CVM_SNP_DIGEST_HEX_SIZE];
        cvm_snp_digest_to_hex(digest, hex);

        /* A function spec to deploy as is (cvmctl fn deploy DIR/function.json --name N). */
        json_auto_t *spec =
                json_pack("{s:{s:s, s:s, s:s, s:s, s:I, s:I, s:s}, s:{s:o}}", "image", "firmware",
                          firmware, "kernel", kernel, "initrd", initrd, "cmdline", o->append,
                          "vcpus", (json_int_t)o->vcpus, "memory_mib", (json_int_t)o->memory_mib,
                          "vcpu_type", o->vcpu_type, "handler", "exec", handler_exec(o));
        _cleanup_free_ char *spec_path = NULL;
        if (!spec || asprintf(&spec_path, "%s/function.json", out) < 0) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                return cvmctl_fail(&err);
        }
        if (json_dump_file(spec, spec_path, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
                cvm_error_set(&err, -EIO, "cannot write %s", spec_path);
                return cvmctl_fail(&err);
        }
        if (ctl->json) {
                json_t *doc =
                        json_pack("{s:O, s:s, s:s, s:I}", "spec", spec, "spec_file", spec_path,
                                  "measurement", hex, "psp_pages",
                                  (json_int_t)(pages.normal + pages.zero + pages.secrets +
                                               pages.cpuid + pages.kernel_hashes + pages.vmsa));
                cvmctl_print_json(doc);
                json_decref(doc);
                return CVMCTL_EXIT_OK;
        }
        struct stat st;
        double mib = stat(initrd, &st) == 0 ? (double)st.st_size / (1 << 20) : 0;
        _cleanup_free_ char *text = json_dumps(spec, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("initrd:      %s (%.1f MiB)\n", initrd, mib);
        printf("spec:        %s\n", spec_path);
        printf("measurement: %s\n", hex);
        printf("%s\n", text ? text : "");
        return CVMCTL_EXIT_OK;
}

static int parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *end || !*s || v < min || v > max)
                return -1;
        *ret = v;
        return 0;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                if (argc < 2)
                        return usage_error("a subcommand is required (build)");
                return cvmctl_help(&cvmctl_cmd_image);
        }
        if (strcmp(argv[1], "build") != 0)
                return usage_error("unknown subcommand (build)");
        static const struct option opts[] = {
                {"handler", required_argument, NULL, 'H'},
                {"file", required_argument, NULL, 'f'},
                {"out", required_argument, NULL, 'o'},
                {"guest", required_argument, NULL, 'g'},
                {"firmware", required_argument, NULL, 'F'},
                {"append", required_argument, NULL, 'a'},
                {"concurrency", required_argument, NULL, 'c'},
                {"vcpus", required_argument, NULL, 'n'},
                {"memory-mib", required_argument, NULL, 'm'},
                {"vcpu-type", required_argument, NULL, 't'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        build_opts o = {.append = DEFAULT_APPEND,
                        .vcpu_type = "EPYC-v4",
                        .concurrency = 1,
                        .vcpus = 1,
                        .memory_mib = 256};
        int c;
        optind = 0;
        /* getopt names argv[0] in its messages. */
        char *progname = argv[1];
        argv[1] = "cvmctl image build";
        /* "+": stop at "--", after which come the handler's own arguments. */
        while ((c = getopt_long(argc - 1, argv + 1, "+h", opts, NULL)) != -1) {
                switch (c) {
                case 'H': o.handler = optarg; break;
                case 'o': o.out = optarg; break;
                case 'g': o.guest = optarg; break;
                case 'F': o.firmware = optarg; break;
                case 'a': o.append = optarg; break;
                case 't': o.vcpu_type = optarg; break;
                case 'f':
                        if (o.nfiles == MAX_FILES)
                                return usage_error("at most 64 --file options");
                        if (!strchr(optarg, ':'))
                                return usage_error("--file takes SRC:DST");
                        o.files[o.nfiles++] = optarg;
                        break;
                case 'c':
                        if (parse_ulong(optarg, 1, 1024, &o.concurrency) < 0)
                                return usage_error("--concurrency must be a number from 1 to 1024");
                        break;
                case 'n':
                        if (parse_ulong(optarg, 1, CVM_SNP_MAX_VCPUS, &o.vcpus) < 0)
                                return usage_error("--vcpus must be a number from 1 to 1024");
                        break;
                case 'm':
                        if (parse_ulong(optarg, 64, 1 << 20, &o.memory_mib) < 0)
                                return usage_error(
                                        "--memory-mib must be a number from 64 to 1048576");
                        break;
                case 'h': return cvmctl_help(&cvmctl_cmd_image);
                default: return cvmctl_usage_hint(&cvmctl_cmd_image);
                }
        }
        argv[1] = progname;
        if (!o.handler || !o.out)
                return usage_error("--handler and --out are required");
        o.argv = argv + 1 + optind;
        o.argc = argc - 1 - optind;
        if (o.argc > MAX_ARGS)
                return usage_error("at most 64 handler arguments");
        return build(ctl, &o);
}

const cvmctl_command cvmctl_cmd_image = {
        .name = "image",
        .summary = "build a function's guest image and print its spec and expected measurement",
        .usage =
                "image build --handler PATH --out DIR [--file SRC:DST]... [--concurrency N]\n"
                "           [--append CMDLINE] [--vcpus N] [--memory-mib N] [--vcpu-type T]\n"
                "           [--guest DIR] [--firmware FILE] [--json] [-- HANDLER_ARGS...]\n"
                "Builds in DIR an initrd (cvm-init, the agent, the handler as /fn/NAME and any\n"
                "--file), with the kernel and the boot verifier beside it, and DIR/function.json,\n"
                "a spec to deploy; prints the spec and its expected SEV-SNP measurement. The\n"
                "guest pieces come from --guest (default: those `make guest` builds).\n"
                "Example: cvmctl image build --handler ./resize --out img -- --width 64\n"
                "         cvmctl fn deploy img/function.json --name resize",
        .run = run,
};
