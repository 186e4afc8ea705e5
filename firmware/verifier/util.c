/* The few libc functions the verifier needs; gcc emits calls to the first
 * three for struct copies and initializers even when freestanding. */
#include "vf.h"

/* String instructions: the kernel and initrd copies are megabytes. */
void *memcpy(void *dst, const void *src, size_t n) {
        void *d = dst;
        __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
        return dst;
}

void *memset(void *dst, int c, size_t n) {
        void *d = dst;
        __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
        return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
        const uint8_t *x = a, *y = b;
        for (; n; n--, x++, y++)
                if (*x != *y)
                        return *x < *y ? -1 : 1;
        return 0;
}

size_t vf_strnlen(const char *s, size_t max) {
        size_t n = 0;
        while (n < max && s[n])
                n++;
        return n;
}
