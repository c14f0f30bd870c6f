//! The host's system calls that std does not wrap. The only unsafe code in khttpd lives here.

use std::io;
use std::os::fd::AsRawFd;

/// The peer's user id on a connected Unix socket (`SO_PEERCRED`).
///
/// # Errors
/// The `getsockopt` error.
pub(crate) fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>()).unwrap_or(0);
    let rc;
    // SAFETY: 1. `sock` is an open socket for the duration of the call (it is borrowed);
    // 2. `cred` is a writable `ucred` and `len` holds its exact size, as SO_PEERCRED requires;
    // 3. both pointers are valid for the call only and not retained by the kernel.
    unsafe {
        rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        );
    }
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective user id.
#[must_use]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
