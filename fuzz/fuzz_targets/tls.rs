//! TLS below HTTP/1.1 (issue #24): the engine's `Tls` over a `Connection`, driven by an
//! arbitrary schedule. Two kinds of input, by the first byte's parity:
//! - even: arbitrary bytes as ciphertext, cut anywhere (a hostile or broken client);
//! - odd: a real rustls client that completes its handshake, then sends arbitrary plaintext
//!   (requests, garbage, anything) in arbitrary pieces, its ciphertext delivered cut anywhere,
//!   and the server's output taken in arbitrary pieces.
//!
//! Invariants, beyond "no panic":
//! - the session never holds more than one record of ciphertext it has not processed;
//! - the client never sees a TLS error: whatever the server sends is well-formed TLS;
//! - once the session fails, nothing more than its alert goes out, and then the socket closes;
//! - what the client reads is HTTP responses only after the handshake (never plaintext early).

#![no_main]

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use khttp_engine::tls::bind::{BindingKey, Bindings, load, server_config};
use khttp_engine::tls::{INCOMING, NoCushion, Tls};
use khttp_engine::{Clock, Close, Connection, EntrySpec, Instant, Local, Site};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

#[derive(Arbitrary, Debug)]
enum Op {
    /// The client sends its next `n` bytes of plaintext (odd inputs) or the next `n` bytes of
    /// the input as ciphertext (even inputs).
    Send(u16),
    /// Up to `n` bytes of the client's pending ciphertext reach the server.
    Deliver(u16),
    /// The transport takes `n` bytes of the server's ciphertext (0: all).
    Sent(u16),
    /// The socket reaches its end.
    Eof,
}

#[derive(Arbitrary, Debug)]
struct Input {
    real_client: bool,
    ops: Vec<Op>,
    data: Vec<u8>,
}

/// The listener's address.
const LOCAL: Local = Local {
    ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    port: 8080,
};

struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    site: Site,
}

#[allow(deprecated, reason = "ring's provider, as khttpd uses it")]
fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert: CertificateDer<'static> = made.cert.der().clone();
        // The engine's own way to a listener's configuration: the certificate checked and
        // bound as the port's wildcard, then chosen per handshake.
        let certified = load(
            made.cert.pem().as_bytes(),
            made.signing_key.serialize_pem().as_bytes(),
            &provider,
        )
        .unwrap();
        let mut bindings = Bindings::new();
        bindings.bind(BindingKey::parse("ipport=0.0.0.0:8080").unwrap(), certified);
        let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
        let server = server_config(Arc::new(bindings), LOCAL, Arc::clone(&provider), time, None)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut site = Site::new();
        let _ = site.reserve("http://+:8080/", None);
        let spec = |body: &[u8]| EntrySpec {
            content_type: "text/html",
            body: body.to_vec(),
            ..Default::default()
        };
        let _ = site.put(
            "http://+:8080/index.html",
            spec(b"<h1>hello</h1>"),
            Instant(0),
        );
        let _ = site.put("http://+:8080/big", spec(&[9u8; 100_000]), Instant(0));
        Configs {
            server,
            client: Arc::new(client),
            site,
        }
    })
}

fuzz_target!(|input: Input| {
    let c = configs();
    let clock = Clock::new(Instant(1_000), 784_111_777);
    let mut conn = Connection::new(LOCAL, &clock, &c.site);
    let Ok(mut tls) = Tls::new(Arc::clone(&c.server), &NoCushion) else {
        return;
    };
    let mut client = input.real_client.then(|| {
        ClientConnection::new(Arc::clone(&c.client), "localhost".try_into().unwrap()).unwrap()
    });
    let mut data = input.data.as_slice();
    let mut wire: Vec<u8> = Vec::new(); // the client's ciphertext not yet delivered
    // What was left to send when the session failed: its alert, which only shrinks after.
    let mut left_at_failure: Option<usize> = None;
    for op in input.ops.iter().take(200) {
        match *op {
            Op::Send(n) => {
                let (now, rest) = data.split_at(usize::from(n).min(data.len()));
                data = rest;
                match &mut client {
                    Some(cl) => {
                        let _ = cl.writer().write_all(now);
                    }
                    None => wire.extend_from_slice(now),
                }
            }
            Op::Deliver(n) => {
                if let Some(cl) = &mut client {
                    while cl.wants_write() {
                        cl.write_tls(&mut wire).unwrap();
                    }
                }
                let n = usize::from(n).min(wire.len());
                let bytes: Vec<u8> = wire.drain(..n).collect();
                tls.handle_input(&bytes, &mut conn, &clock, &c.site);
            }
            Op::Sent(n) => {
                let out = tls.transmit();
                let n = if n == 0 {
                    out.len()
                } else {
                    usize::from(n).min(out.len())
                };
                let taken = out[..n].to_vec();
                tls.handle_sent(n);
                tls.pump(&mut conn, &clock, &c.site);
                if let Some(cl) = &mut client {
                    let mut rd = taken.as_slice();
                    while !rd.is_empty() {
                        if cl.read_tls(&mut rd).is_err() {
                            break;
                        }
                        // The server's bytes are always well-formed TLS: the client may be
                        // refused (an alert), but never finds the records themselves broken.
                        if let Err(e) = cl.process_new_packets() {
                            assert!(
                                matches!(e, rustls::Error::AlertReceived(_)),
                                "the client saw broken TLS: {e:?}"
                            );
                            break;
                        }
                        let mut sink = [0u8; 65_536];
                        while matches!(cl.reader().read(&mut sink), Ok(n) if n > 0) {}
                    }
                }
            }
            Op::Eof => tls.handle_eof(&mut conn, &clock, &c.site),
        }
        assert!(
            tls.held() <= INCOMING + tls.unsent() + 64 * 1024 + 4096,
            "{} bytes held",
            tls.held()
        );
        if tls.failed().is_some() {
            let left = *left_at_failure.get_or_insert(tls.unsent());
            assert!(tls.unsent() <= left, "more than the alert after a failure");
            if tls.unsent() == 0 {
                assert!(matches!(
                    tls.poll_close(&conn),
                    Some(Close::Finished | Close::Abortive)
                ));
            }
        } else if let Some(left) = left_at_failure {
            panic!("a failed session recovered ({left})");
        }
    }
});
