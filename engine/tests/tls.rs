//! TLS below HTTP/1.1 (issue #24), in the engine: a rustls client, in memory, against `Tls`
//! over a `Connection` that serves the example site. TLS 1.3 and 1.2, keep-alive and
//! pipelining, a body many records long, the close_notify after `Connection: close`, garbage
//! answered by an alert, and no buffer kept by an idle session.

mod common;

use common::tls::{Ends, client, configs, exchange, send};
use common::{BODY, Harness, get, one, parse_responses, put, site};
use khttp_engine::Close;
use khttp_engine::tls::{NoCushion, Tls, TlsError};
use rustls::ClientConnection;

/// A client and the server's session over one connection.
struct Pair {
    client: ClientConnection,
    tls: Tls,
    h: Harness,
    /// Plaintext the client has read.
    got: Vec<u8>,
}

impl Pair {
    fn new(versions: &[&'static rustls::SupportedProtocolVersion]) -> Self {
        let (server, config) = configs(versions);
        let mut site = site();
        put(
            &mut site,
            "http://+:8080/big.bin",
            vec![b'x'; 300_000],
            "application/octet-stream",
        );
        Self {
            client: client(&config),
            tls: Tls::new(server, &NoCushion).unwrap(),
            h: Harness::new(site),
            got: Vec::new(),
        }
    }

    /// Carries bytes both ways until neither side has any to send.
    fn run(&mut self) {
        let ends = Ends {
            client: &mut self.client,
            tls: &mut self.tls,
            conn: &mut self.h.conn,
        };
        exchange(ends, &self.h.clock, &self.h.site, &mut self.got);
    }

    /// Sends `bytes` as the client's plaintext and runs the exchange.
    fn request(&mut self, bytes: &[u8]) {
        send(&mut self.client, bytes);
        self.run();
    }
}

#[test]
fn a_get_over_tls_13_and_12() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut p = Pair::new(&[version]);
        p.run();
        assert!(!p.tls.handshaking() && !p.client.is_handshaking());
        assert_eq!(p.client.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(p.client.protocol_version(), Some(version.version));
        p.request(&get("/index.html", ""));
        let r = one(&p.got);
        assert_eq!((r.status, r.body.as_slice()), (200, BODY));
        assert_eq!(p.tls.poll_close(&p.h.conn), None, "kept alive");
    }
}

#[test]
fn keep_alive_pipelining_and_a_body_many_records_long() {
    let mut p = Pair::new(&[&rustls::version::TLS13]);
    p.request(&get("/index.html", ""));
    p.request(
        &[
            get("/big.bin", ""),
            get("/index.html", ""),
            get("/nope", ""),
        ]
        .concat(),
    );
    let rs = parse_responses(&p.got, &[false; 4]);
    let got: Vec<(u16, usize)> = rs.iter().map(|r| (r.status, r.body.len())).collect();
    assert_eq!(
        got,
        [
            (200, BODY.len()),
            (200, 300_000),
            (200, BODY.len()),
            (404, rs[3].body.len())
        ]
    );
    assert!(rs[1].body.iter().all(|&b| b == b'x'));
    // Idle between requests: the session holds no buffer of its own.
    assert_eq!(p.tls.held(), 0);
}

#[test]
fn connection_close_ends_with_a_close_notify() {
    let mut p = Pair::new(&[&rustls::version::TLS13]);
    p.request(&get("/index.html", "Connection: close\r\n"));
    assert_eq!(one(&p.got).status, 200);
    assert_eq!(p.tls.poll_close(&p.h.conn), Some(Close::Graceful));
    // The client read the close_notify: a clean end, not a truncation.
    let mut rest = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut p.client.reader(), &mut rest).unwrap(),
        0
    );
}

#[test]
fn garbage_gets_an_alert_and_a_close() {
    let mut p = Pair::new(&[&rustls::version::TLS13]);
    let h = &mut p.h;
    p.tls.handle_input(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &mut h.conn,
        &h.clock,
        &h.site,
    );
    assert_eq!(p.tls.failed(), Some(TlsError::Protocol));
    // A fatal alert record (content type 21), then the socket closes.
    let alert = p.tls.transmit().to_vec();
    assert_eq!(alert.first(), Some(&21), "{alert:?}");
    assert_eq!(p.tls.poll_close(&p.h.conn), None, "the alert first");
    p.tls.handle_sent(alert.len());
    assert_eq!(p.tls.poll_close(&p.h.conn), Some(Close::Finished));
    // Nothing reached HTTP.
    assert!(p.h.flush().is_empty());
}

#[test]
fn a_record_too_large_is_refused_without_holding_it() {
    let mut p = Pair::new(&[&rustls::version::TLS13]);
    p.run();
    // A record header announcing 65,535 bytes, then that many: more than any record may be.
    let mut huge = vec![23, 3, 3, 0xff, 0xff];
    huge.resize(5 + 65_535, 0);
    let h = &mut p.h;
    p.tls.handle_input(&huge, &mut h.conn, &h.clock, &h.site);
    assert!(p.tls.failed().is_some());
    let alert = p.tls.transmit().len();
    p.tls.handle_sent(alert);
    assert_eq!(p.tls.poll_close(&p.h.conn), Some(Close::Finished));
    assert_eq!(p.tls.held(), 0, "nothing of it kept");
}

/// Pieces smaller than a record share one: two pipelined answers (heads and bodies) go out in
/// a single application-data record, not four.
#[test]
fn small_answers_share_a_record() {
    let mut p = Pair::new(&[&rustls::version::TLS13]);
    p.run();
    send(
        &mut p.client,
        &[get("/index.html", ""), get("/index.html", "")].concat(),
    );
    let mut wire = Vec::new();
    p.client.write_tls(&mut wire).unwrap();
    p.tls
        .handle_input(&wire, &mut p.h.conn, &p.h.clock, &p.h.site);
    let out = p.tls.transmit();
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = out.get(at..at + 5) {
        records.push(header[0]);
        at += 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
    }
    assert_eq!((records, at), (vec![23], out.len()), "one record");
    p.run();
    let answers = parse_responses(&p.got, &[false, false]);
    assert!(answers.len() == 2 && answers.iter().all(|r| r.body == BODY));
}
