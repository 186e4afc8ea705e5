/* Fuzzes the attestation report parser, and for what it accepts the encoder
 * (for ECDSA reports, whose every byte the parser keeps, parse then encode
 * must give back the same bytes) and the verifier with a fixed P-384 key
 * (the signature must simply not verify). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "snp_report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        cvm_snp_report r;
        cvm_error err;
        if (cvm_snp_report_parse(data, size, &r, &err) < 0)
                return 0;
        uint8_t out[CVM_SNP_REPORT_SIZE];
        if (cvm_snp_report_encode(&r, out, &err) < 0)
                abort();
        if (r.signature_algo == CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384 &&
            memcmp(out, data, CVM_SNP_REPORT_SIZE) != 0)
                abort();
        if (!key)
                key = EVP_EC_gen("P-384");
        if (key && cvm_snp_report_verify(data, key, &err) == 0)
                abort();
        return 0;
}
