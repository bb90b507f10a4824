//! [`Scheduler`]: credit2's decisions for keel's pCPUs.
//!
//! Every entry point takes the state from one consistent point in time to
//! the next; keel serialises the calls (one lock) and supplies `now`. Each
//! call that may require another CPU to reschedule says which one(s); keel
//! sends those CPUs an IPI (or, for its own CPU, calls
//! [`Scheduler::schedule`] when it is done). A CPU so asked is "tickled"
//! until it calls `schedule`, and must call it soon: credit2 leaves work in
//! the runqueue for a tickled CPU to pick up.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::mem;

use crate::budget::CapBudget;
use crate::cpuset::{Cpu, CpuSet};
use crate::runqueue::Runqueue;
use crate::vcpu::{Place, Vcpu, CARRYOVER_MAX, CREDIT_INIT, CREDIT_MIN, IDLE_CREDIT};
use crate::{
    Decision, DomKey, DomParams, Event, Ns, SchedError, VcpuKey, BUDGET_PERIOD, DEFAULT_RATELIMIT, MAX_TIMER,
    MIN_TIMER, RATELIMIT_MAX, RATELIMIT_MIN,
};

/// A vCPU queued for another CPU is pulled only if it has this much more
/// credit than what would run instead (Xen's `sched_credit2_migrate_resist`).
const MIGRATE_RESIST: i64 = 500_000;

/// Credit given to a vCPU for the cache it lost by moving CPU.
const MIGRATE_COMPENSATION: i64 = 50_000;

/// A running vCPU this close to the end of its ratelimit may be preempted.
const RATELIMIT_TICKLE_TOLERANCE: Ns = 50_000;

/// When the best candidate has no more credit than this, everybody's
/// credit is reset.
const CREDIT_RESET: i64 = 0;

/// Records `cpu` in `best` if its positive `score` beats the one there.
fn keep_best(best: &mut Option<(Cpu, i64)>, cpu: Cpu, score: i64) {
    if score > best.map_or(0, |(_, s)| s) {
        *best = Some((cpu, score));
    }
}

/// One domain: its parameters and, if capped, its budget.
#[derive(Clone, Debug)]
struct Domain {
    weight: u16,
    cap: Option<CapBudget>,
    nr_vcpus: u32,
    /// Its vCPUs waiting for budget, in the order they ran out.
    parked: Vec<VcpuKey>,
}

/// credit2 scheduling policy for one set of pCPUs.
#[derive(Clone, Debug)]
pub struct Scheduler {
    cpus: CpuSet,
    /// What each busy CPU runs.
    current: BTreeMap<Cpu, VcpuKey>,
    rq: Runqueue,
    vcpus: BTreeMap<VcpuKey, Vcpu>,
    doms: BTreeMap<DomKey, Domain>,
    ratelimit: Ns,
    /// Where the last new vCPU was placed; the next goes to the CPU after.
    pick_bias: Cpu,
}

impl Scheduler {
    /// A scheduler for `cpus`, all idle, with no domains and the default
    /// ratelimit. `cpus` is fixed for the scheduler's lifetime.
    pub fn new(cpus: CpuSet) -> Self {
        Scheduler {
            cpus,
            current: BTreeMap::new(),
            rq: Runqueue::new(cpus),
            vcpus: BTreeMap::new(),
            doms: BTreeMap::new(),
            ratelimit: DEFAULT_RATELIMIT,
            pick_bias: cpus.first().unwrap_or(Cpu(0)),
        }
    }

    /// The CPUs this scheduler manages.
    pub fn cpus(&self) -> CpuSet {
        self.cpus
    }

    /// Sets the context-switch ratelimit: a running vCPU is not preempted
    /// before it has run this long (0 disables it; otherwise
    /// [`RATELIMIT_MIN`]`..=`[`RATELIMIT_MAX`], as `sched_ratelimit_us`).
    pub fn set_ratelimit(&mut self, ratelimit: Ns) -> Result<(), SchedError> {
        if ratelimit != 0 && !(RATELIMIT_MIN..=RATELIMIT_MAX).contains(&ratelimit) {
            return Err(SchedError::RatelimitOutOfRange(ratelimit));
        }
        self.ratelimit = ratelimit;
        Ok(())
    }

    /// The context-switch ratelimit.
    pub fn ratelimit(&self) -> Ns {
        self.ratelimit
    }

    /// Adds domain `d` with `weight` (1..=65535) and `cap_percent` (0 = no
    /// cap). A capped domain's budget periods are aligned to multiples of
    /// [`BUDGET_PERIOD`] on keel's clock until its cap is next changed.
    pub fn add_domain(&mut self, d: DomKey, weight: u16, cap_percent: u16) -> Result<(), SchedError> {
        if weight == 0 {
            return Err(SchedError::ZeroWeight);
        }
        if self.doms.contains_key(&d) {
            return Err(SchedError::DomainExists(d));
        }
        let cap = (cap_percent != 0).then(|| CapBudget::new(cap_percent, BUDGET_PERIOD));
        self.doms.insert(d, Domain { weight, cap, nr_vcpus: 0, parked: Vec::new() });
        Ok(())
    }

    /// The weight and cap of domain `d`.
    pub fn params(&self, d: DomKey) -> Option<DomParams> {
        self.doms.get(&d).map(|dom| DomParams { weight: dom.weight, cap: dom.cap.as_ref().map_or(0, |c| c.cap()) })
    }

    /// Changes domain `d`'s weight and cap (0 = none) at `now`. Returns the
    /// CPUs that must reschedule: those running its vCPUs when a cap is
    /// imposed, and those picking up vCPUs released when a cap is lifted.
    pub fn set_params(&mut self, d: DomKey, weight: u16, cap_percent: u16, now: Ns) -> Result<CpuSet, SchedError> {
        if weight == 0 {
            return Err(SchedError::ZeroWeight);
        }
        if !self.doms.contains_key(&d) {
            return Err(SchedError::UnknownDomain(d));
        }
        let mut kick = CpuSet::new();
        self.replenish_due(now, &mut kick);
        let mine: Vec<VcpuKey> = self.vcpus.iter().filter(|(_, v)| v.dom == d).map(|(&k, _)| k).collect();
        let Some(dom) = self.doms.get_mut(&d) else { return Err(SchedError::UnknownDomain(d)) };
        dom.weight = weight;
        let old_cap = dom.cap.as_ref().map(CapBudget::cap);
        match (old_cap, cap_percent) {
            (None, 0) => {}
            (Some(_), 0) => {
                dom.cap = None;
                let parked = mem::take(&mut dom.parked);
                for k in &mine {
                    if let Some(v) = self.vcpus.get_mut(k) {
                        v.budget = None;
                    }
                }
                self.unpark(parked, now, &mut kick);
            }
            (Some(_), cap) => {
                if let Some(budget) = dom.cap.as_mut() {
                    budget.set_cap(cap);
                }
            }
            (None, cap) => {
                dom.cap = Some(CapBudget::new(cap, now.saturating_add(BUDGET_PERIOD)));
                let max_weight = self.rq.max_weight;
                for k in &mine {
                    let Some(v) = self.vcpus.get_mut(k) else { continue };
                    if let Place::Running(cpu) = v.place {
                        // Charge what it ran so far uncapped, then make its
                        // CPU fetch budget for it.
                        v.burn(now, max_weight);
                        self.rq.tickled.insert(cpu);
                        kick.insert(cpu);
                    }
                    v.budget = Some(0);
                }
            }
        }
        for k in &mine {
            if let Some(v) = self.vcpus.get_mut(k) {
                v.weight = u32::from(weight);
            }
        }
        self.update_max_weight();
        Ok(kick)
    }

    /// Removes domain `d` and its vCPUs. Fails, changing nothing, while one
    /// of them is running: put it to sleep and reschedule its CPU first.
    pub fn remove_domain(&mut self, d: DomKey) -> Result<(), SchedError> {
        if !self.doms.contains_key(&d) {
            return Err(SchedError::UnknownDomain(d));
        }
        let running = self.vcpus.iter().find_map(|(&k, v)| match v.place {
            Place::Running(cpu) if v.dom == d => Some((k, cpu)),
            _ => None,
        });
        if let Some((k, cpu)) = running {
            return Err(SchedError::VcpuRunning(k, cpu));
        }
        let mine: Vec<VcpuKey> = self.vcpus.iter().filter(|(_, v)| v.dom == d).map(|(&k, _)| k).collect();
        for k in mine {
            self.remove_vcpu(k)?;
        }
        self.doms.remove(&d);
        Ok(())
    }

    /// Adds vCPU `v` of domain `d`, asleep, allowed on the CPUs of `hard`
    /// that this scheduler manages (there must be at least one).
    pub fn add_vcpu(&mut self, v: VcpuKey, d: DomKey, hard: CpuSet) -> Result<(), SchedError> {
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::VcpuExists(v));
        }
        let Some(dom) = self.doms.get_mut(&d) else { return Err(SchedError::UnknownDomain(d)) };
        let hard = hard & self.cpus;
        let Some(processor) = hard.cycle(self.pick_bias) else { return Err(SchedError::EmptyAffinity) };
        self.pick_bias = processor;
        dom.nr_vcpus += 1;
        let weight = u32::from(dom.weight);
        self.vcpus.insert(v, Vcpu::new(d, hard, processor, weight, dom.cap.is_some()));
        self.update_max_weight();
        Ok(())
    }

    /// Removes vCPU `v`. Fails while it is running: put it to sleep and
    /// reschedule its CPU first.
    pub fn remove_vcpu(&mut self, v: VcpuKey) -> Result<(), SchedError> {
        let Some(vcpu) = self.vcpus.get(&v) else { return Err(SchedError::UnknownVcpu(v)) };
        if let Place::Running(cpu) = vcpu.place {
            return Err(SchedError::VcpuRunning(v, cpu));
        }
        if vcpu.place == Place::Queued {
            self.rq.remove(v);
        }
        if let Some(dom) = self.doms.get_mut(&vcpu.dom) {
            dom.nr_vcpus = dom.nr_vcpus.saturating_sub(1);
            dom.parked.retain(|&k| k != v);
        }
        self.vcpus.remove(&v);
        self.update_max_weight();
        Ok(())
    }

    /// Restricts vCPU `v` to the CPUs of `hard` that this scheduler manages
    /// (there must be at least one). If it runs on a CPU it may no longer
    /// use, that CPU must reschedule; if it waits, it may be picked up
    /// elsewhere.
    pub fn set_affinity(&mut self, v: VcpuKey, hard: CpuSet, now: Ns) -> Result<Event, SchedError> {
        let hard = hard & self.cpus;
        let Some(vcpu) = self.vcpus.get_mut(&v) else { return Err(SchedError::UnknownVcpu(v)) };
        if hard.is_empty() {
            return Err(SchedError::EmptyAffinity);
        }
        vcpu.hard = hard;
        match vcpu.place {
            Place::Running(cpu) if !hard.contains(cpu) => {
                self.rq.tickled.insert(cpu);
                Ok(Event::Reschedule(cpu))
            }
            Place::Running(_) => Ok(Event::None),
            Place::Queued => {
                self.rq.remove(v);
                Ok(self.requeue(v, now).map_or(Event::None, Event::Reschedule))
            }
            Place::Off => {
                vcpu.processor = vcpu.fallback_cpu();
                Ok(Event::None)
            }
        }
    }

    /// Sets vCPU `v`'s soft affinity: the CPUs it prefers among those it
    /// may use. A set that does not narrow its hard affinity to a non-empty
    /// part of it means no preference. Takes effect at its next placement.
    pub fn set_soft_affinity(&mut self, v: VcpuKey, soft: CpuSet) -> Result<(), SchedError> {
        let vcpu = self.vcpus.get_mut(&v).ok_or(SchedError::UnknownVcpu(v))?;
        vcpu.soft = soft;
        Ok(())
    }

    /// vCPU `v` becomes runnable at `now`. Returns the CPU that should
    /// reschedule to run it, if any: an idle one it may use, or one whose
    /// vCPU it should preempt.
    pub fn wake(&mut self, v: VcpuKey, now: Ns) -> Result<Event, SchedError> {
        let vcpu = self.vcpus.get_mut(&v).ok_or(SchedError::UnknownVcpu(v))?;
        if !vcpu.blocked {
            return Ok(Event::None);
        }
        vcpu.blocked = false;
        if vcpu.place != Place::Off || vcpu.parked {
            // Still current on its CPU (that CPU was told to reschedule when
            // it went to sleep, and will keep it), or waiting for budget.
            return Ok(Event::None);
        }
        Ok(self.requeue(v, now).map_or(Event::None, Event::Reschedule))
    }

    /// vCPU `v` stops being runnable (blocked, paused, going down). If it
    /// is running, its CPU must reschedule, which the result says.
    pub fn sleep(&mut self, v: VcpuKey) -> Result<Event, SchedError> {
        let vcpu = self.vcpus.get_mut(&v).ok_or(SchedError::UnknownVcpu(v))?;
        vcpu.blocked = true;
        match vcpu.place {
            Place::Running(cpu) => {
                self.rq.tickled.insert(cpu);
                Ok(Event::Reschedule(cpu))
            }
            Place::Queued => {
                vcpu.place = Place::Off;
                self.rq.remove(v);
                Ok(Event::None)
            }
            Place::Off => Ok(Event::None),
        }
    }

    /// Running vCPU `v` yields: at its CPU's next [`Scheduler::schedule`]
    /// (which the caller makes happen) it lets the best waiting vCPU that
    /// may use the CPU run, whatever that one's credit, and the ratelimit
    /// does not hold it. No effect if `v` is not running.
    pub fn yield_now(&mut self, v: VcpuKey) -> Result<(), SchedError> {
        let vcpu = self.vcpus.get_mut(&v).ok_or(SchedError::UnknownVcpu(v))?;
        if matches!(vcpu.place, Place::Running(_)) {
            vcpu.yielding = true;
        }
        Ok(())
    }

    /// The vCPU `cpu` runs, if any.
    pub fn running(&self, cpu: Cpu) -> Option<VcpuKey> {
        self.current(cpu)
    }

    /// Total CPU time vCPU `v` has been charged for (up to the last call
    /// that accounted it).
    pub fn runtime(&self, v: VcpuKey) -> Option<Ns> {
        self.vcpus.get(&v).map(|vcpu| vcpu.runtime)
    }

    /// Decides what `cpu` runs from `now`. keel calls this on `cpu` when
    /// the previous decision's time is up, when `cpu` was told to
    /// reschedule, and after its vCPU blocked or yielded; the state of the
    /// vCPU it ran must already be saved, since it may be picked by another
    /// CPU straight away. A CPU this scheduler does not manage always idles.
    pub fn schedule(&mut self, cpu: Cpu, now: Ns) -> Decision {
        let mut kick = CpuSet::new();
        if !self.cpus.contains(cpu) {
            return Decision { run: None, until: None, kick };
        }
        self.replenish_due(now, &mut kick);
        self.rq.tickled.remove(cpu);
        kick.remove(cpu);

        let prev = self.current(cpu);
        if let Some(p) = prev {
            let max_weight = self.rq.max_weight;
            let out_of_budget = self.vcpus.get_mut(&p).is_some_and(|v| {
                v.burn(now, max_weight);
                !v.has_budget()
            });
            if out_of_budget {
                // Try for more; failing that, it is parked and goes off.
                self.grab_budget(p);
            }
        }

        let next = self.runq_candidate(cpu, prev, now);
        let switching = next != prev;
        if switching {
            if let Some(v) = prev.and_then(|p| self.vcpus.get_mut(&p)) {
                v.place = Place::Off;
            }
            if let Some(n) = next {
                self.rq.remove(n);
                if let Some(v) = self.vcpus.get_mut(&n) {
                    v.place = Place::Running(cpu);
                    v.run_start = now;
                }
            }
            self.set_current(cpu, next);
        }
        let slice = match next {
            Some(n) => {
                self.rq.idle.remove(cpu);
                self.start_running(cpu, n, now, &mut kick);
                Some(self.time_slice(n, !switching, now))
            }
            None => {
                self.rq.idle.insert(cpu);
                None
            }
        };
        if switching {
            if let Some(p) = prev {
                self.switched_out(p, now, &mut kick);
            }
        }

        let mut until = slice.map(|s| now.saturating_add(s));
        if let Some(repl) = self.next_needed_replenishment() {
            until = Some(until.map_or(repl, |u| u.min(repl)));
        }
        Decision { run: next, until, kick }
    }

    fn current(&self, cpu: Cpu) -> Option<VcpuKey> {
        self.current.get(&cpu).copied()
    }

    fn set_current(&mut self, cpu: Cpu, v: Option<VcpuKey>) {
        match v {
            Some(v) => self.current.insert(cpu, v),
            None => self.current.remove(&cpu),
        };
    }

    fn credit(&self, v: VcpuKey) -> i64 {
        self.vcpus.get(&v).map_or(IDLE_CREDIT, |v| v.credit)
    }

    fn update_max_weight(&mut self) {
        self.rq.max_weight = self.vcpus.values().map(|v| v.weight).max().unwrap_or(1).max(1);
    }

    /// Credit2's `runq_candidate`: what `cpu` should run next, given that
    /// it ran `prev`. Takes the chosen vCPU's budget, and parks capped
    /// vCPUs it passes over for lack of budget.
    fn runq_candidate(&mut self, cpu: Cpu, prev: Option<VcpuKey>, now: Ns) -> Option<VcpuKey> {
        let (mut best, best_credit, yielding) = match prev.and_then(|p| self.vcpus.get_mut(&p).map(|v| (p, v))) {
            None => (None, IDLE_CREDIT, false),
            Some((p, v)) => {
                let yielding = mem::take(&mut v.yielding);
                let eligible = v.runnable() && v.hard.contains(cpu);
                if !yielding && self.ratelimit != 0 && eligible && now.saturating_sub(v.run_start) < self.ratelimit {
                    return Some(p);
                }
                // Leave a CPU it does not prefer if one it prefers is free.
                let free = self.rq.idle - self.rq.tickled;
                let better_elsewhere = v.effective_soft().is_some_and(|s| !s.contains(cpu) && s.intersects(&free));
                if eligible && !better_elsewhere {
                    (Some(p), v.credit, yielding)
                } else {
                    (None, IDLE_CREDIT, yielding)
                }
            }
        };
        let mut i = 0;
        while let Some(k) = self.rq.at(i) {
            let Some(v) = self.vcpus.get(&k) else {
                i += 1;
                continue;
            };
            if !yielding && v.credit <= best_credit {
                break;
            }
            let meant_for_other = v.tickled_cpu.is_some_and(|t| t != cpu && self.rq.tickled.contains(t));
            // Resist migrations, unless the alternative is idling (Xen
            // resists then too, which can strand a vCPU at the credit floor).
            let resisted =
                best.is_some() && v.processor != cpu && best_credit.saturating_add(MIGRATE_RESIST) > v.credit;
            if !v.hard.contains(cpu) || meant_for_other || resisted {
                i += 1;
                continue;
            }
            if !self.grab_budget(k) {
                // Parked: it left the queue, so `i` is already the next one.
                continue;
            }
            best = Some(k);
            break;
        }
        best
    }

    /// Bookkeeping for `n` starting (or continuing) on `cpu`: a credit reset
    /// if the best candidate is out of credit, and migration compensation.
    fn start_running(&mut self, cpu: Cpu, n: VcpuKey, now: Ns, kick: &mut CpuSet) {
        let head = self.rq.head().map_or(IDLE_CREDIT, |h| self.credit(h));
        let top = self.credit(n).max(head);
        if top <= CREDIT_RESET {
            self.reset_credit(cpu, n, now, kick);
        }
        if let Some(v) = self.vcpus.get_mut(&n) {
            v.start_time = now;
            v.tickled_cpu = None;
            if v.processor != cpu {
                v.credit = v.credit.saturating_add(MIGRATE_COMPENSATION);
                v.processor = cpu;
            }
        }
    }

    /// Credit2's `reset_credit`: a new epoch; every vCPU gets
    /// [`CREDIT_INIT`] more (twice that if `next` hit the floor), clipped
    /// to [`CREDIT_INIT`]` + `[`CARRYOVER_MAX`]. vCPUs running elsewhere are
    /// charged first, and their CPUs told to reschedule if that exhausted
    /// their budget.
    fn reset_credit(&mut self, cpu: Cpu, next: VcpuKey, now: Ns, kick: &mut CpuSet) {
        let add = if self.credit(next) == CREDIT_MIN { 2 * CREDIT_INIT } else { CREDIT_INIT };
        let max_weight = self.rq.max_weight;
        for v in self.vcpus.values_mut() {
            if let Place::Running(c) = v.place {
                if c != cpu {
                    v.burn(now, max_weight);
                    if !v.has_budget() {
                        self.rq.tickled.insert(c);
                        kick.insert(c);
                    }
                }
            }
            v.credit = v.credit.saturating_add(add).min(CREDIT_INIT + CARRYOVER_MAX);
            v.start_time = now;
        }
    }

    /// Credit2's `csched2_runtime`: how long `n` runs before `cpu`
    /// reschedules. Until its credit falls to that of the best waiting vCPU
    /// (to zero if none waits with positive credit), no longer than its
    /// budget, within [`MIN_TIMER`] (or what is left of the ratelimit) and
    /// [`MAX_TIMER`].
    fn time_slice(&self, n: VcpuKey, continuing: bool, now: Ns) -> Ns {
        let Some(v) = self.vcpus.get(&n) else { return MIN_TIMER };
        let mut min_time = MIN_TIMER;
        if self.ratelimit != 0 {
            let left = if continuing {
                v.run_start.saturating_add(self.ratelimit).saturating_sub(now)
            } else {
                self.ratelimit
            };
            min_time = min_time.max(left);
        }
        let waiting = self.rq.head().map_or(0, |h| self.credit(h));
        let rt_credit = if waiting > 0 { v.credit.saturating_sub(waiting) } else { v.credit };
        let mut time = v.credit_to_time(rt_credit, self.rq.max_weight);
        if let Some(budget) = v.budget {
            time = time.min(Ns::try_from(budget).unwrap_or(0));
        }
        if time < min_time {
            min_time
        } else {
            time.min(MAX_TIMER)
        }
    }

    /// What credit2 does once `p`'s context is saved after `cpu` switched
    /// away from it: return unused budget (which may release parked vCPUs)
    /// and queue it again if it is still runnable.
    fn switched_out(&mut self, p: VcpuKey, now: Ns, kick: &mut CpuSet) {
        let Some(v) = self.vcpus.get_mut(&p) else { return };
        let mut released = Vec::new();
        if let Some(held) = v.budget.filter(|&b| b > 0) {
            v.budget = Some(0);
            if let Some(dom) = self.doms.get_mut(&v.dom) {
                if dom.cap.as_mut().is_some_and(|c| c.give_back(held)) {
                    released = mem::take(&mut dom.parked);
                }
            }
        }
        if v.runnable() {
            if let Some(c) = self.requeue(p, now) {
                kick.insert(c);
            }
        }
        self.unpark(released, now, kick);
    }

    /// Puts runnable `v` (neither queued nor running) in the runqueue and
    /// tickles a CPU for it; returns that CPU.
    fn requeue(&mut self, v: VcpuKey, now: Ns) -> Option<Cpu> {
        let vcpu = self.vcpus.get_mut(&v)?;
        vcpu.processor = vcpu.fallback_cpu();
        vcpu.tickled_cpu = None;
        vcpu.place = Place::Queued;
        let credit = vcpu.credit;
        let vcpus = &self.vcpus;
        self.rq.insert(v, credit, |q| vcpus.get(&q).map_or(IDLE_CREDIT, |x| x.credit));
        self.runq_tickle(v, now)
    }

    /// Credit2's `runq_tickle`: picks the CPU to run newly queued `v`, marks
    /// it tickled and returns it. An idle CPU if there is one it may use
    /// (preferring its soft affinity, then its last CPU); otherwise the busy
    /// CPU whose vCPU it beats by the most, if any. A CPU whose vCPU is
    /// inside its ratelimit is only chosen if no other qualifies: its
    /// `schedule` then keeps that vCPU to the end of the ratelimit, so the
    /// preemption is deferred (Xen drops it).
    fn runq_tickle(&mut self, v: VcpuKey, now: Ns) -> Option<Cpu> {
        let vcpu = self.vcpus.get(&v)?;
        let (hard, soft, processor) = (vcpu.hard, vcpu.soft, vcpu.processor);
        let free = self.rq.idle - self.rq.tickled;
        let idle_pick = vcpu
            .effective_soft()
            .and_then(|s| (s & free).test_or_cycle(processor))
            .or_else(|| (hard & free).test_or_cycle(processor));
        let target = match idle_pick {
            Some(cpu) => Some(cpu),
            None => {
                let mut busy = (self.rq.active - self.rq.idle - self.rq.tickled) & hard;
                // Best CPU to preempt now, and best once its ratelimit is over.
                let (mut now_best, mut later_best) = (None, None);
                if busy.remove(processor) {
                    if let Some((score, protected)) = self.tickle_score(v, processor, now) {
                        keep_best(if protected { &mut later_best } else { &mut now_best }, processor, score);
                    }
                }
                // Its own CPU, preemptable and preferred: look no further.
                if !now_best.is_some_and(|_| soft.contains(processor)) {
                    for cpu in busy.iter() {
                        if let Some((score, protected)) = self.tickle_score(v, cpu, now) {
                            keep_best(if protected { &mut later_best } else { &mut now_best }, cpu, score);
                        }
                    }
                }
                now_best.or(later_best).map(|(cpu, _)| cpu)
            }
        };
        let cpu = target?;
        self.rq.tickled.insert(cpu);
        if let Some(vcpu) = self.vcpus.get_mut(&v) {
            vcpu.tickled_cpu = Some(cpu);
        }
        Some(cpu)
    }

    /// Credit2's `tickle_score`: how much waiting `v` should replace what
    /// `cpu` runs (> 0 means it should), and whether the running vCPU is
    /// still protected by the ratelimit. Charges the running vCPU first.
    fn tickle_score(&mut self, v: VcpuKey, cpu: Cpu, now: Ns) -> Option<(i64, bool)> {
        let cur = self.current(cpu)?;
        let max_weight = self.rq.max_weight;
        let ratelimit = self.ratelimit;
        let c = self.vcpus.get_mut(&cur)?;
        let protected = ratelimit > RATELIMIT_TICKLE_TOLERANCE
            && now.saturating_sub(c.run_start) <= ratelimit - RATELIMIT_TICKLE_TOLERANCE;
        c.burn(now, max_weight);
        let (cur_credit, cur_soft) = (c.credit, c.soft);
        let new = self.vcpus.get(&v)?;
        let mut score = new.credit.saturating_sub(cur_credit);
        if new.processor != cpu {
            score = score.saturating_sub(MIGRATE_RESIST);
        }
        if score > 0 {
            if new.soft.contains(cpu) {
                score += CREDIT_INIT;
            }
            if !cur_soft.contains(cpu) {
                score += CREDIT_INIT;
            }
        }
        Some((score, protected))
    }

    /// Gets budget for `k` if it is capped and has none. Without budget to
    /// be had it is parked: taken off the runqueue until a replenishment.
    fn grab_budget(&mut self, k: VcpuKey) -> bool {
        let Some(v) = self.vcpus.get_mut(&k) else { return false };
        let Some(held) = v.budget else { return true };
        if held > 0 {
            return true;
        }
        let Some(dom) = self.doms.get_mut(&v.dom) else { return false };
        let Some(cap) = dom.cap.as_mut() else {
            v.budget = None;
            return true;
        };
        let quota = cap.quota(dom.nr_vcpus);
        let got = cap.grab(held, quota);
        v.budget = Some(got);
        if got > 0 {
            return true;
        }
        v.parked = true;
        if v.place == Place::Queued {
            v.place = Place::Off;
            self.rq.remove(k);
        }
        if !dom.parked.contains(&k) {
            dom.parked.push(k);
        }
        false
    }

    /// Lets parked vCPUs compete for budget again.
    fn unpark(&mut self, parked: Vec<VcpuKey>, now: Ns, kick: &mut CpuSet) {
        for k in parked {
            let Some(v) = self.vcpus.get_mut(&k) else { continue };
            v.parked = false;
            if v.place == Place::Off && !v.blocked {
                if let Some(c) = self.requeue(k, now) {
                    kick.insert(c);
                }
            }
        }
    }

    /// Starts the budget periods that began by `now`, releasing parked vCPUs.
    fn replenish_due(&mut self, now: Ns, kick: &mut CpuSet) {
        let mut released = Vec::new();
        for dom in self.doms.values_mut() {
            if dom.cap.as_mut().is_some_and(|c| c.replenish(now)) {
                released.append(&mut dom.parked);
            }
        }
        self.unpark(released, now, kick);
    }

    /// The next budget period start that an awake parked vCPU waits for.
    /// Every decision ends by then, so that some CPU is in `schedule` to
    /// start the period.
    fn next_needed_replenishment(&self) -> Option<Ns> {
        self.doms
            .values()
            .filter(|d| d.parked.iter().any(|k| self.vcpus.get(k).is_some_and(|v| !v.blocked)))
            .filter_map(|d| d.cap.as_ref().map(CapBudget::next_repl))
            .min()
    }
}

#[cfg(test)]
impl Scheduler {
    /// Checks the internal invariants; panics (in tests) on a violation.
    pub(crate) fn check_invariants(&self) {
        assert!(self.current.keys().all(|&cpu| self.cpus.contains(cpu)));
        for cpu in self.cpus.iter() {
            match self.current(cpu) {
                Some(k) => {
                    let v = &self.vcpus[&k];
                    assert_eq!(v.place, Place::Running(cpu), "{k:?} is current on {cpu:?}");
                    assert!(!self.rq.idle.contains(cpu));
                }
                None => assert!(self.rq.idle.contains(cpu), "{cpu:?} runs nothing but is not idle"),
            }
        }
        let queued = self.rq.queued();
        for pair in queued.windows(2) {
            assert!(self.credit(pair[0]) >= self.credit(pair[1]), "runqueue out of order");
        }
        for (&k, v) in &self.vcpus {
            assert!(!v.hard.is_empty() && v.hard.is_subset(&self.cpus));
            let dom = &self.doms[&v.dom];
            assert_eq!(v.budget.is_some(), dom.cap.is_some(), "{k:?} budget vs cap");
            assert_eq!(v.weight, u32::from(dom.weight));
            assert!(v.credit >= CREDIT_MIN);
            match v.place {
                Place::Queued => {
                    assert_eq!(queued.iter().filter(|&&q| q == k).count(), 1);
                    assert!(v.runnable(), "{k:?} queued but not runnable");
                }
                Place::Off => {
                    assert!(!queued.contains(&k));
                    assert!(!v.runnable(), "{k:?} runnable but neither queued nor running");
                }
                Place::Running(cpu) => {
                    assert_eq!(self.current(cpu), Some(k));
                    assert!(!queued.contains(&k));
                }
            }
            if v.parked {
                assert!(dom.parked.contains(&k), "{k:?} parked but not on its domain's list");
            }
        }
        for (d, dom) in &self.doms {
            assert_eq!(dom.nr_vcpus as usize, self.vcpus.values().filter(|v| v.dom == *d).count());
            for k in &dom.parked {
                assert!(self.vcpus[k].parked);
            }
        }
    }

    pub(crate) fn credit_of(&self, v: VcpuKey) -> i64 {
        self.vcpus[&v].credit
    }

    pub(crate) fn is_parked(&self, v: VcpuKey) -> bool {
        self.vcpus[&v].parked
    }

    pub(crate) fn queued(&self) -> &[VcpuKey] {
        self.rq.queued()
    }

    pub(crate) fn budget_pool(&self, d: DomKey) -> Option<i64> {
        self.doms[&d].cap.as_ref().map(|c| c.pool())
    }
}
