//! Fallible allocation: every allocation the control path makes goes through here or through
//! `try_reserve`, so that running out of memory is an error the caller reports, never a panic
//! (in the kernel, a panic is a bugcheck).
//!
//! One gap is Rust's, not ours: stable Rust cannot allocate an `Arc` fallibly. With the
//! `try-arc` feature, [`arc`] uses the unstable `Arc::try_new` (`allocator_api`); the driver
//! build turns it on, as it already builds `core` and `alloc` with `RUSTC_BOOTSTRAP=1`, and so
//! does the allocation-failure test in CI. Without it (khttpd on stable), [`arc`] is `Arc::new`:
//! a failure there aborts, as std does for every other allocation in a user-mode process.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::OutOfMemory;

/// `Arc::new`, fallible where the toolchain allows (see the module documentation).
///
/// # Errors
/// [`OutOfMemory`].
#[cfg(feature = "try-arc")]
pub(crate) fn arc<T>(v: T) -> Result<Arc<T>, OutOfMemory> {
    Arc::try_new(v).map_err(|_| OutOfMemory)
}

/// `Arc::new`, fallible where the toolchain allows (see the module documentation).
///
/// # Errors
/// Never on stable Rust: a failure aborts.
#[cfg(not(feature = "try-arc"))]
#[allow(
    clippy::unnecessary_wraps,
    reason = "fallible with the try-arc feature"
)]
pub(crate) fn arc<T>(v: T) -> Result<Arc<T>, OutOfMemory> {
    Ok(Arc::new(v))
}

/// A copy of `src` in a new vector.
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn vec_from<T: Clone>(src: &[T]) -> Result<Vec<T>, OutOfMemory> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

/// A copy of `src` in a new box. The vector is allocated at its exact length, so turning it
/// into a box does not reallocate.
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn boxed<T: Clone>(src: &[T]) -> Result<Box<[T]>, OutOfMemory> {
    Ok(vec_from(src)?.into_boxed_slice())
}

/// A copy of `src` in a new boxed string (see [`boxed`]).
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn boxed_str(src: &str) -> Result<Box<str>, OutOfMemory> {
    Ok(string_from(src)?.into_boxed_str())
}

/// A copy of `src` in a new string of exactly its length.
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn string_from(src: &str) -> Result<String, OutOfMemory> {
    let mut s = String::new();
    s.try_reserve_exact(src.len())?;
    s.push_str(src);
    Ok(s)
}

/// `s.push_str(t)`, fallibly.
///
/// # Errors
/// [`OutOfMemory`]; `s` is unchanged.
pub(crate) fn push_str(s: &mut String, t: &str) -> Result<(), OutOfMemory> {
    s.try_reserve(t.len())?;
    s.push_str(t);
    Ok(())
}

/// `v.push(x)`, fallibly.
///
/// # Errors
/// [`OutOfMemory`]; `v` is unchanged.
pub(crate) fn push<T>(v: &mut Vec<T>, x: T) -> Result<(), OutOfMemory> {
    v.try_reserve(1)?;
    v.push(x);
    Ok(())
}

/// Appends all `parts` to `buf`, or nothing if memory cannot be had.
///
/// # Errors
/// [`OutOfMemory`] when the buffer cannot grow; `buf` is unchanged.
pub(crate) fn put(buf: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), OutOfMemory> {
    put_groups(buf, &[parts])
}

/// Appends every part of every group to `buf`, reserving once, or nothing if memory cannot be
/// had.
///
/// # Errors
/// [`OutOfMemory`] when the buffer cannot grow; `buf` is unchanged.
pub(crate) fn put_groups(buf: &mut Vec<u8>, groups: &[&[&[u8]]]) -> Result<(), OutOfMemory> {
    // Plain loops: this is on the hit path, where iterator adaptors cost instructions.
    let mut total = 0usize;
    for group in groups {
        for part in *group {
            total = total.checked_add(part.len()).ok_or(OutOfMemory)?;
        }
    }
    buf.try_reserve(total)?;
    for group in groups {
        for part in *group {
            buf.extend_from_slice(part);
        }
    }
    Ok(())
}

/// A `core::fmt::Write` sink into a fixed buffer, for formatting numbers and addresses without
/// allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl<const N: usize> core::fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
