//! The primitives of the byte formats: the buffer header, a cursor over untrusted bytes, and
//! the writers of strings, counts and optional numbers. A leaf: requests (`wire`) and reply
//! tables (`wire::table`) are both written with it.

use alloc::vec::Vec;

use crate::{PROTOCOL_VERSION, ProtoError};

/// Longest string field.
pub const MAX_STR: usize = 65_536;
/// Longest byte-string value in a reply (a request head and body handed to an application).
pub const MAX_BYTES: usize = 64 << 20;
/// Bytes of a [`Header`].
pub const HEADER_LEN: usize = 8;

/// The header that starts every buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Length of the whole buffer, header included.
    pub size: u32,
}

impl Header {
    /// Reads a header from the start of `buf` without checking `size` against `buf`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`], [`ProtoError::ReservedNotZero`].
    pub fn peek(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut d = Dec { buf, pos: 0 };
        let version = d.u16()?;
        if d.u16()? != 0 {
            return Err(ProtoError::ReservedNotZero);
        }
        Ok(Self {
            version,
            size: d.u32()?,
        })
    }
}

/// A cursor over untrusted bytes.
pub(super) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(super) fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(super) fn str(&mut self) -> Result<&'a str, ProtoError> {
        let len = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if len > MAX_STR {
            return Err(ProtoError::TooLarge);
        }
        core::str::from_utf8(self.take(len)?).map_err(|_| ProtoError::NotUtf8)
    }

    /// `count:u32 str*count`, at most `max` strings.
    pub(super) fn strs(&mut self, max: usize) -> Result<Vec<&'a str>, ProtoError> {
        let count = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if count > max {
            return Err(ProtoError::TooLarge);
        }
        let mut v = Vec::new();
        v.try_reserve(count).map_err(|_| ProtoError::OutOfMemory)?;
        for _ in 0..count {
            v.push(self.str()?);
        }
        Ok(v)
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if len > MAX_BYTES {
            return Err(ProtoError::TooLarge);
        }
        self.take(len)
    }

    pub(super) fn opt_u64(&mut self) -> Result<Option<u64>, ProtoError> {
        Ok(Some(self.u64()?).filter(|v| *v != u64::MAX))
    }

    pub(super) fn end(&self) -> Result<(), ProtoError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes)
        }
    }
}

/// Opens a buffer: checks the header against its length and returns a cursor after it.
pub(super) fn open(buf: &[u8]) -> Result<Dec<'_>, ProtoError> {
    let h = Header::peek(buf)?;
    if h.version != PROTOCOL_VERSION {
        return Err(ProtoError::Version);
    }
    if usize::try_from(h.size).ok() != Some(buf.len()) {
        return Err(ProtoError::SizeMismatch);
    }
    Ok(Dec {
        buf,
        pos: HEADER_LEN,
    })
}

/// Appends little-endian fields; the header's size is patched by [`finish`].
pub(super) fn start(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&header(0));
    at
}

/// A message header: version, a reserved zero, and `size` (patched by [`finish`]).
pub(super) fn header(size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (version, rest) = h.split_at_mut(2);
    version.copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    if let Some(dst) = rest.get_mut(2..6) {
        dst.copy_from_slice(&size.to_le_bytes());
    }
    h
}

pub(super) fn finish(out: &mut [u8], at: usize) {
    let size = u32::try_from(out.len().saturating_sub(at)).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(at.saturating_add(4)..at.saturating_add(HEADER_LEN)) {
        slot.copy_from_slice(&size.to_le_bytes());
    }
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

pub(super) fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    out.extend_from_slice(&v.unwrap_or(u64::MAX).to_le_bytes());
}
