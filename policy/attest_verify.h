/* Verifying an SEV-SNP attestation on the guest owner's side: the AMD chain
 * (ARK -> ASK -> VCEK), the report's signature by the VCEK, and the report's
 * contents against what the owner expects and the attestation policy. Every
 * check runs and is reported, so a failure says exactly what was wrong. The
 * host that relays the report and the certificates is not trusted: all of
 * them are parsed as hostile input. See docs/attestation.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/types.h>

#include "attest_policy.h"
#include "error.h"
#include "snp_report.h"

/* Stable check names, in the order they are reported. */
#define CVM_CHECK_REPORT_FORMAT "report_format"
#define CVM_CHECK_ARK_SELF_SIGNED "ark_self_signed"
#define CVM_CHECK_ARK_PINNED "ark_pinned"
#define CVM_CHECK_ASK_SIGNED "ask_signed_by_ark"
#define CVM_CHECK_VCEK_SIGNED "vcek_signed_by_ask"
#define CVM_CHECK_SIGNATURE_ALGO "signature_algo"
#define CVM_CHECK_SIGNING_KEY "signing_key"
#define CVM_CHECK_REPORT_SIGNATURE "report_signature"
#define CVM_CHECK_REPORT_DATA "report_data"
#define CVM_CHECK_MEASUREMENT "measurement"
#define CVM_CHECK_MEASUREMENT_ALLOWED "measurement_allowed"
#define CVM_CHECK_POLICY_RESERVED "policy_reserved"
#define CVM_CHECK_POLICY_DEBUG "policy_debug"
#define CVM_CHECK_POLICY_MIGRATION "policy_migration"
#define CVM_CHECK_POLICY_SMT "policy_smt"
#define CVM_CHECK_POLICY_ABI "policy_abi"
#define CVM_CHECK_VMPL "vmpl"
#define CVM_CHECK_TCB_MINIMUM "tcb_minimum"
#define CVM_CHECK_VCEK_TCB "vcek_tcb"
#define CVM_CHECK_CHIP_ID "chip_id"

#define CVM_ATTEST_MAX_CHECKS 24
#define CVM_CHECK_MESSAGE_MAX 256

typedef enum cvm_check_status {
        CVM_CHECK_PASS,
        CVM_CHECK_FAIL,
        CVM_CHECK_SKIPPED,
} cvm_check_status;

typedef struct cvm_check {
        const char *name; /* One of CVM_CHECK_*. */
        cvm_check_status status;
        char message[CVM_CHECK_MESSAGE_MAX]; /* What was compared, or why it failed/was skipped. */
} cvm_check;

typedef struct cvm_attest_input {
        const uint8_t *report; /* The raw report as the host relayed it. */
        size_t report_len;
        X509 *vcek, *ask, *ark;              /* As the host relayed them; all required. */
        X509 *pinned_ark;                    /* The owner's trusted ARK; NULL: skipped. */
        const uint8_t *expected_measurement; /* 48 bytes; NULL: skipped. */
        const uint8_t *expected_report_data; /* 64 bytes (the nonce); NULL: skipped. */
        const cvm_attest_policy *policy;     /* NULL: cvm_attest_policy_init's defaults. */
        const char *function;                /* Selects the policy's measurement list. */
} cvm_attest_input;

typedef struct cvm_attest_result {
        bool ok;            /* Every check that ran passed. */
        bool root_pinned;   /* The ARK matched a pinned one (otherwise the root is unproven). */
        bool report_parsed; /* report holds the parsed report. */
        cvm_snp_report report;
        size_t nchecks;
        cvm_check checks[CVM_ATTEST_MAX_CHECKS];
} cvm_attest_result;

/* Runs every check into res. Returns 0 when all that ran passed; -EPERM when
 * one failed, err naming the first ("measurement: ..."); -EINVAL only for a
 * caller error (NULL in or res). A check whose inputs are missing or that
 * depends on a failed one is skipped. */
int cvm_attest_verify(const cvm_attest_input *in, cvm_attest_result *res, cvm_error *err);

/* The check named name in res, or NULL. */
const cvm_check *cvm_attest_find(const cvm_attest_result *res, const char *name);

const char *cvm_check_status_name(cvm_check_status s); /* "pass", "fail", "skipped" */
