#include "log.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = CVM_LOG_INFO;
static const char *log_ident = "cvm";
static bool log_journal;

/* journald sets JOURNAL_STREAM to "DEV:INODE" of the stream it gave us. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;
        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void cvm_log_setup(const char *ident) {
        log_ident = ident;
        log_journal = stderr_is_journal();
}

void cvm_log_set_level(cvm_log_level level) {
        atomic_store(&log_level, (int)level);
}

cvm_log_level cvm_log_get_level(void) {
        return (cvm_log_level)atomic_load(&log_level);
}

static const struct {
        const char *name;
        cvm_log_level level;
} level_names[] = {
        {"error", CVM_LOG_ERROR},
        {"warn", CVM_LOG_WARN},
        {"info", CVM_LOG_INFO},
        {"debug", CVM_LOG_DEBUG},
};

int cvm_log_level_from_string(const char *s, cvm_log_level *ret) {
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (s && strcmp(s, level_names[i].name) == 0) {
                        *ret = level_names[i].level;
                        return 0;
                }
        return -1;
}

const char *cvm_log_level_to_string(cvm_log_level level) {
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (level_names[i].level == level)
                        return level_names[i].name;
        return "info";
}

void cvm_logv(cvm_log_level level, const char *fmt, va_list ap) {
        if ((int)level > atomic_load(&log_level))
                return;
        char line[2048];
        size_t n;
        if (log_journal) {
                n = (size_t)snprintf(line, sizeof(line), "<%d>", (int)level);
        } else {
                struct timespec ts;
                struct tm tm;
                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
                n += (size_t)snprintf(line + n, sizeof(line) - n,
                                      ".%03ldZ %s[%d] %s: ", ts.tv_nsec / 1000000, log_ident,
                                      (int)getpid(), cvm_log_level_to_string(level));
        }
        int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (m < 0)
                return;
        n += (size_t)m;
        if (n > sizeof(line) - 2)
                n = sizeof(line) - 2;
        /* A message never spans lines: embedded newlines become spaces. */
        for (size_t i = 0; i < n; i++)
                if (line[i] == '\n')
                        line[i] = ' ';
        line[n++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, n);
        (void)w;
}

void cvm_log(cvm_log_level level, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        cvm_logv(level, fmt, ap);
        va_end(ap);
}

const char *cvm_quote(char *buf, size_t size, const char *s) {
        if (size < 8) {
                if (size)
                        buf[0] = '\0';
                return buf;
        }
        if (!s) {
                snprintf(buf, size, "null");
                return buf;
        }
        size_t o = 0, limit = size - 5; /* Room for '..."' and NUL. */
        buf[o++] = '"';
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                char esc[8];
                size_t len;
                if (*p == '"' || *p == '\\')
                        len = (size_t)snprintf(esc, sizeof(esc), "\\%c", *p);
                else if (*p < 0x20 || *p == 0x7f)
                        len = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *p);
                else
                        esc[0] = (char)*p, len = 1;
                if (o + len > limit) {
                        memcpy(buf + o, "...", 3);
                        o += 3;
                        break;
                }
                memcpy(buf + o, esc, len);
                o += len;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        return buf;
}
