//! The site: reservations, the response cache, limits, the IP listen list and statistics.
//!
//! Concurrency shape: a `Site` is a value. Readers (connections) use a shared,
//! immutable `Arc<Site>`; a writer clones it (cheap: see [`crate::cache`]), applies one change and
//! publishes the clone. Readers never wait on a writer; the engine takes no locks — the glue owns
//! the pointer swap. Statistics are atomics shared by every snapshot.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cache::{Cache, Entry, EntrySpec};
use crate::error::{CtlError, OutOfMemory, PrefixError};
use crate::limits::Limits;
use crate::mem;
use crate::queues::{Holder, Owner, Queues};
use crate::route::{Namespace, Prefix, Reservation, parse_prefix, parse_url};
use crate::time::Instant;

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
    /// Request body bytes held for applications now, read and not yet answered (a gauge,
    /// bounded by `body-buffer-bytes`: `crate::budget`).
    pub body_bytes_held: AtomicU64,
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
    queues: Queues,
    cache: Cache,
    limits: Limits,
    iplisten: Vec<IpAddr>,
    stats: Arc<Stats>,
    /// Whether the host serves TLS, so that `https://` may be reserved (khttpd does; the
    /// driver does not yet).
    tls: bool,
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

    /// The private copy a control command changes: the cache's shards and entries
    /// are shared, copy-on-write; everything is allocated fallibly, so that the driver can
    /// refuse a command rather than bugcheck when memory runs out.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        Ok(Self {
            namespace: self.namespace.try_clone()?,
            queues: self.queues.clone(),
            cache: self.cache.try_clone()?,
            limits: self.limits,
            iplisten: mem::vec_from(&self.iplisten)?,
            stats: Arc::clone(&self.stats),
            tls: self.tls,
        })
    }

    /// Lets `https://` be reserved: the host serves TLS on the ports such reservations name.
    pub const fn enable_tls(&mut self) {
        self.tls = true;
    }

    /// Whether the listener on `port` speaks TLS (its reservations are `https://`).
    #[must_use]
    pub fn serves_tls(&self, port: u16) -> bool {
        self.namespace.secure(port)
    }

    /// The reservations.
    #[must_use]
    pub const fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The request queues.
    #[must_use]
    pub const fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Attaches an application handle to the queue `name` for the reserved `prefixes` (each
    /// exactly as reserved), creating the queue if needed; returns its id (issue #12).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NotFound`] (a prefix not reserved),
    /// [`CtlError::InvalidQueueName`], [`CtlError::AlreadyExists`] (a prefix another queue
    /// has), [`CtlError::OutOfMemory`].
    pub fn attach_queue(
        &mut self,
        name: &str,
        prefixes: &[&str],
        holder: Holder,
        owner: Owner,
    ) -> Result<u32, CtlError> {
        let ids = self.reservation_ids(prefixes)?;
        self.queues.attach(name, &ids, holder, owner)
    }

    /// The ids of the reservations `prefixes` name (each exactly as reserved).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NotFound`], [`CtlError::OutOfMemory`].
    pub fn reservation_ids(&self, prefixes: &[&str]) -> Result<Vec<u32>, CtlError> {
        let mut ids = Vec::new();
        ids.try_reserve_exact(prefixes.len())
            .map_err(OutOfMemory::from)?;
        for p in prefixes {
            let p = parse_prefix(p)?;
            ids.push(self.namespace.id_of(&p).ok_or(CtlError::NotFound)?);
        }
        Ok(ids)
    }

    /// Detaches `holder` from queue `id`; its misses get 503 until one attaches again.
    ///
    /// # Errors
    /// [`CtlError::NotFound`].
    pub fn detach_queue(&mut self, id: u32, holder: Holder) -> Result<(), CtlError> {
        self.queues.detach(id, holder)
    }

    /// Detaches `holder` from each of `queues` (an application that goes); a queue gone already
    /// (its reservation deleted) is nothing to undo. Returns the queues left with no
    /// application, whose waiting requests the host answers 503.
    ///
    /// # Errors
    /// [`CtlError::OutOfMemory`].
    pub fn detach_queues(&mut self, queues: &[u32], holder: Holder) -> Result<Vec<u32>, CtlError> {
        let mut orphaned = Vec::new();
        orphaned
            .try_reserve_exact(queues.len())
            .map_err(|_| CtlError::OutOfMemory)?;
        for &q in queues {
            if self.queues.get(q).is_none() {
                continue;
            }
            if let Err(CtlError::OutOfMemory) = self.queues.detach(q, holder) {
                return Err(CtlError::OutOfMemory);
            }
            // Left with no application, or removed with its last one.
            if self.queues.get(q).is_none_or(|q| q.attached() == 0) {
                orphaned.push(q);
            }
        }
        Ok(orphaned)
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
    /// or on `wildcards` when the list is empty (as http.sys's "IP Listen List" page describes).
    /// khttpd passes the IPv4 and IPv6 wildcards; the driver one dual-stack IPv6 wildcard.
    #[must_use]
    ///
    /// `None` when memory ran out: the driver asks at every configuration change, where an
    /// allocation failure must not panic (issue #22, defect 5).
    pub fn listen_addrs(&self, wildcards: &[IpAddr]) -> Option<Vec<SocketAddr>> {
        let ips = if self.iplisten.is_empty() {
            wildcards
        } else {
            &self.iplisten
        };
        let ports = self.namespace.ports()?;
        let mut out = Vec::new();
        out.try_reserve_exact(ports.len().checked_mul(ips.len())?)
            .ok()?;
        out.extend(
            ports
                .into_iter()
                .flat_map(|port| ips.iter().map(move |ip| SocketAddr::new(*ip, port))),
        );
        Some(out)
    }

    /// The shared counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The statistics, shared by every snapshot (what a body's [`crate::budget::Charge`]
    /// counts against).
    pub(crate) const fn shared_stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Reserves a URL prefix (`urlacl add`). `acl` is the `--user` or `--sddl` text
    /// (`user:NAME` or `sddl:SDDL`, read by [`crate::acl::Acl::parse`]).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::InvalidAcl`], [`CtlError::AlreadyExists`],
    /// [`CtlError::OutOfMemory`].
    pub fn reserve(&mut self, prefix: &str, acl: Option<&str>) -> Result<&Reservation, CtlError> {
        let p = parse_prefix(prefix)?;
        if p.secure && !self.tls {
            return Err(PrefixError::HttpsUnsupported.into());
        }
        if let Some(acl) = acl {
            crate::acl::Acl::parse(acl).map_err(CtlError::InvalidAcl)?;
        }
        let acl = acl.map(mem::boxed_str).transpose()?;
        let id = self.namespace.add(p, acl)?;
        self.namespace.by_id(id).ok_or(CtlError::NotFound)
    }

    /// Reserves `prefix` with a freshness policy (see [`Site::set_policy`]), all or nothing.
    ///
    /// # Errors
    /// Those of [`Site::reserve`] and [`Site::set_policy`].
    pub fn reserve_with_policy(
        &mut self,
        prefix: &str,
        acl: Option<&str>,
        cache_control: &str,
    ) -> Result<(), CtlError> {
        // Everything that can fail first, so that a failure leaves the site as it was.
        let line = crate::cache::entry::cache_control_line(cache_control)?;
        let p = parse_prefix(prefix)?;
        self.reserve(prefix, acl)?;
        self.namespace.set_policy(&p, Some(line))
    }

    /// Sets the freshness policy of the reservation `prefix` (issue #13): the `Cache-Control`
    /// value (`max-age=60`, `no-cache`, …) its entries are served with when they carry none of
    /// their own; `None` removes it.
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NotFound`], [`CtlError::InvalidHeader`] (not a
    /// field value), [`CtlError::OutOfMemory`].
    pub fn set_policy(
        &mut self,
        prefix: &str,
        cache_control: Option<&str>,
    ) -> Result<(), CtlError> {
        let p = parse_prefix(prefix)?;
        let line = match cache_control {
            Some(v) => Some(crate::cache::entry::cache_control_line(v)?),
            None => None,
        };
        self.namespace.set_policy(&p, line)
    }

    /// Deletes a reservation and every cache entry under it (`urlacl delete`).
    ///
    /// # Errors
    /// [`CtlError::InvalidPrefix`], [`CtlError::NotFound`].
    pub fn unreserve(&mut self, prefix: &str) -> Result<(), CtlError> {
        let p = parse_prefix(prefix)?;
        let id = self.namespace.id_of(&p).ok_or(CtlError::NotFound)?;
        // Entries first: if that runs out of memory, the reservation is still there.
        self.cache.remove_where(|rid, _| rid == id)?;
        self.namespace.remove(&p)?;
        self.queues.forget(id)?;
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
    /// this, then [`Site::purge_expired`] when it has passed (expired entries are reclaimed).
    /// Constant time, and possibly early (after a removal), never late: the driver asks at
    /// DISPATCH_LEVEL every tick.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.cache.next_expiry()
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
    use super::Site;
    use crate::cache::EntrySpec;
    use crate::error::CtlError;
    use crate::error::PrefixError;
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
        s.reserve("http://+:80/docs/", Some("sddl:D:(A;;GX;;;WD)"))
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
    fn listen_addresses_follow_reservations_and_the_ip_list() {
        use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let any = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        let mut s = Site::new();
        assert!(s.listen_addrs(&any).unwrap().is_empty());
        s.reserve("http://+:8080/", None).unwrap();
        s.reserve("http://+:8080/a/", None).unwrap();
        s.reserve("http://x.example:9090/", None).unwrap();
        let text = |s: &Site| {
            s.listen_addrs(&any)
                .unwrap()
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
