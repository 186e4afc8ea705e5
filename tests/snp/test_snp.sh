# SEV-SNP end to end, on a host that has it: cvmd's libvirt host launches
# an SNP guest from the boot verifier (the default firmware) with the guest
# image's kernel and initrd, the function answers, and `cvmctl attest`
# verifies the guest's report against the digest `cvmctl measure` predicts
# from the same files. Everywhere else every check is skipped, saying what
# is missing. tests/run.sh runs it with the integration tests.
#
# On an SNP host, set CVM_SNP_ARK to AMD's ARK certificate (PEM) for the
# host's product (https://kdsintf.amd.com/vcek/v1/{Milan,Genoa}/cert_chain
# holds ASK and ARK) to have the report's chain checked against it.
. "$(dirname "$0")/../integration/lib.sh"

skip() {
        echo "ok - SEV-SNP end to end # SKIP $1"
        exit 0
}
[ -e /dev/sev ] || skip "no /dev/sev: this host has no SEV firmware interface"
snp=$(cat /sys/module/kvm_amd/parameters/sev_snp 2>/dev/null || echo N)
[ "$snp" = Y ] || [ "$snp" = 1 ] || skip "kvm_amd has SNP off (/sys/module/kvm_amd/parameters/sev_snp = $snp)"
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
qv=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)
read -r qmaj qmin <<<"$qv"
[ "${qmaj:-0}" -gt 9 ] || { [ "${qmaj:-0}" -eq 9 ] && [ "${qmin:-0}" -ge 1 ]; } ||
        skip "QEMU $qmaj.$qmin cannot launch SNP guests with kernel hashes (needs 9.1)"
case $CVM_BUILD in */asan) skip "run once, by the plain build" ;; esac

guest="$CVM_ROOT/$CVM_BUILD/guest"
build_guest "SEV-SNP end to end" "$CVM_BUILD/guest/initrd-demo.cpio.gz"
kernel="$guest/kernel/vmlinuz"
initrd="$guest/initrd-demo.cpio.gz"
verifier="$CVM_ROOT/$CVM_BUILD/firmware/verifier.bin"
append="console=ttyS0 quiet panic=-1"
cat >"$TMP/cfg.json" <<JSON
{"libvirt": {"snp": "on"},
 "image": {"kernel": "$kernel", "initrd": "$initrd", "cmdline": "$append", "vcpus": 1}}
JSON
start_daemon --config "$TMP/cfg.json" --host libvirt || { not_ok "cvmd starts with SNP on"; finish; }
api PUT /v1/functions/echo -H 'Content-Type: application/json' -d '{"handler": {"exec": ["/bin/cat"]}}' >/dev/null
out=$(curl -s -D "$TMP/h" --unix-socket "$SOCK" -d 'hello snp' http://cvmd/v1/functions/echo/invoke)
expect "an SNP guest booted by the verifier answers" "$(tr -d '\r' <"$TMP/h" | grep Cvm-Start) $out" \
        '^Cvm-Start: cold hello snp$'
expect "the function reports the verifier as its firmware" "$(api GET /v1/functions/echo)" 'verifier\.bin'

digest=$("$CVMCTL" measure --firmware "$verifier" --kernel "$kernel" --initrd "$initrd" \
        --append "$append" --vcpus 1 --vcpu-type EPYC-v4)
expect "cvmctl measure predicts a digest" "$digest" '^[0-9a-f]{96}$'
if [ -n "${CVM_SNP_ARK:-}" ]; then
        check "cvmctl attest: the guest's report verifies against the predicted digest and AMD's ARK" \
                "$CVMCTL" attest echo --expect-measurement "$digest" --ark "$CVM_SNP_ARK"
else
        out=$("$CVMCTL" attest echo --expect-measurement "$digest" --ark /dev/null 2>&1)
        expect "cvmctl attest: the report's measurement is the predicted digest (set CVM_SNP_ARK to check the chain)" \
                "$out" 'pass +report_signature.*pass +measurement'
fi
stop_daemon
expect "cvmd stops cleanly" "$STOP_RC" '^0$'
finish
