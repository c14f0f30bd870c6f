//! Prefix parsing and path canonicalisation on arbitrary strings. Invariants: a canonical path
//! starts with '/', has no '.' or '..' segment and no '\', never climbs above the root, and is a
//! fixed point; a parsed prefix prints back to text that parses to the same prefix.

#![no_main]

use khttp_engine::{canonicalize, parse_prefix, parse_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut scratch = (Vec::new(), Vec::new());
    if let Ok(p) = canonicalize(data, &mut scratch) {
        let p = p.to_vec();
        assert!(p.starts_with(b"/"));
        assert!(!p.contains(&b'\\'));
        assert!(
            p.split(|&b| b == b'/').all(|s| s != b"." && s != b".."),
            "{p:?}"
        );
        let again = canonicalize(&p, &mut (Vec::new(), Vec::new())).map(<[u8]>::to_vec);
        assert_eq!(again, Ok(p));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(prefix) = parse_prefix(s) {
            assert!(prefix.path.ends_with('/'));
            assert_eq!(parse_prefix(&prefix.to_text().expect("memory")), Ok(prefix));
        }
        if let Ok(url) = parse_url(s) {
            assert_eq!(parse_url(&url.to_text().expect("memory")), Ok(url));
        }
    }
});
