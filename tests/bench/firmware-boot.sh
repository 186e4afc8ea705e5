#!/usr/bin/env bash
# firmware-boot: the same Debian kernel and guest initrd booted under QEMU
# (TCG, q35, 256 MiB, 1 vCPU) with cvmd's boot verifier (unverified, and
# verifying hashes), with SeaBIOS and with OVMF, RUNS times each,
# interleaved. Prints the median and range of the time from starting QEMU
# to the guest's first marker (cvm-init: started), and of the part of it
# before the kernel started (that time less the kernel's own uptime, which
# the marker carries): QEMU's start and the firmware. Then what an SEV-SNP
# launch of each firmware measures: pages by type and the launch digest.
# Usage: tests/bench/firmware-boot.sh BUILD_DIR [RUNS]
set -eu -o pipefail
build=${1:-build}
runs=${2:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-fwbench.XXXXXX")
qpid=
trap '[ -n "$qpid" ] && kill -KILL "$qpid" 2>/dev/null; rm -rf "$tmp"' EXIT

vf="$root/$build/firmware/verifier.bin"
guest="$root/$build/guest"
ovmf=/usr/share/ovmf/OVMF.fd
make -s -C "$root" BUILD="$build" "$vf" "$build/verifier-patch" "$guest/initrd-demo.cpio.gz" >/dev/null
kernel="$guest/kernel/vmlinuz"
initrd="$guest/initrd-demo.cpio.gz"
append="console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests"
"$root/$build/verifier-patch" "$vf" -o "$tmp/vf-unverified.bin" --allow-unverified
"$root/$build/verifier-patch" "$vf" -o "$tmp/vf-verified.bin" --kernel "$kernel" --initrd "$initrd" \
        --append "$append"

# boot_ms BIOS_ARGS...: prints "TOTAL,PRE,HANDOFF": milliseconds from
# starting QEMU to the marker, the part of them before the kernel's clock
# started (QEMU, firmware, kernel decompression), and to the verifier's
# "booting Linux" line ("-" for the other firmware).
boot_ms() {
        local con="$tmp/console" t0 now handoff=-
        rm -f "$con"
        t0=$(date +%s%N)
        qemu-system-x86_64 -accel tcg -cpu max -M q35 -m 256 -smp 1 -nodefaults -no-user-config \
                -display none -monitor none -nic none -no-reboot -serial "file:$con" \
                -kernel "$kernel" -initrd "$initrd" -append "$append" "$@" >/dev/null 2>&1 &
        qpid=$!
        while :; do
                if [ "$handoff" = - ] && grep -q 'cvm-verifier: booting Linux' "$con" 2>/dev/null; then
                        handoff=$((($(date +%s%N) - t0) / 1000000))
                fi
                if grep -q 'cvm-init: started' "$con" 2>/dev/null; then
                        now=$(date +%s%N)
                        break
                fi
                if ! kill -0 "$qpid" 2>/dev/null || [ $(($(date +%s%N) - t0)) -gt 120000000000 ]; then
                        now=
                        break
                fi
                sleep 0.01
        done
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        qpid=
        [ -n "$now" ] || { echo "firmware-boot: no marker; console:" >&2; tail -n 5 "$con" >&2; return 1; }
        local total=$(((now - t0) / 1000000)) up
        up=$(sed -n 's/.*cvm-init: started \[\([0-9.]*\)s\].*/\1/p' "$con" | head -n 1)
        echo "$total,$(awk -v t="$total" -v u="$up" 'BEGIN{printf "%d", t - u * 1000}'),$handoff"
}

names=(verifier verifier-verified seabios ovmf)
declare -A args=([verifier]="-bios $tmp/vf-unverified.bin" [verifier-verified]="-bios $tmp/vf-verified.bin"
        [seabios]="" [ovmf]="-bios $ovmf")
declare -A times
echo "# firmware-boot: QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{print $4}'), TCG, q35, 256 MiB," \
        "kernel $(cat "$guest/kernel/version"), $runs runs each, interleaved"
for ((i = 0; i < runs; i++)); do
        for n in "${names[@]}"; do
                [ "$n" = ovmf ] && [ ! -f "$ovmf" ] && continue
                # shellcheck disable=SC2086
                times[$n]+="$(boot_ms ${args[$n]}) "
        done
done
printf '%-20s %10s %10s %10s %14s %12s\n' firmware "median ms" "min ms" "max ms" "pre-kernel ms" \
        "handoff ms"
for n in "${names[@]}"; do
        [ -n "${times[$n]:-}" ] || { printf '%-20s %10s\n' "$n" skipped; continue; }
        read -r -a t <<<"$(tr ' ' '\n' <<<"${times[$n]}" | grep . | cut -d, -f1 | sort -n | tr '\n' ' ')"
        read -r -a p <<<"$(tr ' ' '\n' <<<"${times[$n]}" | grep . | cut -d, -f2 | sort -n | tr '\n' ' ')"
        read -r -a h <<<"$(tr ' ' '\n' <<<"${times[$n]}" | grep . | cut -d, -f3 | sort -n | tr '\n' ' ')"
        printf '%-20s %10s %10s %10s %14s %12s\n' "$n" "${t[$((${#t[@]} / 2))]}" "${t[0]}" "${t[-1]}" \
                "${p[$((${#p[@]} / 2))]}" "${h[$((${#h[@]} / 2))]}"
done

echo
echo "# SEV-SNP launch measurement (1 vCPU, EPYC-v4): pages the PSP processes and the digest"
printf '%-28s %7s %5s %8s %6s %7s %5s  %s\n' firmware normal zero secrets cpuid hashes vmsa digest
measure() { # NAME ARGS...
        local name=$1
        shift
        "$root/$build/cvmctl" measure --vcpus 1 --json "$@" | python3 -c '
import json, sys
m = json.load(sys.stdin); p = m["pages"]
print("%-28s %7d %5d %8d %6d %7d %5d  %s" % (sys.argv[1], p["normal"], p["zero"], p["secrets"],
      p["cpuid"], p["kernel_hashes"], p["vmsa"], m["measurement"][:32] + "..."))' "$name"
}
measure "verifier" --firmware "$vf"
measure "verifier + kernel hashes" --firmware "$vf" --kernel "$kernel" --initrd "$initrd" --append "$append"
[ -f "$ovmf" ] && measure "OVMF ($(($(stat -c %s "$ovmf") / 1024)) KiB)" --firmware "$ovmf"
