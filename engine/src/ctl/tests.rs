use alloc::vec::Vec;

use khttp_proto::{PutEntry, Request, Status, Value, decode_reply, encode_request};

use super::{Call, dispatch};
use crate::site::Site;
use crate::time::Instant;

fn call(site: &mut Site, req: &Request<'_>, direct: &[u8]) -> (Status, Vec<Vec<String>>) {
    let mut input = Vec::new();
    let code = encode_request(req, &mut input);
    let mut out = Vec::new();
    let call = Call {
        code,
        input: &input,
        direct,
        output_cap: 1 << 20,
    };
    let d = dispatch(site, &call, Instant(0), &mut out);
    let rows = decode_reply(&out)
        .unwrap()
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| match v {
                    Value::U64(n) => alloc::format!("{n}"),
                    Value::Str(s) => s.into(),
                    Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                })
                .collect()
        })
        .collect();
    (d.status, rows)
}

use alloc::string::String;

/// `https://` needs a host that serves TLS (khttpd, not the driver yet); the reservation then
/// prints with its scheme, and its port speaks TLS.
#[test]
fn https_reservations_need_a_host_with_tls() {
    let mut s = Site::new();
    let add = Request::UrlaclAdd {
        prefix: "https://+:443/",
        acl: None,
        cache_control: None,
    };
    let (st, rows) = call(&mut s, &add, &[]);
    assert_eq!(st, Status::InvalidPrefix);
    assert!(rows[0][0].contains("no TLS"), "{}", rows[0][0]);
    s.enable_tls();
    let (st, _) = call(&mut s, &add, &[]);
    assert_eq!(st, Status::Ok);
    assert!(s.serves_tls(443) && !s.serves_tls(8080));
    let (_, rows) = call(&mut s, &Request::UrlaclList, &[]);
    assert!(rows.iter().any(|r| r[0] == "https://+:443/"), "{rows:?}");
}

#[test]
fn end_to_end_through_the_wire_format() {
    let mut s = Site::new();
    let (st, rows) = call(
        &mut s,
        &Request::UrlaclAdd {
            prefix: "http://+:8080/",
            acl: None,
            cache_control: None,
        },
        &[],
    );
    assert_eq!((st, rows.len()), (Status::Ok, 0));
    let (st, rows) = call(
        &mut s,
        &Request::UrlaclAdd {
            prefix: "http://+:8080/",
            acl: None,
            cache_control: None,
        },
        &[],
    );
    assert_eq!(st, Status::AlreadyExists);
    assert_eq!(rows[0][0], "the URL prefix is already reserved");
    let (st, rows) = call(
        &mut s,
        &Request::UrlaclAdd {
            prefix: "https://+:443/",
            acl: None,
            cache_control: None,
        },
        &[],
    );
    assert_eq!(st, Status::InvalidPrefix);
    assert!(rows[0][0].contains("no TLS"), "{}", rows[0][0]);
    let put = PutEntry {
        url: "http://+:8080/a.txt",
        content_type: "text/plain",
        status: 0,
        ttl: None,
        last_modified: Some(0),
        headers: alloc::vec!["X-A: b"],
        identity_len: 5,
        gzip_len: Some(2),
        br_len: None,
        digest: None,
    };
    let (st, rows) = call(&mut s, &Request::CachePut(put.clone()), b"helloGZ");
    assert_eq!(
        (st, rows[0][0].as_str(), rows[0][1].as_str()),
        (Status::Ok, "0", "7")
    );
    let (st, rows) = call(&mut s, &Request::CacheList { prefix: None }, &[]);
    assert_eq!(st, Status::Ok);
    assert_eq!(
        rows[0][..5],
        ["http://+:8080/a.txt", "200", "text/plain", "5", "gzip"]
    );
    let (st, _) = call(&mut s, &Request::CachePut(put), b"hello");
    assert_eq!(st, Status::Malformed, "direct length mismatch");
    let (st, rows) = call(
        &mut s,
        &Request::LimitsSet {
            name: "max-headers",
            value: 0,
        },
        &[],
    );
    assert_eq!(
        (st, rows[0][0].as_str()),
        (Status::InvalidLimitValue, "limit value out of range")
    );
    let (st, rows) = call(&mut s, &Request::Stats, &[]);
    assert_eq!(st, Status::Ok);
    assert!(rows.iter().any(|r| r[0] == "cache-entries" && r[1] == "1"));
}

#[test]
fn sddl_grants_tokens_and_unix_users() {
    use super::{Caller, attach};
    use crate::acl::{ADMINISTRATORS, AUTHENTICATED_USERS, EVERYONE, Identity, Sid};
    use crate::error::CtlError;
    use crate::queues::Holder;
    use alloc::format;
    const H: Holder = Holder { pid: 7, uid: 1000 };
    let mut s = Site::new();
    let me = "S-1-5-21-0-0-0-1000";
    s.reserve("http://+:80/me/", Some(&format!("sddl:D:(A;;GX;;;{me})")))
        .unwrap();
    s.reserve("http://+:80/all/", Some("sddl:D:(A;;GX;;;WD)"))
        .unwrap();
    s.reserve("http://+:80/admins/", Some("sddl:D:(A;;GX;;;BA)"))
        .unwrap();
    s.reserve("http://+:80/named/", Some("user:alice")).unwrap();
    assert_eq!(
        s.reserve("http://+:80/bad/", Some("sddl:D:(A;;GQ;;;WD)"))
            .err(),
        Some(CtlError::InvalidAcl(crate::acl::AclError::Right))
    );
    // A token: its user, Everyone, Authenticated Users, and BA for deny only (unelevated).
    let bytes = |t: &str| match crate::acl::Acl::parse(&format!("sddl:D:(A;;GX;;;{t})")) {
        Ok(crate::acl::Acl::Sddl(d)) => d.aces()[0].sid,
        other => panic!("{other:?}"),
    };
    let user: Sid = bytes(me);
    let mut token = Identity::new();
    token.add(user, false).unwrap();
    token.add(EVERYONE, false).unwrap();
    token.add(AUTHENTICATED_USERS, false).unwrap();
    token.add(ADMINISTRATORS, true).unwrap();
    let t = Caller::Token(&token);
    for (prefix, ok) in [
        ("me", true),
        ("all", true),
        ("admins", false),
        ("named", false),
    ] {
        let r = attach(&mut s, t, H, prefix, &[&format!("http://+:80/{prefix}/")]);
        assert_eq!(r.is_ok(), ok, "{prefix}: {r:?}");
        if !ok {
            assert_eq!(r, Err(CtlError::NotGranted));
        }
    }
    // Elevated, the same token attaches anywhere.
    let mut admin = Identity::new();
    admin.add(user, false).unwrap();
    admin.add(ADMINISTRATORS, false).unwrap();
    assert!(
        attach(
            &mut s,
            Caller::Token(&admin),
            H,
            "x",
            &["http://+:80/named/"]
        )
        .is_ok()
    );
    // A Unix user: by name, or by an SDDL that grants every local user.
    // (Each in a queue of its own: the token's queues are its user's.)
    s.reserve("http://+:80/all2/", Some("sddl:D:(A;;GX;;;WD)"))
        .unwrap();
    s.reserve("http://+:80/named2/", Some("user:alice"))
        .unwrap();
    let bob = Caller::User("bob");
    assert!(attach(&mut s, bob, H, "bob", &["http://+:80/all2/"]).is_ok());
    for prefix in ["me", "admins", "named"] {
        let r = attach(&mut s, bob, H, "b", &[&format!("http://+:80/{prefix}/")]);
        assert_eq!(r, Err(CtlError::NotGranted), "{prefix}");
    }
    let alice = Caller::User("alice");
    let r = attach(&mut s, alice, H, "alice", &["http://+:80/named2/"]);
    assert!(r.is_ok(), "{r:?}");
}

/// Issue #21, finding 1: a queue is its creator's. Another user granted a prefix of its own
/// cannot join it by name, nor attach without naming a prefix; its owner rejoins only
/// while every reservation it serves grants them; an administrator joins any.
#[test]
fn a_queue_belongs_to_its_creator() {
    use super::{Caller, attach};
    use crate::error::CtlError;
    use crate::queues::{Holder, Owner};
    const WWW: Holder = Holder { pid: 10, uid: 33 };
    const DAEMON: Holder = Holder { pid: 11, uid: 1 };
    const ROOT: Holder = Holder { pid: 12, uid: 0 };
    let mut s = Site::new();
    s.reserve("http://+:80/www/", Some("user:www-data"))
        .unwrap();
    s.reserve("http://+:80/daemon/", Some("user:daemon"))
        .unwrap();
    s.reserve("http://+:80/all/", Some("sddl:D:(A;;GX;;;WD)"))
        .unwrap();
    let (www, daemon) = (Caller::User("www-data"), Caller::User("daemon"));
    let q = attach(&mut s, www, WWW, "hello", &["http://+:80/www/"]).unwrap();
    assert_eq!(s.queues().get(q).unwrap().owner, Owner::Uid(33));
    for prefixes in [&["http://+:80/daemon/"][..], &["http://+:80/all/"], &[]] {
        let r = attach(&mut s, daemon, DAEMON, "hello", prefixes);
        let want = if prefixes.is_empty() {
            CtlError::PrefixRequired
        } else {
            CtlError::QueueOwned
        };
        assert_eq!(r, Err(want), "{prefixes:?}");
    }
    assert_eq!(
        attach(&mut s, daemon, DAEMON, "mine", &[]),
        Err(CtlError::PrefixRequired),
        "no queue without a prefix for a user"
    );
    assert_eq!(s.queues().get(q).unwrap().attached(), 1, "nothing joined");
    // Its owner joins again (another process of the same user).
    let www2 = Holder { pid: 13, uid: 33 };
    assert_eq!(
        attach(&mut s, www, www2, "hello", &["http://+:80/www/"]),
        Ok(q)
    );
    // An administrator joins any queue, and may add a prefix the owner is not granted;
    // then the owner no longer joins it.
    let admin = attach(
        &mut s,
        Caller::Administrator,
        ROOT,
        "hello",
        &["http://+:80/daemon/"],
    );
    assert_eq!(admin, Ok(q));
    assert_eq!(
        attach(&mut s, www, WWW, "hello", &["http://+:80/www/"]),
        Err(CtlError::NotGranted),
        "the queue serves a reservation that does not grant www-data"
    );
    // An administrator's queue is theirs: a user with a grant of its own cannot join it.
    attach(&mut s, Caller::Administrator, ROOT, "khttp-proxy", &[]).unwrap();
    assert_eq!(
        attach(&mut s, daemon, DAEMON, "khttp-proxy", &["http://+:80/all/"]),
        Err(CtlError::QueueOwned)
    );
}

/// Tokens: an elevated administrator's queue belongs to the Administrators, so the same
/// user's unelevated process does not join it; its own queue it does.
#[test]
fn an_elevated_administrators_queue_is_the_administrators() {
    use super::{Caller, attach};
    use crate::acl::{ADMINISTRATORS, EVERYONE, Identity};
    use crate::error::CtlError;
    use crate::queues::{Holder, Owner};
    const DAEMON: Holder = Holder { pid: 11, uid: 1 };
    const ROOT: Holder = Holder { pid: 12, uid: 0 };
    let mut s = Site::new();
    let user = match crate::acl::Acl::parse("sddl:D:(A;;GX;;;S-1-5-21-1-2-3-1001)") {
        Ok(crate::acl::Acl::Sddl(d)) => d.aces()[0].sid,
        other => panic!("{other:?}"),
    };
    let token = |elevated: bool| {
        let mut t = Identity::new();
        t.add(user, false).unwrap();
        t.add(EVERYONE, false).unwrap();
        t.add(ADMINISTRATORS, !elevated).unwrap();
        t
    };
    let (admin, limited) = (token(true), token(false));
    for p in ["http://+:80/win/", "http://+:80/win2/", "http://+:80/win3/"] {
        s.reserve(p, Some("sddl:D:(A;;GX;;;WD)")).unwrap();
    }
    let q = attach(
        &mut s,
        Caller::Token(&admin),
        ROOT,
        "win",
        &["http://+:80/win/"],
    );
    assert_eq!(
        s.queues().get(q.unwrap()).unwrap().owner,
        Owner::Sid(ADMINISTRATORS)
    );
    assert_eq!(
        attach(
            &mut s,
            Caller::Token(&limited),
            DAEMON,
            "win",
            &["http://+:80/win2/"]
        ),
        Err(CtlError::QueueOwned)
    );
    let mine = attach(
        &mut s,
        Caller::Token(&limited),
        DAEMON,
        "mine2",
        &["http://+:80/win3/"],
    )
    .unwrap();
    assert_eq!(s.queues().get(mine).unwrap().owner, Owner::Sid(user));
}

#[test]
fn queues_attach_by_grant_and_list() {
    use super::{Caller, attach};
    use crate::error::CtlError;
    use crate::queues::Holder;
    const H: Holder = Holder { pid: 7, uid: 1000 };
    const H2: Holder = Holder { pid: 8, uid: 0 };
    let mut s = Site::new();
    s.reserve("http://+:8080/app/", Some("user:alice")).unwrap();
    s.reserve("http://+:8080/admin/", None).unwrap();
    let alice = Caller::User("alice");
    assert_eq!(
        attach(&mut s, Caller::User("bob"), H, "q", &["http://+:8080/app/"]),
        Err(CtlError::NotGranted)
    );
    assert_eq!(
        attach(&mut s, alice, H, "q", &["http://+:8080/admin/"]),
        Err(CtlError::NotGranted),
        "no grant: administrators only"
    );
    assert_eq!(
        attach(&mut s, alice, H, "q", &["http://+:8080/nope/"]),
        Err(CtlError::NotFound)
    );
    let id = attach(&mut s, alice, H, "q", &["http://+:8080/app/"]).unwrap();
    let admin = attach(
        &mut s,
        Caller::Administrator,
        H2,
        "q",
        &["http://+:8080/admin/"],
    );
    assert_eq!(admin, Ok(id));
    let (st, rows) = call(&mut s, &Request::QueueList, &[]);
    assert_eq!(st, Status::Ok);
    assert_eq!(
        rows[0][..5],
        [
            "1",
            "q",
            "http://+:8080/app/ http://+:8080/admin/",
            "7:1000 8:0",
            "uid 1000"
        ]
    );
    // Its owner rejoins only while every reservation it serves grants them.
    assert_eq!(
        attach(&mut s, alice, H, "q", &["http://+:8080/app/"]),
        Err(CtlError::NotGranted)
    );
    // Application commands are refused on the control endpoint.
    let (st, _) = call(
        &mut s,
        &Request::QueueReceive {
            queue: id,
            body_max: u64::MAX,
            max_requests: 1,
        },
        &[],
    );
    assert_eq!(st, Status::WrongEndpoint);
}

#[test]
fn unknown_codes_and_small_buffers() {
    let mut s = Site::new();
    let mut out = Vec::new();
    let call = |code, input, output_cap| Call {
        code,
        input,
        direct: &[],
        output_cap,
    };
    let d = dispatch(&mut s, &call(0xDEAD_BEEF, &[], 100), Instant(0), &mut out);
    assert_eq!(d.status, Status::UnknownCommand);
    let mut input = Vec::new();
    let code = encode_request(&Request::LimitsGet, &mut input);
    let d = dispatch(&mut s, &call(code, &input, 16), Instant(0), &mut out);
    assert_eq!(d.status, Status::BufferTooSmall);
    assert_eq!(out.len(), 8);
    let needed = u32::from_le_bytes(out[4..8].try_into().unwrap());
    assert!(needed > 16);
    let d = dispatch(
        &mut s,
        &call(code, &input, needed as usize),
        Instant(0),
        &mut out,
    );
    assert_eq!(d.status, Status::Ok);
}

/// A host that keeps `Publish::certificates`'s default (the driver, until it has TLS)
/// refuses the certificate commands in one line, and the site is not touched.
#[test]
fn certificate_commands_go_to_the_host_and_a_host_without_tls_refuses_them() {
    use alloc::borrow::Cow;
    use alloc::sync::Arc;

    use super::{Publish, Writer};

    struct NoTls(Arc<Site>, usize);
    impl Publish for NoTls {
        fn current(&self) -> Arc<Site> {
            Arc::clone(&self.0)
        }
        fn persist(&mut self, _: &Site) -> Result<(), Cow<'static, str>> {
            Ok(())
        }
        fn publish(&mut self, site: Arc<Site>, _: bool) {
            self.0 = site;
            self.1 += 1;
        }
        fn reopen_log(&mut self) -> Result<(), Cow<'static, str>> {
            Ok(())
        }
    }
    let mut w = Writer::new(NoTls(Arc::new(Site::new()), 0));
    for req in [
        Request::SslcertList,
        Request::SslcertCa,
        Request::SslcertDelete {
            binding: "ipport=0.0.0.0:443",
        },
        Request::SslcertAdd {
            binding: "ipport=0.0.0.0:443",
            chain: "",
            key: "",
            ocsp: None,
        },
    ] {
        let mut input = Vec::new();
        let code = encode_request(&req, &mut input);
        let call = Call {
            code,
            input: &input,
            direct: &[],
            output_cap: 1 << 20,
        };
        let mut out = Vec::new();
        assert_eq!(w.commit(&call, Instant(0), &mut out), Status::NotSupported);
        let rows = decode_reply(&out).unwrap();
        assert_eq!(
            rows[0][0],
            Value::Str("this server has no TLS: certificates are bound by khttpd only")
        );
    }
    assert_eq!(w.host.1, 0, "nothing published");
}
