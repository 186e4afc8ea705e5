/* The launch digest chain and the pages QEMU submits for an SNP launch:
 * the firmware, then the SEV metadata sections in order (the kernel-hashes
 * section carrying QEMU's hash table), then one VMSA per vCPU. */
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "le.h"
#include "snp_measure.h"
#include "verifier/bootproto.h"

#define PAGE_INFO_SIZE 0x70

/* QEMU's SevHashTable (target/i386/sev.c): its layout and GUIDs are the
 * verifier's (bootproto.h), which reads what this builds. */
static const uint8_t guid_ht_header[HT_GUID_SIZE] = HT_GUID_HEADER;
static const uint8_t guid_ht_cmdline[HT_GUID_SIZE] = HT_GUID_CMDLINE;
static const uint8_t guid_ht_initrd[HT_GUID_SIZE] = HT_GUID_INITRD;
static const uint8_t guid_ht_kernel[HT_GUID_SIZE] = HT_GUID_KERNEL;

#define HT_SIZE HT_MIN_SIZE
/* PaddedSevHashTable: the table rounded up to 16 bytes with zeros. */
#define HT_PADDED_SIZE ((HT_SIZE + 15) / 16 * 16)

static const char *page_type_name(cvm_snp_page_type type) {
        switch (type) {
        case CVM_SNP_PAGE_NORMAL: return "NORMAL";
        case CVM_SNP_PAGE_VMSA: return "VMSA";
        case CVM_SNP_PAGE_ZERO: return "ZERO";
        case CVM_SNP_PAGE_UNMEASURED: return "UNMEASURED";
        case CVM_SNP_PAGE_SECRETS: return "SECRETS";
        case CVM_SNP_PAGE_CPUID: return "CPUID";
        }
        return NULL;
}

static int evp_hash(const EVP_MD *md, const void *data, size_t len, uint8_t *out, cvm_error *err) {
        if (!EVP_Digest(data, len, out, NULL, md, NULL))
                return cvm_error_set(err, -EIO, "%s digest failed", EVP_MD_get0_name(md));
        return 0;
}

void cvm_snp_digest_init(cvm_snp_digest *d) {
        memset(d->value, 0, sizeof(d->value));
}

int cvm_snp_digest_update_page(cvm_snp_digest *d, uint64_t gpa, cvm_snp_page_type type,
                               const uint8_t *page, cvm_error *err) {
        const char *name = page_type_name(type);
        if (!name)
                return cvm_error_set(err, -EINVAL, "unknown SNP page type %d", (int)type);
        if (gpa % CVM_SNP_PAGE_SIZE != 0)
                return cvm_error_set(err, -EINVAL, "%s page gpa 0x%llx is not page aligned", name,
                                     (unsigned long long)gpa);
        bool measured = type == CVM_SNP_PAGE_NORMAL || type == CVM_SNP_PAGE_VMSA;
        if (measured != (page != NULL))
                return cvm_error_set(err, -EINVAL,
                                     measured ? "a %s page needs its contents"
                                              : "a %s page takes no contents",
                                     name);
        /* PAGE_INFO (SNP firmware ABI): DIGEST_CUR, CONTENTS, LENGTH,
         * PAGE_TYPE, IMI_PAGE, VMPL3/2/1_PERMS, reserved, GPA. */
        uint8_t info[PAGE_INFO_SIZE] = {0};
        memcpy(info, d->value, CVM_SNP_DIGEST_SIZE);
        if (measured) {
                int r = evp_hash(EVP_sha384(), page, CVM_SNP_PAGE_SIZE, info + 48, err);
                if (r < 0)
                        return r;
        }
        cvm_put_le16(info + 0x60, PAGE_INFO_SIZE);
        info[0x62] = (uint8_t)type;
        cvm_put_le64(info + 0x68, gpa);
        return evp_hash(EVP_sha384(), info, sizeof(info), d->value, err);
}

const char *cvm_snp_digest_to_hex(const uint8_t digest[CVM_SNP_DIGEST_SIZE], char *buf) {
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < CVM_SNP_DIGEST_SIZE; i++) {
                buf[2 * i] = hex[digest[i] >> 4];
                buf[2 * i + 1] = hex[digest[i] & 0xf];
        }
        buf[2 * CVM_SNP_DIGEST_SIZE] = '\0';
        return buf;
}

typedef struct launch {
        cvm_snp_digest digest;
        cvm_snp_launch_pages pages;
} launch;

static void add_region(launch *l, uint64_t gpa, uint64_t npages, cvm_snp_page_type type,
                       uint64_t *count) {
        l->pages.regions[l->pages.nregions++] = (cvm_snp_region){gpa, npages, type};
        *count += npages;
}

/* A run of pages of one type; data (npages pages) only for NORMAL. */
static int launch_pages(launch *l, uint64_t gpa, uint64_t npages, cvm_snp_page_type type,
                        const uint8_t *data, cvm_error *err) {
        for (uint64_t i = 0; i < npages; i++) {
                int r = cvm_snp_digest_update_page(&l->digest, gpa + i * CVM_SNP_PAGE_SIZE, type,
                                                   data ? data + i * CVM_SNP_PAGE_SIZE : NULL, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int put_ht_entry(uint8_t *entry, const uint8_t guid[HT_GUID_SIZE], const void *data,
                        size_t len, cvm_error *err) {
        memcpy(entry, guid, HT_GUID_SIZE);
        cvm_put_le16(entry + HT_GUID_SIZE, HT_ENTRY_SIZE);
        return evp_hash(EVP_sha256(), data, len, entry + HT_GUID_SIZE + 2, err);
}

/* QEMU's hash table: SHA-256 of the command line (with its NUL), the
 * initrd and the kernel, each under its GUID, after a header GUID and the
 * unpadded length. */
_Static_assert(HT_PADDED_SIZE == CVM_SNP_HASH_TABLE_SIZE, "QEMU's padded hash table size");

int cvm_snp_hash_table_build(const uint8_t *kernel, size_t kernel_len, const uint8_t *initrd,
                             size_t initrd_len, const char *cmdline,
                             uint8_t table[CVM_SNP_HASH_TABLE_SIZE], cvm_error *err) {
        if (!cmdline)
                cmdline = "";
        if (!initrd) {
                initrd = (const uint8_t *)"";
                initrd_len = 0;
        }
        memset(table, 0, HT_PADDED_SIZE);
        memcpy(table, guid_ht_header, HT_GUID_SIZE);
        cvm_put_le16(table + HT_GUID_SIZE, HT_SIZE);
        uint8_t *entries = table + HT_GUID_SIZE + 2;
        int r = put_ht_entry(entries, guid_ht_cmdline, cmdline, strlen(cmdline) + 1, err);
        if (r == 0)
                r = put_ht_entry(entries + HT_ENTRY_SIZE, guid_ht_initrd, initrd, initrd_len, err);
        if (r == 0)
                r = put_ht_entry(entries + 2 * HT_ENTRY_SIZE, guid_ht_kernel, kernel, kernel_len,
                                 err);
        return r;
}

/* The kernel-hashes section: zero but for the hash table, which sits at
 * the offset within its page of the GPA the firmware's hash-table entry
 * gives (QEMU's snp_launch_update_kernel_hashes). */
static int launch_kernel_hashes(launch *l, const cvm_snp_firmware *fw, const cvm_snp_section *s,
                                const cvm_snp_launch_input *in, cvm_error *err) {
        if (!fw->has_hash_table)
                return cvm_error_set(err, -EINVAL,
                                     "a kernel was given but the firmware GUID table has no SEV "
                                     "hash table entry");
        if (fw->hash_table_gpa == 0 || fw->hash_table_size < HT_PADDED_SIZE)
                return cvm_error_set(err, -EINVAL,
                                     "firmware SEV hash table area (gpa 0x%x, size 0x%x) cannot "
                                     "hold the %d-byte hash table",
                                     fw->hash_table_gpa, fw->hash_table_size, HT_PADDED_SIZE);
        size_t offset = fw->hash_table_gpa % CVM_SNP_PAGE_SIZE;
        if (offset + HT_PADDED_SIZE > s->size)
                return cvm_error_set(err, -EINVAL,
                                     "kernel hash table at offset 0x%zx does not fit the "
                                     "SNP_KERNEL_HASHES section (gpa 0x%x, size 0x%x)",
                                     offset, s->gpa, s->size);
        uint8_t table[HT_PADDED_SIZE];
        int r = cvm_snp_hash_table_build(in->kernel, in->kernel_len, in->initrd, in->initrd_len,
                                         in->cmdline, table, err);
        if (r < 0)
                return r;
        /* The table starts in the first page and may run into the second. */
        static const uint8_t zero[CVM_SNP_PAGE_SIZE];
        uint8_t head[2 * CVM_SNP_PAGE_SIZE] = {0};
        memcpy(head + offset, table, sizeof(table));
        for (uint32_t off = 0; off < s->size; off += CVM_SNP_PAGE_SIZE) {
                r = cvm_snp_digest_update_page(&l->digest, s->gpa + off, CVM_SNP_PAGE_NORMAL,
                                               off < sizeof(head) ? head + off : zero, err);
                if (r < 0)
                        return r;
        }
        add_region(l, s->gpa, s->size / CVM_SNP_PAGE_SIZE, CVM_SNP_PAGE_NORMAL,
                   &l->pages.kernel_hashes);
        return 0;
}

static int launch_section(launch *l, const cvm_snp_firmware *fw, const cvm_snp_section *s,
                          const cvm_snp_launch_input *in, cvm_error *err) {
        cvm_snp_page_type type;
        uint64_t *count;
        switch (s->kind) {
        case CVM_SNP_SECTION_SNP_SECRETS:
                type = CVM_SNP_PAGE_SECRETS;
                count = &l->pages.secrets;
                break;
        case CVM_SNP_SECTION_CPUID:
                type = CVM_SNP_PAGE_CPUID;
                count = &l->pages.cpuid;
                break;
        case CVM_SNP_SECTION_SNP_KERNEL_HASHES:
                if (in->kernel)
                        return launch_kernel_hashes(l, fw, s, in, err);
                /* Without a kernel QEMU launches the section as zero pages. */
                type = CVM_SNP_PAGE_ZERO;
                count = &l->pages.zero;
                break;
        default: /* SNP_SEC_MEM and SVSM_CAA: zero pages. */
                type = CVM_SNP_PAGE_ZERO;
                count = &l->pages.zero;
                break;
        }
        uint64_t npages = s->size / CVM_SNP_PAGE_SIZE;
        int r = launch_pages(l, s->gpa, npages, type, NULL, err);
        if (r < 0)
                return r;
        add_region(l, s->gpa, npages, type, count);
        return 0;
}

static int check_input(const cvm_snp_launch_input *in, uint32_t *ret_signature, cvm_error *err) {
        if (in->vcpus < 1 || in->vcpus > CVM_SNP_MAX_VCPUS)
                return cvm_error_set(err, -EINVAL, "vcpus is %u, not in 1..%u", in->vcpus,
                                     CVM_SNP_MAX_VCPUS);
        if (!(in->guest_features & CVM_SNP_GUEST_FEATURES_DEFAULT))
                return cvm_error_set(err, -EINVAL, "guest_features 0x%llx lacks SNPActive (bit 0)",
                                     (unsigned long long)in->guest_features);
        if (!in->kernel && (in->initrd || in->cmdline))
                return cvm_error_set(err, -EINVAL, "an initrd or command line needs a kernel");
        return cvm_snp_vcpu_signature(in->vcpu_type, ret_signature, err);
}

int cvm_snp_measure(const cvm_snp_launch_input *in, uint8_t digest[CVM_SNP_DIGEST_SIZE],
                    cvm_snp_launch_pages *ret_pages, cvm_error *err) {
        uint32_t signature;
        int r = check_input(in, &signature, err);
        if (r < 0)
                return r;
        cvm_snp_firmware fw;
        r = cvm_snp_firmware_parse(in->firmware, in->firmware_len, &fw, err);
        if (r < 0)
                return r;
        if (in->vcpus > 1 && !fw.has_reset_eip)
                return cvm_error_set(err, -EINVAL,
                                     "%u vCPUs need the firmware's SEV-ES reset block to start "
                                     "the APs, and its GUID table has none",
                                     in->vcpus);

        launch l = {0};
        cvm_snp_digest_init(&l.digest);
        uint64_t npages = fw.size / CVM_SNP_PAGE_SIZE;
        r = launch_pages(&l, fw.gpa, npages, CVM_SNP_PAGE_NORMAL, in->firmware, err);
        if (r < 0)
                return r;
        add_region(&l, fw.gpa, npages, CVM_SNP_PAGE_NORMAL, &l.pages.normal);

        bool has_kernel_hashes = false;
        for (size_t i = 0; i < fw.nsections; i++) {
                has_kernel_hashes |= fw.sections[i].kind == CVM_SNP_SECTION_SNP_KERNEL_HASHES;
                r = launch_section(&l, &fw, &fw.sections[i], in, err);
                if (r < 0)
                        return r;
        }
        if (in->kernel && !has_kernel_hashes)
                return cvm_error_set(err, -EINVAL,
                                     "a kernel was given but the firmware's SEV metadata has no "
                                     "SNP_KERNEL_HASHES section to measure it");

        /* The BSP starts at the reset vector, the APs where the reset block says. */
        uint8_t bsp[CVM_SNP_PAGE_SIZE], ap[CVM_SNP_PAGE_SIZE];
        cvm_snp_vmsa_build(bsp, CVM_SNP_BSP_RESET_EIP, signature, in->guest_features);
        cvm_snp_vmsa_build(ap, fw.reset_eip, signature, in->guest_features);
        for (unsigned i = 0; i < in->vcpus; i++) {
                r = cvm_snp_digest_update_page(&l.digest, CVM_SNP_VMSA_GPA, CVM_SNP_PAGE_VMSA,
                                               i == 0 ? bsp : ap, err);
                if (r < 0)
                        return r;
        }
        add_region(&l, CVM_SNP_VMSA_GPA, in->vcpus, CVM_SNP_PAGE_VMSA, &l.pages.vmsa);

        memcpy(digest, l.digest.value, CVM_SNP_DIGEST_SIZE);
        if (ret_pages)
                *ret_pages = l.pages;
        return 0;
}
