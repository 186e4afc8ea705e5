/* The HTTP API (/v1): the route table and its handlers. Handlers get the
 * cvmd as userdata and answer through http.h. docs/api.md documents each. */
#pragma once

#include <stddef.h>

#include "http.h"

const cvm_http_route *cvm_api_routes(size_t *ret_n);
