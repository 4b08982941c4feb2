//! What the dashboard reads: listing by metadata and search, counts by status, per-agent
//! queues with the last hour's throughput; and the dashboard's own files at `/ui/`.

use crate::support::eventually::eventually;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(page: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

fn sorted(mut ids: Vec<&str>) -> Vec<&str> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn runs_are_filtered_by_metadata_and_searched_by_id_and_metadata_value() {
    let app = TestApp::spawn_with(|c| c.role = agentq::app::Role::Api).await;
    let run = |team: &str, ticket: &str| {
        json!({"agent": "echo", "input": {"value": 1},
               "metadata": {"team": team, "ticket": ticket, "env": "prod"}})
    };
    let a = app.create(run("growth", "GRO-100")).await;
    let b = app.create(run("growth", "GRO-101")).await;
    let c = app.create(run("infra", "INF-7")).await;
    let d = app.create(run("50%_off", "x")).await;

    let (status, page) = get(&app, "/v1/runs?metadata[team]=growth", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), sorted(vec![&a, &b]));
    // every entry must match
    let (_, page) = get(
        &app,
        "/v1/runs?metadata[team]=growth&metadata[ticket]=GRO-101",
        None,
    )
    .await;
    assert_eq!(ids(&page), vec![b.as_str()]);
    let (_, page) = get(
        &app,
        "/v1/runs?metadata[team]=growth&metadata[env]=dev",
        None,
    )
    .await;
    assert_eq!(ids(&page), Vec::<&str>::new());
    // percent-encoded brackets, as browsers send them
    let (_, page) = get(&app, "/v1/runs?metadata%5Bteam%5D=infra", None).await;
    assert_eq!(ids(&page), vec![c.as_str()]);
    // the documented form, an array of key=value (what generated clients send): repeated,
    // with the inner `=` encoded or not, alone or next to the bracket form
    let (_, page) = get(&app, "/v1/runs?metadata=team%3Dgrowth", None).await;
    assert_eq!(ids(&page), sorted(vec![&a, &b]));
    let (_, page) = get(
        &app,
        "/v1/runs?metadata=team=growth&metadata=ticket%3DGRO-101",
        None,
    )
    .await;
    assert_eq!(ids(&page), vec![b.as_str()]);
    let (_, page) = get(
        &app,
        "/v1/runs?metadata=team%3Dgrowth&metadata[ticket]=GRO-100",
        None,
    )
    .await;
    assert_eq!(ids(&page), vec![a.as_str()]);
    // a value may hold `=`: the key ends at the first one
    let (_, page) = get(&app, "/v1/runs?metadata=ticket%3DINF%3D7", None).await;
    assert_eq!(ids(&page), Vec::<&str>::new());
    let (_, counts) = get(&app, "/v1/runs/counts?metadata=team%3Dinfra", None).await;
    assert_eq!(counts["total"], 1);

    // search: metadata values, ignoring ASCII case, and ids
    let (_, page) = get(&app, "/v1/runs?q=gro-10", None).await;
    assert_eq!(ids(&page), sorted(vec![&a, &b]));
    let (_, page) = get(&app, &format!("/v1/runs?q={}", &c[c.len() - 10..]), None).await;
    assert_eq!(ids(&page), vec![c.as_str()]);
    // LIKE's wildcards are plain characters in a search
    let (_, page) = get(&app, "/v1/runs?q=50%25_", None).await;
    assert_eq!(ids(&page), vec![d.as_str()]);
    let (_, page) = get(&app, "/v1/runs?q=%25", None).await;
    assert_eq!(ids(&page), vec![d.as_str()]);
    // search and filters together
    let (_, page) = get(&app, "/v1/runs?q=prod&metadata[team]=infra", None).await;
    assert_eq!(ids(&page), vec![c.as_str()]);

    // counts take the same filters
    let (status, counts) = get(&app, "/v1/runs/counts?metadata[team]=growth", None).await;
    assert_eq!(status, 200);
    assert_eq!(counts["total"], 2);
    assert_eq!(counts["by_status"]["queued"], 2);
    assert_eq!(
        counts["by_status"]["succeeded"], 0,
        "every status is present"
    );
    let (_, counts) = get(&app, "/v1/runs/counts?q=inf", None).await;
    assert_eq!(counts["total"], 1);
    let (_, counts) = get(&app, "/v1/runs/counts", None).await;
    assert_eq!(counts["total"], 4);
}

#[tokio::test]
async fn bad_metadata_filters_and_searches_name_their_field() {
    let app = TestApp::spawn_with(|c| c.role = agentq::app::Role::Api).await;
    let long = "x".repeat(201);
    let too_many: String = (0..21).map(|i| format!("&metadata[k{i}]=v")).collect();
    for path in [
        "/v1/runs?metadata[]=x".to_owned(),
        "/v1/runs?metadata=x".to_owned(),
        "/v1/runs?metadata=%3Dx".to_owned(),
        "/v1/runs/counts?metadata=team%3Da&metadata[team]=b".to_owned(),
        "/v1/runs?metadata[team]=a&metadata%5Bteam%5D=b".to_owned(),
        "/v1/runs?customer=globex".to_owned(),
        "/v1/runs/counts?metadata[team=x".to_owned(),
        format!("/v1/runs?q={long}"),
        format!("/v1/runs/counts?q=a{too_many}"),
        "/v1/runs/counts?created_after=yesterday".to_owned(),
        "/v1/runs?q=a%00b".to_owned(),
        "/v1/runs/counts?metadata[team]=a%00".to_owned(),
        "/v1/runs?agent=ec%00ho".to_owned(),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 422, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: Value = response.json().await.unwrap();
        let field = problem["errors"][0]["field"].as_str().unwrap();
        assert!(
            ["metadata", "q", "created_after", "agent", "customer"].contains(&field),
            "{path}: {problem}"
        );
    }
}

#[tokio::test]
async fn queues_count_each_agents_runs_by_state_and_its_last_hour() {
    let app = TestApp::spawn().await;
    let long = Duration::from_secs(30);
    let mut done = Vec::new();
    for i in 0..3 {
        done.push(
            app.create(json!({"agent": "echo", "input": {"value": i}}))
                .await,
        );
    }
    let failed = app
        .create(json!({"agent": "echo", "input": {"value": 0, "fail_permanently": true}}))
        .await;
    let waiting = app.create(json!({"agent": "waiter"})).await;
    let running = app
        .create(json!({"agent": "patient", "input": {"ms": 60_000}}))
        .await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let scheduled = app
        .create(json!({"agent": "patient", "input": {"ms": 1}, "run_at": later}))
        .await;
    let blocked = app
        .create(json!({"agent": "echo", "input": {"value": 9}, "depends_on": [scheduled]}))
        .await;
    let mut finished_at = Vec::new();
    for id in &done {
        let run = app.wait_for_status(id, "succeeded", long).await;
        finished_at.push(timestamp(&run["finished_at"]));
    }
    app.wait_for_status(&failed, "failed", long).await;
    app.wait_for_status(&waiting, "waiting", long).await;
    app.wait_for_status(&running, "running", long).await;
    app.wait_for_status(&blocked, "blocked", long).await;

    let (status, body) = get(&app, "/v1/queues", None).await;
    assert_eq!(status, 200);
    let queue = |agent: &str| queue_of(&body, agent);
    let echo = queue("echo");
    assert_eq!(in_the_hour(&echo, "succeeded_per_minute"), 3, "{echo}");
    assert_eq!(in_the_hour(&echo, "failed_per_minute"), 1, "{echo}");
    assert_eq!(echo["blocked"], 1, "{echo}");
    assert_eq!(echo["queued"], 0, "{echo}");
    assert_eq!(echo["oldest_queued_age_ms"], Value::Null);
    // each finish is counted in its minute of the window
    let start = timestamp(&body["window_start"]);
    let mut expected = vec![0u64; 60];
    for at in finished_at {
        expected[((at - start).num_minutes() as usize).min(59)] += 1;
    }
    let series: Vec<u64> = echo["succeeded_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(series, expected, "{echo}");
    let waiter = queue("waiter");
    assert_eq!(waiter["waiting"], 1, "{waiter}");
    let patient = queue("patient");
    assert_eq!(patient["running"], 1, "{patient}");
    assert_eq!(patient["scheduled"], 1, "{patient}");
    // registered agents without runs are listed, idle
    let idle = queue("panicker");
    assert_eq!(in_the_hour(&idle, "succeeded_per_minute"), 0);
    assert!(body["window_start"].as_str().is_some());
}

#[tokio::test]
async fn the_oldest_queued_run_has_an_age() {
    let app = TestApp::spawn_with(|c| c.role = agentq::app::Role::Api).await;
    app.create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.create(json!({"agent": "echo", "input": {"value": 2}}))
        .await;
    let (_, body) = get(&app, "/v1/queues", None).await;
    let echo = queue_of(&body, "echo");
    assert_eq!(echo["queued"], 2, "{echo}");
    assert!(
        echo["oldest_queued_age_ms"].as_u64().unwrap() >= 300,
        "{echo}"
    );
    assert!(echo["oldest_queued_at"].as_str().is_some());
}

#[tokio::test]
async fn counts_and_queues_show_only_the_callers_tenant() {
    let (app, keys) = TestApp::spawn_with_keys(&[
        ("acme", "runs:read,runs:write"),
        ("globex", "runs:read,runs:write"),
    ])
    .await;
    let create = |app: &TestApp, key: &str, body: Value| {
        app.client
            .post(app.url("/v1/runs"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let echo = json!({"agent": "echo", "input": {"value": 1}, "metadata": {"team": "a"}});
    for _ in 0..2 {
        let response = create(&app, &keys[0], echo.clone()).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    let response = create(&app, &keys[1], echo.clone()).await.unwrap();
    assert_eq!(response.status(), 202);
    // every run finishes: each tenant's counts and last hour hold its own
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    for (key, n) in [(&keys[0], 2), (&keys[1], 1)] {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let counts = eventually(left, "the tenant's runs all succeed", || async {
            let (_, counts) = get(&app, "/v1/runs/counts?metadata[team]=a", Some(key)).await;
            if counts["by_status"]["succeeded"] == n {
                Ok(counts)
            } else {
                Err(counts)
            }
        })
        .await;
        assert_eq!(counts["total"], n, "{counts}");
        let (_, body) = get(&app, "/v1/queues", Some(key)).await;
        let echo = queue_of(&body, "echo");
        assert_eq!(in_the_hour(&echo, "succeeded_per_minute"), n, "{echo}");
    }
    // what waits to run is the caller's only
    let later = json!({"agent": "patient", "input": {"ms": 1}, "run_at": "2999-01-01T00:00:00Z"});
    for _ in 0..2 {
        let response = create(&app, &keys[0], later.clone()).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    for (key, n) in [(&keys[0], 2), (&keys[1], 0)] {
        let (_, body) = get(&app, "/v1/queues", Some(key)).await;
        let patient = queue_of(&body, "patient");
        assert_eq!(patient["scheduled"], n, "{patient}");
    }
    let (status, _) = get(&app, "/v1/queues", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&app, "/v1/runs/counts", None).await;
    assert_eq!(status, 401);
}

/// A queue's per-minute series summed, after checking it has a minute for each of the hour.
fn in_the_hour(queue: &Value, series: &str) -> u64 {
    let series = queue[series].as_array().unwrap();
    assert_eq!(series.len(), 60, "one entry per minute of the hour");
    series.iter().map(|n| n.as_u64().unwrap()).sum()
}

fn queue_of(body: &Value, agent: &str) -> Value {
    body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent"] == agent)
        .unwrap_or_else(|| panic!("no queue for {agent}: {body}"))
        .clone()
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_without_a_key() {
    let (app, _keys) = TestApp::spawn_with_keys(&[("acme", "runs:read")]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/ui/");
    let response = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.headers()["location"], "/ui/");

    let page = client.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself needs no key");
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="app.js">"#));

    let script = client
        .get(app.url("/ui/views/run.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].clone();
    let again = client
        .get(app.url("/ui/views/run.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // every file of the dashboard's folder is served, as it is in the repository (a module
    // left out of the binary breaks the page's imports)
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files = Vec::new();
    for dir in [ui.clone(), ui.join("views")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(
                    path.strip_prefix(&ui)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    assert!(files.len() > 8, "{files:?}");
    for file in &files {
        let served = client
            .get(app.url(&format!("/ui/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "/ui/{file}");
        let body = served.bytes().await.unwrap();
        let path = ui.join(file);
        assert_eq!(body.as_ref(), std::fs::read(&path).unwrap(), "/ui/{file}");
    }

    let missing = client.get(app.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    // what the page shows still needs a key
    let (status, _) = get(&app, "/v1/runs", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn without_keys_a_page_of_another_site_is_refused_and_the_dashboard_is_not() {
    let app = TestApp::spawn_with(|c| c.role = agentq::app::Role::Api).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    let cancel = |headers: &[(&'static str, &'static str)]| {
        let mut request = app.client.post(app.url(&format!("/v1/runs/{id}/cancel")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let refused = cancel(&[
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ])
    .await
    .unwrap();
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("another site"),
        "{problem}"
    );
    assert_eq!(
        app.get_run(&id).await["status"],
        "queued",
        "nothing was cancelled"
    );
    let ok = cancel(&[("sec-fetch-site", "same-origin")]).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(app.get_run(&id).await["status"], "cancelled");
}
