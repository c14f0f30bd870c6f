//! IRPs, MDLs, events and pool memory: the kernel primitives bindgen leaves out or that need a
//! safe shape (docs/driver-facts.md, "IRPs for WSK calls", "Memory and MDLs").
//!
//! Every function here is a thin wrapper around one documented kernel routine. IRQL is noted on
//! each; nothing here blocks except [`wait`] (PASSIVE_LEVEL).

#![allow(
    unsafe_code,
    reason = "the kernel primitives: IRPs, MDLs, events, pool, work items"
)]

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use khttp_engine::wake::WorkGate;
use wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePool, IoAllocateIrp, IoAllocateMdl, IoAllocateWorkItem, IoFreeIrp,
    IoFreeMdl, IoFreeWorkItem, IoQueueWorkItem, IoReuseIrp, IoSetCompletionRoutineEx,
    KeDelayExecutionThread, KeEnterCriticalRegion, KeInitializeEvent, KeLeaveCriticalRegion,
    KeSetEvent, KeWaitForSingleObject, MmBuildMdlForNonPagedPool,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WORK_QUEUE_TYPE, IRP, KEVENT, LARGE_INTEGER, NTSTATUS,
    PDEVICE_OBJECT, PIO_WORKITEM, PIRP, PMDL, POOL_FLAG_NON_PAGED, PVOID,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_UNSUCCESSFUL,
};

/// The completion routine type of `IO_STACK_LOCATION::CompletionRoutine` ("C" on x64, [U]).
pub(crate) type CompletionRoutine = unsafe extern "C" fn(PDEVICE_OBJECT, PIRP, PVOID) -> NTSTATUS;

/// Pool tags (docs/driver-facts.md, "Memory and MDLs").
pub(crate) const TAG_CONNECTION: u32 = u32::from_le_bytes(*b"KhCn");
pub(crate) const TAG_RECEIVE: u32 = u32::from_le_bytes(*b"KhRx");

/// A driver-owned IRP with one stack location.
///
/// # Safety
/// IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn allocate_irp() -> PIRP {
    // SAFETY: IoAllocateIrp(1, FALSE) may be called at <= DISPATCH_LEVEL (the caller's contract);
    // it returns null on failure, which callers check.
    unsafe { IoAllocateIrp(1, 0) }
}

/// Frees an IRP that is not in flight.
///
/// # Safety
/// `irp` came from [`allocate_irp`] and no operation using it is pending. IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn free_irp(irp: PIRP) {
    if !irp.is_null() {
        // SAFETY: the caller guarantees the IRP is ours and idle.
        unsafe { IoFreeIrp(irp) }
    }
}

/// The driver's first device object, for [`prepare`]: `DRIVER_OBJECT::DeviceObject`, which the
/// I/O manager sets when a device is created ("Pointer to the device objects created by the
/// driver", learn.microsoft.com, `DRIVER_OBJECT`). KMDF creates each control device's WDM device
/// on the driver object, and deletes them only after `EvtDriverUnload` has returned, so it
/// outlives every IRP the driver sends.
static DEVICE_OBJECT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// Records the driver's device object (DriverEntry, once a device exists).
pub(crate) fn set_device_object(device: *mut c_void) {
    DEVICE_OBJECT.store(device, Ordering::Release);
}

/// `IoReuseIrp`, then `IoSetCompletionRoutineEx(device, irp, routine, context, TRUE, TRUE,
/// TRUE)`, as every WSK call needs (docs/driver-facts.md, "IRPs for WSK calls"). False when
/// the kernel could not allocate the routine's context (or no device exists yet): then no
/// routine is set, and the IRP must not be passed to WSK.
///
/// The `Ex` form, not `IoSetCompletionRoutine` (issue #22, defect 12): it keeps the driver
/// loaded until the routine has returned. With the plain form, unload can wait for the last
/// completion (it signals an event, or drops the last reference), return, and have the image
/// unmapped while that routine is still executing its last instructions: bug check 0xCE
/// (DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS). Its price is a small allocation per
/// call, which can fail, and which leaks if the IRP is then not sent ("The driver must ensure
/// that its IoCompletion routine executes by calling IoCallDriver; otherwise, the kernel will
/// leak memory": learn.microsoft.com, `IoSetCompletionRoutineEx`, Remarks). A WSK call always
/// completes the IRP it is given, so callers make the call right after a `true`.
///
/// # Safety
/// `irp` is a driver-owned IRP from [`allocate_irp`] that is not in flight; `context` stays valid
/// until the routine has run. IRQL <= DISPATCH_LEVEL.
#[must_use]
pub(crate) unsafe fn prepare(irp: PIRP, routine: CompletionRoutine, context: *mut c_void) -> bool {
    // SAFETY: the IRP is ours and idle (caller's contract); IoReuseIrp resets it for a new call.
    unsafe { IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
    let device = DEVICE_OBJECT.load(Ordering::Acquire);
    if device.is_null() {
        return false;
    }
    // SAFETY: `device` is the driver's live device object (set once it exists, deleted only
    // after unload); `irp` has its one stack location free for us (IoAllocateIrp(1, ..), just
    // reused); `context` outlives the routine (caller's contract); <= DISPATCH_LEVEL.
    let status =
        unsafe { IoSetCompletionRoutineEx(device.cast(), irp, Some(routine), context, 1, 1, 1) };
    #[cfg(feature = "fault-plain-completion")]
    if status >= 0 {
        // The harness's injected fault: the routine written straight into the stack location,
        // as IoSetCompletionRoutine does (and this driver did), over the kernel's wrapper.
        // SAFETY: as above: the IRP's one stack location, below the current pointer, is ours.
        let next = unsafe { next_stack_location(irp) };
        next.CompletionRoutine = Some(routine);
        next.Context = context;
    }
    status >= 0
}

/// `IoGetNextIrpStackLocation` (a macro in wdm.h): `Tail.Overlay.CurrentStackLocation - 1`.
/// Only the injected fault above writes it.
///
/// # Safety
/// `irp` is a live IRP of ours from [`allocate_irp`], not in flight.
#[cfg(feature = "fault-plain-completion")]
unsafe fn next_stack_location<'a>(irp: PIRP) -> &'a mut wdk_sys::IO_STACK_LOCATION {
    // SAFETY: live and ours (contract).
    let tail = unsafe { &(*irp).Tail };
    // SAFETY: for an IRP being sent down the stack the `Overlay` member of `Tail` is in use.
    let overlay = unsafe { &tail.Overlay };
    // SAFETY: for a driver-allocated IRP the stack-location member of the union is the active one.
    let current = unsafe {
        overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    };
    // SAFETY: an IRP from IoAllocateIrp(1, ..) has one stack location, just below `current`.
    unsafe { &mut *current.wrapping_sub(1) }
}

/// The IRP's final status and information.
///
/// # Safety
/// `irp` is a live IRP whose operation has completed.
pub(crate) unsafe fn result(irp: PIRP) -> (NTSTATUS, u64) {
    let io: &IRP;
    // SAFETY: the caller guarantees `irp` is live and completed, so IoStatus is stable.
    unsafe {
        io = &*irp;
    }
    // SAFETY: `Status` is the active member of the IoStatus union for a completed IRP.
    let status = unsafe { io.IoStatus.__bindgen_anon_1.Status };
    (status, io.IoStatus.Information)
}

/// Sets the IRP's status block, as its completion would.
///
/// # Safety
/// `irp` is a live IRP of ours that is not in flight.
pub(crate) unsafe fn set_result(irp: PIRP, status: NTSTATUS, information: u64) {
    // SAFETY: live and ours, nothing else touches it (contract).
    let io = unsafe { &mut (*irp).IoStatus };
    io.__bindgen_anon_1.Status = status;
    io.Information = information;
}

/// Non-paged pool, tagged; null on failure.
///
/// # Safety
/// IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn pool_alloc(bytes: usize, tag: u32) -> *mut u8 {
    // SAFETY: ExAllocatePool2 with POOL_FLAG_NON_PAGED is allowed at <= DISPATCH_LEVEL and
    // returns zeroed memory or null.
    unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes as u64, tag).cast() }
}

/// Frees pool memory from [`pool_alloc`].
///
/// # Safety
/// `p` came from [`pool_alloc`] (or is null) and is not used again. IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn pool_free(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: the caller guarantees `p` is a live pool allocation.
        unsafe { ExFreePool(p.cast()) }
    }
}

/// An MDL describing `len` bytes of non-paged memory at `va`; null on failure.
///
/// # Safety
/// `va..va+len` is non-paged memory (pool from wdk-alloc or [`pool_alloc`]) that outlives the
/// MDL. IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn mdl_for(va: *const u8, len: usize) -> PMDL {
    let Ok(len32) = u32::try_from(len) else {
        return ptr::null_mut();
    };
    // SAFETY: IoAllocateMdl only records the range (no secondary buffer, no IRP).
    let mdl = unsafe { IoAllocateMdl(va.cast_mut().cast(), len32, 0, 0, ptr::null_mut()) };
    if !mdl.is_null() {
        // SAFETY: the range is non-paged (caller's contract), as MmBuildMdlForNonPagedPool needs.
        unsafe { MmBuildMdlForNonPagedPool(mdl) };
    }
    mdl
}

/// Frees an MDL from [`mdl_for`].
///
/// # Safety
/// No operation uses `mdl` any more.
pub(crate) unsafe fn mdl_free(mdl: PMDL) {
    if !mdl.is_null() {
        // SAFETY: the caller guarantees the MDL is ours and idle.
        unsafe { IoFreeMdl(mdl) }
    }
}

/// A driver-owned IRP ([`allocate_irp`]), freed when dropped.
///
/// INVARIANT: no operation on it is pending whenever it can be dropped. Its constructor's
/// contract makes the owner keep it so: a synchronous call always waits for its completion
/// ([`SyncCall::wait`]), and a connection frees its IRPs only with its last reference, once no
/// operation is in flight.
pub(crate) struct OwnedIrp(PIRP);

impl OwnedIrp {
    /// A fresh IRP; `None` when the kernel has none.
    ///
    /// # Safety
    /// IRQL <= DISPATCH_LEVEL; the owner lets it drop only while no operation on it is pending
    /// (its type's invariant), at <= DISPATCH_LEVEL.
    pub(crate) unsafe fn allocate() -> Option<Self> {
        // SAFETY: <= DISPATCH_LEVEL (contract).
        let irp = unsafe { allocate_irp() };
        (!irp.is_null()).then_some(Self(irp))
    }

    /// The IRP, for the calls that take it; it stays owned here.
    pub(crate) const fn as_ptr(&self) -> PIRP {
        self.0
    }
}

impl Drop for OwnedIrp {
    fn drop(&mut self) {
        // SAFETY: ours, from `allocate_irp`, and idle (type invariant).
        unsafe { free_irp(self.0) };
    }
}

/// An MDL ([`mdl_for`]), freed when dropped.
///
/// INVARIANT: no operation uses it whenever it can be dropped, and the memory it describes
/// outlives it (its constructor's contract).
pub(crate) struct OwnedMdl(PMDL);

impl OwnedMdl {
    /// An MDL for `len` bytes of non-paged memory at `va`; `None` on failure.
    ///
    /// # Safety
    /// As [`mdl_for`]; the owner lets it drop only once no operation uses it (its type's
    /// invariant), at <= DISPATCH_LEVEL.
    pub(crate) unsafe fn describe(va: *const u8, len: usize) -> Option<Self> {
        // SAFETY: the caller's contract is `mdl_for`'s.
        let mdl = unsafe { mdl_for(va, len) };
        (!mdl.is_null()).then_some(Self(mdl))
    }

    /// The MDL, for a `WSK_BUF`; it stays owned here.
    pub(crate) const fn as_ptr(&self) -> PMDL {
        self.0
    }
}

impl Drop for OwnedMdl {
    fn drop(&mut self) {
        // SAFETY: ours, from `mdl_for`, and unused (type invariant).
        unsafe { mdl_free(self.0) };
    }
}

/// Non-paged pool ([`pool_alloc`]), freed when dropped.
///
/// INVARIANT: nothing uses the memory whenever it can be dropped (its constructor's contract).
pub(crate) struct PoolBox {
    ptr: *mut u8,
    len: usize,
}

impl PoolBox {
    /// `len` zeroed bytes of non-paged pool tagged `tag`; `None` on failure.
    ///
    /// # Safety
    /// IRQL <= DISPATCH_LEVEL; the owner lets it drop only once nothing uses the memory (an MDL
    /// that describes it, an operation that reads it), at <= DISPATCH_LEVEL.
    pub(crate) unsafe fn zeroed(len: usize, tag: u32) -> Option<Self> {
        // SAFETY: <= DISPATCH_LEVEL (contract).
        let ptr = unsafe { pool_alloc(len, tag) };
        (!ptr.is_null()).then_some(Self { ptr, len })
    }

    /// The memory's start.
    pub(crate) const fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Gives the memory up unfreed (the caller frees it with [`pool_free`]).
    pub(crate) fn into_raw(self) -> *mut u8 {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }
}

impl Drop for PoolBox {
    fn drop(&mut self) {
        // SAFETY: ours, from `pool_alloc`, and unused (type invariant).
        unsafe { pool_free(self.ptr) };
    }
}

/// A work item ([`allocate_work_item`]), freed when dropped.
///
/// INVARIANT: not queued whenever it can be dropped (its constructor's contract).
pub(crate) struct OwnedWorkItem(PIO_WORKITEM);

impl OwnedWorkItem {
    /// A work item on the driver object; `None` on failure.
    ///
    /// # Safety
    /// IRQL <= DISPATCH_LEVEL; the owner lets it drop only while it is not queued.
    pub(crate) unsafe fn allocate() -> Option<Self> {
        // SAFETY: <= DISPATCH_LEVEL (contract).
        let item = unsafe { allocate_work_item() };
        (!item.is_null()).then_some(Self(item))
    }

    /// The work item, for `IoQueueWorkItem`; it stays owned here.
    pub(crate) const fn as_ptr(&self) -> PIO_WORKITEM {
        self.0
    }
}

impl Drop for OwnedWorkItem {
    fn drop(&mut self) {
        // SAFETY: ours, from `allocate_work_item`, and not queued (type invariant).
        unsafe { free_work_item(self.0) };
    }
}

/// A synchronous WSK call at PASSIVE_LEVEL: an event the completion routine signals.
pub(crate) struct SyncCall {
    event: KEVENT,
}

/// Completion routine for [`SyncCall`]: signals the event, keeps the IRP.
///
/// # Safety
/// Called by the I/O manager for an IRP prepared by [`SyncCall`], whose context is the live
/// `SyncCall` the issuer waits on.
unsafe extern "C" fn signal(_device: PDEVICE_OBJECT, _irp: PIRP, context: PVOID) -> NTSTATUS {
    // SAFETY: `context` is the `KEVENT` of a `SyncCall` whose owner is blocked in `wait` until
    // this runs, so it is live; KeSetEvent(.., FALSE) is allowed at <= DISPATCH_LEVEL.
    unsafe {
        KeSetEvent(context.cast(), 0, 0);
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

impl SyncCall {
    /// A call whose event is not initialised yet: [`SyncCall::arm`] initialises it in place.
    ///
    /// A `KEVENT`'s wait-list head points at itself, so an event initialised here and then
    /// returned by value would point into a dead stack slot (issue #9, finding 1).
    pub(crate) fn new() -> Self {
        // SAFETY: KEVENT is plain data; all zeroes is a valid bit pattern for it, and `arm`
        // initialises it with KeInitializeEvent before the kernel sees it.
        let event: KEVENT = unsafe { core::mem::zeroed() };
        Self { event }
    }

    /// Initialises this call's event where it lies, unsignalled, and prepares `irp` to signal
    /// it. False as [`prepare`]: then the call must not be made.
    ///
    /// # Safety
    /// As [`prepare`]; `self` must not move until [`SyncCall::wait`] returns.
    #[must_use]
    pub(crate) unsafe fn arm(&mut self, irp: PIRP) -> bool {
        // SAFETY: `self.event` is a live, writable KEVENT at its final address (caller's
        // contract: no move until `wait` returns); no wait on it is in progress.
        unsafe {
            KeInitializeEvent(&raw mut self.event, _EVENT_TYPE::SynchronizationEvent, 0);
        }
        // SAFETY: forwarded contract; the event outlives the call because `wait` blocks on it.
        unsafe { prepare(irp, signal, (&raw mut self.event).cast()) }
    }

    /// Waits for the completion and returns the IRP's status and information. echosrv's
    /// convention: always wait, whatever the call returned.
    ///
    /// # Safety
    /// PASSIVE_LEVEL; the call using the armed IRP was made.
    pub(crate) unsafe fn wait(&mut self, irp: PIRP) -> (NTSTATUS, u64) {
        // A kernel-mode, non-alertable wait with no timeout returns only STATUS_SUCCESS.
        // SAFETY: waiting on our own initialised event with no timeout at PASSIVE_LEVEL.
        let _ = unsafe {
            KeWaitForSingleObject(
                (&raw mut self.event).cast(),
                _KWAIT_REASON::Executive,
                _MODE::KernelMode as i8,
                0,
                ptr::null_mut(),
            )
        };
        // SAFETY: the completion routine ran, so the IRP's status is final.
        unsafe { result(irp) }
    }
}

/// A lock for PASSIVE_LEVEL paths that wait (a synchronization event used as a mutex): the
/// IOCTL queue, the relisten work item and unload all change the listeners under it.
pub(crate) struct PassiveLock(UnsafeCell<KEVENT>);

// SAFETY: the KEVENT is only touched through the kernel's own synchronised calls.
unsafe impl Sync for PassiveLock {}

impl PassiveLock {
    /// An uninitialised lock: [`PassiveLock::init`] before first use.
    pub(crate) const fn new() -> Self {
        // SAFETY: KEVENT is plain data and all zeroes is a valid bit pattern; `init` initialises
        // it before the kernel uses it.
        Self(UnsafeCell::new(unsafe { core::mem::zeroed() }))
    }

    /// Initialises the lock, free, in place (a static: it never moves).
    ///
    /// # Safety
    /// PASSIVE_LEVEL, once, before any `acquire`.
    pub(crate) unsafe fn init(&self) {
        // SAFETY: a static KEVENT at its final address; nobody waits on it yet (contract).
        unsafe { KeInitializeEvent(self.0.get(), _EVENT_TYPE::SynchronizationEvent, 1) };
    }

    /// Waits for the lock and holds it until the guard drops, inside a critical region: normal
    /// kernel APCs are off from before the wait until after the release, so that the thread
    /// cannot be suspended while it holds the lock. (Without it, a process whose thread holds
    /// the lock, in `QueueAttach` say, could suspend that thread and stop administration and
    /// every other application's attach and cleanup: issue #22, defect 4. A KEVENT used as a
    /// lock needs this as an ERESOURCE does; Microsoft Learn, `KeEnterCriticalRegion` and
    /// `ExAcquireResourceExclusiveLite`.)
    ///
    /// # Safety
    /// PASSIVE_LEVEL; initialised; not already held by this thread.
    pub(crate) unsafe fn acquire(&self) -> PassiveGuard<'_> {
        if !cfg!(feature = "fault-lock-outside-critical-region") {
            // SAFETY: <= APC_LEVEL (contract); left in the guard's drop.
            unsafe { KeEnterCriticalRegion() };
        }
        // A kernel-mode, non-alertable wait with no timeout returns only STATUS_SUCCESS.
        // SAFETY: an initialised event; PASSIVE_LEVEL (contract).
        let _ = unsafe {
            KeWaitForSingleObject(
                self.0.get().cast(),
                _KWAIT_REASON::Executive,
                _MODE::KernelMode as i8,
                0,
                ptr::null_mut(),
            )
        };
        PassiveGuard(self)
    }
}

/// Holds a [`PassiveLock`].
pub(crate) struct PassiveGuard<'a>(&'a PassiveLock);

impl Drop for PassiveGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: an initialised event we hold; KeSetEvent(.., FALSE) at <= DISPATCH_LEVEL.
        unsafe { KeSetEvent(self.0.0.get(), 0, 0) };
        if !cfg!(feature = "fault-lock-outside-critical-region") {
            // SAFETY: the critical region `acquire` entered on this thread.
            unsafe { KeLeaveCriticalRegion() };
        }
    }
}

/// The driver object, for work items (`IoAllocateWorkItem` takes the driver object or one of
/// its devices).
static DRIVER_OBJECT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// Records the driver object (DriverEntry).
pub(crate) fn set_driver_object(driver: *mut c_void) {
    DRIVER_OBJECT.store(driver, Ordering::Release);
}

/// A work item on the driver object; null on failure.
///
/// # Safety
/// IRQL <= DISPATCH_LEVEL.
pub(crate) unsafe fn allocate_work_item() -> PIO_WORKITEM {
    let driver = DRIVER_OBJECT.load(Ordering::Acquire);
    if driver.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the driver object is live while the driver is loaded; <= DISPATCH_LEVEL.
    unsafe { IoAllocateWorkItem(driver.cast()) }
}

/// Frees a work item that is not queued.
///
/// # Safety
/// `item` came from [`allocate_work_item`] (or is null) and is not queued.
pub(crate) unsafe fn free_work_item(item: PIO_WORKITEM) {
    if !item.is_null() {
        // SAFETY: not queued (contract).
        unsafe { IoFreeWorkItem(item) };
    }
}

/// A work item that runs one routine at a time: [`khttp_engine::wake::WorkGate`] decides when
/// it is queued, runs again, or may be freed.
pub(crate) struct SingleWork {
    item: AtomicPtr<c_void>,
    gate: WorkGate,
}

impl SingleWork {
    pub(crate) const fn new() -> Self {
        Self {
            item: AtomicPtr::new(ptr::null_mut()),
            gate: WorkGate::new(),
        }
    }

    /// Allocates the work item (PASSIVE_LEVEL, once, before any `queue`); false on failure
    /// (then the gate is closed: nothing queues it).
    pub(crate) fn allocate(&self) -> bool {
        // SAFETY: PASSIVE_LEVEL (caller), within the <= DISPATCH_LEVEL that the call allows.
        let item = unsafe { allocate_work_item() };
        self.item.store(item.cast(), Ordering::Release);
        if item.is_null() {
            let _ = self.gate.close();
        }
        !item.is_null()
    }

    /// Queues `routine` on the DelayedWorkQueue unless a run is queued or running (which then
    /// runs once more), or the item is closed (<= DISPATCH_LEVEL). The claim comes before the
    /// item is read, so unload cannot free it in between.
    pub(crate) fn queue(&self, routine: unsafe extern "C" fn(PDEVICE_OBJECT, PVOID)) {
        if !self.gate.request() {
            return;
        }
        let item = self.item.load(Ordering::Acquire);
        // SAFETY: our work item, claimed by the gate (not queued, not freed until `done`);
        // DelayedWorkQueue at <= DISPATCH_LEVEL.
        unsafe {
            IoQueueWorkItem(
                item.cast(),
                Some(routine),
                _WORK_QUEUE_TYPE::DelayedWorkQueue,
                ptr::null_mut(),
            );
        }
    }

    /// Called by the routine when it has done its work: true when it must do it once more
    /// (asked again meanwhile, say by a listener that died while it ran).
    pub(crate) fn done(&self) -> bool {
        self.gate.done()
    }

    /// Waits (at most 30 s) for a queued run to finish, closes the gate, then frees the item
    /// (unload, once the queuers stop; one that still asks finds the gate closed).
    ///
    /// # Safety
    /// PASSIVE_LEVEL.
    pub(crate) unsafe fn shutdown(&self) {
        for _ in 0..300 {
            if self.gate.close() {
                // SAFETY: closed, so not queued and never again; allocated by `allocate`
                // (or null).
                unsafe {
                    free_work_item(self.item.swap(ptr::null_mut(), Ordering::AcqRel).cast());
                }
                return;
            }
            sleep_ms(100);
        }
    }
}

/// Sleeps `ms` milliseconds (PASSIVE_LEVEL).
pub(crate) fn sleep_ms(ms: i64) {
    let mut interval = LARGE_INTEGER {
        QuadPart: -ms * 10_000,
    }; // relative, 100 ns units
    // A non-alertable kernel-mode delay returns STATUS_SUCCESS: nothing to report.
    // SAFETY: PASSIVE_LEVEL (callers); a relative, non-alertable kernel-mode wait.
    let _ = unsafe { KeDelayExecutionThread(_MODE::KernelMode as i8, 0, &raw mut interval) };
}
