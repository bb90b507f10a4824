//! Scenario and property tests of the whole scheduler on a simulated clock.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::sim::{Load, Sim, MS, SEC, US};
use crate::{
    Cpu, CpuSet, DomKey, DomParams, Event, Ns, SchedError, Scheduler, VcpuKey, BUDGET_PERIOD, DEFAULT_RATELIMIT,
    MAX_TIMER, MIN_TIMER,
};

fn all(n: u32) -> CpuSet {
    CpuSet::range(0..n)
}

fn one(cpu: u32) -> CpuSet {
    CpuSet::single(Cpu(cpu))
}

/// Asserts `a / b` is `want` within `tolerance` (relative).
fn assert_ratio(a: Ns, b: Ns, want: f64, tolerance: f64) {
    let got = a as f64 / b as f64;
    assert!((got / want - 1.0).abs() <= tolerance, "ratio {got:.4}, want {want} ± {:.0}%", tolerance * 100.0);
}

/// `n` hogs, vCPU i in domain i with `weights[i]`, woken at 0 on `ncpus` CPUs.
fn hogs(ncpus: u32, weights: &[u16]) -> Sim {
    let mut sim = Sim::new(ncpus);
    for (i, &w) in weights.iter().enumerate() {
        sim.domain(i as u32, w, 0);
        sim.vcpu(i as u32, i as u32, all(ncpus), Load::Hog);
    }
    for i in 0..weights.len() {
        sim.wake(i as u32);
    }
    sim
}

// ---- weights -------------------------------------------------------------

#[test]
fn weights_256_512_share_one_cpu_1_to_2() {
    let mut sim = hogs(1, &[256, 512]);
    sim.run_until(10 * SEC);
    assert_ratio(sim.cpu_time(1), sim.cpu_time(0), 2.0, 0.02);
    assert_eq!(sim.cpu_time(0) + sim.cpu_time(1), 10 * SEC);
    // The scheduler's own accounting agrees (up to the running slice).
    for v in 0..2 {
        let charged = sim.s.runtime(VcpuKey(v)).unwrap();
        assert!(sim.cpu_time(v) - charged <= MAX_TIMER);
    }
}

#[test]
fn weights_1_2_4_share_one_cpu() {
    let mut sim = hogs(1, &[256, 512, 1024]);
    sim.run_until(10 * SEC);
    assert_ratio(sim.cpu_time(1), sim.cpu_time(0), 2.0, 0.02);
    assert_ratio(sim.cpu_time(2), sim.cpu_time(0), 4.0, 0.02);
}

#[test]
fn four_vcpus_on_two_cpus_share_by_weight() {
    let mut sim = hogs(2, &[256, 256, 512, 512]);
    sim.run_until(10 * SEC);
    let total: Ns = (0..4).map(|v| sim.cpu_time(v)).sum();
    assert_eq!(total, 20 * SEC, "both CPUs busy all the time");
    // Shares of the two CPUs: 1/3, 1/3, 2/3, 2/3.
    for v in 0..4 {
        let want = if v < 2 { 1.0 / 6.0 } else { 2.0 / 6.0 };
        assert_ratio(sim.cpu_time(v), total, want, 0.02);
    }
}

#[test]
fn equal_weights_share_equally_whatever_the_weight() {
    let mut sim = hogs(1, &[7, 7, 7]);
    sim.run_until(3 * SEC);
    for v in 1..3 {
        assert_ratio(sim.cpu_time(v), sim.cpu_time(0), 1.0, 0.02);
    }
}

#[test]
fn weight_change_takes_effect() {
    let mut sim = hogs(1, &[256, 256]);
    sim.run_until(SEC);
    let before = (sim.cpu_time(0), sim.cpu_time(1));
    sim.set_params(1, 768, 0);
    assert_eq!(sim.s.params(DomKey(1)), Some(DomParams { weight: 768, cap: 0 }));
    sim.run_until(5 * SEC);
    assert_ratio(sim.cpu_time(1) - before.1, sim.cpu_time(0) - before.0, 3.0, 0.03);
}

// ---- caps ----------------------------------------------------------------

#[test]
fn cap_50_alone_gets_half_a_cpu_and_the_cpu_idles_otherwise() {
    let mut sim = Sim::new(1);
    sim.domain(0, 256, 50);
    sim.vcpu(0, 0, all(1), Load::Hog);
    sim.wake(0);
    sim.run_until(10 * SEC);
    assert_ratio(sim.cpu_time(0), 10 * SEC, 0.5, 0.02);
    let idle = sim.log.iter().filter(|(_, _, run)| run.is_none()).count();
    assert!(idle > 900, "the CPU idles once per period ({idle} idle decisions)");
}

#[test]
fn cap_150_for_two_vcpus_on_two_cpus() {
    let mut sim = Sim::new(2);
    sim.domain(0, 256, 150);
    sim.vcpu(0, 0, all(2), Load::Hog);
    sim.vcpu(1, 0, all(2), Load::Hog);
    sim.wake(0);
    sim.wake(1);
    sim.run_until(10 * SEC);
    let total = sim.cpu_time(0) + sim.cpu_time(1);
    assert_ratio(total, 10 * SEC, 1.5, 0.02);
    assert_ratio(sim.cpu_time(0), sim.cpu_time(1), 1.0, 0.05);
}

#[test]
fn capped_domain_leaves_the_rest_to_an_uncapped_one() {
    let mut sim = Sim::new(1);
    sim.domain(0, 256, 25);
    sim.domain(1, 256, 0);
    sim.vcpu(0, 0, all(1), Load::Hog);
    sim.vcpu(1, 1, all(1), Load::Hog);
    sim.wake(0);
    sim.wake(1);
    sim.run_until(10 * SEC);
    assert_ratio(sim.cpu_time(0), 10 * SEC, 0.25, 0.02);
    assert_eq!(sim.cpu_time(0) + sim.cpu_time(1), 10 * SEC);
}

#[test]
fn imposing_a_cap_kicks_the_running_vcpu_and_lifting_it_releases_parked_ones() {
    let mut sim = hogs(1, &[256]);
    sim.run_until(100 * MS);
    assert_eq!(sim.running_on(0), Some(0));
    assert_eq!(sim.set_params(0, 256, 10), one(0), "its CPU must fetch budget");
    assert_eq!(sim.s.params(DomKey(0)), Some(DomParams { weight: 256, cap: 10 }));
    let t0 = sim.cpu_time(0);
    sim.run_until(1100 * MS);
    assert_ratio(sim.cpu_time(0) - t0, SEC, 0.1, 0.03);
    // Lift the cap while it waits for budget: the idle CPU takes it at once.
    while !sim.s.is_parked(VcpuKey(0)) {
        let t = sim.now + 100 * US;
        sim.run_until(t);
    }
    assert_eq!(sim.running_on(0), None);
    assert_eq!(sim.set_params(0, 256, 0), one(0));
    assert!(!sim.s.is_parked(VcpuKey(0)));
    assert_eq!(sim.running_on(0), Some(0));
    let t1 = sim.cpu_time(0);
    sim.run_until(sim.now + SEC);
    assert_eq!(sim.cpu_time(0) - t1, SEC);
}

#[test]
fn changing_a_cap_resizes_the_budget() {
    let mut sim = Sim::new(1);
    sim.domain(0, 256, 20);
    sim.vcpu(0, 0, all(1), Load::Hog);
    sim.wake(0);
    sim.run_until(SEC);
    let t1 = sim.cpu_time(0);
    assert_ratio(t1, SEC, 0.2, 0.03);
    sim.set_params(0, 256, 70);
    sim.run_until(2 * SEC);
    assert_ratio(sim.cpu_time(0) - t1, SEC, 0.7, 0.03);
}

#[test]
fn parked_vcpu_idles_the_cpu_until_the_next_replenishment() {
    let mut s = Scheduler::new(all(1));
    s.add_domain(DomKey(0), 256, 30).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(1)).unwrap();
    assert_eq!(s.wake(VcpuKey(0), 0).unwrap(), Event::Reschedule(Cpu(0)));
    // First period on the 10 ms grid: the pool holds 3 ms; the slice is
    // bounded by the quota.
    let d = s.schedule(Cpu(0), 0);
    assert_eq!((d.run, d.until), (Some(VcpuKey(0)), Some(3 * MS)));
    let d = s.schedule(Cpu(0), 3 * MS);
    assert_eq!(d.run, None);
    assert_eq!(d.until, Some(BUDGET_PERIOD), "wake up for the replenishment");
    assert_eq!(s.budget_pool(DomKey(0)), Some(0));
    let d = s.schedule(Cpu(0), BUDGET_PERIOD);
    assert_eq!((d.run, d.until), (Some(VcpuKey(0)), Some(BUDGET_PERIOD + 3 * MS)));
    // Asleep and parked: nothing to wake up for.
    let d = s.schedule(Cpu(0), BUDGET_PERIOD + 3 * MS);
    assert_eq!(d.run, None);
    s.sleep(VcpuKey(0)).unwrap();
    let d = s.schedule(Cpu(0), BUDGET_PERIOD + 4 * MS);
    assert_eq!((d.run, d.until), (None, None));
}

#[test]
fn unused_budget_goes_back_to_the_domain() {
    let mut s = Scheduler::new(all(1));
    s.add_domain(DomKey(0), 256, 50).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(1)).unwrap();
    s.wake(VcpuKey(0), 0).unwrap();
    s.schedule(Cpu(0), 0);
    assert_eq!(s.budget_pool(DomKey(0)), Some(0));
    s.sleep(VcpuKey(0)).unwrap();
    s.schedule(Cpu(0), MS);
    assert_eq!(s.budget_pool(DomKey(0)), Some(4 * MS as i64));
}

// ---- affinity ------------------------------------------------------------

#[test]
fn pinned_vcpus_stay_on_their_cpus() {
    let mut sim = Sim::new(2);
    sim.domain(0, 256, 0);
    for v in 0..3 {
        sim.vcpu(v, 0, one(0), Load::Hog);
    }
    sim.vcpu(3, 0, one(1), Load::Hog);
    for v in 0..4 {
        sim.wake(v);
    }
    sim.run_until(3 * SEC);
    // The simulation checks every decision against the affinity.
    for v in 0..3 {
        assert_ratio(sim.cpu_time(v), 3 * SEC, 1.0 / 3.0, 0.02);
    }
    assert_eq!(sim.cpu_time(3), 3 * SEC);
}

#[test]
fn moving_a_running_vcpu_off_its_cpu_reschedules_that_cpu() {
    let mut sim = hogs(2, &[256]);
    sim.run_until(5 * MS);
    let cpu = (0..2).find(|&c| sim.running_on(c) == Some(0)).unwrap();
    let other = 1 - cpu;
    let ev = sim.set_affinity(0, one(other));
    assert_eq!(ev, Event::Reschedule(Cpu(cpu)));
    assert_eq!(sim.running_on(other), Some(0));
    assert_eq!(sim.running_on(cpu), None);
    // Allowed CPUs: no event.
    assert_eq!(sim.set_affinity(0, all(2)), Event::None);
}

#[test]
fn queued_vcpu_moved_to_an_idle_cpu_is_picked_up_there() {
    let mut sim = hogs(2, &[256, 256]);
    sim.set_affinity(0, one(0));
    sim.set_affinity(1, one(0));
    sim.run_until(20 * MS);
    assert_eq!(sim.running_on(1), None);
    let waiting = if sim.running_on(0) == Some(0) { 1 } else { 0 };
    assert_eq!(sim.set_affinity(waiting, one(1)), Event::Reschedule(Cpu(1)));
    assert_eq!(sim.running_on(1), Some(waiting));
}

#[test]
fn soft_affinity_decides_which_idle_cpu_is_used() {
    let mut s = Scheduler::new(all(4));
    s.add_domain(DomKey(0), 256, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(4)).unwrap();
    s.set_soft_affinity(VcpuKey(0), one(2)).unwrap();
    assert_eq!(s.wake(VcpuKey(0), 0).unwrap(), Event::Reschedule(Cpu(2)));
    assert_eq!(s.schedule(Cpu(2), 0).run, Some(VcpuKey(0)));
}

#[test]
fn vcpu_off_its_soft_affinity_moves_when_a_preferred_cpu_frees_up() {
    let mut sim = Sim::new(2);
    sim.domain(0, 256, 0);
    sim.vcpu(0, 0, all(2), Load::Hog);
    sim.vcpu(1, 0, one(1), Load::Manual);
    sim.s.set_soft_affinity(VcpuKey(0), one(1)).unwrap();
    sim.wake(1);
    sim.wake(0);
    sim.run_until(MS);
    assert_eq!((sim.running_on(0), sim.running_on(1)), (Some(0), Some(1)));
    sim.sleep(1);
    sim.run_until(20 * MS);
    assert_eq!((sim.running_on(0), sim.running_on(1)), (None, Some(0)));
}

// ---- wake-up, ratelimit, yield, latency ------------------------------------

/// One CPU running hog 0 since time 0; vCPU 1 (more credit) asleep.
fn hog_and_sleeper() -> Scheduler {
    let mut s = Scheduler::new(all(1));
    s.add_domain(DomKey(0), 256, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(1)).unwrap();
    s.add_vcpu(VcpuKey(1), DomKey(0), all(1)).unwrap();
    s.wake(VcpuKey(0), 0).unwrap();
    let d = s.schedule(Cpu(0), 0);
    assert_eq!((d.run, d.until), (Some(VcpuKey(0)), Some(MAX_TIMER)));
    s
}

#[test]
fn waking_vcpu_with_more_credit_preempts_after_the_ratelimit() {
    let mut s = hog_and_sleeper();
    let now = 2 * MS;
    assert_eq!(s.wake(VcpuKey(1), now).unwrap(), Event::Reschedule(Cpu(0)));
    let d = s.schedule(Cpu(0), now);
    assert_eq!(d.run, Some(VcpuKey(1)));
    // The preempted one is back in the queue; the new one runs at least the ratelimit.
    assert_eq!(s.queued(), [VcpuKey(0)]);
    assert!(d.until.unwrap() >= now + DEFAULT_RATELIMIT);
}

#[test]
fn ratelimit_defers_preemption_of_a_vcpu_that_just_started() {
    let mut s = hog_and_sleeper();
    // vCPU 1 has more credit, but vCPU 0 has run for less than the ratelimit.
    assert_eq!(s.wake(VcpuKey(1), 300 * US).unwrap(), Event::Reschedule(Cpu(0)));
    // So its CPU keeps it, but only until the ratelimit is over...
    let d = s.schedule(Cpu(0), 300 * US);
    assert_eq!((d.run, d.until), (Some(VcpuKey(0)), Some(DEFAULT_RATELIMIT)));
    // ...at least MIN_TIMER from now, though...
    let d = s.schedule(Cpu(0), 800 * US);
    assert_eq!((d.run, d.until), (Some(VcpuKey(0)), Some(800 * US + MIN_TIMER)));
    // ...then the waiting vCPU gets the CPU.
    assert_eq!(s.schedule(Cpu(0), 1300 * US).run, Some(VcpuKey(1)));
}

#[test]
fn waking_vcpu_with_no_credit_advantage_does_not_preempt() {
    let mut s = hog_and_sleeper();
    // Both have 10 ms of credit and vCPU 0 has not been charged yet.
    assert_eq!(s.wake(VcpuKey(1), 0).unwrap(), Event::None);
    assert_eq!(s.schedule(Cpu(0), 0).run, Some(VcpuKey(0)));
}

#[test]
fn ratelimit_can_be_changed_or_disabled() {
    let mut s = hog_and_sleeper();
    assert_eq!(s.set_ratelimit(50 * US), Err(SchedError::RatelimitOutOfRange(50 * US)));
    assert_eq!(s.set_ratelimit(600 * MS), Err(SchedError::RatelimitOutOfRange(600 * MS)));
    assert_eq!(s.ratelimit(), DEFAULT_RATELIMIT);
    s.set_ratelimit(0).unwrap();
    assert_eq!(s.wake(VcpuKey(1), 100 * US).unwrap(), Event::Reschedule(Cpu(0)));
    assert_eq!(s.schedule(Cpu(0), 100 * US).run, Some(VcpuKey(1)));
}

#[test]
fn waking_vcpu_without_enough_credit_does_not_preempt() {
    let mut s = hog_and_sleeper();
    // vCPU 0 keeps the CPU for its whole 10 ms slice, burns 10 ms of credit,
    // and the credit reset gives both 10 ms more.
    let d = s.schedule(Cpu(0), 10 * MS);
    assert_eq!(d.run, Some(VcpuKey(0)));
    assert_eq!(s.credit_of(VcpuKey(0)), 10 * MS as i64);
    assert_eq!(s.credit_of(VcpuKey(1)), 10 * MS as i64 + 500 * US as i64, "clipped to INIT + carryover");
    // vCPU 1 has more credit, but not by the margin needed... unless it is
    // on the same CPU, where any advantage counts.
    assert_eq!(s.wake(VcpuKey(1), 12 * MS).unwrap(), Event::Reschedule(Cpu(0)));
}

#[test]
fn waking_vcpu_goes_to_an_idle_cpu_rather_than_preempting() {
    let mut sim = hogs(2, &[256]);
    sim.domain(1, 256, 0);
    sim.vcpu(1, 1, all(2), Load::Manual);
    sim.run_until(5 * MS);
    let busy = (0..2).find(|&c| sim.running_on(c).is_some()).unwrap();
    let ev = sim.s.wake(VcpuKey(1), sim.now).unwrap();
    assert_eq!(ev, Event::Reschedule(Cpu(1 - busy)));
}

#[test]
fn a_preemptable_cpu_is_preferred_to_one_inside_its_ratelimit() {
    let mut s = Scheduler::new(all(2));
    s.add_domain(DomKey(0), 256, 0).unwrap();
    for v in 0..3 {
        s.add_vcpu(VcpuKey(v), DomKey(0), all(2)).unwrap();
    }
    s.wake(VcpuKey(0), 0).unwrap();
    s.wake(VcpuKey(1), 0).unwrap();
    let a = s.schedule(Cpu(0), 0).run.unwrap();
    assert!(s.schedule(Cpu(1), 0).run.is_some());
    // `a` blocks and wakes on CPU 0: 5 ms of credit left, a fresh ratelimit.
    s.sleep(a).unwrap();
    s.schedule(Cpu(0), 5 * MS);
    assert_eq!(s.wake(a, 5 * MS).unwrap(), Event::Reschedule(Cpu(0)));
    assert_eq!(s.schedule(Cpu(0), 5 * MS).run, Some(a));
    // vCPU 2 last ran on CPU 0 (credit gain 5 ms there, 4.8 ms minus the
    // migration resistance on CPU 1), but only CPU 1 can be preempted now.
    s.set_affinity(VcpuKey(2), one(0), 0).unwrap();
    s.set_affinity(VcpuKey(2), all(2), 0).unwrap();
    assert_eq!(s.wake(VcpuKey(2), 5 * MS + 200 * US).unwrap(), Event::Reschedule(Cpu(1)));
}

#[test]
fn an_idle_cpu_pulls_a_vcpu_at_the_credit_floor() {
    // vCPU 0 (weight 1) prefers CPU 1 but runs on CPU 0 while vCPU 1
    // (weight 65535) occupies CPU 1; one slice takes it to the credit floor.
    let mut s = Scheduler::new(all(2));
    s.add_domain(DomKey(0), 1, 0).unwrap();
    s.add_domain(DomKey(1), u16::MAX, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(2)).unwrap();
    s.add_vcpu(VcpuKey(1), DomKey(1), one(1)).unwrap();
    s.set_soft_affinity(VcpuKey(0), one(1)).unwrap();
    assert_eq!(s.wake(VcpuKey(1), 0).unwrap(), Event::Reschedule(Cpu(1)));
    assert_eq!(s.schedule(Cpu(1), 0).run, Some(VcpuKey(1)));
    assert_eq!(s.wake(VcpuKey(0), 0).unwrap(), Event::Reschedule(Cpu(0)));
    assert_eq!(s.schedule(Cpu(0), 0).run, Some(VcpuKey(0)));
    s.sleep(VcpuKey(1)).unwrap();
    assert_eq!(s.schedule(Cpu(1), 0).run, None);
    // CPU 1 is free: CPU 0 lets vCPU 0 go there...
    let d = s.schedule(Cpu(0), MS);
    assert_eq!((d.run, d.kick), (None, one(1)));
    assert_eq!(s.credit_of(VcpuKey(0)), -10 * MS as i64);
    // ...and CPU 1 takes it, although it last ran elsewhere with no credit.
    assert_eq!(s.schedule(Cpu(1), MS).run, Some(VcpuKey(0)));
}

#[test]
fn a_replenishment_kicks_the_cpu_that_can_run_the_released_vcpu() {
    let mut s = Scheduler::new(all(2));
    s.add_domain(DomKey(0), 256, 10).unwrap();
    s.add_domain(DomKey(1), 256, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), one(1)).unwrap();
    s.add_vcpu(VcpuKey(1), DomKey(1), one(0)).unwrap();
    s.wake(VcpuKey(0), 0).unwrap();
    s.wake(VcpuKey(1), 0).unwrap();
    assert_eq!(s.schedule(Cpu(0), 0).run, Some(VcpuKey(1)));
    assert_eq!(s.schedule(Cpu(1), 0).until, Some(MS), "1 ms of budget");
    let d = s.schedule(Cpu(1), MS);
    assert_eq!((d.run, d.until), (None, Some(BUDGET_PERIOD)));
    assert!(s.is_parked(VcpuKey(0)));
    // CPU 0's slice also ends at the replenishment; it releases vCPU 0 and
    // tells CPU 1 to run it.
    let d = s.schedule(Cpu(0), BUDGET_PERIOD);
    assert_eq!((d.run, d.kick), (Some(VcpuKey(1)), one(1)));
    assert_eq!(s.schedule(Cpu(1), BUDGET_PERIOD).run, Some(VcpuKey(0)));
}

#[test]
fn yield_hands_the_cpu_to_a_waiting_vcpu() {
    let mut sim = hogs(1, &[256, 256]);
    sim.run_until(3 * MS);
    let first = sim.running_on(0).unwrap();
    // Within the ratelimit, and with more credit: only a yield lets the other in.
    sim.yield_now(first);
    assert_eq!(sim.running_on(0), Some(1 - first));
    // Yielding with nobody waiting keeps the CPU.
    let mut alone = hogs(1, &[256]);
    alone.run_until(3 * MS);
    alone.yield_now(0);
    assert_eq!(alone.running_on(0), Some(0));
    // Yielding when not running changes nothing.
    sim.yield_now(first);
    assert_eq!(sim.running_on(0), Some(1 - first));
}

#[test]
fn io_bound_vcpu_gets_the_cpu_quickly_next_to_hogs() {
    let mut sim = hogs(1, &[256, 256]);
    sim.domain(2, 256, 0);
    sim.vcpu(2, 2, all(1), Load::Periodic { period: 5 * MS, burst: 200 * US });
    sim.wake(2);
    // At first all three have the same credit, so it has no claim to
    // preempt; once it has more (it runs little), it gets the CPU as soon
    // as the running hog's ratelimit allows.
    sim.run_until(100 * MS);
    sim.reset_latencies();
    sim.run_until(2 * SEC);
    assert!(sim.max_latency(2) <= DEFAULT_RATELIMIT, "latency {} ns", sim.max_latency(2));
    // It got all the CPU it asked for (4%), the hogs share the rest.
    assert_ratio(sim.cpu_time(2), 2 * SEC, 0.04, 0.02);
    assert_ratio(sim.cpu_time(0), sim.cpu_time(1), 1.0, 0.02);
}

#[test]
fn sleeping_running_vcpu_reschedules_its_cpu_and_never_runs_while_asleep() {
    let mut sim = hogs(1, &[256, 256]);
    sim.run_until(MS);
    let r = sim.running_on(0).unwrap();
    assert_eq!(sim.s.sleep(VcpuKey(r)).unwrap(), Event::Reschedule(Cpu(0)));
    assert_eq!(sim.s.schedule(Cpu(0), sim.now).run, Some(VcpuKey(1 - r)));
    // Asleep and queued alike never run (the simulation checks every decision).
    let mut sim = hogs(1, &[256, 256, 256]);
    sim.run_until(MS);
    let waiting = (0..3).find(|&v| sim.running_on(0) != Some(v)).unwrap();
    sim.sleep(waiting);
    sim.run_until(SEC);
    assert_eq!(sim.cpu_time(waiting), 0);
}

// ---- idle, lifecycle, errors ---------------------------------------------

#[test]
fn nothing_runnable_means_idle_without_a_timer() {
    let mut s = Scheduler::new(all(2));
    assert_eq!(s.schedule(Cpu(0), 5).run, None);
    assert_eq!(s.schedule(Cpu(0), 5).until, None);
    s.add_domain(DomKey(0), 256, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(2)).unwrap();
    let d = s.schedule(Cpu(1), 10);
    assert_eq!((d.run, d.until, d.kick), (None, None, CpuSet::new()));
    // A CPU it does not manage only ever idles.
    s.wake(VcpuKey(0), 20).unwrap();
    let d = s.schedule(Cpu(7), 20);
    assert_eq!((d.run, d.until), (None, None));
    assert_eq!(s.running(Cpu(7)), None);
}

#[test]
fn vcpu_that_blocks_and_wakes_runs_again() {
    let mut sim = hogs(1, &[256]);
    sim.run_until(3 * MS);
    sim.sleep(0);
    assert_eq!(sim.running_on(0), None);
    assert_eq!(sim.timer(0), None);
    sim.run_until(50 * MS);
    sim.wake(0);
    assert_eq!(sim.running_on(0), Some(0));
    assert_eq!(sim.cpu_time(0), 3 * MS);
}

#[test]
fn waking_an_awake_vcpu_or_sleeping_a_sleeping_one_is_harmless() {
    let mut s = hog_and_sleeper();
    assert_eq!(s.wake(VcpuKey(0), MS).unwrap(), Event::None);
    assert_eq!(s.sleep(VcpuKey(1)).unwrap(), Event::None);
    assert_eq!(s.sleep(VcpuKey(0)).unwrap(), Event::Reschedule(Cpu(0)));
    // Woken again before its CPU rescheduled: it just continues.
    assert_eq!(s.wake(VcpuKey(0), MS).unwrap(), Event::None);
    assert_eq!(s.schedule(Cpu(0), 2 * MS).run, Some(VcpuKey(0)));
}

#[test]
fn bad_requests_are_refused_without_changes() {
    let mut s = hog_and_sleeper();
    let before = alloc::format!("{s:?}");
    let (d0, d9, v0, v9) = (DomKey(0), DomKey(9), VcpuKey(0), VcpuKey(9));
    assert_eq!(s.add_domain(d0, 256, 0), Err(SchedError::DomainExists(d0)));
    assert_eq!(s.add_domain(d9, 0, 0), Err(SchedError::ZeroWeight));
    assert_eq!(s.set_params(d9, 256, 0, 0), Err(SchedError::UnknownDomain(d9)));
    assert_eq!(s.set_params(d0, 0, 0, 0), Err(SchedError::ZeroWeight));
    assert_eq!(s.add_vcpu(v0, d0, all(1)), Err(SchedError::VcpuExists(v0)));
    assert_eq!(s.add_vcpu(v9, d9, all(1)), Err(SchedError::UnknownDomain(d9)));
    assert_eq!(s.add_vcpu(v9, d0, CpuSet::new()), Err(SchedError::EmptyAffinity));
    assert_eq!(s.add_vcpu(v9, d0, CpuSet::range(1..256)), Err(SchedError::EmptyAffinity));
    assert_eq!(s.set_affinity(v0, one(3), 0), Err(SchedError::EmptyAffinity));
    assert_eq!(s.set_affinity(v9, all(1), 0), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.set_soft_affinity(v9, all(1)), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.wake(v9, 0), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.sleep(v9), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.yield_now(v9), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.remove_vcpu(v9), Err(SchedError::UnknownVcpu(v9)));
    assert_eq!(s.remove_vcpu(v0), Err(SchedError::VcpuRunning(v0, Cpu(0))));
    assert_eq!(s.remove_domain(d9), Err(SchedError::UnknownDomain(d9)));
    assert_eq!(s.remove_domain(d0), Err(SchedError::VcpuRunning(v0, Cpu(0))));
    assert_eq!(alloc::format!("{s:?}"), before);
    assert_eq!(s.runtime(v9), None);
    assert_eq!(s.params(d9), None);
    let msg = alloc::format!("{}", SchedError::VcpuRunning(v0, Cpu(3)));
    assert_eq!(msg, "vCPU 0 is running on CPU 3");
}

#[test]
fn domains_and_vcpus_come_and_go() {
    let mut s = hog_and_sleeper();
    s.check_invariants();
    s.remove_vcpu(VcpuKey(1)).unwrap();
    s.sleep(VcpuKey(0)).unwrap();
    assert_eq!(s.schedule(Cpu(0), MS).run, None);
    s.remove_domain(DomKey(0)).unwrap();
    assert_eq!(s.runtime(VcpuKey(0)), None);
    s.check_invariants();
    // The keys can be used again.
    s.add_domain(DomKey(0), 10, 0).unwrap();
    s.add_vcpu(VcpuKey(0), DomKey(0), all(1)).unwrap();
    assert_eq!(s.wake(VcpuKey(0), 2 * MS).unwrap(), Event::Reschedule(Cpu(0)));
    assert_eq!(s.schedule(Cpu(0), 2 * MS).run, Some(VcpuKey(0)));
    s.check_invariants();
}

#[test]
fn removing_a_queued_vcpu_takes_it_out_of_the_runqueue() {
    let mut sim = hogs(1, &[256, 256]);
    sim.run_until(MS);
    let waiting = 1 - sim.running_on(0).unwrap();
    sim.s.remove_vcpu(VcpuKey(waiting)).unwrap();
    assert!(sim.s.queued().is_empty());
    sim.s.check_invariants();
}

#[test]
fn new_vcpus_are_spread_over_the_cpus() {
    let mut s = Scheduler::new(all(3));
    s.add_domain(DomKey(0), 256, 0).unwrap();
    let mut woken = Vec::new();
    for v in 0..3 {
        s.add_vcpu(VcpuKey(v), DomKey(0), all(3)).unwrap();
        woken.push(s.wake(VcpuKey(v), 0).unwrap());
    }
    woken.sort_by_key(|e| match e {
        Event::Reschedule(c) => c.0,
        Event::None => u32::MAX,
    });
    assert_eq!(woken, vec![Event::Reschedule(Cpu(0)), Event::Reschedule(Cpu(1)), Event::Reschedule(Cpu(2))]);
}

// ---- random event sequences ------------------------------------------------

/// One step of a random scenario.
#[derive(Clone, Debug)]
enum Op {
    Run(Ns),
    Wake(u32),
    Sleep(u32),
    Yield(u32),
    Pin(u32, u8),
    Soft(u32, u8),
    Weight(u32, u16),
    Cap(u32, u16),
}

fn op(nvcpus: u32, ndoms: u32, caps: bool) -> impl Strategy<Value = Op> {
    let v = 0..nvcpus;
    let cap = if caps { prop_oneof![Just(0u16), 5u16..250].boxed() } else { Just(0u16).boxed() };
    prop_oneof![
        4 => (1..30 * MS).prop_map(Op::Run),
        2 => v.clone().prop_map(Op::Wake),
        1 => v.clone().prop_map(Op::Sleep),
        1 => v.clone().prop_map(Op::Yield),
        1 => (v.clone(), 1u8..16).prop_map(|(v, m)| Op::Pin(v, m)),
        1 => (v, 0u8..16).prop_map(|(v, m)| Op::Soft(v, m)),
        1 => (0..ndoms, 1u16..=u16::MAX).prop_map(|(d, w)| Op::Weight(d, w)),
        1 => (0..ndoms, cap).prop_map(|(d, c)| Op::Cap(d, c)),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    ncpus: u32,
    weights: Vec<u16>,
    /// Domain and initial affinity (bit mask) of each vCPU.
    vcpus: Vec<(u32, u8)>,
    ops: Vec<Op>,
}

fn scenario(caps: bool) -> impl Strategy<Value = Scenario> {
    (1u32..=4, proptest::collection::vec(1u16..=u16::MAX, 1..=3), 1u32..=6).prop_flat_map(move |(ncpus, weights, n)| {
        let ndoms = weights.len() as u32;
        let vcpus = proptest::collection::vec((0..ndoms, 1u8..16), n as usize);
        let ops = proptest::collection::vec(op(n, ndoms, caps), 1..120);
        (Just(ncpus), Just(weights), vcpus, ops).prop_map(|(ncpus, weights, vcpus, ops)| Scenario {
            ncpus,
            weights,
            vcpus,
            ops,
        })
    })
}

/// The CPUs of mask `m` on an `ncpus` machine, or all of them if none.
fn mask(m: u8, ncpus: u32) -> CpuSet {
    let set: CpuSet = (0..ncpus).filter(|c| m & (1 << c) != 0).map(Cpu).collect();
    if set.is_empty() {
        all(ncpus)
    } else {
        set
    }
}

/// Plays `sc` (every decision is checked by the simulation); returns the
/// simulation and whether each domain was ever capped.
fn play(sc: &Scenario) -> (Sim, Vec<bool>) {
    let mut sim = Sim::new(sc.ncpus);
    let mut capped = vec![false; sc.weights.len()];
    for (d, &w) in sc.weights.iter().enumerate() {
        sim.domain(d as u32, w, 0);
    }
    for (v, &(d, m)) in sc.vcpus.iter().enumerate() {
        sim.vcpu(v as u32, d, mask(m, sc.ncpus), Load::Manual);
    }
    for op in &sc.ops {
        match *op {
            Op::Run(dt) => {
                let end = sim.now + dt;
                sim.run_until(end);
            }
            Op::Wake(v) => sim.wake(v),
            Op::Sleep(v) => sim.sleep(v),
            Op::Yield(v) => sim.yield_now(v),
            Op::Pin(v, m) => {
                sim.set_affinity(v, mask(m, sc.ncpus));
            }
            Op::Soft(v, m) => sim.s.set_soft_affinity(VcpuKey(v), mask(m, sc.ncpus)).unwrap(),
            Op::Weight(d, w) => {
                let cap = sim.s.params(DomKey(d)).unwrap().cap;
                sim.set_params(d, w, cap);
            }
            Op::Cap(d, c) => {
                let weight = sim.s.params(DomKey(d)).unwrap().weight;
                capped[d as usize] |= c != 0;
                sim.set_params(d, weight, c);
            }
        }
    }
    (sim, capped)
}

/// How long a runnable, uncapped vCPU may have to wait for a CPU: with up
/// to six vCPUs on one CPU and weights as far apart as 1 and 65535, a
/// couple of credit epochs of up to 10 ms per competitor. (The worst seen
/// over 40,000 random scenarios was about 100 ms; a lost wake-up shows as
/// the whole final 500 ms.)
const STARVATION_BOUND: Ns = 200 * MS;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Hard affinity is never violated, no vCPU runs on two CPUs, blocked
    /// vCPUs never run (all checked by the simulation at every decision, with
    /// the scheduler's invariants), and no uncapped vCPU waits for long.
    #[test]
    fn random_event_sequences_keep_the_guarantees(sc in scenario(false)) {
        let (mut sim, _) = play(&sc);
        let end = sim.now + 500 * MS;
        sim.run_until(end);
        for v in 0..sc.vcpus.len() as u32 {
            prop_assert!(sim.max_wait(v) <= STARVATION_BOUND, "vCPU {} waited {} ns", v, sim.max_wait(v));
        }
    }

    /// The same, with caps being set and lifted: capped vCPUs may wait for
    /// budget, but the others still do not starve.
    #[test]
    fn random_event_sequences_with_caps_keep_the_guarantees(sc in scenario(true)) {
        let (mut sim, capped) = play(&sc);
        let end = sim.now + 500 * MS;
        sim.run_until(end);
        for (v, &(d, _)) in sc.vcpus.iter().enumerate() {
            if !capped[d as usize] {
                prop_assert!(sim.max_wait(v as u32) <= STARVATION_BOUND);
            }
        }
    }

    /// Same events, same decisions.
    #[test]
    fn decisions_are_deterministic(sc in scenario(true)) {
        let (a, _) = play(&sc);
        let (b, _) = play(&sc);
        prop_assert_eq!(&a.log, &b.log);
        prop_assert!(sc.vcpus.iter().enumerate().all(|(v, _)| a.is_blocked(v as u32) == b.is_blocked(v as u32)));
    }
}
