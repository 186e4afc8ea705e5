/* The SEV-SNP launch digest (the MEASUREMENT of an attestation report),
 * computed as the PSP does for a guest QEMU launches from a firmware image,
 * optionally with a kernel, initrd and command line whose hashes QEMU
 * places in the firmware's kernel-hashes page. See docs/measurement.md. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "snp_firmware.h"
#include "snp_vmsa.h"

#define CVM_SNP_DIGEST_SIZE 48
#define CVM_SNP_DIGEST_HEX_SIZE (2 * CVM_SNP_DIGEST_SIZE + 1)
/* The GPA VMSA pages are measured at: (u64)-1, page aligned, bits above 51 clear. */
#define CVM_SNP_VMSA_GPA UINT64_C(0xfffffffff000)
/* SEV_FEATURES with only SNPActive set, as QEMU launches by default. */
#define CVM_SNP_GUEST_FEATURES_DEFAULT UINT64_C(0x1)
#define CVM_SNP_MAX_VCPUS 1024u
#define CVM_SNP_MAX_REGIONS (CVM_SNP_MAX_SECTIONS + 2)

/* PAGE_TYPE of SNP_LAUNCH_UPDATE (SNP firmware ABI). */
typedef enum cvm_snp_page_type {
        CVM_SNP_PAGE_NORMAL = 1,
        CVM_SNP_PAGE_VMSA = 2,
        CVM_SNP_PAGE_ZERO = 3,
        CVM_SNP_PAGE_UNMEASURED = 4,
        CVM_SNP_PAGE_SECRETS = 5,
        CVM_SNP_PAGE_CPUID = 6,
        CVM_SNP_PAGE_TYPE_MAX = CVM_SNP_PAGE_CPUID,
} cvm_snp_page_type;

/* The running launch digest (DIGEST_CUR). */
typedef struct cvm_snp_digest {
        uint8_t value[CVM_SNP_DIGEST_SIZE];
} cvm_snp_digest;

void cvm_snp_digest_init(cvm_snp_digest *d);

/* Folds one LAUNCH_UPDATE page into d: DIGEST_CUR = SHA-384(PAGE_INFO).
 * page holds the 4096 bytes of a NORMAL or VMSA page and must be NULL for
 * the other types, whose CONTENTS the PSP takes as zero. */
int cvm_snp_digest_update_page(cvm_snp_digest *d, uint64_t gpa, cvm_snp_page_type type,
                               const uint8_t *page, cvm_error *err);

typedef struct cvm_snp_launch_input {
        const uint8_t *firmware;
        size_t firmware_len;
        const uint8_t *kernel; /* NULL: no kernel; a non-NULL empty kernel is hashed. */
        size_t kernel_len;
        const uint8_t *initrd; /* NULL hashes as empty; needs a kernel. */
        size_t initrd_len;
        const char *cmdline; /* NULL hashes as ""; needs a kernel. */
        unsigned vcpus;
        const char *vcpu_type;   /* QEMU's -cpu model, e.g. "EPYC-v4". */
        uint64_t guest_features; /* VMSA SEV_FEATURES; bit 0 (SNPActive) must be set. */
} cvm_snp_launch_input;

/* One run of pages a single LAUNCH_UPDATE submits. */
typedef struct cvm_snp_region {
        uint64_t gpa;
        uint64_t npages;
        cvm_snp_page_type type;
} cvm_snp_region;

/* What the launch submits to the PSP. The counts are disjoint and sum to
 * the pages LAUNCH_UPDATE processes: kernel_hashes pages are measured as
 * NORMAL but not counted in normal. QEMU launches submit no unmeasured
 * pages; the count is there so a cost model covers every page type. */
typedef struct cvm_snp_launch_pages {
        uint64_t normal;
        uint64_t zero;
        uint64_t secrets;
        uint64_t cpuid;
        uint64_t kernel_hashes;
        uint64_t vmsa;
        uint64_t unmeasured;
        size_t nregions; /* In launch order: firmware, metadata sections, VMSAs. */
        cvm_snp_region regions[CVM_SNP_MAX_REGIONS];
} cvm_snp_launch_pages;

/* Computes the launch digest of in into digest and, if ret_pages is
 * non-NULL, what the launch submits. Fails with -EINVAL for a malformed
 * image or inconsistent input (a kernel without a kernel-hashes section,
 * APs without a reset block, ...), the message naming the cause. */
int cvm_snp_measure(const cvm_snp_launch_input *in, uint8_t digest[CVM_SNP_DIGEST_SIZE],
                    cvm_snp_launch_pages *ret_pages, cvm_error *err);

/* QEMU's kernel-hashes table (SevHashTable padded to 16 bytes) for a
 * kernel, initrd and command line, as QEMU writes it into the firmware's
 * kernel-hashes page. */
#define CVM_SNP_HASH_TABLE_SIZE 176
int cvm_snp_hash_table_build(const uint8_t *kernel, size_t kernel_len, const uint8_t *initrd,
                             size_t initrd_len, const char *cmdline,
                             uint8_t table[CVM_SNP_HASH_TABLE_SIZE], cvm_error *err);

/* Writes digest as lowercase hex into buf (CVM_SNP_DIGEST_HEX_SIZE bytes); returns buf. */
const char *cvm_snp_digest_to_hex(const uint8_t digest[CVM_SNP_DIGEST_SIZE], char *buf);
