#!/usr/bin/env bash
# Leases at agent scale: RUNS long-running runs (echo, an hour's delay_ms) executing at once
# on one `agentq serve` (--concurrency RUNS) over a private PostgreSQL started here. Once
# they all run, it measures over WINDOW seconds the CPU of agentq and of PostgreSQL (every
# process of the server), agentq's RSS, and the rows PostgreSQL updated and the WAL it
# wrote: what keeping that many attempts alive costs. Then it kills agentq with SIGKILL,
# starts another, and waits until every run was taken back (one attempt_lost each) and is
# running again in its second attempt: none lost, none doubled.
#   scripts/bench-leases.sh                       # 100,000 runs, a 30 s window
#   RUNS=20000 WINDOW=10 scripts/bench-leases.sh
# Knobs (env): RUNS, WINDOW, LEASE (15s), AGENTQ_BIN (default target/release/agentq, built
# with `cargo build --release` if missing). Needs python3, curl and PostgreSQL's binaries
# (installed with apt-get when missing, as the tests' servers are).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

runs=${RUNS:-100000}
window=${WINDOW:-30}
lease=${LEASE:-15s}
if [[ -n ${AGENTQ_BIN:-} ]]; then
    bin=$AGENTQ_BIN
    [[ -x $bin ]] || { echo "bench-leases.sh: AGENTQ_BIN=$bin is not an executable" >&2; exit 1; }
else
    cargo build --release --locked
    bin=target/release/agentq
fi
work=$(mktemp -d)
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; servers_cleanup; rm -rf "$work"' EXIT

_servers_ensure_pg_bin
_servers_start_postgres >/dev/null
"$AGENTQ_PG_BIN/psql" -X -q "$DATABASE_URL" -c "CREATE DATABASE agentq_leases"
db=${DATABASE_URL%/*}/agentq_leases
pg_query() { "$AGENTQ_PG_BIN/psql" -X -At -q "$db" -c "$1"; }
postmaster=$(head -1 "$_SERVERS_PG_DATA/postmaster.pid")

start_server() {
    local port
    port=$(_servers_free_port)
    "$bin" serve --listen "127.0.0.1:$port" --database-url "$db" --concurrency "$runs" \
        --lease "$lease" >>"$work/server.log" 2>&1 &
    server_pid=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        curl -sf "$base/readyz" >/dev/null && return 0
        sleep 0.05
    done
    echo "bench-leases.sh: the server did not become ready; its log:" >&2
    tail -20 "$work/server.log" >&2
    exit 1
}

# CPU seconds (user + system) of these processes and of their children that ended
cpu() { python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    except FileNotFoundError:
        pass
print(total / tick)
PY
}
# the server's processes; backends that ended count in the postmaster's children's time
pg_pids() { echo "$postmaster" "$(pgrep -d ' ' -P "$postmaster" || true)"; }
# waits until $1 runs are running in attempt $2 (at most $3 s); prints the seconds taken
wait_running() {
    local t0=$SECONDS
    while true; do
        local n
        n=$(pg_query "SELECT count(*) FROM runs WHERE status = 'running' AND attempt = $2")
        [[ $n -ge $1 ]] && break
        if ((SECONDS - t0 > $3)); then
            echo "bench-leases.sh: only $n of $1 runs running in attempt $2 after $3 s" >&2
            pg_query "SELECT status, attempt, count(*) FROM runs GROUP BY 1, 2" >&2
            tail -20 "$work/server.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo $((SECONDS - t0))
}

echo "bench-leases.sh: $runs runs, --lease $lease, $("$bin" --version 2>/dev/null || echo "$bin"), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
start_server
python3 - "$base" "$runs" <<'PY'
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
run = {"agent": "echo", "input": {"value": 0, "steps": 1, "delay_ms": 3_600_000}, "timeout_ms": 7_200_000}
for start in range(0, n, 1000):
    body = json.dumps({"runs": [run] * min(1000, n - start)}).encode()
    req = urllib.request.Request(base + "/v1/runs/batch", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
PY
took=$(wait_running "$runs" 1 900)
echo "all $runs running after ${took}s; settling 5 s"
sleep 5
snapshot="SELECT tup_updated, (SELECT wal_bytes FROM pg_stat_wal) FROM pg_stat_database WHERE datname = 'agentq_leases'"
read -r u0 w0 < <(pg_query "$snapshot" | tr '|' ' ')
a0=$(cpu "$server_pid")
# shellcheck disable=SC2046 # one word per process id
p0=$(cpu $(pg_pids))
sleep "$window"
a1=$(cpu "$server_pid")
# shellcheck disable=SC2046
p1=$(cpu $(pg_pids))
sleep 11 # an idle backend holds its counts up to 10 s before it reports them
read -r u1 w1 < <(pg_query "$snapshot" | tr '|' ' ')
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status")
python3 - "$window" "$a0" "$a1" "$p0" "$p1" "$u0" "$u1" "$w0" "$w1" "$rss" <<'PY'
import sys
window, a0, a1, p0, p1 = (float(x) for x in sys.argv[1:6])
u0, u1, w0, w1, rss = (int(x) for x in sys.argv[6:11])
print(f"over {window:.0f} s with every run executing (the 11 s after it counted in rows and WAL):")
print(f"  agentq: {(a1 - a0) / window:.3f} cores, RSS {rss / 1024:.0f} MiB")
print(f"  PostgreSQL: {(p1 - p0) / window:.3f} cores")
print(f"  rows updated: {(u1 - u0) / (window + 11):.0f}/s, WAL {(w1 - w0) / (window + 11) / 1024:.1f} KiB/s")
PY
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
echo "killed agentq (SIGKILL); starting another"
start_server
took=$(wait_running "$runs" 2 900)
lost=$(pg_query "SELECT count(*) FROM run_events WHERE type = 'attempt_lost'")
other=$(pg_query "SELECT count(*) FROM runs WHERE NOT (status = 'running' AND attempt = 2)")
echo "every run running again in attempt 2 ${took}s after the kill; attempt_lost events: $lost; runs in another state: $other"
[[ $lost -eq $runs && $other -eq 0 ]] || { echo "bench-leases.sh: a run was lost or doubled" >&2; exit 1; }
