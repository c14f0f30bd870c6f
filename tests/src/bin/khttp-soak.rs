//! khttp-soak: the checking half of `bench/soak.sh`. Against a running khttpd, for a bounded
//! time: clients that verify every body byte, control churn, slow readers of a large entity
//! that churn replaces, and a slowloris crowd that is topped up as the server times it out.
//! Samples khttpd's RSS and open descriptors. Prints one report; exits 1 on any error.
//!
//! `khttp-soak --port PORT --endpoint unix:PATH --pid PID [--seconds N] [--dir DIR]
//!             [--fetchers N] [--crowd N] [--slow N]`

#![allow(
    clippy::too_many_lines,
    reason = "test code: one scenario reads best whole"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use khttp_tests::load::{
    ChurnSet, Crowd, Tally, churn_loop, fetch_loop, rss_kib_and_fds, write_churn_files,
};
use khttp_tests::{bin, host};

struct Args {
    port: u16,
    endpoint: String,
    pid: u32,
    seconds: u64,
    dir: std::path::PathBuf,
    fetchers: usize,
    crowd: usize,
    slow: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        endpoint: String::new(),
        pid: 0,
        seconds: 600,
        dir: std::env::temp_dir().join(format!("khttp-soak-{}", std::process::id())),
        fetchers: 8,
        crowd: 2000,
        slow: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--port" => a.port = u16::try_from(num(&v)?).map_err(|_| "--port: too large")?,
            "--endpoint" => a.endpoint = v,
            "--pid" => a.pid = u32::try_from(num(&v)?).map_err(|_| "--pid: too large")?,
            "--seconds" => a.seconds = num(&v)?,
            "--dir" => a.dir = v.into(),
            "--fetchers" => a.fetchers = num(&v)? as usize,
            "--crowd" => a.crowd = num(&v)? as usize,
            "--slow" => a.slow = num(&v)? as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.port == 0 || a.endpoint.is_empty() || a.pid == 0 {
        return Err("--port, --endpoint and --pid are required".into());
    }
    Ok(a)
}

/// A slow reader: a 16 KiB receive window, 64 KiB read per 50 ms (about 1.3 MB/s), of the entity
/// that churn replaces; the body must be one version, whole.
fn slow_reader(
    port: u16,
    set: &ChurnSet,
    stop: &AtomicBool,
    tally: &Tally,
    slow_bytes: &AtomicU64,
) {
    let addr: SocketAddr = match format!("{}:{port}", host()).parse() {
        Ok(a) => a,
        Err(e) => return tally.error(format!("slow reader: {e}")),
    };
    while !stop.load(Ordering::Relaxed) {
        let sock = match socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        ) {
            Ok(s) => s,
            Err(e) => return tally.error(format!("slow reader socket: {e}")),
        };
        let _ = sock.set_recv_buffer_size(16 * 1024);
        if let Err(e) = sock.connect(&addr.into()) {
            tally.error(format!("slow reader connect: {e}"));
            continue;
        }
        let mut s: TcpStream = sock.into();
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        if s.write_all(b"GET /churn/stable HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            tally.error("slow reader: send failed".into());
            continue;
        }
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let end = loop {
            match s.read(&mut chunk) {
                Ok(0) => break "fin",
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
                Err(e) => {
                    tally.error(format!("slow reader: {e} after {} bytes", got.len()));
                    break "error";
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
            tally.error(format!("slow reader: no head ({end})"));
            continue;
        };
        let body = &got[head_end..];
        tally.responses.fetch_add(1, Ordering::Relaxed);
        if end == "fin" && set.stable.iter().any(|v| v.as_slice() == body) {
            tally
                .bytes_verified
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            slow_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        } else {
            tally.error(format!(
                "slow reader: {} body bytes then {end}, not one whole version",
                body.len()
            ));
        }
    }
}

fn run(a: &Args) -> Result<bool, String> {
    let set = ChurnSet::new(1 << 20);
    let files = a.dir.join("churn");
    write_churn_files(&set, &files).map_err(|e| format!("{}: {e}", files.display()))?;
    let ctl_bin = bin("khttpctl");
    let ctl = |args: &[&str]| {
        Command::new(&ctl_bin)
            .arg("--endpoint")
            .arg(&a.endpoint)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let base = format!("http://+:{}/", a.port);
    for (path, file) in [("churn/stable", "stable0"), ("flush/x", "flushed")] {
        if !ctl(&[
            "cache",
            "put",
            &format!("{base}{path}"),
            &files.join(file).to_string_lossy(),
        ]) {
            return Err(format!("cannot put {base}{path}"));
        }
    }
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let slow_bytes = AtomicU64::new(0);
    let started = Instant::now();
    let sample = || rss_kib_and_fds(a.pid).unwrap_or((0, 0));
    let before = sample();
    let mut warm = (0, 0);
    let mut crowd_closed = 0usize;
    let expect = set.expect();
    let loaded = std::thread::scope(|scope| {
        for _ in 0..a.fetchers {
            scope.spawn(|| fetch_loop(a.port, &expect, &stop, &tally));
        }
        for _ in 0..a.slow {
            scope.spawn(|| slow_reader(a.port, &set, &stop, &tally, &slow_bytes));
        }
        scope.spawn(|| churn_loop(&ctl, a.port, other, &files, &stop, &tally));
        // This thread keeps the slowloris crowd at strength and samples memory.
        let mut crowd = Crowd::open(a.port, a.crowd).unwrap_or_else(|e| {
            tally.error(format!("crowd: {e}"));
            Crowd::default()
        });
        let warm_at = Duration::from_secs((a.seconds / 10).max(5));
        while started.elapsed() < Duration::from_secs(a.seconds) {
            std::thread::sleep(Duration::from_secs(1));
            crowd.trickle();
            if warm == (0, 0) && started.elapsed() >= warm_at {
                warm = sample();
            }
            // Connections the server timed out (header-timeout) are replaced.
            let closed = crowd.closed();
            if closed > 0 {
                crowd_closed += closed;
                let open = |s: &TcpStream| {
                    let mut buf = [0u8; 1];
                    matches!(s.peek(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
                };
                crowd.idle.retain(open);
                crowd.loris.retain(open);
                if let Ok(more) = Crowd::open(a.port, a.crowd.saturating_sub(crowd.len())) {
                    crowd.idle.extend(more.idle);
                    crowd.loris.extend(more.loris);
                }
            }
        }
        let loaded = sample();
        stop.store(true, Ordering::Relaxed);
        println!(
            "khttp-soak: {} s; {}; slow readers verified {} bytes; crowd of {} held, {} timed out by the server and replaced",
            a.seconds,
            tally.summary(),
            slow_bytes.load(Ordering::Relaxed),
            crowd.len(),
            crowd_closed
        );
        println!(
            "khttp-soak: khttpd RSS {} KiB at start, {} KiB after warm-up, {} KiB at the end (under load); fds {} / {} / {}",
            before.0, warm.0, loaded.0, before.1, warm.1, loaded.1
        );
        loaded
    });
    // With the load gone, descriptors return to where they started.
    std::thread::sleep(Duration::from_secs(3));
    let after = sample();
    println!(
        "khttp-soak: after the load: RSS {} KiB, {} fds (at start: {})",
        after.0, after.1, before.1
    );
    for e in tally.errors() {
        println!("khttp-soak: error: {e}");
    }
    let grew = warm.0 > 0 && loaded.0 > warm.0 + warm.0 / 2 + 8 * 1024;
    if grew {
        println!(
            "khttp-soak: RSS grew from {} to {} KiB under the same load",
            warm.0, loaded.0
        );
    }
    let leaked = after.1 > before.1 + 2;
    if leaked {
        println!(
            "khttp-soak: descriptors leaked: {} at start, {} after",
            before.1, after.1
        );
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(tally.errors().is_empty() && !grew && !leaked)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("khttp-soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("khttp-soak: {e}");
            ExitCode::FAILURE
        }
    }
}
