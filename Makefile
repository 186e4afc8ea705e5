# cvmd: build, test, run, install. Objects go under $(BUILD); `make check`
# runs every test against a plain build and an ASan+UBSan build.

BUILD ?= build
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
# cvmd finds the agent at BINDIR/../libexec/cvmd/cvm-agent.
LIBEXECDIR ?= $(PREFIX)/libexec
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
DESTDIR ?=
HOST ?= sim
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

CC ?= cc
# Quiet by default; `make V=1` shows every command.
V ?= 0
ifeq ($(V),0)
Q := @
quiet = @printf '  %-6s %s\n' $(1) $(2);
endif
# The sanitized build and the fuzz targets use clang 19: its ASan locks its
# allocator around fork() (LLVM 18 and later; GCC 12's does not), and libvirt
# allocates in the child it forks to start QEMU, before exec. With GCC's ASan
# that child could deadlock on a lock another thread held at the fork: the
# launch never returned and the child outlived cvmd, holding its files.
SAN_CC ?= clang-19
FUZZ_CC ?= clang-19
FUZZ_SECONDS ?= 60
CLANG_FORMAT ?= clang-format

# Debian packages the build and the tests need; `make deps` installs those missing.
DEB_PACKAGES := gcc make pkg-config libuv1-dev libmicrohttpd-dev libsqlite3-dev libjansson-dev \
	libsystemd-dev libssl-dev libcurl4-openssl-dev libcmocka-dev sqlite3 curl systemd util-linux \
	python3 ovmf gdb clang-19 libclang-rt-19-dev llvm-19 \
	libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 busybox-static cpio

PKGS_DAEMON := libuv libmicrohttpd sqlite3 jansson libsystemd libcrypto libvirt
PKGS_CTL := libcurl jansson libcrypto
PKGS_AGENT := libuv jansson libcrypto
PKGS_TEST := cmocka $(sort $(PKGS_DAEMON) $(PKGS_CTL))

# Recursive (=) so pkg-config runs after `make deps` in the sub-make.
pkg_cflags = $(shell pkg-config --cflags $(1))
pkg_libs = $(shell pkg-config --libs $(1))

CFLAGS ?= -O2 -g
WARNINGS := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wvla -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-missing-field-initializers
CPPFLAGS_ALL := -D_GNU_SOURCE -Ilib -Idaemon -Idaemon/core -Idaemon/host -Ictl -Ipolicy \
	-Ifirmware -Ifirmware/agent
BASE_CFLAGS = -std=c17 $(WARNINGS) -fstack-protector-strong -fno-strict-aliasing -MMD -MP \
	$(CPPFLAGS_ALL) $(call pkg_cflags,$(PKGS_TEST))
ifeq ($(SANITIZE),1)
# Even over a CC given to make (it reaches the sub-makes too): set SAN_CC instead.
override CC := $(SAN_CC)
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CFLAGS := -O1 -g
endif
ALL_CFLAGS = $(BASE_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
ALL_LDFLAGS = $(SAN_FLAGS) $(LDFLAGS)

# Sources are found by location: a new file in a module needs no Makefile edit.
LIB_SRCS := $(wildcard lib/*.c)
DAEMON_SRCS := $(filter-out daemon/main.c,$(wildcard daemon/*.c daemon/*/*.c))
POLICY_SRCS := $(wildcard policy/*.c)
CTL_SRCS := $(filter-out ctl/main.c,$(wildcard ctl/*.c))
AGENT_SRCS := $(filter-out firmware/agent/main.c,$(wildcard firmware/agent/*.c))
FWTOOL_SRCS := $(wildcard firmware/tools/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
BENCH_SRCS := $(wildcard tests/bench/*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCVM := $(BUILD)/libcvm.a
LIBCVMD := $(BUILD)/libcvmd.a
LIBCVMCTL := $(BUILD)/libcvmctl.a
LIBAGENT := $(BUILD)/libcvmagent.a
ARCHIVES := $(LIBCVMD) $(LIBCVMCTL) $(LIBAGENT) $(LIBCVM)

PROGRAMS := $(BUILD)/cvmd $(BUILD)/cvmctl
ifneq ($(wildcard firmware/agent/main.c),)
PROGRAMS += $(BUILD)/cvm-agent
endif
PROGRAMS += $(patsubst firmware/tools/%.c,$(BUILD)/%,$(FWTOOL_SRCS))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

# The boot verifier ROM (firmware/verifier).
include firmware/verifier/verifier.mk

.PHONY: all deps run check asan test unit integration install uninstall format format-check \
	bench fuzz fuzz-build clean build-all FORCE
.DEFAULT_GOAL := all

all: $(PROGRAMS) $(VERIFIER)

build-all: all $(UNIT_BINS) $(BENCH_BINS)

# The compiler and flags a build directory was built with: objects depend on
# them, so building it again with another compiler (the sanitized build moved
# from GCC to clang) or other flags rebuilds everything rather than mixing the
# two. The file changes only when they do.
FLAGS_STAMP := $(BUILD)/flags.stamp
FLAGS_ID = $(CC) $(ALL_CFLAGS) LDFLAGS: $(ALL_LDFLAGS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' '$(FLAGS_ID)' | cmp -s - $@ || printf '%s\n' '$(FLAGS_ID)' >$@
FORCE:

# Objects reached through a pattern rule (tools, tests, benchmarks) would be
# deleted as intermediate, then rebuilt by the next make once their .d files
# name them.
.PRECIOUS: $(BUILD)/obj/%.o
$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(call quiet,CC,$@)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBCVM): $(call obj,$(LIB_SRCS) $(POLICY_SRCS))
$(LIBCVMD): $(call obj,$(DAEMON_SRCS))
$(LIBCVMCTL): $(call obj,$(CTL_SRCS))
$(LIBAGENT): $(call obj,$(AGENT_SRCS))
$(ARCHIVES):
	@mkdir -p $(dir $@)
	$(call quiet,AR,$@)rm -f $@ && ar rcs $@ $^

$(BUILD)/cvmd: $(call obj,daemon/main.c) $(LIBCVMD) $(LIBCVM)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pkg_libs,$(PKGS_DAEMON)) -lpthread -lm

$(BUILD)/cvmctl: $(call obj,ctl/main.c) $(LIBCVMCTL) $(LIBCVM)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pkg_libs,$(PKGS_CTL)) -lm

$(BUILD)/cvm-agent: $(call obj,firmware/agent/main.c) $(LIBAGENT) $(LIBCVM)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pkg_libs,$(PKGS_AGENT)) -lm

$(BUILD)/%: $(BUILD)/obj/firmware/tools/%.o $(LIBCVM)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pkg_libs,libcrypto jansson) -lm

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(ARCHIVES)
	@mkdir -p $(dir $@)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $< $(ARCHIVES) $(call pkg_libs,$(PKGS_TEST)) -lpthread -lm

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(ARCHIVES)
	@mkdir -p $(dir $@)
	$(call quiet,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $< $(ARCHIVES) $(call pkg_libs,$(PKGS_TEST)) -lpthread -lm

deps:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
		echo "make deps: not a Debian system; install the equivalents of: $(DEB_PACKAGES)"; exit 0; fi; \
	missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' \
			|| missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "make deps: installing$$missing"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	if ! getent passwd libvirt-qemu >/dev/null; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "make deps: creating the system user libvirt-qemu (libvirt's QEMU driver runs guests as it)"; \
		$$sudo useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin libvirt-qemu || true; \
	fi

# The daemon on the sim host in the foreground, state under ./run, with the demo function.
run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@exec examples/run-dev.sh $(BUILD) $(HOST)

# Every test, plain and under ASan+UBSan; the last line is "N passed, N failed".
check: deps
	@$(MAKE) --no-print-directory -j$(JOBS) build-all
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=$(BUILD)/asan SANITIZE=1 build-all
	@$(MAKE) --no-print-directory fuzz-build
	@CVM_FUZZ=$(FUZZ_BUILD) tests/run.sh $(BUILD) $(BUILD)/asan

# The test suite under ASan and UBSan only.
asan: deps
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=$(BUILD)/asan SANITIZE=1 build-all
	@tests/run.sh $(BUILD)/asan

# The test suite against the plain build only (no deps step): the quick loop.
test: build-all
	@tests/run.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory -j$(JOBS) build-all
	@tests/bench/run.sh $(BUILD)

# libFuzzer targets (clang). Corpora under tests/fuzz/corpus/. `make check`
# builds them and runs each briefly on its corpus; `make fuzz` runs each for
# FUZZ_SECONDS.
FUZZ_BUILD := $(BUILD)/fuzz
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1
fuzz-build:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) \
		SAN_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
		$(FUZZ_BUILD)/libcvmd.a $(FUZZ_BUILD)/libcvm.a $(FUZZ_BUILD)/libcvmagent.a $(FUZZ_BUILD)/libcvmctl.a
	@set -e; for src in $(FUZZ_SRCS); do \
		name=$$(basename $$src .c); \
		$(FUZZ_CC) -std=c17 $(CPPFLAGS_ALL) $(call pkg_cflags,$(PKGS_TEST)) $(FUZZ_FLAGS) \
			-o $(FUZZ_BUILD)/$$name $$src $(addprefix $(FUZZ_BUILD)/,libcvmd.a libcvmctl.a libcvmagent.a libcvm.a) \
			$(call pkg_libs,$(PKGS_TEST)) -lpthread -lm; \
	done

# The same run as in `make check`, longer, with a corpus that grows across runs.
fuzz: fuzz-build
	@CVM_FUZZ=$(FUZZ_BUILD) CVM_FUZZ_SECONDS=$(FUZZ_SECONDS) CVM_FUZZ_CORPUS=$(FUZZ_BUILD)/corpus \
		tests/run.sh

install: all
	install -Dm755 $(BUILD)/cvmd $(DESTDIR)$(BINDIR)/cvmd
	install -Dm755 $(BUILD)/cvmctl $(DESTDIR)$(BINDIR)/cvmctl
	install -Dm755 $(BUILD)/cvm-agent $(DESTDIR)$(LIBEXECDIR)/cvmd/cvm-agent
	install -Dm644 $(VERIFIER) $(DESTDIR)$(DATADIR)/cvmd/verifier.bin
	install -Dm755 firmware/tools/mkinitrd.sh $(DESTDIR)$(LIBEXECDIR)/cvmd/mkinitrd.sh
	install -Dm644 docs/cvmctl.1 $(DESTDIR)$(MANDIR)/man1/cvmctl.1
	install -Dm644 ctl/cvmctl.bash-completion $(DESTDIR)$(BASHCOMPDIR)/cvmctl
	@# Units are rendered here so they always name this install's paths.
	@for u in cvmd.service cvmd.socket; do \
		mkdir -p $(DESTDIR)$(UNITDIR) && \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/$$u.in \
			> $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -Dm644 systemd/cvmd.sysusers $(DESTDIR)$(SYSUSERSDIR)/cvmd.conf
	install -Dm644 daemon/cvmd.json $(DESTDIR)$(DATADIR)/cvmd/cvmd.json.default
	@# An operator's edited config is never overwritten.
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/cvmd/cvmd.json ]; then \
		install -Dm644 daemon/cvmd.json $(DESTDIR)$(SYSCONFDIR)/cvmd/cvmd.json; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cvmd $(DESTDIR)$(BINDIR)/cvmctl $(DESTDIR)$(LIBEXECDIR)/cvmd/cvm-agent \
		$(DESTDIR)$(DATADIR)/cvmd/verifier.bin $(DESTDIR)$(LIBEXECDIR)/cvmd/mkinitrd.sh \
		$(DESTDIR)$(UNITDIR)/cvmd.service $(DESTDIR)$(UNITDIR)/cvmd.socket \
		$(DESTDIR)$(SYSUSERSDIR)/cvmd.conf $(DESTDIR)$(DATADIR)/cvmd/cvmd.json.default \
		$(DESTDIR)$(MANDIR)/man1/cvmctl.1 $(DESTDIR)$(BASHCOMPDIR)/cvmctl

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)

# The guest image for real VMs (the libvirt host): a static init and agent,
# and an initrd. See firmware/guest.mk.
-include firmware/guest.mk

-include $(shell find $(BUILD)/obj $(VF_OBJDIR) -name '*.d' 2>/dev/null)
