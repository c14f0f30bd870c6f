//! The host's system calls that std does not wrap. The only unsafe code in khttpd lives here.

use std::io;
use std::os::fd::AsRawFd;

/// Puts the calling thread under `SCHED_BATCH` (sched(7)): a thread it wakes runs when the
/// CPU is free, instead of preempting it. For the threads that relay requests to
/// applications: a worker then finishes its round of connections before the relay runs, and
/// the relay carries what came in that round at once (measured with `bench/apps.sh`: 13%
/// less CPU per request, and a lower median latency, with server and application sharing one
/// CPU). Its priority is otherwise the same; a failure leaves the thread as it was.
pub(crate) fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 1. pid 0 names the calling thread, which exists for the call; 2. `param` is a
    // valid `sched_param` with the priority 0 that SCHED_BATCH requires, read during the call
    // only.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
}

/// The peer's user id on a connected Unix socket (`SO_PEERCRED`).
///
/// # Errors
/// The `getsockopt` error.
pub(crate) fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    peer_cred(sock).map(|(_, uid)| uid)
}

/// The peer's process and user ids on a connected Unix socket (`SO_PEERCRED`).
///
/// # Errors
/// The `getsockopt` error.
pub(crate) fn peer_cred(sock: &impl AsRawFd) -> io::Result<(u32, u32)> {
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
    Ok((u32::try_from(cred.pid).unwrap_or(0), cred.uid))
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

/// The login name of `uid`, from the password database (`getpwuid_r`); `None` when it has
/// none.
#[must_use]
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `passwd` is plain data; all-zero is a valid value for getpwuid_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc;
    // SAFETY: 1. `pwd`, `buf` and `result` are valid for writes, and `buf.len()` is its exact
    // size; 2. getpwuid_r stores pointers into `buf` only, which outlives their use below.
    unsafe {
        rc = libc::getpwuid_r(
            uid,
            &raw mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &raw mut result,
        );
    }
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`, alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_owned)
}

/// Whether the peer of a connected socket has closed its end (`recv` with `MSG_PEEK` and
/// `MSG_DONTWAIT` reads 0 bytes, or fails other than "would block").
#[must_use]
pub(crate) fn peer_closed(sock: &impl AsRawFd) -> bool {
    let mut b = [0u8; 1];
    let n;
    // SAFETY: `sock` is open for the call (borrowed); `b` is a writable one-byte buffer; the
    // flags neither block nor consume data.
    unsafe {
        n = libc::recv(
            sock.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        );
    }
    if n == 0 {
        return true;
    }
    n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}

/// Asks the allocator to give its free memory back to the system (glibc's `malloc_trim(0)`:
/// free pages at the top of the heap and inside every arena); a no-op on other C libraries.
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// khttpd's global allocator: the system's, with a cushion for the calls into rustls
/// ([`khttp_engine::tls::Cushion`]). rustls allocates infallibly, so an allocation the system
/// refuses inside it would abort khttpd. Each worker thread sets
/// [`khttp_engine::tls::CUSHION`] bytes aside; when the system refuses an allocation while the
/// thread is inside a call into rustls, the allocator frees that memory and asks once more,
/// and the engine ends the session whose call it was. On Linux `malloc` returns null under an
/// address-space or data limit (`RLIMIT_AS`, `RLIMIT_DATA`) or strict overcommit
/// (`vm.overcommit_memory=2`), which is what freeing the cushion relieves: the retry is served
/// from the freed block or the room it leaves. Outside those calls a refused allocation
/// aborts, as std's does.
pub(crate) struct Cushioned;

/// The set-aside block's layout.
const CUSHION_LAYOUT: std::alloc::Layout =
    match std::alloc::Layout::from_size_align(khttp_engine::tls::CUSHION, 16) {
        Ok(l) => l,
        Err(_) => panic!("the cushion's size is a valid layout"),
    };

std::thread_local! {
    /// The thread is inside a call into rustls.
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The cushion was given back during the current call.
    static SPENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The thread's set-aside block, or null when it has none. Threads that call into rustls
    /// (the workers) live as long as the process, so the block is not freed at thread exit.
    static RESERVE: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Inside a call into rustls, with the cushion set aside: gives it back to the system and says
/// so. These thread-locals have no destructor and a constant initializer, so reading them
/// allocates nothing (the allocator may not reenter itself).
fn give_back() -> bool {
    if !INSIDE.try_with(std::cell::Cell::get).unwrap_or(false) {
        return false;
    }
    let block = RESERVE
        .try_with(|r| r.replace(std::ptr::null_mut()))
        .unwrap_or(std::ptr::null_mut());
    if block.is_null() {
        return false;
    }
    let _ = SPENT.try_with(|s| s.set(true));
    // SAFETY: 1. `block` was returned by `System.alloc(CUSHION_LAYOUT)` in `Cushioned::enter`
    // on this thread; 2. it was taken out of `RESERVE` just above, so it is freed once only and
    // nothing else points into it (it was never handed out).
    unsafe { std::alloc::System.dealloc(block, CUSHION_LAYOUT) };
    true
}

use std::alloc::GlobalAlloc as _;

// SAFETY: every method forwards to `System` with the caller's own arguments (once more after
// `give_back`, which frees only the cushion's own block), or returns what `System` returned,
// null included, which `GlobalAlloc` permits to signal failure.
unsafe impl std::alloc::GlobalAlloc for Cushioned {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: `layout` comes from the caller, who upholds `GlobalAlloc::alloc`'s contract
        // (a non-zero size).
        let p = unsafe { std::alloc::System.alloc(layout) };
        if p.is_null() && give_back() {
            // SAFETY: as above, the same layout.
            return unsafe { std::alloc::System.alloc(layout) };
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if p.is_null() && give_back() {
            // SAFETY: as in `alloc`.
            return unsafe { std::alloc::System.alloc_zeroed(layout) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `System` (every pointer this allocator hands out is
        // `System`'s) with `layout`, as the caller guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` and `layout` come from an earlier `System` allocation and `new_size`
        // is valid, as the caller guarantees; on failure `ptr` is left as it was.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if p.is_null() && give_back() {
            // SAFETY: as above: the first attempt failed, so `ptr` is still valid.
            return unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        }
        p
    }
}

impl khttp_engine::tls::Cushion for Cushioned {
    fn enter(&self) -> bool {
        let has = RESERVE.try_with(|r| !r.get().is_null()).unwrap_or(false);
        if !has {
            // SAFETY: `CUSHION_LAYOUT` has a non-zero size.
            let block = unsafe { std::alloc::System.alloc(CUSHION_LAYOUT) };
            if block.is_null() || RESERVE.try_with(|r| r.set(block)).is_err() {
                if !block.is_null() {
                    // SAFETY: `block` was just allocated with this layout and stored nowhere.
                    unsafe { std::alloc::System.dealloc(block, CUSHION_LAYOUT) };
                }
                return false;
            }
        }
        let _ = SPENT.try_with(|s| s.set(false));
        INSIDE.try_with(|i| i.set(true)).is_ok()
    }

    fn leave(&self) -> bool {
        let _ = INSIDE.try_with(|i| i.set(false));
        SPENT.try_with(|s| s.replace(false)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use khttp_engine::tls::Cushion;

    use super::{Cushioned, RESERVE};

    /// An allocation the system refuses inside a call into rustls spends the cushion (the
    /// allocator gives it back and asks again), the call is told so, and the next call sets a
    /// new one aside; outside a call the cushion is kept.
    #[test]
    fn a_refused_allocation_spends_the_cushion() {
        let huge = std::alloc::Layout::from_size_align(1 << 62, 1).unwrap();
        assert!(Cushioned.enter());
        let first = RESERVE.with(std::cell::Cell::get);
        assert!(!first.is_null());
        // SAFETY: a valid, non-zero layout; the result is only compared with null.
        let p = unsafe { std::alloc::alloc(huge) };
        assert!(p.is_null(), "no system gives 4 EiB");
        assert!(Cushioned.leave(), "the call is told the cushion was spent");
        assert!(RESERVE.with(std::cell::Cell::get).is_null());
        assert!(Cushioned.enter(), "a new cushion is set aside");
        assert!(!RESERVE.with(std::cell::Cell::get).is_null());
        assert!(!Cushioned.leave(), "nothing refused, nothing spent");
        // SAFETY: as above.
        let p = unsafe { std::alloc::alloc(huge) };
        assert!(p.is_null());
        assert!(
            !RESERVE.with(std::cell::Cell::get).is_null(),
            "outside a call the cushion is kept"
        );
    }
}
