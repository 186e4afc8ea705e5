#!/usr/bin/env bash
# `make run`: cvmd in the foreground on the given host with state under
# ./run, and the demo function "hello" deployed once the daemon answers.
# HOST=libvirt runs it in real QEMU guests (docs/libvirt-host.md).
# Ctrl-C stops the daemon (it drains and exits 0).
set -eu
build=${1:-build}
host=${2:-sim}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p run
sock="$root/run/cvmd.sock"
config=daemon/cvmd-dev.json
exec_path="$root/examples/hello/handler.sh"
if [ "$host" = libvirt ]; then
        # Real guests: the guest image, and an initrd with the handler in it.
        make -s BUILD="$build" guest
        guest="$root/$build/guest"
        firmware/tools/mkinitrd.sh --out run/hello.cpio.gz --gzip \
                --kernel-modules "$guest/kernel/modules" --init "$guest/cvm-init" \
                --agent "$guest/cvm-agent" --handler examples/hello/handler.sh >/dev/null
        exec_path=/fn/handler.sh
        # The embedded driver's own qemu.conf, written once. As root, QEMU runs
        # as libvirt-qemu; where that user cannot open /dev/kvm (mode 0600),
        # this development setup runs QEMU as root instead, and says so.
        mkdir -p run/libvirt/etc
        if [ ! -e run/libvirt/etc/qemu.conf ]; then
                printf 'stdio_handler = "file"\n' >run/libvirt/etc/qemu.conf
                if [ "$(id -u)" = 0 ] && [ -e /dev/kvm ] &&
                        ! setpriv --reuid=libvirt-qemu --regid=libvirt-qemu --init-groups \
                                test -r /dev/kvm 2>/dev/null; then
                        echo "make run: libvirt-qemu cannot open /dev/kvm; QEMU runs as root (run/libvirt/etc/qemu.conf)"
                        printf 'user = "root"\ngroup = "root"\n' >>run/libvirt/etc/qemu.conf
                fi
        fi
        config=run/cvmd-libvirt.json
        cat >"$config" <<JSON
{"log_level": "info", "shutdown_grace_ms": 3000,
 "libvirt": {"machine": "q35"},
 "image": {"kernel": "$guest/kernel/vmlinux", "initrd": "$root/run/hello.cpio.gz",
           "cmdline": "console=ttyS0 quiet tsc=reliable no_timer_check"}}
JSON
fi
"$build/cvmd" --config "$config" --host "$host" --state-dir "$root/run" \
        --listen "unix:$sock" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 1 300); do
        curl -sf --unix-socket "$sock" -o /dev/null http://cvmd/v1/health && break
        kill -0 $pid 2>/dev/null || exit 1
        sleep 0.05
done
spec=$(printf '{"handler": {"exec": ["%s"]}, "pool": {"min_warm": 1}}' "$exec_path")
if curl -sf --unix-socket "$sock" -X PUT -H 'Content-Type: application/json' -d "$spec" \
        http://cvmd/v1/functions/hello -o /dev/null; then
        cat <<MSG

cvmd is running with the demo function "hello" (one VM kept warm). In another terminal:
  export CVMD_SOCKET=$sock
  $build/cvmctl health
  curl --unix-socket \$CVMD_SOCKET -d 'you' http://cvmd/v1/functions/hello/invoke
Ctrl-C here stops the daemon.

MSG
else
        echo "make run: could not deploy the demo function; the daemon keeps running" >&2
fi
wait $pid
