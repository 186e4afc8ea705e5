/* QEMU builds the guest's ACPI tables itself and serves them over fw_cfg
 * with a script ("etc/table-loader", hw/acpi/bios-linker-loader.c) that
 * tells firmware where to put each blob, which pointers to relocate and
 * which checksums to fix. Running it gives Linux the same ACPI tables
 * SeaBIOS or OVMF would: CPUs, interrupt controllers, HPET, PCI. The
 * tables land in VF_ACPI, which the kernel's memory map reserves, and the
 * RSDP's address goes to the kernel in boot_params. */
#include "vf.h"

#define CMD_SIZE 128
#define NAME_SIZE 56
#define MAX_FILES 16
#define CMD_ALLOCATE 1
#define CMD_ADD_POINTER 2
#define CMD_ADD_CHECKSUM 3
#define CMD_WRITE_POINTER 4

typedef struct blob {
        char name[NAME_SIZE];
        uint8_t *data;
        uint32_t size;
} blob;

static blob blobs[MAX_FILES];
static unsigned nblobs;
static uint8_t script[CMD_SIZE * 64];

static blob *find_blob(const uint8_t *name) {
        for (unsigned i = 0; i < nblobs; i++)
                if (memcmp(blobs[i].name, name, NAME_SIZE) == 0)
                        return &blobs[i];
        return NULL;
}

/* Returns false, having said why, when the script asks for something the
 * verifier cannot do: the guest then boots without ACPI. */
static bool run_command(const uint8_t *c, uint64_t *next) {
        switch (vf_le32(c)) {
        case CMD_ALLOCATE: {
                uint32_t align = vf_le32(c + 4 + NAME_SIZE);
                uint16_t key;
                uint32_t size;
                char name[NAME_SIZE + 1] = {0};
                memcpy(name, c + 4, NAME_SIZE);
                if (nblobs == MAX_FILES || !vf_fwcfg_find(name, &key, &size))
                        return vf_log("ACPI: cannot allocate %s", name), false;
                if (align < 16)
                        align = 16;
                if (align & (align - 1))
                        return vf_log("ACPI: %s: bad alignment 0x%x", name, align), false;
                uint64_t at = (*next + align - 1) & ~(uint64_t)(align - 1);
                if (at + size > VF_ACPI + VF_ACPI_SIZE)
                        return vf_log("ACPI: %s (%u bytes) does not fit", name, size), false;
                blob *b = &blobs[nblobs++];
                memcpy(b->name, c + 4, NAME_SIZE);
                b->data = (uint8_t *)at;
                b->size = size;
                vf_fwcfg_read(key, b->data, size, NULL);
                *next = at + size;
                return true;
        }
        case CMD_ADD_POINTER: {
                blob *dst = find_blob(c + 4), *src = find_blob(c + 4 + NAME_SIZE);
                uint32_t off = vf_le32(c + 4 + 2 * NAME_SIZE);
                uint8_t size = c[8 + 2 * NAME_SIZE];
                if (!dst || !src || (size != 1 && size != 2 && size != 4 && size != 8) ||
                    off > dst->size || size > dst->size - off)
                        return vf_log("ACPI: bad pointer command"), false;
                uint64_t v = 0;
                memcpy(&v, dst->data + off, size);
                v += (uint64_t)(uintptr_t)src->data;
                memcpy(dst->data + off, &v, size);
                return true;
        }
        case CMD_ADD_CHECKSUM: {
                blob *b = find_blob(c + 4);
                uint32_t off = vf_le32(c + 4 + NAME_SIZE), start = vf_le32(c + 8 + NAME_SIZE),
                         len = vf_le32(c + 12 + NAME_SIZE);
                if (!b || off >= b->size || start > b->size || len > b->size - start)
                        return vf_log("ACPI: bad checksum command"), false;
                uint8_t sum = 0;
                for (uint32_t i = 0; i < len; i++)
                        sum += b->data[start + i];
                b->data[off] -= sum;
                return true;
        }
        case CMD_WRITE_POINTER:
                /* Only devices this verifier's guests do not have (vmgenid, nvdimm) ask for it. */
                vf_log("ACPI: skipping a write-pointer command");
                return true;
        default: return true; /* Unknown commands are skipped, as SeaBIOS does. */
        }
}

uint64_t vf_acpi_load(void) {
        uint16_t key;
        uint32_t size;
        if (!vf_fwcfg_find("etc/table-loader", &key, &size))
                return 0;
        if (size > sizeof(script) || size % CMD_SIZE) {
                vf_log("ACPI: table loader script of %u bytes: booting without ACPI", size);
                return 0;
        }
        vf_fwcfg_read(key, script, size, NULL);
        uint64_t next = VF_ACPI;
        for (uint32_t i = 0; i < size; i += CMD_SIZE)
                if (!run_command(script + i, &next)) {
                        memset((void *)VF_ACPI, 0, VF_ACPI_SIZE);
                        return 0;
                }
        static const uint8_t rsdp_name[NAME_SIZE] = "etc/acpi/rsdp";
        blob *rsdp = find_blob(rsdp_name);
        return rsdp ? (uint64_t)(uintptr_t)rsdp->data : 0;
}
