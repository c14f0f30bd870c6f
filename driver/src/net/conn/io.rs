//! Driving a connection: the one operation in flight (`WskReceive`, `WskSend`,
//! `WskDisconnect`) on the connection's IRP, its completion, the engine's next step, the work
//! item that drives at PASSIVE_LEVEL, and the disconnect event.

#![allow(
    unsafe_code,
    reason = "WSK calls, IRPs, MDLs and a pool-allocated, reference-counted context"
)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::ptr;
use core::sync::atomic::Ordering;

use khttp_engine::wake::{MAIL, PEER_LEFT};
use khttp_engine::{Body, Clock, Close, Completion, NextIo, Refusal, Site, Transmit, next_io};
use khttp_wsk::{WSK_BUF, WSK_FLAG_NODELAY};
use wdk::nt_success;

use wdk_sys::ntddk::{IoGetStackLimits, IoQueueWorkItem};
use wdk_sys::{
    NTSTATUS, PDEVICE_OBJECT, PIRP, PVOID, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS,
};

use crate::global::{clock, global};
use crate::irp::{OwnedMdl, prepare, result, set_result};

use super::close::{CloseStep, start_close};
use super::mailbox::queues;
use super::{ConnCtx, ConnRef, Inner, Op, RX_LEN, WORK_QUEUE_DELAYED};

/// Stack left below which a completion hands the connection to its work item instead of
/// driving the engine on tcpip's stack (issue #9, finding 13). An x64 kernel stack is 24 KiB
/// (KERNEL_STACK_SIZE). Measured under the Wine harness (tests/wine, stack painting around
/// each completion): a whole completion, with the engine's step and the nested WSK calls, used
/// at most 8,280 bytes, and the harness fails a run in which one uses more than this.
pub(super) const MIN_STACK: usize = 12 * 1024;

/// `IoGetRemainingStackSize` (an inline in wdm.h): the current stack position less the limit.
pub(super) fn remaining_stack() -> usize {
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
pub(super) unsafe extern "C" fn on_io(
    _device: PDEVICE_OBJECT,
    _irp: PIRP,
    context: PVOID,
) -> NTSTATUS {
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
pub(super) enum Stack {
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
pub(super) unsafe fn drive(ctx: *mut ConnCtx, stack: Stack) {
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
        if c.close_step.load() != CloseStep::None {
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
pub(super) fn exchange(me: &ConnRef, inner: &mut Inner, clock: &Clock, site: &Site) {
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

/// Feeds a completed operation's result to the engine or to the close sequence.
///
/// # Safety
/// `op` was issued on `c.io_irp` and has completed; the caller is the connection's driver.
pub(super) unsafe fn finished(c: &ConnCtx, inner: &mut Inner, op: Op, clock: &Clock, site: &Site) {
    // SAFETY: the operation completed, so the IRP's status is final.
    let (status, info) = unsafe { result(c.io_irp.as_ptr()) };
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
            let data = unsafe { core::slice::from_raw_parts(c.rx_buf.as_ptr(), n.min(RX_LEN)) };
            inner.conn.handle_input(data, clock, site);
        }
        Op::Send => {
            // The send completed: its MDL is unused again.
            inner.tx_mdl = None;
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
pub(super) fn next_step(c: &ConnCtx, inner: &mut Inner, clock: &Clock) -> Result<Op, NextIo> {
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
pub(super) unsafe fn describe(c: &ConnCtx, inner: &mut Inner, op: Op) -> bool {
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
            // and `tx_body` keeps the body alive; the MDL is dropped once the send completed.
            let Some(mdl) = (unsafe { OwnedMdl::describe(va, len) }) else {
                inner.failed = true;
                return false;
            };
            let ptr = mdl.as_ptr();
            inner.tx_mdl = Some(mdl);
            inner.tx_body = body;
            inner.buf = WSK_BUF {
                Mdl: ptr.cast(),
                Offset: 0,
                Length: len,
            };
        }
        Op::Receive => {
            inner.buf = WSK_BUF {
                Mdl: c.rx_mdl.as_ptr().cast(),
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
pub(super) unsafe fn issue(ctx: *mut ConnCtx, c: &ConnCtx, inner: &mut Inner, op: Op) {
    // SAFETY: the IRP is idle (one operation at a time) and `ctx` outlives it (reference).
    if !unsafe { prepare(c.io_irp.as_ptr(), on_io, ctx.cast()) } {
        // No completion routine could be set, so the operation fails here, as if WSK had
        // completed it at once with STATUS_INSUFFICIENT_RESOURCES: an inline completion, which
        // `drive` already handles (the engine then closes the connection).
        // SAFETY: the IRP is ours and not in flight.
        unsafe { set_result(c.io_irp.as_ptr(), STATUS_INSUFFICIENT_RESOURCES, 0) };
        // SAFETY: the operation's reference travels as `ctx`, as a completion would carry it.
        unsafe { on_io(ptr::null_mut(), c.io_irp.as_ptr(), ctx.cast()) };
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
                unsafe {
                    call(
                        c.socket,
                        &raw mut inner.buf,
                        flags,
                        c.io_irp.as_ptr().cast(),
                    )
                };
            }
        }
        Op::Disconnect => {
            if let Some(disconnect) = dispatch.WskDisconnect {
                // SAFETY: graceful, no final data; the IRP is prepared.
                unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.io_irp.as_ptr().cast()) };
            }
        }
    }
}

/// Publishes the engine's next deadline, and how it closes the connection, for the sweep
/// (which cannot touch the engine: another thread may be driving it).
pub(super) fn publish_deadline(c: &ConnCtx, inner: &Inner) {
    let deadline = inner.conn.poll_deadline();
    c.deadline_ms
        .store(deadline.map_or(u64::MAX, |d| d.at.0), Ordering::Release);
    c.deadline_close.store(
        close_code(deadline.and_then(|d| d.close)),
        Ordering::Release,
    );
}

/// [`Close`] as a byte for an atomic (`None`: no deadline).
pub(super) const fn close_code(close: Option<Close>) -> u8 {
    match close {
        None => 0,
        Some(Close::Graceful) => 1,
        Some(Close::Finished) => 2,
        Some(Close::Abortive) => 3,
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
    if c.close_step.load() != CloseStep::None {
        return STATUS_SUCCESS; // closing anyway
    }
    if c.wake.post(PEER_LEFT) {
        // SAFETY: `c` holds a reference, and un-parking it made this thread the driver.
        unsafe { queue_drive(c.as_ptr()) };
    }
    STATUS_SUCCESS
}

/// Queues the connection's work item to drive it at PASSIVE_LEVEL. At most one is queued at a
/// time: only the connection's current driver queues it.
///
/// # Safety
/// The caller holds a reference and is the connection's driver (or the accept event).
pub(super) unsafe fn queue_drive(ctx: *mut ConnCtx) {
    // SAFETY: live (caller's reference).
    let Some(work_ref) = (unsafe { ConnRef::new(ctx) }) else {
        return;
    };
    let work = work_ref.work.as_ptr();
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
pub(super) unsafe extern "C" fn on_work(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: the work item's reference (contract), released when `work_ref` drops.
    let Some(work_ref) = (unsafe { ConnRef::from_raw(context.cast()) }) else {
        return;
    };
    // SAFETY: the work item's reference keeps the context live; this thread is the driver.
    unsafe { drive(work_ref.as_ptr(), Stack::Fresh) };
}
