//! The control plane: decoded command → site change → encoded reply, and the
//! write that makes a change visible.
//!
//! [`Writer`] is the one writer of the [`Site`], behind both control transports (khttpd's
//! Unix-socket handler and the driver's `EvtIoDeviceControl`), both application endpoints and
//! both hosts' timers. [`Writer::commit`] clones the current site, applies the command to the
//! clone ([`dispatch`]), persists configuration when it changed, and publishes the clone;
//! [`Writer::change`] does the same for running state (queues, answers cached for
//! applications); [`Writer::purge`] drops expired cache entries, so that both hosts reclaim
//! their memory. The transport authenticates the caller (SO_PEERCRED, the device SDDL); the
//! host's guard of its writer lock ([`Publish`]) serialises writers and supplies persistence
//! and publication.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;

use khttp_proto::reply::{
    AddressRow, CounterRow, EntryRow, FlushRow, LimitRow, PutRow, QueueRow, ReservationRow,
    VersionRow, empty_reply, too_small_reply,
};
use khttp_proto::{Command, PutEntry, Request, Status, decode_request, refuse, write_rows};

use crate::cache::EntrySpec;
use crate::error::CtlError;
use crate::limits::Limits;
use crate::mem::{self, StackText};
use crate::queues::Holder;
use crate::site::Site;
use crate::time::Instant;

/// What a dispatch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// The reply status.
    pub status: Status,
    /// The site was changed: publish it.
    pub changed: bool,
    /// Reservations, the IP listen list or limits changed: persist before publishing.
    pub persist: bool,
    /// `log reopen`: the host reopens its access log.
    pub reopen_log: bool,
}

/// The host's half of a write: the lock it holds, where configuration persists, and how a
/// snapshot is published. Implemented by a guard that holds the host's writer lock, so that
/// a [`Writer`] exists only while the lock is held.
pub trait Publish {
    /// The latest snapshot (the lock is held, so no other writer can replace it meanwhile).
    fn current(&self) -> Arc<Site>;

    /// Saves `site`'s persisted configuration (reservations, IP listen list, limits),
    /// atomically: after a failure the saved state is the old one.
    ///
    /// # Errors
    /// One line of English naming what could not be saved.
    fn persist(&mut self, site: &Site) -> Result<(), Cow<'static, str>>;

    /// Makes `site` the snapshot readers see; `config` says that reservations, the IP listen
    /// list or limits changed (listeners may have to follow).
    fn publish(&mut self, site: Arc<Site>, config: bool);

    /// Reopens the access log at its path (`log reopen`).
    ///
    /// # Errors
    /// One line of English: there is no log, or it could not be reopened.
    fn reopen_log(&mut self) -> Result<(), Cow<'static, str>>;

    /// Carries out a certificate command (`sslcert add | delete | show | ca`), which changes
    /// the host's TLS state, not the site; writes its reply rows to `out` (empty: an empty
    /// table). A host without TLS keeps this default, which refuses.
    ///
    /// # Errors
    /// The status and one line of English.
    fn certificates(
        &mut self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), (Status, Cow<'static, str>)> {
        let _ = (req, out);
        Err((
            Status::NotSupported,
            Cow::Borrowed("this server has no TLS: certificates are bound by khttpd only"),
        ))
    }
}

/// One control call as it arrived: the control code, the input buffer, the direct buffer
/// (`cache put`'s bodies; empty otherwise), and the most reply bytes the caller accepts.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The control code (an IOCTL code).
    pub code: u32,
    /// The request buffer.
    pub input: &'a [u8],
    /// The direct buffer.
    pub direct: &'a [u8],
    /// The reply's room: a larger reply becomes [`Status::BufferTooSmall`].
    pub output_cap: usize,
}

/// The site's one writer: every change to the [`Site`] is made here, on a private clone of
/// the current snapshot, which is then published whole (readers never see half a change).
/// `H` is the host's guard of its writer lock, so a change without the lock does not compile.
pub struct Writer<H: Publish> {
    host: H,
}

impl<H: Publish> Writer<H> {
    /// The writer, for as long as `host` (holding the writer lock) lives.
    pub const fn new(host: H) -> Self {
        Self { host }
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Site> {
        self.host.current()
    }

    /// One control write: applies the request (`call`) to a clone of the current site,
    /// persists configuration if it changed, then publishes the clone. The reply goes to
    /// `out` (see [`dispatch`]); a change that cannot be persisted is not published
    /// ([`Status::PersistFailed`]).
    pub fn commit(&mut self, call: &Call<'_>, now: Instant, out: &mut Vec<u8>) -> Status {
        if let Some(status) = self.certificates(call, out) {
            return status;
        }
        let Ok(mut next) = self.host.current().try_clone() else {
            return refuse(out, Status::OutOfMemory, Status::OutOfMemory.message());
        };
        let d = dispatch(&mut next, call, now, out);
        if d.reopen_log
            && let Err(message) = self.host.reopen_log()
        {
            return refuse(out, Status::NotSupported, &message);
        }
        if !d.changed {
            return d.status;
        }
        // Allocated before anything is persisted, so that a persisted change is always
        // published.
        let Ok(next) = mem::arc(next) else {
            return refuse(out, Status::OutOfMemory, Status::OutOfMemory.message());
        };
        if d.persist
            && let Err(message) = self.host.persist(&next)
        {
            return refuse(out, Status::PersistFailed, &message);
        }
        self.host.publish(next, d.persist);
        d.status
    }

    /// A certificate command goes to the host ([`Publish::certificates`]); `None` for any
    /// other.
    fn certificates(&mut self, call: &Call<'_>, out: &mut Vec<u8>) -> Option<Status> {
        let command = Command::from_code(call.code).filter(|c| {
            matches!(
                c,
                Command::SslcertAdd
                    | Command::SslcertDelete
                    | Command::SslcertList
                    | Command::SslcertCa
            )
        })?;
        out.clear();
        if out.try_reserve(ERROR_REPLY_ROOM).is_err() {
            return Some(Status::OutOfMemory);
        }
        let req = match decode_request(command, call.input, call.direct.len()) {
            Ok(r) => r,
            Err(e) => return Some(refuse(out, e.status(), e.message())),
        };
        Some(match self.host.certificates(&req, out) {
            Ok(()) => {
                if out.is_empty() {
                    let _ = empty_reply(out);
                }
                if out.len() > call.output_cap {
                    let header = too_small_reply(out.len());
                    out.clear();
                    out.extend_from_slice(&header);
                    Status::BufferTooSmall
                } else {
                    Status::Ok
                }
            }
            Err((status, message)) => {
                out.clear();
                refuse(out, status, &message)
            }
        })
    }

    /// A change of the running state (queues, answers cached for applications), not of the
    /// persisted configuration: `f` changes a clone of the current site, which is published
    /// when it succeeds. Nothing is published when it fails.
    ///
    /// # Errors
    /// `f`'s error, or [`CtlError::OutOfMemory`] when the clone cannot be made.
    pub fn change<R>(
        &mut self,
        f: impl FnOnce(&mut Site) -> Result<R, CtlError>,
    ) -> Result<R, CtlError> {
        let mut next = self.host.current().try_clone()?;
        let r = f(&mut next)?;
        let next = mem::arc(next).map_err(|_| CtlError::OutOfMemory)?;
        self.host.publish(next, false);
        Ok(r)
    }

    /// The timers' write: if an entry has expired by `now`, publishes a copy without the
    /// expired entries. Returns how many were dropped (none when out of memory: the next
    /// tick tries again).
    pub fn purge(&mut self, now: Instant) -> usize {
        let current = self.host.current();
        if current.next_expiry().is_none_or(|at| at > now) {
            return 0;
        }
        let Ok(mut next) = current.try_clone() else {
            return 0;
        };
        let dropped = next.purge_expired(now);
        if dropped > 0
            && let Ok(next) = mem::arc(next)
        {
            self.host.publish(next, false);
        }
        dropped
    }
}

/// Reply bytes reserved before a command runs: enough for any error reply, whose messages are
/// static and short, so that a failure can always be reported.
const ERROR_REPLY_ROOM: usize = 512;

/// The engine's version, reported by `version`.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

impl From<CtlError> for Status {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::InvalidPrefix(_) => Self::InvalidPrefix,
            CtlError::InvalidAcl(_) => Self::InvalidAcl,
            CtlError::AlreadyExists => Self::AlreadyExists,
            CtlError::NotFound => Self::NotFound,
            CtlError::NoReservation => Self::NoReservation,
            CtlError::EntryTooLarge => Self::EntryTooLarge,
            CtlError::CacheFull => Self::CacheFull,
            CtlError::InvalidHeader => Self::InvalidHeader,
            CtlError::InvalidContentType => Self::InvalidContentType,
            CtlError::InvalidStatus => Self::InvalidStatus,
            CtlError::UnknownLimit => Self::UnknownLimit,
            CtlError::InvalidLimitValue => Self::InvalidLimitValue,
            CtlError::InvalidAddress => Self::InvalidAddress,
            CtlError::AddressExists => Self::AddressExists,
            CtlError::InvalidQueueName => Self::InvalidQueueName,
            CtlError::WrongEndpoint => Self::WrongEndpoint,
            CtlError::NotGranted => Self::NotGranted,
            CtlError::QueueOwned => Self::QueueOwned,
            CtlError::PrefixRequired => Self::PrefixRequired,
            CtlError::TooManySessions => Self::TooManySessions,
            CtlError::NotSupported => Self::NotSupported,
            CtlError::OutOfMemory => Self::OutOfMemory,
        }
    }
}

/// Writes a reply of `rows`; the only way it can fail is out of memory.
fn reply<'r, R: khttp_proto::Row<'r> + 'r>(
    out: &mut Vec<u8>,
    rows: impl IntoIterator<Item = R>,
) -> Result<(), CtlError> {
    write_rows(out, rows).map_err(|_| CtlError::OutOfMemory)
}

/// Copies `direct[start..start + len]` into a new, fallibly allocated vector.
fn take_body(direct: &[u8], start: &mut usize, len: u64) -> Result<Vec<u8>, CtlError> {
    let len = usize::try_from(len).map_err(|_| CtlError::EntryTooLarge)?;
    let end = start.checked_add(len).ok_or(CtlError::EntryTooLarge)?;
    let src = direct.get(*start..end).ok_or(CtlError::EntryTooLarge)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| CtlError::OutOfMemory)?;
    v.extend_from_slice(src);
    *start = end;
    Ok(v)
}

fn put(
    site: &mut Site,
    p: &PutEntry<'_>,
    direct: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    // Refuse over-large bodies before copying them.
    let total = p.direct_len().ok_or(CtlError::EntryTooLarge)?;
    if total > site.limits().cache_max_entry_bytes {
        return Err(CtlError::EntryTooLarge);
    }
    let mut at = 0usize;
    let body = take_body(direct, &mut at, p.identity_len)?;
    let gzip = p
        .gzip_len
        .map(|n| take_body(direct, &mut at, n))
        .transpose()?;
    let br = p
        .br_len
        .map(|n| take_body(direct, &mut at, n))
        .transpose()?;
    let spec = EntrySpec {
        status: p.status,
        content_type: p.content_type,
        body,
        last_modified: p.last_modified,
        ttl_secs: p.ttl,
        headers: &p.headers,
        gzip,
        br,
        digest: p.digest,
    };
    let done = site.put(p.url, spec, now)?;
    reply(
        out,
        [PutRow {
            replaced: done.replaced,
            bytes: done.bytes,
        }],
    )
}

fn list_entries(
    site: &Site,
    prefix: Option<&str>,
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    let filter = prefix.map(crate::route::parse_url).transpose()?;
    let mut rows: Vec<(String, &crate::cache::Entry)> = Vec::new();
    rows.try_reserve_exact(site.cache().len())
        .map_err(|_| CtlError::OutOfMemory)?;
    for (_, _, e) in site.cache().iter() {
        let under = filter
            .as_ref()
            .is_none_or(|p| crate::site::url_under(&e.url, p));
        if under && !e.is_expired(now) {
            mem::push(&mut rows, (e.url.to_text()?, &**e))?;
        }
    }
    // Unstable sorting allocates nothing (URLs are unique, so the order is the same).
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut codings: Vec<StackText<16>> = Vec::new();
    codings
        .try_reserve_exact(rows.len())
        .map_err(|_| CtlError::OutOfMemory)?;
    for (_, e) in &rows {
        let mut text = StackText::<16>::new();
        for c in e.codings().skip(1) {
            let sep = if text.as_str().is_empty() { "" } else { "," };
            let _ = write!(text, "{sep}{}", c.token());
        }
        codings.push(text);
    }
    reply(
        out,
        rows.iter()
            .zip(&codings)
            .map(|((url, e), codings)| EntryRow {
                url,
                status: e.status,
                content_type: &e.content_type,
                bytes: e.identity_len(),
                codings: codings.as_str(),
                hits: e.hit_count(),
                ttl_left: e.expires.map(|x| x.millis_since(now).div_ceil(1000)),
                last_modified: e.last_modified,
                digest: e.digest,
            }),
    )
}

fn apply(
    site: &mut Site,
    req: &Request<'_>,
    direct: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CtlError> {
    match req {
        Request::Version => reply(
            out,
            [VersionRow {
                protocol: khttp_proto::PROTOCOL_VERSION,
                engine: ENGINE_VERSION,
            }],
        ),
        Request::UrlaclAdd {
            prefix,
            acl,
            cache_control,
        } => match cache_control {
            Some(v) => site.reserve_with_policy(prefix, *acl, v),
            None => site.reserve(prefix, *acl).map(drop),
        },
        Request::UrlaclDelete { prefix } => site.unreserve(prefix),
        Request::UrlaclList => list_reservations(site, out),
        Request::IplistenAdd { addr } => site.iplisten_add(addr).map(drop),
        Request::IplistenDelete { addr } => site.iplisten_delete(addr),
        Request::IplistenList => list_addresses(site, out),
        Request::CachePut(p) => put(site, p, direct, now, out),
        Request::CacheDelete { url } => site.delete(url),
        Request::CacheFlush { prefix } => {
            let n = site.flush(*prefix)?;
            reply(
                out,
                [FlushRow {
                    removed: u64::try_from(n).unwrap_or(u64::MAX),
                }],
            )
        }
        Request::CacheList { prefix } => list_entries(site, *prefix, now, out),
        Request::Stats => stats(site, out),
        Request::LimitsGet => reply(
            out,
            Limits::names().map(|name| {
                let (min, max) = Limits::range(name).unwrap_or((0, 0));
                LimitRow {
                    name,
                    value: site.limits().get(name).unwrap_or(0),
                    min,
                    max,
                }
            }),
        ),
        Request::LimitsSet { name, value } => site.set_limit(name, *value),
        Request::QueueList => list_queues(site, out),
        // The host's: `Writer::commit` asks it (`Publish::reopen_log`).
        Request::LogReopen => Ok(()),
        // The host's certificates, which `Writer::commit` hands to `Publish::certificates`;
        // the site holds none.
        Request::SslcertAdd { .. }
        | Request::SslcertDelete { .. }
        | Request::SslcertList
        | Request::SslcertCa => Err(CtlError::NotSupported),
        // The application endpoint's: the host serves them (`attach`, and its own queues).
        Request::QueueAttach { .. }
        | Request::QueueReceive { .. }
        | Request::QueueRespond(_)
        | Request::QueueSend { .. }
        | Request::QueueReceiveBody { .. }
        | Request::QueueCancel { .. }
        | Request::QueueDetach { .. } => Err(CtlError::WrongEndpoint),
    }
}

fn list_queues(site: &Site, out: &mut Vec<u8>) -> Result<(), CtlError> {
    let count = site.queues().iter().count();
    let mut texts: Vec<(String, String, StackText<192>)> = Vec::new();
    texts
        .try_reserve_exact(count)
        .map_err(|_| CtlError::OutOfMemory)?;
    for q in site.queues().iter() {
        let mut prefixes = String::new();
        for id in &q.reservations {
            if let Some(r) = site.namespace().by_id(*id) {
                if !prefixes.is_empty() {
                    mem::push_str(&mut prefixes, " ")?;
                }
                mem::push_str(&mut prefixes, &r.prefix.to_text()?)?;
            }
        }
        let mut processes = String::new();
        for h in &q.holders {
            let mut one = StackText::<32>::new();
            let sep = if processes.is_empty() { "" } else { " " };
            let _ = write!(one, "{sep}{}:{}", h.pid, h.uid);
            mem::push_str(&mut processes, one.as_str())?;
        }
        let mut owner = StackText::<192>::new();
        let _ = write!(owner, "{}", q.owner);
        texts.push((prefixes, processes, owner));
    }
    let get = |c: &core::sync::atomic::AtomicU64| c.load(core::sync::atomic::Ordering::Relaxed);
    reply(
        out,
        site.queues()
            .iter()
            .zip(&texts)
            .map(|(q, (prefixes, processes, owner))| QueueRow {
                id: q.id,
                name: &q.name,
                prefixes,
                processes,
                owner: owner.as_str(),
                in_flight: get(&q.stats.in_flight),
                requests: get(&q.stats.requests),
                answered: get(&q.stats.answered),
                refused: get(&q.stats.refused),
                abandoned: get(&q.stats.abandoned),
                timed_out: get(&q.stats.timed_out),
            }),
    )
}

/// Who is attaching an application ([`attach`]): the transport says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// An administrator (root or khttpd's own user; SYSTEM or Administrators): any prefix,
    /// any queue.
    Administrator,
    /// A Unix user, by name (khttpd): prefixes reserved `--user NAME` for it, or with an SDDL
    /// that grants any local user ([`crate::acl::Identity::local_user`]).
    User(&'a str),
    /// A Windows process, by its token (the driver): anywhere if it is an administrator's
    /// ([`crate::acl::Identity::is_administrator`]), otherwise prefixes whose SDDL grants it.
    /// A `user:NAME` ACL grants no token: khttpctl on Windows sends the user's SID.
    Token(&'a crate::acl::Identity),
}

/// The application endpoint's attach (issues #12 and #21), with http.sys's rules for a named
/// request queue (see `queues`):
/// - an administrator attaches to any queue, for any prefixes (or none);
/// - anyone else must name at least one prefix ([`CtlError::PrefixRequired`]), and each
///   reservation named must grant the caller the right to register ([`crate::acl`];
///   [`CtlError::NotGranted`]);
/// - a queue that exists belongs to the user who created it: only that user joins it
///   ([`CtlError::QueueOwned`]), and only while every reservation the queue already serves
///   still grants them (a reservation's ACL may have changed since).
///
/// The queue's owner is the caller's user: `holder.uid` for a Unix caller, the token's user
/// SID for a Windows one, and BUILTIN\\Administrators for an administrator's token (the default
/// owner Windows gives what an elevated administrator creates, so that an unelevated process of
/// the same user does not join it). Applies it to `site` (the writer's private clone, in
/// [`Writer::change`]) and returns the queue's id.
///
/// # Errors
/// Those above, and those of [`Site::attach_queue`].
pub fn attach(
    site: &mut Site,
    caller: Caller<'_>,
    holder: Holder,
    name: &str,
    prefixes: &[&str],
) -> Result<u32, CtlError> {
    use crate::acl::{ADMINISTRATORS, Identity};
    use crate::queues::Owner;
    // Who asks: an administrator, or a Unix user's name with the SIDs every local user holds,
    // or a token; and whom a queue they create belongs to.
    let local_user;
    let (who, owner) = match caller {
        Caller::Administrator => (None, Owner::Uid(holder.uid)),
        Caller::Token(id) if id.is_administrator() => (None, Owner::Sid(ADMINISTRATORS)),
        Caller::Token(id) => {
            let user = id.user().ok_or(CtlError::NotGranted)?;
            (Some((None, id)), Owner::Sid(*user))
        }
        Caller::User(user) => {
            local_user = Identity::local_user().map_err(|_| CtlError::OutOfMemory)?;
            (Some((Some(user), &local_user)), Owner::Uid(holder.uid))
        }
    };
    if let Some((user, identity)) = who {
        if prefixes.is_empty() {
            return Err(CtlError::PrefixRequired);
        }
        let named = site.reservation_ids(prefixes)?;
        let existing = site.queues().by_name(name);
        if existing.is_some_and(|q| q.owner != owner) {
            return Err(CtlError::QueueOwned);
        }
        let served = existing.map_or(&[][..], |q| &q.reservations[..]);
        for id in named.iter().chain(served) {
            if !grants(site, *id, user, identity)? {
                return Err(CtlError::NotGranted);
            }
        }
    }
    site.attach_queue(name, prefixes, holder, owner)
}

/// Whether reservation `id`'s ACL grants `identity` (and, for a Unix caller, `user` by name)
/// the right to register.
fn grants(
    site: &Site,
    id: u32,
    user: Option<&str>,
    identity: &crate::acl::Identity,
) -> Result<bool, CtlError> {
    use crate::acl::{Acl, AclError, REGISTER};
    let acl = site
        .namespace()
        .iter()
        .find(|r| r.id == id)
        .ok_or(CtlError::NotFound)?
        .acl
        .as_deref();
    Ok(match acl.map(Acl::parse) {
        Some(Err(AclError::OutOfMemory)) => return Err(CtlError::OutOfMemory),
        None | Some(Err(_)) => false,
        Some(Ok(Acl::User(u))) => user == Some(u),
        Some(Ok(Acl::Sddl(d))) => d.grants(identity, REGISTER),
    })
}

fn list_reservations(site: &Site, out: &mut Vec<u8>) -> Result<(), CtlError> {
    let mut prefixes: Vec<String> = Vec::new();
    prefixes
        .try_reserve_exact(site.namespace().len())
        .map_err(|_| CtlError::OutOfMemory)?;
    for r in site.namespace().iter() {
        prefixes.push(r.prefix.to_text()?);
    }
    reply(
        out,
        site.namespace()
            .iter()
            .zip(&prefixes)
            .map(|(r, prefix)| ReservationRow {
                prefix,
                acl: r.acl.as_deref(),
                cache_control: r.cache_control_value(),
            }),
    )
}

fn list_addresses(site: &Site, out: &mut Vec<u8>) -> Result<(), CtlError> {
    let mut texts: Vec<StackText<64>> = Vec::new();
    texts
        .try_reserve_exact(site.iplisten().len())
        .map_err(|_| CtlError::OutOfMemory)?;
    for ip in site.iplisten() {
        let mut text = StackText::<64>::new();
        let _ = write!(text, "{ip}");
        texts.push(text);
    }
    reply(out, texts.iter().map(|t| AddressRow { addr: t.as_str() }))
}

fn stats(site: &Site, out: &mut Vec<u8>) -> Result<(), CtlError> {
    let [requests, hits, misses, not_modified, errors, body_bytes] = site.stats().snapshot();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let held = site
        .stats()
        .body_bytes_held
        .load(core::sync::atomic::Ordering::Relaxed);
    let counters: [(&str, u64); 10] = [
        ("requests", requests),
        ("cache-hits", hits),
        ("cache-misses", misses),
        ("not-modified", not_modified),
        ("errors", errors),
        ("body-bytes", body_bytes),
        ("cache-entries", count(site.cache().len())),
        ("cache-bytes", site.cache().bytes()),
        ("reservations", count(site.namespace().len())),
        ("body-bytes-held", held),
    ];
    reply(
        out,
        counters
            .into_iter()
            .map(|(name, value)| CounterRow { name, value }),
    )
}

/// Decodes and applies one control request to `site` (the caller's private clone), writing the
/// reply into `out` (cleared first). A reply larger than `call.output_cap` becomes
/// [`Status::BufferTooSmall`] with a header-only reply giving the size.
pub fn dispatch(site: &mut Site, call: &Call<'_>, now: Instant, out: &mut Vec<u8>) -> Dispatched {
    let Call {
        code,
        input,
        direct,
        output_cap,
    } = *call;
    out.clear();
    let fail = |status: Status| Dispatched {
        status,
        changed: false,
        persist: false,
        reopen_log: false,
    };
    // Room for any error reply up front, so that reporting a failure never needs memory.
    if out.try_reserve(ERROR_REPLY_ROOM).is_err() {
        return fail(Status::OutOfMemory);
    }
    let refuse =
        |out: &mut Vec<u8>, status: Status, message: &str| fail(refuse(out, status, message));
    let Some(command) = Command::from_code(code) else {
        return refuse(
            out,
            Status::UnknownCommand,
            Status::UnknownCommand.message(),
        );
    };
    let req = match decode_request(command, input, direct.len()) {
        Ok(r) => r,
        Err(e) => return refuse(out, e.status(), e.message()),
    };
    let result = match apply(site, &req, direct, now, out) {
        Ok(()) => {
            if out.is_empty() {
                // Commands with nothing to report answer with an empty table.
                let _ = empty_reply(out);
            }
            Dispatched {
                status: Status::Ok,
                changed: command.changes_state() && command != Command::LogReopen,
                persist: command.changes_config(),
                reopen_log: command == Command::LogReopen,
            }
        }
        Err(e) => return refuse(out, Status::from(e), e.message()),
    };
    if out.len() > output_cap {
        let header = too_small_reply(out.len());
        out.clear();
        out.extend_from_slice(&header);
        return fail(Status::BufferTooSmall);
    }
    result
}

#[cfg(test)]
mod tests;
