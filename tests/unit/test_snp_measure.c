/* The SNP launch digest: known answers derived by tests/tools/snp_measure_ref.py
 * (an independent implementation; `snp_measure_ref.py --known-answers` prints
 * them), launch page accounting, and malformed firmware images. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cleanup.h"
#include "snp_measure.h"

#define OVMF_PATH "/usr/share/ovmf/OVMF.fd"

/* The synthetic firmware of snp_measure_ref.py: 16 pages of a pattern with a
 * GUID table (metadata, hash table, reset block entries) and an ASEV header. */
#define SYN_SIZE 0x10000u
#define SYN_RESET_EIP 0x00811004u
#define SYN_HASH_TABLE_GPA 0x00810c00u
#define SYN_METADATA_OFFSET 0x2000u
#define SYN_TABLE_START (SYN_SIZE - 50 - 70) /* Three entries: 22 + 26 + 22 bytes. */

static const uint32_t syn_sections[][3] = {
        {0x00800000, 0x9000, CVM_SNP_SECTION_SNP_SEC_MEM},
        {0x00809000, 0x1000, CVM_SNP_SECTION_SNP_SECRETS},
        {0x0080a000, 0x1000, CVM_SNP_SECTION_CPUID},
        {0x0080b000, 0x1000, CVM_SNP_SECTION_SVSM_CAA},
        {0x00810000, 0x1000, CVM_SNP_SECTION_SNP_KERNEL_HASHES},
        {0x00811000, 0x3000, CVM_SNP_SECTION_SNP_SEC_MEM},
};

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t *pattern(size_t len, unsigned seed) {
        uint8_t *p = malloc(len);
        assert_non_null(p);
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)(i * 131 + (i >> 12) + seed);
        return p;
}

static uint8_t *put_entry(uint8_t *p, const uint8_t guid[16], const uint32_t *data, size_t n) {
        for (size_t i = 0; i < n; i++, p += 4)
                put32(p, data[i]);
        put16(p, (uint16_t)(4 * n + 18));
        memcpy(p + 2, guid, 16);
        return p + 18;
}

static uint8_t *synthetic_firmware(void) {
        uint8_t *image = pattern(SYN_SIZE, 0);
        uint8_t *meta = image + SYN_SIZE - SYN_METADATA_OFFSET;
        size_t n = CVM_ARRAY_SIZE(syn_sections);
        memcpy(meta, "ASEV", 4);
        put32(meta + 4, (uint32_t)(16 + 12 * n));
        put32(meta + 8, 1);
        put32(meta + 12, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < 3; j++)
                        put32(meta + 16 + 12 * i + 4 * j, syn_sections[i][j]);
        uint8_t *p = image + SYN_TABLE_START;
        p = put_entry(p, cvm_snp_guid_sev_metadata, (uint32_t[]){SYN_METADATA_OFFSET}, 1);
        p = put_entry(p, cvm_snp_guid_hash_table, (uint32_t[]){SYN_HASH_TABLE_GPA, 0x400}, 2);
        p = put_entry(p, cvm_snp_guid_reset_block, (uint32_t[]){SYN_RESET_EIP}, 1);
        put16(p, 70 + 18);
        memcpy(p + 2, cvm_snp_guid_table_footer, 16);
        assert_ptr_equal(p + 18, image + SYN_SIZE - 32);
        return image;
}

static void assert_digest(const cvm_snp_launch_input *in, const char *want,
                          cvm_snp_launch_pages *pages) {
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        char hex[CVM_SNP_DIGEST_HEX_SIZE];
        cvm_error err = {0};
        int r = cvm_snp_measure(in, digest, pages, &err);
        if (r < 0)
                fail_msg("cvm_snp_measure: %s", err.message);
        assert_string_equal(cvm_snp_digest_to_hex(digest, hex), want);
}

static void test_synthetic_known_answers(void **state) {
        (void)state;
        _cleanup_free_ uint8_t *fw = synthetic_firmware();
        _cleanup_free_ uint8_t *kernel = pattern(10000, 1);
        _cleanup_free_ uint8_t *initrd = pattern(3000, 2);
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = SYN_SIZE,
                                   .vcpus = 1,
                                   .vcpu_type = "EPYC-v4",
                                   .guest_features = 0x1};
        assert_digest(&in,
                      "6ee2a48680b37ba0ffec6ba7e349dd75c0323a80e1c5c000"
                      "02e0ed754ad10090434937694381ce203e43b72a42890c85",
                      NULL);
        in.vcpus = 4;
        assert_digest(&in,
                      "542253e9d9ce6b22ed1539c1106e88760a0f771baab22fbf"
                      "35228608995bb5e8865df2f7c7ccb3f84979c6515b4c1ef9",
                      NULL);
        in.vcpus = 1;
        in.vcpu_type = "EPYC-Milan";
        in.kernel = kernel;
        in.kernel_len = 10000;
        in.initrd = initrd;
        in.initrd_len = 3000;
        in.cmdline = "console=ttyS0 root=/dev/vda";
        assert_digest(&in,
                      "89b58279ef42432653ae0ccb9e6a0949daff57aba81f3250"
                      "362d138791630067f9cde23a191722b3ecdc4e844517fac9",
                      NULL);
        in.vcpus = 4;
        in.vcpu_type = "EPYC-Genoa";
        in.initrd = NULL;
        in.initrd_len = 0;
        in.cmdline = NULL;
        assert_digest(&in,
                      "13277f9abf0d0da0ca690c2724566ea2d005bcf2634ed1da"
                      "450f5d696e0f9536ece642a011c83915994c402e11e089ba",
                      NULL);
        in = (cvm_snp_launch_input){.firmware = fw,
                                    .firmware_len = SYN_SIZE,
                                    .vcpus = 2,
                                    .vcpu_type = "EPYC",
                                    .guest_features = 0x21};
        assert_digest(&in,
                      "39a1e5021a80457a367ea23d3f6c23bef1808267f6bd7108"
                      "aedf93c02250a0ed7714680433159cd4f35df3cc0ad083e7",
                      NULL);
}

static void test_launch_pages(void **state) {
        (void)state;
        _cleanup_free_ uint8_t *fw = synthetic_firmware();
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = SYN_SIZE,
                                   .kernel = (const uint8_t *)"",
                                   .vcpus = 3,
                                   .vcpu_type = "EPYC-v4",
                                   .guest_features = 0x1};
        cvm_snp_launch_pages p;
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        assert_int_equal(cvm_snp_measure(&in, digest, &p, NULL), 0);
        assert_int_equal(p.normal, 16);
        assert_int_equal(p.kernel_hashes, 1);
        assert_int_equal(p.zero, 9 + 1 + 3);
        assert_int_equal(p.secrets, 1);
        assert_int_equal(p.cpuid, 1);
        assert_int_equal(p.vmsa, 3);
        assert_int_equal(p.unmeasured, 0);
        assert_int_equal(p.nregions, 8);
        assert_int_equal(p.regions[0].gpa, 0xffff0000);
        assert_int_equal(p.regions[0].npages, 16);
        assert_int_equal(p.regions[0].type, CVM_SNP_PAGE_NORMAL);
        assert_int_equal(p.regions[2].gpa, 0x00809000);
        assert_int_equal(p.regions[2].type, CVM_SNP_PAGE_SECRETS);
        assert_int_equal(p.regions[5].gpa, 0x00810000);
        assert_int_equal(p.regions[5].type, CVM_SNP_PAGE_NORMAL);
        assert_int_equal(p.regions[7].gpa, CVM_SNP_VMSA_GPA);
        assert_int_equal(p.regions[7].npages, 3);
        assert_int_equal(p.regions[7].type, CVM_SNP_PAGE_VMSA);
        /* Without a kernel the kernel-hashes section is launched as zero pages. */
        in.kernel = NULL;
        assert_int_equal(cvm_snp_measure(&in, digest, &p, NULL), 0);
        assert_int_equal(p.kernel_hashes, 0);
        assert_int_equal(p.zero, 14);
        assert_int_equal(p.regions[5].type, CVM_SNP_PAGE_ZERO);
}

/* The incremental API over a plain image reproduces the whole-image digest. */
static void test_plain_firmware_and_incremental(void **state) {
        (void)state;
        size_t len = 4 * CVM_SNP_PAGE_SIZE;
        _cleanup_free_ uint8_t *fw = pattern(len, 3);
        const char *want = "206f71390b701353da38e668cffd0951283b296acc18b001"
                           "050d6de18c85bbe6506dfb5d3016bd5a93e732cefd06338d";
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = len,
                                   .vcpus = 1,
                                   .vcpu_type = "EPYC",
                                   .guest_features = 0x1};
        cvm_snp_launch_pages p;
        assert_digest(&in, want, &p);
        assert_int_equal(p.normal, 4);
        assert_int_equal(p.nregions, 2);

        cvm_snp_digest d;
        cvm_snp_digest_init(&d);
        for (size_t off = 0; off < len; off += CVM_SNP_PAGE_SIZE)
                assert_int_equal(cvm_snp_digest_update_page(&d, 0x100000000 - len + off,
                                                            CVM_SNP_PAGE_NORMAL, fw + off, NULL),
                                 0);
        uint32_t sig;
        assert_int_equal(cvm_snp_vcpu_signature("EPYC", &sig, NULL), 0);
        uint8_t vmsa[CVM_SNP_PAGE_SIZE];
        cvm_snp_vmsa_build(vmsa, CVM_SNP_BSP_RESET_EIP, sig, 0x1);
        assert_int_equal(
                cvm_snp_digest_update_page(&d, CVM_SNP_VMSA_GPA, CVM_SNP_PAGE_VMSA, vmsa, NULL), 0);
        char hex[CVM_SNP_DIGEST_HEX_SIZE];
        assert_string_equal(cvm_snp_digest_to_hex(d.value, hex), want);

        cvm_error err = {0};
        assert_int_equal(cvm_snp_digest_update_page(&d, 0x1001, CVM_SNP_PAGE_ZERO, NULL, &err),
                         -EINVAL);
        assert_non_null(strstr(err.message, "0x1001"));
        assert_int_equal(cvm_snp_digest_update_page(&d, 0, CVM_SNP_PAGE_NORMAL, NULL, &err),
                         -EINVAL);
        assert_non_null(strstr(err.message, "NORMAL page needs its contents"));
        assert_int_equal(cvm_snp_digest_update_page(&d, 0, CVM_SNP_PAGE_CPUID, vmsa, &err),
                         -EINVAL);
        assert_int_equal(cvm_snp_digest_update_page(&d, 0, (cvm_snp_page_type)7, NULL, &err),
                         -EINVAL);
        /* Failed updates leave the digest alone. */
        assert_string_equal(cvm_snp_digest_to_hex(d.value, hex), want);
}

static uint8_t *read_file(const char *path, size_t *ret_len) {
        _cleanup_fclose_ FILE *f = fopen(path, "rbe");
        if (!f)
                return NULL;
        uint8_t *buf = malloc(CVM_SNP_MAX_FIRMWARE_SIZE);
        assert_non_null(buf);
        *ret_len = fread(buf, 1, CVM_SNP_MAX_FIRMWARE_SIZE, f);
        return buf;
}

static void test_debian_ovmf(void **state) {
        (void)state;
        size_t len = 0;
        _cleanup_free_ uint8_t *fw = read_file(OVMF_PATH, &len);
        if (!fw)
                skip();
        cvm_snp_firmware parsed;
        assert_int_equal(cvm_snp_firmware_parse(fw, len, &parsed, NULL), 0);
        assert_true(parsed.has_reset_eip);
        assert_int_equal(parsed.reset_eip, 0x0080b004);
        assert_int_equal(parsed.nsections, 5);
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = len,
                                   .vcpus = 1,
                                   .vcpu_type = "EPYC-v4",
                                   .guest_features = 0x1};
        cvm_snp_launch_pages p;
        assert_digest(&in,
                      "11570979c77a0adb515761a702527c8b9e11554e73055262"
                      "1d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3",
                      &p);
        assert_int_equal(p.normal, 512);
        assert_int_equal(p.zero, 29);
        in.vcpus = 4;
        in.vcpu_type = "EPYC-Milan";
        assert_digest(&in,
                      "e9c10ab98f8086bf4a4993dcdc1f768b1128bcb02301d179"
                      "1f1d3274329e790db2d12a301d66d99a462a13b5d87e2840",
                      NULL);
        /* Stock OVMF cannot measure a kernel. */
        in.kernel = (const uint8_t *)"";
        cvm_error err = {0};
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        assert_int_equal(cvm_snp_measure(&in, digest, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.message, "no SNP_KERNEL_HASHES section"));
}

static void test_vcpu_types(void **state) {
        (void)state;
        uint32_t sig;
        assert_int_equal(cvm_snp_vcpu_signature("EPYC-v4", &sig, NULL), 0);
        assert_int_equal(sig, 0x00800f12);
        assert_int_equal(cvm_snp_vcpu_signature("EPYC-Rome", &sig, NULL), 0);
        assert_int_equal(sig, 0x00830f10);
        assert_int_equal(cvm_snp_vcpu_signature("EPYC-Milan", &sig, NULL), 0);
        assert_int_equal(sig, 0x00a00f11);
        assert_int_equal(cvm_snp_vcpu_signature("EPYC-Genoa", &sig, NULL), 0);
        assert_int_equal(sig, 0x00a10f10);
        assert_int_equal(cvm_snp_vcpu_signature("EPYC-Turin", &sig, NULL), 0);
        assert_int_equal(sig, 0x00b00f00);
        cvm_error err = {0};
        assert_int_equal(cvm_snp_vcpu_signature("Skylake", &sig, &err), -EINVAL);
        assert_non_null(strstr(err.message, "unknown vCPU type \"Skylake\""));
        assert_non_null(strstr(err.message, "EPYC-Genoa"));
        assert_non_null(strstr(err.message, "EPYC-Turin-v1"));
        assert_int_equal(cvm_snp_vcpu_signature(NULL, &sig, &err), -EINVAL);
        assert_non_null(strstr(err.message, "unknown vCPU type null"));
}

/* Measures a copy of the synthetic image after mutate, expecting an error naming want. */
static void expect_failure(void (*mutate)(uint8_t *image, cvm_snp_launch_input *in),
                           const char *want) {
        _cleanup_free_ uint8_t *fw = synthetic_firmware();
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = SYN_SIZE,
                                   .vcpus = 2,
                                   .vcpu_type = "EPYC-v4",
                                   .guest_features = 0x1,
                                   .kernel = (const uint8_t *)"k",
                                   .kernel_len = 1};
        mutate(fw, &in);
        cvm_error err = {0};
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        assert_true(cvm_snp_measure(&in, digest, NULL, &err) < 0);
        if (!strstr(err.message, want))
                fail_msg("error \"%s\" does not mention \"%s\"", err.message, want);
}

static uint8_t *meta(uint8_t *image) {
        return image + SYN_SIZE - SYN_METADATA_OFFSET;
}

static void odd_size(uint8_t *image, cvm_snp_launch_input *in) {
        (void)image;
        in->firmware_len = SYN_SIZE - 1;
}
static void table_too_long(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put16(image + SYN_SIZE - 50, 0xffff);
}
static void table_truncated(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put16(image + SYN_SIZE - 50, 70 + 18 - 60); /* Leaves 10 bytes after the reset entry. */
}
static void entry_outside(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put16(image + SYN_SIZE - 50 - 18, 200); /* The reset block entry. */
}
static void duplicate_entry(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        memcpy(image + SYN_TABLE_START + 22 + 8 + 2, cvm_snp_guid_reset_block, 16);
}
static void metadata_outside(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(image + SYN_TABLE_START, 0x20000);
}
static void bad_signature(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        meta(image)[0] = 'X';
}
static void metadata_too_long(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 4, SYN_METADATA_OFFSET + 1);
}
static void too_many_sections(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 12, 7);
}
static void overlapping_sections(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 16 + 12 * 2, 0x00808000); /* CPUID into the first SEC_MEM. */
}
static void section_over_firmware(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 16 + 12 * 5, 0xffff0000);
}
static void section_unaligned(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 16 + 12 * 1, 0x00809010);
}
static void section_past_4g(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 16 + 12 * 1, 0xfffff000);
        put32(meta(image) + 16 + 12 * 1 + 4, 0x2000);
}
static void section_unknown_type(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(meta(image) + 16 + 12 * 3 + 8, 0x7);
}
static void hash_table_straddles(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        put32(image + SYN_TABLE_START + 22, 0x00810f80);
}
static void no_hash_table_entry(uint8_t *image, cvm_snp_launch_input *in) {
        (void)in;
        image[SYN_TABLE_START + 22 + 8 + 2] ^= 0xff;
}
static void no_reset_block(uint8_t *image, cvm_snp_launch_input *in) {
        image[SYN_SIZE - 50 - 16] ^= 0xff;
        in->kernel = NULL;
}
static void initrd_without_kernel(uint8_t *image, cvm_snp_launch_input *in) {
        (void)image;
        in->kernel = NULL;
        in->cmdline = "quiet";
}
static void no_vcpus(uint8_t *image, cvm_snp_launch_input *in) {
        (void)image;
        in->vcpus = 0;
}
static void no_snp_active(uint8_t *image, cvm_snp_launch_input *in) {
        (void)image;
        in->guest_features = 0x20;
}

static void test_malformed(void **state) {
        (void)state;
        expect_failure(odd_size, "65535 bytes, not a non-zero multiple of 4 KiB");
        expect_failure(table_too_long, "length 65535 runs past the image start");
        expect_failure(table_truncated, "10 bytes at offset");
        expect_failure(entry_outside, "has length 200, outside the table");
        expect_failure(duplicate_entry, "duplicate SEV-ES reset block entry");
        expect_failure(metadata_outside, "offset 0x20000 from the image end is outside");
        expect_failure(bad_signature, "no ASEV signature at image offset 0xe000");
        expect_failure(metadata_too_long, "length 0x2001 at image offset 0xe000 is outside");
        expect_failure(too_many_sections, "7 sections do not fit its length 0x58");
        expect_failure(overlapping_sections,
                       "section 2 (gpa 0x808000, size 0x1000) overlaps section 0");
        expect_failure(section_over_firmware, "section 5 (gpa 0xffff0000, size 0x3000) overlaps "
                                              "the firmware image");
        expect_failure(section_unaligned, "section 1 (gpa 0x809010, size 0x1000) is not");
        expect_failure(section_past_4g, "extends past 4 GiB");
        expect_failure(section_unknown_type, "section 3: unknown type 0x7");
        expect_failure(hash_table_straddles, "does not fit the SNP_KERNEL_HASHES section");
        expect_failure(no_hash_table_entry, "has no SEV hash table entry");
        expect_failure(no_reset_block, "2 vCPUs need the firmware's SEV-ES reset block");
        expect_failure(initrd_without_kernel, "needs a kernel");
        expect_failure(no_vcpus, "vcpus is 0");
        expect_failure(no_snp_active, "lacks SNPActive");
}

static void test_size_limits(void **state) {
        (void)state;
        size_t len = CVM_SNP_MAX_FIRMWARE_SIZE + CVM_SNP_PAGE_SIZE;
        _cleanup_free_ uint8_t *big = calloc(1, len);
        assert_non_null(big);
        cvm_snp_firmware fw;
        cvm_error err = {0};
        assert_int_equal(cvm_snp_firmware_parse(big, len, &fw, &err), -EFBIG);
        assert_non_null(strstr(err.message, "more than the limit"));
        assert_int_equal(cvm_snp_firmware_parse(big, 0, &fw, &err), -EINVAL);
        /* Exactly the limit, without a table: plain firmware. */
        assert_int_equal(cvm_snp_firmware_parse(big, CVM_SNP_MAX_FIRMWARE_SIZE, &fw, NULL), 0);
        assert_int_equal(fw.nsections, 0);
        assert_false(fw.has_reset_eip);
        assert_int_equal(fw.gpa, 0x100000000 - CVM_SNP_MAX_FIRMWARE_SIZE);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_synthetic_known_answers),
                cmocka_unit_test(test_launch_pages),
                cmocka_unit_test(test_plain_firmware_and_incremental),
                cmocka_unit_test(test_debian_ovmf),
                cmocka_unit_test(test_vcpu_types),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_size_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
