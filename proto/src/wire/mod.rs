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
//!                    ; u64::MAX without STREAM); bit 1 (NEWS_ONLY): khttpd's socket
//!                    ; replies only with news, a News frame (status 29, one NewsRow)
//!                    ; ahead of a later call's reply, when the answer was refused or its
//!                    ; client no longer waited (a device completes it as always); other
//!                    ; bits 0
//!   QueueSend:       id:u64 flags:u16 reserved:u16(=0) body_len:u64
//!                    ; flags bit 0 (LAST): the body's last piece; the direct buffer is the
//!                    ; piece, exactly
//!   QueueCancel:     id:u64
//!   QueueList, LogReopen: (empty)
//! reply body = rows:u32 cols:u16 value*(rows*cols)
//! value   = 0:u8 u64 | 1:u8 str | 2:u8 bytes               ; bytes = len:u32 octets
//! ```

mod codec;
mod table;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use crate::{Command, ProtoError};
use codec::{Dec, finish, open, put_bytes, put_count, put_opt, put_str, start};

pub use codec::{HEADER_LEN, Header, MAX_BYTES, MAX_STR};
pub use table::{MAX_COLS, MAX_ROWS, TableWriter, Value, decode_reply};

/// Most `--header` lines in one put or response.
pub const MAX_HEADERS: usize = 64;
/// Most prefixes one queue attach names.
pub const MAX_QUEUE_PREFIXES: usize = 64;
/// Bytes of an entry's digest ([`PutEntry::digest`]): a SHA-256.
pub const DIGEST_LEN: usize = 32;

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
    /// The application does not wait for the outcome: khttpd's socket replies only with news,
    /// a [`Status::News`](crate::Status::News) frame before a later call's reply, when the
    /// answer was refused (its client gets 502) or its client no longer waited. A device
    /// completes the call as always.
    pub news_only: bool,
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
const RESPOND_NEWS_ONLY: u16 = 2;
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
    /// `sslcert add BINDING --cert CHAIN.pem --key KEY.pem`: the PEM texts themselves (keys
    /// travel only over the control endpoint).
    SslcertAdd {
        /// `ipport=IP:PORT` or `hostnameport=NAME:PORT`.
        binding: &'a str,
        /// The certificate chain, PEM, the server's certificate first.
        chain: &'a str,
        /// The private key, PEM.
        key: &'a str,
        /// An OCSP response (DER) to staple, if any (`--ocsp`).
        ocsp: Option<&'a [u8]>,
    },
    /// `sslcert delete BINDING`
    SslcertDelete {
        /// The binding.
        binding: &'a str,
    },
    /// `sslcert show`
    SslcertList,
    /// `sslcert ca`
    SslcertCa,
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
            Self::SslcertAdd { .. } => Command::SslcertAdd,
            Self::SslcertDelete { .. } => Command::SslcertDelete,
            Self::SslcertList => Command::SslcertList,
            Self::SslcertCa => Command::SslcertCa,
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
        | Request::LogReopen
        | Request::SslcertList
        | Request::SslcertCa => {}
        Request::SslcertAdd {
            binding,
            chain,
            key,
            ocsp,
        } => {
            put_str(out, binding);
            put_str(out, chain);
            put_str(out, key);
            put_bytes(out, ocsp.unwrap_or_default());
        }
        Request::SslcertDelete { binding } => put_str(out, binding),
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
        Request::QueueRespond(r) => encode_respond(r, out),
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
        Request::CachePut(p) => encode_put(p, out),
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

/// `QueueRespond`'s fields.
fn encode_respond(r: &Respond<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.id.to_le_bytes());
    out.extend_from_slice(&r.status.to_le_bytes());
    let mut flags = if r.stream.is_some() {
        RESPOND_STREAM
    } else {
        0
    };
    if r.news_only {
        flags |= RESPOND_NEWS_ONLY;
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

/// `CachePut`'s fields.
fn encode_put(p: &PutEntry<'_>, out: &mut Vec<u8>) {
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

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// `CachePut`'s fields; the direct buffer must hold the variants exactly.
fn decode_put<'a>(d: &mut Dec<'a>, direct_len: usize) -> Result<PutEntry<'a>, ProtoError> {
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
    Ok(put)
}

/// `QueueRespond`'s fields.
fn decode_respond<'a>(d: &mut Dec<'a>, direct_len: usize) -> Result<Respond<'a>, ProtoError> {
    let id = d.u64()?;
    let status = d.u16()?;
    let flags = d.u16()?;
    if flags & !(RESPOND_STREAM | RESPOND_NEWS_ONLY) != 0 {
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
        news_only: flags & RESPOND_NEWS_ONLY != 0,
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
        Command::SslcertList => Request::SslcertList,
        Command::SslcertCa => Request::SslcertCa,
        Command::SslcertAdd => Request::SslcertAdd {
            binding: d.str()?,
            chain: d.str()?,
            key: d.str()?,
            ocsp: Some(d.bytes()?).filter(|b| !b.is_empty()),
        },
        Command::SslcertDelete => Request::SslcertDelete { binding: d.str()? },
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
        Command::CachePut => Request::CachePut(decode_put(&mut d, direct_len)?),
    };
    d.end()?;
    if command.method() != crate::METHOD_IN_DIRECT && direct_len != 0 {
        return Err(ProtoError::DirectLength);
    }
    Ok(req)
}
