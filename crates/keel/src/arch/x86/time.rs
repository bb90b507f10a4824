//! Timekeeping: the TSC, calibrated once at boot against the PIT (or the ACPI PM timer where
//! there is no PIT), and keel's monotonic nanosecond clock derived from it.
//!
//! keel assumes the TSCs of all CPUs run in step, as they do on every CPU with an invariant
//! TSC and under QEMU; `now_ns` is then monotonic across CPUs.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::cpu::{self, rdtsc};

/// TSC value at calibration: time zero of `now_ns`.
static TSC_EPOCH: AtomicU64 = AtomicU64::new(0);
/// ns = (tsc delta * NS_MUL) >> 32. Before calibration: an assumed 1 GHz.
static NS_MUL: AtomicU64 = AtomicU64::new(1 << 32);
/// TSC frequency in kHz (0 until calibrated).
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;

/// Count TSC ticks during `ms` milliseconds of PIT channel 2 (one-shot, gated by port 0x61).
/// `None` when the PIT does not count (absent, as on hardware-reduced platforms).
fn pit_measure(ms: u64) -> Option<u64> {
    let count = (PIT_HZ * ms / 1000) as u16;
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and the speaker gate, owned by keel; channel 2
    // drives nothing but the (gated-off) speaker.
    unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut mode = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // speaker off, gate on
        mode.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(count as u8);
        ch2.write((count >> 8) as u8);
        // Restart the count (gate low -> high).
        let g = gate.read();
        gate.write(g & !0x01);
        gate.write(g | 0x01);
        let start = rdtsc();
        // OUT2 (bit 5) goes high when the count expires. Bound the wait by TSC ticks at an
        // absurdly fast 100 GHz, so a missing PIT cannot hang boot.
        let limit = start + ms * 100_000_000;
        loop {
            if gate.read() & 0x20 != 0 {
                return Some(rdtsc() - start);
            }
            if rdtsc() > limit {
                return None;
            }
        }
    }
}

/// Count TSC ticks during `ms` milliseconds of the ACPI PM timer (3.579545 MHz) at `port`.
fn pmtimer_measure(port: u16, ms: u64) -> Option<u64> {
    const PM_HZ: u64 = 3_579_545;
    // SAFETY: reading the PM timer has no side effects; the port comes from the FADT.
    let read = move || unsafe { Port::<u32>::new(port).read() } & 0x00ff_ffff;
    let want = PM_HZ * ms / 1000;
    let t0 = read();
    let start = rdtsc();
    let limit = start + ms * 100_000_000;
    loop {
        let elapsed = (read().wrapping_sub(t0)) & 0x00ff_ffff;
        if elapsed as u64 >= want {
            return Some(rdtsc() - start);
        }
        if rdtsc() > limit {
            return None;
        }
    }
}

/// Which reference calibrated the TSC.
#[derive(Clone, Copy, Debug)]
pub enum Reference {
    /// The 8254 PIT.
    Pit,
    /// The ACPI PM timer.
    PmTimer,
}

impl Reference {
    /// How an operator knows it.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Pit => "PIT",
            Reference::PmTimer => "ACPI PM timer",
        }
    }
}

/// Calibrate the TSC (10 ms against the PIT, else the PM timer at `pm_timer_port`).
/// Returns the reference used, or `None` if neither counted.
pub fn calibrate(pm_timer_port: Option<u16>) -> Option<(Reference, u64)> {
    let _irq = cpu::InterruptGuard::new();
    let ms = 10;
    let (reference, ticks) = match pit_measure(ms) {
        Some(t) => (Reference::Pit, t),
        None => (Reference::PmTimer, pmtimer_measure(pm_timer_port?, ms)?),
    };
    let khz = ticks / ms;
    set_tsc_khz(khz);
    Some((reference, khz))
}

/// Set the TSC frequency and make "now" the epoch of `now_ns`.
fn set_tsc_khz(khz: u64) {
    TSC_KHZ.store(khz, Ordering::Relaxed);
    NS_MUL.store(((1_000_000u128 << 32) / khz.max(1) as u128) as u64, Ordering::Relaxed);
    TSC_EPOCH.store(rdtsc(), Ordering::Release);
}

/// TSC frequency in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Convert a TSC delta to nanoseconds.
pub fn tsc_to_ns(delta: u64) -> u64 {
    ((delta as u128 * NS_MUL.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Convert nanoseconds to TSC ticks.
pub fn ns_to_tsc(ns: u64) -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    let khz = if khz == 0 { 1_000_000 } else { khz };
    (ns as u128 * khz as u128 / 1_000_000) as u64
}

/// Nanoseconds since calibration: keel's monotonic clock.
pub fn now_ns() -> u64 {
    tsc_to_ns(rdtsc().saturating_sub(TSC_EPOCH.load(Ordering::Acquire)))
}

/// A TSC value `ms` milliseconds from now (for bounded waits).
pub fn deadline_after_ms(ms: u64) -> u64 {
    rdtsc() + ns_to_tsc(ms * 1_000_000)
}

/// Whether the TSC has passed `deadline`.
pub fn passed(deadline: u64) -> bool {
    rdtsc() >= deadline
}

/// Busy-wait for `us` microseconds.
pub fn udelay(us: u64) {
    let end = rdtsc() + ns_to_tsc(us * 1000);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
