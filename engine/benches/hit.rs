//! The cost of answering a typical browser request from the cache, without system calls:
//! parse + route + lookup + serialize (`Connection::handle_input` through `handle_sent`), with
//! httparse alone as the reference. `cargo bench -p khttp-engine`; results in bench/RESULTS.md.

#![allow(missing_docs, reason = "benchmark binary")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use khttp_engine::EntrySpec;
use khttp_engine::Local;
use khttp_engine::{Clock, Connection, Instant, Site};

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\nSec-Fetch-User: ?1\r\nPriority: u=0, i\r\n\r\n";

fn site() -> Site {
    let mut s = Site::new();
    s.reserve("http://+:8080/", None).expect("reserve");
    for i in 0..1000 {
        let spec = EntrySpec {
            content_type: "text/html",
            body: vec![b'x'; 1024],
            last_modified: Some(1_700_000_000),
            ..EntrySpec::default()
        };
        let name = if i == 0 {
            "index.html".to_string()
        } else {
            format!("page{i}.html")
        };
        s.put(&format!("http://+:8080/{name}"), spec, Instant(0))
            .expect("put");
    }
    s
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("browser-request");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));

    g.bench_function("httparse-only", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            black_box(req.parse(black_box(REQUEST)).expect("parses"));
        });
    });

    let site = site();
    let clock = Clock::new(Instant(0), 1_700_000_000);
    let local = Local {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 8080,
    };
    let mut conn = Connection::new(local, &clock, &site);
    g.bench_function("engine-hit", |b| {
        b.iter(|| {
            conn.handle_input(black_box(REQUEST), &clock, &site);
            let mut slices: [&[u8]; 8] = [&[]; 8];
            let n = conn.transmit_slices(&mut slices);
            let len: usize = slices[..n].iter().map(|s| s.len()).sum();
            black_box(len);
            conn.handle_sent(len, &clock, &site);
        });
    });
    g.finish();
}

criterion_group!(hit, benches);
criterion_main!(hit);
