//! How long to wait before trying again after failures: the same rule for every service that
//! reconnects (an edge's sync, the projectors).

use std::time::Duration;

/// 200 ms doubling per failure up to `cap`, with up to 50 % random jitter so that many clients
/// coming back at once do not reconnect in step.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base =
        Duration::from_millis(200).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let capped = base.min(cap);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(30);
        assert!(backoff(1, cap) <= Duration::from_millis(200));
        assert!(backoff(4, cap) >= Duration::from_millis(800));
        for failures in [20, 100, u32::MAX] {
            let d = backoff(failures, cap);
            assert!(d <= cap && d >= cap / 2, "{d:?}");
        }
    }
}
