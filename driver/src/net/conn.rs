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

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use khttp_engine::limits::DRIVER_MAX_CONNECTIONS;
use khttp_engine::pace::SendSize;
use khttp_engine::wake::{MAIL, PEER_LEFT, Wake};
use khttp_engine::{
    Admission, Body, Clock, Close, Completion, Connection, Delivery, InlineGate, Local, NextIo,
    Outcome, Refusal, RequestId, Site, SlotTable, Transmit, admit, next_io,
};
use khttp_wsk::{PWSK_SOCKET, WSK_BUF, WSK_FLAG_NODELAY, WSK_PROVIDER_CONNECTION_DISPATCH};
use wdk::nt_success;
use wdk::wdf::SpinLock;
use wdk_sys::ntddk::{IoGetStackLimits, IoQueueWorkItem};
use wdk_sys::{
    _WORK_QUEUE_TYPE, NTSTATUS, PDEVICE_OBJECT, PIO_WORKITEM, PIRP, PMDL, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS, WDFDEVICE,
    WORK_QUEUE_TYPE,
};

use crate::global::{SpinGuard, clock, global, spin_lock};
use crate::irp::{
    TAG_CONNECTION, TAG_RECEIVE, allocate_irp, allocate_work_item, free_irp, free_work_item,
    mdl_for, mdl_free, pool_alloc, pool_free, prepare, result, set_result,
};

/// `DelayedWorkQueue` for `IoQueueWorkItem`.
const WORK_QUEUE_DELAYED: WORK_QUEUE_TYPE = _WORK_QUEUE_TYPE::DelayedWorkQueue;

/// Receive buffer per connection (non-paged; the budget in docs/driver-facts.md, "Memory and MDLs").
const RX_LEN: usize = 8 * 1024;

/// What connections ask of the request queues. The application device registers it
/// ([`set_queues`]), so that connections do not depend on it.
pub(crate) struct Queues {
    /// Offers a request: the connection context (with a reference for the queues), the request.
    pub(crate) offer: fn(usize, &Delivery<'_>, &Site) -> Result<RequestId, Refusal>,
    /// Takes a request back (its connection stopped waiting): its origin, if still there.
    pub(crate) cancel: fn(RequestId) -> Option<usize>,
    /// Completes an application's call held for a streamed answer's piece ([`Ack`]: the call
    /// and its ticket): whether the connection took it.
    pub(crate) ack: fn(usize, u64, bool),
}

/// An application's call (a request handle, as a number) held until its connection has taken
/// a streamed answer's piece and wants the next ([`Connection::wants_piece`]), so that an
/// application is never more than one piece and the stream window ahead of its client. Given
/// back through [`Queues::ack`] exactly once: with the word, or with `false` when dropped
/// (the connection went).
/// The ticket tells this hold from a later one of a request handle at the same address (the
/// call may be cancelled and completed meanwhile, and its memory reused).
pub(crate) struct Ack(usize, u64);

impl Ack {
    /// Holds the call `request`, noted with `ticket`.
    pub(crate) const fn new(request: usize, ticket: u64) -> Self {
        Self(request, ticket)
    }

    /// Gives the word.
    fn fire(self, delivered: bool) {
        let (request, ticket) = (self.0, self.1);
        core::mem::forget(self);
        if let Some(q) = queues() {
            (q.ack)(request, ticket, delivered);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(q) = queues() {
            (q.ack)(self.0, self.1, false);
        }
    }
}

static QUEUES: AtomicPtr<Queues> = AtomicPtr::new(ptr::null_mut());

/// Registers the request queues (DriverEntry, before any connection).
pub(crate) fn set_queues(q: &'static Queues) {
    QUEUES.store(ptr::from_ref(q).cast_mut(), Ordering::Release);
}

fn queues() -> Option<&'static Queues> {
    // SAFETY: only `set_queues` stores here, and only a `&'static Queues`.
    unsafe { QUEUES.load(Ordering::Acquire).as_ref() }
}

/// Applications' answers waiting for their connection's driver. Lock-free, and nothing posted
/// is lost or replaced: answers are pushed on a list (each boxed, fallibly; one that cannot be
/// is lost, and the connection answers 503 at its `app-response-timeout`), and the driver takes
/// the whole list at once and feeds them to the engine oldest first, which ignores an answer
/// for a request it no longer waits for. (The first version kept one answer and replaced it:
/// a late 503 for a request the connection had given up could overwrite the answer to the
/// next one, issue #22 defect 11.) Producers never read a node once pushed, and the only
/// consumer takes the list whole, so no node is freed while another thread reads it.
pub(crate) struct Mailbox(AtomicPtr<Node>);

/// What a mailbox holds: an outcome, and for a streamed answer the call held until it is
/// taken. One never taken drops its call's [`Ack`], which answers it `false`.
type Mail = (RequestId, Outcome, Option<Ack>);

pub(crate) struct Node {
    mail: Mail,
    next: *mut Self,
}

impl Mailbox {
    const fn new() -> Self {
        Self(AtomicPtr::new(ptr::null_mut()))
    }

    /// Pushes an answer; false when it could not be allocated.
    fn put(&self, id: RequestId, outcome: Outcome, ack: Option<Ack>) -> bool {
        let Ok(b) = Box::try_new(Node {
            mail: (id, outcome, ack),
            next: ptr::null_mut(),
        }) else {
            return false;
        };
        let node = Box::into_raw(b);
        let mut head = self.0.load(Ordering::Acquire);
        loop {
            // SAFETY: `node` is ours until the exchange below publishes it.
            unsafe { (*node).next = head };
            match self
                .0
                .compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => head = now,
            }
        }
    }

    /// Takes every answer posted, oldest first.
    fn take_all(&self) -> Vec<Mail> {
        let mut p = self.0.swap(ptr::null_mut(), Ordering::AcqRel);
        let mut out = Vec::new();
        while !p.is_null() {
            // SAFETY: a node this mailbox owned (from `put`), taken out of the list whole.
            let node = unsafe { Box::from_raw(p) };
            p = node.next;
            // At most as many as the connection offered requests: the reservation fails only
            // with no memory at all, and then the answer is dropped (its Ack answers false).
            if out.try_reserve(1).is_ok() {
                out.push(node.mail);
            }
        }
        out.reverse();
        out
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        drop(self.take_all());
    }
}

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
    tx_mdl: PMDL,
    tx_body: Option<Body>,
    buf: WSK_BUF,
}

const CLOSE_NONE: u8 = 0;
const CLOSE_DISCONNECTING: u8 = 1;
const CLOSE_CLOSING: u8 = 2;
/// `WskCloseSocket` could not be issued (no memory for its completion context): the sweep
/// issues it.
const CLOSE_RETRY: u8 = 3;

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
            close_step: AtomicU8::new(CLOSE_NONE),
            io_irp,
            close_irp,
            work,
            rx_buf,
            rx_mdl,
            deferred: AtomicU64::new(0),
            wake: Wake::new(),
            mail: Mailbox::new(),
            inner: UnsafeCell::new(Inner {
                conn,
                held: None,
                last: None,
                failed: false,
                sent: 0,
                pace: SendSize::new(),
                send_issued: 0,
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
        if let Some(t) = table() {
            t.live.fetch_add(1, Ordering::AcqRel);
        }
        raw
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
///
/// # Safety
/// The caller owns one reference to the live context `ctx`, and gives it up.
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

/// Queues the connection's work item to drive it at PASSIVE_LEVEL. At most one is queued at a
/// time: only the connection's current driver queues it.
///
/// # Safety
/// The caller holds a reference and is the connection's driver (or the accept event).
unsafe fn queue_drive(ctx: *mut ConnCtx) {
    // SAFETY: live (caller's reference).
    let Some(work_ref) = (unsafe { ConnRef::new(ctx) }) else {
        return;
    };
    let work = work_ref.work;
    // SAFETY: our work item, not queued (contract); DelayedWorkQueue at <= DISPATCH_LEVEL. The
    // work item's reference travels as its context.
    unsafe {
        IoQueueWorkItem(
            work,
            Some(on_work),
            WORK_QUEUE_DELAYED,
            work_ref.into_raw().cast(),
        )
    };
}

/// The work item: drive, then drop the work item's reference.
///
/// # Safety
/// Called by the I/O manager with the context [`queue_drive`] gave, which carries the work
/// item's reference.
unsafe extern "C" fn on_work(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: the work item's reference (contract), released when `work_ref` drops.
    let Some(work_ref) = (unsafe { ConnRef::from_raw(context.cast()) }) else {
        return;
    };
    // SAFETY: the work item's reference keeps the context live; this thread is the driver.
    unsafe { drive(work_ref.as_ptr(), Stack::Fresh) };
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

/// Completion routine for a connection's send, receive or disconnect.
///
/// # Safety
/// Called by the I/O manager for the connection's own IRP, whose context carries the
/// operation's reference.
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
        Completion::Async => unsafe { drive(ctx, Stack::Completion) },
        // SAFETY: the closer owns the connection; drop the cancelled operation's reference.
        Completion::Closing => drop(unsafe { ConnRef::from_raw(ctx) }),
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Where a connection is driven from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    /// Its work item, at PASSIVE_LEVEL on a stack of its own.
    Fresh,
    /// A completion routine, on the transport's stack.
    Completion,
}

/// Processes the operation that just completed, then starts operations until one is pending,
/// the connection waits, or it closes. Never recurses: inline completions loop here.
///
/// # Safety
/// The caller holds a reference to the live context `ctx` and is its only driver: the work
/// item, or the completion of its one operation.
unsafe fn drive(ctx: *mut ConnCtx, stack: Stack) {
    // SAFETY: live (contract): this call's own reference, for its whole duration (the caller's
    // may be the finished operation's, released below).
    let Some(me) = (unsafe { ConnRef::new(ctx) }) else {
        return;
    };
    let c: &ConnCtx = &me;
    // SAFETY: this thread is the connection's only driver (INVARIANT on `inner`).
    let inner = unsafe { &mut *c.inner.get() };
    while let Some(g) = global() {
        let site = g.site.snapshot();
        let clock = clock();
        if let Some(op) = inner.last.take() {
            // SAFETY: `op` completed on the connection's IRP; this thread drives.
            unsafe { finished(c, inner, op, &clock, &site) };
            // SAFETY: the finished operation's reference, given up here.
            drop(unsafe { ConnRef::from_raw(ctx) });
        }
        if c.close_step.load(Ordering::Acquire) != CLOSE_NONE {
            break; // closing (a parked connection the sweep closed, then woken): the closer's
        }
        if stack == Stack::Completion && inner.conn.poll_delivery().is_some() {
            // Offering a request may complete an application's receive, deeper than a
            // completion's stack allows (measured under the Wine harness): the work item does it.
            publish_deadline(c, inner);
            // SAFETY: `me` holds a reference and this thread is the driver, handing over.
            unsafe { queue_drive(ctx) };
            break;
        }
        exchange(&me, inner, &clock, &site);
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
                // Nothing to do until an application answers or a deadline falls due: park,
                // unless something was posted since `exchange` looked.
                if c.wake.park() {
                    break;
                }
                continue;
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
        // The operation's reference travels as the IRP's context.
        let op_ref = me.share().into_raw();
        // SAFETY: the IRP is idle, the buffer described, and the operation's reference held.
        unsafe { issue(op_ref, c, inner, op) };
        if !c.gate.issued() {
            break; // pending: the completion routine drives from here
        }
    }
}

/// The connection's side of the request queues: a request the engine stopped waiting for
/// leaves the hand-off, an application's answer reaches the engine, and a request the engine
/// offers goes to the hand-off (with a reference to this context) or is refused (503).
/// Never inlined: its locals (an application's answer) would otherwise deepen `drive`'s frame
/// on every completion's stack.
#[inline(never)]
fn exchange(me: &ConnRef, inner: &mut Inner, clock: &Clock, site: &Site) {
    // A client that left while its request is with an application (nginx's "client closed
    // request"): the engine cancels the request. Otherwise a receive is pending or comes, and
    // sees the FIN itself.
    let posted = me.wake.take();
    if posted & PEER_LEFT != 0 && inner.conn.waiting_for().is_some() {
        inner.conn.handle_eof(clock, site);
    }
    if let Some(id) = inner.conn.take_cancelled() {
        me.deferred.store(0, Ordering::Release);
        if let Some(origin) = queues().and_then(|q| (q.cancel)(id)) {
            // SAFETY: the hand-off's reference to this context, given back by the cancel.
            drop(unsafe { ConnRef::from_raw(origin as *mut ConnCtx) });
        }
    }
    let mail = if posted & MAIL != 0 {
        me.mail.take_all()
    } else {
        Vec::new()
    };
    for (id, outcome, ack) in mail {
        let taken = inner.conn.handle_outcome(id, &outcome, clock, site);
        if taken {
            // 0 once answered; a streamed answer still waits for its pieces.
            let waiting = inner.conn.waiting_for().map_or(0, |w| w.0);
            me.deferred.store(waiting, Ordering::Release);
        }
        if let Some(ack) = ack {
            if taken && inner.conn.waiting_for() == Some(id) {
                // Replaces (and so answers `false`) any call held before.
                inner.held = Some((id, ack));
            } else {
                ack.fire(taken);
            }
        }
    }
    if let Some((id, _)) = &inner.held {
        if inner.conn.waiting_for() != Some(*id) {
            if let Some((_, ack)) = inner.held.take() {
                ack.fire(false);
            }
        } else if inner.conn.wants_piece()
            && let Some((_, ack)) = inner.held.take()
        {
            ack.fire(true);
        }
    }
    if let Some(d) = inner.conn.poll_delivery() {
        let origin = me.share().into_raw();
        let offered = queues().map_or(Err(Refusal::NoApplication), |q| {
            (q.offer)(origin as usize, &d, site)
        });
        match offered {
            Ok(id) => {
                me.deferred.store(id.0, Ordering::Release);
                inner.conn.handle_queued(id, clock);
            }
            Err(refusal) => {
                // SAFETY: the reference taken for the hand-off, which did not keep it.
                drop(unsafe { ConnRef::from_raw(origin) });
                inner.conn.handle_refused(refusal, clock, site);
            }
        }
    }
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

/// `WskDisconnectEvent` (<= DISPATCH_LEVEL): the client shut its side or reset the connection.
/// Noted for the connection's driver, which is woken if it parked (a request with an
/// application, nothing pending on the socket).
///
/// # Safety
/// Called by WSK with the socket context of an accepted connection: a context that lives until
/// its socket's close completes, after which WSK calls no event on it.
pub(crate) unsafe extern "system" fn on_disconnect(
    context: *mut core::ffi::c_void,
    _flags: u32,
) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: live while its socket is open (contract), which holds the slot's reference.
    let Some(c) = (unsafe { ConnRef::new(ctx) }) else {
        return STATUS_SUCCESS;
    };
    if c.close_step.load(Ordering::Acquire) != CLOSE_NONE {
        return STATUS_SUCCESS; // closing anyway
    }
    if c.wake.post(PEER_LEFT) {
        // SAFETY: `c` holds a reference, and un-parking it made this thread the driver.
        unsafe { queue_drive(c.as_ptr()) };
    }
    STATUS_SUCCESS
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
            if cfg!(feature = "fault-unchecked-alloc") {
                // The harness's injected fault: allocations that panic when memory is short,
                // 32 per receive, so that 2% failing hits one in any run (one per receive was
                // missed by a seed whose run failed few allocations).
                for _ in 0..32 {
                    drop(core::hint::black_box(Box::new([0u8; 64])));
                }
            }
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
                let took = clock.now().0.saturating_sub(inner.send_issued);
                inner.pace.completed(n, took, site.limits().min_send_rate);
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
            let len = len.min(inner.pace.get());
            inner.send_issued = clock().now().0;
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
    if !unsafe { prepare(c.io_irp, on_io, ctx.cast()) } {
        // No completion routine could be set, so the operation fails here, as if WSK had
        // completed it at once with STATUS_INSUFFICIENT_RESOURCES: an inline completion, which
        // `drive` already handles (the engine then closes the connection).
        // SAFETY: the IRP is ours and not in flight.
        unsafe { set_result(c.io_irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
        // SAFETY: the operation's reference travels as `ctx`, as a completion would carry it.
        unsafe { on_io(ptr::null_mut(), c.io_irp, ctx.cast()) };
        return;
    }
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
    c.deadline_close.store(
        close_code(deadline.and_then(|d| d.close)),
        Ordering::Release,
    );
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
/// abortive: docs/driver-facts.md, "Closing sockets"; it cancels a pending operation).
/// Graceful (the sweep, for an idle connection): `WskDisconnect`, then `WskCloseSocket` once
/// the disconnect call has returned, through `close_gate` (issue #9, finding 2).
///
/// # Safety
/// The caller holds a reference to the live context `ctx` and claimed its gate for closing
/// ([`InlineGate::try_close`]), so no other call on the socket is in progress.
unsafe fn start_close(ctx: *mut ConnCtx, kind: Close) {
    // SAFETY: live (contract).
    let _ = unsafe { &*ctx }.wake.claim();
    // SAFETY: live (contract). The close sequence's reference travels as the close IRP's
    // context until `on_close` gives it up.
    let Some(close_ref) = (unsafe { ConnRef::new(ctx) }) else {
        return;
    };
    let ctx = close_ref.into_raw();
    // SAFETY: the close sequence's reference keeps it live.
    let c = unsafe { &*ctx };
    if kind == Close::Graceful {
        // SAFETY: no other call on the socket is in progress (the gate is closing).
        if let Some(disconnect) = unsafe { (*c.dispatch).WskDisconnect }
            && c.close_gate.begin()
        {
            c.close_step.store(CLOSE_DISCONNECTING, Ordering::Release);
            // SAFETY: the close IRP is only used by the close sequence, which we own.
            if unsafe { prepare(c.close_irp, on_close, ctx.cast()) } {
                // SAFETY: no buffer; the IRP is prepared.
                unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.close_irp.cast()) };
            } else {
                // No memory for the completion routine's context: no disconnect, as if it had
                // failed at once (an inline completion), and the close below is abortive.
                let _ = c.close_gate.complete();
            }
            if !c.close_gate.issued() {
                return; // pending: on_close issues the close
            }
        }
    }
    // SAFETY: the close sequence's reference is held; nothing else is in progress on the socket.
    unsafe { issue_close(ctx) };
}

/// `WskCloseSocket` with the close IRP.
///
/// # Safety
/// The close sequence's reference to `ctx` is held (by its IRP's context), and no other call on
/// the socket is in progress.
unsafe fn issue_close(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds the close sequence's reference.
    let c = unsafe { &*ctx };
    // SAFETY: the close IRP is idle: the disconnect, if any, has completed.
    if !unsafe { prepare(c.close_irp, on_close, ctx.cast()) } {
        // No memory for the completion routine's context, and the socket must be closed: the
        // sweep tries again at its next pass (every second, or every 100 ms while unloading),
        // with the close sequence's reference still held.
        c.close_step.store(CLOSE_RETRY, Ordering::Release);
        return;
    }
    c.close_step.store(CLOSE_CLOSING, Ordering::Release);
    // SAFETY: as above; WskCloseSocket cancels any pending operation.
    if let Some(close) = unsafe { (*c.dispatch).Basic.WskCloseSocket } {
        // SAFETY: the IRP is prepared; no other call on the socket is in progress.
        unsafe { close(c.socket, c.close_irp.cast()) };
    }
}

/// Completion routine of the close sequence.
///
/// # Safety
/// Called by the I/O manager for the connection's close IRP, whose context carries the close
/// sequence's reference.
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
    // A request an application still has leaves the hand-off, with its reference.
    let id = c.deferred.swap(0, Ordering::AcqRel);
    if id != 0
        && let Some(origin) = queues().and_then(|q| (q.cancel)(RequestId(id)))
    {
        // SAFETY: the hand-off's reference, given back by the cancel; the close's is still held.
        drop(unsafe { ConnRef::from_raw(origin as *mut ConnCtx) });
    }
    // Closed: leave the slot table (under its lock, so a sweep holding the lock never sees a
    // context without its slot reference), then drop the slot's and the close's references.
    if let Some(t) = table() {
        t.with(|free| t.leave(free, c.slot, c.overload));
    }
    // SAFETY: the close operation's reference (contract), this routine's to release.
    drop(unsafe { ConnRef::from_raw(ctx) });
    // SAFETY: the slot's reference, which the table gave up above; released last.
    drop(unsafe { ConnRef::from_raw(ctx) });
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
    let Some(t) = table() else { return };
    let now = clock().now().0;
    let mut at = 0usize;
    loop {
        // Only live slots are visited (the engine's SlotTable), a batch per lock hold. A
        // connection that closes meanwhile moves another into its place, so one may be missed
        // this time; the next sweep sees it.
        let mut batch: [Option<ConnRef>; BATCH] = [const { None }; BATCH];
        let n = t.with(|free| {
            let mut n = 0usize;
            for (dst, &slot) in batch.iter_mut().zip(free.live().iter().skip(at)) {
                let p = t
                    .slots
                    .get(slot as usize)
                    .map_or(ptr::null_mut(), |s| s.load(Ordering::Acquire));
                // SAFETY: in the table under the lock, the context holds its slot reference.
                *dst = unsafe { ConnRef::new(p) };
                n += 1;
            }
            n
        });
        if n == 0 {
            return;
        }
        at += n;
        for c in batch.iter().take(n).flatten() {
            if c.close_step
                .compare_exchange(
                    CLOSE_RETRY,
                    CLOSE_CLOSING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                // SAFETY: the close sequence's reference is still held (`issue_close` kept it
                // when it could not issue), and only the close sequence touches the socket.
                unsafe { issue_close(c.as_ptr()) };
                continue;
            }
            let kind = match (mode, c.deadline_close.load(Ordering::Acquire)) {
                (Sweep::All, _) | (_, 3) => Some(Close::Abortive),
                (_, 1) => Some(Close::Graceful),
                (_, 2) => Some(Close::Finished),
                _ => None, // its driver is acting on it now
            };
            let due = mode == Sweep::All || now >= c.deadline_ms.load(Ordering::Acquire);
            // Unload's drain also closes connections with no response in flight.
            let idle = mode == Sweep::Idle && kind.is_some_and(|k| k != Close::Abortive);
            if kind.is_none() && due && c.wake.claim() {
                // A deadline that does not close (an application's time to answer): the engine
                // decides what happens, on the connection's driver.
                // SAFETY: `c` holds a reference, and un-parking it made this the driver.
                unsafe { queue_drive(c.as_ptr()) };
                continue;
            }
            if let Some(kind) = kind
                && (due || idle)
            {
                if c.gate.try_close() {
                    // SAFETY: we claimed the close and hold a reference (`c`).
                    unsafe { start_close(c.as_ptr(), kind) };
                } else if due {
                    // A thread is inside a call: it acts on the request at its next step.
                    c.gate.request_close();
                }
            }
        }
        // The batch's references drop here, outside the lock.
        drop(batch);
    }
}
