//! The `agentq` binary: parses settings and runs the chosen role.

use std::process::ExitCode;

use agentq::app::{Application, Role, builtin_agents};
use agentq::config::{Cli, Command};
use agentq::jobs::{AgentRegistry, served_agents};
use agentq::store::Store;
use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(e.to_string().lines().next().unwrap_or("invalid arguments")),
    };
    if let Err(message) = cli.settings.validate() {
        return usage_error(&message);
    }
    let agents = builtin_agents();
    if let Err(e) = served_agents(&agents, cli.settings.agents.as_deref()) {
        return usage_error(&format!("--agents: {e}"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(run(cli, agents)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A bad setting: one line on stderr and exit code 2.
fn usage_error(message: &str) -> ExitCode {
    let message = message.trim_start_matches("error: ");
    eprintln!("agentq: {message} (see agentq --help)");
    ExitCode::from(2)
}

async fn run(cli: Cli, agents: AgentRegistry) -> anyhow::Result<()> {
    let role = match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&agentq::api::openapi())?);
            return Ok(());
        }
        Command::Migrate => {
            agentq::telemetry::init(cli.settings.log_format);
            let config = cli.settings.app_config(Role::Worker);
            let store = Store::connect(&config.database_url, &config.store).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!(database = %config.database_url, "migrations applied");
            return Ok(());
        }
        Command::Serve => Role::Serve,
        Command::Api => Role::Api,
        Command::Worker => Role::Worker,
    };
    agentq::telemetry::init(cli.settings.log_format);
    let app = Application::build(cli.settings.app_config(role), agents).await?;
    app.run_until(shutdown_signal()).await
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
