/* The verifier's internal interface. It runs alone on the boot vCPU, in
 * 64-bit mode on identity-mapped page tables, with no interrupts and no
 * library: what it needs of libc it has in util.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

/* util.c: the compiler may call the first three on its own. */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t vf_strnlen(const char *s, size_t max);
static inline uint16_t vf_le16(const void *p) {
        const uint8_t *b = p;
        return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t vf_le32(const void *p) {
        const uint8_t *b = p;
        return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t vf_le64(const void *p) {
        return vf_le32(p) | (uint64_t)vf_le32((const uint8_t *)p + 4) << 32;
}
static inline void vf_put_le32(void *p, uint32_t v) {
        uint8_t *b = p;
        for (int i = 0; i < 4; i++)
                b[i] = (uint8_t)(v >> (8 * i));
}
static inline void vf_put_le64(void *p, uint64_t v) {
        vf_put_le32(p, (uint32_t)v);
        vf_put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* io.c: port I/O, through the GHCB under SEV-SNP (where IN and OUT would
 * raise a #VC the verifier has no handler for). */
uint8_t vf_inb(uint16_t port);
uint32_t vf_inl(uint16_t port);
void vf_outb(uint16_t port, uint8_t v);
void vf_outw(uint16_t port, uint16_t v);
void vf_outl(uint16_t port, uint32_t v);

/* console.c: the serial port (COM1) and QEMU's debug port (0x402). */
void vf_console_init(void);
/* A tiny printf: %s, %u, %x (all 64-bit with l), %c. */
void vf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Says why on the console and ends the guest: never boots anything. */
_Noreturn void vf_halt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* snp.c */
typedef struct vf_snp {
        bool active;
        unsigned cbit;      /* C-bit position; 0 in a plain guest. */
        uint64_t cbit_mask; /* 1 << cbit, or 0. */
} vf_snp;
extern vf_snp vf_snp_state;
/* Sets up the GHCB (shared) and the bounce buffer (shared) under SNP. */
void vf_snp_init(unsigned cbit);
/* Validates [start, end) with PVALIDATE, 2 MiB pages where possible. */
void vf_snp_validate(uint64_t start, uint64_t end);
/* Tells the host to end the guest (GHCB MSR protocol, reason set 1 with
 * code reason), and halts should it not. */
_Noreturn void vf_snp_terminate(unsigned reason);
/* The VMGEXIT of an I/O instruction, through the GHCB page. */
uint32_t vf_snp_ioio(uint16_t port, unsigned size, bool in, uint32_t value);

/* fwcfg.c: QEMU's firmware configuration device. */
#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID 0x01
#define FW_CFG_KERNEL_SIZE 0x08
#define FW_CFG_INITRD_SIZE 0x0b
#define FW_CFG_KERNEL_DATA 0x11
#define FW_CFG_INITRD_DATA 0x12
#define FW_CFG_CMDLINE_SIZE 0x14
#define FW_CFG_CMDLINE_DATA 0x15
#define FW_CFG_SETUP_SIZE 0x17
#define FW_CFG_SETUP_DATA 0x18
#define FW_CFG_FILE_DIR 0x19
void vf_fwcfg_init(void);
uint32_t vf_fwcfg_u32(uint16_t key);
/* Finds a named file; returns false if there is none. */
bool vf_fwcfg_find(const char *name, uint16_t *ret_key, uint32_t *ret_size);
/* Reads len bytes of item key from its start into private memory at dst,
 * through the shared bounce buffer; feeds them to hash if non-NULL. */
struct vf_sha256;
void vf_fwcfg_read(uint16_t key, void *dst, uint32_t len, struct vf_sha256 *hash);

/* platform.c: chipset set-up that must precede the ACPI tables. */
void vf_platform_init(void);

/* acpi.c: runs QEMU's ACPI table loader script; returns the RSDP's address or 0. */
uint64_t vf_acpi_load(void);
