//! `khttpctl apply FILE` and `khttpd --config FILE` (issue #13): a declared state applied
//! idempotently, content compared by digest, `--dry-run`, `--prune`, and errors that name the
//! file, line and field. Against khttpd, and against khttp.sys under Wine through `device:`.

#![allow(
    clippy::too_many_lines,
    reason = "test code: one scenario reads best whole"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use khttp_tests::tls::scheme;
use khttp_tests::{Server, bin, free_port, get, wait_listening, write_file};

/// A site of three files and a config declaring it at `http://+:PORT/` with `max_age` (in the
/// suite's TLS mode, at `https://+:PORT/` with the test certificate declared for the port: one
/// change more).
fn declare(s: &Server, port: u16, max_age: u32) -> PathBuf {
    write_file(s, "site/index.html", b"<h1>home</h1>");
    write_file(s, "site/a.txt", "first a\n".repeat(50).as_bytes());
    write_file(s, "robots.txt", b"User-agent: *\n");
    let sslcert = if khttp_tests::tls::enabled() {
        let c = khttp_tests::tls::cert();
        format!(
            "[[sslcert]]\nbinding = \"ipport=0.0.0.0:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
            c.cert.display(),
            c.key.display()
        )
    } else {
        String::new()
    };
    let http = scheme();
    let text = format!(
        r#"# written by tests/apply.rs
{sslcert}[limits]
idle-timeout = 33

[[reservation]]
prefix = "{http}://+:{port}/"
max-age = {max_age}

[[content]]
dir = "site"
prefix = "{http}://+:{port}/"
compress = ["gzip"]

[[content]]
file = "robots.txt"
url = "{http}://+:{port}/robots.txt"
no-cache = true
"#
    );
    write_file(s, "k.toml", text.as_bytes())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Hits of the entry at `url`, from `cache show`.
fn hits(s: &Server, url: &str) -> u64 {
    let shown = s.ctl_ok(&["cache", "show"]);
    let entry = shown
        .split("URL: ")
        .find(|e| e.lines().next() == Some(url))
        .unwrap_or_else(|| panic!("no entry at {url}: {shown}"));
    entry
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hit count: ")?.parse().ok())
        .expect("a hit count")
}

#[test]
fn apply_is_idempotent_and_sends_only_what_changed() {
    let s = Server::start("apply");
    let port = free_port();
    let prefix = format!("{}://+:{port}/", scheme());
    s.track_reservation(&prefix);
    let file = declare(&s, port, 60);
    let f = path(&file);

    // A dry run on an empty server plans everything and changes nothing.
    let plan = s.ctl_ok(&["apply", "--dry-run", f]);
    assert!(
        plan.contains(&format!("+ urlacl {prefix} (Cache-Control: max-age=60)")),
        "{plan}"
    );
    assert!(plan.contains("~ limits idle-timeout"), "{plan}");
    assert!(
        plan.contains("changes planned, none made (--dry-run)"),
        "{plan}"
    );
    assert!(!s.ctl_ok(&["urlacl", "show"]).contains(&prefix));

    let first = s.ctl_ok(&["apply", f]);
    assert!(
        first.contains(&format!("+ cache {prefix}index.html {prefix} (13 bytes)")),
        "{first}"
    );
    assert!(
        first.contains(&format!("+ cache {prefix}robots.txt")),
        "{first}"
    );
    let applied = format!(
        "{} changes applied",
        5 + usize::from(khttp_tests::tls::enabled())
    );
    assert!(first.contains(&applied), "{first}");
    wait_listening(port);
    let home = get(port, "/", "");
    assert_eq!(
        (home.status, home.body.as_slice()),
        (200, &b"<h1>home</h1>"[..])
    );
    assert_eq!(home.header("cache-control"), Some("max-age=60"));
    let robots = get(port, "/robots.txt", "");
    assert_eq!(robots.header("cache-control"), Some("no-cache"));
    let gz = get(port, "/a.txt", "Accept-Encoding: gzip\r\n");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(
        s.ctl_ok(&["limits", "show"])
            .contains("idle-timeout           33 ")
    );

    // Run again: nothing to do, and it says so.
    let second = s.ctl_ok(&["apply", f]);
    assert!(
        second
            .contains("no changes: the server already holds what it declares; 4 entries unchanged"),
        "{second}"
    );
    assert_eq!(second.lines().count(), 1, "{second}");

    // One file changes: only it is sent. The other entries keep their hit counts, which a put
    // would have reset.
    let _ = get(port, "/index.html", "");
    let before = hits(&s, &format!("{prefix}index.html"));
    write_file(&s, "site/a.txt", "second a\n".repeat(50).as_bytes());
    let plan = s.ctl_ok(&["apply", "--dry-run", f]);
    assert_eq!(
        plan,
        format!(
            "~ cache {prefix}a.txt (450 bytes)\n{f}: 1 change planned, none made (--dry-run); 3 entries unchanged\n"
        )
    );
    assert!(get(port, "/a.txt", "").body.starts_with(b"first a\n"));
    let third = s.ctl_ok(&["apply", f]);
    assert!(
        third.contains("1 change applied; 3 entries unchanged"),
        "{third}"
    );
    assert!(get(port, "/a.txt", "").body.starts_with(b"second a\n"));
    assert_eq!(hits(&s, &format!("{prefix}index.html")), before);

    // A reservation whose policy changes is replaced, and its entries put again.
    let file = declare(&s, port, 120);
    let f = path(&file);
    let fourth = s.ctl_ok(&["apply", f]);
    assert!(
        fourth.contains(&format!(
            "~ urlacl {prefix} (Cache-Control: max-age=120; replaced"
        )),
        "{fourth}"
    );
    assert!(
        fourth.contains(&format!("+ cache {prefix}a.txt")),
        "{fourth}"
    );
    assert_eq!(
        get(port, "/", "").header("cache-control"),
        Some("max-age=120")
    );
    assert!(s.ctl_ok(&["apply", f]).contains("no changes"));

    // Errors name the file, the line and the field; the server's refusals too.
    let bad = write_file(
        &s,
        "bad.toml",
        b"[limits]\nidle-timeout = 5\nno-such-limit = 1\n",
    );
    let err = s.ctl_err(&["apply", path(&bad)]);
    assert!(
        err.contains(&format!(
            "{}:3: limits.no-such-limit: no such limit",
            path(&bad)
        )),
        "{err}"
    );
    let bad = write_file(
        &s,
        "bad.toml",
        b"[[content]]\nfile = \"robots.txt\"\nurl = \"http://+:1/r\"\n",
    );
    let err = s.ctl_err(&["apply", path(&bad)]);
    assert!(
        err.contains(&format!("{}:1: content[0]: http://+:1/r: ", path(&bad))),
        "{err}"
    );
    let bad = write_file(
        &s,
        "bad.toml",
        b"[[reservation]]\nprefix = \"http://+:80/\"\nuser = 7\n",
    );
    let err = s.ctl_err(&["apply", path(&bad)]);
    assert!(err.contains(&format!("{}:3: ", path(&bad))), "{err}");
    let err = s.ctl_err(&["apply", "/nonexistent/k.toml"]);
    assert!(err.contains("/nonexistent/k.toml: cannot read it"), "{err}");
}

#[test]
fn apply_prune_removes_what_is_not_declared() {
    if khttp_tests::skip_external("--prune would remove the shared server's other state") {
        return;
    }
    let s = Server::start("prune");
    let port = free_port();
    let prefix = format!("{}://+:{port}/", scheme());
    let file = declare(&s, port, 60);
    let f = path(&file);
    s.ctl_ok(&["apply", f]);
    let other = format!("http://+:{}/other/", free_port());
    s.ctl_ok(&["urlacl", "add", &other]);
    let extra = write_file(&s, "extra.txt", b"extra");
    s.ctl_ok(&["cache", "put", &format!("{prefix}extra.txt"), path(&extra)]);
    s.ctl_ok(&["iplisten", "add", "127.0.0.1"]);

    // Without --prune, what the file does not declare stays.
    assert!(s.ctl_ok(&["apply", f]).contains("no changes"));
    let plan = s.ctl_ok(&["apply", "--prune", "--dry-run", f]);
    assert_eq!(
        plan,
        format!(
            "- iplisten 127.0.0.1\n- cache {prefix}extra.txt\n- urlacl {other} (and its entries)\n{f}: 3 changes planned, none made (--dry-run); 4 entries unchanged\n"
        )
    );
    let done = s.ctl_ok(&["apply", "--prune", f]);
    assert!(done.contains("3 changes applied"), "{done}");
    assert!(!s.ctl_ok(&["cache", "show"]).contains("extra.txt"));
    assert!(!s.ctl_ok(&["urlacl", "show"]).contains(&other));
    assert!(s.ctl_ok(&["iplisten", "show"]).contains("empty"));
    assert_eq!(get(port, "/extra.txt", "").status, 404);
    assert!(s.ctl_ok(&["apply", "--prune", f]).contains("no changes"));
}

#[test]
fn khttpd_config_applies_at_start_and_refuses_a_bad_file() {
    if khttp_tests::skip_external("starts khttpd itself with --config") {
        return;
    }
    let mut s = Server::start("config");
    let port = free_port();
    let file = declare(&s, port, 60);
    s.signal("-TERM");
    assert_eq!(s.wait(), Some(0));
    s.spawn(&["--config", path(&file)]);
    wait_listening(port);
    let out = s.output();
    assert!(
        out.contains(&format!(
            "khttpd: {}: {} changes applied",
            path(&file),
            5 + usize::from(khttp_tests::tls::enabled())
        )),
        "{out}"
    );
    assert_eq!(get(port, "/", "").body, b"<h1>home</h1>");
    // The running server already holds it: khttpctl finds nothing to do.
    assert!(s.ctl_ok(&["apply", path(&file)]).contains("no changes"));

    // A fault stops khttpd before it listens: one line, the file, line and field.
    s.signal("-TERM");
    assert_eq!(s.wait(), Some(0));
    let bad = write_file(
        &s,
        "bad.toml",
        b"listen = [\"127.0.0.1\", \"not an address\"]\n",
    );
    let out = Command::new(bin("khttpd"))
        .arg("--state-dir")
        .arg(s.dir.join("state"))
        .arg("--control")
        .arg(s.dir.join("ctl.sock"))
        .args(["--config", path(&bad)])
        .output()
        .expect("run khttpd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!(
            "khttpd: {}:1: listen[1]: \"not an address\" is not an IP address\n",
            path(&bad)
        )
    );
    assert!(
        !s.dir.join("ctl.sock").exists(),
        "the control socket is left behind"
    );
}
