/* What the verifier and the host tools must agree on about Linux's x86 boot
 * protocol (Documentation/arch/x86/boot.rst) and QEMU's kernel-hashes table
 * (target/i386/sev.c). Header only, no library: the verifier includes it
 * freestanding, firmware/tools/ hosted. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Setup header fields, as offsets into the kernel image (and boot_params). */
#define BP_SETUP_SECTS 0x1f1
#define BP_VID_MODE 0x1fa
#define BP_HEADER_MAGIC 0x202 /* "HdrS" */
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_HEAP_END_PTR 0x224
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_RELOCATABLE 0x234
#define BP_XLOADFLAGS 0x236
#define BP_CMDLINE_SIZE 0x238
#define BP_SETUP_DATA 0x250
#define BP_PREF_ADDRESS 0x258
#define BP_INIT_SIZE 0x260
/* boot_params fields outside the setup header. */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_CC_BLOB_ADDRESS 0x13c
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_HDR_START 0x1f1 /* The setup header runs to 0x202 + the byte at 0x201. */
#define BP_XLF_KERNEL_64 0x1
#define BP_MIN_VERSION 0x20c /* xloadflags and the 64-bit entry. */

/* The fields a boot loader writes into the setup header it hands over.
 * QEMU writes them into the copy it serves over fw_cfg to a plain guest
 * (not to an SEV guest, whose kernel must hash as the file), so in a plain
 * guest the kernel's hash is taken with them zeroed. */
static const struct {
        uint16_t offset;
        uint8_t size;
} bp_loader_fields[] = {
        {BP_VID_MODE, 2},     {BP_TYPE_OF_LOADER, 1}, {BP_LOADFLAGS, 1},    {BP_RAMDISK_IMAGE, 4},
        {BP_RAMDISK_SIZE, 4}, {BP_HEAP_END_PTR, 2},   {BP_CMD_LINE_PTR, 4}, {BP_SETUP_DATA, 8},
};
#define BP_CANONICAL_SIZE 0x260 /* Every loader field lies below this offset. */

/* A kernel the 64-bit boot protocol can start: a bzImage ("HdrS"), boot
 * protocol 2.12 or later, with a 64-bit entry. k holds at least its setup
 * header (len bytes). */
static inline bool bp_is_bzimage64(const uint8_t *k, size_t len) {
        return len > BP_CANONICAL_SIZE && k[BP_HEADER_MAGIC] == 'H' &&
               k[BP_HEADER_MAGIC + 1] == 'd' && k[BP_HEADER_MAGIC + 2] == 'r' &&
               k[BP_HEADER_MAGIC + 3] == 'S' &&
               (k[BP_VERSION] | k[BP_VERSION + 1] << 8) >= BP_MIN_VERSION &&
               (k[BP_XLOADFLAGS] & BP_XLF_KERNEL_64);
}

/* QEMU's SevHashTable: a header GUID, the u16 table length, then entries
 * {GUID, u16 length 50, SHA-256} for the command line (with its NUL), the
 * initrd and the kernel (setup and protected-mode parts, as the file). */
#define HT_GUID_SIZE 16
#define HT_ENTRY_SIZE (HT_GUID_SIZE + 2 + 32)
#define HT_MIN_SIZE (HT_GUID_SIZE + 2 + 3 * HT_ENTRY_SIZE)
/* The GUIDs in memory order (the little-endian "bytes_le" form). */
#define HT_GUID_HEADER                                                                             \
        {                                                                                          \
                0x06, 0xd6, 0x38, 0x94, 0x22, 0x4f, 0xc9, 0x4c, 0xb4, 0x79, 0xa7, 0x93, 0xd4,      \
                        0x11, 0xfd, 0x21                                                           \
        }
#define HT_GUID_CMDLINE                                                                            \
        {                                                                                          \
                0xd8, 0x2d, 0xd0, 0x97, 0x20, 0xbd, 0x94, 0x4c, 0xaa, 0x78, 0xe7, 0x71, 0x4d,      \
                        0x36, 0xab, 0x2a                                                           \
        }
#define HT_GUID_INITRD                                                                             \
        {                                                                                          \
                0x31, 0xf7, 0xba, 0x44, 0x2f, 0x3a, 0xd7, 0x4b, 0x9a, 0xf1, 0x41, 0xe2, 0x91,      \
                        0x69, 0x78, 0x1d                                                           \
        }
#define HT_GUID_KERNEL                                                                             \
        {                                                                                          \
                0x37, 0x94, 0xe7, 0x4d, 0xd2, 0xab, 0x7f, 0x42, 0xb8, 0x35, 0xd5, 0xb1, 0x72,      \
                        0xd2, 0x04, 0x5b                                                           \
        }
