#include "tenants.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "json.h"
#include "log.h"

typedef struct entry {
        char name[64];
        unsigned char hash[32];
} entry;

struct cvm_tenants {
        entry *entries; /* One per token. */
        size_t n;
        size_t tenants;
};

static bool valid_name(const char *s) {
        size_t n = strlen(s);
        if (n < 1 || n > 63 || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
                        return false;
        return true;
}

static int parse_hex(const char *s, unsigned char out[32]) {
        if (strlen(s) != 64)
                return -1;
        for (int i = 0; i < 32; i++) {
                unsigned v;
                if (!isxdigit((unsigned char)s[2 * i]) || !isxdigit((unsigned char)s[2 * i + 1]) ||
                    sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -1;
                out[i] = (unsigned char)v;
        }
        return 0;
}

int cvm_tenants_parse(json_t *obj, cvm_tenants **ret, cvm_error *err) {
        static const char *const top[] = {"tenants", NULL};
        static const char *const fields[] = {"token_sha256", NULL};
        json_t *tenants;
        int r = cvm_json_check_fields(obj, "", top, err);
        if (r >= 0)
                r = cvm_json_get_object(obj, "", "tenants", true, &tenants, err);
        if (r < 0)
                return r;
        if (json_object_size(tenants) > CVM_TENANTS_MAX)
                return cvm_error_set(err, -EINVAL, "at most %d tenants", CVM_TENANTS_MAX);
        cvm_tenants *t = calloc(1, sizeof(*t));
        size_t cap = 0;
        if (!t)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        const char *name;
        json_t *tenant;
        json_object_foreach(tenants, name, tenant) {
                char path[96];
                snprintf(path, sizeof(path), "tenants.%s", name);
                json_t *tokens;
                if (!valid_name(name))
                        r = cvm_error_set(err, -EINVAL,
                                          "tenant name %s must match [a-z0-9][a-z0-9-]{0,62}",
                                          CVM_QUOTE(name));
                else if (!json_is_object(tenant))
                        r = cvm_error_set(err, -EINVAL, "field '%s' must be an object", path);
                else if ((r = cvm_json_check_fields(tenant, path, fields, err)) >= 0 &&
                         !json_is_array(tokens = json_object_get(tenant, "token_sha256")))
                        r = cvm_error_set(err, -EINVAL,
                                          "field '%s.token_sha256' must be an array of hex "
                                          "SHA-256 digests",
                                          path);
                else if (r >= 0 && json_array_size(tokens) > CVM_TENANT_TOKENS_MAX)
                        r = cvm_error_set(err, -EINVAL, "field '%s.token_sha256' holds at most %d",
                                          path, CVM_TENANT_TOKENS_MAX);
                if (r < 0)
                        break;
                size_t i;
                json_t *h;
                json_array_foreach(tokens, i, h) {
                        if (t->n == cap) {
                                cap = cap ? cap * 2 : 16;
                                entry *e = realloc(t->entries, cap * sizeof(*e));
                                if (!e) {
                                        r = cvm_error_set(err, -ENOMEM, "out of memory");
                                        break;
                                }
                                t->entries = e;
                        }
                        entry *e = &t->entries[t->n];
                        if (!json_is_string(h) || parse_hex(json_string_value(h), e->hash) < 0) {
                                r = cvm_error_set(err, -EINVAL,
                                                  "field '%s.token_sha256[%zu]' must be 64 hex "
                                                  "digits (sha256sum of the token)",
                                                  path, i);
                                break;
                        }
                        snprintf(e->name, sizeof(e->name), "%s", name);
                        t->n++;
                }
                if (r < 0)
                        break;
                t->tenants++;
        }
        if (r < 0) {
                cvm_tenants_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

int cvm_tenants_load(const char *path, bool missing_ok, cvm_tenants **ret, cvm_error *err) {
        json_error_t jerr;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && missing_ok) {
                        *ret = calloc(1, sizeof(cvm_tenants));
                        return *ret ? 0 : cvm_error_set(err, -ENOMEM, "out of memory");
                }
                return cvm_error_set_errno(err, -errno, "tokens file %s", CVM_QUOTE(path));
        }
        json_auto_t *obj = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj)
                return cvm_error_set(err, -EINVAL, "tokens file %s: line %d: %s", CVM_QUOTE(path),
                                     jerr.line, jerr.text);
        int r = cvm_tenants_parse(obj, ret, err);
        if (r < 0)
                return cvm_error_prefix(err, "tokens file %s: ", CVM_QUOTE(path));
        return 0;
}

void cvm_tenants_free(cvm_tenants *t) {
        if (!t)
                return;
        OPENSSL_cleanse(t->entries, t->n * sizeof(entry));
        free(t->entries);
        free(t);
}

size_t cvm_tenants_count(const cvm_tenants *t) {
        return t ? t->tenants : 0;
}

const char *cvm_tenants_lookup(const cvm_tenants *t, const char *token) {
        if (!t || !token || !*token)
                return NULL;
        unsigned char hash[32];
        unsigned int len = 0;
        if (!EVP_Digest(token, strlen(token), hash, &len, EVP_sha256(), NULL))
                return NULL;
        const char *found = NULL;
        for (size_t i = 0; i < t->n; i++)
                if (CRYPTO_memcmp(hash, t->entries[i].hash, sizeof(hash)) == 0 && !found)
                        found = t->entries[i].name;
        return found;
}
