//! Test support for the black-box suite: start khttpd, run khttpctl, speak raw HTTP.
//!
//! The target comes from the environment, so the same suite can run against the driver in a VM:
//! - `KHTTP_TEST_HOST` (default `127.0.0.1`): where HTTP requests go;
//! - `KHTTP_TEST_EXTERNAL=1`: do not start khttpd; use the server already at
//!   `KHTTP_ENDPOINT`. Each test restores the limits it changed and deletes the reservations it
//!   made when it ends, since the server is shared;
//! - `KHTTP_TEST_STOP`, `KHTTP_TEST_KILL`, `KHTTP_TEST_START` (external only): shell commands
//!   that stop the external server gracefully, kill it, and start it again (the Wine runner's
//!   `sc stop`, killing winedevice, `sc start`). Tests that need them skip without them;
//! - `KHTTP_TEST_SKIP_LOG` (external only): a file where each test that cannot run against the
//!   external server writes its name and why, so that the runner counts it as skipped, not passed;
//! - `KHTTPD_BIN`, `KHTTPCTL_BIN`, `HELLO_APP_BIN`: the binaries (default: next to this test in
//!   `target/`);
//! - `KHTTP_TEST_TLS=1` (khttpd only): the TLS mode ([`tls`]): reservations made by
//!   [`Server::reserve_port`] are `https://` with a certificate bound, and [`Conn`] speaks TLS;
//! - `KHTTP_TEST_TLS_PROVIDER` (khttpd only): khttpd's `--tls-provider` (`ring`, the default,
//!   or `khttp-crypto`, the driver's provider).

#![allow(missing_docs, reason = "test support")]

pub mod load;
pub mod raw;
pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

static BUILD: Once = Once::new();

/// Path of a workspace binary, building the binaries once if they are missing.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return p.into();
    }
    let path = bin_dir().join(name);
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = bin_dir().ends_with("release");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "khttp-host",
            "-p",
            "khttpctl",
            "-p",
            "khttp-proxy",
            "-p",
            "hello-app",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build");
        assert!(status.success(), "building khttpd and khttpctl failed");
    });
    path
}

/// A free TCP port on loopback.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[must_use]
pub fn external() -> bool {
    std::env::var("KHTTP_TEST_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Whether the server is the driver, reached through its device (khttpctl is then a Windows
/// program: `--user NAME` is looked up as a Windows account).
#[must_use]
pub fn driver() -> bool {
    external() && std::env::var("KHTTP_ENDPOINT").is_ok_and(|e| e.starts_with("device:"))
}

/// The name of the user running the tests (`id -un`): under Wine, the Windows user too.
#[must_use]
pub fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// In external mode: records that the calling test does not apply to the external server, and
/// why (`KHTTP_TEST_SKIP_LOG`), and returns true; otherwise false.
#[must_use]
pub fn skip_external(reason: &str) -> bool {
    if !external() {
        return false;
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    if let Some(path) = std::env::var_os("KHTTP_TEST_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{name}: {reason}");
    }
    true
}

/// In external mode, the shell command in `var` (see the module documentation), if any.
fn external_command(var: &str) -> Option<Command> {
    let script = std::env::var(var).ok().filter(|s| !s.trim().is_empty())?;
    let mut c = Command::new("sh");
    c.args(["-c", &script]);
    Some(c)
}

/// Whether the external server can be stopped, killed and started again by this suite.
#[must_use]
pub fn external_lifecycle() -> bool {
    ["KHTTP_TEST_STOP", "KHTTP_TEST_KILL", "KHTTP_TEST_START"]
        .iter()
        .all(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

#[must_use]
pub fn host() -> String {
    std::env::var("KHTTP_TEST_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

/// A khttpd under test (or the external server).
pub struct Server {
    pub dir: PathBuf,
    pub endpoint: String,
    pub child: Option<Child>,
    pub stdout: PathBuf,
    /// External: the limits when the test began, restored when it ends.
    limits: Vec<(String, String)>,
    /// External: the reservations this test made, deleted when it ends.
    reserved: std::cell::RefCell<Vec<String>>,
    /// External: a stop under way (`KHTTP_TEST_STOP`), waited for by [`Server::wait`].
    stopping: Option<Child>,
}

/// The `limits show` table as (name, value) pairs.
fn parse_limits(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

impl Server {
    /// Starts khttpd with a fresh state directory, or attaches to the external target.
    #[must_use]
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("khttp-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        if external() {
            let endpoint =
                std::env::var("KHTTP_ENDPOINT").expect("KHTTP_ENDPOINT for an external target");
            let mut s = Self {
                dir: dir.clone(),
                endpoint,
                child: None,
                stdout: dir.join("stdout"),
                limits: Vec::new(),
                reserved: std::cell::RefCell::new(Vec::new()),
                stopping: None,
            };
            s.limits = parse_limits(&s.ctl_ok(&["limits", "show"]));
            return s;
        }
        let endpoint = format!("unix:{}", dir.join("ctl.sock").display());
        let mut s = Self {
            dir: dir.clone(),
            endpoint,
            child: None,
            stdout: dir.join("stdout"),
            limits: Vec::new(),
            reserved: std::cell::RefCell::new(Vec::new()),
            stopping: None,
        };
        s.spawn(&[]);
        s
    }

    /// (Re)starts the khttpd process on this server's state directory; external: starts the
    /// external server again (`KHTTP_TEST_START`) and waits until it answers.
    pub fn spawn(&mut self, extra: &[&str]) {
        if external() {
            let mut c = external_command("KHTTP_TEST_START").expect("KHTTP_TEST_START");
            assert!(
                c.status().is_ok_and(|s| s.success()),
                "KHTTP_TEST_START failed"
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.ctl(&["version"]).status.success() {
                assert!(
                    Instant::now() < deadline,
                    "the external server did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        let out = std::fs::File::create(&self.stdout).expect("stdout file");
        let err = out.try_clone().expect("stderr file");
        let sock = self.dir.join("ctl.sock");
        let child = Command::new(bin("khttpd"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--control")
            .arg(&sock)
            .args(["--workers", "1"])
            .args(
                std::env::var("KHTTP_TEST_TLS_PROVIDER")
                    .map(|p| vec!["--tls-provider".to_owned(), p])
                    .unwrap_or_default(),
            )
            .args(extra)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start khttpd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.output().contains("control socket") {
            assert!(
                Instant::now() < deadline,
                "khttpd did not start: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// khttpd's application socket (`app.sock` beside the control socket).
    #[must_use]
    pub fn app_socket(&self) -> PathBuf {
        self.dir.join("app.sock")
    }

    /// What khttpd printed so far.
    #[must_use]
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Runs khttpctl against this server.
    #[must_use]
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("khttpctl"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run khttpctl")
    }

    /// One counter from `khttpctl stats` (`u64::MAX` if absent).
    #[must_use]
    pub fn stat(&self, name: &str) -> u64 {
        self.ctl_ok(&["stats"])
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }

    /// Runs khttpctl and insists that it succeeds; returns its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "khttpctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs khttpctl expecting failure; returns the one line it printed on stderr.
    #[must_use]
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            !out.status.success(),
            "khttpctl {args:?} should have failed"
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "one line of English, got {err:?}");
        assert!(err.starts_with("khttpctl: "), "{err:?}");
        err
    }

    /// Reserves `http://+:PORT/` on a free port and waits until it accepts connections.
    #[must_use]
    pub fn reserve_port(&self) -> u16 {
        let port = free_port();
        let prefix = format!("{}://+:{port}/", tls::scheme());
        self.ctl_ok(&["urlacl", "add", &prefix]);
        self.reserved.borrow_mut().push(prefix);
        if tls::enabled() {
            self.bind_test_cert(port);
        }
        wait_listening(port);
        port
    }

    /// The TLS mode: binds the test process's certificate to `port` (`ipport=0.0.0.0:PORT`).
    pub fn bind_test_cert(&self, port: u16) {
        let c = tls::cert();
        let binding = format!("ipport=0.0.0.0:{port}");
        let (cert, key) = (
            c.cert.to_str().expect("path"),
            c.key.to_str().expect("path"),
        );
        self.ctl_ok(&["sslcert", "add", &binding, "--cert", cert, "--key", key]);
    }

    /// External: deletes `prefix` when the test ends (a reservation made other than by
    /// [`Server::reserve_port`], e.g. by `khttpctl apply`).
    pub fn track_reservation(&self, prefix: &str) {
        self.reserved.borrow_mut().push(prefix.to_owned());
    }

    /// Sends a signal to khttpd. External: `-TERM` starts `KHTTP_TEST_STOP` (waited for by
    /// [`Server::wait`]) and `-KILL` runs `KHTTP_TEST_KILL`.
    pub fn signal(&mut self, sig: &str) {
        if external() {
            match sig {
                "-TERM" => {
                    let mut c = external_command("KHTTP_TEST_STOP").expect("KHTTP_TEST_STOP");
                    self.stopping = Some(c.spawn().expect("run KHTTP_TEST_STOP"));
                }
                "-KILL" => {
                    let mut c = external_command("KHTTP_TEST_KILL").expect("KHTTP_TEST_KILL");
                    assert!(
                        c.status().is_ok_and(|s| s.success()),
                        "KHTTP_TEST_KILL failed"
                    );
                }
                other => panic!("signal {other} has no meaning for an external server"),
            }
            return;
        }
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig}");
        }
    }

    /// Waits for khttpd to exit; returns its exit code. External: waits for the stop command
    /// (0 when it reports the server stopped).
    pub fn wait(&mut self) -> Option<i32> {
        if let Some(mut c) = self.stopping.take() {
            return c.wait().ok().and_then(|s| s.code());
        }
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if external() {
            // Leave the shared server as this test found it, also when the test failed: a limit
            // left changed (`max-connections` 2, say) would fail the tests after it. Nothing
            // here panics.
            let now = parse_limits(&String::from_utf8_lossy(
                &self.ctl(&["limits", "show"]).stdout,
            ));
            for (name, value) in &self.limits {
                if !now.iter().any(|(n, v)| n == name && v == value) {
                    let _ = self.ctl(&["limits", "set", name, value]);
                }
            }
            for prefix in self.reserved.borrow().iter() {
                let _ = self.ctl(&["urlacl", "delete", prefix]);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until something accepts on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((host().as_str(), port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection for raw HTTP (over TLS in the suite's TLS mode).
pub struct Conn {
    pub stream: tls::Stream,
    buf: Vec<u8>,
}

impl Conn {
    #[must_use]
    pub fn open(port: u16) -> Self {
        let tcp = TcpStream::connect((host().as_str(), port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let stream = if tls::enabled() {
            tls::Stream::tls(tcp)
        } else {
            tls::Stream::Plain(tcp)
        };
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one response; `head_only` for responses to HEAD.
    pub fn read(&mut self, head_only: bool) -> Option<Response> {
        loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hdrs);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let status = r.code.unwrap_or(0);
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let len = if head_only || status == 304 || status == 100 {
                    0
                } else {
                    len
                };
                let chunked = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("transfer-encoding")
                        && v.to_ascii_lowercase().contains("chunked")
                });
                if chunked && !head_only {
                    let body = self.read_chunks(n)?;
                    return Some(Response {
                        status,
                        headers,
                        body,
                    });
                }
                while self.buf.len() < n + len {
                    if !self.fill() {
                        return None;
                    }
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(Response {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Decodes a chunked body (RFC 9112 §7.1) that starts at `at` in the buffer, and drops the
    /// response from the buffer; `None` if the connection ends first or the framing is bad.
    fn read_chunks(&mut self, mut at: usize) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = self.line_end(at)?;
            let line = std::str::from_utf8(&self.buf[at..line_end]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let end = self.line_end(at)?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        self.buf.drain(..at);
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < at + size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            if &self.buf[at + size..at + size + 2] != b"\r\n" {
                return None;
            }
            at += size + 2;
        }
    }

    /// Where the line starting at `at` ends (its CR), reading more as needed.
    fn line_end(&mut self, at: usize) -> Option<usize> {
        loop {
            if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                return Some(at + i);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server closed the connection (EOF within the read timeout, nothing pending).
    #[must_use]
    pub fn closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 1];
        // Over TLS a FIN without close_notify reads as UnexpectedEof.
        let gone = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            )
        };
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Err(e) if gone(&e) => true,
            _ => self.stream.read(&mut b).is_err_and(|e| gone(&e)),
        }
    }
}

/// One request on a fresh connection.
#[must_use]
pub fn get(port: u16, path: &str, extra: &str) -> Response {
    let mut c = Conn::open(port);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{extra}\r\n").as_bytes());
    c.read(false).expect("a response")
}

/// Sends raw bytes on a fresh connection; returns the first response and whether the server
/// then closed the connection.
#[must_use]
pub fn raw(port: u16, bytes: &[u8]) -> (Response, bool) {
    let mut c = Conn::open(port);
    c.send(bytes);
    let r = c.read(false).expect("a response");
    let closed = c.closed();
    (r, closed)
}

/// The bytes of an HTTP/1.1 request `line` (`"POST /path"`) carrying `body` with its
/// `Content-Length`; `extra` is more header lines, each ending in CRLF.
#[must_use]
pub fn with_body(line: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{line} HTTP/1.1\r\nHost: h\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Writes a file under the server's directory and returns its path.
pub fn write_file(server: &Server, rel: &str, contents: &[u8]) -> PathBuf {
    let p = server.dir.join("files").join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, contents).expect("write");
    p
}

/// An application process, killed and reaped when dropped: a test that fails half-way does
/// not leave it attached (under the Wine harness its handle would hold the driver's device
/// open at unload, and the next tests would share its queue).
pub struct App(pub Child);

impl std::ops::Deref for App {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for App {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hello-app` attached to `prefix` (with `extra` arguments), running as this user, through
/// this server's application socket (under the Wine harness, its wrapper names the device).
pub fn hello(s: &Server, prefix: &str, extra: &[&str]) -> App {
    let mut child = Command::new(bin("hello-app"))
        .arg(prefix)
        .args(extra)
        .env(
            "KHTTP_APP_ENDPOINT",
            format!("unix:{}", s.app_socket().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hello-app");
    wait_attached(&mut child);
    App(child)
}

/// Waits for an application process's first line, which says it attached.
pub fn wait_attached(child: &mut Child) {
    let mut line = String::new();
    let out = child.stdout.as_mut().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    if !line.contains("attached") {
        let mut err = String::new();
        let _ = Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
        panic!("the application: {line:?}, {err:?}");
    }
}
