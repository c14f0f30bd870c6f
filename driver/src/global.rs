//! Driver-wide state: the site snapshot, the clock, the stop flag; and [`SpinGuard`]. The
//! connection table is the network module's (`net::conn`).
//!
//! Readers at <= DISPATCH_LEVEL take the spin lock only to clone the `Arc<Site>`; the one
//! writer (the sequential, passive-level IOCTL queue) builds the next site outside the lock and
//! swaps it in under it (docs/driver-facts.md, "Locks, timers and work items").

#![allow(
    unsafe_code,
    reason = "a spin-locked site snapshot and the global state: UnsafeCell behind locks, and the clock"
)]

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::AtomicBool;

use khttp_engine::{Clock, Instant, Site};

use crate::irp::PassiveGuard;
use wdk::wdf::SpinLock;
use wdk_sys::ntddk::{KeQueryInterruptTimePrecise, KeQuerySystemTimePrecise};
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, LARGE_INTEGER, WDF_OBJECT_ATTRIBUTES,
    WDFDEVICE,
};

/// `WDF_OBJECT_ATTRIBUTES_INIT` (inline in wdfobject.h): size, inherit execution level and scope.
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

/// A held WDF spin lock, released when it drops (<= DISPATCH_LEVEL).
pub(crate) struct SpinGuard<'a>(&'a SpinLock);

impl<'a> SpinGuard<'a> {
    /// Acquires `lock`.
    pub(crate) fn new(lock: &'a SpinLock) -> Self {
        lock.acquire();
        Self(lock)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
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
        let _guard = SpinGuard::new(&self.lock);
        // SAFETY: `lock` is held (type invariant).
        Arc::clone(unsafe { &*self.site.get() })
    }

    /// Swaps in `next`; the old snapshot is dropped outside the lock. Only the site's writer
    /// calls it (`ioctl::SiteLock`): `_writer` is its lock, held. The caller allocates the
    /// `Arc` (fallibly) before it persists anything (issue #9, finding 12).
    pub(crate) fn publish(&self, mut next: Arc<Site>, _writer: &PassiveGuard<'_>) {
        {
            let _guard = SpinGuard::new(&self.lock);
            // SAFETY: `lock` is held (type invariant).
            core::mem::swap(unsafe { &mut *self.site.get() }, &mut next);
        }
        drop(next);
    }
}

/// Everything the callbacks share. Created once in `DriverEntry`, torn down in unload.
pub(crate) struct Global {
    pub(crate) site: SiteCell,
    /// Set at the start of unload: refuse new IOCTLs and connections.
    pub(crate) stopping: AtomicBool,
    /// The registry path of the service key, NUL-terminated UTF-16, for persistence.
    pub(crate) service_key: alloc::vec::Vec<u16>,
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
    // interrupt time in 100 ns units; callable at any IRQL (its binding is unverified:
    // docs/driver-facts.md, "Not yet verified on Windows").
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
