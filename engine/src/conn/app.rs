//! The application hand-off (issue #12): a request deferred to an application, queued by the
//! host, and answered, abandoned or timed out.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::budget::Charge;
use crate::error::RequestError;
use crate::exchange::{Delivery, Outcome, Refusal, RequestId};
use crate::http1::body::BodyReader;
use crate::http1::request::{Framing, Head, Method, head_index};
use crate::http1::response::{Persist, Served};
use crate::queues::QueueStats;
use crate::rate::Progress;
use crate::respond::{Answer, AppResponse};
use crate::route::canonicalize;
use crate::site::Site;
use crate::time::Clock;

use super::{Connection, Deferred, State, copy_into};

/// The request's canonical path (as routing keyed on it) and `?` and the query as sent, bytes
/// past ASCII escaped: what an application is told to forward ([`Delivery::path`]).
fn cooked_target(
    head: &Head<'_>,
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> Result<Vec<u8>, RequestError> {
    let path = canonicalize(head.path, scratch).map_err(|e| match e {
        crate::error::CanonError::OutOfMemory => RequestError::OutOfMemory,
        _ => RequestError::BadRequest("malformed request path"),
    })?;
    let query = head.query.map_or(0, |q| q.len().saturating_add(1));
    // At most three bytes for each: a byte past ASCII is written `%XX`, so that the result is
    // ASCII and can be sent on as it is.
    let most = path.len().saturating_add(query).saturating_mul(3);
    let mut out = Vec::new();
    out.try_reserve_exact(most)
        .map_err(|_| RequestError::OutOfMemory)?;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if b.is_ascii() {
                out.push(b);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let digit = |d: u8| HEX.get(usize::from(d)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'%', digit(b >> 4), digit(b & 0xF)]);
            }
        }
    };
    put(path);
    if let Some(q) = head.query {
        put(b"?");
        put(q);
    }
    Ok(out)
}

impl Connection {
    /// Starts handing a request to the application attached to `queue`: its body is read
    /// (up to `max-queued-body-bytes`), then [`Connection::poll_delivery`] offers it.
    pub(super) fn defer(
        &mut self,
        (queue, cache_url): (u32, Option<String>),
        (head_bytes, headers): (&[u8], &[httparse::Header<'_>]),
        head: &Head<'_>,
        reader: Option<BodyReader>,
        persist: Persist,
        clock: &Clock,
        site: &Site,
    ) {
        if let Framing::Length(n) = head.framing
            && n > self.limits.max_queued_body_bytes
        {
            return self.fail(RequestError::ContentTooLarge, clock, site);
        }
        // A body announced that the budget cannot hold now is refused before it is read.
        let held = site.stats().body_bytes_held.load(Ordering::Acquire);
        if let Framing::Length(n) = head.framing
            && held.saturating_add(n) > self.limits.body_buffer_bytes
        {
            return self.fail(RequestError::BodiesBusy, clock, site);
        }
        let mut copy = Vec::new();
        if copy_into(&mut copy, head_bytes).is_err() {
            return self.fail(RequestError::OutOfMemory, clock, site);
        }
        let path = match cooked_target(head, &mut self.scratch) {
            Ok(path) => path,
            Err(e) => return self.fail(e, clock, site),
        };
        let spans = match head_index(head_bytes, headers) {
            Ok(spans) => spans,
            Err(e) => return self.fail(e, clock, site),
        };
        debug_assert!(
            khttp_proto::spans::HeadParts::read(head_bytes, &spans).is_ok(),
            "an application can read every span of the index it is given"
        );
        let stats = site.queues().get(queue).map(|q| Arc::clone(&q.stats));
        if let Some(s) = &stats {
            QueueStats::bump(&s.requests);
        }
        self.state = State::Deferred(Deferred {
            queue,
            head: copy,
            spans,
            body: Vec::new(),
            path,
            cache_url,
            reader,
            progress: Progress::start(self.now),
            charge: Charge::new(site.shared_stats()),
            id: None,
            since: self.now,
            keep_alive: persist != Persist::Close,
            head_only: head.method == Method::Head,
            http11: head.version == crate::http1::request::Version::Http11,
            persist,
            stats,
        });
    }

    /// The request ready to be handed to an application, if one is: the host queues it and
    /// reports with [`Connection::handle_queued`] or [`Connection::handle_refused`].
    #[must_use]
    pub fn poll_delivery(&self) -> Option<Delivery<'_>> {
        match &self.state {
            State::Deferred(d) if d.reader.is_none() && d.id.is_none() => Some(Delivery {
                queue: d.queue,
                head: &d.head,
                spans: &d.spans,
                body: &d.body,
                path: &d.path,
                local: self.local,
                remote: self.remote,
                cache_url: d.cache_url.as_deref(),
            }),
            _ => None,
        }
    }

    /// The host queued the request [`Connection::poll_delivery`] offered, as `id`; the
    /// application has `app-response-timeout` to answer.
    pub fn handle_queued(&mut self, id: RequestId, clock: &Clock) {
        self.now = clock.now();
        if let State::Deferred(d) = &mut self.state
            && d.reader.is_none()
            && d.id.is_none()
        {
            d.id = Some(id);
            d.since = self.now;
            if let Some(s) = &d.stats {
                QueueStats::bump(&s.in_flight);
            }
            // The head and body are the application's now (the hand-off counts the body in
            // the budget from here).
            d.head = Vec::new();
            d.spans = Vec::new();
            d.body = Vec::new();
            d.path = Vec::new();
            d.charge = Charge::default();
        }
    }

    /// The host could not queue the request [`Connection::poll_delivery`] offered: 503.
    pub fn handle_refused(&mut self, refusal: Refusal, clock: &Clock, site: &Site) {
        self.now = clock.now();
        let text = match refusal {
            Refusal::QueueFull => "the request queue is full",
            Refusal::NoApplication => "no application is attached to this URL",
            Refusal::OutOfMemory => "out of memory",
        };
        if self.poll_delivery().is_some() {
            self.count(|s| QueueStats::bump(&s.refused));
            self.answer_deferred(&Answer::Busy { text }, clock.date(), site);
            self.resume(clock, site);
        }
    }

    /// The request the connection waits for, if it has been queued: a host cancels it when
    /// the connection goes.
    #[must_use]
    pub const fn waiting_for(&self) -> Option<RequestId> {
        match &self.state {
            State::Deferred(d) => d.id,
            State::Streaming(st) => Some(st.id),
            _ => None,
        }
    }

    /// A request the engine stopped waiting for ([`crate::Timer::App`]): the host drops it from its
    /// queue, and an answer that comes later is refused.
    pub const fn take_cancelled(&mut self) -> Option<RequestId> {
        self.cancelled.take()
    }

    /// What became of request `id` ([`crate::Handoff`]): [`Connection::handle_response`] or
    /// [`Connection::handle_abandoned`]. Returns false when the connection no longer waits.
    pub fn handle_outcome(
        &mut self,
        id: RequestId,
        outcome: &Outcome,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        match outcome {
            Outcome::Response(r) => self.handle_response(id, r, clock, site),
            Outcome::Piece { body, last } => self.handle_piece(id, body, *last, clock, site),
            Outcome::Abandoned => self.handle_abandoned(id, false, clock, site),
            Outcome::Invalid => self.handle_abandoned(id, true, clock, site),
        }
    }

    /// The application's answer to request `id`. Returns false when the connection no longer
    /// waits for it (answered 503 after `app-response-timeout`, or closed).
    pub fn handle_response(
        &mut self,
        id: RequestId,
        response: &AppResponse,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        self.now = clock.now();
        self.limits = *site.limits();
        if self.waiting_for() != Some(id) || self.mid_response() {
            return false;
        }
        self.count(|s| {
            QueueStats::bump(&s.answered);
            s.settle();
        });
        if response.is_streamed() {
            return self.start_stream(id, response, clock);
        }
        self.answer_deferred(&Answer::App(response), clock.date(), site);
        self.resume(clock, site);
        true
    }

    /// The application that had request `id` went away (or gave it up) before answering (503),
    /// or sent an answer the server refused (`invalid`: 502). Returns false when the connection
    /// no longer waits for it.
    pub fn handle_abandoned(
        &mut self,
        id: RequestId,
        invalid: bool,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        self.now = clock.now();
        if self.waiting_for() != Some(id) {
            return false;
        }
        if let State::Streaming(st) = &self.state {
            // Gone half-way: the client must see a broken response.
            if let Some(s) = &st.stats {
                QueueStats::bump(&s.abandoned);
            }
            self.abort_stream();
            return true;
        }
        self.count(|s| {
            QueueStats::bump(&s.abandoned);
            s.settle();
        });
        let answer = if invalid {
            Answer::Page {
                status: 502,
                text: "the application's answer was invalid",
                allow: false,
            }
        } else {
            Answer::Busy {
                text: "the application went away before it answered",
            }
        };
        self.answer_deferred(&answer, clock.date(), site);
        self.resume(clock, site);
        true
    }

    /// `app-response-timeout` passed: 503, and the request is cancelled.
    pub(super) fn app_timed_out(&mut self, clock: &Clock) {
        if let State::Streaming(st) = &self.state {
            // The next piece did not come: the client must see a broken response.
            self.cancelled = Some(st.id);
            if let Some(s) = &st.stats {
                QueueStats::bump(&s.timed_out);
            }
            self.abort_stream();
            return;
        }
        if let Some(id) = self.waiting_for() {
            self.cancelled = Some(id);
            self.count(|s| {
                QueueStats::bump(&s.timed_out);
                s.settle();
            });
            let busy = Answer::Busy {
                text: "the application did not answer in time",
            };
            let (persist, head_only, keep_alive) = match &self.state {
                State::Deferred(d) => (d.persist, d.head_only, d.keep_alive),
                _ => (Persist::Close, false, false),
            };
            let written = busy.write(&mut self.out, clock.date(), persist, head_only);
            self.finish_deferred(written.ok(), keep_alive);
        }
    }

    /// Counts something of the deferred request in its queue's counters.
    pub(super) fn count(&self, f: impl FnOnce(&QueueStats)) {
        if let State::Deferred(Deferred { stats: Some(s), .. }) = &self.state {
            f(s);
        }
    }

    /// Writes the answer to the deferred request.
    pub(super) fn answer_deferred(
        &mut self,
        answer: &Answer<'_>,
        date: &crate::time::HttpDate,
        site: &Site,
    ) {
        let State::Deferred(d) = &self.state else {
            return;
        };
        let (persist, head_only, keep_alive) = (d.persist, d.head_only, d.keep_alive);
        let written = answer.write(&mut self.out, date, persist, head_only);
        if let Ok(served) = written {
            self.served(served, site);
        }
        self.finish_deferred(written.ok(), keep_alive);
    }

    /// After the deferred answer: commit it and go on reading (or close).
    pub(super) fn finish_deferred(&mut self, served: Option<Served>, keep_alive: bool) {
        self.state = State::Head;
        if served.is_none() {
            return self.abort();
        }
        self.commit();
        if !keep_alive {
            self.stop_reading();
        }
    }

    /// Processes requests pipelined behind a deferred one, then settles.
    pub(super) fn resume(&mut self, clock: &Clock, site: &Site) {
        if !self.inbuf.is_empty() && self.reading() {
            self.process_inbuf(clock, site);
        }
        self.settle();
    }
}
