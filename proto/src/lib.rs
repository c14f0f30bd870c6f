//! khttp-proto: the control protocol shared by the driver, khttpd and khttpctl.
//!
//! One request/reply per call: a 32-bit control code (an IOCTL code, [`ctl_code`]) and an input
//! buffer; for `cache put`, a second "direct" buffer carries the bodies (METHOD_IN_DIRECT on
//! Windows). The reply is a 32-bit [`Status`] and an output buffer. All integers are
//! little-endian; every buffer starts with a [`Header`] (version, reserved, size), and every count
//! and length is validated before use. Decoding arbitrary bytes returns an error, never panics.
//!
//! On Windows the buffers travel through `DeviceIoControl`; on Linux khttpd's Unix socket carries
//! the same bytes in the frames of [`frame`].
//!
//! This crate is `no_std` (with `alloc`), has no dependencies and no unsafe code.

#![no_std]
#![forbid(unsafe_code)]
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

pub mod frame;
pub mod reply;
pub mod spans;
mod wire;

pub use reply::{Row, error_reply, read_rows, refuse, write_rows};
pub use wire::{
    DIGEST_LEN, HEADER_LEN, Header, MAX_BYTES, MAX_COLS, MAX_HEADERS, MAX_QUEUE_PREFIXES,
    MAX_RECEIVE_BATCH, MAX_ROWS, MAX_STR, PutEntry, Request, Respond, Streamed, TableWriter, Value,
    decode_reply, decode_request, encode_request,
};

/// khttp's device type: above 0x8000, the range left to vendors (Microsoft Learn, "Defining
/// I/O Control Codes").
pub const DEVICE_TYPE: u32 = 0x8337;
/// `METHOD_BUFFERED`.
pub const METHOD_BUFFERED: u32 = 0;
/// `METHOD_IN_DIRECT`.
pub const METHOD_IN_DIRECT: u32 = 1;
/// `METHOD_OUT_DIRECT`.
pub const METHOD_OUT_DIRECT: u32 = 2;
/// `METHOD_NEITHER` (never used).
pub const METHOD_NEITHER: u32 = 3;
/// `FILE_ANY_ACCESS`.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`.
pub const FILE_WRITE_ACCESS: u32 = 2;

/// The `CTL_CODE` macro: `(DeviceType << 16) | (Access << 14) | (Function << 2) | Method`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The wire protocol version this crate speaks.
/// 2: `UrlaclAdd` carries a freshness policy, replies are typed rows with a bytes value, and
/// the request-queue and `LogReopen` commands exist (session 9). A peer of another version is
/// refused with [`Status::UnsupportedVersion`], not misread.
/// 3: `CachePut` carries the entry's digest and `CacheList` lists it (`khttpctl apply`).
/// 4: streamed answers: `QueueRespond` carries flags and the whole length, and `QueueSend`
/// brings the further pieces; `QueueReceive` says how much body it wants with the head and how
/// many requests it takes at most, its rows give the whole body's length, and
/// `QueueReceiveBody` brings the rest; `QueueRespond` may ask for no reply.
/// 5: tenancy (issue #21): a received request carries its canonical path and its client's
/// address, a queue its owner; attach may be refused because the queue belongs to another
/// user or names no prefix, and a session because the server holds too many.
/// 6: certificate bindings (`SslcertAdd`, `SslcertDelete`, `SslcertList`, `SslcertCa`) and
/// `https://` reservations (issue #24).
pub const PROTOCOL_VERSION: u16 = 6;

/// Declares a fieldless enum and its `ALL` array from one list of variants, so that `ALL` holds
/// every variant by construction (a variant added to the enum is added to `ALL`).
macro_rules! with_all {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])* $vis enum $name { $($(#[$vm])* $v = $n,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$(stringify!($v)),*].len()] = [$(Self::$v),*];
        }
    };
}

with_all! {
/// Control commands. The discriminant is the IOCTL function number (0x800 and up, never reused).
/// Not `#[non_exhaustive]`, like [`Request`]: a missed command is a compile error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Command {
    /// Protocol and engine version.
    Version = 0x800,
    /// Reserve a URL prefix.
    UrlaclAdd = 0x801,
    /// Delete a reservation.
    UrlaclDelete = 0x802,
    /// List reservations.
    UrlaclList = 0x803,
    /// Add an address to the IP listen list.
    IplistenAdd = 0x804,
    /// Remove an address from the IP listen list.
    IplistenDelete = 0x805,
    /// List the IP listen list.
    IplistenList = 0x806,
    /// Put a cache entry (bodies in the direct buffer).
    CachePut = 0x807,
    /// Delete a cache entry.
    CacheDelete = 0x808,
    /// Flush cache entries under a prefix, or all.
    CacheFlush = 0x809,
    /// List cache entries.
    CacheList = 0x80A,
    /// Counters.
    Stats = 0x80B,
    /// Read the limits.
    LimitsGet = 0x80C,
    /// Set one limit.
    LimitsSet = 0x80D,
    /// An application creates or attaches to a request queue for prefixes (issue #12).
    QueueAttach = 0x810,
    /// An application waits for the next request of a queue it attached to.
    QueueReceive = 0x811,
    /// An application answers a request (the body in the direct buffer).
    QueueRespond = 0x812,
    /// An application gives a request up: the client gets 503.
    QueueCancel = 0x813,
    /// An application detaches from a queue.
    QueueDetach = 0x814,
    /// List request queues (`khttpctl queue show`).
    QueueList = 0x815,
    /// Reopen the access log at its path (`khttpctl log reopen`, for logrotate).
    LogReopen = 0x816,
    /// An application sends the next piece of a streamed answer (the piece in the direct
    /// buffer).
    QueueSend = 0x817,
    /// An application receives more of a request's body (`HttpReceiveRequestEntityBody`).
    QueueReceiveBody = 0x818,
    /// Bind a certificate and its key to `ipport=` or `hostnameport=` (`netsh http add
    /// sslcert`).
    SslcertAdd = 0x819,
    /// Remove a certificate binding.
    SslcertDelete = 0x81A,
    /// List certificate bindings.
    SslcertList = 0x81B,
    /// The certificate of the server's local CA (what `khttpd --https` issues from).
    SslcertCa = 0x81C,
}
}

impl Command {
    /// The IOCTL function number.
    #[must_use]
    pub const fn function(self) -> u32 {
        self as u32
    }

    /// The buffer method: IN_DIRECT for `cache put` (the body rides in the output buffer),
    /// BUFFERED for the rest.
    #[must_use]
    pub const fn method(self) -> u32 {
        match self {
            Self::CachePut | Self::QueueRespond | Self::QueueSend => METHOD_IN_DIRECT,
            Self::QueueReceive | Self::QueueReceiveBody => METHOD_OUT_DIRECT,
            _ => METHOD_BUFFERED,
        }
    }

    /// Whether the command is an application's (the application endpoint), not an
    /// administrator's (the control endpoint).
    #[must_use]
    pub const fn for_applications(self) -> bool {
        matches!(
            self,
            Self::QueueAttach
                | Self::QueueReceive
                | Self::QueueRespond
                | Self::QueueSend
                | Self::QueueReceiveBody
                | Self::QueueCancel
                | Self::QueueDetach
        )
    }

    /// The access a caller's handle must have: write for changes, read for queries.
    #[must_use]
    pub const fn access(self) -> u32 {
        if self.changes_state() {
            FILE_WRITE_ACCESS
        } else {
            FILE_READ_ACCESS
        }
    }

    /// Whether the command changes anything.
    #[must_use]
    pub const fn changes_state(self) -> bool {
        !matches!(
            self,
            Self::Version
                | Self::UrlaclList
                | Self::IplistenList
                | Self::CacheList
                | Self::Stats
                | Self::LimitsGet
                | Self::QueueList
                | Self::QueueReceive
                | Self::QueueReceiveBody
                | Self::SslcertList
                | Self::SslcertCa
        )
    }

    /// Whether a successful run changes persisted configuration (reservations, IP list, limits).
    #[must_use]
    pub const fn changes_config(self) -> bool {
        matches!(
            self,
            Self::UrlaclAdd
                | Self::UrlaclDelete
                | Self::IplistenAdd
                | Self::IplistenDelete
                | Self::LimitsSet
        )
    }

    /// The full 32-bit IOCTL code.
    #[must_use]
    pub const fn code(self) -> u32 {
        ctl_code(DEVICE_TYPE, self.function(), self.method(), self.access())
    }

    /// The command with this full 32-bit code (all 32 bits are compared).
    #[must_use]
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }
}

with_all! {
/// Reply status. Values are stable: never renumbered, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The request buffer is malformed.
    Malformed = 1,
    /// The request's protocol version is not supported.
    UnsupportedVersion = 2,
    /// The control code names no command.
    UnknownCommand = 3,
    /// The output buffer is too small; the reply header's `size` says how large it must be.
    BufferTooSmall = 4,
    /// The URL prefix or URL is malformed.
    InvalidPrefix = 5,
    /// The prefix is already reserved.
    AlreadyExists = 6,
    /// No such reservation, entry or address.
    NotFound = 7,
    /// No reservation covers the URL.
    NoReservation = 8,
    /// The entry is larger than `cache-max-entry-bytes`.
    EntryTooLarge = 9,
    /// The cache would exceed `cache-max-bytes`.
    CacheFull = 10,
    /// A malformed or reserved `--header`.
    InvalidHeader = 11,
    /// A malformed content type.
    InvalidContentType = 12,
    /// A status code the cache cannot serve.
    InvalidStatus = 13,
    /// No limit of that name.
    UnknownLimit = 14,
    /// The limit value is out of range.
    InvalidLimitValue = 15,
    /// Not an IP address.
    InvalidAddress = 16,
    /// The address is already in the list.
    AddressExists = 17,
    /// The server is out of memory.
    OutOfMemory = 18,
    /// The caller may not use the control endpoint.
    AccessDenied = 19,
    /// The server could not persist the change; nothing was changed.
    PersistFailed = 20,
    /// A request queue name that is empty, too long or holds a control character.
    InvalidQueueName = 21,
    /// The command belongs to the other endpoint (application commands on the control
    /// endpoint, or administration on the application endpoint).
    WrongEndpoint = 22,
    /// The caller's user is not granted the reservation (`urlacl add … --user`).
    NotGranted = 23,
    /// The server cannot do that (the driver writes no access log to reopen).
    NotSupported = 24,
    /// A reservation's ACL that is not `user:NAME` or an SDDL DACL the server reads; the
    /// reply names the fault.
    InvalidAcl = 25,
    /// The request queue belongs to another user: only that user, or an administrator, may
    /// attach to it.
    QueueOwned = 26,
    /// An attach that names no reserved prefix: only an administrator may make one.
    PrefixRequired = 27,
    /// The server holds as many connections on this socket as it allows (in all, or for this
    /// user), or a connection as many attaches.
    TooManySessions = 28,
    /// Not a reply to the call just made: news of an earlier answer sent without waiting
    /// (`Respond::news_only`), one [`reply::NewsRow`]; the call's own reply follows.
    News = 29,
    /// A certificate or key that cannot be bound (it does not parse, the key is not the
    /// certificate's, the binding is malformed); the reply names the fault.
    InvalidCertificate = 30,
}
}

/// The NTSTATUS prefix of a refused METHOD_IN_DIRECT request ([`Status::direct_ntstatus`]).
pub const DIRECT_REFUSAL: u32 = 0xE0B7_0000;

impl Status {
    /// The status with this value.
    #[must_use]
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u32 == v)
    }

    /// The NTSTATUS that carries this refusal for a METHOD_IN_DIRECT request (`cache put`),
    /// which has no reply buffer: a customer-defined error code (severity 3, bit 29 set,
    /// facility 0x0B7) whose low bits are the status. `STATUS_SUCCESS` for [`Status::Ok`].
    #[must_use]
    pub const fn direct_ntstatus(self) -> u32 {
        match self {
            Self::Ok => 0,
            s => DIRECT_REFUSAL | s as u32,
        }
    }

    /// The refusal a METHOD_IN_DIRECT request's NTSTATUS carries ([`Status::direct_ntstatus`]).
    #[must_use]
    pub fn from_direct_ntstatus(ntstatus: u32) -> Option<Self> {
        if ntstatus & 0xFFFF_0000 != DIRECT_REFUSAL {
            return None;
        }
        Self::from_u32(ntstatus & 0xFFFF).filter(|s| *s != Self::Ok)
    }

    /// One line of English for the administrator: the engine's own message for every status
    /// but [`Status::InvalidPrefix`] and [`Status::InvalidAcl`] (whose replies name the fault), and what khttpctl shows for
    /// a refused `cache put` to the driver, whose NTSTATUS carries no message.
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::Ok => "success",
            Self::Malformed => "malformed control request",
            Self::UnsupportedVersion => "unsupported control protocol version",
            Self::UnknownCommand => "unknown control command",
            Self::BufferTooSmall => "reply buffer too small",
            Self::InvalidPrefix => "invalid URL prefix",
            Self::AlreadyExists => "the URL prefix is already reserved",
            Self::NotFound => "no such entry",
            Self::NoReservation => "no reservation covers this URL",
            Self::EntryTooLarge => "the entry is larger than cache-max-entry-bytes",
            Self::CacheFull => "the cache would exceed cache-max-bytes",
            Self::InvalidHeader => {
                "invalid header: expected \"Name: value\" naming a field the server does not set itself"
            }
            Self::InvalidContentType => "invalid content type",
            Self::InvalidStatus => "invalid status: expected 200..=599, not 204, 206 or 304",
            Self::UnknownLimit => "unknown limit name",
            Self::InvalidLimitValue => "limit value out of range",
            Self::InvalidAddress => "not an IPv4 or IPv6 address",
            Self::AddressExists => "the address is already in the IP listen list",
            Self::OutOfMemory => "out of memory",
            Self::AccessDenied => "access denied",
            Self::PersistFailed => "could not save the change",
            Self::WrongEndpoint => "this command belongs to the other endpoint",
            Self::NotSupported => "this server cannot do that",
            Self::InvalidAcl => "invalid URL ACL",
            Self::NotGranted => {
                "the reservation does not grant this user (khttpctl urlacl add PREFIX --user NAME)"
            }
            Self::InvalidQueueName => {
                "invalid queue name: 1 to 256 characters, no control characters"
            }
            Self::QueueOwned => {
                "the request queue belongs to another user (choose another queue name)"
            }
            Self::PrefixRequired => {
                "an application must name the reserved prefixes it serves (only an administrator may attach without one)"
            }
            Self::TooManySessions => {
                "the server holds as many connections as it allows; try again when one ends"
            }
            Self::News => "news of an earlier answer",
            Self::InvalidCertificate => "the certificate or key cannot be bound",
        }
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// Shorter than a field or length says.
    Truncated,
    /// Bytes left over after the last field.
    TrailingBytes,
    /// The header's size does not match the buffer.
    SizeMismatch,
    /// A reserved field is not zero.
    ReservedNotZero,
    /// An unknown protocol version.
    Version,
    /// A string that is not UTF-8.
    NotUtf8,
    /// A length or count over its limit.
    TooLarge,
    /// A field value outside its domain.
    InvalidValue,
    /// The direct buffer's length does not match the lengths in the request.
    DirectLength,
    /// Memory for a decoded request or a reply could not be allocated.
    OutOfMemory,
}

impl ProtoError {
    /// One line of English.
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::Truncated => "control message truncated",
            Self::TrailingBytes => "control message has trailing bytes",
            Self::SizeMismatch => "control message size field does not match its length",
            Self::ReservedNotZero => "control message reserved field is not zero",
            Self::Version => "unsupported control protocol version",
            Self::NotUtf8 => "control message string is not UTF-8",
            Self::TooLarge => "control message length or count too large",
            Self::InvalidValue => "control message field out of range",
            Self::DirectLength => "cache body length does not match the request",
            Self::OutOfMemory => "out of memory",
        }
    }

    /// The reply status for this error.
    #[must_use]
    pub const fn status(self) -> Status {
        match self {
            Self::Version => Status::UnsupportedVersion,
            Self::OutOfMemory => Status::OutOfMemory,
            _ => Status::Malformed,
        }
    }
}

impl core::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::{Command, Status};

    #[test]
    fn codes_are_distinct_and_full_width() {
        for c in Command::ALL {
            assert_eq!(Command::from_code(c.code()), Some(c));
            assert_eq!(c.code() >> 16, 0x8337);
            assert_eq!(
                Command::from_code(c.code() ^ 0x4000),
                None,
                "access bits are compared"
            );
        }
        // CTL_CODE(0x8337, 0x800, METHOD_BUFFERED, FILE_READ_ACCESS)
        assert_eq!(Command::Version.code(), 0x8337_6000);
        // CTL_CODE(0x8337, 0x807, METHOD_IN_DIRECT, FILE_WRITE_ACCESS)
        assert_eq!(Command::CachePut.code(), 0x8337_A01D);
    }

    /// `Command::ALL` holds every command: the match below is exhaustive, so a new command is a
    /// compile error here until it is numbered, and then this fails unless `ALL` has it.
    #[test]
    fn command_all_is_complete() {
        let index = |c: Command| match c {
            Command::Version => 0,
            Command::UrlaclAdd => 1,
            Command::UrlaclDelete => 2,
            Command::UrlaclList => 3,
            Command::IplistenAdd => 4,
            Command::IplistenDelete => 5,
            Command::IplistenList => 6,
            Command::CachePut => 7,
            Command::CacheDelete => 8,
            Command::CacheFlush => 9,
            Command::CacheList => 10,
            Command::Stats => 11,
            Command::LimitsGet => 12,
            Command::LimitsSet => 13,
            Command::QueueAttach => 14,
            Command::QueueReceive => 15,
            Command::QueueRespond => 16,
            Command::QueueCancel => 17,
            Command::QueueDetach => 18,
            Command::QueueList => 19,
            Command::LogReopen => 20,
            Command::QueueSend => 21,
            Command::QueueReceiveBody => 22,
            Command::SslcertAdd => 23,
            Command::SslcertDelete => 24,
            Command::SslcertList => 25,
            Command::SslcertCa => 26,
        };
        let mut seen = [false; 27];
        for c in Command::ALL {
            seen[index(c)] = true;
        }
        assert_eq!(Command::ALL.len(), seen.len());
        assert!(seen.iter().all(|s| *s), "missing from ALL: {seen:?}");
    }

    #[test]
    fn statuses_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32, "values are dense and never renumbered");
            assert_eq!(Status::from_u32(*s as u32), Some(*s));
        }
        assert_eq!(Status::from_u32(999), None);
    }

    /// A direct request's refusal survives the NTSTATUS, which is an error in the customer range
    /// and never collides with a system status.
    #[test]
    fn direct_refusals_round_trip() {
        assert_eq!(Status::Ok.direct_ntstatus(), 0);
        for s in Status::ALL.iter().copied().filter(|s| *s != Status::Ok) {
            let nt = s.direct_ntstatus();
            assert_eq!(nt >> 30, 3, "severity error");
            assert_ne!(nt & 0x2000_0000, 0, "customer bit");
            assert_eq!(Status::from_direct_ntstatus(nt), Some(s));
        }
        assert_eq!(Status::from_direct_ntstatus(0xC000_000D), None); // STATUS_INVALID_PARAMETER
        assert_eq!(Status::from_direct_ntstatus(super::DIRECT_REFUSAL), None);
        assert_eq!(
            Status::from_direct_ntstatus(super::DIRECT_REFUSAL | 999),
            None
        );
    }
}
