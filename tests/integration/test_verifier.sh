# cvmd's boot verifier (firmware/verifier) under QEMU (TCG): the image's
# layout as QEMU and `cvmctl measure` read it, then real boots of Debian's
# kernel and the guest image with -bios set to the verifier, on q35 and pc:
# unverified where the image allows it, verified against a hash table that
# verifier-patch writes into a copy of the image, and halted, with the
# reason on the console, for a tampered kernel, initrd or command line.
# Last, `cvmctl image build`: a handler becomes a guest image whose spec and
# expected measurement it prints, and which boots verified and answers.
. "$(dirname "$0")/lib.sh"

VF="$CVM_ROOT/$CVM_BUILD/firmware/verifier.bin"
PATCH="$CVM_ROOT/$CVM_BUILD/verifier-patch"

expect "the ROM is 64 KiB" "$(stat -c %s "$VF")" '^65536$'
code=$(size -A "$CVM_ROOT/$CVM_BUILD/firmware/verifier.elf" | awk '$1==".text"||$1==".rodata"{s+=$2} END{print s}')
expect "code and constants are under 16 KiB ($code bytes)" "$([ "$code" -lt 16384 ] && echo yes)" '^yes$'
out=$("$CVMCTL" measure --firmware "$VF" --vcpus 1 --json)
pages=$(printf '%s' "$out" | python3 -c 'import json,sys; p=json.load(sys.stdin)["pages"]; print(" ".join("%s=%d" % (k, p[k]) for k in sorted(p)))')
expect "measured: the 16 ROM pages, its zero, secrets and CPUID pages, one VMSA" "$pages" \
        '^cpuid=1 kernel_hashes=0 normal=16 secrets=1 vmsa=1 zero=18$'
out=$("$PATCH" /usr/share/ovmf/OVMF.fd -o "$TMP/x.bin" 2>&1); rc=$?
expect "verifier-patch refuses an image that is not the verifier" "$rc $out" '^1 .*not a cvmd boot verifier'
out=$("$PATCH" "$VF" -o "$TMP/x.bin" --initrd /dev/null 2>&1); rc=$?
expect "verifier-patch: --initrd needs --kernel" "$rc" '^2$'

# The verifier is the default firmware of launch images: on the sim host a
# function that names none launches from it, at the PSP cost of its pages.
agent="$CVM_ROOT/${CVM_BUILD%/asan}/cvm-agent"
printf '{"image": {"firmware_boot_ms": 5, "kernel_boot_ms": 5}, "sim": {"agent": "%s"}}\n' "$agent" \
        >"$TMP/sim.json"
start_daemon --config "$TMP/sim.json" || { not_ok "cvmd starts on the sim host"; finish; }
api PUT /v1/functions/dflt -H 'Content-Type: application/json' -d '{"handler": {"exec": ["/bin/cat"]}}' >/dev/null
api PUT /v1/functions/ovmf -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware": "/usr/share/ovmf/OVMF.fd"}}' >/dev/null
for _ in $(seq 1 50); do api GET /v1/functions/ovmf | grep -q expected_psp_ms && break; sleep 0.1; done
psp() { api GET "/v1/functions/$1" | cut -d' ' -f2- | python3 -c 'import json,sys; f=json.load(sys.stdin); print(f["spec"]["image"]["firmware"], f["expected_psp_ms"])'; }
read -r fw_d psp_d <<<"$(psp dflt)"
read -r _ psp_o <<<"$(psp ovmf)"
expect "a function's default firmware is the verifier" "$fw_d" "^$CVM_ROOT/${CVM_BUILD}/firmware/verifier\.bin\$"
expect "its expected PSP time follows from its pages: ${psp_d} ms against OVMF's ${psp_o} ms" \
        "$(python3 -c "print('yes' if 0 < $psp_d < 100 and $psp_o > 8 * $psp_d else 'no')")" '^yes$'
out=$(curl -s -D "$TMP/h" --unix-socket "$SOCK" -d 'hi' http://cvmd/v1/functions/dflt/invoke)
expect "a cold start from the verifier spends that PSP time" "$(tr -d '\r' <"$TMP/h" | grep Server-Timing) $out" \
        "psp;dur=${psp_d%.*}(\.[0-9]+)?, .* hi\$"
head -c 65536 /dev/urandom >"$TMP/vmlinux.fake"
out=$(api PUT /v1/functions/elf -H 'Content-Type: application/json' \
        -d "{\"handler\": {\"exec\": [\"/bin/cat\"]}, \"image\": {\"kernel\": \"$TMP/vmlinux.fake\"}}")
expect "a kernel the verifier cannot boot is refused, saying why" "$out" \
        '^4[0-9][0-9] .*the boot verifier .* boots a bzImage with a 64-bit entry'
"$CVMCTL" attest dflt --expect-image >/dev/null 2>&1 # the sim makes its chain on the first request
out=$("$CVMCTL" attest dflt --expect-image --ark "$STATE/sim-amd/ark.pem" 2>&1); rc=$?
expect "cvmctl attest --expect-image expects the verifier by default, and it verifies" "$rc $out" \
        '^0 .*pass +measurement.*verified'
stop_daemon

out=$("$CVMCTL" image build --out "$TMP/img" 2>&1); rc=$?
expect "cvmctl image build: --handler and --out are required (exit 2)" "$rc $out" '^2 .*--handler and --out are required'
out=$("$CVMCTL" image build --handler "$TMP/none" --out "$TMP/img" 2>&1); rc=$?
expect "cvmctl image build: a missing handler is named (exit 1)" "$rc $out" "^1 cvmctl: the handler $TMP/none: No such file"
out=$("$CVMCTL" image build --handler /bin/true --out "$TMP/img" --guest "$TMP" 2>&1); rc=$?
expect "cvmctl image build: missing guest pieces say how to build them" "$rc $out" '^1 .*make guest.*No such file'
out=$("$CVMCTL" image build --handler /bin/true --out "$TMP/img" --file nocolon 2>&1); rc=$?
expect "cvmctl image build: --file takes SRC:DST (exit 2)" "$rc $out" '^2 .*SRC:DST'

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
        echo "ok - boots # SKIP qemu-system-x86_64 is not installed"
        finish
fi
case $CVM_BUILD in
*/asan)
        echo "ok - boots # SKIP the verifier and the guest are not sanitized; see the plain build"
        finish
        ;;
esac

GUEST="$CVM_ROOT/$CVM_BUILD/guest"
build_guest boots "$GUEST/cvm-guest-probe" "$GUEST/initrd-demo.cpio.gz"
KERNEL="$GUEST/kernel/vmlinuz"
INITRD="$GUEST/initrd-demo.cpio.gz"
APPEND="console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nokbd \
i8042.nopnp cryptomgr.notests"

"$PATCH" "$VF" -o "$TMP/allow.bin" --allow-unverified || not_ok "verifier-patch --allow-unverified"
"$PATCH" "$VF" -o "$TMP/hashes.bin" --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND" ||
        not_ok "verifier-patch --kernel --initrd --append"

# qemu_run NAME MACHINE BIOS KERNEL INITRD APPEND [PROBE ARGS...]: boots
# with an agent port and isa-debug-exit (a halt ends QEMU with status 3).
# With probe arguments the probe drives the agent and the VM must power
# itself off; without, QEMU must exit by itself. Leaves QEMU's status in
# QRC and the console in $TMP/NAME.console.
qemu_run() {
        local name=$1 machine=$2 bios=$3 kernel=$4 initrd=$5 append=$6
        shift 6
        local sock="$TMP/$name.sock"
        qemu-system-x86_64 -accel tcg -cpu max -M "$machine" -m 256 -smp 1 -nodefaults \
                -no-user-config -display none -monitor none -nic none -no-reboot \
                -bios "$bios" -serial "file:$TMP/$name.console" \
                -kernel "$kernel" -initrd "$initrd" -append "$append" \
                -device isa-debug-exit,iobase=0xf4,iosize=4 -device virtio-serial-pci \
                -chardev "socket,id=agent,path=$sock,server=on,wait=off" \
                -device virtserialport,chardev=agent,name=org.cvmd.agent \
                >"$TMP/$name.qemu" 2>&1 &
        QEMU_PID=$!
        if [ $# -gt 0 ]; then
                local rc=0
                timeout 60 "$GUEST/cvm-guest-probe" --socket "$sock" --timeout-ms 45000 "$@" \
                        >"$TMP/$name.probe" 2>&1 || rc=$?
                if [ "$rc" -eq 0 ]; then
                        ok "$name: the agent answers"
                else
                        not_ok "$name: the agent answers" "probe exit $rc" "$(cat "$TMP/$name.probe")" \
                                "$(tail -n 20 "$TMP/$name.console")"
                fi
        fi
        wait_qemu 30
}

qemu_run strict q35 "$VF" "$KERNEL" "$INITRD" "$APPEND"
expect "the default image halts a plain guest without hashes, saying why" \
        "$QRC $(cat "$TMP/strict.console")" \
        '^3 .*HALT: plain guest and no hash table in the image: refusing to boot'
expect "... and never starts Linux" "$(grep -c 'Linux version' "$TMP/strict.console")" '^0$'

for machine in q35 pc; do
        qemu_run "unverified-$machine" "$machine" "$TMP/allow.bin" "$KERNEL" "$INITRD" "$APPEND" \
                --invoke hello --want-status ok --want-stdout hello
        expect "unverified-$machine: boots Linux with ACPI, and the VM powers itself off" \
                "$QRC $(cat "$TMP/unverified-$machine.console")" \
                '^0 .*booting UNVERIFIED, as this image allows.*booting Linux at 0x[0-9a-f]+ .*ACPI yes.*cvm-init: agent started'
done

qemu_run verified q35 "$TMP/hashes.bin" "$KERNEL" "$INITRD" "$APPEND" \
        --invoke hello --want-status ok --want-stdout hello
expect "verified: kernel, initrd and command line match the table, Linux boots" \
        "$QRC $(cat "$TMP/verified.console")" \
        '^0 .*kernel verified \(sha256 [0-9a-f]{64}\).*initrd verified.*command line verified.*cvm-init: agent started'

cp "$KERNEL" "$TMP/tampered.vmlinuz"
printf 'X' | dd of="$TMP/tampered.vmlinuz" bs=1 seek=4000000 conv=notrunc status=none
qemu_run bad-kernel q35 "$TMP/hashes.bin" "$TMP/tampered.vmlinuz" "$INITRD" "$APPEND"
expect "a tampered kernel halts the VM with the reason" "$QRC $(cat "$TMP/bad-kernel.console")" \
        '^3 .*HALT: kernel hash mismatch: got [0-9a-f]{64}, the measured table says [0-9a-f]{64}: refusing to boot'
expect "... and Linux never starts" "$(grep -c 'Linux version' "$TMP/bad-kernel.console")" '^0$'
gzip -c /etc/hostname >"$TMP/other.initrd"
qemu_run bad-initrd q35 "$TMP/hashes.bin" "$KERNEL" "$TMP/other.initrd" "$APPEND"
expect "another initrd halts the VM" "$QRC $(cat "$TMP/bad-initrd.console")" '^3 .*HALT: initrd hash mismatch'
qemu_run bad-cmdline q35 "$TMP/hashes.bin" "$KERNEL" "$INITRD" "$APPEND init=/bin/sh"
expect "another command line halts the VM" "$QRC $(cat "$TMP/bad-cmdline.console")" \
        '^3 .*HALT: command line hash mismatch'

# cvmctl image build, end to end: a shell handler with arguments and an
# extra file becomes an image; its spec and measurement agree with cvmctl
# measure; it boots verified (the table written for a plain guest) and the
# handler answers from inside the VM. (test_libvirt.sh deploys such an
# image through the daemon.)
printf '#!/bin/sh\nread -r x\nprintf "resized: %%s %%s %%s" "$x" "$*" "$(cat /etc/resize.conf)"\n' >"$TMP/resize.sh"
chmod +x "$TMP/resize.sh"
echo "conf-ok" >"$TMP/resize.conf"
out=$("$CVMCTL" --json image build --handler "$TMP/resize.sh" --file "$TMP/resize.conf:/etc/resize.conf" \
        --out "$TMP/img" --append "$APPEND" -- --width 64 2>&1); rc=$?
expect "cvmctl image build makes an image" "$rc $(ls "$TMP/img" | tr '\n' ' ')" \
        '^0 function.json initrd.cpio.gz verifier.bin vmlinuz $'
spec=$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["spec"]; i=s["image"]; print(d["measurement"], " ".join(s["handler"]["exec"]), i["firmware"], i["kernel"], i["initrd"], d["psp_pages"])')
read -r digest exec1 exec2 exec3 fw kern rd pages <<<"$spec"
expect "its spec runs the handler as installed, with its arguments" "$exec1 $exec2 $exec3" '^/fn/resize.sh --width 64$'
expect "its measurement is cvmctl measure's, over 37 PSP pages" \
        "$digest $pages" "^$("$CVMCTL" measure --firmware "$fw" --kernel "$kern" --initrd "$rd" --append "$APPEND") 37\$"
"$PATCH" "$fw" -o "$TMP/img-verified.bin" --kernel "$kern" --initrd "$rd" --append "$APPEND"
qemu_run image q35 "$TMP/img-verified.bin" "$kern" "$rd" "$APPEND" \
        --invoke hi --want-status ok --want-stdout "resized: hi --width 64 conf-ok"
expect "the built image boots verified and its handler answers" "$QRC $(cat "$TMP/image.console")" \
        '^0 .*kernel verified.*initrd verified.*command line verified.*cvm-init: agent started'
finish
