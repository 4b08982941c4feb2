use std::process::Command;

fn agentq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args(args)
        .env_remove("AGENTQ_LEASE")
        .output()
        .expect("the agentq binary runs")
}

fn assert_usage_error(args: &[&str], mentions: &str) {
    let out = agentq(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(mentions), "{stderr}");
}

#[test]
fn a_bad_setting_is_a_one_line_error_with_exit_code_2() {
    assert_usage_error(&["--lease", "banana"], "--lease");
    assert_usage_error(&["serve", "--lease", "10ms"], "--lease");
    assert_usage_error(&["--concurrency", "0"], "--concurrency");
    assert_usage_error(&["--agent-limit", "http"], "--agent-limit");
    assert_usage_error(&["--agent-limit", "http=0"], "at least 1");
    assert_usage_error(&["worker", "--agent-limit", "No.pe=2"], "`No.pe`");
    assert_usage_error(&["--listen", "nowhere"], "--listen");
    assert_usage_error(
        &["worker", "--metrics-listen", "nowhere"],
        "--metrics-listen",
    );
    assert_usage_error(&["--database-url", "mysql://localhost/x"], "--database-url");
    assert_usage_error(
        &["--backoff-base", "1m", "--backoff-cap", "1s"],
        "--backoff-cap",
    );
    assert_usage_error(&["launch"], "launch");
    assert_usage_error(&["worker", "--agents", "echo,nope"], "nope");
    assert_usage_error(&["--dispatch-window", "0"], "--dispatch-window");
    assert_usage_error(&["--dispatch-window", "5001"], "--dispatch-window");
    assert_usage_error(&["--http-allow", "https://api.example.com"], "not a URL");
    assert_usage_error(&["--http-allow", "10.0.0.5/8"], "--http-allow");
    assert_usage_error(&["--http-allow", "api.example.com,"], "empty pattern");
    assert_usage_error(&["--retain-failed", "0s"], "--retain-failed");
    assert_usage_error(&["--retain-succeeded", "7"], "--retain-succeeded");
    assert_usage_error(&["--retain-max-runs", "0"], "--retain-max-runs");
    assert_usage_error(&["--otlp-endpoint", "collector:4318"], "--otlp-endpoint");
    assert_usage_error(&["--secret", "NOVALUE"], "--secret must be NAME=VALUE");
    assert_usage_error(&["--secret", "a-b=hunter2"], "got `a-b`");
    assert_usage_error(
        &["--secrets-file", "/nonexistent/agentq.env"],
        "--secrets-file /nonexistent/agentq.env",
    );
}

#[test]
fn a_bad_secret_is_named_by_its_source_and_line_never_by_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.env");
    std::fs::write(&file, "# tokens\nGOOD=1\nhunter2\n").unwrap();
    let out = agentq(&["--secrets-file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("line 3: not NAME=VALUE"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .env("AGENTQ_SECRET_EMPTY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENTQ_SECRET_EMPTY"));
}

#[test]
fn a_wrong_tls_setting_is_named_at_start() {
    let missing = "/nonexistent/agentq-ca.pem";
    let pg = |query: &str| format!("postgres://u:hunter2@127.0.0.1:1/db?{query}");
    for (url, mentions) in [
        (pg("sslmode=sometimes"), "--database-url"),
        (
            pg(&format!("sslmode=verify-full&sslrootcert={missing}")),
            "--database-url: sslrootcert=/nonexistent/agentq-ca.pem: No such file",
        ),
        (pg(&format!("sslcert={missing}")), "sslcert="),
        (pg(&format!("sslkey={missing}")), "sslkey="),
        (
            pg("sslmode=verify-full&sslpassword=hunter2"),
            "unknown parameter `sslpassword`",
        ),
        (pg("sslmode=verify-ca"), "verify-ca is not supported"),
        (
            pg("sslmode=require&sslrootcert=/etc/hostname"),
            "holds no PEM",
        ),
    ] {
        assert_usage_error(&["migrate", "--database-url", &url], mentions);
        let stderr = String::from_utf8(agentq(&["migrate", "--database-url", &url]).stderr);
        assert!(!stderr.unwrap().contains("hunter2"), "the password leaked");
    }
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate").unwrap();
    let not_pem = not_pem.path().to_str().unwrap();
    let rediss = "rediss://:hunter2@127.0.0.1:1";
    for (args, mentions) in [
        (
            vec!["--queue-url", rediss, "--queue-ca-file", missing],
            "--queue-ca-file /nonexistent/agentq-ca.pem: No such file",
        ),
        (
            vec!["--queue-url", rediss, "--queue-ca-file", not_pem],
            "--queue-ca-file",
        ),
        (
            vec![
                "--queue-url",
                "redis://127.0.0.1:1",
                "--queue-ca-file",
                not_pem,
            ],
            "--queue-ca-file needs a rediss:// --queue-url",
        ),
        (vec!["--queue-ca-file", not_pem], "needs a rediss://"),
        (
            vec!["--queue-url", rediss, "--queue-client-cert", not_pem],
            "--queue-client-cert",
        ),
        (
            vec![
                "--queue-url",
                "rediss://:hunter2@127.0.0.1:1/#insecure",
                "--queue-ca-file",
                missing,
            ],
            "not used with an `#insecure` --queue-url",
        ),
        (
            vec![
                "--queue-url",
                "rediss://:hun/ter2@127.0.0.1:1",
                "--queue-ca-file",
                missing,
            ],
            "--queue-ca-file",
        ),
    ] {
        let mut args = args;
        args.insert(0, "worker");
        assert_usage_error(&args, mentions);
        assert!(
            !String::from_utf8(agentq(&args).stderr)
                .unwrap()
                .contains("hunter2")
        );
    }
}

#[test]
fn a_queue_url_that_is_not_redis_is_refused_without_showing_its_password() {
    let out = agentq(&["--queue-url", "amqp://user:hunter2@broker/"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--queue-url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

#[test]
fn settings_fall_back_to_agentq_environment_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .env("AGENTQ_LEASE", "banana")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--lease"));
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = agentq(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--database-url",
        "--concurrency",
        "--lease",
        "--shutdown-timeout",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("AGENTQ_LISTEN") && help.contains("AGENTQ_DATABASE_URL"));
}

#[test]
fn the_openapi_command_prints_the_committed_document() {
    let out = agentq(&["openapi"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("openapi/openapi.json").unwrap()).unwrap();
    assert!(
        printed == committed,
        "`agentq openapi` differs from openapi/openapi.json: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let url = format!("sqlite://{}", db.display());
    let out = agentq(&["migrate", "--database-url", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // read through SQLite, not the file: the schema may still be in the WAL
    let applied = || async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .unwrap();
        let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (tables, migrations)
    };
    let (tables, migrations) = applied().await;
    for table in ["runs", "run_events"] {
        assert!(tables.iter().any(|t| t == table), "{table}: {tables:?}");
    }
    let files = std::fs::read_dir("migrations/sqlite").unwrap().count();
    assert_eq!(migrations, files as i64, "every migration applied once");
    // running it again is a no-op
    let again = agentq(&["migrate", "--database-url", &url]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(applied().await, (tables, migrations));
}

/// Every URL scheme README names for a setting is one agentq accepts at start (the real
/// servers behind them are reached in the tls and redis_ha tests); a scheme README names
/// that agentq refuses fails here.
#[test]
fn every_url_scheme_the_readme_names_is_accepted() {
    use agentq::config::Cli;
    use clap::Parser;
    let readme = include_str!("../../README.md");
    let mut schemes = std::collections::BTreeSet::new();
    for (i, _) in readme.match_indices("://") {
        let scheme: String = readme[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || "+.-".contains(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        schemes.insert(scheme);
    }
    // web addresses: URLs of requests and callbacks, not of a database or queue
    for web in ["http", "https"] {
        schemes.remove(web);
    }
    assert!(schemes.contains("redis+sentinel"), "{schemes:?}");
    for scheme in &schemes {
        let (flag, url) = match scheme.as_str() {
            "sqlite" => ("--database-url", "sqlite://agentq.db".to_owned()),
            "postgres" | "postgresql" => (
                "--database-url",
                format!("{scheme}://u@db.example.com/agentq"),
            ),
            "redis" | "rediss" => ("--queue-url", format!("{scheme}://cache.example.com:6379")),
            "redis+sentinel" => (
                "--queue-url",
                "redis+sentinel://s1:26379,s2:26379/mymaster".to_owned(),
            ),
            other => panic!("README names `{other}://`: add it here with the setting it is for"),
        };
        let cli = Cli::try_parse_from(["agentq", flag, &url]).unwrap();
        assert_eq!(cli.settings.validate(), Ok(()), "{url}");
    }
}
