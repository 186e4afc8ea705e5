#include "psp_sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "list.h"
#include "log.h"

typedef enum asid_state {
        ASID_FREE, /* Clean: usable by the next LAUNCH_START. */
        ASID_IN_USE,
        ASID_DIRTY, /* Decommissioned; needs a DF_FLUSH before reuse. */
} asid_state;

typedef struct psp_cmd {
        struct psp_cmd *prev, *next;
        uint64_t id;
        cvm_psp_cmd_type type;
        uint32_t page_type;
        uint32_t asid;
        char owner[CVM_PSP_OWNER_MAX];
        uint64_t submit_ns, start_ns, finish_ns;
        bool df_flushed;
        int result;
        cvm_error err;
        cvm_psp_done_cb cb;
        void *userdata;
} psp_cmd;

typedef enum launch_stage {
        STAGE_START,
        STAGE_ACTIVATE,
        STAGE_UPDATE,
        STAGE_VMSA,
        STAGE_FINISH,
        STAGE_DONE,
} launch_stage;

struct cvm_psp_launch {
        cvm_psp_launch *prev, *next;
        cvm_psp_sim *psp;
        cvm_psp_region *regions;
        size_t nregions;
        uint32_t vmsa_pages;
        launch_stage stage;
        size_t region_i;
        uint32_t page_i; /* Within the current region, or VMSAs done. */
        uint64_t cmd_id; /* The launch's command in the PSP, 0 between commands. */
        uint32_t asid;
        uint64_t submit_ns, wait_ns, service_ns;
        uint32_t commands;
        char owner[CVM_PSP_OWNER_MAX];
        cvm_psp_launch_cb cb;
        void *userdata;
        bool aborted, done;
};

struct cvm_psp_sim {
        cvm_clock *clock;
        cvm_timer *timer;
        cvm_psp_costs costs;
        uint32_t max_queue;

        psp_cmd *head, *tail; /* Waiting commands in submit order. */
        size_t queued;
        psp_cmd *current; /* In service, or NULL when idle. */
        uint64_t next_id;
        uint64_t last_submit_ns;
        /* While completions are delivered: the model time of the one being
         * delivered, which is the submit time of commands its callback submits. */
        bool delivering;
        uint64_t delivery_ns;

        uint8_t *asids; /* asid_state by ASID; index 0 (the host's) unused. */
        uint32_t nasids, in_use, dirty;

        cvm_psp_launch *launches;
        size_t nlaunches;

        uint64_t since_ns, busy_ns;
        uint64_t commands[CVM_PSP_CMD_COUNT];
        uint64_t pages[CVM_SNP_PAGE_TYPE_MAX + 1];
        uint64_t df_flushes, failed, cancelled;
};

void cvm_psp_sim_config_default(cvm_psp_sim_config *cfg) {
        cvm_psp_costs_default(&cfg->costs);
        cfg->asids = CVM_PSP_ASIDS_DEFAULT;
        cfg->max_queue = CVM_PSP_QUEUE_DEFAULT;
}

int cvm_psp_sim_config_parse(json_t *obj, const char *path, cvm_psp_sim_config *cfg,
                             cvm_error *err) {
        cvm_psp_sim_config parsed = *cfg;
        int64_t asids = parsed.asids, max_queue = parsed.max_queue;
        int r = cvm_json_get_int(obj, path, "asids", false, 1, CVM_PSP_ASIDS_MAX, &asids, err);
        if (r < 0)
                return r;
        r = cvm_json_get_int(obj, path, "max_queue", false, 1, CVM_PSP_QUEUE_MAX, &max_queue, err);
        if (r < 0)
                return r;
        json_t *costs;
        r = cvm_json_get_object(obj, path, "costs", false, &costs, err);
        if (r < 0)
                return r;
        if (costs) {
                char costs_path[256];
                cvm_json_field_name(costs_path, sizeof(costs_path), path, "costs");
                r = cvm_psp_costs_parse(costs, costs_path, &parsed.costs, err);
                if (r < 0)
                        return r;
        }
        parsed.asids = (uint32_t)asids;
        parsed.max_queue = (uint32_t)max_queue;
        *cfg = parsed;
        return 0;
}

static void on_timer(cvm_timer *timer, void *userdata);

int cvm_psp_sim_new(cvm_clock *clock, const cvm_psp_sim_config *cfg, cvm_psp_sim **ret,
                    cvm_error *err) {
        if (cfg->asids < 1 || cfg->asids > CVM_PSP_ASIDS_MAX)
                return cvm_error_set(err, -EINVAL, "PSP ASIDs must be between 1 and %d, not %u",
                                     CVM_PSP_ASIDS_MAX, cfg->asids);
        if (cfg->max_queue < 1 || cfg->max_queue > CVM_PSP_QUEUE_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "PSP queue limit must be between 1 and %d, not %u",
                                     CVM_PSP_QUEUE_MAX, cfg->max_queue);
        cvm_psp_sim *psp = calloc(1, sizeof(*psp));
        if (!psp)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        psp->clock = clock;
        psp->costs = cfg->costs;
        psp->max_queue = cfg->max_queue;
        psp->nasids = cfg->asids;
        psp->next_id = 1;
        psp->since_ns = psp->last_submit_ns = cvm_clock_now(clock);
        psp->asids = calloc((size_t)cfg->asids + 1, sizeof(*psp->asids));
        if (!psp->asids) {
                free(psp);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        int r = cvm_timer_new(clock, on_timer, psp, &psp->timer, err);
        if (r < 0) {
                free(psp->asids);
                free(psp);
                return r;
        }
        *ret = psp;
        return 0;
}

static void free_cmds(psp_cmd *c) {
        while (c) {
                psp_cmd *next = c->next;
                free(c);
                c = next;
        }
}

void cvm_psp_sim_free(cvm_psp_sim *psp) {
        if (!psp)
                return;
        cvm_timer_free(psp->timer);
        free(psp->current);
        free_cmds(psp->head);
        while (psp->launches) {
                cvm_psp_launch *next = psp->launches->next;
                free(psp->launches->regions);
                free(psp->launches);
                psp->launches = next;
        }
        free(psp->asids);
        free(psp);
}

static uint32_t asids_free(const cvm_psp_sim *psp) {
        return psp->nasids - psp->in_use - psp->dirty;
}

/* The lowest clean ASID, so runs are reproducible; the caller checked one exists. */
static uint32_t asid_take(cvm_psp_sim *psp) {
        uint32_t a = 1;
        while (psp->asids[a] != ASID_FREE)
                a++;
        psp->asids[a] = ASID_IN_USE;
        psp->in_use++;
        return a;
}

static void df_flush(cvm_psp_sim *psp) {
        for (uint32_t a = 1; a <= psp->nasids; a++)
                if (psp->asids[a] == ASID_DIRTY)
                        psp->asids[a] = ASID_FREE;
        psp->dirty = 0;
        psp->df_flushes++;
}

/* Applies the command's effect on the ASIDs as it enters service (nothing
 * else runs until it finishes) and returns its service time. A command the
 * firmware rejects takes no PSP time in the model. */
static uint64_t execute(cvm_psp_sim *psp, psp_cmd *c) {
        const cvm_psp_costs *k = &psp->costs;
        psp->commands[c->type]++;
        switch (c->type) {
        case CVM_PSP_CMD_LAUNCH_START: {
                uint64_t ns = 0;
                if (asids_free(psp) == 0) {
                        if (psp->dirty == 0) {
                                c->result = cvm_error_set(&c->err, -ENOSPC,
                                                          "no ASID available: %u in use, %u dirty",
                                                          psp->in_use, psp->dirty);
                                return 0;
                        }
                        /* As KVM does: recycle every dirty ASID with one flush. */
                        df_flush(psp);
                        c->df_flushed = true;
                        ns += k->df_flush_ns;
                }
                c->asid = asid_take(psp);
                return ns + k->launch_start_ns;
        }
        case CVM_PSP_CMD_DF_FLUSH: df_flush(psp); return k->df_flush_ns;
        default: break;
        }
        if (psp->asids[c->asid] != ASID_IN_USE) {
                c->result = cvm_error_set(&c->err, -EINVAL, "%s: ASID %u is not in use",
                                          cvm_psp_cmd_type_to_string(c->type), c->asid);
                return 0;
        }
        if (c->type == CVM_PSP_CMD_DECOMMISSION) {
                psp->asids[c->asid] = ASID_DIRTY;
                psp->in_use--;
                psp->dirty++;
        } else if (c->type == CVM_PSP_CMD_LAUNCH_UPDATE) {
                psp->pages[c->page_type]++;
        }
        return cvm_psp_costs_command_ns(k, c->type, c->page_type);
}

/* Puts the head of the queue in service once the server is free at free_ns. */
static void start_next(cvm_psp_sim *psp, uint64_t free_ns) {
        psp_cmd *c = psp->head;
        if (!c)
                return;
        CVM_QUEUE_REMOVE(psp->head, psp->tail, c);
        psp->queued--;
        c->next = NULL;
        c->start_ns = c->submit_ns > free_ns ? c->submit_ns : free_ns;
        c->finish_ns = c->start_ns + execute(psp, c);
        psp->current = c;
}

static void deliver(cvm_psp_sim *psp, psp_cmd *c) {
        if (!c->cb)
                return;
        cvm_psp_completion done = {
                .id = c->id,
                .type = c->type,
                .page_type = c->page_type,
                .asid = c->asid,
                .result = c->result,
                .err = &c->err,
                .df_flushed = c->df_flushed,
                .submit_ns = c->submit_ns,
                .start_ns = c->start_ns,
                .finish_ns = c->finish_ns,
                .wait_ns = c->start_ns - c->submit_ns,
                .service_ns = c->finish_ns - c->start_ns,
        };
        psp->delivering = true;
        psp->delivery_ns = c->finish_ns;
        c->cb(&done, c->userdata);
        psp->delivering = false;
}

/* Completes, in order and at their model times, every command due by now. */
static void run_due(cvm_psp_sim *psp) {
        uint64_t now = cvm_clock_now(psp->clock);
        while (psp->current && psp->current->finish_ns <= now) {
                psp_cmd *c = psp->current;
                psp->current = NULL;
                psp->busy_ns += c->finish_ns - c->start_ns;
                if (c->result < 0)
                        psp->failed++;
                /* The next waiting command starts before the callback runs, so
                 * what the callback submits queues behind it, as on the PSP. */
                start_next(psp, c->finish_ns);
                deliver(psp, c);
                free(c);
        }
        if (psp->current)
                cvm_timer_start_at(psp->timer, psp->current->finish_ns);
}

static void on_timer(cvm_timer *timer, void *userdata) {
        (void)timer;
        run_due(userdata);
}

static int copy_owner(char dst[static CVM_PSP_OWNER_MAX], const char *owner, cvm_error *err) {
        if (!owner)
                owner = "";
        size_t n = strlen(owner);
        if (n >= CVM_PSP_OWNER_MAX)
                return cvm_error_set(err, -EINVAL, "PSP owner tag %s is longer than %d bytes",
                                     CVM_QUOTE(owner), CVM_PSP_OWNER_MAX - 1);
        memcpy(dst, owner, n + 1);
        return 0;
}

static bool needs_asid(cvm_psp_cmd_type type) {
        return type != CVM_PSP_CMD_LAUNCH_START && type != CVM_PSP_CMD_DF_FLUSH;
}

/* Queues cmd; bypass_limit lets clean-up (releasing an ASID) through a full
 * queue. */
static int enqueue(cvm_psp_sim *psp, const cvm_psp_cmd *cmd, bool bypass_limit, cvm_psp_done_cb cb,
                   void *userdata, uint64_t *ret_id, cvm_error *err) {
        if ((unsigned)cmd->type >= CVM_PSP_CMD_COUNT)
                return cvm_error_set(err, -EINVAL, "unknown PSP command %d", (int)cmd->type);
        const char *name = cvm_psp_cmd_type_to_string(cmd->type);
        if (cmd->type == CVM_PSP_CMD_LAUNCH_UPDATE &&
            (cmd->page_type < CVM_SNP_PAGE_NORMAL || cmd->page_type > CVM_SNP_PAGE_TYPE_MAX))
                return cvm_error_set(err, -EINVAL, "launch_update: unknown page type %u",
                                     cmd->page_type);
        if (needs_asid(cmd->type) && (cmd->asid < 1 || cmd->asid > psp->nasids))
                return cvm_error_set(err, -EINVAL, "%s: ASID %u is out of range 1..%u", name,
                                     cmd->asid, psp->nasids);
        if (!bypass_limit && psp->queued >= psp->max_queue)
                return cvm_error_set(err, -EAGAIN, "%s: PSP queue is full (%u commands)", name,
                                     psp->max_queue);
        psp_cmd *c = calloc(1, sizeof(*c));
        if (!c)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        int r = copy_owner(c->owner, cmd->owner, err);
        if (r < 0) {
                free(c);
                return r;
        }
        c->id = psp->next_id++;
        c->type = cmd->type;
        c->page_type = cmd->type == CVM_PSP_CMD_LAUNCH_UPDATE ? cmd->page_type : 0;
        c->asid = needs_asid(cmd->type) ? cmd->asid : 0;
        c->cb = cb;
        c->userdata = userdata;
        /* Submit times never go backwards, so the FIFO is also in time order. */
        uint64_t t = psp->delivering ? psp->delivery_ns : cvm_clock_now(psp->clock);
        c->submit_ns = psp->last_submit_ns = t > psp->last_submit_ns ? t : psp->last_submit_ns;

        CVM_QUEUE_APPEND(psp->head, psp->tail, c);
        psp->queued++;
        if (ret_id)
                *ret_id = c->id;
        if (!psp->current) {
                start_next(psp, c->submit_ns);
                cvm_timer_start_at(psp->timer, psp->current->finish_ns);
        }
        return 0;
}

int cvm_psp_sim_submit(cvm_psp_sim *psp, const cvm_psp_cmd *cmd, cvm_psp_done_cb cb, void *userdata,
                       uint64_t *ret_id, cvm_error *err) {
        return enqueue(psp, cmd, false, cb, userdata, ret_id, err);
}

int cvm_psp_sim_cancel(cvm_psp_sim *psp, uint64_t id, cvm_error *err) {
        if (psp->current && psp->current->id == id)
                return cvm_error_set(err, -EBUSY, "PSP command %llu is in service",
                                     (unsigned long long)id);
        for (psp_cmd *c = psp->head; c; c = c->next) {
                if (c->id != id)
                        continue;
                CVM_QUEUE_REMOVE(psp->head, psp->tail, c);
                psp->queued--;
                psp->cancelled++;
                free(c);
                return 0;
        }
        return cvm_error_set(err, -ENOENT, "no queued PSP command %llu", (unsigned long long)id);
}

int cvm_psp_sim_decommission(cvm_psp_sim *psp, uint32_t asid, const char *owner, cvm_psp_done_cb cb,
                             void *userdata, cvm_error *err) {
        cvm_psp_cmd cmd = {.type = CVM_PSP_CMD_DECOMMISSION, .asid = asid, .owner = owner};
        /* Releasing an ASID is clean-up: refused by a full queue, the ASID
         * would stay in use for good. */
        return enqueue(psp, &cmd, true, cb, userdata, NULL, err);
}

int cvm_psp_sim_attest(cvm_psp_sim *psp, uint32_t asid, const char *owner, cvm_psp_done_cb cb,
                       void *userdata, cvm_error *err) {
        cvm_psp_cmd cmd = {.type = CVM_PSP_CMD_GUEST_REQUEST, .asid = asid, .owner = owner};
        return enqueue(psp, &cmd, false, cb, userdata, NULL, err);
}

/* Launch sequences. */

static void launch_unlink_free(cvm_psp_launch *l) {
        cvm_psp_sim *psp = l->psp;
        CVM_LIST_REMOVE(psp->launches, l);
        psp->nlaunches--;
        free(l->regions);
        free(l);
}

/* Gives back the ASID of a launch that will not finish, as destroying its VM would. */
static void launch_release_asid(cvm_psp_launch *l) {
        if (!l->asid)
                return;
        cvm_psp_cmd cmd = {.type = CVM_PSP_CMD_DECOMMISSION, .asid = l->asid, .owner = l->owner};
        cvm_error err;
        if (enqueue(l->psp, &cmd, true, NULL, NULL, NULL, &err) < 0)
                log_warn("psp: ASID %u of launch %s stays in use: %s", l->asid, CVM_QUOTE(l->owner),
                         err.message);
        l->asid = 0;
}

/* Moves to the next region with pages, or on to the VMSAs. */
static void launch_skip_empty(cvm_psp_launch *l) {
        while (l->region_i < l->nregions && l->regions[l->region_i].npages == 0)
                l->region_i++;
        if (l->region_i == l->nregions) {
                l->stage = STAGE_VMSA;
                l->page_i = 0;
        }
}

static void launch_advance(cvm_psp_launch *l) {
        switch (l->stage) {
        case STAGE_START: l->stage = STAGE_ACTIVATE; break;
        case STAGE_ACTIVATE:
                l->stage = STAGE_UPDATE;
                launch_skip_empty(l);
                break;
        case STAGE_UPDATE:
                if (++l->page_i == l->regions[l->region_i].npages) {
                        l->region_i++;
                        l->page_i = 0;
                        launch_skip_empty(l);
                }
                break;
        case STAGE_VMSA:
                if (++l->page_i == l->vmsa_pages)
                        l->stage = STAGE_FINISH;
                break;
        case STAGE_FINISH:
        case STAGE_DONE: l->stage = STAGE_DONE; break;
        }
}

static void launch_step(const cvm_psp_completion *c, void *userdata);

static int launch_submit_next(cvm_psp_launch *l, cvm_error *err) {
        cvm_psp_cmd cmd = {.asid = l->asid, .owner = l->owner};
        switch (l->stage) {
        case STAGE_START: cmd.type = CVM_PSP_CMD_LAUNCH_START; break;
        case STAGE_ACTIVATE: cmd.type = CVM_PSP_CMD_ACTIVATE; break;
        case STAGE_UPDATE:
                cmd.type = CVM_PSP_CMD_LAUNCH_UPDATE;
                cmd.page_type = l->regions[l->region_i].type;
                break;
        case STAGE_VMSA:
                cmd.type = CVM_PSP_CMD_LAUNCH_UPDATE;
                cmd.page_type = CVM_SNP_PAGE_VMSA;
                break;
        case STAGE_FINISH:
        case STAGE_DONE: cmd.type = CVM_PSP_CMD_LAUNCH_FINISH; break;
        }
        return enqueue(l->psp, &cmd, false, launch_step, l, &l->cmd_id, err);
}

static void launch_complete(cvm_psp_launch *l, int result, const cvm_error *err,
                            uint64_t finish_ns) {
        if (result < 0)
                launch_release_asid(l);
        cvm_psp_launch_result r = {
                .result = result,
                .err = err,
                .asid = l->asid,
                .submit_ns = l->submit_ns,
                .finish_ns = finish_ns,
                .latency_ns = finish_ns - l->submit_ns,
                .wait_ns = l->wait_ns,
                .service_ns = l->service_ns,
                .commands = l->commands,
        };
        l->done = true;
        if (l->cb)
                l->cb(&r, l->userdata);
        launch_unlink_free(l);
}

static void launch_step(const cvm_psp_completion *c, void *userdata) {
        cvm_psp_launch *l = userdata;
        if (l->commands++ == 0)
                l->submit_ns = c->submit_ns;
        l->wait_ns += c->wait_ns;
        l->service_ns += c->service_ns;
        l->cmd_id = 0;
        if (c->type == CVM_PSP_CMD_LAUNCH_START && c->result == 0)
                l->asid = c->asid;
        if (l->aborted) {
                launch_release_asid(l);
                launch_unlink_free(l);
                return;
        }
        if (c->result < 0) {
                launch_complete(l, c->result, c->err, c->finish_ns);
                return;
        }
        launch_advance(l);
        if (l->stage == STAGE_DONE) {
                launch_complete(l, 0, NULL, c->finish_ns);
                return;
        }
        cvm_error err;
        int r = launch_submit_next(l, &err);
        if (r < 0)
                launch_complete(l, r, &err, c->finish_ns);
}

int cvm_psp_sim_launch(cvm_psp_sim *psp, const cvm_psp_launch_plan *plan, const char *owner,
                       cvm_psp_launch_cb cb, void *userdata, cvm_psp_launch **ret, cvm_error *err) {
        int r = cvm_psp_plan_validate(plan, err);
        if (r < 0)
                return r;
        cvm_psp_launch *l = calloc(1, sizeof(*l));
        if (!l)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        r = copy_owner(l->owner, owner, err);
        if (r < 0) {
                free(l);
                return r;
        }
        if (plan->nregions > 0) {
                l->regions = calloc(plan->nregions, sizeof(*l->regions));
                if (!l->regions) {
                        free(l);
                        return cvm_error_set(err, -ENOMEM, "out of memory");
                }
                memcpy(l->regions, plan->regions, plan->nregions * sizeof(*l->regions));
        }
        l->psp = psp;
        l->nregions = plan->nregions;
        l->vmsa_pages = plan->vmsa_pages;
        l->stage = STAGE_START;
        l->cb = cb;
        l->userdata = userdata;
        r = launch_submit_next(l, err);
        if (r < 0) {
                free(l->regions);
                free(l);
                return r;
        }
        CVM_LIST_PREPEND(psp->launches, l);
        psp->nlaunches++;
        if (ret)
                *ret = l;
        return 0;
}

void cvm_psp_sim_launch_abort(cvm_psp_launch *l) {
        if (!l || l->done || l->aborted)
                return;
        l->aborted = true;
        /* A command in service cannot be recalled; launch_step finishes the abort. */
        if (l->cmd_id && cvm_psp_sim_cancel(l->psp, l->cmd_id, NULL) == -EBUSY)
                return;
        launch_release_asid(l);
        launch_unlink_free(l);
}

void cvm_psp_sim_stats_get(cvm_psp_sim *psp, cvm_psp_sim_stats *ret) {
        uint64_t now = cvm_clock_now(psp->clock);
        *ret = (cvm_psp_sim_stats){
                .now_ns = now,
                .since_ns = psp->since_ns,
                .busy_ns = psp->busy_ns,
                .busy = psp->current != NULL,
                .queue_depth = psp->queued,
                .launches = psp->nlaunches,
                .df_flushes = psp->df_flushes,
                .failed = psp->failed,
                .cancelled = psp->cancelled,
                .asids_total = psp->nasids,
                .asids_free = asids_free(psp),
                .asids_dirty = psp->dirty,
                .asids_in_use = psp->in_use,
        };
        if (psp->current && now > psp->current->start_ns) {
                uint64_t end = now < psp->current->finish_ns ? now : psp->current->finish_ns;
                ret->busy_ns += end - psp->current->start_ns;
        }
        memcpy(ret->commands, psp->commands, sizeof(ret->commands));
        memcpy(ret->pages, psp->pages, sizeof(ret->pages));
}

static void fill_entry(cvm_psp_queue_entry *e, const psp_cmd *c, bool in_service) {
        *e = (cvm_psp_queue_entry){
                .id = c->id,
                .type = c->type,
                .page_type = c->page_type,
                .asid = c->asid,
                .submit_ns = c->submit_ns,
                .in_service = in_service,
                .start_ns = in_service ? c->start_ns : 0,
                .finish_ns = in_service ? c->finish_ns : 0,
        };
        memcpy(e->owner, c->owner, sizeof(e->owner));
}

size_t cvm_psp_sim_list(cvm_psp_sim *psp, cvm_psp_queue_entry *entries, size_t max) {
        size_t n = 0;
        if (psp->current && n < max)
                fill_entry(&entries[n], psp->current, true);
        n += psp->current != NULL;
        for (const psp_cmd *c = psp->head; c; c = c->next, n++)
                if (n < max)
                        fill_entry(&entries[n], c, false);
        return n;
}
