//! TEST HARNESS ONLY. A `netio.sys` replacement that lets khttp.sys serve real sockets under Wine.
//!
//! Wine 8.0's own netio.sys cannot run khttp (tests/wine/README.md): no static event callbacks,
//! no accept events, no `WskControlSocket`, `WskDisconnect` or `WskRelease`, IPv4 binds only,
//! one MDL per buffer. This DLL provides the Winsock Kernel provider that khttp.sys uses, over
//! Winsock (ws2_32, which under Wine is host sockets), with the documented semantics
//! (docs/driver-facts.md, the WSK sections; WINE-FACTS §9):
//!
//! - registration, provider NPI capture and release, and a `WskDeregister` that waits for every
//!   socket to be closed and every NPI to be released;
//! - listening sockets: bind then listen, `SO_EXCLUSIVEADDRUSE`, `IPV6_V6ONLY`, accept events
//!   (`WSK_SET_STATIC_EVENT_CALLBACKS` or `SO_WSK_EVENT_CALLBACK`), and a NULL `AcceptSocket`
//!   when a listener dies (the `kill-listener` fault);
//! - disconnect events (`WSK_EVENT_DISCONNECT`, static): a peer's FIN (with nothing unread in
//!   front of it) or reset, seen while no receive is pending, is indicated once through the
//!   accepted socket's `WskDisconnectEvent`, never after its close began;
//! - connection sockets: `WskReceive` and `WskSend` with MDL chains, `WskDisconnect` graceful
//!   (FIN) and abortive (RST), `WskCloseSocket` (abortive unless both directions are shut, as
//!   on Windows), IPv4 and IPv6;
//! - completions inline (in the caller's call, as Windows often does) or later from another
//!   thread, chosen at random from a seed that is printed.
//!
//! It is also a verifier. Every misuse it can see is logged as a `FAIL` line naming the call
//! (the runner fails on any): an IRP submitted while pending, a socket closed while a call on it
//! is in progress or from inside its own accept event, a `WSK_BUF` whose length does not match
//! its MDLs, calls on a closed socket, `WskDeregister` with sockets still open. khttp.sys's own
//! `IoFreeIrp`/`IoReuseIrp`/`IoFreeMdl` are checked by the WdfLdr.sys stand-in against the
//! in-flight sets exported here.
//!
//! IRPs and MDLs are the WDM layouts (x64): the few offsets used are asserted against the sizes
//! in the WDK documentation and checked with mingw-w64's DDK headers (docs/driver.md, "Status,
//! plainly").

#![allow(
    non_snake_case,
    clippy::missing_safety_doc,
    clippy::too_many_arguments,
    reason = "exported C ABI functions with the WSK names and signatures"
)]

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::io::Write;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use khttp_wsk::{
    NTSTATUS, PWSK_SOCKET, SO_EXCLUSIVEADDRUSE, SO_WSK_EVENT_CALLBACK, WSK_BUF,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH, WSK_CLIENT_NPI, WSK_EVENT_ACCEPT,
    WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISCONNECT, WSK_FLAG_ABORTIVE,
    WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY,
    WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DISPATCH,
    WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
    WSK_SET_STATIC_EVENT_CALLBACKS, WSK_SOCKET, WskSetOption,
};
use windows_sys::Win32::Networking::WinSock as ws;

// ---- NTSTATUS values (ntstatus.h, as documented on learn.microsoft.com) ----
const STATUS_SUCCESS: NTSTATUS = 0;
const STATUS_PENDING: NTSTATUS = 0x103;
const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;
const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as i32;
const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32 as i32;
const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as i32;
const STATUS_CONNECTION_RESET: NTSTATUS = 0xC000_020D_u32 as i32;
const STATUS_CONNECTION_ABORTED: NTSTATUS = 0xC000_0241_u32 as i32;
const STATUS_ADDRESS_ALREADY_ASSOCIATED: NTSTATUS = 0xC000_0238_u32 as i32;
const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as i32;
const STATUS_REQUEST_NOT_ACCEPTED: NTSTATUS = 0xC000_00D0_u32 as i32;
const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32 as i32;

/// The harness's directory in the Wine prefix (config in, verifier log out).
const HARNESS_DIR: &str = r"C:\khttp-harness";

// ---- WDM layouts (x64). Sizes: IRP 208, IO_STACK_LOCATION 72, MDL 48. ----
/// `IRP::IoStatus.Status` (`NTSTATUS` in a pointer-sized union).
const IRP_IOSTATUS_STATUS: usize = 0x30;
/// `IRP::IoStatus.Information`.
const IRP_IOSTATUS_INFORMATION: usize = 0x38;
/// `IRP::CurrentLocation` (`CHAR`).
const IRP_CURRENT_LOCATION: usize = 0x43;
/// `IRP::Tail.Overlay.CurrentStackLocation`.
const IRP_CURRENT_STACK_LOCATION: usize = 0xB8;
/// `sizeof(IO_STACK_LOCATION)`.
const IO_STACK_LOCATION_SIZE: usize = 72;
/// `IO_STACK_LOCATION::CompletionRoutine` (after the 8-byte header, the 32-byte `Parameters`
/// union, `DeviceObject` and `FileObject`).
const IO_STACK_LOCATION_COMPLETION_ROUTINE: usize = 0x38;
/// `MDL::Next`, `MDL::StartVa`, `MDL::ByteCount`, `MDL::ByteOffset`.
const MDL_NEXT: usize = 0x00;
const MDL_START_VA: usize = 0x20;
const MDL_BYTE_COUNT: usize = 0x28;
const MDL_BYTE_OFFSET: usize = 0x2C;

#[link(name = "kernel32")]
unsafe extern "system" {
    /// `GetCurrentThreadStackLimits` (processthreadsapi.h).
    fn GetCurrentThreadStackLimits(low: *mut usize, high: *mut usize);
    /// `GetModuleHandleA` (libloaderapi.h).
    fn GetModuleHandleA(name: *const u8) -> *mut c_void;
    /// `GetProcAddress` (libloaderapi.h).
    fn GetProcAddress(module: *mut c_void, name: *const u8) -> *mut c_void;
}

/// The WdfLdr.sys stand-in's modelled IRQL (its `KhttpHarnessRaise`/`Lower`/`Irql`): a
/// completion routine and a WSK event callback run at DISPATCH_LEVEL, as they may on Windows,
/// so that what the driver calls from them is checked against its documented maximum.
/// Also its `KhttpHarnessInDriver`: whether an address lies in khttp.sys's image.
struct Irql {
    raise: unsafe extern "system" fn() -> u8,
    lower: unsafe extern "system" fn(u8),
    now: unsafe extern "system" fn() -> u8,
    in_driver: unsafe extern "system" fn(*const c_void) -> u8,
}

fn irql() -> Option<&'static Irql> {
    static IRQL: OnceLock<Option<Irql>> = OnceLock::new();
    IRQL.get_or_init(|| {
        // SAFETY: a NUL-terminated module name; the module stays loaded with the driver.
        let m = unsafe { GetModuleHandleA(c"WdfLdr.sys".as_ptr().cast()) };
        if m.is_null() {
            return None;
        }
        let find = |name: &std::ffi::CStr| {
            // SAFETY: a loaded module and a NUL-terminated export name.
            let p = unsafe { GetProcAddress(m, name.as_ptr().cast()) };
            (!p.is_null()).then_some(p)
        };
        let (raise, lower, now, in_driver) = (
            find(c"KhttpHarnessRaise")?,
            find(c"KhttpHarnessLower")?,
            find(c"KhttpHarnessIrql")?,
            find(c"KhttpHarnessInDriver")?,
        );
        // SAFETY: the stand-in's exports with these signatures (wdfldr.c).
        unsafe {
            Some(Irql {
                raise: std::mem::transmute::<*mut c_void, unsafe extern "system" fn() -> u8>(raise),
                lower: std::mem::transmute::<*mut c_void, unsafe extern "system" fn(u8)>(lower),
                now: std::mem::transmute::<*mut c_void, unsafe extern "system" fn() -> u8>(now),
                in_driver: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "system" fn(*const c_void) -> u8,
                >(in_driver),
            })
        }
    })
    .as_ref()
}

/// Runs `f` at the modelled DISPATCH_LEVEL.
fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    let Some(i) = irql() else { return f() };
    // SAFETY: the stand-in's functions; raise and lower pair up on this thread.
    let old = unsafe { (i.raise)() };
    let r = f();
    // SAFETY: as above.
    unsafe { (i.lower)(old) };
    r
}

/// A FAIL when this thread's modelled IRQL is above `max` (PASSIVE_LEVEL 0, DISPATCH_LEVEL 2).
fn max_irql(call: &str, max: u8) {
    if let Some(i) = irql() {
        // SAFETY: the stand-in's function.
        let now = unsafe { (i.now)() };
        if now > max {
            fail(
                call,
                &format!("called at IRQL {now}: its documented maximum is {max}"),
            );
        }
    }
}

#[link(name = "ntdll.dll", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// Wine's `wine_server_handle_to_fd` (Wine's `include/wine/server.h`, exported by its PE
    /// ntdll): the Unix file descriptor behind a handle, as a duplicate that the caller closes.
    fn wine_server_handle_to_fd(
        handle: usize,
        access: u32,
        unix_fd: *mut i32,
        options: *mut u32,
    ) -> NTSTATUS;
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// `IofCompleteRequest` (wdm.h; x64 has a single calling convention).
    fn IofCompleteRequest(irp: *mut c_void, priority_boost: i8);
}

// ---------------------------------------------------------------------------------------------
// Logging, configuration, randomness
// ---------------------------------------------------------------------------------------------

/// Appends one line to the verifier log (and stderr, which Wine sends to the session log).
fn log(line: &str) {
    let path = format!(r"{HARNESS_DIR}\verifier.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    eprintln!("khttp-harness: {line}");
}

/// A verifier failure: the runner fails the run on any `FAIL` line.
fn fail(call: &str, what: &str) {
    log(&format!("FAIL {call}: {what}"));
}

struct Config {
    seed: u64,
    /// Percentage of ready results completed inline, in the caller's call.
    inline_pct: u64,
    /// Graceful disconnects pend until the socket is closed or the peer shuts down: a peer that
    /// never acknowledges (Windows completes the IRP only once the data is acknowledged).
    stall_disconnect: bool,
    /// Per cent of deferred completions delayed 0-2 ms more (schedule perturbation).
    perturb: u64,
    /// Per mille of the driver's allocations the WdfLdr.sys stand-in fails (low resources).
    fail_permille: u64,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = std::fs::read_to_string(format!(r"{HARNESS_DIR}\config")).unwrap_or_default();
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
        };
        let seed = get("seed")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15);
        let c = Config {
            seed,
            inline_pct: get("inline").and_then(|s| s.parse().ok()).unwrap_or(50),
            stall_disconnect: get("stall-disconnect").is_some_and(|v| v == "1"),
            perturb: get("perturb").and_then(|s| s.parse().ok()).unwrap_or(0),
            fail_permille: get("fail-permille")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        };
        log(&format!(
            "netio: seed={} inline={}% stall-disconnect={} perturb={}% fail-permille={}",
            c.seed, c.inline_pct, c.stall_disconnect, c.perturb, c.fail_permille
        ));
        c
    })
}

/// xorshift64*: a reproducible sequence from the printed seed.
fn random() -> u64 {
    static STATE: Mutex<u64> = Mutex::new(0);
    let mut s = lock(&STATE);
    if *s == 0 {
        *s = config().seed | 1;
    }
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Whether this ready result completes inline.
fn inline_now() -> bool {
    random() % 100 < config().inline_pct
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// IRPs: the in-flight set and completion
// ---------------------------------------------------------------------------------------------

/// IRPs handed to us and not yet completed, with the call that took them; and their MDLs.
struct InFlight {
    irps: HashMap<usize, &'static str>,
    mdls: HashMap<usize, usize>,
}

fn in_flight() -> MutexGuard<'static, InFlight> {
    static IN_FLIGHT: OnceLock<Mutex<InFlight>> = OnceLock::new();
    lock(IN_FLIGHT.get_or_init(|| {
        Mutex::new(InFlight {
            irps: HashMap::new(),
            mdls: HashMap::new(),
        })
    }))
}

/// Takes ownership of `irp` for `call`; false (and a FAIL) if it is still pending elsewhere.
fn take_irp(irp: *mut c_void, call: &'static str, mdls: &[usize]) -> bool {
    if irp.is_null() {
        fail(call, "called without an IRP");
        return false;
    }
    check_completion_routine(irp, call);
    let mut f = in_flight();
    if let Some(prev) = f.irps.get(&(irp as usize)) {
        fail(
            call,
            &format!("IRP {irp:p} submitted again while still pending in {prev}"),
        );
        return false;
    }
    f.irps.insert(irp as usize, call);
    for &m in mdls {
        f.mdls.insert(m, irp as usize);
    }
    true
}

/// A FAIL when the completion routine the client set for `irp` (in the stack location below
/// the current one, where `IoSetCompletionRoutine` and `IoSetCompletionRoutineEx` write it)
/// lies in khttp.sys's image: the plain `IoSetCompletionRoutine`, with which the driver can be
/// unloaded while its routine is still returning (bug check 0xCE; issue #22, defect 12).
/// `IoSetCompletionRoutineEx` puts the kernel's wrapper there instead (the WdfLdr.sys
/// stand-in's, here).
fn check_completion_routine(irp: *mut c_void, call: &'static str) {
    let Some(i) = irql() else { return };
    let base = irp.cast::<u8>();
    // SAFETY: `irp` is a live IRP the client just passed us, not yet completed: its current
    // stack-location pointer and the location below it (the client's) are readable, at the
    // x64 WDM offsets asserted in the module documentation.
    let routine = unsafe {
        let sl = base
            .add(IRP_CURRENT_STACK_LOCATION)
            .cast::<*const u8>()
            .read_unaligned();
        sl.wrapping_sub(IO_STACK_LOCATION_SIZE)
            .add(IO_STACK_LOCATION_COMPLETION_ROUTINE)
            .cast::<*const c_void>()
            .read_unaligned()
    };
    // SAFETY: the stand-in's function; it compares the address only.
    if unsafe { (i.in_driver)(routine) } != 0 {
        fail(
            call,
            &format!(
                "IRP {irp:p}: its completion routine {routine:p} is khttp.sys's own, set with \
                 IoSetCompletionRoutine: the driver can be unloaded while it runs (bug check \
                 0xCE); IoSetCompletionRoutineEx keeps it loaded until the routine returns"
            ),
        );
    }
}

/// Completes `irp` now, on this thread: the provider's side of `IoCompleteRequest` for an IRP
/// the client allocated and passed straight to us (no `IoCallDriver`), so the IRP first moves
/// to the stack location the client filled in (WINE-FACTS §3.3).
unsafe fn complete_now(irp: *mut c_void, status: NTSTATUS, information: usize) {
    {
        let mut f = in_flight();
        f.irps.remove(&(irp as usize));
        f.mdls.retain(|_, owner| *owner != irp as usize);
    }
    let base = irp.cast::<u8>();
    // SAFETY: `irp` is a live IRP the client gave us and has not been completed (in-flight set):
    // the offsets are the x64 WDM layout asserted in the module documentation.
    unsafe {
        base.add(IRP_IOSTATUS_STATUS)
            .cast::<usize>()
            .write_unaligned(status as u32 as usize);
        base.add(IRP_IOSTATUS_INFORMATION)
            .cast::<usize>()
            .write_unaligned(information);
        let loc = base.add(IRP_CURRENT_LOCATION).cast::<i8>();
        loc.write(loc.read() - 1);
        let sl = base.add(IRP_CURRENT_STACK_LOCATION).cast::<*mut u8>();
        sl.write_unaligned(sl.read_unaligned().wrapping_sub(IO_STACK_LOCATION_SIZE));
    }
    measured(|| {
        // SAFETY: as above; the IRP's completion now belongs to the I/O manager.
        at_dispatch(|| unsafe { IofCompleteRequest(irp, 0) })
    });
}

// ---------------------------------------------------------------------------------------------
// Stack depth (issue #9, finding 13): how much stack a completion routine uses
// ---------------------------------------------------------------------------------------------

/// Bytes painted below a completion's frame, and the pattern.
const PAINT_BYTES: usize = 64 * 1024;
const PAINT: u64 = 0x5A5A_C0DE_F00D_5A5A;
/// Bytes below the measuring frame left alone (the painter's and scanner's own frames).
const MARGIN: usize = 4096;

/// The deepest stack a completion used (bytes below `complete_now`'s frame), and the deepest
/// point at which the driver, inside a completion, called back into the provider.
static DEEPEST_COMPLETION: AtomicUsize = AtomicUsize::new(0);
static DEEPEST_REENTRY: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The stack address of the completion in progress on this thread (0: none).
    static COMPLETION_TOP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn stack_here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&raw const marker) as usize
}

/// Runs a completion with the stack below it painted, then records how deep it went. Painting
/// goes from high addresses to low, a page at a time, so that a growing stack's guard page is
/// met in order; it is skipped when the thread has less than twice the painted room left.
fn measured(complete: impl FnOnce()) {
    let top = stack_here();
    let mut low = 0usize;
    let mut high = 0usize;
    // SAFETY: two out-parameters for the calling thread's stack limits.
    unsafe { GetCurrentThreadStackLimits(&mut low, &mut high) };
    let outer = COMPLETION_TOP.with(|t| t.replace(top));
    let room = top.saturating_sub(low) > 2 * PAINT_BYTES;
    if room && outer == 0 {
        let mut a = top - MARGIN;
        while a >= top - PAINT_BYTES {
            // SAFETY: this thread's own, unused stack below the current frame (checked against
            // its limits above), written downwards so that guard pages commit in order.
            unsafe { std::ptr::write_volatile(a as *mut u64, PAINT) };
            a -= 8;
        }
    }
    complete();
    if room && outer == 0 {
        let mut a = top - PAINT_BYTES;
        // SAFETY: the same region, read back upwards; it was written above.
        while a < top - MARGIN && unsafe { std::ptr::read_volatile(a as *const u64) } == PAINT {
            a += 8;
        }
        DEEPEST_COMPLETION.fetch_max(top - a, Ordering::Relaxed);
    }
    COMPLETION_TOP.with(|t| t.set(outer));
}

/// At a provider entry: if the driver calls back from inside a completion, how deep it is.
fn note_reentry() {
    let top = COMPLETION_TOP.with(std::cell::Cell::get);
    if top != 0 {
        DEEPEST_REENTRY.fetch_max(top.saturating_sub(stack_here()), Ordering::Relaxed);
    }
}

/// A completion to deliver from the completer thread.
struct Deferred {
    irp: usize,
    status: NTSTATUS,
    information: usize,
}

/// Completes a ready result inline or later from the completer thread, as the seed decides.
fn complete(irp: *mut c_void, status: NTSTATUS, information: usize) -> NTSTATUS {
    if inline_now() {
        // SAFETY: the caller passes an IRP it took with `take_irp` and no longer touches.
        unsafe { complete_now(irp, status, information) };
        status
    } else {
        let d = Deferred {
            irp: irp as usize,
            status,
            information,
        };
        if let Some(tx) = COMPLETER.get() {
            let _ = lock(tx).send(d);
        }
        STATUS_PENDING
    }
}

/// Completes what [`settle_acks`] found done during the call that brought `irp`: that IRP as
/// any ready result (inline or not), others from the completer thread.
fn complete_settled(irp: *mut c_void, done: Vec<(usize, NTSTATUS, usize)>) -> NTSTATUS {
    let mut mine = STATUS_PENDING;
    for (other, status, n) in done {
        if other == irp as usize {
            mine = complete(irp, status, n);
        } else if let Some(tx) = COMPLETER.get() {
            let d = Deferred {
                irp: other,
                status,
                information: n,
            };
            let _ = lock(tx).send(d);
        }
    }
    mine
}

static COMPLETER: OnceLock<Mutex<Sender<Deferred>>> = OnceLock::new();

fn start_completer() {
    COMPLETER.get_or_init(|| {
        let (tx, rx) = channel::<Deferred>();
        std::thread::spawn(move || {
            for d in rx {
                if random().is_multiple_of(4) {
                    std::thread::yield_now();
                }
                // Schedule perturbation: some completions come later still.
                let pct = config().perturb;
                if pct > 0 {
                    let r = random();
                    if r % 100 < pct {
                        std::thread::sleep(Duration::from_millis((r >> 8) % 3));
                    }
                }
                // SAFETY: queued by `complete` for an IRP we own.
                unsafe { complete_now(d.irp as *mut c_void, d.status, d.information) };
            }
        });
        Mutex::new(tx)
    });
}

// ---------------------------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------------------------

/// A buffer's byte ranges (address, length) and the MDLs that describe them.
type Segments = (Vec<(usize, usize)>, Vec<usize>);

/// The byte ranges of a `WSK_BUF`, walking the MDL chain; checks the length against the MDLs.
unsafe fn segments(buf: *const WSK_BUF, call: &'static str) -> Option<Segments> {
    if buf.is_null() {
        fail(call, "WSK_BUF is NULL");
        return None;
    }
    // SAFETY: the client passes a valid WSK_BUF for the duration of the call.
    let b = unsafe { *buf };
    let mut segs = Vec::new();
    let mut mdls = Vec::new();
    if b.Length == 0 {
        return Some((segs, mdls));
    }
    let mut mdl = b.Mdl.cast::<u8>();
    if mdl.is_null() {
        fail(call, "WSK_BUF.Mdl is NULL with a non-zero Length");
        return None;
    }
    let mut skip = b.Offset as usize;
    let mut left = b.Length;
    let mut first = true;
    while left > 0 {
        if mdl.is_null() {
            fail(
                call,
                &format!(
                    "WSK_BUF.Length {} exceeds its MDL chain by {left} bytes",
                    b.Length
                ),
            );
            return None;
        }
        mdls.push(mdl as usize);
        // SAFETY: an MDL from the client, live until completion (verified at IoFreeMdl).
        let (va, count, offset, next) = unsafe {
            (
                mdl.add(MDL_START_VA).cast::<usize>().read_unaligned(),
                mdl.add(MDL_BYTE_COUNT).cast::<u32>().read_unaligned() as usize,
                mdl.add(MDL_BYTE_OFFSET).cast::<u32>().read_unaligned() as usize,
                mdl.add(MDL_NEXT).cast::<*mut u8>().read_unaligned(),
            )
        };
        if first && skip >= count {
            fail(
                call,
                &format!("WSK_BUF.Offset {skip} is not inside the first MDL ({count} bytes)"),
            );
            return None;
        }
        first = false;
        let start = va + offset + skip;
        let n = (count - skip).min(left);
        if n > 0 {
            segs.push((start, n));
        }
        left -= n;
        skip = 0;
        mdl = next;
    }
    Some((segs, mdls))
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Listen,
    Connection,
}

/// A queued receive, send or disconnect.
struct Op {
    irp: usize,
    segs: Vec<(usize, usize)>,
    done: usize,
    total: usize,
}

#[derive(Default)]
struct State {
    recv: VecDeque<Op>,
    send: VecDeque<Op>,
    /// A graceful disconnect waiting for queued sends and for the peer to acknowledge them and
    /// its FIN (or, with `stall-disconnect`, for the peer's own FIN).
    disconnect: Option<Op>,
    /// Bytes written to the host socket, in all.
    written: u64,
    /// Sends wholly written that wait for the peer to acknowledge their last byte: the IRP, the
    /// `written` count at that byte, and the send's length. WSK does not buffer: a send
    /// completes once its data "has actually been sent" (`settle_acks`).
    unacked: VecDeque<(usize, u64, usize)>,
    listening: bool,
    events: bool,
    fin_sent: bool,
    peer_fin: bool,
    /// TCP_NODELAY as last set from a send's WSK_FLAG_NODELAY.
    nodelay: bool,
    aborted: bool,
    closed: bool,
    /// Unread data waits with no receive pending: the disconnect watch stops polling until a
    /// receive takes it.
    data_waiting: bool,
    /// The disconnect event was indicated (once per socket).
    disconnect_indicated: bool,
}

impl State {
    /// Removes every queued operation, for cancellation; returns their IRPs.
    fn take_all(&mut self) -> Vec<usize> {
        let mut irps: Vec<usize> = self.recv.drain(..).map(|op| op.irp).collect();
        irps.extend(self.send.drain(..).map(|op| op.irp));
        irps.extend(self.unacked.drain(..).map(|(irp, _, _)| irp));
        irps.extend(self.disconnect.take().map(|op| op.irp));
        irps
    }

    /// Whether something waits for the peer's acknowledgement, which no readiness event
    /// reports: the reactor looks every few milliseconds.
    fn awaits_ack(&self) -> bool {
        !self.unacked.is_empty() || (self.fin_sent && self.disconnect.is_some())
    }

    /// A send wholly written (`written` counted): it waits for the peer's acknowledgement.
    fn written_out(&mut self, op: &Op) {
        self.unacked.push_back((op.irp, self.written, op.total));
    }
}

/// One WSK socket. The client's `PWSK_SOCKET` points at `wsk`, the first field.
#[repr(C)]
struct Sock {
    wsk: WSK_SOCKET,
    kind: Kind,
    family: u16,
    host: AtomicUsize,
    context: AtomicPtr<c_void>,
    listen_dispatch: *const WSK_CLIENT_LISTEN_DISPATCH,
    /// An accepted socket's client dispatch (its event callbacks), from the accept event.
    conn_dispatch: AtomicPtr<WSK_CLIENT_CONNECTION_DISPATCH>,
    /// Provider calls on this socket in progress, for the close check.
    calls: AtomicU32,
    /// The thread inside this listener's accept event (0: none), or inside the accept event
    /// that offers this connection socket.
    in_event: AtomicU32,
    state: Mutex<State>,
}

// SAFETY: `listen_dispatch` points at the client's static table; the rest is synchronised.
unsafe impl Send for Sock {}
// SAFETY: as above.
unsafe impl Sync for Sock {}

fn thread_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local!(static ID: u32 = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}

/// Every open socket, by the address the client holds.
fn sockets() -> MutexGuard<'static, HashMap<usize, Arc<Sock>>> {
    static SOCKETS: OnceLock<Mutex<HashMap<usize, Arc<Sock>>>> = OnceLock::new();
    lock(SOCKETS.get_or_init(|| Mutex::new(HashMap::new())))
}

/// Finds the socket the client passed; a FAIL if it is not open.
fn find(socket: PWSK_SOCKET, call: &'static str) -> Option<Arc<Sock>> {
    let s = sockets().get(&(socket as usize)).cloned();
    if s.is_none() {
        fail(
            call,
            &format!("socket {socket:p} is not open (closed or never created)"),
        );
    }
    s
}

/// Counts a call in progress on a socket for as long as it lives.
struct Call<'a>(&'a Sock);
impl<'a> Call<'a> {
    fn enter(s: &'a Sock) -> Self {
        s.calls.fetch_add(1, Ordering::AcqRel);
        Self(s)
    }
}
impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

fn map_error(e: i32) -> NTSTATUS {
    match e {
        ws::WSAECONNRESET => STATUS_CONNECTION_RESET,
        ws::WSAECONNABORTED | ws::WSAESHUTDOWN | ws::WSAENOTCONN => STATUS_CONNECTION_ABORTED,
        ws::WSAEADDRINUSE | ws::WSAEACCES => STATUS_ADDRESS_ALREADY_ASSOCIATED,
        ws::WSAENOBUFS => STATUS_INSUFFICIENT_RESOURCES,
        _ => STATUS_UNSUCCESSFUL,
    }
}

fn last_error() -> i32 {
    // SAFETY: no preconditions.
    unsafe { ws::WSAGetLastError() }
}

/// The outcome of trying an operation without blocking.
enum Try {
    Done(NTSTATUS, usize),
    WouldBlock,
}

fn wsabufs(op: &Op) -> Vec<ws::WSABUF> {
    let mut skip = op.done;
    let mut out = Vec::new();
    for &(p, n) in &op.segs {
        if skip >= n {
            skip -= n;
            continue;
        }
        out.push(ws::WSABUF {
            len: (n - skip) as u32,
            buf: (p + skip) as *mut u8,
        });
        skip = 0;
    }
    out
}

fn try_recv(host: usize, st: &mut State, op: &mut Op) -> Try {
    if op.total == 0 {
        return Try::Done(STATUS_SUCCESS, 0);
    }
    let bufs = wsabufs(op);
    let mut got = 0u32;
    let mut flags = 0u32;
    // SAFETY: the buffers are the client's MDL ranges, live until completion; non-blocking.
    let r = unsafe {
        ws::WSARecv(
            host,
            bufs.as_ptr(),
            bufs.len() as u32,
            &mut got,
            &mut flags,
            ptr::null_mut(),
            None,
        )
    };
    if r == 0 {
        if got == 0 {
            st.peer_fin = true;
        }
        // What waited unread is being taken: the disconnect watch may look again.
        st.data_waiting = false;
        return Try::Done(STATUS_SUCCESS, got as usize);
    }
    match last_error() {
        ws::WSAEWOULDBLOCK => Try::WouldBlock,
        e => Try::Done(map_error(e), 0),
    }
}

/// Writes what the host socket takes of `op`, counting it in `written`. `Done` once all of it
/// is written (the send then waits for its acknowledgement, [`settle_acks`]) or on an error.
fn try_send(host: usize, written: &mut u64, op: &mut Op) -> Try {
    while op.done < op.total {
        let bufs = wsabufs(op);
        let mut sent = 0u32;
        // SAFETY: as in `try_recv`.
        let r = unsafe {
            ws::WSASend(
                host,
                bufs.as_ptr(),
                bufs.len() as u32,
                &mut sent,
                0,
                ptr::null_mut(),
                None,
            )
        };
        if r != 0 {
            return match last_error() {
                ws::WSAEWOULDBLOCK => Try::WouldBlock,
                e => Try::Done(map_error(e), op.done),
            };
        }
        op.done += sent as usize;
        *written += u64::from(sent);
    }
    Try::Done(STATUS_SUCCESS, op.total)
}

// ---------------------------------------------------------------------------------------------
// What the host's TCP says: bytes not yet acknowledged, and whether the connection is dead
// ---------------------------------------------------------------------------------------------

/// A Linux system call, made directly: Wine runs PE code as an ordinary Linux thread, and
/// Winsock has no call that says what the peer has acknowledged.
///
/// # Safety
/// `nr` and its arguments must be a valid Linux x86-64 system call that touches no memory but
/// what its pointer arguments describe.
unsafe fn linux(nr: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the `syscall` instruction clobbers rcx and r11 only (x86-64 Linux ABI: arguments
    // in rdi, rsi, rdx, r10, r8); the caller vouches for the call itself.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Linux x86-64 system call numbers (`arch/x86/entry/syscalls/syscall_64.tbl`) and values
/// (`ioctl_tty(2)`/`tcp(7)`: `SIOCOUTQ` is `TIOCOUTQ`; `tcp_states.h`: `TCP_CLOSE` is 7).
const SYS_CLOSE: usize = 3;
const SYS_IOCTL: usize = 16;
const SYS_GETSOCKOPT: usize = 55;
const SIOCOUTQ: usize = 0x5411;
const SOL_TCP: usize = 6;
const TCP_INFO: usize = 11;
const TCP_STATE_CLOSE: u8 = 7;

/// What the host's TCP holds for the peer.
enum Transport {
    /// Bytes written and not yet acknowledged, the FIN counting one once sent (`SIOCOUTQ`:
    /// `write_seq - snd_una`).
    Unacked(u64),
    /// The connection is closed (reset by the peer): nothing more will be acknowledged.
    Dead,
}

/// Asks the host's TCP what it holds for the peer of the Winsock socket `host`; `None` where it
/// cannot tell (then sends complete once written, as before acknowledgement was modelled).
fn transport(host: usize) -> Option<Transport> {
    let mut fd = -1i32;
    let mut options = 0u32;
    // SAFETY: a live socket handle and two out-parameters.
    let st = unsafe { wine_server_handle_to_fd(host, 0, &mut fd, &mut options) };
    if st != STATUS_SUCCESS || fd < 0 {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| log(&format!("netio: wine_server_handle_to_fd: {st:#x}")));
        return None;
    }
    let fd = fd as usize;
    // The first byte of Linux's `struct tcp_info` is `tcpi_state`.
    let mut info = [0u8; 8];
    let mut len = info.len() as u32;
    // SAFETY: getsockopt into a local buffer of `len` bytes on our duplicate descriptor.
    let g = unsafe {
        linux(
            SYS_GETSOCKOPT,
            [
                fd,
                SOL_TCP,
                TCP_INFO,
                info.as_mut_ptr() as usize,
                (&raw mut len) as usize,
            ],
        )
    };
    let mut outq = 0i32;
    // SAFETY: SIOCOUTQ writes one int into a local on our duplicate descriptor.
    let q = unsafe { linux(SYS_IOCTL, [fd, SIOCOUTQ, (&raw mut outq) as usize, 0, 0]) };
    // SAFETY: our duplicate, closed once.
    unsafe { linux(SYS_CLOSE, [fd, 0, 0, 0, 0]) };
    if g == 0 && info[0] == TCP_STATE_CLOSE {
        return Some(Transport::Dead);
    }
    let t = (q == 0 && outq >= 0).then_some(Transport::Unacked(outq as u64));
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        log(&format!(
            "netio: acknowledgements {} (SIOCOUTQ {q})",
            if t.is_some() {
                "read from the host's TCP"
            } else {
                "UNKNOWN: sends complete as written"
            }
        ));
    });
    t
}

/// Completes the sends the peer has acknowledged, and a graceful disconnect once its FIN is
/// acknowledged too (or, with `stall-disconnect`, once the peer shut its side), into `done`.
///
/// Windows: "The WSK subsystem does not perform any buffering of data when it sends data over a
/// socket. Therefore, a call to the WskSend function will not be completed by the WSK subsystem
/// until all of the data has actually been sent" (WskSend), and "with a graceful disconnect,
/// the IRP is completed only when the disconnect operation is fully completed by the transport
/// protocol" (WskDisconnect). A send the host's buffer took is not yet with the peer.
fn settle_acks(host: usize, st: &mut State, done: &mut Vec<(usize, NTSTATUS, usize)>) {
    let disconnecting = st.fin_sent && st.disconnect.is_some() && st.send.is_empty();
    if st.unacked.is_empty() && !disconnecting {
        return;
    }
    let (acked, all_acked, status) = match transport(host) {
        // Cannot tell: as written.
        None => (u64::MAX, true, STATUS_SUCCESS),
        Some(Transport::Dead) => (u64::MAX, true, STATUS_CONNECTION_RESET),
        Some(Transport::Unacked(q)) => {
            let fin = u64::from(st.fin_sent);
            (
                st.written.saturating_add(fin).saturating_sub(q),
                q == 0,
                STATUS_SUCCESS,
            )
        }
    };
    while let Some(&(irp, end, n)) = st.unacked.front() {
        if end > acked {
            break;
        }
        st.unacked.pop_front();
        let n = if status == STATUS_SUCCESS { n } else { 0 };
        done.push((irp, status, n));
    }
    let fin_done = if config().stall_disconnect && status == STATUS_SUCCESS {
        peer_shut(host)
    } else {
        all_acked
    };
    if disconnecting
        && st.unacked.is_empty()
        && fin_done
        && let Some(op) = st.disconnect.take()
    {
        done.push((op.irp, status, 0));
    }
}

/// Whether the peer has shut down its side (a FIN waits unread and no data precedes it).
fn peer_shut(host: usize) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a 1-byte peek into a local buffer on a non-blocking socket.
    let r = unsafe { ws::recv(host, b.as_mut_ptr(), 1, ws::MSG_PEEK) };
    r == 0
}

/// Closes the host socket; with `reset`, abortively (RST).
fn close_host(s: &Sock, reset: bool) {
    let h = s.host.swap(ws::INVALID_SOCKET, Ordering::AcqRel);
    if h == ws::INVALID_SOCKET {
        return;
    }
    if reset {
        let l = ws::LINGER {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a live socket and a LINGER of the right size.
        unsafe {
            ws::setsockopt(
                h,
                ws::SOL_SOCKET,
                ws::SO_LINGER,
                (&raw const l).cast(),
                size_of::<ws::LINGER>() as i32,
            );
        }
    }
    // SAFETY: we own the handle and nobody uses it after the swap above.
    unsafe { ws::closesocket(h) };
}

fn new_sock(
    kind: Kind,
    family: u16,
    host: usize,
    context: *mut c_void,
    listen: *const WSK_CLIENT_LISTEN_DISPATCH,
) -> Arc<Sock> {
    let dispatch: *const c_void = match kind {
        Kind::Listen => (&raw const LISTEN_DISPATCH.0).cast(),
        Kind::Connection => (&raw const CONNECTION_DISPATCH.0).cast(),
    };
    let mut nb = 1u32;
    // SAFETY: a live socket; FIONBIO takes a u32.
    unsafe { ws::ioctlsocket(host, ws::FIONBIO, &mut nb) };
    let s = Arc::new(Sock {
        wsk: WSK_SOCKET { Dispatch: dispatch },
        kind,
        family,
        host: AtomicUsize::new(host),
        context: AtomicPtr::new(context),
        listen_dispatch: listen,
        conn_dispatch: AtomicPtr::new(ptr::null_mut()),
        calls: AtomicU32::new(0),
        in_event: AtomicU32::new(0),
        state: Mutex::new(State::default()),
    });
    sockets().insert(Arc::as_ptr(&s) as usize, Arc::clone(&s));
    s
}

// ---------------------------------------------------------------------------------------------
// The reactor: accept events and pending operations
// ---------------------------------------------------------------------------------------------

static WAKE: AtomicUsize = AtomicUsize::new(ws::INVALID_SOCKET);
static WAKE_PORT: AtomicU32 = AtomicU32::new(0);

fn wake() {
    let s = WAKE.load(Ordering::Acquire);
    if s == ws::INVALID_SOCKET {
        return;
    }
    let addr = ws::SOCKADDR_IN {
        sin_family: ws::AF_INET,
        sin_port: (WAKE_PORT.load(Ordering::Acquire) as u16).to_be(),
        sin_addr: ws::IN_ADDR {
            S_un: ws::IN_ADDR_0 {
                S_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a 1-byte datagram to our own wake socket.
    unsafe {
        ws::sendto(
            s,
            b"w".as_ptr(),
            1,
            0,
            (&raw const addr).cast(),
            size_of::<ws::SOCKADDR_IN>() as i32,
        );
    }
}

fn start_reactor() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // SAFETY: a UDP socket bound to an ephemeral loopback port.
        unsafe {
            let s = ws::socket(ws::AF_INET as i32, ws::SOCK_DGRAM, ws::IPPROTO_UDP);
            let mut addr = ws::SOCKADDR_IN {
                sin_family: ws::AF_INET,
                sin_port: 0,
                sin_addr: ws::IN_ADDR {
                    S_un: ws::IN_ADDR_0 {
                        S_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                    },
                },
                sin_zero: [0; 8],
            };
            let mut len = size_of::<ws::SOCKADDR_IN>() as i32;
            ws::bind(s, (&raw const addr).cast(), len);
            ws::getsockname(s, (&raw mut addr).cast(), &mut len);
            let mut nb = 1u32;
            ws::ioctlsocket(s, ws::FIONBIO, &mut nb);
            WAKE_PORT.store(u32::from(u16::from_be(addr.sin_port)), Ordering::Release);
            WAKE.store(s, Ordering::Release);
        }
        start_completer();
        std::thread::spawn(reactor);
    });
}

fn reactor() {
    let mut last_fault_check = Instant::now();
    loop {
        let socks: Vec<Arc<Sock>> = sockets().values().cloned().collect();
        let mut fds = vec![ws::WSAPOLLFD {
            fd: WAKE.load(Ordering::Acquire),
            events: ws::POLLRDNORM,
            revents: 0,
        }];
        let mut owners = vec![None];
        // Connections waiting for acknowledgements, which no readiness event reports.
        let mut ticking: Vec<Arc<Sock>> = Vec::new();
        for s in &socks {
            let host = s.host.load(Ordering::Acquire);
            if host == ws::INVALID_SOCKET {
                continue;
            }
            let st = lock(&s.state);
            let mut events = 0;
            match s.kind {
                Kind::Listen if st.listening && st.events && !st.closed => {
                    events |= ws::POLLRDNORM;
                }
                Kind::Connection if !st.closed && !st.aborted => {
                    if !st.recv.is_empty() || st.disconnect.is_some() || watches(s, &st) {
                        events |= ws::POLLRDNORM;
                    }
                    if !st.send.is_empty() {
                        events |= ws::POLLWRNORM;
                    }
                    if st.awaits_ack() {
                        ticking.push(Arc::clone(s));
                    }
                }
                _ => {}
            }
            drop(st);
            if events != 0 {
                fds.push(ws::WSAPOLLFD {
                    fd: host,
                    events,
                    revents: 0,
                });
                owners.push(Some(Arc::clone(s)));
            }
        }
        drop(socks);
        // SAFETY: `fds` is a valid array of its length.
        let timeout = if ticking.is_empty() { 250 } else { 2 };
        let n = unsafe { ws::WSAPoll(fds.as_mut_ptr(), fds.len() as u32, timeout) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 64];
            // SAFETY: draining our own non-blocking datagram socket.
            while unsafe { ws::recv(fds[0].fd, b.as_mut_ptr(), 64, 0) } > 0 {}
        }
        for (fd, owner) in fds.iter().zip(owners.iter()).skip(1) {
            let Some(s) = owner else { continue };
            if fd.revents == 0 || s.host.load(Ordering::Acquire) != fd.fd {
                continue;
            }
            match s.kind {
                Kind::Listen => accept_ready(s),
                Kind::Connection => connection_ready(s),
            }
        }
        for s in &ticking {
            connection_ready(s);
        }
        if last_fault_check.elapsed() >= Duration::from_millis(200) {
            last_fault_check = Instant::now();
            kill_listener_fault();
        }
    }
}

/// Whether the socket is watched for its peer's disconnect: disconnect events are on, the
/// client gave the callback, nothing is pending that would see it, and it was not indicated
/// yet.
fn watches(s: &Sock, st: &State) -> bool {
    STATIC_DISCONNECT_EVENTS.load(Ordering::Acquire)
        && !s.conn_dispatch.load(Ordering::Acquire).is_null()
        && !s.context.load(Ordering::Acquire).is_null()
        && st.recv.is_empty()
        && st.disconnect.is_none()
        && !st.disconnect_indicated
        && !st.data_waiting
        && !st.peer_fin
        && !st.closed
        && !st.aborted
}

/// The watch found the socket readable with no receive pending: a FIN (`Some(0)`), a reset
/// (`Some(WSK_FLAG_ABORTIVE)`), or data (`None`, and the watch pauses).
fn peer_disconnect(host: usize, st: &mut State) -> Option<u32> {
    let mut b = [0u8; 1];
    // SAFETY: a 1-byte peek into a local buffer on a non-blocking socket.
    let r = unsafe { ws::recv(host, b.as_mut_ptr(), 1, ws::MSG_PEEK) };
    match r {
        0 => Some(0),
        n if n > 0 => {
            st.data_waiting = true;
            None
        }
        _ if last_error() == ws::WSAEWOULDBLOCK => None,
        _ => Some(WSK_FLAG_ABORTIVE),
    }
}

/// Runs what became ready on a connection socket; completes from this (the reactor) thread.
fn connection_ready(s: &Arc<Sock>) {
    let mut done: Vec<(usize, NTSTATUS, usize)> = Vec::new();
    let mut indicate = None;
    {
        let mut st = lock(&s.state);
        let host = s.host.load(Ordering::Acquire);
        if st.closed || st.aborted || host == ws::INVALID_SOCKET {
            return;
        }
        while let Some(mut op) = st.recv.pop_front() {
            match try_recv(host, &mut st, &mut op) {
                Try::Done(status, n) => done.push((op.irp, status, n)),
                Try::WouldBlock => {
                    st.recv.push_front(op);
                    break;
                }
            }
        }
        while let Some(mut op) = st.send.pop_front() {
            match try_send(host, &mut st.written, &mut op) {
                Try::Done(STATUS_SUCCESS, _) => st.written_out(&op),
                Try::Done(status, n) => done.push((op.irp, status, n)),
                Try::WouldBlock => {
                    st.send.push_front(op);
                    break;
                }
            }
        }
        if st.send.is_empty() && st.disconnect.is_some() && !st.fin_sent {
            // SAFETY: a live socket; FIN after the queued sends.
            unsafe { ws::shutdown(host, ws::SD_SEND) };
            st.fin_sent = true;
        }
        settle_acks(host, &mut st, &mut done);
        if watches(s, &st)
            && let Some(flags) = peer_disconnect(host, &mut st)
        {
            // Marked inside the lock, so that a close that begins after it waits for the
            // callback to return (`wsk_close_socket`).
            st.disconnect_indicated = true;
            s.in_event.store(thread_id(), Ordering::Release);
            indicate = Some(flags);
        }
    }
    if let Some(flags) = indicate {
        let dispatch = s.conn_dispatch.load(Ordering::Acquire);
        // SAFETY: the client's static connection dispatch, checked non-null by `watches`.
        if let Some(event) = unsafe { (*dispatch).WskDisconnectEvent } {
            // SAFETY: the client's callback with its socket context; the socket is not closed
            // (checked under the lock, and a close waits for `in_event`).
            at_dispatch(|| unsafe { event(s.context.load(Ordering::Acquire), flags) });
        }
        s.in_event.store(0, Ordering::Release);
    }
    // After the event: `in_event` marks this thread inside it until it returns, and a
    // completion may close the socket.
    for (irp, status, n) in done {
        // SAFETY: taken with `take_irp`, removed from the queues above.
        unsafe { complete_now(irp as *mut c_void, status, n) };
    }
}

/// Writes a socket address in the WSK layout (`SOCKADDR_IN` or `SOCKADDR_IN6`) into `out`.
fn sockaddr_from_host(storage: &ws::SOCKADDR_STORAGE) -> [u8; 28] {
    let mut out = [0u8; 28];
    // SAFETY: SOCKADDR_STORAGE is 128 bytes; we copy the first 28, the larger WSK address.
    let bytes = unsafe { std::slice::from_raw_parts((&raw const *storage).cast::<u8>(), 28) };
    out.copy_from_slice(bytes);
    out
}

/// A listener is readable: accept what is waiting (up to a batch), offering each connection
/// to the client (accept event).
fn accept_ready(l: &Arc<Sock>) {
    for _ in 0..64 {
        if !accept_one(l) {
            break;
        }
    }
}

/// Accepts one connection and offers it; false when none is waiting.
fn accept_one(l: &Arc<Sock>) -> bool {
    let host = l.host.load(Ordering::Acquire);
    // SAFETY: zeroed storage is a valid SOCKADDR_STORAGE.
    let mut remote: ws::SOCKADDR_STORAGE = unsafe { std::mem::zeroed() };
    let mut len = size_of::<ws::SOCKADDR_STORAGE>() as i32;
    // SAFETY: a live non-blocking listener and a storage of `len` bytes.
    let c = unsafe { ws::accept(host, (&raw mut remote).cast(), &mut len) };
    if c == ws::INVALID_SOCKET {
        return false;
    }
    // SAFETY: as above.
    let mut local: ws::SOCKADDR_STORAGE = unsafe { std::mem::zeroed() };
    let mut llen = size_of::<ws::SOCKADDR_STORAGE>() as i32;
    // SAFETY: a live socket and a storage of `llen` bytes.
    unsafe { ws::getsockname(c, (&raw mut local).cast(), &mut llen) };
    let mut local = sockaddr_from_host(&local);
    let mut remote = sockaddr_from_host(&remote);
    let conn = new_sock(Kind::Connection, l.family, c, ptr::null_mut(), ptr::null());
    let me = thread_id();
    l.in_event.store(me, Ordering::Release);
    conn.in_event.store(me, Ordering::Release);
    let mut ctx: *mut c_void = ptr::null_mut();
    let mut dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH = ptr::null();
    // SAFETY: the client's listen dispatch (static in the driver) and our out-pointers.
    let status = at_dispatch(|| unsafe {
        match (*l.listen_dispatch).WskAcceptEvent {
            Some(f) => f(
                l.context.load(Ordering::Acquire),
                0,
                local.as_mut_ptr().cast(),
                remote.as_mut_ptr().cast(),
                Arc::as_ptr(&conn).cast_mut().cast(),
                &mut ctx,
                &mut dispatch,
            ),
            None => STATUS_REQUEST_NOT_ACCEPTED,
        }
    });
    conn.in_event.store(0, Ordering::Release);
    l.in_event.store(0, Ordering::Release);
    if status == STATUS_SUCCESS {
        if STATIC_DISCONNECT_EVENTS.load(Ordering::Acquire)
            // SAFETY: a non-null dispatch the client returned is its static table.
            && (dispatch.is_null() || unsafe { (*dispatch).WskDisconnectEvent }.is_none())
        {
            fail(
                "WskAcceptEvent",
                "disconnect events are on, but the accepted socket's dispatch has no WskDisconnectEvent",
            );
        }
        conn.conn_dispatch
            .store(dispatch.cast_mut(), Ordering::Release);
        conn.context.store(ctx, Ordering::Release);
        return true;
    }
    // Not accepted: the provider closes the socket. The client must not have left anything
    // pending on it.
    let mut st = lock(&conn.state);
    if !st.recv.is_empty() || !st.send.is_empty() || st.disconnect.is_some() {
        fail(
            "WskAcceptEvent",
            "returned STATUS_REQUEST_NOT_ACCEPTED with operations pending on the offered socket",
        );
    }
    st.closed = true;
    drop(st);
    close_host(&conn, true);
    sockets().remove(&(Arc::as_ptr(&conn) as usize));
    true
}

/// The `kill-listener` fault: when `C:\khttp-harness\kill-listener` names a port, the listeners
/// on that port die as a real one can (the host socket is closed), and the client gets the
/// accept event with a NULL `AcceptSocket`.
fn kill_listener_fault() {
    let path = format!(r"{HARNESS_DIR}\kill-listener");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    let Ok(port) = text.trim().parse::<u16>() else {
        return;
    };
    let socks: Vec<Arc<Sock>> = sockets().values().cloned().collect();
    for l in socks.iter().filter(|s| s.kind == Kind::Listen) {
        let host = l.host.load(Ordering::Acquire);
        if host == ws::INVALID_SOCKET {
            continue;
        }
        // SAFETY: zeroed storage is valid; a live socket.
        let mut a: ws::SOCKADDR_STORAGE = unsafe { std::mem::zeroed() };
        let mut len = size_of::<ws::SOCKADDR_STORAGE>() as i32;
        // SAFETY: as above.
        unsafe { ws::getsockname(host, (&raw mut a).cast(), &mut len) };
        let bytes = sockaddr_from_host(&a);
        if u16::from_be_bytes([bytes[2], bytes[3]]) != port {
            continue;
        }
        {
            let mut st = lock(&l.state);
            st.listening = false;
        }
        close_host(l, false);
        log(&format!("fault: listener on port {port} killed"));
        l.in_event.store(thread_id(), Ordering::Release);
        // SAFETY: the client's static listen dispatch; a NULL AcceptSocket and out-pointers, as
        // the documentation describes for a listener that is no longer functional.
        unsafe {
            if let Some(f) = (*l.listen_dispatch).WskAcceptEvent {
                f(
                    l.context.load(Ordering::Acquire),
                    0,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
            }
        }
        l.in_event.store(0, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// The provider dispatch tables
// ---------------------------------------------------------------------------------------------

struct Table<T>(T);
// SAFETY: immutable tables of function pointers.
unsafe impl<T> Sync for Table<T> {}

static PROVIDER_DISPATCH: Table<WSK_PROVIDER_DISPATCH> = Table(WSK_PROVIDER_DISPATCH {
    Version: khttp_wsk::WSK_VERSION_1_0,
    Reserved: 0,
    WskSocket: Some(wsk_socket),
    WskSocketConnect: None,
    WskControlClient: Some(wsk_control_client),
    WskGetAddressInfo: ptr::null(),
    WskFreeAddressInfo: ptr::null(),
    WskGetNameInfo: ptr::null(),
});

static LISTEN_DISPATCH: Table<WSK_PROVIDER_LISTEN_DISPATCH> = Table(WSK_PROVIDER_LISTEN_DISPATCH {
    Basic: WSK_PROVIDER_BASIC_DISPATCH {
        WskControlSocket: Some(wsk_control_socket),
        WskCloseSocket: Some(wsk_close_socket),
    },
    WskBind: Some(wsk_bind),
    WskAccept: None,
    WskInspectComplete: ptr::null(),
    WskGetLocalAddress: None,
});

static CONNECTION_DISPATCH: Table<WSK_PROVIDER_CONNECTION_DISPATCH> =
    Table(WSK_PROVIDER_CONNECTION_DISPATCH {
        Basic: WSK_PROVIDER_BASIC_DISPATCH {
            WskControlSocket: Some(wsk_control_socket),
            WskCloseSocket: Some(wsk_close_socket),
        },
        WskBind: None,
        WskConnect: ptr::null(),
        WskGetLocalAddress: None,
        WskGetRemoteAddress: None,
        WskSend: Some(wsk_send),
        WskReceive: Some(wsk_receive),
        WskDisconnect: Some(wsk_disconnect),
        WskRelease: Some(wsk_release),
        WskConnectEx: ptr::null(),
        WskSendEx: ptr::null(),
        WskReceiveEx: ptr::null(),
    });

/// Captured NPIs, and whether accept events are on for every listener.
static CAPTURED: AtomicU32 = AtomicU32::new(0);
static STATIC_ACCEPT_EVENTS: AtomicBool = AtomicBool::new(false);
/// `WSK_EVENT_DISCONNECT` was in the static event mask.
static STATIC_DISCONNECT_EVENTS: AtomicBool = AtomicBool::new(false);

/// `WskRegister`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskRegister(
    client: *const WSK_CLIENT_NPI,
    registration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    if client.is_null() || registration.is_null() {
        fail("WskRegister", "NULL argument");
        return STATUS_INVALID_PARAMETER;
    }
    let _ = config();
    let mut data = std::mem::MaybeUninit::<ws::WSADATA>::uninit();
    // SAFETY: WSAStartup 2.2 with a WSADATA to fill.
    if unsafe { ws::WSAStartup(0x0202, data.as_mut_ptr()) } != 0 {
        return STATUS_UNSUCCESSFUL;
    }
    start_reactor();
    // SAFETY: the client's registration block, ours to use until WskDeregister.
    unsafe { (*registration).ReservedRegistrationState = 1 };
    log("netio: WskRegister");
    STATUS_SUCCESS
}

/// `WskDeregister`: waits until every socket is closed and every NPI released (as Windows
/// does); after 20 s it reports what is left instead of hanging the run.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskDeregister(registration: *mut WSK_REGISTRATION) {
    max_irql("WskDeregister", 0);
    // SAFETY: the client's registration block.
    if registration.is_null() || unsafe { (*registration).ReservedRegistrationState } != 1 {
        fail("WskDeregister", "not registered");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = sockets().len();
        let captured = CAPTURED.load(Ordering::Acquire);
        if open == 0 && captured == 0 {
            break;
        }
        if Instant::now() >= deadline {
            fail(
                "WskDeregister",
                &format!(
                    "{open} sockets still open and {captured} NPI captures unreleased after 20 s"
                ),
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { (*registration).ReservedRegistrationState = 0 };
    log(&format!(
        "stack: the deepest completion used {} bytes (the driver and engine, and this \
         provider's nested Winsock calls); the driver called back into WSK at most {} bytes \
         deep",
        DEEPEST_COMPLETION.load(Ordering::Relaxed),
        DEEPEST_REENTRY.load(Ordering::Relaxed)
    ));
    // The driver keeps 12 KiB (its MIN_STACK) for a step run on a completion's stack: the
    // whole completion, nested calls included, must fit in it.
    let deepest = DEEPEST_COMPLETION.load(Ordering::Relaxed);
    if deepest > 12 * 1024 {
        fail(
            "IofCompleteRequest",
            &format!(
                "a completion used {deepest} bytes of stack, more than the 12 KiB the driver keeps"
            ),
        );
    }
    log("netio: WskDeregister");
}

/// `WskCaptureProviderNPI`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskCaptureProviderNPI(
    registration: *mut WSK_REGISTRATION,
    _wait_timeout: u32,
    provider: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    // SAFETY: the client's registration block and NPI out-parameter.
    unsafe {
        if registration.is_null() || (*registration).ReservedRegistrationState != 1 {
            fail("WskCaptureProviderNPI", "not registered");
            return STATUS_INVALID_DEVICE_STATE;
        }
        (*provider).Client = registration.cast();
        (*provider).Dispatch = &PROVIDER_DISPATCH.0;
    }
    CAPTURED.fetch_add(1, Ordering::AcqRel);
    STATUS_SUCCESS
}

/// `WskReleaseProviderNPI`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskReleaseProviderNPI(_registration: *mut WSK_REGISTRATION) {
    if CAPTURED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
        .is_err()
    {
        fail("WskReleaseProviderNPI", "released more often than captured");
    }
}

unsafe extern "system" fn wsk_control_client(
    _client: *mut c_void,
    code: u32,
    input_size: usize,
    input: *mut c_void,
    _output_size: usize,
    _output: *mut c_void,
    _returned: *mut usize,
    irp: *mut c_void,
) -> NTSTATUS {
    const CALL: &str = "WskControlClient";
    if code != WSK_SET_STATIC_EVENT_CALLBACKS {
        return STATUS_NOT_SUPPORTED;
    }
    if !irp.is_null() {
        fail(CALL, "WSK_SET_STATIC_EVENT_CALLBACKS takes no IRP");
        return STATUS_INVALID_PARAMETER;
    }
    if input_size != size_of::<WSK_EVENT_CALLBACK_CONTROL>() || input.is_null() {
        fail(
            CALL,
            &format!("input length {input_size} is not a WSK_EVENT_CALLBACK_CONTROL"),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if !sockets().is_empty() {
        fail(
            CALL,
            "static event callbacks set after sockets were created",
        );
    }
    // SAFETY: checked size and pointer.
    let control = unsafe { &*input.cast::<WSK_EVENT_CALLBACK_CONTROL>() };
    if control.EventMask & WSK_EVENT_ACCEPT != 0 {
        STATIC_ACCEPT_EVENTS.store(true, Ordering::Release);
    }
    if control.EventMask & WSK_EVENT_DISCONNECT != 0 {
        STATIC_DISCONNECT_EVENTS.store(true, Ordering::Release);
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn wsk_socket(
    _client: *mut c_void,
    family: u16,
    socket_type: u16,
    protocol: u32,
    flags: u32,
    context: *mut c_void,
    dispatch: *const c_void,
    _process: *mut c_void,
    _thread: *mut c_void,
    _security: *mut c_void,
    irp: *mut c_void,
) -> NTSTATUS {
    const CALL: &str = "WskSocket";
    if !take_irp(irp, CALL, &[]) {
        return STATUS_INVALID_PARAMETER;
    }
    let kind = match flags {
        WSK_FLAG_LISTEN_SOCKET => Kind::Listen,
        WSK_FLAG_CONNECTION_SOCKET => Kind::Connection,
        _ => return complete(irp, STATUS_NOT_SUPPORTED, 0),
    };
    if kind == Kind::Listen && dispatch.is_null() {
        fail(
            CALL,
            "a listening socket without a WSK_CLIENT_LISTEN_DISPATCH",
        );
    }
    // SAFETY: plain socket creation.
    let host = unsafe { ws::socket(i32::from(family), i32::from(socket_type), protocol as i32) };
    if host == ws::INVALID_SOCKET {
        return complete(irp, map_error(last_error()), 0);
    }
    let s = new_sock(kind, family, host, context, dispatch.cast());
    if STATIC_ACCEPT_EVENTS.load(Ordering::Acquire) {
        lock(&s.state).events = true;
    }
    complete(irp, STATUS_SUCCESS, Arc::as_ptr(&s) as usize)
}

unsafe extern "system" fn wsk_control_socket(
    socket: PWSK_SOCKET,
    request: i32,
    code: u32,
    level: u32,
    input_size: usize,
    input: *mut c_void,
    _output_size: usize,
    _output: *mut c_void,
    _returned: *mut usize,
    irp: *mut c_void,
) -> NTSTATUS {
    const CALL: &str = "WskControlSocket";
    let Some(s) = find(socket, CALL) else {
        return STATUS_INVALID_PARAMETER;
    };
    let _call = Call::enter(&s);
    if request != WskSetOption {
        return if irp.is_null() {
            STATUS_NOT_SUPPORTED
        } else if take_irp(irp, CALL, &[]) {
            complete(irp, STATUS_NOT_SUPPORTED, 0)
        } else {
            STATUS_INVALID_PARAMETER
        };
    }
    if code == SO_WSK_EVENT_CALLBACK && level == khttp_wsk::SOL_SOCKET {
        // Enabling takes no IRP (so-wsk-event-callback); listeners only after bind.
        let mut st = lock(&s.state);
        if s.kind == Kind::Listen && !st.listening {
            fail(
                CALL,
                "SO_WSK_EVENT_CALLBACK on a listening socket before WskBind",
            );
        }
        st.events = true;
        drop(st);
        wake();
        return if irp.is_null() {
            STATUS_SUCCESS
        } else if take_irp(irp, CALL, &[]) {
            complete(irp, STATUS_SUCCESS, 0)
        } else {
            STATUS_INVALID_PARAMETER
        };
    }
    if !take_irp(irp, CALL, &[]) {
        return STATUS_INVALID_PARAMETER;
    }
    if input_size != 4 || input.is_null() {
        fail(
            CALL,
            &format!("option {code:#x} with an input of {input_size} bytes (4 expected)"),
        );
        return complete(irp, STATUS_INVALID_PARAMETER, 0);
    }
    let (lvl, name) = match (level, code) {
        (khttp_wsk::SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => (ws::SOL_SOCKET, ws::SO_EXCLUSIVEADDRUSE),
        (khttp_wsk::IPPROTO_IPV6, khttp_wsk::IPV6_V6ONLY) => (ws::IPPROTO_IPV6, ws::IPV6_V6ONLY),
        _ => return complete(irp, STATUS_NOT_SUPPORTED, 0),
    };
    // SAFETY: a live socket and a 4-byte option value from the client.
    let r = unsafe {
        ws::setsockopt(
            s.host.load(Ordering::Acquire),
            lvl,
            name,
            input.cast::<u8>(),
            4,
        )
    };
    let status = if r == 0 {
        STATUS_SUCCESS
    } else {
        map_error(last_error())
    };
    complete(irp, status, 0)
}

unsafe extern "system" fn wsk_bind(
    socket: PWSK_SOCKET,
    address: *mut khttp_wsk::SOCKADDR,
    _flags: u32,
    irp: *mut c_void,
) -> NTSTATUS {
    const CALL: &str = "WskBind";
    let Some(s) = find(socket, CALL) else {
        return STATUS_INVALID_PARAMETER;
    };
    let _call = Call::enter(&s);
    if !take_irp(irp, CALL, &[]) {
        return STATUS_INVALID_PARAMETER;
    }
    if address.is_null() {
        fail(CALL, "NULL address");
        return complete(irp, STATUS_INVALID_PARAMETER, 0);
    }
    // SAFETY: the client's address; its family says how long it is.
    let family = unsafe { (*address).sa_family };
    let len = match family {
        khttp_wsk::AF_INET => size_of::<khttp_wsk::SOCKADDR_IN>(),
        khttp_wsk::AF_INET6 => size_of::<khttp_wsk::SOCKADDR_IN6>(),
        _ => {
            fail(CALL, &format!("address family {family}"));
            return complete(irp, STATUS_INVALID_PARAMETER, 0);
        }
    };
    if family != s.family {
        fail(
            CALL,
            &format!("address family {family} on a socket of family {}", s.family),
        );
        return complete(irp, STATUS_INVALID_PARAMETER, 0);
    }
    let host = s.host.load(Ordering::Acquire);
    // SAFETY: a live socket and an address of `len` bytes (WSK and Winsock share the layouts).
    let mut r = unsafe { ws::bind(host, address.cast(), len as i32) };
    if r == 0 && s.kind == Kind::Listen {
        // SAFETY: a bound socket.
        // A deep backlog, as Windows gives WSK listeners (Wine turns SOMAXCONN into 5).
        r = unsafe { ws::listen(host, 4096) };
    }
    if r != 0 {
        return complete(irp, map_error(last_error()), 0);
    }
    if s.kind == Kind::Listen {
        lock(&s.state).listening = true;
        wake();
    }
    complete(irp, STATUS_SUCCESS, 0)
}

/// Shared by receive and send: validate, queue or complete.
unsafe fn transfer(
    socket: PWSK_SOCKET,
    buf: *mut WSK_BUF,
    flags: u32,
    irp: *mut c_void,
    call: &'static str,
    is_send: bool,
) -> NTSTATUS {
    note_reentry();
    let Some(s) = find(socket, call) else {
        return STATUS_INVALID_PARAMETER;
    };
    let _call = Call::enter(&s);
    // SAFETY: forwarded from the client.
    let Some((segs, mdls)) = (unsafe { segments(buf, call) }) else {
        return if take_irp(irp, call, &[]) {
            complete(irp, STATUS_INVALID_PARAMETER, 0)
        } else {
            STATUS_INVALID_PARAMETER
        };
    };
    if !take_irp(irp, call, &mdls) {
        return STATUS_INVALID_PARAMETER;
    }
    let total = segs.iter().map(|&(_, n)| n).sum();
    let mut op = Op {
        irp: irp as usize,
        segs,
        done: 0,
        total,
    };
    let mut st = lock(&s.state);
    if st.closed {
        drop(st);
        fail(call, "on a socket being closed");
        return complete(irp, STATUS_INVALID_DEVICE_STATE, 0);
    }
    let host = s.host.load(Ordering::Acquire);
    if st.aborted || host == ws::INVALID_SOCKET {
        drop(st);
        return complete(irp, STATUS_CONNECTION_ABORTED, 0);
    }
    if is_send && st.fin_sent {
        drop(st);
        fail(call, "after a graceful WskDisconnect");
        return complete(irp, STATUS_INVALID_DEVICE_STATE, 0);
    }
    // WSK_FLAG_NODELAY: this send is not held back by Nagle. Sends without it get the
    // transport's default (Nagle on), as on Windows.
    let nodelay = flags & WSK_FLAG_NODELAY != 0;
    if is_send && nodelay != st.nodelay {
        let v: u32 = u32::from(nodelay);
        // SAFETY: a live socket and a 4-byte option value.
        unsafe {
            ws::setsockopt(
                host,
                ws::IPPROTO_TCP,
                ws::TCP_NODELAY,
                (&raw const v).cast(),
                4,
            );
        }
        st.nodelay = nodelay;
    }
    let queue_empty = if is_send {
        st.send.is_empty()
    } else {
        st.recv.is_empty()
    };
    let tried = if !queue_empty {
        Try::WouldBlock
    } else if is_send {
        let st = &mut *st;
        try_send(host, &mut st.written, &mut op)
    } else {
        try_recv(host, &mut st, &mut op)
    };
    if is_send && let Try::Done(STATUS_SUCCESS, _) = tried {
        // Written: complete once acknowledged, inline when it already is (rarely).
        st.written_out(&op);
        let mut done = Vec::new();
        settle_acks(host, &mut st, &mut done);
        drop(st);
        wake();
        return complete_settled(irp, done);
    }
    match tried {
        Try::Done(status, n) => {
            drop(st);
            complete(irp, status, n)
        }
        Try::WouldBlock => {
            if is_send {
                st.send.push_back(op);
            } else {
                st.recv.push_back(op);
            }
            drop(st);
            wake();
            STATUS_PENDING
        }
    }
}

unsafe extern "system" fn wsk_receive(
    socket: PWSK_SOCKET,
    buf: *mut WSK_BUF,
    flags: u32,
    irp: *mut c_void,
) -> NTSTATUS {
    // SAFETY: forwarded from the client.
    unsafe { transfer(socket, buf, flags, irp, "WskReceive", false) }
}

unsafe extern "system" fn wsk_send(
    socket: PWSK_SOCKET,
    buf: *mut WSK_BUF,
    flags: u32,
    irp: *mut c_void,
) -> NTSTATUS {
    // SAFETY: forwarded from the client.
    unsafe { transfer(socket, buf, flags, irp, "WskSend", true) }
}

unsafe extern "system" fn wsk_disconnect(
    socket: PWSK_SOCKET,
    buf: *mut WSK_BUF,
    flags: u32,
    irp: *mut c_void,
) -> NTSTATUS {
    note_reentry();
    const CALL: &str = "WskDisconnect";
    let Some(s) = find(socket, CALL) else {
        return STATUS_INVALID_PARAMETER;
    };
    let _call = Call::enter(&s);
    if !buf.is_null() {
        // SAFETY: the client's WSK_BUF.
        if unsafe { (*buf).Length } != 0 {
            fail(
                CALL,
                "final data in WskDisconnect is not supported by the harness",
            );
        }
    }
    if !take_irp(irp, CALL, &[]) {
        return STATUS_INVALID_PARAMETER;
    }
    let mut st = lock(&s.state);
    if st.closed {
        drop(st);
        fail(CALL, "on a socket being closed");
        return complete(irp, STATUS_INVALID_DEVICE_STATE, 0);
    }
    if flags & WSK_FLAG_ABORTIVE != 0 {
        st.aborted = true;
        let cancelled = st.take_all();
        drop(st);
        close_host(&s, true);
        for irp in cancelled {
            // SAFETY: queued IRPs we own, removed from the queues.
            unsafe { complete_now(irp as *mut c_void, STATUS_CONNECTION_ABORTED, 0) };
        }
        return complete(irp, STATUS_SUCCESS, 0);
    }
    if st.disconnect.is_some() || st.fin_sent {
        drop(st);
        fail(CALL, "a second graceful disconnect");
        return complete(irp, STATUS_INVALID_DEVICE_STATE, 0);
    }
    let host = s.host.load(Ordering::Acquire);
    if st.aborted || host == ws::INVALID_SOCKET {
        drop(st);
        return complete(irp, STATUS_CONNECTION_ABORTED, 0);
    }
    st.disconnect = Some(Op {
        irp: irp as usize,
        segs: Vec::new(),
        done: 0,
        total: 0,
    });
    let mut done = Vec::new();
    if st.send.is_empty() {
        // SAFETY: a live connected socket.
        unsafe { ws::shutdown(host, ws::SD_SEND) };
        st.fin_sent = true;
        settle_acks(host, &mut st, &mut done);
    }
    drop(st);
    wake();
    complete_settled(irp, done)
}

/// `WskRelease`: returns data indications given by a receive event. This provider gives none
/// (no receive events), so any call is a client error.
unsafe extern "system" fn wsk_release(
    socket: PWSK_SOCKET,
    _indications: *mut khttp_wsk::WSK_DATA_INDICATION,
) -> NTSTATUS {
    fail(
        "WskRelease",
        &format!("socket {socket:p}: no data indication was ever given to release"),
    );
    STATUS_INVALID_PARAMETER
}

unsafe extern "system" fn wsk_close_socket(socket: PWSK_SOCKET, irp: *mut c_void) -> NTSTATUS {
    note_reentry();
    const CALL: &str = "WskCloseSocket";
    let Some(s) = find(socket, CALL) else {
        return STATUS_INVALID_PARAMETER;
    };
    let calls = s.calls.load(Ordering::Acquire);
    if calls != 0 {
        fail(
            CALL,
            &format!("socket {socket:p} closed while {calls} other call(s) on it are in progress"),
        );
    }
    let in_event = s.in_event.load(Ordering::Acquire);
    if in_event != 0 && in_event == thread_id() {
        fail(
            CALL,
            &format!("socket {socket:p} closed from inside the accept event that offers it"),
        );
    }
    if !take_irp(irp, CALL, &[]) {
        return STATUS_INVALID_PARAMETER;
    }
    let mut st = lock(&s.state);
    if st.closed {
        drop(st);
        fail(CALL, &format!("socket {socket:p} closed twice"));
        return complete(irp, STATUS_INVALID_DEVICE_STATE, 0);
    }
    st.closed = true;
    drop(st);
    // Close waits for an event callback in progress on another thread: an accept event, or a
    // disconnect event marked before the close began (none starts after `closed` is set).
    let t0 = Instant::now();
    while s.in_event.load(Ordering::Acquire) != 0
        && s.in_event.load(Ordering::Acquire) != thread_id()
    {
        if t0.elapsed() > Duration::from_secs(10) {
            fail(CALL, "an event callback did not return within 10 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut st = lock(&s.state);
    let cancelled = st.take_all();
    // Closing a connected socket is abortive unless both directions are already shut down
    // (PFN_WSK_CLOSE_SOCKET; docs/driver-facts.md, "Closing sockets"; issue #9, finding 3).
    let host = s.host.load(Ordering::Acquire);
    let graceful = s.kind == Kind::Listen
        || st.aborted
        || (st.fin_sent && (st.peer_fin || (host != ws::INVALID_SOCKET && peer_shut(host))));
    drop(st);
    close_host(&s, !graceful);
    for c in cancelled {
        // SAFETY: queued IRPs we own, removed from the queues.
        unsafe { complete_now(c as *mut c_void, STATUS_CANCELLED, 0) };
    }
    sockets().remove(&(socket as usize));
    complete(irp, STATUS_SUCCESS, 0)
}

// ---------------------------------------------------------------------------------------------
// Verifier queries for the WdfLdr.sys stand-in (by GetProcAddress)
// ---------------------------------------------------------------------------------------------

/// Whether `irp` is in flight with us (1) or not (0).
#[unsafe(no_mangle)]
pub extern "system" fn KhttpHarnessIrpBusy(irp: *mut c_void) -> u32 {
    u32::from(in_flight().irps.contains_key(&(irp as usize)))
}

/// Whether `mdl` belongs to an IRP in flight with us (1) or not (0).
#[unsafe(no_mangle)]
pub extern "system" fn KhttpHarnessMdlBusy(mdl: *mut c_void) -> u32 {
    u32::from(in_flight().mdls.contains_key(&(mdl as usize)))
}

/// Open sockets, IRPs in flight and captured NPIs, for the leak check at unload.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KhttpHarnessOutstanding(
    sockets_open: *mut u32,
    irps: *mut u32,
    captured: *mut u32,
) {
    // SAFETY: the caller's out-parameters.
    unsafe {
        *sockets_open = sockets().len() as u32;
        *irps = in_flight().irps.len() as u32;
        *captured = CAPTURED.load(Ordering::Acquire);
    }
}

/// A numeric harness setting for the WdfLdr.sys stand-in (`fail-permille`, `perturb`, `seed`);
/// 0 when unset.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KhttpHarnessSetting(name: *const u8) -> u64 {
    if name.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let name = unsafe { std::ffi::CStr::from_ptr(name.cast()) };
    match name.to_bytes() {
        b"fail-permille" => config().fail_permille,
        b"perturb" => config().perturb,
        b"seed" => config().seed,
        _ => 0,
    }
}

/// The next number of the run's seeded sequence, shared by the stand-ins so that a printed
/// seed replays their choices too (as far as thread timing allows).
#[unsafe(no_mangle)]
pub extern "system" fn KhttpHarnessRandom() -> u64 {
    random()
}

/// Logs one line (the stand-ins share one verifier log).
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KhttpHarnessLog(line: *const u8) {
    if line.is_null() {
        return;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let s = unsafe { std::ffi::CStr::from_ptr(line.cast()) };
    log(&s.to_string_lossy());
}
