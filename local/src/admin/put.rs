//! A file put as a cache entry (`cache put`, `cache load`, `apply`), with its digest.
//!
//! The digest is a SHA-256 over everything the entry is made from: the body, the content type,
//! the status, the time to live, the extra fields and the codings asked for. It leaves out the
//! file's modification time, so that a copy of an unchanged file (a fleet's deployment tool
//! rewrites files) is not sent again. The server keeps it with the entry and lists it; `apply`
//! compares it to decide what to send.

use khttp_proto::{DIGEST_LEN, PutEntry, Request};
use sha2::{Digest, Sha256};

use super::Control;
use crate::compress::{self, Coding};

/// A file's bytes and what is known of it.
#[derive(Clone, Copy, Debug)]
pub struct LocalFile<'a> {
    /// Its bytes.
    pub data: &'a [u8],
    /// Its content type.
    pub content_type: &'a str,
    /// Its modification time, seconds since the Unix epoch.
    pub mtime: Option<u64>,
}

/// How files are put: status, extra fields, time to live, codings.
#[derive(Clone, Copy, Debug)]
pub struct PutOptions<'a> {
    /// Status code; 0 for 200.
    pub status: u16,
    /// Extra `Name: value` fields (a freshness policy among them).
    pub headers: &'a [String],
    /// Seconds the server keeps the entry.
    pub ttl: Option<u64>,
    /// Compressed variants to build and send.
    pub codings: &'a [Coding],
}

/// Parses `--compress` names (`gzip`, `br`); empty names are skipped.
///
/// # Errors
/// The first unknown name, as one line.
pub fn codings<S: AsRef<str>>(names: &[S]) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for n in names
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| !n.trim().is_empty())
    {
        let c = Coding::parse(n)
            .ok_or_else(|| format!("unknown coding {n:?}: use gzip, br or both"))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The digest of an entry made from `file` with `put` (see the module's documentation).
#[must_use]
pub fn digest(file: &LocalFile<'_>, put: &PutOptions<'_>) -> [u8; DIGEST_LEN] {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, b"khttp entry 1");
    field(&mut h, file.data);
    field(&mut h, file.content_type.as_bytes());
    let status = if put.status == 0 { 200 } else { put.status };
    h.update(status.to_le_bytes());
    h.update(put.ttl.unwrap_or(u64::MAX).to_le_bytes());
    h.update((put.headers.len() as u64).to_le_bytes());
    for line in put.headers {
        field(&mut h, line.as_bytes());
    }
    for c in [Coding::Gzip, Coding::Br] {
        h.update([u8::from(put.codings.contains(&c))]);
    }
    h.finalize().into()
}

/// Puts one file's bytes at each of `urls`, with its digest; returns the bytes stored.
///
/// # Errors
/// A URL the engine's grammar refuses, or the server's refusal, as `URL: why`.
pub fn put_file(
    ctl: &mut dyn Control,
    urls: &[String],
    file: &LocalFile<'_>,
    put: &PutOptions<'_>,
) -> Result<u64, String> {
    let data = file.data;
    let variant = |c: Coding| {
        put.codings
            .contains(&c)
            .then(|| compress::compress(data, c))
            .flatten()
    };
    let (gzip, br) = (variant(Coding::Gzip), variant(Coding::Br));
    let mut direct = Vec::with_capacity(
        data.len() + gzip.as_ref().map_or(0, Vec::len) + br.as_ref().map_or(0, Vec::len),
    );
    direct.extend_from_slice(data);
    direct.extend_from_slice(gzip.as_deref().unwrap_or_default());
    direct.extend_from_slice(br.as_deref().unwrap_or_default());
    let len = |v: &Option<Vec<u8>>| v.as_ref().map(|b| b.len() as u64);
    let digest = digest(file, put);
    let mut stored = 0;
    for url in urls {
        // The server's own URL grammar, checked here so that a bad URL reads the same from both
        // servers: the driver's refusal of a `cache put` carries a status, not the fault.
        khttp_engine::parse_url(url).map_err(|e| format!("{url}: {e}"))?;
        let req = Request::CachePut(PutEntry {
            url,
            content_type: file.content_type,
            status: put.status,
            ttl: put.ttl,
            last_modified: file.mtime,
            headers: put.headers.iter().map(String::as_str).collect(),
            identity_len: data.len() as u64,
            gzip_len: len(&gzip),
            br_len: len(&br),
            digest: Some(digest),
        });
        ctl.call(&req, &direct).map_err(|e| format!("{url}: {e}"))?;
        stored += direct.len() as u64;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::{LocalFile, PutOptions, codings, digest};
    use crate::compress::Coding;

    #[test]
    fn the_digest_covers_every_field_but_the_mtime() {
        let file = LocalFile {
            data: b"hello",
            content_type: "text/plain",
            mtime: Some(1),
        };
        let headers = vec!["Cache-Control: max-age=60".to_string()];
        let put = PutOptions {
            status: 0,
            headers: &headers,
            ttl: None,
            codings: &[],
        };
        let base = digest(&file, &put);
        assert_eq!(
            base,
            digest(
                &LocalFile {
                    mtime: Some(2),
                    ..file
                },
                &put
            )
        );
        assert_eq!(base, digest(&file, &PutOptions { status: 200, ..put }));
        let other = [
            digest(
                &LocalFile {
                    data: b"hellO",
                    ..file
                },
                &put,
            ),
            digest(
                &LocalFile {
                    content_type: "text/html",
                    ..file
                },
                &put,
            ),
            digest(&file, &PutOptions { status: 404, ..put }),
            digest(
                &file,
                &PutOptions {
                    ttl: Some(5),
                    ..put
                },
            ),
            digest(
                &file,
                &PutOptions {
                    headers: &[],
                    ..put
                },
            ),
            digest(
                &file,
                &PutOptions {
                    codings: &[Coding::Br],
                    ..put
                },
            ),
        ];
        for (i, d) in other.iter().enumerate() {
            assert_ne!(&base, d, "field {i} is not covered");
        }
    }

    #[test]
    fn codings_are_parsed_once_each() {
        assert_eq!(
            codings(&["gzip", "br", "gzip", " "]),
            Ok(vec![Coding::Gzip, Coding::Br])
        );
        assert!(codings(&["zstd"]).unwrap_err().contains("zstd"));
    }
}
