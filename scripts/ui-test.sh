#!/usr/bin/env bash
# The dashboard in a real browser: tests/ui/dashboard.test.mjs drives Debian's Chromium,
# headless, with playwright-core, against the approval_flow example (the built-in agents
# plus an agent that waits for a human) serving on a fresh SQLite database.
#
# Needs the debug builds `cargo build --examples` and `cargo build` make
# (target/debug/examples/approval_flow, target/debug/agentq); nothing is built here.
# Installs what is missing: Chromium (apt-get install chromium; AGENTQ_CHROMIUM names
# another binary), Node.js and npm (apt-get), and playwright-core at the version pinned in
# tests/ui/package-lock.json (npm ci; the first run needs the npm registry).
#
# Usage: scripts/ui-test.sh [--update-screenshots]
#   --update-screenshots  copy the screenshots taken into docs/screenshots/
# Screenshots always go to target/ui-screenshots/. Exit status 0 when every test passed;
# the last line says how many passed and failed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

say() { printf 'ui-test: %s\n' "$*"; }
die() {
    printf 'ui-test: error: %s\n' "$*" >&2
    printf 'test result: FAILED. 0 passed; 1 failed (scripts/ui-test.sh)\n'
    exit 1
}

update=false
for arg in "$@"; do
    case $arg in
        --update-screenshots) update=true ;;
        *) die "unknown argument $arg (see the usage at the top of $0)" ;;
    esac
done

server_bin=target/debug/examples/approval_flow
cli=target/debug/agentq
shots=target/ui-screenshots
[[ -x $server_bin ]] || die "$server_bin is missing: run cargo build --examples first"
[[ -x $cli ]] || die "$cli is missing: run cargo build first"

chromium=${AGENTQ_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
    [[ -z ${AGENTQ_CHROMIUM:-} ]] || die "AGENTQ_CHROMIUM=$chromium is not an executable"
    say "installing Debian's chromium (apt-get)"
    _servers_apt_install chromium >&2 || die "cannot install chromium"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm (apt-get)"
    _servers_apt_install nodejs npm >&2 || die "cannot install nodejs and npm"
fi
# playwright-core as locked; reinstalled when the lock file changed
stamp=tests/ui/node_modules/.agentq-lock
if ! cmp -s tests/ui/package-lock.json "$stamp" 2>/dev/null; then
    say "installing playwright-core (npm ci)"
    (cd tests/ui && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
        die "npm ci in tests/ui failed (network access to the npm registry?)"
    cp tests/ui/package-lock.json "$stamp"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentq-ui.XXXXXX")
server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then _servers_kill_wait "$server_pid"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

db="sqlite://$tmp/ui.db"
port=$(_servers_free_port) || die "no free port"
"$server_bin" serve --listen "127.0.0.1:$port" --database-url "$db" \
    --http-allow 127.0.0.1:9 --shutdown-timeout 1s >"$tmp/server.log" 2>&1 &
server_pid=$!
for ((i = 0; ; i++)); do
    if _servers_tcp_open 127.0.0.1 "$port"; then break; fi
    if ((i > 150)) || ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$tmp/server.log" >&2
        die "the server did not start"
    fi
    sleep 0.2
done

rm -rf "$shots"
mkdir -p "$shots"
status=0
AGENTQ_BASE="http://127.0.0.1:$port" AGENTQ_CLI="$PWD/$cli" AGENTQ_DB="$db" \
    AGENTQ_SHOTS="$PWD/$shots" AGENTQ_CHROMIUM="$chromium" \
    timeout 600 node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tmp/tap" \
    tests/ui/dashboard.test.mjs || status=$?
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tmp/tap" 2>/dev/null | tail -n 1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tmp/tap" 2>/dev/null | tail -n 1)
if [[ -z $passed || -z $failed ]]; then
    passed=${passed:-0}
    failed=$((${failed:-0} + 1))
fi
if ((status != 0 && failed == 0)); then failed=1; fi
if ((status != 0)); then
    say "the server's log ends:"
    tail -n 30 "$tmp/server.log" >&2
fi

if $update && ((status == 0)); then
    mkdir -p docs/screenshots
    cp "$shots"/*.png docs/screenshots/
    say "screenshots copied to docs/screenshots/"
fi
if ((status == 0)); then
    printf 'test result: ok. %s passed; %s failed (scripts/ui-test.sh)\n' "$passed" "$failed"
else
    printf 'test result: FAILED. %s passed; %s failed (scripts/ui-test.sh)\n' "$passed" "$failed"
fi
exit "$status"
