//! The byte formats.
//!
//! ```text
//! buffer  = header body
//! header  = version:u16 reserved:u16(=0) size:u32      ; size = length of the whole buffer
//! str     = len:u32 bytes                              ; UTF-8, len <= MAX_STR
//! request bodies, per command:
//!   Version, UrlaclList, IplistenList, Stats, LimitsGet:  (empty)
//!   UrlaclAdd:       prefix:str acl:str cache_control:str ; "" = none
//!   UrlaclDelete:    prefix:str
//!   IplistenAdd/Delete: addr:str
//!   CachePut:        url:str content_type:str status:u16 reserved:u16(=0)
//!                    ttl:u64 last_modified:u64           ; u64::MAX = none
//!                    header_count:u32 header:str*count   ; "Name: value"
//!                    identity_len:u64 gzip_len:u64 br_len:u64   ; u64::MAX = no variant
//!                    digest:bytes                        ; empty = none, else DIGEST_LEN octets
//!                    ; the direct buffer is identity ++ gzip ++ br, exactly
//!   CacheDelete:     url:str
//!   CacheFlush, CacheList: prefix:str                    ; "" = everything
//!   LimitsSet:       name:str value:u64
//!   QueueAttach:     name:str prefix_count:u32 prefix:str*count
//!   QueueReceive:    queue:u32 body_max:u64 max_requests:u32
//!                    ; body bytes wanted with each head; requests wanted at most (1..=64)
//!   QueueReceiveBody: id:u64 offset:u64                  ; more of a request's body
//!   QueueDetach:     queue:u32
//!   QueueRespond:    id:u64 status:u16 flags:u16 content_type:str
//!                    header_count:u32 header:str*count ttl:u64 body_len:u64 length:u64
//!                    ; ttl u64::MAX = do not cache; the direct buffer is the body, exactly;
//!                    ; flags bit 0 (STREAM): the body is the first piece, QueueSend the
//!                    ; rest; length = the whole body's length, u64::MAX = unknown (always
//!                    ; u64::MAX without STREAM); bit 1 (NO_REPLY): khttpd's socket sends
//!                    ; no reply to it (a device completes it as always); other bits 0
//!   QueueSend:       id:u64 flags:u16 reserved:u16(=0) body_len:u64
//!                    ; flags bit 0 (LAST): the body's last piece; the direct buffer is the
//!                    ; piece, exactly
//!   QueueCancel:     id:u64
//!   QueueList, LogReopen: (empty)
//! reply body = rows:u32 cols:u16 value*(rows*cols)
//! value   = 0:u8 u64 | 1:u8 str | 2:u8 bytes               ; bytes = len:u32 octets
//! ```

use alloc::vec::Vec;

use crate::{Command, PROTOCOL_VERSION, ProtoError};

/// Longest string field.
pub const MAX_STR: usize = 65_536;
/// Most `--header` lines in one put or response.
pub const MAX_HEADERS: usize = 64;
/// Most prefixes one queue attach names.
pub const MAX_QUEUE_PREFIXES: usize = 64;
/// Longest byte-string value in a reply (a request head and body handed to an application).
pub const MAX_BYTES: usize = 64 << 20;
/// Most rows in a reply.
pub const MAX_ROWS: usize = 1 << 22;
/// Most columns in a reply.
pub const MAX_COLS: usize = 64;
/// Bytes of a [`Header`].
pub const HEADER_LEN: usize = 8;
/// Bytes of an entry's digest ([`PutEntry::digest`]): a SHA-256.
pub const DIGEST_LEN: usize = 32;

/// The header that starts every buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Length of the whole buffer, header included.
    pub size: u32,
}

impl Header {
    /// Reads a header from the start of `buf` without checking `size` against `buf`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`], [`ProtoError::ReservedNotZero`].
    pub fn peek(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut d = Dec { buf, pos: 0 };
        let version = d.u16()?;
        if d.u16()? != 0 {
            return Err(ProtoError::ReservedNotZero);
        }
        Ok(Self {
            version,
            size: d.u32()?,
        })
    }
}

/// A cursor over untrusted bytes.
struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&'a str, ProtoError> {
        let len = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if len > MAX_STR {
            return Err(ProtoError::TooLarge);
        }
        core::str::from_utf8(self.take(len)?).map_err(|_| ProtoError::NotUtf8)
    }

    /// `count:u32 str*count`, at most `max` strings.
    fn strs(&mut self, max: usize) -> Result<Vec<&'a str>, ProtoError> {
        let count = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if count > max {
            return Err(ProtoError::TooLarge);
        }
        let mut v = Vec::new();
        v.try_reserve(count).map_err(|_| ProtoError::OutOfMemory)?;
        for _ in 0..count {
            v.push(self.str()?);
        }
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = usize::try_from(self.u32()?).map_err(|_| ProtoError::TooLarge)?;
        if len > MAX_BYTES {
            return Err(ProtoError::TooLarge);
        }
        self.take(len)
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, ProtoError> {
        Ok(Some(self.u64()?).filter(|v| *v != u64::MAX))
    }

    fn end(&self) -> Result<(), ProtoError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes)
        }
    }
}

/// Opens a buffer: checks the header against its length and returns a cursor after it.
fn open(buf: &[u8]) -> Result<Dec<'_>, ProtoError> {
    let h = Header::peek(buf)?;
    if h.version != PROTOCOL_VERSION {
        return Err(ProtoError::Version);
    }
    if usize::try_from(h.size).ok() != Some(buf.len()) {
        return Err(ProtoError::SizeMismatch);
    }
    Ok(Dec {
        buf,
        pos: HEADER_LEN,
    })
}

/// Appends little-endian fields; the header's size is patched by [`finish`].
fn start(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&header(0));
    at
}

/// A message header: version, a reserved zero, and `size` (patched by [`finish`]).
fn header(size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (version, rest) = h.split_at_mut(2);
    version.copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    if let Some(dst) = rest.get_mut(2..6) {
        dst.copy_from_slice(&size.to_le_bytes());
    }
    h
}

fn finish(out: &mut [u8], at: usize) {
    let size = u32::try_from(out.len().saturating_sub(at)).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(at.saturating_add(4)..at.saturating_add(HEADER_LEN)) {
        slot.copy_from_slice(&size.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    out.extend_from_slice(&v.unwrap_or(u64::MAX).to_le_bytes());
}

/// A `cache put` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutEntry<'a> {
    /// The URL, e.g. `http://+:8080/a.html`.
    pub url: &'a str,
    /// `Content-Type`; empty for the server's default.
    pub content_type: &'a str,
    /// Status code; 0 for 200.
    pub status: u16,
    /// Seconds to live.
    pub ttl: Option<u64>,
    /// Last-Modified, seconds since the Unix epoch.
    pub last_modified: Option<u64>,
    /// Extra `Name: value` lines.
    pub headers: Vec<&'a str>,
    /// Bytes of the identity body at the start of the direct buffer.
    pub identity_len: u64,
    /// Bytes of the gzip body after it.
    pub gzip_len: Option<u64>,
    /// Bytes of the brotli body after that.
    pub br_len: Option<u64>,
    /// What the entry was made from, as its sender summed it up (khttpctl: a SHA-256 of the
    /// body and every field of the put). The server keeps it with the entry and lists it, so
    /// that `khttpctl apply` re-sends only what changed; it does not check it.
    pub digest: Option<[u8; DIGEST_LEN]>,
}

impl PutEntry<'_> {
    /// Total bytes the direct buffer must hold.
    #[must_use]
    pub fn direct_len(&self) -> Option<u64> {
        self.identity_len
            .checked_add(self.gzip_len.unwrap_or(0))?
            .checked_add(self.br_len.unwrap_or(0))
    }
}

/// An application's answer (`QueueRespond`); the body rides in the direct buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Respond<'a> {
    /// The request it answers.
    pub id: u64,
    /// Status code.
    pub status: u16,
    /// `Content-Type`; empty for `application/octet-stream`.
    pub content_type: &'a str,
    /// Extra `Name: value` lines.
    pub headers: Vec<&'a str>,
    /// Seconds the server may keep the response in its cache for later hits; `None`: not at
    /// all. The server caches only what its rules allow.
    pub ttl: Option<u64>,
    /// Bytes of the body in the direct buffer.
    pub body_len: u64,
    /// `Some`: the direct buffer holds the body's first piece, and `QueueSend` brings the
    /// rest (a streamed response, never cached). `None`: it holds the whole body.
    pub stream: Option<Streamed>,
    /// The application does not wait for the outcome: khttpd's socket sends no reply (a
    /// refused answer still gives the client its 502). A device completes the call as always.
    pub no_reply: bool,
}

/// A streamed response's framing ([`Respond::stream`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// The whole body's length when the application knows it (`Content-Length`); `None`:
    /// chunked to an HTTP/1.1 client, delimited by the close to an HTTP/1.0 one.
    pub length: Option<u64>,
}

/// `QueueRespond`'s flag for a streamed response.
const RESPOND_STREAM: u16 = 1;
/// `QueueRespond`'s flag for an answer whose outcome the application does not wait for.
const RESPOND_NO_REPLY: u16 = 2;
/// Most requests one `QueueReceive` takes.
pub const MAX_RECEIVE_BATCH: u32 = 64;
/// `QueueSend`'s flag for the last piece.
const SEND_LAST: u16 = 1;

/// A decoded control request. Not `#[non_exhaustive]`: inside the workspace a command that a
/// dispatcher does not handle must be a compile error, not a wildcard at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `version`
    Version,
    /// `urlacl add PREFIX [--user|--sddl]`
    UrlaclAdd {
        /// The prefix.
        prefix: &'a str,
        /// The ACL text, if any.
        acl: Option<&'a str>,
        /// The freshness policy (a `Cache-Control` value), if any.
        cache_control: Option<&'a str>,
    },
    /// `urlacl delete PREFIX`
    UrlaclDelete {
        /// The prefix.
        prefix: &'a str,
    },
    /// `urlacl show`
    UrlaclList,
    /// `iplisten add ADDR`
    IplistenAdd {
        /// The address.
        addr: &'a str,
    },
    /// `iplisten delete ADDR`
    IplistenDelete {
        /// The address.
        addr: &'a str,
    },
    /// `iplisten show`
    IplistenList,
    /// `cache put`
    CachePut(PutEntry<'a>),
    /// `cache delete URL`
    CacheDelete {
        /// The URL.
        url: &'a str,
    },
    /// `cache flush [PREFIX]`
    CacheFlush {
        /// The prefix, or everything.
        prefix: Option<&'a str>,
    },
    /// `cache show [PREFIX]`
    CacheList {
        /// The prefix, or everything.
        prefix: Option<&'a str>,
    },
    /// `stats`
    Stats,
    /// `limits show`
    LimitsGet,
    /// `limits set NAME VALUE`
    LimitsSet {
        /// The limit's name.
        name: &'a str,
        /// The new value.
        value: u64,
    },
    /// An application attaches to the queue `name` for `prefixes` (each as reserved).
    QueueAttach {
        /// The queue's name.
        name: &'a str,
        /// The reserved prefixes.
        prefixes: Vec<&'a str>,
    },
    /// An application waits for the next request of `queue`.
    QueueReceive {
        /// The queue's id, from the attach.
        queue: u32,
        /// At most this many body bytes with the head; `QueueReceiveBody` brings the rest.
        body_max: u64,
        /// At most this many requests, when more are waiting than other receivers could
        /// take (1..=[`MAX_RECEIVE_BATCH`]).
        max_requests: u32,
    },
    /// An application asks for more of a request's body, from `offset`.
    QueueReceiveBody {
        /// The request.
        id: u64,
        /// The first body byte wanted.
        offset: u64,
    },
    /// An application answers.
    QueueRespond(Respond<'a>),
    /// The next piece of a streamed response's body (in the direct buffer).
    QueueSend {
        /// The request it answers.
        id: u64,
        /// Whether it is the last piece.
        last: bool,
        /// Bytes of the piece in the direct buffer.
        body_len: u64,
    },
    /// An application gives request `id` up.
    QueueCancel {
        /// The request.
        id: u64,
    },
    /// An application detaches from `queue`.
    QueueDetach {
        /// The queue's id.
        queue: u32,
    },
    /// `queue show`
    QueueList,
    /// `log reopen`
    LogReopen,
}

impl Request<'_> {
    /// The command this request is for.
    #[must_use]
    pub const fn command(&self) -> Command {
        match self {
            Self::Version => Command::Version,
            Self::UrlaclAdd { .. } => Command::UrlaclAdd,
            Self::UrlaclDelete { .. } => Command::UrlaclDelete,
            Self::UrlaclList => Command::UrlaclList,
            Self::IplistenAdd { .. } => Command::IplistenAdd,
            Self::IplistenDelete { .. } => Command::IplistenDelete,
            Self::IplistenList => Command::IplistenList,
            Self::CachePut(_) => Command::CachePut,
            Self::CacheDelete { .. } => Command::CacheDelete,
            Self::CacheFlush { .. } => Command::CacheFlush,
            Self::CacheList { .. } => Command::CacheList,
            Self::Stats => Command::Stats,
            Self::LimitsGet => Command::LimitsGet,
            Self::LimitsSet { .. } => Command::LimitsSet,
            Self::QueueAttach { .. } => Command::QueueAttach,
            Self::QueueReceive { .. } => Command::QueueReceive,
            Self::QueueReceiveBody { .. } => Command::QueueReceiveBody,
            Self::QueueRespond(_) => Command::QueueRespond,
            Self::QueueSend { .. } => Command::QueueSend,
            Self::QueueCancel { .. } => Command::QueueCancel,
            Self::QueueDetach { .. } => Command::QueueDetach,
            Self::QueueList => Command::QueueList,
            Self::LogReopen => Command::LogReopen,
        }
    }
}

/// Encodes a request's input buffer (the direct buffer for `cache put` is the caller's).
/// Returns the control code to send it with.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) -> u32 {
    let at = start(out);
    match req {
        Request::Version
        | Request::UrlaclList
        | Request::IplistenList
        | Request::Stats
        | Request::LimitsGet
        | Request::QueueList
        | Request::LogReopen => {}
        Request::QueueAttach { name, prefixes } => {
            put_str(out, name);
            put_count(out, prefixes.len());
            for p in prefixes {
                put_str(out, p);
            }
        }
        Request::QueueReceive {
            queue,
            body_max,
            max_requests,
        } => {
            out.extend_from_slice(&queue.to_le_bytes());
            out.extend_from_slice(&body_max.to_le_bytes());
            out.extend_from_slice(&max_requests.to_le_bytes());
        }
        Request::QueueReceiveBody { id, offset } => {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        Request::QueueDetach { queue } => out.extend_from_slice(&queue.to_le_bytes()),
        Request::QueueCancel { id } => out.extend_from_slice(&id.to_le_bytes()),
        Request::QueueRespond(r) => {
            out.extend_from_slice(&r.id.to_le_bytes());
            out.extend_from_slice(&r.status.to_le_bytes());
            let mut flags = if r.stream.is_some() {
                RESPOND_STREAM
            } else {
                0
            };
            if r.no_reply {
                flags |= RESPOND_NO_REPLY;
            }
            out.extend_from_slice(&flags.to_le_bytes());
            put_str(out, r.content_type);
            put_count(out, r.headers.len());
            for h in &r.headers {
                put_str(out, h);
            }
            put_opt(out, r.ttl);
            out.extend_from_slice(&r.body_len.to_le_bytes());
            put_opt(out, r.stream.and_then(|s| s.length));
        }
        Request::QueueSend { id, last, body_len } => {
            out.extend_from_slice(&id.to_le_bytes());
            let flags = if *last { SEND_LAST } else { 0 };
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&body_len.to_le_bytes());
        }
        Request::UrlaclAdd {
            prefix,
            acl,
            cache_control,
        } => {
            put_str(out, prefix);
            put_str(out, acl.unwrap_or(""));
            put_str(out, cache_control.unwrap_or(""));
        }
        Request::UrlaclDelete { prefix } => put_str(out, prefix),
        Request::IplistenAdd { addr } | Request::IplistenDelete { addr } => put_str(out, addr),
        Request::CachePut(p) => {
            put_str(out, p.url);
            put_str(out, p.content_type);
            out.extend_from_slice(&p.status.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            put_opt(out, p.ttl);
            put_opt(out, p.last_modified);
            let n = u32::try_from(p.headers.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n.to_le_bytes());
            for h in &p.headers {
                put_str(out, h);
            }
            out.extend_from_slice(&p.identity_len.to_le_bytes());
            put_opt(out, p.gzip_len);
            put_opt(out, p.br_len);
            put_bytes(out, p.digest.as_ref().map_or(&[][..], |d| &d[..]));
        }
        Request::CacheDelete { url } => put_str(out, url),
        Request::CacheFlush { prefix } | Request::CacheList { prefix } => {
            put_str(out, prefix.unwrap_or(""))
        }
        Request::LimitsSet { name, value } => {
            put_str(out, name);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    finish(out, at);
    req.command().code()
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// `QueueRespond`'s fields.
fn decode_respond<'a>(d: &mut Dec<'a>, direct_len: usize) -> Result<Respond<'a>, ProtoError> {
    let id = d.u64()?;
    let status = d.u16()?;
    let flags = d.u16()?;
    if flags & !(RESPOND_STREAM | RESPOND_NO_REPLY) != 0 {
        return Err(ProtoError::ReservedNotZero);
    }
    let content_type = d.str()?;
    let headers = d.strs(MAX_HEADERS)?;
    let ttl = d.opt_u64()?;
    let body_len = d.u64()?;
    let length = d.opt_u64()?;
    let stream = match (flags & RESPOND_STREAM != 0, length) {
        (true, length) => Some(Streamed { length }),
        (false, None) => None,
        (false, Some(_)) => return Err(ProtoError::InvalidValue),
    };
    // A first piece longer than the whole body it announces.
    if length.is_some_and(|n| body_len > n) {
        return Err(ProtoError::InvalidValue);
    }
    if u64::try_from(direct_len).ok() != Some(body_len) {
        return Err(ProtoError::DirectLength);
    }
    Ok(Respond {
        id,
        status,
        content_type,
        headers,
        ttl,
        body_len,
        stream,
        no_reply: flags & RESPOND_NO_REPLY != 0,
    })
}

/// `QueueSend`'s fields.
fn decode_send<'a>(d: &mut Dec<'a>, direct_len: usize) -> Result<Request<'a>, ProtoError> {
    let id = d.u64()?;
    let flags = d.u16()?;
    if flags & !SEND_LAST != 0 || d.u16()? != 0 {
        return Err(ProtoError::ReservedNotZero);
    }
    let body_len = d.u64()?;
    if u64::try_from(direct_len).ok() != Some(body_len) {
        return Err(ProtoError::DirectLength);
    }
    Ok(Request::QueueSend {
        id,
        last: flags & SEND_LAST != 0,
        body_len,
    })
}

/// Decodes a request's input buffer for `command`; `direct_len` is the length of the direct
/// buffer (0 for commands without one).
///
/// # Errors
/// [`ProtoError`] naming the first fault.
pub fn decode_request(
    command: Command,
    input: &[u8],
    direct_len: usize,
) -> Result<Request<'_>, ProtoError> {
    let mut d = open(input)?;
    let req = match command {
        Command::Version => Request::Version,
        Command::UrlaclList => Request::UrlaclList,
        Command::IplistenList => Request::IplistenList,
        Command::Stats => Request::Stats,
        Command::LimitsGet => Request::LimitsGet,
        Command::UrlaclAdd => Request::UrlaclAdd {
            prefix: d.str()?,
            acl: non_empty(d.str()?),
            cache_control: non_empty(d.str()?),
        },
        Command::UrlaclDelete => Request::UrlaclDelete { prefix: d.str()? },
        Command::IplistenAdd => Request::IplistenAdd { addr: d.str()? },
        Command::IplistenDelete => Request::IplistenDelete { addr: d.str()? },
        Command::CacheDelete => Request::CacheDelete { url: d.str()? },
        Command::CacheFlush => Request::CacheFlush {
            prefix: non_empty(d.str()?),
        },
        Command::CacheList => Request::CacheList {
            prefix: non_empty(d.str()?),
        },
        Command::LimitsSet => Request::LimitsSet {
            name: d.str()?,
            value: d.u64()?,
        },
        Command::QueueList => Request::QueueList,
        Command::LogReopen => Request::LogReopen,
        Command::QueueAttach => Request::QueueAttach {
            name: d.str()?,
            prefixes: d.strs(MAX_QUEUE_PREFIXES)?,
        },
        Command::QueueReceive => {
            let (queue, body_max, max_requests) = (d.u32()?, d.u64()?, d.u32()?);
            if !(1..=MAX_RECEIVE_BATCH).contains(&max_requests) {
                return Err(ProtoError::InvalidValue);
            }
            Request::QueueReceive {
                queue,
                body_max,
                max_requests,
            }
        }
        Command::QueueReceiveBody => Request::QueueReceiveBody {
            id: d.u64()?,
            offset: d.u64()?,
        },
        Command::QueueDetach => Request::QueueDetach { queue: d.u32()? },
        Command::QueueCancel => Request::QueueCancel { id: d.u64()? },
        Command::QueueRespond => Request::QueueRespond(decode_respond(&mut d, direct_len)?),
        Command::QueueSend => decode_send(&mut d, direct_len)?,
        Command::CachePut => {
            let url = d.str()?;
            let content_type = d.str()?;
            let status = d.u16()?;
            if d.u16()? != 0 {
                return Err(ProtoError::ReservedNotZero);
            }
            let ttl = d.opt_u64()?;
            let last_modified = d.opt_u64()?;
            let headers = d.strs(MAX_HEADERS)?;
            let put = PutEntry {
                url,
                content_type,
                status,
                ttl,
                last_modified,
                headers,
                identity_len: d.u64()?,
                gzip_len: d.opt_u64()?,
                br_len: d.opt_u64()?,
                digest: match d.bytes()? {
                    [] => None,
                    b => Some(b.try_into().map_err(|_| ProtoError::InvalidValue)?),
                },
            };
            let want = put.direct_len().ok_or(ProtoError::DirectLength)?;
            if u64::try_from(direct_len).ok() != Some(want) {
                return Err(ProtoError::DirectLength);
            }
            Request::CachePut(put)
        }
    };
    d.end()?;
    if command.method() != crate::METHOD_IN_DIRECT && direct_len != 0 {
        return Err(ProtoError::DirectLength);
    }
    Ok(req)
}

/// One cell of a reply table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A number.
    U64(u64),
    /// A string.
    Str(&'a str),
    /// Bytes (a request head and body handed to an application).
    Bytes(&'a [u8]),
}

impl Value<'_> {
    /// The number, if this is one.
    #[must_use]
    pub const fn as_u64(&self) -> Option<u64> {
        match self {
            Self::U64(v) => Some(*v),
            Self::Str(_) | Self::Bytes(_) => None,
        }
    }
}

/// Writes a reply table row by row. It allocates fallibly: when `out` cannot grow, the writer
/// stops writing and [`TableWriter::finish`] reports it (the control path must not panic on a
/// failed allocation: in the driver that is a bugcheck).
#[derive(Debug)]
pub struct TableWriter<'o> {
    out: &'o mut Vec<u8>,
    at: usize,
    rows: u32,
    cols: u16,
    failed: bool,
}

impl<'o> TableWriter<'o> {
    /// Starts a reply with `cols` columns in `out` (appended).
    pub fn new(out: &'o mut Vec<u8>, cols: u16) -> Self {
        let at = out.len();
        let mut t = Self {
            out,
            at,
            rows: 0,
            cols,
            failed: false,
        };
        t.put(&header(0));
        t.put(&0u32.to_le_bytes());
        t.put(&cols.to_le_bytes());
        t
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.failed || self.out.try_reserve(bytes.len()).is_err() {
            self.failed = true;
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Appends a row; it must have exactly `cols` values (extra ones are dropped, missing ones
    /// written as 0).
    pub fn row(&mut self, values: &[Value<'_>]) {
        for i in 0..usize::from(self.cols) {
            match values.get(i).copied().unwrap_or(Value::U64(0)) {
                Value::U64(v) => {
                    self.put(&[0]);
                    self.put(&v.to_le_bytes());
                }
                Value::Str(s) => {
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    self.put(&[1]);
                    self.put(&len.to_le_bytes());
                    self.put(s.as_bytes());
                }
                Value::Bytes(b) => {
                    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
                    self.put(&[2]);
                    self.put(&len.to_le_bytes());
                    self.put(b);
                }
            }
        }
        self.rows = self.rows.saturating_add(1);
    }

    /// Patches the row count and size.
    ///
    /// # Errors
    /// [`ProtoError::OutOfMemory`] when `out` could not grow; what was written is removed.
    pub fn finish(self) -> Result<(), ProtoError> {
        if self.failed {
            self.out.truncate(self.at);
            return Err(ProtoError::OutOfMemory);
        }
        let rows_at = self.at.saturating_add(HEADER_LEN);
        if let Some(slot) = self.out.get_mut(rows_at..rows_at.saturating_add(4)) {
            slot.copy_from_slice(&self.rows.to_le_bytes());
        }
        finish(self.out, self.at);
        Ok(())
    }
}

/// Decodes a reply table into rows of values.
///
/// # Errors
/// [`ProtoError`] naming the first fault.
pub fn decode_reply(buf: &[u8]) -> Result<Vec<Vec<Value<'_>>>, ProtoError> {
    let mut d = open(buf)?;
    let rows = usize::try_from(d.u32()?).map_err(|_| ProtoError::TooLarge)?;
    let cols = usize::from(d.u16()?);
    if rows > MAX_ROWS || cols > MAX_COLS {
        return Err(ProtoError::TooLarge);
    }
    // Each cell takes at least 5 bytes: a bound that stops a lying count from reserving memory.
    let cells = rows.checked_mul(cols).ok_or(ProtoError::TooLarge)?;
    if cells > buf.len() / 5 {
        return Err(ProtoError::Truncated);
    }
    let mut table = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut row = Vec::with_capacity(cols);
        for _ in 0..cols {
            row.push(match d.u8()? {
                0 => Value::U64(d.u64()?),
                1 => Value::Str(d.str()?),
                2 => Value::Bytes(d.bytes()?),
                _ => return Err(ProtoError::InvalidValue),
            });
        }
        table.push(row);
    }
    d.end()?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::{
        PutEntry, Request, TableWriter, Value, decode_reply, decode_request, encode_request,
    };
    use crate::{Command, ProtoError};

    fn round_trip(req: &Request<'_>, direct: usize) {
        let mut buf = Vec::new();
        let code = encode_request(req, &mut buf);
        let cmd = Command::from_code(code).unwrap();
        assert_eq!(decode_request(cmd, &buf, direct).as_ref(), Ok(req));
        // Every truncation is refused, never a panic.
        for cut in 0..buf.len() {
            assert!(decode_request(cmd, &buf[..cut], direct).is_err());
        }
    }

    #[test]
    fn a_receive_takes_one_to_64_requests() {
        for bad in [0, super::MAX_RECEIVE_BATCH + 1] {
            let mut buf = Vec::new();
            let ask = Request::QueueReceive {
                queue: 3,
                body_max: 0,
                max_requests: bad,
            };
            encode_request(&ask, &mut buf);
            assert_eq!(
                decode_request(Command::QueueReceive, &buf, 0),
                Err(ProtoError::InvalidValue),
                "{bad} requests"
            );
        }
    }

    #[test]
    fn requests_round_trip() {
        round_trip(&Request::Version, 0);
        round_trip(
            &Request::UrlaclAdd {
                prefix: "http://+:80/",
                acl: Some("D:(A;;GX;;;WD)"),
                cache_control: Some("max-age=60"),
            },
            0,
        );
        round_trip(
            &Request::UrlaclAdd {
                prefix: "http://+:80/",
                acl: None,
                cache_control: None,
            },
            0,
        );
        round_trip(&Request::CacheFlush { prefix: None }, 0);
        round_trip(
            &Request::LimitsSet {
                name: "max-headers",
                value: 7,
            },
            0,
        );
        let put = PutEntry {
            url: "http://+:80/a.html",
            content_type: "text/html",
            status: 200,
            ttl: Some(60),
            last_modified: None,
            headers: vec!["X-A: 1", "Cache-Control: no-cache"],
            identity_len: 10,
            gzip_len: Some(4),
            br_len: None,
            digest: Some([7; crate::DIGEST_LEN]),
        };
        round_trip(&Request::CachePut(put), 14);
        round_trip(
            &Request::QueueAttach {
                name: "app",
                prefixes: vec!["http://+:80/a/", "http://+:80/b/"],
            },
            0,
        );
        round_trip(
            &Request::QueueReceive {
                queue: 3,
                body_max: u64::MAX,
                max_requests: 64,
            },
            0,
        );
        round_trip(&Request::QueueReceiveBody { id: 9, offset: 7 }, 0);
        round_trip(&Request::QueueDetach { queue: 3 }, 0);
        round_trip(&Request::QueueCancel { id: u64::MAX - 1 }, 0);
        round_trip(&Request::QueueList, 0);
        round_trip(
            &Request::QueueRespond(super::Respond {
                id: 9,
                status: 201,
                content_type: "text/plain",
                headers: vec!["X-A: 1"],
                ttl: Some(30),
                body_len: 5,
                stream: None,
                no_reply: true,
            }),
            5,
        );
        for length in [None, Some(5), Some(u64::MAX - 1)] {
            round_trip(
                &Request::QueueRespond(super::Respond {
                    id: 9,
                    status: 200,
                    content_type: "",
                    headers: vec![],
                    ttl: None,
                    body_len: 5,
                    stream: Some(super::Streamed { length }),
                    no_reply: false,
                }),
                5,
            );
        }
        for last in [false, true] {
            round_trip(
                &Request::QueueSend {
                    id: 3,
                    last,
                    body_len: 7,
                },
                7,
            );
        }
    }

    #[test]
    fn bytes_values_round_trip() {
        let mut out = Vec::new();
        let mut t = TableWriter::new(&mut out, 2);
        t.row(&[Value::U64(1), Value::Bytes(&[0xFF, 0, b'\n'])]);
        t.finish().unwrap();
        assert_eq!(
            decode_reply(&out).unwrap(),
            vec![vec![Value::U64(1), Value::Bytes(&[0xFF, 0, b'\n'])]]
        );
    }

    #[test]
    fn put_direct_length_must_match() {
        let put = PutEntry {
            url: "u",
            content_type: "",
            status: 0,
            ttl: None,
            last_modified: None,
            headers: vec![],
            identity_len: 10,
            gzip_len: None,
            br_len: None,
            digest: None,
        };
        let mut buf = Vec::new();
        encode_request(&Request::CachePut(put), &mut buf);
        assert_eq!(
            decode_request(Command::CachePut, &buf, 9),
            Err(ProtoError::DirectLength)
        );
        assert!(decode_request(Command::CachePut, &buf, 10).is_ok());
        let mut v = Vec::new();
        encode_request(&Request::Stats, &mut v);
        assert_eq!(
            decode_request(Command::Stats, &v, 1),
            Err(ProtoError::DirectLength)
        );
    }

    #[test]
    fn headers_are_checked() {
        let mut v = Vec::new();
        encode_request(&Request::Stats, &mut v);
        let mut bad = v.clone();
        bad[0] = 9;
        assert_eq!(
            decode_request(Command::Stats, &bad, 0),
            Err(ProtoError::Version)
        );
        let mut bad = v.clone();
        bad[2] = 1;
        assert_eq!(
            decode_request(Command::Stats, &bad, 0),
            Err(ProtoError::ReservedNotZero)
        );
        let mut bad = v.clone();
        bad.push(0);
        assert_eq!(
            decode_request(Command::Stats, &bad, 0),
            Err(ProtoError::SizeMismatch)
        );
    }

    #[test]
    fn tables_round_trip() {
        let mut out = Vec::new();
        let mut t = TableWriter::new(&mut out, 2);
        t.row(&[Value::Str("a"), Value::U64(1)]);
        t.row(&[Value::Str(""), Value::U64(u64::MAX)]);
        t.finish().unwrap();
        let rows = decode_reply(&out).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Value::Str("a"), Value::U64(1)],
                vec![Value::Str(""), Value::U64(u64::MAX)]
            ]
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), direct in 0usize..100) {
            for c in Command::ALL {
                let _ = decode_request(c, &bytes, direct);
            }
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn strings_round_trip(prefix in ".{0,300}", acl in proptest::option::of("[^\u{0}]{1,50}"), value in any::<u64>()) {
            let req = Request::UrlaclAdd { prefix: &prefix, acl: acl.as_deref(), cache_control: None };
            let mut buf = Vec::new();
            encode_request(&req, &mut buf);
            prop_assert_eq!(decode_request(Command::UrlaclAdd, &buf, 0), Ok(req));
            let req = Request::LimitsSet { name: &prefix, value };
            let mut buf = Vec::new();
            encode_request(&req, &mut buf);
            prop_assert_eq!(decode_request(Command::LimitsSet, &buf, 0), Ok(req));
        }
    }
}
