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

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

pub use khttp_local::transport::Endpoint;
use khttp_local::transport::{Transport, connect};

use khttp_proto::reply::{AttachRow, ErrorRow, RequestRow, RespondRow};
use khttp_proto::{Request as Call, Respond, Row, Status, encode_request, read_rows};

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The endpoint could not be reached, or the connection broke.
    Io(io::Error),
    /// khttpd refused: its status and one line of English.
    Refused(Status, String),
    /// The reply broke the protocol.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "khttp application endpoint: {e}"),
            Self::Refused(_, m) => f.write_str(m),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

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
}

/// A request the cache could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    id: u64,
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request-target as sent: path and query (or an absolute URL).
    pub url: String,
    /// The header fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, decoded.
    pub body: Vec<u8>,
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
        let mut link = Link(connect(endpoint)?, cap);
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
        })
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
        let reply = call(&mut self.link, &Call::QueueReceive { queue: self.id }, &[])?;
        let row = one::<RequestRow<'_>>(&reply)?;
        parse_request(row)
    }
}

impl Request {
    /// Sends `response` to the client, through the handle that received this request. Returns
    /// whether the client was still waiting.
    ///
    /// # Errors
    /// [`Error::Refused`] for a response khttp will not send (a field it sets itself, a bad
    /// status); [`Error::Io`].
    pub fn respond(self, queue: &mut Queue, response: Response) -> Result<bool, Error> {
        let headers: Vec<&str> = response.headers.iter().map(String::as_str).collect();
        let respond = Respond {
            id: self.id,
            status: response.status,
            content_type: &response.content_type,
            headers,
            ttl: response.cache_for.map(|d| d.as_secs()),
            body_len: response.body.len() as u64,
        };
        let reply = call(
            &mut queue.link,
            &Call::QueueRespond(respond),
            &response.body,
        )?;
        Ok(one::<RespondRow>(&reply)?.delivered)
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

/// An open endpoint, and the reply room it is asked with first.
struct Link(Box<dyn Transport + Send>, u32);

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
        let (status, out) = link.0.call(code, &input, direct, cap)?;
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
    let message = read_rows::<ErrorRow<'_>>(&out)
        .ok()
        .and_then(|r| r.first().map(|r| r.message.to_owned()))
        .unwrap_or_else(|| status.message().to_owned());
    Err(Error::Refused(status, message))
}

/// The one row a reply carries.
fn one<'a, R: Row<'a>>(reply: &'a [u8]) -> Result<R, Error> {
    let mut rows = read_rows::<R>(reply).map_err(|e| Error::Protocol(e.to_string()))?;
    match (rows.pop(), rows.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(Error::Protocol("expected one row".into())),
    }
}

/// The head khttpd hands over (already validated by its parser) as a [`Request`].
fn parse_request(row: RequestRow<'_>) -> Result<Request, Error> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(row.head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Error::Protocol("an unparsable request head".into())),
    }
    Ok(Request {
        id: row.id,
        method: req.method.unwrap_or_default().to_owned(),
        url: req.path.unwrap_or_default().to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
        body: row.body.to_vec(),
    })
}
