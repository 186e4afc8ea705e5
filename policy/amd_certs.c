#include "amd_certs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "file.h"

#define PSS_SALT_LEN 48               /* SHA-384's output size, as AMD signs. */
#define SIM_VALIDITY_DAYS (25L * 365) /* AMD's ARK is valid for 25 years. */
#define SIM_STRUCT_VERSION 1
#define SIM_ORGANIZATION "cvmd simulated SEV-SNP (not AMD)"

CVM_DEFINE_CLEANUP(X509 *, X509_free)
CVM_DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)
CVM_DEFINE_CLEANUP(EVP_MD_CTX *, EVP_MD_CTX_free)
CVM_DEFINE_CLEANUP(BIO *, BIO_free)
CVM_DEFINE_CLEANUP(ASN1_OBJECT *, ASN1_OBJECT_free)
CVM_DEFINE_CLEANUP(ASN1_INTEGER *, ASN1_INTEGER_free)
CVM_DEFINE_CLEANUP(ASN1_IA5STRING *, ASN1_IA5STRING_free)
CVM_DEFINE_CLEANUP(ASN1_OCTET_STRING *, ASN1_OCTET_STRING_free)
CVM_DEFINE_CLEANUP(X509_EXTENSION *, X509_EXTENSION_free)
CVM_DEFINE_CLEANUP(BIGNUM *, BN_free)

static void openssl_freep(unsigned char **p) {
        OPENSSL_free(*p);
}

/* Appends OpenSSL's last error reason, since its queue is otherwise lost. */
static int ossl_error(cvm_error *err, int code, const char *what) {
        unsigned long e = ERR_peek_last_error();
        const char *reason = e ? ERR_reason_error_string(e) : NULL;
        ERR_clear_error();
        if (reason)
                return cvm_error_set(err, code, "%s: %s", what, reason);
        return cvm_error_set(err, code, "%s", what);
}

void cvm_amd_chain_free(cvm_amd_chain *c) {
        if (!c)
                return;
        X509_free(c->ark);
        X509_free(c->ask);
        X509_free(c->vcek);
        EVP_PKEY_free(c->vcek_key);
        free(c);
}

/* ---- The VCEK's KDS extensions ---- */

/* Finds the one extension with oid; 0 when absent, 1 when found. */
static int find_ext(X509 *x, const char *oid, ASN1_OCTET_STRING **ret, cvm_error *err) {
        CVM_CLEANUP(ASN1_OBJECT_freep) ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
        if (!obj)
                return cvm_error_set(err, -ENOMEM, "VCEK extension %s: out of memory", oid);
        int i = X509_get_ext_by_OBJ(x, obj, -1);
        if (i < 0)
                return 0;
        if (X509_get_ext_by_OBJ(x, obj, i) >= 0)
                return cvm_error_set(err, -EINVAL, "VCEK extension %s appears twice", oid);
        *ret = X509_EXTENSION_get_data(X509_get_ext(x, i));
        return *ret ? 1 : cvm_error_set(err, -EINVAL, "VCEK extension %s has no value", oid);
}

/* An SPL: a DER INTEGER 0..255 filling the extension value. */
static int ext_u8(X509 *x, const char *oid, bool *present, uint8_t *ret, cvm_error *err) {
        ASN1_OCTET_STRING *v = NULL;
        int r = find_ext(x, oid, &v, err);
        *present = r > 0;
        if (r <= 0)
                return r;
        const unsigned char *p = ASN1_STRING_get0_data(v);
        long len = ASN1_STRING_length(v);
        CVM_CLEANUP(ASN1_INTEGER_freep) ASN1_INTEGER *i = d2i_ASN1_INTEGER(NULL, &p, len);
        int64_t value;
        if (!i || p != ASN1_STRING_get0_data(v) + len || !ASN1_INTEGER_get_int64(&value, i)) {
                ERR_clear_error();
                return cvm_error_set(err, -EINVAL, "VCEK extension %s is not a DER INTEGER", oid);
        }
        if (value < 0 || value > 255)
                return cvm_error_set(err, -EINVAL, "VCEK extension %s is %lld, not 0..255", oid,
                                     (long long)value);
        *ret = (uint8_t)value;
        return 0;
}

int cvm_vcek_info_get(X509 *vcek, cvm_vcek_info *ret, cvm_error *err) {
        memset(ret, 0, sizeof(*ret));
        if (!vcek)
                return cvm_error_set(err, -EINVAL, "VCEK: no certificate given");
        int r;
        bool present;
        uint8_t u8;
        if ((r = ext_u8(vcek, CVM_AMD_OID_STRUCT_VERSION, &present, &u8, err)) < 0)
                return r;
        ret->has_struct_version = present;
        ret->struct_version = u8;

        ASN1_OCTET_STRING *v = NULL;
        if ((r = find_ext(vcek, CVM_AMD_OID_PRODUCT_NAME, &v, err)) < 0)
                return r;
        if (r > 0) {
                const unsigned char *p = ASN1_STRING_get0_data(v);
                long len = ASN1_STRING_length(v);
                CVM_CLEANUP(ASN1_IA5STRING_freep)
                ASN1_IA5STRING *s = d2i_ASN1_IA5STRING(NULL, &p, len);
                if (!s || p != ASN1_STRING_get0_data(v) + len) {
                        ERR_clear_error();
                        return cvm_error_set(err, -EINVAL, "VCEK extension %s is not an IA5String",
                                             CVM_AMD_OID_PRODUCT_NAME);
                }
                int n = ASN1_STRING_length(s);
                const unsigned char *d = ASN1_STRING_get0_data(s);
                if (n <= 0 || n >= CVM_AMD_PRODUCT_NAME_MAX)
                        return cvm_error_set(err, -EINVAL,
                                             "VCEK extension %s (product name) is %d bytes, not "
                                             "1..%d",
                                             CVM_AMD_OID_PRODUCT_NAME, n,
                                             CVM_AMD_PRODUCT_NAME_MAX - 1);
                for (int k = 0; k < n; k++)
                        if (d[k] < 0x20 || d[k] > 0x7e)
                                return cvm_error_set(err, -EINVAL,
                                                     "VCEK extension %s (product name) is not "
                                                     "printable",
                                                     CVM_AMD_OID_PRODUCT_NAME);
                memcpy(ret->product_name, d, (size_t)n);
                ret->product_name[n] = '\0';
        }

        static const char *const spl_oids[] = {CVM_AMD_OID_BL_SPL, CVM_AMD_OID_TEE_SPL,
                                               CVM_AMD_OID_SNP_SPL, CVM_AMD_OID_UCODE_SPL};
        uint8_t *spl[] = {&ret->tcb.bootloader, &ret->tcb.tee, &ret->tcb.snp, &ret->tcb.microcode};
        unsigned found = 0;
        for (size_t k = 0; k < CVM_ARRAY_SIZE(spl_oids); k++) {
                if ((r = ext_u8(vcek, spl_oids[k], &present, spl[k], err)) < 0)
                        return r;
                found += present;
        }
        if (found != 0 && found != CVM_ARRAY_SIZE(spl_oids))
                return cvm_error_set(err, -EINVAL,
                                     "VCEK carries %u of the 4 SPL extensions (blSPL, teeSPL, "
                                     "snpSPL, ucodeSPL)",
                                     found);
        ret->has_tcb = found != 0;

        if ((r = find_ext(vcek, CVM_AMD_OID_HWID, &v, err)) < 0)
                return r;
        if (r > 0) {
                /* The KDS puts the raw chip ID in the extension value without
                 * an OCTET STRING tag; accept a tagged one as well. */
                const unsigned char *p = ASN1_STRING_get0_data(v);
                long len = ASN1_STRING_length(v);
                const unsigned char *bytes = p;
                long n = len;
                CVM_CLEANUP(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *inner = NULL;
                if (len != CVM_SNP_CHIP_ID_SIZE && len != 8) {
                        inner = d2i_ASN1_OCTET_STRING(NULL, &p, len);
                        if (!inner || p != ASN1_STRING_get0_data(v) + len) {
                                ERR_clear_error();
                                return cvm_error_set(err, -EINVAL,
                                                     "VCEK extension %s (hwID) is %ld bytes, "
                                                     "not 64 or 8",
                                                     CVM_AMD_OID_HWID, len);
                        }
                        bytes = ASN1_STRING_get0_data(inner);
                        n = ASN1_STRING_length(inner);
                }
                if (n != CVM_SNP_CHIP_ID_SIZE && n != 8)
                        return cvm_error_set(err, -EINVAL,
                                             "VCEK extension %s (hwID) is %ld bytes, not 64 or 8",
                                             CVM_AMD_OID_HWID, n);
                memcpy(ret->hwid, bytes, (size_t)n);
                ret->hwid_len = (size_t)n;
        }
        return 0;
}

/* ---- Keys and simulated certificates ---- */

int cvm_amd_key_rsa(unsigned bits, EVP_PKEY **ret, cvm_error *err) {
        if (bits < 2048 || bits > 8192)
                return cvm_error_set(err, -EINVAL, "RSA key size %u is not 2048..8192", bits);
        EVP_PKEY *k = EVP_RSA_gen(bits);
        if (!k)
                return ossl_error(err, -EIO, "generating an RSA key");
        *ret = k;
        return 0;
}

int cvm_amd_key_p384(EVP_PKEY **ret, cvm_error *err) {
        EVP_PKEY *k = EVP_EC_gen("P-384");
        if (!k)
                return ossl_error(err, -EIO, "generating an EC P-384 key");
        *ret = k;
        return 0;
}

static int add_ext_der(X509 *x, const char *oid, const unsigned char *der, int len,
                       cvm_error *err) {
        CVM_CLEANUP(ASN1_OBJECT_freep) ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
        CVM_CLEANUP(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        if (!obj || !os || !ASN1_OCTET_STRING_set(os, der, len))
                return ossl_error(err, -ENOMEM, "building a VCEK extension");
        CVM_CLEANUP(X509_EXTENSION_freep)
        X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
        if (!ext || !X509_add_ext(x, ext, -1))
                return ossl_error(err, -ENOMEM, "adding a VCEK extension");
        return 0;
}

static int add_ext_int(X509 *x, const char *oid, long value, cvm_error *err) {
        CVM_CLEANUP(ASN1_INTEGER_freep) ASN1_INTEGER *i = ASN1_INTEGER_new();
        CVM_CLEANUP(openssl_freep) unsigned char *der = NULL;
        int len;
        if (!i || !ASN1_INTEGER_set(i, value) || (len = i2d_ASN1_INTEGER(i, &der)) <= 0)
                return ossl_error(err, -ENOMEM, "encoding a VCEK extension");
        return add_ext_der(x, oid, der, len, err);
}

static int add_vcek_exts(X509 *x, const cvm_amd_sim_params *p, const char *product,
                         cvm_error *err) {
        int r;
        CVM_CLEANUP(ASN1_IA5STRING_freep) ASN1_IA5STRING *name = ASN1_IA5STRING_new();
        CVM_CLEANUP(openssl_freep) unsigned char *der = NULL;
        int len;
        if (!name || !ASN1_STRING_set(name, product, -1) ||
            (len = i2d_ASN1_IA5STRING(name, &der)) <= 0)
                return ossl_error(err, -ENOMEM, "encoding the VCEK product name");
        if ((r = add_ext_int(x, CVM_AMD_OID_STRUCT_VERSION, SIM_STRUCT_VERSION, err)) < 0 ||
            (r = add_ext_der(x, CVM_AMD_OID_PRODUCT_NAME, der, len, err)) < 0 ||
            (r = add_ext_int(x, CVM_AMD_OID_BL_SPL, p->tcb.bootloader, err)) < 0 ||
            (r = add_ext_int(x, CVM_AMD_OID_TEE_SPL, p->tcb.tee, err)) < 0 ||
            (r = add_ext_int(x, CVM_AMD_OID_SNP_SPL, p->tcb.snp, err)) < 0 ||
            (r = add_ext_int(x, CVM_AMD_OID_UCODE_SPL, p->tcb.microcode, err)) < 0)
                return r;
        /* Raw bytes, untagged, as the KDS issues hwID. */
        return add_ext_der(x, CVM_AMD_OID_HWID, p->chip_id, CVM_SNP_CHIP_ID_SIZE, err);
}

static int add_ext_conf(X509 *x, X509 *issuer, int nid, const char *value, cvm_error *err) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
        CVM_CLEANUP(X509_EXTENSION_freep)
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        if (!ext || !X509_add_ext(x, ext, -1))
                return ossl_error(err, -ENOMEM, "adding a certificate extension");
        return 0;
}

static int sign_pss(X509 *x, EVP_PKEY *key, cvm_error *err) {
        CVM_CLEANUP(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL; /* Owned by ctx. */
        if (!ctx || EVP_DigestSignInit(ctx, &pctx, EVP_sha384(), NULL, key) != 1 ||
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, PSS_SALT_LEN) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()) != 1 || X509_sign_ctx(x, ctx) <= 0)
                return ossl_error(err, -EIO, "signing a certificate with RSASSA-PSS");
        return 0;
}

static int set_name(X509_NAME *n, const char *cn) {
        return X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
                                          (const unsigned char *)SIM_ORGANIZATION, -1, -1, 0) &&
               X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC,
                                          (const unsigned char *)"Engineering", -1, -1, 0) &&
               X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                          0);
}

int cvm_amd_sim_issue(cvm_amd_cert_kind kind, EVP_PKEY *subject_key, X509 *issuer,
                      EVP_PKEY *issuer_key, const cvm_amd_sim_params *p, X509 **ret,
                      cvm_error *err) {
        if (!subject_key || !issuer_key || !p || (kind != CVM_AMD_CERT_ARK && !issuer))
                return cvm_error_set(err, -EINVAL, "issuing a certificate: missing key or issuer");
        const char *product = p->product ? p->product : "Milan";
        size_t plen = strlen(product);
        if (plen == 0 || plen >= CVM_AMD_PRODUCT_NAME_MAX)
                return cvm_error_set(err, -EINVAL, "product name '%s' is not 1..%d bytes", product,
                                     CVM_AMD_PRODUCT_NAME_MAX - 1);
        char cn[64];
        switch (kind) {
        case CVM_AMD_CERT_ARK: snprintf(cn, sizeof(cn), "ARK-%s", product); break;
        case CVM_AMD_CERT_ASK: snprintf(cn, sizeof(cn), "SEV-%s", product); break;
        default: snprintf(cn, sizeof(cn), "SEV-VCEK"); break;
        }
        CVM_CLEANUP(X509_freep) X509 *x = X509_new();
        CVM_CLEANUP(BN_freep) BIGNUM *serial = BN_new();
        if (!x || !serial || !X509_set_version(x, X509_VERSION_3) ||
            !BN_rand(serial, 64, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) ||
            !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
            !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
            !X509_time_adj_ex(X509_getm_notAfter(x), SIM_VALIDITY_DAYS, 0, NULL) ||
            !set_name(X509_get_subject_name(x), cn) ||
            !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
                                            : X509_get_subject_name(x)) ||
            !X509_set_pubkey(x, subject_key))
                return ossl_error(err, -ENOMEM, "building a certificate");
        int r;
        if (kind == CVM_AMD_CERT_VCEK) {
                if ((r = add_vcek_exts(x, p, product, err)) < 0)
                        return r;
        } else if ((r = add_ext_conf(x, issuer, NID_basic_constraints, "critical,CA:TRUE", err)) <
                           0 ||
                   (r = add_ext_conf(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign",
                                     err)) < 0) {
                return r;
        }
        if ((r = sign_pss(x, issuer_key, err)) < 0)
                return r;
        *ret = CVM_TAKE_PTR(x);
        return 0;
}

int cvm_amd_sim_chain_generate(const cvm_amd_sim_params *p, cvm_amd_chain **ret, cvm_error *err) {
        cvm_amd_sim_params params = *p;
        if (!params.has_chip_id) {
                if (RAND_bytes(params.chip_id, sizeof(params.chip_id)) != 1)
                        return ossl_error(err, -EIO, "generating a chip ID");
                params.has_chip_id = true;
        }
        unsigned bits = params.rsa_bits ? params.rsa_bits : 4096;
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = calloc(1, sizeof(*c));
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *ark_key = NULL;
        CVM_CLEANUP(EVP_PKEY_freep) EVP_PKEY *ask_key = NULL;
        if (!c)
                return cvm_error_set(err, -ENOMEM, "simulated AMD chain: out of memory");
        int r;
        if ((r = cvm_amd_key_rsa(bits, &ark_key, err)) < 0 ||
            (r = cvm_amd_key_rsa(bits, &ask_key, err)) < 0 ||
            (r = cvm_amd_key_p384(&c->vcek_key, err)) < 0 ||
            (r = cvm_amd_sim_issue(CVM_AMD_CERT_ARK, ark_key, NULL, ark_key, &params, &c->ark,
                                   err)) < 0 ||
            (r = cvm_amd_sim_issue(CVM_AMD_CERT_ASK, ask_key, c->ark, ark_key, &params, &c->ask,
                                   err)) < 0 ||
            (r = cvm_amd_sim_issue(CVM_AMD_CERT_VCEK, c->vcek_key, c->ask, ask_key, &params,
                                   &c->vcek, err)) < 0 ||
            (r = cvm_vcek_info_get(c->vcek, &c->vcek_info, err)) < 0) {
                cvm_error_prefix(err, "simulated AMD chain: ");
                return r;
        }
        *ret = CVM_TAKE_PTR(c);
        return 0;
}

/* ---- Signatures ---- */

int cvm_amd_cert_check_signed_by(X509 *cert, X509 *issuer, const char *what, cvm_error *err) {
        int mdnid = NID_undef, pknid = NID_undef;
        if (!cert || !issuer)
                return cvm_error_set(err, -EINVAL, "%s: certificate missing", what);
        if (!X509_get_signature_info(cert, &mdnid, &pknid, NULL, NULL) ||
            pknid != EVP_PKEY_RSA_PSS || mdnid != NID_sha384) {
                ERR_clear_error();
                return cvm_error_set(err, -EBADMSG,
                                     "%s: the signature algorithm is %s, not RSASSA-PSS with "
                                     "SHA-384",
                                     what, OBJ_nid2ln(X509_get_signature_nid(cert)));
        }
        EVP_PKEY *key = X509_get0_pubkey(issuer);
        if (!key) {
                ERR_clear_error();
                return cvm_error_set(err, -EBADMSG, "%s: the issuer's public key is unreadable",
                                     what);
        }
        if (X509_verify(cert, key) != 1) {
                ERR_clear_error();
                return cvm_error_set(err, -EBADMSG, "%s: the signature does not verify", what);
        }
        return 0;
}

/* ---- Parsing AMD's formats ---- */

static bool is_pem(const uint8_t *buf, size_t len) {
        size_t i = 0;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
                i++;
        return len - i >= 10 && memcmp(buf + i, "-----BEGIN", 10) == 0;
}

/* Reads up to max certificates from PEM; returns how many. */
static int pem_certs(const uint8_t *buf, size_t len, X509 **out, int max, cvm_error *err) {
        if (len > CVM_AMD_CERT_FILE_MAX)
                return cvm_error_set(err, -EINVAL, "PEM input is %zu bytes, more than %u", len,
                                     CVM_AMD_CERT_FILE_MAX);
        CVM_CLEANUP(BIO_freep) BIO *bio = BIO_new_mem_buf(buf, (int)len);
        if (!bio)
                return cvm_error_set(err, -ENOMEM, "PEM: out of memory");
        int n = 0;
        ERR_clear_error(); /* The end of input is told apart by the queue below. */
        for (;;) {
                X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
                if (!x)
                        break;
                if (n == max) {
                        X509_free(x);
                        n++;
                        break;
                }
                out[n++] = x;
        }
        /* Running out of PEM blocks ends the loop with "no start line";
         * anything else is a damaged block. */
        unsigned long e = ERR_peek_last_error();
        if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                for (int i = 0; i < n && i < max; i++)
                        X509_free(out[i]);
                return ossl_error(err, -EINVAL, "malformed PEM certificate");
        }
        ERR_clear_error();
        return n;
}

int cvm_amd_cert_parse(const uint8_t *buf, size_t len, X509 **ret, cvm_error *err) {
        if (!buf || len == 0)
                return cvm_error_set(err, -EINVAL, "certificate is empty");
        if (len > CVM_AMD_CERT_FILE_MAX)
                return cvm_error_set(err, -EINVAL, "certificate is %zu bytes, more than %u", len,
                                     CVM_AMD_CERT_FILE_MAX);
        if (is_pem(buf, len)) {
                X509 *certs[1] = {NULL};
                int n = pem_certs(buf, len, certs, 1, err);
                if (n < 0)
                        return n;
                if (n != 1) {
                        X509_free(certs[0]);
                        return cvm_error_set(err, -EINVAL,
                                             n == 0 ? "PEM holds no certificate"
                                                    : "PEM holds more than one certificate");
                }
                *ret = certs[0];
                return 0;
        }
        const unsigned char *p = buf;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        if (!x)
                return ossl_error(err, -EINVAL, "malformed DER certificate");
        if (p != buf + len) {
                X509_free(x);
                return cvm_error_set(err, -EINVAL, "DER certificate is followed by %zu stray bytes",
                                     (size_t)(buf + len - p));
        }
        *ret = x;
        return 0;
}

int cvm_amd_cert_chain_parse(const uint8_t *buf, size_t len, X509 **ret_ask, X509 **ret_ark,
                             cvm_error *err) {
        if (!buf || !is_pem(buf, len))
                return cvm_error_set(err, -EINVAL, "certificate chain is not PEM");
        X509 *certs[2] = {NULL, NULL};
        int n = pem_certs(buf, len, certs, 2, err);
        if (n < 0)
                return n;
        if (n != 2) {
                X509_free(certs[0]);
                X509_free(certs[1]);
                return cvm_error_set(err, -EINVAL,
                                     "certificate chain holds %s certificates, not 2 (ASK then "
                                     "ARK)",
                                     n < 2 ? (n == 0 ? "no" : "1 of the") : "more than 2");
        }
        *ret_ask = certs[0];
        *ret_ark = certs[1];
        return 0;
}

int cvm_amd_cert_load(const char *path, X509 **ret, cvm_error *err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = cvm_file_read(path, CVM_AMD_CERT_FILE_MAX, &buf, &len, NULL, err);
        if (r < 0)
                return r;
        if ((r = cvm_amd_cert_parse(buf, len, ret, err)) < 0)
                cvm_error_prefix(err, "%s: ", path);
        return r;
}

int cvm_amd_cert_chain_load(const char *path, X509 **ret_ask, X509 **ret_ark, cvm_error *err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = cvm_file_read(path, CVM_AMD_CERT_FILE_MAX, &buf, &len, NULL, err);
        if (r < 0)
                return r;
        if ((r = cvm_amd_cert_chain_parse(buf, len, ret_ask, ret_ark, err)) < 0)
                cvm_error_prefix(err, "%s: ", path);
        return r;
}

int cvm_amd_cert_der(X509 *cert, uint8_t **ret, size_t *ret_len, cvm_error *err) {
        CVM_CLEANUP(openssl_freep) unsigned char *der = NULL;
        int len = cert ? i2d_X509(cert, &der) : -1;
        if (len <= 0)
                return ossl_error(err, -EINVAL, "encoding a certificate as DER");
        uint8_t *copy = malloc((size_t)len);
        if (!copy)
                return cvm_error_set(err, -ENOMEM, "encoding a certificate: out of memory");
        memcpy(copy, der, (size_t)len);
        *ret = copy;
        *ret_len = (size_t)len;
        return 0;
}

static int bio_take(BIO *bio, char **ret, size_t *ret_len, cvm_error *err) {
        char *data;
        long len = BIO_get_mem_data(bio, &data);
        if (len < 0)
                return cvm_error_set(err, -EIO, "PEM: no data");
        char *copy = malloc((size_t)len + 1);
        if (!copy)
                return cvm_error_set(err, -ENOMEM, "PEM: out of memory");
        memcpy(copy, data, (size_t)len);
        copy[len] = '\0';
        *ret = copy;
        if (ret_len)
                *ret_len = (size_t)len;
        return 0;
}

int cvm_amd_cert_pem(X509 *cert, char **ret, size_t *ret_len, cvm_error *err) {
        CVM_CLEANUP(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        if (!bio || !cert || !PEM_write_bio_X509(bio, cert))
                return ossl_error(err, -EINVAL, "encoding a certificate as PEM");
        return bio_take(bio, ret, ret_len, err);
}

/* ---- The simulated chain on disk ---- */

static int write_file_atomic(const char *dir, const char *name, const void *data, size_t len,
                             mode_t mode, cvm_error *err) {
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
                return cvm_error_set(err, -ENAMETOOLONG, "%s/%s: path too long", dir, name);
        return cvm_file_write_atomic(path, data, len, mode, err);
}

int cvm_amd_sim_chain_save(const cvm_amd_chain *c, const char *dir, cvm_error *err) {
        if (!c || !c->ark || !c->ask || !c->vcek || !c->vcek_key)
                return cvm_error_set(err, -EINVAL, "saving the simulated AMD chain: incomplete");
        _cleanup_free_ char *ark = NULL, *ask = NULL;
        _cleanup_free_ uint8_t *vcek = NULL;
        size_t ark_len, ask_len, vcek_len;
        int r;
        if ((r = cvm_amd_cert_pem(c->ark, &ark, &ark_len, err)) < 0 ||
            (r = cvm_amd_cert_pem(c->ask, &ask, &ask_len, err)) < 0 ||
            (r = cvm_amd_cert_der(c->vcek, &vcek, &vcek_len, err)) < 0)
                return r;
        CVM_CLEANUP(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        if (!bio || !PEM_write_bio_PrivateKey(bio, c->vcek_key, NULL, NULL, 0, NULL, NULL))
                return ossl_error(err, -EIO, "encoding the VCEK private key");
        _cleanup_free_ char *key = NULL;
        size_t key_len;
        if ((r = bio_take(bio, &key, &key_len, err)) < 0)
                return r;
        /* The key goes last: a set without it is incomplete and refused. */
        r = write_file_atomic(dir, CVM_AMD_SIM_ARK_FILE, ark, ark_len, 0644, err);
        if (r >= 0)
                r = write_file_atomic(dir, CVM_AMD_SIM_ASK_FILE, ask, ask_len, 0644, err);
        if (r >= 0)
                r = write_file_atomic(dir, CVM_AMD_SIM_VCEK_FILE, vcek, vcek_len, 0644, err);
        if (r >= 0)
                r = write_file_atomic(dir, CVM_AMD_SIM_KEY_FILE, key, key_len, 0600, err);
        OPENSSL_cleanse(key, key_len);
        if (r < 0)
                return r;
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void)fsync(dfd);
        return 0;
}

/* Every failure to load an existing set reads as -EINVAL with the cure. */
static int corrupt(cvm_error *err, const char *dir) {
        if (!err)
                return -EINVAL;
        err->code = -EINVAL;
        return cvm_error_prefix(err,
                                "simulated AMD chain in %s is corrupt (remove %s, %s, %s and %s "
                                "to make a new one): ",
                                dir, CVM_AMD_SIM_ARK_FILE, CVM_AMD_SIM_ASK_FILE,
                                CVM_AMD_SIM_VCEK_FILE, CVM_AMD_SIM_KEY_FILE);
}

static int load_key(const char *path, EVP_PKEY **ret, cvm_error *err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        mode_t mode;
        int r = cvm_file_read(path, CVM_AMD_CERT_FILE_MAX, &buf, &len, &mode, err);
        if (r < 0)
                return r;
        if (mode & 077) {
                OPENSSL_cleanse(buf, len);
                return cvm_error_set(err, -EINVAL,
                                     "%s has mode %04o; a private key must not be accessible to "
                                     "group or others (chmod 600)",
                                     path, (unsigned)(mode & 07777));
        }
        CVM_CLEANUP(BIO_freep) BIO *bio = BIO_new_mem_buf(buf, (int)len);
        EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
        OPENSSL_cleanse(buf, len);
        if (!k)
                return ossl_error(err, -EINVAL, path);
        *ret = k;
        return 0;
}

int cvm_amd_sim_chain_load(const char *dir, cvm_amd_chain **ret, cvm_error *err) {
        static const char *const files[] = {CVM_AMD_SIM_ARK_FILE, CVM_AMD_SIM_ASK_FILE,
                                            CVM_AMD_SIM_VCEK_FILE, CVM_AMD_SIM_KEY_FILE};
        char path[4][PATH_MAX];
        char missing[128] = "";
        size_t nmissing = 0;
        for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
                if ((size_t)snprintf(path[i], sizeof(path[i]), "%s/%s", dir, files[i]) >=
                    sizeof(path[i]))
                        return cvm_error_set(err, -ENAMETOOLONG, "%s: path too long", dir);
                if (access(path[i], F_OK) < 0) {
                        if (errno != ENOENT)
                                return cvm_error_set_errno(err, -errno, "%s", path[i]);
                        size_t l = strlen(missing);
                        snprintf(missing + l, sizeof(missing) - l, "%s%s", nmissing ? ", " : "",
                                 files[i]);
                        nmissing++;
                }
        }
        if (nmissing == CVM_ARRAY_SIZE(files))
                return cvm_error_set(err, -ENOENT, "no simulated AMD chain in %s", dir);
        if (nmissing > 0) {
                cvm_error_set(err, -EINVAL, "it is incomplete: %s missing", missing);
                return corrupt(err, dir);
        }
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = calloc(1, sizeof(*c));
        if (!c)
                return cvm_error_set(err, -ENOMEM,
                                     "loading the simulated AMD chain: out of memory");
        int r;
        if ((r = cvm_amd_cert_load(path[0], &c->ark, err)) < 0 ||
            (r = cvm_amd_cert_load(path[1], &c->ask, err)) < 0 ||
            (r = cvm_amd_cert_load(path[2], &c->vcek, err)) < 0 ||
            (r = load_key(path[3], &c->vcek_key, err)) < 0)
                return r == -EINVAL || r == -EBADMSG ? corrupt(err, dir) : r;
        if ((r = cvm_amd_cert_check_signed_by(c->ark, c->ark, "ARK self-signature", err)) < 0 ||
            (r = cvm_amd_cert_check_signed_by(c->ask, c->ark, "ASK signed by ARK", err)) < 0 ||
            (r = cvm_amd_cert_check_signed_by(c->vcek, c->ask, "VCEK signed by ASK", err)) < 0 ||
            (r = cvm_vcek_info_get(c->vcek, &c->vcek_info, err)) < 0)
                return corrupt(err, dir);
        if (X509_check_private_key(c->vcek, c->vcek_key) != 1) {
                ERR_clear_error();
                cvm_error_set(err, -EINVAL, "%s is not the key of %s", files[3], files[2]);
                return corrupt(err, dir);
        }
        if (!c->vcek_info.has_tcb || c->vcek_info.hwid_len != CVM_SNP_CHIP_ID_SIZE) {
                cvm_error_set(err, -EINVAL, "%s lacks the SPL or 64-byte hwID extensions",
                              files[2]);
                return corrupt(err, dir);
        }
        *ret = CVM_TAKE_PTR(c);
        return 0;
}

int cvm_amd_sim_chain_open(const char *dir, const cvm_amd_sim_params *p, cvm_amd_chain **ret,
                           bool *ret_created, cvm_error *err) {
        int r = cvm_amd_sim_chain_load(dir, ret, err);
        if (ret_created)
                *ret_created = false;
        if (r != -ENOENT)
                return r;
        cvm_error_clear(err);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return cvm_error_set_errno(err, -errno, "creating %s", dir);
        CVM_CLEANUP(cvm_amd_chain_freep) cvm_amd_chain *c = NULL;
        if ((r = cvm_amd_sim_chain_generate(p, &c, err)) < 0 ||
            (r = cvm_amd_sim_chain_save(c, dir, err)) < 0)
                return r;
        if (ret_created)
                *ret_created = true;
        *ret = CVM_TAKE_PTR(c);
        return 0;
}
