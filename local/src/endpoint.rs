//! Where a khttp server is reached ([`Endpoint`]) and the refusal to use a Unix socket whose
//! server is not one to trust ([`UntrustedServer`]). A leaf: `socket` and `transport` both use
//! it, and neither imports the other's callers.

use std::io;
use std::path::PathBuf;

/// A control endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// khttpd's Unix socket.
    Unix(PathBuf),
    /// The driver's device.
    Device(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Device(d) => write!(f, "device:{d}"),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            Ok(Self::Unix(p.into()))
        } else if let Some(d) = s.strip_prefix("device:") {
            Ok(Self::Device(d.into()))
        } else {
            Err(format!("endpoint {s:?} must start with unix: or device:"))
        }
    }
}

/// Why `transport::connect` would not use a Unix socket: the user serving it is neither root, nor this
/// process's, nor one root made the socket's directory for (`crate::socket::check_server`). It is
/// the payload of the `PermissionDenied` error `transport::connect` returns, and its message the one
/// line to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UntrustedServer {
    /// The socket.
    pub endpoint: Endpoint,
    /// The uid serving it, when the system said.
    pub uid: Option<u32>,
}

impl UntrustedServer {
    /// The refusal `e` carries, if it is one.
    #[must_use]
    pub fn of(e: &io::Error) -> Option<&Self> {
        e.get_ref()?.downcast_ref()
    }
}

impl std::fmt::Display for UntrustedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.uid {
            Some(uid) => write!(
                f,
                "{} is served by uid {uid}, not by root or you: refusing to use it",
                self.endpoint
            ),
            None => write!(
                f,
                "cannot tell which user serves {}: refusing to use it",
                self.endpoint
            ),
        }
    }
}

impl std::error::Error for UntrustedServer {}
