//! Concurrency keys (see `crate::domain::concurrency`): whether a new run holds its key at
//! once or waits its turn, what its policy does to the key's other runs, and letting
//! waiting runs in when runs holding their key finish.
//!
//! The claim path knows nothing of keys: a run waiting for its key is `blocked`
//! (`key_waiting` = 1), so no claim, Redis feeder or external worker sees it until it is
//! let in. Every decision reads the key's runs as stored: on PostgreSQL, where several
//! processes write, a batch takes `sql::KEY_LOCK` before its first decision, so each
//! decision sees every other one that committed.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;
use sqlx::Row;

use super::super::cmd::cancel_run;
use super::super::sql;
use super::Batch;
use super::dependencies::unblock;
use crate::domain::{KeyPolicy, NewRun, RunId};
use crate::store::StoreError;

/// A key: (tenant, agent, key).
type KeyRef = (String, String, String);

fn key_of(run: &NewRun) -> Option<KeyRef> {
    let c = run.concurrency.as_ref()?;
    Some((run.tenant.to_string(), run.agent.to_string(), c.key.clone()))
}

/// What a new run of a key does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) enum KeyDecision {
    /// It holds its key: queued (or blocked on its dependencies).
    Holds,
    /// Its key is full: it waits its turn, `blocked`.
    Waits,
    /// Its policy is `reject` and its key is full: it is not stored.
    Busy(String),
}

/// A key's unfinished runs as this batch has decided so far.
#[derive(Default)]
struct KeyState {
    held: i64,
    waiting: i64,
    /// New runs of this batch counted above, oldest first, and whether each holds the key.
    mates: Vec<(RunId, bool)>,
}

/// The decisions of one insert, run by run, in the order the runs are inserted.
#[derive(Default)]
pub(in crate::store) struct KeyGate {
    keys: HashMap<KeyRef, KeyState>,
    /// New runs of this batch a later one's policy cancelled: (run, by run, policy). They
    /// are cancelled once stored.
    pub(in crate::store) displaced: Vec<(RunId, RunId, KeyPolicy)>,
    /// Decides without cancelling anything: what the runs would do (a batch's check
    /// before it writes).
    pub(in crate::store) dry: bool,
    /// Stored runs counted as cancelled in a dry run (they are still there to be found).
    counted_out: std::collections::HashSet<String>,
}

/// Takes `sql::KEY_LOCK` once per batch, where the dialect has one.
async fn lock(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if let (Some(lock), false) = (sql::KEY_LOCK, b.keys_locked) {
        sqlx::query(lock).execute(&mut *b.conn).await?;
        b.keys_locked = true;
    }
    Ok(())
}

impl KeyGate {
    /// Reads how the keys of `runs` are used, in one statement; nothing when no run has a key.
    pub(in crate::store) async fn load(
        b: &mut Batch<'_>,
        runs: &[&NewRun],
    ) -> Result<Self, StoreError> {
        let keys: BTreeSet<KeyRef> = runs.iter().filter_map(|r| key_of(r)).collect();
        let mut gate = KeyGate::default();
        if keys.is_empty() {
            return Ok(gate);
        }
        lock(b).await?;
        let param: Vec<[&str; 3]> = keys
            .iter()
            .map(|(t, a, k)| [t.as_str(), a.as_str(), k.as_str()])
            .collect();
        let rows = sqlx::query(sql::KEY_USE)
            .bind(serde_json::to_string(&param).expect("keys serialise"))
            .fetch_all(&mut *b.conn)
            .await?;
        for key in keys {
            gate.keys.insert(key, KeyState::default());
        }
        for row in rows {
            let key = (
                row.try_get("tenant")?,
                row.try_get("agent")?,
                row.try_get("concurrency_key")?,
            );
            let n: i64 = row.try_get("n")?;
            if let Some(state) = gate.keys.get_mut(&key) {
                if row.try_get::<i64, _>("key_waiting")? == 0 {
                    state.held = n;
                } else {
                    state.waiting = n;
                }
            }
        }
        Ok(gate)
    }

    /// Decides for `run` (which has a key) and applies its policy to the key's stored runs.
    pub(in crate::store) async fn decide(
        &mut self,
        b: &mut Batch<'_>,
        run: &NewRun,
    ) -> Result<KeyDecision, StoreError> {
        let (Some(key), Some(c)) = (key_of(run), run.concurrency.as_ref()) else {
            return Ok(KeyDecision::Holds);
        };
        let limit = i64::from(c.limit);
        let state = self.keys.entry(key.clone()).or_default();
        let dry = self.dry;
        let counted_out = &mut self.counted_out;
        match c.policy {
            KeyPolicy::Queue => {}
            KeyPolicy::Reject => {
                if state.held >= limit || state.waiting > 0 {
                    let n = state.held + state.waiting;
                    return Ok(KeyDecision::Busy(format!(
                        "concurrency key `{}` has {n} unfinished run{} (limit {limit}); its policy `reject` refuses more until one finishes",
                        c.key,
                        if n == 1 { "" } else { "s" }
                    )));
                }
            }
            KeyPolicy::CancelRunning => {
                let excess = state.held + state.waiting - (limit - 1);
                cancel_oldest(b, &key, state, excess, false, (run, dry, counted_out)).await?;
                let excess = state.held + state.waiting - (limit - 1);
                let displaced = self.displace(&key, excess.max(0) as usize, run.id, c.policy);
                self.displaced.extend(displaced);
            }
            KeyPolicy::DropQueued => {
                cancel_oldest(b, &key, state, i64::MAX, true, (run, dry, counted_out)).await?;
                let all = self.keys[&key].mates.len();
                let displaced = self.displace(&key, all, run.id, c.policy);
                self.displaced.extend(displaced);
            }
        }
        let state = self.keys.get_mut(&key).expect("the key's state");
        let holds = state.held < limit && state.waiting == 0;
        if holds {
            state.held += 1;
        } else {
            state.waiting += 1;
        }
        state.mates.push((run.id, holds));
        Ok(if holds {
            KeyDecision::Holds
        } else {
            KeyDecision::Waits
        })
    }

    /// Takes the `n` oldest new runs of `key` in this batch out of its count.
    fn displace(
        &mut self,
        key: &KeyRef,
        n: usize,
        by: RunId,
        policy: KeyPolicy,
    ) -> Vec<(RunId, RunId, KeyPolicy)> {
        let state = self.keys.get_mut(key).expect("the key's state");
        let n = n.min(state.mates.len());
        state
            .mates
            .drain(..n)
            .map(|(id, holds)| {
                if holds {
                    state.held -= 1;
                } else {
                    state.waiting -= 1;
                }
                (id, by, policy)
            })
            .collect()
    }
}

/// Cancels up to `n` of the key's stored unfinished runs, oldest first (with
/// `not_started`, only runs that have not started), for the new run `by` (or, `dry`,
/// only counts them as cancelled).
async fn cancel_oldest(
    b: &mut Batch<'_>,
    (tenant, agent, key): &KeyRef,
    state: &mut KeyState,
    n: i64,
    not_started: bool,
    (by, dry, counted_out): (&NewRun, bool, &mut std::collections::HashSet<String>),
) -> Result<(), StoreError> {
    let stored = state.held + state.waiting - state.mates.len() as i64;
    let mut n = n.min(stored);
    if n <= 0 {
        return Ok(());
    }
    // a dry run finds again the runs it counted out already: it looks past them
    let rows = sqlx::query(sql::KEY_OLDEST)
        .bind(tenant)
        .bind(agent)
        .bind(key)
        .bind(n.saturating_add(counted_out.len() as i64))
        .bind(not_started)
        .fetch_all(&mut *b.conn)
        .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        if n == 0 {
            break;
        }
        if counted_out.contains(&id) {
            continue;
        }
        n -= 1;
        if dry {
            counted_out.insert(id.clone());
        }
        let waiting = row.try_get::<i64, _>("key_waiting")? != 0;
        let policy = by
            .concurrency
            .as_ref()
            .map_or(KeyPolicy::Queue, |c| c.policy);
        let data = displaced_by(by.id, policy);
        if dry || cancel_run(b, &id, data, by.created_by.clone()).await? {
            if waiting {
                state.waiting -= 1;
            } else {
                state.held -= 1;
            }
        }
    }
    Ok(())
}

/// The data of the `cancelled` event of a run a new run's key policy cancelled.
pub(in crate::store) fn displaced_by(by: RunId, policy: KeyPolicy) -> serde_json::Value {
    json!({
        "reason": "concurrency_key",
        "policy": policy.as_str(),
        "by_run_id": by.to_string(),
    })
}

/// Marks requeued runs that have a key as waiting for it again (`REQUEUE` made them
/// `blocked`); `admit` lets them in if there is room.
pub(in crate::store) fn wait_again(b: &mut Batch<'_>, key: KeyRef) {
    b.keys_to_admit.insert(key);
}

/// Lets in the waiting runs of every key a run this batch finished held, and of the keys
/// `wait_again` named.
pub(in crate::store) async fn admit(b: &mut Batch<'_>) -> Result<(), StoreError> {
    let ended = std::mem::take(&mut b.ended);
    if !ended.is_empty() {
        let rows = sqlx::query(sql::KEYS_OF)
            .bind(serde_json::to_string(&ended).expect("ids serialise"))
            .fetch_all(&mut *b.conn)
            .await?;
        for row in rows {
            b.keys_to_admit.insert((
                row.try_get("tenant")?,
                row.try_get("agent")?,
                row.try_get("concurrency_key")?,
            ));
        }
    }
    let keys = std::mem::take(&mut b.keys_to_admit);
    if keys.is_empty() {
        return Ok(());
    }
    // under the lock, so a run another process just stored to wait for a key is seen
    lock(b).await?;
    let param: Vec<[&str; 3]> = keys
        .iter()
        .map(|(t, a, k)| [t.as_str(), a.as_str(), k.as_str()])
        .collect();
    let waited_for: Vec<(String, String, String)> = sqlx::query_as(sql::KEYS_WAITED_FOR)
        .bind(serde_json::to_string(&param).expect("keys serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    for (tenant, agent, key) in waited_for {
        let admitted: Vec<String> = sqlx::query_scalar(sql::ADMIT_KEY)
            .bind(b.now)
            .bind(&tenant)
            .bind(&agent)
            .bind(&key)
            .fetch_all(&mut *b.conn)
            .await?;
        for id in admitted {
            // queued unless a run it depends on has not succeeded yet
            let data = json!({ "concurrency_key": key });
            unblock(b, id, data).await?;
        }
    }
    Ok(())
}
