//! The local APIC timer's countdown, in one-shot and periodic mode, against
//! keel's clock.
//!
//! The timer is kept as "the instant the count next reaches zero" rather than
//! as a count, so nothing has to tick: the current count is derived from
//! `now` when the guest reads it, and keel only needs a wake-up at the
//! deadline. The LVT (mode, mask, vector) belongs to the vLAPIC; this module
//! takes the mode as an argument and never raises interrupts itself.
//!
//! TSC-deadline mode is not offered (keel's CPUID hides it), so the mode is
//! one-shot or periodic.

use crate::Ns;

/// Length of one emulated APIC bus clock cycle, which the divide
/// configuration divides to clock the timer.
///
/// keel uses Xen's value, 10 ns (a 100 MHz bus, `APIC_BUS_CYCLE_NS` in Xen's
/// `asm/hvm/vlapic.h`); KVM and QEMU use 1 GHz. Guests do not depend on it:
/// Linux calibrates the APIC timer against the TSC or pvclock (and a Linux PVH
/// guest does not use the APIC timer at all). Xen reports the same 100 MHz to
/// Viridian guests as `HV_X64_MSR_APIC_FREQUENCY`.
pub const BUS_CYCLE_NS: u64 = 10;

/// The emulated APIC bus frequency, `1 s / BUS_CYCLE_NS`.
pub const BUS_FREQUENCY_HZ: u64 = 1_000_000_000 / BUS_CYCLE_NS;

/// Timer counting state: initial count, divide configuration, and when the
/// count next reaches zero.
///
/// Invariant: `deadline.is_some()` implies `initial != 0`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct Timer {
    initial: u32,
    divide: u32,
    deadline: Option<Ns>,
}

impl Timer {
    /// The reset state: count 0, divide by 2, stopped.
    pub(crate) const fn new() -> Self {
        Self { initial: 0, divide: 0, deadline: None }
    }

    /// The initial-count register.
    pub(crate) fn initial(&self) -> u32 {
        self.initial
    }

    /// The divide-configuration register.
    pub(crate) fn divide(&self) -> u32 {
        self.divide
    }

    /// When the count next reaches zero, if the timer is counting.
    pub(crate) fn deadline(&self) -> Option<Ns> {
        self.deadline
    }

    /// Bus cycles per timer tick, from the divide configuration: bits 3 and
    /// 1:0 form a 3-bit code; `0b111` is divide by 1, any other code `c`
    /// divides by `2 << c` (2 to 128).
    pub(crate) fn divisor(&self) -> u64 {
        let code = (self.divide & 3) | ((self.divide >> 1) & 4);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    fn tick_ns(&self) -> u64 {
        BUS_CYCLE_NS * self.divisor()
    }

    /// Length of a full count from the initial value (at most about 5500 s).
    fn period_ns(&self) -> u64 {
        u64::from(self.initial) * self.tick_ns()
    }

    /// The current-count register at `now`: counts down from the initial
    /// count to zero; in periodic mode it reloads instead of reaching zero.
    pub(crate) fn current(&self, now: Ns, periodic: bool) -> u32 {
        let Some(deadline) = self.deadline else {
            return 0;
        };
        let tick = self.tick_ns();
        let count = if now < deadline {
            (deadline - now).div_ceil(tick)
        } else if periodic {
            // Expiries keel has not reported through `expire` yet.
            let ticks = (now - deadline) / tick;
            ticks.checked_rem(u64::from(self.initial)).map_or(0, |t| u64::from(self.initial) - t)
        } else {
            0
        };
        count.min(u64::from(self.initial)) as u32
    }

    /// A write to the initial-count register at `now`: restart the count
    /// from `value`, or stop the timer if it is 0.
    pub(crate) fn write_initial(&mut self, value: u32, now: Ns) {
        self.initial = value;
        self.deadline = if value == 0 { None } else { Some(now.saturating_add(self.period_ns())) };
    }

    /// A write to the divide-configuration register at `now`: the count
    /// carries on from where it is, at the new rate.
    pub(crate) fn write_divide(&mut self, value: u32, now: Ns, periodic: bool) {
        let remaining = self.current(now, periodic);
        self.divide = value & crate::regs::DIVIDE_VALID;
        if self.deadline.is_some() {
            self.deadline = Some(now.saturating_add(u64::from(remaining) * self.tick_ns()));
        }
    }

    /// Consumes the expiries at or before `now`; returns whether there was
    /// any. Periodic timers move to their next deadline after `now`: expiries
    /// keel was too late for coalesce into one, as one IRR bit would.
    pub(crate) fn expire(&mut self, now: Ns, periodic: bool) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        if now < deadline {
            return false;
        }
        self.deadline = if periodic {
            let period = self.period_ns();
            let missed = (now - deadline) / period.max(1);
            (missed + 1).checked_mul(period).and_then(|d| deadline.checked_add(d)).filter(|_| period != 0)
        } else {
            None
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_divide(divide: u32) -> Timer {
        let mut t = Timer::new();
        t.write_divide(divide, 0, false);
        t
    }

    #[test]
    fn divide_configuration_table() {
        // SDM figure 11-10.
        let table = [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)];
        for (config, divisor) in table {
            let t = with_divide(config);
            assert_eq!(t.divisor(), divisor, "config {config:#x}");
            assert_eq!(t.divide(), config);
        }
        // Bit 2 and bits above 3 do not exist.
        assert_eq!(with_divide(0xFFFF_FFF4).divide(), 0);
        assert_eq!(with_divide(0xFFFF_FFFF).divisor(), 1);
    }

    #[test]
    fn one_shot_counts_down_once() {
        let mut t = with_divide(0xB); // 10 ns per tick
        t.write_initial(100, 1000);
        assert_eq!(t.deadline(), Some(2000));
        assert_eq!(t.current(1000, false), 100);
        assert_eq!(t.current(1001, false), 100);
        assert_eq!(t.current(1010, false), 99);
        assert_eq!(t.current(1995, false), 1);
        assert!(!t.expire(1999, false));
        assert_eq!(t.current(2000, false), 0);
        assert!(t.expire(2000, false));
        assert_eq!(t.deadline(), None);
        assert_eq!(t.current(5000, false), 0);
        assert!(!t.expire(9000, false));
    }

    #[test]
    fn periodic_reloads_and_coalesces_late_expiries() {
        let mut t = with_divide(0x0); // 20 ns per tick
        t.write_initial(50, 0); // period 1000 ns
        assert_eq!(t.deadline(), Some(1000));
        assert!(t.expire(1000, true));
        assert_eq!(t.deadline(), Some(2000));
        assert_eq!(t.current(1000, true), 50);
        assert_eq!(t.current(1500, true), 25);
        // Before keel reports it, the count already wrapped.
        assert_eq!(t.current(2020, true), 49);
        // Three periods late: one expiry, next deadline after now.
        assert!(t.expire(4500, true));
        assert_eq!(t.deadline(), Some(5000));
        assert!(!t.expire(4999, true));
    }

    #[test]
    fn zero_initial_count_stops_the_timer() {
        let mut t = Timer::new();
        t.write_initial(10, 0);
        t.write_initial(0, 5);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.current(6, true), 0);
        assert!(!t.expire(u64::MAX, true));
    }

    #[test]
    fn divide_change_keeps_the_remaining_count() {
        let mut t = with_divide(0xB); // 10 ns per tick
        t.write_initial(100, 0);
        t.write_divide(0x3, 500, false); // 50 ticks left, now 160 ns per tick
        assert_eq!(t.current(500, false), 50);
        assert_eq!(t.deadline(), Some(500 + 50 * 160));
        assert_eq!(t.current(500 + 160, false), 49);
    }

    #[test]
    fn end_of_time_saturates_instead_of_overflowing() {
        let mut t = with_divide(0xA); // 1280 ns per tick
        t.write_initial(u32::MAX, u64::MAX - 10);
        assert_eq!(t.deadline(), Some(u64::MAX));
        assert_eq!(t.current(u64::MAX - 10, true), 1);
        assert!(t.expire(u64::MAX, true));
        // The next period would be past the end of time: the timer stops.
        assert_eq!(t.deadline(), None);
    }
}
