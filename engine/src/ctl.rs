//! The control dispatcher (DESIGN §2, §6): decoded command → site change → encoded reply.
//!
//! This is the single function behind both control transports: khttpd's Unix-socket handler and
//! the driver's `EvtIoDeviceControl`. The transport authenticates the caller (SO_PEERCRED, the
//! device SDDL) and owns concurrency: it passes a private clone of the current [`Site`] and
//! publishes it if [`Dispatched::changed`] says so, persisting configuration first when
//! [`Dispatched::persist`] is set.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use khttp_proto::{
    Command, PutEntry, Request, Status, TableWriter, Value, decode_request, error_reply,
};

use crate::cache::EntrySpec;
use crate::error::CtlError;
use crate::limits::Limits;
use crate::mem::{self, StackText};
use crate::site::Site;
use crate::time::Instant;

/// What a dispatch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// The reply status.
    pub status: Status,
    /// The site was changed: publish it.
    pub changed: bool,
    /// Reservations, the IP listen list or limits changed: persist before publishing.
    pub persist: bool,
}

/// Reply bytes reserved before a command runs: enough for any error reply, whose messages are
/// static and short, so that a failure can always be reported.
const ERROR_REPLY_ROOM: usize = 512;

/// The engine's version, reported by `version`.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

impl From<CtlError> for Status {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::InvalidPrefix(_) => Self::InvalidPrefix,
            CtlError::AlreadyExists => Self::AlreadyExists,
            CtlError::NotFound => Self::NotFound,
            CtlError::NoReservation => Self::NoReservation,
            CtlError::EntryTooLarge => Self::EntryTooLarge,
            CtlError::CacheFull => Self::CacheFull,
            CtlError::InvalidHeader => Self::InvalidHeader,
            CtlError::InvalidContentType => Self::InvalidContentType,
            CtlError::InvalidStatus => Self::InvalidStatus,
            CtlError::UnknownLimit => Self::UnknownLimit,
            CtlError::InvalidLimitValue => Self::InvalidLimitValue,
            CtlError::InvalidAddress => Self::InvalidAddress,
            CtlError::AddressExists => Self::AddressExists,
            CtlError::OutOfMemory => Self::OutOfMemory,
        }
    }
}

/// Ends a reply table; the only way it can fail is out of memory.
fn finish(t: TableWriter<'_>) -> Result<(), CtlError> {
    t.finish().map_err(|_| CtlError::OutOfMemory)
}

/// Copies `direct[start..start + len]` into a new, fallibly allocated vector.
fn take_body(direct: &[u8], start: &mut usize, len: u64) -> Result<Vec<u8>, CtlError> {
    let len = usize::try_from(len).map_err(|_| CtlError::EntryTooLarge)?;
    let end = start.checked_add(len).ok_or(CtlError::EntryTooLarge)?;
    let src = direct.get(*start..end).ok_or(CtlError::EntryTooLarge)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| CtlError::OutOfMemory)?;
    v.extend_from_slice(src);
    *start = end;
    Ok(v)
}

fn put(
    site: &mut Site,
    p: &PutEntry<'_>,
    direct: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    // Refuse over-large bodies before copying them.
    let total = p.direct_len().ok_or(CtlError::EntryTooLarge)?;
    if total > site.limits().cache_max_entry_bytes {
        return Err(CtlError::EntryTooLarge);
    }
    let mut at = 0usize;
    let body = take_body(direct, &mut at, p.identity_len)?;
    let gzip = p
        .gzip_len
        .map(|n| take_body(direct, &mut at, n))
        .transpose()?;
    let br = p
        .br_len
        .map(|n| take_body(direct, &mut at, n))
        .transpose()?;
    let spec = EntrySpec {
        status: p.status,
        content_type: p.content_type,
        body,
        last_modified: p.last_modified,
        ttl_secs: p.ttl,
        headers: &p.headers,
        gzip,
        br,
    };
    let done = site.put(p.url, spec, now)?;
    let mut t = TableWriter::new(out, 2);
    t.row(&[Value::U64(u64::from(done.replaced)), Value::U64(done.bytes)]);
    finish(t)
}

fn list_entries(
    site: &Site,
    prefix: Option<&str>,
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    let filter = prefix.map(crate::route::parse_url).transpose()?;
    let mut rows: Vec<(String, &crate::cache::Entry)> = Vec::new();
    rows.try_reserve_exact(site.cache().len())
        .map_err(|_| CtlError::OutOfMemory)?;
    for (_, _, e) in site.cache().iter() {
        let under = filter
            .as_ref()
            .is_none_or(|p| crate::site::url_under(&e.url, p));
        if under && !e.is_expired(now) {
            mem::push(&mut rows, (e.url.to_text()?, &**e))?;
        }
    }
    // Unstable sorting allocates nothing (URLs are unique, so the order is the same).
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut t = TableWriter::new(out, 8);
    for (url, e) in &rows {
        let mut codings = StackText::<16>::new();
        for c in e.codings().skip(1) {
            let sep = if codings.as_str().is_empty() { "" } else { "," };
            let _ = write!(codings, "{sep}{}", c.token());
        }
        let ttl_left = e
            .expires
            .map_or(u64::MAX, |x| x.millis_since(now).div_ceil(1000));
        t.row(&[
            Value::Str(url),
            Value::U64(u64::from(e.status)),
            Value::Str(&e.content_type),
            Value::U64(e.identity_len()),
            Value::Str(codings.as_str()),
            Value::U64(e.hit_count()),
            Value::U64(ttl_left),
            Value::U64(e.last_modified.unwrap_or(u64::MAX)),
        ]);
    }
    finish(t)
}

fn apply(
    site: &mut Site,
    req: &Request<'_>,
    direct: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    match req {
        Request::Version => {
            let mut t = TableWriter::new(out, 2);
            t.row(&[
                Value::U64(u64::from(khttp_proto::PROTOCOL_VERSION)),
                Value::Str(ENGINE_VERSION),
            ]);
            finish(t)?;
        }
        Request::UrlaclAdd { prefix, acl } => {
            site.reserve(prefix, *acl)?;
        }
        Request::UrlaclDelete { prefix } => {
            site.unreserve(prefix)?;
        }
        Request::UrlaclList => {
            let mut t = TableWriter::new(out, 2);
            for r in site.namespace().iter() {
                t.row(&[
                    Value::Str(&r.prefix.to_text()?),
                    Value::Str(r.acl.as_deref().unwrap_or("")),
                ]);
            }
            finish(t)?;
        }
        Request::IplistenAdd { addr } => {
            site.iplisten_add(addr)?;
        }
        Request::IplistenDelete { addr } => {
            site.iplisten_delete(addr)?;
        }
        Request::IplistenList => {
            let mut t = TableWriter::new(out, 1);
            for ip in site.iplisten() {
                let mut text = StackText::<64>::new();
                let _ = write!(text, "{ip}");
                t.row(&[Value::Str(text.as_str())]);
            }
            finish(t)?;
        }
        Request::CachePut(p) => put(site, p, direct, now, out)?,
        Request::CacheDelete { url } => {
            site.delete(url)?;
        }
        Request::CacheFlush { prefix } => {
            let n = site.flush(*prefix)?;
            let mut t = TableWriter::new(out, 1);
            t.row(&[Value::U64(u64::try_from(n).unwrap_or(u64::MAX))]);
            finish(t)?;
        }
        Request::CacheList { prefix } => list_entries(site, *prefix, now, out)?,
        Request::Stats => {
            let [requests, hits, misses, not_modified, errors, body_bytes] =
                site.stats().snapshot();
            let counters: [(&str, u64); 9] = [
                ("requests", requests),
                ("cache-hits", hits),
                ("cache-misses", misses),
                ("not-modified", not_modified),
                ("errors", errors),
                ("body-bytes", body_bytes),
                (
                    "cache-entries",
                    u64::try_from(site.cache().len()).unwrap_or(u64::MAX),
                ),
                ("cache-bytes", site.cache().bytes()),
                (
                    "reservations",
                    u64::try_from(site.namespace().len()).unwrap_or(u64::MAX),
                ),
            ];
            let mut t = TableWriter::new(out, 2);
            for (name, v) in counters {
                t.row(&[Value::Str(name), Value::U64(v)]);
            }
            finish(t)?;
        }
        Request::LimitsGet => {
            let mut t = TableWriter::new(out, 4);
            for name in Limits::names() {
                let v = site.limits().get(name).unwrap_or(0);
                let (min, max) = Limits::range(name).unwrap_or((0, 0));
                t.row(&[
                    Value::Str(name),
                    Value::U64(v),
                    Value::U64(min),
                    Value::U64(max),
                ]);
            }
            finish(t)?;
        }
        Request::LimitsSet { name, value } => {
            site.set_limit(name, *value)?;
        }
    }
    Ok(())
}

/// Decodes and applies one control request to `site` (the caller's private clone), writing the
/// reply into `out` (cleared first). `output_cap` is the most reply bytes the caller accepts;
/// a larger reply becomes [`Status::BufferTooSmall`] with a header-only reply giving the size.
pub fn dispatch(
    site: &mut Site,
    code: u32,
    input: &[u8],
    direct: &[u8],
    output_cap: usize,
    now: Instant,
    out: &mut Vec<u8>,
) -> Dispatched {
    out.clear();
    let fail = |status: Status| Dispatched {
        status,
        changed: false,
        persist: false,
    };
    // Room for any error reply up front, so that reporting a failure never needs memory.
    if out.try_reserve(ERROR_REPLY_ROOM).is_err() {
        return fail(Status::OutOfMemory);
    }
    let refuse = |out: &mut Vec<u8>, status: Status, message: &str| {
        out.clear();
        let _ = error_reply(out, message);
        fail(status)
    };
    let Some(command) = Command::from_code(code) else {
        return refuse(
            out,
            Status::UnknownCommand,
            Status::UnknownCommand.message(),
        );
    };
    let req = match decode_request(command, input, direct.len()) {
        Ok(r) => r,
        Err(e) => return refuse(out, e.status(), e.message()),
    };
    let result = match apply(site, &req, direct, now, out) {
        Ok(()) => {
            if out.is_empty() {
                // Commands with nothing to report answer with an empty table.
                let _ = TableWriter::new(out, 0).finish();
            }
            Dispatched {
                status: Status::Ok,
                changed: command.changes_state(),
                persist: command.changes_config(),
            }
        }
        Err(e) => return refuse(out, Status::from(e), e.message()),
    };
    if out.len() > output_cap {
        let needed = u32::try_from(out.len()).unwrap_or(u32::MAX);
        out.clear();
        out.extend_from_slice(&khttp_proto::PROTOCOL_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&needed.to_le_bytes());
        return fail(Status::BufferTooSmall);
    }
    result
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use khttp_proto::{PutEntry, Request, Status, Value, decode_reply, encode_request};

    use super::dispatch;
    use crate::site::Site;
    use crate::time::Instant;

    fn call(site: &mut Site, req: &Request<'_>, direct: &[u8]) -> (Status, Vec<Vec<String>>) {
        let mut input = Vec::new();
        let code = encode_request(req, &mut input);
        let mut out = Vec::new();
        let d = dispatch(site, code, &input, direct, 1 << 20, Instant(0), &mut out);
        let rows = decode_reply(&out)
            .unwrap()
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v {
                        Value::U64(n) => alloc::format!("{n}"),
                        Value::Str(s) => s.into(),
                    })
                    .collect()
            })
            .collect();
        (d.status, rows)
    }

    use alloc::string::String;

    #[test]
    fn end_to_end_through_the_wire_format() {
        let mut s = Site::new();
        let (st, rows) = call(
            &mut s,
            &Request::UrlaclAdd {
                prefix: "http://+:8080/",
                acl: None,
            },
            &[],
        );
        assert_eq!((st, rows.len()), (Status::Ok, 0));
        let (st, rows) = call(
            &mut s,
            &Request::UrlaclAdd {
                prefix: "http://+:8080/",
                acl: None,
            },
            &[],
        );
        assert_eq!(st, Status::AlreadyExists);
        assert_eq!(rows[0][0], "the URL prefix is already reserved");
        let (st, rows) = call(
            &mut s,
            &Request::UrlaclAdd {
                prefix: "https://+:443/",
                acl: None,
            },
            &[],
        );
        assert_eq!(st, Status::InvalidPrefix);
        assert!(rows[0][0].contains("https"));
        let put = PutEntry {
            url: "http://+:8080/a.txt",
            content_type: "text/plain",
            status: 0,
            ttl: None,
            last_modified: Some(0),
            headers: alloc::vec!["X-A: b"],
            identity_len: 5,
            gzip_len: Some(2),
            br_len: None,
        };
        let (st, rows) = call(&mut s, &Request::CachePut(put.clone()), b"helloGZ");
        assert_eq!(
            (st, rows[0][0].as_str(), rows[0][1].as_str()),
            (Status::Ok, "0", "7")
        );
        let (st, rows) = call(&mut s, &Request::CacheList { prefix: None }, &[]);
        assert_eq!(st, Status::Ok);
        assert_eq!(
            rows[0][..5],
            ["http://+:8080/a.txt", "200", "text/plain", "5", "gzip"]
        );
        let (st, _) = call(&mut s, &Request::CachePut(put), b"hello");
        assert_eq!(st, Status::Malformed, "direct length mismatch");
        let (st, rows) = call(
            &mut s,
            &Request::LimitsSet {
                name: "max-headers",
                value: 0,
            },
            &[],
        );
        assert_eq!(
            (st, rows[0][0].as_str()),
            (Status::InvalidLimitValue, "limit value out of range")
        );
        let (st, rows) = call(&mut s, &Request::Stats, &[]);
        assert_eq!(st, Status::Ok);
        assert!(rows.iter().any(|r| r[0] == "cache-entries" && r[1] == "1"));
    }

    #[test]
    fn unknown_codes_and_small_buffers() {
        let mut s = Site::new();
        let mut out = Vec::new();
        let d = dispatch(&mut s, 0xDEAD_BEEF, &[], &[], 100, Instant(0), &mut out);
        assert_eq!(d.status, Status::UnknownCommand);
        let mut input = Vec::new();
        let code = encode_request(&Request::LimitsGet, &mut input);
        let d = dispatch(&mut s, code, &input, &[], 16, Instant(0), &mut out);
        assert_eq!(d.status, Status::BufferTooSmall);
        assert_eq!(out.len(), 8);
        let needed = u32::from_le_bytes(out[4..8].try_into().unwrap());
        assert!(needed > 16);
        let d = dispatch(
            &mut s,
            code,
            &input,
            &[],
            needed as usize,
            Instant(0),
            &mut out,
        );
        assert_eq!(d.status, Status::Ok);
    }
}
