//! The access log: what a connection records of each request, and when a record is done.

use alloc::vec::Vec;
use core::mem;

use crate::time::{Clock, Instant};

use super::{Connection, copy_into};

/// One access-log record, produced when logging is on ([`Connection::set_logging`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The method token as sent (at most 32 bytes).
    pub method: Vec<u8>,
    /// The request-target as sent (at most 2048 bytes), or `-` if none could be read.
    pub target: Vec<u8>,
    /// The protocol as sent (`HTTP/1.1`; at most 16 bytes), or empty.
    pub protocol: Vec<u8>,
    /// The `Referer` field (at most 512 bytes), or empty.
    pub referer: Vec<u8>,
    /// The `User-Agent` field (at most 512 bytes), or empty.
    pub user_agent: Vec<u8>,
    /// The status sent.
    pub status: u16,
    /// Body bytes queued.
    pub body_bytes: u64,
    /// Whether a cache entry answered.
    pub hit: bool,
    /// Milliseconds from the first byte of the request to the last byte of its response sent
    /// (or to the connection's end, for a response cut short).
    pub millis: u64,
}

/// An access-log record waiting for the last byte of its response (`end`, an offset in the
/// connection's output stream) to be sent.
#[derive(Debug)]
pub(super) struct PendingLog {
    pub(super) record: LogRecord,
    pub(super) end: u64,
    pub(super) started: Instant,
    pub(super) done: bool,
}

/// What the access log needs of the request being answered.
#[derive(Debug, Default)]
pub(super) struct LogLine {
    pub(super) method: Vec<u8>,
    pub(super) target: Vec<u8>,
    pub(super) protocol: Vec<u8>,
    pub(super) referer: Vec<u8>,
    pub(super) user_agent: Vec<u8>,
    pub(super) started: Instant,
}

/// `Name: value` of one head line (CR stripped), for the access log.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (line.get(..colon)?, line.get(colon.checked_add(1)?..)?);
    Some((name, value.trim_ascii()))
}

impl Connection {
    /// Turns access-log records on or off. Off (the default) keeps the hit path allocation-free.
    pub fn set_logging(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// Hands every pending access-log record to `f`, oldest first.
    pub fn drain_log(&mut self, mut f: impl FnMut(&LogRecord)) {
        if let Some(log) = &mut self.log {
            let done = log.iter().take_while(|p| p.done).count();
            for p in log.drain(..done) {
                f(&p.record);
            }
        }
    }

    /// The connection is going: every record still waiting for its last byte is done now (the
    /// time taken runs to now), so that [`Connection::drain_log`] hands them all over.
    pub fn finish_log(&mut self, clock: &Clock) {
        let now = clock.now();
        for p in self.log.iter_mut().flatten().filter(|p| !p.done) {
            p.record.millis = now.millis_since(p.started);
            p.done = true;
        }
    }

    /// Notes the request line of the request being answered, for its log record.
    pub(super) fn log_begin(&mut self, head: &[u8]) {
        if self.log.is_none() {
            return;
        }
        let mut lines = head.split(|&b| b == b'\n');
        let line = lines.next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or(b"-");
        let protocol = parts.next().unwrap_or_default();
        let started = self.head_started.unwrap_or(self.now);
        let l = &mut self.log_line;
        // Without memory for the line, the record says `-` rather than fail the request.
        let _ = copy_into(&mut l.method, method.get(..32).unwrap_or(method));
        let _ = copy_into(&mut l.target, target.get(..2048).unwrap_or(target));
        let _ = copy_into(&mut l.protocol, protocol.get(..16).unwrap_or(protocol));
        l.referer.clear();
        l.user_agent.clear();
        for field in lines {
            let Some((name, value)) = split_field(field) else {
                continue;
            };
            let value = value.get(..512).unwrap_or(value);
            if name.eq_ignore_ascii_case(b"referer") {
                let _ = copy_into(&mut l.referer, value);
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                let _ = copy_into(&mut l.user_agent, value);
            }
        }
        l.started = started;
    }

    pub(super) fn log_end(&mut self, status: u16, body_bytes: u64, hit: bool) {
        let Some(log) = &mut self.log else { return };
        let l = &mut self.log_line;
        if l.target.is_empty() {
            let _ = copy_into(&mut l.target, b"-");
        }
        // A record that cannot be stored is dropped: the log is not worth a refused request.
        let (end, started) = (self.out.written(), l.started);
        if log.try_reserve(1).is_ok() {
            let record = LogRecord {
                method: mem::take(&mut l.method),
                target: mem::take(&mut l.target),
                protocol: mem::take(&mut l.protocol),
                referer: mem::take(&mut l.referer),
                user_agent: mem::take(&mut l.user_agent),
                status,
                body_bytes,
                hit,
                millis: 0,
            };
            log.push(PendingLog {
                record,
                end,
                started,
                done: false,
            });
        }
        self.log_line = LogLine {
            started: self.now,
            ..LogLine::default()
        };
    }
}
