#!/usr/bin/env bash
# The SDK workers' benchmark: one Python and one TypeScript worker process against a
# release `agentq serve` on a fresh SQLite database, passes alternating between the two.
# Each pass (sdk/python/bench.py, the same measuring client for both) declares a no-op
# agent, posts RUNS runs while no worker serves it, then starts one worker process at
# CONCURRENCY (sdk/python/bench.py --serve, or sdk/typescript/bench-worker.mjs) and times
# the drain to the last `succeeded`; then IDLE times, with the worker idle, one POST →
# `succeeded` as seen by the client polling GET.
#
#   scripts/bench-sdk.sh                      # 3 passes each, 20,000 runs, concurrency 64
#   PASSES=5 RUNS=50000 scripts/bench-sdk.sh
# Knobs (env): PASSES RUNS CONCURRENCY IDLE, AGENTQ_BIN (default target/release/agentq,
# built here).
set -euo pipefail
cd "$(dirname "$0")/.."
passes=${PASSES:-3}
runs=${RUNS:-20000}
concurrency=${CONCURRENCY:-64}
idle=${IDLE:-50}
venv=target/sdk-venv
if [[ -z ${AGENTQ_BIN:-} ]]; then
    cargo build --release --locked 2>&1 | tail -1
    AGENTQ_BIN=target/release/agentq
fi
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
src=$(mktemp -d)
cp -r sdk/python/. "$src"
"$venv/bin/pip" install -q --disable-pip-version-check "$src"
rm -rf "$src"

mkdir -p bench-results
out="bench-results/bench-sdk-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "${dir:-}"' EXIT

one_pass() {
    local sdk=$1
    dir=$(mktemp -d)
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$AGENTQ_BIN" serve --listen "127.0.0.1:$port" --database-url "sqlite://$dir/agentq.db" \
        >"$dir/server.log" 2>&1 &
    server_pid=$!
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.05; done
    "$venv/bin/python" sdk/python/bench.py "http://127.0.0.1:$port" --sdk "$sdk" \
        --runs "$runs" --concurrency "$concurrency" --idle "$idle" | tee -a "$out"
    stop_server
    rm -rf "$dir"
}

for pass in $(seq "$passes"); do
    echo "pass $pass of $passes"
    one_pass python
    one_pass typescript
done

# medians (and ranges) per SDK
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for sdk in ("python", "typescript"):
    mine = [r for r in rows if r["sdk"] == sdk]
    if not mine:
        continue
    def show(key):
        values = sorted(r[key] for r in mine)
        return f"{statistics.median(values):g} ({values[0]:g}–{values[-1]:g})"
    print(f"{sdk}: drain {show('drain_runs_per_s')} runs/s; idle POST → succeeded p50 {show('idle_p50_ms')} ms, p99 {show('idle_p99_ms')} ms")
PY
echo "log: $out"
