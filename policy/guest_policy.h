/* The SEV-SNP guest policy: the 64-bit value the guest owner fixes at
 * SNP_LAUNCH_START and the PSP copies into every attestation report. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Bit layout from the SNP firmware ABI (guest policy structure). */
#define CVM_SNP_POLICY_ABI_MINOR_MASK UINT64_C(0xff)
#define CVM_SNP_POLICY_ABI_MAJOR_SHIFT 8
#define CVM_SNP_POLICY_ABI_MAJOR_MASK (UINT64_C(0xff) << CVM_SNP_POLICY_ABI_MAJOR_SHIFT)
#define CVM_SNP_POLICY_SMT (UINT64_C(1) << 16)           /* SMT allowed. */
#define CVM_SNP_POLICY_RESERVED_ONE (UINT64_C(1) << 17)  /* Reserved, must be one. */
#define CVM_SNP_POLICY_MIGRATE_MA (UINT64_C(1) << 18)    /* A migration agent may be bound. */
#define CVM_SNP_POLICY_DEBUG (UINT64_C(1) << 19)         /* The host may decrypt the guest. */
#define CVM_SNP_POLICY_SINGLE_SOCKET (UINT64_C(1) << 20) /* Runs on one socket only. */
/* Bits 25:21 are defined by newer ABIs (CXL, AES-256-XTS, RAPL, ciphertext
 * hiding, page swap); bits 63:26 are reserved and must be zero. */
#define CVM_SNP_POLICY_MBZ (~((UINT64_C(1) << 26) - 1))

static inline unsigned cvm_snp_policy_abi_major(uint64_t policy) {
        return (unsigned)((policy & CVM_SNP_POLICY_ABI_MAJOR_MASK) >>
                          CVM_SNP_POLICY_ABI_MAJOR_SHIFT);
}

static inline unsigned cvm_snp_policy_abi_minor(uint64_t policy) {
        return (unsigned)(policy & CVM_SNP_POLICY_ABI_MINOR_MASK);
}

/* Checks a policy the daemon is about to launch with: bit 17 must be set,
 * bits 63:26 clear, and the debug bit only when allow_debug. Fails with
 * -EINVAL (reserved bits) or -EPERM (debug), naming the bit. */
int cvm_guest_policy_check(uint64_t policy, bool allow_debug, cvm_error *err);

/* Writes a one-line description ("abi>=1.51 smt migrate-ma debug
 * single-socket") into buf; returns buf. */
const char *cvm_guest_policy_describe(uint64_t policy, char *buf, size_t size);
