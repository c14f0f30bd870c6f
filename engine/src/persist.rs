//! The persisted configuration as text: reservations, the IP listen list and limits (the cache
//! is volatile). khttpd keeps it in a file; the driver in a registry value under its
//! service key's `Parameters`. One item a line, tab-separated, so an operator can read it:
//!
//! ```text
//! urlacl<TAB>http://+:8080/<TAB>user:alice
//! iplisten<TAB>127.0.0.1
//! limit<TAB>max-headers<TAB>100
//! ```

use alloc::string::String;

use crate::error::CtlError;
use crate::limits::Limits;
use crate::site::Site;

/// The saved form of `site`'s configuration: reservations, the IP listen list and the limits
/// that differ from the defaults. `None` when memory ran out (the driver renders this from
/// every configuration IOCTL, where an allocation failure must not panic: issue #22, defect
/// 5); the caller then keeps what was saved before.
#[must_use]
pub fn render(site: &Site) -> Option<String> {
    let mut w = Fallible(String::new());
    write_state(&mut w, site).ok()?;
    Some(w.0)
}

/// A `String` writer whose every append reserves fallibly.
struct Fallible(String);

impl core::fmt::Write for Fallible {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.try_reserve(s.len()).map_err(|_| core::fmt::Error)?;
        self.0.push_str(s);
        Ok(())
    }
}

fn write_state(w: &mut Fallible, site: &Site) -> core::fmt::Result {
    use core::fmt::Write;
    w.write_str("# khttp state: reservations, IP listen list, limits.\n")?;
    for r in site.namespace().iter() {
        writeln!(
            w,
            "urlacl\t{}\t{}",
            r.prefix,
            r.acl.as_deref().unwrap_or("")
        )?;
        if let Some(v) = r.cache_control_value() {
            writeln!(w, "policy\t{}\t{v}", r.prefix)?;
        }
    }
    for ip in site.iplisten() {
        writeln!(w, "iplisten\t{ip}")?;
    }
    let defaults = Limits::default();
    for name in Limits::names() {
        let v = site.limits().get(name);
        if v != defaults.get(name) {
            writeln!(w, "limit\t{name}\t{}", v.unwrap_or(0))?;
        }
    }
    Ok(())
}

/// Why a saved configuration could not be applied: the 1-based line and the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: &'static str,
}

/// Applies saved configuration text to `site`.
///
/// # Errors
/// The first line that cannot be applied.
pub fn apply(text: &str, site: &mut Site) -> Result<(), LoadError> {
    for (i, line) in text.lines().enumerate() {
        let fail = |message: &'static str| LoadError {
            line: i.saturating_add(1),
            message,
        };
        let ctl = |e: CtlError| fail(e.message());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("urlacl"), Some(prefix), Some(acl), None) => {
                site.reserve(prefix, Some(acl).filter(|a| !a.is_empty()))
                    .map_err(ctl)?;
            }
            (Some("policy"), Some(prefix), Some(value), None) => {
                site.set_policy(prefix, Some(value)).map_err(ctl)?;
            }
            (Some("iplisten"), Some(addr), None, None) => {
                site.iplisten_add(addr).map_err(ctl)?;
            }
            (Some("limit"), Some(name), Some(value), None) => {
                let v = value
                    .parse()
                    .map_err(|_| fail("the limit value is not a number"))?;
                site.set_limit(name, v).map_err(ctl)?;
            }
            _ => return Err(fail("unrecognised line")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{LoadError, apply, render};
    use crate::site::Site;

    #[test]
    fn round_trip_and_errors() {
        let mut s = Site::new();
        s.reserve("http://+:8080/", Some("user:alice")).unwrap();
        s.reserve("http://[::1]:9000/x/", None).unwrap();
        s.set_policy("http://+:8080/", Some("max-age=60")).unwrap();
        s.iplisten_add("127.0.0.1").unwrap();
        s.set_limit("max-headers", 50).unwrap();
        let text = render(&s).unwrap();
        let mut t = Site::new();
        apply(&text, &mut t).unwrap();
        assert_eq!(render(&t).unwrap(), text);
        let err = apply("# c\nurlacl\thttp://+:80/x\t\n", &mut Site::new());
        assert_eq!(
            err,
            Err(LoadError {
                line: 2,
                message: "a URL prefix must end with '/'"
            })
        );
        assert!(apply("bogus\n", &mut Site::new()).is_err());
        assert!(apply("limit\tmax-headers\tlots\n", &mut Site::new()).is_err());
    }
}
