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

mod answer;
mod receive;
mod session;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use core::sync::atomic::Ordering;

use khttp_engine::acl::Identity;
use khttp_engine::apps::{self, AppCall, Room, body_piece};

use khttp_engine::{CtlError, Handoff, Holder, Outcome, RequestId};

use khttp_proto::{METHOD_IN_DIRECT, Status};
use wdk::nt_success;
use wdk::wdf::SpinLock;
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_FILEOBJECT_CLASS, _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE,
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_DEVICE_NOT_READY,
    STATUS_INVALID_DEVICE_REQUEST, WDF_FILEOBJECT_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDFDEVICE, WDFDRIVER, WDFFILEOBJECT, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::device::{DeviceSpec, create_control_device};
use crate::global::{Global, SpinGuard, global, object_attributes, spin_lock};
use crate::ioctl::{Buffer, complete, ntstatus_of, reply, retrieve};
use crate::net::conn::deliver;
use crate::net::conn::mailbox::{Queues, set_queues};
use crate::{size_of_u32, wide};
use answer::{Handle, NOT_DELIVERED, complete_held, send_held, stream_head};
use receive::{Origin, cancel, hand_over, offer, retrieve_parked};
use session::on_canceled_on_queue;
use session::{attach_session, detach_session, on_file_cleanup, on_file_close, on_file_create};

/// What connections ask of the application device.
static QUEUES: Queues = Queues {
    offer,
    cancel,
    ack: complete_held,
};

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

/// `EvtIoDeviceControl` of the application device (PASSIVE_LEVEL, parallel): the commands
/// of `Command::for_applications`, each for the handle it came on, decoded by the engine
/// (`apps::decode`).
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
    let Ok(command) = apps::command(code) else {
        return complete(request, STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    let direct_in = command.method() == METHOD_IN_DIRECT;
    let (input, direct) = match app_buffers(request, direct_in, input_len, output_len) {
        Ok(buffers) => buffers,
        Err(status) => return complete(request, status, 0),
    };
    let call = match apps::decode(command, &input, direct.len()) {
        Ok(call) => call,
        Err(e) => return refuse(request, direct_in, e.status(), e.message()),
    };
    // SAFETY: a live request of this device, which has file objects.
    let file = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    let handled = AppRequest {
        request,
        file,
        output_len,
    };
    let Some(result) = handled.run(g, a, call, direct) else {
        return; // completed, held or parked
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

/// An application call's buffers: its input, and for METHOD_IN_DIRECT its direct bytes (an
/// answer or a piece, held whole in memory: at most 64 MiB, larger bodies are streamed; whether
/// it may be cached is `cache-max-entry-bytes`'s business).
fn app_buffers(
    request: WDFREQUEST,
    direct_in: bool,
    input_len: usize,
    output_len: usize,
) -> Result<(Vec<u8>, Vec<u8>), NTSTATUS> {
    if !direct_in && output_len < 4 {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    let input = if input_len > 0 {
        retrieve(request, Buffer::Input, input_len)?
    } else {
        Vec::new()
    };
    let direct = if direct_in && output_len > 0 {
        if output_len > khttp_proto::MAX_BYTES {
            return Err(ntstatus_of(Status::EntryTooLarge));
        }
        retrieve(request, Buffer::Output, output_len)?
    } else {
        Vec::new()
    };
    Ok((input, direct))
}

/// One application call being handled: its request, its handle, its output buffer's length.
#[derive(Clone, Copy)]
struct AppRequest {
    request: WDFREQUEST,
    file: WDFFILEOBJECT,
    output_len: usize,
}

impl AppRequest {
    /// Runs `call`. `None` when the request was completed, held or parked here; otherwise the
    /// reply's rows, or the refusal, for the caller to complete it with.
    fn run(
        self,
        g: &Global,
        a: &Apps,
        call: AppCall<'_>,
        direct: Vec<u8>,
    ) -> Option<Result<Vec<u8>, CtlError>> {
        let Self {
            request,
            file,
            output_len,
        } = self;
        Some(match call {
            AppCall::Receive(room) => {
                if !a.with(|st| session_has(st, file, room.queue)) {
                    return Some(Err(CtlError::NotFound));
                }
                let room = Room {
                    bytes: output_len,
                    ..room
                };
                hand_over(a, request, file, room, Origin::Presented);
                return None;
            }
            AppCall::ReceiveBody { id, offset } => a.with(|st| {
                let mut out = Vec::new();
                body_piece(
                    &st.handoff,
                    id,
                    taker(st, file),
                    offset,
                    output_len,
                    &mut out,
                )
                .map(|()| out)
            }),
            AppCall::Stream(r) => match stream_head(a, request, file, &r, direct) {
                Ok(true) => return None, // held until the connection takes it
                Ok(false) => return complete_none(request, NOT_DELIVERED),
                Err(e) => Err(e),
            },
            AppCall::Send { id, last } => return self.send(a, id, last, direct),
            AppCall::Respond(r) => match apps::respond(&Handle::of(g, a, file), &r, direct) {
                Ok(row) => return complete_none(request, row.to_ntstatus() as NTSTATUS),
                Err(e) => Err(e),
            },
            AppCall::Attach { name, prefixes } => attach_session(g, a, file, name, &prefixes),
            AppCall::Cancel { id } => {
                apps::cancel(&Handle::of(g, a, file), id, Outcome::Abandoned);
                Ok(Vec::new())
            }
            AppCall::Detach { queue } => detach_session(a, file, queue),
        })
    }

    /// `QueueSend`: the next piece of a streamed answer, the call held until the connection
    /// takes it.
    fn send(
        self,
        a: &Apps,
        id: RequestId,
        last: bool,
        direct: Vec<u8>,
    ) -> Option<Result<Vec<u8>, CtlError>> {
        let Ok(body) = Arc::try_new(direct) else {
            refuse(self.request, true, Status::OutOfMemory, "out of memory");
            return None;
        };
        let piece = Outcome::Piece { body, last };
        let me = a.with(|st| taker(st, self.file));
        if !send_held(a, self.request, me, id, piece, last) {
            complete(self.request, NOT_DELIVERED, 0);
        }
        None
    }
}

/// Completes `request` with `status` and no bytes; `None`, for `AppRequest::run`.
fn complete_none<T>(request: WDFREQUEST, status: NTSTATUS) -> Option<T> {
    complete(request, status, 0);
    None
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

fn session_has(st: &State, file: WDFFILEOBJECT, queue: u32) -> bool {
    st.sessions
        .iter()
        .any(|s| s.file == file && s.attached.contains(&queue))
}
