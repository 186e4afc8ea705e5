# Metrics end to end on the sim host: a function invoked cold then warm,
# then GET /v1/stats (counts, cold fraction, percentiles, launches, filters,
# bad parameters) and GET /metrics (content, and the text format checked
# line by line by a checker of our own, and by promtool when installed).
. "$(dirname "$0")/lib.sh"

sim_config "$TMP/cfg.json" '"psp": {"asids": 8}'

# The exposition format 0.0.4, checked strictly: every line is a comment
# (HELP/TYPE once per family, before its samples) or a sample with a valid
# name, labels and float value; a family's samples are contiguous; every
# histogram has cumulative buckets ending in +Inf equal to its _count.
cat >"$TMP/promcheck.py" <<'PY'
import math, re, sys
NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*'
VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r'^(%s)(\{(?:%s=%s(?:,%s=%s)*,?)?\})? (\S+)(?: (-?\d+))?$' % (NAME, LABEL, VALUE, LABEL, VALUE))
PAIR = re.compile(r'(%s)=(%s)' % (LABEL, VALUE))
text = sys.stdin.read()
errors = []
if not text.endswith('\n'):
    errors.append('the text does not end with a newline')
types, helps, seen, current = {}, set(), set(), None
hist = {}
def family_of(name):
    for suf in ('_bucket', '_sum', '_count'):
        base = name[:-len(suf)] if name.endswith(suf) else None
        if base and types.get(base) in ('histogram', 'summary'):
            return base
    return name
def parse_float(s):
    if s in ('+Inf', '-Inf', 'NaN'):
        return float(s.replace('Inf', 'inf').replace('NaN', 'nan'))
    if not re.match(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$', s):
        raise ValueError(s)
    return float(s)
for n, line in enumerate(text.split('\n')[:-1], 1):
    if line.startswith('#'):
        m = re.match(r'^# (HELP|TYPE) (%s) (.*)$' % NAME, line)
        if not m:
            if line.startswith('# HELP') or line.startswith('# TYPE'):
                errors.append('%d: bad comment: %r' % (n, line))
            continue
        kind, name, rest = m.groups()
        if kind == 'TYPE':
            if rest not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'):
                errors.append('%d: bad type %r' % (n, rest))
            if name in types or name in seen:
                errors.append('%d: TYPE for %s repeated or after its samples' % (n, name))
            types[name] = rest
        else:
            if name in helps:
                errors.append('%d: HELP for %s repeated' % (n, name))
            helps.add(name)
        continue
    if not line.strip():
        errors.append('%d: empty line' % n)
        continue
    m = SAMPLE.match(line)
    if not m:
        errors.append('%d: not a sample: %r' % (n, line))
        continue
    name, labels, value = m.group(1), m.group(2) or '', m.group(3)
    try:
        v = parse_float(value)
    except ValueError:
        errors.append('%d: bad value %r' % (n, value))
        continue
    pairs = PAIR.findall(labels)
    if len(set(k for k, _ in pairs)) != len(pairs):
        errors.append('%d: repeated label' % n)
    fam = family_of(name)
    if fam != current:
        if fam in seen:
            errors.append('%d: samples of %s are not contiguous' % (n, fam))
        seen.add(fam)
        current = fam
    t = types.get(fam)
    if t is None:
        errors.append('%d: %s has no TYPE' % (n, fam))
    if fam not in helps:
        errors.append('%d: %s has no HELP' % (n, fam))
    if t == 'counter' and not name.endswith('_total'):
        errors.append('%d: counter %s does not end in _total' % (n, name))
    if t in ('counter',) and (v < 0 or math.isnan(v)):
        errors.append('%d: counter %s is %r' % (n, name, v))
    if t == 'histogram':
        key = (fam, tuple((k, val) for k, val in pairs if k != 'le'))
        h = hist.setdefault(key, {'buckets': [], 'count': None, 'sum': None})
        if name == fam + '_bucket':
            le = dict(pairs).get('le')
            if le is None:
                errors.append('%d: bucket without le' % n)
            else:
                h['buckets'].append((parse_float(le.strip('"')), v))
        elif name == fam + '_count':
            h['count'] = v
        elif name == fam + '_sum':
            h['sum'] = v
        else:
            errors.append('%d: %s is not a histogram sample name' % (n, name))
for (fam, labels), h in hist.items():
    b = h['buckets']
    where = '%s%s' % (fam, dict(labels))
    if not b or b[-1][0] != float('inf'):
        errors.append('%s: no +Inf bucket last' % where)
        continue
    if any(b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)):
        errors.append('%s: le bounds not increasing' % where)
    if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
        errors.append('%s: buckets not cumulative' % where)
    if h['count'] is None or h['sum'] is None:
        errors.append('%s: missing _count or _sum' % where)
    elif b[-1][1] != h['count']:
        errors.append('%s: +Inf bucket %r != _count %r' % (where, b[-1][1], h['count']))
for e in errors[:20]:
    print(e)
sys.exit(1 if errors else 0)
PY

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
promcheck() { python3 "$TMP/promcheck.py" <"$1"; }
scrape() { # FILE: GET /metrics into FILE, headers into FILE.h
        curl -s --unix-socket "$SOCK" -D "$1.h" -o "$1" http://cvmd/metrics
}
wait_for() { # SECONDS COMMAND...: polls until the command succeeds
        local end=$((SECONDS + $1))
        shift
        until "$@"; do
                [ $SECONDS -ge $end ] && return 1
                sleep 0.1
        done
}

# The checker itself must catch broken text, or its passes mean nothing.
printf '# TYPE x_total counter\nx_total{a="b} 1\n' >"$TMP/bad1"
printf '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n' >"$TMP/bad2"
printf '# HELP g x\n# TYPE g gauge\ng one\n' >"$TMP/bad3"
printf '# HELP g x\n# TYPE g gauge\ng{a="1"} 1\n# HELP k x\n# TYPE k gauge\nk 1\ng{a="2"} 1\n' >"$TMP/bad4"
bad=0
for f in bad1 bad2 bad3 bad4; do promcheck "$TMP/$f" >/dev/null && bad=$((bad + 1)); done
expect "the format checker rejects broken text" "$bad" '^0$'

start_daemon --config "$TMP/cfg.json" || { not_ok "daemon starts"; finish; }

scrape "$TMP/m0"
expect "GET /metrics is 0.0.4 text" "$(tr -d '\r' <"$TMP/m0.h")" \
        '^HTTP/1.1 200 .*Content-Type: text/plain; version=0.0.4'
check "a fresh daemon's /metrics passes the format check" promcheck "$TMP/m0"
expect "no invocation has been counted yet" "$(grep '^cvmd_invocation_duration_seconds_count' "$TMP/m0")" \
        'start="cold"\} 0 .*start="warm"\} 0'

out=$(api PUT /v1/functions/echo -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}}')
expect "PUT creates a function" "$out" '^201 '
starts=
for i in 1 2; do
        curl -s --unix-socket "$SOCK" -D "$TMP/h" -o "$TMP/b" --data-binary "hi$i" \
                http://cvmd/v1/functions/echo/invoke
        starts="$starts $(tr -d '\r' <"$TMP/h" | sed -n 's/^Cvm-Start: //p')"
done
expect "invoked cold, then warm" "$starts" '^ cold warm$'

# Rows reach SQLite through the batched writer, which lingers for a batch;
# a query waits for the rows queued before it, so both are there at once.
stats() { api GET "/v1/stats$1" | cut -d' ' -f2-; }
s=$(stats '?function=echo')
expect "stats count both invocations, one cold" \
        "$(echo "$s" | json 'd["invocations"]["total"], sorted(d["invocations"]["by_start"].items()), d["invocations"]["by_status"]')" \
        "^2 \[\('cold', 1\), \('warm', 1\)\] \{'ok': 2\}$"
expect "the cold fraction is one half" "$(echo "$s" | json 'd["invocations"]["cold_fraction"]')" '^0\.5$'
expect "cold percentiles include the PSP and boot phases" \
        "$(echo "$s" | json 'd["invocations"]["latency_ms"]["cold"]["psp"]["p50"] > 0, d["invocations"]["latency_ms"]["cold"]["boot"]["p99"] > 0, d["invocations"]["latency_ms"]["cold"]["total"]["p90"] >= d["invocations"]["latency_ms"]["cold"]["exec"]["p90"]')" \
        '^True True True$'
expect "warm invocations had no PSP time" \
        "$(echo "$s" | json 'd["invocations"]["latency_ms"]["warm"]["count"], d["invocations"]["latency_ms"]["warm"]["psp"]["p99"]')" '^1 0\.0$'
expect "the launch is counted with its PSP percentiles" \
        "$(echo "$s" | json 'd["launches"]["total"], d["launches"]["failed"], d["launches"]["by_trigger"], d["launches"]["psp_ms"]["p50"] > 0')" \
        "^1 0 \{'demand': 1\} True$"
expect "the answer names its range and row limit" \
        "$(echo "$s" | json 'd["function"], d["until_ms"] - d["since_ms"], d["max_rows"], d["notes"], d["invocations"]["truncated"]')" \
        '^echo 3600000 1000000 \[\] False$'
expect "all functions by default, relative since" \
        "$(stats '?since=15m' | json 'd["invocations"]["total"], d["until_ms"] - d["since_ms"]')" '^2 900000$'
now=$(($(date +%s) * 1000))
expect "absolute unix ms since and until" \
        "$(stats "?since=$((now - 60000))&until=$((now + 60000))" | json 'd["invocations"]["total"]')" '^2$'
expect "a range before the invocations is empty" \
        "$(stats "?since=2h&until=1h" | json 'd["invocations"]["total"], d["invocations"]["cold_fraction"], d["invocations"]["latency_ms"]["cold"]["total"]["p50"]')" \
        '^0 None None$'
expect "an unknown function still answers, and says so" \
        "$(stats '?function=ghost' | json 'd["invocations"]["total"], d["notes"][0]')" \
        '^0 no function has this name now; it may have been deleted'

expect "a bad since is a 400 naming it" "$(api GET '/v1/stats?since=yesterday')" \
        "^400 \{\"error\":\"invalid_argument\",\"message\":\"query parameter 'since'"
expect "a bad until is a 400 naming it" "$(api GET '/v1/stats?until=1y')" "^400 .*query parameter 'until'"
expect "a bad function name is a 400 naming it" "$(api GET '/v1/stats?function=Bad_Name')" \
        "^400 .*query parameter 'function'"
expect "since after until is a 400" "$(api GET '/v1/stats?since=1h&until=2h')" \
        "^400 .*'since'.*must be before 'until'"
expect "a range over 90 days is a 400" "$(api GET '/v1/stats?since=91d')" "^400 .*more than 90 days"
expect "an empty parameter is a 400" "$(api GET '/v1/stats?since=')" "^400 .*'since'"

scrape "$TMP/m1"
check "/metrics passes the format check after invocations" promcheck "$TMP/m1"
m1=$(cat "$TMP/m1")
expect "invocations are counted by function, start and status" "$m1" \
        'cvmd_invocations_total\{function="echo",start="cold",status="ok"\} 1 cvmd_invocations_total\{function="echo",start="warm",status="ok"\} 1'
expect "the duration histogram saw one of each" "$(grep '^cvmd_invocation_duration_seconds_count' "$TMP/m1")" \
        'start="cold"\} 1 .*start="warm"\} 1'
expect "the demand launch is counted" "$m1" 'cvmd_launches_total\{result="ok",trigger="demand"\} 1 '
expect "the PSP wait histogram saw it" "$m1" 'cvmd_launch_psp_wait_seconds_count 1 '
expect "gauges: one ready VM, one function" "$m1" 'cvmd_vms\{state="ready"\} 1 .*cvmd_functions 1 '
expect "gauges: ASIDs by state" "$m1" 'cvmd_asids\{state="free"\} [0-9]+ cvmd_asids\{state="dirty"\} [0-9]+ cvmd_asids\{state="in_use"\} 1 '
expect "the PSP was busy" "$m1" 'cvmd_psp_busy_seconds_total 0\.0[0-9]*[1-9]'
expect "store counters are there" "$m1" 'cvmd_store_writes_total [1-9][0-9]* .*cvmd_store_writes_dropped_total 0 '
expect "HEAD /metrics works" "$(curl -s -I --unix-socket "$SOCK" http://cvmd/metrics | tr -d '\r')" '^HTTP/1.1 200'
if command -v promtool >/dev/null 2>&1; then
        check "promtool check metrics accepts it" promtool check metrics <"$TMP/m1"
else
        echo "ok - promtool check metrics # SKIP promtool not installed"
fi

# Stats queries run off the loop: several at once all answer, and the
# daemon stays responsive and shuts down cleanly.
pids=
for i in 1 2 3; do
        curl -s --unix-socket "$SOCK" -o "$TMP/par$i" 'http://cvmd/v1/stats?since=1h' &
        pids="$pids $!"
done
# Not a bare wait: the daemon is a child of this shell too.
wait $pids
totals=$(for i in 1 2 3; do json 'd["invocations"]["total"]' <"$TMP/par$i" 2>&1; done)
expect "concurrent stats queries all answer" "$totals" '^2 2 2$'
stop_daemon
expect "the daemon stops cleanly" "$STOP_RC" '^0$'
finish
