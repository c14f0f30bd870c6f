//! The control endpoint: a Unix socket (mode 0600) speaking `khttp_proto::frame`, refusing peers
//! whose uid is neither root nor khttpd's own (`SO_PEERCRED`), the role the driver's SDDL plays.
//! Its directory is one no other user could have prepared ([`sockdir`]). Connections are
//! served concurrently, a thread each, at most [`MAX_SESSIONS`] at once, so that a client that
//! stalls half-way through a request holds up no other (issue #21); the requests themselves go
//! one at a time through the engine's one dispatcher, under the writer lock. Configuration
//! changes are persisted before they are published, so an acknowledged reservation survives
//! `kill -9`.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use khttp_engine::ctl::Call;
use khttp_proto::frame::{self, RequestFrame};
use khttp_proto::{Command, Status, error_reply};

use crate::shared::Shared;
use crate::{sockdir, sys};

/// Binds the control socket at `path` with mode 0600, in a directory that no other user could
/// have prepared (made if missing: [`sockdir`]).
///
/// # Errors
/// One line of English.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, String> {
    sockdir::prepare(path)?;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use: another khttpd is running",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// The most control connections served at once. Past it, a connection is refused at once
/// with one line ([`busy`]) rather than left waiting for a slot: waiting is what issue #21
/// (finding 11) found, a client held up for as long as the clients before it stall (30 s
/// each); a refusal tells the administrator now, and a script can try again. Only root and
/// khttpd's own user can open the socket (0600), so the bound guards khttpd against a runaway
/// script of theirs, not against strangers; khttpctl holds one connection for its command.
pub(crate) const MAX_SESSIONS: usize = 16;

/// Serves control connections until shutdown, each on a thread of its own (at most
/// [`MAX_SESSIONS`] at once), so that a client that stalls holds up no other. Each has 30 s
/// read and write time-outs; requests run one at a time under the writer lock ([`apply`]).
/// A peer that is neither root nor khttpd's user is refused before anything is read from it.
pub(crate) fn serve(listener: &UnixListener, shared: &Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        if !sys::peer_uid(&stream).is_ok_and(|uid| uid == 0 || uid == sys::euid()) {
            let _ = denied(&mut stream);
            continue;
        }
        // Only this thread adds; sessions only take away.
        if open.load(Ordering::Acquire) >= MAX_SESSIONS {
            let _ = busy(&mut stream);
            continue;
        }
        let slot = Slot::take(&open);
        let shared = Arc::clone(shared);
        // A thread that cannot start drops the connection and its slot.
        let _ = std::thread::Builder::new()
            .name("khttpd-control".into())
            .spawn(move || {
                let _slot = slot;
                let _ = session(&mut stream, &shared);
            });
    }
}

/// One of the [`MAX_SESSIONS`] slots, given back when the session ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(open))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The reply to a peer that may not administer khttpd, sent before reading its request.
fn denied(stream: &mut UnixStream) -> io::Result<()> {
    let mut out = Vec::new();
    let _ = error_reply(
        &mut out,
        "permission denied: only root and khttpd's own user may administer it",
    );
    reply(stream, Status::AccessDenied, &out)
}

/// The reply to a connection past [`MAX_SESSIONS`], sent before reading its request.
fn busy(stream: &mut UnixStream) -> io::Result<()> {
    let mut out = Vec::new();
    let _ = error_reply(
        &mut out,
        &format!(
            "khttpd is busy: it already serves {MAX_SESSIONS} control connections, its most at \
             once; try again when one ends"
        ),
    );
    reply(stream, Status::TooManySessions, &out)
}

fn reply(stream: &mut UnixStream, status: Status, out: &[u8]) -> io::Result<()> {
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    stream.write_all(&frame::encode_reply(status as u32, len))?;
    stream.write_all(out)
}

/// Handles the requests of one connection until it closes.
fn session(stream: &mut UnixStream, shared: &Shared) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; frame::REQUEST_LEN];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let Some(f) = RequestFrame::decode(&header) else {
            out.clear();
            let _ = error_reply(&mut out, "malformed control frame");
            return reply(stream, Status::Malformed, &out);
        };
        let mut input = vec![0u8; f.input_len as usize];
        stream.read_exact(&mut input)?;
        // Refuse a body over the entry limit before allocating for it.
        let max_direct = shared.snapshot().limits().cache_max_entry_bytes;
        if u64::from(f.direct_len) > max_direct {
            out.clear();
            let _ = error_reply(&mut out, "the entry is larger than cache-max-entry-bytes");
            return reply(stream, Status::EntryTooLarge, &out);
        }
        let mut direct = Vec::new();
        if direct.try_reserve_exact(f.direct_len as usize).is_err() {
            out.clear();
            let _ = error_reply(&mut out, "out of memory");
            return reply(stream, Status::OutOfMemory, &out);
        }
        direct.resize(f.direct_len as usize, 0);
        stream.read_exact(&mut direct)?;
        let status = apply(shared, &f, &input, &direct, &mut out);
        if Command::from_code(f.code) == Some(Command::SslcertAdd) {
            // It carried a private key.
            khttp_local::files::wipe(input);
        }
        reply(stream, status, &out)?;
    }
}

/// One control request: the engine's write, under the writer lock.
fn apply(
    shared: &Shared,
    f: &RequestFrame,
    input: &[u8],
    direct: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    let mut writer = shared.writer();
    let now = shared.clock().now();
    let call = Call {
        code: f.code,
        input,
        direct,
        output_cap: f.output_cap as usize,
    };
    writer.commit(&call, now, out)
}

/// khttpd calling itself (`--config`): the same writes as the control socket's, in process.
pub(crate) struct InProcess<'a>(pub(crate) &'a Shared);

impl khttp_local::admin::Control for InProcess<'_> {
    fn call(&mut self, req: &khttp_proto::Request<'_>, direct: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = Vec::new();
        let code = khttp_proto::encode_request(req, &mut input);
        let f = RequestFrame {
            code,
            input_len: u32::try_from(input.len()).map_err(|_| "request too large")?,
            direct_len: u32::try_from(direct.len()).map_err(|_| "request too large")?,
            output_cap: u32::MAX,
        };
        let mut out = Vec::new();
        match apply(self.0, &f, &input, direct, &mut out) {
            Status::Ok => Ok(out),
            status => Err(khttp_local::admin::refusal(status, &out)),
        }
    }
}

/// Every few seconds, drops expired cache entries.
///
/// And gives memory back to the system once a crowd has gone (issue #21, finding 4: after a
/// flood of unfinished bodies closed, khttpd kept 1.58 GB): when the open connections or the
/// request bodies held have fallen by much since the last look, the allocator is asked to
/// return its free pages (`sys::trim_heap`).
pub(crate) fn janitor(shared: &Shared) {
    /// A fall worth a trim: a thousand connections, or 4 MiB of bodies.
    const FALL: (usize, u64) = (1000, 4 << 20);
    let mut last = (0usize, 0u64);
    while !shared.shutdown.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_secs(2));
        let now = shared.clock().now();
        if shared.snapshot().next_expiry().is_some_and(|at| at <= now) {
            shared.writer().purge(now);
        }
        let open = shared.connections.load(Ordering::Acquire);
        let held = shared
            .snapshot()
            .stats()
            .body_bytes_held
            .load(Ordering::Acquire);
        if last.0.saturating_sub(open) >= FALL.0 || last.1.saturating_sub(held) >= FALL.1 {
            sys::trim_heap();
            last = (open, held);
        } else {
            last = (last.0.max(open), last.1.max(held));
        }
    }
}
