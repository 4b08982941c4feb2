//! API keys, tenants and run tokens: who sees and does what.

use std::process::Command;
use std::time::Duration;

use agentq::api::KEY_CACHE_TTL;
use agentq::app::Application;
use agentq::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestDb, call, config, create_as, create_key, signal_as, status_of, test_agents,
    wait_status,
};
use crate::support::eventually::eventually;

#[tokio::test]
async fn with_a_key_every_api_request_needs_one_and_health_does_not() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write")]).await;
    let response = call(&app, reqwest::Method::GET, "/v1/runs", "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "unauthenticated");
    let get = reqwest::Method::GET;
    let forged = format!("aq_{}_{}", &keys[0][3..15], "0".repeat(64));
    for bad in [
        "aq_nonsense",
        forged.as_str(),
        "Basic x",
        "rt.forged.acme.1.00",
    ] {
        assert_eq!(
            status_of(&app, get.clone(), "/v1/agents", bad).await,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
    assert_eq!(
        status_of(&app, get.clone(), "/v1/agents", &keys[0]).await,
        StatusCode::OK
    );
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(status_of(&app, get.clone(), open, "").await, StatusCode::OK);
    }
    // a key never travels in a URL
    let in_query = format!("/v1/agents?access_token={}", keys[0]);
    assert_eq!(
        status_of(&app, get, &in_query, "").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_tenant_never_sees_or_touches_another_tenants_runs() {
    let (app, keys) = TestApp::spawn_with_keys(&[
        ("acme", "runs:read,runs:write"),
        ("globex", "runs:read,runs:write"),
    ])
    .await;
    let (acme, globex) = (&keys[0], &keys[1]);
    let run = create_as(&app, acme, json!({"agent": "waiter"})).await;
    assert_eq!(run["tenant"], "acme");
    let id = run["id"].as_str().unwrap();
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    for (method, path) in [
        (get.clone(), format!("/v1/runs/{id}")),
        (get.clone(), format!("/v1/runs/{id}/events")),
        (post.clone(), format!("/v1/runs/{id}/cancel")),
        (post.clone(), format!("/v1/runs/{id}/retry")),
    ] {
        assert_eq!(
            status_of(&app, method, &path, globex).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        signal_as(&app, globex, id, "go").await,
        StatusCode::NOT_FOUND
    );
    let stream = call(&app, get.clone(), &format!("/v1/runs/{id}/events"), globex)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::NOT_FOUND);
    let list = |key: &str| {
        let request = call(&app, get.clone(), "/v1/runs", key);
        async move {
            let page: Value = request.send().await.unwrap().json().await.unwrap();
            page["runs"].as_array().unwrap().len()
        }
    };
    assert_eq!(list(globex).await, 0);
    assert_eq!(list(acme).await, 1);
    // a dependency on another tenant's run is a dependency on no run
    let response = call(&app, post.clone(), "/v1/runs", globex)
        .json(&json!({"agent": "echo", "input": {"value": 1}, "depends_on": [id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "unknown_run");
    // the owner still acts on it
    assert_eq!(
        status_of(&app, get, &format!("/v1/runs/{id}"), acme).await,
        StatusCode::OK
    );
    assert_eq!(signal_as(&app, acme, id, "go").await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn idempotency_keys_are_per_tenant() {
    let (app, keys) =
        TestApp::spawn_with_keys(&[("acme", "runs:write"), ("globex", "runs:write")]).await;
    let mut ids = Vec::new();
    for key in &keys {
        let response = call(&app, reqwest::Method::POST, "/v1/runs", key)
            .header("idempotency-key", "order-7")
            .json(&json!({"agent": "echo", "input": {"value": 1}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let run: Value = response.json().await.unwrap();
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let (app, keys) = TestApp::spawn_with_keys(&[
        ("acme", "runs:read"),
        ("acme", "runs:write"),
        ("acme", "admin"),
    ])
    .await;
    let (reader, writer, admin) = (&keys[0], &keys[1], &keys[2]);
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    let body = json!({"agent": "echo", "input": {"value": 1}});
    let denied = call(&app, post.clone(), "/v1/runs", reader)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let problem: Value = denied.json().await.unwrap();
    assert_eq!(problem["code"], "forbidden");
    assert!(problem["detail"].as_str().unwrap().contains("runs:write"));
    assert_eq!(
        status_of(&app, get.clone(), "/v1/runs", writer).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(&app, get.clone(), "/v1/runs", reader).await,
        StatusCode::OK
    );
    for key in [reader, writer] {
        for path in ["/v1/workers", "/metrics"] {
            assert_eq!(
                status_of(&app, get.clone(), path, key).await,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        let bulk = call(&app, post.clone(), "/v1/runs/retry", key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(bulk.status(), StatusCode::FORBIDDEN);
    }
    // admin implies the rest
    create_as(&app, admin, body).await;
    for path in ["/v1/workers", "/metrics"] {
        assert_eq!(
            status_of(&app, get.clone(), path, admin).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        status_of(&app, get.clone(), "/metrics", "").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(&app, get, "/v1/runs", admin).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_run_token_reads_its_run_follows_its_events_and_sends_only_awaited_signals() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write")]).await;
    let run = create_as(&app, &keys[0], json!({"agent": "waiter"})).await;
    let other = create_as(
        &app,
        &keys[0],
        json!({"agent": "echo", "input": {"value": 1}}),
    )
    .await;
    let token = run["run_token"].as_str().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = run["run_token_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::minutes(59));
    let id = run["id"].as_str().unwrap();
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    assert_eq!(
        status_of(&app, get.clone(), &format!("/v1/runs/{id}"), token).await,
        StatusCode::OK
    );
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        status_of(&app, get.clone(), &format!("/v1/runs/{other_id}"), token).await,
        StatusCode::NOT_FOUND
    );
    for (method, path) in [
        (get.clone(), "/v1/runs".to_owned()),
        (get.clone(), "/v1/workers".to_owned()),
        (post.clone(), format!("/v1/runs/{id}/cancel")),
    ] {
        assert_eq!(
            status_of(&app, method, &path, token).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let creating = call(&app, post, "/v1/runs", token)
        .json(&json!({"agent": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(creating.status(), StatusCode::FORBIDDEN);
    // the token in the query, as an EventSource sends it
    let events = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut stream = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events?access_token={token}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the stream sends the events so far")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: created"));
    drop(stream);
    // signals: only the one the run is waiting for, once it waits
    wait_status(&app, &keys[0], id, "waiting").await;
    assert_eq!(
        signal_as(&app, token, id, "other").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(signal_as(&app, token, id, "go").await, StatusCode::ACCEPTED);
    wait_status(&app, &keys[0], id, "succeeded").await;
    // a token altered to name another run is refused
    let tampered = token.replace(id, other_id);
    assert_eq!(
        status_of(
            &app,
            reqwest::Method::GET,
            &format!("/v1/runs/{other_id}"),
            &tampered
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_the_cache_time() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read")]).await;
    let get = reqwest::Method::GET;
    assert_eq!(
        status_of(&app, get.clone(), "/v1/runs", &keys[0]).await,
        StatusCode::OK
    );
    let store = Store::connect(&app.db_url, &Default::default())
        .await
        .unwrap();
    assert!(store.revoke_key(&keys[0][3..15]).await.unwrap());
    store.close().await;
    let within = KEY_CACHE_TTL + Duration::from_secs(2);
    eventually(within, "the revoked key stops working", || async {
        let status = status_of(&app, get.clone(), "/v1/runs", &keys[0]).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
            "{status}"
        );
        if status == StatusCode::UNAUTHORIZED {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

#[tokio::test]
async fn beyond_loopback_the_server_refuses_to_start_without_keys_unless_told_otherwise() {
    let db = TestDb::new().await;
    let open = |insecure: bool| {
        let mut config = config(&db.url);
        config.listen = "0.0.0.0:0".parse().unwrap();
        config.http.insecure_no_auth = insecure;
        config
    };
    let refused = Application::build(open(false), test_agents(Default::default()))
        .await
        .err()
        .expect("no keys and no --insecure-no-auth");
    assert!(
        refused.to_string().contains("refusing to serve on 0.0.0.0"),
        "{refused:#}"
    );
    let insecure = Application::build(open(true), test_agents(Default::default()))
        .await
        .expect("--insecure-no-auth serves");
    insecure.store().close().await;
    drop(insecure);
    let store = Store::connect(&db.url, &Default::default()).await.unwrap();
    create_key(&store, "acme", "runs:read").await;
    store.close().await;
    let with_key = Application::build(open(false), test_agents(Default::default()))
        .await
        .expect("a key makes it safe to serve");
    with_key.store().close().await;
}

#[test]
fn the_keys_command_creates_lists_and_revokes_keys_showing_the_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let agentq = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
            .args(args)
            .args(["--database-url", &url])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, key, _) = agentq(&[
        "keys", "create", "--tenant", "acme", "--scopes", "admin", "--name", "ci",
    ]);
    assert_eq!(code, Some(0));
    let key = key.trim();
    assert!(
        key.starts_with("aq_") && key.len() == 3 + 12 + 1 + 64,
        "{key}"
    );
    let id = &key[3..15];
    let (_, list, _) = agentq(&["keys", "list"]);
    let row = list.lines().find(|l| l.starts_with(id)).expect("listed");
    assert!(row.contains("\tacme\tadmin\tci\t"), "{row}");
    assert!(
        !list.contains(&key[16..]),
        "the secret is never shown again"
    );
    assert_eq!(agentq(&["keys", "revoke", id]).0, Some(0));
    let (_, list, _) = agentq(&["keys", "list"]);
    assert!(
        !list
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .ends_with("\t-")
    );
    let (code, _, err) = agentq(&["keys", "revoke", id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no live key"), "{err}");
    let (code, _, err) = agentq(&["keys", "create", "--tenant", "Bad Name"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("tenant `Bad Name` must be"), "{err}");
    let (code, _, err) = agentq(&["keys", "create", "--tenant", "a", "--scopes", "root"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown scope `root`"), "{err}");
}

#[tokio::test]
async fn a_method_a_path_does_not_have_is_a_405_with_allow_even_without_a_credential() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write")]).await;
    for key in ["", keys[0].as_str()] {
        let response = call(&app, reqwest::Method::TRACE, "/v1/runs", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{key}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // a method the path has still needs the credential
    assert_eq!(
        status_of(&app, reqwest::Method::GET, "/v1/runs", "").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_keys_only_requests_addressed_to_localhost_are_answered() {
    // a DNS-rebinding page or a local proxy sends its own host name
    let app = TestApp::spawn().await;
    let as_host = |host: &str| {
        app.client
            .get(app.url("/v1/agents"))
            .header("host", host)
            .send()
    };
    assert_eq!(
        as_host("evil.example").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let problem: Value = as_host("evil.example:8080")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(problem["code"], "forbidden");
    assert_eq!(
        as_host("localhost:8080").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(as_host("127.0.0.1").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_run_token_signals_without_the_signing_secret_and_lists_agents_a_writer_cannot() {
    let secret = agentq::api::Secret("s3cret-for-outside-systems".into());
    let (app, keys) = TestApp::spawn_with_keys_and(&[("acme", "runs:write")], |c| {
        c.http.signal_secret = Some(secret);
    })
    .await;
    let run = create_as(&app, &keys[0], json!({"agent": "waiter"})).await;
    let (id, token) = (
        run["id"].as_str().unwrap(),
        run["run_token"].as_str().unwrap(),
    );
    assert_eq!(
        status_of(&app, reqwest::Method::GET, "/v1/agents", &keys[0]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(&app, reqwest::Method::GET, "/v1/agents", token).await,
        StatusCode::OK
    );
    // the key still has to sign; the token does not
    assert_eq!(
        signal_as(&app, &keys[0], id, "go").await,
        StatusCode::UNAUTHORIZED
    );
    eventually(
        Duration::from_secs(5),
        "the run waits for the signal",
        || async {
            let status = signal_as(&app, token, id, "go").await;
            // 403 until the run waits for the signal
            assert!(
                status == StatusCode::ACCEPTED || status == StatusCode::FORBIDDEN,
                "{status}"
            );
            if status == StatusCode::ACCEPTED {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
}

/// A key that may change runs but not read them gets, in the answers to its cancels,
/// changes, retries and signals, the run without what it holds (input, metadata, result,
/// error, …); a key that reads them gets the run whole.
#[tokio::test]
async fn a_write_only_key_sees_no_run_content_in_the_answers_to_its_changes() {
    let (app, keys) =
        TestApp::spawn_with_keys(&[("acme", "runs:write"), ("acme", "runs:read,runs:write")]).await;
    let (writer, reader) = (&keys[0], &keys[1]);
    const SECRET: &str = "the-secret-in-the-input";
    let later = |input: Value| {
        json!({"agent": "echo", "input": input, "run_at": "2999-01-01T00:00:00Z",
               "metadata": {"customer": "c-17"}})
    };
    let answer = |method: reqwest::Method, path: String, key: &str, body: Value| {
        let request = call(&app, method, &path, key).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(status.is_success(), "{path}: {status} {text}");
            (text.clone(), serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let hidden = |what: &str, text: &str, run: &Value| {
        assert!(!text.contains(SECRET), "{what} shows the input: {text}");
        assert!(!text.contains("c-17"), "{what} shows the metadata: {text}");
        assert_eq!(run["input"], Value::Null, "{what}");
        assert_eq!(run["metadata"], json!({}), "{what}");
        assert!(run["status"].is_string() && run["id"].is_string(), "{what}");
    };
    let (post, patch) = (reqwest::Method::POST, reqwest::Method::PATCH);

    let id = create_as(&app, writer, later(json!({"value": SECRET}))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (text, changed) = answer(
        patch,
        format!("/v1/runs/{id}"),
        writer,
        json!({"priority": 5}),
    )
    .await;
    hidden("a change", &text, &changed);
    assert_eq!(changed["priority"], 5);
    let (text, signalled) = answer(
        post.clone(),
        format!("/v1/runs/{id}/signals"),
        writer,
        json!({"name": "go"}),
    )
    .await;
    hidden("a signal", &text, &signalled["run"]);
    let (text, cancelled) = answer(
        post.clone(),
        format!("/v1/runs/{id}/cancel"),
        writer,
        json!({}),
    )
    .await;
    hidden("a cancel", &text, &cancelled);
    assert_eq!(cancelled["status"], "cancelled");

    let failing = json!({"agent": "echo", "metadata": {"customer": "c-17"},
                         "input": {"value": SECRET, "fail_permanently": true}});
    let id = create_as(&app, writer, failing).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_status(&app, reader, &id, "failed").await;
    let (text, retried) = answer(
        post.clone(),
        format!("/v1/runs/{id}/retry"),
        writer,
        json!({}),
    )
    .await;
    hidden("a retry", &text, &retried);
    assert_eq!(retried["error"], Value::Null);

    // a key that reads sees what it changed
    let id = create_as(&app, reader, later(json!({"value": SECRET}))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, cancelled) = answer(post, format!("/v1/runs/{id}/cancel"), reader, json!({})).await;
    assert_eq!(cancelled["input"], json!({"value": SECRET}));
    assert_eq!(cancelled["metadata"], json!({"customer": "c-17"}));
}

/// Pausing or resuming a schedule needs only `runs:write`; without `runs:read` the answer
/// leaves out the schedule's run template.
#[tokio::test]
async fn a_write_only_key_sees_no_schedule_template_in_the_answers_to_pause_and_resume() {
    let (app, keys) =
        TestApp::spawn_with_keys(&[("acme", "runs:write"), ("acme", "runs:read,runs:write")]).await;
    let (writer, reader) = (&keys[0], &keys[1]);
    let body = json!({"interval": "1h", "agent": "echo", "input": {"value": "the-secret"}});
    let created = call(&app, reqwest::Method::POST, "/v1/schedules", writer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (key, action) in [(writer, "pause"), (writer, "resume"), (reader, "pause")] {
        let path = format!("/v1/schedules/{id}/{action}");
        let response = call(&app, reqwest::Method::POST, &path, key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{action}");
        let text = response.text().await.unwrap();
        let schedule: Value = serde_json::from_str(&text).unwrap();
        if key == writer {
            assert!(!text.contains("the-secret"), "{action}: {text}");
            assert_eq!(schedule["run"], Value::Null, "{action}");
        } else {
            assert_eq!(schedule["run"]["input"], json!({"value": "the-secret"}));
        }
    }
}
