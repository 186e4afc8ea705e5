/* Scratch paths for the unit tests: under $TMPDIR when it is set, as the
 * integration tests and the benchmarks do, else under /tmp. */
#pragma once

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

/* Room for a scratch directory and a file name inside it. */
#define UNIT_TMP_MAX 256

/* Writes "$TMPDIR/name" into buf (name may end in XXXXXX for mkstemp or
 * mkdtemp); a TMPDIR too long for buf ends the test run, saying so. */
static inline char *unit_tmp_path(char *buf, size_t size, const char *name) {
        const char *dir = getenv("TMPDIR");
        if (!dir || !*dir)
                dir = "/tmp";
        int n = snprintf(buf, size, "%s/%s", dir, name);
        if (n < 0 || (size_t)n >= size) {
                fprintf(stderr, "TMPDIR %s is too long for the scratch path %s\n", dir, name);
                exit(1);
        }
        return buf;
}

static inline int unit_rm_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw) {
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

/* Removes a scratch directory and what it holds, without a shell. */
static inline int unit_rm_rf(const char *dir) {
        return nftw(dir, unit_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
