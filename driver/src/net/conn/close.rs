//! Closing a connection: the close sequence (`WskDisconnect`, then `WskCloseSocket`) as its
//! own trampoline, and the sweep that enforces deadlines, retries closes and empties the table
//! at unload.

#![allow(
    unsafe_code,
    reason = "WSK calls, IRPs, MDLs and a pool-allocated, reference-counted context"
)]

use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use khttp_engine::{Close, Completion, RequestId};

use wdk_sys::{NTSTATUS, PDEVICE_OBJECT, PIRP, PVOID, STATUS_MORE_PROCESSING_REQUIRED};

use crate::irp::prepare;

use super::mailbox::queues;
use super::{ConnCtx, ConnRef, table};

/// Where a connection's close sequence is (`ConnCtx::close_step`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CloseStep {
    /// Not closing.
    None = 0,
    /// `WskDisconnect` issued; `WskCloseSocket` follows its completion.
    Disconnecting = 1,
    /// `WskCloseSocket` issued.
    Closing = 2,
    /// `WskCloseSocket` could not be issued (no memory for its completion context): the sweep
    /// issues it.
    Retry = 3,
}

/// A [`CloseStep`] that the close sequence, the sweep and the driving thread share.
pub(super) struct CloseCell(pub(super) AtomicU8);

impl CloseCell {
    pub(super) const fn new(step: CloseStep) -> Self {
        Self(AtomicU8::new(step as u8))
    }

    pub(super) fn load(&self) -> CloseStep {
        match self.0.load(Ordering::Acquire) {
            0 => CloseStep::None,
            1 => CloseStep::Disconnecting,
            2 => CloseStep::Closing,
            3 => CloseStep::Retry,
            other => {
                debug_assert!(false, "close step {other} was never stored");
                CloseStep::Closing
            }
        }
    }

    pub(super) fn store(&self, step: CloseStep) {
        self.0.store(step as u8, Ordering::Release);
    }

    /// Moves from `from` to `to`; false when the step was not `from`.
    pub(super) fn advance(&self, from: CloseStep, to: CloseStep) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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
pub(super) unsafe fn start_close(ctx: *mut ConnCtx, kind: Close) {
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
            c.close_step.store(CloseStep::Disconnecting);
            // SAFETY: the close IRP is only used by the close sequence, which we own.
            if unsafe { prepare(c.close_irp.as_ptr(), on_close, ctx.cast()) } {
                // SAFETY: no buffer; the IRP is prepared.
                unsafe { disconnect(c.socket, ptr::null_mut(), 0, c.close_irp.as_ptr().cast()) };
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
pub(super) unsafe fn issue_close(ctx: *mut ConnCtx) {
    // SAFETY: the caller holds the close sequence's reference.
    let c = unsafe { &*ctx };
    // SAFETY: the close IRP is idle: the disconnect, if any, has completed.
    if !unsafe { prepare(c.close_irp.as_ptr(), on_close, ctx.cast()) } {
        // No memory for the completion routine's context, and the socket must be closed: the
        // sweep tries again at its next pass (every second, or every 100 ms while unloading),
        // with the close sequence's reference still held.
        c.close_step.store(CloseStep::Retry);
        return;
    }
    c.close_step.store(CloseStep::Closing);
    // SAFETY: as above; WskCloseSocket cancels any pending operation.
    if let Some(close) = unsafe { (*c.dispatch).Basic.WskCloseSocket } {
        // SAFETY: the IRP is prepared; no other call on the socket is in progress.
        unsafe { close(c.socket, c.close_irp.as_ptr().cast()) };
    }
}

/// Completion routine of the close sequence.
///
/// # Safety
/// Called by the I/O manager for the connection's close IRP, whose context carries the close
/// sequence's reference.
pub(super) unsafe extern "C" fn on_close(
    _device: PDEVICE_OBJECT,
    _irp: PIRP,
    context: PVOID,
) -> NTSTATUS {
    let ctx = context.cast::<ConnCtx>();
    // SAFETY: the close operation holds a reference.
    let c = unsafe { &*ctx };
    if c.close_step.load() == CloseStep::Disconnecting {
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
