#include "libvirt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent_client.h"
#include "cleanup.h"
#include "file.h"
#include "json.h"
#include "libvirt_xml.h"
#include "list.h"
#include "log.h"
#include "vm.h"

#define LV_QEMU_USER "libvirt-qemu" /* Debian's build of libvirt runs QEMU as this user. */
#define LV_WORKERS_MAX 32u
#define LV_MAX_RESPONSE (6u << 20) /* As the sim: the stderr tail fits beside it in a frame. */
#define LV_NAME_MAX 64
#define LV_CERT_CHAIN_MAX (1u << 20)

typedef enum lv_snp_mode { SNP_AUTO, SNP_ON, SNP_OFF } lv_snp_mode;
typedef enum lv_accel { ACCEL_AUTO, ACCEL_TCG, ACCEL_KVM } lv_accel;

typedef struct lv_config {
        char *uri;
        cvm_libvirt_machine machine;
        lv_accel accel;
        char *log_dir; /* Serial consoles; NULL: STATE_DIR/libvirt-vms. */
        lv_snp_mode snp;
        uint32_t boot_timeout_ms; /* Resume to the agent's HELLO. */
        uint32_t stop_timeout_ms; /* At exit, for the destroys and any call in flight. */
        uint32_t call_timeout_ms; /* A launch step's call (define and start, resume). */
        uint32_t heartbeat_ms;
        uint32_t workers;    /* Threads making libvirt calls. */
        bool plain_firmware; /* Plain guests boot the image's firmware too (else the BIOS). */
        char *cert_chain;    /* PEM file (VCEK, ASK, ARK) relayed with SNP reports. */
} lv_config;

typedef struct lv_host lv_host;
typedef struct lv_vm lv_vm;

typedef enum lv_job_kind {
        JOB_PREPARE, /* Define, then start paused. */
        JOB_RESUME,  /* The launch: QEMU's SNP launch runs here. */
        JOB_DESTROY, /* Destroy and undefine. */
        JOB_REAP,    /* Destroy and undefine every domain an earlier cvmd left. */
} lv_job_kind;

/* A libvirt call for a worker. It carries copies of what the call needs so
 * a worker never touches loop state; vm is used on the loop only. */
typedef struct lv_job {
        lv_job_kind kind;
        lv_vm *vm; /* NULL: nobody waits (reaping, daemon exit). */
        char name[LV_NAME_MAX];
        char *xml;
        char *serial_log; /* Created before the define, so QEMU can open it. */
        int result;
        cvm_error err;
        uint64_t queued_ns, started_ns, finished_ns; /* uv_hrtime: any thread may read it. */
        uint32_t slot;                               /* In lv_host.running while a worker has it. */
        struct lv_job *next;
} lv_job;

/* A domain stopped: from libvirt's event thread to the loop. */
typedef struct lv_event {
        char name[LV_NAME_MAX];
        int event, detail;
        struct lv_event *next;
} lv_event;

typedef struct lv_invoke {
        lv_vm *lv;
        cvm_host_invoke_cb cb;
        void *userdata;
        struct lv_invoke *prev, *next;
} lv_invoke;

typedef struct lv_attest {
        lv_vm *lv;
        cvm_host_attest_cb cb;
        void *userdata;
        struct lv_attest *prev, *next;
} lv_attest;

struct lv_vm {
        lv_host *lh;
        cvm_vm *vm;
        char name[LV_NAME_MAX];
        char *socket_path;
        char *serial_log;
        lv_job *job;     /* The one libvirt call in flight for this VM, if any. */
        lv_job *destroy; /* Made with the VM, so a teardown cannot fail for memory. */
        cvm_host_step_cb step_cb;
        uint64_t step_started_ns;
        uint64_t resume_ns;    /* How long the resume (the launch) took. */
        cvm_timer *timer;      /* The boot's deadline. */
        cvm_timer *call_timer; /* The deadline of the prepare's or launch's call. */
        cvm_agent_client *agent;
        lv_invoke *invokes;
        lv_attest *attests;
        bool defined; /* The prepare job ran: there may be a domain to destroy. */
        bool ready;
        bool dead;     /* The domain stopped on its own. */
        bool keep_log; /* Something went wrong: the serial log stays for the operator. */
        bool tearing_down;
        cvm_host_step_cb teardown_cb;
        lv_vm *prev, *next;
};

struct lv_host {
        cvm_host base;
        uv_loop_t *loop;
        cvm_clock *clock;
        lv_config cfg;
        char *vm_dir; /* Agent sockets (and serial logs unless log_dir says otherwise). */
        char *log_dir;
        char *chain_pem;
        bool kvm, snp;
        cvm_libvirt_caps caps;
        virConnectPtr conn;
        int lifecycle_cb_id;
        lv_vm *vms;
        size_t n_domains; /* VMs with a domain defined (for SNP ASIDs). */
        uint64_t launches, launch_ns_total;
        /* Shared with the threads, under mu. */
        pthread_mutex_t mu;
        pthread_cond_t cond;
        lv_job *queue, *queue_tail;
        lv_job *done;
        lv_event *events;
        bool workers_exit;                     /* Workers leave once the queue is empty. */
        pthread_t workers[2 * LV_WORKERS_MAX]; /* At exit, destroyers join the workers. */
        lv_job *running[2 * LV_WORKERS_MAX];   /* The calls in flight, to name stuck ones. */
        uint32_t n_workers;
        /* A call never returned at exit: its thread still uses this struct,
         * so nothing shared is freed and no thread signals the loop. */
        bool abandoned;
        uv_async_t async;
        /* libvirt's event loop. */
        pthread_t event_thread;
        bool event_thread_started;
        atomic_bool event_stop;
};

/* Configuration. */

static const char *const lv_fields[] = {"uri",
                                        "machine",
                                        "accel",
                                        "log_dir",
                                        "snp",
                                        "boot_timeout_ms",
                                        "workers",
                                        "plain_firmware",
                                        "heartbeat_ms",
                                        "cert_chain",
                                        "stop_timeout_ms",
                                        "call_timeout_ms",
                                        NULL};

static void lv_config_done(lv_config *c) {
        free(c->uri);
        free(c->log_dir);
        free(c->cert_chain);
}

static int lv_config_parse(json_t *s, lv_config *ret, cvm_error *err) {
        lv_config c = {.machine = CVM_LIBVIRT_MACHINE_PC,
                       .accel = ACCEL_AUTO,
                       .snp = SNP_AUTO,
                       .boot_timeout_ms = 60000,
                       /* libvirt gives a destroy up to 30 s to take its
                        * domain from another call and ~10 s to kill QEMU;
                        * with the default shutdown grace (10 s) the exit
                        * ends within the unit's TimeoutStopSec (60 s). */
                       .stop_timeout_ms = 45000,
                       .call_timeout_ms = 120000,
                       .heartbeat_ms = 1000,
                       .workers = 4};
        const char *uri = NULL, *machine = NULL, *accel = NULL, *log_dir = NULL, *snp = NULL,
                   *chain = NULL;
        int r;
        if (s) {
                if ((r = cvm_json_check_fields(s, "libvirt", lv_fields, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "uri", false, &uri, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "machine", false, &machine, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "accel", false, &accel, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "log_dir", false, &log_dir, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "snp", false, &snp, err)) < 0 ||
                    (r = cvm_json_get_string(s, "libvirt", "cert_chain", false, &chain, err)) < 0 ||
                    (r = cvm_json_get_bool(s, "libvirt", "plain_firmware", false, &c.plain_firmware,
                                           err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(s, "libvirt", "boot_timeout_ms", 1000, 600000,
                                          &c.boot_timeout_ms, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(s, "libvirt", "stop_timeout_ms", 1000, 600000,
                                          &c.stop_timeout_ms, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(s, "libvirt", "call_timeout_ms", 1000, 3600000,
                                          &c.call_timeout_ms, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(s, "libvirt", "heartbeat_ms", 0, 600000, &c.heartbeat_ms,
                                          err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(s, "libvirt", "workers", 1, LV_WORKERS_MAX, &c.workers,
                                          err)) < 0)
                        return r;
        }
        if (uri && !*uri)
                return cvm_error_set(err, -EINVAL, "field 'libvirt.uri' must not be empty");
        if (machine && cvm_libvirt_machine_from_string(machine, &c.machine) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "field 'libvirt.machine' must be \"pc\", \"q35\" or "
                                     "\"microvm\", not %s",
                                     CVM_QUOTE(machine));
        if (accel) {
                if (strcmp(accel, "tcg") == 0)
                        c.accel = ACCEL_TCG;
                else if (strcmp(accel, "kvm") == 0)
                        c.accel = ACCEL_KVM;
                else
                        return cvm_error_set(err, -EINVAL,
                                             "field 'libvirt.accel' must be \"tcg\" or \"kvm\", "
                                             "not %s",
                                             CVM_QUOTE(accel));
        }
        if (snp) {
                if (strcmp(snp, "auto") == 0)
                        c.snp = SNP_AUTO;
                else if (strcmp(snp, "on") == 0)
                        c.snp = SNP_ON;
                else if (strcmp(snp, "off") == 0)
                        c.snp = SNP_OFF;
                else
                        return cvm_error_set(err, -EINVAL,
                                             "field 'libvirt.snp' must be \"auto\", \"on\" or "
                                             "\"off\", not %s",
                                             CVM_QUOTE(snp));
        }
        if (c.snp == SNP_ON && c.accel == ACCEL_TCG)
                return cvm_error_set(err, -EINVAL,
                                     "field 'libvirt.snp' is \"on\" but 'libvirt.accel' is "
                                     "\"tcg\": SEV-SNP guests need KVM");
        if (log_dir && log_dir[0] != '/')
                return cvm_error_set(err, -EINVAL,
                                     "field 'libvirt.log_dir' must be an absolute path");
        if (chain && chain[0] != '/')
                return cvm_error_set(err, -EINVAL,
                                     "field 'libvirt.cert_chain' must be an absolute path");
        c.uri = uri ? strdup(uri) : NULL;
        c.log_dir = log_dir ? strdup(log_dir) : NULL;
        c.cert_chain = chain ? strdup(chain) : NULL;
        if ((uri && !c.uri) || (log_dir && !c.log_dir) || (chain && !c.cert_chain)) {
                lv_config_done(&c);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        *ret = c;
        return 0;
}

int cvm_libvirt_check_config(json_t *section, cvm_error *err) {
        lv_config c;
        int r = lv_config_parse(section, &c, err);
        if (r >= 0)
                lv_config_done(&c);
        return r;
}

/* libvirt errors: what failed, then libvirt's last error of this thread. */
__attribute__((format(printf, 2, 3))) static int lv_error(cvm_error *err, const char *fmt, ...) {
        virErrorPtr e = virGetLastError();
        char what[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        int code = -EIO;
        if (e && (e->code == VIR_ERR_NO_DOMAIN))
                code = -ENOENT;
        else if (e && e->code == VIR_ERR_OPERATION_TIMEOUT)
                code = -ETIMEDOUT;
        else if (e && (e->code == VIR_ERR_NO_MEMORY))
                code = -ENOMEM;
        return cvm_error_set(err, code, "%s: %s", what,
                             e && e->message ? e->message : "unknown libvirt error");
}

/* Workers. */

static void job_free(lv_job *job);

static void push_done(lv_host *lh, lv_job *job) {
        job->finished_ns = uv_hrtime();
        pthread_mutex_lock(&lh->mu);
        lh->running[job->slot] = NULL;
        bool abandoned = lh->abandoned;
        if (!abandoned) {
                job->next = lh->done;
                lh->done = job;
                /* Under mu: once abandoned is set, the handle may be closed. */
                uv_async_send(&lh->async);
        }
        pthread_mutex_unlock(&lh->mu);
        if (abandoned)
                job_free(job);
}

/* Destroys (if running) and undefines one domain; a missing domain is fine. */
static int destroy_domain(virConnectPtr conn, const char *name, cvm_error *err) {
        virDomainPtr dom = virDomainLookupByName(conn, name);
        if (!dom) {
                virErrorPtr e = virGetLastError();
                if (e && e->code == VIR_ERR_NO_DOMAIN)
                        return 0;
                return lv_error(err, "cannot look up domain %s", name);
        }
        int r = 0;
        if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0) {
                virErrorPtr e = virGetLastError();
                /* It may have stopped on its own meanwhile. */
                if (!e || e->code != VIR_ERR_OPERATION_INVALID)
                        r = lv_error(err, "cannot destroy domain %s", name);
        }
        if (r >= 0 && virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_NVRAM) < 0 &&
            virDomainUndefine(dom) < 0)
                r = lv_error(err, "cannot undefine domain %s", name);
        virDomainFree(dom);
        return r;
}

static void run_prepare(lv_host *lh, lv_job *job) {
        /* QEMU (not root) opens the serial log; it must exist with an owner libvirt can label. */
        int fd = open(job->serial_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0) {
                job->result = cvm_error_set_errno(&job->err, -errno, "cannot create %s",
                                                  CVM_QUOTE(job->serial_log));
                return;
        }
        close(fd);
        virDomainPtr dom = virDomainDefineXML(lh->conn, job->xml);
        if (!dom) {
                job->result = lv_error(&job->err, "cannot define domain %s", job->name);
                return;
        }
        /* Paused: the launch step decides when the guest's vCPUs (and an SNP
         * guest's PSP work) start. */
        if (virDomainCreateWithFlags(dom, VIR_DOMAIN_START_PAUSED) < 0) {
                job->result = lv_error(&job->err, "cannot start domain %s", job->name);
                /* Best effort: the teardown's destroy job undefines it anyway. */
                virDomainUndefine(dom);
        }
        virDomainFree(dom);
}

static void run_resume(lv_host *lh, lv_job *job) {
        virDomainPtr dom = virDomainLookupByName(lh->conn, job->name);
        if (!dom) {
                job->result = lv_error(&job->err, "cannot look up domain %s", job->name);
                return;
        }
        if (virDomainResume(dom) < 0)
                job->result = lv_error(&job->err, "cannot resume domain %s", job->name);
        virDomainFree(dom);
}

/* Domains named cvmd-* that carry our metadata belong to an earlier cvmd:
 * nobody will ever use them again. */
static void run_reap(lv_host *lh, lv_job *job) {
        virDomainPtr *doms = NULL;
        int n = virConnectListAllDomains(lh->conn, &doms, 0);
        if (n < 0) {
                job->result = lv_error(&job->err, "cannot list domains");
                return;
        }
        for (int i = 0; i < n; i++) {
                const char *name = virDomainGetName(doms[i]);
                char *meta = NULL;
                if (name &&
                    strncmp(name, CVM_LIBVIRT_NAME_PREFIX, strlen(CVM_LIBVIRT_NAME_PREFIX)) == 0)
                        meta = virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT,
                                                    CVM_LIBVIRT_XMLNS, 0);
                if (meta) {
                        cvm_error e = {0};
                        if (destroy_domain(lh->conn, name, &e) < 0)
                                log_warn("libvirt: cannot remove domain %s left by an earlier "
                                         "cvmd: %s",
                                         name, e.message);
                        else
                                log_info("libvirt: destroyed domain %s left by an earlier cvmd",
                                         name);
                        free(meta);
                }
                virDomainFree(doms[i]);
        }
        free(doms);
}

static void *worker_main(void *arg) {
        lv_host *lh = arg;
        for (;;) {
                pthread_mutex_lock(&lh->mu);
                while (!lh->queue && !lh->workers_exit)
                        pthread_cond_wait(&lh->cond, &lh->mu);
                lv_job *job = lh->queue;
                if (!job) {
                        pthread_mutex_unlock(&lh->mu);
                        return NULL;
                }
                lh->queue = job->next;
                if (!lh->queue)
                        lh->queue_tail = NULL;
                /* There are as many slots as threads, so one is free. */
                for (job->slot = 0; lh->running[job->slot]; job->slot++)
                        ;
                lh->running[job->slot] = job;
                job->started_ns = uv_hrtime(); /* Read under mu by abandon_calls. */
                pthread_mutex_unlock(&lh->mu);
                job->next = NULL;
                switch (job->kind) {
                case JOB_PREPARE: run_prepare(lh, job); break;
                case JOB_RESUME: run_resume(lh, job); break;
                case JOB_DESTROY:
                        job->result = destroy_domain(lh->conn, job->name, &job->err);
                        break;
                case JOB_REAP: run_reap(lh, job); break;
                }
                push_done(lh, job);
        }
}

/* Adds count worker threads (at most LV_WORKERS_MAX at a time). */
static int start_workers(lv_host *lh, uint32_t count, cvm_error *err) {
        for (uint32_t i = 0; i < count && lh->n_workers < CVM_ARRAY_SIZE(lh->workers); i++) {
                int r = pthread_create(&lh->workers[lh->n_workers], NULL, worker_main, lh);
                if (r != 0)
                        return cvm_error_set_errno(err, -r, "cannot start a libvirt worker thread");
                lh->n_workers++;
        }
        return 0;
}

/* Lets the workers finish the queue and joins them; a worker still in a
 * call at the deadline (CLOCK_MONOTONIC) is left to it. Returns how many were. */
static uint32_t join_workers(lv_host *lh, const struct timespec *deadline) {
        pthread_mutex_lock(&lh->mu);
        lh->workers_exit = true;
        pthread_cond_broadcast(&lh->cond);
        pthread_mutex_unlock(&lh->mu);
        uint32_t stuck = 0;
        for (uint32_t i = 0; i < lh->n_workers; i++)
                if (pthread_clockjoin_np(lh->workers[i], NULL, CLOCK_MONOTONIC, deadline) != 0) {
                        pthread_detach(lh->workers[i]);
                        stuck++;
                }
        lh->n_workers = 0;
        return stuck;
}

static const char *job_kind_name(lv_job_kind kind) {
        switch (kind) {
        case JOB_PREPARE: return "define and start";
        case JOB_RESUME: return "resume";
        case JOB_DESTROY: return "destroy";
        case JOB_REAP: return "look for old domains";
        }
        return "call";
}

/* Says which calls never returned, and stops every thread from touching the
 * loop: their answers are dropped from now on. */
static void abandon_calls(lv_host *lh) {
        char calls[1024] = "";
        size_t len = 0;
        unsigned count = 0;
        uint64_t now = uv_hrtime();
        pthread_mutex_lock(&lh->mu);
        lh->abandoned = true;
        for (size_t i = 0; i < CVM_ARRAY_SIZE(lh->running); i++) {
                const lv_job *j = lh->running[i];
                if (!j)
                        continue;
                count++;
                if (len >= sizeof(calls))
                        continue;
                int n = snprintf(calls + len, sizeof(calls) - len, "%s%s of %s for %.0f s",
                                 len ? ", " : "", job_kind_name(j->kind),
                                 j->name[0] ? j->name : "all domains",
                                 (double)(now - j->started_ns) / 1e9);
                if (n > 0)
                        len += (size_t)n;
        }
        pthread_mutex_unlock(&lh->mu);
        log_error("libvirt: %u call(s) did not return within %u ms of the shutdown%s%s%s; "
                  "exiting without them: domains may be left running (the next cvmd "
                  "destroys them)",
                  count, lh->cfg.stop_timeout_ms, len ? " (" : "", calls, len ? ")" : "");
}

static void job_free(lv_job *job) {
        if (!job)
                return;
        free(job->xml);
        free(job->serial_log);
        free(job);
}

static lv_job *job_new(lv_job_kind kind, const char *name) {
        lv_job *job = calloc(1, sizeof(*job));
        if (!job)
                return NULL;
        job->kind = kind;
        snprintf(job->name, sizeof(job->name), "%s", name);
        return job;
}

static void submit(lv_host *lh, lv_job *job) {
        job->queued_ns = uv_hrtime();
        pthread_mutex_lock(&lh->mu);
        if (lh->queue_tail)
                lh->queue_tail->next = job;
        else
                lh->queue = job;
        lh->queue_tail = job;
        pthread_cond_signal(&lh->cond);
        pthread_mutex_unlock(&lh->mu);
}

/* Takes a job off the queue if no worker has it yet. */
static bool unqueue(lv_host *lh, lv_job *job) {
        bool found = false;
        pthread_mutex_lock(&lh->mu);
        for (lv_job **p = &lh->queue, *prev = NULL; *p; prev = *p, p = &(*p)->next)
                if (*p == job) {
                        *p = job->next;
                        if (lh->queue_tail == job)
                                lh->queue_tail = prev;
                        found = true;
                        break;
                }
        pthread_mutex_unlock(&lh->mu);
        return found;
}

/* libvirt's event loop: the embedded driver's QEMU monitors run on it too,
 * so it runs from before the connection opens until after it closes. */

static pthread_once_t event_impl_once = PTHREAD_ONCE_INIT;
static int event_impl_result;

static void register_event_impl(void) {
        event_impl_result = virEventRegisterDefaultImpl();
}

/* libvirt prints every error to stderr unless told otherwise; cvmd reports
 * the ones that matter itself, with context. */
static void quiet_errors(void *opaque, virErrorPtr e) {
        (void)opaque;
        (void)e;
}

static void *event_main(void *arg) {
        lv_host *lh = arg;
        while (!atomic_load(&lh->event_stop))
                if (virEventRunDefaultImpl() < 0)
                        log_warn("libvirt: the event loop failed: %s", virGetLastErrorMessage());
        return NULL;
}

static void wake_timeout(int timer, void *opaque) {
        (void)timer;
        (void)opaque;
}

static void stop_event_thread(lv_host *lh) {
        if (!lh->event_thread_started)
                return;
        atomic_store(&lh->event_stop, true);
        /* A timer due now wakes virEventRunDefaultImpl so it sees the flag. */
        int t = virEventAddTimeout(0, wake_timeout, NULL, NULL);
        pthread_join(lh->event_thread, NULL);
        if (t >= 0)
                virEventRemoveTimeout(t);
        lh->event_thread_started = false;
}

/* On libvirt's event thread: only hand the event over. */
static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque) {
        (void)conn;
        lv_host *lh = opaque;
        if (event != VIR_DOMAIN_EVENT_STOPPED && event != VIR_DOMAIN_EVENT_CRASHED)
                return 0;
        const char *name = virDomainGetName(dom);
        if (!name || strncmp(name, CVM_LIBVIRT_NAME_PREFIX, strlen(CVM_LIBVIRT_NAME_PREFIX)) != 0)
                return 0;
        lv_event *ev = calloc(1, sizeof(*ev));
        if (!ev) {
                log_error("libvirt: out of memory: the stop of domain %s is lost", name);
                return 0;
        }
        snprintf(ev->name, sizeof(ev->name), "%s", name);
        ev->event = event;
        ev->detail = detail;
        pthread_mutex_lock(&lh->mu);
        bool abandoned = lh->abandoned;
        if (!abandoned) {
                ev->next = lh->events;
                lh->events = ev;
                uv_async_send(&lh->async); /* Under mu, as in push_done. */
        }
        pthread_mutex_unlock(&lh->mu);
        if (abandoned)
                free(ev);
        return 0;
}

/* Steps, on the loop. */

static void step_done(lv_vm *lv, int result, const cvm_error *err, uint64_t psp_wait,
                      uint64_t psp) {
        cvm_host_step_cb cb = lv->step_cb;
        lv->step_cb = NULL;
        if (!cb)
                return;
        if (result < 0)
                lv->keep_log = true;
        cvm_host_step st = {.result = result,
                            .err = err,
                            .duration_ns = cvm_clock_now(lv->lh->clock) - lv->step_started_ns,
                            .psp_wait_ns = psp_wait,
                            .psp_ns = psp};
        cb(lv->vm, &st);
}

static void start_step(lv_vm *lv, cvm_host_step_cb cb) {
        lv->step_cb = cb;
        lv->step_started_ns = cvm_clock_now(lv->lh->clock);
}

static void vm_unlink_free(lv_vm *lv) {
        lv_host *lh = lv->lh;
        CVM_LIST_REMOVE(lh->vms, lv);
        cvm_timer_free(lv->timer);
        cvm_timer_free(lv->call_timer);
        job_free(lv->destroy);
        free(lv->socket_path);
        free(lv->serial_log);
        free(lv);
}

static void invoke_unlink(lv_invoke *li) {
        lv_vm *lv = li->lv;
        CVM_LIST_REMOVE(lv->invokes, li);
}

static void attest_unlink(lv_attest *a) {
        lv_vm *lv = a->lv;
        CVM_LIST_REMOVE(lv->attests, a);
}

/* Every accepted invocation and attestation gets its one answer. */
static void drop_agent(lv_vm *lv, int code, const char *why) {
        cvm_agent_client_free(lv->agent);
        lv->agent = NULL;
        cvm_error e;
        cvm_error_set(&e, code, "vm %s %s", lv->vm->id, why);
        while (lv->invokes) {
                lv_invoke *li = lv->invokes;
                invoke_unlink(li);
                li->cb(lv->vm, NULL, &e, li->userdata);
                free(li);
        }
        while (lv->attests) {
                lv_attest *a = lv->attests;
                attest_unlink(a);
                a->cb(lv->vm, NULL, &e, a->userdata);
                free(a);
        }
}

/* The VM died outside teardown: fail its step, or tell the owner, once. */
static void report_lost(lv_vm *lv, const cvm_error *why) {
        if (lv->ready && lv->lh->base.on_lost)
                lv->lh->base.on_lost(lv->vm, why, lv->lh->base.userdata);
}

static void vm_died(lv_vm *lv, const cvm_error *why) {
        if (lv->tearing_down || lv->dead)
                return;
        lv->dead = true;
        lv->keep_log = true;
        cvm_timer_stop(lv->timer);
        /* Before its pending requests fail (see cvm_host.on_lost). */
        report_lost(lv, why);
        drop_agent(lv, why->code, "died");
        if (lv->step_cb) {
                /* A job in flight reports when it comes back (see on_job_done). */
                if (!lv->job)
                        step_done(lv, why->code, why, 0, 0);
                return;
        }
        lv_host *lh = lv->lh;
        if (lv->ready && lh->base.on_died)
                lh->base.on_died(lv->vm, why, lh->base.userdata);
}

static void queue_destroy(lv_vm *lv);

static void on_job_done(lv_host *lh, lv_job *job) {
        lv_vm *lv = job->vm;
        if (job->kind == JOB_REAP) {
                if (job->result < 0)
                        log_warn("libvirt: cannot look for domains of an earlier cvmd: %s",
                                 job->err.message);
                job_free(job);
                return;
        }
        if (!lv) {
                job_free(job);
                return;
        }
        lv->job = NULL;
        cvm_timer_stop(lv->call_timer);
        if (job->kind == JOB_DESTROY) {
                if (job->result < 0)
                        log_warn("libvirt: %s", job->err.message);
                if (lv->defined && lh->n_domains)
                        lh->n_domains--;
                unlink(lv->socket_path);
                if (!lv->keep_log)
                        unlink(lv->serial_log);
                cvm_vm *vm = lv->vm;
                cvm_host_step_cb cb = lv->teardown_cb;
                vm->host_data = NULL;
                vm_unlink_free(lv);
                job_free(job);
                cvm_host_step st = {0};
                cb(vm, &st);
                return;
        }
        if (job->kind == JOB_PREPARE) {
                lv->defined = true;
                lh->n_domains++;
        }
        if (lv->tearing_down) {
                job_free(job);
                queue_destroy(lv);
                return;
        }
        cvm_error e;
        if (job->result < 0) {
                e = job->err;
                job_free(job);
                cvm_error_prefix(&e, "vm %s: ", lv->vm->id);
                step_done(lv, e.code, &e, 0, 0);
                return;
        }
        if (lv->dead) {
                cvm_error_set(&e, -ECONNRESET, "vm %s: its domain stopped during the %s",
                              lv->vm->id, job->kind == JOB_PREPARE ? "prepare" : "launch");
                job_free(job);
                step_done(lv, e.code, &e, 0, 0);
                return;
        }
        uint64_t wait = job->started_ns - job->queued_ns;
        uint64_t took = job->finished_ns - job->started_ns;
        if (job->kind == JOB_RESUME) {
                lv->resume_ns = took;
                lh->launches++;
                lh->launch_ns_total += took;
                log_debug("libvirt: %s resumed in %.1f ms", lv->name, (double)took / 1e6);
        }
        /* Only an SNP guest's resume is PSP work (QEMU's LAUNCH_UPDATEs to
         * LAUNCH_FINISH); a plain guest has none to report. */
        bool psp = job->kind == JOB_RESUME && lh->snp;
        job_free(job);
        step_done(lv, 0, NULL, psp ? wait : 0, psp ? took : 0);
}

static const char *stop_reason(int event, int detail) {
        if (event == VIR_DOMAIN_EVENT_CRASHED)
                return "crashed";
        switch (detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "shut down";
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "was destroyed";
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "crashed";
        case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "failed (QEMU exited)";
        default: return "stopped";
        }
}

static void on_async(uv_async_t *h) {
        lv_host *lh = h->data;
        pthread_mutex_lock(&lh->mu);
        lv_job *done = lh->done;
        lv_event *events = lh->events;
        lh->done = NULL;
        lh->events = NULL;
        pthread_mutex_unlock(&lh->mu);
        while (done) {
                lv_job *j = done;
                done = j->next;
                on_job_done(lh, j);
        }
        while (events) {
                lv_event *ev = events;
                events = ev->next;
                lv_vm *lv = lh->vms;
                while (lv && strcmp(lv->name, ev->name) != 0)
                        lv = lv->next;
                if (lv) {
                        cvm_error e;
                        cvm_error_set(&e, -ECONNRESET,
                                      "vm %s: its domain %s (see the serial log %s)", lv->vm->id,
                                      stop_reason(ev->event, ev->detail), lv->serial_log);
                        vm_died(lv, &e);
                }
                free(ev);
        }
}

/* A launch step's call that does not return (libvirt waits on a guest's
 * monitor without a timeout) fails its step; the VM's teardown then waits
 * for the call and destroys the domain once it has returned. */
static void on_call_timeout(cvm_timer *t, void *ud) {
        (void)t;
        lv_vm *lv = ud;
        if (!lv->job || !lv->step_cb)
                return;
        cvm_error e;
        cvm_error_set(&e, -ETIMEDOUT,
                      "vm %s: libvirt's %s of domain %s did not complete within %" PRIu32 " ms",
                      lv->vm->id, job_kind_name(lv->job->kind), lv->name,
                      lv->lh->cfg.call_timeout_ms);
        step_done(lv, e.code, &e, 0, 0);
}

static void submit_step_call(lv_vm *lv, lv_job *job) {
        job->vm = lv;
        lv->job = job;
        submit(lv->lh, job);
        cvm_timer_start(lv->call_timer, (uint64_t)lv->lh->cfg.call_timeout_ms * CVM_NSEC_PER_MSEC);
}

static void queue_destroy(lv_vm *lv) {
        lv_job *job = CVM_TAKE_PTR(lv->destroy);
        job->vm = lv;
        lv->job = job;
        submit(lv->lh, job);
}

static int lv_prepare(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        lv_host *lh = (lv_host *)host;
        const cvm_image_spec *spec = &vm->image->spec;
        lv_vm *lv = calloc(1, sizeof(*lv));
        if (!lv)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        lv->lh = lh;
        lv->vm = vm;
        int r = cvm_libvirt_domain_name(vm->id, lv->name, sizeof(lv->name), err);
        if (r >= 0 && (asprintf(&lv->socket_path, "%s/%s.sock", lh->vm_dir, vm->id) < 0 ||
                       asprintf(&lv->serial_log, "%s/%s.serial.log", lh->log_dir, vm->id) < 0))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0 && strlen(lv->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                r = cvm_error_set(err, -ENAMETOOLONG, "agent socket path %s is too long",
                                  CVM_QUOTE(lv->socket_path));
        cvm_libvirt_domain d = {
                .vm_id = vm->id,
                .function = vm->function,
                .kvm = lh->kvm,
                .machine = lh->cfg.machine,
                .firmware = lh->snp || lh->cfg.plain_firmware ? spec->firmware : NULL,
                .kernel = spec->kernel,
                .initrd = spec->initrd,
                .cmdline = spec->cmdline,
                .vcpus = spec->vcpus,
                .memory_mib = spec->memory_mib,
                .vcpu_type = lh->snp ? spec->vcpu_type : NULL,
                .serial_log = lv->serial_log,
                .agent_socket = lv->socket_path,
                .snp = lh->snp,
                .guest_policy = spec->guest_policy,
                .cbitpos = lh->caps.cbitpos,
                .reduced_phys_bits = lh->caps.reduced_phys_bits,
        };
        lv_job *job = NULL;
        if (r >= 0 && !(job = job_new(JOB_PREPARE, lv->name)))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0)
                r = cvm_libvirt_domain_xml(&d, &job->xml, err);
        if (r >= 0 && !(job->serial_log = strdup(lv->serial_log)))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0 && !(lv->destroy = job_new(JOB_DESTROY, lv->name)))
                r = cvm_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0)
                r = cvm_timer_new(lh->clock, on_call_timeout, lv, &lv->call_timer, err);
        if (r < 0) {
                job_free(job);
                job_free(lv->destroy);
                free(lv->socket_path);
                free(lv->serial_log);
                free(lv);
                return r;
        }
        /* A stale socket from a crashed run would make QEMU's bind fail. */
        unlink(lv->socket_path);
        vm->host_data = lv;
        CVM_LIST_PREPEND(lh->vms, lv);
        start_step(lv, cb);
        submit_step_call(lv, job);
        return 0;
}

static int lv_launch(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        (void)host;
        lv_vm *lv = vm->host_data;
        if (lv->dead)
                return cvm_error_set(err, -ECONNRESET, "vm %s: its domain is gone", vm->id);
        lv_job *job = job_new(JOB_RESUME, lv->name);
        if (!job)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        start_step(lv, cb);
        submit_step_call(lv, job);
        return 0;
}

static void on_hello(cvm_agent_client *c, const cvm_agent_hello *hello, void *ud) {
        (void)c;
        (void)hello;
        lv_vm *lv = ud;
        cvm_timer_stop(lv->timer);
        lv->ready = true;
        step_done(lv, 0, NULL, 0, 0);
}

static void on_agent_closed(cvm_agent_client *c, const cvm_error *why, void *ud) {
        (void)c;
        lv_vm *lv = ud;
        cvm_error e;
        if (!lv->ready)
                cvm_error_set(&e, -EPROTO, "vm %s failed to boot: its agent went away: %s",
                              lv->vm->id, why->message);
        else
                cvm_error_set(&e, why->code ? why->code : -ECONNRESET,
                              "the agent of %s went away: %s", lv->vm->id, why->message);
        vm_died(lv, &e);
}

static void on_agent_lost(cvm_agent_client *c, const cvm_error *why, void *ud) {
        (void)c;
        report_lost(ud, why);
}

static void on_boot_timeout(cvm_timer *t, void *ud) {
        (void)t;
        lv_vm *lv = ud;
        cvm_error e;
        cvm_error_set(&e, -ETIMEDOUT,
                      "the agent of %s did not say hello within %" PRIu32
                      " ms of the resume (see the serial log %s)",
                      lv->vm->id, lv->lh->cfg.boot_timeout_ms, lv->serial_log);
        cvm_agent_client_free(lv->agent);
        lv->agent = NULL;
        step_done(lv, e.code, &e, 0, 0);
}

/* QEMU listens on the channel's socket from the moment it starts; the
 * agent's HELLO comes once the guest has booted and opened its port. */
static int lv_boot(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb, cvm_error *err) {
        lv_host *lh = (lv_host *)host;
        lv_vm *lv = vm->host_data;
        if (lv->dead)
                return cvm_error_set(err, -ECONNRESET, "vm %s: its domain is gone", vm->id);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", lv->socket_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = cvm_error_set_errno(err, -errno, "vm %s: cannot connect to %s", vm->id,
                                            CVM_QUOTE(lv->socket_path));
                close(fd);
                return r;
        }
        /* Heartbeats start at the agent's HELLO; until then the boot timeout
         * bounds the wait. */
        cvm_agent_client_opts o = {.heartbeat_interval_ms = lh->cfg.heartbeat_ms};
        cvm_agent_client_cbs cbs = {
                .on_hello = on_hello, .on_closed = on_agent_closed, .on_lost = on_agent_lost};
        int r = cvm_agent_client_new(lh->loop, fd, &o, &cbs, lv, &lv->agent, err);
        if (r < 0)
                return cvm_error_prefix(err, "vm %s: ", vm->id);
        cvm_timer_free(lv->timer);
        lv->timer = NULL;
        if ((r = cvm_timer_new(lh->clock, on_boot_timeout, lv, &lv->timer, err)) < 0) {
                cvm_agent_client_free(lv->agent);
                lv->agent = NULL;
                return r;
        }
        start_step(lv, cb);
        cvm_timer_start(lv->timer, (uint64_t)lh->cfg.boot_timeout_ms * CVM_NSEC_PER_MSEC);
        return 0;
}

static void on_result(cvm_agent_client *c, uint64_t id, const cvm_agent_result *result,
                      const cvm_error *err, void *ud) {
        (void)c;
        (void)id;
        lv_invoke *li = ud;
        lv_invoke copy = *li;
        invoke_unlink(li);
        free(li);
        copy.cb(copy.lv->vm, result, err, copy.userdata);
}

static int lv_invoke_fn(cvm_host *host, cvm_vm *vm, uint64_t id, uint32_t timeout_ms,
                        const void *body, size_t len, cvm_host_invoke_cb cb, void *userdata,
                        cvm_error *err) {
        (void)host;
        lv_vm *lv = vm->host_data;
        if (!lv || !lv->agent)
                return cvm_error_set(err, -ECONNRESET, "vm %s has no agent", vm->id);
        lv_invoke *li = malloc(sizeof(*li));
        if (!li)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *li = (lv_invoke){.lv = lv, .cb = cb, .userdata = userdata};
        int r = cvm_agent_client_invoke(lv->agent, id, timeout_ms, body, len, on_result, li, err);
        if (r < 0) {
                free(li);
                return r;
        }
        CVM_LIST_PREPEND(lv->invokes, li);
        return 0;
}

/* A real SNP guest's agent asks its own PSP for the report; the host only
 * relays it, with the certificate chain the operator configured. */
static void on_attest(cvm_agent_client *c, const cvm_agent_attest_result *res, const cvm_error *err,
                      void *ud) {
        (void)c;
        lv_attest *a = ud;
        lv_vm *lv = a->lv;
        attest_unlink(a);
        cvm_host_attest_cb cb = a->cb;
        void *userdata = a->userdata;
        free(a);
        if (!res) {
                cb(lv->vm, NULL, err, userdata);
                return;
        }
        cvm_error e;
        if (res->status != CVM_AGENT_ATTEST_REPORT || !res->report_len) {
                if (res->status == CVM_AGENT_ATTEST_NO_DEVICE)
                        cvm_error_set(&e, -ENOTSUP,
                                      "vm %s is not an SEV-SNP guest: it has no attestation "
                                      "report",
                                      lv->vm->id);
                else
                        cvm_error_set(&e, -EIO,
                                      "vm %s: the guest's SNP firmware gave no report (errno "
                                      "%" PRIu32 ", exitinfo2 0x%" PRIx64 ")",
                                      lv->vm->id, res->error, res->exitinfo2);
                cb(lv->vm, NULL, &e, userdata);
                return;
        }
        cvm_host_attestation out = {.report = res->report,
                                    .report_len = res->report_len,
                                    .public_key = res->public_key,
                                    .public_key_len = res->public_key_len,
                                    .cert_chain_pem = lv->lh->chain_pem};
        cb(lv->vm, &out, NULL, userdata);
}

static int lv_attest_fn(cvm_host *host, cvm_vm *vm, const uint8_t nonce[64], cvm_host_attest_cb cb,
                        void *userdata, cvm_error *err) {
        (void)host;
        lv_vm *lv = vm->host_data;
        if (!lv || !lv->agent || !lv->ready)
                return cvm_error_set(err, -EBUSY, "vm %s is not ready", vm->id);
        lv_attest *a = calloc(1, sizeof(*a));
        if (!a)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *a = (lv_attest){.lv = lv, .cb = cb, .userdata = userdata};
        int r = cvm_agent_client_attest(lv->agent, nonce, on_attest, a, err);
        if (r < 0) {
                free(a);
                return r;
        }
        CVM_LIST_PREPEND(lv->attests, a);
        return 0;
}

/* Teardown: destroy and undefine on a worker, off the request path. A
 * libvirt call already in flight for the VM finishes first (its domain may
 * be half made); one still queued is dropped. */
static void lv_teardown(cvm_host *host, cvm_vm *vm, cvm_host_step_cb cb) {
        lv_host *lh = (lv_host *)host;
        lv_vm *lv = vm->host_data;
        lv->tearing_down = true;
        lv->teardown_cb = cb;
        lv->step_cb = NULL;
        cvm_timer_stop(lv->timer);
        cvm_timer_stop(lv->call_timer);
        drop_agent(lv, -ECANCELED, "was stopped");
        if (lv->job && unqueue(lh, lv->job)) {
                if (lv->job->kind == JOB_PREPARE)
                        lv->defined = false;
                job_free(lv->job);
                lv->job = NULL;
        }
        /* Otherwise on_job_done queues the destroy when the call returns. */
        if (!lv->job)
                queue_destroy(lv);
}

static uint32_t lv_asids_available(cvm_host *host) {
        lv_host *lh = (lv_host *)host;
        /* A plain guest takes no ASID: only the VM registry's limit applies. */
        if (!lh->snp)
                return CVM_VMS_MAX;
        uint32_t total = lh->caps.max_es_guests;
        return lh->n_domains >= total ? 0 : total - (uint32_t)lh->n_domains;
}

static json_t *lv_vm_json(cvm_host *host, cvm_vm *vm) {
        lv_host *lh = (lv_host *)host;
        lv_vm *lv = vm->host_data;
        if (!lv)
                return NULL;
        return json_pack("{s:s, s:s, s:b, s:s, s:s, s:s, s:f}", "type", "libvirt", "domain",
                         lv->name, "snp", lh->snp, "accel", lh->kvm ? "kvm" : "tcg", "serial_log",
                         lv->serial_log, "agent_socket", lv->socket_path, "resume_ms",
                         (double)(lv->resume_ns / 1000) / 1e3);
}

static json_t *lv_psp_json(cvm_host *host) {
        lv_host *lh = (lv_host *)host;
        double avg = lh->launches ? (double)lh->launch_ns_total / (double)lh->launches / 1e6 : 0;
        if (!lh->snp)
                return json_pack("{s:s, s:b, s:s, s:I, s:f}", "host", "libvirt", "snp", false,
                                 "note",
                                 "plain guests: no PSP is involved; the launch schedule still "
                                 "orders the resumes",
                                 "launches", (json_int_t)lh->launches, "resume_ms_avg", avg);
        return json_pack("{s:s, s:b, s:I, s:f, s:{s:i, s:i, s:i}}", "host", "libvirt", "snp", true,
                         "launches", (json_int_t)lh->launches, "launch_ms_avg", avg, "asids",
                         "total", (int)lh->caps.max_es_guests, "in_use", (int)lh->n_domains, "free",
                         (int)lv_asids_available(host));
}

static void async_closed(uv_handle_t *h) {
        lv_host *lh = h->data;
        pthread_mutex_destroy(&lh->mu);
        pthread_cond_destroy(&lh->cond);
        free(lh);
}

/* Queues a destroy for every domain; returns how many. */
static size_t queue_destroys(lv_host *lh) {
        size_t n = 0;
        for (lv_vm *lv = lh->vms; lv; lv = lv->next) {
                lv_job *j =
                        lv->destroy ? CVM_TAKE_PTR(lv->destroy) : job_new(JOB_DESTROY, lv->name);
                if (j) {
                        j->vm = NULL;
                        submit(lh, j);
                        n++;
                }
        }
        return n;
}

static void jobs_free(lv_job *list) {
        while (list) {
                lv_job *j = list;
                list = j->next;
                job_free(j);
        }
}

static void events_free(lv_event *list) {
        while (list) {
                lv_event *ev = list;
                list = ev->next;
                free(ev);
        }
}

static void drop_done(lv_host *lh, bool report) {
        pthread_mutex_lock(&lh->mu);
        lv_job *done = lh->done;
        lh->done = NULL;
        pthread_mutex_unlock(&lh->mu);
        for (lv_job *j = done; report && j; j = j->next)
                if (j->kind == JOB_DESTROY && j->result < 0)
                        log_warn("libvirt: %s", j->err.message);
        jobs_free(done);
}

/* Daemon exit: no callbacks. Queued calls are dropped and every domain is
 * destroyed at once, by fresh threads beside the workers: a call in flight
 * that waits on a guest (its monitor has no timeout) returns only once that
 * guest's QEMU is gone, so the destroys must not wait for it. A prepare in
 * flight may define its domain after that domain's destroy ran: a second
 * pass, once every call has returned, catches it. A call that has not
 * returned within stop_timeout_ms is left behind with what it uses.
 * Returns -EBUSY then. */
static int host_release(lv_host *lh) {
        pthread_mutex_lock(&lh->mu);
        lv_job *queued = lh->queue;
        lh->queue = lh->queue_tail = NULL;
        pthread_mutex_unlock(&lh->mu);
        jobs_free(queued);
        /* Each phase is logged: should a libvirt call never return, the log
         * says which wait it is stuck in. */
        cvm_error err = {0};
        uint64_t t0 = uv_hrtime();
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        uint64_t ns = (uint64_t)deadline.tv_nsec + (uint64_t)lh->cfg.stop_timeout_ms * 1000000;
        deadline.tv_sec += (time_t)(ns / 1000000000);
        deadline.tv_nsec = (long)(ns % 1000000000);
        size_t n = queue_destroys(lh);
        if (n) {
                log_info("libvirt: destroying %zu domain(s)", n);
                if (start_workers(lh, n < lh->cfg.workers ? (uint32_t)n : lh->cfg.workers, &err) <
                    0)
                        log_warn("libvirt: %s: the workers destroy the domains", err.message);
        }
        uint32_t stuck = join_workers(lh, &deadline);
        if (stuck)
                abandon_calls(lh);
        drop_done(lh, true);
        if (!stuck) {
                if (queue_destroys(lh) && start_workers(lh, lh->cfg.workers, &err) < 0)
                        log_warn("libvirt: %s: domains may be left running", err.message);
                stuck = join_workers(lh, &deadline);
                if (stuck)
                        abandon_calls(lh);
                drop_done(lh, false);
        }
        if (n && !stuck)
                log_info("libvirt: %zu domain(s) destroyed in %.0f ms", n,
                         (double)(uv_hrtime() - t0) / 1e6);
        /* What the threads could still add (left-over destroys, events of the
         * domains just destroyed), taken under the lock: the event thread
         * runs until the connection closes. */
        pthread_mutex_lock(&lh->mu);
        queued = lh->queue;
        lh->queue = lh->queue_tail = NULL;
        lv_event *events = lh->events;
        lh->events = NULL;
        pthread_mutex_unlock(&lh->mu);
        jobs_free(queued);
        events_free(events);
        while (lh->vms) {
                lv_vm *lv = lh->vms;
                while (lv->invokes) {
                        lv_invoke *li = lv->invokes;
                        invoke_unlink(li);
                        free(li);
                }
                while (lv->attests) {
                        lv_attest *a = lv->attests;
                        attest_unlink(a);
                        free(a);
                }
                cvm_agent_client_free(lv->agent);
                unlink(lv->socket_path);
                lv->vm->host_data = NULL;
                vm_unlink_free(lv);
        }
        /* A stuck call holds the connection, and may need the event thread
         * (or block it): both stay, with the process about to exit. */
        if (stuck)
                return -EBUSY;
        if (lh->conn) {
                if (lh->lifecycle_cb_id >= 0)
                        virConnectDomainEventDeregisterAny(lh->conn, lh->lifecycle_cb_id);
                virConnectClose(lh->conn);
        }
        stop_event_thread(lh);
        log_info("libvirt: connection closed, event loop stopped");
        /* Destroying the domains above queued STOPPED events; nobody will
         * read them now. */
        events_free(lh->events);
        lh->events = NULL;
        lv_config_done(&lh->cfg);
        lh->cfg = (lv_config){0};
        free(lh->vm_dir);
        free(lh->log_dir);
        free(lh->chain_pem);
        return 0;
}

static int lv_free(cvm_host *host) {
        lv_host *lh = (lv_host *)host;
        if (!lh)
                return 0;
        int r = host_release(lh);
        /* lh itself goes when the async handle has closed, unless a thread
         * left in a call still uses it. */
        uv_close((uv_handle_t *)&lh->async, r < 0 ? NULL : async_closed);
        return r;
}

static const cvm_host_ops lv_ops = {
        .name = "libvirt",
        .prepare = lv_prepare,
        .launch = lv_launch,
        .boot = lv_boot,
        .invoke = lv_invoke_fn,
        .attest = lv_attest_fn,
        .teardown = lv_teardown,
        .vm_json = lv_vm_json,
        .psp_json = lv_psp_json,
        .asids_available = lv_asids_available,
        .free = lv_free,
};

/* Set-up. */

static int mkdir_p(const char *path, mode_t mode, cvm_error *err) {
        char buf[4096];
        int n = snprintf(buf, sizeof(buf), "%s", path);
        if (n < 0 || (size_t)n >= sizeof(buf))
                return cvm_error_set(err, -ENAMETOOLONG, "path %s is too long", CVM_QUOTE(path));
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return cvm_error_set_errno(err, -errno, "cannot create %s", CVM_QUOTE(buf));
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return cvm_error_set_errno(err, -errno, "cannot create %s", CVM_QUOTE(buf));
        return 0;
}

/* The root of an embedded URI ("qemu:///embed?root=DIR"), or NULL. */
static char *embed_root(const char *uri) {
        if (strncmp(uri, "qemu:///embed?", 14) != 0)
                return NULL;
        const char *p = strstr(uri + 14, "root=");
        if (!p)
                return NULL;
        p += 5;
        return strndup(p, strcspn(p, "&"));
}

/* The embedded driver reads DIR/etc/qemu.conf. QEMU's stdout and stderr,
 * and file chardevs, must go to plain files: no virtlogd runs without
 * libvirtd, and libvirt would retry connecting to it for tens of seconds. */
static int prepare_embed_root(const char *root, cvm_error *err) {
        if (root[0] != '/')
                return cvm_error_set(err, -EINVAL,
                                     "libvirt.uri: the embedded driver's root %s must be an "
                                     "absolute path",
                                     CVM_QUOTE(root));
        char dir[4096], conf[4200];
        snprintf(dir, sizeof(dir), "%s/etc", root);
        int r = mkdir_p(dir, 0755, err);
        if (r < 0)
                return r;
        snprintf(conf, sizeof(conf), "%s/qemu.conf", dir);
        _cleanup_fclose_ FILE *f = fopen(conf, "re");
        if (f) {
                char line[512];
                while (fgets(line, sizeof(line), f))
                        if (strncmp(line, "stdio_handler", 13) == 0)
                                return 0; /* The operator's choice stands. */
        }
        _cleanup_fclose_ FILE *w = fopen(conf, "ae");
        if (!w ||
            fputs("# Written by cvmd: no virtlogd runs beside the embedded driver.\n"
                  "stdio_handler = \"file\"\n",
                  w) < 0 ||
            fflush(w) != 0)
                return cvm_error_set_errno(err, -errno, "cannot write %s", CVM_QUOTE(conf));
        return 0;
}

/* Whether qemu.conf names the user QEMU runs as (then that is the operator's call). */
static bool conf_sets_user(const char *root) {
        char conf[4200];
        snprintf(conf, sizeof(conf), "%s/etc/qemu.conf", root);
        _cleanup_fclose_ FILE *f = fopen(conf, "re");
        char line[512];
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "user", 4) == 0 && strchr(" =\t", line[4]))
                        return true;
        return false;
}

/* libvirt checks /dev/kvm as the QEMU user; when that user cannot open it
 * but the probe saw KVM, libvirt throws its capability cache away and
 * probes QEMU again (about 4 s) on every define and start. */
static int check_kvm_access(const struct passwd *pw, cvm_error *err) {
        struct stat st;
        if (stat("/dev/kvm", &st) < 0)
                return 0;
        bool ok = (st.st_mode & 006) == 006 ||
                  (st.st_uid == pw->pw_uid && (st.st_mode & 0600) == 0600);
        if (!ok && (st.st_mode & 060) == 060) {
                gid_t groups[64];
                int n = 64;
                if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) >= 0)
                        for (int i = 0; i < n && !ok; i++)
                                ok = groups[i] == st.st_gid;
        }
        if (ok)
                return 0;
        struct group *g = getgrgid(st.st_gid);
        return cvm_error_set(err, -EACCES,
                             "libvirt: user %s cannot open /dev/kvm (mode %04o, group %s), so "
                             "libvirt would probe QEMU again (seconds) on every call; give the "
                             "group kvm read-write access to /dev/kvm and add %s to it (adduser "
                             "%s kvm), or set user in the embedded root's etc/qemu.conf",
                             LV_QEMU_USER, (unsigned)(st.st_mode & 07777), g ? g->gr_name : "?",
                             LV_QEMU_USER, LV_QEMU_USER);
}

/* Whether KVM offers guests SSE3 (CPUID leaf 1, ECX bit 0). Every x86-64
 * CPU since 2005 has it, so a KVM that hides it is a restricted or emulated
 * one (a sandbox's): there QEMU warns and the guest kernel hangs in early
 * boot, although a toy guest runs. */
static bool kvm_cpuid_sane(int kvm) {
        enum { N = 256 };
        _cleanup_free_ struct kvm_cpuid2 *c =
                calloc(1, sizeof(*c) + N * sizeof(struct kvm_cpuid_entry2));
        if (!c)
                return false;
        c->nent = N;
        if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) < 0)
                return false;
        for (uint32_t i = 0; i < c->nent; i++)
                if (c->entries[i].function == 1)
                        return c->entries[i].ecx & 1u;
        return false;
}

/* KVM is usable when a VM with a vCPU can be created and the CPU it offers
 * can boot a kernel, which is more than /dev/kvm existing. */
static bool kvm_usable(void) {
        int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (kvm < 0)
                return false;
        bool ok = false;
        if (ioctl(kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION) {
                int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
                if (vmfd >= 0) {
                        int vcpu = ioctl(vmfd, KVM_CREATE_VCPU, 0);
                        ok = vcpu >= 0;
                        if (vcpu >= 0)
                                close(vcpu);
                        close(vmfd);
                }
        }
        if (ok && !kvm_cpuid_sane(kvm)) {
                log_info("libvirt: KVM does not offer guests SSE3; using TCG (set libvirt.accel "
                         "to override)");
                ok = false;
        }
        close(kvm);
        return ok;
}

static int host_open(lv_host *lh, const char *state_dir, cvm_error *err) {
        int r;
        if (!lh->cfg.uri &&
            asprintf(&lh->cfg.uri, "qemu:///embed?root=%s/libvirt", state_dir) < 0) {
                lh->cfg.uri = NULL;
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        _cleanup_free_ char *root = embed_root(lh->cfg.uri);
        if (root) {
                /* libvirt looks the user up before it reads qemu.conf, and
                 * fails with a message that does not say so. */
                if (geteuid() == 0 && !getpwnam(LV_QEMU_USER))
                        return cvm_error_set(err, -ENOENT,
                                             "libvirt: the embedded QEMU driver runs guests as "
                                             "user %s, which does not exist; create it (adduser "
                                             "--system --group --no-create-home %s) or install "
                                             "libvirt-daemon-system",
                                             LV_QEMU_USER, LV_QEMU_USER);
                if ((r = prepare_embed_root(root, err)) < 0)
                        return r;
                struct passwd *pw = geteuid() == 0 ? getpwnam(LV_QEMU_USER) : NULL;
                if (pw && !conf_sets_user(root) && (r = check_kvm_access(pw, err)) < 0)
                        return r;
        }
        if (asprintf(&lh->vm_dir, "%s/libvirt-vms", state_dir) < 0) {
                lh->vm_dir = NULL;
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        lh->log_dir = strdup(lh->cfg.log_dir ? lh->cfg.log_dir : lh->vm_dir);
        if (!lh->log_dir)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        /* QEMU runs as another user and creates the agent sockets here. */
        if ((r = mkdir_p(lh->vm_dir, 0755, err)) < 0 || (r = mkdir_p(lh->log_dir, 0755, err)) < 0)
                return r;
        if (root && geteuid() == 0) {
                struct passwd *pw = getpwnam(LV_QEMU_USER);
                if (pw && chown(lh->vm_dir, pw->pw_uid, pw->pw_gid) < 0)
                        return cvm_error_set_errno(err, -errno, "cannot hand %s to %s",
                                                   CVM_QUOTE(lh->vm_dir), LV_QEMU_USER);
        }
        if (lh->cfg.cert_chain) {
                size_t len;
                r = cvm_file_read(lh->cfg.cert_chain, LV_CERT_CHAIN_MAX, (uint8_t **)&lh->chain_pem,
                                  &len, NULL, err);
                if (r < 0)
                        return cvm_error_prefix(err, "libvirt.cert_chain: ");
        }

        /* The embedded driver needs libvirt's event loop running before it opens. */
        virSetErrorFunc(NULL, quiet_errors);
        pthread_once(&event_impl_once, register_event_impl);
        if (event_impl_result < 0)
                return cvm_error_set(err, -EIO, "libvirt: cannot register the event loop: %s",
                                     virGetLastErrorMessage());
        if ((r = pthread_create(&lh->event_thread, NULL, event_main, lh)) != 0)
                return cvm_error_set_errno(err, -r, "cannot start the libvirt event thread");
        lh->event_thread_started = true;
        lh->conn = virConnectOpen(lh->cfg.uri);
        if (!lh->conn)
                return cvm_error_set(err, -EIO, "libvirt: cannot open %s: %s",
                                     CVM_QUOTE(lh->cfg.uri), virGetLastErrorMessage());

        bool kvm = lh->cfg.accel == ACCEL_KVM ||
                   (lh->cfg.accel == ACCEL_AUTO && (lh->cfg.snp == SNP_ON || kvm_usable()));
        /* SEV lives in KVM's capabilities; TCG has none. */
        char *caps = virConnectGetDomainCapabilities(lh->conn, NULL, "x86_64", "q35",
                                                     kvm ? "kvm" : "qemu", 0);
        if (!caps && kvm)
                return cvm_error_set(err, -EIO, "libvirt: KVM is not usable here: %s",
                                     virGetLastErrorMessage());
        cvm_libvirt_caps_parse(caps, &lh->caps);
        free(caps);
        const char *missing = kvm ? cvm_libvirt_caps_snp_missing(&lh->caps)
                                  : "this host has no SEV-SNP: guests run under TCG, without KVM";
        if (lh->cfg.snp == SNP_ON && missing)
                return cvm_error_set(err, -ENOTSUP, "libvirt.snp is \"on\" but %s", missing);
        lh->kvm = kvm;
        lh->snp = lh->cfg.snp != SNP_OFF && !missing;
        if (lh->cfg.snp == SNP_AUTO && !lh->snp)
                log_info("libvirt: plain guests: %s", missing);
        return 0;
}

/* Once the async handle exists: the threads may report from now on. */
static int host_start(lv_host *lh, cvm_error *err) {
        /* libvirt takes every event's callback as one generic type and calls
         * it back as the event's own; through void (*)(void), the cast says
         * so to both compilers. */
        lh->lifecycle_cb_id = virConnectDomainEventRegisterAny(
                lh->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                (virConnectDomainEventGenericCallback)(void (*)(void))on_lifecycle, lh, NULL);
        if (lh->lifecycle_cb_id < 0)
                return cvm_error_set(err, -EIO, "libvirt: cannot watch domain events: %s",
                                     virGetLastErrorMessage());
        int r = start_workers(lh, lh->cfg.workers, err);
        if (r < 0)
                return r;
        lv_job *reap = job_new(JOB_REAP, "");
        if (reap)
                submit(lh, reap);
        return 0;
}

int cvm_libvirt_host_new(uv_loop_t *loop, cvm_clock *clock, json_t *section, const char *state_dir,
                         cvm_host **ret, cvm_error *err) {
        lv_config cfg;
        int r = lv_config_parse(section, &cfg, err);
        if (r < 0)
                return r;
        lv_host *lh = calloc(1, sizeof(*lh));
        if (!lh) {
                lv_config_done(&cfg);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        lh->cfg = cfg;
        lh->base.ops = &lv_ops;
        lh->loop = loop;
        lh->clock = clock;
        lh->lifecycle_cb_id = -1;
        pthread_mutex_init(&lh->mu, NULL);
        pthread_cond_init(&lh->cond, NULL);
        r = host_open(lh, state_dir, err);
        if (r >= 0 && (r = uv_async_init(loop, &lh->async, on_async)) < 0)
                r = cvm_error_set(err, r, "uv_async_init: %s", uv_strerror(r));
        if (r < 0) {
                host_release(lh);
                pthread_mutex_destroy(&lh->mu);
                pthread_cond_destroy(&lh->cond);
                free(lh);
                return r;
        }
        lh->async.data = lh;
        if ((r = host_start(lh, err)) < 0) {
                lv_free(&lh->base);
                return r;
        }
        log_info("libvirt host: %s, machine %s, %s, %s guests, %u worker(s)",
                 CVM_QUOTE(lh->cfg.uri),
                 cvm_libvirt_machine_to_string(lh->snp ? CVM_LIBVIRT_MACHINE_Q35 : lh->cfg.machine),
                 lh->kvm ? "KVM" : "TCG", lh->snp ? "SEV-SNP" : "plain", lh->cfg.workers);
        *ret = &lh->base;
        return 0;
}

bool cvm_libvirt_host_snp(cvm_host *host) {
        return ((lv_host *)host)->snp;
}
