//! Answering a request from a cache entry: content negotiation, conditional
//! requests, ranges, HEAD.
//!
//! Precedence of preconditions, RFC 9110 §13.2.2:
//! 1. `If-Match` fails → 412;
//! 2. else `If-Unmodified-Since` fails → 412;
//! 3. `If-None-Match` matches (weak comparison, `*`) → 304 for GET/HEAD;
//! 4. else `If-Modified-Since` (GET/HEAD) not modified → 304;
//! 5. `Range` (GET only, §14.2) with `If-Range` (§13.1.5): apply the range only if the validator
//!    matches, else send 200.
//!
//! Entries with a status other than 200 are sent as they are: no preconditions, no ranges.

use crate::error::OutOfMemory;
use crate::http1::fields::{
    ByteRange, Coding, RangeRequest, if_range_etag_matches, match_hits, negotiate, none_match_hits,
    parse_range,
};
use crate::http1::request::Method;
use crate::http1::response::{Decimal, Persist, ResponseHead, Served, page};
use crate::out::Output;
use crate::time::{HttpDate, parse_http_date};

use super::entry::{Entry, Variant};

/// The values of every field named `name` (ASCII case-insensitive), in order.
pub(crate) fn values<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + Clone + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn single<'b>(headers: &[httparse::Header<'b>], name: &'static str) -> Option<&'b [u8]> {
    values(headers, name).next()
}

/// Outcome of the preconditions.
enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn evaluate(
    entry: &Entry,
    v: &Variant,
    method: Method,
    headers: &[httparse::Header<'_>],
) -> Precondition {
    let get_or_head = matches!(method, Method::Get | Method::Head);
    let mut if_match = values(headers, "if-match").peekable();
    if if_match.peek().is_some() {
        if !match_hits(if_match, &v.etag) {
            return Precondition::Failed;
        }
    } else if let Some(date) = single(headers, "if-unmodified-since").and_then(parse_http_date)
        && entry.last_modified.is_some_and(|lm| lm > date)
    {
        return Precondition::Failed;
    }
    let mut if_none_match = values(headers, "if-none-match").peekable();
    if if_none_match.peek().is_some() {
        if none_match_hits(if_none_match, &v.etag) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head
        && let (Some(date), Some(lm)) = (
            single(headers, "if-modified-since").and_then(parse_http_date),
            entry.last_modified,
        )
        && lm <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether `If-Range` lets the range apply (§13.1.5): a strong ETag match, or a date equal to
/// Last-Modified.
fn if_range_allows(entry: &Entry, v: &Variant, headers: &[httparse::Header<'_>]) -> bool {
    let Some(value) = single(headers, "if-range") else {
        return true;
    };
    let value = value.trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        if_range_etag_matches(value, &v.etag)
    } else {
        parse_http_date(value).is_some_and(|d| entry.last_modified == Some(d))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Answers a GET or HEAD from `entry`.
///
/// # Errors
/// [`OutOfMemory`]; the caller rolls back what was written.
pub(crate) fn serve(
    entry: &Entry,
    method: Method,
    headers: &[httparse::Header<'_>],
    date: &HttpDate,
    persist: Persist,
    policy: &[u8],
    out: &mut Output,
) -> Result<Served, OutOfMemory> {
    // The reservation's freshness policy, unless the entry has its own (issue #13).
    let policy: &[u8] = if entry.own_cache_control { b"" } else { policy };
    let head_only = method == Method::Head;
    let Some(v) = entry.variant(choose_coding(entry, headers)) else {
        return page(out, 500, date, b"", "empty cache entry", persist, head_only);
    };
    entry.hit();
    let len = u64::try_from(v.body.len()).unwrap_or(u64::MAX);
    let base = ResponseHead {
        status: 200,
        date,
        fields: &[],
        length: None,
        persist,
    };
    let whole = |out: &mut Output, status| -> Result<Served, OutOfMemory> {
        let fields: [&[u8]; 4] = [&v.validators, policy, &v.content_type, &v.other];
        ResponseHead {
            status,
            fields: &fields,
            length: Some(len),
            ..base
        }
        .write_whole(out, Some(&v.body), head_only, true)
    };
    if entry.status != 200 {
        return whole(out, entry.status);
    }
    match evaluate(entry, v, method, headers) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let not_modified = ResponseHead {
                status: 304,
                fields: &[&v.validators, policy],
                ..base
            };
            return not_modified.write_whole(out, None, head_only, true);
        }
        Precondition::Failed => {
            return page(
                out,
                412,
                date,
                b"",
                "Precondition Failed",
                persist,
                head_only,
            );
        }
    }
    let range = match single(headers, "range") {
        Some(value) if method == Method::Get && if_range_allows(entry, v, headers) => {
            parse_range(value, len)
        }
        _ => RangeRequest::Ignore,
    };
    match range {
        RangeRequest::Ignore => whole(out, 200),
        range => partial(v, range, policy, base, out),
    }
}

/// A 206 or 416 for a `Range` the preconditions let through (RFC 9110 §14.2, §15.3.7).
fn partial(
    v: &Variant,
    range: RangeRequest,
    policy: &[u8],
    base: ResponseHead<'_>,
    out: &mut Output,
) -> Result<Served, OutOfMemory> {
    let len = u64::try_from(v.body.len()).unwrap_or(u64::MAX);
    let total = Decimal::new(len);
    let (ranges, count) = match range {
        RangeRequest::Ranges { ranges, count } => (ranges, count),
        RangeRequest::Ignore | RangeRequest::Unsatisfiable => {
            let fields: [&[u8]; 5] = [
                &v.validators,
                policy,
                b"Content-Range: bytes */",
                total.as_bytes(),
                b"\r\n",
            ];
            ResponseHead {
                status: 416,
                fields: &fields,
                length: Some(0),
                ..base
            }
            .write(out)?;
            return Ok(Served {
                status: 416,
                body_bytes: 0,
                hit: true,
            });
        }
    };
    let head = ResponseHead {
        status: 206,
        ..base
    };
    let ranges = ranges.get(..count).unwrap_or_default();
    let [r] = ranges else {
        return multipart(v, ranges, &total, policy, head, out);
    };
    let (first, last) = (Decimal::new(r.first), Decimal::new(r.last));
    let [r0, r1, r2, r3, r4, r5] = content_range(&first, &last, &total);
    let fields: [&[u8]; 11] = [
        &v.validators,
        policy,
        &v.content_type,
        &v.other,
        r0,
        r1,
        r2,
        r3,
        r4,
        r5,
        b"\r\n",
    ];
    ResponseHead {
        fields: &fields,
        length: Some(r.len()),
        ..head
    }
    .write(out)?;
    out.body(
        &v.body,
        to_usize(r.first),
        to_usize(r.last).saturating_add(1),
    )?;
    Ok(Served {
        status: 206,
        body_bytes: r.len(),
        hit: true,
    })
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` without its line end (RFC 9110 §14.4).
fn content_range<'a>(first: &'a Decimal, last: &'a Decimal, total: &'a Decimal) -> [&'a [u8]; 6] {
    [
        b"Content-Range: bytes ",
        first.as_bytes(),
        b"-",
        last.as_bytes(),
        b"/",
        total.as_bytes(),
    ]
}

/// The content coding to send: negotiated among those the entry holds (RFC 9110 §12.5.3), or
/// identity when it holds only one.
fn choose_coding(entry: &Entry, headers: &[httparse::Header<'_>]) -> Coding {
    if entry.variants.len() <= 1 {
        return Coding::Identity;
    }
    let mut list = [Coding::Identity; 3];
    let mut n = 0usize;
    for c in [Coding::Identity, Coding::Gzip, Coding::Br] {
        if entry.codings().any(|x| x == c)
            && let Some(slot) = list.get_mut(n)
        {
            *slot = c;
            n = n.saturating_add(1);
        }
    }
    negotiate(
        values(headers, "accept-encoding"),
        list.get(..n).unwrap_or_default(),
    )
}

/// `multipart/byteranges` (RFC 9110 §14.6) for two or more ranges; `head` gives the status,
/// date and connection line.
fn multipart(
    v: &Variant,
    ranges: &[ByteRange],
    total: &Decimal,
    policy: &[u8],
    head: ResponseHead<'_>,
    out: &mut Output,
) -> Result<Served, OutOfMemory> {
    // The boundary comes from the entity-tag, which is a hash of the body: it cannot collide with
    // the body by accident.
    let tag = v
        .etag
        .get(1..v.etag.len().saturating_sub(1))
        .unwrap_or_default();
    let mut boundary = [0u8; 32];
    let prefix = b"khttp-";
    let blen = prefix.len().saturating_add(tag.len()).min(boundary.len());
    for (slot, b) in boundary.iter_mut().zip(prefix.iter().chain(tag.iter())) {
        *slot = *b;
    }
    let boundary = boundary.get(..blen).unwrap_or_default();
    let part_len = |r: &ByteRange| -> u64 {
        let fixed = 4 + 2 + 21 + 1 + 1 + 4; // "\r\n--" "\r\n" "Content-Range: bytes " "-" "/" "\r\n\r\n"
        [
            fixed,
            boundary.len(),
            v.content_type.len(),
            Decimal::new(r.first).as_bytes().len(),
            Decimal::new(r.last).as_bytes().len(),
            total.as_bytes().len(),
        ]
        .iter()
        .map(|&n| u64::try_from(n).unwrap_or(u64::MAX))
        .fold(r.len(), u64::saturating_add)
    };
    let closing = u64::try_from(boundary.len().saturating_add(8)).unwrap_or(u64::MAX);
    let body_len = ranges
        .iter()
        .map(part_len)
        .fold(closing, u64::saturating_add);
    ResponseHead {
        fields: &[
            &v.validators,
            policy,
            b"Content-Type: multipart/byteranges; boundary=",
            boundary,
            b"\r\n",
            &v.other,
        ],
        length: Some(body_len),
        ..head
    }
    .write(out)?;
    for r in ranges {
        let (first, last) = (Decimal::new(r.first), Decimal::new(r.last));
        let range = content_range(&first, &last, total);
        let part: [&[u8]; 4] = [b"\r\n--", boundary, b"\r\n", &v.content_type];
        out.put_groups(&[&part, &range, &[b"\r\n\r\n"]])?;
        out.body(
            &v.body,
            to_usize(r.first),
            to_usize(r.last).saturating_add(1),
        )?;
    }
    out.put(&[b"\r\n--", boundary, b"--\r\n"])?;
    Ok(Served {
        status: 206,
        body_bytes: body_len,
        hit: true,
    })
}
