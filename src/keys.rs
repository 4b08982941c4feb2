//! `agentq keys create|list|revoke`: API keys from the command line, against the
//! database at `--database-url` (migrated first, so a fresh database works).

use anyhow::Context;

use crate::app::AppConfig;
use crate::config::KeysCommand;
use crate::domain::{NewKey, Scopes, Tenant};
use crate::store::{ApiKeyInfo, Store};

pub async fn run(command: KeysCommand, config: &AppConfig) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    store.migrate().await.context("applying migrations")?;
    let done = execute(command, &store).await;
    store.close().await;
    done
}

async fn execute(command: KeysCommand, store: &Store) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
        } => {
            let tenant = Tenant::parse(&tenant).map_err(anyhow::Error::msg)?;
            let scopes = Scopes::parse(&scopes).map_err(anyhow::Error::msg)?;
            let key = NewKey::generate();
            let info = ApiKeyInfo {
                id: key.id.clone(),
                tenant: tenant.to_string(),
                scopes: scopes.to_string(),
                name,
                created_at: chrono::Utc::now().timestamp_millis(),
                revoked_at: None,
            };
            store.insert_key(&info, &key.secret_hash).await?;
            eprintln!(
                "key {} for tenant {tenant} ({scopes}); it is shown only now:",
                key.id
            );
            println!("{}", key.token);
        }
        KeysCommand::List => {
            println!("ID\tTENANT\tSCOPES\tNAME\tCREATED\tREVOKED");
            for k in store.list_keys().await? {
                let at = |ms: i64| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default()
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.tenant,
                    k.scopes,
                    k.name.as_deref().unwrap_or("-"),
                    at(k.created_at),
                    k.revoked_at.map(at).unwrap_or_else(|| "-".into()),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = id.trim_start_matches("aq_");
            let id = id.split('_').next().unwrap_or(id);
            anyhow::ensure!(
                store.revoke_key(id).await?,
                "no live key with id {id} (see `agentq keys list`)"
            );
            eprintln!(
                "key {id} revoked; it stops working within {} s",
                crate::api::KEY_CACHE_TTL.as_secs()
            );
        }
    }
    Ok(())
}
