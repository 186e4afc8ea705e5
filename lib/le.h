/* Little-endian integers at any address in a byte buffer: every format cvmd
 * reads or writes in binary (the agent protocol, SNP reports, firmware
 * tables, the VMSA, PAGE_INFO) is little-endian and packed. */
#pragma once

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t cvm_le16(const void *p) {
        uint16_t v;
        memcpy(&v, p, sizeof(v));
        return le16toh(v);
}

static inline uint32_t cvm_le32(const void *p) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return le32toh(v);
}

static inline uint64_t cvm_le64(const void *p) {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return le64toh(v);
}

static inline void cvm_put_le16(void *p, uint16_t v) {
        v = htole16(v);
        memcpy(p, &v, sizeof(v));
}

static inline void cvm_put_le32(void *p, uint32_t v) {
        v = htole32(v);
        memcpy(p, &v, sizeof(v));
}

static inline void cvm_put_le64(void *p, uint64_t v) {
        v = htole64(v);
        memcpy(p, &v, sizeof(v));
}
