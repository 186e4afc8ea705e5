#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "log.h"

/* Migration i takes the schema from user_version i to i + 1. */
static const char *const migrations[] = {
        "CREATE TABLE daemon_runs ("
        " id TEXT PRIMARY KEY,"
        " started_at_ms INTEGER NOT NULL,"
        " stopped_at_ms INTEGER,"
        " version TEXT NOT NULL,"
        " pid INTEGER NOT NULL,"
        " host TEXT NOT NULL,"
        " dropped_writes INTEGER);",
        /* 2: VMs, their launches, and invocations, with phase durations in microseconds. */
        "CREATE TABLE vms ("
        " id TEXT PRIMARY KEY,"
        " function TEXT,"
        " measurement TEXT NOT NULL,"
        " vcpus INTEGER NOT NULL,"
        " memory_mib INTEGER NOT NULL,"
        " created_at_ms INTEGER NOT NULL,"
        " ready_at_ms INTEGER,"
        " retired_at_ms INTEGER,"
        " retire_reason TEXT,"
        " invocations INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE launches ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " vm_id TEXT NOT NULL,"
        " function TEXT,"
        " trigger TEXT NOT NULL,"
        " started_at_ms INTEGER NOT NULL,"
        " prepare_us INTEGER,"
        " psp_wait_us INTEGER,"
        " psp_us INTEGER,"
        " boot_us INTEGER,"
        " total_us INTEGER NOT NULL,"
        " pages INTEGER NOT NULL,"
        " asid INTEGER,"
        " result TEXT NOT NULL,"
        " error TEXT);"
        "CREATE INDEX launches_time ON launches (started_at_ms);"
        "CREATE TABLE invocations ("
        " id TEXT PRIMARY KEY,"
        " function TEXT,"
        " vm_id TEXT,"
        " start_kind TEXT NOT NULL,"
        " started_at_ms INTEGER NOT NULL,"
        " queue_us INTEGER,"
        " psp_wait_us INTEGER,"
        " psp_us INTEGER,"
        " boot_us INTEGER,"
        " exec_us INTEGER,"
        " total_us INTEGER NOT NULL,"
        " status TEXT NOT NULL,"
        " exit_code INTEGER,"
        " bytes_in INTEGER NOT NULL,"
        " bytes_out INTEGER NOT NULL,"
        " error TEXT);"
        "CREATE INDEX invocations_function_time ON invocations (function, started_at_ms);",
        /* 3: functions, restored at start. */
        "CREATE TABLE functions ("
        " name TEXT PRIMARY KEY,"
        " spec TEXT NOT NULL,"
        " created_at_ms INTEGER NOT NULL,"
        " updated_at_ms INTEGER NOT NULL);",
        /* 4: the tenant that owns a function; NULL for the host's operators. */
        "ALTER TABLE functions ADD COLUMN tenant TEXT;",
};

static const char *const stmt_sql[CVM_STORE_STMT_COUNT] = {
        [CVM_STORE_RUN_START] = "INSERT INTO daemon_runs (id, started_at_ms, version, pid, host)"
                                " VALUES (?, ?, ?, ?, ?)",
        [CVM_STORE_RUN_STOP] = "UPDATE daemon_runs SET stopped_at_ms = ?2, dropped_writes = ?3"
                               " WHERE id = ?1",
        [CVM_STORE_VM_CREATE] = "INSERT INTO vms (id, function, measurement, vcpus, memory_mib,"
                                " created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        [CVM_STORE_VM_READY] = "UPDATE vms SET ready_at_ms = ?2 WHERE id = ?1",
        [CVM_STORE_VM_RETIRE] = "UPDATE vms SET retired_at_ms = ?2, retire_reason = ?3,"
                                " invocations = ?4 WHERE id = ?1",
        [CVM_STORE_LAUNCH] = "INSERT INTO launches (vm_id, function, trigger, started_at_ms,"
                             " prepare_us, psp_wait_us, psp_us, boot_us, total_us, pages, asid,"
                             " result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [CVM_STORE_INVOCATION] = "INSERT INTO invocations (id, function, vm_id, start_kind,"
                                 " started_at_ms, queue_us, psp_wait_us, psp_us, boot_us, exec_us,"
                                 " total_us, status, exit_code, bytes_in, bytes_out, error)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [CVM_STORE_FUNCTION_PUT] = "INSERT INTO functions (name, spec, created_at_ms,"
                                   " updated_at_ms, tenant) VALUES (?1, ?2, ?3, ?3, ?4)"
                                   " ON CONFLICT (name) DO UPDATE SET spec = ?2,"
                                   " updated_at_ms = ?3",
        [CVM_STORE_FUNCTION_DELETE] = "DELETE FROM functions WHERE name = ?",
};

#define MAX_VALS 24
/* How long the writer waits for more writes before committing: the most a
 * crash can lose, and what keeps a stream of invocations to one transaction
 * (and one wake-up of this thread) per 50 ms. Writes with a completion
 * callback do not wait, and readers that must see the writes wait for them
 * (cvm_store_wait_committed). */
#define STORE_LINGER_MS_DEFAULT 50

typedef struct write_op {
        cvm_store_stmt stmt;
        uint8_t n_vals;
        cvm_store_val vals[MAX_VALS];
        char *text; /* One allocation holding every text value. */
        cvm_store_done_cb cb;
        void *userdata;
        int result;
} write_op;

struct cvm_store {
        sqlite3 *db;
        char *path;
        sqlite3_stmt *stmts[CVM_STORE_STMT_COUNT];
        pthread_t thread;
        bool thread_started;

        pthread_mutex_t lock;
        pthread_cond_t wake;    /* Writer: work or stop. */
        pthread_cond_t drained; /* Flushers: a batch finished. */
        write_op *ring;
        uint32_t cap, head, count;
        uint32_t batch_max;
        uint32_t linger_ms;
        write_op *batch; /* The writer's batch buffer. */
        bool stopping;
        bool lingering;   /* The writer waits for a batch to fill: writes need not wake it. */
        int flushing;     /* Someone waits in cvm_store_flush: no lingering. */
        uint32_t awaited; /* Queued writes with a completion callback: no lingering. */
        uint64_t submitted, done; /* Sequence numbers for flush. */
        cvm_store_stats stats;

        /* Completions travel back to the loop through this queue. */
        uv_async_t async;
        bool async_init;
        write_op *completed;
        size_t n_completed, cap_completed;
};

int cvm_store_schema_version(void) {
        return (int)CVM_ARRAY_SIZE(migrations);
}

static int sqlite_error(cvm_error *err, sqlite3 *db, const char *what, const char *path) {
        return cvm_error_set(err, -EIO, "database %s: %s: %s", CVM_QUOTE(path), what,
                             db ? sqlite3_errmsg(db) : "out of memory");
}

static int exec_sql(sqlite3 *db, const char *sql, const char *path, cvm_error *err) {
        char *msg = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                int r = cvm_error_set(err, -EIO, "database %s: %s", CVM_QUOTE(path),
                                      msg ? msg : sqlite3_errmsg(db));
                sqlite3_free(msg);
                return r;
        }
        return 0;
}

static int query_int(sqlite3 *db, const char *sql, int *ret) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        *ret = sqlite3_column_int(st, 0);
                        rc = SQLITE_OK;
                }
        }
        sqlite3_finalize(st);
        return rc;
}

/* quick_check reads every page: it notices a damaged file before we write. */
static int check_integrity(sqlite3 *db, const char *path, cvm_error *err) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
        if (rc != SQLITE_OK)
                goto corrupt;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(st);
                goto corrupt;
        }
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (!res || strcmp(res, "ok") != 0) {
                int r = cvm_error_set(err, -EBADMSG,
                                      "database %s failed its integrity check (%s); move it "
                                      "aside or restore a backup",
                                      CVM_QUOTE(path), res ? res : "no result");
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        return 0;
corrupt:
        return cvm_error_set(err, -EBADMSG,
                             "database %s is corrupt or not a cvmd database (%s); move it aside "
                             "or restore a backup",
                             CVM_QUOTE(path), sqlite3_errmsg(db));
}

static int migrate(sqlite3 *db, const char *path, cvm_error *err) {
        int version = 0;
        if (query_int(db, "PRAGMA user_version", &version) != SQLITE_OK)
                return sqlite_error(err, db, "reading the schema version", path);
        int latest = cvm_store_schema_version();
        if (version > latest)
                return cvm_error_set(err, -EPROTO,
                                     "database %s has schema version %d, newer than this cvmd "
                                     "supports (%d); run a newer cvmd",
                                     CVM_QUOTE(path), version, latest);
        for (int v = version; v < latest; v++) {
                /* Each step commits with its version, so a crash leaves a known state. */
                char bump[64];
                snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
                int r = exec_sql(db, "BEGIN IMMEDIATE", path, err);
                if (r >= 0)
                        r = exec_sql(db, migrations[v], path, err);
                if (r >= 0)
                        r = exec_sql(db, bump, path, err);
                if (r >= 0)
                        r = exec_sql(db, "COMMIT", path, err);
                if (r < 0) {
                        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                        return cvm_error_prefix(err, "migration to schema %d: ", v + 1);
                }
                log_info("database %s migrated to schema version %d", CVM_QUOTE(path), v + 1);
        }
        return 0;
}

static void bind_op(sqlite3_stmt *st, const write_op *op) {
        for (int i = 0; i < op->n_vals; i++) {
                const cvm_store_val *v = &op->vals[i];
                switch (v->type) {
                case CVM_STORE_NULL: sqlite3_bind_null(st, i + 1); break;
                case CVM_STORE_INT: sqlite3_bind_int64(st, i + 1, v->i); break;
                case CVM_STORE_REAL: sqlite3_bind_double(st, i + 1, v->d); break;
                case CVM_STORE_TEXT: sqlite3_bind_text(st, i + 1, v->s, -1, SQLITE_STATIC); break;
                }
        }
}

static int run_op(cvm_store *s, write_op *op) {
        sqlite3_stmt *st = s->stmts[op->stmt];
        bind_op(st, op);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_DONE) {
                log_error("database write %d failed: %s", (int)op->stmt, sqlite3_errmsg(s->db));
                return -EIO;
        }
        return 0;
}

static void push_completed(cvm_store *s, write_op *op) {
        /* Called with the lock held. */
        if (s->n_completed == s->cap_completed) {
                size_t cap = s->cap_completed ? s->cap_completed * 2 : 64;
                write_op *c = realloc(s->completed, cap * sizeof(*c));
                if (!c) {
                        log_error("out of memory queueing a store completion; dropping it");
                        return;
                }
                s->completed = c;
                s->cap_completed = cap;
        }
        s->completed[s->n_completed++] = *op;
}

static void *writer_main(void *arg) {
        cvm_store *s = arg;
        write_op *batch = s->batch;
        pthread_mutex_lock(&s->lock);
        for (;;) {
                while (s->count == 0 && !s->stopping)
                        pthread_cond_wait(&s->wake, &s->lock);
                if (s->count == 0 && s->stopping)
                        break;
                /* Gather a batch: one transaction and one wake-up for many writes,
                 * rather than one per invocation competing with its reply. */
                if (!s->stopping && s->count < s->batch_max) {
                        struct timespec until;
                        clock_gettime(CLOCK_MONOTONIC, &until);
                        until.tv_sec += s->linger_ms / 1000;
                        until.tv_nsec += (long)(s->linger_ms % 1000) * 1000000L;
                        if (until.tv_nsec >= 1000000000L) {
                                until.tv_sec++;
                                until.tv_nsec -= 1000000000L;
                        }
                        s->lingering = true;
                        while (!s->stopping && !s->flushing && !s->awaited &&
                               s->count < s->batch_max &&
                               pthread_cond_timedwait(&s->wake, &s->lock, &until) != ETIMEDOUT)
                                ;
                        s->lingering = false;
                }
                uint32_t n = s->count < s->batch_max ? s->count : s->batch_max;
                for (uint32_t i = 0; i < n; i++) {
                        batch[i] = s->ring[(s->head + i) % s->cap];
                        s->awaited -= batch[i].cb != NULL;
                }
                s->head = (s->head + n) % s->cap;
                s->count -= n;
                pthread_mutex_unlock(&s->lock);

                bool in_tx = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
                for (uint32_t i = 0; i < n; i++)
                        batch[i].result = run_op(s, &batch[i]);
                if (in_tx && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                        log_error("database commit failed: %s", sqlite3_errmsg(s->db));
                        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
                        for (uint32_t i = 0; i < n; i++)
                                batch[i].result = -EIO;
                }

                pthread_mutex_lock(&s->lock);
                bool notify = false;
                for (uint32_t i = 0; i < n; i++) {
                        if (batch[i].result < 0)
                                s->stats.failed++;
                        else
                                s->stats.written++;
                        if (batch[i].cb) {
                                push_completed(s, &batch[i]);
                                notify = true;
                        } else {
                                free(batch[i].text);
                        }
                }
                s->stats.batches++;
                s->done += n;
                pthread_cond_broadcast(&s->drained);
                if (notify)
                        uv_async_send(&s->async);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

static void run_completions(cvm_store *s) {
        pthread_mutex_lock(&s->lock);
        write_op *ops = s->completed;
        size_t n = s->n_completed;
        s->completed = NULL;
        s->n_completed = s->cap_completed = 0;
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; i < n; i++) {
                ops[i].cb(ops[i].result, ops[i].userdata);
                free(ops[i].text);
        }
        free(ops);
}

static void on_async(uv_async_t *handle) {
        run_completions(handle->data);
}

int cvm_store_open(uv_loop_t *loop, const cvm_store_options *opts, cvm_store **ret,
                   cvm_error *err) {
        cvm_store *s = calloc(1, sizeof(*s));
        if (!s)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        /* The writer's linger deadline is on the monotonic clock. */
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->wake, &ca);
        pthread_condattr_destroy(&ca);
        pthread_cond_init(&s->drained, NULL);
        s->cap = opts->queue_capacity ? opts->queue_capacity : 65536;
        s->batch_max = opts->batch_max ? opts->batch_max : 512;
        s->linger_ms = opts->linger_ms ? opts->linger_ms : STORE_LINGER_MS_DEFAULT;
        s->stats.capacity = s->cap;
        s->stats.schema_version = cvm_store_schema_version();
        int r = 0;
        if (!(s->path = strdup(opts->path))) {
                r = cvm_error_set(err, -ENOMEM, "out of memory");
                goto fail;
        }
        s->ring = calloc(s->cap, sizeof(*s->ring));
        s->batch = calloc(s->batch_max, sizeof(*s->batch));
        if (!s->ring || !s->batch) {
                r = cvm_error_set(err, -ENOMEM, "out of memory");
                goto fail;
        }
        /* The writer thread owns the connection after open; FULLMUTEX is not needed. */
        int rc = sqlite3_open_v2(opts->path, &s->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 NULL);
        if (rc != SQLITE_OK) {
                r = sqlite_error(err, s->db, "cannot open", opts->path);
                goto fail;
        }
        sqlite3_busy_timeout(s->db, 5000);
        sqlite3_extended_result_codes(s->db, 1);
        if ((r = check_integrity(s->db, opts->path, err)) < 0)
                goto fail;
        if ((r = exec_sql(s->db,
                          "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                          " PRAGMA foreign_keys = ON;",
                          opts->path, err)) < 0)
                goto fail;
        if ((r = migrate(s->db, opts->path, err)) < 0)
                goto fail;
        for (int i = 0; i < CVM_STORE_STMT_COUNT; i++)
                if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                       &s->stmts[i], NULL) != SQLITE_OK) {
                        r = sqlite_error(err, s->db, "preparing a statement", opts->path);
                        goto fail;
                }
        if ((rc = uv_async_init(loop, &s->async, on_async)) < 0) {
                r = cvm_error_set(err, rc, "uv_async_init: %s", uv_strerror(rc));
                goto fail;
        }
        s->async.data = s;
        s->async_init = true;
        if ((rc = pthread_create(&s->thread, NULL, writer_main, s)) != 0) {
                r = cvm_error_set(err, -rc, "cannot start the store writer thread");
                goto fail;
        }
        s->thread_started = true;
        *ret = s;
        return 0;
fail:
        cvm_store_close(s);
        return r;
}

static void async_closed(uv_handle_t *h) {
        (void)h;
}

void cvm_store_close(cvm_store *s) {
        if (!s)
                return;
        if (s->thread_started) {
                pthread_mutex_lock(&s->lock);
                s->stopping = true;
                pthread_cond_signal(&s->wake);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->thread, NULL);
        }
        if (s->async_init) {
                run_completions(s);
                uv_close((uv_handle_t *)&s->async, async_closed);
                /* The handle lives in s: let the loop finish closing it before we free. */
                uv_run(s->async.loop, UV_RUN_NOWAIT);
        }
        for (uint32_t i = 0; i < s->count; i++)
                free(s->ring[(s->head + i) % s->cap].text);
        for (int i = 0; i < CVM_STORE_STMT_COUNT; i++)
                sqlite3_finalize(s->stmts[i]);
        if (s->db) {
                /* A clean close checkpoints the WAL into the main file. */
                sqlite3_close(s->db);
        }
        free(s->ring);
        free(s->path);
        free(s->batch);
        free(s->completed);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
        pthread_cond_destroy(&s->drained);
        free(s);
}

int cvm_store_write(cvm_store *s, cvm_store_stmt stmt, const cvm_store_val *vals, size_t n_vals,
                    cvm_store_done_cb cb, void *userdata) {
        if ((unsigned)stmt >= CVM_STORE_STMT_COUNT || n_vals > MAX_VALS)
                return -EINVAL;
        write_op op = {.stmt = stmt, .n_vals = (uint8_t)n_vals, .cb = cb, .userdata = userdata};
        size_t text_len = 0;
        for (size_t i = 0; i < n_vals; i++)
                if (vals[i].type == CVM_STORE_TEXT)
                        text_len += strlen(vals[i].s) + 1;
        if (text_len && !(op.text = malloc(text_len)))
                return -ENOMEM;
        char *p = op.text;
        for (size_t i = 0; i < n_vals; i++) {
                op.vals[i] = vals[i];
                if (vals[i].type == CVM_STORE_TEXT) {
                        size_t l = strlen(vals[i].s) + 1;
                        memcpy(p, vals[i].s, l);
                        op.vals[i].s = p;
                        p += l;
                }
        }
        pthread_mutex_lock(&s->lock);
        if (s->count == s->cap || s->stopping) {
                uint64_t dropped = ++s->stats.dropped;
                pthread_mutex_unlock(&s->lock);
                free(op.text);
                /* Log the first drop and then every 1000th, so a storm stays readable. */
                if (dropped == 1 || dropped % 1000 == 0)
                        log_warn("store queue full (%u writes): dropped a write, %llu dropped "
                                 "so far",
                                 s->cap, (unsigned long long)dropped);
                return -EAGAIN;
        }
        s->ring[(s->head + s->count) % s->cap] = op;
        s->count++;
        s->submitted++;
        /* A write someone waits for (a function's spec) is committed at once. */
        s->awaited += cb != NULL;
        if (!s->lingering || cb || s->count >= s->batch_max)
                pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

uint64_t cvm_store_submitted(cvm_store *s) {
        pthread_mutex_lock(&s->lock);
        uint64_t n = s->submitted;
        pthread_mutex_unlock(&s->lock);
        return n;
}

void cvm_store_wait_committed(cvm_store *s, uint64_t target) {
        pthread_mutex_lock(&s->lock);
        s->flushing++;
        pthread_cond_signal(&s->wake);
        while (s->done < target && s->thread_started)
                pthread_cond_wait(&s->drained, &s->lock);
        s->flushing--;
        pthread_mutex_unlock(&s->lock);
}

void cvm_store_flush(cvm_store *s) {
        cvm_store_wait_committed(s, cvm_store_submitted(s));
        run_completions(s);
}

void cvm_store_get_stats(cvm_store *s, cvm_store_stats *ret) {
        pthread_mutex_lock(&s->lock);
        *ret = s->stats;
        ret->queued = s->count;
        pthread_mutex_unlock(&s->lock);
}

int cvm_store_read(cvm_store *s, const char *sql, cvm_store_row_cb cb, void *userdata,
                   cvm_error *err) {
        /* A connection of its own: WAL lets it read while the writer writes. */
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        int r = 0;
        if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
                    SQLITE_OK ||
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                r = sqlite_error(err, db, "reading", s->path);
                goto out;
        }
        sqlite3_busy_timeout(db, 5000);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                r = cb(st, userdata, err);
                if (r < 0)
                        goto out;
        }
        if (rc != SQLITE_DONE)
                r = sqlite_error(err, db, "reading", s->path);
out:
        sqlite3_finalize(st);
        sqlite3_close(db);
        return r;
}
