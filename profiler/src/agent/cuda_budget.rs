//! Keeps what the CUDA launch probes add to the launching threads under the
//! configured share of a core. A uprobe costs the calling thread a trap on
//! every call; an eager decode loop launches tens of thousands of kernels a
//! second. After each window the launch rate seen is priced at the measured
//! cost of a probed call; when the price is over the budget, the launch
//! probes are on for only that fraction of the next window (from its start),
//! and its launch counts are scaled up by the inverse: estimates then, exact
//! otherwise. Sync calls are rare and stay probed throughout.

use std::time::Duration;

/// What a probed launch costs the calling thread, trap and program, stack
/// samples included: the `cuda` benchmark (docs/gpu.md) measured 1.1 µs a
/// call in a tight loop and about 1.6 µs in a paced one, where the caches
/// are cold as in a real decode loop; rounded up.
pub const PROBED_CALL_NS: f64 = 2000.0;

/// The launch probes are on for at least this share of a window, so that
/// every window has launch stacks.
const MIN_DUTY: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaunchBudget {
    /// Fraction of one core.
    max_overhead: f64,
    /// Fraction of the current window the launch probes are on for.
    duty: f64,
}

impl LaunchBudget {
    pub fn new(max_overhead: f64) -> Self {
        Self {
            max_overhead,
            duty: 1.0,
        }
    }

    /// The share of the current window the launch probes are on for.
    pub fn duty(&self) -> f64 {
        self.duty
    }

    /// How long into a window of `window` the launch probes stay on.
    pub fn on_for(&self, window: Duration) -> Duration {
        window.mul_f64(self.duty)
    }

    /// After a window whose launch probes were on for `probed` and counted
    /// `launches`: sets the duty of the next window, and returns it.
    pub fn next_window(&mut self, launches: u64, probed: Duration) -> f64 {
        if probed.is_zero() {
            return self.duty;
        }
        let rate = launches as f64 / probed.as_secs_f64();
        let always_on = rate * PROBED_CALL_NS / 1e9;
        self.duty = if always_on <= self.max_overhead {
            1.0
        } else {
            (self.max_overhead / always_on).clamp(MIN_DUTY, 1.0)
        };
        self.duty
    }

    /// `launches` counted while the probes were on for `probed` of a
    /// window of `window`, scaled to the window.
    pub fn scale(launches: u64, probed: Duration, window: Duration) -> u64 {
        if probed >= window || probed.is_zero() {
            launches
        } else {
            (launches as f64 * window.as_secs_f64() / probed.as_secs_f64()).round() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_on_under_the_budget_and_duty_cycles_over_it() {
        let mut budget = LaunchBudget::new(0.01);
        let second = Duration::from_secs(1);
        // 1k launches/s at 2 us: 0.2% of a core.
        assert_eq!(budget.next_window(1_000, second), 1.0);
        // 20k/s: 4% always on, so a quarter of each window.
        let duty = budget.next_window(20_000, second);
        assert!((duty - 0.25).abs() < 1e-9, "{duty}");
        assert_eq!(budget.on_for(Duration::from_secs(16)).as_secs(), 4);
        // Measured over the part of the window it was on for.
        let duty = budget.next_window(100_000, Duration::from_secs(5));
        assert!((duty - 0.25).abs() < 1e-9, "{duty}");
        // Never off for a whole window.
        assert_eq!(budget.next_window(100_000_000, second), MIN_DUTY);
        // Back on in full when the rate drops.
        assert_eq!(budget.next_window(10, Duration::from_millis(300)), 1.0);
    }

    #[test]
    fn counts_scale_to_the_window_they_were_probed_in() {
        let window = Duration::from_secs(15);
        let scale = LaunchBudget::scale;
        assert_eq!(scale(1_000, window, window), 1_000);
        assert_eq!(scale(1_000, Duration::from_secs(16), window), 1_000);
        assert_eq!(scale(100_000, Duration::from_secs(5), window), 300_000);
        assert_eq!(scale(7, Duration::ZERO, window), 7);
    }
}
