/* An LD_PRELOAD shim for tests: while the file named by CVM_TEST_STALL
 * exists, virDomainResume never returns, as a libvirt call stuck on a guest
 * or on a lock would not; it first creates CVM_TEST_STALL.entered, so the
 * test knows a call is stuck. Otherwise it is libvirt's own. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

int virDomainResume(virDomainPtr domain) {
        const char *stall = getenv("CVM_TEST_STALL");
        if (stall && access(stall, F_OK) == 0) {
                char entered[4096];
                snprintf(entered, sizeof(entered), "%s.entered", stall);
                int fd = open(entered, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                if (fd >= 0)
                        close(fd);
                for (;;)
                        pause();
        }
        int (*real)(virDomainPtr) = (int (*)(virDomainPtr))dlsym(RTLD_NEXT, "virDomainResume");
        return real ? real(domain) : -1;
}
