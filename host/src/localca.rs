//! `khttpd --https`: a local certificate authority, as Caddy keeps one for its local sites.
//!
//! The first run makes an ECDSA P-256 CA (10 years) in `STATE_DIR/ca/`: `ca.pem`, its
//! certificate, and `ca.key`, its key (both mode 0600 in a directory of mode 0700, written
//! atomically). Each run issues a fresh server certificate from it (P-256, 397 days, names
//! `localhost`, `127.0.0.1`, `::1` and the prefix's host when it names one), held in memory
//! only. A client that trusts `ca.pem` (`curl --cacert`, a browser's authorities, or the
//! system store) then trusts every run's certificate; `khttpctl sslcert ca` prints it.
//!
//! The CA's issuer name and key identifier are rebuilt from its key and a fixed name each run
//! (rcgen reads a certificate back only with x509-parser), so they match `ca.pem`'s.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

const CERT: &str = "ca.pem";
const KEY: &str = "ca.key";
/// The CA's name: fixed, so that the issuer rebuilt each run is the one in `ca.pem`.
const NAME: &str = "khttp local CA";

/// The CA certificate's PEM text.
///
/// # Errors
/// One line: there is none yet, or it cannot be read.
pub(crate) fn certificate_pem(dir: &Path) -> Result<String, String> {
    let path = dir.join(CERT);
    fs::read_to_string(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "no local CA yet: khttpd makes one in {} when started with --https",
            dir.display()
        ),
        _ => format!("cannot read {}: {e}", path.display()),
    })
}

/// Valid from yesterday (UTC, so that a client's clock a little behind still accepts it) for
/// `days` days from today.
fn set_validity(p: &mut CertificateParams, days: u64) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let ymd = |day: u64| {
        let (y, m, d) = crate::log::civil(day);
        rcgen::date_time_ymd(
            i32::try_from(y).unwrap_or(9999).min(9999),
            u8::try_from(m).unwrap_or(1),
            u8::try_from(d).unwrap_or(1),
        )
    };
    p.not_before = ymd(today.saturating_sub(1));
    p.not_after = ymd(today.saturating_add(days));
}

/// The CA's parameters (all but the dates are fixed).
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, NAME);
    dn.push(DnType::OrganizationName, "khttp");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// The CA in `dir`, made on first use.
fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, String> {
    let key_path = dir.join(KEY);
    let key = match fs::read_to_string(&key_path) {
        Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", key_path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(|e| format!("cannot make the CA key: {e}"))?;
            let mut params = ca_params();
            set_validity(&mut params, 3652);
            let cert = params
                .self_signed(&key)
                .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
            let save = |name: &str, text: &str| {
                crate::state::save_private(dir, name, text.as_bytes())
                    .map_err(|e| format!("cannot save {}: {e}", dir.join(name).display()))
            };
            // The key first: a crash between the two leaves a key without a certificate,
            // which the next run uses to make the certificate again.
            save(KEY, &key.serialize_pem())?;
            save(CERT, &cert.pem())?;
            key
        }
        Err(e) => return Err(format!("cannot read {}: {e}", key_path.display())),
    };
    if !dir.join(CERT).exists() {
        let mut params = ca_params();
        set_validity(&mut params, 3652);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
        crate::state::save_private(dir, CERT, cert.pem().as_bytes())
            .map_err(|e| format!("cannot save {}: {e}", dir.join(CERT).display()))?;
    }
    Ok(Issuer::new(ca_params(), key))
}

/// A server certificate for `localhost`, its loopback addresses and `extra` names, issued by
/// the CA in `dir` (made on first use), loaded for rustls.
///
/// # Errors
/// One line naming what failed.
pub(crate) fn issue(
    dir: &Path,
    extra: &[String],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let issuer = issuer(dir)?;
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut params =
        CertificateParams::new(names).map_err(|e| format!("cannot name the certificate: {e}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "khttpd --https");
    set_validity(&mut params, 397);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot issue the certificate: {e}"))?;
    khttp_engine::tls::bind::load(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        provider,
    )
    .map_err(|e| e.message().to_owned())
}
