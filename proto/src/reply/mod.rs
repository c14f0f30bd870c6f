//! Typed replies: each command's reply rows as a struct, encoded and decoded here and nowhere
//! else, so that no caller reads a reply by column index.
//!
//! | command | rows |
//! |---|---|
//! | `Version` | one [`VersionRow`] |
//! | `UrlaclList` | [`ReservationRow`] per reservation |
//! | `IplistenList` | [`AddressRow`] per address |
//! | `CachePut` | one [`PutRow`] |
//! | `CacheFlush` | one [`FlushRow`] |
//! | `CacheList` | [`EntryRow`] per entry |
//! | `Stats` | [`CounterRow`] per counter |
//! | `LimitsGet` | [`LimitRow`] per limit |
//! | the others | none |
//! | any refusal | one [`ErrorRow`] |
//!
//! On the wire a reply is a table (`rows:u32 cols:u16 value*`, see the crate documentation);
//! [`read_rows`] refuses a table whose column count is not the row type's.

use alloc::vec::Vec;

use crate::wire::{TableWriter, Value, decode_reply};
use crate::{HEADER_LEN, PROTOCOL_VERSION, ProtoError, Status};

/// One reply row type.
pub trait Row<'a>: Sized {
    /// Its columns.
    const COLS: u16;
    /// Writes the row.
    fn write(&self, t: &mut TableWriter<'_>);
    /// Reads a row of exactly [`Row::COLS`] values.
    ///
    /// # Errors
    /// [`ProtoError::InvalidValue`] when a value has the wrong kind or is out of range.
    fn read(cells: &[Value<'a>]) -> Result<Self, ProtoError>;
}

fn num(cells: &[Value<'_>], i: usize) -> Result<u64, ProtoError> {
    cells
        .get(i)
        .and_then(Value::as_u64)
        .ok_or(ProtoError::InvalidValue)
}

fn text<'a>(cells: &[Value<'a>], i: usize) -> Result<&'a str, ProtoError> {
    match cells.get(i) {
        Some(Value::Str(s)) => Ok(s),
        _ => Err(ProtoError::InvalidValue),
    }
}

fn bytes<'a>(cells: &[Value<'a>], i: usize) -> Result<&'a [u8], ProtoError> {
    match cells.get(i) {
        Some(Value::Bytes(b)) => Ok(b),
        _ => Err(ProtoError::InvalidValue),
    }
}

/// `u64::MAX` on the wire means "none".
fn opt(v: u64) -> Option<u64> {
    Some(v).filter(|v| *v != u64::MAX)
}

/// `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionRow<'a> {
    /// The protocol version the server speaks.
    pub protocol: u16,
    /// The engine's version.
    pub engine: &'a str,
}

impl<'a> Row<'a> for VersionRow<'a> {
    const COLS: u16 = 2;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::U64(u64::from(self.protocol)),
            Value::Str(self.engine),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            protocol: u16::try_from(num(c, 0)?).map_err(|_| ProtoError::InvalidValue)?,
            engine: text(c, 1)?,
        })
    }
}

/// One reservation (`urlacl show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservationRow<'a> {
    /// The prefix, as the server writes it.
    pub prefix: &'a str,
    /// Its ACL (`user:NAME` or SDDL), if any.
    pub acl: Option<&'a str>,
    /// Its freshness policy (a `Cache-Control` value), if any.
    pub cache_control: Option<&'a str>,
}

impl<'a> Row<'a> for ReservationRow<'a> {
    const COLS: u16 = 3;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::Str(self.prefix),
            Value::Str(self.acl.unwrap_or("")),
            Value::Str(self.cache_control.unwrap_or("")),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            prefix: text(c, 0)?,
            acl: Some(text(c, 1)?).filter(|s| !s.is_empty()),
            cache_control: Some(text(c, 2)?).filter(|s| !s.is_empty()),
        })
    }
}

/// One address of the IP listen list (`iplisten show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRow<'a> {
    /// The address, as text.
    pub addr: &'a str,
}

impl<'a> Row<'a> for AddressRow<'a> {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::Str(self.addr)]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self { addr: text(c, 0)? })
    }
}

/// What a `cache put` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutRow {
    /// An entry was replaced.
    pub replaced: bool,
    /// Body bytes stored (all variants).
    pub bytes: u64,
}

impl Row<'_> for PutRow {
    const COLS: u16 = 2;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::U64(u64::from(self.replaced)), Value::U64(self.bytes)]);
    }
    fn read(c: &[Value<'_>]) -> Result<Self, ProtoError> {
        Ok(Self {
            replaced: num(c, 0)? != 0,
            bytes: num(c, 1)?,
        })
    }
}

/// What a `cache flush` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRow {
    /// Entries removed.
    pub removed: u64,
}

impl Row<'_> for FlushRow {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::U64(self.removed)]);
    }
    fn read(c: &[Value<'_>]) -> Result<Self, ProtoError> {
        Ok(Self {
            removed: num(c, 0)?,
        })
    }
}

/// One cache entry (`cache show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRow<'a> {
    /// Its URL.
    pub url: &'a str,
    /// Its status code.
    pub status: u16,
    /// Its content type.
    pub content_type: &'a str,
    /// Bytes of the identity body.
    pub bytes: u64,
    /// The other codings held, comma-separated (`gzip,br`), or empty.
    pub codings: &'a str,
    /// Hits so far.
    pub hits: u64,
    /// Seconds left to live, if it expires.
    pub ttl_left: Option<u64>,
    /// Last-Modified, seconds since the Unix epoch, if known.
    pub last_modified: Option<u64>,
    /// The digest it was put with ([`crate::PutEntry::digest`]), if any.
    pub digest: Option<[u8; crate::DIGEST_LEN]>,
}

impl<'a> Row<'a> for EntryRow<'a> {
    const COLS: u16 = 9;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::Str(self.url),
            Value::U64(u64::from(self.status)),
            Value::Str(self.content_type),
            Value::U64(self.bytes),
            Value::Str(self.codings),
            Value::U64(self.hits),
            Value::U64(self.ttl_left.unwrap_or(u64::MAX)),
            Value::U64(self.last_modified.unwrap_or(u64::MAX)),
            Value::Bytes(self.digest.as_ref().map_or(&[][..], |d| &d[..])),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            url: text(c, 0)?,
            status: u16::try_from(num(c, 1)?).map_err(|_| ProtoError::InvalidValue)?,
            content_type: text(c, 2)?,
            bytes: num(c, 3)?,
            codings: text(c, 4)?,
            hits: num(c, 5)?,
            ttl_left: opt(num(c, 6)?),
            last_modified: opt(num(c, 7)?),
            digest: match bytes(c, 8)? {
                [] => None,
                b => Some(b.try_into().map_err(|_| ProtoError::InvalidValue)?),
            },
        })
    }
}

/// One counter (`stats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterRow<'a> {
    /// Its name (`requests`, `cache-hits`, …).
    pub name: &'a str,
    /// Its value.
    pub value: u64,
}

impl<'a> Row<'a> for CounterRow<'a> {
    const COLS: u16 = 2;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::Str(self.name), Value::U64(self.value)]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            name: text(c, 0)?,
            value: num(c, 1)?,
        })
    }
}

/// One limit (`limits show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRow<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its value.
    pub value: u64,
    /// The smallest value allowed.
    pub min: u64,
    /// The largest value allowed.
    pub max: u64,
}

impl<'a> Row<'a> for LimitRow<'a> {
    const COLS: u16 = 4;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::Str(self.name),
            Value::U64(self.value),
            Value::U64(self.min),
            Value::U64(self.max),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            name: text(c, 0)?,
            value: num(c, 1)?,
            min: num(c, 2)?,
            max: num(c, 3)?,
        })
    }
}

/// What a queue attach gave (`QueueAttach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachRow {
    /// The queue's id, for receive and detach.
    pub queue: u32,
}

impl Row<'_> for AttachRow {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::U64(u64::from(self.queue))]);
    }
    fn read(c: &[Value<'_>]) -> Result<Self, ProtoError> {
        Ok(Self {
            queue: u32::try_from(num(c, 0)?).map_err(|_| ProtoError::InvalidValue)?,
        })
    }
}

/// A request handed to an application (`QueueReceive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRow<'a> {
    /// Its id, for the answer.
    pub id: u64,
    /// The request head as the client sent it (request line and fields).
    pub head: &'a [u8],
    /// Where the method, the target and each header field lie in `head`, as khttp's parser
    /// found them ([`crate::spans`]): the application reads them instead of parsing again.
    pub spans: &'a [u8],
    /// The start of the request body, decoded: all of it, or as much as the receive asked
    /// for or had room for (`QueueReceiveBody` brings the rest).
    pub body: &'a [u8],
    /// The whole body's length.
    pub body_len: u64,
    /// The request's canonical path, which routing and the cache keyed on (escapes normalised,
    /// `%2F`, `%5C` and `\` as `/`, dot-segments removed), then `?` and the query as sent if
    /// there was one: http.sys's cooked URL, and what an application that forwards the
    /// request must use (the head's raw target may name another path).
    pub path: &'a [u8],
    /// The client's address, `IP:PORT` (`[IPv6]:PORT`), or empty when the server does not know
    /// it.
    pub remote: &'a str,
}

impl<'a> Row<'a> for RequestRow<'a> {
    const COLS: u16 = 7;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::U64(self.id),
            Value::Bytes(self.head),
            Value::Bytes(self.spans),
            Value::Bytes(self.body),
            Value::U64(self.body_len),
            Value::Bytes(self.path),
            Value::Str(self.remote),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        let row = Self {
            id: num(c, 0)?,
            head: bytes(c, 1)?,
            spans: bytes(c, 2)?,
            body: bytes(c, 3)?,
            body_len: num(c, 4)?,
            path: bytes(c, 5)?,
            remote: text(c, 6)?,
        };
        if u64::try_from(row.body.len()).map_or(true, |n| n > row.body_len) {
            return Err(ProtoError::InvalidValue);
        }
        Ok(row)
    }
}

/// More of a request's body (`QueueReceiveBody`): empty past its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRow<'a> {
    /// The bytes from the offset asked for.
    pub bytes: &'a [u8],
}

impl<'a> Row<'a> for BodyRow<'a> {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::Bytes(self.bytes)]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            bytes: bytes(c, 0)?,
        })
    }
}

/// What became of an answer (`QueueRespond`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespondRow {
    /// The client was still waiting and got it.
    pub delivered: bool,
    /// The response was stored in the cache for later hits.
    pub cached: bool,
}

impl RespondRow {
    /// The row as the driver returns it for `QueueRespond` and `QueueSend`, whose
    /// METHOD_IN_DIRECT buffer carries the body in and so has no room for a reply: in the
    /// request's NTSTATUS, a customer-defined *success* code (severity 0, bit 29 set, facility
    /// 0x0B7; `NT_SUCCESS` holds) whose bit 0 is delivered and bit 1 cached. Not in the
    /// request's `Information`, which may not exceed the buffer's length (an empty piece has
    /// none).
    #[must_use]
    pub const fn to_ntstatus(self) -> u32 {
        DIRECT_ANSWER | (self.delivered as u32) | ((self.cached as u32) << 1)
    }

    /// The row from a request's NTSTATUS ([`RespondRow::to_ntstatus`]); `None` for any other
    /// status.
    #[must_use]
    pub const fn from_ntstatus(ntstatus: u32) -> Option<Self> {
        if ntstatus & !3 != DIRECT_ANSWER {
            return None;
        }
        Some(Self {
            delivered: ntstatus & 1 != 0,
            cached: ntstatus & 2 != 0,
        })
    }
}

/// News of an answer sent without waiting (`Respond::news_only`): the reply to no call, sent
/// ahead of a later call's reply with [`crate::Status::News`], when the answer was refused
/// (`status` its refusal, `message` why; its client got 502) or its client no longer waited
/// (`status` 0, not delivered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewsRow<'a> {
    /// The request the answer was for.
    pub id: u64,
    /// The refusal's [`crate::Status`] as a number; 0 when the answer was accepted.
    pub status: u32,
    /// Its client was still waiting and got it.
    pub delivered: bool,
    /// Why it was refused; empty otherwise.
    pub message: &'a str,
}

impl<'a> Row<'a> for NewsRow<'a> {
    const COLS: u16 = 4;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::U64(self.id),
            Value::U64(u64::from(self.status)),
            Value::U64(u64::from(self.delivered)),
            Value::Str(self.message),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            id: num(c, 0)?,
            status: u32::try_from(num(c, 1)?).map_err(|_| ProtoError::InvalidValue)?,
            delivered: num(c, 2)? != 0,
            message: text(c, 3)?,
        })
    }
}

/// The NTSTATUS prefix of an answered METHOD_IN_DIRECT application call
/// ([`RespondRow::to_ntstatus`]).
pub const DIRECT_ANSWER: u32 = 0x20B7_0000;

impl Row<'_> for RespondRow {
    const COLS: u16 = 2;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::U64(u64::from(self.delivered)),
            Value::U64(u64::from(self.cached)),
        ]);
    }
    fn read(c: &[Value<'_>]) -> Result<Self, ProtoError> {
        Ok(Self {
            delivered: num(c, 0)? != 0,
            cached: num(c, 1)? != 0,
        })
    }
}

/// One request queue (`queue show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRow<'a> {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: &'a str,
    /// The prefixes it receives, space-separated.
    pub prefixes: &'a str,
    /// The application handles attached, `PID:UID` space-separated.
    pub processes: &'a str,
    /// The user it belongs to, who alone (or an administrator) may attach to it: `uid N` on
    /// khttpd, the user's SID on Windows.
    pub owner: &'a str,
    /// Requests queued and not yet answered.
    pub in_flight: u64,
    /// Requests handed to it.
    pub requests: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests refused (queue full, no application).
    pub refused: u64,
    /// Requests abandoned (application gone, invalid answer).
    pub abandoned: u64,
    /// Requests not answered in time.
    pub timed_out: u64,
}

impl<'a> Row<'a> for QueueRow<'a> {
    const COLS: u16 = 11;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::U64(u64::from(self.id)),
            Value::Str(self.name),
            Value::Str(self.prefixes),
            Value::Str(self.processes),
            Value::Str(self.owner),
            Value::U64(self.in_flight),
            Value::U64(self.requests),
            Value::U64(self.answered),
            Value::U64(self.refused),
            Value::U64(self.abandoned),
            Value::U64(self.timed_out),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            id: u32::try_from(num(c, 0)?).map_err(|_| ProtoError::InvalidValue)?,
            name: text(c, 1)?,
            prefixes: text(c, 2)?,
            processes: text(c, 3)?,
            owner: text(c, 4)?,
            in_flight: num(c, 5)?,
            requests: num(c, 6)?,
            answered: num(c, 7)?,
            refused: num(c, 8)?,
            abandoned: num(c, 9)?,
            timed_out: num(c, 10)?,
        })
    }
}

/// One certificate binding (`sslcert show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertRow<'a> {
    /// `ipport=IP:PORT` or `hostnameport=NAME:PORT`.
    pub binding: &'a str,
    /// The server certificate's SHA-256, upper-case hex pairs joined by `:`.
    pub sha256: &'a str,
    /// Its subjectAltName DNS names and addresses, joined by `,`.
    pub names: &'a str,
    /// Its `notAfter`, in seconds since the Unix epoch, if it could be read.
    pub not_after: Option<u64>,
    /// Certificates in the chain, the server's own included.
    pub chain: u64,
    /// Whether the binding is saved (not one made for a single run, as `--https`'s is).
    pub persisted: bool,
}

impl<'a> Row<'a> for CertRow<'a> {
    const COLS: u16 = 6;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[
            Value::Str(self.binding),
            Value::Str(self.sha256),
            Value::Str(self.names),
            Value::U64(self.not_after.unwrap_or(u64::MAX)),
            Value::U64(self.chain),
            Value::U64(u64::from(self.persisted)),
        ]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            binding: text(c, 0)?,
            sha256: text(c, 1)?,
            names: text(c, 2)?,
            not_after: opt(num(c, 3)?),
            chain: num(c, 4)?,
            persisted: num(c, 5)? != 0,
        })
    }
}

/// A PEM text (`sslcert ca`: the local CA's certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PemRow<'a> {
    /// The PEM text.
    pub pem: &'a str,
}

impl<'a> Row<'a> for PemRow<'a> {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::Str(self.pem)]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self { pem: text(c, 0)? })
    }
}

/// A refusal: one line of English naming the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRow<'a> {
    /// The message.
    pub message: &'a str,
}

impl<'a> Row<'a> for ErrorRow<'a> {
    const COLS: u16 = 1;
    fn write(&self, t: &mut TableWriter<'_>) {
        t.row(&[Value::Str(self.message)]);
    }
    fn read(c: &[Value<'a>]) -> Result<Self, ProtoError> {
        Ok(Self {
            message: text(c, 0)?,
        })
    }
}

/// Appends a reply of `rows` to `out`.
///
/// # Errors
/// [`ProtoError::OutOfMemory`] when `out` could not grow; `out` is then as it was.
pub fn write_rows<'r, R: Row<'r> + 'r>(
    out: &mut Vec<u8>,
    rows: impl IntoIterator<Item = R>,
) -> Result<(), ProtoError> {
    let mut t = TableWriter::new(out, R::COLS);
    for r in rows {
        r.write(&mut t);
    }
    t.finish()
}

/// Reads a reply of `R` rows. An empty reply (no table at all) is no rows.
///
/// # Errors
/// [`ProtoError`] naming the first fault; [`ProtoError::InvalidValue`] when the table has
/// rows of another width.
pub fn read_rows<'a, R: Row<'a>>(buf: &'a [u8]) -> Result<Vec<R>, ProtoError> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let table = decode_reply(buf)?;
    let mut rows = Vec::new();
    rows.try_reserve_exact(table.len())
        .map_err(|_| ProtoError::OutOfMemory)?;
    for cells in &table {
        if cells.len() != usize::from(R::COLS) {
            return Err(ProtoError::InvalidValue);
        }
        rows.push(R::read(cells)?);
    }
    Ok(rows)
}

/// A refusal: `out` becomes the one-row reply carrying `message`; returns `status`, for
/// `return refuse(out, status, message)`. Room for it is the caller's concern (an error reply
/// that cannot be written leaves `out` empty).
pub fn refuse(out: &mut Vec<u8>, status: Status, message: &str) -> Status {
    out.clear();
    let _ = error_reply(out, message);
    status
}

/// The reply of a command with nothing to report: a table of no rows and no columns.
///
/// # Errors
/// [`ProtoError::OutOfMemory`] when `out` could not grow; `out` is then as it was.
pub fn empty_reply(out: &mut Vec<u8>) -> Result<(), ProtoError> {
    TableWriter::new(out, 0).finish()
}

/// A one-row refusal carrying `message`.
///
/// # Errors
/// [`ProtoError::OutOfMemory`] when `out` could not grow; `out` is then as it was.
pub fn error_reply(out: &mut Vec<u8>, message: &str) -> Result<(), ProtoError> {
    write_rows(out, [ErrorRow { message }])
}

/// The reply to a call whose reply does not fit the caller's buffer
/// ([`Status::BufferTooSmall`]): a bare header whose `size` is the room needed.
#[must_use]
pub fn too_small_reply(needed: usize) -> [u8; HEADER_LEN] {
    let needed = u32::try_from(needed).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    for (dst, src) in h.iter_mut().zip(
        PROTOCOL_VERSION
            .to_le_bytes()
            .into_iter()
            .chain([0, 0])
            .chain(needed.to_le_bytes()),
    ) {
        *dst = src;
    }
    h
}

/// The device's output buffer (`DeviceIoControl`, METHOD_BUFFERED): the reply status as a
/// little-endian `u32`, then the reply. Writes into `dst` and returns the bytes written, or
/// `None` when `dst` is too small.
#[must_use]
pub fn encode_device_reply(status: Status, reply: &[u8], dst: &mut [u8]) -> Option<usize> {
    let total = reply.len().checked_add(4)?;
    let (head, rest) = dst.get_mut(..total)?.split_at_mut(4);
    head.copy_from_slice(&(status as u32).to_le_bytes());
    rest.copy_from_slice(reply);
    Some(total)
}

/// Splits a device output buffer into the status (as sent: it may be one this side does not
/// know) and the reply; `None` when it is shorter than the status.
#[must_use]
pub fn decode_device_reply(buf: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = buf.split_at_checked(4)?;
    let status = u32::from_le_bytes(head.try_into().ok()?);
    Some((status, rest))
}

#[cfg(test)]
mod tests;
