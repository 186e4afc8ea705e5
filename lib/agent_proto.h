/* The host <-> guest agent wire protocol (docs/agent-protocol.md): framed
 * binary messages over a byte stream. A frame is a fixed little-endian header
 * followed by a payload whose structured fields are also fixed little-endian
 * layouts. Everything a peer sends is validated before it is used: the
 * decoder rejects a bad header before allocating anything, and the payload
 * decoders check every field and length. Shared by the daemon and the agent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CVM_AGENT_PROTO_MAGIC UINT32_C(0x414d5643) /* "CVMA" as little-endian bytes. */
#define CVM_AGENT_PROTO_VERSION 1
#define CVM_AGENT_HEADER_SIZE 20
#define CVM_AGENT_DEFAULT_MAX_PAYLOAD (UINT32_C(8) << 20)
/* The stderr tail of a RESULT is bounded by the protocol, whatever the agent's setting. */
#define CVM_AGENT_MAX_STDERR (UINT32_C(64) << 10)
#define CVM_AGENT_MAX_VERSION_LEN 64
/* An invocation may run for at most a day. */
#define CVM_AGENT_MAX_TIMEOUT_MS UINT32_C(86400000)

/* The fixed part of each payload; the variable-length bytes follow it. */
#define CVM_AGENT_HELLO_FIXED 20
#define CVM_AGENT_INVOKE_FIXED 4
#define CVM_AGENT_RESULT_FIXED 16
#define CVM_AGENT_ATTEST_RESULT_FIXED 84

/* Attestation (docs/agent-protocol.md, "ATTEST"): sizes fixed by the protocol. */
#define CVM_AGENT_ATTEST_NONCE_SIZE 64
#define CVM_AGENT_REPORT_DATA_SIZE 64
/* The domain separator hashed first into REPORT_DATA, without a terminator. */
#define CVM_AGENT_ATTEST_CONTEXT "cvm-attest-v1"
/* A P-384 SubjectPublicKeyInfo is 120 bytes; the bound leaves room, not more. */
#define CVM_AGENT_MAX_PUBLIC_KEY 512
/* An SEV-SNP ATTESTATION_REPORT is 0x4A0 bytes; a later layout may grow, within a page. */
#define CVM_AGENT_SNP_REPORT_MIN 0x4A0
#define CVM_AGENT_SNP_REPORT_MAX 4096
/* Where the report carries the REPORT_DATA it was asked for. */
#define CVM_AGENT_SNP_REPORT_DATA_OFFSET 0x50
/* The largest ATTEST_RESULT payload. */
#define CVM_AGENT_ATTEST_RESULT_MAX                                                                \
        (CVM_AGENT_ATTEST_RESULT_FIXED + CVM_AGENT_MAX_PUBLIC_KEY + CVM_AGENT_SNP_REPORT_MAX)
/* ATTESTs a host may have outstanding on one connection; the agent drops a host sending more. */
#define CVM_AGENT_MAX_ATTEST_INFLIGHT 4

typedef enum cvm_agent_msg_type {
        CVM_AGENT_MSG_HELLO = 1,    /* agent -> host, once, first. */
        CVM_AGENT_MSG_INVOKE = 2,   /* host -> agent. */
        CVM_AGENT_MSG_RESULT = 3,   /* agent -> host, one per INVOKE. */
        CVM_AGENT_MSG_PING = 4,     /* host -> agent. */
        CVM_AGENT_MSG_PONG = 5,     /* agent -> host, echoes the PING's id. */
        CVM_AGENT_MSG_SHUTDOWN = 6, /* host -> agent, then echoed back as the acknowledgement. */
        CVM_AGENT_MSG_ATTEST = 7,   /* host -> agent, only if HELLO has CVM_AGENT_CAP_ATTEST. */
        CVM_AGENT_MSG_ATTEST_RESULT = 8, /* agent -> host, one per ATTEST, same id. */
} cvm_agent_msg_type;

/* Capability bits of HELLO; a peer ignores bits it does not know. */
#define CVM_AGENT_CAP_EXEC UINT32_C(1) /* Runs a handler process per invocation. */
/* Answers ATTEST: the agent has an in-memory EC P-384 key and binds it to a nonce. */
#define CVM_AGENT_CAP_ATTEST UINT32_C(2)

typedef enum cvm_agent_status {
        CVM_AGENT_STATUS_OK = 0,          /* Exited 0; stdout is the response. */
        CVM_AGENT_STATUS_FAILED = 1,      /* Exited non-zero or was killed by a signal. */
        CVM_AGENT_STATUS_TIMEOUT = 2,     /* Killed at timeout_ms. */
        CVM_AGENT_STATUS_BUSY = 3,        /* Rejected: the agent runs its maximum already. */
        CVM_AGENT_STATUS_SPAWN_ERROR = 4, /* Could not be started or supervised; stderr says why. */
        CVM_AGENT_STATUS_TOO_LARGE = 5,   /* Wrote more than the agent's response limit. */
} cvm_agent_status;

typedef enum cvm_agent_attest_status {
        CVM_AGENT_ATTEST_REPORT = 0,    /* The SNP firmware signed a report; it is included. */
        CVM_AGENT_ATTEST_NO_DEVICE = 1, /* No SNP guest device (not an SNP guest): no report. */
        CVM_AGENT_ATTEST_FAILED = 2,    /* The device is there but gave no usable report. */
} cvm_agent_attest_status;

const char *cvm_agent_msg_type_name(int type);
const char *cvm_agent_status_name(int status);
const char *cvm_agent_attest_status_name(int status);

/* A decoded frame. payload is borrowed: valid until the next call into the
 * decoder that produced it (or as long as the caller's input, see below). */
typedef struct cvm_agent_frame {
        uint8_t type;
        uint64_t id;
        const uint8_t *payload;
        uint32_t len;
} cvm_agent_frame;

/* An incremental frame decoder: a stream may split frames anywhere. */
typedef struct cvm_agent_decoder {
        uint32_t max_payload;
        uint8_t header[CVM_AGENT_HEADER_SIZE];
        size_t header_len;
        cvm_agent_frame frame; /* The header of the frame being assembled. */
        uint8_t *buf;          /* Its payload, when split across inputs. */
        size_t buf_len;
        bool failed;
} cvm_agent_decoder;

/* max_payload 0 means CVM_AGENT_DEFAULT_MAX_PAYLOAD. */
void cvm_agent_decoder_init(cvm_agent_decoder *d, uint32_t max_payload);
void cvm_agent_decoder_release(cvm_agent_decoder *d);
/* Consumes bytes from data[0..len), setting *consumed. Returns 1 with *frame
 * set when a frame is complete, 0 when all input was consumed without
 * completing one, or a negative errno (-EPROTO, -EMSGSIZE, -ENOMEM) naming
 * the violation; a failed decoder stays failed. A frame that lies wholly in
 * data is returned without copying (payload points into data); only a frame
 * split across inputs is assembled in a buffer, allocated once the header
 * has been validated. Call again with the rest of the input after a frame. */
int cvm_agent_decoder_feed(cvm_agent_decoder *d, const void *data, size_t len, size_t *consumed,
                           cvm_agent_frame *frame, cvm_error *err);

typedef struct cvm_agent_hello {
        uint16_t proto_version;
        uint16_t max_concurrency; /* At least 1. */
        uint32_t capabilities;
        uint32_t max_request;  /* Largest frame payload the agent accepts. */
        uint32_t max_response; /* Largest stdout it returns. */
        uint32_t max_stderr;   /* Longest stderr tail it returns. */
        char agent_version[CVM_AGENT_MAX_VERSION_LEN + 1]; /* Printable ASCII. */
} cvm_agent_hello;

typedef struct cvm_agent_invoke {
        uint32_t timeout_ms; /* 1 .. CVM_AGENT_MAX_TIMEOUT_MS. */
        const uint8_t *body; /* Borrowed from the frame. */
        size_t body_len;
} cvm_agent_invoke;

typedef struct cvm_agent_result {
        uint8_t status;      /* cvm_agent_status. */
        uint8_t term_signal; /* FAILED by a signal: its number; else 0. */
        uint16_t exit_code;  /* FAILED by exit: 1..255; else 0. */
        uint64_t exec_us;    /* From spawn to completion, measured by the agent. */
        const uint8_t *stderr_tail;
        size_t stderr_len;
        const uint8_t *output; /* stdout; only OK and FAILED carry any. */
        size_t output_len;
} cvm_agent_result;

/* An ATTEST_RESULT. Whatever the status, the key and REPORT_DATA are there:
 * without a hardware report, a simulated PSP may sign one for REPORT_DATA. */
typedef struct cvm_agent_attest_result {
        uint8_t status; /* cvm_agent_attest_status. */
        /* FAILED: the errno of the step that failed (EIO for a malformed
         * firmware response); else 0. */
        uint32_t error;
        /* FAILED in the ioctl: its exitinfo2 (firmware error in the low 32
         * bits, VMM error in the high 32); else 0. */
        uint64_t exitinfo2;
        uint8_t report_data[CVM_AGENT_REPORT_DATA_SIZE];
        const uint8_t *public_key; /* DER SubjectPublicKeyInfo; borrowed. */
        size_t public_key_len;     /* 1 .. CVM_AGENT_MAX_PUBLIC_KEY. */
        const uint8_t *report;     /* The raw ATTESTATION_REPORT; borrowed; REPORT only. */
        size_t report_len;         /* 0, or SNP_REPORT_MIN .. SNP_REPORT_MAX with REPORT. */
} cvm_agent_attest_result;

int cvm_agent_hello_decode(const cvm_agent_frame *f, cvm_agent_hello *ret, cvm_error *err);
int cvm_agent_invoke_decode(const cvm_agent_frame *f, cvm_agent_invoke *ret, cvm_error *err);
/* The returned pointers borrow the frame's payload. */
int cvm_agent_result_decode(const cvm_agent_frame *f, cvm_agent_result *ret, cvm_error *err);
/* Checks the fields of a result as the decoder does (used by the encoder too). */
int cvm_agent_result_validate(const cvm_agent_result *r, cvm_error *err);

/* ATTEST's payload is exactly the nonce. */
int cvm_agent_attest_decode(const cvm_agent_frame *f, uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                            cvm_error *err);
/* The returned pointers borrow the frame's payload. */
int cvm_agent_attest_result_decode(const cvm_agent_frame *f, cvm_agent_attest_result *ret,
                                   cvm_error *err);
/* Checks the fields of an attestation result as the decoder does: lengths,
 * status rules, and that a report carries report_data at its REPORT_DATA
 * offset. No cryptography: see cvm_agent_attest_verify. */
int cvm_agent_attest_result_validate(const cvm_agent_attest_result *r, cvm_error *err);

/* REPORT_DATA = SHA-512(CVM_AGENT_ATTEST_CONTEXT || SHA-384(public_key) || nonce),
 * the public key being the DER SubjectPublicKeyInfo bytes as sent. */
int cvm_agent_attest_report_data(const uint8_t *public_key, size_t public_key_len,
                                 const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                                 uint8_t out[CVM_AGENT_REPORT_DATA_SIZE], cvm_error *err);
/* Checks what a client must before trusting a result for its nonce: the key
 * is exactly one DER SubjectPublicKeyInfo of an EC P-384 key, and
 * report_data recomputes from it and the nonce. -EPROTO otherwise. It does
 * not check the report's signature: that needs the AMD certificate chain. */
int cvm_agent_attest_verify(const cvm_agent_attest_result *r,
                            const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE], cvm_error *err);

/* An encoded message ready for a gather write: head holds the frame header
 * and the fixed fields; parts are the borrowed variable-length bytes that
 * follow it, so a large body is never copied. */
#define CVM_AGENT_MSG_HEAD_MAX (CVM_AGENT_HEADER_SIZE + CVM_AGENT_HELLO_FIXED + 64)
typedef struct cvm_agent_msg {
        uint8_t head[CVM_AGENT_MSG_HEAD_MAX];
        size_t head_len;
        const uint8_t *part[2];
        size_t part_len[2];
} cvm_agent_msg;

/* Encoders validate what they encode, so a peer never sees a malformed frame. */
int cvm_agent_encode_hello(const cvm_agent_hello *h, cvm_agent_msg *out, cvm_error *err);
int cvm_agent_encode_invoke(uint64_t id, uint32_t timeout_ms, const void *body, size_t len,
                            cvm_agent_msg *out, cvm_error *err);
int cvm_agent_encode_result(uint64_t id, const cvm_agent_result *r, cvm_agent_msg *out,
                            cvm_error *err);
/* The nonce is copied into the message. */
void cvm_agent_encode_attest(uint64_t id, const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                             cvm_agent_msg *out);
/* The key and report are borrowed, as parts. */
int cvm_agent_encode_attest_result(uint64_t id, const cvm_agent_attest_result *r,
                                   cvm_agent_msg *out, cvm_error *err);
/* PING, PONG and SHUTDOWN: a header with an empty payload. */
void cvm_agent_encode_empty(cvm_agent_msg_type type, uint64_t id, cvm_agent_msg *out);
/* The total encoded size of out. */
size_t cvm_agent_msg_size(const cvm_agent_msg *m);
