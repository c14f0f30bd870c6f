//! URL ACLs (`khttp_engine::acl`) on arbitrary input: an ACL's text (the `urlacl add` the
//! driver and khttpd both read), and a token's information buffers (what the driver reads from
//! `ZwQueryInformationToken`). Invariants: every SID read prints as text that reads back to
//! it; an identity holding every SID of a DACL for deny only, or no SID, is never granted; a
//! restricted identity whose restricting SIDs are its own SIDs is granted exactly as without
//! them; a token buffer of any bytes at any address is read or refused.

#![no_main]

use khttp_engine::acl::{Acl, Identity, REGISTER, TokenInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(Acl::Sddl(dacl)) = Acl::parse(text) else {
            return;
        };
        let (mut enabled, mut denied, mut restricted) =
            (Identity::new(), Identity::new(), Identity::new());
        for ace in dacl.aces() {
            let again = format!("sddl:D:(A;;GX;;;{})", ace.sid);
            match Acl::parse(&again) {
                Ok(Acl::Sddl(d)) => assert_eq!(d.aces()[0].sid, ace.sid, "{again}"),
                other => panic!("{again}: {other:?}"),
            }
            let _ = enabled.add(ace.sid, false);
            let _ = denied.add(ace.sid, true);
            let _ = restricted.add(ace.sid, false);
            let _ = restricted.add_restricting(ace.sid, false);
        }
        let desired = u32::from(mode >> 1 & 3).max(REGISTER);
        assert!(
            !dacl.grants(&denied, desired),
            "deny-only SIDs granted: {text}"
        );
        assert!(
            !dacl.grants(&Identity::new(), desired),
            "no SID granted: {text}"
        );
        assert_eq!(
            dacl.grants(&enabled, desired),
            dacl.grants(&restricted, desired),
            "{text}"
        );
    } else {
        let (base, buf) = rest.split_at(rest.len().min(8));
        let mut b = [0u8; 8];
        b[..base.len()].copy_from_slice(base);
        let which = [
            TokenInfo::User,
            TokenInfo::Groups,
            TokenInfo::RestrictedSids,
        ][usize::from(mode >> 1) % 3];
        let mut id = Identity::new();
        if id.add_token_info(which, buf, u64::from_le_bytes(b)).is_ok() {
            let _ = id.is_administrator();
        }
    }
});
