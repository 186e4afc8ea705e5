#include "attest_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "file.h"
#include "json.h"

void cvm_attest_policy_init(cvm_attest_policy *p) {
        memset(p, 0, sizeof(*p));
        p->vmpl_mask = 1u << 0;
}

void cvm_attest_policy_done(cvm_attest_policy *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->nfunctions; i++) {
                free(p->functions[i].name);
                free(p->functions[i].digests);
        }
        free(p->functions);
        cvm_attest_policy_init(p);
}

const cvm_attest_function *cvm_attest_policy_function(const cvm_attest_policy *p,
                                                      const char *function) {
        if (!p || !function)
                return NULL;
        for (size_t i = 0; i < p->nfunctions; i++)
                if (strcmp(p->functions[i].name, function) == 0)
                        return &p->functions[i];
        return NULL;
}

static int parse_measurements(json_t *obj, cvm_attest_policy *p, cvm_error *err) {
        size_t n = json_object_size(obj);
        if (n == 0)
                return 0;
        p->functions = calloc(n, sizeof(*p->functions));
        if (!p->functions)
                return cvm_error_set(err, -ENOMEM, "attestation policy: out of memory");
        const char *name;
        json_t *list;
        json_object_foreach(obj, name, list) {
                size_t len = strlen(name);
                if (len == 0 || len > CVM_ATTEST_FUNCTION_NAME_MAX)
                        return cvm_error_set(err, -EINVAL,
                                             "field 'measurements' has a function name of %zu "
                                             "bytes, not 1..%d",
                                             len, CVM_ATTEST_FUNCTION_NAME_MAX);
                if (!json_is_array(list) || json_array_size(list) == 0 ||
                    json_array_size(list) > CVM_ATTEST_MEASUREMENTS_MAX)
                        return cvm_error_set(err, -EINVAL,
                                             "field 'measurements.%s' must be an array of 1..%d "
                                             "hex digests",
                                             name, CVM_ATTEST_MEASUREMENTS_MAX);
                cvm_attest_function *f = &p->functions[p->nfunctions];
                f->name = strdup(name);
                f->digests = calloc(json_array_size(list), sizeof(*f->digests));
                p->nfunctions++; /* Counted now so done() frees a half-built entry. */
                if (!f->name || !f->digests)
                        return cvm_error_set(err, -ENOMEM, "attestation policy: out of memory");
                size_t i;
                json_t *d;
                json_array_foreach(list, i, d) {
                        if (!json_is_string(d) || cvm_snp_unhex(json_string_value(d), f->digests[i],
                                                                CVM_SNP_MEASUREMENT_SIZE) < 0)
                                return cvm_error_set(err, -EINVAL,
                                                     "field 'measurements.%s[%zu]' must be a "
                                                     "%d-character hex string (a SHA-384 "
                                                     "launch digest)",
                                                     name, i, 2 * CVM_SNP_MEASUREMENT_SIZE);
                        f->n++;
                }
        }
        return 0;
}

static int parse_min_tcb(json_t *obj, cvm_attest_policy *p, cvm_error *err) {
        static const char *const fields[] = {"bootloader", "tee", "snp", "microcode", NULL};
        uint8_t *dst[] = {&p->min_tcb.bootloader, &p->min_tcb.tee, &p->min_tcb.snp,
                          &p->min_tcb.microcode};
        int r = cvm_json_check_fields(obj, "min_tcb", fields, err);
        for (size_t i = 0; r >= 0 && fields[i]; i++) {
                int64_t v = *dst[i];
                r = cvm_json_get_int(obj, "min_tcb", fields[i], false, 0, 255, &v, err);
                *dst[i] = (uint8_t)v;
        }
        return r;
}

/* "1.51" or {"major": 1, "minor": 51}. */
static int parse_abi(json_t *v, cvm_attest_policy *p, cvm_error *err) {
        if (json_is_string(v)) {
                const char *s = json_string_value(v);
                unsigned major, minor;
                int end = 0;
                if (sscanf(s, "%3u.%3u%n", &major, &minor, &end) != 2 || s[end] != '\0' ||
                    major > 255 || minor > 255 || s[0] < '0' || s[0] > '9')
                        return cvm_error_set(err, -EINVAL,
                                             "field 'guest_policy.abi_min' must be \"MAJOR.MINOR\" "
                                             "with each 0..255, like \"1.51\"");
                p->abi_major = (uint8_t)major;
                p->abi_minor = (uint8_t)minor;
                return 0;
        }
        if (!json_is_object(v))
                return cvm_error_set(err, -EINVAL,
                                     "field 'guest_policy.abi_min' must be a string \"1.51\" or "
                                     "an object {\"major\", \"minor\"}");
        static const char *const fields[] = {"major", "minor", NULL};
        int64_t major = 0, minor = 0;
        int r;
        if ((r = cvm_json_check_fields(v, "guest_policy.abi_min", fields, err)) < 0 ||
            (r = cvm_json_get_int(v, "guest_policy.abi_min", "major", true, 0, 255, &major, err)) <
                    0 ||
            (r = cvm_json_get_int(v, "guest_policy.abi_min", "minor", true, 0, 255, &minor, err)) <
                    0)
                return r;
        p->abi_major = (uint8_t)major;
        p->abi_minor = (uint8_t)minor;
        return 0;
}

static int parse_guest_policy(json_t *obj, cvm_attest_policy *p, cvm_error *err) {
        static const char *const fields[] = {
                "allow_debug", "allow_migration", "require_no_smt", "abi_min", "vmpl", NULL};
        const char *path = "guest_policy";
        int r;
        if ((r = cvm_json_check_fields(obj, path, fields, err)) < 0 ||
            (r = cvm_json_get_bool(obj, path, "allow_debug", false, &p->allow_debug, err)) < 0 ||
            (r = cvm_json_get_bool(obj, path, "allow_migration", false, &p->allow_migration, err)) <
                    0 ||
            (r = cvm_json_get_bool(obj, path, "require_no_smt", false, &p->require_no_smt, err)) <
                    0)
                return r;
        json_t *abi = json_object_get(obj, "abi_min");
        if (abi && (r = parse_abi(abi, p, err)) < 0)
                return r;
        json_t *vmpl = json_object_get(obj, "vmpl");
        if (vmpl) {
                if (!json_is_array(vmpl) || json_array_size(vmpl) == 0)
                        return cvm_error_set(err, -EINVAL,
                                             "field 'guest_policy.vmpl' must be a non-empty array "
                                             "of VMPLs 0..3");
                p->vmpl_mask = 0;
                size_t i;
                json_t *e;
                json_array_foreach(vmpl, i, e) {
                        json_int_t v = json_is_integer(e) ? json_integer_value(e) : -1;
                        if (v < 0 || v > 3)
                                return cvm_error_set(err, -EINVAL,
                                                     "field 'guest_policy.vmpl[%zu]' must be an "
                                                     "integer 0..3",
                                                     i);
                        p->vmpl_mask |= (uint8_t)(1u << v);
                }
        }
        return 0;
}

int cvm_attest_policy_parse(const char *buf, size_t len, cvm_attest_policy *p, cvm_error *err) {
        static const char *const fields[] = {"comment", "measurements", "min_tcb", "guest_policy",
                                             NULL};
        cvm_attest_policy_init(p);
        json_t *root = NULL;
        int r = cvm_json_parse_object(buf, len, &root, err);
        if (r < 0)
                return r;
        json_t *obj;
        const char *comment;
        if ((r = cvm_json_check_fields(root, "", fields, err)) < 0 ||
            (r = cvm_json_get_string(root, "", "comment", false, &comment, err)) < 0)
                goto out;
        if ((r = cvm_json_get_object(root, "", "measurements", false, &obj, err)) < 0 ||
            (obj && (r = parse_measurements(obj, p, err)) < 0))
                goto out;
        if ((r = cvm_json_get_object(root, "", "min_tcb", false, &obj, err)) < 0 ||
            (obj && (r = parse_min_tcb(obj, p, err)) < 0))
                goto out;
        if ((r = cvm_json_get_object(root, "", "guest_policy", false, &obj, err)) < 0 ||
            (obj && (r = parse_guest_policy(obj, p, err)) < 0))
                goto out;
out:
        json_decref(root);
        if (r < 0)
                cvm_attest_policy_done(p);
        return r;
}

int cvm_attest_policy_load(const char *path, cvm_attest_policy *p, cvm_error *err) {
        cvm_attest_policy_init(p);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = cvm_file_read(path, CVM_ATTEST_POLICY_FILE_MAX, &buf, &len, NULL, err);
        if (r < 0) {
                cvm_error_prefix(err, "attestation policy: ");
                return r;
        }
        r = cvm_attest_policy_parse((const char *)buf, len, p, err);
        if (r < 0)
                cvm_error_prefix(err, "attestation policy %s: ", path);
        return r;
}
