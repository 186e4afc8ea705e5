#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "json.h"
#include "log.h"

/* Responses larger than this are refused rather than buffered. */
#define MAX_RESPONSE_BYTES (256u << 20)

struct cvmctl_client {
        CURL *curl;
        char *socket_path;
        char *base_url;
        char *target;
        char *auth_header;
};

int cvmctl_client_new(const char *socket_path, const char *url, cvmctl_client **ret,
                      cvm_error *err) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return cvm_error_set(err, -EIO, "cannot initialise libcurl");
        cvmctl_client *c = calloc(1, sizeof(*c));
        if (!c)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        c->curl = curl_easy_init();
        if (socket_path) {
                c->socket_path = strdup(socket_path);
                c->base_url = strdup("http://cvmd");
                if (asprintf(&c->target, "unix:%s", socket_path) < 0)
                        c->target = NULL;
        } else {
                size_t n = strlen(url);
                while (n && url[n - 1] == '/')
                        n--;
                c->base_url = strndup(url, n);
                c->target = strdup(url);
        }
        if (!c->curl || !c->base_url || !c->target || (socket_path && !c->socket_path)) {
                cvmctl_client_free(c);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        *ret = c;
        return 0;
}

void cvmctl_client_free(cvmctl_client *c) {
        if (!c)
                return;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->socket_path);
        free(c->base_url);
        free(c->target);
        if (c->auth_header)
                explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        free(c);
        curl_global_cleanup();
}

int cvmctl_client_set_token(cvmctl_client *c, const char *token, cvm_error *err) {
        if (strpbrk(token, "\r\n"))
                return cvm_error_set(err, -EINVAL, "the API token must be one line");
        free(c->auth_header);
        if (asprintf(&c->auth_header, "Authorization: Bearer %s", token) < 0) {
                c->auth_header = NULL;
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        return 0;
}

const char *cvmctl_client_auth_header(const cvmctl_client *c) {
        return c->auth_header;
}

const char *cvmctl_client_target(const cvmctl_client *c) {
        return c->target;
}

typedef struct sink {
        char *buf;
        size_t len, cap;
        bool too_large;
} sink;

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata) {
        sink *s = userdata;
        size_t n = size * nmemb;
        if (s->len + n > MAX_RESPONSE_BYTES) {
                s->too_large = true;
                return 0;
        }
        if (s->len + n + 1 > s->cap) {
                size_t cap = s->cap ? s->cap : 4096;
                while (cap < s->len + n + 1)
                        cap *= 2;
                char *b = realloc(s->buf, cap);
                if (!b)
                        return 0;
                s->buf = b;
                s->cap = cap;
        }
        memcpy(s->buf + s->len, data, n);
        s->len += n;
        s->buf[s->len] = '\0';
        return n;
}

static int transport_error(cvmctl_client *c, CURLcode rc, long os_errno, cvm_error *err) {
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
                if (os_errno == EACCES || os_errno == EPERM)
                        return cvm_error_set(err, -EACCES,
                                             "permission denied connecting to cvmd at %s (is "
                                             "your user in the socket's group?)",
                                             c->target);
                return cvm_error_set(err, -ECONNREFUSED,
                                     "cvmd is not running: cannot connect to %s (%s)", c->target,
                                     os_errno ? strerror((int)os_errno) : curl_easy_strerror(rc));
        }
        if (rc == CURLE_OPERATION_TIMEDOUT)
                return cvm_error_set(err, -ETIMEDOUT, "cvmd at %s did not answer in time",
                                     c->target);
        return cvm_error_set(err, -EIO, "talking to cvmd at %s failed: %s", c->target,
                             curl_easy_strerror(rc));
}

int cvmctl_request(cvmctl_client *c, const char *method, const char *path, const char *content_type,
                   const void *body, size_t len, cvmctl_response *ret, cvm_error *err) {
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s%s", c->base_url, path) < 0)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        CURL *h = c->curl;
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        if (c->socket_path)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        struct curl_slist *headers = NULL;
        if (content_type) {
                char hdr[128];
                snprintf(hdr, sizeof(hdr), "Content-Type: %s", content_type);
                headers = curl_slist_append(headers, hdr);
        }
        /* Bodies go in one request: no 100-continue round trip. */
        headers = curl_slist_append(headers, "Expect:");
        if (c->auth_header)
                headers = curl_slist_append(headers, c->auth_header);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        } else if (strcmp(method, "HEAD") == 0) {
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        }
        sink s = {0};
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(headers);
        if (rc != CURLE_OK) {
                long os_errno = 0;
                curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
                free(s.buf);
                if (s.too_large)
                        return cvm_error_set(err, -EMSGSIZE, "the response is larger than %u bytes",
                                             MAX_RESPONSE_BYTES);
                return transport_error(c, rc, os_errno, err);
        }
        *ret = (cvmctl_response){.body = s.buf ? s.buf : strdup(""), .len = s.len};
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
        return 0;
}

void cvmctl_response_done(cvmctl_response *r) {
        free(r->body);
        r->body = NULL;
}

int cvmctl_errno_for_status(long status) {
        switch (status) {
        case 400: return -EINVAL;
        case 401:
        case 403: return -EACCES;
        case 404: return -ENOENT;
        case 409: return -EEXIST;
        case 413: return -EMSGSIZE;
        case 429: return -EAGAIN;
        case 502: return -EPROTO;
        case 503: return -ESHUTDOWN;
        case 504: return -ETIMEDOUT;
        default: return -EIO;
        }
}

int cvmctl_api(cvmctl_client *c, const char *method, const char *path, json_t *body, json_t **ret,
               long *status, cvm_error *err) {
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        if (body && !text)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        cvmctl_response resp;
        int r = cvmctl_request(c, method, path, text ? "application/json" : NULL, text,
                               text ? strlen(text) : 0, &resp, err);
        if (r < 0)
                return r;
        if (status)
                *status = resp.status;
        json_t *doc = json_loadb(resp.body, resp.len, 0, NULL);
        if (resp.status >= 400) {
                const char *msg = json_string_value(json_object_get(doc, "message"));
                r = cvm_error_set(err, cvmctl_errno_for_status(resp.status), "%s",
                                  msg ? msg : "the daemon answered with an error");
                if (!msg)
                        cvm_error_prefix(err, "HTTP %ld: ", resp.status);
                json_decref(doc);
        } else if (!doc) {
                r = cvm_error_set(err, -EPROTO, "the daemon's answer to %s %s is not JSON", method,
                                  path);
        } else {
                *ret = doc;
        }
        cvmctl_response_done(&resp);
        return r;
}

int cvmctl_request_json(cvmctl_client *c, const char *method, const char *path, json_t *body,
                        json_t **ret, cvm_error *err) {
        return cvmctl_api(c, method, path, body, ret, NULL, err);
}
