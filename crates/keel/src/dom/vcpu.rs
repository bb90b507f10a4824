//! A guest vCPU: its run state (with Xen's runstate accounting), its hardware state (behind
//! `virt`), its local APIC, its Xen timers and event upcall, and the loop that runs it on a
//! physical CPU for one scheduling slice.
//!
//! Locking: `hw` is held by the one CPU running the vCPU for the whole slice; `vlapic`,
//! `runstate` and `timers` are held only briefly, so other CPUs can deliver IPIs, events and
//! timer interrupts while the vCPU runs (they then kick its CPU, which makes the guest exit and
//! look again).
//!
//! Event upcalls reach the guest one of two ways, as on Xen: the per-vCPU vector
//! (HVMOP_set_evtchn_upcall_vector) goes through the vLAPIC's IRR and needs an EOI; the
//! domain-wide callback vector (HVM_PARAM_CALLBACK_IRQ, vector type) is injected directly,
//! whenever `evtchn_upcall_pending` is set and the guest can take an interrupt, and needs no
//! EOI.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use keel_guest::msr::MsrState;
use keel_vlapic::{Received, Vlapic};
use xen_abi::vcpu::{VcpuRunstateInfo, RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, RUNSTATE_RUNNING};

use super::shared::{RegisteredTimeArea, RegisteredVcpuInfo, VcpuInfoRef};
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
    /// Xen's RUNSTATE_* number.
    pub fn xen(self) -> i32 {
        match self {
            Self::Running => RUNSTATE_RUNNING,
            Self::Runnable => RUNSTATE_RUNNABLE,
            Self::Blocked => RUNSTATE_BLOCKED,
            Self::Offline => RUNSTATE_OFFLINE,
        }
    }

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

/// Time spent in each state (Xen's runstate accounting, in ns of system time).
struct Runstate {
    state: RunState,
    entry_ns: u64,
    time: [u64; 4],
}

/// The Xen timers of a vCPU (VCPUOP_set_singleshot_timer / set_periodic_timer), in system time.
#[derive(Default)]
struct XenTimers {
    singleshot: Option<u64>,
    /// Period and the next expiry.
    periodic: Option<(u64, u64)>,
}

impl XenTimers {
    fn next(&self) -> Option<u64> {
        [self.singleshot, self.periodic.map(|p| p.1)].into_iter().flatten().min()
    }
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
    /// Set by every [`Vcpu::kick`]: a vCPU deciding to block clears it first
    /// ([`Vcpu::begin_block`]) and, having published `Blocked`, wakes again if it was set
    /// meanwhile (a waker that still saw it running only poked its CPU).
    kicked: AtomicBool,
    /// The timeout of the block in progress (SCHEDOP_poll), 0 for none.
    block_until: AtomicU64,
    /// Its guest TLB must be flushed before it runs again (a p2m change).
    tlb_flush: AtomicBool,
    runstate: IrqMutex<Runstate>,
    /// Guest virtual address of its registered runstate area (0: none).
    pub runstate_area: AtomicU64,
    /// Its vcpu_info, if it registered one (else the shared_info slot, for vCPUs 0-31).
    pub vcpu_info: spin::Once<RegisteredVcpuInfo>,
    /// Its secondary time area, if it registered one.
    pub time_area: IrqMutex<Option<RegisteredTimeArea>>,
    /// Its event upcall vector (HVMOP_set_evtchn_upcall_vector; 0: none).
    pub upcall_vector: AtomicU8,
    timers: IrqMutex<XenTimers>,
    /// It was given a context (boot vCPU, INIT/SIPI, VCPUOP_initialise): VCPUOP_up may run it.
    pub initialised: AtomicBool,
    /// The port it polls (SCHEDOP_poll): 0 none, `events::ANY_PORT` several.
    pub polling: AtomicU32,
    /// It is in guest mode (between the last checks before VMRUN and the exit).
    in_guest: AtomicBool,
    /// VM exits so far (for waiting until it left the guest).
    exits: AtomicU64,
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
            kicked: AtomicBool::new(false),
            block_until: AtomicU64::new(0),
            tlb_flush: AtomicBool::new(false),
            runstate: IrqMutex::new(Runstate { state: RunState::Offline, entry_ns: time::now_ns(), time: [0; 4] }),
            runstate_area: AtomicU64::new(0),
            vcpu_info: spin::Once::new(),
            time_area: IrqMutex::new(None),
            upcall_vector: AtomicU8::new(0),
            timers: IrqMutex::new(XenTimers::default()),
            initialised: AtomicBool::new(false),
            polling: AtomicU32::new(0),
            in_guest: AtomicBool::new(false),
            exits: AtomicU64::new(0),
        })
    }

    /// Change state (from `from`, if given, else from any), with the runstate accounting.
    /// Returns whether it changed.
    fn transition(&self, from: Option<RunState>, to: RunState) -> bool {
        let mut rs = self.runstate.lock();
        if from.is_some_and(|f| rs.state != f) {
            return false;
        }
        let now = time::now_ns();
        let old = rs.state.xen() as usize;
        rs.time[old] += now.saturating_sub(rs.entry_ns);
        rs.entry_ns = now;
        rs.state = to;
        self.state.store(to as u8, Ordering::Release);
        true
    }

    /// Its runstate as Xen reports it (VCPUOP_get_runstate_info): the current state's time
    /// includes the time up to now.
    pub fn runstate_info(&self) -> VcpuRunstateInfo {
        let rs = self.runstate.lock();
        let now = time::now_ns();
        let mut t = rs.time;
        t[rs.state.xen() as usize] += now.saturating_sub(rs.entry_ns);
        VcpuRunstateInfo { state: rs.state.xen(), _pad0: 0, state_entry_time: rs.entry_ns, time: t }
    }

    /// Its vcpu_info: the registered one, else its slot in `d`'s shared_info (vCPUs 0-31);
    /// `None` for a vCPU beyond 31 that registered none (events cannot reach it, as on Xen).
    pub fn vcpu_info<'a>(&'a self, d: &'a Domain) -> Option<VcpuInfoRef<'a>> {
        match self.vcpu_info.get() {
            Some(r) => Some(r.get()),
            None => d.shared_info.legacy_vcpu_info(self.id),
        }
    }

    /// Events are pending for it (`evtchn_upcall_pending` went 0 -> 1): raise its upcall.
    pub fn raise_upcall(self: &Arc<Self>) {
        match self.upcall_vector.load(Ordering::Acquire) {
            0 => self.kick(), // the callback vector, if any, is injected at entry
            vector => self.raise_vector(vector),
        }
    }

    /// Arm (Some) or stop its single-shot timer.
    pub fn set_singleshot(self: &Arc<Self>, deadline: Option<u64>) {
        self.timers.lock().singleshot = deadline;
        self.timers_changed();
    }

    /// Start (period > 0) or stop its periodic timer; the first expiry is one period from now.
    pub fn set_periodic(self: &Arc<Self>, period_ns: u64) {
        let now = time::now_ns();
        self.timers.lock().periodic = (period_ns > 0).then(|| (period_ns, now.saturating_add(period_ns)));
        self.timers_changed();
    }

    fn timers_changed(self: &Arc<Self>) {
        if self.state() == RunState::Blocked {
            // Changing a timer is no reason to wake up: the queue wakes it when one fires.
            if let Some(d) = self.timers.lock().next() {
                crate::timers::add(d, self);
            }
        } else {
            // A running vCPU re-arms its CPU's timer at its next entry.
            self.kick();
        }
    }

    /// Its earliest timer: the vLAPIC's or a Xen one.
    fn next_deadline(&self) -> Option<u64> {
        [self.vlapic.lock().timer_deadline(), self.timers.lock().next()].into_iter().flatten().min()
    }

    /// Fire whatever timers are due at `now`: the vLAPIC timer, and the Xen timers (which
    /// send VIRQ_TIMER, whose delivery wakes the vCPU if it should). Returns whether the
    /// vLAPIC timer put an interrupt in the IRR (the caller makes the vCPU notice).
    fn fire_timers(self: &Arc<Self>, now: u64) -> bool {
        let lapic_irq = {
            let mut lapic = self.vlapic.lock();
            lapic.timer_deadline().is_some_and(|d| now >= d) && lapic.on_timer(now)
        };
        let fire = {
            let mut t = self.timers.lock();
            let mut fire = false;
            if t.singleshot.is_some_and(|d| now >= d) {
                t.singleshot = None;
                fire = true;
            }
            if let Some((period, next)) = t.periodic {
                if now >= next {
                    t.periodic = Some((period, now.saturating_add(period)));
                    fire = true;
                }
            }
            fire
        };
        if fire {
            if let Some(d) = self.domain() {
                d.send_virq(xen_abi::event_channel::VIRQ_TIMER, self);
            }
        }
        lapic_irq
    }

    /// Its run state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: RunState) {
        self.transition(None, s);
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
        self.initialised.store(true, Ordering::Release);
        if self.transition(Some(RunState::Offline), RunState::Runnable) {
            crate::sched::wake(self);
        }
    }

    /// Wake it if it is blocked; make the CPU running it look at its interrupts again.
    pub fn kick(self: &Arc<Self>) {
        self.kicked.store(true, Ordering::SeqCst);
        if self.state() == RunState::Blocked && self.transition(Some(RunState::Blocked), RunState::Runnable) {
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
        crate::sched::sleep(self);
        self.set_state(RunState::Offline);
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

    /// Flush its guest TLB before it next enters the guest, and return once it cannot use a
    /// stale translation any more: if it is in guest mode on another CPU right now, it is
    /// made to exit and this waits for that exit (its next entry flushes first).
    ///
    /// The flag and `in_guest` are a Dekker pair (both SeqCst): either the entering CPU sees
    /// the flag before VMRUN, or this sees it in the guest and waits.
    pub fn flush_tlb_sync(&self) {
        self.tlb_flush.store(true, Ordering::SeqCst);
        if !self.in_guest.load(Ordering::SeqCst) {
            return;
        }
        let cpu = self.on_cpu.load(Ordering::Acquire);
        let Some(c) = percpu::cpu(cpu as usize) else { return };
        if percpu::try_this_cpu().is_some_and(|me| me.index == cpu) {
            return; // that is us: we are not in the guest
        }
        let exits = self.exits.load(Ordering::Acquire);
        apic::send_ipi(apic::Dest::Apic(c.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
        while self.in_guest.load(Ordering::SeqCst) && self.exits.load(Ordering::Acquire) == exits {
            core::hint::spin_loop();
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

    /// Raise its per-vCPU upcall vector again if events are still pending for it (after
    /// its APIC was software-enabled: the earlier raise may have been dropped).
    pub fn reassert_upcall(self: &Arc<Self>, d: &Domain) {
        let vector = self.upcall_vector.load(Ordering::Acquire);
        if vector != 0 && self.vcpu_info(d).is_some_and(|i| i.upcall_pending().load(Ordering::Acquire) != 0) {
            self.raise_vector(vector);
        }
    }

    /// React to what its vLAPIC made of an IPI.
    pub fn received(self: &Arc<Self>, r: Received) {
        match r {
            Received::Ignored => {}
            Received::Interrupt => self.kick(),
            Received::Nmi => self.inject_nmi(),
            Received::Init => {
                // Held until STARTUP: take it off the CPUs. Its context is gone (Xen's
                // vcpu_reset): VCPUOP_up cannot run it before a STARTUP or VCPUOP_initialise.
                self.initialised.store(false, Ordering::Release);
                if self.state() != RunState::Offline {
                    crate::sched::sleep(self);
                    self.set_state(RunState::Offline);
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
        if !self.transition(Some(RunState::Runnable), RunState::Running) {
            return SliceEnd::Stopped;
        }
        self.on_cpu.store(cpu.index, Ordering::Release);
        self.last_cpu.store(cpu.index, Ordering::Relaxed);
        let mut svm_guard = cpu.svm.lock();
        let Some(svm) = svm_guard.as_mut() else {
            self.on_cpu.store(u32::MAX, Ordering::Release);
            self.transition(Some(RunState::Running), RunState::Runnable);
            return SliceEnd::Stopped;
        };
        self.update_runstate_area(&domain, hw);
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
            // CPU 0 keeps the timers of blocked vCPUs; it may run a guest for a long time.
            if cpu.index == 0 {
                crate::timers::expire(now);
                crate::console::housekeeping(now);
            }
            // From here to VMRUN, interrupts are off: a kick or timer that arrives now stays
            // pending and makes the guest exit at once, instead of being taken here while the
            // guest is entered without what it announced.
            x86_64::instructions::interrupts::disable();
            if cpu.need_resched.load(Ordering::Acquire) {
                x86_64::instructions::interrupts::enable();
                continue;
            }
            let now = time::now_ns();
            let _ = self.fire_timers(now); // delivered just below
            let timer = self.next_deadline();
            self.deliver_events(&domain, hw);
            // In guest mode from here on, for `flush_tlb_sync` (which sets the flag first).
            self.in_guest.store(true, Ordering::SeqCst);
            if self.tlb_flush.swap(false, Ordering::SeqCst) {
                hw.cpu.request_tlb_flush();
            }
            // Arm the CPU's timer for whatever comes first: the slice end, the vCPU's timers,
            // or (on CPU 0) the earliest timer of a blocked vCPU.
            let console = if cpu.index == 0 { crate::console::next_housekeeping() } else { None };
            let next = [until, timer, crate::timers::earliest_for(cpu.index), console].into_iter().flatten().min();
            apic::timer_oneshot(next.map_or(0, |n| n.saturating_sub(now).max(1_000)));
            let exit = hw.cpu.run(cpu.index, svm);
            self.exits.fetch_add(1, Ordering::Release);
            self.in_guest.store(false, Ordering::SeqCst);
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
            SliceEnd::Preempted | SliceEnd::Yielded | SliceEnd::Stopped => {
                self.transition(Some(RunState::Running), RunState::Runnable);
            }
            SliceEnd::Blocked => {
                // `exits` set Blocked; a wake-up that came while it still ran only poked this
                // CPU: wake up again.
                if self.kicked.load(Ordering::SeqCst) {
                    self.kick();
                }
            }
        }
        self.update_runstate_area(&domain, hw);
        end
    }

    /// The vCPU starts deciding whether to block (HLT, SCHEDOP_block, SCHEDOP_poll): from
    /// here on, any wake-up makes it run again, even one that comes before it is `Blocked`.
    pub fn begin_block(&self) {
        self.kicked.store(false, Ordering::SeqCst);
        self.block_until.store(0, Ordering::Release);
    }

    /// Block on HLT (or SCHEDOP_block), after [`Vcpu::begin_block`]: unless an interrupt it
    /// can take is pending (`irqs_open`: the guest had IF set and no interrupt shadow), the
    /// vCPU sleeps until it is kicked (a new interrupt or event, its vLAPIC timer) or
    /// `wake_at`. As on Xen, an interrupt pending while the guest cannot take it does not end
    /// the block; only the next wake-up does.
    pub fn block(self: &Arc<Self>, wake_at: Option<u64>, irqs_open: bool) -> bool {
        if self.has_work(irqs_open) {
            return false;
        }
        // The scheduler hears first: a waker that sees `Blocked` calls `sched::wake`, which
        // is lost on a vCPU the scheduler still thinks runnable (it would then be put to
        // sleep after its wake-up, and never run again).
        crate::sched::sleep(self);
        // Only from running: a VCPUOP_down or INIT from another vCPU may have taken it
        // offline meanwhile, and that must stick (its slice ends either way).
        if !self.transition(Some(RunState::Running), RunState::Blocked) {
            return true;
        }
        self.block_until.store(wake_at.unwrap_or(0), Ordering::Release);
        let deadline = [self.next_deadline(), wake_at].into_iter().flatten().min();
        if let Some(d) = deadline {
            crate::timers::add(d, self);
        }
        true
    }

    /// HLT with interrupts disabled: this vCPU is down. When every vCPU of the domain is, the
    /// domain powers off (Xen's rule; it is how Linux PVH powers off without ACPI S5).
    pub fn down(self: &Arc<Self>, domain: &Arc<Domain>) {
        crate::sched::sleep(self);
        self.set_state(RunState::Offline);
        if domain.vcpus.iter().all(|v| v.state() == RunState::Offline) {
            domain.shutdown(super::ShutdownReason::Poweroff);
        }
    }

    /// Whether an NMI, or (when the guest can take one: `irqs_open`) an interrupt or event
    /// upcall, is waiting for it.
    pub fn has_work(&self, irqs_open: bool) -> bool {
        self.nmi.load(Ordering::Acquire)
            || (irqs_open && (self.vlapic.lock().pending().is_some() || self.callback_pending().is_some()))
    }

    /// Whether the domain's callback vector should be injected: one is configured and this
    /// vCPU's `evtchn_upcall_pending` is set.
    fn callback_pending(&self) -> Option<u8> {
        let d = self.domain()?;
        let vector = d.callback_vector()?;
        let info = self.vcpu_info(&d)?;
        (info.upcall_pending().load(Ordering::Acquire) != 0).then_some(vector)
    }

    /// Called by the timer queue when a blocked vCPU's deadline passed.
    ///
    /// Entries are not removed when a timer is stopped or a vCPU wakes early, so this may find
    /// nothing due: it wakes the vCPU only for an interrupt the vLAPIC timer raised or its
    /// block timeout (SCHEDOP_poll) passing, never spuriously (a Xen guest's SCHEDOP_block
    /// returns only for an event). A Xen timer's VIRQ wakes it through its own delivery.
    pub fn timer_expired(self: &Arc<Self>, now: u64) {
        let lapic_irq = self.fire_timers(now);
        if let Some(next) = self.timers.lock().next() {
            if self.state() == RunState::Blocked {
                crate::timers::add(next, self);
            }
        }
        let until = self.block_until.load(Ordering::Acquire);
        if lapic_irq || (until != 0 && now >= until) {
            self.kick();
        }
    }

    /// Write its runstate into the area it registered (at each context switch, as Xen), with
    /// XEN_RUNSTATE_UPDATE set in `state_entry_time` meanwhile if the domain asked for that
    /// (VMASST_TYPE_runstate_update_flag). Faults are ignored, as on Xen.
    fn update_runstate_area(&self, d: &Domain, hw: &mut Hw) {
        let area = self.runstate_area.load(Ordering::Acquire);
        if area == 0 {
            return;
        }
        let info = self.runstate_info();
        let entry_at = area + core::mem::offset_of!(VcpuRunstateInfo, state_entry_time) as u64;
        let flag = d.runstate_update_flag();
        if flag {
            let marked = info.state_entry_time | xen_abi::vcpu::XEN_RUNSTATE_UPDATE;
            let _ = super::guestmem::write_struct(d, hw, entry_at, &marked);
            core::sync::atomic::fence(Ordering::Release);
        }
        let _ = super::guestmem::write_struct(d, hw, area, &info);
        if flag {
            core::sync::atomic::fence(Ordering::Release);
            let _ = super::guestmem::write_struct(d, hw, entry_at, &info.state_entry_time);
        }
    }

    /// Move pending NMIs and interrupts into the guest (one per entry), or ask for an exit
    /// when the guest can take them. The callback vector comes before the vLAPIC's vectors,
    /// as on Xen.
    fn deliver_events(&self, d: &Domain, hw: &mut Hw) {
        if hw.cpu.event_pending() {
            return;
        }
        if self.nmi.swap(false, Ordering::AcqRel) {
            hw.cpu.inject(Event::Nmi);
            return;
        }
        if let Some(vector) = d.callback_vector() {
            if self.vcpu_info(d).is_some_and(|i| i.upcall_pending().load(Ordering::Acquire) != 0) {
                if hw.cpu.interrupts_enabled() {
                    hw.cpu.inject(Event::Interrupt(vector));
                    hw.cpu.request_interrupt_window(false);
                } else {
                    hw.cpu.request_interrupt_window(true);
                }
                return;
            }
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
