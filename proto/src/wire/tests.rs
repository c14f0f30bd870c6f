#![allow(clippy::too_many_lines, reason = "tables of wire cases")]

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::{PutEntry, Request, TableWriter, Value, decode_reply, decode_request, encode_request};
use crate::{Command, ProtoError};

fn round_trip(req: &Request<'_>, direct: usize) {
    let mut buf = Vec::new();
    let code = encode_request(req, &mut buf);
    let cmd = Command::from_code(code).unwrap();
    assert_eq!(decode_request(cmd, &buf, direct).as_ref(), Ok(req));
    // Every truncation is refused, never a panic.
    for cut in 0..buf.len() {
        assert!(decode_request(cmd, &buf[..cut], direct).is_err());
    }
}

#[test]
fn a_receive_takes_one_to_64_requests() {
    for bad in [0, super::MAX_RECEIVE_BATCH + 1] {
        let mut buf = Vec::new();
        let ask = Request::QueueReceive {
            queue: 3,
            body_max: 0,
            max_requests: bad,
        };
        encode_request(&ask, &mut buf);
        assert_eq!(
            decode_request(Command::QueueReceive, &buf, 0),
            Err(ProtoError::InvalidValue),
            "{bad} requests"
        );
    }
}

#[test]
fn requests_round_trip() {
    round_trip(&Request::Version, 0);
    for ocsp in [None, Some(&[0x30, 0x03, 0x0A, 0x01, 0x00][..])] {
        round_trip(
            &Request::SslcertAdd {
                binding: "hostnameport=example.com:443",
                chain: "-----BEGIN CERTIFICATE-----",
                key: "-----BEGIN PRIVATE KEY-----",
                ocsp,
            },
            0,
        );
    }
    round_trip(
        &Request::SslcertDelete {
            binding: "ipport=[::]:443",
        },
        0,
    );
    round_trip(&Request::SslcertList, 0);
    round_trip(&Request::SslcertCa, 0);
    round_trip(
        &Request::UrlaclAdd {
            prefix: "http://+:80/",
            acl: Some("D:(A;;GX;;;WD)"),
            cache_control: Some("max-age=60"),
        },
        0,
    );
    round_trip(
        &Request::UrlaclAdd {
            prefix: "http://+:80/",
            acl: None,
            cache_control: None,
        },
        0,
    );
    round_trip(&Request::CacheFlush { prefix: None }, 0);
    round_trip(
        &Request::LimitsSet {
            name: "max-headers",
            value: 7,
        },
        0,
    );
    let put = PutEntry {
        url: "http://+:80/a.html",
        content_type: "text/html",
        status: 200,
        ttl: Some(60),
        last_modified: None,
        headers: vec!["X-A: 1", "Cache-Control: no-cache"],
        identity_len: 10,
        gzip_len: Some(4),
        br_len: None,
        digest: Some([7; crate::DIGEST_LEN]),
    };
    round_trip(&Request::CachePut(put), 14);
    round_trip(
        &Request::QueueAttach {
            name: "app",
            prefixes: vec!["http://+:80/a/", "http://+:80/b/"],
        },
        0,
    );
    round_trip(
        &Request::QueueReceive {
            queue: 3,
            body_max: u64::MAX,
            max_requests: 64,
        },
        0,
    );
    round_trip(&Request::QueueReceiveBody { id: 9, offset: 7 }, 0);
    round_trip(&Request::QueueDetach { queue: 3 }, 0);
    round_trip(&Request::QueueCancel { id: u64::MAX - 1 }, 0);
    round_trip(&Request::QueueList, 0);
    round_trip(
        &Request::QueueRespond(super::Respond {
            id: 9,
            status: 201,
            content_type: "text/plain",
            headers: vec!["X-A: 1"],
            ttl: Some(30),
            body_len: 5,
            stream: None,
            news_only: true,
        }),
        5,
    );
    for length in [None, Some(5), Some(u64::MAX - 1)] {
        round_trip(
            &Request::QueueRespond(super::Respond {
                id: 9,
                status: 200,
                content_type: "",
                headers: vec![],
                ttl: None,
                body_len: 5,
                stream: Some(super::Streamed { length }),
                news_only: false,
            }),
            5,
        );
    }
    for last in [false, true] {
        round_trip(
            &Request::QueueSend {
                id: 3,
                last,
                body_len: 7,
            },
            7,
        );
    }
}

#[test]
fn bytes_values_round_trip() {
    let mut out = Vec::new();
    let mut t = TableWriter::new(&mut out, 2);
    t.row(&[Value::U64(1), Value::Bytes(&[0xFF, 0, b'\n'])]);
    t.finish().unwrap();
    assert_eq!(
        decode_reply(&out).unwrap(),
        vec![vec![Value::U64(1), Value::Bytes(&[0xFF, 0, b'\n'])]]
    );
}

#[test]
fn put_direct_length_must_match() {
    let put = PutEntry {
        url: "u",
        content_type: "",
        status: 0,
        ttl: None,
        last_modified: None,
        headers: vec![],
        identity_len: 10,
        gzip_len: None,
        br_len: None,
        digest: None,
    };
    let mut buf = Vec::new();
    encode_request(&Request::CachePut(put), &mut buf);
    assert_eq!(
        decode_request(Command::CachePut, &buf, 9),
        Err(ProtoError::DirectLength)
    );
    assert!(decode_request(Command::CachePut, &buf, 10).is_ok());
    let mut v = Vec::new();
    encode_request(&Request::Stats, &mut v);
    assert_eq!(
        decode_request(Command::Stats, &v, 1),
        Err(ProtoError::DirectLength)
    );
}

#[test]
fn headers_are_checked() {
    let mut v = Vec::new();
    encode_request(&Request::Stats, &mut v);
    let mut bad = v.clone();
    bad[0] = 9;
    assert_eq!(
        decode_request(Command::Stats, &bad, 0),
        Err(ProtoError::Version)
    );
    let mut bad = v.clone();
    bad[2] = 1;
    assert_eq!(
        decode_request(Command::Stats, &bad, 0),
        Err(ProtoError::ReservedNotZero)
    );
    let mut bad = v.clone();
    bad.push(0);
    assert_eq!(
        decode_request(Command::Stats, &bad, 0),
        Err(ProtoError::SizeMismatch)
    );
}

#[test]
fn tables_round_trip() {
    let mut out = Vec::new();
    let mut t = TableWriter::new(&mut out, 2);
    t.row(&[Value::Str("a"), Value::U64(1)]);
    t.row(&[Value::Str(""), Value::U64(u64::MAX)]);
    t.finish().unwrap();
    let rows = decode_reply(&out).unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Value::Str("a"), Value::U64(1)],
            vec![Value::Str(""), Value::U64(u64::MAX)]
        ]
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), direct in 0usize..100) {
        for c in Command::ALL {
            let _ = decode_request(c, &bytes, direct);
        }
        let _ = decode_reply(&bytes);
    }

    #[test]
    fn strings_round_trip(prefix in ".{0,300}", acl in proptest::option::of("[^\u{0}]{1,50}"), value in any::<u64>()) {
        let req = Request::UrlaclAdd { prefix: &prefix, acl: acl.as_deref(), cache_control: None };
        let mut buf = Vec::new();
        encode_request(&req, &mut buf);
        prop_assert_eq!(decode_request(Command::UrlaclAdd, &buf, 0), Ok(req));
        let req = Request::LimitsSet { name: &prefix, value };
        let mut buf = Vec::new();
        encode_request(&req, &mut buf);
        prop_assert_eq!(decode_request(Command::LimitsSet, &buf, 0), Ok(req));
    }
}
