//! SHA-256 and SHA-384 (FIPS 180-4), HMAC over them (RFC 2104), and, built by rustls from the
//! HMAC, TLS 1.3's HKDF (RFC 5869) and TLS 1.2's PRF (RFC 5246 §5).

use alloc::boxed::Box;
use core::marker::PhantomData;

use hmac::digest::OutputSizeUser;
use hmac::{KeyInit, Mac};
use rustls::crypto::hash::{Context, Hash, HashAlgorithm, Output};
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls12::PrfUsingHmac;
use rustls::crypto::tls13::HkdfUsingHmac;
use sha2::Digest;

/// A SHA-2 function rustls can name.
pub(crate) trait Sha:
    Digest + hmac::digest::block_api::BlockSizeUser + Clone + Send + Sync + 'static
{
    /// Its name in TLS.
    const ALGORITHM: HashAlgorithm;
}

impl Sha for sha2::Sha256 {
    const ALGORITHM: HashAlgorithm = HashAlgorithm::SHA256;
}

impl Sha for sha2::Sha384 {
    const ALGORITHM: HashAlgorithm = HashAlgorithm::SHA384;
}

/// The hash `D` as rustls's [`Hash`].
pub(crate) struct Sha2<D>(PhantomData<fn() -> D>);

pub(crate) static SHA256: Sha2<sha2::Sha256> = Sha2(PhantomData);
pub(crate) static SHA384: Sha2<sha2::Sha384> = Sha2(PhantomData);

impl<D: Sha> Hash for Sha2<D> {
    fn start(&self) -> Box<dyn Context> {
        Box::new(Running(D::new()))
    }

    fn hash(&self, data: &[u8]) -> Output {
        Output::new(&D::digest(data))
    }

    fn output_len(&self) -> usize {
        <D as Digest>::output_size()
    }

    fn algorithm(&self) -> HashAlgorithm {
        D::ALGORITHM
    }
}

/// A hash under way.
struct Running<D>(D);

impl<D: Sha> Context for Running<D> {
    fn fork_finish(&self) -> Output {
        Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn Context> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> Output {
        Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC over the hash `D` as rustls's [`Hmac`].
pub(crate) struct HmacSha2<D>(PhantomData<fn() -> D>);

pub(crate) static HMAC_SHA256: HmacSha2<sha2::Sha256> = HmacSha2(PhantomData);
pub(crate) static HMAC_SHA384: HmacSha2<sha2::Sha384> = HmacSha2(PhantomData);

pub(crate) static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
pub(crate) static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);
pub(crate) static PRF_SHA256: PrfUsingHmac<'static> = PrfUsingHmac(&HMAC_SHA256);
pub(crate) static PRF_SHA384: PrfUsingHmac<'static> = PrfUsingHmac(&HMAC_SHA384);

impl<D: Sha> Hmac for HmacSha2<D>
where
    hmac::SimpleHmac<D>: KeyInit + Mac + Clone + Send + Sync,
{
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        // HMAC takes a key of any length (RFC 2104 §2: a long one is hashed first), so
        // `new_from_slice` cannot refuse it.
        Box::new(HmacKey(
            <hmac::SimpleHmac<D> as KeyInit>::new_from_slice(key).ok(),
        ))
    }

    fn hash_output_len(&self) -> usize {
        <D as Digest>::output_size()
    }
}

/// A keyed HMAC, cloned for each tag. `None` cannot happen (see `with_key`); it gives an
/// empty tag, which no peer accepts, rather than a panic.
struct HmacKey<M>(Option<M>);

impl<M: Mac + OutputSizeUser + Clone + Send + Sync> Key for HmacKey<M> {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let Some(mac) = &self.0 else {
            return Tag::new(&[]);
        };
        let mut mac = mac.clone();
        mac.update(first);
        for m in middle {
            mac.update(m);
        }
        mac.update(last);
        Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        <M as OutputSizeUser>::output_size()
    }
}
