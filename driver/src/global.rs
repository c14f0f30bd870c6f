//! Driver-wide state: the site snapshot, the clock, the connection table, the stop flag.
//!
//! Readers at <= DISPATCH_LEVEL take the spin lock only to clone the `Arc<Site>` (DRIVER-NOTES §5);
//! the one writer (the sequential, passive-level IOCTL queue) builds the next site outside the
//! lock and swaps it in under it.

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use khttp_engine::{Clock, Instant, Site};
use wdk::wdf::SpinLock;
use wdk_sys::ntddk::{KeQueryInterruptTimePrecise, KeQuerySystemTimePrecise};
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, LARGE_INTEGER, WDF_OBJECT_ATTRIBUTES,
    WDFDEVICE,
};

use khttp_engine::SlotTable;
use khttp_engine::limits::{DRIVER_MAX_CONNECTIONS, OVERLOAD_CONNECTIONS};

use crate::net::ConnCtx;

/// Connection contexts the driver holds at once: those it serves (`max-connections`, at most
/// [`DRIVER_MAX_CONNECTIONS`]) and those it answers 503.
pub(crate) const MAX_SLOTS: usize = DRIVER_MAX_CONNECTIONS + OVERLOAD_CONNECTIONS;

/// `WDF_OBJECT_ATTRIBUTES_INIT` (DRIVER-NOTES §1.6): size, inherit execution level and scope.
pub(crate) fn object_attributes() -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES {
        Size: crate::size_of_u32::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

/// A WDF spin lock parented to `device`.
pub(crate) fn spin_lock(device: WDFDEVICE) -> Result<SpinLock, wdk_sys::NTSTATUS> {
    let mut attrs = object_attributes();
    attrs.ParentObject = device.cast();
    SpinLock::create(&mut attrs)
}

/// The site snapshot behind a spin lock.
pub(crate) struct SiteCell {
    lock: SpinLock,
    /// INVARIANT: read and written only while `lock` is held.
    site: UnsafeCell<Arc<Site>>,
}

// SAFETY: `site` is only touched under `lock` (type invariant), and `Arc<Site>` is Send + Sync.
unsafe impl Sync for SiteCell {}
// SAFETY: as above; the WDF spin lock handle may be used from any thread.
unsafe impl Send for SiteCell {}

impl SiteCell {
    /// A cell holding `site`, with a spin lock parented to `device`.
    pub(crate) fn new(site: Site, device: WDFDEVICE) -> Result<Self, wdk_sys::NTSTATUS> {
        Ok(Self {
            lock: spin_lock(device)?,
            site: UnsafeCell::new(
                Arc::try_new(site).map_err(|_| wdk_sys::STATUS_INSUFFICIENT_RESOURCES)?,
            ),
        })
    }

    /// The current snapshot (<= DISPATCH_LEVEL).
    pub(crate) fn snapshot(&self) -> Arc<Site> {
        self.lock.acquire();
        // SAFETY: `lock` is held (type invariant).
        let s = Arc::clone(unsafe { &*self.site.get() });
        self.lock.release();
        s
    }

    /// Swaps in `next`; the old snapshot is dropped outside the lock. The caller allocates the
    /// `Arc` (fallibly, `Arc::try_new`) before it persists anything (issue #9, finding 12).
    pub(crate) fn publish(&self, mut next: Arc<Site>) {
        self.lock.acquire();
        // SAFETY: `lock` is held (type invariant).
        core::mem::swap(unsafe { &mut *self.site.get() }, &mut next);
        self.lock.release();
        drop(next);
    }
}

/// Everything the callbacks share. Created once in `DriverEntry`, torn down in unload.
pub(crate) struct Global {
    pub(crate) site: SiteCell,
    /// Set at the start of unload: refuse new IOCTLs and connections.
    pub(crate) stopping: AtomicBool,
    /// Live connection contexts, for the timer sweep and unload. Changed only under
    /// `slots_lock`: a context found there under the lock still holds its slot reference.
    pub(crate) slots: alloc::boxed::Box<[AtomicPtr<ConnCtx>]>,
    /// Which slots are free and which are live (the engine's [`SlotTable`]).
    /// INVARIANT: touched only while `slots_lock` is held.
    pub(crate) slot_table: UnsafeCell<SlotTable>,
    /// Guards `slots` and `slot_table`.
    pub(crate) slots_lock: SpinLock,
    /// Live contexts that are answered 503 (over `max-connections`); changed only under
    /// `slots_lock`.
    pub(crate) overloaded: AtomicUsize,
    /// Contexts not yet freed (unload waits for 0).
    pub(crate) live: AtomicUsize,
    /// The registry path of the service key, NUL-terminated UTF-16, for persistence.
    pub(crate) service_key: alloc::vec::Vec<u16>,
}

impl Global {
    /// Runs `f` on the slot table under `slots_lock` (<= DISPATCH_LEVEL).
    pub(crate) fn with_slots<R>(&self, f: impl FnOnce(&mut SlotTable) -> R) -> R {
        self.slots_lock.acquire();
        // SAFETY: `slots_lock` is held (invariant of `slot_table`), so this is the only access.
        let r = f(unsafe { &mut *self.slot_table.get() });
        self.slots_lock.release();
        r
    }

    /// Gives `slot` back to `table` (under `slots_lock`, from [`Global::with_slots`]).
    pub(crate) fn leave(&self, table: &mut SlotTable, slot: u32, overload: bool) {
        if overload {
            self.overloaded.fetch_sub(1, Ordering::AcqRel);
        }
        table.release(slot);
    }
}

struct GlobalCell(UnsafeCell<Option<Global>>);
// SAFETY: written once in DriverEntry before any callback can run, and cleared in unload after
// every callback has been stopped; in between it is only read.
unsafe impl Sync for GlobalCell {}

static GLOBAL: GlobalCell = GlobalCell(UnsafeCell::new(None));

/// Installs the global state (DriverEntry, PASSIVE_LEVEL, before any callback is registered).
///
/// # Safety
/// Called once, before any callback that reads [`global`] can run.
pub(crate) unsafe fn install(g: Global) {
    // SAFETY: no reader exists yet (caller's contract).
    unsafe { *GLOBAL.0.get() = Some(g) };
}

/// Drops the global state (end of unload).
///
/// # Safety
/// Every callback that reads [`global`] has been stopped.
pub(crate) unsafe fn uninstall() {
    // SAFETY: no reader remains (caller's contract).
    unsafe { *GLOBAL.0.get() = None };
}

/// The global state, if installed.
pub(crate) fn global() -> Option<&'static Global> {
    // SAFETY: see `GlobalCell`: between install and uninstall the value is only read.
    unsafe { (*GLOBAL.0.get()).as_ref() }
}

/// The engine's clock: interrupt time (monotonic) in ms, system time in Unix seconds.
pub(crate) fn clock() -> Clock {
    let mut qpc = 0u64;
    // SAFETY: KeQueryInterruptTimePrecise writes the performance counter to `qpc` and returns the
    // interrupt time in 100 ns units; callable at any IRQL <= HIGH_LEVEL ([U] binding, §9.6).
    let ticks_100ns = unsafe { KeQueryInterruptTimePrecise(&raw mut qpc) };
    let mut now = LARGE_INTEGER::default();
    // SAFETY: KeQuerySystemTimePrecise writes a LARGE_INTEGER; callable at <= DISPATCH_LEVEL.
    unsafe { KeQuerySystemTimePrecise(&raw mut now) };
    // SAFETY: QuadPart is the whole 64-bit value of the union.
    let since_1601 = unsafe { now.QuadPart };
    let unix = u64::try_from(since_1601).unwrap_or(0) / 10_000_000;
    let unix = unix.saturating_sub(11_644_473_600);
    Clock::new(Instant(ticks_100ns / 10_000), unix)
}

/// Counts a freed context; the last one lets unload finish.
pub(crate) fn context_freed() {
    if let Some(g) = global() {
        g.live.fetch_sub(1, Ordering::AcqRel);
    }
}
