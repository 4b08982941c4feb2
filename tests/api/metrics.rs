//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, TestDb};
use crate::process::{Agentq, free_port};
use crate::support::eventually::eventually;

/// Every sample of an exposition, by series (`name{labels}`), after checking that each
/// line is a comment or a `series value` sample and that it ends with `# EOF`.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker: {text}");
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a bad metric name: {line}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

async fn scrape(app: &TestApp) -> (HashMap<String, f64>, String) {
    scrape_url(&app.client, &app.url("/metrics")).await
}

async fn scrape_url(client: &reqwest::Client, url: &str) -> (HashMap<String, f64>, String) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    (parse(&text), text)
}

/// Scrapes until `done` holds, failing after `within`.
async fn scrape_until(
    app: &TestApp,
    within: Duration,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    eventually(within, "the metrics get there", || async {
        let (samples, text) = scrape(app).await;
        if done(&samples) {
            Ok(samples)
        } else {
            Err(text)
        }
    })
    .await
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// Each finishing attempt claims its slot's next run in the batch that writes its outcome,
/// so a backlog drained one run at a time costs about one writer transaction per run (two
/// when the claim waits for the outcome's commit).
#[tokio::test]
async fn a_backlog_drained_one_at_a_time_commits_about_once_per_run() {
    let app = TestApp::spawn_with(|c| {
        c.worker.concurrency = 1;
        c.worker.redis = None;
        // fewer of the sweep's and the idle claim's own transactions meanwhile
        c.worker.lease = Duration::from_secs(30);
        c.worker.poll_interval = Duration::from_secs(1);
    })
    .await;
    let pause = |action: &'static str| {
        let request = app
            .client
            .post(app.url(&format!("/v1/agents/echo/{action}")));
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    pause("pause").await;
    const RUNS: usize = 40;
    let mut ids = Vec::new();
    for value in 0..RUNS {
        ids.push(
            app.create(json!({"agent": "echo", "input": {"value": value}}))
                .await,
        );
    }
    let transactions =
        |samples: &HashMap<String, f64>| value(samples, "agentq_writer_transactions_total");
    let before = transactions(&scrape(&app).await.0);
    pause("resume").await;
    // one at a time, in the order they came: the last one ends the drain
    app.wait_for_status(ids.last().unwrap(), "succeeded", Duration::from_secs(20))
        .await;
    let after = transactions(&scrape(&app).await.0);
    for id in &ids {
        assert_eq!(app.get_run(id).await["status"], "succeeded");
    }
    // the resume, one batch per run, and a few of the sweep's, renewals' and heartbeats'
    let took = after - before;
    assert!(
        took <= RUNS as f64 * 1.5,
        "{took} writer transactions to drain {RUNS} runs"
    );
}

#[tokio::test]
async fn metrics_count_runs_attempts_and_requests_and_show_the_queue() {
    // the worker serves echo only: a `patient` run stays ready, unclaimed
    let app = TestApp::spawn_with(|c| c.worker.agents = Some(vec!["echo".into()])).await;
    let mut ids = Vec::new();
    for input in [
        json!({"value": 1}),
        json!({"value": 2}),
        json!({"value": 3, "fail_attempts": 1}),
        json!({"value": 4, "fail_permanently": true}),
    ] {
        ids.push(app.create(json!({"agent": "echo", "input": input})).await);
    }
    for (id, status) in ids
        .iter()
        .zip(["succeeded", "succeeded", "succeeded", "failed"])
    {
        app.wait_for_status(id, status, Duration::from_secs(10))
            .await;
    }
    app.create(json!({"agent": "echo", "input": {"value": 5}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    app.create(json!({"agent": "patient", "input": {"ms": 1}}))
        .await;
    let unknown = app.client.get(app.url("/nowhere/42")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // the worker registers with its first heartbeat
    let m = scrape_until(&app, Duration::from_secs(10), |m| {
        m.get("agentq_workers_alive") == Some(&1.0)
    })
    .await;
    let echo = |name: &str| value(&m, &format!("{name}{{agent=\"echo\"}}"));
    assert_eq!(echo("agentq_runs_created_total"), 5.0);
    assert_eq!(
        value(&m, "agentq_runs_created_total{agent=\"patient\"}"),
        1.0
    );
    let finished = |status: &str| {
        value(
            &m,
            &format!("agentq_runs_finished_total{{agent=\"echo\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(finished("succeeded"), 3.0);
    assert_eq!(finished("failed"), 1.0);
    // and why it failed
    assert_eq!(
        value(
            &m,
            "agentq_runs_failed_total{agent=\"echo\",error_kind=\"agent_error\"}"
        ),
        1.0
    );
    assert_eq!(echo("agentq_run_retries_total"), 1.0);
    // 6 inserts, claims, finishes and heartbeats: batched, but more than a few
    let transactions = value(&m, "agentq_writer_transactions_total");
    assert!(transactions >= 3.0, "{transactions}");
    let attempts = |outcome: &str| {
        value(
            &m,
            &format!("agentq_attempts_total{{agent=\"echo\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(attempts("succeeded"), 3.0);
    assert_eq!(attempts("retry"), 1.0);
    assert_eq!(attempts("failed"), 1.0);
    assert_eq!(echo("agentq_attempt_duration_seconds_count"), 5.0);
    assert_eq!(echo("agentq_queue_wait_seconds_count"), 5.0);
    assert!(echo("agentq_queue_wait_seconds_sum") >= 0.0);
    assert_eq!(
        value(
            &m,
            "agentq_attempt_duration_seconds_bucket{le=\"+Inf\",agent=\"echo\"}"
        ),
        5.0
    );

    // requests by route template, never by raw path
    let created = "agentq_http_requests_total{method=\"POST\",route=\"/v1/runs\",status=\"202\"}";
    assert_eq!(value(&m, created), 6.0);
    let polled =
        "agentq_http_requests_total{method=\"GET\",route=\"/v1/runs/{id}\",status=\"200\"}";
    assert!(value(&m, polled) >= 4.0);
    let nowhere = "agentq_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}";
    assert_eq!(value(&m, nowhere), 1.0);
    assert!(
        m.keys()
            .all(|series| ids.iter().all(|id| !series.contains(id.as_str()))),
        "a raw path leaked into a label"
    );
    let latency = "agentq_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/runs\"}";
    assert_eq!(value(&m, latency), 6.0);

    // the queue as the database has it
    assert_eq!(echo("agentq_runs_scheduled"), 1.0);
    assert_eq!(echo("agentq_runs_ready"), 0.0);
    assert_eq!(echo("agentq_runs_running"), 0.0);
    assert_eq!(value(&m, "agentq_runs_ready{agent=\"patient\"}"), 1.0);
    assert!(value(&m, "agentq_oldest_ready_run_age_seconds{agent=\"patient\"}") > 0.0);
    assert_eq!(echo("agentq_oldest_ready_run_age_seconds"), 0.0);
}

#[tokio::test]
async fn a_cancelled_run_is_counted_as_finished_cancelled() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let response = app.cancel(&id).await;
    assert_eq!(response.status(), 200);
    let (m, _) = scrape(&app).await;
    let cancelled = "agentq_runs_finished_total{agent=\"echo\",status=\"cancelled\"}";
    assert_eq!(value(&m, cancelled), 1.0);
    assert_eq!(value(&m, "agentq_runs_scheduled{agent=\"echo\"}"), 0.0);
}

#[tokio::test]
async fn a_worker_process_serves_its_own_counters_on_metrics_listen() {
    let db = TestDb::new().await;
    let api = Agentq::start_role("api", &db.url, &[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let worker = Agentq::start_role("worker", &db.url, &["--metrics-listen", &addr]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.create(json!({"agent": "echo", "input": {"value": i}}))
                .await,
        );
    }
    for id in &ids {
        api.wait_for_status(id, "succeeded").await;
    }
    let client = reqwest::Client::new();
    let series = |name: &str| format!("{name}{{agent=\"echo\"}}");
    let attempts = r#"agentq_attempts_total{agent="echo",outcome="succeeded"}"#;
    let finished = r#"agentq_runs_finished_total{agent="echo",status="succeeded"}"#;

    // the worker ran the attempts and wrote the finishes; no key is asked for (its
    // counters move just after the finish is written, which the API may show first)
    let url = format!("http://{addr}/metrics");
    let samples = eventually(
        Duration::from_secs(10),
        "3 attempts are counted",
        || async {
            let (samples, text) = scrape_url(&client, &url).await;
            if samples.get(attempts) == Some(&3.0) {
                Ok(samples)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert_eq!(value(&samples, attempts), 3.0);
    assert_eq!(
        value(&samples, &series("agentq_attempt_duration_seconds_count")),
        3.0
    );
    assert_eq!(
        value(&samples, &series("agentq_queue_wait_seconds_count")),
        3.0
    );
    assert_eq!(value(&samples, finished), 3.0);
    // with the queue's gauges, read from the database
    assert_eq!(value(&samples, "agentq_workers_alive"), 1.0);
    assert_eq!(value(&samples, &series("agentq_runs_ready")), 0.0);

    // the API process created the runs and ran none of them
    let (api_side, _) = scrape_url(&client, &format!("{}/metrics", api.base)).await;
    assert_eq!(value(&api_side, &series("agentq_runs_created_total")), 3.0);
    assert_eq!(api_side.get(attempts).copied().unwrap_or(0.0), 0.0);

    // the metrics listener serves nothing else
    let other = client
        .get(format!("http://{addr}/v1/runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(other.headers()["content-type"], "application/problem+json");

    // and stops with the process
    worker.signal("TERM");
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0));
}
