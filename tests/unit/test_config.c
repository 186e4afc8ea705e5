/* Config: defaults, file parsing, validation naming the field, overrides,
 * and that a bad file changes nothing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "json.h"
#include "unit_tmp.h"

static int apply(cvm_config *cfg, const char *text, cvm_error *err) {
        json_t *obj = NULL;
        int r = cvm_json_parse_object(text, strlen(text), &obj, err);
        if (r >= 0)
                r = cvm_config_apply_json(cfg, obj, err);
        json_decref(obj);
        return r;
}

static void test_defaults_from_environment(void **state) {
        (void)state;
        setenv("STATE_DIRECTORY", "/var/lib/cvmd-x:/other", 1);
        setenv("RUNTIME_DIRECTORY", "/run/cvmd-x", 1);
        cvm_config cfg;
        assert_int_equal(cvm_config_init(&cfg, NULL), 0);
        assert_string_equal(cfg.state_dir, "/var/lib/cvmd-x");
        assert_string_equal(cfg.listen[0], "unix:/run/cvmd-x/cvmd.sock");
        assert_string_equal(cfg.host, "sim");
        char *db = cvm_config_db_path(&cfg);
        assert_string_equal(db, "/var/lib/cvmd-x/cvmd.db");
        free(db);
        cvm_config_done(&cfg);
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
        assert_int_equal(cvm_config_init(&cfg, NULL), 0);
        assert_string_equal(cfg.state_dir, "/var/lib/cvmd");
        assert_string_equal(cfg.listen[0], "unix:/run/cvmd/cvmd.sock");
        cvm_config_done(&cfg);
}

static void test_apply_valid(void **state) {
        (void)state;
        cvm_config cfg;
        cvm_error err = {0};
        assert_int_equal(cvm_config_init(&cfg, NULL), 0);
        assert_int_equal(apply(&cfg,
                               "{\"listen\": [\"unix:/tmp/a.sock\", \"tcp:127.0.0.1:8080\","
                               " \"tcp:[::1]:0\"], \"state_dir\": \"/s\", \"db\": \"/d.db\","
                               " \"log_level\": \"debug\", \"socket_mode\": \"0600\","
                               " \"http\": {\"max_body_bytes\": 4096}, \"psp\": {\"x\": 1}}",
                               &err),
                         0);
        assert_int_equal(cfg.n_listen, 3);
        assert_string_equal(cfg.listen[1], "tcp:127.0.0.1:8080");
        assert_string_equal(cfg.state_dir, "/s");
        assert_string_equal(cfg.db_path, "/d.db");
        assert_int_equal(cfg.log_level, CVM_LOG_DEBUG);
        assert_int_equal(cfg.socket_mode, 0600);
        assert_int_equal(cfg.http.max_body_bytes, 4096);
        assert_int_equal(cfg.http.max_connections, 1024);
        assert_non_null(json_object_get(cfg.sections, "psp"));
        json_t *j = cvm_config_to_json(&cfg);
        assert_string_equal(json_string_value(json_object_get(j, "socket_mode")), "0600");
        json_decref(j);
        cvm_config_done(&cfg);
}

static void test_errors_name_the_field_and_change_nothing(void **state) {
        (void)state;
        static const struct {
                const char *text, *message;
        } cases[] = {
                {"{\"bogus\": 1}", "unknown field 'bogus'"},
                {"{\"http\": {\"nope\": 1}}", "unknown field 'http.nope'"},
                {"{\"http\": {\"max_body_bytes\": 1}}",
                 "field 'http.max_body_bytes' must be between 1024 and 1073741824"},
                {"{\"http\": {\"max_connections\": \"x\"}}",
                 "field 'http.max_connections' must be an integer"},
                {"{\"store\": {\"queue_capacity\": 0}}", "field 'store.queue_capacity' must be"},
                {"{\"store\": {\"linger_ms\": 0}}", "field 'store.linger_ms' must be"},
                {"{\"listen\": \"unix:/x\"}", "field 'listen' must be an array of strings"},
                {"{\"listen\": [\"udp:1\"]}", "field 'listen[0]': listen address \"udp:1\""},
                {"{\"listen\": [\"tcp:host\"]}", "expected tcp:HOST:PORT"},
                {"{\"listen\": [\"unix:/a\", \"unix:/a\"]}",
                 "field 'listen': listen address \"unix:/a\" is given twice"},
                {"{\"listen\": [\"tcp:h:99999\"]}", "expected tcp:HOST:PORT"},
                {"{\"host\": \"qemu\"}", "field 'host': unknown host \"qemu\""},
                {"{\"log_level\": \"loud\"}", "field 'log_level' must be one of"},
                {"{\"socket_mode\": \"999\"}", "field 'socket_mode' must be an octal mode"},
                {"{\"state_dir\": \"\"}", "field 'state_dir' must not be empty"},
                {"{\"psp\": 3}", "field 'psp' must be an object"},
                {"{\"log_level\": \"debug\", \"store\": {\"batch_max\": -1}}",
                 "field 'store.batch_max'"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                cvm_config cfg;
                cvm_error err = {0};
                assert_int_equal(cvm_config_init(&cfg, NULL), 0);
                assert_int_equal(apply(&cfg, cases[i].text, &err), -EINVAL);
                if (!strstr(err.message, cases[i].message))
                        fail_msg("case %zu: %s does not contain %s", i, err.message,
                                 cases[i].message);
                /* Nothing was applied, not even the valid parts. */
                assert_int_equal(cfg.log_level, CVM_LOG_INFO);
                assert_int_equal(cfg.n_listen, 1);
                cvm_config_done(&cfg);
        }
}

static void test_load_file(void **state) {
        (void)state;
        char path[UNIT_TMP_MAX];
        unit_tmp_path(path, sizeof(path), "cvm-config-XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        const char *text = "{\"host\": \"sim\", \"shutdown_grace_ms\": 5}";
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        cvm_config cfg;
        cvm_error err = {0};
        assert_int_equal(cvm_config_init(&cfg, NULL), 0);
        assert_int_equal(cvm_config_load_file(&cfg, path, false, &err), 0);
        assert_int_equal(cfg.shutdown_grace_ms, 5);
        unlink(path);
        assert_int_equal(cvm_config_load_file(&cfg, path, true, &err), 0);
        assert_int_equal(cvm_config_load_file(&cfg, path, false, &err), -ENOENT);
        assert_non_null(strstr(err.message, "No such file"));
        char *listen[] = {"unix:/a", "bad"};
        assert_int_equal(cvm_config_set_listen(&cfg, listen, 2, &err), -EINVAL);
        assert_string_equal(cfg.listen[0], "unix:/run/cvmd/cvmd.sock");
        assert_int_equal(cvm_config_set_listen(&cfg, listen, 1, &err), 0);
        assert_string_equal(cfg.listen[0], "unix:/a");
        cvm_config_done(&cfg);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_from_environment),
                cmocka_unit_test(test_apply_valid),
                cmocka_unit_test(test_errors_name_the_field_and_change_nothing),
                cmocka_unit_test(test_load_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
