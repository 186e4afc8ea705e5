/* Logging to stderr: one line per event, written with a single write(2) so
 * lines from different threads never interleave. Under journald (stderr is
 * the journal stream) lines carry sd-daemon priority prefixes instead of
 * timestamps. Strings that come from users go through cvm_quote. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

typedef enum cvm_log_level {
        CVM_LOG_ERROR = 3, /* Values match syslog priorities. */
        CVM_LOG_WARN = 4,
        CVM_LOG_INFO = 6,
        CVM_LOG_DEBUG = 7,
} cvm_log_level;

void cvm_log_setup(const char *ident);
void cvm_log_set_level(cvm_log_level level);
cvm_log_level cvm_log_get_level(void);
int cvm_log_level_from_string(const char *s, cvm_log_level *ret);
const char *cvm_log_level_to_string(cvm_log_level level);

void cvm_log(cvm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cvm_logv(cvm_log_level level, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));

#define log_error(...) cvm_log(CVM_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) cvm_log(CVM_LOG_WARN, __VA_ARGS__)
#define log_info(...) cvm_log(CVM_LOG_INFO, __VA_ARGS__)
#define log_debug(...) cvm_log(CVM_LOG_DEBUG, __VA_ARGS__)

/* Writes s into buf as a double-quoted string with control characters,
 * quotes and backslashes escaped, truncated with "..." to fit; returns buf.
 * NULL prints as null. */
const char *cvm_quote(char *buf, size_t size, const char *s);

/* A quoted copy of s in a buffer that lives until the end of the statement. */
#define CVM_QUOTE(s) cvm_quote((char[160]){0}, 160, (s))
