#!/usr/bin/env bash
# What one run costs the database, end to end (POST, claim, the echo agent, success), on
# one `agentq serve` (table claims, --concurrency 16):
#   PostgreSQL: a private server started here with pg_stat_statements loaded; per run, the
#     statements executed (all, and the most frequent), WAL records and bytes
#     (pg_stat_wal), rows inserted, updated and deleted (pg_stat_database).
#   SQLite: bytes the process wrote to storage (/proc/PID/io write_bytes: the database
#     file, its WAL and checkpoints) and those in 4 KiB pages.
# The background writes of an idle process (heartbeats, sweeps) over as long are measured
# first and taken off, so the figures are the runs' own.
#   scripts/bench-cost.sh                 # 2,000 runs on each
#   RUNS=5000 DBS=postgres scripts/bench-cost.sh
#   PARALLEL=1 RUNS=300 scripts/bench-cost.sh   # one run at a time: no batching in the writer
# Knobs (env): RUNS (2000), DBS ("sqlite postgres"), PARALLEL (16 POSTs in flight),
# AGENTQ_BIN (default target/release/agentq, built with `cargo build --release` if missing).
# Needs python3 and PostgreSQL's binaries (installed with apt-get when missing, as the tests'
# servers are).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

runs=${RUNS:-2000}
dbs=${DBS:-sqlite postgres}
parallel=${PARALLEL:-16}
bin=${AGENTQ_BIN:-target/release/agentq}
if [[ ! -x $bin ]]; then
    [[ -z ${AGENTQ_BIN:-} ]] || { echo "bench-cost.sh: AGENTQ_BIN=$bin is not an executable" >&2; exit 1; }
    cargo build --release --locked
fi
# on disk (target/), not in /tmp: a tmpfs has no write-back to count
mkdir -p target
work=$(mktemp -d "$PWD/target/bench-cost.XXXXXX")
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; servers_cleanup; rm -rf "$work"' EXIT

# POSTs $1 echo runs to $2 and waits until every one succeeded
drive() {
    python3 - "$2" "$1" "$parallel" <<'PY'
import concurrent.futures, json, sys, time, urllib.request
base, n, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = json.load(urllib.request.urlopen(base + "/v1/runs/counts"))["total"]  # earlier runs, all done
def post(i):
    body = json.dumps({"agent": "echo", "input": {"value": i}}).encode()
    req = urllib.request.Request(base + "/v1/runs", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    list(pool.map(post, range(n)))
deadline = time.time() + 600
while True:
    counts = json.load(urllib.request.urlopen(base + "/v1/runs/counts"))
    done = counts["by_status"]["succeeded"]
    if done >= before + n:
        break
    assert time.time() < deadline, f"only {done - before} of {n} runs succeeded in 10 min: {counts}"
    time.sleep(0.1)
PY
}

start_server() { # database URL
    local port
    port=$(_servers_free_port)
    "$bin" serve --listen "127.0.0.1:$port" --database-url "$1" >"$work/server.log" 2>&1 &
    server_pid=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 200); do
        curl -sf "$base/readyz" >/dev/null && return 0
        sleep 0.05
    done
    echo "bench-cost.sh: the server did not become ready; its log:" >&2
    tail -20 "$work/server.log" >&2
    exit 1
}

per_run() { python3 -c "import sys; print(f'{($1) / $runs:.2f}')"; }

sqlite_cost() {
    start_server "sqlite://$work/cost.db?mode=rwc"
    drive 20 "$base" # warm up: first writes grow the file
    sleep 1
    local t0 w0 w1 idle t1 w2
    w0=$(awk '/^write_bytes/ {print $2}' "/proc/$server_pid/io")
    t0=$(date +%s.%N)
    drive "$runs" "$base"
    sleep 1
    w1=$(awk '/^write_bytes/ {print $2}' "/proc/$server_pid/io")
    t1=$(date +%s.%N)
    # the idle process over as long
    sleep "$(python3 -c "print($t1 - $t0)")"
    w2=$(awk '/^write_bytes/ {print $2}' "/proc/$server_pid/io")
    idle=$((w2 - w1))
    stop_server
    local own=$((w1 - w0 - idle))
    echo "SQLite, $runs runs: $(per_run "$own") bytes written per run ($(per_run "$own / 4096") pages of 4 KiB); the idle process wrote $idle bytes over as long"
}

pg_query() { "$AGENTQ_PG_BIN/psql" -X -At -q "$DATABASE_URL_COST" -c "$1"; }

postgres_cost() {
    _servers_ensure_pg_bin
    AGENTQ_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
        _servers_start_postgres >/dev/null
    local db=${DATABASE_URL%/*}/agentq_cost
    "$AGENTQ_PG_BIN/psql" -X -q "$DATABASE_URL" -c "CREATE DATABASE agentq_cost" -c "CREATE EXTENSION pg_stat_statements"
    DATABASE_URL_COST=$DATABASE_URL
    start_server "$db"
    drive 20 "$base"
    sleep 11
    local snapshot="SELECT (SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'agentq_cost'),
                           wal_records, wal_bytes, tup_inserted, tup_updated, tup_deleted
                    FROM pg_stat_wal, pg_stat_database WHERE datname = 'agentq_cost'"
    pg_query "SELECT pg_stat_statements_reset()" >/dev/null
    local s0 s1 s2 t0 t1
    s0=$(pg_query "$snapshot")
    t0=$(date +%s.%N)
    drive "$runs" "$base"
    sleep 11 # an idle backend holds its counts up to 10 s before it reports them
    s1=$(pg_query "$snapshot")
    t1=$(date +%s.%N)
    "$AGENTQ_PG_BIN/psql" -X -At -q "$DATABASE_URL" -c "\\copy (SELECT calls, regexp_replace(left(query, 110), '\\s+', ' ', 'g') FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'agentq_cost' ORDER BY calls DESC LIMIT 12) TO '$work/top.tsv'"
    sleep "$(python3 -c "print($t1 - $t0 - 11)")"
    sleep 11
    s2=$(pg_query "$snapshot")
    stop_server
    python3 - "$runs" "$s0" "$s1" "$s2" "$work/top.tsv" <<'PY'
import sys
runs = int(sys.argv[1])
s0, s1, s2 = ([int(x) for x in s.split("|")] for s in sys.argv[2:5])
names = ["statements", "WAL records", "WAL bytes", "rows inserted", "rows updated", "rows deleted"]
print(f"PostgreSQL, {runs} runs, per run (the idle process's share over as long taken off):")
for i, name in enumerate(names):
    # the idle share is an estimate: a run's own count is never below 0
    own = max(0, (s1[i] - s0[i]) - (s2[i] - s1[i]))
    print(f"  {name:14} {own / runs:10.2f}   (idle over as long: {s2[i] - s1[i]})")
print("  the most frequent statements (calls per run):")
for line in open(sys.argv[5]):
    calls, query = line.rstrip("\n").split("\t", 1)
    print(f"  {int(calls) / runs:8.2f}  {query}")
PY
}

echo "bench-cost.sh: $runs runs, $parallel POSTs in flight, $("$bin" --version 2>/dev/null || echo "$bin"), $(date -u +%Y-%m-%dT%H:%MZ)"
for db in $dbs; do
    case $db in
        sqlite) sqlite_cost ;;
        postgres) postgres_cost ;;
        *) echo "bench-cost.sh: unknown database $db (sqlite, postgres)" >&2; exit 1 ;;
    esac
done
