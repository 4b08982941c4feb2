//! Who follows which run's events, and telling them when new events are committed.
//!
//! The writer calls `committed` after each commit, with the newest event seq of every run
//! the batch wrote to, but only while someone follows a run at all, so the hot path pays
//! nothing when nobody streams. Followers get a `watch` of the run's newest seq.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct EventHub {
    followers: Mutex<HashMap<String, watch::Sender<i64>>>,
    followed: AtomicUsize,
    /// Told when a commit made runs ready now (the Redis feeder waits on it).
    ready: tokio::sync::Notify,
}

impl EventHub {
    /// Watches the newest committed event seq of `run_id`.
    pub(crate) fn follow(&self, run_id: String) -> watch::Receiver<i64> {
        let mut followers = self.lock();
        followers.retain(|_, tx| tx.receiver_count() > 0);
        let receiver = followers
            .entry(run_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        self.followed.store(followers.len(), Ordering::SeqCst);
        receiver
    }

    /// Whether any run is followed: the writer collects event heads only then.
    pub(crate) fn is_followed(&self) -> bool {
        self.followed.load(Ordering::Relaxed) > 0
    }

    /// Tells the followers of these runs about their newest committed events.
    pub(crate) fn committed(&self, heads: &[(String, i64)]) {
        if heads.is_empty() {
            return;
        }
        let mut followers = self.lock();
        for (run_id, seq) in heads {
            if let Some(tx) = followers.get(run_id) {
                if tx.receiver_count() == 0 {
                    followers.remove(run_id);
                } else {
                    tx.send_modify(|newest| *newest = (*newest).max(*seq));
                }
            }
        }
        self.followed.store(followers.len(), Ordering::SeqCst);
    }

    /// A commit made runs ready now. One permit is kept if nobody waits, so a feeder that
    /// was busy topping up looks again at once.
    pub(crate) fn runs_ready(&self) {
        self.ready.notify_one();
    }

    /// Waits until a commit of this process makes runs ready.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<i64>>> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
