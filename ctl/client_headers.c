#include "client_headers.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"

/* client.c keeps the token private. When it gains this getter, --token
 * reaches cvmctl's own handles; until then they take $CVMD_TOKEN only. */

int cvmctl_curl_setup(cvmctl_client *c, CURL *h, const char *path, struct curl_slist **headers,
                      cvm_error *err) {
        const char *target = cvmctl_client_target(c);
        _cleanup_free_ char *url = NULL;
        int n;
        /* The target is "unix:PATH" for the socket, else the URL as given. */
        if (strncmp(target, "unix:", 5) == 0) {
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, target + 5);
                n = asprintf(&url, "http://cvmd%s", path);
        } else {
                size_t len = strlen(target);
                while (len && target[len - 1] == '/')
                        len--;
                n = asprintf(&url, "%.*s%s", (int)len, target, path);
        }
        if (n < 0) {
                url = NULL;
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        curl_easy_setopt(h, CURLOPT_URL, url); /* libcurl copies it. */
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        struct curl_slist *l = curl_slist_append(*headers, "Expect:");
        if (l)
                *headers = l;
        const char *auth = cvmctl_client_auth_header(c);
        _cleanup_free_ char *env_auth = NULL;
        const char *token = getenv("CVMD_TOKEN");
        if (!auth && token && *token && !strpbrk(token, "\r\n") &&
            asprintf(&env_auth, "Authorization: Bearer %s", token) >= 0)
                auth = env_auth;
        if (auth && (l = curl_slist_append(*headers, auth)))
                *headers = l;
        if (env_auth)
                explicit_bzero(env_auth, strlen(env_auth));
        if (!l)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, *headers);
        return 0;
}

int cvmctl_curl_error(cvmctl_client *c, CURL *h, CURLcode rc, cvm_error *err) {
        long os_errno = 0;
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        const char *target = cvmctl_client_target(c);
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
                if (os_errno == EACCES || os_errno == EPERM)
                        return cvm_error_set(err, -EACCES,
                                             "permission denied connecting to cvmd at %s (is "
                                             "your user in the socket's group?)",
                                             target);
                return cvm_error_set(err, -ECONNREFUSED,
                                     "cvmd is not running: cannot connect to %s (%s)", target,
                                     os_errno ? strerror((int)os_errno) : curl_easy_strerror(rc));
        }
        return cvm_error_set(err, -EIO, "talking to cvmd at %s failed: %s", target,
                             curl_easy_strerror(rc));
}

const char *cvmctl_escape(char *buf, size_t size, const char *s) {
        size_t o = 0;
        for (; *s && o + 4 < size; s++) {
                unsigned char ch = (unsigned char)*s;
                if (isalnum(ch) || strchr("-._~", ch))
                        buf[o++] = (char)ch;
                else
                        o += (size_t)snprintf(buf + o, size - o, "%%%02X", ch);
        }
        buf[o] = '\0';
        return buf;
}

int cvmctl_read_all(const char *path, char **ret, size_t *len, cvm_error *err) {
        bool std = strcmp(path, "-") == 0;
        int fd = std ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "%s", path);
        size_t cap = 4096, n = 0;
        char *buf = malloc(cap);
        int r = buf ? 0 : cvm_error_set(err, -ENOMEM, "out of memory");
        while (r == 0) {
                if (n + 1 >= cap) {
                        char *b = cap < (SIZE_MAX / 2) ? realloc(buf, cap * 2) : NULL;
                        if (!b) {
                                r = cvm_error_set(err, -ENOMEM, "out of memory reading %s", path);
                                break;
                        }
                        buf = b;
                        cap *= 2;
                }
                ssize_t got = read(fd, buf + n, cap - n - 1);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        r = cvm_error_set_errno(err, -errno, "reading %s",
                                                std ? "standard input" : path);
                else if (got == 0)
                        break;
                else
                        n += (size_t)got;
        }
        if (!std)
                close(fd);
        if (r < 0) {
                free(buf);
                return r;
        }
        buf[n] = '\0';
        *ret = buf;
        *len = n;
        return 0;
}

int cvmctl_parse_uint(const char *s, long min, long max, long *ret) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (!*s || *end || errno || v < min || v > max || !isdigit((unsigned char)*s))
                return -1;
        *ret = v;
        return 0;
}

int cvmctl_usage_error(const cvmctl_command *cmd, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "cvmctl %s: ", cmd->name);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return cvmctl_usage_hint(cmd);
}

int cvmctl_help(const cvmctl_command *cmd) {
        printf("Usage: cvmctl %s\n%s\n", cmd->usage, cmd->summary);
        return CVMCTL_EXIT_OK;
}

int cvmctl_usage_hint(const cvmctl_command *cmd) {
        /* The synopsis only: its first line and those indented under it. */
        const char *u = cmd->usage;
        fprintf(stderr, "Usage: cvmctl ");
        for (bool first = true; *u && (first || *u == ' '); first = false) {
                const char *nl = strchr(u, '\n');
                size_t n = nl ? (size_t)(nl - u) : strlen(u);
                fprintf(stderr, "%.*s\n", (int)n, u);
                u += n + (nl ? 1 : 0);
        }
        fprintf(stderr, "See 'cvmctl %s --help'.\n", cmd->name);
        return CVMCTL_EXIT_USAGE;
}
