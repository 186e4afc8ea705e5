/* The guest agent: speaks the agent protocol (lib/agent_proto.h) to the host
 * over a connected stream and runs the function's handler once per INVOKE,
 * each in its own process group with the body on stdin and stdout as the
 * response. At start it generates an EC P-384 key pair, kept in memory only:
 * the VM's identity, which ATTEST binds to a client's nonce in REPORT_DATA
 * and, in a real SNP guest, in a report signed by the firmware.
 * Everything runs on one libuv loop; when the agent is done (after
 * SHUTDOWN or on losing the host) it has closed all its handles, so the
 * loop runs out of work and cvm_agent_exit_status says how it ended. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "error.h"

#define CVM_AGENT_DEFAULT_MAX_RESPONSE (UINT32_C(6) << 20)
#define CVM_AGENT_DEFAULT_MAX_STDERR (UINT32_C(4) << 10)
/* The SEV-SNP guest driver's device; it exists only in an SNP guest. */
#define CVM_AGENT_DEFAULT_SEV_GUEST "/dev/sev-guest"

typedef struct cvm_agent_opts {
        char *const *argv;     /* The handler, NULL-terminated; argv[0] is searched in PATH. */
        uint16_t concurrency;  /* Handlers at once; 0 means 1. */
        uint32_t max_request;  /* Largest frame payload accepted; 0: the protocol default. */
        uint32_t max_response; /* Largest stdout; 0: CVM_AGENT_DEFAULT_MAX_RESPONSE. */
        uint32_t max_stderr;   /* Stderr tail kept; 0: CVM_AGENT_DEFAULT_MAX_STDERR. */
        /* The SNP guest device asked for reports; NULL: CVM_AGENT_DEFAULT_SEV_GUEST.
         * When it does not exist, ATTEST answers without a report. Copied. */
        const char *sev_guest;
} cvm_agent_opts;

typedef struct cvm_agent cvm_agent;

/* Takes ownership of fd (a connected stream: socket or character device),
 * also on failure, and sends HELLO. Fails on limits the protocol cannot
 * carry (max_stderr above CVM_AGENT_MAX_STDERR) or when the key pair cannot
 * be generated. On failure the loop must
 * still run once so the agent's handle can close. */
int cvm_agent_new(uv_loop_t *loop, int fd, const cvm_agent_opts *opts, cvm_agent **ret,
                  cvm_error *err);
/* -1 while running; 0 after SHUTDOWN; 1 after losing or dropping the host. */
int cvm_agent_exit_status(const cvm_agent *a);
/* Kills running handlers' process groups and closes everything at once;
 * NULL-safe. Run the loop afterwards so the close callbacks can run. */
void cvm_agent_free(cvm_agent *a);
