//! What each request is answered with, decided in one place and written by one
//! head writer ([`crate::http1::response::ResponseHead`]).
//!
//! A request becomes an [`Answer`] ([`decide`]): a cache entry, an error page, the server's
//! `OPTIONS *` answer, an interim `100 Continue`, or the 503 a host sends to a connection over
//! `max-connections`. [`Answer::write`] turns any of them into bytes. Statistics are counted
//! where the answer is decided, so that every host counts the same way.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cache::entry::{
    Entry, EntrySpec, content_type_or_default, entry_field_allowed, header_lines,
};
use crate::cache::serve::serve;
use crate::error::{CtlError, OutOfMemory, RequestError};
use crate::http1::request::{Framing, Head, Method, Version};
use crate::http1::response::{Persist, ResponseHead, Served, page};
use crate::mem::{self, put};
use crate::out::{Body, Output};
use crate::queues::QueueStats;
use crate::route::{CanonError, Local, Reservation, canonicalize, names_the_same};
use crate::site::{Site, Stats};
use crate::time::{Clock, HttpDate, Instant};

/// How one request is answered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer<'a> {
    /// A cache entry answers a GET or HEAD (with its preconditions, ranges and codings).
    Cached {
        /// The entry.
        entry: &'a Entry,
        /// Its reservation's freshness policy line (`Cache-Control: …`), or empty.
        policy: &'a [u8],
        /// GET or HEAD.
        method: Method,
        /// The request's fields, for preconditions, `Range` and `Accept-Encoding`.
        headers: &'a [httparse::Header<'a>],
    },
    /// A short text page: a refused request, no reservation, no entry, a method not allowed.
    Page {
        /// Status code.
        status: u16,
        /// The one line of text in the body.
        text: &'static str,
        /// Whether to list the allowed methods (`Allow`, with 405).
        allow: bool,
    },
    /// `OPTIONS *` (RFC 9110 §9.3.7): what the server as a whole supports.
    Options,
    /// `100 Continue` (RFC 9110 §10.1.1), before the request body is read.
    Continue,
    /// 503 to a connection beyond `max-connections`, which closes after it.
    Unavailable,
    /// Handed to the application attached to request queue `queue`; answered later, with
    /// [`Answer::App`] (issue #12).
    Deferred {
        /// The queue's id.
        queue: u32,
    },
    /// An application's answer.
    App(&'a AppResponse),
    /// 503 with `Retry-After`: the request queue is full, or the application took too long.
    Busy {
        /// The one line of text in the body.
        text: &'static str,
    },
}

/// An application's answer to a request handed to it (issue #12): status, checked fields and
/// body. The server adds `Date`, `Server`, `Content-Length` and `Connection`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppResponse {
    pub(crate) status: u16,
    /// `Content-Type` and the application's other fields, as field lines.
    pub(crate) fields: Vec<u8>,
    pub(crate) body: Body,
    /// A streamed answer ([`AppResponse::streamed`]): `body` is its first piece.
    streamed: bool,
    /// A streamed answer's whole length, when the application knows it.
    pub(crate) length: Option<u64>,
}

impl AppResponse {
    /// A response with `status` (200..=599), `content_type` (empty: `application/octet-stream`),
    /// extra `Name: value` fields (those the server sets itself are refused, as for
    /// `cache put --header`) and `body`.
    ///
    /// # Errors
    /// [`CtlError::InvalidStatus`], [`CtlError::InvalidContentType`],
    /// [`CtlError::InvalidHeader`], [`CtlError::OutOfMemory`].
    pub fn new(
        status: u16,
        content_type: &str,
        headers: &[&str],
        body: Body,
    ) -> Result<Self, CtlError> {
        if !(200..=599).contains(&status) {
            return Err(CtlError::InvalidStatus);
        }
        let content_type = content_type_or_default(content_type)?;
        let mut fields = Vec::new();
        put(
            &mut fields,
            &[b"Content-Type: ", content_type.as_bytes(), b"\r\n"],
        )?;
        put(&mut fields, &[&header_lines(headers)?])?;
        Ok(Self {
            status,
            fields,
            body,
            streamed: false,
            length: None,
        })
    }

    /// Makes this the head and first piece of a streamed answer, whose further pieces come as
    /// [`crate::Outcome::Piece`]s: `length` is the whole body's when the application knows it
    /// (`Content-Length`); otherwise the body is chunked to an HTTP/1.1 client and ends with
    /// the connection for an HTTP/1.0 one. A streamed answer is never cached.
    #[must_use]
    pub fn streamed(mut self, length: Option<u64>) -> Self {
        self.streamed = true;
        self.length = length;
        self
    }

    /// Whether it is streamed ([`AppResponse::streamed`]).
    #[must_use]
    pub const fn is_streamed(&self) -> bool {
        self.streamed
    }

    /// Its status.
    #[must_use]
    pub const fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status forbids a body (RFC 9110 §15.3.5, §15.4.5).
    pub(crate) const fn bodiless(&self) -> bool {
        matches!(self.status, 204 | 304)
    }
}

const ALLOW: &[u8] = b"Allow: GET, HEAD\r\n";
/// How long a client should wait before it retries a request a busy queue refused.
const RETRY_AFTER: &[u8] = b"Retry-After: 1\r\n";

impl Answer<'_> {
    /// The page for a request refused while it was read or parsed.
    #[must_use]
    pub(crate) const fn refused(e: RequestError) -> Self {
        match e {
            // A 503 the client may retry: with `Retry-After`.
            RequestError::BodiesBusy => Self::Busy { text: e.reason() },
            _ => Self::Page {
                status: e.status(),
                text: e.reason(),
                allow: false,
            },
        }
    }

    /// Writes the answer: head and, unless `head_only`, body.
    ///
    /// # Errors
    /// [`OutOfMemory`]; the caller rolls back to its mark.
    pub(crate) fn write(
        &self,
        out: &mut Output,
        date: &HttpDate,
        persist: Persist,
        head_only: bool,
    ) -> Result<Served, OutOfMemory> {
        match *self {
            Self::Cached {
                entry,
                policy,
                method,
                headers,
            } => serve(entry, method, headers, date, persist, policy, out),
            Self::Page {
                status,
                text,
                allow,
            } => {
                let extra = if allow { ALLOW } else { b"" };
                page(out, status, date, extra, text, persist, head_only)
            }
            Self::Options => ResponseHead {
                status: 200,
                date,
                fields: &[ALLOW],
                length: Some(0),
                persist,
            }
            .write_whole(out, None, head_only, false),
            Self::Continue => ResponseHead {
                status: 100,
                date,
                fields: &[],
                length: None,
                persist,
            }
            .write_whole(out, None, head_only, false),
            Self::Unavailable => page(
                out,
                503,
                date,
                b"",
                "too many open connections",
                Persist::Close,
                head_only,
            ),
            // Nothing yet: the application answers later.
            Self::Deferred { .. } => Ok(Served {
                status: 0,
                body_bytes: 0,
                hit: false,
            }),
            Self::App(r) => {
                let len = u64::try_from(r.body.len()).unwrap_or(u64::MAX);
                let bodiless = r.bodiless();
                ResponseHead {
                    status: r.status,
                    date,
                    fields: &[&r.fields],
                    length: (!bodiless).then_some(len),
                    persist,
                }
                .write_whole(out, (!bodiless).then_some(&r.body), head_only, false)
            }
            Self::Busy { text } => page(out, 503, date, RETRY_AFTER, text, persist, head_only),
        }
    }
}

/// The `Connection` field for a response to `head`.
#[must_use]
pub(crate) const fn persist(head: &Head<'_>) -> Persist {
    match (head.keep_alive, head.version) {
        (false, _) => Persist::Close,
        (true, Version::Http10) => Persist::KeepAlive,
        (true, Version::Http11) => Persist::Default,
    }
}

/// What [`decide`] decided: the answer, whether the connection closes after it, and for a
/// request handed to an application, where its answer may be cached.
#[derive(Debug)]
pub(crate) struct Decided<'a> {
    pub answer: Answer<'a>,
    pub close: bool,
    pub cache_url: Option<String>,
}

/// Routes one parsed request (http.sys's routing order) and decides its answer; counts it in the
/// site's statistics. `scratch` holds the canonical path. Returns the answer and whether the
/// connection closes after it.
///
/// # Errors
/// [`OutOfMemory`] while canonicalising the path.
pub(crate) fn decide<'a>(
    local: Local,
    head: &'a Head<'a>,
    headers: &'a [httparse::Header<'a>],
    clock: &Clock,
    site: &'a Site,
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> Result<Decided<'a>, OutOfMemory> {
    let stats = site.stats();
    let decided = |answer, close| {
        Ok(Decided {
            answer,
            close,
            cache_url: None,
        })
    };
    let error = |status, text| {
        Stats::bump(&stats.errors);
        let allow = false;
        decided(
            Answer::Page {
                status,
                text,
                allow,
            },
            true,
        )
    };
    if head.asterisk {
        return decided(Answer::Options, !head.keep_alive);
    }
    let path = match canonicalize(head.path, scratch) {
        Ok(p) => p,
        Err(CanonError::OutOfMemory) => return Err(OutOfMemory),
        Err(e) => return error(400, e.message()),
    };
    let Some((reservation, rel)) = site.namespace().route(local, head.host, path) else {
        // http.sys answers 400 when no prefix matches (docs/http-semantics.md, "No match: 400").
        return error(400, "no reservation matches this URL");
    };
    let answer = routed(reservation, rel, head, headers, clock, site);
    let cache_url = match answer {
        Answer::Deferred { .. } => cache_url(reservation, rel, path, head, headers),
        _ => None,
    };
    Ok(Decided {
        answer,
        close: !head.keep_alive,
        cache_url,
    })
}

/// The answer to a request routed to `reservation`, `rel` below its prefix: its cache entry,
/// its queue's application, a 503 when that has none attached, or 404 or 405.
fn routed<'a>(
    reservation: &'a Reservation,
    rel: &[u8],
    head: &Head<'_>,
    headers: &'a [httparse::Header<'a>],
    clock: &Clock,
    site: &'a Site,
) -> Answer<'a> {
    let stats = site.stats();
    let entry = site
        .cache()
        .get(reservation.id, rel)
        .filter(|e| !e.is_expired(clock.now()));
    let queue = site.queues().for_reservation(reservation.id);
    // A cached entry answers before any queue (http.sys: the kernel cache first); every other
    // request under a queue's prefix goes to its application, or gets 503 with none attached.
    // The cache is keyed on the path alone, so under a queue a request with a query string is
    // the application's: the entry holds the answer to the path without one (issue #21). A
    // reservation with no queue ignores the query, as nginx's static files do.
    let cached = entry.is_some()
        && matches!(head.method, Method::Get | Method::Head)
        && (queue.is_none() || head.query.is_none());
    if let Some(queue) = queue
        && !cached
    {
        Stats::bump(&stats.misses);
        if queue.attached() == 0 {
            QueueStats::bump(&queue.stats.refused);
            return Answer::Busy {
                text: "no application is attached to this URL",
            };
        }
        return Answer::Deferred { queue: queue.id };
    }
    match (entry, head.method) {
        (None, _) => {
            Stats::bump(&stats.misses);
            Answer::Page {
                status: 404,
                text: "Not Found",
                allow: false,
            }
        }
        (Some(_), Method::Options | Method::Other) => {
            Stats::bump(&stats.errors);
            Answer::Page {
                status: 405,
                text: "Method Not Allowed",
                allow: true,
            }
        }
        (Some(entry), method @ (Method::Get | Method::Head)) => {
            Stats::bump(&stats.hits);
            Answer::Cached {
                entry,
                policy: reservation.cache_control.as_deref().unwrap_or_default(),
                method,
                headers,
            }
        }
    }
}

/// Where an application's answer to the request `head`, routed to `reservation` (`rel` below
/// its prefix, `path` its canonical path), may be cached: its URL as `cache put` takes it, when
/// the request allows caching at all (issue #12, http.sys's kernel-cache rules): a GET,
/// without a query string, a body, `Authorization` or `Cookie` (issue #21: a body could change
/// the answer, and the cache would then serve it to requests without one), and whose raw path
/// names what its canonical path names (they may differ only by escapes of unreserved
/// characters, `route::names_the_same`). The last rule keeps an application that reads the raw
/// target (the head it received) from answering for one path and having the answer cached
/// under another: `/a/x%2F..%2F..%2Fb` routes and keys as `/b`, but an upstream may serve it as
/// something else entirely (issue #21, finding 3). `None` too when memory runs out: the answer
/// is then not cached.
fn cache_url(
    reservation: &Reservation,
    rel: &[u8],
    path: &[u8],
    head: &Head<'_>,
    headers: &[httparse::Header<'_>],
) -> Option<String> {
    let private = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("authorization") || h.name.eq_ignore_ascii_case("cookie")
    });
    let body = !matches!(head.framing, Framing::None | Framing::Length(0));
    if head.method != Method::Get || private || head.query.is_some() || body {
        return None;
    }
    if !names_the_same(head.path, path) {
        return None;
    }
    let mut url = reservation.prefix.to_text().ok()?;
    mem::push_str(&mut url, core::str::from_utf8(rel).ok()?).ok()?;
    Some(url)
}

/// The fields of an application's answer that its cache entry keeps: `ETag` and
/// `Last-Modified` go (the entry's own strong `ETag` and the validators it computes replace
/// them), the rest stays.
///
/// # Errors
/// [`OutOfMemory`].
pub fn app_cache_fields<'h>(headers: &[&'h str]) -> Result<Vec<&'h str>, OutOfMemory> {
    let mut kept = Vec::new();
    kept.try_reserve_exact(headers.len())
        .map_err(|_| OutOfMemory)?;
    kept.extend(headers.iter().copied().filter(|line| {
        let name = line.split_once(':').map_or(*line, |(n, _)| n).trim();
        !name.eq_ignore_ascii_case("etag")
            && !name.eq_ignore_ascii_case("last-modified")
            && entry_field_allowed(line)
    }));
    Ok(kept)
}

/// An application's answer as it is to be cached: what both hosts put into a clone of the
/// site when [`app_response_cacheable`] allows it, at the request's cache URL
/// ([`crate::Delivery::cache_url`]).
#[derive(Clone, Copy, Debug)]
pub struct AppAnswer<'a> {
    /// Its status.
    pub status: u16,
    /// Its content type.
    pub content_type: &'a str,
    /// Its extra fields.
    pub headers: &'a [&'a str],
    /// Its body.
    pub body: &'a [u8],
}

/// Puts an application's answer into `site` at `url`, for `ttl` seconds.
///
/// # Errors
/// The cache's refusals ([`Site::put`]).
pub fn store_app_answer(
    site: &mut Site,
    url: &str,
    answer: &AppAnswer<'_>,
    ttl: u64,
    now: Instant,
) -> Result<(), CtlError> {
    let headers = app_cache_fields(answer.headers)?;
    let spec = EntrySpec {
        status: answer.status,
        content_type: answer.content_type,
        body: mem::vec_from(answer.body)?,
        ttl_secs: Some(ttl),
        headers: &headers,
        ..EntrySpec::default()
    };
    site.put(url, spec, now).map(drop)
}

/// Whether an application's response may be kept in the cache (issue #12): status 200, no
/// `Set-Cookie`, no `Cache-Control: no-store` or `private`, no `Content-Encoding` or `Vary`
/// (the cache keeps one representation per URL), and a body within `cache-max-entry-bytes`.
#[must_use]
pub fn app_response_cacheable(status: u16, headers: &[&str], body_len: u64, site: &Site) -> bool {
    let refuses = |line: &&str| {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let name = name.trim();
        name.eq_ignore_ascii_case("set-cookie")
            || name.eq_ignore_ascii_case("content-encoding")
            || name.eq_ignore_ascii_case("vary")
            || (name.eq_ignore_ascii_case("cache-control")
                && value.split(',').any(|d| {
                    let d = d.trim();
                    d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
                }))
    };
    status == 200 && !headers.iter().any(refuses) && body_len <= site.limits().cache_max_entry_bytes
}
