//! Load benchmark of real agentq processes: `agentq serve` on the embedded SQLite default,
//! or on PostgreSQL (`DB=postgres`, the server at `DATABASE_URL`), optionally as one
//! `agentq api` process plus `WORKERS` separate `agentq worker` processes.
//!
//! `scripts/bench.sh` (or `cargo bench --bench load`) runs it against the release binary.
//! Under `cargo test` it runs one small smoke pass instead, so the suite keeps it working.
//! Each pass starts fresh processes on a fresh database (a new file, or a new PostgreSQL
//! schema) and measures, over HTTP on loopback:
//! - e2e: N no-op `echo` runs, from the first POST to the last `succeeded` (finished_at);
//! - post: POST latency at a fixed offered rate (open loop: latency counts from the
//!   scheduled send time, so a stalled server cannot hide queued requests);
//! - idle: POST → `succeeded` seen by a client polling GET, one run at a time;
//! - live events: from an event's commit (`at`) to its arrival at a client following the
//!   run's `text/event-stream` (runs with 5 progress steps, one at a time);
//! - peak RSS of the server process (VmHWM);
//! - with `BACKLOG=n`: n runs queued while no worker runs, then the time the workers take
//!   to drain them;
//! - with `RECOVERY=1`: one of three worker processes killed with SIGKILL under load, and
//!   the time until the last of its runs started again elsewhere (`--lease` is `LEASE`);
//! - with `KEYS=n` (and nothing else): what concurrency keys cost. `RUNS` runs queued
//!   through an `api` process, then drained by `max(WORKERS, 1)` worker processes, twice
//!   per pass in alternating order: without keys, and spread over n keys
//!   (`concurrency_key` `user:<i mod n>`, limit 1, so with RUNS = 2n every key's second
//!   run waits for its first). Both the POST rate and the drain rate are reported.
//!
//! Prints one JSON line per pass and the medians.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use common::{Database, Process, env_or, free_port, median, pct};

struct Args {
    binary: String,
    passes: usize,
    runs: usize,
    parallel: usize,
    rate: u64,
    rate_secs: u64,
    idle_samples: usize,
    sse_runs: usize,
    concurrency: String,
    /// `sqlite`, or `postgres` (the server at DATABASE_URL).
    db: String,
    /// Separate worker processes beside an `api` process; 0 runs one `serve` process.
    workers: usize,
    backlog: usize,
    recovery: bool,
    lease: String,
    keys: usize,
    full: bool,
}

fn args() -> Args {
    // `cargo bench` passes --bench; `cargo test` does not: then one quick pass
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |n: usize, smoke: usize| if full { n } else { smoke };
    Args {
        // the binary cargo built with this target's profile (release under cargo bench),
        // or another build to compare against (AGENTQ_BIN)
        binary: std::env::var("AGENTQ_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agentq").to_owned()),
        passes: env_or("PASSES", scale(3, 1)),
        runs: env_or("RUNS", scale(20_000, 300)),
        parallel: env_or("PARALLEL", 64),
        rate: env_or("RATE", scale(1000, 100) as u64),
        rate_secs: env_or("RATE_SECS", scale(10, 1) as u64),
        idle_samples: env_or("IDLE_SAMPLES", scale(300, 10)),
        sse_runs: env_or("SSE_RUNS", scale(40, 2)),
        concurrency: env_or("CONCURRENCY", "16".to_owned()),
        db: env_or("DB", "sqlite".to_owned()),
        workers: env_or("WORKERS", 0),
        backlog: env_or("BACKLOG", 0),
        recovery: env_or("RECOVERY", 0) == 1,
        lease: env_or("LEASE", "5s".to_owned()),
        keys: env_or("KEYS", scale(0, 150)),
        full,
    }
}

/// The processes of one pass: `serve`, or `api` plus `workers` worker processes.
struct Server {
    front: Process,
    workers: Vec<Process>,
    base: String,
    db: Database,
}

impl Server {
    async fn start(args: &Args) -> Self {
        let db = Database::new(&args.db).await;
        let mut server = Self::start_on(args, db, args.workers == 0).await;
        server.add_workers(args, args.workers);
        server
    }

    /// The front process on `db`: `serve` (API and workers) or `api` only.
    async fn start_on(args: &Args, db: Database, serve: bool) -> Self {
        let port = free_port();
        let role = if serve { "serve" } else { "api" };
        let front = Process::spawn(
            &args.binary,
            role,
            &db,
            port,
            &["--concurrency", &args.concurrency, "--lease", &args.lease],
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client.get(format!("{base}/readyz")).send().await.is_ok() {
                return Self {
                    front,
                    workers: Vec::new(),
                    base,
                    db,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("agentq did not start");
    }

    fn add_workers(&mut self, args: &Args, n: usize) {
        for _ in 0..n {
            let worker = Process::spawn(
                &args.binary,
                "worker",
                &self.db,
                free_port(),
                &["--concurrency", &args.concurrency, "--lease", &args.lease],
            );
            self.workers.push(worker);
        }
    }

    /// Peak RSS of the largest process.
    fn peak_rss_kib(&self) -> u64 {
        std::iter::once(&self.front)
            .chain(&self.workers)
            .map(Process::peak_rss_kib)
            .max()
            .unwrap_or(0)
    }

    async fn stats(&self) -> (i64, i64) {
        self.db.stats().await
    }

    async fn stop(self) {
        let Self {
            front, workers, db, ..
        } = self;
        drop(workers);
        drop(front);
        db.drop_schema().await;
    }
}

fn body(i: usize) -> Value {
    json!({"agent": "echo", "input": {"value": i}})
}

async fn post(client: &reqwest::Client, base: &str, i: usize) -> Value {
    let response = client
        .post(format!("{base}/v1/runs"))
        .json(&body(i))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

/// N runs through the API as fast as `parallel` connections allow, then until all succeeded.
async fn e2e(server: &Server, args: &Args) -> (f64, f64) {
    let client = reqwest::Client::new();
    let start_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    futures::stream::iter(0..args.runs)
        .map(|i| {
            let client = client.clone();
            let base = server.base.clone();
            async move { post(&client, &base, i).await }
        })
        .buffer_unordered(args.parallel)
        .for_each(|_| async {})
        .await;
    let posted = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, last_finished_ms) = server.stats().await;
        if done as usize == args.runs {
            let secs = (last_finished_ms - start_ms) as f64 / 1000.0;
            return (args.runs as f64 / secs, args.runs as f64 / posted);
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} runs succeeded",
            args.runs
        );
        // the count scans the table: poll gently, the result uses finished_at anyway
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POST latency at a fixed offered rate, open loop.
async fn post_latency(server: &Server, args: &Args) -> (f64, f64, f64) {
    let client = reqwest::Client::new();
    let total = (args.rate * args.rate_secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = t0 + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let client = client.clone();
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            post(&client, &base, i).await;
            due.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 50.0), pct(&lat, 99.0), pct(&lat, 100.0))
}

/// POST → succeeded as a polling client sees it, one run at a time.
async fn idle_latency(server: &Server, args: &Args) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(args.idle_samples);
    for i in 0..args.idle_samples + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        let run = post(&client, &server.base, i).await;
        let url = format!("{}/v1/runs/{}", server.base, run["id"].as_str().unwrap());
        loop {
            let run: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            if run["status"] == "succeeded" {
                break;
            }
        }
        if i >= 20 {
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 50.0), pct(&lat, 99.0))
}

/// Event commit → arrival at a client following the run's event stream.
async fn sse_latency(server: &Server, args: &Args) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut lat = Vec::new();
    for i in 0..args.sse_runs {
        let body = json!({"agent": "echo", "input": {"value": i, "steps": 5, "delay_ms": 100}});
        let response = client
            .post(format!("{}/v1/runs", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let run: Value = response.json().await.unwrap();
        let url = format!(
            "{}/v1/runs/{}/events",
            server.base,
            run["id"].as_str().unwrap()
        );
        let connected = chrono::Utc::now();
        let response = client
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = stream.next().await {
            let received = chrono::Utc::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                let at: chrono::DateTime<chrono::Utc> =
                    event["at"].as_str().unwrap().parse().unwrap();
                // events from before the client connected are replays, not live deliveries
                if at >= connected {
                    lat.push((received - at).num_microseconds().unwrap() as f64 / 1000.0);
                }
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 50.0), pct(&lat, 99.0))
}

/// POSTs `n` runs with `parallel` requests in flight.
async fn submit(base: &str, n: usize, parallel: usize, body: impl Fn(usize) -> Value) {
    let client = reqwest::Client::new();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/v1/runs");
            let body = body(i);
            async move {
                let response = client.post(url).json(&body).send().await.expect("POST");
                assert_eq!(response.status(), 202);
            }
        })
        .buffer_unordered(parallel)
        .for_each(|_| async {})
        .await;
}

/// Waits until `n` runs succeeded; returns the latest finished_at (ms).
async fn until_succeeded(db: &Database, n: usize, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let (done, last_finished_ms) = db.stats().await;
        if done as usize >= n {
            return last_finished_ms;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} runs succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `args.backlog` runs queued through an `api` process with no worker running, then the
/// workers start: seconds until the last one succeeded, and runs/s.
async fn backlog(args: &Args) -> (f64, f64) {
    let db = Database::new(&args.db).await;
    let mut server = Server::start_on(args, db, false).await;
    submit(&server.base, args.backlog, args.parallel, body).await;
    let start_ms = chrono::Utc::now().timestamp_millis();
    server.add_workers(args, args.workers.max(1));
    let last_ms = until_succeeded(&server.db, args.backlog, Duration::from_secs(1800)).await;
    server.stop().await;
    let secs = (last_ms - start_ms) as f64 / 1000.0;
    (secs, args.backlog as f64 / secs)
}

/// `args.runs` runs queued through an `api` process with no worker running (over
/// `keys` concurrency keys, or none), then drained by the workers: (POST runs/s, drain
/// runs/s).
async fn drain(args: &Args, keys: Option<usize>) -> (f64, f64) {
    let db = Database::new(&args.db).await;
    let mut server = Server::start_on(args, db, false).await;
    let body = |i: usize| match keys {
        Some(n) => json!({"agent": "echo", "input": {"value": i},
                          "concurrency_key": format!("user:{}", i % n)}),
        None => body(i),
    };
    let posting = Instant::now();
    submit(&server.base, args.runs, args.parallel, body).await;
    let post_rps = args.runs as f64 / posting.elapsed().as_secs_f64();
    let start_ms = chrono::Utc::now().timestamp_millis();
    server.add_workers(args, args.workers.max(1));
    let last_ms = until_succeeded(&server.db, args.runs, Duration::from_secs(1800)).await;
    if keys.is_some() {
        // every run of a key started after the one before it finished
        let overlapping = server
            .db
            .pair(
                "SELECT COUNT(*), 0 FROM runs a JOIN runs b \
                 ON b.tenant = a.tenant AND b.concurrency_key = a.concurrency_key AND b.id > a.id \
                 WHERE a.concurrency_key IS NOT NULL AND b.concurrency_key IS NOT NULL \
                   AND b.started_at < a.finished_at",
            )
            .await
            .0;
        assert_eq!(overlapping, 0, "runs of one key overlapped");
    }
    server.stop().await;
    (
        post_rps,
        args.runs as f64 / ((last_ms - start_ms) as f64 / 1000.0),
    )
}

/// One pass of `KEYS`: the drain without keys and over `args.keys` keys, which first
/// alternating by pass.
async fn keys_pass(args: &Args, pass: usize) -> Value {
    let mut plain = (0.0, 0.0);
    let mut keyed = (0.0, 0.0);
    for with_keys in [pass.is_multiple_of(2), !pass.is_multiple_of(2)] {
        if with_keys {
            keyed = drain(args, Some(args.keys)).await;
        } else {
            plain = drain(args, None).await;
        }
    }
    json!({
        "pass": pass, "db": args.db, "workers": args.workers.max(1), "runs": args.runs,
        "keys": args.keys, "concurrency": args.concurrency,
        "plain_post_runs_per_s": plain.0.round(), "keyed_post_runs_per_s": keyed.0.round(),
        "plain_drain_runs_per_s": plain.1.round(), "keyed_drain_runs_per_s": keyed.1.round(),
        "drain_ratio": keyed.1 / plain.1, "post_ratio": keyed.0 / plain.0,
    })
}

/// Kills one of three worker processes (SIGKILL) while they run 1 s runs; returns the
/// seconds from the kill until the last of its runs started again elsewhere.
async fn recovery(args: &Args) -> f64 {
    let db = Database::new(&args.db).await;
    let mut server = Server::start_on(args, db, false).await;
    server.add_workers(args, 3);
    let runs = 200;
    let slow = |i: usize| json!({"agent": "echo", "input": {"value": i, "delay_ms": 1000}});
    submit(&server.base, runs, args.parallel, slow).await;
    let victim = server.workers.remove(1);
    let pid = victim.child.id();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed: Value = client
            .get(format!("{}/v1/workers", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let busy = listed["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["pid"] == pid && w["running"].as_u64().unwrap_or(0) > 0);
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never ran anything");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_ms = chrono::Utc::now().timestamp_millis();
    drop(victim);
    until_succeeded(&server.db, runs, Duration::from_secs(300)).await;
    let (lost, restarted_ms) = server
        .db
        .pair(
            "SELECT COUNT(DISTINCT run_id), COALESCE(MAX(at), 0) FROM run_events \
             WHERE type = 'started' AND run_id IN \
                 (SELECT run_id FROM run_events WHERE type = 'attempt_lost')",
        )
        .await;
    server.stop().await;
    assert!(lost > 0, "the killed worker held runs");
    (restarted_ms - killed_ms) as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = args();
    if args.keys > 0 {
        let mut results = Vec::new();
        for pass in 1..=args.passes {
            let result = keys_pass(&args, pass).await;
            println!("{result}");
            results.push(result);
        }
        let metric = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
        println!(
            "medians over {} passes ({}, api + {} workers, {} runs): drain without keys {:.0} runs/s, over {} keys {:.0} runs/s (ratio {:.2}) | POST without keys {:.0}/s, with {:.0}/s (ratio {:.2})",
            args.passes,
            args.db,
            args.workers.max(1),
            args.runs,
            metric("plain_drain_runs_per_s"),
            args.keys,
            metric("keyed_drain_runs_per_s"),
            metric("drain_ratio"),
            metric("plain_post_runs_per_s"),
            metric("keyed_post_runs_per_s"),
            metric("post_ratio"),
        );
        if args.full {
            return;
        }
    }
    let mut results: Vec<Value> = Vec::new();
    for pass in 1..=args.passes {
        let server = Server::start(&args).await;
        let (idle_p50, idle_p99) = idle_latency(&server, &args).await;
        let (post_p50, post_p99, post_max) = post_latency(&server, &args).await;
        let (sse_p50, sse_p99) = sse_latency(&server, &args).await;
        server.stop().await;
        let server = Server::start(&args).await;
        let (e2e_rps, post_rps) = e2e(&server, &args).await;
        let rss_mib = server.peak_rss_kib() as f64 / 1024.0;
        server.stop().await;
        let mut result = json!({
            "pass": pass, "db": args.db, "workers": args.workers,
            "runs": args.runs, "parallel": args.parallel, "concurrency": args.concurrency,
            "e2e_runs_per_s": e2e_rps.round(), "post_runs_per_s": post_rps.round(),
            "post_p50_ms": post_p50, "post_p99_ms": post_p99, "post_max_ms": post_max, "offered_rate": args.rate,
            "idle_p50_ms": idle_p50, "idle_p99_ms": idle_p99, "peak_rss_mib": rss_mib,
            "sse_p50_ms": sse_p50, "sse_p99_ms": sse_p99,
        });
        if args.backlog > 0 {
            let (secs, rate) = backlog(&args).await;
            result["backlog"] = json!(args.backlog);
            result["backlog_drain_s"] = json!(secs);
            result["backlog_runs_per_s"] = json!(rate.round());
        }
        if args.recovery {
            result["lease"] = json!(args.lease);
            result["recovery_s"] = json!(recovery(&args).await);
        }
        println!("{result}");
        results.push(result);
    }
    let metric = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
    println!(
        "medians over {} passes ({}, {}): e2e {:.0} runs/s (POST phase {:.0}/s) | POST p50 {:.2} ms p99 {:.2} ms at {}/s | idle POST->succeeded p50 {:.2} ms p99 {:.2} ms | live event p50 {:.2} ms p99 {:.2} ms | peak RSS {:.1} MiB",
        args.passes,
        args.db,
        if args.workers == 0 {
            "one serve process".to_owned()
        } else {
            format!("api + {} workers", args.workers)
        },
        metric("e2e_runs_per_s"),
        metric("post_runs_per_s"),
        metric("post_p50_ms"),
        metric("post_p99_ms"),
        args.rate,
        metric("idle_p50_ms"),
        metric("idle_p99_ms"),
        metric("sse_p50_ms"),
        metric("sse_p99_ms"),
        metric("peak_rss_mib"),
    );
    if args.backlog > 0 {
        println!(
            "backlog of {}: drained in {:.1} s ({:.0} runs/s)",
            args.backlog,
            metric("backlog_drain_s"),
            metric("backlog_runs_per_s")
        );
    }
    if args.recovery {
        println!(
            "kill -9 of one of three workers, --lease {}: its runs restarted within {:.2} s",
            args.lease,
            metric("recovery_s")
        );
    }
}
