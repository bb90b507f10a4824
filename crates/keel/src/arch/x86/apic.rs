//! The local APIC: x2APIC through MSRs where the CPU has it, xAPIC through MMIO otherwise
//! (QEMU 7.2's TCG has no x2APIC). keel owns every physical local APIC; guests only ever see
//! the emulated one.
//!
//! Also here: the legacy 8259 PICs are remapped away from the exception vectors and masked,
//! so only the local APIC delivers interrupts.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::cpu::{self, msr};
use super::time;
use super::traps::{self, TrapFrame};

/// Spurious-interrupt vector (low nibble all ones, as the APIC requires on old CPUs).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// APIC error interrupt.
pub const ERROR_VECTOR: u8 = 0xfe;
/// Cross-CPU function call IPI.
pub const CALL_VECTOR: u8 = 0xf0;
/// Local APIC timer.
pub const TIMER_VECTOR: u8 = 0xf1;
/// "Look at your work" IPI (wakes a halted CPU; the scheduler uses it).
pub const KICK_VECTOR: u8 = 0xf2;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_BSP: u64 = 1 << 8;

// Register offsets (xAPIC MMIO offset; x2APIC MSR = 0x800 + offset / 16).
const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TPR: u32 = 0x80;
const EOI: u32 = 0xb0;
const SVR: u32 = 0xf0;
const ESR: u32 = 0x280;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const LVT_LINT0: u32 = 0x350;
const LVT_LINT1: u32 = 0x360;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const ICR_PENDING: u32 = 1 << 12;

/// IPI delivery mode.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u32)]
pub enum Delivery {
    /// Fixed vector.
    Fixed = 0,
    /// Non-maskable interrupt.
    Nmi = 4 << 8,
    /// INIT (level assert).
    Init = (5 << 8) | (1 << 14),
    /// Start-up IPI; the vector is the page number of the start address.
    Startup = 6 << 8,
}

/// IPI destination.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Dest {
    /// One CPU by APIC id.
    Apic(u32),
    /// Every CPU but the sender.
    AllButSelf,
}

static X2APIC: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC page (xAPIC mode only).
static MMIO: AtomicU64 = AtomicU64::new(0);
/// Timer ticks per millisecond at divide-by-16.
static TIMER_TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so the x2APIC MSR range exists; `reg` is one of the
        // architectural registers above.
        unsafe { cpu::rdmsr(0x800 + reg / 16) as u32 }
    } else {
        let base = MMIO.load(Ordering::Relaxed);
        // SAFETY: `base` maps the local APIC page uncached (set up in `init_bsp`); `reg` is a
        // register offset within it.
        unsafe { core::ptr::read_volatile((base + reg as u64) as *const u32) }
    }
}

fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`.
        unsafe { cpu::wrmsr(0x800 + reg / 16, value as u64) }
    } else {
        let base = MMIO.load(Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + reg as u64) as *mut u32, value) }
    }
}

/// Remap the 8259 PICs to vectors 0x20..0x2f and mask every line.
fn disable_legacy_pic() {
    // SAFETY: the PIC ports belong to keel; the ICW sequence is the architectural one.
    unsafe {
        let mut cmd1 = Port::<u8>::new(0x20);
        let mut data1 = Port::<u8>::new(0x21);
        let mut cmd2 = Port::<u8>::new(0xa0);
        let mut data2 = Port::<u8>::new(0xa1);
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0x20);
        data2.write(0x28);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}

/// Whether the local APICs run in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Bring up the boot CPU's local APIC. `map_mmio` maps the xAPIC page (physical address) and
/// returns its virtual address; it is only called in xAPIC mode.
pub fn init_bsp(map_mmio: impl FnOnce(u64) -> u64) {
    disable_legacy_pic();
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC, which x86-64 requires.
    let base = unsafe { cpu::rdmsr(msr::APIC_BASE) };
    if cpu::features().x2apic {
        X2APIC.store(true, Ordering::Relaxed);
    } else {
        MMIO.store(map_mmio(base & 0x000f_ffff_ffff_f000), Ordering::Relaxed);
    }
    traps::register(ERROR_VECTOR, error_interrupt);
    traps::register(TIMER_VECTOR, timer_interrupt);
    init_this_cpu();
    log::info!(
        "apic: {} mode, version {:#x}, boot cpu apic id {}{}",
        if is_x2apic() { "x2APIC" } else { "xAPIC" },
        read(VERSION) & 0xff,
        id(),
        if base & APIC_BASE_BSP != 0 { "" } else { " (BSP flag clear!)" }
    );
}

/// Enable this CPU's local APIC (every CPU, boot CPU included).
pub fn init_this_cpu() {
    // SAFETY: IA32_APIC_BASE exists; enabling (and x2APIC mode when the CPU has it) only
    // changes how this CPU's own APIC is reached.
    unsafe {
        let mut base = cpu::rdmsr(msr::APIC_BASE) | APIC_BASE_ENABLE;
        if is_x2apic() {
            base |= APIC_BASE_X2APIC;
        }
        cpu::wrmsr(msr::APIC_BASE, base);
    }
    write(TPR, 0);
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, LVT_MASKED);
    write(LVT_TIMER, LVT_MASKED);
    write(LVT_ERROR, ERROR_VECTOR as u32);
    write(ESR, 0);
    write(SVR, 0x100 | SPURIOUS_VECTOR as u32);
    eoi();
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    if is_x2apic() {
        read(ID)
    } else {
        read(ID) >> 24
    }
}

/// Signal end of interrupt.
pub fn eoi() {
    write(EOI, 0);
}

/// Send an IPI and wait (bounded) until the APIC has accepted it.
pub fn send_ipi(dest: Dest, delivery: Delivery, vector: u8) {
    let _irq = cpu::InterruptGuard::new();
    let (shorthand, id) = match dest {
        Dest::Apic(id) => (0u32, id),
        Dest::AllButSelf => (3u32 << 18, 0),
    };
    let low = vector as u32 | delivery as u32 | shorthand;
    if is_x2apic() {
        // SAFETY: the x2APIC ICR MSR exists in x2APIC mode; one 64-bit write sends the IPI.
        unsafe { cpu::wrmsr(0x830, ((id as u64) << 32) | low as u64) };
    } else {
        write(ICR_HIGH, id << 24);
        write(ICR_LOW, low);
        for _ in 0..1_000_000 {
            if read(ICR_LOW) & ICR_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// NMI every other CPU (the fatal-error stop). Usable from any context.
pub fn send_nmi_all_but_self() {
    send_ipi(Dest::AllButSelf, Delivery::Nmi, 0);
}

fn error_interrupt(_: &mut TrapFrame) {
    write(ESR, 0);
    let esr = read(ESR);
    log::warn!("apic: error interrupt on apic {}, ESR {:#x}", id(), esr);
}

static TIMER_FIRED: AtomicU64 = AtomicU64::new(0);

fn timer_interrupt(_: &mut TrapFrame) {
    TIMER_FIRED.fetch_add(1, Ordering::Relaxed);
}

/// Measure the APIC timer against the TSC (the TSC must be calibrated first).
pub fn calibrate_timer() {
    write(TIMER_DIVIDE, 0b0011); // divide by 16
    write(LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    write(TIMER_INITIAL, u32::MAX);
    let start = time::now_ns();
    while time::now_ns() - start < 5_000_000 {
        core::hint::spin_loop();
    }
    let elapsed = time::now_ns() - start;
    let ticks = u32::MAX - read(TIMER_CURRENT);
    write(TIMER_INITIAL, 0);
    let per_ms = (ticks as u64 * 1_000_000 / elapsed.max(1)).max(1);
    TIMER_TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    log::info!("apic: timer runs at {}.{:03} MHz (after divide-by-16)", per_ms / 1000, per_ms % 1000);
}

/// Arm this CPU's timer to fire once after `ns` nanoseconds (0 disarms it).
pub fn timer_oneshot(ns: u64) {
    let per_ms = TIMER_TICKS_PER_MS.load(Ordering::Relaxed);
    let ticks = ((ns as u128 * per_ms as u128) / 1_000_000).clamp(if ns == 0 { 0 } else { 1 }, u32::MAX as u128);
    write(TIMER_DIVIDE, 0b0011);
    write(LVT_TIMER, TIMER_VECTOR as u32);
    write(TIMER_INITIAL, ticks as u32);
}

/// How many timer interrupts this machine has taken (for the boot self-check).
pub fn timer_interrupts() -> u64 {
    TIMER_FIRED.load(Ordering::Relaxed)
}
