//! The one retry-delay helper: exponential backoff with full jitter, and `Retry-After` parsing.
//!
//! Full jitter (a uniformly random delay between zero and the current ceiling) keeps a fleet of
//! clients that failed together from retrying together.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` we honour; a larger value is clamped rather than obeyed, so a
/// misconfigured proxy cannot park the client for an hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Exponential backoff: the ceiling doubles per failure from `base` up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The ceiling for the next delay, without jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A jittered delay in `[0, ceiling]`; each call raises the ceiling for the next one.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        jitter(ceiling)
    }

    /// Like [`next_delay`](Self::next_delay) but never below `floor` (used for operator errors,
    /// where a quick retry cannot help).
    pub fn next_delay_at_least(&mut self, floor: Duration) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        floor + jitter(ceiling.saturating_sub(floor))
    }

    /// After a success the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniformly random duration in `[0, max]`.
pub fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(crate::crypto::random_u64() % (nanos + 1))
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date. Malformed, negative or past
/// values are ignored (`None`); anything above [`MAX_RETRY_AFTER`] is clamped to it.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).ok()?
    };
    if delay.is_zero() {
        return None;
    }
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(*ceilings.last().unwrap() as u64));
        }
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(200));
    }

    #[test]
    fn floor_is_respected() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(300));
        for _ in 0..10 {
            let d = b.next_delay_at_least(Duration::from_secs(30));
            assert!(d >= Duration::from_secs(30) && d <= Duration::from_secs(300));
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("3600", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("0", now), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), None);
    }
}
