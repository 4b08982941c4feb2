#!/usr/bin/env bash
# Bad input, on purpose: schemathesis against the served OpenAPI document of the debug
# binary (target/debug/agentq, built by `cargo build`; nothing is built here), on a fresh
# SQLite database, three times:
#   1. with no key in the database (the server is open on loopback),
#   2. after `agentq keys create --tenant fuzz --scopes admin`, with that key, and
#   3. the same without any credential (401s, which the spec must document).
# Every response must be documented (status, content type, headers, schema) and none a 5xx.
# The server logs at RUST_LOG=debug to a file that is then searched for the key's secret,
# `Authorization` and `Bearer `: secrets never reach the logs.
#
# schemathesis is installed from PyPI, pinned, into a virtualenv at target/fuzz-venv (the
# first run needs network access). AGENTQ_FUZZ_PYTHON picks the interpreter (python3).
# Usage: scripts/fuzz.sh   (exit status 0 when every check passed)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

SCHEMATHESIS_VERSION=4.32.5
python=${AGENTQ_FUZZ_PYTHON:-python3}
venv=target/fuzz-venv
agentq=target/debug/agentq
started=$SECONDS

say() { printf 'fuzz: %s\n' "$*"; }
die() {
    printf 'fuzz: error: %s\n' "$*" >&2
    exit 1
}

[[ -x $agentq ]] || die "$agentq is missing: run cargo build first"

# The virtualenv with the pinned schemathesis, made once.
if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *" $SCHEMATHESIS_VERSION" ]]; then
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        _servers_apt_install python3-venv || die "cannot install python3-venv"
    fi
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv (from PyPI)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
        die "pip install schemathesis==$SCHEMATHESIS_VERSION failed (network access to PyPI?)"
fi
# schemathesis, with one workaround: on CPython 3.11 before 3.11.8, ast.parse deep in the
# stack can raise "SystemError: AST constructor recursion depth mismatch" (CPython
# gh-106905), which Hypothesis hits while it only describes a lambda for a repr; such a
# lambda is then described as `lambda: <unknown>` instead of failing the run.
schemathesis=("$PWD/$venv/bin/python" -c '
import sys
from hypothesis.internal import lambda_sources
describe = lambda_sources._lambda_description
def described(f, *args, **kwargs):
    try:
        return describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"
lambda_sources._lambda_description = described
from schemathesis.cli import schemathesis
sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
')

tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentq-fuzz.XXXXXX")
server_log=$tmp/server.log
db="sqlite://$tmp/fuzz.db"
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        _servers_kill_wait "$server_pid"
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

# Outbound HTTP (the http agent, webhooks) may reach only a closed port on loopback, so
# generated URLs never leave the machine.
start_server() {
    local i
    port=$(_servers_free_port) || die "no free port"
    RUST_LOG=debug "$agentq" serve --listen "127.0.0.1:$port" --database-url "$db" \
        --http-allow 127.0.0.1:9 --shutdown-timeout 1s --concurrency 4 \
        >>"$server_log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 100; i++)); do
        if "$venv/bin/python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)' "http://127.0.0.1:$port/healthz" 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$server_log" >&2
    die "agentq did not start"
}

# Checks: all of them but positive_data_acceptance, which expects every request valid
# by the schema to be accepted. Ours are also checked against what JSON Schema cannot say
# (a registered agent, the input against that agent's own schema, dependencies that
# exist, RFC 3339 times in query strings), so their 422s are right.
# --request-timeout: a live event stream (Accept: text/event-stream) of a run that is not
# finished never ends by itself; no request may hang the run.
failed=0
fuzz() {
    local name=$1
    shift
    say "schemathesis: $name"
    if ! (cd "$tmp" && timeout 600 "${schemathesis[@]}" run "http://127.0.0.1:$port/openapi.json" \
        --checks all --exclude-checks positive_data_acceptance \
        --max-examples 30 --workers 2 --request-timeout 10 \
        --generation-database none --no-color "$@"); then
        say "FAILED: $name"
        failed=1
    fi
}

start_server
fuzz "no key exists (open on loopback)"
stop_server

key=$("$agentq" keys create --tenant fuzz --scopes admin --database-url "$db" 2>/dev/null |
    grep -o 'aq_[A-Za-z0-9_]*' | tail -n 1) || true
[[ $key == aq_* ]] || die "agentq keys create printed no key"
secret=${key##*_}
start_server
fuzz "with the admin key" -H "Authorization: Bearer $key"
fuzz "without a credential (a key exists)"
stop_server

# Secrets never reach the logs, at debug level either.
for needle in "$secret" "$key" "authorization" "bearer "; do
    if grep -Fqi -- "$needle" "$server_log"; then
        say "FAILED: the server log contains ${needle:0:12}…:"
        grep -Fni -- "$needle" "$server_log" | head -n 5 | sed "s/$secret/<secret>/g" >&2
        failed=1
    fi
done
[[ -s $server_log ]] || {
    say "FAILED: the server wrote no log"
    failed=1
}

if [[ $failed == 0 ]]; then
    say "passed in $((SECONDS - started)) s (schemathesis $SCHEMATHESIS_VERSION)"
else
    say "failed after $((SECONDS - started)) s"
fi
exit "$failed"
