//! TEST HARNESS ONLY: `queue-probe.exe PORT PREFIX_A PREFIX_B` | `queue-probe.exe flood N PREFIX
//! QUEUE`
//!
//! `flood N PREFIX QUEUE` opens N handles on `\\.\KHttpApp` and attaches each to QUEUE for
//! PREFIX, prints `held H refused R`, holds them until its standard input ends, and exits
//! (issue #22, defect 10: a user's handles are capped). A handle is refused when its open fails
//! with `ERROR_NOT_ENOUGH_QUOTA` (the driver's STATUS_QUOTA_EXCEEDED), or, under Wine, which
//! keeps the handle whatever status the driver completed the create with, when its attach fails
//! with `ERROR_INVALID_HANDLE` (the KMDF stand-in's answer on such a handle). Anything else:
//! one line on stderr and exit 1.
//!
//! One handle on `\\.\KHttpApp`, opened for overlapped I/O, attached to two queues: `probe-a`
//! for PREFIX_A and `probe-b` for PREFIX_B (both reserved by the suite). A receive for `probe-b`
//! waits while a client asks for a URL under PREFIX_A: that receive must not take the request
//! (issue #22, defect 7: the driver once handed a request to any parked receive of a handle
//! attached to its queue, whatever queue the receive had asked for). A receive for `probe-a`
//! then takes it, the probe cancels it (the client gets 503), cancels the waiting receive and
//! exits 0. Anything else: one line on stderr and exit 1.
//!
//! khttp-app cannot make this case: it opens a synchronous handle per queue, and the I/O manager
//! runs one call at a time on a synchronous handle. Any program can open the device for
//! overlapped I/O, so the driver must get it right.
//!
//! Windows facts (Microsoft Learn): `CreateFileW` with `FILE_FLAG_OVERLAPPED`, `DeviceIoControl`
//! returning FALSE with `ERROR_IO_PENDING` for a pending request, `GetOverlappedResult`,
//! `CancelIoEx` (the request then completes with `ERROR_OPERATION_ABORTED`), `CreateEventW`,
//! `WaitForSingleObject`.

#![allow(
    unsafe_code,
    reason = "the Win32 calls of an overlapped DeviceIoControl"
)]

use std::ffi::c_void;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use khttp_proto::reply::{AttachRow, RequestRow, decode_device_reply};
use khttp_proto::{Request, encode_request, read_rows};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INVALID_HANDLE, ERROR_IO_PENDING, ERROR_NOT_ENOUGH_QUOTA,
    ERROR_OPERATION_ABORTED, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE,
    INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{CreateFileW, FILE_FLAG_OVERLAPPED, OPEN_EXISTING};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject};

/// Room for a receive's reply (one request, its head and no body).
const OUT_LEN: usize = 64 * 1024;

/// One overlapped `DeviceIoControl`: its buffers and `OVERLAPPED` stay in this box, at fixed
/// addresses, until the request has completed.
struct Call {
    ov: OVERLAPPED,
    input: Vec<u8>,
    out: Vec<u8>,
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.ov.hEvent.is_null() {
            // SAFETY: our own event handle, closed once.
            unsafe { CloseHandle(self.ov.hEvent) };
        }
    }
}

/// Starts `req` on `h`; the box must outlive the request (every caller waits for it).
fn start(h: HANDLE, req: &Request<'_>) -> Result<Box<Call>, String> {
    let mut input = Vec::new();
    let code = encode_request(req, &mut input);
    // SAFETY: OVERLAPPED is plain data; all zeroes is its documented initial state.
    let ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    let mut call = Box::new(Call {
        ov,
        input,
        out: vec![0; OUT_LEN + 4],
    });
    // SAFETY: default security, manual reset, unsignalled, no name.
    call.ov.hEvent = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if call.ov.hEvent.is_null() {
        return Err(format!("CreateEventW: {}", std::io::Error::last_os_error()));
    }
    let (in_len, out_len) = (call.input.len() as u32, call.out.len() as u32);
    let c = &mut *call;
    // SAFETY: `h` is an overlapped handle; the buffers and OVERLAPPED live in the box, which the
    // caller keeps until the request completes (it waits for it, or cancels and then waits).
    let ok = unsafe {
        DeviceIoControl(
            h,
            code,
            c.input.as_ptr().cast::<c_void>(),
            in_len,
            c.out.as_mut_ptr().cast::<c_void>(),
            out_len,
            std::ptr::null_mut(),
            &mut c.ov,
        )
    };
    // SAFETY: reads this thread's last error.
    if ok == 0 && unsafe { GetLastError() } != ERROR_IO_PENDING {
        return Err(format!(
            "DeviceIoControl {code:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(call)
}

/// Why a call failed: the driver's refusal (khttp-proto's `Status`), or anything else.
#[derive(Debug)]
enum Failure {
    Refused(u32),
    Win32(u32),
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Self::Other(s.to_owned())
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(status) => format!("refused with status {status}"),
            Failure::Win32(e) => format!("the request failed: error {e}"),
            Failure::Other(s) => s,
        }
    }
}

/// Waits for `call` and returns its reply rows' bytes (after the status), or why it failed.
fn finish(h: HANDLE, call: &mut Call) -> Result<Vec<u8>, Failure> {
    let mut n = 0u32;
    // SAFETY: the request was started on `h` with this OVERLAPPED; wait for it.
    if unsafe { GetOverlappedResult(h, &call.ov, &mut n, 1) } == 0 {
        // SAFETY: reads this thread's last error.
        let e = unsafe { GetLastError() };
        return Err(Failure::Win32(e));
    }
    let (status, reply) = call
        .out
        .get(..n as usize)
        .and_then(decode_device_reply)
        .ok_or("a reply shorter than its status")?;
    if status != 0 {
        return Err(Failure::Refused(status));
    }
    Ok(reply.to_vec())
}

/// A call started and waited for.
fn sync(h: HANDLE, req: &Request<'_>) -> Result<Vec<u8>, Failure> {
    let mut call = start(h, req)?;
    finish(h, &mut call)
}

fn attach(h: HANDLE, name: &str, prefix: &str) -> Result<u32, Failure> {
    let reply = sync(
        h,
        &Request::QueueAttach {
            name,
            prefixes: vec![prefix],
        },
    )?;
    let rows = read_rows::<AttachRow>(&reply).map_err(|e| e.to_string())?;
    Ok(rows.first().ok_or("an attach without a row")?.queue)
}

fn receive(h: HANDLE, queue: u32) -> Result<Box<Call>, String> {
    start(
        h,
        &Request::QueueReceive {
            queue,
            body_max: 0,
            max_requests: 1,
        },
    )
}

/// The path of the one request in a receive's reply, and its id.
fn taken(reply: &[u8]) -> Result<(u64, String), String> {
    let rows = read_rows::<RequestRow<'_>>(reply).map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("a receive without a request")?;
    Ok((row.id, String::from_utf8_lossy(row.path).into_owned()))
}

fn run(port: u16, prefix_a: &str, prefix_b: &str) -> Result<(), String> {
    let path_a = prefix_a
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .ok_or("PREFIX_A has no path")?
        .to_owned();
    let h = open().map_err(|e| format!("open: error {e}"))?;
    let a = attach(h, "probe-a", prefix_a)?;
    let b = attach(h, "probe-b", prefix_b)?;
    let mut wrong = receive(h, b)?;
    // A client asks for a URL of queue A.
    let target = format!("{path_a}x");
    let client = std::thread::spawn(move || -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return "no connection".into();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = write!(s, "GET {target} HTTP/1.1\r\nHost: probe\r\n\r\n");
        let mut head = [0u8; 64];
        let n = s.read(&mut head).unwrap_or(0);
        String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: our own event handle.
    match unsafe { WaitForSingleObject(wrong.ov.hEvent, 0) } {
        WAIT_TIMEOUT => {}
        WAIT_OBJECT_0 => {
            let got = finish(h, &mut wrong)
                .map_err(String::from)
                .and_then(|r| taken(&r));
            return Err(format!(
                "a receive for queue probe-b completed with a request of probe-a: {got:?}"
            ));
        }
        other => return Err(format!("WaitForSingleObject: {other}")),
    }
    // The receive for A takes it.
    let mut right = receive(h, a)?;
    // SAFETY: our own event handle.
    if unsafe { WaitForSingleObject(right.ov.hEvent, 10_000) } != WAIT_OBJECT_0 {
        return Err("a receive for queue probe-a did not get its request in 10 s".into());
    }
    let (id, path) = taken(&finish(h, &mut right)?)?;
    if !path.starts_with(&path_a) {
        return Err(format!("the receive for probe-a got {path}"));
    }
    sync(h, &Request::QueueCancel { id })?;
    let status = client.join().map_err(|_| "the client panicked")?;
    if !status.contains(" 503 ") {
        return Err(format!(
            "the cancelled request's client got {status:?}, not 503"
        ));
    }
    // The receive for B is still waiting: cancel it, and it must end cancelled.
    // SAFETY: the request was started on `h` with this OVERLAPPED, which is still live.
    unsafe { CancelIoEx(h, &wrong.ov) };
    let mut n = 0u32;
    // SAFETY: as above; wait for the cancelled request to complete before its box is freed.
    let ok = unsafe { GetOverlappedResult(h, &wrong.ov, &mut n, 1) };
    // SAFETY: reads this thread's last error.
    if ok != 0 || unsafe { GetLastError() } != ERROR_OPERATION_ABORTED {
        return Err("the waiting receive for probe-b did not end cancelled".into());
    }
    // SAFETY: our handle, no request on it in progress.
    unsafe { CloseHandle(h) };
    Ok(())
}

/// Opens the application device for overlapped I/O.
fn open() -> Result<HANDLE, u32> {
    let name: Vec<u16> = r"\\.\KHttpApp".encode_utf16().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated name that outlives the call; no security attributes or template.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        // SAFETY: reads this thread's last error.
        return Err(unsafe { GetLastError() });
    }
    Ok(h)
}

fn flood(n: usize, prefix: &str, queue: &str) -> Result<(), String> {
    let mut held = Vec::new();
    let mut refused = 0usize;
    for _ in 0..n {
        let h = match open() {
            Ok(h) => h,
            Err(ERROR_NOT_ENOUGH_QUOTA) => {
                refused += 1;
                continue;
            }
            Err(e) => return Err(format!("open: error {e}")),
        };
        match attach(h, queue, prefix) {
            Ok(_) => held.push(h),
            // Under Wine: the handle of a create the driver failed (the KMDF stand-in fails
            // every request on it, as Windows would have given no handle).
            Err(Failure::Win32(ERROR_INVALID_HANDLE)) => {
                refused += 1;
                // SAFETY: our handle, closed once, no request on it.
                unsafe { CloseHandle(h) };
            }
            Err(e) => return Err(format!("attach: {}", String::from(e))),
        }
    }
    println!("held {} refused {refused}", held.len());
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    for h in held {
        // SAFETY: our handles, each closed once, no request on them.
        unsafe { CloseHandle(h) };
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("flood") {
        let (Some(n), Some(prefix), Some(queue)) = (
            args.get(2).and_then(|n| n.parse().ok()),
            args.get(3),
            args.get(4),
        ) else {
            eprintln!("usage: queue-probe.exe flood N PREFIX QUEUE");
            return ExitCode::from(2);
        };
        return match flood(n, prefix, queue) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("queue-probe: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(port), Some(a), Some(b)) = (
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
        args.get(2),
        args.get(3),
    ) else {
        eprintln!("usage: queue-probe.exe PORT PREFIX_A PREFIX_B");
        return ExitCode::from(2);
    };
    match run(port, a, b) {
        Ok(()) => {
            println!("queue-probe: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queue-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
