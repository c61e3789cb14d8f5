//! How long a watcher waits before reconnecting: capped exponential backoff with jitter.
//!
//! The schedule is pure ([`Backoff::delay_for`]) so it can be tested; the only impurity is
//! the jitter source, a `RandomState` hash, which avoids a dependency on `rand` for one
//! number per reconnect.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Reconnect schedule for one watcher.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            failures: 0,
        }
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = Self::delay_for(self.first, self.cap, self.failures, random_unit());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// A connection worked: start again from the first delay next time.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Delay after `failures` consecutive failures: `first * 2^failures`, capped, then
    /// spread over [50%, 100%] by `jitter` in [0, 1) so that many watchers cut off at once
    /// (suspend, network change) do not reconnect in lockstep.
    pub fn delay_for(first: Duration, cap: Duration, failures: u32, jitter: f64) -> Duration {
        let exp = first.saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX));
        let full = exp.min(cap);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

fn random_unit() -> f64 {
    let r = RandomState::new().hash_one(std::time::Instant::now());
    (r >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_until_the_cap() {
        let cap = Duration::from_secs(300);
        let full: Vec<u64> = (0..12)
            .map(|n| Backoff::delay_for(S, cap, n, 1.0).as_secs())
            .collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn jitter_spreads_between_half_and_full() {
        let cap = Duration::from_secs(300);
        assert_eq!(Backoff::delay_for(S * 4, cap, 0, 0.0), S * 2);
        assert_eq!(Backoff::delay_for(S * 4, cap, 0, 1.0), S * 4);
        for _ in 0..100 {
            let d = Backoff::new(S * 4, cap).next_delay();
            assert!(d >= S * 2 && d <= S * 4, "{d:?}");
        }
    }

    #[test]
    fn huge_failure_counts_stay_at_the_cap() {
        let cap = Duration::from_secs(300);
        assert_eq!(Backoff::delay_for(S, cap, u32::MAX, 1.0), cap);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(S, Duration::from_secs(300));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= S);
    }
}
