#!/usr/bin/env bash
# The README's performance table, regenerated: runs scripts/bench-peers.sh (the Node stack
# a team would build: fastify + BullMQ + a PostgreSQL runs table) and scripts/bench-compare.sh
# (BullMQ's bare drain, and benches/load.rs on every backend) on one release build, then
# writes the table between README's `perf-table` markers with the date, the machine and
# every ratio beside its target (scripts/perf-table.mjs).
#   scripts/bench-table.sh                    # 3 passes of each (about 12 minutes)
#   PASSES=5 AGENTQ_BIN=/path/to/agentq scripts/bench-table.sh
# Needs what those two scripts need: Node.js and npm, psql and redis-cli, PostgreSQL at
# 127.0.0.1:5432 (DATABASE_URL) and Redis at 127.0.0.1:6379 (REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${AGENTQ_BIN:-} ]]; then
    cargo build --release --locked --bin agentq
    AGENTQ_BIN=target/release/agentq
    built=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- src migrations benches Cargo.toml Cargo.lock || built="$built, uncommitted changes"
else
    built="AGENTQ_BIN=$AGENTQ_BIN"
fi
[[ -x $AGENTQ_BIN ]] || { echo "bench-table.sh: AGENTQ_BIN=$AGENTQ_BIN is not an executable" >&2; exit 1; }
AGENTQ_BIN=$(realpath "$AGENTQ_BIN")
export AGENTQ_BIN
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench-results
export PEERS_LOG="bench-results/table-$stamp-peers"
export COMPARE_OUT="bench-results/table-$stamp-compare"
scripts/bench-peers.sh
scripts/bench-compare.sh
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
memory=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
machine="$(nproc) cores ($cpu), $memory, PostgreSQL $(psql -At "$DATABASE_URL" -c 'SHOW server_version' | cut -d' ' -f1), Redis $(redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" INFO server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r')"
version="$("$AGENTQ_BIN" --version | awk '{print $2}') ($built)"
table=$(node scripts/perf-table.mjs "$PEERS_LOG.jsonl" "$COMPARE_OUT" "$machine" "$version")
echo "$table" >"bench-results/table-$stamp.md"
# between the markers, README's table is replaced by the new one
TABLE="$table" node -e '
const fs = require("node:fs");
const start = "<!-- perf-table: scripts/bench-table.sh writes what follows -->";
const end = "<!-- /perf-table -->";
const readme = fs.readFileSync("README.md", "utf8");
const [a, b] = [readme.indexOf(start), readme.indexOf(end)];
if (a < 0 || b < a) { console.error("bench-table.sh: README.md has no perf-table markers"); process.exit(1); }
fs.writeFileSync("README.md", readme.slice(0, a + start.length) + "\n" + process.env.TABLE + "\n" + readme.slice(b));
'
echo "$table"
echo "bench-table.sh: README.md updated; the table is also in bench-results/table-$stamp.md"
