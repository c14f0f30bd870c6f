//! khttpd's sockets and who may be trusted with them (issue #21, findings 2 and 11).
//!
//! - khttpd refuses a socket directory that another user could have prepared for it: owned by
//!   someone else, a symbolic link, or writable by group or others; it makes its per-user
//!   directory itself, mode 0700, and starts again in it.
//! - khttpctl, applications (`hello-app`) and `khttp-proxy` refuse a socket served by a user
//!   that is neither root nor themselves, before sending it a byte; a server whose directory
//!   root made for it (systemd's `RuntimeDirectory` for a `DynamicUser`) is trusted.
//! - A stalled control client does not hold up the next one; past the bound on control
//!   connections at once, a connection is refused at once, in one line.
//!
//! The other users are `daemon` (khttpd's user) and `nobody` (the attacker), reached with
//! setpriv: those tests need root, and say so when skipped. All need a local khttpd.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use khttp_tests::{Server, bin, skip_external};

const LOCAL: &str = "khttpd's own sockets and their directories, on this machine";

/// Whether this test runs as root (it needs other users); says so when not.
fn root() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("skipped: needs root, to act as other users with setpriv");
    }
    root
}

/// `id -u USER` (or `id -g USER` with `group`).
fn id(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {user}"))
}

/// `program` run as `user`, with the user's group and no other.
fn as_user(user: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", id(user, "-u")))
        .arg(format!("--regid={}", id(user, "-g")))
        .arg("--clear-groups")
        .arg(program);
    c
}

/// Removes `path`, whatever it is (a directory, a symbolic link, a socket).
fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).expect("remove the directory"),
        Ok(_) => std::fs::remove_file(path).expect("remove the file"),
        Err(_) => {}
    }
}

/// A path removed now (a stale one from an earlier run) and again when the test ends.
struct Removed(PathBuf);

impl Removed {
    fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        remove(&path);
        Self(path)
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// Makes directory `path` with exactly `mode`, owned by `user`.
fn mkdir(path: &Path, user: &str, mode: u32) {
    std::fs::create_dir(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(id(user, "-u")), Some(id(user, "-g"))).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A scratch directory of this test, root's, mode 0755, with `state/` for `daemon`'s khttpd.
fn scratch(name: &str) -> Removed {
    let dir = Removed::new(
        std::env::temp_dir().join(format!("khttp-test-{name}-{}", std::process::id())),
    );
    mkdir(&dir.0, "root", 0o755);
    mkdir(&dir.0.join("state"), "daemon", 0o700);
    dir
}

/// A process killed and reaped when dropped, so that a failing test leaves none behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// khttpd as `daemon`, with `--state-dir` in `scratch`, no `XDG_RUNTIME_DIR` and `extra`
/// arguments (without `--control` its sockets go in `/tmp/khttp-UID`); its output goes to
/// `scratch/out`.
fn daemon_khttpd(scratch: &Path, extra: &[&OsStr]) -> (Command, PathBuf) {
    let out = scratch.join("out");
    let file = std::fs::File::create(&out).expect("output file");
    let mut c = as_user("daemon", bin("khttpd"));
    c.arg("--state-dir")
        .arg(scratch.join("state"))
        .args(["--workers", "1"])
        .args(extra)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("output file"))
        .stderr(file);
    (c, out)
}

/// Runs khttpd expecting it to refuse to start; returns the one line it printed.
fn refused(scratch: &Path, extra: &[&OsStr]) -> String {
    let (mut cmd, out) = daemon_khttpd(scratch, extra);
    let mut child = Killed(cmd.spawn().expect("start khttpd"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(
            !printed.contains("control socket") && Instant::now() < deadline,
            "khttpd started: {printed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(!status.success(), "{printed}");
    assert_eq!(
        printed.lines().count(),
        1,
        "one line of English: {printed:?}"
    );
    assert!(printed.starts_with("khttpd: "), "{printed:?}");
    printed
}

/// Starts khttpd as `daemon` and waits until it serves.
fn started(scratch: &Path, extra: &[&OsStr]) -> Killed {
    let (mut cmd, out) = daemon_khttpd(scratch, extra);
    let mut child = Killed(cmd.spawn().expect("start khttpd"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        if printed.contains("control socket") {
            return child;
        }
        let exited = child.0.try_wait().expect("wait");
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "khttpd did not start: {printed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// khttpctl run as `user` (root when `None`) against `unix:SOCK`.
fn khttpctl(user: Option<&str>, sock: &Path, args: &[&OsStr]) -> Output {
    let mut c = match user {
        Some(user) => as_user(user, bin("khttpctl")),
        None => Command::new(bin("khttpctl")),
    };
    c.arg("--endpoint")
        .arg(format!("unix:{}", sock.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run khttpctl")
}

/// The one line `out` printed on stderr, after checking that it failed with exit code 1.
fn failure(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line of English: {err:?}");
    err
}

#[test]
fn khttpd_refuses_a_socket_directory_another_user_could_have_prepared() {
    if skip_external(LOCAL) || !root() {
        return;
    }
    let scratch = scratch("sockdir");
    let (daemon, nobody) = (id("daemon", "-u"), id("nobody", "-u"));
    // Without --control nor XDG_RUNTIME_DIR, daemon's khttpd puts its sockets here.
    let dir = Removed::new(format!("/tmp/khttp-{daemon}"));
    let dir = &dir.0;
    let name = dir.display().to_string();

    // The red team's setup: another user made it first, open to all.
    mkdir(dir, "nobody", 0o777);
    let err = refused(&scratch.0, &[]);
    assert!(
        err.contains(&name) && err.contains(&format!("owned by uid {nobody}")),
        "{err}"
    );
    assert!(!dir.join("control.sock").exists(), "a socket was made");
    // Another user's, closed: the same.
    remove(dir);
    mkdir(dir, "nobody", 0o755);
    let err = refused(&scratch.0, &[]);
    assert!(err.contains(&format!("owned by uid {nobody}")), "{err}");

    // A symbolic link, even to a directory of khttpd's own user, mode 0700.
    remove(dir);
    let target = scratch.0.join("elsewhere");
    mkdir(&target, "daemon", 0o700);
    std::os::unix::fs::symlink(&target, dir).expect("symlink");
    let err = refused(&scratch.0, &[]);
    assert!(
        err.contains(&name) && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!target.join("control.sock").exists(), "a socket was made");

    // khttpd's own user's, but writable by others or by its group.
    for mode in [0o777, 0o707, 0o770] {
        remove(dir);
        mkdir(dir, "daemon", mode);
        let err = refused(&scratch.0, &[]);
        assert!(
            err.contains(&name) && err.contains("writable by"),
            "{mode:o}: {err}"
        );
    }

    // None there: khttpd makes it, 0700, and serves in it; again after a restart.
    remove(dir);
    for _ in 0..2 {
        let khttpd = started(&scratch.0, &[]);
        let m = std::fs::symlink_metadata(dir).expect("the directory");
        assert!(m.is_dir());
        assert_eq!(m.uid(), daemon);
        assert_eq!(m.mode() & 0o7777, 0o700, "mode {:o}", m.mode());
        let sock = dir.join("control.sock");
        let out = khttpctl(Some("daemon"), &sock, &["version".as_ref()]);
        assert!(out.status.success(), "{out:?}");
        // root's khttpctl does not trust daemon's socket in /tmp, whose name anyone could take.
        let err = failure(&khttpctl(None, &sock, &["version".as_ref()]));
        assert!(err.contains(&format!("served by uid {daemon}")), "{err}");
        drop(khttpd);
    }
}

#[test]
fn a_server_in_a_directory_root_made_for_it_is_trusted() {
    if skip_external(LOCAL) || !root() {
        return;
    }
    // systemd's layout for the package's unit: RuntimeDirectory=khttp, mode 0755, owned by the
    // service's DynamicUser, in /run (root's, 0755). Here daemon's directory in root's scratch.
    let scratch = scratch("rundir");
    let run = scratch.0.join("khttp");
    mkdir(&run, "daemon", 0o755);
    let sock = run.join("control.sock");
    let _khttpd = started(&scratch.0, &["--control".as_ref(), sock.as_os_str()]);
    // root administers it (logrotate's `khttpctl log reopen`).
    let out = khttpctl(None, &sock, &["version".as_ref()]);
    assert!(out.status.success(), "{out:?}");
    // Another user's application reaches it, and khttpd answers (no such reservation).
    let out = as_user("nobody", bin("hello-app"))
        .arg("http://+:1/unreserved/")
        .env(
            "KHTTP_APP_ENDPOINT",
            format!("unix:{}", run.join("app.sock").display()),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run hello-app");
    let err = failure(&out);
    assert!(err.contains("no such"), "{err}");
}

/// A listener as `nobody` on each of `socks` (mode 0777), which prints for each connection how
/// many bytes it received before the peer closed or went quiet for 3 s.
const FAKE: &str = r#"
import os, select, socket, sys
ls = []
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.bind(p)
    os.chmod(p, 0o777)
    s.listen(8)
    ls.append(s)
print("listening", flush=True)
while True:
    for s in select.select(ls, [], [])[0]:
        c, _ = s.accept()
        c.settimeout(3)
        n = 0
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                n += len(b)
        except OSError:
            pass
        c.close()
        print(n, flush=True)
"#;

/// The byte count the fake listener printed for its next connection.
fn received(out: &mut BufReader<ChildStdout>) -> u64 {
    let mut line = String::new();
    out.read_line(&mut line).expect("the listener's count");
    line.trim().parse().expect("a count")
}

#[test]
fn clients_refuse_a_socket_served_by_another_user_and_send_it_nothing() {
    if skip_external(LOCAL) || !root() {
        return;
    }
    let nobody = id("nobody", "-u");
    let scratch = scratch("fake");
    let secret = scratch.0.join("secret.txt");
    std::fs::write(&secret, b"root's secret\n").expect("secret");
    // The attacker's directory in /tmp, where any user may make one: the name proves nothing.
    let fake = Removed::new(
        std::env::temp_dir().join(format!("khttp-test-attacker-{}", std::process::id())),
    );
    mkdir(&fake.0, "nobody", 0o755);
    let (control, app) = (fake.0.join("control.sock"), fake.0.join("app.sock"));
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap_or("python3");
    let mut listener = Killed(
        as_user("nobody", python)
            .args(["-c", FAKE])
            .args([&control, &app])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake listener"),
    );
    let mut out = BufReader::new(listener.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the listener starts");
    assert_eq!(line.trim(), "listening");
    let refusal = |sock: &Path| {
        format!(
            "unix:{} is served by uid {nobody}, not by root or you: refusing to use it",
            sock.display()
        )
    };

    // khttpctl, as root and as an ordinary user: the secret does not leave.
    for user in [None, Some("daemon")] {
        let put = ["cache", "put", "http://+:8080/secret.txt"];
        let mut args: Vec<&OsStr> = put.iter().map(OsStr::new).collect();
        args.push(secret.as_os_str());
        let ctl = khttpctl(user, &control, &args);
        assert_eq!(received(&mut out), 0, "khttpctl as {user:?} sent something");
        let err = failure(&ctl);
        assert_eq!(err.trim_end(), format!("khttpctl: {}", refusal(&control)));
    }

    // An application, and the proxy: the fake app.sock learns nothing and sends nothing on.
    let out_app = Command::new(bin("hello-app"))
        .arg("http://+:8080/app/")
        .env("KHTTP_APP_ENDPOINT", format!("unix:{}", app.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run hello-app");
    assert_eq!(received(&mut out), 0, "hello-app sent something");
    let err = failure(&out_app);
    assert_eq!(err.trim_end(), format!("hello-app: {}", refusal(&app)));
    let out_proxy = Command::new(bin("khttp-proxy"))
        .args([
            "--prefix",
            "http://+:8080/",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .arg("--endpoint")
        .arg(format!("unix:{}", app.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run khttp-proxy");
    assert_eq!(received(&mut out), 0, "khttp-proxy sent something");
    let err = failure(&out_proxy);
    assert!(err.contains(&refusal(&app)), "{err}");
}

/// Connects to khttpd's control socket and sends half of a request header, then nothing.
fn stall(sock: &Path) -> UnixStream {
    let mut c = UnixStream::connect(sock).expect("connect to the control socket");
    c.write_all(&[0u8; 10]).expect("half a header");
    c
}

/// Whether `c` is still open: nothing to read and no end of stream.
fn still_open(c: &mut UnixStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut b = [0u8; 1];
    loop {
        match c.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
            Ok(_) => return false,
        }
    }
}

#[test]
fn a_stalled_control_client_does_not_hold_up_another() {
    if skip_external("the stalled client speaks khttpd's control socket's frames itself") {
        return;
    }
    let s = Server::start("stalled");
    let mut stalled = stall(&s.dir.join("ctl.sock"));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let out = s.ctl(&["version"]);
    let took = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(2), "version took {took:?}");
    assert!(still_open(&mut stalled), "the stalled client was let go");
}

#[test]
fn control_connections_past_the_bound_are_refused_at_once() {
    if skip_external("the stalled clients speak khttpd's control socket's frames themselves") {
        return;
    }
    let s = Server::start("bound");
    let sock = s.dir.join("ctl.sock");
    let mut stalled: Vec<UnixStream> = (0..16).map(|_| stall(&sock)).collect();
    let t = Instant::now();
    let err = s.ctl_err(&["version"]);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(err.contains("16 control connections"), "{err}");
    assert!(
        stalled.iter_mut().all(still_open),
        "a stalled client was let go"
    );
    // One goes: the next client is served.
    drop(stalled.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !s.ctl(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(20));
    }
}
