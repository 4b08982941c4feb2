#!/usr/bin/env bash
# Run streams read by the Vercel AI SDK: tests/stream (node --test, the real `ai` package
# installed by npm ci from its committed lock file) against real agentq processes started
# from the debug binary target/debug/agentq (built by `cargo build`; nothing is built
# here), once on fresh SQLite databases and once on fresh PostgreSQL databases (the server
# at DATABASE_URL, or scripts/servers.sh's own).
#
# Installs what is missing: Node.js/npm (apt-get); `ai` needs the npm registry on the
# first run. Usage: scripts/stream-test.sh   (exit status 0 when every test passed; one
# `test result:` line per backend)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

say() { printf 'stream-test: %s\n' "$*"; }
export AGENTQ_BIN=$PWD/target/debug/agentq
if [[ ! -x $AGENTQ_BIN ]]; then
    say "error: $AGENTQ_BIN is missing: run cargo build first"
    echo "test result: FAILED. 0 passed; 1 failed (scripts/stream-test.sh)"
    exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm (apt-get)"
    _servers_apt_install nodejs npm
fi
stamp=tests/stream/node_modules/.agentq-lock
if ! cmp -s tests/stream/package-lock.json "$stamp" 2>/dev/null; then
    say "installing ai (npm ci)"
    (cd tests/stream && npm ci --no-audit --no-fund --loglevel=error) || {
        echo "test result: FAILED. 0 passed; 1 failed (npm ci in tests/stream failed: network access to the npm registry?)"
        exit 1
    }
    cp tests/stream/package-lock.json "$stamp"
fi
ensure_postgres
trap servers_cleanup EXIT

status=0
out=$(mktemp)
for db in sqlite postgres; do
    say "tests/stream on $db"
    pass_status=0
    (cd tests/stream && AGENTQ_STREAM_DB=$db timeout 600 node --test stream.test.mjs) >"$out" 2>&1 || pass_status=1
    cat "$out"
    passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1)
    failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
    if [[ -z $passed ]]; then
        echo "test result: FAILED. 0 passed; 1 failed (tests/stream on $db did not run)"
        status=1
    elif [[ ${failed:-0} -gt 0 || $pass_status -ne 0 ]]; then
        echo "test result: FAILED. $passed passed; ${failed:-1} failed (tests/stream on $db)"
        status=1
    else
        echo "test result: ok. $passed passed; 0 failed (tests/stream on $db)"
    fi
done
rm -f "$out"
exit "$status"
