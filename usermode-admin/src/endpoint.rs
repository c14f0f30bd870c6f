//! The control endpoint: where it is and how to reach it.
//!
//! `ENDPOINT` is `unix:PATH` (khttpd) or `device:\\.\KHttp` (the driver). The default is
//! `$KHTTP_ENDPOINT`; else, on Windows, the device; else `/run/khttp/control.sock` when that
//! socket exists or the caller is root, and otherwise the per-user socket that an unprivileged
//! khttpd creates: `$XDG_RUNTIME_DIR/khttp/control.sock`, or `/tmp/khttp-UID/control.sock`.

use std::io;
use std::path::PathBuf;

use khttp_proto::reply::ErrorRow;
use khttp_proto::{Request, Row, Status, encode_request, read_rows};

#[cfg(unix)]
pub use khttp_local::socket::{SYSTEM_SOCKET, current_uid, default_server_socket, user_socket};
/// The driver's device (DESIGN §7).
pub const DEVICE: &str = r"\\.\KHttp";

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

/// One control call: code, input, direct data and the reply capacity; returns (status, output).
pub trait Transport {
    /// Performs one call.
    ///
    /// # Errors
    /// The endpoint could not be reached or broke the framing.
    fn call(
        &mut self,
        code: u32,
        input: &[u8],
        direct: &[u8],
        output_cap: u32,
    ) -> io::Result<(u32, Vec<u8>)>;
}

/// khttpd's Unix socket, one connection for many calls.
#[cfg(unix)]
#[derive(Debug)]
pub struct UnixTransport {
    stream: std::os::unix::net::UnixStream,
}

#[cfg(unix)]
impl Transport for UnixTransport {
    fn call(
        &mut self,
        code: u32,
        input: &[u8],
        direct: &[u8],
        output_cap: u32,
    ) -> io::Result<(u32, Vec<u8>)> {
        khttp_local::socket::call(&mut self.stream, code, input, direct, output_cap)
    }
}

#[cfg(windows)]
#[allow(
    unsafe_code,
    reason = "DeviceIoControl and CreateFileW are FFI; each call has its SAFETY comment"
)]
mod device {
    //! `DeviceIoControl` on `\\.\KHttp` (DRIVER-NOTES §3.4). The output buffer receives the
    //! status (`u32`) followed by the reply; for `cache put` (METHOD_IN_DIRECT) the output slot
    //! carries the bodies into the driver, so only the call's own success or failure comes back.

    use std::io;

    use windows_sys::Wdk::System::IO::NtDeviceIoControlFile;
    use windows_sys::Win32::Foundation::{
        CloseHandle, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, FILE_ATTRIBUTE_NORMAL, OPEN_EXISTING,
    };
    use windows_sys::Win32::System::IO::{DeviceIoControl, IO_STATUS_BLOCK};

    // The IOCTL encoding in khttp-proto must agree with the SDK's (checked at compile time).
    const _: () =
        assert!(khttp_proto::METHOD_BUFFERED == windows_sys::Win32::System::Ioctl::METHOD_BUFFERED);
    const _: () = assert!(
        khttp_proto::METHOD_IN_DIRECT == windows_sys::Win32::System::Ioctl::METHOD_IN_DIRECT
    );
    const _: () = assert!(
        khttp_proto::METHOD_OUT_DIRECT == windows_sys::Win32::System::Ioctl::METHOD_OUT_DIRECT
    );
    const _: () =
        assert!(khttp_proto::FILE_ANY_ACCESS == windows_sys::Win32::System::Ioctl::FILE_ANY_ACCESS);
    const _: () = assert!(
        khttp_proto::FILE_READ_ACCESS == windows_sys::Win32::System::Ioctl::FILE_READ_ACCESS
    );
    const _: () = assert!(
        khttp_proto::FILE_WRITE_ACCESS == windows_sys::Win32::System::Ioctl::FILE_WRITE_ACCESS
    );

    /// An open handle to the device.
    #[derive(Debug)]
    pub(super) struct DeviceTransport {
        /// INVARIANT: a valid handle from `CreateFileW`, closed once in `Drop`.
        handle: HANDLE,
    }

    impl DeviceTransport {
        /// Opens `name` (e.g. `\\.\KHttp`) for reading and writing.
        pub(super) fn open(name: &str) -> io::Result<Self> {
            let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
            let handle;
            // SAFETY: `wide` is a NUL-terminated UTF-16 string that outlives the call; the
            // security attributes and template handle may be null.
            unsafe {
                handle = CreateFileW(
                    wide.as_ptr(),
                    GENERIC_READ | GENERIC_WRITE,
                    0,
                    core::ptr::null(),
                    OPEN_EXISTING,
                    FILE_ATTRIBUTE_NORMAL,
                    core::ptr::null_mut(),
                );
            }
            if handle == INVALID_HANDLE_VALUE {
                return Err(io::Error::last_os_error());
            }
            Ok(Self { handle })
        }
    }

    /// The two buffer lengths as the `ULONG`s the I/O calls take.
    fn lengths(input: &[u8], output: &[u8]) -> io::Result<(u32, u32)> {
        let too_big = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer too large for DeviceIoControl",
            )
        };
        Ok((
            u32::try_from(input.len()).map_err(|_| too_big())?,
            u32::try_from(output.len()).map_err(|_| too_big())?,
        ))
    }

    impl DeviceTransport {
        /// One synchronous `DeviceIoControl`; returns the bytes the driver wrote.
        fn ioctl(&self, code: u32, input: &[u8], output: &mut [u8]) -> io::Result<usize> {
            let (in_len, out_len) = lengths(input, output)?;
            let mut returned = 0u32;
            let ok;
            // SAFETY: `input` and `output` are live buffers of the stated lengths for the whole
            // (synchronous) call; `handle` is valid (type invariant); no OVERLAPPED is used.
            unsafe {
                ok = DeviceIoControl(
                    self.handle,
                    code,
                    input.as_ptr().cast(),
                    in_len,
                    output.as_mut_ptr().cast(),
                    out_len,
                    &mut returned,
                    core::ptr::null_mut(),
                );
            }
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(returned as usize)
        }
    }

    impl DeviceTransport {
        /// One synchronous `NtDeviceIoControlFile`, for METHOD_IN_DIRECT: returns the request's
        /// NTSTATUS itself, which `DeviceIoControl` would turn into a Win32 error and lose.
        fn ioctl_direct(&self, code: u32, input: &[u8], output: &mut [u8]) -> io::Result<u32> {
            let (in_len, out_len) = lengths(input, output)?;
            // SAFETY: IO_STATUS_BLOCK is plain data; all zeroes is valid.
            let mut iosb: IO_STATUS_BLOCK = unsafe { core::mem::zeroed() };
            let status;
            // SAFETY: a synchronous handle (no FILE_FLAG_OVERLAPPED), so the call returns once
            // the request completes; `input`, `output` and `iosb` outlive it; no event or APC.
            unsafe {
                status = NtDeviceIoControlFile(
                    self.handle,
                    core::ptr::null_mut(),
                    None,
                    core::ptr::null(),
                    &mut iosb,
                    code,
                    input.as_ptr().cast(),
                    in_len,
                    output.as_mut_ptr().cast(),
                    out_len,
                );
            }
            Ok(status as u32)
        }
    }

    impl Drop for DeviceTransport {
        fn drop(&mut self) {
            // SAFETY: `handle` is valid (type invariant) and closed only here.
            unsafe {
                CloseHandle(self.handle);
            }
        }
    }

    impl super::Transport for DeviceTransport {
        fn call(
            &mut self,
            code: u32,
            input: &[u8],
            direct: &[u8],
            output_cap: u32,
        ) -> io::Result<(u32, Vec<u8>)> {
            if code & 3 == khttp_proto::METHOD_IN_DIRECT {
                // The "output" buffer carries the bodies into the driver; no reply comes back,
                // only the request's NTSTATUS, which carries a refusal (khttp-proto's
                // `Status::direct_ntstatus`) that becomes the usual one line of English.
                let status = self.ioctl_direct(code, input, &mut direct.to_vec())?;
                if let Some(refused) = khttp_proto::Status::from_direct_ntstatus(status) {
                    let mut reply = Vec::new();
                    khttp_proto::error_reply(&mut reply, refused.message())
                        .map_err(|e| io::Error::other(e.message()))?;
                    return Ok((refused as u32, reply));
                }
                if status != 0 {
                    return Err(io::Error::other(format!(
                        "the driver failed the request with NTSTATUS {status:#010x}"
                    )));
                }
                return Ok((0, Vec::new()));
            }
            let mut out = vec![0u8; (output_cap as usize).saturating_add(4)];
            let returned = self.ioctl(code, input, &mut out)?;
            let (status, reply) = out
                .get(..returned)
                .and_then(khttp_proto::reply::decode_device_reply)
                .ok_or_else(|| io::Error::other("the driver's reply is shorter than its status"))?;
            Ok((status, reply.to_vec()))
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
    transport: Box<dyn Transport>,
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
        let unreachable = |e| CallError::Unreachable(endpoint.clone(), e);
        let transport: Box<dyn Transport> = match endpoint {
            #[cfg(unix)]
            Endpoint::Unix(path) => Box::new(UnixTransport {
                stream: std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?,
            }),
            #[cfg(windows)]
            Endpoint::Device(name) => {
                Box::new(device::DeviceTransport::open(name).map_err(unreachable)?)
            }
            #[allow(
                unreachable_patterns,
                reason = "which arms exist depends on the platform"
            )]
            _ => {
                return Err(unreachable(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this endpoint kind is not available on this platform",
                )));
            }
        };
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
