//! How often sign-in may be tried: per username (guessing one account's password) and per
//! client address (trying many accounts). Over either limit: 429 with `Retry-After`.

use crate::http::ApiError;
use platform::rate_limit::RateLimiter;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Attempts per username, and per address, within [`WINDOW`].
pub const PER_USER: u32 = 10;
pub const PER_ADDRESS: u32 = 50;
pub const WINDOW: Duration = Duration::from_secs(300);
/// The most usernames and addresses remembered.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct LoginLimits {
    users: RateLimiter,
    addresses: RateLimiter,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginLimits {
    pub fn new() -> Self {
        Self::with(PER_USER, PER_ADDRESS, WINDOW)
    }

    pub fn with(per_user: u32, per_address: u32, window: Duration) -> Self {
        LoginLimits {
            users: RateLimiter::new(per_user, window, MAX_KEYS),
            addresses: RateLimiter::new(per_address, window, MAX_KEYS),
        }
    }

    /// Counts one attempt; 429 when the username or the address has tried too often.
    pub fn check(&self, username: &str, address: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        self.addresses
            .check(&address.to_string(), now)
            .and_then(|()| self.users.check(username, now))
            .map_err(|wait| ApiError::TooManyRequests(wait.seconds()))
    }

    /// A successful sign-in clears its username's count (not its address's).
    pub fn succeeded(&self, username: &str) {
        self.users.reset(username);
    }
}
