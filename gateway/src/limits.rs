//! Token buckets for per-connection frame limits and per-user send limits.
//! Time is passed in, so the bucket is tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// A classic token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate), burst, tokens: burst, updated: now }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts rate-limit strikes in a sliding 10 s window; too many means the client is flooding.
#[derive(Clone, Debug)]
pub(crate) struct Strikes {
    limit: u32,
    count: u32,
    window_start: Instant,
}

const STRIKE_WINDOW: Duration = Duration::from_secs(10);

impl Strikes {
    pub(crate) fn new(limit: u32, now: Instant) -> Self {
        Self { limit, count: 0, window_start: now }
    }

    /// Records a strike; true when the limit is exceeded.
    pub(crate) fn strike(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) > STRIKE_WINDOW {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 20, start);
        assert_eq!((0..25).filter(|_| bucket.try_take(start)).count(), 20);
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
    }

    #[test]
    fn strikes_reset_after_window() {
        let start = Instant::now();
        let mut strikes = Strikes::new(2, start);
        assert!(!strikes.strike(start));
        assert!(!strikes.strike(start));
        assert!(strikes.strike(start));
        assert!(!strikes.strike(start + Duration::from_secs(11)));
    }

    proptest! {
        #[test]
        fn bucket_never_exceeds_rate_plus_burst(rate in 1u32..100, burst in 1u32..100, steps in proptest::collection::vec(0u64..500, 1..200)) {
            let start = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst, start);
            let mut now = start;
            let mut taken = 0u64;
            for step in steps {
                now += Duration::from_millis(step);
                if bucket.try_take(now) { taken += 1; }
            }
            let elapsed = now.duration_since(start).as_secs_f64();
            prop_assert!(taken as f64 <= f64::from(burst) + elapsed * f64::from(rate) + 1e-9);
        }
    }
}
