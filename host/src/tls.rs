//! khttpd's certificates (issue #24): the bindings that `khttpctl sslcert` makes, kept in
//! `STATE_DIR/sslcert/`, and the TLS configuration each listener's handshakes take.
//!
//! - One file per binding, `STATE_DIR/sslcert/BINDING.pem`: the chain, then the key, mode 0600
//!   in a directory of mode 0700, written atomically (a temporary file, `fsync`, `rename`,
//!   `fsync` of the directory), so that a crash leaves the old pair or the new one, never a
//!   certificate beside another's key. The file's name is the binding with `:` written `,`
//!   (`ipport=0.0.0.0,443.pem`, `hostnameport=example.com,443.pem`).
//! - Keys arrive only over the control socket (mode 0600), are checked against their
//!   certificate before anything is written, and are never printed or logged.
//! - A change makes new configurations, which the next handshakes take; connections already
//!   open keep theirs, so a renewal drops nothing.
//!
//! The crypto provider is ring's (docs/tls.md says why), with its default suites, which are
//! Mozilla's "intermediate" nine. Resumption: ring's `Ticketer` (ChaCha20-Poly1305 ticket keys,
//! generated at random and rotated every 6 hours; tickets live 12) for TLS 1.3 PSKs and
//! TLS 1.2 tickets, one `Ticketer` for every listener, so a ticket from one worker resumes on
//! another.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use khttp_engine::Local;
use khttp_engine::tls::bind::{self, BindingKey, Bindings};
use khttp_proto::reply::{CertRow, PemRow};
use khttp_proto::{Request, Status, write_rows};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;
use rustls::sign::CertifiedKey;

/// The directory under the state directory.
const DIR: &str = "sslcert";
/// A stapled OCSP response's file: the binding's name with this in place of `.pem`.
const OCSP: &str = ".ocsp";

/// `cert` with `response` to staple, once it is checked to be a successful, basic OCSP
/// response saying "good" for `cert`'s serial number (`x509::check_ocsp`).
fn stapled(cert: &CertifiedKey, response: Vec<u8>) -> Result<Arc<CertifiedKey>, &'static str> {
    let leaf = cert.end_entity_cert().map_err(|_| "no certificate")?;
    let serial = crate::x509::serial(leaf).ok_or("the certificate does not parse")?;
    crate::x509::check_ocsp(&response, serial)?;
    let mut with = cert.clone();
    with.ocsp = Some(response);
    Ok(Arc::new(with))
}

/// The certificates bound, the provider and the ticket keys.
pub(crate) struct Certs {
    provider: Arc<CryptoProvider>,
    tickets: Arc<dyn ProducesTickets>,
    bindings: RwLock<Arc<Bindings>>,
    /// Bindings that are not persisted (`--https`'s certificate from the local CA).
    transient: RwLock<Vec<BindingKey>>,
    /// Bumped on every change, so that workers make new configurations.
    generation: AtomicU64,
    dir: PathBuf,
    /// The local CA's directory (`--https`).
    pub(crate) ca_dir: PathBuf,
}

/// ring's provider, whose default suites and groups are khttpd's policy (docs/tls.md).
#[allow(
    deprecated,
    reason = "rustls 0.23.48 deprecates the name for lacking post-quantum groups; ring is \
              khttpd's provider on purpose (docs/tls.md)"
)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The crypto provider khttpd's handshakes and records use (`--tls-provider`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Provider {
    /// ring: khttpd's own (docs/tls.md).
    Ring,
    /// khttp-crypto, the driver's provider in safe Rust (ECDSA certificates only), so that the
    /// clients and tests that try khttpd try it too, in user mode.
    KhttpCrypto,
}

/// The system's random numbers for khttp-crypto (ring's generator: `getrandom(2)`).
struct SystemEntropy;

impl khttp_crypto::Entropy for SystemEntropy {
    fn fill(buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// A binding's file name: `:` is written `,` (neither a host name nor an address has one).
fn file_name(key: &BindingKey) -> String {
    format!("{}.pem", key.to_string().replace(':', ","))
}

/// The binding a file name stands for.
fn key_of(name: &str) -> Option<BindingKey> {
    BindingKey::parse(&name.strip_suffix(".pem")?.replace(',', ":")).ok()
}

impl Certs {
    /// The certificates persisted under `state_dir`, loaded and checked, for `provider`.
    ///
    /// # Errors
    /// One line: the ticket keys could not be made, or a file cannot be read or bound (its
    /// name and the fault).
    pub(crate) fn load(state_dir: &Path, provider: Provider) -> Result<Self, String> {
        let provider = Arc::new(match provider {
            Provider::Ring => ring_provider(),
            Provider::KhttpCrypto => khttp_crypto::provider::<SystemEntropy>(),
        });
        let tickets = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot make TLS ticket keys: {e}"))?;
        let dir = state_dir.join(DIR);
        let mut bindings = Bindings::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<_> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && !n.ends_with(OCSP))
                    .collect();
                names.sort();
                for name in names {
                    let path = dir.join(&name);
                    let key = key_of(&name)
                        .ok_or_else(|| format!("{}: not a binding's file", path.display()))?;
                    let text = fs::read(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let mut cert = bind::load(&text, &text, &provider)
                        .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                    let staple = path.with_extension(&OCSP[1..]);
                    if let Ok(response) = fs::read(&staple) {
                        match stapled(&cert, response) {
                            Ok(c) => cert = c,
                            // A staple that no longer fits (a crash between the two files, a
                            // certificate replaced by hand) is left out, not fatal.
                            Err(e) => eprintln!("khttpd: {}: {e}; not stapled", staple.display()),
                        }
                    }
                    bindings.bind(key, cert);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        }
        Ok(Self {
            provider,
            tickets,
            bindings: RwLock::new(Arc::new(bindings)),
            transient: RwLock::new(Vec::new()),
            generation: AtomicU64::new(1),
            dir,
            ca_dir: state_dir.join("ca"),
        })
    }

    /// The provider.
    pub(crate) fn provider(&self) -> &CryptoProvider {
        &self.provider
    }

    /// The change counter: a worker's configurations made at another value are stale.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current bindings.
    pub(crate) fn bindings(&self) -> Arc<Bindings> {
        Arc::clone(&self.bindings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration for handshakes on `local`, under the current bindings.
    ///
    /// # Errors
    /// rustls refused the configuration (it does not, with ring's suites).
    pub(crate) fn config(&self, local: Local) -> Result<Arc<ServerConfig>, rustls::Error> {
        bind::server_config(
            self.bindings(),
            local,
            Arc::clone(&self.provider),
            Arc::new(rustls::time_provider::DefaultTimeProvider),
            Some(Arc::clone(&self.tickets)),
        )
    }

    /// Replaces the bindings with `f`'s change of a copy, and tells the workers.
    fn change(&self, f: impl FnOnce(&mut Bindings) -> bool) -> bool {
        let mut current = self
            .bindings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = Bindings::clone(&current);
        let changed = f(&mut next);
        if changed {
            *current = Arc::new(next);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// Binds `cert` to `key` for this run only (`--https`), unless a persisted binding holds
    /// it already; returns whether it bound.
    pub(crate) fn bind_transient(&self, key: BindingKey, cert: Arc<CertifiedKey>) -> bool {
        let taken = self.bindings().iter().any(|(k, _)| *k == key);
        if taken {
            return false;
        }
        self.transient
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key.clone());
        self.change(|b| {
            b.bind(key, cert);
            true
        })
    }

    /// `sslcert add`: checks the pair (and the OCSP response to staple, if any), writes its
    /// files, then binds it (replacing what was bound there).
    fn add(
        &self,
        binding: &str,
        chain: &str,
        key: &str,
        ocsp: Option<&[u8]>,
    ) -> Result<(), (Status, String)> {
        let invalid = |m: &str| (Status::InvalidCertificate, m.to_owned());
        let binding = BindingKey::parse(binding).map_err(invalid)?;
        let mut cert = bind::load(chain.as_bytes(), key.as_bytes(), &self.provider)
            .map_err(|e| invalid(e.message()))?;
        if let Some(response) = ocsp {
            cert = stapled(&cert, response.to_vec()).map_err(invalid)?;
        }
        let mut text = String::with_capacity(chain.len() + key.len() + 1);
        text.push_str(chain.trim_end());
        text.push('\n');
        text.push_str(key.trim_end());
        text.push('\n');
        let saved = self.save(&file_name(&binding), text.as_bytes());
        khttp_local::files::wipe(text.into_bytes());
        // The staple after the pair: a crash between them leaves the old staple beside the new
        // certificate, which `load` finds does not fit and leaves out.
        let staple = format!("{}{OCSP}", binding.to_string().replace(':', ","));
        let saved = saved.and_then(|()| match ocsp {
            Some(response) => self.save(&staple, response),
            None => match fs::remove_file(self.dir.join(&staple)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        });
        saved.map_err(|e| {
            (
                Status::PersistFailed,
                format!(
                    "could not save the certificate in {}: {e}",
                    self.dir.display()
                ),
            )
        })?;
        self.transient
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k| *k != binding);
        self.change(|b| {
            b.bind(binding, cert);
            true
        });
        Ok(())
    }

    /// `sslcert delete`: removes the file, then the binding.
    fn delete(&self, binding: &str) -> Result<(), (Status, String)> {
        let binding =
            BindingKey::parse(binding).map_err(|m| (Status::InvalidCertificate, m.to_owned()))?;
        if !self.bindings().iter().any(|(k, _)| *k == binding) {
            return Err((
                Status::NotFound,
                format!("no certificate is bound to {binding}"),
            ));
        }
        let path = self.dir.join(file_name(&binding));
        let _ = fs::remove_file(path.with_extension(&OCSP[1..]));
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = File::open(&self.dir).and_then(|d| d.sync_all());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err((
                    Status::PersistFailed,
                    format!("could not remove {}: {e}", path.display()),
                ));
            }
        }
        self.transient
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k| *k != binding);
        self.change(|b| b.unbind(&binding));
        Ok(())
    }

    /// Writes `bytes` to `name` in the directory, mode 0600, atomically.
    fn save(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        crate::state::save_private(&self.dir, name, bytes)
    }

    /// `sslcert show`: binding, the certificate's SHA-256 fingerprint, its names, its expiry,
    /// the chain's length, and whether it is persisted.
    fn list(&self, out: &mut Vec<u8>) {
        let bindings = self.bindings();
        let transient = self
            .transient
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let rows: Vec<_> = bindings
            .iter()
            .map(|(key, cert)| {
                let leaf = cert
                    .end_entity_cert()
                    .map(|c| c.as_ref())
                    .unwrap_or_default();
                let about = crate::x509::read(leaf).unwrap_or_default();
                (
                    key.to_string(),
                    fingerprint(leaf),
                    about.names.join(","),
                    about.not_after,
                    cert.cert.len() as u64,
                    !transient.contains(key),
                )
            })
            .collect();
        let _ = write_rows(
            out,
            rows.iter().map(
                |(binding, sha256, names, not_after, chain, persisted)| CertRow {
                    binding,
                    sha256,
                    names,
                    not_after: *not_after,
                    chain: *chain,
                    persisted: *persisted,
                },
            ),
        );
    }
}

/// The SHA-256 of a certificate, in upper-case hex pairs joined by `:` (as `openssl x509
/// -fingerprint -sha256` prints it).
pub(crate) fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The host's half of the certificate commands.
pub(crate) fn command(
    certs: &Certs,
    req: &Request<'_>,
    out: &mut Vec<u8>,
) -> Result<(), (Status, Cow<'static, str>)> {
    let owned = |(s, m): (Status, String)| (s, Cow::Owned(m));
    match req {
        Request::SslcertAdd {
            binding,
            chain,
            key,
            ocsp,
        } => {
            certs.add(binding, chain, key, *ocsp).map_err(owned)?;
            Ok(())
        }
        Request::SslcertDelete { binding } => certs.delete(binding).map_err(owned),
        Request::SslcertList => {
            certs.list(out);
            Ok(())
        }
        Request::SslcertCa => {
            let pem = crate::localca::certificate_pem(&certs.ca_dir)
                .map_err(|m| (Status::NotFound, Cow::Owned(m)))?;
            let _ = write_rows(out, [PemRow { pem: &pem }]);
            Ok(())
        }
        _ => Err((
            Status::UnknownCommand,
            Cow::Borrowed("not a certificate command"),
        )),
    }
}
