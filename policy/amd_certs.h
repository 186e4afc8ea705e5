/* AMD's SEV-SNP certificate chain: ARK (AMD Root Key, RSA-4096, self-signed)
 * -> ASK (AMD SEV Key, RSA-4096) -> VCEK (Versioned Chip Endorsement Key,
 * EC P-384, which signs attestation reports), every signature RSASSA-PSS
 * with SHA-384. The VCEK carries AMD's KDS extensions: the TCB it was issued
 * for and the chip's hwID. This module loads AMD's real formats and makes a
 * simulated chain of the same shape for the sim host. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/types.h>

#include "cleanup.h"
#include "error.h"
#include "snp_report.h"

/* KDS extension OIDs (VCEK Certificate and KDS Interface Specification). */
#define CVM_AMD_OID_STRUCT_VERSION "1.3.6.1.4.1.3704.1.1"
#define CVM_AMD_OID_PRODUCT_NAME "1.3.6.1.4.1.3704.1.2"
#define CVM_AMD_OID_BL_SPL "1.3.6.1.4.1.3704.1.3.1"
#define CVM_AMD_OID_TEE_SPL "1.3.6.1.4.1.3704.1.3.2"
#define CVM_AMD_OID_SNP_SPL "1.3.6.1.4.1.3704.1.3.3"
#define CVM_AMD_OID_UCODE_SPL "1.3.6.1.4.1.3704.1.3.8"
#define CVM_AMD_OID_HWID "1.3.6.1.4.1.3704.1.4"

/* File names of the simulated chain in its directory. */
#define CVM_AMD_SIM_ARK_FILE "ark.pem"
#define CVM_AMD_SIM_ASK_FILE "ask.pem"
#define CVM_AMD_SIM_VCEK_FILE "vcek.der"
#define CVM_AMD_SIM_KEY_FILE "vcek.key"

#define CVM_AMD_CERT_FILE_MAX (64u * 1024) /* Larger certificate files are refused. */
#define CVM_AMD_PRODUCT_NAME_MAX 32

/* What a VCEK's KDS extensions say. Absent extensions are false/0. */
typedef struct cvm_vcek_info {
        bool has_struct_version;
        unsigned struct_version;
        char product_name[CVM_AMD_PRODUCT_NAME_MAX]; /* "" when absent. */
        bool has_tcb;    /* All four of blSPL, teeSPL, snpSPL and ucodeSPL are present. */
        cvm_snp_tcb tcb; /* As the report's REPORTED_TCB would carry it. */
        size_t hwid_len; /* 0 (absent, e.g. a VLEK), 64, or 8 (Turin). */
        uint8_t hwid[CVM_SNP_CHIP_ID_SIZE];
} cvm_vcek_info;

/* Reads the KDS extensions of an untrusted VCEK. Fails with -EINVAL, naming
 * the OID, for a malformed or duplicated extension or an SPL above 255. */
int cvm_vcek_info_get(X509 *vcek, cvm_vcek_info *ret, cvm_error *err);

typedef struct cvm_amd_chain {
        X509 *ark;
        X509 *ask;
        X509 *vcek;
        EVP_PKEY *vcek_key;      /* The simulated VCEK's private key; NULL for a real chain. */
        cvm_vcek_info vcek_info; /* Of vcek. */
} cvm_amd_chain;

/* Frees the certificates, the key and c itself; NULL-safe. */
void cvm_amd_chain_free(cvm_amd_chain *c);
CVM_DEFINE_CLEANUP(cvm_amd_chain *, cvm_amd_chain_free)

/* What a simulated chain is made for. */
typedef struct cvm_amd_sim_params {
        cvm_snp_tcb tcb;                       /* The VCEK's SPLs. */
        bool has_chip_id;                      /* false: a random chip ID. */
        uint8_t chip_id[CVM_SNP_CHIP_ID_SIZE]; /* The VCEK's hwID. */
        const char *product;                   /* NULL: "Milan". */
        unsigned rsa_bits;                     /* ARK and ASK key size; 0: 4096 as AMD. */
} cvm_amd_sim_params;

typedef enum cvm_amd_cert_kind {
        CVM_AMD_CERT_ARK,
        CVM_AMD_CERT_ASK,
        CVM_AMD_CERT_VCEK,
} cvm_amd_cert_kind;

/* Key generation: RSA of bits (2048..8192), EC P-384. */
int cvm_amd_key_rsa(unsigned bits, EVP_PKEY **ret, cvm_error *err);
int cvm_amd_key_p384(EVP_PKEY **ret, cvm_error *err);

/* Issues one simulated certificate for subject_key, signed with RSASSA-PSS
 * SHA-384 by issuer_key (issuer NULL: self-signed, for an ARK). A VCEK gets
 * the KDS extensions from p. The building block of the simulated chain,
 * exposed so tests can build broken chains. */
int cvm_amd_sim_issue(cvm_amd_cert_kind kind, EVP_PKEY *subject_key, X509 *issuer,
                      EVP_PKEY *issuer_key, const cvm_amd_sim_params *p, X509 **ret,
                      cvm_error *err);

/* Makes a fresh simulated chain; the ARK and ASK private keys are dropped. */
int cvm_amd_sim_chain_generate(const cvm_amd_sim_params *p, cvm_amd_chain **ret, cvm_error *err);

/* Writes ark.pem, ask.pem, vcek.der and vcek.key (mode 0600) into dir,
 * each atomically (temporary file, fsync, rename). */
int cvm_amd_sim_chain_save(const cvm_amd_chain *c, const char *dir, cvm_error *err);

/* Loads a chain saved by cvm_amd_sim_chain_save and checks it: each file
 * parses, the signatures link ARK -> ASK -> VCEK, vcek.key is the VCEK's key
 * and is private to its owner, and the VCEK carries a TCB and a 64-byte
 * hwID. -ENOENT when none of the four files exists; -EINVAL for a partial
 * or corrupt set, the message naming the file and how to recover. */
int cvm_amd_sim_chain_load(const char *dir, cvm_amd_chain **ret, cvm_error *err);

/* Loads the chain in dir or, when there is none, generates one from p,
 * creating dir (0700) if needed, and saves it. On load p is ignored: callers
 * take the TCB and chip ID from the chain's vcek_info. */
int cvm_amd_sim_chain_open(const char *dir, const cvm_amd_sim_params *p, cvm_amd_chain **ret,
                           bool *ret_created, cvm_error *err);

/* AMD's real formats. A certificate as DER (a VCEK as the KDS serves it) or
 * PEM (an ARK to pin), detected by the PEM header; exactly one certificate.
 * Trailing bytes after DER are refused. */
int cvm_amd_cert_parse(const uint8_t *buf, size_t len, X509 **ret, cvm_error *err);
/* AMD's cert_chain.pem: the ASK then the ARK, PEM, nothing more. */
int cvm_amd_cert_chain_parse(const uint8_t *buf, size_t len, X509 **ret_ask, X509 **ret_ark,
                             cvm_error *err);
/* The same, from files (at most CVM_AMD_CERT_FILE_MAX bytes). */
int cvm_amd_cert_load(const char *path, X509 **ret, cvm_error *err);
int cvm_amd_cert_chain_load(const char *path, X509 **ret_ask, X509 **ret_ark, cvm_error *err);

/* A certificate's DER or PEM encoding, malloc'ed (free()), for relaying. */
int cvm_amd_cert_der(X509 *cert, uint8_t **ret, size_t *ret_len, cvm_error *err);
int cvm_amd_cert_pem(X509 *cert, char **ret, size_t *ret_len, cvm_error *err);

/* Checks that issuer's key made cert's signature and that the signature is
 * RSASSA-PSS with SHA-384, as all of AMD's are. -EBADMSG when not; the
 * message says which. what names the link ("ASK signed by ARK"). */
int cvm_amd_cert_check_signed_by(X509 *cert, X509 *issuer, const char *what, cvm_error *err);
