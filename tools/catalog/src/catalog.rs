//! Writing a version-2 (SHA-256) catalog, and reading one back.
//!
//! Layout, as makecat writes a version-2 catalog (osslsigncode's `tests/files/unsigned.cat`,
//! dumped with `openssl asn1parse`) and as the CTL documentation describes it:
//!
//! - `ContentInfo { signedData, SignedData { version 1, digestAlgorithms {}, encapContentInfo {
//!   szOID_CTL, [0] CTL }, signerInfos {} } }`: unsigned, as inf2cat leaves it for signtool (here
//!   osslsigncode) to sign;
//! - the CTL: subject usage `{ szOID_CATALOG_LIST }`, a 16-byte list identifier, `ThisUpdate` as
//!   UTCTime, subject algorithm `{ szOID_CATALOG_LIST_MEMBER2, NULL }` (catalog version 2), the
//!   members sorted by identifier, and the catalog's own attributes as `[0]` extensions;
//! - a member: identifier = the SHA-256 hash's 32 bytes (in a version-2 catalog the member's
//!   tag, the hash in uppercase hex, is stored as those bytes; a version-1 catalog stores the hex
//!   text in UTF-16LE); attributes, a DER SET (so sorted by encoding):
//!   `CAT_MEMBERINFO2 { [0] }` for a PE image, `{ [2] }` for a flat file (the values makecat
//!   writes; their meaning is not documented); `CAT_NAMEVALUE { "File", 0x10010001,
//!   "<name>\0" }`; `CAT_NAMEVALUE { "OSAttr", 0x10010001, "2:10.0\0" }`; and
//!   `SPC_INDIRECT_DATA { SPC_PE_IMAGE_DATA { flags, [0] file "<<<Obsolete>>>" } | SPC_CAB_DATA
//!   { [2] file "" }, { sha256, NULL }, hash }`;
//! - the catalog attribute: `Extension { CAT_NAMEVALUE, OCTET STRING { "OSAttr", 0x10010001,
//!   "2:10.0\0" } }`, the makecat documentation's `CATATTR1=0x10010001:OSAttr:2:6.0` with
//!   Windows 10's version.

use crate::asn1::{
    CAT_MEMBERINFO2_OBJID, CAT_NAMEVALUE_OBJID, CatNameValue, CertificateTrustList, DigestInfo,
    ID_SHA256, ID_SIGNED_DATA, NAMEVALUE_FLAGS, SPC_CAB_DATA_OBJID, SPC_INDIRECT_DATA_OBJID,
    SPC_PE_IMAGE_DATA_OBJID, SZ_OID_CATALOG_LIST, SZ_OID_CATALOG_LIST_MEMBER,
    SZ_OID_CATALOG_LIST_MEMBER2, SZ_OID_CTL, SpcAttributeTypeAndOptionalValue,
    SpcIndirectDataContent, SpcLink, SpcPeImageData, SpcString, TrustedSubject,
};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerInfos};
use der::asn1::{Any, BitString, BmpString, Null, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode, Tag, TagNumber};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::time::Time;

/// The operating system the package is for, in the form of makecat's and inf2cat's `OSAttr`
/// attribute (`2:<major>.<minor>`; inf2cat's `/os:10_X64`, what the WDK flow passes on x64).
pub(crate) const OS_ATTR: &str = "2:10.0";

/// How a member was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A PE image: the Authenticode image hash.
    Pe,
    /// Any other file: the hash of its bytes.
    Flat,
}

/// A catalog member: the file's name in the package, how it was hashed, and the SHA-256 hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) digest: [u8; 32],
}

impl Member {
    /// The member's tag: its hash in uppercase hex.
    pub(crate) fn tag(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02X}")).collect()
    }
}

/// UTF-16LE with a terminating NUL, as `CAT_NAMEVALUE` values are stored.
fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn from_utf16z(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

fn name_value(name: &str, value: &str) -> der::Result<CatNameValue> {
    Ok(CatNameValue {
        tag: BmpString::from_utf8(name)?,
        flags: NAMEVALUE_FLAGS,
        value: OctetString::new(utf16z(value))?,
    })
}

fn attribute(oid: der::asn1::ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

fn sha256_algorithm() -> der::Result<AlgorithmIdentifierOwned> {
    Ok(AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: Some(Any::encode_from(&Null)?),
    })
}

/// `SpcIndirectDataContent` for a member.
fn indirect_data(member: &Member) -> der::Result<SpcIndirectDataContent> {
    let data = match member.kind {
        Kind::Pe => SpcAttributeTypeAndOptionalValue {
            value_type: SPC_PE_IMAGE_DATA_OBJID,
            // includeResources and includeImportAddressTable (bits 0 and 2), as makecat writes.
            value: Some(Any::encode_from(&SpcPeImageData {
                flags: BitString::new(5, [0xa0])?,
                file: Some(SpcLink::File(SpcString::Unicode(BmpString::from_utf8(
                    "<<<Obsolete>>>",
                )?))),
            })?),
        },
        Kind::Flat => SpcAttributeTypeAndOptionalValue {
            value_type: SPC_CAB_DATA_OBJID,
            value: Some(Any::encode_from(&SpcLink::File(SpcString::Unicode(
                BmpString::from_utf8("")?,
            )))?),
        },
    };
    Ok(SpcIndirectDataContent {
        data,
        message_digest: DigestInfo {
            digest_algorithm: sha256_algorithm()?,
            digest: OctetString::new(member.digest.to_vec())?,
        },
    })
}

fn trusted_subject(member: &Member) -> der::Result<TrustedSubject> {
    let info = match member.kind {
        Kind::Pe => TagNumber::N0,
        Kind::Flat => TagNumber::N2,
    };
    let info = Any::new(
        Tag::ContextSpecific {
            constructed: false,
            number: info,
        },
        Vec::new(),
    )?;
    let attributes = vec![
        attribute(CAT_MEMBERINFO2_OBJID, info)?,
        attribute(
            CAT_NAMEVALUE_OBJID,
            Any::encode_from(&name_value("File", &member.name)?)?,
        )?,
        attribute(
            CAT_NAMEVALUE_OBJID,
            Any::encode_from(&name_value("OSAttr", OS_ATTR)?)?,
        )?,
        attribute(
            SPC_INDIRECT_DATA_OBJID,
            Any::encode_from(&indirect_data(member)?)?,
        )?,
    ];
    Ok(TrustedSubject {
        subject_identifier: OctetString::new(member.digest.to_vec())?,
        subject_attributes: Some(SetOfVec::try_from(attributes)?),
    })
}

/// The DER of an unsigned catalog listing `members`, dated `this_update`.
pub(crate) fn write(members: &[Member], this_update: UtcTime) -> der::Result<Vec<u8>> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by_key(|m| m.digest);
    // The list identifier only has to be unique; makecat uses a random GUID. This one is the
    // first 16 bytes of the SHA-256 of the members' hashes, so that the same files give the
    // same catalog.
    let mut id = Sha256::new();
    for m in &sorted {
        id.update(m.digest);
    }
    let ctl = CertificateTrustList {
        version: 0,
        subject_usage: vec![SZ_OID_CATALOG_LIST],
        list_identifier: Some(OctetString::new(id.finalize()[..16].to_vec())?),
        sequence_number: None,
        this_update: Time::UtcTime(this_update),
        next_update: None,
        subject_algorithm: AlgorithmIdentifierOwned {
            oid: SZ_OID_CATALOG_LIST_MEMBER2,
            parameters: Some(Any::encode_from(&Null)?),
        },
        trusted_subjects: Some(
            sorted
                .iter()
                .map(|m| trusted_subject(m))
                .collect::<der::Result<_>>()?,
        ),
        ctl_extensions: Some(vec![Extension {
            extn_id: CAT_NAMEVALUE_OBJID,
            critical: false,
            extn_value: OctetString::new(name_value("OSAttr", OS_ATTR)?.to_der()?)?,
        }]),
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: SZ_OID_CTL,
            econtent: Some(Any::encode_from(&ctl)?),
        },
        certificates: None,
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed)?,
    }
    .to_der()
}

/// What [`read()`] finds in a catalog.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) ctl: CertificateTrustList,
    pub(crate) members: Vec<Member>,
    /// Whether the `SignedData` carries a signature (osslsigncode's or signtool's).
    pub(crate) signed: bool,
}

fn member_of(subject: &TrustedSubject) -> Result<Member, String> {
    let mut name = None;
    let mut found = None;
    for attr in subject.subject_attributes.iter().flat_map(|a| a.iter()) {
        let Some(value) = attr.values.iter().next() else {
            continue;
        };
        if attr.oid == CAT_NAMEVALUE_OBJID {
            let nv: CatNameValue = value.decode_as().map_err(|e| e.to_string())?;
            if nv.tag.to_string() == "File" {
                name = from_utf16z(nv.value.as_bytes());
            }
        } else if attr.oid == SPC_INDIRECT_DATA_OBJID {
            let idc: SpcIndirectDataContent = value.decode_as().map_err(|e| e.to_string())?;
            let kind = match idc.data.value_type {
                t if t == SPC_PE_IMAGE_DATA_OBJID => Kind::Pe,
                _ => Kind::Flat,
            };
            if idc.message_digest.digest_algorithm.oid != ID_SHA256 {
                return Err("a member's hash is not SHA-256".to_owned());
            }
            let digest = <[u8; 32]>::try_from(idc.message_digest.digest.as_bytes())
                .map_err(|_| "a member's SHA-256 hash is not 32 bytes long".to_owned())?;
            found = Some((kind, digest));
        }
    }
    let (kind, digest) = found.ok_or("a member has no SPC_INDIRECT_DATA attribute")?;
    if subject.subject_identifier.as_bytes() != digest {
        return Err("a member's identifier is not its hash".to_owned());
    }
    Ok(Member {
        name: name.ok_or("a member has no File attribute")?,
        kind,
        digest,
    })
}

/// Reads a catalog written by [`write()`] (signed or not) back with the same types.
pub(crate) fn read(bytes: &[u8]) -> Result<Parsed, String> {
    let bad = |what: &str, e: der::Error| format!("not a catalog: {what}: {e}");
    let info = ContentInfo::from_der(bytes).map_err(|e| bad("ContentInfo", e))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err("not a catalog: not a PKCS#7 SignedData".to_owned());
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| bad("SignedData", e))?;
    let encap = signed.encap_content_info;
    if encap.econtent_type != SZ_OID_CTL {
        return Err("not a catalog: the content is not a certificate trust list".to_owned());
    }
    let content = encap.econtent.ok_or("not a catalog: the CTL is missing")?;
    let ctl: CertificateTrustList = content.decode_as().map_err(|e| bad("CTL", e))?;
    if ctl.subject_usage != [SZ_OID_CATALOG_LIST] {
        return Err("not a catalog: the CTL's usage is not szOID_CATALOG_LIST".to_owned());
    }
    if ctl.subject_algorithm.oid == SZ_OID_CATALOG_LIST_MEMBER {
        return Err("a version-1 (SHA-1) catalog: only version 2 is read".to_owned());
    }
    if ctl.subject_algorithm.oid != SZ_OID_CATALOG_LIST_MEMBER2 {
        return Err("not a catalog: unknown member algorithm".to_owned());
    }
    let members = ctl
        .trusted_subjects
        .iter()
        .flatten()
        .map(member_of)
        .collect::<Result<_, _>>()?;
    Ok(Parsed {
        ctl,
        members,
        signed: !signed.signer_infos.0.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use der::Tagged;

    fn members() -> Vec<Member> {
        let inf = b"[Version]\r\nCatalogFile = khttp.cat\r\n";
        vec![
            Member {
                name: "khttp.sys".to_owned(),
                kind: Kind::Pe,
                digest: crate::pe::authenticode_sha256(&crate::pe::tests::tiny_pe()).expect("hash"),
            },
            Member {
                name: "khttp.inf".to_owned(),
                kind: Kind::Flat,
                digest: Sha256::digest(inf).into(),
            },
        ]
    }

    fn when() -> UtcTime {
        UtcTime::from_unix_duration(Duration::from_secs(1_767_225_600)).expect("2026-01-01")
    }

    #[test]
    fn what_is_written_reads_back() {
        let members = members();
        let der = write(&members, when()).expect("write");
        let parsed = read(&der).expect("read");
        assert!(!parsed.signed);
        let mut expected = members.clone();
        expected.sort_by_key(|m| m.digest);
        assert_eq!(parsed.members, expected);
        assert_eq!(parsed.ctl.this_update, Time::UtcTime(when()));
        assert_eq!(parsed.ctl.version, 0);
        assert_eq!(
            parsed
                .ctl
                .list_identifier
                .as_ref()
                .map(|i| i.as_bytes().len()),
            Some(16)
        );
        let ext = &parsed
            .ctl
            .ctl_extensions
            .as_ref()
            .expect("catalog attributes")[0];
        assert_eq!(ext.extn_id, CAT_NAMEVALUE_OBJID);
        let os = CatNameValue::from_der(ext.extn_value.as_bytes()).expect("name/value");
        assert_eq!(os.tag.to_string(), "OSAttr");
        assert_eq!(from_utf16z(os.value.as_bytes()).as_deref(), Some(OS_ATTR));
        // Deterministic: the same files give the same bytes.
        assert_eq!(write(&members, when()).expect("write"), der);
    }

    /// The member hashes in the catalog are the files' hashes: flat SHA-256 for the INF, and
    /// for the PE image the Authenticode hash, which differs from the flat one.
    #[test]
    fn member_hashes_are_the_files_hashes() {
        let pe = crate::pe::tests::tiny_pe();
        let parsed = read(&write(&members(), when()).expect("write")).expect("read");
        let sys = parsed
            .members
            .iter()
            .find(|m| m.name == "khttp.sys")
            .expect("sys");
        assert_eq!(sys.kind, Kind::Pe);
        assert_eq!(sys.tag(), crate::pe::tests::TINY_PE_SHA256);
        assert_ne!(sys.digest, <[u8; 32]>::from(Sha256::digest(&pe)));
        let inf = parsed
            .members
            .iter()
            .find(|m| m.name == "khttp.inf")
            .expect("inf");
        assert_eq!(inf.kind, Kind::Flat);
        // `printf '[Version]\r\nCatalogFile = khttp.cat\r\n' | sha256sum`
        assert_eq!(
            inf.tag(),
            "44C3593F29011B6F6BA4E23DE19A8DDA125CFF4907CE4A51FAD0747C2F300115"
        );
    }

    /// The structure field by field, as makecat lays it out.
    #[test]
    fn structure_follows_makecat() {
        let der = write(&members(), when()).expect("write");
        let ctl = read(&der).expect("read").ctl;
        assert_eq!(ctl.subject_usage, vec![SZ_OID_CATALOG_LIST]);
        assert_eq!(ctl.subject_algorithm.oid, SZ_OID_CATALOG_LIST_MEMBER2);
        assert_ne!(ctl.subject_algorithm.oid, SZ_OID_CATALOG_LIST_MEMBER);
        assert_eq!(ctl.sequence_number, None);
        let subjects = ctl.trusted_subjects.expect("members");
        let ids: Vec<&[u8]> = subjects
            .iter()
            .map(|s| s.subject_identifier.as_bytes())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "members sorted by identifier");
        for subject in &subjects {
            let attrs = subject.subject_attributes.as_ref().expect("attributes");
            let oids: Vec<String> = attrs.iter().map(|a| a.oid.to_string()).collect();
            assert_eq!(
                oids,
                [
                    "1.3.6.1.4.1.311.12.2.3",
                    "1.3.6.1.4.1.311.12.2.1",
                    "1.3.6.1.4.1.311.12.2.1",
                    "1.3.6.1.4.1.311.2.1.4"
                ],
                "DER SET order, as makecat's"
            );
            let names: Vec<String> = attrs
                .iter()
                .filter(|a| a.oid == CAT_NAMEVALUE_OBJID)
                .map(|a| {
                    let nv: CatNameValue =
                        a.values.iter().next().expect("v").decode_as().expect("nv");
                    assert_eq!(nv.flags, NAMEVALUE_FLAGS);
                    nv.tag.to_string()
                })
                .collect();
            assert!(names.contains(&"File".to_owned()) && names.contains(&"OSAttr".to_owned()));
        }
        // The envelope: unsigned SignedData v1 with no digest algorithms and no signers.
        let info = ContentInfo::from_der(&der).expect("ContentInfo");
        let sd: SignedData = info.content.decode_as().expect("SignedData");
        assert_eq!(sd.version, CmsVersion::V1);
        assert!(sd.digest_algorithms.is_empty() && sd.signer_infos.0.is_empty());
        assert!(sd.certificates.is_none());
        // The CTL sits directly under [0] (PKCS#7), not in an OCTET STRING.
        assert_eq!(
            sd.encap_content_info.econtent.expect("CTL").tag(),
            Tag::Sequence
        );
    }

    #[test]
    fn garbage_is_not_a_catalog() {
        assert!(read(b"").is_err());
        assert!(read(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        let e = read(
            &ContentInfo {
                content_type: SZ_OID_CTL,
                content: Any::encode_from(&Null).expect("null"),
            }
            .to_der()
            .expect("der"),
        )
        .expect_err("not SignedData");
        assert!(e.contains("SignedData"), "{e}");
    }
}
