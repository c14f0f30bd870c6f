//! Driving a connection with asynchronous I/O whose completions may arrive *inline* (inside the
//! call that started them) or later on another CPU: a trampoline (docs/driver-facts.md, "Inline
//! completion").
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
//! on one atomic.
//!
//! Closing from outside (the deadline timer, unload) must never race a thread that is *inside* a
//! call on the socket (a rule of `WskCloseSocket`'s: docs/driver-facts.md, "Closing sockets").
//! [`InlineGate::try_close`] therefore succeeds only when nobody is issuing: the gate is idle
//! between steps, or an operation is pending with its issuer gone. It moves the gate to
//! *closing*, after which [`InlineGate::begin`] refuses and a late completion is told
//! [`Completion::Closing`], so the closer alone owns the socket. When the gate is busy,
//! [`InlineGate::request_close`] leaves a flag that whoever drives next acts on.
//!
//! [`next_io`] is the driving decision itself: given a [`Connection`], what to start next.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::conn::{Close, Connection};

const IDLE: u8 = 0;
const ISSUING: u8 = 1;
const PENDING: u8 = 2;
const DONE_INLINE: u8 = 3;
const CLOSING: u8 = 4;

/// Who continues after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The issuer is still in the call and will continue: record the result, return.
    Inline,
    /// The issuer has returned: the completion routine continues driving.
    Async,
    /// The connection is being closed by whoever won [`InlineGate::try_close`]: do nothing more.
    Closing,
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
    /// driver bug) or the connection is closing: the operation must not be started.
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
            Err(DONE_INLINE) => {
                // The completion ran inside the call.
                self.state.store(IDLE, Ordering::Release);
                true
            }
            Err(other) => {
                debug_assert_eq!(other, CLOSING, "only a closer takes an issued operation");
                false
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
            Err(_) => match self.state.compare_exchange(
                PENDING,
                IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // The issuer has left; this side drives from now on.
                Ok(_) => Completion::Async,
                // CLOSING: the closer owns the connection.
                Err(_) => Completion::Closing,
            },
        }
    }

    /// Claims the connection for closing from outside the driving path. Succeeds only when no
    /// thread is inside a call on the socket (idle between steps, or an operation pending with
    /// its issuer gone); the caller then closes the socket, which cancels a pending operation.
    /// When it fails, [`InlineGate::request_close`] asks the current driver instead.
    #[must_use]
    pub fn try_close(&self) -> bool {
        [IDLE, PENDING].into_iter().any(|from| {
            self.state
                .compare_exchange(from, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Whether the connection is being closed.
    #[cfg(test)]
    #[must_use]
    pub fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSING
    }

    /// Whether an operation is in flight.
    #[cfg(test)]
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
    fn closing_claims_an_idle_or_pending_gate_only() {
        let g = InlineGate::new();
        assert!(g.begin());
        assert!(!g.try_close(), "a thread is inside the call");
        assert!(!g.issued());
        assert!(g.try_close(), "pending, issuer gone");
        assert!(g.closing());
        assert_eq!(
            g.complete(),
            Completion::Closing,
            "the cancelled operation does nothing more"
        );
        assert!(!g.begin(), "no new operation once closing");
        let idle = InlineGate::new();
        assert!(idle.try_close());
        assert!(!idle.try_close(), "claimed once");
    }

    /// A closer racing the issuer and the completion: never closes while a call is in progress,
    /// and never lets two sides drive.
    #[test]
    fn close_races_are_safe() {
        for _ in 0..300 {
            let g = Arc::new(InlineGate::new());
            let inside = Arc::new(AtomicUsize::new(0));
            let drivers = Arc::new(AtomicUsize::new(0));
            assert!(g.begin());
            inside.store(1, Ordering::SeqCst);
            let (g2, d2) = (Arc::clone(&g), Arc::clone(&drivers));
            let completer = thread::spawn(move || {
                if g2.complete() == Completion::Async {
                    d2.fetch_add(1, Ordering::SeqCst);
                }
            });
            let (g3, i3) = (Arc::clone(&g), Arc::clone(&inside));
            let closer = thread::spawn(move || {
                if g3.try_close() {
                    assert_eq!(
                        i3.load(Ordering::SeqCst),
                        0,
                        "closed while a call was in progress"
                    );
                    true
                } else {
                    false
                }
            });
            inside.store(0, Ordering::SeqCst);
            if g.issued() {
                drivers.fetch_add(1, Ordering::SeqCst);
            }
            completer.join().unwrap();
            let closed = closer.join().unwrap();
            let driven = drivers.load(Ordering::SeqCst);
            assert!(driven <= 1, "two drivers");
            assert!(driven == 1 || closed, "nobody continues and nobody closes");
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
