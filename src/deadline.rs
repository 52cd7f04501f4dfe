//! Deadlines: checked `Instant` arithmetic, and the wall-clock bound from a command's `created_at`.
//!
//! - Adding a duration to an `Instant` panics when the result is unrepresentable; the wire allows
//!   `response_timeout` values such as `"5124095576030431h"`. [`after`] returns `None` then, which
//!   callers treat as "no deadline" (MCP calls still end at their 600 s cap).
//! - **ours** (the contract anchors deadlines at the poll receipt only): when `created_at` is
//!   present and the clocks look sane, the deadline is also bounded by `created_at +
//!   response_timeout` (+ [`MAX_CLOCK_SKEW`]), so a command that sat in a stalled client or a
//!   buffering proxy longer than its caller waited is not executed late. "Sane" means: RFC 3339,
//!   at most [`MAX_CLOCK_SKEW`] in the future, at most [`MAX_CREATED_AT_AGE`] old. Anything else
//!   is ignored and the receipt-anchored deadline applies alone.

use std::time::{Duration, Instant, SystemTime};

/// Clock difference tolerated between the control plane and this host: a `created_at` further
/// in the future is ignored, and the `created_at` bound gets this much grace.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
/// A `created_at` older than this says the clocks disagree (no command waits that long: MCP calls
/// without a deadline are cut at 600 s), so it is ignored rather than dropping every command.
pub const MAX_CREATED_AT_AGE: Duration = Duration::from_secs(600);

/// `start + d`, or `None` when that instant cannot be represented ("no deadline").
pub fn after(start: Instant, d: Duration) -> Option<Instant> {
    start.checked_add(d)
}

/// The earliest of the receipt deadline and the sane `created_at` bound; the bool says whether
/// the `created_at` bound is the one that applies.
pub fn command_deadline(
    received: Instant,
    timeout: Duration,
    created_at: Option<&str>,
    now: Instant,
    wall_now: SystemTime,
) -> Option<(Instant, bool)> {
    let receipt = after(received, timeout)?;
    let bound = created_at
        .and_then(parse_rfc3339)
        .and_then(|created| created_at_bound(created, timeout, now, wall_now));
    match bound {
        Some(b) if b < receipt => Some((b, true)),
        _ => Some((receipt, false)),
    }
}

/// `created + timeout + skew` as an `Instant`, when `created` is sane.
fn created_at_bound(
    created: SystemTime,
    timeout: Duration,
    now: Instant,
    wall_now: SystemTime,
) -> Option<Instant> {
    let age = match wall_now.duration_since(created) {
        Ok(age) => age,
        Err(e) if e.duration() <= MAX_CLOCK_SKEW => Duration::ZERO,
        Err(_) => return None, // in the future beyond the skew: clocks disagree
    };
    if age > MAX_CREATED_AT_AGE {
        return None;
    }
    let budget = timeout.checked_add(MAX_CLOCK_SKEW)?;
    match budget.checked_sub(age) {
        Some(left) => after(now, left),
        None => Some(now), // already passed
    }
}

/// The `created_at` string of a raw command, if it has one. Read here rather than in
/// [`crate::wire::Command`] because only the deadline uses it.
pub fn created_at_of(raw: &serde_json::value::RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct CreatedAt {
        created_at: Option<serde_json::Value>,
    }
    match serde_json::from_str::<CreatedAt>(raw.get())
        .ok()?
        .created_at?
    {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Parses RFC 3339 (`2026-01-02T03:04:05Z`, optional fraction, `Z` or `±hh:mm`); `None` for
/// anything else or a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || !text.is_ascii() {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u64> {
        let s = text.get(from..from + len)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let sep_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !sep_ok {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(digits.min(9)).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let rb = rest.as_bytes();
            if rb[3] != b':' {
                return None;
            }
            let h = rest.get(1..3)?.parse::<i64>().ok()?;
            let m = rest.get(4..6)?.parse::<i64>().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    let local = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    let utc = u64::try_from(local - offset_secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(utc, nanos))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn unrepresentable_deadlines_are_none() {
        let now = Instant::now();
        for text in ["5124095576030431h", "18446744073709551615s"] {
            let d = crate::duration::parse(text).expect("valid grammar");
            assert_eq!(after(now, d), None, "{text}");
            assert_eq!(command_deadline(now, d, None, now, SystemTime::now()), None);
        }
        assert!(after(now, Duration::from_secs(5)).is_some());
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2026-12-03T11:42:58Z"),
            Some(at(1_796_298_178))
        );
        assert_eq!(
            parse_rfc3339("2026-12-03T12:42:58+01:00"),
            Some(at(1_796_298_178))
        );
        assert_eq!(
            parse_rfc3339("2020-02-29T00:00:00.5Z"),
            Some(at(1_582_934_400) + Duration::from_millis(500))
        );
        for bad in [
            "",
            "garbage",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:00Zé",
            "+026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn created_at_bounds_only_when_sane() {
        let now = Instant::now();
        let wall = at(1_800_000_000);
        let timeout = Duration::from_secs(30);
        let fmt = |secs: u64| {
            let t = at(secs);
            httpdate_free_rfc3339(t)
        };
        // 60 s old with a 30 s timeout: already passed.
        let (d, from_created) =
            command_deadline(now, timeout, Some(&fmt(1_800_000_000 - 60)), now, wall).unwrap();
        assert!(from_created && d <= now);
        // 10 s old: bounded to 30 + 2 - 10 = 22 s from now.
        let (d, from_created) =
            command_deadline(now, timeout, Some(&fmt(1_800_000_000 - 10)), now, wall).unwrap();
        assert!(from_created);
        assert_eq!(d.duration_since(now), Duration::from_secs(22));
        // Far future, absurdly old or garbage: the receipt deadline alone.
        for created in [
            fmt(1_800_000_000 + 3600),
            fmt(1_800_000_000 - 7200),
            "soon".to_string(),
        ] {
            let (d, from_created) =
                command_deadline(now, timeout, Some(&created), now, wall).unwrap();
            assert!(!from_created, "{created}");
            assert_eq!(d, now + timeout);
        }
    }

    /// Formats `t` as `YYYY-MM-DDTHH:MM:SSZ` through the HTTP-date crate's fields.
    fn httpdate_free_rfc3339(t: SystemTime) -> String {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Inverse of days_from_civil, by search (test only).
        let mut year = 1970;
        let mut left = days;
        loop {
            let len = if days_in_month(year, 2) == 29 {
                366
            } else {
                365
            };
            if left < len {
                break;
            }
            left -= len;
            year += 1;
        }
        let mut month = 1;
        while left >= days_in_month(year, month) {
            left -= days_in_month(year, month);
            month += 1;
        }
        format!(
            "{year:04}-{month:02}-{:02}T{:02}:{:02}:{:02}Z",
            left + 1,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}
