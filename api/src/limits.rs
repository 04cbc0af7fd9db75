//! Abuse limits (docs/accounts.md, "Abuse limits"): request rates per client IP and per user
//! on every route (`429` with `Retry-After`), and growing delays after failed logins and
//! reset requests — per account *and* IP, per account, per IP — never a lockout: a stranger who
//! keeps failing against someone's account only slows that account down to one attempt a
//! minute, while its owner's own IP stays limited only by its own failures.
//!
//! Limits are kept per api process (in memory): behind N replicas a client gets up to N times
//! the rate, which the defaults allow for.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets keyed by `K`: `rate` per second, bursts of 5 s worth.
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    pub(crate) fn new(rate: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(rate) * 5.0, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `Err(wait)` when none is left.
    pub(crate) fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("limiter lock is never poisoned");
        if buckets.len() > 100_000 {
            // Forget full buckets (idle keys) so the map stays bounded.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// What a failure-throttled action is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    AccountIp(String, IpAddr),
    Account(String),
    Ip(IpAddr),
}

/// Failures before each key starts to wait, and the longest wait it can reach.
fn policy(key: &Key) -> (u32, Duration) {
    match key {
        Key::AccountIp(..) => (3, Duration::from_secs(15 * 60)),
        Key::Account(_) => (10, Duration::from_secs(60)),
        Key::Ip(_) => (30, Duration::from_secs(15 * 60)),
    }
}

/// Growing delays after failures: past a key's free failures, each failure doubles the wait
/// before the next attempt (1 s, 2 s, 4 s … up to the key's cap). Success clears the
/// account-and-IP key; the others decay after 15 minutes without failure.
pub(crate) struct FailureThrottle {
    keys: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl FailureThrottle {
    pub(crate) fn new() -> Self {
        Self { keys: Mutex::new(HashMap::new()) }
    }

    fn keys(account: &str, ip: IpAddr) -> [Key; 3] {
        [Key::AccountIp(account.to_owned(), ip), Key::Account(account.to_owned()), Key::Ip(ip)]
    }

    /// `Err(wait)` if an attempt on `account` from `ip` must wait.
    pub(crate) fn check(&self, account: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let keys = self.keys.lock().expect("throttle lock is never poisoned");
        let mut wait = Duration::ZERO;
        for key in Self::keys(account, ip) {
            let Some(&(failures, last)) = keys.get(&key) else { continue };
            let (free, cap) = policy(&key);
            if failures < free || now.duration_since(last) > Duration::from_secs(15 * 60) {
                continue;
            }
            let delay = Duration::from_secs(1u64 << (failures - free).min(20)).min(cap);
            wait = wait.max(delay.saturating_sub(now.duration_since(last)));
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Counts a failed attempt.
    pub(crate) fn failed(&self, account: &str, ip: IpAddr, now: Instant) {
        let mut keys = self.keys.lock().expect("throttle lock is never poisoned");
        if keys.len() > 100_000 {
            keys.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(15 * 60));
        }
        for key in Self::keys(account, ip) {
            let entry = keys.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) > Duration::from_secs(15 * 60) {
                entry.0 = 0;
            }
            entry.0 += 1;
            entry.1 = now;
        }
    }

    /// Clears the account-and-IP key after a success.
    pub(crate) fn succeeded(&self, account: &str, ip: IpAddr) {
        self.keys
            .lock()
            .expect("throttle lock is never poisoned")
            .remove(&Key::AccountIp(account.to_owned(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_names_the_wait() {
        let limiter = RateLimiter::new(2);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check(1, now).is_ok());
        }
        let wait = limiter.check(1, now).expect_err("burst used up");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.check(2, now).is_ok(), "another key has its own bucket");
        assert!(limiter.check(1, now + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn failures_grow_the_delay_without_locking_the_owner_out() {
        let throttle = FailureThrottle::new();
        let attacker: IpAddr = "10.0.0.1".parse().expect("an IP");
        let owner: IpAddr = "10.0.0.2".parse().expect("an IP");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check("a@x.io", attacker, t0).is_ok());
            throttle.failed("a@x.io", attacker, t0);
        }
        assert_eq!(throttle.check("a@x.io", attacker, t0), Err(Duration::from_secs(1)));
        throttle.failed("a@x.io", attacker, t0);
        assert_eq!(throttle.check("a@x.io", attacker, t0), Err(Duration::from_secs(2)));
        // The owner, from their own IP, is not delayed by the attacker's first failures…
        assert!(throttle.check("a@x.io", owner, t0).is_ok());
        // …and after many, waits at most a minute, never forever.
        for _ in 0..30 {
            throttle.failed("a@x.io", attacker, t0);
        }
        let wait = throttle.check("a@x.io", owner, t0).expect_err("account slowed");
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        assert!(throttle.check("a@x.io", owner, t0 + Duration::from_secs(61)).is_ok());
        throttle.succeeded("a@x.io", attacker);
    }
}
