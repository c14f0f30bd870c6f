//! Control devices: the one recipe both of the driver's devices are built with
//! (docs/driver-facts.md, "Control device", steps 2–6): `\Device\KHttp` for administrators
//! (`entry.rs`) and `\Device\KHttpApp` for applications (`apps.rs`).

#![allow(
    unsafe_code,
    reason = "WDF device and queue creation through the C ABI; each block has its SAFETY comment"
)]

use wdk::nt_success;
use wdk_sys::{
    _WDF_DEVICE_IO_TYPE, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE,
    NTSTATUS, PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL, STATUS_INSUFFICIENT_RESOURCES, UNICODE_STRING,
    WDF_FILEOBJECT_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE,
    WDFDRIVER, WDFQUEUE, call_unsafe_wdf_function_binding,
};

use crate::global::object_attributes;
use crate::size_of_u32;

/// A `UNICODE_STRING` over a static UTF-16 name (no terminating NUL).
pub(crate) fn unicode(s: &'static [u16]) -> UNICODE_STRING {
    let bytes = (s.len() * 2) as u16;
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: s.as_ptr().cast_mut(),
    }
}

/// A control device to build: its names, who may open it, and what serves it.
pub(crate) struct DeviceSpec {
    /// `\Device\...`.
    pub(crate) name: &'static [u16],
    /// `\DosDevices\...`.
    pub(crate) link: &'static [u16],
    /// Who may open it (an SDDL string).
    pub(crate) sddl: &'static [u16],
    /// File object callbacks, for a device that keeps state per handle.
    pub(crate) file: Option<WDF_FILEOBJECT_CONFIG>,
    /// Its default queue's `EvtIoDeviceControl` (at PASSIVE_LEVEL).
    pub(crate) on_ioctl: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    /// How its default queue presents requests: one at a time (sequential: KMDF presents the
    /// next only once the driver completed, forwarded or requeued the one before) or as they
    /// come (parallel).
    pub(crate) dispatch: _WDF_IO_QUEUE_DISPATCH_TYPE::Type,
}

/// Builds a control device and its default queue (docs/driver-facts.md, "Control device",
/// steps 2–6); the caller finishes its initialisation (step 7) once everything it serves exists.
///
/// # Safety
/// PASSIVE_LEVEL, in DriverEntry.
pub(crate) unsafe fn create_control_device(
    driver: WDFDRIVER,
    spec: &DeviceSpec,
) -> Result<WDFDEVICE, NTSTATUS> {
    let sddl = unicode(spec.sddl);
    let mut init;
    // SAFETY: a valid driver handle; the SDDL string outlives the call.
    unsafe {
        init = call_unsafe_wdf_function_binding!(WdfControlDeviceInitAllocate, driver, &sddl);
    }
    if init.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    let name = unicode(spec.name);
    // SAFETY: `init` is a live device-init from WdfControlDeviceInitAllocate.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetExclusive, init, 0);
    }
    if let Some(mut file) = spec.file {
        // SAFETY: as above; the config is read during the call (no attributes: no context).
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceInitSetFileObjectConfig,
                init,
                &raw mut file,
                WDF_NO_OBJECT_ATTRIBUTES
            );
        }
    }
    // SAFETY: as above.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetIoType,
            init,
            _WDF_DEVICE_IO_TYPE::WdfDeviceIoBuffered
        );
    }
    let status;
    // SAFETY: as above; the name outlives the call.
    unsafe {
        status = call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, init, &name);
    }
    if !nt_success(status) {
        // SAFETY: the init was not consumed by WdfDeviceCreate, so we free it.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    let mut device: WDFDEVICE = WDF_NO_HANDLE.cast();
    let mut attrs = object_attributes();
    let status;
    // SAFETY: `init` is live; on failure WDF leaves it to us (freed below).
    unsafe {
        status = call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut init,
            &raw mut attrs,
            &raw mut device
        );
    }
    if !nt_success(status) {
        // SAFETY: WdfDeviceCreate failed, so the driver must free the init (WdfDeviceInitFree).
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    // SAFETY: a live device we just created; PASSIVE_LEVEL (contract).
    unsafe { link_and_queue(device, spec) }?;
    Ok(device)
}

/// The device's symbolic link and its default queue (docs/driver-facts.md, "Control device",
/// steps 5 and 6).
///
/// # Safety
/// PASSIVE_LEVEL; `device` is a live control device not yet finished initialising.
unsafe fn link_and_queue(device: WDFDEVICE, spec: &DeviceSpec) -> Result<(), NTSTATUS> {
    let link = unicode(spec.link);
    let status;
    // SAFETY: a live device; PASSIVE_LEVEL.
    unsafe {
        status = call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &link);
    }
    if !nt_success(status) {
        return Err(status);
    }
    // WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE(dispatch); the queue runs at PASSIVE_LEVEL.
    let mut queue_config = WDF_IO_QUEUE_CONFIG {
        Size: size_of_u32::<WDF_IO_QUEUE_CONFIG>(),
        PowerManaged: _WDF_TRI_STATE::WdfUseDefault,
        DefaultQueue: 1,
        DispatchType: spec.dispatch,
        EvtIoDeviceControl: spec.on_ioctl,
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    let mut queue_attrs = object_attributes();
    queue_attrs.ExecutionLevel = _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive;
    let mut queue: WDFQUEUE = WDF_NO_HANDLE.cast();
    let status;
    // SAFETY: a live device; the configs outlive the call.
    unsafe {
        status = call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut queue_config,
            &raw mut queue_attrs,
            &raw mut queue
        );
    }
    if !nt_success(status) {
        return Err(status);
    }
    Ok(())
}
