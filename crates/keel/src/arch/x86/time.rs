//! Timekeeping: the TSC, calibrated once at boot against the PIT (or the ACPI PM timer where
//! there is no PIT), and keel's monotonic nanosecond clock derived from it.
//!
//! keel assumes the TSCs of all CPUs run in step, as they do on every CPU with an invariant
//! TSC and under QEMU; `now_ns` is then monotonic across CPUs. `now_ns` is Xen's "system
//! time": it is computed with exactly the pvclock scale keel publishes to guests
//! from the TSC value at calibration, so guests and keel agree on
//! every instant (`xen_abi::shared_info::pvclock_params_hz` / `pvclock_scale`).

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::cpu::{self, rdtsc};

/// The pvclock scale from TSC ticks to nanoseconds: `ns = ((delta <<> shift) * mul) >> 32`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Scale {
    /// `tsc_to_system_mul`.
    pub mul: u32,
    /// `tsc_shift`.
    pub shift: i8,
}

impl Scale {
    /// Nanoseconds in `delta` ticks, exactly as a guest computes them.
    pub fn ns(self, delta: u64) -> u64 {
        xen_abi::shared_info::pvclock_scale(delta, self.mul, self.shift)
    }

    /// Ticks in `ns` nanoseconds, rounded up (a deadline converted is never early).
    pub fn ticks(self, ns: u64) -> u64 {
        if self.mul == 0 {
            return u64::MAX;
        }
        let t = ((ns as u128) << 32).div_ceil(self.mul as u128);
        let t = if self.shift >= 0 { t.div_ceil(1 << self.shift as u32) } else { t << self.shift.unsigned_abs() };
        t.min(u64::MAX as u128) as u64
    }
}

const fn pack(s: Scale) -> u64 {
    s.mul as u64 | (s.shift as u8 as u64) << 32
}

/// The scale from TSC ticks to nanoseconds (what guests get as `tsc_to_system_mul`/`tsc_shift`).
pub fn scale() -> Scale {
    let v = SCALE.load(Ordering::Relaxed);
    Scale { mul: v as u32, shift: (v >> 32) as u8 as i8 }
}

/// The TSC value at system time zero.
pub fn tsc_epoch() -> u64 {
    TSC_EPOCH.load(Ordering::Acquire)
}

/// TSC value at calibration: time zero of `now_ns`.
static TSC_EPOCH: AtomicU64 = AtomicU64::new(0);
/// The pvclock scale, packed: `mul | (shift as u8) << 32`. Before calibration: 1 GHz.
static SCALE: AtomicU64 = AtomicU64::new(pack(Scale { mul: 1 << 31, shift: 1 }));
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

/// Calibrate the TSC against the PIT (or, where there is none, the ACPI PM timer at
/// `pm_timer_port`): the shortest of several 10 ms measurements, since anything that delays
/// this CPU (an SMI, or the host descheduling an emulated CPU) can only lengthen one. Returns
/// the reference used, or `None` if neither counted.
pub fn calibrate(pm_timer_port: Option<u16>) -> Option<(Reference, u64)> {
    const ROUNDS: usize = 5;
    let _irq = cpu::InterruptGuard::new();
    let ms = 10;
    let (reference, ticks) = match pit_measure(ms) {
        Some(first) => {
            let best = (1..ROUNDS).filter_map(|_| pit_measure(ms)).fold(first, u64::min);
            (Reference::Pit, best)
        }
        None => {
            let first = pmtimer_measure(pm_timer_port?, ms)?;
            let port = pm_timer_port?;
            (Reference::PmTimer, (1..ROUNDS).filter_map(|_| pmtimer_measure(port, ms)).fold(first, u64::min))
        }
    };
    let khz = ticks / ms;
    set_tsc_khz(khz);
    Some((reference, khz))
}

/// Set the TSC frequency and make "now" the epoch of `now_ns`.
fn set_tsc_khz(khz: u64) {
    TSC_KHZ.store(khz, Ordering::Relaxed);
    let (mul, shift) = xen_abi::shared_info::pvclock_params_hz(khz.max(1) * 1000).unwrap_or((1 << 31, 1));
    SCALE.store(pack(Scale { mul, shift }), Ordering::Relaxed);
    TSC_EPOCH.store(rdtsc(), Ordering::Release);
}

/// TSC frequency in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Convert a TSC delta to nanoseconds.
pub fn tsc_to_ns(delta: u64) -> u64 {
    scale().ns(delta)
}

/// Convert nanoseconds to TSC ticks (rounded up).
pub fn ns_to_tsc(ns: u64) -> u64 {
    scale().ticks(ns)
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
