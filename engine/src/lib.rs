//! khttp-engine: the portable heart of khttp — HTTP/1.1 parsing, the http.sys URL namespace,
//! the response cache and the connection state machine.
//!
//! It is *sans-IO*: no sockets, IRPs, threads, clocks, locks or entropy. The Windows driver and
//! the Linux host (`khttpd`) feed it bytes and a caller-supplied [`Clock`], and send what it
//! gives back. It is `no_std` + `alloc`, has no unsafe code, and is written not to panic on any
//! input: a panic in the driver is a bugcheck. Every size that input decides is checked, and every
//! allocation that input sizes is fallible (out of memory gives 503 or a close).
//!
//! Entry points:
//! - [`Connection`]: one per TCP connection, with [`admit`] for admission control;
//! - [`Site`]: reservations, cache, limits, statistics — an immutable snapshot for readers,
//!   cloned and swapped by its one writer, [`ctl::Writer`];
//! - [`InlineGate`] and [`next_io`]: driving a connection over a completion-based transport
//!   (WSK);
//! - [`persist`]: the configuration as text; [`limits`]: every limit.
//!
//! The modules behind these (the HTTP/1.1 grammar, routing, the cache, responses) are private,
//! each next to the RFC or http.sys text it implements.

#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(feature = "try-arc", feature(allocator_api))]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acl;
pub mod apps;
mod budget;
mod cache;
mod conn;
pub mod ctl;
mod error;
mod exchange;
mod handoff;
mod http1;
pub mod limits;
mod mem;
mod out;
pub mod pace;
pub mod persist;
mod pump;
mod queues;
mod rate;
mod respond;
mod route;
mod site;
mod slots;
mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wake;

// The API: what the hosts (khttpd, the driver) and khttpctl use. Everything else is private, so
// that the compiler reports what nothing uses.
pub use cache::entry::EntrySpec;
pub use conn::{Admission, Close, Connection, Deadline, LogRecord, Phase, Timer, admit};
pub use error::{CanonError, CtlError, OutOfMemory, PrefixError, RequestError};
pub use exchange::{Delivery, Outcome, Refusal, RequestId};
pub use handoff::{Handoff, Received};
pub use limits::Limits;
pub use out::{Body, Transmit};
pub use pump::{Completion, InlineGate, NextIo, next_io};
pub use queues::{Holder, Owner, Queue, QueueStats, Queues};
pub use respond::{
    AppAnswer, AppResponse, app_cache_fields, app_response_cacheable, store_app_answer,
};
pub use route::{Local, canonicalize, parse_prefix, parse_url};
pub use site::{Site, Stats};
pub use slots::SlotTable;
pub use time::{Clock, HttpDate, Instant};

/// For the engine's own integration tests, benches and fuzz targets: the HTTP field grammar
/// they drive directly. Not an API: it changes with the engine.
#[doc(hidden)]
pub mod hooks {
    pub use crate::http1::fields::{Coding, RangeRequest, negotiate, parse_range};
}
