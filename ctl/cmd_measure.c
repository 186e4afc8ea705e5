/* cvmctl measure: the SEV-SNP launch digest a guest launched from these
 * files will carry, computed locally (no daemon): what a guest owner
 * expects an attestation report's MEASUREMENT to be. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "file.h"
#include "path.h"
#include "snp_measure.h"

/* Launch files are bounded: firmware 16 MiB (the measurement's own limit),
 * kernel and initrd 1 GiB. */
#define MAX_FILE ((size_t)1 << 30)

int cvmctl_measure_image(const cvmctl_image *img, uint8_t digest[CVM_SNP_DIGEST_SIZE],
                         cvm_snp_launch_pages *pages, cvm_error *err) {
        _cleanup_free_ uint8_t *fw = NULL, *kern = NULL, *rd = NULL;
        size_t fw_len = 0, kern_len = 0, rd_len = 0;
        int r;
        if ((r = cvm_file_read(img->firmware, MAX_FILE, &fw, &fw_len, NULL, err)) < 0 ||
            (img->kernel &&
             (r = cvm_file_read(img->kernel, MAX_FILE, &kern, &kern_len, NULL, err)) < 0) ||
            (img->initrd &&
             (r = cvm_file_read(img->initrd, MAX_FILE, &rd, &rd_len, NULL, err)) < 0))
                return r;
        cvm_snp_launch_input in = {.firmware = fw,
                                   .firmware_len = fw_len,
                                   .kernel = kern,
                                   .kernel_len = kern_len,
                                   .initrd = rd,
                                   .initrd_len = rd_len,
                                   .cmdline = img->kernel ? (img->append ? img->append : "") : NULL,
                                   .vcpus = img->vcpus ? img->vcpus : 1,
                                   .vcpu_type = img->vcpu_type ? img->vcpu_type : "EPYC-v4",
                                   .guest_features = img->guest_features
                                                             ? img->guest_features
                                                             : CVM_SNP_GUEST_FEATURES_DEFAULT};
        return cvm_snp_measure(&in, digest, pages, err);
}

static const char *const type_names[] = {
        [CVM_SNP_PAGE_NORMAL] = "normal",   [CVM_SNP_PAGE_VMSA] = "vmsa",
        [CVM_SNP_PAGE_ZERO] = "zero",       [CVM_SNP_PAGE_UNMEASURED] = "unmeasured",
        [CVM_SNP_PAGE_SECRETS] = "secrets", [CVM_SNP_PAGE_CPUID] = "cpuid",
};

static int usage_error(const char *msg) {
        fprintf(stderr, "cvmctl measure: %s\nUsage: cvmctl %s\n", msg, cvmctl_cmd_measure.usage);
        return CVMCTL_EXIT_USAGE;
}

static int run(cvmctl *ctl, int argc, char **argv) {
        static const struct option opts[] = {
                {"firmware", required_argument, NULL, 'f'},
                {"kernel", required_argument, NULL, 'k'},
                {"initrd", required_argument, NULL, 'i'},
                {"append", required_argument, NULL, 'a'},
                {"vcpus", required_argument, NULL, 'n'},
                {"vcpu-type", required_argument, NULL, 't'},
                {"guest-features", required_argument, NULL, 'g'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *firmware = NULL, *kernel = NULL, *initrd = NULL, *append = NULL;
        const char *vcpu_type = "EPYC-v4";
        unsigned long vcpus = 1;
        unsigned long long features = CVM_SNP_GUEST_FEATURES_DEFAULT;
        char *end;
        int c;
        optind = 0; /* glibc: 0 resets the permutation state of the main parse. */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'f': firmware = optarg; break;
                case 'k': kernel = optarg; break;
                case 'i': initrd = optarg; break;
                case 'a': append = optarg; break;
                case 't': vcpu_type = optarg; break;
                case 'n':
                        vcpus = strtoul(optarg, &end, 10);
                        if (*end || !vcpus || vcpus > CVM_SNP_MAX_VCPUS)
                                return usage_error("--vcpus must be a number from 1 to 1024");
                        break;
                case 'g':
                        features = strtoull(optarg, &end, 0);
                        if (*end || !*optarg)
                                return usage_error("--guest-features must be a number (0x1)");
                        break;
                case 'h':
                        printf("Usage: cvmctl %s\n%s\n", cvmctl_cmd_measure.usage,
                               cvmctl_cmd_measure.summary);
                        return CVMCTL_EXIT_OK;
                default: return CVMCTL_EXIT_USAGE;
                }
        }
        /* cvmd's boot verifier, the default firmware of launch images. */
        _cleanup_free_ char *verifier = NULL;
        if (!firmware) {
                if (!(verifier = cvm_path_shipped(CVM_PATH_VERIFIER)))
                        return usage_error("out of memory");
                firmware = verifier;
        }
        if (optind < argc)
                return usage_error("unexpected argument");
        if ((initrd || append) && !kernel)
                return usage_error("--initrd and --append need --kernel");
        cvm_error err = {0};
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        cvm_snp_launch_pages pages;
        cvmctl_image img = {.firmware = firmware,
                            .kernel = kernel,
                            .initrd = initrd,
                            .append = append,
                            .vcpus = (unsigned)vcpus,
                            .vcpu_type = vcpu_type,
                            .guest_features = features};
        if (cvmctl_measure_image(&img, digest, &pages, &err) < 0)
                return cvmctl_fail(&err);
        char hex[CVM_SNP_DIGEST_HEX_SIZE];
        cvm_snp_digest_to_hex(digest, hex);
        if (!ctl->json) {
                printf("%s\n", hex);
                return CVMCTL_EXIT_OK;
        }
        json_t *regions = json_array();
        for (size_t i = 0; i < pages.nregions; i++) {
                char gpa[24];
                snprintf(gpa, sizeof(gpa), "0x%llx", (unsigned long long)pages.regions[i].gpa);
                json_array_append_new(regions,
                                      json_pack("{s:s, s:I, s:s}", "gpa", gpa, "pages",
                                                (json_int_t)pages.regions[i].npages, "type",
                                                type_names[pages.regions[i].type]));
        }
        char feat[24];
        snprintf(feat, sizeof(feat), "0x%llx", features);
        json_t *doc = json_pack(
                "{s:s, s:s, s:s?, s:s?, s:s?, s:i, s:s, s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I}, "
                "s:o}",
                "measurement", hex, "firmware", firmware, "kernel", kernel, "initrd", initrd,
                "append", kernel ? (append ? append : "") : NULL, "vcpus", (int)vcpus, "vcpu_type",
                vcpu_type, "guest_features", feat, "pages", "normal", (json_int_t)pages.normal,
                "zero", (json_int_t)pages.zero, "secrets", (json_int_t)pages.secrets, "cpuid",
                (json_int_t)pages.cpuid, "kernel_hashes", (json_int_t)pages.kernel_hashes, "vmsa",
                (json_int_t)pages.vmsa, "regions", regions);
        cvmctl_print_json(doc);
        json_decref(doc);
        return CVMCTL_EXIT_OK;
}

const cvmctl_command cvmctl_cmd_measure = {
        .name = "measure",
        .summary = "compute the SEV-SNP launch digest of a launch image, locally",
        .usage = "measure [--firmware FILE] [--kernel FILE [--initrd FILE] [--append CMDLINE]]\n"
                 "               [--vcpus N] [--vcpu-type TYPE] [--guest-features HEX] [--json]\n"
                 "The firmware defaults to cvmd's boot verifier, as launch images do.\n"
                 "Example: cvmctl measure --kernel vmlinuz --initrd initrd.gz --append "
                 "console=ttyS0\n"
                 "         cvmctl measure --firmware /usr/share/ovmf/OVMF.fd --vcpus 4",
        .run = run,
};
