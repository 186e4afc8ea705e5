# cvmctl against a sim daemon: every command's output and exit status,
# errors included (no daemon, unknown names, invalid specs, usage), --json
# documents, and `top` on a pseudo-terminal.
. "$(dirname "$0")/lib.sh"

sim_config "$TMP/cfg.json" '"psp": {"asids": 16}'
printf '#!/bin/sh\necho oops >&2\nexit 7\n' >"$TMP/fail.sh"
chmod +x "$TMP/fail.sh"

# run NAME CMD...: runs a command, leaving stdout, stderr and status in OUT, ERR, RC.
run() {
        "$@" >"$TMP/out" 2>"$TMP/err"
        RC=$?
        OUT=$(cat "$TMP/out")
        ERR=$(cat "$TMP/err")
}
parses() { python3 -c 'import json,sys; json.load(sys.stdin)' <"$TMP/out" 2>&1; }
one_line() { [ "$(printf '%s\n' "$ERR" | wc -l)" -eq 1 ]; }

# No daemon: one clear line and status 1, for every kind of command.
for cmd in "fn ls" "invoke hello -d x" "psp" "stats" "top --once" "bench hello -n 1"; do
        run $CVMCTL $cmd
        if [ "$RC" = 1 ] && one_line && printf '%s' "$ERR" | grep -q 'cvmd is not running'; then
                ok "no daemon: cvmctl $cmd fails with one line"
        else
                not_ok "no daemon: cvmctl $cmd fails with one line" "rc=$RC" "$ERR"
        fi
done

start_daemon --config "$TMP/cfg.json" || { not_ok "daemon starts"; finish; }

# fn deploy: the name from the file, overrides patching the pool.
printf '{"handler": {"exec": ["/bin/cat"]}, "pool": {"keep_alive_s": 60}}\n' >"$TMP/echo.json"
run $CVMCTL fn deploy "$TMP/echo.json"
expect "fn deploy creates a function named after the file" "$RC $OUT" '^0 function echo created \(measurement [0-9a-f]{16}'
run $CVMCTL fn deploy "$TMP/echo.json" --min-warm 1 --max-vms 4
expect "fn deploy again updates it" "$RC $OUT" '^0 function echo updated'
run $CVMCTL --json fn show echo
expect "the overrides patched the spec's pool" \
        "$(python3 -c 'import json,sys; p=json.load(sys.stdin)["spec"]["pool"]; print(p["min_warm"], p["max_vms"], p["keep_alive_s"])' <"$TMP/out")" '^1 4 60$'
run $CVMCTL fn deploy "$TMP/echo.json" --name other --json
expect "fn deploy --name --json prints the API's document" "$RC $(parses) $OUT" '^0 +\{ *"name": "other"'
printf '{"handler": {"exec": ["/bin/cat"]}, "pool": {"min_wram": 1}}' >"$TMP/bad.json"
run $CVMCTL fn deploy "$TMP/bad.json"
expect "an invalid spec fails naming the field" "$RC $ERR" "^1 cvmctl: deploying \"bad\": unknown field 'pool.min_wram'$"
printf '{"handler": ' >"$TMP/broken.json"
run $CVMCTL fn deploy "$TMP/broken.json"
expect "malformed JSON fails with its line and column" "$RC $ERR" '^1 cvmctl: .*broken.json: line 1 column [0-9]+: '
run $CVMCTL fn deploy "$TMP/echo.json" --min-warm lots
expect "a bad option value is a usage error" "$RC $ERR" '^2 cvmctl fn: --min-warm must be a number'
run $CVMCTL fn deploy
expect "fn deploy without a spec is a usage error" "$RC" '^2$'
printf '{"handler": {"exec": ["%s"]}}' "$TMP/fail.sh" | $CVMCTL fn deploy - --name fails >/dev/null
expect "fn deploy - reads the spec from stdin" "$?" '^0$'

# fn ls, show, rm.
run $CVMCTL fn ls
expect "fn ls prints a table" "$RC $OUT" '^0 NAME +READY +BUSY +LAUNCHING +WAITING +INVOCATIONS +COLD% +POLICY +MEASUREMENT .*echo +[0-9]+ +0 +[0-9]+ +0 +0 +- +fixed +[0-9a-f]{12}'
run $CVMCTL fn ls --json
expect "fn ls --json parses" "$RC $(parses)" '^0 $'
run $CVMCTL fn show echo
expect "fn show is human" "$RC $OUT" '^0 name: +echo .*measurement: +[0-9a-f]{96} .*pool: +min_warm 1, max_vms 4, policy fixed, keep-alive 1m00s'
run $CVMCTL fn show nope
expect "fn show of an unknown function fails" "$RC $ERR" '^1 cvmctl: no function "nope"$'
run $CVMCTL fn rm other
expect "fn rm deletes" "$RC $OUT" '^0 function other deleted'
run $CVMCTL fn rm other
expect "fn rm of an unknown function fails" "$RC" '^1$'

# invoke: output byte for byte, -v timings, failures.
head -c 3000 /dev/urandom >"$TMP/blob"
$CVMCTL invoke echo -d @"$TMP/blob" >"$TMP/blob.out"
check "invoke -d @FILE returns binary output byte for byte" cmp "$TMP/blob" "$TMP/blob.out"
run sh -c "printf 'from stdin' | $CVMCTL invoke echo -v"
expect "invoke reads stdin; -v prints the start and phases on stderr" "$RC $OUT | $ERR" \
        '^0 from stdin \| (warm|cold) start on vm-[0-9a-f]{16} \(inv-[0-9a-f]{16}\), HTTP 200 queue [^,]+, prepare [^,]+, psp_wait [^,]+, psp [^,]+, boot [^,]+, exec [0-9.]+(us|ms), total'
run $CVMCTL invoke echo -d ''
expect "invoke -d '' sends an empty body" "$RC [$OUT]" '^0 \[\]$'
run $CVMCTL invoke fails -d x
expect "a failing function exits 1 with the reason and its stderr" "$RC $OUT| $ERR" \
        '^1 \| cvmctl: "fails" failed: the handler exited with status 7 oops$'
run $CVMCTL invoke nope -d x
expect "invoking an unknown function fails" "$RC $ERR" '^1 cvmctl: invoking "nope": no function "nope"$'
run $CVMCTL invoke
expect "invoke without a name is a usage error" "$RC" '^2$'
run $CVMCTL invoke echo --async -d later
id=$OUT
expect "invoke --async prints the id" "$RC $id" '^0 inv-[0-9a-f]{16}$'
run $CVMCTL invoke --result "$id" --wait
expect "invoke --result --wait prints the output" "$RC $OUT" '^0 later$'
run $CVMCTL invoke --result "$id" --json
expect "invoke --result --json prints the API's document" "$RC $(parses) $OUT" '^0 +\{ .*"output_base64": "bGF0ZXI="'
run $CVMCTL invoke --result inv-0000000000000000
expect "an unknown invocation fails" "$RC" '^1$'

# pool ls / set.
run $CVMCTL pool ls
expect "pool ls shows pools and budgets" "$RC $OUT" '^0 NAME +MIN-WARM +MAX-VMS +POLICY +KEEP-ALIVE .*echo +1 +4 +fixed +1m00s .*functions; [0-9]+ of 16 VMs, [0-9]+MiB of [0-9]+MiB memory in use'
run $CVMCTL pool ls --json
expect "pool ls --json parses" "$RC $(parses)" '^0 $'
run $CVMCTL pool set echo --min-warm 0 --max-vms 2 --policy histogram --keep-alive-s 30
expect "pool set changes the pool" "$RC $OUT" '^0 pool of echo: min_warm 0, max_vms 2, policy histogram, keep-alive 30.0s$'
run $CVMCTL pool set echo --min-warm 3
expect "pool set refused by the daemon names the field" "$RC $ERR" "^1 cvmctl: .*'pool.min_warm'"
run $CVMCTL pool set echo --policy lru
expect "pool set with a bad policy is a usage error" "$RC" '^2$'
run $CVMCTL pool set echo
expect "pool set without a change is a usage error" "$RC" '^2$'
run $CVMCTL pool set nope --min-warm 1
expect "pool set of an unknown function fails" "$RC" '^1$'

# vm ls / show / rm.
run $CVMCTL vm ls --function echo
vm=$(printf '%s\n' "$OUT" | awk 'NR == 2 {print $1}')
expect "vm ls lists the function's VMs" "$RC $OUT" '^0 ID +FUNCTION +STATE +ACTIVE +INVOCATIONS +ASID +MEMORY +LAUNCH +AGE vm-[0-9a-f]{16} +echo +ready +0/1 +[0-9]+ +[0-9]+ +256MiB +[0-9.]+ms '
run $CVMCTL vm show "$vm"
expect "vm show is human" "$RC $OUT" "^0 id: +$vm state: +ready function: +echo .*launch: +[0-9.]+ms: prepare"
run $CVMCTL vm ls --json
expect "vm ls --json parses" "$RC $(parses)" '^0 $'
run $CVMCTL vm rm "$vm"
expect "vm rm stops it" "$RC $OUT" "^0 vm $vm stopping$"
run $CVMCTL vm show vm-0000000000000000
expect "vm show of an unknown VM fails" "$RC $ERR" '^1 cvmctl: no VM "vm-0000000000000000"$'
run $CVMCTL vm frob
expect "an unknown subcommand is a usage error" "$RC" '^2$'

# psp and stats.
run $CVMCTL psp
expect "psp shows the PSP and the scheduler" "$RC $OUT" '^0 host: +sim, schedule cvmd .*ASIDs: +[0-9]+ in use, [0-9]+ dirty, [0-9]+ free of 16 .*scheduler: +window 1'
run $CVMCTL psp --json
expect "psp --json parses" "$RC $(parses)" '^0 $'
run $CVMCTL stats echo
expect "stats shows counts and percentiles by start" "$RC $OUT" '^0 function: +echo .*invocations: +[0-9]+: ok [0-9]+ .*cold starts: +[0-9]+ of [0-9]+ \([0-9.]+%\) .*START +COUNT +P50 +P90 +P99 +cold +[0-9]+ .*warm +[0-9]+ '
run $CVMCTL stats --since 15m --by phase
expect "stats --by phase shows the phases" "$RC $OUT" '^0 function: +all .*START +PHASE +P50 +P90 +P99 .*psp_wait .*exec'
run $CVMCTL stats --since yesterday
expect "a bad --since fails naming the parameter" "$RC $ERR" "^1 cvmctl: query parameter 'since'"
run $CVMCTL stats --by vm
expect "a bad --by is a usage error" "$RC" '^2$'
run $CVMCTL stats echo --json
expect "stats --json parses" "$RC $(parses)" '^0 $'

# bench.
run $CVMCTL bench echo -c 3 -n 20 -d x
expect "bench reports throughput and percentiles" "$RC $OUT" '^0 bench echo: 20 requests over 3 connections .*throughput: +[0-9.]+ invocations/s results: +20 ok, 0 failed .*START +COUNT +MIN +MEAN +P50 +P90 +P99 +MAX all +20 .*warm .*cold '
run $CVMCTL bench echo -t 0.3 --json
expect "bench -t --json parses" "$RC $(parses)" '^0 $'
run $CVMCTL bench nope -n 1
expect "bench of an unknown function fails" "$RC $ERR" '^1 cvmctl: no function "nope"$'
run $CVMCTL bench echo -n 1 -t 1
expect "bench with both -n and -t is a usage error" "$RC" '^2$'

# top.
run $CVMCTL top --once
expect "top --once prints a frame" "$RC $OUT" '^0 cvmd at unix:.*FUNCTION +READY +BUSY +LAUNCHING +WAITING +RATE/S +COLD%1M +P99 1M .*echo .*PSP: .*ASIDs: '
if command -v script >/dev/null; then
        (sleep 1.5; printf q) | timeout 20 script -qec "$CVMCTL top" /dev/null >"$TMP/top.tty" 2>&1
        rc=$?
        expect "top on a terminal quits on q with status 0" "$rc" '^0$'
        if grep -q $'\033\\[?1049l' "$TMP/top.tty" && grep -q $'\033\\[?1049h' "$TMP/top.tty"; then
                ok "top leaves the alternate screen"
        else
                not_ok "top leaves the alternate screen" "$(cat -v "$TMP/top.tty" | tail -c 300)"
        fi
        (sleep 1; printf '\003') | timeout 20 script -qec "$CVMCTL top" /dev/null >"$TMP/top.tty" 2>&1
        expect "top quits on Ctrl-C too" "$? $(grep -c $'\033\\[?1049l' "$TMP/top.tty")" '^0 1$'
else
        ok "# SKIP script (util-linux) is missing"
fi
run $CVMCTL top --json
expect "top --json is a usage error" "$RC" '^2$'

# Usage and help.
run $CVMCTL fn
expect "a command without its subcommand is a usage error" "$RC" '^2$'
run $CVMCTL fn ls --bogus
expect "an unknown option is a usage error" "$RC $ERR" "^2 cvmctl fn: unrecognized option '--bogus'"
for c in fn invoke pool vm psp stats top bench image; do
        run $CVMCTL $c --help
        expect "cvmctl $c --help" "$RC $OUT" "^0 Usage: cvmctl $c .*Example: .*cvmctl $c"
done

stop_daemon
finish
