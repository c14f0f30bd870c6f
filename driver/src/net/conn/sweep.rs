//! The deadline sweep (the WDF timer, DISPATCH_LEVEL) and unload's drain and close-all: a
//! module of its own above `io` and `close`, both of which it uses, so that neither uses the
//! other's caller.

#![allow(
    unsafe_code,
    reason = "closing and driving a connection take its raw context pointer"
)]

use core::ptr;
use core::sync::atomic::Ordering;

use khttp_engine::Close;

use crate::global::clock;

use super::close::{CloseStep, issue_close, start_close};
use super::io::queue_drive;
use super::{ConnRef, table};

/// What a sweep closes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Connections past their deadline (the timer).
    Deadlines,
    /// Those, and every connection with no response in flight (the drain at unload).
    Idle,
    /// Every connection, abortively (the end of unload).
    All,
}

/// The deadline sweep (the WDF timer, DISPATCH_LEVEL) and unload's drain and close-all.
///
/// A context is referenced under the slot lock, where it still holds its slot reference, and
/// acted on after the lock is dropped: closing may complete inline and take the lock itself.
pub(crate) fn sweep(mode: Sweep) {
    /// Contexts referenced per pass under the lock.
    const BATCH: usize = 64;
    let Some(t) = table() else { return };
    let now = clock().now().0;
    let mut at = 0usize;
    loop {
        // Only live slots are visited (the engine's SlotTable), a batch per lock hold. A
        // connection that closes meanwhile moves another into its place, so one may be missed
        // this time; the next sweep sees it.
        let mut batch: [Option<ConnRef>; BATCH] = [const { None }; BATCH];
        let n = t.with(|free| {
            let mut n = 0usize;
            for (dst, &slot) in batch.iter_mut().zip(free.live().iter().skip(at)) {
                let p = t
                    .slots
                    .get(slot as usize)
                    .map_or(ptr::null_mut(), |s| s.load(Ordering::Acquire));
                // SAFETY: in the table under the lock, the context holds its slot reference.
                *dst = unsafe { ConnRef::new(p) };
                n += 1;
            }
            n
        });
        if n == 0 {
            return;
        }
        at += n;
        for c in batch.iter().take(n).flatten() {
            if c.close_step.advance(CloseStep::Retry, CloseStep::Closing) {
                // SAFETY: the close sequence's reference is still held (`issue_close` kept it
                // when it could not issue), and only the close sequence touches the socket.
                unsafe { issue_close(c.as_ptr()) };
                continue;
            }
            let kind = match (mode, c.deadline_close.load(Ordering::Acquire)) {
                (Sweep::All, _) | (_, 3) => Some(Close::Abortive),
                (_, 1) => Some(Close::Graceful),
                (_, 2) => Some(Close::Finished),
                _ => None, // its driver is acting on it now
            };
            let due = mode == Sweep::All || now >= c.deadline_ms.load(Ordering::Acquire);
            // Unload's drain also closes connections with no response in flight.
            let idle = mode == Sweep::Idle && kind.is_some_and(|k| k != Close::Abortive);
            if kind.is_none() && due && c.wake.claim() {
                // A deadline that does not close (an application's time to answer): the engine
                // decides what happens, on the connection's driver.
                // SAFETY: `c` holds a reference, and un-parking it made this the driver.
                unsafe { queue_drive(c.as_ptr()) };
                continue;
            }
            if let Some(kind) = kind
                && (due || idle)
            {
                if c.gate.try_close() {
                    // SAFETY: we claimed the close and hold a reference (`c`).
                    unsafe { start_close(c.as_ptr(), kind) };
                } else if due {
                    // A thread is inside a call: it acts on the request at its next step.
                    c.gate.request_close();
                }
            }
        }
        // The batch's references drop here, outside the lock.
        drop(batch);
    }
}
