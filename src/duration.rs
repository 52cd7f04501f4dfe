//! The one duration grammar used on the wire and in configuration: one non-negative integer
//! followed by one unit of `ns us ms s m h` (`30s`, `4500ms`, `10m`, `0s`).
//!
//! No sign, fraction, whitespace, exponent or compound form (`1m30s`): the contract's
//! `response_timeout` pattern is `^[0-9]+(?:ns|us|ms|s|m|h)$`, and accepting exactly that in config
//! too means an operator learns one rule.

use std::time::Duration;

/// Parses `<digits><unit>`; `None` for anything else, including values too large to represent.
pub fn parse(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    };
    let nanos = u128::from(n) * u128::from(nanos_per_unit);
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration the way [`parse`] reads it, picking the largest exact unit.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000) {
        return format!("{}ns", d.as_nanos());
    }
    // Microseconds before nanoseconds: a parsed `<u64>us` in ns would not fit `parse`'s u64.
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".to_string(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_grammar() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("4500ms"), Some(Duration::from_millis(4500)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("7us"), Some(Duration::from_micros(7)));
        assert_eq!(parse("5ns"), Some(Duration::from_nanos(5)));
        assert_eq!(parse("007s"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "s",
            "30",
            "-1s",
            "+1s",
            "1.5s",
            " 1s",
            "1s ",
            "1 s",
            "1e3ms",
            "1m30s",
            "1S",
            "1sec",
            "1d",
            "µs",
            "99999999999999999999999s",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} must be rejected");
        }
        // Too large to represent is rejected, not wrapped.
        assert_eq!(parse("18446744073709551615h"), None);
    }

    #[test]
    fn format_round_trips() {
        for text in ["0s", "30s", "4500ms", "10m", "2h", "7ns"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
