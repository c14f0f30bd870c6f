//! The control path on arbitrary bytes, and the application endpoint's attach and detach
//! (issue #21): a sequence of steps on one site.
//!
//! - `Control`: `ctl::dispatch` (khttp-proto decoding, then the site change) under every
//!   control code. Invariants: no panic; the reply always decodes; a refused request is never
//!   reported as a change, and (except `BufferTooSmall`, whose private clone the glue discards)
//!   leaves the site unchanged.
//! - `App`: an application command's bytes decoded as the hosts decode them; an attach is
//!   applied with `ctl::attach` for one of a few callers (an administrator, two Unix users, an
//!   ordinary and an elevated Windows token), a detach with `Site::detach_queues`.
//! - `Attach`: an attach with any name and any prefix list, hostile or not.
//!
//! Invariants of the queue table: a refused attach changes nothing; an ordinary caller never
//! attaches without naming a prefix, never joins a queue another user owns, and every
//! reservation of the queue it joined grants it; no reservation belongs to two queues; no
//! queue lives with neither an application nor a reservation.

#![no_main]

use arbitrary::Arbitrary;
use khttp_engine::acl::{ADMINISTRATORS, Acl, EVERYONE, Identity, REGISTER};
use khttp_engine::ctl::{Call, Caller, attach, dispatch};
use khttp_engine::persist::render;
use khttp_engine::{Holder, Instant, Owner, Site};
use khttp_proto::{Command, Request, Status, decode_reply, decode_request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    Control {
        command: u8,
        raw_code: Option<u32>,
        input: Vec<u8>,
        direct: Vec<u8>,
        cap: u16,
    },
    App {
        command: u8,
        input: Vec<u8>,
        who: u8,
    },
    Attach {
        name: Text,
        prefixes: Vec<Text>,
        who: u8,
    },
}

/// A queue name or prefix: one of the site's own (so that attaches succeed, and collide), or
/// anything at all.
#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(String),
}

const NAMES: [&str; 3] = ["hello", "khttp-proxy", "q"];

impl Text {
    fn get<'a>(&'a self, known: &[&'a str]) -> &'a str {
        match self {
            Self::Known(i) => known[usize::from(*i) % known.len()],
            Self::Raw(s) => s,
        }
    }
}

const PREFIXES: [(&str, Option<&str>); 4] = [
    ("http://+:8080/", None),
    ("http://+:8080/alice/", Some("user:alice")),
    ("http://+:8080/bob/", Some("user:bob")),
    ("http://+:8080/all/", Some("sddl:D:(A;;GX;;;WD)")),
];

/// The Windows user of the two tokens.
const USER_SID: &str = "S-1-5-21-1-2-3-1001";

fn token(elevated: bool) -> Identity {
    let user = match Acl::parse(&format!("sddl:D:(A;;GX;;;{USER_SID})")) {
        Ok(Acl::Sddl(d)) => d.aces()[0].sid,
        _ => unreachable!("a valid SDDL"),
    };
    let mut t = Identity::new();
    let _ = t.add(user, false);
    let _ = t.add(EVERYONE, false);
    let _ = t.add(ADMINISTRATORS, !elevated);
    t
}

/// The callers: (caller, holder, whether an administrator, the owner a queue of theirs has).
fn caller<'a>(who: u8, tokens: &'a [Identity; 2]) -> (Caller<'a>, Holder, bool) {
    match who % 5 {
        0 => (Caller::Administrator, Holder { pid: 1, uid: 0 }, true),
        1 => (Caller::User("alice"), Holder { pid: 2, uid: 1000 }, false),
        2 => (Caller::User("bob"), Holder { pid: 3, uid: 1001 }, false),
        3 => (
            Caller::Token(&tokens[0]),
            Holder { pid: 4, uid: 1001 },
            false,
        ),
        _ => (
            Caller::Token(&tokens[1]),
            Holder { pid: 5, uid: 1001 },
            true,
        ),
    }
}

fn owner_of(c: Caller<'_>, h: Holder) -> Owner {
    match c {
        Caller::Token(id) if id.is_administrator() => Owner::Sid(ADMINISTRATORS),
        Caller::Token(id) => Owner::Sid(*id.user().unwrap()),
        Caller::Administrator | Caller::User(_) => Owner::Uid(h.uid),
    }
}

/// Whether reservation `id` grants an ordinary caller.
fn grants(site: &Site, id: u32, c: Caller<'_>) -> bool {
    let acl = site
        .namespace()
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.acl.as_deref());
    let local = Identity::local_user().unwrap();
    match (acl.map(Acl::parse), c) {
        (Some(Ok(Acl::User(u))), Caller::User(name)) => u == name,
        (Some(Ok(Acl::Sddl(d))), Caller::User(_)) => d.grants(&local, REGISTER),
        (Some(Ok(Acl::Sddl(d))), Caller::Token(t)) => d.grants(t, REGISTER),
        _ => false,
    }
}

fn check_table(site: &Site) {
    let mut seen = Vec::new();
    for q in site.queues().iter() {
        assert!(
            !q.holders.is_empty() || !q.reservations.is_empty(),
            "queue {} lives with neither application nor reservation",
            q.id
        );
        for r in &q.reservations {
            assert!(!seen.contains(r), "reservation {r} in two queues");
            seen.push(*r);
        }
    }
}

fn run_attach(site: &mut Site, name: &str, prefixes: &[&str], who: u8, tokens: &[Identity; 2]) {
    let (c, holder, admin) = caller(who, tokens);
    let before = site.queues().clone();
    let existing_owner = site.queues().by_name(name).map(|q| q.owner);
    let mut next = match site.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    match attach(&mut next, c, holder, name, prefixes) {
        Err(_) => assert_eq!(
            next.queues(),
            &before,
            "a refused attach changed the queues"
        ),
        Ok(id) => {
            let q = next.queues().get(id).expect("the queue attached to");
            assert!(q.holders.contains(&holder));
            if !admin {
                assert!(
                    !prefixes.is_empty(),
                    "an ordinary caller attached to no prefix"
                );
                let mine = owner_of(c, holder);
                assert_eq!(q.owner, mine, "an ordinary caller joined another's queue");
                if let Some(o) = existing_owner {
                    assert_eq!(o, mine);
                }
                for r in &q.reservations {
                    assert!(
                        grants(&next, *r, c),
                        "joined a queue serving {r}, not granted"
                    );
                }
            }
            *site = next;
        }
    }
    check_table(site);
}

fuzz_target!(|steps: Vec<Step>| {
    let mut site = Site::new();
    for (p, acl) in PREFIXES {
        let _ = site.reserve(p, acl);
    }
    let tokens = [token(false), token(true)];
    for step in steps.into_iter().take(16) {
        match step {
            Step::Control {
                command,
                raw_code,
                input,
                direct,
                cap,
            } => {
                let code = raw_code.unwrap_or_else(|| {
                    let all = Command::ALL;
                    all[usize::from(command) % all.len()].code()
                });
                let before = render(&site);
                let entries = site.cache().len();
                let mut out = Vec::new();
                let call = Call {
                    code,
                    input: &input,
                    direct: &direct,
                    output_cap: usize::from(cap),
                };
                let d = dispatch(&mut site, &call, Instant(0), &mut out);
                if d.status == Status::BufferTooSmall {
                    assert_eq!(out.len(), 8);
                } else {
                    assert!(
                        decode_reply(&out).is_ok(),
                        "undecodable reply for {:?}",
                        d.status
                    );
                }
                if d.status != Status::Ok {
                    assert!(!d.changed && !d.persist);
                    if d.status != Status::BufferTooSmall {
                        assert_eq!(render(&site), before, "a refused request changed the site");
                        assert_eq!(site.cache().len(), entries);
                    }
                }
                check_table(&site);
            }
            Step::App {
                command,
                input,
                who,
            } => {
                let apps: Vec<Command> = Command::ALL
                    .iter()
                    .copied()
                    .filter(|c| c.for_applications())
                    .collect();
                let command = apps[usize::from(command) % apps.len()];
                match decode_request(command, &input, 0) {
                    Ok(Request::QueueAttach { name, prefixes }) => {
                        run_attach(&mut site, name, &prefixes, who, &tokens);
                    }
                    Ok(Request::QueueDetach { queue }) => {
                        let (_, holder, _) = caller(who, &tokens);
                        if let Ok(mut next) = site.try_clone()
                            && next.detach_queues(&[queue], holder).is_ok()
                        {
                            site = next;
                        }
                        check_table(&site);
                    }
                    _ => {}
                }
            }
            Step::Attach {
                name,
                prefixes,
                who,
            } => {
                let known: Vec<&str> = PREFIXES.iter().map(|(p, _)| *p).collect();
                let prefixes: Vec<&str> = prefixes.iter().map(|p| p.get(&known)).collect();
                run_attach(&mut site, name.get(&NAMES), &prefixes, who, &tokens);
            }
        }
    }
});
