//! The minimum send and receive rates, judged against a schedule that keeps no more than a
//! window of credit (issue #21, finding 9).
//!
//! A client that reads a response (or sends a body) must keep it moving at the minimum rate:
//! after a grace period ([`SEND_GRACE_MS`]) it is due `rate` bytes a second, and it may fall
//! behind that schedule by at most a window ([`RATE_WINDOW_MS`]) before the connection is
//! closed (reset, while a response is undelivered). Bytes moved ahead of the schedule count as
//! credit of at most a window too, so the allowance never grows with the size of what is sent:
//! a client that stops is closed at most two windows later, whether the response is a kilobyte
//! or 64 MiB. (The rule before allowed the whole size at the minimum rate from the first byte:
//! about five days for 64 MiB.) A client exactly at the rate, in lumps or not, keeps going.
//!
//! What moves is what the host sees move: bytes the transport takes, and (khttpd) what the
//! transport's own buffer drains, reported when a write would block and when a deadline falls
//! due (`Connection::handle_transport`, `Connection::handle_timeout`). The first is an overestimate a kernel that enlarges its
//! buffer can stretch by a window at a time; the second is what keeps a steady reader behind
//! megabytes of socket buffer from being taken for one that stopped.
//!
//! IIS calls the send side `minBytesPerSecond` and http.sys `MinSendRate`; both judge each send
//! by its size. nginx's `send_timeout` and `client_body_timeout` judge the time between two
//! writes or reads. This judges both a trickle below the rate and a stall.

use crate::limits::{RATE_WINDOW_MS, SEND_GRACE_MS};
use crate::time::Instant;

/// How far a client has paid its schedule: the instant up to which the bytes it moved cover
/// the minimum rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    paid: Instant,
}

impl Progress {
    /// Bytes start to move at `now`: nothing is due before the grace period ends.
    pub(crate) const fn start(now: Instant) -> Self {
        Self {
            paid: now.add_millis(SEND_GRACE_MS),
        }
    }

    /// `n` more bytes moved at `now`, at a minimum of `rate` bytes per second: they pay the
    /// schedule on, but not beyond a window ahead of now.
    pub(crate) fn record(&mut self, n: u64, rate: u32, now: Instant) {
        let Some(ms) = n.saturating_mul(1000).checked_div(u64::from(rate)) else {
            return;
        };
        let ahead = now.add_millis(RATE_WINDOW_MS);
        self.paid = self.paid.max(self.paid.add_millis(ms).min(ahead));
    }

    /// Pays the schedule up to `now` (once the client is known to be moving, and the host
    /// will tell how much from here on): due a window from now at the earliest.
    pub(crate) fn window_from(&mut self, now: Instant) {
        self.paid = self.paid.max(now);
    }

    /// When the client is a window behind its schedule, counted from no earlier than `floor`
    /// (a moment from which the peer is not to blame, say the server's own output draining);
    /// `None` when the rate is 0 (off).
    pub(crate) fn deadline(&self, rate: u32, floor: Instant) -> Option<Instant> {
        (rate > 0).then(|| self.paid.max(floor).add_millis(RATE_WINDOW_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use crate::time::Instant;

    const T0: Instant = Instant(1_000);

    #[test]
    fn a_stall_is_caught_within_two_windows_whatever_was_sent_before() {
        let mut p = Progress::start(T0);
        assert_eq!(
            p.deadline(150, T0),
            Some(Instant(21_000)),
            "grace, then a window"
        );
        // 64 MiB at once buy one window of credit at most.
        p.record(64 << 20, 150, Instant(2_000));
        assert_eq!(
            p.deadline(150, T0),
            Some(Instant(22_000)),
            "a window ahead of now"
        );
        p.record(64 << 20, 150, Instant(15_000));
        assert_eq!(
            p.deadline(150, T0),
            Some(Instant(35_000)),
            "then a window ahead"
        );
        assert_eq!(p.deadline(0, T0), None, "off");
        assert_eq!(
            p.deadline(150, Instant(50_000)),
            Some(Instant(60_000)),
            "not before the floor"
        );
    }

    #[test]
    fn the_rate_itself_keeps_going_and_less_falls_behind() {
        // 150 B/s in one lump a second: always ahead of the deadline.
        let mut p = Progress::start(T0);
        for s in 1..=600 {
            let now = T0.add_secs(s);
            assert!(p.deadline(150, T0).unwrap() > now, "{s} s");
            p.record(150, 150, now);
        }
        // 100 B/s: a third behind; due once a window behind, after a minute.
        let mut p = Progress::start(T0);
        let mut s = 0;
        while p.deadline(150, T0).unwrap() > T0.add_secs(s) {
            s += 1;
            p.record(100, 150, T0.add_secs(s));
        }
        assert!((59..=61).contains(&s), "{s}");
    }
}
