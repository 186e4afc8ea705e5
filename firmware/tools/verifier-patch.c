/* verifier-patch: writes a copy of cvmd's boot verifier with its
 * configuration block changed (firmware/verifier, docs/firmware.md): whether
 * a plain guest without a hash table may boot, and the hash table a plain
 * guest is checked against. An SEV-SNP guest ignores both: it checks the
 * table QEMU writes into its measured kernel-hashes page. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "file.h"
#include "snp_firmware.h"
#include "snp_measure.h"
#include "verifier/bootproto.h"
#include "verifier/layout.h"

#define MAX_KERNEL (256u << 20)
#define MAX_INITRD (2048u << 20)

static void usage(FILE *f) {
        fprintf(f, "Usage: verifier-patch IMAGE -o OUT [--allow-unverified]\n"
                   "                      [--kernel BZIMAGE [--initrd FILE] [--append CMDLINE]]\n"
                   "\n"
                   "Copies the cvmd boot verifier IMAGE to OUT with its configuration changed.\n"
                   "  --allow-unverified  a plain (non-SEV) guest without a hash table may boot\n"
                   "  --kernel, --initrd, --append\n"
                   "                      write the hash table a plain guest is checked against\n"
                   "                      (the kernel hashed with the fields QEMU's loader writes\n"
                   "                      zeroed, as a plain guest receives it)\n"
                   "\n"
                   "Example: verifier-patch verifier.bin -o v.bin --kernel vmlinuz --initrd "
                   "initrd.gz \\\n"
                   "             --append console=ttyS0\n");
}

static int fail(const cvm_error *e) {
        fprintf(stderr, "verifier-patch: %s\n", e->message);
        return 1;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"output", required_argument, NULL, 'o'},
                {"allow-unverified", no_argument, NULL, 'a'},
                {"kernel", required_argument, NULL, 'k'},
                {"initrd", required_argument, NULL, 'i'},
                {"append", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *out = NULL, *kernel_path = NULL, *initrd_path = NULL, *cmdline = NULL;
        bool allow = false;
        int c;
        while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
                switch (c) {
                case 'o': out = optarg; break;
                case 'a': allow = true; break;
                case 'k': kernel_path = optarg; break;
                case 'i': initrd_path = optarg; break;
                case 'c': cmdline = optarg; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind != argc - 1 || !out || ((initrd_path || cmdline) && !kernel_path)) {
                usage(stderr);
                return 2;
        }
        cvm_error e = {0};
        _cleanup_free_ uint8_t *image = NULL, *kernel = NULL, *initrd = NULL;
        size_t image_len = 0, kernel_len = 0, initrd_len = 0;
        if (cvm_file_read(argv[optind], CVM_SNP_MAX_FIRMWARE_SIZE, &image, &image_len, NULL, &e) <
            0)
                return fail(&e);
        cvm_snp_firmware fw;
        if (cvm_snp_firmware_parse(image, image_len, &fw, &e) < 0)
                return fail(&e);
        if (!fw.has_verifier_config ||
            fw.verifier_config_offset + 8 + VF_PLAIN_HASHES_SIZE > image_len)
                return fprintf(stderr, "verifier-patch: %s is not a cvmd boot verifier image\n",
                               argv[optind]),
                       1;
        uint8_t *config = image + fw.verifier_config_offset;
        uint32_t magic = (uint32_t)config[0] | (uint32_t)config[1] << 8 |
                         (uint32_t)config[2] << 16 | (uint32_t)config[3] << 24;
        if (magic != VF_CONFIG_MAGIC)
                return fprintf(stderr, "verifier-patch: %s: bad configuration block\n",
                               argv[optind]),
                       1;
        if (allow)
                config[4] |= VF_FLAG_ALLOW_UNVERIFIED;
        if (kernel_path) {
                if (cvm_file_read(kernel_path, MAX_KERNEL, &kernel, &kernel_len, NULL, &e) < 0)
                        return fail(&e);
                if (initrd_path &&
                    cvm_file_read(initrd_path, MAX_INITRD, &initrd, &initrd_len, NULL, &e) < 0)
                        return fail(&e);
                if (!bp_is_bzimage64(kernel, kernel_len))
                        return fprintf(stderr,
                                       "verifier-patch: %s is not a bzImage with a 64-bit entry\n",
                                       kernel_path),
                               1;
                for (size_t i = 0; i < sizeof(bp_loader_fields) / sizeof(bp_loader_fields[0]); i++)
                        memset(kernel + bp_loader_fields[i].offset, 0, bp_loader_fields[i].size);
                uint8_t table[CVM_SNP_HASH_TABLE_SIZE];
                if (cvm_snp_hash_table_build(kernel, kernel_len, initrd, initrd_len, cmdline, table,
                                             &e) < 0)
                        return fail(&e);
                _Static_assert(sizeof(table) <= VF_PLAIN_HASHES_SIZE, "the table fits its slot");
                memset(config + 8, 0, VF_PLAIN_HASHES_SIZE);
                memcpy(config + 8, table, sizeof(table));
        }
        if (cvm_file_write_atomic(out, image, image_len, 0644, &e) < 0)
                return fail(&e);
        return 0;
}
