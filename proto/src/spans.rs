//! Where the parts of a request head lie in it (`reply::RequestRow::spans`), so that an
//! application takes the method, the target and the header fields as khttp's parser found them
//! instead of parsing the head again (issue #23). http.sys hands its applications the same:
//! `HTTP_REQUEST` carries the raw head and, beside it, the method, the URL and each header as
//! pointers and lengths (Microsoft Learn, "HTTP_REQUEST_V1 structure (http.h)").
//!
//! The encoding is a run of little-endian `u32`s, each pair an offset into the head and a
//! length: the method, then the request-target, then for each header field in order its name
//! and its value (the value without the white space around it). A reader checks every span
//! against the head it came with, so that a wrong index is an error, never a panic.

use alloc::vec::Vec;

use crate::ProtoError;

/// Bytes one span takes: an offset and a length, `u32` each.
pub const SPAN_LEN: usize = 8;

/// Bytes the index of a head with `fields` header fields takes.
#[must_use]
pub const fn index_len(fields: usize) -> usize {
    // The method and the target, then a name and a value per field.
    fields
        .saturating_mul(2)
        .saturating_add(2)
        .saturating_mul(SPAN_LEN)
}

/// Appends the span of `part`, which lies at `offset` in the head; an error when it does not
/// fit in a `u32` (a head is far shorter: `max-request-bytes` is at most 16 MiB).
///
/// # Errors
/// [`ProtoError::InvalidValue`] for an offset or length past `u32::MAX`.
pub fn put(out: &mut Vec<u8>, offset: usize, len: usize) -> Result<(), ProtoError> {
    let offset = u32::try_from(offset).map_err(|_| ProtoError::InvalidValue)?;
    let len = u32::try_from(len).map_err(|_| ProtoError::InvalidValue)?;
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A head's parts, read through its index.
#[derive(Clone, Copy, Debug)]
pub struct HeadParts<'a> {
    head: &'a [u8],
    /// The header fields' spans, two per field.
    fields: &'a [u8],
    /// The method, e.g. `GET`.
    pub method: &'a [u8],
    /// The request-target as sent.
    pub target: &'a [u8],
}

impl<'a> HeadParts<'a> {
    /// Reads `index` against `head`.
    ///
    /// # Errors
    /// [`ProtoError::InvalidValue`] when the index is not whole spans, names fewer than two,
    /// has a name without its value, or any span reaches past the head.
    pub fn read(head: &'a [u8], index: &'a [u8]) -> Result<Self, ProtoError> {
        let whole = index.len().is_multiple_of(2 * SPAN_LEN) && index.len() >= 2 * SPAN_LEN;
        if !whole {
            return Err(ProtoError::InvalidValue);
        }
        let (line, fields) = index.split_at(2 * SPAN_LEN);
        let (method, target) = line.split_at(SPAN_LEN);
        let parts = Self {
            head,
            fields,
            method: span(head, method)?,
            target: span(head, target)?,
        };
        // Every field's span is checked now, so that iterating cannot fail later.
        for pair in fields.chunks_exact(2 * SPAN_LEN) {
            let (name, value) = pair.split_at(SPAN_LEN);
            span(head, name)?;
            span(head, value)?;
        }
        Ok(parts)
    }

    /// How many header fields the head has.
    #[must_use]
    pub const fn field_count(&self) -> usize {
        self.fields.len() / (2 * SPAN_LEN)
    }

    /// The header fields in order: name and value.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let head = self.head;
        self.fields.chunks_exact(2 * SPAN_LEN).map(move |pair| {
            let (name, value) = pair.split_at(SPAN_LEN);
            // Checked by `read`; an empty part rather than a panic all the same.
            let part = |s| span(head, s).unwrap_or_default();
            (part(name), part(value))
        })
    }
}

/// The part of `head` that one encoded span names.
fn span<'a>(head: &'a [u8], s: &[u8]) -> Result<&'a [u8], ProtoError> {
    let word = |at: usize| {
        s.get(at..at.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ProtoError::InvalidValue)
    };
    let (offset, len) = (word(0)?, word(4)?);
    let end = offset.checked_add(len).ok_or(ProtoError::InvalidValue)?;
    head.get(offset..end).ok_or(ProtoError::InvalidValue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(spans: &[(usize, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(o, l) in spans {
            put(&mut out, o, l).unwrap();
        }
        out
    }

    #[test]
    fn parts_read_back() {
        let head = b"GET /a?b HTTP/1.1\r\nHost: x\r\nAccept:  */* \r\n\r\n";
        let idx = index(&[(0, 3), (4, 4), (19, 4), (25, 1), (28, 6), (37, 3)]);
        assert_eq!(idx.len(), index_len(2));
        let p = HeadParts::read(head, &idx).unwrap();
        assert_eq!(p.method, b"GET");
        assert_eq!(p.target, b"/a?b");
        assert_eq!(p.field_count(), 2);
        let fields: Vec<_> = p.fields().collect();
        assert_eq!(
            fields,
            [(&b"Host"[..], &b"x"[..]), (&b"Accept"[..], &b"*/*"[..])]
        );
    }

    #[test]
    fn bad_indexes_are_errors() {
        let head = b"GET / HTTP/1.1\r\n\r\n";
        // Past the head; an overflowing end; half a span; a name without its value; no
        // request line at all.
        for idx in [
            index(&[(0, 3), (4, 100)]),
            index(&[(0, 3), (usize::try_from(u32::MAX).unwrap(), 2)]),
            index(&[(0, 3), (4, 1)])[..12].to_vec(),
            index(&[(0, 3), (4, 1), (0, 1)]),
            Vec::new(),
        ] {
            assert_eq!(
                HeadParts::read(head, &idx).unwrap_err(),
                ProtoError::InvalidValue
            );
        }
        assert!(put(&mut Vec::new(), usize::MAX, 1).is_err());
    }
}
