/* cvmctl attest: verify, on the guest owner's side, that a function runs in a
 * genuine SEV-SNP VM launched from the image the owner expects. The daemon
 * only relays the report and certificates; every check runs here.
 *
 *   cvmctl attest FUNCTION (--expect-measurement HEX | --firmware F ...) --ark FILE
 *   cvmctl attest verify --report FILE --vcek FILE [--chain FILE] [--ark FILE] ... */
#include <errno.h>
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"
#include "amd_certs.h"
#include "attest_verify.h"
#include "cleanup.h"
#include "ctl.h"
#include "file.h"
#include "path.h"

/* A report file is 1184 bytes; anything near this bound is not one. */
#define ATTEST_REPORT_FILE_MAX (64u << 10)

typedef struct attest_opts {
        const char *expect_hex;
        cvmctl_image image;
        const char *ark, *policy, *vm;
        /* verify */
        const char *report, *vcek, *chain, *report_data_hex;
} attest_opts;

static void x509_freep(X509 **x) {
        X509_free(*x);
}

static int usage_error(const char *msg) {
        fprintf(stderr, "cvmctl attest: %s\nUsage: cvmctl %s\n", msg, cvmctl_cmd_attest.usage);
        return CVMCTL_EXIT_USAGE;
}

/* Prints each check; returns the exit status. Unpinned roots fail: the host
 * could have made the whole chain itself. */
static int report_result(cvmctl *ctl, const cvm_attest_result *res, const char *vm_id) {
        bool ok = res->ok && res->root_pinned;
        if (ctl->json) {
                json_t *checks = json_array();
                for (size_t i = 0; i < res->nchecks; i++)
                        json_array_append_new(
                                checks,
                                json_pack("{s:s, s:s, s:s}", "name", res->checks[i].name, "status",
                                          cvm_check_status_name(res->checks[i].status), "message",
                                          res->checks[i].message));
                json_t *doc = json_pack("{s:b, s:b, s:s?, s:o}", "verified", ok, "root_pinned",
                                        res->root_pinned, "vm_id", vm_id, "checks", checks);
                cvmctl_print_json(doc);
                json_decref(doc);
        } else {
                for (size_t i = 0; i < res->nchecks; i++) {
                        const cvm_check *c = &res->checks[i];
                        printf("%-7s %-20s %s\n",
                               c->status == CVM_CHECK_PASS   ? "pass"
                               : c->status == CVM_CHECK_FAIL ? "FAIL"
                                                             : "skipped",
                               c->name, c->message);
                }
                if (!res->root_pinned)
                        printf("FAIL    %-20s %s\n", "root_of_trust",
                               "no pinned ARK (--ark): the host could have made this chain");
                printf("%s\n", ok ? "verified" : "NOT verified");
        }
        return ok ? CVMCTL_EXIT_OK : CVMCTL_EXIT_FAILURE;
}

static int load_expectations(const attest_opts *o, uint8_t measurement[48], bool *have,
                             cvm_attest_policy *policy, X509 **pinned, cvm_error *err) {
        int r;
        *have = false;
        if (o->expect_hex) {
                if (strlen(o->expect_hex) != 96 ||
                    cvm_snp_unhex(o->expect_hex, measurement, 48) < 0)
                        return cvm_error_set(err, -EINVAL,
                                             "--expect-measurement must be 96 hex digits");
                *have = true;
        } else if (o->image.firmware) {
                if ((r = cvmctl_measure_image(&o->image, measurement, NULL, err)) < 0)
                        return cvm_error_prefix(err, "measuring the expected image: ");
                *have = true;
        }
        if (o->policy && (r = cvm_attest_policy_load(o->policy, policy, err)) < 0)
                return r;
        if (o->ark && (r = cvm_amd_cert_load(o->ark, pinned, err)) < 0)
                return cvm_error_prefix(err, "--ark: ");
        return 0;
}

/* Splits the relayed chain (VCEK, ASK, ARK as PEM). */
static int parse_chain_pem(const char *pem, X509 **vcek, X509 **ask, X509 **ark, cvm_error *err) {
        BIO *bio = BIO_new_mem_buf(pem, -1);
        X509 *certs[3] = {NULL, NULL, NULL};
        int n = 0;
        while (bio && n < 3 && (certs[n] = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
                n++;
        BIO_free(bio);
        if (n != 3) {
                for (int i = 0; i < n; i++)
                        X509_free(certs[i]);
                return cvm_error_set(err, -EINVAL,
                                     "the daemon's certificate chain does not hold a VCEK, an ASK "
                                     "and an ARK");
        }
        *vcek = certs[0];
        *ask = certs[1];
        *ark = certs[2];
        return 0;
}

static int pem_key_der(const char *pem, uint8_t **ret, size_t *ret_len, cvm_error *err) {
        BIO *bio = BIO_new_mem_buf(pem, -1);
        EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        unsigned char *der = NULL;
        int len = key ? i2d_PUBKEY(key, &der) : -1;
        EVP_PKEY_free(key);
        if (len <= 0)
                return cvm_error_set(err, -EINVAL, "the VM's public key is not a PEM public key");
        *ret = der;
        *ret_len = (size_t)len;
        return 0;
}

static int b64_decode(const char *s, uint8_t **ret, size_t *ret_len, cvm_error *err) {
        size_t n = strlen(s);
        uint8_t *out = malloc(n / 4 * 3 + 3);
        int len = out ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : -1;
        if (len < 0 || n % 4) {
                free(out);
                return cvm_error_set(err, -EINVAL, "the report is not base64");
        }
        /* EVP_DecodeBlock counts the padding as data. */
        while (n && s[n - 1] == '=' && len > 0) {
                n--;
                len--;
        }
        *ret = out;
        *ret_len = (size_t)len;
        return 0;
}

static int run_live(cvmctl *ctl, const char *function, const attest_opts *o) {
        cvm_error err = {0};
        uint8_t measurement[48];
        bool have_measurement;
        cvm_attest_policy policy;
        cvm_attest_policy_init(&policy);
        CVM_CLEANUP(x509_freep) X509 *pinned = NULL, *vcek = NULL, *ask = NULL, *ark = NULL;
        _cleanup_free_ uint8_t *report = NULL, *key_der = NULL;
        size_t report_len = 0, key_len = 0;
        json_t *doc = NULL;
        uint8_t nonce[64], report_data[64];
        int r = load_expectations(o, measurement, &have_measurement, &policy, &pinned, &err);
        if (r >= 0 && RAND_bytes(nonce, sizeof(nonce)) != 1)
                r = cvm_error_set(&err, -EIO, "no random nonce from OpenSSL");
        if (r >= 0) {
                char hex[129], path[256];
                cvm_snp_hex(nonce, sizeof(nonce), hex);
                snprintf(path, sizeof(path),
                         o->vm ? "/v1/vms/%s/attestation" : "/v1/functions/%s/attestation",
                         o->vm ? o->vm : function);
                json_t *body = json_pack("{s:s}", "nonce", hex);
                r = cvmctl_request_json(ctl->client, "POST", path, body, &doc, &err);
                json_decref(body);
        }
        const char *report_b64 = json_string_value(json_object_get(doc, "report"));
        const char *chain = json_string_value(json_object_get(doc, "cert_chain"));
        const char *key_pem = json_string_value(json_object_get(doc, "public_key"));
        if (r >= 0 && (!report_b64 || !chain || !key_pem))
                r = cvm_error_set(&err, -EPROTO,
                                  "the daemon's answer lacks a report, chain or key");
        if (r >= 0)
                r = b64_decode(report_b64, &report, &report_len, &err);
        if (r >= 0)
                r = parse_chain_pem(chain, &vcek, &ask, &ark, &err);
        if (r >= 0)
                r = pem_key_der(key_pem, &key_der, &key_len, &err);
        /* REPORT_DATA must bind our nonce to the key the VM showed us. */
        if (r >= 0)
                r = cvm_agent_attest_report_data(key_der, key_len, nonce, report_data, &err);
        if (r < 0) {
                json_decref(doc);
                cvm_attest_policy_done(&policy);
                return cvmctl_fail(&err);
        }
        cvm_attest_input in = {.report = report,
                               .report_len = report_len,
                               .vcek = vcek,
                               .ask = ask,
                               .ark = ark,
                               .pinned_ark = pinned,
                               .expected_measurement = have_measurement ? measurement : NULL,
                               .expected_report_data = report_data,
                               .policy = &policy,
                               .function = o->vm ? NULL : function};
        cvm_attest_result res;
        cvm_attest_verify(&in, &res, &err);
        int status = report_result(ctl, &res, json_string_value(json_object_get(doc, "vm_id")));
        if (!ctl->json && status == CVMCTL_EXIT_OK)
                printf("public key of the VM (for end-to-end encryption):\n%s", key_pem);
        json_decref(doc);
        cvm_attest_policy_done(&policy);
        return status;
}

static int run_verify(cvmctl *ctl, const attest_opts *o) {
        if (!o->report || !o->vcek)
                return usage_error("attest verify needs --report and --vcek");
        cvm_error err = {0};
        uint8_t measurement[48], report_data[64];
        bool have_measurement;
        cvm_attest_policy policy;
        cvm_attest_policy_init(&policy);
        CVM_CLEANUP(x509_freep) X509 *pinned = NULL, *vcek = NULL, *ask = NULL, *ark = NULL;
        _cleanup_free_ uint8_t *report = NULL;
        size_t report_len = 0;
        int r = load_expectations(o, measurement, &have_measurement, &policy, &pinned, &err);
        if (r >= 0 && o->report_data_hex &&
            (strlen(o->report_data_hex) != 128 ||
             cvm_snp_unhex(o->report_data_hex, report_data, 64) < 0))
                r = cvm_error_set(&err, -EINVAL, "--report-data must be 128 hex digits");
        if (r >= 0)
                r = cvm_file_read(o->report, ATTEST_REPORT_FILE_MAX, &report, &report_len, NULL,
                                  &err);
        if (r >= 0)
                r = cvm_amd_cert_load(o->vcek, &vcek, &err);
        /* Without --chain the pinned ARK's chain file is AMD's cert_chain.pem. */
        if (r >= 0 && o->chain)
                r = cvm_amd_cert_chain_load(o->chain, &ask, &ark, &err);
        else if (r >= 0)
                r = cvm_error_set(&err, -EINVAL,
                                  "--chain (AMD's cert_chain.pem: ASK then ARK) "
                                  "is required");
        if (r < 0) {
                cvm_attest_policy_done(&policy);
                return cvmctl_fail(&err);
        }
        cvm_attest_input in = {.report = report,
                               .report_len = report_len,
                               .vcek = vcek,
                               .ask = ask,
                               .ark = ark,
                               .pinned_ark = pinned,
                               .expected_measurement = have_measurement ? measurement : NULL,
                               .expected_report_data = o->report_data_hex ? report_data : NULL,
                               .policy = &policy};
        cvm_attest_result res;
        cvm_attest_verify(&in, &res, &err);
        int status = report_result(ctl, &res, NULL);
        cvm_attest_policy_done(&policy);
        return status;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"expect-measurement", required_argument, NULL, 'm'},
                {"firmware", required_argument, NULL, 'f'},
                {"kernel", required_argument, NULL, 'k'},
                {"initrd", required_argument, NULL, 'i'},
                {"append", required_argument, NULL, 'a'},
                {"vcpus", required_argument, NULL, 'n'},
                {"vcpu-type", required_argument, NULL, 't'},
                {"guest-features", required_argument, NULL, 'g'},
                {"ark", required_argument, NULL, 'A'},
                {"policy", required_argument, NULL, 'p'},
                {"vm", required_argument, NULL, 'v'},
                {"report", required_argument, NULL, 'r'},
                {"vcek", required_argument, NULL, 'V'},
                {"chain", required_argument, NULL, 'c'},
                {"report-data", required_argument, NULL, 'd'},
                /* Optional marker before the image flags, as in the docs' examples. */
                {"expect-image", no_argument, NULL, 'E'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        attest_opts o = {0};
        bool expect_image = false;
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'm': o.expect_hex = optarg; break;
                case 'f': o.image.firmware = optarg; break;
                case 'k': o.image.kernel = optarg; break;
                case 'i': o.image.initrd = optarg; break;
                case 'a': o.image.append = optarg; break;
                case 'n': o.image.vcpus = (unsigned)strtoul(optarg, NULL, 10); break;
                case 't': o.image.vcpu_type = optarg; break;
                case 'g': o.image.guest_features = strtoull(optarg, NULL, 0); break;
                case 'A': o.ark = optarg; break;
                case 'p': o.policy = optarg; break;
                case 'v': o.vm = optarg; break;
                case 'r': o.report = optarg; break;
                case 'V': o.vcek = optarg; break;
                case 'c': o.chain = optarg; break;
                case 'd': o.report_data_hex = optarg; break;
                case 'E': expect_image = true; break;
                case 'h':
                        printf("Usage: cvmctl %s\n%s\n", cvmctl_cmd_attest.usage,
                               cvmctl_cmd_attest.summary);
                        return CVMCTL_EXIT_OK;
                default: return CVMCTL_EXIT_USAGE;
                }
        }
        if (o.expect_hex && (o.image.firmware || expect_image))
                return usage_error("--expect-measurement and --firmware exclude each other");
        /* The image's firmware defaults to cvmd's boot verifier, as launch images do. */
        _cleanup_free_ char *verifier = NULL;
        if (!o.expect_hex && !o.image.firmware &&
            (expect_image || o.image.kernel || o.image.initrd || o.image.append)) {
                if (!(verifier = cvm_path_shipped(CVM_PATH_VERIFIER)))
                        return cvmctl_fail(
                                &(cvm_error){.code = -ENOMEM, .message = "out of memory"});
                o.image.firmware = verifier;
        }
        if (optind < argc && strcmp(argv[optind], "verify") == 0 && optind + 1 == argc)
                return run_verify(ctl, &o);
        if (optind + 1 != argc && !(o.vm && optind == argc))
                return usage_error("name one function (or --vm ID), or use 'attest verify'");
        if (!o.expect_hex && !o.image.firmware)
                return usage_error("say what to expect: --expect-measurement HEX or --expect-image "
                                   "[--firmware FILE ...]");
        return run_live(ctl, o.vm ? NULL : argv[optind], &o);
}

const cvmctl_command cvmctl_cmd_attest = {
        .name = "attest",
        .summary = "verify that a function runs in a genuine SEV-SNP VM of the expected image",
        .usage = "attest FUNCTION (--expect-measurement HEX | --expect-image [--firmware FILE]\n"
                 "           [--kernel FILE] [--initrd FILE] [--append CMDLINE] [--vcpus N]\n"
                 "           [--vcpu-type T] [--guest-features HEX]) --ark FILE [--policy FILE] "
                 "[--json]\n"
                 "       cvmctl attest --vm ID (--expect-measurement HEX | ...) --ark FILE\n"
                 "       cvmctl attest verify --report FILE --vcek FILE --chain FILE [--ark FILE]\n"
                 "           [--expect-measurement HEX | --firmware FILE ...] [--report-data HEX]\n"
                 "The expected image's firmware defaults to cvmd's boot verifier. Every check is\n"
                 "printed; the exit status is 0 only if all pass with a pinned ARK.\n"
                 "Example: cvmctl attest hello --expect-image --kernel vmlinuz --initrd initrd.gz "
                 "--ark /var/lib/cvmd/sim-amd/ark.pem",
        .run = run,
};
