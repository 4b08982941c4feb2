#!/usr/bin/env bash
# Benchmark of the embedded default (see benches/load.rs for what is measured).
#   scripts/bench.sh                      # 3 passes, 20,000 runs, 1,000 runs/s offered
#   PASSES=5 CONCURRENCY=64 scripts/bench.sh
# Knobs (env): PASSES RUNS PARALLEL RATE RATE_SECS IDLE_SAMPLES SSE_RUNS CONCURRENCY,
# and AGENTQ_BIN=path to measure another build of agentq (alternate runs to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench-results
out="bench-results/bench-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo bench --locked --bench load 2>/dev/null | tee "$out"
echo "log: $out"
