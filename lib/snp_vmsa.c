/* The reset-state VMSA KVM builds for a QEMU vCPU of an SNP guest. Field
 * offsets are those of the SEV-ES save area (AMD APM vol. 2, table B-4;
 * struct sev_es_save_area in Linux). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "le.h"
#include "log.h"
#include "snp_firmware.h"
#include "snp_vmsa.h"

/* QEMU's AMD EPYC models; versions keep the family, model and stepping. */
static const struct {
        const char *name;
        unsigned family, model, stepping;
} vcpu_models[] = {
        {"EPYC", 23, 1, 2},           {"EPYC-v1", 23, 1, 2},       {"EPYC-v2", 23, 1, 2},
        {"EPYC-v3", 23, 1, 2},        {"EPYC-v4", 23, 1, 2},       {"EPYC-IBPB", 23, 1, 2},
        {"EPYC-Rome", 23, 49, 0},     {"EPYC-Rome-v1", 23, 49, 0}, {"EPYC-Rome-v2", 23, 49, 0},
        {"EPYC-Rome-v3", 23, 49, 0},  {"EPYC-Rome-v4", 23, 49, 0}, {"EPYC-Milan", 25, 1, 1},
        {"EPYC-Milan-v1", 25, 1, 1},  {"EPYC-Milan-v2", 25, 1, 1}, {"EPYC-Genoa", 25, 17, 0},
        {"EPYC-Genoa-v1", 25, 17, 0}, {"EPYC-Turin", 26, 0, 0},    {"EPYC-Turin-v1", 26, 0, 0},
};

/* CPUID Fn0000_0001_EAX: a family above 0xf is 0xf plus the extended family. */
static uint32_t signature(unsigned family, unsigned model, unsigned stepping) {
        unsigned base_family = family > 0xf ? 0xf : family;
        unsigned ext_family = family > 0xf ? family - 0xf : 0;
        return (uint32_t)(ext_family << 20 | (model >> 4) << 16 | base_family << 8 |
                          (model & 0xf) << 4 | (stepping & 0xf));
}

int cvm_snp_vcpu_signature(const char *vcpu_type, uint32_t *ret, cvm_error *err) {
        for (size_t i = 0; vcpu_type && i < CVM_ARRAY_SIZE(vcpu_models); i++)
                if (strcmp(vcpu_type, vcpu_models[i].name) == 0) {
                        *ret = signature(vcpu_models[i].family, vcpu_models[i].model,
                                         vcpu_models[i].stepping);
                        return 0;
                }
        char known[CVM_ERROR_MESSAGE_MAX / 2] = "";
        size_t n = 0;
        for (size_t i = 0; i < CVM_ARRAY_SIZE(vcpu_models) && n < sizeof(known); i++)
                n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", i ? ", " : "",
                                      vcpu_models[i].name);
        return cvm_error_set(err, -EINVAL, "unknown vCPU type %s (known: %s)", CVM_QUOTE(vcpu_type),
                             known);
}

static void put_segment(uint8_t *page, size_t off, uint16_t selector, uint16_t attrib,
                        uint32_t limit, uint64_t base) {
        cvm_put_le16(page + off, selector);
        cvm_put_le16(page + off + 2, attrib);
        cvm_put_le32(page + off + 4, limit);
        cvm_put_le64(page + off + 8, base);
}

void cvm_snp_vmsa_build(uint8_t *page, uint32_t eip, uint32_t vcpu_signature,
                        uint64_t guest_features) {
        memset(page, 0, CVM_SNP_PAGE_SIZE);
        /* Real mode at reset: CS:IP is split from the start address. */
        put_segment(page, 0x00, 0, 0x93, 0xffff, 0);                      /* es */
        put_segment(page, 0x10, 0xf000, 0x9b, 0xffff, eip & 0xffff0000u); /* cs */
        put_segment(page, 0x20, 0, 0x93, 0xffff, 0);                      /* ss */
        put_segment(page, 0x30, 0, 0x93, 0xffff, 0);                      /* ds */
        put_segment(page, 0x40, 0, 0x93, 0xffff, 0);                      /* fs */
        put_segment(page, 0x50, 0, 0x93, 0xffff, 0);                      /* gs */
        put_segment(page, 0x60, 0, 0, 0xffff, 0);                         /* gdtr */
        put_segment(page, 0x70, 0, 0x82, 0xffff, 0);                      /* ldtr */
        put_segment(page, 0x80, 0, 0, 0xffff, 0);                         /* idtr */
        put_segment(page, 0x90, 0, 0x8b, 0xffff, 0);                      /* tr */
        cvm_put_le64(page + 0xd0, 0x1000);                                /* efer: KVM sets SVME. */
        cvm_put_le64(page + 0x148, 0x40);                                 /* cr4: KVM sets MCE. */
        cvm_put_le64(page + 0x158, 0x10);                                 /* cr0: ET. */
        cvm_put_le64(page + 0x160, 0x400);                                /* dr7 */
        cvm_put_le64(page + 0x168, 0xffff0ff0);                           /* dr6 */
        cvm_put_le64(page + 0x170, 0x2);                                  /* rflags */
        cvm_put_le64(page + 0x178, eip & 0xffff);                         /* rip */
        cvm_put_le64(page + 0x268, UINT64_C(0x7040600070406)); /* g_pat: the power-on PAT. */
        cvm_put_le64(page + 0x310, vcpu_signature); /* rdx: the CPUID signature at reset. */
        cvm_put_le64(page + 0x3b0, guest_features); /* sev_features */
        cvm_put_le64(page + 0x3e8, 0x1);            /* xcr0: x87 only. */
        cvm_put_le32(page + 0x408, 0x1f80);         /* mxcsr: QEMU's FPU reset state. */
        cvm_put_le16(page + 0x410, 0x37f);          /* x87_fcw */
}
