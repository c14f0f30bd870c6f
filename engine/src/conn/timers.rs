//! The connection's timers: which deadline comes next, what happens when it passes, and
//! the lingering close.

use crate::limits::{Limits, SEND_GRACE_MS};
use crate::rate::Progress;
use crate::time::{Clock, Instant};

use super::{Close, Connection, Deadline, Linger, State, Timer};

/// The minimum-send-rate rule: `bytes` handed over at `since` must be delivered by the returned
/// instant ([`SEND_GRACE_MS`] of slack, then `min-send-rate` bytes per second); `None` when the
/// rule is off.
fn send_deadline(limits: &Limits, since: Instant, bytes: u64) -> Option<Instant> {
    let rate = u64::from(limits.min_send_rate);
    let allowed = bytes.saturating_mul(1000).checked_div(rate)?;
    Some(since.add_millis(SEND_GRACE_MS.saturating_add(allowed)))
}

/// The deadline of a lingering close (see [`Connection::handle_shutdown`]).
fn linger_deadline(limits: &Limits, linger: &Linger) -> Deadline {
    let end = linger.since.add_secs(u64::from(limits.linger_timeout));
    if linger.delivered {
        return Deadline {
            at: end,
            timer: Timer::Linger,
            close: Some(Close::Finished),
        };
    }
    let rate = limits.min_send_rate;
    let watched = linger
        .watch
        .and_then(|(p, _)| p.deadline(rate, linger.since));
    let send = watched
        .or_else(|| send_deadline(limits, linger.since, linger.in_flight))
        .unwrap_or_else(|| linger.since.add_secs(u64::from(limits.idle_timeout)));
    Deadline {
        at: send.max(end),
        timer: Timer::Linger,
        close: Some(Close::Abortive),
    }
}

impl Connection {
    /// The next instant at which [`Connection::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.poll_deadline().map(|d| d.at)
    }

    /// The next deadline: when, which timer, and how the connection closes if it passes. A host
    /// that cannot call [`Connection::handle_timeout`] when it falls due (the driver's timer
    /// runs where the connection cannot be touched) closes the socket as it says.
    #[must_use]
    pub fn poll_deadline(&self) -> Option<Deadline> {
        if self.poll_close().is_some() {
            return None;
        }
        let l = &self.limits;
        if let State::Lingering(linger) = &self.state {
            return Some(linger_deadline(l, linger));
        }
        let floor = Instant(0);
        let rate = |p: &Progress| p.deadline(l.min_send_rate, floor);
        let abort = |at| Deadline::new(at, Timer::SendRate, Some(Close::Abortive));
        let send = self.send.as_ref().and_then(rate).map(abort);
        // While committed output is waiting for the client, only the send rate judges the
        // connection: the client is busy reading what we sent, and a request or a close behind
        // that output is not late. (Counting the idle timer here once cut `Connection: close`
        // downloads that outlasted idle-timeout.) The head and body timers count from the later
        // of their first byte and the moment the output drained.
        if self.out.pending_bytes() > 0 {
            return send;
        }
        let undelivered = self
            .undelivered
            .as_ref()
            .and_then(|(p, _)| rate(p))
            .map(abort);
        // The earliest; of equal ones, the first listed.
        [
            send,
            undelivered,
            self.body_deadline(),
            self.phase_deadline(),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|d| d.at)
    }

    /// A body being read (discarded, or kept for an application) must arrive within
    /// `header-timeout` of its head, and keep up `min-receive-rate`, both counted from no
    /// earlier than when the output drained.
    fn body_deadline(&self) -> Option<Deadline> {
        let l = &self.limits;
        let (started, progress) = match &self.state {
            State::Body(ctx) => (ctx.started, &ctx.progress),
            State::Deferred(d) if d.id.is_none() && d.reader.is_some() => (d.since, &d.progress),
            _ => return None,
        };
        let whole = started
            .max(self.idle_since)
            .add_secs(u64::from(l.header_timeout));
        let at = progress
            .deadline(l.min_receive_rate, self.idle_since)
            .map_or(whole, |rate| rate.min(whole));
        Some(Deadline::new(at, Timer::Body, Some(Close::Graceful)))
    }

    /// The timer of the connection's phase: header, idle, or the application's answer.
    fn phase_deadline(&self) -> Option<Deadline> {
        let l = &self.limits;
        let app = u64::from(l.app_response_timeout);
        match &self.state {
            State::Head => {
                if let Some(started) = self.head_started {
                    let at = started
                        .max(self.idle_since)
                        .add_secs(u64::from(l.header_timeout));
                    Some(Deadline::new(at, Timer::Header, Some(Close::Graceful)))
                } else if self.inbuf.is_empty() {
                    let at = self.idle_since.add_secs(u64::from(l.idle_timeout));
                    Some(Deadline::new(at, Timer::Idle, Some(Close::Graceful)))
                } else {
                    None
                }
            }
            // The body is still arriving (its timers), or the host is to take it (no timer);
            // once queued, the application has `app-response-timeout`.
            State::Deferred(d) => {
                d.id.map(|_| Deadline::new(d.since.add_secs(app), Timer::App, None))
            }
            // Each piece has `app-response-timeout` to come, from the later of the one before
            // and the moment the client had read everything.
            State::Streaming(st) => {
                let at = st.since.max(self.idle_since).add_secs(app);
                Some(Deadline::new(at, Timer::App, None))
            }
            State::Body(_) | State::Sending | State::Lingering(_) | State::Closed(_) => None,
        }
    }

    /// Enforces the deadlines at `clock.now()`; returns the one that fell due, if any. A
    /// connection past one closes as the deadline says: abortively while output is undelivered
    /// (a client too slow to read), gracefully otherwise.
    ///
    /// `undelivered` is what the host's transport holds that the client has not received yet
    /// (Linux: `SIOCOUTQ`), or 0 where the host cannot tell. A client still receiving is not
    /// idle: while such bytes remain, the idle, head and body timers wait, and the bytes are
    /// judged by the minimum send rate instead, from the first time they were seen; a client too
    /// slow for it is reset. While output is pending here, the same bytes draining is the
    /// client's progress too ([`Connection::handle_transport`]); a first report that comes only
    /// now gives a window from now, to have something to compare the next one with.
    pub fn handle_timeout(&mut self, clock: &Clock, undelivered: u64) -> Option<Deadline> {
        self.now = clock.now();
        if undelivered == 0 {
            self.undelivered = None;
        }
        self.note_transport(undelivered, true);
        let due = self.poll_deadline().filter(|d| self.now >= d.at)?;
        if self.reading() && self.out.pending_bytes() == 0 && undelivered > 0 {
            let (rate, now) = (self.limits.min_send_rate, self.now);
            let (progress, last) = self
                .undelivered
                .get_or_insert((Progress::start(now), undelivered));
            if undelivered < *last {
                progress.record(last.saturating_sub(undelivered), rate, now);
            }
            *last = undelivered;
            match progress.deadline(rate, Instant(0)) {
                Some(at) if now >= at => {
                    self.abort();
                    return Some(Deadline {
                        at,
                        timer: Timer::SendRate,
                        close: Some(Close::Abortive),
                    });
                }
                _ => {
                    // Still being delivered: not idle.
                    self.idle_since = self.now;
                    return None;
                }
            }
        }
        self.undelivered = None;
        match due.close {
            Some(Close::Graceful) => {
                if let State::Body(ctx) = &self.state {
                    let mark = ctx.mark;
                    self.rollback_to(mark);
                }
                if let State::Deferred(_) = self.state {
                    self.state = State::Head;
                }
                self.stop_reading();
            }
            Some(close) => self.state = State::Closed(close),
            None => self.app_timed_out(clock),
        }
        Some(due)
    }

    /// The host has shut down the write side after [`Close::Graceful`]; `in_flight` is what the
    /// client might not have received yet (Linux: `SIOCOUTQ`; a transport that cannot tell gives
    /// every byte it sent).
    ///
    /// The lingering close (RFC 9112 §9.6): the host keeps reading, and this discards the input,
    /// so that requests the client pipelined behind the last one are read rather than answered
    /// with a TCP reset, which can destroy the tail of the response before the client has read
    /// it. It ends at the peer's FIN, or by [`Connection::poll_deadline`]:
    /// - once everything is delivered ([`Connection::handle_delivered`], or `in_flight` 0):
    ///   `linger-timeout` after the shutdown, [`Close::Finished`];
    /// - until then: what the minimum send rate allows for `in_flight` bytes (`idle-timeout`
    ///   when the rate is off), and at least `linger-timeout`; then [`Close::Abortive`]: a reader
    ///   too slow to finish gets a reset, never a clean close that would look like a whole
    ///   response.
    pub fn handle_shutdown(&mut self, clock: &Clock, in_flight: u64) {
        self.now = clock.now();
        if self.poll_close() == Some(Close::Graceful) {
            self.state = State::Lingering(Linger {
                since: self.now,
                in_flight,
                delivered: in_flight == 0,
                watch: None,
            });
        }
    }

    /// While the close lingers: the transport says the client has received everything (Linux:
    /// `SIOCOUTQ` is 0; WSK: the graceful disconnect completed).
    pub fn handle_delivered(&mut self, clock: &Clock) {
        self.now = clock.now();
        if let State::Lingering(linger) = &mut self.state {
            linger.delivered = true;
        }
    }

    /// While output is pending: the transport holds `queued` bytes for the client now (Linux:
    /// `SIOCOUTQ`), for a host that can tell, when it likes (khttpd: when a write would block,
    /// and at each deadline that falls due). What the transport's buffer drains between two
    /// reports is the client's progress as much as what the transport takes: a socket buffer
    /// of megabytes can take a slow but steady reader longer than a window to drain, with
    /// nothing taken meanwhile.
    pub fn handle_transport(&mut self, clock: &Clock, queued: u64) {
        self.now = clock.now();
        self.note_transport(queued, false);
    }

    pub(super) fn note_transport(&mut self, queued: u64, at_deadline: bool) {
        let Some(progress) = &mut self.send else {
            return;
        };
        let (rate, now) = (self.limits.min_send_rate, self.now);
        match self.send_queued.replace(queued) {
            Some(last) if queued < last => {
                progress.record(last.saturating_sub(queued), rate, now);
            }
            None if queued > 0 && at_deadline => progress.window_from(now),
            _ => {}
        }
    }

    /// While the close lingers: the transport still holds `n` bytes for the client (Linux:
    /// `SIOCOUTQ`), for a host that can tell, as often as it likes (khttpd: every sweep). From
    /// the first report on, the client must take them at `min-send-rate` judged over a window
    /// (the engine's `rate` schedule), not in the allowance `handle_shutdown`'s count gave; 0 is
    /// [`Connection::handle_delivered`].
    pub fn handle_undelivered(&mut self, clock: &Clock, n: u64) {
        self.now = clock.now();
        if n == 0 {
            return self.handle_delivered(clock);
        }
        let (rate, now) = (self.limits.min_send_rate, self.now);
        if let State::Lingering(linger) = &mut self.state {
            let (progress, last) = linger
                .watch
                .get_or_insert((Progress::start(linger.since), linger.in_flight));
            if n < *last {
                progress.record(last.saturating_sub(n), rate, now);
            }
            *last = n;
        }
    }
}
