//! Administration that khttpctl and khttpd share (feature `admin`):
//!
//! - [`account`]: `--user NAME` as the server reads it (on Windows, the account's SID);
//! - [`put`]: a file put as a cache entry, with the digest that says what it was made from;
//! - [`config`]: a `khttpctl apply` file (TOML) read and checked, every error naming its file,
//!   line and field;
//! - [`plan`]: the difference between such a file and a running server, and its application;
//! - [`generate`]: man pages and shell completions for the package.
//!
//! All of it talks to a server through [`Control`]: khttpctl's client over a socket or the
//! driver's device, or khttpd itself in process (`khttpd --config`).

pub mod account;
pub mod config;
pub mod generate;
pub mod plan;
pub mod put;

use khttp_proto::{Request, Row, Status, read_rows};

/// One control call to a server.
pub trait Control {
    /// Sends `req` (with `direct`, the bodies of a `cache put`) and returns the reply's bytes.
    ///
    /// # Errors
    /// The server's refusal or an unreachable server, as one line of English.
    fn call(&mut self, req: &Request<'_>, direct: &[u8]) -> Result<Vec<u8>, String>;
}

/// A reply's rows as the command's row type, or one line saying why not.
///
/// # Errors
/// The reply is not a table of `R`.
pub fn rows<'a, R: Row<'a>>(reply: &'a [u8]) -> Result<Vec<R>, String> {
    read_rows(reply).map_err(|e| format!("protocol error: {e}"))
}

/// The one line a refusal carries: the server's own message, or its status's.
#[must_use]
pub fn refusal(status: Status, reply: &[u8]) -> String {
    read_rows::<khttp_proto::reply::ErrorRow<'_>>(reply)
        .ok()
        .and_then(|rows| rows.first().map(|r| r.message.to_string()))
        .unwrap_or_else(|| status.message().to_string())
}
