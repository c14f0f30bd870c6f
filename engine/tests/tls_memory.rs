//! What an idle TLS connection holds (issue #24: at most 8 KiB after its handshake): a counting
//! global allocator, and 1,000 connections that each finish a handshake and one keep-alive
//! exchange with a rustls client in memory. What they hold afterwards, the engine's `Tls`
//! (rustls's session state, keys included) and the HTTP `Connection`, is the bytes still
//! allocated, divided by their number, and the structures' own size. The same for plain connections, for comparison.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc wrapper is unsafe by definition; test-only"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::tls::{Ends, client, configs, exchange, send};
use common::{BODY, LOCAL, UNIX_NOW, get, one, site};
use khttp_engine::tls::{NoCushion, Tls};
use khttp_engine::{Clock, Connection, Instant};

struct Counting;

/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees hold; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        // SAFETY: `layout` comes from the caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(size(layout), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through `alloc`/`realloc`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout),
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged; `ptr` and `layout` come from an earlier `System` allocation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1_000;

/// The one test of this binary (a second one would allocate at the same time).
#[test]
fn an_idle_tls_connection_holds_at_most_8_kib() {
    let (server, config) = configs(&[&rustls::version::TLS13]);
    let site = site();
    let clock = Clock::new(Instant(1_000), UNIX_NOW);
    let mut held: Vec<(Tls, Connection)> = Vec::with_capacity(N);
    let mut plain: Vec<Connection> = Vec::with_capacity(N);

    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..N {
        let mut c = client(&config);
        let mut tls = Tls::new(std::sync::Arc::clone(&server), &NoCushion).unwrap();
        let mut conn = Connection::new(LOCAL, &clock, &site);
        let mut got = Vec::new();
        send(&mut c, &get("/index.html", ""));
        let ends = Ends {
            client: &mut c,
            tls: &mut tls,
            conn: &mut conn,
        };
        exchange(ends, &clock, &site, &mut got);
        assert_eq!(one(&got).body, BODY);
        drop((c, got));
        held.push((tls, conn));
    }
    // The heap each holds, and the structures themselves (in `held`, reserved beforehand).
    let inline = isize::try_from(size_of::<(Tls, Connection)>()).unwrap();
    let tls_each = (LIVE.load(Ordering::Relaxed) - before) / isize::try_from(N).unwrap() + inline;

    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..N {
        let mut conn = Connection::new(LOCAL, &clock, &site);
        conn.handle_input(&get("/index.html", ""), &clock, &site);
        let mut slices = [&[][..]; 16];
        let n = conn.transmit_slices(&mut slices);
        let len = slices[..n].iter().map(|s| s.len()).sum();
        conn.handle_sent(len, &clock, &site);
        plain.push(conn);
    }
    let inline = isize::try_from(size_of::<Connection>()).unwrap();
    let plain_each = (LIVE.load(Ordering::Relaxed) - before) / isize::try_from(N).unwrap() + inline;

    println!("idle after one exchange: TLS {tls_each} bytes per connection, plain {plain_each}");
    assert!(
        tls_each <= 8 * 1024,
        "{tls_each} bytes per idle TLS connection"
    );
    assert!(held.iter().all(|(t, _)| t.held() == 0));
}
