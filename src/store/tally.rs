//! Counts of the transitions this process's writer committed, and of its transactions, for
//! metrics: kept in the store because only the writer sees every one (attempts, cancels,
//! sweeps, settled dependents), and only after its commit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Transition, TransitionCount};

#[derive(Default)]
pub(crate) struct Tally {
    counts: Mutex<BTreeMap<(String, Transition), u64>>,
    transactions: AtomicU64,
}

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
