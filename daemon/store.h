/* The SQLite store: one database file in WAL mode, versioned migrations
 * (PRAGMA user_version), and a writer thread that executes queued writes in
 * batched transactions, so the loop never waits on disk. When the bounded
 * queue is full a write is dropped and counted, never silently. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "error.h"

typedef struct cvm_store cvm_store;

/* Every write the daemon makes; the SQL for each lives in store.c. */
typedef enum cvm_store_stmt {
        CVM_STORE_RUN_START, /* id, started_at_ms, version, pid, host */
        CVM_STORE_RUN_STOP,  /* id, stopped_at_ms, dropped_writes */
        CVM_STORE_VM_CREATE, /* id, function, measurement, vcpus, memory_mib, created_at_ms */
        CVM_STORE_VM_READY,  /* id, ready_at_ms */
        CVM_STORE_VM_RETIRE, /* id, retired_at_ms, reason, invocations */
        /* vm_id, function, trigger, started_at_ms, prepare_us, psp_wait_us, psp_us, boot_us,
         * total_us, pages, asid, result, error */
        CVM_STORE_LAUNCH,
        /* id, function, vm_id, start_kind, started_at_ms, queue_us, psp_wait_us, psp_us,
         * boot_us, exec_us, total_us, status, exit_code, bytes_in, bytes_out, error */
        CVM_STORE_INVOCATION,
        CVM_STORE_FUNCTION_PUT,    /* name, spec JSON, now_ms, tenant */
        CVM_STORE_FUNCTION_DELETE, /* name */
        CVM_STORE_STMT_COUNT,
} cvm_store_stmt;

typedef enum cvm_store_val_type {
        CVM_STORE_NULL,
        CVM_STORE_INT,
        CVM_STORE_REAL,
        CVM_STORE_TEXT,
} cvm_store_val_type;

typedef struct cvm_store_val {
        cvm_store_val_type type;
        union {
                int64_t i;
                double d;
                const char *s; /* Copied by cvm_store_write. */
        };
} cvm_store_val;

#define CVM_STORE_I(v) ((cvm_store_val){.type = CVM_STORE_INT, .i = (v)})
#define CVM_STORE_D(v) ((cvm_store_val){.type = CVM_STORE_REAL, .d = (v)})
#define CVM_STORE_S(v) cvm_store_text(v)
#define CVM_STORE_NUL ((cvm_store_val){.type = CVM_STORE_NULL})

/* A text value; NULL stores NULL. */
static inline cvm_store_val cvm_store_text(const char *s) {
        return (cvm_store_val){.type = s ? CVM_STORE_TEXT : CVM_STORE_NULL, .s = s};
}

/* Runs on the loop thread once the write is committed (result 0) or failed. */
typedef void (*cvm_store_done_cb)(int result, void *userdata);

typedef struct cvm_store_options {
        const char *path;
        uint32_t queue_capacity;
        uint32_t batch_max;
        uint32_t linger_ms; /* How long a batch may wait to fill; 0: 50 ms. */
} cvm_store_options;

typedef struct cvm_store_stats {
        uint64_t queued; /* Writes waiting now. */
        uint64_t capacity;
        uint64_t written; /* Writes committed. */
        uint64_t failed;  /* Writes SQLite refused. */
        uint64_t dropped; /* Writes refused because the queue was full. */
        uint64_t batches;
        int schema_version;
} cvm_store_stats;

/* Opens (creating if needed) the database, migrates it, checks its integrity
 * and starts the writer thread. Refuses a corrupt file or a newer schema. */
int cvm_store_open(uv_loop_t *loop, const cvm_store_options *opts, cvm_store **ret, cvm_error *err);
/* Drains every queued write, stops the writer and closes; NULL-safe.
 * Pending completions run before it returns. */
void cvm_store_close(cvm_store *store);

/* Queues a write. Returns -EAGAIN (and counts a drop) if the queue is full. */
int cvm_store_write(cvm_store *store, cvm_store_stmt stmt, const cvm_store_val *vals, size_t n_vals,
                    cvm_store_done_cb cb, void *userdata);
/* Waits until every write queued so far is committed (shutdown, tests). */
void cvm_store_flush(cvm_store *store);
/* How many writes were queued so far: a reader that must see them passes
 * the count to cvm_store_wait_committed. */
uint64_t cvm_store_submitted(cvm_store *store);
/* Off the loop: waits until the first `submitted` writes are committed (or
 * dropped), ending the writer's linger early. Completions stay on the loop. */
void cvm_store_wait_committed(cvm_store *store, uint64_t submitted);

void cvm_store_get_stats(cvm_store *store, cvm_store_stats *ret);

/* Reads rows with a connection of its own; it blocks, so the daemon calls it
 * at start-up or from a worker thread, never on the loop. cb gets each row
 * (a prepared statement positioned on it) and may stop with an error. */
struct sqlite3_stmt;
typedef int (*cvm_store_row_cb)(struct sqlite3_stmt *row, void *userdata, cvm_error *err);
int cvm_store_read(cvm_store *store, const char *sql, cvm_store_row_cb cb, void *userdata,
                   cvm_error *err);
int cvm_store_schema_version(void);
