//! A guest vCPU: its run state, its hardware state (behind `virt`), its local APIC, and the
//! loop that runs it on a physical CPU for one scheduling slice.
//!
//! Locking: `hw` is held by the one CPU running the vCPU for the whole slice; `vlapic` is held
//! only briefly, so other CPUs can deliver IPIs and timer interrupts while the vCPU runs (they
//! then kick its CPU, which makes the guest exit and look at its vLAPIC again).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use keel_guest::msr::MsrState;
use keel_vlapic::{Received, Vlapic};

use super::{CreateError, DomId, Domain};
use crate::arch::x86::percpu::{self, PerCpu};
use crate::arch::x86::svm::vcpu::SvmVcpu;
use crate::arch::x86::virt::Event;
use crate::arch::x86::{apic, time};
use crate::sync::IrqMutex;

/// A vCPU's run state (Xen's RUNSTATE_*, plus offline/down).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u8)]
pub enum RunState {
    /// Not started (waiting for INIT/SIPI or VCPUOP_up), or stopped (HLT with interrupts off).
    Offline = 0,
    /// Ready to run.
    Runnable = 1,
    /// Running on a CPU.
    Running = 2,
    /// Waiting for an interrupt (HLT, SCHEDOP_block).
    Blocked = 3,
}

impl RunState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Runnable,
            2 => Self::Running,
            3 => Self::Blocked,
            _ => Self::Offline,
        }
    }
}

/// The state the CPU running the vCPU owns.
pub struct Hw {
    /// Vendor state.
    pub cpu: SvmVcpu,
    /// Emulated MSRs.
    pub msrs: MsrState,
}

/// Whole-system unique vCPU key (the scheduler's handle).
static NEXT_KEY: AtomicU32 = AtomicU32::new(1);

/// A guest vCPU.
pub struct Vcpu {
    /// Its domain.
    pub domid: DomId,
    /// Its id within the domain.
    pub id: u32,
    /// vCPUs in its domain.
    pub nr_vcpus: u32,
    /// The scheduler's handle.
    pub key: u32,
    hw: spin::Mutex<Option<Hw>>,
    /// Its local APIC.
    pub vlapic: IrqMutex<Vlapic>,
    state: AtomicU8,
    /// The CPU running it, or `u32::MAX`.
    on_cpu: AtomicU32,
    /// The CPU it last ran on (timers are kept there).
    pub last_cpu: AtomicU32,
    nmi: AtomicBool,
    /// Its guest TLB must be flushed before it runs again (a p2m change).
    tlb_flush: AtomicBool,
}

/// How a slice ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum SliceEnd {
    /// The slice is up or the CPU must reschedule.
    Preempted,
    /// The vCPU blocked (waits for an interrupt).
    Blocked,
    /// The vCPU yielded.
    Yielded,
    /// The vCPU went offline, or its domain is dying or paused.
    Stopped,
}

impl Vcpu {
    /// vCPU `id` of domain `domid` (of `nr` vCPUs), with nested paging on `p2m_root`.
    pub fn new(domid: DomId, id: u32, nr: u32, p2m_root: u64) -> Result<Self, CreateError> {
        let cpu = SvmVcpu::new(p2m_root).map_err(|e| match e {
            crate::arch::x86::svm::vcpu::CreateError::NoSvm => CreateError::NoVirtualization,
            crate::arch::x86::svm::vcpu::CreateError::OutOfMemory => CreateError::OutOfMemory,
        })?;
        Ok(Vcpu {
            domid,
            id,
            nr_vcpus: nr,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            hw: spin::Mutex::new(Some(Hw { cpu, msrs: MsrState::default() })),
            vlapic: IrqMutex::new(Vlapic::new(keel_guest::cpuid::apic_id(id), id == 0)),
            state: AtomicU8::new(RunState::Offline as u8),
            on_cpu: AtomicU32::new(u32::MAX),
            last_cpu: AtomicU32::new(0),
            nmi: AtomicBool::new(false),
            tlb_flush: AtomicBool::new(false),
        })
    }

    /// Its run state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: RunState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Whether a CPU is running it right now.
    pub fn is_running(&self) -> bool {
        self.on_cpu.load(Ordering::Acquire) != u32::MAX
    }

    /// Its domain (None once destroyed).
    pub fn domain(&self) -> Option<Arc<Domain>> {
        super::get(self.domid)
    }

    /// Work on its hardware state while it is not running (building, INIT/SIPI).
    pub fn with_hw<R>(&self, f: impl FnOnce(&mut Hw) -> R) -> Option<R> {
        self.hw.lock().as_mut().map(f)
    }

    /// Free its hardware state (the domain is destroyed).
    pub fn release(&self) {
        self.hw.lock().take();
    }

    /// Make it runnable from offline (boot vCPU at domain start; STARTUP IPI).
    pub fn start(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(RunState::Offline as u8, RunState::Runnable as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            crate::sched::wake(self);
        }
    }

    /// Wake it if it is blocked; make the CPU running it look at its interrupts again.
    pub fn kick(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(RunState::Blocked as u8, RunState::Runnable as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            crate::sched::wake(self);
            return;
        }
        let cpu = self.on_cpu.load(Ordering::Acquire);
        if cpu != u32::MAX && percpu::try_this_cpu().is_none_or(|me| me.index != cpu) {
            if let Some(c) = percpu::cpu(cpu as usize) {
                c.need_resched.store(true, Ordering::Release);
                apic::send_ipi(apic::Dest::Apic(c.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
            }
        }
    }

    /// Stop it for good (its domain shut down): off the scheduler, out of the guest.
    pub fn stop(self: &Arc<Self>) {
        self.set_state(RunState::Offline);
        crate::sched::sleep(self);
        let cpu = self.on_cpu.load(Ordering::Acquire);
        if cpu != u32::MAX && percpu::try_this_cpu().is_none_or(|me| me.index != cpu) {
            if let Some(c) = percpu::cpu(cpu as usize) {
                c.need_resched.store(true, Ordering::Release);
                apic::send_ipi(apic::Dest::Apic(c.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
            }
        }
    }

    /// Runnable again after its domain was unpaused (if it was runnable before).
    pub fn wake_if_runnable(self: &Arc<Self>) {
        if matches!(self.state(), RunState::Runnable | RunState::Running) {
            crate::sched::wake(self);
        }
    }

    /// Flush its guest TLB before it next runs; if it runs right now, make it exit first.
    pub fn request_tlb_flush(&self) {
        self.tlb_flush.store(true, Ordering::Release);
        let cpu = self.on_cpu.load(Ordering::Acquire);
        if cpu != u32::MAX && percpu::try_this_cpu().is_none_or(|me| me.index != cpu) {
            if let Some(c) = percpu::cpu(cpu as usize) {
                apic::send_ipi(apic::Dest::Apic(c.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
            }
        }
    }

    /// Queue an NMI.
    pub fn inject_nmi(self: &Arc<Self>) {
        self.nmi.store(true, Ordering::Release);
        self.kick();
    }

    /// Deliver an interrupt vector through the vLAPIC (edge-triggered) and make sure the vCPU
    /// notices.
    pub fn raise_vector(self: &Arc<Self>, vector: u8) {
        let accepted = self.vlapic.lock().accept(vector, false);
        if accepted {
            self.kick();
        }
    }

    /// React to what its vLAPIC made of an IPI.
    pub fn received(self: &Arc<Self>, r: Received) {
        match r {
            Received::Ignored => {}
            Received::Interrupt => self.kick(),
            Received::Nmi => self.inject_nmi(),
            Received::Init => {
                // Held until STARTUP: take it off the CPUs.
                if self.state() != RunState::Offline {
                    self.set_state(RunState::Offline);
                    crate::sched::sleep(self);
                    self.kick();
                }
            }
            Received::Startup(vector) => {
                let started = self.with_hw(|hw| {
                    hw.cpu.reset_startup(vector);
                    hw.msrs = MsrState::default();
                });
                if started.is_some() {
                    self.start();
                }
            }
        }
    }

    /// Run on `cpu` until the slice ends at `until` (if given), the vCPU stops, or the CPU is
    /// asked to reschedule.
    pub fn run_slice(self: &Arc<Self>, cpu: &'static PerCpu, until: Option<u64>) -> SliceEnd {
        let Some(domain) = self.domain() else { return SliceEnd::Stopped };
        let mut guard = self.hw.lock();
        let Some(hw) = guard.as_mut() else { return SliceEnd::Stopped };
        if self
            .state
            .compare_exchange(RunState::Runnable as u8, RunState::Running as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return SliceEnd::Stopped;
        }
        self.on_cpu.store(cpu.index, Ordering::Release);
        self.last_cpu.store(cpu.index, Ordering::Relaxed);
        let mut svm_guard = cpu.svm.lock();
        let Some(svm) = svm_guard.as_mut() else {
            self.on_cpu.store(u32::MAX, Ordering::Release);
            self.set_state(RunState::Runnable);
            return SliceEnd::Stopped;
        };
        if svm.switching_domain(self.domid as u32) {
            crate::arch::x86::svm::ibpb();
        }
        hw.cpu.load_fpu();
        let end = loop {
            if domain.is_dying() || domain.is_paused() || self.state() != RunState::Running {
                break SliceEnd::Stopped;
            }
            if cpu.need_resched.swap(false, Ordering::AcqRel) {
                break SliceEnd::Preempted;
            }
            let now = time::now_ns();
            if until.is_some_and(|u| now >= u) {
                break SliceEnd::Preempted;
            }
            // The vLAPIC timer, if it expired.
            let timer = {
                let mut lapic = self.vlapic.lock();
                if lapic.timer_deadline().is_some_and(|d| now >= d) {
                    lapic.on_timer(now);
                }
                lapic.timer_deadline()
            };
            self.deliver_events(hw);
            if self.tlb_flush.swap(false, Ordering::AcqRel) {
                hw.cpu.request_tlb_flush();
            }
            // Arm the CPU's timer for whatever comes first: the slice end, the vLAPIC timer,
            // or (on CPU 0) the earliest timer of a blocked vCPU.
            let next = [until, timer, crate::timers::earliest_for(cpu.index)].into_iter().flatten().min();
            apic::timer_oneshot(next.map_or(0, |n| n.saturating_sub(now).max(1_000)));
            x86_64::instructions::interrupts::disable();
            let exit = hw.cpu.run(cpu.index, svm);
            x86_64::instructions::interrupts::enable();
            match super::exits::handle(self, &domain, hw, exit) {
                super::exits::Next::Continue => {}
                super::exits::Next::Block => break SliceEnd::Blocked,
                super::exits::Next::Yield => break SliceEnd::Yielded,
                super::exits::Next::Stop => break SliceEnd::Stopped,
            }
        };
        hw.cpu.save_fpu();
        drop(svm_guard);
        self.on_cpu.store(u32::MAX, Ordering::Release);
        match end {
            SliceEnd::Preempted | SliceEnd::Yielded => {
                let _ = self.state.compare_exchange(
                    RunState::Running as u8,
                    RunState::Runnable as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            SliceEnd::Blocked => {
                // `exits` set Blocked; an interrupt may have arrived since: wake up again.
                if self.has_work() {
                    self.kick();
                }
            }
            SliceEnd::Stopped => {
                let _ = self.state.compare_exchange(
                    RunState::Running as u8,
                    RunState::Runnable as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
        end
    }

    /// Block on HLT (or SCHEDOP_block): if nothing is pending, the vCPU sleeps until an
    /// interrupt, its vLAPIC timer, or `wake_at`.
    pub fn block(self: &Arc<Self>, wake_at: Option<u64>) -> bool {
        if self.has_work() {
            return false;
        }
        self.set_state(RunState::Blocked);
        let deadline = [self.vlapic.lock().timer_deadline(), wake_at].into_iter().flatten().min();
        if let Some(d) = deadline {
            crate::timers::add(d, self);
        }
        crate::sched::sleep(self);
        true
    }

    /// HLT with interrupts disabled: this vCPU is down. When every vCPU of the domain is, the
    /// domain powers off (Xen's rule; it is how Linux PVH powers off without ACPI S5).
    pub fn down(self: &Arc<Self>, domain: &Arc<Domain>) {
        self.set_state(RunState::Offline);
        crate::sched::sleep(self);
        if domain.vcpus.iter().all(|v| v.state() == RunState::Offline) {
            domain.shutdown(super::ShutdownReason::Poweroff);
        }
    }

    /// Whether an interrupt or NMI is waiting for it.
    pub fn has_work(&self) -> bool {
        self.nmi.load(Ordering::Acquire) || self.vlapic.lock().pending().is_some()
    }

    /// Called by the timer queue when a blocked vCPU's deadline passed.
    pub fn timer_expired(self: &Arc<Self>, now: u64) {
        {
            let mut lapic = self.vlapic.lock();
            if lapic.timer_deadline().is_some_and(|d| now >= d) {
                lapic.on_timer(now);
            }
        }
        self.kick();
    }

    /// Move pending NMIs and interrupts into the guest (one per entry), or ask for an exit
    /// when the guest can take them.
    fn deliver_events(&self, hw: &mut Hw) {
        if hw.cpu.event_pending() {
            return;
        }
        if self.nmi.swap(false, Ordering::AcqRel) {
            hw.cpu.inject(Event::Nmi);
            return;
        }
        let mut lapic = self.vlapic.lock();
        match lapic.pending() {
            Some(vector) if hw.cpu.interrupts_enabled() => {
                lapic.ack(vector);
                hw.cpu.inject(Event::Interrupt(vector));
                hw.cpu.request_interrupt_window(false);
            }
            Some(_) => hw.cpu.request_interrupt_window(true),
            None => hw.cpu.request_interrupt_window(false),
        }
    }
}
