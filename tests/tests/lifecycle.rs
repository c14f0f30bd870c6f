//! Restarts, crashes and shutdown: reservations persist; SIGTERM exits 0.

use khttp_tests::{Server, external, free_port, get, skip_external, wait_listening, write_file};

#[test]
fn restart_keeps_reservations_and_limits() {
    if !lifecycle_available() {
        return;
    }
    let mut s = Server::start("restart");
    let port = s.reserve_port();
    s.ctl_ok(&["limits", "set", "idle-timeout", "30"]);
    s.ctl_ok(&["iplisten", "add", "127.0.0.1"]);
    s.signal("-TERM");
    assert_eq!(s.wait(), Some(0), "SIGTERM exits 0");
    assert!(external() || s.output().contains("stopped"));
    s.spawn(&[]);
    wait_listening(port);
    assert!(
        s.ctl_ok(&["urlacl", "show"])
            .contains(&format!("{}://+:{port}/", khttp_tests::tls::scheme()))
    );
    assert!(
        s.ctl_ok(&["limits", "show", "--json"])
            .contains(r#""idle-timeout": 30"#)
    );
    assert!(s.ctl_ok(&["iplisten", "show"]).contains("127.0.0.1"));
    // The cache is volatile: the reservation answers 404 until content is loaded again.
    assert_eq!(get(port, "/a", "").status, 404);
    s.ctl_ok(&["iplisten", "delete", "127.0.0.1"]);
}

/// Whether the server can be restarted by this suite; records the skip when it cannot.
fn lifecycle_available() -> bool {
    !(external()
        && !khttp_tests::external_lifecycle()
        && skip_external("no KHTTP_TEST_STOP/KILL/START to restart the external server"))
}

#[test]
fn kill_9_keeps_every_acknowledged_reservation() {
    if !lifecycle_available() {
        return;
    }
    let mut s = Server::start("kill9");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    for p in &ports {
        s.ctl_ok(&["urlacl", "add", &format!("http://+:{p}/")]);
    }
    s.signal("-KILL");
    s.wait();
    s.spawn(&[]);
    let shown = s.ctl_ok(&["urlacl", "show"]);
    for p in &ports {
        assert!(
            shown.contains(&format!("http://+:{p}/")),
            "{p} lost: {shown}"
        );
        wait_listening(*p);
    }
}

#[test]
fn sigterm_finishes_a_response_in_flight() {
    if !lifecycle_available() {
        return;
    }
    let mut s = Server::start("drain");
    let port = s.reserve_port();
    let big = write_file(&s, "big.bin", &vec![b'x'; 8 << 20]);
    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{}://+:{port}/big.bin", khttp_tests::tls::scheme()),
        big.to_str().unwrap(),
    ]);
    let mut c = khttp_tests::Conn::open(port);
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    // Read a little, so the response is mid-flight, then ask khttpd to stop.
    let mut first = [0u8; 1024];
    std::io::Read::read_exact(&mut c.stream, &mut first).unwrap();
    s.signal("-TERM");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut c.stream, &mut rest).unwrap();
    assert!(
        rest.len() + 1024 > 8 << 20,
        "the whole response arrived ({} bytes)",
        rest.len() + 1024
    );
    assert_eq!(s.wait(), Some(0));
    if external() {
        s.spawn(&[]); // the suite goes on against the same server
    }
}

#[test]
fn access_log_has_a_line_per_request() {
    if skip_external("the driver writes no access log (issue #13 adds W3C logging)") {
        return;
    }
    let mut s = Server::start("accesslog");
    s.signal("-TERM");
    s.wait();
    let log = s.dir.join("access.log");
    s.spawn(&["--access-log", log.to_str().unwrap()]);
    let port = s.reserve_port();
    let f = write_file(&s, "a.txt", b"abc");
    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{}://+:{port}/a.txt", khttp_tests::tls::scheme()),
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        get(port, "/a.txt", "User-Agent: test agent\r\n").status,
        200
    );
    assert_eq!(get(port, "/nope?q=1", "").status, 404);
    let (r, _) = khttp_tests::raw(port, b"GET / HTTP/9.9\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 505);
    let text = read_lines(&log, 3);
    // W3C extended, http.sys's format, by default: its directives, then a line per request.
    assert!(text.starts_with("#Software: khttp"), "{text}");
    assert!(
        text.contains("\n#Fields: date time c-ip c-port cs-method cs-uri-stem"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains(" 127.0.0.1 ") && lines[0].contains(" GET /a.txt - 200 3 "),
        "{text}"
    );
    assert!(lines[0].contains(" test+agent - HIT"), "{text}");
    assert!(
        lines[1].contains(" GET /nope q=1 404 ") && lines[1].ends_with("MISS"),
        "{text}"
    );
    assert!(lines[2].contains(" GET / - 505 "), "{text}");

    // logrotate: the file moves away, SIGHUP (or `khttpctl log reopen`) opens a new one.
    let rotated = s.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal("-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !log.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reopen the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(get(port, "/a.txt", "").status, 200);
    assert_eq!(
        read_lines(&log, 1)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count(),
        1
    );
    std::fs::rename(&log, &rotated).unwrap();
    assert!(s.ctl_ok(&["log", "reopen"]).contains("reopened"));
    assert_eq!(get(port, "/a.txt", "").status, 200);
    assert!(read_lines(&log, 1).contains(" GET /a.txt - 200 3 "));
}

/// The log's non-directive lines once there are `n`, or after 5 s.
fn read_lines(log: &std::path::Path, n: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let count = text.lines().filter(|l| !l.starts_with('#')).count();
        if count >= n || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// nginx's `combined` and one JSON object per line, on request.
#[test]
fn access_log_formats() {
    if skip_external("the driver writes no access log (issue #13 adds W3C logging)") {
        return;
    }
    let mut s = Server::start("logformats");
    let port = s.reserve_port();
    let f = write_file(&s, "a.txt", b"abc");
    let url = format!("{}://+:{port}/a.txt", khttp_tests::tls::scheme());
    for (format, expect) in [
        (
            "combined",
            "\"GET /a.txt HTTP/1.1\" 200 3 \"http://r/\" \"ua\"",
        ),
        (
            "json",
            r#""method":"GET","uri":"/a.txt","protocol":"HTTP/1.1","status":200,"bytes":3,"#,
        ),
    ] {
        s.signal("-TERM");
        s.wait();
        let log = s.dir.join(format!("{format}.log"));
        s.spawn(&[
            "--access-log",
            log.to_str().unwrap(),
            "--log-format",
            format,
        ]);
        wait_listening(port);
        // The cache is volatile: loaded again after each start.
        s.ctl_ok(&["cache", "put", &url, f.to_str().unwrap()]);
        assert_eq!(
            get(port, "/a.txt", "Referer: http://r/\r\nUser-Agent: ua\r\n").status,
            200
        );
        let text = read_lines(&log, 1);
        assert!(text.contains(expect), "{format}: {text}");
        assert!(!text.contains('#'), "{format} has no directives: {text}");
    }
    assert!(s.ctl(&["log", "reopen"]).status.success());
}

/// Under systemd (`Type=notify`), khttpd says `READY=1` once it serves and `STOPPING=1` when a
/// signal starts its drain, on the datagram socket `$NOTIFY_SOCKET` names.
#[test]
fn readiness_is_notified() {
    if skip_external("khttpd's sd_notify; the driver is started by the service control manager") {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let dir = std::env::temp_dir().join(format!("khttp-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = std::process::Command::new(khttp_tests::bin("khttpd"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--control")
        .arg(dir.join("ctl.sock"))
        .env("NOTIFY_SOCKET", &sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the control socket answers now.
    assert!(dir.join("ctl.sock").exists());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
