//! A sliding-window limit on attempts per key, for logins: one limiter keyed by username slows
//! guessing one account's password or code, one keyed by client address slows one client
//! trying many accounts. It owns the counting and the `Retry-After` a refusal carries.
//!
//! Refused attempts are not counted: a client that waits out its `Retry-After` is always let
//! through, however often it tried meanwhile, so a lockout cannot be extended forever (nor by
//! someone else hammering a victim's username).
//!
//! Memory is bounded whatever clients send: at most `max_keys` keys (the least recently
//! attempted is forgotten first) and at most `max_attempts` instants per key. Forgetting a key
//! forgets its count, so `max_keys` should exceed the keys seen within one window; a key being
//! hammered stays recent and is the last to go.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Counts attempts per key within a sliding window. Thread-safe: share it behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    max_attempts: u32,
    window: Duration,
    /// Per key, the instants of its counted attempts inside the window, oldest first.
    attempts: Mutex<LruCache<String, VecDeque<Instant>>>,
}

/// A refusal: how long until the oldest counted attempt leaves the window and one more
/// attempt is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up (waiting less would be refused again) and at least 1: the
    /// value of a `Retry-After` header.
    pub fn seconds(&self) -> u64 {
        let rounded_up = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        rounded_up.max(1)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "too many attempts: retry after {} s", self.seconds())
    }
}

impl std::error::Error for RetryAfter {}

impl RateLimiter {
    /// Allows `max_attempts` attempts per key in any `window`, tracking at most `max_keys`
    /// keys (at least one).
    pub fn new(max_attempts: u32, window: Duration, max_keys: usize) -> RateLimiter {
        let max_keys = NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            max_attempts,
            window,
            attempts: Mutex::new(LruCache::new(max_keys)),
        }
    }

    /// Counts an attempt of `key` at `now`, or refuses it without counting it when
    /// `max_attempts` attempts already fell inside the window ending at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let mut keys = self.lock();
        let attempts = keys.get_or_insert_mut_ref(key, VecDeque::new);
        while attempts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            attempts.pop_front();
        }
        if attempts.len() < self.max_attempts as usize {
            attempts.push_back(now);
            return Ok(());
        }
        // With `max_attempts` 0 there is no oldest attempt: every attempt waits a window.
        let age = attempts
            .front()
            .map_or(Duration::ZERO, |&t| now.saturating_duration_since(t));
        Err(RetryAfter(self.window.saturating_sub(age)))
    }

    /// Forgets `key`'s attempts, as after a successful login.
    pub fn reset(&self, key: &str) {
        self.lock().pop(key);
    }

    /// A panic elsewhere while holding the lock leaves at worst one attempt uncounted: the
    /// counts are still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, VecDeque<Instant>>> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn allows_max_attempts_then_refuses_until_the_oldest_leaves() {
        let limiter = RateLimiter::new(3, WINDOW, 100);
        let start = Instant::now();
        assert_eq!(limiter.check("alice", start), Ok(()));
        assert_eq!(limiter.check("alice", start + secs(10)), Ok(()));
        assert_eq!(limiter.check("alice", start + secs(20)), Ok(()));
        // The oldest attempt (at 0) leaves the window at 60: 30 s after 30.
        assert_eq!(
            limiter.check("alice", start + secs(30)),
            Err(RetryAfter(secs(30)))
        );
        assert_eq!(
            limiter.check("alice", start + Duration::from_millis(59_500)),
            Err(RetryAfter(Duration::from_millis(500)))
        );
        // At 60 the first attempt is out: one more is allowed, then the next waits for
        // the attempt at 10.
        assert_eq!(limiter.check("alice", start + secs(60)), Ok(()));
        assert_eq!(
            limiter.check("alice", start + secs(61)),
            Err(RetryAfter(secs(9)))
        );
    }

    #[test]
    fn releases_after_the_window() {
        let limiter = RateLimiter::new(2, WINDOW, 100);
        let start = Instant::now();
        for _ in 0..2 {
            assert_eq!(limiter.check("alice", start), Ok(()));
        }
        assert!(limiter.check("alice", start + secs(59)).is_err());
        let later = start + WINDOW;
        assert_eq!(limiter.check("alice", later), Ok(()));
        assert_eq!(limiter.check("alice", later), Ok(()));
        assert_eq!(limiter.check("alice", later), Err(RetryAfter(WINDOW)));
    }

    #[test]
    fn refused_attempts_do_not_extend_the_lockout() {
        let limiter = RateLimiter::new(2, WINDOW, 100);
        let start = Instant::now();
        limiter.check("alice", start).expect("first");
        limiter.check("alice", start).expect("second");
        // Hammering during the lockout: each refusal points to the same instant.
        for s in 1..60 {
            let refused = limiter.check("alice", start + secs(s));
            assert_eq!(refused, Err(RetryAfter(secs(60 - s))), "at {s} s");
        }
        // Waiting out any of those Retry-After values is enough.
        assert_eq!(limiter.check("alice", start + secs(60)), Ok(()));
        let keys = limiter.lock();
        assert!(keys.peek("alice").is_some_and(|a| a.len() <= 2));
    }

    #[test]
    fn keys_are_independent() {
        let limiter = RateLimiter::new(1, WINDOW, 100);
        let now = Instant::now();
        assert_eq!(limiter.check("alice", now), Ok(()));
        assert!(limiter.check("alice", now).is_err());
        assert_eq!(limiter.check("bob", now), Ok(()));
        assert_eq!(limiter.check("10.0.0.1", now), Ok(()));
        assert!(limiter.check("bob", now).is_err());
    }

    #[test]
    fn reset_clears_a_key_only() {
        let limiter = RateLimiter::new(1, WINDOW, 100);
        let now = Instant::now();
        limiter.check("alice", now).expect("alice");
        limiter.check("bob", now).expect("bob");
        limiter.reset("alice");
        assert_eq!(limiter.check("alice", now), Ok(()));
        assert!(limiter.check("bob", now).is_err());
        limiter.reset("nobody");
    }

    #[test]
    fn memory_is_bounded_by_max_keys_and_max_attempts() {
        let limiter = RateLimiter::new(3, WINDOW, 50);
        let now = Instant::now();
        limiter.check("key-0", now).expect("first");
        for i in 0..60 {
            for _ in 0..10 {
                let _ = limiter.check(&format!("key-{i}"), now);
            }
        }
        let keys = limiter.lock();
        assert_eq!(keys.len(), 50);
        assert!(keys.iter().all(|(_, attempts)| attempts.len() <= 3));
        // The least recently attempted went first.
        assert!(keys.peek("key-9").is_none());
        assert!(keys.peek("key-10").is_some());
        drop(keys);
        // An evicted key starts afresh.
        assert_eq!(limiter.check("key-0", now), Ok(()));
    }

    #[test]
    fn recently_attempted_keys_survive_eviction() {
        let limiter = RateLimiter::new(1, WINDOW, 2);
        let now = Instant::now();
        limiter.check("target", now).expect("target");
        for i in 0..10 {
            assert!(limiter.check("target", now).is_err());
            let _ = limiter.check(&format!("spray-{i}"), now);
        }
        assert!(limiter.check("target", now).is_err());
    }

    #[test]
    fn zero_limits_are_usable() {
        let limiter = RateLimiter::new(0, WINDOW, 0);
        let now = Instant::now();
        assert_eq!(limiter.check("alice", now), Err(RetryAfter(WINDOW)));
        assert_eq!(limiter.check("bob", now), Err(RetryAfter(WINDOW)));
        assert_eq!(limiter.lock().len(), 1);
    }

    #[test]
    fn retry_after_seconds_round_up_to_at_least_one() {
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(secs(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1_001)).seconds(), 2);
        assert_eq!(RetryAfter(secs(30)).seconds(), 30);
        assert_eq!(
            RetryAfter(Duration::from_millis(29_500)).to_string(),
            "too many attempts: retry after 30 s"
        );
    }

    #[test]
    fn shared_between_threads() {
        let limiter = std::sync::Arc::new(RateLimiter::new(100, WINDOW, 10));
        let now = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| limiter.check("alice", now).is_ok())
                        .count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(allowed, 100);
    }
}
