//! Cache entries: a whole response (status, fields, body) and its pre-compressed variants, with
//! every header line that does not change per request formatted once, when the entry is put.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CtlError, OutOfMemory};
use crate::http1::fields::Coding;
use crate::http1::is_tchar;
use crate::mem;
use crate::mem::put;
use crate::route::Prefix;
use crate::time::{HttpDate, Instant};

/// What an administrator supplies to put an entry.
#[derive(Debug, Default)]
pub struct EntrySpec<'a> {
    /// Status code; 0 means 200.
    pub status: u16,
    /// `Content-Type`; empty means `application/octet-stream`.
    pub content_type: &'a str,
    /// The identity body.
    pub body: Vec<u8>,
    /// Last modification time (seconds since the Unix epoch), e.g. the file's mtime.
    pub last_modified: Option<u64>,
    /// Seconds until the entry expires; `None` keeps it until it is replaced or flushed.
    pub ttl_secs: Option<u64>,
    /// Extra `Name: value` fields.
    pub headers: &'a [&'a str],
    /// The gzip-coded body, if the administrator built one.
    pub gzip: Option<Vec<u8>>,
    /// The brotli-coded body, if the administrator built one.
    pub br: Option<Vec<u8>>,
    /// What the sender made it from, summed up ([`khttp_proto::PutEntry::digest`]).
    pub digest: Option<[u8; khttp_proto::DIGEST_LEN]>,
}

/// One representation of an entry.
#[derive(Debug)]
pub struct Variant {
    /// Its content coding.
    pub coding: Coding,
    /// Its bytes, shared with every response in flight.
    pub body: Arc<Vec<u8>>,
    /// Its strong entity-tag, quotes included.
    pub etag: Box<[u8]>,
    /// `ETag`, `Last-Modified`, `Cache-Control`, `Vary` lines: what a 304 repeats (RFC 9110 §15.4.5).
    pub validators: Box<[u8]>,
    /// The `Content-Type` line.
    pub content_type: Box<[u8]>,
    /// `Content-Encoding`, `Accept-Ranges` and the administrator's extra lines.
    pub other: Box<[u8]>,
}

/// A cached response.
#[derive(Debug)]
pub struct Entry {
    /// The URL it was put at.
    pub url: Prefix,
    /// The status code it is served with.
    pub status: u16,
    /// The content type.
    pub content_type: Box<str>,
    /// Last-Modified, seconds since the Unix epoch.
    pub last_modified: Option<u64>,
    /// When it stops being served.
    pub expires: Option<Instant>,
    /// Identity first, then the coded variants.
    pub variants: Vec<Variant>,
    /// Times it was served.
    pub hits: AtomicU64,
    /// It carries its own `Cache-Control` (its reservation's policy does not apply).
    pub own_cache_control: bool,
    /// The digest it was put with, listed for `khttpctl apply`.
    pub digest: Option<[u8; khttp_proto::DIGEST_LEN]>,
}

/// Fields the server sets itself, or that would change framing: the one list of fields a
/// header line may not set. All of them are refused in a cache entry's `--header`; the first
/// [`APP_RESERVED`] (framing and connection fields, `Date`, `Server`, and `Content-Type`, which
/// travels on its own) in an application's answer, which may set the representation's own
/// metadata (the last four).
const RESERVED_FIELDS: [&str; 15] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "date",
    "server",
    "content-type",
    // An application may set these; a cache entry's are the engine's.
    "content-encoding",
    "content-range",
    "etag",
    "last-modified",
];

/// How many of [`RESERVED_FIELDS`] an application's answer may not set.
const APP_RESERVED: usize = 11;

/// The fields an application's answer may not set.
const APP_RESERVED_FIELDS: &[&str] = RESERVED_FIELDS.split_at(APP_RESERVED).0;

/// Fields a 304 repeats (RFC 9110 §15.4.5).
const VALIDATOR_FIELDS: [&str; 3] = ["cache-control", "expires", "content-location"];

/// FNV-1a, 64-bit. Written here rather than taken from a crate: ten lines, and the ETag must stay
/// the same across builds and platforms, which a `Hasher` from a crate does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn etag_for(body: &[u8], coding: Coding) -> Result<Box<[u8]>, OutOfMemory> {
    let hash = fnv1a(body)
        ^ u64::try_from(body.len())
            .unwrap_or(u64::MAX)
            .rotate_left(32);
    // `"` + 16 hex digits + an optional `-gz`/`-br` + `"`.
    let mut tag = [b'"'; 21];
    for (slot, shift) in tag
        .iter_mut()
        .skip(1)
        .zip((0..16u32).rev().map(|i| i.saturating_mul(4)))
    {
        let nibble = hash.checked_shr(shift).unwrap_or(0) & 0xF;
        *slot = b"0123456789abcdef"
            .get(usize::try_from(nibble).unwrap_or(0))
            .copied()
            .unwrap_or(b'0');
    }
    let suffix: &[u8] = match coding {
        Coding::Identity => b"",
        Coding::Gzip => b"-gz",
        Coding::Br => b"-br",
    };
    let len = 18usize.saturating_add(suffix.len());
    if let Some(dst) = tag.get_mut(17..17usize.saturating_add(suffix.len())) {
        dst.copy_from_slice(suffix);
    }
    if let Some(last) = tag.get_mut(len.saturating_sub(1)) {
        *last = b'"';
    }
    mem::boxed(tag.get(..len).unwrap_or_default())
}

/// `v` as a box without a reallocation that could fail without telling: when `v` has spare
/// capacity, its bytes are copied into an exact, fallibly allocated box instead.
fn exact(v: Vec<u8>) -> Result<Box<[u8]>, OutOfMemory> {
    if v.capacity() == v.len() {
        Ok(v.into_boxed_slice())
    } else {
        mem::boxed(&v)
    }
}

/// RFC 9110 §5.5: `field-value = *field-content`; visible ASCII, SP, HTAB, obs-text; no CR/LF/NUL.
fn valid_value(v: &str) -> bool {
    v.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Splits and checks one `Name: value` line for a cache entry.
fn parse_header_line(line: &str) -> Result<(&str, &str), CtlError> {
    let (name, value) = parse_field(line, &RESERVED_FIELDS)?;
    if name.eq_ignore_ascii_case("vary") {
        return Err(CtlError::InvalidHeader);
    }
    Ok((name, value))
}

/// Splits and checks one `Name: value` line, refusing the `reserved` names.
fn parse_field<'l>(line: &'l str, reserved: &[&str]) -> Result<(&'l str, &'l str), CtlError> {
    let (name, value) = line.split_once(':').ok_or(CtlError::InvalidHeader)?;
    let value = value.trim_matches([' ', '\t']);
    if name.is_empty()
        || !name.bytes().all(is_tchar)
        || !valid_value(value)
        || reserved.iter().any(|r| name.eq_ignore_ascii_case(r))
    {
        return Err(CtlError::InvalidHeader);
    }
    Ok((name, value))
}

/// Whether a cache entry may carry the field `line` (`Name: value`) as it is.
pub(crate) fn entry_field_allowed(line: &str) -> bool {
    parse_header_line(line).is_ok()
}

/// Checks an application's `Name: value` lines and formats them as field lines; framing and
/// connection fields, and those the server sets itself, are refused.
///
/// # Errors
/// [`CtlError::InvalidHeader`], [`CtlError::OutOfMemory`].
pub(crate) fn header_lines(lines: &[&str]) -> Result<Vec<u8>, CtlError> {
    let mut out = Vec::new();
    for line in lines {
        let (name, value) = parse_field(line, APP_RESERVED_FIELDS)?;
        put(
            &mut out,
            &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"],
        )?;
    }
    Ok(out)
}

/// `Cache-Control: VALUE\r\n` for a freshness policy, checked.
///
/// # Errors
/// [`CtlError::InvalidHeader`] (empty, or not a field value), [`CtlError::OutOfMemory`].
pub(crate) fn cache_control_line(value: &str) -> Result<Box<[u8]>, CtlError> {
    let value = value.trim();
    if value.is_empty() || !valid_value(value) {
        return Err(CtlError::InvalidHeader);
    }
    let mut line = Vec::new();
    put(&mut line, &[b"Cache-Control: ", value.as_bytes(), b"\r\n"])?;
    Ok(exact(line)?)
}

/// A content type as the server sends it: checked, or `application/octet-stream` for none.
///
/// # Errors
/// [`CtlError::InvalidContentType`].
pub(crate) fn content_type_or_default(content_type: &str) -> Result<&str, CtlError> {
    let ct = if content_type.is_empty() {
        "application/octet-stream"
    } else {
        content_type
    };
    if !valid_value(ct) || ct.trim().is_empty() {
        return Err(CtlError::InvalidContentType);
    }
    Ok(ct)
}

/// A cache entry's `--header` lines, checked and sorted: those a 304 repeats, and the others.
fn sorted_fields(headers: &[&str]) -> Result<(Vec<u8>, Vec<u8>), CtlError> {
    let mut validator_lines: Vec<u8> = Vec::new();
    let mut other_lines: Vec<u8> = Vec::new();
    for line in headers {
        let (name, value) = parse_header_line(line)?;
        let target = if VALIDATOR_FIELDS
            .iter()
            .any(|v| name.eq_ignore_ascii_case(v))
        {
            &mut validator_lines
        } else {
            &mut other_lines
        };
        put(target, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"])?;
    }
    Ok((validator_lines, other_lines))
}

/// What every variant of an entry shares, for [`Common::variant`].
struct Common<'a> {
    status: u16,
    content_type: &'a str,
    last_modified: Option<HttpDate>,
    /// Field lines a 304 repeats.
    validators: &'a [u8],
    /// The other field lines.
    other: &'a [u8],
    /// The entry has coded variants: each says `Vary: Accept-Encoding`.
    vary: bool,
}

impl Common<'_> {
    /// The variant of `coding` holding `body`, with its pre-formatted field lines.
    fn variant(&self, coding: Coding, body: Vec<u8>) -> Result<Variant, CtlError> {
        let etag = etag_for(&body, coding)?;
        let mut validators = Vec::new();
        put(&mut validators, &[b"ETag: ", &etag, b"\r\n"])?;
        if let Some(lm) = &self.last_modified {
            put(
                &mut validators,
                &[b"Last-Modified: ", lm.as_bytes(), b"\r\n"],
            )?;
        }
        put(&mut validators, &[self.validators])?;
        if self.vary {
            put(&mut validators, &[b"Vary: Accept-Encoding\r\n"])?;
        }
        let mut ct = Vec::new();
        put(
            &mut ct,
            &[b"Content-Type: ", self.content_type.as_bytes(), b"\r\n"],
        )?;
        let mut other = Vec::new();
        if coding != Coding::Identity {
            put(
                &mut other,
                &[b"Content-Encoding: ", coding.token().as_bytes(), b"\r\n"],
            )?;
        }
        if self.status == 200 {
            put(&mut other, &[b"Accept-Ranges: bytes\r\n"])?;
        }
        put(&mut other, &[self.other])?;
        Ok(Variant {
            coding,
            body: mem::arc(body)?,
            etag,
            validators: exact(validators)?,
            content_type: exact(ct)?,
            other: exact(other)?,
        })
    }
}

impl Entry {
    /// Builds an entry for `url` from `spec` at `now` (for the TTL).
    ///
    /// # Errors
    /// [`CtlError::InvalidStatus`], [`CtlError::InvalidHeader`], [`CtlError::InvalidContentType`],
    /// [`CtlError::OutOfMemory`].
    pub fn build(url: Prefix, spec: EntrySpec<'_>, now: Instant) -> Result<Self, CtlError> {
        let status = if spec.status == 0 { 200 } else { spec.status };
        if !(200..=599).contains(&status) || matches!(status, 204 | 206 | 304) {
            return Err(CtlError::InvalidStatus);
        }
        let content_type = if spec.content_type.is_empty() {
            "application/octet-stream"
        } else {
            spec.content_type
        };
        if !valid_value(content_type) || content_type.trim().is_empty() {
            return Err(CtlError::InvalidContentType);
        }
        let own_cache_control = spec.headers.iter().any(|line| {
            line.split_once(':')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("cache-control"))
        });
        let (validator_lines, other_lines) = sorted_fields(spec.headers)?;
        let mut bodies: Vec<(Coding, Vec<u8>)> = Vec::new();
        bodies.try_reserve(3).map_err(OutOfMemory::from)?;
        let has_variants = spec.gzip.is_some() || spec.br.is_some();
        bodies.push((Coding::Identity, spec.body));
        if let Some(gz) = spec.gzip {
            bodies.push((Coding::Gzip, gz));
        }
        if let Some(br) = spec.br {
            bodies.push((Coding::Br, br));
        }
        let common = Common {
            status,
            content_type,
            last_modified: spec.last_modified.map(HttpDate::from_unix),
            validators: &validator_lines,
            other: &other_lines,
            vary: has_variants,
        };
        let mut variants = Vec::new();
        variants
            .try_reserve(bodies.len())
            .map_err(OutOfMemory::from)?;
        for (coding, body) in bodies {
            variants.push(common.variant(coding, body)?);
        }
        Ok(Self {
            url,
            status,
            content_type: mem::boxed_str(content_type)?,
            last_modified: spec.last_modified,
            expires: spec.ttl_secs.map(|ttl| now.add_secs(ttl)),
            variants,
            hits: AtomicU64::new(0),
            own_cache_control,
            digest: spec.digest,
        })
    }

    /// Bytes of all variants together, for the cache limits.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.variants
            .iter()
            .map(|v| u64::try_from(v.body.len()).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes of the identity body.
    #[must_use]
    pub fn identity_len(&self) -> u64 {
        self.variants
            .first()
            .map_or(0, |v| u64::try_from(v.body.len()).unwrap_or(u64::MAX))
    }

    /// Whether the entry has expired at `now`.
    #[must_use]
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// The codings other than identity this entry holds.
    pub fn codings(&self) -> impl Iterator<Item = Coding> + '_ {
        self.variants.iter().map(|v| v.coding)
    }

    /// The variant for `coding`, or identity.
    #[must_use]
    pub fn variant(&self, coding: Coding) -> Option<&Variant> {
        self.variants
            .iter()
            .find(|v| v.coding == coding)
            .or_else(|| self.variants.first())
    }

    /// Counts a hit.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Times served.
    #[must_use]
    pub fn hit_count(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, EntrySpec};
    use crate::error::CtlError;
    use crate::route::parse_url;
    use crate::time::Instant;

    fn build(spec: EntrySpec<'_>) -> Result<Entry, CtlError> {
        Entry::build(parse_url("http://+:80/a").unwrap(), spec, Instant(0))
    }

    #[test]
    fn validates_admin_input() {
        assert_eq!(
            build(EntrySpec {
                status: 304,
                ..Default::default()
            })
            .err(),
            Some(CtlError::InvalidStatus)
        );
        assert_eq!(
            build(EntrySpec {
                status: 199,
                ..Default::default()
            })
            .err(),
            Some(CtlError::InvalidStatus)
        );
        assert_eq!(
            build(EntrySpec {
                status: 600,
                ..Default::default()
            })
            .err(),
            Some(CtlError::InvalidStatus)
        );
        for bad in [
            "NoColon",
            "Content-Length: 5",
            "X Y: z",
            "X: a\r\nInjected: 1",
            "Vary: *",
            ": v",
        ] {
            let headers = [bad];
            assert_eq!(
                build(EntrySpec {
                    headers: &headers,
                    ..Default::default()
                })
                .err(),
                Some(CtlError::InvalidHeader),
                "{bad}"
            );
        }
        assert_eq!(
            build(EntrySpec {
                content_type: "text/html\r\nX: y",
                ..Default::default()
            })
            .err(),
            Some(CtlError::InvalidContentType)
        );
        let headers = ["Cache-Control: max-age=60", "X-Frame-Options: DENY"];
        let e = build(EntrySpec {
            headers: &headers,
            last_modified: Some(0),
            ..Default::default()
        })
        .unwrap();
        let v = &e.variants[0];
        assert!(
            v.validators
                .windows(26)
                .any(|w| w == b"Cache-Control: max-age=60\r")
        );
        assert!(v.other.windows(14).any(|w| w == b"X-Frame-Option"));
        assert_eq!(&*e.content_type, "application/octet-stream");
    }

    #[test]
    fn etags_differ_by_body_and_coding() {
        let e = build(EntrySpec {
            body: b"hello".to_vec(),
            gzip: Some(b"hello".to_vec()),
            ..Default::default()
        })
        .unwrap();
        assert_ne!(e.variants[0].etag, e.variants[1].etag);
        let f = build(EntrySpec {
            body: b"hellp".to_vec(),
            ..Default::default()
        })
        .unwrap();
        assert_ne!(e.variants[0].etag, f.variants[0].etag);
        assert_eq!(e.bytes(), 10);
    }
}
