#pragma once

#define CVM_VERSION "0.1.0"
/* The HTTP API's major version: the /v1 prefix. */
#define CVM_API_VERSION "v1"
