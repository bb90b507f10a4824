//! The processor: feature detection, MSRs, interrupt-flag control and halting.

use core::sync::atomic::{AtomicBool, Ordering};

use raw_cpuid::CpuId;
use spin::Once;
use x86_64::instructions::interrupts;

/// MSR numbers keel uses.
pub mod msr {
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
}

/// EFER bits.
pub mod efer {
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// SVM enable.
    pub const SVME: u64 = 1 << 12;
}

/// Read a model-specific register.
///
/// # Safety
/// `index` must name an MSR that exists on this CPU (or a #GP results).
pub unsafe fn rdmsr(index: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists; reading it has no other effect.
    unsafe { x86_64::registers::model_specific::Msr::new(index).read() }
}

/// Write a model-specific register.
///
/// # Safety
/// `index` must name a writable MSR on this CPU and `value` must be valid for it; the caller
/// answers for what the write does to the machine.
pub unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(index).write(value) }
}

/// Read the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86-64 CPU and has no side effects; LFENCE first so
    // the read is not hoisted above earlier instructions.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// What keel needs to know about the boot CPU. All CPUs are assumed to match the boot CPU
/// (as Xen assumes, with its feature levelling); APs are checked against it when they start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// "AuthenticAMD", "GenuineIntel", ...
    pub vendor: [u8; 12],
    /// No-execute pages.
    pub nx: bool,
    /// 1 GiB pages.
    pub page_1g: bool,
    /// Global pages.
    pub pge: bool,
    /// x2APIC mode of the local APIC.
    pub x2apic: bool,
    /// TSC-deadline timer mode.
    pub tsc_deadline: bool,
    /// The TSC runs at a constant rate in all P- and C-states.
    pub invariant_tsc: bool,
    /// AMD SVM.
    pub svm: bool,
    /// XSAVE.
    pub xsave: bool,
    /// Physical address width in bits.
    pub phys_addr_bits: u8,
    /// Linear address width in bits.
    pub virt_addr_bits: u8,
    /// Initial APIC id of the CPU that ran the detection.
    pub initial_apic_id: u32,
}

static FEATURES: Once<Features> = Once::new();

/// Detect the boot CPU's features (first call) and return them.
pub fn features() -> &'static Features {
    FEATURES.call_once(detect)
}

fn detect() -> Features {
    let cpuid = CpuId::new();
    let mut f = Features::default();
    if let Some(v) = cpuid.get_vendor_info() {
        let s = v.as_str().as_bytes();
        let n = s.len().min(12);
        f.vendor[..n].copy_from_slice(&s[..n]);
    }
    if let Some(fi) = cpuid.get_feature_info() {
        f.x2apic = fi.has_x2apic();
        f.tsc_deadline = fi.has_tsc_deadline();
        f.pge = fi.has_pge();
        f.xsave = fi.has_xsave();
        f.initial_apic_id = fi.initial_local_apic_id() as u32;
    }
    if let Some(ext) = cpuid.get_extended_processor_and_feature_identifiers() {
        f.nx = ext.has_execute_disable();
        f.page_1g = ext.has_1gib_pages();
        f.svm = ext.has_svm();
    }
    if let Some(apm) = cpuid.get_advanced_power_mgmt_info() {
        f.invariant_tsc = apm.has_invariant_tsc();
    }
    match cpuid.get_processor_capacity_feature_info() {
        Some(cap) => {
            f.phys_addr_bits = cap.physical_address_bits();
            f.virt_addr_bits = cap.linear_address_bits();
        }
        None => {
            f.phys_addr_bits = 36;
            f.virt_addr_bits = 48;
        }
    }
    f
}

/// Disables interrupts for its lifetime and restores the previous state when dropped.
pub struct InterruptGuard {
    were_enabled: bool,
}

impl InterruptGuard {
    /// Disable interrupts, remembering whether they were on.
    #[inline]
    pub fn new() -> Self {
        let were_enabled = interrupts::are_enabled();
        if were_enabled {
            interrupts::disable();
        }
        InterruptGuard { were_enabled }
    }
}

impl Default for InterruptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InterruptGuard {
    #[inline]
    fn drop(&mut self) {
        if self.were_enabled {
            interrupts::enable();
        }
    }
}

/// Set once a fatal error is being reported: CPUs entering `halt_forever` stay there.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Mark the system as stopping (fatal error path).
pub fn set_stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Whether a fatal error is being reported.
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Halt this CPU for good: interrupts off, HLT in a loop (an NMI or SMI wakes it only to
/// halt again).
pub fn halt_forever() -> ! {
    interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Wait for the next interrupt with interrupts enabled (the idle loop's halt). Enabling and
/// halting are one step (`sti; hlt`), so an interrupt between them cannot be missed.
#[inline]
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}
