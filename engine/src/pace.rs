//! How much one send may carry on a transport whose sends complete only once the peer has
//! acknowledged them (issue #22).
//!
//! Winsock Kernel does not buffer: "a call to the WskSend function will not be completed by the
//! WSK subsystem until all of the data has actually been sent" (learn.microsoft.com, `WskSend`,
//! Remarks), and the data a WSK client keeps "outstanding (that is, passed to the WSK subsystem
//! but not yet completed)" is sized like Winsock's ideal send backlog, data "sent but not
//! acknowledged yet" (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`, `SIO_IDEAL_SEND_BACKLOG_QUERY`). The
//! driver therefore sees a client's progress only when a send completes, and the minimum send
//! rate (`rate.rs`) judges a client by those completions: a send that takes the client
//! longer than the rate's window to acknowledge resets a reader that is reading. (One 8 MiB
//! send, read at 300 KB/s, takes 28 s: past the 20 s the schedule allows without news.)
//!
//! So each send carries about [`TARGET_MS`] of what the client took last, like TCP's own
//! window: it starts at [`FIRST`] (one initial congestion window's worth, so that small
//! responses go in one send), at most doubles per send, shrinks with a client that slows, never
//! drops below what the minimum rate moves in a quarter of the window, and never exceeds
//! [`MAX`]. A client that keeps any steady rate at or above the minimum (after its first
//! [`FIRST`] bytes) is judged by its own progress; one whose rate falls by more than about
//! `2 × RATE_WINDOW_MS / TARGET_MS` (80 times) within a single send can be reset before that
//! send completes. `SIO_TCP_INFO` would report progress within a send, but it is not documented
//! for WSK sockets.
//!
//! khttpd does not need this: Linux's socket buffer takes a write at once, and `SIOCOUTQ` says
//! what the client has not yet received.

use crate::limits::RATE_WINDOW_MS;

/// The first send's most bytes: ten segments of 1,460 bytes (RFC 6928's initial window) and
/// some, so that a small response is one send.
pub const FIRST: usize = 16 * 1024;
/// The most one send carries.
pub const MAX: usize = 1024 * 1024;
/// How long a send should take the client, at the rate it acknowledged the last one.
pub const TARGET_MS: u64 = 250;
/// The least a send carries, whatever the rates.
const FLOOR: usize = 512;

/// The size of the next send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendSize {
    size: usize,
}

impl Default for SendSize {
    fn default() -> Self {
        Self::new()
    }
}

impl SendSize {
    /// A connection's first send: [`FIRST`].
    #[must_use]
    pub const fn new() -> Self {
        Self { size: FIRST }
    }

    /// The most bytes the next send carries.
    #[must_use]
    pub const fn get(&self) -> usize {
        self.size
    }

    /// A send of `n` bytes was acknowledged `ms` milliseconds after it was issued; `min_rate`
    /// is the minimum send rate in bytes a second (0: off). Sizes the next send.
    pub fn completed(&mut self, n: usize, ms: u64, min_rate: u32) {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        // Bytes a second, as acknowledged; a send that took no measurable time is as fast as
        // one that took a millisecond.
        let rate = n64
            .saturating_mul(1000)
            .checked_div(ms.max(1))
            .unwrap_or(u64::MAX);
        let want = rate
            .saturating_mul(TARGET_MS)
            .checked_div(1000)
            .unwrap_or(0);
        let floor = u64::from(min_rate)
            .saturating_mul(RATE_WINDOW_MS)
            .checked_div(4000)
            .unwrap_or(0)
            .max(FLOOR as u64);
        // Growth is earned by a send that was full: a short one (the end of a body) says little.
        let ceiling = if n >= self.size {
            n64.saturating_mul(2)
        } else {
            self.size as u64
        };
        let next = want.min(ceiling).min(MAX as u64).max(floor).min(MAX as u64);
        self.size = usize::try_from(next).unwrap_or(MAX);
        debug_assert!(
            (FLOOR..=MAX).contains(&self.size),
            "a send size stays within its bounds"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{FIRST, MAX, SendSize, TARGET_MS};
    use alloc::vec::Vec;

    #[test]
    fn a_fast_client_grows_to_the_most_by_doubling() {
        let mut s = SendSize::new();
        assert_eq!(s.get(), FIRST);
        let mut sizes = Vec::new();
        for _ in 0..10 {
            let n = s.get();
            s.completed(n, 1, 150);
            sizes.push(s.get());
        }
        assert_eq!(&sizes[..3], &[2 * FIRST, 4 * FIRST, 8 * FIRST]);
        assert_eq!(s.get(), MAX);
    }

    #[test]
    fn a_slow_client_gets_sends_it_finishes_in_a_fraction_of_the_window() {
        let mut s = SendSize::new();
        // 16 KiB in 8 s: 2 KB/s, so 250 ms of it.
        s.completed(FIRST, 8_000, 150);
        assert_eq!(s.get(), 2048 * TARGET_MS as usize / 1000);
        // At the minimum rate itself: a quarter of what the window moves, at least 512.
        s.completed(s.get(), 10_000, 150);
        assert_eq!(s.get(), 512);
        s.completed(512, 3_000, 150_000);
        assert_eq!(s.get(), 375_000, "a high minimum rate keeps sends large");
        // The rate off: the floor.
        s.completed(512, 60_000, 0);
        assert_eq!(s.get(), 512);
    }

    #[test]
    fn a_short_send_does_not_grow_it_and_nothing_overflows() {
        let mut s = SendSize::new();
        s.completed(100, 0, 150);
        assert_eq!(s.get(), FIRST, "the end of a small body");
        s.completed(usize::MAX, 0, u32::MAX);
        assert_eq!(s.get(), MAX);
        s.completed(0, u64::MAX, u32::MAX);
        assert!(s.get() <= MAX);
    }
}
