/* The guest owner's attestation policy: which launch measurements each
 * function may have, the minimum TCB, and what the guest policy and VMPL
 * must be. A JSON file (default: policy/attestation-policy.json, described
 * in docs/attestation.md); unknown fields are errors naming the field. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "snp_report.h"

#define CVM_ATTEST_POLICY_FILE_MAX (1024u * 1024)
#define CVM_ATTEST_FUNCTION_NAME_MAX 128
#define CVM_ATTEST_MEASUREMENTS_MAX 1024 /* Per function. */

typedef struct cvm_attest_function {
        char *name;
        size_t n;
        uint8_t (*digests)[CVM_SNP_MEASUREMENT_SIZE];
} cvm_attest_function;

typedef struct cvm_attest_policy {
        size_t nfunctions;
        cvm_attest_function *functions; /* "measurements": name -> list of hex digests. */
        cvm_snp_tcb min_tcb;            /* Every SPL of REPORTED_TCB must be at least this. */
        bool allow_debug;               /* Policy bit 19 may be set. */
        bool allow_migration;           /* Policy bit 18 may be set. */
        bool require_no_smt;            /* Policy bit 16 and PLATFORM_INFO.SMT_EN must be clear. */
        uint8_t abi_major, abi_minor;   /* The policy's ABI minimum must be at least this. */
        uint8_t vmpl_mask;              /* Bit n: VMPL n allowed (0..3). */
} cvm_attest_policy;

/* The defaults: no measurement lists, min TCB all zero, no debug, no
 * migration agent, SMT allowed, ABI 0.0, VMPL 0 only. */
void cvm_attest_policy_init(cvm_attest_policy *p);
/* Frees what p owns and resets it to the defaults; NULL-safe. */
void cvm_attest_policy_done(cvm_attest_policy *p);

/* Parses a policy document over the defaults into p (initialised here). On
 * failure p holds the defaults and err names the field. */
int cvm_attest_policy_parse(const char *buf, size_t len, cvm_attest_policy *p, cvm_error *err);
int cvm_attest_policy_load(const char *path, cvm_attest_policy *p, cvm_error *err);

/* The allowed measurements of function, or NULL when it has none. */
const cvm_attest_function *cvm_attest_policy_function(const cvm_attest_policy *p,
                                                      const char *function);
