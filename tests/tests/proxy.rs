//! khttp-proxy in front of a real upstream HTTP server (a small one in this test, counting what
//! reaches it): misses forwarded with their method, path, query and body; the upstream's
//! `Cache-Control` deciding what khttp keeps; 502 for an upstream that is down, 504 for one too
//! slow. Under the Wine harness khttp-proxy.exe runs under Wine, attached through the driver's
//! application device, with this test's upstream on the host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use khttp_tests::{Server, bin, free_port, get, raw};

/// One request as an upstream reads it: the request line, the field lines (CRLF cut) and the
/// body (by its `Content-Length`); `None` when the connection ends.
fn read_request(
    reader: &mut BufReader<std::net::TcpStream>,
) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut len = 0usize;
    let mut fields = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        fields.push(h.trim_end().to_owned());
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some((line, fields, body))
}

/// An upstream on a free port: `/cached` (max-age=60), `/private`, `/slow` (3 s), anything
/// else echoes the method, target and body. Returns its port and the count of requests it saw.
fn upstream() -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                while let Some((line, _, body)) = read_request(&mut reader) {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                    if let Some(kind) = target.strip_prefix("/big-") {
                        // Larger than the proxy holds whole: streamed through.
                        if big(&mut out, kind).is_err() || kind == "broken" || kind == "early" {
                            return;
                        }
                        continue;
                    }
                    let (extra, text) = match target.as_str() {
                        // With the validators a file server sends (Python's http.server does).
                        "/cached" => (
                            "Cache-Control: public, max-age=60\r\nLast-Modified: Sun, 29 Nov 2026 06:00:00 GMT\r\nETag: \"v1\"\r\n",
                            format!("cached {n}\n"),
                        ),
                        "/private" => (
                            "Cache-Control: private, max-age=60\r\n",
                            format!("private {n}\n"),
                        ),
                        "/upload" => ("", format!("upload {} {}\n", body.len(), digest(&body))),
                        "/slow" => {
                            std::thread::sleep(Duration::from_secs(3));
                            ("", "slow\n".to_owned())
                        }
                        _ => (
                            "",
                            format!(
                                "{} {} {}\n",
                                line.split(' ').next().unwrap_or(""),
                                target,
                                String::from_utf8_lossy(&body)
                            ),
                        ),
                    };
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: {n}\r\n{extra}Content-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A checksum of a body, as the upstream reports it for `/upload`.
fn digest(body: &[u8]) -> u64 {
    body.iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

/// The bytes of `/big-*`: 5,000,000 of them.
const BIG: usize = 5_000_000;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `/big-length` (with `Content-Length`), `/big-chunked`, `/big-broken` and `/big-early`
/// (announce the length, then close 2 MB or 500 KB into it), each written in pieces with
/// pauses.
fn big(out: &mut std::net::TcpStream, kind: &str) -> std::io::Result<()> {
    let body = big_body();
    let chunked = kind == "chunked";
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {BIG}")
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n{framing}\r\n\r\n"
    )?;
    let end = match kind {
        "broken" => BIG * 2 / 5,
        "early" => BIG / 10,
        _ => BIG,
    };
    for (i, piece) in body[..end].chunks(500_000).enumerate() {
        if chunked {
            write!(out, "{:x}\r\n", piece.len())?;
        }
        out.write_all(piece)?;
        if chunked {
            out.write_all(b"\r\n")?;
        }
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// An upstream that answers for the raw target it received, as a server routing on the raw
/// path would, and lets khttp keep every answer (`max-age=60`): its body names the target and
/// the forwarding fields it saw. It also sends a field its `Connection` names. Returns its port
/// and the targets it saw.
fn echo_upstream() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                while let Some((line, all, _)) = read_request(&mut reader) {
                    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut fields: Vec<String> = all
                        .into_iter()
                        .filter(|h| {
                            let lower = h.to_ascii_lowercase();
                            [
                                "forwarded",
                                "x-forwarded",
                                "x-real-ip",
                                "proxy-auth",
                                "x-secret",
                            ]
                            .iter()
                            .any(|p| lower.starts_with(p))
                        })
                        .collect();
                    log.lock().unwrap().push(target.clone());
                    fields.sort();
                    let text = format!("target {target}\n{}\n", fields.join("\n"));
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: public, max-age=60\r\nConnection: X-Up-Secret\r\nX-Up-Secret: 1\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Issue #21, finding 3: the upstream receives exactly the canonical path that khttp routed and
/// keys its cache on, so an answer it gives for a raw path's other meaning can never be cached
/// under the canonical one (each of these poisoned `/` or `/user/admin` for every visitor), nor
/// can a raw path name something outside the proxy's prefix to the upstream.
#[test]
fn the_upstream_answers_the_path_khttp_keys_on() {
    let s = Server::start("proxy-poison");
    let port = s.reserve_port();
    let prefix = format!("{}://+:{port}/", khttp_tests::tls::scheme());
    let (up, seen) = echo_upstream();
    let mut child = proxy(&s, &prefix, &format!("http://127.0.0.1:{up}"));
    let target = |r: &khttp_tests::Response| {
        String::from_utf8_lossy(&r.body)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for (raw, canonical) in [
        ("/user/x%2F..%2F..%2F", "/"),
        ("/user/x%2f%2e%2e%2f%2e%2e%2f", "/"),
        ("/user/x%5C..%5C..%5C", "/"),
        ("/user/x\\..\\..\\", "/"),
        ("/static/x%2F..%2F..%2Fuser%2Fadmin", "/user/admin"),
        // A payload the raw path carries, which the canonical one does not.
        ("/user/x<script>%2F..%2F..%2F", "/"),
    ] {
        let r = get(port, raw, "");
        assert_eq!(r.status, 200, "{raw}");
        assert_eq!(target(&r), format!("target {canonical}"), "{raw}");
        // What a visitor of the canonical URL gets is the upstream's answer for it.
        let r = get(port, canonical, "");
        assert_eq!(
            target(&r),
            format!("target {canonical}"),
            "{raw} poisoned {canonical}"
        );
    }
    // The query goes as sent, the path canonical; a raw target never reaches the upstream.
    let r = get(port, "/a/./b/../c%7e?q=%2F..", "");
    assert_eq!(target(&r), "target /a/c~?q=%2F..");
    let saw = seen.lock().unwrap().clone();
    assert!(
        saw.iter().all(|t| !t.contains("..") || t.contains('?')),
        "a raw target reached the upstream: {saw:?}"
    );
    child.kill().unwrap();
    let _ = child.wait();

    // A proxy for /user/ only: a raw path under /static/ that canonicalises into /user/ reaches
    // the upstream as /user/..., never as /static/...
    let user = format!("{}://+:{port}/user/", khttp_tests::tls::scheme());
    s.ctl_ok(&["urlacl", "add", &user]);
    s.track_reservation(&user);
    let mut child = proxy(&s, &user, &format!("http://127.0.0.1:{up}"));
    let r = get(port, "/static/..%2Fuser/x", "");
    assert_eq!(target(&r), "target /user/x");
    child.kill().unwrap();
    let _ = child.wait();
}

/// Issue #21, finding 10: hop-by-hop fields stay behind both ways (those RFC 9110 names and
/// those `Connection` lists), `Proxy-Authorization` too; the forwarding fields are the proxy's
/// own (a client's are dropped unless `--trust-forwarded`); an answer to a request with a body
/// is not cached; CONNECT is refused.
#[test]
fn the_proxy_sends_on_only_what_belongs_to_the_upstream() {
    let s = Server::start("proxy-fields");
    let port = s.reserve_port();
    let prefix = format!("{}://+:{port}/", khttp_tests::tls::scheme());
    let (up, seen) = echo_upstream();
    let mut child = proxy(&s, &prefix, &format!("http://127.0.0.1:{up}"));
    let client = "Connection: X-Secret\r\nX-Secret: 1\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\nProxy-Authorization: Basic eDp5\r\n";
    let r = get(port, "/fields", client);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let host = format!("localhost:{port}");
    for want in [
        format!("Forwarded: for=127.0.0.1;proto=http;host=\"{host}\""),
        "X-Forwarded-For: 127.0.0.1".to_owned(),
        format!("X-Forwarded-Host: {host}"),
        "X-Forwarded-Proto: http".to_owned(),
    ] {
        let found = body.lines().any(|l| l.eq_ignore_ascii_case(&want));
        assert!(found, "{want:?} not in {body}");
    }
    for gone in [
        "6.6.6.6",
        "evil.example",
        "x-secret",
        "proxy-authorization",
        "x-real-ip",
    ] {
        assert!(
            !body.to_ascii_lowercase().contains(gone),
            "{gone} reached the upstream: {body}"
        );
    }
    assert_eq!(
        r.header("x-up-secret"),
        None,
        "a field the upstream's Connection names"
    );
    // A GET with a body: answered, and not kept (the body may have shaped the answer).
    let before = seen.lock().unwrap().len();
    let req = khttp_tests::with_body("GET /with-body", "Connection: close\r\n", b"abc");
    let (r, _) = raw(port, &req);
    assert_eq!(r.status, 200);
    assert_eq!(get(port, "/with-body", "").status, 200);
    assert_eq!(
        seen.lock().unwrap().len() - before,
        2,
        "the answer to a body was cached"
    );
    // CONNECT: refused by the proxy, never forwarded.
    let before = seen.lock().unwrap().len();
    let (r, _) = raw(
        port,
        b"CONNECT /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 501);
    assert_eq!(seen.lock().unwrap().len(), before);
    child.kill().unwrap();
    let _ = child.wait();

    // Behind a proxy you trust: the incoming chain is kept and added to.
    let mut child = proxy_with(
        &s,
        &prefix,
        &format!("http://127.0.0.1:{up}"),
        &["--trust-forwarded"],
    );
    let r = get(port, "/trusted", "X-Forwarded-For: 6.6.6.6\r\n");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        body.lines()
            .any(|l| l.eq_ignore_ascii_case("X-Forwarded-For: 6.6.6.6, 127.0.0.1")),
        "{body}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

fn proxy(s: &Server, prefix: &str, upstream: &str) -> Child {
    proxy_with(s, prefix, upstream, &[])
}

fn proxy_with(s: &Server, prefix: &str, upstream: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(bin("khttp-proxy"));
    // Against the driver the harness's wrapper names the device.
    if !khttp_tests::external() {
        cmd.arg("--endpoint")
            .arg(format!("unix:{}", s.app_socket().display()));
    }
    let mut child = cmd
        .args([
            "--prefix",
            prefix,
            "--upstream",
            upstream,
            "--threads",
            "2",
            "--timeout",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start khttp-proxy");
    let mut line = String::new();
    let out = child.stdout.as_mut().unwrap();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert!(line.contains("->"), "khttp-proxy: {line:?}");
    child
}

#[test]
fn the_proxy_forwards_misses_and_caches_what_the_upstream_allows() {
    let s = Server::start("proxy");
    let port = s.reserve_port();
    let prefix = format!("{}://+:{port}/", khttp_tests::tls::scheme());
    let (up, seen) = upstream();
    let mut child = proxy(&s, &prefix, &format!("http://127.0.0.1:{up}"));

    // Forwarded: method, path, query and body.
    let r = get(port, "/hello?x=1", "");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), "GET /hello?x=1 \n");
    let (r, _) = raw(
        port,
        b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(String::from_utf8_lossy(&r.body), "POST /form abc\n");
    // A body larger than a receive brings with the head: on to the upstream as the proxy
    // fetches it, with its length (the upstream reads Content-Length bodies only).
    let upload: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    let req = khttp_tests::with_body("POST /upload", "Connection: close\r\n", &upload);
    let (r, _) = raw(port, &req);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("upload {} {}\n", upload.len(), digest(&upload))
    );

    // max-age: kept by khttp; the upstream sees it once.
    let before = seen.load(Ordering::SeqCst);
    let first = get(port, "/cached", "");
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    for _ in 0..3 {
        assert_eq!(get(port, "/cached", "").body, first.body);
    }
    assert_eq!(
        seen.load(Ordering::SeqCst) - before,
        1,
        "served from khttp's cache"
    );
    // private: never kept.
    let before = seen.load(Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(port, "/private", "").status, 200);
    }
    assert_eq!(seen.load(Ordering::SeqCst) - before, 2);

    // Larger than the proxy holds whole: streamed, with the upstream's length or chunked, in
    // more time than --timeout (which bounds the head); never cached, whatever max-age says.
    let before = seen.load(Ordering::SeqCst);
    for kind in ["length", "chunked", "length"] {
        let r = get(port, &format!("/big-{kind}"), "");
        assert_eq!(r.status, 200);
        assert!(r.body == big_body(), "/big-{kind}: {} bytes", r.body.len());
        let framing = if kind == "chunked" {
            r.header("transfer-encoding")
        } else {
            r.header("content-length")
        };
        assert!(framing.is_some(), "/big-{kind}: {:?}", r.headers);
    }
    assert_eq!(
        seen.load(Ordering::SeqCst) - before,
        3,
        "streamed answers are not cached"
    );
    // An upstream that breaks off: the client sees a broken response, not a short whole one.
    let mut c = khttp_tests::Conn::open(port);
    c.send(b"GET /big-broken HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(c.read(false).is_none(), "a short body passed for whole");
    // Before the proxy had begun to answer: 502.
    let r = get(port, "/big-early", "");
    assert_eq!(r.status, 502);

    // Too slow: 504 (the proxy waits --timeout 1).
    let r = get(port, "/slow", "");
    assert_eq!(r.status, 504);
    child.kill().unwrap();
    let _ = child.wait();

    // An upstream that is down: 502.
    let dead = free_port();
    let mut child = proxy(&s, &prefix, &format!("http://127.0.0.1:{dead}"));
    let r = get(port, "/anything", "");
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("upstream"));
    child.kill().unwrap();
    let _ = child.wait();
}

/// The peak resident memory of process `pid`, in bytes (Linux's `VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// An upload of 64 MiB (with `max-queued-body-bytes` raised to allow it) passes through the
/// proxy whole, and the proxy never holds it: its peak memory stays far below the body's size
/// (it held two copies before it streamed). Not under the Wine harness, whose proxy is a Wine
/// process with Wine's own memory.
#[test]
fn an_upload_streams_through_the_proxy_without_being_held_whole() {
    if khttp_tests::skip_external("measures the proxy's memory in /proc") {
        return;
    }
    const SIZE: usize = 64 << 20;
    let s = Server::start("proxy-upload");
    s.ctl_ok(&["limits", "set", "max-queued-body-bytes", &SIZE.to_string()]);
    let port = s.reserve_port();
    let prefix = format!("{}://+:{port}/", khttp_tests::tls::scheme());
    let (up, _) = upstream();
    let mut child = proxy(&s, &prefix, &format!("http://127.0.0.1:{up}"));
    let upload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let req = khttp_tests::with_body("POST /upload", "Connection: close\r\n", &upload);
    let (r, _) = raw(port, &req);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("upload {SIZE} {}\n", digest(&upload))
    );
    let peak = peak_rss(child.id());
    assert!(peak > 0, "no VmHWM for the proxy");
    eprintln!("the proxy's peak memory for a {SIZE}-byte upload: {peak} bytes");
    assert!(
        peak < (SIZE / 2) as u64,
        "the proxy's peak memory {peak} bytes for a {SIZE}-byte upload"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
