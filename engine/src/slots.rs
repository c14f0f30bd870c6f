//! Which connection slots are free and which are live, for a host that keeps connections in a
//! fixed table (the driver: contexts in non-paged pool, found by the deadline sweep and unload).
//!
//! Taking a slot is O(1) from a free list, releasing one is O(1), and the live slots are kept
//! densely, so that a sweep visits only live connections instead of the whole table and two
//! accepts can never race for one slot (issue #9, finding 10). The table allocates only in
//! [`SlotTable::try_new`]; nothing after that allocates, so it can be used at DISPATCH_LEVEL
//! under the host's spin lock.

use alloc::vec::Vec;

use crate::error::OutOfMemory;

/// Free and live slot indices (`u32`).
#[derive(Debug)]
pub struct SlotTable {
    /// Free slots, taken from the end.
    free: Vec<u32>,
    /// Live slots, densely.
    live: Vec<u32>,
    /// For each slot, its position in `live` (meaningful while it is live).
    pos: Vec<u32>,
}

impl SlotTable {
    /// A table of `n` free slots (numbered `0..n`; slot 0 is taken first).
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn try_new(n: u32) -> Result<Self, OutOfMemory> {
        let len = usize::try_from(n).map_err(|_| OutOfMemory)?;
        let mut free = Vec::new();
        free.try_reserve_exact(len)?;
        free.extend((0..n).rev());
        let mut live = Vec::new();
        live.try_reserve_exact(len)?;
        let mut pos = Vec::new();
        pos.try_reserve_exact(len)?;
        pos.resize(len, u32::MAX);
        Ok(Self { free, live, pos })
    }

    /// Takes a free slot, or `None` when all are live.
    pub fn take(&mut self) -> Option<u32> {
        let slot = self.free.pop()?;
        debug_assert!(
            self.live.len() < self.pos.len(),
            "a free slot means the live set has room"
        );
        let at = u32::try_from(self.live.len()).unwrap_or(u32::MAX);
        if let Some(p) = self
            .pos
            .get_mut(usize::try_from(slot).unwrap_or(usize::MAX))
        {
            *p = at;
        }
        // Within the capacity reserved in `try_new`: never reallocates.
        self.live.push(slot);
        debug_assert!(self.whole(), "free + live is the whole table after a take");
        Some(slot)
    }

    /// Releases a live slot. Releasing a slot that is not live does nothing (and returns
    /// false), so a double release cannot corrupt the table.
    pub fn release(&mut self, slot: u32) -> bool {
        let Some(i) = usize::try_from(slot).ok().filter(|&i| i < self.pos.len()) else {
            return false;
        };
        let at = self.pos.get(i).copied().unwrap_or(u32::MAX);
        let Some(at_index) = usize::try_from(at).ok() else {
            return false;
        };
        if self.live.get(at_index) != Some(&slot) {
            return false;
        }
        self.live.swap_remove(at_index);
        if let Some(&moved) = self.live.get(at_index)
            && let Some(p) = self
                .pos
                .get_mut(usize::try_from(moved).unwrap_or(usize::MAX))
        {
            *p = at;
        }
        if let Some(p) = self.pos.get_mut(i) {
            *p = u32::MAX;
        }
        // Within the capacity reserved in `try_new`: never reallocates.
        self.free.push(slot);
        debug_assert!(
            self.whole(),
            "free + live is the whole table after a release"
        );
        debug_assert_eq!(
            self.pos.get(i).copied(),
            Some(u32::MAX),
            "a free slot has no live position"
        );
        true
    }

    /// Free and live slots together are the table, and each live slot's position points back
    /// at it.
    fn whole(&self) -> bool {
        self.free.len().saturating_add(self.live.len()) == self.pos.len()
            && self.live.iter().enumerate().all(|(at, &slot)| {
                let at = u32::try_from(at).unwrap_or(u32::MAX);
                self.pos.get(slot as usize) == Some(&at)
            })
    }

    /// The live slots, in no particular order.
    #[must_use]
    pub fn live(&self) -> &[u32] {
        &self.live
    }

    /// How many slots are live.
    #[must_use]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::SlotTable;

    #[test]
    fn take_until_full_then_release() {
        let mut t = SlotTable::try_new(3).unwrap();
        assert_eq!(
            (t.take(), t.take(), t.take(), t.take()),
            (Some(0), Some(1), Some(2), None)
        );
        assert!(t.release(1));
        assert!(!t.release(1), "a double release is refused");
        assert!(!t.release(7), "out of range");
        assert_eq!(t.take(), Some(1));
        assert_eq!(t.live_count(), 3);
    }

    proptest! {
        /// Any sequence of takes and releases keeps the live set exact: no slot is handed out
        /// twice, every live slot is listed once, and free + live is the whole table.
        #[test]
        fn the_live_set_is_exact(ops in proptest::collection::vec(any::<(bool, u8)>(), 0..400)) {
            let n = 40u32;
            let mut t = SlotTable::try_new(n).unwrap();
            let mut model: BTreeSet<u32> = BTreeSet::new();
            for (take, which) in ops {
                if take {
                    match t.take() {
                        Some(s) => prop_assert!(model.insert(s), "slot {} handed out twice", s),
                        None => prop_assert_eq!(model.len(), n as usize),
                    }
                } else {
                    let s = u32::from(which) % n;
                    prop_assert_eq!(t.release(s), model.remove(&s));
                }
                let live: BTreeSet<u32> = t.live().iter().copied().collect();
                prop_assert_eq!(live.len(), t.live().len(), "listed once");
                prop_assert_eq!(&live, &model);
                let free: Vec<u32> = t.free.clone();
                prop_assert_eq!(free.len() + live.len(), n as usize);
            }
        }
    }
}
