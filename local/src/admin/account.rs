//! `urlacl add PREFIX --user NAME` (and `user = "NAME"` in an apply file) as the server reads
//! it ([`user_acl`]).
//!
//! khttpd's callers are Unix users, known by name: the ACL is `user:NAME`. The driver's are
//! Windows tokens, which carry SIDs, not names, and a kernel driver cannot look a name up: so on
//! Windows khttpctl resolves the name itself (`LookupAccountNameW`) and sends the SDDL that
//! netsh writes for `netsh http add urlacl url=… user=NAME`, `D:(A;;GX;;;SID)`. A name that is
//! already a SID string (`S-1-…`) is taken as it is.

/// The ACL text for a reservation granted to `name`.
///
/// # Errors
/// An empty name, or (on Windows) one that names no account, as one line of English.
pub fn user_acl(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    if cfg!(windows) {
        let sid = if name.starts_with("S-1-") {
            name.to_string()
        } else {
            sid_of(name)?
        };
        Ok(format!("sddl:D:(A;;GX;;;{sid})"))
    } else {
        Ok(format!("user:{name}"))
    }
}

/// What `urlacl show` prints for an ACL besides its text: for an SDDL, each ACE with its
/// account's name and rights, as `netsh http show urlacl` does (`User: NAME`, `Listen`: may
/// register, `Delegate`). On Windows the name is the account's (`LookupAccountSidW`); elsewhere
/// only well-known SIDs have one, and other SIDs print as they are.
#[must_use]
pub fn describe(acl: &str) -> Vec<String> {
    use khttp_engine::acl::{AceKind, Acl, DELEGATE, REGISTER};
    let Ok(Acl::Sddl(dacl)) = Acl::parse(acl) else {
        return Vec::new();
    };
    let yes = |mask: u32, right: u32| if mask & right != 0 { "Yes" } else { "No" };
    dacl.aces()
        .iter()
        .map(|ace| {
            let who = name_of(&ace.sid).unwrap_or_else(|| ace.sid.to_string());
            let kind = match ace.kind {
                AceKind::Allow => "User",
                AceKind::Deny => "Denied",
            };
            format!(
                "{kind}: {who}  Listen: {}  Delegate: {}",
                yes(ace.mask, REGISTER),
                yes(ace.mask, DELEGATE)
            )
        })
        .collect()
}

/// A request queue's owner as `queue show` prints it: `uid N` as it is; a SID with its
/// account's name when one is known (`BUILTIN\\Administrators (S-1-5-32-544)`).
#[must_use]
pub fn owner(text: &str) -> String {
    use khttp_engine::acl::Acl;
    let sid = match Acl::parse(&format!("sddl:D:(A;;GX;;;{text})")) {
        Ok(Acl::Sddl(dacl)) if text.starts_with("S-1-") => dacl.aces().first().map(|a| a.sid),
        _ => None,
    };
    match sid.and_then(|sid| name_of(&sid)) {
        Some(name) => format!("{name} ({text})"),
        None => text.to_owned(),
    }
}

/// The name of a well-known SID, as Windows writes it.
#[cfg(not(windows))]
fn name_of(sid: &khttp_engine::acl::Sid) -> Option<String> {
    [
        ("WD", "Everyone"),
        ("AU", "NT AUTHORITY\\Authenticated Users"),
        ("SY", "NT AUTHORITY\\SYSTEM"),
        ("LS", "NT AUTHORITY\\LOCAL SERVICE"),
        ("NS", "NT AUTHORITY\\NETWORK SERVICE"),
        ("BA", "BUILTIN\\Administrators"),
        ("BU", "BUILTIN\\Users"),
    ]
    .iter()
    .find(|(alias, _)| khttp_engine::acl::alias(alias).as_ref() == Some(sid))
    .map(|(_, name)| (*name).to_string())
}

/// The account's name, `DOMAIN\\name`.
#[cfg(windows)]
#[allow(
    unsafe_code,
    reason = "LookupAccountSidW is FFI; the call has its SAFETY comment"
)]
fn name_of(sid: &khttp_engine::acl::Sid) -> Option<String> {
    use windows_sys::Win32::Security::{LookupAccountSidW, SID_NAME_USE};
    let mut bytes = sid.as_bytes().to_vec();
    let (mut name, mut domain) = (vec![0u16; 256], vec![0u16; 256]);
    let mut name_len = u32::try_from(name.len()).ok()?;
    let mut domain_len = u32::try_from(domain.len()).ok()?;
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `bytes` is a valid binary SID (`Sid` holds no other); `name` and `domain` hold
    // the lengths passed, which the call reads and updates; all outlive the (synchronous)
    // call; a null system name is the local system.
    let ok = unsafe {
        LookupAccountSidW(
            core::ptr::null(),
            bytes.as_mut_ptr().cast(),
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return None;
    }
    let text = |w: &[u16], n: u32| String::from_utf16_lossy(w.get(..n as usize).unwrap_or(w));
    let (name, domain) = (text(&name, name_len), text(&domain, domain_len));
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}

#[cfg(not(windows))]
fn sid_of(_name: &str) -> Result<String, String> {
    Err("accounts are looked up on Windows only".into())
}

#[cfg(windows)]
#[allow(
    unsafe_code,
    reason = "LookupAccountNameW is FFI; the call has its SAFETY comment"
)]
fn sid_of(name: &str) -> Result<String, String> {
    use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, ERROR_NONE_MAPPED};
    use windows_sys::Win32::Security::{LookupAccountNameW, SID_NAME_USE};

    let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
    // SECURITY_MAX_SID_SIZE and a domain name of DNLEN, grown if the call asks for more.
    let mut sid = vec![0u8; khttp_engine::acl::MAX_SID_BYTES];
    let mut domain = vec![0u16; 16];
    for _ in 0..2 {
        let mut sid_len = u32::try_from(sid.len()).unwrap_or(u32::MAX);
        let mut domain_len = u32::try_from(domain.len()).unwrap_or(u32::MAX);
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: `wide` is NUL-terminated; `sid` and `domain` hold the lengths passed, which
        // the call reads and updates; all outlive the (synchronous) call; a null system name is
        // the local system.
        let ok = unsafe {
            LookupAccountNameW(
                core::ptr::null(),
                wide.as_ptr(),
                sid.as_mut_ptr().cast(),
                &mut sid_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if ok != 0 {
            let count = sid.get(1).copied().unwrap_or(0);
            let len = 8 + 4 * usize::from(count);
            return sid
                .get(..len)
                .and_then(khttp_engine::acl::Sid::from_bytes)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("the account {name:?} has a malformed SID"));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error().and_then(|c| u32::try_from(c).ok()) {
            Some(ERROR_NONE_MAPPED) => return Err(format!("no such user or group: {name}")),
            Some(ERROR_INSUFFICIENT_BUFFER) => {
                sid.resize(usize::try_from(sid_len).unwrap_or(0).max(sid.len()), 0);
                domain.resize(
                    usize::try_from(domain_len).unwrap_or(0).max(domain.len()),
                    0,
                );
            }
            _ => return Err(format!("cannot look up the account {name:?}: {e}")),
        }
    }
    Err(format!("cannot look up the account {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::user_acl;

    #[test]
    fn aces_are_described_as_netsh_does() {
        let lines = super::describe("sddl:D:(A;;GX;;;WD)(D;;GA;;;BA)(A;;GW;;;S-1-5-21-1-2-3-1001)");
        let named = !cfg!(windows);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("User: "), "{lines:?}");
        assert!(lines[0].ends_with("Listen: Yes  Delegate: No"), "{lines:?}");
        assert!(lines[1].starts_with("Denied: "), "{lines:?}");
        assert!(
            lines[1].ends_with("Listen: Yes  Delegate: Yes"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with("Listen: No  Delegate: Yes"), "{lines:?}");
        if named {
            assert_eq!(lines[0], "User: Everyone  Listen: Yes  Delegate: No");
            assert!(lines[1].contains("BUILTIN\\Administrators"), "{lines:?}");
            assert!(lines[2].contains("S-1-5-21-1-2-3-1001"), "{lines:?}");
        }
        assert!(super::describe("user:alice").is_empty());
    }

    #[test]
    fn unix_users_by_name() {
        if cfg!(windows) {
            return;
        }
        assert_eq!(user_acl(" alice ").as_deref(), Ok("user:alice"));
        assert!(user_acl("  ").is_err());
    }
}
