#!/usr/bin/env bash
# agentq against the stack a Node team builds for this job (../shared/peers/bullmq-stack:
# fastify + BullMQ + a PostgreSQL runs table), side by side on this machine with the same
# load driver (its load.js): PASSES rounds of peer, agentq PostgreSQL + Redis, agentq
# PostgreSQL, agentq SQLite, one pass each, alternating; then medians, ranges and the
# agentq/peer ratios (its summarize.js). 20,000 no-op runs, 64 POSTs in flight, worker
# concurrency 16, plus idle POST -> succeeded.
#   scripts/bench-peers.sh               # 3 passes
#   PASSES=5 AGENTQ_BIN=/path/to/agentq scripts/bench-peers.sh
# The peer is copied to a temporary directory (../shared is read-only) and its pinned
# packages installed there with npm. Needs Node.js, npm, psql and redis-cli, PostgreSQL at
# 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379 (databases 6 and 9), as
# the peer's scripts expect.
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${PEER_STACK_DIR:-../shared/peers/bullmq-stack}
if [[ -n ${AGENTQ_BIN:-} ]]; then
    bin=$AGENTQ_BIN
    [[ -x $bin ]] || { echo "bench-peers.sh: AGENTQ_BIN=$bin is not an executable" >&2; exit 1; }
else
    cargo build --release --locked
    bin=target/release/agentq
fi
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$peer"/. "$work/"
rm -rf "$work/results" "$work/node_modules"
# `npm ci` trips over npm 11 and msgpackr-extract's optional dependencies (the peer's README)
(cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p bench-results
log=${PEERS_LOG:-bench-results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
echo "bench-peers.sh: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$bin" --version)"
(cd "$work" && PASSES=${PASSES:-3} AGENTQ_BIN=$bin ./compare.sh) 2>&1 | tee "$log.log"
# the passes' JSON lines, kept beside the log (the copy of the peer goes)
cat "$work"/results/*.jsonl >"$log.jsonl"
echo "bench-peers.sh: passes in $log.jsonl"
