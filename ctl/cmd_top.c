/* cvmctl top: a live view of the daemon, refreshed every second: each
 * function's VMs, invocation rate, cold starts and p99 over the last minute,
 * the PSP's queue and utilisation, ASIDs and memory.
 *
 * On a terminal it draws on the alternate screen with plain ANSI sequences
 * and reads keys raw (termios), so q or Ctrl-C quits at once; the terminal is
 * restored on every way out, signals included. Otherwise it prints frames one
 * after another (--once: one frame). */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_top, __VA_ARGS__)

#define ALT_SCREEN_ENTER "\033[?1049h\033[?25l"
#define ALT_SCREEN_LEAVE "\033[?25h\033[?1049l"
/* Functions whose p99 is asked for, per frame: each is a stats query. */
#define MAX_STATS_QUERIES 32

static volatile sig_atomic_t quit_signal;
static volatile sig_atomic_t resized;

static void on_signal(int sig) {
        if (sig == SIGWINCH)
                resized = 1;
        else
                quit_signal = sig;
}

typedef struct top {
        cvmctl *ctl;
        bool screen; /* Drawing on the alternate screen. */
        int rows, cols;
        /* The previous frame's counters, for rates. */
        json_t *prev_fns;
        double prev_t, prev_busy_ms;
} top;

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long prev_invocations(const top *t, const char *name, bool *found) {
        size_t i;
        json_t *f;
        *found = false;
        json_array_foreach(json_object_get(t->prev_fns, "functions"), i, f) {
                const char *n = cvmctl_jstr(f, "name");
                if (n && name && strcmp(n, name) == 0) {
                        *found = true;
                        return cvmctl_jint(json_object_get(f, "pool"), "invocations");
                }
        }
        return 0;
}

static json_t *stats_1m(top *t, const char *fn) {
        char esc[256], path[320];
        if (fn)
                snprintf(path, sizeof(path), "/v1/stats?since=1m&function=%s",
                         cvmctl_escape(esc, sizeof(esc), fn));
        else
                snprintf(path, sizeof(path), "/v1/stats?since=1m");
        cvm_error err = {0};
        json_t *doc = NULL;
        /* A missing p99 is shown as "-": the frame is still worth drawing. */
        if (cvmctl_request_json(t->ctl->client, "GET", path, NULL, &doc, &err) < 0)
                return NULL;
        return doc;
}

/* The p99 of all invocations: the larger of the cold and warm p99s. */
static double p99_of(json_t *stats) {
        json_t *lat = json_object_get(json_object_get(stats, "invocations"), "latency_ms");
        double cold = cvmctl_jnum(json_object_get(json_object_get(lat, "cold"), "total"), "p99");
        double warm = cvmctl_jnum(json_object_get(json_object_get(lat, "warm"), "total"), "p99");
        if (cold != cold)
                return warm;
        if (warm != warm)
                return cold;
        return cold > warm ? cold : warm;
}

static void render_functions(top *t, FILE *f, json_t *fns, double dt) {
        static const char *const cols[] = {"FUNCTION", "READY",   "BUSY",   "LAUNCHING", "WAITING",
                                           "RATE/S",   "COLD%1M", "P99 1M", "TOTAL",     NULL};
        cvmctl_table *tb = cvmctl_table_new(cols);
        size_t i;
        json_t *fn;
        json_array_foreach(json_object_get(fns, "functions"), i, fn) {
                json_t *p = json_object_get(fn, "pool");
                const char *name = cvmctl_jstr(fn, "name");
                char n[5][24], rate[24], cold[24], p99[24];
                snprintf(n[0], sizeof(n[0]), "%lld", cvmctl_jint(p, "ready"));
                snprintf(n[1], sizeof(n[1]), "%lld", cvmctl_jint(p, "busy"));
                snprintf(n[2], sizeof(n[2]), "%lld", cvmctl_jint(p, "launching"));
                snprintf(n[3], sizeof(n[3]), "%lld", cvmctl_jint(p, "waiting"));
                long long inv = cvmctl_jint(p, "invocations");
                snprintf(n[4], sizeof(n[4]), "%lld", inv);
                bool found;
                long long before = prev_invocations(t, name, &found);
                if (found && dt > 0 && inv >= before)
                        snprintf(rate, sizeof(rate), "%.1f", (double)(inv - before) / dt);
                else
                        snprintf(rate, sizeof(rate), "-");
                json_t *st = i < MAX_STATS_QUERIES ? stats_1m(t, name) : NULL;
                json_t *si = json_object_get(st, "invocations");
                cvmctl_format_percent(cold, sizeof(cold), cvmctl_jnum(si, "cold_fraction"));
                cvmctl_format_ms(p99, sizeof(p99), st ? p99_of(st) : NAN);
                json_decref(st);
                const char *row[] = {name, n[0], n[1], n[2], n[3], rate, cold, p99, n[4]};
                cvmctl_table_row(tb, row);
        }
        if (cvmctl_table_rows(tb))
                cvmctl_table_print(tb, f, t->screen ? t->cols : 0);
        else
                fprintf(f, "no functions\n");
        cvmctl_table_free(tb);
}

static void render_psp(top *t, FILE *f, json_t *psp, json_t *pool, double dt) {
        json_t *as = json_object_get(psp, "asids"), *s = json_object_get(psp, "scheduler");
        char a[32], b[32];
        /* Utilisation since the last frame; the daemon's lifetime figure at first. */
        double busy = cvmctl_jnum(psp, "busy_ms");
        double util = t->prev_fns && dt > 0 && busy >= t->prev_busy_ms
                              ? (busy - t->prev_busy_ms) / (dt * 1e3)
                              : cvmctl_jnum(psp, "utilisation");
        fprintf(f,
                "PSP: %s, %s busy, %lld commands waiting, %lld launches; jobs %lld running, "
                "%lld queued\n",
                json_is_true(json_object_get(psp, "busy")) ? "busy" : "idle",
                cvmctl_format_percent(a, sizeof(a), util > 1 ? 1 : util),
                cvmctl_jint(psp, "queue_depth"), cvmctl_jint(psp, "launches"),
                cvmctl_jint(s, "running"), cvmctl_jint(s, "queued"));
        double budget = cvmctl_jnum(pool, "budget_memory_mib");
        fprintf(f,
                "ASIDs: %lld in use, %lld dirty, %lld free of %lld; pool: %lld of %lld VMs, %s of "
                "%s\n",
                cvmctl_jint(as, "in_use"), cvmctl_jint(as, "dirty"), cvmctl_jint(as, "free"),
                cvmctl_jint(as, "total"), cvmctl_jint(pool, "vms"), cvmctl_jint(pool, "budget_vms"),
                cvmctl_format_mib(a, sizeof(a), cvmctl_jnum(pool, "memory_mib")),
                budget > 0 ? cvmctl_format_mib(b, sizeof(b), budget) : "unlimited");
        json_t *jobs = json_object_get(s, "jobs");
        if (json_array_size(jobs) == 0)
                return;
        static const char *const cols[] = {"STATE",   "CLASS", "OWNER", "EXPECTED",
                                           "WAITING", "START", NULL};
        cvmctl_table *tb = cvmctl_table_new(cols);
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j) {
                char exp[24], wait[24], d[24], start[48];
                bool running = json_is_true(json_object_get(j, "running"));
                cvmctl_format_ms(exp, sizeof(exp), cvmctl_jnum(j, "expected_ms"));
                cvmctl_format_ms(wait, sizeof(wait), cvmctl_jnum(j, "waiting_ms"));
                snprintf(start, sizeof(start), running ? "started, %s left" : "in %s",
                         cvmctl_format_ms(d, sizeof(d),
                                          cvmctl_jnum(j, running ? "remaining_ms"
                                                                 : "predicted_start_in_ms")));
                const char *row[] = {running ? "running" : "queued",
                                     cvmctl_jstr(j, "class"),
                                     cvmctl_jstr(j, "owner"),
                                     exp,
                                     wait,
                                     start};
                cvmctl_table_row(tb, row);
        }
        fprintf(f, "\n");
        cvmctl_table_print(tb, f, t->screen ? t->cols : 0);
        cvmctl_table_free(tb);
}

/* Fetches everything and renders one frame into *ret (malloc'd text). */
static int frame(top *t, char **ret, cvm_error *err) {
        json_t *fns = NULL, *pool = NULL, *psp = NULL, *all = NULL;
        cvmctl_client *c = t->ctl->client;
        int r;
        if ((r = cvmctl_request_json(c, "GET", "/v1/functions", NULL, &fns, err)) < 0 ||
            (r = cvmctl_request_json(c, "GET", "/v1/pool", NULL, &pool, err)) < 0 ||
            (r = cvmctl_request_json(c, "GET", "/v1/psp", NULL, &psp, err)) < 0) {
                json_decref(fns);
                json_decref(pool);
                return r;
        }
        double now = now_s(), dt = t->prev_fns ? now - t->prev_t : 0;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) {
                json_decref(fns);
                json_decref(pool);
                json_decref(psp);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        char clock[32], a[32], b[32], c1[32];
        time_t wall = time(NULL);
        struct tm tm;
        strftime(clock, sizeof(clock), "%H:%M:%S", localtime_r(&wall, &tm));
        fprintf(f, "cvmd at %s, %s%s\n", cvmctl_client_target(c), clock,
                t->screen ? "   (q quits)" : "");
        all = stats_1m(t, NULL);
        json_t *ai = json_object_get(all, "invocations");
        json_t *lat = json_object_get(ai, "latency_ms");
        fprintf(f, "last 1m: %lld invocations, cold %s; p99 warm %s, cold %s\n\n",
                cvmctl_jint(ai, "total"),
                cvmctl_format_percent(a, sizeof(a), cvmctl_jnum(ai, "cold_fraction")),
                cvmctl_format_ms(
                        b, sizeof(b),
                        cvmctl_jnum(json_object_get(json_object_get(lat, "warm"), "total"), "p99")),
                cvmctl_format_ms(c1, sizeof(c1),
                                 cvmctl_jnum(json_object_get(json_object_get(lat, "cold"), "total"),
                                             "p99")));
        json_decref(all);
        render_functions(t, f, fns, dt);
        fprintf(f, "\n");
        render_psp(t, f, psp, pool, dt);
        fclose(f);
        t->prev_busy_ms = cvmctl_jnum(psp, "busy_ms");
        json_decref(t->prev_fns);
        t->prev_fns = fns;
        t->prev_t = now;
        json_decref(pool);
        json_decref(psp);
        *ret = buf;
        return 0;
}

static void term_size(top *t) {
        struct winsize ws;
        t->rows = 24;
        t->cols = 80;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
                t->rows = ws.ws_row;
                t->cols = ws.ws_col;
        }
}

/* Draws over the previous frame: cursor home, each line cleared to its end,
 * the rest of the screen cleared. Lines past the screen are dropped. */
static void draw(top *t, const char *text) {
        fputs("\033[H", stdout);
        int row = 0;
        for (const char *line = text; *line && row < t->rows; row++) {
                const char *nl = strchr(line, '\n');
                size_t n = nl ? (size_t)(nl - line) : strlen(line);
                if (n > (size_t)t->cols)
                        n = (size_t)t->cols;
                /* No newline after the last row: it would scroll the screen. */
                printf("%.*s\033[K%s", (int)n, line, row + 1 < t->rows ? "\n" : "");
                line = nl ? nl + 1 : line + strlen(line);
        }
        fputs("\033[J", stdout);
        fflush(stdout);
}

typedef struct terminal {
        bool raw, screen;
        struct termios saved;
} terminal;

static void terminal_restore(terminal *term) {
        if (term->screen) {
                fputs(ALT_SCREEN_LEAVE, stdout);
                fflush(stdout);
                term->screen = false;
        }
        if (term->raw) {
                tcsetattr(STDIN_FILENO, TCSANOW, &term->saved);
                term->raw = false;
        }
}

static void terminal_setup(terminal *term) {
        struct termios raw;
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &term->saved) == 0) {
                raw = term->saved;
                /* Keys one at a time, unechoed; Ctrl-C arrives as a byte. TCSANOW
                 * keeps a key typed before this. Output processing stays on. */
                raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG);
                raw.c_cc[VMIN] = 1;
                raw.c_cc[VTIME] = 0;
                term->raw = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
        }
        fputs(ALT_SCREEN_ENTER, stdout);
        fflush(stdout);
        term->screen = true;
}

/* Waits up to ms for a key or a signal; true when it is time to quit. */
static bool wait_input(bool *stdin_open, int ms) {
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        if (poll(&p, *stdin_open ? 1 : 0, ms) <= 0)
                return quit_signal != 0;
        char keys[64];
        ssize_t n = read(STDIN_FILENO, keys, sizeof(keys));
        if (n <= 0) {
                /* End of input (say </dev/null) is no reason to stop. */
                *stdin_open = false;
                return quit_signal != 0;
        }
        for (ssize_t i = 0; i < n; i++)
                if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 3 || keys[i] == 4)
                        return true;
        return quit_signal != 0;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"once", no_argument, NULL, '1'},
                {"interval", required_argument, NULL, 'i'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        bool once = false;
        double interval = 1.0;
        int c;
        static char prog[] = "cvmctl top"; /* getopt names argv[0] in its messages. */
        argv[0] = prog;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "i:h", opts, NULL)) != -1) {
                char *end;
                switch (c) {
                case '1': once = true; break;
                case 'i':
                        interval = strtod(optarg, &end);
                        if (*end || end == optarg || !(interval >= 0.1 && interval <= 3600))
                                return usage_error("--interval must be seconds from 0.1 to 3600, "
                                                   "not %s",
                                                   CVM_QUOTE(optarg));
                        break;
                case 'h': return cvmctl_help(&cvmctl_cmd_top);
                default: return cvmctl_usage_hint(&cvmctl_cmd_top);
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument %s", CVM_QUOTE(argv[optind]));
        if (ctl->json)
                return usage_error("--json does not apply: top is for people");

        top t = {.ctl = ctl, .screen = !once && isatty(STDOUT_FILENO)};
        cvm_error err = {0};
        if (t.screen)
                term_size(&t);
        char *text = NULL;
        /* The first frame decides: a daemon that is not there is an error at once. */
        if (frame(&t, &text, &err) < 0) {
                json_decref(t.prev_fns);
                return cvmctl_fail(&err);
        }
        if (once) {
                fputs(text, stdout);
                free(text);
                json_decref(t.prev_fns);
                return CVMCTL_EXIT_OK;
        }

        struct sigaction sa = {.sa_handler = on_signal}, old[4];
        static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};
        sigemptyset(&sa.sa_mask);
        /* No SA_RESTART: a signal ends the wait in poll at once. */
        for (size_t i = 0; i < CVM_ARRAY_SIZE(sigs); i++)
                sigaction(sigs[i], &sa, &old[i]);
        terminal term = {0};
        if (t.screen)
                terminal_setup(&term);
        bool stdin_open = true, first = true;
        int status = CVMCTL_EXIT_OK;
        while (!quit_signal) {
                if (!first) {
                        free(text);
                        text = NULL;
                        if (frame(&t, &text, &err) < 0) {
                                /* Keep watching: the daemon may be restarting. */
                                if (asprintf(&text, "cvmd at %s: %s\n",
                                             cvmctl_client_target(ctl->client), err.message) < 0)
                                        text = NULL;
                        }
                }
                first = false;
                if (resized) {
                        resized = 0;
                        term_size(&t);
                }
                if (text && t.screen) {
                        draw(&t, text);
                } else if (text) {
                        printf("%s\n", text);
                        if (fflush(stdout) != 0) {
                                status = CVMCTL_EXIT_FAILURE;
                                break;
                        }
                }
                /* Wait out the interval, redrawing at once after a resize. */
                double until = now_s() + interval;
                bool stop = false;
                while (!stop && !resized && now_s() < until) {
                        int ms = (int)((until - now_s()) * 1e3) + 1;
                        stop = wait_input(&stdin_open, ms);
                }
                if (stop)
                        break;
        }
        terminal_restore(&term);
        for (size_t i = 0; i < CVM_ARRAY_SIZE(sigs); i++)
                sigaction(sigs[i], &old[i], NULL);
        free(text);
        json_decref(t.prev_fns);
        /* A signal other than Ctrl-C's is passed on, as the shell expects. */
        if (quit_signal == SIGTERM || quit_signal == SIGHUP) {
                int sig = quit_signal;
                quit_signal = 0;
                raise(sig);
        }
        quit_signal = 0;
        return status;
}

const cvmctl_command cvmctl_cmd_top = {
        .name = "top",
        .summary = "show a live view of functions, VMs and the PSP",
        .usage = "top [--once] [--interval SECONDS]\n"
                 "Refreshes every second (--interval): per function its ready, busy and\n"
                 "launching VMs, invocations waiting, the invocation rate between refreshes,\n"
                 "the cold-start fraction and p99 latency over the last minute; the PSP's\n"
                 "utilisation and scheduler queue; ASIDs and pool memory in use. q or Ctrl-C\n"
                 "quits. When stdout is not a terminal, frames are printed one after another;\n"
                 "--once prints one and exits.\n"
                 "Example: cvmctl top",
        .run = run,
};
