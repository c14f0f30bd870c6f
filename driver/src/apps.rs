//! The application endpoint (issue #12): `\Device\KHttpApp`, where applications attach to
//! request queues, receive the requests the cache cannot answer, and answer them, as they do
//! over khttpd's application socket (the same commands, `khttp_proto`).
//!
//! - A receive with nothing waiting is parked in a manual queue (the inverted call): the
//!   framework cancels it if the application's handle closes or its thread goes, and an offer
//!   from a connection completes it. Forwarding and the check for waiting requests happen under
//!   one lock with the offers, so a request and a parked receive never miss each other.
//! - Each handle is a session (its file object): it may answer only what it received, and when
//!   its handle closes (`EvtFileCleanup`) its parked receives are cancelled, what it took is
//!   answered 503, it is detached from its queues, and what waits in queues it leaves empty of
//!   applications is answered 503 too.
//! - The requests themselves are the engine's [`Handoff`], as in khttpd; a request's origin is
//!   its connection context, with a reference of its own (`net::conn::deliver` gives it back).
//!
//! Who may attach: the device admits SYSTEM, Administrators and authenticated users (its
//! SDDL). Each handle records its opener's token when it is opened (`token::opener`), and
//! each attach is the engine's decision for that identity (`Caller::Token`): an
//! administrator's process attaches anywhere, any other only under reservations whose SDDL
//! grants it the right to register (`GX`; khttpctl on Windows sends `--user NAME` as the
//! user's SID, as netsh does).

#![allow(
    unsafe_code,
    reason = "WDF queues, requests and file objects through the C ABI; a lock-guarded global"
)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::Ordering;

use khttp_engine::acl::{Identity, Sid};
use khttp_engine::ctl::{Caller, attach};
use khttp_engine::limits::{MAX_APP_ATTACHES, MAX_APP_SESSIONS, MAX_APP_SESSIONS_PER_USER};
use khttp_engine::{
    AppAnswer, AppResponse, CtlError, Delivery, Handoff, Holder, Outcome, Refusal, RequestId, Site,
    app_cache_url, app_response_cacheable, store_app_answer,
};
use khttp_proto::reply::{AttachRow, BodyRow, RequestRow, RespondRow, too_small_reply};
use khttp_proto::{Command, METHOD_IN_DIRECT, Request, Respond, Status, decode_request};
use wdk::nt_success;
use wdk::wdf::SpinLock;
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_FILEOBJECT_CLASS, _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE,
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_DEVICE_NOT_READY,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_QUOTA_EXCEEDED,
    STATUS_SUCCESS, WDF_FILEOBJECT_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE, WDFDEVICE,
    WDFDRIVER, WDFFILEOBJECT, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::device::{DeviceSpec, create_control_device};
use crate::global::{Global, SpinGuard, clock, global, object_attributes, spin_lock};
use crate::ioctl::{Buffer, complete, ntstatus_of, reply, retrieve, writer};
use crate::net::conn::{Ack, Queues, deliver, deliver_held, set_queues, share_origin};

/// What connections ask of the application device.
static QUEUES: Queues = Queues {
    offer,
    cancel,
    ack: complete_held,
};
use crate::{size_of_u32, wide};

static DEVICE_NAME: [u16; 16] = wide(b"\\Device\\KHttpApp");
static LINK_NAME: [u16; 20] = wide(b"\\DosDevices\\KHttpApp");
/// SYSTEM and Administrators all access, authenticated users read and write (the IOCTLs):
/// `SDDL_DEVOBJ_SYS_ALL_ADM_ALL` with an ACE for `AU` (Microsoft Learn, "SDDL for Device
/// Objects": `IoCreateDeviceSecure`'s subset, which `WdfDeviceInitAssignSDDLString` takes).
static SDDL: [u16; 41] = wide(b"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)");

/// One application handle: a file object on the device.
struct Session {
    file: WDFFILEOBJECT,
    /// Its id in the hand-off, from `State::sessions_opened`.
    id: u64,
    holder: Holder,
    /// Its opener's token, as the URL ACL check reads it.
    identity: Arc<Identity>,
    /// The queues it attached to, once per attach.
    attached: Vec<u32>,
}

/// A fallible copy (the URL is the client's).
fn copy_str(s: &str) -> Option<alloc::string::String> {
    let mut out = alloc::string::String::new();
    out.try_reserve_exact(s.len()).ok()?;
    out.push_str(s);
    Some(out)
}

/// A handle's id as a taker in the hand-off: its session's id, never reused (a closed
/// handle's `WDFFILEOBJECT` address can come back for a new handle, of any user, which then
/// inherited the requests the old one still held: issue #22, defect 6). `NO_TAKER` when the
/// handle has no session.
fn taker(st: &State, file: WDFFILEOBJECT) -> u64 {
    st.sessions
        .iter()
        .find(|s| s.file == file)
        .map_or(NO_TAKER, |s| s.id)
}

/// Takes nothing: no session has this id.
const NO_TAKER: u64 = u64::MAX;

struct State {
    handoff: Handoff<usize>,
    sessions: Vec<Session>,
    /// Applications' calls held for a streamed answer and marked cancelable, with their handle:
    /// whoever takes one out of here under the lock completes it (the connection's word, its
    /// `EvtRequestCancel`, or its handle's cleanup), the others leave it alone. (KMDF's own
    /// pattern for a driver-owned cancelable request; Microsoft Learn, "Canceling I/O
    /// Requests". Issue #22, defect 1: they were not cancelable, so an application could not
    /// CancelIo them or exit while its client did not read.)
    held: Vec<Held>,
    /// The last hold's ticket.
    tickets: u64,
    /// Sessions opened so far: the last one's id.
    sessions_opened: u64,
}

/// A held call: the request, its handle, and a ticket no other hold has.
#[derive(Clone, Copy)]
struct Held {
    request: WDFREQUEST,
    file: WDFFILEOBJECT,
    ticket: u64,
}

struct Apps {
    lock: SpinLock,
    /// INVARIANT: touched only while `lock` is held.
    state: UnsafeCell<State>,
    /// Parked receives (a manual queue of the application device).
    receives: WDFQUEUE,
}

impl Apps {
    /// Runs `f` on the state under the lock (<= DISPATCH_LEVEL).
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let _guard = SpinGuard::new(&self.lock);
        // SAFETY: the lock is held (invariant of `state`), so this is the only access.
        f(unsafe { &mut *self.state.get() })
    }
}

struct AppsCell(UnsafeCell<Option<Apps>>);
// SAFETY: written in DriverEntry before the device takes requests or a connection exists, and
// cleared after unload stopped them all; in between only read, and `Apps` locks its contents.
unsafe impl Sync for AppsCell {}

static APPS: AppsCell = AppsCell(UnsafeCell::new(None));

fn apps() -> Option<&'static Apps> {
    // SAFETY: see `AppsCell`.
    unsafe { (*APPS.0.get()).as_ref() }
}

/// Builds the application device, its queues and the lock (DriverEntry).
///
/// # Safety
/// PASSIVE_LEVEL, in DriverEntry, once, before the device is finished initialising.
pub(crate) unsafe fn create(driver: WDFDRIVER) -> Result<WDFDEVICE, NTSTATUS> {
    let spec = DeviceSpec {
        name: &DEVICE_NAME,
        link: &LINK_NAME,
        sddl: &SDDL,
        file: Some(WDF_FILEOBJECT_CONFIG {
            Size: size_of_u32::<WDF_FILEOBJECT_CONFIG>(),
            EvtDeviceFileCreate: Some(on_file_create),
            EvtFileClose: Some(on_file_close),
            EvtFileCleanup: Some(on_file_cleanup),
            AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
            FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCannotUseFsContexts,
        }),
        on_ioctl: Some(on_app_control),
        // Parallel: a streamed answer's call is held until its client reads (`send_held`), and
        // a sequential queue would present no other application's call meanwhile (issue #22,
        // defect 1). Every handler here takes the state lock for what it shares.
        dispatch: if cfg!(feature = "fault-sequential-apps") {
            _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential
        } else {
            _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel
        },
    };
    // SAFETY: PASSIVE_LEVEL in DriverEntry (contract).
    let device = unsafe { create_control_device(driver, &spec) }?;
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: size_of_u32::<WDF_IO_QUEUE_CONFIG>(),
        PowerManaged: _WDF_TRI_STATE::WdfUseDefault,
        DefaultQueue: 0,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchManual,
        EvtIoCanceledOnQueue: Some(on_canceled_on_queue),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    let mut attrs = object_attributes();
    attrs.ExecutionLevel = _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent;
    let mut receives: WDFQUEUE = WDF_NO_HANDLE.cast();
    let status;
    // SAFETY: a live device; the config and attributes outlive the call.
    unsafe {
        status = call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            &raw mut attrs,
            &raw mut receives
        );
    }
    if !nt_success(status) {
        return Err(status);
    }
    let lock = spin_lock(device)?;
    let a = Apps {
        lock,
        state: UnsafeCell::new(State {
            handoff: Handoff::new(),
            sessions: Vec::new(),
            held: Vec::new(),
            tickets: 0,
            sessions_opened: 0,
        }),
        receives,
    };
    // SAFETY: no reader exists yet (contract).
    unsafe { *APPS.0.get() = Some(a) };
    set_queues(&QUEUES);
    Ok(device)
}

/// Frees the state (unload, or a failing DriverEntry).
///
/// # Safety
/// No request, connection or callback can reach it any more.
pub(crate) unsafe fn uninstall() {
    // SAFETY: no reader remains (contract).
    unsafe { *APPS.0.get() = None };
}

/// Unload (PASSIVE_LEVEL, after `stopping`): parked receives are cancelled and every request in
/// the hand-off is answered 503, so that its connection can finish and close.
///
/// # Safety
/// PASSIVE_LEVEL, in unload.
pub(crate) unsafe fn shutdown() {
    let Some(a) = apps() else { return };
    // SAFETY: a live manual queue of ours.
    while let Some(r) = unsafe { retrieve_parked(a.receives, None) } {
        complete(r, STATUS_CANCELLED, 0);
    }
    abandon(a, None, &[]);
}

/// Takes the next parked receive (of `file`, or any), if any.
///
/// # Safety
/// `queue` is the live manual queue; <= DISPATCH_LEVEL.
unsafe fn retrieve_parked(queue: WDFQUEUE, file: Option<WDFFILEOBJECT>) -> Option<WDFREQUEST> {
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

/// Answers 503 to the requests the session `me` took (all of them when `None`) and to those
/// waiting in `orphaned` queues.
fn abandon(a: &Apps, me: Option<u64>, orphaned: &[u32]) {
    let mut gone: Vec<(RequestId, usize)> = Vec::new();
    a.with(|st| {
        // Room for every request first: nothing allocates while they leave.
        if gone.try_reserve_exact(st.handoff.len()).is_err() {
            return;
        }
        let mut leave = |id, o| gone.push((id, o));
        match me {
            Some(me) => st.handoff.abandon(me, orphaned, &mut leave),
            // No handle takes NO_TAKER: only what waits in `orphaned`.
            None if !orphaned.is_empty() => st.handoff.abandon(NO_TAKER, orphaned, &mut leave),
            None => st.handoff.drain(&mut leave),
        }
    });
    for (id, origin) in gone {
        // SAFETY: each origin left the hand-off with its reference, given up by `deliver`.
        unsafe { deliver(origin, id, Outcome::Abandoned) };
    }
}

/// A request a connection offers (<= DISPATCH_LEVEL): into the hand-off, and straight to a
/// parked receive of an application attached to its queue, if one waits.
///
/// # Errors
/// [`Refusal`]: the queue is full, memory ran out, or the endpoint is not there.
pub(crate) fn offer(origin: usize, d: &Delivery<'_>, site: &Site) -> Result<RequestId, Refusal> {
    let a = apps().ok_or(Refusal::NoApplication)?;
    let cache_url = app_cache_url(site, d.local, d.head);
    let mut handed = None;
    let id = a.with(|st| {
        let id = st.handoff.offer(origin, d, site, cache_url.as_deref())?;
        for s in st.sessions.iter().filter(|s| s.attached.contains(&d.queue)) {
            if let Some((r, room)) = parked_receive_for(a, s.file, d.queue) {
                handed = Some((r, s.file, room));
                break;
            }
        }
        Ok(id)
    })?;
    if let Some((r, file, room)) = handed {
        hand_over(a, r, file, d.queue, room, Origin::Parked);
    }
    Ok(id)
}

/// Parked receives of one handle looked at for one offer, at most: the rest stay parked, and
/// take their requests when they next ask.
const RECEIVES_LOOKED_AT: usize = 8;

/// A parked receive of `file` that asked for `queue`, taken out of the manual queue, with its
/// room. Receives of the handle that asked for other queues go back to the head of the queue in
/// their order. (Any parked receive of the handle once took the request, whatever queue it had
/// asked for: issue #22, defect 7.) Under the state lock.
fn parked_receive_for(a: &Apps, file: WDFFILEOBJECT, queue: u32) -> Option<(WDFREQUEST, Room)> {
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
enum Origin {
    /// Presented by the device's queue: parking forwards it to the manual queue.
    Presented,
    /// Taken out of the manual queue: parking puts it back (`WdfRequestRequeue`), since
    /// forwarding a request to its own queue fails (issue #22, defect 3).
    Parked,
}

/// Puts a receive taken out of the manual queue back at its head; completes it with the error
/// when that fails (it cannot stay with the driver unseen).
fn requeue(r: WDFREQUEST) {
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

/// What a receive has room for: its output buffer's length, the body bytes it asked for with
/// each head, and how many requests it takes at most.
#[derive(Clone, Copy)]
struct Room {
    bytes: usize,
    body_max: u64,
    max_requests: u32,
    /// The queue it asked for.
    queue: u32,
}

/// Bytes `row` adds to a reply table.
fn row_size(row: RequestRow<'_>) -> usize {
    let mut one = Vec::new();
    let mut none = Vec::new();
    let one_len = khttp_proto::write_rows(&mut one, [row]).map_or(usize::MAX, |()| one.len());
    let none_len = khttp_proto::write_rows(&mut none, core::iter::empty::<RequestRow<'_>>())
        .map_or(0, |()| none.len());
    one_len.saturating_sub(none_len)
}

/// Bytes of a reply around its byte-string values: what `reply` adds (the status) and what the
/// rows need besides the strings themselves (header, counts, tags, lengths, numbers).
fn framing(row_bytes: usize, strings: usize) -> usize {
    row_bytes.saturating_sub(strings).saturating_add(4)
}

/// Completes the receive `r` of `file` with the oldest request of `queue`, or parks it again
/// when none waits any more. The request's head must fit in the receive's room; its body goes
/// as far as the room and the receive allow, and `QueueReceiveBody` brings the rest. Up to
/// `max_requests` more that wait go with it when they fit whole (bodies up to `body_max`).
fn hand_over(a: &Apps, r: WDFREQUEST, file: WDFFILEOBJECT, queue: u32, room: Room, origin: Origin) {
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
            return Some(None);
        }
        let me = taker(st, file);
        let taken = st.handoff.receive(queue, me)?;
        let id = taken.id;
        let fixed = khttp_proto::write_rows(&mut out, [taken.row(0)])
            .map(|()| framing(out.len(), 0))
            .unwrap_or(usize::MAX);
        out.clear();
        let body_room = room.bytes.saturating_sub(fixed);
        let body_max = usize::try_from(room.body_max).unwrap_or(usize::MAX);
        let first_cut = body_room.min(body_max);
        let row = taken.row(first_cut);
        let fits = khttp_proto::write_rows(&mut out, [row]).is_ok()
            && out.len().saturating_add(4) <= room.bytes;
        if !fits {
            // Back in line; the application asks again with room for it.
            put_back(st, id, me, &mut lost);
            let needed = out.len();
            out.clear();
            let reply = too_small_reply(needed.max(1));
            // Fallible (issue #22, defect 5); with no room the reply is empty, and the
            // caller's reply says so.
            if out.try_reserve(reply.len()).is_ok() {
                out.extend_from_slice(&reply);
            }
            return Some(Some(false));
        }
        // More requests, as many as were asked for and fit whole (heads and bodies up to
        // `body_max`). Requests wait here only while no receive of the queue is parked (an
        // offer hands each to a parked receive at once), so a batch keeps them from nobody.
        let mut taken_ids = Vec::new();
        let mut total = out.len();
        while taken_ids.len().saturating_add(1) < room.max_requests as usize
            && st.handoff.waiting(queue) > 0
            && taken_ids.try_reserve(1).is_ok()
        {
            let Some(next) = st.handoff.receive(queue, me) else {
                break;
            };
            let next_id = next.id;
            let size = row_size(next.row(body_max));
            let after = total.saturating_add(size);
            if after.saturating_add(4) > room.bytes {
                put_back(st, next_id, me, &mut lost);
                break;
            }
            total = after;
            taken_ids.push(next_id);
        }
        if !taken_ids.is_empty() {
            let row = |i: RequestId, cut: usize| st.handoff.taken(i, me).map(|t| t.row(cut));
            let rows = core::iter::once(row(id, first_cut))
                .chain(taken_ids.iter().map(|i| row(*i, body_max)))
                .flatten();
            let mut all = Vec::new();
            if khttp_proto::write_rows(&mut all, rows).is_ok() {
                out = all;
            } else {
                // Back in line, in order; the first goes alone, as encoded above.
                for i in taken_ids.iter().rev() {
                    put_back(st, *i, me, &mut lost);
                }
            }
        }
        Some(Some(true))
    });
    for (id, o) in lost {
        // SAFETY: the origin left the hand-off with its reference.
        unsafe { deliver(o, id, Outcome::Abandoned) };
    }
    match got {
        Some(Some(true)) => reply(r, Status::Ok, &out),
        Some(Some(false)) => reply(r, Status::BufferTooSmall, &out),
        Some(None) => complete(r, STATUS_CANCELLED, 0),
        None => park(a, r, file, queue, origin),
    }
}

/// Puts request `id`, which `me` took, back first in line; when that fails for want of
/// memory, takes it out of the hand-off into `lost` (to be answered 503), if `lost` has room
/// for it. Otherwise it stays with `me` and its connection answers 503 at its
/// `app-response-timeout`. Under the state lock.
fn put_back(st: &mut State, id: RequestId, me: u64, lost: &mut Vec<(RequestId, usize)>) {
    if st.handoff.requeue(id, me).is_ok() || lost.try_reserve(1).is_err() {
        return;
    }
    if let Some(o) = st.handoff.answer(id, me) {
        lost.push((id, o));
    }
}

/// Parks the receive `r` until a request of `queue` arrives; a request that arrived meanwhile
/// is handed over at once.
fn park(a: &Apps, r: WDFREQUEST, file: WDFFILEOBJECT, queue: u32, origin: Origin) {
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
        None => hand_over(a, r, file, queue, parked_room(r), origin),
        Some(s) if !nt_success(s) => complete(r, s, 0),
        Some(_) => {}
    }
}

/// A parked receive's room: its output buffer, and the body it asked for (its input buffer
/// again; all of the body if that cannot be read).
fn parked_room(r: WDFREQUEST) -> Room {
    // It was decoded when it came (`on_app_control`); a receive that no longer decodes asks
    // for no queue (u32::MAX is never one) and so takes nothing.
    let (body_max, max_requests, queue) = match retrieve(r, Buffer::Input, 0) {
        Ok(input) => match decode_request(Command::QueueReceive, &input, 0) {
            Ok(Request::QueueReceive {
                body_max,
                max_requests,
                queue,
            }) => (body_max, max_requests, queue),
            _ => (u64::MAX, 1, u32::MAX),
        },
        Err(_) => (u64::MAX, 1, u32::MAX),
    };
    Room {
        bytes: output_room(r),
        body_max,
        max_requests,
        queue,
    }
}

/// The length of `r`'s output buffer (0 when it has none).
fn output_room(r: WDFREQUEST) -> usize {
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

/// `EvtDeviceFileCreate` (PASSIVE_LEVEL, the opener's thread): a session for the handle.
extern "C" fn on_file_create(_device: WDFDEVICE, request: WDFREQUEST, file: WDFFILEOBJECT) {
    let Some(a) = apps() else {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    };
    // SAFETY: no preconditions; the opener's process.
    let pid = unsafe { wdk_sys::ntddk::PsGetCurrentProcessId() } as usize;
    // SAFETY: PASSIVE_LEVEL, in EvtDeviceFileCreate.
    let identity = match unsafe { crate::token::opener() } {
        Ok(id) => Arc::try_new(id).map_err(|_| STATUS_INSUFFICIENT_RESOURCES),
        Err(status) => Err(status),
    };
    let identity = match identity {
        Ok(id) => id,
        Err(status) => {
            wdk::println!(
                "khttp: could not read the token of process {pid} opening the application device: {status:#x}"
            );
            return complete(request, status, 0);
        }
    };
    let holder = Holder {
        pid: u32::try_from(pid).unwrap_or(u32::MAX),
        uid: identity.user().and_then(Sid::rid).unwrap_or(u32::MAX),
    };
    let counted = !identity.is_administrator();
    let user = identity.user().copied();
    let status = a.with(|st| {
        // Handles of users other than administrators are bounded, in all and per user, as
        // khttpd's connections are (issue #22, defect 10: each holds its opener's token).
        if counted {
            let mut total = 0usize;
            let mut mine = 0usize;
            for s in st
                .sessions
                .iter()
                .filter(|s| !s.identity.is_administrator())
            {
                total = total.saturating_add(1);
                if s.identity.user().copied() == user {
                    mine = mine.saturating_add(1);
                }
            }
            if total >= MAX_APP_SESSIONS || mine >= MAX_APP_SESSIONS_PER_USER {
                return STATUS_QUOTA_EXCEEDED;
            }
        }
        if st.sessions.try_reserve(1).is_err() {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        st.sessions_opened = st.sessions_opened.wrapping_add(1);
        let id = st.sessions_opened;
        st.sessions.push(Session {
            file,
            id,
            holder,
            identity,
            attached: Vec::new(),
        });
        STATUS_SUCCESS
    });
    if status == STATUS_QUOTA_EXCEEDED {
        wdk::println!(
            "khttp: refused an application handle of process {pid}: too many handles of its user"
        );
    }
    complete(request, status, 0);
}

/// `EvtFileCleanup` (PASSIVE_LEVEL): the handle closed. Its parked receives are cancelled, it is
/// detached, and the requests it took, or that wait where no application is left, get 503.
extern "C" fn on_file_cleanup(file: WDFFILEOBJECT) {
    let Some(a) = apps() else { return };
    // SAFETY: our live manual queue; this handle's file object.
    while let Some(r) = unsafe { retrieve_parked(a.receives, Some(file)) } {
        complete(r, STATUS_CANCELLED, 0);
    }
    release_held_of(a, file);
    let session = a.with(|st| {
        let i = st.sessions.iter().position(|s| s.file == file)?;
        Some(st.sessions.swap_remove(i))
    });
    let Some(session) = session else { return };
    let orphaned = detach_retrying(&session, &session.attached);
    abandon(a, Some(session.id), &orphaned);
}

/// [`detach_from`] at cleanup, where giving up would leave queues counting a handle that is
/// gone (issue #22, defect 8: a failed detach was ignored): retried for a second, at
/// PASSIVE_LEVEL, while memory is short; then logged.
fn detach_retrying(session: &Session, queues: &[u32]) -> Vec<u32> {
    for attempt in 0..10u32 {
        match detach_from(session, queues) {
            Ok(orphaned) => return orphaned,
            Err(e) if attempt == 9 => {
                wdk::println!(
                    "khttp: could not detach a closed handle (process {}) from {} queue(s): {}",
                    session.holder.pid,
                    queues.len(),
                    e.message()
                );
            }
            // Cleanup and the IOCTL path run at PASSIVE_LEVEL.
            Err(_) => crate::irp::sleep_ms(100),
        }
    }
    Vec::new()
}

/// `EvtFileClose`: the session went at cleanup.
extern "C" fn on_file_close(_file: WDFFILEOBJECT) {}

/// `EvtIoCanceledOnQueue`: a parked receive whose thread or handle went.
extern "C" fn on_canceled_on_queue(_queue: WDFQUEUE, request: WDFREQUEST) {
    complete(request, STATUS_CANCELLED, 0);
}

/// Detaches `session` from `queues` (one site change, published under the writer lock);
/// returns those left with no application.
fn detach_from(session: &Session, queues: &[u32]) -> Result<Vec<u32>, CtlError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let g = global().ok_or(CtlError::NotFound)?;
    writer(g).change(|next| next.detach_queues(queues, session.holder))
}

/// `EvtIoDeviceControl` of the application device (PASSIVE_LEVEL, sequential): the commands
/// of `Command::for_applications`, each for the handle it came on.
extern "C" fn on_app_control(
    _queue: WDFQUEUE,
    request: WDFREQUEST,
    output_len: usize,
    input_len: usize,
    code: u32,
) {
    let (Some(g), Some(a)) = (global(), apps()) else {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    };
    if g.stopping.load(Ordering::Acquire) {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    }
    let Some(command) = Command::from_code(code).filter(|c| c.for_applications()) else {
        return complete(request, STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    let direct_in = command.method() == METHOD_IN_DIRECT;
    if !direct_in && output_len < 4 {
        return complete(request, STATUS_BUFFER_TOO_SMALL, 0);
    }
    let input = if input_len > 0 {
        match retrieve(request, Buffer::Input, input_len) {
            Ok(v) => v,
            Err(s) => return complete(request, s, 0),
        }
    } else {
        Vec::new()
    };
    let direct = if direct_in && output_len > 0 {
        // One answer or piece is held whole in memory: at most 64 MiB (larger bodies are
        // streamed); whether it may be cached is `cache-max-entry-bytes`'s business.
        if output_len > khttp_proto::MAX_BYTES {
            return complete(request, ntstatus_of(Status::EntryTooLarge), 0);
        }
        match retrieve(request, Buffer::Output, output_len) {
            Ok(v) => v,
            Err(s) => return complete(request, s, 0),
        }
    } else {
        Vec::new()
    };
    let req = match decode_request(command, &input, direct.len()) {
        Ok(r) => r,
        Err(e) => return refuse(request, direct_in, e.status(), e.message()),
    };
    // SAFETY: a live request of this device, which has file objects.
    let file = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    let result = match req {
        Request::QueueReceive {
            queue,
            body_max,
            max_requests,
        } => {
            if a.with(|st| session_has(st, file, queue)) {
                let room = Room {
                    bytes: output_len,
                    body_max,
                    max_requests,
                    queue,
                };
                return hand_over(a, request, file, queue, room, Origin::Presented);
            }
            Err(CtlError::NotFound)
        }
        Request::QueueReceiveBody { id, offset } => {
            let me = a.with(|st| taker(st, file));
            more_body(a, me, RequestId(id), offset, output_len)
        }
        Request::QueueRespond(r) if r.stream.is_some() => {
            match stream_head(a, request, file, &r, direct) {
                Ok(true) => return, // held until the connection takes it
                Ok(false) => return complete(request, NOT_DELIVERED, 0),
                Err(e) => Err(e),
            }
        }
        Request::QueueSend { id, last, .. } => {
            let Ok(body) = Arc::try_new(direct) else {
                return refuse(request, true, Status::OutOfMemory, "out of memory");
            };
            let piece = Outcome::Piece { body, last };
            let me = a.with(|st| taker(st, file));
            if send_held(a, request, me, RequestId(id), piece, last) {
                return; // held until the connection takes it
            }
            return complete(request, NOT_DELIVERED, 0);
        }
        Request::QueueRespond(r) => match respond(g, a, file, &r, direct) {
            Ok(row) => return complete(request, row.to_ntstatus() as NTSTATUS, 0),
            Err(e) => Err(e),
        },
        Request::QueueAttach { name, prefixes } => attach_session(g, a, file, name, &prefixes),
        Request::QueueCancel { id } => {
            let origin = a.with(|st| st.handoff.answer(RequestId(id), taker(st, file)));
            if let Some(o) = origin {
                // SAFETY: the origin left the hand-off with its reference.
                unsafe { deliver(o, RequestId(id), Outcome::Abandoned) };
            }
            Ok(Vec::new())
        }
        Request::QueueDetach { queue } => detach_session(a, file, queue),
        _ => Err(CtlError::WrongEndpoint),
    };
    match result {
        Ok(rows) if rows.is_empty() => {
            let mut out = Vec::new();
            let _ = khttp_proto::reply::empty_reply(&mut out);
            reply(request, Status::Ok, &out);
        }
        Ok(rows) => reply(request, Status::Ok, &rows),
        Err(e) => refuse(request, direct_in, Status::from(e), e.message()),
    }
}

/// Completes `request` with a refusal: as a reply, or for METHOD_IN_DIRECT as its NTSTATUS.
fn refuse(request: WDFREQUEST, direct_in: bool, status: Status, message: &str) {
    if direct_in {
        return complete(request, ntstatus_of(status), 0);
    }
    let mut out = Vec::new();
    let _ = khttp_proto::error_reply(&mut out, message);
    reply(request, status, &out);
}

/// `QueueReceiveBody`: as much of request `id`'s body from `offset` as the reply's `room`
/// holds, if `me` holds the request.
fn more_body(
    a: &Apps,
    me: u64,
    id: RequestId,
    offset: u64,
    room: usize,
) -> Result<Vec<u8>, CtlError> {
    a.with(|st| {
        let rest = st.handoff.body(id, me, offset).ok_or(CtlError::NotFound)?;
        let mut out = Vec::new();
        let fixed = khttp_proto::write_rows(&mut out, [BodyRow { bytes: &[] }])
            .map(|()| framing(out.len(), 0))
            .map_err(|_| CtlError::OutOfMemory)?;
        out.clear();
        let n = room.saturating_sub(fixed).min(rest.len());
        let bytes = rest.get(..n).unwrap_or(rest);
        khttp_proto::write_rows(&mut out, [BodyRow { bytes }])
            .map_err(|_| CtlError::OutOfMemory)?;
        Ok(out)
    })
}

fn session_has(st: &State, file: WDFFILEOBJECT, queue: u32) -> bool {
    st.sessions
        .iter()
        .any(|s| s.file == file && s.attached.contains(&queue))
}

/// `QueueAttach` for the handle `file`: the engine's rule, on a clone of the site, published.
fn attach_session(
    g: &Global,
    a: &Apps,
    file: WDFFILEOBJECT,
    name: &str,
    prefixes: &[&str],
) -> Result<Vec<u8>, CtlError> {
    // Room to record the queue first, so that a published attach is never one the session
    // does not know of (issue #22, defect 8: such a phantom was never detached).
    let (holder, identity) = a
        .with(|st| {
            let s = st.sessions.iter_mut().find(|s| s.file == file)?;
            if s.attached.len() >= MAX_APP_ATTACHES {
                return Some(Err(CtlError::TooManySessions));
            }
            s.attached.try_reserve(1).ok()?;
            Some(Ok((s.holder, Arc::clone(&s.identity))))
        })
        .ok_or(CtlError::NotFound)??;
    let queue =
        writer(g).change(|next| attach(next, Caller::Token(&identity), holder, name, prefixes));
    let queue = queue.inspect_err(|e| {
        wdk::println!(
            "khttp: refused an application attach (process {}) to {name}: {}",
            holder.pid,
            e.message()
        );
    })?;
    let recorded = a.with(|st| {
        let s = st.sessions.iter_mut().find(|s| s.file == file)?;
        // Reserved above; another attach of the handle (the queue is parallel) may have used
        // the room meanwhile, so reserve again.
        s.attached.try_reserve(1).ok()?;
        s.attached.push(queue);
        Some(())
    });
    if recorded.is_none() {
        // The handle closed meanwhile (its cleanup detached what it knew), or no memory:
        // undo the attach, so that no queue counts a handle that is not there.
        let gone = Session {
            file,
            id: NO_TAKER,
            holder,
            identity,
            attached: Vec::new(),
        };
        let orphaned = detach_retrying(&gone, &[queue]);
        abandon(a, None, &orphaned);
        return Err(CtlError::OutOfMemory);
    }
    let mut out = Vec::new();
    khttp_proto::write_rows(&mut out, [AttachRow { queue }]).map_err(|_| CtlError::OutOfMemory)?;
    Ok(out)
}

/// `QueueDetach` for the handle `file`.
fn detach_session(a: &Apps, file: WDFFILEOBJECT, queue: u32) -> Result<Vec<u8>, CtlError> {
    let session = a.with(|st| {
        let s = st.sessions.iter_mut().find(|s| s.file == file)?;
        let i = s.attached.iter().position(|q| *q == queue)?;
        s.attached.swap_remove(i);
        Some(Session {
            file,
            id: s.id,
            holder: s.holder,
            identity: Arc::clone(&s.identity),
            attached: Vec::new(),
        })
    });
    let session = session.ok_or(CtlError::NotFound)?;
    let orphaned = detach_from(&session, &[queue])?;
    // Only what waits in a queue left with no application: the handle keeps what it took.
    abandon(a, None, &orphaned);
    Ok(Vec::new())
}

/// `RespondRow::to_ntstatus` of an answer or piece nobody waits for.
const NOT_DELIVERED: NTSTATUS = RespondRow {
    delivered: false,
    cached: false,
}
.to_ntstatus() as NTSTATUS;

/// Completes an application's call held for a streamed answer (`Queues::ack`), unless its
/// cancel or its handle's cleanup took it first.
fn complete_held(request: usize, ticket: u64, delivered: bool) {
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
fn complete_streamed(request: WDFREQUEST, delivered: bool) {
    let row = RespondRow {
        delivered,
        cached: false,
    };
    complete(request, row.to_ntstatus() as NTSTATUS, 0);
}

/// `EvtRequestCancel` of a held call: the application cancelled it or is exiting.
extern "C" fn on_held_cancel(request: WDFREQUEST) {
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
fn hold(a: &Apps, request: WDFREQUEST, file: WDFFILEOBJECT) -> Result<u64, NTSTATUS> {
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
fn release_held_of(a: &Apps, file: WDFFILEOBJECT) {
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
fn stream_head(
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
fn send_held(
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

/// `QueueRespond` for the handle `file`: cached first when the application and the rules
/// allow it, then handed to the waiting connection.
fn respond(
    g: &Global,
    a: &Apps,
    file: WDFFILEOBJECT,
    r: &Respond<'_>,
    body: Vec<u8>,
) -> Result<RespondRow, CtlError> {
    let id = RequestId(r.id);
    let me = a.with(|st| taker(st, file));
    let (origin, cache_url) = a.with(|st| {
        let url = st.handoff.cache_url(id, me).map(copy_str);
        (st.handoff.answer(id, me), url)
    });
    let Some(origin) = origin else {
        return Ok(RespondRow {
            delivered: false,
            cached: false,
        });
    };
    let len = body.len() as u64;
    let Ok(body) = Arc::try_new(body) else {
        // SAFETY: the origin left the hand-off with its reference.
        unsafe { deliver(origin, id, Outcome::Abandoned) };
        return Err(CtlError::OutOfMemory);
    };
    let resp = match AppResponse::new(r.status, r.content_type, &r.headers, Arc::clone(&body)) {
        Ok(resp) => resp,
        Err(e) => {
            // The client is not left waiting: 502, and the application hears why.
            // SAFETY: the origin left the hand-off with its reference.
            unsafe { deliver(origin, id, Outcome::Invalid) };
            return Err(e);
        }
    };
    let site = g.site.snapshot();
    let cached = match (r.ttl, cache_url.flatten()) {
        (Some(ttl), Some(url)) if app_response_cacheable(r.status, &r.headers, len, &site) => {
            let answer = AppAnswer {
                status: r.status,
                content_type: r.content_type,
                headers: &r.headers,
                body: &body,
            };
            let now = clock().now();
            writer(g)
                .change(|next| store_app_answer(next, &url, &answer, ttl, now))
                .is_ok()
        }
        _ => false,
    };
    // SAFETY: the origin left the hand-off with its reference.
    unsafe { deliver(origin, id, Outcome::Response(resp)) };
    Ok(RespondRow {
        delivered: true,
        cached,
    })
}
