//! Framing for stream transports (khttpd's Unix socket): what `DeviceIoControl` does on Windows.
//!
//! ```text
//! request frame = "KHTP" code:u32 input_len:u32 direct_len:u32 output_cap:u32  input  direct
//! reply frame   = status:u32 output_len:u32  output
//! ```
//!
//! `output_cap` plays the role of DeviceIoControl's output buffer size: a reply that does not
//! fit comes back as [`crate::Status::BufferTooSmall`] with only a header whose `size` says how
//! much room it needs.

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"KHTP";
/// Bytes of a request frame header.
pub const REQUEST_LEN: usize = 20;
/// Bytes of a reply frame header.
pub const REPLY_LEN: usize = 8;
/// Largest input buffer accepted (requests are small; bodies travel in the direct buffer).
pub const MAX_INPUT: u32 = 1 << 20;

/// A request frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    /// The control code.
    pub code: u32,
    /// Bytes of input following the header.
    pub input_len: u32,
    /// Bytes of direct data following the input.
    pub direct_len: u32,
    /// The most reply bytes the caller accepts.
    pub output_cap: u32,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([
        *s.first()?,
        *s.get(1)?,
        *s.get(2)?,
        *s.get(3)?,
    ]))
}

impl RequestFrame {
    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        let fields = [self.code, self.input_len, self.direct_len, self.output_cap];
        b[..4].copy_from_slice(&MAGIC);
        for (chunk, v) in b[4..].chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes a header; `None` if the magic is wrong or the input is over [`MAX_INPUT`].
    #[must_use]
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Option<Self> {
        if b.get(..4)? != MAGIC {
            return None;
        }
        let f = Self {
            code: le32(b, 4)?,
            input_len: le32(b, 8)?,
            direct_len: le32(b, 12)?,
            output_cap: le32(b, 16)?,
        };
        (f.input_len <= MAX_INPUT).then_some(f)
    }
}

/// Encodes a reply frame header.
#[must_use]
pub fn encode_reply(status: u32, output_len: u32) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[..4].copy_from_slice(&status.to_le_bytes());
    b[4..].copy_from_slice(&output_len.to_le_bytes());
    b
}

/// Decodes a reply frame header into (status, output length).
#[must_use]
pub fn decode_reply(b: &[u8; REPLY_LEN]) -> (u32, u32) {
    (le32(b, 0).unwrap_or(u32::MAX), le32(b, 4).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::{RequestFrame, decode_reply, encode_reply};

    #[test]
    fn round_trip() {
        let f = RequestFrame {
            code: 0x8337_6000,
            input_len: 8,
            direct_len: 3,
            output_cap: 65_536,
        };
        assert_eq!(RequestFrame::decode(&f.encode()), Some(f));
        let mut bad = f.encode();
        bad[0] = b'X';
        assert_eq!(RequestFrame::decode(&bad), None);
        let big = RequestFrame {
            input_len: u32::MAX,
            ..f
        };
        assert_eq!(RequestFrame::decode(&big.encode()), None);
        assert_eq!(decode_reply(&encode_reply(4, 9)), (4, 9));
    }
}
