#include "function.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "guest_policy.h"
#include "http.h"
#include "json.h"
#include "list.h"
#include "log.h"

#define BUCKETS 1024
#define ASYNC_SWEEP_MS 1000

/* A generation: what the VMs of one version of a function are launched
 * from. A replacement that changes it starts a new generation; the old one
 * lives until its pool has drained. */
typedef struct fn_gen {
        cvm_functions *fns;
        char name[CVM_FUNCTION_NAME_MAX + 1];
        cvm_fn_spec spec;
        cvm_image *image;
        cvm_pool_fn *pool;
        struct fn_gen *prev, *next; /* Every generation, draining ones included. */
} fn_gen;

struct cvm_function {
        cvm_functions *fns;
        char name[CVM_FUNCTION_NAME_MAX + 1];
        char *tenant; /* The owner; NULL for the host's operators. */
        fn_gen *gen;
        json_t *spec_json; /* As stored. */
        int64_t created_ms, updated_ms;
        cvm_function *next_in_bucket;
        cvm_function *prev, *next;
};

struct cvm_fn_put {
        cvm_functions *fns;
        char name[CVM_FUNCTION_NAME_MAX + 1];
        char *tenant;
        cvm_fn_spec spec;
        json_t *spec_json;
        cvm_image *image;
        cvm_image_req *image_req;
        cvm_fn_put_cb cb;
        void *userdata;
        bool pool_only; /* A pool-settings change of an existing function. */
        cvm_fn_put *prev, *next;
};

typedef struct async_entry {
        char id[32];
        char function[CVM_FUNCTION_NAME_MAX + 1];
        char *tenant;
        bool done;
        int64_t started_ms, finished_ms;
        uint64_t expires_ns;
        json_t *result; /* The finished result as the API shows it. */
        struct async_entry *prev, *next;
} async_entry;

struct cvm_functions {
        cvm_functions_deps d;
        cvm_pool *pool;
        cvm_function *buckets[BUCKETS];
        cvm_function *head;
        uint32_t count;
        cvm_fn_put *puts;
        fn_gen *gens;
        async_entry *async_head, *async_tail;
        uint32_t async_count;
        cvm_timer *async_sweep;
        cvm_invocation *invs;          /* Every invocation not yet finished. */
        struct cvm_fn_attest *attests; /* Every attestation not yet answered. */
};

struct cvm_invocation {
        cvm_functions *fns;
        fn_gen *gen;
        char id[32];
        uint8_t *body_copy;
        const void *body;
        size_t len;
        bool async;
        bool forgotten;
        cvm_inv_cb cb;
        void *userdata;
        cvm_pool_waiter *waiter;
        cvm_pool_vm *pvm;
        cvm_timer *deadline;
        uint64_t arrived_ns;
        int64_t started_ms;
        bool cold;
        uint64_t queue_ns;
        async_entry *entry; /* The async result this invocation fills. */
        struct cvm_invocation *prev, *next;
};

/* Names and specs. */

int cvm_function_name_check(const char *name, cvm_error *err) {
        size_t n = strlen(name);
        bool ok = n >= 1 && n <= CVM_FUNCTION_NAME_MAX &&
                  (islower((unsigned char)name[0]) || isdigit((unsigned char)name[0]));
        for (size_t i = 1; ok && i < n; i++)
                ok = islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
                     name[i] == '-';
        if (!ok)
                return cvm_error_set(err, -EINVAL,
                                     "invalid function name %s: use [a-z0-9][a-z0-9-]{0,62}",
                                     CVM_QUOTE(name));
        return 0;
}

static const char *const spec_fields[] = {
        "image",       "handler", "timeout_ms", "max_request_bytes", "max_response_bytes",
        "concurrency", "pool",    NULL};
static const char *const pool_fields[] = {"min_warm", "max_vms", "policy", "keep_alive_s", NULL};

static int parse_pool(json_t *pool, cvm_fn_spec *s, cvm_error *err) {
        if (!pool)
                return 0;
        int r = cvm_json_check_fields(pool, "pool", pool_fields, err);
        if (r < 0)
                return r;
        if ((r = cvm_json_get_u32(pool, "pool", "max_vms", 1, 256, &s->max_vms, err)) < 0)
                return r;
        if ((r = cvm_json_get_u32(pool, "pool", "min_warm", 0, 256, &s->min_warm, err)) < 0)
                return r;
        if (s->min_warm > s->max_vms)
                return cvm_error_set(err, -EINVAL,
                                     "field 'pool.min_warm' (%u) must not exceed 'pool.max_vms' "
                                     "(%u)",
                                     s->min_warm, s->max_vms);
        const char *kind = NULL;
        if ((r = cvm_json_get_string(pool, "pool", "policy", false, &kind, err)) < 0)
                return r;
        if (kind && cvm_policy_kind_from_string(kind, &s->policy.kind) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "field 'pool.policy' must be \"fixed\" or \"histogram\"");
        if ((r = cvm_json_get_u32(pool, "pool", "keep_alive_s", 0, 86400, &s->policy.keep_alive_s,
                                  err)) < 0)
                return r;
        return 0;
}

int cvm_fn_spec_parse(json_t *obj, const cvm_fn_limits *lim, cvm_fn_spec *ret, cvm_error *err) {
        cvm_fn_spec s = {
                .timeout_ms = 30000,
                .max_request_bytes =
                        lim->max_request_bytes < 6291456 ? lim->max_request_bytes : 6291456,
                .max_response_bytes = lim->max_response_bytes,
                .concurrency = 1,
                .min_warm = 0,
                .max_vms = 16,
        };
        cvm_policy_params_default(&s.policy);
        json_t *image = NULL, *handler = NULL, *pool = NULL;
        int64_t v;
        int r = cvm_json_check_fields(obj, "", spec_fields, err);
        if (r >= 0)
                r = cvm_json_get_object(obj, "", "image", false, &image, err);
        if (r >= 0)
                r = cvm_json_get_object(obj, "", "handler", true, &handler, err);
        if (r >= 0)
                r = cvm_json_get_object(obj, "", "pool", false, &pool, err);
        if (r >= 0)
                r = cvm_json_get_u32(obj, "", "timeout_ms", 1, 3600000, &s.timeout_ms, err);
        if (r >= 0) {
                v = (int64_t)s.max_request_bytes;
                r = cvm_json_get_int(obj, "", "max_request_bytes", false, 0,
                                     (int64_t)lim->max_request_bytes, &v, err);
                s.max_request_bytes = (uint64_t)v;
        }
        if (r >= 0) {
                v = (int64_t)s.max_response_bytes;
                r = cvm_json_get_int(obj, "", "max_response_bytes", false, 1,
                                     (int64_t)lim->max_response_bytes, &v, err);
                s.max_response_bytes = (uint64_t)v;
        }
        if (r >= 0)
                r = cvm_json_get_u32(obj, "", "concurrency", 1, 64, &s.concurrency, err);
        if (r >= 0)
                r = parse_pool(pool, &s, err);
        if (r >= 0)
                r = cvm_image_spec_parse(image, lim->image_defaults, "image", &s.image, err);
        if (r >= 0 && (r = cvm_guest_policy_check(s.image.guest_policy, lim->allow_debug, err)) < 0)
                cvm_error_prefix(err, "image.guest_policy: ");
        if (r >= 0)
                r = cvm_handler_spec_parse(handler, "handler", lim->check_executable, &s.handler,
                                           err);
        if (r < 0) {
                cvm_fn_spec_done(&s);
                return r;
        }
        *ret = s;
        return 0;
}

void cvm_fn_spec_done(cvm_fn_spec *spec) {
        if (!spec)
                return;
        cvm_image_spec_done(&spec->image);
        cvm_handler_spec_done(&spec->handler);
}

json_t *cvm_fn_spec_to_json(const cvm_fn_spec *s) {
        return json_pack("{s:o, s:o, s:i, s:I, s:I, s:i, s:{s:i, s:i, s:s, s:i}}", "image",
                         cvm_image_spec_to_json(&s->image), "handler",
                         cvm_handler_spec_to_json(&s->handler), "timeout_ms", (int)s->timeout_ms,
                         "max_request_bytes", (json_int_t)s->max_request_bytes,
                         "max_response_bytes", (json_int_t)s->max_response_bytes, "concurrency",
                         (int)s->concurrency, "pool", "min_warm", (int)s->min_warm, "max_vms",
                         (int)s->max_vms, "policy", cvm_policy_kind_to_string(s->policy.kind),
                         "keep_alive_s", (int)s->policy.keep_alive_s);
}

/* What the VMs run: a change here needs new VMs. */
static bool same_vms(const cvm_fn_spec *a, const cvm_fn_spec *b) {
        json_t *ia = cvm_image_spec_to_json(&a->image), *ib = cvm_image_spec_to_json(&b->image);
        json_t *ha = cvm_handler_spec_to_json(&a->handler),
               *hb = cvm_handler_spec_to_json(&b->handler);
        bool same = json_equal(ia, ib) && json_equal(ha, hb) && a->concurrency == b->concurrency &&
                    a->max_response_bytes == b->max_response_bytes;
        json_decref(ia);
        json_decref(ib);
        json_decref(ha);
        json_decref(hb);
        return same;
}

static void settings_of(const cvm_functions *fns, const cvm_fn_spec *s, const cvm_image *img,
                        cvm_pool_settings *ret) {
        *ret = (cvm_pool_settings){.min_warm = s->min_warm,
                                   .max_vms = s->max_vms,
                                   .concurrency = s->concurrency,
                                   .memory_mib = s->image.memory_mib,
                                   .max_waiting = fns->d.max_waiting,
                                   .expected_launch_ns =
                                           img->psp_ns + (uint64_t)(s->image.firmware_boot_ms +
                                                                    s->image.kernel_boot_ms) *
                                                                 CVM_NSEC_PER_MSEC,
                                   .policy = s->policy};
}

/* The pool's backend: VMs from vm.c. */

static void on_vm_gone(cvm_vm *vm, void *owner) {
        cvm_pool_vm *pvm = owner;
        vm->owner = NULL;
        vm->on_gone = NULL;
        if (pvm)
                cvm_pool_vm_gone(pvm);
}

static void on_vm_launched(cvm_vm *vm, const cvm_error *err, void *userdata) {
        (void)userdata;
        cvm_pool_vm *pvm = vm->owner;
        if (!pvm)
                return;
        /* A launch cut short by a retire: the VM's gone notice follows. */
        if (err && vm->state == CVM_VM_STOPPING)
                return;
        if (err) {
                /* The pool forgets the VM now; vm.c tears it down on its own. */
                vm->owner = NULL;
                vm->on_gone = NULL;
                cvm_pool_vm_failed(pvm, err);
                return;
        }
        cvm_pool_vm_ready(pvm);
}

static int be_launch(void *ud, cvm_pool_vm *pvm, bool demand, cvm_error *err) {
        cvm_functions *fns = ud;
        fn_gen *g = cvm_pool_fn_userdata(cvm_pool_vm_fn(pvm));
        cvm_vm *vm;
        int r = cvm_vms_launch(fns->d.vms, g->image, &g->spec.handler, g->spec.concurrency, g->name,
                               demand, on_vm_launched, NULL, &vm, err);
        if (r < 0)
                return r;
        vm->owner = pvm;
        vm->on_gone = on_vm_gone;
        cvm_pool_vm_set_handle(pvm, vm);
        return 0;
}

static void be_promote(void *ud, cvm_pool_vm *pvm) {
        (void)ud;
        cvm_vm_promote(cvm_pool_vm_handle(pvm));
}

static void be_retire(void *ud, cvm_pool_vm *pvm, const char *reason) {
        (void)ud;
        cvm_vm_retire(cvm_pool_vm_handle(pvm), reason);
}

static const cvm_pool_backend backend = {
        .launch = be_launch,
        .promote = be_promote,
        .retire = be_retire,
};

/* Registry. */

static unsigned bucket_of(const char *name) {
        uint32_t h = 2166136261u;
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                h = (h ^ *p) * 16777619u;
        return h % BUCKETS;
}

cvm_function *cvm_functions_find(cvm_functions *fns, const char *name) {
        for (cvm_function *f = fns->buckets[bucket_of(name)]; f; f = f->next_in_bucket)
                if (strcmp(f->name, name) == 0)
                        return f;
        return NULL;
}

cvm_function *cvm_functions_first(cvm_functions *fns) {
        return fns->head;
}

cvm_function *cvm_function_next(cvm_function *fn) {
        return fn->next;
}

const char *cvm_function_name(const cvm_function *fn) {
        return fn->name;
}

static void registry_add(cvm_functions *fns, cvm_function *fn) {
        unsigned b = bucket_of(fn->name);
        fn->next_in_bucket = fns->buckets[b];
        fns->buckets[b] = fn;
        CVM_LIST_PREPEND(fns->head, fn);
        fns->count++;
}

static void registry_remove(cvm_functions *fns, cvm_function *fn) {
        for (cvm_function **pp = &fns->buckets[bucket_of(fn->name)]; *pp;
             pp = &(*pp)->next_in_bucket)
                if (*pp == fn) {
                        *pp = fn->next_in_bucket;
                        break;
                }
        CVM_LIST_REMOVE(fns->head, fn);
        fns->count--;
}

static void gen_free(fn_gen *g) {
        if (!g)
                return;
        CVM_LIST_REMOVE(g->fns->gens, g);
        cvm_fn_spec_done(&g->spec);
        cvm_image_unref(g->image);
        free(g);
}

static void on_gen_drained(void *ud) {
        fn_gen *g = ud;
        log_info("function %s: old VMs drained", g->name);
        gen_free(g);
}

static void gen_drain(fn_gen *g) {
        cvm_pool_fn *p = g->pool;
        g->pool = NULL;
        if (p)
                cvm_pool_fn_delete(p, on_gen_drained, g);
        else
                gen_free(g);
}

/* Takes ownership of spec and the image reference. */
static int gen_new(cvm_functions *fns, const char *name, cvm_fn_spec *spec, cvm_image *image,
                   fn_gen **ret, cvm_error *err) {
        fn_gen *g = calloc(1, sizeof(*g));
        if (!g) {
                cvm_fn_spec_done(spec);
                cvm_image_unref(image);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        g->fns = fns;
        CVM_LIST_PREPEND(fns->gens, g);
        snprintf(g->name, sizeof(g->name), "%s", name);
        g->spec = *spec;
        *spec = (cvm_fn_spec){0};
        g->image = image;
        cvm_pool_settings ps;
        settings_of(fns, &g->spec, g->image, &ps);
        int r = cvm_pool_fn_new(fns->pool, name, &ps, g, &g->pool, err);
        if (r < 0) {
                gen_free(g);
                return r;
        }
        *ret = g;
        return 0;
}

/* PUT. */

static void put_unlink(cvm_fn_put *p) {
        cvm_functions *fns = p->fns;
        CVM_LIST_REMOVE(fns->puts, p);
}

static void put_free(cvm_fn_put *p) {
        put_unlink(p);
        cvm_image_cache_cancel(p->image_req);
        cvm_image_unref(p->image);
        cvm_fn_spec_done(&p->spec);
        json_decref(p->spec_json);
        free(p->tenant);
        free(p);
}

static void put_finish(cvm_fn_put *p, cvm_function *fn, bool created, const cvm_error *err) {
        if (p->cb)
                p->cb(fn, created, err, p->userdata);
        put_free(p);
}

/* The spec is stored: make it live. */
static void put_apply(cvm_fn_put *p) {
        cvm_functions *fns = p->fns;
        cvm_error err = {0};
        cvm_function *fn = cvm_functions_find(fns, p->name);
        bool created = !fn;
        int64_t now_ms = cvm_wall_ms();
        if (!fn && !p->image) {
                /* A pool update has no image of its own to create from (a delete
                 * waits for updates, so this is only a guard). */
                cvm_error_set(&err, -ENOENT, "function %s was deleted during the update", p->name);
                put_finish(p, NULL, false, &err);
                return;
        }
        /* A file replaced at the same path measures differently: new VMs. (A
         * file merely touched, or re-measured after the cache dropped it,
         * keeps them.) */
        if (fn && same_vms(&fn->gen->spec, &p->spec) &&
            (!p->image ||
             memcmp(p->image->digest, fn->gen->image->digest, sizeof(p->image->digest)) == 0)) {
                /* Only limits or pool settings changed: keep the warm VMs. */
                cvm_pool_settings ps;
                settings_of(fns, &p->spec, fn->gen->image, &ps);
                if (cvm_pool_fn_update(fn->gen->pool, &ps, &err) < 0) {
                        put_finish(p, NULL, false, &err);
                        return;
                }
                cvm_fn_spec_done(&fn->gen->spec);
                fn->gen->spec = p->spec;
                p->spec = (cvm_fn_spec){0};
        } else {
                fn_gen *g = NULL;
                cvm_image *img = p->image;
                p->image = NULL;
                if (gen_new(fns, p->name, &p->spec, img, &g, &err) < 0) {
                        put_finish(p, NULL, false, &err);
                        return;
                }
                if (!fn) {
                        fn = calloc(1, sizeof(*fn));
                        if (!fn) {
                                gen_drain(g);
                                cvm_error_set(&err, -ENOMEM, "out of memory");
                                put_finish(p, NULL, false, &err);
                                return;
                        }
                        fn->fns = fns;
                        snprintf(fn->name, sizeof(fn->name), "%s", p->name);
                        fn->tenant = CVM_TAKE_PTR(p->tenant);
                        fn->created_ms = now_ms;
                        registry_add(fns, fn);
                } else {
                        log_info("function %s replaced: draining its old VMs", fn->name);
                        /* What waits for a VM waits for one of the new
                         * version: a deploy under load fails nobody. */
                        for (cvm_invocation *inv = fns->invs; inv; inv = inv->next)
                                if (inv->gen == fn->gen && inv->waiter)
                                        inv->gen = g;
                        cvm_pool_fn_move_waiters(fn->gen->pool, g->pool);
                        gen_drain(fn->gen);
                }
                fn->gen = g;
        }
        json_decref(fn->spec_json);
        fn->spec_json = json_incref(p->spec_json);
        fn->updated_ms = now_ms;
        if (!fn->created_ms)
                fn->created_ms = now_ms;
        log_info("function %s %s", fn->name, created ? "created" : "updated");
        put_finish(p, fn, created, NULL);
}

static void on_put_stored(int result, void *ud) {
        cvm_fn_put *p = ud;
        if (result < 0) {
                cvm_error err;
                cvm_error_set(&err, result, "function %s could not be stored; nothing changed",
                              p->name);
                put_finish(p, NULL, false, &err);
                return;
        }
        put_apply(p);
}

static void put_store(cvm_fn_put *p) {
        _cleanup_free_ char *text = json_dumps(p->spec_json, JSON_COMPACT | JSON_SORT_KEYS);
        cvm_error err = {0};
        if (!text) {
                cvm_error_set(&err, -ENOMEM, "out of memory");
                put_finish(p, NULL, false, &err);
                return;
        }
        cvm_store_val v[] = {CVM_STORE_S(p->name), CVM_STORE_S(text), CVM_STORE_I(cvm_wall_ms()),
                             CVM_STORE_S(p->tenant)};
        int r = cvm_store_write(p->fns->d.store, CVM_STORE_FUNCTION_PUT, v, CVM_ARRAY_SIZE(v),
                                on_put_stored, p);
        if (r < 0) {
                cvm_error_set(&err, r == -EAGAIN ? -EAGAIN : r,
                              "function %s could not be stored (the store is overloaded); "
                              "nothing changed",
                              p->name);
                put_finish(p, NULL, false, &err);
        }
}

static void on_put_image(cvm_image *img, const cvm_error *err, void *ud) {
        cvm_fn_put *p = ud;
        p->image_req = NULL;
        if (!img) {
                cvm_error e = *err;
                cvm_error_prefix(&e, "image: ");
                put_finish(p, NULL, false, &e);
                return;
        }
        p->image = img;
        put_store(p);
}

/* The update of name in flight, if any. */
static const cvm_fn_put *put_find(const cvm_functions *fns, const char *name) {
        for (const cvm_fn_put *q = fns->puts; q; q = q->next)
                if (strcmp(q->name, name) == 0)
                        return q;
        return NULL;
}

/* Functions that exist or are being created: what functions.max bounds. */
static uint32_t functions_counted(const cvm_functions *fns) {
        uint32_t n = fns->count;
        for (const cvm_fn_put *q = fns->puts; q; q = q->next)
                if (!cvm_functions_find((cvm_functions *)fns, q->name))
                        n++;
        return n;
}

static int put_start(cvm_functions *fns, const char *name, const char *tenant, json_t *spec_json,
                     cvm_fn_spec *spec, bool measure, cvm_fn_put_cb cb, void *userdata,
                     cvm_fn_put **ret, cvm_error *err) {
        if (put_find(fns, name))
                return cvm_error_set(err, -EBUSY, "function %s is being updated by another request",
                                     name);
        cvm_fn_put *p = calloc(1, sizeof(*p));
        if (!p)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        p->fns = fns;
        snprintf(p->name, sizeof(p->name), "%s", name);
        if (tenant && !(p->tenant = strdup(tenant))) {
                free(p);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        p->spec = *spec;
        *spec = (cvm_fn_spec){0};
        p->spec_json = json_incref(spec_json);
        p->cb = cb;
        p->userdata = userdata;
        CVM_LIST_PREPEND(fns->puts, p);
        if (measure) {
                int r = cvm_image_cache_get(fns->d.images, &p->spec.image, on_put_image, p,
                                            &p->image_req, err);
                if (r < 0) {
                        p->cb = NULL;
                        put_free(p);
                        return r;
                }
        } else {
                put_store(p);
        }
        if (ret)
                *ret = p;
        return 0;
}

bool cvm_function_visible(const cvm_function *fn, const char *tenant) {
        return !tenant || (fn->tenant && strcmp(fn->tenant, tenant) == 0);
}

int cvm_functions_put(cvm_functions *fns, const char *name, const char *tenant, json_t *spec_json,
                      cvm_fn_put_cb cb, void *userdata, cvm_fn_put **ret, cvm_error *err) {
        int r = cvm_function_name_check(name, err);
        if (r < 0)
                return r;
        cvm_function *existing = cvm_functions_find(fns, name);
        /* Another tenant's function does not exist for this caller, nor does
         * one another tenant is creating. */
        if (existing && !cvm_function_visible(existing, tenant))
                return cvm_error_set(err, -ENOENT, "no function %s", CVM_QUOTE(name));
        const cvm_fn_put *creating = existing ? NULL : put_find(fns, name);
        if (creating && tenant && (!creating->tenant || strcmp(creating->tenant, tenant) != 0))
                return cvm_error_set(err, -ENOENT, "no function %s", CVM_QUOTE(name));
        if (!existing && functions_counted(fns) >= fns->d.max_functions)
                return cvm_error_set(err, -ENOSPC, "too many functions: at most %u",
                                     fns->d.max_functions);
        cvm_fn_spec spec;
        if ((r = cvm_fn_spec_parse(spec_json, &fns->d.limits, &spec, err)) < 0)
                return r;
        /* A replacement keeps its owner. */
        r = put_start(fns, name, existing ? existing->tenant : tenant, spec_json, &spec, true, cb,
                      userdata, ret, err);
        cvm_fn_spec_done(&spec);
        return r;
}

void cvm_fn_put_forget(cvm_fn_put *put) {
        if (put)
                put->cb = NULL;
}

int cvm_function_set_pool(cvm_function *fn, json_t *pool, cvm_fn_put_cb cb, void *userdata,
                          cvm_error *err) {
        /* The stored spec with a new pool section, validated as a whole. */
        json_auto_t *spec_json = json_deep_copy(fn->spec_json);
        json_t *merged = json_object_get(spec_json, "pool");
        if (!merged) {
                merged = json_object();
                json_object_set_new(spec_json, "pool", merged);
        }
        json_object_update(merged, pool);
        cvm_fn_spec spec;
        int r = cvm_fn_spec_parse(spec_json, &fn->fns->d.limits, &spec, err);
        if (r < 0)
                return r;
        /* The image is unchanged: the measurement the function has stands. */
        cvm_fn_put *p;
        r = put_start(fn->fns, fn->name, fn->tenant, spec_json, &spec, false, cb, userdata, &p,
                      err);
        cvm_fn_spec_done(&spec);
        return r;
}

int cvm_functions_delete(cvm_functions *fns, const char *name, cvm_error *err) {
        cvm_function *fn = cvm_functions_find(fns, name);
        if (!fn)
                return cvm_error_set(err, -ENOENT, "no function %s", CVM_QUOTE(name));
        /* The update's store write is queued before this delete's: applied
         * after it, it would bring the function back in memory only. */
        if (put_find(fns, name))
                return cvm_error_set(err, -EBUSY, "function %s is being updated by another request",
                                     name);
        cvm_store_val v[] = {CVM_STORE_S(name)};
        int r = cvm_store_write(fns->d.store, CVM_STORE_FUNCTION_DELETE, v, 1, NULL, NULL);
        if (r < 0)
                return cvm_error_set(err, r, "the store is overloaded; function %s is kept", name);
        registry_remove(fns, fn);
        log_info("function %s deleted: draining its VMs", fn->name);
        gen_drain(fn->gen);
        json_decref(fn->spec_json);
        free(fn->tenant);
        free(fn);
        return 0;
}

json_t *cvm_function_to_json(const cvm_function *fn) {
        json_t *j = json_pack(
                "{s:s, s:s?, s:I, s:I, s:s, s:f, s:o, s:o}", "name", fn->name, "tenant", fn->tenant,
                "created_at_ms", (json_int_t)fn->created_ms, "updated_at_ms",
                (json_int_t)fn->updated_ms, "measurement", fn->gen->image->digest_hex,
                "expected_psp_ms", (double)(fn->gen->image->psp_ns / 1000) / 1e3, "spec",
                cvm_fn_spec_to_json(&fn->gen->spec), "pool", cvm_pool_fn_to_json(fn->gen->pool));
        return j;
}

json_t *cvm_functions_pool_json(cvm_functions *fns) {
        cvm_pool_stats st;
        cvm_pool_get_stats(fns->pool, &st);
        return json_pack("{s:i, s:i, s:I, s:I, s:i}", "functions", (int)st.functions, "vms",
                         (int)st.vms, "memory_mib", (json_int_t)st.memory_mib_in_use,
                         "budget_memory_mib", (json_int_t)st.budget.memory_mib, "budget_vms",
                         (int)st.budget.vms);
}

/* Restore. */

typedef struct restore_ctx {
        cvm_functions *fns;
        int restored, failed;
} restore_ctx;

static void on_restored(cvm_function *fn, bool created, const cvm_error *err, void *ud) {
        (void)created;
        (void)ud;
        if (err)
                log_error("function could not be restored: %s", err->message);
        else
                log_info("function %s restored", fn->name);
}

static int restore_row(sqlite3_stmt *row, void *ud, cvm_error *err) {
        (void)err;
        restore_ctx *c = ud;
        const char *name = (const char *)sqlite3_column_text(row, 0);
        const char *text = (const char *)sqlite3_column_text(row, 1);
        const char *tenant = (const char *)sqlite3_column_text(row, 2);
        json_auto_t *spec = NULL;
        cvm_error e = {0};
        if (!name || !text || cvm_json_parse_object(text, strlen(text), &spec, &e) < 0 ||
            cvm_functions_put(c->fns, name, tenant, spec, on_restored, NULL, NULL, &e) < 0) {
                /* One bad row must not keep the others down. */
                log_error("function %s could not be restored: %s", name ? name : "?", e.message);
                c->failed++;
                return 0;
        }
        c->restored++;
        return 0;
}

int cvm_functions_restore(cvm_functions *fns, cvm_error *err) {
        restore_ctx c = {.fns = fns};
        int r = cvm_store_read(fns->d.store,
                               "SELECT name, spec, tenant FROM functions ORDER BY name",
                               restore_row, &c, err);
        if (r < 0)
                return r;
        if (c.restored || c.failed)
                log_info("restoring %d function(s) (%d could not be)", c.restored, c.failed);
        return 0;
}

/* Async results. */

static void async_unlink(cvm_functions *fns, async_entry *e) {
        CVM_QUEUE_REMOVE(fns->async_head, fns->async_tail, e);
        fns->async_count--;
        json_decref(e->result);
        free(e->tenant);
        free(e);
}

static void on_async_sweep(cvm_timer *t, void *ud) {
        cvm_functions *fns = ud;
        uint64_t now = cvm_clock_now(fns->d.clock);
        for (async_entry *e = fns->async_head, *next; e; e = next) {
                next = e->next;
                if (e->done && e->expires_ns <= now)
                        async_unlink(fns, e);
        }
        if (fns->async_head)
                cvm_timer_start(t, ASYNC_SWEEP_MS * CVM_NSEC_PER_MSEC);
}

static async_entry *async_add(cvm_functions *fns, const char *id, const char *function,
                              const char *tenant, cvm_error *err) {
        if (fns->async_count >= fns->d.async_max) {
                /* Make room by forgetting the oldest finished result. */
                async_entry *old = NULL;
                for (async_entry *e = fns->async_head; e && !old; e = e->next)
                        if (e->done)
                                old = e;
                if (!old) {
                        cvm_error_set(err, -EAGAIN, "too many async invocations in flight (%u)",
                                      fns->d.async_max);
                        return NULL;
                }
                async_unlink(fns, old);
        }
        async_entry *e = calloc(1, sizeof(*e));
        if (!e) {
                cvm_error_set(err, -ENOMEM, "out of memory");
                return NULL;
        }
        snprintf(e->id, sizeof(e->id), "%s", id);
        snprintf(e->function, sizeof(e->function), "%s", function);
        if (tenant && !(e->tenant = strdup(tenant))) {
                free(e);
                cvm_error_set(err, -ENOMEM, "out of memory");
                return NULL;
        }
        e->started_ms = cvm_wall_ms();
        CVM_QUEUE_APPEND(fns->async_head, fns->async_tail, e);
        fns->async_count++;
        if (!cvm_timer_active(fns->async_sweep))
                cvm_timer_start(fns->async_sweep, ASYNC_SWEEP_MS * CVM_NSEC_PER_MSEC);
        return e;
}

static json_t *bytes_b64(const uint8_t *p, size_t n) {
        size_t cap = 4 * ((n + 2) / 3) + 1;
        _cleanup_free_ unsigned char *out = malloc(cap);
        if (!out)
                return json_null();
        int len = EVP_EncodeBlock(out, p ? p : (const uint8_t *)"", (int)n);
        return json_stringn((const char *)out, (size_t)len);
}

static double ms(uint64_t ns) {
        return (double)(ns / 1000) / 1e3;
}

static json_t *result_json(const cvm_inv_result *r) {
        json_t *j = json_pack(
                "{s:s, s:s, s:s?, s:s, s:i, s:s, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:f}}", "id",
                r->id, "function", r->function, "vm_id", r->vm_id, "status", r->status,
                "http_status", (int)r->http_status, "start", r->cold ? "cold" : "warm", "phases",
                "queue_ms", ms(r->queue_ns), "prepare_ms", ms(r->prepare_ns), "psp_wait_ms",
                ms(r->psp_wait_ns), "psp_ms", ms(r->psp_ns), "boot_ms", ms(r->boot_ns), "exec_ms",
                ms(r->exec_ns), "total_ms", ms(r->total_ns));
        if (!j)
                return NULL;
        if (r->http_status == 200) {
                json_object_set_new(j, "output_base64", bytes_b64(r->output, r->output_len));
        } else {
                json_object_set_new(j, "error", json_string(r->error_code));
                json_object_set_new(j, "message", json_string(r->message));
        }
        if (r->exit_code >= 0)
                json_object_set_new(j, "exit_code", json_integer(r->exit_code));
        return j;
}

json_t *cvm_functions_async_result(cvm_functions *fns, const char *id, const char *tenant) {
        for (async_entry *e = fns->async_tail; e; e = e->prev)
                if (strcmp(e->id, id) == 0) {
                        if (tenant && (!e->tenant || strcmp(tenant, e->tenant) != 0))
                                return NULL;
                        if (e->done)
                                return json_incref(e->result);
                        return json_pack("{s:s, s:s, s:s, s:I}", "id", e->id, "function",
                                         e->function, "status", "running", "started_at_ms",
                                         (json_int_t)e->started_ms);
                }
        return NULL;
}

/* Invocations. */

const char *cvm_invocation_id(const cvm_invocation *inv) {
        return inv->id;
}

static void inv_free(cvm_invocation *inv) {
        CVM_LIST_REMOVE(inv->fns->invs, inv);
        cvm_timer_free(inv->deadline);
        free(inv->body_copy);
        free(inv);
}

static void record(cvm_invocation *inv, const cvm_inv_result *r) {
        cvm_invocation_record rec = {
                .id = r->id,
                .function = r->function,
                .vm_id = r->vm_id,
                .start_kind = r->cold ? "cold" : "warm",
                .status = r->status,
                .error = r->http_status == 200 ? NULL : r->message,
                .started_ms = inv->started_ms,
                .queue_ns = r->queue_ns,
                .psp_wait_ns = r->psp_wait_ns,
                .psp_ns = r->psp_ns,
                .boot_ns = r->boot_ns + r->prepare_ns,
                .exec_ns = r->exec_ns,
                .total_ns = r->total_ns,
                .exit_code = r->exit_code,
                .bytes_in = inv->len,
                .bytes_out = r->output_len,
        };
        cvm_vms_record_invocation(inv->fns->d.vms, &rec);
}

/* The row of an invocation that never reached a VM and is answered by its
 * caller, without a callback. */
static void record_unrun(cvm_invocation *inv, const char *status, const cvm_error *err) {
        cvm_inv_result r = {.id = inv->id,
                            .function = inv->gen->name,
                            .status = status,
                            .http_status = cvm_http_status_for_errno(err->code),
                            .message = err->message,
                            .exit_code = -1,
                            .total_ns = cvm_clock_now(inv->fns->d.clock) - inv->arrived_ns};
        record(inv, &r);
}

/* Every invocation ends here exactly once. */
static void finish(cvm_invocation *inv, cvm_inv_result *r) {
        r->id = inv->id;
        r->function = inv->gen->name;
        r->total_ns = cvm_clock_now(inv->fns->d.clock) - inv->arrived_ns;
        /* The caller is answered first: the record (a store write, metrics)
         * is bookkeeping and stays off the answer's path. */
        if (inv->entry) {
                inv->entry->done = true;
                inv->entry->finished_ms = cvm_wall_ms();
                inv->entry->expires_ns = cvm_clock_now(inv->fns->d.clock) +
                                         (uint64_t)inv->fns->d.async_retention_s * CVM_NSEC_PER_SEC;
                inv->entry->result = result_json(r);
        } else if (!inv->forgotten && inv->cb) {
                inv->cb(inv, r, inv->userdata);
        }
        record(inv, r);
        inv_free(inv);
}

static void finish_error(cvm_invocation *inv, unsigned status, const char *code,
                         const char *inv_status, const char *message) {
        cvm_inv_result r = {.status = inv_status,
                            .http_status = status,
                            .error_code = code,
                            .message = message,
                            .exit_code = -1,
                            .queue_ns = inv->queue_ns};
        finish(inv, &r);
}

void cvm_log_handler_stderr(const char *inv_id, const char *vm_id, const cvm_agent_result *a) {
        if (!a || !a->stderr_len)
                return;
        /* The tail is not NUL-terminated: log its last bytes, bounded. */
        char tail[161];
        size_t n = a->stderr_len < sizeof(tail) - 1 ? a->stderr_len : sizeof(tail) - 1;
        memcpy(tail, a->stderr_tail + (a->stderr_len - n), n);
        tail[n] = '\0';
        log_info("%s on %s: handler stderr: %s", inv_id, vm_id, CVM_QUOTE(tail));
}

void cvm_inv_result_from_outcome(const cvm_vm_outcome *out, uint32_t timeout_ms, cvm_inv_result *r,
                                 char *msg, size_t msg_size) {
        const cvm_agent_result *a = out->agent;
        r->exit_code = -1;
        r->exec_ns = out->exec_ns;
        r->message = msg;
        msg[0] = '\0';
        if (!a) {
                snprintf(msg, msg_size, "vm %s failed during the invocation: %s",
                         r->vm_id ? r->vm_id : "-", out->err->message);
                bool timeout = out->result == -ETIMEDOUT;
                r->status = timeout ? "timeout" : "vm_failed";
                r->http_status = timeout ? 504 : 502;
                r->error_code = timeout ? "timeout" : "bad_gateway";
                return;
        }
        r->stderr_tail = a->stderr_tail;
        r->stderr_len = a->stderr_len;
        switch (a->status) {
        case CVM_AGENT_STATUS_OK:
                r->status = "ok";
                r->http_status = 200;
                r->exit_code = 0;
                r->output = a->output;
                r->output_len = a->output_len;
                return;
        case CVM_AGENT_STATUS_TIMEOUT:
                snprintf(msg, msg_size, "the handler ran past its timeout of %u ms", timeout_ms);
                r->status = "timeout";
                r->http_status = 504;
                r->error_code = "timeout";
                return;
        case CVM_AGENT_STATUS_BUSY:
                snprintf(msg, msg_size, "the VM runs its maximum of invocations");
                r->status = "rejected";
                r->http_status = 429;
                r->error_code = "overloaded";
                r->retry_after_s = 1;
                return;
        case CVM_AGENT_STATUS_FAILED:
                r->term_signal = a->term_signal;
                if (a->term_signal) {
                        snprintf(msg, msg_size, "the handler was killed by signal %u",
                                 a->term_signal);
                } else {
                        r->exit_code = a->exit_code;
                        snprintf(msg, msg_size, "the handler exited with status %u", a->exit_code);
                }
                break;
        case CVM_AGENT_STATUS_TOO_LARGE:
                snprintf(msg, msg_size, "the handler's response is larger than the limit");
                break;
        default: snprintf(msg, msg_size, "the handler could not be started"); break;
        }
        r->status = "failed";
        r->http_status = 500;
        r->error_code = "function_failed";
}

static void on_vm_result(cvm_vm *vm, const cvm_vm_outcome *out, void *ud) {
        cvm_invocation *inv = ud;
        char msg[CVM_ERROR_MESSAGE_MAX];
        cvm_inv_result r = {.vm_id = vm->id, .cold = inv->cold, .queue_ns = inv->queue_ns};
        if (inv->cold) {
                r.prepare_ns = vm->prepare_ns;
                r.psp_wait_ns = vm->psp_wait_ns;
                r.psp_ns = vm->psp_ns;
                r.boot_ns = vm->boot_ns;
        }
        cvm_inv_result_from_outcome(out, inv->gen->spec.timeout_ms, &r, msg, sizeof(msg));
        cvm_log_handler_stderr(inv->id, vm->id, out->agent);
        /* Answered (the answer leaves at the end of the loop turn) and recorded
         * first: releasing the VM can end a deleted function's drain and free
         * what finish reads. The next invocation still gets the VM in this turn. */
        cvm_pool_vm *pvm = inv->pvm;
        inv->pvm = NULL;
        finish(inv, &r);
        cvm_pool_release(pvm);
}

/* Sends the invocation to the VM behind pvm; on failure the slot is back
 * in the pool and the caller decides how the invocation ends. */
static int run_on(cvm_invocation *inv, cvm_pool_vm *pvm, cvm_error *err) {
        inv->pvm = pvm;
        cvm_vm *vm = cvm_pool_vm_handle(pvm);
        cvm_vm_invocation vi = {.invocation_id = inv->id,
                                .start_kind = inv->cold ? "cold" : "warm",
                                .queue_ns = inv->queue_ns};
        int r = cvm_vm_invoke(vm, &vi, inv->gen->spec.timeout_ms, inv->body, inv->len, on_vm_result,
                              inv, err);
        if (r < 0) {
                cvm_pool_release(pvm);
                inv->pvm = NULL;
                cvm_error_prefix(err, "the VM could not take the invocation: ");
                return -EPROTO;
        }
        return 0;
}

static void on_grant(cvm_pool_waiter *w, const cvm_pool_grant *g, void *ud) {
        (void)w;
        cvm_invocation *inv = ud;
        inv->waiter = NULL;
        cvm_timer_stop(inv->deadline);
        inv->queue_ns = g->queue_ns;
        if (!g->vm) {
                unsigned status = cvm_http_status_for_errno(g->err->code);
                finish_error(inv, status, cvm_error_code_name(g->err->code), "failed_to_start",
                             g->err->message);
                return;
        }
        inv->cold = g->cold;
        if (inv->cold) {
                /* The launch phases overlap the wait: the queue is what is left. */
                cvm_vm *vm = cvm_pool_vm_handle(g->vm);
                uint64_t launch = vm->prepare_ns + vm->psp_wait_ns + vm->psp_ns + vm->boot_ns;
                inv->queue_ns = g->queue_ns > launch ? g->queue_ns - launch : 0;
        }
        cvm_error err = {0};
        if (run_on(inv, g->vm, &err) < 0)
                finish_error(inv, 502, "bad_gateway", "vm_failed", err.message);
}

static void on_deadline(cvm_timer *t, void *ud) {
        (void)t;
        cvm_invocation *inv = ud;
        cvm_pool_cancel(inv->waiter);
        inv->waiter = NULL;
        inv->queue_ns = cvm_clock_now(inv->fns->d.clock) - inv->arrived_ns;
        char msg[160];
        snprintf(msg, sizeof(msg), "no VM of %s became available within %u ms", inv->gen->name,
                 inv->gen->spec.timeout_ms);
        finish_error(inv, 504, "timeout", "timeout", msg);
}

int cvm_function_invoke(cvm_function *fn, const void *body, size_t len, bool async, cvm_inv_cb cb,
                        void *userdata, cvm_invocation **ret, uint32_t *ret_retry_after_s,
                        cvm_error *err) {
        if (ret_retry_after_s)
                *ret_retry_after_s = 1;
        cvm_functions *fns = fn->fns;
        fn_gen *g = fn->gen;
        if (len > g->spec.max_request_bytes)
                return cvm_error_set(err, -EMSGSIZE,
                                     "request body of %zu bytes exceeds max_request_bytes (%llu) "
                                     "of %s",
                                     len, (unsigned long long)g->spec.max_request_bytes, fn->name);
        cvm_invocation *inv = calloc(1, sizeof(*inv));
        if (!inv)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        inv->fns = fns;
        CVM_LIST_PREPEND(fns->invs, inv);
        inv->gen = g;
        inv->cb = cb;
        inv->userdata = userdata;
        inv->async = async;
        inv->arrived_ns = cvm_clock_now(fns->d.clock);
        inv->started_ms = cvm_wall_ms();
        inv->body = body;
        inv->len = len;
        int r = cvm_random_id("inv-", inv->id, sizeof(inv->id), err);
        if (r >= 0 && async && len) {
                /* The request is answered before the invocation runs. */
                if (!(inv->body_copy = malloc(len)))
                        r = cvm_error_set(err, -ENOMEM, "out of memory");
                else
                        inv->body = memcpy(inv->body_copy, body, len);
        }
        if (r >= 0)
                r = cvm_timer_new(fns->d.clock, on_deadline, inv, &inv->deadline, err);
        if (r >= 0 && async && !(inv->entry = async_add(fns, inv->id, fn->name, fn->tenant, err)))
                r = err->code;
        if (r < 0) {
                inv_free(inv);
                return r;
        }
        cvm_pool_vm *pvm = NULL;
        r = cvm_pool_acquire(g->pool, on_grant, inv, &pvm, &inv->waiter, err);
        bool taken = r == 1;
        if (taken && (r = run_on(inv, pvm, err)) >= 0)
                r = 1;
        if (r < 0) {
                /* Nothing ran: the caller answers with the error, no callback follows. */
                if (inv->entry)
                        async_unlink(fns, inv->entry);
                if (r == -EAGAIN)
                        cvm_error_prefix(err, "overloaded: ");
                else
                        /* It was taken in (a launch failed at once, or the VM
                         * it got could not take it): it has a row, as if it
                         * had waited. */
                        record_unrun(inv, taken ? "vm_failed" : "failed_to_start", err);
                inv_free(inv);
                return r;
        }
        if (ret)
                *ret = inv;
        if (r == 1)
                return 0;
        /* Waiting: reject early if the PSP's queue makes the deadline hopeless. */
        const cvm_image *img = g->image;
        uint64_t now = cvm_clock_now(fns->d.clock);
        uint64_t start = cvm_sched_predict_start(fns->d.sched, CVM_SCHED_DEMAND, img->psp_ns);
        uint64_t ready = (start > now ? start - now : 0) + img->psp_ns +
                         (uint64_t)(img->spec.firmware_boot_ms + img->spec.kernel_boot_ms) *
                                 CVM_NSEC_PER_MSEC;
        uint64_t deadline = (uint64_t)g->spec.timeout_ms * CVM_NSEC_PER_MSEC;
        if (ready > deadline) {
                cvm_pool_cancel(inv->waiter);
                inv->waiter = NULL;
                if (inv->entry)
                        async_unlink(fns, inv->entry);
                inv_free(inv);
                if (ret)
                        *ret = NULL;
                uint64_t secs = (ready + CVM_NSEC_PER_SEC - 1) / CVM_NSEC_PER_SEC;
                if (ret_retry_after_s)
                        *ret_retry_after_s = secs > UINT32_MAX ? UINT32_MAX : (uint32_t)secs;
                return cvm_error_set(err, -ENOSPC,
                                     "overloaded: a VM of %s would be ready in about %llu s, past "
                                     "its timeout of %u ms; retry after %llu s",
                                     fn->name, (unsigned long long)secs, g->spec.timeout_ms,
                                     (unsigned long long)secs);
        }
        cvm_timer_start(inv->deadline, deadline);
        return 0;
}

void cvm_invocation_forget(cvm_invocation *inv) {
        if (!inv)
                return;
        if (inv->waiter) {
                cvm_pool_cancel(inv->waiter);
                inv->waiter = NULL;
                inv->queue_ns = cvm_clock_now(inv->fns->d.clock) - inv->arrived_ns;
                inv->forgotten = true;
                finish_error(inv, 499, "cancelled", "cancelled",
                             "the client went away while waiting for a VM");
                return;
        }
        inv->forgotten = true;
}

/* Attestations. */

struct cvm_fn_attest {
        cvm_functions *fns;
        uint8_t nonce[64];
        cvm_fn_attest_cb cb;
        void *userdata;
        cvm_pool_waiter *waiter;
        cvm_pool_vm *pvm;
        cvm_timer *deadline; /* While waiting for a VM, as an invocation does. */
        uint32_t timeout_ms;
        char function[CVM_FUNCTION_NAME_MAX + 1];
        bool forgotten;
        struct cvm_fn_attest *prev, *next;
};

static void attest_free(cvm_fn_attest *a) {
        CVM_LIST_REMOVE(a->fns->attests, a);
        cvm_timer_free(a->deadline);
        free(a);
}

static void on_fn_attested(cvm_vm *vm, const cvm_host_attestation *att, const cvm_error *err,
                           void *ud) {
        cvm_fn_attest *a = ud;
        /* The VM is free again before the answer goes out. */
        cvm_pool_release(a->pvm);
        if (!a->forgotten)
                a->cb(vm, att, err, a->userdata);
        attest_free(a);
}

static int fn_attest_on(cvm_fn_attest *a, cvm_pool_vm *pvm, cvm_error *err) {
        cvm_host *host = a->fns->d.host;
        a->pvm = pvm;
        int r = host->ops->attest(host, cvm_pool_vm_handle(pvm), a->nonce, on_fn_attested, a, err);
        if (r < 0)
                cvm_pool_release(pvm);
        return r;
}

static void on_attest_grant(cvm_pool_waiter *w, const cvm_pool_grant *g, void *ud) {
        (void)w;
        cvm_fn_attest *a = ud;
        a->waiter = NULL;
        cvm_timer_stop(a->deadline);
        cvm_error err = {0};
        if (!g->vm || fn_attest_on(a, g->vm, &err) < 0) {
                if (!a->forgotten)
                        a->cb(g->vm ? cvm_pool_vm_handle(g->vm) : NULL, NULL, g->vm ? &err : g->err,
                              a->userdata);
                attest_free(a);
        }
}

static void on_attest_deadline(cvm_timer *t, void *ud) {
        (void)t;
        cvm_fn_attest *a = ud;
        cvm_pool_cancel(a->waiter);
        a->waiter = NULL;
        cvm_error err;
        cvm_error_set(&err, -ETIMEDOUT, "no VM of %s became available within %u ms", a->function,
                      a->timeout_ms);
        if (!a->forgotten)
                a->cb(NULL, NULL, &err, a->userdata);
        attest_free(a);
}

int cvm_function_attest(cvm_function *fn, const uint8_t nonce[64], cvm_fn_attest_cb cb,
                        void *userdata, cvm_fn_attest **ret, cvm_error *err) {
        cvm_fn_attest *a = calloc(1, sizeof(*a));
        if (!a)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        *a = (cvm_fn_attest){.fns = fn->fns,
                             .cb = cb,
                             .userdata = userdata,
                             .timeout_ms = fn->gen->spec.timeout_ms};
        CVM_LIST_PREPEND(fn->fns->attests, a);
        snprintf(a->function, sizeof(a->function), "%s", fn->name);
        memcpy(a->nonce, nonce, sizeof(a->nonce));
        cvm_pool_vm *pvm = NULL;
        int r = cvm_timer_new(fn->fns->d.clock, on_attest_deadline, a, &a->deadline, err);
        if (r >= 0)
                r = cvm_pool_acquire(fn->gen->pool, on_attest_grant, a, &pvm, &a->waiter, err);
        if (r == 1)
                r = fn_attest_on(a, pvm, err);
        else if (r >= 0)
                cvm_timer_start(a->deadline, (uint64_t)a->timeout_ms * CVM_NSEC_PER_MSEC);
        if (r < 0) {
                attest_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

void cvm_fn_attest_forget(cvm_fn_attest *a) {
        if (!a)
                return;
        if (a->waiter) {
                cvm_pool_cancel(a->waiter);
                attest_free(a);
                return;
        }
        a->forgotten = true;
}

/* Lifecycle. */

int cvm_functions_new(const cvm_functions_deps *deps, cvm_functions **ret, cvm_error *err) {
        cvm_functions *fns = calloc(1, sizeof(*fns));
        if (!fns)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        fns->d = *deps;
        int r = cvm_pool_new(deps->clock, &backend, fns, &deps->budget, &fns->pool, err);
        if (r >= 0)
                r = cvm_timer_new(deps->clock, on_async_sweep, fns, &fns->async_sweep, err);
        if (r < 0) {
                cvm_functions_free(fns);
                return r;
        }
        *ret = fns;
        return 0;
}

void cvm_functions_free(cvm_functions *fns) {
        if (!fns)
                return;
        while (fns->puts) {
                fns->puts->cb = NULL;
                put_free(fns->puts);
        }
        /* Invocations and attestations still open at exit end without
         * callbacks: the HTTP server has answered their requests already,
         * and the host stops their VMs without callbacks. Invocations are
         * recorded, and their async results filled. */
        while (fns->invs) {
                cvm_invocation *inv = fns->invs;
                if (inv->waiter) {
                        cvm_pool_cancel(inv->waiter);
                        inv->waiter = NULL;
                        inv->queue_ns = cvm_clock_now(fns->d.clock) - inv->arrived_ns;
                }
                inv->pvm = NULL;
                inv->forgotten = true;
                finish_error(inv, 503, "shutting_down", "cancelled",
                             "the daemon shut down before the invocation ended");
        }
        while (fns->attests) {
                cvm_fn_attest *a = fns->attests;
                cvm_pool_cancel(a->waiter);
                attest_free(a);
        }
        while (fns->async_head)
                async_unlink(fns, fns->async_head);
        /* The pool frees every generation's state without callbacks. */
        for (cvm_function *fn = fns->head, *next; fn; fn = next) {
                next = fn->next;
                json_decref(fn->spec_json);
                free(fn->tenant);
                free(fn);
        }
        cvm_pool_free(fns->pool);
        while (fns->gens)
                gen_free(fns->gens);
        cvm_timer_free(fns->async_sweep);
        free(fns);
}
