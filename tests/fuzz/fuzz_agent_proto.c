/* libFuzzer target for the agent protocol decoder: arbitrary bytes, split
 * into chunks at positions taken from the input, through the frame decoder
 * and every payload decoder. Frames must come out identical however the
 * stream is split, and nothing may read out of bounds or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_payload(const cvm_agent_frame *f) {
        cvm_agent_hello h;
        cvm_agent_invoke inv;
        cvm_agent_result r;
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
