//! khttp-crypto: a rustls crypto provider in safe, `no_std` Rust, for the driver (issue #25).
//!
//! khttpd uses rustls's ring provider. ring cannot serve in the kernel: its random numbers
//! come from user-mode Windows (getrandom: `bcrypt.dll`, then `advapi32.dll`) behind a sealed
//! trait that no caller can replace, and it runs AVX2 code, which kernel code may use only
//! inside `KeSaveExtendedProcessorState`. This provider is RustCrypto's primitives (aes-gcm,
//! chacha20poly1305, p256, p384, x25519-dalek, sha2, hmac) behind rustls's provider traits,
//! with the random numbers the host gives ([`Entropy`]: `BCryptGenRandom` from ksecdd.sys in
//! the driver). It forbids unsafe code, as the engine does, runs the same under Wine, on
//! Windows and in the tests here, and its SIMD is chosen at build time (driver/linux/build.sh
//! keeps it to SSE, which x64 kernel code may use without saving state). docs/tls.md, "The
//! driver's crypto provider", weighs it against CNG.
//!
//! What it offers, the set Mozilla's "intermediate" configuration names for ECDSA
//! certificates:
//! - TLS 1.3: `TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`,
//!   `TLS_CHACHA20_POLY1305_SHA256` (RFC 8446 §B.4);
//! - TLS 1.2: `ECDHE-ECDSA` with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 (RFC 5289,
//!   RFC 7905);
//! - key exchange: X25519 (RFC 7748), secp256r1 and secp384r1;
//! - server keys: ECDSA P-256 with SHA-256 and P-384 with SHA-384, signed with RFC 6979's
//!   deterministic nonces. RSA keys are refused: the pure-Rust `rsa` crate's private-key
//!   operation was not constant-time until its 0.10 (RUSTSEC-2023-0071), and a kernel server
//!   can ask for an ECDSA certificate.
//!
//! It verifies no signatures: the driver does not ask for client certificates.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod aead;
mod hash;
mod kx;
mod sign;

use alloc::vec;
use core::marker::PhantomData;

use rustls::crypto::{CipherSuiteCommon, KeyExchangeAlgorithm};
use rustls::crypto::{CryptoProvider, GetRandomFailed, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::{
    CipherSuite, SignatureScheme, SupportedCipherSuite, Tls12CipherSuite, Tls13CipherSuite,
};

/// The host's source of random numbers: the kernel's generator in the driver, the operating
/// system's in tests. Every secret this provider makes (key-exchange keys, the server's
/// random, session tickets' keys that rustls asks for) is drawn from it.
pub trait Entropy: 'static {
    /// Fills `buf` with unpredictable bytes.
    ///
    /// # Errors
    /// When the generator fails; the handshake then fails.
    fn fill(buf: &mut [u8]) -> Result<(), GetRandomFailed>;
}

/// rustls's random numbers, from `E`.
struct Random<E>(PhantomData<fn() -> E>);

impl<E: Entropy> core::fmt::Debug for Random<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Random")
    }
}

impl<E: Entropy> SecureRandom for Random<E> {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        E::fill(buf)
    }
}

/// The provider's parts that depend on the host's [`Entropy`], as `'static` values.
struct Parts<E>(PhantomData<fn() -> E>);

impl<E: Entropy> Parts<E> {
    const RANDOM: &'static Random<E> = &Random(PhantomData);
    const X25519: &'static kx::X25519<E> = &kx::X25519(PhantomData);
    const SECP256R1: &'static kx::Nist<E> = &kx::Nist(kx::Curve::P256, PhantomData);
    const SECP384R1: &'static kx::Nist<E> = &kx::Nist(kx::Curve::P384, PhantomData);
}

/// The provider, drawing its random numbers from `E`.
#[must_use]
pub fn provider<E: Entropy>() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            Parts::<E>::X25519,
            Parts::<E>::SECP256R1,
            Parts::<E>::SECP384R1,
        ],
        signature_verification_algorithms: WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        secure_random: Parts::<E>::RANDOM,
        key_provider: &sign::Keys,
    }
}

/// AES-GCM's limit on records under one key (RFC 8446 §5.5: 2^24.5 full records; rustls's
/// other providers use 2^24).
const GCM_LIMIT: u64 = 1 << 24;

/// TLS 1.3 `TLS_AES_128_GCM_SHA256`.
pub static TLS13_AES_128_GCM_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_AES_128_GCM_SHA256,
            hash_provider: &hash::SHA256,
            confidentiality_limit: GCM_LIMIT,
        },
        hkdf_provider: &hash::HKDF_SHA256,
        aead_alg: &aead::AES_128_GCM,
        quic: None,
    });

/// TLS 1.3 `TLS_AES_256_GCM_SHA384`.
pub static TLS13_AES_256_GCM_SHA384: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_AES_256_GCM_SHA384,
            hash_provider: &hash::SHA384,
            confidentiality_limit: GCM_LIMIT,
        },
        hkdf_provider: &hash::HKDF_SHA384,
        aead_alg: &aead::AES_256_GCM,
        quic: None,
    });

/// TLS 1.3 `TLS_CHACHA20_POLY1305_SHA256`.
pub static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: &hash::SHA256,
            confidentiality_limit: u64::MAX,
        },
        hkdf_provider: &hash::HKDF_SHA256,
        aead_alg: &aead::CHACHA20_POLY1305,
        quic: None,
    });

/// The signature schemes an ECDSA suite of TLS 1.2 may sign with, preferred first.
const ECDSA_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
];

/// TLS 1.2 `ECDHE-ECDSA-AES128-GCM-SHA256`.
pub static TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls12(&Tls12CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            hash_provider: &hash::SHA256,
            confidentiality_limit: GCM_LIMIT,
        },
        prf_provider: &hash::PRF_SHA256,
        kx: KeyExchangeAlgorithm::ECDHE,
        sign: ECDSA_SCHEMES,
        aead_alg: &aead::TLS12_AES_128_GCM,
    });

/// TLS 1.2 `ECDHE-ECDSA-AES256-GCM-SHA384`.
pub static TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: SupportedCipherSuite =
    SupportedCipherSuite::Tls12(&Tls12CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            hash_provider: &hash::SHA384,
            confidentiality_limit: GCM_LIMIT,
        },
        prf_provider: &hash::PRF_SHA384,
        kx: KeyExchangeAlgorithm::ECDHE,
        sign: ECDSA_SCHEMES,
        aead_alg: &aead::TLS12_AES_256_GCM,
    });

/// TLS 1.2 `ECDHE-ECDSA-CHACHA20-POLY1305`.
pub static TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls12(&Tls12CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            hash_provider: &hash::SHA256,
            confidentiality_limit: u64::MAX,
        },
        prf_provider: &hash::PRF_SHA256,
        kx: KeyExchangeAlgorithm::ECDHE,
        sign: ECDSA_SCHEMES,
        aead_alg: &aead::TLS12_CHACHA20_POLY1305,
    });
