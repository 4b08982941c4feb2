//! `WriterWake`: another process made runs claimable (PostgreSQL `NOTIFY`), so parked
//! claims look again. Nothing is written: the writer's loop takes it out of the batch.

use super::Command;

pub(in crate::store) struct WriterWake;

impl Command for WriterWake {
    type Reply = ();

    fn may_ready_runs(&self) -> bool {
        true
    }
}
