//! Per-vCPU scheduling state and credit2's credit arithmetic.
//!
//! Credit is measured in nanoseconds of "highest-weight time": the vCPU with
//! the runqueue's highest weight burns one credit per nanosecond it runs, a
//! vCPU of weight `w` burns `max_weight / w` per nanosecond (Xen's `t2c`,
//! with the division remainder carried over so that many short runs are
//! charged exactly). [`Vcpu::credit_to_time`] is the inverse (Xen's `c2t`).

use crate::cpuset::{Cpu, CpuSet};
use crate::{DomKey, Ns, MIN_TIMER};

/// Credit every vCPU starts with and that a reset adds (10 ms of
/// highest-weight time; Xen's `CSCHED2_CREDIT_INIT`).
pub(crate) const CREDIT_INIT: i64 = 10_000_000;

/// Credit never drops below this (Xen's `CSCHED2_CREDIT_MIN`).
pub(crate) const CREDIT_MIN: i64 = -CREDIT_INIT;

/// The idle "vCPU"'s credit: below every real vCPU's.
pub(crate) const IDLE_CREDIT: i64 = CREDIT_MIN - 1;

/// How much credit above [`CREDIT_INIT`] survives a reset
/// (Xen's `CSCHED2_CARRYOVER_MAX`).
pub(crate) const CARRYOVER_MAX: i64 = MIN_TIMER as i64;

/// Where a vCPU is, as far as the scheduler is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Neither queued nor running: blocked, parked, or both.
    Off,
    /// Waiting in the runqueue.
    Queued,
    /// Current on this CPU.
    Running(Cpu),
}

/// One vCPU's scheduling state.
#[derive(Clone, Debug)]
pub(crate) struct Vcpu {
    pub(crate) dom: DomKey,
    /// CPUs it may run on (already limited to the scheduler's CPUs; never empty).
    pub(crate) hard: CpuSet,
    /// CPUs it prefers, as given (default: all).
    pub(crate) soft: CpuSet,
    /// Its domain's weight (1..=65535).
    pub(crate) weight: u32,
    pub(crate) credit: i64,
    /// Remainder of the last credit burn, in units of 1/weight credit.
    pub(crate) residual: u64,
    /// Budget grabbed from the domain's cap pool: `None` when the domain is
    /// uncapped. May go negative by an overrun, charged at the next grab.
    pub(crate) budget: Option<i64>,
    /// Time up to which run time has been charged while running.
    pub(crate) start_time: Ns,
    /// When it was last switched in (the ratelimit counts from here).
    pub(crate) run_start: Ns,
    /// CPU it last ran on or is meant for (Xen's `sched_unit_master`).
    pub(crate) processor: Cpu,
    /// CPU asked to pick it up, if any.
    pub(crate) tickled_cpu: Option<Cpu>,
    pub(crate) place: Place,
    /// Asleep (blocked, paused, down) as told by keel.
    pub(crate) blocked: bool,
    /// Out of cap budget, waiting for budget.
    pub(crate) parked: bool,
    /// Asked to yield at its CPU's next scheduling decision.
    pub(crate) yielding: bool,
    /// Total time charged to it.
    pub(crate) runtime: Ns,
}

impl Vcpu {
    /// A new, asleep vCPU with full credit.
    pub(crate) fn new(dom: DomKey, hard: CpuSet, processor: Cpu, weight: u32, capped: bool) -> Self {
        Vcpu {
            dom,
            hard,
            soft: CpuSet::all(),
            weight,
            credit: CREDIT_INIT,
            residual: 0,
            budget: capped.then_some(0),
            start_time: 0,
            run_start: 0,
            processor,
            tickled_cpu: None,
            place: Place::Off,
            blocked: true,
            parked: false,
            yielding: false,
            runtime: 0,
        }
    }

    /// Awake and not waiting for cap budget.
    pub(crate) fn runnable(&self) -> bool {
        !self.blocked && !self.parked
    }

    /// The soft affinity that matters for placement: the CPUs of `soft`
    /// that it may use, if those are a proper, non-empty part of `hard`
    /// (Xen's `has_soft_affinity`).
    pub(crate) fn effective_soft(&self) -> Option<CpuSet> {
        let soft = self.soft & self.hard;
        (!soft.is_empty() && soft != self.hard).then_some(soft)
    }

    /// Whether it owns at least one nanosecond of cap budget (or is uncapped).
    pub(crate) fn has_budget(&self) -> bool {
        self.budget.is_none_or(|b| b > 0)
    }

    /// A CPU it may run on to record as `processor` when the current one is
    /// no longer allowed: a preferred CPU if it has any, else the first one.
    pub(crate) fn fallback_cpu(&self) -> Cpu {
        if self.hard.contains(self.processor) {
            return self.processor;
        }
        let set = self.effective_soft().unwrap_or(self.hard);
        set.first().unwrap_or(self.processor)
    }

    /// Charges the time since `start_time` (credit, budget, run time).
    /// Time running backwards charges nothing.
    pub(crate) fn burn(&mut self, now: Ns, max_weight: u32) {
        let delta = now.saturating_sub(self.start_time);
        if delta == 0 {
            return;
        }
        let weight = u128::from(self.weight.max(1));
        let scaled = u128::from(delta) * u128::from(max_weight) + u128::from(self.residual);
        // The remainder is below `weight`, which fits in 32 bits.
        self.residual = (scaled % weight) as u64;
        let burnt = i64::try_from(scaled / weight).unwrap_or(i64::MAX);
        self.credit = self.credit.saturating_sub(burnt).max(CREDIT_MIN);
        let delta_signed = i64::try_from(delta).unwrap_or(i64::MAX);
        if let Some(budget) = self.budget.as_mut() {
            *budget = budget.saturating_sub(delta_signed);
        }
        self.runtime = self.runtime.saturating_add(delta);
        self.start_time = now;
    }

    /// How long it runs to burn `credit` (0 for no credit).
    pub(crate) fn credit_to_time(&self, credit: i64, max_weight: u32) -> Ns {
        if credit <= 0 {
            return 0;
        }
        let time = i128::from(credit) * i128::from(self.weight) / i128::from(max_weight.max(1));
        Ns::try_from(time).unwrap_or(Ns::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vcpu(weight: u32) -> Vcpu {
        Vcpu::new(DomKey(0), CpuSet::range(0..4), Cpu(0), weight, false)
    }

    #[test]
    fn highest_weight_burns_one_credit_per_ns_others_proportionally_more() {
        let mut hi = vcpu(512);
        hi.burn(1_000, 512);
        assert_eq!(hi.credit, CREDIT_INIT - 1_000);
        let mut lo = vcpu(256);
        lo.burn(1_000, 512);
        assert_eq!(lo.credit, CREDIT_INIT - 2_000);
        assert_eq!(lo.runtime, 1_000);
        assert_eq!(lo.start_time, 1_000);
    }

    #[test]
    fn residual_makes_short_runs_add_up() {
        let mut v = vcpu(3);
        for t in 1..=3 {
            v.burn(t, 4); // 4/3 credit per ns
        }
        assert_eq!(v.credit, CREDIT_INIT - 4);
        assert_eq!(v.residual, 0);
    }

    #[test]
    fn credit_is_floored_and_backwards_time_is_ignored() {
        let mut v = vcpu(1);
        v.burn(1_000_000_000, 65_535);
        assert_eq!(v.credit, CREDIT_MIN);
        v.burn(5, 65_535);
        assert_eq!((v.credit, v.start_time, v.runtime), (CREDIT_MIN, 1_000_000_000, 1_000_000_000));
        v.burn(u64::MAX, 65_535);
        assert_eq!(v.credit, CREDIT_MIN);
    }

    #[test]
    fn budget_is_charged_only_when_capped() {
        let mut v = vcpu(256);
        v.budget = Some(100);
        v.burn(250, 256);
        assert_eq!(v.budget, Some(-150));
        assert!(!v.has_budget());
        assert!(vcpu(1).has_budget());
    }

    #[test]
    fn soft_affinity_counts_only_when_it_narrows_hard() {
        let mut v = vcpu(1);
        assert_eq!(v.effective_soft(), None);
        v.soft = CpuSet::range(2..8);
        assert_eq!(v.effective_soft(), Some(CpuSet::range(2..4)));
        v.soft = CpuSet::range(4..8);
        assert_eq!(v.effective_soft(), None);
        v.processor = Cpu(9);
        assert_eq!(v.fallback_cpu(), Cpu(0));
        v.soft = CpuSet::single(Cpu(3));
        assert_eq!(v.fallback_cpu(), Cpu(3));
    }

    proptest! {
        #[test]
        fn credit_to_time_inverts_burn(weight in 1u32..=65_535, extra in 0u32..=65_535, credit in 1i64..CREDIT_INIT) {
            let max_weight = weight.saturating_add(extra).min(65_535);
            let v = vcpu(weight);
            let t = v.credit_to_time(credit, max_weight);
            let mut b = v.clone();
            b.burn(t, max_weight);
            // Running for the computed time burns the credit, give or take
            // one nanosecond's worth of rounding.
            let burnt = CREDIT_INIT - b.credit;
            prop_assert!(burnt <= credit);
            prop_assert!(credit - burnt <= i64::from(max_weight / weight) + 1);
        }
    }
}
