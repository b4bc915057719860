//! Points in time as `netctl events --since/--until` takes them and as event lines
//! print them: a duration back from now (`90s`, `10m`, `2h`, `1d`), unix seconds
//! (`1764732799`, `1764732799.5`) or RFC 3339 in UTC (`2026-12-03T03:33:19Z`, fraction
//! optional). Hand-written (days from the civil calendar, Howard Hinnant's algorithm):
//! two functions did not justify a date-time crate.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad time {0:?}: expected a duration (10m, 2h), unix seconds or RFC 3339 UTC (2026-12-03T03:33:19Z)")]
pub struct TimeError(pub String);

pub fn now_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-03T03:33:19.123456789Z`.
pub fn rfc3339_nanos(t: u64) -> String {
    let secs = t / NANOS;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t % NANOS
    )
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut d = date.splitn(3, '-').map(str::parse::<u32>);
    let (y, mo, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':').map(str::parse::<u64>);
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
    };
    let days = u64::try_from(days_from_civil(i64::from(y), mo, day)).ok()?;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * NANOS + nanos)
}

fn parse_duration(s: &str) -> Option<u64> {
    let unit = match s.bytes().last()? {
        b's' if s.ends_with("ms") => return Some(s.strip_suffix("ms")?.parse::<u64>().ok()? * 1_000_000),
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        _ => return None,
    };
    let n: f64 = s[..s.len() - 1].parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * unit as f64 * NANOS as f64) as u64)
}

/// A point in time (unix ns) from what `--since`/`--until` take, durations counting
/// back from `now`.
pub fn parse_point(s: &str, now: u64) -> Result<u64, TimeError> {
    let bad = || TimeError(s.to_string());
    let s = s.trim();
    if let Some(d) = parse_duration(s) {
        return Ok(now.saturating_sub(d));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then_some((secs * NANOS as f64) as u64)
            .ok_or_else(bad);
    }
    parse_rfc3339(s).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = 1_764_732_799_123_456_789;
        let s = rfc3339_nanos(t);
        assert_eq!(s, "2025-12-03T03:33:19.123456789Z");
        assert_eq!(parse_point(&s, 0), Ok(t));
        assert_eq!(parse_point("2025-12-03T03:33:19Z", 0), Ok(1_764_732_799 * NANOS));
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(parse_point("2024-02-29T00:00:00Z", 0), Ok(1_709_164_800 * NANOS));
    }

    #[test]
    fn durations_count_back_from_now() {
        let now = 10_000 * NANOS;
        assert_eq!(parse_point("90s", now), Ok(now - 90 * NANOS));
        assert_eq!(parse_point("10m", now), Ok(now - 600 * NANOS));
        assert_eq!(parse_point("1.5h", now), Ok(now - 5400 * NANOS));
        assert_eq!(parse_point("250ms", now), Ok(now - 250_000_000));
        assert_eq!(parse_point("1764732799.5", now), Ok(1_764_732_799_500_000_000));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "10x",
            "-5s",
            "2025-13-01T00:00:00Z",
            "2025-12-03T03:33:19",
        ] {
            assert!(parse_point(s, 0).is_err(), "{s}");
        }
    }
}
