#include "libvirt_xml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const machine_names[] = {
        [CVM_LIBVIRT_MACHINE_PC] = "pc",
        [CVM_LIBVIRT_MACHINE_Q35] = "q35",
        [CVM_LIBVIRT_MACHINE_MICROVM] = "microvm",
};

const char *cvm_libvirt_machine_to_string(cvm_libvirt_machine m) {
        if ((size_t)m >= sizeof(machine_names) / sizeof(machine_names[0]))
                return "unknown";
        return machine_names[m];
}

int cvm_libvirt_machine_from_string(const char *s, cvm_libvirt_machine *ret) {
        for (size_t i = 0; i < sizeof(machine_names) / sizeof(machine_names[0]); i++)
                if (s && strcmp(s, machine_names[i]) == 0) {
                        *ret = (cvm_libvirt_machine)i;
                        return 0;
                }
        return -EINVAL;
}

int cvm_libvirt_domain_name(const char *vm_id, char *buf, size_t size, cvm_error *err) {
        int n = snprintf(buf, size, "%s%s", CVM_LIBVIRT_NAME_PREFIX, vm_id);
        if (n < 0 || (size_t)n >= size)
                return cvm_error_set(err, -ENAMETOOLONG, "domain name for vm %s is too long",
                                     vm_id);
        return 0;
}

/* A growing string; a failed append marks it failed so callers check once. */
typedef struct sbuf {
        char *s;
        size_t len, cap;
        int error; /* 0 or a negative errno. */
        cvm_error *err;
} sbuf;

static void sb_reserve(sbuf *b, size_t more) {
        if (b->error || b->len + more + 1 <= b->cap)
                return;
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + more + 1)
                cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
                b->error = cvm_error_set(b->err, -ENOMEM, "out of memory");
                return;
        }
        b->s = s;
        b->cap = cap;
}

static void sb_add(sbuf *b, const char *s) {
        size_t n = strlen(s);
        sb_reserve(b, n);
        if (b->error)
                return;
        memcpy(b->s + b->len, s, n + 1);
        b->len += n;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
                if (!b->error)
                        b->error = cvm_error_set(b->err, -EINVAL, "cannot format the domain XML");
                return;
        }
        sb_reserve(b, (size_t)n);
        if (b->error)
                return;
        va_start(ap, fmt);
        vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

/* User text inside an element or a quoted attribute. what names the field
 * in the error. */
static void sb_text(sbuf *b, const char *what, const char *s) {
        for (const unsigned char *p = (const unsigned char *)s; *p && !b->error; p++) {
                switch (*p) {
                case '&': sb_add(b, "&amp;"); break;
                case '<': sb_add(b, "&lt;"); break;
                case '>': sb_add(b, "&gt;"); break;
                case '\'': sb_add(b, "&apos;"); break;
                case '"': sb_add(b, "&quot;"); break;
                default:
                        /* XML 1.0 has no way to write other control characters. */
                        if (*p < 0x20 && *p != '\t' && *p != '\n') {
                                b->error = cvm_error_set(
                                        b->err, -EINVAL,
                                        "%s holds a control character (0x%02x) that XML "
                                        "cannot carry",
                                        what, *p);
                                return;
                        }
                        sb_reserve(b, 1);
                        if (b->error)
                                return;
                        b->s[b->len++] = (char)*p;
                        b->s[b->len] = '\0';
                }
        }
}

/* <name attrs>text</name> on its own line with the given indent. */
static void sb_elem(sbuf *b, const char *indent, const char *name, const char *attrs,
                    const char *what, const char *text) {
        sb_printf(b, "%s<%s%s>", indent, name, attrs);
        sb_text(b, what, text);
        sb_printf(b, "</%s>\n", name);
}

int cvm_libvirt_xml_escape(const char *s, char **ret, cvm_error *err) {
        sbuf b = {.err = err};
        sb_add(&b, "");
        sb_text(&b, "the text", s);
        if (b.error) {
                free(b.s);
                return b.error;
        }
        *ret = b.s;
        return 0;
}

int cvm_libvirt_domain_xml(const cvm_libvirt_domain *d, char **ret, cvm_error *err) {
        if (!d->vm_id || !*d->vm_id)
                return cvm_error_set(err, -EINVAL, "the domain has no vm id");
        if (!d->kernel)
                return cvm_error_set(err, -EINVAL,
                                     "vm %s: the image has no kernel, and the libvirt host "
                                     "boots guests by direct kernel boot only",
                                     d->vm_id);
        if (!d->serial_log || !d->agent_socket)
                return cvm_error_set(err, -EINVAL, "vm %s: no serial log or agent socket",
                                     d->vm_id);
        if (d->vcpus < 1 || d->memory_mib < 1)
                return cvm_error_set(err, -EINVAL, "vm %s: vcpus and memory_mib must be positive",
                                     d->vm_id);
        if (d->snp && (!d->firmware || !d->vcpu_type))
                return cvm_error_set(err, -EINVAL,
                                     "vm %s: an SNP guest needs the image's firmware and "
                                     "vcpu_type: both are part of its launch digest",
                                     d->vm_id);
        /* SNP needs q35: the firmware's SEV metadata and the measured ROM load there. */
        cvm_libvirt_machine machine = d->snp ? CVM_LIBVIRT_MACHINE_Q35 : d->machine;
        sbuf b = {.err = err};
        sb_printf(&b, "<domain type='%s'>\n", d->kvm ? "kvm" : "qemu");
        sb_printf(&b, "  <name>%s", CVM_LIBVIRT_NAME_PREFIX);
        sb_text(&b, "the vm id", d->vm_id);
        sb_add(&b, "</name>\n");
        /* Ours: a restarted daemon destroys the domains carrying it. */
        sb_add(&b, "  <metadata>\n");
        sb_printf(&b, "    <%s:vm xmlns:%s='%s'>\n", CVM_LIBVIRT_XMLNS_PREFIX,
                  CVM_LIBVIRT_XMLNS_PREFIX, CVM_LIBVIRT_XMLNS);
        sb_elem(&b, "      ", CVM_LIBVIRT_XMLNS_PREFIX ":id", "", "the vm id", d->vm_id);
        if (d->function)
                sb_elem(&b, "      ", CVM_LIBVIRT_XMLNS_PREFIX ":function", "", "the function",
                        d->function);
        sb_printf(&b, "    </%s:vm>\n", CVM_LIBVIRT_XMLNS_PREFIX);
        sb_add(&b, "  </metadata>\n");
        sb_printf(&b, "  <memory unit='MiB'>%" PRIu32 "</memory>\n", d->memory_mib);
        sb_printf(&b, "  <vcpu placement='static'>%" PRIu32 "</vcpu>\n", d->vcpus);
        /* QEMU keeps an SNP guest's private memory in guest_memfd; the shared
         * part (DMA bounce buffers) comes from a memfd backend, as AMD's
         * launch recipes do. */
        if (d->snp)
                sb_add(&b, "  <memoryBacking>\n    <source type='memfd'/>\n  </memoryBacking>\n");
        sb_add(&b, "  <os>\n");
        sb_printf(&b, "    <type arch='x86_64' machine='%s'>hvm</type>\n",
                  cvm_libvirt_machine_to_string(machine));
        /* A ROM loader, not pflash: SNP measures the firmware as ROM pages,
         * and a stateless ROM keeps no NVRAM to manage. */
        if (d->firmware)
                sb_elem(&b, "    ", "loader", " type='rom'", "the firmware path", d->firmware);
        sb_elem(&b, "    ", "kernel", "", "the kernel path", d->kernel);
        if (d->initrd)
                sb_elem(&b, "    ", "initrd", "", "the initrd path", d->initrd);
        if (d->cmdline)
                sb_elem(&b, "    ", "cmdline", "", "the kernel command line", d->cmdline);
        sb_add(&b, "  </os>\n");
        if (machine != CVM_LIBVIRT_MACHINE_MICROVM)
                sb_add(&b, "  <features>\n    <acpi/>\n  </features>\n");
        if (d->vcpu_type) {
                sb_add(&b, "  <cpu mode='custom' match='exact' check='none'>\n");
                sb_elem(&b, "    ", "model", " fallback='forbid'", "the vcpu type", d->vcpu_type);
                sb_add(&b, "  </cpu>\n");
        } else if (d->kvm) {
                sb_add(&b, "  <cpu mode='host-passthrough'/>\n");
        }
        sb_add(&b, "  <clock offset='utc'/>\n");
        /* A guest that stops, reboots or crashes is gone: the agent with it. */
        sb_add(&b, "  <on_poweroff>destroy</on_poweroff>\n"
                   "  <on_reboot>destroy</on_reboot>\n"
                   "  <on_crash>destroy</on_crash>\n");
        sb_add(&b, "  <devices>\n");
        /* Nothing the function does not need: no USB, no balloon, no network,
         * no graphics, no rng; microvm needs the first two said explicitly. */
        sb_add(&b, "    <controller type='usb' model='none'/>\n");
        sb_add(&b, "    <serial type='file'>\n      <source path='");
        sb_text(&b, "the serial log path", d->serial_log);
        sb_add(&b, "' append='on'/>\n      <target port='0'/>\n    </serial>\n");
        sb_add(&b, "    <channel type='unix'>\n      <source mode='bind' path='");
        sb_text(&b, "the agent socket path", d->agent_socket);
        sb_printf(&b, "'/>\n      <target type='virtio' name='%s'/>\n    </channel>\n",
                  CVM_LIBVIRT_AGENT_PORT);
        sb_add(&b, "    <memballoon model='none'/>\n");
        sb_add(&b, "  </devices>\n");
        if (d->snp) {
                /* kernelHashes: the firmware measures the kernel, initrd and
                 * command line, so the launch digest covers them. */
                sb_add(&b, "  <launchSecurity type='sev-snp' kernelHashes='yes'>\n");
                if (d->cbitpos)
                        sb_printf(&b, "    <cbitpos>%" PRIu32 "</cbitpos>\n", d->cbitpos);
                if (d->reduced_phys_bits)
                        sb_printf(&b, "    <reducedPhysBits>%" PRIu32 "</reducedPhysBits>\n",
                                  d->reduced_phys_bits);
                sb_printf(&b, "    <policy>0x%08" PRIx64 "</policy>\n", d->guest_policy);
                sb_add(&b, "  </launchSecurity>\n");
        }
        sb_add(&b, "</domain>\n");
        if (b.error) {
                free(b.s);
                return cvm_error_prefix(err, "vm %s: ", d->vm_id);
        }
        *ret = b.s;
        return 0;
}

/* Capabilities: a few known elements found by text, which is enough for
 * libvirt's own well-formed output. */

/* The text between <tag ...> and </tag>, or NULL; *len is its length. */
static const char *find_element(const char *xml, const char *tag, size_t *len) {
        size_t tl = strlen(tag);
        for (const char *p = xml; (p = strchr(p, '<')) != NULL; p++) {
                if (strncmp(p + 1, tag, tl) != 0 || !strchr(" \t\n/>", p[1 + tl]))
                        continue;
                const char *gt = strchr(p, '>');
                if (!gt)
                        return NULL;
                if (gt[-1] == '/') {
                        *len = 0;
                        return gt + 1;
                }
                char close[64];
                snprintf(close, sizeof(close), "</%s>", tag);
                const char *end = strstr(gt + 1, close);
                if (!end)
                        return NULL;
                *len = (size_t)(end - (gt + 1));
                return gt + 1;
        }
        return NULL;
}

/* Whether the start tag of the first <tag> says supported='yes'. */
static bool element_supported(const char *xml, const char *tag) {
        size_t tl = strlen(tag);
        for (const char *p = xml; (p = strchr(p, '<')) != NULL; p++) {
                if (strncmp(p + 1, tag, tl) != 0 || !strchr(" \t\n/>", p[1 + tl]))
                        continue;
                const char *gt = strchr(p, '>');
                if (!gt)
                        return false;
                size_t n = (size_t)(gt - p);
                char head[256];
                snprintf(head, sizeof(head), "%.*s", (int)(n < sizeof(head) ? n : sizeof(head) - 1),
                         p);
                return strstr(head, "supported='yes'") || strstr(head, "supported=\"yes\"");
        }
        return false;
}

static uint32_t number_in(const char *body, size_t len, const char *tag) {
        char *copy = strndup(body, len);
        if (!copy)
                return 0;
        size_t n;
        const char *v = find_element(copy, tag, &n);
        unsigned long x = v ? strtoul(v, NULL, 10) : 0;
        free(copy);
        return x > UINT32_MAX ? 0 : (uint32_t)x;
}

void cvm_libvirt_caps_parse(const char *xml, cvm_libvirt_caps *ret) {
        *ret = (cvm_libvirt_caps){0};
        if (!xml)
                return;
        size_t len;
        const char *sev = find_element(xml, "sev", &len);
        if (sev && element_supported(xml, "sev")) {
                ret->sev = true;
                ret->cbitpos = number_in(sev, len, "cbitpos");
                ret->reduced_phys_bits = number_in(sev, len, "reducedPhysBits");
                ret->max_guests = number_in(sev, len, "maxGuests");
                ret->max_es_guests = number_in(sev, len, "maxESGuests");
        }
        /* libvirt >= 10.5 lists the launch security types it can start. */
        const char *ls = find_element(xml, "launchSecurity", &len);
        if (ls && element_supported(xml, "launchSecurity")) {
                char *copy = strndup(ls, len);
                if (copy && strstr(copy, "<value>sev-snp</value>"))
                        ret->snp = true;
                free(copy);
        }
}

const char *cvm_libvirt_caps_snp_missing(const cvm_libvirt_caps *caps) {
        if (!caps->sev)
                return "this host has no SEV-SNP: the domain capabilities lack <sev "
                       "supported='yes'> (no SEV in the CPU, the kernel (kvm_amd.sev) or QEMU)";
        if (!caps->snp)
                return "this host has no SEV-SNP: the domain capabilities do not list 'sev-snp' "
                       "under <launchSecurity> (SNP needs libvirt >= 10.5, QEMU >= 9.1 and "
                       "kvm_amd.sev_snp=1)";
        if (!caps->max_es_guests)
                return "this host has no SEV-SNP ASIDs: the domain capabilities give "
                       "<maxESGuests> 0 (raise the SEV-ES ASID range in the BIOS)";
        return NULL;
}
