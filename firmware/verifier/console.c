/* Messages go to COM1 (the guest's serial console, which the libvirt host
 * logs) and to QEMU's debug port 0x402 (isa-debugcon, when present). */
#include <stdarg.h>

#include "vf.h"

#define COM1 0x3f8
#define DEBUG_PORT 0x402
#define DEBUG_EXIT_PORT 0xf4 /* isa-debug-exit, which tests add to end QEMU at once. */

void vf_console_init(void) {
        vf_outb(COM1 + 1, 0x00); /* no interrupts */
        vf_outb(COM1 + 3, 0x80); /* DLAB */
        vf_outb(COM1 + 0, 0x01); /* 115200 baud */
        vf_outb(COM1 + 1, 0x00);
        vf_outb(COM1 + 3, 0x03); /* 8N1 */
        vf_outb(COM1 + 2, 0x07); /* FIFO on, cleared */
        vf_outb(COM1 + 4, 0x03); /* DTR, RTS */
}

static void put(char c) {
        if (c == '\n')
                put('\r');
        /* Bounded wait for the transmitter: a missing UART must not hang us. */
        for (int i = 0; i < 10000 && !(vf_inb(COM1 + 5) & 0x20); i++)
                ;
        vf_outb(COM1, (uint8_t)c);
        vf_outb(DEBUG_PORT, (uint8_t)c);
}

static void put_str(const char *s) {
        while (*s)
                put(*s++);
}

static void put_num(uint64_t v, unsigned base) {
        char buf[24];
        int n = 0;
        do {
                buf[n++] = "0123456789abcdef"[v % base];
                v /= base;
        } while (v);
        while (n)
                put(buf[--n]);
}

static void vlog(const char *fmt, va_list ap) {
        for (; *fmt; fmt++) {
                if (*fmt != '%') {
                        put(*fmt);
                        continue;
                }
                bool is_long = false;
                if (fmt[1] == 'l') {
                        is_long = true;
                        fmt++;
                }
                switch (*++fmt) {
                case 's': put_str(va_arg(ap, const char *)); break;
                case 'c': put((char)va_arg(ap, int)); break;
                case 'u': put_num(is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10); break;
                case 'x': put_num(is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16); break;
                case '%': put('%'); break;
                default: put('?'); break;
                }
        }
}

void vf_log(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        put_str("cvm-verifier: ");
        vlog(fmt, ap);
        va_end(ap);
        put('\n');
}

_Noreturn void vf_halt(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        put_str("cvm-verifier: HALT: ");
        vlog(fmt, ap);
        va_end(ap);
        put('\n');
        if (vf_snp_state.active)
                vf_snp_terminate(0);
        else
                vf_outb(DEBUG_EXIT_PORT, 0x01); /* QEMU exits with status 3 */
        for (;;)
                __asm__ volatile("cli; hlt");
}
