//! Request bodies, read and discarded: `Content-Length` and `chunked`
//! (RFC 9112 §6.3, §7.1).
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! The decoder is a byte-at-a-time state machine, so any split of the input gives the same
//! result, and the work per byte is constant. It is strict where leniency enables request
//! smuggling: only CRLF ends a chunk line (a lone LF is refused, the http.sys 2025 fix), a bare
//! CR is refused, a chunk size that overflows 64 bits is refused, chunk extensions are bounded,
//! and trailer fields count against the head limits and may not carry framing fields.

use crate::budget::Charge;
use crate::error::RequestError;
use crate::limits::MAX_CHUNK_EXT;

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Reading hex digits; `any` is whether one was seen.
    Size { size: u64, any: bool },
    /// In the chunk extension, `len` bytes so far.
    Ext { size: u64, len: usize },
    /// Saw CR at the end of the size line.
    SizeLf { size: u64 },
    /// In chunk data.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line of `len` bytes; `colon` once the colon was seen; the first
    /// bytes of the name and the name's length (saturating).
    Trailer {
        len: usize,
        colon: bool,
        name: [u8; 18],
        name_len: u8,
    },
    /// Saw CR ending a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    FinalLf,
    /// Finished.
    Done,
}

/// Reads a request body and throws it away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyReader {
    state: State,
    /// Trailer bytes and fields still allowed (they count against the head limits).
    trailer_bytes_left: usize,
    trailer_fields_left: usize,
    max_field: usize,
    /// Body bytes seen so far (chunk data only), for the discard limit.
    discarded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
}

/// What happened to a piece of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of the input that belong to the body.
    pub consumed: usize,
    /// Whether the body is complete.
    pub done: bool,
}

/// Where a body that is kept goes (a request handed to an application), how much of it may,
/// and what its memory is counted against.
#[derive(Debug)]
pub(crate) struct Kept<'a> {
    /// The body so far.
    pub(crate) buf: &'a mut alloc::vec::Vec<u8>,
    /// Bytes allowed in all.
    pub(crate) max: usize,
    /// The buffer's capacity, counted in the server's gauge of held bodies.
    pub(crate) charge: &'a mut Charge,
    /// `body-buffer-bytes`: what that gauge may reach.
    pub(crate) budget: u64,
}

/// The smallest buffer a kept body starts with.
const MIN_KEPT: usize = 4096;

impl Kept<'_> {
    fn push(&mut self, data: &[u8]) -> Result<(), RequestError> {
        let total = self
            .buf
            .len()
            .checked_add(data.len())
            .filter(|n| *n <= self.max)
            .ok_or(RequestError::ContentTooLarge)?;
        let cap = self.buf.capacity();
        if total > cap {
            // Grown by doubling (bounded work per byte), each growth counted before it is
            // made; an exact fit when doubling would not fit the budget.
            let doubled = cap.saturating_mul(2).max(MIN_KEPT).min(self.max).max(total);
            let count = |n: usize| u64::try_from(n.saturating_sub(cap)).unwrap_or(u64::MAX);
            let want = if self.charge.grow(count(doubled), self.budget) {
                doubled
            } else if self.charge.grow(count(total), self.budget) {
                total
            } else {
                return Err(RequestError::BodiesBusy);
            };
            self.buf
                .try_reserve_exact(want.saturating_sub(self.buf.len()))
                .map_err(|_| RequestError::OutOfMemory)?;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }
}

/// Fields that must not appear in a trailer section (RFC 9110 §6.5.1: framing, routing).
const FORBIDDEN_TRAILERS: [&[u8]; 4] =
    [b"content-length", b"transfer-encoding", b"host", b"trailer"];

impl BodyReader {
    /// A reader for `Content-Length: n`.
    #[must_use]
    pub(crate) const fn with_length(n: u64) -> Self {
        Self {
            state: State::Length(n),
            trailer_bytes_left: 0,
            trailer_fields_left: 0,
            max_field: 0,
            discarded: 0,
        }
    }

    /// A reader for a chunked body whose trailers may use `head_bytes_left` bytes and
    /// `fields_left` fields, each at most `max_field` bytes.
    #[must_use]
    pub(crate) const fn chunked(
        head_bytes_left: usize,
        fields_left: usize,
        max_field: usize,
    ) -> Self {
        Self {
            state: State::Chunked(Chunked::Size {
                size: 0,
                any: false,
            }),
            trailer_bytes_left: head_bytes_left,
            trailer_fields_left: fields_left,
            max_field,
            discarded: 0,
        }
    }

    /// Body bytes (chunk data, or content) consumed so far.
    #[must_use]
    pub(crate) const fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Consumes as much of `input` as belongs to the body, discarding it.
    ///
    /// # Errors
    /// 400 for a malformed chunked body, 431 for trailers over the head limits.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<Progress, RequestError> {
        self.feed_into(input, None)
    }

    /// As [`BodyReader::feed`], appending the body's bytes (chunk data, or content) to `keep`
    /// when given, up to its limit.
    ///
    /// # Errors
    /// As [`BodyReader::feed`]; 413 past `keep`'s limit; 503 when `keep` cannot grow.
    pub(crate) fn feed_into(
        &mut self,
        input: &[u8],
        mut keep: Option<&mut Kept<'_>>,
    ) -> Result<Progress, RequestError> {
        match &mut self.state {
            State::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if let Some(k) = keep.as_deref_mut() {
                    k.push(input.get(..take).unwrap_or_default())?;
                }
                let take64 = u64::try_from(take).unwrap_or(u64::MAX);
                *left = left.saturating_sub(take64);
                self.discarded = self.discarded.saturating_add(take64);
                Ok(Progress {
                    consumed: take,
                    done: *left == 0,
                })
            }
            State::Chunked(_) => self.feed_chunked(input, keep),
        }
    }

    fn feed_chunked(
        &mut self,
        input: &[u8],
        mut keep: Option<&mut Kept<'_>>,
    ) -> Result<Progress, RequestError> {
        const BAD: RequestError = RequestError::BadRequest("malformed chunked body");
        let mut i = 0usize;
        while let Some(rest) = input.get(i..) {
            let State::Chunked(st) = &mut self.state else {
                return Err(BAD);
            };
            if *st == Chunked::Done {
                break;
            }
            // Chunk data is skipped in bulk.
            if let Chunked::Data { left } = st {
                if rest.is_empty() {
                    break;
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                if let Some(k) = keep.as_deref_mut() {
                    k.push(rest.get(..take).unwrap_or_default())?;
                }
                let take64 = u64::try_from(take).unwrap_or(u64::MAX);
                *left = left.saturating_sub(take64);
                if *left == 0 {
                    *st = Chunked::DataCr;
                }
                self.discarded = self.discarded.saturating_add(take64);
                i = i.saturating_add(take);
                continue;
            }
            let Some(&b) = rest.first() else { break };
            i = i.saturating_add(1);
            let current = *st;
            self.state = State::Chunked(self.step(current, b)?);
            if matches!(
                self.state,
                State::Chunked(Chunked::Trailer { .. } | Chunked::TrailerLf | Chunked::FinalLf)
            ) {
                self.trailer_bytes_left =
                    self.trailer_bytes_left
                        .checked_sub(1)
                        .ok_or(RequestError::HeadersTooLarge(
                            "the trailer section is too large",
                        ))?;
            }
        }
        Ok(Progress {
            consumed: i.min(input.len()),
            done: self.state == State::Chunked(Chunked::Done),
        })
    }

    /// One byte of the chunked framing outside chunk data: the next state.
    fn step(&mut self, st: Chunked, b: u8) -> Result<Chunked, RequestError> {
        const BAD: RequestError = RequestError::BadRequest("malformed chunked body");
        Ok(match st {
            Chunked::Size { size, any } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = u64::from(super::hex_digit(b));
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or(RequestError::BadRequest("chunk size overflows"))?;
                    Chunked::Size { size, any: true }
                }
                b';' | b' ' | b'\t' if any => Chunked::Ext { size, len: 1 },
                b'\r' if any => Chunked::SizeLf { size },
                _ => return Err(BAD),
            },
            Chunked::Ext { size, len } => match b {
                b'\r' => Chunked::SizeLf { size },
                b'\n' => return Err(RequestError::BadRequest("lone LF in a chunk line")),
                _ if len >= MAX_CHUNK_EXT => {
                    return Err(RequestError::BadRequest("chunk extension too long"));
                }
                b'\t' | b' '..=b'~' | 0x80..=0xFF => Chunked::Ext {
                    size,
                    len: len.saturating_add(1),
                },
                _ => return Err(BAD),
            },
            Chunked::SizeLf { size } => match b {
                b'\n' if size == 0 => Chunked::TrailerStart,
                b'\n' => Chunked::Data { left: size },
                _ => return Err(RequestError::BadRequest("bare CR in a chunk line")),
            },
            Chunked::Data { .. } => return Err(BAD),
            Chunked::DataCr => match b {
                b'\r' => Chunked::DataLf,
                b'\n' => return Err(RequestError::BadRequest("lone LF after chunk data")),
                _ => return Err(BAD),
            },
            Chunked::DataLf => match b {
                b'\n' => Chunked::Size {
                    size: 0,
                    any: false,
                },
                _ => return Err(BAD),
            },
            Chunked::TrailerStart => match b {
                b'\r' => Chunked::FinalLf,
                b'\n' => {
                    return Err(RequestError::BadRequest("lone LF in the trailer section"));
                }
                _ => {
                    self.trailer_fields_left = self
                        .trailer_fields_left
                        .checked_sub(1)
                        .ok_or(RequestError::HeadersTooLarge("too many trailer fields"))?;
                    Self::trailer_byte(
                        Chunked::Trailer {
                            len: 0,
                            colon: false,
                            name: [0; 18],
                            name_len: 0,
                        },
                        b,
                        self.max_field,
                    )?
                }
            },
            st @ Chunked::Trailer { .. } => Self::trailer_byte(st, b, self.max_field)?,
            Chunked::TrailerLf => match b {
                b'\n' => Chunked::TrailerStart,
                _ => return Err(RequestError::BadRequest("bare CR in the trailer section")),
            },
            Chunked::FinalLf => match b {
                b'\n' => Chunked::Done,
                _ => return Err(RequestError::BadRequest("bare CR in the trailer section")),
            },
            Chunked::Done => Chunked::Done,
        })
    }

    /// One byte of a trailer field line: `field-name ":" OWS field-value OWS`.
    fn trailer_byte(st: Chunked, b: u8, max_field: usize) -> Result<Chunked, RequestError> {
        let Chunked::Trailer {
            len,
            colon,
            mut name,
            name_len,
        } = st
        else {
            return Err(RequestError::BadRequest("malformed chunked body"));
        };
        if len >= max_field {
            return Err(RequestError::HeadersTooLarge("a trailer field is too long"));
        }
        let len = len.saturating_add(1);
        if b == b'\r' {
            if !colon {
                return Err(RequestError::BadRequest("malformed trailer field"));
            }
            return Ok(Chunked::TrailerLf);
        }
        if b == b'\n' {
            return Err(RequestError::BadRequest("lone LF in the trailer section"));
        }
        if colon {
            return if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 {
                Ok(Chunked::Trailer {
                    len,
                    colon,
                    name,
                    name_len,
                })
            } else {
                Err(RequestError::BadRequest("invalid trailer field value"))
            };
        }
        if b == b':' {
            if name_len == 0 {
                return Err(RequestError::BadRequest("malformed trailer field"));
            }
            let got = name.get(..usize::from(name_len)).unwrap_or(b"-");
            if FORBIDDEN_TRAILERS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(got))
            {
                return Err(RequestError::BadRequest(
                    "a framing field in the trailer section",
                ));
            }
            return Ok(Chunked::Trailer {
                len,
                colon: true,
                name,
                name_len,
            });
        }
        if !super::is_tchar(b) {
            return Err(RequestError::BadRequest("invalid trailer field name"));
        }
        // Remember the first 18 bytes of the name, enough for every forbidden name; a longer
        // name (name_len > 18) is never compared.
        if let Some(slot) = name.get_mut(usize::from(name_len)) {
            *slot = b;
        }
        let name_len = name_len.saturating_add(1);
        Ok(Chunked::Trailer {
            len,
            colon,
            name,
            name_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{BodyReader, Progress};
    use crate::error::RequestError;

    fn run(body: &[u8]) -> Result<Progress, RequestError> {
        BodyReader::chunked(1000, 10, 200).feed(body)
    }

    fn run_bytewise(body: &[u8]) -> Result<Progress, RequestError> {
        let mut r = BodyReader::chunked(1000, 10, 200);
        let mut consumed = 0;
        for b in body {
            let p = r.feed(core::slice::from_ref(b))?;
            consumed += p.consumed;
            if p.done {
                return Ok(Progress {
                    consumed,
                    done: true,
                });
            }
        }
        Ok(Progress {
            consumed,
            done: false,
        })
    }

    #[test]
    fn chunked_ok() {
        for (body, consumed) in [
            (&b"0\r\n\r\nNEXT"[..], 5),
            (b"5\r\nhello\r\n0\r\n\r\n", 15),
            (b"5;ext=1\r\nhello\r\n0\r\n\r\n", 21),
            (b"A\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\nGET", 36),
            (b"000005\r\nhello\r\n00\r\n\r\n", 21),
        ] {
            let want = Ok(Progress {
                consumed,
                done: true,
            });
            assert_eq!(run(body), want, "{body:?}");
            assert_eq!(run_bytewise(body), want, "{body:?} byte by byte");
        }
        assert_eq!(
            run(b"5\r\nhel"),
            Ok(Progress {
                consumed: 6,
                done: false
            })
        );
    }

    #[test]
    fn chunked_refused() {
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // lone LF ending the size line
            b"5;ext\nhello\r\n0\r\n\r\n",  // lone LF after an extension
            b"5\r\nhello\n0\r\n\r\n",      // lone LF after data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than the size
            b"0\r\n\n",                    // lone LF at the end
            b"5\rhello",                   // bare CR
            b"x\r\n",                      // not hex
            b"\r\n",                       // no digits
            b"-1\r\n",
            b"10000000000000000\r\n", // 2^64 overflows
            b"FFFFFFFFFFFFFFFFF\r\n",
            b"0\r\nContent-Length: 5\r\n\r\n", // forbidden trailers
            b"0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"0\r\nHost: x\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\n: empty-name\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(run(body).is_err(), "{body:?}");
            assert!(run_bytewise(body).is_err(), "{body:?} byte by byte");
        }
        let long_ext = alloc::format!("1;{}\r\n", "e".repeat(2000));
        assert!(run(long_ext.as_bytes()).is_err());
        // Trailers count against the head limits.
        let many = alloc::format!("0\r\n{}\r\n", "X: y\r\n".repeat(11));
        assert_eq!(run(many.as_bytes()).map_err(|e| e.status()), Err(431));
        let big = alloc::format!("0\r\nX: {}\r\n\r\n", "y".repeat(300));
        assert_eq!(run(big.as_bytes()).map_err(|e| e.status()), Err(431));
    }

    #[test]
    fn long_trailer_names_are_not_mistaken() {
        assert!(run(b"0\r\nContent-Length-Extra-Long-Name: 1\r\n\r\n").is_ok());
    }

    #[test]
    fn content_length() {
        let mut r = BodyReader::with_length(5);
        assert_eq!(
            r.feed(b"he"),
            Ok(Progress {
                consumed: 2,
                done: false
            })
        );
        assert_eq!(
            r.feed(b"lloGET"),
            Ok(Progress {
                consumed: 3,
                done: true
            })
        );
        assert_eq!(r.discarded(), 5);
    }
}
