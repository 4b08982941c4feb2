//! `WriterClose`: stops the writer once the batch holding it has committed.

use super::{Apply, Batch, Command};
use crate::store::StoreError;

pub(in crate::store) struct WriterClose;

impl Command for WriterClose {
    type Reply = ();

    /// Parked claims are answered (empty) before the writer stops.
    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for WriterClose {
    async fn apply(_: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<()>, StoreError> {
        Ok(vec![(); commands.len()])
    }
}
