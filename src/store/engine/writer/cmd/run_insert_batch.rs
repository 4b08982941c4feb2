//! `RunInsertBatch`: the runs of one `POST /v1/runs/batch`, all stored or none. Runs of
//! the batch may depend on each other (they start blocked); a dependency on a stored run
//! is checked like a single run's, and one bad dependency anywhere refuses the batch
//! before anything is written.

use std::collections::HashSet;

use super::super::batch::{KeyDecision, KeyGate, check_dependencies};
use super::run_insert::{InsertAnswer, insert_runs};
use super::{Apply, Batch, Command};
use crate::domain::{KeyPolicy, NewRun, Run, RunId};
use crate::store::StoreError;

/// Replies the runs as stored, in the order given; `BadBatchDependencies` when a
/// dependency on a stored run names no run of the tenant or one that failed.
pub(in crate::store) struct RunInsertBatch(pub(in crate::store) Vec<NewRun>);

impl Command for RunInsertBatch {
    type Reply = Result<Vec<Run>, StoreError>;

    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunInsertBatch {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<Vec<Run>, StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for RunInsertBatch(runs) in commands {
            replies.push(insert_batch(b, runs).await?);
        }
        Ok(replies)
    }
}

async fn insert_batch(
    b: &mut Batch<'_>,
    runs: &[NewRun],
) -> Result<Result<Vec<Run>, StoreError>, StoreError> {
    let siblings: HashSet<RunId> = runs.iter().map(|r| r.id).collect();
    // on PostgreSQL the check locks the runs depended on, in id order within one call:
    // all of the batch's at once first, so two batches sharing dependencies take their
    // locks in one order and cannot deadlock (the checks per run below hold them already)
    let mut all: Vec<RunId> = runs
        .iter()
        .flat_map(|r| r.depends_on.iter())
        .filter(|d| !siblings.contains(d))
        .copied()
        .collect();
    all.sort();
    all.dedup();
    if let Some(first) = runs.first()
        && !all.is_empty()
    {
        // its answer is the per-run checks' below, which say which run a problem is of
        let _ = check_dependencies(b, &all, &first.tenant).await?;
    }
    // every dependency on a stored run first: a refusal writes nothing
    let mut problems = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let stored: Vec<RunId> = run
            .depends_on
            .iter()
            .filter(|d| !siblings.contains(d))
            .copied()
            .collect();
        if stored.is_empty() {
            continue;
        }
        if let Err(found) = check_dependencies(b, &stored, &run.tenant).await? {
            problems.extend(
                found
                    .into_iter()
                    .map(|(_, code, message)| (i, code, message)),
            );
        }
    }
    if !problems.is_empty() {
        return Ok(Err(StoreError::BadBatchDependencies(problems)));
    }
    let refs: Vec<&NewRun> = runs.iter().collect();
    // a run whose key refuses it refuses the batch, before anything is written or
    // cancelled: the batch's key decisions are tried without effect first
    let rejecting = |r: &&NewRun| {
        r.concurrency
            .as_ref()
            .is_some_and(|c| c.policy == KeyPolicy::Reject)
    };
    if refs.iter().any(rejecting) {
        let mut gate = KeyGate::load(b, &refs).await?;
        gate.dry = true;
        for (i, run) in refs.iter().enumerate() {
            if run.concurrency.is_none() {
                continue;
            }
            if let KeyDecision::Busy(message) = gate.decide(b, run).await? {
                return Ok(Err(StoreError::KeyBusy(format!("runs/{i}: {message}"))));
            }
        }
    }
    let mut stored = Vec::with_capacity(runs.len());
    for answer in insert_runs(b, &refs, &siblings).await? {
        match answer {
            InsertAnswer::New(run) => stored.push(*run),
            // checked above in this transaction; batch runs carry no Idempotency-Key
            _ => {
                return Err(StoreError::Corrupt(
                    "a batch run was refused after its checks passed".into(),
                ));
            }
        }
    }
    Ok(Ok(stored))
}
