/* The ATTESTATION_REPORT codec: every field at the offset the SNP firmware
 * ABI gives (the offsets here are written out from the ABI's table, not
 * taken from the code), round trips, the parser's refusals, and the ECDSA
 * P-384 signature over bytes 0x000-0x29F. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "guest_policy.h"
#include "snp_report.h"

CVM_DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)

static void fill(uint8_t *p, size_t n, uint8_t seed) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t)(seed + i);
}

static uint64_t le64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

static uint32_t le32(const uint8_t *p) {
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A report with a distinct value in every field. */
static void sample(cvm_snp_report *r, uint32_t version) {
        memset(r, 0, sizeof(*r));
        r->version = version;
        r->guest_svn = 0x11223344;
        r->policy = UINT64_C(0x30000) | 0x0133; /* ABI 1.51, SMT, reserved bit. */
        fill(r->family_id, sizeof(r->family_id), 0x10);
        fill(r->image_id, sizeof(r->image_id), 0x20);
        r->vmpl = 2;
        r->signature_algo = 1;
        r->current_tcb = UINT64_C(0x7301000000000203);
        r->platform_info = 0x3;
        r->flags = CVM_SNP_FLAG_AUTHOR_KEY_EN | CVM_SNP_FLAG_MASK_CHIP_KEY;
        fill(r->report_data, sizeof(r->report_data), 0x50);
        fill(r->measurement, sizeof(r->measurement), 0x90);
        fill(r->host_data, sizeof(r->host_data), 0xC0);
        fill(r->id_key_digest, sizeof(r->id_key_digest), 0xE0);
        fill(r->author_key_digest, sizeof(r->author_key_digest), 0x11);
        fill(r->report_id, sizeof(r->report_id), 0x40);
        fill(r->report_id_ma, sizeof(r->report_id_ma), 0x60);
        r->reported_tcb = UINT64_C(0x7308000000000003);
        if (version >= 3) {
                r->cpuid_fam_id = 0x19;
                r->cpuid_mod_id = 0x01;
                r->cpuid_step = 0x01;
        }
        fill(r->chip_id, sizeof(r->chip_id), 0xA0);
        r->committed_tcb = UINT64_C(0x7307000000000002);
        r->current_build = 21;
        r->current_minor = 55;
        r->current_major = 1;
        r->committed_build = 20;
        r->committed_minor = 54;
        r->committed_major = 1;
        r->launch_tcb = UINT64_C(0x7306000000000001);
        fill(r->signature_r, 48, 0x33);
        fill(r->signature_s, 48, 0x77);
}

static void test_layout(void **state) {
        (void)state;
        cvm_snp_report r;
        sample(&r, 3);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
        assert_int_equal(le32(b + 0x000), 3);
        assert_int_equal(le32(b + 0x004), 0x11223344);
        assert_true(le64(b + 0x008) == r.policy);
        assert_memory_equal(b + 0x010, r.family_id, 16);
        assert_memory_equal(b + 0x020, r.image_id, 16);
        assert_int_equal(le32(b + 0x030), 2);
        assert_int_equal(le32(b + 0x034), 1);
        assert_true(le64(b + 0x038) == r.current_tcb);
        assert_true(le64(b + 0x040) == 3);
        assert_int_equal(le32(b + 0x048), 3);
        assert_int_equal(le32(b + 0x04C), 0);
        assert_memory_equal(b + 0x050, r.report_data, 64);
        assert_memory_equal(b + 0x090, r.measurement, 48);
        assert_memory_equal(b + 0x0C0, r.host_data, 32);
        assert_memory_equal(b + 0x0E0, r.id_key_digest, 48);
        assert_memory_equal(b + 0x110, r.author_key_digest, 48);
        assert_memory_equal(b + 0x140, r.report_id, 32);
        assert_memory_equal(b + 0x160, r.report_id_ma, 32);
        assert_true(le64(b + 0x180) == r.reported_tcb);
        assert_int_equal(b[0x188], 0x19);
        assert_int_equal(b[0x189], 0x01);
        assert_int_equal(b[0x18A], 0x01);
        assert_memory_equal(b + 0x1A0, r.chip_id, 64);
        assert_true(le64(b + 0x1E0) == r.committed_tcb);
        assert_int_equal(b[0x1E8], 21);
        assert_int_equal(b[0x1E9], 55);
        assert_int_equal(b[0x1EA], 1);
        assert_int_equal(b[0x1EB], 0);
        assert_int_equal(b[0x1EC], 20);
        assert_int_equal(b[0x1ED], 54);
        assert_int_equal(b[0x1EE], 1);
        assert_int_equal(b[0x1EF], 0);
        assert_true(le64(b + 0x1F0) == r.launch_tcb);
        assert_memory_equal(b + 0x2A0, r.signature_r, 72);
        assert_memory_equal(b + 0x2E8, r.signature_s, 72);
        for (size_t i = 0x18B; i < 0x1A0; i++)
                assert_int_equal(b[i], 0);
        for (size_t i = 0x1F8; i < 0x2A0; i++)
                assert_int_equal(b[i], 0);
        for (size_t i = 0x330; i < 0x4A0; i++)
                assert_int_equal(b[i], 0);
        assert_int_equal(CVM_SNP_REPORT_SIZE, 0x4A0);
}

static void test_tcb(void **state) {
        (void)state;
        /* Milan/Genoa TCB_VERSION: bl byte 0, tee byte 1, snp byte 6, ucode byte 7. */
        cvm_snp_tcb t = cvm_snp_tcb_decode(UINT64_C(0xd115000000000403));
        assert_int_equal(t.bootloader, 3);
        assert_int_equal(t.tee, 4);
        assert_int_equal(t.snp, 0x15);
        assert_int_equal(t.microcode, 0xd1);
        assert_true(cvm_snp_tcb_encode(&t) == UINT64_C(0xd115000000000403));
        cvm_snp_tcb lower = t, higher = t;
        lower.snp--;
        higher.microcode++;
        assert_true(cvm_snp_tcb_at_least(&t, &lower));
        assert_false(cvm_snp_tcb_at_least(&t, &higher));
        assert_true(cvm_snp_tcb_at_least(&t, &t));
        char buf[64];
        assert_string_equal(cvm_snp_tcb_format(&t, buf, sizeof(buf)),
                            "bl=3 tee=4 snp=21 ucode=209");
}

static void test_round_trip(void **state) {
        (void)state;
        for (uint32_t v = 2; v <= 3; v++) {
                cvm_snp_report r, back;
                sample(&r, v);
                uint8_t b[CVM_SNP_REPORT_SIZE], b2[CVM_SNP_REPORT_SIZE];
                assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
                cvm_error err = {0};
                assert_int_equal(cvm_snp_report_parse(b, sizeof(b), &back, &err), 0);
                assert_memory_equal(&r, &back, sizeof(r));
                assert_int_equal(cvm_snp_report_encode(&back, b2, NULL), 0);
                assert_memory_equal(b, b2, sizeof(b));
        }
}

static void expect_parse_error(const uint8_t *b, size_t len, const char *needle) {
        cvm_snp_report r;
        cvm_error err = {0};
        assert_int_equal(cvm_snp_report_parse(b, len, &r, &err), -EINVAL);
        if (!strstr(err.message, needle))
                fail_msg("message '%s' lacks '%s'", err.message, needle);
}

static void test_parse_rejects(void **state) {
        (void)state;
        cvm_snp_report r;
        sample(&r, 2);
        uint8_t good[CVM_SNP_REPORT_SIZE + 1], b[CVM_SNP_REPORT_SIZE + 1];
        assert_int_equal(cvm_snp_report_encode(&r, good, NULL), 0);
        good[CVM_SNP_REPORT_SIZE] = 0;

        expect_parse_error(good, CVM_SNP_REPORT_SIZE - 1, "1183 bytes");
        expect_parse_error(good, CVM_SNP_REPORT_SIZE + 1, "1185 bytes");
        expect_parse_error(good, 0, "0 bytes");
        expect_parse_error(NULL, CVM_SNP_REPORT_SIZE, "0 bytes");

        static const uint32_t versions[] = {0, 1, 4, 5, 0x02000000};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(versions); i++) {
                memcpy(b, good, sizeof(good));
                b[0] = (uint8_t)versions[i];
                b[3] = (uint8_t)(versions[i] >> 24);
                expect_parse_error(b, CVM_SNP_REPORT_SIZE, "version");
        }

        /* Must-be-zero bytes of a version 2 report, first and last of each range. */
        static const size_t mbz[] = {0x04C, 0x04F, 0x188, 0x18A, 0x19F, 0x1EB,
                                     0x1EF, 0x1F8, 0x29F, 0x330, 0x49F};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(mbz); i++) {
                memcpy(b, good, sizeof(good));
                b[mbz[i]] = 0x80;
                char needle[32];
                snprintf(needle, sizeof(needle), "byte 0x%03zx", mbz[i]);
                expect_parse_error(b, CVM_SNP_REPORT_SIZE, needle);
        }

        memcpy(b, good, sizeof(good));
        b[0x048] |= 0x20; /* Flags bit 5. */
        expect_parse_error(b, CVM_SNP_REPORT_SIZE, "reserved bits 31:5");
}

static void test_parse_liberal(void **state) {
        (void)state;
        cvm_snp_report r, back;
        /* Version 3 fills the CPUID bytes version 2 reserves. */
        sample(&r, 3);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
        assert_int_equal(cvm_snp_report_parse(b, sizeof(b), &back, NULL), 0);
        assert_int_equal(back.cpuid_fam_id, 0x19);
        b[0x18B] = 1;
        expect_parse_error(b, sizeof(b), "byte 0x18b");

        /* Newer firmware sets more PLATFORM_INFO bits and newer policy bits;
         * the verifier, not the parser, judges the policy. */
        sample(&r, 2);
        r.platform_info = UINT64_C(0x3f);
        r.policy = UINT64_C(0x3ff0000) | (UINT64_C(1) << 40);
        assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
        assert_int_equal(cvm_snp_report_parse(b, sizeof(b), &back, NULL), 0);
        assert_true(back.policy == r.policy);

        /* The signature area's tail is only known for ECDSA. */
        r.signature_algo = 2;
        assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
        b[0x400] = 1;
        assert_int_equal(cvm_snp_report_parse(b, sizeof(b), &back, NULL), 0);
}

static void test_encode_rejects(void **state) {
        (void)state;
        cvm_snp_report r;
        uint8_t b[CVM_SNP_REPORT_SIZE];
        cvm_error err = {0};
        sample(&r, 2);
        r.version = 4;
        assert_int_equal(cvm_snp_report_encode(&r, b, &err), -EINVAL);
        sample(&r, 2);
        r.cpuid_fam_id = 0x19;
        assert_int_equal(cvm_snp_report_encode(&r, b, &err), -EINVAL);
        assert_non_null(strstr(err.message, "CPUID"));
        sample(&r, 2);
        r.flags = 1u << 7;
        assert_int_equal(cvm_snp_report_encode(&r, b, &err), -EINVAL);
}

static void test_sign_verify(void **state) {
        (void)state;
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-384");
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *other = EVP_EC_gen("P-384");
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *p256 = EVP_EC_gen("P-256");
        assert_non_null(key);
        assert_non_null(other);
        assert_non_null(p256);
        cvm_snp_report r, back;
        sample(&r, 2);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        cvm_error err = {0};
        assert_int_equal(cvm_snp_report_encode(&r, b, NULL), 0);
        assert_int_equal(cvm_snp_report_sign(b, key, &err), 0);
        assert_int_equal(cvm_snp_report_verify(b, key, &err), 0);
        /* Signing fills R and S little-endian, zero-extended, and nothing else. */
        assert_int_equal(cvm_snp_report_parse(b, sizeof(b), &back, &err), 0);
        for (size_t i = 48; i < 72; i++) {
                assert_int_equal(back.signature_r[i], 0);
                assert_int_equal(back.signature_s[i], 0);
        }
        assert_memory_equal(back.measurement, r.measurement, sizeof(r.measurement));

        assert_int_equal(cvm_snp_report_verify(b, other, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "does not verify"));
        assert_int_equal(cvm_snp_report_verify(b, p256, &err), -EINVAL);
        assert_non_null(strstr(err.message, "P-384"));
        assert_int_equal(cvm_snp_report_sign(b, p256, &err), -EINVAL);
        assert_int_equal(cvm_snp_report_verify(b, NULL, &err), -EINVAL);

        /* Any signed byte changed breaks the signature; the tail does not
         * take part. */
        static const size_t offsets[] = {0x000, 0x008, 0x050, 0x090, 0x180, 0x1A0, 0x29F};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(offsets); i++) {
                uint8_t t[CVM_SNP_REPORT_SIZE];
                memcpy(t, b, sizeof(t));
                t[offsets[i]] ^= 0x01;
                assert_int_equal(cvm_snp_report_verify(t, key, &err), -EBADMSG);
        }
        uint8_t t[CVM_SNP_REPORT_SIZE];
        memcpy(t, b, sizeof(t));
        t[0x2A0 + 50] = 1; /* R beyond 48 bytes. */
        assert_int_equal(cvm_snp_report_verify(t, key, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "exceeds 48 bytes"));
        memcpy(t, b, sizeof(t));
        t[0x2E8] ^= 0x01; /* S. */
        assert_int_equal(cvm_snp_report_verify(t, key, &err), -EBADMSG);
        memcpy(t, b, sizeof(t));
        t[0x034] = 2;
        assert_int_equal(cvm_snp_report_verify(t, key, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "algorithm 2"));
        memset(t + 0x2A0, 0, 144); /* R = S = 0. */
        t[0x034] = 1;
        assert_int_equal(cvm_snp_report_verify(t, key, &err), -EBADMSG);
}

static void test_hex(void **state) {
        (void)state;
        uint8_t in[3] = {0x00, 0xab, 0xFF}, out[3];
        char buf[7];
        assert_string_equal(cvm_snp_hex(in, 3, buf), "00abff");
        assert_int_equal(cvm_snp_unhex("00ABff", out, 3), 0);
        assert_memory_equal(in, out, 3);
        assert_int_equal(cvm_snp_unhex("00abf", out, 3), -EINVAL);
        assert_int_equal(cvm_snp_unhex("00abfg", out, 3), -EINVAL);
        assert_int_equal(cvm_snp_unhex("00abff00", out, 3), -EINVAL);
        assert_int_equal(cvm_snp_unhex(NULL, out, 3), -EINVAL);
}

static void test_guest_policy(void **state) {
        (void)state;
        cvm_error err = {0};
        assert_int_equal(cvm_guest_policy_check(UINT64_C(0x30000), false, &err), 0);
        assert_int_equal(cvm_guest_policy_check(UINT64_C(0x10000), false, &err), -EINVAL);
        assert_non_null(strstr(err.message, "bit 17"));
        assert_int_equal(cvm_guest_policy_check(UINT64_C(0x80000) | UINT64_C(0x20000), false, &err),
                         -EPERM);
        assert_non_null(strstr(err.message, "DEBUG"));
        assert_int_equal(cvm_guest_policy_check(UINT64_C(0xA0000), true, &err), 0);
        assert_int_equal(
                cvm_guest_policy_check((UINT64_C(1) << 26) | UINT64_C(0x20000), true, &err),
                -EINVAL);
        assert_non_null(strstr(err.message, "63:26"));
        /* Bits 25:21 are newer ABI options, not reserved. */
        assert_int_equal(cvm_guest_policy_check(UINT64_C(0x3e20000), false, &err), 0);
        char buf[96];
        assert_string_equal(cvm_guest_policy_describe(UINT64_C(0x1f0133), buf, sizeof(buf)),
                            "abi>=1.51 smt migrate-ma debug single-socket");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_layout),        cmocka_unit_test(test_tcb),
                cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_parse_rejects),
                cmocka_unit_test(test_parse_liberal), cmocka_unit_test(test_encode_rejects),
                cmocka_unit_test(test_sign_verify),   cmocka_unit_test(test_hex),
                cmocka_unit_test(test_guest_policy),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
