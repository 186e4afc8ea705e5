/* Reading whole files with a bound, for every small file a caller names
 * (certificates, keys, policies, reports, launch images). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

/* Reads the regular file at path, of at most max bytes, into a new buffer
 * (one byte longer, NUL-terminated, so text can be parsed in place).
 * ret_mode, if non-NULL, receives the file's mode. Messages name the path. */
int cvm_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len, mode_t *ret_mode,
                  cvm_error *err);

/* Writes path atomically with the given mode (whatever the umask): a
 * temporary file beside it (".NAME.tmp"), fsync, rename. A reader sees the
 * old file or the whole new one, never part of it. */
int cvm_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                          cvm_error *err);
