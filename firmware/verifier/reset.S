/* The verifier's first instructions and its last page: the reset vector,
 * real mode to 32-bit protected mode to 64-bit long mode on page tables it
 * builds itself (identity, 4 GiB, 2 MiB pages, the C-bit set under SEV-SNP),
 * then vf_main in C. The same page carries the configuration block and the
 * GUID table QEMU parses for SEV-ES/SNP firmware (hw/i386/pc_sysfw_ovmf.c),
 * laid out at fixed offsets so that QEMU finds its footer 48 bytes before
 * the image end and the reset vector at 0xfffffff0. */
#include "layout.h"

#define MSR_EFER 0xc0000080
#define MSR_SEV_STATUS 0xc0010131
#define MSR_GHCB 0xc0010130
#define SEV_STATUS_SNP 0x4
#define CPUID_MAX_ENTRIES 64
/* Where the C-bit check's random value goes: the top of the stack, before
 * anything is pushed. */
#define CBIT_CHECK (VF_STACK_BSS + VF_STACK_BSS_SIZE - 8)

/* Offsets inside the last page; the CPU sees it at 0xf000 in the real-mode
 * segment 0xf000 (base 0xffff0000). */
#define OFF(label) ((label) - reset_page + 0xf000)

        .section .reset, "ax"
        .code16
reset_page:
entry16:
        cli
        cld
        lgdtl %cs:OFF(gdt_desc)
        /* An empty IDT: any event the host injects triple-faults the VM
         * instead of vectoring through whatever lies at address 0. */
        lidtl %cs:OFF(idt_desc)
        movl %cr0, %eax
        orl $1, %eax                     /* PE */
        movl %eax, %cr0
        ljmpl $VF_SEL_CODE32, $entry32

        .code32
entry32:
        movw $VF_SEL_DATA, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs

        /* Under SEV-SNP the CPUID page QEMU had the PSP validate holds
         * leaf 0x8000001f, whose EBX[5:0] is the C-bit position. Without
         * paging every access is private, so the page reads as launched.
         * A plain guest finds the page zero (count 0) and runs with no C-bit. */
        xorl %edi, %edi                  /* EDI: C-bit position, 0 for plain. */
        movl VF_CPUID, %ecx              /* count */
        testl %ecx, %ecx
        jnz snp_cpuid
        /* An empty page: a plain guest, or a host that emptied the page (its
         * contents are not measured). CPUID decides: under SEV-ES/SNP it
         * raises a #VC, which the empty IDT turns into a shutdown; a guest
         * that reports SEV without an SNP CPUID page is refused. */
        movl $0x80000000, %eax
        cpuid
        cmpl $0x8000001f, %eax
        jb build_tables
        movl $0x8000001f, %eax
        cpuid
        testl $0x2, %eax                 /* SEV */
        jz build_tables
        jmp terminate32
snp_cpuid:
        cmpl $CPUID_MAX_ENTRIES, %ecx
        ja terminate32
        /* A CPUID page is only meaningful in an SNP guest: SEV_STATUS says. */
        movl $MSR_SEV_STATUS, %ecx
        rdmsr
        testl $SEV_STATUS_SNP, %eax
        jz terminate32
        movl VF_CPUID, %ecx
        movl $VF_CPUID + 16, %esi        /* entries: eax_in, ecx_in, xcr0, xss, eax, ebx, ecx, edx, rsvd */
1:      cmpl $0x8000001f, (%esi)
        je 2f
        addl $48, %esi
        loop 1b
        jmp terminate32
2:      movl 28(%esi), %edi              /* EBX: eax_in 0, ecx_in 4, xcr0 8, xss 16, eax 24, ebx 28 */
        andl $0x3f, %edi
        /* The host supplies the CPUID page (the PSP checks it against its
         * policy but it is not measured): a position that is not a physical
         * address bit above 4 GiB would leave "private" accesses shared. */
        cmpl $32, %edi
        jb terminate32
        cmpl $51, %edi
        ja terminate32
        /* And check that the bit really encrypts (as Linux's
         * sev_verify_cbit.S does): a random value written now, without
         * paging (private), must read back the same through the new page
         * tables in long mode. RDRAND raises no #VC. */
3:      rdrand %esi                      /* 64 random bits, kept in ESI:EBP until long mode */
        jnc 3b
31:     rdrand %ebp
        jnc 31b
        movl %esi, CBIT_CHECK
        movl %ebp, CBIT_CHECK + 4

build_tables:
        /* Zero the six pages, then PML4[0] -> PDPT, PDPT[0..3] -> PD0..3,
         * PDn[i] -> 2 MiB page. EDX holds the C-bit for the high dword. */
        xorl %edx, %edx
        testl %edi, %edi
        jz 4f
        movl %edi, %ecx
        subl $32, %ecx
        movl $1, %edx
        shll %cl, %edx
4:      movl $VF_PAGE_TABLES, %ebx
        movl %ebx, %eax
41:     movl $0, (%eax)
        addl $4, %eax
        cmpl $VF_PAGE_TABLES + VF_PAGE_TABLES_SIZE, %eax
        jb 41b
        leal 0x1000 + 0x3(%ebx), %eax     /* PML4[0]: PDPT, present, writable */
        movl %eax, (%ebx)
        movl %edx, 4(%ebx)
        xorl %ecx, %ecx
5:      movl %ecx, %eax                   /* PDPT[n] = PD n */
        shll $12, %eax
        leal 0x2000 + 0x3(%ebx, %eax), %eax
        movl %eax, 0x1000(%ebx, %ecx, 8)
        movl %edx, 0x1004(%ebx, %ecx, 8)
        incl %ecx
        cmpl $4, %ecx
        jb 5b
        xorl %ecx, %ecx                   /* 2048 PD entries, 2 MiB each */
6:      movl %ecx, %eax
        shll $21, %eax
        orl $0x83, %eax                   /* present, writable, 2 MiB */
        movl %eax, 0x2000(%ebx, %ecx, 8)
        movl %edx, 0x2004(%ebx, %ecx, 8)
        incl %ecx
        cmpl $2048, %ecx
        jb 6b

        movl %cr4, %eax
        orl $0x20, %eax                   /* PAE */
        movl %eax, %cr4
        movl %ebx, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $0x100, %eax                  /* LME */
        wrmsr
        movl %cr0, %eax
        orl $0x80000001, %eax             /* PG, PE */
        movl %eax, %cr0
        ljmpl $VF_SEL_CODE64, $entry64

        /* No way to report anything yet: ask an SNP host to end the guest
         * (GHCB MSR protocol, termination request, reason set 0, code 0),
         * and halt for good if it does not. */
terminate32:
        movl $MSR_GHCB, %ecx
        movl $0x100, %eax
        xorl %edx, %edx
        wrmsr
        .byte 0xf3, 0x0f, 0x01, 0xd9      /* VMGEXIT (rep vmmcall) */
7:      hlt
        jmp 7b

        .code64
entry64:
        movl $VF_SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        testl %edi, %edi
        jz 81f
        cmpl CBIT_CHECK, %esi
        jne terminate64
        cmpl CBIT_CHECK + 4, %ebp
        jne terminate64
81:
        movabsq $VF_STACK_BSS + VF_STACK_BSS_SIZE, %rsp
        /* Clear .bss (zero already when pre-validated, but not in a plain guest
         * whose RAM survived a reset). */
        movl %edi, %ebx                   /* keep the C-bit across the clear */
        movabsq $__bss_start, %rdi
        movabsq $__bss_end, %rcx
        subq %rdi, %rcx
        xorl %eax, %eax
        rep stosb
        movl %ebx, %edi
        movabsq $vf_main, %rax
        call *%rax
8:      hlt
        jmp 8b

terminate64:                              /* as terminate32 */
        movl $MSR_GHCB, %ecx
        movl $0x100, %eax
        xorl %edx, %edx
        wrmsr
        .byte 0xf3, 0x0f, 0x01, 0xd9
9:      hlt
        jmp 9b

        /* Application processors of an SEV-ES/SNP guest start here (the
         * reset block below); the verifier boots one vCPU and parks the rest. */
        .code16
ap_entry:
        cli
10:     hlt
        jmp 10b

        .balign 8
gdt:
        .quad 0
        .quad 0x00cf9b000000ffff          /* 0x08: 32-bit code, flat */
        .quad 0x00af9b000000ffff          /* 0x10: 64-bit code */
        .quad 0x00cf93000000ffff          /* 0x18: data, flat */
gdt_end:
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
idt_desc:
        .word 0
        .long 0

        /* SEV metadata (OvmfPkg's "ASEV" layout): what QEMU has the PSP put
         * into the guest at launch, in order. */
        .balign 4
sev_metadata:
        .ascii "ASEV"
        .long sev_metadata_end - sev_metadata
        .long 1                           /* version */
        .long (sev_metadata_end - sev_sections) / 12
sev_sections:
        .long VF_PAGE_TABLES, VF_PAGE_TABLES_SIZE, 1      /* SNP_SEC_MEM */
        .long VF_SECRETS, 0x1000, 2                       /* SNP_SECRETS */
        .long VF_CPUID, 0x1000, 3                         /* CPUID */
        .long VF_HASHES, VF_HASHES_SIZE, 0x10             /* SNP_KERNEL_HASHES */
        .long VF_GHCB, 0x1000 + VF_STACK_BSS_SIZE, 1      /* SNP_SEC_MEM: GHCB, stack, .bss */
sev_metadata_end:

        /* The configuration block host tools patch in copies of the image. */
        .balign 16
        .globl vf_config
vf_config:
        .long VF_CONFIG_MAGIC
        .long 0                           /* flags: VF_FLAG_* */
        .fill VF_PLAIN_HASHES_SIZE, 1, 0  /* hash table for plain guests */
vf_config_end:

        /* The GUID table: entries are read backwards from the footer, each
         * [data][u16 length of data + 18][GUID]. It ends 32 bytes before
         * the image end. */
#define GUID_TABLE_SIZE (22 + 26 + 22 + 22 + 18)
        .org 0xfe0 - GUID_TABLE_SIZE, 0xcc
guid_table:
        /* cvmd verifier configuration: u32 offset of vf_config from the image end
         * (a5d2ac66-f72f-49c9-bfb8-07dc8e0d31ca). */
        .long 0x1000 - (vf_config - reset_page)
        .word 22
        .byte 0x66, 0xac, 0xd2, 0xa5, 0x2f, 0xf7, 0xc9, 0x49, 0xbf, 0xb8, 0x07, 0xdc, 0x8e, 0x0d, 0x31, 0xca
        /* SEV hash table: u32 GPA, u32 size (7255371f-3a3b-4b04-927b-1da6efa8d454). */
        .long VF_HASHES, VF_HASHES_SIZE
        .word 26
        .byte 0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54
        /* SEV metadata: u32 offset from the image end (dc886566-984a-4798-a75e-5585a7bf67cc). */
        .long 0x1000 - (sev_metadata - reset_page)
        .word 22
        .byte 0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc
        /* SEV-ES reset block: u32 AP reset EIP (00f771de-1a7e-4fcb-890e-68c77e2fb44e). */
        .long ap_entry - reset_page + VF_RESET_SECTION
        .word 22
        .byte 0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e
        /* Footer: u16 length of the whole table, then its GUID (96b582de-1fb2-45f7-baea-a366c55a082d). */
        .word GUID_TABLE_SIZE
        .byte 0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d
        .globl vf_guid_table_end          /* verifier.ld checks where it ends */
vf_guid_table_end:
        .org 0xff0, 0
reset_vector:                             /* 0xfffffff0 */
        jmp entry16
        .org 0x1000, 0
	.section .note.GNU-stack,"",@progbits
