//! TLS below HTTP/1.1 (issue #24): rustls's unbuffered, sans-IO server state machine between a
//! host's socket and a [`Connection`]. The host reads ciphertext and hands it to
//! [`Tls::handle_input`], which decrypts what arrives whole into the connection's input; it
//! sends what [`Tls::transmit`] gives and reports it with [`Tls::handle_sent`]. Between the
//! two, [`Tls::pump`] encrypts the connection's committed output, from the connection's own
//! slices (cached bodies are read where they lie, not copied first), a bounded backlog at a
//! time, so that the connection's send-rate rule still sees the client's pace.
//!
//! The engine takes no crypto provider of its own: the host builds the `ServerConfig` with its
//! provider (khttpd: ring) and hands it over. rustls forbids unsafe code, as the engine does,
//! and its unbuffered API allocates nothing sized by the network beyond one record at a time;
//! the buffers here are bounded ([`INCOMING`], [`BACKLOG`]) and grown fallibly.
//!
//! The rules are RFC 8446 (TLS 1.3) and RFC 5246 (TLS 1.2); the state machine's contract is
//! rustls's `unbuffered` module documentation (rustls 0.23): each state's duty, `discard` taken
//! off the front of the incoming bytes, and an error's alert fetched by one more call.
//!
//! Allocation failure: the engine's own buffers are grown fallibly, but rustls allocates
//! infallibly (its handshake state, a message's copy, a ticket), and an allocation failure
//! there would abort khttpd and bugcheck the driver. So every call into rustls runs inside
//! the host's [`Cushion`]: memory set aside, given back to the system when it refuses an
//! allocation during the call, so that the allocation can succeed. A session whose call drew
//! on the cushion ends at once ([`TlsError::OutOfMemory`]), giving its memory back, and no
//! session calls rustls again until the host has set the cushion aside anew.

pub mod bind;

use alloc::sync::Arc;
use alloc::vec::Vec;

use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use crate::conn::{Close, Connection};
use crate::site::Site;
use crate::time::Clock;

/// The most ciphertext held before it is processed: one record of the largest size a peer may
/// send (16 KiB of plaintext, 2 KiB of expansion that rustls accepts, a 5-byte header).
pub const INCOMING: usize = 16_384 + 2_048 + 5;

/// Ciphertext encrypted ahead of the socket at most; past it, [`Tls::pump`] waits for
/// [`Tls::handle_sent`]. Small, so that what the connection counts as sent is close to what
/// the client has taken.
pub const BACKLOG: usize = 64 * 1024;

/// The memory a host should set aside as its [`Cushion`], per thread (or processor) that
/// calls into rustls. engine/tests/alloc_fail.rs measures the most one call allocates (9,545
/// bytes in a TLS 1.3 handshake with a P-256 certificate; a longer chain adds its size) and
/// fails if that grows past a quarter of this.
pub const CUSHION: usize = 64 * 1024;

/// Plaintext encrypted per call: one record's worth.
const RECORD: usize = 16_384;

/// Memory a host sets aside for the calls into rustls, which allocates infallibly (see the
/// module documentation). The host's global allocator, when the system refuses an allocation
/// between [`Cushion::enter`] and [`Cushion::leave`] on the same thread (or processor), gives
/// the set-aside memory back to the system and tries once more. The cushion must be larger
/// than what one call into rustls allocates (engine/tests/alloc_fail.rs measures it).
pub trait Cushion: Sync {
    /// A call into rustls begins on this thread. Returns false, and the call is not made, when
    /// the cushion was spent and memory for it cannot be had again yet.
    fn enter(&self) -> bool;
    /// The call ended. Returns whether the cushion was spent during it.
    fn leave(&self) -> bool;
}

/// No cushion: a failed allocation inside rustls is the host's allocator's to handle (std
/// aborts). For tests and tools that do not run out of memory on purpose.
#[derive(Debug)]
pub struct NoCushion;

impl Cushion for NoCushion {
    fn enter(&self) -> bool {
        true
    }

    fn leave(&self) -> bool {
        false
    }
}

/// Runs `f`, one call into rustls, inside `cushion`: `None` when the cushion is spent, before
/// or during the call (the session must then end).
fn cushioned<T>(cushion: &dyn Cushion, f: impl FnOnce() -> T) -> Option<T> {
    if !cushion.enter() {
        return None;
    }
    let out = f();
    if cushion.leave() { None } else { Some(out) }
}

/// Why a TLS connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsError {
    /// The peer broke the protocol, or the handshake failed (its alert is queued to send).
    Protocol,
    /// A record longer than [`INCOMING`].
    RecordTooLarge,
    /// Memory for a buffer could not be had, or a call into rustls spent the host's cushion.
    OutOfMemory,
}

/// Where the TLS session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The handshake runs.
    Handshake,
    /// Application data flows.
    Open,
    /// The close_notify is queued: nothing more is encrypted.
    Closing,
    /// Failed: only the alert, if any, remains to send.
    Failed(TlsError),
}

/// One TLS session over a socket, below one [`Connection`].
pub struct Tls {
    session: UnbufferedServerConnection,
    /// What the calls into rustls draw on when the system refuses memory.
    cushion: &'static dyn Cushion,
    /// Ciphertext received and not yet processed (a partial record at most, between calls).
    incoming: Vec<u8>,
    /// Ciphertext to send; its first `sent` bytes are out.
    outgoing: Vec<u8>,
    sent: usize,
    step: Step,
    /// The peer sent its close_notify.
    peer_closed: bool,
    /// What rustls said when the session failed, for the host's log.
    error: Option<rustls::Error>,
}

impl core::fmt::Debug for Tls {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tls")
            .field("step", &self.step)
            .field("incoming", &self.incoming.len())
            .field("unsent", &self.unsent())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// A session for a new connection under `config`, its calls into rustls inside `cushion`.
    ///
    /// # Errors
    /// [`TlsError::Protocol`] when rustls refuses the configuration;
    /// [`TlsError::OutOfMemory`] when the cushion is spent (the connection is then refused).
    pub fn new(config: Arc<ServerConfig>, cushion: &'static dyn Cushion) -> Result<Self, TlsError> {
        let session = cushioned(cushion, || UnbufferedServerConnection::new(config))
            .ok_or(TlsError::OutOfMemory)?
            .map_err(|_| TlsError::Protocol)?;
        Ok(Self {
            session,
            cushion,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            step: Step::Handshake,
            peer_closed: false,
            error: None,
        })
    }

    /// Whether the handshake is still running.
    #[must_use]
    pub const fn handshaking(&self) -> bool {
        matches!(self.step, Step::Handshake)
    }

    /// Why the session failed, if it did.
    #[must_use]
    pub const fn failed(&self) -> Option<TlsError> {
        match self.step {
            Step::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// What rustls reported when the session failed (a handshake with no certificate for the
    /// name asked, no common version or suite, a bad record), for the host's log.
    #[must_use]
    pub const fn error(&self) -> Option<&rustls::Error> {
        self.error.as_ref()
    }

    /// Ciphertext waiting to be sent.
    #[must_use]
    pub fn unsent(&self) -> usize {
        self.outgoing.len().saturating_sub(self.sent)
    }

    /// Bytes of buffer the session holds of its own (not counting rustls's keys and state):
    /// none between exchanges.
    #[must_use]
    pub fn held(&self) -> usize {
        self.incoming
            .capacity()
            .saturating_add(self.outgoing.capacity())
    }

    /// The ciphertext to send next.
    #[must_use]
    pub fn transmit(&self) -> &[u8] {
        self.outgoing.get(self.sent..).unwrap_or_default()
    }

    /// The first `n` bytes of [`Tls::transmit`] were sent. Once all are, the buffer is given
    /// back (an idle connection keeps none). The host then calls [`Tls::pump`] for more.
    pub fn handle_sent(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n).min(self.outgoing.len());
        if self.sent == self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }

    /// Ciphertext from the socket: records that arrive whole are processed, handshake replies
    /// queued to send, and application data decrypted into `http`; then `http`'s output is
    /// encrypted ([`Tls::pump`]). After the peer's close_notify, or once this side is closing
    /// or has failed, input is dropped.
    pub fn handle_input(&mut self, data: &[u8], http: &mut Connection, clock: &Clock, site: &Site) {
        let mut rest = data;
        while !rest.is_empty() && self.reading() {
            let room = INCOMING.saturating_sub(self.incoming.len());
            if room == 0 {
                self.fail(TlsError::RecordTooLarge);
                break;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            if self.incoming.try_reserve(now.len()).is_err() {
                self.fail(TlsError::OutOfMemory);
                break;
            }
            self.incoming.extend_from_slice(now);
            rest = later;
            if let Err(e) = self.process(http, clock, site) {
                self.fail(e);
            }
        }
        if self.incoming.is_empty() {
            // Nothing partial is held: the buffer goes back (an idle connection keeps none).
            self.incoming = Vec::new();
        }
        self.pump(http, clock, site);
    }

    /// Whether input is still processed.
    const fn reading(&self) -> bool {
        matches!(self.step, Step::Handshake | Step::Open) && !self.peer_closed
    }

    /// The socket reached its end: the connection hears it (a client that closes without its
    /// close_notify truncates at most what it sent, and the connection's rules say what that
    /// means for a request).
    pub fn handle_eof(&mut self, http: &mut Connection, clock: &Clock, site: &Site) {
        http.handle_eof(clock, site);
        self.pump(http, clock, site);
    }

    /// Runs the state machine over the incoming bytes until it needs more of them.
    fn process(
        &mut self,
        http: &mut Connection,
        clock: &Clock,
        site: &Site,
    ) -> Result<(), TlsError> {
        let cushion = self.cushion;
        loop {
            let UnbufferedStatus { mut discard, state } = cushioned(cushion, || {
                self.session.process_tls_records(&mut self.incoming)
            })
            .ok_or(TlsError::OutOfMemory)?;
            let more = match state {
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    let mut ended = None;
                    loop {
                        let record = match cushioned(cushion, || read.next_record()) {
                            None => Err(TlsError::OutOfMemory),
                            Some(None) => break,
                            Some(Some(r)) => r.map_err(|_| TlsError::Protocol),
                        };
                        match record {
                            Ok(record) => {
                                discard = discard.saturating_add(record.discard);
                                http.handle_input(record.payload, clock, site);
                            }
                            Err(e) => {
                                ended = Some(e);
                                break;
                            }
                        }
                    }
                    ended.map_or(Ok(true), Err)
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, 0, |out| {
                        cushioned(cushion, || encode.encode(out))
                    })
                    .map(|()| true)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The bytes are in `outgoing`, which the host sends.
                    transmit.done();
                    Ok(true)
                }
                Ok(ConnectionState::WriteTraffic(_)) => {
                    if self.step == Step::Handshake {
                        self.step = Step::Open;
                    }
                    Ok(false)
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(false)
                }
                // Blocked on more of the handshake, or a state this version does not name.
                Ok(_) => Ok(false),
                Err(e) => {
                    self.error = Some(e);
                    Err(TlsError::Protocol)
                }
            };
            let taken = discard.min(self.incoming.len());
            self.incoming.drain(..taken);
            if self.peer_closed {
                // Bytes after the close_notify are not the peer's to send; the connection
                // hears the end as it would a FIN.
                self.incoming = Vec::new();
                http.handle_eof(clock, site);
            }
            if !more? {
                return Ok(());
            }
        }
    }

    /// Ends the session: its alert, if rustls queued one, goes out (one more call gives it),
    /// and nothing else does.
    fn fail(&mut self, why: TlsError) {
        self.step = Step::Failed(why);
        self.incoming = Vec::new();
        if why == TlsError::Protocol {
            // The queued alert comes out as records to encode, then to transmit.
            let _ = self.writable(|_, _| Ok(()));
        }
    }

    /// Flushes records rustls has queued (an alert, a key update's reply), then, if
    /// application data may be written now, runs `write` with the writer and the outgoing
    /// buffer. Returns whether it ran.
    fn writable(
        &mut self,
        write: impl FnOnce(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), TlsError>,
    ) -> Result<bool, TlsError> {
        let mut write = Some(write);
        let cushion = self.cushion;
        loop {
            let UnbufferedStatus { state, .. } =
                cushioned(cushion, || self.session.process_tls_records(&mut []))
                    .ok_or(TlsError::OutOfMemory)?;
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, 0, |out| {
                        cushioned(cushion, || encode.encode(out))
                    })?;
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    return match write.take() {
                        Some(f) => f(&mut writer, &mut self.outgoing).map(|()| true),
                        None => Ok(false),
                    };
                }
                Ok(_) => return Ok(false),
                Err(_) => return Err(TlsError::Protocol),
            }
        }
    }

    /// Encrypts `http`'s committed output while the backlog has room (a record's worth at a
    /// time, read from the connection's own slices), then, once the connection closes
    /// gracefully with nothing left, the close_notify (RFC 8446 §6.1). The host calls it
    /// before it sends, and after [`Tls::handle_sent`].
    pub fn pump(&mut self, http: &mut Connection, clock: &Clock, site: &Site) {
        let cushion = self.cushion;
        let mut joined: Vec<u8> = Vec::new();
        while self.step == Step::Open && self.unsent() < BACKLOG {
            let mut slices: [&[u8]; 16] = [&[]; 16];
            let count = http.transmit_slices(&mut slices);
            let Some(&first) = slices.first().filter(|_| count > 0) else {
                break;
            };
            // A record is one AEAD operation and 22 bytes more for both ends, so pieces
            // smaller than a record (a head, a small body, the next pipelined answer) share
            // one: copied together, a record's worth at most. A piece of a record or more is
            // encrypted where it lies, not copied.
            let piece: &[u8] = if first.len() >= RECORD || count == 1 {
                first.get(..RECORD).unwrap_or(first)
            } else {
                joined.clear();
                if joined.try_reserve_exact(RECORD).is_err() {
                    return self.fail(TlsError::OutOfMemory);
                }
                for s in slices.iter().take(count) {
                    let room = RECORD.saturating_sub(joined.len());
                    joined.extend_from_slice(s.get(..room).unwrap_or(s));
                    if joined.len() == RECORD {
                        break;
                    }
                }
                &joined
            };
            let n = piece.len();
            let encrypted = self.writable(|writer, out| {
                // One record: the plaintext, its header and at most 24 bytes of expansion.
                encode_into(out, n.saturating_add(29), |spare| {
                    cushioned(cushion, || {
                        writer.encrypt(piece, spare).map_err(encode_error)
                    })
                })
            });
            match encrypted {
                Ok(true) => http.handle_sent(n, clock, site),
                Ok(false) => break,
                Err(e) => return self.fail(e),
            }
        }
        if http.poll_close() == Some(Close::Graceful) {
            self.close();
        }
    }

    /// Ends an open session: its close_notify is queued (RFC 8446 §6.1), for the host to send
    /// before it closes the socket; nothing more is encrypted. khttpd calls it for the idle
    /// connections it closes when it stops, so that their clients see a clean end rather than
    /// a truncation. Does nothing during the handshake or after the session ended.
    pub fn close(&mut self) {
        if self.step != Step::Open {
            return;
        }
        let cushion = self.cushion;
        let queued = self.writable(|writer, out| {
            encode_into(out, 0, |spare| {
                cushioned(cushion, || {
                    writer.queue_close_notify(spare).map_err(encode_error)
                })
            })
        });
        self.step = match queued {
            Ok(_) => Step::Closing,
            Err(e) => Step::Failed(e),
        };
    }

    /// What the host does with the socket: as `http` says, once the ciphertext before it is
    /// out. A reset goes at once, and so does a session that ran out of memory (whatever it
    /// was sending is cut, visibly); a failed session closes once its alert is sent; during the
    /// handshake, a connection that ends (its time ran out) closes; an open one closes
    /// gracefully only after [`Tls::pump`] queued its close_notify.
    #[must_use]
    pub fn poll_close(&self, http: &Connection) -> Option<Close> {
        let said = http.poll_close();
        if said == Some(Close::Abortive) || self.step == Step::Failed(TlsError::OutOfMemory) {
            return Some(Close::Abortive);
        }
        if self.unsent() > 0 {
            return None;
        }
        match self.step {
            Step::Failed(_) => Some(Close::Finished),
            Step::Handshake => said.map(|_| Close::Finished),
            Step::Open => said.filter(|c| *c == Close::Finished),
            Step::Closing => said,
        }
    }
}

/// An encryption error as the encoding error [`encode_into`] retries on.
fn encode_error(e: EncryptError) -> EncodeError {
    match e {
        EncryptError::InsufficientSize(s) => EncodeError::InsufficientSize(s),
        _ => EncodeError::AlreadyEncoded,
    }
}

/// Runs `encode` into the spare end of `out`, growing it (fallibly) to the size rustls asks
/// for when it does not fit. `encode` gives `None` when its call into rustls spent the cushion.
fn encode_into(
    out: &mut Vec<u8>,
    guess: usize,
    mut encode: impl FnMut(&mut [u8]) -> Option<Result<usize, EncodeError>>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut want = guess;
    loop {
        if out.try_reserve(want).is_err() {
            return Err(TlsError::OutOfMemory);
        }
        out.resize(start.saturating_add(want), 0);
        let spare = out.get_mut(start..).unwrap_or_default();
        let Some(encoded) = encode(spare) else {
            out.truncate(start);
            return Err(TlsError::OutOfMemory);
        };
        match encoded {
            Ok(n) => {
                out.truncate(start.saturating_add(n));
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > want => {
                want = s.required_size;
            }
            Err(_) => {
                out.truncate(start);
                return Err(TlsError::Protocol);
            }
        }
    }
}
