//! `AttemptLog`: a `log` event of a running attempt. Fenced; applied in the order it came
//! among the attempt's progress and checkpoints (see `batch::attempt_reports`).

use serde_json::json;

use super::attempt_progress::fenced_touch;
use super::{Batch, Command};
use crate::domain::EventKind;
use crate::store::{Fence, StoreError};

/// Replies whether the fence held.
pub(in crate::store) struct AttemptLog {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) level: String,
    pub(in crate::store) message: String,
}

impl Command for AttemptLog {
    type Reply = bool;
}

impl AttemptLog {
    pub(in crate::store) async fn apply(&self, b: &mut Batch<'_>) -> Result<bool, StoreError> {
        let fence = &self.fence;
        let seq = fenced_touch(b, fence, None).await?;
        if let Some(seq) = seq {
            let data = json!({ "level": self.level, "message": self.message });
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Log,
                fence.attempt,
                data,
            );
        }
        Ok(seq.is_some())
    }
}
