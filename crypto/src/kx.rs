//! Ephemeral key exchange: X25519 (RFC 7748 §6.1) and ECDH over secp256r1 and secp384r1 (SEC 1
//! §3.3.1; TLS 1.3's uncompressed shares, RFC 8446 §4.2.8.2). Each secret is drawn from the
//! host's [`Entropy`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};

use crate::Entropy;

/// X25519, drawing its secrets from `E`.
pub(crate) struct X25519<E>(pub(crate) PhantomData<fn() -> E>);

impl<E> core::fmt::Debug for X25519<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X25519")
    }
}

impl<E: Entropy> SupportedKxGroup for X25519<E> {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut bytes = [0u8; 32];
        E::fill(&mut bytes)?;
        // `StaticSecret` clamps the scalar (RFC 7748 §5); it is used once, for this exchange.
        let secret = x25519_dalek::StaticSecret::from(bytes);
        bytes.fill(0);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// An X25519 exchange under way.
struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 7748 §6.1 / RFC 8446 §7.4.2: an all-zero result (a low-order peer point) is
        // refused.
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// A NIST curve.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Curve {
    P256,
    P384,
}

/// ECDH over a NIST curve, drawing its secrets from `E`.
pub(crate) struct Nist<E>(pub(crate) Curve, pub(crate) PhantomData<fn() -> E>);

impl<E> core::fmt::Debug for Nist<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.0, f)
    }
}

/// How many draws a secret may take: a draw fails only when it is zero or not below the
/// group's order, about 2^-32 for P-256 and far less for P-384.
const DRAWS: usize = 8;

/// A secret scalar for the curve `C`, drawn from `E` until it is valid.
fn draw<E: Entropy, C>() -> Result<elliptic_curve::SecretKey<C>, Error>
where
    C: elliptic_curve::CurveArithmetic,
{
    let mut bytes = elliptic_curve::FieldBytes::<C>::default();
    for _ in 0..DRAWS {
        E::fill(&mut bytes)?;
        let key = elliptic_curve::SecretKey::<C>::from_bytes(&bytes);
        bytes.fill(0);
        if let Ok(key) = key {
            return Ok(key);
        }
    }
    Err(Error::FailedToGetRandomBytes)
}

/// The uncompressed point `0x04 || X || Y` of `key`'s public key.
fn share<C>(key: &elliptic_curve::SecretKey<C>) -> Vec<u8>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    use elliptic_curve::sec1::ToSec1Point;
    key.public_key().to_sec1_point(false).as_bytes().to_vec()
}

/// The x-coordinate of `key` times the peer's point, which must be uncompressed and on the
/// curve (SEC 1 §3.2.2's checks: `from_sec1_bytes` refuses points off the curve and the
/// identity).
fn agree<C>(key: &elliptic_curve::SecretKey<C>, peer: &[u8]) -> Result<SharedSecret, Error>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    if peer.first() != Some(&4) {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    let public = elliptic_curve::PublicKey::<C>::from_sec1_bytes(peer)
        .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
    let shared = elliptic_curve::ecdh::diffie_hellman(key.to_nonzero_scalar(), public.as_affine());
    Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
}

impl<E: Entropy> SupportedKxGroup for Nist<E> {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        Ok(Box::new(match self.0 {
            Curve::P256 => {
                let key = draw::<E, p256::NistP256>()?;
                NistExchange {
                    public: share(&key),
                    key: NistKey::P256(key),
                }
            }
            Curve::P384 => {
                let key = draw::<E, p384::NistP384>()?;
                NistExchange {
                    public: share(&key),
                    key: NistKey::P384(key),
                }
            }
        }))
    }

    fn name(&self) -> NamedGroup {
        match self.0 {
            Curve::P256 => NamedGroup::secp256r1,
            Curve::P384 => NamedGroup::secp384r1,
        }
    }
}

/// A secret on one of the curves.
enum NistKey {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

/// A NIST-curve exchange under way.
struct NistExchange {
    key: NistKey,
    public: Vec<u8>,
}

impl ActiveKeyExchange for NistExchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        match &self.key {
            NistKey::P256(k) => agree(k, peer),
            NistKey::P384(k) => agree(k, peer),
        }
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        match self.key {
            NistKey::P256(_) => NamedGroup::secp256r1,
            NistKey::P384(_) => NamedGroup::secp384r1,
        }
    }
}
