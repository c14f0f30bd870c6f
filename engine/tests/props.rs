//! Property tests: input splitting never changes the output, and no input can panic the engine
//! or leave a connection neither answered nor closed.

mod common;

use common::{Harness, parse_responses, site};
use khttp_engine::canonicalize;
use khttp_engine::hooks::{Coding, RangeRequest, negotiate, parse_range};
use proptest::prelude::*;

/// Valid requests of every kind the engine answers without closing.
const REQUESTS: &[&[u8]] = &[
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"HEAD /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=5-10, 20-30\r\n\r\n",
    b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nIf-None-Match: \"x\"\r\n\r\n",
    b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=5000-\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"DELETE /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /a/./b/../../index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"\r\nGET /index.html HTTP/1.1\nHost: localhost\n\n",
];

fn run_split(stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<khttp_engine::Close>) {
    let mut h = Harness::new(site());
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts.into_iter().chain([stream.len()]) {
        h.feed(&stream[at..c.max(at)]);
        h.flush();
        at = c.max(at);
    }
    h.conn.handle_eof(&h.clock, &h.site);
    h.flush();
    let close = h.closed();
    (h.sent, close)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_identical_responses(
        picks in proptest::collection::vec(0..REQUESTS.len(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream: Vec<u8> = picks.iter().flat_map(|&i| REQUESTS[i].iter().copied()).collect();
        let (whole, whole_close) = run_split(&stream, &[]);
        let (split, split_close) = run_split(&stream, &cuts);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole_close, split_close);
        let head_only: Vec<bool> = picks.iter().map(|&i| REQUESTS[i].starts_with(b"HEAD")).collect();
        prop_assert_eq!(parse_responses(&whole, &head_only).len(), picks.len());
    }

    #[test]
    fn byte_at_a_time_is_the_same(picks in proptest::collection::vec(0..REQUESTS.len(), 1..5)) {
        let stream: Vec<u8> = picks.iter().flat_map(|&i| REQUESTS[i].iter().copied()).collect();
        let cuts: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(run_split(&stream, &[]).0, run_split(&stream, &cuts).0);
    }

    #[test]
    fn arbitrary_bytes_end_in_responses_or_a_close(
        prefix in 0..REQUESTS.len(),
        noise in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        // A valid request, then garbage: the garbage must not disturb the first answer.
        let mut stream = REQUESTS[prefix].to_vec();
        stream.extend_from_slice(&noise);
        let (out, close) = run_split(&stream, &cuts);
        prop_assert!(close.is_some(), "after EOF the connection must close");
        let head_only = [REQUESTS[prefix].starts_with(b"HEAD")];
        let responses = parse_responses(&out, &head_only);
        prop_assert!(!responses.is_empty());
    }

    #[test]
    fn arbitrary_header_values_never_panic(name in "[A-Za-z-]{1,20}", value in proptest::collection::vec(0x20u8..0x7f, 0..200)) {
        let mut req = b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n\r\n");
        let (out, _) = run_split(&req, &[]);
        prop_assert_eq!(parse_responses(&out, &[]).len(), 1);
    }

    #[test]
    fn range_arithmetic_stays_in_bounds(value in proptest::collection::vec(any::<u8>(), 0..60), len in any::<u64>()) {
        let mut v = b"bytes=".to_vec();
        v.extend_from_slice(&value);
        if let RangeRequest::Ranges { ranges, count } = parse_range(&v, len) {
            prop_assert!(count >= 1);
            for r in &ranges[..count] {
                prop_assert!(r.first <= r.last && r.last < len);
            }
        }
    }

    #[test]
    fn range_numbers_at_the_u64_edges(a in any::<u64>(), b in any::<u64>(), len in any::<u64>()) {
        for spec in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}"), format!("bytes={a}-{b},{b}-")] {
            if let RangeRequest::Ranges { ranges, count } = parse_range(spec.as_bytes(), len) {
                for r in &ranges[..count] {
                    prop_assert!(r.first <= r.last && r.last < len);
                }
            }
        }
    }

    #[test]
    fn canonical_paths_never_climb(raw in "(/|[a-z.%2eEfF5cC\\\\]{1,4}){0,30}") {
        let raw = format!("/{raw}");
        let mut scratch = (Vec::new(), Vec::new());
        if let Ok(p) = canonicalize(raw.as_bytes(), &mut scratch) {
            prop_assert!(p.starts_with(b"/"));
            for seg in p.split(|&b| b == b'/') {
                prop_assert!(seg != b".." && seg != b".", "{:?} -> {:?}", raw, String::from_utf8_lossy(p));
            }
            prop_assert!(!p.contains(&b'\\'));
            // Idempotent.
            let again = canonicalize(p, &mut (Vec::new(), Vec::new())).map(<[u8]>::to_vec);
            prop_assert_eq!(again, Ok(p.to_vec()));
        }
    }

    /// `Accept-Encoding` lists built from the grammar of RFC 9110 §12.5.3 (codings in any case,
    /// `*`, unknown codings, q-values, whitespace, spread over several fields) are answered as a
    /// direct model of the section says: each coding's weight is its own (the highest if listed
    /// twice), else `*`'s, else 0 (identity: acceptable unless excluded); the highest positive
    /// weight among what the entry holds wins, ties going to the smaller encoding; identity when
    /// nothing is acceptable.
    #[test]
    fn negotiation_follows_the_rfc(
        elements in proptest::collection::vec((0usize..8, 0usize..7, any::<bool>()), 0..7),
        split in 0usize..8,
        available in proptest::sample::subsequence(vec![Coding::Gzip, Coding::Br], 0..=2),
    ) {
        const NAMES: [&str; 8] = ["gzip", "x-gzip", "br", "identity", "*", "compress", "GZip", "BR"];
        const QS: [(&str, u16); 7] =
            [("", 1000), (";q=0", 0), (";q=0.5", 500), (";q=1", 1000), (";q=0.001", 1), (" ; Q=1.000", 1000), (";q=0.999", 999)];
        let texts: Vec<String> = elements
            .iter()
            .map(|&(n, q, pad)| format!("{}{}{}", NAMES[n], QS[q].0, if pad { " " } else { "" }))
            .collect();
        let cut = split.min(texts.len());
        let (a, b) = (texts[..cut].join(", "), texts[cut..].join(" ,"));
        let fields: Vec<&[u8]> = if split % 2 == 0 { vec![a.as_bytes(), b.as_bytes()] } else { vec![format!("{a},{b}").leak().as_bytes()] };
        let got = negotiate(fields.iter().copied(), &available);

        let (mut star, mut own) = (None::<u16>, [None::<u16>; 3]);
        for &(n, q, _) in &elements {
            let w = QS[q].1;
            let slot = match NAMES[n].to_ascii_lowercase().as_str() {
                "*" => &mut star,
                "identity" => &mut own[0],
                "gzip" | "x-gzip" => &mut own[1],
                "br" => &mut own[2],
                _ => continue,
            };
            *slot = Some(slot.map_or(w, |old| old.max(w)));
        }
        let weight = |i: usize, default: u16| own[i].or(star).unwrap_or(default);
        let mut want = (Coding::Identity, weight(0, 1));
        for (c, i) in [(Coding::Gzip, 1), (Coding::Br, 2)] {
            let w = weight(i, 0);
            if available.contains(&c) && w > 0 && w >= want.1 {
                want = (c, w);
            }
        }
        prop_assert_eq!(got, want.0, "{:?} with {:?}", fields, available);
    }

    /// Whatever the bytes, the coding chosen is one the entry holds, or identity.
    #[test]
    fn negotiation_picks_only_what_is_held(value in proptest::collection::vec(any::<u8>(), 0..80), br in any::<bool>()) {
        let available: &[Coding] = if br { &[Coding::Br] } else { &[Coding::Gzip] };
        let c = negotiate([value.as_slice()].into_iter(), available);
        prop_assert!(c == Coding::Identity || available.contains(&c));
    }

    /// Any ACL text is read or refused, never a panic; what is read prints and reads back the
    /// same SIDs, and an identity of exactly those SIDs is granted what the allows give it.
    #[test]
    fn acls_parse_or_refuse(text in "(user:|sddl:D:(P|AI)?)(\\((A|D|X);(CI|OI)?;(GA|GX|GW|GR|0x1|0x2|QQ)+;;;(WD|AU|BA|ZZ|S-1-5-21-[0-9]{1,3}-[0-9]{1,10}|S-1-[0-9x]{1,14}-1)\\)){0,4}[a-z)(;]{0,3}") {
        use khttp_engine::acl::{Acl, Identity, REGISTER};
        if let Ok(Acl::Sddl(d)) = Acl::parse(&text) {
            let mut who = Identity::new();
            for ace in d.aces() {
                let again = format!("sddl:D:(A;;GX;;;{})", ace.sid);
                let Ok(Acl::Sddl(back)) = Acl::parse(&again) else {
                    panic!("{again} does not read back");
                };
                prop_assert_eq!(back.aces()[0].sid, ace.sid);
                let _ = who.add(ace.sid, false);
            }
            let first = d.aces().first();
            if let Some(ace) = first.filter(|a| a.mask & REGISTER != 0) {
                let allow = ace.kind == khttp_engine::acl::AceKind::Allow;
                prop_assert_eq!(d.grants(&who, REGISTER), allow, "{}", text);
            }
        }
    }

    /// Token buffers of any bytes at any address are read or refused, never a panic or a read
    /// outside them.
    #[test]
    fn token_buffers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200), base in any::<u64>(), which in 0..3usize) {
        use khttp_engine::acl::{Identity, TokenInfo};
        let which = [TokenInfo::User, TokenInfo::Groups, TokenInfo::RestrictedSids][which];
        let _ = Identity::new().add_token_info(which, &buf, base);
    }
}
