//! List-valued request fields the cache acts on: entity-tag lists (RFC 9110 §8.8.3, §13.1.1–2),
//! `Accept-Encoding` (§12.5.3), `Range` (§14.1–14.2).
//!
//! Every parser here is total: any bytes give an answer, never a panic, and a malformed element
//! is skipped or makes the whole field ignored, as the RFC directs for that field. The
//! CVE-2021-31166 input (`Accept-Encoding: doar-e, ftw, imo, ,`) is just a list of unknown codings.
//! All range arithmetic is checked (MS15-034).

use super::request::list_elements;
use crate::limits::MAX_RANGES;

/// An entity-tag: `[W/] DQUOTE *etagc DQUOTE`, returned as (weak, opaque-tag with quotes).
fn parse_etag(s: &[u8]) -> Option<(bool, &[u8])> {
    let (weak, tag) = match s.strip_prefix(b"W/") {
        Some(t) => (true, t),
        None => (false, s),
    };
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // etagc = %x21 / %x23-7E / obs-text
    inner
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80)
        .then_some((weak, tag))
}

/// Entity-tag lists split on commas, which cannot occur inside an entity-tag.
fn etags(value: &[u8]) -> impl Iterator<Item = Option<(bool, &[u8])>> {
    list_elements(value).map(parse_etag)
}

/// `If-None-Match` (§13.1.2): true when any element weakly matches `etag` (a strong tag
/// `"…"`), or is `*`. Malformed elements never match.
#[must_use]
pub(crate) fn none_match_hits<'a>(values: impl Iterator<Item = &'a [u8]>, etag: &[u8]) -> bool {
    values
        .into_iter()
        .any(|v| v.trim_ascii() == b"*" || etags(v).any(|t| t.is_some_and(|(_, tag)| tag == etag)))
}

/// `If-Match` (§13.1.1): true when any element strongly matches `etag`, or is `*`.
#[must_use]
pub(crate) fn match_hits<'a>(values: impl Iterator<Item = &'a [u8]>, etag: &[u8]) -> bool {
    values.into_iter().any(|v| {
        v.trim_ascii() == b"*"
            || etags(v).any(|t| t.is_some_and(|(weak, tag)| !weak && tag == etag))
    })
}

/// `If-Range` holding an entity-tag: a strong comparison (§13.1.5).
#[must_use]
pub(crate) fn if_range_etag_matches(value: &[u8], etag: &[u8]) -> bool {
    parse_etag(value.trim_ascii()).is_some_and(|(weak, tag)| !weak && tag == etag)
}

/// Content codings a cache entry may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Coding {
    /// No coding.
    Identity,
    /// gzip (also `x-gzip`).
    Gzip,
    /// Brotli.
    Br,
}

impl Coding {
    /// The token as written in `Content-Encoding`.
    #[must_use]
    pub const fn token(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Br => "br",
        }
    }
}

/// A q-value (§12.4.2) in thousandths: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(s: &[u8]) -> Option<u16> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (s.get(..i)?, s.get(i.checked_add(1)?..)?),
        None => (s, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    let mut scale = 100u16;
    for &d in frac {
        thousandths =
            thousandths.checked_add(u16::from(d.wrapping_sub(b'0')).checked_mul(scale)?)?;
        scale /= 10;
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Splits `token *( OWS ";" OWS param )` and finds `q=`; `None` if the weight is malformed.
fn coding_and_weight(element: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = element.split(|&b| b == b';');
    let name = parts.next()?.trim_ascii();
    if name.is_empty() || !name.iter().all(|&b| super::is_tchar(b)) {
        return None;
    }
    let mut q = 1000;
    for p in parts {
        let p = p.trim_ascii();
        let (k, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (
                p.get(..i)?.trim_ascii(),
                p.get(i.checked_add(1)?..)?.trim_ascii(),
            ),
            None => return None,
        };
        if k.eq_ignore_ascii_case(b"q") {
            q = parse_qvalue(v)?;
        }
    }
    Some((name, q))
}

/// Picks the coding to send from those `available` (identity is always available), by the
/// client's `Accept-Encoding` values (§12.5.3): the highest q-value wins; on a tie the smaller
/// coding (br, then gzip, then identity). No field means identity. If the client refuses every
/// coding, identity is sent anyway (§12.5.3 allows it; the alternative is a useless 406).
#[must_use]
pub fn negotiate<'a>(
    values: impl Iterator<Item = &'a [u8]> + Clone,
    available: &[Coding],
) -> Coding {
    let mut any_field = false;
    let mut star: Option<u16> = None;
    let mut explicit: [Option<u16>; 3] = [None; 3];
    for v in values {
        any_field = true;
        for element in list_elements(v) {
            let Some((name, q)) = coding_and_weight(element) else {
                continue;
            };
            let slot = if name == b"*" {
                &mut star
            } else if name.eq_ignore_ascii_case(b"identity") {
                &mut explicit[0]
            } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
                &mut explicit[1]
            } else if name.eq_ignore_ascii_case(b"br") {
                &mut explicit[2]
            } else {
                continue;
            };
            // A coding listed twice keeps its highest weight.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    if !any_field {
        return Coding::Identity;
    }
    let weight = |c: Coding| -> u16 {
        let (i, default) = match c {
            // identity is acceptable unless excluded by `identity;q=0` or `*;q=0` (§12.5.3).
            Coding::Identity => (0, 1),
            Coding::Gzip => (1, 0),
            Coding::Br => (2, 0),
        };
        explicit
            .get(i)
            .copied()
            .flatten()
            .or(star)
            .unwrap_or(default)
    };
    let mut best = Coding::Identity;
    let mut best_q = weight(Coding::Identity);
    for &c in available {
        let q = weight(c);
        if q > 0 && (q > best_q || (q == best_q && c > best)) {
            best = c;
            best_q = q;
        }
    }
    best
}

/// One satisfiable byte range, inclusive of both ends, within a representation of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub first: u64,
    /// Last byte (inclusive), `first <= last < len`.
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes: `last - first + 1`, which cannot overflow because `last < len <= u64::MAX`.
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Always false: a satisfiable range has at least one byte.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` field asks for, against a representation of `len` bytes.
#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack for one request; boxing would allocate"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Ignore the field and send 200: malformed, another unit, overlapping or too many ranges.
    Ignore,
    /// No range is satisfiable: 416.
    Unsatisfiable,
    /// These ranges, in request order (`count` of them, at least 1).
    Ranges {
        /// The ranges; only the first `count` are meaningful.
        ranges: [ByteRange; MAX_RANGES],
        /// How many ranges, 1..=`MAX_RANGES`.
        count: usize,
    },
}

/// Parses digits into a u64, saturating at `u64::MAX` (a last-pos or suffix beyond the length
/// means "to the end"); `None` if not all digits.
fn parse_pos(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(acc.saturating_mul(10).saturating_add(u64::from(d)))
    })
}

/// `Range: bytes=…` (§14.1.1) against a representation of `len` bytes, with §14.2's rules:
/// unsatisfiable ranges are dropped; if none remain, 416.
#[must_use]
pub fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    let value = value.trim_ascii();
    let Some(set) = value
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case(b"bytes="))
        .and_then(|_| value.get(6..))
    else {
        return RangeRequest::Ignore;
    };
    let mut ranges = [ByteRange { first: 0, last: 0 }; MAX_RANGES];
    let mut count = 0usize;
    let mut any = false;
    for spec in list_elements(set) {
        any = true;
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return RangeRequest::Ignore;
        };
        let first = spec.get(..dash).unwrap_or_default().trim_ascii();
        let last = spec
            .get(dash.saturating_add(1)..)
            .unwrap_or_default()
            .trim_ascii();
        let range = if first.is_empty() {
            // suffix-range: the last n bytes.
            let Some(n) = parse_pos(last) else {
                return RangeRequest::Ignore;
            };
            if n == 0 || len == 0 {
                None
            } else {
                Some(ByteRange {
                    first: len.saturating_sub(n),
                    last: len.saturating_sub(1),
                })
            }
        } else {
            let Some(first) = parse_pos(first) else {
                return RangeRequest::Ignore;
            };
            let last = if last.is_empty() {
                u64::MAX
            } else {
                match parse_pos(last) {
                    Some(l) if l >= first => l,
                    _ => return RangeRequest::Ignore, // last < first is invalid syntax (§14.1.1)
                }
            };
            (first < len).then(|| ByteRange {
                first,
                last: last.min(len.saturating_sub(1)),
            })
        };
        let Some(range) = range else { continue };
        let Some(slot) = ranges.get_mut(count) else {
            return RangeRequest::Ignore; // too many: send the whole representation
        };
        *slot = range;
        count = count.saturating_add(1);
    }
    if !any {
        return RangeRequest::Ignore;
    }
    if count == 0 {
        return RangeRequest::Unsatisfiable;
    }
    // Overlapping ranges are answered with the whole representation (§14.2 allows ignoring).
    let used = ranges.get(..count).unwrap_or_default();
    for (i, a) in used.iter().enumerate() {
        for b in used.get(i.saturating_add(1)..).unwrap_or_default() {
            if a.first <= b.last && b.first <= a.last {
                return RangeRequest::Ignore;
            }
        }
    }
    RangeRequest::Ranges { ranges, count }
}

#[cfg(test)]
mod tests {
    use super::{
        ByteRange, Coding, RangeRequest, match_hits, negotiate, none_match_hits, parse_range,
    };

    const TAG: &[u8] = b"\"abc\"";

    #[test]
    fn if_none_match() {
        for (v, hit) in [
            (&b"\"abc\""[..], true),
            (b"W/\"abc\"", true),
            (b"\"x\", \"abc\"", true),
            (b"*", true),
            (b"\"x\"", false),
            (b"abc", false),
            (b"\"abc", false),
            (b"", false),
            (b", ,", false),
        ] {
            assert_eq!(none_match_hits([v].into_iter(), TAG), hit, "{v:?}");
        }
        assert!(
            none_match_hits([&b"\"x\""[..], b"\"abc\""].into_iter(), TAG),
            "across fields"
        );
        assert!(
            !match_hits([&b"W/\"abc\""[..]].into_iter(), TAG),
            "If-Match is strong"
        );
        assert!(match_hits([&b"\"abc\""[..]].into_iter(), TAG));
    }

    fn neg(v: &str) -> Coding {
        negotiate([v.as_bytes()].into_iter(), &[Coding::Gzip, Coding::Br])
    }

    #[test]
    fn accept_encoding() {
        assert_eq!(negotiate([].into_iter(), &[Coding::Gzip]), Coding::Identity);
        assert_eq!(neg("gzip"), Coding::Gzip);
        assert_eq!(neg("gzip, deflate, br"), Coding::Br);
        assert_eq!(neg("br;q=0.5, gzip;q=0.8"), Coding::Gzip);
        assert_eq!(neg("br;q=0, gzip;q=0"), Coding::Identity);
        assert_eq!(neg("*"), Coding::Br);
        assert_eq!(neg("*;q=0.1, identity"), Coding::Identity);
        assert_eq!(neg("identity"), Coding::Identity);
        assert_eq!(neg("x-gzip"), Coding::Gzip);
        assert_eq!(neg("GZIP ; Q=0.5"), Coding::Gzip);
        assert_eq!(neg(""), Coding::Identity);
        // CVE-2021-31166 and CVE-2022-21907 inputs: just unknown or malformed elements.
        assert_eq!(neg("doar-e, ftw, imo, ,"), Coding::Identity);
        assert_eq!(neg("AAAA,AAAA&AA&**AAAA**A,,****AAAAAA, *, ,"), Coding::Br);
        assert_eq!(neg("gzip;q=2"), Coding::Identity, "bad q skips the element");
        assert_eq!(neg("gzip;q=0.1234"), Coding::Identity);
        assert_eq!(neg("gzip;q"), Coding::Identity);
        assert_eq!(neg(";;;,;=,=;"), Coding::Identity);
        assert_eq!(
            negotiate([&b"gzip"[..]].into_iter(), &[]),
            Coding::Identity,
            "no variants"
        );
    }

    fn one(first: u64, last: u64) -> RangeRequest {
        let mut ranges = [ByteRange { first: 0, last: 0 }; super::MAX_RANGES];
        ranges[0] = ByteRange { first, last };
        RangeRequest::Ranges { ranges, count: 1 }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-4", 10), one(0, 4));
        assert_eq!(parse_range(b"bytes=5-", 10), one(5, 9));
        assert_eq!(parse_range(b"bytes=-3", 10), one(7, 9));
        assert_eq!(parse_range(b"bytes=-30", 10), one(0, 9));
        assert_eq!(parse_range(b"bytes=8-100", 10), one(8, 9));
        assert_eq!(parse_range(b"Bytes = 1-2", 10), RangeRequest::Ignore);
        assert_eq!(parse_range(b"BYTES=1-2", 10), one(1, 2));
        assert_eq!(parse_range(b"bytes=10-", 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=5-4", 10), RangeRequest::Ignore);
        assert_eq!(parse_range(b"bytes=a-b", 10), RangeRequest::Ignore);
        assert_eq!(parse_range(b"items=0-1", 10), RangeRequest::Ignore);
        assert_eq!(parse_range(b"bytes=", 10), RangeRequest::Ignore);
        assert_eq!(
            parse_range(b"bytes=0-1,1-2", 10),
            RangeRequest::Ignore,
            "overlap"
        );
        assert!(matches!(
            parse_range(b"bytes=0-1, 4-5,, 12-", 10),
            RangeRequest::Ranges { count: 2, .. }
        ));
        let many = alloc::format!(
            "bytes={}",
            (0..17)
                .map(|i| alloc::format!("{}-{}", i * 2, i * 2))
                .collect::<alloc::vec::Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_range(many.as_bytes(), 100), RangeRequest::Ignore);
    }

    /// MS15-034 (docs/http-semantics.md, "The http.sys CVE inputs"): the u64 edges never wrap.
    #[test]
    fn ms15_034_edges() {
        let len = 1000;
        assert_eq!(
            parse_range(b"bytes=0-18446744073709551615", len),
            one(0, 999)
        );
        assert_eq!(
            parse_range(b"bytes=18-18446744073709551615", len),
            one(18, 999)
        );
        assert_eq!(
            parse_range(b"bytes=18446744073709551615-", len),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(b"bytes=-18446744073709551615", len),
            one(0, 999)
        );
        assert_eq!(
            parse_range(b"bytes=0-99999999999999999999999", len),
            one(0, 999)
        );
        assert_eq!(
            parse_range(b"bytes=99999999999999999999999-", len),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(b"bytes=0-", len), one(0, 999));
        assert_eq!(parse_range(b"bytes=-0", len), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range(b"bytes=18-18446744073709551615", u64::MAX),
            one(18, u64::MAX - 1)
        );
        assert_eq!(one(0, u64::MAX - 1), parse_range(b"bytes=0-", u64::MAX));
        assert_eq!(
            ByteRange {
                first: 0,
                last: u64::MAX - 1
            }
            .len(),
            u64::MAX
        );
    }
}
