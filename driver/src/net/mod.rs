//! Winsock Kernel: registration, and one listening socket per address and port that the site
//! names (docs/driver-facts.md, "WSK registration and the provider NPI" to "Accept and
//! disconnect events"). Accepted sockets become connections in [`conn`].
//!
//! IRQL: setup and teardown at PASSIVE_LEVEL; the accept event at <= DISPATCH_LEVEL, where
//! nothing here waits.

#![allow(
    unsafe_code,
    reason = "WSK registration and listening sockets: FFI with IRPs and raw socket pointers"
)]

pub(crate) mod conn;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use khttp_engine::{Local, Site};
use khttp_wsk::imports::{
    WskCaptureProviderNPI, WskDeregister, WskRegister, WskReleaseProviderNPI,
};
use khttp_wsk::{
    AF_INET, AF_INET6, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, NPI_WSK_INTERFACE_ID, PWSK_SOCKET,
    SO_EXCLUSIVEADDRUSE, SOCK_STREAM, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOL_SOCKET,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH,
    WSK_CLIENT_NPI, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISCONNECT,
    WSK_FLAG_LISTEN_SOCKET, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
    WSK_SET_STATIC_EVENT_CALLBACKS, WSK_VERSION_1_0, WskSetOption,
};
use wdk::nt_success;
use wdk_sys::{
    NTSTATUS, PDEVICE_OBJECT, PVOID, STATUS_INSUFFICIENT_RESOURCES, STATUS_REQUEST_NOT_ACCEPTED,
    STATUS_SUCCESS,
};

pub(crate) use conn::sweep::{Sweep, sweep};
pub(crate) use conn::{install_table, uninstall_table};

use crate::global::global;
use crate::irp::{OwnedIrp, PassiveLock, SingleWork, SyncCall};

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

static CONNECTION_DISPATCH: Shared<WSK_CLIENT_CONNECTION_DISPATCH> =
    Shared(WSK_CLIENT_CONNECTION_DISPATCH {
        WskReceiveEvent: ptr::null(),
        WskDisconnectEvent: Some(conn::io::on_disconnect),
        WskSendBacklogEvent: ptr::null(),
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
///
/// # Safety
/// PASSIVE_LEVEL, holding [`WSK_LOCK`]; `w` is registered.
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
        // Accept events on listeners; disconnect events on the connections they accept, so
        // that a client that leaves while its request is with an application is seen
        // (`conn::io::on_disconnect`).
        EventMask: WSK_EVENT_ACCEPT | WSK_EVENT_DISCONNECT,
    };
    // SAFETY: the provider dispatch table is valid while the NPI is captured.
    let control_client = unsafe { (*w.provider.Dispatch).WskControlClient };
    let status = match control_client {
        // SAFETY: echosrv's call: static event callbacks, no output, no IRP
        // (docs/driver-facts.md, "WSK registration and the provider NPI").
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
/// wildcard (echosrv's choice; docs/driver-facts.md, "Listening sockets").
fn wanted(site: &Site) -> Option<Vec<SocketAddr>> {
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
///
/// # Safety
/// PASSIVE_LEVEL, holding [`WSK_LOCK`]; the provider NPI is captured; `context` outlives the
/// socket (it is closed before the record is dropped).
unsafe fn open_listener(
    w: &Wsk,
    addr: SocketAddr,
    context: *mut c_void,
) -> Result<PWSK_SOCKET, NTSTATUS> {
    // SAFETY: PASSIVE_LEVEL (caller); every call on it is waited for (`SyncCall`), so it is
    // idle whenever it drops.
    let irp = unsafe { OwnedIrp::allocate() }.ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    let mut call = SyncCall::new();
    let family = if addr.is_ipv6() { AF_INET6 } else { AF_INET };
    // SAFETY: the provider NPI is captured (caller), so its dispatch table is valid.
    let wsk_socket =
        unsafe { (*w.provider.Dispatch).WskSocket }.ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    // SAFETY: the IRP is ours and idle.
    if !unsafe { call.arm(irp.as_ptr()) } {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    // SAFETY: a listening TCP socket with our static listen dispatch (docs/driver-facts.md,
    // "Listening sockets").
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
            irp.as_ptr().cast(),
        );
    }
    // SAFETY: PASSIVE_LEVEL; the call was made.
    let (status, info) = unsafe { call.wait(irp.as_ptr()) };
    if !nt_success(status) {
        return Err(status);
    }
    let socket = info as usize as PWSK_SOCKET; // Information carries it (PFN_WSK_SOCKET)
    // SAFETY: a listening socket's dispatch is a WSK_PROVIDER_LISTEN_DISPATCH (WSK_SOCKET).
    let dispatch = unsafe { (*socket).Dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    // SAFETY: PASSIVE_LEVEL; a live listening socket with no other call in progress; its
    // listen dispatch.
    let mut status = unsafe { set_listen_options(&mut call, &irp, socket, dispatch, addr) };
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
            status = if unsafe { call.arm(irp.as_ptr()) } {
                // SAFETY: WskBind on a listening socket starts listening (PFN_WSK_BIND).
                unsafe { bind(socket, sa, 0, irp.as_ptr().cast()) };
                // SAFETY: PASSIVE_LEVEL; the call was made.
                unsafe { call.wait(irp.as_ptr()) }.0
            } else {
                STATUS_INSUFFICIENT_RESOURCES
            };
        }
    }
    if nt_success(status) {
        Ok(socket)
    } else {
        // SAFETY: the listener is ours and no call on it is in progress.
        unsafe { close_listener(socket) };
        Err(status)
    }
}

/// A new listener's socket options: `SO_EXCLUSIVEADDRUSE`, and for the IPv6 wildcard
/// `IPV6_V6ONLY` off (dual stack, as echosrv), each a synchronous `WskControlSocket` on `irp`.
/// No allocation (issue #22, defect 5): the options are a fixed list.
///
/// # Safety
/// PASSIVE_LEVEL; `socket` is a live listening socket with no other call in progress, and
/// `dispatch` its listen dispatch; `irp` is idle.
unsafe fn set_listen_options(
    call: &mut SyncCall,
    irp: &OwnedIrp,
    socket: PWSK_SOCKET,
    dispatch: *const WSK_PROVIDER_LISTEN_DISPATCH,
    addr: SocketAddr,
) -> NTSTATUS {
    let mut one: u32 = 1;
    let mut zero: u32 = 0;
    let options: [(u32, u32, *mut u32); 2] = [
        (SO_EXCLUSIVEADDRUSE, SOL_SOCKET, &raw mut one),
        (IPV6_V6ONLY, IPPROTO_IPV6, &raw mut zero),
    ];
    let count = if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        2
    } else {
        1
    };
    let mut status = STATUS_SUCCESS;
    for &(code, level, value) in options.iter().take(count) {
        // SAFETY: the socket is live; its basic dispatch carries WskControlSocket.
        let Some(control) = (unsafe { (*dispatch).Basic.WskControlSocket }) else {
            break;
        };
        // SAFETY: the IRP is idle again after the previous wait.
        if !unsafe { call.arm(irp.as_ptr()) } {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
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
                irp.as_ptr().cast(),
            );
        }
        // SAFETY: PASSIVE_LEVEL; the call was made.
        status = unsafe { call.wait(irp.as_ptr()) }.0;
        if !nt_success(status) {
            break;
        }
    }
    status
}

/// `WskCloseSocket`, waiting for it (PASSIVE_LEVEL).
///
/// A close must happen: a socket left open holds its port and makes `WskDeregister` (unload)
/// wait for ever. So when the IRP or the completion routine's context cannot be allocated, it
/// waits 10 ms and tries again, as long as it takes (PASSIVE_LEVEL: a wait is allowed, and the
/// low-resources condition is transient, as Driver Verifier's simulation is).
///
/// # Safety
/// PASSIVE_LEVEL; `socket` is open, with no other call on it in progress, and `close` is its
/// provider's `WskCloseSocket`.
unsafe fn close_sync(socket: PWSK_SOCKET, close: Option<khttp_wsk::PFN_WSK_CLOSE_SOCKET>) {
    let Some(close) = close else { return };
    let mut call = SyncCall::new();
    let irp = loop {
        // SAFETY: PASSIVE_LEVEL (caller); the call below is waited for, so it drops idle.
        let irp = unsafe { OwnedIrp::allocate() };
        if let Some(irp) = irp {
            // SAFETY: the IRP is ours and idle.
            if unsafe { call.arm(irp.as_ptr()) } {
                break irp;
            }
        }
        crate::irp::sleep_ms(10);
    };
    // SAFETY: no other call on `socket` is in progress (caller's contract).
    unsafe { close(socket, irp.as_ptr().cast()) };
    // SAFETY: PASSIVE_LEVEL; the call was made.
    unsafe { call.wait(irp.as_ptr()) };
}

/// Closes a listening socket, waiting for it (PASSIVE_LEVEL).
///
/// # Safety
/// `socket` is a live listening socket of ours and no other call on it is in progress.
unsafe fn close_listener(socket: PWSK_SOCKET) {
    // SAFETY: a live socket (contract); its dispatch pointer is valid while it is open.
    let dispatch = unsafe { (*socket).Dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    // SAFETY: a listening socket's dispatch is a WSK_PROVIDER_LISTEN_DISPATCH (WSK_SOCKET).
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
    let Some(want) = wanted(site) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
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
///
/// # Safety
/// Called by the I/O manager for the work item [`RELISTEN`] queued, at PASSIVE_LEVEL.
unsafe extern "C" fn on_relisten(_device: PDEVICE_OBJECT, _context: PVOID) {
    loop {
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
        // A listener that died while this ran asked again: once more.
        if !RELISTEN.done() {
            break;
        }
    }
}

/// Closes every listener and connection, waits for the connections to go, releases WSK
/// (docs/driver-facts.md, "Unload order", steps 2, 3 and 5).
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
        if conn::live() == 0 {
            break;
        }
        sweep(Sweep::Idle);
        crate::irp::sleep_ms(100);
    }
    for _ in 0..300 {
        sweep(Sweep::All);
        if conn::live() == 0 {
            break;
        }
        crate::irp::sleep_ms(100);
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

/// The engine's view of a Windows socket address (the unspecified address when WSK gives
/// none, or one of another family).
fn local_of(sa: *const SOCKADDR) -> Local {
    address_of(sa).unwrap_or(Local {
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
    })
}

/// A Windows socket address as IP and port, if it is an IPv4 or IPv6 one.
fn address_of(sa: *const SOCKADDR) -> Option<Local> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: WSK passes a valid SOCKADDR of the listener's family for the callback's duration.
    let family = unsafe { (*sa).sa_family };
    if family == AF_INET6 {
        // SAFETY: the family says it is a SOCKADDR_IN6.
        let a = unsafe { &*sa.cast::<SOCKADDR_IN6>() };
        Some(Local {
            ip: IpAddr::V6(Ipv6Addr::from(a.sin6_addr)),
            port: u16::from_be(a.sin6_port),
        })
    } else if family == AF_INET {
        // SAFETY: the family says it is a SOCKADDR_IN.
        let a = unsafe { &*sa.cast::<SOCKADDR_IN>() };
        Some(Local {
            ip: IpAddr::V4(Ipv4Addr::from(a.sin_addr)),
            port: u16::from_be(a.sin_port),
        })
    } else {
        None
    }
}

/// `WskAcceptEvent` (<= DISPATCH_LEVEL): a dead listener is recreated; a connection is
/// admitted by [`conn::accept`].
///
/// # Safety
/// Called by WSK with the arguments of `PFN_WSK_ACCEPT_EVENT`: `listener`
/// is our listener's socket context, the out-pointers valid for this call.
unsafe extern "system" fn on_accept(
    listener: *mut c_void,
    _flags: u32,
    local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
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
    let addrs = (local_of(local), address_of(remote));
    // SAFETY: the socket this event offers; <= DISPATCH_LEVEL; `local` and `remote` are valid
    // during it (read above).
    let Some(ctx) = (unsafe { conn::accept(accept_socket, addrs, &site) }) else {
        return STATUS_REQUEST_NOT_ACCEPTED; // WSK closes the socket
    };
    // SAFETY: WSK gave us this out-pointer for this callback.
    unsafe { *accept_context = ctx.cast() };
    // SAFETY: as above. Receives stay the pull model; only the disconnect event is taken.
    unsafe { *accept_dispatch = &raw const CONNECTION_DISPATCH.0 };
    STATUS_SUCCESS
}
