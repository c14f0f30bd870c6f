//! khttp-attach: an application for the tenancy tests (issue #21), run by them as another user
//! (`setpriv`), that does what `hello-app` never would.
//!
//! ```text
//! khttp-attach SOCKET attach NAME [PREFIX...]  attach (no prefix: an empty list); print
//!                                              "attached ID" and answer each request with
//!                                              "served by uid UID", or print "refused: WHY"
//!                                              and exit 1
//! khttp-attach SOCKET flood N                  open N connections and print "held H refused R"
//!                                              (a refused one is answered at once); hold them
//!                                              until standard input closes
//! khttp-attach SOCKET announce BYTES           without attaching, send an answer's frame
//!                                              header announcing BYTES direct bytes, and print
//!                                              the reply's status ("closed" if none)
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use khttp_app::{Error, Queue, Response};
use khttp_proto::Command;
use khttp_proto::frame::{self, RequestFrame};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(verb)) = (args.first(), args.get(1)) else {
        eprintln!("usage: khttp-attach SOCKET attach|flood|announce ...");
        return ExitCode::from(2);
    };
    let rest = &args[2..];
    match verb.as_str() {
        "attach" => attach(socket, rest),
        "flood" => flood(
            socket,
            rest.first().and_then(|n| n.parse().ok()).unwrap_or(0),
        ),
        "announce" => announce(
            socket,
            rest.first().and_then(|n| n.parse().ok()).unwrap_or(0),
        ),
        _ => {
            eprintln!("khttp-attach: unknown verb {verb}");
            ExitCode::from(2)
        }
    }
}

fn attach(socket: &str, rest: &[String]) -> ExitCode {
    let Some(name) = rest.first() else {
        return ExitCode::from(2);
    };
    let prefixes: Vec<&str> = rest[1..].iter().map(String::as_str).collect();
    let mut q = match Queue::attach_at(socket.as_ref(), name, &prefixes) {
        Ok(q) => q,
        Err(Error::Refused(_, why)) => {
            println!("refused: {why}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("refused: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("attached {name}");
    let _ = std::io::stdout().flush();
    let uid = khttp_local::socket::current_uid().unwrap_or(u32::MAX);
    while let Ok(r) = q.receive() {
        let body = format!("served by uid {uid}: {} {}\n", r.method, r.path);
        let answer = Response::new(200)
            .content_type("text/plain")
            .body(body)
            .cache_for(Duration::from_secs(300));
        let _ = r.respond(&mut q, answer);
    }
    ExitCode::SUCCESS
}

fn flood(socket: &str, n: usize) -> ExitCode {
    let mut open = Vec::new();
    for _ in 0..n {
        match UnixStream::connect(socket) {
            Ok(s) => open.push(s),
            Err(_) => break,
        }
    }
    // A refused connection is answered at once and closed; a held one hears nothing.
    let mut refused = 0;
    for s in &mut open {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let mut b = [0u8; 1];
        if s.read(&mut b).is_ok() {
            refused += 1;
        }
    }
    println!("held {} refused {refused}", open.len() - refused);
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    ExitCode::SUCCESS
}

fn announce(socket: &str, bytes: u32) -> ExitCode {
    let Ok(mut s) = UnixStream::connect(socket) else {
        println!("no connection");
        return ExitCode::FAILURE;
    };
    let header = RequestFrame {
        code: Command::QueueRespond.code(),
        input_len: 0,
        direct_len: bytes,
        output_cap: 4096,
    };
    let _ = s.write_all(&header.encode());
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reply = [0u8; frame::REPLY_LEN];
    match s.read_exact(&mut reply) {
        Ok(()) => {
            let (status, _) = frame::decode_reply(&reply);
            let name = khttp_proto::Status::from_u32(status)
                .map_or_else(|| status.to_string(), |st| format!("{st:?}"));
            println!("{name}");
        }
        Err(_) => println!("closed"),
    }
    ExitCode::SUCCESS
}
