# Who may call what: tenants with API tokens on a TCP listener, each seeing
# and invoking only its own functions; the Unix socket is the operators'.
. "$(dirname "$0")/lib.sh"

hash() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat >"$TMP/tokens.json" <<JSON
{"tenants": {"acme": {"token_sha256": ["$(hash acme-secret)"]},
             "globex": {"token_sha256": ["$(hash globex-secret)", "$(hash globex-2)"]}}}
JSON
sim_config "$TMP/cfg.json" "\"auth\": {\"tokens_file\": \"$TMP/tokens.json\"}"
port=$((20000 + RANDOM % 20000))
start_daemon --config "$TMP/cfg.json" --listen "tcp:127.0.0.1:$port" || { not_ok "daemon starts"; finish; }
url="http://127.0.0.1:$port"

tcp() { # TOKEN METHOD PATH [CURL ARGS]: prints "STATUS BODY"
        local token=$1 method=$2 path=$3
        shift 3
        local auth=()
        [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
        curl -s -X "$method" -o "$TMP/tb" -w '%{http_code}' "${auth[@]}" "$@" "$url$path" >"$TMP/ts"
        printf '%s %s\n' "$(cat "$TMP/ts")" "$(cat "$TMP/tb")"
}
spec='{"handler": {"exec": ["/bin/cat"]}}'

expect "health is open on TCP" "$(tcp '' GET /v1/health)" '^200 '
expect "without a token: 401" "$(tcp '' GET /v1/functions)" '^401 \{"error":"unauthenticated","message":"authentication required'
hdr=$(curl -s -D - -o /dev/null "$url/v1/functions" | tr -d '\r' | grep -i '^WWW-Authenticate')
expect "the 401 names the scheme" "$hdr" '^WWW-Authenticate: Bearer$'
expect "an unknown token: 401" "$(tcp nope GET /v1/functions)" '^401 .*unknown API token'

expect "a tenant creates a function" "$(tcp acme-secret PUT /v1/functions/f1 -H 'Content-Type: application/json' -d "$spec")" \
        '^201 \{"name":"f1","tenant":"acme"'
expect "the owner invokes it" "$(tcp acme-secret POST /v1/functions/f1/invoke -d hi)" '^200 hi$'
expect "another tenant does not see it in the list" "$(tcp globex-secret GET /v1/functions)" '^200 \{"functions":\[\]\}$'
expect "another tenant gets 404 on it" "$(tcp globex-2 GET /v1/functions/f1)" '^404 .*no function \\"f1\\"'
expect "another tenant cannot invoke it" "$(tcp globex-secret POST /v1/functions/f1/invoke -d x)" '^404 '
expect "another tenant cannot replace it" \
        "$(tcp globex-secret PUT /v1/functions/f1 -H 'Content-Type: application/json' -d '{"handler": {"exec": ["/bin/true"]}}')" '^404 '
expect "another tenant cannot delete it" "$(tcp globex-secret DELETE /v1/functions/f1)" '^404 '
expect "the owner's function is unchanged" "$(tcp acme-secret POST /v1/functions/f1/invoke -d again)" '^200 again$'
# A function another tenant is still creating does not exist either (hashing
# a 400 MiB initrd keeps the creation in flight for a while).
truncate -s 16M "$TMP/k.bin"
truncate -s 400M "$TMP/i.bin"
curl -s -o /dev/null -X PUT -H "Authorization: Bearer acme-secret" -H 'Content-Type: application/json' \
        -d '{"handler": {"exec": ["/bin/cat"]}, "image": {"kernel": "'"$TMP/k.bin"'", "initrd": "'"$TMP/i.bin"'"}}' \
        "$url/v1/functions/f2" &
creating=$!
sleep 0.2
if kill -0 "$creating" 2>/dev/null; then
        expect "another tenant's create in flight is a 404, not a 409" \
                "$(tcp globex-secret PUT /v1/functions/f2 -H 'Content-Type: application/json' -d "$spec")" '^404 .*no function \\"f2\\"'
else
        ok "another tenant's create in flight is a 404, not a 409 # skip: the create ended first"
fi
wait "$creating"
rm -f "$TMP/k.bin" "$TMP/i.bin"

out=$(tcp acme-secret POST '/v1/functions/f1/invoke?mode=async' -d later)
id=$(printf '%s' "${out#202 }" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sleep 0.3
expect "another tenant cannot read an async result" "$(tcp globex-secret GET "/v1/invocations/$id")" '^404 '
expect "the owner reads it" "$(tcp acme-secret GET "/v1/invocations/$id")" '^200 .*"status":"ok"'

expect "operator routes are 403 for tenants" "$(tcp acme-secret GET /v1/vms)" \
        '^403 \{"error":"permission_denied","message":"tenant acme may not call GET /v1/vms'
expect "the PSP is for operators" "$(tcp acme-secret GET /v1/psp)" '^403 '
expect "the operator sees every tenant's functions on the Unix socket" \
        "$(api GET /v1/functions/f1)" '^200 \{"name":"f1","tenant":"acme"'
expect "cvmctl sends its token" "$("$CVMCTL" --url "$url" --token acme-secret version 2>&1)" 'cvmd +[0-9.]'
expect "CVMD_TOKEN works too" "$(CVMD_URL=$url CVMD_TOKEN=globex-secret "$CVMCTL" health 2>&1)" 'status: +ok'

stop_daemon
start_daemon --config "$TMP/cfg.json" --listen "tcp:127.0.0.1:$port" || not_ok "restart"
expect "ownership survives a restart" "$(tcp globex-secret GET /v1/functions/f1)" '^404 '
expect "the owner still has it" "$(tcp acme-secret GET /v1/functions/f1)" '^200 \{"name":"f1","tenant":"acme"'
stop_daemon

echo '{"tenants": {"Bad": {"token_sha256": []}}}' >"$TMP/bad-tokens.json"
sim_config "$TMP/bad.json" "\"auth\": {\"tokens_file\": \"$TMP/bad-tokens.json\"}"
expect "a bad tokens file is refused, naming the problem" \
        "$("$CVMD" --config "$TMP/bad.json" --check-config 2>&1)" 'tenant name "Bad" must match'
sim_config "$TMP/missing.json" "\"auth\": {\"tokens_file\": \"$TMP/none.json\"}"
expect "a configured tokens file must exist" "$("$CVMD" --config "$TMP/missing.json" --check-config 2>&1)" 'none.json.*No such file'
finish
