//! The smallest application behind khttp: attaches to a queue for a reserved prefix and answers
//! every request the cache cannot with a greeting, counting them.
//!
//! ```sh
//! khttpctl urlacl add http://+:8080/app/
//! cargo run -p hello-app -- http://+:8080/app/
//! curl http://localhost:8080/app/anything
//! ```
//!
//! `--cache SECONDS` lets khttp keep each answer that long and serve repeats itself;
//! `--delay MS` waits that long before each answer, and `--invalid` answers with a field khttp
//! sets itself (both for tests: a slow application, a refused answer);
//! a request with `?echo` is answered with its own body;
//! a request with `?stream=N` is answered with N bytes of `abc…z` streamed in pieces (with
//! `&length=1` under `Content-Length`, else chunked; with `&die=M` the process exits after M
//! of them, for tests: an application that dies half-way);
//! by default each receive takes up to 16 requests when more are waiting than the other
//! threads could take (`--batch N` changes it; `--batch 1` takes one), and answers go without
//! waiting for khttp's word on them (`Request::send`): what went wrong with one (refused, or
//! its client gone) is news, printed when it comes; `--wait` waits for each answer's outcome
//! instead (`--no-wait`, the default, is accepted too);
//! `--threads N` attaches N handles, each answering on its own thread; `--queue NAME` names the
//! request queue (default `hello`: two hello-apps on different prefixes need different names,
//! or they share one queue).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use khttp_app::{Queue, Response};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut prefix = String::from("http://+:8080/app/");
    let mut cache = None;
    let mut threads = 1usize;
    let mut name = String::from("hello");
    let mut odd = Odd::default();
    while let Some(a) = args.next() {
        if a == "--cache" {
            cache = args
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs);
        } else if a == "--queue" {
            name = args.next().unwrap_or(name);
        } else if a == "--delay" {
            odd.delay = args
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_millis);
        } else if a == "--invalid" {
            odd.invalid = true;
        } else if a == "--batch" {
            odd.batch = args.next().and_then(|s| s.parse().ok());
        } else if a == "--no-wait" {
            odd.wait = false;
        } else if a == "--wait" {
            odd.wait = true;
        } else if a == "--threads" {
            threads = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
        } else {
            prefix = a;
        }
    }
    let queue = match Queue::attach(&name, &[&prefix]) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("hello-app: {e}");
            std::process::exit(1);
        }
    };
    let served = Arc::new(AtomicU64::new(0));
    for _ in 1..threads {
        let Ok(q) = queue.try_clone() else { break };
        let served = Arc::clone(&served);
        std::thread::spawn(move || serve(q, &served, cache, odd));
    }
    println!("hello-app: attached to {prefix}");
    serve(queue, &served, cache, odd);
}

/// How a test wants it to misbehave, and how it receives and answers.
#[derive(Clone, Copy, Debug, Default)]
struct Odd {
    delay: Option<Duration>,
    invalid: bool,
    /// Requests per receive, at most (`None`: the library's default).
    batch: Option<u32>,
    /// Wait for each answer's outcome.
    wait: bool,
}

/// Answers requests on one handle until khttpd goes away.
fn serve(mut queue: Queue, served: &AtomicU64, cache: Option<Duration>, odd: Odd) {
    if let Some(n) = odd.batch {
        queue.set_batch(n);
    }
    loop {
        let request = match queue.receive() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hello-app: {e}");
                std::process::exit(1);
            }
        };
        for news in queue.take_news() {
            eprintln!("hello-app: {news}");
        }
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        if request.url.ends_with("?echo") {
            let body = request.body.clone();
            if let Err(e) = request.respond(&mut queue, Response::new(200).body(body)) {
                eprintln!("hello-app: {e}");
            }
            continue;
        }
        if let Some(s) = Stream::of(&request.url) {
            if let Err(e) = s.answer(request, &mut queue) {
                eprintln!("hello-app: {e}");
            }
            continue;
        }
        let body = format!(
            "hello from the app: {} {} ({} body bytes), answer {n}\n",
            request.method,
            request.url,
            request.body.len()
        );
        let mut response = Response::new(200)
            .content_type("text/plain; charset=utf-8")
            .header("X-Answer", &n.to_string())
            .body(body);
        if let Some(ttl) = cache {
            response = response.cache_for(ttl);
        }
        if odd.invalid {
            response = response.header("Content-Length", "1");
        }
        if let Some(d) = odd.delay {
            std::thread::sleep(d);
        }
        let sent = if odd.wait {
            request.respond(&mut queue, response).map(drop)
        } else {
            request.send(&mut queue, response)
        };
        if let Err(e) = sent {
            eprintln!("hello-app: {e}");
        }
    }
}

/// A streamed answer a test asked for (`?stream=N&length=1&die=M`).
struct Stream {
    bytes: u64,
    announce: bool,
    die_after: Option<u64>,
}

impl Stream {
    fn of(url: &str) -> Option<Self> {
        let query = url.split_once('?')?.1;
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        Some(Self {
            bytes: param("stream")?,
            announce: param("length") == Some(1),
            die_after: param("die"),
        })
    }

    fn answer(
        &self,
        request: khttp_app::Request,
        queue: &mut Queue,
    ) -> Result<(), khttp_app::Error> {
        let head = Response::new(200).content_type("text/plain");
        let length = self.announce.then_some(self.bytes);
        let mut body = request.respond_stream(queue, head, length)?;
        let mut line = [0u8; 1000];
        let mut sent = 0u64;
        while sent < self.bytes {
            let n = (self.bytes - sent).min(line.len() as u64) as usize;
            for (i, b) in line.iter_mut().take(n).enumerate() {
                *b = b'a' + ((sent as usize + i) % 26) as u8;
            }
            body.write_all(&line[..n])?;
            sent += n as u64;
            if self.die_after.is_some_and(|m| sent >= m) {
                body.flush()?;
                std::process::exit(3);
            }
        }
        body.finish()?;
        Ok(())
    }
}
