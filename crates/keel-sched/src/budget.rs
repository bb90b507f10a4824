//! [`CapBudget`]: a capped domain's pool of CPU time (credit2's budget).
//!
//! A cap of `c` percent entitles the domain to `c/100` of one CPU:
//! [`BUDGET_PERIOD`]` * c / 100` nanoseconds of run time per period, shared
//! by all its vCPUs. A vCPU about to run grabs a quota from the pool
//! (`total / nr_vcpus`, at least [`MIN_TIMER`]) and gives back what it did
//! not use when it stops; with nothing left in the pool it is parked until
//! the next replenishment. A vCPU that overran its quota (time slices are
//! never shorter than [`MIN_TIMER`]) has the overrun taken from the pool at
//! its next grab, so the cap holds over time.

use crate::{Ns, BUDGET_PERIOD, MIN_TIMER};

/// The budget state of one capped domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CapBudget {
    cap: u16,
    /// Run time per period.
    total: i64,
    /// Run time left in this period (negative after an overrun).
    pool: i64,
    /// When the next period starts.
    next_repl: Ns,
}

/// Run time per [`BUDGET_PERIOD`] for `cap` percent.
fn total_for(cap: u16) -> i64 {
    BUDGET_PERIOD as i64 * i64::from(cap) / 100
}

impl CapBudget {
    /// A full pool for `cap` percent (non-zero), its first period ending at
    /// `next_repl`.
    pub(crate) fn new(cap: u16, next_repl: Ns) -> Self {
        let total = total_for(cap);
        CapBudget { cap, total, pool: total, next_repl }
    }

    /// The cap in percent.
    pub(crate) fn cap(&self) -> u16 {
        self.cap
    }

    /// When the next period starts.
    pub(crate) fn next_repl(&self) -> Ns {
        self.next_repl
    }

    /// Changes the cap; the pool is refilled to the new size from the next period.
    pub(crate) fn set_cap(&mut self, cap: u16) {
        self.cap = cap;
        self.total = total_for(cap);
    }

    /// What one of `nr_vcpus` vCPUs takes from the pool at a time.
    pub(crate) fn quota(&self, nr_vcpus: u32) -> i64 {
        (self.total / i64::from(nr_vcpus.max(1))).max(MIN_TIMER as i64)
    }

    /// Starts every period that began by `now`. Returns whether a period
    /// started and the pool then holds budget (parked vCPUs may run again).
    pub(crate) fn replenish(&mut self, now: Ns) -> bool {
        if self.next_repl > now {
            return false;
        }
        let periods = (now - self.next_repl) / BUDGET_PERIOD + 1;
        self.next_repl = self.next_repl.saturating_add(periods.saturating_mul(BUDGET_PERIOD));
        let added = i64::try_from(periods).unwrap_or(i64::MAX).saturating_mul(self.total);
        self.pool = self.pool.saturating_add(added);
        if self.pool <= 0 {
            return false;
        }
        self.pool = self.pool.min(self.total);
        true
    }

    /// A vCPU holding `held` (<= 0: used up, or overrun) asks for more.
    /// Returns its new holding: up to `quota`, or 0 if the pool is empty.
    pub(crate) fn grab(&mut self, held: i64, quota: i64) -> i64 {
        self.pool = self.pool.saturating_add(held.min(0));
        if self.pool <= 0 {
            return 0;
        }
        let got = quota.min(self.pool);
        self.pool -= got;
        got
    }

    /// A vCPU stopping with `held` left returns it. Returns whether the pool
    /// then holds budget (parked vCPUs may run again).
    pub(crate) fn give_back(&mut self, held: i64) -> bool {
        self.pool = self.pool.saturating_add(held.max(0));
        self.pool > 0
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> i64 {
        self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Ns = 1_000_000;

    #[test]
    fn quota_is_a_share_of_the_period_but_never_below_min_timer() {
        let b = CapBudget::new(150, 10 * MS);
        assert_eq!(b.total, 15 * MS as i64);
        assert_eq!(b.quota(2), 7_500_000);
        assert_eq!(CapBudget::new(1, 0).quota(4), MIN_TIMER as i64);
        assert_eq!(CapBudget::new(50, 0).quota(0), 5 * MS as i64);
    }

    #[test]
    fn grab_give_back_and_overrun() {
        let mut b = CapBudget::new(50, 10 * MS);
        assert_eq!(b.grab(0, 3 * MS as i64), 3 * MS as i64);
        assert_eq!(b.grab(0, 3 * MS as i64), 2 * MS as i64);
        assert_eq!(b.grab(0, 3 * MS as i64), 0);
        // 1 ms unused comes back; a 0.5 ms overrun is charged at the next grab.
        assert!(b.give_back(MS as i64));
        assert_eq!(b.grab(-(MS as i64) / 2, 3 * MS as i64), MS as i64 / 2);
        assert_eq!(b.pool(), 0);
    }

    #[test]
    fn replenishment_catches_up_and_never_overfills() {
        let mut b = CapBudget::new(50, 10 * MS);
        assert!(!b.replenish(10 * MS - 1));
        b.grab(0, 5 * MS as i64);
        assert!(b.replenish(35 * MS));
        assert_eq!(b.next_repl(), 40 * MS);
        assert_eq!(b.pool(), 5 * MS as i64);
        // An overrun bigger than a period keeps the domain parked one more period.
        b.grab(-(12 * MS as i64), MS as i64);
        assert!(!b.replenish(40 * MS));
        assert!(b.replenish(50 * MS));
        assert_eq!(b.pool(), 3 * MS as i64);
    }

    proptest! {
        /// Whatever the pattern of grabs, uses and returns, the time handed
        /// out and used up to any point never exceeds the cap's share of the
        /// periods begun so far plus one time slice's overrun.
        #[test]
        fn handed_out_time_respects_the_cap(cap in 1u16..400, steps in proptest::collection::vec((0u8..3, 0i64..20_000_000), 1..200)) {
            let mut b = CapBudget::new(cap, 10 * MS);
            let quota = b.quota(1);
            let mut now = 0;
            let mut held = 0i64;
            let mut used = 0i64;
            for (op, amount) in steps {
                match op {
                    0 => held = b.grab(held, quota),
                    1 if held > 0 => {
                        // Run on what it holds; a time slice may overrun it
                        // by up to MIN_TIMER.
                        let run = amount.min(held + MIN_TIMER as i64);
                        held -= run;
                        used += run;
                    }
                    1 => {}
                    _ => {
                        b.give_back(held);
                        held = held.min(0);
                        now += amount as Ns;
                        b.replenish(now);
                    }
                }
            }
            let periods = (now / (10 * MS)) as i64 + 1;
            prop_assert!(used <= periods * b.total + MIN_TIMER as i64);
        }
    }
}
