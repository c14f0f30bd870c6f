//! The provider against rustls's ring provider, as two independent implementations of the
//! same RFCs: every suite with every key-exchange group, P-256 and P-384 keys, TLS 1.3 and
//! 1.2, application data many records long both ways; records tampered with; bad key shares;
//! keys refused; and a generator that fails.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, GetRandomFailed};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// The operating system's generator, as the driver's is the kernel's.
struct Os;

impl khttp_crypto::Entropy for Os {
    fn fill(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::getrandom(buf).map_err(|_| GetRandomFailed)
    }
}

/// A generator that always fails.
struct Broken;

impl khttp_crypto::Entropy for Broken {
    fn fill(_: &mut [u8]) -> Result<(), GetRandomFailed> {
        Err(GetRandomFailed)
    }
}

#[allow(
    deprecated,
    reason = "ring's provider (rustls 0.23.48 deprecates the name only)"
)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A certificate for `localhost` and its PKCS#8 key, under `alg`.
fn cert(alg: &'static rcgen::SignatureAlgorithm) -> (CertificateDer<'static>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), key.serialize_der())
}

fn server(
    provider: CryptoProvider,
    cert: &CertificateDer<'static>,
    key: &[u8],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    Ok(Arc::new(config))
}

/// A ring client that offers only `suite` and `group`.
fn client(
    cert: &CertificateDer<'static>,
    suite: rustls::SupportedCipherSuite,
    group: rustls::NamedGroup,
) -> ClientConnection {
    let base = ring();
    let kx = base
        .kx_groups
        .iter()
        .copied()
        .filter(|g| g.name() == group)
        .collect();
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: kx,
        ..base
    };
    let version = match suite {
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
    };
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
}

/// Moves records both ways until neither side has more; fails on either side's error.
fn pump(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..1000 {
        let mut up = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut up).unwrap();
        }
        let mut rd = up.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()?;
        }
        let mut down = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut down).unwrap();
        }
        let mut rd = down.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()?;
        }
        if up.is_empty() && down.is_empty() {
            return Ok(());
        }
    }
    panic!("no end to the exchange");
}

fn read_all(r: &mut dyn Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65_536];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

const SUITES: [rustls::CipherSuite; 6] = [
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

const GROUPS: [rustls::NamedGroup; 3] = [
    rustls::NamedGroup::X25519,
    rustls::NamedGroup::secp256r1,
    rustls::NamedGroup::secp384r1,
];

#[test]
fn every_suite_and_group_against_ring() {
    let provider = khttp_crypto::provider::<Os>();
    let offered: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(offered, SUITES, "the suites offered, in order");
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let (cert, key) = cert(alg);
        let config = server(khttp_crypto::provider::<Os>(), &cert, &key).unwrap();
        for suite in ring().cipher_suites {
            if !SUITES.contains(&suite.suite()) {
                continue;
            }
            for group in GROUPS {
                let mut c = client(&cert, suite, group);
                let mut s = ServerConnection::new(Arc::clone(&config)).unwrap();
                pump(&mut c, &mut s).unwrap();
                assert_eq!(
                    s.negotiated_cipher_suite().map(|x| x.suite()),
                    Some(suite.suite())
                );
                assert_eq!(
                    s.negotiated_key_exchange_group().map(|g| g.name()),
                    Some(group)
                );
                // Many records both ways, and a record of every small size.
                let up: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
                let mut got = Vec::new();
                for piece in up.chunks(30_000) {
                    c.writer().write_all(piece).unwrap();
                    pump(&mut c, &mut s).unwrap();
                    got.extend(read_all(&mut s.reader()));
                }
                for n in 0..40 {
                    c.writer().write_all(&vec![b'x'; n]).unwrap();
                }
                pump(&mut c, &mut s).unwrap();
                got.extend(read_all(&mut s.reader()));
                assert_eq!(
                    got.len(),
                    up.len() + (0..40).sum::<usize>(),
                    "{suite:?} {group:?}"
                );
                assert_eq!(&got[..up.len()], &up[..]);
                let down: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
                let mut got = Vec::new();
                for piece in down.chunks(10_000) {
                    s.writer().write_all(piece).unwrap();
                    pump(&mut c, &mut s).unwrap();
                    got.extend(read_all(&mut c.reader()));
                }
                s.send_close_notify();
                pump(&mut c, &mut s).unwrap();
                got.extend(read_all(&mut c.reader()));
                assert_eq!(got, down, "{suite:?} {group:?} {alg:?}");
            }
        }
    }
}

#[test]
fn a_tampered_record_is_refused() {
    let (cert, key) = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let config = server(khttp_crypto::provider::<Os>(), &cert, &key).unwrap();
    for suite in ring().cipher_suites {
        if !SUITES.contains(&suite.suite()) {
            continue;
        }
        let mut c = client(&cert, suite, rustls::NamedGroup::X25519);
        let mut s = ServerConnection::new(Arc::clone(&config)).unwrap();
        pump(&mut c, &mut s).unwrap();
        c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut up = Vec::new();
        c.write_tls(&mut up).unwrap();
        let last = up.len() - 1;
        up[last] ^= 1;
        s.read_tls(&mut up.as_slice()).unwrap();
        assert_eq!(
            s.process_new_packets().unwrap_err(),
            rustls::Error::DecryptError,
            "{suite:?}"
        );
    }
}

#[test]
fn bad_key_shares_are_refused() {
    let provider = khttp_crypto::provider::<Os>();
    for group in &provider.kx_groups {
        let share = group.start().unwrap();
        let len = share.pub_key().len();
        assert_eq!(
            len,
            match group.name() {
                rustls::NamedGroup::X25519 => 32,
                rustls::NamedGroup::secp256r1 => 65,
                _ => 97,
            }
        );
        // All zeros: a low-order X25519 point, or no point at all.
        assert!(
            group.start().unwrap().complete(&vec![0; len]).is_err(),
            "{group:?}"
        );
        assert!(
            group.start().unwrap().complete(&[4, 1, 2]).is_err(),
            "{group:?}"
        );
        assert!(group.start().unwrap().complete(&[]).is_err(), "{group:?}");
        // Two of ours agree with each other.
        let (a, b) = (group.start().unwrap(), group.start().unwrap());
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        assert_eq!(
            a.complete(&pb).unwrap().secret_bytes(),
            b.complete(&pa).unwrap().secret_bytes()
        );
    }
    // A compressed NIST point is not a TLS key share.
    let p256 = &provider.kx_groups[1];
    let peer = p256.start().unwrap().pub_key().to_vec();
    let mut compressed = vec![2 + (peer[64] & 1)];
    compressed.extend_from_slice(&peer[1..33]);
    assert!(p256.start().unwrap().complete(&compressed).is_err());
}

#[test]
fn keys_are_checked() {
    let (mine, key) = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (other, _) = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(server(khttp_crypto::provider::<Os>(), &mine, &key).is_ok());
    // A key of another certificate: rustls compares the public keys (`public_key`).
    let e = server(khttp_crypto::provider::<Os>(), &other, &key).unwrap_err();
    assert!(format!("{e}").contains("KeyMismatch"), "{e}");
    // RSA and Ed25519 keys are refused in one line.
    for alg in [&rcgen::PKCS_RSA_SHA256, &rcgen::PKCS_ED25519] {
        let Ok(k) = rcgen::KeyPair::generate_for(alg) else {
            continue; // ring cannot make RSA keys; the Ed25519 case still runs
        };
        let e = rustls::crypto::KeyProvider::load_private_key(
            khttp_crypto::provider::<Os>().key_provider,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der())),
        )
        .unwrap_err();
        assert!(
            format!("{e}").contains("ECDSA P-256 and P-384 keys only"),
            "{e}"
        );
    }
}

#[test]
fn a_failing_generator_fails_the_handshake_without_a_panic() {
    let (cert, key) = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let config = server(khttp_crypto::provider::<Broken>(), &cert, &key).unwrap();
    let mut c = client(
        &cert,
        khttp_crypto::TLS13_AES_128_GCM_SHA256,
        rustls::NamedGroup::X25519,
    );
    let mut s = ServerConnection::new(config).unwrap();
    assert!(pump(&mut c, &mut s).is_err());
}
