//! Persisted configuration: reservations, the IP listen list and limits, in `STATE_DIR/state`;
//! and `save_private`, how private files (keys) are written.
//!
//! The text format is the engine's (`khttp_engine::persist`), one item a line:
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

use khttp_engine::Site;
use khttp_engine::persist;

const FILE: &str = "state";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
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
        let text = persist::render(site).ok_or(io::ErrorKind::OutOfMemory)?;
        f.write_all(text.as_bytes())?;
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
    persist::apply(&text, site).map_err(|e| format!("{}:{}: {}", p.display(), e.line, e.message))
}

pub(crate) use khttp_local::files::save_private;

#[cfg(test)]
mod tests {
    use khttp_engine::Site;
    use khttp_engine::persist::render;

    use super::{load, save};

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("khttpd-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Site::new();
        s.reserve("http://+:8080/", Some("user:alice")).unwrap();
        save(&dir, &s).unwrap();
        assert!(
            !dir.join(".state.tmp").exists(),
            "the temporary file was renamed"
        );
        let mut t = Site::new();
        load(&dir, &mut t).unwrap();
        assert_eq!(render(&s), render(&t));
        assert!(render(&s).is_some());
        std::fs::write(dir.join("state"), "urlacl\thttp://+:80/x\t\n").unwrap();
        let err = load(&dir, &mut Site::new()).unwrap_err();
        assert!(
            err.ends_with("state:1: a URL prefix must end with '/'"),
            "{err}"
        );
        assert!(
            load(&dir.join("missing"), &mut Site::new()).is_ok(),
            "no file: empty state"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
