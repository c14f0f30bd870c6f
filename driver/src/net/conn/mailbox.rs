//! What reaches a connection from outside its driving thread: the applications' answers (a
//! lock-free [`Mailbox`] per connection), the word on a streamed piece ([`Ack`]), and the
//! application device's entry points that connections call ([`Queues`]).

#![allow(
    unsafe_code,
    reason = "WSK calls, IRPs, MDLs and a pool-allocated, reference-counted context"
)]

use alloc::boxed::Box;

use alloc::vec::Vec;

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use khttp_engine::{Delivery, Outcome, Refusal, RequestId, Site};

/// What connections ask of the request queues. The application device registers it
/// ([`set_queues`]), so that connections do not depend on it.
pub(crate) struct Queues {
    /// Offers a request: the connection context (with a reference for the queues), the request.
    pub(crate) offer: fn(usize, &Delivery<'_>, &Site) -> Result<RequestId, Refusal>,
    /// Takes a request back (its connection stopped waiting): its origin, if still there.
    pub(crate) cancel: fn(RequestId) -> Option<usize>,
    /// Completes an application's call held for a streamed answer's piece ([`Ack`]: the call
    /// and its ticket): whether the connection took it.
    pub(crate) ack: fn(usize, u64, bool),
}

/// An application's call (a request handle, as a number) held until its connection has taken
/// a streamed answer's piece and wants the next ([`Connection::wants_piece`]), so that an
/// application is never more than one piece and the stream window ahead of its client. Given
/// back through [`Queues::ack`] exactly once: with the word, or with `false` when dropped
/// (the connection went).
/// The ticket tells this hold from a later one of a request handle at the same address (the
/// call may be cancelled and completed meanwhile, and its memory reused).
pub(crate) struct Ack(pub(super) usize, u64);

impl Ack {
    /// Holds the call `request`, noted with `ticket`.
    pub(crate) const fn new(request: usize, ticket: u64) -> Self {
        Self(request, ticket)
    }

    /// Gives the word.
    pub(super) fn fire(self, delivered: bool) {
        let (request, ticket) = (self.0, self.1);
        core::mem::forget(self);
        if let Some(q) = queues() {
            (q.ack)(request, ticket, delivered);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(q) = queues() {
            (q.ack)(self.0, self.1, false);
        }
    }
}

pub(super) static QUEUES: AtomicPtr<Queues> = AtomicPtr::new(ptr::null_mut());

/// Registers the request queues (DriverEntry, before any connection).
pub(crate) fn set_queues(q: &'static Queues) {
    QUEUES.store(ptr::from_ref(q).cast_mut(), Ordering::Release);
}

pub(super) fn queues() -> Option<&'static Queues> {
    // SAFETY: only `set_queues` stores here, and only a `&'static Queues`.
    unsafe { QUEUES.load(Ordering::Acquire).as_ref() }
}

/// Applications' answers waiting for their connection's driver. Lock-free, and nothing posted
/// is lost or replaced: answers are pushed on a list (each boxed, fallibly; one that cannot be
/// is lost, and the connection answers 503 at its `app-response-timeout`), and the driver takes
/// the whole list at once and feeds them to the engine oldest first, which ignores an answer
/// for a request it no longer waits for. (The first version kept one answer and replaced it:
/// a late 503 for a request the connection had given up could overwrite the answer to the
/// next one, issue #22 defect 11.) Producers never read a node once pushed, and the only
/// consumer takes the list whole, so no node is freed while another thread reads it.
pub(crate) struct Mailbox(pub(super) AtomicPtr<Node>);

/// What a mailbox holds: an outcome, and for a streamed answer the call held until it is
/// taken. One never taken drops its call's [`Ack`], which answers it `false`.
pub(super) type Mail = (RequestId, Outcome, Option<Ack>);

pub(crate) struct Node {
    pub(super) mail: Mail,
    pub(super) next: *mut Self,
}

impl Mailbox {
    pub(super) const fn new() -> Self {
        Self(AtomicPtr::new(ptr::null_mut()))
    }

    /// Pushes an answer; false when it could not be allocated.
    pub(super) fn put(&self, id: RequestId, outcome: Outcome, ack: Option<Ack>) -> bool {
        let Ok(b) = Box::try_new(Node {
            mail: (id, outcome, ack),
            next: ptr::null_mut(),
        }) else {
            return false;
        };
        let node = Box::into_raw(b);
        let mut head = self.0.load(Ordering::Acquire);
        loop {
            // SAFETY: `node` is ours until the exchange below publishes it.
            unsafe { (*node).next = head };
            match self
                .0
                .compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => head = now,
            }
        }
    }

    /// Takes every answer posted, oldest first.
    pub(super) fn take_all(&self) -> Vec<Mail> {
        let mut p = self.0.swap(ptr::null_mut(), Ordering::AcqRel);
        let mut out = Vec::new();
        while !p.is_null() {
            // SAFETY: a node this mailbox owned (from `put`), taken out of the list whole.
            let node = unsafe { Box::from_raw(p) };
            p = node.next;
            // At most as many as the connection offered requests: the reservation fails only
            // with no memory at all, and then the answer is dropped (its Ack answers false).
            if out.try_reserve(1).is_ok() {
                out.push(node.mail);
            }
        }
        out.reverse();
        out
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        drop(self.take_all());
    }
}
