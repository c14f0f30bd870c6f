//! khttp-engine: the portable heart of khttp — HTTP/1.1 parsing, the http.sys URL namespace,
//! the response cache and the connection state machine.
//!
//! It is *sans-IO*: no sockets, IRPs, threads, clocks, locks or entropy. The Windows driver and
//! the Linux host (`khttpd`) feed it bytes and a caller-supplied [`time::Clock`], and send what it
//! gives back. It is `no_std` + `alloc`, has no unsafe code, and is written not to panic on any
//! input: a panic in the driver is a bugcheck. Every size that input decides is checked, and every
//! allocation that input sizes is fallible (out of memory gives 503 or a close).
//!
//! Entry points:
//! - [`conn::Connection`]: one per TCP connection;
//! - [`site::Site`]: reservations, cache, limits, statistics — an immutable snapshot for readers,
//!   cloned and swapped by writers;
//! - [`route`], [`cache`], [`http1`]: the rules, each next to the RFC or http.sys text it
//!   implements.

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

pub mod cache;
pub mod conn;
pub mod ctl;
pub mod error;
pub mod http1;
pub mod limits;
mod mem;
pub mod out;
pub mod persist;
pub mod pump;
pub mod respond;
pub mod route;
pub mod site;
pub mod slots;
pub mod time;

pub use conn::{Close, Connection};
pub use error::{CtlError, RequestError};
pub use limits::Limits;
pub use site::Site;
pub use time::{Clock, Instant};
