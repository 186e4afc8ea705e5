#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int cvm_error_setv(cvm_error *err, int code, const char *fmt, va_list ap) {
        if (code >= 0)
                code = -EIO; /* A caller bug must still read as an error. */
        if (err) {
                err->code = code;
                vsnprintf(err->message, sizeof(err->message), fmt, ap);
        }
        return code;
}

int cvm_error_set(cvm_error *err, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = cvm_error_setv(err, code, fmt, ap);
        va_end(ap);
        return r;
}

int cvm_error_set_errno(cvm_error *err, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = cvm_error_setv(err, code, fmt, ap);
        va_end(ap);
        if (err) {
                size_t n = strlen(err->message);
                snprintf(err->message + n, sizeof(err->message) - n, ": %s", strerror(-r));
        }
        return r;
}

int cvm_error_prefix(cvm_error *err, const char *fmt, ...) {
        if (!err)
                return -EIO;
        char prefix[CVM_ERROR_MESSAGE_MAX], old[CVM_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        memcpy(old, err->message, sizeof(old));
        /* Truncation of an over-long message is acceptable here. */
        size_t n = strnlen(prefix, sizeof(prefix) - 1);
        memcpy(err->message, prefix, n);
        size_t m = strnlen(old, sizeof(old) - 1);
        if (m > sizeof(err->message) - 1 - n)
                m = sizeof(err->message) - 1 - n;
        memcpy(err->message + n, old, m);
        err->message[n + m] = '\0';
        return err->code;
}

void cvm_error_clear(cvm_error *err) {
        if (!err)
                return;
        err->code = 0;
        err->message[0] = '\0';
}

const char *cvm_error_code_name(int code) {
        switch (-code) {
        case 0: return "ok";
        case EINVAL: return "invalid_argument";
        case ENOENT: return "not_found";
        case EEXIST: return "conflict";
        case EMSGSIZE:
        case E2BIG: return "payload_too_large";
        case EACCES:
        case EPERM: return "permission_denied";
        case EAGAIN: return "overloaded";
        case EBUSY: return "busy";
        case ENOSPC: return "resource_exhausted";
        case ETIMEDOUT: return "timeout";
        case EPROTO:
        case ECONNRESET:
        case EPIPE: return "bad_gateway";
        case ESHUTDOWN: return "shutting_down";
        case ECANCELED: return "cancelled";
        case ENOTSUP: return "not_supported";
        default: return "internal";
        }
}
