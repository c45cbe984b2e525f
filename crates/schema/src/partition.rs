//! The Hive partition layout of sealed segments, encoded and decoded in this one place: the
//! recorder writes it, `dnsledger prune` and `dnsql` read it back.
//!
//! ```text
//! segments/host=<host>/date=YYYY-MM-DD/hour=HH/<name>.parquet
//! ```
//!
//! `date` and `hour` are the UTC hour of every row of the segment. `<host>` is the host name with
//! every byte outside `[A-Za-z0-9._-]` written `%XX` (upper-case hex), so any host name is one
//! safe path component; [`PartitionKey::host`] is always the *unescaped* name, which is what
//! `--host` flags and the `host` column compare against.

use std::path::{Component, Path, PathBuf};

/// Partition key names. None equals a column name.
pub const HOST: &str = "host";
pub const DATE: &str = "date";
pub const HOUR: &str = "hour";

const NS_PER_SEC: i64 = 1_000_000_000;
pub const NS_PER_HOUR: i64 = 3_600 * NS_PER_SEC;
pub const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// Where a segment belongs: the values of the partition columns `host`, `date`, `hour`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The host name, unescaped.
    pub host: String,
    /// Days since 1970-01-01 (UTC).
    pub date: i32,
    /// 0..=23 (UTC).
    pub hour: i32,
}

impl PartitionKey {
    /// The key of the hour containing `ts_ns` (nanoseconds since the epoch, UTC).
    pub fn of_ts(host: impl Into<String>, ts_ns: i64) -> Self {
        let date = ts_ns.div_euclid(NS_PER_DAY);
        let hour = ts_ns.rem_euclid(NS_PER_DAY) / NS_PER_HOUR;
        PartitionKey {
            host: host.into(),
            date: i32::try_from(date).unwrap_or(if date < 0 { i32::MIN } else { i32::MAX }),
            hour: i32::try_from(hour).unwrap_or(0),
        }
    }

    /// Start of the hour this key covers, in nanoseconds since the epoch.
    pub fn start_ns(&self) -> i64 {
        i64::from(self.date) * NS_PER_DAY + i64::from(self.hour) * NS_PER_HOUR
    }

    /// The partition directory relative to `segments/`: `host=<escaped>/date=…/hour=…`.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.host_component())
            .join(self.date_component())
            .join(self.hour_component())
    }

    /// `host=<escaped host>`.
    pub fn host_component(&self) -> String {
        format!("{HOST}={}", escape(&self.host))
    }

    /// `date=YYYY-MM-DD`.
    pub fn date_component(&self) -> String {
        let (y, m, d) = civil_from_days(i64::from(self.date));
        format!("{DATE}={y:04}-{m:02}-{d:02}")
    }

    /// `hour=HH`.
    pub fn hour_component(&self) -> String {
        format!("{HOUR}={:02}", self.hour)
    }

    /// The key of a segment path: the nearest `host=`, `date=` and `hour=` directories above
    /// the file. `None` when any of the three is missing or malformed.
    pub fn from_path(path: &Path) -> Option<Self> {
        let (mut host, mut date, mut hour) = (None, None, None);
        for c in path.parent()?.components() {
            let Component::Normal(c) = c else { continue };
            let c = c.to_str()?;
            if let Some(v) = c.strip_prefix(HOST).and_then(|r| r.strip_prefix('=')) {
                host = unescape(v);
            } else if let Some(v) = c.strip_prefix(DATE).and_then(|r| r.strip_prefix('=')) {
                date = parse_date(v);
            } else if let Some(v) = c.strip_prefix(HOUR).and_then(|r| r.strip_prefix('=')) {
                hour = parse_hour(v);
            }
        }
        Some(PartitionKey {
            host: host?,
            date: date?,
            hour: hour?,
        })
    }
}

/// The unescaped host of a `host=<escaped>` directory name; `None` for other names or an
/// invalid escape.
pub fn host_of_component(name: &str) -> Option<String> {
    unescape(name.strip_prefix(HOST)?.strip_prefix('=')?)
}

/// Days since the epoch of a `date=YYYY-MM-DD` directory name.
pub fn date_of_component(name: &str) -> Option<i32> {
    parse_date(name.strip_prefix(DATE)?.strip_prefix('=')?)
}

/// The hour (0..=23) of an `hour=HH` directory name.
pub fn hour_of_component(name: &str) -> Option<i32> {
    parse_hour(name.strip_prefix(HOUR)?.strip_prefix('=')?)
}

/// Escapes `s` for use as one path component: bytes outside `[A-Za-z0-9._-]` become `%XX`.
/// (Also used for the host part of segment file names.)
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

/// Reverses [`escape`]. `None` when a `%` is not followed by two hex digits or the bytes are not
/// UTF-8. Characters `escape` would have escaped but that stand unescaped (a directory made by
/// hand) are kept as they are.
pub fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_hour(v: &str) -> Option<i32> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse::<i32>().ok().filter(|h| (0..24).contains(h))
}

/// `YYYY-MM-DD` to days since the epoch; the day must exist in that month.
fn parse_date(v: &str) -> Option<i32> {
    let mut parts = v.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject days past the month's end (2023-02-30): they would round-trip to another date.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    i32::try_from(days).ok()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), Howard Hinnant's
/// `days_from_civil`; hand-written because the workspace needs no date crate otherwise.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC civil time of a nanosecond timestamp; `i64` nanoseconds span the years 1677..=2262, so
/// years always have four digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Civil {
    pub fn from_ns(ns: i64) -> Self {
        const SECS_PER_DAY: i64 = 86_400;
        let secs = ns.div_euclid(NS_PER_SEC);
        let nanos = ns.rem_euclid(NS_PER_SEC) as u32;
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            nanos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn dir_round_trips_through_from_path() {
        for host in [
            "web-1.example_x",
            "a/b c%é",
            "",
            "%41",
            "host=x",
            "ünï code",
        ] {
            for ts in [T0, 0, -1, 951_782_400_000_000_000 /* 2000-02-29 */] {
                let key = PartitionKey::of_ts(host, ts);
                let path = Path::new("/data/segments")
                    .join(key.dir())
                    .join("x.parquet");
                assert_eq!(
                    PartitionKey::from_path(&path),
                    Some(key.clone()),
                    "{path:?}"
                );
                assert!(key.start_ns() <= ts && ts < key.start_ns() + NS_PER_HOUR);
            }
        }
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(
            PartitionKey::of_ts("web-1.example_x", T0).dir(),
            PathBuf::from("host=web-1.example_x/date=2023-11-14/hour=22")
        );
        assert_eq!(
            PartitionKey::of_ts("a/b c%é", 0).dir(),
            PathBuf::from("host=a%2Fb%20c%25%C3%A9/date=1970-01-01/hour=00")
        );
        assert_eq!(
            PartitionKey::of_ts("h", -1).dir(),
            PathBuf::from("host=h/date=1969-12-31/hour=23")
        );
    }

    #[test]
    fn malformed_components_are_rejected() {
        let k = |p: &str| PartitionKey::from_path(Path::new(p));
        assert!(k("/x/host=a/date=2023-02-21/hour=08/a.parquet").is_some());
        assert_eq!(k("/x/host=a/date=2023-02-21/a.parquet"), None);
        assert_eq!(k("/x/host=a/date=2023-02-21/hour=24/a.parquet"), None);
        assert_eq!(k("/x/host=a/date=2023-02-30/hour=01/a.parquet"), None);
        assert_eq!(k("/x/host=a/date=1970-13-02/hour=01/a.parquet"), None);
        assert_eq!(k("/x/host=a/date=nope/hour=1/a.parquet"), None);
        assert_eq!(k("/x/host=a%zz/date=2023-02-21/hour=08/a.parquet"), None);
        assert_eq!(k("/x/day=2023-02-21/host=a/hour=08/a.parquet"), None);
        assert_eq!(date_of_component("date=1970-01-02"), Some(1));
        assert_eq!(hour_of_component("hour=03"), Some(3));
        assert_eq!(hour_of_component("hour=+3"), None);
        assert_eq!(host_of_component("host=a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(host_of_component("hostx=a"), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        for days in [-800_000, -1, 0, 1, 11_017, 19_782, 106_751] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let c = Civil::from_ns(T0 + 123);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos),
            (2023, 11, 14, 22, 13, 20, 123)
        );
    }
}
