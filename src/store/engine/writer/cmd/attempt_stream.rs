//! `AttemptStream`: parts appended to a running attempt's output stream, each a `stream`
//! event of its run. Fenced, and bounded per run (`runs.stream_bytes`). The adjacent
//! appends of one attempt in one batch are written together, their texts joined, so a
//! model's many small deltas cost one update and a few event rows per batch (see
//! `batch::attempt_reports`).

use std::collections::HashMap;

use serde::Serialize;

use super::super::sql;
use super::{Batch, Command};
use crate::domain::{EventKind, StreamPart, coalesce};
use crate::store::{Fence, StoreError, Streamed};

pub(in crate::store) struct AttemptStream {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) parts: Vec<StreamPart>,
    /// The most bytes the run's stream may hold.
    pub(in crate::store) limit: u64,
}

impl Command for AttemptStream {
    type Reply = Streamed;
}

/// What a group of adjacent appends writes.
struct Appended<'a> {
    fence: &'a Fence,
    parts: Vec<StreamPart>,
    bytes: u64,
    limit: u64,
}

impl<'a> Appended<'a> {
    fn of(appends: &[&'a AttemptStream]) -> Option<Self> {
        let first = appends.first()?;
        let parts = coalesce(appends.iter().flat_map(|a| a.parts.iter().cloned()));
        Some(Self {
            fence: &first.fence,
            bytes: parts.iter().map(StreamPart::size).sum(),
            limit: appends.iter().map(|a| a.limit).min().unwrap_or(first.limit),
            parts,
        })
    }

    fn limit(&self) -> i64 {
        i64::try_from(self.limit).unwrap_or(i64::MAX)
    }

    /// The parts' events, the last of them at `head` (the run's event seq now).
    fn write_events(self, b: &mut Batch<'_>, head: i64) {
        let first_seq = head - self.parts.len() as i64 + 1;
        for (seq, part) in (first_seq..).zip(self.parts) {
            let data = serde_json::to_value(part).expect("a stream part serialises");
            b.event(
                self.fence.run_id.to_string(),
                seq,
                EventKind::Stream,
                self.fence.attempt,
                data,
            );
        }
    }

    /// Why nothing was written: the fence no longer holds, or the stream is full.
    async fn refused(&self, b: &mut Batch<'_>) -> Result<Streamed, StoreError> {
        let fence = self.fence;
        let holds: Option<i32> = sqlx::query_scalar(sql::FENCE_HOLDS)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .fetch_optional(&mut *b.conn)
            .await?;
        Ok(match holds {
            Some(_) => Streamed::Full { limit: self.limit },
            None => Streamed::Lost,
        })
    }
}

/// A row of `STREAM_APPEND_MANY`'s JSON array.
#[derive(Serialize)]
struct ManyRow<'a> {
    id: String,
    claim: u32,
    worker: &'a str,
    n: usize,
    b: u64,
    l: i64,
}

impl AttemptStream {
    /// Writes the parts of `appends`, adjacent appends of one attempt in arrival order,
    /// all or none: one answer for them all.
    pub(in crate::store) async fn apply_together(
        b: &mut Batch<'_>,
        appends: &[&AttemptStream],
    ) -> Result<Streamed, StoreError> {
        let Some(appended) = Appended::of(appends) else {
            return Ok(Streamed::Written);
        };
        let fence = appended.fence;
        let head: Option<i64> = sqlx::query_scalar(sql::STREAM_APPEND)
            .bind(appended.parts.len() as i64)
            .bind(appended.bytes as i64)
            .bind(b.now)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .bind(appended.limit())
            .fetch_optional(&mut *b.conn)
            .await?;
        match head {
            Some(head) => {
                appended.write_events(b, head);
                Ok(Streamed::Written)
            }
            None => appended.refused(b).await,
        }
    }

    /// Writes many groups of appends, each of another attempt, in one statement (the
    /// common case: attempts that only stream); one answer per group.
    pub(in crate::store) async fn apply_many(
        b: &mut Batch<'_>,
        groups: &[Vec<&AttemptStream>],
    ) -> Result<Vec<Streamed>, StoreError> {
        let appended: Vec<Appended<'_>> = groups
            .iter()
            .map(|g| Appended::of(g).expect("a group holds an append"))
            .collect();
        let rows: Vec<ManyRow<'_>> = appended
            .iter()
            .map(|a| ManyRow {
                id: a.fence.run_id.to_string(),
                claim: a.fence.claim,
                worker: &a.fence.worker_id,
                n: a.parts.len(),
                b: a.bytes,
                l: a.limit(),
            })
            .collect();
        let json = serde_json::to_string(&rows).expect("rows serialise");
        let heads: Vec<(String, i64, i64)> = sqlx::query_as(sql::STREAM_APPEND_MANY)
            .bind(json)
            .bind(b.now)
            .fetch_all(&mut *b.conn)
            .await?;
        let mut heads: HashMap<(String, i64), i64> = heads
            .into_iter()
            .map(|(id, claim, head)| ((id, claim), head))
            .collect();
        let mut out = Vec::with_capacity(appended.len());
        for a in appended {
            let key = (a.fence.run_id.to_string(), i64::from(a.fence.claim));
            match heads.remove(&key) {
                Some(head) => {
                    a.write_events(b, head);
                    out.push(Streamed::Written);
                }
                None => out.push(a.refused(b).await?),
            }
        }
        Ok(out)
    }

    /// The answers of a group of appends written together: the group's answer for each,
    /// but when the group did not fit its run's stream, each append tried alone, in order
    /// (the first ones may fit).
    pub(in crate::store) async fn one_by_one_if_full(
        b: &mut Batch<'_>,
        appends: &[&AttemptStream],
        together: Streamed,
    ) -> Result<Vec<Streamed>, StoreError> {
        if !matches!(together, Streamed::Full { .. }) || appends.len() == 1 {
            return Ok(vec![together; appends.len()]);
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            outcomes.push(Self::apply_together(b, &[append]).await?);
        }
        Ok(outcomes)
    }
}
