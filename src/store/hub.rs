//! Who follows which run's events, and telling them when new events are committed.
//!
//! The writer calls `committed` after each commit, with the events of the batch, but only
//! while someone follows a run at all, so the hot path pays nothing when nobody streams.
//! Followers get a `watch` of the run's newest seq, and the hub keeps the latest events of
//! each followed run, so a follower that keeps up takes them from memory instead of
//! reading the database after every commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::domain::RunEvent;

/// How many of a followed run's latest events the hub keeps.
const RECENT: usize = 32;

struct Followed {
    head: watch::Sender<i64>,
    /// The run's latest committed events, in seq order, without gaps.
    recent: VecDeque<RunEvent>,
}

#[derive(Default)]
pub(crate) struct EventHub {
    followers: Mutex<HashMap<String, Followed>>,
    followed: AtomicUsize,
    /// Told when a commit made runs ready now (the Redis feeder waits on it).
    ready: tokio::sync::Notify,
}

/// One follower of one run's events.
pub struct EventFollower {
    hub: Arc<EventHub>,
    run_id: String,
    head: watch::Receiver<i64>,
}

impl EventFollower {
    /// Waits until an event of the run is committed in this process; `false` once it
    /// never can be (the hub is gone).
    pub async fn changed(&mut self) -> bool {
        self.head.changed().await.is_ok()
    }

    /// The run's committed events after `after`, when the hub still holds all of them
    /// (`None`: read them from the database). It holds none of those another process wrote:
    /// once the run's newest seq is past the last it holds, the database is read.
    pub fn recent_after(&self, after: i64) -> Option<Vec<RunEvent>> {
        let followers = self.hub.lock();
        let followed = followers.get(&self.run_id)?;
        let recent = &followed.recent;
        let newest = *followed.head.borrow();
        match (recent.front(), recent.back()) {
            (Some(first), Some(last)) if first.seq <= after + 1 && last.seq >= newest => {
                Some(recent.iter().filter(|e| e.seq > after).cloned().collect())
            }
            _ => None,
        }
    }

    /// The follower has read up to `seq`: the run's newest seq is at least that, told to
    /// nobody (a new stream is not woken for what it just read).
    pub fn seen(&self, seq: i64) {
        let followers = self.hub.lock();
        if let Some(f) = followers.get(&self.run_id) {
            f.head.send_if_modified(|newest| {
                *newest = (*newest).max(seq);
                false
            });
        }
    }
}

impl EventHub {
    /// Follows `run_id`'s committed events.
    pub(crate) fn follow(self: &Arc<Self>, run_id: String) -> EventFollower {
        let mut followers = self.lock();
        followers.retain(|_, f| f.head.receiver_count() > 0);
        let head = followers
            .entry(run_id.clone())
            .or_insert_with(|| Followed {
                head: watch::channel(0).0,
                recent: VecDeque::new(),
            })
            .head
            .subscribe();
        self.followed.store(followers.len(), Ordering::SeqCst);
        EventFollower {
            hub: self.clone(),
            run_id,
            head,
        }
    }

    /// The followed runs and the newest seq each one's followers were told of.
    pub(crate) fn followed_heads(&self) -> Vec<(String, i64)> {
        let mut followers = self.lock();
        followers.retain(|_, f| f.head.receiver_count() > 0);
        self.followed.store(followers.len(), Ordering::SeqCst);
        followers
            .iter()
            .map(|(id, f)| (id.clone(), *f.head.borrow()))
            .collect()
    }

    /// The database says the run's newest event is `seq` (another process wrote it, say):
    /// its followers are told when that is newer than what they were told. A run the
    /// database no longer has (`None`: retention took it) wakes them to find so.
    pub(crate) fn advanced(&self, run_id: &str, seq: Option<i64>) {
        let followers = self.lock();
        let Some(f) = followers.get(run_id) else {
            return;
        };
        f.head.send_if_modified(|newest| match seq {
            Some(seq) if seq > *newest => {
                *newest = seq;
                true
            }
            Some(_) => false,
            None => {
                *newest += 1;
                true
            }
        });
    }

    /// Whether any run is followed: the writer hands over its events only then.
    pub(crate) fn is_followed(&self) -> bool {
        self.followed.load(Ordering::Relaxed) > 0
    }

    /// Keeps the committed events of followed runs and tells their followers. `events`
    /// are (run id, event), each run's in seq order.
    pub(crate) fn committed(&self, events: &[(String, RunEvent)]) {
        if events.is_empty() {
            return;
        }
        let mut followers = self.lock();
        for (run_id, event) in events {
            let Some(f) = followers.get_mut(run_id) else {
                continue;
            };
            if f.head.receiver_count() == 0 {
                followers.remove(run_id);
                continue;
            }
            // a gap (events committed while nobody followed) starts the memory afresh
            if f.recent
                .back()
                .is_some_and(|last| last.seq + 1 != event.seq)
            {
                f.recent.clear();
            }
            if f.recent.len() == RECENT {
                f.recent.pop_front();
            }
            f.recent.push_back(event.clone());
            f.head
                .send_modify(|newest| *newest = (*newest).max(event.seq));
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Followed>> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64) -> (String, RunEvent) {
        let event = RunEvent {
            seq,
            at: chrono::Utc::now(),
            kind: "stream".into(),
            attempt: 1,
            data: json!({}),
            actor: None,
        };
        ("r1".to_owned(), event)
    }

    fn seqs(events: Option<Vec<RunEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn a_follower_takes_what_it_missed_from_memory_unless_there_is_a_gap() {
        let hub = Arc::new(EventHub::default());
        let follower = hub.follow("r1".into());
        assert!(hub.is_followed());
        // nothing held yet: read the database
        assert_eq!(seqs(follower.recent_after(0)), None);
        hub.committed(&[event(3), event(4), ("r2".into(), event(9).1)]);
        assert_eq!(seqs(follower.recent_after(2)), Some(vec![3, 4]));
        assert_eq!(seqs(follower.recent_after(3)), Some(vec![4]));
        assert_eq!(seqs(follower.recent_after(4)), Some(vec![]));
        // events before the first held one are not in memory
        assert_eq!(seqs(follower.recent_after(1)), None);
        // another process wrote 5 and 6, and the watcher read so: the database is read
        hub.advanced("r1", Some(6));
        assert_eq!(seqs(follower.recent_after(4)), None);
        // another process wrote 5 and 6: 7 starts the memory afresh
        hub.committed(&[event(7)]);
        assert_eq!(seqs(follower.recent_after(4)), None);
        assert_eq!(seqs(follower.recent_after(6)), Some(vec![7]));
        // at most RECENT are kept
        let many: Vec<_> = (8..8 + RECENT as i64 + 5).map(event).collect();
        hub.committed(&many);
        assert_eq!(seqs(follower.recent_after(7)), None);
        let last = 7 + RECENT as i64 + 5;
        assert_eq!(seqs(follower.recent_after(last - 1)), Some(vec![last]));
        drop(follower);
        hub.committed(&[event(last + 1)]);
        assert!(!hub.is_followed());
    }
}
