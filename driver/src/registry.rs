//! Reservations, the IP listen list and limits persisted under the service key's `Parameters`
//! (created by the INF), as the engine's [`khttp_engine::persist`] text in one `REG_BINARY`
//! value, `State`. Writing one value is atomic, so a crash leaves the old text or the new.
//!
//! PASSIVE_LEVEL only (Zw*/Rtl registry routines).

#![allow(
    unsafe_code,
    reason = "the registry through ZwCreateKey/ZwSetValueKey and friends"
)]

use alloc::vec::Vec;
use core::ptr;

use khttp_engine::Site;
use khttp_engine::persist;
use wdk::nt_success;
use wdk_sys::ntddk::{RtlWriteRegistryValue, ZwClose, ZwOpenKey, ZwQueryValueKey};
use wdk_sys::{
    _KEY_VALUE_INFORMATION_CLASS, HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, NTSTATUS,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, REG_BINARY, RTL_REGISTRY_ABSOLUTE,
    STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, UNICODE_STRING,
};

/// `L"State"`, NUL-terminated.
const VALUE: [u16; 6] = crate::wide(b"State\0");
/// `L"\\Parameters"`.
const PARAMETERS: [u16; 11] = crate::wide(b"\\Parameters");

/// The absolute path of `...\Services\khttp\Parameters`, NUL-terminated, from the service key
/// path DriverEntry received.
pub(crate) fn parameters_path(service_key: &[u16]) -> Vec<u16> {
    let base = service_key.strip_suffix(&[0]).unwrap_or(service_key);
    let mut p = Vec::new();
    if p.try_reserve(base.len() + PARAMETERS.len() + 1).is_err() {
        return p;
    }
    p.extend_from_slice(base);
    p.extend_from_slice(&PARAMETERS);
    p.push(0);
    p
}

fn unicode(s: &[u16]) -> UNICODE_STRING {
    let chars = s.strip_suffix(&[0]).unwrap_or(s);
    let bytes = u16::try_from(chars.len() * 2).unwrap_or(0xFFFE);
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: chars.as_ptr().cast_mut(),
    }
}

/// The state value of the open `key` (empty when it has none).
///
/// # Safety
/// PASSIVE_LEVEL; `key` is a valid key handle opened for reading.
unsafe fn read_value(key: HANDLE) -> Result<Vec<u8>, NTSTATUS> {
    let mut value = unicode(&VALUE);
    let mut needed = 0u32;
    // First ask for the size.
    // SAFETY: a valid key handle; a zero-length buffer is allowed for the size query.
    let status = unsafe {
        ZwQueryValueKey(
            key,
            &raw mut value,
            _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation,
            ptr::null_mut(),
            0,
            &raw mut needed,
        )
    };
    if status == STATUS_OBJECT_NAME_NOT_FOUND {
        Ok(Vec::new())
    } else if status != STATUS_BUFFER_TOO_SMALL
        && status != STATUS_BUFFER_OVERFLOW
        && !nt_success(status)
    {
        Err(status)
    } else {
        let mut buf: Vec<u8> = Vec::new();
        if buf.try_reserve_exact(needed as usize).is_err() {
            Err(STATUS_INSUFFICIENT_RESOURCES)
        } else {
            buf.resize(needed as usize, 0);
            // SAFETY: a valid key handle and a writable buffer of `needed` bytes.
            let status = unsafe {
                ZwQueryValueKey(
                    key,
                    &raw mut value,
                    _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation,
                    buf.as_mut_ptr().cast(),
                    needed,
                    &raw mut needed,
                )
            };
            if nt_success(status) {
                let header = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
                // The header's DataLength, read without a cast of the byte buffer.
                let len_at = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, DataLength);
                let data_len = buf
                    .get(len_at..len_at.saturating_add(4))
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, |b| u32::from_le_bytes(b) as usize);
                let data = buf
                    .get(header..header.saturating_add(data_len))
                    .unwrap_or_default();
                let mut copy = Vec::new();
                copy.try_reserve_exact(data.len())
                    .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
                copy.extend_from_slice(data);
                Ok(copy)
            } else {
                Err(status)
            }
        }
    }
}

/// Reads the saved text; an absent key or value is empty text.
///
/// # Safety
/// PASSIVE_LEVEL.
pub(crate) unsafe fn load(parameters: &[u16]) -> Result<Vec<u8>, NTSTATUS> {
    let mut name = unicode(parameters);
    // InitializeObjectAttributes (a macro in C, ntdef.h).
    let mut attrs = OBJECT_ATTRIBUTES {
        Length: crate::size_of_u32::<OBJECT_ATTRIBUTES>(),
        RootDirectory: ptr::null_mut(),
        ObjectName: &raw mut name,
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: ptr::null_mut(),
        SecurityQualityOfService: ptr::null_mut(),
    };
    let mut key: HANDLE = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL; `attrs` and `name` outlive the call.
    let status = unsafe { ZwOpenKey(&raw mut key, KEY_READ, &raw mut attrs) };
    if status == STATUS_OBJECT_NAME_NOT_FOUND {
        return Ok(Vec::new());
    }
    if !nt_success(status) {
        return Err(status);
    }
    // SAFETY: a key handle we opened, closed below whatever the read gave (a `?` inside the
    // read once returned before the close, leaking the handle).
    let result = unsafe { read_value(key) };
    // Closing a handle we opened cannot fail in a way the caller could act on.
    // SAFETY: the handle came from ZwOpenKey.
    let _ = unsafe { ZwClose(key) };
    result
}

/// Applies the saved configuration to `site`; a malformed value is ignored with a debug message
/// rather than failing the driver load.
///
/// # Safety
/// PASSIVE_LEVEL.
pub(crate) unsafe fn load_into(parameters: &[u16], site: &mut Site) {
    // SAFETY: forwarded contract.
    match unsafe { load(parameters) } {
        Ok(bytes) => {
            let text = core::str::from_utf8(&bytes).unwrap_or("");
            if let Err(e) = persist::apply(text, site) {
                wdk::println!("khttp: saved state line {}: {}", e.line, e.message);
            }
        }
        Err(status) => wdk::println!("khttp: cannot read saved state: {status:#x}"),
    }
}

/// Saves `site`'s configuration.
///
/// # Safety
/// PASSIVE_LEVEL.
pub(crate) unsafe fn save(parameters: &[u16], site: &Site) -> NTSTATUS {
    // Memory ran out: what was saved before stays.
    let Some(text) = persist::render(site) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let Ok(len) = u32::try_from(text.len()) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: PASSIVE_LEVEL; both paths are NUL-terminated and `text` outlives the call.
    let status = unsafe {
        RtlWriteRegistryValue(
            RTL_REGISTRY_ABSOLUTE,
            parameters.as_ptr(),
            VALUE.as_ptr(),
            REG_BINARY,
            text.as_ptr().cast_mut().cast(),
            len,
        )
    };
    if nt_success(status) {
        STATUS_SUCCESS
    } else {
        status
    }
}
