#!/usr/bin/env bash
# agentq against BullMQ on the same Redis and machine, alternating passes so a noisy
# stretch of the machine hits both alike; prints medians and their ratios.
#   scripts/bench-compare.sh                # 3 passes
#   PASSES=5 scripts/bench-compare.sh
#   AGENTQ_BIN=/path/to/agentq scripts/bench-compare.sh   # another build, not built here
# Needs Node.js and npm (BullMQ is installed from the pinned lock file of
# ../shared/peers/bullmq into a temporary copy), PostgreSQL at DATABASE_URL and Redis at
# REDIS_URL (agentq uses database 9 of it, BullMQ database 5).
# Compared: agentq end-to-end (20,000 runs POSTed through the API until all succeeded:
# insert, durable record and events included) against BullMQ's drain of 20,000 no-op
# jobs already in Redis, at the same worker concurrency (16 and 64).
set -euo pipefail
cd "$(dirname "$0")/.."
passes="${PASSES:-3}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
# without a database index: each side picks its own below
redis="${redis%%\?*}"
if [[ $redis =~ ^(.*://[^/]*)(/[0-9]*)?$ ]]; then
    redis="${BASH_REMATCH[1]}"
else
    echo "bench-compare.sh: cannot read REDIS_URL ($redis)" >&2
    exit 2
fi
peer="${BULLMQ_DIR:-../shared/peers/bullmq}"
out="${COMPARE_OUT:-bench-results/compare-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$peer"/. "$work/"
(cd "$work" && npm install --no-audit --no-fund >/dev/null 2>&1)
if [[ -z ${AGENTQ_BIN:-} ]]; then
    cargo build --release --locked --bin agentq
    export AGENTQ_BIN=target/release/agentq
fi
# a failed pass stops the comparison (its errors are in stderr.log)
bench() { cargo bench --locked --bench load 2>>"$out/stderr.log" | grep '^{'; }
for pass in $(seq "$passes"); do
    echo "== pass $pass"
    (cd "$work" && REDIS_URL="$redis/5" RUNS=1 SCENARIOS=process node bench.js) >"$out/bullmq-$pass.log" 2>&1
    PASSES=1 DB=sqlite bench >"$out/sqlite16-$pass.jsonl"
    PASSES=1 DB=postgres bench >"$out/pg16-$pass.jsonl"
    AGENTQ_QUEUE_URL="$redis/9" PASSES=1 DB=postgres bench >"$out/redispg16-$pass.jsonl"
    # concurrency 64: the throughput figure only, with shorter latency scenarios
    IDLE_SAMPLES=20 RATE_SECS=2 SSE_RUNS=2 PASSES=1 DB=postgres CONCURRENCY=64 \
        bench >"$out/pg64-$pass.jsonl"
    IDLE_SAMPLES=20 RATE_SECS=2 SSE_RUNS=2 AGENTQ_QUEUE_URL="$redis/9" PASSES=1 DB=postgres \
        CONCURRENCY=64 bench >"$out/redispg64-$pass.jsonl"
done

# medians over passes of one number per file
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() {
    local key=$1
    shift
    grep -ho "\"$key\":[0-9.]*" "$@" | cut -d: -f2
}
bullmq() { grep -h "^  1 worker proc x concurrency $1:" "$out"/bullmq-*.log | sed 's/.*= \([0-9]*\) jobs\/s.*/\1/' | median; }
b16=$(bullmq 16) || { echo "no BullMQ concurrency-16 figure in $out/bullmq-*.log" >&2; exit 1; }
b64=$(bullmq 64) || { echo "no BullMQ concurrency-64 figure in $out/bullmq-*.log" >&2; exit 1; }
printf '\nBullMQ drain (1 worker process): %s jobs/s at concurrency 16, %s at 64\n' "$b16" "$b64"
for mode in sqlite16 pg16 redispg16 pg64 redispg64; do
    e2e=$(field e2e_runs_per_s "$out/$mode"-*.jsonl | median)
    p99=$(field post_p99_ms "$out/$mode"-*.jsonl | median)
    idle=$(field idle_p50_ms "$out/$mode"-*.jsonl | median)
    base=$b16
    [[ $mode == *64 ]] && base=$b64
    awk -v m="$mode" -v e="$e2e" -v b="$base" -v p="$p99" -v i="$idle" 'BEGIN {
        printf "%-10s e2e %6.0f runs/s = %.2fx BullMQ | POST p99 %.1f ms at 1,000/s | idle p50 %.2f ms\n", m, e, e / b, p, i }'
done
echo "logs: $out"
