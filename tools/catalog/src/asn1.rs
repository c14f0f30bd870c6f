//! The ASN.1 of a catalog file, as `der` types.
//!
//! A catalog (`.cat`) is a PKCS#7 `SignedData` (`cms::signed_data::SignedData`) whose
//! encapsulated content, of type `szOID_CTL`, is a Certificate Trust List. Inside the
//! `SignedData` the CTL sits directly under the `[0] EXPLICIT` tag (PKCS#7's `content ANY`), not
//! in an OCTET STRING as CMS would put it; `cms` models `eContent` as `Any`, which holds either.
//!
//! ```text
//! CertificateTrustList ::= SEQUENCE {            -- CTL_INFO
//!   version           CTLVersion DEFAULT v1,
//!   subjectUsage      SEQUENCE OF OBJECT IDENTIFIER,   -- { szOID_CATALOG_LIST }
//!   listIdentifier    OCTET STRING OPTIONAL,
//!   sequenceNumber    INTEGER OPTIONAL,
//!   ctlThisUpdate     Time,
//!   ctlNextUpdate     Time OPTIONAL,
//!   subjectAlgorithm  AlgorithmIdentifier,          -- szOID_CATALOG_LIST_MEMBER2, NULL
//!   trustedSubjects   SEQUENCE OF TrustedSubject OPTIONAL,
//!   ctlExtensions     [0] EXPLICIT Extensions OPTIONAL }  -- the catalog's own attributes
//! TrustedSubject ::= SEQUENCE {                  -- CTL_ENTRY: one catalog member
//!   subjectIdentifier OCTET STRING,                 -- the member's tag (v2: the hash's bytes)
//!   subjectAttributes SET OF Attribute OPTIONAL }
//! CatNameValue ::= SEQUENCE { tag BMPString, flags INTEGER, value OCTET STRING }  -- UTF-16LE, NUL
//! SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue,
//!                                       messageDigest DigestInfo }
//! SpcPeImageData ::= SEQUENCE { flags BIT STRING, file [0] EXPLICIT SpcLink OPTIONAL }
//! SpcLink ::= CHOICE { ..., file [2] EXPLICIT SpcString }
//! SpcString ::= CHOICE { unicode [0] IMPLICIT BMPString, ... }
//! ```
//!
//! Sources (read for facts; no code taken): Microsoft's `CTL_INFO`, `CTL_ENTRY` and `CTL_USAGE`
//! (wincrypt.h), `SPC_INDIRECT_DATA_CONTENT` (wintrust.h), `CryptCATPutAttrInfo` and
//! `CRYPTCATMEMBER` (mscat.h) pages on learn.microsoft.com; the MS-CAESO ASN.1 of
//! `CertificateTrustList` (as quoted by the `windows-ctl` crate's documentation); osslsigncode's
//! `osslsigncode.h`/`osslsigncode.c` (its `MsCtlContent`, `CatalogInfo`, `CatalogAuthAttr` and
//! `CatNameValueContent` templates) and `cat.c`; and the makecat-written catalog in
//! osslsigncode's `tests/files/unsigned.cat` (catalog version 2, SHA-256), whose layout this
//! writer follows field for field. `tools/catalog/README.md` has the details.

use der::asn1::{Any, BitString, BmpString, ObjectIdentifier, OctetString};
use der::{Choice, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attributes;
use x509_cert::ext::Extensions;
use x509_cert::time::Time;

/// PKCS#7 `signedData` (RFC 2315 / RFC 5652).
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `szOID_CTL`: the content type of a Certificate Trust List.
pub(crate) const SZ_OID_CTL: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.10.1");
/// `szOID_CATALOG_LIST`: the CTL's subject usage when the CTL is a catalog.
pub(crate) const SZ_OID_CATALOG_LIST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.12.1.1");
/// `szOID_CATALOG_LIST_MEMBER`: subject algorithm of a version-1 (SHA-1) catalog.
pub(crate) const SZ_OID_CATALOG_LIST_MEMBER: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.12.1.2");
/// `szOID_CATALOG_LIST_MEMBER2`: subject algorithm of a version-2 (SHA-256) catalog.
pub(crate) const SZ_OID_CATALOG_LIST_MEMBER2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.12.1.3");
/// `CAT_NAMEVALUE_OBJID`: a name/value attribute ("File", "OSAttr").
pub(crate) const CAT_NAMEVALUE_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.12.2.1");
/// `CAT_MEMBERINFO2_OBJID`: the member information of a version-2 catalog.
pub(crate) const CAT_MEMBERINFO2_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.12.2.3");
/// `SPC_INDIRECT_DATA_OBJID`: the member's hash, as in an Authenticode signature.
pub(crate) const SPC_INDIRECT_DATA_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATA_OBJID`: the hash is a PE image's Authenticode hash.
pub(crate) const SPC_PE_IMAGE_DATA_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_CAB_DATA_OBJID`: used by makecat for flat-hashed members (the file's bytes, hashed).
pub(crate) const SPC_CAB_DATA_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.25");
/// `id-sha256` (NIST).
pub(crate) const ID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// `CRYPTCAT_ATTR_AUTHENTICATED | CRYPTCAT_ATTR_DATAASCII | CRYPTCAT_ATTR_NAMEASCII`
/// (0x10000000 | 0x00010000 | 0x00000001, mscat.h): what makecat stores for "File" and "OSAttr".
pub(crate) const NAMEVALUE_FLAGS: u32 = 0x1001_0001;

fn ctl_v1() -> u8 {
    0
}

/// `CertificateTrustList` (the encoded `CTL_INFO`). `version` is `DEFAULT v1` (v1 = 0) and is
/// therefore never written.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct CertificateTrustList {
    #[asn1(default = "ctl_v1")]
    pub(crate) version: u8,
    pub(crate) subject_usage: Vec<ObjectIdentifier>,
    #[asn1(optional = "true")]
    pub(crate) list_identifier: Option<OctetString>,
    #[asn1(optional = "true")]
    pub(crate) sequence_number: Option<der::asn1::Int>,
    pub(crate) this_update: Time,
    #[asn1(optional = "true")]
    pub(crate) next_update: Option<Time>,
    pub(crate) subject_algorithm: AlgorithmIdentifierOwned,
    #[asn1(optional = "true")]
    pub(crate) trusted_subjects: Option<Vec<TrustedSubject>>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(crate) ctl_extensions: Option<Extensions>,
}

/// `TrustedSubject` (an encoded `CTL_ENTRY`): one catalog member.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct TrustedSubject {
    pub(crate) subject_identifier: OctetString,
    #[asn1(optional = "true")]
    pub(crate) subject_attributes: Option<Attributes>,
}

/// The value of a `CAT_NAMEVALUE_OBJID` attribute: a name (BMPString), the `CRYPTCAT_ATTR_*`
/// flags, and the value as UTF-16LE with its terminating NUL.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct CatNameValue {
    pub(crate) tag: BmpString,
    pub(crate) flags: u32,
    pub(crate) value: OctetString,
}

/// `SpcIndirectDataContent`: what was hashed, and the hash.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct SpcIndirectDataContent {
    pub(crate) data: SpcAttributeTypeAndOptionalValue,
    pub(crate) message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct SpcAttributeTypeAndOptionalValue {
    pub(crate) value_type: ObjectIdentifier,
    #[asn1(optional = "true")]
    pub(crate) value: Option<Any>,
}

/// `DigestInfo` (PKCS#1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct DigestInfo {
    pub(crate) digest_algorithm: AlgorithmIdentifierOwned,
    pub(crate) digest: OctetString,
}

/// `SpcPeImageData`: which parts of a PE image the hash covers (the flags are not used by
/// Windows), and the obsolete file link.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct SpcPeImageData {
    pub(crate) flags: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(crate) file: Option<SpcLink>,
}

/// `SpcLink`: only the `file` alternative, the one catalogs use.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub(crate) enum SpcLink {
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    File(SpcString),
}

/// `SpcString`: only the `unicode` alternative.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub(crate) enum SpcString {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Unicode(BmpString),
}
