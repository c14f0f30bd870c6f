//! khttp-flood: the remote memory attacker of issue #21, for `bench/tenancy.sh`. Opens CLIENTS
//! connections, each announcing a body of BODY bytes and sending all of it but its last byte,
//! then holds them until standard input closes, and closes them.
//!
//! `khttp-flood PORT PATH CLIENTS BODY`
//!
//! Prints `held H refused R failed F` a second after every connection was tried: H are still
//! open with nothing answered, R were answered (503) or closed by the server, F could not
//! connect or send their head.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(path), Some(clients), Some(body)) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: khttp-flood PORT PATH CLIENTS BODY");
        return ExitCode::from(2);
    };
    let head = format!("POST {path} HTTP/1.1\r\nHost: flood\r\nContent-Length: {body}\r\n\r\n");
    let chunk = vec![b'f'; 64 * 1024];
    let mut failed = 0;
    let mut open = Vec::new();
    for _ in 0..clients {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            failed += 1;
            continue;
        };
        let _ = c.set_write_timeout(Some(Duration::from_millis(500)));
        if c.write_all(head.as_bytes()).is_err() {
            failed += 1;
            continue;
        }
        // All but the last byte, as far as the server reads it.
        let mut left = body.saturating_sub(1);
        while left > 0 {
            match c.write(&chunk[..left.min(chunk.len())]) {
                Ok(k) => left -= k,
                Err(_) => break,
            }
        }
        open.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (mut held, mut refused) = (0, 0);
    for c in &mut open {
        let _ = c.set_nonblocking(true);
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => held += 1,
            _ => refused += 1,
        }
    }
    println!("held {held} refused {refused} failed {failed}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(open);
    ExitCode::SUCCESS
}
