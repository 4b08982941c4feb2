#!/usr/bin/env bash
# The edges of one `agentq serve`: what it costs in open files, memory and CPU to hold
# many clients that do little, or send a lot. The hardening issue asks for these figures
# before and after its fixes ("fds, RSS and CPU for 20,000 idle connections, 100 concurrent
# 1 MB POSTs, and 2,000 SSE clients"); scripts/bench-edges.mjs drives the three scenarios:
#   idle   CONNS TCP connections that send nothing, a tenth of them half a request head;
#          a fresh GET /healthz among them; how many the server closes, and when
#   posts  POSTS concurrent POST /v1/runs of POST_BYTES each (an echo input of ~80,000 keys,
#          which echo's schema refuses: 422 once parsed; POST_INPUT=value nests them in
#          input.value, accepted and stored: 202); peak RSS during the burst, RSS 5 s after,
#          the answers' statuses (past --max-inflight-bytes most are 503 too_busy: the
#          scenario then measures the budget)
#   sse    SSE runs waiting for a signal that never comes, each followed by an event
#          stream (GET /v1/runs/{id}/events): the streams' CPU and RSS per client
# For each: the server's fds (/proc/PID/fd), RSS and peak (VmRSS, VmHWM, the peak reset at
# each scenario's start), CPU in cores over the scenario's window, and its own facts; one
# table line and one `RESULT {json}` line each. A scenario that fails says so in its line.
# The scenarios share one server, so a later one starts with the heap an earlier one left
# (RSS rarely shrinks): run one alone (SCENARIOS=sse) for its RSS from a fresh server.
#   scripts/bench-edges.sh                      # SQLite, release build (debug if missing)
#   DB=postgres DATABASE_URL=postgres://… scripts/bench-edges.sh   # a throwaway database: the
#                                               # runs it makes (2,000 waiting) stay there
#   CONNS=2000 SSE=200 POSTS=20 IDLE_WAIT_SECS=15 scripts/bench-edges.sh
#   SCENARIOS=posts POST_INPUT=value AGENTQ_BIN=target/debug/agentq scripts/bench-edges.sh
# Knobs (env): CONNS (20000), POSTS (100), POST_BYTES (870000), POST_INPUT (keys), SSE
# (2000), WINDOW_SECS (10), IDLE_WAIT_SECS (65: the idle connections' second count of
# closes), OPEN_SECS (60: at most this long opening the idle connections), SCENARIOS
# (idle,posts,sse), DB (sqlite; postgres: the server uses DATABASE_URL), NOFILE (the
# open-file limit of the server and the client; by default the hard limit), AGENTQ_BIN
# (default target/release/agentq, else target/debug/agentq; never built here). CPU
# figures of a debug build mean little.
# Needs Node.js 20 (no packages) and curl. The default run takes about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

# the server and the client inherit this; 20,000 idle connections need more than 1,024
# (the client spreads them over as many processes as its limit needs)
if [[ -n ${NOFILE:-} ]]; then
    ulimit -n "$NOFILE"
else
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
limit=$(ulimit -n)

if [[ -n ${AGENTQ_BIN:-} ]]; then
    bin=$AGENTQ_BIN
elif [[ -x target/release/agentq ]]; then
    bin=target/release/agentq
else
    bin=target/debug/agentq
fi
[[ -x $bin ]] || {
    echo "bench-edges.sh: no executable at $bin (cargo build --release, or set AGENTQ_BIN)" >&2
    exit 1
}

db=${DB:-sqlite}
work=$(mktemp -d)
case $db in
sqlite) url="sqlite://$work/agentq.db" ;;
postgres | pg)
    db=postgres
    url=${DATABASE_URL:?bench-edges.sh: DB=postgres needs DATABASE_URL}
    ;;
*)
    echo "bench-edges.sh: DB=$db: sqlite or postgres" >&2
    exit 1
    ;;
esac

server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        # a server that does not stop within its shutdown timeout is killed
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => {
  console.log(s.address().port); s.close(); });')
base="http://127.0.0.1:$port"
"$bin" serve --listen "127.0.0.1:$port" --database-url "$url" >"$work/server.log" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 1 600); do
    if curl -sf -o /dev/null --max-time 2 "$base/healthz"; then
        ready=1
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $ready ]]; then
    echo "bench-edges.sh: the server did not answer /healthz; its log:" >&2
    tail -30 "$work/server.log" >&2
    exit 1
fi

mkdir -p bench-results
out="bench-results/bench-edges-$db-$(date -u +%Y%m%dT%H%M%SZ).log"
note=""
[[ $(realpath "$bin") == */debug/* ]] && note=" (a debug build: its CPU figures mean little)"
{
    echo "bench-edges.sh: $("$bin" --version 2>/dev/null || echo "$bin") at $bin$note"
    echo "  $db, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, open-file limit $limit (ulimit -n)"
    BASE=$base SERVER_PID=$server_pid SERVER_LOG=$work/server.log CLK_TCK=$(getconf CLK_TCK) \
        node scripts/bench-edges.mjs || echo "bench-edges.sh: the driver failed (exit $?)"
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bench-edges.sh: the server exited during the run; its log's end:"
        tail -20 "$work/server.log"
    fi
} 2>&1 | tee "$out"
echo "log: $out"
