//! Request head parsing and validation (RFC 9112 §2–3, §6; RFC 9110 §7.2, §10.1.1).
//!
//! httparse does the tokenising (request-line, field lines, token and field-value characters).
//! This module adds the HTTP semantics httparse leaves to its caller: request-target forms,
//! Host rules, message framing and its smuggling shapes, `Connection`, `Expect`, and the size
//! limits (`crate::limits`).
//!
//! Decision: a lone LF ends a head line, as RFC 9112 §2.2 permits and http.sys always accepts
//! (`parser-enhancements.md`). A bare CR anywhere is refused (§2.2: "MUST treat as invalid").
//! Inside chunked bodies only CRLF is accepted (see [`super::body`]).

use core::mem::MaybeUninit;

use super::is_tchar;
use crate::error::RequestError;
use crate::limits::Limits;

/// The request methods the engine tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
    /// Any other token (methods are case-sensitive, RFC 9110 §9.1).
    Other,
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: …, chunked`.
    Chunked,
}

/// A parsed, validated request head. Borrows the input.
#[derive(Debug)]
pub(crate) struct Head<'b> {
    /// The method.
    pub method: Method,
    /// The version.
    pub version: Version,
    /// True for `OPTIONS *` (asterisk-form).
    pub asterisk: bool,
    /// The host to route by: the absolute-form authority, else the Host field (may carry a port).
    pub host: &'b [u8],
    /// The raw path (no query), starting with `/`; empty for asterisk-form.
    pub path: &'b [u8],
    /// The query, without its `?`, if the target has one (possibly empty: `/a?`).
    pub query: Option<&'b [u8]>,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
    /// Length of the head in bytes, terminator included.
    pub len: usize,
}

/// The method and the request-target of a head that [`parse_head`] accepted: after any empty
/// lines before it (which the parser skips), the request line is a method, one space, the
/// target, one space (httparse's strict form, which the engine keeps: RFC 9112 §3). Found here
/// only for a request handed to an application, so that the cache's path carries nothing more.
fn request_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut words = buf.get(start..)?.splitn(3, |&b| b == b' ');
    Some((words.next()?, words.next()?))
}

/// The index of `buf`'s parts for an application (`khttp_proto::spans`): where the method, the
/// target and each field's name and value lie in it, as [`parse_head`] found them.
///
/// # Errors
/// `OutOfMemory` when the index cannot be allocated; `BadRequest` should a part not lie
/// in `buf` (it cannot: the parser gives slices of it).
pub(crate) fn head_index(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
) -> Result<alloc::vec::Vec<u8>, RequestError> {
    let mut out = alloc::vec::Vec::new();
    out.try_reserve_exact(khttp_proto::spans::index_len(headers.len()))
        .map_err(|_| RequestError::OutOfMemory)?;
    let (method, target) =
        request_line(buf).ok_or(RequestError::BadRequest("malformed request line"))?;
    let parts = [method, target]
        .into_iter()
        .chain(headers.iter().flat_map(|h| [h.name.as_bytes(), h.value]));
    let base = buf.as_ptr() as usize;
    for part in parts {
        // The parser's slices are of `buf`: their offset is the distance between starts.
        let offset = (part.as_ptr() as usize)
            .checked_sub(base)
            .filter(|o| {
                o.checked_add(part.len())
                    .is_some_and(|end| end <= buf.len())
            })
            .ok_or(RequestError::BadRequest("malformed request head"))?;
        khttp_proto::spans::put(&mut out, offset, part.len())
            .map_err(|_| RequestError::BadRequest("malformed request head"))?;
    }
    debug_assert_eq!(
        out.len(),
        khttp_proto::spans::index_len(headers.len()),
        "an index of two spans and two per field, allocated once"
    );
    Ok(out)
}

/// Finds the end of a head (the empty line) in `buf`, starting the search at `from`. Returns the
/// offset just past it. Only CRLF CRLF, LF LF, CRLF LF and LF CRLF count.
#[must_use]
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    let mut i = 0usize;
    while let Some(pos) = tail.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i.checked_add(pos)?;
        let next = lf.checked_add(1)?;
        match tail.get(next) {
            Some(b'\n') => return from.checked_add(next)?.checked_add(1),
            Some(b'\r') if tail.get(next.checked_add(1)?) == Some(&b'\n') => {
                return from.checked_add(next)?.checked_add(2);
            }
            _ => i = next,
        }
    }
    None
}

/// Iterates the elements of a comma-separated list field (RFC 9110 §5.6.1), trimmed, skipping
/// empty elements (`a, , b` and a trailing comma are legal and mean nothing).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// RFC 3986 host with optional port: `IP-literal / IPv4address / reg-name [ ":" port ]`.
/// Refuses userinfo, paths, spaces and anything else http.sys reports as "Invalid Hostname".
fn valid_host(host: &[u8]) -> bool {
    let (name, port) = if host.first() == Some(&b'[') {
        let Some(end) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = host.get(1..end).unwrap_or_default();
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let rest = host.get(end.saturating_add(1)..).unwrap_or_default();
        match rest.split_first() {
            None => (inner, &b""[..]),
            Some((b':', port)) => (inner, port),
            Some(_) => return false,
        }
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(i) => (
                host.get(..i).unwrap_or_default(),
                host.get(i.saturating_add(1)..).unwrap_or_default(),
            ),
            None => (host, &b""[..]),
        }
    };
    let name_ok = name.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
            )
    });
    name_ok && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    // RFC 9110 §8.6: Content-Length = 1*DIGIT. A list ("5, 5") is refused as a duplicate.
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Validates a Transfer-Encoding list (RFC 9112 §6.1): known codings, `chunked` last and once.
fn check_transfer_codings(values: &[&[u8]]) -> Result<(), RequestError> {
    let mut saw_chunked = false;
    let mut last_is_chunked = false;
    for value in values {
        for coding in list_elements(value) {
            let name = coding
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if saw_chunked {
                return Err(RequestError::BadRequest(
                    "chunked must be the final transfer coding, once",
                ));
            }
            if name.eq_ignore_ascii_case(b"chunked") {
                saw_chunked = true;
                last_is_chunked = true;
            } else if [
                &b"gzip"[..],
                b"x-gzip",
                b"deflate",
                b"compress",
                b"x-compress",
            ]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k))
            {
                last_is_chunked = false;
            } else if name.iter().all(|&b| is_tchar(b)) && !name.is_empty() {
                return Err(RequestError::NotImplemented("unknown transfer coding"));
            } else {
                return Err(RequestError::BadRequest("malformed Transfer-Encoding"));
            }
        }
    }
    if !last_is_chunked {
        return Err(RequestError::BadRequest(
            "Transfer-Encoding must end with chunked",
        ));
    }
    Ok(())
}

fn version_like(line: &[u8]) -> bool {
    // "... HTTP/d.d" at the end of the request line: a real version we do not support.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let v = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', c] if a.is_ascii_digit() && c.is_ascii_digit())
        || matches!(v, [b'H', b'T', b'T', b'P', b'/', a] if a.is_ascii_digit())
}

/// The response for an httparse error on `buf`.
fn map_error(e: httparse::Error, buf: &[u8]) -> RequestError {
    match e {
        httparse::Error::TooManyHeaders => RequestError::HeadersTooLarge("too many header fields"),
        httparse::Error::Version => {
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            if version_like(line) {
                RequestError::VersionNotSupported
            } else {
                RequestError::BadRequest("malformed request line")
            }
        }
        httparse::Error::Token => RequestError::BadRequest("malformed request line"),
        httparse::Error::HeaderName => RequestError::BadRequest(
            "invalid header field name (or obs-fold, or whitespace before ':')",
        ),
        httparse::Error::HeaderValue => RequestError::BadRequest("invalid header field value"),
        httparse::Error::NewLine | httparse::Error::Status => {
            RequestError::BadRequest("invalid line ending")
        }
    }
}

/// How much of an incomplete head [`early_error`] looks at per call, so that a head arriving a
/// byte at a time costs linear time overall.
pub(crate) const EARLY_CHECK_BYTES: usize = 1024;

/// Checks the start of an incomplete head, so that garbage is refused at once instead of after
/// the header timeout. `None` means "no error yet".
#[must_use]
pub(crate) fn early_error(buf: &[u8]) -> Option<RequestError> {
    let prefix = buf.get(..EARLY_CHECK_BYTES).unwrap_or(buf);
    let mut no_slots: [httparse::Header<'_>; 0] = [];
    match httparse::Request::new(&mut no_slots).parse(prefix) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => None,
        // Whether a bad version is 505 or 400 depends on the whole request line
        // (`version_like`): wait for its end, so that the answer is the same however the bytes
        // arrive (found by the connection fuzz target).
        Err(httparse::Error::Version) if !prefix.contains(&b'\n') => None,
        Err(e) => Some(map_error(e, prefix)),
    }
}

/// Parses and validates a complete head `buf[..end]` (`end` from [`find_head_end`]).
///
/// # Errors
/// The [`RequestError`] to answer with; the connection then closes.
pub(crate) fn parse_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
    limits: &Limits,
) -> Result<(Head<'b>, &'h [httparse::Header<'b>]), RequestError> {
    // Parsing into uninitialised slots spares zeroing them for every request.
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(RequestError::BadRequest("malformed request head"));
        }
        Err(e) => return Err(map_error(e, buf)),
    };
    // A bare CR anywhere in the head is refused by httparse itself (it ends a line only before
    // LF); the tests below hold it to that.
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("OPTIONS") => Method::Options,
        Some(_) => Method::Other,
        None => return Err(RequestError::BadRequest("malformed request line")),
    };
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(RequestError::VersionNotSupported),
    };
    let target = req.path.unwrap_or_default().as_bytes();
    if target.len() > limits.max_url_length as usize {
        return Err(RequestError::UriTooLong);
    }

    let fields = Fields::scan(req.headers, limits)?;
    let (path_and_query, target_host, asterisk) = split_target(target, method)?;
    let (path, query) = split_query(path_and_query)?;
    let host = target_host.or(fields.host(version)?).unwrap_or_default();
    let framing = fields.framing(version)?;
    let keep_alive = match version {
        Version::Http11 => !fields.conn_close,
        Version::Http10 => fields.conn_keep_alive && !fields.conn_close,
    };
    let head = Head {
        method,
        version,
        asterisk,
        host,
        path,
        query,
        framing,
        keep_alive,
        // §10.1.1: a 100-continue from an HTTP/1.0 client is ignored.
        expect_continue: fields.expect_continue
            && version == Version::Http11
            && framing != Framing::None,
        len,
    };
    Ok((head, req.headers))
}

/// The path and the query of an origin-form target; a fragment is refused.
fn split_query(path_and_query: &[u8]) -> Result<(&[u8], Option<&[u8]>), RequestError> {
    let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(q) => (
            path_and_query.get(..q).unwrap_or_default(),
            path_and_query.get(q.saturating_add(1)..),
        ),
        None => (path_and_query, None),
    };
    if path.contains(&b'#') {
        return Err(RequestError::BadRequest(
            "a fragment is not allowed in the request URL",
        ));
    }
    Ok((path, query))
}

/// The header fields this server acts on, as found in one head.
#[derive(Default)]
struct Fields<'b> {
    host: Option<&'b [u8]>,
    host_count: u32,
    content_length: Option<u64>,
    cl_count: u32,
    te_values: [&'b [u8]; 8],
    te_count: usize,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
}

impl<'b> Fields<'b> {
    /// The `Host` field (RFC 9112 §3.2): exactly one in HTTP/1.1; never more than one; always
    /// valid.
    fn host(&self, version: Version) -> Result<Option<&'b [u8]>, RequestError> {
        if self.host_count > 1 {
            return Err(RequestError::BadRequest("more than one Host header"));
        }
        if version == Version::Http11 && self.host_count == 0 {
            return Err(RequestError::BadRequest("HTTP/1.1 request without Host"));
        }
        if let Some(h) = self.host
            && !h.is_empty()
            && !valid_host(h)
        {
            return Err(RequestError::BadRequest("invalid Host header"));
        }
        Ok(self.host)
    }

    fn scan(headers: &[httparse::Header<'b>], limits: &Limits) -> Result<Self, RequestError> {
        let mut f = Self::default();
        for h in headers {
            let field_len = h.name.len().saturating_add(h.value.len()).saturating_add(2);
            if field_len > limits.max_field_length as usize {
                return Err(RequestError::HeadersTooLarge("a header field is too long"));
            }
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") {
                f.host_count = f.host_count.saturating_add(1);
                f.host = Some(h.value.trim_ascii());
            } else if name.eq_ignore_ascii_case(b"content-length") {
                f.cl_count = f.cl_count.saturating_add(1);
                f.content_length = Some(
                    parse_content_length(h.value.trim_ascii())
                        .ok_or(RequestError::BadRequest("malformed Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let slot = f
                    .te_values
                    .get_mut(f.te_count)
                    .ok_or(RequestError::BadRequest(
                        "too many Transfer-Encoding fields",
                    ))?;
                *slot = h.value;
                f.te_count = f.te_count.saturating_add(1);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in list_elements(h.value) {
                    f.conn_close |= token.eq_ignore_ascii_case(b"close");
                    f.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    f.expect_continue = true;
                } else {
                    return Err(RequestError::ExpectationFailed);
                }
            }
        }
        Ok(f)
    }

    /// The body's framing (RFC 9112 §6.1, §6.3), refusing every ambiguous shape.
    fn framing(&self, version: Version) -> Result<Framing, RequestError> {
        if self.te_count > 0 {
            if self.cl_count > 0 {
                return Err(RequestError::BadRequest(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            if version == Version::Http10 {
                return Err(RequestError::BadRequest(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            check_transfer_codings(self.te_values.get(..self.te_count).unwrap_or_default())?;
            return Ok(Framing::Chunked);
        }
        if self.cl_count > 1 {
            return Err(RequestError::BadRequest("more than one Content-Length"));
        }
        Ok(match self.content_length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        })
    }
}

/// A request-target taken apart: the path and query, the authority of an absolute-form target,
/// and whether it is `*`.
type Target<'b> = (&'b [u8], Option<&'b [u8]>, bool);

/// The request-target's forms (RFC 9112 §3.2): the path and query, the authority of an
/// absolute-form target (which overrides Host, §3.2.2), and whether it is `*`.
fn split_target(target: &[u8], method: Method) -> Result<Target<'_>, RequestError> {
    if target.first() == Some(&b'/') {
        return Ok((target, None, false));
    }
    if target == b"*" {
        if method != Method::Options {
            return Err(RequestError::BadRequest(
                "asterisk-form is only for OPTIONS",
            ));
        }
        return Ok((&b""[..], None, true));
    }
    // "http://" or "https://" (RFC 9110 §4.2), either case.
    let scheme_len = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|scheme| {
            target.len() > scheme.len()
                && target
                    .get(..scheme.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        })
        .map(<[u8]>::len);
    let Some(scheme_len) = scheme_len else {
        // authority-form (CONNECT) and anything else.
        return Err(RequestError::BadRequest("unsupported request-target form"));
    };
    let rest = target.get(scheme_len..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or_default();
    if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
        return Err(RequestError::BadRequest("invalid host in the request URL"));
    }
    let pq = rest.get(end..).unwrap_or_default();
    let pq = if pq.first() == Some(&b'/') { pq } else { b"/" };
    Ok((pq, Some(authority), false))
}

#[cfg(test)]
mod tests {
    use super::{Framing, Method, RequestError, Version, find_head_end, parse_head};
    use crate::limits::Limits;

    fn parse(s: &str) -> Result<(Method, Version, Framing, bool), RequestError> {
        let buf = s.as_bytes();
        let end = find_head_end(buf, 0).expect("complete head");
        let mut slots = [const { core::mem::MaybeUninit::uninit() }; 100];
        parse_head(buf.get(..end).unwrap(), &mut slots, &Limits::default())
            .map(|(h, _)| (h.method, h.version, h.framing, h.keep_alive))
    }

    fn status(s: &str) -> u16 {
        parse(s).err().map_or(0, |e| e.status())
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"x\r\n\r\n", 10), None);
    }

    #[test]
    fn accepts() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok((Method::Get, Version::Http11, Framing::None, true))
        );
        assert_eq!(
            parse("HEAD /x HTTP/1.0\r\n\r\n"),
            Ok((Method::Head, Version::Http10, Framing::None, false))
        );
        assert_eq!(
            parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").map(|r| r.3),
            Ok(true)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").map(|r| r.3),
            Ok(false)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\nHost: a\n\n").map(|r| r.0),
            Ok(Method::Get),
            "lone LF line endings in the head"
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").map(|r| r.2),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .map(|r| r.2),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            parse("GET http://a:80/x?y HTTP/1.1\r\nHost: b\r\n\r\n").map(|r| r.0),
            Ok(Method::Get)
        );
        assert_eq!(
            parse("GET HTTPS://a:443/x HTTP/1.1\r\nHost: b\r\n\r\n").map(|r| r.0),
            Ok(Method::Get)
        );
        assert!(parse("GET https:// HTTP/1.1\r\nHost: b\r\n\r\n").is_err());
        assert!(parse("GET ftp://a/ HTTP/1.1\r\nHost: b\r\n\r\n").is_err());
        assert_eq!(
            parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").map(|r| r.0),
            Ok(Method::Options)
        );
        assert_eq!(
            parse("get / HTTP/1.1\r\nHost: a\r\n\r\n").map(|r| r.0),
            Ok(Method::Other)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").map(|r| r.0),
            Ok(Method::Get)
        );
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "a table of refused requests")]
    fn refuses() {
        for (req, want) in [
            ("GET / HTTP/1.1\r\n\r\n", 400),                       // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400), // two Hosts
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: http://ip/vdir\r\n\r\n", 400), // Invalid Hostname
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
            ("GET / FOO/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /\r\n\r\n", 400),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400), // authority-form
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            // Smuggling shapes (RFC 9112 §6.1, §6.3).
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n",
                501,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"x\"\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
                400,
            ), // space before colon
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400), // obs-fold
            ("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),         // bare CR
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
            ("GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
            ("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ] {
            assert_eq!(status(req), want, "{req:?}");
        }
    }

    #[test]
    fn limits() {
        let long_url = alloc::format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(16_384));
        assert_eq!(status(&long_url), 414);
        let long_field = alloc::format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(16_384)
        );
        assert_eq!(status(&long_field), 431);
        let mut many = alloc::string::String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            many.push_str(&alloc::format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
    }
}
