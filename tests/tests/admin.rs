//! Every khttpctl command against a running khttpd, and each of its failures.

#![allow(
    clippy::too_many_lines,
    reason = "test code: one scenario reads best whole"
)]

use khttp_tests::tls::scheme;
use khttp_tests::{Server, get, wait_listening, write_file};

#[test]
fn urlacl_commands() {
    let s = Server::start("urlacl");
    assert!(s.ctl_ok(&["version"]).contains("control protocol 6"));
    if !khttp_tests::external() {
        // A shared external server may hold other tests' reservations.
        assert!(
            s.ctl_ok(&["urlacl", "show"])
                .contains("No URL reservations")
        );
    }
    // `--user`: by name to khttpd; to the driver, khttpctl (a Windows program) sends the
    // account's SID, as netsh does.
    let user = if khttp_tests::driver() {
        khttp_tests::user_name()
    } else {
        "alice".to_owned()
    };
    assert!(
        s.ctl_ok(&["urlacl", "add", "http://+:18081/app/", "--user", &user])
            .contains("added")
    );
    s.ctl_ok(&[
        "urlacl",
        "add",
        "http://adatum.com:18081/",
        "--sddl",
        "D:(A;;GX;;;WD)",
    ]);
    let shown = s.ctl_ok(&["urlacl", "show"]);
    assert!(
        shown.contains("Reserved URL : http://+:18081/app/"),
        "{shown}"
    );
    if khttp_tests::driver() {
        assert!(shown.contains("SDDL: D:(A;;GX;;;S-1-5-21-"), "{shown}");
        assert!(
            shown.contains(&format!("\\{user}  Listen: Yes  Delegate: No")),
            "the account's name: {shown}"
        );
        let err = s.ctl_err(&[
            "urlacl",
            "add",
            "http://+:18083/",
            "--user",
            "no-such-khttp-user",
        ]);
        assert!(err.contains("no such user or group"), "{err}");
    } else {
        assert!(shown.contains("User: alice"), "{shown}");
    }
    assert!(shown.contains("SDDL: D:(A;;GX;;;WD)"));
    // Each ACE with its account, as netsh shows it.
    assert!(
        shown.contains("User: Everyone  Listen: Yes  Delegate: No"),
        "{shown}"
    );
    let json = s.ctl_ok(&["urlacl", "show", "--json"]);
    assert!(
        json.contains(r#""prefix": "http://adatum.com:18081/""#),
        "{json}"
    );
    // khttpd serves https, but a port serves one scheme; the driver has no TLS yet.
    let https_refusal = if khttp_tests::driver() {
        "has no TLS"
    } else {
        "http or https, not both"
    };
    for (args, msg) in [
        (
            vec!["urlacl", "add", "http://+:18081/app/"],
            "already reserved",
        ),
        (
            vec!["urlacl", "add", "http://+:18081/APP/"],
            "already reserved",
        ),
        (
            vec!["urlacl", "add", "https://+:18081/secure/"],
            https_refusal,
        ),
        (
            vec!["urlacl", "add", "http://+:18081/app"],
            "must end with '/'",
        ),
        (vec!["urlacl", "add", "http://+/"], "no port"),
        (vec!["urlacl", "add", "http://+:0/"], "port must be"),
        (vec!["urlacl", "add", "http://+:080/"], "leading zero"),
        (vec!["urlacl", "add", "http://a b:80/"], "host must be"),
        (vec!["urlacl", "delete", "http://+:18082/"], "no such entry"),
        (
            vec![
                "urlacl",
                "add",
                "http://+:18082/",
                "--sddl",
                "D:(A;;GQ;;;WD)",
            ],
            "SDDL: unknown right",
        ),
        (
            vec!["urlacl", "add", "http://+:18082/", "--sddl", "O:BAG:BA"],
            "only a DACL",
        ),
    ] {
        let err = s.ctl_err(&args);
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(err.contains(args[2]), "the error names the prefix: {err}");
    }
    s.ctl_ok(&["urlacl", "delete", "http://+:18081/app/"]);
    s.ctl_ok(&["urlacl", "delete", "http://adatum.com:18081/"]);
    assert!(!s.ctl_ok(&["urlacl", "show"]).contains(":18081/"));
}

#[test]
fn iplisten_commands() {
    // Against a shared server it narrows the listen list for a moment (the Wine runner runs
    // one test at a time), and leaves it empty again.
    let s = Server::start("iplisten");
    assert!(s.ctl_ok(&["iplisten", "show"]).contains("empty"));
    s.ctl_ok(&["iplisten", "add", "127.0.0.1"]);
    s.ctl_ok(&["iplisten", "add", "::1"]);
    assert_eq!(
        s.ctl_ok(&["iplisten", "show", "--json"])
            .split_whitespace()
            .collect::<String>(),
        r#"["127.0.0.1","::1"]"#
    );
    assert!(
        s.ctl_err(&["iplisten", "add", "127.0.0.1"])
            .contains("already")
    );
    assert!(
        s.ctl_err(&["iplisten", "add", "localhost"])
            .contains("not an IPv4 or IPv6 address")
    );
    assert!(
        s.ctl_err(&["iplisten", "delete", "10.0.0.1"])
            .contains("no such entry")
    );
    // Listeners follow the list: only 127.0.0.1 is bound for a new reservation.
    s.ctl_ok(&["iplisten", "delete", "::1"]);
    let port = s.reserve_port();
    assert!(
        std::net::TcpStream::connect(("::1", port)).is_err(),
        "IPv6 is not in the list"
    );
    s.ctl_ok(&["iplisten", "delete", "127.0.0.1"]);
}

#[test]
fn cache_commands() {
    let s = Server::start("cache");
    let port = s.reserve_port();
    let base = format!("{}://+:{port}/", scheme());
    let page = write_file(&s, "page.html", b"<p>hello</p>");
    let text = "compressible text ".repeat(200);
    let big = write_file(&s, "big.txt", text.as_bytes());
    let p = page.to_str().unwrap();
    s.ctl_ok(&["cache", "put", &format!("{base}page.html"), p]);
    let r = get(port, "/page.html", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>hello</p>"[..]));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{base}x"),
        p,
        "--content-type",
        "text/x-custom",
        "--status",
        "410",
        "--header",
        "X-Served-By: khttp",
        "--ttl",
        "300",
    ]);
    let r = get(port, "/x", "");
    assert_eq!(
        (r.status, r.header("content-type"), r.header("x-served-by")),
        (410, Some("text/x-custom"), Some("khttp"))
    );

    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{base}big.txt"),
        big.to_str().unwrap(),
        "--compress",
        "gzip,br",
    ]);
    let shown = s.ctl_ok(&["cache", "show", &base]);
    assert!(
        shown.contains(&format!("URL: {base}big.txt")) && shown.contains("Encodings: gzip,br"),
        "{shown}"
    );
    let json = s.ctl_ok(&["cache", "show", "--json"]);
    assert!(
        json.contains(r#""encodings": ["#) && json.contains(r#""ttl_remaining": 300"#),
        "{json}"
    );

    for (args, msg) in [
        (
            vec!["cache", "put", "http://+:1/a", p],
            "no reservation covers this URL",
        ),
        (
            vec!["cache", "put", &format!("{base}a"), "/nonexistent/file"],
            "cannot read /nonexistent/file",
        ),
        (
            vec![
                "cache",
                "put",
                &format!("{base}a"),
                p,
                "--header",
                "Content-Length: 1",
            ],
            "invalid header",
        ),
        (
            vec!["cache", "put", &format!("{base}a"), p, "--status", "304"],
            "invalid status",
        ),
        (
            vec!["cache", "put", &format!("{base}a"), p, "--compress", "zip"],
            "--compress: unknown coding \"zip\"",
        ),
        (
            vec!["cache", "put", "ftp://x/", p],
            "must start with \"http://\"",
        ),
        (
            vec!["cache", "delete", &format!("{base}nope")],
            "no such entry",
        ),
        (
            vec!["cache", "load", "/nonexistent/dir", "--prefix", &base],
            "is not a directory",
        ),
    ] {
        let err = s.ctl_err(&args);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // Over the per-entry limit.
    s.ctl_ok(&["limits", "set", "cache-max-entry-bytes", "10"]);
    let err = s.ctl_err(&[
        "cache",
        "put",
        &format!("{base}big2"),
        big.to_str().unwrap(),
    ]);
    assert!(err.contains("larger than cache-max-entry-bytes"), "{err}");
    s.ctl_ok(&["limits", "set", "cache-max-entry-bytes", "268435456"]); // the default again

    s.ctl_ok(&["cache", "delete", &format!("{base}page.html")]);
    assert_eq!(get(port, "/page.html", "").status, 404);
    assert!(
        s.ctl_ok(&["cache", "flush", &base])
            .contains("Flushed 2 entries")
    );
    assert!(s.ctl_ok(&["cache", "show"]).contains("no cache entries"));
}

#[test]
fn cache_load_a_directory() {
    let s = Server::start("load");
    let port = s.reserve_port();
    write_file(&s, "site/index.html", b"home");
    write_file(&s, "site/docs/index.html", b"docs");
    write_file(&s, "site/a b.css", b"body{}");
    let dir = s.dir.join("files/site");
    let out = s.ctl_ok(&[
        "cache",
        "load",
        dir.to_str().unwrap(),
        "--prefix",
        &format!("{}://+:{port}/", scheme()),
    ]);
    assert!(out.contains("Loaded 3 files as 5 entries"), "{out}");
    assert_eq!(get(port, "/", "").body, b"home");
    assert_eq!(get(port, "/docs/", "").body, b"docs");
    assert_eq!(get(port, "/docs/index.html", "").body, b"docs");
    assert_eq!(get(port, "/a%20b.css", "").body, b"body{}");
    assert_eq!(
        get(port, "/a%20b.css", "").header("content-type"),
        Some("text/css; charset=utf-8")
    );
}

#[test]
fn stats_and_limits() {
    let s = Server::start("stats");
    // Counters as deltas: a shared server has served other tests (one at a time).
    let counter = |name: &str| s.stat(name);
    let (hits, misses) = (counter("cache-hits"), counter("cache-misses"));
    let port = s.reserve_port();
    let f = write_file(&s, "a.txt", b"a");
    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{}://+:{port}/a.txt", scheme()),
        f.to_str().unwrap(),
    ]);
    let _ = get(port, "/a.txt", "");
    let _ = get(port, "/missing", "");
    assert_eq!(
        (
            counter("cache-hits") - hits,
            counter("cache-misses") - misses
        ),
        (1, 1)
    );
    let json = s.ctl_ok(&["stats", "--json"]);
    assert!(json.contains(r#""cache-hits": "#), "{json}");
    assert!(s.ctl_ok(&["stats"]).contains("requests"));
    let limits = s.ctl_ok(&["limits", "show", "--json"]);
    assert!(
        limits.contains(r#""max-request-bytes": 16384"#)
            && limits.contains(r#""idle-timeout": 120"#),
        "{limits}"
    );
    for new in [
        r#""linger-timeout": 2"#,
        r#""queue-length": 1000"#,
        r#""app-response-timeout": 60"#,
        r#""max-queued-body-bytes": 1048576"#,
    ] {
        assert!(limits.contains(new), "{new} in {limits}");
    }
    // No application has attached a queue: none listed, in either form.
    assert!(s.ctl_ok(&["queue", "show"]).contains("No request queues."));
    assert_eq!(s.ctl_ok(&["queue", "show", "--json"]).trim(), "[]");
    s.ctl_ok(&["limits", "set", "max-headers", "5"]);
    assert!(s.ctl_ok(&["limits", "show"]).contains("max-headers"));
    assert!(
        s.ctl_err(&["limits", "set", "max-headers", "0"])
            .contains("out of range")
    );
    assert!(
        s.ctl_err(&["limits", "set", "nope", "1"])
            .contains("unknown limit")
    );
    assert!(
        s.ctl_err(&["limits", "set", "max-headers", "many"])
            .contains("whole number")
    );
    // The new limit applies to requests: 6 fields are too many.
    let r = get(port, "/a.txt", "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n");
    assert_eq!(r.status, 431);
}

#[test]
fn unreachable_endpoint_is_one_line() {
    let s = Server::start("unreachable");
    let out = std::process::Command::new(khttp_tests::bin("khttpctl"))
        .args(["--endpoint", "unix:/nonexistent/khttp.sock", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1);
    assert!(
        err.contains("cannot reach the khttp control endpoint unix:/nonexistent/khttp.sock"),
        "{err}"
    );
    let out = std::process::Command::new(khttp_tests::bin("khttpctl"))
        .args(["--endpoint", "bogus", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    drop(s);
}

#[test]
fn site_flag_serves_a_directory() {
    if khttp_tests::skip_external(
        "--site is a khttpd flag; the driver is loaded with khttpctl cache load (cache_load_a_directory)",
    ) {
        return;
    }
    let mut s = Server::start("site");
    let port = khttp_tests::free_port();
    s.signal("-TERM");
    assert_eq!(s.wait(), Some(0));
    write_file(&s, "www/index.html", b"<h1>site</h1>");
    let dir = s.dir.join("files/www");
    let prefix = format!("{}://+:{port}/", scheme());
    s.spawn(&["--site", dir.to_str().unwrap(), "--prefix", &prefix]);
    if khttp_tests::tls::enabled() {
        s.bind_test_cert(port);
    }
    wait_listening(port);
    assert!(
        s.output()
            .contains(&format!("at {}://localhost:{port}/", scheme())),
        "{}",
        s.output()
    );
    let r = get(port, "/", "");
    assert_eq!(r.body, b"<h1>site</h1>");
    // A freshness policy by default, so that clients and caches need not guess.
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
}

#[test]
fn other_users_are_refused() {
    if khttp_tests::external() {
        return;
    }
    // Needs root (to run khttpctl as another user) and runuser; skipped otherwise.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let has_runuser = std::process::Command::new("runuser")
        .arg("--help")
        .output()
        .is_ok();
    if !is_root || !has_runuser {
        eprintln!("not root or no runuser: skipped");
        return;
    }
    let s = Server::start("perm");
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(khttp_tests::bin("khttpctl"))
        .args([
            "--endpoint",
            &s.endpoint,
            "urlacl",
            "add",
            "http://+:18090/",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        !s.ctl_ok(&["urlacl", "show"]).contains("18090"),
        "nothing was changed"
    );
}

/// Expired entries are reclaimed by the server's own timer: they stop counting
/// against the cache's entries and bytes without any request touching them. Counters as
/// deltas, since an external server is shared.
#[test]
fn expired_entries_are_reclaimed() {
    let s = Server::start("expire");
    let port = s.reserve_port();
    let counter = |name: &str| s.stat(name);
    let (entries, bytes) = (counter("cache-entries"), counter("cache-bytes"));
    let f = write_file(&s, "short.txt", &[b'e'; 5000]);
    s.ctl_ok(&[
        "cache",
        "put",
        &format!("{}://+:{port}/short.txt", scheme()),
        f.to_str().unwrap(),
        "--ttl",
        "1",
    ]);
    assert_eq!(counter("cache-entries"), entries + 1);
    assert_eq!(counter("cache-bytes"), bytes + 5000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while counter("cache-entries") != entries || counter("cache-bytes") != bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired entry still counts after 15 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(get(port, "/short.txt", "").status, 404);
}
