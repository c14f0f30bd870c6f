//! The http.sys URL namespace: reservations and routing (docs/http-semantics.md).
//!
//! Routing (win32 `urlprefix-strings.md`, `routing-incoming-requests.md`):
//! 1. search the host buckets in the order strong `+`, explicit host name, IP-bound, weak `*`;
//! 2. inside a bucket the longest *complete* path match wins (prefixes end with `/`, so
//!    `/dir/sna/` does not match `/dir/app.htm`);
//! 3. the first bucket with a match wins; lower buckets are never consulted;
//! 4. no match anywhere is 400.
//!
//! Scheme and port must match exactly; host and path compare case-insensitively. A port serves
//! one scheme: its listener either speaks TLS (`https://` reservations) or does not, so a
//! reservation of the other scheme on a port already reserved is refused. (http.sys decides a
//! port's scheme by whether a certificate is bound to it; here the reservations say, and the
//! certificate is looked up per handshake.) Conflicts are detected per host category: `http://adatum.com:80/vroot/` and
//! `http://+:80/vroot/` may both be reserved.
//!
//! Decision on an open point (docs/http-semantics.md, "Decisions on open points"): a request for
//! `/vroot` does **not** route to `/vroot/`; it is not a complete match, exactly as
//! `/dir/app.htm` is not one for `/dir/sna/`.

mod canon;
mod prefix;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::IpAddr;

pub use canon::canonicalize;
pub(crate) use canon::names_the_same;
pub(crate) use prefix::{Bucket, HostSpec, Prefix};
pub use prefix::{parse_prefix, parse_url};

pub(crate) use crate::error::CanonError;

use crate::error::{CtlError, OutOfMemory, PrefixError};

/// The local end of a connection: the address and port it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// The local IP address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub ip: IpAddr,
    /// The local TCP port.
    pub port: u16,
}

/// One reserved URL prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Stable while the reservation exists; cache entries hang off it.
    pub id: u32,
    /// The parsed prefix.
    pub prefix: Prefix,
    /// Who may register under it (`--user` or `--sddl`), as given.
    pub acl: Option<Box<str>>,
    /// Its freshness policy (issue #13): the `Cache-Control` line its entries are served with
    /// when they have none of their own, e.g. `Cache-Control: max-age=60\r\n`.
    pub cache_control: Option<Box<[u8]>>,
}

impl Reservation {
    /// Its freshness policy's `Cache-Control` value, if it has one.
    #[must_use]
    pub fn cache_control_value(&self) -> Option<&str> {
        let line = core::str::from_utf8(self.cache_control.as_deref()?).ok()?;
        Some(line.strip_prefix("Cache-Control: ")?.trim_end())
    }
}

/// Every reservation, with routing.
#[derive(Clone, Debug, Default)]
pub struct Namespace {
    list: Vec<Reservation>,
    next_id: u32,
}

/// `path` starts with `prefix`, ASCII case-insensitively.
fn starts_with_ignore_case(path: &[u8], prefix: &[u8]) -> bool {
    path.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Strips `:port` and a trailing dot from a Host value; keeps brackets off IPv6 literals.
fn host_name(host: &[u8]) -> &[u8] {
    let name = if host.first() == Some(&b'[') {
        let end = host.iter().position(|&b| b == b']').unwrap_or(host.len());
        host.get(..end.saturating_add(1)).unwrap_or(host)
    } else {
        let end = host.iter().position(|&b| b == b':').unwrap_or(host.len());
        host.get(..end).unwrap_or(host)
    };
    name.strip_suffix(b".").unwrap_or(name)
}

impl Namespace {
    /// An empty namespace.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            list: Vec::new(),
            next_id: 1,
        }
    }

    /// A copy, allocated fallibly.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        let mut list = Vec::new();
        list.try_reserve_exact(self.list.len())?;
        for r in &self.list {
            list.push(Reservation {
                id: r.id,
                prefix: r.prefix.try_clone()?,
                acl: r.acl.as_deref().map(crate::mem::boxed_str).transpose()?,
                cache_control: r
                    .cache_control
                    .as_deref()
                    .map(crate::mem::boxed)
                    .transpose()?,
            });
        }
        Ok(Self {
            list,
            next_id: self.next_id,
        })
    }

    /// Reserves `prefix`.
    ///
    /// # Errors
    /// [`CtlError::AlreadyExists`] if the same host, port and path are reserved (per host
    /// category, case-insensitively); [`PrefixError::SchemeConflict`] if the port serves the
    /// other scheme; [`CtlError::OutOfMemory`].
    pub fn add(&mut self, prefix: Prefix, acl: Option<Box<str>>) -> Result<u32, CtlError> {
        if self.list.iter().any(|r| r.prefix == prefix) {
            return Err(CtlError::AlreadyExists);
        }
        if self
            .list
            .iter()
            .any(|r| r.prefix.port == prefix.port && r.prefix.secure != prefix.secure)
        {
            return Err(PrefixError::SchemeConflict.into());
        }
        self.list.try_reserve(1).map_err(OutOfMemory::from)?;
        // Ids are never 0 and never shared by two live reservations. After 2^32 reservations
        // they wrap, skipping those in use: a deleted reservation's entries are gone with it,
        // so its id is free.
        let mut id = self.next_id;
        while id == 0 || self.list.iter().any(|r| r.id == id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.list.push(Reservation {
            id,
            prefix,
            acl,
            cache_control: None,
        });
        Ok(id)
    }

    /// The id of the reservation of exactly `prefix`.
    #[must_use]
    pub fn id_of(&self, prefix: &Prefix) -> Option<u32> {
        self.list.iter().find(|r| r.prefix == *prefix).map(|r| r.id)
    }

    /// Sets the freshness policy of the reservation of exactly `prefix` (`None`: none).
    ///
    /// # Errors
    /// [`CtlError::NotFound`] if it is not reserved.
    pub fn set_policy(
        &mut self,
        prefix: &Prefix,
        cache_control: Option<Box<[u8]>>,
    ) -> Result<(), CtlError> {
        let r = self
            .list
            .iter_mut()
            .find(|r| r.prefix == *prefix)
            .ok_or(CtlError::NotFound)?;
        r.cache_control = cache_control;
        Ok(())
    }

    /// Removes the reservation of exactly `prefix`.
    ///
    /// # Errors
    /// [`CtlError::NotFound`] if it is not reserved.
    pub fn remove(&mut self, prefix: &Prefix) -> Result<Reservation, CtlError> {
        let i = self
            .list
            .iter()
            .position(|r| r.prefix == *prefix)
            .ok_or(CtlError::NotFound)?;
        Ok(self.list.remove(i))
    }

    /// Every reservation, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Reservation> {
        self.list.iter()
    }

    /// The reservation with this id.
    #[must_use]
    pub fn by_id(&self, id: u32) -> Option<&Reservation> {
        self.list.iter().find(|r| r.id == id)
    }

    /// Number of reservations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing is reserved.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The reservation a cache URL belongs to: same host specifier and port, longest complete
    /// path match. Returns it and the part of the URL's path below it (the cache key).
    #[must_use]
    pub fn covering<'u>(&self, url: &'u Prefix) -> Option<(&Reservation, &'u [u8])> {
        let path = url.path.as_bytes();
        let best = self
            .list
            .iter()
            .filter(|r| {
                r.prefix.host == url.host
                    && r.prefix.port == url.port
                    && r.prefix.secure == url.secure
            })
            .filter(|r| starts_with_ignore_case(path, r.prefix.path.as_bytes()))
            .max_by_key(|r| r.prefix.path.len())?;
        Some((best, path.get(best.prefix.path.len()..).unwrap_or_default()))
    }

    /// Routes a request: `host` is the request's host (Host header or absolute-form authority,
    /// port allowed), `path` the canonical path. Returns the reservation and the path below it.
    #[must_use]
    pub fn route<'p>(
        &self,
        local: Local,
        host: &[u8],
        path: &'p [u8],
    ) -> Option<(&Reservation, &'p [u8])> {
        let host = host_name(host);
        let local_ip = normalize_ip(local.ip);
        for bucket in [
            Bucket::Strong,
            Bucket::Explicit,
            Bucket::IpBound,
            Bucket::Weak,
        ] {
            let best = self
                .list
                .iter()
                .filter(|r| r.prefix.port == local.port && r.prefix.host.bucket() == bucket)
                .filter(|r| match &r.prefix.host {
                    HostSpec::Strong | HostSpec::Weak => true,
                    HostSpec::Name(name) => host.eq_ignore_ascii_case(name.as_bytes()),
                    HostSpec::Ip(ip) => normalize_ip(*ip) == local_ip,
                })
                .filter(|r| starts_with_ignore_case(path, r.prefix.path.as_bytes()))
                .max_by_key(|r| r.prefix.path.len());
            if let Some(r) = best {
                return Some((r, path.get(r.prefix.path.len()..).unwrap_or_default()));
            }
        }
        None
    }

    /// Whether `port` serves https (its reservations are `https://`).
    #[must_use]
    pub fn secure(&self, port: u16) -> bool {
        self.list
            .iter()
            .any(|r| r.prefix.port == port && r.prefix.secure)
    }

    /// The distinct ports that reservations name, ascending.
    #[must_use]
    ///
    /// `None` when memory ran out (fallible: the driver asks at every configuration change).
    pub fn ports(&self) -> Option<Vec<u16>> {
        let mut ports: Vec<u16> = Vec::new();
        ports.try_reserve_exact(self.list.len()).ok()?;
        ports.extend(self.list.iter().map(|r| r.prefix.port));
        ports.sort_unstable();
        ports.dedup();
        Some(ports)
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};

    use super::{Local, Namespace, parse_prefix};
    use crate::error::CtlError;

    /// Ids wrap after 2^32 reservations without colliding with one in use, and are never 0.
    #[test]
    fn reservation_ids_wrap_around_those_in_use() {
        let mut n = ns(&["http://+:80/a/"]);
        let a = n.iter().next().unwrap().id;
        n.next_id = u32::MAX;
        let b = n
            .add(parse_prefix("http://+:80/b/").unwrap(), None)
            .unwrap();
        assert_eq!(b, u32::MAX);
        let c = n
            .add(parse_prefix("http://+:80/c/").unwrap(), None)
            .unwrap();
        assert_eq!((a, c), (1, 2), "0 and 1 (in use) are skipped");
    }

    fn ns(prefixes: &[&str]) -> Namespace {
        let mut ns = Namespace::new();
        for p in prefixes {
            ns.add(parse_prefix(p).unwrap(), None).unwrap();
        }
        ns
    }

    const L80: Local = Local {
        ip: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)),
        port: 80,
    };

    fn routed(ns: &Namespace, host: &str, path: &str) -> Option<alloc::string::String> {
        ns.route(L80, host.as_bytes(), path.as_bytes())
            .map(|(r, rel)| alloc::format!("{}|{}", r.prefix, core::str::from_utf8(rel).unwrap()))
    }

    /// The longest-match example of Microsoft Learn's "UrlPrefix Strings".
    #[test]
    fn longest_complete_match() {
        let ns = ns(&[
            "http://www.adatum.com:80/",
            "http://www.adatum.com:80/dir/sna/",
        ]);
        let h = "www.adatum.com";
        assert_eq!(
            routed(&ns, h, "/default.htm").unwrap(),
            "http://www.adatum.com:80/|default.htm"
        );
        assert_eq!(
            routed(&ns, h, "/dir/sna/snadefault.htm").unwrap(),
            "http://www.adatum.com:80/dir/sna/|snadefault.htm"
        );
        assert_eq!(
            routed(&ns, h, "/dir/app.htm").unwrap(),
            "http://www.adatum.com:80/|dir/app.htm"
        );
        // Not a complete match: /dir/sna without the slash goes to the shorter prefix.
        assert_eq!(
            routed(&ns, h, "/dir/sna").unwrap(),
            "http://www.adatum.com:80/|dir/sna"
        );
    }

    /// routing-incoming-requests.md: strong beats explicit beats weak.
    #[test]
    fn cross_bucket() {
        let ns = ns(&[
            "http://+:80/vroot/",
            "http://adatum.com:80/",
            "http://*:80/",
        ]);
        assert!(
            routed(&ns, "adatum.com", "/vroot/subdir/file.htm")
                .unwrap()
                .starts_with("http://+:80/vroot/|")
        );
        assert!(
            routed(&ns, "adatum.com:80", "/default.htm")
                .unwrap()
                .starts_with("http://adatum.com:80/|")
        );
        assert!(
            routed(&ns, "ADATUM.COM.", "/default.htm")
                .unwrap()
                .starts_with("http://adatum.com:80/|")
        );
        assert!(
            routed(&ns, "otheradatum.com", "/file.htm")
                .unwrap()
                .starts_with("http://*:80/|")
        );
    }

    /// Shadowing: the explicit bucket matches, so the weak wildcard is never consulted.
    #[test]
    fn first_bucket_wins_even_without_a_path_match() {
        let ns = ns(&["http://*:80/vroot/", "http://adatum.com:80/other/"]);
        // adatum.com matches the explicit bucket's host but not its path: explicit has no match,
        // so the weak bucket is consulted for the path.
        assert!(
            routed(&ns, "adatum.com", "/vroot/file.htm")
                .unwrap()
                .starts_with("http://*:80/vroot/")
        );
        let ns = super::tests::ns(&["http://*:80/vroot/", "http://adatum.com:80/"]);
        assert!(
            routed(&ns, "adatum.com", "/vroot/file.htm")
                .unwrap()
                .starts_with("http://adatum.com:80/|")
        );
    }

    #[test]
    fn ip_bound_bucket_matches_the_local_address() {
        let ns = ns(&["http://192.168.0.10:80/", "http://*:80/"]);
        assert!(
            routed(&ns, "anything", "/x")
                .unwrap()
                .starts_with("http://192.168.0.10:80/")
        );
        let other = Local {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 80,
        };
        let (r, _) = ns.route(other, b"anything", b"/x").unwrap();
        assert_eq!(r.prefix.to_text().unwrap(), "http://*:80/");
    }

    #[test]
    fn port_and_case() {
        let ns = ns(&["http://+:8080/VRoot/"]);
        assert!(routed(&ns, "h", "/vroot/a").is_none(), "wrong port");
        let l = Local { port: 8080, ..L80 };
        let (_, rel) = ns.route(l, b"h", b"/VROOT/A.html").unwrap();
        assert_eq!(rel, b"A.html");
        assert!(ns.route(l, b"h", b"/other/").is_none());
    }

    /// A port serves one scheme: its reservations say which, a reservation of the other is
    /// refused, and a cache URL belongs only to a reservation of its own scheme.
    #[test]
    fn a_port_serves_one_scheme() {
        let mut ns = ns(&["https://+:8443/", "http://+:8080/"]);
        assert!(ns.secure(8443) && !ns.secure(8080) && !ns.secure(9));
        for (prefix, port) in [
            ("http://a.example:8443/x/", 8443),
            ("https://+:8080/y/", 8080),
        ] {
            assert_eq!(
                ns.add(parse_prefix(prefix).unwrap(), None),
                Err(CtlError::InvalidPrefix(
                    crate::error::PrefixError::SchemeConflict
                )),
                "{port}"
            );
        }
        ns.add(parse_prefix("https://a.example:8443/x/").unwrap(), None)
            .unwrap();
        let https = crate::route::parse_url("https://+:8443/a.html").unwrap();
        assert_eq!(ns.covering(&https).unwrap().1, b"a.html");
        let http = crate::route::parse_url("http://+:8443/a.html").unwrap();
        assert!(ns.covering(&http).is_none(), "a URL of the other scheme");
        assert_eq!(https.to_text().unwrap(), "https://+:8443/a.html");
    }

    /// Conflicts are per host category (Microsoft Learn, "UrlPrefix Strings").
    #[test]
    fn reservation_examples() {
        let mut ns = Namespace::new();
        ns.add(
            parse_prefix("http://+:80/vroot/subdir/").unwrap(),
            Some("A".into()),
        )
        .unwrap();
        ns.add(parse_prefix("http://adatum.com:80/vroot/").unwrap(), None)
            .unwrap();
        ns.add(
            parse_prefix("http://adatum.com:80/vroot/subdir/otherdir/").unwrap(),
            None,
        )
        .unwrap();
        ns.add(
            parse_prefix("http://+:80/vroot/subdir/otherdir/").unwrap(),
            None,
        )
        .unwrap();
        // Example 6: the same prefix again fails, also when written in another case.
        assert_eq!(
            ns.add(parse_prefix("http://+:80/vroot/subdir/").unwrap(), None),
            Err(CtlError::AlreadyExists)
        );
        assert_eq!(
            ns.add(parse_prefix("http://+:80/VROOT/SubDir/").unwrap(), None),
            Err(CtlError::AlreadyExists)
        );
        assert_eq!(
            ns.remove(&parse_prefix("http://+:81/vroot/").unwrap()),
            Err(CtlError::NotFound)
        );
        assert!(
            ns.remove(&parse_prefix("http://+:80/vroot/subdir/").unwrap())
                .is_ok()
        );
        assert_eq!(ns.len(), 3);
        assert_eq!(ns.ports().unwrap(), [80]);
    }

    #[test]
    fn covering_picks_longest_same_host() {
        let ns = ns(&["http://+:80/", "http://+:80/a/", "http://*:80/a/b/"]);
        let url = super::parse_url("http://+:80/a/b/c.html").unwrap();
        let (r, rel) = ns.covering(&url).unwrap();
        assert_eq!(
            (r.prefix.to_text().unwrap().as_str(), rel),
            ("http://+:80/a/", &b"b/c.html"[..])
        );
        assert!(
            ns.covering(&super::parse_url("http://+:81/a").unwrap())
                .is_none()
        );
    }
}
