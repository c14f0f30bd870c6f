//! The connection state machine: bytes in, responses out, deadlines — no I/O.
//!
//! Call order, for each TCP connection:
//! 1. [`Connection::new`] when it is accepted, with the local address it arrived on
//!    ([`Connection::unavailable`] beyond `max-connections`);
//! 2. [`Connection::handle_input`] with every byte received (any split, down to one byte),
//!    while [`Connection::wants_read`] is true; [`Connection::handle_eof`] when the peer closes;
//! 3. send [`Connection::transmit_slices`] (or [`Connection::transmit`] piece by piece) and report
//!    what was written with [`Connection::handle_sent`];
//! 4. arm a timer for [`Connection::poll_deadline`] and call [`Connection::handle_timeout`];
//! 5. act on [`Connection::poll_close`]: [`Close::Graceful`] shut down the write side and call
//!    [`Connection::handle_shutdown`] (the lingering close: keep reading, the engine discards);
//!    [`Close::Finished`] close the socket; [`Close::Abortive`] reset it.
//!
//! Responses are produced in request order, so pipelining needs nothing special. A response is
//! written as soon as its head is parsed; if the request has a body, the response is held until the
//! body has been read and discarded, so that a malformed body still gets its 400 instead.
//! Errors (4xx/5xx from parsing) close the connection after the response, as http.sys does
//! (docs/http-semantics.md, "Errors close the connection"). What each request is answered with
//! is [`crate::respond`]'s.
//!
//! The machine's concerns live in its submodules: `input` (heads, bodies, pipelining and
//! backpressure), `timers` (deadlines and the lingering close), `app` (the hand-off of a
//! request to an application), `stream` (streamed answers) and `log` (access-log records). The
//! types a connection shares with the hand-off are in `crate::exchange`, a leaf.

mod app;
mod input;
mod log;
mod stream;
mod timers;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem;

use crate::budget::Charge;
use crate::error::{OutOfMemory, RequestError};
use crate::exchange::RequestId;
use crate::http1::body::BodyReader;
use crate::http1::response::{Persist, Served};
use crate::limits::{
    BACKLOG_HEAD_BYTES, BACKLOG_ITEMS, KEEP_IDLE, Limits, OVERLOAD_CONNECTIONS, STREAM_WINDOW,
};
use crate::out::{Mark, Output, Transmit};
use crate::queues::QueueStats;
use crate::rate::Progress;
use crate::respond::Answer;
use crate::route::Local;
use crate::site::{Site, Stats};
use crate::time::{Clock, Instant};

use log::{LogLine, PendingLog};
use stream::Streaming;

pub use log::LogRecord;

/// What the host does with the socket ([`Connection::poll_close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Everything is sent: shut down the write side (a FIN behind the last byte), then call
    /// [`Connection::handle_shutdown`] and keep reading until [`Close::Finished`].
    Graceful,
    /// The lingering close is over (the peer's FIN, or its time): close the socket.
    Finished,
    /// Reset the connection now (a client too slow to read, memory exhausted): the client sees
    /// a broken response rather than a clean end after a short one.
    Abortive,
}

/// Where a connection is in its life ([`Connection::phase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, with nothing of the next one read (`idle-timeout`).
    Idle,
    /// Reading a request head (`header-timeout`).
    Head,
    /// Reading a request body (`header-timeout`).
    Body,
    /// Waiting for an application's answer (`app-response-timeout`); requests pipelined behind
    /// it wait.
    Waiting,
    /// No more requests will be read: the last responses are sent (`min-send-rate`), then
    /// [`Close::Graceful`].
    Sending,
    /// The write side is shut; input is read and discarded until the peer's FIN or the
    /// lingering deadline.
    Lingering,
    /// Over: [`Connection::poll_close`] says how to close.
    Closed,
}

/// The timers of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// `idle-timeout`: no request began on a kept-alive connection.
    Idle,
    /// `header-timeout`: a request head did not arrive whole.
    Header,
    /// `header-timeout`: a request body did not arrive whole.
    Body,
    /// `min-send-rate`: the client read the output too slowly.
    SendRate,
    /// `linger-timeout`: the lingering close ran its course (or, with bytes still undelivered,
    /// the send rate's allowance for them did).
    Linger,
    /// `app-response-timeout`: the application did not answer a request handed to it; the
    /// client gets 503 and the connection goes on.
    App,
}

/// A deadline: when, which timer, and how the connection closes if it passes
/// ([`Connection::poll_deadline`], [`Connection::handle_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// When it falls due.
    pub at: Instant,
    /// Which timer it is.
    pub timer: Timer,
    /// What happens then: [`Close::Abortive`] while output is undelivered, else a graceful
    /// close ([`Close::Finished`] once lingering); `None` when the engine answers instead of
    /// closing ([`Timer::App`]: the host must call [`Connection::handle_timeout`]).
    pub close: Option<Close>,
}

impl Deadline {
    const fn new(at: Instant, timer: Timer, close: Option<Close>) -> Self {
        Self { at, timer, close }
    }
}

/// What becomes of a newly accepted connection ([`admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Served: [`Connection::new`].
    Serve,
    /// Over `max-connections`: answered 503 and closed, [`Connection::unavailable`].
    Unavailable,
    /// Over that too ([`OVERLOAD_CONNECTIONS`] are being answered already): closed at once.
    Refuse,
}

/// Admission control: `open` connections are being served and `overloaded` answered 503;
/// `capacity` is the host's own bound (the driver's table), if lower than `max-connections`.
#[must_use]
pub fn admit(limits: &Limits, capacity: usize, open: usize, overloaded: usize) -> Admission {
    let max = (limits.max_connections as usize).min(capacity);
    if open < max {
        Admission::Serve
    } else if overloaded < OVERLOAD_CONNECTIONS {
        Admission::Unavailable
    } else {
        Admission::Refuse
    }
}

/// A request handed, or about to be handed, to an application.
#[derive(Debug)]
struct Deferred {
    queue: u32,
    head: Vec<u8>,
    /// Where the head's parts lie in it ([`crate::Delivery::spans`]).
    spans: Vec<u8>,
    body: Vec<u8>,
    /// The canonical path and the query ([`crate::Delivery::path`]).
    path: Vec<u8>,
    /// Where the answer may be cached ([`crate::Delivery::cache_url`]).
    cache_url: Option<String>,
    /// Set while the body is still being read.
    reader: Option<BodyReader>,
    /// How fast the body arrives (`min-receive-rate`).
    progress: Progress,
    /// The body's bytes in the server's budget (`body-buffer-bytes`, [`crate::budget`]).
    charge: Charge,
    /// The host's id once queued.
    id: Option<RequestId>,
    /// When the head arrived (while the body is read), then when it was queued.
    since: Instant,
    keep_alive: bool,
    head_only: bool,
    /// The client speaks HTTP/1.1 (a streamed answer of unknown length may be chunked).
    http11: bool,
    persist: Persist,
    /// The queue's counters.
    stats: Option<Arc<QueueStats>>,
}

/// A lingering close in progress (see [`Connection::handle_shutdown`]).
#[derive(Clone, Copy, Debug)]
struct Linger {
    /// When the write side was shut.
    since: Instant,
    /// Bytes the client might not have received then.
    in_flight: u64,
    /// The transport has said that everything, the FIN included, was delivered.
    delivered: bool,
    /// Once the transport reports what it still holds ([`Connection::handle_undelivered`]):
    /// its progress, and the last count.
    watch: Option<(Progress, u64)>,
}

#[derive(Debug)]
struct BodyCtx {
    reader: BodyReader,
    started: Instant,
    /// How fast the body arrives (`min-receive-rate`).
    progress: Progress,
    /// Where the held response starts.
    mark: Mark,
    /// Whether to keep the connection after the body.
    keep_alive: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for (more of) a request head; idle when none of it has arrived.
    Head,
    /// Reading and discarding a request body.
    Body(BodyCtx),
    /// A request handed to an application (issue #12): its body being read, then waiting for
    /// the answer. Requests pipelined behind it wait in `inbuf`.
    Deferred(Deferred),
    /// A streamed answer to a deferred request: its pieces arrive one by one. Requests
    /// pipelined behind it still wait.
    Streaming(Streaming),
    /// No more requests: sending what is committed, then [`Close::Graceful`].
    Sending,
    /// The write side is shut; input is discarded.
    Lingering(Linger),
    /// Over.
    Closed(Close),
}

/// One HTTP/1.1 connection. See the module documentation for the call order.
#[derive(Debug)]
pub struct Connection {
    local: Local,
    /// The client's address, if the host gave it.
    remote: Option<Local>,
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
    /// While output is pending: how fast the client reads it (`min-send-rate`).
    send: Option<Progress>,
    /// Meanwhile, what the transport held for the client at the last timer that fell due
    /// ([`Connection::handle_timeout`]), if the host can tell.
    send_queued: Option<u64>,
    /// Bytes the transport still held for the client when a timer fell due with no output
    /// pending here: their progress since first seen, and the last count (see
    /// [`Connection::handle_timeout`]).
    undelivered: Option<(Progress, u64)>,
    /// The peer has closed its side: answer what is complete, then close.
    eof: bool,
    /// A queued request the engine stopped waiting for ([`Connection::take_cancelled`]).
    cancelled: Option<RequestId>,
    /// Buffers for path canonicalisation.
    scratch: (Vec<u8>, Vec<u8>),
    requests: u64,
    /// Access-log records not yet taken, each done once its response's last byte is sent;
    /// `None` when logging is off.
    log: Option<Vec<PendingLog>>,
    /// Bytes sent on this connection so far.
    sent_total: u64,
    /// The current request's method, target, protocol, referer, user agent and start, for its
    /// log record.
    log_line: LogLine,
}

/// Replaces `dst` with `src`, allocating fallibly; on failure `dst` is left empty.
fn copy_into(dst: &mut Vec<u8>, src: &[u8]) -> Result<(), OutOfMemory> {
    dst.clear();
    dst.try_reserve(src.len())?;
    dst.extend_from_slice(src);
    Ok(())
}

impl Connection {
    /// A new connection that arrived on `local`.
    #[must_use]
    pub fn new(local: Local, clock: &Clock, site: &Site) -> Self {
        Self {
            local,
            remote: None,
            state: State::Head,
            inbuf: Vec::new(),
            scan_from: 0,
            head_started: None,
            idle_since: clock.now(),
            now: clock.now(),
            limits: *site.limits(),
            out: Output::default(),
            send: None,
            send_queued: None,
            undelivered: None,
            eof: false,
            cancelled: None,
            scratch: (Vec::new(), Vec::new()),
            requests: 0,
            log: None,
            sent_total: 0,
            log_line: LogLine {
                started: clock.now(),
                ..LogLine::default()
            },
        }
    }

    /// A connection beyond `max-connections`: it is answered 503 and closed (lingering, like
    /// any other), without reading a request.
    #[must_use]
    pub fn unavailable(local: Local, clock: &Clock, site: &Site) -> Self {
        let mut conn = Self::new(local, clock, site);
        Stats::bump(&site.stats().errors);
        match Answer::Unavailable.write(&mut conn.out, clock.date(), Persist::Close, false) {
            Ok(_) => {
                conn.commit();
                conn.stop_reading();
            }
            Err(OutOfMemory) => conn.abort(),
        }
        conn
    }

    /// The client's address (IP and port), which applications receive with each request
    /// handed to them.
    pub const fn set_remote(&mut self, remote: Local) {
        self.remote = Some(remote);
    }

    /// Starts the wait for the first head now, before any byte of it arrives: on a TLS
    /// connection the handshake is part of that wait, so that one which does not finish within
    /// `header-timeout` is closed (rather than given `idle-timeout`).
    pub const fn begin_head(&mut self) {
        if self.head_started.is_none() {
            self.head_started = Some(self.now);
        }
    }

    /// Drops what was written after `mark`, with the log record of a response that goes with it.
    fn rollback_to(&mut self, mark: Mark) {
        self.out.rollback(mark);
        let written = self.out.written();
        if let Some(log) = &mut self.log {
            while log.last().is_some_and(|p| !p.done && p.end > written) {
                log.pop();
            }
        }
    }

    /// Requests parsed on this connection.
    #[must_use]
    pub const fn requests(&self) -> u64 {
        self.requests
    }

    /// Where the connection is in its life.
    #[must_use]
    pub const fn phase(&self) -> Phase {
        match &self.state {
            State::Head if self.head_started.is_some() || !self.inbuf.is_empty() => Phase::Head,
            State::Head => Phase::Idle,
            State::Body(_) => Phase::Body,
            State::Deferred(d) if d.reader.is_some() => Phase::Body,
            State::Deferred(_) | State::Streaming(_) => Phase::Waiting,
            State::Sending => Phase::Sending,
            State::Lingering(_) => Phase::Lingering,
            State::Closed(_) => Phase::Closed,
        }
    }

    /// Whether requests are still being read.
    const fn reading(&self) -> bool {
        matches!(self.state, State::Head | State::Body(_))
    }

    /// Whether input is still taken: requests are read, or wait behind a deferred one.
    const fn takes_input(&self) -> bool {
        matches!(
            self.state,
            State::Head | State::Body(_) | State::Deferred(_) | State::Streaming(_)
        )
    }

    /// No more requests: send what is committed, then close.
    fn stop_reading(&mut self) {
        if self.reading() {
            self.state = State::Sending;
        }
    }

    fn abort(&mut self) {
        self.state = State::Closed(Close::Abortive);
    }

    /// Whether the caller should read more input now. False while output is backlogged (flow
    /// control for pipelining) and once no more requests will be read; true again while the
    /// close lingers (the input is discarded).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Head | State::Body(_) => !self.eof && !self.backlogged(),
            State::Deferred(ref d) => d.reader.is_some() && !self.eof && !self.backlogged(),
            State::Lingering(_) => true,
            State::Streaming(_) | State::Sending | State::Closed(_) => false,
        }
    }

    /// Whether a streamed answer takes its application's next piece now: false once
    /// [`STREAM_WINDOW`] bytes wait for the client, and when no streamed answer is on its way.
    /// A host holds the application's next piece back (khttpd: its reply to the piece before)
    /// until this is true again or the connection stops waiting for the request.
    #[must_use]
    pub const fn wants_piece(&self) -> bool {
        matches!(self.state, State::Streaming(_)) && self.out.pending_bytes() <= STREAM_WINDOW
    }

    /// Whether a response is partly sent and cannot be finished (a streamed answer on its
    /// way): a host that drops the connection now resets it, so that the client sees a broken
    /// response and not a clean close after a short body.
    #[must_use]
    pub const fn mid_response(&self) -> bool {
        matches!(self.state, State::Streaming(_))
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

    const fn aborted(&self) -> bool {
        matches!(self.state, State::Closed(Close::Abortive))
    }

    /// Fills `out` with the byte slices to send next, in order (for `writev`); returns how many.
    pub fn transmit_slices<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.transmit_slices_before(out, usize::MAX)
    }

    /// As [`Connection::transmit_slices`], but stops before a cached body piece of `large` bytes
    /// or more (unless it comes first), for callers that send large bodies another way
    /// (khttpd: `sendfile` from a sealed memfd).
    pub fn transmit_slices_before<'a>(&'a self, out: &mut [&'a [u8]], large: usize) -> usize {
        if self.aborted() {
            0
        } else {
            self.out.slices(out, large)
        }
    }

    /// The next piece to send, for callers that send one buffer at a time.
    #[must_use]
    pub fn transmit(&self) -> Option<Transmit<'_>> {
        if self.aborted() {
            None
        } else {
            self.out.front()
        }
    }

    /// What to do with the socket, if anything (see [`Close`]).
    #[must_use]
    pub fn poll_close(&self) -> Option<Close> {
        match self.state {
            State::Closed(close) => Some(close),
            State::Sending if self.out.pending_items() == 0 => Some(Close::Graceful),
            _ => None,
        }
    }

    /// Records that the first `n` bytes of the pending output were sent.
    pub fn handle_sent(&mut self, n: usize, clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.limits = *site.limits();
        let within = self.out.advance(n);
        debug_assert!(
            within,
            "a host reports at most the bytes it was given to send"
        );
        self.sent_total = self
            .sent_total
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        let (sent, now) = (self.sent_total, self.now);
        if let Some(p) = &mut self.send {
            let rate = self.limits.min_send_rate;
            p.record(u64::try_from(n).unwrap_or(u64::MAX), rate, now);
        }
        for p in self.log.iter_mut().flatten().filter(|p| !p.done) {
            if p.end > sent {
                break;
            }
            // The response's last byte is out: the time taken runs to now.
            p.record.millis = now.millis_since(p.started);
            p.done = true;
        }
        if self.out.pending_bytes() == 0 {
            self.send = None;
            self.send_queued = None;
            // The client has read everything so far: the idle, head and body timers restart.
            self.idle_since = self.now;
            self.out.shrink(KEEP_IDLE);
        }
        if !self.inbuf.is_empty() && self.reading() {
            self.process_inbuf(clock, site);
        }
        self.settle();
    }

    fn backlogged(&self) -> bool {
        self.out.head_backlog() > BACKLOG_HEAD_BYTES || self.out.pending_items() > BACKLOG_ITEMS
    }

    /// After EOF, once no more requests can be answered, close.
    fn settle(&mut self) {
        if self.eof && !self.backlogged() && self.reading() {
            if let State::Body(ctx) = mem::replace(&mut self.state, State::Sending) {
                self.rollback_to(ctx.mark);
            }
            self.stop_reading();
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_IDLE {
            self.inbuf = Vec::new();
        }
        if self.scratch.0.capacity() > KEEP_IDLE {
            self.scratch = (Vec::new(), Vec::new());
        }
    }

    /// Commits output and starts the send-rate clock.
    fn commit(&mut self) {
        let before = self.out.pending_bytes();
        if self.out.commit().is_err() {
            self.abort();
            return;
        }
        let added = self.out.pending_bytes().saturating_sub(before);
        if added > 0 {
            self.undelivered = None;
            if self.send.is_none() {
                self.send = Some(Progress::start(self.now));
            }
        }
    }

    /// Answers a refused request and closes after it.
    fn fail(&mut self, e: RequestError, clock: &Clock, site: &Site) {
        Stats::bump(&site.stats().errors);
        match Answer::refused(e).write(&mut self.out, clock.date(), Persist::Close, false) {
            Ok(served) => {
                self.log_end(served.status, served.body_bytes, false);
                self.commit();
                self.stop_reading();
            }
            Err(OutOfMemory) => self.abort(),
        }
    }

    /// Counts and logs an answered request.
    fn served(&mut self, served: Served, site: &Site) {
        let stats = site.stats();
        Stats::add(&stats.body_bytes, served.body_bytes);
        if served.hit && served.status == 304 {
            Stats::bump(&stats.not_modified);
        }
        self.log_end(served.status, served.body_bytes, served.hit);
    }
}
