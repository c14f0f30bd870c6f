//! Errors, grouped by who is at fault.
//!
//! - [`RequestError`]: the peer sent something we refuse. Each maps to exactly one status code and
//!   reason text ([`RequestError::status`]); the connection then closes.
//! - [`CtlError`]: the administrator's command cannot be applied. Each maps to one `proto` status
//!   and one line of English.
//!
//! Every error is a small `Copy` value with `&'static str` text: the engine allocates no strings.

use core::fmt;

use crate::route::PrefixError;

/// A request the engine refuses. The response is sent and the connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// 400: malformed syntax or a framing ambiguity; the text names what.
    BadRequest(&'static str),
    /// 414: the request-target is longer than `max-url-length`.
    UriTooLong,
    /// 431: the head, one field, or the field count is over its limit; the text names which.
    HeadersTooLarge(&'static str),
    /// 501: a transfer coding this server does not implement (RFC 9112 §6.1).
    NotImplemented(&'static str),
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// 417: an `Expect` other than `100-continue` (RFC 9110 §10.1.1).
    ExpectationFailed,
    /// 413: a request body larger than the server is willing to read and discard.
    ContentTooLarge,
    /// 503: the engine could not allocate memory for this request.
    OutOfMemory,
}

impl RequestError {
    /// The status code sent for this error.
    #[must_use]
    pub const fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::UriTooLong => 414,
            Self::HeadersTooLarge(_) => 431,
            Self::NotImplemented(_) => 501,
            Self::VersionNotSupported => 505,
            Self::ExpectationFailed => 417,
            Self::ContentTooLarge => 413,
            Self::OutOfMemory => 503,
        }
    }

    /// One line of text for the response body and the logs.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(why) | Self::HeadersTooLarge(why) | Self::NotImplemented(why) => why,
            Self::UriTooLong => "the request URL is too long",
            Self::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
            Self::ExpectationFailed => "the only expectation supported is 100-continue",
            Self::ContentTooLarge => "the request body is too large",
            Self::OutOfMemory => "the server is out of memory",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

/// A control command that cannot be applied. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CtlError {
    /// The URL prefix or URL is malformed; the inner error names the fault.
    InvalidPrefix(PrefixError),
    /// `urlacl add` of a prefix already reserved (in the same host category).
    AlreadyExists,
    /// `urlacl delete`, `cache delete` or `iplisten delete` of something that is not there.
    NotFound,
    /// A cache URL that no reservation covers.
    NoReservation,
    /// The body is larger than `cache-max-entry-bytes`.
    EntryTooLarge,
    /// Adding the entry would take the cache over `cache-max-bytes`.
    CacheFull,
    /// A `--header` line that is malformed, or names a field the server controls.
    InvalidHeader,
    /// A `--content-type` value that is not a valid field value.
    InvalidContentType,
    /// A `--status` outside 200..=599, or one whose framing the cache cannot serve (204, 206, 304).
    InvalidStatus,
    /// A limit name that does not exist.
    UnknownLimit,
    /// A limit value outside its allowed range.
    InvalidLimitValue,
    /// An `iplisten` address that is not an IPv4 or IPv6 literal.
    InvalidAddress,
    /// `iplisten add` of an address already in the list.
    AddressExists,
    /// Memory for the change could not be allocated.
    OutOfMemory,
}

impl CtlError {
    /// One line of English for the administrator: the fault for a prefix, otherwise the
    /// status's message (khttp-proto's `Status::message`, so that a refusal reads the same
    /// whether it arrives as a reply or, from the driver, as an NTSTATUS).
    #[must_use]
    pub fn message(&self) -> &'static str {
        match self {
            Self::InvalidPrefix(e) => e.message(),
            e => khttp_proto::Status::from(*e).message(),
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl From<PrefixError> for CtlError {
    fn from(e: PrefixError) -> Self {
        match e {
            PrefixError::OutOfMemory => Self::OutOfMemory,
            e => Self::InvalidPrefix(e),
        }
    }
}

/// A fallible allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

impl From<alloc::collections::TryReserveError> for OutOfMemory {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        Self
    }
}

impl From<OutOfMemory> for CtlError {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
    }
}

impl From<OutOfMemory> for RequestError {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
    }
}
