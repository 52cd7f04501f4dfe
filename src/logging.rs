//! Log setup: env_logger writing `<UTC timestamp> <LEVEL> <target>: <message>` to stderr.
//!
//! Third-party crates (the HTTP client, TLS) are held at `warn` whatever the chosen level: their
//! debug output describes requests in detail, and no secret may reach a log at any level.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::LevelFilter;

/// Installs the logger; a second call (tests) is ignored.
pub fn init(cfg: &crate::config::LogConfig) {
    let level = cfg.level;
    let third_party = level.min(LevelFilter::Warn);
    let _ = env_logger::Builder::new()
        .filter_level(third_party)
        .filter_module("mcp_tunnel", level)
        .format(|out, record| {
            writeln!(
                out,
                "{} {:<5} {}: {}",
                utc_timestamp(SystemTime::now()),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// Reopens the log file after logrotate moved it (SIGHUP). No-op when logging to stderr.
pub fn reopen() {}

/// `2026-11-26T04:45:06.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, which is exact for every date we will ever print.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_668_306_123);
        assert_eq!(utc_timestamp(t), "2026-11-26T04:45:06.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
