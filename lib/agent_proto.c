#include "agent_proto.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "le.h"

/* Header layout: magic u32, version u8, type u8, flags u16, id u64, length u32. */
#define OFF_MAGIC 0
#define OFF_VERSION 4
#define OFF_TYPE 5
#define OFF_FLAGS 6
#define OFF_ID 8
#define OFF_LEN 16

/* ATTEST_RESULT layout: status u8, reserved u8, key_len u16, report_len u32,
 * error u32, exitinfo2 u64, report_data[64], then the key and the report. */
#define AR_STATUS 0
#define AR_RESERVED 1
#define AR_KEY_LEN 2
#define AR_REPORT_LEN 4
#define AR_ERROR 8
#define AR_EXITINFO2 12
#define AR_REPORT_DATA 20
_Static_assert(AR_REPORT_DATA + CVM_AGENT_REPORT_DATA_SIZE == CVM_AGENT_ATTEST_RESULT_FIXED,
               "ATTEST_RESULT fixed fields");
/* Every message's fixed fields fit the encoder's head buffer. */
_Static_assert(CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_RESULT_FIXED <= CVM_AGENT_MSG_HEAD_MAX,
               "ATTEST_RESULT head");
_Static_assert(CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_NONCE_SIZE <= CVM_AGENT_MSG_HEAD_MAX,
               "ATTEST head");

const char *cvm_agent_msg_type_name(int type) {
        switch (type) {
        case CVM_AGENT_MSG_HELLO: return "HELLO";
        case CVM_AGENT_MSG_INVOKE: return "INVOKE";
        case CVM_AGENT_MSG_RESULT: return "RESULT";
        case CVM_AGENT_MSG_PING: return "PING";
        case CVM_AGENT_MSG_PONG: return "PONG";
        case CVM_AGENT_MSG_SHUTDOWN: return "SHUTDOWN";
        case CVM_AGENT_MSG_ATTEST: return "ATTEST";
        case CVM_AGENT_MSG_ATTEST_RESULT: return "ATTEST_RESULT";
        default: return "unknown";
        }
}

const char *cvm_agent_status_name(int status) {
        switch (status) {
        case CVM_AGENT_STATUS_OK: return "ok";
        case CVM_AGENT_STATUS_FAILED: return "failed";
        case CVM_AGENT_STATUS_TIMEOUT: return "timeout";
        case CVM_AGENT_STATUS_BUSY: return "busy";
        case CVM_AGENT_STATUS_SPAWN_ERROR: return "spawn_error";
        case CVM_AGENT_STATUS_TOO_LARGE: return "too_large";
        default: return "unknown";
        }
}

const char *cvm_agent_attest_status_name(int status) {
        switch (status) {
        case CVM_AGENT_ATTEST_REPORT: return "report";
        case CVM_AGENT_ATTEST_NO_DEVICE: return "no_device";
        case CVM_AGENT_ATTEST_FAILED: return "failed";
        default: return "unknown";
        }
}

void cvm_agent_decoder_init(cvm_agent_decoder *d, uint32_t max_payload) {
        *d = (cvm_agent_decoder){
                .max_payload = max_payload ? max_payload : CVM_AGENT_DEFAULT_MAX_PAYLOAD,
        };
}

void cvm_agent_decoder_release(cvm_agent_decoder *d) {
        free(d->buf);
        d->buf = NULL;
}

static int fail(cvm_agent_decoder *d, int code, cvm_error *err, const char *what, uint32_t value) {
        d->failed = true;
        return cvm_error_set(err, code, "agent protocol: %s (0x%x)", what, (unsigned)value);
}

/* Validates d->header into d->frame; nothing is allocated before this passes. */
static int parse_header(cvm_agent_decoder *d, cvm_error *err) {
        const uint8_t *h = d->header;
        uint32_t magic = cvm_le32(h + OFF_MAGIC), len = cvm_le32(h + OFF_LEN);
        if (magic != CVM_AGENT_PROTO_MAGIC)
                return fail(d, -EPROTO, err, "bad frame magic", magic);
        if (h[OFF_VERSION] != CVM_AGENT_PROTO_VERSION)
                return fail(d, -EPROTO, err, "unsupported frame version", h[OFF_VERSION]);
        if (h[OFF_TYPE] < CVM_AGENT_MSG_HELLO || h[OFF_TYPE] > CVM_AGENT_MSG_ATTEST_RESULT)
                return fail(d, -EPROTO, err, "unknown message type", h[OFF_TYPE]);
        if (cvm_le16(h + OFF_FLAGS) != 0)
                return fail(d, -EPROTO, err, "unknown frame flags", cvm_le16(h + OFF_FLAGS));
        if (len > d->max_payload) {
                d->failed = true;
                return cvm_error_set(err, -EMSGSIZE,
                                     "agent protocol: %s frame payload of %u bytes exceeds the "
                                     "limit of %u",
                                     cvm_agent_msg_type_name(h[OFF_TYPE]), (unsigned)len,
                                     (unsigned)d->max_payload);
        }
        d->frame = (cvm_agent_frame){.type = h[OFF_TYPE], .id = cvm_le64(h + OFF_ID), .len = len};
        return 0;
}

int cvm_agent_decoder_feed(cvm_agent_decoder *d, const void *data, size_t len, size_t *consumed,
                           cvm_agent_frame *frame, cvm_error *err) {
        const uint8_t *p = data;
        size_t used = 0;
        *consumed = 0;
        if (d->failed)
                return cvm_error_set(err, -EPROTO, "agent protocol: decoder already failed");
        /* Between frames, d->buf can only hold the frame handed out last. */
        if (d->header_len == 0)
                cvm_agent_decoder_release(d);

        if (d->header_len < CVM_AGENT_HEADER_SIZE) {
                size_t n = CVM_AGENT_HEADER_SIZE - d->header_len;
                if (n > len)
                        n = len;
                memcpy(d->header + d->header_len, p, n);
                d->header_len += n;
                used = n;
                *consumed = used;
                if (d->header_len < CVM_AGENT_HEADER_SIZE)
                        return 0;
                int r = parse_header(d, err);
                if (r < 0)
                        return r;
                d->buf_len = 0;
                /* The whole payload is in this input: hand it out in place. */
                if (len - used >= d->frame.len) {
                        *frame = d->frame;
                        frame->payload = p + used;
                        *consumed = used + d->frame.len;
                        d->header_len = 0;
                        return 1;
                }
                /* Split: the limit was checked above, so this allocation is bounded. */
                d->buf = malloc(d->frame.len);
                if (!d->buf) {
                        d->failed = true;
                        return cvm_error_set(err, -ENOMEM, "agent protocol: out of memory");
                }
        }

        size_t n = d->frame.len - d->buf_len;
        if (n > len - used)
                n = len - used;
        memcpy(d->buf + d->buf_len, p + used, n);
        d->buf_len += n;
        *consumed = used + n;
        if (d->buf_len < d->frame.len)
                return 0;
        *frame = d->frame;
        frame->payload = d->buf;
        d->header_len = 0;
        return 1;
}

static int bad_payload(cvm_error *err, const cvm_agent_frame *f, const char *what) {
        return cvm_error_set(err, -EPROTO, "agent protocol: malformed %s payload (id %llu): %s",
                             cvm_agent_msg_type_name(f->type), (unsigned long long)f->id, what);
}

static int check_version_string(const uint8_t *s, size_t len) {
        if (len < 1 || len > CVM_AGENT_MAX_VERSION_LEN)
                return -1;
        for (size_t i = 0; i < len; i++)
                if (s[i] < 0x21 || s[i] > 0x7e)
                        return -1;
        return 0;
}

int cvm_agent_hello_decode(const cvm_agent_frame *f, cvm_agent_hello *ret, cvm_error *err) {
        const uint8_t *p = f->payload;
        if (f->type != CVM_AGENT_MSG_HELLO)
                return bad_payload(err, f, "not a HELLO");
        if (f->len < CVM_AGENT_HELLO_FIXED)
                return bad_payload(err, f, "shorter than its fixed fields");
        size_t vlen = f->len - CVM_AGENT_HELLO_FIXED;
        if (check_version_string(p + CVM_AGENT_HELLO_FIXED, vlen) < 0)
                return bad_payload(err, f, "agent version is not 1-64 printable characters");
        cvm_agent_hello h = {
                .proto_version = cvm_le16(p),
                .max_concurrency = cvm_le16(p + 2),
                .capabilities = cvm_le32(p + 4),
                .max_request = cvm_le32(p + 8),
                .max_response = cvm_le32(p + 12),
                .max_stderr = cvm_le32(p + 16),
        };
        if (h.max_concurrency == 0)
                return bad_payload(err, f, "max concurrency is 0");
        if (h.max_request < CVM_AGENT_INVOKE_FIXED)
                return bad_payload(err, f, "max request is smaller than an INVOKE");
        if (h.max_stderr > CVM_AGENT_MAX_STDERR)
                return bad_payload(err, f, "max stderr exceeds the protocol limit");
        memcpy(h.agent_version, p + CVM_AGENT_HELLO_FIXED, vlen);
        h.agent_version[vlen] = '\0';
        *ret = h;
        return 0;
}

int cvm_agent_invoke_decode(const cvm_agent_frame *f, cvm_agent_invoke *ret, cvm_error *err) {
        if (f->type != CVM_AGENT_MSG_INVOKE)
                return bad_payload(err, f, "not an INVOKE");
        if (f->len < CVM_AGENT_INVOKE_FIXED)
                return bad_payload(err, f, "shorter than its fixed fields");
        uint32_t timeout_ms = cvm_le32(f->payload);
        if (timeout_ms == 0 || timeout_ms > CVM_AGENT_MAX_TIMEOUT_MS)
                return bad_payload(err, f, "timeout out of range");
        *ret = (cvm_agent_invoke){
                .timeout_ms = timeout_ms,
                .body = f->payload + CVM_AGENT_INVOKE_FIXED,
                .body_len = f->len - CVM_AGENT_INVOKE_FIXED,
        };
        return 0;
}

int cvm_agent_result_validate(const cvm_agent_result *r, cvm_error *err) {
        const char *why = NULL;
        if (r->status > CVM_AGENT_STATUS_TOO_LARGE)
                why = "unknown status";
        else if (r->stderr_len > CVM_AGENT_MAX_STDERR)
                why = "stderr tail exceeds the protocol limit";
        else if (r->status == CVM_AGENT_STATUS_FAILED) {
                bool by_exit = r->exit_code >= 1 && r->exit_code <= 255 && r->term_signal == 0;
                bool by_signal = r->exit_code == 0 && r->term_signal >= 1 && r->term_signal <= 64;
                if (!by_exit && !by_signal)
                        why = "a failure needs either an exit code or a signal";
        } else if (r->exit_code != 0 || r->term_signal != 0)
                why = "exit code or signal set on a status other than failed";
        else if (r->status != CVM_AGENT_STATUS_OK && r->output_len > 0)
                why = "output on a status other than ok or failed";
        if (why)
                return cvm_error_set(err, -EPROTO, "agent protocol: invalid RESULT (status %u): %s",
                                     r->status, why);
        return 0;
}

int cvm_agent_result_decode(const cvm_agent_frame *f, cvm_agent_result *ret, cvm_error *err) {
        const uint8_t *p = f->payload;
        if (f->type != CVM_AGENT_MSG_RESULT)
                return bad_payload(err, f, "not a RESULT");
        if (f->len < CVM_AGENT_RESULT_FIXED)
                return bad_payload(err, f, "shorter than its fixed fields");
        uint32_t stderr_len = cvm_le32(p + 4);
        if (stderr_len > f->len - CVM_AGENT_RESULT_FIXED)
                return bad_payload(err, f, "stderr length overruns the payload");
        cvm_agent_result r = {
                .status = p[0],
                .term_signal = p[1],
                .exit_code = cvm_le16(p + 2),
                .exec_us = cvm_le64(p + 8),
                .stderr_tail = p + CVM_AGENT_RESULT_FIXED,
                .stderr_len = stderr_len,
                .output = p + CVM_AGENT_RESULT_FIXED + stderr_len,
                .output_len = f->len - CVM_AGENT_RESULT_FIXED - stderr_len,
        };
        int ret_code = cvm_agent_result_validate(&r, err);
        if (ret_code < 0)
                return cvm_error_prefix(err, "id %llu: ", (unsigned long long)f->id);
        *ret = r;
        return 0;
}

int cvm_agent_attest_decode(const cvm_agent_frame *f, uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                            cvm_error *err) {
        if (f->type != CVM_AGENT_MSG_ATTEST)
                return bad_payload(err, f, "not an ATTEST");
        if (f->len != CVM_AGENT_ATTEST_NONCE_SIZE)
                return bad_payload(err, f, "the nonce is not 64 bytes");
        memcpy(nonce, f->payload, CVM_AGENT_ATTEST_NONCE_SIZE);
        return 0;
}

int cvm_agent_attest_result_validate(const cvm_agent_attest_result *r, cvm_error *err) {
        const char *why = NULL;
        bool failed = r->status == CVM_AGENT_ATTEST_FAILED;
        if (r->status > CVM_AGENT_ATTEST_FAILED)
                why = "unknown status";
        else if (r->public_key_len < 1 || r->public_key_len > CVM_AGENT_MAX_PUBLIC_KEY)
                why = "public key length out of range";
        else if (r->status == CVM_AGENT_ATTEST_REPORT &&
                 (r->report_len < CVM_AGENT_SNP_REPORT_MIN ||
                  r->report_len > CVM_AGENT_SNP_REPORT_MAX))
                why = "report length out of range";
        else if (r->status != CVM_AGENT_ATTEST_REPORT && r->report_len != 0)
                why = "a report on a status other than report";
        else if (failed && r->error == 0)
                why = "a failure without an error";
        else if (!failed && (r->error != 0 || r->exitinfo2 != 0))
                why = "an error on a status other than failed";
        /* A report for other REPORT_DATA cannot be this answer's, whoever signed it. */
        else if (r->report_len > 0 && memcmp(r->report + CVM_AGENT_SNP_REPORT_DATA_OFFSET,
                                             r->report_data, CVM_AGENT_REPORT_DATA_SIZE) != 0)
                why = "the report carries other REPORT_DATA";
        if (why)
                return cvm_error_set(err, -EPROTO,
                                     "agent protocol: invalid ATTEST_RESULT (status %u): %s",
                                     r->status, why);
        return 0;
}

int cvm_agent_attest_result_decode(const cvm_agent_frame *f, cvm_agent_attest_result *ret,
                                   cvm_error *err) {
        const uint8_t *p = f->payload;
        if (f->type != CVM_AGENT_MSG_ATTEST_RESULT)
                return bad_payload(err, f, "not an ATTEST_RESULT");
        if (f->len < CVM_AGENT_ATTEST_RESULT_FIXED)
                return bad_payload(err, f, "shorter than its fixed fields");
        if (p[AR_RESERVED] != 0)
                return bad_payload(err, f, "reserved byte is not 0");
        /* Both lengths are bounded, so their sum cannot overflow; it must fill the payload. */
        uint16_t key_len = cvm_le16(p + AR_KEY_LEN);
        uint32_t report_len = cvm_le32(p + AR_REPORT_LEN);
        if (key_len > CVM_AGENT_MAX_PUBLIC_KEY || report_len > CVM_AGENT_SNP_REPORT_MAX)
                return bad_payload(err, f, "key or report length out of range");
        if ((uint64_t)CVM_AGENT_ATTEST_RESULT_FIXED + key_len + report_len != f->len)
                return bad_payload(err, f, "key and report lengths do not fill the payload");
        cvm_agent_attest_result r = {
                .status = p[AR_STATUS],
                .error = cvm_le32(p + AR_ERROR),
                .exitinfo2 = cvm_le64(p + AR_EXITINFO2),
                .public_key = p + CVM_AGENT_ATTEST_RESULT_FIXED,
                .public_key_len = key_len,
                .report = report_len ? p + CVM_AGENT_ATTEST_RESULT_FIXED + key_len : NULL,
                .report_len = report_len,
        };
        memcpy(r.report_data, p + AR_REPORT_DATA, CVM_AGENT_REPORT_DATA_SIZE);
        if (cvm_agent_attest_result_validate(&r, err) < 0)
                return cvm_error_prefix(err, "id %llu: ", (unsigned long long)f->id);
        *ret = r;
        return 0;
}

int cvm_agent_attest_report_data(const uint8_t *public_key, size_t public_key_len,
                                 const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                                 uint8_t out[CVM_AGENT_REPORT_DATA_SIZE], cvm_error *err) {
        uint8_t key_hash[48];
        unsigned int n = 0;
        if (!EVP_Digest(public_key, public_key_len, key_hash, NULL, EVP_sha384(), NULL))
                return cvm_error_set(err, -EIO, "attestation: SHA-384 of the public key failed");
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) &&
                  EVP_DigestUpdate(ctx, CVM_AGENT_ATTEST_CONTEXT,
                                   sizeof(CVM_AGENT_ATTEST_CONTEXT) - 1) &&
                  EVP_DigestUpdate(ctx, key_hash, sizeof(key_hash)) &&
                  EVP_DigestUpdate(ctx, nonce, CVM_AGENT_ATTEST_NONCE_SIZE) &&
                  EVP_DigestFinal_ex(ctx, out, &n) && n == CVM_AGENT_REPORT_DATA_SIZE;
        EVP_MD_CTX_free(ctx);
        if (!ok)
                return cvm_error_set(err, -EIO, "attestation: SHA-512 of REPORT_DATA failed");
        return 0;
}

/* True when der is exactly one EC P-384 SubjectPublicKeyInfo, in the form
 * OpenSSL writes it (named curve, uncompressed point): one key, one encoding,
 * so one REPORT_DATA per key and nonce. */
static bool is_canonical_p384(const uint8_t *der, size_t len) {
        const unsigned char *p = der;
        char group[64] = "";
        EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)len);
        bool ok = key && p == der + len && EVP_PKEY_is_a(key, "EC") &&
                  EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                 sizeof(group), NULL) &&
                  strcmp(group, SN_secp384r1) == 0;
        unsigned char *again = NULL;
        int n = ok ? i2d_PUBKEY(key, &again) : -1;
        ok = ok && n >= 0 && (size_t)n == len && memcmp(again, der, len) == 0;
        OPENSSL_free(again);
        EVP_PKEY_free(key);
        return ok;
}

int cvm_agent_attest_verify(const cvm_agent_attest_result *r,
                            const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE], cvm_error *err) {
        if (r->public_key_len < 1 || r->public_key_len > CVM_AGENT_MAX_PUBLIC_KEY ||
            !is_canonical_p384(r->public_key, r->public_key_len))
                return cvm_error_set(err, -EPROTO,
                                     "attestation: the public key is not the DER "
                                     "SubjectPublicKeyInfo of an EC P-384 key");
        uint8_t expect[CVM_AGENT_REPORT_DATA_SIZE];
        int ret =
                cvm_agent_attest_report_data(r->public_key, r->public_key_len, nonce, expect, err);
        if (ret < 0)
                return ret;
        if (memcmp(expect, r->report_data, sizeof(expect)) != 0)
                return cvm_error_set(err, -EPROTO,
                                     "attestation: REPORT_DATA does not bind the public key to "
                                     "the nonce");
        return 0;
}

static void put_header(cvm_agent_msg *m, cvm_agent_msg_type type, uint64_t id, size_t payload_len) {
        uint8_t *h = m->head;
        cvm_put_le32(h + OFF_MAGIC, CVM_AGENT_PROTO_MAGIC);
        h[OFF_VERSION] = CVM_AGENT_PROTO_VERSION;
        h[OFF_TYPE] = (uint8_t)type;
        cvm_put_le16(h + OFF_FLAGS, 0);
        cvm_put_le64(h + OFF_ID, id);
        cvm_put_le32(h + OFF_LEN, (uint32_t)payload_len);
}

int cvm_agent_encode_hello(const cvm_agent_hello *h, cvm_agent_msg *out, cvm_error *err) {
        size_t vlen = strnlen(h->agent_version, sizeof(h->agent_version));
        if (check_version_string((const uint8_t *)h->agent_version, vlen) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "agent version must be 1-64 printable characters");
        if (h->max_concurrency == 0 || h->max_request < CVM_AGENT_INVOKE_FIXED ||
            h->max_stderr > CVM_AGENT_MAX_STDERR)
                return cvm_error_set(err, -EINVAL, "HELLO limits out of range");
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE + CVM_AGENT_HELLO_FIXED + vlen};
        put_header(out, CVM_AGENT_MSG_HELLO, 0, CVM_AGENT_HELLO_FIXED + vlen);
        uint8_t *p = out->head + CVM_AGENT_HEADER_SIZE;
        cvm_put_le16(p, h->proto_version);
        cvm_put_le16(p + 2, h->max_concurrency);
        cvm_put_le32(p + 4, h->capabilities);
        cvm_put_le32(p + 8, h->max_request);
        cvm_put_le32(p + 12, h->max_response);
        cvm_put_le32(p + 16, h->max_stderr);
        memcpy(p + CVM_AGENT_HELLO_FIXED, h->agent_version, vlen);
        return 0;
}

int cvm_agent_encode_invoke(uint64_t id, uint32_t timeout_ms, const void *body, size_t len,
                            cvm_agent_msg *out, cvm_error *err) {
        if (timeout_ms == 0 || timeout_ms > CVM_AGENT_MAX_TIMEOUT_MS)
                return cvm_error_set(err, -EINVAL, "invocation %llu: timeout %u ms out of range",
                                     (unsigned long long)id, (unsigned)timeout_ms);
        if (len > UINT32_MAX - CVM_AGENT_INVOKE_FIXED)
                return cvm_error_set(err, -EMSGSIZE, "invocation %llu: body too large",
                                     (unsigned long long)id);
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE + CVM_AGENT_INVOKE_FIXED};
        put_header(out, CVM_AGENT_MSG_INVOKE, id, CVM_AGENT_INVOKE_FIXED + len);
        cvm_put_le32(out->head + CVM_AGENT_HEADER_SIZE, timeout_ms);
        out->part[0] = body;
        out->part_len[0] = len;
        return 0;
}

int cvm_agent_encode_result(uint64_t id, const cvm_agent_result *r, cvm_agent_msg *out,
                            cvm_error *err) {
        int ret = cvm_agent_result_validate(r, err);
        if (ret < 0)
                return ret;
        if (r->output_len > UINT32_MAX - CVM_AGENT_RESULT_FIXED - r->stderr_len)
                return cvm_error_set(err, -EMSGSIZE, "invocation %llu: result too large",
                                     (unsigned long long)id);
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE + CVM_AGENT_RESULT_FIXED};
        put_header(out, CVM_AGENT_MSG_RESULT, id,
                   CVM_AGENT_RESULT_FIXED + r->stderr_len + r->output_len);
        uint8_t *p = out->head + CVM_AGENT_HEADER_SIZE;
        p[0] = r->status;
        p[1] = r->term_signal;
        cvm_put_le16(p + 2, r->exit_code);
        cvm_put_le32(p + 4, (uint32_t)r->stderr_len);
        cvm_put_le64(p + 8, r->exec_us);
        out->part[0] = r->stderr_tail;
        out->part_len[0] = r->stderr_len;
        out->part[1] = r->output;
        out->part_len[1] = r->output_len;
        return 0;
}

void cvm_agent_encode_attest(uint64_t id, const uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE],
                             cvm_agent_msg *out) {
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_NONCE_SIZE};
        put_header(out, CVM_AGENT_MSG_ATTEST, id, CVM_AGENT_ATTEST_NONCE_SIZE);
        memcpy(out->head + CVM_AGENT_HEADER_SIZE, nonce, CVM_AGENT_ATTEST_NONCE_SIZE);
}

int cvm_agent_encode_attest_result(uint64_t id, const cvm_agent_attest_result *r,
                                   cvm_agent_msg *out, cvm_error *err) {
        int ret = cvm_agent_attest_result_validate(r, err);
        if (ret < 0)
                return ret;
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_RESULT_FIXED};
        put_header(out, CVM_AGENT_MSG_ATTEST_RESULT, id,
                   CVM_AGENT_ATTEST_RESULT_FIXED + r->public_key_len + r->report_len);
        uint8_t *p = out->head + CVM_AGENT_HEADER_SIZE;
        p[AR_STATUS] = r->status;
        p[AR_RESERVED] = 0;
        cvm_put_le16(p + AR_KEY_LEN, (uint16_t)r->public_key_len);
        cvm_put_le32(p + AR_REPORT_LEN, (uint32_t)r->report_len);
        cvm_put_le32(p + AR_ERROR, r->error);
        cvm_put_le64(p + AR_EXITINFO2, r->exitinfo2);
        memcpy(p + AR_REPORT_DATA, r->report_data, CVM_AGENT_REPORT_DATA_SIZE);
        out->part[0] = r->public_key;
        out->part_len[0] = r->public_key_len;
        out->part[1] = r->report;
        out->part_len[1] = r->report_len;
        return 0;
}

void cvm_agent_encode_empty(cvm_agent_msg_type type, uint64_t id, cvm_agent_msg *out) {
        *out = (cvm_agent_msg){.head_len = CVM_AGENT_HEADER_SIZE};
        put_header(out, type, id, 0);
}

size_t cvm_agent_msg_size(const cvm_agent_msg *m) {
        return m->head_len + m->part_len[0] + m->part_len[1];
}
