//! Request queues (http.sys's model; issue #12): an application creates or attaches to a named
//! queue for one or more reserved prefixes, and requests those prefixes route to, that no cache
//! entry answers, are handed to it ([`crate::respond::Answer::Deferred`]).
//!
//! The table is part of the [`crate::Site`] snapshot, so a connection decides synchronously,
//! from the snapshot it holds, whether a miss goes to an application (attached), gets 503 (a
//! queue with no process, as http.sys answers), or 404 (no queue at all). Creating, attaching
//! and detaching are site writes like any other (`ctl::Writer`). The requests themselves
//! are the host's: it moves them between connections and applications.
//!
//! Tenancy (issue #21), as http.sys keeps it: a named request queue is created by one process
//! (`HttpCreateRequestQueue`), whose user it belongs to, and its security descriptor admits
//! only that user unless it says otherwise; another process opens it by name only if that
//! descriptor grants it (`HTTP_CREATE_REQUEST_QUEUE_FLAG_OPEN_EXISTING`); and a URL is added to
//! a queue only if the reservation's URL ACL grants the registering user; a controller process
//! (`HTTP_CREATE_REQUEST_QUEUE_FLAG_CONTROLLER`) configures a queue without receiving from it,
//! the part an administrator plays here. A queue records
//! its [`Owner`] when it is created; the rules of who may join it are `ctl::attach`'s. A queue
//! lives while an application is attached to it or it serves a reservation (whose misses then
//! get 503 until its application comes back); one with neither is removed, so that nobody can
//! grow the table by attaching and leaving.
//!
//! The table is shared between site snapshots (an `Arc`), so that a control write that does
//! not touch queues copies none of it; a queue write copies the list of pointers and the one
//! queue it changes.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::acl::Sid;
use crate::error::{CtlError, OutOfMemory};
use crate::limits::{MAX_QUEUE_HANDLES, MAX_QUEUE_NAME};
use crate::mem;

/// An application handle attached to a queue: its process and user, as the transport says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// The user id.
    pub uid: u32,
}

/// Whom a queue belongs to: the user whose application created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A Unix user (khttpd), by uid.
    Uid(u32),
    /// A Windows user (the driver), by its token's user SID.
    Sid(Sid),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "uid {uid}"),
            Self::Sid(sid) => fmt::Display::fmt(sid, f),
        }
    }
}

/// A queue's counters, shared by every snapshot of the site (like [`crate::Stats`]).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Requests handed to it (deferred).
    pub requests: AtomicU64,
    /// Requests queued and not yet answered (a gauge).
    pub in_flight: AtomicU64,
    /// Requests its applications answered.
    pub answered: AtomicU64,
    /// Requests refused: the queue was full, or no application was attached.
    pub refused: AtomicU64,
    /// Requests abandoned: the application went away, gave up, or answered invalidly.
    pub abandoned: AtomicU64,
    /// Requests not answered within `app-response-timeout`.
    pub timed_out: AtomicU64,
}

impl QueueStats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one from the gauge, never below 0.
    pub fn settle(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

/// One request queue.
#[derive(Debug)]
pub struct Queue {
    /// Its id, stable while it exists.
    pub id: u32,
    /// The name applications attach by.
    pub name: Box<str>,
    /// The user it belongs to.
    pub owner: Owner,
    /// The reservations (ids) whose misses it receives.
    pub reservations: Vec<u32>,
    /// The application handles attached; none means requests get 503.
    pub holders: Vec<Holder>,
    /// Its counters.
    pub stats: Arc<QueueStats>,
}

impl PartialEq for Queue {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.owner == other.owner
            && self.reservations == other.reservations
            && self.holders == other.holders
    }
}

impl Eq for Queue {}

impl Queue {
    /// Application handles attached.
    #[must_use]
    pub fn attached(&self) -> u32 {
        u32::try_from(self.holders.len()).unwrap_or(u32::MAX)
    }

    /// A copy, allocated fallibly (the counters are shared).
    fn try_clone(&self) -> Result<Self, OutOfMemory> {
        Ok(Self {
            id: self.id,
            name: mem::boxed_str(&self.name)?,
            owner: self.owner,
            reservations: mem::vec_from(&self.reservations)?,
            holders: mem::vec_from(&self.holders)?,
            stats: Arc::clone(&self.stats),
        })
    }

    /// Neither an application nor a reservation keeps it.
    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.reservations.is_empty()
    }
}

/// Every queue.
#[derive(Clone, Debug, Default)]
pub struct Queues {
    list: Arc<Vec<Arc<Queue>>>,
    next_id: u32,
}

impl PartialEq for Queues {
    fn eq(&self, other: &Self) -> bool {
        self.next_id == other.next_id && self.iter().eq(other.iter())
    }
}

impl Eq for Queues {}

impl Queues {
    /// Every queue.
    pub fn iter(&self) -> impl Iterator<Item = &Queue> {
        self.list.iter().map(|q| &**q)
    }

    /// The queue that receives the misses of `reservation`, if any.
    #[must_use]
    pub fn for_reservation(&self, reservation: u32) -> Option<&Queue> {
        self.iter().find(|q| q.reservations.contains(&reservation))
    }

    /// The queue with this id.
    #[must_use]
    pub fn get(&self, id: u32) -> Option<&Queue> {
        self.iter().find(|q| q.id == id)
    }

    /// The queue called `name`.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&Queue> {
        self.iter().find(|q| q.name.as_ref() == name)
    }

    /// This snapshot's own list, copied (pointers only) if another snapshot shares it.
    fn list_mut(&mut self) -> Result<&mut Vec<Arc<Queue>>, OutOfMemory> {
        if Arc::get_mut(&mut self.list).is_none() {
            let mut copy = Vec::new();
            copy.try_reserve_exact(self.list.len().saturating_add(1))?;
            copy.extend(self.list.iter().cloned());
            self.list = mem::arc(copy)?;
        }
        Arc::get_mut(&mut self.list).ok_or(OutOfMemory)
    }

    /// Changes queue `id` (copied first if another snapshot shares it); `NotFound` if there
    /// is none. Removes it if `change` leaves it empty.
    fn change<T>(
        &mut self,
        id: u32,
        change: impl FnOnce(&mut Queue) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        let i = self
            .list
            .iter()
            .position(|q| q.id == id)
            .ok_or(CtlError::NotFound)?;
        let list = self.list_mut()?;
        let slot = list.get_mut(i).ok_or(CtlError::NotFound)?;
        if Arc::get_mut(slot).is_none() {
            *slot = mem::arc(slot.try_clone()?)?;
        }
        let q = Arc::get_mut(slot).ok_or(CtlError::OutOfMemory)?;
        let out = change(q)?;
        if q.is_empty() {
            list.remove(i);
        }
        Ok(out)
    }

    /// Attaches one application handle to the queue `name` for `reservations`, creating it for
    /// `owner` if needed; returns its id. A reservation belongs to one queue at most. Whether
    /// the caller may join an existing queue is `ctl::attach`'s rule, checked before.
    ///
    /// # Errors
    /// [`CtlError::InvalidQueueName`] (empty, over [`MAX_QUEUE_NAME`], or a control
    /// character); [`CtlError::AlreadyExists`] if a reservation belongs to another queue;
    /// [`CtlError::TooManySessions`] past [`MAX_QUEUE_HANDLES`] handles on the queue;
    /// [`CtlError::OutOfMemory`].
    pub fn attach(
        &mut self,
        name: &str,
        reservations: &[u32],
        holder: Holder,
        owner: Owner,
    ) -> Result<u32, CtlError> {
        if name.is_empty() || name.len() > MAX_QUEUE_NAME || name.chars().any(char::is_control) {
            return Err(CtlError::InvalidQueueName);
        }
        let taken = |q: &Queue| q.name.as_ref() != name;
        if reservations
            .iter()
            .any(|r| self.for_reservation(*r).is_some_and(taken))
        {
            return Err(CtlError::AlreadyExists);
        }
        if let Some(id) = self.by_name(name).map(|q| q.id) {
            return self.change(id, |q| {
                if q.holders.len() >= MAX_QUEUE_HANDLES {
                    return Err(CtlError::TooManySessions);
                }
                // Reserve before changing anything, so that a failure changes nothing.
                q.reservations
                    .try_reserve(reservations.len())
                    .map_err(OutOfMemory::from)?;
                q.holders.try_reserve(1).map_err(OutOfMemory::from)?;
                for r in reservations {
                    if !q.reservations.contains(r) {
                        q.reservations.push(*r);
                    }
                }
                q.holders.push(holder);
                Ok(q.id)
            });
        }
        let mut id = self.next_id;
        while id == 0 || self.get(id).is_some() {
            id = id.wrapping_add(1);
        }
        let mut holders = Vec::new();
        holders.try_reserve(1).map_err(OutOfMemory::from)?;
        holders.push(holder);
        // Each reservation once, however often the attach names it.
        let mut unique = Vec::new();
        unique
            .try_reserve_exact(reservations.len())
            .map_err(OutOfMemory::from)?;
        for r in reservations {
            if !unique.contains(r) {
                unique.push(*r);
            }
        }
        let queue = mem::arc(Queue {
            id,
            name: mem::boxed_str(name)?,
            owner,
            reservations: unique,
            holders,
            stats: mem::arc(QueueStats::default())?,
        })?;
        let list = self.list_mut()?;
        list.try_reserve(1).map_err(OutOfMemory::from)?;
        list.push(queue);
        self.next_id = id.wrapping_add(1);
        Ok(id)
    }

    /// Detaches `holder` from queue `id`. The queue stays while it serves a reservation (its
    /// misses get 503): an application that dies can attach again. One left with neither an
    /// application nor a reservation is removed.
    ///
    /// # Errors
    /// [`CtlError::NotFound`]: no such queue, or `holder` is not attached to it;
    /// [`CtlError::OutOfMemory`].
    pub fn detach(&mut self, id: u32, holder: Holder) -> Result<(), CtlError> {
        let q = self.get(id).ok_or(CtlError::NotFound)?;
        let i = q
            .holders
            .iter()
            .position(|h| *h == holder)
            .ok_or(CtlError::NotFound)?;
        self.change(id, |q| {
            q.holders.remove(i);
            Ok(())
        })
    }

    /// Removes queue `id`: its prefixes answer misses with 404 again.
    ///
    /// # Errors
    /// [`CtlError::NotFound`], [`CtlError::OutOfMemory`].
    pub fn remove(&mut self, id: u32) -> Result<(), CtlError> {
        let i = self
            .list
            .iter()
            .position(|q| q.id == id)
            .ok_or(CtlError::NotFound)?;
        self.list_mut()?.remove(i);
        Ok(())
    }

    /// Forgets `reservation` (it was deleted); a queue left with neither an application nor a
    /// reservation is removed.
    ///
    /// # Errors
    /// [`CtlError::OutOfMemory`].
    pub fn forget(&mut self, reservation: u32) -> Result<(), CtlError> {
        let Some(id) = self.for_reservation(reservation).map(|q| q.id) else {
            return Ok(());
        };
        self.change(id, |q| {
            q.reservations.retain(|r| *r != reservation);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;

    use super::{Holder, Owner, Queues};
    use crate::error::CtlError;

    const O: Owner = Owner::Uid(0);

    #[test]
    fn attach_detach_and_routing() {
        let (h1, h2) = (Holder { pid: 1, uid: 0 }, Holder { pid: 2, uid: 0 });
        let mut q = Queues::default();
        let a = q.attach("app", &[1, 2], h1, O).unwrap();
        assert_eq!(q.for_reservation(2).map(|x| x.id), Some(a));
        assert_eq!(q.attach("app", &[2], h2, O).unwrap(), a, "a second handle");
        assert_eq!(q.get(a).unwrap().attached(), 2);
        assert_eq!(q.attach("other", &[1], h1, O), Err(CtlError::AlreadyExists));
        assert_eq!(q.attach("", &[3], h1, O), Err(CtlError::InvalidQueueName));
        q.detach(a, h1).unwrap();
        assert_eq!(q.detach(a, h1), Err(CtlError::NotFound), "once");
        q.detach(a, h2).unwrap();
        assert_eq!(
            q.get(a).unwrap().attached(),
            0,
            "kept while it serves a reservation"
        );
        q.forget(1).unwrap();
        assert!(q.for_reservation(1).is_none());
        let copy = q.clone();
        assert_eq!(copy, q);
        assert!(Arc::ptr_eq(
            &copy.get(a).unwrap().stats,
            &q.get(a).unwrap().stats
        ));
        q.remove(a).unwrap();
        assert_eq!(q.detach(a, h1), Err(CtlError::NotFound));
        assert!(copy.get(a).is_some(), "the other snapshot is untouched");
    }

    #[test]
    fn a_prefix_named_twice_is_served_once() {
        let h = Holder { pid: 1, uid: 0 };
        let mut q = Queues::default();
        let a = q.attach("twice", &[3, 3, 4, 3], h, O).unwrap();
        assert_eq!(q.get(a).unwrap().reservations, [3, 4]);
        q.attach("twice", &[4, 4, 5], h, O).unwrap();
        assert_eq!(q.get(a).unwrap().reservations, [3, 4, 5]);
    }

    #[test]
    fn a_queue_with_neither_application_nor_reservation_goes() {
        let h = Holder { pid: 1, uid: 5 };
        let mut q = Queues::default();
        let a = q.attach("bare", &[], h, Owner::Uid(5)).unwrap();
        assert_eq!(q.get(a).unwrap().owner, Owner::Uid(5));
        q.detach(a, h).unwrap();
        assert!(
            q.get(a).is_none(),
            "no reservation: removed with its last handle"
        );
        let b = q.attach("served", &[7], h, O).unwrap();
        q.detach(b, h).unwrap();
        assert!(q.get(b).is_some(), "its reservation keeps it");
        q.forget(7).unwrap();
        assert!(q.get(b).is_none(), "and its deletion removes it");
        assert_eq!(q.iter().count(), 0);
    }

    #[test]
    fn a_queue_holds_so_many_handles() {
        let mut q = Queues::default();
        for pid in 0..crate::limits::MAX_QUEUE_HANDLES {
            let h = Holder {
                pid: pid as u32,
                uid: 0,
            };
            q.attach("busy", &[1], h, O).unwrap();
        }
        let one_more = Holder {
            pid: u32::MAX,
            uid: 0,
        };
        assert_eq!(
            q.attach("busy", &[1], one_more, O),
            Err(CtlError::TooManySessions)
        );
    }

    #[test]
    fn snapshots_share_the_table_until_one_changes_it() {
        let h = Holder { pid: 1, uid: 0 };
        let mut q = Queues::default();
        let a = q.attach("a", &[1], h, O).unwrap();
        let b = q.attach("b", &[2], h, O).unwrap();
        let before = q.clone();
        assert!(Arc::ptr_eq(&before.list, &q.list), "a copy shares the list");
        q.detach(b, h).unwrap();
        assert!(!Arc::ptr_eq(&before.list, &q.list));
        let (qa, ba) = (&q.list[0], &before.list[0]);
        assert_eq!((qa.id, ba.id), (a, a));
        assert!(Arc::ptr_eq(qa, ba), "the queue not changed is shared");
        assert_eq!(before.get(b).unwrap().attached(), 1);
    }
}
