//! The requests between connections and applications (issue #12): what khttpd and the driver
//! both keep, so that neither host decides anything about a request queue itself.
//!
//! A connection's deferred request ([`crate::Connection::poll_delivery`]) is *offered*: it gets
//! an id and waits in its queue, in arrival order, up to `queue-length`. An application
//! *receives* it: it is then *taken* by that application's handle (a session, a file object),
//! which alone may answer or cancel it. A handle that goes abandons what it took; when it was
//! the queue's last, what still waits in the queue is abandoned too. A connection that goes
//! cancels its request wherever it is.
//!
//! `O` is how the host finds the connection again (khttpd: worker and slot; the driver: its
//! connection table's index). Every allocation is fallible: the requests are sized by the
//! network.

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use hashbrown::HashMap;

use core::fmt::Write as _;
use core::net::IpAddr;

use khttp_proto::reply::RequestRow;

use crate::budget::Charge;
use crate::exchange::{Delivery, Refusal, RequestId};
use crate::mem::{self, StackText};
use crate::route::Local;
use crate::site::Site;

/// `IP:PORT`, or `[IPv6]:PORT`; empty for none. An IPv4 client of a dual-stack socket
/// (`::ffff:a.b.c.d`) is written as the IPv4 address it is.
fn remote_text(remote: Option<Local>) -> StackText<REMOTE_TEXT> {
    let mut t = StackText::new();
    // Always fits: REMOTE_TEXT holds the longest.
    let _ = match remote {
        Some(Local {
            ip: IpAddr::V6(ip),
            port,
        }) => match ip.to_ipv4_mapped() {
            Some(v4) => write!(t, "{v4}:{port}"),
            None => write!(t, "[{ip}]:{port}"),
        },
        Some(Local { ip, port }) => write!(t, "{ip}:{port}"),
        None => Ok(()),
    };
    t
}

/// One request in the hand-off.
#[derive(Debug)]
struct Pending<O> {
    origin: O,
    queue: u32,
    /// The handle that received it, once one has.
    taker: Option<u64>,
    /// Where its answer may be cached ([`Delivery::cache_url`]), if anywhere.
    cache_url: Option<Box<str>>,
    head: Box<[u8]>,
    spans: Box<[u8]>,
    body: Box<[u8]>,
    path: Box<[u8]>,
    /// The client's address as text, `IP:PORT` (empty when unknown).
    remote: StackText<REMOTE_TEXT>,
    /// The body in the server's budget of held bodies ([`crate::budget`]), until the request
    /// is answered or gone.
    charge: Charge,
}

/// The longest client address text: `[` 39 characters of IPv6 `]:65535`.
const REMOTE_TEXT: usize = 48;

/// A request as an application receives it.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    /// Its id, for the answer.
    pub id: RequestId,
    /// The request head as the client sent it.
    pub head: &'a [u8],
    /// Where its parts lie in it ([`Delivery::spans`]).
    pub spans: &'a [u8],
    /// The request body, decoded.
    pub body: &'a [u8],
    /// The canonical path and the query ([`Delivery::path`]).
    pub path: &'a [u8],
    /// The client's address, `IP:PORT`, or empty.
    pub remote: &'a str,
}

impl<'a> Received<'a> {
    /// Its reply row for a receive, with the first `body_max` bytes of the body (both hosts
    /// hand requests to applications in this one form).
    #[must_use]
    pub fn row(&self, body_max: usize) -> RequestRow<'a> {
        RequestRow {
            id: self.id.0,
            head: self.head,
            spans: self.spans,
            body: self.body.get(..body_max).unwrap_or(self.body),
            body_len: u64::try_from(self.body.len()).unwrap_or(u64::MAX),
            path: self.path,
            remote: self.remote,
        }
    }
}

impl<O> Pending<O> {
    fn received(&self, id: RequestId) -> Received<'_> {
        Received {
            id,
            head: &self.head,
            spans: &self.spans,
            body: &self.body,
            path: &self.path,
            remote: self.remote.as_str(),
        }
    }
}

/// The requests offered to applications and not yet answered.
#[derive(Debug)]
pub struct Handoff<O> {
    next_id: u64,
    waiting: HashMap<u32, VecDeque<u64>>,
    requests: HashMap<u64, Pending<O>>,
}

impl<O> Default for Handoff<O> {
    fn default() -> Self {
        Self {
            next_id: 0,
            waiting: HashMap::new(),
            requests: HashMap::new(),
        }
    }
}

impl<O: Copy> Handoff<O> {
    /// The hand-off's states agree (debug builds check it after every transition): a request
    /// waits in its own queue's line exactly when no handle has taken it, and once.
    fn states_agree(&self) -> bool {
        let in_lines: usize = self.waiting.values().map(VecDeque::len).sum();
        let untaken = self.requests.values().filter(|p| p.taker.is_none()).count();
        in_lines == untaken
            && self.waiting.iter().all(|(q, line)| {
                line.iter().all(|id| {
                    self.requests
                        .get(id)
                        .is_some_and(|p| p.taker.is_none() && p.queue == *q)
                })
            })
    }

    /// An empty hand-off.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests offered and not answered, waiting or taken.
    #[must_use]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// No request is offered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests waiting in `queue` for an application to receive them.
    #[must_use]
    pub fn waiting(&self, queue: u32) -> usize {
        self.waiting.get(&queue).map_or(0, VecDeque::len)
    }

    /// Offers the request `d` from connection `origin`, under `site`'s limits; its answer
    /// may be cached at `d.cache_url`. Its body counts in the site's budget of held bodies until
    /// it is answered or gone (the connection gives its own count up once it is queued).
    ///
    /// # Errors
    /// [`Refusal::QueueFull`] when `queue-length` requests wait already;
    /// [`Refusal::OutOfMemory`].
    pub fn offer(
        &mut self,
        origin: O,
        d: &Delivery<'_>,
        site: &Site,
    ) -> Result<RequestId, Refusal> {
        let oom = |_| Refusal::OutOfMemory;
        let queue_length = site.limits().queue_length;
        let max_waiting = usize::try_from(queue_length).unwrap_or(usize::MAX);
        if self.waiting(d.queue) >= max_waiting {
            return Err(Refusal::QueueFull);
        }
        let pending = Pending {
            origin,
            queue: d.queue,
            taker: None,
            cache_url: d.cache_url.map(mem::boxed_str).transpose().map_err(oom)?,
            head: mem::boxed(d.head).map_err(oom)?,
            spans: mem::boxed(d.spans).map_err(oom)?,
            body: mem::boxed(d.body).map_err(oom)?,
            path: mem::boxed(d.path).map_err(oom)?,
            remote: remote_text(d.remote),
            charge: Charge::new(site.shared_stats()),
        };
        self.requests
            .try_reserve(1)
            .map_err(|_| Refusal::OutOfMemory)?;
        self.waiting
            .try_reserve(1)
            .map_err(|_| Refusal::OutOfMemory)?;
        let line = self.waiting.entry(d.queue).or_default();
        line.try_reserve(1).map_err(|_| Refusal::OutOfMemory)?;
        // Ids wrap past those in use (a host that runs for ever still never reuses a live one).
        let mut id = self.next_id.wrapping_add(1);
        while id == 0 || self.requests.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id;
        line.push_back(id);
        let mut pending = pending;
        pending
            .charge
            .force(u64::try_from(pending.body.len()).unwrap_or(u64::MAX));
        self.requests.insert(id, pending);
        debug_assert!(
            self.waiting(d.queue) <= max_waiting,
            "a queue holds at most queue-length waiting requests"
        );
        debug_assert!(self.states_agree(), "hand-off states after an offer");
        Ok(RequestId(id))
    }

    /// Hands the oldest request waiting in `queue` to `taker`.
    pub fn receive(&mut self, queue: u32, taker: u64) -> Option<Received<'_>> {
        let id = self.waiting.get_mut(&queue)?.pop_front()?;
        let p = self.requests.get_mut(&id)?;
        debug_assert!(p.taker.is_none(), "a waiting request has no taker");
        debug_assert_eq!(p.queue, queue, "a request waits in its own queue");
        p.taker = Some(taker);
        Some(p.received(RequestId(id)))
    }

    /// Request `id` as `taker` received it, if `taker` holds it (for a host that hands several
    /// received requests over at once).
    #[must_use]
    pub fn taken(&self, id: RequestId, taker: u64) -> Option<Received<'_>> {
        let p = self
            .requests
            .get(&id.0)
            .filter(|p| p.taker == Some(taker))?;
        Some(p.received(id))
    }

    /// The body of request `id` from `offset` on (empty past its end), if `taker` holds it:
    /// for an application that received the head and the body's start, and asks for more.
    #[must_use]
    pub fn body(&self, id: RequestId, taker: u64, offset: u64) -> Option<&[u8]> {
        let p = self
            .requests
            .get(&id.0)
            .filter(|p| p.taker == Some(taker))?;
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(p.body.len());
        p.body.get(from..)
    }

    /// Puts back, first in line, a request `taker` received but could not deliver (its
    /// application went while the request was on its way).
    ///
    /// # Errors
    /// [`Refusal::OutOfMemory`]: the request is abandoned instead (its origin is returned by
    /// [`Handoff::answer`] as for any other).
    pub fn requeue(&mut self, id: RequestId, taker: u64) -> Result<(), Refusal> {
        let Some(p) = self
            .requests
            .get_mut(&id.0)
            .filter(|p| p.taker == Some(taker))
        else {
            return Ok(());
        };
        let line = self.waiting.entry(p.queue).or_default();
        line.try_reserve(1).map_err(|_| Refusal::OutOfMemory)?;
        p.taker = None;
        line.push_front(id.0);
        debug_assert!(self.states_agree(), "hand-off states after a requeue");
        Ok(())
    }

    /// Where the answer to `id` may be cached, if `taker` holds it.
    #[must_use]
    pub fn cache_url(&self, id: RequestId, taker: u64) -> Option<&str> {
        self.requests
            .get(&id.0)
            .filter(|p| p.taker == Some(taker))?
            .cache_url
            .as_deref()
    }

    /// `taker`'s streamed answer to `id` goes on: the request stays (its head and body are
    /// freed, they were delivered), and its connection is returned for the host to hand the
    /// piece to. `None` when `taker` does not hold it. The last piece goes with
    /// [`Handoff::answer`].
    pub fn hold(&mut self, id: RequestId, taker: u64) -> Option<O> {
        let p = self
            .requests
            .get_mut(&id.0)
            .filter(|p| p.taker == Some(taker))?;
        p.head = Box::default();
        p.spans = Box::default();
        p.body = Box::default();
        p.cache_url = None;
        Some(p.origin)
    }

    /// `taker`'s answer (or cancel) for `id`: the request leaves the hand-off, and its
    /// connection is returned for the host to settle. `None` when `taker` does not hold it
    /// (never received it, or its connection went).
    pub fn answer(&mut self, id: RequestId, taker: u64) -> Option<O> {
        if self.requests.get(&id.0)?.taker != Some(taker) {
            return None;
        }
        let origin = self.requests.remove(&id.0).map(|p| p.origin);
        debug_assert!(
            self.states_agree(),
            "an answered request was taken, so in no line"
        );
        origin
    }

    /// The connection of request `id` went: the request leaves, wherever it is. Returns its
    /// origin, if it was still here.
    pub fn cancel(&mut self, id: RequestId) -> Option<O> {
        let p = self.requests.remove(&id.0)?;
        if let Some(line) = self.waiting.get_mut(&p.queue) {
            line.retain(|x| *x != id.0);
        }
        debug_assert!(self.states_agree(), "hand-off states after a cancel");
        Some(p.origin)
    }

    /// `taker` went (an application's session or handle closed): every request it took, and
    /// every request waiting in `orphaned` (queues left with no application), leaves; `settle`
    /// is called with each, for the host to answer its connection (503). Allocates nothing.
    pub fn abandon(&mut self, taker: u64, orphaned: &[u32], mut settle: impl FnMut(RequestId, O)) {
        for q in orphaned {
            if let Some(line) = self.waiting.get_mut(q) {
                line.clear();
            }
        }
        self.requests.retain(|id, p| {
            let gone = p.taker == Some(taker) || (p.taker.is_none() && orphaned.contains(&p.queue));
            if gone {
                settle(RequestId(*id), p.origin);
            }
            !gone
        });
        debug_assert!(self.states_agree(), "hand-off states after an abandon");
    }

    /// Every request, waiting or taken (the host stops); `settle` is called with each.
    pub fn drain(&mut self, mut settle: impl FnMut(RequestId, O)) {
        self.waiting.clear();
        for (id, p) in self.requests.drain() {
            settle(RequestId(id), p.origin);
        }
    }

    /// Every request of `queue`, waiting or taken (its reservation was deleted); `settle` is
    /// called with each.
    pub fn drop_queue(&mut self, queue: u32, mut settle: impl FnMut(RequestId, O)) {
        self.waiting.remove(&queue);
        self.requests.retain(|id, p| {
            let gone = p.queue == queue;
            if gone {
                settle(RequestId(*id), p.origin);
            }
            !gone
        });
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr};

    use super::Handoff;
    use crate::exchange::{Delivery, Refusal, RequestId};
    use crate::route::Local;

    /// A site whose `queue-length` is `n`.
    fn lim(n: u32) -> crate::Site {
        let mut s = crate::Site::new();
        s.set_limit("queue-length", u64::from(n)).unwrap();
        s
    }

    fn d(queue: u32, head: &'static [u8]) -> Delivery<'static> {
        Delivery {
            queue,
            head,
            spans: b"",
            body: b"",
            path: b"/p?q",
            local: Local {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 80,
            },
            remote: Some(Local {
                ip: IpAddr::V6(core::net::Ipv6Addr::LOCALHOST),
                port: 5000,
            }),
            cache_url: None,
        }
    }

    #[test]
    fn a_received_request_carries_its_path_and_client() {
        let mut h: Handoff<usize> = Handoff::new();
        let mut v4 = d(1, b"GET /x%2F HTTP/1.1\r\n\r\n");
        v4.body = b"abcdef";
        v4.remote = Some(Local {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 65535,
        });
        h.offer(0, &v4, &lim(10)).unwrap();
        h.offer(1, &d(1, b"GET / HTTP/1.1\r\n\r\n"), &lim(10))
            .unwrap();
        let mut none = d(1, b"GET / HTTP/1.1\r\n\r\n");
        none.remote = None;
        h.offer(2, &none, &lim(10)).unwrap();
        let row = h.receive(1, 9).unwrap().row(4);
        assert_eq!(
            (row.path, row.remote, row.body, row.body_len),
            (&b"/p?q"[..], "192.0.2.1:65535", &b"abcd"[..], 6)
        );
        assert_eq!(h.receive(1, 9).unwrap().row(0).remote, "[::1]:5000");
        assert_eq!(h.receive(1, 9).unwrap().row(0).remote, "");
        let mut mapped = d(1, b"GET / HTTP/1.1\r\n\r\n");
        mapped.remote = Some(Local {
            ip: IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped()),
            port: 80,
        });
        h.offer(3, &mapped, &lim(10)).unwrap();
        assert_eq!(h.receive(1, 9).unwrap().row(0).remote, "192.0.2.9:80");
    }

    #[test]
    fn offered_received_answered_in_order() {
        let mut h: Handoff<u8> = Handoff::new();
        let cacheable = Delivery {
            cache_url: Some("http://+:80/a"),
            ..d(7, b"A")
        };
        let a = h.offer(1, &cacheable, &lim(10)).unwrap();
        let b = h.offer(2, &d(7, b"B"), &lim(10)).unwrap();
        assert_eq!((h.len(), h.waiting(7)), (2, 2));
        let r = h.receive(7, 100).unwrap();
        assert_eq!((r.id, r.head), (a, &b"A"[..]));
        assert_eq!(h.cache_url(a, 100), Some("http://+:80/a"));
        assert_eq!(h.cache_url(a, 101), None, "another taker");
        assert_eq!(h.answer(a, 101), None, "only the taker answers");
        assert_eq!(h.answer(a, 100), Some(1));
        assert_eq!(h.answer(a, 100), None, "once");
        assert_eq!(h.answer(b, 100), None, "not received yet");
        assert_eq!(h.receive(7, 100).map(|r| r.id), Some(b));
        assert!(h.receive(7, 100).is_none());
    }

    #[test]
    fn more_of_a_body_from_an_offset() {
        let mut h: Handoff<u8> = Handoff::new();
        let mut delivery = d(7, b"H");
        delivery.body = b"0123456789";
        let a = h.offer(1, &delivery, &lim(10)).unwrap();
        assert_eq!(h.body(a, 100, 0), None, "not received yet");
        let _ = h.receive(7, 100);
        assert_eq!(h.body(a, 100, 4), Some(&b"456789"[..]));
        assert_eq!(h.body(a, 100, 10), Some(&b""[..]));
        let t = h.taken(a, 100).unwrap();
        assert_eq!((t.id, t.head, t.body), (a, &b"H"[..], &b"0123456789"[..]));
        assert!(h.taken(a, 101).is_none(), "only the taker");
        assert_eq!(h.body(a, 100, u64::MAX), Some(&b""[..]));
    }

    #[test]
    fn full_queue_and_ids() {
        let mut h: Handoff<u8> = Handoff::new();
        h.offer(0, &d(1, b""), &lim(2)).unwrap();
        h.offer(0, &d(1, b""), &lim(2)).unwrap();
        assert_eq!(h.offer(0, &d(1, b""), &lim(2)), Err(Refusal::QueueFull));
        assert!(h.offer(0, &d(2, b""), &lim(2)).is_ok(), "per queue");
        // Taken requests do not count against the length.
        let _ = h.receive(1, 5);
        assert!(h.offer(0, &d(1, b""), &lim(2)).is_ok());
        h.next_id = u64::MAX;
        let id = h.offer(0, &d(3, b""), &lim(2)).unwrap();
        assert_ne!(id, RequestId(0));
        assert_eq!(id, RequestId(5), "wrapped past 0 and the ids in use");
    }

    #[test]
    fn requeue_goes_first() {
        let mut h: Handoff<u8> = Handoff::new();
        let a = h.offer(1, &d(7, b"A"), &lim(10)).unwrap();
        h.offer(2, &d(7, b"B"), &lim(10)).unwrap();
        let _ = h.receive(7, 100);
        h.requeue(a, 999).unwrap();
        assert_eq!(h.waiting(7), 1, "only the taker puts it back");
        h.requeue(a, 100).unwrap();
        assert_eq!(h.receive(7, 200).map(|r| r.id), Some(a));
    }

    #[test]
    fn a_taker_that_goes_abandons_what_it_took_and_orphaned_queues() {
        let mut h: Handoff<u8> = Handoff::new();
        h.offer(1, &d(7, b""), &lim(10)).unwrap();
        h.offer(2, &d(7, b""), &lim(10)).unwrap();
        h.offer(3, &d(8, b""), &lim(10)).unwrap();
        h.offer(4, &d(9, b""), &lim(10)).unwrap();
        let _ = h.receive(7, 100);
        let _ = h.receive(9, 200);
        let mut gone = Vec::new();
        h.abandon(100, &[8], |_, o| gone.push(o));
        gone.sort_unstable();
        assert_eq!(gone, [1, 3], "taken by 100, and waiting in orphaned 8");
        assert_eq!((h.len(), h.waiting(7), h.waiting(8)), (2, 1, 0));
        let mut gone = Vec::new();
        h.drop_queue(9, |_, o| gone.push(o));
        assert_eq!(gone, [4], "taken by another, but its queue went");
    }

    #[test]
    fn a_streamed_answer_holds_its_request_until_the_last_piece() {
        let mut h: Handoff<u8> = Handoff::new();
        let cacheable = Delivery {
            cache_url: Some("http://+:80/a"),
            ..d(7, b"A")
        };
        let a = h.offer(1, &cacheable, &lim(10)).unwrap();
        let _ = h.receive(7, 100);
        assert_eq!(h.body(a, 100, 0), Some(&b""[..]));
        assert_eq!(h.body(a, 101, 0), None, "only the taker");
        assert_eq!(h.hold(a, 101), None, "only the taker");
        assert_eq!(h.hold(a, 100), Some(1));
        assert_eq!(h.hold(a, 100), Some(1), "piece after piece");
        assert_eq!(h.cache_url(a, 100), None, "a streamed answer is not cached");
        assert_eq!(h.len(), 1);
        assert_eq!(h.answer(a, 100), Some(1), "the last piece");
        assert_eq!(h.hold(a, 100), None);
        assert!(h.is_empty());
    }

    #[test]
    fn a_connection_that_goes_cancels() {
        let mut h: Handoff<u8> = Handoff::new();
        let a = h.offer(1, &d(7, b""), &lim(10)).unwrap();
        let b = h.offer(2, &d(7, b""), &lim(10)).unwrap();
        assert_eq!(h.cancel(a), Some(1));
        assert_eq!(h.receive(7, 1).map(|r| r.id), Some(b));
        assert_eq!(h.cancel(b), Some(2));
        assert_eq!(h.cancel(b), None);
        assert_eq!(h.answer(b, 1), None);
        assert!(h.is_empty());
    }
}
