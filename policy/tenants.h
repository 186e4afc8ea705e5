/* Who may call what: API tokens mapped to tenants. Tokens reach the daemon
 * on TCP listeners (Authorization: Bearer TOKEN); the tokens file holds only
 * their SHA-256 hashes, so reading it does not reveal them. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "error.h"

#define CVM_TENANTS_MAX 4096
#define CVM_TENANT_TOKENS_MAX 64

typedef struct cvm_tenants cvm_tenants;

/* {"tenants": {"NAME": {"token_sha256": ["64 hex digits", ...]}, ...}}.
 * Tenant names follow function names: [a-z0-9][a-z0-9-]{0,62}. */
int cvm_tenants_parse(json_t *obj, cvm_tenants **ret, cvm_error *err);
/* A missing file is no tenants when missing_ok. */
int cvm_tenants_load(const char *path, bool missing_ok, cvm_tenants **ret, cvm_error *err);
void cvm_tenants_free(cvm_tenants *t);
size_t cvm_tenants_count(const cvm_tenants *t);
/* The tenant a token belongs to, or NULL. Every stored hash is compared, in
 * constant time, so timing does not tell which one came close. */
const char *cvm_tenants_lookup(const cvm_tenants *t, const char *token);
