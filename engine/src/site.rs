//! The site: reservations, the response cache, limits, the IP listen list and statistics.
//!
//! Concurrency shape (DESIGN §2): a `Site` is a value. Readers (connections) use a shared,
//! immutable `Arc<Site>`; a writer clones it (cheap: see [`crate::cache`]), applies one change and
//! publishes the clone. Readers never wait on a writer; the engine takes no locks — the glue owns
//! the pointer swap. Statistics are atomics shared by every snapshot.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cache::{Cache, Entry, EntrySpec};
use crate::error::{CtlError, OutOfMemory};
use crate::http1::request::MAX_HEADERS_CAP;
use crate::mem;
use crate::route::{Namespace, Prefix, Reservation, parse_prefix, parse_url};
use crate::time::Instant;

/// Limits and timeouts (DESIGN §5). Names are the CLI's (`khttpctl limits set NAME VALUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, bytes; over it: 431 (414 if the request line is the culprit).
    pub max_request_bytes: u32,
    /// One header field, bytes; over it: 431.
    pub max_field_length: u32,
    /// The request-target, bytes; over it: 414.
    pub max_url_length: u32,
    /// Header fields; over it: 431.
    pub max_headers: u32,
    /// Seconds for a whole request head (or body) to arrive; then close.
    pub header_timeout: u32,
    /// Seconds a keep-alive connection may sit idle; then close.
    pub idle_timeout: u32,
    /// Bytes per second a client must read at; 0 disables.
    pub min_send_rate: u32,
    /// Connections at once; beyond it new ones get 503 and a close.
    pub max_connections: u32,
    /// Total cache body bytes.
    pub cache_max_bytes: u64,
    /// One entry's body bytes (all variants).
    pub cache_max_entry_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16_384,
            max_field_length: 16_384,
            max_url_length: 16_384,
            max_headers: 100,
            header_timeout: 120,
            idle_timeout: 120,
            min_send_rate: 150,
            max_connections: 100_000,
            cache_max_bytes: 1 << 30,
            cache_max_entry_bytes: 256 << 20,
        }
    }
}

/// A limit's name, its allowed range, and its place in [`Limits`].
struct LimitDef {
    name: &'static str,
    min: u64,
    max: u64,
    get: fn(&Limits) -> u64,
    set: fn(&mut Limits, u64),
}

/// Every limit, in display order. Ranges follow http.sys's where it has one (KB 820129).
const LIMITS: [LimitDef; 10] = [
    LimitDef {
        name: "max-request-bytes",
        min: 256,
        max: 16_777_216,
        get: |l| u64::from(l.max_request_bytes),
        set: |l, v| l.max_request_bytes = narrow(v),
    },
    LimitDef {
        name: "max-field-length",
        min: 64,
        max: 65_534,
        get: |l| u64::from(l.max_field_length),
        set: |l, v| l.max_field_length = narrow(v),
    },
    LimitDef {
        name: "max-url-length",
        min: 64,
        max: 16_777_216,
        get: |l| u64::from(l.max_url_length),
        set: |l, v| l.max_url_length = narrow(v),
    },
    LimitDef {
        name: "max-headers",
        min: 1,
        max: MAX_HEADERS_CAP as u64,
        get: |l| u64::from(l.max_headers),
        set: |l, v| l.max_headers = narrow(v),
    },
    LimitDef {
        name: "header-timeout",
        min: 1,
        max: 86_400,
        get: |l| u64::from(l.header_timeout),
        set: |l, v| l.header_timeout = narrow(v),
    },
    LimitDef {
        name: "idle-timeout",
        min: 1,
        max: 86_400,
        get: |l| u64::from(l.idle_timeout),
        set: |l, v| l.idle_timeout = narrow(v),
    },
    LimitDef {
        name: "min-send-rate",
        min: 0,
        max: 1 << 30,
        get: |l| u64::from(l.min_send_rate),
        set: |l, v| l.min_send_rate = narrow(v),
    },
    LimitDef {
        name: "max-connections",
        min: 1,
        max: 10_000_000,
        get: |l| u64::from(l.max_connections),
        set: |l, v| l.max_connections = narrow(v),
    },
    LimitDef {
        name: "cache-max-bytes",
        min: 0,
        max: 1 << 44,
        get: |l| l.cache_max_bytes,
        set: |l, v| l.cache_max_bytes = v,
    },
    LimitDef {
        name: "cache-max-entry-bytes",
        min: 0,
        max: 1 << 40,
        get: |l| l.cache_max_entry_bytes,
        set: |l, v| l.cache_max_entry_bytes = v,
    },
];

/// Callers have range-checked `v` against a maximum that fits in u32.
fn narrow(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Limits {
    /// Every limit name, in display order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        LIMITS.iter().map(|d| d.name)
    }

    /// The value of the limit called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<u64> {
        LIMITS
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.get)(self))
    }

    /// Sets the limit called `name`.
    ///
    /// # Errors
    /// [`CtlError::UnknownLimit`], [`CtlError::InvalidLimitValue`] (out of range).
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), CtlError> {
        let def = LIMITS
            .iter()
            .find(|d| d.name == name)
            .ok_or(CtlError::UnknownLimit)?;
        if !(def.min..=def.max).contains(&value) {
            return Err(CtlError::InvalidLimitValue);
        }
        (def.set)(self, value);
        Ok(())
    }

    /// The allowed range of the limit called `name`.
    #[must_use]
    pub fn range(name: &str) -> Option<(u64, u64)> {
        LIMITS
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.min, d.max))
    }
}

/// Counters shared by every snapshot of a site.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests parsed (valid or not).
    pub requests: AtomicU64,
    /// Responses served from a cache entry (200, 206, 304, 412, 416).
    pub hits: AtomicU64,
    /// Requests routed to a reservation with no entry (404).
    pub misses: AtomicU64,
    /// 304 responses.
    pub not_modified: AtomicU64,
    /// Requests refused with a 4xx/5xx error (malformed, no reservation, limits).
    pub errors: AtomicU64,
    /// Body bytes queued for sending.
    pub body_bytes: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A plain copy of the counters.
    #[must_use]
    pub fn snapshot(&self) -> [u64; 6] {
        [
            self.requests.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.not_modified.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.body_bytes.load(Ordering::Relaxed),
        ]
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// Whether an entry was replaced.
    pub replaced: bool,
    /// Bytes of the new entry (all variants).
    pub bytes: u64,
}

/// Reservations, cache, limits, IP listen list, statistics.
#[derive(Clone, Debug, Default)]
pub struct Site {
    namespace: Namespace,
    cache: Cache,
    limits: Limits,
    iplisten: Vec<IpAddr>,
    stats: Arc<Stats>,
}

impl Site {
    /// An empty site with default limits.
    #[must_use]
    pub fn new() -> Self {
        Self {
            namespace: Namespace::new(),
            ..Self::default()
        }
    }

    /// The private copy a control command changes (DESIGN §2): the cache's shards and entries
    /// are shared, copy-on-write; everything is allocated fallibly, so that the driver can
    /// refuse a command rather than bugcheck when memory runs out.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        Ok(Self {
            namespace: self.namespace.try_clone()?,
            cache: self.cache.try_clone()?,
            limits: self.limits,
            iplisten: mem::vec_from(&self.iplisten)?,
            stats: Arc::clone(&self.stats),
        })
    }

    /// The reservations.
    #[must_use]
    pub const fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The cache.
    #[must_use]
    pub const fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The limits.
    #[must_use]
    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The IP listen list (empty: every address).
    #[must_use]
    pub fn iplisten(&self) -> &[IpAddr] {
        &self.iplisten
    }

    /// The addresses to listen on: every port a reservation names, on each IP-listen address,
    /// or on `wildcards` when the list is empty (DESIGN §7, http.sys's IP listen list).
    /// khttpd passes the IPv4 and IPv6 wildcards; the driver one dual-stack IPv6 wildcard.
    #[must_use]
    pub fn listen_addrs(&self, wildcards: &[IpAddr]) -> Vec<SocketAddr> {
        let ips = if self.iplisten.is_empty() {
            wildcards
        } else {
            &self.iplisten
        };
        self.namespace
            .ports()
            .into_iter()
            .flat_map(|port| ips.iter().map(move |ip| SocketAddr::new(*ip, port)))
            .collect()
    }

    /// The shared counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Reserves a URL prefix (`urlacl add`). `acl` is the `--user` or `--sddl` text.
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::AlreadyExists`], [`CtlError::OutOfMemory`].
    pub fn reserve(&mut self, prefix: &str, acl: Option<&str>) -> Result<&Reservation, CtlError> {
        let p = parse_prefix(prefix)?;
        let acl = acl.map(mem::boxed_str).transpose()?;
        let id = self.namespace.add(p, acl)?;
        self.namespace.by_id(id).ok_or(CtlError::NotFound)
    }

    /// Deletes a reservation and every cache entry under it (`urlacl delete`).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NotFound`].
    pub fn unreserve(&mut self, prefix: &str) -> Result<(), CtlError> {
        let p = parse_prefix(prefix)?;
        let id = self
            .namespace
            .iter()
            .find(|r| r.prefix == p)
            .ok_or(CtlError::NotFound)?
            .id;
        // Entries first: if that runs out of memory, the reservation is still there.
        self.cache.remove_where(|rid, _| rid == id)?;
        self.namespace.remove(&p)?;
        Ok(())
    }

    fn locate(&self, url: &str) -> Result<(Prefix, u32, Box<[u8]>), CtlError> {
        let u = parse_url(url)?;
        let (r, rel) = self.namespace.covering(&u).ok_or(CtlError::NoReservation)?;
        let (id, rel) = (r.id, mem::boxed(rel)?);
        Ok((u, id, rel))
    }

    /// Puts a cache entry at `url` (`cache put`), replacing any entry there.
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NoReservation`], [`CtlError::EntryTooLarge`],
    /// [`CtlError::CacheFull`], and the entry's own validation errors.
    pub fn put(
        &mut self,
        url: &str,
        spec: EntrySpec<'_>,
        now: Instant,
    ) -> Result<PutOutcome, CtlError> {
        let (u, id, rel) = self.locate(url)?;
        let entry = Entry::build(u, spec, now)?;
        let bytes = entry.bytes();
        if bytes > self.limits.cache_max_entry_bytes {
            return Err(CtlError::EntryTooLarge);
        }
        let replaced_bytes = self.cache.get(id, &rel).map_or(0, |e| e.bytes());
        let after = self
            .cache
            .bytes()
            .saturating_sub(replaced_bytes)
            .saturating_add(bytes);
        if after > self.limits.cache_max_bytes {
            return Err(CtlError::CacheFull);
        }
        let replaced = self.cache.insert(id, &rel, mem::arc(entry)?)?.is_some();
        Ok(PutOutcome { replaced, bytes })
    }

    /// Deletes the entry at `url` (`cache delete`).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NoReservation`], [`CtlError::NotFound`].
    pub fn delete(&mut self, url: &str) -> Result<(), CtlError> {
        let (_, id, rel) = self.locate(url)?;
        self.cache
            .remove(id, &rel)?
            .map(|_| ())
            .ok_or(CtlError::NotFound)
    }

    /// Removes every entry whose URL starts with `prefix`, or every entry (`cache flush`).
    /// Returns how many.
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`].
    pub fn flush(&mut self, prefix: Option<&str>) -> Result<usize, CtlError> {
        let Some(prefix) = prefix else {
            return Ok(self.cache.remove_where(|_, _| true)?);
        };
        let p = parse_url(prefix)?;
        Ok(self.cache.remove_where(|_, e| url_under(&e.url, &p))?)
    }

    /// When the next cache entry expires (`None`: no entry has a TTL). Both hosts' timers ask
    /// this, then [`Site::purge_expired`] when it has passed (DESIGN §4: expired entries are
    /// reclaimed). A scan of the entries.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.cache.iter().filter_map(|(_, _, e)| e.expires).min()
    }

    /// Removes expired entries; returns how many.
    ///
    /// Out of memory (copying shared shards) removes nothing: the next call tries again.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        self.cache.purge_expired(now).unwrap_or(0)
    }

    /// Sets a limit (`limits set`).
    ///
    /// # Errors
    /// See [`Limits::set`].
    pub fn set_limit(&mut self, name: &str, value: u64) -> Result<(), CtlError> {
        self.limits.set(name, value)
    }

    /// Adds an address to the IP listen list (`iplisten add`).
    ///
    /// # Errors
    /// [`CtlError::InvalidAddress`], [`CtlError::AddressExists`], [`CtlError::OutOfMemory`].
    pub fn iplisten_add(&mut self, addr: &str) -> Result<IpAddr, CtlError> {
        let ip = parse_ip(addr)?;
        if self.iplisten.contains(&ip) {
            return Err(CtlError::AddressExists);
        }
        self.iplisten.try_reserve(1).map_err(OutOfMemory::from)?;
        self.iplisten.push(ip);
        Ok(ip)
    }

    /// Removes an address from the IP listen list (`iplisten delete`).
    ///
    /// # Errors
    /// [`CtlError::InvalidAddress`], [`CtlError::NotFound`].
    pub fn iplisten_delete(&mut self, addr: &str) -> Result<(), CtlError> {
        let ip = parse_ip(addr)?;
        let i = self
            .iplisten
            .iter()
            .position(|a| *a == ip)
            .ok_or(CtlError::NotFound)?;
        self.iplisten.remove(i);
        Ok(())
    }
}

/// An IP literal, with or without brackets.
fn parse_ip(s: &str) -> Result<IpAddr, CtlError> {
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>().map_err(|_| CtlError::InvalidAddress)
}

/// Whether the entry URL `url` lies under `p` (same host specifier and port, path prefix).
pub(crate) fn url_under(url: &Prefix, p: &Prefix) -> bool {
    url.host == p.host
        && url.port == p.port
        && url
            .path
            .as_bytes()
            .get(..p.path.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p.path.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{Limits, Site};
    use crate::cache::EntrySpec;
    use crate::error::CtlError;
    use crate::route::PrefixError;
    use crate::time::Instant;

    fn spec(body: &[u8]) -> EntrySpec<'static> {
        EntrySpec {
            body: body.to_vec(),
            ..Default::default()
        }
    }

    /// The next expiry is the earliest TTL; purging at it reclaims that entry alone.
    #[test]
    fn next_expiry_and_purge() {
        let mut s = Site::new();
        s.reserve("http://+:80/", None).unwrap();
        s.put("http://+:80/forever", spec(b"f"), Instant(0))
            .unwrap();
        assert_eq!(s.next_expiry(), None);
        let ttl = |secs| EntrySpec {
            ttl_secs: Some(secs),
            ..spec(b"t")
        };
        s.put("http://+:80/a", ttl(5), Instant(1_000)).unwrap();
        s.put("http://+:80/b", ttl(2), Instant(1_000)).unwrap();
        assert_eq!(s.next_expiry(), Some(Instant(3_000)));
        assert_eq!(s.purge_expired(Instant(2_999)), 0);
        assert_eq!(s.purge_expired(Instant(3_000)), 1);
        assert_eq!(s.next_expiry(), Some(Instant(6_000)));
        assert_eq!(s.cache().len(), 2);
    }

    #[test]
    fn reserve_put_flush_delete() {
        let mut s = Site::new();
        assert_eq!(
            s.put("http://+:80/a", spec(b"x"), Instant(0)).err(),
            Some(CtlError::NoReservation)
        );
        s.reserve("http://+:80/", None).unwrap();
        s.reserve("http://+:80/docs/", Some("D:(A;;GX;;;WD)"))
            .unwrap();
        assert_eq!(
            s.reserve("http://+:80/docs/", None).err(),
            Some(CtlError::AlreadyExists)
        );
        assert_eq!(
            s.reserve("http://+:80/docs", None).err(),
            Some(CtlError::InvalidPrefix(PrefixError::NoTrailingSlash))
        );
        assert!(
            !s.put("http://+:80/a", spec(b"x"), Instant(0))
                .unwrap()
                .replaced
        );
        assert!(
            s.put("http://+:80/a", spec(b"xy"), Instant(0))
                .unwrap()
                .replaced
        );
        s.put("http://+:80/docs/b", spec(b"yy"), Instant(0))
            .unwrap();
        s.put("http://+:80/docs/c", spec(b"zz"), Instant(0))
            .unwrap();
        assert_eq!((s.cache().len(), s.cache().bytes()), (3, 6));
        assert_eq!(s.flush(Some("http://+:80/docs/")), Ok(2));
        assert_eq!(s.delete("http://+:80/a"), Ok(()));
        assert_eq!(s.delete("http://+:80/a"), Err(CtlError::NotFound));
        s.put("http://+:80/docs/b", spec(b"yy"), Instant(0))
            .unwrap();
        s.unreserve("http://+:80/docs/").unwrap();
        assert!(
            s.cache().is_empty(),
            "deleting a reservation drops its entries"
        );
        assert_eq!(s.unreserve("http://+:80/docs/"), Err(CtlError::NotFound));
    }

    #[test]
    fn cache_limits() {
        let mut s = Site::new();
        s.reserve("http://+:80/", None).unwrap();
        s.set_limit("cache-max-entry-bytes", 4).unwrap();
        s.set_limit("cache-max-bytes", 6).unwrap();
        assert_eq!(
            s.put("http://+:80/a", spec(b"12345"), Instant(0)).err(),
            Some(CtlError::EntryTooLarge)
        );
        s.put("http://+:80/a", spec(b"1234"), Instant(0)).unwrap();
        assert_eq!(
            s.put("http://+:80/b", spec(b"123"), Instant(0)).err(),
            Some(CtlError::CacheFull)
        );
        // Replacing counts the bytes freed.
        s.put("http://+:80/a", spec(b"123"), Instant(0)).unwrap();
        s.put("http://+:80/b", spec(b"123"), Instant(0)).unwrap();
        assert_eq!(s.cache().bytes(), 6);
    }

    #[test]
    fn limits_by_name() {
        let mut l = Limits::default();
        assert_eq!(l.get("max-headers"), Some(100));
        assert_eq!(l.set("max-headers", 0), Err(CtlError::InvalidLimitValue));
        assert_eq!(l.set("max-headers", 129), Err(CtlError::InvalidLimitValue));
        assert_eq!(l.set("nope", 1), Err(CtlError::UnknownLimit));
        l.set("idle-timeout", 5).unwrap();
        assert_eq!(l.idle_timeout, 5);
        assert_eq!(Limits::names().count(), 10);
    }

    #[test]
    fn listen_addresses_follow_reservations_and_the_ip_list() {
        use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let any = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        let mut s = Site::new();
        assert!(s.listen_addrs(&any).is_empty());
        s.reserve("http://+:8080/", None).unwrap();
        s.reserve("http://+:8080/a/", None).unwrap();
        s.reserve("http://x.example:9090/", None).unwrap();
        let text = |s: &Site| {
            s.listen_addrs(&any)
                .iter()
                .map(|a| alloc::format!("{a}"))
                .collect::<alloc::vec::Vec<_>>()
        };
        assert_eq!(
            text(&s),
            ["0.0.0.0:8080", "[::]:8080", "0.0.0.0:9090", "[::]:9090"]
        );
        s.iplisten_add("127.0.0.1").unwrap();
        assert_eq!(text(&s), ["127.0.0.1:8080", "127.0.0.1:9090"]);
    }

    #[test]
    fn iplisten() {
        let mut s = Site::new();
        s.iplisten_add("127.0.0.1").unwrap();
        s.iplisten_add("[::1]").unwrap();
        assert_eq!(
            s.iplisten_add("127.0.0.1").err(),
            Some(CtlError::AddressExists)
        );
        assert_eq!(
            s.iplisten_add("localhost").err(),
            Some(CtlError::InvalidAddress)
        );
        s.iplisten_delete("::1").unwrap();
        assert_eq!(s.iplisten_delete("::1"), Err(CtlError::NotFound));
        assert_eq!(s.iplisten().len(), 1);
    }
}
