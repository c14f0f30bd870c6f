//! SHADOW of wdk-sys 0.5.2 for a Linux type-check of the driver glue. Each item is declared with
//! the shape bindgen gives it (DRIVER-NOTES §1.6, the upstream samples); it is a guess of the real
//! crate, not a copy, and proves nothing about the real bindings. Items appear only as needed.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, clippy::all)]

use core::ffi::c_void;

pub type NTSTATUS = i32;
pub type ULONG = u32;
pub type USHORT = u16;
pub type WCHAR = u16;
pub type PVOID = *mut c_void;
pub type HANDLE = *mut c_void;
pub type SIZE_T = u64;
pub type POOL_FLAGS = u64;

macro_rules! status { ($($n:ident = $v:expr),* $(,)?) => { $(pub const $n: NTSTATUS = $v as u32 as i32;)* } }
status!(
    STATUS_SUCCESS = 0, STATUS_UNSUCCESSFUL = 0xC000_0001u32, STATUS_MORE_PROCESSING_REQUIRED = 0xC000_0016u32,
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009Au32, STATUS_INVALID_DEVICE_REQUEST = 0xC000_0010u32,
    STATUS_INVALID_PARAMETER = 0xC000_000Du32, STATUS_BUFFER_TOO_SMALL = 0xC000_0023u32,
    STATUS_BUFFER_OVERFLOW = 0x8000_0005u32, STATUS_DEVICE_NOT_READY = 0xC000_00A3u32,
    STATUS_REQUEST_NOT_ACCEPTED = 0xC000_00D0u32, STATUS_OBJECT_NAME_NOT_FOUND = 0xC000_0034u32,
);
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x40;
pub const SL_INVOKE_ON_CANCEL: u32 = 0x20;
pub const SL_INVOKE_ON_SUCCESS: u32 = 0x40;
pub const SL_INVOKE_ON_ERROR: u32 = 0x80;
pub const KEY_READ: u32 = 0x20019;
pub const OBJ_CASE_INSENSITIVE: u32 = 0x40;
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;
pub const REG_BINARY: u32 = 3;
pub const RTL_REGISTRY_ABSOLUTE: u32 = 0;

#[repr(C)] pub struct DEVICE_OBJECT { _p: [u8; 0] }
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;
#[repr(C)] #[derive(Default)] pub struct DRIVER_OBJECT { pub DriverUnload: Option<unsafe extern "C" fn(*mut DRIVER_OBJECT)> }
pub type PDRIVER_OBJECT = *mut DRIVER_OBJECT;
#[repr(C)] #[derive(Clone, Copy)] pub struct UNICODE_STRING { pub Length: USHORT, pub MaximumLength: USHORT, pub Buffer: *mut WCHAR }
pub type PCUNICODE_STRING = *const UNICODE_STRING;
#[repr(C)] #[derive(Clone, Copy)] pub union LARGE_INTEGER { pub QuadPart: i64, pub u: [u32; 2] }
impl Default for LARGE_INTEGER { fn default() -> Self { Self { QuadPart: 0 } } }
#[repr(C)] pub struct KEVENT { _p: [u64; 3] }
#[repr(C)] pub struct MDL { _p: [u8; 0] }
pub type PMDL = *mut MDL;
pub type PIO_COMPLETION_ROUTINE = Option<unsafe extern "C" fn(PDEVICE_OBJECT, PIRP, PVOID) -> NTSTATUS>;
#[repr(C)] pub struct IO_STACK_LOCATION { pub Control: u8, pub CompletionRoutine: PIO_COMPLETION_ROUTINE, pub Context: PVOID }
#[repr(C)] #[derive(Clone, Copy)] pub union IO_STATUS_BLOCK__bindgen_ty_1 { pub Status: NTSTATUS, pub Pointer: PVOID }
#[repr(C)] pub struct IO_STATUS_BLOCK { pub __bindgen_anon_1: IO_STATUS_BLOCK__bindgen_ty_1, pub Information: u64 }
#[repr(C)] #[derive(Clone, Copy)] pub struct CSL { pub CurrentStackLocation: *mut IO_STACK_LOCATION }
#[repr(C)] #[derive(Clone, Copy)] pub union OVL2 { pub __bindgen_anon_1: CSL }
#[repr(C)] pub struct OVERLAY { pub __bindgen_anon_2: OVL2 }
#[repr(C)] pub struct TAIL { pub Overlay: OVERLAY }
#[repr(C)] pub struct IRP { pub IoStatus: IO_STATUS_BLOCK, pub Tail: TAIL }
pub type PIRP = *mut IRP;
#[repr(C)] pub struct OBJECT_ATTRIBUTES {
    pub Length: ULONG, pub RootDirectory: HANDLE, pub ObjectName: *mut UNICODE_STRING, pub Attributes: ULONG,
    pub SecurityDescriptor: PVOID, pub SecurityQualityOfService: PVOID,
}
#[repr(C)] pub struct KEY_VALUE_PARTIAL_INFORMATION { pub TitleIndex: ULONG, pub Type: ULONG, pub DataLength: ULONG, pub Data: [u8; 1] }

pub mod _EVENT_TYPE { pub type Type = i32; pub const SynchronizationEvent: Type = 1; }
pub mod _KWAIT_REASON { pub type Type = i32; pub const Executive: Type = 0; }
pub mod _MODE { pub type Type = i32; pub const KernelMode: Type = 0; }
pub mod _KEY_VALUE_INFORMATION_CLASS { pub type Type = i32; pub const KeyValuePartialInformation: Type = 2; }
pub mod _WDF_EXECUTION_LEVEL { pub type Type = i32; pub const WdfExecutionLevelInheritFromParent: Type = 1; pub const WdfExecutionLevelPassive: Type = 2; }
pub mod _WDF_SYNCHRONIZATION_SCOPE { pub type Type = i32; pub const WdfSynchronizationScopeInheritFromParent: Type = 1; }
pub mod _WDF_IO_QUEUE_DISPATCH_TYPE { pub type Type = i32; pub const WdfIoQueueDispatchSequential: Type = 1; }
pub mod _WDF_TRI_STATE { pub type Type = i32; pub const WdfUseDefault: Type = 2; }
pub mod _WDF_DEVICE_IO_TYPE { pub type Type = i32; pub const WdfDeviceIoBuffered: Type = 2; }
pub mod _WDF_DRIVER_INIT_FLAGS { pub type Type = i32; pub const WdfDriverInitNonPnpDriver: Type = 1; }

pub type WDFOBJECT = *mut c_void;
pub type WDFDRIVER = *mut c_void;
pub type WDFDEVICE = *mut c_void;
pub type WDFQUEUE = *mut c_void;
pub type WDFREQUEST = *mut c_void;
pub type WDFTIMER = *mut c_void;
pub type WDFSPINLOCK = *mut c_void;
#[repr(C)] pub struct WDFDEVICE_INIT { _p: [u8; 0] }
pub type PWDFDEVICE_INIT = *mut WDFDEVICE_INIT;
pub const WDF_NO_HANDLE: *mut c_void = core::ptr::null_mut();
pub const WDF_NO_OBJECT_ATTRIBUTES: *mut WDF_OBJECT_ATTRIBUTES = core::ptr::null_mut();

#[repr(C)] #[derive(Default)] pub struct WDF_DRIVER_CONFIG {
    pub Size: ULONG,
    pub EvtDriverDeviceAdd: Option<unsafe extern "C" fn(WDFDRIVER, PWDFDEVICE_INIT) -> NTSTATUS>,
    pub EvtDriverUnload: Option<unsafe extern "C" fn(WDFDRIVER)>,
    pub DriverInitFlags: ULONG,
    pub DriverPoolTag: ULONG,
}
#[repr(C)] pub struct WDF_OBJECT_ATTRIBUTES {
    pub Size: ULONG, pub EvtCleanupCallback: PVOID, pub EvtDestroyCallback: PVOID,
    pub ExecutionLevel: _WDF_EXECUTION_LEVEL::Type, pub SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::Type,
    pub ParentObject: WDFOBJECT, pub ContextSizeOverride: usize, pub ContextTypeInfo: PVOID,
}
impl Default for WDF_OBJECT_ATTRIBUTES { fn default() -> Self { unsafe { core::mem::zeroed() } } }
#[repr(C)] pub struct WDF_IO_QUEUE_CONFIG {
    pub Size: ULONG, pub DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::Type, pub PowerManaged: _WDF_TRI_STATE::Type,
    pub AllowZeroLengthRequests: u8, pub DefaultQueue: u8,
    pub EvtIoDeviceControl: Option<unsafe extern "C" fn(WDFQUEUE, WDFREQUEST, usize, usize, ULONG)>,
}
impl Default for WDF_IO_QUEUE_CONFIG { fn default() -> Self { unsafe { core::mem::zeroed() } } }
#[repr(C)] pub struct WDF_TIMER_CONFIG {
    pub Size: ULONG, pub EvtTimerFunc: Option<unsafe extern "C" fn(WDFTIMER)>, pub Period: ULONG,
    pub AutomaticSerialization: u8, pub TolerableDelay: ULONG, pub UseHighResolutionTimer: u8,
}
impl Default for WDF_TIMER_CONFIG { fn default() -> Self { unsafe { core::mem::zeroed() } } }

/// The shadow of the generated WDF function table: one Rust fn per WDF function, taking the
/// documented parameters (the real macro inserts WdfDriverGlobals itself).
pub mod wdf {
    use super::*;
    pub unsafe fn WdfDriverCreate(_: PDRIVER_OBJECT, _: PCUNICODE_STRING, _: *mut WDF_OBJECT_ATTRIBUTES, _: *mut WDF_DRIVER_CONFIG, _: *mut WDFDRIVER) -> NTSTATUS { 0 }
    pub unsafe fn WdfControlDeviceInitAllocate(_: WDFDRIVER, _: *const UNICODE_STRING) -> PWDFDEVICE_INIT { core::ptr::null_mut() }
    pub unsafe fn WdfDeviceInitSetExclusive(_: PWDFDEVICE_INIT, _: u8) {}
    pub unsafe fn WdfDeviceInitSetIoType(_: PWDFDEVICE_INIT, _: _WDF_DEVICE_IO_TYPE::Type) {}
    pub unsafe fn WdfDeviceInitAssignName(_: PWDFDEVICE_INIT, _: *const UNICODE_STRING) -> NTSTATUS { 0 }
    pub unsafe fn WdfDeviceInitFree(_: PWDFDEVICE_INIT) {}
    pub unsafe fn WdfDeviceCreate(_: *mut PWDFDEVICE_INIT, _: *mut WDF_OBJECT_ATTRIBUTES, _: *mut WDFDEVICE) -> NTSTATUS { 0 }
    pub unsafe fn WdfDeviceCreateSymbolicLink(_: WDFDEVICE, _: *const UNICODE_STRING) -> NTSTATUS { 0 }
    pub unsafe fn WdfIoQueueCreate(_: WDFDEVICE, _: *mut WDF_IO_QUEUE_CONFIG, _: *mut WDF_OBJECT_ATTRIBUTES, _: *mut WDFQUEUE) -> NTSTATUS { 0 }
    pub unsafe fn WdfControlFinishInitializing(_: WDFDEVICE) {}
    pub unsafe fn WdfTimerCreate(_: *mut WDF_TIMER_CONFIG, _: *mut WDF_OBJECT_ATTRIBUTES, _: *mut WDFTIMER) -> NTSTATUS { 0 }
    pub unsafe fn WdfTimerStart(_: WDFTIMER, _: i64) -> u8 { 0 }
    pub unsafe fn WdfTimerStop(_: WDFTIMER, _: u8) -> u8 { 0 }
    pub unsafe fn WdfRequestCompleteWithInformation(_: WDFREQUEST, _: NTSTATUS, _: u64) {}
    pub unsafe fn WdfRequestRetrieveInputBuffer(_: WDFREQUEST, _: usize, _: *mut PVOID, _: *mut usize) -> NTSTATUS { 0 }
    pub unsafe fn WdfRequestRetrieveOutputBuffer(_: WDFREQUEST, _: usize, _: *mut PVOID, _: *mut usize) -> NTSTATUS { 0 }
}

#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($name:ident $(, $arg:expr)* $(,)?) => { $crate::wdf::$name($($arg),*) };
}

pub mod ntddk {
    use super::*;
    pub unsafe fn IoAllocateIrp(_: i8, _: u8) -> PIRP { core::ptr::null_mut() }
    pub unsafe fn IoFreeIrp(_: PIRP) {}
    pub unsafe fn IoReuseIrp(_: PIRP, _: NTSTATUS) {}
    pub unsafe fn IoAllocateMdl(_: PVOID, _: ULONG, _: u8, _: u8, _: PIRP) -> PMDL { core::ptr::null_mut() }
    pub unsafe fn IoFreeMdl(_: PMDL) {}
    pub unsafe fn MmBuildMdlForNonPagedPool(_: PMDL) {}
    pub unsafe fn ExAllocatePool2(_: POOL_FLAGS, _: SIZE_T, _: ULONG) -> PVOID { core::ptr::null_mut() }
    pub unsafe fn ExFreePool(_: PVOID) {}
    pub unsafe fn KeInitializeEvent(_: *mut KEVENT, _: _EVENT_TYPE::Type, _: u8) {}
    pub unsafe fn KeSetEvent(_: *mut KEVENT, _: i32, _: u8) -> i32 { 0 }
    pub unsafe fn KeWaitForSingleObject(_: PVOID, _: _KWAIT_REASON::Type, _: i8, _: u8, _: *mut LARGE_INTEGER) -> NTSTATUS { 0 }
    pub unsafe fn KeDelayExecutionThread(_: i8, _: u8, _: *mut LARGE_INTEGER) -> NTSTATUS { 0 }
    pub unsafe fn KeQueryInterruptTimePrecise(_: *mut u64) -> u64 { 0 }
    pub unsafe fn KeQuerySystemTimePrecise(_: *mut LARGE_INTEGER) {}
    pub unsafe fn ZwOpenKey(_: *mut HANDLE, _: u32, _: *mut OBJECT_ATTRIBUTES) -> NTSTATUS { 0 }
    pub unsafe fn ZwQueryValueKey(_: HANDLE, _: *mut UNICODE_STRING, _: _KEY_VALUE_INFORMATION_CLASS::Type, _: PVOID, _: ULONG, _: *mut ULONG) -> NTSTATUS { 0 }
    pub unsafe fn ZwClose(_: HANDLE) -> NTSTATUS { 0 }
    pub unsafe fn RtlWriteRegistryValue(_: ULONG, _: *const u16, _: *const u16, _: ULONG, _: PVOID, _: ULONG) -> NTSTATUS { 0 }
}
