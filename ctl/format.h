/* Human output helpers for cvmctl: durations and sizes in human units. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* "850us", "12.3ms", "1.2s", "3m04s", "2h05m". */
const char *cvmctl_format_duration_ns(char *buf, size_t size, uint64_t ns);
/* "512B", "3.0KiB", "12.5MiB", "1.2GiB". */
const char *cvmctl_format_bytes(char *buf, size_t size, uint64_t bytes);
/* A duration in milliseconds as the API gives it ("45.6ms"); "-" when
 * negative or not a number (a JSON null). */
const char *cvmctl_format_ms(char *buf, size_t size, double ms);
/* Whole mebibytes: "512MiB". */
const char *cvmctl_format_mib(char *buf, size_t size, double mib);
/* A fraction as a percentage, "12.5%"; "-" when not a number. */
const char *cvmctl_format_percent(char *buf, size_t size, double fraction);
/* How long ago a wall-clock time (Unix milliseconds) was: "3m04s". */
const char *cvmctl_format_age(char *buf, size_t size, double epoch_ms);
/* A wall-clock time (Unix milliseconds) in local time, "2025-01-31 14:05:09". */
const char *cvmctl_format_time(char *buf, size_t size, double epoch_ms);
