/* The host side of the agent protocol (lib/agent_proto.h): one connection
 * to the guest agent of one VM over a libuv stream. It waits for the agent's
 * HELLO, sends INVOKEs and matches RESULTs by id, asks for attestations,
 * sends heartbeats, and
 * drops an agent that breaks the protocol, closes the connection, or stops
 * answering, reporting why through callbacks. The agent is never trusted:
 * every frame is validated, and a RESULT for an id not pending, a second
 * HELLO or an oversized frame ends the connection. All callbacks run on the
 * loop thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "agent_proto.h"
#include "error.h"

typedef struct cvm_agent_client cvm_agent_client;

typedef struct cvm_agent_client_opts {
        uint32_t max_payload;           /* Largest frame payload accepted; 0: 8 MiB. */
        uint32_t heartbeat_interval_ms; /* A PING every interval after HELLO; 0: none. */
        uint32_t heartbeat_misses; /* Intervals without a PONG before the agent is dead; 0: 3. */
        /* A RESULT later than its timeout by this much means the agent is broken;
         * checked at each heartbeat; 0: 5000. */
        uint32_t result_grace_ms;
        /* An ATTEST unanswered this long means the agent is broken; checked at
         * each heartbeat; 0: 30000 (a real report goes through the host to the PSP). */
        uint32_t attest_timeout_ms;
} cvm_agent_client_opts;

typedef struct cvm_agent_client_cbs {
        /* The agent introduced itself; invocations may be sent from now on. */
        void (*on_hello)(cvm_agent_client *c, const cvm_agent_hello *hello, void *userdata);
        /* The connection ended, once: err->code is 0 after a requested shutdown
         * the agent acknowledged, else -ECONNRESET (agent closed or failed),
         * -EPROTO (protocol violation), -EMSGSIZE (oversized frame) or
         * -ETIMEDOUT (heartbeat or overdue result); err->message says why.
         * Pending invocations have had their callbacks by then. */
        void (*on_closed)(cvm_agent_client *c, const cvm_error *err, void *userdata);
        /* Optional: the connection is ending (err as for on_closed), before the
         * pending invocations and attestations fail, so that the owner stops
         * handing the agent work first. It must not free the client. */
        void (*on_lost)(cvm_agent_client *c, const cvm_error *err, void *userdata);
} cvm_agent_client_cbs;

/* Exactly one call per accepted invocation: with result set and err NULL
 * when the agent answered (whatever the status), or with result NULL and
 * err set when the connection ended first (-ECANCELED after a shutdown, else
 * the on_closed code). result and its buffers are borrowed for the call. */
typedef void (*cvm_agent_result_cb)(cvm_agent_client *c, uint64_t id,
                                    const cvm_agent_result *result, const cvm_error *err,
                                    void *userdata);

/* Exactly one call per accepted attestation request: with result set and
 * err NULL when the agent answered, or with result NULL and err set when the
 * connection ended first (codes as for invocations). A delivered result has
 * been checked with cvm_agent_attest_verify against the request's nonce, and
 * its key is the one every earlier result of this agent carried; its report,
 * if any, has NOT been checked against AMD's keys: that is the verifier's
 * job. result and its buffers are borrowed for the call. */
typedef void (*cvm_agent_attest_cb)(cvm_agent_client *c, const cvm_agent_attest_result *result,
                                    const cvm_error *err, void *userdata);

/* Takes ownership of fd (a connected stream), also on failure. */
int cvm_agent_client_new(uv_loop_t *loop, int fd, const cvm_agent_client_opts *opts,
                         const cvm_agent_client_cbs *cbs, void *userdata, cvm_agent_client **ret,
                         cvm_error *err);

/* Sends an INVOKE; body is copied. Fails with -ENOTCONN before HELLO or
 * after the connection ended, -ESHUTDOWN after cvm_agent_client_shutdown,
 * -EEXIST for an id already pending, -EMSGSIZE for a body the agent does
 * not accept, -EINVAL for a timeout out of range. */
int cvm_agent_client_invoke(cvm_agent_client *c, uint64_t id, uint32_t timeout_ms, const void *body,
                            size_t len, cvm_agent_result_cb cb, void *userdata, cvm_error *err);

/* Sends an ATTEST with the client's 64-byte nonce (copied). Fails with
 * -ENOTCONN before HELLO or after the connection ended, -ESHUTDOWN after
 * cvm_agent_client_shutdown, -ENOTSUP when the agent's HELLO lacks
 * CVM_AGENT_CAP_ATTEST, -EBUSY with CVM_AGENT_MAX_ATTEST_INFLIGHT requests
 * already unanswered, -EMSGSIZE when opts.max_payload is below
 * CVM_AGENT_ATTEST_RESULT_MAX. */
int cvm_agent_client_attest(cvm_agent_client *c, const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                            cvm_agent_attest_cb cb, void *userdata, cvm_error *err);

/* Asks the agent to kill its handlers and exit; on_closed follows with
 * code 0 once it acknowledges. */
int cvm_agent_client_shutdown(cvm_agent_client *c, cvm_error *err);

/* The agent's HELLO, or NULL before it arrived. */
const cvm_agent_hello *cvm_agent_client_hello(const cvm_agent_client *c);

/* Invocations sent and not yet answered. */
size_t cvm_agent_client_pending(const cvm_agent_client *c);

/* Attestation requests sent and not yet answered. */
size_t cvm_agent_client_attests_pending(const cvm_agent_client *c);

/* Closes the connection; no callback runs after this, pending invocations
 * and attestations included. NULL-safe; may be called from any of the client's callbacks.
 * The memory is released once libuv has closed the handles. */
void cvm_agent_client_free(cvm_agent_client *c);
