//! The writes, one file each: the command (what the caller asks), its typed reply, and
//! the step that applies a batch's commands of its kind. Files are named by the entity
//! they change first (`agent_`, `run_`, `attempt_`, `worker_`, `webhook_`, `writer_`); `batch.rs`
//! declares the order in which a batch applies the kinds.

mod agent_declare;
mod agent_pause;
mod attempt_checkpoint;
mod attempt_finish;
mod attempt_hand_back;
mod attempt_log;
mod attempt_progress;
mod attempt_renew;
mod attempt_stream;
mod attempt_take_signal;
mod run_cancel;
mod run_change;
mod run_claim;
mod run_claim_dispatched;
mod run_dispatch;
mod run_insert;
mod run_insert_batch;
mod run_purge;
mod run_requeue;
mod run_signal;
mod run_sweep;
mod run_undispatch;
mod schedule_change;
mod schedule_create;
mod schedule_fire;
mod webhook_claim;
mod webhook_done;
mod worker_heartbeat;
mod worker_release;
mod writer_close;
mod writer_wake;

use super::batch::Batch;
use super::command::{Apply, Command};

pub(in crate::store) use agent_declare::AgentDeclare;
pub(in crate::store) use agent_pause::AgentPause;
pub(in crate::store) use attempt_checkpoint::AttemptCheckpoint;
pub(in crate::store) use attempt_finish::AttemptFinish;
pub(in crate::store) use attempt_hand_back::AttemptHandBack;
pub(in crate::store) use attempt_log::AttemptLog;
pub(in crate::store) use attempt_progress::AttemptProgress;
pub(in crate::store) use attempt_renew::AttemptRenew;
pub(in crate::store) use attempt_stream::AttemptStream;
pub(in crate::store) use attempt_take_signal::AttemptTakeSignal;
pub(in crate::store) use run_cancel::{RunCancel, cancel_run};
pub(in crate::store) use run_change::RunChange;
pub(in crate::store) use run_claim::RunClaim;
pub(super) use run_claim::claim_ready;
pub(in crate::store) use run_claim_dispatched::RunClaimDispatched;
pub(in crate::store) use run_dispatch::RunDispatch;
pub(in crate::store) use run_insert::RunInsert;
pub(super) use run_insert::insert_runs;
pub(in crate::store) use run_insert_batch::RunInsertBatch;
pub(in crate::store) use run_purge::RunPurge;
pub(in crate::store) use run_requeue::RunRequeue;
pub(in crate::store) use run_signal::RunSignal;
pub(in crate::store) use run_sweep::RunSweep;
pub(in crate::store) use run_undispatch::RunUndispatch;
pub(in crate::store) use schedule_change::{ScheduleChange, ScheduleOp};
pub(in crate::store) use schedule_create::ScheduleCreate;
pub(in crate::store) use schedule_fire::ScheduleFire;
pub(in crate::store) use webhook_claim::WebhookClaim;
pub(in crate::store) use webhook_done::WebhookDone;
pub(in crate::store) use worker_heartbeat::WorkerHeartbeat;
pub(in crate::store) use worker_release::WorkerRelease;
pub(in crate::store) use writer_close::WriterClose;
pub(in crate::store) use writer_wake::WriterWake;
