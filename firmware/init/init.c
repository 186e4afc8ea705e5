/* cvm-init: PID 1 of the guest's initrd (docs/guest-image.md). It mounts
 * the pseudo file systems, loads the kernel modules listed in
 * /etc/cvm/modules, waits for the agent's virtio-serial port, runs the agent
 * as its child with the arguments in /etc/cvm/agent.args, reaps every orphan
 * meanwhile, and powers the VM off when the agent exits. There is no udev
 * and no shell in this path: the VM's boot time is spent here. Progress goes
 * to /dev/console (the serial port). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MODULES_FILE "/etc/cvm/modules"
#define ARGS_FILE "/etc/cvm/agent.args"
#define PORT_NAME_FILE "/etc/cvm/port-name"
#define MODULE_DIR "/lib/modules"
#define AGENT_PATH "/sbin/cvm-agent"
#define DEFAULT_PORT_NAME "org.cvmd.agent"
/* Long enough for a slow TCG boot to probe the PCI bus; a port that has not
 * appeared by then never will. */
#define PORT_WAIT_MS 10000
/* The host connects as it starts QEMU, long before the guest gets here. */
#define HOST_WAIT_MS 10000
#define MAX_ARGS 256
#define MAX_LINE 4096

static struct timespec boot_start;

static long elapsed_ms(void) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (now.tv_sec - boot_start.tv_sec) * 1000 +
               (now.tv_nsec - boot_start.tv_nsec) / 1000000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        /* The uptime stamp at the end makes the console log a boot profile
         * while keeping each line's start greppable. */
        struct timespec up;
        clock_gettime(CLOCK_BOOTTIME, &up);
        dprintf(STDERR_FILENO, "cvm-init: %s [%ld.%03lds]\n", buf, (long)up.tv_sec,
                up.tv_nsec / 1000000);
}

static _Noreturn void power_off(void) {
        sync();
        reboot(RB_POWER_OFF);
        /* Only reached if the platform cannot power off; halting is all that is left. */
        say("power off failed: %s; halting", strerror(errno));
        reboot(RB_HALT_SYSTEM);
        for (;;)
                pause();
}

/* A VM that cannot serve must not linger: the host sees it exit without
 * HELLO, and the console says why. */
static _Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void fatal(const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        say("FATAL: %s; powering off", buf);
        power_off();
        for (;;)
                pause();
}

static void make_dir(const char *path) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                fatal("mkdir %s: %s", path, strerror(errno));
}

static void mount_fs(const char *src, const char *target, const char *type, unsigned long flags,
                     const char *data) {
        make_dir(target);
        /* EBUSY: the kernel mounted it already (CONFIG_DEVTMPFS_MOUNT). */
        if (mount(src, target, type, flags, data) < 0 && errno != EBUSY)
                fatal("mount %s on %s: %s", type, target, strerror(errno));
}

/* The kernel starts init with the console open only if the initrd has a
 * /dev/console node; after devtmpfs is mounted it always exists. */
static void open_console(void) {
        int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return;
        for (int i = 0; i < 3; i++)
                if (dup2(fd, i) < 0)
                        return;
        if (fd > 2)
                close(fd);
}

/* Reads FILE into lines (newline-terminated; blank ones and "#" comments
 * skipped). Returns the count, or -1 with errno set when it cannot be read. */
static int read_lines(const char *file, char **lines, int max) {
        FILE *f = fopen(file, "re");
        if (!f)
                return -1;
        char buf[MAX_LINE];
        int n = 0;
        while (fgets(buf, sizeof(buf), f)) {
                size_t len = strlen(buf);
                if (len == sizeof(buf) - 1 && buf[len - 1] != '\n')
                        fatal("%s: line %d is longer than %d bytes", file, n + 1, MAX_LINE - 2);
                if (len && buf[len - 1] == '\n')
                        buf[--len] = '\0';
                if (len == 0 || buf[0] == '#')
                        continue;
                if (n == max)
                        fatal("%s: more than %d lines", file, max);
                lines[n] = strdup(buf);
                if (!lines[n])
                        fatal("out of memory");
                n++;
        }
        int failed = ferror(f);
        fclose(f);
        if (failed)
                fatal("reading %s failed", file);
        return n;
}

/* /sys/module/NAME exists for a module already loaded and for a built-in
 * one with parameters; loading it again would fail with EEXIST anyway. */
static bool module_present(const char *file) {
        char name[256];
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t len = strcspn(base, ".");
        if (len >= sizeof(name))
                return false;
        for (size_t i = 0; i < len; i++)
                name[i] = base[i] == '-' ? '_' : base[i];
        name[len] = '\0';
        char path[300];
        snprintf(path, sizeof(path), "/sys/module/%s", name);
        return access(path, F_OK) == 0;
}

static void load_modules(void) {
        char *lines[MAX_ARGS];
        int n = read_lines(MODULES_FILE, lines, MAX_ARGS);
        if (n < 0) {
                if (errno == ENOENT)
                        return;
                fatal("%s: %s", MODULES_FILE, strerror(errno));
        }
        for (int i = 0; i < n; i++) {
                /* A "?" marks a module whose absence of hardware is expected,
                 * such as sev-guest outside an SNP guest. */
                bool optional = lines[i][0] == '?';
                const char *file = lines[i] + optional;
                if (module_present(file)) {
                        say("module %s: already present", file);
                        free(lines[i]);
                        continue;
                }
                char path[MAX_LINE + 32];
                snprintf(path, sizeof(path), "%s/%s", MODULE_DIR, file);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        if (optional) {
                                say("module %s: %s (optional, skipped)", file, strerror(errno));
                                free(lines[i]);
                                continue;
                        }
                        fatal("module %s: %s", path, strerror(errno));
                }
                int r = (int)syscall(SYS_finit_module, fd, "", 0);
                int e = errno;
                close(fd);
                if (r < 0 && e != EEXIST) {
                        if (!optional)
                                fatal("loading module %s: %s", file, strerror(e));
                        say("module %s: %s (optional, skipped)", file, strerror(e));
                }
                free(lines[i]);
        }
        say("%d module(s) loaded at %ld ms", n, elapsed_ms());
}

/* Finds the virtio-serial port called NAME without udev: each port's name
 * is in /sys/class/virtio-ports/vportXpY/name, and devtmpfs creates
 * /dev/vportXpY. Returns true with the device path in dev. */
static bool find_port(const char *name, char *dev, size_t size) {
        DIR *d = opendir("/sys/class/virtio-ports");
        if (!d)
                return false;
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char path[512], buf[256];
                snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t len = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (len <= 0)
                        continue;
                buf[len] = '\0';
                buf[strcspn(buf, "\n")] = '\0';
                if (strcmp(buf, name) != 0)
                        continue;
                snprintf(dev, size, "/dev/%s", e->d_name);
                found = access(dev, F_OK) == 0;
        }
        closedir(d);
        return found;
}

static void wait_port(const char *name, char *dev, size_t size) {
        long start = elapsed_ms();
        while (!find_port(name, dev, size)) {
                if (elapsed_ms() - start > PORT_WAIT_MS)
                        fatal("no virtio-serial port named %s after %d ms", name, PORT_WAIT_MS);
                struct timespec ts = {.tv_nsec = 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        say("port %s is %s (waited %ld ms)", name, dev, elapsed_ms() - start);
}

/* A virtio-serial port reads as end of stream while no host is connected
 * to its backend, and the agent takes end of stream for the host leaving:
 * so the agent starts only once the port stops reporting POLLHUP. */
static void wait_host(const char *dev) {
        int fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                fatal("open %s: %s", dev, strerror(errno));
        long start = elapsed_ms();
        for (;;) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                int r = poll(&pfd, 1, 0);
                if (r < 0 && errno != EINTR)
                        fatal("poll %s: %s", dev, strerror(errno));
                if (r > 0 && !(pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
                        break;
                if (elapsed_ms() - start > HOST_WAIT_MS)
                        fatal("no host connected to %s after %d ms", dev, HOST_WAIT_MS);
                struct timespec ts = {.tv_nsec = 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        /* The port takes one opener at a time: the agent opens it afresh. */
        close(fd);
        long waited = elapsed_ms() - start;
        if (waited > 0)
                say("host connected to %s (waited %ld ms)", dev, waited);
}

static pid_t start_agent(const char *dev) {
        char *args[MAX_ARGS];
        int n = read_lines(ARGS_FILE, args, MAX_ARGS - 4);
        if (n < 0)
                fatal("%s: %s", ARGS_FILE, strerror(errno));
        char *argv[MAX_ARGS];
        int argc = 0;
        argv[argc++] = (char *)AGENT_PATH;
        argv[argc++] = (char *)"--device";
        argv[argc++] = (char *)dev;
        for (int i = 0; i < n; i++)
                argv[argc++] = args[i];
        argv[argc] = NULL;
        /* Handlers inherit this environment through the agent. */
        char *envp[] = {(char *)"PATH=/sbin:/bin:/usr/sbin:/usr/bin", (char *)"HOME=/",
                        (char *)"TMPDIR=/tmp", (char *)"LANG=C.UTF-8", NULL};
        pid_t pid = fork();
        if (pid < 0)
                fatal("fork: %s", strerror(errno));
        if (pid == 0) {
                /* The signals PID 1 ignores must not stay ignored in the agent. */
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                setsid();
                execve(AGENT_PATH, argv, envp);
                dprintf(STDERR_FILENO, "cvm-init: exec %s: %s\n", AGENT_PATH, strerror(errno));
                _exit(127);
        }
        for (int i = 0; i < n; i++)
                free(args[i]);
        return pid;
}

int main(void) {
        clock_gettime(CLOCK_MONOTONIC, &boot_start);
        if (getpid() != 1) {
                fprintf(stderr, "cvm-init: must run as PID 1 (the initrd's /init)\n");
                return 1;
        }
        mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
        open_console();
        mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
        say("started");

        load_modules();

        char *name_line[1];
        int n = read_lines(PORT_NAME_FILE, name_line, 1);
        if (n < 0 && errno != ENOENT)
                fatal("%s: %s", PORT_NAME_FILE, strerror(errno));
        const char *port_name = n == 1 ? name_line[0] : DEFAULT_PORT_NAME;
        char dev[300];
        wait_port(port_name, dev, sizeof(dev));
        wait_host(dev);

        pid_t agent = start_agent(dev);
        say("agent started (pid %d) at %ld ms", (int)agent, elapsed_ms());

        /* PID 1 adopts every orphan, handlers' leftovers included: reap them
         * all until the agent itself exits. */
        int status = 0;
        for (;;) {
                int st;
                pid_t pid = wait(&st);
                if (pid < 0) {
                        if (errno == EINTR)
                                continue;
                        fatal("wait: %s", strerror(errno));
                }
                if (pid == agent) {
                        status = st;
                        break;
                }
        }
        if (WIFEXITED(status))
                say("agent exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                say("agent killed by signal %d", WTERMSIG(status));

        /* Nothing may outlive the agent: kill what is left, then reap it. */
        kill(-1, SIGKILL);
        while (wait(NULL) > 0 || errno == EINTR)
                ;
        say("powering off");
        power_off();
}
