#include "format.h"

#include <stdio.h>

const char *cvmctl_format_duration_ns(char *buf, size_t size, uint64_t ns) {
        if (ns < 1000)
                snprintf(buf, size, "%lluns", (unsigned long long)ns);
        else if (ns < 1000000)
                snprintf(buf, size, "%lluus", (unsigned long long)(ns / 1000));
        else if (ns < 1000000000)
                snprintf(buf, size, "%.1fms", (double)ns / 1e6);
        else if (ns < UINT64_C(60000000000))
                snprintf(buf, size, "%.1fs", (double)ns / 1e9);
        else if (ns < UINT64_C(3600000000000)) {
                uint64_t s = ns / 1000000000;
                snprintf(buf, size, "%llum%02llus", (unsigned long long)(s / 60),
                         (unsigned long long)(s % 60));
        } else {
                uint64_t m = ns / UINT64_C(60000000000);
                snprintf(buf, size, "%lluh%02llum", (unsigned long long)(m / 60),
                         (unsigned long long)(m % 60));
        }
        return buf;
}

const char *cvmctl_format_bytes(char *buf, size_t size, uint64_t bytes) {
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
        if (bytes < 1024) {
                snprintf(buf, size, "%lluB", (unsigned long long)bytes);
                return buf;
        }
        double v = (double)bytes / 1024;
        size_t u = 0;
        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        snprintf(buf, size, "%.1f%s", v, units[u]);
        return buf;
}
