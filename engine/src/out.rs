//! A connection's output: response heads as bytes in one reusable buffer, bodies as shared
//! references to cached bytes with the range to send. Nothing is copied per request but heads,
//! and after warm-up nothing is allocated (the buffer and queue keep their capacity).
//!
//! Items past the *commit point* are held back: a response written before its request's body
//! has been read can still be replaced by a 400 if that body turns out to be malformed.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::OutOfMemory;
use crate::mem::put_groups;

/// A shared cached body.
pub type Body = Arc<Vec<u8>>;

#[derive(Debug)]
enum Item {
    /// `len` bytes of `Output::head`, after the previous head items.
    Head(usize),
    /// `body[start..end]`.
    Body {
        body: Body,
        start: usize,
        end: usize,
    },
}

impl Item {
    const fn len(&self) -> usize {
        match self {
            Self::Head(len) => *len,
            Self::Body { start, end, .. } => end.saturating_sub(*start),
        }
    }
}

/// A point to roll back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    items: usize,
    head: usize,
}

/// One piece of output for a caller that sends pieces one at a time (the driver).
#[derive(Debug)]
pub enum Transmit<'a> {
    /// Head bytes, owned by the connection until sent.
    Head(&'a [u8]),
    /// A slice of a shared body; clone the `Arc` to keep it alive across an asynchronous send.
    Body {
        /// The whole body.
        body: &'a Body,
        /// First byte to send.
        start: usize,
        /// One past the last byte to send.
        end: usize,
    },
}

/// The output queue.
#[derive(Debug, Default)]
pub(crate) struct Output {
    head: Vec<u8>,
    /// Offset in `head` of the first unsent head item.
    head_start: usize,
    /// Bytes appended to `head` not yet closed into an item.
    open: usize,
    items: VecDeque<Item>,
    /// Items at the front that may be sent.
    committed: usize,
    /// Bytes of the front item already sent.
    front_sent: usize,
    /// Bytes committed and not yet sent.
    committed_bytes: u64,
    /// Bytes ever appended (heads and bodies), less those rolled back: where the stream ends so
    /// far, for the access log's "last byte sent".
    written: u64,
}

impl Output {
    /// The queue's accounting, recomputed (debug builds check it after every change): the
    /// committed items are queued; `committed_bytes` is what they hold less what of the front
    /// one was sent; the head items and the open bytes are exactly the unsent head bytes; and
    /// the front item is never wholly sent while it is queued.
    fn accounts_hold(&self) -> bool {
        let committed: usize = self
            .items
            .iter()
            .take(self.committed)
            .map(Item::len)
            .fold(0usize, usize::saturating_add);
        let heads: usize = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Head(len) => Some(*len),
                Item::Body { .. } => None,
            })
            .fold(self.open, usize::saturating_add);
        let front_ok = self.committed == 0
            || self
                .items
                .front()
                .is_some_and(|i| self.front_sent < i.len());
        self.committed <= self.items.len()
            && self.head_start <= self.head.len()
            && u64::try_from(committed.saturating_sub(self.front_sent)).ok()
                == Some(self.committed_bytes)
            && heads == self.head.len().saturating_sub(self.head_start)
            && front_ok
    }

    /// Appends head bytes.
    ///
    /// # Errors
    /// [`OutOfMemory`]; nothing is appended.
    pub(crate) fn put(&mut self, parts: &[&[u8]]) -> Result<(), OutOfMemory> {
        self.put_groups(&[parts])
    }

    /// Appends head bytes given as groups of pieces, reserving once.
    ///
    /// # Errors
    /// [`OutOfMemory`]; nothing is appended.
    pub(crate) fn put_groups(&mut self, groups: &[&[&[u8]]]) -> Result<(), OutOfMemory> {
        let before = self.head.len();
        put_groups(&mut self.head, groups)?;
        let added = u64::try_from(self.head.len().saturating_sub(before)).unwrap_or(0);
        self.written = self.written.saturating_add(added);
        self.open = self
            .open
            .saturating_add(self.head.len().saturating_sub(before));
        debug_assert!(
            self.accounts_hold(),
            "output accounting after a head: {self:?}"
        );
        Ok(())
    }

    fn close_head(&mut self) -> Result<(), OutOfMemory> {
        if self.open > 0 {
            self.items.try_reserve(1)?;
            self.items.push_back(Item::Head(self.open));
            self.open = 0;
        }
        Ok(())
    }

    /// Appends `body[start..end]` after the head bytes written so far.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub(crate) fn body(
        &mut self,
        body: &Body,
        start: usize,
        end: usize,
    ) -> Result<(), OutOfMemory> {
        self.close_head()?;
        if end > start && end <= body.len() {
            self.items.try_reserve(1)?;
            self.items.push_back(Item::Body {
                body: Arc::clone(body),
                start,
                end,
            });
            let len = u64::try_from(end.saturating_sub(start)).unwrap_or(0);
            self.written = self.written.saturating_add(len);
        }
        debug_assert!(
            self.accounts_hold(),
            "output accounting after a body: {self:?}"
        );
        Ok(())
    }

    /// Closes the current head item and returns a point to roll back to.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub(crate) fn mark(&mut self) -> Result<Mark, OutOfMemory> {
        self.close_head()?;
        Ok(Mark {
            items: self.items.len(),
            head: self.head.len(),
        })
    }

    /// Drops everything written after `mark`.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        let keep = mark.items.max(self.committed);
        let bodies: usize = self
            .items
            .iter()
            .skip(keep)
            .filter(|i| matches!(i, Item::Body { .. }))
            .map(Item::len)
            .sum();
        let heads = self.head.len().saturating_sub(mark.head);
        let removed = u64::try_from(bodies.saturating_add(heads)).unwrap_or(0);
        self.written = self.written.saturating_sub(removed);
        debug_assert!(
            mark.head >= self.head_start || keep == self.committed,
            "a rollback never reaches into sent head bytes"
        );
        self.items.truncate(keep);
        self.head.truncate(mark.head);
        self.open = 0;
        debug_assert!(
            self.accounts_hold(),
            "output accounting after a rollback: {self:?}"
        );
    }

    /// Bytes appended so far, less those rolled back: the stream's end offset.
    pub(crate) const fn written(&self) -> u64 {
        self.written
    }

    /// Makes everything written so far sendable.
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub(crate) fn commit(&mut self) -> Result<(), OutOfMemory> {
        self.close_head()?;
        let newly = self
            .items
            .iter()
            .skip(self.committed)
            .map(Item::len)
            .fold(0usize, usize::saturating_add);
        self.committed_bytes = self
            .committed_bytes
            .saturating_add(u64::try_from(newly).unwrap_or(u64::MAX));
        self.committed = self.items.len();
        debug_assert!(
            self.accounts_hold(),
            "output accounting after a commit: {self:?}"
        );
        Ok(())
    }

    /// Bytes committed and not yet sent.
    #[must_use]
    pub(crate) const fn pending_bytes(&self) -> u64 {
        self.committed_bytes
    }

    /// Head bytes queued and not yet sent (bodies are references and do not count).
    #[must_use]
    pub(crate) const fn head_backlog(&self) -> usize {
        self.head.len().saturating_sub(self.head_start)
    }

    /// Committed items not yet fully sent.
    #[must_use]
    pub(crate) const fn pending_items(&self) -> usize {
        self.committed
    }

    /// Whether nothing (committed or held) is queued.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.open == 0
    }

    /// Fills `out` with the committed bytes to send next, in order; returns how many slices.
    /// Stops before a body piece of `large` bytes or more unless it is the first piece, so that
    /// the caller can send such pieces another way (`usize::MAX`: never stop).
    pub(crate) fn slices<'a>(&'a self, out: &mut [&'a [u8]], large: usize) -> usize {
        let mut n = 0usize;
        let mut head_at = self.head_start;
        for (i, item) in self.items.iter().take(self.committed).enumerate() {
            if i > 0 && matches!(item, Item::Body { .. }) && item.len() >= large {
                break;
            }
            let Some(slot) = out.get_mut(n) else { break };
            let skip = if i == 0 { self.front_sent } else { 0 };
            let slice = match item {
                Item::Head(len) => {
                    let end = head_at.saturating_add(*len);
                    let s = self
                        .head
                        .get(head_at.saturating_add(skip)..end)
                        .unwrap_or_default();
                    head_at = end;
                    s
                }
                Item::Body { body, start, end } => body
                    .get(start.saturating_add(skip)..*end)
                    .unwrap_or_default(),
            };
            *slot = slice;
            n = n.saturating_add(1);
        }
        n
    }

    /// The next committed piece to send.
    #[must_use]
    pub(crate) fn front(&self) -> Option<Transmit<'_>> {
        if self.committed == 0 {
            return None;
        }
        match self.items.front()? {
            Item::Head(len) => {
                let end = self.head_start.saturating_add(*len);
                Some(Transmit::Head(
                    self.head
                        .get(self.head_start.saturating_add(self.front_sent)..end)
                        .unwrap_or_default(),
                ))
            }
            Item::Body { body, start, end } => Some(Transmit::Body {
                body,
                start: start.saturating_add(self.front_sent),
                end: *end,
            }),
        }
    }

    /// Records that `n` committed bytes were sent. Returns false if `n` exceeds what was pending
    /// (a caller bug; the excess is ignored).
    pub(crate) fn advance(&mut self, mut n: usize) -> bool {
        self.committed_bytes = self
            .committed_bytes
            .saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
        while n > 0 && self.committed > 0 {
            let Some(item) = self.items.front() else {
                break;
            };
            let left = item.len().saturating_sub(self.front_sent);
            if n < left {
                self.front_sent = self.front_sent.saturating_add(n);
                return true;
            }
            n = n.saturating_sub(left);
            if let Some(Item::Head(len)) = self.items.pop_front() {
                self.head_start = self.head_start.saturating_add(len);
            }
            self.front_sent = 0;
            self.committed = self.committed.saturating_sub(1);
        }
        if self.items.is_empty() && self.open == 0 {
            // Everything sent: reuse the buffer from the start.
            self.head.clear();
            self.head_start = 0;
        }
        debug_assert!(
            self.accounts_hold(),
            "output accounting after a send: {self:?}"
        );
        n == 0
    }

    /// Frees buffers grown past `keep` bytes, when empty (idle connections stay small).
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.head.capacity() > keep {
            self.head = Vec::new();
            self.items = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    use super::Output;

    fn collect(o: &Output) -> Vec<u8> {
        let mut slices = [&[][..]; 16];
        let n = o.slices(&mut slices, usize::MAX);
        slices[..n].concat()
    }

    #[test]
    fn commit_rollback_and_partial_sends() {
        let body = Arc::new(b"0123456789".to_vec());
        let mut o = Output::default();
        o.put(&[b"HEAD1"]).unwrap();
        o.body(&body, 2, 5).unwrap();
        o.commit().unwrap();
        let m = o.mark().unwrap();
        o.put(&[b"HELD"]).unwrap();
        o.body(&body, 0, 10).unwrap();
        assert_eq!(collect(&o), b"HEAD1234");
        o.rollback(m);
        o.put(&[b"ERR"]).unwrap();
        o.commit().unwrap();
        assert_eq!(collect(&o), b"HEAD1234ERR");
        assert_eq!(o.pending_bytes(), 11);
        assert!(o.advance(3));
        assert_eq!(collect(&o), b"D1234ERR");
        assert!(o.advance(6));
        assert_eq!(collect(&o), b"RR");
        assert!(!o.advance(5), "more than pending");
        assert!(o.is_empty());
        assert_eq!(o.pending_bytes(), 0);
    }

    #[test]
    fn slices_stop_before_large_bodies() {
        let big = Arc::new(alloc::vec![7u8; 100]);
        let mut o = Output::default();
        o.put(&[b"HEAD"]).unwrap();
        o.body(&big, 0, 100).unwrap();
        o.commit().unwrap();
        let mut slices = [&[][..]; 4];
        assert_eq!(o.slices(&mut slices, 50), 1, "the head alone");
        assert_eq!(slices[0], b"HEAD");
        assert!(o.advance(4));
        let mut slices = [&[][..]; 4];
        assert_eq!(
            o.slices(&mut slices, 50),
            1,
            "a large body first is still returned"
        );
        assert_eq!(slices[0].len(), 100);
    }
}
