
/* Attestation verification end to end: a simulated AMD chain (RSA-4096 ARK
 * and ASK, P-384 VCEK with KDS extensions), reports signed by its VCEK, and
 * every way a hostile host could get them wrong, each failing with its
 * check named. Also the chain's persistence and the policy file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "amd_certs.h"
#include "attest_policy.h"
#include "attest_verify.h"
#include "cleanup.h"
#include "snp_report.h"
#include "unit_tmp.h"

CVM_DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)

#define DEFAULT_POLICY_FILE "policy/attestation-policy.json"

static const cvm_snp_tcb sim_tcb = {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115};

/* One chain for the whole file (RSA-4096 keys take seconds), plus the pieces
 * of the broken chains, issued by 2048-bit impostors to save time. */
static struct {
        cvm_amd_chain *chain;
        EVP_PKEY *other_p384;
        X509 *other_ark;         /* Self-signed by another key. */
        X509 *ask_by_other_ark;  /* The real ASK's key, certified by the other ARK. */
        X509 *vcek_by_other_ask; /* The real VCEK's key, certified by another ASK key. */
        X509 *vcek_pkcs1;        /* Signed by the ASK's name with PKCS#1 v1.5, not PSS. */
        char dir[UNIT_TMP_MAX];
} fx;

static int setup(void **state) {
        (void)state;
        cvm_error err = {0};
        cvm_amd_sim_params p = {.tcb = sim_tcb};
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *other_ark_key = NULL;
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *other_ask_key = NULL;
        if (cvm_amd_sim_chain_generate(&p, &fx.chain, &err) < 0 ||
            cvm_amd_key_p384(&fx.other_p384, &err) < 0 ||
            cvm_amd_key_rsa(2048, &other_ark_key, &err) < 0 ||
            cvm_amd_key_rsa(2048, &other_ask_key, &err) < 0 ||
            cvm_amd_sim_issue(CVM_AMD_CERT_ARK, other_ark_key, NULL, other_ark_key, &p,
                              &fx.other_ark, &err) < 0 ||
            cvm_amd_sim_issue(CVM_AMD_CERT_ASK, X509_get0_pubkey(fx.chain->ask), fx.other_ark,
                              other_ark_key, &p, &fx.ask_by_other_ark, &err) < 0) {
                fprintf(stderr, "setup: %s\n", err.message);
                return -1;
        }
        p.has_chip_id = true;
        memcpy(p.chip_id, fx.chain->vcek_info.hwid, sizeof(p.chip_id));
        if (cvm_amd_sim_issue(CVM_AMD_CERT_VCEK, fx.chain->vcek_key, fx.chain->ask, other_ask_key,
                              &p, &fx.vcek_by_other_ask, &err) < 0) {
                fprintf(stderr, "setup: %s\n", err.message);
                return -1;
        }
        if (cvm_amd_sim_issue(CVM_AMD_CERT_VCEK, fx.chain->vcek_key, fx.chain->ask, other_ask_key,
                              &p, &fx.vcek_pkcs1, &err) < 0 ||
            X509_sign(fx.vcek_pkcs1, other_ask_key, EVP_sha384()) <= 0)
                return -1;
        unit_tmp_path(fx.dir, sizeof(fx.dir), "cvm-test-attest.XXXXXX");
        return mkdtemp(fx.dir) ? 0 : -1;
}

static void rm_chain_files(const char *dir) {
        static const char *const files[] = {"ark.pem", "ask.pem", "vcek.der", "vcek.key"};
        char path[UNIT_TMP_MAX + 64];
        for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
                unlink(path);
        }
}

static int teardown(void **state) {
        (void)state;
        cvm_amd_chain_free(fx.chain);
        EVP_PKEY_free(fx.other_p384);
        X509_free(fx.other_ark);
        X509_free(fx.ask_by_other_ark);
        X509_free(fx.vcek_by_other_ask);
        X509_free(fx.vcek_pkcs1);
        rm_chain_files(fx.dir);
        char sub[UNIT_TMP_MAX + 32];
        snprintf(sub, sizeof(sub), "%s/created", fx.dir);
        rm_chain_files(sub);
        rmdir(sub);
        rmdir(fx.dir);
        return 0;
}

static const uint8_t nonce[CVM_SNP_REPORT_DATA_SIZE] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3};
static const uint8_t digest[CVM_SNP_MEASUREMENT_SIZE] = {0x42, 0x42, 0x42, 9, 8, 7};

/* A report as the sim host would make it for the fixture's chip. */
static void good_report(cvm_snp_report *r) {
        memset(r, 0, sizeof(*r));
        r->version = 2;
        r->policy = UINT64_C(0x30000);
        r->signature_algo = CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384;
        r->current_tcb = r->reported_tcb = r->committed_tcb = r->launch_tcb =
                cvm_snp_tcb_encode(&sim_tcb);
        memcpy(r->report_data, nonce, sizeof(nonce));
        memcpy(r->measurement, digest, sizeof(digest));
        memcpy(r->chip_id, fx.chain->vcek_info.hwid, CVM_SNP_CHIP_ID_SIZE);
        r->current_major = r->committed_major = 1;
        r->current_minor = r->committed_minor = 55;
}

static void sign(const cvm_snp_report *r, EVP_PKEY *key, uint8_t out[CVM_SNP_REPORT_SIZE]) {
        cvm_error err = {0};
        if (cvm_snp_report_encode(r, out, &err) < 0 || cvm_snp_report_sign(out, key, &err) < 0)
                fail_msg("signing: %s", err.message);
}

static cvm_attest_input good_input(const uint8_t *report) {
        return (cvm_attest_input){.report = report,
                                  .report_len = CVM_SNP_REPORT_SIZE,
                                  .vcek = fx.chain->vcek,
                                  .ask = fx.chain->ask,
                                  .ark = fx.chain->ark,
                                  .pinned_ark = fx.chain->ark,
                                  .expected_measurement = digest,
                                  .expected_report_data = nonce};
}

static void dump(const cvm_attest_result *res) {
        for (size_t i = 0; i < res->nchecks; i++)
                fprintf(stderr, "  %-20s %-7s %s\n", res->checks[i].name,
                        cvm_check_status_name(res->checks[i].status), res->checks[i].message);
}

static void want_check(const cvm_attest_result *res, const char *name, cvm_check_status status,
                       const char *needle) {
        const cvm_check *c = cvm_attest_find(res, name);
        if (!c) {
                dump(res);
                fail_msg("no check %s", name);
        }
        if (c->status != status || (needle && !strstr(c->message, needle))) {
                dump(res);
                fail_msg("check %s: %s '%s', wanted %s '%s'", name,
                         cvm_check_status_name(c->status), c->message,
                         cvm_check_status_name(status), needle ? needle : "");
        }
}

/* Verifies in and expects exactly one failure: check name, whose message has needle. */
static void expect_only_failure(const cvm_attest_input *in, const char *name, const char *needle) {
        cvm_attest_result res;
        cvm_error err = {0};
        assert_int_equal(cvm_attest_verify(in, &res, &err), -EPERM);
        assert_false(res.ok);
        want_check(&res, name, CVM_CHECK_FAIL, needle);
        for (size_t i = 0; i < res.nchecks; i++)
                if (res.checks[i].status == CVM_CHECK_FAIL && strcmp(res.checks[i].name, name)) {
                        dump(&res);
                        fail_msg("unexpected failure of %s", res.checks[i].name);
                }
        if (!strstr(err.message, name))
                fail_msg("error '%s' does not name %s", err.message, name);
}

static void test_good_report(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, b);
        cvm_attest_policy pol;
        cvm_error err = {0};
        char hex[2 * CVM_SNP_MEASUREMENT_SIZE + 1], doc[512];
        snprintf(doc, sizeof(doc),
                 "{\"measurements\": {\"hello\": [\"%s\", \"%096d\"]},"
                 " \"min_tcb\": {\"bootloader\": 3, \"snp\": 8, \"microcode\": 100}}",
                 cvm_snp_hex(digest, sizeof(digest), hex), 0);
        assert_int_equal(cvm_attest_policy_parse(doc, strlen(doc), &pol, &err), 0);
        cvm_attest_input in = good_input(b);
        in.policy = &pol;
        in.function = "hello";
        cvm_attest_result res;
        int ret = cvm_attest_verify(&in, &res, &err);
        if (ret < 0) {
                dump(&res);
                fail_msg("%s", err.message);
        }
        assert_true(res.ok);
        assert_true(res.root_pinned);
        assert_true(res.report_parsed);
        assert_int_equal(res.nchecks, 20);
        for (size_t i = 0; i < res.nchecks; i++)
                if (res.checks[i].status != CVM_CHECK_PASS) {
                        dump(&res);
                        fail_msg("check %s did not pass", res.checks[i].name);
                }
        want_check(&res, CVM_CHECK_VCEK_TCB, CVM_CHECK_PASS, "bl=3 tee=0 snp=8 ucode=115");
        cvm_attest_policy_done(&pol);
}

static void test_unpinned_and_unexpected(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, b);
        cvm_attest_input in = good_input(b);
        in.pinned_ark = NULL;
        in.expected_measurement = NULL;
        in.expected_report_data = NULL;
        cvm_attest_result res;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), 0);
        assert_true(res.ok);
        assert_false(res.root_pinned);
        want_check(&res, CVM_CHECK_ARK_PINNED, CVM_CHECK_SKIPPED, "not proven");
        want_check(&res, CVM_CHECK_MEASUREMENT, CVM_CHECK_SKIPPED, "424242");
        want_check(&res, CVM_CHECK_REPORT_DATA, CVM_CHECK_SKIPPED, "replay");
        want_check(&res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_SKIPPED, NULL);
}

static void test_tampered(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t good[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, good);
        /* measurement, report_data, policy (ABI minor), reported_tcb's
         * microcode SPL, chip_id, and R of the signature. */
        static const struct {
                size_t offset;
                const char *also; /* The check the changed field fails as well, if any. */
        } flips[] = {{0x090, CVM_CHECK_MEASUREMENT}, {0x050, CVM_CHECK_REPORT_DATA}, {0x008, NULL},
                     {0x187, CVM_CHECK_VCEK_TCB},    {0x1A0, CVM_CHECK_CHIP_ID},     {0x2A0, NULL}};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(flips); i++) {
                uint8_t b[CVM_SNP_REPORT_SIZE];
                memcpy(b, good, sizeof(b));
                b[flips[i].offset] ^= 0x01;
                cvm_attest_input in = good_input(b);
                cvm_attest_result res;
                assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
                want_check(&res, CVM_CHECK_REPORT_SIGNATURE, CVM_CHECK_FAIL,
                           "report signature does not verify with the VCEK's key");
                if (flips[i].also)
                        want_check(&res, flips[i].also, CVM_CHECK_FAIL, NULL);
                want_check(&res, CVM_CHECK_VCEK_SIGNED, CVM_CHECK_PASS, NULL);
        }
}

static void test_wrong_nonce_and_measurement(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, b);
        uint8_t other_nonce[CVM_SNP_REPORT_DATA_SIZE] = {0xde, 0xad};
        uint8_t other_digest[CVM_SNP_MEASUREMENT_SIZE] = {0x41};
        cvm_attest_input in = good_input(b);
        in.expected_report_data = other_nonce;
        expect_only_failure(&in, CVM_CHECK_REPORT_DATA, "differs from the expected");
        in = good_input(b);
        in.expected_measurement = other_digest;
        expect_only_failure(&in, CVM_CHECK_MEASUREMENT, "expected 41000000");

        /* The policy's list for the function, and a function it does not list. */
        cvm_attest_policy pol;
        char doc[256];
        snprintf(doc, sizeof(doc), "{\"measurements\": {\"hello\": [\"%096d\"]}}", 7);
        assert_int_equal(cvm_attest_policy_parse(doc, strlen(doc), &pol, NULL), 0);
        in = good_input(b);
        in.policy = &pol;
        in.function = "hello";
        expect_only_failure(&in, CVM_CHECK_MEASUREMENT_ALLOWED, "not among the 1 allowed");
        in.function = "other";
        expect_only_failure(&in, CVM_CHECK_MEASUREMENT_ALLOWED, "no measurements for function");
        cvm_attest_policy_done(&pol);
}

static void test_other_signer(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.other_p384, b);
        cvm_attest_input in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_REPORT_SIGNATURE, "does not verify");
}

static void test_broken_chain(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, b);

        cvm_attest_input in = good_input(b);
        in.ask = fx.ask_by_other_ark;
        expect_only_failure(&in, CVM_CHECK_ASK_SIGNED, "signature does not verify");

        in = good_input(b);
        in.vcek = fx.vcek_by_other_ask;
        expect_only_failure(&in, CVM_CHECK_VCEK_SIGNED, "signature does not verify");

        /* A whole chain from another root: consistent, but not the pinned one. */
        in = good_input(b);
        in.pinned_ark = fx.other_ark;
        expect_only_failure(&in, CVM_CHECK_ARK_PINNED, "differs from the pinned");
        cvm_attest_result res;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        assert_false(res.root_pinned);

        /* An ARK that is not self-signed: an ASK certificate standing in for it. */
        in = good_input(b);
        in.ark = fx.ask_by_other_ark;
        in.pinned_ark = NULL;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        want_check(&res, CVM_CHECK_ARK_SELF_SIGNED, CVM_CHECK_FAIL, "does not verify");

        /* A signature that is PKCS#1 v1.5, not PSS as all of AMD's, is refused as such. */
        in = good_input(b);
        in.vcek = fx.vcek_pkcs1;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        want_check(&res, CVM_CHECK_VCEK_SIGNED, CVM_CHECK_FAIL, "not RSASSA-PSS with SHA-384");

        in = good_input(b);
        in.vcek = NULL;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        want_check(&res, CVM_CHECK_VCEK_SIGNED, CVM_CHECK_FAIL, "no VCEK");
        want_check(&res, CVM_CHECK_REPORT_SIGNATURE, CVM_CHECK_FAIL, "no VCEK");
}

static void test_vcek_tcb_and_chip(void **state) {
        (void)state;
        cvm_snp_report r;
        good_report(&r);
        cvm_snp_tcb newer = sim_tcb;
        newer.snp = 9;
        r.reported_tcb = cvm_snp_tcb_encode(&newer);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, fx.chain->vcek_key, b);
        cvm_attest_input in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_VCEK_TCB,
                            "VCEK is for TCB bl=3 tee=0 snp=8 ucode=115 but the report's "
                            "REPORTED_TCB is bl=3 tee=0 snp=9 ucode=115");

        good_report(&r);
        r.chip_id[63] ^= 0xff;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_CHIP_ID, "differs from the VCEK's hwID");

        /* A masked chip ID cannot be compared. */
        r.flags = CVM_SNP_FLAG_MASK_CHIP_KEY;
        memset(r.chip_id, 0, sizeof(r.chip_id));
        sign(&r, fx.chain->vcek_key, b);
        cvm_attest_result res;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), 0);
        want_check(&res, CVM_CHECK_CHIP_ID, CVM_CHECK_SKIPPED, "MASK_CHIP_KEY");

        /* Minimum TCB from the policy. */
        good_report(&r);
        sign(&r, fx.chain->vcek_key, b);
        cvm_attest_policy pol;
        const char *doc = "{\"min_tcb\": {\"microcode\": 116}}";
        assert_int_equal(cvm_attest_policy_parse(doc, strlen(doc), &pol, NULL), 0);
        in = good_input(b);
        in.policy = &pol;
        expect_only_failure(&in, CVM_CHECK_TCB_MINIMUM, "is below the minimum");
        cvm_attest_policy_done(&pol);
}

static void test_guest_policy_checks(void **state) {
        (void)state;
        cvm_snp_report r;
        uint8_t b[CVM_SNP_REPORT_SIZE];
        cvm_attest_input in;
        cvm_attest_policy pol;
        cvm_attest_result res;

        good_report(&r);
        r.policy |= CVM_SNP_POLICY_DEBUG;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_POLICY_DEBUG, "bit 19");
        const char *allow = "{\"guest_policy\": {\"allow_debug\": true}}";
        assert_int_equal(cvm_attest_policy_parse(allow, strlen(allow), &pol, NULL), 0);
        in.policy = &pol;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), 0);
        cvm_attest_policy_done(&pol);

        good_report(&r);
        r.policy |= CVM_SNP_POLICY_MIGRATE_MA;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_POLICY_MIGRATION, "bit 18");

        good_report(&r);
        r.policy &= ~CVM_SNP_POLICY_RESERVED_ONE;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_POLICY_RESERVED, "bit 17");

        /* SMT: the policy allows it (0x30000) and the platform has it on. */
        const char *nosmt = "{\"guest_policy\": {\"require_no_smt\": true, \"abi_min\": \"1.51\"}}";
        assert_int_equal(cvm_attest_policy_parse(nosmt, strlen(nosmt), &pol, NULL), 0);
        good_report(&r);
        r.policy = UINT64_C(0x30000) | 0x0133;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        in.policy = &pol;
        expect_only_failure(&in, CVM_CHECK_POLICY_SMT, "allows SMT");
        r.policy = UINT64_C(0x20000) | 0x0133;
        r.platform_info = CVM_SNP_PLATFORM_SMT_EN;
        sign(&r, fx.chain->vcek_key, b);
        expect_only_failure(&in, CVM_CHECK_POLICY_SMT, "PLATFORM_INFO");
        r.platform_info = 0;
        r.policy = UINT64_C(0x20000) | 0x0132; /* ABI 1.50 < 1.51. */
        sign(&r, fx.chain->vcek_key, b);
        expect_only_failure(&in, CVM_CHECK_POLICY_ABI, "1.50 is below the required 1.51");
        r.policy = UINT64_C(0x20000) | 0x0200; /* 2.0 >= 1.51 */
        sign(&r, fx.chain->vcek_key, b);
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), 0);
        cvm_attest_policy_done(&pol);

        good_report(&r);
        r.vmpl = 1;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_VMPL, "VMPL 1");
        const char *vmpl = "{\"guest_policy\": {\"vmpl\": [0, 1]}}";
        assert_int_equal(cvm_attest_policy_parse(vmpl, strlen(vmpl), &pol, NULL), 0);
        in.policy = &pol;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), 0);
        cvm_attest_policy_done(&pol);
}

static void test_report_fields(void **state) {
        (void)state;
        cvm_snp_report r;
        uint8_t b[CVM_SNP_REPORT_SIZE];
        cvm_attest_input in;
        cvm_attest_result res;

        /* SIGNATURE_ALGO other than 1: the signature cannot verify either. */
        good_report(&r);
        r.signature_algo = 2;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        want_check(&res, CVM_CHECK_SIGNATURE_ALGO, CVM_CHECK_FAIL, "is 2");
        want_check(&res, CVM_CHECK_REPORT_SIGNATURE, CVM_CHECK_FAIL, "algorithm 2");

        good_report(&r);
        r.flags = CVM_SNP_SIGNING_KEY_VLEK << CVM_SNP_FLAG_SIGNING_KEY_SHIFT;
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        expect_only_failure(&in, CVM_CHECK_SIGNING_KEY, "VLEK");

        /* A report that does not parse skips everything that reads it. */
        good_report(&r);
        sign(&r, fx.chain->vcek_key, b);
        in = good_input(b);
        in.report_len = 100;
        assert_int_equal(cvm_attest_verify(&in, &res, NULL), -EPERM);
        want_check(&res, CVM_CHECK_REPORT_FORMAT, CVM_CHECK_FAIL, "100 bytes");
        want_check(&res, CVM_CHECK_MEASUREMENT, CVM_CHECK_SKIPPED, "did not parse");
        want_check(&res, CVM_CHECK_ASK_SIGNED, CVM_CHECK_PASS, NULL);
        assert_int_equal(res.nchecks, 20);
        assert_false(res.report_parsed);

        assert_int_equal(cvm_attest_verify(NULL, &res, NULL), -EINVAL);
}

static void test_vcek_info(void **state) {
        (void)state;
        const cvm_vcek_info *v = &fx.chain->vcek_info;
        assert_true(v->has_struct_version);
        assert_int_equal(v->struct_version, 1);
        assert_string_equal(v->product_name, "Milan");
        assert_true(v->has_tcb);
        assert_true(cvm_snp_tcb_equal(&v->tcb, &sim_tcb));
        assert_int_equal(v->hwid_len, 64);
        /* ARK and ASK have none of it. */
        cvm_vcek_info none;
        assert_int_equal(cvm_vcek_info_get(fx.chain->ark, &none, NULL), 0);
        assert_false(none.has_tcb);
        assert_int_equal(none.hwid_len, 0);
        assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(fx.chain->ark)), 4096);
        assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(fx.chain->ask)), 4096);
        assert_int_equal(X509_get_signature_nid(fx.chain->vcek), NID_rsassaPss);
}

static void write_bytes(const char *path, const void *data, size_t len, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        fchmod(fd, mode);
        close(fd);
}

static void assert_same_cert(X509 *a, X509 *b) {
        assert_int_equal(X509_cmp(a, b), 0);
}

static void test_persist(void **state) {
        (void)state;
        cvm_error err = {0};
        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        char path[UNIT_TMP_MAX + 64];
        struct stat st;
        snprintf(path, sizeof(path), "%s/vcek.key", fx.dir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = NULL;
        assert_int_equal(cvm_amd_sim_chain_load(fx.dir, &c, &err), 0);
        assert_same_cert(c->ark, fx.chain->ark);
        assert_same_cert(c->ask, fx.chain->ask);
        assert_same_cert(c->vcek, fx.chain->vcek);
        assert_int_equal(EVP_PKEY_eq(c->vcek_key, fx.chain->vcek_key), 1);
        assert_memory_equal(&c->vcek_info, &fx.chain->vcek_info, sizeof(c->vcek_info));

        /* The reloaded key signs reports the original chain verifies. */
        cvm_snp_report r;
        good_report(&r);
        uint8_t b[CVM_SNP_REPORT_SIZE];
        sign(&r, c->vcek_key, b);
        cvm_attest_input in = good_input(b);
        cvm_attest_result res;
        assert_int_equal(cvm_attest_verify(&in, &res, &err), 0);

        /* AMD's formats: vcek.der as the KDS serves it, ask+ark as cert_chain. */
        X509 *vcek = NULL, *ask = NULL, *ark = NULL;
        snprintf(path, sizeof(path), "%s/vcek.der", fx.dir);
        assert_int_equal(cvm_amd_cert_load(path, &vcek, &err), 0);
        assert_same_cert(vcek, fx.chain->vcek);
        X509_free(vcek);
        _cleanup_free_ char *ask_pem = NULL, *ark_pem = NULL;
        size_t ask_len, ark_len;
        assert_int_equal(cvm_amd_cert_pem(fx.chain->ask, &ask_pem, &ask_len, &err), 0);
        assert_int_equal(cvm_amd_cert_pem(fx.chain->ark, &ark_pem, &ark_len, &err), 0);
        _cleanup_free_ char *bundle = malloc(ask_len + ark_len);
        assert_non_null(bundle);
        memcpy(bundle, ask_pem, ask_len);
        memcpy(bundle + ask_len, ark_pem, ark_len);
        assert_int_equal(
                cvm_amd_cert_chain_parse((uint8_t *)bundle, ask_len + ark_len, &ask, &ark, &err),
                0);
        assert_same_cert(ask, fx.chain->ask);
        assert_same_cert(ark, fx.chain->ark);
        X509_free(ask);
        X509_free(ark);
        assert_int_equal(cvm_amd_cert_chain_parse((uint8_t *)ask_pem, ask_len, &ask, &ark, &err),
                         -EINVAL);
        assert_non_null(strstr(err.message, "not 2"));
        assert_int_equal(cvm_amd_cert_parse((uint8_t *)bundle, ask_len + ark_len, &ask, &err),
                         -EINVAL);
        assert_non_null(strstr(err.message, "more than one"));
        assert_int_equal(cvm_amd_cert_parse((uint8_t *)ark_pem, ark_len, &ark, &err), 0);
        assert_same_cert(ark, fx.chain->ark);
        X509_free(ark);
        _cleanup_free_ uint8_t *der = NULL;
        size_t der_len;
        assert_int_equal(cvm_amd_cert_der(fx.chain->vcek, &der, &der_len, &err), 0);
        assert_int_equal(cvm_amd_cert_parse(der, der_len - 1, &vcek, &err), -EINVAL);
        uint8_t *longer = malloc(der_len + 1);
        assert_non_null(longer);
        memcpy(longer, der, der_len);
        longer[der_len] = 0;
        assert_int_equal(cvm_amd_cert_parse(longer, der_len + 1, &vcek, &err), -EINVAL);
        assert_non_null(strstr(err.message, "stray"));
        free(longer);
}

static void expect_load_error(const char *needle) {
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = NULL;
        cvm_error err = {0};
        assert_int_equal(cvm_amd_sim_chain_load(fx.dir, &c, &err), -EINVAL);
        assert_null(c);
        if (!strstr(err.message, needle) || !strstr(err.message, "corrupt"))
                fail_msg("message '%s' lacks '%s'", err.message, needle);
}

static void test_corrupt_files(void **state) {
        (void)state;
        cvm_error err = {0};
        char path[UNIT_TMP_MAX + 64];
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = NULL;
        rm_chain_files(fx.dir);
        assert_int_equal(cvm_amd_sim_chain_load(fx.dir, &c, &err), -ENOENT);

        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        snprintf(path, sizeof(path), "%s/vcek.key", fx.dir);
        unlink(path);
        expect_load_error("incomplete: vcek.key missing");

        /* Garbage, truncation, a foreign key, a group-readable key. */
        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        snprintf(path, sizeof(path), "%s/ark.pem", fx.dir);
        write_bytes(path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 58,
                    0644);
        expect_load_error("ark.pem");

        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        _cleanup_free_ uint8_t *der = NULL;
        size_t der_len;
        assert_int_equal(cvm_amd_cert_der(fx.chain->vcek, &der, &der_len, &err), 0);
        snprintf(path, sizeof(path), "%s/vcek.der", fx.dir);
        write_bytes(path, der, der_len / 2, 0644);
        expect_load_error("vcek.der");

        /* The ASK swapped for the other-ARK one: the files parse but do not chain. */
        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        _cleanup_free_ char *pem = NULL;
        size_t pem_len;
        assert_int_equal(cvm_amd_cert_pem(fx.ask_by_other_ark, &pem, &pem_len, &err), 0);
        snprintf(path, sizeof(path), "%s/ask.pem", fx.dir);
        write_bytes(path, pem, pem_len, 0644);
        expect_load_error("ASK signed by ARK");

        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        cvm_amd_chain other = *fx.chain;
        other.vcek_key = fx.other_p384;
        assert_int_equal(cvm_amd_sim_chain_save(&other, fx.dir, &err), 0);
        expect_load_error("vcek.key is not the key of vcek.der");

        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        snprintf(path, sizeof(path), "%s/vcek.key", fx.dir);
        assert_int_equal(chmod(path, 0640), 0);
        expect_load_error("mode 0640");

        assert_int_equal(cvm_amd_sim_chain_save(fx.chain, fx.dir, &err), 0);
        assert_int_equal(cvm_amd_sim_chain_load(fx.dir, &c, &err), 0);
}

static void test_open_creates_then_loads(void **state) {
        (void)state;
        char sub[UNIT_TMP_MAX + 32];
        snprintf(sub, sizeof(sub), "%s/created", fx.dir);
        cvm_amd_sim_params p = {.tcb = sim_tcb, .rsa_bits = 2048, .product = "Genoa"};
        cvm_error err = {0};
        bool created = false;
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *a = NULL;
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *b = NULL;
        assert_int_equal(cvm_amd_sim_chain_open(sub, &p, &a, &created, &err), 0);
        assert_true(created);
        assert_string_equal(a->vcek_info.product_name, "Genoa");
        p.tcb.snp = 99; /* Ignored on load: the chain on disk wins. */
        assert_int_equal(cvm_amd_sim_chain_open(sub, &p, &b, &created, &err), 0);
        assert_false(created);
        assert_int_equal(X509_cmp(a->vcek, b->vcek), 0);
        assert_memory_equal(a->vcek_info.hwid, b->vcek_info.hwid, 64);
        assert_int_equal(b->vcek_info.tcb.snp, sim_tcb.snp);
        struct stat st;
        assert_int_equal(stat(sub, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
}

static void expect_policy_error(const char *doc, const char *needle) {
        cvm_attest_policy pol;
        cvm_error err = {0};
        assert_int_equal(cvm_attest_policy_parse(doc, strlen(doc), &pol, &err), -EINVAL);
        if (!strstr(err.message, needle))
                fail_msg("message '%s' lacks '%s'", err.message, needle);
        assert_int_equal(pol.nfunctions, 0);
}

/* A policy using every field; %s is a second 96-digit hex digest. */
#define FULL_POLICY                                                                                \
        "{\"measurements\": {\"a\": [\""                                                           \
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"                         \
        "00112233445566778899AABBCCDDEEFF\"], \"b\": [\"%s\"]},"                                   \
        " \"min_tcb\": {\"bootloader\": 1, \"tee\": 2, \"snp\": 3,"                                \
        " \"microcode\": 255},"                                                                    \
        " \"guest_policy\": {\"allow_debug\": true, \"allow_migration\": true,"                    \
        " \"require_no_smt\": true, \"abi_min\": {\"major\": 1, \"minor\": 55},"                   \
        " \"vmpl\": [3, 1]}}"

static void test_policy_file(void **state) {
        (void)state;
        cvm_attest_policy pol;
        cvm_error err = {0};
        if (access(DEFAULT_POLICY_FILE, R_OK) == 0) {
                assert_int_equal(cvm_attest_policy_load(DEFAULT_POLICY_FILE, &pol, &err), 0);
                assert_false(pol.allow_debug);
                assert_false(pol.allow_migration);
                assert_false(pol.require_no_smt);
                assert_int_equal(pol.vmpl_mask, 1);
                assert_int_equal(pol.nfunctions, 0);
                cvm_attest_policy_done(&pol);
        }
        assert_int_equal(cvm_attest_policy_load("/nonexistent/policy.json", &pol, &err), -ENOENT);

        char doc[1024];
        char zero[97];
        memset(zero, 'f', 96);
        zero[96] = '\0';
        snprintf(doc, sizeof(doc), FULL_POLICY, zero);
        assert_int_equal(cvm_attest_policy_parse(doc, strlen(doc), &pol, &err), 0);
        assert_int_equal(pol.nfunctions, 2);
        const cvm_attest_function *f = cvm_attest_policy_function(&pol, "a");
        assert_non_null(f);
        assert_int_equal(f->n, 1);
        assert_int_equal(f->digests[0][47], 0xff);
        assert_null(cvm_attest_policy_function(&pol, "c"));
        assert_int_equal(pol.min_tcb.microcode, 255);
        assert_int_equal(pol.abi_major, 1);
        assert_int_equal(pol.abi_minor, 55);
        assert_int_equal(pol.vmpl_mask, 0xa);
        assert_true(pol.allow_debug && pol.allow_migration && pol.require_no_smt);
        cvm_attest_policy_done(&pol);
        cvm_attest_policy_done(NULL);

        expect_policy_error("{\"measurments\": {}}", "unknown field 'measurments'");
        expect_policy_error("{\"min_tcb\": {\"ucode\": 1}}", "unknown field 'min_tcb.ucode'");
        expect_policy_error("{\"guest_policy\": {\"debug\": true}}",
                            "unknown field 'guest_policy.debug'");
        expect_policy_error("{\"guest_policy\": {\"abi_min\": {\"major\": 1, \"minr\": 2}}}",
                            "unknown field 'guest_policy.abi_min.minr'");
        expect_policy_error("{\"min_tcb\": {\"snp\": 256}}", "min_tcb.snp");
        expect_policy_error("{\"min_tcb\": 3}", "min_tcb");
        expect_policy_error("{\"measurements\": {\"a\": [\"abc\"]}}", "measurements.a[0]");
        expect_policy_error("{\"measurements\": {\"a\": []}}", "measurements.a");
        expect_policy_error("{\"measurements\": {\"a\": \"x\"}}", "measurements.a");
        expect_policy_error("{\"guest_policy\": {\"abi_min\": \"1.256\"}}", "guest_policy.abi_min");
        expect_policy_error("{\"guest_policy\": {\"abi_min\": \"1.5x\"}}", "guest_policy.abi_min");
        expect_policy_error("{\"guest_policy\": {\"abi_min\": \"-1.5\"}}", "guest_policy.abi_min");
        expect_policy_error("{\"guest_policy\": {\"vmpl\": [4]}}", "guest_policy.vmpl[0]");
        expect_policy_error("{\"guest_policy\": {\"vmpl\": []}}", "guest_policy.vmpl");
        expect_policy_error("{\"guest_policy\": {\"allow_debug\": 1}}", "guest_policy.allow_debug");
        expect_policy_error("[1]", "object");
        expect_policy_error("{\"a\": 1, \"a\": 2}", "malformed");
        /* The first function's digests are freed when the second is bad. */
        snprintf(doc, sizeof(doc), "{\"measurements\": {\"a\": [\"%s\"], \"b\": [1]}}", zero);
        expect_policy_error(doc, "measurements.b[0]");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_report),
                cmocka_unit_test(test_unpinned_and_unexpected),
                cmocka_unit_test(test_tampered),
                cmocka_unit_test(test_wrong_nonce_and_measurement),
                cmocka_unit_test(test_other_signer),
                cmocka_unit_test(test_broken_chain),
                cmocka_unit_test(test_vcek_tcb_and_chip),
                cmocka_unit_test(test_guest_policy_checks),
                cmocka_unit_test(test_report_fields),
                cmocka_unit_test(test_vcek_info),
                cmocka_unit_test(test_persist),
                cmocka_unit_test(test_corrupt_files),
                cmocka_unit_test(test_open_creates_then_loads),
                cmocka_unit_test(test_policy_file),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
