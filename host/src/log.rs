//! The access log (issue #13, item 2): one line per request in W3C extended format (http.sys's
//! own, with its `#Fields:` header), nginx's `combined`, or JSON (one object per line). The
//! file is reopened on SIGHUP and by `khttpctl log reopen`, so that logrotate can move it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use khttp_engine::LogRecord;

/// A log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// W3C extended log file format, as http.sys writes it.
    W3c,
    /// nginx's default `combined`.
    Combined,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "w3c" => Ok(Self::W3c),
            "combined" => Ok(Self::Combined),
            "json" => Ok(Self::Json),
            _ => Err(format!(
                "unknown log format {s:?}: use w3c, combined or json"
            )),
        }
    }
}

/// The open log file.
#[derive(Debug)]
pub(crate) struct AccessLog {
    path: PathBuf,
    format: Format,
    file: BufWriter<File>,
}

impl AccessLog {
    /// Opens (appends to) `path`; a W3C log gets its header when the file is new or empty.
    ///
    /// # Errors
    /// One line of English.
    pub(crate) fn open(path: &Path, format: Format) -> Result<Self, String> {
        let file = open_file(path, format)
            .map_err(|e| format!("cannot open the access log {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            format,
            file,
        })
    }

    /// Reopens the file at its path (after logrotate moved the old one away).
    ///
    /// # Errors
    /// One line of English; the old file stays in use.
    pub(crate) fn reopen(&mut self) -> Result<(), String> {
        let _ = self.file.flush();
        self.file = open_file(&self.path, self.format)
            .map_err(|e| format!("cannot reopen the access log {}: {e}", self.path.display()))?;
        Ok(())
    }

    /// Writes lines already formatted.
    pub(crate) fn write(&mut self, text: &str) {
        let _ = self.file.write_all(text.as_bytes());
        let _ = self.file.flush();
    }

    /// The format lines are written in.
    pub(crate) const fn format(&self) -> Format {
        self.format
    }
}

fn open_file(path: &Path, format: Format) -> io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let empty = file.metadata()?.len() == 0;
    let mut w = BufWriter::new(file);
    if empty && format == Format::W3c {
        w.write_all(w3c_header(unix_now()).as_bytes())?;
        w.flush()?;
    }
    Ok(w)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The W3C directives that start a log file.
fn w3c_header(unix: u64) -> String {
    let (date, time) = date_time(unix);
    format!(
        "#Software: khttp {}\n#Version: 1.0\n#Date: {date} {time}\n#Fields: date time c-ip c-port cs-method cs-uri-stem cs-uri-query sc-status sc-bytes time-taken cs(User-Agent) cs(Referer) x-cache\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// One line for `r`, answered to `peer` at `unix` (seconds since the epoch).
pub(crate) fn line(format: Format, r: &LogRecord, peer: SocketAddr, unix: u64) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let cache = if r.hit { "HIT" } else { "MISS" };
    let target = text(&r.target);
    let (stem, query) = target.split_once('?').unwrap_or((&target, ""));
    match format {
        Format::W3c => {
            let (date, time) = date_time(unix);
            // W3C fields are space-separated: spaces inside a value become `+`, an empty one `-`.
            let field = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.replace(' ', "+")
                }
            };
            format!(
                "{date} {time} {} {} {} {} {} {} {} {} {} {} {cache}\n",
                peer.ip(),
                peer.port(),
                field(&text(&r.method)),
                field(stem),
                field(query),
                r.status,
                r.body_bytes,
                r.millis,
                field(&text(&r.user_agent)),
                field(&text(&r.referer)),
            )
        }
        Format::Combined => {
            let quoted = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let request = format!("{} {} {}", text(&r.method), target, text(&r.protocol));
            let or_dash = |b: &[u8]| {
                if b.is_empty() {
                    "-".to_owned()
                } else {
                    quoted(&text(b))
                }
            };
            format!(
                "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\"\n",
                peer.ip(),
                clf_time(unix),
                quoted(request.trim_end()),
                r.status,
                r.body_bytes,
                or_dash(&r.referer),
                or_dash(&r.user_agent),
            )
        }
        Format::Json => {
            let (date, time) = date_time(unix);
            let opt = |b: &[u8]| {
                if b.is_empty() {
                    "null".to_owned()
                } else {
                    json(&text(b))
                }
            };
            format!(
                "{{\"time\":\"{date}T{time}Z\",\"client\":{},\"method\":{},\"uri\":{},\"protocol\":{},\"status\":{},\"bytes\":{},\"ms\":{},\"cache\":\"{cache}\",\"referer\":{},\"user_agent\":{}}}\n",
                json(&peer.to_string()),
                json(&text(&r.method)),
                json(&target),
                json(&text(&r.protocol)),
                r.status,
                r.body_bytes,
                r.millis,
                opt(&r.referer),
                opt(&r.user_agent),
            )
        }
    }
}

/// A JSON string literal (RFC 8259 §7).
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `YYYY-MM-DD` and `HH:MM:SS` in UTC.
fn date_time(unix: u64) -> (String, String) {
    let (y, m, d) = civil(unix / 86_400);
    let s = unix % 86_400;
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60),
    )
}

/// The Common Log Format time, in UTC: `29/Nov/2026:06:59:00 +0000`.
fn clf_time(unix: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = civil(unix / 86_400);
    let s = unix % 86_400;
    let month = MONTHS.get((m as usize).saturating_sub(1)).unwrap_or(&"Jan");
    format!(
        "{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The civil date of day `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::{Format, civil, clf_time, date_time, json, line};
    use khttp_engine::LogRecord;

    fn record() -> LogRecord {
        LogRecord {
            method: b"GET".to_vec(),
            target: b"/a b?x=\"1\"".to_vec(),
            protocol: b"HTTP/1.1".to_vec(),
            referer: Vec::new(),
            user_agent: b"curl/8.0".to_vec(),
            status: 200,
            body_bytes: 3,
            hit: true,
            millis: 7,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_421), (2025, 11, 29));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(date_time(1_795_849_140).1, "06:59:00");
        assert_eq!(clf_time(784_111_777), "06/Nov/1994:08:49:37 +0000");
        assert_eq!(json("a\"b\\\n"), r#""a\"b\\\u000a""#);
    }

    #[test]
    fn formats() {
        let peer = "127.0.0.1:5000".parse().unwrap();
        let w3c = line(Format::W3c, &record(), peer, 784_111_777);
        assert_eq!(
            w3c,
            "1994-11-06 08:49:37 127.0.0.1 5000 GET /a+b x=\"1\" 200 3 7 curl/8.0 - HIT\n"
        );
        let combined = line(Format::Combined, &record(), peer, 784_111_777);
        assert_eq!(
            combined,
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a b?x=\\\"1\\\" HTTP/1.1\" 200 3 \"-\" \"curl/8.0\"\n"
        );
        let json = line(Format::Json, &record(), peer, 784_111_777);
        assert!(json.starts_with(r#"{"time":"1994-11-06T08:49:37Z","client":"127.0.0.1:5000","method":"GET","uri":"/a b?x=\"1\""#), "{json}");
        assert!(json.ends_with("\"user_agent\":\"curl/8.0\"}\n"));
    }
}
