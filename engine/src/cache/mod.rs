//! The response cache: entries keyed by (reservation, path below it).
//!
//! Readers see an immutable snapshot (the [`crate::site::Site`] they hold); a writer changes a
//! clone. To keep that clone cheap the map is split into [`SHARDS`] shards behind `Arc`s: cloning
//! the cache copies 64 pointers, and a put copies only the one shard it touches
//! (`Arc::make_mut`). Entries themselves are `Arc`s, so a response in flight keeps the exact entry
//! (and body) it started with: replacing an entry never mixes old and new bytes.
//!
//! Key case: the reservation part of a path matches case-insensitively (http.sys), the part below
//! it is compared exactly (a decision where http.sys's documentation is silent: exact matching
//! is what a Linux file tree expects; docs/http-semantics.md, "Decisions on open points").

pub(crate) mod entry;
pub(crate) mod serve;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};

pub(crate) use entry::{Entry, EntrySpec};

use crate::error::OutOfMemory;
use crate::mem;
use crate::time::Instant;

/// Number of copy-on-write shards.
pub(crate) const SHARDS: usize = 64;

/// An owned cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    reservation: u32,
    rel: Box<[u8]>,
}

/// A borrowed cache key, for lookups that allocate nothing.
#[derive(Clone, Copy, Debug)]
struct KeyRef<'a> {
    reservation: u32,
    rel: &'a [u8],
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            reservation: self.reservation,
            rel: &self.rel,
        }
        .hash(state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.reservation);
        state.write(self.rel);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.reservation == key.reservation && *self.rel == *key.rel
    }
}

type Shard = HashMap<Key, Arc<Entry>>;

/// Which shard a key lives in: a cheap hash that does not depend on the map's hasher.
fn shard_of(reservation: u32, rel: &[u8]) -> usize {
    let h = rel.iter().fold(
        u64::from(reservation).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3),
    );
    usize::try_from(h.checked_rem(SHARDS as u64).unwrap_or(0)).unwrap_or(0)
}

/// The cache: shards of entries plus the byte and entry counts the limits need.
#[derive(Clone, Debug)]
pub struct Cache {
    shards: Vec<Arc<Shard>>,
    bytes: u64,
    entries: usize,
    /// No entry expires before this (`None`: none has a TTL): exact after a purge, lowered by
    /// inserts, left by removals (a purge then finds nothing and makes it exact). The driver's
    /// timer reads it at DISPATCH_LEVEL every tick, where scanning the cache would take time
    /// in proportion to it (issue #22, defect 10).
    next_expiry: Option<Instant>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
            bytes: 0,
            entries: 0,
            next_expiry: None,
        }
    }

    /// A copy that shares every shard (copy-on-write), allocated fallibly.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        Ok(Self {
            shards: mem::vec_from(&self.shards)?,
            bytes: self.bytes,
            entries: self.entries,
            next_expiry: self.next_expiry,
        })
    }

    /// Total body bytes of all entries and variants.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of entries.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.entries
    }

    /// Whether the cache is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entry at (reservation, path below it), if any. Allocates nothing.
    #[must_use]
    pub fn get(&self, reservation: u32, rel: &[u8]) -> Option<&Arc<Entry>> {
        self.shards
            .get(shard_of(reservation, rel))?
            .get(&KeyRef { reservation, rel })
    }

    /// Shard `i`, made private to this cache first if another snapshot shares it. The copy
    /// is allocated fallibly (`Arc::make_mut` would panic on failure).
    fn shard_mut(&mut self, i: usize) -> Result<&mut Shard, OutOfMemory> {
        let slot = self.shards.get_mut(i).ok_or(OutOfMemory)?;
        if Arc::get_mut(slot).is_none() {
            let mut copy = Shard::default();
            copy.try_reserve(slot.len()).map_err(|_| OutOfMemory)?;
            for (k, e) in slot.iter() {
                let key = Key {
                    reservation: k.reservation,
                    rel: mem::boxed(&k.rel)?,
                };
                copy.insert(key, Arc::clone(e));
            }
            *slot = mem::arc(copy)?;
        }
        Arc::get_mut(slot).ok_or(OutOfMemory)
    }

    /// Inserts or replaces; returns the entry replaced. The caller has checked the limits.
    ///
    /// # Errors
    /// [`OutOfMemory`]; the cache is then unchanged (but for a private copy of one shard).
    pub fn insert(
        &mut self,
        reservation: u32,
        rel: &[u8],
        entry: Arc<Entry>,
    ) -> Result<Option<Arc<Entry>>, OutOfMemory> {
        let added = entry.bytes();
        let expires = entry.expires;
        let key = Key {
            reservation,
            rel: mem::boxed(rel)?,
        };
        let shard = self.shard_mut(shard_of(reservation, rel))?;
        shard.try_reserve(1).map_err(|_| OutOfMemory)?;
        let old = shard.insert(key, entry);
        match &old {
            Some(old) => self.bytes = self.bytes.saturating_sub(old.bytes()),
            None => self.entries = self.entries.saturating_add(1),
        }
        self.bytes = self.bytes.saturating_add(added);
        if let Some(at) = expires {
            self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
        }
        Ok(old)
    }

    /// No entry expires before this; `None` when no entry has a TTL. Constant time: a bound
    /// that may be early (after a removal), never late.
    #[must_use]
    pub const fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Removes the entry at (reservation, rel).
    ///
    /// # Errors
    /// [`OutOfMemory`] (copying a shared shard); the cache is then unchanged.
    pub fn remove(
        &mut self,
        reservation: u32,
        rel: &[u8],
    ) -> Result<Option<Arc<Entry>>, OutOfMemory> {
        let i = shard_of(reservation, rel);
        // Look first, so that a miss does not copy the shard.
        if self
            .shards
            .get(i)
            .and_then(|s| s.get(&KeyRef { reservation, rel }))
            .is_none()
        {
            return Ok(None);
        }
        let Some(old) = self.shard_mut(i)?.remove(&KeyRef { reservation, rel }) else {
            return Ok(None);
        };
        self.bytes = self.bytes.saturating_sub(old.bytes());
        self.entries = self.entries.saturating_sub(1);
        Ok(Some(old))
    }

    /// Removes every entry for which `drop` is true; returns how many. Shards with nothing to
    /// drop are not copied.
    ///
    /// # Errors
    /// [`OutOfMemory`] (copying shared shards); nothing is removed then: every shard to change
    /// is copied before any entry goes.
    pub fn remove_where(
        &mut self,
        mut drop: impl FnMut(u32, &Entry) -> bool,
    ) -> Result<usize, OutOfMemory> {
        let mut touched = [false; SHARDS];
        for (i, t) in touched.iter_mut().enumerate() {
            *t = self
                .shards
                .get(i)
                .is_some_and(|s| s.iter().any(|(k, e)| drop(k.reservation, e)));
            if *t {
                self.shard_mut(i)?;
            }
        }
        let mut removed = 0usize;
        for (i, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            let Some(shard) = self.shards.get_mut(i).and_then(Arc::get_mut) else {
                continue;
            };
            let mut freed = 0u64;
            let mut count = 0usize;
            shard.retain(|k, e| {
                let keep = !drop(k.reservation, e);
                if !keep {
                    freed = freed.saturating_add(e.bytes());
                    count = count.saturating_add(1);
                }
                keep
            });
            self.bytes = self.bytes.saturating_sub(freed);
            self.entries = self.entries.saturating_sub(count);
            removed = removed.saturating_add(count);
        }
        Ok(removed)
    }

    /// Removes entries that have expired at `now`.
    ///
    /// # Errors
    /// [`OutOfMemory`]; nothing is removed (try again later).
    pub fn purge_expired(&mut self, now: Instant) -> Result<usize, OutOfMemory> {
        let removed = self.remove_where(|_, e| e.is_expired(now))?;
        self.next_expiry = self.iter().filter_map(|(_, _, e)| e.expires).min();
        Ok(removed)
    }

    /// Every entry with its reservation id and key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8], &Arc<Entry>)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, e)| (k.reservation, &*k.rel, e)))
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;

    use super::{Cache, Entry, EntrySpec};
    use crate::route::parse_url;
    use crate::time::Instant;

    fn entry(body: &[u8], ttl: Option<u64>) -> Arc<Entry> {
        let spec = EntrySpec {
            body: body.to_vec(),
            ttl_secs: ttl,
            ..Default::default()
        };
        Arc::new(Entry::build(parse_url("http://+:80/x").unwrap(), spec, Instant(0)).unwrap())
    }

    #[test]
    fn insert_replace_remove_and_count() {
        let mut c = Cache::new();
        assert!(c.insert(1, b"a", entry(b"12345", None)).unwrap().is_none());
        assert!(c.insert(1, b"b", entry(b"1", None)).unwrap().is_none());
        assert_eq!((c.len(), c.bytes()), (2, 6));
        let old = c.insert(1, b"a", entry(b"12", None)).unwrap().unwrap();
        assert_eq!(old.bytes(), 5);
        assert_eq!((c.len(), c.bytes()), (2, 3));
        assert!(c.get(1, b"a").is_some());
        assert!(c.get(2, b"a").is_none());
        assert!(
            c.get(1, b"A").is_none(),
            "keys below the reservation are exact"
        );
        assert!(c.remove(1, b"zz").unwrap().is_none());
        assert!(c.remove(1, b"a").unwrap().is_some());
        assert_eq!((c.len(), c.bytes()), (1, 1));
    }

    #[test]
    fn snapshots_are_independent() {
        let mut c = Cache::new();
        c.insert(1, b"a", entry(b"old", None)).unwrap();
        let snapshot = c.clone();
        c.insert(1, b"a", entry(b"new!", None)).unwrap();
        assert_eq!(snapshot.get(1, b"a").unwrap().bytes(), 3);
        assert_eq!(c.get(1, b"a").unwrap().bytes(), 4);
    }

    #[test]
    fn purge_expired() {
        let mut c = Cache::new();
        c.insert(1, b"a", entry(b"x", Some(10))).unwrap();
        c.insert(1, b"b", entry(b"y", None)).unwrap();
        assert_eq!(c.next_expiry(), Some(Instant(10_000)));
        assert_eq!(c.purge_expired(Instant(9_999)), Ok(0));
        assert_eq!(c.next_expiry(), Some(Instant(10_000)));
        assert_eq!(c.purge_expired(Instant(10_000)), Ok(1));
        assert_eq!((c.len(), c.bytes()), (1, 1));
        assert_eq!(c.next_expiry(), None, "exact again after a purge");
        // A removal leaves an early bound, which the next purge makes exact.
        c.insert(1, b"c", entry(b"z", Some(20))).unwrap();
        c.insert(1, b"d", entry(b"z", Some(30))).unwrap();
        c.remove(1, b"c").unwrap();
        assert_eq!(c.next_expiry(), Some(Instant(20_000)));
        assert_eq!(c.purge_expired(Instant(20_000)), Ok(0));
        assert_eq!(c.next_expiry(), Some(Instant(30_000)));
    }
}
