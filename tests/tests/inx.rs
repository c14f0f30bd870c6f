//! The INX lint that runs on Linux (docs/driver-facts.md, "INF and test signing"): InfVerif
//! itself is Windows-only.

use std::collections::BTreeMap;

fn inx() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../inf/khttp.inx");
    std::fs::read_to_string(path).expect("inf/khttp.inx")
}

/// Sections (lower-cased names) to their lines, comments and blanks removed.
fn sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_ascii_lowercase();
            out.entry(current.clone()).or_default();
        } else {
            out.entry(current.clone())
                .or_default()
                .push(line.to_string());
        }
    }
    out
}

fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

#[test]
fn inx_is_a_primitive_driver_inf() {
    let text = inx();
    assert!(text.is_ascii(), "ASCII only");
    assert!(text.contains("\r\n"), "CRLF line endings");
    let s = sections(&text);
    let version = &s["version"];
    assert_eq!(value(version, "Signature"), Some("\"$WINDOWS NT$\""));
    assert_eq!(value(version, "Class"), Some("System"));
    assert_eq!(
        value(version, "ClassGuid"),
        Some("{4d36e97d-e325-11ce-bfc1-08002be10318}")
    );
    assert!(value(version, "Provider").is_some());
    assert_eq!(value(version, "CatalogFile"), Some("khttp.cat"));
    assert!(value(version, "DriverVer").is_some());
    assert!(
        !s.contains_key("manufacturer"),
        "a primitive INF has no [Manufacturer]"
    );
    assert!(
        !s.contains_key("defaultinstall"),
        "[DefaultInstall] must be architecture-decorated"
    );
    assert!(s.contains_key("defaultinstall.nt$arch$"));
    assert!(
        !s.contains_key("defaultuninstall")
            || s["defaultuninstall"]
                .iter()
                .any(|l| l.contains("LegacyUninstall")),
        "no [DefaultUninstall] without LegacyUninstall=1"
    );
    // File and service names are the package name.
    assert_eq!(
        s["sourcedisksfiles"][0].split('=').next().unwrap().trim(),
        "khttp.sys"
    );
    let services = &s["defaultinstall.nt$arch$.services"];
    let add = value(services, "AddService").unwrap();
    let parts: Vec<&str> = add.split(',').map(str::trim).collect();
    assert_eq!(parts[0], "khttp");
    assert_eq!(
        parts[1], "0x00000000",
        "no SPSVCINST_ASSOCSERVICE: there is no device"
    );
    let svc = &s[&parts[2].to_ascii_lowercase()];
    assert_eq!(value(svc, "ServiceType"), Some("1"), "kernel driver");
    assert_eq!(value(svc, "StartType"), Some("3"), "demand start");
    assert_eq!(value(svc, "ServiceBinary"), Some(r"%13%\khttp.sys"));
    // Every %string% token used is defined.
    let strings = &s["strings"];
    for token in text.split('%').skip(1).step_by(2) {
        if !token.is_empty() && token != "13" && !token.contains(char::is_whitespace) {
            assert!(
                value(strings, token).is_some(),
                "%{token}% is not in [Strings]"
            );
        }
    }
}
