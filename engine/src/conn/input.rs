//! Bytes in: request heads and bodies, pipelining and backpressure.

use core::mem;

use crate::error::{OutOfMemory, RequestError};
use crate::http1::body::{BodyReader, Kept};
use crate::http1::request::{Framing, Head, Method, early_error, find_head_end, parse_head};
use crate::http1::response::Persist;
use crate::limits::{DISCARD_LIMIT, INPUT_SLACK, Limits, MAX_HEADERS_CAP};
use crate::out::Mark;
use crate::rate::Progress;
use crate::respond::{Answer, Decided, decide, persist};
use crate::site::{Site, Stats};
use crate::time::Clock;

use super::{BodyCtx, Close, Connection, Deferred, State};

/// Bytes of empty lines (`CRLF` or `LF`) at the start of `buf`: RFC 9112 §2.2 lets a server
/// ignore them before a request-line.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut n = 0usize;
    loop {
        match buf.get(n..) {
            Some([b'\n', ..]) => n = n.saturating_add(1),
            Some([b'\r', b'\n', ..]) => n = n.saturating_add(2),
            _ => return n,
        }
    }
}

/// The error for a head over `max-request-bytes`: 414 if the request-target alone is over
/// `max-url-length`, else 431.
fn head_too_large(buf: &[u8], limits: &Limits) -> RequestError {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf.get(..line_end).unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let target_len = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(target), Some(_)) => target.len(),
        _ => line.len(),
    };
    if target_len > limits.max_url_length as usize {
        RequestError::UriTooLong
    } else {
        RequestError::HeadersTooLarge("the request head is too large")
    }
}

impl Connection {
    /// Feeds received bytes. Every byte is taken: processed, kept until more arrive, or (once no
    /// more requests are read) discarded.
    pub fn handle_input(&mut self, data: &[u8], clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.limits = *site.limits();
        if !self.takes_input() || self.eof {
            return;
        }
        if self.inbuf.is_empty() {
            let used = self.process(data, clock, site);
            let rest = data.get(used..).unwrap_or_default();
            if !rest.is_empty() && self.takes_input() {
                self.stash(rest);
            }
        } else {
            self.stash(data);
            self.process_inbuf(clock, site);
        }
        self.settle();
    }

    /// The peer closed its sending side: answer what is complete, then close. While the close
    /// lingers, this ends it. While a request waits for an application, the client has gone
    /// (nginx's "client closed request"): the request is cancelled
    /// ([`Connection::take_cancelled`]) and the connection closes.
    pub fn handle_eof(&mut self, clock: &Clock, site: &Site) {
        self.now = clock.now();
        if let State::Lingering(_) = self.state {
            self.state = State::Closed(Close::Finished);
            return;
        }
        if let State::Deferred(d) = &self.state {
            self.cancelled = d.id;
            if let (Some(_), Some(s)) = (d.id, &d.stats) {
                s.settle();
            }
            self.eof = true;
            self.state = State::Sending;
            return;
        }
        if let State::Streaming(st) = &self.state {
            // The rest of the answer has nowhere to go.
            self.cancelled = Some(st.id);
            self.eof = true;
            self.abort_stream();
            return;
        }
        self.eof = true;
        self.process_inbuf(clock, site);
        self.settle();
    }

    pub(super) fn stash(&mut self, data: &[u8]) {
        let cap = (self.limits.max_request_bytes as usize).saturating_add(INPUT_SLACK);
        let fits = self
            .inbuf
            .len()
            .checked_add(data.len())
            .is_some_and(|n| n <= cap);
        if !fits || self.inbuf.try_reserve(data.len()).is_err() {
            // Only a caller that ignores `wants_read` can get here.
            self.abort();
            return;
        }
        self.inbuf.extend_from_slice(data);
    }

    pub(super) fn process_inbuf(&mut self, clock: &Clock, site: &Site) {
        let mut buf = mem::take(&mut self.inbuf);
        let used = self.process(&buf, clock, site);
        if self.takes_input() {
            buf.drain(..used.min(buf.len()));
        } else {
            buf.clear();
        }
        self.inbuf = buf;
    }

    /// Processes requests from `buf`; returns the bytes consumed.
    pub(super) fn process(&mut self, buf: &[u8], clock: &Clock, site: &Site) -> usize {
        let mut pos = 0usize;
        while !self.backlogged() {
            let rest = buf.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let used = match &self.state {
                State::Body(_) => self.body_input(rest, clock, site),
                State::Deferred(d) if d.reader.is_some() => {
                    self.deferred_body_input(rest, clock, site)
                }
                State::Head => match self.head_input(rest, clock, site) {
                    Some(used) => used,
                    None => break,
                },
                // Waiting for an application, or no more requests.
                _ => break,
            };
            pos = pos.saturating_add(used);
        }
        pos.min(buf.len())
    }

    /// Feeds the body of a request for an application; returns how many bytes were consumed.
    pub(super) fn deferred_body_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> usize {
        let max = usize::try_from(self.limits.max_queued_body_bytes).unwrap_or(usize::MAX);
        let (now, budget, rate) = (
            self.now,
            self.limits.body_buffer_bytes,
            self.limits.min_receive_rate,
        );
        let State::Deferred(Deferred {
            reader: Some(reader),
            body,
            progress,
            charge,
            ..
        }) = &mut self.state
        else {
            return 0;
        };
        let mut keep = Kept {
            buf: body,
            max,
            charge,
            budget,
        };
        match reader.feed_into(rest, Some(&mut keep)) {
            Ok(p) => {
                progress.record(u64::try_from(p.consumed).unwrap_or(u64::MAX), rate, now);
                if p.done
                    && let State::Deferred(d) = &mut self.state
                {
                    d.reader = None;
                    d.since = now;
                }
                p.consumed
            }
            Err(e) => {
                self.state = State::Head;
                self.fail(e, clock, site);
                0
            }
        }
    }

    /// Feeds request-body bytes; returns how many were consumed.
    pub(super) fn body_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> usize {
        let (rate, now) = (self.limits.min_receive_rate, self.now);
        let State::Body(ctx) = &mut self.state else {
            return 0;
        };
        match ctx.reader.feed(rest) {
            Ok(p) => {
                let consumed = u64::try_from(p.consumed).unwrap_or(u64::MAX);
                ctx.progress.record(consumed, rate, now);
                if ctx.reader.discarded() > DISCARD_LIMIT {
                    let mark = ctx.mark;
                    self.state = State::Head;
                    self.rollback_to(mark);
                    self.fail(RequestError::ContentTooLarge, clock, site);
                } else if p.done {
                    let keep_alive = ctx.keep_alive;
                    self.state = State::Head;
                    self.commit();
                    if !keep_alive {
                        self.stop_reading();
                    }
                }
                p.consumed
            }
            Err(e) => {
                let mark = ctx.mark;
                self.state = State::Head;
                self.rollback_to(mark);
                self.fail(e, clock, site);
                0
            }
        }
    }

    /// Looks for a whole request head at the start of `rest` and answers it; returns the bytes
    /// consumed, or `None` when more input is needed or the connection stops reading.
    pub(super) fn head_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> Option<usize> {
        let skip = leading_empty_lines(rest);
        if skip > 0 {
            return Some(skip);
        }
        if self.head_started.is_none() {
            self.head_started = Some(self.now);
        }
        let max = self.limits.max_request_bytes as usize;
        let Some(end) = find_head_end(rest, self.scan_from) else {
            if let Some(e) = early_error(rest) {
                self.log_begin(rest);
                self.fail(e, clock, site);
            } else if rest.len() > max {
                self.log_begin(rest);
                self.fail(head_too_large(rest, &self.limits), clock, site);
            } else {
                self.scan_from = rest.len().saturating_sub(3);
            }
            return None;
        };
        self.scan_from = 0;
        self.head_started = None;
        self.log_begin(rest);
        if end > max {
            self.fail(head_too_large(rest, &self.limits), clock, site);
            return None;
        }
        self.on_head(rest.get(..end).unwrap_or_default(), clock, site);
        Some(end)
    }

    pub(super) fn on_head(&mut self, head_bytes: &[u8], clock: &Clock, site: &Site) {
        self.requests = self.requests.saturating_add(1);
        Stats::bump(&site.stats().requests);
        let nslots = (self.limits.max_headers as usize).min(MAX_HEADERS_CAP);
        let mut slots = [const { mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
        let slots = slots.get_mut(..nslots).unwrap_or_default();
        let (head, headers) = match parse_head(head_bytes, slots, &self.limits) {
            Ok(h) => h,
            Err(e) => return self.fail(e, clock, site),
        };
        // Longer than either path takes (discarded behind a cached answer, or kept for an
        // application): 413 before a `100 Continue` invites it.
        if let Framing::Length(n) = head.framing
            && n > DISCARD_LIMIT.max(self.limits.max_queued_body_bytes)
        {
            return self.fail(RequestError::ContentTooLarge, clock, site);
        }
        if head.expect_continue {
            let persist = persist(&head);
            if Answer::Continue
                .write(&mut self.out, clock.date(), persist, false)
                .is_err()
            {
                return self.abort();
            }
            self.commit();
        }
        let Ok(mark) = self.out.mark() else {
            return self.abort();
        };
        let Decided {
            answer,
            close,
            cache_url,
        } = match decide(self.local, &head, headers, clock, site, &mut self.scratch) {
            Ok(decided) => decided,
            Err(OutOfMemory) => {
                self.rollback_to(mark);
                return self.fail(RequestError::OutOfMemory, clock, site);
            }
        };
        let persist = if close {
            Persist::Close
        } else {
            persist(&head)
        };
        let reader = self.body_reader(&head, headers.len(), nslots);
        if let Answer::Deferred { queue } = answer {
            let to = (queue, cache_url);
            let parsed = (head_bytes, headers);
            return self.defer(to, parsed, &head, reader, persist, clock, site);
        }
        // Not for an application: a body is only discarded, up to DISCARD_LIMIT.
        if let Framing::Length(n) = head.framing
            && n > DISCARD_LIMIT
        {
            self.rollback_to(mark);
            return self.fail(RequestError::ContentTooLarge, clock, site);
        }
        let head_only = head.method == Method::Head;
        match answer.write(&mut self.out, clock.date(), persist, head_only) {
            Ok(served) => self.served(served, site),
            Err(OutOfMemory) => {
                self.rollback_to(mark);
                return self.fail(RequestError::OutOfMemory, clock, site);
            }
        }
        self.after_answer(reader, mark, close);
    }

    /// After an answer is written: its request's body, if any, is read and discarded (the
    /// answer held back behind `mark` until then); otherwise the answer goes, and a closing
    /// one stops the reading.
    fn after_answer(&mut self, reader: Option<BodyReader>, mark: Mark, close: bool) {
        match reader {
            Some(reader) if !close => {
                self.state = State::Body(BodyCtx {
                    reader,
                    started: self.now,
                    progress: Progress::start(self.now),
                    mark,
                    keep_alive: true,
                });
            }
            _ => {
                self.commit();
                if close {
                    self.stop_reading();
                }
            }
        }
    }

    /// The reader for the body `head` announces, if any.
    pub(super) fn body_reader(
        &self,
        head: &Head<'_>,
        fields: usize,
        nslots: usize,
    ) -> Option<BodyReader> {
        match head.framing {
            Framing::None => None,
            Framing::Length(n) => Some(BodyReader::with_length(n)),
            Framing::Chunked => {
                let head_left = (self.limits.max_request_bytes as usize).saturating_sub(head.len);
                Some(BodyReader::chunked(
                    head_left,
                    nslots.saturating_sub(fields),
                    self.limits.max_field_length as usize,
                ))
            }
        }
    }
}
