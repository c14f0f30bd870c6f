//! The checks inf2cat makes of a package's INF that matter to its catalog: the INF is stamped,
//! its `CatalogFile=` names the catalog being written, and every file it copies from the
//! package is a member.
//!
//! INF syntax (learn.microsoft.com, "General Syntax Rules for INF Files", "INF Version
//! Section", "INF SourceDisksFiles Section"): `[section]` headers, `key = value` lines, `;`
//! starts a comment outside double quotes, names are case-insensitive. `CatalogFile` may be
//! decorated (`CatalogFile.NTamd64 = ...`); `SourceDisksFiles` too (`[SourceDisksFiles.amd64]`).
//! Only ASCII/UTF-8 INFs are read here (a UTF-16 INF is an error), as `inf/khttp.inx` is ASCII.

/// One `key = value` line (or a bare `value` line) of a section, comments removed.
struct Line<'a> {
    section: &'a str,
    key: Option<&'a str>,
    value: &'a str,
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut section = "";
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim();
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => (None, line),
        };
        out.push(Line {
            section,
            key,
            value,
        });
    }
    out
}

fn is_decorated(name: &str, base: &str) -> bool {
    name.eq_ignore_ascii_case(base)
        || name.len() > base.len()
            && name[..base.len()].eq_ignore_ascii_case(base)
            && name.as_bytes()[base.len()] == b'.'
}

/// Checks the INF `text` (named `inf` in messages) against the catalog's file name and its
/// members' file names.
pub(crate) fn check(inf: &str, text: &str, catalog: &str, members: &[&str]) -> Result<(), String> {
    if text.contains("$ARCH$") {
        return Err(format!(
            "{inf} still has $ARCH$ in it: stamp it first (stampinf's job)"
        ));
    }
    let lines = lines(text);
    let catalog_files: Vec<&str> = lines
        .iter()
        .filter(|l| l.section.eq_ignore_ascii_case("Version"))
        .filter(|l| l.key.is_some_and(|k| is_decorated(k, "CatalogFile")))
        .map(|l| l.value.trim_matches('"'))
        .collect();
    if catalog_files.is_empty() {
        return Err(format!("{inf} has no CatalogFile= line in [Version]"));
    }
    if let Some(other) = catalog_files
        .iter()
        .find(|c| !c.eq_ignore_ascii_case(catalog))
    {
        return Err(format!("{inf} names the catalog {other}, not {catalog}"));
    }
    for line in lines
        .iter()
        .filter(|l| is_decorated(l.section, "SourceDisksFiles"))
    {
        let file = line.key.unwrap_or(line.value).trim_matches('"');
        if !members.iter().any(|m| m.eq_ignore_ascii_case(file)) {
            return Err(format!(
                "{inf} lists {file} in [{}], but it is not a catalog member",
                line.section
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: &str = "; comment\n[Version]\nSignature = \"$WINDOWS NT$\"\nCatalogFile = khttp.cat ; x\n\
                       [SourceDisksFiles]\nkhttp.sys = 1,,\n[DefaultInstall.NTamd64]\nCopyFiles = F\n";

    #[test]
    fn a_stamped_inf_that_names_the_catalog_passes() {
        check("khttp.inf", INF, "khttp.cat", &["khttp.sys", "khttp.inf"]).expect("ok");
        check("khttp.inf", INF, "KHTTP.CAT", &["KHTTP.SYS"]).expect("names are case-insensitive");
    }

    #[test]
    fn the_checks_fail_with_a_reason() {
        let unstamped = INF.replace("NTamd64", "NT$ARCH$");
        let e = check("k.inf", &unstamped, "khttp.cat", &["khttp.sys"]).expect_err("unstamped");
        assert!(e.contains("$ARCH$"), "{e}");
        let e = check("k.inf", INF, "other.cat", &["khttp.sys"]).expect_err("other catalog");
        assert!(
            e.contains("names the catalog khttp.cat, not other.cat"),
            "{e}"
        );
        let e = check("k.inf", INF, "khttp.cat", &["khttp.inf"]).expect_err("missing member");
        assert!(e.contains("khttp.sys"), "{e}");
        let none = INF.replace("CatalogFile = khttp.cat", "");
        let e = check("k.inf", &none, "khttp.cat", &["khttp.sys"]).expect_err("no CatalogFile");
        assert!(e.contains("no CatalogFile"), "{e}");
    }

    #[test]
    fn decorated_names_and_quoted_semicolons() {
        let inf = "[Version]\nCatalogFile.NTamd64 = \"khttp.cat\"\nProvider = \"a;b\"\n\
                   [SourceDisksFiles.amd64]\nkhttp.sys = 1\n";
        check("k.inf", inf, "khttp.cat", &["khttp.sys"]).expect("ok");
        assert_eq!(strip_comment("a = \"x;y\" ; c"), "a = \"x;y\" ");
        assert!(!is_decorated("CatalogFiles", "CatalogFile"));
    }
}
