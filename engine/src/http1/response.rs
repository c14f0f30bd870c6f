//! The one writer of response heads (RFC 9112 §4, RFC 9110 §15): every response khttp sends,
//! from a cache hit to a 503, has its status line, `Date`, `Server`, `Content-Length` and
//! `Connection` fields written by [`ResponseHead::write`]. Bodies are never copied here; the
//! connection queues references to cached bodies.

use alloc::vec::Vec;

use crate::error::OutOfMemory;
use crate::mem::put;
use crate::out::{Body, Output};
use crate::time::HttpDate;

/// The `Server` field every final response carries.
const SERVER: &[u8] = b"Server: khttp\r\n";

/// What a response says about the connection after it (RFC 9112 §9.3, §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persist {
    /// HTTP/1.1 keeps the connection by default: no `Connection` field.
    Default,
    /// An HTTP/1.0 client asked to keep it: `Connection: keep-alive`.
    KeepAlive,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

impl Persist {
    const fn line(self) -> &'static [u8] {
        match self {
            Self::Default => b"",
            Self::KeepAlive => b"Connection: keep-alive\r\n",
            Self::Close => b"Connection: close\r\n",
        }
    }
}

/// What was sent, for statistics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Served {
    /// Status code.
    pub status: u16,
    /// Body bytes queued.
    pub body_bytes: u64,
    /// Whether a cache entry answered.
    pub hit: bool,
}

/// A response head: the status line, `Date` and `Server`, then `fields`, then `Content-Length`
/// and `Connection`, then the empty line. An interim (1xx) head is its status line alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResponseHead<'a> {
    /// Status code, 100..=999.
    pub status: u16,
    /// The `Date` value.
    pub date: &'a HttpDate,
    /// Further fields, as pieces that together form whole lines, each ending in CRLF.
    pub fields: &'a [&'a [u8]],
    /// `Content-Length`, if the response has one (not 304: RFC 9110 §8.6 lets it be left out).
    pub length: Option<u64>,
    /// The `Connection` field.
    pub persist: Persist,
}

impl ResponseHead<'_> {
    /// Appends the head to `out`.
    ///
    /// # Errors
    /// [`OutOfMemory`]; the caller rolls back to its mark.
    pub(crate) fn write(&self, out: &mut Output) -> Result<(), OutOfMemory> {
        self.write_framed(out, b"")
    }

    /// Appends the head and, unless `head_only`, the whole `body` (none: a bodiless response);
    /// returns what was served, `hit` saying whether a cache entry answered.
    ///
    /// # Errors
    /// [`OutOfMemory`]; the caller rolls back to its mark.
    pub(crate) fn write_whole(
        &self,
        out: &mut Output,
        body: Option<&Body>,
        head_only: bool,
        hit: bool,
    ) -> Result<Served, OutOfMemory> {
        self.write(out)?;
        let sent = match body {
            Some(b) if !head_only => {
                out.body(b, 0, b.len())?;
                u64::try_from(b.len()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        Ok(Served {
            status: self.status,
            body_bytes: sent,
            hit,
        })
    }

    /// Appends the head of a response whose body follows in chunks ([`put_chunk`]): its
    /// `Transfer-Encoding: chunked` after the given fields, and no `Content-Length`
    /// (RFC 9112 §6.1, §7.1).
    ///
    /// # Errors
    /// [`OutOfMemory`]; the caller rolls back to its mark.
    pub(crate) fn write_chunked(&self, out: &mut Output) -> Result<(), OutOfMemory> {
        debug_assert!(
            self.length.is_none(),
            "a chunked response carries no Content-Length"
        );
        self.write_framed(out, b"Transfer-Encoding: chunked\r\n")
    }

    fn write_framed(&self, out: &mut Output, framing: &[u8]) -> Result<(), OutOfMemory> {
        let known = status_line(self.status);
        let mut unknown = Vec::new();
        let line: &[u8] = if known.is_empty() {
            put_status_line(&mut unknown, self.status)?;
            &unknown
        } else {
            known
        };
        if self.status < 200 {
            out.put(&[line])?;
            out.put(self.fields)?;
            return out.put(&[b"\r\n"]);
        }
        let length = self.length.map(Decimal::new);
        let (cl, n, crlf): (&[u8], &[u8], &[u8]) = match &length {
            Some(n) => (b"Content-Length: ", n.as_bytes(), b"\r\n"),
            None => (b"", b"", b""),
        };
        let head: [&[u8]; 5] = [line, b"Date: ", self.date.as_bytes(), b"\r\n", SERVER];
        let tail: [&[u8]; 6] = [framing, cl, n, crlf, self.persist.line(), b"\r\n"];
        out.put_groups(&[&head, self.fields, &tail])
    }
}

/// Writes a complete response whose body is one line of text (error pages, 404, 405, 412, 503),
/// with `extra` fields (whole lines) after `Server`.
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn page(
    out: &mut Output,
    status: u16,
    date: &HttpDate,
    extra: &[u8],
    text: &str,
    persist: Persist,
    head_only: bool,
) -> Result<Served, OutOfMemory> {
    let body_len = u64::try_from(text.len().saturating_add(1)).unwrap_or(u64::MAX);
    ResponseHead {
        status,
        date,
        fields: &[extra, b"Content-Type: text/plain; charset=utf-8\r\n"],
        length: Some(body_len),
        persist,
    }
    .write(out)?;
    if !head_only {
        out.put(&[text.as_bytes(), b"\n"])?;
    }
    Ok(Served {
        status,
        body_bytes: if head_only { 0 } else { body_len },
        hit: false,
    })
}

/// Appends one chunk (RFC 9112 §7.1) holding `body` (none when it is empty), and the last
/// chunk and the empty trailer section after it when `last`.
pub(crate) fn put_chunk(out: &mut Output, body: &Body, last: bool) -> Result<(), OutOfMemory> {
    if !body.is_empty() {
        let mut hex = [0u8; 16];
        let size = hex_digits(body.len(), &mut hex);
        out.put(&[size, b"\r\n"])?;
        out.body(body, 0, body.len())?;
        out.put(&[b"\r\n"])?;
    }
    if last {
        out.put(&[b"0\r\n\r\n"])?;
    }
    Ok(())
}

/// `n` in lowercase hexadecimal, in `buf`.
fn hex_digits(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut n = n;
    loop {
        i = i.saturating_sub(1);
        if let (Some(slot), Some(d)) = (buf.get_mut(i), DIGITS.get(n & 0xf)) {
            *slot = *d;
        }
        n >>= 4;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// Decimal digits of `n`, in a stack buffer.
#[derive(Clone, Copy)]
pub(crate) struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// Formats `n`.
    #[must_use]
    pub(crate) fn new(mut n: u64) -> Self {
        let mut buf = [b'0'; 20];
        let mut start = buf.len();
        loop {
            start = start.saturating_sub(1);
            if let Some(slot) = buf.get_mut(start) {
                let digit = u8::try_from(n % 10).unwrap_or(0);
                *slot = b'0'.saturating_add(digit);
            }
            n /= 10;
            if n == 0 || start == 0 {
                break;
            }
        }
        Self { buf, start }
    }

    /// The digits.
    #[must_use]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// The status line for `status`, e.g. `HTTP/1.1 404 Not Found\r\n`. Responses always carry
/// HTTP/1.1, the highest minor version this server speaks (RFC 9110 §6.2).
#[must_use]
pub(crate) fn status_line(status: u16) -> &'static [u8] {
    match status {
        100 => b"HTTP/1.1 100 Continue\r\n",
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        202 => b"HTTP/1.1 202 Accepted\r\n",
        203 => b"HTTP/1.1 203 Non-Authoritative Information\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        300 => b"HTTP/1.1 300 Multiple Choices\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        303 => b"HTTP/1.1 303 See Other\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        307 => b"HTTP/1.1 307 Temporary Redirect\r\n",
        308 => b"HTTP/1.1 308 Permanent Redirect\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        401 => b"HTTP/1.1 401 Unauthorized\r\n",
        403 => b"HTTP/1.1 403 Forbidden\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        410 => b"HTTP/1.1 410 Gone\r\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\n",
        412 => b"HTTP/1.1 412 Precondition Failed\r\n",
        414 => b"HTTP/1.1 414 URI Too Long\r\n",
        416 => b"HTTP/1.1 416 Range Not Satisfiable\r\n",
        417 => b"HTTP/1.1 417 Expectation Failed\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        451 => b"HTTP/1.1 451 Unavailable For Legal Reasons\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\n",
        505 => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        _ => b"",
    }
}

/// Writes the status line for any status 100..=999; the reason phrase may be empty
/// (RFC 9112 §4: `status-line = HTTP-version SP status-code SP [ reason-phrase ]`).
///
/// # Errors
/// [`OutOfMemory`].
pub(crate) fn put_status_line(buf: &mut Vec<u8>, status: u16) -> Result<(), OutOfMemory> {
    let known = status_line(status);
    if known.is_empty() {
        put(
            buf,
            &[
                b"HTTP/1.1 ",
                Decimal::new(u64::from(status)).as_bytes(),
                b" \r\n",
            ],
        )
    } else {
        put(buf, &[known])
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 123_456, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), alloc::format!("{n}").as_bytes());
        }
    }
}
