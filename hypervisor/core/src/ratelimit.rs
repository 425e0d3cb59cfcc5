//! Rate limits for what a guest can make the hypervisor print: a token
//! bucket measured in counter ticks. A partition gets a burst of lines,
//! then a steady trickle; whatever is cut is counted and said in one line
//! ("N more suppressed") before the next line that passes.

/// How many lines pass at once, and how many a second after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub burst: u32,
    pub per_second: u32,
}

/// Lines a guest causes by misbehaving: injected aborts, virtio faults,
/// refused control calls, unknown registers, crashes.
pub const FAULTS: Budget = Budget {
    burst: 10,
    per_second: 2,
};

/// Lines a guest causes by ordinary actions that it can repeat at will:
/// vCPUs started and stopped, resets, restarts, console input it did not
/// take in time.
pub const EVENTS: Budget = Budget {
    burst: 100,
    per_second: 10,
};

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print it, after a line saying how many were cut before it (when
    /// `suppressed` is not zero).
    Print { suppressed: u32 },
    /// Cut it (it is counted).
    Suppress,
}

/// One token bucket. Credit is kept in counter ticks: each line costs
/// `freq / per_second` ticks and the bucket holds `burst` lines' worth, so
/// no division happens per line and time is never rounded away.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    budget: Budget,
    /// Ticks of credit; `None` until the first line, which finds the
    /// bucket full.
    credit: Option<u64>,
    last: u64,
    suppressed: u32,
    /// Lines cut over the bucket's life, for the status.
    pub total_suppressed: u64,
}

impl RateLimit {
    pub const fn new(budget: Budget) -> Self {
        RateLimit {
            budget,
            credit: None,
            last: 0,
            suppressed: 0,
            total_suppressed: 0,
        }
    }

    fn cost(&self, freq: u64) -> u64 {
        (freq / u64::from(self.budget.per_second.max(1))).max(1)
    }

    /// Decides for one line at counter value `now` (ticking at `freq` per
    /// second). A counter that went backwards gives no credit.
    pub fn check(&mut self, now: u64, freq: u64) -> Verdict {
        let cost = self.cost(freq);
        let cap = cost.saturating_mul(u64::from(self.budget.burst));
        let credit = match self.credit {
            None => cap,
            Some(c) => c.saturating_add(now.saturating_sub(self.last)).min(cap),
        };
        self.last = now;
        if credit >= cost {
            self.credit = Some(credit - cost);
            Verdict::Print {
                suppressed: core::mem::take(&mut self.suppressed),
            }
        } else {
            self.credit = Some(credit);
            self.suppressed = self.suppressed.saturating_add(1);
            self.total_suppressed = self.total_suppressed.saturating_add(1);
            Verdict::Suppress
        }
    }

    /// Lines cut since the last one that passed.
    pub fn pending(&self) -> u32 {
        self.suppressed
    }

    /// Takes the count of lines cut, when a line of another bucket says
    /// it.
    pub fn take_pending(&mut self) -> u32 {
        core::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000;
    const B: Budget = Budget {
        burst: 5,
        per_second: 2,
    };

    fn prints(r: &mut RateLimit, now: u64) -> bool {
        matches!(r.check(now, HZ), Verdict::Print { .. })
    }

    #[test]
    fn a_burst_then_nothing_until_credit_returns() {
        let mut r = RateLimit::new(B);
        for _ in 0..5 {
            assert!(prints(&mut r, 100));
        }
        for _ in 0..1000 {
            assert!(!prints(&mut r, 100));
        }
        assert_eq!(r.pending(), 1000);
        // Half a second buys one line, which carries the count.
        assert_eq!(
            r.check(100 + HZ / 2, HZ),
            Verdict::Print { suppressed: 1000 }
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(r.check(100 + HZ / 2, HZ), Verdict::Suppress);
        assert_eq!(r.total_suppressed, 1001);
        assert_eq!((r.take_pending(), r.pending()), (1, 0));
    }

    #[test]
    fn credit_is_capped_at_the_burst() {
        let mut r = RateLimit::new(B);
        assert!(prints(&mut r, 0));
        // An hour of silence refills the bucket, no more.
        let later = 3600 * HZ;
        let n = (0..100).filter(|_| prints(&mut r, later)).count();
        assert_eq!(n, 5);
    }

    #[test]
    fn steady_rate_is_the_budget() {
        let mut r = RateLimit::new(B);
        // One attempt per millisecond for ten seconds: the burst, then two
        // a second.
        let n = (0..10_000u64)
            .filter(|ms| prints(&mut r, ms * HZ / 1000))
            .count();
        assert!((5 + 19..=5 + 20).contains(&n), "{n} lines passed");
    }

    #[test]
    fn a_counter_going_backwards_or_wrapping_gives_nothing() {
        let mut r = RateLimit::new(B);
        for _ in 0..5 {
            assert!(prints(&mut r, u64::MAX - 10));
        }
        assert!(!prints(&mut r, 3));
        assert!(!prints(&mut r, 0));
        // Time goes on from the new value.
        assert!(prints(&mut r, HZ));
    }

    #[test]
    fn odd_frequencies_and_budgets_never_divide_by_zero() {
        for (freq, per_second) in [(0, 0), (1, 1000), (u64::MAX, 1), (7, 0)] {
            let mut r = RateLimit::new(Budget {
                burst: u32::MAX,
                per_second,
            });
            r.check(0, freq);
            r.check(u64::MAX, freq);
        }
    }
}
