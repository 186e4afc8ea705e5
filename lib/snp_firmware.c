/* The OVMF footer GUID table and SEV metadata, as QEMU reads them
 * (hw/i386/pc_sysfw_ovmf.c, target/i386/sev.c), but strict: a corrupt
 * structure is an error rather than a silently absent entry, so a guest
 * owner never gets a plausible digest for a firmware QEMU reads differently. */
#include <errno.h>
#include <string.h>

#include "le.h"
#include "snp_firmware.h"

const uint8_t cvm_snp_guid_table_footer[16] =
        CVM_SNP_GUID(0x96b582de, 0x1fb2, 0x45f7, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d);
const uint8_t cvm_snp_guid_reset_block[16] =
        CVM_SNP_GUID(0x00f771de, 0x1a7e, 0x4fcb, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e);
const uint8_t cvm_snp_guid_sev_metadata[16] =
        CVM_SNP_GUID(0xdc886566, 0x984a, 0x4798, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc);
const uint8_t cvm_snp_guid_hash_table[16] =
        CVM_SNP_GUID(0x7255371f, 0x3a3b, 0x4b04, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54);

const uint8_t cvm_snp_guid_verifier_config[16] =
        CVM_SNP_GUID(0xa5d2ac66, 0xf72f, 0x49c9, 0xbf, 0xb8, 0x07, 0xdc, 0x8e, 0x0d, 0x31, 0xca);

#define FOUR_GIB (UINT64_C(1) << 32)
/* The footer GUID ends 32 bytes before the image end, preceded by the u16
 * length of the whole table (entries, length and footer GUID). */
#define FOOTER_GUID_END 32
#define ENTRY_HEADER 18 /* Each entry ends with its u16 length and its GUID. */
#define METADATA_HEADER 16
#define METADATA_DESC 12

enum { ENTRY_RESET_BLOCK, ENTRY_SEV_METADATA, ENTRY_HASH_TABLE, ENTRY_VERIFIER_CONFIG, N_ENTRIES };

typedef struct table_entry {
        const uint8_t *data; /* NULL when the table has no such entry. */
        size_t len;
} table_entry;

static const struct {
        const uint8_t *guid;
        const char *name;
        size_t min_len;
} known_entries[N_ENTRIES] = {
        [ENTRY_RESET_BLOCK] = {cvm_snp_guid_reset_block, "SEV-ES reset block", 4},
        [ENTRY_SEV_METADATA] = {cvm_snp_guid_sev_metadata, "SEV metadata", 4},
        [ENTRY_HASH_TABLE] = {cvm_snp_guid_hash_table, "SEV hash table", 8},
        [ENTRY_VERIFIER_CONFIG] = {cvm_snp_guid_verifier_config, "cvmd verifier configuration", 4},
};

/* Walks the table backwards from its end, as its entries are laid out. The
 * image is at least a page, so the footer is inside it. */
static int parse_guid_table(const uint8_t *image, size_t size, table_entry entries[N_ENTRIES],
                            cvm_error *err) {
        size_t footer = size - FOOTER_GUID_END - 16;
        if (memcmp(image + footer, cvm_snp_guid_table_footer, 16) != 0)
                return 0;
        size_t end = footer - 2;
        uint16_t total = cvm_le16(image + end);
        if (total < ENTRY_HEADER)
                return cvm_error_set(err, -EINVAL,
                                     "firmware GUID table: length %u is shorter than its footer",
                                     total);
        size_t table_len = total - ENTRY_HEADER;
        if (table_len > end)
                return cvm_error_set(err, -EINVAL,
                                     "firmware GUID table: length %u runs past the image start",
                                     total);
        size_t start = end - table_len;
        while (end > start) {
                if (end - start < ENTRY_HEADER)
                        return cvm_error_set(err, -EINVAL,
                                             "firmware GUID table: %zu bytes at offset 0x%zx are "
                                             "too short for an entry",
                                             end - start, start);
                const uint8_t *guid = image + end - 16;
                uint16_t len = cvm_le16(image + end - ENTRY_HEADER);
                if (len < ENTRY_HEADER || len > end - start)
                        return cvm_error_set(err, -EINVAL,
                                             "firmware GUID table: entry ending at offset 0x%zx "
                                             "has length %u, outside the table",
                                             end, len);
                for (size_t k = 0; k < N_ENTRIES; k++) {
                        if (memcmp(guid, known_entries[k].guid, 16) != 0)
                                continue;
                        if (entries[k].data)
                                return cvm_error_set(err, -EINVAL,
                                                     "firmware GUID table: duplicate %s entry",
                                                     known_entries[k].name);
                        entries[k].data = image + end - len;
                        entries[k].len = len - ENTRY_HEADER;
                        if (entries[k].len < known_entries[k].min_len)
                                return cvm_error_set(err, -EINVAL,
                                                     "firmware GUID table: %s entry has %zu "
                                                     "bytes of data, needs %zu",
                                                     known_entries[k].name, entries[k].len,
                                                     known_entries[k].min_len);
                }
                end -= len;
        }
        return 0;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
        return a < b + blen && b < a + alen;
}

static int check_section(const cvm_snp_firmware *fw, size_t i, cvm_error *err) {
        const cvm_snp_section *s = &fw->sections[i];
        switch (s->kind) {
        case CVM_SNP_SECTION_SNP_SEC_MEM:
        case CVM_SNP_SECTION_SNP_SECRETS:
        case CVM_SNP_SECTION_CPUID:
        case CVM_SNP_SECTION_SVSM_CAA:
        case CVM_SNP_SECTION_SNP_KERNEL_HASHES: break;
        default:
                return cvm_error_set(err, -EINVAL, "SEV metadata section %zu: unknown type 0x%x", i,
                                     (unsigned)s->kind);
        }
        if (s->gpa % CVM_SNP_PAGE_SIZE != 0 || s->size == 0 || s->size % CVM_SNP_PAGE_SIZE != 0)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata section %zu (gpa 0x%x, size 0x%x) is not a "
                                     "non-empty run of whole pages",
                                     i, s->gpa, s->size);
        if (s->size > CVM_SNP_MAX_SECTION_SIZE)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata section %zu (gpa 0x%x) is 0x%x bytes, more "
                                     "than the limit of 0x%x",
                                     i, s->gpa, s->size, CVM_SNP_MAX_SECTION_SIZE);
        if ((uint64_t)s->gpa + s->size > FOUR_GIB)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata section %zu (gpa 0x%x, size 0x%x) extends past "
                                     "4 GiB",
                                     i, s->gpa, s->size);
        /* The PSP refuses to launch a page twice, so QEMU could not launch these. */
        if (ranges_overlap(s->gpa, s->size, fw->gpa, fw->size))
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata section %zu (gpa 0x%x, size 0x%x) overlaps the "
                                     "firmware image at 0x%llx",
                                     i, s->gpa, s->size, (unsigned long long)fw->gpa);
        for (size_t j = 0; j < i; j++) {
                const cvm_snp_section *o = &fw->sections[j];
                if (ranges_overlap(s->gpa, s->size, o->gpa, o->size))
                        return cvm_error_set(err, -EINVAL,
                                             "SEV metadata section %zu (gpa 0x%x, size 0x%x) "
                                             "overlaps section %zu (gpa 0x%x, size 0x%x)",
                                             i, s->gpa, s->size, j, o->gpa, o->size);
        }
        return 0;
}

static int parse_sev_metadata(const uint8_t *image, const table_entry *entry, cvm_snp_firmware *fw,
                              cvm_error *err) {
        uint32_t offset = cvm_le32(entry->data);
        if (offset < METADATA_HEADER || offset > fw->size)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata: offset 0x%x from the image end is outside "
                                     "the image",
                                     offset);
        const uint8_t *hdr = image + fw->size - offset;
        if (memcmp(hdr, "ASEV", 4) != 0)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata: no ASEV signature at image offset 0x%zx",
                                     fw->size - offset);
        uint32_t len = cvm_le32(hdr + 4);
        uint32_t count = cvm_le32(hdr + 12);
        if (len < METADATA_HEADER || len > offset)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata: length 0x%x at image offset 0x%zx is outside "
                                     "the image",
                                     len, fw->size - offset);
        if (count > (len - METADATA_HEADER) / METADATA_DESC)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata: %u sections do not fit its length 0x%x", count,
                                     len);
        if (count > CVM_SNP_MAX_SECTIONS)
                return cvm_error_set(err, -EINVAL,
                                     "SEV metadata: %u sections, more than the limit of %d", count,
                                     CVM_SNP_MAX_SECTIONS);
        for (size_t i = 0; i < count; i++) {
                const uint8_t *d = hdr + METADATA_HEADER + i * METADATA_DESC;
                fw->sections[i] = (cvm_snp_section){
                        .gpa = cvm_le32(d),
                        .size = cvm_le32(d + 4),
                        .kind = (cvm_snp_section_kind)cvm_le32(d + 8),
                };
                int r = check_section(fw, i, err);
                if (r < 0)
                        return r;
        }
        fw->nsections = count;
        return 0;
}

int cvm_snp_firmware_parse(const uint8_t *image, size_t size, cvm_snp_firmware *ret,
                           cvm_error *err) {
        if (size == 0 || size % CVM_SNP_PAGE_SIZE != 0)
                return cvm_error_set(err, -EINVAL,
                                     "firmware image is %zu bytes, not a non-zero multiple of "
                                     "4 KiB",
                                     size);
        if (size > CVM_SNP_MAX_FIRMWARE_SIZE)
                return cvm_error_set(err, -EFBIG,
                                     "firmware image is %zu bytes, more than the limit of %u", size,
                                     CVM_SNP_MAX_FIRMWARE_SIZE);
        *ret = (cvm_snp_firmware){.gpa = FOUR_GIB - size, .size = size};
        table_entry entries[N_ENTRIES] = {0};
        int r = parse_guid_table(image, size, entries, err);
        if (r < 0)
                return r;
        if (entries[ENTRY_RESET_BLOCK].data) {
                ret->has_reset_eip = true;
                ret->reset_eip = cvm_le32(entries[ENTRY_RESET_BLOCK].data);
        }
        if (entries[ENTRY_HASH_TABLE].data) {
                ret->has_hash_table = true;
                ret->hash_table_gpa = cvm_le32(entries[ENTRY_HASH_TABLE].data);
                ret->hash_table_size = cvm_le32(entries[ENTRY_HASH_TABLE].data + 4);
        }
        if (entries[ENTRY_VERIFIER_CONFIG].data) {
                uint32_t off = cvm_le32(entries[ENTRY_VERIFIER_CONFIG].data);
                if (off < 8 || off > size)
                        return cvm_error_set(err, -EINVAL,
                                             "cvmd verifier configuration: offset 0x%x from the "
                                             "image end is outside the image",
                                             off);
                ret->has_verifier_config = true;
                ret->verifier_config_offset = size - off;
        }
        if (entries[ENTRY_SEV_METADATA].data)
                return parse_sev_metadata(image, &entries[ENTRY_SEV_METADATA], ret, err);
        return 0;
}
