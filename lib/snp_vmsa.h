/* The initial VMSA (SEV-ES save area) of an SNP vCPU as QEMU and KVM
 * create it at reset, and the vCPU model signatures QEMU puts in RDX. */
#pragma once

#include <stdint.h>

#include "error.h"

#define CVM_SNP_BSP_RESET_EIP UINT32_C(0xfffffff0)

/* The CPUID Fn0000_0001_EAX signature of QEMU's vCPU model vcpu_type
 * ("EPYC-v4", "EPYC-Milan", ...). An unknown name fails with -EINVAL and a
 * message listing the known ones. */
int cvm_snp_vcpu_signature(const char *vcpu_type, uint32_t *ret, cvm_error *err);

/* Fills page (4096 bytes) with the VMSA of a vCPU that starts at eip. */
void cvm_snp_vmsa_build(uint8_t *page, uint32_t eip, uint32_t vcpu_signature,
                        uint64_t guest_features);
