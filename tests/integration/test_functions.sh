# Functions end to end on the sim host: deploy, cold then warm, pools
# (min_warm, keep-alive, late binding, budgets), async invocations,
# replacement, deletion, restart, and every error status.
. "$(dirname "$0")/lib.sh"

sim_config "$TMP/cfg.json" '"psp": {"asids": 16}, "pool": {"vms": 3}'
printf '#!/bin/sh\nprintf "v1:%%s" "$(cat)"\n' >"$TMP/v1.sh"
printf '#!/bin/sh\nprintf "v2:%%s" "$(cat)"\n' >"$TMP/v2.sh"
printf '#!/bin/sh\ncat >/dev/null\nsleep "${1:-1}"\necho slept\n' >"$TMP/sleep.sh"
printf '#!/bin/sh\necho oops >&2\nexit 7\n' >"$TMP/fail.sh"
chmod +x "$TMP"/*.sh

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
put() { api PUT "/v1/functions/$1" -H 'Content-Type: application/json' -d "$2"; }
invoke() { # NAME [CURL ARGS]: prints "STATUS START VMID BODY"; headers stay in $TMP/h
        local name=$1 d
        shift
        d=$(mktemp -d "$TMP/inv.XXXXXX")
        curl -s --unix-socket "$SOCK" -D "$d/h" -o "$d/b" -w '%{http_code}' "$@" \
                "http://cvmd/v1/functions/$name/invoke" >"$d/s"
        cp "$d/h" "$TMP/h" 2>/dev/null
        printf '%s %s %s %s\n' "$(cat "$d/s")" \
                "$(tr -d '\r' <"$d/h" | sed -n 's/^Cvm-Start: //p')" \
                "$(tr -d '\r' <"$d/h" | sed -n 's/^Cvm-Vm-Id: //p')" "$(cat "$d/b" 2>/dev/null)"
}
pool() { api GET "/v1/functions/$1" | cut -d' ' -f2- | json "d['pool']['$2']"; }
waiting() { [ "$(pool "$1" waiting)" = 1 ]; }
wait_for() { # SECONDS COMMAND...: polls until the command succeeds
        local end=$((SECONDS + $1))
        shift
        until "$@"; do
                [ $SECONDS -ge $end ] && return 1
                sleep 0.1
        done
}

start_daemon --config "$TMP/cfg.json" || { not_ok "daemon starts"; finish; }

out=$(put hello '{"handler": {"exec": ["'"$TMP/v1.sh"'"]}, "pool": {"keep_alive_s": 60}}')
expect "PUT creates a function" "$out" '^201 \{"name":"hello",.*"measurement":"[0-9a-f]{96}"'
out=$(invoke hello -d 'a')
expect "the first invocation is cold" "$out" '^200 cold vm-[0-9a-f]{16} v1:a$'
vm1=$(echo "$out" | cut -d' ' -f3)
expect "the cold start's phases are in Server-Timing" "$(tr -d '\r' <"$TMP/h" | grep Server-Timing)" \
        'queue;dur=[0-9.]+, prepare;dur=[0-9.]+, psp_wait;dur=[0-9.]+, psp;dur=[1-9][0-9.]+, boot;dur=[1-9][0-9.]+, exec;dur='
out=$(invoke hello -d 'b')
expect "the second is warm, on the same VM" "$out" "^200 warm $vm1 v1:b\$"
expect "GET /v1/functions/hello shows the pool" "$(api GET /v1/functions/hello)" '"pool":\{"ready":1,"busy":0'
expect "GET /v1/functions lists it" "$(api GET /v1/functions | cut -d' ' -f2- | json 'd["functions"][0]["name"]')" '^hello$'

# A pool-only change keeps the warm VM; a new handler drains it.
out=$(put hello '{"handler": {"exec": ["'"$TMP/v1.sh"'"]}, "pool": {"keep_alive_s": 30}}')
expect "a replace answers 200" "$out" '^200 '
expect "a pool-only change keeps the warm VM" "$(invoke hello -d c)" "^200 warm $vm1 v1:c\$"
put hello '{"handler": {"exec": ["'"$TMP/v2.sh"'"]}}' >/dev/null
out=$(invoke hello -d d)
expect "a new handler runs on a new VM" "$out" '^200 cold vm-[0-9a-f]{16} v2:d$'
expect "the old VM was drained" "$(wait_for 5 sh -c "! curl -s --unix-socket $SOCK http://cvmd/v1/vms | grep -q $vm1" && echo gone)" '^gone$'

# min_warm keeps VMs ready without any invocation.
put warm '{"handler": {"exec": ["/bin/cat"]}, "pool": {"min_warm": 2, "max_vms": 2}}' >/dev/null
ready2() { [ "$(pool warm ready)" = 2 ]; }
check "min_warm launches VMs ahead of demand" wait_for 5 ready2
expect "a min_warm function starts warm" "$(invoke warm -d x)" '^200 warm '

# Keep-alive retires idle VMs.
put brief '{"handler": {"exec": ["/bin/cat"]}, "pool": {"keep_alive_s": 1}}' >/dev/null
invoke brief -d x >/dev/null
expect "the VM is ready right after" "$(pool brief ready)" '^1$'
gone() { [ "$(pool brief ready)" = 0 ] && [ "$(pool brief retiring)" = 0 ]; }
check "keep-alive retires the idle VM" wait_for 5 gone
api DELETE /v1/functions/brief >/dev/null
api DELETE /v1/functions/warm >/dev/null

# Late binding: while a second VM boots slowly, the first frees up and takes the waiting request.
put slow '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "0.4"]}, "image": {"firmware_boot_ms": 3000}}' >/dev/null
invoke slow -d x -o /dev/null >/dev/null
(invoke slow -d x >"$TMP/first") &
first_job=$!
sleep 0.1
second=$(invoke slow -d x)
wait "$first_job"
first_vm=$(cut -d' ' -f3 "$TMP/first")
expect "late binding: the waiting request took the VM that freed first" "$second" "^200 warm $first_vm slept"
expect "late binding: a launch was started for it" "$(pool slow launches)" '^2$'
api DELETE /v1/functions/slow >/dev/null

# A client that goes away while its invocation waits for a VM cancels it: the
# wait ends (its place is free for others), the launch goes on for the pool,
# and the invocation is recorded as cancelled.
put gone1 '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 5000}, "pool": {"max_vms": 1}}' >/dev/null
expect "a client that gives up gets no answer" "$(invoke gone1 -m 0.5 -d x | cut -c1-3)" '^000$'
not_waiting() { [ "$(pool gone1 waiting)" = 0 ]; }
check "its invocation stops waiting" wait_for 2 not_waiting
by_status() { api GET "/v1/stats?function=$1" | cut -d' ' -f2- | json "d['invocations']['by_status'].get('$2', 0)"; }
cancelled() { [ "$(by_status gone1 cancelled)" = 1 ]; }
check "and is recorded as cancelled" wait_for 3 cancelled
expect "the launch it started serves the next one" "$(invoke gone1 -d y)" '^200 cold vm-[0-9a-f]{16} y$'
# One that goes away while its invocation runs: the handler finishes and the
# VM is free again.
put gone2 '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "1"]}, "pool": {"max_vms": 1}}' >/dev/null
invoke gone2 -d warmup -o /dev/null >/dev/null
expect "a client that gives up on a running invocation gets no answer" "$(invoke gone2 -m 0.3 -d x | cut -c1-3)" '^000$'
expect "the VM serves the next one once the handler is done" "$(invoke gone2 -d y)" '^200 warm vm-[0-9a-f]{16} slept$'
expect "the abandoned invocation ran to its end" "$(by_status gone2 ok)" '^3$'
api DELETE /v1/functions/gone1 >/dev/null
api DELETE /v1/functions/gone2 >/dev/null

# A replacement (a deploy) while an invocation waits for a VM: it waits for a
# VM of the new version and runs the new handler, rather than failing.
put rep '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 2000}}' >/dev/null
(invoke rep -d x >"$TMP/rep1") &
rep1=$!
check "an invocation waits for the first VM" wait_for 5 waiting rep
expect "the function is replaced meanwhile" \
        "$(put rep '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "0"]}, "image": {"firmware_boot_ms": 2000}}' | cut -c1-3)" '^200$'
wait "$rep1"
expect "the waiting invocation runs on the new version" "$(cat "$TMP/rep1")" '^200 cold vm-[0-9a-f]{16} slept$'
api DELETE /v1/functions/rep >/dev/null

# A replacement of the same spec after an image file changed at the same path
# measures the new file and gives the function new VMs.
head -c 16384 /dev/urandom >"$TMP/fwc.bin"
spec='{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware": "'"$TMP/fwc.bin"'"}}'
m1=$(put fwc "$spec" | cut -d' ' -f2- | json 'd["measurement"]')
invoke fwc -d x -o /dev/null >/dev/null
expect "the same spec again keeps the measurement" "$(put fwc "$spec" | cut -d' ' -f2- | json 'd["measurement"]')" "^$m1\$"
expect "and the warm VM" "$(invoke fwc -d y | cut -d' ' -f2)" '^warm$'
head -c 16384 /dev/urandom >"$TMP/fwc.bin.new"
mv "$TMP/fwc.bin.new" "$TMP/fwc.bin"
m2=$(put fwc "$spec" | cut -d' ' -f2- | json 'd["measurement"]')
expect "after the file changed, the measurement is the new file's" "$m2" '^[0-9a-f]{96}$'
[ "$m1" != "$m2" ] && ok "which differs from the old one" || not_ok "which differs from the old one"
expect "and the next invocation gets a VM of the new image" "$(invoke fwc -d z | cut -d' ' -f2)" '^cold$'
api DELETE /v1/functions/fwc >/dev/null

# Budgets: at most 3 VMs; a demand launch retires another function's idle VM.
vms_total() { api GET /v1/pool | cut -d' ' -f2- | json 'd["vms"]'; }
wait_for 10 sh -c "[ \"\$(curl -s --unix-socket $SOCK http://cvmd/v1/pool | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"vms\"])')\" -le 1 ]"
for f in b1 b2 b3; do
        put $f '{"handler": {"exec": ["/bin/cat"]}}' >/dev/null
        invoke $f -d x >/dev/null
done
expect "the pool never exceeds its VM budget" "$(vms_total)" '^[0-3]$'
expect "the third function still ran (another's idle VM made room)" "$(api GET /v1/functions/b3 | cut -d' ' -f2- | json 'd["pool"]["invocations"]')" '^1$'
evictions=$(for f in hello b1 b2; do pool $f evictions; done | paste -sd+ | bc)
expect "an idle VM of another function was evicted" "$evictions" '^[1-9]'

# Async invocations.
out=$(api POST "/v1/functions/b1/invoke?mode=async" -d 'later')
expect "mode=async answers 202" "$out" '^202 \{"id":"inv-[0-9a-f]{16}","function":"b1","status":"running"\}'
id=$(echo "${out#202 }" | json 'd["id"]')
done_() { api GET "/v1/invocations/$id" | grep -q '"status":"ok"'; }
check "the async result arrives" wait_for 5 done_
expect "the async result carries the output" "$(api GET "/v1/invocations/$id" | cut -d' ' -f2- | json 'd["output_base64"]')" '^bGF0ZXI=$'
expect "an unknown invocation is a 404" "$(api GET /v1/invocations/inv-0000000000000000)" '^404 '

# Errors change nothing.
expect "a bad name is refused" "$(put 'Bad_Name' '{"handler": {"exec": ["/bin/cat"]}}')" '^400 .*invalid function name'
expect "an unknown field is named" "$(put x '{"handler": {"exec": ["/bin/cat"]}, "pool": {"min_wram": 1}}')" "^400 .*unknown field 'pool.min_wram'"
expect "min_warm above max_vms is refused" "$(put x '{"handler": {"exec": ["/bin/cat"]}, "pool": {"min_warm": 3, "max_vms": 2}}')" "^400 .*min_warm"
expect "a bad image path is refused" "$(put x '{"handler": {"exec": ["/bin/cat"]}, "image": {"kernel": "/no/kernel"}}')" "^400 .*image.kernel"
expect "a missing handler is refused" "$(put x '{"image": {}}')" "^400 .*missing field 'handler'"
expect "a refused spec created nothing" "$(api GET /v1/functions/x)" '^404 '
expect "an unknown function is a 404" "$(invoke nope -d x)" '^404 '
put small '{"handler": {"exec": ["/bin/cat"]}, "max_request_bytes": 10}' >/dev/null
expect "a body over max_request_bytes is a 413" "$(invoke small -d 'more than ten bytes')" '^413 '
put fails '{"handler": {"exec": ["'"$TMP/fail.sh"'"]}}' >/dev/null
expect "a failing function is a 500 function_failed" "$(invoke fails -d x)" '^500 cold vm-[0-9a-f]{16} \{"error":"function_failed","message":"the handler exited with status 7","stderr":"oops\\n","exit_code":7\}'
put late '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "5"]}, "timeout_ms": 300}' >/dev/null
invoke late -d x >/dev/null
expect "a function past its timeout is a 504" "$(invoke late -d x)" '^504 warm .*timeout of 300 ms'
put hopeless '{"handler": {"exec": ["/bin/cat"]}, "timeout_ms": 100, "image": {"firmware_boot_ms": 5000}}' >/dev/null
out=$(invoke hopeless -d x)
expect "a cold start that cannot meet the deadline is refused early with 503" "$out" '^503 .*overloaded: a VM of hopeless would be ready in about'
n=$(echo "$out" | sed -n 's/.*retry after \([0-9]*\) s.*/\1/p')
expect "the refusal carries Retry-After, when the message says" "$(tr -d '\r' <"$TMP/h" | grep -i '^Retry-After')" "^Retry-After: ${n:-x}\$"

# Delete drains; the name is free at once.
expect "DELETE answers 202" "$(api DELETE /v1/functions/fails)" '^202 \{"name":"fails","state":"draining"\}'
expect "a deleted function is gone" "$(invoke fails -d x)" '^404 '
drained() { ! api GET '/v1/vms?function=fails' | grep -q '"id"'; }
check "its VMs are drained" wait_for 5 drained

# Restart: functions come back, their pools refill on demand.
stop_daemon
expect "the daemon stops with functions running" "$STOP_RC" '^0$'
start_daemon --config "$TMP/cfg.json" || not_ok "restart"
expect "functions are restored after a restart" "$(api GET /v1/functions | cut -d' ' -f2- | json '",".join(sorted(f["name"] for f in d["functions"]))')" '^b1,b2,b3,hello,hopeless,late,small$'
expect "a restored function runs (cold)" "$(invoke hello -d r)" '^200 cold vm-[0-9a-f]{16} v2:r$'
stop_daemon

db="$STATE/cvmd.db"
expect "invocations are recorded with their start kind" \
        "$(sqlite3 "$db" "SELECT start_kind, count(*) FROM invocations WHERE function = 'hello' GROUP BY start_kind ORDER BY start_kind")" \
        '^cold\|3 warm\|2$'
expect "cold rows carry PSP and boot phases" \
        "$(sqlite3 "$db" "SELECT count(*) FROM invocations WHERE start_kind = 'cold' AND psp_us > 0 AND boot_us > 0")" '^[1-9]'
expect "launches record their trigger" "$(sqlite3 "$db" "SELECT count(*) FROM launches WHERE trigger = 'prewarm'")" '^[1-9]'

# Overload and VM death, on a daemon that lets one invocation wait per function.
# Attestations' signatures take 10 s on this PSP, so one can be caught on it at shutdown.
sim_config "$TMP/cfg2.json" '"functions": {"max_waiting": 1}, "psp": {"costs": {"guest_request_us": 10000000}}'
rm -rf "$STATE"
start_daemon --config "$TMP/cfg2.json" || not_ok "restart with max_waiting 1"
put queue '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 1500}}' >/dev/null
(invoke queue -d x >"$TMP/q1") &
q1=$!
sleep 0.3
out=$(invoke queue -d y)
expect "a second waiting invocation over functions.max_waiting is a 429" "$out" '^429 .*overloaded: function queue has 1 invocations waiting'
expect "the 429 carries Retry-After" "$(tr -d '\r' <"$TMP/h" | grep -i '^Retry-After')" '^Retry-After: 1$'
wait "$q1"
expect "the waiting one is served" "$(cat "$TMP/q1")" '^200 cold '
put dies '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "5"]}}' >/dev/null
invoke dies -d warmup -o /dev/null >/dev/null
pid=$(api GET '/v1/vms?function=dies' | cut -d' ' -f2- | json 'd["vms"][0]["host"]["pid"]')
(sleep 0.5; kill -KILL "$pid") &
out=$(invoke dies -d x)
expect "a VM dying under a function's invocation is a 502" "$out" '^502 warm vm-[0-9a-f]{16} \{"error":"bad_gateway","message":"vm vm-[0-9a-f]{16} failed during the invocation'
(invoke dies -d x >/dev/null) &
sleep 0.3
expect "the function gets a new VM next time" "$(pool dies launches)" '^2$'
# A VM that dies with an invocation waiting for it: the waiter gets a new VM,
# not the dead one (where it would fail, and every waiter after it).
printf '#!/bin/sh\nread -r x\n[ "$x" = slow ] && sleep 5\necho "got $x"\n' >"$TMP/maybe.sh"
chmod +x "$TMP/maybe.sh"
put dies1 '{"handler": {"exec": ["'"$TMP/maybe.sh"'"]}, "pool": {"max_vms": 1}}' >/dev/null
invoke dies1 -d warmup -o /dev/null >/dev/null
pid=$(api GET '/v1/vms?function=dies1' | cut -d' ' -f2- | json 'd["vms"][0]["host"]["pid"]')
(invoke dies1 -d slow >"$TMP/d1") &
d1=$!
sleep 0.3
(invoke dies1 -d next >"$TMP/d2") &
d2=$!
check "the second invocation waits for the busy VM" wait_for 5 waiting dies1
kill -KILL "$pid"
wait "$d1" "$d2"
expect "the invocation on the dead VM is a 502" "$(cat "$TMP/d1")" '^502 warm '
expect "the one waiting for it is served by a new VM" "$(cat "$TMP/d2")" '^200 cold vm-[0-9a-f]{16} got next$'
expect "the dead VM is not used again" "$(pool dies1 launches)" '^2$'

# An attestation waits for a VM as an invocation does, up to the timeout.
nonce="{\"nonce\": \"$(printf '%0128d' 0)\"}"
put waits '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 20000}, "timeout_ms": 1000}' >/dev/null
expect "an attestation that finds no VM within the timeout is a 504" \
        "$(api POST /v1/functions/waits/attestation -H "Content-Type: application/json" -d "$nonce")" \
        '^504 \{"error":"timeout","message":"no VM of waits became available within 1000 ms"\}$'

# Shutdown with invocations open (for a minute each, time enough to set them
# all up): one waiting for a slow cold start, one async one waiting too, one
# running, and an attestation waiting. A second
# SIGTERM ends the grace period: the requests are answered 503, every
# invocation is recorded as cancelled, and the daemon exits 0 (no timer of
# theirs fires after the exit's frees, nothing leaks).
put boots '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 60000}, "timeout_ms": 120000}' >/dev/null
put boots2 '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 60000}, "timeout_ms": 120000}' >/dev/null
put runs '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "60"]}, "timeout_ms": 120000}' >/dev/null
(invoke boots -d x >"$TMP/open1") &
open1=$!
(invoke runs -d x >"$TMP/open2") &
open2=$!
put boots3 '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 60000}, "timeout_ms": 120000}' >/dev/null
curl -s --unix-socket "$SOCK" -o /dev/null -w "%{http_code}" -H "Content-Type: application/json" -d "$nonce" \
        http://cvmd/v1/functions/boots3/attestation >"$TMP/open3" &
open3=$!
expect "an async invocation waits too" "$(api POST '/v1/functions/boots2/invoke?mode=async' -d y)" '^202 '
# A bare VM running an invocation, and one still launching.
bare=$(api POST /v1/vms -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["'"$TMP/sleep.sh"'", "60"]}}' | cut -d' ' -f2- | json 'd["id"]')
curl -s --unix-socket "$SOCK" -o /dev/null -w "%{http_code}" -d x \
        "http://cvmd/v1/vms/$bare/invoke?timeout_ms=120000" >"$TMP/open4" &
open4=$!
curl -s --unix-socket "$SOCK" -o /dev/null -w "%{http_code}" -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "image": {"firmware_boot_ms": 60000}}' \
        http://cvmd/v1/vms >"$TMP/open5" &
open5=$!
running() { [ "$(api GET '/v1/vms?function=runs' | grep -o '"active":1')" = '"active":1' ]; }
check "the running invocation runs" wait_for 5 running
check "the invocation waits" wait_for 5 waiting boots
check "the attestation waits" wait_for 5 waiting boots3
bare_busy() { api GET "/v1/vms/$bare" | grep -q '"active":1'; }
check "the bare VM's invocation runs" wait_for 5 bare_busy
launching() { api GET /v1/vms | grep -q '"state":"launching"\|"state":"booting"'; }
check "the bare VM launches" wait_for 5 launching
curl -s --unix-socket "$SOCK" -o /dev/null -w "%{http_code}" -H "Content-Type: application/json" \
        -d "$nonce" "http://cvmd/v1/vms/$bare/attestation" >"$TMP/open6" &
open6=$!
on_psp() { api GET /v1/psp | grep -q 'guest_request'; }
check "the bare VM's attestation is on the PSP" wait_for 60 on_psp
kill -TERM "$CVMD_PID"
sleep 0.3
stop_daemon
wait "$open1" "$open2" "$open3" "$open4" "$open5" "$open6"
expect "a second SIGTERM with invocations open exits 0" "$STOP_RC" '^0$'
expect "the waiting request is answered 503" "$(cat "$TMP/open1")" '^503 '
expect "the running request is answered 503" "$(cat "$TMP/open2")" '^503 '
expect "the waiting attestation is answered 503" "$(cat "$TMP/open3")" '^503$'
expect "so are the bare VM's invocation, launch and attestation" \
        "$(cat "$TMP/open4") $(cat "$TMP/open5") $(cat "$TMP/open6")" '^503 503 503$'
expect "the bare VM's invocation is recorded as cancelled" \
        "$(sqlite3 "$db" "SELECT status, error FROM invocations WHERE vm_id = '$bare' AND function IS NULL OR vm_id = '$bare' AND function = ''")" \
        '^cancelled\|the daemon shut down before the invocation ended$'
expect "all three are recorded as cancelled by the shutdown" \
        "$(sqlite3 "$db" "SELECT function || ':' || status FROM invocations WHERE function IN ('boots', 'boots2', 'runs') ORDER BY function" | tr '\n' ' ')" \
        '^boots:cancelled boots2:cancelled runs:cancelled $'
expect "saying why" "$(sqlite3 "$db" "SELECT DISTINCT error FROM invocations WHERE function IN ('boots', 'boots2', 'runs')")" \
        '^the daemon shut down before the invocation ended$'

# Updates in flight: a delete waits for them, and functions.max counts them.
sim_config "$TMP/cfg3.json" '"functions": {"max": 3}'
rm -rf "$STATE"
start_daemon --config "$TMP/cfg3.json" || not_ok "restart with functions.max 3"
put a '{"handler": {"exec": ["/bin/cat"]}}' >/dev/null
# Hashing a 400 MiB initrd keeps the update in flight for a while.
truncate -s 16M "$TMP/k.bin"
truncate -s 400M "$TMP/i.bin"
(put a '{"handler": {"exec": ["/bin/cat"]}, "image": {"kernel": "'"$TMP/k.bin"'", "initrd": "'"$TMP/i.bin"'"}}' >"$TMP/put_a") &
put_a=$!
sleep 0.2
if kill -0 "$put_a" 2>/dev/null; then
        expect "a delete while the function is being updated is a 409" "$(api DELETE /v1/functions/a)" \
                '^409 \{"error":"busy","message":"function a is being updated by another request"\}$'
else
        ok "a delete while the function is being updated is a 409 # skip: the update ended first"
fi
wait "$put_a"
rm -f "$TMP/k.bin" "$TMP/i.bin"
expect "the function is still there after the update" "$(api GET /v1/functions/a | cut -c1-3)" '^200$'
expect "and is deleted once it is over" "$(api DELETE /v1/functions/a)" '^202 '
puts=()
for i in 1 2 3 4 5 6 7 8; do
        curl -s --unix-socket "$SOCK" -X PUT -o /dev/null -w '%{http_code}' \
                -H 'Content-Type: application/json' -d '{"handler": {"exec": ["/bin/cat"]}}' \
                "http://cvmd/v1/functions/m$i" >"$TMP/m$i" &
        puts+=($!)
done
wait "${puts[@]}"
expect "functions.max holds under concurrent creates" "$(for f in "$TMP"/m[1-8]; do cat "$f"; echo; done | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')" \
        '^201:3 503:5 $'
expect "as many functions as the limit" "$(api GET /v1/functions | cut -d' ' -f2- | json 'len(d["functions"])')" '^3$'
expect "the refusal names the limit" "$(put m9 '{"handler": {"exec": ["/bin/cat"]}}')" \
        '^503 \{"error":"resource_exhausted","message":"too many functions: at most 3"\}$'
stop_daemon
finish
