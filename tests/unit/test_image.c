/* Image and handler specs (defaults, parsing, every validation error naming
 * its field, JSON round trips) and the measured-image cache on a real uv
 * loop: digests, hits, invalidation by file identity, coalescing, cancel,
 * errors, eviction, and freeing with work in flight. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cleanup.h"
#include "image.h"
#include "unit_tmp.h"

#define OVMF_PATH "/usr/share/ovmf/OVMF.fd"
#define PAGE 4096u

typedef struct fixture {
        char dir[UNIT_TMP_MAX];
        char fw[UNIT_TMP_MAX + 32];     /* Four pages of a pattern: a plain firmware. */
        char kernel[UNIT_TMP_MAX + 32]; /* A few bytes. */
        char initrd[UNIT_TMP_MAX + 32];
        uv_loop_t loop;
        cvm_psp_costs costs;
} fixture;

static void write_pattern(const char *path, size_t len, unsigned seed) {
        _cleanup_fclose_ FILE *fp = fopen(path, "we");
        assert_non_null(fp);
        for (size_t i = 0; i < len; i++)
                assert_int_not_equal(fputc((int)((i * 131 + (i >> 12) + seed) & 0xff), fp), EOF);
}

static uint8_t *read_all(const char *path, size_t *len) {
        _cleanup_fclose_ FILE *fp = fopen(path, "re");
        if (!fp)
                return NULL;
        fseek(fp, 0, SEEK_END);
        *len = (size_t)ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *buf = malloc(*len ? *len : 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, *len, fp), *len);
        return buf;
}

static int setup(void **state) {
        fixture *f = calloc(1, sizeof(*f));
        unit_tmp_path(f->dir, sizeof(f->dir), "cvm-image-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->fw, sizeof(f->fw), "%s/fw.bin", f->dir);
        snprintf(f->kernel, sizeof(f->kernel), "%s/vmlinuz", f->dir);
        snprintf(f->initrd, sizeof(f->initrd), "%s/initrd.img", f->dir);
        write_pattern(f->fw, 4 * PAGE, 1);
        write_pattern(f->kernel, 1000, 2);
        write_pattern(f->initrd, 3000, 3);
        uv_loop_init(&f->loop);
        cvm_psp_costs_default(&f->costs);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;
        if (unit_rm_rf(f->dir) != 0)
                return -1;
        /* Whatever a test left (closing handles, finishing work) must end. */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        int r = uv_loop_close(&f->loop);
        free(f);
        return r == 0 ? 0 : -1;
}

static json_t *parse_json(const char *text) {
        json_error_t jerr;
        json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!v)
                fail_msg("bad test JSON %s: %s", text, jerr.text);
        return v;
}

/* A spec of the built-in defaults on the fixture's plain firmware. */
static void plain_spec(fixture *f, cvm_image_spec *spec) {
        assert_int_equal(cvm_image_spec_default(spec, NULL), 0);
        free(spec->firmware);
        spec->firmware = strdup(f->fw);
        assert_non_null(spec->firmware);
}

static void assert_contains(const char *haystack, const char *needle) {
        if (!strstr(haystack, needle))
                fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* ---- Specs ---- */

static void test_defaults(void **state) {
        (void)state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec s = {0};
        assert_int_equal(cvm_image_spec_default(&s, NULL), 0);
        /* The boot verifier shipped beside the running binary. */
        assert_non_null(strstr(s.firmware, "/firmware/verifier.bin"));
        assert_null(s.kernel);
        assert_null(s.initrd);
        assert_null(s.cmdline);
        assert_int_equal(s.vcpus, 1);
        assert_int_equal(s.memory_mib, 256);
        assert_int_equal(s.guest_policy, 0x30000);
        assert_string_equal(s.vcpu_type, "EPYC-v4");
        assert_int_equal(s.guest_features, 0x1);
        assert_int_equal(s.firmware_boot_ms, 15);
        assert_int_equal(s.kernel_boot_ms, 125);
        /* With no object, parse validates the defaults themselves: the
         * firmware must exist (the build tree's, found above this test). */
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec p = {0};
        cvm_error err = {0};
        int r = cvm_image_spec_parse(NULL, NULL, "image", &p, &err);
        if (access(s.firmware, R_OK) == 0) {
                assert_int_equal(r, 0);
                assert_string_equal(p.firmware, s.firmware);
        } else {
                assert_int_equal(r, -EINVAL);
                assert_non_null(strstr(err.message, "verifier.bin"));
        }
        cvm_image_spec_done(&s);
        cvm_image_spec_done(&s); /* Idempotent. */
        cvm_image_spec_done(NULL);
}

static void test_parse_valid(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec d = {0}, s = {0}, s2 = {0}, s3 = {0};
        plain_spec(f, &d);
        json_t *obj = json_pack(
                "{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:i, s:i}", "firmware", f->fw,
                "kernel", f->kernel, "initrd", f->initrd, "cmdline", "console=ttyS0 quiet", "vcpus",
                4, "memory_mib", 512, "guest_policy", "0xB0000", "vcpu_type", "EPYC-Milan",
                "guest_features", "0x5", "firmware_boot_ms", 10, "kernel_boot_ms", 0);
        cvm_error err = {0};
        assert_int_equal(cvm_image_spec_parse(obj, &d, "image", &s, &err), 0);
        json_decref(obj);
        assert_string_equal(s.firmware, f->fw);
        assert_string_equal(s.kernel, f->kernel);
        assert_string_equal(s.initrd, f->initrd);
        assert_string_equal(s.cmdline, "console=ttyS0 quiet");
        assert_int_equal(s.vcpus, 4);
        assert_int_equal(s.memory_mib, 512);
        /* Bit 19 (debug) is the policy module's concern, not a format error. */
        assert_int_equal(s.guest_policy, 0xb0000);
        assert_string_equal(s.vcpu_type, "EPYC-Milan");
        assert_int_equal(s.guest_features, 0x5);
        assert_int_equal(s.firmware_boot_ms, 10);
        assert_int_equal(s.kernel_boot_ms, 0);
        /* The defaults are untouched. */
        assert_string_equal(d.firmware, f->fw);
        assert_null(d.kernel);
        assert_int_equal(d.vcpus, 1);
        assert_string_equal(d.vcpu_type, "EPYC-v4");

        /* Fields left out come from the defaults; null clears a path. */
        obj = json_pack("{s:i, s:n, s:n, s:n}", "vcpus", 2, "kernel", "initrd", "cmdline");
        assert_int_equal(cvm_image_spec_parse(obj, &s, "image", &s2, &err), 0);
        json_decref(obj);
        assert_int_equal(s2.vcpus, 2);
        assert_null(s2.kernel);
        assert_null(s2.initrd);
        assert_null(s2.cmdline);
        assert_int_equal(s2.memory_mib, 512);
        assert_string_equal(s2.vcpu_type, "EPYC-Milan");

        /* Copy. */
        assert_int_equal(cvm_image_spec_copy(&s, &s3, NULL), 0);
        assert_ptr_not_equal(s3.firmware, s.firmware);
        assert_string_equal(s3.cmdline, s.cmdline);
        assert_int_equal(s3.guest_features, s.guest_features);
}

typedef struct error_case {
        const char *key;
        const char *value; /* JSON text. */
        const char *message;
} error_case;

/* Sets key to value over {"firmware": the plain firmware} and expects an error. */
static void expect_parse_error(fixture *f, const char *key, json_t *value, const char *message) {
        json_t *obj = json_pack("{s:s}", "firmware", f->fw);
        if (key)
                json_object_set_new(obj, key, value);
        cvm_image_spec ret = {.vcpus = 777};
        cvm_error err = {0};
        int r = cvm_image_spec_parse(obj, NULL, "sim.image", &ret, &err);
        json_decref(obj);
        if (r != -EINVAL)
                fail_msg("%s: expected -EINVAL, got %d (%s)", key, r, err.message);
        assert_contains(err.message, message);
        /* On error ret is untouched. */
        assert_int_equal(ret.vcpus, 777);
        assert_null(ret.firmware);
}

static void test_parse_errors(void **state) {
        fixture *f = *state;
        static const error_case cases[] = {
                {"bogus", "1", "unknown field 'sim.image.bogus'"},
                {"guest_policy", "\"30000\"",
                 "field 'sim.image.guest_policy' must be a hex string"},
                {"guest_policy", "\"0x3g000\"", "field 'sim.image.guest_policy' must be a hex"},
                {"guest_policy", "\"0x\"", "field 'sim.image.guest_policy' must be a hex"},
                {"guest_policy", "\"0x00000000000000030000\"", "'sim.image.guest_policy' must be"},
                {"guest_policy", "196608", "field 'sim.image.guest_policy' must be a string"},
                {"guest_policy", "\"0x10000\"",
                 "field 'sim.image.guest_policy' is 0x10000 but must set bit 17"},
                {"guest_policy", "\"0x4030000\"", "bits 63:26 are reserved and must be zero"},
                {"guest_features", "\"0x4\"",
                 "field 'sim.image.guest_features' is 0x4 but must set bit 0"},
                {"guest_features", "\"1\"", "field 'sim.image.guest_features' must be a hex"},
                {"vcpus", "0", "field 'sim.image.vcpus' must be between 1 and 64"},
                {"vcpus", "65", "field 'sim.image.vcpus' must be between 1 and 64"},
                {"vcpus", "\"2\"", "field 'sim.image.vcpus' must be an integer"},
                {"memory_mib", "8", "field 'sim.image.memory_mib' must be between 16 and 65536"},
                {"memory_mib", "65537", "field 'sim.image.memory_mib' must be between"},
                {"firmware_boot_ms", "-1", "field 'sim.image.firmware_boot_ms' must be between"},
                {"kernel_boot_ms", "600001", "field 'sim.image.kernel_boot_ms' must be between"},
                {"vcpu_type", "\"Pentium\"", "field 'sim.image.vcpu_type': unknown vCPU type"},
                {"vcpu_type", "null", "field 'sim.image.vcpu_type' must be a string"},
                {"firmware", "\"fw.bin\"", "field 'sim.image.firmware' must be an absolute path"},
                {"firmware", "null", "field 'sim.image.firmware' must be a string"},
                {"firmware", "\"/a\\u0000b\"", "'sim.image.firmware' must be a string without NUL"},
                {"firmware", "\"/nonexistent/fw.bin\"",
                 "sim.image.firmware: /nonexistent/fw.bin: No such file or directory"},
                {"kernel", "\"vmlinuz\"", "field 'sim.image.kernel' must be an absolute path"},
                {"kernel", "\"/nonexistent/vmlinuz\"",
                 "sim.image.kernel: /nonexistent/vmlinuz: No such file or directory"},
                {"cmdline", "\"quiet\"",
                 "field 'sim.image.cmdline' needs field 'sim.image.kernel'"},
                {"cmdline", "7", "field 'sim.image.cmdline' must be a string"},
        };
        for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++)
                expect_parse_error(f, cases[i].key, parse_json(cases[i].value), cases[i].message);

        char buf[8192], message[UNIT_TMP_MAX + 128];
        /* A directory is not a firmware. */
        snprintf(message, sizeof(message), "sim.image.firmware: %s: not a regular file", f->dir);
        expect_parse_error(f, "firmware", json_string(f->dir), message);
        /* A firmware not a multiple of 4 KiB, or empty, or too large. */
        char odd[UNIT_TMP_MAX + 32];
        snprintf(odd, sizeof(odd), "%s/odd.bin", f->dir);
        write_pattern(odd, PAGE + 1, 0);
        expect_parse_error(f, "firmware", json_string(odd),
                           "4097 bytes is not a multiple of 4 KiB");
        write_pattern(odd, 0, 0);
        expect_parse_error(f, "firmware", json_string(odd), "empty file");
        assert_int_equal(truncate(odd, (16 << 20) + PAGE), 0);
        snprintf(message, sizeof(message), "sim.image.firmware: %s: 16781312 bytes, the limit is",
                 odd);
        expect_parse_error(f, "firmware", json_string(odd), message);
        /* An empty kernel cannot boot. */
        write_pattern(odd, 0, 0);
        expect_parse_error(f, "kernel", json_string(odd), "sim.image.kernel");
        /* An initrd needs a kernel. */
        expect_parse_error(f, "initrd", json_string(f->initrd),
                           "field 'sim.image.initrd' needs field 'sim.image.kernel'");
        /* Limits on lengths. */
        memset(buf, 'a', sizeof(buf));
        buf[0] = '/';
        buf[CVM_IMAGE_PATH_MAX + 1] = '\0';
        expect_parse_error(f, "kernel", json_string(buf),
                           "field 'sim.image.kernel' must be at most 4095 bytes");
        buf[CVM_IMAGE_CMDLINE_MAX + 1] = '\0';
        json_t *obj = json_pack("{s:s, s:s, s:s}", "firmware", f->fw, "kernel", f->kernel,
                                "cmdline", buf);
        cvm_image_spec ret = {0};
        cvm_error err = {0};
        assert_int_equal(cvm_image_spec_parse(obj, NULL, "image", &ret, &err), -EINVAL);
        assert_contains(err.message, "field 'image.cmdline' must be at most 2047 bytes");
        json_decref(obj);
        /* Unreadable files (root reads everything). */
        if (geteuid() != 0) {
                assert_int_equal(chmod(f->kernel, 0), 0);
                snprintf(message, sizeof(message), "sim.image.kernel: %s: Permission denied",
                         f->kernel);
                expect_parse_error(f, "kernel", json_string(f->kernel), message);
                assert_int_equal(chmod(f->kernel, 0644), 0);
        }
        /* Not an object. */
        obj = json_integer(1);
        assert_int_equal(cvm_image_spec_parse(obj, NULL, "image", &ret, &err), -EINVAL);
        assert_contains(err.message, "field 'image' must be an object");
        json_decref(obj);
}

static void test_round_trip(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec s = {0}, back = {0}, plain = {0};
        json_t *obj = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "firmware", f->fw, "kernel",
                                f->kernel, "initrd", f->initrd, "cmdline", "a=b", "vcpus", 3,
                                "guest_policy", "0x3001f");
        assert_int_equal(cvm_image_spec_parse(obj, NULL, "image", &s, NULL), 0);
        json_decref(obj);
        json_t *j = cvm_image_spec_to_json(&s);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "guest_policy")), "0x3001f");
        assert_string_equal(json_string_value(json_object_get(j, "guest_features")), "0x1");
        /* Parsing over a different base proves every field is in the JSON. */
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec base = {0};
        plain_spec(f, &base);
        base.memory_mib = 1024;
        base.kernel_boot_ms = 1;
        assert_int_equal(cvm_image_spec_parse(j, &base, "image", &back, NULL), 0);
        json_decref(j);
        json_t *a = cvm_image_spec_to_json(&s), *b = cvm_image_spec_to_json(&back);
        assert_true(json_equal(a, b));
        json_decref(a);
        json_decref(b);

        /* Absent paths are null and parse back as absent. */
        plain_spec(f, &plain);
        j = cvm_image_spec_to_json(&plain);
        assert_true(json_is_null(json_object_get(j, "kernel")));
        cvm_image_spec_done(&back);
        assert_int_equal(cvm_image_spec_parse(j, &s, "image", &back, NULL), 0);
        json_decref(j);
        assert_null(back.kernel);
        assert_null(back.initrd);
        assert_null(back.cmdline);
        assert_int_equal(back.vcpus, 1);
}

static void expect_handler_error(const char *text, bool check, const char *message) {
        json_t *obj = parse_json(text);
        cvm_handler_spec h = {.argc = 99};
        cvm_error err = {0};
        int r = cvm_handler_spec_parse(obj, "handler", check, &h, &err);
        json_decref(obj);
        if (r != -EINVAL)
                fail_msg("%s: expected -EINVAL, got %d", text, r);
        assert_contains(err.message, message);
        assert_int_equal(h.argc, 99);
        assert_null(h.argv);
}

static void test_handler(void **state) {
        fixture *f = *state;
        expect_handler_error("{\"exec\": []}", false,
                             "field 'handler.exec' must be an array of 1 to 64 strings");
        expect_handler_error("{\"exec\": \"/bin/true\"}", false,
                             "field 'handler.exec' must be an array");
        expect_handler_error("{\"exec\": [\"/bin/true\", 1]}", false,
                             "field 'handler.exec[1]' must be a string");
        expect_handler_error("{\"exec\": [\"true\"]}", false,
                             "field 'handler.exec[0]' must be an absolute path");
        expect_handler_error("{\"exec\": [\"/bin/true\", \"a\\u0000b\"]}", false,
                             "field 'handler.exec[1]' must not contain NUL");
        expect_handler_error("{}", false, "missing field 'handler.exec'");
        expect_handler_error("{\"exec\": [\"/bin/true\"], \"env\": {}}", false,
                             "unknown field 'handler.env'");
        expect_handler_error("[]", false, "field 'handler' must be an object");
        json_t *many = json_array();
        for (int i = 0; i < 65; i++)
                json_array_append_new(many, json_string("/bin/true"));
        json_t *obj = json_pack("{s:o}", "exec", many);
        cvm_handler_spec h = {0};
        cvm_error err = {0};
        assert_int_equal(cvm_handler_spec_parse(obj, "handler", false, &h, &err), -EINVAL);
        assert_contains(err.message, "1 to 64 strings");
        json_decref(obj);
        char *long_arg = calloc(1, CVM_HANDLER_ARG_MAX + 2);
        memset(long_arg, 'a', CVM_HANDLER_ARG_MAX + 1);
        obj = json_pack("{s:[s,s]}", "exec", "/bin/true", long_arg);
        free(long_arg);
        assert_int_equal(cvm_handler_spec_parse(obj, "handler", false, &h, &err), -EINVAL);
        assert_contains(err.message, "field 'handler.exec[1]' must be at most 4095 bytes");
        json_decref(obj);

        /* A file that is not executable: an error when checked, fine when not. */
        char text[UNIT_TMP_MAX + 64], message[UNIT_TMP_MAX + 128];
        snprintf(text, sizeof(text), "{\"exec\": [\"%s\", \"x\"]}", f->kernel);
        snprintf(message, sizeof(message), "handler.exec[0]: %s: Permission denied", f->kernel);
        expect_handler_error(text, true, message);
        snprintf(text, sizeof(text), "{\"exec\": [\"%s\"]}", f->dir);
        expect_handler_error(text, true, "not a regular file");
        expect_handler_error("{\"exec\": [\"/nonexistent/handler\"]}", true,
                             "handler.exec[0]: /nonexistent/handler: No such file or directory");
        snprintf(text, sizeof(text), "{\"exec\": [\"%s\", \"x\"]}", f->kernel);
        obj = parse_json(text);
        assert_int_equal(cvm_handler_spec_parse(obj, "handler", false, &h, &err), 0);
        json_decref(obj);
        assert_int_equal(h.argc, 2);
        assert_string_equal(h.argv[0], f->kernel);
        assert_string_equal(h.argv[1], "x");
        assert_null(h.argv[2]);
        cvm_handler_spec_done(&h);
        cvm_handler_spec_done(&h);
        cvm_handler_spec_done(NULL);

        /* Round trip and copy of an executable handler. */
        obj = parse_json("{\"exec\": [\"/bin/sh\", \"-c\", \"echo hi\"]}");
        assert_int_equal(cvm_handler_spec_parse(obj, "handler", true, &h, &err), 0);
        json_t *j = cvm_handler_spec_to_json(&h);
        assert_true(json_equal(j, obj));
        cvm_handler_spec h2 = {0}, h3 = {0};
        assert_int_equal(cvm_handler_spec_parse(j, "handler", true, &h2, NULL), 0);
        assert_int_equal(cvm_handler_spec_copy(&h2, &h3, NULL), 0);
        assert_int_equal(h3.argc, 3);
        assert_string_equal(h3.argv[2], "echo hi");
        assert_null(h3.argv[3]);
        json_decref(j);
        json_decref(obj);
        cvm_handler_spec_done(&h);
        cvm_handler_spec_done(&h2);
        cvm_handler_spec_done(&h3);
}

/* ---- The cache ---- */

typedef struct result result;
struct result {
        int calls;
        cvm_image *img;
        cvm_error err;
        /* Optional actions from inside the callback. */
        cvm_image_cache *free_cache;
        cvm_image_req *self;    /* Cancelled from its own callback: a no-op. */
        cvm_image_cache *again; /* Requests again_spec into again_res. */
        const cvm_image_spec *again_spec;
        result *again_res;
};

static void on_image(cvm_image *img, const cvm_error *err, void *userdata) {
        result *res = userdata;
        res->calls++;
        res->img = img;
        if (!img) {
                assert_non_null(err);
                res->err = *err;
        } else {
                assert_null(err);
        }
        if (res->self)
                cvm_image_cache_cancel(res->self);
        if (res->again) {
                assert_int_equal(cvm_image_cache_get(res->again, res->again_spec, on_image,
                                                     res->again_res, NULL, NULL),
                                 0);
                assert_int_equal(res->again_res->calls, 0);
        }
        if (res->free_cache)
                cvm_image_cache_free(res->free_cache);
}

static void run_until(fixture *f, const int *calls, int want) {
        while (*calls < want)
                if (uv_run(&f->loop, UV_RUN_ONCE) == 0 && *calls < want)
                        fail_msg("the loop ran out of work with %d of %d callbacks", *calls, want);
}

static void get_image(fixture *f, cvm_image_cache *c, const cvm_image_spec *spec, result *res) {
        *res = (result){0};
        cvm_error err = {0};
        if (cvm_image_cache_get(c, spec, on_image, res, NULL, &err) < 0)
                fail_msg("cvm_image_cache_get: %s", err.message);
        /* Never inside the call. */
        assert_int_equal(res->calls, 0);
        run_until(f, &res->calls, 1);
        if (!res->img)
                fail_msg("image: %s", res->err.message);
}

static void assert_direct_digest(const cvm_image_spec *spec, const cvm_image *img) {
        size_t len = 0;
        _cleanup_free_ uint8_t *fw = read_all(spec->firmware, &len);
        assert_non_null(fw);
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = len,
                                   .vcpus = spec->vcpus,
                                   .vcpu_type = spec->vcpu_type,
                                   .guest_features = spec->guest_features};
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        cvm_snp_launch_pages pages;
        assert_int_equal(cvm_snp_measure(&in, digest, &pages, NULL), 0);
        assert_memory_equal(img->digest, digest, sizeof(digest));
        char hex[CVM_SNP_DIGEST_HEX_SIZE];
        assert_string_equal(img->digest_hex, cvm_snp_digest_to_hex(digest, hex));
        assert_memory_equal(&img->pages, &pages, sizeof(pages));
}

/* The plan covers every launched page, and psp_ns is its cost alone. */
static void assert_plan(const cvm_psp_costs *costs, const cvm_image *img) {
        uint64_t by_type[CVM_SNP_PAGE_TYPE_MAX + 1] = {0};
        assert_ptr_equal(img->plan.regions, img->regions);
        for (size_t i = 0; i < img->plan.nregions; i++) {
                assert_int_not_equal(img->plan.regions[i].type, CVM_SNP_PAGE_VMSA);
                by_type[img->plan.regions[i].type] += img->plan.regions[i].npages;
        }
        const cvm_snp_launch_pages *p = &img->pages;
        assert_int_equal(by_type[CVM_SNP_PAGE_NORMAL], p->normal + p->kernel_hashes);
        assert_int_equal(by_type[CVM_SNP_PAGE_ZERO], p->zero);
        assert_int_equal(by_type[CVM_SNP_PAGE_SECRETS], p->secrets);
        assert_int_equal(by_type[CVM_SNP_PAGE_CPUID], p->cpuid);
        assert_int_equal(by_type[CVM_SNP_PAGE_UNMEASURED], p->unmeasured);
        assert_int_equal(img->plan.vmsa_pages, p->vmsa);
        assert_int_equal(img->plan.vmsa_pages, img->spec.vcpus);
        assert_int_equal(img->plan.nregions, p->nregions - 1);
        assert_int_equal(cvm_psp_plan_validate(&img->plan, NULL), 0);
        assert_int_equal(img->psp_ns, cvm_psp_costs_launch_ns(costs, &img->plan));
}

static void test_cache_measure_and_hit(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 8, &c, NULL), 0);
        result a, b;
        get_image(f, c, &spec, &a);
        assert_direct_digest(&spec, a.img);
        assert_plan(&f->costs, a.img);
        assert_int_equal(a.img->plan.nregions, 1);
        assert_int_equal(a.img->regions[0].npages, 4);
        assert_int_equal(a.img->regions[0].type, CVM_SNP_PAGE_NORMAL);
        assert_true(a.img->measure_ns > 0);
        assert_int_equal(a.img->refs, 2); /* The cache's and ours. */
        assert_string_equal(a.img->spec.firmware, f->fw);

        /* A second request is a hit: the same image, no new measurement. */
        get_image(f, c, &spec, &b);
        assert_ptr_equal(b.img, a.img);
        assert_int_equal(a.img->refs, 3);
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.misses, 1);
        assert_int_equal(st.measurements, 1);
        assert_int_equal(st.entries, 1);
        assert_int_equal(st.pending, 0);
        cvm_image_unref(b.img);

        /* Any spec field is part of the key. */
        spec.memory_mib = 512;
        get_image(f, c, &spec, &b);
        assert_ptr_not_equal(b.img, a.img);
        assert_memory_equal(b.img->digest, a.img->digest, CVM_SNP_DIGEST_SIZE);
        cvm_image_unref(b.img);
        spec.memory_mib = 256;

        /* The image outlives the cache through its reference. */
        cvm_image_cache_free(c);
        assert_int_equal(a.img->refs, 1);
        assert_direct_digest(&spec, a.img);
        cvm_image_unref(a.img);
        cvm_image_unref(NULL);
}

static void test_cache_file_changes(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, NULL, 8, &c, NULL), 0);
        result a, b, d;
        get_image(f, c, &spec, &a);
        /* A new mtime alone is a new key: the same bytes measure the same. */
        struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000, .tv_nsec = 5}};
        assert_int_equal(utimensat(AT_FDCWD, f->fw, times, 0), 0);
        get_image(f, c, &spec, &b);
        assert_ptr_not_equal(b.img, a.img);
        assert_memory_equal(b.img->digest, a.img->digest, CVM_SNP_DIGEST_SIZE);
        /* Rewritten with another size: a different digest. */
        write_pattern(f->fw, 8 * PAGE, 1);
        get_image(f, c, &spec, &d);
        assert_memory_not_equal(d.img->digest, a.img->digest, CVM_SNP_DIGEST_SIZE);
        assert_int_equal(d.img->pages.normal, 8);
        assert_direct_digest(&spec, d.img);
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.measurements, 3);
        assert_int_equal(st.hits, 0);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_unref(d.img);
        cvm_image_cache_free(c);
}

static void test_cache_coalesce_and_cancel(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 8, &c, NULL), 0);
        result a = {0}, b = {0}, x = {0};
        cvm_image_req *rx;
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, NULL), 0);
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &x, &rx, NULL), 0);
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &b, NULL, NULL), 0);
        cvm_image_cache_cancel(rx);
        cvm_image_cache_cancel(NULL);
        run_until(f, &b.calls, 1);
        run_until(f, &a.calls, 1);
        assert_non_null(a.img);
        assert_ptr_equal(a.img, b.img);
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.misses, 1);
        assert_int_equal(st.coalesced, 2);
        assert_int_equal(st.measurements, 1);
        /* A cancelled hit is never delivered either. */
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &x, &rx, NULL), 0);
        cvm_image_cache_cancel(rx);
        /* The only waiter of a measurement queued behind another cancels:
         * the measurement is dropped before it starts. */
        result y = {0};
        spec.memory_mib = 128;
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &y, NULL, NULL), 0);
        spec.memory_mib = 64;
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &x, &rx, NULL), 0);
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.pending, 2);
        cvm_image_cache_cancel(rx);
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.pending, 1);
        uv_run(&f->loop, UV_RUN_DEFAULT); /* Until nothing is left to do. */
        assert_int_equal(x.calls, 0);
        assert_int_equal(y.calls, 1);
        assert_int_equal(a.calls, 1);
        assert_int_equal(b.calls, 1);
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.pending, 0);
        assert_int_equal(st.measurements, 2);
        assert_int_equal(st.entries, 2);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_unref(y.img);
        cvm_image_cache_free(c);
}

static void test_cache_errors(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        cvm_error err = {0};
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 0, &c, &err), -EINVAL);
        assert_contains(err.message, "max_entries");
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 2, &c, NULL), 0);

        /* A plain firmware cannot measure a kernel: the measure error, via cb. */
        spec.kernel = strdup(f->kernel);
        result a = {0};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, NULL), 0);
        run_until(f, &a.calls, 1);
        assert_null(a.img);
        assert_int_equal(a.err.code, -EINVAL);
        assert_contains(a.err.message, f->fw);
        assert_contains(a.err.message, "no SNP_KERNEL_HASHES section");
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.failures, 1);
        assert_int_equal(st.entries, 0);
        free(spec.kernel);
        spec.kernel = NULL;

        /* Errors found before measuring fail the call itself. */
        char missing[UNIT_TMP_MAX + 32];
        snprintf(missing, sizeof(missing), "%s/missing.bin", f->dir);
        free(spec.firmware);
        spec.firmware = strdup(missing);
        a = (result){0};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, &err), -EINVAL);
        assert_contains(err.message, "image.firmware: ");
        assert_contains(err.message, "No such file or directory");
        free(spec.firmware);
        spec.firmware = strdup(f->fw);
        spec.vcpus = 0;
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, &err), -EINVAL);
        assert_contains(err.message, "field 'image.vcpus' must be between 1 and 64");
        spec.vcpus = 1;

        /* A file replaced after the request (while queued behind another
         * measurement) is an error, not a wrong digest. */
        char other[UNIT_TMP_MAX + 32];
        snprintf(other, sizeof(other), "%s/other.bin", f->dir);
        write_pattern(other, 2 * PAGE, 9);
        cvm_image_spec spec2 = spec;
        spec2.firmware = other;
        result b = {0};
        a = (result){0};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, NULL), 0);
        assert_int_equal(cvm_image_cache_get(c, &spec2, on_image, &b, NULL, NULL), 0);
        write_pattern(other, 3 * PAGE, 9);
        run_until(f, &b.calls, 1);
        run_until(f, &a.calls, 1);
        assert_non_null(a.img);
        assert_null(b.img);
        assert_int_equal(b.err.code, -EBUSY);
        assert_contains(b.err.message, "image.firmware: ");
        assert_contains(b.err.message, "replaced since it was requested");
        /* Asking again measures the new file. */
        get_image(f, c, &spec2, &b);
        assert_int_equal(b.img->pages.normal, 3);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_cache_free(c);
        cvm_image_cache_free(NULL);
}

static void test_cache_ovmf(void **state) {
        fixture *f = *state;
        if (access(OVMF_PATH, R_OK) != 0)
                skip();
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        json_auto_t *obj = json_pack("{s:s}", "firmware", OVMF_PATH);
        assert_int_equal(cvm_image_spec_parse(obj, NULL, "image", &spec, NULL), 0);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 4, &c, NULL), 0);
        result a, b;
        get_image(f, c, &spec, &a);
        /* The known answer of tests/unit/test_snp_measure.c. */
        assert_string_equal(a.img->digest_hex, "11570979c77a0adb515761a702527c8b9e11554e73055262"
                                               "1d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3");
        assert_plan(&f->costs, a.img);
        assert_int_equal(a.img->pages.normal, 512);
        spec.vcpus = 4;
        free(spec.vcpu_type);
        spec.vcpu_type = strdup("EPYC-Milan");
        get_image(f, c, &spec, &b);
        assert_string_equal(b.img->digest_hex, "e9c10ab98f8086bf4a4993dcdc1f768b1128bcb02301d179"
                                               "1f1d3274329e790db2d12a301d66d99a462a13b5d87e2840");
        assert_plan(&f->costs, b.img);
        assert_int_equal(b.img->plan.vmsa_pages, 4);
        assert_true(b.img->psp_ns > a.img->psp_ns);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_cache_free(c);
}

static void test_cache_eviction(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 1, &c, NULL), 0);
        result a, b, d;
        get_image(f, c, &spec, &a);
        spec.memory_mib = 512;
        get_image(f, c, &spec, &b);
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.entries, 1);
        assert_int_equal(st.evictions, 1);
        /* The evicted image lives on while referenced. */
        assert_int_equal(a.img->refs, 1);
        assert_int_equal(a.img->spec.memory_mib, 256);
        spec.memory_mib = 256;
        get_image(f, c, &spec, &d);
        assert_ptr_not_equal(d.img, a.img);
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.measurements, 3);
        assert_int_equal(st.hits, 0);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_unref(d.img);
        cvm_image_cache_free(c);
}

static void test_cache_free_in_flight(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        if (access(OVMF_PATH, R_OK) == 0) {
                /* A 2 MiB firmware keeps the worker busy a while. */
                free(spec.firmware);
                spec.firmware = strdup(OVMF_PATH);
        }
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 4, &c, NULL), 0);
        result a = {0}, b = {0}, d = {0};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, NULL, NULL), 0);
        spec.memory_mib = 512; /* Queued behind the first. */
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &b, NULL, NULL), 0);
        cvm_image_cache_free(c);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(a.calls, 0);
        assert_int_equal(b.calls, 0);

        /* Freed from a callback: the other due callback never runs. */
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 4, &c, NULL), 0);
        get_image(f, c, &spec, &a);
        b = (result){.free_cache = c};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &b, NULL, NULL), 0);
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &d, NULL, NULL), 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(b.calls, 1);
        assert_int_equal(d.calls, 0);
        assert_ptr_equal(b.img, a.img);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
}

static void test_cache_reentrant(void **state) {
        fixture *f = *state;
        CVM_CLEANUP(cvm_image_spec_done) cvm_image_spec spec = {0};
        plain_spec(f, &spec);
        cvm_image_cache *c;
        assert_int_equal(cvm_image_cache_new(&f->loop, &f->costs, 4, &c, NULL), 0);
        result b = {0}, a = {.again = c, .again_spec = &spec, .again_res = &b};
        assert_int_equal(cvm_image_cache_get(c, &spec, on_image, &a, &a.self, NULL), 0);
        run_until(f, &b.calls, 1);
        assert_int_equal(a.calls, 1);
        assert_non_null(a.img);
        assert_ptr_equal(b.img, a.img);
        cvm_image_cache_stats st;
        cvm_image_cache_get_stats(c, &st);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.measurements, 1);
        cvm_image_unref(a.img);
        cvm_image_unref(b.img);
        cvm_image_cache_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parse_valid, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_handler, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_measure_and_hit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_file_changes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_coalesce_and_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_ovmf, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_eviction, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_free_in_flight, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_reentrant, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
