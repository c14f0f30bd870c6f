//! `DriverEntry` and `EvtDriverUnload`: the control device, its queue, the timer, and the
//! order in which they start and stop (docs/driver-facts.md, "Control device", "Unload order").

#![allow(
    unsafe_code,
    reason = "WDF and WDM calls through their C ABI; each block has its SAFETY comment"
)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use khttp_engine::Site;
use wdk::nt_success;
use wdk_sys::{
    _WDF_DRIVER_INIT_FLAGS, _WDF_IO_QUEUE_DISPATCH_TYPE, DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING,
    PDRIVER_OBJECT, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, WDF_DRIVER_CONFIG,
    WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG, WDFDEVICE, WDFDRIVER, WDFTIMER,
    call_unsafe_wdf_function_binding,
};

use crate::global::{Global, SiteCell, install, object_attributes};

use crate::device::{DeviceSpec, create_control_device};
use crate::{apps, global, ioctl, irp, net, random, registry, size_of_u32, wide};

static DEVICE_NAME: [u16; 13] = wide(b"\\Device\\KHttp");
static LINK_NAME: [u16; 17] = wide(b"\\DosDevices\\KHttp");
/// `SDDL_DEVOBJ_SYS_ALL_ADM_ALL`: SYSTEM and Administrators only ("SDDL for Device Objects").
static SDDL: [u16; 27] = wide(b"D:P(A;;GA;;;SY)(A;;GA;;;BA)");

/// The periodic deadline sweep (DISPATCH_LEVEL): one timer for all connections; every other
/// tick, the expiry check (a scan of the cache, as khttpd's janitor every 2 s).
extern "C" fn on_timer(_timer: WDFTIMER) {
    static TICK: AtomicUsize = AtomicUsize::new(0);
    if cfg!(feature = "fault-wait-at-dispatch") {
        // The harness's injected fault: a wait in the timer's DPC (illegal at DISPATCH_LEVEL).
        irp::sleep_ms(1);
    }
    net::sweep(net::Sweep::Deadlines);
    if TICK.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
        ioctl::expire_tick();
    }
}

/// The control device `\Device\KHttp`: SYSTEM and Administrators, the control IOCTLs.
static CONTROL: DeviceSpec = DeviceSpec {
    name: &DEVICE_NAME,
    link: &LINK_NAME,
    sddl: &SDDL,
    file: None,
    on_ioctl: Some(ioctl::on_device_control),
    // Administration, one call at a time: each is one engine write under the writer lock.
    dispatch: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential,
};

/// Starts the one-second deadline timer (AutomaticSerialization off: docs/driver-facts.md,
/// "Locks, timers and work items").
///
/// # Safety
/// PASSIVE_LEVEL; `device` is live.
unsafe fn start_timer(device: WDFDEVICE) -> Result<WDFTIMER, NTSTATUS> {
    let mut config = WDF_TIMER_CONFIG {
        Size: size_of_u32::<WDF_TIMER_CONFIG>(),
        EvtTimerFunc: Some(on_timer),
        Period: 1_000,
        AutomaticSerialization: 0,
        TolerableDelay: 0,
        ..WDF_TIMER_CONFIG::default()
    };
    let mut attrs = object_attributes();
    attrs.ParentObject = device.cast();
    let mut timer: WDFTIMER = WDF_NO_HANDLE.cast();
    let status;
    // SAFETY: the config and attributes outlive the call; the parent is our device.
    unsafe {
        status = call_unsafe_wdf_function_binding!(
            WdfTimerCreate,
            &raw mut config,
            &raw mut attrs,
            &raw mut timer
        );
    }
    if !nt_success(status) {
        return Err(status);
    }
    // SAFETY: a live timer; a relative due time of one second (negative, 100 ns units).
    unsafe {
        let _ = call_unsafe_wdf_function_binding!(WdfTimerStart, timer, -10_000_000i64);
    }
    Ok(timer)
}

/// The timer, for unload.
static TIMER: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(core::ptr::null_mut());

/// `DriverEntry`.
///
/// # Safety
/// Called once by the I/O manager at PASSIVE_LEVEL with valid arguments.
#[cfg_attr(not(test), unsafe(export_name = "DriverEntry"))]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: size_of_u32::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: None,
        EvtDriverUnload: Some(on_unload),
        DriverInitFlags: _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver as u32,
        ..WDF_DRIVER_CONFIG::default()
    };
    irp::set_driver_object((&raw mut *driver).cast());
    let mut wdf_driver: WDFDRIVER = WDF_NO_HANDLE.cast();
    let status;
    // SAFETY: the arguments come from the I/O manager; the config outlives the call.
    unsafe {
        status = call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            &raw mut wdf_driver
        );
    }
    if !nt_success(status) {
        return status;
    }
    // SAFETY: `registry_path` is the I/O manager's, valid for the duration of DriverEntry.
    let Some(service_key) = (unsafe { service_key(registry_path) }) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };

    // SAFETY: PASSIVE_LEVEL in DriverEntry.
    let device = match unsafe { create_control_device(wdf_driver, &CONTROL) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    // The WDM device KMDF created for it, on our driver object: what IoSetCompletionRoutineEx
    // references while a completion routine runs (irp::prepare).
    irp::set_device_object(driver.DeviceObject.cast());
    // The application device (request queues); WDF deletes it with the driver on failure.
    // SAFETY: PASSIVE_LEVEL in DriverEntry, before any request can reach it.
    let app_device = match unsafe { apps::create(wdf_driver) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    // SAFETY: PASSIVE_LEVEL, once, before the device takes requests and the timer runs.
    let status = unsafe { ioctl::init() };
    if !nt_success(status) {
        return status;
    }
    let mut site = Site::new();
    // SAFETY: PASSIVE_LEVEL.
    unsafe { registry::load_into(&registry::parameters_path(&service_key), &mut site) };
    // From `ioctl::init` on, a failure frees its work item (issue #22, defect 12: these two
    // returns leaked it).
    let site_cell = match SiteCell::new(site.clone(), device) {
        Ok(cell) => cell,
        Err(s) => {
            // SAFETY: nothing queued the purge item (no timer yet); PASSIVE_LEVEL.
            unsafe { ioctl::shutdown() };
            return s;
        }
    };
    // SAFETY: PASSIVE_LEVEL in DriverEntry, before WSK is registered; once.
    let status = unsafe { net::install_table(device) };
    if !nt_success(status) {
        // SAFETY: as above.
        unsafe { ioctl::shutdown() };
        return status;
    }
    // SAFETY: no callback can read the global state before this returns: the queue and timer
    // exist but the device is not finished initialising, and WSK is not registered yet.
    unsafe {
        install(Global {
            site: site_cell,
            stopping: AtomicBool::new(false),
            service_key,
        });
    }
    // From here on a failure must undo what DriverEntry did: when DriverEntry fails, unload
    // is not called, and netio would keep pointers into the unloaded image (issue #9,
    // finding 6). WDF deletes the device, queue and spin lock with the driver object.
    // SAFETY: PASSIVE_LEVEL, once.
    let status = unsafe { net::register() };
    if !nt_success(status) {
        // SAFETY: nothing queued the purge item (no timer yet); PASSIVE_LEVEL.
        unsafe { ioctl::shutdown() };
        // SAFETY: nothing reads the global state: the device is not finished initialising,
        // there is no timer, and WSK is not registered.
        unsafe { release_state() };
        return status;
    }
    // SAFETY: PASSIVE_LEVEL in DriverEntry; both devices are live and not finished.
    unsafe { start(device, app_device, &site) }
}

/// The service key path, NUL-terminated, for persistence; `None` when out of memory.
///
/// # Safety
/// `registry_path` is a valid `UNICODE_STRING` (DriverEntry's).
unsafe fn service_key(registry_path: PCUNICODE_STRING) -> Option<Vec<u16>> {
    let mut service_key: Vec<u16> = Vec::new();
    // SAFETY: a valid UNICODE_STRING (contract).
    let key = unsafe { &*registry_path };
    let chars = usize::from(key.Length / 2);
    service_key.try_reserve_exact(chars + 1).ok()?;
    // SAFETY: `Buffer` holds `Length` bytes of UTF-16.
    service_key.extend_from_slice(unsafe { core::slice::from_raw_parts(key.Buffer, chars) });
    service_key.push(0);
    Some(service_key)
}

/// DriverEntry's last steps, once the state is installed and WSK registered: the timer, the
/// listeners, and both devices finished (docs/driver-facts.md, "Control device", step 7).
///
/// # Safety
/// PASSIVE_LEVEL in DriverEntry; `device` and `app_device` are live and not finished
/// initialising.
unsafe fn start(device: WDFDEVICE, app_device: WDFDEVICE, site: &Site) -> NTSTATUS {
    // SAFETY: PASSIVE_LEVEL; the device is live.
    match unsafe { start_timer(device) } {
        Ok(t) => TIMER.store(t.cast(), Ordering::Release),
        Err(s) => {
            // SAFETY: PASSIVE_LEVEL; no listener or connection exists yet, so this only
            // deregisters from WSK.
            unsafe { net::shutdown() };
            // SAFETY: no timer ran, so the purge item is not queued; PASSIVE_LEVEL.
            unsafe { ioctl::shutdown() };
            // SAFETY: as above, and WSK is deregistered.
            unsafe { release_state() };
            return s;
        }
    }
    // SAFETY: PASSIVE_LEVEL; a failure here leaves the driver running without listeners, which
    // khttpctl can fix (urlacl delete/add).
    let listen = unsafe { net::reconcile(site) };
    if !nt_success(listen) {
        wdk::println!("khttp: could not open every listener: {listen:#x}");
    }
    // The generator TLS is to draw from (issue #25). Without it the driver still serves plain
    // HTTP, which is all it serves yet.
    // SAFETY: PASSIVE_LEVEL in DriverEntry, once; nothing draws yet; unload closes it.
    match unsafe { random::open() } {
        Ok(true) => {
            wdk::println!("khttp: kernel random numbers ready (CNG, usable at DISPATCH_LEVEL)")
        }
        Ok(false) => wdk::println!(
            "khttp: kernel random numbers ready (CNG, opened without BCRYPT_PROV_DISPATCH: PASSIVE_LEVEL only)"
        ),
        Err(status) => {
            wdk::println!("khttp: no kernel random numbers ({status:#x}): TLS would be refused")
        }
    }
    // SAFETY: a live control device; without this all I/O is rejected (docs/driver-facts.md,
    // "Control device", step 7).
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, device) };
    // SAFETY: as above, the application device.
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, app_device) };
    STATUS_SUCCESS
}

/// Frees the global state and the connection table.
///
/// # Safety
/// Every callback that reads them has stopped: the queue rejects requests, no timer runs, and
/// WSK is deregistered (or was never registered).
unsafe fn release_state() {
    // SAFETY: no reader remains (contract).
    unsafe { global::uninstall() };
    // SAFETY: as above.
    unsafe { net::uninstall_table() };
    // SAFETY: as above: no application request, connection or cleanup callback can run.
    unsafe { apps::uninstall() };
}

/// `EvtDriverUnload` (PASSIVE_LEVEL): the teardown of docs/driver-facts.md, "Unload order".
extern "C" fn on_unload(_driver: WDFDRIVER) {
    if let Some(g) = global::global() {
        // 1. Refuse new IOCTLs and connections.
        g.stopping.store(true, Ordering::Release);
    }
    // 4 (early). Stop the sweep timer, waiting for a running callback.
    let timer = TIMER.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !timer.is_null() {
        // SAFETY: PASSIVE_LEVEL, not from the timer callback; the timer is live (child of the
        // device, which WDF deletes after this returns).
        unsafe {
            let _ = call_unsafe_wdf_function_binding!(WdfTimerStop, timer.cast(), 1);
        }
    }
    // Applications: their waiting receives are cancelled and the requests they hold are
    // answered 503, so that every connection can close.
    // SAFETY: PASSIVE_LEVEL in unload, after `stopping` was set.
    unsafe { apps::shutdown() };
    // 2, 3, 5. Close listeners and connections, wait for them, release and deregister WSK.
    // SAFETY: PASSIVE_LEVEL in unload, after `stopping` was set.
    unsafe { net::shutdown() };
    // SAFETY: as above; the timer is stopped, so no new purge is queued.
    unsafe { ioctl::shutdown() };
    // 6. Free the site (cache bodies, reservations) and the connection table.
    // SAFETY: every callback that reads the global state has stopped: the queue rejects new
    // requests, the timer is stopped, WSK is deregistered.
    unsafe { release_state() };
    // SAFETY: PASSIVE_LEVEL in unload; nothing draws any more (no connection remains).
    unsafe { random::close() };
    // 7. WDF deletes the device, queue, timer and spin locks.
}

#[cfg(test)]
mod tests {
    /// The constant UTF-16 names are what the notes give.
    #[test]
    fn names() {
        let s: alloc::string::String = char::decode_utf16(super::DEVICE_NAME)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(s, r"\Device\KHttp");
        let s: alloc::string::String = char::decode_utf16(super::SDDL)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(s, "D:P(A;;GA;;;SY)(A;;GA;;;BA)");
    }
}
