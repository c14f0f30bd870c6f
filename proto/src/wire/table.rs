//! Reply tables: rows of values, written by [`TableWriter`] and read by [`decode_reply`].

use alloc::vec::Vec;

use crate::ProtoError;

use super::codec::{HEADER_LEN, finish, header, open};

/// Most rows in a reply.
pub const MAX_ROWS: usize = 1 << 22;
/// Most columns in a reply.
pub const MAX_COLS: usize = 64;

/// One cell of a reply table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A number.
    U64(u64),
    /// A string.
    Str(&'a str),
    /// Bytes (a request head and body handed to an application).
    Bytes(&'a [u8]),
}

impl Value<'_> {
    /// The number, if this is one.
    #[must_use]
    pub const fn as_u64(&self) -> Option<u64> {
        match self {
            Self::U64(v) => Some(*v),
            Self::Str(_) | Self::Bytes(_) => None,
        }
    }
}

/// Writes a reply table row by row. It allocates fallibly: when `out` cannot grow, the writer
/// stops writing and [`TableWriter::finish`] reports it (the control path must not panic on a
/// failed allocation: in the driver that is a bugcheck).
#[derive(Debug)]
pub struct TableWriter<'o> {
    out: &'o mut Vec<u8>,
    at: usize,
    rows: u32,
    cols: u16,
    failed: bool,
}

impl<'o> TableWriter<'o> {
    /// Starts a reply with `cols` columns in `out` (appended).
    pub fn new(out: &'o mut Vec<u8>, cols: u16) -> Self {
        let at = out.len();
        let mut t = Self {
            out,
            at,
            rows: 0,
            cols,
            failed: false,
        };
        t.put(&header(0));
        t.put(&0u32.to_le_bytes());
        t.put(&cols.to_le_bytes());
        t
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.failed || self.out.try_reserve(bytes.len()).is_err() {
            self.failed = true;
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Appends a row; it must have exactly `cols` values (extra ones are dropped, missing ones
    /// written as 0).
    pub fn row(&mut self, values: &[Value<'_>]) {
        for i in 0..usize::from(self.cols) {
            match values.get(i).copied().unwrap_or(Value::U64(0)) {
                Value::U64(v) => {
                    self.put(&[0]);
                    self.put(&v.to_le_bytes());
                }
                Value::Str(s) => {
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    self.put(&[1]);
                    self.put(&len.to_le_bytes());
                    self.put(s.as_bytes());
                }
                Value::Bytes(b) => {
                    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
                    self.put(&[2]);
                    self.put(&len.to_le_bytes());
                    self.put(b);
                }
            }
        }
        self.rows = self.rows.saturating_add(1);
    }

    /// Patches the row count and size.
    ///
    /// # Errors
    /// [`ProtoError::OutOfMemory`] when `out` could not grow; what was written is removed.
    pub fn finish(self) -> Result<(), ProtoError> {
        if self.failed {
            self.out.truncate(self.at);
            return Err(ProtoError::OutOfMemory);
        }
        let rows_at = self.at.saturating_add(HEADER_LEN);
        if let Some(slot) = self.out.get_mut(rows_at..rows_at.saturating_add(4)) {
            slot.copy_from_slice(&self.rows.to_le_bytes());
        }
        finish(self.out, self.at);
        Ok(())
    }
}

/// Decodes a reply table into rows of values.
///
/// # Errors
/// [`ProtoError`] naming the first fault.
pub fn decode_reply(buf: &[u8]) -> Result<Vec<Vec<Value<'_>>>, ProtoError> {
    let mut d = open(buf)?;
    let rows = usize::try_from(d.u32()?).map_err(|_| ProtoError::TooLarge)?;
    let cols = usize::from(d.u16()?);
    if rows > MAX_ROWS || cols > MAX_COLS {
        return Err(ProtoError::TooLarge);
    }
    // Each cell takes at least 5 bytes: a bound that stops a lying count from reserving memory.
    let cells = rows.checked_mul(cols).ok_or(ProtoError::TooLarge)?;
    if cells > buf.len() / 5 {
        return Err(ProtoError::Truncated);
    }
    let mut table = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut row = Vec::with_capacity(cols);
        for _ in 0..cols {
            row.push(match d.u8()? {
                0 => Value::U64(d.u64()?),
                1 => Value::Str(d.str()?),
                2 => Value::Bytes(d.bytes()?),
                _ => return Err(ProtoError::InvalidValue),
            });
        }
        table.push(row);
    }
    d.end()?;
    Ok(table)
}
