//! The application endpoint (issue #12): a Unix socket any local user may open, speaking the
//! same frames as the control socket, over which applications attach to request queues,
//! receive the requests the cache cannot answer, and answer them.
//!
//! Who may attach where is the engine's rule (`ctl::attach`): root and khttpd's own user
//! anywhere, another user only under a reservation granted to it by name
//! (`khttpctl urlacl add PREFIX --user NAME`), which `SO_PEERCRED` and the password database
//! identify, and only to a queue it created itself (issue #21). A refusal is one line to the
//! application and one to khttpd's log.
//!
//! What a local user can make khttpd hold here is bounded (issue #21, finding 6): at most
//! [`MAX_SESSIONS_PER_USER`] connections per user and [`MAX_SESSIONS`] in all
//! (administrators' are not counted), each with its thread; a frame is judged by its header
//! before any of it is read (direct bytes only in an answer of an application attached to a
//! queue), and read as it arrives; a connection attached to nothing
//! is closed after [`FRAME_TIMEOUT`] without a frame, and any frame must arrive whole within
//! it; at most [`MAX_ATTACHES`] attaches per connection.
//!
//! The requests themselves live in `crate::appqueue`, between the workers and these sessions.

use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use khttp_engine::apps::{self, AppCall, AppHost, Room};
use khttp_engine::ctl::{Caller, attach};
use khttp_engine::{AppResponse, CtlError, Handoff, Holder, Instant, Outcome, RequestId, Site};
use khttp_proto::frame::{self, RequestFrame};
use khttp_proto::reply::{AttachRow, NewsRow, RespondRow};
use khttp_proto::{Command, Respond, Status, error_reply, refuse, write_rows};

use crate::appqueue::Origin;
use crate::shared::Shared;
use crate::sys;

/// The most application connections of non-administrators at once, in all and per user, and
/// the most attaches of one: the engine's, which the driver keeps too.
use khttp_engine::limits::{
    MAX_APP_ATTACHES as MAX_ATTACHES, MAX_APP_SESSIONS as MAX_SESSIONS,
    MAX_APP_SESSIONS_PER_USER as MAX_SESSIONS_PER_USER,
};
/// How long a connection that has attached to nothing may sit between frames, and how long
/// the rest of a frame may take once its header has come.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a read failed for its timeout (`EAGAIN` on Unix sockets).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A place among the counted application connections, given back when dropped.
pub(crate) struct SessionSlot {
    shared: Arc<Shared>,
    uid: Option<u32>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let Some(uid) = self.uid else { return };
        let mut s = self
            .shared
            .apps
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_user.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_user.remove(&uid);
            }
        }
    }
}

/// Counts in a new application connection from `uid` (`None`: an administrator's, not
/// counted), or refuses it past the caps.
fn admit_session(shared: &Arc<Shared>, uid: Option<u32>) -> Option<SessionSlot> {
    if let Some(uid) = uid {
        let mut s = shared
            .apps
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = s.per_user.get(&uid).copied().unwrap_or(0);
        if s.total >= MAX_SESSIONS || mine >= MAX_SESSIONS_PER_USER {
            return None;
        }
        s.total += 1;
        *s.per_user.entry(uid).or_default() += 1;
    }
    Some(SessionSlot {
        shared: Arc::clone(shared),
        uid,
    })
}

/// `len` bytes from `reader`, in a buffer that grows as they come.
fn read_up_to(reader: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(u64::from(len)).read_to_end(&mut buf)?;
    if buf.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Binds the application socket at `path`, open to every local user (mode 0666): who may do
/// what is checked per command. Its directory is held to the control socket's rule (made if
/// missing, refused if another user could have prepared it: `crate::sockdir`).
///
/// # Errors
/// One line of English.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, String> {
    crate::sockdir::prepare(path)?;
    if path.exists() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Serves application connections, a thread each, until shutdown. Past the caps on
/// connections ([`MAX_SESSIONS`], [`MAX_SESSIONS_PER_USER`]), a connection gets its refusal
/// and is closed at once, without a thread.
pub(crate) fn serve(listener: &UnixListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let uid = sys::peer_uid(&stream).ok();
        // Administrators' connections are not counted; one whose user cannot be read counts
        // as one unknown user's.
        let counted = match uid {
            Some(u) if u == 0 || u == sys::euid() => None,
            Some(u) => Some(u),
            None => Some(u32::MAX),
        };
        let Some(slot) = admit_session(shared, counted) else {
            refuse_session(&stream, uid);
            continue;
        };
        let shared = Arc::clone(shared);
        let _ = std::thread::Builder::new()
            .name("khttpd-app".into())
            .spawn(move || {
                let _slot = slot;
                sys::batch_scheduling();
                if let Some(session) = Session::new(stream, shared) {
                    session.run();
                }
            });
    }
}

/// Answers a connection past the caps with [`Status::TooManySessions`] (the frame is small and
/// the socket new: the write does not block) and closes it.
fn refuse_session(mut stream: &UnixStream, uid: Option<u32>) {
    let mut out = Vec::new();
    let status = refuse(
        &mut out,
        Status::TooManySessions,
        Status::TooManySessions.message(),
    );
    let len = u32::try_from(out.len()).unwrap_or(0);
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&frame::encode_reply(status as u32, len));
    let _ = stream.write_all(&out);
    let uid = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
    eprintln!("khttpd: refused an application connection (uid {uid}): too many");
}

/// The engine's rules for an application's call, run with this session's hand-off, writer
/// and workers.
impl AppHost for Session {
    type Origin = Origin;

    fn with_handoff<R>(&self, f: impl FnOnce(&mut Handoff<Origin>) -> R) -> R {
        self.shared.apps.with_handoff(f)
    }

    fn taker(&self) -> u64 {
        self.id
    }

    fn deliver(&self, origin: Origin, id: RequestId, outcome: Outcome) {
        self.shared.apps.route(&*self.shared, origin, id, outcome);
    }

    fn site(&self) -> Arc<Site> {
        self.shared.snapshot()
    }

    fn change<R>(&self, f: impl FnOnce(&mut Site) -> Result<R, CtlError>) -> Result<R, CtlError> {
        self.shared.writer().change(f)
    }

    fn now(&self) -> Instant {
        self.shared.clock().now()
    }
}

/// One application connection.
struct Session {
    stream: UnixStream,
    /// Reads through a buffer: a frame's header, input and body in as few reads as may be.
    reader: io::BufReader<UnixStream>,
    shared: Arc<Shared>,
    id: u64,
    /// Who the peer is, for attach: its process and user, and the user's name.
    caller: Result<(Holder, Option<String>), io::Error>,
    /// The queues it attached to (once per attach).
    attached: Vec<u32>,
    /// The command just run was an answer the application does not wait for
    /// (`Respond::news_only`), and the news of it, if any: the request, the refusal's status,
    /// and why.
    posted: Option<Option<News>>,
    /// The requests the command just run handed over (a receive), put back if its reply
    /// cannot be written: an application killed while it waited must not take them down
    /// with it. (Its socket then fails the write; asked beforehand instead, as before, it
    /// cost a system call per receive.)
    handed: Vec<RequestId>,
}

/// News of an answer the application did not wait for: the request, the refusal's status (0:
/// accepted, but its client no longer waited), and why.
type News = (u64, Status, &'static str);

impl Session {
    /// A session on `stream`; `None` when the socket cannot be read and written apart.
    fn new(stream: UnixStream, shared: Arc<Shared>) -> Option<Self> {
        let id = shared.apps.next_session.fetch_add(1, Ordering::AcqRel);
        let caller =
            sys::peer_cred(&stream).map(|(pid, uid)| (Holder { pid, uid }, sys::user_name(uid)));
        let reader = io::BufReader::new(stream.try_clone().ok()?);
        Some(Self {
            reader,
            stream,
            shared,
            id,
            caller,
            attached: Vec::new(),
            posted: None,
            handed: Vec::new(),
        })
    }

    fn run(mut self) {
        let _ = self.serve();
        self.end();
    }

    /// Detaches everything this session attached, then abandons its requests.
    fn end(&mut self) {
        let queues = std::mem::take(&mut self.attached);
        let orphaned = self.detach_from(&queues).unwrap_or_default();
        self.shared
            .apps
            .session_ended(&*self.shared, self.id, &orphaned);
    }

    /// Detaches this session from `queues` (one site change, published); returns those left
    /// with no application, whose waiting requests the caller abandons.
    fn detach_from(&self, queues: &[u32]) -> Result<Vec<u32>, CtlError> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let holder = self.caller.as_ref().map_err(|_| CtlError::NotFound)?.0;
        self.shared
            .writer()
            .change(|next| next.detach_queues(queues, holder))
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        // Set once (not around every frame: two system calls per request under load).
        self.stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
        self.stream.set_read_timeout(Some(FRAME_TIMEOUT))?;
        loop {
            if !self.next_frame()? {
                return Ok(());
            }
            let mut header = [0u8; frame::REQUEST_LEN];
            match self.reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            out.clear();
            let Some(f) = RequestFrame::decode(&header) else {
                let _ = error_reply(&mut out, "malformed frame");
                return self.reply(Status::Malformed, &out);
            };
            if let Err((status, why)) = self.admissible(&f) {
                let _ = error_reply(&mut out, why);
                return self.reply(status, &out);
            }
            // Read as it arrives: memory follows the bytes sent, not the lengths announced.
            let input = read_up_to(&mut self.reader, f.input_len)?;
            let direct = read_up_to(&mut self.reader, f.direct_len)?;
            let status = self.command(&f, &input, direct, &mut out);
            if let Some(news) = self.posted.take() {
                // An answer whose outcome the application does not wait for: a reply only
                // when there is news, ahead of the reply to its next call.
                if let Some((id, status, message)) = news {
                    out.clear();
                    let delivered = false;
                    let row = NewsRow {
                        id,
                        status: status as u32,
                        delivered,
                        message,
                    };
                    if write_rows(&mut out, [row]).is_ok() {
                        self.reply(Status::News, &out)?;
                    }
                }
                continue;
            }
            if status == Status::Ok && out.is_empty() {
                // The peer went while a receive waited.
                return Ok(());
            }
            let sent = self.reply(status, &out);
            if sent.is_err() {
                let apps = &self.shared.apps;
                for id in self.handed.drain(..).rev() {
                    apps.requeue(&*self.shared, self.id, id.0);
                }
            }
            self.handed.clear();
            sent?;
        }
    }

    /// Waits for the first byte of the next frame; false at the end of the stream. Between
    /// frames, an application attached to a queue may wait as long as it likes (it holds a
    /// handle); one attached to nothing is given [`FRAME_TIMEOUT`]. Nothing is consumed, so a
    /// timeout here loses no byte.
    fn next_frame(&mut self) -> io::Result<bool> {
        while self.reader.buffer().is_empty() {
            match self.reader.fill_buf() {
                Ok(b) => return Ok(!b.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) && !self.attached.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether a frame may be read at all, from its header alone, before any of it is read
    /// into memory (issue #21, finding 6: a 64 MiB buffer was allocated for any frame that
    /// announced one, attached or not). Its input is at most `frame::MAX_INPUT` (the header's
    /// decoding says so); only an answer and a piece carry direct bytes, at most 64 MiB
    /// (larger bodies are streamed), and only from an application attached to a queue.
    fn admissible(&self, f: &RequestFrame) -> Result<(), (Status, &'static str)> {
        if f.direct_len == 0 {
            return Ok(());
        }
        if f.direct_len as usize > khttp_proto::MAX_BYTES {
            return Err((
                Status::EntryTooLarge,
                "an answer or piece is at most 64 MiB",
            ));
        }
        let answers = matches!(
            Command::from_code(f.code),
            Some(Command::QueueRespond | Command::QueueSend)
        );
        if !answers {
            return Err((Status::Malformed, "only an answer carries a body"));
        }
        if self.attached.is_empty() {
            return Err((
                Status::NotFound,
                "no request to answer: attach to a queue first",
            ));
        }
        Ok(())
    }

    fn reply(&mut self, status: Status, out: &[u8]) -> io::Result<()> {
        let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(frame::REPLY_LEN + out.len());
        frame.extend_from_slice(&frame::encode_reply(status as u32, len));
        frame.extend_from_slice(out);
        self.stream.write_all(&frame)
    }

    /// One command; the reply goes to `out`.
    fn command(
        &mut self,
        f: &RequestFrame,
        input: &[u8],
        direct: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Status {
        let call = match apps::command(f.code) {
            Ok(command) => apps::decode(command, input, direct.len()),
            Err(status) => return refuse(out, status, status.message()),
        };
        let call = match call {
            Ok(call) => call,
            Err(e) => return refuse(out, e.status(), e.message()),
        };
        let result = match call {
            AppCall::Attach { name, prefixes } => self.attach(name, &prefixes, out),
            AppCall::Receive(room) => self.receive(room, out),
            AppCall::ReceiveBody { id, offset } => self.shared.apps.body(self.id, id, offset, out),
            AppCall::Respond(r) => {
                let outcome = apps::respond(&*self, &r, direct);
                if r.news_only {
                    self.posted = Some(match outcome {
                        Ok(row) if row.delivered => None,
                        Ok(_) => Some((r.id, Status::Ok, "")),
                        Err(e) => Some((r.id, Status::from(e), e.message())),
                    });
                    return Status::Ok;
                }
                outcome.and_then(|row| write_rows(out, [row]).map_err(|_| CtlError::OutOfMemory))
            }
            AppCall::Stream(r) => self.stream_head(&r, direct, out),
            AppCall::Send { id, last } => {
                let piece = Outcome::Piece {
                    body: Arc::new(direct),
                    last,
                };
                self.stream_piece(id.0, piece, last, out)
            }
            AppCall::Cancel { id } => {
                apps::cancel(&*self, id, Outcome::Abandoned);
                Ok(())
            }
            AppCall::Detach { queue } => self.detach(queue),
        };
        match result {
            Ok(()) => {
                if out.is_empty() {
                    let _ = khttp_proto::reply::empty_reply(out);
                }
                Status::Ok
            }
            Err(e) => refuse(out, Status::from(e), e.message()),
        }
    }

    /// A streamed answer's head and first piece; the rest comes with `QueueSend`. Never cached.
    fn stream_head(
        &self,
        r: &Respond<'_>,
        body: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), CtlError> {
        match AppResponse::new(r.status, r.content_type, &r.headers, Arc::new(body)) {
            Ok(resp) => {
                let length = r.stream.and_then(|s| s.length);
                let head = Outcome::Response(resp.streamed(length));
                self.stream_piece(r.id, head, false, out)
            }
            Err(e) => {
                // The client is not left waiting: 502, and the application hears why.
                apps::cancel(self, RequestId(r.id), Outcome::Invalid);
                Err(e)
            }
        }
    }

    /// Hands a streamed answer's head or piece to its connection and waits for the
    /// connection's word; the reply says whether it took it.
    fn stream_piece(
        &self,
        id: u64,
        outcome: Outcome,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CtlError> {
        let gone = || sys::peer_closed(&self.stream);
        let apps = &self.shared.apps;
        let delivered = apps.stream(&*self.shared, self.id, id, outcome, last, &gone);
        let row = RespondRow {
            delivered,
            cached: false,
        };
        write_rows(out, [row]).map_err(|_| CtlError::OutOfMemory)
    }

    fn attach(&mut self, name: &str, prefixes: &[&str], out: &mut Vec<u8>) -> Result<(), CtlError> {
        if self.attached.len() >= MAX_ATTACHES {
            return Err(CtlError::TooManySessions);
        }
        let (holder, user) = self.caller.as_ref().map_err(|_| CtlError::NotGranted)?;
        let (holder, uid) = (*holder, holder.uid);
        let caller = if uid == 0 || uid == sys::euid() {
            Caller::Administrator
        } else {
            Caller::User(user.as_deref().ok_or(CtlError::NotGranted)?)
        };
        let attached = self
            .shared
            .writer()
            .change(|next| attach(next, caller, holder, name, prefixes));
        let queue = match attached {
            Ok(q) => q,
            Err(e) => {
                eprintln!(
                    "khttpd: refused an application attach (uid {uid}) to {name} for {}: {}",
                    prefixes.join(" "),
                    e.message()
                );
                return Err(e);
            }
        };
        self.attached.push(queue);
        write_rows(out, [AttachRow { queue }]).map_err(|_| CtlError::OutOfMemory)
    }

    fn detach(&mut self, queue: u32) -> Result<(), CtlError> {
        let i = self
            .attached
            .iter()
            .position(|q| *q == queue)
            .ok_or(CtlError::NotFound)?;
        self.attached.remove(i);
        let orphaned = self.detach_from(&[queue])?;
        self.shared
            .apps
            .session_ended(&*self.shared, u64::MAX, &orphaned);
        Ok(())
    }

    /// Waits for requests of `room.queue` (the engine's batch rule decides how many); an empty
    /// `out` means the peer went meanwhile.
    fn receive(&mut self, room: Room, out: &mut Vec<u8>) -> Result<(), CtlError> {
        if !self.attached.contains(&room.queue) {
            return Err(CtlError::NotFound);
        }
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Ok(());
            }
            let apps = &self.shared.apps;
            let wait = Duration::from_millis(250);
            let ids = apps.receive(&*self.shared, self.id, room, wait, out);
            if ids.is_empty() {
                // Nothing came: has the application gone meanwhile?
                if self.peer_gone() {
                    return Ok(());
                }
                continue;
            }
            // Put back by `serve` if the reply cannot be written.
            self.handed = ids;
            return Ok(());
        }
    }

    /// Whether the application closed its end (checked while a receive waits; a request it
    /// sent meanwhile is in the reader's buffer, not the socket, and keeps it alive).
    fn peer_gone(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        sys::peer_closed(&self.stream)
    }
}
