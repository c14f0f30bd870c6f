//! The control endpoint: where it is and how to reach it.
//!
//! `ENDPOINT` is `unix:PATH` (khttpd) or `device:\\.\KHttp` (the driver). The default is
//! `$KHTTP_ENDPOINT`; else, on Windows, the device; else `/run/khttp/control.sock` when that
//! socket exists or the caller is root, and otherwise the per-user socket that an unprivileged
//! khttpd creates: `$XDG_RUNTIME_DIR/khttp/control.sock`, or `/tmp/khttp-UID/control.sock`.

use std::io;

use khttp_proto::reply::ErrorRow;
use khttp_proto::{Request, Row, Status, encode_request, read_rows};

#[cfg(unix)]
pub use khttp_local::socket::{SYSTEM_SOCKET, current_uid, default_server_socket, user_socket};
/// The driver's device, the default endpoint on Windows.
pub const DEVICE: &str = r"\\.\KHttp";

pub use khttp_local::transport::{Endpoint, Transport, UntrustedServer};

/// The endpoint khttpctl uses when `--endpoint` is not given.
#[must_use]
pub fn default_endpoint() -> Endpoint {
    if let Some(e) = std::env::var("KHTTP_ENDPOINT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return e;
    }
    #[cfg(windows)]
    {
        Endpoint::Device(DEVICE.into())
    }
    #[cfg(unix)]
    {
        if std::path::Path::new(SYSTEM_SOCKET).exists() || current_uid() == Some(0) {
            Endpoint::Unix(SYSTEM_SOCKET.into())
        } else {
            Endpoint::Unix(user_socket())
        }
    }
}

/// Why a call failed, as one line of English for the CLI.
#[derive(Debug)]
pub enum CallError {
    /// The endpoint is not reachable.
    Unreachable(Endpoint, io::Error),
    /// The server refused the request.
    Refused(Status, String),
    /// The server's reply broke the protocol.
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Its own one line: the endpoint, who serves it, and the refusal.
            Self::Unreachable(_, err) if UntrustedServer::of(err).is_some() => write!(f, "{err}"),
            Self::Unreachable(e, err) if err.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "permission denied opening {e} (run as the user that runs khttpd, or root)"
                )
            }
            Self::Unreachable(e, err) => write!(
                f,
                "cannot reach the khttp control endpoint {e}: {err} (is khttpd running?)"
            ),
            Self::Refused(_, msg) => f.write_str(msg),
            Self::Protocol(msg) => write!(f, "protocol error: {msg}"),
        }
    }
}

/// A successful reply: its bytes, read as the command's typed rows ([`Reply::rows`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply(Vec<u8>);

impl Reply {
    /// The reply's rows, as the command's row type (`khttp_proto::reply`).
    ///
    /// # Errors
    /// [`CallError::Protocol`] when the reply is not a table of `R`.
    pub fn rows<'a, R: Row<'a>>(&'a self) -> Result<Vec<R>, CallError> {
        read_rows(&self.0).map_err(|e| CallError::Protocol(e.to_string()))
    }

    /// The reply's bytes.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The one row a command answers with (`version`, `cache put`, `cache flush`).
    ///
    /// # Errors
    /// [`CallError::Protocol`] when there is not exactly one `R`.
    pub fn row<'a, R: Row<'a>>(&'a self) -> Result<R, CallError> {
        let mut rows = self.rows::<R>()?;
        match (rows.pop(), rows.is_empty()) {
            (Some(r), true) => Ok(r),
            _ => Err(CallError::Protocol("expected a one-row reply".into())),
        }
    }
}

/// A connected control client.
pub struct Client {
    endpoint: Endpoint,
    transport: Box<dyn Transport + Send>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint`.
    ///
    /// # Errors
    /// [`CallError::Unreachable`].
    pub fn connect(endpoint: &Endpoint) -> Result<Self, CallError> {
        let transport = khttp_local::transport::connect(endpoint)
            .map_err(|e| CallError::Unreachable(endpoint.clone(), e))?;
        Ok(Self {
            endpoint: endpoint.clone(),
            transport,
        })
    }

    /// Sends `req` (with `direct` bodies for `cache put`) and returns the reply.
    ///
    /// # Errors
    /// [`CallError`]: unreachable, refused (with the server's one line), or a broken reply.
    pub fn call(&mut self, req: &Request<'_>, direct: &[u8]) -> Result<Reply, CallError> {
        let mut input = Vec::new();
        let code = encode_request(req, &mut input);
        let mut cap: u32 = 64 * 1024;
        for _ in 0..3 {
            let (status, out) = self
                .transport
                .call(code, &input, direct, cap)
                .map_err(|e| CallError::Unreachable(self.endpoint.clone(), e))?;
            let status = Status::from_u32(status)
                .ok_or_else(|| CallError::Protocol(format!("unknown status {status}")))?;
            if status == Status::BufferTooSmall {
                let needed = khttp_proto::Header::peek(&out)
                    .map_err(|e| CallError::Protocol(e.to_string()))?
                    .size;
                cap = needed.max(cap.saturating_mul(2));
                continue;
            }
            if status == Status::Ok {
                return Ok(Reply(out));
            }
            let message = read_rows::<ErrorRow<'_>>(&out)
                .ok()
                .and_then(|rows| rows.first().map(|r| r.message.to_string()))
                .unwrap_or_else(|| status.message().to_string());
            return Err(CallError::Refused(status, message));
        }
        Err(CallError::Protocol("the reply kept growing".into()))
    }
}

/// khttpctl's client is how `khttpctl apply` and `cache load` reach a server.
impl khttp_local::admin::Control for Client {
    fn call(&mut self, req: &Request<'_>, direct: &[u8]) -> Result<Vec<u8>, String> {
        Self::call(self, req, direct)
            .map(Reply::into_bytes)
            .map_err(|e| e.to_string())
    }
}
