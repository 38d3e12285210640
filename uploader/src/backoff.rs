//! Exponential backoff with full jitter, for reconnecting the push stream and retrying uploads.
//!
//! The n-th wait is a uniformly random duration in `[base·2ⁿ / 2, base·2ⁿ]`, capped at `max`:
//! random so that a thousand devices that lost the console at the same moment do not all come
//! back at the same moment, never below half so a device does not hammer a console that is
//! down. `reset()` after a success starts again from `base`.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max: max.max(base), attempt: 0 }
    }

    /// The wait before the next attempt; each call doubles the ceiling until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        let span = ceiling - low;
        low + span.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Default for Backoff {
    /// 500 ms doubling to 60 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let expected_ceilings = [100u64, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in expected_ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                b.next_delay();
                b.next_delay()
            })
            .collect();
        assert!(
            delays.len() > 40,
            "50 devices should not retry at the same instants: {}",
            delays.len()
        );
    }

    #[tokio::test]
    async fn wait_sleeps_within_the_bounds() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(80));
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            b.wait().await;
        }
        // Ceilings 10+20+40+80 = 150 ms, floors half of that; sleeping never ends early.
        assert!(start.elapsed() >= Duration::from_millis(75), "{:?}", start.elapsed());
        assert_eq!(b.attempts(), 4);
    }
}
