/* Port I/O. In a plain guest these are the IN and OUT instructions; under
 * SEV-SNP those raise a #VC exception, so the verifier asks the host
 * directly, the way a #VC handler would: an IOIO exit through the GHCB. */
#include "vf.h"

uint8_t vf_inb(uint16_t port) {
        if (vf_snp_state.active)
                return (uint8_t)vf_snp_ioio(port, 1, true, 0);
        uint8_t v;
        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

uint32_t vf_inl(uint16_t port) {
        if (vf_snp_state.active)
                return vf_snp_ioio(port, 4, true, 0);
        uint32_t v;
        __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

void vf_outb(uint16_t port, uint8_t v) {
        if (vf_snp_state.active)
                vf_snp_ioio(port, 1, false, v);
        else
                __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

void vf_outw(uint16_t port, uint16_t v) {
        if (vf_snp_state.active)
                vf_snp_ioio(port, 2, false, v);
        else
                __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

void vf_outl(uint16_t port, uint32_t v) {
        if (vf_snp_state.active)
                vf_snp_ioio(port, 4, false, v);
        else
                __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
