# The daemon as a service: sd_notify messages, socket activation, and a TCP
# listener used through cvmctl --url.
. "$(dirname "$0")/lib.sh"

# sd_notify: a datagram socket stands in for systemd's.
notify="$TMP/notify.sock"
python3 - "$notify" >"$TMP/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(20)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.replace("\n", " "), flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    pass
PY
listener=$!
for _ in $(seq 1 100); do [ -S "$notify" ] && break; sleep 0.05; done
NOTIFY_SOCKET="$notify" WATCHDOG_USEC=200000 start_daemon
sleep 0.3
stop_daemon
wait "$listener"
msgs=$(cat "$TMP/notify.log")
expect "READY=1 with a STATUS after start" "$msgs" "READY=1 STATUS=serving on 1 listener"
expect "WATCHDOG=1 keep-alives" "$msgs" "WATCHDOG=1"
expect "STOPPING=1 on SIGTERM" "$msgs" "STOPPING=1"

# Socket activation: systemd-socket-activate listens and passes the socket.
if command -v systemd-socket-activate >/dev/null; then
        act="$TMP/act.sock"
        systemd-socket-activate -l "$act" "$CVMD" --config "$TMP/empty.json" --state-dir "$TMP/act" \
                --listen "unix:$TMP/unused.sock" >>"$LOG" 2>&1 &
        activator=$!
        for _ in $(seq 1 100); do [ -S "$act" ] && break; sleep 0.05; done
        out=$("$CVMCTL" --socket "$act" health 2>&1)
        expect "serves the socket systemd passed" "$out" "status: +ok"
        expect "does not create its configured socket when activated" "$(ls "$TMP/unused.sock" 2>&1)" "No such file"
        kill -TERM "$activator" 2>/dev/null
        wait "$activator" 2>/dev/null
        expect "a passed socket is left to systemd on stop" "$(ls "$act" 2>&1)" "act.sock"
else
        echo "ok - socket activation # SKIP systemd-socket-activate is not installed"
fi

# TCP: an address chosen here, used through cvmctl --url and CVMD_URL.
port=$((20000 + RANDOM % 20000))
out=$("$CVMD" --listen unix:/tmp/a.sock --listen unix:/tmp/a.sock --check-config 2>&1)
expect "a listen address given twice is refused" "$out" 'listen address "unix:/tmp/a.sock" is given twice'
start_daemon --listen "tcp:127.0.0.1:$port"
expect "cvmctl --url over TCP" "$("$CVMCTL" --url "http://127.0.0.1:$port" version 2>&1)" "cvmd +[0-9.]+"
expect "CVMD_URL over TCP" "$(CVMD_URL="http://127.0.0.1:$port" "$CVMCTL" health 2>&1)" "status: +ok"
expect "--socket and --url exclude each other" \
        "$("$CVMCTL" --socket "$SOCK" --url http://x health 2>&1; echo "rc=$?")" "exclude each other.*rc=2"
expect "a closed TCP port gives one clear line" \
        "$("$CVMCTL" --url http://127.0.0.1:1 health 2>&1; echo "rc=$?")" \
        "^cvmctl: cvmd is not running: cannot connect to http://127.0.0.1:1 .* rc=1"
stop_daemon
expect "clean stop with two listeners" "$STOP_RC" "^0$"
finish
