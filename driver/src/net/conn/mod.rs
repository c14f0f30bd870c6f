//! Connections: one context per accepted socket, driven by the engine (docs/driver-facts.md,
//! "IRPs for WSK calls" to "Memory and MDLs"), and the table of live contexts that the timer
//! sweep, admission control and unload use.
//!
//! Connections use the pull model: exactly one `WskReceive` or `WskSend` in flight, with a
//! driver-owned IRP whose completion routine returns `STATUS_MORE_PROCESSING_REQUIRED`. The one
//! event taken is `WskDisconnectEvent` ([`on_disconnect`]): while a request is with an
//! application nothing is pending on the socket, and it is how a client's leaving is seen. What to
//! do next is the engine's [`next_io`]; inline completions are turned into loop iterations by the
//! engine's [`InlineGate`], so a run of them never recurses. Closing from the timer or unload
//! claims the gate with [`InlineGate::try_close`], so a socket is never closed while a thread is
//! inside a call on it.
//!
//! A context is reference-counted: one reference for the table, one per operation in flight,
//! one while a thread drives, one while the work item is queued. A reference held by this
//! code is a [`ConnRef`], released when it drops; one handed to WSK or to the work item travels
//! as a raw pointer ([`ConnRef::into_raw`]) and is taken back by the callback
//! ([`ConnRef::from_raw`]).

#![allow(
    unsafe_code,
    reason = "WSK calls, IRPs, MDLs and a pool-allocated, reference-counted context"
)]

pub(crate) mod close;
pub(crate) mod io;
pub(crate) mod mailbox;
pub(crate) mod sweep;

use alloc::boxed::Box;

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use khttp_engine::limits::DRIVER_MAX_CONNECTIONS;
use khttp_engine::pace::SendSize;
use khttp_engine::wake::{MAIL, Wake};
use khttp_engine::{
    Admission, Body, Connection, InlineGate, Local, Outcome, RequestId, Site, SlotTable, admit,
};
use khttp_wsk::{PWSK_SOCKET, WSK_BUF, WSK_PROVIDER_CONNECTION_DISPATCH};

use wdk::wdf::SpinLock;

use wdk_sys::{
    _WORK_QUEUE_TYPE, NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, WDFDEVICE,
    WORK_QUEUE_TYPE,
};

use crate::global::{SpinGuard, clock, spin_lock};
use crate::irp::{
    OwnedIrp, OwnedMdl, OwnedWorkItem, PoolBox, TAG_CONNECTION, TAG_RECEIVE, pool_free,
};
use close::{CloseCell, CloseStep};
use io::{close_code, queue_drive};
use mailbox::{Ack, Mailbox};

/// `DelayedWorkQueue` for `IoQueueWorkItem`.
const WORK_QUEUE_DELAYED: WORK_QUEUE_TYPE = _WORK_QUEUE_TYPE::DelayedWorkQueue;

/// Receive buffer per connection (non-paged; the budget in docs/driver-facts.md, "Memory and MDLs").
const RX_LEN: usize = 8 * 1024;

/// Connection contexts the driver holds at once: those it serves (`max-connections`, at most
/// [`DRIVER_MAX_CONNECTIONS`]) and those it answers 503.
const MAX_SLOTS: usize = DRIVER_MAX_CONNECTIONS + khttp_engine::limits::OVERLOAD_CONNECTIONS;

/// The live contexts, for the timer sweep and unload, and the counts admission control needs.
struct Table {
    /// Each slot's context. Changed only under `lock`: a context found here under the lock
    /// still holds its slot reference.
    slots: Box<[AtomicPtr<ConnCtx>]>,
    /// Which slots are free and which are live (the engine's [`SlotTable`]).
    /// INVARIANT: touched only while `lock` is held.
    free: UnsafeCell<SlotTable>,
    lock: SpinLock,
    /// Live contexts answered 503 (over `max-connections`); changed only under `lock`.
    overloaded: AtomicUsize,
    /// Contexts not yet freed (unload waits for 0).
    live: AtomicUsize,
}

impl Table {
    /// Runs `f` on the slot table under the lock (<= DISPATCH_LEVEL).
    fn with<R>(&self, f: impl FnOnce(&mut SlotTable) -> R) -> R {
        let _guard = SpinGuard::new(&self.lock);
        // SAFETY: the lock is held (invariant of `free`), so this is the only access.
        f(unsafe { &mut *self.free.get() })
    }

    /// Gives `slot` back (under the lock, from [`Table::with`]).
    fn leave(&self, free: &mut SlotTable, slot: usize, overload: bool) {
        if let Some(s) = self.slots.get(slot) {
            s.store(ptr::null_mut(), Ordering::Release);
        }
        if overload {
            self.overloaded.fetch_sub(1, Ordering::AcqRel);
        }
        free.release(u32::try_from(slot).unwrap_or(u32::MAX));
    }
}

struct TableCell(UnsafeCell<Option<Table>>);

// SAFETY: written once in DriverEntry before WSK can call back, and cleared in unload after WSK
// is deregistered; in between it is only read, and `Table` synchronises its own contents.
unsafe impl Sync for TableCell {}

static TABLE: TableCell = TableCell(UnsafeCell::new(None));

fn table() -> Option<&'static Table> {
    // SAFETY: see `TableCell`: between install and uninstall the value is only read.
    unsafe { (*TABLE.0.get()).as_ref() }
}

/// Allocates the connection table, its spin lock parented to `device`.
///
/// # Safety
/// DriverEntry, PASSIVE_LEVEL, before WSK is registered; once.
pub(crate) unsafe fn install_table(device: WDFDEVICE) -> NTSTATUS {
    let Ok(lock) = spin_lock(device) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let mut slots = Vec::new();
    if slots.try_reserve_exact(MAX_SLOTS).is_err() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    slots.resize_with(MAX_SLOTS, || AtomicPtr::new(ptr::null_mut()));
    let Ok(free) = SlotTable::try_new(u32::try_from(MAX_SLOTS).unwrap_or(u32::MAX)) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let t = Table {
        slots: slots.into_boxed_slice(),
        free: UnsafeCell::new(free),
        lock,
        overloaded: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
    };
    // SAFETY: no reader exists yet (contract).
    unsafe { *TABLE.0.get() = Some(t) };
    STATUS_SUCCESS
}

/// Frees the connection table.
///
/// # Safety
/// No WSK callback, work item or completion can run any more (unload after `shutdown`, or a
/// DriverEntry failing before WSK was registered).
pub(crate) unsafe fn uninstall_table() {
    // SAFETY: no reader remains (contract).
    unsafe { *TABLE.0.get() = None };
}

/// Contexts not yet freed.
pub(crate) fn live() -> usize {
    table().map_or(0, |t| t.live.load(Ordering::Acquire))
}

/// One reference to a connection context, released when it drops.
struct ConnRef(NonNull<ConnCtx>);

impl ConnRef {
    /// Takes a new reference to `ctx`.
    ///
    /// # Safety
    /// `ctx` is a live context: the caller holds a reference to it, or holds the table's lock
    /// and found it in the table (where it holds its slot reference).
    unsafe fn new(ctx: *mut ConnCtx) -> Option<Self> {
        let p = NonNull::new(ctx)?;
        // SAFETY: live (contract).
        unsafe { p.as_ref() }.refs.fetch_add(1, Ordering::AcqRel);
        Some(Self(p))
    }

    /// Adopts a reference the caller owns (one handed over by [`ConnRef::into_raw`]).
    ///
    /// # Safety
    /// `ctx` is a live context, and the caller owns one of its references, which this now owns.
    unsafe fn from_raw(ctx: *mut ConnCtx) -> Option<Self> {
        NonNull::new(ctx).map(Self)
    }

    /// Takes one more reference.
    fn share(&self) -> Self {
        self.refs.fetch_add(1, Ordering::AcqRel);
        Self(self.0)
    }

    /// Hands the reference over as a raw pointer (to WSK or the work item), not releasing it.
    fn into_raw(self) -> *mut ConnCtx {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }

    fn as_ptr(&self) -> *mut ConnCtx {
        self.0.as_ptr()
    }
}

impl core::ops::Deref for ConnRef {
    type Target = ConnCtx;
    fn deref(&self) -> &ConnCtx {
        // SAFETY: the reference this value owns keeps the context live.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        // SAFETY: this value owns one reference, given up here once.
        unsafe { release(self.0.as_ptr()) };
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
    /// The application's call for a streamed answer's last piece, held until the connection
    /// wants the next (see [`Ack`]).
    held: Option<(RequestId, Ack)>,
    last: Option<Op>,
    failed: bool,
    /// Bytes sent on this connection: all of them may be unacknowledged when the disconnect
    /// starts (WSK does not say what the transport still holds).
    sent: u64,
    /// The next send's most bytes: a send completes only once acknowledged, so each carries a
    /// fraction of the send-rate window at the client's pace (`khttp_engine::pace`).
    pace: SendSize,
    /// When the send in flight was issued (ms).
    send_issued: u64,
    /// The send in flight's MDL, freed when the send has completed.
    tx_mdl: Option<OwnedMdl>,
    tx_body: Option<Body>,
    buf: WSK_BUF,
}

impl Inner {
    /// A new connection's driving state: nothing sent, nothing in flight.
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            held: None,
            last: None,
            failed: false,
            sent: 0,
            pace: SendSize::new(),
            send_issued: 0,
            tx_mdl: None,
            tx_body: None,
            buf: WSK_BUF {
                Mdl: ptr::null_mut(),
                Offset: 0,
                Length: 0,
            },
        }
    }
}

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
    close_step: CloseCell,
    io_irp: OwnedIrp,
    close_irp: OwnedIrp,
    /// Drives the connection at PASSIVE_LEVEL: the first time after the accept event has
    /// returned (finding 5), and whenever a completion arrives with little stack left
    /// (finding 13).
    work: OwnedWorkItem,
    /// The receive buffer (`RX_LEN` bytes), and the MDL that describes it (declared first, so
    /// that it is freed first).
    rx_mdl: OwnedMdl,
    rx_buf: PoolBox,
    /// The request an application has (the engine's `waiting_for`), or 0: what the close
    /// cancels in the hand-off, whose reference to this context it then releases.
    deferred: AtomicU64,
    /// Whether its driver stopped with nothing to do while an application works on its
    /// request, and what was posted to it since it last looked: an application's answer
    /// (`MAIL`), or WSK's word that the client disconnected ([`on_disconnect`], `PEER_LEFT`:
    /// while a request is with an application no receive is pending, and this is how the
    /// connection learns that its client left). Who un-parks it becomes its driver
    /// (`khttp_engine::wake`).
    wake: Wake,
    /// The applications' answers, until the driver takes them.
    mail: Mailbox,
    /// INVARIANT: accessed only by the thread that drives the connection (the gate's holder,
    /// or the work item before the first operation), or by `release` once `refs` is zero.
    inner: UnsafeCell<Inner>,
}

impl ConnCtx {
    /// Allocates a context for an accepted socket, with one reference (the slot's); null on
    /// any allocation failure.
    ///
    /// # Safety
    /// `socket` is an accepted WSK socket whose dispatch is a connection dispatch; <=
    /// DISPATCH_LEVEL.
    unsafe fn create(
        socket: PWSK_SOCKET,
        (local, remote): (Local, Option<Local>),
        slot: usize,
        site: &Site,
        overload: bool,
    ) -> *mut Self {
        // SAFETY: <= DISPATCH_LEVEL (accept callback). Each is freed when it drops: on
        // failure here, or with the context's last reference (`release`), once no operation
        // uses it.
        let block = unsafe { PoolBox::zeroed(size_of::<Self>(), TAG_CONNECTION) };
        // SAFETY: as above.
        let rx_buf = unsafe { PoolBox::zeroed(RX_LEN, TAG_RECEIVE) };
        // SAFETY: as above.
        let io_irp = unsafe { OwnedIrp::allocate() };
        // SAFETY: as above.
        let close_irp = unsafe { OwnedIrp::allocate() };
        // SAFETY: as above.
        let work = unsafe { OwnedWorkItem::allocate() };
        // SAFETY: `rx_buf` is non-paged pool of RX_LEN bytes; the MDL is freed before it (field
        // order in `ConnCtx`, or here, where it drops first).
        let rx_mdl = rx_buf
            .as_ref()
            .and_then(|b| unsafe { OwnedMdl::describe(b.as_ptr(), b.len()) });
        let (Some(block), Some(rx_mdl), Some(rx_buf), Some(io_irp), Some(close_irp), Some(work)) =
            (block, rx_mdl, rx_buf, io_irp, close_irp, work)
        else {
            return ptr::null_mut();
        };
        let clock = clock();
        let mut conn = if overload {
            Connection::unavailable(local, &clock, site)
        } else {
            Connection::new(local, &clock, site)
        };
        if let Some(remote) = remote {
            conn.set_remote(remote);
        }
        let ctx = Self {
            socket,
            // SAFETY: an accepted socket's dispatch is a WSK_PROVIDER_CONNECTION_DISPATCH (WSK_SOCKET).
            dispatch: unsafe { (*socket).Dispatch.cast() },
            gate: InlineGate::new(),
            close_gate: InlineGate::new(),
            refs: AtomicUsize::new(1), // the slot's
            slot,
            deadline_ms: AtomicU64::new(u64::MAX),
            deadline_close: AtomicU8::new(close_code(None)),
            overload,
            close_step: CloseCell::new(CloseStep::None),
            io_irp,
            close_irp,
            work,
            rx_mdl,
            rx_buf,
            deferred: AtomicU64::new(0),
            wake: Wake::new(),
            mail: Mailbox::new(),
            inner: UnsafeCell::new(Inner::new(conn)),
        };
        let raw = block.into_raw().cast::<Self>();
        // SAFETY: `raw` is a fresh, suitably sized and aligned (pool: 16 bytes) allocation.
        unsafe { raw.write(ctx) };
        if let Some(t) = table() {
            t.live.fetch_add(1, Ordering::AcqRel);
        }
        raw
    }
}

/// Drops a reference; the last one frees the context.
///
/// # Safety
/// The caller owns one reference to the live context `ctx`, and gives it up.
unsafe fn release(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds a reference, so `ctx` is live.
    if unsafe { (*ctx).refs.fetch_sub(1, Ordering::AcqRel) } != 1 {
        return;
    }
    // SAFETY: no reference remains: nothing else can touch the context, and no operation uses
    // its IRPs, MDLs, buffer or work item. Dropping it frees them (their guards; a send's MDL
    // survives only if the connection closed mid-send), the Connection's buffers and the body
    // reference.
    unsafe { ptr::drop_in_place(ctx) };
    // SAFETY: as above; the block itself is freed last.
    unsafe { pool_free(ctx.cast()) };
    if let Some(t) = table() {
        t.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a socket that `WskAcceptEvent` offers (<= DISPATCH_LEVEL): admission control (the
/// engine's [`admit`]: served, answered 503, or refused), a slot from the table's free list
/// reserved for this accept alone (issue #9, finding 10: no scan, no race between two
/// accepts), and a context. A work item starts driving it once the accept event has returned,
/// so that nothing here can close the socket WSK is in the middle of offering (finding 5).
/// Returns the socket context for WSK, or `None`: refused (WSK closes the socket).
///
/// # Safety
/// `socket` is the socket the current accept event offers; <= DISPATCH_LEVEL.
pub(super) unsafe fn accept(
    socket: PWSK_SOCKET,
    (local, remote): (Local, Option<Local>),
    site: &Site,
) -> Option<*mut ConnCtx> {
    let t = table()?;
    let (slot, overload) = t.with(|free| {
        let overloaded = t.overloaded.load(Ordering::Acquire);
        let open = free.live_count().saturating_sub(overloaded);
        let overload = match admit(site.limits(), DRIVER_MAX_CONNECTIONS, open, overloaded) {
            Admission::Serve => false,
            Admission::Unavailable => true,
            Admission::Refuse => return None,
        };
        let slot = free.take()?;
        if overload {
            t.overloaded.fetch_add(1, Ordering::AcqRel);
        }
        Some((slot as usize, overload))
    })?;
    // SAFETY: <= DISPATCH_LEVEL; the offered socket (contract).
    let ctx = unsafe { ConnCtx::create(socket, (local, remote), slot, site, overload) };
    if ctx.is_null() {
        t.with(|free| t.leave(free, slot, overload));
        return None;
    }
    // The context's first reference is the slot's.
    t.with(|_| {
        if let Some(s) = t.slots.get(slot) {
            s.store(ctx, Ordering::Release);
        }
    });
    // SAFETY: the context is live (slot reference); the work item takes its own.
    unsafe { queue_drive(ctx) };
    Some(ctx)
}

/// An application's answer (or its absence) for the request of the connection `origin`:
/// posted for the connection's driver, which is woken if it parked. Releases the hand-off's
/// reference to the context.
///
/// # Safety
/// `origin` is a context pointer that the hand-off held with a reference of its own, which
/// the caller took out of the hand-off and now gives up.
pub(crate) unsafe fn deliver(origin: usize, id: RequestId, outcome: Outcome) {
    // SAFETY: the hand-off's reference (contract), passed on.
    unsafe { deliver_held(origin, id, outcome, None) };
}

/// A new reference to the connection context `origin`, for a streamed answer's piece while
/// the hand-off keeps its own ([`deliver_held`] gives it up).
///
/// # Safety
/// `origin` is a context the hand-off holds with a reference, and the caller holds the
/// hand-off's lock (so that reference cannot go meanwhile).
pub(crate) unsafe fn share_origin(origin: usize) -> Option<usize> {
    // SAFETY: live while the hand-off's reference is held (contract).
    let c = unsafe { ConnRef::new(origin as *mut ConnCtx) }?;
    Some(c.into_raw() as usize)
}

/// As [`deliver`], with an application's call to answer once the connection has taken the
/// outcome (a streamed answer's head or piece).
///
/// # Safety
/// As [`deliver`]: `origin` comes with a reference the caller gives up.
pub(crate) unsafe fn deliver_held(
    origin: usize,
    id: RequestId,
    outcome: Outcome,
    ack: Option<Ack>,
) {
    // SAFETY: the caller's reference (contract), released when `c` drops.
    let Some(c) = (unsafe { ConnRef::from_raw(origin as *mut ConnCtx) }) else {
        return;
    };
    if !c.mail.put(id, outcome, ack) {
        return;
    }
    if c.wake.post(MAIL) {
        // SAFETY: `c` holds a reference, and un-parking it made this thread the driver.
        unsafe { queue_drive(c.as_ptr()) };
    }
}
