//! `EvtIoDeviceControl`: each request's bytes go to the engine's control dispatcher through
//! `khttp-proto`, and every request is completed exactly once (docs/driver-facts.md, "IOCTL
//! handler").
//!
//! The queue is sequential and runs at PASSIVE_LEVEL, so there is one writer at a time, and
//! listener changes (which wait on WSK) can happen here.
//!
//! Buffers (docs/driver-facts.md, "IOCTL codes and buffers"): METHOD_BUFFERED input and output
//! share one system buffer, so all input is copied out before anything is written. The output
//! receives `status: u32` followed by the reply. For METHOD_IN_DIRECT (`cache put`) the
//! "output" buffer carries the bodies *in*; they are copied once into driver memory (never read
//! twice from the user-mapped view) and the result is the request's NTSTATUS.

#![allow(
    unsafe_code,
    reason = "WDF request buffers and completion through the C ABI"
)]

use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::Ordering;

use alloc::borrow::Cow;
use alloc::sync::Arc;

use khttp_engine::Site;
use khttp_engine::ctl::{Call, Publish, Writer};
use khttp_proto::reply::encode_device_reply;
use khttp_proto::{Command, METHOD_IN_DIRECT, Status};
use wdk_sys::{
    NTSTATUS, PDEVICE_OBJECT, PVOID, STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_NOT_READY,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS, WDFQUEUE,
    WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::global::{Global, clock, global};
use crate::irp::{PassiveGuard, PassiveLock, SingleWork};
use crate::{net, registry};

/// Serialises the site's writers: the IOCTL queue and the expiry purge (PASSIVE_LEVEL both).
static WRITER: PassiveLock = PassiveLock::new();
/// The purge work item.
static PURGE: SingleWork = SingleWork::new();

/// Sets up the writer lock and the purge work item (DriverEntry, PASSIVE_LEVEL).
///
/// # Safety
/// PASSIVE_LEVEL, once, before any IOCTL or timer callback.
pub(crate) unsafe fn init() -> NTSTATUS {
    // SAFETY: once, before any acquire (contract).
    unsafe { WRITER.init() };
    if !PURGE.allocate() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    STATUS_SUCCESS
}

/// The timer's expiry check (DISPATCH_LEVEL): when an entry's TTL has passed, the purge work
/// item drops expired entries at PASSIVE_LEVEL, as khttpd's janitor does.
pub(crate) fn expire_tick() {
    let Some(g) = global() else { return };
    let due = g
        .site
        .snapshot()
        .next_expiry()
        .is_some_and(|at| at <= clock().now());
    if !due || g.stopping.load(Ordering::Acquire) {
        return;
    }
    PURGE.queue(on_purge);
}

/// The purge work item (PASSIVE_LEVEL): a clone without the expired entries, published under
/// the writer lock. The cache is not persisted, so nothing is saved.
///
/// # Safety
/// Called by the I/O manager for the work item [`PURGE`] queued, at PASSIVE_LEVEL.
unsafe extern "C" fn on_purge(_device: PDEVICE_OBJECT, _context: PVOID) {
    loop {
        if let Some(g) = global().filter(|g| !g.stopping.load(Ordering::Acquire)) {
            // PASSIVE_LEVEL in a work item; the writer lock is not held by this thread.
            writer(g).purge(clock().now());
        }
        if !PURGE.done() {
            break;
        }
    }
}

/// Waits for a queued purge to finish and frees its work item (unload, after `stopping`).
///
/// # Safety
/// PASSIVE_LEVEL, in unload (or a failing DriverEntry).
pub(crate) unsafe fn shutdown() {
    // SAFETY: PASSIVE_LEVEL in unload; the timer that queues it has stopped (contract).
    unsafe { PURGE.shutdown() };
}

/// Completes `request` with `status` and `information` bytes: the one completion per request.
pub(crate) fn complete(request: WDFREQUEST, status: NTSTATUS, information: usize) {
    // SAFETY: `request` is the framework's request handed to this callback and not completed
    // yet (every path of `on_device_control` calls this exactly once).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information as u64
        );
    }
}

/// Copies `len` bytes from a framework buffer into a fresh, fallibly allocated vector.
///
/// # Safety
/// `src` is valid for reads of `len` bytes for the duration of the call.
unsafe fn copy_in(src: PVOID, len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    // SAFETY: `src` is readable for `len` bytes (contract) and `v` has room for them; the copy
    // reads the (possibly user-mapped) memory once, through a raw pointer, never as `&[u8]`.
    unsafe { ptr::copy_nonoverlapping(src.cast::<u8>(), v.as_mut_ptr(), len) };
    // SAFETY: the `len` bytes were just initialised by the copy; capacity >= len.
    unsafe { v.set_len(len) };
    Some(v)
}

/// Which of a request's buffers.
pub(crate) enum Buffer {
    Input,
    Output,
}

/// Retrieves a request buffer of at least `min` bytes and copies it into driver memory.
pub(crate) fn retrieve(
    request: WDFREQUEST,
    which: Buffer,
    min: usize,
) -> Result<Vec<u8>, NTSTATUS> {
    let mut buf: PVOID = ptr::null_mut();
    let mut len = 0usize;
    let status = match which {
        // SAFETY: a live request; WDF checks the minimum length and returns the system buffer.
        Buffer::Input => unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                min,
                &raw mut buf,
                &raw mut len
            )
        },
        // SAFETY: as above, for the output buffer (mapped from the MDL for METHOD_IN_DIRECT).
        Buffer::Output => unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                request,
                min,
                &raw mut buf,
                &raw mut len
            )
        },
    };
    if !wdk::nt_success(status) {
        return Err(status);
    }
    // SAFETY: WDF returned a buffer of `len` readable bytes, valid during this callback.
    unsafe { copy_in(buf, len) }.ok_or(STATUS_INSUFFICIENT_RESOURCES)
}

/// The NTSTATUS of a `cache put` (METHOD_IN_DIRECT has no reply buffer): the refusal in
/// khttp-proto's customer range, which khttpctl turns back into its line of English.
pub(crate) fn ntstatus_of(status: Status) -> NTSTATUS {
    status.direct_ntstatus() as NTSTATUS
}

/// `EvtIoDeviceControl` (PASSIVE_LEVEL: the queue's execution level).
pub(crate) extern "C" fn on_device_control(
    _queue: WDFQUEUE,
    request: WDFREQUEST,
    output_len: usize,
    input_len: usize,
    code: u32,
) {
    let Some(g) = global() else {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    };
    if g.stopping.load(Ordering::Acquire) {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    }
    // Compare the full 32-bit code (Microsoft Learn, "Security Issues for I/O Control Codes").
    let Some(command) = Command::from_code(code) else {
        return complete(request, STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    // A METHOD_BUFFERED reply needs at least its 4-byte status: refuse before anything is
    // applied, persisted or reconciled (issue #9, finding 11). Replies that do not fit the rest
    // come back as BufferTooSmall from `dispatch`, which then changes nothing.
    if command.method() != METHOD_IN_DIRECT && output_len < 4 {
        return complete(request, STATUS_BUFFER_TOO_SMALL, 0);
    }
    let direct_in = command.method() == METHOD_IN_DIRECT;
    let (input, direct) = match buffers(g, request, direct_in, input_len, output_len) {
        Ok(b) => b,
        Err(status) => return complete(request, status, 0),
    };
    let cap = if direct_in {
        usize::MAX
    } else {
        output_len.saturating_sub(4)
    };
    let call = Call {
        code,
        input: &input,
        direct: &direct,
        output_cap: cap,
    };
    let (status, out) = commit_locked(g, &call);
    if direct_in {
        return complete(request, ntstatus_of(status), 0);
    }
    reply(request, status, &out);
}

/// The request's input, copied into driver memory, and for METHOD_IN_DIRECT the bodies it
/// carries in its "output" buffer (refused over the entry limit before they are copied).
fn buffers(
    g: &Global,
    request: WDFREQUEST,
    direct_in: bool,
    input_len: usize,
    output_len: usize,
) -> Result<(Vec<u8>, Vec<u8>), NTSTATUS> {
    let input = if input_len > 0 {
        retrieve(request, Buffer::Input, input_len)?
    } else {
        Vec::new()
    };
    let direct = if direct_in && output_len > 0 {
        if output_len as u64 > g.site.snapshot().limits().cache_max_entry_bytes {
            return Err(ntstatus_of(Status::EntryTooLarge));
        }
        // METHOD_IN_DIRECT: WDF maps the locked caller pages (MmGetSystemAddressForMdlSafe).
        retrieve(request, Buffer::Output, output_len)?
    } else {
        Vec::new()
    };
    Ok((input, direct))
}

/// The driver's half of a site write: the writer lock, held while this lives; the registry;
/// the site cell.
pub(crate) struct SiteLock<'a> {
    g: &'a Global,
    lock: PassiveGuard<'static>,
}

impl Publish for SiteLock<'_> {
    fn current(&self) -> Arc<Site> {
        self.g.site.snapshot()
    }

    fn persist(&mut self, site: &Site) -> Result<(), Cow<'static, str>> {
        let parameters = registry::parameters_path(&self.g.service_key);
        // SAFETY: PASSIVE_LEVEL (every writer runs there: see `writer`).
        if wdk::nt_success(unsafe { registry::save(&parameters, site) }) {
            Ok(())
        } else {
            Err(Cow::Borrowed("could not save the change in the registry"))
        }
    }

    fn publish(&mut self, site: Arc<Site>, config: bool) {
        let listen = if config {
            // SAFETY: PASSIVE_LEVEL, as above.
            unsafe { net::reconcile(&site) }
        } else {
            STATUS_SUCCESS
        };
        self.g.site.publish(site, &self.lock);
        if !wdk::nt_success(listen) {
            wdk::println!("khttp: listener update failed: {listen:#x}");
        }
    }

    fn reopen_log(&mut self) -> Result<(), Cow<'static, str>> {
        Err(Cow::Borrowed("the driver writes no access log"))
    }
}

/// The site's one writer, holding the writer lock until it is dropped. Called at
/// PASSIVE_LEVEL only (the devices' queues, their cleanup callbacks and the purge work item),
/// by a thread that does not hold it.
pub(crate) fn writer(g: &Global) -> Writer<SiteLock<'_>> {
    // SAFETY: PASSIVE_LEVEL and not held by this thread (every caller, above).
    let lock = unsafe { WRITER.acquire() };
    Writer::new(SiteLock { g, lock })
}

/// One control request: the engine's write ([`Writer::commit`]) under the writer lock.
fn commit_locked(g: &Global, call: &Call<'_>) -> (Status, Vec<u8>) {
    let mut out = Vec::new();
    let status = writer(g).commit(call, clock().now(), &mut out);
    (status, out)
}

/// Completes a METHOD_BUFFERED request with `status: u32` followed by the reply.
pub(crate) fn reply(request: WDFREQUEST, status: Status, out: &[u8]) {
    let mut obuf: PVOID = ptr::null_mut();
    let mut olen = 0usize;
    let rs;
    // SAFETY: METHOD_BUFFERED: the system buffer, now that all input has been copied out.
    unsafe {
        rs = call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request,
            4,
            &raw mut obuf,
            &raw mut olen
        );
    }
    if !wdk::nt_success(rs) {
        return complete(request, rs, 0);
    }
    if obuf.is_null() {
        return complete(request, STATUS_BUFFER_TOO_SMALL, 0);
    }
    // SAFETY: WdfRequestRetrieveOutputBuffer succeeded: `obuf` is the request's system buffer,
    // writable for `olen` bytes and used by nothing else until the request completes.
    let dst = unsafe { core::slice::from_raw_parts_mut(obuf.cast::<u8>(), olen) };
    match encode_device_reply(status, out, dst) {
        Some(total) => complete(request, STATUS_SUCCESS, total),
        None => complete(request, STATUS_BUFFER_TOO_SMALL, 0),
    }
}
