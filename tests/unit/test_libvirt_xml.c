/* The libvirt host's XML without libvirt: the plain and SEV-SNP domain XML
 * (every element the host relies on, nothing it must not have), escaping of
 * user strings, refusals naming what is missing, and reading SEV facts out of
 * domain capabilities documents. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt_xml.h"

static cvm_libvirt_domain plain(void) {
        return (cvm_libvirt_domain){
                .vm_id = "vm-0123456789abcdef",
                .function = "hello",
                .kvm = false,
                .machine = CVM_LIBVIRT_MACHINE_PC,
                .kernel = "/guest/vmlinuz",
                .initrd = "/guest/initrd.cpio.gz",
                .cmdline = "console=ttyS0 quiet",
                .vcpus = 2,
                .memory_mib = 256,
                .serial_log = "/var/lib/cvmd/libvirt-vms/vm-0123456789abcdef.serial.log",
                .agent_socket = "/var/lib/cvmd/libvirt-vms/vm-0123456789abcdef.sock",
        };
}

static void assert_has(const char *xml, const char *needle) {
        if (!strstr(xml, needle))
                fail_msg("missing %s in:\n%s", needle, xml);
}

static void assert_lacks(const char *xml, const char *needle) {
        if (strstr(xml, needle))
                fail_msg("unexpected %s in:\n%s", needle, xml);
}

static void quiet(void *opaque, virErrorPtr e) {
        (void)opaque;
        (void)e;
}

/* What libvirt itself accepts: its domain parser and RNG schema, through the
 * test driver (no daemon, no QEMU). */
static void assert_accepted(const char *xml) {
        virSetErrorFunc(NULL, quiet);
        virConnectPtr c = virConnectOpen("test:///default");
        assert_non_null(c);
        virDomainPtr d = virDomainDefineXMLFlags(c, xml, VIR_DOMAIN_DEFINE_VALIDATE);
        if (!d)
                fail_msg("libvirt refuses the XML: %s\n%s", virGetLastErrorMessage(), xml);
        virDomainUndefine(d);
        virDomainFree(d);
        virConnectClose(c);
}

static void test_plain(void **state) {
        (void)state;
        cvm_libvirt_domain d = plain();
        char *xml = NULL;
        cvm_error err = {0};
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), 0);
        assert_has(xml, "<domain type='qemu'>");
        assert_has(xml, "<name>cvmd-vm-0123456789abcdef</name>");
        assert_has(xml, "<cvmd:vm xmlns:cvmd='" CVM_LIBVIRT_XMLNS "'>");
        assert_has(xml, "<cvmd:id>vm-0123456789abcdef</cvmd:id>");
        assert_has(xml, "<cvmd:function>hello</cvmd:function>");
        assert_has(xml, "<memory unit='MiB'>256</memory>");
        assert_has(xml, "<vcpu placement='static'>2</vcpu>");
        assert_has(xml, "<type arch='x86_64' machine='pc'>hvm</type>");
        assert_has(xml, "<kernel>/guest/vmlinuz</kernel>");
        assert_has(xml, "<initrd>/guest/initrd.cpio.gz</initrd>");
        assert_has(xml, "<cmdline>console=ttyS0 quiet</cmdline>");
        assert_has(xml, "<serial type='file'>\n      <source "
                        "path='/var/lib/cvmd/libvirt-vms/vm-0123456789abcdef.serial.log'");
        assert_has(xml, "<channel type='unix'>\n      <source mode='bind' "
                        "path='/var/lib/cvmd/libvirt-vms/vm-0123456789abcdef.sock'/>\n      "
                        "<target type='virtio' name='org.cvmd.agent'/>");
        assert_has(xml, "<controller type='usb' model='none'/>");
        assert_has(xml, "<memballoon model='none'/>");
        assert_has(xml, "<on_crash>destroy</on_crash>");
        assert_has(xml, "<on_reboot>destroy</on_reboot>");
        assert_has(xml, "<acpi/>");
        /* Minimal: no firmware (the machine's BIOS), no devices beyond these. */
        assert_lacks(xml, "<loader");
        assert_lacks(xml, "<graphics");
        assert_lacks(xml, "<interface");
        assert_lacks(xml, "<rng");
        assert_lacks(xml, "<disk");
        assert_lacks(xml, "<cpu");
        assert_lacks(xml, "launchSecurity");
        assert_lacks(xml, "memoryBacking");
        assert_int_equal(strncmp(xml, "<domain", 7), 0);
        assert_string_equal(xml + strlen(xml) - 10, "</domain>\n");
        assert_accepted(xml);
        free(xml);
}

/* libvirt knows SNP from 10.5 on: with an older library (Debian 12 has 9.0)
 * the domain is checked without its launchSecurity element, so everything
 * else in it still meets libvirt's parser. */
static void assert_accepted_snp(const char *xml) {
        unsigned long version = 0;
        assert_int_equal(virGetVersion(&version, NULL, NULL), 0);
        if (version >= 10005000) {
                assert_accepted(xml);
                return;
        }
        const char *start = strstr(xml, "  <launchSecurity");
        const char *end = strstr(xml, "</launchSecurity>\n");
        assert_non_null(start);
        assert_non_null(end);
        end += strlen("</launchSecurity>\n");
        char *rest = malloc(strlen(xml) + 1);
        assert_non_null(rest);
        memcpy(rest, xml, (size_t)(start - xml));
        strcpy(rest + (start - xml), end);
        assert_accepted(rest);
        free(rest);
}

static void test_plain_variants(void **state) {
        (void)state;
        cvm_libvirt_domain d = plain();
        d.kvm = true;
        d.machine = CVM_LIBVIRT_MACHINE_MICROVM;
        d.function = NULL;
        d.initrd = NULL;
        d.cmdline = NULL;
        d.firmware = "/usr/share/ovmf/OVMF.fd";
        char *xml = NULL;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, NULL), 0);
        assert_has(xml, "<domain type='kvm'>");
        assert_has(xml, "machine='microvm'");
        assert_has(xml, "<cpu mode='host-passthrough'/>");
        assert_has(xml, "<loader type='rom'>/usr/share/ovmf/OVMF.fd</loader>");
        assert_lacks(xml, "<acpi/>"); /* microvm has no ACPI tables from libvirt. */
        assert_lacks(xml, "cvmd:function");
        assert_lacks(xml, "<initrd>");
        assert_lacks(xml, "<cmdline>");
        assert_accepted(xml);
        free(xml);
        d.machine = CVM_LIBVIRT_MACHINE_Q35;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, NULL), 0);
        assert_has(xml, "machine='q35'");
        assert_accepted(xml);
        free(xml);
}

static void test_snp(void **state) {
        (void)state;
        cvm_libvirt_domain d = plain();
        d.kvm = true;
        d.machine = CVM_LIBVIRT_MACHINE_MICROVM; /* Ignored: SNP is q35. */
        d.snp = true;
        d.firmware = "/usr/share/ovmf/OVMF.amdsev.fd";
        d.vcpu_type = "EPYC-v4";
        d.guest_policy = 0x30000;
        d.cbitpos = 51;
        d.reduced_phys_bits = 1;
        char *xml = NULL;
        cvm_error err = {0};
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), 0);
        assert_has(xml, "<domain type='kvm'>");
        assert_has(xml, "<type arch='x86_64' machine='q35'>hvm</type>");
        assert_has(xml, "<loader type='rom'>/usr/share/ovmf/OVMF.amdsev.fd</loader>");
        assert_has(xml, "<launchSecurity type='sev-snp' kernelHashes='yes'>");
        assert_has(xml, "<policy>0x00030000</policy>");
        assert_has(xml, "<cbitpos>51</cbitpos>");
        assert_has(xml, "<reducedPhysBits>1</reducedPhysBits>");
        assert_has(xml, "<memoryBacking>\n    <source type='memfd'/>\n  </memoryBacking>");
        assert_has(xml, "<model fallback='forbid'>EPYC-v4</model>");
        assert_has(xml, "<kernel>/guest/vmlinuz</kernel>");
        assert_has(xml, "<channel type='unix'>");
        assert_lacks(xml, "pflash");
        assert_lacks(xml, "host-passthrough");
        assert_accepted_snp(xml);
        free(xml);
        /* Unknown cbitpos: left to libvirt. A 64-bit policy keeps its high bits. */
        d.cbitpos = d.reduced_phys_bits = 0;
        d.guest_policy = 0x1000030000ull;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), 0);
        assert_lacks(xml, "cbitpos");
        assert_lacks(xml, "reducedPhysBits");
        assert_has(xml, "<policy>0x1000030000</policy>");
        assert_accepted_snp(xml);
        free(xml);
}

static void test_escaping(void **state) {
        (void)state;
        cvm_libvirt_domain d = plain();
        d.function = "a<b>&'\"c";
        d.cmdline = "init=/x quiet' <evil/> & \"q\"";
        d.kernel = "/k&k/vm<linuz";
        d.agent_socket = "/s'/a.sock";
        char *xml = NULL;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, NULL), 0);
        assert_has(xml, "<cvmd:function>a&lt;b&gt;&amp;&apos;&quot;c</cvmd:function>");
        assert_has(xml, "<cmdline>init=/x quiet&apos; &lt;evil/&gt; &amp; &quot;q&quot;</cmdline>");
        assert_has(xml, "<kernel>/k&amp;k/vm&lt;linuz</kernel>");
        assert_has(xml, "path='/s&apos;/a.sock'");
        assert_lacks(xml, "<evil/>");
        free(xml);

        char *s = NULL;
        assert_int_equal(cvm_libvirt_xml_escape("x<&>y", &s, NULL), 0);
        assert_string_equal(s, "x&lt;&amp;&gt;y");
        free(s);
        assert_int_equal(cvm_libvirt_xml_escape("", &s, NULL), 0);
        assert_string_equal(s, "");
        free(s);
        cvm_error err = {0};
        assert_int_equal(cvm_libvirt_xml_escape("bell\a", &s, &err), -EINVAL);
        assert_non_null(strstr(err.message, "control character"));
        /* A control character in a user string fails the whole document. */
        d = plain();
        d.cmdline = "console=ttyS0\x01";
        xml = NULL;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), -EINVAL);
        assert_null(xml);
        assert_non_null(strstr(err.message, "the kernel command line"));
        assert_non_null(strstr(err.message, "vm-0123456789abcdef"));
}

static void test_refusals(void **state) {
        (void)state;
        cvm_error err = {0};
        char *xml = NULL;
        cvm_libvirt_domain d = plain();
        d.kernel = NULL;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), -EINVAL);
        assert_non_null(strstr(err.message, "no kernel"));
        d = plain();
        d.snp = true;
        d.vcpu_type = "EPYC-v4";
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), -EINVAL);
        assert_non_null(strstr(err.message, "firmware"));
        d.firmware = "/fw";
        d.vcpu_type = NULL;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), -EINVAL);
        assert_non_null(strstr(err.message, "vcpu_type"));
        d = plain();
        d.vcpus = 0;
        assert_int_equal(cvm_libvirt_domain_xml(&d, &xml, &err), -EINVAL);
        assert_null(xml);

        char name[16];
        assert_int_equal(cvm_libvirt_domain_name("vm-0123456789abcdef", name, sizeof(name), &err),
                         -ENAMETOOLONG);
        char big[64];
        assert_int_equal(cvm_libvirt_domain_name("vm-1", big, sizeof(big), NULL), 0);
        assert_string_equal(big, "cvmd-vm-1");
}

static void test_machine_names(void **state) {
        (void)state;
        cvm_libvirt_machine m;
        assert_int_equal(cvm_libvirt_machine_from_string("q35", &m), 0);
        assert_int_equal(m, CVM_LIBVIRT_MACHINE_Q35);
        assert_int_equal(cvm_libvirt_machine_from_string("microvm", &m), 0);
        assert_string_equal(cvm_libvirt_machine_to_string(m), "microvm");
        assert_int_equal(cvm_libvirt_machine_from_string("isapc", &m), -EINVAL);
        assert_int_equal(cvm_libvirt_machine_from_string(NULL, &m), -EINVAL);
}

/* Shaped like libvirt 10.5's output on an SNP host. */
static const char snp_caps[] =
        "<domainCapabilities>\n  <path>/usr/bin/qemu-system-x86_64</path>\n"
        "  <domain>kvm</domain>\n  <features>\n    <gic supported='no'/>\n"
        "    <sev supported='yes'>\n      <cbitpos>51</cbitpos>\n"
        "      <reducedPhysBits>1</reducedPhysBits>\n      <maxGuests>410</maxGuests>\n"
        "      <maxESGuests>99</maxESGuests>\n    </sev>\n    <sgx supported='no'/>\n"
        "    <launchSecurity supported='yes'>\n      <enum name='sectype'>\n"
        "        <value>sev</value>\n        <value>sev-snp</value>\n      </enum>\n"
        "    </launchSecurity>\n  </features>\n</domainCapabilities>\n";

/* Shaped like libvirt 9.0's output under TCG (this project's machines). */
static const char tcg_caps[] = "<domainCapabilities>\n  <domain>qemu</domain>\n  <features>\n"
                               "    <vmcoreinfo supported='yes'/>\n    <sev supported='no'/>\n"
                               "    <sgx supported='no'/>\n  </features>\n</domainCapabilities>\n";

static const char sev_only_caps[] =
        "<domainCapabilities><features><sev supported='yes'><cbitpos>47</cbitpos>"
        "<reducedPhysBits>1</reducedPhysBits><maxGuests>15</maxGuests>"
        "<maxESGuests>0</maxESGuests></sev><launchSecurity supported='yes'>"
        "<enum name='sectype'><value>sev</value></enum></launchSecurity></features>"
        "</domainCapabilities>";

static void test_caps(void **state) {
        (void)state;
        cvm_libvirt_caps c;
        cvm_libvirt_caps_parse(snp_caps, &c);
        assert_true(c.sev);
        assert_true(c.snp);
        assert_int_equal(c.cbitpos, 51);
        assert_int_equal(c.reduced_phys_bits, 1);
        assert_int_equal(c.max_guests, 410);
        assert_int_equal(c.max_es_guests, 99);
        assert_null(cvm_libvirt_caps_snp_missing(&c));

        cvm_libvirt_caps_parse(tcg_caps, &c);
        assert_false(c.sev);
        assert_false(c.snp);
        assert_int_equal(c.max_es_guests, 0);
        const char *why = cvm_libvirt_caps_snp_missing(&c);
        assert_non_null(why);
        assert_non_null(strstr(why, "this host has no SEV-SNP: the domain capabilities lack <sev"));

        cvm_libvirt_caps_parse(sev_only_caps, &c);
        assert_true(c.sev);
        assert_false(c.snp);
        assert_int_equal(c.max_guests, 15);
        why = cvm_libvirt_caps_snp_missing(&c);
        assert_non_null(strstr(why, "sev-snp"));

        cvm_libvirt_caps_parse(NULL, &c);
        assert_false(c.sev);
        cvm_libvirt_caps_parse("<domainCapabilities><sev supported='yes'", &c);
        assert_false(c.snp);
        cvm_libvirt_caps_parse("", &c);
        assert_false(c.sev);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plain),    cmocka_unit_test(test_plain_variants),
                cmocka_unit_test(test_snp),      cmocka_unit_test(test_escaping),
                cmocka_unit_test(test_refusals), cmocka_unit_test(test_machine_names),
                cmocka_unit_test(test_caps),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
