#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_client.h"
#include "cleanup.h"
#include "json.h"
#include "list.h"
#include "log.h"
#include "path.h"
#include "amd_certs.h"
#include "psp_sched.h"
#include "psp_sim.h"
#include "snp_report.h"
#include <openssl/rand.h>
#include "vm.h"

#define SIM_HELLO_TIMEOUT_MS 10000
#define SIM_AGENT_ARGS_MAX 80
/* Responses up to 6 MiB: with the stderr tail a result stays under the 8 MiB frame limit. */
#define SIM_MAX_RESPONSE (6u << 20)

typedef struct sim_config {
        char *agent;           /* The cvm-agent program. */
        uint32_t prepare_ms;   /* VMM set-up before the launch. */
        bool memory_limit;     /* RLIMIT_AS from the VM's memory size. */
        uint32_t heartbeat_ms; /* Agent heartbeat; 0 disables it. */
        char *schedule;        /* psp.schedule: "cvmd" or "none", for listings. */
        cvm_psp_sim_config psp;
} sim_config;

typedef struct sim_host sim_host;

typedef struct sim_vm {
        sim_host *sh;
        cvm_vm *vm;
        cvm_timer *timer;
        cvm_host_step_cb step_cb;
        uint64_t step_started_ns;
        cvm_psp_launch *launch;
        uint32_t asid;
        pid_t pid;
        char *workdir;
        cvm_agent_client *agent;
        struct sim_invoke *invokes; /* Accepted and not answered yet. */
        struct sim_attest *attests; /* Likewise for attestations. */
        uint8_t report_id[CVM_SNP_REPORT_ID_SIZE];
        bool ready;
        bool tearing_down;
        cvm_host_step_cb teardown_cb;
        struct sim_vm *prev, *next;
} sim_vm;

struct sim_host {
        cvm_host base;
        uv_loop_t *loop;
        cvm_clock *clock;
        cvm_psp_sim *psp;
        sim_config cfg;
        char *root; /* state_dir/sim */
        sim_vm *vms;
        uv_signal_t sigchld;
        pid_t *pids; /* Children not reaped yet. */
        struct sim_release *releases;
        struct sim_attest *chain_waiters;
        struct chain_work *chain_work;
        uint64_t decommission_ns, guest_request_ns;
        char *amd_dir;        /* The simulated ARK, ASK and VCEK live here. */
        cvm_amd_chain *chain; /* Opened at the first attestation, off the loop. */
        char *chain_pem;      /* VCEK, ASK, ARK as PEM, relayed with every report. */
        bool chain_opening;
        cvm_error chain_error; /* Why the chain could not be opened, if it could not. */
        size_t n_pids, cap_pids;
};

/* Configuration. */

static const char *const sim_fields[] = {"agent", "prepare_ms", "memory_limit", "heartbeat_ms",
                                         NULL};
/* The "psp" section is shared: the simulated PSP's keys and the scheduler's. */
static const char *const psp_fields[] = {"schedule", "window",    "aging_ms", "asid_reserve",
                                         "asids",    "max_queue", "costs",    NULL};

static void sim_config_done(sim_config *c) {
        free(c->agent);
        free(c->schedule);
}

static int sim_config_parse(json_t *sim, json_t *psp, sim_config *ret, cvm_error *err) {
        sim_config c = {.prepare_ms = 10, .memory_limit = true, .heartbeat_ms = 1000};
        cvm_psp_sim_config_default(&c.psp);
        const char *agent = NULL, *schedule = NULL;
        int r = 0;
        if (sim) {
                if ((r = cvm_json_check_fields(sim, "sim", sim_fields, err)) < 0 ||
                    (r = cvm_json_get_string(sim, "sim", "agent", false, &agent, err)) < 0 ||
                    (r = cvm_json_get_bool(sim, "sim", "memory_limit", false, &c.memory_limit,
                                           err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(sim, "sim", "prepare_ms", 0, 600000, &c.prepare_ms,
                                          err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(sim, "sim", "heartbeat_ms", 0, 600000, &c.heartbeat_ms,
                                          err)) < 0)
                        return r;
                if (agent && agent[0] != '/')
                        return cvm_error_set(err, -EINVAL,
                                             "field 'sim.agent' must be an absolute path");
        }
        if (psp) {
                cvm_sched_config sc;
                cvm_sched_config_default(&sc);
                if ((r = cvm_json_check_fields(psp, "psp", psp_fields, err)) < 0 ||
                    (r = cvm_json_get_string(psp, "psp", "schedule", false, &schedule, err)) < 0 ||
                    (r = cvm_sched_config_parse(psp, "psp", &sc, err)) < 0 ||
                    (r = cvm_psp_sim_config_parse(psp, "psp", &c.psp, err)) < 0)
                        return r;
        }
        c.agent = agent ? strdup(agent) : cvm_path_shipped(CVM_PATH_AGENT);
        c.schedule = strdup(schedule ? schedule : "cvmd");
        if (!c.agent || !c.schedule) {
                sim_config_done(&c);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        *ret = c;
        return 0;
}

int cvm_sim_check_config(json_t *sim, json_t *psp, cvm_error *err) {
        sim_config c;
        int r = sim_config_parse(sim, psp, &c, err);
        if (r >= 0)
                sim_config_done(&c);
        return r;
}

/* Children. */

static void track_pid(sim_host *sh, pid_t pid) {
        if (sh->n_pids == sh->cap_pids) {
                size_t cap = sh->cap_pids ? sh->cap_pids * 2 : 16;
                pid_t *p = realloc(sh->pids, cap * sizeof(*p));
                if (!p) {
                        log_error("out of memory tracking child %d; it may linger", (int)pid);
                        return;
                }
                sh->pids = p;
                sh->cap_pids = cap;
        }
        sh->pids[sh->n_pids++] = pid;
}

/* Reaps our own children only: other code may own other children. */
static void on_sigchld(uv_signal_t *h, int signum) {
        (void)signum;
        sim_host *sh = h->data;
        for (size_t i = 0; i < sh->n_pids;) {
                int status;
                pid_t p = waitpid(sh->pids[i], &status, WNOHANG);
                if (p == 0) {
                        i++;
                        continue;
                }
                if (p > 0) {
                        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
                                log_info("sim: agent %d killed by signal %d", (int)p,
                                         WTERMSIG(status));
                        else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
                                log_info("sim: agent %d exited with status %d", (int)p,
                                         WEXITSTATUS(status));
                }
                sh->pids[i] = sh->pids[--sh->n_pids];
        }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

static void rm_tree(const char *path) {
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Forks the agent: its own session (so teardown kills the whole group), the
 * VM's memory as its address-space limit, a private working directory, the
 * connection as fd 3, a clean environment. Only async-signal-safe calls run
 * between fork and exec. */
static int spawn_agent(sim_vm *sv, int child_fd, cvm_error *err) {
        sim_host *sh = sv->sh;
        cvm_vm *vm = sv->vm;
        char conc[16], maxresp[16];
        snprintf(conc, sizeof(conc), "%u", vm->concurrency);
        snprintf(maxresp, sizeof(maxresp), "%u", SIM_MAX_RESPONSE);
        char *argv[SIM_AGENT_ARGS_MAX + 12];
        size_t n = 0;
        argv[n++] = sh->cfg.agent;
        argv[n++] = "--fd";
        argv[n++] = "3";
        argv[n++] = "--concurrency";
        argv[n++] = conc;
        argv[n++] = "--max-response";
        argv[n++] = maxresp;
        /* A simulated VM has no SNP firmware to ask: the simulated PSP signs its
         * reports, even if cvmd itself runs inside an SNP guest. */
        argv[n++] = "--sev-guest";
        argv[n++] = "/nonexistent/sev-guest";
        /* An agent's per-invocation lines are noise unless the daemon debugs. */
        argv[n++] = "--log-level";
        argv[n++] = cvm_log_get_level() >= CVM_LOG_DEBUG ? "info" : "warn";
        argv[n++] = "--";
        if (vm->handler.argc > SIM_AGENT_ARGS_MAX)
                return cvm_error_set(err, -E2BIG, "handler has more than %d arguments",
                                     SIM_AGENT_ARGS_MAX);
        for (size_t i = 0; i < vm->handler.argc; i++)
                argv[n++] = vm->handler.argv[i];
        argv[n] = NULL;
        char home[PATH_MAX + 8], vmid[64];
        snprintf(home, sizeof(home), "HOME=%s", sv->workdir);
        snprintf(vmid, sizeof(vmid), "CVM_VM_ID=%s", vm->id);
        char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", home, vmid, NULL};
        rlim_t mem = (rlim_t)vm->image->spec.memory_mib << 20;
        struct rlimit rl = {mem, mem};
        bool limit = sh->cfg.memory_limit;
        _cleanup_close_ int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
                return cvm_error_set_errno(err, -errno, "open /dev/null");
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return cvm_error_set_errno(err, -errno, "fork");
        if (pid == 0) {
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                signal(SIGCHLD, SIG_DFL);
                if (setsid() < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(126);
                if (limit && setrlimit(RLIMIT_AS, &rl) < 0)
                        _exit(126);
                if (chdir(sv->workdir) < 0 || dup2(devnull, 0) < 0)
                        _exit(126);
                if (child_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(child_fd, 3) < 0)
                        _exit(126);
                close_range(4, ~0U, 0);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        sv->pid = pid;
        track_pid(sh, pid);
        return 0;
}

/* Steps. */

static void step_done(sim_vm *sv, int result, const cvm_error *err, uint64_t psp_wait, uint64_t psp,
                      uint32_t asid) {
        cvm_host_step_cb cb = sv->step_cb;
        sv->step_cb = NULL;
        cvm_host_step st = {.result = result,
                            .err = err,
                            .duration_ns = cvm_clock_now(sv->sh->clock) - sv->step_started_ns,
                            .psp_wait_ns = psp_wait,
                            .psp_ns = psp,
                            .asid = asid};
        cb(sv->vm, &st);
}

static void start_step(sim_vm *sv, cvm_host_step_cb cb) {
        sv->step_cb = cb;
        sv->step_started_ns = cvm_clock_now(sv->sh->clock);
}

static void on_prepare_timer(cvm_timer *t, void *ud) {
        (void)t;
        step_done(ud, 0, NULL, 0, 0, 0);
}

static int sim_prepare(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        sim_host *sh = (sim_host *)host;
        sim_vm *sv = calloc(1, sizeof(*sv));
        if (!sv)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        sv->sh = sh;
        sv->vm = vm;
        sv->pid = -1;
        int r = cvm_timer_new(sh->clock, on_prepare_timer, sv, &sv->timer, err);
        if (r >= 0 && asprintf(&sv->workdir, "%s/%s", sh->root, vm->id) < 0) {
                sv->workdir = NULL;
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        }
        if (r < 0) {
                cvm_timer_free(sv->timer);
                free(sv);
                return r;
        }
        vm->host_data = sv;
        CVM_LIST_PREPEND(sh->vms, sv);
        start_step(sv, cb);
        cvm_timer_start(sv->timer, (uint64_t)sh->cfg.prepare_ms * CVM_NSEC_PER_MSEC);
        return 0;
}

static void on_psp_launched(const cvm_psp_launch_result *res, void *ud) {
        sim_vm *sv = ud;
        sv->launch = NULL;
        if (res->result < 0) {
                step_done(sv, res->result, res->err, res->wait_ns, res->service_ns, 0);
                return;
        }
        sv->asid = res->asid;
        step_done(sv, 0, NULL, res->wait_ns, res->service_ns, res->asid);
}

static int sim_launch(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        sim_host *sh = (sim_host *)host;
        sim_vm *sv = vm->host_data;
        start_step(sv, cb);
        int r = cvm_psp_sim_launch(sh->psp, &vm->image->plan, vm->id, on_psp_launched, sv,
                                   &sv->launch, err);
        if (r < 0)
                sv->step_cb = NULL;
        return r;
}

static void on_hello(cvm_agent_client *c, const cvm_agent_hello *hello, void *ud) {
        (void)c;
        (void)hello;
        sim_vm *sv = ud;
        cvm_timer_stop(sv->timer);
        sv->ready = true;
        step_done(sv, 0, NULL, 0, 0, 0);
}

static void on_agent_closed(cvm_agent_client *c, const cvm_error *why, void *ud) {
        (void)c;
        sim_vm *sv = ud;
        sim_host *sh = sv->sh;
        /* The client may be freed inside its own callbacks. */
        cvm_agent_client_free(sv->agent);
        sv->agent = NULL;
        cvm_error e;
        if (!sv->ready) {
                /* Whatever went wrong, the guest failed to boot: a bad gateway. */
                cvm_error_set(&e, -EPROTO, "vm %s failed to boot: its agent went away: %s",
                              sv->vm->id, why->message);
                cvm_timer_stop(sv->timer);
                step_done(sv, e.code, &e, 0, 0, 0);
                return;
        }
        cvm_error_set(&e, why->code ? why->code : -ECONNRESET, "the agent of %s went away: %s",
                      sv->vm->id, why->message);
        if (sh->base.on_died)
                sh->base.on_died(sv->vm, &e, sh->base.userdata);
}

static void on_agent_lost(cvm_agent_client *c, const cvm_error *why, void *ud) {
        (void)c;
        sim_vm *sv = ud;
        if (sv->ready && sv->sh->base.on_lost)
                sv->sh->base.on_lost(sv->vm, why, sv->sh->base.userdata);
}

static void on_hello_timeout(cvm_timer *t, void *ud) {
        (void)t;
        sim_vm *sv = ud;
        cvm_error e;
        cvm_error_set(&e, -ETIMEDOUT, "the agent of %s did not say hello within %d ms", sv->vm->id,
                      SIM_HELLO_TIMEOUT_MS);
        step_done(sv, e.code, &e, 0, 0, 0);
}

/* The boot model's time is over: the kernel starts the agent. */
static void on_boot_timer(cvm_timer *t, void *ud) {
        (void)t;
        sim_vm *sv = ud;
        sim_host *sh = sv->sh;
        cvm_error err = {0};
        int fds[2] = {-1, -1};
        int r = 0;
        if (mkdir(sv->workdir, 0700) < 0 && errno != EEXIST)
                r = cvm_error_set_errno(&err, -errno, "cannot create %s", CVM_QUOTE(sv->workdir));
        if (r >= 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
                r = cvm_error_set_errno(&err, -errno, "socketpair");
        if (r >= 0)
                r = spawn_agent(sv, fds[1], &err);
        if (fds[1] >= 0)
                close(fds[1]);
        if (r >= 0) {
                cvm_agent_client_opts o = {.heartbeat_interval_ms = sh->cfg.heartbeat_ms};
                cvm_agent_client_cbs cbs = {.on_hello = on_hello,
                                            .on_closed = on_agent_closed,
                                            .on_lost = on_agent_lost};
                r = cvm_agent_client_new(sh->loop, fds[0], &o, &cbs, sv, &sv->agent, &err);
                fds[0] = -1;
        }
        if (fds[0] >= 0)
                close(fds[0]);
        if (r < 0) {
                cvm_error_prefix(&err, "cannot start the agent of %s: ", sv->vm->id);
                step_done(sv, r, &err, 0, 0, 0);
                return;
        }
        cvm_timer_free(sv->timer);
        sv->timer = NULL;
        if (cvm_timer_new(sh->clock, on_hello_timeout, sv, &sv->timer, &err) >= 0)
                cvm_timer_start(sv->timer, (uint64_t)SIM_HELLO_TIMEOUT_MS * CVM_NSEC_PER_MSEC);
}

static int sim_boot(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        sim_host *sh = (sim_host *)host;
        sim_vm *sv = vm->host_data;
        cvm_timer_free(sv->timer);
        sv->timer = NULL;
        int r = cvm_timer_new(sh->clock, on_boot_timer, sv, &sv->timer, err);
        if (r < 0)
                return r;
        start_step(sv, cb);
        uint64_t ms = (uint64_t)vm->image->spec.firmware_boot_ms + vm->image->spec.kernel_boot_ms;
        cvm_timer_start(sv->timer, ms * CVM_NSEC_PER_MSEC);
        return 0;
}

typedef struct sim_invoke {
        sim_vm *sv;
        cvm_host_invoke_cb cb;
        void *userdata;
        struct sim_invoke *prev, *next; /* In sv->invokes. */
} sim_invoke;

static void invoke_unlink(sim_invoke *si) {
        sim_vm *sv = si->sv;
        CVM_LIST_REMOVE(sv->invokes, si);
}

static void on_result(cvm_agent_client *c, uint64_t id, const cvm_agent_result *result,
                      const cvm_error *err, void *ud) {
        (void)c;
        (void)id;
        sim_invoke *si = ud;
        sim_invoke copy = *si;
        invoke_unlink(si);
        free(si);
        copy.cb(copy.sv->vm, result, err, copy.userdata);
}

static int sim_invoke_fn(cvm_host *host, cvm_vm *vm, uint64_t id, uint32_t timeout_ms,
                         const void *body, size_t len, cvm_host_invoke_cb cb, void *userdata,
                         cvm_error *err) {
        (void)host;
        sim_vm *sv = vm->host_data;
        if (!sv || !sv->agent)
                return cvm_error_set(err, -ECONNRESET, "vm %s has no agent", vm->id);
        sim_invoke *si = malloc(sizeof(*si));
        if (!si)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *si = (sim_invoke){.sv = sv, .cb = cb, .userdata = userdata};
        int r = cvm_agent_client_invoke(sv->agent, id, timeout_ms, body, len, on_result, si, err);
        if (r < 0) {
                free(si);
                return r;
        }
        CVM_LIST_PREPEND(sv->invokes, si);
        return 0;
}

/* Attestation: the agent binds its key and the client's nonce into
 * REPORT_DATA; the simulated PSP then takes a GUEST_REQUEST turn (scheduled
 * below demand launches) and signs a report with the simulated VCEK. */

typedef enum attest_stage {
        ATTEST_AGENT, /* Waiting for the agent's key and REPORT_DATA. */
        ATTEST_CHAIN, /* Waiting for the chain to be opened. */
        ATTEST_SCHED, /* Waiting for its turn on the PSP. */
        ATTEST_PSP,   /* The GUEST_REQUEST is on the PSP. */
} attest_stage;

typedef struct sim_attest {
        sim_vm *sv; /* NULL once the VM is gone: the next stage frees it. */
        attest_stage stage;
        cvm_host_attest_cb cb;
        void *userdata;
        uint8_t report_data[CVM_SNP_REPORT_DATA_SIZE];
        uint8_t *public_key;
        size_t public_key_len;
        cvm_sched_job *job;
        struct sim_attest *prev, *next; /* In sv->attests, or sh->chain_waiters. */
} sim_attest;

static void attest_unlink(sim_attest *a, sim_attest **head) {
        CVM_LIST_REMOVE(*head, a);
        a->prev = a->next = NULL;
}

static void attest_free(sim_attest *a) {
        free(a->public_key);
        free(a);
}

/* Ends an attestation with an error, once; a is freed. */
static void attest_fail(sim_attest *a, const cvm_error *err) {
        sim_vm *sv = a->sv;
        if (sv)
                attest_unlink(a, &sv->attests);
        if (sv && a->cb)
                a->cb(sv->vm, NULL, err, a->userdata);
        attest_free(a);
}

static void attest_sign(sim_attest *a) {
        sim_vm *sv = a->sv;
        sim_host *sh = sv->sh;
        cvm_vm *vm = sv->vm;
        const cvm_vcek_info *vi = &sh->chain->vcek_info;
        uint64_t tcb = cvm_snp_tcb_encode(&vi->tcb);
        cvm_snp_report r = {
                .version = 2,
                .policy = vm->image->spec.guest_policy,
                .vmpl = 0,
                .signature_algo = CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384,
                .current_tcb = tcb,
                .platform_info = CVM_SNP_PLATFORM_SMT_EN,
                .reported_tcb = tcb,
                .committed_tcb = tcb,
                .launch_tcb = tcb,
                /* The firmware version the simulated PSP claims: SNP 1.55, build 21. */
                .current_major = 1,
                .current_minor = 55,
                .current_build = 21,
                .committed_major = 1,
                .committed_minor = 55,
                .committed_build = 21,
        };
        memcpy(r.report_data, a->report_data, sizeof(r.report_data));
        memcpy(r.measurement, vm->image->digest, sizeof(r.measurement));
        memcpy(r.report_id, sv->report_id, sizeof(r.report_id));
        /* No migration agent: REPORT_ID_MA is all ones. */
        memset(r.report_id_ma, 0xff, sizeof(r.report_id_ma));
        memcpy(r.chip_id, vi->hwid, sizeof(r.chip_id));
        uint8_t report[CVM_SNP_REPORT_SIZE];
        cvm_error err = {0};
        if (cvm_snp_report_encode(&r, report, &err) < 0 ||
            cvm_snp_report_sign(report, sh->chain->vcek_key, &err) < 0) {
                attest_fail(a, &err);
                return;
        }
        attest_unlink(a, &sv->attests);
        cvm_host_attestation out = {.report = report,
                                    .report_len = sizeof(report),
                                    .public_key = a->public_key,
                                    .public_key_len = a->public_key_len,
                                    .cert_chain_pem = sh->chain_pem};
        a->cb(vm, &out, NULL, a->userdata);
        attest_free(a);
}

static void on_guest_request(const cvm_psp_completion *c, void *ud) {
        sim_attest *a = ud;
        cvm_sched_done(a->job, c->service_ns);
        a->job = NULL;
        if (!a->sv) {
                attest_free(a);
                return;
        }
        if (c->result < 0) {
                attest_fail(a, c->err);
                return;
        }
        attest_sign(a);
}

static void on_attest_turn(cvm_sched_job *job, void *ud) {
        (void)job;
        sim_attest *a = ud;
        cvm_error err = {0};
        a->stage = ATTEST_PSP;
        if (cvm_psp_sim_attest(a->sv->sh->psp, a->sv->asid, a->sv->vm->id, on_guest_request, a,
                               &err) < 0) {
                cvm_sched_done(a->job, 0);
                a->job = NULL;
                attest_fail(a, &err);
        }
}

static void attest_schedule(sim_attest *a) {
        sim_host *sh = a->sv->sh;
        cvm_error err = {0};
        a->stage = ATTEST_SCHED;
        if (!sh->base.sched) {
                on_attest_turn(NULL, a);
                return;
        }
        if (cvm_sched_submit(sh->base.sched, CVM_SCHED_ATTEST, sh->guest_request_ns, a->sv->vm->id,
                             on_attest_turn, a, &a->job, &err) < 0)
                attest_fail(a, &err);
}

typedef struct chain_work {
        uv_work_t req;
        sim_host *sh;
        char *dir;
        cvm_amd_chain *chain;
        char *pem;
        cvm_error err;
        int result;
} chain_work;

/* Off the loop: generating two RSA-4096 keys takes seconds. */
static void chain_run(uv_work_t *req) {
        chain_work *w = req->data;
        cvm_amd_sim_params p = {.tcb = {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115}};
        bool created = false;
        w->result = cvm_amd_sim_chain_open(w->dir, &p, &w->chain, &created, &w->err);
        X509 *certs[3] = {w->chain ? w->chain->vcek : NULL, w->chain ? w->chain->ask : NULL,
                          w->chain ? w->chain->ark : NULL};
        size_t total = 0;
        for (int i = 0; i < 3 && w->result >= 0; i++) {
                char *pem = NULL;
                size_t len = 0;
                w->result = cvm_amd_cert_pem(certs[i], &pem, &len, &w->err);
                if (w->result < 0)
                        break;
                char *grown = realloc(w->pem, total + len + 1);
                if (!grown) {
                        free(pem);
                        w->result = cvm_error_set(&w->err, -ENOMEM, "out of memory");
                        break;
                }
                w->pem = grown;
                memcpy(w->pem + total, pem, len);
                total += len;
                w->pem[total] = '\0';
                free(pem);
        }
        if (w->result >= 0 && created)
                log_info("sim: created a simulated AMD certificate chain in %s", CVM_QUOTE(w->dir));
}

static void chain_done(uv_work_t *req, int status) {
        (void)status;
        chain_work *w = req->data;
        sim_host *sh = w->sh;
        if (!sh) {
                /* The host went away meanwhile. */
                cvm_amd_chain_free(w->chain);
        } else {
                sh->chain_opening = false;
                sh->chain_work = NULL;
                if (w->result < 0) {
                        sh->chain_error = w->err;
                        cvm_amd_chain_free(w->chain);
                } else {
                        sh->chain = w->chain;
                        sh->chain_pem = CVM_TAKE_PTR(w->pem);
                }
                /* Every attestation waiting for the chain goes on (or fails). */
                while (sh->chain_waiters) {
                        sim_attest *a = sh->chain_waiters;
                        attest_unlink(a, &sh->chain_waiters);
                        if (!a->sv)
                                attest_free(a);
                        else if (!sh->chain)
                                attest_fail(a, &sh->chain_error);
                        else {
                                CVM_LIST_PREPEND(a->sv->attests, a);
                                attest_schedule(a);
                        }
                }
        }
        free(w->pem);
        free(w->dir);
        free(w);
}

static void attest_need_chain(sim_attest *a) {
        sim_host *sh = a->sv->sh;
        if (sh->chain) {
                attest_schedule(a);
                return;
        }
        if (sh->chain_error.code) {
                attest_fail(a, &sh->chain_error);
                return;
        }
        /* Park it with the chain's waiters until the chain is open. */
        attest_unlink(a, &a->sv->attests);
        a->stage = ATTEST_CHAIN;
        CVM_LIST_PREPEND(sh->chain_waiters, a);
        if (sh->chain_opening)
                return;
        chain_work *w = calloc(1, sizeof(*w));
        cvm_error err = {0};
        if (!w || !(w->dir = strdup(sh->amd_dir))) {
                free(w);
                cvm_error_set(&err, -ENOMEM, "out of memory");
                sh->chain_error = err;
                chain_done(&(uv_work_t){.data = NULL}, 0);
                return;
        }
        w->req.data = w;
        w->sh = sh;
        sh->chain_opening = true;
        sh->chain_work = w;
        int r = uv_queue_work(sh->loop, &w->req, chain_run, chain_done);
        if (r < 0) {
                w->result = cvm_error_set(&w->err, r, "cannot open the chain: %s", uv_strerror(r));
                chain_done(&w->req, 0);
        }
}

static void on_agent_attest(cvm_agent_client *c, const cvm_agent_attest_result *res,
                            const cvm_error *err, void *ud) {
        (void)c;
        sim_attest *a = ud;
        if (!res) {
                attest_fail(a, err);
                return;
        }
        a->public_key = malloc(res->public_key_len);
        if (!a->public_key) {
                cvm_error e;
                cvm_error_set(&e, -ENOMEM, "out of memory");
                attest_fail(a, &e);
                return;
        }
        memcpy(a->public_key, res->public_key, res->public_key_len);
        a->public_key_len = res->public_key_len;
        memcpy(a->report_data, res->report_data, sizeof(a->report_data));
        attest_need_chain(a);
}

static int sim_attest_fn(cvm_host *host, cvm_vm *vm, const uint8_t nonce[64], cvm_host_attest_cb cb,
                         void *userdata, cvm_error *err) {
        (void)host;
        sim_vm *sv = vm->host_data;
        if (!sv || !sv->agent || !sv->ready)
                return cvm_error_set(err, -EBUSY, "vm %s is not ready", vm->id);
        sim_attest *a = calloc(1, sizeof(*a));
        if (!a)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *a = (sim_attest){.sv = sv, .stage = ATTEST_AGENT, .cb = cb, .userdata = userdata};
        int r = cvm_agent_client_attest(sv->agent, nonce, on_agent_attest, a, err);
        if (r < 0) {
                free(a);
                return r;
        }
        CVM_LIST_PREPEND(sv->attests, a);
        return 0;
}

/* The VM is going: every pending attestation is answered now; parts still
 * on the scheduler or the PSP free themselves when they come back. */
static void attests_cancel(sim_vm *sv) {
        cvm_error e;
        cvm_error_set(&e, -ECANCELED, "vm %s was stopped during the attestation", sv->vm->id);
        while (sv->attests) {
                sim_attest *a = sv->attests;
                attest_unlink(a, &sv->attests);
                if (a->cb)
                        a->cb(sv->vm, NULL, &e, a->userdata);
                a->sv = NULL;
                if (a->stage == ATTEST_SCHED) {
                        cvm_sched_cancel(a->job);
                        attest_free(a);
                } else if (a->stage == ATTEST_AGENT) {
                        /* The agent client is freed with the VM: no answer will come. */
                        attest_free(a);
                }
                /* ATTEST_PSP: on_guest_request frees it. */
        }
        /* Waiters for the chain that belong to this VM are detached too. */
        for (sim_attest *a = sv->sh->chain_waiters; a; a = a->next)
                if (a->sv == sv) {
                        if (a->cb)
                                a->cb(sv->vm, NULL, &e, a->userdata);
                        a->sv = NULL;
                }
}

/* Teardown: stop the VM's processes, give its ASID back to the PSP, remove
 * its working directory (off the loop), then report. */

static void sim_vm_free(sim_vm *sv) {
        sim_host *sh = sv->sh;
        CVM_LIST_REMOVE(sh->vms, sv);
        cvm_timer_free(sv->timer);
        free(sv->workdir);
        free(sv);
}

/* The removal owns only its path, so it may outlive the VM and the host. */
typedef struct rm_work {
        uv_work_t req;
        char *path;
} rm_work;

static void rm_run(uv_work_t *req) {
        rm_tree(((rm_work *)req->data)->path);
}

static void rm_done(uv_work_t *req, int status) {
        (void)status;
        rm_work *w = req->data;
        free(w->path);
        free(w);
}

static void on_torn_down_timer(cvm_timer *t, void *ud) {
        (void)t;
        sim_vm *sv = ud;
        cvm_vm *vm = sv->vm;
        cvm_host_step_cb cb = sv->teardown_cb;
        vm->host_data = NULL;
        sim_vm_free(sv);
        cvm_host_step st = {0};
        cb(vm, &st);
}

/* The VM's processes are dead: remove its directory off the loop and report
 * on the next turn, never inside teardown (the host contract). */
static void finish_teardown(sim_vm *sv) {
        rm_work *w = calloc(1, sizeof(*w));
        if (w) {
                w->req.data = w;
                w->path = sv->workdir;
                if (uv_queue_work(sv->sh->loop, &w->req, rm_run, rm_done) == 0)
                        sv->workdir = NULL;
                else
                        free(w);
        }
        /* Without a worker, remove on the loop rather than leak the directory. */
        if (sv->workdir)
                rm_tree(sv->workdir);
        cvm_timer_free(sv->timer);
        sv->timer = NULL;
        if (cvm_timer_new(sv->sh->clock, on_torn_down_timer, sv, &sv->timer, NULL) < 0) {
                on_torn_down_timer(NULL, sv);
                return;
        }
        cvm_timer_start(sv->timer, 0);
}

/* An ASID on its way back: the DECOMMISSION runs when the scheduler lets it
 * (when no launch waits, unless ASIDs run short), after the VM is gone. */
typedef struct sim_release {
        sim_host *sh;
        uint32_t asid;
        char owner[CVM_VM_ID_SIZE];
        cvm_sched_job *job;
        struct sim_release *prev, *next;
} sim_release;

static void release_free(sim_release *rel) {
        sim_host *sh = rel->sh;
        CVM_LIST_REMOVE(sh->releases, rel);
        free(rel);
}

static void on_decommissioned(const cvm_psp_completion *c, void *ud) {
        sim_release *rel = ud;
        if (c->result < 0)
                log_warn("sim: DECOMMISSION of ASID %u failed: %s", c->asid, c->err->message);
        cvm_sched_done(rel->job, c->service_ns);
        release_free(rel);
}

static void on_release_turn(cvm_sched_job *job, void *ud) {
        (void)job;
        sim_release *rel = ud;
        cvm_error err = {0};
        if (cvm_psp_sim_decommission(rel->sh->psp, rel->asid, rel->owner, on_decommissioned, rel,
                                     &err) < 0) {
                log_warn("sim: cannot decommission ASID %u of %s: %s", rel->asid, rel->owner,
                         err.message);
                cvm_sched_done(rel->job, 0);
                release_free(rel);
        }
}

static void release_asid(sim_host *sh, uint32_t asid, const char *owner) {
        sim_release *rel = calloc(1, sizeof(*rel));
        cvm_error err = {0};
        if (!rel) {
                log_error("sim: out of memory: ASID %u of %s is not released", asid, owner);
                return;
        }
        rel->sh = sh;
        rel->asid = asid;
        snprintf(rel->owner, sizeof(rel->owner), "%s", owner);
        CVM_LIST_PREPEND(sh->releases, rel);
        if (!sh->base.sched) {
                on_release_turn(NULL, rel);
                return;
        }
        if (cvm_sched_submit(sh->base.sched, CVM_SCHED_RELEASE, sh->decommission_ns, owner,
                             on_release_turn, rel, &rel->job, &err) < 0) {
                log_warn("sim: cannot queue the release of ASID %u: %s; releasing now", asid,
                         err.message);
                on_release_turn(NULL, rel);
        }
}

static void kill_processes(sim_vm *sv) {
        /* Every accepted invocation and attestation gets its one answer, even
         * when the VM is stopped. */
        attests_cancel(sv);
        cvm_agent_client_free(sv->agent);
        sv->agent = NULL;
        if (sv->invokes) {
                cvm_error e;
                cvm_error_set(&e, -ECANCELED, "vm %s was stopped during the invocation",
                              sv->vm->id);
                while (sv->invokes) {
                        sim_invoke *si = sv->invokes;
                        invoke_unlink(si);
                        si->cb(sv->vm, NULL, &e, si->userdata);
                        free(si);
                }
        }
        if (sv->pid > 0)
                kill(-sv->pid, SIGKILL);
}

static void sim_teardown(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb) {
        sim_host *sh = (sim_host *)host;
        sim_vm *sv = vm->host_data;
        sv->tearing_down = true;
        sv->teardown_cb = cb;
        sv->step_cb = NULL;
        cvm_timer_stop(sv->timer);
        /* An unfinished launch gives back its own ASID. */
        cvm_psp_sim_launch_abort(sv->launch);
        sv->launch = NULL;
        kill_processes(sv);
        if (sv->asid)
                release_asid(sh, sv->asid, vm->id);
        finish_teardown(sv);
}

static uint32_t sim_asids_available(cvm_host *host) {
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(((sim_host *)host)->psp, &st);
        return st.asids_free + st.asids_dirty;
}

static json_t *sim_vm_json(cvm_host *host, cvm_vm *vm) {
        (void)host;
        sim_vm *sv = vm->host_data;
        if (!sv)
                return NULL;
        return json_pack("{s:s, s:i, s:i, s:s}", "type", "sim", "pid", (int)sv->pid, "asid",
                         (int)sv->asid, "workdir", sv->workdir);
}

static json_t *sim_psp_json(cvm_host *host) {
        sim_host *sh = (sim_host *)host;
        cvm_psp_sim_stats st;
        cvm_psp_sim_stats_get(sh->psp, &st);
        json_t *commands = json_object(), *pages = json_object();
        for (int i = 0; i < CVM_PSP_CMD_COUNT; i++)
                json_object_set_new(commands, cvm_psp_cmd_type_to_string((cvm_psp_cmd_type)i),
                                    json_integer((json_int_t)st.commands[i]));
        for (int i = 1; i <= CVM_SNP_PAGE_TYPE_MAX; i++)
                json_object_set_new(pages, cvm_psp_page_type_to_string((uint32_t)i),
                                    json_integer((json_int_t)st.pages[i]));
        enum { MAX_LISTED = 100 };
        cvm_psp_queue_entry entries[MAX_LISTED];
        size_t total = cvm_psp_sim_list(sh->psp, entries, MAX_LISTED);
        json_t *queue = json_array();
        for (size_t i = 0; i < total && i < MAX_LISTED; i++) {
                cvm_psp_queue_entry *e = &entries[i];
                json_t *j = json_pack("{s:s, s:s, s:b, s:f}", "command",
                                      cvm_psp_cmd_type_to_string(e->type), "owner", e->owner,
                                      "in_service", e->in_service, "waiting_ms",
                                      (double)((st.now_ns - e->submit_ns) / 1000) / 1e3);
                if (e->type == CVM_PSP_CMD_LAUNCH_UPDATE)
                        json_object_set_new(j, "page_type",
                                            json_string(cvm_psp_page_type_to_string(e->page_type)));
                json_array_append_new(queue, j);
        }
        uint64_t span = st.now_ns - st.since_ns;
        return json_pack("{s:s, s:s, s:b, s:I, s:I, s:f, s:f, s:o, s:o, s:I, s:I, s:{s:i, s:i, "
                         "s:i, s:i}, s:o}",
                         "host", "sim", "schedule", sh->cfg.schedule, "busy", st.busy,
                         "queue_depth", (json_int_t)st.queue_depth, "launches",
                         (json_int_t)st.launches, "busy_ms", (double)(st.busy_ns / 1000) / 1e3,
                         "utilisation", span ? (double)st.busy_ns / (double)span : 0.0, "commands",
                         commands, "pages", pages, "df_flushes", (json_int_t)st.df_flushes,
                         "failed", (json_int_t)st.failed, "asids", "total", (int)st.asids_total,
                         "free", (int)st.asids_free, "dirty", (int)st.asids_dirty, "in_use",
                         (int)st.asids_in_use, "queue", queue);
}

static void sigchld_closed(uv_handle_t *h) {
        free(h->data);
}

static int sim_free(cvm_host *host) {
        sim_host *sh = (sim_host *)host;
        if (!sh)
                return 0;
        /* Daemon exit: no callbacks (their owners are gone already). */
        for (sim_attest *a = sh->chain_waiters; a; a = a->next)
                a->cb = NULL;
        while (sh->vms) {
                sim_vm *sv = sh->vms;
                while (sv->invokes) {
                        sim_invoke *si = sv->invokes;
                        invoke_unlink(si);
                        free(si);
                }
                /* Attestations on the PSP are freed here too: the PSP is
                 * freed below without completing them. */
                while (sv->attests) {
                        sim_attest *a = sv->attests;
                        attest_unlink(a, &sv->attests);
                        if (a->stage == ATTEST_SCHED)
                                cvm_sched_cancel(a->job);
                        attest_free(a);
                }
                kill_processes(sv);
                if (sv->pid > 0)
                        waitpid(sv->pid, NULL, 0);
                rm_tree(sv->workdir);
                sv->vm->host_data = NULL;
                sim_vm_free(sv);
        }
        for (size_t i = 0; i < sh->n_pids; i++)
                waitpid(sh->pids[i], NULL, WNOHANG);
        uv_close((uv_handle_t *)&sh->sigchld, sigchld_closed);
        /* Attestations waiting for the chain are dropped (daemon exit: no callbacks);
         * a chain still being opened finishes on its own. */
        while (sh->chain_waiters) {
                sim_attest *a = sh->chain_waiters;
                attest_unlink(a, &sh->chain_waiters);
                attest_free(a);
        }
        if (sh->chain_work)
                sh->chain_work->sh = NULL;
        cvm_amd_chain_free(sh->chain);
        free(sh->chain_pem);
        free(sh->amd_dir);
        while (sh->releases) {
                cvm_sched_cancel(sh->releases->job);
                release_free(sh->releases);
        }
        cvm_psp_sim_free(sh->psp);
        sim_config_done(&sh->cfg);
        free(sh->pids);
        free(sh->root);
        /* sh itself is freed when the signal handle has closed. */
        return 0;
}

static const cvm_host_ops sim_ops = {
        .name = "sim",
        .prepare = sim_prepare,
        .launch = sim_launch,
        .boot = sim_boot,
        .invoke = sim_invoke_fn,
        .teardown = sim_teardown,
        .vm_json = sim_vm_json,
        .attest = sim_attest_fn,
        .psp_json = sim_psp_json,
        .asids_available = sim_asids_available,
        .free = sim_free,
};

int cvm_sim_host_new(uv_loop_t *loop, cvm_clock *clock, json_t *sim, json_t *psp,
                     const char *state_dir, cvm_host **ret, cvm_error *err) {
        sim_config cfg;
        int r = sim_config_parse(sim, psp, &cfg, err);
        if (r < 0)
                return r;
        if (access(cfg.agent, X_OK) < 0) {
                r = cvm_error_set_errno(err, -errno, "sim: the agent %s cannot be run",
                                        CVM_QUOTE(cfg.agent));
                sim_config_done(&cfg);
                return r;
        }
        sim_host *sh = calloc(1, sizeof(*sh));
        if (!sh) {
                sim_config_done(&cfg);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        sh->cfg = cfg;
        sh->base.ops = &sim_ops;
        sh->loop = loop;
        sh->clock = clock;
        if (asprintf(&sh->root, "%s/sim", state_dir) < 0) {
                sh->root = NULL;
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        }
        if (r >= 0) {
                /* Working directories left by a daemon that died are stale. */
                rm_tree(sh->root);
                if (mkdir(sh->root, 0700) < 0 && errno != EEXIST)
                        r = cvm_error_set_errno(err, -errno, "cannot create %s",
                                                CVM_QUOTE(sh->root));
        }
        if (r >= 0)
                r = cvm_psp_sim_new(clock, &cfg.psp, &sh->psp, err);
        sh->decommission_ns = cfg.psp.costs.decommission_ns;
        sh->guest_request_ns = cfg.psp.costs.guest_request_ns;
        if (r >= 0 && asprintf(&sh->amd_dir, "%s/sim-amd", state_dir) < 0) {
                sh->amd_dir = NULL;
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        }
        if (r < 0) {
                cvm_psp_sim_free(sh->psp);
                sim_config_done(&sh->cfg);
                free(sh->root);
                free(sh);
                return r;
        }
        uv_signal_init(loop, &sh->sigchld);
        sh->sigchld.data = sh;
        uv_signal_start(&sh->sigchld, on_sigchld, SIGCHLD);
        log_info("sim host: %u ASIDs, PSP schedule %s, agent %s", cfg.psp.asids, cfg.schedule,
                 CVM_QUOTE(cfg.agent));
        *ret = &sh->base;
        return 0;
}
