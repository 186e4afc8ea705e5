#!/usr/bin/env bash
# Runs the benchmarks against a daemon started here on a temporary state
# directory. Usage: tests/bench/run.sh BUILD_DIR. Figures go to stdout.
set -eu
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-bench.XXXXXX")
echo '{"log_level": "warn"}' >"$tmp/cfg.json"
"$root/$build/cvmd" --config "$tmp/cfg.json" --state-dir "$tmp" --listen "unix:$tmp/cvmd.sock" \
        2>"$tmp/cvmd.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do
        [ -S "$tmp/cvmd.sock" ] && break
        sleep 0.05
done
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r)"
"$root/$build/bench/api-rtt" "$tmp/cvmd.sock" 20000
