//! [`Store`]'s declared agents: the agents external workers declare at run time.

use super::*;

impl Store {
    /// Declares an agent (creates it, or updates it; a new input schema is recorded).
    pub async fn declare_agent(
        &self,
        declaration: crate::domain::AgentDeclaration,
    ) -> Result<crate::domain::Declared, StoreError> {
        command!(self, AgentDeclare(declaration))
    }
    /// Every declared agent, by name.
    pub async fn declared_agents(&self) -> Result<Vec<crate::domain::DeclaredAgent>, StoreError> {
        on_engine!(self, e => e.declared_agents().await)
    }
    /// Pauses the agent's queue (durably, for every process); `false` when it was paused.
    pub async fn pause_agent(
        &self,
        agent: &str,
        actor: Option<String>,
    ) -> Result<bool, StoreError> {
        let agent = agent.to_owned();
        command!(
            self,
            AgentPause {
                agent,
                pause: true,
                actor
            }
        )
    }
    /// Resumes the agent's queue; `false` when it was not paused.
    pub async fn resume_agent(&self, agent: &str) -> Result<bool, StoreError> {
        let agent = agent.to_owned();
        command!(
            self,
            AgentPause {
                agent,
                pause: false,
                actor: None
            }
        )
    }
    /// The paused agents, by name.
    pub async fn paused_agents(&self) -> Result<Vec<crate::domain::AgentPauseState>, StoreError> {
        on_engine!(self, e => e.paused_agents().await)
    }
    /// The input schemas a declared agent had, oldest first (empty: never declared).
    pub async fn agent_schema_changes(
        &self,
        name: &str,
    ) -> Result<Vec<crate::domain::AgentSchemaChange>, StoreError> {
        on_engine!(self, e => e.agent_schema_changes(name).await)
    }
}
