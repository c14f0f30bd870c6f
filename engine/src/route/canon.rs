//! Request-path canonicalisation (docs/http-semantics.md, "Path canonicalisation").
//!
//! The cooked path that routing and the cache see is the raw path with:
//! 1. percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2), other escapes kept with
//!    their hex digits upper-cased (§6.2.2.1);
//! 2. `%2F` decoded to `/` and `%5C` and `\` turned into `/`, as http.sys does ("defensively
//!    un-escapes %2F"; KB 896287), so an escaped separator can never hide a dot-segment;
//! 3. dot-segments removed (RFC 3986 §5.2.4), refusing any path that would climb above the root
//!    instead of clamping it;
//! 4. escapes of control characters refused (http.sys `AllowRestrictedChars` = 0), and segment
//!    length and count bounded (`UrlSegmentMaxLength` 260, `UrlSegmentMaxCount` 255).

use alloc::vec::Vec;

use crate::error::CanonError;
use crate::limits::{MAX_SEGMENT_LEN, MAX_SEGMENTS};

/// RFC 3986 §2.3: `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push(out: &mut Vec<u8>, b: u8) -> Result<(), CanonError> {
    out.try_reserve(1).map_err(|_| CanonError::OutOfMemory)?;
    out.push(b);
    Ok(())
}

/// Whether `raw` is already canonical, so the caller can use it without a copy.
fn is_simple(raw: &[u8]) -> bool {
    // Canonical unless it holds an escape, a backslash, or a `.`/`..` segment.
    let mut prev_slash = false;
    let mut iter = raw.iter().peekable();
    while let Some(&b) = iter.next() {
        match b {
            b'%' | b'\\' => return false,
            b'.' if prev_slash => {
                let next = iter.peek().copied().copied();
                let after_dot = if next == Some(b'.') {
                    // `..` then `/` or end.
                    let mut look = iter.clone();
                    look.next();
                    look.next().copied()
                } else {
                    next
                };
                if matches!(after_dot, None | Some(b'/')) {
                    return false;
                }
            }
            _ => {}
        }
        prev_slash = b == b'/';
    }
    true
}

fn check_chars(raw: &[u8]) -> Result<(), CanonError> {
    if raw
        .iter()
        .any(|&b| b <= b' ' || b == 0x7F || b == b'#' || b == b'?')
    {
        return Err(CanonError::BadChar);
    }
    Ok(())
}

fn check_segments(path: &[u8]) -> Result<(), CanonError> {
    let mut count = 0usize;
    for seg in path.split(|&b| b == b'/').skip(1) {
        if seg.len() > MAX_SEGMENT_LEN {
            return Err(CanonError::SegmentTooLong);
        }
        count = count.saturating_add(1);
        if count > MAX_SEGMENTS {
            return Err(CanonError::TooManySegments);
        }
    }
    Ok(())
}

/// Decodes escapes (steps 1, 2 and 4 of the module doc) into `out`, which is cleared first.
fn decode(raw: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    out.clear();
    out.try_reserve(raw.len())
        .map_err(|_| CanonError::OutOfMemory)?;
    let mut iter = raw.iter().copied();
    while let Some(b) = iter.next() {
        match b {
            b'%' => {
                let hi = iter.next().ok_or(CanonError::BadEscape)?;
                let lo = iter.next().ok_or(CanonError::BadEscape)?;
                let (h, l) = (
                    hex_value(hi).ok_or(CanonError::BadEscape)?,
                    hex_value(lo).ok_or(CanonError::BadEscape)?,
                );
                let v = (h << 4) | l;
                if v < 0x20 || v == 0x7F {
                    return Err(CanonError::RestrictedChar);
                }
                if is_unreserved(v) || v == b'/' || v == b'\\' {
                    push(out, if v == b'\\' { b'/' } else { v })?;
                } else {
                    push(out, b'%')?;
                    push(out, HEX_UPPER.get(usize::from(h)).copied().unwrap_or(b'0'))?;
                    push(out, HEX_UPPER.get(usize::from(l)).copied().unwrap_or(b'0'))?;
                }
            }
            b'\\' => push(out, b'/')?,
            _ => push(out, b)?,
        }
    }
    Ok(())
}

/// RFC 3986 §5.2.4 `remove_dot_segments` for an absolute path, refusing to climb above the root.
///
/// `input` starts with `/`. Output goes to `out` (cleared first).
fn remove_dot_segments(input: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    out.clear();
    out.try_reserve(input.len())
        .map_err(|_| CanonError::OutOfMemory)?;
    // Segments after the leading '/'. The last one being "." or ".." leaves a trailing '/'.
    let mut segs = input
        .get(1..)
        .unwrap_or_default()
        .split(|&b| b == b'/')
        .peekable();
    out.push(b'/');
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            b"." => {}
            b".." => {
                // Drop the last output segment: out is "/a/b/" -> "/a/".
                if out.len() <= 1 {
                    return Err(CanonError::AboveRoot);
                }
                out.pop(); // the trailing '/'
                let cut = out
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(0, |i| i.saturating_add(1));
                out.truncate(cut);
            }
            _ => {
                out.extend_from_slice(seg);
                if !last {
                    out.push(b'/');
                }
            }
        }
    }
    Ok(())
}

/// Canonicalises a request path (no query). Returns `raw` itself when it is already canonical,
/// otherwise the cooked copy built in `scratch`.
///
/// # Errors
/// [`CanonError`] naming the fault; the request gets 400.
pub fn canonicalize<'a>(
    raw: &'a [u8],
    scratch: &'a mut (Vec<u8>, Vec<u8>),
) -> Result<&'a [u8], CanonError> {
    if raw.first() != Some(&b'/') {
        return Err(CanonError::NotAbsolute);
    }
    check_chars(raw)?;
    if is_simple(raw) {
        check_segments(raw)?;
        return Ok(raw);
    }
    let (decoded, cooked) = scratch;
    decode(raw, decoded)?;
    remove_dot_segments(decoded, cooked)?;
    check_segments(cooked)?;
    Ok(cooked)
}

/// Whether `canonical`, [`canonicalize`]'s result for `raw`, names the same path as `raw` does
/// to anyone who reads it: they differ at most by escapes of unreserved characters and the case
/// of hex digits, which RFC 3986 §6.2.2 makes equivalent. False when canonicalisation turned an
/// escaped or back slash into a separator or removed a dot-segment: a server that reads the raw
/// path may then serve another resource than the canonical path names.
#[must_use]
pub(crate) fn names_the_same(raw: &[u8], canonical: &[u8]) -> bool {
    let mut out = canonical.iter().copied();
    let mut raw = raw.iter().copied();
    while let Some(b) = raw.next() {
        let same = match b {
            b'\\' => false,
            b'%' => {
                let digits = raw.next().zip(raw.next());
                let Some((h, l)) = digits.and_then(|(h, l)| hex_value(h).zip(hex_value(l))) else {
                    return false;
                };
                let v = (h << 4) | l;
                if is_unreserved(v) {
                    out.next() == Some(v)
                } else {
                    let upper = |d: u8| HEX_UPPER.get(usize::from(d)).copied();
                    v != b'/'
                        && v != b'\\'
                        && out.next() == Some(b'%')
                        && out.next() == upper(h)
                        && out.next() == upper(l)
                }
            }
            b => out.next() == Some(b),
        };
        if !same {
            return false;
        }
    }
    out.next().is_none()
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::{CanonError, canonicalize};

    macro_rules! canon {
        ($($raw:expr => $want:expr),* $(,)?) => {$({
            let mut scratch = (Vec::new(), Vec::new());
            let got = canonicalize($raw.as_bytes(), &mut scratch).map(|p| p.to_vec());
            let want: Result<&str, CanonError> = $want;
            assert_eq!(got, want.map(|s| s.as_bytes().to_vec()), "{}", $raw);
        })*};
    }

    #[test]
    fn table() {
        canon! {
            "/" => Ok("/"),
            "/index.html" => Ok("/index.html"),
            "/a/b/c/" => Ok("/a/b/c/"),
            "/a/./b" => Ok("/a/b"),
            "/a/../b" => Ok("/b"),
            "/a/b/.." => Ok("/a/"),
            "/a/b/." => Ok("/a/b/"),
            "/a/.hidden" => Ok("/a/.hidden"),
            "/a/..b/c" => Ok("/a/..b/c"),
            "/%7Euser/%41" => Ok("/~user/A"),
            "/a%20b" => Ok("/a%20b"),
            "/a%2fb" => Ok("/a/b"),
            "/a%3f" => Ok("/a%3F"),
            // KB 896287's two vectors.
            "/RootTest/SubDir\\LowerDir/" => Ok("/RootTest/SubDir/LowerDir/"),
            "/RootTest/SubDir1\\SubDir2/../../SubDir5/SubDir6" => Ok("/RootTest/SubDir5/SubDir6"),
            // aspnet/StaticFiles #90: %5C becomes '\' becomes '/', then dot-segments resolve.
            "/css%5C..%5Ccss%5Csite.min.css" => Ok("/css/site.min.css"),
            "/.." => Err(CanonError::AboveRoot),
            "/../etc/passwd" => Err(CanonError::AboveRoot),
            "/a/../../b" => Err(CanonError::AboveRoot),
            "/%2e%2e/etc/passwd" => Err(CanonError::AboveRoot),
            "/%2E%2E%5Cwindows" => Err(CanonError::AboveRoot),
            "/..%2f..%2fetc" => Err(CanonError::AboveRoot),
            "/a%00b" => Err(CanonError::RestrictedChar),
            "/a%1f" => Err(CanonError::RestrictedChar),
            "/a%7F" => Err(CanonError::RestrictedChar),
            "/a%" => Err(CanonError::BadEscape),
            "/a%4" => Err(CanonError::BadEscape),
            "/a%zz" => Err(CanonError::BadEscape),
            "a/b" => Err(CanonError::NotAbsolute),
            "" => Err(CanonError::NotAbsolute),
            "/a b" => Err(CanonError::BadChar),
            "/a#b" => Err(CanonError::BadChar),
        }
    }

    #[test]
    fn segment_limits() {
        let long = alloc::format!("/{}", "a".repeat(261));
        let mut s = (Vec::new(), Vec::new());
        assert_eq!(
            canonicalize(long.as_bytes(), &mut s),
            Err(CanonError::SegmentTooLong)
        );
        let many = "/a".repeat(256);
        assert_eq!(
            canonicalize(many.as_bytes(), &mut s),
            Err(CanonError::TooManySegments)
        );
        let ok = "/a".repeat(255);
        assert!(canonicalize(ok.as_bytes(), &mut s).is_ok());
    }

    #[test]
    fn names_the_same_only_for_equivalent_spellings() {
        use super::names_the_same;
        let mut s = (Vec::new(), Vec::new());
        for (raw, same) in [
            ("/a/b.html", true),
            ("/a/%7euser", true),
            ("/a/%7Euser%20x", true),
            ("/a/%e2%82%ac", true),
            ("/user/x%2F..%2F..%2F", false),
            ("/static/x%2F..%2F..%2Fuser%2Fadmin", false),
            ("/user/x%2f%2e%2e%2f", false),
            ("/a%5Cb", false),
            ("/a\\b", false),
            ("/a/./b", false),
            ("/a/b/../c", false),
            ("/a/%2e%2e/b", false),
            ("/a/%2E/b", false),
        ] {
            let canonical = canonicalize(raw.as_bytes(), &mut s).unwrap().to_vec();
            assert_eq!(names_the_same(raw.as_bytes(), &canonical), same, "{raw}");
        }
        assert!(!names_the_same(b"/a", b"/a/"));
        assert!(!names_the_same(b"/a%4", b"/a%4"));
    }
}
