//! One epoll loop per worker thread (mio, edge-triggered), in the shape of quinn's
//! `ConnectionDriver`: feed input to the engine, write what it gives back with `writev`, enforce
//! its deadlines, close when it says so.
//!
//! Each worker owns its listeners: one SO_REUSEPORT socket per address and port that the
//! reservations and the IP listen list name, so the kernel spreads connections across workers.
//! Listeners follow the site: when a change is published, every worker opens and closes sockets
//! to match.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use khttp_engine::Local;
use khttp_engine::Transmit;
use khttp_engine::tls::Tls;
use khttp_engine::{Admission, Phase, admit};
use khttp_engine::{Clock, Close, Connection, Instant, RequestId, Site};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::appqueue::Ack;
use crate::bodies::LARGE;
use crate::shared::Shared;
use crate::sys;

const WAKER: Token = Token(0);
/// Tokens below this are listeners; connections start here.
const CONN_BASE: usize = 1 << 16;
/// Bytes read per `read` call.
const READ_BUF: usize = 64 * 1024;

struct Slot {
    stream: TcpStream,
    peer: SocketAddr,
    conn: Connection,
    /// Answered 503 (over `max-connections`): counted in `Shared::overloaded`, not in
    /// `Shared::connections`.
    overload: bool,
    /// Whether the socket may have unread input. Edge-triggered epoll only reports new data, so
    /// this is set on each readable event and cleared by EAGAIN or by a short read (which means
    /// the socket was drained, as nginx's `ngx_unix_recv` assumes), saving the read that would
    /// only return EAGAIN.
    readable: bool,
    /// The peer has shut its side (`EPOLLRDHUP`): a short read no longer means drained, since
    /// the FIN behind the last data must still be read (issue #21, finding 8: it came with the
    /// data, no later edge reports it, and the connection sat in CLOSE-WAIT until a timer).
    read_closed: bool,
    /// The worker's word on a streamed answer's piece, held back while the client is more than
    /// the stream window behind ([`Connection::wants_piece`]).
    ack: Option<(RequestId, Arc<Ack>)>,
    /// The TLS session, on a listener of `https://` reservations: ciphertext is read into it
    /// and written from it, and it decides when the socket closes.
    tls: Option<Box<Tls>>,
}

impl Slot {
    /// Gives the held word on a streamed answer's piece once the connection wants the next
    /// one, or has stopped waiting for the request.
    fn release_ack(&mut self) {
        let Some((id, ack)) = &self.ack else { return };
        if self.conn.waiting_for() != Some(*id) {
            ack.fire(false);
        } else if self.conn.wants_piece() {
            ack.fire(true);
        } else {
            return;
        }
        self.ack = None;
    }
}

/// A worker thread's state.
pub(crate) struct Worker {
    poll: Poll,
    shared: Arc<Shared>,
    site: Arc<Site>,
    generation: u64,
    clock: Clock,
    listeners: Vec<(SocketAddr, TcpListener)>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    /// Whether this worker reports bind errors (worker 0 does, so they print once).
    reports: bool,
    /// This worker's place among the wakers, for answers from applications.
    index: usize,
    logging: bool,
    /// TLS configurations by local address, made at `Certs` generation `.1`.
    tls_configs: (Vec<(Local, Arc<rustls::ServerConfig>)>, u64),
    /// Failed handshakes not yet reported, and when the last report was (at most one a
    /// second, so that a flood of bad handshakes cannot flood the log).
    tls_failures: (u64, Option<Instant>),
}

/// The URL a listener on `addr` serves, as khttpd announces it.
pub(crate) fn url_of(site: &Site, addr: SocketAddr) -> String {
    let scheme = if site.serves_tls(addr.port()) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}/")
}

/// The addresses to listen on for `site`: the engine's rule, with separate IPv4 and IPv6
/// wildcards (IPv6 sockets are IPv6-only here).
/// `None` when memory ran out (the listeners then stay as they are).
pub(crate) fn wanted_addrs(site: &Site) -> Option<Vec<SocketAddr>> {
    site.listen_addrs(&[
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ])
}

/// A non-blocking SO_REUSEPORT listener on `addr` (IPv6 sockets are IPv6-only, so the IPv4
/// wildcard can be bound beside them).
///
/// # Errors
/// The socket error.
pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Worker {
    /// A worker with its poll and waker; `listeners` are the sockets already bound for it.
    ///
    /// # Errors
    /// Creating the poll or waker failed.
    pub(crate) fn new(
        shared: Arc<Shared>,
        listeners: Vec<(SocketAddr, TcpListener)>,
        reports: bool,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let index = {
            let mut wakers = shared
                .wakers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            wakers.push(waker);
            wakers.len().saturating_sub(1)
        };
        let site = shared.snapshot();
        let generation = shared.generation();
        let clock = shared.clock();
        let logging = shared.access_log.is_some();
        let mut w = Self {
            poll,
            shared,
            site,
            generation,
            clock,
            listeners: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            buf: vec![0; READ_BUF],
            reports,
            index,
            logging,
            tls_configs: (Vec::new(), 0),
            tls_failures: (0, None),
        };
        for (addr, mut l) in listeners {
            let token = Token(w.listeners.len().saturating_add(1));
            w.poll
                .registry()
                .register(&mut l, token, Interest::READABLE)?;
            w.listeners.push((addr, l));
        }
        Ok(w)
    }

    /// Picks up a newly published site, and opens and closes listeners to match it.
    fn refresh(&mut self) {
        let generation = self.shared.generation();
        if generation == self.generation {
            return;
        }
        self.site = self.shared.snapshot();
        let Some(want) = wanted_addrs(&self.site) else {
            return; // no memory: tried again at the next change
        };
        self.generation = generation;
        let before = self.listeners.len();
        self.listeners.retain_mut(|(addr, l)| {
            let keep = want.contains(addr);
            if !keep {
                let _ = self.poll.registry().deregister(l);
            }
            keep
        });
        let mut changed = before != self.listeners.len();
        for addr in want {
            if self.listeners.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            match bind_listener(addr) {
                Ok(l) => {
                    if self.reports {
                        println!("khttpd: listening on {}", url_of(&self.site, addr));
                    }
                    self.listeners.push((addr, l));
                    changed = true;
                }
                Err(e) if self.reports => eprintln!("khttpd: cannot listen on {addr}: {e}"),
                Err(_) => {}
            }
        }
        if changed {
            // Tokens are positions: re-register them all.
            for (_, l) in &mut self.listeners {
                let _ = self.poll.registry().deregister(l);
            }
            for (i, (_, l)) in self.listeners.iter_mut().enumerate() {
                let _ = self.poll.registry().register(
                    l,
                    Token(i.saturating_add(1)),
                    Interest::READABLE,
                );
            }
        }
    }

    /// Runs until shutdown, then finishes responses in flight (for at most five seconds).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = self.clock.now();
        let mut drain_until: Option<Instant> = None;
        loop {
            let timeout = if drain_until.is_some() { 20 } else { 500 };
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(timeout)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("khttpd: poll failed: {e}");
                return;
            }
            self.shared.update(&mut self.clock);
            self.refresh();
            for ev in &events {
                match ev.token() {
                    WAKER => self.answers(),
                    Token(t) if t < CONN_BASE => self.accept(t.saturating_sub(1)),
                    Token(t) => {
                        let index = t.saturating_sub(CONN_BASE);
                        if (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                            && let Some(Some(slot)) = self.slots.get_mut(index)
                        {
                            slot.readable = true;
                            slot.read_closed |= ev.is_read_closed() || ev.is_error();
                        }
                        self.drive(index);
                    }
                }
            }
            let now = self.clock.now();
            if now.millis_since(last_sweep) >= 250 || drain_until.is_some() {
                last_sweep = now;
                self.sweep();
            }
            if self.shared.shutdown.load(Ordering::Acquire) {
                let until = *drain_until.get_or_insert_with(|| {
                    for (_, l) in &mut self.listeners {
                        let _ = self.poll.registry().deregister(l);
                    }
                    self.listeners.clear();
                    now.add_secs(5)
                });
                self.close_idle();
                if self.slots.iter().all(Option::is_none) || now >= until {
                    for index in 0..self.slots.len() {
                        self.remove(index, false);
                    }
                    return;
                }
            }
        }
    }

    /// Admission control (the engine's [`admit`]): counts the connection in and returns whether
    /// it is answered 503 (`Some(true)`), or `None` when it is refused.
    fn admit(&self) -> Option<bool> {
        let shared = &self.shared;
        // Counted in first, so that two workers cannot both take the last place.
        let open = shared.connections.fetch_add(1, Ordering::AcqRel);
        let overloaded = shared.overloaded.load(Ordering::Acquire);
        let admission = admit(self.site.limits(), usize::MAX, open, overloaded);
        if admission != Admission::Serve {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
        match admission {
            Admission::Serve => Some(false),
            Admission::Unavailable => {
                shared.overloaded.fetch_add(1, Ordering::AcqRel);
                Some(true)
            }
            Admission::Refuse => None,
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some((_, listener)) = self.listeners.get(index) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // EMFILE and friends: try again on the next event
            };
            let Some(overload) = self.admit() else {
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_or(
                Local {
                    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    port: 0,
                },
                |a| Local {
                    ip: a.ip(),
                    port: a.port(),
                },
            );
            let tls = if self.site.serves_tls(local.port) {
                match self.tls_session(local) {
                    Some(t) => Some(t),
                    None => {
                        self.shared.leave(overload);
                        continue;
                    }
                }
            } else {
                None
            };
            let mut conn = if overload {
                Connection::unavailable(local, &self.clock, &self.site)
            } else {
                Connection::new(local, &self.clock, &self.site)
            };
            if tls.is_some() {
                conn.begin_head();
            }
            conn.set_logging(self.logging);
            conn.set_remote(Local {
                ip: peer.ip(),
                port: peer.port(),
            });
            let index = self.free.pop().unwrap_or(self.slots.len());
            let token = Token(CONN_BASE.saturating_add(index));
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.shared.leave(overload);
                continue;
            }
            let slot = Slot {
                stream,
                peer,
                conn,
                overload,
                readable: true,
                read_closed: false,
                ack: None,
                tls,
            };
            if index == self.slots.len() {
                self.slots.push(Some(slot));
            } else if let Some(s) = self.slots.get_mut(index) {
                *s = Some(slot);
            }
            self.drive(index);
        }
    }

    /// Reads, writes and closes as far as the socket and the engine allow.
    fn drive(&mut self, index: usize) {
        let Self {
            slots,
            buf,
            clock,
            site,
            shared,
            index: worker,
            ..
        } = self;
        let Some(Some(slot)) = slots.get_mut(index) else {
            return;
        };
        let mut drop_it = false;
        loop {
            let mut input = read_input(slot, buf, clock, site);
            // A client that goes while an application works on its request: the engine cancels
            // it (nginx's "client closed request").
            if (slot.read_closed || slot.readable)
                && slot.conn.waiting_for().is_some()
                && sys::peer_closed(&slot.stream)
            {
                slot.conn.handle_eof(clock, site);
                input.progressed = true;
            }
            if let Some(id) = slot.conn.take_cancelled() {
                shared.apps.cancel(id);
            }
            if input.drop {
                drop_it = true;
                break;
            }
            let output = write_output(slot, shared, clock, site);
            if output.drop {
                drop_it = true;
                break;
            }
            let mut progressed = input.progressed || output.progressed;
            if let Some(d) = slot.conn.poll_delivery() {
                // A request for an application: queue it, or 503.
                let queued = shared.apps.enqueue(*worker, index, &d, site);
                match queued {
                    Ok(id) => slot.conn.handle_queued(id, clock),
                    Err(refusal) => slot.conn.handle_refused(refusal, clock, site),
                }
                progressed = true;
            }
            let close = match &slot.tls {
                Some(tls) => tls.poll_close(&slot.conn),
                None => slot.conn.poll_close(),
            };
            match close {
                Some(Close::Abortive | Close::Finished) => {
                    drop_it = true; // `remove` resets it if abortive
                    break;
                }
                Some(Close::Graceful) => {
                    // The lingering close: FIN now, input drained until the engine says.
                    let _ = slot.stream.shutdown(Shutdown::Write);
                    let unsent = sys::unsent_bytes(&slot.stream).unwrap_or(0);
                    slot.conn.handle_shutdown(clock, unsent as u64);
                    progressed = true;
                }
                None => {}
            }
            if !progressed {
                break;
            }
        }
        if self.logging {
            self.write_log(index);
        }
        if drop_it {
            self.report_tls_failure(index);
            self.remove(index, false);
        } else if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.release_ack();
        }
    }

    fn write_log(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        let Some(format) = self.shared.log_format() else {
            return;
        };
        let mut text = String::new();
        let unix = self.clock.date().unix();
        let peer = slot.peer;
        slot.conn
            .drain_log(|r| text.push_str(&crate::log::line(format, r, peer, unix)));
        if !text.is_empty() {
            self.shared.log_lines(&text);
        }
    }

    /// Drops a connection, with a reset when `reset` says so, when the engine says so, or when
    /// the engine still holds output for it (an error, a time-out, a shutdown that could not
    /// wait): the client sees a broken response rather than a clean FIN after a short body.
    fn remove(&mut self, index: usize, reset: bool) {
        if self.logging
            && let Some(Some(slot)) = self.slots.get_mut(index)
        {
            // Responses cut short are logged too, their time running to now.
            slot.conn.finish_log(&self.clock);
            self.write_log(index);
        }
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::take) {
            if let Some(id) = slot.conn.waiting_for() {
                self.shared.apps.cancel(id);
            }
            if let Some((_, ack)) = &slot.ack {
                ack.fire(false);
            }
            // A failed TLS session's alert goes out before a FIN; the client sees the failure
            // in it. Ciphertext still unsent is a response cut short.
            let tls_failed = slot.tls.as_ref().is_some_and(|t| t.failed().is_some());
            let tls_unsent = slot.tls.as_ref().is_some_and(|t| t.unsent() > 0);
            if reset
                || tls_unsent
                || (!tls_failed && (slot.conn.has_output() || slot.conn.mid_response()))
                || slot.conn.poll_close() == Some(Close::Abortive)
            {
                let _ = SockRef::from(&slot.stream).set_linger(Some(Duration::ZERO));
            }
            let mut stream = slot.stream;
            let _ = self.poll.registry().deregister(&mut stream);
            self.shared.leave(slot.overload);
            self.free.push(index);
        }
    }

    /// A TLS session for a connection that arrived on `local`, under the current certificates
    /// (configurations are kept per local address until the certificates change). `None`
    /// when rustls refuses: the connection is then closed.
    fn tls_session(&mut self, local: Local) -> Option<Box<Tls>> {
        let certs = &self.shared.certs;
        let generation = certs.generation();
        let (configs, made_at) = &mut self.tls_configs;
        if *made_at != generation {
            configs.clear();
            *made_at = generation;
        }
        let config = match configs.iter().find(|(l, _)| *l == local) {
            Some((_, c)) => Arc::clone(c),
            None => {
                let c = certs.config(local).ok()?;
                configs.push((local, Arc::clone(&c)));
                c
            }
        };
        Tls::new(config, &sys::Cushioned).ok().map(Box::new)
    }

    /// Reports a failed TLS session (a handshake with no certificate for its name, no common
    /// version or suite, a bad record) on standard error: at most one line a second, with
    /// the count of those left out.
    fn report_tls_failure(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get(index) else {
            return;
        };
        let Some(tls) = &slot.tls else { return };
        let Some(why) = tls.failed() else { return };
        let (skipped, last) = &mut self.tls_failures;
        let now = self.clock.now();
        if last.is_some_and(|at| now.millis_since(at) < 1000) {
            *skipped = skipped.saturating_add(1);
            return;
        }
        let reason = tls
            .error()
            .map_or_else(|| format!("{why:?}"), ToString::to_string);
        let more = if *skipped > 0 {
            format!(" ({skipped} more since the last report)")
        } else {
            String::new()
        };
        let local = slot
            .stream
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        eprintln!(
            "khttpd: TLS from {} on {local} failed: {reason}{more}",
            slot.peer
        );
        *skipped = 0;
        *last = Some(now);
    }

    /// Enforces deadlines and lingering-close limits.
    fn sweep(&mut self) {
        self.shared.bodies.purge();
        let now = self.clock.now();
        for index in 0..self.slots.len() {
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            // What the kernel still holds for a lingering client, so that the engine judges
            // its progress (and sees it delivered).
            if slot.conn.phase() == Phase::Lingering
                && let Ok(n) = sys::unsent_bytes(&slot.stream)
            {
                slot.conn.handle_undelivered(&self.clock, n as u64);
            }
            if slot.conn.poll_timeout().is_some_and(|d| now >= d) {
                // What the kernel still holds for the client: the engine waits for it to be
                // delivered (at the minimum send rate) before it counts the client as idle, and
                // while more waits here, judges by its draining how fast the client reads.
                let undelivered = sys::unsent_bytes(&slot.stream)
                    .unwrap_or(0)
                    .saturating_add(slot.tls.as_ref().map_or(0, |t| t.unsent()))
                    as u64;
                slot.conn.handle_timeout(&self.clock, undelivered);
                if let Some(id) = slot.conn.take_cancelled() {
                    self.shared.apps.cancel(id);
                }
                self.drive(index);
            }
        }
    }

    /// Hands applications' answers to the connections that wait for them.
    fn answers(&mut self) {
        for (index, id, outcome, ack) in self.shared.apps.take_outcomes(self.index) {
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                if let Some(ack) = ack {
                    ack.fire(false);
                }
                continue;
            };
            let (clock, site) = (&self.clock, &self.site);
            let taken = slot.conn.handle_outcome(id, &outcome, clock, site);
            if let Some(ack) = ack {
                if !taken || slot.conn.waiting_for() != Some(id) {
                    // Refused, or the last piece: the word now.
                    ack.fire(taken);
                } else if let Some((_, old)) = slot.ack.replace((id, ack)) {
                    old.fire(false);
                }
            }
            // Driven whether it was taken or not: a piece refused for breaking its answer's
            // length leaves the connection to be reset now (issue #21, finding 7).
            self.drive(index);
        }
    }

    /// During shutdown: closes connections with nothing in flight (a TLS one after its
    /// close_notify, written if the socket takes it now).
    fn close_idle(&mut self) {
        for index in 0..self.slots.len() {
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.conn.has_output() || slot.tls.as_ref().is_some_and(|t| t.unsent() > 0) {
                continue;
            }
            if let Some(tls) = &mut slot.tls {
                tls.close();
                let _ = slot.stream.write(tls.transmit());
            }
            self.remove(index, false);
        }
    }
}

/// What one pass over a connection's input or output did.
#[derive(Default)]
struct Pass {
    /// The engine was given input, EOF or a send result.
    progressed: bool,
    /// The connection must go (a socket error).
    drop: bool,
}

/// Reads while the socket is readable and the engine wants input (while the close lingers, the
/// engine discards it).
fn read_input(slot: &mut Slot, buf: &mut [u8], clock: &Clock, site: &Site) -> Pass {
    let mut pass = Pass::default();
    // A TLS handshake is read to its end even when the connection wants no request (answered
    // 503 over `max-connections`): its answer can only go out once the handshake is done.
    while slot.readable
        && (slot.conn.wants_read() || slot.tls.as_ref().is_some_and(|t| t.handshaking()))
    {
        match slot.stream.read(buf) {
            Ok(0) => {
                match &mut slot.tls {
                    Some(tls) => tls.handle_eof(&mut slot.conn, clock, site),
                    None => slot.conn.handle_eof(clock, site),
                }
                pass.progressed = true;
                break;
            }
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                match &mut slot.tls {
                    Some(tls) => tls.handle_input(data, &mut slot.conn, clock, site),
                    None => slot.conn.handle_input(data, clock, site),
                }
                pass.progressed = true;
                if n < buf.len() && !slot.read_closed {
                    slot.readable = false; // drained: wait for the next edge
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                slot.readable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                pass.drop = true;
                break;
            }
        }
    }
    pass
}

/// Writes a TLS session's ciphertext until the socket would block: the session encrypts the
/// connection's output as room frees ([`Tls::pump`]); no `sendfile`, since the bytes on the
/// wire are not the file's.
fn write_tls(slot: &mut Slot, clock: &Clock, site: &Site) -> Pass {
    let mut pass = Pass::default();
    let Some(tls) = &mut slot.tls else {
        return pass;
    };
    loop {
        tls.pump(&mut slot.conn, clock, site);
        let data = tls.transmit();
        if data.is_empty() {
            break;
        }
        match slot.stream.write(data) {
            Ok(0) => {
                pass.drop = true;
                break;
            }
            Ok(k) => {
                tls.handle_sent(k);
                pass.progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // What the client has yet to take: the kernel's share and the session's.
                if let Ok(n) = sys::unsent_bytes(&slot.stream) {
                    let held = n.saturating_add(tls.unsent()) as u64;
                    slot.conn.handle_transport(clock, held);
                }
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                pass.drop = true;
                break;
            }
        }
    }
    pass
}

/// Writes the engine's output until the socket would block.
fn write_output(slot: &mut Slot, shared: &Shared, clock: &Clock, site: &Site) -> Pass {
    if slot.tls.is_some() {
        return write_tls(slot, clock, site);
    }
    let mut pass = Pass::default();
    while slot.conn.has_output() {
        // A large body piece at the front goes out with sendfile (see `bodies`).
        let threshold = if shared.sendfile { LARGE } else { usize::MAX };
        let large = match slot.conn.transmit() {
            Some(Transmit::Body { body, start, end }) if end.saturating_sub(start) >= threshold => {
                shared
                    .bodies
                    .file_for(body)
                    .map(|fd| (fd, start, end.saturating_sub(start)))
            }
            _ => None,
        };
        let sent = if let Some((fd, start, len)) = large {
            sys::sendfile(&slot.stream, &*fd, start as u64, len)
        } else {
            let mut slices: [&[u8]; 64] = [&[]; 64];
            let n = slot.conn.transmit_slices_before(&mut slices, threshold);
            let iov: [IoSlice<'_>; 64] =
                std::array::from_fn(|i| IoSlice::new(slices.get(i).copied().unwrap_or_default()));
            let iov = iov.get(..n).unwrap_or_default();
            // When a large body follows (to go out with sendfile), MSG_MORE holds these bytes
            // back so that they share segments with it, as nginx's tcp_nopush does.
            let queued: usize = slices.iter().take(n).map(|s| s.len()).sum();
            if (queued as u64) < slot.conn.pending_bytes() {
                SockRef::from(&slot.stream).send_vectored_with_flags(iov, libc::MSG_MORE)
            } else {
                slot.stream.write_vectored(iov)
            }
        };
        match sent {
            Ok(0) => {
                pass.drop = true;
                break;
            }
            Ok(k) => {
                slot.conn.handle_sent(k, clock, site);
                pass.progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The kernel's buffer is full: what it holds now is what its draining (the
                // client reading) is measured from.
                if let Ok(n) = sys::unsent_bytes(&slot.stream) {
                    slot.conn.handle_transport(clock, n as u64);
                }
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                pass.drop = true;
                break;
            }
        }
    }
    pass
}
