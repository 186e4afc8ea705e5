/* Parsing of an SEV-SNP guest firmware image (OVMF) for the launch
 * measurement: the footer GUID table at the end of the image, the SEV-ES
 * reset block, the kernel-hashes table location and the SEV metadata
 * ("ASEV") sections QEMU pre-populates. The image is untrusted: every
 * offset and length is checked against the image and the limits below. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CVM_SNP_PAGE_SIZE 4096u
#define CVM_SNP_MAX_FIRMWARE_SIZE (16u << 20)
#define CVM_SNP_MAX_SECTION_SIZE (16u << 20)
#define CVM_SNP_MAX_SECTIONS 64

/* A GUID in its in-memory (little-endian, "bytes_le") byte order, written
 * in the usual string order: CVM_SNP_GUID(0x96b582de, 0x1fb2, 0x45f7, 0xba, ...). */
#define CVM_SNP_GUID(d1, d2, d3, ...)                                                              \
        {                                                                                          \
                (d1) & 0xff, ((d1) >> 8) & 0xff, ((d1) >> 16) & 0xff, ((d1) >> 24) & 0xff,         \
                        (d2)&0xff, ((d2) >> 8) & 0xff, (d3)&0xff, ((d3) >> 8) & 0xff, __VA_ARGS__  \
        }

/* 96b582de-1fb2-45f7-baea-a366c55a082d: ends the GUID table, 32 bytes before the image end. */
extern const uint8_t cvm_snp_guid_table_footer[16];
/* 00f771de-1a7e-4fcb-890e-68c77e2fb44e: the SEV-ES reset block (u32 AP reset EIP). */
extern const uint8_t cvm_snp_guid_reset_block[16];
/* dc886566-984a-4798-a75e-5585a7bf67cc: u32 offset of the ASEV header from the image end. */
extern const uint8_t cvm_snp_guid_sev_metadata[16];
/* 7255371f-3a3b-4b04-927b-1da6efa8d454: u32 GPA and u32 size of the kernel-hashes table. */
extern const uint8_t cvm_snp_guid_hash_table[16];

/* a5d2ac66-f72f-49c9-bfb8-07dc8e0d31ca: cvmd's boot verifier (firmware/verifier):
 * u32 offset of its configuration block from the image end. */
extern const uint8_t cvm_snp_guid_verifier_config[16];

/* Section types of the SEV metadata (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm). */
typedef enum cvm_snp_section_kind {
        CVM_SNP_SECTION_SNP_SEC_MEM = 0x1,
        CVM_SNP_SECTION_SNP_SECRETS = 0x2,
        CVM_SNP_SECTION_CPUID = 0x3,
        CVM_SNP_SECTION_SVSM_CAA = 0x4,
        CVM_SNP_SECTION_SNP_KERNEL_HASHES = 0x10,
} cvm_snp_section_kind;

typedef struct cvm_snp_section {
        uint32_t gpa;
        uint32_t size;
        cvm_snp_section_kind kind;
} cvm_snp_section;

typedef struct cvm_snp_firmware {
        uint64_t gpa; /* The image is mapped so that it ends at 4 GiB. */
        size_t size;
        bool has_reset_eip;
        uint32_t reset_eip;
        bool has_hash_table;
        uint32_t hash_table_gpa;
        uint32_t hash_table_size;
        bool has_verifier_config;      /* The image is cvmd's boot verifier. */
        size_t verifier_config_offset; /* From the image start; at least 8 bytes inside. */
        size_t nsections;              /* In metadata order, which is the launch order. */
        cvm_snp_section sections[CVM_SNP_MAX_SECTIONS];
} cvm_snp_firmware;

/* Parses image. An image without the footer GUID table, or whose table has
 * no metadata entry, parses as plain firmware (no sections). Sections must
 * be page aligned, below 4 GiB, and overlap neither each other nor the
 * image. Fails with -EINVAL (-EFBIG for an oversized image) naming the
 * offending structure and offset. */
int cvm_snp_firmware_parse(const uint8_t *image, size_t size, cvm_snp_firmware *ret,
                           cvm_error *err);
