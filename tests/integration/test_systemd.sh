# The systemd units: generated like `make install` does, checked with
# systemd-analyze verify, and installed into a DESTDIR.
. "$(dirname "$0")/lib.sh"

if ! command -v systemd-analyze >/dev/null; then
        echo "ok - systemd units # SKIP systemd-analyze is not installed"
        finish
fi
units="$TMP/units"
mkdir -p "$units"
for u in cvmd.service cvmd.socket; do
        sed -e "s|@BINDIR@|$CVM_ROOT/$CVM_BUILD|g" -e "s|@SYSCONFDIR@|/etc|g" \
                "$CVM_ROOT/systemd/$u.in" >"$units/$u"
done
out=$(cd "$units" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
        "$units/cvmd.socket" "$units/cvmd.service" 2>&1)
# In a container without systemd as PID 1, verify can only complain about that.
out=$(printf '%s\n' "$out" | grep -v -e 'System has not been booted with systemd' \
        -e 'Failed to connect to bus' -e 'cvmd user' -e '^$' || true)
expect "systemd-analyze verify passes on cvmd.service and cvmd.socket" "[$out]" '^\[\]$'
expect "the service is Type=notify" "$(cat "$units/cvmd.service")" "Type=notify"
expect "the service does not hide /dev/kvm" "$(cat "$units/cvmd.service")" "DeviceAllow=/dev/kvm rw"

dest="$TMP/dest"
# The ASan tree must be installed with the flags it was built with.
san=""
case "$CVM_BUILD" in *asan*) san="SANITIZE=1" ;; esac
make -s -C "$CVM_ROOT" BUILD="$CVM_BUILD" $san DESTDIR="$dest" PREFIX=/usr install >"$TMP/install.log" 2>&1
check "make install into a DESTDIR" test -x "$dest/usr/bin/cvmd" -a -x "$dest/usr/bin/cvmctl" \
        -a -x "$dest/usr/libexec/cvmd/cvm-agent" -a -s "$dest/usr/share/cvmd/verifier.bin"
expect "installed unit points at the installed binary" "$(cat "$dest/usr/lib/systemd/system/cvmd.service" 2>&1)" \
        "ExecStart=/usr/bin/cvmd --config /etc/cvmd/cvmd.json"
check "installed default config validates" "$dest/usr/bin/cvmd" --config "$dest/etc/cvmd/cvmd.json" --check-config
echo '{"log_level": "debug"}' >"$dest/etc/cvmd/cvmd.json"
make -s -C "$CVM_ROOT" BUILD="$CVM_BUILD" $san DESTDIR="$dest" PREFIX=/usr install >>"$TMP/install.log" 2>&1
expect "install keeps an operator's config" "$(cat "$dest/etc/cvmd/cvmd.json")" "debug"
finish
