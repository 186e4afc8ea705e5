#include "guest_policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

int cvm_guest_policy_check(uint64_t policy, bool allow_debug, cvm_error *err) {
        if (!(policy & CVM_SNP_POLICY_RESERVED_ONE))
                return cvm_error_set(err, -EINVAL,
                                     "guest policy 0x%" PRIx64
                                     " clears bit 17, which is reserved and must be one",
                                     policy);
        if (policy & CVM_SNP_POLICY_MBZ)
                return cvm_error_set(err, -EINVAL,
                                     "guest policy 0x%" PRIx64
                                     " sets reserved bits 63:26, which must be zero",
                                     policy);
        /* A debug guest's memory can be decrypted by the host, so nothing it
         * attests to is confidential; it takes an explicit opt-in. */
        if ((policy & CVM_SNP_POLICY_DEBUG) && !allow_debug)
                return cvm_error_set(err, -EPERM,
                                     "guest policy 0x%" PRIx64
                                     " sets bit 19 (DEBUG), which is not allowed",
                                     policy);
        return 0;
}

const char *cvm_guest_policy_describe(uint64_t policy, char *buf, size_t size) {
        if (!buf || size == 0)
                return buf;
        snprintf(buf, size, "abi>=%u.%u%s%s%s%s", cvm_snp_policy_abi_major(policy),
                 cvm_snp_policy_abi_minor(policy), policy & CVM_SNP_POLICY_SMT ? " smt" : "",
                 policy & CVM_SNP_POLICY_MIGRATE_MA ? " migrate-ma" : "",
                 policy & CVM_SNP_POLICY_DEBUG ? " debug" : "",
                 policy & CVM_SNP_POLICY_SINGLE_SOCKET ? " single-socket" : "");
        return buf;
}
