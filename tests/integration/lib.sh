# Shared helpers for integration tests: start the real cvmd on a temporary
# socket and state directory, drive it with curl and cvmctl, and report TAP
# lines ("ok - NAME" / "not ok - NAME") that tests/run.sh counts.
set -u
CVM_BUILD=${CVM_BUILD:-build}
CVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CVMD="$CVM_ROOT/$CVM_BUILD/cvmd"
CVMCTL="$CVM_ROOT/$CVM_BUILD/cvmctl"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cvm-it.XXXXXX")
SOCK="$TMP/cvmd.sock"
STATE="$TMP/state"
LOG="$TMP/cvmd.log"
CVMD_PID=
QEMU_PID= # A QEMU the test runs itself: killed on exit too.
export CVMD_SOCKET="$SOCK"
_failures=0
echo '{}' >"$TMP/empty.json"

cleanup() {
        if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
                kill -KILL "$QEMU_PID" 2>/dev/null
                wait "$QEMU_PID" 2>/dev/null
        fi
        if [ -n "$CVMD_PID" ] && kill -0 "$CVMD_PID" 2>/dev/null; then
                kill -KILL "$CVMD_PID" 2>/dev/null
        fi
        # CVM_KEEP_TMP=1 keeps the daemon's log and state for a look afterwards.
        [ -n "${CVM_KEEP_TMP:-}" ] || rm -rf "$TMP"
}

# wait_qemu SECONDS: waits for the QEMU in QEMU_PID to exit by itself and
# leaves its exit status in QRC; after SECONDS it is killed and QRC is
# "running".
wait_qemu() {
        local tenths=$(($1 * 10))
        QRC=
        for _ in $(seq 1 "$tenths"); do
                if ! kill -0 "$QEMU_PID" 2>/dev/null; then
                        wait "$QEMU_PID"
                        QRC=$?
                        break
                fi
                sleep 0.1
        done
        if [ -z "$QRC" ]; then
                kill -KILL "$QEMU_PID" 2>/dev/null
                wait "$QEMU_PID" 2>/dev/null
                QRC=running
        fi
        QEMU_PID=
}

# build_guest NAME TARGET...: builds guest pieces (firmware/guest.mk; the
# kernel is downloaded once into the build tree). Where the kernel package
# cannot be fetched, NAME is skipped and the script ends; a failed build is
# a failure. The sub-make must not see the jobserver of a `make check` it
# runs under.
build_guest() {
        local name=$1 out
        shift
        if ! out=$(cd "$CVM_ROOT" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
                make --no-print-directory BUILD="$CVM_BUILD" "$@" 2>&1); then
                if [ ! -s "$CVM_ROOT/$CVM_BUILD/guest/kernel/vmlinuz" ] &&
                        printf '%s' "$out" | grep -q 'fetch-kernel'; then
                        echo "ok - $name # SKIP the kernel package could not be fetched"
                        printf '%s\n' "$out" | tail -n 5 | sed 's/^/#   /'
                        exit 0
                fi
                not_ok "guest pieces build" "$out"
                finish
        fi
}
trap cleanup EXIT

# sim_config FILE [EXTRA TOP-LEVEL JSON]: a config for fast sim VMs: a 16 KiB
# firmware without SEV metadata (4 measured pages), short boots, and, for a
# sanitized daemon, the plain build's agent (ASan cannot run under the
# address-space limit the sim gives each VM). The psp object may be replaced
# through the extra JSON (e.g. '"psp": {"asids": 3}').
sim_config() {
        local file=$1 extra=${2:-}
        [ -f "$TMP/fw.bin" ] || head -c 16384 /dev/urandom >"$TMP/fw.bin"
        local agent="$CVM_ROOT/$CVM_BUILD/cvm-agent"
        case "$CVM_BUILD" in */asan) [ -x "$CVM_ROOT/${CVM_BUILD%/asan}/cvm-agent" ] &&
                agent="$CVM_ROOT/${CVM_BUILD%/asan}/cvm-agent" ;; esac
        printf '{"image": {"firmware": "%s", "firmware_boot_ms": 5, "kernel_boot_ms": 5},\n "sim": {"agent": "%s", "heartbeat_ms": 200}%s}\n' \
                "$TMP/fw.bin" "$agent" "${extra:+, $extra}" >"$file"
}

# start_daemon [EXTRA ARGS...]: starts cvmd and waits until it answers.
start_daemon() {
        mkdir -p "$STATE"
        "$CVMD" --config "$TMP/empty.json" --state-dir "$STATE" --listen "unix:$SOCK" "$@" \
                >>"$LOG" 2>&1 &
        CVMD_PID=$!
        for _ in $(seq 1 200); do
                if curl -s --unix-socket "$SOCK" -o /dev/null http://cvmd/v1/health; then
                        return 0
                fi
                kill -0 "$CVMD_PID" 2>/dev/null || break
                sleep 0.05
        done
        echo "# cvmd did not start; log:"
        sed 's/^/#   /' "$LOG"
        return 1
}

# lock_holders FILE: the processes that have FILE open.
lock_holders() {
        find /proc/[0-9]*/fd -lname "$(realpath "$1")" 2>/dev/null | cut -d/ -f3 | sort -u
}

# short_stack PID: the innermost frames of PID's main thread on one line, so
# that a failure's name says where it is stuck.
short_stack() {
        timeout 60 gdb -batch -p "$1" -ex 'bt 10' 2>/dev/null |
                sed -En 's/^#[0-9]+ +(0x[0-9a-f]+ in )?([^ ]+) .*/\2/p' | paste -sd'<' -
}

# stop_daemon: SIGTERM and wait; the exit status is left in STOP_RC. A
# daemon that has not exited after CVM_STOP_TIMEOUT seconds (default 120) is
# a failure: its threads' stacks and its log are printed, then it is killed.
# So is a process that outlives it holding the state directory's lock (a
# child forked by the daemon, as libvirt starts QEMU, that never got to exec).
stop_daemon() {
        kill -TERM "$CVMD_PID"
        local waited=0 limit=$((${CVM_STOP_TIMEOUT:-120} * 10)) p
        while kill -0 "$CVMD_PID" 2>/dev/null && [ "$(ps -o stat= -p "$CVMD_PID")" != Z ]; do
                if [ "$waited" -ge "$limit" ]; then
                        # Threads all stopped (t) with a tracer child: LeakSanitizer's
                        # check at exit, which gdb cannot attach to.
                        not_ok "cvmd exits within ${CVM_STOP_TIMEOUT:-120} s of SIGTERM (at $(short_stack "$CVMD_PID"))"
                        ps -L -o tid,stat,wchan:32,comm -p "$CVMD_PID" | sed 's/^/#   /'
                        timeout 60 gdb -batch -p "$CVMD_PID" -ex 'thread apply all bt' 2>&1 |
                                grep -E '^(Thread|#)' | sed 's/^/#   /'
                        for p in $(pgrep -P "$CVMD_PID"); do
                                echo "# child $p:"
                                ps -o pid,ppid,stat,wchan:32,args -p "$p" | sed 's/^/#   /'
                        done
                        echo "# daemon log:"
                        tail -n 40 "$LOG" | sed 's/^/#   /'
                        kill -KILL "$CVMD_PID"
                        break
                fi
                sleep 0.1
                waited=$((waited + 1))
        done
        STOP_RC=0
        wait "$CVMD_PID" || STOP_RC=$?
        for p in $(lock_holders "$STATE/cvmd.lock"); do
                not_ok "nothing of cvmd outlives it: $p ($(ps -o stat=,wchan=,comm= -p "$p" | tr -s ' ')) holds its lock at $(short_stack "$p")"
                ps -o pid,ppid,stat,wchan:32,args -p "$p" | sed 's/^/#   /'
                timeout 60 gdb -batch -p "$p" -ex 'thread apply all bt' 2>&1 |
                        grep -E '^(Thread|#)' | sed 's/^/#   /'
                kill -KILL "$p" 2>/dev/null
        done
        CVMD_PID=
}

# api METHOD PATH [CURL ARGS...]: prints "STATUS BODY" on one line.
api() {
        local method=$1 path=$2
        shift 2
        curl -s --unix-socket "$SOCK" -X "$method" -o "$TMP/body" -w '%{http_code}' "$@" \
                "http://cvmd$path" >"$TMP/status"
        printf '%s %s\n' "$(cat "$TMP/status")" "$(cat "$TMP/body")"
}

ok() { echo "ok - $1"; }
not_ok() {
        echo "not ok - $1"
        shift
        for line in "$@"; do echo "#   $line"; done
        _failures=$((_failures + 1))
}

# check NAME COMMAND...: passes when the command succeeds.
check() {
        local name=$1
        shift
        local out
        if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}

# expect NAME ACTUAL PATTERN: passes when ACTUAL, joined into one line,
# matches the grep -E pattern.
expect() {
        if printf '%s' "$2" | tr '\n' ' ' | grep -Eq -- "$3"; then
                ok "$1"
        else
                not_ok "$1" "got: $2" "want: /$3/"
        fi
}

finish() {
        if [ "$_failures" -gt 0 ]; then
                echo "# daemon log:"
                tail -n 40 "$LOG" 2>/dev/null | sed 's/^/#   /'
                exit 1
        fi
        exit 0
}
