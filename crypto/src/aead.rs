//! The record ciphers: AES-GCM (NIST SP 800-38D) and ChaCha20-Poly1305 (RFC 8439), in TLS
//! 1.3's record format (RFC 8446 §5.2-5.3: the content type inside, the nonce the IV XOR the
//! sequence number) and TLS 1.2's (RFC 5288 §3: an 8-byte explicit nonce before each GCM
//! record; RFC 7905 §2: ChaCha20-Poly1305 with TLS 1.3's nonce).

use alloc::boxed::Box;
use core::marker::PhantomData;

use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, KeyBlockShape, MessageDecrypter,
    MessageEncrypter, NONCE_LEN, Nonce as TlsNonce, OutboundOpaqueMessage, OutboundPlainMessage,
    PrefixedPayload, Tls12AeadAlgorithm, Tls13AeadAlgorithm, UnsupportedOperationError,
    make_tls12_aad, make_tls13_aad,
};
use rustls::{ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion};

/// Every AEAD here has a 16-byte tag.
const TAG: usize = 16;

/// TLS 1.2 GCM's explicit nonce, sent before each record.
const EXPLICIT: usize = 8;

/// The most plaintext a record may carry (RFC 8446 §5.1, RFC 5246 §6.2.1).
const MAX_FRAGMENT: usize = 16_384;

/// An AEAD with a 12-byte nonce and a 16-byte tag, keyed from a slice.
pub(crate) trait Cipher: AeadInOut + KeyInit + Send + Sync + 'static {
    /// Its key's length.
    const KEY_LEN: usize;
}

impl Cipher for Aes128Gcm {
    const KEY_LEN: usize = 16;
}

impl Cipher for Aes256Gcm {
    const KEY_LEN: usize = 32;
}

impl Cipher for ChaCha20Poly1305 {
    const KEY_LEN: usize = 32;
}

/// A cipher keyed with `key`; `None` when the key's length is wrong, which rustls, sizing
/// keys from `key_len`/`key_block_shape`, never does. Records then fail rather than panic.
fn keyed<A: Cipher>(key: &[u8]) -> Option<A> {
    A::new_from_slice(key).ok()
}

/// Seals `data` in place under `nonce` and `aad`; returns the tag.
fn seal<A: Cipher>(
    cipher: Option<&A>,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
) -> Result<Tag<A>, Error> {
    let cipher = cipher.ok_or(Error::EncryptError)?;
    let nonce = Nonce::<A>::try_from(&nonce[..]).map_err(|_| Error::EncryptError)?;
    cipher
        .encrypt_inout_detached(&nonce, aad, data.into())
        .map_err(|_| Error::EncryptError)
}

/// Opens `data` in place under `nonce` and `aad`, checking `tag`.
fn open<A: Cipher>(
    cipher: Option<&A>,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> Result<(), Error> {
    let cipher = cipher.ok_or(Error::DecryptError)?;
    let nonce = Nonce::<A>::try_from(&nonce[..]).map_err(|_| Error::DecryptError)?;
    let tag = Tag::<A>::try_from(tag).map_err(|_| Error::DecryptError)?;
    cipher
        .decrypt_inout_detached(&nonce, aad, data.into(), &tag)
        .map_err(|_| Error::DecryptError)
}

/// `A` in TLS 1.3.
pub(crate) struct Tls13<A>(PhantomData<fn() -> A>);

pub(crate) static AES_128_GCM: Tls13<Aes128Gcm> = Tls13(PhantomData);
pub(crate) static AES_256_GCM: Tls13<Aes256Gcm> = Tls13(PhantomData);
pub(crate) static CHACHA20_POLY1305: Tls13<ChaCha20Poly1305> = Tls13(PhantomData);

impl<A: Cipher> Tls13AeadAlgorithm for Tls13<A> {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Tls13Records::<A> {
            cipher: keyed(key.as_ref()),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Tls13Records::<A> {
            cipher: keyed(key.as_ref()),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        A::KEY_LEN
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        // For kernel TLS offload, which no host here does.
        Err(UnsupportedOperationError)
    }
}

/// One direction of a TLS 1.3 connection's records.
struct Tls13Records<A> {
    cipher: Option<A>,
    iv: Iv,
}

impl<A: Cipher> MessageEncrypter for Tls13Records<A> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let nonce = TlsNonce::new(&self.iv, seq).0;
        let tag = seal(
            self.cipher.as_ref(),
            nonce,
            &make_tls13_aad(total),
            payload.as_mut(),
        )?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            // RFC 8446 §5.1: the legacy record version of every TLS 1.3 record.
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len.saturating_add(1 + TAG)
    }
}

impl<A: Cipher> MessageDecrypter for Tls13Records<A> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        let len = payload.len();
        let Some(plain) = len.checked_sub(TAG) else {
            return Err(Error::DecryptError);
        };
        let nonce = TlsNonce::new(&self.iv, seq).0;
        let (data, tag) = payload.split_at_mut(plain);
        open(self.cipher.as_ref(), nonce, &make_tls13_aad(len), data, tag)?;
        payload.truncate(plain);
        msg.into_tls13_unpadded_message()
    }
}

/// `A` as TLS 1.2's AES-GCM (explicit nonces).
pub(crate) struct Tls12Gcm<A>(PhantomData<fn() -> A>);

pub(crate) static TLS12_AES_128_GCM: Tls12Gcm<Aes128Gcm> = Tls12Gcm(PhantomData);
pub(crate) static TLS12_AES_256_GCM: Tls12Gcm<Aes256Gcm> = Tls12Gcm(PhantomData);

/// `ChaCha20Poly1305` in TLS 1.2 (RFC 7905: TLS 1.3's nonce, no explicit part).
pub(crate) struct Tls12ChaCha;

pub(crate) static TLS12_CHACHA20_POLY1305: Tls12ChaCha = Tls12ChaCha;

/// The 12-byte IV from `salt` (4 bytes) and `extra` (8), or `iv` whole (12 bytes); rustls
/// sizes them from [`KeyBlockShape`], and anything else gives an IV of zeros, which fails
/// every record against a peer.
fn iv_of(parts: &[&[u8]]) -> Iv {
    let mut iv = [0u8; NONCE_LEN];
    let mut at = 0;
    for part in parts {
        let end = at + part.len();
        if let Some(dst) = iv.get_mut(at..end) {
            dst.copy_from_slice(part);
        }
        at = end;
    }
    Iv::new(iv)
}

impl<A: Cipher> Tls12AeadAlgorithm for Tls12Gcm<A> {
    fn encrypter(&self, key: AeadKey, iv: &[u8], extra: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Tls12GcmRecords::<A> {
            cipher: keyed(key.as_ref()),
            iv: iv_of(&[iv, extra]),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        Box::new(Tls12GcmRecords::<A> {
            cipher: keyed(key.as_ref()),
            iv: iv_of(&[iv, &[0; EXPLICIT]]),
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: A::KEY_LEN,
            fixed_iv_len: 4,
            explicit_nonce_len: EXPLICIT,
        }
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: &[u8],
        _explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

/// One direction of a TLS 1.2 AES-GCM connection's records. Sending, the explicit nonce is
/// the IV's last 8 bytes XOR the sequence number (unique per record, as RFC 5288 §3 asks);
/// receiving, it is read from the record.
struct Tls12GcmRecords<A> {
    cipher: Option<A>,
    iv: Iv,
}

impl<A: Cipher> MessageEncrypter for Tls12GcmRecords<A> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        let nonce = TlsNonce::new(&self.iv, seq).0;
        let aad = make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len());
        payload.extend_from_slice(nonce.get(4..).unwrap_or_default());
        payload.extend_from_chunks(&msg.payload);
        let data = payload.as_mut().get_mut(EXPLICIT..).unwrap_or_default();
        let tag = seal(self.cipher.as_ref(), nonce, &aad, data)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len.saturating_add(EXPLICIT + TAG)
    }
}

impl<A: Cipher> MessageDecrypter for Tls12GcmRecords<A> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let len = msg.payload.len();
        let Some(plain) = len.checked_sub(EXPLICIT + TAG) else {
            return Err(Error::DecryptError);
        };
        if plain > MAX_FRAGMENT {
            return Err(Error::PeerSentOversizedRecord);
        }
        let mut nonce = [0u8; NONCE_LEN];
        let salt = self.iv.as_ref().get(..4).unwrap_or_default();
        let explicit = msg.payload.get(..EXPLICIT).unwrap_or_default();
        nonce.get_mut(..4).unwrap_or_default().copy_from_slice(salt);
        nonce
            .get_mut(4..)
            .unwrap_or_default()
            .copy_from_slice(explicit);
        let aad = make_tls12_aad(seq, msg.typ, msg.version, plain);
        let (head, tag) = msg.payload.split_at_mut(EXPLICIT + plain);
        let data = head.get_mut(EXPLICIT..).unwrap_or_default();
        open(self.cipher.as_ref(), nonce, &aad, data, tag)?;
        Ok(msg.into_plain_message_range(EXPLICIT..EXPLICIT + plain))
    }
}

impl Tls12AeadAlgorithm for Tls12ChaCha {
    fn encrypter(&self, key: AeadKey, iv: &[u8], _extra: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Tls12ChaChaRecords {
            cipher: keyed(key.as_ref()),
            iv: iv_of(&[iv]),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        Box::new(Tls12ChaChaRecords {
            cipher: keyed(key.as_ref()),
            iv: iv_of(&[iv]),
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: 32,
            fixed_iv_len: NONCE_LEN,
            explicit_nonce_len: 0,
        }
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: &[u8],
        _explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

/// One direction of a TLS 1.2 ChaCha20-Poly1305 connection's records.
struct Tls12ChaChaRecords {
    cipher: Option<ChaCha20Poly1305>,
    iv: Iv,
}

impl MessageEncrypter for Tls12ChaChaRecords {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        let nonce = TlsNonce::new(&self.iv, seq).0;
        let aad = make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len());
        payload.extend_from_chunks(&msg.payload);
        let tag = seal(self.cipher.as_ref(), nonce, &aad, payload.as_mut())?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len.saturating_add(TAG)
    }
}

impl MessageDecrypter for Tls12ChaChaRecords {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let len = msg.payload.len();
        let Some(plain) = len.checked_sub(TAG) else {
            return Err(Error::DecryptError);
        };
        if plain > MAX_FRAGMENT {
            return Err(Error::PeerSentOversizedRecord);
        }
        let nonce = TlsNonce::new(&self.iv, seq).0;
        let aad = make_tls12_aad(seq, msg.typ, msg.version, plain);
        let (data, tag) = msg.payload.split_at_mut(plain);
        open(self.cipher.as_ref(), nonce, &aad, data, tag)?;
        msg.payload.truncate(plain);
        Ok(msg.into_plain_message())
    }
}
