# Attestation end to end on the sim host: the daemon relays a report signed
# by the simulated VCEK; cvmctl verifies it on the client's side against the
# expected image, a pinned ARK and a fresh nonce. Tampering, a wrong
# measurement, an unpinned root and debug guests are refused.
. "$(dirname "$0")/lib.sh"

hash() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
echo "{\"tenants\": {\"acme\": {\"token_sha256\": [\"$(hash acme-secret)\"]}}}" >"$TMP/tokens.json"
sim_config "$TMP/cfg.json" "\"auth\": {\"tokens_file\": \"$TMP/tokens.json\"}"
port=$((20000 + RANDOM % 20000))
start_daemon --config "$TMP/cfg.json" --listen "tcp:127.0.0.1:$port" || { not_ok "daemon starts"; finish; }
ark="$STATE/sim-amd/ark.pem"
api PUT /v1/functions/hello -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "pool": {"min_warm": 1}}' >/dev/null

# The sim makes its chain on the first attestation; until a root is pinned nothing is verified.
out=$("$CVMCTL" attest hello --firmware "$TMP/fw.bin" 2>&1); rc=$?
expect "an unpinned root fails" "$rc $out" '^1 .*FAIL +root_of_trust'
out=$("$CVMCTL" attest hello --firmware "$TMP/fw.bin" --ark "$ark" 2>&1); rc=$?
expect "cvmctl attest verifies a function against its image (exit 0)" "$rc $out" \
        '^0 .*pass +ark_pinned.*pass +report_signature.*pass +report_data.*pass +measurement.*pass +vcek_tcb.*verified'
expect "the simulated chain was made on the first attestation" "$(ls "$STATE/sim-amd")" 'ark.pem.*ask.pem.*vcek.der.*vcek.key'
expect "the VM's key is shown for end-to-end encryption" "$out" 'BEGIN PUBLIC KEY'
want=$("$CVMCTL" measure --firmware "$TMP/fw.bin")
out=$("$CVMCTL" attest hello --expect-measurement "$want" --ark "$ark" --json 2>&1); rc=$?
expect "cvmctl measure predicts what attest sees" "$rc $out" '^0 .*"verified": true'

out=$("$CVMCTL" attest hello --expect-measurement "$(printf '%096d' 0)" --ark "$ark" 2>&1); rc=$?
expect "a wrong measurement fails (exit 1), naming the check" "$rc $out" '^1 .*FAIL +measurement .*expected 0000.*NOT verified'
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/k.pem" -out "$TMP/other-ark.pem" -days 1 \
        -subj /CN=other 2>/dev/null
out=$("$CVMCTL" attest hello --firmware "$TMP/fw.bin" --ark "$TMP/other-ark.pem" 2>&1); rc=$?
expect "another pinned ARK fails" "$rc $out" '^1 .*FAIL +ark_pinned'
expect "a missing expectation is a usage error" "$("$CVMCTL" attest hello --ark "$ark" 2>&1; echo "rc=$?")" 'say what to expect.*rc=2'

vm=$(api GET '/v1/vms?function=hello' | cut -d' ' -f2- | python3 -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["id"])')
out=$("$CVMCTL" attest --vm "$vm" --firmware "$TMP/fw.bin" --ark "$ark" 2>&1); rc=$?
expect "a VM is attested by id" "$rc $out" '^0 .*verified'
expect "a bad nonce is refused" "$(api POST "/v1/vms/$vm/attestation" -H 'Content-Type: application/json' -d '{"nonce": "abc"}')" \
        "^400 .*field 'nonce' must be 64 bytes"
expect "an unknown function is a 404" "$(api POST /v1/functions/nope/attestation -H 'Content-Type: application/json' -d "{\"nonce\": \"$(printf '%0128d' 0)\"}")" '^404 '

# Offline: a report obtained elsewhere, AMD's formats (VCEK DER, cert_chain.pem = ASK then ARK).
nonce=$(openssl rand -hex 64)
api POST /v1/functions/hello/attestation -H 'Content-Type: application/json' -d "{\"nonce\": \"$nonce\"}" |
        cut -d' ' -f2- >"$TMP/att.json"
python3 - "$TMP" <<'PY'
import base64, json, sys
d = json.load(open(sys.argv[1] + "/att.json"))
r = base64.b64decode(d["report"])
open(sys.argv[1] + "/report.bin", "wb").write(r)
open(sys.argv[1] + "/report_data.hex", "w").write(r[0x50:0x90].hex())
t = bytearray(r); t[0x90] ^= 1
open(sys.argv[1] + "/tampered.bin", "wb").write(bytes(t))
PY
cat "$STATE/sim-amd/ask.pem" "$STATE/sim-amd/ark.pem" >"$TMP/cert_chain.pem"
verify() { "$CVMCTL" attest verify --vcek "$STATE/sim-amd/vcek.der" --chain "$TMP/cert_chain.pem" --ark "$ark" "$@" 2>&1; }
out=$(verify --report "$TMP/report.bin" --firmware "$TMP/fw.bin" --report-data "$(cat "$TMP/report_data.hex")"); rc=$?
expect "attest verify passes a genuine report offline" "$rc $out" '^0 .*verified'
out=$(verify --report "$TMP/tampered.bin" --firmware "$TMP/fw.bin"); rc=$?
expect "a tampered report fails its signature check" "$rc $out" '^1 .*FAIL +report_signature'
out=$(verify --report "$TMP/report.bin" --report-data "$(printf '%0128d' 0)"); rc=$?
expect "a wrong nonce fails" "$rc $out" '^1 .*FAIL +report_data'

# Tenants attest their own functions over TCP.
curl -s -X PUT -H 'Authorization: Bearer acme-secret' -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}}' "http://127.0.0.1:$port/v1/functions/mine" >/dev/null
out=$("$CVMCTL" --url "http://127.0.0.1:$port" --token acme-secret attest mine --firmware "$TMP/fw.bin" --ark "$ark" 2>&1); rc=$?
expect "a tenant attests its function over TCP" "$rc $out" '^0 .*verified'
out=$("$CVMCTL" --url "http://127.0.0.1:$port" --token acme-secret attest hello --firmware "$TMP/fw.bin" --ark "$ark" 2>&1); rc=$?
expect "a tenant cannot attest another's function" "$rc $out" '^1 cvmctl: no function'

# Debuggable guests are refused unless the operator allows them.
out=$(api PUT /v1/functions/dbg -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "image": {"guest_policy": "0xb0000"}}')
expect "a debug guest policy is refused" "$out" '^403 .*image.guest_policy'
stop_daemon
sim_config "$TMP/debug.json" '"policy": {"allow_debug": true}'
start_daemon --config "$TMP/debug.json" || not_ok "restart with allow_debug"
out=$(api PUT /v1/functions/dbg -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "image": {"guest_policy": "0xb0000"}}')
expect "policy.allow_debug lets the operator launch one" "$out" '^201 '
out=$("$CVMCTL" attest dbg --firmware "$TMP/fw.bin" --ark "$ark" 2>&1); rc=$?
expect "but the client's verification flags it" "$rc $out" '^1 .*FAIL +policy_debug'
stop_daemon
finish
