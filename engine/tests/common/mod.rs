//! A deterministic harness: a site, a virtual clock and a fake client around one `Connection`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a test-support module: each test binary uses a part of it"
)]

#[cfg(feature = "tls")]
pub mod tls;

use std::net::{IpAddr, Ipv4Addr};

use khttp_engine::EntrySpec;
use khttp_engine::Local;
use khttp_engine::{Clock, Close, Connection, Instant, Site};

/// 1994-11-06T08:49:37Z, the RFC's example date.
pub const UNIX_NOW: u64 = 784_111_777;
pub const LOCAL: Local = Local {
    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    port: 8080,
};
pub const BODY: &[u8] = b"<h1>hello, khttp</h1>\n";

/// A site with `http://+:8080/` reserved and a few entries.
pub fn site() -> Site {
    let mut s = Site::new();
    s.reserve("http://+:8080/", None).unwrap();
    put(
        &mut s,
        "http://+:8080/index.html",
        BODY.to_vec(),
        "text/html",
    );
    let spec = EntrySpec {
        content_type: "text/plain",
        body: (0..=255u8).cycle().take(1000).collect(),
        gzip: Some(b"GZIPPED".to_vec()),
        br: Some(b"BR".to_vec()),
        digest: None,
        last_modified: Some(UNIX_NOW - 3600),
        ..Default::default()
    };
    s.put("http://+:8080/data.bin", spec, Instant(0)).unwrap();
    s
}

pub fn put(s: &mut Site, url: &str, body: Vec<u8>, ct: &str) {
    let spec = EntrySpec {
        content_type: ct,
        body,
        last_modified: Some(UNIX_NOW - 3600),
        ..Default::default()
    };
    s.put(url, spec, Instant(0)).unwrap();
}

pub struct Harness {
    pub site: Site,
    pub clock: Clock,
    pub conn: Connection,
    pub sent: Vec<u8>,
}

impl Harness {
    pub fn new(site: Site) -> Self {
        let clock = Clock::new(Instant(1_000), UNIX_NOW);
        let conn = Connection::new(LOCAL, &clock, &site);
        Self {
            site,
            clock,
            conn,
            sent: Vec::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.conn.handle_input(bytes, &self.clock, &self.site);
    }

    /// Sends everything pending, as a socket with room for all of it would.
    pub fn flush(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut slices = [&[][..]; 64];
            let n = self.conn.transmit_slices(&mut slices);
            if n == 0 {
                break;
            }
            let chunk: Vec<u8> = slices[..n].concat();
            let len = chunk.len();
            all.extend_from_slice(&chunk);
            self.conn.handle_sent(len, &self.clock, &self.site);
        }
        self.sent.extend_from_slice(&all);
        all
    }

    /// Sends at most `n` bytes of the pending output, as a transport with room for `n` would.
    pub fn send(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let Some(t) = self.conn.transmit() else { break };
            let len = match t {
                khttp_engine::Transmit::Head(b) => b.len(),
                khttp_engine::Transmit::Body { start, end, .. } => end - start,
            };
            let k = len.min(left);
            self.conn.handle_sent(k, &self.clock, &self.site);
            left -= k;
        }
    }

    /// Feeds `req`, then flushes.
    pub fn exchange(&mut self, req: &[u8]) -> Vec<u8> {
        self.feed(req);
        self.flush()
    }

    pub fn advance_secs(&mut self, secs: u64) {
        let now = self.clock.now().add_secs(secs);
        self.clock.update(now, UNIX_NOW + secs);
        self.conn.handle_timeout(&self.clock, 0);
    }

    pub fn closed(&self) -> Option<Close> {
        self.conn.poll_close()
    }
}

/// A parsed response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a byte stream into responses; `head_only` says which have no body despite a length.
pub fn parse_responses(mut buf: &[u8], head_only: &[bool]) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut i = 0;
    while !buf.is_empty() {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hdrs);
        let n = match r.parse(buf).expect("valid response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("partial response: {:?}", String::from_utf8_lossy(buf))
            }
        };
        let status = r.code.unwrap();
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let skip_body =
            head_only.get(i).copied().unwrap_or(false) || status == 304 || status == 100;
        let body_len = if skip_body { 0 } else { len };
        let body = buf[n..n + body_len].to_vec();
        buf = &buf[n + body_len..];
        if status != 100 {
            i += 1;
        }
        out.push(Resp {
            status,
            headers,
            body,
        });
    }
    out
}

pub fn one(buf: &[u8]) -> Resp {
    let mut v = parse_responses(buf, &[]);
    assert_eq!(
        v.len(),
        1,
        "expected one response in {:?}",
        String::from_utf8_lossy(buf)
    );
    v.remove(0)
}

pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost:8080\r\n{extra}\r\n").into_bytes()
}
