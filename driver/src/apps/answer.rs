//! Answers: a whole answer (cached first when the rules allow), a streamed answer's head and
//! pieces with the application's call held cancelable until the connection takes each, and the
//! held calls' completion.

#![allow(
    unsafe_code,
    reason = "WDF queues, requests and file objects through the C ABI; a lock-guarded global"
)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use khttp_engine::apps::AppHost;
use khttp_engine::{AppResponse, CtlError, Handoff, Instant, Outcome, RequestId, Site};
use khttp_proto::Respond;
use khttp_proto::reply::RespondRow;
use wdk::nt_success;

use wdk_sys::{
    NTSTATUS, STATUS_CANCELLED, STATUS_INSUFFICIENT_RESOURCES, WDFFILEOBJECT, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use crate::global::{Global, clock};
use crate::ioctl::{complete, writer};

use super::{Apps, Held, apps, taker};
use crate::net::conn::mailbox::Ack;
use crate::net::conn::{deliver, deliver_held, share_origin};

/// `RespondRow::to_ntstatus` of an answer or piece nobody waits for.
pub(super) const NOT_DELIVERED: NTSTATUS = RespondRow {
    delivered: false,
    cached: false,
}
.to_ntstatus() as NTSTATUS;

/// Completes an application's call held for a streamed answer (`Queues::ack`), unless its
/// cancel or its handle's cleanup took it first.
pub(super) fn complete_held(request: usize, ticket: u64, delivered: bool) {
    let request = request as WDFREQUEST;
    let Some(a) = apps() else { return };
    if cfg!(feature = "fault-hold-uncancelable") {
        return complete_streamed(request, delivered);
    }
    let mine = a.with(|st| {
        let i = st
            .held
            .iter()
            .position(|h| h.request == request && h.ticket == ticket)?;
        // SAFETY: a live request we marked cancelable and still hold (it is in `held`).
        let unmarked =
            unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, request) };
        if unmarked == STATUS_CANCELLED {
            return None; // its EvtRequestCancel runs or will, and completes it
        }
        st.held.swap_remove(i);
        Some(())
    });
    if mine.is_some() {
        complete_streamed(request, delivered);
    }
}

/// Completes a streamed answer's call with the connection's word.
pub(super) fn complete_streamed(request: WDFREQUEST, delivered: bool) {
    let row = RespondRow {
        delivered,
        cached: false,
    };
    complete(request, row.to_ntstatus() as NTSTATUS, 0);
}

/// `EvtRequestCancel` of a held call: the application cancelled it or is exiting.
pub(super) extern "C" fn on_held_cancel(request: WDFREQUEST) {
    let Some(a) = apps() else { return };
    let mine = a.with(|st| {
        let i = st.held.iter().position(|h| h.request == request)?;
        st.held.swap_remove(i);
        Some(())
    });
    if mine.is_some() {
        complete(request, STATUS_CANCELLED, 0);
    }
}

/// Holds `request` (a streamed answer's call of handle `file`) cancelable until the connection
/// gives its word; its ticket. The error when it cannot be held: it was cancelled already
/// (`STATUS_CANCELLED`), or there is no room to note it.
pub(super) fn hold(a: &Apps, request: WDFREQUEST, file: WDFFILEOBJECT) -> Result<u64, NTSTATUS> {
    if cfg!(feature = "fault-hold-uncancelable") {
        // The harness's injected fault: held as before issue #22, not cancelable.
        return Ok(0);
    }
    a.with(|st| {
        if st.held.try_reserve(1).is_err() {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        // SAFETY: a live request the driver owns (presented, not in a queue), not yet marked.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestMarkCancelableEx,
                request,
                Some(on_held_cancel)
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        st.tickets = st.tickets.wrapping_add(1);
        let ticket = st.tickets;
        st.held.push(Held {
            request,
            file,
            ticket,
        });
        Ok(ticket)
    })
}

/// Completes the held calls of the handle `file`, whose handle closed (cleanup).
pub(super) fn release_held_of(a: &Apps, file: WDFFILEOBJECT) {
    loop {
        let next = a.with(|st| {
            let i = st.held.iter().position(|h| h.file == file)?;
            let request = st.held.get(i)?.request;
            // SAFETY: a live request we marked cancelable and still hold (it is in `held`).
            let unmarked =
                unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, request) };
            if unmarked == STATUS_CANCELLED {
                // Its EvtRequestCancel completes it; leave it, and stop looking (it is still
                // listed until then, and would be found again).
                return Some(None);
            }
            st.held.swap_remove(i);
            Some(Some(request))
        });
        match next {
            Some(Some(request)) => complete(request, STATUS_CANCELLED, 0),
            Some(None) | None => return,
        }
    }
}

/// A streamed answer's head and first piece (`QueueRespond` with `stream`) for the handle
/// `file`: handed to the connection, with the call `request` held until the connection has
/// taken it. Returns whether it is held (false: nobody waits for it any more).
pub(super) fn stream_head(
    a: &Apps,
    request: WDFREQUEST,
    file: WDFFILEOBJECT,
    r: &Respond<'_>,
    body: Vec<u8>,
) -> Result<bool, CtlError> {
    let (id, me) = (RequestId(r.id), a.with(|st| taker(st, file)));
    let body = Arc::try_new(body).map_err(|_| CtlError::OutOfMemory)?;
    match AppResponse::new(r.status, r.content_type, &r.headers, body) {
        Ok(resp) => {
            let head = Outcome::Response(resp.streamed(r.stream.and_then(|s| s.length)));
            Ok(send_held(a, request, me, id, head, false))
        }
        Err(e) => {
            // The client is not left waiting: 502, and the application hears why.
            if let Some(o) = a.with(|st| st.handoff.answer(id, me)) {
                // SAFETY: the origin left the hand-off with its reference.
                unsafe { deliver(o, id, Outcome::Invalid) };
            }
            Err(e)
        }
    }
}

/// Hands a streamed answer's head or piece for request `id`, held by `me`, to its connection,
/// with the call `request` held until the connection takes it; `last` ends the request.
/// Returns whether the call is held or answered here (false: nobody waits for the request any
/// more, and the caller answers it).
pub(super) fn send_held(
    a: &Apps,
    request: WDFREQUEST,
    me: u64,
    id: RequestId,
    outcome: Outcome,
    last: bool,
) -> bool {
    let origin = a.with(|st| {
        if last {
            st.handoff.answer(id, me)
        } else {
            let o = st.handoff.hold(id, me)?;
            // SAFETY: the hand-off holds `o` with a reference, and its lock is held.
            unsafe { share_origin(o) }
        }
    });
    let Some(origin) = origin else {
        return false;
    };
    // SAFETY: the request is ours, presented and not in a queue.
    let file = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    let ticket = match hold(a, request, file) {
        Ok(ticket) => ticket,
        Err(status) => {
            // Cancelled already, or no room to note it: the piece goes on without the hold,
            // and the call is answered now.
            // SAFETY: `origin` comes with a reference of its own, given up here.
            unsafe { deliver_held(origin, id, outcome, None) };
            if status == STATUS_CANCELLED {
                complete(request, STATUS_CANCELLED, 0);
            } else {
                complete_streamed(request, true);
            }
            return true;
        }
    };
    // SAFETY: `origin` comes with a reference of its own (the hand-off's for the last piece,
    // a new one otherwise), given up here.
    unsafe {
        deliver_held(
            origin,
            id,
            outcome,
            Some(Ack::new(request as usize, ticket)),
        )
    };
    true
}

/// One handle's view for the engine's rules ([`AppHost`]): the hand-off under the state lock,
/// the site's writer, and the connections' mailboxes.
pub(super) struct Handle<'a> {
    pub(super) g: &'a Global,
    pub(super) a: &'a Apps,
    /// The handle's taker id ([`taker`]).
    pub(super) me: u64,
}

impl<'a> Handle<'a> {
    /// The view of the handle `file`.
    pub(super) fn of(g: &'a Global, a: &'a Apps, file: WDFFILEOBJECT) -> Self {
        let me = a.with(|st| taker(st, file));
        Self { g, a, me }
    }
}

impl AppHost for Handle<'_> {
    type Origin = usize;

    fn with_handoff<R>(&self, f: impl FnOnce(&mut Handoff<usize>) -> R) -> R {
        self.a.with(|st| f(&mut st.handoff))
    }

    fn taker(&self) -> u64 {
        self.me
    }

    fn deliver(&self, origin: usize, id: RequestId, outcome: Outcome) {
        // SAFETY: the trait's contract: `origin` has just left the hand-off with the reference
        // it held there, and is delivered once.
        unsafe { deliver(origin, id, outcome) };
    }

    fn site(&self) -> Arc<Site> {
        self.g.site.snapshot()
    }

    fn change<R>(&self, f: impl FnOnce(&mut Site) -> Result<R, CtlError>) -> Result<R, CtlError> {
        writer(self.g).change(f)
    }

    fn now(&self) -> Instant {
        clock().now()
    }
}
