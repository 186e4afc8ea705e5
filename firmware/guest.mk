# The guest image for real VMs (docs/guest-image.md): a static PID 1, the
# agent linked statically, Debian's kernel and its virtio modules, and an
# initrd builder. Included by the Makefile; none of it is part of `all`.
#
#   make guest          cvm-init, cvm-agent, the probe, the kernel, a demo initrd (/bin/cat)
#   make guest-test     boots the demo under QEMU (tests/integration/test_guest.sh)

GUEST := $(BUILD)/guest
GUEST_KERNEL := $(GUEST)/kernel
# Objects of their own: the guest binaries are static and never sanitized,
# whatever SANITIZE says for the rest of the build tree.
GUEST_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
guest_obj = $(patsubst %.c,$(GUEST)/obj/%.o,$(1))
GUEST_LIB_SRCS := $(wildcard lib/*.c)
GUEST_AGENT_SRCS := $(wildcard firmware/agent/*.c)
GUEST_PROBE_SRCS := $(wildcard tests/guest/*.c)
GUEST_LIBCVM := $(GUEST)/libcvm-guest.a
# Static archives only: the agent must run in an initrd with no shared libraries.
GUEST_STATIC_LIBS := -luv_a -ljansson -lcrypto -lpthread -ldl -lm
GUEST_INITRD_DEMO := $(GUEST)/initrd-demo.cpio.gz

.PHONY: guest guest-kernel guest-test

guest: $(GUEST)/cvm-init $(GUEST)/cvm-agent $(GUEST)/cvm-guest-probe guest-kernel \
	$(GUEST_INITRD_DEMO)

$(GUEST)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$@)$(CC) $(GUEST_CFLAGS) -c -o $@ $<

$(GUEST_LIBCVM): $(call guest_obj,$(GUEST_LIB_SRCS))
	$(call quiet,AR,$@)rm -f $@ && ar rcs $@ $^

$(GUEST)/cvm-init: $(call guest_obj,firmware/init/init.c)
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -static -o $@ $^

# glibc warns that getaddrinfo and dlopen (libuv, libcrypto) need the host's
# shared libraries at run time; the agent uses neither.
$(GUEST)/cvm-agent: $(call guest_obj,$(GUEST_AGENT_SRCS)) $(GUEST_LIBCVM)
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -static -o $@.tmp $^ $(GUEST_STATIC_LIBS) \
		>$@.log 2>&1; rc=$$?; \
		grep -v -e 'statically linked applications requires at runtime' \
			-e ': in function ' $@.log >&2; rm -f $@.log; \
		test $$rc -eq 0 && mv $@.tmp $@

# The host-side probe that drives a booted guest's agent (tests/guest/).
$(GUEST)/cvm-guest-probe: $(call guest_obj,$(GUEST_PROBE_SRCS) daemon/host/agent_client.c) \
		$(GUEST_LIBCVM)
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(call pkg_libs,libuv jansson libcrypto) -lm

# The kernel is Debian's, downloaded once into the build tree and kept.
guest-kernel: $(GUEST_KERNEL)/vmlinuz
$(GUEST_KERNEL)/vmlinuz: firmware/tools/fetch-kernel.sh
	$(call quiet,FETCH,$(GUEST_KERNEL))firmware/tools/fetch-kernel.sh --out $(GUEST_KERNEL)
	@touch $@

$(GUEST_INITRD_DEMO): $(GUEST)/cvm-init $(GUEST)/cvm-agent $(GUEST_KERNEL)/vmlinuz \
		firmware/tools/mkinitrd.sh
	$(call quiet,INITRD,$@)firmware/tools/mkinitrd.sh --out $@ --gzip \
		--init $(GUEST)/cvm-init --agent $(GUEST)/cvm-agent \
		--kernel-modules $(GUEST_KERNEL)/modules -- /bin/cat

guest-test: $(GUEST)/cvm-init $(GUEST)/cvm-agent $(GUEST)/cvm-guest-probe guest-kernel
	@CVM_BUILD=$(BUILD) bash tests/integration/test_guest.sh

-include $(shell find $(GUEST)/obj -name '*.d' 2>/dev/null)
