/* Fuzzes the firmware-image parser and the measurement of what it accepts.
 * The input is placed at the end of a zero image rounded up to whole pages,
 * because the GUID table and the metadata it points to live at the end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "snp_measure.h"

#define MAX_IMAGE (64u * 1024)
/* Keeps runs fast: sections may declare up to 16 MiB of pages each. */
#define MAX_MEASURED_SECTION_BYTES (256u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size == 0 || size > MAX_IMAGE)
                return 0;
        size_t len = (size + CVM_SNP_PAGE_SIZE - 1) / CVM_SNP_PAGE_SIZE * CVM_SNP_PAGE_SIZE;
        _cleanup_free_ uint8_t *image = calloc(1, len);
        if (!image)
                return 0;
        memcpy(image + len - size, data, size);

        cvm_snp_firmware fw;
        if (cvm_snp_firmware_parse(image, len, &fw, NULL) < 0)
                return 0;
        uint64_t section_bytes = 0;
        for (size_t i = 0; i < fw.nsections; i++)
                section_bytes += fw.sections[i].size;
        if (section_bytes > MAX_MEASURED_SECTION_BYTES)
                return 0;
        cvm_snp_launch_input in = {.firmware = image,
                                   .firmware_len = len,
                                   .kernel = data,
                                   .kernel_len = size,
                                   .cmdline = "quiet",
                                   .vcpus = 2,
                                   .vcpu_type = "EPYC-Milan",
                                   .guest_features = CVM_SNP_GUEST_FEATURES_DEFAULT};
        uint8_t digest[CVM_SNP_DIGEST_SIZE];
        cvm_snp_measure(&in, digest, NULL, NULL);
        return 0;
}
