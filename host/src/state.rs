//! Persisted configuration: reservations, the IP listen list and limits, in `STATE_DIR/state`.
//!
//! The file is text, one item a line, tab-separated, so an operator can read it:
//!
//! ```text
//! urlacl<TAB>http://+:8080/<TAB>user:alice
//! iplisten<TAB>127.0.0.1
//! limit<TAB>max-headers<TAB>100
//! ```
//!
//! It is written atomically: a temporary file in the same directory, `fsync`, `rename` over the
//! old one, `fsync` of the directory. A crash leaves the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use khttp_engine::{Limits, Site};

const FILE: &str = "state";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The text of `site`'s persisted configuration.
#[must_use]
pub(crate) fn render(site: &Site) -> String {
    let mut s =
        String::from("# khttpd state: reservations, IP listen list, limits. Written by khttpd.\n");
    for r in site.namespace().iter() {
        s.push_str(&format!(
            "urlacl\t{}\t{}\n",
            r.prefix.to_text(),
            r.acl.as_deref().unwrap_or("")
        ));
    }
    for ip in site.iplisten() {
        s.push_str(&format!("iplisten\t{ip}\n"));
    }
    let defaults = Limits::default();
    for name in Limits::names() {
        let v = site.limits().get(name);
        if v != defaults.get(name) {
            s.push_str(&format!("limit\t{name}\t{}\n", v.unwrap_or(0)));
        }
    }
    s
}

/// Writes `site`'s configuration atomically.
///
/// # Errors
/// Any I/O error; the old file is then still in place.
pub(crate) fn save(dir: &Path, site: &Site) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(render(site).as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path(dir))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Applies the saved configuration to `site`. A missing file is an empty configuration.
///
/// # Errors
/// One line naming the file, the line number and the fault.
pub(crate) fn load(dir: &Path, site: &mut Site) -> Result<(), String> {
    let p = path(dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    for (i, line) in text.lines().enumerate() {
        let fail = |msg: &str| format!("{}:{}: {msg}", p.display(), i + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["urlacl", prefix, acl] => {
                site.reserve(prefix, Some(*acl).filter(|a| !a.is_empty()))
                    .map_err(|e| fail(e.message()))?;
            }
            ["iplisten", addr] => {
                site.iplisten_add(addr).map_err(|e| fail(e.message()))?;
            }
            ["limit", name, value] => {
                let v = value
                    .parse()
                    .map_err(|_| fail("the limit value is not a number"))?;
                site.set_limit(name, v).map_err(|e| fail(e.message()))?;
            }
            _ => return Err(fail("unrecognised line")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use khttp_engine::Site;

    use super::{load, render, save};

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("khttpd-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Site::new();
        s.reserve("http://+:8080/", Some("user:alice")).unwrap();
        s.reserve("http://[::1]:9000/x/", None).unwrap();
        s.iplisten_add("127.0.0.1").unwrap();
        s.set_limit("max-headers", 50).unwrap();
        save(&dir, &s).unwrap();
        let mut t = Site::new();
        load(&dir, &mut t).unwrap();
        assert_eq!(render(&s), render(&t));
        std::fs::write(dir.join("state"), "urlacl\thttp://+:80/x\t\n").unwrap();
        let err = load(&dir, &mut Site::new()).unwrap_err();
        assert!(err.ends_with(":1: a URL prefix must end with '/'"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
