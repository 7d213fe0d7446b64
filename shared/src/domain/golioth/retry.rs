//! Retry timing (exponential backoff with full jitter, `Retry-After` parsing and clamping) and
//! bounded fan-out. Pure functions: randomness and `now` come in as arguments, so the timing rules
//! are tested without sleeping.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;

/// How hard the client tries before giving up.
///
/// Golioth publishes no rate limit for the Management API (GOLIOTH_API.md §7), so the defaults are
/// conservative: five attempts spread over a few seconds, and at most a minute of waiting when the
/// server asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = never retry).
    pub max_attempts: u32,
    /// The backoff window of the first retry; it doubles per attempt.
    pub base_delay: Duration,
    /// The largest backoff window.
    pub max_delay: Duration,
    /// `Retry-After` values are clamped to this, so one header cannot park a sync slice for hours.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (one attempt).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 = the first retry). With a server-sent
    /// `retry_after` that value is honoured, clamped to `max_retry_after`; otherwise full jitter:
    /// a uniform draw from `[0, min(max_delay, base_delay · 2^(retry-1))]`, `unit` being the draw
    /// in `[0, 1)`. Full jitter spreads the retries of many concurrent requests (AWS
    /// architecture blog, "Exponential Backoff And Jitter").
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = retry.saturating_sub(1).min(30);
        let window = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        window.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3: IMF-fixdate,
/// with the obsolete RFC 850 and asctime forms also accepted). A date in the past means "now".
/// Whether Golioth sends the header at all is UNCERTAIN (GOLIOTH_API.md §7).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate instead of failing; the caller clamps anyway.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = DateTime::parse_from_rfc2822(v)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
                .map(|n| n.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Run `f` over `items` with at most `limit` futures in flight, yielding results in completion
/// order (pair each result with its input if order matters). This is how per-device calls fan
/// out: GOLIOTH_API.md §11.11 asks for "a bounded concurrency of a few requests".
pub async fn bounded<I, F, Fut, T>(items: I, limit: usize, f: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = T>,
{
    futures::stream::iter(items)
        .map(f)
        .buffer_unordered(limit.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn full_jitter_window_doubles_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1, None, 0.999_999).as_millis(), 99);
        assert_eq!(p.delay(2, None, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(u32::MAX, None, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(200));
    }

    #[test]
    fn retry_after_wins_and_is_clamped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.0),
            p.max_retry_after
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
