#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *cvm_json_field_name(char *buf, size_t size, const char *path, const char *key) {
        if (path && *path)
                snprintf(buf, size, "%s.%s", path, key);
        else
                snprintf(buf, size, "%s", key);
        return buf;
}

int cvm_json_parse_object(const char *buf, size_t len, json_t **ret, cvm_error *err) {
        json_error_t jerr;
        json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!v)
                return cvm_error_set(err, -EINVAL, "malformed JSON at line %d, column %d: %s",
                                     jerr.line, jerr.column, jerr.text);
        if (!json_is_object(v)) {
                json_decref(v);
                return cvm_error_set(err, -EINVAL, "malformed JSON: expected an object");
        }
        *ret = v;
        return 0;
}

int cvm_json_check_fields(json_t *obj, const char *path, const char *const *allowed,
                          cvm_error *err) {
        const char *key;
        json_t *value;
        json_object_foreach(obj, key, value) {
                bool ok = false;
                for (const char *const *a = allowed; *a && !ok; a++)
                        ok = strcmp(*a, key) == 0;
                if (!ok) {
                        char name[256];
                        return cvm_error_set(err, -EINVAL, "unknown field '%s'",
                                             cvm_json_field_name(name, sizeof(name), path, key));
                }
        }
        return 0;
}

/* Looks key up; returns 1 when present, 0 when absent (error if required). */
static int lookup(json_t *obj, const char *path, const char *key, bool required, json_t **ret,
                  cvm_error *err) {
        *ret = json_object_get(obj, key);
        if (*ret)
                return 1;
        if (required) {
                char name[256];
                return cvm_error_set(err, -EINVAL, "missing field '%s'",
                                     cvm_json_field_name(name, sizeof(name), path, key));
        }
        return 0;
}

static int type_error(const char *path, const char *key, const char *what, cvm_error *err) {
        char name[256];
        return cvm_error_set(err, -EINVAL, "field '%s' must be %s",
                             cvm_json_field_name(name, sizeof(name), path, key), what);
}

int cvm_json_get_string(json_t *obj, const char *path, const char *key, bool required,
                        const char **ret, cvm_error *err) {
        json_t *v;
        int r = lookup(obj, path, key, required, &v, err);
        if (r <= 0)
                return r;
        if (!json_is_string(v))
                return type_error(path, key, "a string", err);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return type_error(path, key, "a string without NUL characters", err);
        *ret = json_string_value(v);
        return 0;
}

int cvm_json_get_int(json_t *obj, const char *path, const char *key, bool required, int64_t min,
                     int64_t max, int64_t *ret, cvm_error *err) {
        json_t *v;
        int r = lookup(obj, path, key, required, &v, err);
        if (r <= 0)
                return r;
        if (!json_is_integer(v))
                return type_error(path, key, "an integer", err);
        json_int_t i = json_integer_value(v);
        if (i < min || i > max) {
                char what[128];
                snprintf(what, sizeof(what), "between %lld and %lld", (long long)min,
                         (long long)max);
                return type_error(path, key, what, err);
        }
        *ret = i;
        return 0;
}

int cvm_json_get_u32(json_t *obj, const char *path, const char *key, uint32_t min, uint32_t max,
                     uint32_t *ret, cvm_error *err) {
        int64_t v = *ret;
        int r = cvm_json_get_int(obj, path, key, false, min, max, &v, err);
        if (r < 0)
                return r;
        *ret = (uint32_t)v;
        return 0;
}

int cvm_json_get_bool(json_t *obj, const char *path, const char *key, bool required, bool *ret,
                      cvm_error *err) {
        json_t *v;
        int r = lookup(obj, path, key, required, &v, err);
        if (r <= 0)
                return r;
        if (!json_is_boolean(v))
                return type_error(path, key, "true or false", err);
        *ret = json_is_true(v);
        return 0;
}

int cvm_json_get_object(json_t *obj, const char *path, const char *key, bool required, json_t **ret,
                        cvm_error *err) {
        json_t *v;
        *ret = NULL;
        int r = lookup(obj, path, key, required, &v, err);
        if (r <= 0)
                return r;
        if (!json_is_object(v))
                return type_error(path, key, "an object", err);
        *ret = v;
        return 0;
}
