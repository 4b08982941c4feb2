//! TLS to PostgreSQL and Redis, as managed services require it: throwaway servers with TLS
//! on and certificates made here (a CA of the test's own, a server certificate for
//! `localhost` only, a client certificate for `certuser`). PostgreSQL refuses connections
//! without TLS, so a run that succeeds went through TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentq::jobs::{RedisOptions, RedisTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;

use crate::helpers::{TestApp, worker_problem};
use crate::process::{Agentq, free_port};
use crate::support::eventually::eventually;
use crate::throwaway::{ThrowawayPostgres, ThrowawayRedis};

/// PEM files: `ca.pem`, `server.pem` + `server.key` (for `localhost`, no IP address),
/// `client.pem` + `client.key` (common name `certuser`).
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "agentq test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(
            vec!["localhost".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(vec![], "certuser", ExtendedKeyUsagePurpose::ClientAuth);
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server),
            ("server.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A PostgreSQL that takes TLS connections only: `postgres` without a password,
/// `certuser` by its client certificate.
fn postgres_with_tls(certs: &Path) -> ThrowawayPostgres {
    let copy = |from: &str, to: &Path| std::fs::copy(certs.join(from), to).unwrap();
    ThrowawayPostgres::start_with(|data: &Path| {
        copy("server.pem", &data.join("server.crt"));
        copy("server.key", &data.join("server.key"));
        copy("ca.pem", &data.join("root.crt"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(data.join("server.key"), private).unwrap();
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nssl = on\nssl_ca_file = 'root.crt'\n");
        std::fs::write(&conf, text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all postgres 127.0.0.1/32 trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             host all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
    })
}

/// `postgres://USER@localhost:PORT/postgres?QUERY`.
fn pg_url(pg: &ThrowawayPostgres, user: &str, query: &str) -> String {
    format!("postgres://{user}@localhost:{}/postgres?{query}", pg.port())
}

async fn connect_error(url: &str) -> String {
    match sqlx::PgConnection::connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

/// Runs an echo run through `app` and returns it, succeeded.
async fn echo(app: &TestApp, value: u32) -> Value {
    let id = app
        .create(json!({"agent": "echo", "input": {"value": value}}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(run["result"]["value"], value);
    run
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_presents_a_client_certificate() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_owned();
    let pg = tokio::task::spawn_blocking(move || postgres_with_tls(&dir))
        .await
        .unwrap();
    let ca = certs.arg("ca.pem");

    // without TLS the server refuses; unverified TLS (`require`) gets in
    let refused = connect_error(&pg_url(&pg, "postgres", "sslmode=disable")).await;
    assert!(refused.contains("no encryption"), "{refused}");
    let mut admin = sqlx::PgConnection::connect(&pg_url(&pg, "postgres", "sslmode=require"))
        .await
        .unwrap();
    sqlx::query("CREATE ROLE certuser LOGIN SUPERUSER")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();

    // verify-full: the certificate must chain to sslrootcert and name the host
    let full = pg_url(
        &pg,
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let app = TestApp::spawn_on(&full, |_| {}).await;
    echo(&app, 1).await;
    app.shutdown().await;
    let wrong_host = full.replace("@localhost:", "@127.0.0.1:");
    let error = connect_error(&wrong_host).await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // verify-ca, which skips the name, is refused: sqlx trusts the system's roots beside
    // sslrootcert, so any publicly issued certificate would pass; so is a sslrootcert
    // that `require` would not check
    let ca_only = wrong_host.replace("verify-full", "verify-ca");
    let refused = agentq::store::check_postgres_url(&ca_only).unwrap_err();
    assert!(refused.contains("verify-ca is not supported"), "{refused}");
    let unchecked = full.replace("verify-full", "require");
    let refused = agentq::store::check_postgres_url(&unchecked).unwrap_err();
    assert!(refused.contains("sslrootcert is not checked"), "{refused}");
    assert_eq!(agentq::store::check_postgres_url(&full), Ok(()));
    // the system's roots do not know the test's CA: agentq says which setting to look at
    let unknown_ca = pg_url(&pg, "postgres", "sslmode=verify-full");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args(["migrate", "--database-url", &unknown_ca])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--database-url postgres://***@localhost")
            && stderr.contains("?sslmode=verify-full (with its sslmode, sslrootcert")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );

    // a client certificate, for a user the server knows by it alone
    let by_cert = pg_url(
        &pg,
        "certuser",
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            certs.arg("client.pem"),
            certs.arg("client.key")
        ),
    );
    let app = TestApp::spawn_on(&by_cert, |_| {}).await;
    echo(&app, 3).await;
    app.shutdown().await;
    let error = connect_error(&pg_url(
        &pg,
        "certuser",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        error.contains("requires a valid client certificate"),
        "{error}"
    );
}

/// A Redis whose TLS port asks for a client certificate when `clients` is `yes`;
/// returns the server and its TLS port.
fn redis_with_tls(certs: &Path, clients: &str) -> (ThrowawayRedis, u16) {
    let port = free_port();
    let file = |name: &str| certs.join(name).display().to_string();
    let args = [
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        file("server.pem"),
        "--tls-key-file".to_owned(),
        file("server.key"),
        "--tls-ca-cert-file".to_owned(),
        file("ca.pem"),
        "--tls-auth-clients".to_owned(),
        clients.to_owned(),
    ];
    (ThrowawayRedis::start_with(&args), port)
}

fn redis_options(url: String, tls: RedisTls) -> RedisOptions {
    RedisOptions {
        url,
        tls,
        dispatch_window: 100,
        poll_interval: Duration::from_millis(25),
        namespace: format!("agentq-test-{}", uuid::Uuid::now_v7().simple()),
    }
}

#[tokio::test]
async fn redis_over_tls_is_verified_against_the_ca_file_and_unverified_only_when_asked() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_owned();
    let (redis, port) = tokio::task::spawn_blocking(move || redis_with_tls(&dir, "optional"))
        .await
        .unwrap();
    let url = format!("rediss://localhost:{port}");
    let with = |options: RedisOptions| {
        move |c: &mut agentq::app::AppConfig| c.worker.redis = Some(options)
    };
    let verified = RedisTls {
        ca_file: Some(certs.path("ca.pem")),
        ..Default::default()
    };
    let app = TestApp::spawn_with(with(redis_options(url.clone(), verified))).await;
    echo(&app, 1).await;
    app.shutdown().await;

    // the system's roots do not know the test's CA: the worker waits, and says why
    let app = TestApp::spawn_with(with(redis_options(url.clone(), RedisTls::default()))).await;
    let problem = worker_problem(&app).await;
    assert!(
        problem.contains(&format!("cannot connect to Redis at {url}"))
            && problem.to_lowercase().contains("certificate"),
        "{problem}"
    );
    app.shutdown().await;
    // …unless told not to check
    let insecure = format!("{url}/#insecure");
    let app = TestApp::spawn_with(with(redis_options(insecure, RedisTls::default()))).await;
    echo(&app, 2).await;
    app.shutdown().await;
    drop(redis);
}

#[tokio::test]
async fn redis_over_tls_presents_a_client_certificate_when_the_server_asks() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_owned();
    let (redis, port) = tokio::task::spawn_blocking(move || redis_with_tls(&dir, "yes"))
        .await
        .unwrap();
    let url = format!("rediss://localhost:{port}");
    let tls = |client: bool| RedisTls {
        ca_file: Some(certs.path("ca.pem")),
        client_cert: client.then(|| certs.path("client.pem")),
        client_key: client.then(|| certs.path("client.key")),
    };
    let app =
        TestApp::spawn_with(|c| c.worker.redis = Some(redis_options(url.clone(), tls(true)))).await;
    echo(&app, 1).await;
    app.shutdown().await;
    let app =
        TestApp::spawn_with(|c| c.worker.redis = Some(redis_options(url.clone(), tls(false))))
            .await;
    let problem = worker_problem(&app).await;
    assert!(problem.contains("cannot connect to Redis"), "{problem}");
    app.shutdown().await;
    drop(redis);
}

/// The suite's slice through TLS on both sides: an API process and two worker processes
/// on a TLS PostgreSQL, delivering through a TLS Redis; one worker is killed with SIGKILL
/// mid-run and its run is retried by the other after the lease.
#[tokio::test]
async fn kill_9_of_a_worker_on_tls_postgres_and_tls_redis_loses_no_run() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_owned();
    let (pg, (redis, redis_port)) = tokio::task::spawn_blocking(move || {
        (postgres_with_tls(&dir), redis_with_tls(&dir, "optional"))
    })
    .await
    .unwrap();
    let ca = certs.arg("ca.pem");
    let db = pg_url(
        &pg,
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let queue = format!("rediss://localhost:{redis_port}");
    let tls_args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--queue-url".to_owned(),
            queue.clone(),
            "--queue-ca-file".to_owned(),
            ca.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let api_args = tls_args(&[]);
    let api_args: Vec<&str> = api_args.iter().map(String::as_str).collect();
    let api = Agentq::start_role("api", &db, &api_args).await;
    let worker_args = tls_args(&["--concurrency", "4"]);
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let victim = Agentq::start_role("worker", &db, &worker_args).await;

    // a run the victim holds when it dies, taken back after the 1 s lease and run
    // again by the survivor, with no two attempts at once
    let lost = api
        .create(json!({"agent": "echo", "input": {"value": 1, "delay_ms": 2_000}}))
        .await;
    api.wait_for_status(&lost, "running").await;
    drop(victim); // SIGKILL
    let survivor = Agentq::start_role("worker", &db, &worker_args).await;
    let quick = api
        .create(json!({"agent": "echo", "input": {"value": 2}}))
        .await;
    api.wait_for_status(&quick, "succeeded").await;
    let run = eventually(Duration::from_secs(30), "the lost run finishes", || async {
        let run = api.get_json(&format!("/v1/runs/{lost}")).await;
        if run["status"] == "succeeded" {
            Ok(run)
        } else {
            Err(run)
        }
    })
    .await;
    assert_eq!(run["attempt"], 2, "{run}");
    let events = api.get_json(&format!("/v1/runs/{lost}/events")).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let lost_at = types.iter().position(|t| *t == "attempt_lost");
    let started: Vec<usize> = (0..types.len())
        .filter(|i| types[*i] == "started")
        .collect();
    assert!(
        matches!((lost_at, started.as_slice()), (Some(l), [a, b]) if a < &l && &l < b),
        "lost, then started again: {types:?}"
    );
    drop(survivor);
    drop(api);
    drop((pg, redis));
}
