//! The connection state machine on arbitrary bytes, split arbitrarily, with time passing.
//! Invariants, beyond "no panic": the output is a sequence of well-formed responses; after EOF
//! the connection closes; the same bytes fed whole give the same output.

#![no_main]

use arbitrary::Arbitrary;
use khttp_engine::cache::EntrySpec;
use khttp_engine::route::Local;
use khttp_engine::{Clock, Connection, Instant, Site};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Where to cut the stream.
    cuts: Vec<u16>,
    /// Seconds to advance between pieces.
    ticks: Vec<u8>,
    /// Send only part of the output at times.
    partial_sends: bool,
    data: Vec<u8>,
}

fn site() -> Site {
    let mut s = Site::new();
    let _ = s.reserve("http://+:8080/", None);
    let _ = s.reserve("http://localhost:8080/api/", None);
    let spec = |body: &[u8]| EntrySpec {
        content_type: "text/html",
        body: body.to_vec(),
        gzip: Some(b"gz".to_vec()),
        last_modified: Some(784_111_777),
        ..Default::default()
    };
    let _ = s.put("http://+:8080/index.html", spec(b"<h1>hello</h1>"), Instant(0));
    let _ = s.put("http://localhost:8080/api/x", spec(&[7u8; 3000]), Instant(0));
    s
}

fn run(site: &Site, data: &[u8], cuts: &[u16], ticks: &[u8], partial: bool) -> (Vec<u8>, bool) {
    let mut clock = Clock::new(Instant(0), 784_111_777);
    let local = Local { ip: std::net::Ipv4Addr::LOCALHOST.into(), port: 8080 };
    let mut conn = Connection::new(local, &clock, site);
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (data.len() + 1)).collect();
    points.sort_unstable();
    points.push(data.len());
    for (i, p) in points.into_iter().enumerate() {
        let p = p.max(at);
        conn.handle_input(&data[at..p], &clock, site);
        at = p;
        drain(&mut conn, &mut out, &clock, site, partial);
        if let Some(&t) = ticks.get(i) {
            let now = clock.now().add_secs(u64::from(t));
            clock.update(now, 784_111_777 + now.0 / 1000);
            conn.handle_timeout(&clock);
        }
    }
    conn.handle_eof(&clock, site);
    drain(&mut conn, &mut out, &clock, site, false);
    (out, conn.poll_close().is_some())
}

fn drain(conn: &mut Connection, out: &mut Vec<u8>, clock: &Clock, site: &Site, partial: bool) {
    for _ in 0..10_000 {
        let mut slices = [&[][..]; 8];
        let n = conn.transmit_slices(&mut slices);
        if n == 0 {
            return;
        }
        let mut len: usize = slices[..n].iter().map(|s| s.len()).sum();
        if partial {
            len = len.div_ceil(2);
        }
        let bytes: Vec<u8> = slices[..n].concat();
        out.extend_from_slice(&bytes[..len]);
        conn.handle_sent(len, clock, site);
    }
    panic!("output never drained");
}

fn check_responses(mut buf: &[u8]) {
    while !buf.is_empty() {
        // Every response starts with a status line.
        assert!(buf.starts_with(b"HTTP/1.1 "), "garbage in output: {:?}", &buf[..buf.len().min(40)]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!("unterminated response head");
        };
        let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
        let status: u16 = head[9..12].parse().expect("status");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse().expect("length"));
        // HEAD responses carry a length without a body: accept either when the rest is short.
        let body = if status == 304 || status == 100 { 0 } else { len };
        let next = end + 4;
        if buf.len() >= next + body && (buf.len() == next + body || buf[next + body..].starts_with(b"HTTP/1.1 ")) {
            buf = &buf[next + body..];
        } else {
            buf = &buf[next..];
        }
    }
}


fuzz_target!(|input: Input| {
    let site = site();
    let (out, closed) = run(&site, &input.data, &input.cuts, &input.ticks, input.partial_sends);
    assert!(closed, "connection still open after EOF");
    check_responses(&out);
    if input.ticks.iter().all(|&t| t == 0) {
        let (whole, _) = run(&site, &input.data, &[], &[], false);
        assert_eq!(whole, out, "splitting changed the output");
    }
});
