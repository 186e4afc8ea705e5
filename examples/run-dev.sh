#!/usr/bin/env bash
# `make run`: cvmd in the foreground on the given host with state under
# ./run, and the demo function "hello" deployed once the daemon answers.
# Ctrl-C stops the daemon (it drains and exits 0).
set -eu
build=${1:-build}
host=${2:-sim}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p run
sock="$root/run/cvmd.sock"
"$build/cvmd" --config daemon/cvmd-dev.json --host "$host" --state-dir run \
        --listen "unix:$sock" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 1 100); do
        curl -sf --unix-socket "$sock" -o /dev/null http://cvmd/v1/health && break
        kill -0 $pid 2>/dev/null || exit 1
        sleep 0.05
done
spec=$(printf '{"handler": {"exec": ["%s/examples/hello/handler.sh"]}, "pool": {"min_warm": 1}}' "$root")
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
