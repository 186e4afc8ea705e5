#include "attest_verify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "amd_certs.h"

const char *cvm_check_status_name(cvm_check_status s) {
        switch (s) {
        case CVM_CHECK_PASS: return "pass";
        case CVM_CHECK_FAIL: return "fail";
        default: return "skipped";
        }
}

const cvm_check *cvm_attest_find(const cvm_attest_result *res, const char *name) {
        for (size_t i = 0; res && i < res->nchecks; i++)
                if (strcmp(res->checks[i].name, name) == 0)
                        return &res->checks[i];
        return NULL;
}

__attribute__((format(printf, 4, 5))) static cvm_check_status
record(cvm_attest_result *res, const char *name, cvm_check_status status, const char *fmt, ...) {
        if (res->nchecks >= CVM_ATTEST_MAX_CHECKS)
                return status;
        cvm_check *c = &res->checks[res->nchecks++];
        c->name = name;
        c->status = status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->message, sizeof(c->message), fmt, ap);
        va_end(ap);
        return status;
}

static void record_err(cvm_attest_result *res, const char *name, int r, const cvm_error *e,
                       const char *ok) {
        if (r < 0)
                record(res, name, CVM_CHECK_FAIL, "%s", e->message);
        else
                record(res, name, CVM_CHECK_PASS, "%s", ok);
}

/* Digest comparisons are of public values, but constant time costs nothing. */
static bool same(const void *a, const void *b, size_t n) {
        return CRYPTO_memcmp(a, b, n) == 0;
}

static void check_chain(const cvm_attest_input *in, cvm_attest_result *res) {
        cvm_error e = {0};
        int r;
        bool ark_ok = false;
        if (!in->ark) {
                record(res, CVM_CHECK_ARK_SELF_SIGNED, CVM_CHECK_FAIL, "no ARK certificate given");
        } else {
                r = cvm_amd_cert_check_signed_by(in->ark, in->ark, "ARK self-signature", &e);
                record_err(res, CVM_CHECK_ARK_SELF_SIGNED, r, &e,
                           "ARK is self-signed (RSASSA-PSS SHA-384)");
                ark_ok = r >= 0;
        }

        if (!in->pinned_ark) {
                record(res, CVM_CHECK_ARK_PINNED, CVM_CHECK_SKIPPED,
                       "no pinned ARK given: the chain's root is not proven to be AMD's");
        } else if (!in->ark) {
                record(res, CVM_CHECK_ARK_PINNED, CVM_CHECK_FAIL, "no ARK certificate given");
        } else {
                EVP_PKEY *a = X509_get0_pubkey(in->ark), *b = X509_get0_pubkey(in->pinned_ark);
                ERR_clear_error();
                /* The key is what signs; comparing it pins the root even if
                 * AMD re-issues the ARK certificate with new dates. */
                if (a && b && EVP_PKEY_eq(a, b) == 1) {
                        record(res, CVM_CHECK_ARK_PINNED, CVM_CHECK_PASS,
                               "ARK public key equals the pinned ARK's");
                        res->root_pinned = ark_ok;
                } else {
                        record(res, CVM_CHECK_ARK_PINNED, CVM_CHECK_FAIL,
                               "ARK public key differs from the pinned ARK's");
                }
                ERR_clear_error();
        }

        if (!in->ask) {
                record(res, CVM_CHECK_ASK_SIGNED, CVM_CHECK_FAIL, "no ASK certificate given");
        } else if (!in->ark) {
                record(res, CVM_CHECK_ASK_SIGNED, CVM_CHECK_SKIPPED, "no ARK to check against");
        } else {
                r = cvm_amd_cert_check_signed_by(in->ask, in->ark, "ASK signed by ARK", &e);
                record_err(res, CVM_CHECK_ASK_SIGNED, r, &e, "ASK is signed by the ARK");
        }

        if (!in->vcek) {
                record(res, CVM_CHECK_VCEK_SIGNED, CVM_CHECK_FAIL, "no VCEK certificate given");
        } else if (!in->ask) {
                record(res, CVM_CHECK_VCEK_SIGNED, CVM_CHECK_SKIPPED, "no ASK to check against");
        } else {
                r = cvm_amd_cert_check_signed_by(in->vcek, in->ask, "VCEK signed by ASK", &e);
                record_err(res, CVM_CHECK_VCEK_SIGNED, r, &e, "VCEK is signed by the ASK");
        }
}

static void check_guest_policy(const cvm_snp_report *rep, const cvm_attest_policy *pol,
                               cvm_attest_result *res) {
        uint64_t p = rep->policy;
        if (!(p & CVM_SNP_POLICY_RESERVED_ONE) || (p & CVM_SNP_POLICY_MBZ))
                record(res, CVM_CHECK_POLICY_RESERVED, CVM_CHECK_FAIL,
                       "guest policy 0x%" PRIx64 " has bit 17 clear or bits 63:26 set", p);
        else
                record(res, CVM_CHECK_POLICY_RESERVED, CVM_CHECK_PASS,
                       "guest policy 0x%" PRIx64 " has its reserved bits right", p);

        if ((p & CVM_SNP_POLICY_DEBUG) && !pol->allow_debug)
                record(res, CVM_CHECK_POLICY_DEBUG, CVM_CHECK_FAIL,
                       "guest policy allows debugging (bit 19): the host can decrypt the guest");
        else
                record(res, CVM_CHECK_POLICY_DEBUG, CVM_CHECK_PASS, "debugging %s",
                       p & CVM_SNP_POLICY_DEBUG ? "allowed by the guest and the attestation policy"
                                                : "disallowed");

        if ((p & CVM_SNP_POLICY_MIGRATE_MA) && !pol->allow_migration)
                record(res, CVM_CHECK_POLICY_MIGRATION, CVM_CHECK_FAIL,
                       "guest policy allows a migration agent (bit 18)");
        else
                record(res, CVM_CHECK_POLICY_MIGRATION, CVM_CHECK_PASS, "migration agent %s",
                       p & CVM_SNP_POLICY_MIGRATE_MA ? "allowed" : "disallowed");

        if (!pol->require_no_smt)
                record(res, CVM_CHECK_POLICY_SMT, CVM_CHECK_PASS,
                       "SMT not restricted (policy %s, platform %s)",
                       p & CVM_SNP_POLICY_SMT ? "allows SMT" : "forbids SMT",
                       rep->platform_info & CVM_SNP_PLATFORM_SMT_EN ? "SMT on" : "SMT off");
        else if (p & CVM_SNP_POLICY_SMT)
                record(res, CVM_CHECK_POLICY_SMT, CVM_CHECK_FAIL,
                       "guest policy allows SMT (bit 16) but no SMT is required");
        else if (rep->platform_info & CVM_SNP_PLATFORM_SMT_EN)
                record(res, CVM_CHECK_POLICY_SMT, CVM_CHECK_FAIL,
                       "platform has SMT enabled (PLATFORM_INFO bit 0) but no SMT is required");
        else
                record(res, CVM_CHECK_POLICY_SMT, CVM_CHECK_PASS, "SMT forbidden and off");

        unsigned major = cvm_snp_policy_abi_major(p), minor = cvm_snp_policy_abi_minor(p);
        if (major < pol->abi_major || (major == pol->abi_major && minor < pol->abi_minor))
                record(res, CVM_CHECK_POLICY_ABI, CVM_CHECK_FAIL,
                       "guest policy's ABI minimum %u.%u is below the required %u.%u", major, minor,
                       pol->abi_major, pol->abi_minor);
        else
                record(res, CVM_CHECK_POLICY_ABI, CVM_CHECK_PASS,
                       "guest policy's ABI minimum %u.%u is at least %u.%u", major, minor,
                       pol->abi_major, pol->abi_minor);

        if (rep->vmpl > 3 || !(pol->vmpl_mask & (1u << rep->vmpl)))
                record(res, CVM_CHECK_VMPL, CVM_CHECK_FAIL,
                       "report is from VMPL %" PRIu32 ", which the policy does not allow",
                       rep->vmpl);
        else
                record(res, CVM_CHECK_VMPL, CVM_CHECK_PASS, "report is from VMPL %" PRIu32,
                       rep->vmpl);
}

static void check_measurements(const cvm_attest_input *in, const cvm_snp_report *rep,
                               const cvm_attest_policy *pol, cvm_attest_result *res) {
        char got[2 * CVM_SNP_MEASUREMENT_SIZE + 1], want[2 * CVM_SNP_MEASUREMENT_SIZE + 1];
        cvm_snp_hex(rep->measurement, CVM_SNP_MEASUREMENT_SIZE, got);
        if (!in->expected_measurement)
                record(res, CVM_CHECK_MEASUREMENT, CVM_CHECK_SKIPPED,
                       "no expected measurement given (report has %s)", got);
        else if (same(rep->measurement, in->expected_measurement, CVM_SNP_MEASUREMENT_SIZE))
                record(res, CVM_CHECK_MEASUREMENT, CVM_CHECK_PASS, "measurement is %s", got);
        else
                record(res, CVM_CHECK_MEASUREMENT, CVM_CHECK_FAIL, "measurement is %s, expected %s",
                       got, cvm_snp_hex(in->expected_measurement, CVM_SNP_MEASUREMENT_SIZE, want));

        /* Once a policy lists measurements, a function it does not list is
         * denied rather than waved through. */
        if (!in->function) {
                record(res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_SKIPPED,
                       "no function named to look up in the policy");
                return;
        }
        const cvm_attest_function *f = cvm_attest_policy_function(pol, in->function);
        if (!f) {
                if (pol->nfunctions == 0)
                        record(res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_SKIPPED,
                               "the policy lists no measurements");
                else
                        record(res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_FAIL,
                               "the policy lists no measurements for function '%.64s'",
                               in->function);
                return;
        }
        for (size_t i = 0; i < f->n; i++)
                if (same(rep->measurement, f->digests[i], CVM_SNP_MEASUREMENT_SIZE)) {
                        record(res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_PASS,
                               "measurement is allowed for function '%.64s'", in->function);
                        return;
                }
        record(res, CVM_CHECK_MEASUREMENT_ALLOWED, CVM_CHECK_FAIL,
               "measurement %.16s... is not among the %zu allowed for function '%.64s'", got, f->n,
               in->function);
}

static void check_vcek_binding(const cvm_attest_input *in, const cvm_snp_report *rep,
                               cvm_attest_result *res) {
        cvm_snp_tcb reported = cvm_snp_tcb_decode(rep->reported_tcb);
        char a[64], b[64];
        cvm_vcek_info info;
        cvm_error e = {0};
        if (!in->vcek || cvm_vcek_info_get(in->vcek, &info, &e) < 0) {
                const char *why = in->vcek ? e.message : "no VCEK certificate given";
                record(res, CVM_CHECK_VCEK_TCB, CVM_CHECK_FAIL, "%s", why);
                record(res, CVM_CHECK_CHIP_ID, CVM_CHECK_FAIL, "%s", why);
                return;
        }
        /* The VCEK is derived from the chip's secrets at one TCB; a report
         * naming another TCB was not signed by the key this certificate is for. */
        if (!info.has_tcb)
                record(res, CVM_CHECK_VCEK_TCB, CVM_CHECK_FAIL,
                       "VCEK carries no SPL extensions to compare with REPORTED_TCB");
        else if (!cvm_snp_tcb_equal(&info.tcb, &reported))
                record(res, CVM_CHECK_VCEK_TCB, CVM_CHECK_FAIL,
                       "VCEK is for TCB %s but the report's REPORTED_TCB is %s",
                       cvm_snp_tcb_format(&info.tcb, a, sizeof(a)),
                       cvm_snp_tcb_format(&reported, b, sizeof(b)));
        else
                record(res, CVM_CHECK_VCEK_TCB, CVM_CHECK_PASS, "VCEK TCB equals REPORTED_TCB (%s)",
                       cvm_snp_tcb_format(&reported, a, sizeof(a)));

        if (rep->flags & CVM_SNP_FLAG_MASK_CHIP_KEY)
                record(res, CVM_CHECK_CHIP_ID, CVM_CHECK_SKIPPED,
                       "the host masked CHIP_ID (MASK_CHIP_KEY)");
        else if (info.hwid_len == 0)
                record(res, CVM_CHECK_CHIP_ID, CVM_CHECK_SKIPPED, "VCEK carries no hwID");
        else if (!same(info.hwid, rep->chip_id, info.hwid_len))
                record(res, CVM_CHECK_CHIP_ID, CVM_CHECK_FAIL,
                       "report's CHIP_ID differs from the VCEK's hwID");
        else
                record(res, CVM_CHECK_CHIP_ID, CVM_CHECK_PASS,
                       "report's CHIP_ID equals the VCEK's hwID");
}

int cvm_attest_verify(const cvm_attest_input *in, cvm_attest_result *res, cvm_error *err) {
        if (!in || !res)
                return cvm_error_set(err, -EINVAL, "attestation: no input or result given");
        memset(res, 0, sizeof(*res));
        cvm_attest_policy defaults;
        cvm_attest_policy_init(&defaults);
        const cvm_attest_policy *pol = in->policy ? in->policy : &defaults;

        cvm_error e = {0};
        int r = cvm_snp_report_parse(in->report, in->report_len, &res->report, &e);
        record_err(res, CVM_CHECK_REPORT_FORMAT, r, &e, "report parses (ABI layout)");
        res->report_parsed = r >= 0;

        check_chain(in, res);

        if (!res->report_parsed) {
                static const char *const rest[] = {
                        CVM_CHECK_SIGNATURE_ALGO,   CVM_CHECK_SIGNING_KEY,
                        CVM_CHECK_REPORT_SIGNATURE, CVM_CHECK_REPORT_DATA,
                        CVM_CHECK_MEASUREMENT,      CVM_CHECK_MEASUREMENT_ALLOWED,
                        CVM_CHECK_POLICY_RESERVED,  CVM_CHECK_POLICY_DEBUG,
                        CVM_CHECK_POLICY_MIGRATION, CVM_CHECK_POLICY_SMT,
                        CVM_CHECK_POLICY_ABI,       CVM_CHECK_VMPL,
                        CVM_CHECK_TCB_MINIMUM,      CVM_CHECK_VCEK_TCB,
                        CVM_CHECK_CHIP_ID};
                for (size_t i = 0; i < CVM_ARRAY_SIZE(rest); i++)
                        record(res, rest[i], CVM_CHECK_SKIPPED, "the report did not parse");
        } else {
                const cvm_snp_report *rep = &res->report;
                if (rep->signature_algo == CVM_SNP_SIG_ALGO_ECDSA_P384_SHA384)
                        record(res, CVM_CHECK_SIGNATURE_ALGO, CVM_CHECK_PASS,
                               "SIGNATURE_ALGO is 1 (ECDSA P-384 with SHA-384)");
                else
                        record(res, CVM_CHECK_SIGNATURE_ALGO, CVM_CHECK_FAIL,
                               "SIGNATURE_ALGO is %" PRIu32 ", not 1 (ECDSA P-384 with SHA-384)",
                               rep->signature_algo);

                unsigned key = cvm_snp_report_signing_key(rep);
                if (key == CVM_SNP_SIGNING_KEY_VCEK)
                        record(res, CVM_CHECK_SIGNING_KEY, CVM_CHECK_PASS,
                               "report is signed with the VCEK");
                else
                        record(res, CVM_CHECK_SIGNING_KEY, CVM_CHECK_FAIL,
                               "report's SIGNING_KEY is %u (%s), not 0 (VCEK)", key,
                               key == CVM_SNP_SIGNING_KEY_VLEK   ? "VLEK"
                               : key == CVM_SNP_SIGNING_KEY_NONE ? "unsigned"
                                                                 : "reserved");

                if (!in->vcek) {
                        record(res, CVM_CHECK_REPORT_SIGNATURE, CVM_CHECK_FAIL,
                               "no VCEK certificate given");
                } else {
                        EVP_PKEY *k = X509_get0_pubkey(in->vcek);
                        ERR_clear_error();
                        r = k ? cvm_snp_report_verify(in->report, k, &e)
                              : cvm_error_set(&e, -EINVAL, "VCEK public key is unreadable");
                        ERR_clear_error();
                        record_err(res, CVM_CHECK_REPORT_SIGNATURE, r, &e,
                                   "report signature verifies with the VCEK's key");
                }

                char got[2 * CVM_SNP_REPORT_DATA_SIZE + 1], want[2 * CVM_SNP_REPORT_DATA_SIZE + 1];
                cvm_snp_hex(rep->report_data, CVM_SNP_REPORT_DATA_SIZE, got);
                if (!in->expected_report_data)
                        record(res, CVM_CHECK_REPORT_DATA, CVM_CHECK_SKIPPED,
                               "no expected REPORT_DATA given: the report may be a replay");
                else if (same(rep->report_data, in->expected_report_data, CVM_SNP_REPORT_DATA_SIZE))
                        record(res, CVM_CHECK_REPORT_DATA, CVM_CHECK_PASS,
                               "REPORT_DATA equals the expected nonce");
                else
                        record(res, CVM_CHECK_REPORT_DATA, CVM_CHECK_FAIL,
                               "REPORT_DATA %.32s... differs from the expected %.32s...", got,
                               cvm_snp_hex(in->expected_report_data, CVM_SNP_REPORT_DATA_SIZE,
                                           want));

                check_measurements(in, rep, pol, res);
                check_guest_policy(rep, pol, res);

                cvm_snp_tcb tcb = cvm_snp_tcb_decode(rep->reported_tcb);
                char a[64], b[64];
                if (cvm_snp_tcb_at_least(&tcb, &pol->min_tcb))
                        record(res, CVM_CHECK_TCB_MINIMUM, CVM_CHECK_PASS,
                               "REPORTED_TCB %s is at least %s",
                               cvm_snp_tcb_format(&tcb, a, sizeof(a)),
                               cvm_snp_tcb_format(&pol->min_tcb, b, sizeof(b)));
                else
                        record(res, CVM_CHECK_TCB_MINIMUM, CVM_CHECK_FAIL,
                               "REPORTED_TCB %s is below the minimum %s",
                               cvm_snp_tcb_format(&tcb, a, sizeof(a)),
                               cvm_snp_tcb_format(&pol->min_tcb, b, sizeof(b)));

                check_vcek_binding(in, rep, res);
        }

        /* A report signed by an unchained VCEK proves nothing however right
         * its fields look, so any failure fails the whole attestation. */
        res->ok = true;
        const cvm_check *first = NULL;
        for (size_t i = 0; i < res->nchecks; i++)
                if (res->checks[i].status == CVM_CHECK_FAIL) {
                        res->ok = false;
                        if (!first)
                                first = &res->checks[i];
                }
        if (!res->ok)
                return cvm_error_set(err, -EPERM, "attestation failed: %s: %s", first->name,
                                     first->message);
        return 0;
}
