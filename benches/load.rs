//! Load benchmark of a real `agentq serve` process on the embedded SQLite default.
//!
//! `scripts/bench.sh` (or `cargo bench --bench load`) runs it against the release binary.
//! Under `cargo test` it runs one small smoke pass instead, so the suite keeps it working.
//! Each pass starts a fresh process on a fresh database and measures, over HTTP on loopback:
//! - e2e: N no-op `echo` runs, from the first POST to the last `succeeded` (finished_at);
//! - post: POST latency at a fixed offered rate (open loop: latency counts from the
//!   scheduled send time, so a stalled server cannot hide queued requests);
//! - idle: POST → `succeeded` seen by a client polling GET, one run at a time;
//! - live events: from an event's commit (`at`) to its arrival at a client following the
//!   run's `text/event-stream` (runs with 5 progress steps, one at a time);
//! - peak RSS of the server process (VmHWM).
//!
//! Prints one JSON line per pass and the medians.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;

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
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    }
}

struct Server {
    child: Child,
    base: String,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(args: &Args) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(&args.binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .args(["--concurrency", &args.concurrency])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("agentq starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client.get(format!("{base}/readyz")).send().await.is_ok() {
                return Self {
                    child,
                    base,
                    db,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("agentq did not start");
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    async fn stats(&self) -> (i64, i64) {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", self.db.display()))
                .await
                .unwrap();
        sqlx::query_as(
            "SELECT COUNT(*), COALESCE(MAX(finished_at), 0) FROM runs WHERE status = 'succeeded'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        tokio::time::sleep(Duration::from_millis(20)).await;
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

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut results: Vec<Value> = Vec::new();
    for pass in 1..=args.passes {
        let server = Server::start(&args).await;
        let (idle_p50, idle_p99) = idle_latency(&server, &args).await;
        let (post_p50, post_p99, post_max) = post_latency(&server, &args).await;
        let (sse_p50, sse_p99) = sse_latency(&server, &args).await;
        drop(server);
        let server = Server::start(&args).await;
        let (e2e_rps, post_rps) = e2e(&server, &args).await;
        let rss_mib = server.peak_rss_kib() as f64 / 1024.0;
        let result = json!({
            "pass": pass, "runs": args.runs, "parallel": args.parallel, "concurrency": args.concurrency,
            "e2e_runs_per_s": e2e_rps.round(), "post_runs_per_s": post_rps.round(),
            "post_p50_ms": post_p50, "post_p99_ms": post_p99, "post_max_ms": post_max, "offered_rate": args.rate,
            "idle_p50_ms": idle_p50, "idle_p99_ms": idle_p99, "peak_rss_mib": rss_mib,
            "sse_p50_ms": sse_p50, "sse_p99_ms": sse_p99,
        });
        println!("{result}");
        results.push(result);
    }
    let metric = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
    println!(
        "medians over {} passes: e2e {:.0} runs/s (POST phase {:.0}/s) | POST p50 {:.2} ms p99 {:.2} ms at {}/s | idle POST->succeeded p50 {:.2} ms p99 {:.2} ms | live event p50 {:.2} ms p99 {:.2} ms | peak RSS {:.1} MiB",
        args.passes,
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
}
