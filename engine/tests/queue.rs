//! Requests handed to applications (issue #12), in the engine: which requests are deferred,
//! what a host is offered, the answers, and every way a deferred request ends.

mod common;

use std::sync::Arc;

use common::{BODY, Harness, get, one, parse_responses, site};
use khttp_engine::{AppResponse, Close, Holder, Owner, Phase, Refusal, RequestId, Site, Timer};

const HOLDER: Holder = Holder { pid: 1, uid: 0 };

/// The example site with a queue for `http://+:8080/`, attached (or not).
fn queued_site(attached: bool) -> Site {
    let mut s = site();
    let id = s
        .attach_queue("app", &["http://+:8080/"], HOLDER, Owner::Uid(0))
        .unwrap();
    if !attached {
        s.detach_queue(id, HOLDER).unwrap();
    }
    s
}

fn reply(status: u16, body: &[u8]) -> AppResponse {
    AppResponse::new(
        status,
        "text/plain",
        &["X-App: yes"],
        Arc::new(body.to_vec()),
    )
    .unwrap()
}

/// Takes the offered request, queues it as `id`, and returns its head and body.
fn take(h: &mut Harness, id: u64) -> (String, Vec<u8>) {
    let d = h
        .conn
        .poll_delivery()
        .expect("a request for the application");
    let got = (
        String::from_utf8_lossy(d.head).into_owned(),
        d.body.to_vec(),
    );
    h.conn.handle_queued(RequestId(id), &h.clock);
    assert!(h.conn.poll_delivery().is_none(), "offered once");
    got
}

/// Issue #21, finding 5: under a queue, a request with a query string goes to the
/// application even where the cache holds its path; without a queue, the query is ignored.
/// The application is told the canonical path and the query (what it forwards), and the
/// client's address.
#[test]
fn a_query_under_a_queue_is_the_applications() {
    let mut h = Harness::new(queued_site(true));
    h.conn.set_remote(khttp_engine::Local {
        ip: std::net::Ipv4Addr::new(192, 0, 2, 7).into(),
        port: 4321,
    });
    let r = one(&h.exchange(&get("/index.html", "")));
    assert_eq!((r.status, r.body.as_slice()), (200, BODY), "a hit");
    h.feed(&get("/index.html?tab=secret-settings", ""));
    let d = h.conn.poll_delivery().expect("the application's");
    assert_eq!(d.path, b"/index.html?tab=secret-settings");
    assert_eq!(d.remote.map(|r| r.port), Some(4321));
    h.conn.handle_queued(RequestId(1), &h.clock);
    assert!(
        h.conn
            .handle_response(RequestId(1), &reply(200, b"app"), &h.clock, &h.site)
    );
    assert_eq!(one(&h.flush()).body, b"app");
    // The canonical path, whatever the raw one.
    h.feed(&get("/x/%2E%2E/a%2Fb%7e?q=%2F", ""));
    assert_eq!(h.conn.poll_delivery().unwrap().path, b"/a/b~?q=%2F");
    // A reservation without a queue serves its entry, query or not.
    let mut plain = Harness::new(site());
    let r = one(&plain.exchange(&get("/index.html?tab=x", "")));
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
}

/// A header field's name and value.
type Field = (&'static [u8], &'static [u8]);

/// Issue #23: the application is told where the method, the target and each field lie in the
/// head (`RequestRow::spans`), as the parser found them: a leading empty line, white space
/// around values, an empty value, a method the cache does not serve, LF-only lines.
#[test]
fn the_heads_parts_are_indexed_as_parsed() {
    let heads: [&[u8]; 3] = [
        b"\r\nGET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-A: \t one two \t\r\nX-Empty:\r\n\r\n",
        b"PATCH /x HTTP/1.1\nhost:a\ncontent-length: 0\n\n",
        b"GET http://a/abs HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    let want: [(&[u8], &[u8], &[Field]); 3] = [
        (
            b"GET",
            b"/p?q=1",
            &[(b"Host", b"a"), (b"X-A", b"one two"), (b"X-Empty", b"")],
        ),
        (
            b"PATCH",
            b"/x",
            &[(b"host", b"a"), (b"content-length", b"0")],
        ),
        (b"GET", b"http://a/abs", &[(b"Host", b"a")]),
    ];
    for (head, (method, target, fields)) in heads.into_iter().zip(want) {
        let mut h = Harness::new(queued_site(true));
        h.feed(head);
        let d = h.conn.poll_delivery().expect("the application's");
        let parts = khttp_proto::spans::HeadParts::read(d.head, d.spans).expect("an index");
        assert_eq!((parts.method, parts.target), (method, target));
        assert!(parts.fields().eq(fields.iter().copied()), "{head:?}");
    }
}

#[test]
fn a_miss_goes_to_the_application_and_its_answer_to_the_client() {
    let mut h = Harness::new(queued_site(true));
    // Cached entries answer first, without the application.
    let r = one(&h.exchange(&get("/index.html", "")));
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    assert!(h.conn.poll_delivery().is_none());

    // A miss is offered, with a request pipelined behind it that waits.
    h.feed(&get("/dynamic?x=1", "Accept: */*\r\n"));
    h.feed(&get("/index.html", ""));
    let (head, body) = take(&mut h, 7);
    assert!(head.starts_with("GET /dynamic?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Accept: */*"));
    assert!(body.is_empty());
    assert_eq!(h.conn.phase(), Phase::Waiting);
    assert_eq!(h.conn.waiting_for(), Some(RequestId(7)));
    assert!(!h.conn.wants_read(), "pipelined requests wait");
    assert!(h.flush().is_empty(), "nothing before the answer");

    // The answer, then the pipelined request, in order.
    assert!(
        !h.conn
            .handle_response(RequestId(8), &reply(200, b"x"), &h.clock, &h.site)
    );
    assert!(
        h.conn
            .handle_response(RequestId(7), &reply(201, b"made\n"), &h.clock, &h.site)
    );
    let rs = parse_responses(&h.flush(), &[]);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].status, 201);
    assert_eq!(rs[0].header("x-app"), Some("yes"));
    assert_eq!(rs[0].header("content-type"), Some("text/plain"));
    assert_eq!(rs[0].header("server"), Some("khttp"));
    assert_eq!(rs[0].body, b"made\n");
    assert_eq!((rs[1].status, rs[1].body.as_slice()), (200, BODY));
    assert!(
        !h.conn
            .handle_response(RequestId(7), &reply(200, b"x"), &h.clock, &h.site)
    );
}

#[test]
fn other_methods_on_a_cached_url_go_to_the_application() {
    let mut h = Harness::new(queued_site(true));
    h.feed(b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    let (head, body) = take(&mut h, 1);
    assert!(head.starts_with("POST /index.html"));
    assert_eq!(body, b"hello");
}

#[test]
fn bodies_are_decoded_and_bounded() {
    let mut h = Harness::new(queued_site(true));
    // Chunked, split anywhere: the application gets the decoded bytes.
    let req = b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\n\r\n";
    for b in req.chunks(3) {
        h.feed(b);
    }
    assert_eq!(take(&mut h, 1).1, b"abcde");

    // Over max-queued-body-bytes: 413 and a close, announced or chunked.
    let mut s = queued_site(true);
    s.set_limit("max-queued-body-bytes", 4).unwrap();
    let mut h = Harness::new(s.clone());
    let r = one(&h.exchange(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
    assert_eq!(r.status, 413);
    assert_eq!(h.closed(), Some(Close::Graceful));
    let mut h = Harness::new(s);
    let r = one(&h.exchange(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ));
    assert_eq!(r.status, 413);
    assert!(h.conn.poll_delivery().is_none());

    // Raised past the 1 MiB a discarded body may have: a longer announced body reaches the
    // application, and one behind a cached answer is still 413, at once.
    let mut s = queued_site(true);
    s.set_limit("max-queued-body-bytes", 3 << 20).unwrap();
    let mut h = Harness::new(s.clone());
    let big = vec![b'x'; 2 << 20];
    let mut req = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    h.feed(&req);
    assert_eq!(take(&mut h, 1).1.len(), big.len());
    let mut h = Harness::new(s);
    let head = format!(
        "GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let r = one(&h.exchange(head.as_bytes()));
    assert_eq!(r.status, 413);
    assert!(h.conn.poll_delivery().is_none());
}

/// Issue #21, finding 4: request bodies held for applications share one budget across every
/// connection and queue (`body-buffer-bytes`), counted from the first byte read until the
/// request is answered or gone; past it, 503 with `Retry-After` and a close.
#[test]
fn held_bodies_share_one_budget() {
    use khttp_engine::{Handoff, RequestId};
    use std::sync::atomic::Ordering::Relaxed;
    let mut s = queued_site(true);
    s.set_limit("body-buffer-bytes", 10_000).unwrap();
    let held = |s: &Site| s.stats().body_bytes_held.load(Relaxed);
    let post = |len: usize| format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    // One client sends 6,000 of 8,000 bytes and waits: they are held.
    let mut a = Harness::new(s.clone());
    a.feed(post(8000).as_bytes());
    assert_eq!(held(&s), 0, "nothing before the first byte");
    a.feed(&[b'a'; 6000]);
    assert_eq!(held(&s), 6000);
    // Another announces 8,000: it cannot fit now, 503 at once, nothing read.
    let mut b = Harness::new(s.clone());
    let r = one(&b.exchange(post(8000).as_bytes()));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(b.closed(), Some(Close::Graceful));
    // A chunked one is refused when its bytes would pass the budget.
    let mut c = Harness::new(s.clone());
    c.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.feed(b"bb8\r\n");
    c.feed(&[b'c'; 3000]);
    assert_eq!(held(&s), 9000);
    c.feed(b"\r\n7d0\r\n");
    c.feed(&[b'c'; 2000]);
    let r = one(&c.flush());
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("too many request bodies"));
    assert_eq!(held(&s), 6000, "c's bytes are given back at once");
    // A's body completes, is offered and queued: the hand-off holds it, the connection not.
    a.feed(&[b'a'; 2000]);
    let mut handoff: Handoff<u8> = Handoff::new();
    let id = {
        let d = a.conn.poll_delivery().unwrap();
        handoff.offer(0, &d, &a.site).unwrap()
    };
    a.conn.handle_queued(id, &a.clock);
    assert_eq!(held(&s), 8000, "counted once, by the hand-off");
    // Answered: nothing held.
    assert_eq!(handoff.receive(1, 7).map(|r| r.id), Some(id));
    handoff.answer(id, 7);
    assert_eq!(held(&s), 0);
    // A connection that goes gives its bytes back.
    let mut d = Harness::new(s.clone());
    d.feed(post(5000).as_bytes());
    d.feed(&[b'd'; 4000]);
    assert_eq!(
        held(&s),
        4096,
        "what is allocated counts: the buffer's capacity"
    );
    drop(d);
    assert_eq!(held(&s), 0);
    let _ = RequestId(0);
}

/// Issue #21, finding 4: a body must keep up `min-receive-rate` (judged over a window after a
/// grace period), as well as arrive within `header-timeout`: one that stalls is closed within
/// seconds, and its bytes given back.
#[test]
fn a_stalled_body_is_closed_within_seconds() {
    use std::sync::atomic::Ordering::Relaxed;
    let s = queued_site(true);
    let mut h = Harness::new(s.clone());
    h.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
    h.feed(&vec![b'x'; 1_048_575]);
    assert!(s.stats().body_bytes_held.load(Relaxed) >= 1_048_575);
    h.advance_secs(19);
    assert_eq!(h.closed(), None);
    h.advance_secs(1);
    assert_eq!(h.conn.phase(), Phase::Sending);
    assert_eq!(h.closed(), Some(Close::Graceful));
    assert_eq!(s.stats().body_bytes_held.load(Relaxed), 0);
    // A body trickled at the rate keeps going, until `header-timeout` (120 s).
    let mut h = Harness::new(s);
    h.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
    for _ in 0..119 {
        h.advance_secs(1);
        h.feed(&[b'y'; 150]);
    }
    assert_eq!(h.closed(), None);
    h.advance_secs(1);
    assert_eq!(h.closed(), Some(Close::Graceful));
    // Off: only header-timeout.
    let mut s = queued_site(true);
    s.set_limit("min-receive-rate", 0).unwrap();
    let mut h = Harness::new(s);
    h.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
    h.advance_secs(119);
    assert_eq!(h.closed(), None);
}

#[test]
fn no_application_or_a_full_queue_is_503() {
    // A queue with no process: 503 at once, as http.sys answers.
    let mut h = Harness::new(queued_site(false));
    let r = one(&h.exchange(&get("/dynamic", "")));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&r.body).contains("no application"));
    // The connection goes on.
    let r = one(&h.exchange(&get("/index.html", "")));
    assert_eq!(r.status, 200);

    // The host's queue is full: 503 with Retry-After, and the next request is served.
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/dynamic", ""));
    h.feed(&get("/index.html", ""));
    assert!(h.conn.poll_delivery().is_some());
    h.conn.handle_refused(Refusal::QueueFull, &h.clock, &h.site);
    let rs = parse_responses(&h.flush(), &[]);
    assert_eq!(
        (rs[0].status, rs[0].header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(rs[1].status, 200);
}

#[test]
fn an_application_that_does_not_answer_in_time_gives_503() {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/slow", ""));
    take(&mut h, 42);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::App, None));
    assert_eq!(d.at, h.clock.now().add_secs(60));
    h.advance_secs(59);
    assert_eq!(h.conn.waiting_for(), Some(RequestId(42)));
    h.advance_secs(60);
    let r = one(&h.flush());
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("in time"));
    assert_eq!(h.conn.take_cancelled(), Some(RequestId(42)));
    assert_eq!(h.conn.take_cancelled(), None);
    // A late answer is refused, and the connection serves the next request.
    assert!(
        !h.conn
            .handle_response(RequestId(42), &reply(200, b"late"), &h.clock, &h.site)
    );
    assert_eq!(one(&h.exchange(&get("/index.html", ""))).status, 200);
}

#[test]
fn an_application_that_goes_away_gives_503() {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/d", ""));
    take(&mut h, 5);
    assert!(
        !h.conn
            .handle_abandoned(RequestId(6), false, &h.clock, &h.site)
    );
    assert!(
        h.conn
            .handle_abandoned(RequestId(5), false, &h.clock, &h.site)
    );
    let r = one(&h.flush());
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    assert_eq!(h.conn.phase(), Phase::Idle);
}

#[test]
fn head_connection_close_and_a_client_that_goes() {
    // HEAD: the application's length, no body.
    let mut h = Harness::new(queued_site(true));
    h.feed(b"HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n");
    take(&mut h, 1);
    assert!(
        h.conn
            .handle_response(RequestId(1), &reply(200, b"12345"), &h.clock, &h.site)
    );
    let out = h.flush();
    let r = &parse_responses(&out, &[true])[0];
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(out.ends_with(b"\r\n\r\n"));

    // A client that closes its side while the application works has gone (nginx's 499): the
    // request is cancelled, the connection closes, and a late answer is refused.
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/d", ""));
    take(&mut h, 2);
    h.conn.handle_eof(&h.clock, &h.site);
    assert_eq!(h.conn.take_cancelled(), Some(RequestId(2)));
    assert_eq!(h.closed(), Some(Close::Graceful));
    assert!(
        !h.conn
            .handle_response(RequestId(2), &reply(200, b"ok"), &h.clock, &h.site)
    );
    assert!(h.flush().is_empty());

    // `Connection: close` from the client: closed after the answer.
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/d", "Connection: close\r\n"));
    take(&mut h, 3);
    assert!(
        h.conn
            .handle_response(RequestId(3), &reply(204, b""), &h.clock, &h.site)
    );
    let r = one(&h.flush());
    assert_eq!((r.status, r.header("content-length")), (204, None));
    assert_eq!(h.closed(), Some(Close::Graceful));
}

#[test]
fn application_responses_are_checked() {
    let body = Arc::new(Vec::new());
    assert!(AppResponse::new(200, "", &[], Arc::clone(&body)).is_ok());
    for bad in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "X-Bad\r\nInjected: 1",
        "NoColon",
    ] {
        assert!(
            AppResponse::new(200, "text/plain", &[bad], Arc::clone(&body)).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(AppResponse::new(99, "", &[], Arc::clone(&body)).is_err());
    assert!(AppResponse::new(600, "", &[], Arc::clone(&body)).is_err());
    assert!(AppResponse::new(200, "text/html\r\nX: y", &[], body).is_err());
}

/// The kernel-cache rules for applications' answers (issue #12).
#[test]
fn what_may_be_cached() {
    use khttp_engine::app_response_cacheable;
    let s = queued_site(true);
    // What the connection offers the application with the request (decided with its
    // answer): `None` when nothing is offered (a request refused outright) or when the answer
    // may not be cached.
    let url = |head: &str| {
        let mut h = Harness::new(queued_site(true));
        h.feed(head.as_bytes());
        h.conn
            .poll_delivery()
            .and_then(|d| d.cache_url.map(str::to_owned))
    };
    assert_eq!(
        url("GET /a/b.html HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
        Some("http://+:8080/a/b.html")
    );
    assert_eq!(
        url("GET /a/%7euser HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
        Some("http://+:8080/a/~user"),
        "stored under the canonical path"
    );
    assert_eq!(url("GET /a?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    assert_eq!(url("HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    assert_eq!(url("POST /a HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    assert_eq!(
        url("GET /a HTTP/1.1\r\nHost: x\r\nCookie: c=1\r\n\r\n"),
        None
    );
    assert_eq!(
        url("GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eA==\r\n\r\n"),
        None
    );
    // Issue #21: a raw path whose canonical form names another resource (an escaped slash, a
    // backslash, a dot-segment) is never cached: the application read the raw one.
    for poison in [
        "/a/x%2F..%2F..%2F",
        "/static/x%2F..%2F..%2Fuser%2Fadmin",
        "/a/x%2f%2e%2e%2f",
        "/a/x%5C..%5Cb",
        "/a/x\\..\\b",
        "/a/./b",
        "/a/c/../b",
    ] {
        let head = format!("GET {poison} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(url(&head), None, "{poison}");
    }
    // Nor the answer to a request with a body, which may have shaped it.
    assert_eq!(
        url("GET /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
        None
    );
    assert_eq!(
        url("GET /a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        None
    );
    // A request that is offered at all, with the rules' answer: the poison paths above are
    // offered (so the test sees the rule, not a refusal).
    let mut h = Harness::new(queued_site(true));
    h.feed(b"GET /a/x%2F..%2F..%2F HTTP/1.1\r\nHost: x\r\n\r\n");
    let d = h.conn.poll_delivery().expect("offered to the application");
    assert_eq!(d.cache_url, None);
    assert_eq!(
        url("GET /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_deref(),
        Some("http://+:8080/a/b")
    );
    assert!(app_response_cacheable(200, &["X-A: 1"], 10, &s));
    assert!(!app_response_cacheable(201, &[], 10, &s));
    assert!(!app_response_cacheable(200, &["Set-Cookie: a=b"], 10, &s));
    assert!(!app_response_cacheable(
        200,
        &["Cache-Control: max-age=5, private"],
        10,
        &s
    ));
    assert!(!app_response_cacheable(
        200,
        &["cache-control: no-store"],
        10,
        &s
    ));
    assert!(!app_response_cacheable(200, &[], u64::MAX, &s));
}

/// Each queue counts what became of its requests.
#[test]
fn queues_count_their_requests() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut h = Harness::new(queued_site(true));
    let stats = Arc::clone(&h.site.queues().iter().next().unwrap().stats);
    h.feed(&get("/a", ""));
    take(&mut h, 1);
    assert_eq!(
        (stats.requests.load(Relaxed), stats.in_flight.load(Relaxed)),
        (1, 1)
    );
    assert!(
        h.conn
            .handle_response(RequestId(1), &reply(200, b"x"), &h.clock, &h.site)
    );
    h.flush();
    h.feed(&get("/b", ""));
    h.conn.handle_refused(Refusal::QueueFull, &h.clock, &h.site);
    h.flush();
    h.feed(&get("/c", ""));
    take(&mut h, 3);
    h.advance_secs(61);
    h.flush();
    assert_eq!(stats.requests.load(Relaxed), 3);
    assert_eq!(stats.answered.load(Relaxed), 1);
    assert_eq!(stats.refused.load(Relaxed), 1);
    assert_eq!(stats.timed_out.load(Relaxed), 1);
    assert_eq!(stats.in_flight.load(Relaxed), 0);
}

/// An application that goes leaves the queues it alone held with no application, and those it
/// shared attached; a queue gone already is nothing to undo.
#[test]
fn detaching_reports_the_queues_left_empty() {
    let other = Holder { pid: 2, uid: 0 };
    let mut s = site();
    s.reserve("http://+:8080/b/", None).unwrap();
    let alone = s
        .attach_queue("alone", &["http://+:8080/"], HOLDER, Owner::Uid(0))
        .unwrap();
    let shared = s
        .attach_queue("shared", &["http://+:8080/b/"], HOLDER, Owner::Uid(0))
        .unwrap();
    s.attach_queue("shared", &["http://+:8080/b/"], other, Owner::Uid(0))
        .unwrap();
    assert_eq!(
        s.detach_queues(&[alone, shared, 999], HOLDER).unwrap(),
        [alone]
    );
    assert_eq!(s.queues().get(shared).map(|q| q.attached()), Some(1));
}

/// The head and first piece of a streamed answer.
fn streamed(status: u16, first: &[u8], length: Option<u64>) -> AppResponse {
    reply(status, first).streamed(length)
}

/// A connection whose request 1 is answered with a streamed head and first piece.
fn streaming(first: &[u8], length: Option<u64>) -> Harness {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/s", ""));
    take(&mut h, 1);
    assert!(h.conn.handle_response(
        RequestId(1),
        &streamed(200, first, length),
        &h.clock,
        &h.site
    ));
    h
}

fn piece(h: &mut Harness, id: u64, bytes: &[u8], last: bool) -> bool {
    let body = Arc::new(bytes.to_vec());
    h.conn
        .handle_piece(RequestId(id), &body, last, &h.clock, &h.site)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_streamed_answer_is_chunked_to_http11_and_pipelined_requests_follow() {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/s", ""));
    h.feed(&get("/index.html", ""));
    take(&mut h, 1);
    assert!(!h.conn.wants_piece(), "no streamed answer yet");
    assert!(
        h.conn
            .handle_response(RequestId(1), &streamed(200, b"ab", None), &h.clock, &h.site)
    );
    let out = text(&h.flush());
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(head.contains("X-App: yes"));
    assert_eq!(body, "2\r\nab\r\n");
    assert_eq!(h.conn.phase(), Phase::Waiting);
    assert!(h.conn.mid_response() && h.conn.wants_piece());
    assert_eq!(h.conn.waiting_for(), Some(RequestId(1)));
    // A second head for the same request is refused; so are pieces for another.
    assert!(
        !h.conn
            .handle_response(RequestId(1), &reply(200, b"x"), &h.clock, &h.site)
    );
    assert!(!piece(&mut h, 2, b"x", false));
    assert!(piece(&mut h, 1, b"0123456789abcdefg", false));
    assert!(piece(&mut h, 1, b"", false), "an empty piece sends nothing");
    assert_eq!(text(&h.flush()), "11\r\n0123456789abcdefg\r\n");
    assert!(piece(&mut h, 1, b"z", true));
    assert!(!piece(&mut h, 1, b"more", false), "over");
    let rs = h.flush();
    let (tail, next) = rs.split_at(b"1\r\nz\r\n0\r\n\r\n".len());
    assert_eq!(text(tail), "1\r\nz\r\n0\r\n\r\n");
    let r = one(next);
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    assert_eq!(h.conn.waiting_for(), None);
    assert_eq!(h.closed(), None, "kept alive");
}

#[test]
fn a_streamed_answer_of_known_length_must_keep_it() {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/s", ""));
    take(&mut h, 1);
    assert!(h.conn.handle_response(
        RequestId(1),
        &streamed(200, b"ab", Some(5)),
        &h.clock,
        &h.site
    ));
    assert!(piece(&mut h, 1, b"cd", false));
    assert!(piece(&mut h, 1, b"e", true));
    let r = one(&h.flush());
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, b"abcde");
    assert_eq!(h.closed(), None);

    // More than announced: the response is broken, visibly (a reset), not cut clean.
    let mut h = streaming(b"ab", Some(3));
    assert!(!piece(&mut h, 1, b"cd", false));
    assert_eq!(h.closed(), Some(Close::Abortive));
    assert!(h.flush().is_empty(), "nothing more is sent after a reset");

    // Fewer: likewise, at the last piece.
    let mut h = streaming(b"ab", Some(3));
    assert!(!piece(&mut h, 1, b"", true));
    assert_eq!(h.closed(), Some(Close::Abortive));
}

#[test]
fn a_streamed_answer_to_http10_ends_with_the_connection_and_head_drops_pieces() {
    let mut h = Harness::new(queued_site(true));
    h.feed(b"GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    take(&mut h, 1);
    h.conn
        .handle_response(RequestId(1), &streamed(200, b"ab", None), &h.clock, &h.site);
    assert!(piece(&mut h, 1, b"cd", true));
    let out = text(&h.flush());
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Connection: close"), "{head}");
    assert!(!head.contains("chunked") && !head.contains("Content-Length"));
    assert_eq!(body, "abcd");
    assert_eq!(h.closed(), Some(Close::Graceful), "the close ends the body");

    let mut h = Harness::new(queued_site(true));
    h.feed(b"HEAD /s HTTP/1.1\r\nHost: x\r\n\r\n");
    take(&mut h, 1);
    h.conn.handle_response(
        RequestId(1),
        &streamed(200, b"ab", Some(4)),
        &h.clock,
        &h.site,
    );
    assert!(
        piece(&mut h, 1, b"cdefgh", true),
        "HEAD: pieces are dropped"
    );
    let out = h.flush();
    assert!(out.ends_with(b"\r\n\r\n"));
    assert_eq!(
        parse_responses(&out, &[true])[0].header("content-length"),
        Some("4")
    );
    assert_eq!(h.closed(), None);
}

#[test]
fn a_streamed_answer_that_stalls_or_loses_its_application_or_client_is_reset() {
    // Each piece has app-response-timeout to come.
    let mut h = streaming(b"ab", None);
    h.flush();
    h.advance_secs(50);
    assert!(piece(&mut h, 1, b"c", false));
    h.flush();
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::App, None));
    h.advance_secs(59);
    assert!(h.conn.mid_response(), "60 s from the last piece");
    h.advance_secs(61);
    assert_eq!(h.closed(), Some(Close::Abortive));
    assert_eq!(h.conn.take_cancelled(), Some(RequestId(1)));

    // The application goes half-way.
    let mut h = streaming(b"ab", None);
    assert!(
        h.conn
            .handle_abandoned(RequestId(1), false, &h.clock, &h.site)
    );
    assert_eq!(h.closed(), Some(Close::Abortive));

    // The client goes half-way: the request is cancelled.
    let mut h = streaming(b"ab", None);
    h.conn.handle_eof(&h.clock, &h.site);
    assert_eq!(h.conn.take_cancelled(), Some(RequestId(1)));
    assert_eq!(h.closed(), Some(Close::Abortive));
    assert!(!piece(&mut h, 1, b"c", true));
}

#[test]
fn a_slow_client_holds_the_next_piece_back() {
    let mut h = Harness::new(queued_site(true));
    h.feed(&get("/s", ""));
    take(&mut h, 1);
    h.conn
        .handle_response(RequestId(1), &streamed(200, b"", None), &h.clock, &h.site);
    let big = vec![b'x'; 200 * 1024];
    assert!(piece(&mut h, 1, &big, false));
    assert!(h.conn.wants_piece(), "within the window");
    assert!(piece(&mut h, 1, &big, false));
    assert!(!h.conn.wants_piece(), "over the window: the host waits");
    let sent = h.flush();
    assert!(sent.len() > 400 * 1024);
    assert!(h.conn.wants_piece(), "drained");
}
