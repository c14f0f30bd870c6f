//! The Authenticode hash of a PE image: the hash a catalog records for a `.sys`, `.dll` or
//! `.exe` member, the same one an embedded Authenticode signature records.
//!
//! The steps are those of "Process for Generating the Authenticode PE Image Hash" in Microsoft's
//! PE format specification (learn.microsoft.com/windows/win32/debug/pe-format, appendix A): hash
//! the headers up to `SizeOfHeaders` without the `CheckSum` field and without the Certificate
//! Table's data directory entry; then each section's raw data, ordered by `PointerToRawData`;
//! then whatever follows the sections, up to the attribute certificate table, which is not
//! hashed and must end the file. So embedding a signature does not change the hash.
//!
//! One addition: a file with no certificate table whose length is not a multiple of 8 is
//! hashed as if padded with zeros to 8 bytes, as osslsigncode does (`pe.c`,
//! `pe_digest_calc_bio`): signing pads the file that way before appending the certificate
//! table, so the hash of the unsigned file equals the hash of the signed one.

use sha2::{Digest, Sha256};

/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: the Certificate Table's index among the data directories.
const CERTIFICATE_TABLE: usize = 4;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn usize_at(data: &[u8], at: usize) -> Option<usize> {
    u32_at(data, at).and_then(|v| usize::try_from(v).ok())
}

/// Where the PE signature is, if `data` is a PE image ("MZ", then "PE\0\0" at `e_lfanew`).
fn pe_offset(data: &[u8]) -> Option<usize> {
    if data.get(..2)? != b"MZ" {
        return None;
    }
    let pe = usize_at(data, 0x3c)?;
    (data.get(pe..pe.checked_add(4)?)? == b"PE\0\0").then_some(pe)
}

/// Whether `data` is a PE image (so its catalog hash is the Authenticode hash).
pub(crate) fn is_pe(data: &[u8]) -> bool {
    pe_offset(data).is_some()
}

/// The offsets the hash skips or stops at.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    checksum: usize,
    cert_entry: usize,
    size_of_headers: usize,
    /// `(PointerToRawData, SizeOfRawData)` of the sections with raw data, in file order.
    sections: Vec<(usize, usize)>,
    /// Where the hashed data ends: the certificate table's offset, or the end of the file.
    end: usize,
    signed: bool,
}

fn layout(data: &[u8]) -> Result<Layout, String> {
    let short = || "the PE headers run past the end of the file".to_owned();
    let pe = pe_offset(data).ok_or("not a PE image (no MZ and PE signatures)")?;
    let coff = pe + 4;
    let sections = usize::from(u16_at(data, coff + 2).ok_or_else(short)?);
    let size_of_optional = usize::from(u16_at(data, coff + 16).ok_or_else(short)?);
    let opt = coff + 20;
    // The data directories follow 96 bytes of PE32 fields or 112 of PE32+ fields.
    let (count_at, dirs) = match u16_at(data, opt).ok_or_else(short)? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        magic => return Err(format!("unknown optional header magic {magic:#x}")),
    };
    let directories = usize_at(data, count_at).ok_or_else(short)?;
    let cert_entry = dirs + 8 * CERTIFICATE_TABLE;
    if directories <= CERTIFICATE_TABLE || cert_entry + 8 > opt + size_of_optional {
        return Err("the optional header has no Certificate Table entry".to_owned());
    }
    let size_of_headers = usize_at(data, opt + 60).ok_or_else(short)?;
    let table = opt + size_of_optional;
    if size_of_headers < table + 40 * sections || size_of_headers > data.len() {
        return Err(format!(
            "SizeOfHeaders {size_of_headers} does not cover the section table"
        ));
    }
    let cert_offset = usize_at(data, cert_entry).ok_or_else(short)?;
    let cert_size = usize_at(data, cert_entry + 4).ok_or_else(short)?;
    let signed = cert_size != 0;
    let end = if signed {
        if cert_offset.checked_add(cert_size) != Some(data.len()) {
            return Err("the attribute certificate table does not end the file".to_owned());
        }
        cert_offset
    } else {
        data.len()
    };
    let mut raw = Vec::with_capacity(sections);
    for i in 0..sections {
        let header = table + 40 * i;
        let size = usize_at(data, header + 16).ok_or_else(short)?;
        let pointer = usize_at(data, header + 20).ok_or_else(short)?;
        if size == 0 {
            continue;
        }
        if pointer.checked_add(size).is_none_or(|stop| stop > end) || pointer < size_of_headers {
            return Err(format!("section {i}'s raw data lies outside the image"));
        }
        raw.push((pointer, size));
    }
    raw.sort_unstable();
    Ok(Layout {
        checksum: opt + 64,
        cert_entry,
        size_of_headers,
        sections: raw,
        end,
        signed,
    })
}

/// The SHA-256 Authenticode hash of the PE image `data`.
pub(crate) fn authenticode_sha256(data: &[u8]) -> Result<[u8; 32], String> {
    let l = layout(data)?;
    let mut hash = Sha256::new();
    hash.update(&data[..l.checksum]);
    hash.update(&data[l.checksum + 4..l.cert_entry]);
    hash.update(&data[l.cert_entry + 8..l.size_of_headers]);
    let mut hashed = l.size_of_headers;
    for &(pointer, size) in &l.sections {
        hash.update(&data[pointer..pointer + size]);
        hashed += size;
    }
    if hashed > l.end {
        return Err("the sections' raw data overlap".to_owned());
    }
    hash.update(&data[hashed..l.end]);
    let rest = data.len() % 8;
    if !l.signed && rest != 0 {
        hash.update(&[0u8; 8][..8 - rest]);
    }
    Ok(hash.finalize().into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small PE32+ image: headers in 0x200 bytes, two sections of 0x200 bytes each (listed in
    /// reverse file order, which the hash must sort), no certificate table.
    pub(crate) fn tiny_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 0x600];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        pe[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes()); // Machine: AMD64
        pe[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes()); // NumberOfSections
        pe[coff + 16..coff + 18].copy_from_slice(&0xf0u16.to_le_bytes()); // SizeOfOptionalHeader
        pe[coff + 18..coff + 20].copy_from_slice(&0x22u16.to_le_bytes()); // Characteristics
        let opt = coff + 20;
        pe[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes()); // PE32+
        pe[opt + 16..opt + 20].copy_from_slice(&0x1000u32.to_le_bytes()); // AddressOfEntryPoint
        pe[opt + 24..opt + 32].copy_from_slice(&0x1_4000_0000u64.to_le_bytes()); // ImageBase
        pe[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
        pe[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
        pe[opt + 40..opt + 42].copy_from_slice(&6u16.to_le_bytes()); // MajorOperatingSystemVersion
        pe[opt + 48..opt + 50].copy_from_slice(&6u16.to_le_bytes()); // MajorSubsystemVersion
        pe[opt + 56..opt + 60].copy_from_slice(&0x3000u32.to_le_bytes()); // SizeOfImage
        pe[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        pe[opt + 64..opt + 68].copy_from_slice(&0x1234_5678u32.to_le_bytes()); // CheckSum
        pe[opt + 68..opt + 70].copy_from_slice(&1u16.to_le_bytes()); // Subsystem: native
        pe[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes()); // NumberOfRvaAndSizes
        let table = opt + 0xf0;
        for (i, (name, rva, pointer)) in [
            (b".data\0\0\0", 0x2000u32, 0x400u32),
            (b".text\0\0\0", 0x1000, 0x200),
        ]
        .into_iter()
        .enumerate()
        {
            let s = table + 40 * i;
            pe[s..s + 8].copy_from_slice(name);
            pe[s + 8..s + 12].copy_from_slice(&0x200u32.to_le_bytes()); // VirtualSize
            pe[s + 12..s + 16].copy_from_slice(&rva.to_le_bytes());
            pe[s + 16..s + 20].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfRawData
            pe[s + 20..s + 24].copy_from_slice(&pointer.to_le_bytes());
        }
        for (i, byte) in pe[0x200..].iter_mut().enumerate() {
            *byte = (i * 7 % 251) as u8;
        }
        pe
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The expected value is what osslsigncode 2.9 computes for the same bytes (the
    /// "Calculated message digest" of `osslsigncode verify` on this image signed with
    /// `-h sha256`), so this checks the implementation against another one.
    #[test]
    fn tiny_pe_hash_matches_osslsigncode() {
        let digest = authenticode_sha256(&tiny_pe()).expect("hash");
        assert_eq!(hex(&digest), TINY_PE_SHA256);
    }

    pub(crate) const TINY_PE_SHA256: &str =
        "ED497D5469B56627A6DBABDC5136970962AE7967D99481FE648E989F429F6F3D";

    #[test]
    fn checksum_and_certificate_table_are_not_hashed() {
        let pe = tiny_pe();
        let digest = authenticode_sha256(&pe).expect("hash");
        let mut changed = pe.clone();
        changed[0x84 + 20 + 64] ^= 0xff; // CheckSum
        assert_eq!(authenticode_sha256(&changed).expect("hash"), digest);
        // Append an 8-byte "certificate table" and point the directory entry at it.
        let mut signed = pe;
        let cert_entry = 0x84 + 20 + 112 + 32;
        signed[cert_entry..cert_entry + 4].copy_from_slice(&0x600u32.to_le_bytes());
        signed[cert_entry + 4..cert_entry + 8].copy_from_slice(&8u32.to_le_bytes());
        signed.extend_from_slice(&[8, 0, 0, 0, 0, 2, 2, 0]);
        assert_eq!(authenticode_sha256(&signed).expect("hash"), digest);
    }

    #[test]
    fn headers_and_sections_are_hashed() {
        let pe = tiny_pe();
        let digest = authenticode_sha256(&pe).expect("hash");
        for at in [0x2, 0x84 + 20 + 60 - 4, 0x1ff, 0x200, 0x3ff, 0x400, 0x5ff] {
            let mut changed = pe.clone();
            changed[at] ^= 0x01;
            assert_ne!(
                authenticode_sha256(&changed).expect("hash"),
                digest,
                "byte {at:#x}"
            );
        }
    }

    #[test]
    fn trailing_data_is_hashed_and_padded_to_eight() {
        let mut pe = tiny_pe();
        let digest = authenticode_sha256(&pe).expect("hash");
        pe.extend_from_slice(&[1, 2, 3]);
        let three = authenticode_sha256(&pe).expect("hash");
        assert_ne!(three, digest);
        pe.extend_from_slice(&[0; 5]);
        assert_eq!(authenticode_sha256(&pe).expect("hash"), three);
    }

    /// Whatever a header byte holds, the hash is a value or an error, never a panic.
    #[test]
    fn no_header_byte_makes_it_panic() {
        let pe = tiny_pe();
        for at in 0..0x200 {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut changed = pe.clone();
                changed[at] = value;
                let _ = authenticode_sha256(&changed);
                let _ = authenticode_sha256(&changed[..0x1f0]);
            }
        }
    }

    #[test]
    fn malformed_images_are_errors() {
        assert!(authenticode_sha256(b"MZ").is_err());
        assert!(authenticode_sha256(b"not a PE image at all").is_err());
        let pe = tiny_pe();
        assert!(
            authenticode_sha256(&pe[..0x300]).is_err(),
            "truncated section"
        );
        let mut bad = pe.clone();
        bad[0x84 + 20..0x84 + 22].copy_from_slice(&0x999u16.to_le_bytes());
        assert!(authenticode_sha256(&bad).is_err(), "bad magic");
        let mut bad = pe;
        let cert_entry = 0x84 + 20 + 112 + 32;
        bad[cert_entry..cert_entry + 4].copy_from_slice(&0x100u32.to_le_bytes());
        bad[cert_entry + 4..cert_entry + 8].copy_from_slice(&8u32.to_le_bytes());
        assert!(
            authenticode_sha256(&bad).is_err(),
            "certificate table inside the image"
        );
        assert!(!is_pe(b"MZ\0\0"));
    }
}
