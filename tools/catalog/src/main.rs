//! `khttp-catalog`: writes a driver package's catalog file on any host, as the WDK's inf2cat
//! does on Windows (`inf2cat /driver:<package> /os:10_X64`), for `driver/linux/package.sh`.
//!
//! ```text
//! khttp-catalog write  <package>/khttp.cat <package>/khttp.inf <package>/khttp.sys
//! khttp-catalog verify <package>/khttp.cat <package>/khttp.inf <package>/khttp.sys
//! khttp-catalog list   <package>/khttp.cat
//! ```
//!
//! `write` hashes each file (SHA-256; the Authenticode image hash for a PE image, the hash of
//! the bytes otherwise), checks each INF as inf2cat would (stamped, `CatalogFile=` names this
//! catalog, every `[SourceDisksFiles]` entry is a member), and writes an unsigned catalog
//! version 2 atomically (a temporary file, then a rename). The catalog is then signed by
//! osslsigncode (`package.sh`) as signtool signs it on Windows. `verify` reads a catalog back,
//! signed or not, and checks that each file is a member under its name with its current hash;
//! `list` prints the members.
//!
//! The catalog's structure, its object identifiers and where each fact comes from are in
//! `tools/catalog/README.md` and in the `asn1` and `catalog` modules. Sources: Microsoft's
//! documentation of `CTL_INFO`, `CTL_ENTRY`, `CTL_USAGE`, `SPC_INDIRECT_DATA_CONTENT`,
//! `CryptCATPutAttrInfo`, `CRYPTCATMEMBER`, MakeCat and `New-FileCatalog` (learn.microsoft.com),
//! the PE format specification's Authenticode image hash (appendix A), and osslsigncode
//! (github.com/mtrojnar/osslsigncode: `cat.c`, `osslsigncode.h`, `pe.c`, and the makecat-made
//! `tests/files/unsigned.cat`). Read for facts; no code was taken from them.
//!
//! `ThisUpdate` is the current time, or `SOURCE_DATE_EPOCH` when set, so that a build can be
//! reproduced byte for byte. Errors are one line on standard error and a non-zero exit.

mod asn1;
mod catalog;
mod inf;
mod pe;

use catalog::{Kind, Member};
use der::asn1::UtcTime;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

const USAGE: &str =
    "usage: khttp-catalog write|verify <catalog.cat> <file>... | list <catalog.cat>";

fn file_name(path: &str) -> Result<String, String> {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{path} does not end in a file name"))
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Hashes the file at `path` as a catalog member.
fn member(path: &str) -> Result<(Member, Vec<u8>), String> {
    let bytes = read(path)?;
    let (kind, digest) = if pe::is_pe(&bytes) {
        let digest = pe::authenticode_sha256(&bytes).map_err(|e| format!("{path}: {e}"))?;
        (Kind::Pe, digest)
    } else {
        (Kind::Flat, Sha256::digest(&bytes).into())
    };
    let name = file_name(path)?;
    Ok((Member { name, kind, digest }, bytes))
}

fn describe(m: &Member) -> String {
    let kind = match m.kind {
        Kind::Pe => "PE image, Authenticode SHA-256",
        Kind::Flat => "file, SHA-256",
    };
    format!("{}  ({kind})  {}", m.name, m.tag())
}

fn this_update() -> Result<UtcTime, String> {
    let since_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .map_err(|_| format!("SOURCE_DATE_EPOCH is not a number of seconds: {s}"))?,
        ),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_owned())?,
    };
    UtcTime::from_unix_duration(Duration::from_secs(since_epoch.as_secs()))
        .map_err(|_| "the time is outside UTCTime's 1970-2049".to_owned())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// that `path` is either the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file name", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

fn write(cat: &str, files: &[String]) -> Result<(), String> {
    let catalog_name = file_name(cat)?;
    let mut members: Vec<Member> = Vec::new();
    let mut infs = Vec::new();
    for path in files {
        let (m, bytes) = member(path)?;
        if members.iter().any(|o| o.name.eq_ignore_ascii_case(&m.name)) {
            return Err(format!("{} is given twice", m.name));
        }
        if Path::new(&m.name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("inf"))
        {
            let text = String::from_utf8(bytes).map_err(|_| {
                format!("{path} is not ASCII or UTF-8 text (UTF-16 INFs are not read)")
            })?;
            infs.push((m.name.clone(), text));
        }
        members.push(m);
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    for (name, text) in &infs {
        inf::check(name, text, &catalog_name, &names)?;
    }
    let der = catalog::write(&members, this_update()?)
        .map_err(|e| format!("cannot encode the catalog: {e}"))?;
    write_atomically(Path::new(cat), &der)?;
    for m in &members {
        println!("{}", describe(m));
    }
    println!(
        "wrote {cat} ({} member{}, catalog version 2, OSAttr {})",
        members.len(),
        if members.len() == 1 { "" } else { "s" },
        catalog::OS_ATTR
    );
    Ok(())
}

fn verify(cat: &str, files: &[String]) -> Result<(), String> {
    let parsed = catalog::read(&read(cat)?).map_err(|e| format!("{cat}: {e}"))?;
    for path in files {
        let (m, _) = member(path)?;
        if !parsed
            .members
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&m.name) && c.digest == m.digest)
        {
            return Err(format!(
                "{}: hash {} is not in {cat} under that name",
                m.name,
                m.tag()
            ));
        }
        println!("{}: listed", describe(&m));
    }
    let state = if parsed.signed { "signed" } else { "unsigned" };
    println!(
        "{cat}: {} files listed with their hashes ({state} catalog)",
        files.len()
    );
    Ok(())
}

fn list(cat: &str) -> Result<(), String> {
    let parsed = catalog::read(&read(cat)?).map_err(|e| format!("{cat}: {e}"))?;
    let id: String = parsed
        .ctl
        .list_identifier
        .iter()
        .flat_map(|i| i.as_bytes())
        .map(|b| format!("{b:02X}"))
        .collect();
    let state = if parsed.signed { "signed" } else { "unsigned" };
    println!(
        "{cat}: {state} catalog version 2, list identifier {id}, this update {}",
        parsed.ctl.this_update
    );
    for m in &parsed.members {
        println!("{}", describe(m));
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, cat, files @ ..] if cmd == "write" && !files.is_empty() => write(cat, files),
        [cmd, cat, files @ ..] if cmd == "verify" && !files.is_empty() => verify(cat, files),
        [cmd, cat] if cmd == "list" => list(cat),
        _ => Err(USAGE.to_owned()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("khttp-catalog: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("khttp-catalog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn s(p: &Path) -> String {
        p.to_str().expect("utf-8 path").to_owned()
    }

    #[test]
    fn write_then_verify_a_package() {
        let dir = scratch("pkg");
        let inf = dir.join("khttp.inf");
        let sys = dir.join("khttp.sys");
        let cat = dir.join("khttp.cat");
        fs::write(
            &inf,
            "[Version]\nCatalogFile=khttp.cat\n[SourceDisksFiles]\nkhttp.sys=1\n",
        )
        .expect("inf");
        fs::write(&sys, pe::tests::tiny_pe()).expect("sys");
        let files = [s(&inf), s(&sys)];
        run(&["write".into(), s(&cat), files[0].clone(), files[1].clone()]).expect("write");
        run(&["verify".into(), s(&cat), files[0].clone(), files[1].clone()]).expect("verify");
        run(&["list".into(), s(&cat)]).expect("list");
        // No temporary file left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        // A changed member no longer verifies.
        let mut pe = pe::tests::tiny_pe();
        pe[0x300] ^= 1;
        fs::write(&sys, pe).expect("sys");
        let e = run(&["verify".into(), s(&cat), s(&sys)]).expect_err("changed");
        assert!(e.starts_with("khttp.sys: hash "), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_are_one_line() {
        let dir = scratch("err");
        let cat = s(&dir.join("khttp.cat"));
        let missing = s(&dir.join("missing.sys"));
        let e = run(&["write".into(), cat.clone(), missing]).expect_err("missing file");
        assert!(e.starts_with("cannot read ") && !e.contains('\n'), "{e}");
        let inf = dir.join("khttp.inf");
        fs::write(&inf, "[Version]\nCatalogFile=other.cat\n").expect("inf");
        let e = run(&["write".into(), cat.clone(), s(&inf)]).expect_err("wrong catalog");
        assert!(e.contains("not khttp.cat"), "{e}");
        assert!(!dir.join("khttp.cat").exists(), "nothing written on error");
        assert_eq!(run(&["write".into(), cat]), Err(USAGE.to_owned()));
        let e = run(&["list".into(), s(&inf)]).expect_err("not a catalog");
        assert!(e.contains("not a catalog"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
