//! khttp-app: answer the requests khttp's cache cannot (issue #12), as an application behind
//! http.sys answers what its kernel cache cannot.
//!
//! ```no_run
//! use khttp_app::{Queue, Response};
//!
//! let mut queue = Queue::attach("hello", &["http://+:8080/app/"])?;
//! loop {
//!     let request = queue.receive()?;
//!     let body = format!("hello from {}\n", request.url);
//!     request.respond(&mut queue, Response::new(200).header("X-App", "hello").body(body))?;
//! }
//! # Ok::<(), khttp_app::Error>(())
//! ```
//!
//! The endpoint is khttpd's application socket or the driver's application device:
//! `$KHTTP_APP_ENDPOINT` (`unix:PATH` or `device:\\.\KHttpApp`), else on Windows the device
//! and elsewhere `app.sock` beside the control socket where khttpctl finds it
//! ([`Queue::attach_to`] and [`Queue::attach_at`] take one explicitly). A process may attach only under reservations granted to its user
//! (`khttpctl urlacl add PREFIX --user NAME`); root and khttpd's own user may attach anywhere.
//! For concurrency, attach several handles ([`Queue::try_clone`]), one per thread: each
//! receives on its own.
//!
//! An answer whose body is large or produced bit by bit is streamed
//! ([`Request::respond_stream`]): the head goes at once and the body follows in pieces
//! through a [`BodyWriter`] (an [`io::Write`]), with `Content-Length` when the length is
//! known, chunked otherwise. Each piece waits while the client is more than khttp's stream
//! window (256 KiB) behind, so a slow client slows the application down instead of filling
//! memory. A streamed answer is never cached.
//!
//! ```no_run
//! # use khttp_app::{Queue, Response};
//! # let mut queue = Queue::attach("hello", &["http://+:8080/app/"])?;
//! use std::io::Write;
//!
//! let request = queue.receive()?;
//! let mut body = request.respond_stream(&mut queue, Response::new(200), None)?;
//! for i in 0..1000 {
//!     writeln!(body, "line {i}")?;
//! }
//! body.finish()?;
//! # Ok::<(), khttp_app::Error>(())
//! ```

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

mod body;
mod news;

pub use body::{BodyReader, BodyWriter};
pub use khttp_local::transport::Endpoint;
use khttp_local::transport::{Transport, UntrustedServer, connect};
pub use news::News;

use khttp_proto::reply::{AttachRow, BodyRow, ErrorRow, RequestRow, RespondRow};
use khttp_proto::spans::HeadParts;
use khttp_proto::{Request as Call, Respond, Row, Status, Streamed, encode_request, read_rows};

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The endpoint could not be reached, or the connection broke.
    Io(io::Error),
    /// khttpd refused: its status and one line of English.
    Refused(Status, String),
    /// The reply broke the protocol.
    Protocol(String),
    /// The call was wrong: a streamed body longer or shorter than the length it announced.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Its own one line: the endpoint, who serves it, and the refusal.
            Self::Io(e) if UntrustedServer::of(e).is_some() => write!(f, "{e}"),
            Self::Io(e) => write!(f, "khttp application endpoint: {e}"),
            Self::Refused(_, m) => f.write_str(m),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Invalid(m) => Self::new(io::ErrorKind::InvalidInput, m),
            e => Self::other(e.to_string()),
        }
    }
}

/// Requests one receive may take by default ([`Queue::set_batch`]).
pub const DEFAULT_BATCH: u32 = 16;

/// The driver's application device.
pub const APP_DEVICE: &str = r"\\.\KHttpApp";

/// The application endpoint: `$KHTTP_APP_ENDPOINT` (`unix:PATH` or `device:NAME`), else on
/// Windows the driver's device and elsewhere `app.sock` beside the default control socket.
#[must_use]
pub fn default_endpoint() -> Endpoint {
    if let Some(e) = std::env::var("KHTTP_APP_ENDPOINT")
        .ok()
        .and_then(|e| e.parse().ok())
    {
        return e;
    }
    #[cfg(windows)]
    {
        Endpoint::Device(APP_DEVICE.into())
    }
    #[cfg(unix)]
    {
        Endpoint::Unix(khttp_local::socket::default_app_socket())
    }
}

/// A handle attached to a request queue.
#[derive(Debug)]
pub struct Queue {
    link: Link,
    endpoint: Endpoint,
    name: String,
    prefixes: Vec<String>,
    id: u32,
    /// Requests one receive may take ([`Queue::set_batch`]).
    batch: u32,
    /// Requests taken by a batch and not yet returned by [`Queue::receive`].
    taken: std::collections::VecDeque<Request>,
    /// Whether [`Queue::receive`] fetches each body whole ([`Queue::set_whole_bodies`]).
    whole_bodies: bool,
}

/// A request the cache could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    id: u64,
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request-target as sent: path and query (or an absolute URL).
    pub url: String,
    /// The canonical path, which khttp routed and keys its cache on (escapes normalised, `%2F`,
    /// `%5C` and `\` as `/`, dot-segments removed), then `?` and the query as sent, if any:
    /// what a proxy forwards, since the raw `url` may name another resource to the upstream
    /// (http.sys's cooked URL).
    pub path: String,
    /// The client's address, `IP:PORT` (`[IPv6]:PORT`), or empty if khttp does not know it.
    pub remote: String,
    /// The header fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, decoded: all of it, or with [`Queue::set_whole_bodies`]`(false)` its first
    /// bytes only (what came with the head; [`Request::body_reader`] reads it all).
    pub body: Vec<u8>,
    /// The whole body's length.
    pub body_len: u64,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    content_type: String,
    headers: Vec<String>,
    body: Vec<u8>,
    cache_for: Option<Duration>,
}

impl Response {
    /// A response with `status` and an empty body.
    #[must_use]
    pub fn new(status: u16) -> Self {
        Self {
            status,
            content_type: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            cache_for: None,
        }
    }

    /// Adds a field (`Content-Type` goes to [`Response::content_type`]; the fields khttp sets
    /// itself, such as `Content-Length`, are refused when the response is sent).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.eq_ignore_ascii_case("content-type") {
            self.content_type = value.to_owned();
        } else {
            self.headers.push(format!("{name}: {value}"));
        }
        self
    }

    /// Sets `Content-Type` (default `application/octet-stream`).
    #[must_use]
    pub fn content_type(mut self, value: &str) -> Self {
        value.clone_into(&mut self.content_type);
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Lets khttp keep this response in its cache for `ttl` and answer later requests for the
    /// same URL itself, if its rules allow (GET, no query, no credentials, status 200, no
    /// `Set-Cookie`, within `cache-max-entry-bytes`).
    #[must_use]
    pub const fn cache_for(mut self, ttl: Duration) -> Self {
        self.cache_for = Some(ttl);
        self
    }
}

impl Response {
    /// The `QueueRespond` call that sends this response to request `id` (a streamed one is
    /// never cached, so it carries no TTL).
    fn call(&self, id: u64, stream: Option<Streamed>, news_only: bool) -> Respond<'_> {
        Respond {
            id,
            status: self.status,
            content_type: &self.content_type,
            headers: self.headers.iter().map(String::as_str).collect(),
            ttl: self
                .cache_for
                .filter(|_| stream.is_none())
                .map(|d| d.as_secs()),
            body_len: self.body.len() as u64,
            stream,
            news_only,
        }
    }
}

impl Queue {
    /// Attaches to the queue `name` for the reserved `prefixes`, at the default endpoint.
    ///
    /// # Errors
    /// [`Error::Io`] (no khttpd), [`Error::Refused`] (not granted, not reserved, …).
    pub fn attach(name: &str, prefixes: &[&str]) -> Result<Self, Error> {
        Self::attach_to(&default_endpoint(), name, prefixes)
    }

    /// As [`Queue::attach`], at khttpd's application socket `path`.
    ///
    /// # Errors
    /// As [`Queue::attach`].
    pub fn attach_at(path: &Path, name: &str, prefixes: &[&str]) -> Result<Self, Error> {
        Self::attach_to(&Endpoint::Unix(path.to_owned()), name, prefixes)
    }

    /// As [`Queue::attach`], at `endpoint`.
    ///
    /// # Errors
    /// As [`Queue::attach`].
    pub fn attach_to(endpoint: &Endpoint, name: &str, prefixes: &[&str]) -> Result<Self, Error> {
        // khttpd's socket returns whole replies; a device's output buffer is sized up front.
        let cap = match endpoint {
            Endpoint::Unix(_) => u32::MAX,
            Endpoint::Device(_) => 256 * 1024,
        };
        let mut link = Link(connect(endpoint)?, cap, Vec::new());
        let reply = call(
            &mut link,
            &Call::QueueAttach {
                name,
                prefixes: prefixes.to_vec(),
            },
            &[],
        )?;
        let id = one::<AttachRow>(&reply)?.queue;
        Ok(Self {
            link,
            endpoint: endpoint.clone(),
            name: name.to_owned(),
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            id,
            batch: DEFAULT_BATCH,
            taken: std::collections::VecDeque::new(),
            whole_bodies: true,
        })
    }

    /// Lets one receive take up to `n` requests (1..=64; default [`DEFAULT_BATCH`]) when more
    /// are waiting than the queue's other idle receivers could take; [`Queue::receive`] then
    /// returns them one by one without asking again. The batch adapts: with requests waiting
    /// for nobody, one call takes several (fewer calls under load); with receivers idle, or
    /// nothing else waiting, a receive takes one. A request taken in a batch waits for this
    /// handle even if another becomes free first: for long answers, `set_batch(1)`. Requests
    /// a handle holds when it goes are answered 503, as any it received.
    pub fn set_batch(&mut self, n: u32) {
        self.batch = n.clamp(1, khttp_proto::MAX_RECEIVE_BATCH);
    }

    /// Whether [`Queue::receive`] fetches each request's body whole (the default), or leaves
    /// the rest of a large one to [`Request::body_reader`], which brings it piece by piece as
    /// it is read: a proxy forwards a large upload without holding it whole.
    pub fn set_whole_bodies(&mut self, whole: bool) {
        self.whole_bodies = whole;
    }

    /// The news of answers sent without waiting ([`Request::send`]) that has come so far:
    /// those refused, and those whose client had left. It comes with the replies to later
    /// calls on this handle (a receive, say).
    pub fn take_news(&mut self) -> Vec<News> {
        std::mem::take(&mut self.link.2)
    }

    /// Another handle on the same queue, for another thread.
    ///
    /// # Errors
    /// As [`Queue::attach`].
    pub fn try_clone(&self) -> Result<Self, Error> {
        let prefixes: Vec<&str> = self.prefixes.iter().map(String::as_str).collect();
        Self::attach_to(&self.endpoint, &self.name, &prefixes)
    }

    /// Waits for the next request.
    ///
    /// # Errors
    /// [`Error::Io`] when khttpd goes away.
    pub fn receive(&mut self) -> Result<Request, Error> {
        loop {
            if let Some(r) = self.taken.pop_front() {
                return Ok(r);
            }
            let ask = Call::QueueReceive {
                queue: self.id,
                body_max: BODY_PIECE,
                max_requests: self.batch,
            };
            let reply = call(&mut self.link, &ask, &[])?;
            let rows =
                read_rows::<RequestRow<'_>>(&reply).map_err(|e| Error::Protocol(e.to_string()))?;
            if rows.is_empty() {
                return Err(Error::Protocol("a receive without a request".into()));
            }
            for row in rows {
                let request = if self.whole_bodies {
                    self.whole(row)
                } else {
                    parse_request(row)
                };
                match request {
                    Ok(r) => self.taken.push_back(r),
                    // One request this library cannot read, or whose client left while its
                    // body was fetched, is given up (its client, if still there, gets 503),
                    // not every later one.
                    Err(Error::Protocol(_) | Error::Refused(..)) => {
                        let _ = call(&mut self.link, &Call::QueueCancel { id: row.id }, &[]);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The request of `row`, with the rest of its body fetched.
    fn whole(&mut self, row: RequestRow<'_>) -> Result<Request, Error> {
        let mut request = parse_request(row)?;
        // The rest of a large body, piece by piece (`HttpReceiveRequestEntityBody`).
        let whole = usize::try_from(row.body_len)
            .map_err(|_| Error::Protocol("a body longer than memory".into()))?;
        request
            .body
            .try_reserve_exact(whole - request.body.len())
            .map_err(|_| Error::Protocol("a body longer than memory".into()))?;
        while request.body.len() < whole {
            let more = Call::QueueReceiveBody {
                id: request.id,
                offset: request.body.len() as u64,
            };
            let reply = call(&mut self.link, &more, &[])?;
            let piece = one::<BodyRow<'_>>(&reply)?.bytes;
            if piece.is_empty() || piece.len() > whole - request.body.len() {
                return Err(Error::Protocol("the body ended short of its length".into()));
            }
            request.body.extend_from_slice(piece);
        }
        Ok(request)
    }
}

impl Request {
    /// khttp's id for this request: what [`News`] of its answer names.
    #[must_use]
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// Reads the whole body from its start: the bytes [`Request::body`] holds, then the rest
    /// from khttp through `queue` (the handle that received the request) in pieces, as they
    /// are read. An error if khttp no longer holds the request (its client left) or the body
    /// ends short of [`Request::body_len`].
    pub fn body_reader<'a>(&'a self, queue: &'a mut Queue) -> BodyReader<'a> {
        BodyReader {
            queue,
            id: self.id,
            held: &self.body,
            len: self.body_len,
            offset: 0,
            piece: Vec::new(),
            at: 0,
        }
    }

    /// Sends `response` to the client, through the handle that received this request. Returns
    /// whether the client was still waiting.
    ///
    /// # Errors
    /// [`Error::Refused`] for a response khttp will not send (a field it sets itself, a bad
    /// status); [`Error::Io`].
    pub fn respond(self, queue: &mut Queue, response: Response) -> Result<bool, Error> {
        send_head(queue, self.id, &response, None)
    }

    /// As [`Request::respond`], without waiting for khttp's word on it: one message instead
    /// of a round trip over khttpd's socket (a device call completes as always). What becomes
    /// of the answer is news only when it went wrong: refused (its client gets 502) or its
    /// client no longer waiting. Such news arrives with the reply to a later call on this
    /// handle, and [`Queue::take_news`] gives it.
    ///
    /// # Errors
    /// [`Error::Io`] when khttpd has gone.
    pub fn send(self, queue: &mut Queue, response: Response) -> Result<(), Error> {
        if response.body.len() > POSTED_MAX {
            // Large answers take the checked path (a refusal before the body is read would
            // otherwise be left on the socket for the next call).
            let delivered = self.id;
            return match self.respond(queue, response) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    queue.link.2.push(News::undelivered(delivered));
                    Ok(())
                }
                Err(Error::Refused(status, message)) => {
                    queue.link.2.push(News::refused(delivered, status, message));
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        let respond = response.call(self.id, None, true);
        let mut input = Vec::new();
        let code = encode_request(&Call::QueueRespond(respond), &mut input);
        // A device's call comes back at once: its reply is the news, if any.
        if let Some((status, out)) = queue.link.0.post(code, &input, &response.body)? {
            let news = match Status::from_u32(status) {
                Some(Status::Ok) => one::<RespondRow>(&out)
                    .ok()
                    .filter(|r| !r.delivered)
                    .map(|_| News::undelivered(self.id)),
                Some(s) => Some(News::refused(self.id, s, refusal(s, &out))),
                None => Some(News::refused(
                    self.id,
                    Status::Malformed,
                    format!("status {status}"),
                )),
            };
            queue.link.2.extend(news);
        }
        Ok(())
    }

    /// Starts a streamed answer: `response`'s status and fields go now, with its body (if
    /// any) as the first piece; the rest is written to the returned [`BodyWriter`], and
    /// [`BodyWriter::finish`] ends it. `length` is the whole body's, when known
    /// (`Content-Length`); otherwise it is chunked (to an HTTP/1.0 client: ended by the
    /// close). The response's [`Response::cache_for`] is ignored: a streamed answer is never
    /// cached.
    ///
    /// # Errors
    /// As [`Request::respond`]; [`Error::Invalid`] for a first piece longer than `length`.
    pub fn respond_stream(
        self,
        queue: &mut Queue,
        response: Response,
        length: Option<u64>,
    ) -> Result<BodyWriter<'_>, Error> {
        let first = response.body.len() as u64;
        if length.is_some_and(|n| first > n) {
            return Err(Error::Invalid(format!(
                "the first piece ({first} bytes) is longer than the announced length"
            )));
        }
        let stream = Streamed { length };
        let delivered = send_head(queue, self.id, &response, Some(stream))?;
        Ok(BodyWriter {
            queue,
            id: self.id,
            left: length.map(|n| n - first),
            buf: Vec::new(),
            delivered,
            finished: false,
        })
    }

    /// Gives the request up: the client gets 503.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn cancel(self, queue: &mut Queue) -> Result<(), Error> {
        call(&mut queue.link, &Call::QueueCancel { id: self.id }, &[])?;
        Ok(())
    }

    /// The first value of the field `name` (ASCII case-insensitive), as text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Sends a response's head and body (whole, or the first piece of a stream).
fn send_head(
    queue: &mut Queue,
    id: u64,
    response: &Response,
    stream: Option<Streamed>,
) -> Result<bool, Error> {
    let respond = response.call(id, stream, false);
    let reply = call(
        &mut queue.link,
        &Call::QueueRespond(respond),
        &response.body,
    )?;
    Ok(one::<RespondRow>(&reply)?.delivered)
}

/// Answers sent without waiting ([`Request::send`]) are at most this long.
const POSTED_MAX: usize = 1 << 20;

/// Body bytes asked for with a request's head; the rest comes in further calls, each as large
/// as the endpoint gives (a device: its reply room).
const BODY_PIECE: u64 = 192 * 1024;

/// An open endpoint, and the reply room it is asked with first.
/// A connection to the endpoint: its transport, the reply room offered, and the news of answers
/// sent without waiting that came ahead of later replies ([`Queue::take_news`]).
struct Link(Box<dyn Transport + Send>, u32, Vec<News>);

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Link")
    }
}

/// One call: the request, its direct bytes; the reply on success. A reply larger than the
/// room offered (a device's output buffer) is asked for again with the room it needs.
fn call(link: &mut Link, req: &Call<'_>, direct: &[u8]) -> Result<Vec<u8>, Error> {
    let mut input = Vec::new();
    let code = encode_request(req, &mut input);
    let mut cap = link.1;
    let (status, out) = loop {
        let (mut status, mut out) = link.0.call(code, &input, direct, cap)?;
        // News of earlier answers comes first; this call's reply follows.
        while status == Status::News as u32 {
            link.2.push(News::from_reply(&out)?);
            (status, out) = link.0.next_reply(cap)?;
        }
        if Status::from_u32(status) != Some(Status::BufferTooSmall) {
            break (status, out);
        }
        let needed = khttp_proto::Header::peek(&out)
            .map_err(|e| Error::Protocol(e.to_string()))?
            .size;
        if needed <= cap {
            return Err(Error::Protocol("the reply kept growing".into()));
        }
        cap = needed;
    };
    let status =
        Status::from_u32(status).ok_or_else(|| Error::Protocol(format!("status {status}")))?;
    if status == Status::Ok {
        return Ok(out);
    }
    Err(Error::Refused(status, refusal(status, &out)))
}

/// The one line of a refusal's reply (its status's own message when it carries none).
fn refusal(status: Status, out: &[u8]) -> String {
    read_rows::<ErrorRow<'_>>(out)
        .ok()
        .and_then(|r| r.first().map(|r| r.message.to_owned()))
        .unwrap_or_else(|| status.message().to_owned())
}

/// The one row a reply carries.
fn one<'a, R: Row<'a>>(reply: &'a [u8]) -> Result<R, Error> {
    let mut rows = read_rows::<R>(reply).map_err(|e| Error::Protocol(e.to_string()))?;
    match (rows.pop(), rows.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(Error::Protocol("expected one row".into())),
    }
}

/// The request of `row`, its method, target and fields taken where khttp's parser found them
/// (`RequestRow::spans`), not parsed again.
fn parse_request(row: RequestRow<'_>) -> Result<Request, Error> {
    if row.body.len() as u64 > row.body_len {
        return Err(Error::Protocol("a body longer than its length".into()));
    }
    let parts = HeadParts::read(row.head, row.spans)
        .map_err(|_| Error::Protocol("a request head whose index is wrong".into()))?;
    // Tokens and a target that khttp's parser accepted are ASCII; anything else is not
    // this library's to guess at.
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Error::Protocol("a request head that is not text".into()))
    };
    let mut headers = Vec::with_capacity(parts.field_count());
    for (name, value) in parts.fields() {
        headers.push((text(name)?, value.to_vec()));
    }
    Ok(Request {
        id: row.id,
        method: text(parts.method)?,
        url: text(parts.target)?,
        // ASCII as khttp sends it (bytes past ASCII escaped).
        path: String::from_utf8_lossy(row.path).into_owned(),
        remote: row.remote.to_owned(),
        headers,
        body: row.body.to_vec(),
        body_len: row.body_len,
    })
}
