//! HTTPS in khttpd (issue #24), tried as a user tries it: `khttpd --site DIR --https`,
//! `khttpctl sslcert`, and real clients (curl and `openssl s_client`, both on OpenSSL) over real
//! sockets. The driver has no TLS yet (issue #25), so against it these tests are skipped.

#![allow(
    clippy::too_many_lines,
    reason = "test code: one scenario reads best whole"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use khttp_tests::{Server, free_port, skip_external, wait_listening};

const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/site");

fn skip() -> bool {
    skip_external("the driver has no TLS yet (issue #25)")
}

/// khttpd serving the example site over https on a free port, and its local CA's
/// certificate as `khttpctl sslcert ca` prints it.
struct Https {
    s: Server,
    port: u16,
    ca: PathBuf,
}

fn https_site(name: &str, extra: &[&str]) -> Https {
    let mut s = Server::start(name);
    s.signal("-TERM");
    s.wait();
    let port = free_port();
    let prefix = format!("https://+:{port}/");
    let mut args = vec!["--site", SITE, "--https", "--prefix", &prefix];
    args.extend_from_slice(extra);
    s.spawn(&args);
    wait_listening(port);
    let ca = s.dir.join("ca.pem");
    std::fs::write(&ca, s.ctl_ok(&["sslcert", "ca"])).expect("write ca.pem");
    Https { s, port, ca }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (is it installed?)"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// curl over https; returns its output (`-w` and `-v` lines) and exit code.
fn curl(args: &[&str]) -> (i32, String) {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    let o = run("curl", &all);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// A self-signed certificate for `name` with an `rsa`, `p256` or `p384` key, made by openssl.
fn openssl_cert(dir: &Path, name: &str, kind: &str) -> (String, String) {
    let cert = dir.join(format!("{name}-{kind}.pem"));
    let key = dir.join(format!("{name}-{kind}.key"));
    let key_args: &[&str] = match kind {
        "rsa" => &["-newkey", "rsa:2048"],
        "p256" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    };
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
    args.extend_from_slice(key_args);
    let (subj, san) = (format!("/CN={name}"), format!("subjectAltName=DNS:{name}"));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    args.extend_from_slice(&["-subj", &subj, "-addext", &san, "-keyout", &k, "-out", &c]);
    let o = run("openssl", &args);
    assert!(o.status.success(), "openssl req: {}", text(&o));
    (c, k)
}

/// `openssl s_client` to 127.0.0.1:`port` with `args`, its input held open `hold` so that
/// what the server sends after the handshake (tickets) is read.
fn s_client(port: u16, args: &[&str], hold: Duration) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (is openssl installed?)");
    std::thread::sleep(hold);
    drop(child.stdin.take());
    let o = child.wait_with_output().expect("s_client");
    text(&o)
}

/// The example site over https, as the README shows it: curl trusts the local CA, TLS 1.3 and
/// 1.2 both work, ALPN says http/1.1, and the body is the file's.
#[test]
fn the_site_is_served_over_https_from_the_local_ca() {
    if skip() {
        return;
    }
    let h = https_site("https-site", &[]);
    let url = format!("https://localhost:{}/hello.txt", h.port);
    let ca = h.ca.display().to_string();
    let body = h.s.dir.join("body");
    let saved = body.display().to_string();
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let mut args = vec!["-v", "--cacert", &ca, "-o", &saved, &url];
        args.extend_from_slice(version);
        let (code, out) = curl(&args);
        assert_eq!(code, 0, "{out}");
        let want = if version[0] == "--tlsv1.3" {
            "SSL connection using TLSv1.3"
        } else {
            "SSL connection using TLSv1.2"
        };
        assert!(out.contains(want), "{out}");
        assert!(out.contains("ALPN: server accepted http/1.1"), "{out}");
        assert!(out.contains("< HTTP/1.1 200 OK"), "{out}");
        assert_eq!(
            std::fs::read(&body).unwrap(),
            std::fs::read(format!("{SITE}/hello.txt")).unwrap()
        );
    }
    // Without the CA, curl refuses the certificate: it is not self-signed for every client.
    let (code, _) = curl(&[&url, "-o", "/dev/null"]);
    assert_eq!(code, 60, "curl: peer certificate cannot be authenticated");
    let out = h.s.output();
    assert!(
        out.contains(&format!("listening on https://0.0.0.0:{}/", h.port)),
        "{out}"
    );
    assert!(out.contains("khttp's local CA"), "{out}");
    // The CA's key is private to khttpd's user.
    let key = h.s.dir.join("state/ca/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A port serves one scheme.
    let err =
        h.s.ctl_err(&["urlacl", "add", &format!("http://+:{}/plain/", h.port)]);
    assert!(err.contains("http or https, not both"), "{err}");
}

/// `sslcert add` checks each pair, SNI picks the binding, a name bound nowhere gets an alert
/// (logged), bindings persist (0600) across a restart, and `sslcert delete` removes one.
#[test]
fn certificates_are_checked_chosen_by_name_and_kept() {
    if skip() {
        return;
    }
    let mut s = Server::start("https-sni");
    let port = free_port();
    s.ctl_ok(&["urlacl", "add", &format!("https://+:{port}/")]);
    let file = khttp_tests::write_file(&s, "x.txt", b"sni\n");
    let url = format!("https://+:{port}/x.txt");
    s.ctl_ok(&["cache", "put", &url, file.to_str().unwrap()]);
    wait_listening(port);
    let dir = s.dir.clone();
    // khttp-crypto (the driver's provider) signs with ECDSA only: it refuses an RSA key in
    // one line, and a.test gets a P-256 key instead.
    let driver_provider =
        std::env::var("KHTTP_TEST_TLS_PROVIDER").is_ok_and(|p| p == "khttp-crypto");
    if driver_provider {
        let (r_cert, r_key) = openssl_cert(&dir, "r.test", "rsa");
        let r = format!("hostnameport=r.test:{port}");
        let err = s.ctl_err(&["sslcert", "add", &r, "--cert", &r_cert, "--key", &r_key]);
        assert!(err.contains("khttp-crypto, the driver's: ECDSA"), "{err}");
    }
    let a_kind = if driver_provider { "p256" } else { "rsa" };
    let (a_cert, a_key) = openssl_cert(&dir, "a.test", a_kind);
    let (b_cert, b_key) = openssl_cert(&dir, "b.test", "p384");
    let fetch = |name: &str, cert: &str| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/x.txt");
        curl(&["--resolve", &resolve, "--cacert", cert, &url])
    };
    // Nothing bound: the handshake is refused with an alert, and khttpd says why.
    let (code, out) = fetch("a.test", &a_cert);
    assert_eq!(code, 35, "an alert ends the handshake: {out}");
    let a = format!("hostnameport=a.test:{port}");
    let b = format!("hostnameport=b.test:{port}");
    let err = s.ctl_err(&["sslcert", "add", &b, "--cert", &b_cert, "--key", &a_key]);
    assert!(err.contains("does not match"), "{err}");
    let err = s.ctl_err(&["sslcert", "add", &b, "--cert", &b_key, "--key", &b_key]);
    assert!(err.contains("no PEM certificate"), "{err}");
    let err = s.ctl_err(&[
        "sslcert",
        "add",
        "ipport=1.2.3:9",
        "--cert",
        &b_cert,
        "--key",
        &b_key,
    ]);
    assert!(err.contains("ipport"), "{err}");
    s.ctl_ok(&["sslcert", "add", &a, "--cert", &a_cert, "--key", &a_key]);
    s.ctl_ok(&["sslcert", "add", &b, "--cert", &b_cert, "--key", &b_key]);
    for (name, cert) in [("a.test", &a_cert), ("b.test", &b_cert)] {
        let (code, out) = fetch(name, cert);
        assert_eq!((code, out.as_str()), (0, "sni\n"), "{name}");
    }
    // A name bound nowhere, with no address binding to fall back on.
    let (code, _) = fetch("c.test", &a_cert);
    assert_eq!(code, 35);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.output().contains("TLS from 127.0.0.1:") {
        assert!(Instant::now() < deadline, "no log line: {}", s.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = s.ctl_ok(&["sslcert", "show", "--json"]);
    assert!(
        shown.contains("\"b.test\"") && shown.contains("\"persisted\": true"),
        "{shown}"
    );
    // Kept, private, and loaded again by the next khttpd.
    let saved = dir.join(format!("state/sslcert/hostnameport=a.test,{port}.pem"));
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = dir.join("state/sslcert");
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o700
    );
    s.signal("-TERM");
    s.wait();
    s.spawn(&[]);
    wait_listening(port);
    s.ctl_ok(&["cache", "put", &url, file.to_str().unwrap()]);
    assert_eq!(fetch("a.test", &a_cert).0, 0, "kept across a restart");
    s.ctl_ok(&["sslcert", "delete", &a]);
    assert!(!saved.exists());
    assert_eq!(fetch("a.test", &a_cert).0, 35, "deleted");
    let err = s.ctl_err(&["sslcert", "delete", &a]);
    assert!(err.contains("no certificate is bound"), "{err}");
}

/// A session resumes from its ticket, in TLS 1.3 (a PSK) and TLS 1.2.
#[test]
fn sessions_resume_from_tickets() {
    if skip() {
        return;
    }
    let h = https_site("https-resume", &[]);
    let ca = h.ca.display().to_string();
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = h.s.dir.join(format!("sess{version}"));
        let path = sess.display().to_string();
        let hold = Duration::from_millis(500);
        let first = s_client(h.port, &[version, "-CAfile", &ca, "-sess_out", &path], hold);
        assert!(first.contains("New, TLSv1."), "{first}");
        assert!(first.contains("Verify return code: 0 (ok)"), "{first}");
        let again = s_client(h.port, &[version, "-CAfile", &ca, "-sess_in", &path], hold);
        assert!(again.contains("Reused, TLSv1."), "{version}: {again}");
    }
}

/// Garbage, old versions and a cipher outside the policy get an alert; the server goes on.
#[test]
fn bad_handshakes_get_an_alert_and_the_server_goes_on() {
    if skip() {
        return;
    }
    let h = https_site("https-refuse", &[]);
    // Plain HTTP on the TLS port: an alert record (type 21), then the close.
    let mut c = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert_eq!(got.first(), Some(&21), "an alert record: {got:?}");
    let low = ["-cipher", "DEFAULT@SECLEVEL=0"];
    for (args, what) in [
        (&["-tls1"][..], "TLS 1.0"),
        (&["-tls1_1"][..], "TLS 1.1"),
        (
            &["-tls1_2", "-cipher", "AES128-SHA"][..],
            "RSA key exchange",
        ),
    ] {
        let mut all = args.to_vec();
        if what != "RSA key exchange" {
            all.extend_from_slice(&low);
        }
        let out = s_client(h.port, &all, Duration::from_millis(200));
        // What the client read is one alert record: a 5-byte header and 2 bytes.
        assert!(
            out.contains("SSL handshake has read 7 bytes") && out.contains("Cipher is (NONE)"),
            "{what} refused with an alert: {out}"
        );
    }
    let ca = h.ca.display().to_string();
    let url = format!("https://localhost:{}/hello.txt", h.port);
    assert_eq!(curl(&["--cacert", &ca, &url, "-o", "/dev/null"]).0, 0);
}

/// Large bodies to a slow reader, and pipelined requests, arrive byte-exact over TLS.
#[test]
fn large_bodies_and_pipelining_over_tls_are_byte_exact() {
    if skip() {
        return;
    }
    let h = https_site("https-large", &[]);
    let body: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = khttp_tests::write_file(&h.s, "big.bin", &body);
    let url = format!("https://+:{}/big.bin", h.port);
    h.s.ctl_ok(&["cache", "put", &url, file.to_str().unwrap()]);
    let ca = h.ca.display().to_string();
    let got = h.s.dir.join("got.bin");
    let saved = got.display().to_string();
    let url = format!("https://localhost:{}/big.bin", h.port);
    for rate in [None, Some("3M")] {
        let mut args = vec!["--cacert", &ca, "-o", &saved, &url];
        if let Some(r) = rate {
            args.extend_from_slice(&["--limit-rate", r]);
        }
        let (code, out) = curl(&args);
        assert_eq!(code, 0, "{out}");
        assert!(
            std::fs::read(&got).unwrap() == body,
            "byte-exact at {rate:?}"
        );
    }
    // Three requests in one write; the last closes.
    let connect = format!("127.0.0.1:{}", h.port);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-CAfile", &ca, "-connect", &connect])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let req = "GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n\
               GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n\
               GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap().stdout;
    let hello = std::fs::read(format!("{SITE}/hello.txt")).unwrap();
    let heads = out
        .windows(17)
        .filter(|w| w == b"HTTP/1.1 200 OK\r\n")
        .count();
    assert_eq!(
        heads,
        3,
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(600)])
    );
    assert!(out.ends_with(&hello), "the last body ends the stream");
    assert!(
        out.windows(body.len()).any(|w| w == body),
        "the large body whole"
    );
}

/// A certificate replaced while a download is in flight: the download finishes on the old
/// one, a new connection gets the new one, both bodies whole.
#[test]
fn a_certificate_replaced_mid_download_drops_nothing() {
    if skip() {
        return;
    }
    let h = https_site("https-renew", &[]);
    let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = khttp_tests::write_file(&h.s, "big.bin", &body);
    h.s.ctl_ok(&[
        "cache",
        "put",
        &format!("https://+:{}/big.bin", h.port),
        file.to_str().unwrap(),
    ]);
    let ca = h.ca.display().to_string();
    let url = format!("https://localhost:{}/big.bin", h.port);
    let first = h.s.dir.join("first.bin");
    let mut slow = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--limit-rate",
            "2M",
            "--cacert",
            &ca,
            "-o",
        ])
        .arg(&first)
        .arg(&url)
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    let (cert, key) = openssl_cert(&h.s.dir, "localhost", "p256");
    let binding = format!("ipport=0.0.0.0:{}", h.port);
    h.s.ctl_ok(&["sslcert", "add", &binding, "--cert", &cert, "--key", &key]);
    let second = h.s.dir.join("second.bin");
    let saved = second.display().to_string();
    let (code, out) = curl(&["--cacert", &cert, "-o", &saved, &url]);
    assert_eq!(code, 0, "the new certificate: {out}");
    assert!(
        slow.wait().unwrap().success(),
        "the download on the old one"
    );
    assert!(std::fs::read(&first).unwrap() == body);
    assert!(std::fs::read(&second).unwrap() == body);
    let (code, _) = curl(&["--cacert", &ca, "-o", "/dev/null", &url]);
    assert_eq!(code, 60, "the old certificate is no longer offered");
}

/// A crowd that opens connections and stalls in the handshake is closed at `header-timeout`,
/// while clients beside it are served.
#[test]
fn a_stalled_handshake_crowd_is_timed_out_while_clients_are_served() {
    if skip() {
        return;
    }
    let h = https_site("https-crowd", &[]);
    h.s.ctl_ok(&["limits", "set", "header-timeout", "2"]);
    let mut crowd: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
            // A ClientHello's record header and a few bytes of it, then nothing.
            c.write_all(&[22, 3, 1, 2, 0, 1, 0, 1]).unwrap();
            c
        })
        .collect();
    let ca = h.ca.display().to_string();
    let url = format!("https://localhost:{}/hello.txt", h.port);
    for _ in 0..10 {
        let (code, out) = curl(&["--cacert", &ca, &url]);
        assert_eq!(code, 0, "{out}");
    }
    let start = Instant::now();
    for c in &mut crowd {
        c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut buf = [0u8; 64];
        let closed = match c.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "a stalled handshake is closed");
    }
    assert!(start.elapsed() < Duration::from_secs(8));
}

/// `khttpctl apply` declares certificates: bound before the https reservation opens, compared
/// by fingerprint (a second run changes nothing), replaced when the file names another, and
/// removed by `--prune` when it names none.
#[test]
fn apply_declares_certificates() {
    if skip() {
        return;
    }
    let s = Server::start("https-apply");
    let port = free_port();
    let dir = s.dir.clone();
    let (c1, k1) = openssl_cert(&dir, "localhost", "p256");
    let (c2, k2) = openssl_cert(&dir, "localhost", "p384");
    let file = khttp_tests::write_file(&s, "x.txt", b"declared\n");
    let declare = |cert: Option<(&str, &str)>| {
        let sslcert = cert.map_or_else(String::new, |(c, k)| {
            format!("[[sslcert]]\nbinding = \"ipport=0.0.0.0:{port}\"\ncert = \"{c}\"\nkey = \"{k}\"\n\n")
        });
        let text = format!(
            "{sslcert}[[reservation]]\nprefix = \"https://+:{port}/\"\n\n\
             [[content]]\nfile = \"{}\"\nurl = \"https://+:{port}/x.txt\"\n",
            file.display()
        );
        khttp_tests::write_file(&s, "k.toml", text.as_bytes())
    };
    let toml = declare(Some((&c1, &k1)));
    let toml = toml.to_str().unwrap();
    let out = s.ctl_ok(&["apply", toml]);
    assert!(
        out.contains(&format!("+ sslcert ipport=0.0.0.0:{port} (SHA-256 ")),
        "{out}"
    );
    wait_listening(port);
    let url = format!("https://localhost:{port}/x.txt");
    assert_eq!(curl(&["--cacert", &c1, &url]), (0, "declared\n".to_owned()));
    let out = s.ctl_ok(&["apply", toml]);
    assert!(out.contains("no changes"), "{out}");
    declare(Some((&c2, &k2)));
    let out = s.ctl_ok(&["apply", toml]);
    assert!(
        out.contains(&format!("~ sslcert ipport=0.0.0.0:{port}")),
        "{out}"
    );
    assert_eq!(curl(&["--cacert", &c2, &url]).0, 0, "the new certificate");
    declare(None);
    let out = s.ctl_ok(&["apply", "--prune", toml]);
    assert!(
        out.contains(&format!("- sslcert ipport=0.0.0.0:{port}")),
        "{out}"
    );
    assert!(
        s.ctl_ok(&["sslcert", "show"])
            .contains("No SSL certificate bindings.")
    );
}

/// OCSP stapling from a file: `sslcert add --ocsp` checks the response against the
/// certificate (a revoked one, or one for another certificate, is refused), and a client that
/// asks (`s_client -status`) gets it stapled, also after a restart.
#[test]
fn ocsp_responses_are_checked_and_stapled() {
    if skip() {
        return;
    }
    let mut s = Server::start("https-ocsp");
    let dir = s.dir.join("ocsp");
    std::fs::create_dir_all(&dir).unwrap();
    let d = |name: &str| dir.join(name).display().to_string();
    let ossl = |args: &[&str]| {
        let o = run("openssl", args);
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-days",
        "30",
        "-subj",
        "/CN=ocsp-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &d("leaf.key"),
        "-out",
        &d("leaf.csr"),
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        &d("leaf.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-set_serial",
        "4660",
        "-out",
        &d("leaf.pem"),
        "-days",
        "10",
        "-extfile",
        &d("ext"),
    ]);
    // Responses from the CA: "good", and "revoked", for serial 0x1234.
    for (index, line) in [
        (
            "good.txt",
            "V\t301231235959Z\t\t1234\tunknown\t/CN=localhost\n",
        ),
        (
            "revoked.txt",
            "R\t301231235959Z\t261201000000Z\t1234\tunknown\t/CN=localhost\n",
        ),
    ] {
        std::fs::write(dir.join(index), line).unwrap();
        let out = d(&index.replace(".txt", ".der"));
        ossl(&[
            "ocsp",
            "-index",
            &d(index),
            "-rsigner",
            &d("ca.pem"),
            "-rkey",
            &d("ca.key"),
            "-CA",
            &d("ca.pem"),
            "-issuer",
            &d("ca.pem"),
            "-cert",
            &d("leaf.pem"),
            "-respout",
            &out,
            "-ndays",
            "1",
        ]);
    }
    let port = free_port();
    s.ctl_ok(&["urlacl", "add", &format!("https://+:{port}/")]);
    wait_listening(port);
    let binding = format!("ipport=0.0.0.0:{port}");
    let add = |ocsp: &str| {
        let (cert, key) = (d("leaf.pem"), d("leaf.key"));
        s.ctl(&[
            "sslcert", "add", &binding, "--cert", &cert, "--key", &key, "--ocsp", ocsp,
        ])
    };
    let refused = add(&d("revoked.der"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));
    let other = add(&d("leaf.pem"));
    assert!(String::from_utf8_lossy(&other.stderr).contains("does not parse"));
    assert!(add(&d("good.der")).status.success());
    let ca = d("ca.pem");
    let status = || {
        s_client(
            port,
            &["-status", "-CAfile", &ca],
            Duration::from_millis(300),
        )
    };
    let out = status();
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
    s.signal("-TERM");
    s.wait();
    s.spawn(&[]);
    wait_listening(port);
    let out = status();
    assert!(
        out.contains("Cert Status: good"),
        "kept across a restart: {out}"
    );
    // Added again without --ocsp: no staple.
    let (cert, key) = (d("leaf.pem"), d("leaf.key"));
    s.ctl_ok(&["sslcert", "add", &binding, "--cert", &cert, "--key", &key]);
    let out = status();
    assert!(out.contains("OCSP response: no response sent"), "{out}");
}
