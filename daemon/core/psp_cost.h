/* The cost model of the simulated PSP: what each SEV-SNP firmware command
 * costs in PSP time, and the vocabulary (commands, page types, launch plans)
 * shared by the simulated PSP and the scheduler in front of it. The defaults
 * and their sources are in docs/sim-psp.md. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "snp_measure.h"

/* The firmware commands the model knows. ACTIVATE binds the guest's ASID
 * after LAUNCH_START, as KVM does; GUEST_REQUEST is an attestation report. */
typedef enum cvm_psp_cmd_type {
        CVM_PSP_CMD_LAUNCH_START,
        CVM_PSP_CMD_ACTIVATE,
        CVM_PSP_CMD_LAUNCH_UPDATE,
        CVM_PSP_CMD_LAUNCH_FINISH,
        CVM_PSP_CMD_GUEST_REQUEST,
        CVM_PSP_CMD_DECOMMISSION,
        CVM_PSP_CMD_DF_FLUSH,
        CVM_PSP_CMD_COUNT,
} cvm_psp_cmd_type;

/* LAUNCH_UPDATE page types are the SNP firmware ABI's (cvm_snp_page_type),
 * so a page plan carries the measurement's values unchanged. */

/* Every cost is configured in microseconds between 0 and this (10 s). */
#define CVM_PSP_COST_MAX_US INT64_C(10000000)

/* Service times in nanoseconds. */
typedef struct cvm_psp_costs {
        uint64_t launch_start_ns;
        uint64_t activate_ns;
        /* Per LAUNCH_UPDATE of one 4 KiB page, by page type; index 0 unused. */
        uint64_t launch_update_ns[CVM_SNP_PAGE_TYPE_MAX + 1];
        uint64_t launch_finish_ns;
        uint64_t guest_request_ns;
        uint64_t decommission_ns;
        uint64_t df_flush_ns;
} cvm_psp_costs;

/* A contiguous run of pages of one type in a launch plan. */
typedef struct cvm_psp_region {
        uint32_t type; /* A cvm_snp_page_type other than VMSA. */
        uint32_t npages;
} cvm_psp_region;

/* What a launch measures: the regions in order, then one VMSA per vCPU. */
typedef struct cvm_psp_launch_plan {
        const cvm_psp_region *regions;
        size_t nregions;
        uint32_t vmsa_pages;
} cvm_psp_launch_plan;

/* Hard limits on a plan: at most 4 GiB of pages and KVM's maximum vCPUs. */
#define CVM_PSP_PLAN_REGIONS_MAX 4096
#define CVM_PSP_PLAN_PAGES_MAX (UINT32_C(1) << 20)
#define CVM_PSP_PLAN_VMSA_MAX 4096

/* The defaults of docs/sim-psp.md: a 13 KB verifier launch costs 33 ms. */
void cvm_psp_costs_default(cvm_psp_costs *costs);

/* Applies the JSON object obj (the config section at path, e.g. "psp.costs")
 * over costs: each field is "<name>_us" and optional. Unknown fields and out
 * of range values are errors naming the field; on error costs is unchanged. */
int cvm_psp_costs_parse(json_t *obj, const char *path, cvm_psp_costs *costs, cvm_error *err);

/* The service time of one command; for LAUNCH_START it excludes the DF_FLUSH
 * the simulated PSP may have to run first. page_type is read only for
 * LAUNCH_UPDATE and must be valid there (0 otherwise). */
uint64_t cvm_psp_costs_command_ns(const cvm_psp_costs *costs, cvm_psp_cmd_type type,
                                  uint32_t page_type);

/* Checks a plan against the page types and the limits above. */
int cvm_psp_plan_validate(const cvm_psp_launch_plan *plan, cvm_error *err);
/* The PSP service time of a whole (valid) launch when it runs alone:
 * LAUNCH_START, ACTIVATE, every LAUNCH_UPDATE, LAUNCH_FINISH. */
uint64_t cvm_psp_costs_launch_ns(const cvm_psp_costs *costs, const cvm_psp_launch_plan *plan);

/* Lower-case names for logs and the API ("launch_update", "zero"); "unknown"
 * for a value out of range. */
const char *cvm_psp_cmd_type_to_string(cvm_psp_cmd_type type);
const char *cvm_psp_page_type_to_string(uint32_t type);
