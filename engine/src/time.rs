//! Time as the caller supplies it, and HTTP-date (RFC 9110 §5.6.7).
//!
//! The engine reads no clock. The glue passes a [`Clock`]: a monotonic tick count in milliseconds
//! ([`Instant`]) for deadlines and TTLs, and the wall-clock second for the `Date` header. The
//! formatted `Date` value is rebuilt only when the second changes, so it costs nothing per request.

/// A monotonic point in time, in milliseconds since an epoch the caller chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// The instant `ms` milliseconds later, saturating at the end of time.
    #[must_use]
    pub const fn add_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// The instant `secs` seconds later, saturating at the end of time.
    #[must_use]
    pub const fn add_secs(self, secs: u64) -> Self {
        self.add_millis(secs.saturating_mul(1000))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    #[must_use]
    pub const fn millis_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) const HTTP_DATE_LEN: usize = 29;

/// The last second the engine formats (9999-12-31T23:59:59Z); later times are clamped to it.
const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// A wall-clock second and its IMF-fixdate text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpDate {
    secs: u64,
    text: [u8; HTTP_DATE_LEN],
}

impl HttpDate {
    /// Formats `unix_secs` (seconds since 1970-01-01T00:00:00Z) as an IMF-fixdate.
    #[must_use]
    pub fn from_unix(unix_secs: u64) -> Self {
        Self {
            secs: unix_secs,
            text: format_imf_fixdate(unix_secs),
        }
    }

    /// Seconds since the Unix epoch.
    #[must_use]
    pub const fn unix(&self) -> u64 {
        self.secs
    }

    /// The formatted date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; HTTP_DATE_LEN] {
        &self.text
    }
}

/// The time a batch of events happens at: monotonic ticks plus the wall-clock `Date`.
///
/// Call [`Clock::update`] before handing events to the engine; it reformats the date only when the
/// second changes ("a Date header refreshed once a second, not per request").
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: Instant,
    date: HttpDate,
}

impl Clock {
    /// A clock at monotonic `now` and wall-clock `unix_secs`.
    #[must_use]
    pub fn new(now: Instant, unix_secs: u64) -> Self {
        Self {
            now,
            date: HttpDate::from_unix(unix_secs),
        }
    }

    /// Moves the clock; the `Date` text is rebuilt only if the second changed.
    pub fn update(&mut self, now: Instant, unix_secs: u64) {
        self.now = now;
        if unix_secs != self.date.secs {
            self.date = HttpDate::from_unix(unix_secs);
        }
    }

    /// Monotonic now.
    #[must_use]
    pub const fn now(&self) -> Instant {
        self.now
    }

    /// The current `Date` value.
    #[must_use]
    pub const fn date(&self) -> &HttpDate {
        &self.date
    }
}

const DAY_NAMES: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard Hinnant's `civil_from_days`.
#[expect(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "days <= MAX_UNIX_SECS / 86400, so every intermediate fits in i64 and results fit u32"
)]
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's `days_from_civil`.
#[expect(
    clippy::arithmetic_side_effects,
    reason = "callers bound year to 1..=9999, month to 1..=12 and day to 1..=31"
)]
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn two_digits(out: &mut [u8], n: u64) {
    let digit = |d: u64| b'0'.saturating_add(u8::try_from(d % 10).unwrap_or(0));
    if let [a, b, ..] = out {
        *a = digit(n / 10);
        *b = digit(n);
    }
}

/// IMF-fixdate (RFC 9110 §5.6.7): `day-name "," SP date1 SP time-of-day SP GMT`.
#[expect(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "secs is clamped to year 9999, so all values are small and non-negative"
)]
fn format_imf_fixdate(unix_secs: u64) -> [u8; HTTP_DATE_LEN] {
    let secs = unix_secs.min(MAX_UNIX_SECS);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    let day_name = DAY_NAMES
        .get((days % 7) as usize)
        .copied()
        .unwrap_or(b"Thu");
    let month_name = MONTH_NAMES
        .get((month as usize).saturating_sub(1))
        .copied()
        .unwrap_or(b"Jan");
    let year = year as u64;
    out[0..3].copy_from_slice(day_name);
    two_digits(&mut out[5..7], u64::from(day));
    out[8..11].copy_from_slice(month_name);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], rem / 3600);
    two_digits(&mut out[20..22], (rem / 60) % 60);
    two_digits(&mut out[23..25], rem % 60);
    out
}

fn parse_digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u32::from(d))
    })
}

fn month_from_name(s: &[u8]) -> Option<u32> {
    let idx = MONTH_NAMES.iter().position(|m| m.as_slice() == s)?;
    u32::try_from(idx).ok()?.checked_add(1)
}

fn parse_time_of_day(s: &[u8]) -> Option<(u32, u32, u32)> {
    let mut it = s.split(|&b| b == b':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || h.len() != 2 || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec) = (parse_digits(h)?, parse_digits(m)?, parse_digits(sec)?);
    (h < 24 && m < 60 && sec <= 60).then_some((h, m, sec))
}

fn to_unix(year: u32, month: u32, day: u32, (h, m, s): (u32, u32, u32)) -> Option<u64> {
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let days = u64::try_from(days).ok()?;
    let secs_of_day = u64::from(
        h.saturating_mul(3600)
            .saturating_add(m.saturating_mul(60))
            .saturating_add(s),
    );
    days.checked_mul(86_400)?.checked_add(secs_of_day)
}

/// Parses an HTTP-date in any of the three forms RFC 9110 §5.6.7 obliges a recipient to accept:
/// IMF-fixdate, the obsolete RFC 850 form, and asctime. Returns seconds since the Unix epoch, or
/// `None` for anything else (the caller then ignores the field, as §13.1.3 and §13.1.4 require).
#[must_use]
pub(crate) fn parse_http_date(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    let mut parts = s.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let first = parts.next()?;
    if first.len() == 4 && first.ends_with(b",") {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        let day = parts.next().filter(|d| d.len() == 2)?;
        let month = month_from_name(parts.next()?)?;
        let year = parts.next().filter(|y| y.len() == 4)?;
        let time = parse_time_of_day(parts.next()?)?;
        if parts.next()? != b"GMT" || parts.next().is_some() {
            return None;
        }
        to_unix(parse_digits(year)?, month, parse_digits(day)?, time)
    } else if first.ends_with(b",") {
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        let mut date = parts.next()?.split(|&b| b == b'-');
        let day = date.next().filter(|d| d.len() == 2)?;
        let month = month_from_name(date.next()?)?;
        let yy = parse_digits(date.next().filter(|y| y.len() == 2)?)?;
        let time = parse_time_of_day(parts.next()?)?;
        if parts.next()? != b"GMT" || parts.next().is_some() {
            return None;
        }
        // Two-digit years: 70..99 are 19xx, 00..69 are 20xx (RFC 9110 §5.6.7's 50-year rule, fixed).
        let year = yy.saturating_add(if yy >= 70 { 1900 } else { 2000 });
        to_unix(year, month, parse_digits(day)?, time)
    } else {
        // asctime: Sun Nov  6 08:49:37 1994
        let month = month_from_name(parts.next()?)?;
        let day = parts.next().filter(|d| (1..=2).contains(&d.len()))?;
        let time = parse_time_of_day(parts.next()?)?;
        let year = parts.next().filter(|y| y.len() == 4)?;
        if parts.next().is_some() || first.len() != 3 {
            return None;
        }
        to_unix(parse_digits(year)?, month, parse_digits(day)?, time)
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpDate, parse_http_date};

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(
            HttpDate::from_unix(0).as_bytes(),
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(784_111_777).as_bytes(),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(1_709_210_096).as_bytes(),
            b"Thu, 29 Feb 2024 12:34:56 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(u64::MAX).as_bytes(),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn parses_the_three_forms() {
        for s in [
            &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(s), Some(784_111_777), "{s:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 99999999999999999999 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT extra",
            b"-1",
        ] {
            assert_eq!(parse_http_date(s), None, "{s:?}");
        }
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        let mut t = 0u64;
        while t < 253_402_300_799 {
            assert_eq!(parse_http_date(HttpDate::from_unix(t).as_bytes()), Some(t));
            t += 86_400 * 13 + 3_607;
        }
    }
}
