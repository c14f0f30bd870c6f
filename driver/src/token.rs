//! Who opened the application device (issue #12): the user and groups of the opening
//! process's token, read once when the handle is opened, for the engine's URL ACL check
//! (`khttp_engine::acl`: the decision, and why the driver does not call `SeAccessCheck`).
//!
//! `EvtDeviceFileCreate` runs "synchronously, in the context of the thread that opens the
//! device" (Microsoft Learn, `EVT_WDF_DEVICE_FILE_CREATE`), so `PsGetCurrentProcessId` is the
//! opener. Its token is read through handles, with the documented kernel routines (Microsoft
//! Learn: `ZwOpenProcess`, `ZwOpenProcessTokenEx`, `ZwQueryInformationToken`); every handle is
//! a kernel handle (`OBJ_KERNEL_HANDLE`), closed before returning. The identity is the process's
//! primary token: a thread's impersonation does not change who attaches.
//!
//! Under Wine the create runs on winedevice's thread, and Wine answers `PsGetCurrentProcessId`
//! with the opener's id, so the same calls read the opener's token there too (its
//! `SeCaptureSubjectContext` and `SeQueryInformationToken` are stubs that end the process).

#![allow(
    unsafe_code,
    reason = "the kernel's process and token routines through the C ABI"
)]

use alloc::vec::Vec;
use core::ptr;

use khttp_engine::acl::{Identity, TokenInfo};
use wdk::nt_success;
use wdk_sys::ntddk::{
    PsGetCurrentProcessId, ZwClose, ZwOpenProcess, ZwOpenProcessTokenEx, ZwQueryInformationToken,
};
use wdk_sys::{
    CLIENT_ID, HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, STATUS_BUFFER_TOO_SMALL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_INFO_CLASS, STATUS_NOT_IMPLEMENTED,
    STATUS_SUCCESS, TOKEN_QUERY,
};

/// `PROCESS_QUERY_LIMITED_INFORMATION` (Microsoft Learn, "Process Security and Access Rights"):
/// enough to open the process's token for query.
const PROCESS_QUERY_LIMITED_INFORMATION: u32 = 0x1000;
/// `TokenIsAppContainer` (Microsoft Learn, `TOKEN_INFORMATION_CLASS`; a `ULONG`, nonzero for an
/// AppContainer token). mingw's headers, which the Linux build binds, lack it.
const TOKEN_IS_APP_CONTAINER: i32 = 29;
/// The most token information read for one class (a token holds at most 1024 groups).
const MAX_INFO_BYTES: u32 = 64 * 1024;

/// A kernel handle, closed when dropped.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a kernel handle this module opened and nobody else closes.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// The identity of the process that is opening a handle.
///
/// # Safety
/// PASSIVE_LEVEL, in `EvtDeviceFileCreate` (the opener's thread).
pub(crate) unsafe fn opener() -> Result<Identity, NTSTATUS> {
    // SAFETY: no preconditions.
    let pid = unsafe { PsGetCurrentProcessId() };
    // InitializeObjectAttributes with no name (a macro in C, ntdef.h).
    let mut attrs = OBJECT_ATTRIBUTES {
        Length: crate::size_of_u32::<OBJECT_ATTRIBUTES>(),
        RootDirectory: ptr::null_mut(),
        ObjectName: ptr::null_mut(),
        Attributes: OBJ_KERNEL_HANDLE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    };
    let mut client = CLIENT_ID {
        UniqueProcess: pid,
        UniqueThread: ptr::null_mut(),
    };
    let mut process: HANDLE = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL; every pointer is to a local that outlives the call.
    let status = unsafe {
        ZwOpenProcess(
            &raw mut process,
            PROCESS_QUERY_LIMITED_INFORMATION,
            &raw mut attrs,
            &raw mut client,
        )
    };
    if !nt_success(status) {
        return Err(status);
    }
    let process = Handle(process);
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL; `process` is open for query; `token` outlives the call.
    let status =
        unsafe { ZwOpenProcessTokenEx(process.0, TOKEN_QUERY, OBJ_KERNEL_HANDLE, &raw mut token) };
    if !nt_success(status) {
        return Err(status);
    }
    let token = Handle(token);
    let mut id = Identity::new();
    for which in [
        TokenInfo::User,
        TokenInfo::Groups,
        TokenInfo::RestrictedSids,
    ] {
        let (words, len) = match query(&token, which.class() as i32) {
            // Wine does not implement TokenRestrictedSids (its tokens have none); Windows does.
            Err(STATUS_NOT_IMPLEMENTED | STATUS_INVALID_INFO_CLASS)
                if which == TokenInfo::RestrictedSids =>
            {
                continue;
            }
            r => r?,
        };
        if len == 0 && which == TokenInfo::RestrictedSids {
            continue;
        }
        let bytes = as_bytes(&words, len)?;
        id.add_token_info(which, &bytes, words.as_ptr() as u64)
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    }
    let (words, len) = query(&token, TOKEN_IS_APP_CONTAINER)?;
    if as_bytes(&words, len)?
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
        != Some(0)
    {
        id.set_app_container();
    }
    Ok(id)
}

/// One class of token information, in an 8-byte-aligned buffer (its structures hold
/// pointers), and how many bytes of it the kernel filled.
fn query(token: &Handle, class: i32) -> Result<(Vec<u64>, usize), NTSTATUS> {
    let mut needed = 0u32;
    // SAFETY: PASSIVE_LEVEL; a zero-length query writes only `needed`.
    let status =
        unsafe { ZwQueryInformationToken(token.0, class, ptr::null_mut(), 0, &raw mut needed) };
    if status != STATUS_BUFFER_TOO_SMALL && !nt_success(status) {
        return Err(status);
    }
    if nt_success(status) && needed == 0 {
        // Nothing to return (an empty list): no buffer needed.
        return Ok((Vec::new(), 0));
    }
    if needed == 0 || needed > MAX_INFO_BYTES {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    let words = usize::try_from(needed.div_ceil(8)).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words)
        .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    buf.resize(words, 0);
    let mut filled = 0u32;
    // SAFETY: PASSIVE_LEVEL; `buf` holds `needed` writable bytes, aligned for the structures.
    let status = unsafe {
        ZwQueryInformationToken(
            token.0,
            class,
            buf.as_mut_ptr().cast(),
            needed,
            &raw mut filled,
        )
    };
    if status != STATUS_SUCCESS {
        return Err(if nt_success(status) {
            STATUS_INSUFFICIENT_RESOURCES
        } else {
            status
        });
    }
    let filled = usize::try_from(filled.min(needed)).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    Ok((buf, filled))
}

/// The first `len` bytes of `words`, copied (x64 and ARM64 Windows are little-endian).
fn as_bytes(words: &[u64], len: usize) -> Result<Vec<u8>, NTSTATUS> {
    let mut out = Vec::new();
    out.try_reserve_exact(words.len().saturating_mul(8))
        .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    out.truncate(len);
    Ok(out)
}
