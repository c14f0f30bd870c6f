//! What khttpd and khttpctl share on one machine, so that the server does not depend on the
//! admin CLI's crate:
//!
//! - [`files`]: a directory tree as cache URLs, content types and modification times
//!   (`khttpd --site`, `khttpctl cache load`);
//! - [`compress`]: gzip and brotli variants built at load time;
//! - [`socket`]: where khttpd's control socket is by default, which is where khttpctl looks;
//! - [`endpoint`]: where a server is reached (`unix:`, `device:`);
//! - [`transport`]: one call over an endpoint;
//! - `admin` (feature `admin`): entry digests and `khttpctl apply` files, for khttpctl and
//!   khttpd.

#[cfg(feature = "admin")]
pub mod admin;
pub mod compress;
pub mod endpoint;
pub mod files;
pub mod socket;
pub mod transport;
