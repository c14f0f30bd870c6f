//! khttpctl's library: what the admin CLI and `khttpd --site` share.
//!
//! - [`files`]: a directory tree as cache URLs, content types and modification times;
//! - [`compress`]: gzip and brotli variants built at load time;
//! - [`endpoint`]: where the control endpoint is, and the transports that reach it (a Unix socket
//!   to khttpd; `DeviceIoControl` on `\\.\KHttp` on Windows).

pub mod compress;
pub mod endpoint;
pub mod files;
