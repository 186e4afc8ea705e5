#include "format.h"

#include <stdio.h>
#include <time.h>

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

const char *cvmctl_format_ms(char *buf, size_t size, double ms) {
        /* NaN fails every comparison, so it lands here too. */
        if (!(ms >= 0) || ms > 1e15) {
                snprintf(buf, size, "-");
                return buf;
        }
        if (ms == 0) {
                snprintf(buf, size, "0s");
                return buf;
        }
        /* Round to the microsecond: the API's own resolution. */
        return cvmctl_format_duration_ns(buf, size, (uint64_t)(ms * 1e3 + 0.5) * 1000);
}

const char *cvmctl_format_mib(char *buf, size_t size, double mib) {
        if (!(mib >= 0))
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%.0fMiB", mib);
        return buf;
}

const char *cvmctl_format_percent(char *buf, size_t size, double fraction) {
        if (!(fraction >= 0))
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%.1f%%", fraction * 100);
        return buf;
}

const char *cvmctl_format_age(char *buf, size_t size, double epoch_ms) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6 - epoch_ms;
        if (!(epoch_ms > 0) || !(ms >= 0) || ms > 1e15) {
                snprintf(buf, size, "-");
                return buf;
        }
        /* Ages read best in whole seconds: "5s", not "5.2s". */
        if (ms < 60000) {
                snprintf(buf, size, "%llds", (long long)(ms / 1e3));
                return buf;
        }
        return cvmctl_format_ms(buf, size, ms);
}

const char *cvmctl_format_time(char *buf, size_t size, double epoch_ms) {
        time_t t = (time_t)(epoch_ms / 1e3);
        struct tm tm;
        if (!(epoch_ms > 0) || !localtime_r(&t, &tm) ||
            strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "-");
        return buf;
}
