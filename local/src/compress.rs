//! Pre-compressed variants, built once at load time (`--compress gzip,br`).

use std::io::Write;

/// A content coding khttpctl can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// gzip, level 9.
    Gzip,
    /// Brotli, quality 11.
    Br,
}

impl Coding {
    /// Parses `gzip` or `br`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "gzip" => Some(Self::Gzip),
            "br" => Some(Self::Br),
            _ => None,
        }
    }
}

/// Compresses `data`; returns `None` when the result would not be smaller (not worth a variant).
#[must_use]
pub fn compress(data: &[u8], coding: Coding) -> Option<Vec<u8>> {
    let out = match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).ok()?;
            e.finish().ok()?
        }
        Coding::Br => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: 11,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &data[..], &mut out, &params).ok()?;
            out
        }
    };
    (out.len() < data.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::{Coding, compress};

    #[test]
    fn round_trips_and_skips_incompressible() {
        let text = "hello hello hello hello hello hello hello hello".repeat(20);
        let gz = compress(text.as_bytes(), Coding::Gzip).unwrap();
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let br = compress(text.as_bytes(), Coding::Br).unwrap();
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
        assert_eq!(back, text.as_bytes());
        assert_eq!(compress(b"x", Coding::Gzip), None);
    }
}
