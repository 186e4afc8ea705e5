#!/usr/bin/env bash
# Runs every test of the given build trees: the cmocka unit binaries and the
# integration scripts (which start the real daemon), then, with CVM_FUZZ set,
# the fuzz targets briefly. Prints one line per suite and ends with
# "N passed, N failed"; exits 1 if anything failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
passed=0
failed=0
failures=()
failed_tests=()
logdir=$(mktemp -d "${TMPDIR:-/tmp}/cvm-tests.XXXXXX")
trap 'rm -rf "$logdir"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Clang's sanitizers name functions in their reports through llvm-symbolizer.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-19/bin/llvm-symbolizer ]; then
        export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-19/bin/llvm-symbolizer
fi

record() { # suite pass fail log
        passed=$((passed + $2))
        failed=$((failed + $3))
        printf '%-48s %3d passed, %d failed\n' "$1" "$2" "$3"
        if [ "$3" -gt 0 ]; then
                failures+=("$1")
                sed 's/^/    | /' "$4" | tail -n 60
                # The failing checks themselves, repeated at the end where a
                # reader of only the last lines (CI's summary) sees them.
                local line
                while IFS= read -r line; do
                        failed_tests+=("$1: $line")
                done < <(grep -E '^(not ok |\[  FAILED  \] [a-z_])' "$4" | head -n 10)
        fi
}

for build in "$@"; do
        build=${build%/}
        for t in "$build"/tests/unit/test_*; do
                [ -x "$t" ] || continue
                log="$logdir/$(basename "$t").log"
                timeout 300 "$t" >"$log" 2>&1
                rc=$?
                p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
                f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
                p=${p:-0}
                f=${f:-0}
                # A crash or a sanitizer report after the summary still fails.
                if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
                record "$build: $(basename "$t")" "$p" "$f" "$log"
        done
        # tests/snp/ needs an SEV-SNP host; it skips, saying why, elsewhere.
        for s in tests/integration/test_*.sh tests/snp/test_*.sh; do
                [ -f "$s" ] || continue
                log="$logdir/$(basename "$s").log"
                CVM_BUILD="$build" timeout 900 bash "$s" >"$log" 2>&1
                rc=$?
                p=$(grep -c '^ok ' "$log")
                f=$(grep -c '^not ok ' "$log")
                if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
                record "$build: $(basename "$s")" "$p" "$f" "$log"
        done
done

# The fuzz targets (CVM_FUZZ: their build directory): each replays its seed
# corpus and fuzzes for CVM_FUZZ_SECONDS (10), so a parser regression or a
# target that no longer builds shows here. `make fuzz` runs them for longer,
# keeping what they find under CVM_FUZZ_CORPUS (else a temporary directory).
if [ -n "${CVM_FUZZ:-}" ]; then
        secs=${CVM_FUZZ_SECONDS:-10}
        for t in tests/fuzz/fuzz_*.c; do
                name=$(basename "$t" .c)
                log="$logdir/$name.log"
                corpus="${CVM_FUZZ_CORPUS:-$logdir/corpus}/$name"
                mkdir -p "$corpus"
                seeds=
                [ -d "tests/fuzz/corpus/$name" ] && seeds="tests/fuzz/corpus/$name"
                if [ -x "$CVM_FUZZ/$name" ]; then
                        # shellcheck disable=SC2086 # seeds is one path or nothing.
                        timeout $((secs + 110)) "$CVM_FUZZ/$name" -max_total_time="$secs" \
                                -rss_limit_mb=2048 "$corpus" $seeds >"$log" 2>&1
                        rc=$?
                else
                        echo "$CVM_FUZZ/$name is missing: make fuzz-build" >"$log"
                        rc=1
                fi
                if [ "$rc" -eq 0 ]; then
                        record "fuzz: $name" 1 0 "$log"
                else
                        record "fuzz: $name" 0 1 "$log"
                fi
        done
fi

if [ ${#failures[@]} -gt 0 ]; then
        echo "failed suites:"
        printf '  %s\n' "${failures[@]}"
fi
if [ ${#failed_tests[@]} -gt 0 ]; then
        echo "failed tests (at most 10 per suite):"
        printf '  %s\n' "${failed_tests[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
