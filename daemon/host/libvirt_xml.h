/* The libvirt host's XML: the domain XML of one VM (plain or SEV-SNP) and
 * the few facts it reads back from libvirt's own XML (the host's domain
 * capabilities). Pure string work with no libvirt calls, so the unit tests
 * run without libvirt, and so it is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The namespace of cvmd's <metadata> element: a restarted daemon finds its
 * own domains by it. */
#define CVM_LIBVIRT_XMLNS "https://cvmd.dev/xmlns/libvirt/1"
#define CVM_LIBVIRT_XMLNS_PREFIX "cvmd"
/* Every domain cvmd defines is named this prefix plus the VM id. */
#define CVM_LIBVIRT_NAME_PREFIX "cvmd-"
/* The virtio-serial port the guest agent opens (/dev/virtio-ports/<name>). */
#define CVM_LIBVIRT_AGENT_PORT "org.cvmd.agent"

typedef enum cvm_libvirt_machine {
        CVM_LIBVIRT_MACHINE_PC,
        CVM_LIBVIRT_MACHINE_Q35,
        CVM_LIBVIRT_MACHINE_MICROVM,
} cvm_libvirt_machine;

const char *cvm_libvirt_machine_to_string(cvm_libvirt_machine m);
int cvm_libvirt_machine_from_string(const char *s, cvm_libvirt_machine *ret);

/* What one domain is made of; every string is borrowed. */
typedef struct cvm_libvirt_domain {
        const char *vm_id;           /* The domain is CVM_LIBVIRT_NAME_PREFIX + vm_id. */
        const char *function;        /* NULL for a VM created on its own. */
        bool kvm;                    /* <domain type='kvm'>, else 'qemu' (TCG). */
        cvm_libvirt_machine machine; /* Ignored for SNP, which is always q35. */
        const char *firmware; /* A ROM loader; NULL: the machine's own BIOS. Required for SNP. */
        const char *kernel;   /* Required: guests boot their kernel directly. */
        const char *initrd;   /* NULL: none. */
        const char *cmdline;  /* NULL: none. */
        uint32_t vcpus;
        uint32_t memory_mib;
        /* The vCPU model; required for SNP, whose launch digest depends on it
         * (the image's vcpu_type). NULL elsewhere: host-passthrough under KVM,
         * QEMU's default under TCG. */
        const char *vcpu_type;
        const char *serial_log;   /* The serial console goes to this file. */
        const char *agent_socket; /* QEMU listens here for the agent's channel. */
        bool snp;
        uint64_t guest_policy;      /* SNP only. */
        uint32_t cbitpos;           /* SNP only; 0: left to libvirt. */
        uint32_t reduced_phys_bits; /* SNP only; 0: left to libvirt. */
} cvm_libvirt_domain;

/* The domain name of a VM into buf; -ENAMETOOLONG if it does not fit. */
int cvm_libvirt_domain_name(const char *vm_id, char *buf, size_t size, cvm_error *err);

/* Builds the domain XML into *ret (malloc'ed). -EINVAL names what is
 * missing (no kernel; SNP without a firmware); -ENOMEM. */
int cvm_libvirt_domain_xml(const cvm_libvirt_domain *d, char **ret, cvm_error *err);

/* Appends s to a string with &, <, >, ' and " escaped; control characters
 * other than tab and newline are refused (-EINVAL), since XML 1.0 cannot
 * carry them. Exposed for the tests. */
int cvm_libvirt_xml_escape(const char *s, char **ret, cvm_error *err);

/* What virConnectGetDomainCapabilities says about SEV. */
typedef struct cvm_libvirt_caps {
        bool sev;                   /* <sev supported='yes'>. */
        bool snp;                   /* 'sev-snp' among the launchSecurity sectypes. */
        uint32_t cbitpos;           /* From <sev>; 0 when absent. */
        uint32_t reduced_phys_bits; /* Likewise. */
        uint32_t max_guests;        /* SEV ASIDs; 0 when absent. */
        uint32_t max_es_guests;     /* SEV-ES (and SNP) ASIDs; 0 when absent. */
} cvm_libvirt_caps;

/* Reads the facts above from a domain capabilities document; never fails on
 * a document that lacks them (they stay false or 0). */
void cvm_libvirt_caps_parse(const char *xml, cvm_libvirt_caps *ret);

/* Why the host cannot launch SNP guests, as a sentence, or NULL if it can. */
const char *cvm_libvirt_caps_snp_missing(const cvm_libvirt_caps *caps);
