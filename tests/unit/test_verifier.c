/* The boot verifier's host-testable parts: its SHA-256 (which runs with no
 * library under it) against OpenSSL's, and the verifier-config entry of the
 * firmware GUID table that verifier-patch and `cvmctl measure` read. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "snp_firmware.h"
/* Compiled here, hosted: the verifier's own build is freestanding. */
#include "verifier/sha256.c"
#include "verifier/sha256_ni.c"

static void openssl_sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
        unsigned n = 32;
        assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1);
}

static void test_sha256_known_answers(void **state) {
        (void)state;
        /* FIPS 180-4 examples: "abc" and the 448-bit message. */
        static const struct {
                const char *msg;
                const char *hex;
        } kat[] = {
                {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
                {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
                {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        };
        for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
                vf_sha256 s;
                uint8_t out[32];
                char hex[65];
                vf_sha256_init(&s);
                vf_sha256_update(&s, kat[i].msg, strlen(kat[i].msg));
                vf_sha256_final(&s, out);
                for (int j = 0; j < 32; j++)
                        snprintf(hex + 2 * j, 3, "%02x", out[j]);
                assert_string_equal(hex, kat[i].hex);
        }
}

/* Every length around the block and padding boundaries, fed in uneven
 * pieces, against OpenSSL. */
static void sha256_against_openssl(void) {
        enum { MAX = 1100 };
        uint8_t *data = malloc(MAX);
        assert_non_null(data);
        for (size_t i = 0; i < MAX; i++)
                data[i] = (uint8_t)(i * 131 + 7);
        for (size_t len = 0; len < MAX; len++) {
                for (size_t piece = 1; piece <= 97; piece += 32) {
                        vf_sha256 s;
                        uint8_t got[32], want[32];
                        vf_sha256_init(&s);
                        for (size_t off = 0; off < len; off += piece)
                                vf_sha256_update(&s, data + off,
                                                 len - off < piece ? len - off : piece);
                        vf_sha256_final(&s, got);
                        openssl_sha256(data, len, want);
                        assert_memory_equal(got, want, 32);
                }
        }
        free(data);
}

static void test_sha256_against_openssl(void **state) {
        (void)state;
        vf_sha256_use_ni(false);
        sha256_against_openssl();
}

/* The SHA-NI path, where this machine's CPU has the SHA extensions. */
static void test_sha256_ni_against_openssl(void **state) {
        (void)state;
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("sha") || !__builtin_cpu_supports("sse4.1"))
                skip();
        vf_sha256_use_ni(true);
        sha256_against_openssl();
        vf_sha256_use_ni(false);
}

/* A 4 KiB image whose GUID table holds only the verifier-config entry. */
static void make_image(uint8_t *img, uint32_t config_offset_from_end) {
        memset(img, 0, 4096);
        size_t footer = 4096 - 32 - 16;
        memcpy(img + footer, cvm_snp_guid_table_footer, 16);
        uint16_t total = 22 + 18;
        memcpy(img + footer - 2, &total, 2);
        size_t entry_end = footer - 2;
        memcpy(img + entry_end - 16, cvm_snp_guid_verifier_config, 16);
        uint16_t len = 22;
        memcpy(img + entry_end - 18, &len, 2);
        memcpy(img + entry_end - 22, &config_offset_from_end, 4);
}

static void test_verifier_config_entry(void **state) {
        (void)state;
        uint8_t img[4096];
        cvm_snp_firmware fw;
        cvm_error err = {0};
        make_image(img, 0x800);
        assert_int_equal(cvm_snp_firmware_parse(img, sizeof(img), &fw, &err), 0);
        assert_true(fw.has_verifier_config);
        assert_int_equal(fw.verifier_config_offset, 4096 - 0x800);
        make_image(img, 0x2000);
        assert_int_equal(cvm_snp_firmware_parse(img, sizeof(img), &fw, &err), -EINVAL);
        assert_non_null(strstr(err.message, "verifier configuration"));
        /* OVMF-like images without the entry are not verifiers. */
        memset(img, 0, sizeof(img));
        assert_int_equal(cvm_snp_firmware_parse(img, sizeof(img), &fw, &err), 0);
        assert_false(fw.has_verifier_config);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sha256_known_answers),
                cmocka_unit_test(test_sha256_against_openssl),
                cmocka_unit_test(test_sha256_ni_against_openssl),
                cmocka_unit_test(test_verifier_config_entry),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
