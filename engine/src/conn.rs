//! The connection state machine (DESIGN §2): bytes in, responses out, deadlines — no I/O.
//!
//! Call order, for each TCP connection:
//! 1. [`Connection::new`] when it is accepted, with the local address it arrived on;
//! 2. [`Connection::handle_input`] with every byte received (any split, down to one byte),
//!    while [`Connection::wants_read`] is true; [`Connection::handle_eof`] when the peer closes;
//! 3. send [`Connection::transmit_slices`] (or [`Connection::transmit`] piece by piece) and report
//!    what was written with [`Connection::handle_sent`];
//! 4. arm a timer for [`Connection::poll_timeout`] and call [`Connection::handle_timeout`];
//! 5. close the socket when [`Connection::poll_close`] says so (graceful: after a FIN; abortive:
//!    with a reset).
//!
//! Responses are produced in request order, so pipelining needs nothing special. A response is
//! written as soon as its head is parsed; if the request has a body, the response is held until the
//! body has been read and discarded, so that a malformed body still gets its 400 instead.
//! Errors (4xx/5xx from parsing) close the connection after the response, as http.sys does
//! (HTTPSYS-REFERENCE §3.3).

use alloc::vec::Vec;
use core::mem;

use crate::cache::serve::{self, Served, simple};
use crate::error::{OutOfMemory, RequestError};
use crate::http1::body::BodyReader;
use crate::http1::request::{
    Framing, Head, MAX_HEADERS_CAP, Method, Version, early_error, find_head_end, parse_head,
};
use crate::out::{Mark, Output, Transmit};
use crate::route::{CanonError, Local, canonicalize};
use crate::site::{Limits, Site, Stats};
use crate::time::{Clock, Instant};

/// Request bodies larger than this are not drained: 413 and close.
pub const DISCARD_LIMIT: u64 = 1 << 20;
/// Slack for a slow reader before the minimum send rate applies, in milliseconds.
pub const SEND_GRACE_MS: u64 = 10_000;
/// How long a gracefully closed connection lingers at least (see [`linger`]), in milliseconds.
pub const LINGER_MS: u64 = 2_000;
/// Buffers larger than this are freed when a connection goes idle.
const KEEP_IDLE: usize = 4096;
/// Unsent head bytes beyond which no more pipelined requests are processed until output drains.
const BACKLOG_HEAD_BYTES: usize = 64 * 1024;
/// Pending output pieces beyond which processing pauses likewise.
const BACKLOG_ITEMS: usize = 256;

const CLOSE: &[u8] = b"Connection: close\r\n";
const KEEP_ALIVE: &[u8] = b"Connection: keep-alive\r\n";

/// One access-log record, produced when logging is on ([`Connection::set_logging`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The method token as sent (at most 32 bytes).
    pub method: Vec<u8>,
    /// The request-target as sent (at most 2048 bytes), or `-` if none could be read.
    pub target: Vec<u8>,
    /// The status sent.
    pub status: u16,
    /// Body bytes queued.
    pub body_bytes: u64,
    /// Whether a cache entry answered.
    pub hit: bool,
    /// Milliseconds from the first byte of the request to its response being queued.
    pub millis: u64,
}

/// How to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Everything was sent: shut down the write side, then close.
    Graceful,
    /// Reset the connection now (a client too slow to read, memory exhausted).
    Abortive,
}

/// Lingering close: what to do with a connection whose write side the host has shut down
/// after [`Close::Graceful`] (a FIN queued behind the last byte), given the bytes its transport
/// has not yet delivered (`unsent`, e.g. Linux's `SIOCOUTQ`; `unsent_at_shut` when it shut).
///
/// The host keeps the socket open, reading and discarding input, and closes at the peer's FIN or
/// when this says so:
/// - `None` for at least [`LINGER_MS`], so that requests the client pipelined behind the last
///   one are read rather than answered with a TCP reset, which can destroy the tail of the
///   response before the client has read it (RFC 9112 §9.6);
/// - then `Some(Graceful)` once everything is delivered;
/// - while bytes are still undelivered, `None` for as long as the minimum send rate allows
///   them (the same rule as for output the engine holds; `idle-timeout` when the rate is off),
///   then `Some(Abortive)`: a reader too slow to finish gets a reset, never a clean close that
///   would look like a whole response.
#[must_use]
pub fn linger(
    limits: &Limits,
    shut_at: Instant,
    unsent_at_shut: u64,
    now: Instant,
    unsent: u64,
) -> Option<Close> {
    let waited = now.millis_since(shut_at);
    if waited < LINGER_MS {
        return None;
    }
    if unsent == 0 {
        return Some(Close::Graceful);
    }
    let deadline = send_deadline(limits, shut_at, unsent_at_shut)
        .unwrap_or_else(|| shut_at.add_secs(u64::from(limits.idle_timeout)));
    if now < deadline {
        None
    } else {
        Some(Close::Abortive)
    }
}

/// Lingering close for a transport that cannot say what it still holds, but whose graceful
/// disconnect completes only once the peer has acknowledged everything (WSK's `WskDisconnect`):
/// the instant at which the host stops waiting and closes the socket, abortively (a reset).
///
/// - While the FIN is unacknowledged (`acknowledged` false) the client is still being sent the
///   response: it gets what the send rate allows for `sent` bytes handed over at `shut_at`
///   (`idle-timeout` when the rate is off), and at least [`LINGER_MS`].
/// - Once it is acknowledged, the host reads and discards input until the peer's FIN, for at
///   most [`LINGER_MS`] after the shutdown, as [`linger`] does.
#[must_use]
pub fn linger_deadline(
    limits: &Limits,
    shut_at: Instant,
    sent: u64,
    acknowledged: bool,
) -> Instant {
    let linger = shut_at.add_millis(LINGER_MS);
    if acknowledged {
        return linger;
    }
    let send = send_deadline(limits, shut_at, sent)
        .unwrap_or_else(|| shut_at.add_secs(u64::from(limits.idle_timeout)));
    send.max(linger)
}

/// The minimum-send-rate rule: `bytes` handed over at `since` must be delivered by the returned
/// instant ([`SEND_GRACE_MS`] of slack, then `min-send-rate` bytes per second); `None` when the
/// rule is off.
fn send_deadline(limits: &Limits, since: Instant, bytes: u64) -> Option<Instant> {
    let rate = u64::from(limits.min_send_rate);
    let allowed = bytes.saturating_mul(1000).checked_div(rate)?;
    Some(since.add_millis(SEND_GRACE_MS.saturating_add(allowed)))
}

#[derive(Debug)]
struct BodyCtx {
    reader: BodyReader,
    started: Instant,
    /// Where the held response starts.
    mark: Mark,
    /// Whether to keep the connection after the body.
    keep_alive: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for (more of) a request head.
    Head,
    /// Reading and discarding a request body.
    Body(BodyCtx),
}

/// One HTTP/1.1 connection. See the module documentation for the call order.
#[derive(Debug)]
pub struct Connection {
    local: Local,
    state: State,
    /// Received bytes not yet consumed (a partial head, or requests held back by backpressure).
    inbuf: Vec<u8>,
    /// Where in `inbuf` the search for the end of the head resumes.
    scan_from: usize,
    head_started: Option<Instant>,
    idle_since: Instant,
    now: Instant,
    limits: Limits,
    out: Output,
    /// Start of the current run of pending output, and the bytes committed since.
    send_epoch: Option<Instant>,
    send_budget: u64,
    /// Bytes the transport still held for the client when a timer fell due with no output
    /// pending here, and when that was first seen (see [`Connection::handle_timeout`]).
    undelivered: Option<(Instant, u64)>,
    /// The peer has closed its side.
    eof: bool,
    /// Close once committed output is sent.
    closing: bool,
    aborted: bool,
    /// Buffers for path canonicalisation.
    scratch: (Vec<u8>, Vec<u8>),
    requests: u64,
    /// Access-log records not yet taken; `None` when logging is off.
    log: Option<Vec<LogRecord>>,
    /// The current request's method and target, for its log record.
    log_line: (Vec<u8>, Vec<u8>, Instant),
}

/// Replaces `dst` with `src`, allocating fallibly; on failure `dst` is left empty.
fn copy_into(dst: &mut Vec<u8>, src: &[u8]) -> Result<(), OutOfMemory> {
    dst.clear();
    dst.try_reserve(src.len())?;
    dst.extend_from_slice(src);
    Ok(())
}

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
    /// A new connection that arrived on `local`.
    #[must_use]
    pub fn new(local: Local, clock: &Clock, site: &Site) -> Self {
        Self {
            local,
            state: State::Head,
            inbuf: Vec::new(),
            scan_from: 0,
            head_started: None,
            idle_since: clock.now(),
            now: clock.now(),
            limits: *site.limits(),
            out: Output::default(),
            send_epoch: None,
            send_budget: 0,
            undelivered: None,
            eof: false,
            closing: false,
            aborted: false,
            scratch: (Vec::new(), Vec::new()),
            requests: 0,
            log: None,
            log_line: (Vec::new(), Vec::new(), clock.now()),
        }
    }

    /// Turns access-log records on or off. Off (the default) keeps the hit path allocation-free.
    pub fn set_logging(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// Hands every pending access-log record to `f`, oldest first.
    pub fn drain_log(&mut self, mut f: impl FnMut(&LogRecord)) {
        if let Some(log) = &mut self.log {
            for r in log.drain(..) {
                f(&r);
            }
        }
    }

    /// Notes the request line of the request being answered, for its log record.
    fn log_begin(&mut self, head: &[u8]) {
        if self.log.is_none() {
            return;
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or(b"-");
        let started = self.head_started.unwrap_or(self.now);
        let (m, t, s) = &mut self.log_line;
        // Without memory for the line, the record says `-` rather than fail the request.
        let _ = copy_into(m, method.get(..32).unwrap_or(method));
        let _ = copy_into(t, target.get(..2048).unwrap_or(target));
        *s = started;
    }

    fn log_end(&mut self, status: u16, body_bytes: u64, hit: bool) {
        let Some(log) = &mut self.log else { return };
        let (method, target, started) = &mut self.log_line;
        if target.is_empty() {
            let _ = copy_into(target, b"-");
        }
        // A record that cannot be stored is dropped: the log is not worth a refused request.
        if log.try_reserve(1).is_ok() {
            log.push(LogRecord {
                method: mem::take(method),
                target: mem::take(target),
                status,
                body_bytes,
                hit,
                millis: self.now.millis_since(*started),
            });
        }
        self.log_line.0.clear();
        self.log_line.1.clear();
    }

    /// Requests parsed on this connection.
    #[must_use]
    pub const fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether the caller should read more input now. False while output is backlogged (flow
    /// control for pipelining) and once the connection is closing.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        !self.closing && !self.aborted && !self.eof && !self.backlogged()
    }

    /// Committed output bytes not yet sent.
    #[must_use]
    pub const fn pending_bytes(&self) -> u64 {
        self.out.pending_bytes()
    }

    /// Whether there is committed output to send.
    #[must_use]
    pub const fn has_output(&self) -> bool {
        self.out.pending_items() > 0
    }

    /// Fills `out` with the byte slices to send next, in order (for `writev`); returns how many.
    pub fn transmit_slices<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.transmit_slices_before(out, usize::MAX)
    }

    /// As [`Connection::transmit_slices`], but stops before a cached body piece of `large` bytes
    /// or more (unless it comes first), for callers that send large bodies another way
    /// (khttpd: `sendfile` from a sealed memfd).
    pub fn transmit_slices_before<'a>(&'a self, out: &mut [&'a [u8]], large: usize) -> usize {
        if self.aborted {
            0
        } else {
            self.out.slices(out, large)
        }
    }

    /// The next piece to send, for callers that send one buffer at a time.
    #[must_use]
    pub fn transmit(&self) -> Option<Transmit<'_>> {
        if self.aborted { None } else { self.out.front() }
    }

    /// What to do with the socket, if anything.
    #[must_use]
    pub fn poll_close(&self) -> Option<Close> {
        if self.aborted {
            Some(Close::Abortive)
        } else if self.closing && self.out.pending_items() == 0 {
            Some(Close::Graceful)
        } else {
            None
        }
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.aborted || self.poll_close().is_some() {
            return None;
        }
        let l = &self.limits;
        let mut deadline: Option<Instant> = None;
        let mut consider = |d: Instant| deadline = Some(deadline.map_or(d, |x| x.min(d)));
        if let Some(epoch) = self.send_epoch
            && let Some(d) = send_deadline(l, epoch, self.send_budget)
        {
            consider(d);
        }
        // While committed output is waiting for the client, only the send rate judges the
        // connection: the client is busy reading what we sent, and a request or a close behind
        // that output is not late. (Counting the idle timer here once cut `Connection: close`
        // downloads that outlasted idle-timeout.) The head and body timers count from the later
        // of their first byte and the moment the output drained.
        if self.out.pending_bytes() > 0 {
            return deadline;
        }
        if let Some((since, bytes)) = self.undelivered
            && let Some(d) = send_deadline(l, since, bytes)
        {
            consider(d);
        }
        let header = u64::from(l.header_timeout);
        match &self.state {
            State::Body(ctx) => consider(ctx.started.max(self.idle_since).add_secs(header)),
            State::Head => {
                if let Some(started) = self.head_started {
                    consider(started.max(self.idle_since).add_secs(header));
                } else if self.inbuf.is_empty() {
                    consider(self.idle_since.add_secs(u64::from(l.idle_timeout)));
                }
            }
        }
        deadline
    }

    /// Enforces the deadlines at `clock.now()`: a connection past one is closed, abortively if
    /// output is still pending (a client too slow to read), gracefully otherwise.
    ///
    /// `undelivered` is what the host's transport holds that the client has not received yet
    /// (Linux: `SIOCOUTQ`), or 0 where the host cannot tell. A client still receiving is not
    /// idle: while such bytes remain, the idle, head and body timers wait, and the bytes are
    /// judged by the minimum send rate instead, from the first time they were seen; a client too
    /// slow for it is reset.
    pub fn handle_timeout(&mut self, clock: &Clock, undelivered: u64) {
        self.now = clock.now();
        if self.out.pending_bytes() == 0 {
            if undelivered == 0 {
                self.undelivered = None;
            } else if self.poll_timeout().is_some_and(|d| self.now >= d) {
                let (since, bytes) = *self.undelivered.get_or_insert((self.now, undelivered));
                if send_deadline(&self.limits, since, bytes).is_none_or(|d| self.now < d) {
                    self.idle_since = self.now;
                    return;
                }
                self.aborted = true;
                self.closing = true;
                return;
            }
        }
        if self.poll_timeout().is_some_and(|d| self.now >= d) {
            if let State::Body(ctx) = mem::replace(&mut self.state, State::Head) {
                self.out.rollback(ctx.mark);
            }
            if self.out.pending_items() > 0 {
                self.aborted = true;
            }
            self.closing = true;
        }
    }

    /// Feeds received bytes. Every byte is taken: processed, or kept until more arrive.
    pub fn handle_input(&mut self, data: &[u8], clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.limits = *site.limits();
        if self.closing || self.aborted || self.eof {
            return; // Lingering close: input after the last response is discarded.
        }
        if self.inbuf.is_empty() {
            let used = self.process(data, clock, site);
            let rest = data.get(used..).unwrap_or_default();
            if !rest.is_empty() && !self.closing && !self.aborted {
                self.stash(rest);
            }
        } else {
            self.stash(data);
            self.process_inbuf(clock, site);
        }
        self.settle();
    }

    /// The peer closed its sending side: answer what is complete, then close.
    pub fn handle_eof(&mut self, clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.eof = true;
        self.process_inbuf(clock, site);
        self.settle();
    }

    /// Records that the first `n` bytes of the pending output were sent.
    pub fn handle_sent(&mut self, n: usize, clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.limits = *site.limits();
        self.out.advance(n);
        if self.out.pending_bytes() == 0 {
            self.send_epoch = None;
            self.send_budget = 0;
            // The client has read everything so far: the idle, head and body timers restart.
            self.idle_since = self.now;
            self.out.shrink(KEEP_IDLE);
        }
        if !self.inbuf.is_empty() && !self.closing && !self.aborted {
            self.process_inbuf(clock, site);
        }
        self.settle();
    }

    fn backlogged(&self) -> bool {
        self.out.head_backlog() > BACKLOG_HEAD_BYTES || self.out.pending_items() > BACKLOG_ITEMS
    }

    /// After EOF, once no more requests can be answered, close.
    fn settle(&mut self) {
        if self.eof && !self.backlogged() && !self.closing {
            if let State::Body(ctx) = mem::replace(&mut self.state, State::Head) {
                self.out.rollback(ctx.mark);
            }
            self.closing = true;
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_IDLE {
            self.inbuf = Vec::new();
        }
        if self.scratch.0.capacity() > KEEP_IDLE {
            self.scratch = (Vec::new(), Vec::new());
        }
    }

    fn stash(&mut self, data: &[u8]) {
        let cap = (self.limits.max_request_bytes as usize).saturating_add(64 * 1024);
        let fits = self
            .inbuf
            .len()
            .checked_add(data.len())
            .is_some_and(|n| n <= cap);
        if !fits || self.inbuf.try_reserve(data.len()).is_err() {
            // Only a caller that ignores `wants_read` can get here.
            self.aborted = true;
            return;
        }
        self.inbuf.extend_from_slice(data);
    }

    fn process_inbuf(&mut self, clock: &Clock, site: &Site) {
        let mut buf = mem::take(&mut self.inbuf);
        let used = self.process(&buf, clock, site);
        if self.closing || self.aborted {
            buf.clear();
        } else {
            buf.drain(..used.min(buf.len()));
        }
        self.inbuf = buf;
    }

    /// Processes requests from `buf`; returns the bytes consumed.
    fn process(&mut self, buf: &[u8], clock: &Clock, site: &Site) -> usize {
        let mut pos = 0usize;
        while !self.closing && !self.aborted && !self.backlogged() {
            let rest = buf.get(pos..).unwrap_or_default();
            if let State::Body(ctx) = &mut self.state {
                if rest.is_empty() {
                    break;
                }
                match ctx.reader.feed(rest) {
                    Ok(p) => {
                        pos = pos.saturating_add(p.consumed);
                        if ctx.reader.discarded() > DISCARD_LIMIT {
                            let mark = ctx.mark;
                            self.state = State::Head;
                            self.out.rollback(mark);
                            self.fail(RequestError::ContentTooLarge, clock, site);
                        } else if p.done {
                            let keep_alive = ctx.keep_alive;
                            self.state = State::Head;
                            self.commit();
                            if !keep_alive {
                                self.closing = true;
                            }
                        }
                    }
                    Err(e) => {
                        let mark = ctx.mark;
                        self.state = State::Head;
                        self.out.rollback(mark);
                        self.fail(e, clock, site);
                    }
                }
                continue;
            }
            let skip = leading_empty_lines(rest);
            if skip > 0 {
                pos = pos.saturating_add(skip);
                continue;
            }
            if rest.is_empty() {
                break;
            }
            if self.head_started.is_none() {
                self.head_started = Some(self.now);
            }
            let max = self.limits.max_request_bytes as usize;
            match find_head_end(rest, self.scan_from) {
                None => {
                    if let Some(e) = early_error(rest) {
                        self.log_begin(rest);
                        self.fail(e, clock, site);
                        break;
                    }
                    if rest.len() > max {
                        self.log_begin(rest);
                        self.fail(head_too_large(rest, &self.limits), clock, site);
                        break;
                    }
                    self.scan_from = rest.len().saturating_sub(3);
                    break;
                }
                Some(end) => {
                    self.scan_from = 0;
                    self.head_started = None;
                    if end > max {
                        self.log_begin(rest);
                        self.fail(head_too_large(rest, &self.limits), clock, site);
                        break;
                    }
                    pos = pos.saturating_add(end);
                    self.log_begin(rest);
                    self.on_head(rest.get(..end).unwrap_or_default(), clock, site);
                }
            }
        }
        pos.min(buf.len())
    }

    /// Commits output and starts the send-rate clock.
    fn commit(&mut self) {
        let before = self.out.pending_bytes();
        if self.out.commit().is_err() {
            self.aborted = true;
            return;
        }
        let added = self.out.pending_bytes().saturating_sub(before);
        if added > 0 {
            self.undelivered = None;
            if self.send_epoch.is_none() {
                self.send_epoch = Some(self.now);
            }
            self.send_budget = self.send_budget.saturating_add(added);
        }
    }

    /// Answers a refused request and closes after it.
    fn fail(&mut self, e: RequestError, clock: &Clock, site: &Site) {
        Stats::bump(&site.stats().errors);
        let Ok(served) = simple(
            &mut self.out,
            e.status(),
            clock.date(),
            b"",
            e.reason(),
            CLOSE,
            false,
        ) else {
            self.aborted = true;
            return;
        };
        self.log_end(served.status, served.body_bytes, false);
        self.commit();
        self.closing = true;
    }

    fn on_head(&mut self, head_bytes: &[u8], clock: &Clock, site: &Site) {
        self.requests = self.requests.saturating_add(1);
        Stats::bump(&site.stats().requests);
        let nslots = (self.limits.max_headers as usize).min(MAX_HEADERS_CAP);
        let mut slots = [const { mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
        let slots = slots.get_mut(..nslots).unwrap_or_default();
        let (head, headers) = match parse_head(head_bytes, slots, &self.limits) {
            Ok(h) => h,
            Err(e) => return self.fail(e, clock, site),
        };
        if let Framing::Length(n) = head.framing
            && n > DISCARD_LIMIT
        {
            return self.fail(RequestError::ContentTooLarge, clock, site);
        }
        if head.expect_continue {
            if self.out.put(&[b"HTTP/1.1 100 Continue\r\n\r\n"]).is_err() {
                self.aborted = true;
                return;
            }
            self.commit();
        }
        let Ok(mark) = self.out.mark() else {
            self.aborted = true;
            return;
        };
        let outcome = respond(
            &mut self.out,
            &mut self.scratch,
            self.local,
            &head,
            headers,
            clock,
            site,
        );
        let close = match outcome {
            Ok((served, close)) => {
                Stats::add(&site.stats().body_bytes, served.body_bytes);
                self.log_end(served.status, served.body_bytes, served.hit);
                close
            }
            Err(OutOfMemory) => {
                self.out.rollback(mark);
                return self.fail(RequestError::OutOfMemory, clock, site);
            }
        };
        let reader = match head.framing {
            Framing::None => None,
            Framing::Length(n) => Some(BodyReader::with_length(n)),
            Framing::Chunked => {
                let head_left = (self.limits.max_request_bytes as usize).saturating_sub(head.len);
                let fields_left = nslots.saturating_sub(headers.len());
                Some(BodyReader::chunked(
                    head_left,
                    fields_left,
                    self.limits.max_field_length as usize,
                ))
            }
        };
        match reader {
            Some(reader) if !close => {
                self.state = State::Body(BodyCtx {
                    reader,
                    started: self.now,
                    mark,
                    keep_alive: true,
                });
            }
            _ => {
                self.commit();
                if close {
                    self.closing = true;
                }
            }
        }
    }
}

/// Routes and answers one request. Returns what was sent and whether to close afterwards.
fn respond(
    out: &mut Output,
    scratch: &mut (Vec<u8>, Vec<u8>),
    local: Local,
    head: &Head<'_>,
    headers: &[httparse::Header<'_>],
    clock: &Clock,
    site: &Site,
) -> Result<(Served, bool), OutOfMemory> {
    let date = clock.date();
    let stats = site.stats();
    let head_only = head.method == Method::Head;
    let keep = match (head.keep_alive, head.version) {
        (false, _) => CLOSE,
        (true, Version::Http10) => KEEP_ALIVE,
        (true, Version::Http11) => b"",
    };
    if head.asterisk {
        // OPTIONS * (RFC 9110 §9.3.7): what the server as a whole supports.
        out.put(&[
            b"HTTP/1.1 200 OK\r\nDate: ",
            date.as_bytes(),
            b"\r\nServer: khttp\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n",
            keep,
            b"\r\n",
        ])?;
        return Ok((
            Served {
                status: 200,
                body_bytes: 0,
                hit: false,
            },
            !head.keep_alive,
        ));
    }
    let path = match canonicalize(head.path, scratch) {
        Ok(p) => p,
        Err(CanonError::OutOfMemory) => return Err(OutOfMemory),
        Err(e) => {
            Stats::bump(&stats.errors);
            return Ok((
                simple(out, 400, date, b"", e.message(), CLOSE, head_only)?,
                true,
            ));
        }
    };
    let Some((reservation, rel)) = site.namespace().route(local, head.host, path) else {
        // http.sys answers 400 when no prefix matches (HTTPSYS-REFERENCE §1.3, step 5).
        Stats::bump(&stats.errors);
        let served = simple(
            out,
            400,
            date,
            b"",
            "no reservation matches this URL",
            CLOSE,
            head_only,
        )?;
        return Ok((served, true));
    };
    let entry = site
        .cache()
        .get(reservation.id, rel)
        .filter(|e| !e.is_expired(clock.now()));
    let served = match (entry, head.method) {
        (None, _) => {
            Stats::bump(&stats.misses);
            simple(out, 404, date, b"", "Not Found", keep, head_only)?
        }
        (Some(_), Method::Options | Method::Other) => {
            Stats::bump(&stats.errors);
            simple(
                out,
                405,
                date,
                b"Allow: GET, HEAD\r\n",
                "Method Not Allowed",
                keep,
                false,
            )?
        }
        (Some(entry), Method::Get | Method::Head) => {
            Stats::bump(&stats.hits);
            let served = serve::serve(entry, head.method, headers, date, keep, out)?;
            if served.status == 304 {
                Stats::bump(&stats.not_modified);
            }
            served
        }
    };
    Ok((served, !head.keep_alive))
}
