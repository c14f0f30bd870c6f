//! Certificates bound as http.sys binds them (issue #24): to an address and port (`ipport=`,
//! `netsh http add sslcert ipport=0.0.0.0:443`) or to a host name and port (`hostnameport=`,
//! the SNI binding that http.sys has had since Windows 8 / Server 2012). A handshake on a
//! listener takes, in this order: the `hostnameport` binding of the name the client asked for
//! (its SNI) and the listener's port; the `ipport` binding of the listener's address and port;
//! the wildcard `ipport` of its port (`0.0.0.0`, or `[::]` for an IPv6 listener, then
//! `0.0.0.0`). A ClientHello that matches nothing gets a fatal alert (rustls sends
//! `access_denied` when the resolver finds no certificate). Microsoft Learn, "netsh http
//! commands" (`add sslcert`), and "Server Name Indication (SNI): SSL scalability" (IIS 8.0).
//!
//! A binding's certificate and key are checked when it is made, so that a certificate that
//! does not parse or a key that is not its own is refused at once, in one line, and never at a
//! client's handshake.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{InconsistentKeys, ServerConfig};

use crate::route::Local;

/// What a certificate is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingKey {
    /// An address and port (`ipport=IP:PORT`); the unspecified address is the port's wildcard.
    IpPort(IpAddr, u16),
    /// A host name and port (`hostnameport=NAME:PORT`), matched against the client's SNI,
    /// without regard to case; kept in lower case.
    HostnamePort(String, u16),
}

impl fmt::Display for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IpPort(IpAddr::V6(ip), port) => write!(f, "ipport=[{ip}]:{port}"),
            Self::IpPort(ip, port) => write!(f, "ipport={ip}:{port}"),
            Self::HostnamePort(name, port) => write!(f, "hostnameport={name}:{port}"),
        }
    }
}

impl BindingKey {
    /// Reads netsh's form: `ipport=IP:PORT` (`[IPv6]:PORT`) or `hostnameport=NAME:PORT`.
    ///
    /// # Errors
    /// One line of English naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let bad_port = "the port must be a number from 1 to 65535";
        if let Some(rest) = s.strip_prefix("ipport=") {
            let (ip, port) = rest.rsplit_once(':').ok_or("ipport= needs IP:PORT")?;
            let ip = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(ip);
            let ip: IpAddr = ip.parse().map_err(|_| "ipport= needs an IP address")?;
            let port = port.parse().ok().filter(|p| *p != 0).ok_or(bad_port)?;
            return Ok(Self::IpPort(unmapped(ip), port));
        }
        if let Some(rest) = s.strip_prefix("hostnameport=") {
            let (name, port) = rest
                .rsplit_once(':')
                .ok_or("hostnameport= needs NAME:PORT")?;
            let port = port.parse().ok().filter(|p| *p != 0).ok_or(bad_port)?;
            let name_ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !name_ok {
                return Err("hostnameport= needs a DNS host name (letters, digits, '-' and '.')");
            }
            return Ok(Self::HostnamePort(name.to_ascii_lowercase(), port));
        }
        Err("a binding is ipport=IP:PORT or hostnameport=NAME:PORT")
    }

    /// The port it applies to.
    #[must_use]
    pub const fn port(&self) -> u16 {
        match self {
            Self::IpPort(_, port) | Self::HostnamePort(_, port) => *port,
        }
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address (as `Local` counts it).
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why a certificate and key cannot be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertError {
    /// The chain file holds no PEM certificate.
    NoCertificate,
    /// The key file holds no PEM private key.
    NoKey,
    /// The key is of a kind the provider cannot sign with.
    UnsupportedKey,
    /// The certificate does not parse.
    BadCertificate,
    /// The key is not the certificate's.
    KeyMismatch,
}

impl CertError {
    /// One line of English.
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::NoCertificate => "the certificate file holds no PEM certificate",
            Self::NoKey => "the key file holds no PEM private key",
            Self::UnsupportedKey => {
                "the key is not one this server's crypto provider signs with (ring: RSA, ECDSA \
                 P-256 or P-384, Ed25519; khttp-crypto, the driver's: ECDSA P-256 or P-384)"
            }
            Self::BadCertificate => "the certificate does not parse as X.509",
            Self::KeyMismatch => "the key does not match the certificate",
        }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A certificate chain (PEM, the server's certificate first) and its private key (PEM: PKCS#8,
/// PKCS#1 or SEC1), loaded with `provider`'s key support and checked against each other.
///
/// # Errors
/// The [`CertError`] that says what is wrong.
pub fn load(
    chain_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| CertError::NoCertificate)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CertError::NoKey)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertError::UnsupportedKey)?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch);
        }
        Err(_) => return Err(CertError::BadCertificate),
    }
    Ok(Arc::new(certified))
}

/// The certificates bound, and the rule that picks one for a handshake.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    list: Vec<(BindingKey, Arc<CertifiedKey>)>,
}

impl Bindings {
    /// No bindings.
    #[must_use]
    pub const fn new() -> Self {
        Self { list: Vec::new() }
    }

    /// Binds `cert` to `key`, replacing what was bound to it; returns whether it replaced one.
    pub fn bind(&mut self, key: BindingKey, cert: Arc<CertifiedKey>) -> bool {
        if let Some(slot) = self.list.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = cert;
            return true;
        }
        self.list.push((key, cert));
        false
    }

    /// Removes the binding of `key`; returns whether there was one.
    pub fn unbind(&mut self, key: &BindingKey) -> bool {
        let before = self.list.len();
        self.list.retain(|(k, _)| k != key);
        self.list.len() != before
    }

    /// The bindings, in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = (&BindingKey, &Arc<CertifiedKey>)> {
        self.list.iter().map(|(k, c)| (k, c))
    }

    /// Whether any binding applies to `port`: a listener on it speaks TLS.
    #[must_use]
    pub fn covers(&self, port: u16) -> bool {
        self.list.iter().any(|(k, _)| k.port() == port)
    }

    fn find(&self, key: &BindingKey) -> Option<Arc<CertifiedKey>> {
        self.list
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| Arc::clone(c))
    }

    /// The certificate for a handshake on `local` whose client asked for `sni`: the host
    /// name's binding, then the address's, then the port's wildcard.
    #[must_use]
    pub fn select(&self, sni: Option<&str>, local: Local) -> Option<Arc<CertifiedKey>> {
        let port = local.port;
        let by_name = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.find(&BindingKey::HostnamePort(name, port))
        });
        let ip = unmapped(local.ip);
        let own_wildcard = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        by_name
            .or_else(|| self.find(&BindingKey::IpPort(ip, port)))
            .or_else(|| self.find(&BindingKey::IpPort(own_wildcard, port)))
            .or_else(|| self.find(&BindingKey::IpPort(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)))
    }
}

/// The resolver of one listener: [`Bindings::select`] with the listener's address.
#[derive(Debug)]
struct ForListener {
    bindings: Arc<Bindings>,
    local: Local,
}

impl ResolvesServerCert for ForListener {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.bindings.select(hello.server_name(), self.local)
    }
}

/// The TLS configuration of the listener on `local`, under `bindings`: TLS 1.3 and 1.2 only,
/// `provider`'s cipher suites and groups (the host chooses them; docs/tls.md), ALPN
/// `http/1.1` and `http/1.0`, and resumption by `tickets` when the host gives a ticketer (one stateless
/// ticket after each TLS 1.3 handshake, RFC 8446 §4.6.1, taken back as a PSK; RFC 5077
/// tickets in TLS 1.2), none otherwise. A configuration is made per listener because the
/// address is part of the choice of certificate; a change of bindings makes new ones, which
/// new handshakes take while those running keep theirs.
///
/// # Errors
/// rustls refuses the provider (it offers no suite for either version).
pub fn server_config(
    bindings: Arc<Bindings>,
    local: Local,
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    tickets: Option<Arc<dyn ProducesTickets>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ForListener { bindings, local }));
    // http/1.0 too, as nginx offers it: a client that offers only it (curl -0) would
    // otherwise be refused with no_application_protocol (RFC 7301 §3.2).
    config.alpn_protocols = alloc::vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    match tickets {
        Some(ticketer) => {
            config.ticketer = ticketer;
            // One is enough for the next connection (rustls's default is two).
            config.send_tls13_tickets = 1;
        }
        None => config.send_tls13_tickets = 0,
    }
    Ok(Arc::new(config))
}
