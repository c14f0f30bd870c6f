//! The application protocol's side of the engine (issues #12, #23): an application's call
//! decoded into what it asks ([`AppCall`]), and the rules both hosts apply to it with their
//! [`Handoff`]: which requests one receive takes ([`take_batch`], the one batch rule), how much
//! of a body one reply carries ([`body_piece`]), and what becomes of an answer ([`respond`]:
//! checked, cached when the rules allow, handed to its connection) or of a request given up
//! ([`cancel`]). The hosts keep their locks, their wake-ups and their parking ([`AppHost`]):
//! khttpd's session threads wait on a condition variable, the driver parks the receive's
//! request in a manual queue.

use alloc::sync::Arc;
use alloc::vec::Vec;

use khttp_proto::reply::{BodyRow, RequestRow, RespondRow, too_small_reply};
use khttp_proto::{Command, ProtoError, Request, Respond, Status, decode_request, write_rows};

use crate::error::CtlError;
use crate::exchange::{Outcome, RequestId};
use crate::handoff::Handoff;
use crate::limits::APP_BODY_PIECE;
use crate::mem;
use crate::respond::{AppAnswer, AppResponse, app_response_cacheable, store_app_answer};
use crate::site::Site;
use crate::time::Instant;

/// What a host gives the engine's rules for an application's call: its hand-off under its
/// lock, its site and the site's writer, and the way to its connections.
pub trait AppHost {
    /// How the host finds a request's connection again.
    type Origin: Copy;

    /// Runs `f` on the hand-off under the host's lock; `f` takes no other lock.
    fn with_handoff<R>(&self, f: impl FnOnce(&mut Handoff<Self::Origin>) -> R) -> R;

    /// The calling handle's id as a taker in the hand-off.
    fn taker(&self) -> u64;

    /// Hands `outcome` to the connection of `origin`, which has just left the hand-off
    /// (answered or cancelled): called once for it.
    fn deliver(&self, origin: Self::Origin, id: RequestId, outcome: Outcome);

    /// The current site.
    fn site(&self) -> Arc<Site>;

    /// A change of the site's running state, under the writer lock (`ctl::Writer::change`).
    ///
    /// # Errors
    /// `f`'s error, or [`CtlError::OutOfMemory`].
    fn change<R>(&self, f: impl FnOnce(&mut Site) -> Result<R, CtlError>) -> Result<R, CtlError>;

    /// Now, for a cached answer's time to live.
    fn now(&self) -> Instant;
}

/// An application's whole answer `r` (its body `body`) to a request its handle took: checked
/// (a refused one gives its client 502, and the application the error), cached first when the
/// application allows it and the rules do (so that the next request for the URL is a hit),
/// then handed to its connection. Not delivered when its client no longer waits.
///
/// # Errors
/// The answer's refusal ([`AppResponse::new`]); [`CtlError::OutOfMemory`] (its client gets
/// 503).
pub fn respond<H: AppHost>(
    host: &H,
    r: &Respond<'_>,
    body: Vec<u8>,
) -> Result<RespondRow, CtlError> {
    let id = RequestId(r.id);
    let me = host.taker();
    let (origin, url) = host.with_handoff(|h| {
        let url = h.cache_url(id, me).and_then(|u| mem::boxed_str(u).ok());
        (h.answer(id, me), url)
    });
    let Some(origin) = origin else {
        return Ok(RespondRow {
            delivered: false,
            cached: false,
        });
    };
    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let Ok(body) = mem::arc(body) else {
        host.deliver(origin, id, Outcome::Abandoned);
        return Err(CtlError::OutOfMemory);
    };
    let response = match AppResponse::new(r.status, r.content_type, &r.headers, Arc::clone(&body)) {
        Ok(response) => response,
        Err(e) => {
            // The client is not left waiting: 502, and the application hears why.
            host.deliver(origin, id, Outcome::Invalid);
            return Err(e);
        }
    };
    let cached = match (r.ttl, url) {
        (Some(ttl), Some(url))
            if app_response_cacheable(r.status, &r.headers, len, &host.site()) =>
        {
            store(host, &url, r, &body, ttl)
        }
        _ => false,
    };
    host.deliver(origin, id, Outcome::Response(response));
    Ok(RespondRow {
        delivered: true,
        cached,
    })
}

/// Puts an application's answer into the cache at `url` for `ttl` seconds; whether it is
/// there.
fn store<H: AppHost>(host: &H, url: &str, r: &Respond<'_>, body: &[u8], ttl: u64) -> bool {
    let answer = AppAnswer {
        status: r.status,
        content_type: r.content_type,
        headers: &r.headers,
        body,
    };
    let now = host.now();
    host.change(|site| store_app_answer(site, url, &answer, ttl, now))
        .is_ok()
}

/// The application gives request `id` up (`QueueCancel`), or sent an answer for it that was
/// refused before it could be taken (`outcome` [`Outcome::Invalid`]: 502): its client is
/// answered, if the calling handle holds it.
pub fn cancel<H: AppHost>(host: &H, id: RequestId, outcome: Outcome) {
    let me = host.taker();
    if let Some(origin) = host.with_handoff(|h| h.answer(id, me)) {
        host.deliver(origin, id, outcome);
    }
}

/// What an application asks, decoded from one call.
#[derive(Debug, PartialEq, Eq)]
pub enum AppCall<'a> {
    /// Attach this handle to queue `name`, for `prefixes` (created when new).
    Attach {
        /// The queue's name.
        name: &'a str,
        /// Its reservations.
        prefixes: Vec<&'a str>,
    },
    /// Requests of one queue, as many as the room takes ([`take_batch`]).
    Receive(Room),
    /// More of a request's body, from `offset` ([`body_piece`]).
    ReceiveBody {
        /// The request.
        id: RequestId,
        /// Where the bytes start.
        offset: u64,
    },
    /// A whole answer: the call's direct bytes are its body.
    Respond(Respond<'a>),
    /// A streamed answer's head and first piece (the direct bytes); [`AppCall::Send`] brings
    /// the rest.
    Stream(Respond<'a>),
    /// The next piece of a streamed answer (the direct bytes); `last` ends it.
    Send {
        /// The request.
        id: RequestId,
        /// Whether this is the last piece.
        last: bool,
    },
    /// The application gives the request up: 503 to its client.
    Cancel {
        /// The request.
        id: RequestId,
    },
    /// Detach this handle from `queue`.
    Detach {
        /// The queue's id.
        queue: u32,
    },
}

/// What a receive has room for: its reply's bytes (`usize::MAX`: no bound, a socket), the
/// body bytes it asked for with each head, how many requests it takes at most, and the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// The reply's room, its status word included.
    pub bytes: usize,
    /// Body bytes wanted with each head.
    pub body_max: u64,
    /// Requests wanted at most (at least one).
    pub max_requests: u32,
    /// The queue asked for.
    pub queue: u32,
}

/// The application command of control code `code`.
///
/// # Errors
/// [`Status::UnknownCommand`], or [`Status::WrongEndpoint`] for an administrator's command.
pub fn command(code: u32) -> Result<Command, Status> {
    let command = Command::from_code(code).ok_or(Status::UnknownCommand)?;
    if command.for_applications() {
        Ok(command)
    } else {
        Err(Status::WrongEndpoint)
    }
}

/// Decodes an application's call of `command` ([`command`]): its input buffer, and the length
/// of its direct buffer (an answer's body or piece).
///
/// # Errors
/// The [`ProtoError`] of a malformed call (its status and message are the reply).
pub fn decode(
    command: Command,
    input: &[u8],
    direct_len: usize,
) -> Result<AppCall<'_>, ProtoError> {
    Ok(match decode_request(command, input, direct_len)? {
        Request::QueueAttach { name, prefixes } => AppCall::Attach { name, prefixes },
        Request::QueueReceive {
            queue,
            body_max,
            max_requests,
        } => AppCall::Receive(Room {
            bytes: usize::MAX,
            body_max,
            max_requests,
            queue,
        }),
        Request::QueueReceiveBody { id, offset } => AppCall::ReceiveBody {
            id: RequestId(id),
            offset,
        },
        Request::QueueRespond(r) if r.stream.is_some() => AppCall::Stream(r),
        Request::QueueRespond(r) => AppCall::Respond(r),
        Request::QueueSend { id, last, .. } => AppCall::Send {
            id: RequestId(id),
            last,
        },
        Request::QueueCancel { id } => AppCall::Cancel { id: RequestId(id) },
        Request::QueueDetach { queue } => AppCall::Detach { queue },
        // `command` is an application's (`command`): nothing else decodes from it.
        _ => return Err(ProtoError::InvalidValue),
    })
}

/// What one receive took ([`take_batch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Requests taken, their rows in the reply, in this order.
    Taken {
        /// The oldest.
        first: RequestId,
        /// Those taken with it.
        more: Vec<RequestId>,
    },
    /// The oldest request's head does not fit the room: it waits on, and the reply (a
    /// too-small reply, [`Status::BufferTooSmall`]) says how many bytes it needs.
    TooSmall,
    /// Nothing waits: the host waits or parks the receive.
    Nothing,
    /// Memory ran out for the reply: the requests wait on; the host answers the receive with
    /// the error (or tries again later).
    OutOfMemory,
}

/// Bytes a reply adds around its byte strings: the status word and what the rows need besides
/// the strings themselves (header, counts, tags, lengths, numbers).
fn framing(row_bytes: usize, strings: usize) -> usize {
    row_bytes.saturating_sub(strings).saturating_add(4)
}

/// Bytes `row` adds to a reply table.
fn row_size(row: RequestRow<'_>) -> usize {
    let mut one = Vec::new();
    let mut none = Vec::new();
    let one_len = write_rows(&mut one, [row]).map_or(usize::MAX, |()| one.len());
    let none_len =
        write_rows(&mut none, core::iter::empty::<RequestRow<'_>>()).map_or(0, |()| none.len());
    one_len.saturating_sub(none_len)
}

/// Puts request `id`, which `taker` took, back first in line; when that fails for want of
/// memory, takes it out of the hand-off into `lost`, for the host to answer 503, if `lost` has
/// room for it (otherwise it stays with `taker`, and its connection answers 503 at its
/// `app-response-timeout`).
fn put_back<O: Copy>(
    handoff: &mut Handoff<O>,
    id: RequestId,
    taker: u64,
    lost: &mut Vec<(RequestId, O)>,
) {
    if handoff.requeue(id, taker).is_ok() || lost.try_reserve(1).is_err() {
        return;
    }
    if let Some(o) = handoff.answer(id, taker) {
        lost.push((id, o));
    }
}

/// The one batch rule: takes for `taker` the oldest request waiting in `room.queue`, whose
/// head must fit the room (with as much of its body as fits, up to `room.body_max`); then,
/// up to `room.max_requests` in all, more of those waiting beyond `others` (receivers of the
/// queue idle now, which a batch must not starve), each whole within what is left of the room
/// (bodies up to `body_max`). Their rows go to `out`. Requests that cannot be put back in line
/// go to `lost`, for the host to answer 503 once its lock is released. Allocates fallibly.
pub fn take_batch<O: Copy>(
    handoff: &mut Handoff<O>,
    taker: u64,
    room: Room,
    others: usize,
    out: &mut Vec<u8>,
    lost: &mut Vec<(RequestId, O)>,
) -> Batch {
    let Some(taken) = handoff.receive(room.queue, taker) else {
        return Batch::Nothing;
    };
    let first = taken.id;
    let fixed = write_rows(out, [taken.row(0)]).map_or(usize::MAX, |()| framing(out.len(), 0));
    out.clear();
    let body_max = usize::try_from(room.body_max).unwrap_or(usize::MAX);
    let first_cut = room.bytes.saturating_sub(fixed).min(body_max);
    let written = write_rows(out, [taken.row(first_cut)]);
    if written.is_err() {
        out.clear();
        put_back(handoff, first, taker, lost);
        return Batch::OutOfMemory;
    }
    if out.len().saturating_add(4) > room.bytes {
        // Back in line; the application asks again with room for it.
        put_back(handoff, first, taker, lost);
        let reply = too_small_reply(out.len().max(1));
        out.clear();
        // With no memory for it the reply is empty, and the host's reply says so.
        if out.try_reserve(reply.len()).is_ok() {
            out.extend_from_slice(&reply);
        }
        return Batch::TooSmall;
    }
    let more = take_more(handoff, taker, room, others, out.len(), lost);
    if !more.is_empty() {
        let row = |i: RequestId, cut: usize| handoff.taken(i, taker).map(|t| t.row(cut));
        let rows = core::iter::once(row(first, first_cut))
            .chain(more.iter().map(|i| row(*i, body_max)))
            .flatten();
        let mut all = Vec::new();
        if write_rows(&mut all, rows).is_ok() {
            *out = all;
        } else {
            // Back in line, in order; the first goes alone, as written above.
            for i in more.iter().rev() {
                put_back(handoff, *i, taker, lost);
            }
            let more = Vec::new();
            return Batch::Taken { first, more };
        }
    }
    debug_assert!(
        out.len().saturating_add(4) <= room.bytes,
        "a batch fits its receive's room"
    );
    Batch::Taken { first, more }
}

/// The requests a batch takes after its first (see [`take_batch`]); `total` is the reply's
/// length so far.
fn take_more<O: Copy>(
    handoff: &mut Handoff<O>,
    taker: u64,
    room: Room,
    others: usize,
    mut total: usize,
    lost: &mut Vec<(RequestId, O)>,
) -> Vec<RequestId> {
    let body_max = usize::try_from(room.body_max).unwrap_or(usize::MAX);
    let mut more = Vec::new();
    while more.len().saturating_add(1) < room.max_requests as usize
        && handoff.waiting(room.queue) > others
        && more.try_reserve(1).is_ok()
    {
        let Some(next) = handoff.receive(room.queue, taker) else {
            break;
        };
        let id = next.id;
        if room.bytes != usize::MAX {
            let after = total.saturating_add(row_size(next.row(body_max)));
            if after.saturating_add(4) > room.bytes {
                put_back(handoff, id, taker, lost);
                break;
            }
            total = after;
        }
        more.push(id);
    }
    more
}

/// More of request `id`'s body, from `offset`, for `taker`, who holds it: as a [`BodyRow`] of
/// at most [`APP_BODY_PIECE`] bytes, and no more than a reply of `room` bytes carries (its
/// status word included; `usize::MAX`: no bound).
///
/// # Errors
/// [`CtlError::NotFound`] when `taker` does not hold it; [`CtlError::OutOfMemory`].
pub fn body_piece<O: Copy>(
    handoff: &Handoff<O>,
    id: RequestId,
    taker: u64,
    offset: u64,
    room: usize,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    let rest = handoff.body(id, taker, offset).ok_or(CtlError::NotFound)?;
    let fixed = write_rows(out, [BodyRow { bytes: &[] }])
        .map(|()| framing(out.len(), 0))
        .map_err(|_| CtlError::OutOfMemory)?;
    out.clear();
    let n = room
        .saturating_sub(fixed)
        .min(APP_BODY_PIECE)
        .min(rest.len());
    let bytes = rest.get(..n).unwrap_or(rest);
    write_rows(out, [BodyRow { bytes }]).map_err(|_| CtlError::OutOfMemory)
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr};

    use khttp_proto::read_rows;
    use khttp_proto::reply::RequestRow;

    use super::{Batch, Room, take_batch};
    use crate::exchange::Delivery;
    use crate::handoff::Handoff;
    use crate::route::Local;
    use crate::site::Site;

    fn offered(n: usize, body: &'static [u8]) -> (Handoff<u8>, Site) {
        let site = Site::new();
        let mut h = Handoff::new();
        for i in 0..n {
            let d = Delivery {
                queue: 1,
                head: b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
                spans: b"",
                body,
                path: b"/x",
                local: Local {
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port: 80,
                },
                remote: None,
                cache_url: None,
            };
            h.offer(u8::try_from(i).unwrap(), &d, &site).unwrap();
        }
        (h, site)
    }

    const fn room(bytes: usize, max_requests: u32) -> Room {
        Room {
            bytes,
            body_max: u64::MAX,
            max_requests,
            queue: 1,
        }
    }

    fn taken(b: &Batch) -> usize {
        match b {
            Batch::Taken { more, .. } => more.len() + 1,
            _ => 0,
        }
    }

    /// A batch takes what waits beyond the idle receivers, up to what was asked for.
    #[test]
    fn a_batch_leaves_idle_receivers_their_share() {
        let (mut h, _site) = offered(10, b"");
        let (mut out, mut lost) = (Vec::new(), Vec::new());
        let b = take_batch(&mut h, 7, room(usize::MAX, 4), 3, &mut out, &mut lost);
        assert_eq!(taken(&b), 4, "asked for 4, 10 waiting, 3 idle: 4");
        assert_eq!(read_rows::<RequestRow<'_>>(&out).unwrap().len(), 4);
        let b = take_batch(&mut h, 7, room(usize::MAX, 64), 3, &mut out, &mut lost);
        assert_eq!(taken(&b), 3, "6 waiting, 3 idle: the first and 2 more");
        assert_eq!(h.waiting(1), 3, "left for the idle receivers");
        let b = take_batch(&mut h, 8, room(usize::MAX, 64), 5, &mut out, &mut lost);
        assert_eq!(taken(&b), 1, "more idle receivers than waiting: one");
        assert!(lost.is_empty());
    }

    /// Within a bounded room (a device's buffer), requests go whole; one whose head does not
    /// fit waits on, and the reply says how much room it needs.
    #[test]
    fn a_batch_fits_its_room() {
        let (mut h, _site) = offered(3, &[b'a'; 100]);
        let (mut out, mut lost) = (Vec::new(), Vec::new());
        let b = take_batch(&mut h, 7, room(10, 64), 0, &mut out, &mut lost);
        assert_eq!(b, Batch::TooSmall);
        assert_eq!(h.waiting(1), 3, "back in line");
        let needed = khttp_proto::Header::peek(&out).unwrap().size as usize;
        let one = needed + 4;
        let b = take_batch(&mut h, 7, room(one + 50, 64), 0, &mut out, &mut lost);
        assert_eq!(taken(&b), 1, "room for one whole request, not two");
        assert_eq!(h.waiting(1), 2);
        let b = take_batch(&mut h, 7, room(usize::MAX, 64), 0, &mut out, &mut lost);
        assert_eq!(taken(&b), 2);
        assert_eq!(
            take_batch(&mut h, 7, room(usize::MAX, 64), 0, &mut out, &mut lost),
            Batch::Nothing
        );
    }
}
