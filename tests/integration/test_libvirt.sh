# The libvirt host end to end under TCG: real QEMU guests from the guest
# image (make guest), through libvirt's embedded driver: cold then warm, a
# guest killed mid-invocation (502, the pool heals), a restart with guests
# running (none leaked), and an SNP launch refused on this non-SNP host.
. "$(dirname "$0")/lib.sh"

if ! command -v qemu-system-x86_64 >/dev/null || ! pkg-config --exists libvirt; then
        echo "ok - libvirt host # SKIP qemu-system-x86_64 or libvirt is not installed"
        finish
fi
if [ "$(id -u)" = 0 ] && ! getent passwd libvirt-qemu >/dev/null; then
        echo "ok - libvirt host # SKIP user libvirt-qemu does not exist (make deps creates it)"
        finish
fi
# The guest image is built once, by the plain build (nothing in it is sanitized).
guest="$CVM_ROOT/${CVM_BUILD%/asan}/guest"
if ! make -s -C "$CVM_ROOT" BUILD="${CVM_BUILD%/asan}" guest >"$TMP/guest.log" 2>&1; then
        echo "ok - libvirt host # SKIP the guest image could not be built (no kernel package?)"
        finish
fi
# accel is left to auto-detection (TCG where KVM cannot boot a kernel).
# The embedded root runs QEMU as root: /dev/kvm is root-only on these machines.
mkdir -p "$STATE/libvirt/etc"
printf 'stdio_handler = "file"\nuser = "root"\ngroup = "root"\nnamespaces = []\n' \
        >"$STATE/libvirt/etc/qemu.conf"
cat >"$TMP/cfg.json" <<JSON
{"libvirt": {"machine": "q35"},
 "image": {"kernel": "$guest/kernel/vmlinux", "initrd": "$guest/initrd-demo.cpio.gz",
           "cmdline": "console=ttyS0 quiet tsc=reliable no_timer_check"}}
JSON
start_daemon --config "$TMP/cfg.json" --host libvirt || { not_ok "daemon starts on libvirt"; finish; }
# Only this test's guests: their command lines name files under its state directory.
qemus() { pgrep -f "guest=cvmd-vm-.*$STATE/" | wc -l; }

api PUT /v1/functions/echo -H 'Content-Type: application/json' -d '{"handler": {"exec": ["/bin/cat"]}}' >/dev/null
out=$(curl -s -D "$TMP/h" --unix-socket "$SOCK" -d 'hello guest' http://cvmd/v1/functions/echo/invoke)
expect "a real guest answers, cold" "$(tr -d '\r' <"$TMP/h" | grep Cvm-Start) $out" '^Cvm-Start: cold hello guest$'
expect "the cold start's phases" "$(tr -d '\r' <"$TMP/h" | grep Server-Timing)" 'prepare;dur=[1-9][0-9.]*, .*boot;dur=[1-9][0-9.]*'
out=$(curl -s -D "$TMP/h" --unix-socket "$SOCK" -d 'again' http://cvmd/v1/functions/echo/invoke)
expect "then warm" "$(tr -d '\r' <"$TMP/h" | grep Cvm-Start) $out" '^Cvm-Start: warm again$'
expect "one QEMU runs the VM" "$(qemus)" '^1$'

# An image from cvmctl image build deploys as written and answers (a plain
# host boots its kernel with the machine's BIOS; its firmware is for SNP).
printf '#!/bin/sh\nprintf "built: %%s" "$(cat)"\n' >"$TMP/built.sh"
chmod +x "$TMP/built.sh"
out=$("$CVMCTL" image build --handler "$TMP/built.sh" --out "$TMP/img" 2>&1) ||
        not_ok "cvmctl image build" "$out"
out=$("$CVMCTL" fn deploy "$TMP/img/function.json" --name built 2>&1) || not_ok "cvmctl fn deploy" "$out"
expect "a function from cvmctl image build deploys and answers" \
        "$("$CVMCTL" invoke built -d 'from the image' 2>&1)" '^built: from the image$'
api DELETE /v1/functions/built >/dev/null

# Kill the guest's QEMU in the middle of an invocation that takes a while:
# an image of its own whose handler sleeps (a shell script run by busybox).
printf '#!/bin/sh\ncat >/dev/null\nsleep "${1:-3}"\necho slept\n' >"$TMP/slow.sh"
chmod +x "$TMP/slow.sh"
"$CVM_ROOT/firmware/tools/mkinitrd.sh" --out "$TMP/slow.cpio.gz" --gzip \
        --kernel-modules "$guest/kernel/modules" --init "$guest/cvm-init" --agent "$guest/cvm-agent" \
        --handler "$TMP/slow.sh" -- /fn/slow.sh 3 >"$TMP/mkinitrd.log" 2>&1 || not_ok "slow initrd"
api PUT /v1/functions/slow -H 'Content-Type: application/json' \
        -d "{\"handler\": {\"exec\": [\"/fn/slow.sh\"]}, \"image\": {\"initrd\": \"$TMP/slow.cpio.gz\"}}" >/dev/null
curl -s --unix-socket "$SOCK" -o /dev/null -d x http://cvmd/v1/functions/slow/invoke
vm=$(api GET '/v1/vms?function=slow' | cut -d' ' -f2- | python3 -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["id"])')
(sleep 1; pkill -KILL -f "guest=cvmd-$vm") &
out=$(api POST /v1/functions/slow/invoke -d x)
expect "a guest killed mid-invocation is a 502" "$out" '^502 .*bad_gateway'
out=$(curl -s -D "$TMP/h" --unix-socket "$SOCK" -d 'healed' http://cvmd/v1/functions/slow/invoke)
expect "the pool heals: a new guest answers" "$(tr -d '\r' <"$TMP/h" | grep Cvm-Start) $out" '^Cvm-Start: cold slept$'

# Restart with guests running: the daemon destroys them on the way out or on the way in.
stop_daemon
expect "the daemon stops cleanly with guests" "$STOP_RC" '^0$'
expect "no QEMU outlives the daemon" "$(qemus)" '^0$'
start_daemon --config "$TMP/cfg.json" --host libvirt || not_ok "restart on libvirt"
expect "no guest is leaked across a restart" "$(qemus)" '^0$'
# Restored functions serve once their images are measured again.
for _ in $(seq 1 50); do api GET /v1/functions/echo | grep -q '^200' && break; sleep 0.1; done
expect "functions come back on libvirt" "$(curl -s --unix-socket "$SOCK" -d 'back' http://cvmd/v1/functions/echo/invoke)" '^back$'
stop_daemon

# A libvirt call that never returns does not hold the exit: a shim holds
# every virDomainResume while $TMP/stall exists; at SIGTERM the guest is
# destroyed all the same, and after libvirt.stop_timeout_ms the daemon names
# the call and exits 1.
if cc -std=c17 -Wall -Wextra -Werror -shared -fPIC -o "$TMP/stall.so" \
        "$CVM_ROOT/tests/tools/libvirt_stall.c" -ldl >"$TMP/stall.log" 2>&1; then
        sed 's/^{"libvirt": {"machine": "q35"}/{"shutdown_grace_ms": 1000, "libvirt": {"machine": "q35", "stop_timeout_ms": 3000, "call_timeout_ms": 2000}/' \
                "$TMP/cfg.json" >"$TMP/stall.json"
        touch "$TMP/stall"
        # A shared ASan runtime (GCC's) wants to come first; the shim does not touch memory.
        CVM_TEST_STALL="$TMP/stall" LD_PRELOAD="$TMP/stall.so" \
                ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
                start_daemon --config "$TMP/stall.json" --host libvirt || not_ok "start with a stalling libvirt"
        for _ in $(seq 1 50); do api GET /v1/functions/echo | grep -q '^200' && break; sleep 0.1; done
        curl -s -o "$TMP/stalled.out" -w '%{http_code}' --unix-socket "$SOCK" -d 'stalled' \
                http://cvmd/v1/functions/echo/invoke >"$TMP/stalled.code" &
        stalled=$!
        for _ in $(seq 1 600); do
                [ -e "$TMP/stall.entered" ] && break
                sleep 0.1
        done
        expect "a resume that never returns holds the launch" \
                "$([ -e "$TMP/stall.entered" ] && api GET '/v1/vms?function=echo' | grep -o '"state": *"[a-z]*"')" 'launching'
        wait "$stalled"
        expect "until libvirt.call_timeout_ms fails it, and the invocation waiting for it" \
                "$(cat "$TMP/stalled.code") $(cat "$TMP/stalled.out")" \
                "^504 .*libvirt's resume of domain cvmd-vm-[0-9a-f]+ did not complete within 2000 ms"
        stop_daemon
        expect "the daemon exits 1 when a libvirt call never returns" "$STOP_RC" '^1$'
        expect "and names the call" "$(grep 'did not return' "$LOG")" \
                'error: libvirt: 1 call\(s\) did not return within 3000 ms of the shutdown \(resume of cvmd-vm-[0-9a-f]+ for [0-9]+ s\)'
        expect "its guest is destroyed all the same" "$(qemus)" '^0$'
else
        not_ok "the libvirt stall shim builds" "$(cat "$TMP/stall.log")"
fi

# SNP cannot be had here, and asking for it says what is missing.
sed 's/"machine": "q35"}/"machine": "q35", "snp": "on"}/' "$TMP/cfg.json" >"$TMP/snp.json"
out=$("$CVMD" --config "$TMP/snp.json" --host libvirt --state-dir "$STATE" --listen "unix:$TMP/snp.sock" 2>&1); rc=$?
expect "an SNP launch is refused on this host, saying what is missing" "$rc $out" '^1 .*SEV-SNP.*(lack|missing|no )'
finish
