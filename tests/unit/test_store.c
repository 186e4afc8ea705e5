/* The store: migrations, completions on the loop, counted drops when the
 * queue is full, drain on close, and refusal of damaged or newer files. */
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
#include <sqlite3.h>

#include "store.h"
#include "unit_tmp.h"

typedef struct fixture {
        char dir[UNIT_TMP_MAX];
        char path[UNIT_TMP_MAX + 32];
        uv_loop_t loop;
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof(*f));
        unit_tmp_path(f->dir, sizeof(f->dir), "cvm-store-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->path, sizeof(f->path), "%s/cvmd.db", f->dir);
        uv_loop_init(&f->loop);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;
        if (unit_rm_rf(f->dir) != 0)
                return -1;
        uv_loop_close(&f->loop);
        free(f);
        return 0;
}

static int count_rows(const char *path) {
        sqlite3 *db;
        sqlite3_stmt *st;
        int n = -1;
        sqlite3_open(path, &db);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM daemon_runs", -1, &st, NULL) ==
                    SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return n;
}

static int write_run(cvm_store *s, int i, cvm_store_done_cb cb, void *ud) {
        char id[32];
        snprintf(id, sizeof(id), "run-%d", i);
        cvm_store_val v[] = {CVM_STORE_S(id), CVM_STORE_I(i), CVM_STORE_S("0.1"), CVM_STORE_I(1),
                             CVM_STORE_S("sim")};
        return cvm_store_write(s, CVM_STORE_RUN_START, v, 5, cb, ud);
}

static void on_done(int result, void *ud) {
        int *results = ud;
        results[results[0] + 1] = result;
        results[0]++;
}

static void test_write_and_complete_on_loop(void **state) {
        fixture *f = *state;
        cvm_store *s;
        cvm_error err = {0};
        cvm_store_options o = {.path = f->path};
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), 0);
        int results[8] = {0};
        assert_int_equal(write_run(s, 1, on_done, results), 0);
        /* A duplicate primary key fails, and the failure is reported. */
        assert_int_equal(write_run(s, 1, on_done, results), 0);
        while (results[0] < 2)
                uv_run(&f->loop, UV_RUN_ONCE);
        assert_int_equal(results[1], 0);
        assert_int_equal(results[2], -EIO);
        cvm_store_stats st;
        cvm_store_get_stats(s, &st);
        assert_int_equal(st.written, 1);
        assert_int_equal(st.failed, 1);
        assert_int_equal(st.schema_version, cvm_store_schema_version());
        cvm_store_val bad[] = {CVM_STORE_I(1)};
        assert_int_equal(cvm_store_write(s, CVM_STORE_STMT_COUNT, bad, 1, NULL, NULL), -EINVAL);
        cvm_store_close(s);
        assert_int_equal(count_rows(f->path), 1);
        /* Reopening keeps the data and does not migrate again. */
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), 0);
        cvm_store_close(s);
        assert_int_equal(count_rows(f->path), 1);
}

/* The writer lingers for a batch to fill, but not when someone waits for a
 * write (a function's spec): with a linger of a minute, that write still
 * completes at once, and an invocation record queued before it goes along. */
static void test_awaited_write_does_not_linger(void **state) {
        fixture *f = *state;
        cvm_store *s;
        cvm_error err = {0};
        cvm_store_options o = {.path = f->path, .linger_ms = 60000};
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), 0);
        assert_int_equal(write_run(s, 1, NULL, NULL), 0);
        usleep(20000); /* The writer is lingering now. */
        int results[4] = {0};
        uint64_t t0 = uv_hrtime();
        assert_int_equal(write_run(s, 2, on_done, results), 0);
        while (results[0] < 1)
                uv_run(&f->loop, UV_RUN_ONCE);
        assert_true(uv_hrtime() - t0 < UINT64_C(30000000000));
        assert_int_equal(results[1], 0);
        cvm_store_stats st;
        cvm_store_get_stats(s, &st);
        assert_int_equal(st.written, 2);
        cvm_store_close(s);
}

static void test_full_queue_drops_are_counted(void **state) {
        fixture *f = *state;
        cvm_store *s;
        cvm_error err = {0};
        cvm_store_options o = {.path = f->path, .queue_capacity = 16, .batch_max = 4};
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), 0);
        /* Another connection holds the write lock, so the writer stalls. */
        sqlite3 *other;
        assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
        assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        int accepted = 0, refused = 0;
        for (int i = 0; i < 40; i++) {
                int r = write_run(s, i, NULL, NULL);
                if (r == 0)
                        accepted++;
                else if (r == -EAGAIN)
                        refused++;
                if (i == 0)
                        usleep(100 * 1000); /* Let the writer take the first batch and block. */
        }
        assert_true(refused > 0);
        assert_int_equal(accepted + refused, 40);
        cvm_store_stats st;
        cvm_store_get_stats(s, &st);
        assert_int_equal(st.dropped, (uint64_t)refused);
        sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(other);
        cvm_store_flush(s);
        cvm_store_get_stats(s, &st);
        assert_int_equal(st.written, (uint64_t)accepted);
        assert_int_equal(st.queued, 0);
        cvm_store_close(s);
        assert_int_equal(count_rows(f->path), accepted);
}

static void test_close_drains_queue(void **state) {
        fixture *f = *state;
        cvm_store *s;
        cvm_store_options o = {.path = f->path, .batch_max = 7};
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, NULL), 0);
        for (int i = 0; i < 1000; i++)
                assert_int_equal(write_run(s, i, NULL, NULL), 0);
        cvm_store_close(s);
        assert_int_equal(count_rows(f->path), 1000);
}

static void test_refuses_corrupt_and_newer(void **state) {
        fixture *f = *state;
        FILE *fp = fopen(f->path, "w");
        for (int i = 0; i < 4096; i++)
                fputc(i * 7 % 251, fp);
        fclose(fp);
        cvm_store *s = NULL;
        cvm_error err = {0};
        cvm_store_options o = {.path = f->path};
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "corrupt or not a cvmd database"));
        unlink(f->path);
        sqlite3 *db;
        sqlite3_open(f->path, &db);
        sqlite3_exec(db, "PRAGMA user_version = 1000", NULL, NULL, NULL);
        sqlite3_close(db);
        assert_int_equal(cvm_store_open(&f->loop, &o, &s, &err), -EPROTO);
        assert_non_null(strstr(err.message, "schema version 1000, newer than"));
        char bad[UNIT_TMP_MAX + 32];
        snprintf(bad, sizeof(bad), "%s/no/such/dir/x.db", f->dir);
        o.path = bad;
        assert_true(cvm_store_open(&f->loop, &o, &s, &err) < 0);
        assert_non_null(strstr(err.message, "cannot open"));
        cvm_store_close(NULL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_write_and_complete_on_loop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_awaited_write_does_not_linger, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_full_queue_drops_are_counted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_close_drains_queue, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuses_corrupt_and_newer, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
