/* The libvirt host: every VM is a libvirt domain (QEMU), by default run by
 * libvirt's embedded QEMU driver inside cvmd itself (no libvirtd). prepare
 * defines the domain and starts it paused; launch resumes it (on an SEV-SNP
 * guest this is where QEMU does all the PSP's launch work); boot connects to
 * the guest agent's virtio-serial socket and waits for its HELLO.
 *
 * libvirt calls block, so they run on the host's own worker threads;
 * libvirt's event loop runs on a thread of its own for domain lifecycle
 * events. Both report to the daemon's loop through one uv_async. See
 * docs/libvirt-host.md. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "clock.h"
#include "host.h"

/* Validates the "libvirt" config section (NULL: the defaults) without
 * touching libvirt. */
int cvm_libvirt_check_config(json_t *section, cvm_error *err);

/* Opens the libvirt connection (default qemu:///embed?root=STATE_DIR/libvirt,
 * preparing that root), reads the host's domain capabilities, and starts
 * destroying domains a previous cvmd left behind. Call it before the loop
 * runs: opening the connection blocks (about 1.5 s the first time, while
 * libvirt probes QEMU). */
int cvm_libvirt_host_new(uv_loop_t *loop, cvm_clock *clock, json_t *section, const char *state_dir,
                         cvm_host **ret, cvm_error *err);

/* Whether the host launches SEV-SNP guests (else plain guests). */
bool cvm_libvirt_host_snp(cvm_host *host);
