//! Certificates bound as http.sys binds them (issue #24, `engine::tls::bind`): a binding's
//! certificate and key checked when it is made, and the choice for a handshake (the SNI name's
//! `hostnameport` binding, then the listener's `ipport`, then the port's wildcard) seen by a
//! rustls client in memory; a handshake that matches nothing refused with an alert.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use common::tls::{Ends, exchange, provider, send};
use common::{BODY, LOCAL, UNIX_NOW, get, one, site};
use khttp_engine::tls::bind::{BindingKey, Bindings, CertError, load, server_config};
use khttp_engine::tls::{NoCushion, Tls};
use khttp_engine::{Clock, Connection, Instant, Local};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A certificate for `names` with a fresh key of `alg`: its PEM chain and key, and its DER.
fn cert(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let made = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (made.pem(), key.serialize_pem(), made.der().to_vec())
}

const NAMES: &[&str] = &["a.test", "b.test", "localhost"];

#[test]
fn a_binding_is_checked_when_it_is_made() {
    let p = provider();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let (chain, key, _) = cert(NAMES, alg);
        assert!(load(chain.as_bytes(), key.as_bytes(), &p).is_ok());
    }
    let (chain, _, _) = cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, other_key, _) = cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, key, _) = cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256);
    let cases: [(&[u8], &[u8], CertError); 4] = [
        (
            chain.as_bytes(),
            other_key.as_bytes(),
            CertError::KeyMismatch,
        ),
        (
            b"not a certificate",
            key.as_bytes(),
            CertError::NoCertificate,
        ),
        (
            chain.as_bytes(),
            b"-----BEGIN NOTHING-----\n",
            CertError::NoKey,
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            key.as_bytes(),
            CertError::BadCertificate,
        ),
    ];
    for (chain, key, want) in cases {
        assert_eq!(
            load(chain, key, &p).unwrap_err(),
            want,
            "{}",
            want.message()
        );
    }
}

#[test]
fn binding_keys_read_as_netsh_writes_them() {
    let ok = [
        ("ipport=0.0.0.0:443", "ipport=0.0.0.0:443"),
        ("ipport=[::1]:8443", "ipport=[::1]:8443"),
        ("ipport=[::ffff:10.0.0.1]:443", "ipport=10.0.0.1:443"),
        (
            "hostnameport=WWW.Example.com:443",
            "hostnameport=www.example.com:443",
        ),
    ];
    for (text, shown) in ok {
        let key = BindingKey::parse(text).unwrap();
        assert_eq!(key.to_string(), shown);
        assert_eq!(BindingKey::parse(shown).unwrap(), key);
    }
    for bad in [
        "ipport=0.0.0.0",
        "ipport=nowhere:443",
        "ipport=0.0.0.0:0",
        "hostnameport=a b:443",
        "hostnameport=:443",
        "certhash=ab",
    ] {
        assert!(BindingKey::parse(bad).is_err(), "{bad}");
    }
}

/// Which certificate a client asking for `sni` is given on `local`, or `None` when the
/// handshake is refused.
fn served(bindings: &Arc<Bindings>, roots: &[Vec<u8>], sni: &str, local: Local) -> Option<Vec<u8>> {
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    let config = server_config(Arc::clone(bindings), local, provider(), time, None).unwrap();
    let mut store = RootCertStore::empty();
    for der in roots {
        store.add(CertificateDer::from(der.clone())).unwrap();
    }
    let mut client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut client =
        ClientConnection::new(Arc::new(client_config), sni.to_owned().try_into().unwrap()).unwrap();
    let site = site();
    let clock = Clock::new(Instant(1_000), UNIX_NOW);
    let mut tls = Tls::new(config, &NoCushion).unwrap();
    let mut conn = Connection::new(local, &clock, &site);
    send(&mut client, &get("/index.html", ""));
    let mut got = Vec::new();
    let ends = Ends {
        client: &mut client,
        tls: &mut tls,
        conn: &mut conn,
    };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exchange(ends, &clock, &site, &mut got);
    }))
    .is_err()
    {
        // The client was refused: the server failed the handshake and sent its alert.
        assert!(tls.failed().is_some() && tls.error().is_some());
        return None;
    }
    assert_eq!(one(&got).body, BODY);
    client.peer_certificates().map(|c| c[0].to_vec())
}

#[test]
fn sni_then_address_then_wildcard() {
    let p = provider();
    let (a, b, c, v6) = (
        cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256),
        cert(NAMES, &rcgen::PKCS_ECDSA_P384_SHA384),
        cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256),
        cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256),
    );
    let mut bindings = Bindings::new();
    for (key, (chain, k, _)) in [
        ("hostnameport=a.test:8080", &a),
        ("ipport=127.0.0.1:8080", &b),
        ("ipport=0.0.0.0:8080", &c),
        ("ipport=[::]:8080", &v6),
    ] {
        let certified = load(chain.as_bytes(), k.as_bytes(), &p).unwrap();
        assert!(!bindings.bind(BindingKey::parse(key).unwrap(), certified));
    }
    let bindings = Arc::new(bindings);
    let roots = [a.2.clone(), b.2.clone(), c.2.clone(), v6.2.clone()];
    let at = |ip: IpAddr| Local { ip, port: 8080 };
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let six = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(
        served(&bindings, &roots, "a.test", LOCAL),
        Some(a.2.clone()),
        "SNI first"
    );
    assert_eq!(
        served(&bindings, &roots, "A.TEST", at(other)),
        Some(a.2),
        "any case"
    );
    assert_eq!(
        served(&bindings, &roots, "b.test", LOCAL),
        Some(b.2.clone()),
        "then the address"
    );
    assert_eq!(
        served(&bindings, &roots, "b.test", at(other)),
        Some(c.2),
        "then the wildcard"
    );
    assert_eq!(
        served(&bindings, &roots, "b.test", at(six)),
        Some(v6.2),
        "IPv6's own"
    );
    // Another port: nothing is bound to it, and the client is refused.
    assert_eq!(
        served(
            &bindings,
            &roots,
            "a.test",
            Local {
                port: 9443,
                ..LOCAL
            }
        ),
        None
    );
    // Replaced and removed.
    let mut changed = (*bindings).clone();
    let (chain, key, der) = cert(NAMES, &rcgen::PKCS_ECDSA_P256_SHA256);
    let key_a = BindingKey::parse("hostnameport=a.test:8080").unwrap();
    assert!(changed.bind(
        key_a.clone(),
        load(chain.as_bytes(), key.as_bytes(), &p).unwrap()
    ));
    let changed = Arc::new(changed);
    let roots2 = [der.clone(), b.2.clone()];
    assert_eq!(served(&changed, &roots2, "a.test", LOCAL), Some(der));
    let mut gone = (*changed).clone();
    assert!(gone.unbind(&key_a) && !gone.unbind(&key_a));
    assert_eq!(served(&Arc::new(gone), &roots2, "a.test", LOCAL), Some(b.2));
    assert!(bindings.covers(8080) && !bindings.covers(9443));
}
