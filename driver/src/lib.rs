//! khttp.sys: the khttp engine in a KMDF driver (the rules it follows: docs/driver-facts.md).
//!
//! Thin glue: every decision (parsing, routing, cache, connection state, control validation, the
//! inline-completion trampoline) is in `khttp-engine` and `khttp-proto`, tested on Linux. This
//! crate only translates between them and KMDF/WSK:
//!
//! - `DriverEntry`: `WdfDriverCreate` (non-PnP, `EvtDriverUnload`), a control device
//!   `\Device\KHttp` / `\DosDevices\KHttp` for SYSTEM and Administrators only, a sequential
//!   default queue at PASSIVE_LEVEL, one periodic timer, `WskRegister`, saved state, listeners;
//! - [`ioctl`]: control requests → [`khttp_engine::ctl::dispatch`];
//! - [`apps`]: the application device `\Device\KHttpApp`: request queues (the inverted call);
//! - [`net`]: WSK listeners and connections → [`khttp_engine::Connection`];
//! - [`registry`]: persistence; [`irp`]: IRP/MDL/event primitives; [`global`]: shared state;
//! - [`random`]: the kernel's random numbers (CNG), for TLS (issue #25).
//!
//! CI compiles and links it on Linux against real bindings (driver/linux/build.sh) and runs it
//! under Wine with test stand-ins for WSK and KMDF (tests/wine); it has never been built with
//! the WDK on Windows, nor loaded by Windows. Everything it calls is documented API, restated in
//! docs/driver-facts.md, whose "Not yet verified on Windows" is the first thing to check.
//!
//! `allocator_api`: `Arc::try_new`, so that no allocation can panic (a bugcheck). The driver is
//! built with `RUSTC_BOOTSTRAP=1` anyway (build-std on Linux; Makefile.toml on Windows).

#![cfg_attr(not(test), no_std)]
#![feature(allocator_api)]

extern crate alloc;

#[cfg(not(test))]
extern crate wdk_panic;

mod abi;
mod apps;
mod device;
mod entry;
mod global;
mod ioctl;
mod irp;
mod net;
mod random;
mod registry;
mod token;
#[cfg(feature = "wsk-layout-check")]
mod wsk_check;

#[cfg(not(test))]
use wdk_alloc::WdkAllocator;

pub use entry::driver_entry;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: WdkAllocator = WdkAllocator;

/// `size_of::<T>()` as the `ULONG` WDF's `Size` fields want (`WDF_STRUCTURE_SIZE`, issue #242).
pub(crate) const fn size_of_u32<T>() -> u32 {
    const { assert!(size_of::<T>() <= u32::MAX as usize) };
    size_of::<T>() as u32
}

/// Widens ASCII to UTF-16 at compile time (Rust has no `L""`).
pub(crate) const fn wide<const N: usize>(s: &[u8; N]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
}
