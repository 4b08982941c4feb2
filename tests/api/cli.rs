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
        &["--secret-hosts", "NOPE=api.example.com"],
        "--secret-hosts names `NOPE`",
    );
    assert_usage_error(
        &[
            "--secret",
            "X=1",
            "--secret-hosts",
            "X=https://api.example.com",
        ],
        "--secret-hosts `https://api.example.com`",
    );
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
    // and README's configuration table has a row for every one of them
    let readme = include_str!("../../README.md");
    use clap::CommandFactory;
    for arg in agentq::config::Cli::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["help", "version"].contains(&long) {
            continue;
        }
        let row = readme.lines().any(|l| {
            l.starts_with("| `--")
                && l.split(" | ")
                    .next()
                    .unwrap()
                    .contains(&format!("`--{long}`"))
        });
        assert!(row, "README's configuration table has no row for --{long}");
    }
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

#[test]
fn a_settings_file_sits_under_the_environment_and_the_flags_and_config_check_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentq.toml");
    std::fs::write(
        &file,
        r#"
# every key is a flag's name
database-url = "postgres://agentq:hunter2@db.example.com/agentq"
lease = "20s"
concurrency = 8
max-attempts = 5
http-allow = ["api.example.com", "10.0.0.0/8"]
webhook-secret = "whsec_hunter2"
secret = ["CRM_TOKEN=hunter2"]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--concurrency",
            "4",
            "config",
            "check",
        ])
        .env("AGENTQ_LEASE", "30s")
        .env_remove("AGENTQ_MAX_ATTEMPTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        r#"concurrency = "4"  # flag"#,
        r#"lease = "30s"  # environment"#,
        r#"max-attempts = "5"  # file"#,
        r#"http-allow = ["api.example.com", "10.0.0.0/8"]  # file"#,
        r#"database-url = "postgres://***@db.example.com/agentq"  # file"#,
        r#"webhook-secret = "***"  # file"#,
        r#"secret = ["CRM_TOKEN=***"]  # file"#,
        r#"run-timeout = "5m"  # default"#,
        "# named secrets: CRM_TOKEN (values hidden)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("hunter2"), "{stdout}");
    // nor does --help, which shows defaults: the file's are not shown
    let help = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args(["--config", file.to_str().unwrap(), "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("--webhook-secret") && !help.contains("hunter2"),
        "{help}"
    );

    // README's example file is one agentq takes
    let readme = include_str!("../../README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README shows a settings file");
    std::fs::write(&file, example).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a file's mistakes are named with the file, like a flag's with the flag
    for (text, says) in [
        ("nope = 1\n", "no setting is named `nope`"),
        ("lease = [\n", "(line 1)"),
        ("lease = [\"1s\", \"2s\"]\n", "`lease` takes one value"),
        ("lease = \"1ms\"\n", "--lease must be at least 1s"),
        (
            "lease = { a = 1 }\n",
            "must be a string, a number, a boolean",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
            .args(["config", "check"])
            .env("AGENTQ_CONFIG", &file)
            .env_remove("AGENTQ_LEASE")
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
}

#[tokio::test]
async fn a_server_starts_from_a_settings_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::process::free_port();
    let file = dir.path().join("agentq.toml");
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("agentq.db").display()
    );
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{port}\"\ndatabase-url = \"{db}\"\nagents = [\"echo\"]\n"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args(["--config", file.to_str().unwrap()])
        .env_remove("AGENTQ_DATABASE_URL")
        .env_remove("AGENTQ_LISTEN")
        .env_remove("AGENTQ_QUEUE_URL")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut created = None;
    for _ in 0..250 {
        if let Ok(response) = client
            .post(format!("{base}/v1/runs"))
            .json(&serde_json::json!({"agent": "echo", "input": {"value": 3}}))
            .send()
            .await
        {
            created = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let id = created.expect("the server from the file answers")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::support::eventually::eventually(
        std::time::Duration::from_secs(10),
        "the run succeeds",
        || async {
            let run: serde_json::Value = client
                .get(format!("{base}/v1/runs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (run["status"] == "succeeded").then_some(()).ok_or(run)
        },
    )
    .await;
    child.kill().await.unwrap();
}

/// `agentq serve` on a fresh SQLite file, logging at info: its stderr lines arrive on
/// `lines` as they are written.
struct Logging {
    child: tokio::process::Child,
    port: u16,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

fn serve_logging() -> Logging {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::process::free_port();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &db,
        ])
        .env_remove("AGENTQ_QUEUE_URL")
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Logging {
        child,
        port,
        lines,
        _dir: dir,
    }
}

/// The log lines up to the first holding `needle`, which must come within 20 s.
async fn until(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> Vec<String> {
    let mut got = Vec::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            let hit = line.contains(needle);
            got.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no log line with {needle:?}: {got:?}"
    );
    got
}

#[tokio::test]
async fn start_up_says_where_the_dashboard_docs_and_health_are_in_plain_text() {
    let mut server = serve_logging();
    let port = server.port;
    let up = until(&mut server.lines, "agentq is up")
        .await
        .pop()
        .unwrap();
    for part in ["/ui/", "/docs", "/readyz"] {
        let url = format!("http://127.0.0.1:{port}{part}");
        assert!(up.contains(&url), "{url} missing from: {up}");
    }
    // not a terminal: no colour codes
    assert!(!up.contains('\u{1b}'), "{up:?}");
}

/// A run cancelled by request while it runs: its attempt stops with an info line saying so,
/// and no warning (the warnings are for an attempt that lost its run to an expired lease).
#[tokio::test]
async fn a_cancel_is_logged_as_such_without_warnings() {
    let mut server = serve_logging();
    let (port, rx) = (server.port, &mut server.lines);
    let mut seen = until(rx, "agentq is up").await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/v1/runs"))
        .json(&serde_json::json!({"agent": "echo", "input": {"value": 1, "delay_ms": 60000}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    crate::support::eventually::eventually(
        std::time::Duration::from_secs(10),
        "the run runs",
        || {
            let client = client.clone();
            let url = format!("{base}/v1/runs/{id}");
            async move {
                let run: serde_json::Value =
                    client.get(url).send().await.unwrap().json().await.unwrap();
                (run["status"] == "running").then_some(()).ok_or(run)
            }
        },
    )
    .await;
    let cancel = client
        .post(format!("{base}/v1/runs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    seen.extend(until(rx, "the attempt of a cancelled run stopped").await);
    // a little longer, for a warning that would come after
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    let warnings: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("WARN") && !l.contains("no API keys"))
        .collect();
    assert!(
        warnings.is_empty(),
        "a cancel logged warnings: {warnings:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("INFO") && l.contains(&id)),
        "{seen:?}"
    );
    server.child.kill().await.unwrap();
}
