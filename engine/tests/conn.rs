//! End-to-end behaviour of the connection state machine against a site, through the public API.

mod common;

use common::{BODY, Harness, LOCAL, UNIX_NOW, get, one, parse_responses, site};
use khttp_engine::EntrySpec;
use khttp_engine::{Clock, Close, Connection, Instant};
use khttp_engine::{Phase, Timer};

#[test]
fn get_hit_has_the_expected_head_and_body() {
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/index.html", "")));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, BODY);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(
        r.header("content-length"),
        Some(BODY.len().to_string().as_str())
    );
    assert_eq!(r.header("date"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
    assert_eq!(
        r.header("last-modified"),
        Some("Sun, 06 Nov 1994 07:49:37 GMT")
    );
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").unwrap().starts_with('"'));
    assert_eq!(
        r.header("connection"),
        None,
        "HTTP/1.1 keep-alive is implicit"
    );
    assert!(h.closed().is_none());
    assert!(h.conn.wants_read());
}

#[test]
fn head_sends_the_get_head_without_body() {
    let mut h = Harness::new(site());
    let get_resp = one(&h.exchange(&get("/index.html", "")));
    let out = h.exchange(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = &parse_responses(&out, &[true])[0];
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers, get_resp.headers);
    assert!(out.ends_with(b"\r\n\r\n"), "no body bytes after the head");
}

#[test]
fn routing_errors() {
    // Reserved, no entry: 404, connection kept.
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/missing.html", "")));
    assert_eq!(r.status, 404);
    assert!(h.closed().is_none());
    // Canonical path finds the entry.
    assert_eq!(one(&h.exchange(&get("/a/../%69ndex.html", ""))).status, 200);
    // Climbing above the root: 400 and close.
    let r = one(&h.exchange(&get("/../index.html", "")));
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(h.closed(), Some(Close::Graceful));

    // No reservation for this port: 400 (http.sys) and close.
    let mut s = site();
    s.unreserve("http://+:8080/").unwrap();
    s.reserve("http://+:9090/", None).unwrap();
    let mut h = Harness::new(s);
    let r = one(&h.exchange(&get("/index.html", "")));
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("no reservation"));
    assert_eq!(h.closed(), Some(Close::Graceful));
}

#[test]
fn other_methods_get_405_with_allow() {
    let mut h = Harness::new(site());
    let r = one(&h.exchange(b"DELETE /index.html HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // A POST body is read and discarded; the next request is answered.
    let out = h.exchange(b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    let rs = parse_responses(&out, &[]);
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [405, 200]);
    // Lower-case methods are other methods (RFC 9110 §9.1: case-sensitive).
    assert_eq!(
        one(&h.exchange(b"get /index.html HTTP/1.1\r\nHost: x\r\n\r\n")).status,
        405
    );
    assert_eq!(
        one(&h.exchange(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")).status,
        200
    );
}

#[test]
fn conditional_requests() {
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/index.html", "")));
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();

    let not_modified = one(&h.exchange(&get("/index.html", &format!("If-None-Match: {etag}\r\n"))));
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert!(not_modified.header("content-length").is_none());
    // Weak comparison, lists and `*`.
    assert_eq!(
        one(&h.exchange(&get(
            "/index.html",
            &format!("If-None-Match: \"x\", W/{etag}\r\n")
        )))
        .status,
        304
    );
    assert_eq!(
        one(&h.exchange(&get("/index.html", "If-None-Match: *\r\n"))).status,
        304
    );
    assert_eq!(
        one(&h.exchange(&get("/index.html", "If-None-Match: \"other\"\r\n"))).status,
        200
    );
    // If-Modified-Since.
    assert_eq!(
        one(&h.exchange(&get("/index.html", &format!("If-Modified-Since: {lm}\r\n")))).status,
        304
    );
    assert_eq!(
        one(&h.exchange(&get(
            "/index.html",
            "If-Modified-Since: Sun, 06 Nov 1994 07:49:36 GMT\r\n"
        )))
        .status,
        200
    );
    assert_eq!(
        one(&h.exchange(&get("/index.html", "If-Modified-Since: garbage\r\n"))).status,
        200
    );
    // RFC 9110 §13.2.2: If-None-Match takes precedence over If-Modified-Since.
    let both = format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}\r\n");
    assert_eq!(one(&h.exchange(&get("/index.html", &both))).status, 200);
    // If-Match / If-Unmodified-Since.
    assert_eq!(
        one(&h.exchange(&get("/index.html", "If-Match: \"other\"\r\n"))).status,
        412
    );
    assert_eq!(
        one(&h.exchange(&get("/index.html", &format!("If-Match: {etag}\r\n")))).status,
        200
    );
    assert_eq!(
        one(&h.exchange(&get(
            "/index.html",
            "If-Unmodified-Since: Sat, 05 Nov 1994 00:00:00 GMT\r\n"
        )))
        .status,
        412
    );
    assert!(h.closed().is_none());
}

#[test]
fn ranges() {
    let mut h = Harness::new(site());
    let full = one(&h.exchange(&get("/data.bin", ""))).body;
    assert_eq!(full.len(), 1000);

    let r = one(&h.exchange(&get("/data.bin", "Range: bytes=10-19\r\n")));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(r.body, &full[10..20]);

    let r = one(&h.exchange(&get("/data.bin", "Range: bytes=-5\r\n")));
    assert_eq!((r.status, r.body.as_slice()), (206, &full[995..]));

    let r = one(&h.exchange(&get("/data.bin", "Range: bytes=1000-\r\n")));
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));

    // Several ranges: multipart/byteranges with an exact Content-Length.
    let r = one(&h.exchange(&get("/data.bin", "Range: bytes=0-1, 10-12\r\n")));
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains(&format!(
        "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/1000\r\n\r\n"
    )));
    assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));

    // If-Range: a matching ETag applies the range, anything else sends 200.
    let etag = one(&h.exchange(&get("/data.bin", "")))
        .header("etag")
        .unwrap()
        .to_string();
    assert_eq!(
        one(&h.exchange(&get(
            "/data.bin",
            &format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n")
        )))
        .status,
        206
    );
    assert_eq!(
        one(&h.exchange(&get(
            "/data.bin",
            "Range: bytes=0-0\r\nIf-Range: \"stale\"\r\n"
        )))
        .status,
        200
    );
    assert_eq!(
        one(&h.exchange(&get(
            "/data.bin",
            "Range: bytes=0-0\r\nIf-Range: Sun, 06 Nov 1994 07:49:37 GMT\r\n"
        )))
        .status,
        206
    );
    // HEAD ignores Range (RFC 9110 §14.2: only GET).
    let out = h.exchange(b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n");
    assert_eq!(parse_responses(&out, &[true])[0].status, 200);
}

/// MS15-034 (docs/http-semantics.md, "The http.sys CVE inputs"): the probe and the crash input
/// give 206 or 416, never a wrap.
#[test]
fn ms15_034_inputs() {
    let mut h = Harness::new(site());
    for (range, status, len) in [
        ("bytes=0-18446744073709551615", 206, Some(BODY.len())),
        ("bytes=18-18446744073709551615", 206, Some(BODY.len() - 18)),
        ("bytes=18446744073709551615-", 416, None),
        ("bytes=-18446744073709551615", 206, Some(BODY.len())),
        ("bytes=0-99999999999999999999999999", 206, Some(BODY.len())),
    ] {
        let r = one(&h.exchange(&get("/index.html", &format!("Range: {range}\r\n"))));
        assert_eq!(r.status, status, "{range}");
        if let Some(len) = len {
            assert_eq!(r.body.len(), len, "{range}");
        }
    }
}

#[test]
fn content_negotiation() {
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/data.bin", "Accept-Encoding: gzip, br\r\n")));
    assert_eq!(
        (r.header("content-encoding"), r.body.as_slice()),
        (Some("br"), &b"BR"[..])
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = one(&h.exchange(&get("/data.bin", "Accept-Encoding: br;q=0.1, gzip\r\n")));
    assert_eq!(r.body, b"GZIPPED");
    let r = one(&h.exchange(&get("/data.bin", "")));
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, 1000));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // CVE-2021-31166's input is just a list of unknown codings.
    let r = one(&h.exchange(&get(
        "/data.bin",
        "Accept-Encoding: doar-e, ftw, imo, ,\r\n",
    )));
    assert_eq!((r.status, r.body.len()), (200, 1000));
    // An entry without variants says nothing about Vary.
    let r = one(&h.exchange(&get("/index.html", "Accept-Encoding: gzip\r\n")));
    assert_eq!(
        (r.header("vary"), r.header("content-encoding")),
        (None, None)
    );
}

#[test]
fn pipelining_and_keep_alive() {
    let mut h = Harness::new(site());
    let mut reqs = get("/index.html", "");
    reqs.extend(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    reqs.extend(get("/missing", ""));
    reqs.extend(get("/data.bin", "Range: bytes=0-0\r\n"));
    let rs = parse_responses(&h.exchange(&reqs), &[false, true, false, false]);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 404, 206]
    );
    assert_eq!(h.conn.requests(), 4);

    // HTTP/1.0: close by default, keep-alive on request.
    let mut h = Harness::new(site());
    let r = one(&h.exchange(b"GET /index.html HTTP/1.0\r\n\r\n"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(h.closed(), Some(Close::Graceful));
    let mut h = Harness::new(site());
    let r = one(&h.exchange(b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(h.closed().is_none());
    // HTTP/1.1 Connection: close.
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/index.html", "Connection: close\r\n")));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(h.closed(), Some(Close::Graceful));
}

#[test]
fn request_bodies_are_discarded_without_desync() {
    let mut h = Harness::new(site());
    let mut stream = b"GET /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n".to_vec();
    stream.extend(get("/data.bin", "Range: bytes=0-0\r\n"));
    let rs = parse_responses(&h.exchange(&stream), &[]);
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 206]);

    // A malformed chunked body replaces the held response with 400, and closes.
    let mut h = Harness::new(site());
    let out = h.exchange(b"GET /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = one(&out);
    assert_eq!(r.status, 400);
    assert_eq!(h.closed(), Some(Close::Graceful));

    // A body bigger than the discard limit: 413 and close, without reading it.
    let mut h = Harness::new(site());
    let r = one(&h.exchange(&get("/index.html", "Content-Length: 10000000\r\n")));
    assert_eq!(r.status, 413);
    assert_eq!(h.closed(), Some(Close::Graceful));
}

#[test]
fn expect_100_continue() {
    let mut h = Harness::new(site());
    let out = h.exchange(&get(
        "/index.html",
        "Content-Length: 3\r\nExpect: 100-continue\r\n",
    ));
    assert!(out.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    let out = [out, h.exchange(b"abc")].concat();
    let rs = parse_responses(&out, &[]);
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 200]);
    let r = one(&h.exchange(&get("/index.html", "Expect: teapot\r\n")));
    assert_eq!(r.status, 417);
}

#[test]
fn parse_errors_answer_and_close() {
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: zip, chunked\r\n\r\n",
            501,
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ] {
        let mut h = Harness::new(site());
        let r = one(&h.exchange(req));
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(h.closed(), Some(Close::Graceful));
        // Input after the error is ignored.
        assert!(h.exchange(&get("/index.html", "")).is_empty());
    }
}

#[test]
fn garbage_is_refused_before_the_head_ends() {
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01"[..],
        b"GET /\x01",
        b"G\x00T",
        b"GET / HTTP/1.1\r\nBad Header\r\n",
    ] {
        let mut h = Harness::new(site());
        h.feed(junk);
        let r = one(&h.flush());
        assert_eq!(r.status, 400, "{junk:?}");
        assert_eq!(h.closed(), Some(Close::Graceful));
    }
    // A bad version gets the same answer however the line arrives (found by the fuzzer: cut
    // after "HTTI", this line got 505 where it whole got 400).
    for line in [&b"T T HTTIRT T HTTP/1\r\n\r\n"[..], b"T T HTTIRT T HTTP/1"] {
        let mut whole = Harness::new(site());
        whole.feed(line);
        whole.conn.handle_eof(&whole.clock, &whole.site);
        let expected = whole.flush();
        for cut in 0..line.len() {
            let mut h = Harness::new(site());
            h.feed(&line[..cut]);
            let mut got = h.flush();
            h.feed(&line[cut..]);
            h.conn.handle_eof(&h.clock, &h.site);
            got.extend(h.flush());
            assert!(got == expected, "cut at {cut}");
        }
    }
    // A valid head that is merely incomplete waits.
    let mut h = Harness::new(site());
    h.feed(b"GET /index.html HTTP/1.1\r\nHost: x\r\nAccept: */*");
    assert!(h.flush().is_empty());
    assert!(h.closed().is_none());
}

#[test]
fn size_limits() {
    // A head that never ends: 431 once it passes max-request-bytes.
    let mut h = Harness::new(site());
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n");
    for _ in 0..2000 {
        h.feed(b"X-Filler: aaaaaaaa\r\n");
    }
    assert_eq!(one(&h.flush()).status, 431);
    // A request line that never ends: 414.
    let mut h = Harness::new(site());
    h.feed(b"GET /");
    for _ in 0..200 {
        h.feed(&[b'a'; 100]);
    }
    assert_eq!(one(&h.flush()).status, 414);
    // Limits are read from the site.
    let mut s = site();
    s.set_limit("max-headers", 2).unwrap();
    let mut h = Harness::new(s);
    assert_eq!(
        one(&h.exchange(&get("/index.html", "A: 1\r\nB: 2\r\n"))).status,
        431
    );
}

#[test]
fn deadlines() {
    // Idle keep-alive connection.
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", ""));
    let idle = h.conn.poll_timeout().unwrap();
    assert_eq!(idle, Instant(1_000).add_secs(120));
    h.advance_secs(119);
    assert!(h.closed().is_none());
    h.advance_secs(1);
    assert_eq!(h.closed(), Some(Close::Graceful));

    // Header timeout counts from the first byte of the head, whatever trickles in after.
    let mut h = Harness::new(site());
    h.feed(b"GET / HTTP/1.1\r\n");
    for _ in 0..119 {
        h.advance_secs(1);
        h.feed(b"X: y\r\n");
    }
    assert!(h.closed().is_none());
    h.advance_secs(1);
    assert_eq!(h.closed(), Some(Close::Graceful));

    // A client that never reads its response is reset once below min-send-rate.
    let mut s = site();
    common::put(
        &mut s,
        "http://+:8080/big",
        vec![b'x'; 150_000],
        "text/plain",
    );
    let mut h = Harness::new(s);
    h.feed(&get("/big", ""));
    // 10 s of grace, then a window of 10 s that must see 1500 bytes (issue #21: whatever the
    // size; it was 10 s plus the size at 150 B/s).
    h.advance_secs(19);
    assert!(h.closed().is_none());
    h.advance_secs(1);
    assert_eq!(h.closed(), Some(Close::Abortive));
}

/// Issue #21, finding 9: a reader who stops is reset within a window of the last progress,
/// however large the response; one who keeps the minimum rate is never cut.
#[test]
fn the_send_rate_is_judged_over_a_window() {
    let mut s = site();
    common::put(
        &mut s,
        "http://+:8080/huge",
        vec![b'x'; 64 << 20],
        "text/plain",
    );
    // 1 MiB at once, then nothing: reset 10 s (a window) after the grace period ends.
    let mut h = Harness::new(s.clone());
    h.feed(&get("/huge", ""));
    h.send(1 << 20);
    h.advance_secs(19);
    assert_eq!(h.closed(), None);
    h.advance_secs(1);
    assert_eq!(h.closed(), Some(Close::Abortive), "not five days later");
    // A reader just above 150 B/s for ten minutes keeps going.
    let mut h = Harness::new(s);
    h.feed(&get("/huge", ""));
    for _ in 0..600 {
        h.advance_secs(1);
        h.send(160);
        assert_eq!(h.closed(), None);
    }
    assert!(h.conn.has_output());
}

#[test]
fn backpressure_pauses_pipelined_processing() {
    let mut h = Harness::new(site());
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend(get("/index.html", ""));
    }
    h.feed(&stream);
    assert!(!h.conn.wants_read(), "output is backlogged");
    let out = h.flush();
    let rs = parse_responses(&out, &[]);
    assert_eq!(rs.len(), 1000);
    assert!(rs.iter().all(|r| r.status == 200 && r.body == BODY));
    assert!(h.conn.wants_read());
}

#[test]
fn eof_answers_complete_requests_then_closes() {
    let mut h = Harness::new(site());
    h.feed(&get("/index.html", ""));
    h.feed(b"GET /partial");
    h.conn.handle_eof(&h.clock, &h.site);
    let r = one(&h.flush());
    assert_eq!(r.status, 200);
    assert_eq!(h.closed(), Some(Close::Graceful));
}

#[test]
fn a_replaced_entry_never_mixes_bytes() {
    let mut h = Harness::new(site());
    h.feed(&get("/index.html", ""));
    // The response is queued; the administrator replaces the entry before it is sent.
    let spec = EntrySpec {
        body: b"NEW BODY".to_vec(),
        ..Default::default()
    };
    h.site
        .put("http://+:8080/index.html", spec, Instant(0))
        .unwrap();
    let r = one(&h.flush());
    assert_eq!(r.body, BODY);
    assert_eq!(one(&h.exchange(&get("/index.html", ""))).body, b"NEW BODY");
}

#[test]
fn ttl_expiry() {
    let mut s = site();
    let spec = EntrySpec {
        body: b"short-lived".to_vec(),
        ttl_secs: Some(5),
        ..Default::default()
    };
    s.put("http://+:8080/ttl", spec, Instant(1_000)).unwrap();
    let mut h = Harness::new(s);
    assert_eq!(one(&h.exchange(&get("/ttl", ""))).status, 200);
    h.advance_secs(5);
    assert_eq!(one(&h.exchange(&get("/ttl", ""))).status, 404);
    assert_eq!(h.site.purge_expired(h.clock.now()), 1);
}

#[test]
fn date_is_refreshed_per_second() {
    let mut h = Harness::new(site());
    let a = one(&h.exchange(&get("/index.html", "")))
        .header("date")
        .unwrap()
        .to_string();
    h.clock.update(Instant(1_500), UNIX_NOW);
    let b = one(&h.exchange(&get("/index.html", "")))
        .header("date")
        .unwrap()
        .to_string();
    h.clock.update(Instant(2_000), UNIX_NOW + 1);
    let c = one(&h.exchange(&get("/index.html", "")))
        .header("date")
        .unwrap()
        .to_string();
    assert_eq!(a, b);
    assert_eq!(c, "Sun, 06 Nov 1994 08:49:38 GMT");
}

#[test]
fn statistics() {
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", ""));
    h.exchange(&get("/nope", ""));
    let etag = one(&h.exchange(&get("/index.html", "")))
        .header("etag")
        .unwrap()
        .to_string();
    h.exchange(&get("/index.html", &format!("If-None-Match: {etag}\r\n")));
    let [requests, hits, misses, not_modified, errors, _] = h.site.stats().snapshot();
    assert_eq!(
        (requests, hits, misses, not_modified, errors),
        (4, 3, 1, 1, 0)
    );
}

#[test]
fn next_io_drives_a_connection() {
    use khttp_engine::{InlineGate, NextIo, next_io};
    let mut h = Harness::new(site());
    let gate = InlineGate::new();
    assert_eq!(next_io(&h.conn, &gate), NextIo::Receive);
    h.feed(&get("/index.html", "Connection: close\r\n"));
    assert_eq!(next_io(&h.conn, &gate), NextIo::Send);
    h.flush();
    assert_eq!(next_io(&h.conn, &gate), NextIo::Close(Close::Graceful));
    let h2 = Harness::new(site());
    gate.request_close();
    assert_eq!(next_io(&h2.conn, &gate), NextIo::Close(Close::Abortive));
}

/// Issue #8: a `Connection: close` download that outlasts idle-timeout and header-timeout, read
/// at a rate far above min-send-rate, is neither cut nor reset; it closes gracefully once sent.
#[test]
fn a_slow_download_outlasts_the_idle_and_header_timers() {
    let mut s = site();
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    common::put(
        &mut s,
        "http://+:8080/big",
        body.clone(),
        "application/octet-stream",
    );
    let mut h = Harness::new(s);
    h.feed(&get("/big", "Connection: close\r\n"));
    let mut got = Vec::new();
    // 40 KB/s: about 210 s, beyond both 120 s timers.
    while h.conn.has_output() {
        let mut slices = [&[][..]; 8];
        let n = h.conn.transmit_slices(&mut slices);
        let chunk: Vec<u8> = slices[..n].concat();
        let take = chunk.len().min(40_000);
        got.extend_from_slice(&chunk[..take]);
        h.conn.handle_sent(take, &h.clock, &h.site);
        h.advance_secs(1);
        if h.conn.has_output() {
            assert_eq!(h.closed(), None, "closed after {} bytes", got.len());
        }
    }
    assert_eq!(h.closed(), Some(Close::Graceful));
    let r = one(&got);
    assert!(r.body == body, "the whole body");
}

/// A slow but steady reader behind a large socket buffer: the transport takes nothing for
/// longer than a window (its buffer is full), but what it holds drains, which the host reports
/// at each timer; that is progress. A reader that stops is reset a window after the first look.
#[test]
fn a_draining_socket_buffer_is_progress() {
    let mut s = site();
    common::put(
        &mut s,
        "http://+:8080/big",
        vec![b'x'; 8 << 20],
        "text/plain",
    );
    let mut h = Harness::new(s.clone());
    h.feed(&get("/big", ""));
    // The kernel takes 2.5 MB at once, then nothing more for a while; the host looks only when
    // a deadline falls due.
    h.send(2_500_000);
    let mut queued = 2_500_000u64;
    let start = h.clock.now();
    for second in 1..=120 {
        let now = start.add_secs(second);
        h.clock.update(now, UNIX_NOW + second);
        // 20 KB/s drains from the kernel; the host looks when a timer falls due.
        queued -= 20_000;
        if h.conn.poll_timeout().is_some_and(|d| now >= d) {
            h.conn.handle_timeout(&h.clock, queued);
        }
        assert_eq!(h.closed(), None, "reset after {second} s of steady reading");
    }
    // Then the reader stops: reset within two windows of the last look.
    let stop = h.clock.now();
    let mut second = 0;
    while h.closed().is_none() {
        second += 1;
        let now = stop.add_secs(second);
        h.clock.update(now, UNIX_NOW + 120 + second);
        if h.conn.poll_timeout().is_some_and(|d| now >= d) {
            h.conn.handle_timeout(&h.clock, queued);
        }
        assert!(
            second <= 30,
            "still open {second} s after the reader stopped"
        );
    }
    assert_eq!(h.closed(), Some(Close::Abortive));

    // A host that reports what its buffer holds when it fills (khttpd: when a write would
    // block) gives the engine its baseline at once: a reader that never reads is reset after
    // the grace period and one window, not a window later.
    let mut h = Harness::new(s);
    h.feed(&get("/big", ""));
    h.conn.handle_sent(100_000, &h.clock, &h.site);
    h.conn.handle_transport(&h.clock, 100_000);
    let start = h.clock.now();
    for second in 1..=19 {
        h.clock.update(start.add_secs(second), UNIX_NOW + second);
        if h.conn.poll_timeout().is_some_and(|d| h.clock.now() >= d) {
            h.conn.handle_timeout(&h.clock, 100_000);
        }
        assert_eq!(h.closed(), None);
    }
    h.clock.update(start.add_secs(20), UNIX_NOW + 20);
    h.conn.handle_timeout(&h.clock, 100_000);
    assert_eq!(h.closed(), Some(Close::Abortive));
}

/// Bytes the transport still holds (SIOCOUTQ) keep a keep-alive connection from counting as
/// idle, for as long as the minimum send rate allows them; then it is reset.
#[test]
fn undelivered_bytes_defer_the_idle_timer_within_the_send_rate() {
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", ""));
    let idle = h.conn.poll_timeout().unwrap();
    h.clock.update(idle, UNIX_NOW + 120);
    // Still 4 MB in the kernel: not idle. Their progress is looked at again after the grace
    // period and a window (issue #21: not after 4 MB at the minimum rate).
    h.conn.handle_timeout(&h.clock, 4_000_000);
    assert_eq!(h.closed(), None);
    let next = h.conn.poll_timeout().unwrap();
    assert_eq!(next, idle.add_secs(20));
    h.clock.update(next, UNIX_NOW + 140);
    h.conn.handle_timeout(&h.clock, 3_000_000);
    assert_eq!(h.closed(), None, "a megabyte went: a window of credit");
    assert_eq!(h.conn.poll_timeout(), Some(idle.add_secs(40)));
    // Delivered: idle from the last look, and closed gracefully one idle-timeout later.
    h.clock.update(idle.add_secs(40), UNIX_NOW + 160);
    h.conn.handle_timeout(&h.clock, 0);
    assert_eq!(h.closed(), None);
    let next = h.conn.poll_timeout().unwrap();
    assert_eq!(next, idle.add_secs(140));
    h.clock.update(next, UNIX_NOW + 260);
    h.conn.handle_timeout(&h.clock, 0);
    assert_eq!(h.closed(), Some(Close::Graceful));

    // A client that never reads them: reset after the grace period and a window.
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", ""));
    let idle = h.conn.poll_timeout().unwrap();
    h.clock.update(idle, UNIX_NOW + 120);
    h.conn.handle_timeout(&h.clock, 3_000_000);
    assert_eq!(h.conn.poll_timeout(), Some(idle.add_secs(20)));
    h.clock.update(idle.add_secs(20), UNIX_NOW + 140);
    h.conn.handle_timeout(&h.clock, 3_000_000);
    assert_eq!(h.closed(), Some(Close::Abortive));
}

/// Issue #21, finding 9: while the close lingers, a host that reports what the transport
/// still holds (khttpd: SIOCOUTQ) has it judged over a window too: 4 MB in flight no longer
/// buy hours.
#[test]
fn a_lingering_close_is_judged_by_reported_progress() {
    let mut h = lingering(4_000_000);
    let start = h.clock.now();
    // Without reports: the old allowance (4 MB at 150 B/s).
    assert!(h.conn.poll_timeout().unwrap() > start.add_secs(20_000));
    h.conn.handle_undelivered(&h.clock, 4_000_000);
    assert_eq!(h.conn.poll_timeout(), Some(start.add_secs(20)));
    for i in 1..=30 {
        h.clock.update(start.add_secs(i), UNIX_NOW + i);
        h.conn.handle_undelivered(&h.clock, 4_000_000 - i * 10_000);
    }
    assert_eq!(h.closed(), None, "moving: kept");
    assert_eq!(h.conn.poll_timeout(), Some(start.add_secs(50)));
    h.clock.update(start.add_secs(50), UNIX_NOW + 50);
    h.conn.handle_undelivered(&h.clock, 3_700_000);
    assert_eq!(
        h.conn.handle_timeout(&h.clock, 3_700_000).map(|d| d.close),
        Some(Some(Close::Abortive))
    );
    assert_eq!(h.closed(), Some(Close::Abortive));
    // Delivered: finished at linger-timeout, as before.
    let mut h = lingering(4_000_000);
    h.conn.handle_undelivered(&h.clock, 0);
    assert_eq!(
        h.conn.poll_deadline().map(|d| d.close),
        Some(Some(Close::Finished))
    );
}

/// A connection that closes after its response, shut down by the host: the lingering close.
fn lingering(in_flight: u64) -> Harness {
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", "Connection: close\r\n"));
    assert_eq!(h.closed(), Some(Close::Graceful));
    assert_eq!(h.conn.phase(), Phase::Sending);
    h.conn.handle_shutdown(&h.clock, in_flight);
    assert_eq!(h.conn.phase(), Phase::Lingering);
    assert_eq!(h.closed(), None, "lingering: the socket stays open");
    assert!(
        h.conn.wants_read(),
        "lingering: input is read (and discarded)"
    );
    h
}

/// Lingering close: at least linger-timeout; then closed once delivered, or reset once the
/// undelivered bytes are past the minimum send rate; the peer's FIN ends it at once.
#[test]
fn lingering_close_policy() {
    let linger = u64::from(khttp_engine::Limits::default().linger_timeout);
    // Everything delivered at the shutdown: closed linger-timeout later.
    let mut h = lingering(0);
    let t0 = h.clock.now();
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!(
        (d.at, d.timer, d.close),
        (t0.add_secs(linger), Timer::Linger, Some(Close::Finished))
    );
    h.feed(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        h.conn.transmit().is_none(),
        "input after the last response is discarded"
    );
    h.clock.update(t0.add_secs(linger), UNIX_NOW + linger);
    assert_eq!(h.conn.handle_timeout(&h.clock, 0), Some(d));
    assert_eq!(h.closed(), Some(Close::Finished));

    // 1.5 MB in flight at 150 B/s: 10,000 s, plus 10 s of grace; then a reset.
    let mut h = lingering(1_500_000);
    let t0 = h.clock.now();
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!(
        (d.at, d.close),
        (t0.add_secs(10_010), Some(Close::Abortive))
    );
    h.clock.update(t0.add_secs(10_009), UNIX_NOW + 10_009);
    assert_eq!(h.conn.handle_timeout(&h.clock, 0), None);
    assert_eq!(h.closed(), None);
    h.clock.update(t0.add_secs(10_010), UNIX_NOW + 10_010);
    assert_eq!(
        h.conn.handle_timeout(&h.clock, 0).and_then(|d| d.close),
        Some(Close::Abortive)
    );
    assert_eq!(h.closed(), Some(Close::Abortive));

    // Delivered later (SIOCOUTQ at 0, or WSK's disconnect completing): linger-timeout from the
    // shutdown, never less.
    let mut h = lingering(1_500_000);
    let t0 = h.clock.now();
    h.clock.update(t0.add_secs(5), UNIX_NOW + 5);
    h.conn.handle_delivered(&h.clock);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!(
        (d.at, d.close),
        (t0.add_secs(linger), Some(Close::Finished))
    );
    h.conn.handle_timeout(&h.clock, 0);
    assert_eq!(
        h.closed(),
        Some(Close::Finished),
        "past the deadline: closed"
    );

    // The peer's FIN ends it.
    let mut h = lingering(1_500_000);
    h.conn.handle_eof(&h.clock, &h.site);
    assert_eq!(h.closed(), Some(Close::Finished));
    assert_eq!(h.conn.phase(), Phase::Closed);
}

/// With the send rate off, undelivered bytes get idle-timeout, and never less than
/// linger-timeout.
#[test]
fn lingering_without_a_send_rate() {
    let mut site = site();
    site.set_limit("min-send-rate", 0).unwrap();
    site.set_limit("idle-timeout", 1).unwrap();
    site.set_limit("linger-timeout", 3).unwrap();
    let mut h = Harness::new(site);
    h.exchange(&get("/index.html", "Connection: close\r\n"));
    h.conn.handle_shutdown(&h.clock, 1_500_000);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!(
        (d.at, d.close),
        (h.clock.now().add_secs(3), Some(Close::Abortive))
    );
    h.site.set_limit("idle-timeout", 60).unwrap();
    let mut h = Harness::new(h.site);
    h.exchange(&get("/index.html", "Connection: close\r\n"));
    h.conn.handle_shutdown(&h.clock, 1_500_000);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!(
        (d.at, d.close),
        (h.clock.now().add_secs(60), Some(Close::Abortive))
    );
}

/// `handle_timeout` names the timer that fell due and how the connection closes.
#[test]
fn timeouts_name_their_timer() {
    // Idle keep-alive: graceful.
    let mut h = Harness::new(site());
    h.exchange(&get("/index.html", ""));
    assert_eq!(h.conn.phase(), Phase::Idle);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::Idle, Some(Close::Graceful)));
    h.clock.update(d.at, UNIX_NOW + 120);
    assert_eq!(h.conn.handle_timeout(&h.clock, 0), Some(d));
    assert_eq!(h.conn.phase(), Phase::Sending);
    assert_eq!(h.closed(), Some(Close::Graceful));

    // Half a head: the header timer.
    let mut h = Harness::new(site());
    h.feed(b"GET / HTTP/1.1\r\n");
    assert_eq!(h.conn.phase(), Phase::Head);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::Header, Some(Close::Graceful)));

    // Half a body: the body timer.
    let mut h = Harness::new(site());
    h.feed(b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(h.conn.phase(), Phase::Body);
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::Body, Some(Close::Graceful)));

    // Output the client does not read: the send rate, abortive.
    let mut h = Harness::new(site());
    h.feed(&get("/index.html", ""));
    let d = h.conn.poll_deadline().unwrap();
    assert_eq!((d.timer, d.close), (Timer::SendRate, Some(Close::Abortive)));
    h.clock.update(d.at, UNIX_NOW + 20);
    assert_eq!(h.conn.handle_timeout(&h.clock, 0), Some(d));
    assert_eq!(h.closed(), Some(Close::Abortive));
    assert!(
        h.conn.transmit().is_none(),
        "nothing more is sent after a reset"
    );
}

/// Beyond max-connections: a 503 that closes, then the lingering close; beyond the overload
/// allowance, refused.
#[test]
fn connections_over_the_limit_get_503() {
    use khttp_engine::limits::OVERLOAD_CONNECTIONS;
    use khttp_engine::{Admission, admit};
    let l = khttp_engine::Limits {
        max_connections: 2,
        ..Default::default()
    };
    assert_eq!(admit(&l, usize::MAX, 1, 0), Admission::Serve);
    assert_eq!(admit(&l, usize::MAX, 2, 0), Admission::Unavailable);
    assert_eq!(
        admit(&l, 1, 1, 0),
        Admission::Unavailable,
        "the host's own bound"
    );
    assert_eq!(
        admit(&l, usize::MAX, 2, OVERLOAD_CONNECTIONS),
        Admission::Refuse
    );

    let site = site();
    let clock = Clock::new(Instant(0), UNIX_NOW);
    let mut conn = Connection::unavailable(LOCAL, &clock, &site);
    assert!(!conn.wants_read(), "no request is read");
    let mut slices: [&[u8]; 8] = [&[]; 8];
    let n = conn.transmit_slices(&mut slices);
    let bytes: Vec<u8> = slices[..n].concat();
    let r = one(&bytes);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("server"), Some("khttp"));
    assert!(r.header("date").is_some());
    conn.handle_sent(bytes.len(), &clock, &site);
    assert_eq!(conn.poll_close(), Some(Close::Graceful));
}

/// The access log's time taken runs to the last byte of the response sent, not to its queueing;
/// a record is handed over only then (or when the connection goes).
#[test]
fn log_time_runs_to_the_last_byte() {
    let mut h = Harness::new(site());
    h.conn.set_logging(true);
    h.feed(&get("/data.bin", ""));
    let mut got = Vec::new();
    h.conn.drain_log(|r| got.push(r.status));
    assert!(got.is_empty(), "not before its bytes are sent");
    // Half now, the rest 3 s later.
    let mut slices: [&[u8]; 8] = [&[]; 8];
    let n = h.conn.transmit_slices(&mut slices);
    let total: usize = slices[..n].iter().map(|s| s.len()).sum();
    h.conn.handle_sent(total / 2, &h.clock, &h.site);
    h.conn.drain_log(|r| got.push(r.status));
    assert!(got.is_empty());
    let later = h.clock.now().add_secs(3);
    h.clock.update(later, UNIX_NOW + 3);
    h.conn.handle_sent(total - total / 2, &h.clock, &h.site);
    let mut records = Vec::new();
    h.conn.drain_log(|r| records.push((r.status, r.millis)));
    assert_eq!(records, [(200, 3000)]);
    // A response cut short is handed over when the connection goes.
    h.feed(&get("/data.bin", ""));
    h.conn.finish_log(&h.clock);
    let mut records = Vec::new();
    h.conn.drain_log(|r| records.push(r.status));
    assert_eq!(records, [200]);
}
