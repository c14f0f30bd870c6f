//! The requests between khttpd's workers and the application sessions (issue #12): the
//! workers' connections offer them and take the answers; the sessions (`crate::apps`, one
//! thread per application connection) receive and answer them. A request is *waiting* until a
//! session receives it, then *taken* until it is answered; a session that ends abandons what
//! it took (503 to those clients), and when it was the queue's last application, what is still
//! waiting too.
//!
//! A leaf: it knows the workers only through [`Workers`], so that `shared` (which holds the
//! queue) and `apps` (which serves the sessions) do not import each other.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use khttp_engine::apps::{Batch, Room, body_piece, take_batch};
use khttp_engine::{CtlError, Delivery, Handoff, Outcome, Refusal, RequestId, Site};

/// What the queue needs of the workers: to wake one, and whether khttpd is stopping.
pub(crate) trait Workers {
    /// Wakes worker `index`, whose inbox has something.
    fn wake(&self, index: usize);
    /// Whether khttpd is stopping (waits end).
    fn stopping(&self) -> bool;
}

/// Where a request came from: the worker and its connection's slot.
pub(crate) type Origin = (usize, usize);

/// An outcome on its way to a worker: (slot, request, outcome, and for a streamed answer's
/// pieces, how the worker tells the sender that the connection took it).
pub(crate) type Inbound = (usize, RequestId, Outcome, Option<Arc<Ack>>);

/// The worker's word on one piece of a streamed answer: whether the connection took it. It is
/// given once the connection wants the next piece ([`khttp_engine::Connection::wants_piece`])
/// or has stopped waiting for the request, so that an application can never be more than one
/// piece and the stream window ahead of its client.
#[derive(Debug, Default)]
pub(crate) struct Ack {
    done: Mutex<Option<bool>>,
    cond: Condvar,
}

impl Ack {
    /// Gives the word (the first one counts).
    pub(crate) fn fire(&self, delivered: bool) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        if done.is_none() {
            *done = Some(delivered);
            self.cond.notify_all();
        }
    }

    /// Waits for the word; false when khttpd stops meanwhile, or the application is `gone`
    /// (its process exited: the wait is its call, which must not outlive it; issue #22, the
    /// driver's defect 1, which khttpd had too: a killed application's queue stayed attached
    /// until its client was reset).
    fn wait(&self, workers: &dyn Workers, gone: &dyn Fn() -> bool) -> bool {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(d) = *done {
                return d;
            }
            if workers.stopping() || gone() {
                return false;
            }
            done = self
                .cond
                .wait_timeout(done, Duration::from_millis(250))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The requests themselves: the engine's bookkeeping, shared with the driver.
    handoff: Handoff<Origin>,
    /// Per queue: what its receivers wait on, so that a request wakes one of them.
    arrived: HashMap<u32, Arc<Condvar>>,
    /// Per queue: its receivers that wait now.
    idle: HashMap<u32, Idle>,
}

/// A queue's receivers that wait.
#[derive(Debug, Default, Clone, Copy)]
struct Idle {
    /// How many wait.
    waiting: usize,
    /// How many of them a request has woken and which have not run yet: each will take at
    /// least one request, so a batch leaves them their share, and a request that comes
    /// meanwhile wakes another (a wake-up is a system call; before, every request made one).
    /// Approximate when a wait times out as it is woken: a wake-up too many, never a request
    /// left behind, since a receiver back from its wait, for whatever reason, takes its batch.
    woken: usize,
}

/// The requests between workers and applications.
#[derive(Debug, Default)]
pub(crate) struct Apps {
    state: Mutex<State>,
    /// Per worker: answers for its connections, taken when its waker fires.
    inboxes: Mutex<Vec<Vec<Inbound>>>,
    /// Numbers the sessions (their taker ids in the hand-off).
    pub(crate) next_session: AtomicU64,
    /// Application connections open now, in all and per user (administrators' not counted).
    pub(crate) sessions: Mutex<Sessions>,
}

/// Application connections of users other than administrators: each is a thread and a file
/// descriptor, so their number is bounded, per user and in all (issue #21, finding 6: 5,000
/// idle connections from one user made 5,006 threads, and about 20,000 exhausted khttpd's file
/// descriptors).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    pub(crate) total: usize,
    pub(crate) per_user: HashMap<u32, usize>,
}

impl Apps {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the request a worker's connection (`slot`) offers; refused past `queue-length`.
    pub(crate) fn enqueue(
        &self,
        worker: usize,
        slot: usize,
        d: &Delivery<'_>,
        site: &Site,
    ) -> Result<RequestId, Refusal> {
        let mut st = self.state();
        let id = st.handoff.offer((worker, slot), d, site)?;
        // Only a receiver that waits needs waking: one that is busy looks for waiting requests
        // under this lock before it waits (a wake-up costs a system call, on every request
        // under load).
        let sleeper = st
            .idle
            .get_mut(&d.queue)
            .filter(|i| i.waiting > i.woken)
            .map(|i| i.woken += 1)
            .is_some();
        let arrived = st.arrived.get(&d.queue).filter(|_| sleeper).cloned();
        drop(st);
        if let Some(c) = arrived {
            c.notify_one();
        }
        Ok(id)
    }

    /// Forgets request `id` (its connection went, or stopped waiting).
    pub(crate) fn cancel(&self, id: RequestId) {
        self.state().handoff.cancel(id);
    }

    /// The answers for worker `worker`'s connections: (slot, request, outcome).
    pub(crate) fn take_outcomes(&self, worker: usize) -> Vec<Inbound> {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(PoisonError::into_inner);
        inboxes
            .get_mut(worker)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Runs `f` on the hand-off under the lock (the engine's rules, `apps::AppHost`).
    pub(crate) fn with_handoff<R>(&self, f: impl FnOnce(&mut Handoff<Origin>) -> R) -> R {
        f(&mut self.state().handoff)
    }

    /// A streamed answer's head or piece for request `id`, accepted only from the session
    /// that received it: handed to its connection, and the worker's word awaited (the next
    /// piece waits while the client is more than the stream window behind). `last` ends the
    /// request. Returns whether the connection took it.
    pub(crate) fn stream(
        &self,
        workers: &dyn Workers,
        session: u64,
        id: u64,
        outcome: Outcome,
        last: bool,
        gone: &dyn Fn() -> bool,
    ) -> bool {
        let origin = {
            let mut st = self.state();
            if last {
                st.handoff.answer(RequestId(id), session)
            } else {
                st.handoff.hold(RequestId(id), session)
            }
        };
        let Some((worker, slot)) = origin else {
            return false;
        };
        let ack = Arc::new(Ack::default());
        self.push(
            workers,
            worker,
            (slot, RequestId(id), outcome, Some(Arc::clone(&ack))),
        );
        ack.wait(workers, gone)
    }

    /// Hands an outcome to the worker whose connection waits for it.
    pub(crate) fn route(
        &self,
        workers: &dyn Workers,
        (worker, slot): Origin,
        id: RequestId,
        outcome: Outcome,
    ) {
        self.push(workers, worker, (slot, id, outcome, None));
    }

    fn push(&self, workers: &dyn Workers, worker: usize, inbound: Inbound) {
        let first = {
            let mut inboxes = self.inboxes.lock().unwrap_or_else(PoisonError::into_inner);
            if inboxes.len() <= worker {
                inboxes.resize_with(worker.saturating_add(1), Vec::new);
            }
            inboxes.get_mut(worker).is_some_and(|inbox| {
                inbox.push(inbound);
                inbox.len() == 1
            })
        };
        // The worker takes its whole inbox when woken: one wake-up per inbox that was empty
        // (a later answer rides on the wake-up already sent).
        if first {
            workers.wake(worker);
        }
    }

    /// Waits (at most `wait`) for a request of `room.queue`, and hands `session` what the
    /// engine's batch rule gives it (`apps::take_batch`: the oldest, and more of those waiting
    /// beyond what the queue's other idle receivers can take), written to `out` as
    /// `RequestRow`s; returns their ids (none: nothing came).
    pub(crate) fn receive(
        &self,
        workers: &dyn Workers,
        session: u64,
        room: Room,
        wait: Duration,
        out: &mut Vec<u8>,
    ) -> Vec<RequestId> {
        let queue = room.queue;
        let mut st = self.state();
        if st.handoff.waiting(queue) == 0 {
            let arrived = Arc::clone(st.arrived.entry(queue).or_default());
            st.idle.entry(queue).or_default().waiting += 1;
            st = arrived
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if let Some(i) = st.idle.get_mut(&queue) {
                debug_assert!(
                    i.waiting > 0,
                    "a receiver back from a wait it was not counted in"
                );
                i.waiting = i.waiting.saturating_sub(1);
                i.woken = i.woken.saturating_sub(1).min(i.waiting);
            }
        }
        // Those woken and on their way each take one; this receiver takes the rest.
        let others = st.idle.get(&queue).map_or(0, |i| i.woken);
        let mut lost = Vec::new();
        let batch = take_batch(&mut st.handoff, session, room, others, out, &mut lost);
        drop(st);
        for (id, o) in lost {
            self.route(workers, o, id, Outcome::Abandoned);
        }
        match batch {
            Batch::Taken { first, mut more } => {
                more.insert(0, first);
                more
            }
            // The room is unbounded here: only memory runs out, and the session tries again.
            Batch::TooSmall | Batch::Nothing | Batch::OutOfMemory => {
                out.clear();
                Vec::new()
            }
        }
    }

    /// More of request `id`'s body, from `offset`, if `session` holds it (`apps::body_piece`).
    pub(crate) fn body(
        &self,
        session: u64,
        id: RequestId,
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), CtlError> {
        let st = self.state();
        body_piece(&st.handoff, id, session, offset, usize::MAX, out)
    }

    /// Puts back a request a session received but could not deliver (it died meanwhile).
    pub(crate) fn requeue(&self, workers: &dyn Workers, session: u64, id: u64) {
        let mut st = self.state();
        if st.handoff.requeue(RequestId(id), session).is_err()
            && let Some(o) = st.handoff.answer(RequestId(id), session)
        {
            drop(st);
            self.route(workers, o, RequestId(id), Outcome::Abandoned);
        }
    }

    /// A session ended: what it took is abandoned; so is what waits in `orphaned` queues (no
    /// application is attached to them any more).
    pub(crate) fn session_ended(&self, workers: &dyn Workers, session: u64, orphaned: &[u32]) {
        let mut gone = Vec::new();
        self.state()
            .handoff
            .abandon(session, orphaned, |id, o| gone.push((id, o)));
        for (id, o) in gone {
            self.route(workers, o, id, Outcome::Abandoned);
        }
    }
}
