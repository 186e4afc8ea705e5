# cvmd's boot verifier (firmware/verifier, docs/firmware.md): a 64 KiB ROM
# that QEMU loads with -bios. Freestanding, never sanitized, whatever
# SANITIZE says; included by the Makefile and part of `all`. Always built by
# GCC, whatever CC says: its bytes are measured into every launch digest.
VF_CC ?= gcc

VERIFIER := $(BUILD)/firmware/verifier.bin
VF_OBJDIR := $(BUILD)/firmware/obj
VF_SRCS := $(wildcard firmware/verifier/*.c)
VF_OBJS := $(VF_OBJDIR)/reset.o $(patsubst firmware/verifier/%.c,$(VF_OBJDIR)/%.o,$(VF_SRCS))
# The large code model: the ROM sits just below 4 GiB and its .bss near 0,
# too far apart for 32-bit or RIP-relative addressing.
VF_CFLAGS := -std=c17 $(WARNINGS) -ffreestanding -fno-builtin -nostdinc -isystem \
	$(shell $(VF_CC) -print-file-name=include) -m64 -mcmodel=large -mno-red-zone \
	-mgeneral-regs-only -fno-pic -fno-pie -fno-stack-protector -fcf-protection=none \
	-fno-asynchronous-unwind-tables -Os -MMD -MP -Ifirmware/verifier

$(VF_OBJDIR)/%.o: firmware/verifier/%.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$@)$(VF_CC) $(VF_CFLAGS) -c -o $@ $<

# The SHA-NI code is the one file that uses SSE registers (vf_main turns SSE
# on before it may run).
$(VF_OBJDIR)/sha256_ni.o: firmware/verifier/sha256_ni.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$@)$(VF_CC) $(filter-out -mgeneral-regs-only,$(VF_CFLAGS)) -msse4.1 -msha \
		-c -o $@ $<

$(VF_OBJDIR)/reset.o: firmware/verifier/reset.S firmware/verifier/layout.h
	@mkdir -p $(dir $@)
	$(call quiet,AS,$@)$(VF_CC) -m64 -Ifirmware/verifier -c -o $@ $<

$(BUILD)/firmware/verifier.elf: $(VF_OBJS) firmware/verifier/verifier.ld
	$(call quiet,LD,$@)$(LD) -nostdlib -static -T firmware/verifier/verifier.ld -o $@ $(VF_OBJS)

$(VERIFIER): $(BUILD)/firmware/verifier.elf
	$(call quiet,BIN,$@)objcopy -O binary -j .text -j .rodata -j .reset --gap-fill 0xff $< $@
