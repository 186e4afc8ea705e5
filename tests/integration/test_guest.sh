# The guest image end to end under QEMU (TCG): Debian's kernel, an initrd
# from firmware/tools/mkinitrd.sh with a shell handler, cvm-init as PID 1
# and the static agent on a virtio-serial port, driven from the host by
# tests/guest/probe.c through the daemon's agent client. Each boot must say
# HELLO, answer invocations (a failing one with a FAILED result), and power
# the VM off by itself after SHUTDOWN. Prints the time from starting QEMU to
# HELLO for each machine. Skipped without qemu-system-x86_64.
. "$(dirname "$0")/lib.sh"

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
        echo "ok - guest # SKIP qemu-system-x86_64 is not installed"
        exit 0
fi
case $CVM_BUILD in
*/asan)
        # Nothing in the guest is sanitized (it is static): the plain build's run covers it.
        echo "ok - guest # SKIP the guest image is not sanitized; see the plain build"
        exit 0
        ;;
esac

GUEST="$CVM_ROOT/$CVM_BUILD/guest"
KERNEL="$GUEST/kernel"
PROBE="$GUEST/cvm-guest-probe"

# The guest pieces are not part of `make all`.
build_guest guest "$CVM_BUILD/guest/cvm-init" "$CVM_BUILD/guest/cvm-agent" \
        "$CVM_BUILD/guest/cvm-guest-probe" guest-kernel
ok "guest pieces build (cvm-init, static cvm-agent, probe, kernel $(cat "$KERNEL/version"))"

cat >"$TMP/handler.sh" <<'SH'
#!/bin/sh
input=$(cat)
case $input in
fail*)
        echo "failing on purpose: $input" >&2
        exit 3
        ;;
esac
printf 'guest: %s' "$input"
SH
chmod +x "$TMP/handler.sh"
check "mkinitrd with a shell handler" "$CVM_ROOT/firmware/tools/mkinitrd.sh" --out "$TMP/initrd" \
        --init "$GUEST/cvm-init" --agent "$GUEST/cvm-agent" --kernel-modules "$KERNEL/modules" \
        --handler "$TMP/handler.sh" --concurrency 2
[ -s "$TMP/initrd" ] || finish

# Quiet, and no probing of what these VMs do not have: it saves a second
# under TCG. -cpu max gives the guest RDRAND, without which the kernel's
# random pool (and so the agent's key generation) waits a second for entropy.
APPEND="console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nokbd \
i8042.nopnp cryptomgr.notests pci=lastbus=0"
TIMES=""

# boot NAME MACHINE KERNEL PROBE_ARGS...: boots, runs the probe, checks that
# QEMU exits by itself; leaves the probe's output in $TMP/NAME.probe.
boot() {
        local name=$1 machine=$2 kernel=$3
        shift 3
        local sock="$TMP/$name.sock" console="$TMP/$name.console" dev=virtio-serial-pci
        case $machine in microvm*) dev=virtio-serial-device ;; esac
        local t0
        t0=$(date +%s%N)
        qemu-system-x86_64 -accel tcg -cpu max -M "$machine" -m 256 -smp 1 -nodefaults \
                -no-user-config -display none -monitor none -nic none -no-reboot \
                -serial "file:$console" -kernel "$kernel" -initrd "$TMP/initrd" -append "$APPEND" \
                -device "$dev" -chardev "socket,id=agent,path=$sock,server=on,wait=off" \
                -device virtserialport,chardev=agent,name=org.cvmd.agent \
                >"$TMP/$name.qemu" 2>&1 &
        QEMU_PID=$!
        local rc=0
        timeout 40 "$PROBE" --socket "$sock" --t0-ns "$t0" --timeout-ms 30000 "$@" \
                >"$TMP/$name.probe" 2>&1 || rc=$?
        local hello
        hello=$(sed -n 's/^hello: .*since_t0_ms=\([0-9]*\).*/\1/p' "$TMP/$name.probe")
        if [ "$rc" -eq 0 ] && [ -n "$hello" ]; then
                ok "$name: HELLO after $hello ms, invocations as expected, SHUTDOWN acknowledged"
                TIMES="$TIMES $name=${hello}ms"
        else
                not_ok "$name: probe" "exit $rc" "$(cat "$TMP/$name.probe")" \
                        "console:" "$(tail -n 30 "$console" 2>/dev/null)" "$(cat "$TMP/$name.qemu")"
        fi
        # After SHUTDOWN the agent exits and cvm-init powers the VM off.
        wait_qemu 10
        if [ "$QRC" = 0 ]; then
                ok "$name: the VM powered itself off"
        else
                not_ok "$name: the VM powered itself off" "QEMU still running or failed ($QRC)" \
                        "$(tail -n 10 "$console" 2>/dev/null)"
        fi
        expect "$name: cvm-init's marker on the console" "$(cat "$console" 2>/dev/null)" \
                'cvm-init: agent started'
}

# q35 with SeaBIOS, the uncompressed kernel through its PVH entry: the
# full check, including a failing handler and an attestation without SNP.
boot q35-pvh q35 "$KERNEL/vmlinux" \
        --invoke world --want-status ok --want-stdout "guest: world" \
        --invoke fail-now --want-status failed \
        --invoke again --want-status ok --want-stdout "guest: again" --repeat 10 \
        --attest
out=$(cat "$TMP/q35-pvh.probe")
expect "q35-pvh: a handler exiting 3 gives a FAILED result with its stderr" "$out" \
        'invoke 2: status=failed exit=3 signal=0 .*stderr="failing on purpose: fail-now\\n"'
expect "q35-pvh: ATTEST without an SNP device answers NO_DEVICE with the key" "$out" \
        'attest: status=no_device key_len=120'
expect "q35-pvh: HELLO announces the initrd's concurrency" "$out" 'hello: .*concurrency=2 '

# pc (i440FX) with SeaBIOS, the same kernel. microvm is not booted here: with
# no HPET or PM timer, its TSC calibration against the PIT fails now and then
# under TCG on a busy host and the kernel hangs (docs/guest-image.md).
boot pc-pvh pc "$KERNEL/vmlinux" \
        --invoke pc --want-status ok --want-stdout "guest: pc"

# q35 with SeaBIOS and the compressed bzImage: the conventional path.
boot q35-bzimage q35 "$KERNEL/vmlinuz" \
        --invoke bz --want-status ok --want-stdout "guest: bz"

echo "# time from QEMU start to HELLO (TCG):$TIMES"
finish
