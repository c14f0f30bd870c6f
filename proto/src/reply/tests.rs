use alloc::vec::Vec;

use super::{
    CertRow, CounterRow, EntryRow, ErrorRow, FlushRow, NewsRow, PemRow, PutRow, Row, VersionRow,
    decode_device_reply, encode_device_reply, read_rows, too_small_reply, write_rows,
};
use crate::{Header, ProtoError, Status};

fn round_trip<'a, R: Row<'a> + Clone + PartialEq + core::fmt::Debug + 'a>(
    buf: &'a mut Vec<u8>,
    rows: &[R],
) {
    write_rows(buf, rows.iter().cloned()).unwrap();
    let back: Vec<R> = read_rows(buf).unwrap();
    assert_eq!(back, rows);
}

#[test]
fn news_rows_round_trip() {
    round_trip(
        &mut Vec::new(),
        &[
            NewsRow {
                id: 7,
                status: Status::InvalidHeader as u32,
                delivered: false,
                message: "a field the server sets itself",
            },
            NewsRow {
                id: u64::MAX,
                status: 0,
                delivered: false,
                message: "",
            },
        ],
    );
}

#[test]
fn certificate_rows_round_trip() {
    round_trip(
        &mut Vec::new(),
        &[
            CertRow {
                binding: "hostnameport=example.com:443",
                sha256: "AB:CD",
                names: "example.com,127.0.0.1",
                not_after: Some(1_927_843_200),
                chain: 2,
                persisted: true,
            },
            CertRow {
                binding: "ipport=0.0.0.0:8443",
                sha256: "",
                names: "",
                not_after: None,
                chain: 1,
                persisted: false,
            },
        ],
    );
    round_trip(&mut Vec::new(), &[PemRow { pem: "-----BEGIN" }]);
}

#[test]
fn rows_round_trip() {
    round_trip(
        &mut Vec::new(),
        &[VersionRow {
            protocol: 1,
            engine: "0.1.0",
        }],
    );
    round_trip(
        &mut Vec::new(),
        &[
            EntryRow {
                url: "http://+:80/a",
                status: 200,
                content_type: "text/html",
                bytes: 5,
                codings: "gzip",
                hits: 3,
                ttl_left: None,
                last_modified: Some(7),
                digest: Some([9; crate::DIGEST_LEN]),
            },
            EntryRow {
                url: "http://+:80/b",
                status: 404,
                content_type: "",
                bytes: 0,
                codings: "",
                hits: 0,
                ttl_left: Some(60),
                last_modified: None,
                digest: None,
            },
        ],
    );
    round_trip(
        &mut Vec::new(),
        &[PutRow {
            replaced: true,
            bytes: 9,
        }],
    );
    round_trip(
        &mut Vec::new(),
        &[super::RequestRow {
            id: 7,
            head: b"GET /a%2Fb HTTP/1.1\r\n\r\n",
            spans: &[0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0],
            body: b"xy",
            body_len: 3,
            path: b"/a/b?q",
            remote: "[::1]:5000",
        }],
    );
    round_trip(
        &mut Vec::new(),
        &[super::QueueRow {
            id: 1,
            name: "app",
            prefixes: "http://+:80/a/",
            processes: "12:33",
            owner: "uid 33",
            in_flight: 1,
            requests: 2,
            answered: 3,
            refused: 4,
            abandoned: 5,
            timed_out: 6,
        }],
    );
}

#[test]
fn a_table_of_another_width_is_refused() {
    let mut buf = Vec::new();
    write_rows(&mut buf, [FlushRow { removed: 1 }]).unwrap();
    assert_eq!(
        read_rows::<CounterRow<'_>>(&buf),
        Err(ProtoError::InvalidValue)
    );
    // Right width, wrong kinds.
    let mut buf = Vec::new();
    write_rows(&mut buf, [ErrorRow { message: "x" }]).unwrap();
    assert_eq!(read_rows::<FlushRow>(&buf), Err(ProtoError::InvalidValue));
    assert_eq!(read_rows::<FlushRow>(&[]), Ok(Vec::new()));
}

#[test]
fn device_framing_and_too_small() {
    let mut dst = [0u8; 16];
    let n = encode_device_reply(Status::NotFound, b"abc", &mut dst).unwrap();
    assert_eq!(n, 7);
    assert_eq!(
        decode_device_reply(&dst[..n]),
        Some((Status::NotFound as u32, &b"abc"[..]))
    );
    assert_eq!(encode_device_reply(Status::Ok, &[0; 13], &mut dst), None);
    assert_eq!(decode_device_reply(&[1, 2]), None);
    let h = Header::peek(&too_small_reply(1234)).unwrap();
    assert_eq!((h.version, h.size), (crate::PROTOCOL_VERSION, 1234));
}

#[test]
fn respond_rows_ride_in_a_success_ntstatus() {
    use super::RespondRow;
    for (delivered, cached) in [(false, false), (true, false), (false, true), (true, true)] {
        let row = RespondRow { delivered, cached };
        let nt = row.to_ntstatus();
        assert_eq!(nt >> 30, 0, "severity success: NT_SUCCESS holds");
        assert_eq!(RespondRow::from_ntstatus(nt), Some(row));
    }
    assert_eq!(RespondRow::from_ntstatus(0), None);
    assert_eq!(RespondRow::from_ntstatus(crate::DIRECT_REFUSAL | 7), None);
    assert_eq!(RespondRow::from_ntstatus(super::DIRECT_ANSWER | 4), None);
}
