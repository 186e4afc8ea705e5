/* The one error model: functions return a negative errno-style int and
 * fill a cvm_error with a human-readable message. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#define CVM_ERROR_MESSAGE_MAX 512

typedef struct cvm_error {
        int code; /* Negative errno value, 0 when no error is set. */
        char message[CVM_ERROR_MESSAGE_MAX];
} cvm_error;

/* Sets the error (if err is non-NULL) and returns code, so callers can write
 * `return cvm_error_set(err, -EINVAL, "...")`. code must be negative. */
int cvm_error_set(cvm_error *err, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
int cvm_error_setv(cvm_error *err, int code, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

/* Like cvm_error_set, appending ": strerror(-code)". */
int cvm_error_set_errno(cvm_error *err, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Prepends context ("config: ") to an existing message; returns err->code. */
int cvm_error_prefix(cvm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void cvm_error_clear(cvm_error *err);

/* The stable machine-readable code for an errno value ("invalid_argument",
 * "not_found", ...), as used in the API's JSON errors. */
const char *cvm_error_code_name(int code);
