/* Launch images and handlers: the image spec a VM is launched from (firmware,
 * optional kernel, initrd and command line, vCPUs, memory, SNP policy), the
 * handler the guest agent runs per invocation, and a cache of measured images.
 * Measuring reads and hashes the files, so it runs off the loop and its
 * result is shared by every VM launched from the same files. See
 * docs/images.md. Everything here runs on the loop thread. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "error.h"
#include "psp_cost.h"
#include "snp_measure.h"

#define CVM_IMAGE_PATH_MAX 4095u             /* Bytes of a path, without the NUL. */
#define CVM_IMAGE_CMDLINE_MAX 2047u          /* Linux x86 COMMAND_LINE_SIZE less the NUL. */
#define CVM_IMAGE_VCPU_TYPE_MAX 64u          /* Bytes of a vcpu_type name. */
#define CVM_IMAGE_VCPUS_MAX 64u              /* vcpus is 1..this. */
#define CVM_IMAGE_MEMORY_MIB_MIN 16u         /* memory_mib is this..CVM_IMAGE_MEMORY_MIB_MAX. */
#define CVM_IMAGE_MEMORY_MIB_MAX 65536u      /* 64 GiB. */
#define CVM_IMAGE_BOOT_MS_MAX 600000u        /* Ten minutes of simulated boot at most. */
#define CVM_IMAGE_FIRMWARE_MAX (16ull << 20) /* = CVM_SNP_MAX_FIRMWARE_SIZE. */
#define CVM_IMAGE_KERNEL_MAX (256ull << 20)  /* 256 MiB. */
#define CVM_IMAGE_INITRD_MAX (1ull << 30)    /* 1 GiB. */
#define CVM_IMAGE_POLICY_RESERVED1 (UINT64_C(1) << 17)    /* Must be set. */
#define CVM_IMAGE_POLICY_MBZ (~((UINT64_C(1) << 26) - 1)) /* Bits 63:26 must be zero. */

#define CVM_HANDLER_ARGS_MAX 64u  /* exec holds 1..this strings. */
#define CVM_HANDLER_ARG_MAX 4095u /* Bytes of one string, without the NUL. */

#define CVM_IMAGE_CACHE_ENTRIES_MAX 4096u /* max_entries is 1..this. */

/* A launch image: what a VM is launched from. Paths are absolute. */
typedef struct cvm_image_spec {
        char *firmware;          /* Required after defaults. */
        char *kernel;            /* NULL: no kernel. */
        char *initrd;            /* NULL: none; needs a kernel. */
        char *cmdline;           /* NULL: none; needs a kernel. */
        uint32_t vcpus;          /* 1..64 */
        uint32_t memory_mib;     /* 16..65536 */
        uint64_t guest_policy;   /* SNP guest policy; JSON: a hex string "0x30000". Bit 17
                                  * (reserved, must be 1) required; bits 63:26 must be 0. */
        char *vcpu_type;         /* QEMU -cpu model, validated with cvm_snp_vcpu_signature. */
        uint64_t guest_features; /* VMSA SEV_FEATURES; JSON hex string; bit 0 required. */
        /* The sim host's boot model for this image (ignored by real hosts): */
        uint32_t firmware_boot_ms; /* Time the firmware runs before the kernel. */
        uint32_t kernel_boot_ms;   /* Kernel start to the agent's process start. */
} cvm_image_spec;

/* Built-in defaults: firmware "/usr/share/ovmf/OVMF.fd", no kernel, vcpus 1,
 * memory_mib 256, guest_policy 0x30000, vcpu_type "EPYC-v4", guest_features
 * 0x1, firmware_boot_ms 3000 (OVMF's ~3 s of firmware per VM, SEVeriFast
 * ASPLOS'24), kernel_boot_ms 125 (a microVM Linux to user space, Firecracker
 * NSDI'20). The firmware is not checked here; parse checks it. */
int cvm_image_spec_default(cvm_image_spec *ret, cvm_error *err);

/* Parses the JSON object obj (fields: firmware, kernel, initrd, cmdline,
 * vcpus, memory_mib, guest_policy, vcpu_type, guest_features,
 * firmware_boot_ms, kernel_boot_ms; unknown fields are errors) over a copy
 * of defaults (NULL: the built-in defaults). obj may be NULL (just the
 * defaults, validated). kernel, initrd and cmdline may be null to clear a
 * default. path prefixes field names in messages ("image", "sim.image").
 * Validates ranges, hex strings, absolute paths (no NUL, <= 4095 bytes) and
 * each named file: it exists, is a regular file, is readable and is within
 * its limit (firmware a non-zero multiple of 4 KiB and <= 16 MiB, kernel
 * non-empty and <= 256 MiB, initrd <= 1 GiB); such messages name the field
 * and the file ("image.firmware: /x/fw.bin: No such file or directory").
 * Every validation error is -EINVAL. Uses stat/access only, cheap enough for
 * the loop. On error *ret is untouched; on success *ret is overwritten (not
 * freed first), so ret may be defaults only if the caller keeps the old
 * strings' owner elsewhere. */
int cvm_image_spec_parse(json_t *obj, const cvm_image_spec *defaults, const char *path,
                         cvm_image_spec *ret, cvm_error *err);
int cvm_image_spec_copy(const cvm_image_spec *src, cvm_image_spec *ret, cvm_error *err);
void cvm_image_spec_done(cvm_image_spec *spec); /* NULL-safe, idempotent. */
/* The spec as JSON with the same field names (hex strings for policy and
 * features, null for absent paths); NULL only when out of memory. */
json_t *cvm_image_spec_to_json(const cvm_image_spec *spec);

/* A handler: what the agent runs per invocation. JSON {"exec": ["/abs/path",
 * "arg", ...]}: 1..64 strings, each <= 4095 bytes, no NUL; argv[0]
 * absolute. check_executable also requires argv[0] to be a regular file
 * with access(X_OK) (the sim host runs handlers on the host; real guests
 * cannot be checked from here). Errors are -EINVAL naming the field
 * ("handler.exec[0]"); on error *ret is untouched. */
typedef struct cvm_handler_spec {
        char **argv; /* NULL-terminated. */
        size_t argc;
} cvm_handler_spec;
int cvm_handler_spec_parse(json_t *obj, const char *path, bool check_executable,
                           cvm_handler_spec *ret, cvm_error *err);
int cvm_handler_spec_copy(const cvm_handler_spec *src, cvm_handler_spec *ret, cvm_error *err);
void cvm_handler_spec_done(cvm_handler_spec *h); /* NULL-safe, idempotent. */
json_t *cvm_handler_spec_to_json(const cvm_handler_spec *h);

/* A measured image: immutable, reference counted (on the loop thread only),
 * shared by every VM launched from it. */
typedef struct cvm_image {
        unsigned refs;
        cvm_image_spec spec;
        uint8_t digest[CVM_SNP_DIGEST_SIZE]; /* SNP launch digest (cvm_snp_measure). */
        char digest_hex[CVM_SNP_DIGEST_HEX_SIZE];
        cvm_snp_launch_pages pages; /* From cvm_snp_measure. */
        cvm_psp_region *regions;    /* The PSP plan of pages.regions, VMSAs excluded. */
        cvm_psp_launch_plan plan;   /* regions, and vmsa_pages = vcpus. */
        uint64_t psp_ns;            /* cvm_psp_costs_launch_ns(costs, &plan): PSP time alone. */
        uint64_t measure_ns;        /* How long reading and measuring took. */
} cvm_image;
cvm_image *cvm_image_ref(cvm_image *img); /* NULL-safe; returns img. */
void cvm_image_unref(cvm_image *img);     /* NULL-safe. */

/* The cache: measuring means reading and hashing files, so it runs off the
 * loop (uv_queue_work, one measurement at a time so a large initrd never
 * holds more than one image's files in memory or more than one threadpool
 * thread) and the result is cached. Key: every spec field plus each file's
 * (st_dev, st_ino, st_size, st_mtim) at request time, so a replaced file is
 * measured again. Concurrent requests for the same key share one
 * measurement. At most max_entries (1..4096) are cached, least recently used
 * evicted; images in use stay alive through their references. Failed
 * measurements are not cached. */
typedef struct cvm_image_cache cvm_image_cache;
typedef struct cvm_image_req cvm_image_req;

/* img is a new reference the callee owns, NULL on error (then err is set). */
typedef void (*cvm_image_cb)(cvm_image *img, const cvm_error *err, void *userdata);

typedef struct cvm_image_cache_stats {
        uint64_t hits;         /* Requests answered from the cache. */
        uint64_t misses;       /* Requests that started a measurement. */
        uint64_t coalesced;    /* Requests that joined a measurement already queued or running. */
        uint64_t measurements; /* Measurements completed (successful or not). */
        uint64_t failures;     /* Measurements that failed. */
        uint64_t evictions;
        size_t entries; /* Images cached now. */
        size_t pending; /* Measurements queued or running now. */
} cvm_image_cache_stats;

int cvm_image_cache_new(uv_loop_t *loop, const cvm_psp_costs *costs, size_t max_entries,
                        cvm_image_cache **ret, cvm_error *err);

/* Requests the measured image of spec (copied). A spec that fails
 * validation or a file that cannot be stat'ed fails here (-EINVAL naming the
 * field, no callback). Otherwise returns 0 and calls cb exactly once on the
 * loop thread, never inside this call (a hit is deferred to a zero timer),
 * with the image or an error: a file that changed since this call (-EBUSY;
 * retrying measures the new file), a read error, or cvm_snp_measure's error
 * ("a kernel was given but the firmware's SEV metadata has no
 * SNP_KERNEL_HASHES section ..."). *ret_req (if ret_req is non-NULL) is the
 * request handle, valid until cb runs or the request is cancelled. */
int cvm_image_cache_get(cvm_image_cache *cache, const cvm_image_spec *spec, cvm_image_cb cb,
                        void *userdata, cvm_image_req **ret_req, cvm_error *err);
/* Cancels a request whose callback has not run: cb never runs and req is
 * freed. NULL-safe. Not for a request whose callback already ran, so a caller
 * should forget the handle in its callback. A measurement nobody waits for
 * any more still finishes if already running, and its result is cached. */
void cvm_image_cache_cancel(cvm_image_req *req);
void cvm_image_cache_get_stats(const cvm_image_cache *cache, cvm_image_cache_stats *ret);

/* Frees the cache (NULL-safe); may be called from a callback. Pending
 * requests are cancelled without callbacks and cached images are released
 * (images still referenced elsewhere stay valid). A measurement already
 * running in the threadpool cannot be stopped: it finishes and is discarded
 * by its after-work callback, and the cache's timer closes asynchronously.
 * So the caller must run the loop again before closing it, e.g. uv_run(loop,
 * UV_RUN_DEFAULT) until it returns (no more active handles or requests). */
void cvm_image_cache_free(cvm_image_cache *cache);
/* The host launches plain (non-SNP) guests: a kernel given with a firmware
 * that cannot carry kernel hashes is left out of the (informational) digest
 * instead of refusing the image. Never set it for a host of SNP guests. */
void cvm_image_cache_set_plain_guests(cvm_image_cache *cache, bool plain);
