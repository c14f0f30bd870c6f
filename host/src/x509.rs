//! What `sslcert show` prints about a certificate: its names (subjectAltName's DNS names and
//! IP addresses) and its expiry (`notAfter`), read from the DER (RFC 5280 §4.1, §4.2.1.6; X.690
//! for the encoding).
//!
//! Written here rather than taken from a crate because only these two fields are read, and
//! x509-parser would add about six crates (nom, der-parser, asn1-rs and theirs) for them. It reads
//! only certificates that rustls has already accepted as parseable at binding, and any fault
//! gives `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A certificate's names and expiry.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct About {
    /// DNS names and IP addresses, in the order the certificate gives them.
    pub(crate) names: Vec<String>,
    /// `notAfter`, in seconds since the Unix epoch.
    pub(crate) not_after: Option<u64>,
}

/// One DER value at a time.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next value's tag and contents (low tag numbers only, definite lengths).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, rest) = rest.split_at_checked(n)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, rest)
        };
        let (value, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((tag, value))
    }

    /// The next value, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next().filter(|(t, _)| *t == tag).map(|(_, v)| v)
    }
}

const SEQUENCE: u8 = 0x30;
/// id-ce-subjectAltName, 2.5.29.17.
const SAN: &[u8] = &[0x55, 0x1D, 0x11];

/// Reads `der`'s names and expiry; `None` if it is not a certificate.
pub(crate) fn read(der: &[u8]) -> Option<About> {
    let cert = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    if tbs.next()?.0 == 0xA0 {
        let _serial = tbs.next()?; // after the version
    }
    let _signature = tbs.expect(SEQUENCE)?;
    let _issuer = tbs.expect(SEQUENCE)?;
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    let _not_before = validity.next()?;
    let not_after = validity.next().and_then(|(tag, v)| time(tag, v));
    let _subject = tbs.expect(SEQUENCE)?;
    let _key = tbs.expect(SEQUENCE)?;
    let mut names = Vec::new();
    while let Some((tag, value)) = tbs.next() {
        if tag == 0xA3 {
            names = san(value).unwrap_or_default();
        }
    }
    Some(About { names, not_after })
}

/// The subjectAltName's DNS names and addresses in `[3] Extensions`.
fn san(extensions: &[u8]) -> Option<Vec<String>> {
    let mut list = Der(Der(extensions).expect(SEQUENCE)?);
    while let Some((_, ext)) = list.next() {
        let mut ext = Der(ext);
        if ext.expect(0x06)? != SAN {
            continue;
        }
        let mut value = ext.next()?;
        if value.0 == 0x01 {
            value = ext.next()?; // `critical`
        }
        let mut names = Der(Der(value.1).expect(SEQUENCE)?);
        let mut out = Vec::new();
        while let Some((tag, v)) = names.next() {
            match tag {
                0x82 => out.push(String::from_utf8_lossy(v).into_owned()),
                0x87 => {
                    let ip = match v.len() {
                        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?)),
                        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)),
                        _ => continue,
                    };
                    out.push(ip.to_string());
                }
                _ => {}
            }
        }
        return Some(out);
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix
/// seconds (RFC 5280 §4.1.2.5).
fn time(tag: u8, v: &[u8]) -> Option<u64> {
    let digits = v.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| {
        s.iter().try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(digits.get(..2)?)?;
            (
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                digits.get(2..)?,
            )
        }
        (0x18, 14) => (num(digits.get(..4)?)?, digits.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| num(rest.get(i..i + 2)?);
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    // Days from the civil date (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// A certificate's serial number (the contents of its DER INTEGER).
pub(crate) fn serial(der: &[u8]) -> Option<&[u8]> {
    let cert = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    let (tag, value) = tbs.next()?;
    if tag == 0xA0 {
        return tbs.expect(0x02); // after the version
    }
    (tag == 0x02).then_some(value)
}

/// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1.
const OCSP_BASIC: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// Checks an OCSP response before it is stapled (RFC 6960 §4.2.1): it parses, its status is
/// successful, it is a basic response, and it says "good" for the certificate of serial
/// `serial`. The responder's signature is not checked here: clients check it.
///
/// # Errors
/// One line naming the fault.
pub(crate) fn check_ocsp(response: &[u8], serial: &[u8]) -> Result<(), &'static str> {
    const BAD: &str = "the OCSP response does not parse (an OCSPResponse in DER, RFC 6960)";
    let mut r = Der(Der(response).expect(SEQUENCE).ok_or(BAD)?);
    if r.expect(0x0A).ok_or(BAD)? != [0] {
        return Err("the OCSP response's status is not \"successful\"");
    }
    let mut bytes = Der(Der(r.expect(0xA0).ok_or(BAD)?)
        .expect(SEQUENCE)
        .ok_or(BAD)?);
    if bytes.expect(0x06).ok_or(BAD)? != OCSP_BASIC {
        return Err("the OCSP response is not a basic OCSP response");
    }
    let basic = bytes.expect(0x04).ok_or(BAD)?;
    let mut basic = Der(Der(basic).expect(SEQUENCE).ok_or(BAD)?);
    let mut tbs = Der(basic.expect(SEQUENCE).ok_or(BAD)?);
    if tbs.next().ok_or(BAD)?.0 == 0xA0 {
        let _responder = tbs.next().ok_or(BAD)?; // after the version
    }
    let _produced_at = tbs.expect(0x18).ok_or(BAD)?;
    let mut responses = Der(tbs.expect(SEQUENCE).ok_or(BAD)?);
    while let Some((_, single)) = responses.next() {
        let mut single = Der(single);
        let mut id = Der(single.expect(SEQUENCE).ok_or(BAD)?);
        let _hash_algorithm = id.expect(SEQUENCE).ok_or(BAD)?;
        let _issuer_name_hash = id.expect(0x04).ok_or(BAD)?;
        let _issuer_key_hash = id.expect(0x04).ok_or(BAD)?;
        if id.expect(0x02).ok_or(BAD)? != serial {
            continue;
        }
        return match single.next().map(|(tag, _)| tag) {
            Some(0x80) => Ok(()),
            Some(0xA1) => Err("the OCSP response says the certificate is revoked"),
            _ => Err("the OCSP response does not say the certificate is good"),
        };
    }
    Err("the OCSP response is not for this certificate (no answer for its serial number)")
}

#[cfg(test)]
mod tests {
    use super::{read, time};

    #[test]
    fn times_read_as_unix_seconds() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x18, b"20271207184811Z"), Some(1_828_205_291));
        assert_eq!(time(0x18, b"20271207184811"), None);
        assert_eq!(time(0x17, b"2712071848Z"), None);
    }

    #[test]
    fn a_generated_certificate_reads_back() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 2, 3);
        let cert = params.self_signed(&key).unwrap();
        let about = read(cert.der()).unwrap();
        assert_eq!(about.names, ["localhost", "127.0.0.1"]);
        assert_eq!(about.not_after, Some(1_927_843_200));
        for cut in 0..cert.der().len() {
            let _ = read(&cert.der()[..cut]);
        }
        assert_eq!(read(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
