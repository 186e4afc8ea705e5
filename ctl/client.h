/* cvmctl's HTTP client: libcurl over the daemon's Unix socket or TCP. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "error.h"

typedef struct cvmctl_client cvmctl_client;

typedef struct cvmctl_response {
        long status;
        char *body; /* NUL-terminated; owned by the response. */
        size_t len;
} cvmctl_response;

/* Exactly one of socket_path and url is non-NULL. */
int cvmctl_client_new(const char *socket_path, const char *url, cvmctl_client **ret,
                      cvm_error *err);
void cvmctl_client_free(cvmctl_client *c);
/* An API token for TCP listeners, sent as Authorization: Bearer TOKEN. */
int cvmctl_client_set_token(cvmctl_client *c, const char *token, cvm_error *err);
/* "Authorization: Bearer TOKEN", or NULL: for commands with handles of their own. */
const char *cvmctl_client_auth_header(const cvmctl_client *c);
/* Where the client connects, for messages: "unix:/run/cvmd/cvmd.sock". */
const char *cvmctl_client_target(const cvmctl_client *c);

/* One request. A transport failure is an error with a one-line reason
 * ("cvmd is not running: ..."); any HTTP status is a success here. */
int cvmctl_request(cvmctl_client *c, const char *method, const char *path, const char *content_type,
                   const void *body, size_t len, cvmctl_response *ret, cvm_error *err);
void cvmctl_response_done(cvmctl_response *r);

/* A request whose answer is JSON. A status >= 400 becomes an error carrying
 * the API's message; *ret receives the parsed document otherwise. */
int cvmctl_request_json(cvmctl_client *c, const char *method, const char *path, json_t *body,
                        json_t **ret, cvm_error *err);
/* The same, also giving the HTTP status (NULL: not wanted). */
int cvmctl_api(cvmctl_client *c, const char *method, const char *path, json_t *body, json_t **ret,
               long *status, cvm_error *err);
/* The errno an HTTP status stands for (404: -ENOENT, ...). */
int cvmctl_errno_for_status(long status);
