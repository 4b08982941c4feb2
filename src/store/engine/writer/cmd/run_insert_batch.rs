//! `RunInsertBatch`: the runs of one `POST /v1/runs/batch`, all stored or none. Runs of
//! the batch may depend on each other (they start blocked); a dependency on a stored run
//! is checked like a single run's, and one bad dependency anywhere refuses the batch
//! before anything is written. With an Idempotency-Key every run carries the key with its
//! index (`<key> #<i>`, a space no client key holds) and the whole batch's fingerprint: the
//! same request again finds the first run's key and answers the batch's runs.

use std::collections::HashSet;

use super::super::batch::{KeyDecision, KeyGate, check_dependencies};
use super::run_insert::{InsertAnswer, insert_runs, key_holder};
use super::{Apply, Batch, Command};
use crate::domain::{KeyPolicy, NewRun, RunId};
use crate::store::{BatchInserted, StoreError};

/// Replies the runs as stored, in the order given, or those its Idempotency-Key names;
/// `BadBatchDependencies` when a dependency on a stored run names no run of the tenant or
/// one that failed, `Conflict` when the key was used with another request.
pub(in crate::store) struct RunInsertBatch(pub(in crate::store) Vec<NewRun>);

impl Command for RunInsertBatch {
    type Reply = Result<BatchInserted, StoreError>;

    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunInsertBatch {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<BatchInserted, StoreError>>, StoreError> {
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
) -> Result<Result<BatchInserted, StoreError>, StoreError> {
    // the same request again: its runs hold their keys. Every key is looked at: one run of
    // a batch may be gone (retention) while the others still hold theirs
    let mut held = Vec::new();
    let mut reused = false;
    for key in runs.iter().filter_map(|r| r.idempotency.as_ref()) {
        if let Some((fingerprint, id)) = key_holder(b, &key.key).await? {
            reused |= fingerprint != key.fingerprint;
            held.push(id);
        }
    }
    if reused || (!held.is_empty() && held.len() < runs.len()) {
        let why = if reused {
            "this Idempotency-Key was already used with a different request"
        } else {
            "this Idempotency-Key names a batch some of whose runs are gone (retention): use another"
        };
        return Ok(Err(StoreError::Conflict(
            "idempotency_key_reused",
            why.into(),
        )));
    }
    if !held.is_empty() {
        return Ok(Ok(BatchInserted::Existing(held)));
    }
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
    let answers = insert_runs(b, &refs, &siblings).await?;
    // the same request, committed by another process after the look above (this batch
    // waited for the key lock meanwhile): its runs hold every key, and none was stored here
    if answers
        .iter()
        .all(|a| matches!(a, InsertAnswer::Existing(_)))
    {
        let ids = answers
            .into_iter()
            .filter_map(|a| match a {
                InsertAnswer::Existing(id) => Some(id),
                _ => None,
            })
            .collect();
        return Ok(Ok(BatchInserted::Existing(ids)));
    }
    if answers.iter().all(|a| !matches!(a, InsertAnswer::New(_))) {
        return Ok(Err(StoreError::Conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request".into(),
        )));
    }
    let mut stored = Vec::with_capacity(runs.len());
    for answer in answers {
        match answer {
            InsertAnswer::New(run) => stored.push(*run),
            // checked above in this transaction; some runs were stored: the batch cannot
            // be answered whole, and the transaction must not commit them
            _ => {
                return Err(StoreError::Corrupt(
                    "a batch run was refused after its checks passed".into(),
                ));
            }
        }
    }
    Ok(Ok(BatchInserted::New(stored)))
}
