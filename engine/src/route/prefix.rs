//! UrlPrefix strings: `scheme://host:port/relativeURI` (Microsoft Learn, "UrlPrefix Strings";
//! docs/http-semantics.md, "UrlPrefix grammar").
//!
//! ```text
//! prefix = ("http://" / "https://") host ":" port path   ; scheme lowercase only
//! host   = "+" / "*" / dns-name / IPv4address / "[" IPv6address "]"   ; case-insensitive
//! port   = %x31-39 *4DIGIT                      ; 1..=65535, no leading zero, no wildcard
//! path   = "/" *( segment "/" )                 ; a reservation's path must end with "/"
//! ```
//!
//! The same grammar, without the trailing-slash rule and with a concrete path, names cache URLs
//! (`http://+:8080/a.html`). Paths are canonicalised like request paths and must already be in
//! canonical form, so that what an administrator writes is what requests match.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use core::fmt::Write;

use super::canon::canonicalize;
use crate::error::{CanonError, OutOfMemory, PrefixError};
use crate::limits::MAX_PREFIX_LEN;
use crate::mem;

/// Which http.sys host category a prefix belongs to, in routing order ("UrlPrefix Strings").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// `+`: every host name.
    Strong,
    /// A DNS name compared with the request's host.
    Explicit,
    /// An IP literal: requests arriving on that local address.
    IpBound,
    /// `*`: whatever the others did not take.
    Weak,
}

/// The host part of a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostSpec {
    /// `+`
    Strong,
    /// `*`
    Weak,
    /// A DNS name, stored lower-case without a trailing dot.
    Name(Box<str>),
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
}

impl HostSpec {
    /// The routing bucket of this host.
    #[must_use]
    pub const fn bucket(&self) -> Bucket {
        match self {
            Self::Strong => Bucket::Strong,
            Self::Name(_) => Bucket::Explicit,
            Self::Ip(_) => Bucket::IpBound,
            Self::Weak => Bucket::Weak,
        }
    }
}

/// A parsed URL prefix (or cache URL).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// `https://`: the port's listener speaks TLS (a port serves one scheme; see
    /// `Namespace::add`).
    pub secure: bool,
    /// The host category and value.
    pub host: HostSpec,
    /// The TCP port.
    pub port: u16,
    /// The canonical path, lower-cased (paths compare case-insensitively). Starts with `/`.
    pub path: Box<str>,
}

impl Prefix {
    /// The prefix in its normal written form, e.g. `http://+:8080/vroot/` (as [`Display`]
    /// writes it), in a string allocated fallibly.
    ///
    /// [`Display`]: core::fmt::Display
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn to_text(&self) -> Result<String, OutOfMemory> {
        /// Counts what would be written.
        struct Len(usize);
        impl Write for Len {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                self.0 = self.0.saturating_add(s.len());
                Ok(())
            }
        }
        let mut len = Len(0);
        let _ = write!(len, "{self}");
        let mut s = String::new();
        s.try_reserve_exact(len.0)?;
        // Within the reserved capacity: no allocation.
        let _ = write!(s, "{self}");
        Ok(s)
    }
}

impl Prefix {
    /// A copy, allocated fallibly.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        Ok(Self {
            secure: self.secure,
            host: match &self.host {
                HostSpec::Name(n) => HostSpec::Name(mem::boxed_str(n)?),
                h => h.clone(),
            },
            port: self.port,
            path: mem::boxed_str(&self.path)?,
        })
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.secure { "https://" } else { "http://" })?;
        match &self.host {
            HostSpec::Strong => f.write_str("+")?,
            HostSpec::Weak => f.write_str("*")?,
            HostSpec::Name(n) => f.write_str(n)?,
            HostSpec::Ip(IpAddr::V4(a)) => write!(f, "{a}")?,
            HostSpec::Ip(IpAddr::V6(a)) => write!(f, "[{a}]")?,
        }
        write!(f, ":{}{}", self.port, self.path)
    }
}

/// RFC 1123 host name: labels of letters, digits and hyphens, 1..=63 each, 253 in all.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_port(s: &str) -> Result<u16, PrefixError> {
    if s.is_empty() {
        return Err(PrefixError::MissingPort);
    }
    if s.starts_with('0') || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PrefixError::InvalidPort);
    }
    s.parse::<u16>().map_err(|_| PrefixError::InvalidPort)
}

fn parse_host(s: &str) -> Result<HostSpec, PrefixError> {
    match s {
        "" => Err(PrefixError::MissingHost),
        "+" => Ok(HostSpec::Strong),
        "*" => Ok(HostSpec::Weak),
        _ => {
            if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                return inner
                    .parse::<Ipv6Addr>()
                    .map(|a| HostSpec::Ip(IpAddr::V6(a)))
                    .map_err(|_| PrefixError::InvalidHost);
            }
            if let Ok(a) = s.parse::<Ipv4Addr>() {
                return Ok(HostSpec::Ip(IpAddr::V4(a)));
            }
            // A name that looks numeric but is not an IPv4 literal ("1.2.3") is refused: it would
            // route differently on different resolvers.
            let all_numeric = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if all_numeric || !is_dns_name(s) {
                return Err(PrefixError::InvalidHost);
            }
            let mut lower = mem::string_from(s.strip_suffix('.').unwrap_or(s))?;
            lower.make_ascii_lowercase();
            Ok(HostSpec::Name(lower.into_boxed_str()))
        }
    }
}

/// Parses `http://host:port/path`, with the path canonical; `reservation` also needs a trailing
/// `/`.
fn parse(s: &str, reservation: bool) -> Result<Prefix, PrefixError> {
    if s.len() > MAX_PREFIX_LEN {
        return Err(PrefixError::TooLong);
    }
    let (secure, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(PrefixError::Scheme),
    };
    if rest.contains(['?', '#']) {
        return Err(PrefixError::QueryNotAllowed);
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // The port is after the last ':' outside brackets.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority.get(i..).is_some_and(|t| t.contains(']')) => (
            authority.get(..i).unwrap_or(""),
            authority.get(i.saturating_add(1)..).unwrap_or(""),
        ),
        _ => {
            parse_host(authority)?;
            return Err(PrefixError::MissingPort);
        }
    };
    let host = parse_host(host)?;
    let port = parse_port(port)?;
    if path.is_empty() {
        return Err(PrefixError::MissingPath);
    }
    if reservation && !path.ends_with('/') {
        return Err(PrefixError::NoTrailingSlash);
    }
    let mut scratch = (Vec::new(), Vec::new());
    let cooked = canonicalize(path.as_bytes(), &mut scratch).map_err(|e| match e {
        CanonError::OutOfMemory => PrefixError::OutOfMemory,
        e => PrefixError::InvalidPath(e),
    })?;
    if cooked != path.as_bytes() {
        return Err(PrefixError::NotCanonical);
    }
    Ok(Prefix {
        secure,
        host,
        port,
        path: mem::boxed_str(path)?,
    })
}

/// Parses a URL prefix for a reservation; the path is lower-cased (it matches case-insensitively).
///
/// # Errors
/// [`PrefixError`] naming the fault.
pub fn parse_prefix(s: &str) -> Result<Prefix, PrefixError> {
    let mut p = parse(s, true)?;
    p.path = lower_keeping_escapes(core::mem::take(&mut p.path));
    Ok(p)
}

/// Lower-cases a canonical path except the hex digits of `%XX` escapes, which stay upper-case
/// so that the result is still canonical (found by fuzzing: `%C0` had become `%c0`). In place:
/// it allocates nothing.
fn lower_keeping_escapes(path: Box<str>) -> Box<str> {
    let mut bytes = path.into_string().into_bytes();
    let mut hex_left = 0u8;
    for b in &mut bytes {
        if hex_left > 0 {
            hex_left = hex_left.saturating_sub(1);
        } else {
            if *b == b'%' {
                hex_left = 2;
            }
            b.make_ascii_lowercase();
        }
    }
    // Only ASCII letters changed, so the bytes are still UTF-8.
    String::from_utf8(bytes)
        .unwrap_or_default()
        .into_boxed_str()
}

/// Parses a cache URL (`http://+:8080/a.html`): the same grammar, any final segment, path case
/// kept (cache keys are case-sensitive below the reservation).
///
/// # Errors
/// [`PrefixError`] naming the fault.
pub fn parse_url(s: &str) -> Result<Prefix, PrefixError> {
    parse(s, false)
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{HostSpec, PrefixError, parse_prefix, parse_url};
    use crate::error::CanonError;

    #[test]
    fn valid_prefixes() {
        let p = parse_prefix("http://www.Adatum.com:80/VRoot/").unwrap();
        assert_eq!(p.host, HostSpec::Name("www.adatum.com".into()));
        assert_eq!((p.port, &*p.path), (80, "/vroot/"));
        assert_eq!(
            parse_prefix("http://+:80/vroot/").unwrap().host,
            HostSpec::Strong
        );
        assert_eq!(parse_prefix("http://*:8080/").unwrap().host, HostSpec::Weak);
        assert_eq!(
            parse_prefix("http://192.168.0.10:80/").unwrap().host,
            HostSpec::Ip(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)))
        );
        assert_eq!(
            parse_prefix("http://[::1]:65535/a/b/").unwrap().host,
            HostSpec::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(parse_prefix("http://+:1/").unwrap().port, 1);
        // Escapes keep upper-case hex, so the prefix prints back to itself (a fuzzer finding).
        let p = parse_prefix("http://p:9//P:0t%C0psh..0ps:/").unwrap();
        assert_eq!(&*p.path, "//p:0t%C0psh..0ps:/");
        assert_eq!(parse_prefix(&p.to_text().unwrap()), Ok(p));
        assert_eq!(
            parse_prefix("http://[::1]:8080/")
                .unwrap()
                .to_text()
                .unwrap(),
            "http://[::1]:8080/"
        );
    }

    #[test]
    fn invalid_prefixes_name_the_fault() {
        for (s, e) in [
            ("HTTP://+:80/", PrefixError::Scheme),
            ("ftp://+:80/", PrefixError::Scheme),
            ("HTTPS://+:443/", PrefixError::Scheme),
            ("https:/+:443/", PrefixError::Scheme),
            ("http://:80/", PrefixError::MissingHost),
            ("http://+/", PrefixError::MissingPort),
            ("http://+:/", PrefixError::MissingPort),
            ("http://+:080/", PrefixError::InvalidPort),
            ("http://+:0/", PrefixError::InvalidPort),
            ("http://+:65536/", PrefixError::InvalidPort),
            ("http://+:*/", PrefixError::InvalidPort),
            ("http://+:80", PrefixError::MissingPath),
            ("http://+:80/vroot", PrefixError::NoTrailingSlash),
            ("http://+:80/a?b/", PrefixError::QueryNotAllowed),
            ("http://a_b:80/", PrefixError::InvalidHost),
            ("http://1.2.3:80/", PrefixError::InvalidHost),
            ("http://[zz]:80/", PrefixError::InvalidHost),
            ("http://user@host:80/", PrefixError::InvalidHost),
            ("http://+:80/a/../", PrefixError::NotCanonical),
            ("http://+:80/%7e/", PrefixError::NotCanonical),
            (
                "http://+:80/../",
                PrefixError::InvalidPath(CanonError::AboveRoot),
            ),
        ] {
            assert_eq!(parse_prefix(s), Err(e), "{s}");
        }
    }

    #[test]
    fn cache_urls_keep_case_and_need_no_slash() {
        let u = parse_url("http://+:8080/Docs/A.html").unwrap();
        assert_eq!(&*u.path, "/Docs/A.html");
    }
}
