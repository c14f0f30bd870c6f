//! The control path on arbitrary bytes: `ctl::dispatch` (khttp-proto decoding, then the site
//! change) under every control code. Invariants: no panic; the reply always decodes; a refused
//! request is never reported as a change, and (except `BufferTooSmall`, whose private clone the
//! glue discards) leaves the site unchanged.

#![no_main]

use arbitrary::Arbitrary;
use khttp_engine::ctl::{Call, dispatch};
use khttp_engine::persist::render;
use khttp_engine::{Instant, Site};
use khttp_proto::{Command, Status, decode_reply};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    command: u8,
    raw_code: Option<u32>,
    input: Vec<u8>,
    direct: Vec<u8>,
    cap: u16,
}

fuzz_target!(|x: Input| {
    let mut site = Site::new();
    let _ = site.reserve("http://+:8080/", None);
    let code = x.raw_code.unwrap_or_else(|| {
        let all = Command::ALL;
        all[usize::from(x.command) % all.len()].code()
    });
    let before = render(&site);
    let entries = site.cache().len();
    let mut out = Vec::new();
    let call = Call { code, input: &x.input, direct: &x.direct, output_cap: usize::from(x.cap) };
    let d = dispatch(&mut site, &call, Instant(0), &mut out);
    if d.status == Status::BufferTooSmall {
        assert_eq!(out.len(), 8);
    } else {
        assert!(decode_reply(&out).is_ok(), "undecodable reply for {:?}", d.status);
    }
    if d.status != Status::Ok {
        assert!(!d.changed && !d.persist);
        if d.status != Status::BufferTooSmall {
            assert_eq!(render(&site), before, "a refused request changed the site");
            assert_eq!(site.cache().len(), entries);
        }
    }
});
