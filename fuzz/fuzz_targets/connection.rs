//! The connection state machine driven by an arbitrary schedule: input bytes cut anywhere,
//! output acknowledged in arbitrary pieces (partial sends), time passing, timer calls with
//! bytes still undelivered in the transport, and EOF, in any order.
//!
//! Invariants, beyond "no panic":
//! - the output is a sequence of well-formed responses;
//! - a graceful close (a FIN) is only ever reached with every response whole: the truncation of
//!   issue #8 was a graceful close with a body cut short, which this schedule can reach;
//! - after EOF and a full drain the connection closes;
//! - the application's answers (whole, or streamed in pieces: with a length, chunked, or to
//!   the close) are framed correctly; a reset while a streamed answer is on its way is the
//!   application's or the client's doing and is not judged by the send rate;
//! - with no time passing, the same bytes fed whole and sent whole give the same output.

#![no_main]

use arbitrary::Arbitrary;
use khttp_engine::EntrySpec;
use khttp_engine::Local;
use khttp_engine::Phase;
use khttp_engine::{AppResponse, Clock, Close, Connection, Instant, RequestId, Site};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Feed the next `n` input bytes.
    Input(u16),
    /// The transport takes `n` bytes of the pending output (0: as much as is pending).
    Sent(u16),
    /// Time passes by this many milliseconds (scaled ×64: up to about 70 minutes).
    Tick(u16),
    /// A timer call, the transport still holding this many undelivered bytes.
    Timeout(u32),
    /// The peer half-closes; later input is ignored.
    Eof,
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
    data: Vec<u8>,
}

const UNIX: u64 = 784_111_777;

fn site() -> Site {
    let mut s = Site::new();
    let _ = s.reserve("http://+:8080/", None);
    let _ = s.reserve("http://localhost:8080/api/", None);
    let spec = |body: &[u8]| EntrySpec {
        content_type: "text/html",
        body: body.to_vec(),
        gzip: Some(b"gz".to_vec()),
        last_modified: Some(UNIX),
        ..Default::default()
    };
    let _ = s.put(
        "http://+:8080/index.html",
        spec(b"<h1>hello</h1>"),
        Instant(0),
    );
    let _ = s.put(
        "http://localhost:8080/api/x",
        spec(&[7u8; 3000]),
        Instant(0),
    );
    // Large enough that output stays pending across many partial sends and ticks.
    let _ = s.put("http://+:8080/big", spec(&[9u8; 200_000]), Instant(0));
    // Every other request on port 8080 goes to an application (issue #12): the cached entries
    // answer first, the rest (any path the fuzzer makes up) reach the queue.
    let holder = khttp_engine::Holder { pid: 1, uid: 0 };
    let _ = s.attach_queue(
        "app",
        &["http://+:8080/"],
        holder,
        khttp_engine::Owner::Uid(0),
    );
    s
}

/// The application's side: the next request id, and what a streamed answer still owes when
/// it announced its length.
#[derive(Default)]
struct App {
    next_id: u64,
    left: Option<u64>,
}

/// Plays the host's part for a request the connection hands to an application: queues it at
/// once; a tick answers it whole (1 mod 4), starts a streamed answer (2 mod 4: chunked, or to
/// the close for HTTP/1.0; 3 mod 4: with a length), or abandons it (0 mod 4). While an answer streams, a tick brings a piece: one
/// that keeps the announced length (now and then one that breaks it), the last when the
/// length is reached or, with none, now and then; or the application goes.
fn application(conn: &mut Connection, clock: &Clock, site: &Site, op: &Op, app: &mut App) {
    if conn.poll_delivery().is_some() {
        app.next_id += 1;
        conn.handle_queued(RequestId(app.next_id), clock);
    }
    if let (Some(id), Op::Tick(ms)) = (conn.waiting_for(), op) {
        let ms = *ms;
        if conn.mid_response() {
            if ms % 13 == 0 {
                assert!(conn.handle_abandoned(id, false, clock, site));
            } else {
                let want = u64::from(ms % 700);
                let (n, last) = match app.left {
                    Some(left) if ms % 5 != 0 => (want.min(left), want >= left),
                    Some(_) => (want, ms % 2 == 0), // breaks the length, or not by chance
                    None => (want, ms % 3 == 0),
                };
                let body = std::sync::Arc::new(vec![b'p'; n as usize]);
                let taken = conn.handle_piece(id, &body, last, clock, site);
                app.left = app.left.map(|l| l.saturating_sub(n));
                assert!(taken || conn.poll_close() == Some(Close::Abortive));
            }
        } else {
            let body = std::sync::Arc::new(b"from the app".to_vec());
            let reply = AppResponse::new(200, "text/plain", &["X-App: 1"], body).unwrap();
            match ms % 4 {
                1 => assert!(conn.handle_response(id, &reply, clock, site)),
                2 | 3 => {
                    let length = (ms % 4 == 3).then_some(u64::from(ms % 1000) + 12);
                    app.left = length.map(|l| l - 12);
                    assert!(conn.handle_response(id, &reply.streamed(length), clock, site));
                }
                _ => assert!(conn.handle_abandoned(id, false, clock, site)),
            }
        }
    }
    let _ = conn.take_cancelled();
}

/// Sends up to `limit` bytes of pending output (all of it for `usize::MAX`).
fn send(conn: &mut Connection, out: &mut Vec<u8>, clock: &Clock, site: &Site, limit: usize) {
    let mut left = limit;
    while left > 0 {
        let mut slices = [&[][..]; 8];
        let n = conn.transmit_slices(&mut slices);
        if n == 0 {
            return;
        }
        let mut k = 0usize;
        for slice in &slices[..n] {
            let take = slice.len().min(left - k);
            out.extend_from_slice(&slice[..take]);
            k += take;
            if k == left {
                break;
            }
        }
        conn.handle_sent(k, clock, site);
        left -= k;
    }
}

/// Feeds `data` as a host would: only while the connection wants input, sending everything
/// between pieces. Returns the bytes taken.
fn feed_all(
    conn: &mut Connection,
    data: &[u8],
    out: &mut Vec<u8>,
    clock: &Clock,
    site: &Site,
) -> usize {
    let mut at = 0usize;
    while at < data.len() && conn.wants_read() {
        let end = at.saturating_add(4096).min(data.len());
        conn.handle_input(&data[at..end], clock, site);
        at = end;
        send(conn, out, clock, site, usize::MAX);
    }
    at
}

/// The input as fed: an even first byte puts a well-formed HTTP/1.1 request for the
/// application in front of the rest, so that the answers' states (streamed, chunked, pieces)
/// are reached often rather than only when the fuzzer spells such a request itself.
fn with_preamble(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const PREAMBLE: &[u8] = b"GET /stream HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    match data.split_first() {
        Some((first, rest)) if first % 2 == 0 => [PREAMBLE, rest].concat().into(),
        _ => data.into(),
    }
}

/// Runs the schedule; returns the output and how the connection closed.
fn run(site: &Site, x: &Input, whole: bool) -> (Vec<u8>, Option<Close>) {
    let data = with_preamble(&x.data);
    let mut clock = Clock::new(Instant(0), UNIX);
    let local = Local {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 8080,
    };
    let mut conn = Connection::new(local, &clock, site);
    let mut out = Vec::new();
    let mut at = 0usize;
    if whole {
        feed_all(&mut conn, &data, &mut out, &clock, site);
    } else {
        // The current run of output: when it started, the output length then, and whether the
        // transport reported undelivered bytes during it.
        let mut busy: Option<(Instant, usize, bool)> = None;
        // The minimum send rate's schedule for the current run, modelled here (issue #21): by
        // when (ms) the bytes sent so far pay for 150 B/s, from 10 s after the run began, and
        // never more than a window (10 s) ahead of the moment they were sent.
        let mut paid: Option<u64> = None;
        // What the transport reported holding at the last timer while output was pending: its
        // draining pays the schedule too; the first report gives a window from then.
        let mut queued: Option<u64> = None;
        let mut judged = false;
        // The output length at the shutdown, once the close lingers.
        let mut shut: Option<usize> = None;
        let mut app = App::default();
        for op in x.ops.iter().take(4096) {
            let streaming = conn.mid_response();
            let sent_before = out.len();
            match *op {
                Op::Input(n) if conn.wants_read() => {
                    let end = at.saturating_add(usize::from(n)).min(data.len());
                    conn.handle_input(&data[at..end], &clock, site);
                    at = end;
                }
                Op::Input(_) => {}
                Op::Sent(0) => send(&mut conn, &mut out, &clock, site, usize::MAX),
                Op::Sent(n) => send(&mut conn, &mut out, &clock, site, usize::from(n)),
                Op::Tick(ms) => {
                    let now = clock.now().add_millis(u64::from(ms) * 64);
                    clock.update(now, UNIX + now.0 / 1000);
                }
                Op::Timeout(undelivered) => {
                    let u = u64::from(undelivered);
                    let now = clock.now().0;
                    if conn.pending_bytes() > 0 {
                        if let Some(p) = &mut paid {
                            match queued.replace(u) {
                                Some(last) if u < last => {
                                    *p = (*p).max((*p + (last - u) * 1000 / 150).min(now + 10_000));
                                }
                                None if u > 0 => *p = (*p).max(now),
                                _ => {}
                            }
                        }
                    } else if undelivered > 0 {
                        let b = busy.get_or_insert((clock.now(), out.len(), true));
                        b.2 = true;
                    }
                    conn.handle_timeout(&clock, u64::from(undelivered));
                }
                Op::Eof => {
                    at = data.len();
                    conn.handle_eof(&clock, site);
                }
            }
            application(&mut conn, &clock, site, op, &mut app);
            let pending = conn.pending_bytes();
            let now = clock.now().0;
            if let Some(p) = &mut paid {
                let k = (out.len() - sent_before) as u64;
                *p = (*p).max((*p + k * 1000 / 150).min(now + 10_000));
            }
            match busy {
                None if pending > 0 => {
                    busy = Some((clock.now(), out.len(), false));
                    paid = Some(now + 10_000);
                    queued = None;
                }
                Some((_, _, false)) if pending == 0 => {
                    busy = None;
                    paid = None;
                    queued = None;
                }
                _ => {}
            }
            if conn.poll_close() == Some(Close::Abortive) && (streaming || conn.mid_response()) {
                // A streamed answer the application broke, gave up or let stall, or whose
                // client left: a reset is what it must be.
                judged = true;
            }
            if conn.poll_close() == Some(Close::Abortive) && !judged {
                // A reset is only for a client a window (10 s) behind the minimum send rate's
                // schedule, which starts after 10 s of grace (the engine's per-call rounding
                // may make it stricter by a millisecond per call: 100 ms of slack).
                judged = true;
                let (since, _, undelivered) = busy.expect("reset with nothing to send");
                if !undelivered {
                    let due = paid.unwrap_or(0) + 10_000;
                    let waited = clock.now().millis_since(since);
                    assert!(
                        waited >= 20_000,
                        "reset after {waited} ms, within the grace and a window"
                    );
                    assert!(
                        clock.now().0 + 100 >= due,
                        "reset at {} ms, due at {due} ms",
                        clock.now().0
                    );
                }
            }
            if conn.poll_close() == Some(Close::Graceful) {
                // A FIN now: everything queued so far must be whole. Then the lingering close:
                // input is read and discarded, and nothing more is ever sent.
                send(&mut conn, &mut out, &clock, site, usize::MAX);
                check_responses(&out, true);
                conn.handle_shutdown(&clock, 0);
                assert_eq!(conn.phase(), Phase::Lingering);
                shut = Some(out.len());
            }
            if let Some(len) = shut {
                assert!(!conn.has_output(), "output after the shutdown");
                assert_eq!(out.len(), len);
            }
        }
        if at < data.len() {
            send(&mut conn, &mut out, &clock, site, usize::MAX);
            feed_all(&mut conn, &data[at..], &mut out, &clock, site);
        }
    }
    if conn.mid_response() {
        // What a streamed answer sent so far reaches the client before it goes (the EOF
        // resets the connection), so that its framing is checked.
        send(&mut conn, &mut out, &clock, site, usize::MAX);
    }
    conn.handle_eof(&clock, site);
    send(&mut conn, &mut out, &clock, site, usize::MAX);
    (out, conn.poll_close())
}

/// Checks that `buf` is a sequence of responses; with `whole`, that none is cut short.
fn check_responses(mut buf: &[u8], whole: bool) {
    while !buf.is_empty() {
        if !whole && b"HTTP/1.1 ".starts_with(buf) {
            return; // reset a few bytes into a status line
        }
        assert!(
            buf.starts_with(b"HTTP/1.1 "),
            "garbage in output: {:?}",
            &buf[..buf.len().min(40)]
        );
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            assert!(!whole, "a response head cut short before a graceful close");
            return;
        };
        let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
        let status: u16 = head[9..12].parse().expect("status");
        let bodiless = matches!(status, 100 | 204 | 304);
        if !bodiless && head.lines().any(|l| l == "Transfer-Encoding: chunked") {
            match chunked_len(&buf[end + 4..]) {
                Some(n) => {
                    buf = &buf[end + 4 + n..];
                    continue;
                }
                None => {
                    assert!(!whole, "a chunked body cut short before a graceful close");
                    return;
                }
            }
        }
        if !bodiless
            && !head.contains("Content-Length: ")
            && head.lines().any(|l| l == "Connection: close")
            && !buf[end + 4..].starts_with(b"HTTP/1.1 ")
        {
            return; // a body delimited by the close: the rest is it
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse().expect("length"));
        let body = if status == 304 || status == 100 {
            0
        } else {
            len
        };
        let next = end + 4;
        // A HEAD response carries a length without a body: accept either when what follows is
        // another response.
        if buf.len() >= next + body
            && (buf.len() == next + body || buf[next + body..].starts_with(b"HTTP/1.1 "))
        {
            buf = &buf[next + body..];
        } else if buf.len() == next || buf[next..].starts_with(b"HTTP/1.1 ") {
            buf = &buf[next..];
        } else {
            assert!(
                !whole,
                "a body cut short before a graceful close: {} of {body}",
                buf.len() - next
            );
            return;
        }
    }
}

/// The length of a whole chunked body at the start of `buf` (chunks and the empty trailer
/// section), or `None` when it is cut short; malformed framing fails.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&buf[at..at + line]).expect("ASCII chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        at += line + 2;
        if size == 0 {
            assert!(
                buf.len() < at + 2 || &buf[at..at + 2] == b"\r\n",
                "trailers after the last chunk"
            );
            return (buf.len() >= at + 2).then_some(at + 2);
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        assert_eq!(
            &buf[at + size..at + size + 2],
            b"\r\n",
            "a chunk without its CRLF"
        );
        at += size + 2;
    }
}

static SITE: std::sync::OnceLock<Site> = std::sync::OnceLock::new();

fuzz_target!(|x: Input| {
    let site = SITE.get_or_init(site);
    let (out, closed) = run(site, &x, false);
    assert!(closed.is_some(), "connection still open after EOF");
    let graceful = matches!(closed, Some(Close::Graceful | Close::Finished));
    check_responses(&out, graceful);
    // Any tick lets the application answer (which the whole run has no schedule for).
    let timeless = !x.ops.iter().any(|op| matches!(op, Op::Tick(_) | Op::Eof));
    if timeless && graceful {
        let (whole, _) = run(site, &x, true);
        assert_eq!(whole, out, "splitting changed the output");
    }
});
