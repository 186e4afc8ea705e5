/* QEMU's fw_cfg device (docs/specs/fw_cfg.rst): a selector port, a data
 * port and, when the device offers it, DMA. Everything the host serves is
 * untrusted. Data arrive in the bounce buffer, which is shared with the
 * host under SEV-SNP, and are copied into private memory before anything
 * looks at them, so the host cannot change bytes after they are checked. */
#include "sha256.h"
#include "vf.h"

#define PORT_SELECTOR 0x510
#define PORT_DATA 0x511
#define PORT_DMA_HI 0x514
#define PORT_DMA_LO 0x518
#define ID_DMA 0x2
#define DMA_CTL_ERROR 0x01
#define DMA_CTL_READ 0x02
#define DMA_CTL_SELECT 0x08
#define DMA_DESC VF_BOUNCE
#define DMA_BUF (VF_BOUNCE + 0x1000)
#define DMA_BUF_SIZE (VF_BOUNCE_SIZE - 0x1000)

static bool has_dma;

static uint32_t be32(uint32_t v) {
        return __builtin_bswap32(v);
}

void vf_fwcfg_init(void) {
        vf_outw(PORT_SELECTOR, FW_CFG_SIGNATURE);
        char sig[4];
        for (int i = 0; i < 4; i++)
                sig[i] = (char)vf_inb(PORT_DATA);
        if (memcmp(sig, "QEMU", 4) != 0)
                vf_halt("no fw_cfg device: this verifier boots QEMU guests only");
        has_dma = vf_fwcfg_u32(FW_CFG_ID) & ID_DMA;
}

/* Legacy reads: one byte per port access. */
static void read_pio(uint16_t key, bool select, uint8_t *dst, uint32_t len) {
        if (select)
                vf_outw(PORT_SELECTOR, key);
        for (uint32_t i = 0; i < len; i++)
                dst[i] = vf_inb(PORT_DATA);
}

uint32_t vf_fwcfg_u32(uint16_t key) {
        uint8_t b[4];
        read_pio(key, true, b, 4);
        return vf_le32(b);
}

/* One DMA transfer of len bytes into the bounce buffer. */
static void read_dma(uint16_t key, bool select, uint32_t len) {
        volatile uint32_t *desc = (volatile uint32_t *)DMA_DESC;
        uint32_t control = DMA_CTL_READ | (select ? DMA_CTL_SELECT | (uint32_t)key << 16 : 0);
        desc[0] = be32(control);
        desc[1] = be32(len);
        desc[2] = 0;
        desc[3] = be32(DMA_BUF);
        __asm__ volatile("" ::: "memory");
        vf_outl(PORT_DMA_HI, 0);
        vf_outl(PORT_DMA_LO, be32(DMA_DESC)); /* this write starts the transfer */
        uint32_t c;
        while ((c = be32(desc[0])) & ~DMA_CTL_ERROR)
                __asm__ volatile("pause");
        if (c & DMA_CTL_ERROR)
                vf_halt("fw_cfg: DMA read of item 0x%x failed", key);
}

void vf_fwcfg_read(uint16_t key, void *dst, uint32_t len, struct vf_sha256 *hash) {
        uint8_t *out = dst;
        bool select = true;
        while (len) {
                uint32_t n = len < DMA_BUF_SIZE ? len : DMA_BUF_SIZE;
                if (has_dma) {
                        read_dma(key, select, n);
                        memcpy(out, (const void *)DMA_BUF, n);
                } else {
                        read_pio(key, select, out, n);
                }
                /* Hash the private copy, never the shared buffer. */
                if (hash)
                        vf_sha256_update(hash, out, n);
                select = false;
                out += n;
                len -= n;
        }
}

bool vf_fwcfg_find(const char *name, uint16_t *ret_key, uint32_t *ret_size) {
        uint8_t b[64];
        read_pio(FW_CFG_FILE_DIR, true, b, 4);
        uint32_t count = __builtin_bswap32(vf_le32(b));
        size_t len = vf_strnlen(name, 56);
        for (uint32_t i = 0; i < count && i < 4096; i++) {
                read_pio(0, false, b, 64); /* u32 size, u16 select, u16 reserved, name[56] (BE) */
                if (memcmp(b + 8, name, len) == 0 && (len == 56 || b[8 + len] == 0)) {
                        *ret_size = __builtin_bswap32(vf_le32(b));
                        *ret_key = (uint16_t)(b[4] << 8 | b[5]);
                        return true;
                }
        }
        return false;
}
