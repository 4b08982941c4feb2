#!/usr/bin/env bash
# Load benchmark of real agentq processes (see benches/load.rs for what is measured).
#   scripts/bench.sh                      # SQLite, one serve process: 3 passes, 20,000 runs
#   PASSES=5 CONCURRENCY=64 scripts/bench.sh
#   DB=postgres WORKERS=2 scripts/bench.sh                 # PostgreSQL at DATABASE_URL,
#                                                          # an api process + 2 workers
#   DB=postgres WORKERS=1 BACKLOG=100000 RECOVERY=1 scripts/bench.sh
#   KEYS=10000 scripts/bench.sh           # concurrency keys' cost: 20,000 runs drained
#                                         # without keys and over 10,000 keys
# Knobs (env): PASSES RUNS PARALLEL RATE RATE_SECS IDLE_SAMPLES SSE_RUNS CONCURRENCY
# DB (sqlite|postgres) WORKERS BACKLOG RECOVERY LEASE KEYS, and AGENTQ_BIN=path to measure
# another build of agentq (alternate runs to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench-results
out="bench-results/bench-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo bench --locked --bench load 2>/dev/null | tee "$out"
echo "log: $out"
