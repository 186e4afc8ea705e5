/* The shared helpers: the error model, JSON validation, log quoting. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "error.h"
#include "file.h"
#include "json.h"
#include "le.h"
#include "list.h"
#include "log.h"
#include "unit_tmp.h"

static void test_error_model(void **state) {
        (void)state;
        cvm_error err = {0};
        assert_int_equal(cvm_error_set(&err, -ENOENT, "no %s", "thing"), -ENOENT);
        assert_string_equal(err.message, "no thing");
        assert_int_equal(cvm_error_prefix(&err, "vm %d: ", 3), -ENOENT);
        assert_string_equal(err.message, "vm 3: no thing");
        assert_int_equal(cvm_error_set_errno(&err, -EACCES, "open"), -EACCES);
        assert_string_equal(err.message, "open: Permission denied");
        /* A positive code is a caller bug but must still be an error. */
        assert_true(cvm_error_set(&err, 5, "x") < 0);
        assert_int_equal(cvm_error_set(NULL, -EINVAL, "ignored"), -EINVAL);
        assert_string_equal(cvm_error_code_name(-EINVAL), "invalid_argument");
        assert_string_equal(cvm_error_code_name(-ETIMEDOUT), "timeout");
        assert_string_equal(cvm_error_code_name(-EPROTO), "bad_gateway");
        assert_string_equal(cvm_error_code_name(-12345), "internal");
        char longmsg[1000];
        memset(longmsg, 'a', sizeof(longmsg) - 1);
        longmsg[sizeof(longmsg) - 1] = '\0';
        cvm_error_set(&err, -EINVAL, "%s", longmsg);
        cvm_error_prefix(&err, "p: ");
        assert_int_equal(strlen(err.message), CVM_ERROR_MESSAGE_MAX - 1);
        cvm_error_clear(&err);
        assert_int_equal(err.code, 0);
}

static void test_json_helpers(void **state) {
        (void)state;
        cvm_error err = {0};
        json_t *o = NULL;
        assert_int_equal(cvm_json_parse_object("[1]", 3, &o, &err), -EINVAL);
        assert_int_equal(cvm_json_parse_object("{\"a\":1,\"a\":2}", 13, &o, &err), -EINVAL);
        assert_non_null(strstr(err.message, "duplicate"));
        const char *text = "{\"n\": 5, \"s\": \"x\", \"b\": true, \"o\": {}, \"z\": \"a\"}";
        /* Jansson refuses NUL in strings unless asked, so keys and values are C strings. */
        const char *nul = "{\"z\": \"a\\u0000b\"}";
        assert_int_equal(cvm_json_parse_object(nul, strlen(nul), &o, &err), -EINVAL);
        assert_int_equal(cvm_json_parse_object(text, strlen(text), &o, &err), 0);
        int64_t n = 0;
        assert_int_equal(cvm_json_get_int(o, "p", "n", true, 0, 10, &n, &err), 0);
        assert_int_equal(n, 5);
        assert_int_equal(cvm_json_get_int(o, "p", "n", true, 6, 10, &n, &err), -EINVAL);
        assert_string_equal(err.message, "field 'p.n' must be between 6 and 10");
        assert_int_equal(cvm_json_get_int(o, "p", "missing", true, 0, 1, &n, &err), -EINVAL);
        assert_string_equal(err.message, "missing field 'p.missing'");
        assert_int_equal(cvm_json_get_int(o, "p", "missing", false, 0, 1, &n, &err), 0);
        assert_int_equal(n, 5);
        const char *s = NULL;
        assert_int_equal(cvm_json_get_string(o, "", "s", true, &s, &err), 0);
        assert_string_equal(s, "x");
        assert_int_equal(cvm_json_get_string(o, "", "n", true, &s, &err), -EINVAL);
        assert_string_equal(err.message, "field 'n' must be a string");
        bool b = false;
        assert_int_equal(cvm_json_get_bool(o, "", "b", true, &b, &err), 0);
        assert_true(b);
        json_t *sub;
        assert_int_equal(cvm_json_get_object(o, "", "o", true, &sub, &err), 0);
        assert_int_equal(cvm_json_get_object(o, "", "s", true, &sub, &err), -EINVAL);
        static const char *const allowed[] = {"n", "s", "b", "o", NULL};
        assert_int_equal(cvm_json_check_fields(o, "top", allowed, &err), -EINVAL);
        assert_string_equal(err.message, "unknown field 'top.z'");
        json_decref(o);
}

static void test_quote(void **state) {
        (void)state;
        char buf[32];
        assert_string_equal(cvm_quote(buf, sizeof(buf), "a\"b\\c\n\x01"),
                            "\"a\\\"b\\\\c\\x0a\\x01\"");
        assert_string_equal(cvm_quote(buf, sizeof(buf), NULL), "null");
        cvm_quote(buf, 16, "0123456789abcdefghij");
        assert_string_equal(buf, "\"0123456789...\"");
        assert_int_equal(strlen(buf), 15);
        cvm_log_level lv;
        assert_int_equal(cvm_log_level_from_string("warn", &lv), 0);
        assert_int_equal(lv, CVM_LOG_WARN);
        assert_int_equal(cvm_log_level_from_string("loud", &lv), -1);
        assert_string_equal(cvm_log_level_to_string(CVM_LOG_DEBUG), "debug");
}

static void test_file_read(void **state) {
        (void)state;
        char dir[UNIT_TMP_MAX];
        assert_non_null(mkdtemp(unit_tmp_path(dir, sizeof(dir), "cvm-test-file.XXXXXX")));
        char path[UNIT_TMP_MAX + 32];
        snprintf(path, sizeof(path), "%s/f", dir);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs("hello", f);
        fclose(f);

        uint8_t *buf = NULL;
        size_t len = 0;
        mode_t mode = 0;
        cvm_error err = {0};
        assert_int_equal(cvm_file_read(path, 5, &buf, &len, &mode, &err), 0);
        assert_int_equal(len, 5);
        assert_string_equal((char *)buf, "hello"); /* NUL-terminated. */
        assert_true(S_ISREG(mode));
        free(buf);

        /* Over the bound, a directory, a missing file: refused, saying why. */
        buf = NULL;
        assert_int_equal(cvm_file_read(path, 4, &buf, &len, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.message, "more than 4"));
        assert_int_equal(cvm_file_read(dir, 4096, &buf, &len, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.message, "not a regular file"));
        unlink(path);
        assert_int_equal(cvm_file_read(path, 4096, &buf, &len, NULL, &err), -ENOENT);
        assert_null(buf);
        rmdir(dir);
}

static void test_file_write_atomic(void **state) {
        (void)state;
        char dir[UNIT_TMP_MAX];
        assert_non_null(mkdtemp(unit_tmp_path(dir, sizeof(dir), "cvm-test-file.XXXXXX")));
        char path[UNIT_TMP_MAX + 32], tmp[UNIT_TMP_MAX + 64];
        snprintf(path, sizeof(path), "%s/out.bin", dir);
        snprintf(tmp, sizeof(tmp), "%s/.out.bin.tmp", dir);
        cvm_error err = {0};
        mode_t old = umask(077);
        assert_int_equal(cvm_file_write_atomic(path, "first", 5, 0644, &err), 0);
        umask(old);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0644); /* whatever the umask */
        /* A leftover temporary file does not stop the next write; a new
         * content replaces the old whole. */
        close(open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        assert_int_equal(cvm_file_write_atomic(path, "second!", 7, 0600, &err), 0);
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(cvm_file_read(path, 4096, &buf, &len, NULL, &err), 0);
        assert_int_equal(len, 7);
        assert_memory_equal(buf, "second!", 7);
        free(buf);
        assert_int_equal(access(tmp, F_OK), -1);
        /* Errors name the path and change nothing. */
        snprintf(tmp, sizeof(tmp), "%s/missing/x", dir);
        assert_int_equal(cvm_file_write_atomic(tmp, "x", 1, 0644, &err), -ENOENT);
        assert_non_null(strstr(err.message, "missing"));
        unlink(path);
        rmdir(dir);
}

typedef struct node {
        int v;
        struct node *prev, *next;
} node;

/* The values from head to tail, checking every back link on the way. */
static void expect_order(node *head, node *tail, const char *want) {
        char got[16] = "";
        size_t n = 0;
        for (node *x = head, *before = NULL; x; before = x, x = x->next) {
                assert_ptr_equal(x->prev, before);
                got[n++] = (char)('0' + x->v);
                if (!x->next && tail)
                        assert_ptr_equal(x, tail);
        }
        assert_string_equal(got, want);
}

static void test_lists(void **state) {
        (void)state;
        node a = {.v = 1}, b = {.v = 2}, c = {.v = 3};
        node *head = NULL, *tail = NULL;
        CVM_LIST_PREPEND(head, &a);
        CVM_LIST_PREPEND(head, &b);
        CVM_LIST_PREPEND(head, &c);
        expect_order(head, NULL, "321");
        CVM_LIST_REMOVE(head, &b); /* Middle. */
        expect_order(head, NULL, "31");
        CVM_LIST_REMOVE(head, &c); /* Head. */
        CVM_LIST_REMOVE(head, &a); /* Last. */
        assert_null(head);

        CVM_QUEUE_APPEND(head, tail, &a);
        CVM_QUEUE_APPEND(head, tail, &b);
        CVM_QUEUE_APPEND(head, tail, &c);
        expect_order(head, tail, "123");
        CVM_QUEUE_REMOVE(head, tail, &c); /* Tail. */
        expect_order(head, tail, "12");
        assert_ptr_equal(tail, &b);
        node *first = head;
        CVM_QUEUE_REMOVE(head, tail, first); /* Head. */
        expect_order(head, tail, "2");
        CVM_QUEUE_REMOVE(head, tail, &b);
        assert_null(head);
        assert_null(tail);
}

static void test_little_endian(void **state) {
        (void)state;
        uint8_t b[8];
        cvm_put_le16(b, 0x1234);
        assert_int_equal(b[0], 0x34);
        assert_int_equal(b[1], 0x12);
        assert_int_equal(cvm_le16(b), 0x1234);
        cvm_put_le32(b + 1, 0x89abcdefu); /* Unaligned. */
        assert_int_equal(b[1], 0xef);
        assert_int_equal(b[4], 0x89);
        assert_int_equal(cvm_le32(b + 1), 0x89abcdefu);
        cvm_put_le64(b, UINT64_C(0x0102030405060708));
        assert_int_equal(b[0], 0x08);
        assert_int_equal(b[7], 0x01);
        assert_true(cvm_le64(b) == UINT64_C(0x0102030405060708));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_error_model),
                cmocka_unit_test(test_json_helpers),
                cmocka_unit_test(test_quote),
                cmocka_unit_test(test_file_read),
                cmocka_unit_test(test_file_write_atomic),
                cmocka_unit_test(test_lists),
                cmocka_unit_test(test_little_endian),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
