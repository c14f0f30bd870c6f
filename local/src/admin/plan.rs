//! What `khttpctl apply` changes: the difference between a [`Config`] and a running server,
//! and its application.
//!
//! - Reservations are added, or replaced when their ACL or policy differs (delete, then add:
//!   the server has no change in place, as `netsh http` has none; the entries under a replaced
//!   reservation go with it and are put again).
//! - Listen addresses the file names are added; limits it names are set when they differ.
//! - Content is compared by digest ([`super::put`]): a file whose entry holds the same digest
//!   is not read twice nor sent; one that differs, or whose entry is missing or expired, is put.
//! - Certificate bindings are compared by the SHA-256 of the server's certificate (the first
//!   in the chain file) and the chain's length, as `sslcert show` lists them: a binding that
//!   differs or is missing is added (which replaces it in place, without dropping connections).
//! - With `prune`, what the file does not declare goes: entries, listen addresses (a file with
//!   no `listen` then listens on every address), and reservations. Limits are never pruned:
//!   a limit always has a value.
//!
//! The order is the one that cannot fail half-way for a reason the plan could see:
//! certificates (so that an https port has one before it opens), reservations, addresses,
//! limits, puts, then deletions, entries before their reservations, certificates last.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use khttp_proto::reply::{AddressRow, CertRow, EntryRow, LimitRow, ReservationRow};
use khttp_proto::{DIGEST_LEN, Request};

use super::config::{At, Config, ConfigError, Content, Reservation, Source, Sslcert};
use super::put::{LocalFile, PutOptions, digest, put_file};
use super::{Control, rows};
use crate::files::{self, SiteFile};

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add a reservation, deleting the one at its prefix first if `replaces`.
    Reserve {
        /// Where the file declares it.
        at: At,
        /// It.
        reservation: Reservation,
        /// A reservation at its prefix differs and is deleted first.
        replaces: bool,
    },
    /// Add a listen address.
    ListenAdd {
        /// Where the file declares it.
        at: At,
        /// It.
        addr: IpAddr,
    },
    /// Delete a listen address (`prune`).
    ListenDelete {
        /// It.
        addr: IpAddr,
    },
    /// Set a limit.
    Limit {
        /// Where the file declares it.
        at: At,
        /// Its name.
        name: String,
        /// Its value now.
        from: u64,
        /// Its value to be.
        to: u64,
    },
    /// Put a file at URLs.
    Put {
        /// Where the file declares the content.
        at: At,
        /// Which content (an index into [`Config::content`]).
        content: usize,
        /// The file.
        file: SiteFile,
        /// The URLs to put it at (those whose entry is missing or differs).
        urls: Vec<String>,
        /// No entry is at any of them yet.
        new: bool,
    },
    /// Delete an entry (`prune`).
    Delete {
        /// Its URL.
        url: String,
    },
    /// Delete a reservation and its entries (`prune`).
    Unreserve {
        /// Its prefix.
        prefix: String,
    },
    /// Bind a certificate (which replaces the one bound there, if `replaces`).
    SslcertAdd {
        /// Where the file declares it.
        at: At,
        /// It.
        cert: Sslcert,
        /// Its SHA-256, as `sslcert show` prints it.
        sha256: String,
        /// Another certificate is bound there now.
        replaces: bool,
    },
    /// Remove a persisted binding (`prune`).
    SslcertDelete {
        /// Its binding.
        binding: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserve {
                reservation: r,
                replaces,
                ..
            } => {
                let sign = if *replaces { '~' } else { '+' };
                write!(f, "{sign} urlacl {}", r.prefix)?;
                let mut what = Vec::new();
                if let Some((kind, v)) = r.acl.as_deref().and_then(|a| a.split_once(':')) {
                    what.push(format!("{kind} {v}"));
                }
                if let Some(v) = &r.cache_control {
                    what.push(format!("Cache-Control: {v}"));
                }
                if *replaces {
                    what.push("replaced: its entries are put again".into());
                }
                if !what.is_empty() {
                    write!(f, " ({})", what.join("; "))?;
                }
                Ok(())
            }
            Self::ListenAdd { addr, .. } => write!(f, "+ iplisten {addr}"),
            Self::ListenDelete { addr } => write!(f, "- iplisten {addr}"),
            Self::Limit { name, from, to, .. } => write!(f, "~ limits {name} {from} -> {to}"),
            Self::Put {
                file, urls, new, ..
            } => {
                let sign = if *new { '+' } else { '~' };
                write!(f, "{sign} cache {} ({} bytes)", urls.join(" "), file.len)
            }
            Self::Delete { url } => write!(f, "- cache {url}"),
            Self::Unreserve { prefix } => write!(f, "- urlacl {prefix} (and its entries)"),
            Self::SslcertAdd {
                cert,
                sha256,
                replaces,
                ..
            } => {
                let sign = if *replaces { '~' } else { '+' };
                write!(f, "{sign} sslcert {} (SHA-256 {sha256})", cert.binding)
            }
            Self::SslcertDelete { binding } => write!(f, "- sslcert {binding}"),
        }
    }
}

/// The changes, in order, and what stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes.
    pub steps: Vec<Step>,
    /// Declared entries already in place.
    pub unchanged: usize,
}

impl Plan {
    /// The last line of a run: what changed (`done`) or would change, and what stays.
    #[must_use]
    pub fn summary(&self, file: &str, done: bool) -> String {
        let same = match self.unchanged {
            0 => String::new(),
            1 => "; 1 entry unchanged".into(),
            n => format!("; {n} entries unchanged"),
        };
        match (self.steps.len(), done) {
            (0, _) => {
                format!("{file}: no changes: the server already holds what it declares{same}")
            }
            (1, true) => format!("{file}: 1 change applied{same}"),
            (n, true) => format!("{file}: {n} changes applied{same}"),
            (1, false) => format!("{file}: 1 change planned, none made (--dry-run){same}"),
            (n, false) => format!("{file}: {n} changes planned, none made (--dry-run){same}"),
        }
    }
}

/// What the server holds.
struct Observed {
    /// Persisted bindings: (binding, SHA-256, chain length); `None` when the server has no TLS
    /// (the driver refuses the command).
    sslcerts: Option<Vec<(String, String, u64)>>,
    reservations: Vec<Reservation>,
    listen: Vec<IpAddr>,
    limits: Vec<(String, u64, u64, u64)>,
    entries: Vec<(String, Option<[u8; DIGEST_LEN]>)>,
}

fn observe(ctl: &mut dyn Control) -> Result<Observed, String> {
    let reply = ctl.call(&Request::UrlaclList, &[])?;
    let reservations = rows::<ReservationRow<'_>>(&reply)?
        .iter()
        .map(|r| Reservation {
            prefix: r.prefix.to_string(),
            acl: r.acl.map(str::to_string),
            cache_control: r.cache_control.map(str::to_string),
        })
        .collect();
    let reply = ctl.call(&Request::IplistenList, &[])?;
    let listen = rows::<AddressRow<'_>>(&reply)?
        .iter()
        .filter_map(|r| r.addr.parse().ok())
        .collect();
    let reply = ctl.call(&Request::LimitsGet, &[])?;
    let limits = rows::<LimitRow<'_>>(&reply)?
        .iter()
        .map(|r| (r.name.to_string(), r.value, r.min, r.max))
        .collect();
    let reply = ctl.call(&Request::CacheList { prefix: None }, &[])?;
    let entries = rows::<EntryRow<'_>>(&reply)?
        .iter()
        .map(|r| (r.url.to_string(), r.digest))
        .collect();
    let sslcerts = ctl.call(&Request::SslcertList, &[]).ok().map(|reply| {
        rows::<CertRow<'_>>(&reply)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.persisted)
            .map(|r| (r.binding.to_owned(), r.sha256.to_owned(), r.chain))
            .collect()
    });
    Ok(Observed {
        sslcerts,
        reservations,
        listen,
        limits,
        entries,
    })
}

/// The engine's canonical text for a URL, so that the file's spelling and the server's listing
/// compare equal.
fn canonical_url(url: &str) -> Result<String, String> {
    khttp_engine::parse_url(url)
        .map_err(|e| e.to_string())?
        .to_text()
        .map_err(|_| "out of memory".to_string())
}

/// The prefix of the reservation an entry belongs to: the longest that covers it.
fn owner<'r>(url: &str, reservations: &'r [Reservation]) -> Option<&'r str> {
    let url = url.to_ascii_lowercase();
    reservations
        .iter()
        .map(|r| r.prefix.as_str())
        .filter(|p| url.starts_with(&p.to_ascii_lowercase()))
        .max_by_key(|p| p.len())
}

/// The files a content declaration names.
fn files_of(cfg: &Config, at: &At, c: &Content) -> Result<Vec<SiteFile>, ConfigError> {
    match &c.source {
        Source::Dir { dir, prefix } => {
            if !dir.is_dir() {
                return Err(cfg.error(Some(at), format!("{} is not a directory", dir.display())));
            }
            files::walk(dir, prefix)
                .map_err(|e| cfg.error(Some(at), format!("cannot read {}: {e}", dir.display())))
        }
        Source::File {
            file,
            url,
            content_type,
        } => {
            let meta = std::fs::metadata(file)
                .map_err(|e| cfg.error(Some(at), format!("cannot read {}: {e}", file.display())))?;
            if !meta.is_file() {
                return Err(cfg.error(Some(at), format!("{} is not a file", file.display())));
            }
            Ok(vec![SiteFile {
                path: file.clone(),
                urls: vec![url.clone()],
                content_type: content_type
                    .clone()
                    .unwrap_or_else(|| files::content_type_for(file)),
                mtime: files::mtime_of(&meta),
                len: meta.len(),
            }])
        }
    }
}

fn read(cfg: &Config, at: &At, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| cfg.error(Some(at), format!("cannot read {}: {e}", path.display())))
}

fn put_options(c: &Content) -> PutOptions<'_> {
    PutOptions {
        status: c.status,
        headers: &c.headers,
        ttl: c.ttl,
        codings: &c.codings,
    }
}

/// A chain file's certificates as DER: the server's first.
fn chain_of(cfg: &Config, at: &At, path: &PathBuf) -> Result<Vec<Vec<u8>>, ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = read(cfg, at, path)?;
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| cfg.error(Some(at), format!("{}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(cfg.error(
            Some(at),
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(chain)
}

/// The SHA-256 of a certificate as `sslcert show` prints it.
fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Certificate bindings: added when missing or different; with `prune`, persisted ones the
/// file does not declare are deleted (last, in `prune_steps`).
fn plan_sslcerts(cfg: &Config, now: &Observed, steps: &mut Vec<Step>) -> Result<(), ConfigError> {
    let Some(held) = &now.sslcerts else {
        if let Some(d) = cfg.sslcerts.first() {
            return Err(cfg.error(
                Some(&d.at),
                "this server has no TLS: it cannot bind certificates",
            ));
        }
        return Ok(());
    };
    for d in &cfg.sslcerts {
        let chain = chain_of(cfg, &d.at, &d.value.cert)?;
        let sha256 = chain.first().map(|c| fingerprint(c)).unwrap_or_default();
        let found = held.iter().find(|(b, _, _)| *b == d.value.binding);
        if found.is_some_and(|(_, sum, n)| *sum == sha256 && *n == chain.len() as u64) {
            continue;
        }
        steps.push(Step::SslcertAdd {
            at: d.at.clone(),
            cert: d.value.clone(),
            sha256,
            replaces: found.is_some(),
        });
    }
    Ok(())
}

/// Reservations, listen addresses and limits.
fn plan_config(
    cfg: &Config,
    now: &Observed,
    prune: bool,
    steps: &mut Vec<Step>,
) -> Result<(), ConfigError> {
    for d in &cfg.reservations {
        let r = &d.value;
        match now.reservations.iter().find(|x| x.prefix == r.prefix) {
            Some(x) if x == r => {}
            found => steps.push(Step::Reserve {
                at: d.at.clone(),
                reservation: r.clone(),
                replaces: found.is_some(),
            }),
        }
    }
    let declared = cfg.listen.as_deref().unwrap_or_default();
    for d in declared.iter().filter(|d| !now.listen.contains(&d.value)) {
        steps.push(Step::ListenAdd {
            at: d.at.clone(),
            addr: d.value,
        });
    }
    for addr in now
        .listen
        .iter()
        .filter(|a| prune && !declared.iter().any(|d| d.value == **a))
    {
        steps.push(Step::ListenDelete { addr: *addr });
    }
    for d in &cfg.limits {
        let (name, to) = (&d.value.0, d.value.1);
        let Some((_, from, min, max)) = now.limits.iter().find(|l| l.0 == *name) else {
            return Err(cfg.error(
                Some(&d.at),
                "no such limit (khttpctl limits show lists them)",
            ));
        };
        if !(*min..=*max).contains(&to) {
            return Err(cfg.error(Some(&d.at), format!("{to} is outside {min}..={max}")));
        }
        if *from != to {
            steps.push(Step::Limit {
                at: d.at.clone(),
                name: name.clone(),
                from: *from,
                to,
            });
        }
    }
    Ok(())
}

/// Computes the plan for `cfg` against the server behind `ctl`. Reads every declared file once
/// (for its digest); changes nothing.
///
/// # Errors
/// The first fault: a file that cannot be read, a limit the server does not know or would
/// refuse, a URL declared twice, an unreachable server.
pub fn plan(cfg: &Config, ctl: &mut dyn Control, prune: bool) -> Result<Plan, ConfigError> {
    let now = observe(ctl).map_err(|e| cfg.error(None, e))?;
    let mut plan = Plan::default();
    plan_sslcerts(cfg, &now, &mut plan.steps)?;
    plan_config(cfg, &now, prune, &mut plan.steps)?;
    // Reservations replaced or pruned take their entries with them.
    let gone: Vec<&str> = now
        .reservations
        .iter()
        .map(|r| r.prefix.as_str())
        .filter(|p| {
            let replaced = plan.steps.iter().any(|s| {
                matches!(s, Step::Reserve { reservation, replaces: true, .. }
                    if reservation.prefix == *p)
            });
            replaced || (prune && !cfg.reservations.iter().any(|d| d.value.prefix == *p))
        })
        .collect();
    let goes = |url: &str| owner(url, &now.reservations).is_some_and(|p| gone.contains(&p));
    let mut declared: Vec<(String, usize)> = Vec::new();
    for (i, d) in cfg.content.iter().enumerate() {
        for file in files_of(cfg, &d.at, &d.value)? {
            let data = read(cfg, &d.at, &file.path)?;
            let local = LocalFile {
                data: &data,
                content_type: &file.content_type,
                mtime: file.mtime,
            };
            let sum = digest(&local, &put_options(&d.value));
            let (mut urls, mut new) = (Vec::new(), true);
            for url in &file.urls {
                let canon = canonical_url(url)
                    .map_err(|e| cfg.error(Some(&d.at), format!("{url}: {e}")))?;
                if let Some((_, j)) = declared.iter().find(|(u, _)| *u == canon) {
                    let first = cfg.content.get(*j).map_or(0, |c| c.at.line);
                    return Err(cfg.error(
                        Some(&d.at),
                        format!("{canon} is declared twice (first at line {first})"),
                    ));
                }
                let held = now
                    .entries
                    .iter()
                    .find(|(u, _)| *u == canon)
                    .filter(|_| !goes(&canon));
                declared.push((canon, i));
                new &= held.is_none();
                if held.is_some_and(|(_, d)| *d == Some(sum)) {
                    plan.unchanged += 1;
                } else {
                    urls.push(url.clone());
                }
            }
            if !urls.is_empty() {
                plan.steps.push(Step::Put {
                    at: d.at.clone(),
                    content: i,
                    file,
                    urls,
                    new,
                });
            }
        }
    }
    if prune {
        prune_steps(cfg, &now, &declared, &goes, &mut plan.steps);
    }
    Ok(plan)
}

/// With `--prune`: deletes of the entries no file declares (those of reservations that go are
/// dropped with them), and unreserves of the reservations the file does not declare.
fn prune_steps(
    cfg: &Config,
    now: &Observed,
    declared: &[(String, usize)],
    goes: &dyn Fn(&str) -> bool,
    steps: &mut Vec<Step>,
) {
    let deletes = now
        .entries
        .iter()
        .filter(|(url, _)| !declared.iter().any(|(u, _)| u == url) && !goes(url))
        .map(|(url, _)| Step::Delete { url: url.clone() });
    steps.extend(deletes);
    let unreserves = now
        .reservations
        .iter()
        .filter(|r| !cfg.reservations.iter().any(|d| d.value.prefix == r.prefix))
        .map(|r| Step::Unreserve {
            prefix: r.prefix.clone(),
        });
    steps.extend(unreserves);
    let unbinds = now
        .sslcerts
        .iter()
        .flatten()
        .filter(|(b, _, _)| !cfg.sslcerts.iter().any(|d| d.value.binding == *b))
        .map(|(b, _, _)| Step::SslcertDelete { binding: b.clone() });
    steps.extend(unbinds);
}

/// Applies `plan` through `ctl`, calling `done` after each step.
///
/// # Errors
/// The first refusal, naming the declaration it came from; the steps before it stay applied.
pub fn apply(
    cfg: &Config,
    plan: &Plan,
    ctl: &mut dyn Control,
    done: &mut dyn FnMut(&Step),
) -> Result<(), ConfigError> {
    for step in &plan.steps {
        let at = step_at(step);
        let fail = |e: String| cfg.error(at, e);
        match step {
            Step::Reserve {
                reservation: r,
                replaces,
                ..
            } => {
                if *replaces {
                    ctl.call(&Request::UrlaclDelete { prefix: &r.prefix }, &[])
                        .map_err(fail)?;
                }
                let req = Request::UrlaclAdd {
                    prefix: &r.prefix,
                    acl: r.acl.as_deref(),
                    cache_control: r.cache_control.as_deref(),
                };
                ctl.call(&req, &[]).map_err(fail)?;
            }
            Step::ListenAdd { addr, .. } | Step::ListenDelete { addr } => {
                let addr = addr.to_string();
                let req = if matches!(step, Step::ListenAdd { .. }) {
                    Request::IplistenAdd { addr: &addr }
                } else {
                    Request::IplistenDelete { addr: &addr }
                };
                ctl.call(&req, &[]).map_err(fail)?;
            }
            Step::Limit { name, to, .. } => {
                let req = Request::LimitsSet { name, value: *to };
                ctl.call(&req, &[]).map_err(fail)?;
            }
            Step::Put {
                at,
                content,
                file,
                urls,
                ..
            } => {
                let c = cfg
                    .content
                    .get(*content)
                    .ok_or_else(|| fail("no such content".into()))?;
                let data = read(cfg, at, &file.path)?;
                let local = LocalFile {
                    data: &data,
                    content_type: &file.content_type,
                    mtime: file.mtime,
                };
                put_file(ctl, urls, &local, &put_options(&c.value)).map_err(fail)?;
            }
            Step::Delete { url } => {
                ctl.call(&Request::CacheDelete { url }, &[]).map_err(fail)?;
            }
            Step::Unreserve { prefix } => {
                ctl.call(&Request::UrlaclDelete { prefix }, &[])
                    .map_err(fail)?;
            }
            Step::SslcertAdd { at, cert, .. } => bind(cfg, at, cert, ctl)?,
            Step::SslcertDelete { binding } => {
                ctl.call(&Request::SslcertDelete { binding }, &[])
                    .map_err(fail)?;
            }
        }
        done(step);
    }
    Ok(())
}

/// `sslcert add` of a declared binding, the key's text zeroed once sent (SECURITY.md, "Keys").
fn bind(cfg: &Config, at: &At, cert: &Sslcert, ctl: &mut dyn Control) -> Result<(), ConfigError> {
    let text = |p: &PathBuf| {
        String::from_utf8(read(cfg, at, p)?)
            .map_err(|_| cfg.error(Some(at), format!("{} is not PEM text", p.display())))
    };
    let (chain, key) = (text(&cert.cert)?, text(&cert.key)?);
    let req = Request::SslcertAdd {
        binding: &cert.binding,
        chain: &chain,
        key: &key,
        ocsp: None,
    };
    let sent = ctl.call(&req, &[]);
    files::wipe(key.into_bytes());
    sent.map(drop).map_err(|e| cfg.error(Some(at), e))
}

fn step_at(step: &Step) -> Option<&At> {
    match step {
        Step::Reserve { at, .. }
        | Step::ListenAdd { at, .. }
        | Step::Limit { at, .. }
        | Step::Put { at, .. }
        | Step::SslcertAdd { at, .. } => Some(at),
        Step::ListenDelete { .. }
        | Step::Delete { .. }
        | Step::Unreserve { .. }
        | Step::SslcertDelete { .. } => None,
    }
}
