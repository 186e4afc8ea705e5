/* libFuzzer target for the agent protocol decoder: arbitrary bytes, split
 * into chunks at positions taken from the input, through the frame decoder
 * and every payload decoder. Frames must come out identical however the
 * stream is split, an accepted ATTEST_RESULT must re-encode to the same
 * bytes, and nothing may read out of bounds or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decoded, re-encoded and flattened, an ATTEST_RESULT is the payload it came from. */
static void check_attest_result(const cvm_agent_frame *f) {
        cvm_agent_attest_result ar;
        if (cvm_agent_attest_result_decode(f, &ar, NULL) < 0)
                return;
        if (ar.public_key_len + ar.report_len + CVM_AGENT_ATTEST_RESULT_FIXED != f->len ||
            (ar.report_len > 0) != (ar.status == CVM_AGENT_ATTEST_REPORT))
                abort();
        cvm_agent_msg m;
        if (cvm_agent_encode_attest_result(f->id, &ar, &m, NULL) < 0 ||
            cvm_agent_msg_size(&m) != CVM_AGENT_HEADER_SIZE + f->len)
                abort();
        const uint8_t *p = f->payload;
        size_t fixed = m.head_len - CVM_AGENT_HEADER_SIZE;
        if (memcmp(m.head + CVM_AGENT_HEADER_SIZE, p, fixed) != 0 ||
            memcmp(m.part[0], p + fixed, m.part_len[0]) != 0 ||
            (m.part_len[1] && memcmp(m.part[1], p + fixed + m.part_len[0], m.part_len[1]) != 0))
                abort();
        /* The key parser sees peer bytes too; any nonce will do, it must just not crash. */
        uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE] = {0};
        (void)cvm_agent_attest_verify(&ar, nonce, NULL);
}

static void check_payload(const cvm_agent_frame *f) {
        cvm_agent_hello h;
        cvm_agent_invoke inv;
        cvm_agent_result r;
        uint8_t nonce[CVM_AGENT_ATTEST_NONCE_SIZE];
        switch (f->type) {
        case CVM_AGENT_MSG_HELLO:
                if (cvm_agent_hello_decode(f, &h, NULL) == 0 && strlen(h.agent_version) == 0)
                        abort();
                break;
        case CVM_AGENT_MSG_INVOKE:
                if (cvm_agent_invoke_decode(f, &inv, NULL) == 0 &&
                    inv.body + inv.body_len != f->payload + f->len)
                        abort();
                break;
        case CVM_AGENT_MSG_RESULT:
                if (cvm_agent_result_decode(f, &r, NULL) == 0 &&
                    r.stderr_len + r.output_len + CVM_AGENT_RESULT_FIXED != f->len)
                        abort();
                break;
        case CVM_AGENT_MSG_ATTEST:
                if (cvm_agent_attest_decode(f, nonce, NULL) == 0 &&
                    (f->len != sizeof(nonce) || memcmp(nonce, f->payload, sizeof(nonce)) != 0))
                        abort();
                break;
        case CVM_AGENT_MSG_ATTEST_RESULT: check_attest_result(f); break;
        default: break;
        }
}

/* Decodes the stream in chunks of 1 + (byte % 97) bytes when split, or whole;
 * returns a digest of the frames so the two ways can be compared. */
static uint64_t decode(const uint8_t *data, size_t size, int split) {
        cvm_agent_decoder d;
        cvm_agent_decoder_init(&d, 1 << 16);
        uint64_t digest = 1469598103934665603u;
        size_t pos = 0;
        while (pos < size) {
                size_t chunk = split ? 1 + data[pos] % 97 : size;
                if (chunk > size - pos)
                        chunk = size - pos;
                size_t off = 0;
                while (off < chunk) {
                        cvm_agent_frame f;
                        size_t used;
                        int r = cvm_agent_decoder_feed(&d, data + pos + off, chunk - off, &used, &f,
                                                       NULL);
                        if (r < 0) {
                                cvm_agent_decoder_release(&d);
                                return digest ^ 0xdead;
                        }
                        off += used;
                        if (r == 1) {
                                check_payload(&f);
                                digest = (digest ^ f.type ^ f.id ^ f.len) * 1099511628211u;
                                for (uint32_t i = 0; i < f.len; i++)
                                        digest = (digest ^ f.payload[i]) * 1099511628211u;
                        }
                }
                pos += chunk;
        }
        cvm_agent_decoder_release(&d);
        return digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (decode(data, size, 0) != decode(data, size, 1))
                abort();
        return 0;
}
