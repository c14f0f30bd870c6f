//! A cache hit allocates nothing: a counting global allocator around the hit path.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc wrapper is unsafe by definition; test-only"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Harness, get, site};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees hold; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `layout` comes from the caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc`/`realloc`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; `ptr` and `layout` come from an earlier `System` allocation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn hits(h: &mut Harness, reqs: &[Vec<u8>], rounds: usize) -> usize {
    let mut bytes = 0;
    for _ in 0..rounds {
        for req in reqs {
            h.conn.handle_input(req, &h.clock, &h.site);
            loop {
                let mut slices = [&[][..]; 16];
                let n = h.conn.transmit_slices(&mut slices);
                if n == 0 {
                    break;
                }
                let len: usize = slices[..n].iter().map(|s| s.len()).sum();
                bytes += len;
                h.conn.handle_sent(len, &h.clock, &h.site);
            }
        }
    }
    bytes
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let mut h = Harness::new(site());
    let etag = {
        let out = h.exchange(&get("/index.html", ""));
        common::one(&out).header("etag").unwrap().to_string()
    };
    let reqs = vec![
        // A typical browser request.
        b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n".to_vec(),
        get("/index.html", &format!("If-None-Match: {etag}\r\n")),
        get("/data.bin", "Accept-Encoding: gzip\r\n"),
        get("/data.bin", "Range: bytes=0-9, 20-29\r\n"),
        b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    // Warm up: buffers reach their working size.
    hits(&mut h, &reqs, 3);
    COUNTING.with(|c| c.set(true));
    let bytes = hits(&mut h, &reqs, 100);
    COUNTING.with(|c| c.set(false));
    assert!(bytes > 100 * 500, "responses were sent ({bytes} bytes)");
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations on the hit path"
    );

    // Accepting a connection allocates nothing either: the driver creates connections inside
    // WSK's accept callback at DISPATCH_LEVEL, where only its own fallible pool allocations
    // may happen (issue #9, finding 12).
    COUNTING.with(|c| c.set(true));
    let conn = std::hint::black_box(khttp_engine::Connection::new(
        common::LOCAL,
        &h.clock,
        &h.site,
    ));
    COUNTING.with(|c| c.set(false));
    drop(conn);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations in Connection::new"
    );

    // The counter is live, so the zero above means something.
    COUNTING.with(|c| c.set(true));
    let boxed = std::hint::black_box(Box::new(7u64));
    COUNTING.with(|c| c.set(false));
    drop(boxed);
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 1);
}
