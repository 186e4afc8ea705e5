/* Human output helpers for cvmctl: durations and sizes in human units. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* "850us", "12.3ms", "1.2s", "3m04s", "2h05m". */
const char *cvmctl_format_duration_ns(char *buf, size_t size, uint64_t ns);
/* "512B", "3.0KiB", "12.5MiB", "1.2GiB". */
const char *cvmctl_format_bytes(char *buf, size_t size, uint64_t bytes);
