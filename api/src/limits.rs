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

/// The client's address as the per-IP limit saw it (`routes::limit_ip`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientIp(pub IpAddr);

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

    /// Starts an attempt on `account` from `ip`: `Err(wait)` if it must wait; otherwise the
    /// attempt is counted against the account (and the account from this IP) at once — so a
    /// burst of concurrent guesses at one account cannot all pass the check before any of them
    /// is counted — until [`FailureThrottle::succeeded`] takes it back. The IP's own key counts
    /// only failures ([`FailureThrottle::failed`]): many people logging in at once from one
    /// office address are not guesses.
    pub(crate) fn attempt(&self, account: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut keys = self.keys.lock().expect("throttle lock is never poisoned");
        let mut wait = Duration::ZERO;
        for key in Self::keys(account, ip) {
            let Some(&(failures, last)) = keys.get(&key) else { continue };
            let (free, cap) = policy(&key);
            if failures < free || now.duration_since(last) > FORGET_AFTER {
                continue;
            }
            let delay = Duration::from_secs(1u64 << (failures - free).min(20)).min(cap);
            wait = wait.max(delay.saturating_sub(now.duration_since(last)));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if keys.len() > 100_000 {
            keys.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        for key in [Key::AccountIp(account.to_owned(), ip), Key::Account(account.to_owned())] {
            count(&mut keys, key, now);
        }
        Ok(())
    }

    /// The attempt failed: the IP's key counts it too.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        count(&mut self.keys.lock().expect("throttle lock is never poisoned"), Key::Ip(ip), now);
    }

    /// A successful attempt: takes back what [`FailureThrottle::attempt`] counted against the
    /// account, and clears the account-and-IP key.
    pub(crate) fn succeeded(&self, account: &str, ip: IpAddr) {
        let mut keys = self.keys.lock().expect("throttle lock is never poisoned");
        keys.remove(&Key::AccountIp(account.to_owned(), ip));
        if let Some(entry) = keys.get_mut(&Key::Account(account.to_owned())) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

/// Counts one failure under `key` (a key quiet for [`FORGET_AFTER`] starts over).
fn count(keys: &mut HashMap<Key, (u32, Instant)>, key: Key, now: Instant) {
    let entry = keys.entry(key).or_insert((0, now));
    if now.duration_since(entry.1) > FORGET_AFTER {
        entry.0 = 0;
    }
    entry.0 += 1;
    entry.1 = now;
}

/// A key without failures for this long starts over.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

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
    fn many_people_logging_in_at_once_from_one_address_are_not_throttled() {
        let throttle = FailureThrottle::new();
        let office: IpAddr = "192.0.2.1".parse().expect("an IP");
        let now = Instant::now();
        let accounts: Vec<String> = (0..200).map(|n| format!("user{n}@x.io")).collect();
        for account in &accounts {
            assert!(throttle.attempt(account, office, now).is_ok(), "{account} from the office");
        }
        for account in &accounts {
            throttle.succeeded(account, office);
        }
        // Failures from the address do count: past 30, it waits.
        for account in accounts.iter().take(31) {
            let _ = throttle.attempt(account, office, now);
            throttle.failed(office, now);
        }
        assert!(throttle.attempt("fresh@x.io", office, now).is_err(), "31 failures slow the address down");
    }

    #[test]
    fn failures_grow_the_delay_without_locking_the_owner_out() {
        let throttle = FailureThrottle::new();
        let attacker: IpAddr = "10.0.0.1".parse().expect("an IP");
        let owner: IpAddr = "10.0.0.2".parse().expect("an IP");
        let t0 = Instant::now();
        // Three guesses at once all count before any of them finished.
        for _ in 0..3 {
            assert!(throttle.attempt("a@x.io", attacker, t0).is_ok());
        }
        assert_eq!(throttle.attempt("a@x.io", attacker, t0), Err(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(throttle.attempt("a@x.io", attacker, t1).is_ok());
        assert_eq!(throttle.attempt("a@x.io", attacker, t1), Err(Duration::from_secs(2)));
        // The owner, from their own IP, is not delayed by the attacker's first failures…
        assert!(throttle.attempt("a@x.io", owner, t1).is_ok());
        throttle.succeeded("a@x.io", owner);
        // …and when many addresses guess (one IP alone is stopped by its own key), the owner
        // waits at most a minute, never forever.
        for k in 0..40u8 {
            let sprayer = IpAddr::from([10, 0, 1, k]);
            let at = t1 + Duration::from_secs(100 * u64::from(k));
            if throttle.attempt("a@x.io", sprayer, at).is_ok() {
                throttle.failed(sprayer, at);
            }
        }
        let late = t1 + Duration::from_secs(3910);
        let wait = throttle.attempt("a@x.io", owner, late).expect_err("account slowed");
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        assert!(throttle.attempt("a@x.io", owner, late + Duration::from_secs(61)).is_ok());
        throttle.succeeded("a@x.io", owner);
    }
}
