//! What each request is answered with (DESIGN §2–§4), decided in one place and written by one
//! head writer ([`crate::http1::response::ResponseHead`]).
//!
//! A request becomes an [`Answer`] ([`decide`]): a cache entry, an error page, the server's
//! `OPTIONS *` answer, an interim `100 Continue`, or the 503 a host sends to a connection over
//! `max-connections`. [`Answer::write`] turns any of them into bytes. Statistics are counted
//! where the answer is decided, so that every host counts the same way.

use alloc::vec::Vec;

use crate::cache::entry::Entry;
use crate::cache::serve::serve;
use crate::error::{OutOfMemory, RequestError};
use crate::http1::request::{Head, Method, Version};
use crate::http1::response::{Persist, ResponseHead, Served, page};
use crate::out::Output;
use crate::route::{CanonError, Local, canonicalize};
use crate::site::{Site, Stats};
use crate::time::{Clock, HttpDate};

/// How one request is answered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer<'a> {
    /// A cache entry answers a GET or HEAD (with its preconditions, ranges and codings).
    Cached {
        /// The entry.
        entry: &'a Entry,
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
}

const ALLOW: &[u8] = b"Allow: GET, HEAD\r\n";

impl Answer<'_> {
    /// The page for a request refused while it was read or parsed.
    #[must_use]
    pub(crate) const fn refused(e: RequestError) -> Self {
        Self::Page {
            status: e.status(),
            text: e.reason(),
            allow: false,
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
                method,
                headers,
            } => serve(entry, method, headers, date, persist, out),
            Self::Page {
                status,
                text,
                allow,
            } => {
                let extra = if allow { ALLOW } else { b"" };
                page(out, status, date, extra, text, persist, head_only)
            }
            Self::Options => {
                ResponseHead {
                    status: 200,
                    date,
                    fields: &[ALLOW],
                    length: Some(0),
                    persist,
                }
                .write(out)?;
                Ok(Served {
                    status: 200,
                    body_bytes: 0,
                    hit: false,
                })
            }
            Self::Continue => {
                ResponseHead {
                    status: 100,
                    date,
                    fields: &[],
                    length: None,
                    persist,
                }
                .write(out)?;
                Ok(Served {
                    status: 100,
                    body_bytes: 0,
                    hit: false,
                })
            }
            Self::Unavailable => page(
                out,
                503,
                date,
                b"",
                "too many open connections",
                Persist::Close,
                head_only,
            ),
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

/// Routes one parsed request (HTTPSYS-REFERENCE §1.3) and decides its answer; counts it in the
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
) -> Result<(Answer<'a>, bool), OutOfMemory> {
    let stats = site.stats();
    let error = |status, text| {
        Stats::bump(&stats.errors);
        Ok((
            Answer::Page {
                status,
                text,
                allow: false,
            },
            true,
        ))
    };
    if head.asterisk {
        return Ok((Answer::Options, !head.keep_alive));
    }
    let path = match canonicalize(head.path, scratch) {
        Ok(p) => p,
        Err(CanonError::OutOfMemory) => return Err(OutOfMemory),
        Err(e) => return error(400, e.message()),
    };
    let Some((reservation, rel)) = site.namespace().route(local, head.host, path) else {
        // http.sys answers 400 when no prefix matches (HTTPSYS-REFERENCE §1.3, step 5).
        return error(400, "no reservation matches this URL");
    };
    let entry = site
        .cache()
        .get(reservation.id, rel)
        .filter(|e| !e.is_expired(clock.now()));
    let answer = match (entry, head.method) {
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
                method,
                headers,
            }
        }
    };
    Ok((answer, !head.keep_alive))
}
