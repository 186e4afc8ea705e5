/* JSON parsing and validation helpers over jansson, shared by the daemon's
 * config and API and by cvmctl. Field names in messages are full dotted
 * paths ("http.max_body_bytes") so a user can find what to fix. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

/* Parses a complete JSON document that must be an object. Duplicate keys are
 * rejected. Errors name the line and column. */
int cvm_json_parse_object(const char *buf, size_t len, json_t **ret, cvm_error *err);

/* Fails with "unknown field 'PATH.KEY'" for a key not in allowed (NULL-terminated). */
int cvm_json_check_fields(json_t *obj, const char *path, const char *const *allowed,
                          cvm_error *err);

/* Getters: a missing key leaves *ret unchanged and returns 0, unless
 * required; a present key of the wrong type or out of range is an error
 * naming PATH.KEY. */
int cvm_json_get_string(json_t *obj, const char *path, const char *key, bool required,
                        const char **ret, cvm_error *err);
int cvm_json_get_int(json_t *obj, const char *path, const char *key, bool required, int64_t min,
                     int64_t max, int64_t *ret, cvm_error *err);
/* An optional unsigned field between min and max. */
int cvm_json_get_u32(json_t *obj, const char *path, const char *key, uint32_t min, uint32_t max,
                     uint32_t *ret, cvm_error *err);
int cvm_json_get_bool(json_t *obj, const char *path, const char *key, bool required, bool *ret,
                      cvm_error *err);
/* An object member (or NULL when absent and not required). */
int cvm_json_get_object(json_t *obj, const char *path, const char *key, bool required, json_t **ret,
                        cvm_error *err);

/* Builds "PATH.KEY" (or "KEY" for an empty path) into buf. */
const char *cvm_json_field_name(char *buf, size_t size, const char *path, const char *key);
