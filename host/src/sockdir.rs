//! The directory khttpd's sockets live in (issue #21): made by khttpd when it is missing, and
//! refused when another user could have prepared it.
//!
//! A missing directory is made mode 0700, or 0755 when khttpd runs as root: root's sockets live
//! in `/run/khttp`, where every local user's applications must reach `app.sock` (the control
//! socket in it stays 0600). An existing one must be
//! - a directory itself, not a symbolic link, even to a good directory (lstat, not stat);
//! - owned by khttpd's effective user or by root;
//! - writable by neither group nor others, unless it is sticky (`/tmp`, for an explicit
//!   `--control /tmp/x.sock`: there no one can remove or rename another's socket).
//!
//! In a directory another user owns or may write, that user could have bound its own socket
//! under the name first, or swap khttpd's for its own afterwards, and receive what khttpctl
//! and applications send (`khttpctl cache put`'s files, requests to answer). Otherwise khttpd
//! stops with one line naming the directory and what is wrong with it. The clients' half of
//! the rule is `khttp_local::socket::check_server`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::sys;

/// Makes the directory of the socket at `path` if it is missing, and checks it (module
/// documentation).
///
/// # Errors
/// One line of English naming the directory.
pub(crate) fn prepare(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let euid = sys::euid();
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(format!("cannot examine {}: {e}", dir.display()));
        }
        make(dir, if euid == 0 { 0o755 } else { 0o700 })?;
    }
    check(dir, euid)
}

/// Makes `dir` (and its missing parents) with `mode`. One that appears meanwhile is left as it
/// is, for [`check`] to judge: `mkdir` does not follow a symbolic link.
fn make(dir: &Path, mode: u32) -> Result<(), String> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        // The umask may have taken bits away: root's must stay reachable by everyone.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// Whether khttpd (effective user `euid`) may put its sockets in `dir` (module documentation).
fn check(dir: &Path, euid: u32) -> Result<(), String> {
    let name = dir.display();
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot examine {name}: {e}"))?;
    let refusing = "refusing to put khttpd's sockets in it";
    if m.file_type().is_symlink() {
        return Err(format!("{name} is a symbolic link: {refusing}"));
    }
    if !m.is_dir() {
        return Err(format!("{name} is not a directory: {refusing}"));
    }
    if m.uid() != euid && m.uid() != 0 {
        return Err(format!(
            "{name} is owned by uid {}, not by khttpd's user (uid {euid}) or root: {refusing}",
            m.uid()
        ));
    }
    let sticky = m.mode() & 0o1000 != 0;
    let who = match (m.mode() & 0o020 != 0, m.mode() & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return Ok(()),
    };
    if sticky {
        return Ok(());
    }
    Err(format!(
        "{name} is writable by {who} (mode {:o}): {refusing}",
        m.mode() & 0o7777
    ))
}
