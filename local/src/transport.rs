//! How khttpctl and applications reach a khttp server: an [`Endpoint`] (`unix:PATH` for
//! khttpd's sockets, `device:NAME` for the driver's devices) and a [`Transport`] that makes
//! one call over it ([`connect`]). A Unix socket is used only once its server's user is known
//! to be one to trust (`socket::check_server`), before anything is sent: otherwise
//! [`connect`] fails with an [`UntrustedServer`].

use std::io;

pub use crate::endpoint::{Endpoint, UntrustedServer};

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

    /// Sends a request whose outcome the caller does not wait for (`QueueRespond` with
    /// `news_only`): `None` over khttpd's socket, which replies only with news, ahead of a
    /// later call's reply ([`Transport::next_reply`]). A device completes every call, so there
    /// it is a call, and its reply is returned.
    ///
    /// # Errors
    /// As [`Transport::call`].
    fn post(
        &mut self,
        code: u32,
        input: &[u8],
        direct: &[u8],
    ) -> io::Result<Option<(u32, Vec<u8>)>> {
        self.call(code, input, direct, 64).map(Some)
    }

    /// Reads one more reply without sending anything: after a news reply
    /// (`Status::News`), the call's own reply follows. Only a socket sends news.
    ///
    /// # Errors
    /// As [`Transport::call`]; `Unsupported` on a device.
    fn next_reply(&mut self, output_cap: u32) -> io::Result<(u32, Vec<u8>)> {
        let _ = output_cap;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only khttpd's socket sends news ahead of a reply",
        ))
    }
}

/// khttpd's Unix socket, one connection for many calls.
#[cfg(unix)]
#[derive(Debug)]
pub struct UnixTransport {
    stream: io::BufReader<std::os::unix::net::UnixStream>,
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
        crate::socket::call(&mut self.stream, code, input, direct, output_cap)
    }

    fn post(
        &mut self,
        code: u32,
        input: &[u8],
        direct: &[u8],
    ) -> io::Result<Option<(u32, Vec<u8>)>> {
        crate::socket::post(&mut self.stream, code, input, direct).map(|()| None)
    }

    fn next_reply(&mut self, output_cap: u32) -> io::Result<(u32, Vec<u8>)> {
        crate::socket::read_reply(&mut self.stream, output_cap)
    }
}

#[cfg(windows)]
#[allow(
    unsafe_code,
    reason = "DeviceIoControl and CreateFileW are FFI; each call has its SAFETY comment"
)]
mod device {
    //! `DeviceIoControl` on `\\.\KHttp` or `\\.\KHttpApp` (docs/driver-facts.md, "Opening the
    //! device from user mode"). The output buffer receives the status (`u32`) followed by the
    //! reply; for `cache put` (METHOD_IN_DIRECT) the output slot carries the bodies into the
    //! driver, so only the call's own success or failure comes back.

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

    // SAFETY: a file HANDLE is a process-wide kernel handle, valid on any thread; the transport
    // is used through `&mut self`, by one thread at a time, and closed once in `Drop`.
    unsafe impl Send for DeviceTransport {}

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
        fn ioctl_direct(
            &self,
            code: u32,
            input: &[u8],
            output: &mut [u8],
        ) -> io::Result<(u32, usize)> {
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
            Ok((status as u32, iosb.Information))
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
                let (status, _) = self.ioctl_direct(code, input, &mut direct.to_vec())?;
                if let Some(refused) = khttp_proto::Status::from_direct_ntstatus(status) {
                    let mut reply = Vec::new();
                    khttp_proto::error_reply(&mut reply, refused.message())
                        .map_err(|e| io::Error::other(e.message()))?;
                    return Ok((refused as u32, reply));
                }
                // An application's answer or piece: whether it was delivered and cached comes
                // back in the request's NTSTATUS (`RespondRow::from_ntstatus`).
                let mut reply = Vec::new();
                if let Some(row) = khttp_proto::reply::RespondRow::from_ntstatus(status) {
                    khttp_proto::write_rows(&mut reply, [row])
                        .map_err(|e| io::Error::other(e.message()))?;
                } else if status != 0 {
                    return Err(io::Error::other(format!(
                        "the driver failed the request with NTSTATUS {status:#010x}"
                    )));
                }
                return Ok((0, reply));
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

/// Opens `endpoint`; a Unix socket only when its server is one to trust.
///
/// # Errors
/// It cannot be reached, or its kind does not exist on this platform; `PermissionDenied`
/// with an [`UntrustedServer`] for a socket served by another user.
pub fn connect(endpoint: &Endpoint) -> io::Result<Box<dyn Transport + Send>> {
    match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            // Who listens, before a byte goes to it.
            crate::socket::check_server(&stream, path)?;
            // 64 KiB: a batch of requests, or a listing, in one read.
            let stream = io::BufReader::with_capacity(64 * 1024, stream);
            Ok(Box::new(UnixTransport { stream }))
        }
        #[cfg(windows)]
        Endpoint::Device(name) => Ok(Box::new(device::DeviceTransport::open(name)?)),
        #[allow(
            unreachable_patterns,
            reason = "which arms exist depends on the platform"
        )]
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this endpoint kind is not available on this platform",
        )),
    }
}
