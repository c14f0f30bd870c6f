//! The kernel's random numbers (issue #25): what khttp-crypto is to draw TLS secrets from once
//! the driver speaks TLS. CNG's generator, in kernel mode: an RNG algorithm handle opened once,
//! at the end of DriverEntry (PASSIVE_LEVEL), drawn from with `BCryptGenRandom`, closed at
//! unload. The facts (Microsoft Learn, restated in docs/driver-facts.md, "Random numbers"):
//!
//! - `NTSTATUS BCryptOpenAlgorithmProvider(BCRYPT_ALG_HANDLE *phAlgorithm, LPCWSTR pszAlgId,
//!   LPCWSTR pszImplementation, ULONG dwFlags)`: kernel callers run at PASSIVE_LEVEL and link
//!   `Cng.lib`; `BCRYPT_RNG_ALGORITHM` is `L"RNG"`. `BCRYPT_PROV_DISPATCH` (`0x00000001`)
//!   loads the provider into non-paged memory so that later calls on the handle may run at
//!   DISPATCH_LEVEL, where WSK completions run.
//! - `NTSTATUS BCryptGenRandom(BCRYPT_ALG_HANDLE hAlgorithm, PUCHAR pbBuffer, ULONG cbBuffer,
//!   ULONG dwFlags)`: at DISPATCH_LEVEL only with a handle opened with `BCRYPT_PROV_DISPATCH`
//!   and a non-paged buffer (`BCRYPT_USE_SYSTEM_PREFERRED_RNG` is PASSIVE_LEVEL only, so it is
//!   not used).
//! - `NTSTATUS BCryptCloseAlgorithmProvider(BCRYPT_ALG_HANDLE hAlgorithm, ULONG dwFlags)`.
//!
//! Wine's cng.sys forwards these to its bcrypt.dll, which refuses `BCRYPT_PROV_DISPATCH` with
//! `STATUS_NOT_IMPLEMENTED`; the handle is then opened without it (Wine has no IRQL to need it),
//! and the driver's log says so. That path is Wine's only.

#![allow(unsafe_code, reason = "CNG calls; each block has its SAFETY comment")]

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

use wdk::nt_success;
use wdk_sys::NTSTATUS;

/// `BCRYPT_PROV_DISPATCH` (bcrypt.h).
const BCRYPT_PROV_DISPATCH: u32 = 0x0000_0001;

/// `BCRYPT_RNG_ALGORITHM`, `L"RNG"`, NUL-terminated.
const RNG: [u16; 4] = crate::wide(b"RNG\0");

/// `STATUS_UNSUCCESSFUL`: no handle (never opened, or closed).
const NO_HANDLE: NTSTATUS = 0xC000_0001_u32.cast_signed();

#[link(name = "cng")]
unsafe extern "system" {
    fn BCryptOpenAlgorithmProvider(
        algorithm: *mut *mut c_void,
        alg_id: *const u16,
        implementation: *const u16,
        flags: u32,
    ) -> NTSTATUS;
    fn BCryptGenRandom(algorithm: *mut c_void, buffer: *mut u8, len: u32, flags: u32) -> NTSTATUS;
    fn BCryptCloseAlgorithmProvider(algorithm: *mut c_void, flags: u32) -> NTSTATUS;
}

/// The open RNG handle, or null.
static HANDLE: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

/// Opens the generator and draws from it once to check it. Returns whether the handle may be
/// used at DISPATCH_LEVEL, or the failing status.
///
/// # Safety
/// PASSIVE_LEVEL; once, before anything draws, and not concurrently with [`close`].
pub(crate) unsafe fn open() -> Result<bool, NTSTATUS> {
    let mut handle: *mut c_void = core::ptr::null_mut();
    let mut dispatch = true;
    // SAFETY: `handle` is a writable local; `RNG` is a NUL-terminated UTF-16 constant; a null
    // implementation asks for the default; PASSIVE_LEVEL (contract).
    let mut status = unsafe {
        BCryptOpenAlgorithmProvider(
            &raw mut handle,
            RNG.as_ptr(),
            core::ptr::null(),
            BCRYPT_PROV_DISPATCH,
        )
    };
    if !nt_success(status) {
        dispatch = false;
        // SAFETY: as above, without the flag (Wine's path: see the module documentation).
        status = unsafe {
            BCryptOpenAlgorithmProvider(&raw mut handle, RNG.as_ptr(), core::ptr::null(), 0)
        };
    }
    if !nt_success(status) {
        return Err(status);
    }
    HANDLE.store(handle, Ordering::Release);
    // A generator that fails, or gives the same bytes twice, is not used.
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    let checked = fill(&mut a).and_then(|()| fill(&mut b));
    if let Err(status) = checked {
        // SAFETY: PASSIVE_LEVEL, and nothing else draws yet (contract).
        unsafe { close() };
        return Err(status);
    }
    if a == b {
        // SAFETY: as above.
        unsafe { close() };
        return Err(NO_HANDLE);
    }
    Ok(dispatch)
}

/// Fills `buf` from the kernel's generator.
///
/// # Errors
/// `BCryptGenRandom`'s status, or `STATUS_UNSUCCESSFUL` when no handle is open.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), NTSTATUS> {
    let handle = HANDLE.load(Ordering::Acquire);
    if handle.is_null() {
        return Err(NO_HANDLE);
    }
    for chunk in buf.chunks_mut(1 << 20) {
        let len = u32::try_from(chunk.len()).unwrap_or(0);
        // SAFETY: `handle` is open (it is closed only at unload, after everything that draws
        // has stopped); `chunk` is writable for `len` bytes; flags 0 with an algorithm handle.
        let status = unsafe { BCryptGenRandom(handle, chunk.as_mut_ptr(), len, 0) };
        if !nt_success(status) {
            return Err(status);
        }
    }
    Ok(())
}

/// Closes the generator.
///
/// # Safety
/// PASSIVE_LEVEL; nothing draws from it any more.
pub(crate) unsafe fn close() {
    let handle = HANDLE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !handle.is_null() {
        // SAFETY: `handle` was opened by `open` and is closed once (it was swapped out above).
        let _ = unsafe { BCryptCloseAlgorithmProvider(handle, 0) };
    }
}
