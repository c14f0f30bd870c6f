//! The smallest application behind khttp: attaches to a queue for a reserved prefix and answers
//! every request the cache cannot with a greeting, counting them.
//!
//! ```sh
//! khttpctl urlacl add http://+:8080/app/
//! cargo run -p hello-app -- http://+:8080/app/
//! curl http://localhost:8080/app/anything
//! ```
//!
//! `--cache SECONDS` lets khttp keep each answer that long and serve repeats itself.

use std::time::Duration;

use khttp_app::{Queue, Response};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut prefix = String::from("http://+:8080/app/");
    let mut cache = None;
    while let Some(a) = args.next() {
        if a == "--cache" {
            cache = args
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs);
        } else {
            prefix = a;
        }
    }
    let mut queue = match Queue::attach("hello", &[&prefix]) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("hello-app: {e}");
            std::process::exit(1);
        }
    };
    println!("hello-app: attached to {prefix}");
    let mut served = 0u64;
    loop {
        let request = match queue.receive() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hello-app: {e}");
                std::process::exit(1);
            }
        };
        served += 1;
        let body = format!(
            "hello from the app: {} {} ({} body bytes), answer {served}\n",
            request.method,
            request.url,
            request.body.len()
        );
        let mut response = Response::new(200)
            .content_type("text/plain; charset=utf-8")
            .header("X-Answer", &served.to_string())
            .body(body);
        if let Some(ttl) = cache {
            response = response.cache_for(ttl);
        }
        if let Err(e) = request.respond(&mut queue, response) {
            eprintln!("hello-app: {e}");
        }
    }
}
