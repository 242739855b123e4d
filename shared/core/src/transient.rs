//! Which failed API answers the HTTP clients repeat at once, within the same call.
//!
//! A sync makes a dozen calls or more; without a retry inside the call, a service that fails one
//! request in ten fails most syncs, and every failure costs a queue round trip (the visibility
//! timeout) and a receive towards the dead-letter limit. So a client repeats, after a short backoff,
//! the answers that say the service did nothing and asked for no particular delay:
//! 502, 503 and 504, and 429 without `Retry-After`; a 500 only when repeating the request is harmless
//! (not a `POST`, whose first attempt may have committed). An answer that carries `Retry-After` is
//! never slept on inside the function: the queue worker honours it through the message's visibility.

use std::time::Duration;

/// Retries within one call, after the first attempt.
pub const RETRIES_WITHIN_CALL: u32 = 3;

/// Whether an answer with `status` is repeated within the call (see the module documentation).
pub fn retry_within_call(status: u16, has_retry_after: bool, method_is_post: bool) -> bool {
    if has_retry_after {
        return false;
    }
    match status {
        429 | 502 | 503 | 504 => true,
        500 => !method_is_post,
        _ => false,
    }
}

/// The wait before retry number `retry` (0-based): 50 ms doubling, plus up to 50 ms of jitter so that
/// concurrent workers do not retry in step.
pub fn backoff(retry: u32) -> Duration {
    let jitter =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) % 50_000_000;
    Duration::from_millis(50 << retry.min(5)) + Duration::from_nanos(u64::from(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_did_nothing_and_named_no_delay_are_repeated() {
        assert!(retry_within_call(503, false, true));
        assert!(retry_within_call(429, false, false));
        assert!(retry_within_call(500, false, false));
        assert!(!retry_within_call(500, false, true), "a POST may have committed");
        assert!(!retry_within_call(429, true, false), "Retry-After is honoured by the queue");
        assert!(!retry_within_call(503, true, false));
        assert!(!retry_within_call(400, false, false));
        assert!(!retry_within_call(404, false, false));
    }

    #[test]
    fn backoff_doubles_and_stays_short() {
        assert!(backoff(0) >= Duration::from_millis(50) && backoff(0) < Duration::from_millis(100));
        assert!(backoff(2) >= Duration::from_millis(200) && backoff(2) < Duration::from_millis(250));
        assert!(backoff(50) < Duration::from_secs(2));
    }
}
