//! The connection state machine (DESIGN §2): bytes in, responses out, deadlines — no I/O.
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
//! (HTTPSYS-REFERENCE §3.3). What each request is answered with is [`crate::respond`]'s.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem;
use core::sync::atomic::Ordering;

use crate::budget::Charge;
use crate::error::{OutOfMemory, RequestError};
use crate::http1::body::BodyReader;
use crate::http1::body::Kept;
use crate::http1::request::{Framing, Head, Method, early_error, find_head_end, parse_head};
use crate::http1::response::{Persist, ResponseHead, Served};
use crate::limits::{
    BACKLOG_HEAD_BYTES, BACKLOG_ITEMS, DISCARD_LIMIT, INPUT_SLACK, KEEP_IDLE, Limits,
    MAX_HEADERS_CAP, OVERLOAD_CONNECTIONS, SEND_GRACE_MS, STREAM_WINDOW,
};
use crate::out::{Body, Mark, Output, Transmit};
use crate::queues::QueueStats;
use crate::rate::Progress;
use crate::respond::{Answer, AppResponse, decide, persist};
use crate::route::{Local, canonicalize};
use crate::site::{Site, Stats};
use crate::time::{Clock, Instant};

/// One access-log record, produced when logging is on ([`Connection::set_logging`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The method token as sent (at most 32 bytes).
    pub method: Vec<u8>,
    /// The request-target as sent (at most 2048 bytes), or `-` if none could be read.
    pub target: Vec<u8>,
    /// The protocol as sent (`HTTP/1.1`; at most 16 bytes), or empty.
    pub protocol: Vec<u8>,
    /// The `Referer` field (at most 512 bytes), or empty.
    pub referer: Vec<u8>,
    /// The `User-Agent` field (at most 512 bytes), or empty.
    pub user_agent: Vec<u8>,
    /// The status sent.
    pub status: u16,
    /// Body bytes queued.
    pub body_bytes: u64,
    /// Whether a cache entry answered.
    pub hit: bool,
    /// Milliseconds from the first byte of the request to the last byte of its response sent
    /// (or to the connection's end, for a response cut short).
    pub millis: u64,
}

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

/// The minimum-send-rate rule: `bytes` handed over at `since` must be delivered by the returned
/// instant ([`SEND_GRACE_MS`] of slack, then `min-send-rate` bytes per second); `None` when the
/// rule is off.
fn send_deadline(limits: &Limits, since: Instant, bytes: u64) -> Option<Instant> {
    let rate = u64::from(limits.min_send_rate);
    let allowed = bytes.saturating_mul(1000).checked_div(rate)?;
    Some(since.add_millis(SEND_GRACE_MS.saturating_add(allowed)))
}

/// The id a host gives a request it queued for an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// A request ready to be handed to an application ([`Connection::poll_delivery`]).
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The request queue it goes to.
    pub queue: u32,
    /// The request head as received (request line and fields).
    pub head: &'a [u8],
    /// The request body, decoded (at most `max-queued-body-bytes`).
    pub body: &'a [u8],
    /// The canonical path routing keyed on, and `?` and the query as sent, if any (what an
    /// application forwards: `khttp_proto::reply::RequestRow::path`).
    pub path: &'a [u8],
    /// The address the connection arrived on.
    pub local: Local,
    /// The client's address, if the host gave it ([`Connection::set_remote`]).
    pub remote: Option<Local>,
}

/// Why a host could not queue a request ([`Connection::handle_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds `queue-length` requests already.
    QueueFull,
    /// No application is attached any more.
    NoApplication,
    /// The host could not allocate memory for it.
    OutOfMemory,
}

/// A request handed, or about to be handed, to an application.
#[derive(Debug)]
struct Deferred {
    queue: u32,
    head: Vec<u8>,
    body: Vec<u8>,
    /// The canonical path and the query ([`Delivery::path`]).
    path: Vec<u8>,
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

/// How a streamed answer's pieces reach the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pieces {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by the close (HTTP/1.0, length unknown).
    Close,
    /// No body goes out (HEAD, 204, 304): the pieces are dropped.
    Dropped,
}

/// A streamed answer on its way (issue #12): the head is out, pieces follow.
#[derive(Debug)]
struct Streaming {
    id: RequestId,
    pieces: Pieces,
    keep_alive: bool,
    /// When the last piece arrived.
    since: Instant,
    status: u16,
    /// Body bytes sent so far.
    body_bytes: u64,
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

/// An access-log record waiting for the last byte of its response (`end`, an offset in the
/// connection's output stream) to be sent.
#[derive(Debug)]
struct PendingLog {
    record: LogRecord,
    end: u64,
    started: Instant,
    done: bool,
}

/// What the access log needs of the request being answered.
#[derive(Debug, Default)]
struct LogLine {
    method: Vec<u8>,
    target: Vec<u8>,
    protocol: Vec<u8>,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
    started: Instant,
}

/// `Name: value` of one head line (CR stripped), for the access log.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (line.get(..colon)?, line.get(colon.checked_add(1)?..)?);
    Some((name, value.trim_ascii()))
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

    /// Turns access-log records on or off. Off (the default) keeps the hit path allocation-free.
    pub fn set_logging(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// Hands every pending access-log record to `f`, oldest first.
    pub fn drain_log(&mut self, mut f: impl FnMut(&LogRecord)) {
        if let Some(log) = &mut self.log {
            let done = log.iter().take_while(|p| p.done).count();
            for p in log.drain(..done) {
                f(&p.record);
            }
        }
    }

    /// The connection is going: every record still waiting for its last byte is done now (the
    /// time taken runs to now), so that [`Connection::drain_log`] hands them all over.
    pub fn finish_log(&mut self, clock: &Clock) {
        let now = clock.now();
        for p in self.log.iter_mut().flatten().filter(|p| !p.done) {
            p.record.millis = now.millis_since(p.started);
            p.done = true;
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

    /// Notes the request line of the request being answered, for its log record.
    fn log_begin(&mut self, head: &[u8]) {
        if self.log.is_none() {
            return;
        }
        let mut lines = head.split(|&b| b == b'\n');
        let line = lines.next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or(b"-");
        let protocol = parts.next().unwrap_or_default();
        let started = self.head_started.unwrap_or(self.now);
        let l = &mut self.log_line;
        // Without memory for the line, the record says `-` rather than fail the request.
        let _ = copy_into(&mut l.method, method.get(..32).unwrap_or(method));
        let _ = copy_into(&mut l.target, target.get(..2048).unwrap_or(target));
        let _ = copy_into(&mut l.protocol, protocol.get(..16).unwrap_or(protocol));
        l.referer.clear();
        l.user_agent.clear();
        for field in lines {
            let Some((name, value)) = split_field(field) else {
                continue;
            };
            let value = value.get(..512).unwrap_or(value);
            if name.eq_ignore_ascii_case(b"referer") {
                let _ = copy_into(&mut l.referer, value);
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                let _ = copy_into(&mut l.user_agent, value);
            }
        }
        l.started = started;
    }

    fn log_end(&mut self, status: u16, body_bytes: u64, hit: bool) {
        let Some(log) = &mut self.log else { return };
        let l = &mut self.log_line;
        if l.target.is_empty() {
            let _ = copy_into(&mut l.target, b"-");
        }
        // A record that cannot be stored is dropped: the log is not worth a refused request.
        let (end, started) = (self.out.written(), l.started);
        if log.try_reserve(1).is_ok() {
            let record = LogRecord {
                method: mem::take(&mut l.method),
                target: mem::take(&mut l.target),
                protocol: mem::take(&mut l.protocol),
                referer: mem::take(&mut l.referer),
                user_agent: mem::take(&mut l.user_agent),
                status,
                body_bytes,
                hit,
                millis: 0,
            };
            log.push(PendingLog {
                record,
                end,
                started,
                done: false,
            });
        }
        self.log_line = LogLine {
            started: self.now,
            ..LogLine::default()
        };
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
        let mut deadline: Option<Deadline> = None;
        let mut consider = |at: Instant, timer: Timer, close: Option<Close>| {
            if deadline.is_none_or(|d| at < d.at) {
                deadline = Some(Deadline { at, timer, close });
            }
        };
        let floor = Instant(0);
        if let Some(d) = self.send.and_then(|p| p.deadline(l.min_send_rate, floor)) {
            consider(d, Timer::SendRate, Some(Close::Abortive));
        }
        // While committed output is waiting for the client, only the send rate judges the
        // connection: the client is busy reading what we sent, and a request or a close behind
        // that output is not late. (Counting the idle timer here once cut `Connection: close`
        // downloads that outlasted idle-timeout.) The head and body timers count from the later
        // of their first byte and the moment the output drained.
        if self.out.pending_bytes() > 0 {
            return deadline;
        }
        if let Some((p, _)) = self.undelivered
            && let Some(d) = p.deadline(l.min_send_rate, floor)
        {
            consider(d, Timer::SendRate, Some(Close::Abortive));
        }
        let header = u64::from(l.header_timeout);
        // A body being read (discarded, or kept for an application) must arrive within
        // `header-timeout` of its head, and keep up `min-receive-rate`, both counted from no
        // earlier than when the output drained.
        let body = match &self.state {
            State::Body(ctx) => Some((ctx.started, &ctx.progress)),
            State::Deferred(d) if d.id.is_none() && d.reader.is_some() => {
                Some((d.since, &d.progress))
            }
            _ => None,
        };
        if let Some((started, progress)) = body {
            let whole = started.max(self.idle_since).add_secs(header);
            consider(whole, Timer::Body, Some(Close::Graceful));
            if let Some(at) = progress.deadline(l.min_receive_rate, self.idle_since) {
                consider(at, Timer::Body, Some(Close::Graceful));
            }
        }
        match &self.state {
            State::Head => {
                if let Some(started) = self.head_started {
                    consider(
                        started.max(self.idle_since).add_secs(header),
                        Timer::Header,
                        Some(Close::Graceful),
                    );
                } else if self.inbuf.is_empty() {
                    consider(
                        self.idle_since.add_secs(u64::from(l.idle_timeout)),
                        Timer::Idle,
                        Some(Close::Graceful),
                    );
                }
            }
            State::Deferred(d) => match d.id {
                // The body is still arriving (its timers above), or the host is to take it
                // (no timer).
                None => {}
                Some(_) => consider(
                    d.since.add_secs(u64::from(l.app_response_timeout)),
                    Timer::App,
                    None,
                ),
            },
            // Each piece has `app-response-timeout` to come, from the later of the one before
            // and the moment the client had read everything.
            State::Streaming(st) => consider(
                st.since
                    .max(self.idle_since)
                    .add_secs(u64::from(l.app_response_timeout)),
                Timer::App,
                None,
            ),
            State::Body(_) | State::Sending | State::Lingering(_) | State::Closed(_) => {}
        }
        deadline
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

    fn note_transport(&mut self, queued: u64, at_deadline: bool) {
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

    /// Records that the first `n` bytes of the pending output were sent.
    pub fn handle_sent(&mut self, n: usize, clock: &Clock, site: &Site) {
        self.now = clock.now();
        self.limits = *site.limits();
        self.out.advance(n);
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

    fn stash(&mut self, data: &[u8]) {
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

    fn process_inbuf(&mut self, clock: &Clock, site: &Site) {
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
    fn process(&mut self, buf: &[u8], clock: &Clock, site: &Site) -> usize {
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
    fn deferred_body_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> usize {
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
    fn body_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> usize {
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
    fn head_input(&mut self, rest: &[u8], clock: &Clock, site: &Site) -> Option<usize> {
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
        let (answer, close) =
            match decide(self.local, &head, headers, clock, site, &mut self.scratch) {
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
            return self.defer(queue, head_bytes, &head, reader, persist, clock, site);
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
    fn body_reader(&self, head: &Head<'_>, fields: usize, nslots: usize) -> Option<BodyReader> {
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

    /// Starts handing a request to the application attached to `queue`: its body is read
    /// (up to `max-queued-body-bytes`), then [`Connection::poll_delivery`] offers it.
    fn defer(
        &mut self,
        queue: u32,
        head_bytes: &[u8],
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
        let stats = site.queues().get(queue).map(|q| Arc::clone(&q.stats));
        if let Some(s) = &stats {
            QueueStats::bump(&s.requests);
        }
        self.state = State::Deferred(Deferred {
            queue,
            head: copy,
            body: Vec::new(),
            path,
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
                body: &d.body,
                path: &d.path,
                local: self.local,
                remote: self.remote,
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

    /// A request the engine stopped waiting for ([`Timer::App`]): the host drops it from its
    /// queue, and an answer that comes later is refused.
    pub const fn take_cancelled(&mut self) -> Option<RequestId> {
        self.cancelled.take()
    }

    /// What became of request `id` ([`crate::Handoff`]): [`Connection::handle_response`] or
    /// [`Connection::handle_abandoned`]. Returns false when the connection no longer waits.
    pub fn handle_outcome(
        &mut self,
        id: RequestId,
        outcome: &crate::Outcome,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        match outcome {
            crate::Outcome::Response(r) => self.handle_response(id, r, clock, site),
            crate::Outcome::Piece { body, last } => self.handle_piece(id, body, *last, clock, site),
            crate::Outcome::Abandoned => self.handle_abandoned(id, false, clock, site),
            crate::Outcome::Invalid => self.handle_abandoned(id, true, clock, site),
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

    /// Sends a streamed answer's head and first piece; the rest comes with
    /// [`Connection::handle_piece`].
    fn start_stream(&mut self, id: RequestId, r: &AppResponse, clock: &Clock) -> bool {
        let State::Deferred(d) = &mut self.state else {
            return false;
        };
        let (mut persist, mut keep_alive) = (d.persist, d.keep_alive);
        let pieces = match r.length {
            _ if d.head_only || r.bodiless() => Pieces::Dropped,
            Some(n) => Pieces::Length(n),
            None if d.http11 => Pieces::Chunked,
            None => {
                persist = Persist::Close;
                keep_alive = false;
                Pieces::Close
            }
        };
        let stats = d.stats.take();
        let length = match pieces {
            Pieces::Length(n) => Some(n),
            _ if r.bodiless() => None,
            _ => r.length,
        };
        let chunked: &[u8] = if pieces == Pieces::Chunked {
            b"Transfer-Encoding: chunked\r\n"
        } else {
            b""
        };
        let head = ResponseHead {
            status: r.status,
            date: clock.date(),
            fields: &[&r.fields, chunked],
            length,
            persist,
        };
        self.state = State::Streaming(Streaming {
            id,
            pieces,
            keep_alive,
            since: self.now,
            status: r.status,
            body_bytes: 0,
            stats,
        });
        if head.write(&mut self.out).is_err() {
            self.abort_stream();
            return false;
        }
        self.put_piece(&r.body, false)
    }

    /// The next piece of the streamed answer to request `id` ([`crate::Outcome::Piece`]);
    /// `last` ends it. Returns false when the connection no longer waits for it: the client
    /// went, the answer timed out, or the application broke its own framing (more or fewer
    /// bytes than its `Content-Length`), which resets the connection.
    pub fn handle_piece(
        &mut self,
        id: RequestId,
        body: &Body,
        last: bool,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        self.now = clock.now();
        self.limits = *site.limits();
        if !self.mid_response() || self.waiting_for() != Some(id) {
            return false;
        }
        if !self.put_piece(body, last) {
            return false;
        }
        if last && let State::Streaming(st) = &self.state {
            let (status, body_bytes) = (st.status, st.body_bytes);
            let (keep_alive, close) = (st.keep_alive, st.pieces == Pieces::Close);
            self.served(
                Served {
                    status,
                    body_bytes,
                    hit: false,
                },
                site,
            );
            self.state = State::Head;
            if close || !keep_alive {
                self.stop_reading();
            }
            self.resume(clock, site);
        }
        true
    }

    /// Appends one piece of the streamed answer, framed; false (and the connection reset) when
    /// it breaks the answer's length or memory runs out.
    fn put_piece(&mut self, body: &Body, last: bool) -> bool {
        let State::Streaming(st) = &mut self.state else {
            return false;
        };
        let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        st.since = self.now;
        let written = match &mut st.pieces {
            Pieces::Dropped => Ok(()),
            Pieces::Length(left) => {
                if len > *left || (last && len != *left) {
                    return self.abort_stream();
                }
                *left = left.saturating_sub(len);
                self.out.body(body, 0, body.len())
            }
            Pieces::Close => self.out.body(body, 0, body.len()),
            Pieces::Chunked => put_chunk(&mut self.out, body, last),
        };
        if written.is_err() {
            return self.abort_stream();
        }
        if st.pieces != Pieces::Dropped {
            st.body_bytes = st.body_bytes.saturating_add(len);
        }
        self.commit();
        true
    }

    /// A streamed answer that cannot be finished: logged as far as it went, and the connection
    /// reset. Returns false, for the callers' convenience.
    fn abort_stream(&mut self) -> bool {
        if let State::Streaming(st) = &self.state {
            let (status, body_bytes) = (st.status, st.body_bytes);
            self.log_end(status, body_bytes, false);
        }
        self.abort();
        false
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
    fn app_timed_out(&mut self, clock: &Clock) {
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
    fn count(&self, f: impl FnOnce(&QueueStats)) {
        if let State::Deferred(Deferred { stats: Some(s), .. }) = &self.state {
            f(s);
        }
    }

    /// Writes the answer to the deferred request.
    fn answer_deferred(&mut self, answer: &Answer<'_>, date: &crate::time::HttpDate, site: &Site) {
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
    fn finish_deferred(&mut self, served: Option<Served>, keep_alive: bool) {
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
    fn resume(&mut self, clock: &Clock, site: &Site) {
        if !self.inbuf.is_empty() && self.reading() {
            self.process_inbuf(clock, site);
        }
        self.settle();
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

/// Appends one chunk (RFC 9112 §7.1) holding `body` (none when it is empty), and the last
/// chunk and the empty trailer section after it when `last`.
fn put_chunk(out: &mut Output, body: &Body, last: bool) -> Result<(), OutOfMemory> {
    if !body.is_empty() {
        let mut hex = [0u8; 16];
        let size = hex_digits(body.len(), &mut hex);
        out.put(&[size, b"\r\n"])?;
        out.body(body, 0, body.len())?;
        out.put(&[b"\r\n"])?;
    }
    if last {
        out.put(&[b"0\r\n\r\n"])?;
    }
    Ok(())
}

/// `n` in lowercase hexadecimal, in `buf`.
fn hex_digits(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut n = n;
    loop {
        i = i.saturating_sub(1);
        if let (Some(slot), Some(d)) = (buf.get_mut(i), DIGITS.get(n & 0xf)) {
            *slot = *d;
        }
        n >>= 4;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
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
