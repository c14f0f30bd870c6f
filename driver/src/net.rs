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

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use khttp_engine::conn::Close;
use khttp_engine::out::{Body, Transmit};
use khttp_engine::pump::{Completion, InlineGate, NextIo, next_io};
use khttp_engine::route::Local;
use khttp_engine::{Connection, Site};
use khttp_wsk::imports::{
    WskCaptureProviderNPI, WskDeregister, WskRegister, WskReleaseProviderNPI,
};
use khttp_wsk::{
    AF_INET, AF_INET6, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, NPI_WSK_INTERFACE_ID, PWSK_SOCKET,
    SO_EXCLUSIVEADDRUSE, SOCK_STREAM, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOL_SOCKET, WSK_BUF,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH,
    WSK_CLIENT_NPI, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_FLAG_LISTEN_SOCKET,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI,
    WSK_REGISTRATION, WSK_SET_STATIC_EVENT_CALLBACKS, WSK_VERSION_1_0, WskSetOption,
};
use wdk::nt_success;
use wdk_sys::{
    NTSTATUS, PDEVICE_OBJECT, PIRP, PMDL, PVOID, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_REQUEST_NOT_ACCEPTED, STATUS_SUCCESS,
};

use crate::global::{clock, context_freed, global};
use crate::irp::{
    SyncCall, TAG_CONNECTION, TAG_RECEIVE, allocate_irp, free_irp, mdl_for, mdl_free, pool_alloc,
    pool_free, prepare, result,
};

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

/// Registration, provider NPI and listeners. Touched only at PASSIVE_LEVEL by DriverEntry, the
/// sequential IOCTL queue and unload, which never overlap.
struct Wsk {
    registration: WSK_REGISTRATION,
    provider: WSK_PROVIDER_NPI,
    registered: bool,
    captured: bool,
    listeners: Vec<(SocketAddr, PWSK_SOCKET)>,
}

struct WskCell(UnsafeCell<Wsk>);
// SAFETY: only used at PASSIVE_LEVEL by serialised paths (see `Wsk`).
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

/// # Safety
/// PASSIVE_LEVEL, on one of the serialised paths of [`Wsk`].
unsafe fn wsk() -> &'static mut Wsk {
    // SAFETY: exclusive by the serialisation described on `Wsk` (caller's contract).
    unsafe { &mut *WSK.0.get() }
}

/// `WskRegister` (DriverEntry, PASSIVE_LEVEL).
///
/// # Safety
/// PASSIVE_LEVEL, once, in DriverEntry.
pub(crate) unsafe fn register() -> NTSTATUS {
    // SAFETY: DriverEntry is the only caller (contract).
    let w = unsafe { wsk() };
    // SAFETY: CLIENT_NPI and the registration are statics, valid for the driver's lifetime.
    let status = unsafe { WskRegister(&CLIENT_NPI.0, &raw mut w.registration) };
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
unsafe fn open_listener(w: &Wsk, addr: SocketAddr) -> Result<PWSK_SOCKET, NTSTATUS> {
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
            ptr::null_mut(),
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
    // SAFETY: serialised path (contract).
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
    let mut keep = Vec::new();
    for (addr, socket) in core::mem::take(&mut w.listeners) {
        if want.contains(&addr) {
            keep.push((addr, socket));
        } else {
            // SAFETY: a listener with no call in progress on this serialised path.
            unsafe { close_listener(socket) };
        }
    }
    w.listeners = keep;
    let mut first_error = STATUS_SUCCESS;
    for addr in want {
        if w.listeners.iter().any(|(a, _)| *a == addr) {
            continue;
        }
        // SAFETY: PASSIVE_LEVEL with the NPI captured.
        match unsafe { open_listener(w, addr) } {
            Ok(s) => w.listeners.push((addr, s)),
            Err(e) if nt_success(first_error) => first_error = e,
            Err(_) => {}
        }
    }
    first_error
}

/// Closes every listener and connection, waits for the connections to go, releases WSK
/// (unload, DRIVER-NOTES §2.5 steps 2, 3 and 5).
///
/// # Safety
/// PASSIVE_LEVEL, in EvtDriverUnload, after `stopping` was set.
pub(crate) unsafe fn shutdown() {
    // SAFETY: unload is serialised with every other PASSIVE path (contract).
    let w = unsafe { wsk() };
    for (_, socket) in core::mem::take(&mut w.listeners) {
        // SAFETY: no call in progress on a listener outside the IOCTL path, which has stopped.
        unsafe { close_listener(socket) };
    }
    // Close every connection, then wait for their contexts to be freed (at most 30 s).
    for _ in 0..300 {
        sweep(true);
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
}

/// What only the current driver of a connection touches (see [`ConnCtx`]).
struct Inner {
    conn: Connection,
    last: Option<Op>,
    failed: bool,
    tx_mdl: PMDL,
    tx_body: Option<Body>,
    buf: WSK_BUF,
}

const CLOSE_NONE: u8 = 0;
const CLOSE_DISCONNECTING: u8 = 1;
const CLOSE_CLOSING: u8 = 2;

/// One connection. Lives in non-paged pool; freed when `refs` reaches zero.
///
/// References: one for the slot table, one per operation in flight, one while a thread drives.
pub(crate) struct ConnCtx {
    socket: PWSK_SOCKET,
    dispatch: *const WSK_PROVIDER_CONNECTION_DISPATCH,
    gate: InlineGate,
    refs: AtomicUsize,
    slot: usize,
    /// The engine's next deadline (ms), published after each step for the timer.
    deadline_ms: AtomicU64,
    /// Whether output was pending then (a reset, not a FIN, if the deadline passes).
    deadline_abortive: AtomicBool,
    close_step: AtomicU8,
    io_irp: PIRP,
    close_irp: PIRP,
    rx_buf: *mut u8,
    rx_mdl: PMDL,
    /// INVARIANT: accessed only by the thread that drives the connection (the gate's holder,
    /// or the accept callback before the first operation), or by `free` once `refs` is zero.
    inner: UnsafeCell<Inner>,
}

impl ConnCtx {
    /// Allocates a context for an accepted socket; null on any allocation failure.
    unsafe fn create(socket: PWSK_SOCKET, local: Local, slot: usize, site: &Site) -> *mut Self {
        // SAFETY: <= DISPATCH_LEVEL (accept callback).
        let raw = unsafe { pool_alloc(size_of::<Self>(), TAG_CONNECTION) }.cast::<Self>();
        // SAFETY: as above.
        let rx_buf = unsafe { pool_alloc(RX_LEN, TAG_RECEIVE) };
        // SAFETY: as above.
        let io_irp = unsafe { allocate_irp() };
        // SAFETY: as above.
        let close_irp = unsafe { allocate_irp() };
        let rx_mdl = if rx_buf.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `rx_buf` is non-paged pool of RX_LEN bytes that outlives the MDL.
            unsafe { mdl_for(rx_buf, RX_LEN) }
        };
        if raw.is_null()
            || rx_buf.is_null()
            || io_irp.is_null()
            || close_irp.is_null()
            || rx_mdl.is_null()
        {
            // SAFETY: each is null or ours and unused (the helpers skip nulls).
            unsafe { free_parts(rx_mdl, io_irp, close_irp, rx_buf, raw.cast()) };
            return ptr::null_mut();
        }
        let clock = clock();
        let ctx = Self {
            socket,
            // SAFETY: an accepted socket's dispatch is a WSK_PROVIDER_CONNECTION_DISPATCH (§4.2).
            dispatch: unsafe { (*socket).Dispatch.cast() },
            gate: InlineGate::new(),
            refs: AtomicUsize::new(1), // the slot's
            slot,
            deadline_ms: AtomicU64::new(u64::MAX),
            deadline_abortive: AtomicBool::new(false),
            close_step: AtomicU8::new(CLOSE_NONE),
            io_irp,
            close_irp,
            rx_buf,
            rx_mdl,
            inner: UnsafeCell::new(Inner {
                conn: Connection::new(local, &clock, site),
                last: None,
                failed: false,
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

/// Frees a context's kernel resources; each may be null.
///
/// # Safety
/// None of them is in use; IRQL <= DISPATCH_LEVEL.
unsafe fn free_parts(rx_mdl: PMDL, io_irp: PIRP, close_irp: PIRP, rx_buf: *mut u8, block: *mut u8) {
    // SAFETY: unused (contract).
    unsafe { mdl_free(rx_mdl) };
    // SAFETY: not in flight (contract).
    unsafe { free_irp(io_irp) };
    // SAFETY: not in flight (contract).
    unsafe { free_irp(close_irp) };
    // SAFETY: unused pool (contract).
    unsafe { pool_free(rx_buf) };
    // SAFETY: unused pool (contract).
    unsafe { pool_free(block) };
}

/// Drops a reference; the last one frees the context.
unsafe fn release(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds a reference, so `ctx` is live.
    if unsafe { (*ctx).refs.fetch_sub(1, Ordering::AcqRel) } != 1 {
        return;
    }
    // SAFETY: no reference remains: nothing else can touch the context or its IRPs and MDLs.
    let c = unsafe { &mut *ctx };
    let parts = (c.rx_mdl, c.io_irp, c.close_irp, c.rx_buf);
    // SAFETY: as above; a send's MDL survives only if the connection closed mid-send.
    unsafe { mdl_free(c.inner.get_mut().tx_mdl) };
    // SAFETY: as above; drops the Connection (its buffers) and the body reference.
    unsafe { ptr::drop_in_place(ctx) };
    // SAFETY: as above; `ctx` itself is freed last.
    unsafe { free_parts(parts.0, parts.1, parts.2, parts.3, ctx.cast()) };
    context_freed();
}

/// `WskAcceptEvent` (<= DISPATCH_LEVEL): admit the connection and start receiving.
unsafe extern "system" fn on_accept(
    _listener: *mut c_void,
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
    // A null socket means the listener died ([U] recreate it from a work item; §4.2.7).
    if accept_socket.is_null() || g.stopping.load(Ordering::Acquire) {
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    let site = g.site.snapshot();
    let cap = (site.limits().max_connections as usize).min(g.slots.len());
    // A free slot from the table's free list, reserved for this accept alone (issue #9,
    // finding 10: no scan, no race between two accepts).
    let Some(slot) = g.with_slots(|t| {
        if t.live_count() >= cap {
            None
        } else {
            t.take()
        }
    }) else {
        return STATUS_REQUEST_NOT_ACCEPTED; // WSK closes the socket
    };
    let index = slot as usize;
    // SAFETY: <= DISPATCH_LEVEL; `local` is valid during this callback.
    let ctx = unsafe { ConnCtx::create(accept_socket, local_of(local), index, &site) };
    if ctx.is_null() {
        g.with_slots(|t| t.release(slot));
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
    // SAFETY: the context is live (slot reference); starting a receive from the accept callback
    // does not wait ([U] whether WSK wants this after the callback returns, §4.2.7).
    unsafe { drive(ctx) };
    STATUS_SUCCESS
}

/// Completion routine for a connection's send or receive.
unsafe extern "C" fn on_io(_device: PDEVICE_OBJECT, _irp: PIRP, context: PVOID) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the in-flight operation holds a reference, so `ctx` is live.
    match unsafe { (*ctx).gate.complete() } {
        Completion::Inline => {} // the issuer is still in the call and processes the result
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
            // SAFETY: the operation completed, so the IRP's status is final.
            let (status, info) = unsafe { result(c.io_irp) };
            let n = usize::try_from(info).unwrap_or(0);
            match op {
                Op::Receive if !nt_success(status) => inner.failed = true,
                Op::Receive if n == 0 => inner.conn.handle_eof(&clock, &site),
                Op::Receive => {
                    // SAFETY: the receive wrote `n <= RX_LEN` bytes into our buffer.
                    let data = unsafe { core::slice::from_raw_parts(c.rx_buf, n.min(RX_LEN)) };
                    inner.conn.handle_input(data, &clock, &site);
                }
                Op::Send => {
                    // SAFETY: the send completed; the MDL is ours again.
                    unsafe { mdl_free(inner.tx_mdl) };
                    inner.tx_mdl = ptr::null_mut();
                    inner.tx_body = None;
                    if nt_success(status) {
                        inner.conn.handle_sent(n, &clock, &site);
                    } else {
                        inner.failed = true;
                    }
                }
            }
            // SAFETY: the finished operation's reference.
            unsafe { release(ctx) };
        }
        // WSK does not say what the transport still holds for the client: 0.
        inner.conn.handle_timeout(&clock, 0);
        let next = if inner.failed {
            NextIo::Close(Close::Abortive)
        } else {
            next_io(&inner.conn, &c.gate)
        };
        c.deadline_ms.store(
            inner.conn.poll_timeout().map_or(u64::MAX, |i| i.0),
            Ordering::Release,
        );
        c.deadline_abortive
            .store(inner.conn.has_output(), Ordering::Release);
        let op = match next {
            NextIo::Send => Op::Send,
            NextIo::Receive => Op::Receive,
            NextIo::Close(kind) => {
                if c.gate.try_close() {
                    // SAFETY: we claimed the close; a reference is held.
                    unsafe { start_close(ctx, kind) };
                }
                break;
            }
            NextIo::Wait => break,
        };
        if op == Op::Send {
            let Some(t) = inner.conn.transmit() else {
                continue;
            };
            let (va, len, body): (*const u8, usize, Option<Body>) = match t {
                Transmit::Head(bytes) => (bytes.as_ptr(), bytes.len(), None),
                Transmit::Body { body, start, end } => (
                    body.as_ptr().wrapping_add(start),
                    end.saturating_sub(start),
                    Some(Arc::clone(body)),
                ),
            };
            // SAFETY: head bytes and cached bodies are wdk-alloc (non-paged) memory that stays put
            // until the send completes: no input is processed while a send is in flight, and
            // `tx_body` keeps the body alive.
            let mdl = unsafe { mdl_for(va, len) };
            if mdl.is_null() {
                inner.failed = true;
                continue;
            }
            inner.tx_mdl = mdl;
            inner.tx_body = body;
            inner.buf = WSK_BUF {
                Mdl: mdl.cast(),
                Offset: 0,
                Length: len,
            };
        } else {
            inner.buf = WSK_BUF {
                Mdl: c.rx_mdl.cast(),
                Offset: 0,
                Length: RX_LEN,
            };
        }
        if !c.gate.begin() {
            break; // closing: the closer owns the socket now
        }
        inner.last = Some(op);
        c.add_ref(); // the operation's
        // SAFETY: the IRP is idle (one operation at a time) and `ctx` outlives it (reference).
        unsafe { prepare(c.io_irp, on_io, ctx.cast()) };
        // SAFETY: the connection dispatch table is valid while the accepted socket is open.
        let dispatch = unsafe { &*c.dispatch };
        let call = match op {
            Op::Send => dispatch.WskSend,
            Op::Receive => dispatch.WskReceive,
        };
        if let Some(call) = call {
            // SAFETY: `inner.buf` and its MDL stay valid until completion; the IRP is prepared.
            unsafe { call(c.socket, &raw mut inner.buf, 0, c.io_irp.cast()) };
        }
        if !c.gate.issued() {
            break; // pending: the completion routine drives from here
        }
    }
    // SAFETY: this call's own reference.
    unsafe { release(ctx) };
}

/// Starts closing: graceful is `WskDisconnect` then `WskCloseSocket`; abortive closes at once
/// (closing a connected socket is abortive, §4.2.10). The caller won `try_close`.
unsafe fn start_close(ctx: *mut ConnCtx, kind: Close) {
    // SAFETY: the caller holds a reference.
    let c = unsafe { &*ctx };
    c.add_ref(); // the close operation's
    // SAFETY: the close IRP is only used by the close sequence, which we own.
    unsafe { prepare(c.close_irp, on_close, ctx.cast()) };
    if kind == Close::Graceful {
        c.close_step.store(CLOSE_DISCONNECTING, Ordering::Release);
        // SAFETY: no other call on the socket is in progress (gate is closing).
        if let Some(disconnect) = unsafe { (*c.dispatch).WskDisconnect } {
            // SAFETY: no buffer; the IRP is prepared.
            unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.close_irp.cast()) };
            return;
        }
    }
    c.close_step.store(CLOSE_CLOSING, Ordering::Release);
    // SAFETY: as above; WskCloseSocket cancels any pending receive.
    if let Some(close) = unsafe { (*c.dispatch).Basic.WskCloseSocket } {
        // SAFETY: the IRP is prepared.
        unsafe { close(c.socket, c.close_irp.cast()) };
    }
}

/// Completion routine of the close sequence.
unsafe extern "C" fn on_close(_device: PDEVICE_OBJECT, _irp: PIRP, context: PVOID) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the close operation holds a reference.
    let c = unsafe { &*ctx };
    if c.close_step.load(Ordering::Acquire) == CLOSE_DISCONNECTING {
        c.close_step.store(CLOSE_CLOSING, Ordering::Release);
        // SAFETY: the close IRP completed; reuse it for the close (one level of nesting at most).
        unsafe { prepare(c.close_irp, on_close, ctx.cast()) };
        // SAFETY: the socket is ours; no other call is in progress.
        if let Some(close) = unsafe { (*c.dispatch).Basic.WskCloseSocket } {
            // SAFETY: the IRP is prepared.
            unsafe { close(c.socket, c.close_irp.cast()) };
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
    }
    // Closed: leave the slot table (under its lock, so a sweep holding the lock never sees a
    // context without its slot reference), then drop the slot's and the close's references.
    if let Some(g) = global() {
        g.with_slots(|t| {
            if let Some(s) = g.slots.get(c.slot) {
                s.store(ptr::null_mut(), Ordering::Release);
            }
            t.release(u32::try_from(c.slot).unwrap_or(u32::MAX))
        });
    }
    // SAFETY: the close operation's reference.
    unsafe { release(ctx) };
    // SAFETY: the slot's reference, released last.
    unsafe { release(ctx) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// The deadline sweep (the WDF timer, DISPATCH_LEVEL) and unload's close-all (`all`).
///
/// A context is referenced under the slot lock, where it still holds its slot reference, and
/// acted on after the lock is dropped: closing may complete inline and take the lock itself.
pub(crate) fn sweep(all: bool) {
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
            if all || now >= c.deadline_ms.load(Ordering::Acquire) {
                if c.gate.try_close() {
                    let abortive = all || c.deadline_abortive.load(Ordering::Acquire);
                    let kind = if abortive {
                        Close::Abortive
                    } else {
                        Close::Graceful
                    };
                    // SAFETY: we claimed the close and hold a reference.
                    unsafe { start_close(p, kind) };
                } else {
                    // A thread is inside a call: it acts on the request at its next step.
                    c.gate.request_close();
                }
            }
            // SAFETY: our reference.
            unsafe { release(p) };
        }
    }
}
