/* An LD_PRELOAD shim for tests: while the file named by CVM_TEST_STALL
 * exists, virDomainResume never returns, as a libvirt call stuck on a guest
 * or on a lock would not. Otherwise it is libvirt's own. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

int virDomainResume(virDomainPtr domain) {
        const char *stall = getenv("CVM_TEST_STALL");
        if (stall && access(stall, F_OK) == 0)
                for (;;)
                        pause();
        int (*real)(virDomainPtr) = (int (*)(virDomainPtr))dlsym(RTLD_NEXT, "virDomainResume");
        return real ? real(domain) : -1;
}
