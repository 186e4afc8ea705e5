#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "api.h"
#include "function.h"
#include "cleanup.h"
#include "json.h"
#include "listen.h"
#include "metrics.h"
#include "libvirt.h"
#include "sim.h"
#include "tenants.h"
#include "log.h"
#include "version.h"

#define DRAIN_POLL_MS 20

static int64_t wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int make_instance_id(char out[33], cvm_error *err) {
        unsigned char raw[16];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
                return cvm_error_set(err, -EIO, "cannot get random bytes from OpenSSL");
        for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(out + 2 * i, 3, "%02x", raw[i]);
        return 0;
}

/* One daemon per state directory: its database and keys are not shared. */
static int lock_state_dir(const char *dir, int *ret_fd, cvm_error *err) {
        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                return cvm_error_set_errno(err, -errno, "cannot create state directory %s",
                                           CVM_QUOTE(dir));
        char path[4096];
        snprintf(path, sizeof(path), "%s/cvmd.lock", dir);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "cannot open %s", CVM_QUOTE(path));
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return cvm_error_set(err, -EBUSY,
                                             "state directory %s is in use by another cvmd",
                                             CVM_QUOTE(dir));
                return cvm_error_set_errno(err, -errno, "cannot lock %s", CVM_QUOTE(path));
        }
        *ret_fd = CVM_TAKE_FD(fd);
        return 0;
}

static uint32_t host_asids(void *userdata) {
        cvm_host *host = userdata;
        return host->ops->asids_available(host);
}

static void on_vm_died(cvm_vm *vm, const cvm_error *why, void *userdata) {
        (void)userdata;
        log_warn("vm %s died: %s", vm->id, why->message);
        /* Its pool must stop handing it out now, not when its teardown (slow on
         * libvirt) is over. */
        cvm_vm_lost(vm);
        cvm_vm_retire(vm, why->message);
}

static void on_vm_lost(cvm_vm *vm, const cvm_error *why, void *userdata) {
        (void)why;
        (void)userdata;
        cvm_vm_lost(vm);
}

static const char *const auth_fields[] = {"tokens_file", NULL};
static const char *const policy_fields[] = {"allow_debug", NULL};

/* The "policy" section: what guests the operator allows to be launched. */
static int launch_policy(const cvm_config *cfg, bool *allow_debug, cvm_error *err) {
        json_t *policy = json_object_get(cfg->sections, "policy");
        int r;
        *allow_debug = false;
        if (policy &&
            ((r = cvm_json_check_fields(policy, "policy", policy_fields, err)) < 0 ||
             (r = cvm_json_get_bool(policy, "policy", "allow_debug", false, allow_debug, err)) < 0))
                return r;
        return 0;
}

/* The "auth" section: the tokens file (hashes of tenants' API tokens). The
 * default location may be missing (no tenants); a configured one may not. */
static int load_tenants(const cvm_config *cfg, cvm_tenants **ret, cvm_error *err) {
        json_t *auth = json_object_get(cfg->sections, "auth");
        const char *path = NULL;
        int r;
        if (auth && ((r = cvm_json_check_fields(auth, "auth", auth_fields, err)) < 0 ||
                     (r = cvm_json_get_string(auth, "auth", "tokens_file", false, &path, err)) < 0))
                return r;
        if (path)
                return cvm_tenants_load(path, false, ret, err);
        const char *dir = getenv("CONFIGURATION_DIRECTORY");
        char def[4096];
        snprintf(def, sizeof(def), "%.*s/tokens.json",
                 dir && *dir ? (int)strcspn(dir, ":") : (int)strlen("/etc/cvmd"),
                 dir && *dir ? dir : "/etc/cvmd");
        return cvm_tenants_load(def, true, ret, err);
}

static const char *const pool_fields[] = {"memory_mib", "vms", NULL};
static const char *const functions_fields[] = {"max", "async_retention_s", "async_max",
                                               "max_waiting", NULL};

/* The "pool" and "functions" sections. */
static int functions_deps(const cvm_config *cfg, cvm_functions_deps *ret, cvm_error *err) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        *ret = (cvm_functions_deps){
                .limits = {.max_request_bytes = cfg->http.max_body_bytes,
                           .max_response_bytes = 6u << 20},
                /* VM memory may take three quarters of the host's by default. */
                .budget = {.memory_mib = pages > 0 && page > 0
                                                 ? (uint64_t)pages * (uint64_t)page / 4 * 3 >> 20
                                                 : 0},
                .max_functions = CVM_FUNCTIONS_MAX,
                .async_retention_s = 600,
                .async_max = 10000,
                .max_waiting = 1024,
        };
        json_t *pool = json_object_get(cfg->sections, "pool");
        json_t *fns = json_object_get(cfg->sections, "functions");
        int64_t v;
        int r;
        if (pool) {
                if ((r = cvm_json_check_fields(pool, "pool", pool_fields, err)) < 0)
                        return r;
                v = (int64_t)ret->budget.memory_mib;
                if ((r = cvm_json_get_int(pool, "pool", "memory_mib", false, 0, INT64_C(1) << 40,
                                          &v, err)) < 0)
                        return r;
                ret->budget.memory_mib = (uint64_t)v;
                if ((r = cvm_json_get_u32(pool, "pool", "vms", 0, 65536, &ret->budget.vms, err)) <
                    0)
                        return r;
        }
        if (fns) {
                if ((r = cvm_json_check_fields(fns, "functions", functions_fields, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(fns, "functions", "max", 1, CVM_FUNCTIONS_MAX,
                                          &ret->max_functions, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(fns, "functions", "async_retention_s", 1, 86400,
                                          &ret->async_retention_s, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(fns, "functions", "async_max", 1, 1000000,
                                          &ret->async_max, err)) < 0)
                        return r;
                if ((r = cvm_json_get_u32(fns, "functions", "max_waiting", 1, 1000000,
                                          &ret->max_waiting, err)) < 0)
                        return r;
        }
        return 0;
}

int cvmd_check_sections(const cvm_config *cfg, cvm_error *err) {
        cvm_image_spec spec = {0}, parsed = {0};
        int r = cvm_image_spec_default(&spec, err);
        if (r >= 0)
                r = cvm_image_spec_parse(json_object_get(cfg->sections, "image"), &spec, "image",
                                         &parsed, err);
        cvm_image_spec_done(&spec);
        cvm_image_spec_done(&parsed);
        if (r >= 0)
                r = cvm_sim_check_config(json_object_get(cfg->sections, "sim"),
                                         json_object_get(cfg->sections, "psp"), err);
        if (r >= 0)
                r = cvm_libvirt_check_config(json_object_get(cfg->sections, "libvirt"), err);
        cvm_functions_deps fd;
        if (r >= 0)
                r = functions_deps(cfg, &fd, err);
        cvm_tenants *t = NULL;
        bool allow_debug;
        if (r >= 0)
                r = launch_policy(cfg, &allow_debug, err);
        if (r >= 0)
                r = load_tenants(cfg, &t, err);
        cvm_tenants_free(t);
        return r;
}

static void on_signal(uv_signal_t *h, int signum) {
        cvmd *d = h->data;
        cvmd_shutdown(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int open_listeners(cvmd *d, cvm_error *err) {
        int fds[CVM_CONFIG_MAX_LISTEN];
        int n = cvm_listen_systemd(fds, CVM_CONFIG_MAX_LISTEN, err);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                char name[64];
                snprintf(name, sizeof(name), "systemd socket %d", i);
                /* A passed Unix socket is the operators', as our own would be. */
                bool trusted = sd_is_socket_unix(fds[i], SOCK_STREAM, 1, NULL, 0) > 0;
                int r = cvm_http_server_listen_fd(d->http, fds[i], name, trusted, err);
                if (r < 0)
                        return r;
                log_info("listening on %s", name);
        }
        /* Under socket activation the passed sockets replace the default one. */
        for (size_t i = 0; n == 0 && i < d->cfg.n_listen; i++) {
                int fd;
                int r = cvm_listen_open(d->cfg.listen[i], d->cfg.socket_mode, &fd, err);
                if (r < 0)
                        return r;
                if (strncmp(d->cfg.listen[i], "unix:", 5) == 0) {
                        d->unix_paths[d->n_unix_paths] = strdup(d->cfg.listen[i] + 5);
                        if (!d->unix_paths[d->n_unix_paths++]) {
                                close(fd);
                                return cvm_error_set(err, -ENOMEM, "out of memory");
                        }
                }
                bool trusted = strncmp(d->cfg.listen[i], "unix:", 5) == 0;
                if ((r = cvm_http_server_listen_fd(d->http, fd, d->cfg.listen[i], trusted, err)) <
                    0)
                        return r;
                log_info("listening on %s", CVM_QUOTE(d->cfg.listen[i]));
        }
        return 0;
}

int cvmd_start(cvmd *d, cvm_config *cfg, cvm_error *err) {
        *d = (cvmd){.cfg = *cfg, .lock_fd = -1, .state = CVMD_RUNNING};
        *cfg = (cvm_config){0};
        int r = uv_loop_init(&d->loop);
        if (r < 0)
                return cvm_error_set(err, r, "uv_loop_init: %s", uv_strerror(r));
        d->loop_ready = true;
        d->started_ns = uv_hrtime();
        cvm_log_set_level(d->cfg.log_level);
        if ((r = make_instance_id(d->instance, err)) < 0)
                return r;
        if ((r = lock_state_dir(d->cfg.state_dir, &d->lock_fd, err)) < 0)
                return r;
        if ((r = cvm_clock_uv_new(&d->loop, &d->clock, err)) < 0)
                return r;

        _cleanup_free_ char *db = cvm_config_db_path(&d->cfg);
        if (!db)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        cvm_store_options so = {.path = db,
                                .queue_capacity = d->cfg.store.queue_capacity,
                                .batch_max = d->cfg.store.batch_max,
                                .linger_ms = d->cfg.store.linger_ms};
        if ((r = cvm_store_open(&d->loop, &so, &d->store, err)) < 0)
                return r;
        cvm_store_val run[] = {CVM_STORE_S(d->instance), CVM_STORE_I(wall_ms()),
                               CVM_STORE_S(CVM_VERSION), CVM_STORE_I(getpid()),
                               CVM_STORE_S(d->cfg.host)};
        cvm_store_write(d->store, CVM_STORE_RUN_START, run, CVM_ARRAY_SIZE(run), NULL, NULL);

        cvm_image_spec builtin = {0};
        r = cvm_image_spec_default(&builtin, err);
        if (r >= 0)
                r = cvm_image_spec_parse(json_object_get(d->cfg.sections, "image"), &builtin,
                                         "image", &d->image_defaults, err);
        cvm_image_spec_done(&builtin);
        if (r < 0)
                return cvm_error_prefix(err, "config: ");
        cvm_psp_costs costs;
        cvm_psp_costs_default(&costs);
        json_t *psp = json_object_get(d->cfg.sections, "psp");
        json_t *psp_costs = json_object_get(psp, "costs");
        if (psp_costs && (r = cvm_psp_costs_parse(psp_costs, "psp.costs", &costs, err)) < 0)
                return cvm_error_prefix(err, "config: ");
        if ((r = cvm_image_cache_new(&d->loop, &costs, 64, &d->images, err)) < 0)
                return r;
        if (strcmp(d->cfg.host, "libvirt") == 0) {
                /* Opening the connection blocks (libvirt probes QEMU): before the loop runs. */
                if ((r = cvm_libvirt_host_new(&d->loop, d->clock,
                                              json_object_get(d->cfg.sections, "libvirt"),
                                              d->cfg.state_dir, &d->host, err)) < 0)
                        return cvm_error_prefix(err, "libvirt host: ");
                /* Handlers live in the guest image, not on this machine. */
                d->host_runs_handlers = false;
                cvm_image_cache_set_plain_guests(d->images, !cvm_libvirt_host_snp(d->host));
        } else {
                if ((r = cvm_sim_host_new(&d->loop, d->clock,
                                          json_object_get(d->cfg.sections, "sim"), psp,
                                          d->cfg.state_dir, &d->host, err)) < 0)
                        return cvm_error_prefix(err, "config: ");
                d->host_runs_handlers = true;
        }
        d->host->on_died = on_vm_died;
        d->host->on_lost = on_vm_lost;
        d->host->userdata = d;
        cvm_sched_config sc;
        cvm_sched_config_default(&sc);
        if (psp && (r = cvm_sched_config_parse(psp, "psp", &sc, err)) < 0)
                return cvm_error_prefix(err, "config: ");
        if ((r = cvm_sched_new(d->clock, &sc, host_asids, d->host, &d->sched, err)) < 0)
                return r;
        d->host->sched = d->sched;
        if ((r = cvm_metrics_new(&d->loop, d->store, 0, &d->metrics, err)) < 0)
                return r;
        if ((r = cvm_vms_new(d->host, d->store, d->sched, d->clock, d->metrics, &d->vms, err)) < 0)
                return r;
        cvm_functions_deps fd;
        if ((r = functions_deps(&d->cfg, &fd, err)) < 0)
                return cvm_error_prefix(err, "config: ");
        fd.loop = &d->loop;
        fd.clock = d->clock;
        fd.store = d->store;
        fd.vms = d->vms;
        fd.images = d->images;
        fd.sched = d->sched;
        fd.host = d->host;
        fd.limits.image_defaults = &d->image_defaults;
        fd.limits.check_executable = d->host_runs_handlers;
        if ((r = launch_policy(&d->cfg, &d->allow_debug, err)) < 0)
                return cvm_error_prefix(err, "config: ");
        fd.limits.allow_debug = d->allow_debug;
        if (!fd.budget.vms)
                fd.budget.vms = d->host->ops->asids_available(d->host);
        if ((r = cvm_functions_new(&fd, &d->functions, err)) < 0 ||
            (r = cvm_functions_restore(d->functions, err)) < 0)
                return r;

        cvm_http_limits limits = {.max_body_bytes = d->cfg.http.max_body_bytes,
                                  .max_connections = d->cfg.http.max_connections,
                                  .connection_timeout_s = d->cfg.http.connection_timeout_s};
        size_t n_routes;
        const cvm_http_route *routes = cvm_api_routes(&n_routes);
        if ((r = cvm_http_server_new(&d->loop, routes, n_routes, d, &limits, &d->http, err)) < 0)
                return r;
        if ((r = load_tenants(&d->cfg, &d->tenants, err)) < 0)
                return cvm_error_prefix(err, "config: ");
        if (cvm_tenants_count(d->tenants))
                log_info("%zu tenant(s) may use the TCP listeners", cvm_tenants_count(d->tenants));
        cvm_http_server_set_auth(d->http, cvm_api_authorize, d);
        if ((r = open_listeners(d, err)) < 0)
                return r;

        uv_signal_init(&d->loop, &d->sig_term);
        uv_signal_init(&d->loop, &d->sig_int);
        d->sig_term.data = d->sig_int.data = d;
        uv_signal_start(&d->sig_term, on_signal, SIGTERM);
        uv_signal_start(&d->sig_int, on_signal, SIGINT);
        uv_timer_init(&d->loop, &d->drain_timer);
        d->drain_timer.data = d;
        /* A client that disconnects mid-write must not kill the daemon. */
        signal(SIGPIPE, SIG_IGN);

        cvm_notify_init(&d->notify, &d->loop);
        char status[256];
        snprintf(status, sizeof(status), "serving on %zu listener(s), host %s", d->cfg.n_listen,
                 d->cfg.host);
        cvm_notify_ready(status);
        log_info("cvmd %s started (instance %s, state %s, database %s, host %s)", CVM_VERSION,
                 d->instance, CVM_QUOTE(d->cfg.state_dir), CVM_QUOTE(db), d->cfg.host);
        return 0;
}

static void remove_sockets(cvmd *d) {
        for (size_t i = 0; i < d->n_unix_paths; i++) {
                unlink(d->unix_paths[i]);
                free(d->unix_paths[i]);
        }
        d->n_unix_paths = 0;
}

/* Kills every guest (the host does it without callbacks), then forgets them. */
static void release_guests(cvmd *d) {
        /* The pools go first: they only forget, the host does the killing. */
        cvm_functions_free(d->functions);
        d->functions = NULL;
        cvm_api_vms_release(d);
        if (d->host) {
                size_t n = cvm_vms_count(d->vms);
                if (n)
                        log_info("stopping %zu VM(s)", n);
                if (d->host->ops->free(d->host) < 0)
                        d->unclean = true;
                d->host = NULL;
        }
        cvm_vms_free(d->vms);
        d->vms = NULL;
        cvm_sched_free(d->sched);
        d->sched = NULL;
        cvm_image_cache_free(d->images);
        d->images = NULL;
}

static void finish_shutdown(cvmd *d) {
        if (d->state == CVMD_STOPPED)
                return;
        d->state = CVMD_STOPPED;
        size_t pending = cvm_http_server_pending(d->http);
        if (pending)
                log_warn("grace period over: failing %zu in-flight request(s)", pending);
        cvm_http_server_free(d->http);
        d->http = NULL;
        remove_sockets(d);
        release_guests(d);
        uv_timer_stop(&d->drain_timer);
        uv_close((uv_handle_t *)&d->drain_timer, NULL);
        uv_close((uv_handle_t *)&d->sig_term, NULL);
        uv_close((uv_handle_t *)&d->sig_int, NULL);
        cvm_notify_done(&d->notify);

        cvm_store_stats st;
        cvm_store_get_stats(d->store, &st);
        cvm_store_val stop[] = {CVM_STORE_S(d->instance), CVM_STORE_I(wall_ms()),
                                CVM_STORE_I((int64_t)st.dropped)};
        cvm_store_write(d->store, CVM_STORE_RUN_STOP, stop, CVM_ARRAY_SIZE(stop), NULL, NULL);
        /* Stats queries read the store: they end before it closes. */
        cvm_metrics_free(d->metrics);
        d->metrics = NULL;
        cvm_store_close(d->store);
        d->store = NULL;
        log_info("cvmd stopped (%llu writes stored before shutdown, %llu dropped)%s",
                 (unsigned long long)st.written, (unsigned long long)st.dropped,
                 d->unclean ? ", not cleanly: see above" : "");
}

static void on_drain_tick(uv_timer_t *t) {
        cvmd *d = t->data;
        if (cvm_http_server_pending(d->http) == 0 || uv_hrtime() >= d->drain_deadline_ns)
                finish_shutdown(d);
}

void cvmd_shutdown(cvmd *d, const char *why) {
        if (d->state == CVMD_DRAINING) {
                log_info("%s during shutdown: stopping now", why);
                finish_shutdown(d);
                return;
        }
        if (d->state != CVMD_RUNNING)
                return;
        d->state = CVMD_DRAINING;
        log_info("%s: shutting down (grace %u ms for %zu in-flight request(s))", why,
                 d->cfg.shutdown_grace_ms, cvm_http_server_pending(d->http));
        cvm_notify_stopping("shutting down");
        cvm_http_server_stop_listening(d->http);
        d->drain_deadline_ns = uv_hrtime() + (uint64_t)d->cfg.shutdown_grace_ms * 1000000;
        uv_timer_start(&d->drain_timer, on_drain_tick, 0, DRAIN_POLL_MS);
}

int cvmd_run(cvmd *d) {
        uv_run(&d->loop, UV_RUN_DEFAULT);
        return d->unclean ? EXIT_FAILURE : 0;
}

static void close_handle(uv_handle_t *h, void *arg) {
        (void)arg;
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

void cvmd_done(cvmd *d) {
        /* After a failed start, release what it made. */
        cvm_http_server_free(d->http);
        d->http = NULL;
        release_guests(d);
        cvm_metrics_free(d->metrics);
        d->metrics = NULL;
        cvm_store_close(d->store);
        d->store = NULL;
        remove_sockets(d);
        if (d->loop_ready) {
                uv_walk(&d->loop, close_handle, NULL);
                uv_run(&d->loop, UV_RUN_DEFAULT);
                uv_loop_close(&d->loop);
        }
        cvm_clock_uv_free(d->clock);
        cvm_tenants_free(d->tenants);
        cvm_image_spec_done(&d->image_defaults);
        cvm_config_done(&d->cfg);
        if (d->lock_fd >= 0)
                close(d->lock_fd);
}
