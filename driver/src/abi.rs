//! Sizes of the kernel and KMDF structures the driver reads or writes, checked at compile time,
//! so that a header that lays one out differently fails the build instead of corrupting memory.
//!
//! The values are the x64 sizes of the WDK's own headers (wdm.h, ntddk.h, wdf*.h). The Linux
//! build binds mingw-w64's DDK headers and khttp's `driver/linux/include/wdf.h` instead; mingw
//! is known to drift (its `DEVICE_OBJECT` is 328 bytes against the WDK's 336, a missing
//! `DECLSPEC_ALIGN(16)`), which is why every structure used here is listed. The driver only
//! passes `DEVICE_OBJECT` pointers through, so it is not.
//! KMDF sizes: driver/linux/WDF-FACTS.md §3.

use wdk_sys::{
    DRIVER_OBJECT, IO_STACK_LOCATION, IRP, KEVENT, KEY_VALUE_PARTIAL_INFORMATION, LARGE_INTEGER,
    MDL, OBJECT_ATTRIBUTES, UNICODE_STRING, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG,
    WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG,
};

const _: () = assert!(size_of::<IRP>() == 208);
const _: () = assert!(size_of::<IO_STACK_LOCATION>() == 72);
const _: () = assert!(size_of::<MDL>() == 48);
const _: () = assert!(size_of::<KEVENT>() == 24);
const _: () = assert!(size_of::<DRIVER_OBJECT>() == 336);
const _: () = assert!(size_of::<UNICODE_STRING>() == 16);
const _: () = assert!(size_of::<LARGE_INTEGER>() == 8);
const _: () = assert!(size_of::<OBJECT_ATTRIBUTES>() == 48);
const _: () = assert!(size_of::<KEY_VALUE_PARTIAL_INFORMATION>() == 16);
const _: () = assert!(size_of::<WDF_DRIVER_CONFIG>() == 32);
const _: () = assert!(size_of::<WDF_OBJECT_ATTRIBUTES>() == 56);
const _: () = assert!(size_of::<WDF_IO_QUEUE_CONFIG>() == 96);
const _: () = assert!(size_of::<WDF_TIMER_CONFIG>() == 40);
