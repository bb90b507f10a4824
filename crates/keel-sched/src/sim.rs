//! A model of keel driving the scheduler on a simulated clock (tests only).
//!
//! It does what keel does with the scheduler's answers: keeps each CPU's
//! timer, delivers reschedule IPIs (instantly), calls `schedule` after a
//! running vCPU blocks or yields. Workloads are CPU hogs and periodic vCPUs
//! that wake, compute for a while and block again. Every decision is checked
//! against what the simulation knows (affinity, blocked vCPUs, one CPU per
//! vCPU) and against the scheduler's internal invariants, and it measures
//! per-vCPU CPU time, wake-up latency and longest wait while runnable.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::{Cpu, CpuSet, Decision, DomKey, Event, Ns, Scheduler, VcpuKey};

pub(crate) const US: Ns = 1_000;
pub(crate) const MS: Ns = 1_000_000;
pub(crate) const SEC: Ns = 1_000_000_000;

/// What a vCPU does when it gets the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Load {
    /// Always runnable once woken.
    Hog,
    /// Wakes every `period`, computes for `burst`, then blocks.
    Periodic { period: Ns, burst: Ns },
    /// Runnable until the test puts it to sleep.
    Manual,
}

#[derive(Clone, Debug)]
struct SimVcpu {
    hard: CpuSet,
    load: Load,
    blocked: bool,
    /// CPU time left in the current burst (periodic vCPUs).
    left: Ns,
    next_wake: Option<Ns>,
    cpu_time: Ns,
    woke_at: Option<Ns>,
    max_latency: Ns,
    waiting_since: Option<Ns>,
    max_wait: Ns,
}

/// The simulated machine.
pub(crate) struct Sim {
    pub(crate) s: Scheduler,
    pub(crate) now: Ns,
    cpus: CpuSet,
    timer: BTreeMap<Cpu, Ns>,
    pending: CpuSet,
    running: BTreeMap<Cpu, VcpuKey>,
    vcpus: BTreeMap<VcpuKey, SimVcpu>,
    /// Every decision: (time, CPU, what runs).
    pub(crate) log: Vec<(Ns, Cpu, Option<VcpuKey>)>,
}

impl Sim {
    /// A machine with CPUs `0..ncpus`, all idle.
    pub(crate) fn new(ncpus: u32) -> Self {
        let cpus = CpuSet::range(0..ncpus);
        Sim {
            s: Scheduler::new(cpus),
            now: 0,
            cpus,
            timer: BTreeMap::new(),
            pending: CpuSet::new(),
            running: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    pub(crate) fn domain(&mut self, d: u32, weight: u16, cap: u16) {
        self.s.add_domain(DomKey(d), weight, cap).unwrap();
    }

    /// Adds vCPU `v` of domain `d` (asleep).
    pub(crate) fn vcpu(&mut self, v: u32, d: u32, hard: CpuSet, load: Load) {
        self.s.add_vcpu(VcpuKey(v), DomKey(d), hard).unwrap();
        let sv = SimVcpu {
            hard: hard & self.cpus,
            load,
            blocked: true,
            left: 0,
            next_wake: None,
            cpu_time: 0,
            woke_at: None,
            max_latency: 0,
            waiting_since: None,
            max_wait: 0,
        };
        self.vcpus.insert(VcpuKey(v), sv);
    }

    /// Wakes `v` now (and, if periodic, every period from now on).
    pub(crate) fn wake(&mut self, v: u32) {
        let k = VcpuKey(v);
        let now = self.now;
        let Some(sv) = self.vcpus.get_mut(&k) else { return };
        if let Load::Periodic { period, burst } = sv.load {
            sv.left = burst;
            sv.next_wake = Some(now + period);
        }
        if sv.blocked {
            sv.blocked = false;
            sv.woke_at = Some(now);
        }
        let ev = self.s.wake(k, now).unwrap();
        self.event(ev);
        self.settle();
    }

    /// Puts `v` to sleep now.
    pub(crate) fn sleep(&mut self, v: u32) {
        let k = VcpuKey(v);
        if let Some(sv) = self.vcpus.get_mut(&k) {
            sv.blocked = true;
            sv.next_wake = None;
            sv.woke_at = None;
            sv.waiting_since = None;
        }
        let ev = self.s.sleep(k).unwrap();
        self.event(ev);
        self.settle();
    }

    /// `v` yields if it is running (and its CPU reschedules).
    pub(crate) fn yield_now(&mut self, v: u32) {
        let k = VcpuKey(v);
        self.s.yield_now(k).unwrap();
        if let Some((&cpu, _)) = self.running.iter().find(|(_, &r)| r == k) {
            self.pending.insert(cpu);
        }
        self.settle();
    }

    pub(crate) fn set_affinity(&mut self, v: u32, hard: CpuSet) -> Event {
        let k = VcpuKey(v);
        let ev = self.s.set_affinity(k, hard, self.now).unwrap();
        if let Some(sv) = self.vcpus.get_mut(&k) {
            sv.hard = hard & self.cpus;
        }
        self.event(ev);
        self.settle();
        ev
    }

    /// Changes domain `d`'s parameters now; returns the CPUs kicked.
    pub(crate) fn set_params(&mut self, d: u32, weight: u16, cap: u16) -> CpuSet {
        let kick = self.s.set_params(DomKey(d), weight, cap, self.now).unwrap();
        self.pending = self.pending | kick;
        self.settle();
        kick
    }

    /// Runs the machine until `end`.
    pub(crate) fn run_until(&mut self, end: Ns) {
        loop {
            self.settle();
            let Some(next) = self.next_event().filter(|&t| t <= end) else { break };
            self.advance(next);
            self.fire(next);
        }
        self.advance(end);
    }

    pub(crate) fn running_on(&self, cpu: u32) -> Option<u32> {
        self.running.get(&Cpu(cpu)).map(|v| v.0)
    }

    pub(crate) fn cpu_time(&self, v: u32) -> Ns {
        self.vcpus[&VcpuKey(v)].cpu_time
    }

    pub(crate) fn max_latency(&self, v: u32) -> Ns {
        self.vcpus[&VcpuKey(v)].max_latency
    }

    /// Forgets the latencies measured so far.
    pub(crate) fn reset_latencies(&mut self) {
        for sv in self.vcpus.values_mut() {
            sv.max_latency = 0;
        }
    }

    /// Longest time `v` was runnable without running, including now.
    pub(crate) fn max_wait(&self, v: u32) -> Ns {
        let sv = &self.vcpus[&VcpuKey(v)];
        sv.max_wait.max(sv.waiting_since.map_or(0, |t| self.now - t))
    }

    pub(crate) fn timer(&self, cpu: u32) -> Option<Ns> {
        self.timer.get(&Cpu(cpu)).copied()
    }

    pub(crate) fn is_blocked(&self, v: u32) -> bool {
        self.vcpus[&VcpuKey(v)].blocked
    }

    fn event(&mut self, ev: Event) {
        if let Event::Reschedule(cpu) = ev {
            self.pending.insert(cpu);
        }
    }

    /// Delivers pending IPIs until none are left.
    fn settle(&mut self) {
        let mut rounds = 0;
        while let Some(cpu) = self.pending.first() {
            self.pending.remove(cpu);
            self.schedule(cpu);
            rounds += 1;
            assert!(rounds < 10_000, "reschedule storm at {}", self.now);
        }
    }

    fn schedule(&mut self, cpu: Cpu) {
        let d = self.s.schedule(cpu, self.now);
        self.check(cpu, &d);
        self.log.push((self.now, cpu, d.run));
        match d.until {
            Some(t) => self.timer.insert(cpu, t),
            None => self.timer.remove(&cpu),
        };
        match d.run {
            Some(v) => {
                self.running.insert(cpu, v);
                let sv = self.vcpus.get_mut(&v).unwrap();
                if let Some(t) = sv.woke_at.take() {
                    sv.max_latency = sv.max_latency.max(self.now - t);
                }
            }
            None => {
                self.running.remove(&cpu);
            }
        }
        self.pending = self.pending | d.kick;
        self.update_waits();
    }

    /// Checks a decision against what the machine knows.
    fn check(&self, cpu: Cpu, d: &Decision) {
        self.s.check_invariants();
        if let Some(v) = d.run {
            let sv = &self.vcpus[&v];
            assert!(sv.hard.contains(cpu), "{v:?} runs on {cpu:?} outside its affinity {:?}", sv.hard);
            assert!(!sv.blocked, "blocked {v:?} runs on {cpu:?} at {}", self.now);
            for (&c, &r) in &self.running {
                assert!(c == cpu || r != v, "{v:?} on {cpu:?} and {c:?} at once");
            }
        }
        if let Some(t) = d.until {
            assert!(t > self.now, "decision ends in the past");
        }
        for c in d.kick.iter() {
            assert!(self.cpus.contains(c));
        }
        assert_eq!(self.s.running(cpu), d.run);
    }

    fn update_waits(&mut self) {
        let now = self.now;
        let running: BTreeSet<VcpuKey> = self.running.values().copied().collect();
        for (k, sv) in &mut self.vcpus {
            if sv.blocked || running.contains(k) {
                if let Some(t) = sv.waiting_since.take() {
                    sv.max_wait = sv.max_wait.max(now - t);
                }
            } else if sv.waiting_since.is_none() {
                sv.waiting_since = Some(now);
            }
        }
    }

    fn next_event(&self) -> Option<Ns> {
        let timers = self.timer.values().copied();
        let wakes = self.vcpus.values().filter(|v| v.blocked).filter_map(|v| v.next_wake);
        let bursts = self.running.values().filter_map(|k| {
            let sv = &self.vcpus[k];
            matches!(sv.load, Load::Periodic { .. }).then_some(self.now + sv.left)
        });
        timers.chain(wakes).chain(bursts).min()
    }

    /// Lets time pass to `t`, charging the running vCPUs.
    fn advance(&mut self, t: Ns) {
        let dt = t.saturating_sub(self.now);
        for k in self.running.values() {
            let sv = self.vcpus.get_mut(k).unwrap();
            sv.cpu_time += dt;
            sv.left = sv.left.saturating_sub(dt);
        }
        self.now = self.now.max(t);
    }

    /// Handles everything due at `t` (== now).
    fn fire(&mut self, t: Ns) {
        let ended: Vec<u32> = self
            .running
            .values()
            .filter(|k| {
                let sv = &self.vcpus[k];
                matches!(sv.load, Load::Periodic { .. }) && sv.left == 0
            })
            .map(|k| k.0)
            .collect();
        for v in ended {
            let next = self.vcpus[&VcpuKey(v)].next_wake;
            self.sleep(v);
            self.vcpus.get_mut(&VcpuKey(v)).unwrap().next_wake = next;
        }
        let due: Vec<u32> =
            self.vcpus.iter().filter(|(_, v)| v.blocked && v.next_wake == Some(t)).map(|(k, _)| k.0).collect();
        for v in due {
            self.wake(v);
        }
        let expired: Vec<Cpu> = self.timer.iter().filter(|(_, &at)| at <= t).map(|(&c, _)| c).collect();
        for cpu in expired {
            self.timer.remove(&cpu);
            self.pending.insert(cpu);
        }
    }
}
