#include "psp_cost.h"

#include <errno.h>
#include <stddef.h>

#include "cleanup.h"
#include "clock.h"
#include "json.h"

/* One configurable cost: its config name, where it lives, its default. */
typedef struct cost_field {
        const char *name;
        size_t offset;
        uint64_t default_us;
} cost_field;

#define PAGE_COST(t) offsetof(cvm_psp_costs, launch_update_ns[t])

/* The defaults and their derivation are documented in docs/sim-psp.md. */
static const cost_field cost_fields[] = {
        {"launch_start_us", offsetof(cvm_psp_costs, launch_start_ns), 20000},
        {"activate_us", offsetof(cvm_psp_costs, activate_ns), 2000},
        {"launch_update_us", PAGE_COST(CVM_SNP_PAGE_NORMAL), 1000},
        {"launch_update_zero_us", PAGE_COST(CVM_SNP_PAGE_ZERO), 500},
        {"launch_update_unmeasured_us", PAGE_COST(CVM_SNP_PAGE_UNMEASURED), 500},
        {"launch_update_secrets_us", PAGE_COST(CVM_SNP_PAGE_SECRETS), 1000},
        {"launch_update_cpuid_us", PAGE_COST(CVM_SNP_PAGE_CPUID), 1000},
        {"launch_update_vmsa_us", PAGE_COST(CVM_SNP_PAGE_VMSA), 2000},
        {"launch_finish_us", offsetof(cvm_psp_costs, launch_finish_ns), 2000},
        {"guest_request_us", offsetof(cvm_psp_costs, guest_request_ns), 3000},
        {"decommission_us", offsetof(cvm_psp_costs, decommission_ns), 1000},
        {"df_flush_us", offsetof(cvm_psp_costs, df_flush_ns), 5000},
};

static uint64_t *cost_slot(cvm_psp_costs *costs, const cost_field *f) {
        return (uint64_t *)((char *)costs + f->offset);
}

void cvm_psp_costs_default(cvm_psp_costs *costs) {
        *costs = (cvm_psp_costs){0};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(cost_fields); i++)
                *cost_slot(costs, &cost_fields[i]) = cost_fields[i].default_us * CVM_NSEC_PER_USEC;
}

int cvm_psp_costs_parse(json_t *obj, const char *path, cvm_psp_costs *costs, cvm_error *err) {
        const char *names[CVM_ARRAY_SIZE(cost_fields) + 1] = {0};
        for (size_t i = 0; i < CVM_ARRAY_SIZE(cost_fields); i++)
                names[i] = cost_fields[i].name;
        int r = cvm_json_check_fields(obj, path, names, err);
        if (r < 0)
                return r;

        cvm_psp_costs parsed = *costs;
        for (size_t i = 0; i < CVM_ARRAY_SIZE(cost_fields); i++) {
                int64_t us = -1;
                r = cvm_json_get_int(obj, path, cost_fields[i].name, false, 0, CVM_PSP_COST_MAX_US,
                                     &us, err);
                if (r < 0)
                        return r;
                if (us >= 0)
                        *cost_slot(&parsed, &cost_fields[i]) = (uint64_t)us * CVM_NSEC_PER_USEC;
        }
        *costs = parsed;
        return 0;
}

static bool page_type_valid(uint32_t type) {
        return type >= CVM_SNP_PAGE_NORMAL && type <= CVM_SNP_PAGE_TYPE_MAX;
}

uint64_t cvm_psp_costs_command_ns(const cvm_psp_costs *costs, cvm_psp_cmd_type type,
                                  uint32_t page_type) {
        switch (type) {
        case CVM_PSP_CMD_LAUNCH_START: return costs->launch_start_ns;
        case CVM_PSP_CMD_ACTIVATE: return costs->activate_ns;
        case CVM_PSP_CMD_LAUNCH_UPDATE:
                return page_type_valid(page_type) ? costs->launch_update_ns[page_type] : 0;
        case CVM_PSP_CMD_LAUNCH_FINISH: return costs->launch_finish_ns;
        case CVM_PSP_CMD_GUEST_REQUEST: return costs->guest_request_ns;
        case CVM_PSP_CMD_DECOMMISSION: return costs->decommission_ns;
        case CVM_PSP_CMD_DF_FLUSH: return costs->df_flush_ns;
        case CVM_PSP_CMD_COUNT: break;
        }
        return 0;
}

int cvm_psp_plan_validate(const cvm_psp_launch_plan *plan, cvm_error *err) {
        if (plan->nregions > CVM_PSP_PLAN_REGIONS_MAX)
                return cvm_error_set(err, -E2BIG, "launch plan has %zu regions, the limit is %d",
                                     plan->nregions, CVM_PSP_PLAN_REGIONS_MAX);
        if (plan->nregions > 0 && !plan->regions)
                return cvm_error_set(err, -EINVAL, "launch plan has %zu regions but no array",
                                     plan->nregions);
        uint64_t pages = 0;
        for (size_t i = 0; i < plan->nregions; i++) {
                uint32_t type = plan->regions[i].type;
                if (!page_type_valid(type) || type == CVM_SNP_PAGE_VMSA)
                        return cvm_error_set(err, -EINVAL,
                                             "launch plan region %zu has page type %u; VMSA "
                                             "pages go in vmsa_pages",
                                             i, type);
                pages += plan->regions[i].npages;
        }
        if (pages > CVM_PSP_PLAN_PAGES_MAX)
                return cvm_error_set(err, -E2BIG, "launch plan has %llu pages, the limit is %u",
                                     (unsigned long long)pages, CVM_PSP_PLAN_PAGES_MAX);
        if (plan->vmsa_pages < 1 || plan->vmsa_pages > CVM_PSP_PLAN_VMSA_MAX)
                return cvm_error_set(err, -EINVAL,
                                     "launch plan has %u VMSA pages, must be between 1 and %d",
                                     plan->vmsa_pages, CVM_PSP_PLAN_VMSA_MAX);
        return 0;
}

uint64_t cvm_psp_costs_launch_ns(const cvm_psp_costs *costs, const cvm_psp_launch_plan *plan) {
        uint64_t ns = costs->launch_start_ns + costs->activate_ns + costs->launch_finish_ns;
        for (size_t i = 0; i < plan->nregions; i++)
                ns += (uint64_t)plan->regions[i].npages *
                      costs->launch_update_ns[plan->regions[i].type];
        return ns + (uint64_t)plan->vmsa_pages * costs->launch_update_ns[CVM_SNP_PAGE_VMSA];
}

const char *cvm_psp_cmd_type_to_string(cvm_psp_cmd_type type) {
        static const char *const names[CVM_PSP_CMD_COUNT] = {
                [CVM_PSP_CMD_LAUNCH_START] = "launch_start",
                [CVM_PSP_CMD_ACTIVATE] = "activate",
                [CVM_PSP_CMD_LAUNCH_UPDATE] = "launch_update",
                [CVM_PSP_CMD_LAUNCH_FINISH] = "launch_finish",
                [CVM_PSP_CMD_GUEST_REQUEST] = "guest_request",
                [CVM_PSP_CMD_DECOMMISSION] = "decommission",
                [CVM_PSP_CMD_DF_FLUSH] = "df_flush",
        };
        return (unsigned)type < CVM_PSP_CMD_COUNT ? names[type] : "unknown";
}

const char *cvm_psp_page_type_to_string(uint32_t type) {
        static const char *const names[CVM_SNP_PAGE_TYPE_MAX + 1] = {
                [CVM_SNP_PAGE_NORMAL] = "normal",   [CVM_SNP_PAGE_VMSA] = "vmsa",
                [CVM_SNP_PAGE_ZERO] = "zero",       [CVM_SNP_PAGE_UNMEASURED] = "unmeasured",
                [CVM_SNP_PAGE_SECRETS] = "secrets", [CVM_SNP_PAGE_CPUID] = "cpuid",
        };
        return page_type_valid(type) ? names[type] : "unknown";
}
