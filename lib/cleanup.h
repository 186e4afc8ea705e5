/* Cleanup attributes for locals, in the manner of systemd's CODING_STYLE:
 * every destructor here is NULL-safe (or fd < 0 safe). */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CVM_CLEANUP(f) __attribute__((cleanup(f)))

static inline void cvm_freep(void *p) {
        free(*(void **)p);
}

static inline void cvm_closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

static inline void cvm_fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_free_ CVM_CLEANUP(cvm_freep)
#define _cleanup_close_ CVM_CLEANUP(cvm_closep)
#define _cleanup_fclose_ CVM_CLEANUP(cvm_fclosep)

/* Defines name##p, a cleanup function that calls func on a non-NULL pointer. */
#define CVM_DEFINE_CLEANUP(type, func)                                                             \
        static inline void func##p(type *p) {                                                      \
                if (*p)                                                                            \
                        func(*p);                                                                  \
        }

/* Takes ownership out of a cleanup variable: returns the value, leaves NULL. */
#define CVM_TAKE_PTR(p)                                                                            \
        ({                                                                                         \
                __typeof__(p) _tmp = (p);                                                          \
                (p) = NULL;                                                                        \
                _tmp;                                                                              \
        })

#define CVM_TAKE_FD(fd)                                                                            \
        ({                                                                                         \
                int _tmp = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _tmp;                                                                              \
        })

#define CVM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
