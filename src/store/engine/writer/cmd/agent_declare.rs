//! `AgentDeclare`: an external worker declares an agent (name, input schema, description,
//! defaults). The row is created or updated; a new input schema counts the version up and
//! is recorded with who declared it and when.

use sqlx::Row;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{AgentDeclaration, Declared, DeclaredAgent};
use crate::store::{StoreError, from_ms};

/// Replies with the agent as stored and what the declaration changed.
pub(in crate::store) struct AgentDeclare(pub(in crate::store) AgentDeclaration);

impl Command for AgentDeclare {
    type Reply = Declared;
}

impl Apply for AgentDeclare {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Declared>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        // one at a time: two declarations of one agent in a batch land in arrival order
        for AgentDeclare(agent) in commands {
            // serde_json's maps are sorted, so equal schemas are equal text
            let schema = agent.input_schema.to_string();
            let defaults = &agent.defaults;
            let row = sqlx::query(sql::DECLARE_AGENT)
                .bind(&agent.name)
                .bind(&agent.description)
                .bind(&schema)
                .bind(defaults.timeout_ms.map(|v| v as i64))
                .bind(defaults.max_attempts.map(i64::from))
                .bind(defaults.backoff_base_ms.map(|v| v as i64))
                .bind(defaults.backoff_cap_ms.map(|v| v as i64))
                .bind(&agent.declared_by)
                .bind(b.now)
                .fetch_one(&mut *b.conn)
                .await?;
            let version: i64 = row.try_get("version")?;
            let created_at: i64 = row.try_get("created_at")?;
            // a version already recorded is the schema it had: nothing changed
            let recorded = sqlx::query(sql::RECORD_AGENT_SCHEMA)
                .bind(&agent.name)
                .bind(version)
                .bind(&schema)
                .bind(&agent.declared_by)
                .bind(agent.key_id.as_deref())
                .bind(b.now)
                .fetch_optional(&mut *b.conn)
                .await?;
            replies.push(Declared {
                agent: DeclaredAgent {
                    name: agent.name.clone(),
                    description: agent.description.clone(),
                    input_schema: agent.input_schema.clone(),
                    defaults: agent.defaults.clone(),
                    version: version as u32,
                    declared_by: agent.declared_by.clone(),
                    declared_at: from_ms(b.now),
                    created_at: from_ms(created_at),
                },
                created: version == 1 && recorded.is_some(),
                schema_changed: recorded.is_some(),
            });
        }
        Ok(replies)
    }
}
