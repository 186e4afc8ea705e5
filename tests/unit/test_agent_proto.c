/* The agent protocol codec: round trips, a stream split anywhere, and the
 * rejection of every kind of malformed frame and payload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"
#include "cleanup.h"

/* Flattens an encoded message into a buffer; returns its size. */
static size_t flatten(const cvm_agent_msg *m, uint8_t *out) {
        size_t n = m->head_len;
        memcpy(out, m->head, n);
        for (int i = 0; i < 2; i++) {
                if (m->part_len[i])
                        memcpy(out + n, m->part[i], m->part_len[i]);
                n += m->part_len[i];
        }
        return n;
}

/* Decodes exactly one frame from buf, fed in one piece. */
static int decode_one(const uint8_t *buf, size_t len, uint32_t max, cvm_agent_decoder *d,
                      cvm_agent_frame *f, cvm_error *err) {
        size_t used;
        cvm_agent_decoder_init(d, max);
        int r = cvm_agent_decoder_feed(d, buf, len, &used, f, err);
        if (r == 1)
                assert_int_equal(used, len);
        return r;
}

static void test_round_trip(void **state) {
        (void)state;
        uint8_t buf[4096];
        cvm_agent_msg m;
        cvm_agent_frame f;
        cvm_agent_decoder d;
        cvm_error err = {0};

        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 4,
                             .capabilities = 0x81,
                             .max_request = 1000,
                             .max_response = 2000,
                             .max_stderr = 300,
                             .agent_version = "1.2.3-rc1"};
        assert_int_equal(cvm_agent_encode_hello(&h, &m, &err), 0);
        size_t n = flatten(&m, buf);
        assert_int_equal(n, cvm_agent_msg_size(&m));
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        assert_int_equal(f.type, CVM_AGENT_MSG_HELLO);
        cvm_agent_hello h2;
        assert_int_equal(cvm_agent_hello_decode(&f, &h2, &err), 0);
        assert_int_equal(h2.proto_version, 1);
        assert_int_equal(h2.max_concurrency, 4);
        assert_int_equal(h2.capabilities, 0x81);
        assert_int_equal(h2.max_request, 1000);
        assert_int_equal(h2.max_response, 2000);
        assert_int_equal(h2.max_stderr, 300);
        assert_string_equal(h2.agent_version, "1.2.3-rc1");

        assert_int_equal(cvm_agent_encode_invoke(42, 1500, "body!", 5, &m, &err), 0);
        n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        cvm_agent_invoke inv;
        assert_int_equal(cvm_agent_invoke_decode(&f, &inv, &err), 0);
        assert_int_equal(f.id, 42);
        assert_int_equal(inv.timeout_ms, 1500);
        assert_int_equal(inv.body_len, 5);
        assert_memory_equal(inv.body, "body!", 5);
        /* A frame wholly in the input is handed out in place. */
        assert_ptr_equal(f.payload, buf + CVM_AGENT_HEADER_SIZE);

        cvm_agent_result r = {.status = CVM_AGENT_STATUS_FAILED,
                              .exit_code = 7,
                              .exec_us = UINT64_C(0x123456789a),
                              .stderr_tail = (const uint8_t *)"err",
                              .stderr_len = 3,
                              .output = (const uint8_t *)"out!",
                              .output_len = 4};
        assert_int_equal(cvm_agent_encode_result(UINT64_MAX, &r, &m, &err), 0);
        n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        cvm_agent_result r2;
        assert_int_equal(cvm_agent_result_decode(&f, &r2, &err), 0);
        assert_int_equal(f.id, UINT64_MAX);
        assert_int_equal(r2.status, CVM_AGENT_STATUS_FAILED);
        assert_int_equal(r2.exit_code, 7);
        assert_int_equal(r2.exec_us, r.exec_us);
        assert_int_equal(r2.stderr_len, 3);
        assert_memory_equal(r2.stderr_tail, "err", 3);
        assert_int_equal(r2.output_len, 4);
        assert_memory_equal(r2.output, "out!", 4);

        cvm_agent_encode_empty(CVM_AGENT_MSG_PING, 9, &m);
        n = flatten(&m, buf);
        assert_int_equal(n, CVM_AGENT_HEADER_SIZE);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        assert_int_equal(f.type, CVM_AGENT_MSG_PING);
        assert_int_equal(f.id, 9);
        assert_int_equal(f.len, 0);
}

typedef struct frame_copy {
        uint8_t type;
        uint64_t id;
        uint8_t *payload;
        uint32_t len;
} frame_copy;

/* Feeds stream in chunks of the given sizes (cycled; 0 = random 1..max_chunk). */
static size_t feed_chunks(const uint8_t *stream, size_t len, size_t chunk, size_t max_chunk,
                          frame_copy *out, size_t max_out) {
        cvm_agent_decoder d;
        cvm_agent_decoder_init(&d, 0);
        size_t pos = 0, n = 0;
        while (pos < len) {
                size_t c = chunk ? chunk : 1 + (size_t)rand() % max_chunk;
                if (c > len - pos)
                        c = len - pos;
                const uint8_t *p = stream + pos;
                size_t left = c;
                while (left > 0) {
                        cvm_agent_frame f;
                        size_t used;
                        int r = cvm_agent_decoder_feed(&d, p, left, &used, &f, NULL);
                        assert_true(r >= 0);
                        assert_true(used > 0 || (r == 1 && f.len == 0));
                        p += used;
                        left -= used;
                        if (r == 1) {
                                assert_true(n < max_out);
                                out[n] = (frame_copy){.type = f.type,
                                                      .id = f.id,
                                                      .len = f.len,
                                                      .payload = malloc(f.len + 1)};
                                memcpy(out[n].payload, f.payload, f.len);
                                n++;
                        }
                }
                pos += c;
        }
        assert_int_equal(d.header_len, 0); /* Nothing left half-decoded. */
        cvm_agent_decoder_release(&d);
        return n;
}

static void test_split_anywhere(void **state) {
        (void)state;
        size_t big_len = 300000;
        uint8_t *big = malloc(big_len);
        for (size_t i = 0; i < big_len; i++)
                big[i] = (uint8_t)(i * 131 + 7);
        uint8_t *stream = malloc(big_len + 4096);
        size_t len = 0;
        cvm_agent_msg m;
        cvm_agent_encode_empty(CVM_AGENT_MSG_PING, 1, &m);
        len += flatten(&m, stream + len);
        assert_int_equal(cvm_agent_encode_invoke(2, 10, big, big_len, &m, NULL), 0);
        len += flatten(&m, stream + len);
        cvm_agent_encode_empty(CVM_AGENT_MSG_SHUTDOWN, 3, &m);
        len += flatten(&m, stream + len);
        assert_int_equal(cvm_agent_encode_invoke(4, 10, "x", 1, &m, NULL), 0);
        len += flatten(&m, stream + len);
        cvm_agent_result r = {.status = CVM_AGENT_STATUS_OK, .output = big, .output_len = 999};
        assert_int_equal(cvm_agent_encode_result(5, &r, &m, NULL), 0);
        len += flatten(&m, stream + len);
        uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE] = {1, 2, 3};
        cvm_agent_encode_attest(6, nonce, &m);
        len += flatten(&m, stream + len);
        /* A report-carrying result: its REPORT_DATA field is big's bytes at 0x50 too. */
        cvm_agent_attest_result ar = {.status = CVM_AGENT_ATTEST_REPORT,
                                      .public_key = big,
                                      .public_key_len = 120,
                                      .report = big,
                                      .report_len = CVM_AGENT_SNP_REPORT_MIN};
        memcpy(ar.report_data, big + CVM_AGENT_SNP_REPORT_DATA_OFFSET, 64);
        assert_int_equal(cvm_agent_encode_attest_result(7, &ar, &m, NULL), 0);
        len += flatten(&m, stream + len);

        frame_copy whole[8], pieces[8];
        size_t n = feed_chunks(stream, len, len, 0, whole, 8);
        assert_int_equal(n, 7);
        assert_int_equal(whole[6].type, CVM_AGENT_MSG_ATTEST_RESULT);
        assert_int_equal(whole[6].len, CVM_AGENT_ATTEST_RESULT_FIXED + 120 + 0x4A0);
        srand(12345);
        size_t chunks[] = {1, 0, 0, 7, 20, 21, 65536};
        size_t maxes[] = {0, 3, 5000, 0, 0, 0, 0};
        for (size_t k = 0; k < CVM_ARRAY_SIZE(chunks); k++) {
                size_t m2 = feed_chunks(stream, len, chunks[k], maxes[k], pieces, 8);
                assert_int_equal(m2, n);
                for (size_t i = 0; i < n; i++) {
                        assert_int_equal(pieces[i].type, whole[i].type);
                        assert_int_equal(pieces[i].id, whole[i].id);
                        assert_int_equal(pieces[i].len, whole[i].len);
                        assert_memory_equal(pieces[i].payload, whole[i].payload, whole[i].len);
                        free(pieces[i].payload);
                }
        }
        assert_int_equal(whole[1].len, big_len + CVM_AGENT_INVOKE_FIXED);
        assert_memory_equal(whole[1].payload + CVM_AGENT_INVOKE_FIXED, big, big_len);
        for (size_t i = 0; i < n; i++)
                free(whole[i].payload);
        free(stream);
        free(big);
}

/* Corrupts one header field of a PING and expects the decoder to refuse it. */
static void expect_bad_header(size_t off, uint8_t value, int code, const char *needle) {
        cvm_agent_msg m;
        cvm_agent_encode_empty(CVM_AGENT_MSG_PING, 1, &m);
        m.head[off] = value;
        cvm_agent_decoder d;
        cvm_agent_frame f;
        cvm_error err = {0};
        assert_int_equal(decode_one(m.head, m.head_len, 0, &d, &f, &err), code);
        assert_non_null(strstr(err.message, needle));
        /* A failed decoder stays failed. */
        size_t used;
        cvm_agent_encode_empty(CVM_AGENT_MSG_PING, 1, &m);
        assert_true(cvm_agent_decoder_feed(&d, m.head, m.head_len, &used, &f, NULL) < 0);
        cvm_agent_decoder_release(&d);
}

static void test_bad_headers(void **state) {
        (void)state;
        expect_bad_header(0, 'X', -EPROTO, "magic");
        expect_bad_header(4, 2, -EPROTO, "version");
        expect_bad_header(5, 0, -EPROTO, "unknown message type");
        expect_bad_header(5, 9, -EPROTO, "unknown message type");
        expect_bad_header(6, 1, -EPROTO, "flags");

        /* An oversized length is refused from the header alone, before any payload. */
        cvm_agent_msg m;
        assert_int_equal(cvm_agent_encode_invoke(1, 10, NULL, 0, &m, NULL), 0);
        m.head[16] = 0xff, m.head[17] = 0xff, m.head[18] = 0xff, m.head[19] = 0xff;
        cvm_agent_decoder d;
        cvm_agent_frame f;
        cvm_error err = {0};
        assert_int_equal(decode_one(m.head, CVM_AGENT_HEADER_SIZE, 0, &d, &f, &err), -EMSGSIZE);
        assert_non_null(strstr(err.message, "INVOKE frame payload of 4294967295 bytes"));
        assert_null(d.buf);

        /* The limit is the caller's: 100 bytes allowed, 101 refused. */
        uint8_t body[101] = {0};
        assert_int_equal(cvm_agent_encode_invoke(1, 10, body, 96, &m, NULL), 0);
        uint8_t buf[256];
        size_t n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 100, &d, &f, NULL), 1);
        assert_int_equal(cvm_agent_encode_invoke(1, 10, body, 97, &m, NULL), 0);
        n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 100, &d, &f, NULL), -EMSGSIZE);
}

/* Builds a frame of the given type around a raw payload. */
static cvm_agent_frame raw_frame(uint8_t type, const void *payload, uint32_t len) {
        return (cvm_agent_frame){.type = type, .id = 5, .payload = payload, .len = len};
}

static void test_bad_payloads(void **state) {
        (void)state;
        cvm_error err = {0};
        cvm_agent_hello h;
        uint8_t hello[CVM_AGENT_HELLO_FIXED + 4] = {1,   0, 1, 0, 1,  0, 0, 0, 100, 0,   0,   0,
                                                    100, 0, 0, 0, 10, 0, 0, 0, '1', '.', '0', '0'};
        cvm_agent_frame f = raw_frame(CVM_AGENT_MSG_HELLO, hello, sizeof(hello));
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), 0);
        assert_string_equal(h.agent_version, "1.00");
        f.len = CVM_AGENT_HELLO_FIXED; /* No version string. */
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), -EPROTO);
        f.len = 10;
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), -EPROTO);
        f.len = sizeof(hello);
        hello[CVM_AGENT_HELLO_FIXED + 1] = '\n';
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), -EPROTO);
        assert_non_null(strstr(err.message, "agent version"));
        hello[CVM_AGENT_HELLO_FIXED + 1] = '.';
        hello[2] = 0; /* Concurrency 0. */
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), -EPROTO);
        assert_non_null(strstr(err.message, "concurrency"));
        hello[2] = 1;
        hello[18] = 1; /* max_stderr 64 KiB + 10. */
        assert_int_equal(cvm_agent_hello_decode(&f, &h, &err), -EPROTO);
        hello[18] = 0;

        cvm_agent_invoke inv;
        uint8_t invoke[6] = {0, 0, 0, 0, 'h', 'i'};
        f = raw_frame(CVM_AGENT_MSG_INVOKE, invoke, sizeof(invoke));
        assert_int_equal(cvm_agent_invoke_decode(&f, &inv, &err), -EPROTO);
        assert_non_null(strstr(err.message, "timeout"));
        invoke[0] = 1;
        assert_int_equal(cvm_agent_invoke_decode(&f, &inv, &err), 0);
        f.len = 3;
        assert_int_equal(cvm_agent_invoke_decode(&f, &inv, &err), -EPROTO);
        f = raw_frame(CVM_AGENT_MSG_PING, invoke, sizeof(invoke));
        assert_int_equal(cvm_agent_invoke_decode(&f, &inv, &err), -EPROTO);

        cvm_agent_result r;
        uint8_t result[CVM_AGENT_RESULT_FIXED + 4] = {0};
        f = raw_frame(CVM_AGENT_MSG_RESULT, result, sizeof(result));
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), 0);
        assert_int_equal(r.output_len, 4);
        result[4] = 5; /* stderr length beyond the payload. */
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        assert_non_null(strstr(err.message, "overruns"));
        result[4] = 4;
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), 0);
        assert_int_equal(r.stderr_len, 4);
        assert_int_equal(r.output_len, 0);
        result[0] = 6; /* Unknown status. */
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        result[0] = CVM_AGENT_STATUS_FAILED; /* Neither exit code nor signal. */
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        result[1] = 9;
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), 0);
        result[2] = 1; /* Both. */
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        result[0] = CVM_AGENT_STATUS_OK; /* Exit code on success. */
        result[1] = 0;
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        result[2] = 0;
        result[0] = CVM_AGENT_STATUS_BUSY;
        result[4] = 0; /* Output on busy. */
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
        assert_non_null(strstr(err.message, "output"));
        f.len = CVM_AGENT_RESULT_FIXED - 1;
        assert_int_equal(cvm_agent_result_decode(&f, &r, &err), -EPROTO);
}

static void test_encoders_validate(void **state) {
        (void)state;
        cvm_agent_msg m;
        assert_int_equal(cvm_agent_encode_invoke(1, 0, "", 0, &m, NULL), -EINVAL);
        assert_int_equal(cvm_agent_encode_invoke(1, CVM_AGENT_MAX_TIMEOUT_MS + 1, "", 0, &m, NULL),
                         -EINVAL);
        cvm_agent_result r = {.status = CVM_AGENT_STATUS_TIMEOUT,
                              .output_len = 1,
                              .output = (const uint8_t *)"x"};
        assert_int_equal(cvm_agent_encode_result(1, &r, &m, NULL), -EPROTO);
        cvm_agent_hello h = {.proto_version = 1,
                             .max_concurrency = 1,
                             .max_request = 4,
                             .agent_version = "bad version"};
        assert_int_equal(cvm_agent_encode_hello(&h, &m, NULL), -EINVAL);
        assert_string_equal(cvm_agent_msg_type_name(99), "unknown");
        assert_string_equal(cvm_agent_status_name(CVM_AGENT_STATUS_TOO_LARGE), "too_large");
}

/* A fresh P-384 key's DER SubjectPublicKeyInfo; OPENSSL_free it. */
static size_t make_key(const char *curve, uint8_t **der) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
        assert_non_null(k);
        *der = NULL;
        int n = i2d_PUBKEY(k, der);
        assert_true(n > 0);
        EVP_PKEY_free(k);
        return (size_t)n;
}

/* REPORT_DATA computed the other way: one SHA-512 over the concatenation. */
static void expected_report_data(const uint8_t *key, size_t len, const uint8_t *nonce,
                                 uint8_t out[64]) {
        uint8_t buf[13 + 48 + 64];
        memcpy(buf, "cvm-attest-v1", 13);
        assert_int_equal(EVP_Digest(key, len, buf + 13, NULL, EVP_sha384(), NULL), 1);
        memcpy(buf + 13 + 48, nonce, 64);
        assert_int_equal(EVP_Digest(buf, sizeof(buf), out, NULL, EVP_sha512(), NULL), 1);
}

static void test_attest_round_trip(void **state) {
        (void)state;
        uint8_t buf[8192];
        cvm_agent_msg m;
        cvm_agent_frame f;
        cvm_agent_decoder d;
        cvm_error err = {0};
        uint8_t nonce[64], nonce2[64];
        for (int i = 0; i < 64; i++)
                nonce[i] = (uint8_t)(0xa0 + i);

        cvm_agent_encode_attest(17, nonce, &m);
        size_t n = flatten(&m, buf);
        assert_int_equal(n, CVM_AGENT_HEADER_SIZE + 64);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        assert_int_equal(f.type, CVM_AGENT_MSG_ATTEST);
        assert_int_equal(f.id, 17);
        assert_int_equal(cvm_agent_attest_decode(&f, nonce2, &err), 0);
        assert_memory_equal(nonce2, nonce, 64);

        /* Without a device: the key and REPORT_DATA, no report. */
        uint8_t *key;
        size_t key_len = make_key("P-384", &key);
        assert_int_equal(key_len, 120);
        cvm_agent_attest_result r = {
                .status = CVM_AGENT_ATTEST_NO_DEVICE, .public_key = key, .public_key_len = key_len};
        assert_int_equal(cvm_agent_attest_report_data(key, key_len, nonce, r.report_data, &err), 0);
        uint8_t expect[64];
        expected_report_data(key, key_len, nonce, expect);
        assert_memory_equal(r.report_data, expect, 64);
        assert_int_equal(cvm_agent_encode_attest_result(17, &r, &m, &err), 0);
        n = flatten(&m, buf);
        assert_int_equal(n, CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_RESULT_FIXED + key_len);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        cvm_agent_attest_result r2;
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r2, &err), 0);
        assert_int_equal(r2.status, CVM_AGENT_ATTEST_NO_DEVICE);
        assert_int_equal(r2.public_key_len, key_len);
        assert_memory_equal(r2.public_key, key, key_len);
        assert_memory_equal(r2.report_data, expect, 64);
        assert_null(r2.report);
        assert_int_equal(r2.report_len, 0);
        assert_int_equal(r2.error, 0);
        assert_int_equal(cvm_agent_attest_verify(&r2, nonce, &err), 0);

        /* With a report: its REPORT_DATA field must be the one in the result. */
        uint8_t report[CVM_AGENT_SNP_REPORT_MIN];
        for (size_t i = 0; i < sizeof(report); i++)
                report[i] = (uint8_t)(i * 7);
        memcpy(report + 0x50, expect, 64);
        r.status = CVM_AGENT_ATTEST_REPORT;
        r.report = report;
        r.report_len = sizeof(report);
        assert_int_equal(cvm_agent_encode_attest_result(18, &r, &m, &err), 0);
        n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r2, &err), 0);
        assert_int_equal(r2.status, CVM_AGENT_ATTEST_REPORT);
        assert_int_equal(r2.report_len, sizeof(report));
        assert_memory_equal(r2.report, report, sizeof(report));
        assert_int_equal(cvm_agent_attest_verify(&r2, nonce, &err), 0);

        /* A failed request says why. */
        r = (cvm_agent_attest_result){.status = CVM_AGENT_ATTEST_FAILED,
                                      .error = EIO,
                                      .exitinfo2 = UINT64_C(0x200000016),
                                      .public_key = key,
                                      .public_key_len = key_len};
        memcpy(r.report_data, expect, 64);
        assert_int_equal(cvm_agent_encode_attest_result(UINT64_MAX, &r, &m, &err), 0);
        n = flatten(&m, buf);
        assert_int_equal(decode_one(buf, n, 0, &d, &f, &err), 1);
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r2, &err), 0);
        assert_int_equal(r2.status, CVM_AGENT_ATTEST_FAILED);
        assert_int_equal(r2.error, EIO);
        assert_int_equal(r2.exitinfo2, UINT64_C(0x200000016));
        assert_string_equal(cvm_agent_attest_status_name(r2.status), "failed");
        assert_string_equal(cvm_agent_msg_type_name(CVM_AGENT_MSG_ATTEST_RESULT), "ATTEST_RESULT");
        OPENSSL_free(key);
}

/* Builds an ATTEST_RESULT payload field by field into p; returns its length. */
static size_t attest_payload(uint8_t *p, uint8_t status, uint16_t key_len, uint32_t report_len,
                             uint32_t error) {
        memset(p, 0, CVM_AGENT_ATTEST_RESULT_FIXED + key_len + report_len);
        p[0] = status;
        p[2] = (uint8_t)key_len, p[3] = (uint8_t)(key_len >> 8);
        for (int i = 0; i < 4; i++) {
                p[4 + i] = (uint8_t)(report_len >> (8 * i));
                p[8 + i] = (uint8_t)(error >> (8 * i));
        }
        return CVM_AGENT_ATTEST_RESULT_FIXED + key_len + report_len;
}

static void expect_bad_attest_result(uint8_t *p, size_t len, const char *needle) {
        cvm_agent_frame f = {
                .type = CVM_AGENT_MSG_ATTEST_RESULT, .id = 3, .payload = p, .len = (uint32_t)len};
        cvm_agent_attest_result r;
        cvm_error err = {0};
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r, &err), -EPROTO);
        if (!strstr(err.message, needle))
                fail_msg("%s: expected %s", err.message, needle);
}

static void test_attest_bad_payloads(void **state) {
        (void)state;
        cvm_error err = {0};
        uint8_t nonce[65] = {0};
        cvm_agent_frame f = {.type = CVM_AGENT_MSG_ATTEST, .payload = nonce, .len = 63};
        assert_int_equal(cvm_agent_attest_decode(&f, nonce, &err), -EPROTO);
        assert_non_null(strstr(err.message, "nonce"));
        f.len = 65;
        assert_int_equal(cvm_agent_attest_decode(&f, nonce, &err), -EPROTO);
        f.len = 0;
        assert_int_equal(cvm_agent_attest_decode(&f, nonce, &err), -EPROTO);
        f.type = CVM_AGENT_MSG_PING;
        f.len = 64;
        assert_int_equal(cvm_agent_attest_decode(&f, nonce, &err), -EPROTO);

        static uint8_t p[CVM_AGENT_ATTEST_RESULT_MAX + 64];
        cvm_agent_attest_result r;
        size_t n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 120, 0, 0);
        f = (cvm_agent_frame){
                .type = CVM_AGENT_MSG_ATTEST_RESULT, .payload = p, .len = (uint32_t)n};
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r, &err), 0);
        f.type = CVM_AGENT_MSG_RESULT;
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r, &err), -EPROTO);

        expect_bad_attest_result(p, CVM_AGENT_ATTEST_RESULT_FIXED - 1, "shorter");
        expect_bad_attest_result(p, n - 1, "do not fill");
        expect_bad_attest_result(p, n + 1, "do not fill");
        n = attest_payload(p, 3, 120, 0, 0);
        expect_bad_attest_result(p, n, "unknown status");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 120, 0, 0);
        p[1] = 1;
        expect_bad_attest_result(p, n, "reserved");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 0, 0, 0);
        expect_bad_attest_result(p, n, "public key length");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, CVM_AGENT_MAX_PUBLIC_KEY + 1, 0, 0);
        expect_bad_attest_result(p, n, "out of range");
        /* Reports: too short, oversized, or where none belongs. */
        n = attest_payload(p, CVM_AGENT_ATTEST_REPORT, 120, 0, 0);
        expect_bad_attest_result(p, n, "report length");
        n = attest_payload(p, CVM_AGENT_ATTEST_REPORT, 120, CVM_AGENT_SNP_REPORT_MIN - 1, 0);
        expect_bad_attest_result(p, n, "report length");
        n = attest_payload(p, CVM_AGENT_ATTEST_REPORT, 120, CVM_AGENT_SNP_REPORT_MAX + 1, 0);
        expect_bad_attest_result(p, n, "out of range");
        /* A length field near 4 GiB is refused, not summed into an overflow. */
        n = attest_payload(p, CVM_AGENT_ATTEST_REPORT, 120, 0, 0);
        p[4] = p[5] = p[6] = p[7] = 0xff;
        expect_bad_attest_result(p, n, "out of range");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 120, CVM_AGENT_SNP_REPORT_MIN, 0);
        expect_bad_attest_result(p, n, "a report on a status");
        n = attest_payload(p, CVM_AGENT_ATTEST_FAILED, 120, CVM_AGENT_SNP_REPORT_MIN, EIO);
        expect_bad_attest_result(p, n, "a report on a status");
        /* Errors belong to FAILED, and FAILED needs one. */
        n = attest_payload(p, CVM_AGENT_ATTEST_FAILED, 120, 0, 0);
        expect_bad_attest_result(p, n, "without an error");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 120, 0, EIO);
        expect_bad_attest_result(p, n, "an error on a status");
        n = attest_payload(p, CVM_AGENT_ATTEST_NO_DEVICE, 120, 0, 0);
        p[19] = 1; /* exitinfo2. */
        expect_bad_attest_result(p, n, "an error on a status");
        /* A full-size report is accepted when it carries the result's REPORT_DATA, else not. */
        n = attest_payload(p, CVM_AGENT_ATTEST_REPORT, 120, CVM_AGENT_SNP_REPORT_MAX, 0);
        f.type = CVM_AGENT_MSG_ATTEST_RESULT;
        f.len = (uint32_t)n;
        assert_int_equal(n, CVM_AGENT_ATTEST_RESULT_MAX - (CVM_AGENT_MAX_PUBLIC_KEY - 120));
        assert_int_equal(cvm_agent_attest_result_decode(&f, &r, &err), 0);
        assert_int_equal(r.report_len, CVM_AGENT_SNP_REPORT_MAX);
        assert_ptr_equal(r.report, p + CVM_AGENT_ATTEST_RESULT_FIXED + 120);
        p[CVM_AGENT_ATTEST_RESULT_FIXED + 120 + 0x50 + 63] = 1;
        expect_bad_attest_result(p, n, "other REPORT_DATA");
}

static void test_attest_encoders_validate(void **state) {
        (void)state;
        cvm_agent_msg m;
        static uint8_t big[CVM_AGENT_SNP_REPORT_MAX + 1];
        cvm_agent_attest_result r = {.status = CVM_AGENT_ATTEST_REPORT,
                                     .public_key = big,
                                     .public_key_len = 120,
                                     .report = big,
                                     .report_len = sizeof(big)};
        assert_int_equal(cvm_agent_encode_attest_result(1, &r, &m, NULL), -EPROTO);
        r.report_len = CVM_AGENT_SNP_REPORT_MAX;
        assert_int_equal(cvm_agent_encode_attest_result(1, &r, &m, NULL), 0);
        assert_int_equal(cvm_agent_msg_size(&m),
                         CVM_AGENT_HEADER_SIZE + CVM_AGENT_ATTEST_RESULT_MAX - 392);
        r.public_key_len = CVM_AGENT_MAX_PUBLIC_KEY + 1;
        assert_int_equal(cvm_agent_encode_attest_result(1, &r, &m, NULL), -EPROTO);
        r.public_key_len = 120;
        r.status = CVM_AGENT_ATTEST_NO_DEVICE;
        assert_int_equal(cvm_agent_encode_attest_result(1, &r, &m, NULL), -EPROTO);
}

static void test_attest_verify(void **state) {
        (void)state;
        cvm_error err = {0};
        uint8_t nonce[64] = {9, 8, 7};
        uint8_t *key;
        size_t key_len = make_key("P-384", &key);
        cvm_agent_attest_result r = {
                .status = CVM_AGENT_ATTEST_NO_DEVICE, .public_key = key, .public_key_len = key_len};
        expected_report_data(key, key_len, nonce, r.report_data);
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), 0);

        /* Another nonce, or another REPORT_DATA, does not verify. */
        nonce[63] ^= 1;
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        assert_non_null(strstr(err.message, "REPORT_DATA"));
        nonce[63] ^= 1;
        r.report_data[0] ^= 1;
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        r.report_data[0] ^= 1;

        /* Trailing bytes, a truncated key, another curve, garbage: all refused. */
        uint8_t padded[200];
        memcpy(padded, key, key_len);
        padded[key_len] = 0;
        r.public_key = padded;
        r.public_key_len = key_len + 1;
        expected_report_data(padded, key_len + 1, nonce, r.report_data);
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        assert_non_null(strstr(err.message, "P-384"));
        r.public_key_len = key_len - 1;
        expected_report_data(padded, key_len - 1, nonce, r.report_data);
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        uint8_t *p256;
        size_t p256_len = make_key("P-256", &p256);
        r.public_key = p256;
        r.public_key_len = p256_len;
        expected_report_data(p256, p256_len, nonce, r.report_data);
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        r.public_key = nonce;
        r.public_key_len = sizeof(nonce);
        assert_int_equal(cvm_agent_attest_verify(&r, nonce, &err), -EPROTO);
        OPENSSL_free(p256);
        OPENSSL_free(key);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_split_anywhere),
                cmocka_unit_test(test_bad_headers),
                cmocka_unit_test(test_bad_payloads),
                cmocka_unit_test(test_encoders_validate),
                cmocka_unit_test(test_attest_round_trip),
                cmocka_unit_test(test_attest_bad_payloads),
                cmocka_unit_test(test_attest_encoders_validate),
                cmocka_unit_test(test_attest_verify),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
