//! Running vCPUs on physical CPUs: the glue between keel's domains and the credit2 policy in
//! `keel-sched`.
//!
//! One scheduler instance (one credit2 runqueue) covers every CPU, under one lock. Each CPU
//! runs `cpu_loop`: ask the policy what to run until when, run that vCPU's slice (or halt
//! idle with the timer armed), repeat. A CPU the policy wants to reschedule gets the KICK IPI,
//! which makes a running guest exit. CPU 0 also keeps the timers of blocked vCPUs, destroys
//! domains that shut down, and applies `when_idle=` once no domain is left.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use keel_sched::{Cpu, CpuSet, DomKey, Event, Scheduler, VcpuKey};

use crate::arch::x86::percpu::{self, PerCpu};
use crate::arch::x86::{apic, cpu, time};
use crate::dom::vcpu::Vcpu;
use crate::dom::{self, Domain};
use crate::sync::IrqMutex;

static SCHED: IrqMutex<Option<Scheduler>> = IrqMutex::new(None);
static VCPUS: IrqMutex<BTreeMap<u32, Arc<Vcpu>>> = IrqMutex::new(BTreeMap::new());

/// Set up the policy for CPUs 0..n.
pub fn init(cpus: u32) {
    *SCHED.lock() = Some(Scheduler::new(CpuSet::range(0..cpus)));
}

fn with<R>(f: impl FnOnce(&mut Scheduler) -> R) -> Option<R> {
    SCHED.lock().as_mut().map(f)
}

fn act(ev: Event) {
    if let Event::Reschedule(Cpu(c)) = ev {
        kick_cpu(c);
    }
}

fn kick_cpu(c: u32) {
    let Some(target) = percpu::cpu(c as usize) else { return };
    target.need_resched.store(true, Ordering::Release);
    if percpu::try_this_cpu().is_none_or(|me| me.index != c) {
        apic::send_ipi(apic::Dest::Apic(target.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
    }
}

/// Register a new domain and its vCPUs (all asleep) with the policy; `affinity` (bit n = CPU
/// n) restricts where they may run.
pub fn add_domain(d: &Arc<Domain>, weight: u16, cap: u16, affinity: Option<u64>) {
    with(|s| {
        let mut all = s.cpus();
        if let Some(mask) = affinity {
            let wanted: CpuSet = (0..64).filter(|c| mask & (1 << c) != 0).map(Cpu).collect();
            let usable = CpuSet::from_iter(all.iter().filter(|c| wanted.contains(*c)));
            if usable.is_empty() {
                log::warn!("d{}: none of the CPUs in its affinity is online; it may run on any", d.id);
            } else {
                all = usable;
            }
        }
        if let Err(e) = s.add_domain(DomKey(d.id as u32), weight, cap) {
            log::error!("sched: d{}: {e:?}", d.id);
        }
        for v in &d.vcpus {
            if let Err(e) = s.add_vcpu(VcpuKey(v.key), DomKey(d.id as u32), all) {
                log::error!("sched: d{}v{}: {e:?}", d.id, v.id);
            }
        }
    });
    let mut table = VCPUS.lock();
    for v in &d.vcpus {
        table.insert(v.key, v.clone());
    }
}

/// Forget a domain that is being destroyed. False if one of its vCPUs is still the current
/// one of some CPU (that CPU has not rescheduled yet): try again later.
pub fn remove_domain(d: &Arc<Domain>) -> bool {
    let removed = with(|s| {
        if d.vcpus
            .iter()
            .any(|v| s.remove_vcpu(VcpuKey(v.key)).is_err_and(|e| matches!(e, keel_sched::SchedError::VcpuRunning(..))))
        {
            return false;
        }
        let _ = s.remove_domain(DomKey(d.id as u32));
        true
    })
    .unwrap_or(true);
    if removed {
        let mut table = VCPUS.lock();
        for v in &d.vcpus {
            table.remove(&v.key);
        }
    }
    removed
}

/// The vCPU became runnable.
pub fn wake(v: &Arc<Vcpu>) {
    if v.domain().is_some_and(|d| d.is_paused()) {
        return;
    }
    if let Some(Ok(ev)) = with(|s| s.wake(VcpuKey(v.key), time::now_ns())) {
        act(ev);
    }
}

/// The vCPU can no longer run (blocked, offline, paused).
pub fn sleep(v: &Arc<Vcpu>) {
    if let Some(Ok(ev)) = with(|s| s.sleep(VcpuKey(v.key))) {
        act(ev);
    }
}

/// CPU time the vCPU has had.
pub fn runtime(v: &Arc<Vcpu>) -> u64 {
    with(|s| s.runtime(VcpuKey(v.key))).flatten().unwrap_or(0)
}

/// Ask CPU 0 to look at its housekeeping (a domain to destroy, a timer to re-arm).
pub fn kick_idle() {
    kick_cpu(0);
}

/// CPU time a domain has had, over all its vCPUs.
pub fn domain_runtime(d: &Domain) -> u64 {
    d.vcpus.iter().map(runtime).sum()
}

/// The loop every CPU runs once it is up. Never returns.
pub fn cpu_loop(me: &'static PerCpu) -> ! {
    loop {
        let now = time::now_ns();
        if me.index == 0 {
            crate::timers::expire(now);
            crate::console::housekeeping(now);
            if dom::reap() > 0 && dom::count() == 0 && dom::EVER_CREATED.load(Ordering::Acquire) {
                crate::all_domains_gone();
            }
        }
        me.need_resched.store(false, Ordering::Release);
        let decision = with(|s| s.schedule(Cpu(me.index), now));
        let Some(decision) = decision else {
            idle(me, None);
            continue;
        };
        for c in decision.kick.iter() {
            if c.0 == me.index {
                me.need_resched.store(true, Ordering::Release);
            } else {
                kick_cpu(c.0);
            }
        }
        match decision.run.and_then(|k| VCPUS.lock().get(&k.0).cloned()) {
            Some(v) => {
                let end = v.run_slice(me, decision.until);
                if end == crate::dom::vcpu::SliceEnd::Yielded {
                    with(|s| s.yield_now(VcpuKey(v.key)));
                }
            }
            None => idle(me, decision.until),
        }
    }
}

/// Halt until an interrupt, with the timer armed for `until` (and, on CPU 0, the earliest
/// blocked vCPU's timer).
fn idle(me: &'static PerCpu, until: Option<u64>) {
    let now = time::now_ns();
    // A domain whose destruction had to wait (a CPU was still leaving one of its vCPUs) is
    // retried shortly rather than when something else happens.
    let retry = (me.index == 0 && dom::destroy_pending()).then_some(now + 1_000_000);
    // Interrupts off before the timer is armed: if it fires before HLT, it stays pending and
    // ends the HLT at once rather than being taken here and leaving this CPU asleep.
    x86_64::instructions::interrupts::disable();
    let console = if me.index == 0 { crate::console::next_housekeeping() } else { None };
    let next = [until, crate::timers::earliest_for(me.index), retry, console].into_iter().flatten().min();
    apic::timer_oneshot(next.map_or(0, |n| n.saturating_sub(time::now_ns()).max(1_000)));
    if !me.need_resched.load(Ordering::Acquire) {
        cpu::wait_for_interrupt();
    }
    x86_64::instructions::interrupts::enable();
}
