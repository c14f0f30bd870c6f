//! hello-app's logic as a plain HTTP/1.1 server (keep-alive, a thread per connection): the
//! upstream nginx's `proxy_pass` talks to in `bench/apps.sh`, so that khttp's request queue and
//! nginx's proxy are compared with the same application work behind them.
//!
//! `hello-http PORT`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9000);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("hello-http: listening on 127.0.0.1:{port}");
    let served = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut out = stream;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                let mut parts = line.split(' ');
                let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                // The same body as hello-app's.
                let text = format!(
                    "hello from the app: {method} {url} ({} body bytes), answer {n}\n",
                    body.len()
                );
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Answer: {n}\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}
