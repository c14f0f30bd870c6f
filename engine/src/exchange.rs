//! What a connection and the hand-off pass each other (issue #12): a request's id, the request
//! a connection defers to an application, why a host could not queue it, and what becomes of
//! it. A leaf, so that the connection (`conn`) and the hand-off (`handoff`) both depend on it
//! and not on each other.

use crate::out::Body;
use crate::respond::AppResponse;
use crate::route::Local;

/// The id a host gives a request it queued for an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// A request ready to be handed to an application ([`crate::Connection::poll_delivery`]).
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The request queue it goes to.
    pub queue: u32,
    /// The request head as received (request line and fields).
    pub head: &'a [u8],
    /// Where the method, the target and each field lie in `head`
    /// (`khttp_proto::reply::RequestRow::spans`).
    pub spans: &'a [u8],
    /// The request body, decoded (at most `max-queued-body-bytes`).
    pub body: &'a [u8],
    /// The canonical path routing keyed on, and `?` and the query as sent, if any (what an
    /// application forwards: `khttp_proto::reply::RequestRow::path`).
    pub path: &'a [u8],
    /// The address the connection arrived on.
    pub local: Local,
    /// The client's address, if the host gave it ([`crate::Connection::set_remote`]).
    pub remote: Option<Local>,
    /// Where the application's answer may be cached, decided with the request's answer when
    /// its head was parsed: the URL as `cache put` takes it, when the request allows caching
    /// at all (a GET without a query string, a body, `Authorization` or `Cookie`, whose raw
    /// path names what its canonical path names).
    pub cache_url: Option<&'a str>,
}

/// Why a host could not queue a request ([`crate::Connection::handle_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds `queue-length` requests already.
    QueueFull,
    /// No application is attached any more.
    NoApplication,
    /// The host could not allocate memory for it.
    OutOfMemory,
}

/// What becomes of a request handed to an application, for its connection
/// ([`crate::Connection::handle_outcome`]).
#[derive(Debug)]
pub enum Outcome {
    /// The application's answer (for a streamed one, its head and first piece).
    Response(AppResponse),
    /// The next piece of a streamed answer's body; `last` ends it.
    Piece {
        /// The bytes.
        body: Body,
        /// Whether it is the last.
        last: bool,
    },
    /// The application went away (or gave the request up) without answering: 503.
    Abandoned,
    /// The application's answer was refused (a field the server sets itself, a bad status): 502.
    Invalid,
}
