/* The sim host: a simulated SEV-SNP machine. The PSP (daemon/core/psp_sim.h),
 * the ASIDs and the boot follow a cost model; the guest agent and the
 * function's handler really run, as a host child process per VM in its own
 * session, with an address-space limit from the VM's memory size and a
 * private working directory. The sim is not an isolation boundary: it is a
 * faithful model of an SNP machine's timing, not a sandbox. */
#pragma once

#include <jansson.h>
#include <uv.h>

#include "clock.h"
#include "host.h"

/* Validates the "sim" and "psp" config sections (either may be NULL). */
int cvm_sim_check_config(json_t *sim, json_t *psp, cvm_error *err);

/* state_dir holds the VMs' working directories (state_dir/sim). */
int cvm_sim_host_new(uv_loop_t *loop, cvm_clock *clock, json_t *sim, json_t *psp,
                     const char *state_dir, cvm_host **ret, cvm_error *err);
