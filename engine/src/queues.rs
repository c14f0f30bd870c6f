//! Request queues (http.sys's model; issue #12): an application creates or attaches to a named
//! queue for one or more reserved prefixes, and requests those prefixes route to, that no cache
//! entry answers, are handed to it ([`crate::respond::Answer::Deferred`]).
//!
//! The table is part of the [`crate::Site`] snapshot, so a connection decides synchronously,
//! from the snapshot it holds, whether a miss goes to an application (attached), gets 503 (a
//! queue with no process, as http.sys answers), or 404 (no queue at all). Creating, attaching
//! and detaching are control writes like any other (`ctl::commit`). The requests themselves
//! are the host's: it moves them between connections and applications.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CtlError, OutOfMemory};
use crate::limits::MAX_QUEUE_NAME;
use crate::mem;

/// An application handle attached to a queue: its process and user, as the transport says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// The user id.
    pub uid: u32,
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
#[derive(Clone, Debug)]
pub struct Queue {
    /// Its id, stable while it exists.
    pub id: u32,
    /// The name applications attach by.
    pub name: Box<str>,
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
}

/// Every queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queues {
    list: Vec<Queue>,
    next_id: u32,
}

impl Queues {
    /// A copy, allocated fallibly.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_clone(&self) -> Result<Self, OutOfMemory> {
        let mut list = Vec::new();
        list.try_reserve_exact(self.list.len())?;
        for q in &self.list {
            list.push(Queue {
                id: q.id,
                name: mem::boxed_str(&q.name)?,
                reservations: mem::vec_from(&q.reservations)?,
                holders: mem::vec_from(&q.holders)?,
                stats: Arc::clone(&q.stats),
            });
        }
        Ok(Self {
            list,
            next_id: self.next_id,
        })
    }

    /// Every queue.
    pub fn iter(&self) -> impl Iterator<Item = &Queue> {
        self.list.iter()
    }

    /// The queue that receives the misses of `reservation`, if any.
    #[must_use]
    pub fn for_reservation(&self, reservation: u32) -> Option<&Queue> {
        self.list
            .iter()
            .find(|q| q.reservations.contains(&reservation))
    }

    /// The queue with this id.
    #[must_use]
    pub fn get(&self, id: u32) -> Option<&Queue> {
        self.list.iter().find(|q| q.id == id)
    }

    /// Attaches one application handle to the queue `name` for `reservations`, creating it if
    /// needed; returns its id. A reservation belongs to one queue at most.
    ///
    /// # Errors
    /// [`CtlError::InvalidQueueName`] (empty, over [`MAX_QUEUE_NAME`], or a control
    /// character); [`CtlError::AlreadyExists`] if a reservation belongs to another queue;
    /// [`CtlError::OutOfMemory`].
    pub fn attach(
        &mut self,
        name: &str,
        reservations: &[u32],
        holder: Holder,
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
        if let Some(q) = self.list.iter_mut().find(|q| q.name.as_ref() == name) {
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
            return Ok(q.id);
        }
        self.list.try_reserve(1).map_err(OutOfMemory::from)?;
        let mut id = self.next_id;
        while id == 0 || self.list.iter().any(|q| q.id == id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let mut holders = Vec::new();
        holders.try_reserve(1).map_err(OutOfMemory::from)?;
        holders.push(holder);
        self.list.push(Queue {
            id,
            name: mem::boxed_str(name)?,
            reservations: mem::vec_from(reservations)?,
            holders,
            stats: mem::arc(QueueStats::default())?,
        });
        Ok(id)
    }

    /// Detaches `holder` from queue `id`. The queue stays (its misses get 503) until
    /// [`Queues::remove`]: an application that dies can attach again.
    ///
    /// # Errors
    /// [`CtlError::NotFound`]: no such queue, or `holder` is not attached to it.
    pub fn detach(&mut self, id: u32, holder: Holder) -> Result<(), CtlError> {
        let q = self
            .list
            .iter_mut()
            .find(|q| q.id == id)
            .ok_or(CtlError::NotFound)?;
        let i = q
            .holders
            .iter()
            .position(|h| *h == holder)
            .ok_or(CtlError::NotFound)?;
        q.holders.remove(i);
        Ok(())
    }

    /// Removes queue `id`: its prefixes answer misses with 404 again.
    ///
    /// # Errors
    /// [`CtlError::NotFound`].
    pub fn remove(&mut self, id: u32) -> Result<(), CtlError> {
        let i = self
            .list
            .iter()
            .position(|q| q.id == id)
            .ok_or(CtlError::NotFound)?;
        self.list.remove(i);
        Ok(())
    }

    /// Forgets `reservation` (it was deleted).
    pub fn forget(&mut self, reservation: u32) {
        for q in &mut self.list {
            q.reservations.retain(|r| *r != reservation);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;

    use super::{Holder, Queues};
    use crate::error::CtlError;

    #[test]
    fn attach_detach_and_routing() {
        let (h1, h2) = (Holder { pid: 1, uid: 0 }, Holder { pid: 2, uid: 0 });
        let mut q = Queues::default();
        let a = q.attach("app", &[1, 2], h1).unwrap();
        assert_eq!(q.for_reservation(2).map(|x| x.id), Some(a));
        assert_eq!(q.attach("app", &[2], h2).unwrap(), a, "a second handle");
        assert_eq!(q.get(a).unwrap().attached(), 2);
        assert_eq!(q.attach("other", &[1], h1), Err(CtlError::AlreadyExists));
        assert_eq!(q.attach("", &[3], h1), Err(CtlError::InvalidQueueName));
        q.detach(a, h1).unwrap();
        assert_eq!(q.detach(a, h1), Err(CtlError::NotFound), "once");
        q.detach(a, h2).unwrap();
        assert_eq!(q.get(a).unwrap().attached(), 0, "kept, with no process");
        q.forget(1);
        assert!(q.for_reservation(1).is_none());
        let copy = q.try_clone().unwrap();
        assert_eq!(copy, q);
        assert!(Arc::ptr_eq(
            &copy.get(a).unwrap().stats,
            &q.get(a).unwrap().stats
        ));
        q.remove(a).unwrap();
        assert_eq!(q.detach(a, h1), Err(CtlError::NotFound));
    }
}
