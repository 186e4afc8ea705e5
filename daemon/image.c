/* Image and handler specs, and the cache of measured images. Specs are
 * validated on the loop with stat/access only; measurements read and hash
 * the files in the threadpool, one at a time, and report back on the loop. */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "json.h"
#include "path.h"
#include "verifier/bootproto.h"
#include "snp_vmsa.h"

#define DEFAULT_VCPU_TYPE "EPYC-v4"
#define FIELD_NAME_MAX 256

/* One measurement at a time bounds memory to one image's files and leaves
 * the other threadpool threads to the rest of the daemon. */
#define MEASURE_PARALLEL 1

#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- Specs ---- */

static int oom(cvm_error *err) {
        return cvm_error_set(err, -ENOMEM, "out of memory");
}

/* strerror for worker threads too: glibc's GNU strerror_r. */
static const char *errno_string(int e, char *buf, size_t size) {
        return strerror_r(e, buf, size);
}

static int dup_opt(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

void cvm_image_spec_done(cvm_image_spec *spec) {
        if (!spec)
                return;
        free(spec->firmware);
        free(spec->kernel);
        free(spec->initrd);
        free(spec->cmdline);
        free(spec->vcpu_type);
        spec->firmware = spec->kernel = spec->initrd = spec->cmdline = spec->vcpu_type = NULL;
}

int cvm_image_spec_default(cvm_image_spec *ret, cvm_error *err) {
        CVM_CLEANUP(cvm_image_spec_done)
        cvm_image_spec s = {
                .vcpus = 1,
                .memory_mib = 256,
                .guest_policy = UINT64_C(0x30000),
                .guest_features = CVM_SNP_GUEST_FEATURES_DEFAULT,
                /* The verifier on an EPYC host: SHA-256 of a ~12 MB kernel and
                 * initrd with the SHA extensions (~8 ms, tests/bench/verifier-sha),
                 * its fw_cfg copies and page validation (docs/firmware.md); OVMF
                 * takes ~3 s. */
                .firmware_boot_ms = 15,
                .kernel_boot_ms = 125,
        };
        /* cvmd's boot verifier (firmware/verifier), shipped beside cvmd. */
        s.firmware = cvm_path_shipped(CVM_PATH_VERIFIER);
        if (!s.firmware || dup_opt(DEFAULT_VCPU_TYPE, &s.vcpu_type) < 0)
                return oom(err);
        *ret = s;
        s = (cvm_image_spec){0};
        return 0;
}

int cvm_image_spec_copy(const cvm_image_spec *src, cvm_image_spec *ret, cvm_error *err) {
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec s = *src;
        s.firmware = s.kernel = s.initrd = s.cmdline = s.vcpu_type = NULL;
        if (dup_opt(src->firmware, &s.firmware) < 0 || dup_opt(src->kernel, &s.kernel) < 0 ||
            dup_opt(src->initrd, &s.initrd) < 0 || dup_opt(src->cmdline, &s.cmdline) < 0 ||
            dup_opt(src->vcpu_type, &s.vcpu_type) < 0)
                return oom(err);
        *ret = s;
        s = (cvm_image_spec){0};
        return 0;
}

/* Replaces *field with a copy of the string member key, or with NULL for a
 * JSON null when nullable; leaves it alone when key is absent. */
static int get_string_field(json_t *obj, const char *path, const char *key, bool nullable,
                            char **field, cvm_error *err) {
        json_t *v = json_object_get(obj, key);
        if (!v)
                return 0;
        if (nullable && json_is_null(v)) {
                free(*field);
                *field = NULL;
                return 0;
        }
        const char *s = NULL;
        int r = cvm_json_get_string(obj, path, key, false, &s, err);
        if (r < 0)
                return r;
        char *copy = strdup(s);
        if (!copy)
                return oom(err);
        free(*field);
        *field = copy;
        return 0;
}

/* "0x" and 1..16 hex digits. */
static int parse_hex_u64(const char *s, uint64_t *ret) {
        if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || s[2] == '\0' || strlen(s + 2) > 16)
                return -EINVAL;
        uint64_t v = 0;
        for (const char *p = s + 2; *p; p++) {
                unsigned d;
                if (*p >= '0' && *p <= '9')
                        d = (unsigned)(*p - '0');
                else if (*p >= 'a' && *p <= 'f')
                        d = (unsigned)(*p - 'a' + 10);
                else if (*p >= 'A' && *p <= 'F')
                        d = (unsigned)(*p - 'A' + 10);
                else
                        return -EINVAL;
                v = v << 4 | d;
        }
        *ret = v;
        return 0;
}

static int get_hex_field(json_t *obj, const char *path, const char *key, uint64_t *field,
                         cvm_error *err) {
        const char *s = NULL;
        char name[FIELD_NAME_MAX];
        int r = cvm_json_get_string(obj, path, key, false, &s, err);
        if (r < 0)
                return r;
        if (!s)
                return 0;
        if (parse_hex_u64(s, field) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "field '%s' must be a hex string of 1 to 16 digits such as "
                                     "\"0x30000\"",
                                     cvm_json_field_name(name, sizeof(name), path, key));
        return 0;
}

static int check_path(const char *path, const char *key, const char *value, cvm_error *err) {
        char name[FIELD_NAME_MAX];
        if (strlen(value) > CVM_IMAGE_PATH_MAX)
                return cvm_error_set(err, -EINVAL, "field '%s' must be at most %u bytes",
                                     cvm_json_field_name(name, sizeof(name), path, key),
                                     CVM_IMAGE_PATH_MAX);
        if (value[0] != '/')
                return cvm_error_set(err, -EINVAL, "field '%s' must be an absolute path",
                                     cvm_json_field_name(name, sizeof(name), path, key));
        return 0;
}

static int range_error(const char *path, const char *key, uint64_t min, uint64_t max,
                       cvm_error *err) {
        char name[FIELD_NAME_MAX];
        return cvm_error_set(err, -EINVAL, "field '%s' must be between %" PRIu64 " and %" PRIu64,
                             cvm_json_field_name(name, sizeof(name), path, key), min, max);
}

/* Everything about a spec but its files, for specs parsed or built in code. */
static int check_spec(const cvm_image_spec *s, const char *path, cvm_error *err) {
        char name[FIELD_NAME_MAX];
        int r;
        if (!s->firmware)
                return cvm_error_set(err, -EINVAL, "missing field '%s'",
                                     cvm_json_field_name(name, sizeof(name), path, "firmware"));
        const struct {
                const char *key, *value;
        } paths[] = {{"firmware", s->firmware}, {"kernel", s->kernel}, {"initrd", s->initrd}};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(paths); i++)
                if (paths[i].value && (r = check_path(path, paths[i].key, paths[i].value, err)) < 0)
                        return r;
        if (s->cmdline && strlen(s->cmdline) > CVM_IMAGE_CMDLINE_MAX)
                return cvm_error_set(err, -EINVAL, "field '%s' must be at most %u bytes",
                                     cvm_json_field_name(name, sizeof(name), path, "cmdline"),
                                     CVM_IMAGE_CMDLINE_MAX);
        if (!s->kernel && (s->initrd || s->cmdline)) {
                char kernel[FIELD_NAME_MAX];
                return cvm_error_set(err, -EINVAL, "field '%s' needs field '%s'",
                                     cvm_json_field_name(name, sizeof(name), path,
                                                         s->initrd ? "initrd" : "cmdline"),
                                     cvm_json_field_name(kernel, sizeof(kernel), path, "kernel"));
        }
        if (s->vcpus < 1 || s->vcpus > CVM_IMAGE_VCPUS_MAX)
                return range_error(path, "vcpus", 1, CVM_IMAGE_VCPUS_MAX, err);
        if (s->memory_mib < CVM_IMAGE_MEMORY_MIB_MIN || s->memory_mib > CVM_IMAGE_MEMORY_MIB_MAX)
                return range_error(path, "memory_mib", CVM_IMAGE_MEMORY_MIB_MIN,
                                   CVM_IMAGE_MEMORY_MIB_MAX, err);
        if (s->firmware_boot_ms > CVM_IMAGE_BOOT_MS_MAX)
                return range_error(path, "firmware_boot_ms", 0, CVM_IMAGE_BOOT_MS_MAX, err);
        if (s->kernel_boot_ms > CVM_IMAGE_BOOT_MS_MAX)
                return range_error(path, "kernel_boot_ms", 0, CVM_IMAGE_BOOT_MS_MAX, err);
        if (!(s->guest_policy & CVM_IMAGE_POLICY_RESERVED1))
                return cvm_error_set(err, -EINVAL,
                                     "field '%s' is 0x%" PRIx64
                                     " but must set bit 17 (reserved, must be one)",
                                     cvm_json_field_name(name, sizeof(name), path, "guest_policy"),
                                     s->guest_policy);
        if (s->guest_policy & CVM_IMAGE_POLICY_MBZ)
                return cvm_error_set(err, -EINVAL,
                                     "field '%s' is 0x%" PRIx64
                                     " but bits 63:26 are reserved and must be zero",
                                     cvm_json_field_name(name, sizeof(name), path, "guest_policy"),
                                     s->guest_policy);
        if (!(s->guest_features & CVM_SNP_GUEST_FEATURES_DEFAULT))
                return cvm_error_set(
                        err, -EINVAL, "field '%s' is 0x%" PRIx64 " but must set bit 0 (SNPActive)",
                        cvm_json_field_name(name, sizeof(name), path, "guest_features"),
                        s->guest_features);
        cvm_json_field_name(name, sizeof(name), path, "vcpu_type");
        if (!s->vcpu_type)
                return cvm_error_set(err, -EINVAL, "missing field '%s'", name);
        if (strlen(s->vcpu_type) > CVM_IMAGE_VCPU_TYPE_MAX)
                return cvm_error_set(err, -EINVAL, "field '%s' must be at most %u bytes", name,
                                     CVM_IMAGE_VCPU_TYPE_MAX);
        uint32_t signature;
        r = cvm_snp_vcpu_signature(s->vcpu_type, &signature, err);
        if (r < 0) {
                if (err)
                        cvm_error_prefix(err, "field '%s': ", name);
                return -EINVAL;
        }
        return 0;
}

/* What identifies the contents of a file without reading it. */
typedef struct file_id {
        bool present;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtim;
} file_id;

enum { FILE_FIRMWARE, FILE_KERNEL, FILE_INITRD, FILE_COUNT };

typedef struct file_rule {
        const char *key;
        uint64_t max;
        bool page_multiple; /* Non-zero multiple of 4 KiB. */
        bool nonempty;
} file_rule;

static const file_rule file_rules[FILE_COUNT] = {
        [FILE_FIRMWARE] = {"firmware", CVM_IMAGE_FIRMWARE_MAX, true, true},
        [FILE_KERNEL] = {"kernel", CVM_IMAGE_KERNEL_MAX, false, true},
        [FILE_INITRD] = {"initrd", CVM_IMAGE_INITRD_MAX, false, false},
};

static const char *spec_file(const cvm_image_spec *s, int i) {
        return i == FILE_FIRMWARE ? s->firmware : i == FILE_KERNEL ? s->kernel : s->initrd;
}

static void file_id_from_stat(const struct stat *st, file_id *ret) {
        *ret = (file_id){
                .present = true,
                .dev = st->st_dev,
                .ino = st->st_ino,
                .size = st->st_size,
                .mtim = st->st_mtim,
        };
}

static bool file_id_equal(const file_id *a, const file_id *b) {
        if (a->present != b->present)
                return false;
        return !a->present ||
               (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
                a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec);
}

static int check_file(const char *path, const file_rule *rule, const char *file, file_id *ret,
                      cvm_error *err) {
        char name[FIELD_NAME_MAX], buf[128];
        struct stat st;
        cvm_json_field_name(name, sizeof(name), path, rule->key);
        if (stat(file, &st) < 0)
                return cvm_error_set(err, -EINVAL, "%s: %s: %s", name, file,
                                     errno_string(errno, buf, sizeof(buf)));
        if (!S_ISREG(st.st_mode))
                return cvm_error_set(err, -EINVAL, "%s: %s: not a regular file", name, file);
        if (access(file, R_OK) < 0)
                return cvm_error_set(err, -EINVAL, "%s: %s: %s", name, file,
                                     errno_string(errno, buf, sizeof(buf)));
        uint64_t size = (uint64_t)st.st_size;
        if (size > rule->max)
                return cvm_error_set(err, -EINVAL,
                                     "%s: %s: %" PRIu64 " bytes, the limit is %" PRIu64, name, file,
                                     size, rule->max);
        if (rule->nonempty && size == 0)
                return cvm_error_set(err, -EINVAL, "%s: %s: empty file", name, file);
        if (rule->page_multiple && size % CVM_SNP_PAGE_SIZE != 0)
                return cvm_error_set(err, -EINVAL,
                                     "%s: %s: %" PRIu64 " bytes is not a multiple of 4 KiB", name,
                                     file, size);
        if (ret)
                file_id_from_stat(&st, ret);
        return 0;
}

/* Checks every file the spec names; fills files (if non-NULL) with their identities. */
static int check_files(const cvm_image_spec *s, const char *path, file_id files[FILE_COUNT],
                       cvm_error *err) {
        for (int i = 0; i < FILE_COUNT; i++) {
                const char *file = spec_file(s, i);
                if (files)
                        files[i] = (file_id){0};
                if (!file)
                        continue;
                int r = check_file(path, &file_rules[i], file, files ? &files[i] : NULL, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int cvm_image_spec_parse(json_t *obj, const cvm_image_spec *defaults, const char *path,
                         cvm_image_spec *ret, cvm_error *err) {
        static const char *const fields[] = {
                "firmware",       "kernel",           "initrd",         "cmdline",
                "vcpus",          "memory_mib",       "guest_policy",   "vcpu_type",
                "guest_features", "firmware_boot_ms", "kernel_boot_ms", NULL,
        };
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec s = {0};
        int r = defaults ? cvm_image_spec_copy(defaults, &s, err) : cvm_image_spec_default(&s, err);
        if (r < 0)
                return r;
        if (obj) {
                if (!json_is_object(obj))
                        return cvm_error_set(err, -EINVAL, "field '%s' must be an object",
                                             path && *path ? path : "image");
                if ((r = cvm_json_check_fields(obj, path, fields, err)) < 0 ||
                    (r = get_string_field(obj, path, "firmware", false, &s.firmware, err)) < 0 ||
                    (r = get_string_field(obj, path, "kernel", true, &s.kernel, err)) < 0 ||
                    (r = get_string_field(obj, path, "initrd", true, &s.initrd, err)) < 0 ||
                    (r = get_string_field(obj, path, "cmdline", true, &s.cmdline, err)) < 0 ||
                    (r = cvm_json_get_u32(obj, path, "vcpus", 1, CVM_IMAGE_VCPUS_MAX, &s.vcpus,
                                          err)) < 0 ||
                    (r = cvm_json_get_u32(obj, path, "memory_mib", CVM_IMAGE_MEMORY_MIB_MIN,
                                          CVM_IMAGE_MEMORY_MIB_MAX, &s.memory_mib, err)) < 0 ||
                    (r = get_hex_field(obj, path, "guest_policy", &s.guest_policy, err)) < 0 ||
                    (r = get_string_field(obj, path, "vcpu_type", false, &s.vcpu_type, err)) < 0 ||
                    (r = get_hex_field(obj, path, "guest_features", &s.guest_features, err)) < 0 ||
                    (r = cvm_json_get_u32(obj, path, "firmware_boot_ms", 0, CVM_IMAGE_BOOT_MS_MAX,
                                          &s.firmware_boot_ms, err)) < 0 ||
                    (r = cvm_json_get_u32(obj, path, "kernel_boot_ms", 0, CVM_IMAGE_BOOT_MS_MAX,
                                          &s.kernel_boot_ms, err)) < 0)
                        return r;
        }
        if ((r = check_spec(&s, path, err)) < 0 || (r = check_files(&s, path, NULL, err)) < 0)
                return r;
        *ret = s;
        s = (cvm_image_spec){0};
        return 0;
}

json_t *cvm_image_spec_to_json(const cvm_image_spec *s) {
        char policy[24], features[24];
        snprintf(policy, sizeof(policy), "0x%" PRIx64, s->guest_policy);
        snprintf(features, sizeof(features), "0x%" PRIx64, s->guest_features);
        return json_pack("{s:s?, s:s?, s:s?, s:s?, s:I, s:I, s:s, s:s?, s:s, s:I, s:I}", "firmware",
                         s->firmware, "kernel", s->kernel, "initrd", s->initrd, "cmdline",
                         s->cmdline, "vcpus", (json_int_t)s->vcpus, "memory_mib",
                         (json_int_t)s->memory_mib, "guest_policy", policy, "vcpu_type",
                         s->vcpu_type, "guest_features", features, "firmware_boot_ms",
                         (json_int_t)s->firmware_boot_ms, "kernel_boot_ms",
                         (json_int_t)s->kernel_boot_ms);
}

/* ---- Handlers ---- */

void cvm_handler_spec_done(cvm_handler_spec *h) {
        if (!h)
                return;
        if (h->argv)
                for (size_t i = 0; i < h->argc; i++)
                        free(h->argv[i]);
        free(h->argv);
        h->argv = NULL;
        h->argc = 0;
}

int cvm_handler_spec_parse(json_t *obj, const char *path, bool check_executable,
                           cvm_handler_spec *ret, cvm_error *err) {
        static const char *const fields[] = {"exec", NULL};
        char name[FIELD_NAME_MAX], buf[128];
        if (!json_is_object(obj))
                return cvm_error_set(err, -EINVAL, "field '%s' must be an object",
                                     path && *path ? path : "handler");
        int r = cvm_json_check_fields(obj, path, fields, err);
        if (r < 0)
                return r;
        cvm_json_field_name(name, sizeof(name), path, "exec");
        json_t *exec = json_object_get(obj, "exec");
        if (!exec)
                return cvm_error_set(err, -EINVAL, "missing field '%s'", name);
        size_t n = json_is_array(exec) ? json_array_size(exec) : 0;
        if (n < 1 || n > CVM_HANDLER_ARGS_MAX)
                return cvm_error_set(err, -EINVAL, "field '%s' must be an array of 1 to %u strings",
                                     name, CVM_HANDLER_ARGS_MAX);
        CVM_CLEANUP(cvm_handler_spec_done) cvm_handler_spec h = {0};
        h.argv = calloc(n + 1, sizeof(*h.argv));
        if (!h.argv)
                return oom(err);
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(exec, i);
                if (!json_is_string(v))
                        return cvm_error_set(err, -EINVAL, "field '%s[%zu]' must be a string", name,
                                             i);
                const char *s = json_string_value(v);
                size_t len = json_string_length(v);
                if (strlen(s) != len)
                        return cvm_error_set(err, -EINVAL,
                                             "field '%s[%zu]' must not contain NUL characters",
                                             name, i);
                if (len > CVM_HANDLER_ARG_MAX)
                        return cvm_error_set(err, -EINVAL,
                                             "field '%s[%zu]' must be at most %u bytes", name, i,
                                             CVM_HANDLER_ARG_MAX);
                if (i == 0 && s[0] != '/')
                        return cvm_error_set(err, -EINVAL, "field '%s[0]' must be an absolute path",
                                             name);
                h.argv[i] = strdup(s);
                if (!h.argv[i])
                        return oom(err);
                h.argc++;
        }
        if (check_executable) {
                struct stat st;
                if (stat(h.argv[0], &st) < 0)
                        return cvm_error_set(err, -EINVAL, "%s[0]: %s: %s", name, h.argv[0],
                                             errno_string(errno, buf, sizeof(buf)));
                if (!S_ISREG(st.st_mode))
                        return cvm_error_set(err, -EINVAL, "%s[0]: %s: not a regular file", name,
                                             h.argv[0]);
                if (access(h.argv[0], X_OK) < 0)
                        return cvm_error_set(err, -EINVAL, "%s[0]: %s: %s", name, h.argv[0],
                                             errno_string(errno, buf, sizeof(buf)));
        }
        *ret = h;
        h = (cvm_handler_spec){0};
        return 0;
}

int cvm_handler_spec_copy(const cvm_handler_spec *src, cvm_handler_spec *ret, cvm_error *err) {
        CVM_CLEANUP(cvm_handler_spec_done) cvm_handler_spec h = {0};
        h.argv = calloc(src->argc + 1, sizeof(*h.argv));
        if (!h.argv)
                return oom(err);
        for (size_t i = 0; i < src->argc; i++) {
                h.argv[i] = strdup(src->argv[i]);
                if (!h.argv[i])
                        return oom(err);
                h.argc++;
        }
        *ret = h;
        h = (cvm_handler_spec){0};
        return 0;
}

json_t *cvm_handler_spec_to_json(const cvm_handler_spec *h) {
        json_t *exec = json_array();
        if (!exec)
                return NULL;
        for (size_t i = 0; i < h->argc; i++)
                if (json_array_append_new(exec, json_string(h->argv[i])) < 0) {
                        json_decref(exec);
                        return NULL;
                }
        return json_pack("{s:o}", "exec", exec);
}

/* ---- Images ---- */

/* A minimal intrusive doubly linked list with a sentinel head. */
typedef struct list_node {
        struct list_node *prev, *next;
} list_node;

static void list_init(list_node *head) {
        head->prev = head->next = head;
}

static bool list_empty(const list_node *head) {
        return head->next == head;
}

static void list_append(list_node *head, list_node *n) {
        n->prev = head->prev;
        n->next = head;
        head->prev->next = n;
        head->prev = n;
}

static void list_remove(list_node *n) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
        n->prev = n->next = n;
}

/* A cached image: the public image, the identity of its files when it was
 * requested (the rest of the cache key is image.spec), and its LRU link. */
typedef struct image_entry {
        cvm_image image;
        file_id files[FILE_COUNT];
        list_node lru; /* In cache->entries while cached; the tail is the most recent. */
} image_entry;

cvm_image *cvm_image_ref(cvm_image *img) {
        if (img)
                img->refs++;
        return img;
}

void cvm_image_unref(cvm_image *img) {
        if (!img || --img->refs > 0)
                return;
        image_entry *e = CONTAINER_OF(img, image_entry, image);
        cvm_image_spec_done(&img->spec);
        free(img->regions);
        free(e);
}

/* ---- The cache ---- */

typedef struct measurement {
        uv_work_t work;
        cvm_image_cache *cache; /* NULL once the cache is freed: after_work then frees it. */
        list_node node;         /* In cache->measurements, in request order. */
        list_node waiters;      /* cvm_image_req.node */
        bool running;
        /* The key; the worker reads it while running, nobody writes it. */
        cvm_image_spec spec;
        file_id files[FILE_COUNT];
        bool plain_guests; /* A copy of the cache's: the worker must not read the cache. */
        /* Written by the worker, read on the loop after it finished. */
        int result;
        cvm_error err;
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        cvm_snp_launch_pages pages;
        uint64_t measure_ns;
} measurement;

struct cvm_image_req {
        list_node node;  /* In a measurement's waiters or in cache->ready. */
        measurement *m;  /* While waiting on m. */
        bool delivering; /* Its callback is running: cancel is a no-op. */
        uint64_t seq;    /* Order in cache->ready. */
        cvm_image_cb cb;
        void *userdata;
        cvm_image *img; /* The result (a reference) once ready; NULL on error. */
        cvm_error err;
};

struct cvm_image_cache {
        uv_loop_t *loop;
        cvm_psp_costs costs;
        size_t max_entries;
        list_node entries;      /* image_entry.lru, least recently used first. */
        list_node measurements; /* measurement.node */
        size_t running;
        list_node ready; /* Requests whose callback is due, delivered by timer. */
        uint64_t ready_seq;
        uv_timer_t timer;
        bool closing;
        bool plain_guests; /* cvm_image_cache_set_plain_guests */
        cvm_image_cache_stats stats;
};

static bool streq_null(const char *a, const char *b) {
        return a && b ? strcmp(a, b) == 0 : a == b;
}

static bool key_equal(const cvm_image_spec *a, const file_id *fa, const cvm_image_spec *b,
                      const file_id *fb) {
        if (!streq_null(a->firmware, b->firmware) || !streq_null(a->kernel, b->kernel) ||
            !streq_null(a->initrd, b->initrd) || !streq_null(a->cmdline, b->cmdline) ||
            !streq_null(a->vcpu_type, b->vcpu_type) || a->vcpus != b->vcpus ||
            a->memory_mib != b->memory_mib || a->guest_policy != b->guest_policy ||
            a->guest_features != b->guest_features || a->firmware_boot_ms != b->firmware_boot_ms ||
            a->kernel_boot_ms != b->kernel_boot_ms)
                return false;
        for (int i = 0; i < FILE_COUNT; i++)
                if (!file_id_equal(&fa[i], &fb[i]))
                        return false;
        return true;
}

static void measurement_free(measurement *m) {
        if (!m)
                return;
        cvm_image_spec_done(&m->spec);
        free(m);
}

static int file_errno(cvm_error *err, int e, const char *key, const char *path) {
        char buf[128];
        return cvm_error_set(err, -e, "image.%s: %s: %s", key, path,
                             errno_string(e, buf, sizeof(buf)));
}

/* Reads the file a request saw, failing if it is no longer that file. */
static int read_file(const char *key, const char *path, const file_id *expect, uint8_t **ret,
                     size_t *ret_len, cvm_error *err) {
        /* O_NONBLOCK: a path swapped for a FIFO since the request must not
         * hang the worker; the identity check below then rejects it. */
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return file_errno(err, errno, key, path);
        struct stat st;
        file_id id;
        if (fstat(fd, &st) < 0)
                return file_errno(err, errno, key, path);
        file_id_from_stat(&st, &id);
        if (!file_id_equal(&id, expect))
                return cvm_error_set(err, -EBUSY, "image.%s: %s: replaced since it was requested",
                                     key, path);
        /* expect->size passed the spec limits, so this allocation is bounded. */
        size_t len = (size_t)expect->size;
        _cleanup_free_ uint8_t *data = malloc(len ? len : 1);
        if (!data)
                return oom(err);
        size_t done = 0;
        for (;;) {
                /* One byte of room past the end notices a file that grew. */
                uint8_t extra;
                uint8_t *dst = done < len ? data + done : &extra;
                size_t want = done < len ? len - done : 1;
                ssize_t n = read(fd, dst, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return file_errno(err, errno, key, path);
                if (n == 0 && done < len)
                        return cvm_error_set(err, -EBUSY, "image.%s: %s: shrank while being read",
                                             key, path);
                if (n == 0)
                        break;
                if (done == len)
                        return cvm_error_set(err, -EBUSY, "image.%s: %s: grew while being read",
                                             key, path);
                done += (size_t)n;
        }
        if (fstat(fd, &st) < 0)
                return file_errno(err, errno, key, path);
        file_id_from_stat(&st, &id);
        if (!file_id_equal(&id, expect))
                return cvm_error_set(err, -EBUSY, "image.%s: %s: changed while being read", key,
                                     path);
        *ret = CVM_TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

typedef struct file_data {
        uint8_t *data[FILE_COUNT];
        size_t len[FILE_COUNT];
} file_data;

static void file_data_done(file_data *d) {
        for (int i = 0; i < FILE_COUNT; i++)
                free(d->data[i]);
}

/* The worker: reads the files and measures them; touches only m's key and results. */
static int measure_files(measurement *m) {
        CVM_CLEANUP(file_data_done) file_data d = {0};
        for (int i = 0; i < FILE_COUNT; i++) {
                const char *file = spec_file(&m->spec, i);
                if (!file)
                        continue;
                int r = read_file(file_rules[i].key, file, &m->files[i], &d.data[i], &d.len[i],
                                  &m->err);
                if (r < 0)
                        return r;
        }
        cvm_snp_launch_input in = {
                .firmware = d.data[FILE_FIRMWARE],
                .firmware_len = d.len[FILE_FIRMWARE],
                .kernel = d.data[FILE_KERNEL],
                .kernel_len = d.len[FILE_KERNEL],
                .initrd = d.data[FILE_INITRD],
                .initrd_len = d.len[FILE_INITRD],
                .cmdline = m->spec.cmdline,
                .vcpus = m->spec.vcpus,
                .vcpu_type = m->spec.vcpu_type,
                .guest_features = m->spec.guest_features,
        };
        /* A host of plain guests boots a kernel from a firmware that cannot carry
         * its hashes: the digest then covers the firmware and VMSAs only, which
         * is all such a guest's (informational) measurement can be. An SNP host
         * never gets here: its measurement refuses the unmeasured kernel. */
        cvm_snp_firmware fw;
        bool parsed =
                in.kernel && cvm_snp_firmware_parse(in.firmware, in.firmware_len, &fw, NULL) >= 0;
        if (parsed && m->plain_guests) {
                bool hashes = false;
                for (size_t i = 0; i < fw.nsections; i++)
                        hashes |= fw.sections[i].kind == CVM_SNP_SECTION_SNP_KERNEL_HASHES;
                if (!hashes) {
                        in.kernel = in.initrd = NULL;
                        in.kernel_len = in.initrd_len = 0;
                        in.cmdline = NULL;
                }
        } else if (parsed && fw.has_verifier_config && !bp_is_bzimage64(in.kernel, in.kernel_len)) {
                /* cvmd's boot verifier boots bzImages through the 64-bit boot
                 * protocol; anything else would halt the guest at its first boot. */
                return cvm_error_set(&m->err, -EINVAL,
                                     "kernel %s: the boot verifier (%s) boots a bzImage with a "
                                     "64-bit entry (boot protocol 2.12 or later), and this is "
                                     "not one (an ELF vmlinux?)",
                                     m->spec.kernel, m->spec.firmware);
        }
        int r = cvm_snp_measure(&in, m->digest, &m->pages, &m->err);
        if (r < 0)
                cvm_error_prefix(&m->err, "measuring %s: ", m->spec.firmware);
        return r;
}

static void measure_work(uv_work_t *work) {
        measurement *m = CONTAINER_OF(work, measurement, work);
        uint64_t start = uv_hrtime();
        m->result = measure_files(m);
        m->measure_ns = uv_hrtime() - start;
}

/* Builds the cached image from a successful measurement, taking its spec. */
static int image_from_measurement(cvm_image_cache *c, measurement *m, image_entry **ret,
                                  cvm_error *err) {
        image_entry *e = calloc(1, sizeof(*e));
        if (!e)
                return oom(err);
        cvm_image *img = &e->image;
        img->refs = 1;
        img->spec = m->spec;
        m->spec = (cvm_image_spec){0};
        memcpy(e->files, m->files, sizeof(e->files));
        list_init(&e->lru);
        memcpy(img->digest, m->digest, sizeof(img->digest));
        cvm_snp_digest_to_hex(img->digest, img->digest_hex);
        img->pages = m->pages;
        img->measure_ns = m->measure_ns;
        img->regions = calloc(img->pages.nregions ? img->pages.nregions : 1, sizeof(*img->regions));
        if (!img->regions) {
                cvm_image_unref(img);
                return oom(err);
        }
        size_t n = 0;
        for (size_t i = 0; i < img->pages.nregions; i++) {
                const cvm_snp_region *r = &img->pages.regions[i];
                if (r->type == CVM_SNP_PAGE_VMSA)
                        continue;
                if (r->npages > UINT32_MAX) {
                        cvm_image_unref(img);
                        return cvm_error_set(err, -E2BIG, "launch region of %" PRIu64 " pages",
                                             r->npages);
                }
                /* cvm_snp_page_type numbers page types as the SNP ABI does. */
                img->regions[n++] = (cvm_psp_region){(uint32_t)r->type, (uint32_t)r->npages};
        }
        img->plan = (cvm_psp_launch_plan){img->regions, n, img->spec.vcpus};
        int r = cvm_psp_plan_validate(&img->plan, err);
        if (r < 0) {
                cvm_image_unref(img);
                return r;
        }
        img->psp_ns = cvm_psp_costs_launch_ns(&c->costs, &img->plan);
        *ret = e;
        return 0;
}

static void on_timer(uv_timer_t *timer);

static void ready_push(cvm_image_cache *c, cvm_image_req *req) {
        req->m = NULL;
        req->seq = ++c->ready_seq;
        list_append(&c->ready, &req->node);
        if (!uv_is_active((uv_handle_t *)&c->timer))
                uv_timer_start(&c->timer, on_timer, 0, 0);
}

static void entries_trim(cvm_image_cache *c) {
        while (c->stats.entries > c->max_entries) {
                image_entry *e = CONTAINER_OF(c->entries.next, image_entry, lru);
                list_remove(&e->lru);
                c->stats.entries--;
                c->stats.evictions++;
                cvm_image_unref(&e->image);
        }
}

/* Ends m: caches its image and queues its waiters' callbacks. */
static void measurement_finish(cvm_image_cache *c, measurement *m) {
        list_remove(&m->node);
        c->stats.pending--;
        if (m->running)
                c->running--;
        c->stats.measurements++;
        image_entry *e = NULL;
        if (m->result >= 0)
                m->result = image_from_measurement(c, m, &e, &m->err);
        if (m->result < 0)
                c->stats.failures++;
        while (!list_empty(&m->waiters)) {
                cvm_image_req *req = CONTAINER_OF(m->waiters.next, cvm_image_req, node);
                list_remove(&req->node);
                if (e)
                        req->img = cvm_image_ref(&e->image);
                else
                        req->err = m->err;
                ready_push(c, req);
        }
        if (e) {
                list_append(&c->entries, &e->lru);
                c->stats.entries++;
                entries_trim(c);
        }
        measurement_free(m);
}

static void measure_after(uv_work_t *work, int status);

static void start_measurements(cvm_image_cache *c) {
        list_node *n = c->measurements.next;
        while (c->running < MEASURE_PARALLEL && n != &c->measurements) {
                measurement *m = CONTAINER_OF(n, measurement, node);
                n = n->next;
                if (m->running)
                        continue;
                int r = uv_queue_work(c->loop, &m->work, measure_work, measure_after);
                if (r < 0) {
                        m->result = cvm_error_set(&m->err, r, "uv_queue_work: %s", uv_strerror(r));
                        measurement_finish(c, m);
                        continue;
                }
                m->running = true;
                c->running++;
        }
}

static void measure_after(uv_work_t *work, int status) {
        measurement *m = CONTAINER_OF(work, measurement, work);
        cvm_image_cache *c = m->cache;
        if (!c) {
                /* The cache was freed while this ran: discard the result. */
                measurement_free(m);
                return;
        }
        if (status < 0)
                m->result = cvm_error_set(&m->err, status, "image measurement: %s",
                                          uv_strerror(status));
        measurement_finish(c, m);
        start_measurements(c);
}

/* Delivers the requests ready when the timer fired; later ones wait for the
 * next round so a callback that requests again cannot starve the loop. */
static void on_timer(uv_timer_t *timer) {
        cvm_image_cache *c = timer->data;
        uint64_t last = c->ready_seq;
        while (!c->closing && !list_empty(&c->ready)) {
                cvm_image_req *req = CONTAINER_OF(c->ready.next, cvm_image_req, node);
                if (req->seq > last)
                        break;
                list_remove(&req->node);
                req->delivering = true;
                cvm_image *img = CVM_TAKE_PTR(req->img);
                req->cb(img, img ? NULL : &req->err, req->userdata);
                free(req);
        }
        /* The cache's memory outlives closing until the timer's close callback. */
        if (!c->closing && !list_empty(&c->ready))
                uv_timer_start(&c->timer, on_timer, 0, 0);
}

int cvm_image_cache_new(uv_loop_t *loop, const cvm_psp_costs *costs, size_t max_entries,
                        cvm_image_cache **ret, cvm_error *err) {
        if (!loop)
                return cvm_error_set(err, -EINVAL, "image cache: no loop");
        if (max_entries < 1 || max_entries > CVM_IMAGE_CACHE_ENTRIES_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "image cache: max_entries is %zu, must be between 1 and %u",
                                     max_entries, CVM_IMAGE_CACHE_ENTRIES_MAX);
        cvm_image_cache *c = calloc(1, sizeof(*c));
        if (!c)
                return oom(err);
        c->loop = loop;
        if (costs)
                c->costs = *costs;
        else
                cvm_psp_costs_default(&c->costs);
        c->max_entries = max_entries;
        list_init(&c->entries);
        list_init(&c->measurements);
        list_init(&c->ready);
        int r = uv_timer_init(loop, &c->timer);
        if (r < 0) {
                free(c);
                return cvm_error_set(err, r, "image cache: uv_timer_init: %s", uv_strerror(r));
        }
        c->timer.data = c;
        *ret = c;
        return 0;
}

static image_entry *find_entry(cvm_image_cache *c, const cvm_image_spec *spec,
                               const file_id *files) {
        for (list_node *n = c->entries.next; n != &c->entries; n = n->next) {
                image_entry *e = CONTAINER_OF(n, image_entry, lru);
                if (key_equal(&e->image.spec, e->files, spec, files))
                        return e;
        }
        return NULL;
}

static measurement *find_measurement(cvm_image_cache *c, const cvm_image_spec *spec,
                                     const file_id *files) {
        for (list_node *n = c->measurements.next; n != &c->measurements; n = n->next) {
                measurement *m = CONTAINER_OF(n, measurement, node);
                if (key_equal(&m->spec, m->files, spec, files))
                        return m;
        }
        return NULL;
}

int cvm_image_cache_get(cvm_image_cache *c, const cvm_image_spec *spec, cvm_image_cb cb,
                        void *userdata, cvm_image_req **ret_req, cvm_error *err) {
        if (!c || !spec || !cb)
                return cvm_error_set(err, -EINVAL, "image cache: no cache, spec or callback");
        if (c->closing)
                return cvm_error_set(err, -ESHUTDOWN, "image cache: shutting down");
        file_id files[FILE_COUNT];
        int r = check_spec(spec, "image", err);
        if (r < 0 || (r = check_files(spec, "image", files, err)) < 0)
                return r;
        cvm_image_req *req = calloc(1, sizeof(*req));
        if (!req)
                return oom(err);
        list_init(&req->node);
        req->cb = cb;
        req->userdata = userdata;

        image_entry *e = find_entry(c, spec, files);
        measurement *m = e ? NULL : find_measurement(c, spec, files);
        if (e) {
                /* A hit becomes the most recently used entry. */
                list_remove(&e->lru);
                list_append(&c->entries, &e->lru);
                req->img = cvm_image_ref(&e->image);
                ready_push(c, req);
                c->stats.hits++;
        } else if (m) {
                req->m = m;
                list_append(&m->waiters, &req->node);
                c->stats.coalesced++;
        } else {
                m = calloc(1, sizeof(*m));
                if (!m || cvm_image_spec_copy(spec, &m->spec, err) < 0) {
                        free(m);
                        free(req);
                        return oom(err);
                }
                m->cache = c;
                m->plain_guests = c->plain_guests;
                memcpy(m->files, files, sizeof(m->files));
                list_init(&m->waiters);
                list_append(&c->measurements, &m->node);
                c->stats.pending++;
                c->stats.misses++;
                req->m = m;
                list_append(&m->waiters, &req->node);
                /* uv_queue_work never calls back inside this call. */
                start_measurements(c);
        }
        if (ret_req)
                *ret_req = req;
        return 0;
}

void cvm_image_cache_cancel(cvm_image_req *req) {
        if (!req || req->delivering)
                return;
        list_remove(&req->node);
        measurement *m = req->m;
        if (m && !m->running && list_empty(&m->waiters)) {
                /* Nobody waits for a measurement that has not started: drop it. */
                list_remove(&m->node);
                m->cache->stats.pending--;
                measurement_free(m);
        }
        cvm_image_unref(req->img);
        free(req);
}

void cvm_image_cache_get_stats(const cvm_image_cache *c, cvm_image_cache_stats *ret) {
        *ret = c->stats;
}

static void on_timer_closed(uv_handle_t *handle) {
        free(handle->data);
}

void cvm_image_cache_free(cvm_image_cache *c) {
        if (!c || c->closing)
                return;
        c->closing = true;
        uv_timer_stop(&c->timer);
        while (!list_empty(&c->ready)) {
                cvm_image_req *req = CONTAINER_OF(c->ready.next, cvm_image_req, node);
                list_remove(&req->node);
                cvm_image_unref(req->img);
                free(req);
        }
        while (!list_empty(&c->measurements)) {
                measurement *m = CONTAINER_OF(c->measurements.next, measurement, node);
                list_remove(&m->node);
                while (!list_empty(&m->waiters)) {
                        cvm_image_req *req = CONTAINER_OF(m->waiters.next, cvm_image_req, node);
                        list_remove(&req->node);
                        free(req);
                }
                if (m->running) {
                        /* Its after_work still runs (with UV_ECANCELED if it had
                         * not started) and frees it. */
                        m->cache = NULL;
                        uv_cancel((uv_req_t *)&m->work);
                } else {
                        measurement_free(m);
                }
        }
        while (!list_empty(&c->entries)) {
                image_entry *e = CONTAINER_OF(c->entries.next, image_entry, lru);
                list_remove(&e->lru);
                cvm_image_unref(&e->image);
        }
        c->stats.entries = c->stats.pending = 0;
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

void cvm_image_cache_set_plain_guests(cvm_image_cache *cache, bool plain) {
        cache->plain_guests = plain;
}
