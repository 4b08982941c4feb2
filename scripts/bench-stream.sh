#!/usr/bin/env bash
# Output stream benchmark (see benches/stream.rs for what is measured): RUNS concurrent echo
# runs each streaming RATE deltas a second for SECS seconds on one `agentq serve`, each
# followed live by a client of its own.
#   scripts/bench-stream.sh                     # SQLite: 3 passes of 1,000 runs × 50/s × 20 s
#   DB=postgres scripts/bench-stream.sh         # PostgreSQL at DATABASE_URL
#   PASSES=1 RUNS=200 SECS=5 scripts/bench-stream.sh
# Knobs (env): PASSES RUNS RATE SECS DB BIG_INPUT (1: each input holds its whole text), and AGENTQ_BIN=path to measure another build.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1,000 followers and 1,000 runs: more open files than the usual 1,024
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p bench-results
out="bench-results/bench-stream-${DB:-sqlite}-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo bench --locked --bench stream 2>/dev/null | tee "$out"
echo "log: $out"
