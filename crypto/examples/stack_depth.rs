//! How deep a server handshake with khttp-crypto goes on the stack, in this build (issue #25:
//! the driver keeps to a stack budget, and WSK completions run on whatever stack they are
//! given). A child process runs the server's side of full handshakes (each group, TLS 1.3 and
//! 1.2, P-256 and P-384 keys; rustls's ring provider is the client, on another thread) on a
//! thread of 256 KiB, after first using N frames of a recursion whose frame size it reads from
//! the frames' addresses. The parent searches for the largest N at which the handshakes still
//! complete, and for the largest at which a call that does nothing completes; the difference,
//! in bytes, is the handshakes' depth. A thread that overflows aborts its process ("has
//! overflowed its stack"), which is why each try is a process of its own. No unsafe code.
//!
//! `cargo run --release -p khttp-crypto --example stack_depth` (release: the driver is built
//! so; a debug build's frames are several times larger). `PROVIDER=ring` measures ring's
//! provider instead, for comparison.
//!
//! The figure is for user mode on Linux x86_64, with the buffered `ServerConnection` rather
//! than the engine's unbuffered one (the cryptography is the same code). The driver's own
//! figure is to come from the Wine harness's stack painting once the driver runs TLS.

use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;

use rustls::crypto::GetRandomFailed;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

struct Os;

impl khttp_crypto::Entropy for Os {
    fn fill(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::getrandom(buf).map_err(|_| GetRandomFailed)
    }
}

/// The stack of the thread the server runs on.
const STACK: usize = 256 * 1024;

/// Recurses `n` frames deep, then runs `f`; each frame's address goes into `at`, when given.
#[inline(never)]
fn burn(n: usize, f: &mut dyn FnMut(), at: &mut Option<&mut Vec<usize>>) {
    let frame = [0u8; 256];
    std::hint::black_box(&frame);
    if let Some(at) = at {
        at.push(std::ptr::from_ref(&frame).addr());
    }
    if n == 0 {
        f();
    } else {
        burn(n - 1, f, at);
    }
    std::hint::black_box(&frame);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(arg) = args.get(1).and_then(|a| a.strip_prefix("--child=")) {
        let (what, n) = arg.split_once(',').expect("WHAT,N");
        child(what == "handshakes", n.parse().expect("a depth"));
        return;
    }
    let me = std::env::current_exe().expect("this program");
    let works = |what: &str, n: usize| {
        Command::new(&me)
            .arg(format!("--child={what},{n}"))
            .output()
            .expect("run a child")
            .status
            .success()
    };
    // One frame of `burn`, measured on a big stack.
    let pair = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(|| {
            let mut at = Vec::new();
            burn(1, &mut || {}, &mut Some(&mut at));
            at[0].abs_diff(at[1])
        })
        .unwrap()
        .join()
        .unwrap();
    let deepest = |what: &str| {
        let (mut good, mut bad) = (0, STACK / pair + 1);
        assert!(works(what, good), "{what} fail on an unused stack");
        assert!(!works(what, bad), "{what} never overflow");
        while bad - good > 1 {
            let mid = (good + bad) / 2;
            if works(what, mid) {
                good = mid
            } else {
                bad = mid
            }
        }
        good
    };
    let idle = deepest("nothing");
    let busy = deepest("handshakes");
    let depth = (idle - busy) * pair;
    println!(
        "server handshakes ({}; TLS 1.3 and 1.2, X25519/P-256/P-384, P-256 and P-384 \
         keys) use {depth} bytes of stack, to {pair} bytes (one frame of the measure)",
        std::env::var("PROVIDER").unwrap_or_else(|_| "khttp-crypto".to_owned())
    );
}

#[allow(deprecated, reason = "ring's provider for the client side")]
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// On a thread of [`STACK`] bytes, `depth` steps into a recursion, runs every server
/// handshake (`handshakes`) or nothing.
fn child(handshakes: bool, depth: usize) {
    if !handshakes {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || burn(depth, &mut || {}, &mut None))
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    for (server, client) in pairs() {
        handshake(server, client, depth);
    }
}

/// A server configuration and a client configuration for each key, version and group.
fn pairs() -> Vec<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let mut jobs = Vec::new();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert: CertificateDer<'static> = cert.der().clone();
        let server = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(
                if std::env::var("PROVIDER").is_ok_and(|p| p == "ring") {
                    ring()
                } else {
                    khttp_crypto::provider::<Os>()
                },
            ))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        );
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            for group in ["X25519", "secp256r1", "secp384r1"] {
                let base = ring();
                let kx = base
                    .kx_groups
                    .iter()
                    .copied()
                    .filter(|g| format!("{:?}", g.name()) == group)
                    .collect();
                let mut roots = RootCertStore::empty();
                roots.add(cert.clone()).unwrap();
                let client =
                    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::CryptoProvider {
                        kx_groups: kx,
                        ..base
                    }))
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                jobs.push((Arc::clone(&server), Arc::new(client)));
            }
        }
    }
    jobs
}

/// One full handshake: the server's side on a thread of [`STACK`] bytes, `depth` frames in.
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, depth: usize) {
    let (to_server, from_client) = mpsc::channel::<Vec<u8>>();
    let (to_client, from_server) = mpsc::channel::<Vec<u8>>();
    let handle = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let mut s = ServerConnection::new(server).unwrap();
            burn(
                depth,
                &mut || {
                    while let Ok(bytes) = from_client.recv() {
                        let mut rd = bytes.as_slice();
                        while !rd.is_empty() {
                            s.read_tls(&mut rd).unwrap();
                            s.process_new_packets().unwrap();
                        }
                        let mut out = Vec::new();
                        while s.wants_write() {
                            s.write_tls(&mut out).unwrap();
                        }
                        if to_client.send(out).is_err() {
                            break;
                        }
                    }
                },
                &mut None,
            );
        })
        .unwrap();
    let mut c = ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    while c.is_handshaking() {
        let mut up = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut up).unwrap();
        }
        to_server.send(up).unwrap();
        let down = from_server.recv().expect("the server's thread ended");
        let mut rd = down.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    drop(to_server);
    handle.join().unwrap();
}
