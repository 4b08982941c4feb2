//! Counts of the transitions this process's writer committed, and of its transactions, for
//! metrics: kept in the store because only the writer sees every one (attempts, cancels,
//! sweeps, settled dependents), and only after its commit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Transition, TransitionCount};

#[derive(Default)]
pub(crate) struct Tally {
    counts: Mutex<BTreeMap<(String, Transition), u64>>,
    transactions: AtomicU64,
    /// When a write last found the storage full, and why; cleared by a commit that comes
    /// [`FULL_HELD_FOR`] after it.
    full: Mutex<Option<(Instant, String)>>,
}

/// How long after a write found the storage full a commit does not yet count as space come
/// back: a small write (a heartbeat) fits where a run does not, and readiness must not
/// flap between them.
const FULL_HELD_FOR: Duration = Duration::from_secs(5);

/// How long a full storage is reported after the last write that found it full, when no
/// write succeeded since (a process that stopped writing does not stay unready for good).
const FULL_REPORTED_FOR: Duration = Duration::from_secs(60);

impl Tally {
    /// One transaction committed, with these transitions.
    pub(crate) fn add(&self, committed: &[(String, Transition)]) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if committed.is_empty() {
            return;
        }
        let mut counts = self.lock();
        for (agent, transition) in committed {
            *counts.entry((agent.clone(), *transition)).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<TransitionCount> {
        self.lock()
            .iter()
            .map(|((agent, transition), &runs)| TransitionCount {
                agent: agent.clone(),
                transition: *transition,
                runs,
            })
            .collect()
    }

    /// A write found the storage full.
    pub(crate) fn storage_full(&self, why: &str) {
        *self.full.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), why.to_owned()));
    }

    /// A write was committed: true when it shows that space came back (the storage was
    /// full, and the last write to find it so is more than [`FULL_HELD_FOR`] ago).
    pub(crate) fn storage_ok(&self) -> bool {
        let mut full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        match &*full {
            Some((at, _)) if at.elapsed() >= FULL_HELD_FOR => {
                *full = None;
                true
            }
            _ => false,
        }
    }

    /// Why the storage is full: from a write that found it so until a commit more than
    /// [`FULL_HELD_FOR`] later, or a minute without another such write.
    pub(crate) fn full_reason(&self) -> Option<String> {
        let full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        full.as_ref()
            .filter(|(at, _)| at.elapsed() < FULL_REPORTED_FOR)
            .map(|(_, why)| why.clone())
    }

    /// The transactions committed so far.
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Transition), u64>> {
        // counters stay consistent whatever panicked while holding the lock
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunErrorKind;

    #[test]
    fn transitions_are_counted_by_agent_and_kind() {
        let tally = Tally::default();
        tally.add(&[
            ("echo".into(), Transition::Succeeded),
            ("echo".into(), Transition::Succeeded),
            ("http".into(), Transition::Failed(RunErrorKind::Timeout)),
        ]);
        let counts = tally.snapshot();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].agent, "echo");
        assert_eq!(counts[0].runs, 2);
        assert_eq!(
            counts[1].transition,
            Transition::Failed(RunErrorKind::Timeout)
        );
        tally.add(&[]);
        assert_eq!(tally.transactions(), 2);
    }
}
