/* The simulated PSP on a virtual clock: FIFO service with exact model times,
 * costs, launch sequences, ASIDs and DF_FLUSH, cancellation, the cost parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <uv.h>

#include "cleanup.h"
#include "psp_sim.h"

#define MS CVM_NSEC_PER_MSEC
#define US CVM_NSEC_PER_USEC

typedef struct fixture {
        cvm_clock *clock;
        cvm_psp_sim *psp;
} fixture;

static void setup(fixture *f, uint32_t asids, uint32_t max_queue) {
        cvm_psp_sim_config cfg;
        cvm_psp_sim_config_default(&cfg);
        if (asids)
                cfg.asids = asids;
        if (max_queue)
                cfg.max_queue = max_queue;
        assert_int_equal(cvm_clock_virtual_new(0, &f->clock, NULL), 0);
        assert_int_equal(cvm_psp_sim_new(f->clock, &cfg, &f->psp, NULL), 0);
}

static void teardown(fixture *f) {
        cvm_psp_sim_free(f->psp);
        cvm_clock_virtual_free(f->clock);
}

/* Completions recorded in the order they were delivered. */
typedef struct record {
        cvm_psp_completion c[64];
        char message[64][CVM_ERROR_MESSAGE_MAX];
        int n;
} record;

static void on_done(const cvm_psp_completion *c, void *userdata) {
        record *rec = userdata;
        assert_true(rec->n < 64);
        rec->c[rec->n] = *c;
        strcpy(rec->message[rec->n], c->err->message);
        rec->c[rec->n++].err = NULL;
}

static void submit(fixture *f, cvm_psp_cmd_type type, uint32_t page_type, uint32_t asid,
                   record *rec, uint64_t *id) {
        cvm_psp_cmd cmd = {.type = type, .page_type = page_type, .asid = asid};
        cvm_error err = {0};
        int r = cvm_psp_sim_submit(f->psp, &cmd, on_done, rec, id, &err);
        if (r < 0)
                fail_msg("submit: %s", err.message);
}

typedef struct launch_log {
        cvm_psp_launch_result r[64];
        char message[64][CVM_ERROR_MESSAGE_MAX];
        int n;
} launch_log;

static void on_launch(const cvm_psp_launch_result *r, void *userdata) {
        launch_log *log = userdata;
        assert_true(log->n < 64);
        log->r[log->n] = *r;
        strcpy(log->message[log->n], r->err ? r->err->message : "");
        log->r[log->n++].err = NULL;
}

/* The calibration plan: a 13 KB boot verifier (4 measured pages), its zeroed
 * page tables and stack, the secrets and CPUID pages, one VMSA. */
static const cvm_psp_region verifier_regions[] = {
        {CVM_SNP_PAGE_NORMAL, 4},
        {CVM_SNP_PAGE_ZERO, 2},
        {CVM_SNP_PAGE_SECRETS, 1},
        {CVM_SNP_PAGE_CPUID, 1},
};
static const cvm_psp_launch_plan verifier_plan = {
        .regions = verifier_regions,
        .nregions = CVM_ARRAY_SIZE(verifier_regions),
        .vmsa_pages = 1,
};

static void test_fifo_exact_times(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        record rec = {0};
        uint64_t id1, id2, id3;
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, &id1);
        submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, &id2);
        cvm_clock_virtual_advance(f.clock, 1 * MS);
        submit(&f, CVM_PSP_CMD_GUEST_REQUEST, 0, 1, &rec, &id3);
        assert_true(id1 < id2 && id2 < id3);
        /* Callbacks never run inside submit. */
        assert_int_equal(rec.n, 0);

        cvm_clock_virtual_advance(f.clock, 4 * MS - 1);
        assert_int_equal(rec.n, 0);
        cvm_clock_virtual_advance(f.clock, 1);
        assert_int_equal(rec.n, 1);
        assert_int_equal(cvm_clock_virtual_run(f.clock, 100), 2);

        assert_int_equal(rec.n, 3);
        uint64_t want_id[] = {id1, id2, id3};
        cvm_psp_cmd_type want_type[] = {CVM_PSP_CMD_DF_FLUSH, CVM_PSP_CMD_LAUNCH_START,
                                        CVM_PSP_CMD_GUEST_REQUEST};
        uint64_t want_submit[] = {0, 0, 1 * MS};
        uint64_t want_start[] = {0, 5 * MS, 25 * MS};
        uint64_t want_finish[] = {5 * MS, 25 * MS, 28 * MS};
        for (int i = 0; i < 3; i++) {
                assert_int_equal(rec.c[i].id, want_id[i]);
                assert_int_equal(rec.c[i].type, want_type[i]);
                assert_int_equal(rec.c[i].result, 0);
                assert_int_equal(rec.c[i].submit_ns, want_submit[i]);
                assert_int_equal(rec.c[i].start_ns, want_start[i]);
                assert_int_equal(rec.c[i].finish_ns, want_finish[i]);
                assert_int_equal(rec.c[i].wait_ns, want_start[i] - want_submit[i]);
                assert_int_equal(rec.c[i].service_ns, want_finish[i] - want_start[i]);
        }
        assert_int_equal(rec.c[1].asid, 1);
        assert_false(rec.c[1].df_flushed);
        assert_int_equal(cvm_clock_now(f.clock), 28 * MS);
        teardown(&f);
}

static void test_costs_per_command(void **state) {
        (void)state;
        cvm_psp_costs k;
        cvm_psp_costs_default(&k);
        assert_int_equal(
                cvm_psp_costs_command_ns(&k, CVM_PSP_CMD_LAUNCH_UPDATE, CVM_SNP_PAGE_NORMAL),
                1 * MS);
        assert_true(k.launch_update_ns[CVM_SNP_PAGE_ZERO] <
                    k.launch_update_ns[CVM_SNP_PAGE_NORMAL]);
        assert_true(k.launch_update_ns[CVM_SNP_PAGE_UNMEASURED] <
                    k.launch_update_ns[CVM_SNP_PAGE_NORMAL]);
        assert_int_equal(cvm_psp_costs_launch_ns(&k, &verifier_plan), 33 * MS);
        cvm_psp_region firmware = {CVM_SNP_PAGE_NORMAL, 256};
        cvm_psp_launch_plan ovmf = {.regions = &firmware, .nregions = 1, .vmsa_pages = 1};
        assert_int_equal(
                cvm_psp_costs_launch_ns(&k, &ovmf) -
                        cvm_psp_costs_launch_ns(&k, &(cvm_psp_launch_plan){.vmsa_pages = 1}),
                256 * MS);

        /* Each command is served for exactly its configured cost. */
        fixture f;
        setup(&f, 0, 0);
        record rec = {0};
        submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, NULL);
        submit(&f, CVM_PSP_CMD_ACTIVATE, 0, 1, &rec, NULL);
        for (uint32_t t = CVM_SNP_PAGE_NORMAL; t <= CVM_SNP_PAGE_TYPE_MAX; t++)
                submit(&f, CVM_PSP_CMD_LAUNCH_UPDATE, t, 1, &rec, NULL);
        submit(&f, CVM_PSP_CMD_LAUNCH_FINISH, 0, 1, &rec, NULL);
        submit(&f, CVM_PSP_CMD_GUEST_REQUEST, 0, 1, &rec, NULL);
        submit(&f, CVM_PSP_CMD_DECOMMISSION, 0, 1, &rec, NULL);
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, NULL);
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(rec.n, 12);
        uint64_t end = 0;
        for (int i = 0; i < rec.n; i++) {
                assert_int_equal(rec.c[i].result, 0);
                assert_int_equal(rec.c[i].service_ns,
                                 cvm_psp_costs_command_ns(&k, rec.c[i].type, rec.c[i].page_type));
                assert_int_equal(rec.c[i].start_ns, end);
                end = rec.c[i].finish_ns;
        }
        assert_int_equal(rec.c[3].page_type, CVM_SNP_PAGE_VMSA);
        assert_int_equal(rec.c[3].service_ns, 2 * MS);

        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.busy_ns, end);
        assert_int_equal(st.commands[CVM_PSP_CMD_LAUNCH_UPDATE], 6);
        assert_int_equal(st.pages[CVM_SNP_PAGE_CPUID], 1);
        assert_int_equal(st.df_flushes, 1);
        assert_int_equal(st.asids_free, CVM_PSP_ASIDS_DEFAULT);
        teardown(&f);
}

static void test_single_launch(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        launch_log log = {0};
        cvm_psp_launch *l = NULL;
        cvm_clock_virtual_advance(f.clock, 7 * MS);
        assert_int_equal(
                cvm_psp_sim_launch(f.psp, &verifier_plan, "vm-1", on_launch, &log, &l, NULL), 0);
        assert_non_null(l);
        cvm_clock_virtual_run(f.clock, 1000);
        assert_int_equal(log.n, 1);
        assert_int_equal(log.r[0].result, 0);
        assert_int_equal(log.r[0].asid, 1);
        assert_int_equal(log.r[0].submit_ns, 7 * MS);
        assert_int_equal(log.r[0].latency_ns, 33 * MS);
        assert_int_equal(log.r[0].service_ns, 33 * MS);
        assert_int_equal(log.r[0].wait_ns, 0);
        assert_int_equal(log.r[0].commands, 12); /* START, ACTIVATE, 9 updates, FINISH. */

        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.launches, 0);
        assert_int_equal(st.asids_in_use, 1);
        assert_int_equal(st.pages[CVM_SNP_PAGE_NORMAL], 4);
        assert_int_equal(st.pages[CVM_SNP_PAGE_ZERO], 2);
        assert_int_equal(st.pages[CVM_SNP_PAGE_VMSA], 1);
        teardown(&f);
}

static void test_two_launches_interleave(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        launch_log log = {0};
        assert_int_equal(
                cvm_psp_sim_launch(f.psp, &verifier_plan, "a", on_launch, &log, NULL, NULL), 0);
        assert_int_equal(
                cvm_psp_sim_launch(f.psp, &verifier_plan, "b", on_launch, &log, NULL, NULL), 0);
        /* After a's LAUNCH_START, b's runs and a's ACTIVATE waits behind it. */
        cvm_clock_virtual_advance(f.clock, 20 * MS);
        cvm_psp_queue_entry q[4];
        assert_int_equal(cvm_psp_sim_list(f.psp, q, 4), 2);
        assert_true(q[0].in_service);
        assert_string_equal(q[0].owner, "b");
        assert_int_equal(q[0].type, CVM_PSP_CMD_LAUNCH_START);
        assert_int_equal(q[0].finish_ns, 40 * MS);
        assert_false(q[1].in_service);
        assert_string_equal(q[1].owner, "a");
        assert_int_equal(q[1].type, CVM_PSP_CMD_ACTIVATE);
        assert_int_equal(q[1].submit_ns, 20 * MS);

        cvm_clock_virtual_run(f.clock, 1000);
        assert_int_equal(log.n, 2);
        /* Both take twice the PSP time but for b's last command. */
        assert_int_equal(log.r[0].asid, 1);
        assert_int_equal(log.r[0].latency_ns, 66 * MS - 2 * MS);
        assert_int_equal(log.r[0].service_ns, 33 * MS);
        assert_int_equal(log.r[0].wait_ns, 31 * MS);
        assert_int_equal(log.r[1].asid, 2);
        assert_int_equal(log.r[1].latency_ns, 66 * MS);
        assert_int_equal(log.r[1].wait_ns, 33 * MS);
        teardown(&f);
}

static void test_fifty_concurrent_launches(void **state) {
        (void)state;
        enum { N = 50 };
        fixture f;
        setup(&f, 0, 0);
        launch_log log = {0};
        for (int i = 0; i < N; i++)
                assert_int_equal(cvm_psp_sim_launch(f.psp, &verifier_plan, NULL, on_launch, &log,
                                                    NULL, NULL),
                                 0);
        cvm_clock_virtual_run(f.clock, 100000);
        assert_int_equal(log.n, N);
        /* The commands go round-robin: launch i finishes after N rounds of all
         * but the last command (31 ms each) and i + 1 LAUNCH_FINISHes (2 ms). */
        uint64_t sum = 0;
        for (int i = 0; i < N; i++) {
                assert_int_equal(log.r[i].result, 0);
                assert_int_equal(log.r[i].latency_ns, N * 31 * MS + (uint64_t)(i + 1) * 2 * MS);
                sum += log.r[i].latency_ns;
        }
        assert_int_equal(sum / N, 1601 * MS);
        assert_true(sum / N > (N + 1) * 33 * MS / 2 && sum / N < N * 33 * MS);
        assert_int_equal(cvm_clock_now(f.clock), N * 33 * MS);

        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.busy_ns, N * 33 * MS);
        assert_int_equal(st.asids_in_use, N);
        teardown(&f);
}

static void test_dirty_asids_trigger_df_flush(void **state) {
        (void)state;
        fixture f;
        setup(&f, 2, 0);
        record rec = {0};
        submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, NULL);
        submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, NULL);
        assert_int_equal(cvm_psp_sim_decommission(f.psp, 1, "vm-1", on_done, &rec, NULL), 0);
        cvm_clock_virtual_run(f.clock, 100);
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.asids_in_use, 1);
        assert_int_equal(st.asids_dirty, 1);
        assert_int_equal(st.asids_free, 0);

        uint64_t t = cvm_clock_now(f.clock);
        submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, NULL);
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(rec.n, 4);
        assert_int_equal(rec.c[3].result, 0);
        assert_true(rec.c[3].df_flushed);
        assert_int_equal(rec.c[3].asid, 1);
        assert_int_equal(rec.c[3].start_ns, t);
        assert_int_equal(rec.c[3].service_ns, 5 * MS + 20 * MS);
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.df_flushes, 1);
        assert_int_equal(st.asids_dirty, 0);
        assert_int_equal(st.asids_in_use, 2);
        teardown(&f);
}

static void test_asid_exhaustion(void **state) {
        (void)state;
        fixture f;
        setup(&f, 2, 0);
        record rec = {0};
        for (int i = 0; i < 3; i++)
                submit(&f, CVM_PSP_CMD_LAUNCH_START, 0, 0, &rec, NULL);
        launch_log log = {0};
        assert_int_equal(
                cvm_psp_sim_launch(f.psp, &verifier_plan, "vm-3", on_launch, &log, NULL, NULL), 0);
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(rec.n, 3);
        assert_int_equal(rec.c[2].result, -ENOSPC);
        assert_int_equal(rec.c[2].asid, 0);
        assert_int_equal(rec.c[2].service_ns, 0);
        assert_string_equal(rec.message[2], "no ASID available: 2 in use, 0 dirty");
        assert_int_equal(log.n, 1);
        assert_int_equal(log.r[0].result, -ENOSPC);
        assert_int_equal(log.r[0].asid, 0);
        assert_int_equal(log.r[0].commands, 1);
        assert_string_equal(log.message[0], "no ASID available: 2 in use, 0 dirty");

        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.failed, 2);
        assert_int_equal(st.launches, 0);
        assert_int_equal(st.busy_ns, 40 * MS);
        teardown(&f);
}

static void test_cancel(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        record rec = {0};
        uint64_t a, b, c;
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, &a);
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, &b);
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, &c);
        cvm_error err = {0};
        assert_int_equal(cvm_psp_sim_cancel(f.psp, a, &err), -EBUSY);
        assert_int_equal(cvm_psp_sim_cancel(f.psp, b, NULL), 0);
        assert_int_equal(cvm_psp_sim_cancel(f.psp, b, &err), -ENOENT);
        assert_string_equal(err.message, "no queued PSP command 2");
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(rec.n, 2);
        assert_int_equal(rec.c[0].id, a);
        assert_int_equal(rec.c[1].id, c);
        assert_int_equal(rec.c[1].start_ns, 5 * MS);
        assert_int_equal(cvm_psp_sim_cancel(f.psp, c, NULL), -ENOENT);

        /* Aborting a launch whose ACTIVATE waits cancels it and gives the
         * ASID back; aborting one in service lets it finish, then does so. */
        launch_log log = {0};
        cvm_psp_launch *la, *lb;
        assert_int_equal(cvm_psp_sim_launch(f.psp, &verifier_plan, "a", on_launch, &log, &la, NULL),
                         0);
        assert_int_equal(cvm_psp_sim_launch(f.psp, &verifier_plan, "b", on_launch, &log, &lb, NULL),
                         0);
        cvm_clock_virtual_advance(f.clock, 20 * MS);
        cvm_psp_sim_launch_abort(la);
        cvm_psp_sim_launch_abort(lb);
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.cancelled, 2);
        assert_int_equal(st.launches, 1); /* b until its LAUNCH_START ends. */
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(log.n, 0);
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.launches, 0);
        assert_int_equal(st.asids_in_use, 0);
        assert_int_equal(st.asids_dirty, 2);
        assert_int_equal(st.commands[CVM_PSP_CMD_DECOMMISSION], 2);
        assert_int_equal(st.commands[CVM_PSP_CMD_ACTIVATE], 0);
        assert_int_equal(st.failed, 0);
        cvm_psp_sim_launch_abort(NULL);
        teardown(&f);
}

/* A callback that chains a second command: it queues at the first's model
 * finish, behind whatever was already waiting. */
typedef struct chain {
        fixture *f;
        record rec;
        int left;
} chain;

static void on_chain(const cvm_psp_completion *c, void *userdata) {
        chain *ch = userdata;
        on_done(c, &ch->rec);
        if (ch->left-- > 0) {
                cvm_psp_cmd cmd = {.type = CVM_PSP_CMD_GUEST_REQUEST, .asid = 1};
                assert_int_equal(cvm_psp_sim_submit(ch->f->psp, &cmd, on_chain, ch, NULL, NULL), 0);
        }
}

static void test_callback_submits(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        chain ch = {.f = &f, .left = 2};
        record other = {0};
        cvm_psp_cmd start = {.type = CVM_PSP_CMD_LAUNCH_START};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &start, on_chain, &ch, NULL, NULL), 0);
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &other, NULL);
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(ch.rec.n, 3);
        assert_int_equal(other.n, 1);
        /* START 0-20, DF_FLUSH 20-25, then the chained requests 25-28, 28-31. */
        assert_int_equal(other.c[0].start_ns, 20 * MS);
        assert_int_equal(ch.rec.c[1].submit_ns, 20 * MS);
        assert_int_equal(ch.rec.c[1].start_ns, 25 * MS);
        assert_int_equal(ch.rec.c[1].wait_ns, 5 * MS);
        assert_int_equal(ch.rec.c[2].submit_ns, 28 * MS);
        assert_int_equal(ch.rec.c[2].finish_ns, 31 * MS);
        assert_int_equal(ch.rec.c[2].wait_ns, 0);
        teardown(&f);
}

static void test_submit_errors_and_queue_limit(void **state) {
        (void)state;
        fixture f;
        setup(&f, 4, 2);
        record rec = {0};
        cvm_error err = {0};
        cvm_psp_cmd bad_page = {.type = CVM_PSP_CMD_LAUNCH_UPDATE, .page_type = 7, .asid = 1};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &bad_page, on_done, &rec, NULL, &err), -EINVAL);
        assert_string_equal(err.message, "launch_update: unknown page type 7");
        cvm_psp_cmd bad_asid = {.type = CVM_PSP_CMD_DECOMMISSION, .asid = 5};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &bad_asid, on_done, &rec, NULL, &err), -EINVAL);
        assert_string_equal(err.message, "decommission: ASID 5 is out of range 1..4");
        char owner[CVM_PSP_OWNER_MAX + 1];
        memset(owner, 'x', CVM_PSP_OWNER_MAX);
        owner[CVM_PSP_OWNER_MAX] = '\0';
        assert_int_equal(cvm_psp_sim_attest(f.psp, 1, owner, on_done, &rec, &err), -EINVAL);

        /* One in service and two waiting fill a queue of two. */
        for (int i = 0; i < 3; i++)
                submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, NULL);
        cvm_psp_cmd flush = {.type = CVM_PSP_CMD_DF_FLUSH};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &flush, on_done, &rec, NULL, &err), -EAGAIN);
        assert_string_equal(err.message, "df_flush: PSP queue is full (2 commands)");
        assert_int_equal(
                cvm_psp_sim_launch(f.psp, &verifier_plan, NULL, on_launch, NULL, NULL, &err),
                -EAGAIN);
        /* Releasing an ASID is clean-up: a full queue takes it. */
        assert_int_equal(cvm_psp_sim_decommission(f.psp, 2, "vm-2", on_done, &rec, &err), 0);
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.queue_depth, 3);
        assert_true(st.busy);
        assert_int_equal(st.launches, 0);

        /* A command for an ASID nobody holds fails when it runs. */
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(cvm_psp_sim_attest(f.psp, 3, "vm-3", on_done, &rec, NULL), 0);
        cvm_clock_virtual_run(f.clock, 100);
        assert_int_equal(rec.n, 5);
        assert_int_equal(rec.c[4].result, -EINVAL);
        assert_string_equal(rec.message[4], "guest_request: ASID 3 is not in use");
        teardown(&f);
}

static void test_list_and_stats(void **state) {
        (void)state;
        fixture f;
        setup(&f, 0, 0);
        record rec = {0};
        cvm_psp_cmd cmd = {.type = CVM_PSP_CMD_LAUNCH_START, .owner = "vm-7"};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &cmd, on_done, &rec, NULL, NULL), 0);
        cvm_clock_virtual_advance(f.clock, 3 * MS);
        cvm_psp_cmd upd = {.type = CVM_PSP_CMD_LAUNCH_UPDATE,
                           .page_type = CVM_SNP_PAGE_ZERO,
                           .asid = 1,
                           .owner = "vm-7"};
        assert_int_equal(cvm_psp_sim_submit(f.psp, &upd, on_done, &rec, NULL, NULL), 0);
        submit(&f, CVM_PSP_CMD_DF_FLUSH, 0, 0, &rec, NULL);

        cvm_psp_queue_entry q[2];
        assert_int_equal(cvm_psp_sim_list(f.psp, q, 2), 3);
        assert_true(q[0].in_service);
        assert_int_equal(q[0].start_ns, 0);
        assert_int_equal(q[0].finish_ns, 20 * MS);
        assert_string_equal(q[1].owner, "vm-7");
        assert_int_equal(q[1].page_type, CVM_SNP_PAGE_ZERO);
        assert_int_equal(q[1].submit_ns, 3 * MS);
        assert_int_equal(cvm_psp_sim_list(f.psp, NULL, 0), 3);

        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_int_equal(st.now_ns, 3 * MS);
        assert_int_equal(st.busy_ns, 3 * MS);
        assert_int_equal(st.queue_depth, 2);
        assert_int_equal(st.asids_in_use, 1);
        assert_int_equal(st.asids_total, CVM_PSP_ASIDS_DEFAULT);
        assert_int_equal(st.asids_free, CVM_PSP_ASIDS_DEFAULT - 1);

        cvm_clock_virtual_advance(f.clock, 100 * MS);
        cvm_psp_sim_stats_get(f.psp, &st);
        assert_false(st.busy);
        assert_int_equal(st.busy_ns, 20 * MS + 500 * US + 5 * MS);
        assert_int_equal(st.now_ns - st.since_ns, 103 * MS);
        assert_int_equal(cvm_psp_sim_list(f.psp, q, 2), 0);
        teardown(&f);
}

static json_t *parse(const char *text) {
        json_t *v = json_loads(text, 0, NULL);
        assert_non_null(v);
        return v;
}

static void test_config_parse(void **state) {
        (void)state;
        cvm_psp_sim_config cfg, before;
        cvm_psp_sim_config_default(&cfg);
        cvm_error err = {0};

        json_auto_t *ok = parse("{\"asids\": 1006, \"schedule\": \"none\", \"costs\": "
                                "{\"launch_update_us\": 250, \"df_flush_us\": 0}}");
        assert_int_equal(cvm_psp_sim_config_parse(ok, "psp", &cfg, &err), 0);
        assert_int_equal(cfg.asids, 1006);
        assert_int_equal(cfg.max_queue, CVM_PSP_QUEUE_DEFAULT);
        assert_int_equal(cfg.costs.launch_update_ns[CVM_SNP_PAGE_NORMAL], 250 * US);
        assert_int_equal(cfg.costs.df_flush_ns, 0);
        assert_int_equal(cfg.costs.launch_start_ns, 20 * MS);

        const struct {
                const char *json, *message;
        } bad[] = {
                {"{\"costs\": {\"launch_update_us\": 250, \"bogus_us\": 1}}",
                 "unknown field 'psp.costs.bogus_us'"},
                {"{\"costs\": {\"launch_update_us\": -1}}",
                 "field 'psp.costs.launch_update_us' must be between 0 and 10000000"},
                {"{\"costs\": {\"launch_finish_us\": 10000001}}",
                 "field 'psp.costs.launch_finish_us' must be between 0 and 10000000"},
                {"{\"costs\": {\"vmsa\": 1}}", "unknown field 'psp.costs.vmsa'"},
                {"{\"costs\": {\"activate_us\": \"1ms\"}}",
                 "field 'psp.costs.activate_us' must be an integer"},
                {"{\"costs\": {\"activate_us\": 1.5}}",
                 "field 'psp.costs.activate_us' must be an integer"},
                {"{\"costs\": [1]}", "field 'psp.costs' must be an object"},
                {"{\"asids\": 0}", "field 'psp.asids' must be between 1 and 4096"},
                {"{\"max_queue\": 0}", "field 'psp.max_queue' must be between 1 and 1048576"},
                {"{\"asids\": 7, \"costs\": {\"df_flush_us\": -5}}",
                 "field 'psp.costs.df_flush_us' must be between 0 and 10000000"},
        };
        for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
                json_auto_t *v = parse(bad[i].json);
                before = cfg;
                assert_int_equal(cvm_psp_sim_config_parse(v, "psp", &cfg, &err), -EINVAL);
                assert_string_equal(err.message, bad[i].message);
                /* A failed parse changes nothing, not even fields before the bad one. */
                assert_memory_equal(&cfg, &before, sizeof(cfg));
        }
}

static void test_plan_validate(void **state) {
        (void)state;
        cvm_error err = {0};
        assert_int_equal(cvm_psp_plan_validate(&verifier_plan, &err), 0);
        cvm_psp_region vmsa = {CVM_SNP_PAGE_VMSA, 1};
        cvm_psp_launch_plan p = {.regions = &vmsa, .nregions = 1, .vmsa_pages = 1};
        assert_int_equal(cvm_psp_plan_validate(&p, &err), -EINVAL);
        assert_string_equal(err.message,
                            "launch plan region 0 has page type 2; VMSA pages go in vmsa_pages");
        p = (cvm_psp_launch_plan){.vmsa_pages = 0};
        assert_int_equal(cvm_psp_plan_validate(&p, &err), -EINVAL);
        assert_string_equal(err.message,
                            "launch plan has 0 VMSA pages, must be between 1 and 4096");
        cvm_psp_region huge[2] = {{CVM_SNP_PAGE_NORMAL, UINT32_MAX}, {CVM_SNP_PAGE_ZERO, 2}};
        p = (cvm_psp_launch_plan){.regions = huge, .nregions = 2, .vmsa_pages = 1};
        assert_int_equal(cvm_psp_plan_validate(&p, &err), -E2BIG);
        assert_string_equal(err.message, "launch plan has 4294967297 pages, the limit is 1048576");

        /* Empty regions are skipped; a plan without regions is just the VMSA. */
        fixture f;
        setup(&f, 0, 0);
        launch_log log = {0};
        cvm_psp_region sparse[] = {
                {CVM_SNP_PAGE_ZERO, 0}, {CVM_SNP_PAGE_NORMAL, 2}, {CVM_SNP_PAGE_UNMEASURED, 0}};
        p = (cvm_psp_launch_plan){.regions = sparse, .nregions = 3, .vmsa_pages = 2};
        assert_int_equal(cvm_psp_sim_launch(f.psp, &p, NULL, on_launch, &log, NULL, NULL), 0);
        p = (cvm_psp_launch_plan){.vmsa_pages = 1};
        assert_int_equal(cvm_psp_sim_launch(f.psp, &p, NULL, on_launch, &log, NULL, NULL), 0);
        cvm_clock_virtual_run(f.clock, 1000);
        /* The shorter launch finishes first. */
        assert_int_equal(log.n, 2);
        assert_int_equal(log.r[0].commands, 3 + 1);
        assert_int_equal(log.r[1].commands, 3 + 2 + 2);
        teardown(&f);
}

/* On the libuv clock, timers fire up to a millisecond late; the model still
 * chains commands at their exact finish times, catching up when woken. */
static void test_real_clock_keeps_model_time(void **state) {
        (void)state;
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        cvm_clock *clock;
        assert_int_equal(cvm_clock_uv_new(&loop, &clock, NULL), 0);
        cvm_psp_sim_config cfg;
        cvm_psp_sim_config_default(&cfg);
        json_auto_t *costs = json_pack("{s:i, s:i, s:i, s:i, s:i}", "launch_start_us", 100,
                                       "activate_us", 100, "launch_update_us", 100,
                                       "launch_update_vmsa_us", 100, "launch_finish_us", 100);
        assert_int_equal(cvm_psp_costs_parse(costs, "psp.costs", &cfg.costs, NULL), 0);
        cvm_psp_sim *psp;
        assert_int_equal(cvm_psp_sim_new(clock, &cfg, &psp, NULL), 0);

        cvm_psp_region pages = {CVM_SNP_PAGE_NORMAL, 20};
        cvm_psp_launch_plan plan = {.regions = &pages, .nregions = 1, .vmsa_pages = 1};
        launch_log log = {0};
        assert_int_equal(cvm_psp_sim_launch(psp, &plan, NULL, on_launch, &log, NULL, NULL), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(log.n, 1);
        assert_int_equal(log.r[0].commands, 24);
        assert_int_equal(log.r[0].latency_ns, 24 * 100 * US);
        assert_int_equal(log.r[0].wait_ns, 0);

        cvm_psp_sim_free(psp);
        uv_run(&loop, UV_RUN_DEFAULT); /* Runs the timer's close callback. */
        cvm_clock_uv_free(clock);
        assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fifo_exact_times),
                cmocka_unit_test(test_costs_per_command),
                cmocka_unit_test(test_single_launch),
                cmocka_unit_test(test_two_launches_interleave),
                cmocka_unit_test(test_fifty_concurrent_launches),
                cmocka_unit_test(test_dirty_asids_trigger_df_flush),
                cmocka_unit_test(test_asid_exhaustion),
                cmocka_unit_test(test_cancel),
                cmocka_unit_test(test_callback_submits),
                cmocka_unit_test(test_submit_errors_and_queue_limit),
                cmocka_unit_test(test_list_and_stats),
                cmocka_unit_test(test_config_parse),
                cmocka_unit_test(test_plan_validate),
                cmocka_unit_test(test_real_clock_keeps_model_time),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
