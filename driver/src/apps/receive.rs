//! Receives: a request offered by a connection goes straight to a parked receive of an
//! application attached to its queue; a receive with nothing waiting is parked in the manual
//! queue until one is offered. Forwarding and the check for waiting requests happen under the
//! state lock with the offers, so a request and a parked receive never miss each other.

#![allow(
    unsafe_code,
    reason = "WDF queues, requests and file objects through the C ABI; a lock-guarded global"
)]

use alloc::vec::Vec;

use core::ptr;

use khttp_engine::apps::{AppCall, Batch, Room, decode as apps_decode, take_batch};

use khttp_engine::{Delivery, Outcome, Refusal, RequestId, Site};

use khttp_proto::{Command, Status};
use wdk::nt_success;

use wdk_sys::{
    STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_INSUFFICIENT_RESOURCES, WDF_NO_HANDLE,
    WDFFILEOBJECT, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::ioctl::{Buffer, complete, reply, retrieve};

use super::{Apps, apps, taker};
use crate::net::conn::deliver;

/// Takes the next parked receive (of `file`, or any), if any.
///
/// # Safety
/// `queue` is the live manual queue; <= DISPATCH_LEVEL.
pub(super) unsafe fn retrieve_parked(
    queue: WDFQUEUE,
    file: Option<WDFFILEOBJECT>,
) -> Option<WDFREQUEST> {
    let mut r: WDFREQUEST = WDF_NO_HANDLE.cast();
    let status = match file {
        // SAFETY: a live queue (contract) and a file object of its device.
        Some(f) => unsafe {
            call_unsafe_wdf_function_binding!(
                WdfIoQueueRetrieveRequestByFileObject,
                queue,
                f,
                &raw mut r
            )
        },
        // SAFETY: a live queue (contract).
        None => unsafe {
            call_unsafe_wdf_function_binding!(WdfIoQueueRetrieveNextRequest, queue, &raw mut r)
        },
    };
    (nt_success(status) && !r.is_null()).then_some(r)
}

/// A request a connection offers (<= DISPATCH_LEVEL): into the hand-off, and straight to a
/// parked receive of an application attached to its queue, if one waits.
///
/// # Errors
/// [`Refusal`]: the queue is full, memory ran out, or the endpoint is not there.
pub(crate) fn offer(origin: usize, d: &Delivery<'_>, site: &Site) -> Result<RequestId, Refusal> {
    let a = apps().ok_or(Refusal::NoApplication)?;
    let mut handed = None;
    let id = a.with(|st| {
        let id = st.handoff.offer(origin, d, site)?;
        for s in st.sessions.iter().filter(|s| s.attached.contains(&d.queue)) {
            if let Some((r, room)) = parked_receive_for(a, s.file, d.queue) {
                handed = Some((r, s.file, room));
                break;
            }
        }
        Ok(id)
    })?;
    if let Some((r, file, room)) = handed {
        hand_over(a, r, file, room, Origin::Parked);
    }
    Ok(id)
}

/// Parked receives of one handle looked at for one offer, at most: the rest stay parked, and
/// take their requests when they next ask.
pub(super) const RECEIVES_LOOKED_AT: usize = 8;

/// A parked receive of `file` that asked for `queue`, taken out of the manual queue, with its
/// room. Receives of the handle that asked for other queues go back to the head of the queue in
/// their order. (Any parked receive of the handle once took the request, whatever queue it had
/// asked for: issue #22, defect 7.) Under the state lock.
pub(super) fn parked_receive_for(
    a: &Apps,
    file: WDFFILEOBJECT,
    queue: u32,
) -> Option<(WDFREQUEST, Room)> {
    let mut others: [WDFREQUEST; RECEIVES_LOOKED_AT] = [ptr::null_mut(); RECEIVES_LOOKED_AT];
    let mut n = 0usize;
    let mut found = None;
    while n < RECEIVES_LOOKED_AT {
        // SAFETY: our live manual queue and a file object of its device.
        let Some(r) = (unsafe { retrieve_parked(a.receives, Some(file)) }) else {
            break;
        };
        let room = parked_room(r);
        if room.queue == queue {
            found = Some((r, room));
            break;
        }
        if let Some(slot) = others.get_mut(n) {
            *slot = r;
        }
        n = n.saturating_add(1);
    }
    // Back to the head, the last taken first, so that they keep their order.
    for r in others.iter().take(n).rev() {
        requeue(*r);
    }
    found
}

/// Where a receive the driver holds came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Presented by the device's queue: parking forwards it to the manual queue.
    Presented,
    /// Taken out of the manual queue: parking puts it back (`WdfRequestRequeue`), since
    /// forwarding a request to its own queue fails (issue #22, defect 3).
    Parked,
}

/// Puts a receive taken out of the manual queue back at its head; completes it with the error
/// when that fails (it cannot stay with the driver unseen).
pub(super) fn requeue(r: WDFREQUEST) {
    // SAFETY: `r` is a live request the driver took out of its manual queue.
    let status = unsafe { call_unsafe_wdf_function_binding!(WdfRequestRequeue, r) };
    if !nt_success(status) {
        complete(r, status, 0);
    }
}

/// The request's id leaves the hand-off (its connection stopped waiting); its origin, if it was
/// still there, whose reference the caller gives back.
pub(crate) fn cancel(id: RequestId) -> Option<usize> {
    apps()?.with(|st| st.handoff.cancel(id))
}

/// Completes the receive `r` of `file` with what the engine's batch rule gives it
/// (`apps::take_batch`), or parks it again when nothing waits any more. Requests wait here only
/// while no receive of their queue is parked (an offer hands each to a parked receive at once),
/// so a batch keeps them from no idle receiver.
pub(super) fn hand_over(a: &Apps, r: WDFREQUEST, file: WDFFILEOBJECT, room: Room, origin: Origin) {
    // The reply's buffer first: nothing is taken for a receive that could not carry it (issue
    // #22, defect 8). (METHOD_BUFFERED: the system buffer exists before dispatch, so this
    // fails only for a buffer too small for the status.)
    if output_room(r) < 4 {
        return complete(r, STATUS_BUFFER_TOO_SMALL, 0);
    }
    let mut out = Vec::new();
    // Requests that could not be put back in line (no memory), answered 503 after the lock
    // rather than left with a receive that never carried them (defect 8).
    let mut lost: Vec<(RequestId, usize)> = Vec::new();
    let got = a.with(|st| {
        if !st.sessions.iter().any(|s| s.file == file) {
            // Its handle closed meanwhile (cleanup ran): the receive goes, the request stays.
            return None;
        }
        let me = taker(st, file);
        Some(take_batch(
            &mut st.handoff,
            me,
            room,
            0,
            &mut out,
            &mut lost,
        ))
    });
    for (id, o) in lost {
        // SAFETY: the origin left the hand-off with its reference.
        unsafe { deliver(o, id, Outcome::Abandoned) };
    }
    match got {
        Some(Batch::Taken { .. }) => reply(r, Status::Ok, &out),
        Some(Batch::TooSmall) => reply(r, Status::BufferTooSmall, &out),
        Some(Batch::OutOfMemory) => complete(r, STATUS_INSUFFICIENT_RESOURCES, 0),
        Some(Batch::Nothing) => park(a, r, file, room.queue, origin),
        None => complete(r, STATUS_CANCELLED, 0),
    }
}

/// Parks the receive `r` until a request of `queue` arrives; a request that arrived meanwhile
/// is handed over at once.
pub(super) fn park(a: &Apps, r: WDFREQUEST, file: WDFFILEOBJECT, queue: u32, origin: Origin) {
    let status = a.with(|st| {
        if st.handoff.waiting(queue) > 0 {
            return None;
        }
        if !st.sessions.iter().any(|s| s.file == file) {
            // Its handle's cleanup ran meanwhile and took its parked receives: one parked now
            // would never be retrieved (issue #22, defect 12).
            return Some(STATUS_CANCELLED);
        }
        Some(match origin {
            // SAFETY: `r` is ours (not completed, not cancelable) and the queue is on its
            // device, and not its own queue.
            Origin::Presented => unsafe {
                call_unsafe_wdf_function_binding!(WdfRequestForwardToIoQueue, r, a.receives)
            },
            // SAFETY: `r` is ours, taken out of the manual queue.
            Origin::Parked => unsafe { call_unsafe_wdf_function_binding!(WdfRequestRequeue, r) },
        })
    });
    match status {
        None => hand_over(a, r, file, parked_room(r), origin),
        Some(s) if !nt_success(s) => complete(r, s, 0),
        Some(_) => {}
    }
}

/// A parked receive's room: its output buffer, and what it asked for (its input buffer again;
/// decoded when it came, `on_app_control`). A receive that no longer decodes asks for no queue
/// (`u32::MAX` is never one), and so takes nothing.
pub(super) fn parked_room(r: WDFREQUEST) -> Room {
    let asked = retrieve(r, Buffer::Input, 0).ok().and_then(|input| {
        match apps_decode(Command::QueueReceive, &input, 0) {
            Ok(AppCall::Receive(room)) => Some(room),
            _ => None,
        }
    });
    let room = asked.unwrap_or(Room {
        bytes: 0,
        body_max: u64::MAX,
        max_requests: 1,
        queue: u32::MAX,
    });
    Room {
        bytes: output_room(r),
        ..room
    }
}

/// The length of `r`'s output buffer (0 when it has none).
pub(super) fn output_room(r: WDFREQUEST) -> usize {
    let mut buf = ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: a live request; only the length is used.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            r,
            0,
            &raw mut buf,
            &raw mut len
        )
    };
    if nt_success(status) { len } else { 0 }
}
