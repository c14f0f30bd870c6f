//! Where khttpd's control socket is when `--control` is not given, which is also where
//! khttpctl looks first (DESIGN §7): `/run/khttp/control.sock` for root, otherwise a per-user
//! socket, `$XDG_RUNTIME_DIR/khttp/control.sock` or `/tmp/khttp-UID/control.sock`.

#![cfg(unix)]

use std::path::PathBuf;

/// The system-wide control socket (DESIGN §7).
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
