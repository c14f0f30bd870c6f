//! Allocation failure (issue #8): a global allocator that fails the k-th allocation of the code
//! under test, for every k, along a request/response path and along every control command.
//! In the kernel a failed allocation that is not handled is a bugcheck; here it would abort the
//! test process. Every failure must instead end in a 503 and a close (or, when even that cannot
//! be written, a reset), or a control reply saying "out of memory" with nothing changed, and the
//! next request must succeed.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc wrapper is unsafe by definition; test-only"
)]
#![allow(
    clippy::too_many_lines,
    reason = "test code: one scenario reads best whole"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{Harness, get, site};
use khttp_engine::Close;

struct FailAt;

thread_local! {
    /// Allocations counted on this thread while inside the code under test.
    static SEEN: Cell<usize> = const { Cell::new(0) };
    /// The allocation (counted from 0) that fails, during a run.
    static FAIL_AT: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether the code under test is running (the test's own allocations do not count).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this allocation is the one to fail.
fn should_fail() -> bool {
    if !INSIDE.with(Cell::get) {
        return false;
    }
    let n = SEEN.with(|s| {
        let n = s.get();
        s.set(n + 1);
        n
    });
    FAIL_AT.with(Cell::get) == Some(n)
}

/// Runs engine code: its allocations count, and one of them may fail.
fn engine<T>(f: impl FnOnce() -> T) -> T {
    INSIDE.with(|i| i.set(true));
    let out = f();
    INSIDE.with(|i| i.set(false));
    out
}

// SAFETY: every method forwards to `System` with the caller's own arguments, or returns null,
// which `GlobalAlloc` permits to signal failure; nothing else touches memory.
unsafe impl GlobalAlloc for FailAt {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: `layout` comes from the caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc`/`realloc`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; `ptr` and `layout` come from an earlier `System` allocation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: FailAt = FailAt;

/// Runs `f` with the `k`-th allocation of the code under test failing; returns its result
/// and whether the failure was reached (false: fewer than k + 1 allocations were made).
fn failing<T>(k: usize, f: impl FnOnce() -> T) -> (T, bool) {
    SEEN.with(|s| s.set(0));
    FAIL_AT.with(|a| a.set(Some(k)));
    let out = f();
    FAIL_AT.with(|a| a.set(None));
    (out, SEEN.with(Cell::get) > k)
}

/// Sends everything pending, copying it out with the engine's allocations counted apart.
fn flush(h: &mut Harness, out: &mut Vec<u8>) {
    loop {
        let mut slices = [&[][..]; 64];
        let n = h.conn.transmit_slices(&mut slices);
        if n == 0 {
            return;
        }
        let len: usize = slices[..n].iter().map(|s| s.len()).sum();
        for s in &slices[..n] {
            out.extend_from_slice(s);
        }
        engine(|| h.conn.handle_sent(len, &h.clock, &h.site));
    }
}

/// Statuses in a stream of responses, and whether it ends cut short.
fn statuses(mut buf: &[u8], head_only: &[bool]) -> (Vec<u16>, bool) {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hdrs);
        let Ok(httparse::Status::Complete(n)) = r.parse(buf) else {
            return (out, true);
        };
        let status = r.code.unwrap();
        let len: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |h| {
                std::str::from_utf8(h.value).unwrap().parse().unwrap()
            });
        let i = out.iter().filter(|&&s| s != 100).count();
        let len = if status == 100 || status == 304 || head_only.get(i) == Some(&true) {
            0
        } else {
            len
        };
        if buf.len() < n + len {
            return (out, true);
        }
        buf = &buf[n + len..];
        out.push(status);
    }
    (out, false)
}

/// One connection through many kinds of request, in two pieces (so that input is also held
/// back), with logging on or off.
fn scenario(mut h: Harness, stream: &[u8], logging: bool) -> (Vec<u8>, Option<Close>) {
    let mut out = Vec::with_capacity(1 << 16);
    let mut log = Vec::with_capacity(64);
    engine(|| h.conn.set_logging(logging));
    let (a, b) = stream.split_at(stream.len() / 2);
    engine(|| h.conn.handle_input(a, &h.clock, &h.site));
    flush(&mut h, &mut out);
    engine(|| h.conn.handle_input(b, &h.clock, &h.site));
    flush(&mut h, &mut out);
    engine(|| h.conn.handle_eof(&h.clock, &h.site));
    flush(&mut h, &mut out);
    engine(|| h.conn.drain_log(|r| log.push(r.status)));
    (out, h.closed())
}

/// Many kinds of request on one connection.
fn requests() -> Vec<u8> {
    let mut stream = Vec::new();
    stream.extend(get("/index.html", ""));
    stream.extend(get("/data.bin", "Accept-Encoding: gzip\r\n"));
    stream.extend(get("/data.bin", "Range: bytes=0-9, 20-29\r\n"));
    stream.extend(get("/missing", ""));
    stream.extend(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.extend(b"POST /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
    stream.extend(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.extend(b"PUT /index.html HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
    stream.extend(get("/a/./b/../../%69ndex.html", ""));
    stream.extend(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    stream
}

const EXPECTED: [u16; 10] = [200, 200, 206, 404, 200, 405, 200, 405, 200, 400];
const HEAD_ONLY: [bool; 10] = [
    false, false, false, false, true, false, false, false, false, false,
];

#[test]
fn every_allocation_on_the_request_path_can_fail() {
    for logging in [false, true] {
        let stream = requests();
        let (whole, _) = scenario(Harness::new(site()), &stream, logging);
        let (got, cut) = statuses(&whole, &HEAD_ONLY);
        let got: Vec<u16> = got.into_iter().filter(|&s| s != 100).collect();
        assert_eq!(
            (got, cut),
            (EXPECTED.to_vec(), false),
            "the scenario itself"
        );
        let mut k = 0;
        let (mut unavailable, mut resets) = (0, 0);
        loop {
            let h = Harness::new(site());
            let ((out, closed), reached) = failing(k, || scenario(h, &stream, logging));
            if !reached {
                break;
            }
            let (got, cut) = statuses(&out, &HEAD_ONLY);
            let got: Vec<u16> = got.into_iter().filter(|&s| s != 100).collect();
            // Answers as without the failure, up to a 503 that ends the connection; or a reset.
            let n = got.len();
            let (last, before) = got
                .split_last()
                .map_or((None, &[][..]), |(l, b)| (Some(*l), b));
            assert_eq!(
                before,
                &EXPECTED[..n.saturating_sub(1)],
                "k={k} logging={logging}"
            );
            if cut || closed == Some(Close::Abortive) {
                assert_eq!(
                    closed,
                    Some(Close::Abortive),
                    "k={k}: cut short without a reset"
                );
                resets += 1;
            } else {
                unavailable += usize::from(last == Some(503));
                assert!(
                    last == Some(503) || last == EXPECTED.get(n - 1).copied(),
                    "k={k} logging={logging}: {got:?}"
                );
                assert!(closed.is_some(), "k={k}: still open after EOF");
            }
            // The next connection, with memory back, is served.
            let mut h = Harness::new(site());
            assert_eq!(
                common::one(&h.exchange(&get("/index.html", ""))).status,
                200
            );
            k += 1;
        }
        println!(
            "request path, logging {logging}: {k} allocations, each failed in turn: \
             {unavailable} answered 503, {resets} reset"
        );
        assert!(k > 5, "the scenario allocates ({k})");
        assert!(unavailable > 0, "some failures reach the client as 503");
    }
}

/// Every control command, with the k-th allocation failing for every k (with `try-arc`: on
/// stable Rust an `Arc` cannot be allocated fallibly, see engine/src/mem.rs): no abort, and the reply
/// decodes; a command that fails says so and leaves the site as it was.
#[cfg(feature = "try-arc")]
#[test]
fn every_allocation_on_every_control_command_can_fail() {
    use khttp_engine::ctl::{Call, dispatch};
    use khttp_engine::persist::render;
    use khttp_proto::{PutEntry, Request, Status, decode_reply, encode_request};

    let mut base = site();
    base.iplisten_add("127.0.0.1").unwrap();
    let body = vec![7u8; 3000];
    let put = |url| {
        Request::CachePut(PutEntry {
            url,
            content_type: "text/plain",
            status: 0,
            ttl: Some(60),
            last_modified: Some(1),
            headers: vec!["X-A: 1", "X-B: 2"],
            identity_len: 1000,
            gzip_len: Some(1000),
            br_len: Some(1000),
            digest: None,
        })
    };
    let requests: Vec<Request<'_>> = vec![
        Request::Version,
        Request::UrlaclAdd {
            prefix: "http://+:8081/app/",
            acl: Some("user:alice"),
            cache_control: Some("max-age=60"),
        },
        Request::UrlaclDelete {
            prefix: "http://+:8080/",
        },
        Request::UrlaclList,
        Request::IplistenAdd { addr: "::1" },
        Request::IplistenDelete { addr: "127.0.0.1" },
        Request::IplistenList,
        put("http://+:8080/new.txt"),
        put("http://+:8080/index.html"),
        Request::CacheDelete {
            url: "http://+:8080/index.html",
        },
        Request::CacheFlush {
            prefix: Some("http://+:8080/"),
        },
        Request::CacheFlush { prefix: None },
        Request::CacheList { prefix: None },
        Request::Stats,
        Request::LimitsGet,
        Request::LimitsSet {
            name: "idle-timeout",
            value: 30,
        },
    ];
    let mut total = 0;
    for req in &requests {
        let mut input = Vec::new();
        let code = encode_request(req, &mut input);
        let direct: &[u8] = if matches!(req, Request::CachePut(_)) {
            &body
        } else {
            &[]
        };
        let mut k = 0;
        loop {
            let mut s = base.clone();
            let mut out = Vec::new();
            let (d, reached) = failing(k, || {
                engine(|| {
                    let call = Call {
                        code,
                        input: &input,
                        direct,
                        output_cap: 1 << 20,
                    };
                    dispatch(&mut s, &call, khttp_engine::Instant(0), &mut out)
                })
            });
            if !reached {
                assert_eq!(d.status, Status::Ok, "{req:?} without failures");
                break;
            }
            if d.status == Status::Ok {
                // The failure hit something optional; the command still did its work.
                assert!(decode_reply(&out).is_ok(), "{req:?} k={k}");
            } else {
                assert_eq!(d.status, Status::OutOfMemory, "{req:?} k={k}");
                assert!(!d.changed && !d.persist);
                assert_eq!(
                    render(&s),
                    render(&base),
                    "{req:?} k={k}: a refused command changed the site"
                );
                assert_eq!(s.cache().len(), base.cache().len());
                if !out.is_empty() {
                    assert!(decode_reply(&out).is_ok(), "{req:?} k={k}");
                }
            }
            k += 1;
        }
        total += k;
    }
    // The private copy each command changes.
    let mut k = 0;
    loop {
        let (copy, reached) = failing(k, || engine(|| base.try_clone()));
        if !reached {
            assert_eq!(render(&copy.unwrap()), render(&base));
            break;
        }
        assert!(copy.is_err(), "k={k}: a failed copy says so");
        k += 1;
    }
    total += k;
    println!(
        "control: {} commands and the site copy, {total} allocations, each failed in turn",
        requests.len()
    );
}

/// A request offered to an application (the hand-off khttpd and the driver share): every
/// allocation of an offer may fail, and then nothing is left half-made: the request is refused
/// as out of memory, the hand-off is as it was, and the next offer succeeds.
#[test]
fn every_allocation_of_an_offer_can_fail() {
    use khttp_engine::{Delivery, Handoff, Local, Refusal};

    let local = Local {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 8080,
    };
    let d = Delivery {
        queue: 3,
        head: b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n",
        spans: b"",
        body: b"a body",
        path: b"/app/x",
        local,
        remote: Some(local),
        cache_url: Some("http://+:8080/app/x"),
    };
    let site = khttp_engine::Site::new();
    // Into an empty hand-off (its tables grow) and into one that holds a request.
    for prefill in [0usize, 1] {
        let mut failures = 0;
        for k in 0.. {
            let mut h: Handoff<u32> = Handoff::new();
            if prefill == 1 {
                h.offer(1, &d, &site).unwrap();
            }
            let (r, failed) = failing(k, || engine(|| h.offer(2, &d, &site)));
            if !failed {
                assert!(r.is_ok());
                assert_eq!(h.waiting(3), prefill + 1);
                break;
            }
            failures += 1;
            assert_eq!(r, Err(Refusal::OutOfMemory), "allocation {k}");
            assert_eq!(
                (h.len(), h.waiting(3)),
                (prefill, prefill),
                "allocation {k}: half an offer is left"
            );
            assert!(
                h.offer(3, &d, &site).is_ok(),
                "allocation {k}: the next offer"
            );
            let first = h.receive(3, 9).map(|r| r.id);
            assert!(first.is_some_and(|id| h.answer(id, 9).is_some()));
        }
        // The URL, the head and the body; and the tables, when they grow.
        assert!(
            failures >= 3 + 3 * (1 - prefill),
            "only {failures} allocations were tried"
        );
    }
}
