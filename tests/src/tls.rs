//! The suite's TLS mode (`KHTTP_TEST_TLS=1`, khttpd only): [`crate::Server::reserve_port`]
//! reserves `https://+:PORT/` and binds a certificate to it, and [`crate::Conn`] speaks TLS
//! (rustls) to it, so that the tests written for plain HTTP run over TLS unchanged. The
//! certificate comes from a CA made for the test process (rcgen), for `localhost`,
//! `127.0.0.1` and `::1`; the client trusts that CA only.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Whether the suite runs in its TLS mode.
#[must_use]
pub fn enabled() -> bool {
    !crate::external() && std::env::var("KHTTP_TEST_TLS").is_ok_and(|v| v == "1")
}

/// `https` in the TLS mode, else `http`: the scheme of the reservations and cache URLs a test
/// makes.
#[must_use]
pub fn scheme() -> &'static str {
    if enabled() { "https" } else { "http" }
}

/// Where curl reaches `port`, and the options it needs: over TLS, `https://localhost:PORT`
/// and the test CA; else `http://127.0.0.1:PORT`.
#[must_use]
pub fn curl_base(port: u16) -> (String, Vec<String>) {
    if enabled() {
        let ca = cert().ca.display().to_string();
        (
            format!("https://localhost:{port}"),
            vec!["--cacert".to_owned(), ca],
        )
    } else {
        (format!("http://127.0.0.1:{port}"), Vec::new())
    }
}

/// The test process's certificate: its files (for `sslcert add`), the CA's (for curl), and a
/// client configuration that trusts the CA.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    config: Arc<ClientConfig>,
}

#[allow(
    deprecated,
    reason = "rustls 0.23.48 deprecates the name for lacking post-quantum groups; khttpd uses ring"
)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate, made on first use.
pub fn cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: a leaf named as its issuer reads as self-signed to OpenSSL.
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "khttp test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let mut leaf = CertificateParams::new(names).expect("params");
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, "khttp test server");
        let leaf = leaf.signed_by(&key, &issuer).expect("certificate");
        let dir = std::env::temp_dir().join(format!("khttp-test-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            cert: write("cert.pem", &leaf.pem()),
            key: write("key.pem", &key.serialize_pem()),
            ca: write("ca.pem", &ca.pem()),
            config: Arc::new(config),
        }
    })
}

/// A connection's stream: plain TCP, or TLS over it. Derefs to the `TcpStream` for its
/// socket options and shutdown.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// A TLS stream over `tcp` (its handshake runs with the first read or write).
    #[must_use]
    pub fn tls(tcp: TcpStream) -> Self {
        let name = ServerName::try_from("localhost").expect("name");
        let conn = ClientConnection::new(Arc::clone(&cert().config), name).expect("client");
        Self::Tls(Box::new(StreamOwned::new(conn, tcp)))
    }
}

/// A connection to `port` on the test host: TLS in the TLS mode, else plain TCP.
#[must_use]
pub fn connect(port: u16) -> Stream {
    let tcp = TcpStream::connect((crate::host().as_str(), port)).expect("connect");
    if enabled() {
        Stream::tls(tcp)
    } else {
        Stream::Plain(tcp)
    }
}

impl std::ops::Deref for Stream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}
