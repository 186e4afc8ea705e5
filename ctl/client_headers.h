/* cvmctl's own libcurl handles, for the commands that need what
 * cvmctl_request does not give: response headers (invoke) and many requests
 * at once (bench). They connect where the shared client does. Also small API
 * helpers shared by the commands. */
#pragma once

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>

#include "client.h"
#include "error.h"

/* Points h at path on the client's daemon (socket or URL) and appends the
 * shared request headers (no Expect, the API token) to *headers, which the
 * caller frees after the transfer. */
int cvmctl_curl_setup(cvmctl_client *c, CURL *h, const char *path, struct curl_slist **headers,
                      cvm_error *err);
/* A transport failure of h as one line, worded like cvmctl_request's. */
int cvmctl_curl_error(cvmctl_client *c, CURL *h, CURLcode rc, cvm_error *err);

/* Appends s to buf percent-encoded as one path segment or query value. */
const char *cvmctl_escape(char *buf, size_t size, const char *s);

/* Reads a whole file ("-": stdin) into a NUL-terminated buffer. */
int cvmctl_read_all(const char *path, char **ret, size_t *len, cvm_error *err);
/* Parses a decimal unsigned integer option in [min, max]; -1 when invalid. */
int cvmctl_parse_uint(const char *s, long min, long max, long *ret);

/* Field accessors for human output: a missing or null field is NaN, 0 or
 * NULL, which the formatters print as "-". */
static inline double cvmctl_jnum(const json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);
        return json_is_number(v) ? json_number_value(v) : NAN;
}
static inline long long cvmctl_jint(const json_t *o, const char *key) {
        return (long long)json_number_value(json_object_get(o, key));
}
static inline const char *cvmctl_jstr(const json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

struct cvmctl_command;
/* Reports a usage error ("cvmctl fn: ...") with the command's usage and
 * returns CVMCTL_EXIT_USAGE. */
int cvmctl_usage_error(const struct cvmctl_command *cmd, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/* Prints the command's --help and returns CVMCTL_EXIT_OK. */
int cvmctl_help(const struct cvmctl_command *cmd);
/* After getopt reported a bad option: the usage, and CVMCTL_EXIT_USAGE. */
int cvmctl_usage_hint(const struct cvmctl_command *cmd);
