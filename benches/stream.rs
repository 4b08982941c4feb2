//! Output stream benchmark: `RUNS` concurrent `echo` runs, each streaming its text word by
//! word at `RATE` deltas a second for `SECS` seconds, on one `agentq serve` (SQLite, or
//! PostgreSQL with `DB=postgres`, the server at `DATABASE_URL`), each followed live by a
//! client of its own on the run's event stream (`GET /v1/runs/{id}/events`, whose `stream`
//! events are the parts `GET /v1/runs/{id}/stream` serves).
//!
//! `scripts/bench-stream.sh` (or `cargo bench --bench stream`) runs it against the release
//! binary; under `cargo test` it runs one small smoke pass. Per pass, fresh processes and a
//! fresh database; measured:
//! - delivery: every run's streamed text, as its follower received it, equals its input
//!   (a delta lost, repeated or out of order fails the pass), and the deltas delivered;
//! - commit → client: from a part's event time (`at`, taken in its writer batch before the
//!   commit, so the batch's own time is counted too) to its arrival at the follower;
//! - the writer's transactions per second while the runs stream (`agentq_writer_transactions_total`);
//! - the server's peak RSS (VmHWM).
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
    secs: u64,
    rate: u64,
    db: String,
    big_input: bool,
}

fn args() -> Args {
    // `cargo bench` passes --bench; `cargo test` does not: then one quick pass
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |n: usize, smoke: usize| if full { n } else { smoke };
    Args {
        binary: std::env::var("AGENTQ_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agentq").to_owned()),
        passes: env_or("PASSES", scale(3, 1)),
        runs: env_or("RUNS", scale(1000, 20)),
        secs: env_or("SECS", scale(20, 2) as u64),
        rate: env_or("RATE", 50),
        db: env_or("DB", "sqlite".to_owned()),
        big_input: env_or("BIG_INPUT", 0) == 1,
    }
}

/// The words each run's input holds: its text is them `repeat`ed, `secs × rate` words in
/// all, so one delta a word. With `BIG_INPUT=1` the input holds every word instead (a
/// bigger row to rewrite with each append).
fn input_text(args: &Args, run: usize) -> (String, u64) {
    let words = args.secs * args.rate;
    let (distinct, repeat) = if args.big_input {
        (words, 1)
    } else {
        (10, words / 10)
    };
    let text = (0..distinct).map(|w| format!("r{run}w{w} ")).collect();
    (text, repeat)
}

/// The text each run streams.
fn text(args: &Args, run: usize) -> String {
    let (text, repeat) = input_text(args, run);
    text.repeat(repeat as usize)
}

/// What one follower saw.
struct Followed {
    text: String,
    deltas: usize,
    /// Commit → arrival of each part, ms.
    latencies: Vec<f64>,
}

/// Follows one run's event stream to its end, collecting its `stream` parts.
async fn follow(client: reqwest::Client, base: String, id: String) -> Followed {
    let response = client
        .get(format!("{base}/v1/runs/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("the events stream opens");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut followed = Followed {
        text: String::new(),
        deltas: 0,
        latencies: Vec::new(),
    };
    while let Some(chunk) = stream.next().await {
        let received = chrono::Utc::now();
        let Ok(chunk) = chunk else {
            // cut off: what arrived is what the follower saw
            eprintln!("run {id}: its event stream broke off");
            break;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.lines().any(|l| l == "event: stream") {
                continue;
            }
            let data = block.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            let at: chrono::DateTime<chrono::Utc> = event["at"].as_str().unwrap().parse().unwrap();
            followed
                .latencies
                .push((received - at).num_microseconds().unwrap() as f64 / 1000.0);
            followed
                .text
                .push_str(event["data"]["text"].as_str().unwrap());
            followed.deltas += 1;
        }
    }
    followed
}

async fn writer_transactions(client: &reqwest::Client, base: &str) -> f64 {
    let page = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix("agentq_writer_transactions_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the writer's transactions are in /metrics")
}

async fn pass(args: &Args) -> Value {
    let db = Database::new(&args.db).await;
    let port = free_port();
    let concurrency = (args.runs + 16).to_string();
    let server = Process::spawn(
        &args.binary,
        "serve",
        &db,
        port,
        &["--concurrency", &concurrency],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.runs + 64)
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..500 {
        if client.get(format!("{base}/readyz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "agentq did not start");

    let before = writer_transactions(&client, &base).await;
    let started = Instant::now();
    let delay_ms = args.secs * 1000;
    // each run is followed from before it starts, so every part arrives live
    let followers: Vec<(usize, tokio::task::JoinHandle<Followed>)> = futures::stream::iter(
        0..args.runs,
    )
    .map(|i| {
        let (client, base) = (client.clone(), base.clone());
        let body = json!({"agent": "echo", "input": {"text": text(args, i), "delay_ms": delay_ms},
                              "timeout_ms": delay_ms * 3});
        async move {
            let response = client
                .post(format!("{base}/v1/runs"))
                .json(&body)
                .send()
                .await
                .expect("POST");
            assert_eq!(response.status(), 202);
            let run: Value = response.json().await.unwrap();
            let id = run["id"].as_str().unwrap().to_owned();
            // started here, awaited after every run is posted
            (i, tokio::spawn(follow(client, base, id)))
        }
    })
    .buffered(64)
    .collect()
    .await;
    let posted = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut deltas = 0;
    let mut broken = Vec::new();
    for (i, follower) in followers {
        let followed = follower.await.expect("a follower ends");
        let whole = text(args, i);
        if followed.text != whole {
            let same = followed
                .text
                .bytes()
                .zip(whole.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            broken.push(format!(
                "run {i}: {} of {} bytes followed, the first {same} right",
                followed.text.len(),
                whole.len()
            ));
        }
        deltas += followed.deltas;
        latencies.extend(followed.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !broken.is_empty() {
        for problem in broken.iter().take(5) {
            eprintln!("{problem}");
        }
        let counts: Value = client
            .get(format!("{base}/v1/runs/counts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        eprintln!("runs by status: {}", counts["by_status"]);
    }
    let transactions = writer_transactions(&client, &base).await - before;
    let rss_mib = server.peak_rss_kib() as f64 / 1024.0;
    drop(server);
    db.drop_schema().await;
    latencies.sort_by(f64::total_cmp);
    let words = (args.secs * args.rate) as usize * args.runs;
    json!({
        "db": args.db, "big_input": args.big_input, "runs": args.runs, "secs": args.secs, "rate": args.rate,
        "words": words, "deltas_delivered": deltas, "runs_not_whole": broken.len(), "post_s": (posted * 10.0).round() / 10.0,
        "elapsed_s": (elapsed * 10.0).round() / 10.0,
        "commit_to_client_p50_ms": pct(&latencies, 50.0), "commit_to_client_p99_ms": pct(&latencies, 99.0),
        "commit_to_client_max_ms": pct(&latencies, 100.0),
        "writer_tx_per_s": (transactions / elapsed).round(), "peak_rss_mib": (rss_mib * 10.0).round() / 10.0,
    })
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut results: Vec<Value> = Vec::new();
    for _ in 0..args.passes {
        let result = pass(&args).await;
        println!("{result}");
        results.push(result);
    }
    let metric = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
    let not_whole: u64 = results
        .iter()
        .map(|r| r["runs_not_whole"].as_u64().unwrap())
        .sum();
    println!(
        "medians over {} passes ({}, one serve process): {} runs × {} deltas/s × {} s, {}; {:.0} of {} words as deltas; commit → client p50 {:.1} ms p99 {:.1} ms max {:.1} ms; writer {:.0} transactions/s; peak RSS {:.1} MiB; all done in {:.1} s",
        args.passes,
        args.db,
        args.runs,
        args.rate,
        args.secs,
        match not_whole {
            0 => "every text delivered whole".to_owned(),
            n => format!("{n} texts NOT delivered whole"),
        },
        metric("deltas_delivered"),
        metric("words"),
        metric("commit_to_client_p50_ms"),
        metric("commit_to_client_p99_ms"),
        metric("commit_to_client_max_ms"),
        metric("writer_tx_per_s"),
        metric("peak_rss_mib"),
        metric("elapsed_s"),
    );
}
