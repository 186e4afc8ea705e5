#!/usr/bin/env bash
# Runs the benchmarks: api-rtt and psp-burst against daemons started here on
# temporary state directories (once with psp.schedule "none", once with
# "cvmd"), warm-overhead and scale against fresh daemons, then the trace
# replays on a virtual clock, then firmware-boot (real QEMU guests). Figures
# go to stdout.
# Usage: tests/bench/run.sh BUILD_DIR
set -eu -o pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-bench.XXXXXX")
pid=
stop_daemon() {
        if [ -n "$pid" ]; then
                kill "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
                pid=
        fi
}
trap 'stop_daemon; rm -rf "$tmp"' EXIT
# Shows why a benchmark failed before the temporary directory goes.
fail() {
        echo "bench: $1; the daemon's log ends with:" >&2
        tail -n 20 "$tmp/cvmd.log" >&2 || true
        exit 1
}

# psp-burst measures the launch phase, so the boot model is zeroed: a VM is
# ready as soon as its agent starts. 509 ASIDs (a Milan part) cover every
# launch of a burst, so no DF_FLUSH lands inside a measurement.
# 16 KiB of plain firmware is 4 measured pages, the size of SEVeriFast's boot
# verifier (~13 KB): ~30 ms of PSP time per VM.
head -c 16384 /dev/zero >"$tmp/fw16k.bin"

# A command prefix for the daemon, such as a taskset that pins it.
pin=()
start_daemon() { # SCHEDULE [ASIDS [SIM_MEMORY_LIMIT [POOL_VMS]]]
        stop_daemon
        rm -rf "$tmp/state"
        mkdir -p "$tmp/state"
        local pool=
        [ -n "${4:-}" ] && pool=", \"pool\": {\"vms\": $4}"
        cat >"$tmp/cfg.json" <<JSON
{
  "log_level": "warn",
  "image": {"firmware": "$tmp/fw16k.bin", "firmware_boot_ms": 0, "kernel_boot_ms": 0},
  "sim": {"agent": "$root/$build/cvm-agent", "memory_limit": ${3:-true}},
  "psp": {"schedule": "$1", "asids": ${2:-509}}$pool
}
JSON
        "${pin[@]}" "$root/$build/cvmd" --config "$tmp/cfg.json" --state-dir "$tmp/state" \
                --listen "unix:$tmp/cvmd.sock" 2>"$tmp/cvmd.log" &
        pid=$!
        for _ in $(seq 1 100); do
                [ -S "$tmp/cvmd.sock" ] && return 0
                sleep 0.05
        done
        fail "the daemon did not open its socket within 5 s"
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r)"
start_daemon cvmd
timeout 120 "$root/$build/bench/api-rtt" "$tmp/cvmd.sock" 20000 || fail "api-rtt failed"

ovmf=/usr/share/ovmf/OVMF.fd
for schedule in none cvmd; do
        start_daemon "$schedule"
        echo
        echo "## psp.schedule = \"$schedule\""
        # Each burst is bounded: ~5 s for the plain firmware, ~20 s for OVMF.
        timeout 300 "$root/$build/bench/psp-burst" "$tmp/cvmd.sock" --firmware "$tmp/fw16k.bin" \
                --counts 1,5,10,20,30,40,50 | tee "$tmp/burst-$schedule.txt" ||
                fail "psp-burst (16 KiB firmware, $schedule) failed"
        if [ -r "$ovmf" ]; then
                echo
                # ~0.55 s of PSP time per VM: the counts stop at 20 to keep the run short.
                timeout 300 "$root/$build/bench/psp-burst" "$tmp/cvmd.sock" --firmware "$ovmf" \
                        --counts 1,5,10,20 || fail "psp-burst (OVMF, $schedule) failed"
        else
                echo "psp-burst: skipped with OVMF: $ovmf is missing (Debian package ovmf)"
        fi
done
stop_daemon

# The headline: mean cold-start launch latency at N = 50, cvmd against none.
row() { awk '$1 == 50 { print $2, $5 }' "$tmp/burst-$1.txt"; }
read -r none_mean none_max <<<"$(row none)"
read -r cvmd_mean cvmd_max <<<"$(row cvmd)"
echo
printf '## N = 50, 16 KiB firmware: mean %s ms (none) vs %s ms (cvmd): ratio %s; last %s vs %s ms\n' \
        "$none_mean" "$cvmd_mean" "$(awk -v a="$cvmd_mean" -v b="$none_mean" 'BEGIN { printf "%.3f", a / b }')" \
        "$none_max" "$cvmd_max"

# The daemon's overhead on a warm invocation: a no-op function on a warm pool
# against the same agent driven directly (~35 s).
start_daemon cvmd
echo
timeout 180 "$root/$build/bench/warm-overhead" "$tmp/cvmd.sock" --connections 4 --seconds 10 \
        --agent "$root/$build/cvm-agent" --pid "$pid" || fail "warm-overhead failed"

# Again with every process on one CPU: the daemon (so its agents and handlers)
# and the benchmark (so its direct agent and relay). A wake-up is then a
# context switch, never a halted CPU brought back (in a VM, an interrupt
# through the hypervisor), so what remains is the daemon's own work (~35 s).
if [ "$(nproc)" -gt 1 ]; then
        pin=(taskset -c 0)
        start_daemon cvmd
        echo
        timeout 180 "${pin[@]}" "$root/$build/bench/warm-overhead" "$tmp/cvmd.sock" --connections 4 \
                --seconds 10 --agent "$root/$build/cvm-agent" --pid "$pid" ||
                fail "warm-overhead on one CPU failed"
        pin=()
fi

# Memory and warm latency at 1000 functions and 500 VMs (~35 s). VMs of 16 MiB
# would not fit an address-space limit, so it is off; 1024 ASIDs and pool
# slots leave room for all 500 VMs and the baseline's.
start_daemon cvmd 1024 false 1024
echo
timeout 240 "$root/$build/bench/scale" "$tmp/cvmd.sock" --pid "$pid" --functions 1000 --vms 500 ||
        fail "scale failed"
stop_daemon

echo
traces=${CVM_TRACES:-$root/../shared/traces}
if [ -d "$traces/azure2019-500fn-8h" ]; then
        # The deciding core on a virtual clock: seconds for 8 h of 500 functions.
        timeout 600 "$root/$build/bench/trace-replay" --policy both "$traces/azure2019-10fn-24h" ||
                fail "trace-replay (10fn-24h) failed"
        echo
        timeout 600 "$root/$build/bench/trace-replay" --policy both "$traces/azure2019-500fn-8h" ||
                fail "trace-replay (500fn-8h) failed"
else
        echo "trace-replay: skipped: no traces under $traces (set CVM_TRACES)"
fi

echo
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
        # Real guests under TCG: the boot verifier against SeaBIOS and OVMF.
        timeout 1200 "$root/tests/bench/firmware-boot.sh" "$build" 5 || fail "firmware-boot failed"
        echo
        # The verifier's hash at native speed, over the same kernel and initrd.
        "$root/$build/bench/verifier-sha" "$root/$build/guest/kernel/vmlinuz" \
                "$root/$build/guest/initrd-demo.cpio.gz" || fail "verifier-sha failed"
else
        echo "firmware-boot: skipped: qemu-system-x86_64 is not installed"
fi
