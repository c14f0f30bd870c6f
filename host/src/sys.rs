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

/// A sealed, read-only in-memory file holding `data` (`memfd_create` + write + `F_SEAL_*`):
/// what `sendfile` can send without copying the bytes through user space again.
///
/// # Errors
/// The system call errors.
pub(crate) fn sealed_memfd(data: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let fd;
    // SAFETY: the name is a NUL-terminated C string literal; the flags are valid.
    unsafe {
        fd = libc::memfd_create(
            c"khttp-body".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(data)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    let rc;
    // SAFETY: a valid memfd created with MFD_ALLOW_SEALING; F_ADD_SEALS takes an int argument.
    unsafe {
        rc = libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals);
    }
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

/// `sendfile(2)`: up to `len` bytes of `file` from `offset` to `sock`; returns bytes sent.
///
/// # Errors
/// The system call error (`WouldBlock` when the socket buffer is full).
pub(crate) fn sendfile(
    sock: &impl AsRawFd,
    file: &impl AsRawFd,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let n;
    // SAFETY: both descriptors are open for the call (borrowed); `off` is a valid, writable off_t.
    unsafe {
        n = libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &raw mut off, len);
    }
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Bytes the kernel holds for `sock` that the peer has not acknowledged (`SIOCOUTQ`, which
/// counts a queued FIN too): zero once everything sent has been delivered.
///
/// # Errors
/// The `ioctl` error.
pub(crate) fn unsent_bytes(sock: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    let rc;
    // SAFETY: `sock` is an open socket for the call (borrowed); SIOCOUTQ (TIOCOUTQ) writes one
    // `int` through the pointer, which is valid and writable for the call only.
    unsafe {
        rc = libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &raw mut n);
    }
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}
