//! Where khttpd's control socket is when `--control` is not given, which is also where
//! khttpctl looks first (docs/operating.md, "A tour of khttpctl"): `/run/khttp/control.sock` for
//! root, otherwise a per-user socket, `$XDG_RUNTIME_DIR/khttp/control.sock` or
//! `/tmp/khttp-UID/control.sock`. The application socket is `app.sock` beside it. [`call`] makes
//! one call over either.
//!
//! A client trusts a socket only once it knows who serves it ([`check_server`], issue #21):
//! anyone may make `/tmp/khttp-UID` before its user does and listen there, and what khttpctl
//! sends (`cache put`'s files) or an application receives (requests to answer) would be that
//! user's. The server's uid (`SO_PEERCRED`), read right after connecting and before a byte is
//! sent, must be root's, this process's user's, or that of the owner of a directory root made
//! for the sockets: the socket's directory owned by the server's user, neither a symbolic link
//! nor writable by group or others, in a directory of root's that no one else may write (the
//! package's `/run/khttp`, which systemd makes for the service's dynamic user). A directory in
//! `/tmp`, which anyone may write, never vouches for its owner. Otherwise the connection is
//! dropped with [`UntrustedServer`]. khttpd's half of the rule is its own directory check.

#![cfg(unix)]

use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use khttp_proto::frame::{self, RequestFrame};

use crate::endpoint::{Endpoint, UntrustedServer};

/// The system-wide control socket.
pub const SYSTEM_SOCKET: &str = "/run/khttp/control.sock";

/// The effective user id, without unsafe code: the owner of `/proc/self`.
#[must_use]
pub fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The per-user control socket an unprivileged khttpd uses.
#[must_use]
pub fn user_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("khttp/control.sock"),
        None => PathBuf::from(format!(
            "/tmp/khttp-{}/control.sock",
            current_uid().unwrap_or(0)
        )),
    }
}

/// The control socket khttpd creates when `--control` is not given.
#[must_use]
pub fn default_server_socket() -> PathBuf {
    if current_uid() == Some(0) {
        PathBuf::from(SYSTEM_SOCKET)
    } else {
        user_socket()
    }
}

/// The application socket khttpd creates when `--app-socket` is not given: `app.sock` beside
/// the control socket.
#[must_use]
pub fn default_app_socket() -> PathBuf {
    default_server_socket().with_file_name("app.sock")
}

/// The user serving the socket `stream` is connected to (`SO_PEERCRED`).
///
/// # Errors
/// The `getsockopt` error; `Unsupported` where the system does not say (not Linux).
pub fn server_uid(stream: &UnixStream) -> io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::net::sockopt::socket_peercred(stream)
            .map(|cred| cred.uid.as_raw())
            .map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = stream;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this system does not tell who serves a Unix socket",
        ))
    }
}

/// Whether this process may use the socket at `path` served by user `uid` (module
/// documentation): root, this process's user, or the owner of a directory root made for it.
#[must_use]
pub fn trusted_server(uid: u32, path: &Path) -> bool {
    uid == 0 || current_uid() == Some(uid) || made_by_root_for(uid, path)
}

/// Whether the directory of `path` is `uid`'s, not a symbolic link, writable by no one else,
/// and in a directory of root's that no one else may write: then only root could have put it
/// there for `uid`.
fn made_by_root_for(uid: u32, path: &Path) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let own = std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0);
    own && std::fs::canonicalize(dir).is_ok_and(|real| {
        real.parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|p| p.uid() == 0 && p.mode() & 0o022 == 0)
    })
}

/// Checks who serves the socket at `path` that `stream` has just connected to, before anything
/// is sent on it (module documentation).
///
/// # Errors
/// `PermissionDenied` carrying an [`UntrustedServer`], whose message is the one line to print.
pub fn check_server(stream: &UnixStream, path: &Path) -> io::Result<()> {
    match server_uid(stream) {
        Ok(uid) if trusted_server(uid, path) => Ok(()),
        server => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            UntrustedServer {
                endpoint: Endpoint::Unix(path.to_owned()),
                uid: server.ok(),
            },
        )),
    }
}

/// One call over a khttpd socket (`khttp_proto::frame`): the control code, the input and
/// direct buffers, and the most reply bytes accepted; returns the status and the reply.
///
/// # Errors
/// The socket's errors; `InvalidInput` for buffers the frame cannot describe; `InvalidData`
/// for a reply larger than asked for.
pub fn call(
    stream: &mut BufReader<UnixStream>,
    code: u32,
    input: &[u8],
    direct: &[u8],
    output_cap: u32,
) -> io::Result<(u32, Vec<u8>)> {
    let sent = send_frame(stream.get_mut(), code, input, direct, output_cap)?;
    // khttpd may refuse a request before reading all of it (a body over the entry limit) and
    // close; its reply is then already waiting, so read it before reporting the write error.
    match sent {
        Err(write_error) => read_reply(stream, output_cap).map_err(|_| write_error),
        Ok(()) => read_reply(stream, output_cap),
    }
}

/// Reads the next reply frame: the status and the reply (at most `output_cap` bytes). Read
/// through a buffer: a small reply comes in one system call, not two, and what follows it
/// (the next reply, or news) stays in the buffer.
///
/// # Errors
/// The socket's errors; `InvalidData` for a reply larger than asked for.
pub fn read_reply(
    stream: &mut BufReader<UnixStream>,
    output_cap: u32,
) -> io::Result<(u32, Vec<u8>)> {
    let mut reply = [0u8; frame::REPLY_LEN];
    stream.read_exact(&mut reply)?;
    let (status, len) = frame::decode_reply(&reply);
    if len > output_cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply larger than asked for",
        ));
    }
    let mut out = vec![0u8; len as usize];
    stream.read_exact(&mut out)?;
    Ok((status, out))
}

/// Sends one request frame for which no reply comes (an application's answer with
/// `news_only`: only news, read ahead of a later call's reply with [`read_reply`]).
///
/// # Errors
/// The request is too large for the protocol, or the socket broke.
pub fn post(
    stream: &mut BufReader<UnixStream>,
    code: u32,
    input: &[u8],
    direct: &[u8],
) -> io::Result<()> {
    send_frame(stream.get_mut(), code, input, direct, 0)?
}

/// Writes one request frame: `Err` for a request too large to frame, `Ok(Err)` when the
/// socket write failed.
fn send_frame(
    stream: &mut UnixStream,
    code: u32,
    input: &[u8],
    direct: &[u8],
    output_cap: u32,
) -> io::Result<io::Result<()>> {
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "request too large for the control protocol",
        )
    };
    let header = RequestFrame {
        code,
        input_len: u32::try_from(input.len()).map_err(|_| too_big())?,
        direct_len: u32::try_from(direct.len()).map_err(|_| too_big())?,
        output_cap,
    };
    // One write for the frame (two for a large direct buffer, which is not copied).
    let mut first = Vec::with_capacity(frame::REQUEST_LEN + input.len());
    first.extend_from_slice(&header.encode());
    first.extend_from_slice(input);
    let small = direct.len() <= 64 * 1024;
    if small {
        first.extend_from_slice(direct);
    }
    Ok(stream.write_all(&first).and_then(|()| {
        if small {
            Ok(())
        } else {
            stream.write_all(direct)
        }
    }))
}
