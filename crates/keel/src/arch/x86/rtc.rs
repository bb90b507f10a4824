//! The CMOS real-time clock, read once at boot for the wall clock guests see
//! (`shared_info.wc_sec`); keel itself only keeps monotonic time.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_guest::wallclock::RtcRegisters;
use x86_64::instructions::port::Port;

use super::time;

/// Unix time (ns) at system time zero, i.e. "wall clock = this + now_ns()".
static WALLCLOCK_BASE_NS: AtomicU64 = AtomicU64::new(0);

fn read_register(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index/data pair, owned by keel (guests never reach
    // them); bit 7 of the index masks NMIs during the access, as is customary.
    unsafe {
        Port::<u8>::new(0x70).write(reg | 0x80);
        Port::<u8>::new(0x71).read()
    }
}

fn snapshot() -> RtcRegisters {
    RtcRegisters {
        seconds: read_register(0x00),
        minutes: read_register(0x02),
        hours: read_register(0x04),
        day: read_register(0x07),
        month: read_register(0x08),
        year: read_register(0x09),
        century: None,
        status_b: read_register(0x0b),
    }
}

/// Read the RTC (twice, outside an update, until two reads agree) and record the wall clock.
/// Returns the Unix time read, or `None` if the RTC holds no valid date.
pub fn init() -> Option<u64> {
    let mut previous = None;
    for _ in 0..16 {
        // Update in progress (status A bit 7): the registers may be inconsistent for up to
        // 2 ms; wait it out, bounded.
        let limit = time::deadline_after_ms(5);
        while read_register(0x0a) & 0x80 != 0 && !time::passed(limit) {
            core::hint::spin_loop();
        }
        let regs = snapshot();
        if previous == Some(regs) {
            break;
        }
        previous = Some(regs);
    }
    // SAFETY: as in `read_register`: select status register D with NMIs unmasked again.
    unsafe { Port::<u8>::new(0x70).write(0x0d) };
    let secs = previous?.unix_seconds()?;
    let base = (secs as u128 * 1_000_000_000).saturating_sub(time::now_ns() as u128);
    WALLCLOCK_BASE_NS.store(base.min(u64::MAX as u128) as u64, Ordering::Relaxed);
    Some(secs)
}

/// The wall clock at system time zero, in ns since the Unix epoch (0 if the RTC was unusable).
pub fn base_ns() -> u64 {
    WALLCLOCK_BASE_NS.load(Ordering::Relaxed)
}
