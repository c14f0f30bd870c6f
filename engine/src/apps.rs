//! The application protocol's side of the engine (issues #12, #23): an application's call
//! decoded into what it asks ([`AppCall`]), and the rules both hosts apply to it with their
//! [`Handoff`]: which requests one receive takes ([`take_batch`], the one batch rule) and how
//! much of a body one reply carries ([`body_piece`]). The hosts keep their locks, their
//! wake-ups and their parking: khttpd's session threads wait on a condition variable, the
//! driver parks the receive's request in a manual queue.

use alloc::vec::Vec;

use khttp_proto::reply::{BodyRow, RequestRow, too_small_reply};
use khttp_proto::{Command, ProtoError, Request, Respond, Status, decode_request, write_rows};

use crate::error::CtlError;
use crate::exchange::RequestId;
use crate::handoff::Handoff;
use crate::limits::APP_BODY_PIECE;

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
