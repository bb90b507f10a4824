//! keel's vCPU scheduling policy: Xen 4.17's credit2, on a clock it is given.
//!
//! This crate decides which vCPU each physical CPU runs and for how long. It
//! has no hardware, no locks and no time source: keel calls it under one
//! lock with `now` (nanoseconds of its monotonic clock) and carries out what
//! it says: context switch, arm the CPU's timer for [`Decision::until`], send
//! a reschedule IPI to the CPUs in an [`Event`] or [`Decision::kick`]. Tests
//! drive it with a simulated clock.
//!
//! # What users get (credit2's contract)
//!
//! - **Weight** (per domain, 1..=65535, default [`DEFAULT_WEIGHT`]): vCPUs
//!   competing for the same CPUs get CPU time in proportion to their
//!   domain's weight.
//! - **Cap** (per domain, percent of one CPU, 0 = none): the domain's vCPUs
//!   together never get more than `cap`% of a CPU per [`BUDGET_PERIOD`].
//! - **Hard affinity** (per vCPU): the CPUs it may run on; never violated.
//!   **Soft affinity**: the CPUs it prefers; used when placing it.
//! - **Latency**: a waking vCPU with more credit than a running one preempts
//!   it (once that one has run for the ratelimit, default
//!   [`DEFAULT_RATELIMIT`]); an idle CPU it may use is told to pick it up.
//! - **Yield**: a yielding vCPU lets the best waiting vCPU run.
//!
//! # How credit2 works, and where that lives here
//!
//! - *Credit* (module `vcpu`): every vCPU starts with 10 ms of credit.
//!   Running burns it at `max_weight / weight` credits per nanosecond, so the
//!   highest weight burns one per ns and lighter vCPUs burn faster.
//! - *Runqueue* (module `runqueue`): waiting vCPUs are ordered by
//!   credit. A CPU runs the vCPU with most credit that may run there
//!   (`runq_candidate`); a vCPU last run on another CPU is only pulled if it
//!   has 0.5 ms more credit than the alternative (migration resistance), and
//!   gets 50 us of credit for the migration.
//! - *Epochs*: when the best candidate has no credit left, every vCPU gets
//!   10 ms more, clipped to 10.5 ms (`reset_credit`). Weights therefore
//!   decide how much of each epoch a vCPU gets.
//! - *Time slice* (`csched2_runtime`): until the vCPU's credit would fall to
//!   that of the best waiting vCPU (or to zero), bounded by [`MIN_TIMER`]
//!   (or what is left of the ratelimit) and [`MAX_TIMER`], and by its budget.
//! - *Tickling* (`runq_tickle`): a newly queued vCPU asks an idle CPU it may
//!   use (preferring its soft affinity, then its last CPU) to reschedule, or
//!   else the busy CPU whose vCPU it beats by most credit (by 0.5 ms more if
//!   that means migrating). A vCPU inside its ratelimit is not preempted.
//! - *Caps* (module `budget`): a domain's budget pool is refilled
//!   every period; vCPUs grab quotas from it to run and return leftovers;
//!   vCPUs finding it empty are parked until the next refill.
//! - *Yield*: 4.17 has no yield bias (older credit2's `CSCHED2_YIELD_BIAS`
//!   was removed): the yielding vCPU skips the ratelimit and the credit
//!   comparison once, so the best waiting vCPU that may use the CPU runs,
//!   and the yielder goes back in the queue by its credit.
//!
//! # Differences from Xen
//!
//! - One runqueue for all CPUs (Xen's default is one per socket, up to 16
//!   CPUs each), hence no load tracking or balancing between runqueues, and
//!   no SMT awareness (every CPU counts as its own core). CPUs are fixed at
//!   [`Scheduler::new`]: no hotplug or cpupools.
//! - Context switches are synchronous: when [`Scheduler::schedule`] returns,
//!   the previous vCPU is already back in the queue (Xen does this in
//!   `context_saved`, after the switch). keel must therefore have saved its
//!   state before calling `schedule`. As in Xen, the new vCPU's time slice is
//!   computed before the previous one is queued again.
//! - Xen replenishes each capped domain's budget from a per-domain timer.
//!   Here budgets are replenished inside `schedule`; while an awake vCPU
//!   waits for budget, every CPU's decision ends by the next replenishment,
//!   so some CPU is there to do it. A domain added with a cap starts its
//!   periods on the 10 ms grid of keel's clock; one capped later starts them
//!   then.
//! - Xen rejects a cap above 100% per vCPU of the domain; this crate accepts
//!   any cap (one that large never binds). The domctl handler, which knows
//!   the vCPU count, can apply Xen's check.
//! - Parked vCPUs are released in the order they were parked.
//!
//! Two deliberate changes to the algorithm, both where Xen leaves a CPU
//! doing the wrong thing until some unrelated event:
//!
//! - *Deferred preemption.* Xen drops a wake-up preemption if the vCPU to
//!   be preempted is inside its ratelimit, so the waker waits for the rest
//!   of that vCPU's slice (up to 10 ms). Here, when no CPU can be preempted
//!   at once, the one that could be after its ratelimit is tickled; its
//!   `schedule` keeps the running vCPU (ratelimit) and returns a decision
//!   ending with the ratelimit, then switches. A running vCPU is still
//!   never preempted by a wake-up before the ratelimit.
//! - *Idle CPUs always pull.* Xen's migration resistance also applies when
//!   the alternative is idling, so an idle CPU ignores a vCPU at the credit
//!   floor that last ran elsewhere; with that CPU idle too (e.g. it just
//!   gave the vCPU up for its soft affinity), the vCPU is never run. Here
//!   an idle CPU takes any vCPU it may run.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(test)]
extern crate std;

mod budget;
mod cpuset;
mod runqueue;
mod sched;
mod vcpu;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use core::fmt;

pub use cpuset::{Cpu, CpuSet, Iter as CpuSetIter, MAX_CPUS};
pub use sched::Scheduler;

/// Time in nanoseconds on keel's monotonic clock.
pub type Ns = u64;

/// A vCPU, by keel's key for it (unique across domains).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuKey(pub u32);

/// A domain, by keel's key for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomKey(pub u32);

/// Weight of a domain that was not given one (Xen's default).
pub const DEFAULT_WEIGHT: u16 = 256;

/// Shortest time slice (Xen's `CSCHED2_MIN_TIMER`).
pub const MIN_TIMER: Ns = 500_000;

/// Longest time slice (Xen's `CSCHED2_MAX_TIMER`).
pub const MAX_TIMER: Ns = 10_000_000;

/// Period over which caps are enforced (Xen's `credit2_cap_period_ms`
/// default).
pub const BUDGET_PERIOD: Ns = 10_000_000;

/// Default context-switch ratelimit (Xen's `sched_ratelimit_us` default).
pub const DEFAULT_RATELIMIT: Ns = 1_000_000;

/// Smallest non-zero ratelimit (Xen's `XEN_SYSCTL_SCHED_RATELIMIT_MIN`).
pub const RATELIMIT_MIN: Ns = 100_000;

/// Largest ratelimit (Xen's `XEN_SYSCTL_SCHED_RATELIMIT_MAX`).
pub const RATELIMIT_MAX: Ns = 500_000_000;

/// Something a call asks keel to do on another CPU (or its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing.
    None,
    /// This CPU must call [`Scheduler::schedule`] soon: keel sends it a
    /// reschedule IPI (or, if it is the calling CPU, reschedules when done).
    Reschedule(Cpu),
}

/// What a CPU runs next ([`Scheduler::schedule`]'s answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run; `None` means idle.
    pub run: Option<VcpuKey>,
    /// When to call `schedule` on this CPU again at the latest; `None`
    /// means only when told to.
    pub until: Option<Ns>,
    /// CPUs that must call `schedule` soon (each gets a reschedule IPI). It
    /// may include the calling CPU: then call `schedule` again straight away.
    pub kick: CpuSet,
}

/// A domain's scheduling parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomParams {
    /// Relative share of CPU time (1..=65535).
    pub weight: u16,
    /// At most this percentage of one CPU; 0 = no cap.
    pub cap: u16,
}

/// Why the scheduler refused a request. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// No domain with this key.
    UnknownDomain(DomKey),
    /// No vCPU with this key.
    UnknownVcpu(VcpuKey),
    /// A domain with this key exists already.
    DomainExists(DomKey),
    /// A vCPU with this key exists already.
    VcpuExists(VcpuKey),
    /// Weights start at 1.
    ZeroWeight,
    /// The affinity names none of the scheduler's CPUs.
    EmptyAffinity,
    /// The vCPU is running on this CPU; it must be descheduled first.
    VcpuRunning(VcpuKey, Cpu),
    /// The ratelimit is neither 0 nor within
    /// [`RATELIMIT_MIN`]`..=`[`RATELIMIT_MAX`].
    RatelimitOutOfRange(Ns),
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::UnknownDomain(d) => write!(f, "no domain {}", d.0),
            SchedError::UnknownVcpu(v) => write!(f, "no vCPU {}", v.0),
            SchedError::DomainExists(d) => write!(f, "domain {} exists already", d.0),
            SchedError::VcpuExists(v) => write!(f, "vCPU {} exists already", v.0),
            SchedError::ZeroWeight => write!(f, "weight must be at least 1"),
            SchedError::EmptyAffinity => write!(f, "affinity contains none of the scheduler's CPUs"),
            SchedError::VcpuRunning(v, c) => write!(f, "vCPU {} is running on CPU {}", v.0, c.0),
            SchedError::RatelimitOutOfRange(r) => {
                write!(f, "ratelimit {r} ns is neither 0 nor within {RATELIMIT_MIN}..={RATELIMIT_MAX} ns")
            }
        }
    }
}
