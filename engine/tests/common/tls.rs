//! TLS test support (issue #24): a rustls client in memory against the engine's `Tls` over a
//! `Connection`, with a fresh self-signed certificate for `localhost`.

use std::io::{Read, Write};
use std::sync::Arc;

use khttp_engine::tls::Tls;
use khttp_engine::{Clock, Connection, Site};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

#[allow(
    deprecated,
    reason = "ring's provider, as khttpd uses it (rustls 0.23.48 deprecates the name only)"
)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server and a client configuration for `localhost`, with a fresh self-signed certificate;
/// the client speaks only `versions`.
pub fn configs(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// A client for `localhost` under `config`.
pub fn client(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(Arc::clone(config), "localhost".try_into().unwrap()).unwrap()
}

/// One connection's two ends: the client, and the server's session and HTTP connection.
pub struct Ends<'a> {
    pub client: &'a mut ClientConnection,
    pub tls: &'a mut Tls,
    pub conn: &'a mut Connection,
}

/// Carries bytes both ways until neither side has any to send; the client's plaintext is
/// appended to `got`.
pub fn exchange(e: Ends<'_>, clock: &Clock, site: &Site, got: &mut Vec<u8>) {
    for _ in 0..10_000 {
        let mut up = Vec::new();
        while e.client.wants_write() {
            e.client.write_tls(&mut up).unwrap();
        }
        if !up.is_empty() {
            e.tls.handle_input(&up, e.conn, clock, site);
        }
        let down = e.tls.transmit().to_vec();
        e.tls.handle_sent(down.len());
        e.tls.pump(e.conn, clock, site);
        let mut rd = down.as_slice();
        while !rd.is_empty() {
            e.client.read_tls(&mut rd).unwrap();
            e.client.process_new_packets().unwrap();
            read_plaintext(e.client, got);
        }
        if up.is_empty() && down.is_empty() {
            return;
        }
    }
    panic!("no end to the exchange");
}

/// Takes what the client has decrypted.
fn read_plaintext(client: &mut ClientConnection, got: &mut Vec<u8>) {
    let mut plain = [0u8; 65_536];
    loop {
        match client.reader().read(&mut plain) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&plain[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Writes `bytes` as the client's plaintext (sent at the next exchange).
pub fn send(client: &mut ClientConnection, bytes: &[u8]) {
    client.writer().write_all(bytes).unwrap();
}
