//! GCRA (the generic cell rate algorithm) as pure arithmetic.
//!
//! A limit of N per period admits a burst of up to N and refills smoothly at N per period: no
//! fixed windows, so no double bursts at window edges. The whole state of one limiter is a
//! single number, the theoretical arrival time (TAT), which makes it cheap to keep in memory
//! and to update atomically in a shared store. Time is in nanoseconds since any fixed epoch.

/// One limit: `limit` requests per `period_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period_ns: u64,
}

impl Quota {
    /// `limit` per minute.
    #[must_use]
    pub fn per_minute(limit: u32) -> Self {
        Self { limit: limit.max(1), period_ns: 60_000_000_000 }
    }

    /// Time for one request's worth of capacity to refill: the period over the limit, rounded
    /// down to a whole nanosecond.
    #[must_use]
    pub fn emission_interval_ns(self) -> u64 {
        self.period_ns / u64::from(self.limit.max(1))
    }

    /// How far ahead of now the TAT may run: `limit` intervals, so a burst is exactly `limit`
    /// requests whether or not the limit divides the period (the period itself would admit one
    /// more for every whole interval the rounding lost: 777,785 for 777,777 a minute).
    #[must_use]
    pub fn burst_ns(self) -> u64 {
        self.emission_interval_ns() * u64::from(self.limit.max(1))
    }
}

/// The TAT that keeps what was spent under `from` spent under `to`, measured in requests (SPEC
/// §5): a limit raised from 5 to 1,000 with 5 spent has 995 left at once; lowered from 1,000 to 5
/// with 10 spent, it refuses until the excess has refilled. An idle limiter (TAT in the past)
/// is full under any quota and stays as it is.
#[must_use]
pub fn rescale(tat_ns: u64, now_ns: u64, from: Quota, to: Quota) -> u64 {
    let debt = tat_ns.saturating_sub(now_ns);
    if debt == 0 || from == to {
        return tat_ns;
    }
    // debt / from_interval requests, each now worth to_interval: in u128, with no rounding
    // until the end.
    let scaled =
        u128::from(debt) * u128::from(to.emission_interval_ns()) / u128::from(from.emission_interval_ns().max(1));
    now_ns.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still be admitted right now (after this one, if admitted).
    pub remaining: u32,
    /// Nanoseconds until the limiter is full again (all `limit` available).
    pub reset_after_ns: u64,
    /// When refused: nanoseconds until a request of this cost would be admitted. 0 if allowed.
    pub retry_after_ns: u64,
    /// The new TAT to store (unchanged when refused).
    pub tat_ns: u64,
}

/// Checks a request costing `cost` at time `now_ns` against a limiter whose stored TAT is
/// `tat_ns` (0 for a fresh limiter), and returns the decision and the TAT to store.
#[must_use]
pub fn check(quota: Quota, tat_ns: u64, now_ns: u64, cost: u32) -> Decision {
    let interval = quota.emission_interval_ns();
    let burst_ns = quota.burst_ns(); // tolerance: `limit` requests' worth
    let tat = tat_ns.max(now_ns);
    let increment = interval.saturating_mul(u64::from(cost));
    let new_tat = tat.saturating_add(increment);
    // Admit when the new TAT is at most a burst ahead of now.
    let allow_at = new_tat.saturating_sub(burst_ns);
    if allow_at <= now_ns {
        Decision {
            allowed: true,
            remaining: remaining(quota, new_tat, now_ns),
            reset_after_ns: new_tat - now_ns,
            retry_after_ns: 0,
            tat_ns: new_tat,
        }
    } else {
        Decision {
            allowed: false,
            remaining: remaining(quota, tat, now_ns),
            reset_after_ns: tat - now_ns,
            retry_after_ns: allow_at - now_ns,
            tat_ns,
        }
    }
}

/// Would a request of `cost` be admitted now? Like [`check`] without consuming.
#[must_use]
pub fn peek(quota: Quota, tat_ns: u64, now_ns: u64, cost: u32) -> bool {
    check(quota, tat_ns, now_ns, cost).allowed
}

fn remaining(quota: Quota, tat: u64, now: u64) -> u32 {
    let used_ns = tat.saturating_sub(now);
    let free_ns = quota.burst_ns().saturating_sub(used_ns);
    u32::try_from(free_ns / quota.emission_interval_ns()).unwrap_or(u32::MAX).min(quota.limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescaling_keeps_what_was_spent_in_requests() {
        let now = 1_000 * SEC;
        let five = Quota::per_minute(5);
        let thousand = Quota::per_minute(1_000);
        // Five of five spent: raised to 1,000, 995 remain at once.
        let mut tat = 0;
        for _ in 0..5 {
            tat = check(five, tat, now, 1).tat_ns;
        }
        assert!(!check(five, tat, now, 1).allowed);
        let raised = rescale(tat, now, five, thousand);
        let d = check(thousand, raised, now, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 994, "995 left before this one");
        // Ten of 1,000 spent: lowered to 5, refused at once, for as long as 10 requests take at 5/min.
        let mut tat = 0;
        for _ in 0..10 {
            tat = check(thousand, tat, now, 1).tat_ns;
        }
        let lowered = rescale(tat, now, thousand, five);
        let d = check(five, lowered, now, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, 72 * SEC, "10 requests at 12 s each, less the 60 s burst, plus one");
        // Idle: unchanged; same quota: unchanged.
        assert_eq!(rescale(now - SEC, now, five, thousand), now - SEC);
        assert_eq!(rescale(now + SEC, now, five, five), now + SEC);
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_exactly_the_limit_whatever_it_divides() {
        let now = 1_000 * SEC;
        for limit in [7, 9_999, 777_777, 4_000_000_000] {
            let q = Quota::per_minute(limit);
            let first = check(q, 0, now, 1);
            assert_eq!(first.remaining, limit - 1, "{limit}");
            let rest = check(q, first.tat_ns, now, limit - 1);
            assert!(rest.allowed, "{limit}");
            assert!(!check(q, rest.tat_ns, now, 1).allowed, "{limit}: one more is refused");
        }
    }

    fn run(quota: Quota, times: &[u64]) -> Vec<bool> {
        let mut tat = 0;
        times
            .iter()
            .map(|&t| {
                let d = check(quota, tat, t, 1);
                tat = d.tat_ns;
                d.allowed
            })
            .collect()
    }

    #[test]
    fn admits_a_full_burst_then_refuses() {
        let q = Quota::per_minute(10);
        let start = 1_000 * SEC;
        let results = run(q, &[start; 11]);
        assert_eq!(results.iter().filter(|a| **a).count(), 10);
        assert!(!results[10]);
    }

    #[test]
    fn refills_one_per_interval() {
        let q = Quota::per_minute(60); // one per second
        let start = 1_000 * SEC;
        let mut tat = 0;
        for _ in 0..60 {
            tat = check(q, tat, start, 1).tat_ns;
        }
        let refused = check(q, tat, start, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ns, SEC);
        assert!(!check(q, tat, start + SEC - 1, 1).allowed);
        let admitted = check(q, tat, start + SEC, 1);
        assert!(admitted.allowed);
        assert_eq!(admitted.remaining, 0);
    }

    #[test]
    fn remaining_and_reset_count_down() {
        let q = Quota::per_minute(100);
        let d = check(q, 0, 10 * SEC, 1);
        assert_eq!(d.remaining, 99);
        assert_eq!(d.reset_after_ns, q.emission_interval_ns());
        let d2 = check(q, d.tat_ns, 10 * SEC, 1);
        assert_eq!(d2.remaining, 98);
    }

    #[test]
    fn cost_above_limit_is_never_admitted_and_refusal_does_not_consume() {
        let q = Quota::per_minute(5);
        let d = check(q, 0, 10 * SEC, 6);
        assert!(!d.allowed);
        assert_eq!(d.tat_ns, 0);
    }

    #[test]
    fn a_long_idle_period_does_not_bank_more_than_one_burst() {
        let q = Quota::per_minute(3);
        let results = run(q, &[SEC, 3_600 * SEC, 3_600 * SEC, 3_600 * SEC, 3_600 * SEC]);
        assert_eq!(results, vec![true, true, true, true, false]);
    }
}
