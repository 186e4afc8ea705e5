/* The boot verifier's memory map: guest-physical addresses it uses before
 * and while it loads Linux. Shared by the assembly, the C code and the host
 * tools (which read the same numbers back from the image's GUID table). The
 * SNP launch pre-validates the ranges marked [measured] or [launched]
 * through the SEV metadata sections in reset.S; everything else is
 * validated at run time. */
#pragma once

#define VF_ROM_SIZE 0x10000         /* QEMU maps a -bios ROM in 64 KiB units. */
#define VF_ROM_BASE 0xffff0000      /* It ends at 4 GiB. */
#define VF_RESET_SECTION 0xfffff000 /* The last page: real-mode entry and GUID table. */

#define VF_BOOT_PARAMS 0x7000 /* Linux's zero page. */
#define VF_CMDLINE 0x8000     /* Up to VF_CMDLINE_MAX bytes with the NUL. */
#define VF_CMDLINE_MAX 0x1000
#define VF_PAGE_TABLES 0x10000 /* [measured: zero] PML4, PDPT, 4 PDs: 4 GiB in 2 MiB pages. */
#define VF_PAGE_TABLES_SIZE 0x6000
#define VF_SECRETS 0x16000 /* [measured: secrets] SNP secrets page. */
#define VF_CPUID 0x17000   /* [measured: cpuid] SNP CPUID page. */
#define VF_HASHES 0x18000  /* [measured: kernel hashes] QEMU's kernel-hashes table. */
#define VF_HASHES_SIZE 0x1000
#define VF_GHCB 0x19000      /* [measured: zero] the GHCB, made shared at run time. */
#define VF_STACK_BSS 0x1a000 /* [measured: zero] .bss from the bottom, the stack from the top. */
#define VF_STACK_BSS_SIZE 0xa000
#define VF_BOUNCE 0x30000 /* fw_cfg DMA lands here (shared under SNP). */
#define VF_BOUNCE_SIZE 0x10000
#define VF_ACPI 0x40000 /* ACPI tables QEMU's table loader builds. */
#define VF_ACPI_SIZE 0x40000
#define VF_SETUP 0x80000 /* The kernel's setup part, read to be hashed. */
#define VF_SETUP_MAX 0x20000
#define VF_LOW_RESERVED_END 0x100000 /* 0xa0000-0xfffff: legacy VGA and BIOS areas. */
#define VF_KERNEL_DEFAULT 0x1000000  /* Where a kernel goes that states no preference. */

/* GDT selectors: the 64-bit boot protocol wants __BOOT_CS 0x10, __BOOT_DS 0x18. */
#define VF_SEL_CODE32 0x08
#define VF_SEL_CODE64 0x10
#define VF_SEL_DATA 0x18

/* The verifier's own configuration block, found through its GUID-table
 * entry: flags host tools may set in a copy of the image. */
#define VF_CONFIG_MAGIC 0x47464356   /* "VCFG" */
#define VF_FLAG_ALLOW_UNVERIFIED 0x1 /* A plain guest without a hash table may boot. */
#define VF_PLAIN_HASHES_SIZE 0x200   /* A hash table for plain guests, written by a tool. */
