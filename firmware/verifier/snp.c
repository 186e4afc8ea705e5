/* The SEV-SNP side of the verifier, written against the SEV-SNP firmware
 * ABI (PVALIDATE, page states) and the GHCB specification v2 (the MSR
 * protocol and the IOIO exit). It cannot run on this project's machines,
 * which have no SNP; docs/firmware.md says how it was reviewed. */
#include "vf.h"

#define MSR_GHCB 0xc0010130
#define GHCB_MSR_REGISTER_REQ 0x012
#define GHCB_MSR_REGISTER_RESP 0x013
#define GHCB_MSR_PSC_REQ 0x014
#define GHCB_MSR_PSC_RESP 0x015
#define GHCB_MSR_TERM_REQ 0x100
#define GHCB_MSR_SEV_INFO_REQ 0x002
#define GHCB_MSR_SEV_INFO_RESP 0x001
#define GHCB_MSR_HV_FEATURES_REQ 0x080
#define GHCB_MSR_HV_FEATURES_RESP 0x081
#define GHCB_HV_FEATURE_SNP 0x1
/* Reason code set 1 (as OVMF and Linux use for their own codes; set 0 has
 * meanings the GHCB specification defines). */
#define TERM_SET 1
#define PSC_PRIVATE 1
#define PSC_SHARED 2
#define PVALIDATE_FAIL_SIZEMISMATCH 6
/* GHCB page offsets (save area, then the exit fields). */
#define GHCB_RAX 0x1f8
#define GHCB_SW_EXIT_CODE 0x390
#define GHCB_SW_EXIT_INFO_1 0x398
#define GHCB_SW_EXIT_INFO_2 0x3a0
#define GHCB_SW_SCRATCH 0x3a8
#define GHCB_VALID_BITMAP 0x3f0
#define GHCB_SHARED_BUFFER 0x800
#define SVM_VMGEXIT_PSC 0x80000010
#define PSC_MAX_ENTRIES 253
#define GHCB_PROTOCOL_VERSION 0xffa
#define GHCB_USAGE 0xffc
#define SVM_EXIT_IOIO 0x7b
#define IOIO_TYPE_IN 0x1
#define IOIO_A16 0x80
#define TWO_MIB 0x200000ull

vf_snp vf_snp_state;
/* The first 2 MiB in 4 KiB pages: the GHCB and the bounce buffer must be
 * mapped without the C-bit, everything else with it. */
static uint64_t low_pt[512] __attribute__((aligned(4096)));

static void wrmsr(uint32_t msr, uint64_t v) {
        __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint64_t rdmsr(uint32_t msr) {
        uint32_t lo, hi;
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
        return (uint64_t)hi << 32 | lo;
}

static void vmgexit(void) {
        __asm__ volatile(".byte 0xf3, 0x0f, 0x01, 0xd9" ::: "memory"); /* rep vmmcall */
}

/* One GHCB MSR protocol exchange; the response is checked by the caller. */
static uint64_t msr_protocol(uint64_t request) {
        wrmsr(MSR_GHCB, request);
        vmgexit();
        return rdmsr(MSR_GHCB);
}

_Noreturn void vf_snp_terminate(unsigned reason) {
        wrmsr(MSR_GHCB,
              GHCB_MSR_TERM_REQ | (uint64_t)TERM_SET << 12 | (uint64_t)(reason & 0xff) << 16);
        vmgexit();
        for (;;)
                __asm__ volatile("cli; hlt");
}

/* Says why on the console once it works, else ends the guest with the code. */
static _Noreturn void fail(unsigned code, const char *what, uint64_t addr, unsigned rc) {
        if (vf_snp_state.active)
                vf_halt("%s 0x%lx failed (%u)", what, addr, rc);
        vf_snp_terminate(code);
}

#define PVALIDATE_NO_UPDATE 0x100 /* CF set: the page was already in that state. */

/* PVALIDATE; returns its rc, or PVALIDATE_NO_UPDATE. A page validated twice
 * could be the host replaying an old page: the callers treat it as fatal,
 * as OVMF and Linux do. */
static unsigned pvalidate(uint64_t va, bool large, bool validate) {
        unsigned rc;
        bool cf;
        __asm__ volatile(".byte 0xf2, 0x0f, 0x01, 0xff" /* pvalidate */
                         : "=a"(rc), "=@ccc"(cf)
                         : "a"(va), "c"((unsigned)large), "d"((unsigned)validate)
                         : "memory");
        return rc == 0 && cf ? PVALIDATE_NO_UPDATE : rc;
}

static void validate_page(uint64_t va, bool large) {
        unsigned rc = pvalidate(va, large, true);
        if (rc != 0)
                fail(3, "PVALIDATE of", va, rc);
}

static void psc_private(uint64_t start, uint64_t end);

void vf_snp_validate(uint64_t start, uint64_t end) {
        uint64_t a = start & ~0xfffull;
        /* Ask the host to assign the range to the guest first, as the GHCB
         * specification expects (QEMU with guest_memfd has it private
         * already; other hypervisors need not). */
        psc_private(a, end);
        while (a < end) {
                if (!(a & (TWO_MIB - 1)) && a + TWO_MIB <= end) {
                        unsigned rc = pvalidate(a, true, true);
                        if (rc == 0) {
                                a += TWO_MIB;
                                continue;
                        }
                        /* The host backs this range with 4 KiB pages. */
                        if (rc != PVALIDATE_FAIL_SIZEMISMATCH)
                                fail(3, "PVALIDATE (2 MiB) of", a, rc);
                        for (uint64_t p = a; p < a + TWO_MIB; p += 0x1000)
                                validate_page(p, false);
                        a += TWO_MIB;
                        continue;
                }
                validate_page(a, false);
                a += 0x1000;
        }
}

/* A private page becomes shared: rescind its validation, drop the C-bit
 * from its mapping, then ask the host to change its state. */
static void make_shared(uint64_t gpa, bool was_validated) {
        /* No private cache lines may outlive the change (the hardware keeps
         * them coherent only with CPUID 0x8000001f EAX[10]; flush anyway). */
        for (uint64_t line = gpa; line < gpa + 0x1000; line += 64)
                __asm__ volatile("clflush (%0)" : : "r"(line) : "memory");
        if (was_validated) {
                unsigned rc = pvalidate(gpa, false, false);
                if (rc != 0)
                        fail(4, "PVALIDATE rescind of", gpa, rc);
        }
        low_pt[gpa >> 12] &= ~vf_snp_state.cbit_mask;
        __asm__ volatile("invlpg (%0)" : : "r"(gpa) : "memory");
        uint64_t resp =
                msr_protocol(GHCB_MSR_PSC_REQ | (gpa & ~0xfffull) | (uint64_t)PSC_SHARED << 52);
        if ((resp & 0xfff) != GHCB_MSR_PSC_RESP || resp >> 32)
                fail(5, "page state change to shared of", gpa, (unsigned)(resp >> 32));
}

void vf_snp_init(unsigned cbit) {
        vf_snp_state.cbit = cbit;
        vf_snp_state.cbit_mask = 1ull << cbit;
        /* Split the first 2 MiB (PD0[0]) into 4 KiB pages, all private. */
        uint64_t *pd0 = (uint64_t *)(VF_PAGE_TABLES + 0x2000);
        for (unsigned i = 0; i < 512; i++)
                low_pt[i] = (uint64_t)i << 12 | 0x3 | vf_snp_state.cbit_mask;
        pd0[0] = (uint64_t)(uintptr_t)low_pt | 0x3 | vf_snp_state.cbit_mask;
        uint64_t cr3;
        __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");

        /* Until the GHCB works, no port I/O: no messages either. The host
         * must speak GHCB protocol version 2 and support SNP. */
        uint64_t info = msr_protocol(GHCB_MSR_SEV_INFO_REQ);
        if ((info & 0xfff) != GHCB_MSR_SEV_INFO_RESP || (info >> 48) < 2 ||
            ((info >> 32) & 0xffff) > 2)
                vf_snp_terminate(6);
        uint64_t features = msr_protocol(GHCB_MSR_HV_FEATURES_REQ);
        if ((features & 0xfff) != GHCB_MSR_HV_FEATURES_RESP ||
            !((features >> 12) & GHCB_HV_FEATURE_SNP))
                vf_snp_terminate(7);
        make_shared(VF_GHCB, true); /* pre-validated by the launch (SNP_SEC_MEM) */
        for (uint64_t p = VF_BOUNCE; p < VF_BOUNCE + VF_BOUNCE_SIZE; p += 0x1000)
                make_shared(p, false);
        memset((void *)VF_GHCB, 0, 0x1000);
        uint64_t resp = msr_protocol(GHCB_MSR_REGISTER_REQ | VF_GHCB);
        if ((resp & 0xfff) != GHCB_MSR_REGISTER_RESP || (resp & ~0xfffull) != VF_GHCB)
                vf_snp_terminate(1);
        vf_snp_state.active = true;
}

static void set_field(uint8_t *ghcb, unsigned off, uint64_t v) {
        vf_put_le64(ghcb + off, v);
        ghcb[GHCB_VALID_BITMAP + off / 64] |= (uint8_t)(1u << ((off / 8) % 8));
}

/* One VMGEXIT through the GHCB page: the exit code and information, one
 * more save-area field the event needs (its offset and value), the GHCB
 * version and usage, the GHCB's address in the MSR the hypervisor reads. */
static void ghcb_exit(uint8_t *ghcb, uint64_t code, uint64_t info1, uint64_t info2, unsigned extra,
                      uint64_t extra_value) {
        memset(ghcb + GHCB_VALID_BITMAP, 0, 16);
        set_field(ghcb, extra, extra_value);
        set_field(ghcb, GHCB_SW_EXIT_CODE, code);
        set_field(ghcb, GHCB_SW_EXIT_INFO_1, info1);
        set_field(ghcb, GHCB_SW_EXIT_INFO_2, info2);
        ghcb[GHCB_PROTOCOL_VERSION] = 2;
        ghcb[GHCB_PROTOCOL_VERSION + 1] = 0;
        vf_put_le32(ghcb + GHCB_USAGE, 0);
        wrmsr(MSR_GHCB, VF_GHCB);
        vmgexit();
}

/* Page state changes to private through the GHCB page (NAE event
 * SNP_PAGE_STATE_CHANGE): up to 253 entries per exit, 2 MiB entries where
 * the range allows. The host may process part of a request; the header's
 * cur_entry says how far it got, and the request is resent from there. */
#define PSC_MAX_STALLS 8

static void psc_flush(uint8_t *ghcb, unsigned n) {
        uint8_t *buf = ghcb + GHCB_SHARED_BUFFER;
        vf_put_le32(buf, (n - 1) << 16); /* cur_entry 0, end_entry n - 1 (inclusive) */
        vf_put_le32(buf + 4, 0);
        unsigned stalls = 0;
        while (vf_le16(buf) <= n - 1) {
                unsigned cur = vf_le16(buf);
                uint64_t cur_page = vf_le64(buf + 8 + 8 * cur) & 0xfff;
                ghcb_exit(ghcb, SVM_VMGEXIT_PSC, 0, 0, GHCB_SW_SCRATCH,
                          VF_GHCB + GHCB_SHARED_BUFFER);
                /* The host shares the buffer: it may only move forward within it. */
                unsigned now = vf_le16(buf);
                uint64_t at = now <= n - 1 ? vf_le64(buf + 8 + 8 * now) : 0;
                uint64_t info1 = vf_le64(ghcb + GHCB_SW_EXIT_INFO_1),
                         info2 = vf_le64(ghcb + GHCB_SW_EXIT_INFO_2);
                if ((uint32_t)info1 || info2)
                        vf_halt("page state change to private at 0x%lx failed (info 0x%lx, 0x%lx)",
                                (uint64_t)(at & ~0xfffull), info1, info2);
                if (vf_le16(buf + 2) != n - 1 || vf_le32(buf + 4) != 0 || now < cur)
                        vf_halt("page state change: the host corrupted the request");
                /* Progress is a later entry, or more pages done of the same one. */
                if (now > cur || (now <= n - 1 && (at & 0xfff) > cur_page))
                        stalls = 0;
                else if (++stalls == PSC_MAX_STALLS)
                        vf_halt("page state change to private at 0x%lx: no progress",
                                (uint64_t)(at & ~0xfffull));
        }
}

static void psc_private(uint64_t start, uint64_t end) {
        uint8_t *ghcb = (uint8_t *)VF_GHCB;
        unsigned n = 0;
        for (uint64_t a = start; a < end;) {
                bool large = !(a & (TWO_MIB - 1)) && a + TWO_MIB <= end;
                /* Entry: cur_page 11:0, GFN 51:12, operation 55:52, page size 56. */
                uint64_t e = (a & ~0xfffull) | (uint64_t)PSC_PRIVATE << 52 | (uint64_t)large << 56;
                vf_put_le64(ghcb + GHCB_SHARED_BUFFER + 8 + 8 * n, e);
                if (++n == PSC_MAX_ENTRIES) {
                        psc_flush(ghcb, n);
                        n = 0;
                }
                a += large ? TWO_MIB : 0x1000;
        }
        if (n)
                psc_flush(ghcb, n);
}

uint32_t vf_snp_ioio(uint16_t port, unsigned size, bool in, uint32_t value) {
        uint8_t *ghcb = (uint8_t *)VF_GHCB;
        uint64_t info = (uint64_t)port << 16 | IOIO_A16 |
                        (size == 1   ? 0x10
                         : size == 2 ? 0x20
                                     : 0x40);
        if (in)
                info |= IOIO_TYPE_IN;
        ghcb_exit(ghcb, SVM_EXIT_IOIO, info, 0, GHCB_RAX, in ? 0 : value);
        if ((uint32_t)vf_le64(ghcb + GHCB_SW_EXIT_INFO_1) != 0)
                vf_snp_terminate(2); /* no console to say it on: this was the console */
        if (!in)
                return 0;
        if (!(ghcb[GHCB_VALID_BITMAP + GHCB_RAX / 64] & (1u << ((GHCB_RAX / 8) % 8))))
                vf_snp_terminate(2);
        uint32_t v = (uint32_t)vf_le64(ghcb + GHCB_RAX);
        return size == 1 ? (v & 0xff) : size == 2 ? (v & 0xffff) : v;
}
