/* The HTTP layer in-process: a server on a uv loop, a libcurl client on a
 * thread. Covers routing with parameters, late replies (suspend/resume),
 * HEAD, limits, and failing pending requests at shutdown. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "http.h"
#include "listen.h"
#include "unit_tmp.h"

typedef struct ctx {
        uv_loop_t loop;
        uv_async_t done;
        uv_timer_t late_timer;
        cvm_http_server *srv;
        cvm_http_req *late_req;
        cvm_http_req *never_req;
        char sock[108];
        int cancelled;
} ctx;

typedef struct result {
        long status;
        char body[512];
        size_t len;
        char allow[64];
} result;

static void h_item(cvm_http_req *req, void *ud) {
        (void)ud;
        char body[128];
        snprintf(body, sizeof(body), "item=%s q=%s", cvm_http_req_param(req, "id"),
                 cvm_http_req_query(req, "q") ? cvm_http_req_query(req, "q") : "-");
        cvm_http_req_add_header(req, "X-Test", "yes");
        cvm_http_reply(req, 200, "text/plain", body, strlen(body));
}

static void on_late(uv_timer_t *t) {
        ctx *c = t->data;
        cvm_http_reply_json(c->late_req, 201, json_pack("{s:b}", "late", 1));
        c->late_req = NULL;
}

static void h_late(cvm_http_req *req, void *ud) {
        ctx *c = ud;
        /* Answer from a timer: the connection is suspended meanwhile. */
        c->late_req = req;
        uv_timer_start(&c->late_timer, on_late, 30, 0);
}

static void on_cancel(cvm_http_req *req, void *ud) {
        (void)req;
        ((ctx *)ud)->cancelled++;
}

static void h_never(cvm_http_req *req, void *ud) {
        ctx *c = ud;
        c->never_req = req;
        cvm_http_req_set_cancel(req, on_cancel, c);
}

static void h_json(cvm_http_req *req, void *ud) {
        (void)ud;
        json_t *j = cvm_http_req_json(req);
        cvm_error err = {0};
        if (!j) {
                cvm_error_set(&err, -EINVAL, "no body");
                cvm_http_reply_cvm_error(req, &err);
                return;
        }
        cvm_http_reply_json(req, 200, json_incref(j));
}

static const cvm_http_route routes[] = {
        {"GET", "/v1/items/{id}", h_item, 0},
        {"DELETE", "/v1/items/{id}", h_item, 0},
        {"GET", "/v1/late", h_late, 0},
        {"GET", "/v1/never", h_never, 0},
        {"PUT", "/v1/json", h_json, CVM_HTTP_JSON},
};

static size_t on_body(char *d, size_t s, size_t n, void *ud) {
        result *r = ud;
        size_t len = s * n, room = sizeof(r->body) - 1 - r->len;
        memcpy(r->body + r->len, d, len < room ? len : room);
        r->len += len < room ? len : room;
        r->body[r->len] = '\0';
        return len;
}

static size_t on_header(char *d, size_t s, size_t n, void *ud) {
        result *r = ud;
        if (strncasecmp(d, "Allow: ", 7) == 0)
                snprintf(r->allow, sizeof(r->allow), "%.*s", (int)(s * n - 9), d + 7);
        return s * n;
}

static void request(ctx *c, const char *method, const char *path, const char *ctype,
                    const char *body, result *r) {
        memset(r, 0, sizeof(*r));
        CURL *h = curl_easy_init();
        char url[256];
        snprintf(url, sizeof(url), "http://x%s", path);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->sock);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (strcmp(method, "HEAD") == 0)
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        struct curl_slist *hd = NULL;
        if (ctype) {
                char line[128];
                snprintf(line, sizeof(line), "Content-Type: %s", ctype);
                hd = curl_slist_append(hd, line);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        if (body)
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        if (curl_easy_perform(h) == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        curl_slist_free_all(hd);
        curl_easy_cleanup(h);
}

typedef struct client_job {
        ctx *c;
        result r[10];
} client_job;

static void *client_main(void *arg) {
        client_job *j = arg;
        request(j->c, "GET", "/v1/items/42?q=a%20b", NULL, NULL, &j->r[0]);
        request(j->c, "GET", "/v1/late", NULL, NULL, &j->r[1]);
        request(j->c, "POST", "/v1/items/1", NULL, NULL, &j->r[2]);
        request(j->c, "GET", "/v1/items/", NULL, NULL, &j->r[3]);
        request(j->c, "HEAD", "/v1/items/7", NULL, NULL, &j->r[4]);
        request(j->c, "PUT", "/v1/json", "application/json; charset=utf-8", "{\"a\":[1,2]}",
                &j->r[5]);
        request(j->c, "PUT", "/v1/json", NULL, NULL, &j->r[6]);
        request(j->c, "PUT", "/v1/json", "application/json", "{\"a\":", &j->r[7]);
        request(j->c, "PUT", "/v1/json", "application/json", "{\"pad\":\"..................\"}",
                &j->r[8]);
        request(j->c, "GET", "/v1/never", NULL, NULL, &j->r[9]);
        uv_async_send(&j->c->done);
        return NULL;
}

static void on_done(uv_async_t *a) {
        uv_stop(a->loop);
}

static void on_poll_never(uv_timer_t *t) {
        ctx *c = t->data;
        if (!c->never_req)
                return;
        cvm_error shut = {.code = -ESHUTDOWN};
        snprintf(shut.message, sizeof(shut.message), "the daemon is shutting down");
        cvm_http_server_fail_pending(c->srv, &shut);
        c->never_req = NULL;
}

static void test_http_end_to_end(void **state) {
        (void)state;
        ctx c = {0};
        char name[64];
        snprintf(name, sizeof(name), "cvm-http-%d.sock", (int)getpid());
        /* A Unix socket's path has room for 107 bytes. */
        unit_tmp_path(c.sock, sizeof(c.sock), name);
        uv_loop_init(&c.loop);
        uv_async_init(&c.loop, &c.done, on_done);
        uv_timer_init(&c.loop, &c.late_timer);
        c.late_timer.data = &c;
        uv_timer_t poll;
        uv_timer_init(&c.loop, &poll);
        poll.data = &c;
        uv_timer_start(&poll, on_poll_never, 10, 10);
        cvm_http_limits lim = {
                .max_body_bytes = 1024 + 16, .max_connections = 8, .connection_timeout_s = 5};
        cvm_error err = {0};
        assert_int_equal(cvm_http_server_new(&c.loop, routes, 5, &c, &lim, &c.srv, &err), 0);
        int fd;
        assert_int_equal(cvm_listen_open("udp:1", 0600, &fd, &err), -EINVAL);
        char addr[sizeof(c.sock) + 8];
        snprintf(addr, sizeof(addr), "unix:%s", c.sock);
        assert_int_equal(cvm_listen_open(addr, 0600, &fd, &err), 0);
        assert_int_equal(cvm_http_server_listen_fd(c.srv, fd, addr, true, &err), 0);

        client_job job = {.c = &c};
        pthread_t t;
        pthread_create(&t, NULL, client_main, &job);
        uv_run(&c.loop, UV_RUN_DEFAULT);
        pthread_join(t, NULL);

        assert_int_equal(job.r[0].status, 200);
        assert_string_equal(job.r[0].body, "item=42 q=a b");
        assert_int_equal(job.r[1].status, 201);
        assert_string_equal(job.r[1].body, "{\"late\":true}\n");
        assert_int_equal(job.r[2].status, 405);
        assert_string_equal(job.r[2].allow, "GET, HEAD, DELETE");
        assert_int_equal(job.r[3].status, 404);
        assert_int_equal(job.r[4].status, 200);
        assert_int_equal(job.r[4].len, 0);
        assert_int_equal(job.r[5].status, 200);
        assert_string_equal(job.r[5].body, "{\"a\":[1,2]}\n");
        assert_int_equal(job.r[6].status, 400);
        assert_non_null(strstr(job.r[6].body, "no body"));
        assert_int_equal(job.r[7].status, 400);
        assert_non_null(strstr(job.r[7].body, "malformed JSON"));
        assert_int_equal(job.r[8].status, 200);
        assert_int_equal(job.r[9].status, 503);
        assert_non_null(strstr(job.r[9].body, "\"error\":\"shutting_down\""));
        assert_int_equal(c.cancelled, 0);
        assert_int_equal(cvm_http_server_pending(c.srv), 0);

        cvm_http_server_free(c.srv);
        uv_close((uv_handle_t *)&c.done, NULL);
        uv_close((uv_handle_t *)&c.late_timer, NULL);
        uv_close((uv_handle_t *)&poll, NULL);
        uv_run(&c.loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&c.loop), 0);
        unlink(c.sock);
}

static void h_hold(cvm_http_req *req, void *ud) {
        (void)req;
        (void)ud; /* Answers later: never, until the server goes. */
}

static void h_now(cvm_http_req *req, void *ud) {
        (void)ud;
        cvm_http_reply(req, 200, "text/plain", "ok", 2);
}

static const cvm_http_route free_routes[] = {
        {"GET", "/hold", h_hold, 0},
        {"GET", "/now", h_now, 0},
};

static int connect_unix(const char *path) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
}

static void send_all(int fd, const char *text) {
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* Freeing the server answers what is pending; a request that arrives on a
 * keep-alive connection just before is answered 503 rather than handed to a
 * handler that would park it (libmicrohttpd aborts when it stops with a
 * parked connection). */
static void test_free_with_a_request_waiting(void **state) {
        (void)state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        char name[64], sock[108];
        snprintf(name, sizeof(name), "cvm-http-free-%d.sock", (int)getpid());
        unit_tmp_path(sock, sizeof(sock), name);
        cvm_http_limits lim = {
                .max_body_bytes = 1024, .max_connections = 8, .connection_timeout_s = 5};
        cvm_error err = {0};
        cvm_http_server *srv;
        assert_int_equal(cvm_http_server_new(&loop, free_routes, 2, NULL, &lim, &srv, &err), 0);
        char addr[sizeof(sock) + 8];
        snprintf(addr, sizeof(addr), "unix:%s", sock);
        int fd;
        assert_int_equal(cvm_listen_open(addr, 0600, &fd, &err), 0);
        assert_int_equal(cvm_http_server_listen_fd(srv, fd, addr, true, &err), 0);

        int held = connect_unix(sock);
        send_all(held, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
        for (int i = 0; i < 2000 && cvm_http_server_pending(srv) == 0; i++) {
                uv_run(&loop, UV_RUN_NOWAIT);
                usleep(1000);
        }
        assert_int_equal(cvm_http_server_pending(srv), 1);
        int other = connect_unix(sock);
        send_all(other, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
        char buf[4096];
        ssize_t n = -1;
        for (int i = 0; i < 2000 && n <= 0; i++) {
                uv_run(&loop, UV_RUN_NOWAIT);
                usleep(1000);
                n = recv(other, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        }
        assert_true(n > 0);
        /* Read by the last run of the server, never by the loop. */
        send_all(other, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
        usleep(10000);
        cvm_http_server_free(srv);

        n = recv(held, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, "HTTP/1.1 503"));
        n = recv(other, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, "HTTP/1.1 503"));
        assert_non_null(strstr(buf, "shutting_down"));
        close(held);
        close(other);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
        unlink(sock);
}

static void test_status_mapping(void **state) {
        (void)state;
        assert_int_equal(cvm_http_status_for_errno(-EINVAL), 400);
        assert_int_equal(cvm_http_status_for_errno(-ENOENT), 404);
        assert_int_equal(cvm_http_status_for_errno(-EMSGSIZE), 413);
        assert_int_equal(cvm_http_status_for_errno(-EAGAIN), 429);
        assert_int_equal(cvm_http_status_for_errno(-EPROTO), 502);
        assert_int_equal(cvm_http_status_for_errno(-ENOSPC), 503);
        assert_int_equal(cvm_http_status_for_errno(-ETIMEDOUT), 504);
        assert_int_equal(cvm_http_status_for_errno(-EIO), 500);
}

int main(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_http_end_to_end),
                cmocka_unit_test(test_free_with_a_request_waiting),
                cmocka_unit_test(test_status_mapping),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        curl_global_cleanup();
        return r;
}
