# The sim host end to end: VMs launched through the API, real handlers (a
# shell script and a compiled program) run by the real agent, failures of
# every kind, ASID exhaustion, and the rows the store keeps.
. "$(dirname "$0")/lib.sh"

sim_config "$TMP/cfg.json" '"psp": {"asids": 3}'
cat >"$TMP/echo.sh" <<'SH'
#!/bin/sh
printf 'got: %s' "$(cat)"
SH
cat >"$TMP/fail.sh" <<'SH'
#!/bin/sh
echo "bad input" >&2
exit 3
SH
cat >"$TMP/slow.sh" <<'SH'
#!/bin/sh
sleep "${1:-10}"
SH
chmod +x "$TMP/echo.sh" "$TMP/fail.sh" "$TMP/slow.sh"
cat >"$TMP/upper.c" <<'C'
#include <ctype.h>
#include <stdio.h>
int main(void) {
        int c;
        while ((c = getchar()) != EOF)
                putchar(toupper(c));
        return 0;
}
C
cc -o "$TMP/upper" "$TMP/upper.c"

start_daemon --config "$TMP/cfg.json" || { not_ok "daemon starts"; finish; }

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
create() { # HANDLER_JSON [EXTRA FIELDS]: prints "STATUS BODY"
        api POST /v1/vms -H 'Content-Type: application/json' -d "{\"handler\": $1 ${2:-}}"
}

out=$(create '{"exec": ["'"$TMP/echo.sh"'"]}')
expect "POST /v1/vms launches a ready VM" "$out" '^201 \{"id":"vm-[0-9a-f]{16}","state":"ready"'
vm_echo=$(printf '%s' "${out#201 }" | json 'd["id"]')
psp_ms=$(printf '%s' "${out#201 }" | json 'd["phases"]["psp_ms"]')
expect "the launch phase took simulated PSP time" "$psp_ms" '^(2[0-9]|3[0-9])\.'
want=$(python3 "$CVM_ROOT/tests/tools/snp_measure_ref.py" --firmware "$TMP/fw.bin" --vcpus 1 \
        --vcpu-type EPYC-v4 2>&1 | tail -n 1)
got=$(printf '%s' "${out#201 }" | json 'd["measurement"]')
expect "the VM carries the launch digest a client can predict" "$got" "^$want\$"

out=$(api POST "/v1/vms/$vm_echo/invoke" --data-binary 'hello')
expect "a shell script handler answers" "$out" '^200 got: hello$'
hdrs=$(curl -s -D - -o /dev/null --unix-socket "$SOCK" --data-binary x "http://cvmd/v1/vms/$vm_echo/invoke" | tr -d '\r')
expect "invoke headers name the VM and the invocation" "$hdrs" "Cvm-Vm-Id: $vm_echo.*Cvm-Invocation-Id: inv-[0-9a-f]{16}.*Server-Timing: queue;dur=.*exec;dur="

out=$(create '{"exec": ["'"$TMP/upper"'"]}')
vm_upper=$(printf '%s' "${out#201 }" | json 'd["id"]')
head -c 1048576 /dev/zero | tr '\0' 'a' >"$TMP/big.in"
curl -s --unix-socket "$SOCK" --data-binary @"$TMP/big.in" -o "$TMP/big.out" \
        "http://cvmd/v1/vms/$vm_upper/invoke"
expect "a compiled handler transforms 1 MiB" "$(head -c 4 "$TMP/big.out") $(stat -c %s "$TMP/big.out")" '^AAAA 1048576$'

out=$(create '{"exec": ["'"$TMP/fail.sh"'"]}')
vm_fail=$(printf '%s' "${out#201 }" | json 'd["id"]')
out=$(api POST "/v1/vms/$vm_fail/invoke" -d x)
expect "a failing handler is a 500 function_failed with its exit code and stderr" "$out" \
        '^500 \{"error":"function_failed","message":"the handler exited with status 3","stderr":"bad input\\n","exit_code":3'
api DELETE "/v1/vms/$vm_fail" >/dev/null

# A bad request changes nothing.
expect "a missing handler is refused" "$(create '{"exec": ["/nonexistent/handler"]}')" \
        "^400 .*handler.exec"
expect "a bad image path is refused, naming the field" \
        "$(create '{"exec": ["/bin/cat"]}' ', "image": {"firmware": "/no/such/fw"}')" \
        '^400 .*image.firmware.*/no/such/fw'
expect "an unknown field is refused" "$(create '{"exec": ["/bin/cat"]}' ', "imgae": {}')" \
        "^400 .*unknown field 'imgae'"
expect "an unknown VM is a 404" "$(api POST /v1/vms/vm-0000000000000000/invoke -d x)" '^404 .*no VM'
expect "a bad timeout is refused" "$(api POST "/v1/vms/$vm_echo/invoke?timeout_ms=0" -d x)" "^400 .*timeout_ms"
expect "so is a signed one" "$(api POST "/v1/vms/$vm_echo/invoke?timeout_ms=%2B5" -d x)" "^400 .*timeout_ms"

# Three ASIDs: echo and upper hold two; a third VM takes the last, a fourth finds none.
out=$(create '{"exec": ["'"$TMP/slow.sh"'", "10"]}')
vm_slow=$(printf '%s' "${out#201 }" | json 'd["id"]')
out=$(create '{"exec": ["/bin/cat"]}')
expect "no ASID left is a clear 503" "$out" '^503 \{"error":"resource_exhausted","message":".*no ASID available'
expect "GET /v1/psp shows the ASIDs" "$(api GET /v1/psp)" '"asids":\{"total":3,"free":0,"dirty":[0-9]+,"in_use":3\}'

# Timeout, then concurrency: one invocation at a time per VM.
start=$(date +%s%N)
out=$(api POST "/v1/vms/$vm_slow/invoke?timeout_ms=300" -d x)
elapsed=$((($(date +%s%N) - start) / 1000000))
expect "a handler past its timeout is a 504" "$out" '^504 \{"error":"timeout","message":"the handler ran past its timeout of 300 ms"'
expect "the timeout answers in time" "$elapsed" '^([0-9]{3}|1[0-9]{3})$'
curl -s --unix-socket "$SOCK" -o /dev/null -d x "http://cvmd/v1/vms/$vm_slow/invoke?timeout_ms=3000" &
busy=$!
sleep 0.3
expect "a second invocation on a busy VM is a 429" "$(api POST "/v1/vms/$vm_slow/invoke" -d x)" '^429 .*busy'
wait "$busy"

# The agent dies mid-invocation: 502, and the VM is removed.
pid=$(api GET "/v1/vms/$vm_slow" | cut -d' ' -f2- | json 'd["host"]["pid"]')
(sleep 0.4; kill -KILL "$pid") &
out=$(api POST "/v1/vms/$vm_slow/invoke?timeout_ms=5000" -d x)
expect "an agent killed mid-invocation is a 502" "$out" "^502 \{\"error\":\"bad_gateway\",\"message\":\"vm $vm_slow failed during the invocation"
sleep 0.3
expect "the dead VM is removed" "$(api GET "/v1/vms/$vm_slow")" '^404 '
expect "its ASID is released (dirty until a flush)" "$(api GET /v1/psp)" '"in_use":2\}'
out=$(create '{"exec": ["/bin/cat"]}')
expect "a new VM launches after a DF_FLUSH" "$out" '^201 '
expect "the DF_FLUSH was counted" "$(api GET /v1/psp)" '"df_flushes":[1-9]'

# Deleting a VM tears it down off the request path.
expect "DELETE answers 202" "$(api DELETE "/v1/vms/$vm_upper")" '^202 \{"id":"'"$vm_upper"'","state":"stopping"\}'
sleep 0.3
expect "the deleted VM is gone" "$(api GET "/v1/vms/$vm_upper")" '^404 '
expect "the daemon still serves" "$(api GET /v1/health)" '^200 '
expect "GET /v1/vms lists the VMs left" "$(api GET /v1/vms | cut -d' ' -f2- | json 'len(d["vms"])')" '^2$'

pids=$(api GET /v1/vms | cut -d' ' -f2- | json '" ".join(str(v["host"]["pid"]) for v in d["vms"])')
stop_daemon
expect "the daemon stops cleanly with VMs running" "$STOP_RC" '^0$'
alive=""
for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
expect "no agent outlives the daemon" "[$alive]" '^\[\]$'
expect "no VM directory is left behind" "$(ls "$STATE/sim" 2>&1 | wc -l)" '^0$'

db="$STATE/cvmd.db"
expect "every launch is a row" "$(sqlite3 "$db" "SELECT count(*), sum(result = 'failed') FROM launches")" '^6\|1$'
expect "launch rows carry their phases" \
        "$(sqlite3 "$db" "SELECT count(*) FROM launches WHERE result = 'ok' AND psp_us > 20000 AND boot_us >= 10000 AND total_us >= psp_us")" '^5$'
expect "every invocation is a row with its status" \
        "$(sqlite3 "$db" "SELECT group_concat(status, ',') FROM (SELECT status FROM invocations ORDER BY status)")" \
        '^failed,ok,ok,ok,timeout,timeout,vm_failed$'
expect "invocation rows carry sizes and exit codes" \
        "$(sqlite3 "$db" "SELECT bytes_in, bytes_out FROM invocations WHERE vm_id = '$vm_upper'; SELECT exit_code FROM invocations WHERE status = 'failed'")" \
        '^1048576\|1048576 3$'
expect "VMs are retired with a reason" \
        "$(sqlite3 "$db" "SELECT count(*) FROM vms WHERE retire_reason IS NOT NULL")" '^[4-9]$'
finish
