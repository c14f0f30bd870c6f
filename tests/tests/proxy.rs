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
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h == "\r\n" || h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
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

fn proxy(s: &Server, prefix: &str, upstream: &str) -> Child {
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
    let prefix = format!("http://+:{port}/");
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
    let prefix = format!("http://+:{port}/");
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
