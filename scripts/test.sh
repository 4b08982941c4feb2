#!/usr/bin/env bash
# The test command: formatting, lints, every test, the examples' build, the fuzzing
# step, the SDKs' tests and the dashboard's browser tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo build --examples"
cargo build --examples --locked

# PostgreSQL and Redis: the ones at DATABASE_URL / REDIS_URL, or our own (servers.sh).
step "test servers"
ensure_postgres
ensure_redis
log="$(mktemp)"
test_db="agentq_test_$$"
psql_admin() { "$AGENTQ_PG_BIN/psql" "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAtc "$1" >/dev/null; }
cleanup() {
    rm -f "$log"
    # the Redis-delivery passes' keys (one namespace per test)
    local cli
    cli="$(command -v redis-cli || echo "$(dirname "${AGENTQ_REDIS_SERVER:-/}")/redis-cli")"
    if [[ -x $cli ]]; then
        "$cli" -u "$REDIS_URL" --scan --pattern 'agentq-test-*' 2>/dev/null |
            xargs -r -n 500 "$cli" -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
    else
        echo "test.sh: no redis-cli: keys agentq-test-* stay in $REDIS_URL" >&2
    fi
    psql_admin "DROP DATABASE IF EXISTS $test_db WITH (FORCE)" || true
    servers_cleanup
}
trap cleanup EXIT
# every test makes its own schema in a database of this run's own, dropped at the end
psql_admin "CREATE DATABASE $test_db"
# the same server and parameters, this run's database
base="${DATABASE_URL%%\?*}"
query="${DATABASE_URL#"$base"}"
if [[ ${base#*://} == */* ]]; then base="${base%/*}"; fi
export AGENTQ_TEST_DATABASE_URL="$base/$test_db$query"

# arguments before `--` go to cargo, those after it to the test binaries
cargo_args=()
test_args=()
seen_separator=false
for arg in "$@"; do
    if ! $seen_separator && [[ $arg == -- ]]; then
        seen_separator=true
    elif $seen_separator; then
        test_args+=("$arg")
    else
        cargo_args+=("$arg")
    fi
done

status=0
step "cargo test (SQLite, the default)"
cargo test --lib --bins --tests --benches --locked --no-fail-fast "${cargo_args[@]}" -- "${test_args[@]}" 2>&1 | tee "$log" || status=$?

# The integration suite and the store's suite (tests/store/) again in the other three combinations of database (SQLite,
# PostgreSQL) and delivery (workers claim from the table, or Redis delivers). Tests that
# bring their own throwaway servers (outage, throwaway, tls) ran in the first pass already;
# the Redis delivery tests set up Redis themselves and run in the db-delivery passes.
once=(--skip outage:: --skip throwaway:: --skip tls:: --skip redis_ha::)
step "cargo test --test api --test store (PostgreSQL)"
AGENTQ_TEST_DB=postgres cargo test --test api --test store --locked --no-fail-fast "${cargo_args[@]}" -- "${test_args[@]}" "${once[@]}" 2>&1 | tee -a "$log" || status=$?
step "cargo test --test api --test store (SQLite, Redis delivery)"
AGENTQ_TEST_DELIVERY=redis cargo test --test api --test store --locked --no-fail-fast "${cargo_args[@]}" -- "${test_args[@]}" "${once[@]}" --skip redis_delivery:: 2>&1 | tee -a "$log" || status=$?
step "cargo test --test api --test store (PostgreSQL, Redis delivery)"
AGENTQ_TEST_DB=postgres AGENTQ_TEST_DELIVERY=redis cargo test --test api --test store --locked --no-fail-fast "${cargo_args[@]}" -- "${test_args[@]}" "${once[@]}" --skip redis_delivery:: 2>&1 | tee -a "$log" || status=$?

# Bad input on purpose (scripts/fuzz.sh): schemathesis against the debug binary the
# passes above built. It counts as one more test in the closing line.
step "scripts/fuzz.sh (schemathesis)"
if scripts/fuzz.sh; then
    echo "test result: ok. 1 passed; 0 failed (scripts/fuzz.sh)" >>"$log"
else
    status=1
    echo "test result: FAILED. 0 passed; 1 failed (scripts/fuzz.sh)" >>"$log"
fi

# The SDKs (scripts/sdk-test.sh) against the debug binary: each of their tests counts in
# the closing line.
step "scripts/sdk-test.sh (Python and TypeScript SDKs)"
scripts/sdk-test.sh 2>&1 | tee -a "$log" || status=1

# The dashboard in headless Chromium (scripts/ui-test.sh), against the approval_flow
# example built above; each of its browser tests counts in the closing line.
step "scripts/stream-test.sh (run streams read by the Vercel AI SDK)"
scripts/stream-test.sh 2>&1 | tee -a "$log" || status=1

step "scripts/ui-test.sh (dashboard in Chromium)"
scripts/ui-test.sh 2>&1 | tee -a "$log" || status=1

# One closing line for the whole run, summed over every test binary and the fuzz step.
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) passed += $i
            if ($(i + 1) ~ /^failed;?$/) failed += $i
        }
     }
     END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
