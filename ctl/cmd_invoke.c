/* cvmctl invoke: run a function once and print its output byte for byte.
 *
 * The start kind and phase timings come in response headers, which
 * cvmctl_request does not return, so a synchronous invocation uses its own
 * libcurl handle set up like the shared client's (client_headers.c). */
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "client_headers.h"
#include "ctl.h"
#include "format.h"
#include "log.h"

#define usage_error(...) cvmctl_usage_error(&cvmctl_cmd_invoke, __VA_ARGS__)

/* Larger outputs than the API allows (6 MiB) are refused, not buffered. */
#define MAX_OUTPUT (64u << 20)

typedef struct buffer {
        char *data;
        size_t len, cap;
        bool too_large;
} buffer;

typedef struct answer {
        buffer body;
        char start[16], vm[64], inv[64], timing[512], retry_after[32];
} answer;

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
        buffer *b = userdata;
        size_t n = size * nmemb;
        if (b->len + n > MAX_OUTPUT) {
                b->too_large = true;
                return 0;
        }
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *d = realloc(b->data, cap);
                if (!d)
                        return 0;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, data, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

/* Copies the value of header name from line into dst, if line is it. */
static void take_header(const char *line, size_t len, const char *name, char *dst, size_t size) {
        size_t nl = strlen(name);
        if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
                return;
        const char *v = line + nl + 1;
        const char *end = line + len;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                end--;
        snprintf(dst, size, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata) {
        answer *a = userdata;
        size_t n = size * nmemb;
        take_header(data, n, "Cvm-Start", a->start, sizeof(a->start));
        take_header(data, n, "Cvm-Vm-Id", a->vm, sizeof(a->vm));
        take_header(data, n, "Cvm-Invocation-Id", a->inv, sizeof(a->inv));
        take_header(data, n, "Server-Timing", a->timing, sizeof(a->timing));
        take_header(data, n, "Retry-After", a->retry_after, sizeof(a->retry_after));
        return n;
}

/* "queue;dur=0.000, psp;dur=30.000" as "queue 0s, psp 30.0ms". */
static void print_timing(const char *timing) {
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", timing);
        const char *sep = "";
        char *save = NULL;
        for (char *part = strtok_r(copy, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
                while (*part == ' ')
                        part++;
                char *dur = strstr(part, ";dur=");
                if (!dur)
                        continue;
                *dur = '\0';
                char d[32];
                fprintf(stderr, "%s%s %s", sep, part,
                        cvmctl_format_ms(d, sizeof(d), strtod(dur + 5, NULL)));
                sep = ", ";
        }
        fputc('\n', stderr);
}

static void print_phases(json_t *phases) {
        static const char *const names[] = {"queue", "prepare", "psp_wait", "psp",
                                            "boot",  "exec",    "total"};
        const char *sep = "";
        for (size_t i = 0; i < CVM_ARRAY_SIZE(names); i++) {
                char key[32], d[32];
                snprintf(key, sizeof(key), "%s_ms", names[i]);
                fprintf(stderr, "%s%s %s", sep, names[i],
                        cvmctl_format_ms(d, sizeof(d), cvmctl_jnum(phases, key)));
                sep = ", ";
        }
        fputc('\n', stderr);
}

static int write_out(const void *data, size_t len) {
        if ((len && fwrite(data, 1, len, stdout) != len) || fflush(stdout) != 0) {
                fprintf(stderr, "cvmctl: writing the output failed: %s\n", strerror(errno));
                return CVMCTL_EXIT_FAILURE;
        }
        return CVMCTL_EXIT_OK;
}

/* Reports a refused or failed invocation: one line naming it and why, then
 * the handler's own stderr (the tail the daemon kept), as it wrote it. */
static int report_failure(const char *what, long status, json_t *doc, const char *retry_after) {
        const char *msg = cvmctl_jstr(doc, "message");
        const char *code = cvmctl_jstr(doc, "error");
        if (code && strcmp(code, "function_failed") == 0)
                fprintf(stderr, "cvmctl: %s failed: %s", what, msg ? msg : "no reason given");
        else
                fprintf(stderr, "cvmctl: invoking %s: %s", what,
                        msg ? msg : "the daemon answered with an error");
        if (!msg && status)
                fprintf(stderr, " (HTTP %ld)", status);
        if (retry_after && *retry_after)
                fprintf(stderr, "; retry after %ss", retry_after);
        fputc('\n', stderr);
        const char *tail = cvmctl_jstr(doc, "stderr");
        if (tail && *tail) {
                fputs(tail, stderr);
                if (tail[strlen(tail) - 1] != '\n')
                        fputc('\n', stderr);
        }
        return CVMCTL_EXIT_FAILURE;
}

static int invoke_sync(cvmctl *ctl, const char *name, const char *body, size_t len, bool verbose) {
        char esc[256], path[320], what[300];
        snprintf(path, sizeof(path), "/v1/functions/%s/invoke",
                 cvmctl_escape(esc, sizeof(esc), name));
        snprintf(what, sizeof(what), "%s", CVM_QUOTE(name));
        cvm_error err = {0};
        CURL *h = curl_easy_init();
        struct curl_slist *headers =
                curl_slist_append(NULL, "Content-Type: application/octet-stream");
        answer a = {0};
        int r = h && headers ? cvmctl_curl_setup(ctl->client, h, path, &headers, &err)
                             : cvm_error_set(&err, -ENOMEM, "out of memory");
        CURLcode rc = CURLE_OK;
        if (r >= 0) {
                curl_easy_setopt(h, CURLOPT_POST, 1L);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
                curl_easy_setopt(h, CURLOPT_WRITEDATA, &a.body);
                curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
                curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
                rc = curl_easy_perform(h);
                if (a.body.too_large)
                        r = cvm_error_set(&err, -EMSGSIZE, "%s: the output is larger than %u bytes",
                                          what, MAX_OUTPUT);
                else if (rc != CURLE_OK)
                        r = cvmctl_curl_error(ctl->client, h, rc, &err);
        }
        long status = 0;
        if (r >= 0)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(headers);
        if (h)
                curl_easy_cleanup(h);
        if (r < 0) {
                free(a.body.data);
                return cvmctl_fail(&err);
        }
        if (verbose) {
                fprintf(stderr, "%s start on %s (%s), HTTP %ld\n", a.start[0] ? a.start : "no",
                        a.vm[0] ? a.vm : "no VM", a.inv[0] ? a.inv : "no invocation", status);
                if (a.timing[0])
                        print_timing(a.timing);
        }
        int status_code;
        if (status == 200) {
                status_code = write_out(a.body.data, a.body.len);
        } else {
                json_t *doc = a.body.data ? json_loadb(a.body.data, a.body.len, 0, NULL) : NULL;
                status_code = report_failure(what, status, doc, a.retry_after);
                json_decref(doc);
        }
        free(a.body.data);
        return status_code;
}

static int invoke_async(cvmctl *ctl, const char *name, const char *body, size_t len) {
        char esc[256], path[340];
        snprintf(path, sizeof(path), "/v1/functions/%s/invoke?mode=async",
                 cvmctl_escape(esc, sizeof(esc), name));
        cvm_error err = {0};
        cvmctl_response resp;
        if (cvmctl_request(ctl->client, "POST", path, "application/octet-stream", body, len, &resp,
                           &err) < 0)
                return cvmctl_fail(&err);
        json_t *doc = json_loadb(resp.body, resp.len, 0, NULL);
        long status = resp.status;
        cvmctl_response_done(&resp);
        int r = CVMCTL_EXIT_OK;
        char what[300];
        snprintf(what, sizeof(what), "%s", CVM_QUOTE(name));
        if (status != 202 || !cvmctl_jstr(doc, "id"))
                r = report_failure(what, status, doc, NULL);
        else if (ctl->json)
                cvmctl_print_json(doc);
        else
                printf("%s\n", cvmctl_jstr(doc, "id"));
        json_decref(doc);
        return r;
}

static int b64_decode(const char *s, uint8_t **ret, size_t *ret_len) {
        size_t n = strlen(s);
        uint8_t *out = malloc(n / 4 * 3 + 3);
        int len = out ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : -1;
        if (len < 0 || n % 4) {
                free(out);
                return -EINVAL;
        }
        /* EVP_DecodeBlock counts the padding as data. */
        while (n && s[n - 1] == '=' && len > 0) {
                n--;
                len--;
        }
        *ret = out;
        *ret_len = (size_t)len;
        return 0;
}

static int result(cvmctl *ctl, const char *id, bool wait, bool verbose) {
        char esc[256], path[320];
        snprintf(path, sizeof(path), "/v1/invocations/%s", cvmctl_escape(esc, sizeof(esc), id));
        cvm_error err = {0};
        json_t *doc = NULL;
        long delay_ms = 50;
        for (;;) {
                if (cvmctl_request_json(ctl->client, "GET", path, NULL, &doc, &err) < 0)
                        return cvmctl_fail(&err);
                const char *st = cvmctl_jstr(doc, "status");
                if (!wait || !st || strcmp(st, "running") != 0)
                        break;
                json_decref(doc);
                doc = NULL;
                /* Poll quickly at first: most invocations take milliseconds. */
                struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000};
                nanosleep(&ts, NULL);
                if (delay_ms < 1000)
                        delay_ms *= 2;
        }
        const char *st = cvmctl_jstr(doc, "status");
        int r = CVMCTL_EXIT_OK;
        if (ctl->json) {
                cvmctl_print_json(doc);
                r = st && strcmp(st, "ok") == 0 ? CVMCTL_EXIT_OK : CVMCTL_EXIT_FAILURE;
                json_decref(doc);
                return r;
        }
        if (verbose && st && strcmp(st, "running") != 0) {
                fprintf(stderr, "%s start on %s, %s\n",
                        cvmctl_jstr(doc, "start") ? cvmctl_jstr(doc, "start") : "no",
                        cvmctl_jstr(doc, "vm_id") ? cvmctl_jstr(doc, "vm_id") : "no VM", st);
                print_phases(json_object_get(doc, "phases"));
        }
        char what[400];
        const char *fn = cvmctl_jstr(doc, "function");
        snprintf(what, sizeof(what), "%s (%s)", fn ? CVM_QUOTE(fn) : "a function", id);
        if (st && strcmp(st, "running") == 0) {
                char age[32];
                fprintf(stderr, "cvmctl: invocation %s is still running (for %s); use --wait\n", id,
                        cvmctl_format_age(age, sizeof(age), cvmctl_jnum(doc, "started_at_ms")));
                r = CVMCTL_EXIT_FAILURE;
        } else if (st && strcmp(st, "ok") == 0) {
                uint8_t *out = NULL;
                size_t len = 0;
                const char *b64 = cvmctl_jstr(doc, "output_base64");
                if (b64 && b64_decode(b64, &out, &len) == 0) {
                        r = write_out(out, len);
                        free(out);
                } else {
                        fprintf(stderr, "cvmctl: %s: the output is not base64\n", what);
                        r = CVMCTL_EXIT_FAILURE;
                }
        } else {
                r = report_failure(what, 0, doc, NULL);
        }
        json_decref(doc);
        return r;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"data", required_argument, NULL, 'd'},
                {"async", no_argument, NULL, 'a'},
                {"verbose", no_argument, NULL, 'v'},
                {"result", required_argument, NULL, 'r'},
                {"wait", no_argument, NULL, 'w'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *data = NULL, *id = NULL;
        bool async = false, verbose = false, wait = false;
        int c;
        static char prog[] = "cvmctl invoke"; /* getopt names argv[0] in its messages. */
        argv[0] = prog;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "d:vh", opts, NULL)) != -1) {
                switch (c) {
                case 'd': data = optarg; break;
                case 'a': async = true; break;
                case 'v': verbose = true; break;
                case 'r': id = optarg; break;
                case 'w': wait = true; break;
                case 'h': return cvmctl_help(&cvmctl_cmd_invoke);
                default: return cvmctl_usage_hint(&cvmctl_cmd_invoke);
                }
        }
        if (id) {
                if (optind != argc || data || async)
                        return usage_error("--result takes only an invocation id (and --wait, -v)");
                return result(ctl, id, wait, verbose);
        }
        if (wait)
                return usage_error("--wait goes with --result ID");
        if (argc - optind != 1)
                return usage_error("name one function");
        const char *name = argv[optind];
        _cleanup_free_ char *body = NULL;
        size_t len = 0;
        cvm_error err = {0};
        /* Without -d the body is stdin, unless that is a terminal nobody types into. */
        if (data && data[0] == '@') {
                if (cvmctl_read_all(data + 1, &body, &len, &err) < 0)
                        return cvmctl_fail(&err);
        } else if (data && strcmp(data, "-") != 0) {
                len = strlen(data);
        } else if (data || !isatty(STDIN_FILENO)) {
                if (cvmctl_read_all("-", &body, &len, &err) < 0)
                        return cvmctl_fail(&err);
        }
        const char *payload = body ? body : data ? data : "";
        return async ? invoke_async(ctl, name, payload, len)
                     : invoke_sync(ctl, name, payload, len, verbose);
}

const cvmctl_command cvmctl_cmd_invoke = {
        .name = "invoke",
        .summary = "run a function once and print its output",
        .usage = "invoke NAME [-d DATA | -d @FILE | -d -] [--async] [-v]\n"
                 "       cvmctl invoke --result ID [--wait] [-v]\n"
                 "The request body is DATA, FILE's contents, or stdin (without -d, stdin unless\n"
                 "it is a terminal). The function's output goes to stdout byte for byte; a\n"
                 "failure, timeout or rejection exits 1 with the reason (and the handler's\n"
                 "stderr) on stderr. -v prints the start kind, VM and phase timings on stderr.\n"
                 "--async prints the invocation's id; --result ID prints its output once done\n"
                 "(--wait polls until then).\n"
                 "Example: echo world | cvmctl invoke hello -v",
        .run = run,
};
