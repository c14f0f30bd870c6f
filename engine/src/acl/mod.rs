//! URL ACLs (issue #12): who may attach an application to a reservation.
//!
//! A reservation's ACL is the text `urlacl add` gave it: `user:NAME` (`--user`) or
//! `sddl:SDDL` (`--sddl`). http.sys keeps every URL ACL as a security descriptor in SDDL
//! (`netsh http add urlacl … user=NAME` stores `D:(A;;GX;;;SID)`), and so does khttpctl on
//! Windows, which turns `--user NAME` into the user's SID before it sends the reservation.
//!
//! This module reads the part of SDDL a URL ACL uses: a DACL (`D:`, its flags `P`, `AI`, `AR`
//! accepted and without effect here) of allow (`A`) and deny (`D`) ACEs with empty object GUIDs,
//! rights written as two-letter codes or a hexadecimal mask, and SIDs written `S-1-…` or as a
//! well-known two-letter alias (Microsoft Learn, "Security Descriptor String Format", "ACE
//! Strings", "SID Strings"; the binary SID is [MS-DTYP] 2.4.2.2). Anything else is refused when
//! the reservation is made, with a line that says what.
//!
//! Rights follow http.sys's URL ACLs: `GX` (generic execute) lets a process register under the
//! prefix (attach a queue), `GW` lets it delegate, `GA` both (Microsoft Learn,
//! `HTTP_SERVICE_CONFIG_URLACL_PARAM`). [`REGISTER`] and [`DELEGATE`] are those rights as the
//! specific bits of an access mask, after [`GENERIC_MAPPING`].
//!
//! Who checks: [`Dacl::grants`], for an [`Identity`]. The driver reads the identity from the
//! token of the process that opens its application device (its user, its groups, which of them
//! are enabled or only for deny, its restricting SIDs); khttpd, whose callers are Unix users,
//! gives every local user [`Identity::local_user`] ([`EVERYONE`] and [`AUTHENTICATED_USERS`]),
//! so that `D:(A;;GX;;;WD)` admits every user on both.
//!
//! [`Dacl::grants`] decides as the kernel's access check (`SeAccessCheck`) decides for a DACL of
//! allow and deny ACEs (Microsoft Learn, "How DACLs Control Access to an Object"): ACEs in
//! order, an allow counts for enabled SIDs only, a deny also for deny-only ones, a deny of a
//! right not yet granted ends the walk, and a token with restricting SIDs must be granted twice,
//! once by its SIDs and once by its restricting SIDs alone. The driver does not call
//! `SeAccessCheck` itself: under Wine, the one place the driver runs here, it and
//! `SeCaptureSubjectContext` are unimplemented stubs, and a decision nothing can run is where
//! the mistakes hide. Privileges, integrity labels and conditional ACEs play no part in a URL
//! ACL; an AppContainer token, whose access also depends on capabilities, is never granted.
//!
//! Written here rather than taken from a crate: the SDDL crates on crates.io need std and the
//! Windows API (or allocate freely), and this subset must run in the kernel without panicking.

use alloc::vec::Vec;
use core::fmt;

/// The right to register under a prefix: attach a queue (`GX`).
pub const REGISTER: u32 = 0x0000_0001;
/// The right to delegate a prefix (`GW`); recorded, not used by khttp.
pub const DELEGATE: u32 = 0x0000_0002;

/// How the generic rights of an ACE map to khttp's specific rights: read, write, execute, all
/// (the `GENERIC_MAPPING` a kernel access check takes).
pub const GENERIC_MAPPING: [u32; 4] = [0, DELEGATE, REGISTER, REGISTER | DELEGATE];

const GENERIC_READ: u32 = 0x8000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;
const GENERIC_EXECUTE: u32 = 0x2000_0000;
const GENERIC_ALL: u32 = 0x1000_0000;

/// At most this many ACEs in one ACL (a URL ACL holds a few).
pub const MAX_ACES: usize = 64;
/// `SID_MAX_SUB_AUTHORITIES`.
const MAX_SUB_AUTHORITIES: usize = 15;
/// The longest binary SID: 8 bytes of header and 15 sub-authorities.
pub const MAX_SID_BYTES: usize = 8 + 4 * MAX_SUB_AUTHORITIES;

/// A security identifier in its binary form ([MS-DTYP] 2.4.2.2): revision 1, the count of
/// sub-authorities, the 48-bit identifier authority big-endian, then each sub-authority as a
/// little-endian `u32`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sid {
    bytes: [u8; MAX_SID_BYTES],
    len: u8,
}

/// `S-1-1-0`, Everyone (`WD`).
pub const EVERYONE: Sid = Sid::well_known(1, 0, None);
/// `S-1-5-11`, Authenticated Users (`AU`).
pub const AUTHENTICATED_USERS: Sid = Sid::well_known(5, 11, None);
/// `S-1-5-18`, Local System (`SY`).
pub const SYSTEM: Sid = Sid::well_known(5, 18, None);
/// `S-1-5-32-544`, BUILTIN\\Administrators (`BA`).
pub const ADMINISTRATORS: Sid = Sid::well_known(5, 32, Some(544));

impl Sid {
    /// A SID with a small authority and one or two sub-authorities, for constants.
    const fn well_known(authority: u8, first: u32, second: Option<u32>) -> Self {
        let mut bytes = [0u8; MAX_SID_BYTES];
        bytes[0] = 1;
        bytes[7] = authority;
        let a = first.to_le_bytes();
        (bytes[8], bytes[9], bytes[10], bytes[11]) = (a[0], a[1], a[2], a[3]);
        let len = match second {
            Some(s) => {
                let b = s.to_le_bytes();
                (bytes[12], bytes[13], bytes[14], bytes[15]) = (b[0], b[1], b[2], b[3]);
                bytes[1] = 2;
                16
            }
            None => {
                bytes[1] = 1;
                12
            }
        };
        Self { bytes, len }
    }

    /// A binary SID (a token's): revision 1, at most 15 sub-authorities, exactly as long as
    /// its count says.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (&[rev, count], _) = b.split_first_chunk::<2>()?;
        let len = sid_len(count);
        if rev != 1 || usize::from(count) > MAX_SUB_AUTHORITIES || b.len() != len {
            return None;
        }
        let mut bytes = [0u8; MAX_SID_BYTES];
        bytes.get_mut(..len)?.copy_from_slice(b);
        Some(Self {
            bytes,
            len: u8::try_from(len).ok()?,
        })
    }

    /// Its last sub-authority: a user's relative id (RID), as `1000` in `S-1-5-21-…-1000`.
    #[must_use]
    pub fn rid(&self) -> Option<u32> {
        let b = self.as_bytes();
        let last = b.len().checked_sub(4).filter(|at| *at >= 8)?;
        b.get(last..)?
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b))
    }

    /// The binary SID, as the kernel takes it.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Reads `S-1-AUTHORITY-SUB…` (the authority in decimal, or `0x` and 12 hex digits as SID
    /// strings write one of 2^32 or more) or a two-letter alias.
    fn parse(text: &str) -> Result<Self, AclError> {
        if let Some(sid) = alias(text) {
            return Ok(sid);
        }
        let mut parts = text.split('-');
        if parts.next() != Some("S") || parts.next() != Some("1") {
            return Err(AclError::Sid);
        }
        let authority = match parts.next() {
            Some(a) => match a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")) {
                Some(hex) if hex.len() == 12 => u64::from_str_radix(hex, 16),
                Some(_) => return Err(AclError::Sid),
                None => a.parse::<u32>().map(u64::from),
            }
            .map_err(|_| AclError::Sid)?,
            None => return Err(AclError::Sid),
        };
        let mut bytes = [0u8; MAX_SID_BYTES];
        let mut len = 8usize;
        let mut count = 0u8;
        for part in parts {
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AclError::Sid);
            }
            let sub: u32 = part.parse().map_err(|_| AclError::Sid)?;
            let end = len.checked_add(4).ok_or(AclError::Sid)?;
            bytes
                .get_mut(len..end)
                .ok_or(AclError::Sid)?
                .copy_from_slice(&sub.to_le_bytes());
            len = end;
            count = count.checked_add(1).ok_or(AclError::Sid)?;
        }
        if count == 0 {
            return Err(AclError::Sid);
        }
        let (head, _) = bytes.split_at_mut(8);
        head.copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        if let [rev, n, auth @ ..] = head {
            *rev = 1;
            *n = count;
            auth.copy_from_slice(authority.to_be_bytes().get(2..).ok_or(AclError::Sid)?);
        }
        Ok(Self {
            bytes,
            len: u8::try_from(len).map_err(|_| AclError::Sid)?,
        })
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Sid {
    /// `S-1-…`, as SID strings are written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.as_bytes();
        let mut auth = [0u8; 8];
        if let (Some(dst), Some(src)) = (auth.get_mut(2..), b.get(2..8)) {
            dst.copy_from_slice(src);
        }
        // An authority of 2^32 or more is written in hexadecimal, 12 digits ("SID Strings").
        match u64::from_be_bytes(auth) {
            a if a >= 1 << 32 => write!(f, "S-1-0x{a:012X}")?,
            a => write!(f, "S-1-{a}")?,
        }
        for sub in b.get(8..).unwrap_or(&[]).chunks_exact(4) {
            let mut le = [0u8; 4];
            le.copy_from_slice(sub);
            write!(f, "-{}", u32::from_le_bytes(le))?;
        }
        Ok(())
    }
}

/// The length of a binary SID with `count` sub-authorities.
fn sid_len(count: u8) -> usize {
    usize::from(count).saturating_mul(4).saturating_add(8)
}

/// The well-known SID aliases of SDDL a URL ACL may name (`WD`, `AU`, `BA`, …).
#[must_use]
pub fn alias(text: &str) -> Option<Sid> {
    Some(match text {
        "WD" => EVERYONE,
        "AU" => AUTHENTICATED_USERS,
        "AN" => Sid::well_known(5, 7, None),
        "IU" => Sid::well_known(5, 4, None),
        "NU" => Sid::well_known(5, 2, None),
        "SU" => Sid::well_known(5, 6, None),
        "SY" => SYSTEM,
        "LS" => Sid::well_known(5, 19, None),
        "NS" => Sid::well_known(5, 20, None),
        "BA" => ADMINISTRATORS,
        "BU" => Sid::well_known(5, 32, Some(545)),
        "BG" => Sid::well_known(5, 32, Some(546)),
        "PU" => Sid::well_known(5, 32, Some(547)),
        "RD" => Sid::well_known(5, 32, Some(555)),
        _ => return None,
    })
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AceKind {
    /// `A`: `ACCESS_ALLOWED_ACE_TYPE`.
    Allow,
    /// `D`: `ACCESS_DENIED_ACE_TYPE`.
    Deny,
}

/// One ACE: its rights already mapped to [`REGISTER`] and [`DELEGATE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ace {
    /// Allow or deny.
    pub kind: AceKind,
    /// The specific rights it allows or denies.
    pub mask: u32,
    /// Whom.
    pub sid: Sid,
}

/// A DACL: its ACEs in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dacl {
    aces: Vec<Ace>,
}

impl Dacl {
    /// The ACEs, in the order they are checked.
    #[must_use]
    pub fn aces(&self) -> &[Ace] {
        &self.aces
    }

    /// Whether `who` has every right in `desired` (see the module's documentation).
    #[must_use]
    pub fn grants(&self, who: &Identity, desired: u32) -> bool {
        !who.app_container
            && self.walk(&who.members, desired)
            && (who.restricting.is_empty() || self.walk(&who.restricting, desired))
    }

    /// One pass over the ACEs for `members`.
    fn walk(&self, members: &[Member], desired: u32) -> bool {
        let mut granted = 0u32;
        for ace in &self.aces {
            let Some(m) = members.iter().find(|m| m.sid == ace.sid) else {
                continue;
            };
            match ace.kind {
                AceKind::Deny if ace.mask & desired & !granted != 0 => return false,
                AceKind::Allow if !m.deny_only => granted |= ace.mask & desired,
                AceKind::Deny | AceKind::Allow => {}
            }
            if granted == desired {
                return true;
            }
        }
        false
    }
}

/// One SID of an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The SID.
    pub sid: Sid,
    /// `SE_GROUP_USE_FOR_DENY_ONLY`, or a group not enabled: it matches deny ACEs only.
    pub deny_only: bool,
}

/// A `TOKEN_INFORMATION_CLASS` whose buffer [`Identity::add_token_info`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenInfo {
    /// `TokenUser` (1).
    User,
    /// `TokenGroups` (2).
    Groups,
    /// `TokenRestrictedSids` (11).
    RestrictedSids,
}

impl TokenInfo {
    /// Its `TOKEN_INFORMATION_CLASS` value (Microsoft Learn, `TOKEN_INFORMATION_CLASS`).
    #[must_use]
    pub const fn class(self) -> u32 {
        match self {
            Self::User => 1,
            Self::Groups => 2,
            Self::RestrictedSids => 11,
        }
    }
}

/// At most this many SIDs in an identity (a token's groups; Windows allows 1024).
pub const MAX_MEMBERS: usize = 1024;

/// Whom an access check is for: a token's user and groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    members: Vec<Member>,
    restricting: Vec<Member>,
    app_container: bool,
}

impl Identity {
    /// An identity with no SIDs yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            members: Vec::new(),
            restricting: Vec::new(),
            app_container: false,
        }
    }

    /// Any local user of khttpd: Everyone and Authenticated Users.
    ///
    /// # Errors
    /// [`AclError::OutOfMemory`].
    pub fn local_user() -> Result<Self, AclError> {
        let mut id = Self::new();
        id.add(EVERYONE, false)?;
        id.add(AUTHENTICATED_USERS, false)?;
        Ok(id)
    }

    /// Adds a SID of the token (its user, or one of its groups).
    ///
    /// # Errors
    /// [`AclError::TooMany`] past [`MAX_MEMBERS`], [`AclError::OutOfMemory`].
    pub fn add(&mut self, sid: Sid, deny_only: bool) -> Result<(), AclError> {
        push(&mut self.members, Member { sid, deny_only })
    }

    /// Adds a restricting SID (a restricted token's).
    ///
    /// # Errors
    /// As [`Identity::add`].
    pub fn add_restricting(&mut self, sid: Sid, deny_only: bool) -> Result<(), AclError> {
        push(&mut self.restricting, Member { sid, deny_only })
    }

    /// Adds the SIDs of a buffer `ZwQueryInformationToken` filled for `which`, laid out as on
    /// 64-bit Windows (Microsoft Learn, `TOKEN_USER`, `TOKEN_GROUPS`, `SID_AND_ATTRIBUTES`):
    /// `TOKEN_USER` is one `SID_AND_ATTRIBUTES`; `TOKEN_GROUPS` is a `u32` count and, from
    /// offset 8, that many of them; each is the SID's address (8 bytes) and its attributes (a
    /// `u32`, padded to 16 bytes). `base` is the buffer's address: every SID must lie in it.
    /// The user SID is for deny only if marked so; a group also if it is not enabled.
    ///
    /// # Errors
    /// [`AclError::Token`] (a SID outside the buffer, a malformed SID, a count the buffer does
    /// not hold), [`AclError::TooMany`], [`AclError::OutOfMemory`].
    pub fn add_token_info(
        &mut self,
        which: TokenInfo,
        buf: &[u8],
        base: u64,
    ) -> Result<(), AclError> {
        const SE_GROUP_ENABLED: u32 = 0x4;
        const SE_GROUP_USE_FOR_DENY_ONLY: u32 = 0x10;
        let (count, first) = match which {
            TokenInfo::User => (1, 0),
            TokenInfo::Groups | TokenInfo::RestrictedSids => {
                let count = buf.first_chunk::<4>().ok_or(AclError::Token)?;
                (u32::from_le_bytes(*count), 8)
            }
        };
        let count = usize::try_from(count).map_err(|_| AclError::Token)?;
        if count > MAX_MEMBERS {
            return Err(AclError::TooMany);
        }
        for i in 0..count {
            let at = i.checked_mul(16).and_then(|o| o.checked_add(first));
            let entry = at
                .and_then(|at| buf.get(at..)?.first_chunk::<16>())
                .ok_or(AclError::Token)?;
            let (addr, rest) = entry.split_first_chunk::<8>().ok_or(AclError::Token)?;
            let attrs = u32::from_le_bytes(*rest.first_chunk::<4>().ok_or(AclError::Token)?);
            let offset = u64::from_le_bytes(*addr)
                .checked_sub(base)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or(AclError::Token)?;
            let sid = buf.get(offset..).ok_or(AclError::Token)?;
            let n = sid.get(1).map(|n| sid_len(*n)).ok_or(AclError::Token)?;
            let sid =
                Sid::from_bytes(sid.get(..n).ok_or(AclError::Token)?).ok_or(AclError::Token)?;
            let deny_only = attrs & SE_GROUP_USE_FOR_DENY_ONLY != 0
                || (which != TokenInfo::User && attrs & SE_GROUP_ENABLED == 0);
            match which {
                TokenInfo::RestrictedSids => self.add_restricting(sid, deny_only)?,
                TokenInfo::User | TokenInfo::Groups => self.add(sid, deny_only)?,
            }
        }
        Ok(())
    }

    /// Marks an AppContainer token, which is never granted.
    pub fn set_app_container(&mut self) {
        self.app_container = true;
    }

    /// Its first SID: a token's user, when read with [`Identity::add_token_info`] user first.
    #[must_use]
    pub fn user(&self) -> Option<&Sid> {
        self.members.first().map(|m| &m.sid)
    }

    /// Whether it is an administrator's: granted to `SY` or `BA`, as the driver's control
    /// device admits them (`D:P(A;;GA;;;SY)(A;;GA;;;BA)`): a process of SYSTEM, or of an
    /// elevated administrator (not deny-only, as an administrator's unelevated token holds it).
    #[must_use]
    pub fn is_administrator(&self) -> bool {
        [SYSTEM, ADMINISTRATORS].iter().any(|sid| self.holds(sid))
    }

    /// Whether `sid` is one of its enabled SIDs (and, for a restricted token, of its enabled
    /// restricting SIDs too).
    fn holds(&self, sid: &Sid) -> bool {
        let pass = |members: &[Member]| members.iter().any(|m| m.sid == *sid && !m.deny_only);
        !self.app_container
            && pass(&self.members)
            && (self.restricting.is_empty() || pass(&self.restricting))
    }
}

fn push(list: &mut Vec<Member>, m: Member) -> Result<(), AclError> {
    if list.len() >= MAX_MEMBERS {
        return Err(AclError::TooMany);
    }
    list.try_reserve(1).map_err(|_| AclError::OutOfMemory)?;
    list.push(m);
    Ok(())
}

/// A reservation's ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acl<'a> {
    /// `user:NAME`: that (Unix) user.
    User(&'a str),
    /// `sddl:…`: a DACL.
    Sddl(Dacl),
}

impl<'a> Acl<'a> {
    /// Reads a reservation's ACL text.
    ///
    /// # Errors
    /// [`AclError`], saying what is wrong.
    pub fn parse(text: &'a str) -> Result<Self, AclError> {
        if let Some(user) = text.strip_prefix("user:") {
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(AclError::User);
            }
            return Ok(Self::User(user));
        }
        let sddl = text.strip_prefix("sddl:").ok_or(AclError::Kind)?;
        parse_sddl(sddl).map(Self::Sddl)
    }
}

/// Why an ACL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclError {
    /// Neither `user:` nor `sddl:`.
    Kind,
    /// An empty user name, or one with a control character.
    User,
    /// Not `D:` with ACEs in parentheses (owner, group and SACL parts included).
    NotDacl,
    /// A DACL flag other than `P`, `AI`, `AR`.
    DaclFlag,
    /// An ACE type other than `A` or `D`.
    AceType,
    /// An ACE with object GUIDs, resource attributes, or the wrong number of fields.
    AceShape,
    /// An ACE flag other than the inheritance flags.
    AceFlag,
    /// A right that is not a known code or a hexadecimal mask.
    Right,
    /// A malformed SID, or an alias this server does not know.
    Sid,
    /// More than [`MAX_ACES`] ACEs, or [`MAX_MEMBERS`] SIDs in a token.
    TooMany,
    /// A token's information that is not laid out as documented.
    Token,
    /// Memory for the ACL could not be allocated.
    OutOfMemory,
}

impl AclError {
    /// One line of English.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::Kind => "an ACL is user:NAME or sddl:SDDL",
            Self::User => "the user name is empty or holds a control character",
            Self::NotDacl => "SDDL: only a DACL is supported, as D:(A;;GX;;;SID)…",
            Self::DaclFlag => "SDDL: unknown DACL flag (P, AI and AR are supported)",
            Self::AceType => "SDDL: only allow (A) and deny (D) ACEs are supported",
            Self::AceShape => "SDDL: an ACE is (TYPE;FLAGS;RIGHTS;;;SID), without object GUIDs",
            Self::AceFlag => "SDDL: unknown ACE flag",
            Self::Right => "SDDL: unknown right (GA, GX, GW, GR or a 0x mask)",
            Self::Sid => "SDDL: malformed SID or unknown SID alias",
            Self::TooMany => "SDDL: too many ACEs, or a token with too many groups",
            Self::Token => "the caller's token could not be read",
            Self::OutOfMemory => "out of memory",
        }
    }
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

fn parse_sddl(text: &str) -> Result<Dacl, AclError> {
    let rest = text.trim().strip_prefix("D:").ok_or(AclError::NotDacl)?;
    let open = rest.find('(').unwrap_or(rest.len());
    let (flags, mut rest) = rest.split_at(open);
    let mut flags = flags;
    while !flags.is_empty() {
        flags = ["P", "AI", "AR"]
            .iter()
            .find_map(|f| flags.strip_prefix(f))
            .ok_or(AclError::DaclFlag)?;
    }
    let mut aces = Vec::new();
    while !rest.is_empty() {
        let body = rest.strip_prefix('(').ok_or(AclError::NotDacl)?;
        let close = body.find(')').ok_or(AclError::NotDacl)?;
        let (ace, after) = body.split_at(close);
        rest = after.get(1..).ok_or(AclError::NotDacl)?;
        if aces.len() >= MAX_ACES {
            return Err(AclError::TooMany);
        }
        aces.try_reserve(1).map_err(|_| AclError::OutOfMemory)?;
        aces.push(parse_ace(ace)?);
    }
    Ok(Dacl { aces })
}

fn parse_ace(text: &str) -> Result<Ace, AclError> {
    let mut fields = text.split(';');
    let mut next = || fields.next().ok_or(AclError::AceShape);
    let kind = match next()? {
        "A" => AceKind::Allow,
        "D" => AceKind::Deny,
        _ => return Err(AclError::AceType),
    };
    let mut flags = next()?;
    while !flags.is_empty() {
        flags = ["CI", "OI", "NP", "IO", "ID"]
            .iter()
            .find_map(|f| flags.strip_prefix(f))
            .ok_or(AclError::AceFlag)?;
    }
    let mask = map_generic(parse_rights(next()?)?);
    let (object, inherited) = (next()?, next()?);
    if !object.is_empty() || !inherited.is_empty() {
        return Err(AclError::AceShape);
    }
    let sid = Sid::parse(next()?)?;
    if fields.next().is_some() {
        return Err(AclError::AceShape);
    }
    Ok(Ace { kind, mask, sid })
}

/// Reads the rights field: two-letter codes one after the other, or one hexadecimal mask.
fn parse_rights(text: &str) -> Result<u32, AclError> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).map_err(|_| AclError::Right);
    }
    let mut mask = 0u32;
    let mut rest = text;
    while !rest.is_empty() {
        let (code, after) = rest.split_at_checked(2).ok_or(AclError::Right)?;
        mask |= match code {
            "GA" => GENERIC_ALL,
            "GX" => GENERIC_EXECUTE,
            "GW" => GENERIC_WRITE,
            "GR" => GENERIC_READ,
            _ => return Err(AclError::Right),
        };
        rest = after;
    }
    Ok(mask)
}

/// The generic bits of `mask` as khttp's specific rights ([`GENERIC_MAPPING`]); specific bits
/// other than [`REGISTER`] and [`DELEGATE`] mean nothing here and are dropped.
fn map_generic(mask: u32) -> u32 {
    let [read, write, execute, all] = GENERIC_MAPPING;
    let mut out = mask & (REGISTER | DELEGATE);
    for (bit, to) in [
        (GENERIC_READ, read),
        (GENERIC_WRITE, write),
        (GENERIC_EXECUTE, execute),
        (GENERIC_ALL, all),
    ] {
        if mask & bit != 0 {
            out |= to;
        }
    }
    out
}

#[cfg(test)]
mod tests;
