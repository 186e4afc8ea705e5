/* The SEV-SNP ATTESTATION_REPORT of the SNP firmware ABI: its 0x4A0-byte
 * wire layout, a parser that treats the bytes as hostile, an encoder, and the
 * ECDSA P-384 signature over bytes 0x000-0x29F. All integers are
 * little-endian; R and S are 72-byte little-endian numbers at 0x2A0/0x2E8. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/types.h>

#include "error.h"
#include "guest_policy.h"

#define CVM_SNP_REPORT_SIZE 0x4A0u
#define CVM_SNP_REPORT_SIGNED_SIZE 0x2A0u /* The signature covers bytes 0x000-0x29F. */
#define CVM_SNP_REPORT_SIGNATURE_OFFSET 0x2A0u
#define CVM_SNP_REPORT_DATA_SIZE 64
#define CVM_SNP_MEASUREMENT_SIZE 48
#define CVM_SNP_HOST_DATA_SIZE 32
#define CVM_SNP_ID_DIGEST_SIZE 48
#define CVM_SNP_FAMILY_ID_SIZE 16
#define CVM_SNP_REPORT_ID_SIZE 32
#define CVM_SNP_CHIP_ID_SIZE 64
#define CVM_SNP_SIG_COMPONENT_SIZE 72 /* R and S each, zero-extended from 48 bytes. */
#define CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384 1u
#define CVM_SNP_REPORT_VERSION_MIN 2u
#define CVM_SNP_REPORT_VERSION_MAX 3u /* Version 3 adds the CPUID bytes at 0x188. */

/* PLATFORM_INFO bits. Newer firmware sets more (TSME, ECC, RAPL, ciphertext
 * hiding); the parser accepts them. */
#define CVM_SNP_PLATFORM_SMT_EN (UINT64_C(1) << 0)
#define CVM_SNP_PLATFORM_TSME_EN (UINT64_C(1) << 1)

/* The flags word at 0x48: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY (4:2). */
#define CVM_SNP_FLAG_AUTHOR_KEY_EN (1u << 0)
#define CVM_SNP_FLAG_MASK_CHIP_KEY (1u << 1)
#define CVM_SNP_FLAG_SIGNING_KEY_SHIFT 2
#define CVM_SNP_FLAG_SIGNING_KEY_MASK (7u << CVM_SNP_FLAG_SIGNING_KEY_SHIFT)
#define CVM_SNP_FLAG_RESERVED (~0x1fu)
#define CVM_SNP_SIGNING_KEY_VCEK 0u
#define CVM_SNP_SIGNING_KEY_VLEK 1u
#define CVM_SNP_SIGNING_KEY_NONE 7u

/* A TCB_VERSION as Milan and Genoa lay it out: byte 0 BOOT_LOADER, byte 1
 * TEE, bytes 2-5 reserved, byte 6 SNP, byte 7 MICROCODE. */
typedef struct cvm_snp_tcb {
        uint8_t bootloader;
        uint8_t tee;
        uint8_t snp;
        uint8_t microcode;
} cvm_snp_tcb;

uint64_t cvm_snp_tcb_encode(const cvm_snp_tcb *tcb);
/* Decodes the four SPLs; the reserved bytes are dropped. */
cvm_snp_tcb cvm_snp_tcb_decode(uint64_t raw);
/* True when every SPL of tcb is at least the one of min. */
bool cvm_snp_tcb_at_least(const cvm_snp_tcb *tcb, const cvm_snp_tcb *min);
bool cvm_snp_tcb_equal(const cvm_snp_tcb *a, const cvm_snp_tcb *b);
/* "bl=3 tee=0 snp=8 ucode=115" into buf; returns buf. */
const char *cvm_snp_tcb_format(const cvm_snp_tcb *tcb, char *buf, size_t size);

typedef struct cvm_snp_report {
        uint32_t version; /* 0x000: 2 or 3. */
        uint32_t guest_svn;
        uint64_t policy; /* 0x008: the guest policy (guest_policy.h). */
        uint8_t family_id[CVM_SNP_FAMILY_ID_SIZE];
        uint8_t image_id[CVM_SNP_FAMILY_ID_SIZE];
        uint32_t vmpl;                                 /* 0x030 */
        uint32_t signature_algo;                       /* 0x034: 1 is ECDSA P-384 with SHA-384. */
        uint64_t current_tcb;                          /* 0x038 */
        uint64_t platform_info;                        /* 0x040 */
        uint32_t flags;                                /* 0x048: CVM_SNP_FLAG_*. */
        uint8_t report_data[CVM_SNP_REPORT_DATA_SIZE]; /* 0x050: the guest's nonce. */
        uint8_t measurement[CVM_SNP_MEASUREMENT_SIZE]; /* 0x090: the launch digest. */
        uint8_t host_data[CVM_SNP_HOST_DATA_SIZE];     /* 0x0C0 */
        uint8_t id_key_digest[CVM_SNP_ID_DIGEST_SIZE]; /* 0x0E0 */
        uint8_t author_key_digest[CVM_SNP_ID_DIGEST_SIZE];   /* 0x110 */
        uint8_t report_id[CVM_SNP_REPORT_ID_SIZE];           /* 0x140 */
        uint8_t report_id_ma[CVM_SNP_REPORT_ID_SIZE];        /* 0x160 */
        uint64_t reported_tcb;                               /* 0x180: the TCB the VCEK is for. */
        uint8_t cpuid_fam_id, cpuid_mod_id, cpuid_step;      /* 0x188: version 3 only. */
        uint8_t chip_id[CVM_SNP_CHIP_ID_SIZE];               /* 0x1A0 */
        uint64_t committed_tcb;                              /* 0x1E0 */
        uint8_t current_build, current_minor, current_major; /* 0x1E8 */
        uint8_t committed_build, committed_minor, committed_major; /* 0x1EC */
        uint64_t launch_tcb;                                       /* 0x1F0 */
        uint8_t signature_r[CVM_SNP_SIG_COMPONENT_SIZE];           /* 0x2A0, little-endian. */
        uint8_t signature_s[CVM_SNP_SIG_COMPONENT_SIZE];           /* 0x2E8, little-endian. */
} cvm_snp_report;

static inline unsigned cvm_snp_report_signing_key(const cvm_snp_report *r) {
        return (r->flags & CVM_SNP_FLAG_SIGNING_KEY_MASK) >> CVM_SNP_FLAG_SIGNING_KEY_SHIFT;
}

/* Writes r in ABI layout; reserved bytes are zero. Fails with -EINVAL for a
 * version other than 2 or 3, CPUID bytes in a version 2 report or reserved
 * flag bits. */
int cvm_snp_report_encode(const cvm_snp_report *r, uint8_t out[CVM_SNP_REPORT_SIZE],
                          cvm_error *err);

/* Parses untrusted bytes. Fails with -EINVAL, naming the offset, for a
 * length other than 0x4A0, an unknown version, reserved flag bits, or a
 * non-zero must-be-zero range (0x04C-0x04F, 0x188/0x18B-0x19F, 0x1EB,
 * 0x1EF, 0x1F8-0x29F, and 0x330-0x49F for ECDSA). The policy, platform info
 * and signature are not judged here (see attest_verify.h). */
int cvm_snp_report_parse(const uint8_t *buf, size_t len, cvm_snp_report *r, cvm_error *err);

/* Signs bytes 0x000-0x29F of report with an EC P-384 key (SHA-384) and
 * stores R and S little-endian, zeroing the rest of the signature area. */
int cvm_snp_report_sign(uint8_t report[CVM_SNP_REPORT_SIZE], EVP_PKEY *key, cvm_error *err);

/* Verifies the signature of report with key, which must be an EC P-384
 * public key. Fails with -EBADMSG when the signature does not verify (or
 * SIGNATURE_ALGO is not 1), -EINVAL for a key of another type. */
int cvm_snp_report_verify(const uint8_t report[CVM_SNP_REPORT_SIZE], EVP_PKEY *key, cvm_error *err);

/* Lowercase hex of n bytes into buf (2n+1 bytes); returns buf. */
const char *cvm_snp_hex(const uint8_t *bytes, size_t n, char *buf);
/* Parses exactly n bytes of hex (either case, no prefix); -EINVAL otherwise. */
int cvm_snp_unhex(const char *hex, uint8_t *out, size_t n);
