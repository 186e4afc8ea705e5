#include "snp_report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "le.h"

/* Field offsets from the ATTESTATION_REPORT table of the SNP firmware ABI. */
enum {
        OFF_VERSION = 0x000,
        OFF_GUEST_SVN = 0x004,
        OFF_POLICY = 0x008,
        OFF_FAMILY_ID = 0x010,
        OFF_IMAGE_ID = 0x020,
        OFF_VMPL = 0x030,
        OFF_SIGNATURE_ALGO = 0x034,
        OFF_CURRENT_TCB = 0x038,
        OFF_PLATFORM_INFO = 0x040,
        OFF_FLAGS = 0x048,
        OFF_REPORT_DATA = 0x050,
        OFF_MEASUREMENT = 0x090,
        OFF_HOST_DATA = 0x0C0,
        OFF_ID_KEY_DIGEST = 0x0E0,
        OFF_AUTHOR_KEY_DIGEST = 0x110,
        OFF_REPORT_ID = 0x140,
        OFF_REPORT_ID_MA = 0x160,
        OFF_REPORTED_TCB = 0x180,
        OFF_CPUID_FAM_ID = 0x188,
        OFF_CPUID_MOD_ID = 0x189,
        OFF_CPUID_STEP = 0x18A,
        OFF_CHIP_ID = 0x1A0,
        OFF_COMMITTED_TCB = 0x1E0,
        OFF_CURRENT_BUILD = 0x1E8,
        OFF_CURRENT_MINOR = 0x1E9,
        OFF_CURRENT_MAJOR = 0x1EA,
        OFF_COMMITTED_BUILD = 0x1EC,
        OFF_COMMITTED_MINOR = 0x1ED,
        OFF_COMMITTED_MAJOR = 0x1EE,
        OFF_LAUNCH_TCB = 0x1F0,
        OFF_SIG_R = 0x2A0,
        OFF_SIG_S = 0x2E8,
        OFF_SIG_END = 0x330,
};

_Static_assert(OFF_SIG_R == CVM_SNP_REPORT_SIGNATURE_OFFSET, "signature offset");
_Static_assert(OFF_SIG_S == OFF_SIG_R + CVM_SNP_SIG_COMPONENT_SIZE, "S follows R");
_Static_assert(OFF_SIG_END == OFF_SIG_S + CVM_SNP_SIG_COMPONENT_SIZE, "S ends the signature");

/* P-384 scalars are 48 bytes; R and S sit zero-extended in 72. */
#define P384_SCALAR_SIZE 48

static void put32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t cvm_snp_tcb_encode(const cvm_snp_tcb *tcb) {
        return (uint64_t)tcb->bootloader | (uint64_t)tcb->tee << 8 | (uint64_t)tcb->snp << 48 |
               (uint64_t)tcb->microcode << 56;
}

cvm_snp_tcb cvm_snp_tcb_decode(uint64_t raw) {
        return (cvm_snp_tcb){.bootloader = (uint8_t)raw,
                             .tee = (uint8_t)(raw >> 8),
                             .snp = (uint8_t)(raw >> 48),
                             .microcode = (uint8_t)(raw >> 56)};
}

bool cvm_snp_tcb_at_least(const cvm_snp_tcb *tcb, const cvm_snp_tcb *min) {
        return tcb->bootloader >= min->bootloader && tcb->tee >= min->tee && tcb->snp >= min->snp &&
               tcb->microcode >= min->microcode;
}

bool cvm_snp_tcb_equal(const cvm_snp_tcb *a, const cvm_snp_tcb *b) {
        return a->bootloader == b->bootloader && a->tee == b->tee && a->snp == b->snp &&
               a->microcode == b->microcode;
}

const char *cvm_snp_tcb_format(const cvm_snp_tcb *tcb, char *buf, size_t size) {
        snprintf(buf, size, "bl=%u tee=%u snp=%u ucode=%u", tcb->bootloader, tcb->tee, tcb->snp,
                 tcb->microcode);
        return buf;
}

const char *cvm_snp_hex(const uint8_t *bytes, size_t n, char *buf) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                buf[2 * i] = digits[bytes[i] >> 4];
                buf[2 * i + 1] = digits[bytes[i] & 0xf];
        }
        buf[2 * n] = '\0';
        return buf;
}

static int nibble(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int cvm_snp_unhex(const char *hex, uint8_t *out, size_t n) {
        if (!hex || strlen(hex) != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                out[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}

int cvm_snp_report_encode(const cvm_snp_report *r, uint8_t out[CVM_SNP_REPORT_SIZE],
                          cvm_error *err) {
        if (r->version < CVM_SNP_REPORT_VERSION_MIN || r->version > CVM_SNP_REPORT_VERSION_MAX)
                return cvm_error_set(err, -EINVAL, "report version %u is not 2 or 3", r->version);
        if (r->version < 3 && (r->cpuid_fam_id || r->cpuid_mod_id || r->cpuid_step))
                return cvm_error_set(err, -EINVAL,
                                     "report version 2 has no CPUID fields, but they are set");
        if (r->flags & CVM_SNP_FLAG_RESERVED)
                return cvm_error_set(err, -EINVAL, "report flags 0x%x set reserved bits 31:5",
                                     r->flags);
        memset(out, 0, CVM_SNP_REPORT_SIZE);
        put32(out + OFF_VERSION, r->version);
        put32(out + OFF_GUEST_SVN, r->guest_svn);
        cvm_put_le64(out + OFF_POLICY, r->policy);
        memcpy(out + OFF_FAMILY_ID, r->family_id, sizeof(r->family_id));
        memcpy(out + OFF_IMAGE_ID, r->image_id, sizeof(r->image_id));
        put32(out + OFF_VMPL, r->vmpl);
        put32(out + OFF_SIGNATURE_ALGO, r->signature_algo);
        cvm_put_le64(out + OFF_CURRENT_TCB, r->current_tcb);
        cvm_put_le64(out + OFF_PLATFORM_INFO, r->platform_info);
        put32(out + OFF_FLAGS, r->flags);
        memcpy(out + OFF_REPORT_DATA, r->report_data, sizeof(r->report_data));
        memcpy(out + OFF_MEASUREMENT, r->measurement, sizeof(r->measurement));
        memcpy(out + OFF_HOST_DATA, r->host_data, sizeof(r->host_data));
        memcpy(out + OFF_ID_KEY_DIGEST, r->id_key_digest, sizeof(r->id_key_digest));
        memcpy(out + OFF_AUTHOR_KEY_DIGEST, r->author_key_digest, sizeof(r->author_key_digest));
        memcpy(out + OFF_REPORT_ID, r->report_id, sizeof(r->report_id));
        memcpy(out + OFF_REPORT_ID_MA, r->report_id_ma, sizeof(r->report_id_ma));
        cvm_put_le64(out + OFF_REPORTED_TCB, r->reported_tcb);
        out[OFF_CPUID_FAM_ID] = r->cpuid_fam_id;
        out[OFF_CPUID_MOD_ID] = r->cpuid_mod_id;
        out[OFF_CPUID_STEP] = r->cpuid_step;
        memcpy(out + OFF_CHIP_ID, r->chip_id, sizeof(r->chip_id));
        cvm_put_le64(out + OFF_COMMITTED_TCB, r->committed_tcb);
        out[OFF_CURRENT_BUILD] = r->current_build;
        out[OFF_CURRENT_MINOR] = r->current_minor;
        out[OFF_CURRENT_MAJOR] = r->current_major;
        out[OFF_COMMITTED_BUILD] = r->committed_build;
        out[OFF_COMMITTED_MINOR] = r->committed_minor;
        out[OFF_COMMITTED_MAJOR] = r->committed_major;
        cvm_put_le64(out + OFF_LAUNCH_TCB, r->launch_tcb);
        memcpy(out + OFF_SIG_R, r->signature_r, sizeof(r->signature_r));
        memcpy(out + OFF_SIG_S, r->signature_s, sizeof(r->signature_s));
        return 0;
}

/* Fails naming the first non-zero byte of a must-be-zero range [lo, hi). */
static int check_mbz(const uint8_t *buf, size_t lo, size_t hi, cvm_error *err) {
        for (size_t i = lo; i < hi; i++)
                if (buf[i])
                        return cvm_error_set(err, -EINVAL,
                                             "report byte 0x%03zx is 0x%02x but the range "
                                             "0x%03zx-0x%03zx is reserved and must be zero",
                                             i, buf[i], lo, hi - 1);
        return 0;
}

int cvm_snp_report_parse(const uint8_t *buf, size_t len, cvm_snp_report *r, cvm_error *err) {
        int ret;
        if (!buf || len != CVM_SNP_REPORT_SIZE)
                return cvm_error_set(err, -EINVAL, "report is %zu bytes, not %u", buf ? len : 0,
                                     CVM_SNP_REPORT_SIZE);
        memset(r, 0, sizeof(*r));
        r->version = cvm_le32(buf + OFF_VERSION);
        if (r->version < CVM_SNP_REPORT_VERSION_MIN || r->version > CVM_SNP_REPORT_VERSION_MAX)
                return cvm_error_set(err, -EINVAL, "report version %u is not supported (2 or 3)",
                                     r->version);
        r->guest_svn = cvm_le32(buf + OFF_GUEST_SVN);
        r->policy = cvm_le64(buf + OFF_POLICY);
        memcpy(r->family_id, buf + OFF_FAMILY_ID, sizeof(r->family_id));
        memcpy(r->image_id, buf + OFF_IMAGE_ID, sizeof(r->image_id));
        r->vmpl = cvm_le32(buf + OFF_VMPL);
        r->signature_algo = cvm_le32(buf + OFF_SIGNATURE_ALGO);
        r->current_tcb = cvm_le64(buf + OFF_CURRENT_TCB);
        r->platform_info = cvm_le64(buf + OFF_PLATFORM_INFO);
        r->flags = cvm_le32(buf + OFF_FLAGS);
        if (r->flags & CVM_SNP_FLAG_RESERVED)
                return cvm_error_set(err, -EINVAL,
                                     "report flags 0x%x at 0x048 set reserved bits 31:5", r->flags);
        if ((ret = check_mbz(buf, 0x04C, OFF_REPORT_DATA, err)) < 0)
                return ret;
        memcpy(r->report_data, buf + OFF_REPORT_DATA, sizeof(r->report_data));
        memcpy(r->measurement, buf + OFF_MEASUREMENT, sizeof(r->measurement));
        memcpy(r->host_data, buf + OFF_HOST_DATA, sizeof(r->host_data));
        memcpy(r->id_key_digest, buf + OFF_ID_KEY_DIGEST, sizeof(r->id_key_digest));
        memcpy(r->author_key_digest, buf + OFF_AUTHOR_KEY_DIGEST, sizeof(r->author_key_digest));
        memcpy(r->report_id, buf + OFF_REPORT_ID, sizeof(r->report_id));
        memcpy(r->report_id_ma, buf + OFF_REPORT_ID_MA, sizeof(r->report_id_ma));
        r->reported_tcb = cvm_le64(buf + OFF_REPORTED_TCB);
        /* Version 3 firmware fills the CPUID family, model and stepping bytes
         * that version 2 reserves. */
        if (r->version >= 3) {
                r->cpuid_fam_id = buf[OFF_CPUID_FAM_ID];
                r->cpuid_mod_id = buf[OFF_CPUID_MOD_ID];
                r->cpuid_step = buf[OFF_CPUID_STEP];
                ret = check_mbz(buf, OFF_CPUID_STEP + 1, OFF_CHIP_ID, err);
        } else {
                ret = check_mbz(buf, OFF_CPUID_FAM_ID, OFF_CHIP_ID, err);
        }
        if (ret < 0)
                return ret;
        memcpy(r->chip_id, buf + OFF_CHIP_ID, sizeof(r->chip_id));
        r->committed_tcb = cvm_le64(buf + OFF_COMMITTED_TCB);
        r->current_build = buf[OFF_CURRENT_BUILD];
        r->current_minor = buf[OFF_CURRENT_MINOR];
        r->current_major = buf[OFF_CURRENT_MAJOR];
        r->committed_build = buf[OFF_COMMITTED_BUILD];
        r->committed_minor = buf[OFF_COMMITTED_MINOR];
        r->committed_major = buf[OFF_COMMITTED_MAJOR];
        if ((ret = check_mbz(buf, OFF_CURRENT_MAJOR + 1, OFF_COMMITTED_BUILD, err)) < 0 ||
            (ret = check_mbz(buf, OFF_COMMITTED_MAJOR + 1, OFF_LAUNCH_TCB, err)) < 0)
                return ret;
        r->launch_tcb = cvm_le64(buf + OFF_LAUNCH_TCB);
        if ((ret = check_mbz(buf, OFF_LAUNCH_TCB + 8, OFF_SIG_R, err)) < 0)
                return ret;
        memcpy(r->signature_r, buf + OFF_SIG_R, sizeof(r->signature_r));
        memcpy(r->signature_s, buf + OFF_SIG_S, sizeof(r->signature_s));
        /* Only ECDSA's layout of the signature area is known; for another
         * algorithm the verifier refuses the report anyway. */
        if (r->signature_algo == CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384 &&
            (ret = check_mbz(buf, OFF_SIG_END, CVM_SNP_REPORT_SIZE, err)) < 0)
                return ret;
        return 0;
}

CVM_DEFINE_CLEANUP(EVP_MD_CTX *, EVP_MD_CTX_free)
CVM_DEFINE_CLEANUP(ECDSA_SIG *, ECDSA_SIG_free)
CVM_DEFINE_CLEANUP(BIGNUM *, BN_free)

static void openssl_freep(unsigned char **p) {
        OPENSSL_free(*p);
}

/* The report key is always ECDSA P-384, whatever the certificate says. */
static int check_p384(EVP_PKEY *key, const char *what, cvm_error *err) {
        char group[64] = "";
        if (!key)
                return cvm_error_set(err, -EINVAL, "%s: no key given", what);
        if (!EVP_PKEY_is_a(key, "EC") ||
            !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL) ||
            strcmp(group, "secp384r1") != 0)
                return cvm_error_set(err, -EINVAL, "%s: the key is not an EC P-384 key", what);
        return 0;
}

int cvm_snp_report_sign(uint8_t report[CVM_SNP_REPORT_SIZE], EVP_PKEY *key, cvm_error *err) {
        int ret;
        if ((ret = check_p384(key, "signing the report", err)) < 0)
                return ret;
        CVM_CLEANUP(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char der[160];
        size_t der_len = sizeof(der);
        if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, key) != 1 ||
            EVP_DigestSign(ctx, der, &der_len, report, CVM_SNP_REPORT_SIGNED_SIZE) != 1)
                return cvm_error_set(err, -EIO, "signing the report: ECDSA signing failed");
        const unsigned char *p = der;
        CVM_CLEANUP(ECDSA_SIG_freep) ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        if (!sig)
                return cvm_error_set(err, -EIO, "signing the report: malformed ECDSA signature");
        uint8_t *area = report + CVM_SNP_REPORT_SIGNATURE_OFFSET;
        memset(area, 0, CVM_SNP_REPORT_SIZE - CVM_SNP_REPORT_SIGNATURE_OFFSET);
        if (BN_bn2lebinpad(ECDSA_SIG_get0_r(sig), area, CVM_SNP_SIG_COMPONENT_SIZE) < 0 ||
            BN_bn2lebinpad(ECDSA_SIG_get0_s(sig), area + CVM_SNP_SIG_COMPONENT_SIZE,
                           CVM_SNP_SIG_COMPONENT_SIZE) < 0)
                return cvm_error_set(err, -EIO, "signing the report: R or S too large");
        return 0;
}

int cvm_snp_report_verify(const uint8_t report[CVM_SNP_REPORT_SIZE], EVP_PKEY *key,
                          cvm_error *err) {
        int ret;
        if ((ret = check_p384(key, "verifying the report signature", err)) < 0)
                return ret;
        uint32_t algo = cvm_le32(report + OFF_SIGNATURE_ALGO);
        if (algo != CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384)
                return cvm_error_set(err, -EBADMSG,
                                     "report signature algorithm %u is not ECDSA P-384 (1)", algo);
        const uint8_t *area = report + CVM_SNP_REPORT_SIGNATURE_OFFSET;
        /* R and S are P-384 scalars: bytes past the 48th must be zero, so one
         * signature has exactly one encoding in the report. */
        for (size_t i = P384_SCALAR_SIZE; i < CVM_SNP_SIG_COMPONENT_SIZE; i++)
                if (area[i] || area[CVM_SNP_SIG_COMPONENT_SIZE + i])
                        return cvm_error_set(err, -EBADMSG,
                                             "report signature does not verify: R or S "
                                             "exceeds 48 bytes");
        CVM_CLEANUP(BN_freep) BIGNUM *r = BN_lebin2bn(area, CVM_SNP_SIG_COMPONENT_SIZE, NULL);
        CVM_CLEANUP(BN_freep)
        BIGNUM *s =
                BN_lebin2bn(area + CVM_SNP_SIG_COMPONENT_SIZE, CVM_SNP_SIG_COMPONENT_SIZE, NULL);
        CVM_CLEANUP(ECDSA_SIG_freep) ECDSA_SIG *sig = ECDSA_SIG_new();
        if (!r || !s || !sig || ECDSA_SIG_set0(sig, r, s) != 1)
                return cvm_error_set(err, -ENOMEM, "verifying the report signature: out of memory");
        r = s = NULL; /* Owned by sig now. */
        CVM_CLEANUP(openssl_freep) unsigned char *der = NULL;
        int der_len = i2d_ECDSA_SIG(sig, &der);
        if (der_len <= 0)
                return cvm_error_set(err, -ENOMEM, "verifying the report signature: out of memory");
        CVM_CLEANUP(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx || EVP_DigestVerifyInit(ctx, NULL, EVP_sha384(), NULL, key) != 1)
                return cvm_error_set(err, -EIO, "verifying the report signature: OpenSSL failed");
        if (EVP_DigestVerify(ctx, der, (size_t)der_len, report, CVM_SNP_REPORT_SIGNED_SIZE) != 1)
                return cvm_error_set(err, -EBADMSG,
                                     "report signature does not verify with the VCEK's key");
        return 0;
}
