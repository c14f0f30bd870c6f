//! khttpctl's library: [`endpoint`], where the control endpoint is and the transports that
//! reach it (a Unix socket to khttpd; `DeviceIoControl` on `\\.\KHttp` on Windows). What
//! khttpctl shares with khttpd (loading a directory, compression, the socket's default place)
//! is in `khttp-local`.

pub mod endpoint;
