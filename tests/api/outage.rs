//! The database going away under load: PostgreSQL restarted while runs are submitted and
//! executed. These tests start their own throwaway server (tests/api/throwaway.rs), so the
//! PostgreSQL pass of `scripts/test.sh` skips them rather than run them twice.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::Agentq;
use crate::support::eventually::eventually;
use crate::throwaway::ThrowawayPostgres;

#[derive(Default)]
struct Load {
    accepted: BTreeSet<String>,
    unavailable: usize,
    retry_after_seen: bool,
    other: Vec<String>,
}

/// POSTs runs until `stop`, recording what each answer said.
async fn submit_until(base: String, load: Arc<Mutex<Load>>, stop: Arc<tokio::sync::Notify>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut i = 0;
    loop {
        let post = client
            .post(format!("{base}/v1/runs"))
            .json(&json!({"agent": "echo", "input": {"value": i, "delay_ms": 50}}))
            .send();
        let answer = tokio::select! {
            answer = post => answer,
            _ = stop.notified() => return,
        };
        i += 1;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                load.lock().unwrap().other.push(format!("transport: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        {
            let mut load = load.lock().unwrap();
            match status {
                202 => {
                    load.accepted
                        .insert(body["id"].as_str().unwrap().to_owned());
                }
                503 if body["code"] == "unavailable" => {
                    load.unavailable += 1;
                    load.retry_after_seen |= retry_after;
                }
                _ => load.other.push(format!("{status}: {body}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_restarted_under_load_answers_503_meanwhile_and_loses_no_accepted_run() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let agentq = Agentq::start(&pg.url(), &[]).await;
    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let submitter = tokio::spawn(submit_until(
        agentq.base.clone(),
        load.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .unwrap();
    // while it is down: POSTs answer 503 `unavailable`, and readiness says why
    eventually(
        Duration::from_secs(15),
        "a 503 while the database is down",
        || async {
            let unavailable = load.lock().unwrap().unavailable;
            if unavailable > 0 {
                Ok(())
            } else {
                Err(unavailable)
            }
        },
    )
    .await;
    let ready = reqwest::get(format!("{}/readyz", agentq.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    let why = body["checks"]["database"].as_str().unwrap_or("ok");
    assert_ne!(why, "ok", "readiness names the database: {body}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    // accepted again once it is back
    let accepted_before = load.lock().unwrap().accepted.len();
    eventually(Duration::from_secs(30), "POSTs succeed again", || async {
        let accepted = load.lock().unwrap().accepted.len();
        if accepted >= accepted_before + 20 {
            Ok(())
        } else {
            Err(accepted)
        }
    })
    .await;
    stop.notify_one();
    submitter.await.unwrap();

    let load = std::mem::take(&mut *load.lock().unwrap());
    assert!(
        load.other.is_empty(),
        "every answer was 202 or 503: {:?}",
        load.other
    );
    assert!(load.retry_after_seen, "503s carry Retry-After");
    // every accepted run is stored and finishes
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &load.accepted {
        let what = format!("accepted run {id} finishes");
        eventually(
            deadline.saturating_duration_since(Instant::now()),
            &what,
            || async {
                let run = agentq.get_json(&format!("/v1/runs/{id}")).await;
                if run["status"] == "succeeded" {
                    Ok(())
                } else {
                    Err(run)
                }
            },
        )
        .await;
    }
    let ready = reqwest::get(format!("{}/readyz", agentq.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    eprintln!(
        "outage: {} runs accepted, {} POSTs answered 503 while PostgreSQL was down",
        load.accepted.len(),
        load.unavailable
    );
    drop(agentq);
    drop(pg);
}

/// The registry's entry of the live worker process `pid`, if it has one.
async fn worker_of(api: &Agentq, pid: u32) -> Option<Value> {
    let workers = api.get_json("/v1/workers").await;
    // (a 503 problem while the database is away)
    workers["workers"]
        .as_array()?
        .iter()
        .find(|w| w["pid"] == pid && w["state"] == "alive")
        .cloned()
}

/// The value of an unlabelled series on a metrics page, if it is there.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn a_worker_whose_claims_keep_failing_restarts_its_loop_and_past_max_restarts_exits_non_zero()
{
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .map(Arc::new)
        .unwrap();
    let db = pg.url();
    let metrics_port = crate::process::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let patient = Agentq::start_role(
        "worker",
        &db,
        &["--max-restarts", "5", "--metrics-listen", &metrics],
    )
    .await;
    let api = Agentq::start_role("api", &db, &[]).await;
    let patient_pid = patient.pid();
    eventually(Duration::from_secs(10), "the worker registers", || async {
        worker_of(&api, patient_pid).await.ok_or(())
    })
    .await;
    let blocking = |f: fn(&ThrowawayPostgres)| {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || f(&pg))
    };

    // the database goes away: claims fail, the worker loop stops and is started again
    blocking(ThrowawayPostgres::stop).await.unwrap();
    let client = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "the worker loop restarts",
        || async {
            let page = client
                .get(format!("http://{metrics}/metrics"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            match sample(&page, "agentq_worker_restarts_total") {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    blocking(ThrowawayPostgres::start_again).await.unwrap();
    // back: the registry shows the restart and when, and runs are taken again
    let entry = eventually(
        Duration::from_secs(20),
        "the restart is registered",
        || async {
            match worker_of(&api, patient_pid).await {
                Some(w)
                    if w["restarts"].as_u64() >= Some(1) && w["last_restart_at"].is_string() =>
                {
                    Ok(w)
                }
                other => Err(other),
            }
        },
    )
    .await;
    let restarted_at: chrono::DateTime<chrono::Utc> =
        entry["last_restart_at"].as_str().unwrap().parse().unwrap();
    assert!(
        chrono::Utc::now() - restarted_at < chrono::TimeDelta::seconds(60),
        "{entry}"
    );
    let id = api
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    api.wait_for_status(&id, "succeeded").await;

    // a worker allowed no restart gives up at its loop's first stop and exits non-zero,
    // while the patient one keeps restarting
    let strict = Agentq::start_role("worker", &db, &["--max-restarts", "0"]).await;
    let strict_pid = strict.pid();
    eventually(
        Duration::from_secs(10),
        "the strict worker registers",
        || async { worker_of(&api, strict_pid).await.ok_or(()) },
    )
    .await;
    blocking(ThrowawayPostgres::stop).await.unwrap();
    let code = strict.exit_code(Duration::from_secs(60)).await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let mut patient = patient;
    assert!(
        patient.running(),
        "the worker allowed 5 restarts gave up too soon"
    );
    blocking(ThrowawayPostgres::start_again).await.unwrap();
    drop((patient, api));
}

/// What a client sends PostgreSQL, read message by message (frontend protocol 3): whether
/// the message just completed is a `COMMIT`, and whether a run's insert came before it.
#[derive(Default)]
struct Frontend {
    buf: Vec<u8>,
    started: bool,
    /// The names of the prepared statements that are a `COMMIT`.
    commits: std::collections::HashSet<Vec<u8>>,
    inserted: bool,
}

impl Frontend {
    /// Takes `chunk`; true when it completed a `COMMIT` after a run's insert.
    fn commits_an_insert(&mut self, chunk: &[u8]) -> bool {
        let cstr = |b: &[u8]| b.split(|&c| c == 0).next().unwrap_or_default().to_vec();
        self.buf.extend_from_slice(chunk);
        let mut found = false;
        loop {
            // before the startup message: untyped (SSLRequest, GSSENCRequest, startup)
            let (head, typ) = if self.started {
                (5, self.buf.first().copied())
            } else {
                (4, None)
            };
            if self.buf.len() < head {
                return found;
            }
            let at = head - 4;
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            let whole = at + len;
            if self.buf.len() < whole {
                return found;
            }
            let body = self.buf[head..whole].to_vec();
            self.buf.drain(..whole);
            match typ {
                None => {
                    let code = u32::from_be_bytes(body[..4].try_into().unwrap());
                    self.started = !matches!(code, 80877103 | 80877104);
                }
                Some(b'P') => {
                    let name = cstr(&body);
                    let query =
                        String::from_utf8_lossy(&cstr(&body[name.len() + 1..])).into_owned();
                    self.inserted |= query.contains("INSERT INTO runs");
                    if query.trim() == "COMMIT" {
                        self.commits.insert(name);
                    }
                }
                Some(b'B') => {
                    let portal = cstr(&body);
                    let statement = cstr(&body[portal.len() + 1..]);
                    found |= self.inserted && self.commits.contains(&statement);
                }
                Some(b'Q') => {
                    found |= self.inserted && String::from_utf8_lossy(&body).contains("COMMIT")
                }
                Some(_) => {}
            }
        }
    }
}

/// A TCP proxy to PostgreSQL that, once a connection sent a run's insert, forwards that
/// connection's next `COMMIT`, gives the server time to apply it, and then cuts the
/// connection before its answer comes back: a commit whose outcome the client cannot know.
/// Only the first such commit is cut.
async fn commit_cutting_proxy(upstream: u16) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicUsize::new(0));
    let counted = cuts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cuts = counted.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                });
                let mut frontend = Frontend::default();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let cut = frontend.commits_an_insert(chunk)
                        && cuts.fetch_add(1, Ordering::SeqCst) == 0;
                    if cut {
                        // no answer goes back any more; the COMMIT goes on, and is applied
                        back.abort();
                        let _ = back.await;
                        let _ = server_wr.write_all(chunk).await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        return;
                    }
                    if server_wr.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    (port, cuts)
}

/// The connection breaks during the commit of a POST: the run is stored, and the client,
/// which cannot know it, is told so (`outcome_unknown`) and finds the run by retrying with
/// its Idempotency-Key, which does not make a second one.
#[tokio::test]
async fn a_commit_cut_short_answers_outcome_unknown_and_a_retry_with_the_key_finds_the_run() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let (port, cuts) = commit_cutting_proxy(pg.port()).await;
    // (no TLS: the proxy reads the protocol)
    let db = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    // an API process alone: no worker runs the run, so the test sees it as stored
    let agentq = Agentq::start_role("api", &db, &[]).await;
    let client = reqwest::Client::new();
    let body = json!({"agent": "echo", "input": {"value": "cut"}});
    let post = || {
        client
            .post(format!("{}/v1/runs", agentq.base))
            .header("idempotency-key", "cut-commit-1")
            .json(&body)
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 503);
    assert!(first.headers().contains_key("retry-after"));
    let problem: Value = first.json().await.unwrap();
    assert_eq!(problem["code"], "outcome_unknown", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("outcome unknown") && detail.contains("Idempotency-Key"),
        "{detail}"
    );
    assert_eq!(cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    // the commit was applied: the retry finds the run (200), and there is one
    let retried = eventually(Duration::from_secs(15), "the retry is answered", || async {
        let r = post().await.unwrap();
        match r.status().as_u16() {
            200 => Ok(r.json::<Value>().await.unwrap()),
            // made now: the cut commit was not applied after all
            202 => panic!("the retry created the run: {}", r.text().await.unwrap()),
            s => Err(format!("{s}: {}", r.text().await.unwrap())),
        }
    })
    .await;
    assert_eq!(retried["input"]["value"], "cut");
    let list = agentq.get_json("/v1/runs").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");
    drop(agentq);
    drop(pg);
}
