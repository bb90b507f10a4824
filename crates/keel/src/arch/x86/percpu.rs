//! Per-CPU data: one `PerCpu` per physical CPU, reached through the GS base.
//!
//! Each CPU's `PerCpu` is built completely (descriptor tables, stacks) before it is published,
//! then leaked to `&'static` and only ever shared: nothing hands out `&mut PerCpu`, so no two
//! CPUs (or an interrupt and the code it interrupted) can alias a mutable reference. Fields
//! another CPU touches are atomics or locks; fields only the owner touches after start-up are
//! plain values fixed at construction.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use x86_64::structures::gdt::GlobalDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

use super::cpu::{self, msr};
use super::smp::CallMailbox;

/// Most CPUs keel manages.
pub const MAX_CPUS: usize = 256;

/// A stack: [bottom, top).
#[derive(Clone, Copy, Debug, Default)]
pub struct StackRange {
    /// Lowest address (just above the guard page).
    pub bottom: u64,
    /// One past the highest address (the initial stack pointer).
    pub top: u64,
}

impl StackRange {
    /// Whether `[addr, addr + len)` lies inside this stack.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.bottom && addr.checked_add(len).is_some_and(|end| end <= self.top)
    }
}

/// Interrupt-stack-table slots (TSS IST index - 1).
pub mod ist {
    /// Double fault.
    pub const DOUBLE_FAULT: usize = 0;
    /// NMI (also how a fatal error stops the other CPUs).
    pub const NMI: usize = 1;
    /// Machine check.
    pub const MACHINE_CHECK: usize = 2;
    /// Number of IST stacks per CPU.
    pub const COUNT: usize = 3;
}

/// One CPU's data. `repr(C)` with `self_ptr` first: `gs:0` holds the address of the struct.
#[repr(C, align(64))]
pub struct PerCpu {
    self_ptr: *const PerCpu,
    /// keel's CPU number (0 = boot CPU), dense.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// The CPU's normal stack.
    pub stack: StackRange,
    /// The IST stacks.
    pub ist_stacks: [StackRange; ist::COUNT],
    /// Task state segment (IST pointers).
    pub tss: TaskStateSegment,
    /// This CPU's GDT (the TSS descriptor differs per CPU).
    pub gdt: GlobalDescriptorTable<8>,
    /// Set by the CPU itself once it runs keel code with interrupts enabled.
    pub online: AtomicBool,
    /// Set by the CPU itself when it has halted for good (fatal-error stop).
    pub stopped: AtomicBool,
    /// Cross-CPU function calls addressed to this CPU.
    pub call: CallMailbox,
    /// The scheduler wants this CPU to reschedule (set by other CPUs, the timer, the KICK IPI).
    pub need_resched: AtomicBool,
    /// This CPU's SVM state (`None` until SVM is enabled on it). Locked by the CPU itself while
    /// it runs a guest.
    pub svm: spin::Mutex<Option<super::svm::CpuSvm>>,
}

// SAFETY: the raw self pointer is only an address, never used for mutation; everything shared
// across CPUs is atomic or locked (see the module comment).
unsafe impl Sync for PerCpu {}
// SAFETY: as above.
unsafe impl Send for PerCpu {}

impl PerCpu {
    /// A CPU's data with its stacks; descriptor tables are filled by `gdt::build`.
    pub fn new(index: u32, apic_id: u32, stack: StackRange, ist_stacks: [StackRange; ist::COUNT]) -> Self {
        PerCpu {
            self_ptr: core::ptr::null(),
            index,
            apic_id,
            stack,
            ist_stacks,
            tss: TaskStateSegment::new(),
            gdt: GlobalDescriptorTable::empty(),
            online: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            call: CallMailbox::new(),
            need_resched: AtomicBool::new(false),
            svm: spin::Mutex::new(None),
        }
    }
}

/// Every published CPU, by keel CPU number.
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static CPU_COUNT: AtomicU32 = AtomicU32::new(0);
/// Set once the boot CPU's GS base points at its `PerCpu`.
static READY: AtomicBool = AtomicBool::new(false);

/// Publish a CPU's data (leaking it: CPUs are never removed) and return the shared reference.
pub fn publish(percpu: &'static mut PerCpu) -> &'static PerCpu {
    percpu.self_ptr = percpu as *const PerCpu;
    let index = percpu.index as usize;
    let shared: &'static PerCpu = percpu;
    if let Some(slot) = CPUS.get(index) {
        slot.store(shared as *const PerCpu as *mut PerCpu, Ordering::Release);
        CPU_COUNT.fetch_max(index as u32 + 1, Ordering::AcqRel);
    }
    shared
}

/// Point this CPU's GS base at its data. Called once per CPU, on that CPU.
pub fn install(percpu: &'static PerCpu) {
    // SAFETY: GS_BASE exists on every x86-64 CPU; keel never uses GS for anything else and
    // `percpu` lives forever.
    unsafe { cpu::wrmsr(msr::GS_BASE, percpu as *const PerCpu as u64) };
    if percpu.index == 0 {
        READY.store(true, Ordering::Release);
    }
}

/// This CPU's data.
///
/// Only valid once `install` ran on this CPU; `try_this_cpu` is the checked form for the
/// paths (exception handling) that may run before that.
#[inline]
pub fn this_cpu() -> &'static PerCpu {
    try_this_cpu().expect("per-CPU data used before it was installed")
}

/// This CPU's data, or `None` this early in the boot CPU's start-up.
#[inline]
pub fn try_this_cpu() -> Option<&'static PerCpu> {
    if !READY.load(Ordering::Acquire) {
        return None;
    }
    let p: *const PerCpu;
    // SAFETY: after `install` GS:0 holds the address of this CPU's leaked `PerCpu` (APs run
    // `install` before anything that could call this).
    unsafe { core::arch::asm!("mov {}, gs:0", out(reg) p, options(nostack, readonly, preserves_flags)) };
    // SAFETY: `p` is either null or points at a `PerCpu` that lives forever.
    unsafe { p.as_ref() }
}

/// The CPU with keel number `index`, if it has been published.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    let p = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: only `publish` stores non-null pointers, to leaked `PerCpu`s.
    unsafe { p.as_ref() }
}

/// Number of CPU slots published so far (highest index + 1).
pub fn count() -> usize {
    CPU_COUNT.load(Ordering::Acquire) as usize
}

/// Every published CPU.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..count()).filter_map(cpu)
}
