use super::*;
use alloc::format;
use alloc::vec;

fn sid(text: &str) -> Sid {
    Sid::parse(text).unwrap()
}

/// An identity of `(SID, deny-only)` pairs.
fn who(sids: &[(&str, bool)]) -> Identity {
    let mut id = Identity::new();
    for (s, deny_only) in sids {
        id.add(sid(s), *deny_only).unwrap();
    }
    id
}

fn dacl(text: &str) -> Dacl {
    match Acl::parse(text) {
        Ok(Acl::Sddl(d)) => d,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn sids_in_binary() {
    assert_eq!(
        sid("S-1-5-32-544").as_bytes(),
        [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]
    );
    assert_eq!(sid("BA"), sid("S-1-5-32-544"));
    assert_eq!(sid("WD"), EVERYONE);
    assert_eq!(EVERYONE.as_bytes(), [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    let user = sid("S-1-5-21-1004336348-1177238915-682003330-512");
    assert_eq!(user.as_bytes().len(), 8 + 5 * 4);
    assert_eq!(
        format!("{user}"),
        "S-1-5-21-1004336348-1177238915-682003330-512"
    );
    assert_eq!(
        sid("S-1-0x000100000000-1").as_bytes()[..8],
        [1, 1, 0, 1, 0, 0, 0, 0]
    );
    assert_eq!(
        format!("{}", sid("S-1-0x000100000000-1")),
        "S-1-0x000100000000-1"
    );
    assert_eq!(
        format!("{}", sid("S-1-0x0000FFFFFFFF-1")),
        "S-1-4294967295-1"
    );
    let fifteen = format!("S-1-5{}", "-1".repeat(15));
    assert_eq!(sid(&fifteen).as_bytes().len(), MAX_SID_BYTES);
    for bad in [
        "",
        "S",
        "S-1",
        "S-1-5",
        "S-2-5-1",
        "S-1-5-",
        "S-1-5-x",
        "S-1-5-+1",
        "S-1-5-4294967296",
        "S-1-0x1-1",
        "S-1-99999999999-1",
        "XX",
        "wd",
        &format!("S-1-5{}", "-1".repeat(16)),
    ] {
        assert_eq!(Sid::parse(bad), Err(AclError::Sid), "{bad:?}");
    }
}

#[test]
fn sddl_as_http_sys_writes_it() {
    let d = dacl("sddl:D:(A;;GX;;;S-1-5-21-1-2-3-1001)(A;;GA;;;BA)");
    assert_eq!(d.aces().len(), 2);
    assert_eq!(d.aces()[0].mask, REGISTER);
    assert_eq!(d.aces()[1].mask, REGISTER | DELEGATE);
    assert_eq!(d.aces()[1].kind, AceKind::Allow);
    let user = who(&[("S-1-5-21-1-2-3-1001", false), ("WD", false)]);
    assert!(d.grants(&user, REGISTER));
    let other = who(&[("S-1-5-21-1-2-3-1002", false), ("WD", false)]);
    assert!(!d.grants(&other, REGISTER));
    assert!(d.grants(&who(&[("BA", false)]), REGISTER | DELEGATE));
    assert!(!d.grants(&user, REGISTER | DELEGATE), "GX is not GW");
    assert!(
        !d.grants(
            &who(&[("S-1-5-21-1-2-3-1002", false), ("BA", true)]),
            REGISTER
        ),
        "an unelevated administrator's BA is for deny only"
    );
    for (text, mask) in [
        ("D:P(A;;GW;;;WD)", DELEGATE),
        ("D:PAI(A;CIOI;GXGW;;;WD)", REGISTER | DELEGATE),
        ("D:(A;;0x20000000;;;WD)", REGISTER),
        ("D:(A;;0x1;;;WD)", REGISTER),
        ("D:(A;;GR;;;WD)", 0),
        (" D:(A;;GX;;;WD) ", REGISTER),
    ] {
        let Ok(Acl::Sddl(d)) = Acl::parse(&format!("sddl:{text}")) else {
            panic!("{text}")
        };
        assert_eq!(d.aces()[0].mask, mask, "{text}");
    }
    assert_eq!(Acl::parse("user:alice"), Ok(Acl::User("alice")));
}

#[test]
fn deny_before_allow_wins_and_order_matters() {
    let d = dacl("sddl:D:(D;;GX;;;S-1-5-21-9-1000)(A;;GX;;;AU)");
    let denied = who(&[("S-1-5-21-9-1000", false), ("AU", false)]);
    assert!(!d.grants(&denied, REGISTER));
    let denied_only = who(&[("S-1-5-21-9-1000", true), ("AU", false)]);
    assert!(
        !d.grants(&denied_only, REGISTER),
        "deny-only SIDs meet deny ACEs"
    );
    assert!(d.grants(&who(&[("S-1-5-21-9-1001", false), ("AU", false)]), REGISTER));
    let d = dacl("sddl:D:(A;;GX;;;AU)(D;;GX;;;S-1-5-21-9-1000)");
    assert!(d.grants(&denied, REGISTER), "granted first");
    assert!(!dacl("sddl:D:").grants(&Identity::local_user().unwrap(), REGISTER));
    let everyone = dacl("sddl:D:(A;;GX;;;WD)");
    assert!(everyone.grants(&Identity::local_user().unwrap(), REGISTER));
    assert!(!everyone.grants(&Identity::new(), REGISTER));
    let mut boxed = Identity::local_user().unwrap();
    boxed.set_app_container();
    assert!(
        !everyone.grants(&boxed, REGISTER),
        "AppContainers are never granted"
    );
    assert!(!boxed.is_administrator());
}

#[test]
fn restricted_tokens_are_granted_by_both_passes() {
    let d = dacl("sddl:D:(A;;GX;;;S-1-5-21-9-1000)(A;;GX;;;RD)");
    let mut id = who(&[("S-1-5-21-9-1000", false), ("WD", false)]);
    assert!(d.grants(&id, REGISTER));
    id.add_restricting(sid("WD"), false).unwrap();
    assert!(
        !d.grants(&id, REGISTER),
        "the restricting SIDs are not granted"
    );
    id.add_restricting(sid("RD"), false).unwrap();
    assert!(d.grants(&id, REGISTER));
    let mut admin = who(&[("S-1-5-21-9-1000", false), ("BA", false)]);
    assert!(admin.is_administrator());
    admin.add_restricting(sid("WD"), false).unwrap();
    assert!(!admin.is_administrator(), "restricted away from BA");
    assert!(who(&[("SY", false)]).is_administrator());
    assert!(!who(&[("S-1-5-21-9-1000", false), ("BA", true)]).is_administrator());
    assert!(!Identity::local_user().unwrap().is_administrator());
}

/// A `TOKEN_GROUPS` buffer as 64-bit Windows fills it, at address `base`.
fn token_groups(base: u64, groups: &[(&str, u32)]) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + 16 * groups.len()];
    buf[..4].copy_from_slice(&u32::try_from(groups.len()).unwrap().to_le_bytes());
    for (i, (text, attrs)) in groups.iter().enumerate() {
        let at = buf.len() as u64 + base;
        buf.extend_from_slice(sid(text).as_bytes());
        let e = 8 + 16 * i;
        buf[e..e + 8].copy_from_slice(&at.to_le_bytes());
        buf[e + 8..e + 12].copy_from_slice(&attrs.to_le_bytes());
    }
    buf
}

#[test]
fn token_buffers_read_as_windows_lays_them_out() {
    const ENABLED: u32 = 0x4 | 0x2 | 0x1;
    const DENY_ONLY: u32 = 0x10;
    let base: u64 = 0xffff_8000_0000_1000;
    let mut user = vec![0u8; 16];
    user[..8].copy_from_slice(&(base + 16).to_le_bytes());
    user.extend_from_slice(sid("S-1-5-21-0-0-0-1000").as_bytes());
    let mut id = Identity::new();
    id.add_token_info(TokenInfo::User, &user, base).unwrap();
    let groups = token_groups(
        base,
        &[
            ("WD", ENABLED),
            ("BA", DENY_ONLY),
            ("AU", 0),
            ("S-1-5-32-545", ENABLED),
        ],
    );
    id.add_token_info(TokenInfo::Groups, &groups, base).unwrap();
    assert_eq!(
        id,
        who(&[
            ("S-1-5-21-0-0-0-1000", false),
            ("WD", false),
            ("BA", true),
            ("AU", true),
            ("S-1-5-32-545", false)
        ])
    );
    assert!(!id.is_administrator());
    assert_eq!(id.user().and_then(Sid::rid), Some(1000));
    assert_eq!(EVERYONE.rid(), Some(0));
    id.add_token_info(TokenInfo::RestrictedSids, &token_groups(base, &[]), base)
        .unwrap();
    assert!(id.restricting.is_empty());
    // Every malformed buffer is an error, never a read outside it.
    let e = Err(AclError::Token);
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::User, &user, base + 1),
        e
    );
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::User, &user[..16], base),
        e
    );
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::User, &user[..20], base),
        e
    );
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::Groups, &groups[..3], base),
        e
    );
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::Groups, &groups[..40], base),
        e
    );
    let mut huge = groups.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::Groups, &huge, base),
        Err(AclError::TooMany)
    );
    huge[..4].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::Groups, &huge, base),
        e
    );
    let mut wild = groups.clone();
    wild[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        Identity::new().add_token_info(TokenInfo::Groups, &wild, base),
        e
    );
    for cut in 0..groups.len() {
        let _ = Identity::new().add_token_info(TokenInfo::Groups, &groups[..cut], base);
    }
}

#[test]
fn token_sids_read_back() {
    let s = sid("S-1-5-21-1-2-3-1001");
    assert_eq!(Sid::from_bytes(s.as_bytes()), Some(s));
    assert_eq!(Sid::from_bytes(EVERYONE.as_bytes()), Some(EVERYONE));
    let b = s.as_bytes();
    assert_eq!(Sid::from_bytes(&b[..b.len() - 1]), None, "short");
    let mut long = b.to_vec();
    long.push(0);
    assert_eq!(Sid::from_bytes(&long), None, "long");
    let mut rev2 = b.to_vec();
    rev2[0] = 2;
    assert_eq!(Sid::from_bytes(&rev2), None, "revision");
    let mut many = vec![1u8, 16, 0, 0, 0, 0, 0, 5];
    many.extend([0u8; 64]);
    assert_eq!(Sid::from_bytes(&many), None, "16 sub-authorities");
    assert_eq!(Sid::from_bytes(&[]), None);
    let mut id = Identity::new();
    for _ in 0..MAX_MEMBERS {
        id.add(EVERYONE, false).unwrap();
    }
    assert_eq!(id.add(EVERYONE, false), Err(AclError::TooMany));
}

#[test]
fn refusals_say_what() {
    for (text, e) in [
        ("alice", AclError::Kind),
        ("user:", AclError::User),
        ("user:a\nb", AclError::User),
        ("sddl:O:BAD:(A;;GX;;;WD)", AclError::NotDacl),
        ("sddl:D:(A;;GX;;;WD)S:(AU;;GA;;;WD)", AclError::NotDacl),
        ("sddl:D:(A;;GX;;;WD", AclError::NotDacl),
        ("sddl:D:X(A;;GX;;;WD)", AclError::DaclFlag),
        ("sddl:D:(AU;;GX;;;WD)", AclError::AceType),
        ("sddl:D:(OA;;GX;;;WD)", AclError::AceType),
        ("sddl:D:(A;;GX;;;WD;x)", AclError::AceShape),
        ("sddl:D:(A;;GX;;;)", AclError::Sid),
        ("sddl:D:(A;;GX)", AclError::AceShape),
        ("sddl:D:(A;;GX;x;;WD)", AclError::AceShape),
        ("sddl:D:(A;XX;GX;;;WD)", AclError::AceFlag),
        ("sddl:D:(A;;GQ;;;WD)", AclError::Right),
        ("sddl:D:(A;;G;;;WD)", AclError::Right),
        ("sddl:D:(A;;0xZZ;;;WD)", AclError::Right),
        ("sddl:D:(A;;GX;;;ZZ)", AclError::Sid),
        ("sddl:D:(A;;GX;;;S-1-5-é)", AclError::Sid),
    ] {
        assert_eq!(Acl::parse(text), Err(e), "{text}");
    }
    let many = format!("sddl:D:{}", "(A;;GX;;;WD)".repeat(MAX_ACES + 1));
    assert_eq!(Acl::parse(&many), Err(AclError::TooMany));
    let most = format!("sddl:D:{}", "(A;;GX;;;WD)".repeat(MAX_ACES));
    assert!(Acl::parse(&most).is_ok());
}
