//! The server's ECDSA keys (FIPS 186-5; RFC 8446 §4.2.3's `ecdsa_secp256r1_sha256` and
//! `ecdsa_secp384r1_sha384`), loaded from PKCS#8 (RFC 5208) or SEC 1 (RFC 5915) DER. Nonces
//! are RFC 6979's deterministic ones, so signing draws no randomness.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;

use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rustls::crypto::KeyProvider;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};

/// Loads the server's keys.
#[derive(Debug)]
pub(crate) struct Keys;

impl KeyProvider for Keys {
    fn load_private_key(&self, der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, Error> {
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => {
                let k = k.secret_pkcs8_der();
                p256::ecdsa::SigningKey::from_pkcs8_der(k)
                    .map(Ecdsa::P256)
                    .or_else(|_| p384::ecdsa::SigningKey::from_pkcs8_der(k).map(Ecdsa::P384))
                    .ok()
            }
            PrivateKeyDer::Sec1(k) => {
                let k = k.secret_sec1_der();
                p256::SecretKey::from_sec1_der(k)
                    .map(|s| Ecdsa::P256(s.into()))
                    .or_else(|_| p384::SecretKey::from_sec1_der(k).map(|s| Ecdsa::P384(s.into())))
                    .ok()
            }
            _ => None,
        };
        key.map(|k| Arc::new(k) as Arc<dyn SigningKey>).ok_or_else(|| {
            Error::General(format!(
                "this provider signs with ECDSA P-256 and P-384 keys only (the key given is {})",
                kind(&der)
            ))
        })
    }
}

/// What a key is, for the refusal.
fn kind(der: &PrivateKeyDer<'_>) -> &'static str {
    match der {
        PrivateKeyDer::Pkcs1(_) => "RSA",
        PrivateKeyDer::Sec1(_) => "on another curve",
        PrivateKeyDer::Pkcs8(_) => "RSA, Ed25519 or on another curve",
        _ => "of an unknown kind",
    }
}

/// An ECDSA key.
#[derive(Clone)]
enum Ecdsa {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl core::fmt::Debug for Ecdsa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key itself.
        f.write_str(match self {
            Self::P256(_) => "Ecdsa::P256",
            Self::P384(_) => "Ecdsa::P384",
        })
    }
}

impl Ecdsa {
    const fn scheme(&self) -> SignatureScheme {
        match self {
            Self::P256(_) => SignatureScheme::ECDSA_NISTP256_SHA256,
            Self::P384(_) => SignatureScheme::ECDSA_NISTP384_SHA384,
        }
    }
}

impl SigningKey for Ecdsa {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&self.scheme())
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        let der = match self {
            Self::P256(k) => k.verifying_key().to_public_key_der(),
            Self::P384(k) => k.verifying_key().to_public_key_der(),
        };
        der.ok()
            .map(|d| SubjectPublicKeyInfoDer::from(d.as_bytes().to_vec()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for Ecdsa {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        use p256::ecdsa::signature::Signer as _;
        let fail = |_| Error::General("ECDSA signing failed".into());
        Ok(match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(message).map_err(fail)?;
                sig.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.try_sign(message).map_err(fail)?;
                sig.to_der().as_bytes().to_vec()
            }
        })
    }

    fn scheme(&self) -> SignatureScheme {
        Self::scheme(self)
    }
}
