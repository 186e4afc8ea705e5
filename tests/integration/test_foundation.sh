# The daemon's HTTP shell, config handling, store and shutdown, driven
# through the real binaries with curl and cvmctl.
. "$(dirname "$0")/lib.sh"

# Config validation.
echo '{"http": {"max_body_bytes": 4096, "bogus": 1}}' >"$TMP/bad.json"
out=$("$CVMD" --config "$TMP/bad.json" --check-config 2>&1); rc=$?
expect "check-config names an unknown key" "$rc $out" "^1 .*unknown field 'http.bogus'"
echo '{"http": {"max_body_bytes": "big"}}' >"$TMP/bad2.json"
out=$("$CVMD" --config "$TMP/bad2.json" --check-config 2>&1)
expect "check-config names a bad value" "$out" "field 'http.max_body_bytes' must be an integer"
echo '{"libvirt": {"call_timeout_ms": 10}}' >"$TMP/bad3.json"
out=$("$CVMD" --config "$TMP/bad3.json" --check-config 2>&1); rc=$?
expect "check-config names a libvirt timeout out of range" "$rc $out" "^1 .*libvirt.call_timeout_ms"
echo '{"libvirt": {"stop_timeout_ms": 700000}}' >"$TMP/bad4.json"
out=$("$CVMD" --config "$TMP/bad4.json" --check-config 2>&1); rc=$?
expect "and the exit's" "$rc $out" "^1 .*libvirt.stop_timeout_ms"
out=$("$CVMD" --config "$TMP/missing.json" --check-config 2>&1); rc=$?
expect "an explicit missing config file is an error" "$rc $out" "^1 .*missing.json.*No such file"
echo '{"log_level": "debug", "socket_mode": "0600"}' >"$TMP/good.json"
out=$("$CVMD" --config "$TMP/good.json" --log-level warn --listen unix:/tmp/x.sock --check-config)
expect "flags override the config file" "$out" '"log_level": "warn"'
expect "check-config prints the effective config" "$out" '"socket_mode": "0600"'
out=$("$CVMD" --host nope --check-config 2>&1); rc=$?
expect "an unknown host is refused" "$rc $out" '^1 .*unknown host "nope"'
out=$("$CVMD" --bogus 2>&1); rc=$?
expect "an unknown flag is a usage error" "$rc" "^2$"

# Health and version through curl and cvmctl.
echo '{"http": {"max_body_bytes": 4096}, "shutdown_grace_ms": 2000}' >"$TMP/cfg.json"
start_daemon --config "$TMP/cfg.json" || { not_ok "daemon starts"; finish; }
ok "daemon starts"
expect "GET /v1/health" "$(api GET /v1/health)" '^200 \{"status":"ok",.*"schema_version":4'
expect "GET /v1/version" "$(api GET /v1/version)" '^200 \{"version":"[0-9.]+","api":"v1"'
expect "HEAD /v1/health" "$(curl -s -I --unix-socket "$SOCK" http://cvmd/v1/health | head -1)" "200"
check "cvmctl health" "$CVMCTL" health
expect "cvmctl health output" "$("$CVMCTL" health)" "status: +ok"
expect "cvmctl version" "$("$CVMCTL" version)" "cvmd +[0-9.]+ \(API v1\)"
expect "cvmctl --json health" "$("$CVMCTL" --json health)" '"status": "ok"'
expect "cvmctl health --json" "$("$CVMCTL" health --json)" '"status": "ok"'
socket_mode=$(stat -c %a "$SOCK")
expect "socket has mode 0660" "$socket_mode" "^660$"

# Every error status.
expect "404 unknown path" "$(api GET /v1/nothing)" '^404 \{"error":"not_found","message":'
expect "404 trailing slash" "$(api GET /v1/health/)" '^404 '
allow=$(curl -s -o /dev/null -D - --unix-socket "$SOCK" -X DELETE http://cvmd/v1/health | tr -d '\r' | grep -i '^Allow:')
expect "405 carries Allow" "$allow" "^Allow: GET, HEAD$"
expect "405 body" "$(api DELETE /v1/health)" '^405 \{"error":"method_not_allowed"'
expect "400 malformed JSON" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '{"level":')" \
        '^400 \{"error":"invalid_argument","message":"malformed JSON at line 1'
expect "400 JSON that is not an object" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '[1]')" \
        '^400 .*expected an object'
expect "400 names an unknown field" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '{"lvl":"x"}')" \
        "^400 .*unknown field 'lvl'"
expect "400 names a bad field" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '{"level":3}')" \
        "^400 .*field 'level' must be a string"
expect "400 missing body" "$(api PUT /v1/log-level)" '^400 .*JSON body'
expect "400 duplicate keys" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '{"level":"info","level":"debug"}')" \
        '^400 .*duplicate'
expect "415 non-JSON content type" "$(api PUT /v1/log-level -H 'Content-Type: text/plain' -d '{"level":"info"}')" \
        '^415 \{"error":"unsupported_media_type"'
head -c 5000 /dev/zero | tr '\0' ' ' >"$TMP/big"
expect "413 body over the limit (Content-Length)" \
        "$(api PUT /v1/log-level -H 'Content-Type: application/json' --data-binary @"$TMP/big")" \
        '^413 \{"error":"payload_too_large".*4096 bytes'
expect "413 body over the limit (chunked)" \
        "$(api PUT /v1/log-level -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big")" \
        '^413 \{"error":"payload_too_large"'
expect "log level unchanged by bad requests" "$(api GET /v1/log-level)" '^200 \{"level":"info"\}'
expect "PUT /v1/log-level" "$(api PUT /v1/log-level -H 'Content-Type: application/json' -d '{"level":"debug"}')" \
        '^200 \{"level":"debug"\}'
expect "the daemon still serves after errors" "$(api GET /v1/health)" '^200 '

# A second daemon on the same state directory is refused.
out=$("$CVMD" --config "$TMP/empty.json" --state-dir "$STATE" --listen "unix:$TMP/other.sock" 2>&1); rc=$?
expect "second daemon on one state dir refused" "$rc $out" "^1 .*in use by another cvmd"
out=$("$CVMD" --config "$TMP/empty.json" --state-dir "$TMP/s2" --listen "unix:$SOCK" 2>&1); rc=$?
expect "a live socket is not stolen" "$rc $out" "^1 .*in use by another process"

# Shutdown: SIGTERM exits 0, records the run and leaves a consistent database.
stop_daemon
expect "SIGTERM exits 0" "$STOP_RC" "^0$"
expect "shutdown is logged" "$(cat "$LOG")" "cvmd stopped"
expect "integrity_check is ok" "$(sqlite3 "$STATE/cvmd.db" 'PRAGMA integrity_check')" "^ok$"
expect "the run is recorded with its stop time" \
        "$(sqlite3 "$STATE/cvmd.db" 'SELECT count(*) FROM daemon_runs WHERE stopped_at_ms >= started_at_ms')" "^1$"
expect "the socket is removed on stop" "$(ls "$SOCK" 2>&1)" "No such file"
expect "cvmctl says the daemon is not running" "$("$CVMCTL" health 2>&1; echo "rc=$?")" \
        "^cvmctl: cvmd is not running: .*No such file or directory.* rc=1"

# Restart on the same state: the stale socket is replaced and the schema kept.
start_daemon || not_ok "restart on the same state"
expect "restart serves" "$(api GET /v1/health)" '^200 '
stop_daemon
expect "two runs recorded" "$(sqlite3 "$STATE/cvmd.db" 'SELECT count(*) FROM daemon_runs')" "^2$"

# A corrupt database is refused with a clear message.
rm -rf "$TMP/corrupt" && mkdir -p "$TMP/corrupt"
head -c 8192 /dev/urandom >"$TMP/corrupt/cvmd.db"
out=$("$CVMD" --config "$TMP/empty.json" --state-dir "$TMP/corrupt" --listen "unix:$TMP/c.sock" 2>&1); rc=$?
expect "corrupt database refused" "$rc $out" "^1 .*corrupt or not a cvmd database"
sqlite3 "$TMP/corrupt/new.db" 'PRAGMA user_version = 99'
out=$("$CVMD" --config "$TMP/empty.json" --state-dir "$TMP/corrupt" --db "$TMP/corrupt/new.db" --listen "unix:$TMP/c.sock" 2>&1); rc=$?
expect "newer schema refused" "$rc $out" "^1 .*schema version 99, newer than this cvmd supports"

finish
