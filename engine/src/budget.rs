//! The budget for request bodies held for applications (issue #21, finding 4).
//!
//! A request for an application is read whole, body and all, before it is offered: a client
//! that announces a body and sends it slowly, or stops one byte short, makes the server hold
//! what it sent. Each connection is bounded by `max-queued-body-bytes`, but a thousand of them
//! are not. So every body byte a connection keeps, and every body a request queue holds, is
//! counted in one gauge shared by the whole server ([`crate::Stats`]'s
//! `body_bytes_held`), from the first byte read until the request is answered or gone, against
//! the `body-buffer-bytes` limit. A body that would take the total past it is not read on: its
//! request is answered 503 with `Retry-After`, and the connection closes (what the client sent
//! of it is read and dropped by the lingering close). Memory is counted as allocated, buffer
//! capacity and not only length, so the gauge is what the server holds.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use crate::site::Stats;

/// Bytes of request bodies that one holder (a connection reading a body, a request waiting for
/// or with an application) counts in the server's gauge; given back when it is dropped.
#[derive(Debug, Default)]
pub(crate) struct Charge {
    bytes: u64,
    stats: Option<Arc<Stats>>,
}

impl Charge {
    /// A charge of nothing yet, against `stats`' gauge.
    pub(crate) fn new(stats: &Arc<Stats>) -> Self {
        Self {
            bytes: 0,
            stats: Some(Arc::clone(stats)),
        }
    }

    /// Counts `n` more bytes if the server's total stays within `limit`; false (and nothing
    /// counted) otherwise.
    pub(crate) fn grow(&mut self, n: u64, limit: u64) -> bool {
        let Some(stats) = &self.stats else {
            return false;
        };
        let counted = stats
            .body_bytes_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok();
        if counted {
            self.bytes = self.bytes.saturating_add(n);
            debug_assert!(
                stats.body_bytes_held.load(Ordering::Acquire) >= self.bytes,
                "the gauge holds at least this charge"
            );
        }
        counted
    }

    /// Counts `n` more bytes whatever the total: bytes already admitted, changing hands (a
    /// connection's body copied into the hand-off, whose own charge the connection then drops).
    pub(crate) fn force(&mut self, n: u64) {
        if let Some(stats) = &self.stats {
            stats.body_bytes_held.fetch_add(n, Ordering::AcqRel);
            self.bytes = self.bytes.saturating_add(n);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            let bytes = self.bytes;
            let _ =
                stats
                    .body_bytes_held
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                        Some(held.saturating_sub(bytes))
                    });
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;
    use core::sync::atomic::Ordering;

    use super::Charge;
    use crate::site::Stats;

    #[test]
    fn charges_share_one_gauge_and_give_back_what_they_took() {
        let stats = Arc::new(Stats::default());
        let held = || stats.body_bytes_held.load(Ordering::Relaxed);
        let mut a = Charge::new(&stats);
        let mut b = Charge::new(&stats);
        assert!(a.grow(60, 100));
        assert!(!b.grow(41, 100), "past the limit: refused");
        assert_eq!(held(), 60, "a refusal counts nothing");
        assert!(b.grow(40, 100));
        b.force(50);
        assert_eq!(held(), 150);
        drop(a);
        assert_eq!(held(), 90);
        drop(b);
        assert_eq!(held(), 0);
        assert!(
            !Charge::default().grow(1, 100),
            "no gauge: nothing to count against"
        );
    }
}
