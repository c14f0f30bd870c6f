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
    /// The TLS cushion (see `TestCushion`): inside a call into rustls.
    static IN_RUSTLS: Cell<bool> = const { Cell::new(false) };
    /// The cushion is set aside.
    static RESERVED: Cell<bool> = const { Cell::new(false) };
    /// The cushion was given back during the current call.
    static SPENT: Cell<bool> = const { Cell::new(false) };
    /// Setting the cushion aside again fails.
    static REFILL_FAILS: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated during the current call into rustls, and the most in any one call.
    static CALL_BYTES: Cell<usize> = const { Cell::new(0) };
    static MOST_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Whether this allocation is the one to fail. Inside a call into rustls, with the cushion set
/// aside, the failure spends the cushion instead, as khttpd's allocator does (host/src/sys.rs:
/// it frees the set-aside block and asks the system again, which then gives).
fn should_fail(size: usize) -> bool {
    if !INSIDE.with(Cell::get) {
        return false;
    }
    let in_rustls = IN_RUSTLS.with(Cell::get);
    if in_rustls {
        CALL_BYTES.with(|b| b.set(b.get() + size));
    }
    let n = SEEN.with(|s| {
        let n = s.get();
        s.set(n + 1);
        n
    });
    if FAIL_AT.with(Cell::get) != Some(n) {
        return false;
    }
    if in_rustls && RESERVED.with(|r| r.replace(false)) {
        SPENT.with(|s| s.set(true));
        return false;
    }
    true
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
        if should_fail(layout.size()) {
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
        if should_fail(new_size) {
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

/// What a connection did with one allocation failing.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Cut short, with a reset.
    Reset,
    /// Answered 503 and closed.
    Unavailable,
    /// Answered as without the failure (the failure hit something optional).
    Served,
}

/// Checks what a connection sent with one allocation failing (`out`) and how it ended
/// (`closed`): the answers it would have given without the failure, up to a 503 that ends the
/// connection, or up to a cut with a reset.
fn judge(out: &[u8], closed: Option<Close>, what: &str) -> Outcome {
    let (got, cut) = statuses(out, &HEAD_ONLY);
    let got: Vec<u16> = got.into_iter().filter(|&s| s != 100).collect();
    let n = got.len();
    let (last, before) = got
        .split_last()
        .map_or((None, &[][..]), |(l, b)| (Some(*l), b));
    assert_eq!(before, &EXPECTED[..n.saturating_sub(1)], "{what}");
    if cut || closed == Some(Close::Abortive) {
        assert_eq!(
            closed,
            Some(Close::Abortive),
            "{what}: cut short without a reset"
        );
        return Outcome::Reset;
    }
    assert!(
        last == Some(503) || last == EXPECTED.get(n - 1).copied(),
        "{what}: {got:?}"
    );
    assert!(closed.is_some(), "{what}: still open after EOF");
    if last == Some(503) {
        Outcome::Unavailable
    } else {
        Outcome::Served
    }
}

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
            match judge(&out, closed, &format!("k={k} logging={logging}")) {
                Outcome::Reset => resets += 1,
                Outcome::Unavailable => unavailable += 1,
                Outcome::Served => {}
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

/// The host's cushion for calls into rustls, as khttpd's allocator keeps it (see
/// `should_fail`): set aside again at the next call once spent, unless `REFILL_FAILS`.
#[cfg(feature = "tls")]
struct TestCushion;

#[cfg(feature = "tls")]
impl khttp_engine::tls::Cushion for TestCushion {
    fn enter(&self) -> bool {
        if !RESERVED.with(Cell::get) {
            if REFILL_FAILS.with(Cell::get) {
                return false;
            }
            RESERVED.with(|r| r.set(true));
        }
        SPENT.with(|s| s.set(false));
        CALL_BYTES.with(|b| b.set(0));
        IN_RUSTLS.with(|i| i.set(true));
        true
    }

    fn leave(&self) -> bool {
        IN_RUSTLS.with(|i| i.set(false));
        let bytes = CALL_BYTES.with(Cell::get);
        MOST_BYTES.with(|m| m.set(m.get().max(bytes)));
        SPENT.with(|s| s.replace(false))
    }
}

/// A TLS client and the server's session over one connection, the server's calls counted.
#[cfg(feature = "tls")]
struct TlsPair {
    client: rustls::ClientConnection,
    tls: khttp_engine::tls::Tls,
    h: Harness,
    got: Vec<u8>,
}

#[cfg(feature = "tls")]
impl TlsPair {
    /// A new connection; `None` when the server refuses it (the cushion could not be had).
    fn new(
        server: &std::sync::Arc<rustls::ServerConfig>,
        client: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Option<Self> {
        let h = Harness::new(site());
        let tls =
            engine(|| khttp_engine::tls::Tls::new(std::sync::Arc::clone(server), &TestCushion));
        match tls {
            Ok(tls) => Some(Self {
                client: common::tls::client(client),
                tls,
                h,
                got: Vec::new(),
            }),
            Err(e) => {
                assert_eq!(e, khttp_engine::tls::TlsError::OutOfMemory);
                None
            }
        }
    }

    /// Carries bytes both ways until neither side has any to send; the client's plaintext is
    /// kept. The client must never see a broken record: what the server sends is whole.
    fn run(&mut self) {
        use std::io::Read;
        for _ in 0..10_000 {
            let mut up = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut up).unwrap();
            }
            let Self { tls, h, .. } = self;
            if !up.is_empty() {
                engine(|| tls.handle_input(&up, &mut h.conn, &h.clock, &h.site));
            }
            let down = tls.transmit().to_vec();
            engine(|| {
                tls.handle_sent(down.len());
                tls.pump(&mut h.conn, &h.clock, &h.site);
            });
            let mut rd = down.as_slice();
            while !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
                self.client.process_new_packets().unwrap();
                let mut plain = [0u8; 65_536];
                while let Ok(n) = self.client.reader().read(&mut plain) {
                    if n == 0 {
                        break;
                    }
                    self.got.extend_from_slice(&plain[..n]);
                }
            }
            if up.is_empty() && down.is_empty() {
                return;
            }
        }
        panic!("no end to the exchange");
    }

    /// Sends `bytes` as the client's plaintext and runs the exchange.
    fn request(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.client.writer().write_all(bytes).unwrap();
        self.run();
    }

    /// The socket's end, then what the server does with its socket.
    fn finish(&mut self) -> Option<Close> {
        let Self { tls, h, .. } = self;
        engine(|| tls.handle_eof(&mut h.conn, &h.clock, &h.site));
        self.run();
        self.tls.poll_close(&self.h.conn)
    }
}

/// Every allocation along a TLS connection (its handshake, each request's decryption and each
/// response's encryption, over TLS 1.3 and 1.2) fails in turn. A failure in the engine's own
/// code is answered as on a plain connection (a 503 and a close); a failure inside rustls,
/// which allocates infallibly, spends the host's cushion instead of aborting, and the session
/// ends at once with a reset. No abort, nothing broken sent, and the next connection, with a
/// full handshake, is served.
#[cfg(feature = "tls")]
#[test]
fn every_allocation_on_a_tls_connection_can_fail() {
    use common::tls::configs;

    let stream = requests();
    let (a, b) = stream.split_at(stream.len() / 2);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (server, client) = configs(&[version]);
        let scenario = || {
            let mut p = TlsPair::new(&server, &client)?;
            p.run();
            p.request(a);
            p.request(b);
            let closed = p.finish();
            Some((p.got, closed))
        };
        RESERVED.with(|r| r.set(true));
        let (whole, closed) = scenario().unwrap();
        let (got, cut) = statuses(&whole, &HEAD_ONLY);
        let got: Vec<u16> = got.into_iter().filter(|&s| s != 100).collect();
        assert_eq!(
            (got, cut),
            (EXPECTED.to_vec(), false),
            "the scenario itself"
        );
        assert!(closed.is_some(), "closed after the end");

        let (mut k, mut refused, mut unavailable, mut resets, mut spent) = (0, 0, 0, 0, 0);
        MOST_BYTES.with(|m| m.set(0));
        loop {
            let (outcome, reached) = failing(k, scenario);
            if !reached {
                break;
            }
            if RESERVED.with(|r| !r.get()) {
                spent += 1;
            }
            match outcome {
                None => refused += 1,
                Some((out, closed)) => match judge(&out, closed, &format!("k={k} {version:?}")) {
                    Outcome::Reset => resets += 1,
                    Outcome::Unavailable => unavailable += 1,
                    Outcome::Served => {}
                },
            }
            // The next connection, a full handshake, is served: the cushion is set aside again.
            let mut p = TlsPair::new(&server, &client).expect("the cushion is set aside again");
            p.request(&get("/index.html", ""));
            assert_eq!(
                common::one(&p.got).status,
                200,
                "k={k}: the next connection"
            );
            assert!(RESERVED.with(Cell::get));
            k += 1;
        }
        let most = MOST_BYTES.with(Cell::get);
        println!(
            "TLS {version:?}: {k} allocations, each failed in turn: {spent} inside rustls \
             (the cushion spent), {refused} connections refused, {unavailable} answered 503, \
             {resets} reset; the most one call into rustls allocated: {most} bytes"
        );
        assert!(k > 50, "the scenario allocates ({k})");
        assert!(spent > 0 && unavailable > 0 && resets > 0);
        assert!(
            most.saturating_mul(4) <= khttp_engine::tls::CUSHION,
            "one call into rustls allocated {most} bytes: raise tls::CUSHION"
        );
    }
}

/// When the cushion, once spent, cannot be set aside again, no call into rustls is made: a
/// new connection is refused, and an open session ends with a reset at its next input.
#[cfg(feature = "tls")]
#[test]
fn without_a_cushion_tls_connections_are_refused() {
    use common::tls::configs;

    let (server, client) = configs(&[&rustls::version::TLS13]);
    RESERVED.with(|r| r.set(true));
    let mut open = TlsPair::new(&server, &client).unwrap();
    open.request(&get("/index.html", ""));
    assert_eq!(common::one(&open.got).status, 200);
    RESERVED.with(|r| r.set(false));
    REFILL_FAILS.with(|r| r.set(true));
    assert!(
        TlsPair::new(&server, &client).is_none(),
        "a new connection is refused"
    );
    open.got.clear();
    open.request(&get("/index.html", ""));
    assert!(open.got.is_empty());
    assert_eq!(open.tls.poll_close(&open.h.conn), Some(Close::Abortive));
    REFILL_FAILS.with(|r| r.set(false));
    let mut again = TlsPair::new(&server, &client).expect("memory is back");
    again.request(&get("/index.html", ""));
    assert_eq!(common::one(&again.got).status, 200);
}
