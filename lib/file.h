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
