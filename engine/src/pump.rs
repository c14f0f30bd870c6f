//! Driving a connection with asynchronous I/O whose completions may arrive *inline* (inside the
//! call that started them) or later on another CPU: the trampoline of DRIVER-NOTES §4.6.
//!
//! The WSK driver keeps at most one operation in flight per connection. If a completion routine
//! started the next operation itself, a run of inline completions would recurse without bound
//! and overflow the kernel stack. Instead:
//!
//! 1. the issuer calls [`InlineGate::begin`], then starts the operation;
//! 2. the completion routine calls [`InlineGate::complete`]: [`Completion::Inline`] means the
//!    issuer is still inside the call and will carry on — record the result and return;
//!    [`Completion::Async`] means the issuer has left — the completion routine now drives;
//! 3. when the call returns, the issuer calls [`InlineGate::issued`]: `true` means the operation
//!    already completed inline — loop and process it; `false` means it is pending — return.
//!
//! Exactly one side continues, whatever the interleaving: both transitions are compare-and-swap
//! on one atomic. A close requested from elsewhere (the timer, unload) only sets a flag; whoever
//! drives next performs it, so the socket is never closed while a call on it is in progress.
//!
//! [`next_io`] is the driving decision itself: given a [`Connection`], what to start next.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::conn::{Close, Connection};

const IDLE: u8 = 0;
const ISSUING: u8 = 1;
const PENDING: u8 = 2;
const DONE_INLINE: u8 = 3;

/// Who continues after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The issuer is still in the call and will continue: record the result, return.
    Inline,
    /// The issuer has returned: the completion routine continues driving.
    Async,
}

/// One connection's in-flight operation state. See the module documentation.
#[derive(Debug, Default)]
pub struct InlineGate {
    state: AtomicU8,
    close_requested: AtomicBool,
}

impl InlineGate {
    /// A gate with nothing in flight.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            close_requested: AtomicBool::new(false),
        }
    }

    /// Call just before starting an operation. Returns false if one is already in flight (a
    /// driver bug: the operation must not be started).
    #[must_use]
    pub fn begin(&self) -> bool {
        self.state
            .compare_exchange(IDLE, ISSUING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Call when the call that started the operation has returned. True: it already completed
    /// inline, so the issuer processes the result and continues. False: it is pending; return.
    #[must_use]
    pub fn issued(&self) -> bool {
        match self
            .state
            .compare_exchange(ISSUING, PENDING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(_) => {
                // DONE_INLINE: the completion ran inside the call.
                self.state.store(IDLE, Ordering::Release);
                true
            }
        }
    }

    /// Call from the completion routine.
    #[must_use]
    pub fn complete(&self) -> Completion {
        match self
            .state
            .compare_exchange(ISSUING, DONE_INLINE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Completion::Inline,
            Err(_) => {
                // PENDING: the issuer has left; this side drives from now on.
                self.state.store(IDLE, Ordering::Release);
                Completion::Async
            }
        }
    }

    /// Whether an operation is in flight.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.state.load(Ordering::Acquire) != IDLE
    }

    /// Asks whoever drives next to close the connection (timer sweeps, unload).
    pub fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
    }

    /// Whether a close was requested.
    #[must_use]
    pub fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }
}

/// What a driver should start next for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextIo {
    /// Send the connection's pending output ([`Connection::transmit`]).
    Send,
    /// Receive more input.
    Receive,
    /// Close the socket (graceful: disconnect, then close; abortive: close at once).
    Close(Close),
    /// Nothing until a timer or an outside event.
    Wait,
}

/// The driving decision, in priority order: close when the connection or the gate says so; send
/// pending output; receive when the engine wants input; otherwise wait.
#[must_use]
pub fn next_io(conn: &Connection, gate: &InlineGate) -> NextIo {
    if let Some(close) = conn.poll_close() {
        return NextIo::Close(close);
    }
    if gate.close_requested() {
        return NextIo::Close(Close::Abortive);
    }
    if conn.has_output() {
        NextIo::Send
    } else if conn.wants_read() {
        NextIo::Receive
    } else {
        NextIo::Wait
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::{Completion, InlineGate};

    #[test]
    fn inline_completion_is_handled_by_the_issuer() {
        let g = InlineGate::new();
        assert!(g.begin());
        assert!(!g.begin(), "one operation at a time");
        assert_eq!(g.complete(), Completion::Inline);
        assert!(g.issued());
        assert!(!g.busy());
    }

    #[test]
    fn async_completion_is_handled_by_the_routine() {
        let g = InlineGate::new();
        assert!(g.begin());
        assert!(!g.issued());
        assert!(g.busy());
        assert_eq!(g.complete(), Completion::Async);
        assert!(!g.busy());
        assert!(g.begin(), "ready for the next operation");
    }

    /// Under every interleaving exactly one side continues, and a long run of inline completions
    /// never nests: the issuer loops instead.
    #[test]
    fn exactly_one_side_continues_under_races() {
        for _ in 0..200 {
            let g = Arc::new(InlineGate::new());
            let continued = Arc::new(AtomicUsize::new(0));
            assert!(g.begin());
            let (g2, c2) = (Arc::clone(&g), Arc::clone(&continued));
            let completer = thread::spawn(move || {
                if g2.complete() == Completion::Async {
                    c2.fetch_add(1, Ordering::SeqCst);
                }
            });
            if g.issued() {
                continued.fetch_add(1, Ordering::SeqCst);
            }
            completer.join().unwrap();
            assert_eq!(continued.load(Ordering::SeqCst), 1);
            assert!(!g.busy());
        }
    }

    #[test]
    fn close_requests_are_sticky() {
        let g = InlineGate::new();
        assert!(!g.close_requested());
        g.request_close();
        assert!(g.close_requested());
    }
}
