/* The boot verifier: load Linux, its initrd and its command line from QEMU,
 * check them against the hashes in the measured image, and boot Linux
 * through the 64-bit boot protocol. See docs/firmware.md. */
#include "bootproto.h"
#include "sha256.h"
#include "vf.h"

#define E820_RAM 1
#define E820_RESERVED 2
#define MAX_E820 32 /* QEMU gives a handful; boot_params holds up to 128. */
#define FOUR_GIB 0x100000000ull

typedef struct e820 {
        uint64_t addr, size;
        uint32_t type;
} e820;

/* The configuration block in the reset page (reset.S). */
extern const uint8_t vf_config[];

/* Areas the kernel must not take as RAM: the verifier's own pages (the
 * SNP secrets and CPUID pages among them, which the kernel maps later; the
 * shared GHCB and bounce buffer), the ACPI tables, and the legacy hole. */
static const struct {
        uint64_t start, end;
} holes[] = {
        {VF_PAGE_TABLES, VF_ACPI},
        {VF_ACPI, VF_ACPI + VF_ACPI_SIZE},
        {0xa0000, VF_LOW_RESERVED_END},
};

static e820 host_map[MAX_E820], kernel_map[MAX_E820];
static unsigned n_host, n_kernel;
static struct {
        uint32_t magic;
        uint16_t version, reserved;
        uint64_t secrets_phys;
        uint32_t secrets_len, rsvd1;
        uint64_t cpuid_phys;
        uint32_t cpuid_len, rsvd2;
} cc_blob;

static void add_kernel_entry(uint64_t addr, uint64_t size, uint32_t type) {
        if (!size)
                return;
        if (n_kernel == MAX_E820)
                vf_halt("memory map: more than %u entries", MAX_E820);
        kernel_map[n_kernel++] = (e820){addr, size, type};
}

/* The host's map (etc/e820) with the holes cut out of its RAM. */
static void read_memory_map(void) {
        uint16_t key;
        uint32_t size;
        if (!vf_fwcfg_find("etc/e820", &key, &size) || size % 20 || size / 20 > MAX_E820)
                vf_halt("fw_cfg: no usable etc/e820 memory map");
        static uint8_t raw[MAX_E820 * 20];
        vf_fwcfg_read(key, raw, size, NULL);
        n_host = size / 20;
        for (unsigned i = 0; i < n_host; i++)
                host_map[i] = (e820){vf_le64(raw + 20 * i), vf_le64(raw + 20 * i + 8),
                                     vf_le32(raw + 20 * i + 16)};
        for (unsigned h = 0; h < sizeof(holes) / sizeof(holes[0]); h++)
                add_kernel_entry(holes[h].start, holes[h].end - holes[h].start, E820_RESERVED);
        for (unsigned i = 0; i < n_host; i++) {
                e820 *e = &host_map[i];
                if (e->type != E820_RAM) {
                        add_kernel_entry(e->addr, e->size, e->type);
                        continue;
                }
                uint64_t s = e->addr, end = e->addr + e->size;
                /* The verifier maps and validates the first 4 GiB only, and
                 * Linux takes all RAM in the map of an SNP guest as validated. */
                if (vf_snp_state.active && end > FOUR_GIB) {
                        if (s >= FOUR_GIB) {
                                vf_log("SEV-SNP: leaving out 0x%lx bytes of RAM above 4 GiB",
                                       e->size);
                                continue;
                        }
                        vf_log("SEV-SNP: leaving out 0x%lx bytes of RAM above 4 GiB",
                               (uint64_t)(end - FOUR_GIB));
                        end = FOUR_GIB;
                }
                for (unsigned h = 0; h < sizeof(holes) / sizeof(holes[0]) && s < end; h++) {
                        if (holes[h].end <= s || holes[h].start >= end)
                                continue;
                        add_kernel_entry(s, holes[h].start > s ? holes[h].start - s : 0, E820_RAM);
                        s = holes[h].end;
                }
                if (s < end)
                        add_kernel_entry(s, end - s, E820_RAM);
        }
}

/* The end of the RAM that starts at 1 MiB: kernel and initrd go there. */
static uint64_t low_ram_end(void) {
        for (unsigned i = 0; i < n_host; i++)
                if (host_map[i].type == E820_RAM && host_map[i].addr <= VF_LOW_RESERVED_END &&
                    host_map[i].addr + host_map[i].size > VF_LOW_RESERVED_END)
                        return host_map[i].addr + host_map[i].size;
        vf_halt("memory map: no RAM above 1 MiB");
}

static void validate_memory(void) {
        for (unsigned i = 0; i < n_kernel; i++)
                if (kernel_map[i].type == E820_RAM && kernel_map[i].addr < FOUR_GIB)
                        vf_snp_validate(kernel_map[i].addr,
                                        kernel_map[i].addr + kernel_map[i].size);
        vf_snp_validate(VF_ACPI, VF_ACPI + VF_ACPI_SIZE);
}

typedef struct loaded {
        uint8_t *setup;
        uint32_t setup_size, kernel_size, initrd_size, cmdline_len;
        uint64_t kernel_addr, initrd_addr;
        uint8_t kernel_hash[32], initrd_hash[32], cmdline_hash[32];
} loaded;

static void load(loaded *l, bool plain) {
        /* The command line, its NUL included, as QEMU hashes it. */
        uint32_t cmdline_size = vf_fwcfg_u32(FW_CFG_CMDLINE_SIZE);
        char *cmdline = (char *)VF_CMDLINE;
        if (cmdline_size > VF_CMDLINE_MAX)
                vf_halt("the command line (%u bytes) is longer than %u", cmdline_size,
                        VF_CMDLINE_MAX);
        vf_fwcfg_read(FW_CFG_CMDLINE_DATA, cmdline, cmdline_size, NULL);
        cmdline[cmdline_size ? cmdline_size - 1 : 0] = 0;
        l->cmdline_len = (uint32_t)vf_strnlen(cmdline, VF_CMDLINE_MAX);
        vf_sha256 h;
        vf_sha256_init(&h);
        vf_sha256_update(&h, cmdline, l->cmdline_len + 1);
        vf_sha256_final(&h, l->cmdline_hash);

        l->setup_size = vf_fwcfg_u32(FW_CFG_SETUP_SIZE);
        l->kernel_size = vf_fwcfg_u32(FW_CFG_KERNEL_SIZE);
        if (!l->setup_size || !l->kernel_size)
                vf_halt("no kernel: QEMU was started without -kernel");
        if (l->setup_size < BP_CANONICAL_SIZE + 0x10 || l->setup_size > VF_SETUP_MAX)
                vf_halt("the kernel's setup part (%u bytes) is not a bzImage's", l->setup_size);
        l->setup = (uint8_t *)VF_SETUP;
        vf_fwcfg_read(FW_CFG_SETUP_DATA, l->setup, l->setup_size, NULL);
        const uint8_t *s = l->setup;
        if (!bp_is_bzimage64(s, l->setup_size))
                vf_halt("the kernel is not a bzImage with a 64-bit entry (boot protocol >= 2.12)");

        /* The kernel hash covers the setup part and the protected-mode part,
         * as the file. A plain guest's QEMU wrote its loader fields into the
         * setup part; the hash is then taken with them zeroed. */
        vf_sha256_init(&h);
        if (plain) {
                uint8_t head[BP_CANONICAL_SIZE];
                memcpy(head, s, sizeof(head));
                for (unsigned i = 0; i < sizeof(bp_loader_fields) / sizeof(bp_loader_fields[0]);
                     i++)
                        memset(head + bp_loader_fields[i].offset, 0, bp_loader_fields[i].size);
                vf_sha256_update(&h, head, sizeof(head));
                vf_sha256_update(&h, s + sizeof(head), l->setup_size - sizeof(head));
        } else {
                vf_sha256_update(&h, s, l->setup_size);
        }

        uint64_t ram_end = low_ram_end();
        uint32_t align = vf_le32(s + BP_KERNEL_ALIGNMENT);
        uint64_t pref = vf_le64(s + BP_PREF_ADDRESS), init_size = vf_le32(s + BP_INIT_SIZE);
        if (align < 0x1000 || (align & (align - 1)))
                align = 0x200000;
        uint64_t at = pref >= VF_LOW_RESERVED_END && !(pref % align) ? pref : VF_KERNEL_DEFAULT;
        at = (at + align - 1) & ~(uint64_t)(align - 1);
        if (init_size < l->kernel_size)
                init_size = l->kernel_size;
        if (at + init_size > ram_end)
                vf_halt("the kernel needs 0x%lx bytes at 0x%lx; RAM ends at 0x%lx", init_size, at,
                        ram_end);
        l->kernel_addr = at;
        vf_fwcfg_read(FW_CFG_KERNEL_DATA, (void *)at, l->kernel_size, &h);
        vf_sha256_final(&h, l->kernel_hash);

        /* The initrd goes at the top of low RAM, under the kernel's limit. */
        l->initrd_size = vf_fwcfg_u32(FW_CFG_INITRD_SIZE);
        vf_sha256_init(&h);
        if (l->initrd_size) {
                uint64_t top = ram_end, max = (uint64_t)vf_le32(s + BP_INITRD_ADDR_MAX) + 1;
                if (max > 1 && top > max)
                        top = max;
                uint64_t where = (top - l->initrd_size) & ~0xfffull;
                if (l->initrd_size > top || where < at + init_size)
                        vf_halt("the initrd (%u bytes) does not fit above the kernel",
                                l->initrd_size);
                l->initrd_addr = where;
                vf_fwcfg_read(FW_CFG_INITRD_DATA, (void *)where, l->initrd_size, &h);
        }
        vf_sha256_final(&h, l->initrd_hash);
}

/* Looks an entry up in a hash table in QEMU's format; NULL if it has none. */
static const uint8_t *table_entry(const uint8_t *table, const uint8_t guid[16]) {
        uint16_t len = vf_le16(table + HT_GUID_SIZE);
        for (uint32_t off = HT_GUID_SIZE + 2; off + HT_ENTRY_SIZE <= len;) {
                uint16_t elen = vf_le16(table + off + HT_GUID_SIZE);
                if (elen < HT_GUID_SIZE + 2 || off + elen > len)
                        return NULL;
                if (memcmp(table + off, guid, 16) == 0)
                        return elen == HT_ENTRY_SIZE ? table + off + HT_GUID_SIZE + 2 : NULL;
                off += elen;
        }
        return NULL;
}

static bool table_present(const uint8_t *table, uint32_t max) {
        static const uint8_t header[16] = HT_GUID_HEADER;
        uint16_t len = vf_le16(table + HT_GUID_SIZE);
        return memcmp(table, header, 16) == 0 && len >= HT_MIN_SIZE && len <= max;
}

static void hex(char out[65], const uint8_t h[32]) {
        for (int i = 0; i < 32; i++) {
                out[2 * i] = "0123456789abcdef"[h[i] >> 4];
                out[2 * i + 1] = "0123456789abcdef"[h[i] & 15];
        }
        out[64] = 0;
}

static void check(const uint8_t *table, const char *what, const uint8_t guid[16],
                  const uint8_t got[32]) {
        const uint8_t *want = table_entry(table, guid);
        char g[65], w[65];
        hex(g, got);
        if (!want)
                vf_halt("the hash table has no %s entry: refusing to boot", what);
        if (memcmp(want, got, 32) != 0) {
                hex(w, want);
                vf_halt("%s hash mismatch: got %s, the measured table says %s: refusing to boot",
                        what, g, w);
        }
        vf_log("%s verified (sha256 %s)", what, g);
}

static void verify(const loaded *l, bool plain) {
        static const uint8_t g_cmdline[16] = HT_GUID_CMDLINE, g_initrd[16] = HT_GUID_INITRD,
                             g_kernel[16] = HT_GUID_KERNEL;
        /* Copy the table into private memory before reading it. */
        static uint8_t table[VF_PLAIN_HASHES_SIZE];
        uint32_t flags = vf_le32(vf_config + 4);
        if (plain) {
                memcpy(table, vf_config + 8, VF_PLAIN_HASHES_SIZE);
                if (!table_present(table, VF_PLAIN_HASHES_SIZE)) {
                        if (flags & VF_FLAG_ALLOW_UNVERIFIED) {
                                vf_log("plain guest, no hash table: booting UNVERIFIED, as this "
                                       "image allows");
                                return;
                        }
                        vf_halt("plain guest and no hash table in the image: refusing to boot "
                                "(build the image to allow it, or write a table into it)");
                }
        } else {
                memcpy(table, (const void *)VF_HASHES, sizeof(table));
                if (!table_present(table, sizeof(table)))
                        vf_halt("no kernel-hashes table in the measured page: launch with "
                                "kernel-hashes=on");
        }
        check(table, "kernel", g_kernel, l->kernel_hash);
        check(table, "initrd", g_initrd, l->initrd_hash);
        check(table, "command line", g_cmdline, l->cmdline_hash);
}

static void put_e820(uint8_t *bp) {
        bp[BP_E820_ENTRIES] = (uint8_t)n_kernel;
        for (unsigned i = 0; i < n_kernel; i++) {
                uint8_t *e = bp + BP_E820_TABLE + 20 * i;
                vf_put_le64(e, kernel_map[i].addr);
                vf_put_le64(e + 8, kernel_map[i].size);
                vf_put_le32(e + 16, kernel_map[i].type);
        }
}

static _Noreturn void boot(const loaded *l, uint64_t rsdp) {
        uint8_t *bp = (uint8_t *)VF_BOOT_PARAMS;
        memset(bp, 0, 0x1000);
        uint32_t hdr_end = 0x202 + l->setup[0x201];
        if (hdr_end > 0x280)
                hdr_end = 0x280;
        memcpy(bp + BP_HDR_START, l->setup + BP_HDR_START, hdr_end - BP_HDR_START);
        bp[BP_TYPE_OF_LOADER] = 0xff;
        bp[BP_LOADFLAGS] &= (uint8_t)~0x80; /* no heap: there is no real-mode setup run */
        vf_put_le32(bp + BP_CMD_LINE_PTR, VF_CMDLINE);
        vf_put_le32(bp + BP_EXT_CMD_LINE_PTR, 0);
        vf_put_le32(bp + BP_RAMDISK_IMAGE, (uint32_t)l->initrd_addr);
        vf_put_le32(bp + BP_RAMDISK_SIZE, l->initrd_size);
        vf_put_le32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(l->initrd_addr >> 32));
        vf_put_le64(bp + BP_SETUP_DATA, 0);
        vf_put_le64(bp + BP_ACPI_RSDP_ADDR, rsdp);
        put_e820(bp);
        if (vf_snp_state.active) {
                cc_blob.magic = 0x45444d41; /* "AMDE" */
                cc_blob.secrets_phys = VF_SECRETS;
                cc_blob.secrets_len = 0x1000;
                cc_blob.cpuid_phys = VF_CPUID;
                cc_blob.cpuid_len = 0x1000;
                vf_put_le32(bp + BP_CC_BLOB_ADDRESS, (uint32_t)(uintptr_t)&cc_blob);
        }
        vf_log("booting Linux at 0x%lx (kernel %u bytes, initrd %u bytes, ACPI %s)", l->kernel_addr,
               l->kernel_size, l->initrd_size, rsdp ? "yes" : "no");
        uint64_t entry = l->kernel_addr + 0x200;
        __asm__ volatile("cli; jmp *%0" : : "r"(entry), "S"(bp) : "memory");
        __builtin_unreachable();
}

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
        __asm__ volatile("cpuid"
                         : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "a"(leaf), "c"(sub));
}

/* Under SEV-SNP CPUID would raise a #VC: the answers come from the CPUID page. */
static bool cpuid_page(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
        const uint8_t *page = (const uint8_t *)VF_CPUID;
        uint32_t count = vf_le32(page);
        for (uint32_t i = 0; i < count && i < 64; i++) {
                const uint8_t *e = page + 16 + 48 * i;
                if (vf_le32(e) == leaf && vf_le32(e + 4) == sub) {
                        for (int j = 0; j < 4; j++)
                                r[j] = vf_le32(e + 24 + 4 * j);
                        return true;
                }
        }
        return false;
}

/* SHA-256 with the SHA extensions where the CPU has them (SSSE3, SSE4.1 and
 * SHA); they need SSE, which is off after reset. */
static void enable_sha_ni(void) {
        uint32_t l1[4] = {0}, l7[4] = {0};
        if (vf_snp_state.active) {
                if (!cpuid_page(1, 0, l1) || !cpuid_page(7, 0, l7))
                        return;
        } else {
                cpuid(0, 0, l7);
                if (l7[0] < 7)
                        return;
                cpuid(1, 0, l1);
                cpuid(7, 0, l7);
        }
        if (!(l1[2] & (1u << 9)) || !(l1[2] & (1u << 19)) || !(l7[1] & (1u << 29)))
                return;
        uint64_t cr0, cr4;
        __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
        __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
        cr0 = (cr0 & ~(1ull << 2)) | (1ull << 1); /* EM off, MP on */
        cr4 |= (1ull << 9) | (1ull << 10);        /* OSFXSR, OSXMMEXCPT */
        __asm__ volatile("mov %0, %%cr0" : : "r"(cr0));
        __asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
        vf_sha256_use_ni(true);
        vf_log("SHA-256 with the SHA extensions");
}

_Noreturn void vf_main(unsigned cbit);
_Noreturn void vf_main(unsigned cbit) {
        if (cbit)
                vf_snp_init(cbit);
        vf_console_init();
        bool plain = !vf_snp_state.active;
        if (plain)
                vf_log("plain guest (no SEV-SNP)");
        else
                vf_log("SEV-SNP guest, C-bit %u", cbit);
        enable_sha_ni();
        vf_fwcfg_init();
        read_memory_map();
        if (!plain)
                validate_memory();
        loaded l = {0};
        load(&l, plain);
        verify(&l, plain);
        vf_platform_init();
        boot(&l, vf_acpi_load());
}
