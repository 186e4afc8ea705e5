/* The little chipset set-up Linux expects from firmware: the ACPI power
 * management I/O block. QEMU builds its FADT from where the chipset's PM
 * base points when the tables are first read, so this runs before the
 * ACPI table loader; without it Linux waits seconds for ACPI mode and
 * cannot power the VM off. Values as SeaBIOS sets them (src/fw/pciinit.c). */
#include "vf.h"

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc
#define PM_BASE 0x600

static uint32_t pci_read32(unsigned dev, unsigned fn, unsigned reg) {
        vf_outl(PCI_ADDR, 0x80000000u | dev << 11 | fn << 8 | (reg & 0xfc));
        return vf_inl(PCI_DATA);
}

static void pci_write32(unsigned dev, unsigned fn, unsigned reg, uint32_t v) {
        vf_outl(PCI_ADDR, 0x80000000u | dev << 11 | fn << 8 | (reg & 0xfc));
        vf_outl(PCI_DATA, v);
}

/* Sets one byte of a config dword (read-modify-write). */
static void pci_write8(unsigned dev, unsigned fn, unsigned reg, uint8_t v) {
        unsigned shift = (reg & 3) * 8;
        uint32_t d = pci_read32(dev, fn, reg);
        d = (d & ~(0xffu << shift)) | (uint32_t)v << shift;
        pci_write32(dev, fn, reg, d);
}

void vf_platform_init(void) {
        uint32_t host = pci_read32(0, 0, 0);
        if (host == 0x29c08086) {                        /* q35: ICH9 LPC at 00:1f.0 */
                pci_write32(0x1f, 0, 0x40, PM_BASE | 1); /* PMBASE */
                pci_write8(0x1f, 0, 0x44, 0x80);         /* ACPI_CNTL: ACPI_EN */
        } else if (host == 0x12378086 && pci_read32(1, 3, 0) == 0x71138086) {
                /* pc: PIIX4 power management at 00:01.3 */
                pci_write32(1, 3, 0x40, PM_BASE | 1);
                pci_write8(1, 3, 0x80, 0x01); /* PMIOSE: PM I/O space on */
        } else {
                vf_log("unknown chipset (host bridge %x): ACPI power management left alone", host);
        }
}
