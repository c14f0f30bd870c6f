//! Every limit in one table: the limits an operator sets (`khttpctl limits set NAME VALUE`),
//! and the fixed ones the engine and its hosts build in. Defaults and their http.sys origins:
//! docs/http-semantics.md, "Limits and defaults".

use crate::error::CtlError;

/// The largest header slot array the engine puts on the stack; `max-headers` is capped to it.
pub const MAX_HEADERS_CAP: usize = 128;

/// Request bodies larger than this are not read and discarded: 413 and close.
pub const DISCARD_LIMIT: u64 = 1 << 20;

/// Slack, in milliseconds, for a slow reader (or writer of a body) before the minimum send
/// (or receive) rate applies.
pub const SEND_GRACE_MS: u64 = 10_000;

/// The window, in milliseconds, over which the minimum send and receive rates judge progress
/// (issue #21): after the grace period, each window must move at least the rate times the
/// window (or everything left to send), so that a client who stops is closed within this long,
/// however large the response or body.
pub const RATE_WINDOW_MS: u64 = 10_000;

/// A connection's buffers larger than this are freed when it goes idle.
pub const KEEP_IDLE: usize = 4096;

/// Unsent head bytes beyond which no more pipelined requests are processed until output drains.
pub const BACKLOG_HEAD_BYTES: usize = 64 * 1024;

/// Pending output pieces beyond which processing pauses likewise.
pub const BACKLOG_ITEMS: usize = 256;

/// Committed output of a streamed answer (issue #12) beyond which its application's next
/// piece waits ([`crate::Connection::wants_piece`]): what one connection may hold of an
/// application's body while its client reads slowly.
pub const STREAM_WINDOW: u64 = 256 * 1024;

/// Request bytes buffered beyond `max-request-bytes` (pipelined requests behind a head) before
/// input stops being read.
pub const INPUT_SLACK: usize = 64 * 1024;

/// The longest prefix or cache URL accepted (the default `max-url-length`).
pub const MAX_PREFIX_LEN: usize = 16_384;

/// http.sys `UrlSegmentMaxLength` default.
pub const MAX_SEGMENT_LEN: usize = 260;

/// http.sys `UrlSegmentMaxCount` default.
pub const MAX_SEGMENTS: usize = 255;

/// Longest chunk extension accepted on one chunk line.
pub const MAX_CHUNK_EXT: usize = 1024;

/// The most ranges served as multipart/byteranges; more is answered with the whole 200.
pub const MAX_RANGES: usize = 16;

/// The longest request queue name accepted.
pub const MAX_QUEUE_NAME: usize = 256;

/// Application handles one request queue holds at most (each attach is one): what bounds the
/// table whatever a host's own caps on connections (issue #21).
pub const MAX_QUEUE_HANDLES: usize = 4096;

/// Application sessions (khttpd: connections to its application socket; the driver: handles on
/// `\\.\KHttpApp`) of users other than administrators, at once, in all and per user: each
/// holds memory (the driver's holds its opener's token, up to 192 KiB of non-paged pool), so
/// their number is bounded (issue #21, finding 6; issue #22, defect 10).
pub const MAX_APP_SESSIONS: usize = 1024;
/// See [`MAX_APP_SESSIONS`].
pub const MAX_APP_SESSIONS_PER_USER: usize = 128;
/// The most attaches one application session makes (each is a handle in a queue).
pub const MAX_APP_ATTACHES: usize = 64;
/// The most body bytes one `QueueReceiveBody` reply carries: what an application that reads a
/// body as it goes (a proxy forwarding an upload) holds of it at once; a round trip per MiB
/// costs little next to copying the MiB.
pub const APP_BODY_PIECE: usize = 1 << 20;

/// Connections the driver holds at once (its connection table, allocated at load), whatever
/// `max-connections` says.
pub const DRIVER_MAX_CONNECTIONS: usize = 16_384;

/// Connections beyond `max-connections` (or [`DRIVER_MAX_CONNECTIONS`]) still accepted at once
/// to be answered 503; beyond these, new connections are closed at once.
pub const OVERLOAD_CONNECTIONS: usize = 256;

/// Limits and timeouts. Names are the CLI's (`khttpctl limits set NAME VALUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, bytes; over it: 431 (414 if the request line is the culprit).
    pub max_request_bytes: u32,
    /// One header field, bytes; over it: 431.
    pub max_field_length: u32,
    /// The request-target, bytes; over it: 414.
    pub max_url_length: u32,
    /// Header fields; over it: 431.
    pub max_headers: u32,
    /// Seconds for a whole request head (or body) to arrive; then close.
    pub header_timeout: u32,
    /// Seconds a keep-alive connection may sit idle; then close.
    pub idle_timeout: u32,
    /// Bytes per second a client must read at; 0 disables.
    pub min_send_rate: u32,
    /// Connections at once; beyond it new ones get 503 and a close.
    pub max_connections: u32,
    /// Seconds a gracefully closed connection lingers at least, reading and discarding what the
    /// client still sends (see [`crate::conn::Connection::handle_shutdown`]).
    pub linger_timeout: u32,
    /// Total cache body bytes.
    pub cache_max_bytes: u64,
    /// One entry's body bytes (all variants).
    pub cache_max_entry_bytes: u64,
    /// Requests waiting in one request queue; beyond it: 503 with `Retry-After`.
    pub queue_length: u32,
    /// Seconds an application may take to answer a request handed to it; then 503.
    pub app_response_timeout: u32,
    /// Request body bytes read and handed to an application with its request; beyond: 413.
    pub max_queued_body_bytes: u64,
    /// Request body bytes held for applications at once, across every connection and queue
    /// (issue #21); a body that would go past it: 503 and a close.
    pub body_buffer_bytes: u64,
    /// Bytes per second a client must send a request body at, judged over
    /// [`RATE_WINDOW_MS`] after [`SEND_GRACE_MS`]; 0 disables (then only `header-timeout`
    /// bounds a body).
    pub min_receive_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16_384,
            max_field_length: 16_384,
            max_url_length: 16_384,
            max_headers: 100,
            header_timeout: 120,
            idle_timeout: 120,
            min_send_rate: 150,
            max_connections: 100_000,
            linger_timeout: 2,
            cache_max_bytes: 1 << 30,
            cache_max_entry_bytes: 256 << 20,
            // http.sys's default queue length.
            queue_length: 1000,
            // nginx's `proxy_read_timeout`: what a proxy in front of an application waits.
            app_response_timeout: 60,
            max_queued_body_bytes: 1 << 20,
            // Sixty-four bodies of the default largest: a flood of unfinished uploads holds
            // at most this much, in the driver non-paged pool.
            body_buffer_bytes: 64 << 20,
            min_receive_rate: 150,
        }
    }
}

/// A limit's name, its allowed range, and its place in [`Limits`].
struct LimitDef {
    name: &'static str,
    min: u64,
    max: u64,
    get: fn(&Limits) -> u64,
    set: fn(&mut Limits, u64),
}

/// Every limit, in display order. Ranges follow http.sys's where it has one (KB 820129).
const LIMITS: [LimitDef; 16] = [
    LimitDef {
        name: "max-request-bytes",
        min: 256,
        max: 16_777_216,
        get: |l| u64::from(l.max_request_bytes),
        set: |l, v| l.max_request_bytes = narrow(v),
    },
    LimitDef {
        name: "max-field-length",
        min: 64,
        max: 65_534,
        get: |l| u64::from(l.max_field_length),
        set: |l, v| l.max_field_length = narrow(v),
    },
    LimitDef {
        name: "max-url-length",
        min: 64,
        max: 16_777_216,
        get: |l| u64::from(l.max_url_length),
        set: |l, v| l.max_url_length = narrow(v),
    },
    LimitDef {
        name: "max-headers",
        min: 1,
        max: MAX_HEADERS_CAP as u64,
        get: |l| u64::from(l.max_headers),
        set: |l, v| l.max_headers = narrow(v),
    },
    LimitDef {
        name: "header-timeout",
        min: 1,
        max: 86_400,
        get: |l| u64::from(l.header_timeout),
        set: |l, v| l.header_timeout = narrow(v),
    },
    LimitDef {
        name: "idle-timeout",
        min: 1,
        max: 86_400,
        get: |l| u64::from(l.idle_timeout),
        set: |l, v| l.idle_timeout = narrow(v),
    },
    LimitDef {
        name: "min-send-rate",
        min: 0,
        max: 1 << 30,
        get: |l| u64::from(l.min_send_rate),
        set: |l, v| l.min_send_rate = narrow(v),
    },
    LimitDef {
        name: "max-connections",
        min: 1,
        max: 10_000_000,
        get: |l| u64::from(l.max_connections),
        set: |l, v| l.max_connections = narrow(v),
    },
    LimitDef {
        name: "linger-timeout",
        min: 1,
        max: 600,
        get: |l| u64::from(l.linger_timeout),
        set: |l, v| l.linger_timeout = narrow(v),
    },
    LimitDef {
        name: "cache-max-bytes",
        min: 0,
        max: 1 << 44,
        get: |l| l.cache_max_bytes,
        set: |l, v| l.cache_max_bytes = v,
    },
    LimitDef {
        name: "cache-max-entry-bytes",
        min: 0,
        max: 1 << 40,
        get: |l| l.cache_max_entry_bytes,
        set: |l, v| l.cache_max_entry_bytes = v,
    },
    LimitDef {
        name: "queue-length",
        min: 1,
        max: 65_535,
        get: |l| u64::from(l.queue_length),
        set: |l, v| l.queue_length = narrow(v),
    },
    LimitDef {
        name: "app-response-timeout",
        min: 1,
        max: 86_400,
        get: |l| u64::from(l.app_response_timeout),
        set: |l, v| l.app_response_timeout = narrow(v),
    },
    LimitDef {
        name: "max-queued-body-bytes",
        min: 0,
        max: 1 << 30,
        get: |l| l.max_queued_body_bytes,
        set: |l, v| l.max_queued_body_bytes = v,
    },
    LimitDef {
        name: "body-buffer-bytes",
        min: 0,
        max: 1 << 40,
        get: |l| l.body_buffer_bytes,
        set: |l, v| l.body_buffer_bytes = v,
    },
    LimitDef {
        name: "min-receive-rate",
        min: 0,
        max: 1 << 30,
        get: |l| u64::from(l.min_receive_rate),
        set: |l, v| l.min_receive_rate = narrow(v),
    },
];

/// Callers have range-checked `v` against a maximum that fits in u32.
fn narrow(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Limits {
    /// Every limit name, in display order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        LIMITS.iter().map(|d| d.name)
    }

    /// The value of the limit called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<u64> {
        LIMITS
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.get)(self))
    }

    /// Sets the limit called `name`.
    ///
    /// # Errors
    /// [`CtlError::UnknownLimit`], [`CtlError::InvalidLimitValue`] (out of range).
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), CtlError> {
        let def = LIMITS
            .iter()
            .find(|d| d.name == name)
            .ok_or(CtlError::UnknownLimit)?;
        if !(def.min..=def.max).contains(&value) {
            return Err(CtlError::InvalidLimitValue);
        }
        (def.set)(self, value);
        Ok(())
    }

    /// The allowed range of the limit called `name`.
    #[must_use]
    pub fn range(name: &str) -> Option<(u64, u64)> {
        LIMITS
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.min, d.max))
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use crate::error::CtlError;

    #[test]
    fn limits_by_name() {
        let mut l = Limits::default();
        assert_eq!(l.get("max-headers"), Some(100));
        assert_eq!(l.set("max-headers", 0), Err(CtlError::InvalidLimitValue));
        assert_eq!(l.set("max-headers", 129), Err(CtlError::InvalidLimitValue));
        assert_eq!(l.set("nope", 1), Err(CtlError::UnknownLimit));
        l.set("idle-timeout", 5).unwrap();
        assert_eq!(l.idle_timeout, 5);
        assert_eq!(Limits::names().count(), 16);
    }
}
