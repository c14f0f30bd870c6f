//! A `khttpctl apply` file: what a server should hold, declared in TOML.
//!
//! ```toml
//! listen = ["127.0.0.1"]            # the IP listen list; absent or empty: every address
//!
//! [limits]                          # any of `khttpctl limits show`
//! idle-timeout = 30
//!
//! [[reservation]]                   # khttpctl urlacl add
//! prefix = "http://+:8080/"
//! user = "www-data"                 # or sddl = "D:(A;;GX;;;WD)"
//! max-age = 60                      # or no-cache = true, or immutable = true
//!
//! [[content]]                       # khttpctl cache load
//! dir = "site"                      # relative to this file
//! prefix = "http://+:8080/"
//! ttl = 3600                        # seconds khttp keeps the entries
//! compress = ["gzip", "br"]
//! max-age = 300                     # the entries' own policy, over the reservation's
//!
//! [[sslcert]]                       # khttpctl sslcert add
//! binding = "ipport=0.0.0.0:443"    # or hostnameport=NAME:PORT
//! cert = "fullchain.pem"            # relative to this file
//! key = "privkey.pem"
//!
//! [[content]]                       # khttpctl cache put
//! file = "robots.txt"
//! url = "http://+:8080/robots.txt"
//! content-type = "text/plain"       # default: from the extension
//! status = 200
//! headers = ["X-Robots-Tag: noindex"]
//! ```
//!
//! [`Config::parse`] checks everything it can without a server (syntax, types, unknown keys,
//! prefixes and URLs in the engine's grammar, addresses, codings, policies, duplicates) and
//! names the file, line and field of the first fault. Limits are checked against the
//! server's own table when the plan is made.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::put::codings;
use crate::compress::Coding;

/// Where a declaration is: its line and the field's path (`reservation[2].prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// The line, from 1.
    pub line: usize,
    /// The field, as a path into the file.
    pub field: String,
}

/// A fault in a file, or in applying one: `FILE:LINE: FIELD: why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as named.
    pub file: String,
    /// Where in it, when known.
    pub at: Option<At>,
    /// Why, in one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) if at.field.is_empty() => {
                write!(f, "{}:{}: {}", self.file, at.line, self.message)
            }
            Some(at) => write!(
                f,
                "{}:{}: {}: {}",
                self.file, at.line, at.field, self.message
            ),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One declaration and where it is.
#[derive(Clone, Debug)]
pub struct Decl<T> {
    /// Where.
    pub at: At,
    /// What.
    pub value: T,
}

/// A URL reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The prefix, in the engine's canonical form.
    pub prefix: String,
    /// `user:NAME` or `sddl:SDDL`, as `urlacl add` sends it.
    pub acl: Option<String>,
    /// The freshness policy (a `Cache-Control` value).
    pub cache_control: Option<String>,
}

/// Where content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Every file under a directory, at a prefix (`cache load`).
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The prefix, as written (ending in `/`).
        prefix: String,
    },
    /// One file at one URL (`cache put`).
    File {
        /// The file.
        file: PathBuf,
        /// The URL.
        url: String,
        /// Its content type; `None`: from the extension.
        content_type: Option<String>,
    },
}

/// Content to hold in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The files.
    pub source: Source,
    /// Status code; 0 for 200.
    pub status: u16,
    /// Extra `Name: value` fields, the freshness policy among them.
    pub headers: Vec<String>,
    /// Seconds the server keeps the entries.
    pub ttl: Option<u64>,
    /// Compressed variants.
    pub codings: Vec<Coding>,
}

/// A certificate binding (`sslcert add`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sslcert {
    /// `ipport=IP:PORT` or `hostnameport=NAME:PORT`, as written.
    pub binding: String,
    /// The chain's file.
    pub cert: PathBuf,
    /// The key's file.
    pub key: PathBuf,
}

/// A checked file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file, as named (for messages).
    pub file: String,
    /// The IP listen list, if the file declares one.
    pub listen: Option<Vec<Decl<IpAddr>>>,
    /// Limits by name.
    pub limits: Vec<Decl<(String, u64)>>,
    /// Reservations.
    pub reservations: Vec<Decl<Reservation>>,
    /// Content.
    pub content: Vec<Decl<Content>>,
    /// Certificate bindings.
    pub sslcerts: Vec<Decl<Sslcert>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    listen: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<u64>>,
    #[serde(default)]
    reservation: Vec<Spanned<RawReservation>>,
    #[serde(default)]
    content: Vec<Spanned<RawContent>>,
    #[serde(default)]
    sslcert: Vec<Spanned<RawSslcert>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSslcert {
    binding: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawReservation {
    prefix: Spanned<String>,
    user: Option<Spanned<String>>,
    sddl: Option<Spanned<String>>,
    max_age: Option<Spanned<u64>>,
    no_cache: Option<Spanned<bool>>,
    immutable: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawContent {
    dir: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    status: Option<Spanned<u16>>,
    #[serde(default)]
    headers: Vec<Spanned<String>>,
    ttl: Option<Spanned<u64>>,
    compress: Option<Spanned<Vec<String>>>,
    max_age: Option<Spanned<u64>>,
    no_cache: Option<Spanned<bool>>,
    immutable: Option<Spanned<bool>>,
}

/// Turns byte offsets into lines and builds errors that name them.
struct Text<'a> {
    file: &'a str,
    text: &'a str,
}

impl Text<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text
            .get(..end)
            .map_or(0, |s| s.bytes().filter(|b| *b == b'\n').count())
            + 1
    }

    fn at(&self, span: &Range<usize>, field: String) -> At {
        At {
            line: self.line(span),
            field,
        }
    }

    fn err(&self, span: &Range<usize>, field: String, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            at: Some(self.at(span, field)),
            message: message.into(),
        }
    }
}

/// The freshness keys a reservation or content may carry, at most one of them.
struct Freshness<'r> {
    max_age: &'r Option<Spanned<u64>>,
    no_cache: &'r Option<Spanned<bool>>,
    immutable: &'r Option<Spanned<bool>>,
}

impl Freshness<'_> {
    /// The `Cache-Control` value they ask for.
    fn value(&self, src: &Text<'_>, path: &str) -> Result<Option<String>, ConfigError> {
        let mut given = Vec::new();
        if let Some(n) = self.max_age {
            given.push((n.span(), "max-age", format!("max-age={}", n.get_ref())));
        }
        if let Some(b) = self.no_cache.as_ref().filter(|b| *b.get_ref()) {
            given.push((b.span(), "no-cache", "no-cache".to_string()));
        }
        if let Some(b) = self.immutable.as_ref().filter(|b| *b.get_ref()) {
            let v = "max-age=31536000, immutable".to_string();
            given.push((b.span(), "immutable", v));
        }
        match given.as_slice() {
            [] => Ok(None),
            [(_, _, v)] => Ok(Some(v.clone())),
            [_, (span, key, _), ..] => Err(src.err(
                span,
                format!("{path}.{key}"),
                "give one of max-age, no-cache and immutable",
            )),
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, or its first fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            at: None,
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&name, &text, path.parent().unwrap_or(Path::new("")))
    }

    /// Checks `text`, the file named `file`; relative paths in it are taken from `base`.
    ///
    /// # Errors
    /// The first fault, with its line and field.
    pub fn parse(file: &str, text: &str, base: &Path) -> Result<Self, ConfigError> {
        let src = Text { file, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            at: e.span().map(|s| src.at(&s, String::new())),
            message: e.message().trim().to_string(),
        })?;
        let mut listen = None;
        if let Some(list) = &raw.listen {
            let mut out: Vec<Decl<IpAddr>> = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let field = format!("listen[{i}]");
                let ip: IpAddr = a.get_ref().trim().parse().map_err(|_| {
                    src.err(
                        &a.span(),
                        field.clone(),
                        format!("{:?} is not an IP address", a.get_ref()),
                    )
                })?;
                if out.iter().any(|d| d.value == ip) {
                    return Err(src.err(&a.span(), field, format!("{ip} is listed twice")));
                }
                out.push(Decl {
                    at: src.at(&a.span(), field),
                    value: ip,
                });
            }
            listen = Some(out);
        }
        let limits = raw
            .limits
            .iter()
            .map(|(name, v)| Decl {
                at: src.at(&v.span(), format!("limits.{name}")),
                value: (name.clone(), *v.get_ref()),
            })
            .collect();
        let mut reservations: Vec<Decl<Reservation>> = Vec::new();
        for (i, r) in raw.reservation.iter().enumerate() {
            let d = reservation(&src, i, r)?;
            if let Some(first) = reservations
                .iter()
                .find(|x| x.value.prefix == d.value.prefix)
            {
                return Err(src.err(
                    &r.get_ref().prefix.span(),
                    format!("reservation[{i}].prefix"),
                    format!(
                        "{} is declared twice (first at line {})",
                        d.value.prefix, first.at.line
                    ),
                ));
            }
            reservations.push(d);
        }
        let content = raw
            .content
            .iter()
            .enumerate()
            .map(|(i, c)| content(&src, base, i, c))
            .collect::<Result<_, _>>()?;
        let sslcerts = sslcerts(&src, base, &raw.sslcert)?;
        Ok(Self {
            file: file.to_string(),
            listen,
            limits,
            reservations,
            content,
            sslcerts,
        })
    }

    /// An error at `at` in this file.
    #[must_use]
    pub fn error(&self, at: Option<&At>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            at: at.cloned(),
            message: message.into(),
        }
    }
}

/// The `[[sslcert]]` tables: a binding's form is checked (the server checks the rest), and
/// each binding is declared once.
fn sslcerts(
    src: &Text<'_>,
    base: &Path,
    raw: &[Spanned<RawSslcert>],
) -> Result<Vec<Decl<Sslcert>>, ConfigError> {
    let mut sslcerts: Vec<Decl<Sslcert>> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let raw = c.get_ref();
        let (b, field) = (&raw.binding, format!("sslcert[{i}].binding"));
        let binding = b.get_ref().trim().to_owned();
        if !(binding.starts_with("ipport=") || binding.starts_with("hostnameport=")) {
            return Err(src.err(
                &b.span(),
                field,
                "a binding is ipport=IP:PORT or hostnameport=NAME:PORT",
            ));
        }
        if let Some(first) = sslcerts.iter().find(|d| d.value.binding == binding) {
            let line = first.at.line;
            let message = format!("{binding} is declared twice (first at line {line})");
            return Err(src.err(&b.span(), field, message));
        }
        sslcerts.push(Decl {
            at: src.at(&c.span(), format!("sslcert[{i}]")),
            value: Sslcert {
                binding,
                cert: base.join(raw.cert.get_ref()),
                key: base.join(raw.key.get_ref()),
            },
        });
    }
    Ok(sslcerts)
}

fn reservation(
    src: &Text<'_>,
    i: usize,
    r: &Spanned<RawReservation>,
) -> Result<Decl<Reservation>, ConfigError> {
    let path = format!("reservation[{i}]");
    let raw = r.get_ref();
    let p = &raw.prefix;
    let prefix = khttp_engine::parse_prefix(p.get_ref())
        .map_err(|e| src.err(&p.span(), format!("{path}.prefix"), e.to_string()))?
        .to_text()
        .map_err(|_| src.err(&p.span(), format!("{path}.prefix"), "out of memory"))?;
    let acl = match (&raw.user, &raw.sddl) {
        (Some(_), Some(s)) => {
            return Err(src.err(
                &s.span(),
                format!("{path}.sddl"),
                "give user or sddl, not both",
            ));
        }
        (Some(u), None) => Some(
            super::account::user_acl(u.get_ref())
                .map_err(|e| src.err(&u.span(), format!("{path}.user"), e))?,
        ),
        (None, Some(s)) => {
            let acl = format!("sddl:{}", s.get_ref().trim());
            khttp_engine::acl::Acl::parse(&acl)
                .map_err(|e| src.err(&s.span(), format!("{path}.sddl"), e.message()))?;
            Some(acl)
        }
        (None, None) => None,
    };
    let fresh = Freshness {
        max_age: &raw.max_age,
        no_cache: &raw.no_cache,
        immutable: &raw.immutable,
    };
    Ok(Decl {
        at: src.at(&r.span(), path.clone()),
        value: Reservation {
            prefix,
            acl,
            cache_control: fresh.value(src, &path)?,
        },
    })
}

/// Where a `[[content]]` table's entries come from: a directory under a prefix, or one file at
/// a URL.
fn content_source(
    src: &Text<'_>,
    base: &Path,
    path: &str,
    c: &Spanned<RawContent>,
) -> Result<Source, ConfigError> {
    let raw = c.get_ref();
    let field = |k: &str| format!("{path}.{k}");
    let source = match (&raw.dir, &raw.prefix, &raw.file, &raw.url) {
        (Some(dir), Some(prefix), None, None) => {
            if let Some(ct) = &raw.content_type {
                return Err(src.err(
                    &ct.span(),
                    field("content-type"),
                    "a directory's types come from its files' extensions",
                ));
            }
            let p = prefix.get_ref();
            if !p.ends_with('/') {
                return Err(src.err(
                    &prefix.span(),
                    field("prefix"),
                    "the prefix must end with '/'",
                ));
            }
            khttp_engine::parse_url(p)
                .map_err(|e| src.err(&prefix.span(), field("prefix"), e.to_string()))?;
            Source::Dir {
                dir: base.join(dir.get_ref()),
                prefix: p.clone(),
            }
        }
        (None, None, Some(file), Some(url)) => {
            khttp_engine::parse_url(url.get_ref())
                .map_err(|e| src.err(&url.span(), field("url"), e.to_string()))?;
            Source::File {
                file: base.join(file.get_ref()),
                url: url.get_ref().clone(),
                content_type: raw.content_type.as_ref().map(|c| c.get_ref().clone()),
            }
        }
        _ => {
            return Err(src.err(
                &c.span(),
                path.to_owned(),
                "give either dir and prefix (a directory) or file and url (one file)",
            ));
        }
    };
    Ok(source)
}

fn content(
    src: &Text<'_>,
    base: &Path,
    i: usize,
    c: &Spanned<RawContent>,
) -> Result<Decl<Content>, ConfigError> {
    let path = format!("content[{i}]");
    let raw = c.get_ref();
    let field = |k: &str| format!("{path}.{k}");
    let source = content_source(src, base, &path, c)?;
    let codings = match &raw.compress {
        Some(list) => {
            codings(list.get_ref()).map_err(|e| src.err(&list.span(), field("compress"), e))?
        }
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    for (j, h) in raw.headers.iter().enumerate() {
        let line = h.get_ref();
        if !line.contains(':') {
            return Err(src.err(
                &h.span(),
                format!("{path}.headers[{j}]"),
                format!("{line:?} is not \"Name: value\""),
            ));
        }
        headers.push(line.clone());
    }
    let fresh = Freshness {
        max_age: &raw.max_age,
        no_cache: &raw.no_cache,
        immutable: &raw.immutable,
    };
    headers.extend(
        fresh
            .value(src, &path)?
            .map(|v| format!("Cache-Control: {v}")),
    );
    Ok(Decl {
        at: src.at(&c.span(), path),
        value: Content {
            source,
            status: raw.status.as_ref().map_or(0, |s| *s.get_ref()),
            headers,
            ttl: raw.ttl.as_ref().map(|t| *t.get_ref()),
            codings,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Config, Source};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("k.toml", text, Path::new("/srv")).map_err(|e| e.to_string())
    }

    #[test]
    fn certificate_bindings() {
        let c = parse(
            "[[sslcert]]\nbinding = \"ipport=0.0.0.0:443\"\ncert = \"c.pem\"\nkey = \"/k/k.pem\"\n",
        )
        .unwrap();
        let b = &c.sslcerts[0].value;
        assert_eq!(b.binding, "ipport=0.0.0.0:443");
        assert_eq!(
            (b.cert.to_str(), b.key.to_str()),
            (Some("/srv/c.pem"), Some("/k/k.pem"))
        );
        let twice = "[[sslcert]]\nbinding = \"ipport=0.0.0.0:443\"\ncert = \"c\"\nkey = \"k\"\n";
        let e = parse(&format!("{twice}{twice}")).unwrap_err();
        assert!(
            e.contains("k.toml:6: sslcert[1].binding") && e.contains("first at line 1"),
            "{e}"
        );
        let e =
            parse("[[sslcert]]\nbinding = \"port=443\"\ncert = \"c\"\nkey = \"k\"\n").unwrap_err();
        assert!(e.contains("ipport=IP:PORT"), "{e}");
        let e = parse("[[sslcert]]\nbinding = \"ipport=0.0.0.0:443\"\ncert = \"c\"\n").unwrap_err();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn a_whole_file() {
        let c = parse(
            r#"
listen = ["127.0.0.1", "::1"]
[limits]
idle-timeout = 30
[[reservation]]
prefix = "http://+:8080/"
user = "www-data"
max-age = 60
[[content]]
dir = "site"
prefix = "http://+:8080/"
compress = ["gzip"]
immutable = true
[[content]]
file = "robots.txt"
url = "http://+:8080/robots.txt"
content-type = "text/plain"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.limits[0].value, ("idle-timeout".into(), 30));
        let r = &c.reservations[0];
        assert_eq!(r.at.line, 5);
        assert_eq!(r.value.acl.as_deref(), Some("user:www-data"));
        assert_eq!(r.value.cache_control.as_deref(), Some("max-age=60"));
        let d = &c.content[0].value;
        assert_eq!(
            d.source,
            Source::Dir {
                dir: "/srv/site".into(),
                prefix: "http://+:8080/".into()
            }
        );
        assert_eq!(d.headers, ["Cache-Control: max-age=31536000, immutable"]);
        assert!(
            matches!(&c.content[1].value.source, Source::File { content_type: Some(t), .. } if t == "text/plain")
        );
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases = [
            (
                "listen = [\"nope\"]",
                "k.toml:1: listen[0]: \"nope\" is not an IP address",
            ),
            (
                "\n[[reservation]]\nprefix = \"ftp://x/\"",
                "k.toml:3: reservation[0].prefix:",
            ),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\nmax-age = 5\nno-cache = true",
                "k.toml:4: reservation[0].no-cache: give one of",
            ),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\nuser = \"a\"\nsddl = \"D:\"",
                "k.toml:4: reservation[0].sddl: give user or sddl",
            ),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\nsddl = \"D:(A;;GQ;;;WD)\"",
                "k.toml:3: reservation[0].sddl: SDDL: unknown right",
            ),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\nuser = \" \"",
                "k.toml:3: reservation[0].user: the user name is empty",
            ),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\n[[reservation]]\nprefix = \"http://+:80/\"",
                "k.toml:4: reservation[1].prefix: http://+:80/ is declared twice (first at line 1)",
            ),
            (
                "[[content]]\ndir = \"d\"\nprefix = \"http://+:80/x\"",
                "k.toml:3: content[0].prefix: the prefix must end with '/'",
            ),
            (
                "[[content]]\ndir = \"d\"\nprefix = \"http://+:80/\"\ncompress = [\"zstd\"]",
                "k.toml:4: content[0].compress: unknown coding \"zstd\"",
            ),
            (
                "[[content]]\ndir = \"d\"",
                "k.toml:1: content[0]: give either",
            ),
            ("[limits]\nkeepalive-timeout = -1", "k.toml:2: "),
            (
                "[[reservation]]\nprefix = \"http://+:80/\"\nusr = \"a\"",
                "k.toml:3: unknown field `usr`",
            ),
            ("listen = [", "k.toml:1: "),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }
}
