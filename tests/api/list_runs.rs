use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/v1/runs{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_runs_pages_newest_first_without_gaps_or_repeats() {
    let app = TestApp::spawn_with(|c| c.role = agentq::app::Role::Api).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            app.create(json!({"agent": "echo", "input": {"value": i}}))
                .await,
        );
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = list(&app, &query).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    assert_eq!(ids(&list(&app, "").await).len(), 7, "default limit is 50");
}

#[tokio::test]
async fn list_runs_filters_by_status_agent_and_creation_time() {
    let app = TestApp::spawn().await;
    let ok = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    let bad = app
        .create(json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}))
        .await;
    let slow = app
        .create(json!({"agent": "patient", "input": {"ms": 5000}}))
        .await;
    app.wait_for_status(&ok, "succeeded", Duration::from_secs(5))
        .await;
    app.wait_for_status(&bad, "failed", Duration::from_secs(5))
        .await;
    app.wait_for_status(&slow, "running", Duration::from_secs(5))
        .await;

    assert_eq!(
        ids(&list(&app, "?status=succeeded").await),
        vec![ok.clone()]
    );
    assert_eq!(
        ids(&list(&app, "?status=failed,running").await),
        [slow.clone(), bad.clone()]
    );
    assert_eq!(ids(&list(&app, "?agent=patient").await), vec![slow.clone()]);
    assert_eq!(
        ids(&list(&app, "?agent=echo&status=failed").await),
        vec![bad.clone()]
    );

    let slow_run = app.get_run(&slow).await;
    let created = slow_run["created_at"].as_str().unwrap();
    let encoded = created.replace(':', "%3A");
    assert_eq!(
        ids(&list(&app, &format!("?created_after={encoded}")).await),
        vec![slow.clone()]
    );
    let before = ids(&list(&app, &format!("?created_before={encoded}")).await);
    assert!(!before.contains(&slow) && before.contains(&ok));
}

#[tokio::test]
async fn list_runs_rejects_bad_filters_naming_each() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("?status=done", "status"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=xyz", "cursor"),
        ("?created_after=yesterday", "created_after"),
        ("?status=queued&status=running", "status"),
        ("/counts?agent=a&agent=b", "agent"),
        // a parameter the server does not know filters nothing: refused, not ignored
        ("?customer=globex", "customer"),
        ("/counts?customer=globex", "customer"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/runs{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
    // a run's events after a seq that is not a number
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events?after=abc")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "after");
}

#[tokio::test]
async fn a_list_returns_summaries_unless_include_names_the_bodies_and_a_page_stops_at_its_bytes() {
    let app = TestApp::spawn_with(|c| c.worker.max_result_bytes = 1024 * 1024).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        // about 950 KB each: 8 fit in a page's 8 MiB of bodies
        let value = format!("{i}{}", "v".repeat(950_000));
        ids.push(
            app.create(json!({"agent": "echo", "input": {"value": value}, "metadata": {"suite": "bodies"}}))
                .await,
        );
    }
    for id in &ids {
        app.wait_for_status(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    // summaries: every run in one page, no bodies
    let page: Value = app.get_json("/v1/runs?metadata=suite%3Dbodies").await;
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 10);
    assert!(page["next_cursor"].is_null());
    for run in runs {
        assert!(
            run["input"].is_null() && run["result"].is_null(),
            "{}",
            run["id"]
        );
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["metadata"]["suite"], "bodies");
    }
    // inputs asked for: the page stops at its bytes, and the next page has the rest
    let page: Value = app
        .get_json("/v1/runs?metadata=suite%3Dbodies&include=input")
        .await;
    let first = page["runs"].as_array().unwrap().clone();
    assert_eq!(first.len(), 8, "8 of about 950 KB fit in 8 MiB");
    assert!(
        first
            .iter()
            .all(|r| r["input"]["value"].as_str().unwrap().len() > 950_000)
    );
    assert!(first.iter().all(|r| r["result"].is_null()));
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page: Value = app
        .get_json(&format!(
            "/v1/runs?metadata=suite%3Dbodies&include=input,result&cursor={cursor}"
        ))
        .await;
    let rest = page["runs"].as_array().unwrap();
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter()
            .all(|r| r["result"]["value"] == r["input"]["value"])
    );
    let mut listed: Vec<&str> = first
        .iter()
        .chain(rest)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut made: Vec<&str> = ids.iter().map(String::as_str).collect();
    made.sort();
    assert_eq!(listed, made);
    // a body that is not one is refused, named
    let response = app
        .client
        .get(app.url("/v1/runs?include=input,secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "include", "{problem}");
}
