//! Who did it: events made through the API name their caller, a run names who created
//! it, and its agent can read that with its tenant and metadata.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, call, create_as, signal_as, wait_status};

const FIVE_S: Duration = Duration::from_secs(5);

async fn events_as(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let events: Value = call(app, Method::GET, &format!("/v1/runs/{id}/events"), key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    events["events"].as_array().unwrap().clone()
}

/// The actor of the run's only event of `kind`.
fn actor_of<'a>(events: &'a [Value], kind: &str) -> Option<&'a str> {
    let matching: Vec<&Value> = events.iter().filter(|e| e["type"] == kind).collect();
    assert_eq!(matching.len(), 1, "one {kind} event in {events:?}");
    matching[0].get("actor").and_then(Value::as_str)
}

/// A `waiter` run created with `key`, once it waits: its id and run token.
async fn waiting_run(app: &TestApp, key: &str) -> (String, String) {
    let run = create_as(app, key, json!({"agent": "waiter"})).await;
    let (id, token) = (
        run["id"].as_str().unwrap(),
        run["run_token"].as_str().unwrap(),
    );
    wait_status(app, key, id, "waiting").await;
    (id.to_owned(), token.to_owned())
}

#[tokio::test]
async fn api_made_events_name_the_key_or_token_that_made_them_and_the_agent_sees_its_creator() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write")]).await;
    let key = &keys[0];
    let key_actor = format!("key:{}", agentq::domain::split_key(key).unwrap().0);

    // created by a key: the run, its `created` event and its agent's context say so
    let created = create_as(
        &app,
        key,
        json!({"agent": "witness", "metadata": {"thread": "9"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let run = wait_status(&app, key, id, "succeeded").await;
    assert_eq!(run["created_by"], key_actor.as_str());
    assert_eq!(
        run["result"],
        json!({"tenant": "acme", "metadata": {"thread": "9"}, "created_by": key_actor})
    );
    let events = events_as(&app, key, id).await;
    assert_eq!(actor_of(&events, "created"), Some(key_actor.as_str()));
    // what the engine and the attempt did has no API caller
    assert_eq!(actor_of(&events, "started"), None);
    assert_eq!(actor_of(&events, "succeeded"), None);

    // a signal and a cancel sent with the key
    let (waiter, token) = waiting_run(&app, key).await;
    // a token sends only what the run waits for: not this one
    assert_eq!(
        signal_as(&app, &token, &waiter, "not_yet").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        signal_as(&app, key, &waiter, "not_yet").await,
        StatusCode::ACCEPTED
    );
    let cancelled = call(
        &app,
        Method::POST,
        &format!("/v1/runs/{waiter}/cancel"),
        key,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let events = events_as(&app, key, &waiter).await;
    assert_eq!(
        actor_of(&events, "signal_received"),
        Some(key_actor.as_str())
    );
    assert_eq!(actor_of(&events, "cancelled"), Some(key_actor.as_str()));

    // the run token's own signal names the token
    let (waiter, token) = waiting_run(&app, key).await;
    assert_eq!(
        signal_as(&app, &token, &waiter, "go").await,
        StatusCode::ACCEPTED
    );
    wait_status(&app, key, &waiter, "succeeded").await;
    let events = events_as(&app, key, &waiter).await;
    assert_eq!(
        actor_of(&events, "signal_received"),
        Some(format!("run_token:{waiter}").as_str())
    );
}

#[tokio::test]
async fn on_a_server_without_keys_the_actor_is_open_and_a_retry_names_it_too() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"fail_permanently": true}, "max_attempts": 1}))
        .await;
    app.wait_for_status(&id, "failed", FIVE_S).await;
    let retried = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    let events = app.events(&id).await;
    assert_eq!(actor_of(&events, "created"), Some("open"));
    assert_eq!(actor_of(&events, "requeued"), Some("open"));
    assert_eq!(app.get_run(&id).await["created_by"], "open");
}
