//! The agents external workers declare, as every API process sees them: a snapshot of the
//! `declared_agents` table with each input schema compiled once, read again when it is
//! older than [`FRESH_FOR`] and someone needs it, so a declaration made through another
//! process is seen within that time (at once through the process that took it).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::domain::{AgentDefaults, DeclaredAgent};
use crate::store::{Store, StoreError};

use super::registry::{AgentInfo, AgentKind, DeclarationInfo, InputProblem, input_problems};

/// How long a snapshot of the declared agents is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

struct Entry {
    agent: DeclaredAgent,
    validator: jsonschema::Validator,
}

/// The declared agents at one moment.
#[derive(Default)]
pub struct DeclaredSnapshot {
    agents: BTreeMap<String, Arc<Entry>>,
}

impl DeclaredSnapshot {
    /// Checks `input` against a declared agent's schema. `None` when no agent of that name
    /// is declared.
    pub fn check_input(&self, name: &str, input: &Value) -> Option<Vec<InputProblem>> {
        let entry = self.agents.get(name)?;
        Some(input_problems(&entry.validator, input))
    }

    /// The defaults a declared agent gives its runs.
    pub fn defaults(&self, name: &str) -> Option<&AgentDefaults> {
        self.agents.get(name).map(|e| &e.agent.defaults)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    /// The declared agents as `GET /v1/agents` lists them.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.agents.values().map(|e| info(&e.agent)).collect()
    }
}

fn info(agent: &DeclaredAgent) -> AgentInfo {
    AgentInfo {
        name: agent.name.clone(),
        description: agent.description.clone(),
        input_schema: agent.input_schema.clone(),
        kind: AgentKind::External,
        declared: Some(DeclarationInfo {
            defaults: agent.defaults.clone(),
            version: agent.version,
            declared_by: agent.declared_by.clone(),
            declared_at: agent.declared_at,
        }),
    }
}

fn compile(agent: DeclaredAgent) -> Option<Arc<Entry>> {
    match jsonschema::validator_for(&agent.input_schema) {
        Ok(validator) => Some(Arc::new(Entry { agent, validator })),
        Err(e) => {
            // declarations are checked before they are stored; a row edited by hand is
            // left out (its runs are refused as of an unknown agent) and said so
            tracing::error!(agent = %agent.name, error = %e, "a declared agent's input schema does not compile; ignoring it");
            None
        }
    }
}

/// A declaration this process took, and when.
type Remembered = (Instant, Arc<Entry>);

/// The shared, refreshed view of the declared agents. Cheap to clone.
#[derive(Clone)]
pub struct DeclaredAgents {
    store: Store,
    current: Arc<RwLock<(Option<Instant>, Arc<DeclaredSnapshot>)>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
    /// Declarations this process took lately, with when: a read that began before one
    /// committed must not undo it.
    recent: Arc<std::sync::Mutex<Vec<Remembered>>>,
}

impl DeclaredAgents {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            current: Arc::new(RwLock::new((None, Arc::new(DeclaredSnapshot::default())))),
            refresh: Arc::new(tokio::sync::Mutex::new(())),
            recent: Default::default(),
        }
    }

    /// The declared agents, read again from the database when the snapshot is older than
    /// [`FRESH_FOR`] (one reader at a time; the others wait for its result).
    pub async fn current(&self) -> Result<Arc<DeclaredSnapshot>, StoreError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _one_reader = self.refresh.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let read_at = Instant::now();
        let agents = self.store.declared_agents().await?;
        let mut agents: BTreeMap<String, Arc<Entry>> = agents
            .into_iter()
            .filter_map(|a| Some((a.name.clone(), compile(a)?)))
            .collect();
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            // what this process declared while the read was on its way wins over it
            recent.retain(|(at, _)| at.elapsed() < 2 * FRESH_FOR);
            for (at, entry) in recent.iter() {
                if *at >= read_at {
                    agents.insert(entry.agent.name.clone(), entry.clone());
                }
            }
        }
        let snapshot = Arc::new(DeclaredSnapshot { agents });
        *self.lock_mut() = (Some(read_at), snapshot.clone());
        Ok(snapshot)
    }

    /// Like [`current`](Self::current), but read again at once when one of `names` is
    /// missing from a snapshot read earlier (declared through another process just now).
    pub async fn current_with(
        &self,
        names: &[String],
    ) -> Result<Arc<DeclaredSnapshot>, StoreError> {
        let snapshot = self.current().await?;
        if names.iter().all(|n| snapshot.contains(n)) {
            return Ok(snapshot);
        }
        self.lock_mut().0 = None;
        self.current().await
    }

    /// Puts an agent this process just declared into the snapshot, so its runs are
    /// accepted here at once.
    pub fn remember(&self, agent: DeclaredAgent) {
        let Some(entry) = compile(agent) else { return };
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), entry.clone()));
        let mut current = self.lock_mut();
        let mut agents = current.1.agents.clone();
        agents.insert(entry.agent.name.clone(), entry);
        current.1 = Arc::new(DeclaredSnapshot { agents });
    }

    fn fresh(&self) -> Option<Arc<DeclaredSnapshot>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.0 {
            Some(read_at) if read_at.elapsed() < FRESH_FOR => Some(current.1.clone()),
            _ => None,
        }
    }

    fn lock_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, (Option<Instant>, Arc<DeclaredSnapshot>)> {
        // a panic while holding this lock cannot leave the pair inconsistent
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }
}
