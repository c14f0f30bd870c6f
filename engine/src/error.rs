//! Errors, grouped by who is at fault.
//!
//! - [`RequestError`]: the peer sent something we refuse. Each maps to exactly one status code and
//!   reason text ([`RequestError::status`]); the connection then closes.
//! - [`CtlError`]: the administrator's command cannot be applied. Each maps to one `proto` status
//!   and one line of English.
//!
//! Every error is a small `Copy` value with `&'static str` text: the engine allocates no strings.

use core::fmt;

/// A request the engine refuses. The response is sent and the connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// 503: the request bodies held for applications would go past `body-buffer-bytes`
    /// (issue #21).
    BodiesBusy,
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
            Self::OutOfMemory | Self::BodiesBusy => 503,
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
            Self::BodiesBusy => "the server holds too many request bodies now; try again later",
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
pub enum CtlError {
    /// The URL prefix or URL is malformed; the inner error names the fault.
    InvalidPrefix(PrefixError),
    /// A reservation's ACL that cannot be read; the inner error names the fault.
    InvalidAcl(crate::acl::AclError),
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
    /// A request queue name that is empty, too long or holds a control character.
    InvalidQueueName,
    /// An application's command on the control endpoint (or the reverse).
    WrongEndpoint,
    /// The caller's user is not granted the reservation.
    NotGranted,
    /// The request queue belongs to another user.
    QueueOwned,
    /// A non-administrator's attach that names no reserved prefix.
    PrefixRequired,
    /// The server holds as many application handles as it allows.
    TooManySessions,
    /// A command this server does not carry out (certificates, on a host without TLS).
    NotSupported,
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
            Self::InvalidAcl(e) => e.message(),
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

/// Why a path cannot be canonicalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanonError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An escape that decodes to a control character (or NUL).
    RestrictedChar,
    /// A raw byte that is not allowed in a path (control character, space, `#`, `?`).
    BadChar,
    /// `..` segments would climb above the root.
    AboveRoot,
    /// A segment longer than `MAX_SEGMENT_LEN` (260).
    SegmentTooLong,
    /// More than `MAX_SEGMENTS` (255) segments.
    TooManySegments,
    /// No memory for the cooked copy.
    OutOfMemory,
}

impl CanonError {
    /// One line naming the fault.
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the URL path must start with '/'",
            Self::BadEscape => "the URL has a malformed percent-escape",
            Self::RestrictedChar => "the URL has an escaped control character",
            Self::BadChar => "the URL has a character that is not allowed",
            Self::AboveRoot => "the URL climbs above the root",
            Self::SegmentTooLong => "a URL path segment is too long",
            Self::TooManySegments => "the URL has too many path segments",
            Self::OutOfMemory => "out of memory",
        }
    }
}

impl From<OutOfMemory> for CanonError {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
    }
}

/// Why a prefix or URL was refused. Each names the fault in one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// Not `http://` (the scheme is lowercase only).
    Scheme,
    /// `https://` on a server without TLS (the driver, until it has it).
    HttpsUnsupported,
    /// A reservation whose scheme is not the one its port already serves.
    SchemeConflict,
    /// Nothing between `//` and `:`.
    MissingHost,
    /// A host that is not `+`, `*`, a DNS name or an IP literal.
    InvalidHost,
    /// No `:port` after the host.
    MissingPort,
    /// A port that is not 1..=65535 in decimal without a leading zero.
    InvalidPort,
    /// No path after the port.
    MissingPath,
    /// A reservation whose path does not end with `/`.
    NoTrailingSlash,
    /// A query string or fragment in a prefix or cache URL.
    QueryNotAllowed,
    /// A path that is not in canonical form or cannot be canonicalised.
    InvalidPath(CanonError),
    /// A path that is not already canonical (it would be written differently after cooking).
    NotCanonical,
    /// Longer than `MAX_PREFIX_LEN` (16,384 bytes).
    TooLong,
    /// No memory to hold the parsed prefix.
    OutOfMemory,
}

impl PrefixError {
    /// One line of English naming the fault.
    #[must_use]
    pub const fn message(&self) -> &'static str {
        match self {
            Self::Scheme => "the URL must start with \"http://\" or \"https://\" (lowercase)",
            Self::HttpsUnsupported => "this server has no TLS: https is served by khttpd only",
            Self::SchemeConflict => {
                "a port serves http or https, not both: this port already has reservations of \
                 the other scheme"
            }
            Self::MissingHost => "the URL has no host: use +, *, a host name or an IP address",
            Self::InvalidHost => {
                "the host must be +, *, a host name, an IPv4 address or a bracketed IPv6 address"
            }
            Self::MissingPort => "the URL has no port: write http://host:port/path/",
            Self::InvalidPort => "the port must be a number from 1 to 65535 without a leading zero",
            Self::MissingPath => "the URL has no path: it must continue with '/' after the port",
            Self::NoTrailingSlash => "a URL prefix must end with '/'",
            Self::QueryNotAllowed => "a URL prefix cannot contain '?' or '#'",
            Self::InvalidPath(e) => e.message(),
            Self::NotCanonical => {
                "the URL path is not canonical (remove '.', '..', '\\' and needless escapes)"
            }
            Self::TooLong => "the URL is too long",
            Self::OutOfMemory => "out of memory",
        }
    }
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl From<OutOfMemory> for PrefixError {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
    }
}
