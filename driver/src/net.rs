//! Winsock Kernel: registration, one listening socket per address and port that the site names,
//! and connections driven by the engine (DRIVER-NOTES §4.2–4.6).
//!
//! Connections use the pull model: exactly one `WskReceive` or `WskSend` in flight, with a
//! driver-owned IRP whose completion routine returns `STATUS_MORE_PROCESSING_REQUIRED`. What to
//! do next is the engine's [`next_io`]; inline completions are turned into loop iterations by the
//! engine's [`InlineGate`], so a run of them never recurses. Closing from the timer or unload
//! claims the gate with [`InlineGate::try_close`], so a socket is never closed while a thread is
//! inside a call on it.
//!
//! IRQL: setup and teardown at PASSIVE_LEVEL; accept, completions and driving at <=
//! DISPATCH_LEVEL, where nothing here waits.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use khttp_engine::Local;
use khttp_engine::limits::DRIVER_MAX_CONNECTIONS;
use khttp_engine::{Admission, Close, admit};
use khttp_engine::{Body, Transmit};
use khttp_engine::{Clock, Connection, Site};
use khttp_engine::{Completion, InlineGate, NextIo, next_io};
use khttp_wsk::imports::{
    WskCaptureProviderNPI, WskDeregister, WskRegister, WskReleaseProviderNPI,
};
use khttp_wsk::{
    AF_INET, AF_INET6, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, NPI_WSK_INTERFACE_ID, PWSK_SOCKET,
    SO_EXCLUSIVEADDRUSE, SOCK_STREAM, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOL_SOCKET, WSK_BUF,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH,
    WSK_CLIENT_NPI, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_FLAG_LISTEN_SOCKET,
    WSK_FLAG_NODELAY, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH,
    WSK_PROVIDER_NPI, WSK_REGISTRATION, WSK_SET_STATIC_EVENT_CALLBACKS, WSK_VERSION_1_0,
    WskSetOption,
};
use wdk::nt_success;
use wdk_sys::ntddk::{IoGetStackLimits, IoQueueWorkItem};
use wdk_sys::{
    _WORK_QUEUE_TYPE, NTSTATUS, PDEVICE_OBJECT, PIO_WORKITEM, PIRP, PMDL, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_MORE_PROCESSING_REQUIRED, STATUS_REQUEST_NOT_ACCEPTED,
    STATUS_SUCCESS, WORK_QUEUE_TYPE,
};

use crate::global::{clock, context_freed, global};
use crate::irp::{
    PassiveLock, SingleWork, SyncCall, TAG_CONNECTION, TAG_RECEIVE, allocate_irp,
    allocate_work_item, free_irp, free_work_item, mdl_for, mdl_free, pool_alloc, pool_free,
    prepare, result,
};

/// `DelayedWorkQueue` for `IoQueueWorkItem`.
const WORK_QUEUE_DELAYED: WORK_QUEUE_TYPE = _WORK_QUEUE_TYPE::DelayedWorkQueue;

/// Receive buffer per connection (non-paged; DRIVER-NOTES §4.5 budget).
const RX_LEN: usize = 8 * 1024;
/// How long `WskCaptureProviderNPI` may wait, in ms.
const CAPTURE_WAIT_MS: u32 = 5_000;

/// A static that holds raw pointers but is never written after initialisation.
struct Shared<T>(T);
// SAFETY: the wrapped tables are immutable after initialisation and only read by WSK.
unsafe impl<T> Sync for Shared<T> {}

static CLIENT_DISPATCH: Shared<WSK_CLIENT_DISPATCH> = Shared(WSK_CLIENT_DISPATCH {
    Version: WSK_VERSION_1_0,
    Reserved: 0,
    WskClientEvent: None,
});
static CLIENT_NPI: Shared<WSK_CLIENT_NPI> = Shared(WSK_CLIENT_NPI {
    ClientContext: ptr::null_mut(),
    Dispatch: &CLIENT_DISPATCH.0,
});
static LISTEN_DISPATCH: Shared<WSK_CLIENT_LISTEN_DISPATCH> = Shared(WSK_CLIENT_LISTEN_DISPATCH {
    WskAcceptEvent: Some(on_accept),
    WskInspectEvent: ptr::null(),
    WskAbortEvent: ptr::null(),
});

/// One listening socket. Boxed: its address is the socket context that WSK hands back to
/// [`on_accept`], which marks it dead when WSK reports that it is no longer functional.
struct Listener {
    addr: SocketAddr,
    socket: PWSK_SOCKET,
    dead: AtomicBool,
}

/// Registration, provider NPI and listeners. Touched only at PASSIVE_LEVEL, under [`WSK_LOCK`]
/// (DriverEntry, the IOCTL queue, the relisten work item, unload).
struct Wsk {
    registration: WSK_REGISTRATION,
    provider: WSK_PROVIDER_NPI,
    registered: bool,
    captured: bool,
    #[allow(
        clippy::vec_box,
        reason = "a record's address is its WSK socket context: it must not move as the vector grows"
    )]
    listeners: Vec<Box<Listener>>,
}

struct WskCell(UnsafeCell<Wsk>);
// SAFETY: only used at PASSIVE_LEVEL under WSK_LOCK (see `Wsk`).
unsafe impl Sync for WskCell {}

static WSK: WskCell = WskCell(UnsafeCell::new(Wsk {
    registration: WSK_REGISTRATION {
        ReservedRegistrationState: 0,
        ReservedRegistrationContext: ptr::null_mut(),
        ReservedRegistrationLock: 0,
    },
    provider: WSK_PROVIDER_NPI {
        Client: ptr::null_mut(),
        Dispatch: ptr::null(),
    },
    registered: false,
    captured: false,
    listeners: Vec::new(),
}));

/// Serialises every path that changes [`WSK`].
static WSK_LOCK: PassiveLock = PassiveLock::new();

/// The work item that recreates dead listeners.
static RELISTEN: SingleWork = SingleWork::new();

/// # Safety
/// PASSIVE_LEVEL, holding [`WSK_LOCK`] (or in DriverEntry before anything else can run).
unsafe fn wsk() -> &'static mut Wsk {
    // SAFETY: exclusive by the lock (caller's contract).
    unsafe { &mut *WSK.0.get() }
}

/// `WskRegister` (DriverEntry, PASSIVE_LEVEL).
///
/// # Safety
/// PASSIVE_LEVEL, once, in DriverEntry.
pub(crate) unsafe fn register() -> NTSTATUS {
    // SAFETY: PASSIVE_LEVEL, once, before any path takes the lock (DriverEntry).
    unsafe { WSK_LOCK.init() };
    if !RELISTEN.allocate() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: DriverEntry is the only caller (contract); nothing else runs yet.
    let w = unsafe { wsk() };
    // SAFETY: CLIENT_NPI and the registration are statics, valid for the driver's lifetime.
    let status = unsafe { WskRegister(&CLIENT_NPI.0, &raw mut w.registration) };
    if !nt_success(status) {
        // SAFETY: PASSIVE_LEVEL; allocated above, never queued.
        unsafe { RELISTEN.shutdown() };
    }
    w.registered = nt_success(status);
    status
}

/// Captures the provider NPI and enables accept events, once (PASSIVE_LEVEL).
unsafe fn capture(w: &mut Wsk) -> NTSTATUS {
    if w.captured {
        return STATUS_SUCCESS;
    }
    // SAFETY: registered in DriverEntry; PASSIVE_LEVEL with a finite wait.
    let status = unsafe {
        WskCaptureProviderNPI(
            &raw mut w.registration,
            CAPTURE_WAIT_MS,
            &raw mut w.provider,
        )
    };
    if !nt_success(status) {
        return status;
    }
    let mut control = WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &NPI_WSK_INTERFACE_ID,
        EventMask: WSK_EVENT_ACCEPT,
    };
    // SAFETY: the provider dispatch table is valid while the NPI is captured.
    let control_client = unsafe { (*w.provider.Dispatch).WskControlClient };
    let status = match control_client {
        // SAFETY: echosrv's call: static event callbacks, no output, no IRP (DRIVER-NOTES
        // §4.2.3).
        Some(control_client) => unsafe {
            control_client(
                w.provider.Client,
                WSK_SET_STATIC_EVENT_CALLBACKS,
                size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                (&raw mut control).cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        },
        None => STATUS_INSUFFICIENT_RESOURCES,
    };
    if nt_success(status) {
        // Captured only once the accept events are on, so that a failure here is tried again
        // by the next reconcile instead of leaving every listener deaf (issue #9, finding 8).
        w.captured = true;
    } else {
        // SAFETY: captured just above; released once.
        unsafe { WskReleaseProviderNPI(&raw mut w.registration) };
    }
    status
}

/// The socket addresses to listen on for `site`: the engine's rule, with one dual-stack IPv6
/// wildcard (echosrv's choice, DRIVER-NOTES §4.2.5).
fn wanted(site: &Site) -> Vec<SocketAddr> {
    site.listen_addrs(&[IpAddr::V6(Ipv6Addr::UNSPECIFIED)])
}

/// A Windows socket address for `addr`.
fn sockaddr(addr: SocketAddr) -> (SOCKADDR_IN6, SOCKADDR_IN) {
    let mut v6 = SOCKADDR_IN6 {
        sin6_family: AF_INET6,
        sin6_port: addr.port().to_be(),
        ..SOCKADDR_IN6::default()
    };
    let mut v4 = SOCKADDR_IN {
        sin_family: AF_INET,
        sin_port: addr.port().to_be(),
        ..SOCKADDR_IN::default()
    };
    match addr.ip() {
        IpAddr::V6(ip) => v6.sin6_addr = ip.octets(),
        IpAddr::V4(ip) => v4.sin_addr = ip.octets(),
    }
    (v6, v4)
}

/// Opens, configures and binds a listening socket (binding starts listening), synchronously.
/// `context` is the listener's record, handed back to [`on_accept`].
unsafe fn open_listener(
    w: &Wsk,
    addr: SocketAddr,
    context: *mut c_void,
) -> Result<PWSK_SOCKET, NTSTATUS> {
    // SAFETY: PASSIVE_LEVEL (caller); the IRP is freed below on every path.
    let irp = unsafe { allocate_irp() };
    if irp.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    let mut call = SyncCall::new();
    let family = if addr.is_ipv6() { AF_INET6 } else { AF_INET };
    // SAFETY: the provider NPI is captured (caller), so its dispatch table is valid.
    let Some(wsk_socket) = (unsafe { (*w.provider.Dispatch).WskSocket }) else {
        // SAFETY: not in flight.
        unsafe { free_irp(irp) };
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    };
    // SAFETY: the IRP is ours and idle.
    unsafe { call.arm(irp) };
    // SAFETY: DRIVER-NOTES §4.2.4: a listening TCP socket with our static listen dispatch.
    unsafe {
        wsk_socket(
            w.provider.Client,
            family,
            SOCK_STREAM,
            IPPROTO_TCP,
            WSK_FLAG_LISTEN_SOCKET,
            context,
            (&raw const LISTEN_DISPATCH.0).cast(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            irp.cast(),
        );
    }
    // SAFETY: PASSIVE_LEVEL; the call was made.
    let (status, info) = unsafe { call.wait(irp) };
    if !nt_success(status) {
        // SAFETY: completed, not in flight.
        unsafe { free_irp(irp) };
        return Err(status);
    }
    let socket = info as usize as PWSK_SOCKET; // Information carries the PWSK_SOCKET (§4.2.4)
    // SAFETY: a listening socket's dispatch is a WSK_PROVIDER_LISTEN_DISPATCH (§4.2).
    let dispatch = unsafe { (*socket).Dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    let mut one: u32 = 1;
    let mut zero: u32 = 0;
    let mut options: Vec<(u32, u32, *mut u32)> =
        alloc::vec![(SO_EXCLUSIVEADDRUSE, SOL_SOCKET, &raw mut one)];
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        options.push((IPV6_V6ONLY, IPPROTO_IPV6, &raw mut zero)); // dual stack, as echosrv
    }
    let mut status = STATUS_SUCCESS;
    for (code, level, value) in options {
        // SAFETY: the socket is live; its basic dispatch carries WskControlSocket.
        let Some(control) = (unsafe { (*dispatch).Basic.WskControlSocket }) else {
            break;
        };
        // SAFETY: the IRP is idle again after the previous wait.
        unsafe { call.arm(irp) };
        // SAFETY: a set-option call with a 4-byte input that outlives the synchronous wait.
        unsafe {
            control(
                socket,
                WskSetOption,
                code,
                level,
                4,
                value.cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                irp.cast(),
            );
        }
        // SAFETY: PASSIVE_LEVEL; the call was made.
        status = unsafe { call.wait(irp) }.0;
        if !nt_success(status) {
            break;
        }
    }
    if nt_success(status) {
        let (mut v6, mut v4) = sockaddr(addr);
        let sa: *mut SOCKADDR = if addr.is_ipv6() {
            (&raw mut v6).cast()
        } else {
            (&raw mut v4).cast()
        };
        // SAFETY: listen dispatch is valid for this socket.
        if let Some(bind) = unsafe { (*dispatch).WskBind } {
            // SAFETY: the IRP is idle; `sa` outlives the synchronous wait.
            unsafe { call.arm(irp) };
            // SAFETY: WskBind on a listening socket starts listening (§4.2.6).
            unsafe { bind(socket, sa, 0, irp.cast()) };
            // SAFETY: PASSIVE_LEVEL; the call was made.
            status = unsafe { call.wait(irp) }.0;
        }
    }
    // SAFETY: completed, not in flight.
    unsafe { free_irp(irp) };
    if nt_success(status) {
        Ok(socket)
    } else {
        // SAFETY: the listener is ours and no call on it is in progress.
        unsafe { close_listener(socket) };
        Err(status)
    }
}

/// `WskCloseSocket`, waiting for it (PASSIVE_LEVEL).
unsafe fn close_sync(socket: PWSK_SOCKET, close: Option<khttp_wsk::PFN_WSK_CLOSE_SOCKET>) {
    let Some(close) = close else { return };
    // SAFETY: PASSIVE_LEVEL (caller).
    let irp = unsafe { allocate_irp() };
    if irp.is_null() {
        return;
    }
    let mut call = SyncCall::new();
    // SAFETY: the IRP is ours and idle.
    unsafe { call.arm(irp) };
    // SAFETY: no other call on `socket` is in progress (caller's contract).
    unsafe { close(socket, irp.cast()) };
    // SAFETY: PASSIVE_LEVEL; the call was made.
    unsafe { call.wait(irp) };
    // SAFETY: completed.
    unsafe { free_irp(irp) };
}

/// Closes a listening socket, waiting for it (PASSIVE_LEVEL).
///
/// # Safety
/// `socket` is a live listening socket of ours and no other call on it is in progress.
unsafe fn close_listener(socket: PWSK_SOCKET) {
    // SAFETY: a live socket (contract); its dispatch pointer is valid while it is open.
    let dispatch = unsafe { (*socket).Dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    // SAFETY: a listening socket's dispatch is a WSK_PROVIDER_LISTEN_DISPATCH (§4.2).
    let close = unsafe { (*dispatch).Basic.WskCloseSocket };
    // SAFETY: forwarded contract.
    unsafe { close_sync(socket, close) };
}

/// Opens and closes listening sockets to match `site` (IOCTL path, PASSIVE_LEVEL). Returns the
/// first failure, after trying every address.
///
/// # Safety
/// PASSIVE_LEVEL, on the sequential IOCTL queue or in DriverEntry.
pub(crate) unsafe fn reconcile(site: &Site) -> NTSTATUS {
    // SAFETY: PASSIVE_LEVEL (contract); not held by this thread.
    let _lock = unsafe { WSK_LOCK.acquire() };
    // SAFETY: PASSIVE_LEVEL, holding the lock.
    unsafe { reconcile_locked(site) }
}

/// [`reconcile`], with dead listeners closed and reopened.
///
/// # Safety
/// PASSIVE_LEVEL, holding [`WSK_LOCK`].
unsafe fn reconcile_locked(site: &Site) -> NTSTATUS {
    // SAFETY: the lock is held (contract).
    let w = unsafe { wsk() };
    let want = wanted(site);
    if want.is_empty() && w.listeners.is_empty() {
        return STATUS_SUCCESS;
    }
    // SAFETY: PASSIVE_LEVEL.
    let status = unsafe { capture(w) };
    if !nt_success(status) {
        return status;
    }
    let mut first_error = STATUS_SUCCESS;
    let mut i = 0;
    while let Some(l) = w.listeners.get(i) {
        if want.contains(&l.addr) && !l.dead.load(Ordering::Acquire) {
            i += 1;
            continue;
        }
        let l = w.listeners.swap_remove(i);
        // SAFETY: a listener with no call in progress, under the lock.
        unsafe { close_listener(l.socket) };
    }
    for addr in want {
        if w.listeners.iter().any(|l| l.addr == addr) {
            continue;
        }
        let record = Listener {
            addr,
            socket: ptr::null_mut(),
            dead: AtomicBool::new(false),
        };
        let (Ok(mut l), Ok(())) = (Box::try_new(record), w.listeners.try_reserve(1)) else {
            first_error = STATUS_INSUFFICIENT_RESOURCES;
            continue;
        };
        let context = (&raw mut *l).cast::<c_void>();
        // SAFETY: PASSIVE_LEVEL with the NPI captured; the record outlives the socket (it is
        // dropped only after the socket is closed).
        match unsafe { open_listener(w, addr, context) } {
            Ok(s) => {
                l.socket = s;
                w.listeners.push(l);
            }
            Err(e) if nt_success(first_error) => first_error = e,
            Err(_) => {}
        }
    }
    first_error
}

/// Queues the relisten work item once (from `on_accept`, <= DISPATCH_LEVEL).
fn queue_relisten() {
    RELISTEN.queue(on_relisten);
}

/// The relisten work item (PASSIVE_LEVEL): closes dead listeners and opens them again.
unsafe extern "C" fn on_relisten(_device: PDEVICE_OBJECT, _context: PVOID) {
    if let Some(g) = global().filter(|g| !g.stopping.load(Ordering::Acquire)) {
        // SAFETY: PASSIVE_LEVEL in a work item; not held by this thread.
        let _lock = unsafe { WSK_LOCK.acquire() };
        let site = g.site.snapshot();
        // SAFETY: PASSIVE_LEVEL, holding the lock.
        let status = unsafe { reconcile_locked(&site) };
        if !nt_success(status) {
            wdk::println!("khttp: could not reopen a listener: {status:#x}");
        }
    }
    RELISTEN.done();
}

/// Closes every listener and connection, waits for the connections to go, releases WSK
/// (unload, DRIVER-NOTES §2.5 steps 2, 3 and 5).
///
/// # Safety
/// PASSIVE_LEVEL, in EvtDriverUnload (or a failing DriverEntry), after `stopping` was set.
pub(crate) unsafe fn shutdown() {
    // A queued relisten sees `stopping` and does nothing: wait for it, then free the item, before
    // taking the lock it takes. A later NULL accept event finds no item and queues nothing.
    // SAFETY: PASSIVE_LEVEL in unload; not holding WSK_LOCK.
    unsafe { RELISTEN.shutdown() };
    // SAFETY: PASSIVE_LEVEL; not held by this thread.
    let _lock = unsafe { WSK_LOCK.acquire() };
    // SAFETY: the lock is held.
    let w = unsafe { wsk() };
    for l in core::mem::take(&mut w.listeners) {
        // SAFETY: no call in progress on a listener outside the locked paths.
        unsafe { close_listener(l.socket) };
    }
    // Drain first, as khttpd does on SIGTERM: idle connections are closed and responses in
    // flight may finish, for at most five seconds. Then close every connection, and wait for
    // their contexts to be freed (at most 30 s).
    for _ in 0..50 {
        if global().is_none_or(|g| g.live.load(Ordering::Acquire) == 0) {
            break;
        }
        sweep(Sweep::Idle);
        crate::sleep_ms(100);
    }
    for _ in 0..300 {
        sweep(Sweep::All);
        if global().is_none_or(|g| g.live.load(Ordering::Acquire) == 0) {
            break;
        }
        crate::sleep_ms(100);
    }
    if w.captured {
        // SAFETY: captured once; released once.
        unsafe { WskReleaseProviderNPI(&raw mut w.registration) };
        w.captured = false;
    }
    if w.registered {
        // SAFETY: PASSIVE_LEVEL; blocks until every socket is closed and NPI released.
        unsafe { WskDeregister(&raw mut w.registration) };
        w.registered = false;
    }
}

/// The engine's view of a Windows socket address.
fn local_of(sa: *const SOCKADDR) -> Local {
    let unspecified = Local {
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
    };
    if sa.is_null() {
        return unspecified;
    }
    // SAFETY: WSK passes a valid SOCKADDR of the listener's family for the callback's duration.
    let family = unsafe { (*sa).sa_family };
    if family == AF_INET6 {
        // SAFETY: the family says it is a SOCKADDR_IN6.
        let a = unsafe { &*sa.cast::<SOCKADDR_IN6>() };
        Local {
            ip: IpAddr::V6(Ipv6Addr::from(a.sin6_addr)),
            port: u16::from_be(a.sin6_port),
        }
    } else if family == AF_INET {
        // SAFETY: the family says it is a SOCKADDR_IN.
        let a = unsafe { &*sa.cast::<SOCKADDR_IN>() };
        Local {
            ip: IpAddr::V4(Ipv4Addr::from(a.sin_addr)),
            port: u16::from_be(a.sin_port),
        }
    } else {
        unspecified
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Send,
    Receive,
    /// The graceful disconnect (FIN) that starts the engine's lingering close; it completes
    /// once the peer has acknowledged everything.
    Disconnect,
}

/// What only the current driver of a connection touches (see [`ConnCtx`]).
struct Inner {
    conn: Connection,
    last: Option<Op>,
    failed: bool,
    /// Bytes sent on this connection: all of them may be unacknowledged when the disconnect
    /// starts (WSK does not say what the transport still holds).
    sent: u64,
    tx_mdl: PMDL,
    tx_body: Option<Body>,
    buf: WSK_BUF,
}

const CLOSE_NONE: u8 = 0;
const CLOSE_DISCONNECTING: u8 = 1;
const CLOSE_CLOSING: u8 = 2;

/// One connection. Lives in non-paged pool; freed when `refs` reaches zero.
///
/// References: one for the slot table, one per operation in flight, one while a thread drives,
/// one while the work item is queued.
pub(crate) struct ConnCtx {
    socket: PWSK_SOCKET,
    dispatch: *const WSK_PROVIDER_CONNECTION_DISPATCH,
    gate: InlineGate,
    /// The outside close sequence's own trampoline: `WskCloseSocket` is issued only once the
    /// `WskDisconnect` call has returned (issue #9, finding 2).
    close_gate: InlineGate,
    refs: AtomicUsize,
    slot: usize,
    /// The engine's next deadline (ms), published after each step for the timer.
    deadline_ms: AtomicU64,
    /// How the connection closes at that deadline ([`close_code`]).
    deadline_close: AtomicU8,
    /// Answered 503 (over `max-connections`): counted in `Global::overloaded`.
    overload: bool,
    close_step: AtomicU8,
    io_irp: PIRP,
    close_irp: PIRP,
    /// Drives the connection at PASSIVE_LEVEL: the first time after the accept event has
    /// returned (finding 5), and whenever a completion arrives with little stack left
    /// (finding 13).
    work: PIO_WORKITEM,
    rx_buf: *mut u8,
    rx_mdl: PMDL,
    /// INVARIANT: accessed only by the thread that drives the connection (the gate's holder,
    /// or the work item before the first operation), or by `release` once `refs` is zero.
    inner: UnsafeCell<Inner>,
}

impl ConnCtx {
    /// Allocates a context for an accepted socket; null on any allocation failure.
    unsafe fn create(
        socket: PWSK_SOCKET,
        local: Local,
        slot: usize,
        site: &Site,
        overload: bool,
    ) -> *mut Self {
        // SAFETY: <= DISPATCH_LEVEL (accept callback).
        let raw = unsafe { pool_alloc(size_of::<Self>(), TAG_CONNECTION) }.cast::<Self>();
        // SAFETY: as above.
        let rx_buf = unsafe { pool_alloc(RX_LEN, TAG_RECEIVE) };
        // SAFETY: as above.
        let io_irp = unsafe { allocate_irp() };
        // SAFETY: as above.
        let close_irp = unsafe { allocate_irp() };
        // SAFETY: as above.
        let work = unsafe { allocate_work_item() };
        let rx_mdl = if rx_buf.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `rx_buf` is non-paged pool of RX_LEN bytes that outlives the MDL.
            unsafe { mdl_for(rx_buf, RX_LEN) }
        };
        let parts = Parts {
            rx_mdl,
            io_irp,
            close_irp,
            work,
            rx_buf,
            block: raw.cast(),
        };
        if raw.is_null()
            || rx_buf.is_null()
            || io_irp.is_null()
            || close_irp.is_null()
            || work.is_null()
            || rx_mdl.is_null()
        {
            // SAFETY: each is null or ours and unused (the helpers skip nulls).
            unsafe { parts.free() };
            return ptr::null_mut();
        }
        let clock = clock();
        let ctx = Self {
            socket,
            // SAFETY: an accepted socket's dispatch is a WSK_PROVIDER_CONNECTION_DISPATCH (§4.2).
            dispatch: unsafe { (*socket).Dispatch.cast() },
            gate: InlineGate::new(),
            close_gate: InlineGate::new(),
            refs: AtomicUsize::new(1), // the slot's
            slot,
            deadline_ms: AtomicU64::new(u64::MAX),
            deadline_close: AtomicU8::new(close_code(None)),
            overload,
            close_step: AtomicU8::new(CLOSE_NONE),
            io_irp,
            close_irp,
            work,
            rx_buf,
            rx_mdl,
            inner: UnsafeCell::new(Inner {
                conn: if overload {
                    Connection::unavailable(local, &clock, site)
                } else {
                    Connection::new(local, &clock, site)
                },
                last: None,
                failed: false,
                sent: 0,
                tx_mdl: ptr::null_mut(),
                tx_body: None,
                buf: WSK_BUF {
                    Mdl: ptr::null_mut(),
                    Offset: 0,
                    Length: 0,
                },
            }),
        };
        // SAFETY: `raw` is a fresh, suitably sized and aligned (pool: 16 bytes) allocation.
        unsafe { raw.write(ctx) };
        if let Some(g) = global() {
            g.live.fetch_add(1, Ordering::AcqRel);
        }
        raw
    }

    fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::AcqRel);
    }
}

/// A context's kernel resources, each possibly null.
struct Parts {
    rx_mdl: PMDL,
    io_irp: PIRP,
    close_irp: PIRP,
    work: PIO_WORKITEM,
    rx_buf: *mut u8,
    block: *mut u8,
}

impl Parts {
    /// Frees them.
    ///
    /// # Safety
    /// None of them is in use; IRQL <= DISPATCH_LEVEL.
    unsafe fn free(self) {
        // SAFETY: unused (contract).
        unsafe { mdl_free(self.rx_mdl) };
        // SAFETY: not in flight (contract).
        unsafe { free_irp(self.io_irp) };
        // SAFETY: not in flight (contract).
        unsafe { free_irp(self.close_irp) };
        // SAFETY: not queued (contract).
        unsafe { free_work_item(self.work) };
        // SAFETY: unused pool (contract).
        unsafe { pool_free(self.rx_buf) };
        // SAFETY: unused pool (contract).
        unsafe { pool_free(self.block) };
    }
}

/// Drops a reference; the last one frees the context.
unsafe fn release(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds a reference, so `ctx` is live.
    if unsafe { (*ctx).refs.fetch_sub(1, Ordering::AcqRel) } != 1 {
        return;
    }
    // SAFETY: no reference remains: nothing else can touch the context or its IRPs and MDLs.
    let c = unsafe { &mut *ctx };
    let parts = Parts {
        rx_mdl: c.rx_mdl,
        io_irp: c.io_irp,
        close_irp: c.close_irp,
        work: c.work,
        rx_buf: c.rx_buf,
        block: ctx.cast(),
    };
    // SAFETY: as above; a send's MDL survives only if the connection closed mid-send.
    unsafe { mdl_free(c.inner.get_mut().tx_mdl) };
    // SAFETY: as above; drops the Connection (its buffers) and the body reference.
    unsafe { ptr::drop_in_place(ctx) };
    // SAFETY: as above; `ctx` itself is freed last.
    unsafe { parts.free() };
    context_freed();
}

/// `WskAcceptEvent` (<= DISPATCH_LEVEL): admit the connection; a work item starts driving it
/// once this callback has returned, so that nothing here can close the socket WSK is in the
/// middle of offering (issue #9, finding 5).
unsafe extern "system" fn on_accept(
    listener: *mut c_void,
    _flags: u32,
    local: *mut SOCKADDR,
    _remote: *mut SOCKADDR,
    accept_socket: PWSK_SOCKET,
    accept_context: *mut *mut c_void,
    accept_dispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS {
    let Some(g) = global() else {
        return STATUS_REQUEST_NOT_ACCEPTED;
    };
    if accept_socket.is_null() {
        // The listening socket is no longer functional: close and recreate it at PASSIVE_LEVEL
        // (issue #9, finding 7).
        if !listener.is_null() {
            // SAFETY: the socket context of our listeners is their boxed record, which lives
            // until the listener is closed (after which WSK calls no event on it).
            unsafe {
                (*listener.cast::<Listener>())
                    .dead
                    .store(true, Ordering::Release)
            };
            queue_relisten();
        }
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    if g.stopping.load(Ordering::Acquire) {
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    let site = g.site.snapshot();
    // Admission (the engine's rule), and a free slot from the table's free list reserved for
    // this accept alone (issue #9, finding 10: no scan, no race between two accepts).
    let Some((slot, overload)) = g.with_slots(|t| {
        let overloaded = g.overloaded.load(Ordering::Acquire);
        let open = t.live_count().saturating_sub(overloaded);
        let overload = match admit(site.limits(), DRIVER_MAX_CONNECTIONS, open, overloaded) {
            Admission::Serve => false,
            Admission::Unavailable => true,
            Admission::Refuse => return None,
        };
        let slot = t.take()?;
        if overload {
            g.overloaded.fetch_add(1, Ordering::AcqRel);
        }
        Some((slot, overload))
    }) else {
        return STATUS_REQUEST_NOT_ACCEPTED; // WSK closes the socket
    };
    let index = slot as usize;
    // SAFETY: <= DISPATCH_LEVEL; `local` is valid during this callback.
    let ctx = unsafe { ConnCtx::create(accept_socket, local_of(local), index, &site, overload) };
    if ctx.is_null() {
        g.with_slots(|t| g.leave(t, slot, overload));
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    g.slots_lock.acquire();
    if let Some(s) = g.slots.get(index) {
        s.store(ctx, Ordering::Release);
    }
    g.slots_lock.release();
    // SAFETY: WSK gave us this out-pointer for this callback.
    unsafe { *accept_context = ctx.cast() };
    // SAFETY: as above; pull model, so no connection event dispatch.
    unsafe { *accept_dispatch = ptr::null() };
    // SAFETY: the context is live (slot reference); the work item takes its own.
    unsafe { queue_drive(ctx) };
    STATUS_SUCCESS
}

/// Queues the connection's work item to drive it at PASSIVE_LEVEL. At most one is queued at a
/// time: only the connection's current driver queues it.
///
/// # Safety
/// The caller holds a reference and is the connection's driver (or the accept event).
unsafe fn queue_drive(ctx: *mut ConnCtx) {
    // SAFETY: live (caller's reference).
    let c = unsafe { &*ctx };
    c.add_ref(); // the work item's
    // SAFETY: our work item, not queued (contract); DelayedWorkQueue at <= DISPATCH_LEVEL.
    unsafe { IoQueueWorkItem(c.work, Some(on_work), WORK_QUEUE_DELAYED, ctx.cast()) };
}

/// The work item: drive, then drop the work item's reference.
unsafe extern "C" fn on_work(_device: PDEVICE_OBJECT, context: PVOID) {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the work item's reference keeps the context live; this thread is the driver.
    unsafe { drive(ctx) };
    // SAFETY: the work item's reference.
    unsafe { release(ctx) };
}

/// Stack left below which a completion hands the connection to its work item instead of
/// driving the engine on tcpip's stack (issue #9, finding 13). An x64 kernel stack is 24 KiB
/// (KERNEL_STACK_SIZE). Measured under the Wine harness (tests/wine, stack painting around
/// each completion): a whole completion, with the engine's step and the nested WSK calls, used
/// at most 8,280 bytes, and the harness fails a run in which one uses more than this.
const MIN_STACK: usize = 12 * 1024;

/// `IoGetRemainingStackSize` (an inline in wdm.h): the current stack position less the limit.
fn remaining_stack() -> usize {
    let mut low: usize = 0;
    let mut high: usize = 0;
    // SAFETY: two valid out-pointers; callable at any IRQL.
    unsafe { IoGetStackLimits(&raw mut low as _, &raw mut high as _) };
    let here = &raw const low as usize;
    here.saturating_sub(low)
}

/// Completion routine for a connection's send, receive, disconnect or drain.
unsafe extern "C" fn on_io(_device: PDEVICE_OBJECT, _irp: PIRP, context: PVOID) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the in-flight operation holds a reference, so `ctx` is live.
    match unsafe { (*ctx).gate.complete() } {
        Completion::Inline => {} // the issuer is still in the call and processes the result
        Completion::Async if remaining_stack() < MIN_STACK => {
            // SAFETY: the issuer has left; this thread is the driver and hands over.
            unsafe { queue_drive(ctx) };
        }
        // SAFETY: the issuer has left; this thread drives now; the op's reference keeps it live.
        Completion::Async => unsafe { drive(ctx) },
        // SAFETY: the closer owns the connection; drop the cancelled operation's reference.
        Completion::Closing => unsafe { release(ctx) },
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Processes the operation that just completed, then starts operations until one is pending,
/// the connection waits, or it closes. Never recurses: inline completions loop here.
unsafe fn drive(ctx: *mut ConnCtx) {
    // SAFETY: callers hold a reference; take one more for the duration of this call.
    let c = unsafe { &*ctx };
    c.add_ref();
    // SAFETY: this thread is the connection's only driver (INVARIANT on `inner`).
    let inner = unsafe { &mut *c.inner.get() };
    while let Some(g) = global() {
        let site = g.site.snapshot();
        let clock = clock();
        if let Some(op) = inner.last.take() {
            // SAFETY: `op` completed on the connection's IRP; this thread drives.
            unsafe { finished(c, inner, op, &clock, &site) };
            // SAFETY: the finished operation's reference.
            unsafe { release(ctx) };
        }
        let op = match next_step(c, inner, &clock) {
            Ok(op) => op,
            Err(NextIo::Close(_)) => {
                if c.gate.try_close() {
                    // SAFETY: we claimed the close; a reference is held; nothing is in flight.
                    unsafe { start_close(ctx, Close::Abortive) };
                }
                break;
            }
            Err(_) => {
                publish_deadline(c, inner);
                break;
            }
        };
        publish_deadline(c, inner);
        // SAFETY: this thread drives; nothing is in flight.
        if !unsafe { describe(c, inner, op) } {
            continue; // nothing to send after all, or no MDL: decide again
        }
        if !c.gate.begin() {
            break; // closing: the closer owns the socket now
        }
        inner.last = Some(op);
        c.add_ref(); // the operation's
        // SAFETY: the IRP is idle, the buffer described, and the operation's reference held.
        unsafe { issue(ctx, c, inner, op) };
        if !c.gate.issued() {
            break; // pending: the completion routine drives from here
        }
    }
    // SAFETY: this call's own reference.
    unsafe { release(ctx) };
}

/// Feeds a completed operation's result to the engine or to the close sequence.
///
/// # Safety
/// `op` was issued on `c.io_irp` and has completed; the caller is the connection's driver.
unsafe fn finished(c: &ConnCtx, inner: &mut Inner, op: Op, clock: &Clock, site: &Site) {
    // SAFETY: the operation completed, so the IRP's status is final.
    let (status, info) = unsafe { result(c.io_irp) };
    let n = usize::try_from(info).unwrap_or(0);
    match op {
        Op::Receive if !nt_success(status) => inner.failed = true,
        Op::Receive if n == 0 => inner.conn.handle_eof(clock, site),
        Op::Receive => {
            // SAFETY: the receive wrote `n <= RX_LEN` bytes into our buffer.
            let data = unsafe { core::slice::from_raw_parts(c.rx_buf, n.min(RX_LEN)) };
            inner.conn.handle_input(data, clock, site);
        }
        Op::Send => {
            // SAFETY: the send completed; the MDL is ours again.
            unsafe { mdl_free(inner.tx_mdl) };
            inner.tx_mdl = ptr::null_mut();
            inner.tx_body = None;
            if nt_success(status) {
                inner.sent = inner.sent.saturating_add(info);
                inner.conn.handle_sent(n, clock, site);
            } else {
                inner.failed = true;
            }
        }
        // Everything, the FIN included, is acknowledged: the engine lingers from here.
        Op::Disconnect if nt_success(status) => {
            inner.conn.handle_delivered(clock);
            // The harness's injected fault: no lingering (tests/wine/README.md).
            if cfg!(feature = "fault-skip-linger") {
                inner.conn.handle_eof(clock, site);
            }
        }
        Op::Disconnect => inner.failed = true,
    }
}

/// The next operation, as the engine decides it ([`next_io`]), or why there is none (`Close`,
/// `Wait`). [`Close::Graceful`] starts the lingering close with a `WskDisconnect`; the others
/// close the socket.
fn next_step(c: &ConnCtx, inner: &mut Inner, clock: &Clock) -> Result<Op, NextIo> {
    if inner.failed {
        return Err(NextIo::Close(Close::Abortive));
    }
    // WSK does not say what the transport still holds for the client: 0.
    let _ = inner.conn.handle_timeout(clock, 0);
    match next_io(&inner.conn, &c.gate) {
        NextIo::Send => Ok(Op::Send),
        NextIo::Receive => Ok(Op::Receive),
        NextIo::Close(Close::Graceful) => {
            // Every byte sent may still be unacknowledged (issue #9, findings 3 and 4).
            inner.conn.handle_shutdown(clock, inner.sent);
            Ok(Op::Disconnect)
        }
        other => Err(other),
    }
}

/// Points `inner.buf` at what `op` sends or receives into. False when there is nothing to send
/// after all, or no MDL could be allocated (then the connection has failed).
///
/// # Safety
/// The caller is the connection's driver and nothing is in flight.
unsafe fn describe(c: &ConnCtx, inner: &mut Inner, op: Op) -> bool {
    match op {
        Op::Send => {
            let Some(t) = inner.conn.transmit() else {
                return false;
            };
            let (va, len, body): (*const u8, usize, Option<Body>) = match t {
                Transmit::Head(bytes) => (bytes.as_ptr(), bytes.len(), None),
                Transmit::Body { body, start, end } => (
                    body.as_ptr().wrapping_add(start),
                    end.saturating_sub(start),
                    Some(Arc::clone(body)),
                ),
            };
            // SAFETY: head bytes and cached bodies are wdk-alloc (non-paged) memory that stays
            // put until the send completes: no input is processed while a send is in flight,
            // and `tx_body` keeps the body alive.
            let mdl = unsafe { mdl_for(va, len) };
            if mdl.is_null() {
                inner.failed = true;
                return false;
            }
            inner.tx_mdl = mdl;
            inner.tx_body = body;
            inner.buf = WSK_BUF {
                Mdl: mdl.cast(),
                Offset: 0,
                Length: len,
            };
        }
        Op::Receive => {
            inner.buf = WSK_BUF {
                Mdl: c.rx_mdl.cast(),
                Offset: 0,
                Length: RX_LEN,
            };
        }
        Op::Disconnect => {}
    }
    true
}

/// Starts `op` on the connection's IRP.
///
/// # Safety
/// The gate was begun for `op`, `inner.buf` describes its buffer, the operation's reference is
/// held, and the IRP is idle.
unsafe fn issue(ctx: *mut ConnCtx, c: &ConnCtx, inner: &mut Inner, op: Op) {
    // SAFETY: the IRP is idle (one operation at a time) and `ctx` outlives it (reference).
    unsafe { prepare(c.io_irp, on_io, ctx.cast()) };
    // SAFETY: the connection dispatch table is valid while the accepted socket is open.
    let dispatch = unsafe { &*c.dispatch };
    match op {
        Op::Send | Op::Receive => {
            // Sends go out at once (no Nagle): a head and its body are separate sends, and
            // Nagle would hold the body until the head is acknowledged, a delayed ACK later
            // (seen under the Wine harness: 44 ms per response).
            let (call, flags) = if op == Op::Send {
                (dispatch.WskSend, WSK_FLAG_NODELAY)
            } else {
                (dispatch.WskReceive, 0)
            };
            if let Some(call) = call {
                // SAFETY: `inner.buf` and its MDL stay valid until completion; the IRP is
                // prepared.
                unsafe { call(c.socket, &raw mut inner.buf, flags, c.io_irp.cast()) };
            }
        }
        Op::Disconnect => {
            if let Some(disconnect) = dispatch.WskDisconnect {
                // SAFETY: graceful, no final data; the IRP is prepared.
                unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.io_irp.cast()) };
            }
        }
    }
}

/// Publishes the engine's next deadline, and how it closes the connection, for the sweep
/// (which cannot touch the engine: another thread may be driving it).
fn publish_deadline(c: &ConnCtx, inner: &Inner) {
    let deadline = inner.conn.poll_deadline();
    c.deadline_ms
        .store(deadline.map_or(u64::MAX, |d| d.at.0), Ordering::Release);
    c.deadline_close
        .store(close_code(deadline.map(|d| d.close)), Ordering::Release);
}

/// [`Close`] as a byte for an atomic (`None`: no deadline).
const fn close_code(close: Option<Close>) -> u8 {
    match close {
        None => 0,
        Some(Close::Graceful) => 1,
        Some(Close::Finished) => 2,
        Some(Close::Abortive) => 3,
    }
}

/// Closes a connection whose gate the caller moved to closing. Abortive, or a lingering close
/// that is over (`Finished`): `WskCloseSocket` at once (closing a connected socket is
/// abortive, §4.2.10; it cancels a pending operation).
/// Graceful (the sweep, for an idle connection): `WskDisconnect`, then `WskCloseSocket` once
/// the disconnect call has returned, through `close_gate` (issue #9, finding 2).
unsafe fn start_close(ctx: *mut ConnCtx, kind: Close) {
    // SAFETY: the caller holds a reference.
    let c = unsafe { &*ctx };
    c.add_ref(); // the close sequence's
    if kind == Close::Graceful {
        // SAFETY: no other call on the socket is in progress (the gate is closing).
        if let Some(disconnect) = unsafe { (*c.dispatch).WskDisconnect } {
            c.close_step.store(CLOSE_DISCONNECTING, Ordering::Release);
            // SAFETY: the close IRP is only used by the close sequence, which we own.
            unsafe { prepare(c.close_irp, on_close, ctx.cast()) };
            if c.close_gate.begin() {
                // SAFETY: no buffer; the IRP is prepared.
                unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.close_irp.cast()) };
                if !c.close_gate.issued() {
                    return; // pending: on_close issues the close
                }
            }
        }
    }
    // SAFETY: the close sequence's reference is held; nothing else is in progress on the socket.
    unsafe { issue_close(ctx) };
}

/// `WskCloseSocket` with the close IRP.
unsafe fn issue_close(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds the close sequence's reference.
    let c = unsafe { &*ctx };
    c.close_step.store(CLOSE_CLOSING, Ordering::Release);
    // SAFETY: the close IRP is idle: the disconnect, if any, has completed.
    unsafe { prepare(c.close_irp, on_close, ctx.cast()) };
    // SAFETY: as above; WskCloseSocket cancels any pending operation.
    if let Some(close) = unsafe { (*c.dispatch).Basic.WskCloseSocket } {
        // SAFETY: the IRP is prepared; no other call on the socket is in progress.
        unsafe { close(c.socket, c.close_irp.cast()) };
    }
}

/// Completion routine of the close sequence.
unsafe extern "C" fn on_close(_device: PDEVICE_OBJECT, _irp: PIRP, context: PVOID) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the close operation holds a reference.
    let c = unsafe { &*ctx };
    if c.close_step.load(Ordering::Acquire) == CLOSE_DISCONNECTING {
        match c.close_gate.complete() {
            // The issuer is still inside WskDisconnect: it issues the close when it returns.
            Completion::Inline => {}
            // SAFETY: the disconnect call has returned; the close sequence's reference is held.
            Completion::Async | Completion::Closing => unsafe { issue_close(ctx) },
        }
        return STATUS_MORE_PROCESSING_REQUIRED;
    }
    // Closed: leave the slot table (under its lock, so a sweep holding the lock never sees a
    // context without its slot reference), then drop the slot's and the close's references.
    if let Some(g) = global() {
        g.with_slots(|t| {
            if let Some(s) = g.slots.get(c.slot) {
                s.store(ptr::null_mut(), Ordering::Release);
            }
            g.leave(t, u32::try_from(c.slot).unwrap_or(u32::MAX), c.overload);
        });
    }
    // SAFETY: the close operation's reference.
    unsafe { release(ctx) };
    // SAFETY: the slot's reference, released last.
    unsafe { release(ctx) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// What a sweep closes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Connections past their deadline (the timer).
    Deadlines,
    /// Those, and every connection with no response in flight (the drain at unload).
    Idle,
    /// Every connection, abortively (the end of unload).
    All,
}

/// The deadline sweep (the WDF timer, DISPATCH_LEVEL) and unload's drain and close-all.
///
/// A context is referenced under the slot lock, where it still holds its slot reference, and
/// acted on after the lock is dropped: closing may complete inline and take the lock itself.
pub(crate) fn sweep(mode: Sweep) {
    /// Contexts referenced per pass under the lock.
    const BATCH: usize = 64;
    let Some(g) = global() else { return };
    let now = clock().now().0;
    let mut at = 0usize;
    loop {
        // Only live slots are visited (the engine's SlotTable), a batch per lock hold. A
        // connection that closes meanwhile moves another into its place, so one may be missed
        // this time; the next sweep sees it.
        let mut batch = [ptr::null_mut::<ConnCtx>(); BATCH];
        let n = g.with_slots(|t| {
            let mut n = 0usize;
            for (dst, &slot) in batch.iter_mut().zip(t.live().iter().skip(at)) {
                let p = g
                    .slots
                    .get(slot as usize)
                    .map_or(ptr::null_mut(), |s| s.load(Ordering::Acquire));
                if !p.is_null() {
                    // SAFETY: in the table under the lock, the context holds its slot reference.
                    unsafe { (*p).add_ref() };
                }
                *dst = p;
                n += 1;
            }
            n
        });
        if n == 0 {
            return;
        }
        at += n;
        for &p in batch.iter().take(n).filter(|p| !p.is_null()) {
            // SAFETY: our reference keeps the context live.
            let c = unsafe { &*p };
            let kind = match (mode, c.deadline_close.load(Ordering::Acquire)) {
                (Sweep::All, _) | (_, 3) => Some(Close::Abortive),
                (_, 1) => Some(Close::Graceful),
                (_, 2) => Some(Close::Finished),
                _ => None, // its driver is acting on it now
            };
            let due = mode == Sweep::All || now >= c.deadline_ms.load(Ordering::Acquire);
            // Unload's drain also closes connections with no response in flight.
            let idle = mode == Sweep::Idle && kind.is_some_and(|k| k != Close::Abortive);
            if let Some(kind) = kind
                && (due || idle)
            {
                if c.gate.try_close() {
                    // SAFETY: we claimed the close and hold a reference.
                    unsafe { start_close(p, kind) };
                } else if due {
                    // A thread is inside a call: it acts on the request at its next step.
                    c.gate.request_close();
                }
            }
            // SAFETY: our reference.
            unsafe { release(p) };
        }
    }
}
