//! A directory tree as cache entries: `cache load DIR --prefix PREFIX` and `khttpd --site`.
//!
//! Every regular file under DIR becomes PREFIX + its relative path, percent-encoded into the
//! canonical form the engine cooks request paths into (so the URL a browser sends finds it);
//! `index.html` is also put at its directory's URL. Symbolic links are followed only to files
//! inside DIR.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// One file to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteFile {
    /// The file on disk.
    pub path: PathBuf,
    /// The URLs to put it at (its own, and for `index.html` also its directory's).
    pub urls: Vec<String>,
    /// The content type from its extension.
    pub content_type: String,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: Option<u64>,
    /// Size in bytes.
    pub len: u64,
}

/// Percent-encodes one path segment into the engine's canonical form: unreserved characters and
/// sub-delimiters stay, everything else becomes `%XX` (upper-case hex).
#[must_use]
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The content type for a file name, with `charset=utf-8` for text.
#[must_use]
pub fn content_type_for(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let ty = mime.essence_str();
    if mime.type_() == mime_guess::mime::TEXT
        || ty == "application/javascript"
        || ty == "application/json"
    {
        format!("{ty}; charset=utf-8")
    } else {
        ty.to_string()
    }
}

/// Modification time of `meta` in Unix seconds.
#[must_use]
pub fn mtime_of(meta: &fs::Metadata) -> Option<u64> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Lists every file under `dir` as entries under `prefix` (which ends with `/`), sorted by path.
///
/// # Errors
/// The directory cannot be read, or `prefix` does not end with `/`.
pub fn walk(dir: &Path, prefix: &str) -> io::Result<Vec<SiteFile>> {
    if !prefix.ends_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the prefix must end with '/'",
        ));
    }
    let root = dir.canonicalize()?;
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.clone(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        names.sort_by_key(fs::DirEntry::file_name);
        for e in names {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue }; // not UTF-8: no URL for it
            let path = e.path();
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !real.starts_with(&root) {
                continue; // a link out of the tree
            }
            let meta = fs::metadata(&real)?;
            let url_rel = format!("{rel}{}", encode_segment(name));
            if meta.is_dir() {
                stack.push((real, format!("{url_rel}/")));
            } else if meta.is_file() {
                let mut urls = vec![format!("{prefix}{url_rel}")];
                if name == "index.html" {
                    urls.push(format!("{prefix}{rel}"));
                }
                out.push(SiteFile {
                    content_type: content_type_for(&path),
                    path,
                    urls,
                    mtime: mtime_of(&meta),
                    len: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.urls[0].cmp(&b.urls[0]));
    Ok(out)
}

/// Writes `bytes` to `dir/name`, mode 0600, atomically; makes `dir` (mode 0700) first.
///
/// # Errors
/// The I/O error; the old file is then still in place.
#[cfg(unix)]
pub fn save_private(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

/// Overwrites `bytes` with zeros before they are freed: buffers that carried a private key's
/// text (SECURITY.md, "Keys"). `black_box` keeps the compiler from dropping the writes as dead;
/// best effort, not a guarantee (copies made elsewhere are not reached).
pub fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::{content_type_for, encode_segment, walk};

    #[test]
    fn encoding() {
        assert_eq!(
            encode_segment("a b#c?d%é.html"),
            "a%20b%23c%3Fd%25%C3%A9.html"
        );
        assert_eq!(encode_segment("ok-._~!$&'()*+,;=:@"), "ok-._~!$&'()*+,;=:@");
        assert_eq!(
            content_type_for("x.html".as_ref()),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type_for("x.png".as_ref()), "image/png");
        assert_eq!(
            content_type_for("x.unknownext".as_ref()),
            "application/octet-stream"
        );
    }

    #[test]
    fn walks_a_tree() {
        let dir = std::env::temp_dir().join(format!("khttpctl-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub dir")).unwrap();
        fs::write(dir.join("index.html"), "i").unwrap();
        fs::write(dir.join("sub dir/index.html"), "j").unwrap();
        fs::write(dir.join("a.css"), "k").unwrap();
        let files = walk(&dir, "http://+:8080/").unwrap();
        let urls: Vec<Vec<String>> = files.iter().map(|f| f.urls.clone()).collect();
        assert_eq!(
            urls,
            [
                vec!["http://+:8080/a.css".to_string()],
                vec!["http://+:8080/index.html".into(), "http://+:8080/".into()],
                vec![
                    "http://+:8080/sub%20dir/index.html".into(),
                    "http://+:8080/sub%20dir/".into()
                ],
            ]
        );
        assert!(walk(&dir, "http://+:8080").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
