//! What a write is to the writer: a [`Command`] with its own typed reply, queued as a
//! [`Request`] and applied by kind, as one [`Step`] of a batch (see `batch.rs` for the
//! order of the steps).
//!
//! The writer's queue holds requests of every kind at once, so it sees them through
//! [`Queued`], which answers what the loop needs to know (may this make runs ready? is
//! it a claim that may wait?) and holds the reply until the batch commits. A step takes
//! its kind's commands back out by type ([`step`]), so no shared answer type has to be
//! taken apart again.

use std::any::Any;
use std::future::Future;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::batch::Batch;
use crate::store::{Fence, StoreError};

/// A write the writer applies in a batch. Its reply is sent once the batch commits.
pub(in crate::store) trait Command: Send + Sync + Sized + 'static {
    type Reply: Send + 'static;

    /// Whether applying it can make a run claimable now (parked claims look again).
    fn may_ready_runs(&self) -> bool {
        false
    }

    /// Whether it may end a running attempt: room under an agent's limit.
    fn frees_a_slot(&self) -> bool {
        false
    }

    /// A claim that may wait for runs: until when (ms). While it finds nothing it is kept
    /// (parked) and applied again with later batches.
    fn waits_until(&self) -> Option<i64> {
        None
    }

    /// A parked claim that only room under an agent's limit can satisfy.
    fn waits_for_room(&self) -> bool {
        false
    }

    /// The reply found nothing: a waiting claim is parked instead of answered.
    fn found_nothing(_reply: &Self::Reply) -> bool {
        false
    }

    /// The attempts a reply hands out, given back when its caller stopped waiting.
    fn handed_out(_reply: Self::Reply) -> Vec<Fence> {
        Vec::new()
    }
}

/// A kind of command applied as one step: all of a batch's commands of the kind at
/// once, in the order they came, one reply each in that order.
pub(in crate::store) trait Apply: Command {
    fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> impl Future<Output = Result<Vec<Self::Reply>, StoreError>> + Send;
}

/// A command, where its reply goes, and its reply while the batch is not committed.
pub(super) struct Request<C: Command> {
    command: C,
    reply: oneshot::Sender<Result<C::Reply, StoreError>>,
    answer: Option<Result<C::Reply, StoreError>>,
}

impl<C: Command> Request<C> {
    pub(super) fn new(command: C) -> (Self, oneshot::Receiver<Result<C::Reply, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let request = Self {
            command,
            reply,
            answer: None,
        };
        (request, answer)
    }
}

/// What became of a request once its batch committed.
pub(super) enum Settled {
    Sent,
    /// A claim that found nothing and may still wait.
    Parked(Box<dyn Queued>),
    /// Its caller stopped waiting: these attempts were handed out to nobody.
    Undelivered(Vec<Fence>),
}

/// A request of any kind, as the writer's loop sees it.
pub(super) trait Queued: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn may_ready_runs(&self) -> bool;
    fn frees_a_slot(&self) -> bool;
    fn waits_until(&self) -> Option<i64>;
    fn waits_for_room(&self) -> bool;
    /// Its caller stopped waiting for the reply.
    fn abandoned(&self) -> bool;
    fn answered(&self) -> bool;
    fn fail(&mut self, error: StoreError);
    /// Drops the reply of a batch that did not commit.
    fn forget(&mut self);
    /// Sends the reply, or parks a waiting claim that found nothing (unless `closing`).
    fn settle(self: Box<Self>, closing: bool, now: i64) -> Settled;
}

impl<C: Command> Queued for Request<C> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn may_ready_runs(&self) -> bool {
        self.command.may_ready_runs()
    }

    fn frees_a_slot(&self) -> bool {
        self.command.frees_a_slot()
    }

    fn waits_until(&self) -> Option<i64> {
        self.command.waits_until()
    }

    fn waits_for_room(&self) -> bool {
        self.command.waits_for_room()
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn answered(&self) -> bool {
        self.answer.is_some()
    }

    fn fail(&mut self, error: StoreError) {
        self.answer = Some(Err(error));
    }

    fn forget(&mut self) {
        self.answer = None;
    }

    fn settle(mut self: Box<Self>, closing: bool, now: i64) -> Settled {
        // a kind of write no step applies is a bug (see `batch::ORDER`): its caller gets
        // an error, and the writer goes on for everyone else
        let answer = self.answer.take().unwrap_or_else(|| {
            tracing::error!(
                write = std::any::type_name::<C>(),
                "no step of the batch applied this write"
            );
            Err(StoreError::Corrupt(format!(
                "no step of the writer applies {}",
                std::any::type_name::<C>()
            )))
        });
        if let Ok(reply) = &answer
            && !closing
            && C::found_nothing(reply)
            && self.command.waits_until().is_some_and(|until| until > now)
        {
            return Settled::Parked(self);
        }
        match self.reply.send(answer) {
            Ok(()) => Settled::Sent,
            Err(Ok(reply)) => Settled::Undelivered(C::handed_out(reply)),
            Err(Err(_)) => Settled::Sent,
        }
    }
}

impl dyn Queued {
    /// The command, when this request is of kind `C`.
    pub(super) fn command<C: Command>(&self) -> Option<&C> {
        self.as_any()
            .downcast_ref::<Request<C>>()
            .map(|r| &r.command)
    }

    pub(super) fn is<C: Command>(&self) -> bool {
        self.as_any().is::<Request<C>>()
    }

    /// Sets the reply of a request of kind `C` (none of another kind).
    pub(super) fn answer<C: Command>(&mut self, reply: C::Reply) {
        if let Some(request) = self.as_any_mut().downcast_mut::<Request<C>>() {
            request.answer = Some(Ok(reply));
        }
    }
}

/// One step of a batch: a kind of command, or work of the batch's own (events, the
/// dependents the batch settled, …).
pub(super) type Step = for<'a, 'c> fn(
    &'a mut Batch<'c>,
    &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>>;

/// The step of kind `C`: applies the batch's commands of that kind and keeps their replies.
pub(super) fn step<'a, 'c, C: Apply>(
    b: &'a mut Batch<'c>,
    requests: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        let replies = {
            let commands: Vec<&C> = requests.iter().filter_map(|r| r.command::<C>()).collect();
            if commands.is_empty() {
                return Ok(());
            }
            C::apply(b, &commands).await?
        };
        let mut replies = replies.into_iter();
        for request in requests.iter_mut().filter(|r| r.is::<C>()) {
            let reply = replies.next().expect("a reply for every command");
            request.answer::<C>(reply);
        }
        Ok(())
    })
}
