//! The shared-info page, per-vCPU info and the pvclock (`public/xen.h`,
//! `public/arch-x86/xen.h`).
//!
//! [`SharedInfo`] fills the start of one page that the guest maps with
//! `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`. It holds the 2-level event-channel
//! bitmaps, the wall clock, and a [`VcpuInfo`] for each of the first 32 vCPUs (a vCPU may move
//! its `VcpuInfo` elsewhere with `VCPUOP_register_vcpu_info`).
//!
//! # pvclock
//!
//! Each [`VcpuTimeInfo`] lets the guest turn its TSC into system time (ns since the domain's
//! time base) without a hypercall:
//! `system_time + scale(tsc - tsc_timestamp, tsc_to_system_mul, tsc_shift)`, where
//! [`pvclock_scale`] shifts the tick delta by `tsc_shift` and multiplies it by the 32.32
//! fixed-point fraction `tsc_to_system_mul / 2^32`. The writer brackets every update with
//! `version` increments (odd while an update is in progress), and the reader retries until it
//! sees the same even version before and after reading.
//!
//! [`pvclock_params`] chooses `(mul, shift)` for a TSC frequency the way Xen does.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_LEGACY_MAX_VCPUS`: vCPUs with a [`VcpuInfo`] slot in the shared-info page.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// `XEN_PVCLOCK_TSC_STABLE_BIT`: the TSC is synchronised across vCPUs, so the guest need not
/// enforce monotonicity across them.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `XEN_PVCLOCK_GUEST_STOPPED`: the guest was paused (for watchdogs).
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// `struct vcpu_time_info`: one vCPU's pvclock parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Update counter: odd while an update is in progress.
    pub version: u32,
    /// Padding (C `pad0`).
    pub pad0: u32,
    /// TSC (as the guest sees it) when the values below were computed.
    pub tsc_timestamp: u64,
    /// System time in ns at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point ns per (shifted) tick.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the tick delta before multiplying (negative: shift right).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*`.
    pub flags: u8,
    /// Padding (C `pad1`).
    pub pad1: [u8; 2],
}

impl VcpuTimeInfo {
    /// True while the writer is in the middle of an update.
    pub const fn update_in_progress(&self) -> bool {
        self.version & 1 != 0
    }

    /// System time in ns at guest TSC value `tsc`. A `tsc` before `tsc_timestamp` wraps as in
    /// the guest's own arithmetic, so callers pass a current TSC.
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time.wrapping_add(pvclock_scale(delta, self.tsc_to_system_mul, self.tsc_shift))
    }
}

/// `struct arch_vcpu_info` (x86).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// PV: CR2 at the last page fault.
    pub cr2: u64,
    /// Padding (C `pad`).
    pub pad: u64,
}

/// `struct vcpu_info`: per-vCPU event state and time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an event is pending; cleared by the guest before it scans.
    pub evtchn_upcall_pending: u8,
    /// PV: the guest's "interrupts off" flag (ignored for HVM).
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub _pad0: [u8; 6],
    /// Bit `w` set: word `w` of `evtchn_pending` may have pending unmasked ports.
    pub evtchn_pending_sel: u64,
    /// Architecture part.
    pub arch: ArchVcpuInfo,
    /// pvclock.
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` (x86). All PV-only; an HVM/PVH guest leaves it zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Entries in the guest's physical-to-machine table.
    pub max_pfn: u64,
    /// Frame of the p2m frame list list.
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason bits.
    pub nmi_reason: u64,
    /// CR3 of the address space where `p2m_vaddr` is valid.
    pub p2m_cr3: u64,
    /// Virtual address of the linear p2m list.
    pub p2m_vaddr: u64,
    /// Incremented by the guest around p2m changes.
    pub p2m_generation: u64,
}

/// `struct shared_info`: the shared-info page's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU info for vCPUs 0 to 31 (until they register their own).
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level event channels: bit `p % 64` of word `p / 64` is port `p`'s pending bit.
    pub evtchn_pending: [u64; 64],
    /// 2-level event channels: mask bits, same layout.
    pub evtchn_mask: [u64; 64],
    /// Wall-clock update counter (same protocol as [`VcpuTimeInfo::version`]).
    pub wc_version: u32,
    /// UTC seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Nanoseconds part of the wall clock at system time 0.
    pub wc_nsec: u32,
    /// UTC seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

zeroed_default!(SharedInfo);

impl SharedInfo {
    /// The wall clock at system time 0 as (seconds, nanoseconds).
    pub const fn wallclock(&self) -> (u64, u32) {
        ((self.wc_sec_hi as u64) << 32 | self.wc_sec as u64, self.wc_nsec)
    }
}

/// Scales a TSC delta to nanoseconds: `((delta << shift) * mul) >> 32` with a negative
/// `shift` meaning a right shift, as the guest computes it.
///
/// The product is formed in 128 bits, so no delta overflows the multiplication. A positive
/// shift is applied to the 128-bit product (not to the 64-bit delta, which could lose its top
/// bits), and a result beyond `u64::MAX` saturates; neither happens with parameters from
/// [`pvclock_params`] for deltas below about 2^63 ticks.
pub const fn pvclock_scale(delta_tsc: u64, mul: u32, shift: i8) -> u64 {
    let product = if shift >= 0 {
        let product = delta_tsc as u128 * mul as u128;
        let shift = shift as u32;
        if product.leading_zeros() < shift {
            return u64::MAX;
        }
        product << shift
    } else {
        let right = shift.unsigned_abs() as u32;
        let delta = if right >= u64::BITS { 0 } else { delta_tsc >> right };
        delta as u128 * mul as u128
    };
    let ns = product >> 32;
    if ns > u64::MAX as u128 {
        u64::MAX
    } else {
        ns as u64
    }
}

/// The `(tsc_to_system_mul, tsc_shift)` pair for a TSC running at `tsc_khz` kHz, or `None`
/// for 0 kHz. See [`pvclock_params_hz`].
pub const fn pvclock_params(tsc_khz: u32) -> Option<(u32, i8)> {
    pvclock_params_hz(tsc_khz as u64 * 1000)
}

/// The `(tsc_to_system_mul, tsc_shift)` pair for a TSC running at `tsc_hz` Hz, or `None` for
/// 0 Hz.
///
/// Method (the same result as Xen's `set_time_scale`): the multiplier is the fraction
/// "nanoseconds per tick" in 32.32 fixed point, which only fits in 32 bits when a tick lasts
/// less than a nanosecond. So the frequency is first normalised into the octave
/// (1 GHz, 2 GHz] by halving it (each halving is a shift of -1: the guest will drop one bit of
/// the delta) or doubling it (a shift of +1). In that octave a tick lasts between 0.5 and 1 ns,
/// and `mul = floor(10^9 * 2^32 / normalised_hz)` lies in `[2^31, 2^32)`: it fits and keeps 31
/// significant bits, far more than the 1 ppm a clock needs.
pub const fn pvclock_params_hz(tsc_hz: u64) -> Option<(u32, i8)> {
    if tsc_hz == 0 {
        return None;
    }
    let mut hz = tsc_hz;
    let mut shift: i8 = 0;
    // At most 34 halvings (u64::MAX / 2^34 < 2e9) and 30 doublings (1 * 2^30 > 1e9), so the
    // shift stays well inside i8 and `hz << 1` cannot overflow (hz <= 1e9 when doubling).
    while hz > 2 * NSEC_PER_SEC {
        hz >>= 1;
        shift -= 1;
    }
    while hz <= NSEC_PER_SEC {
        hz <<= 1;
        shift += 1;
    }
    let mul = ((NSEC_PER_SEC as u128) << 32) / hz as u128;
    if mul > u32::MAX as u128 {
        return None; // Unreachable: hz > 1e9 here.
    }
    Some((mul as u32, shift))
}

/// The TSC frequency in kHz that `(mul, shift)` describes, as a Linux guest derives it
/// (`pvclock_tsc_khz`: `(10^6 << 32) / mul`, then undo the shift); `None` if `mul` is 0.
pub const fn pvclock_tsc_khz(mul: u32, shift: i8) -> Option<u64> {
    if mul == 0 {
        return None;
    }
    let khz = (1_000_000u128 << 32) / mul as u128;
    let khz = if shift < 0 {
        let left = shift.unsigned_abs() as u32;
        if khz.leading_zeros() < left {
            u128::MAX
        } else {
            khz << left
        }
    } else {
        let right = shift as u32;
        if right >= u128::BITS {
            0
        } else {
            khz >> right
        }
    };
    Some(if khz > u64::MAX as u128 { u64::MAX } else { khz as u64 })
}

assert_layout!(VcpuTimeInfo, 32, {
    version: 0, pad0: 4, tsc_timestamp: 8, system_time: 16, tsc_to_system_mul: 24, tsc_shift: 28,
    flags: 29, pad1: 30,
});
assert_layout!(ArchVcpuInfo, 16, { cr2: 0, pad: 8 });
assert_layout!(VcpuInfo, 64, {
    evtchn_upcall_pending: 0, evtchn_upcall_mask: 1, evtchn_pending_sel: 8, arch: 16, time: 32,
});
assert_layout!(ArchSharedInfo, 48, {
    max_pfn: 0, pfn_to_mfn_frame_list_list: 8, nmi_reason: 16, p2m_cr3: 24, p2m_vaddr: 32,
    p2m_generation: 40,
});
assert_layout!(SharedInfo, 3136, {
    vcpu_info: 0, evtchn_pending: 2048, evtchn_mask: 2560, wc_version: 3072, wc_sec: 3076,
    wc_nsec: 3080, wc_sec_hi: 3084, arch: 3088,
});
const _: () = assert!(core::mem::size_of::<SharedInfo>() <= crate::XEN_PAGE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// |a - b| <= b * ppm / 10^6, rounded up.
    fn within_ppm(a: u64, b: u64, ppm: u64) -> bool {
        let tolerance = (b as u128 * ppm as u128).div_ceil(1_000_000);
        a.abs_diff(b) as u128 <= tolerance
    }

    #[test]
    fn one_second_of_ticks_is_one_second_at_known_rates() {
        for khz in [
            1,
            32,
            1_000,
            14_318,
            100_000,
            1_000_000,
            1_000_001,
            1_999_999,
            2_000_000,
            2_000_001,
            2_500_000,
            2_999_999,
            3_600_000,
            4_000_000,
            5_000_000,
            u32::MAX,
        ] {
            let (mul, shift) = pvclock_params(khz).unwrap();
            assert!(mul >= 1 << 31, "{khz} kHz: mul {mul:#x}");
            let ns = pvclock_scale(khz as u64 * 1000, mul, shift);
            assert!(within_ppm(ns, NSEC_PER_SEC, 1), "{khz} kHz: {ns} ns (mul {mul:#x}, shift {shift})");
        }
    }

    #[test]
    fn params_match_xens_normalisation() {
        // 1 GHz is not above 1e9, so it is doubled once; 2 GHz is in range; 4 GHz halves once.
        assert_eq!(pvclock_params(1_000_000), Some((0x8000_0000, 1)));
        assert_eq!(pvclock_params(2_000_000), Some((0x8000_0000, 0)));
        assert_eq!(pvclock_params(4_000_000), Some((0x8000_0000, -1)));
        // 3 GHz: 1.5e9 after one halving; mul = floor(2^32 / 1.5).
        assert_eq!(pvclock_params(3_000_000), Some((0xaaaa_aaaa, -1)));
        // 1 kHz: doubled 20 times to 1.048576 GHz; mul = 10^6 * 2^12 exactly.
        assert_eq!(pvclock_params(1), Some((4_096_000_000, 20)));
        assert_eq!(pvclock_params(0), None);
        assert_eq!(pvclock_params_hz(0), None);
    }

    #[test]
    fn scale_uses_128_bit_products() {
        // delta * mul overflows 64 bits for any delta above 2^32 with a 32-bit mul.
        assert_eq!(pvclock_scale(1 << 40, 0x8000_0000, 0), 1 << 39);
        assert_eq!(pvclock_scale(u64::MAX, u32::MAX, 0), ((u64::MAX as u128 * u32::MAX as u128) >> 32) as u64);
        assert_eq!(pvclock_scale(u64::MAX, 0x8000_0000, -1), u64::MAX >> 2);
        // Ten years of a 5 GHz TSC still scales without overflow.
        let (mul, shift) = pvclock_params(5_000_000).unwrap();
        let ten_years_ns = 10 * 365 * 86_400 * NSEC_PER_SEC;
        let ns = pvclock_scale(ten_years_ns * 5, mul, shift);
        assert!(within_ppm(ns, ten_years_ns, 1), "{ns}");
    }

    #[test]
    fn scale_saturates_and_handles_extreme_shifts() {
        assert_eq!(pvclock_scale(u64::MAX, u32::MAX, 32), u64::MAX);
        assert_eq!(pvclock_scale(u64::MAX, u32::MAX, i8::MAX), u64::MAX);
        assert_eq!(pvclock_scale(u64::MAX, u32::MAX, i8::MIN), 0);
        assert_eq!(pvclock_scale(u64::MAX, u32::MAX, -64), 0);
        assert_eq!(pvclock_scale(0, u32::MAX, i8::MAX), 0);
        assert_eq!(pvclock_scale(12345, 0, 5), 0);
        assert_eq!(pvclock_tsc_khz(0, 0), None);
        assert_eq!(pvclock_tsc_khz(1, i8::MIN), Some(u64::MAX));
        assert_eq!(pvclock_tsc_khz(1, i8::MAX), Some(0));
    }

    #[test]
    fn time_info_reads_system_time() {
        let (mul, shift) = pvclock_params(2_500_000).unwrap();
        let t = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1_000_000,
            system_time: 5 * NSEC_PER_SEC,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            ..Default::default()
        };
        assert!(!t.update_in_progress());
        assert_eq!(t.system_time_at(1_000_000), 5 * NSEC_PER_SEC);
        let later = t.system_time_at(1_000_000 + 2_500_000_000);
        assert!(within_ppm(later - 5 * NSEC_PER_SEC, NSEC_PER_SEC, 1), "{later}");
        assert!(VcpuTimeInfo { version: 3, ..t }.update_in_progress());
    }

    #[test]
    fn wallclock_joins_the_halves() {
        let s = SharedInfo { wc_sec: 0x5000_0000, wc_sec_hi: 1, wc_nsec: 7, ..SharedInfo::default() };
        assert_eq!(s.wallclock(), (0x1_5000_0000, 7));
    }

    proptest! {
        #[test]
        fn params_always_fit_and_keep_time(khz in 1u32..) {
            let (mul, shift) = pvclock_params(khz).unwrap();
            prop_assert!(mul >= 1 << 31);
            prop_assert!((-12..=20).contains(&shift), "shift {}", shift);
            let ns = pvclock_scale(khz as u64 * 1000, mul, shift);
            prop_assert!(within_ppm(ns, NSEC_PER_SEC, 1), "{} kHz -> {} ns", khz, ns);
        }

        #[test]
        fn params_round_trip_to_the_frequency(khz in 1u32..) {
            // The guest's derivation quantises to 2^-shift kHz, so allow 2 ppm.
            let (mul, shift) = pvclock_params(khz).unwrap();
            let back = pvclock_tsc_khz(mul, shift).unwrap();
            prop_assert!(within_ppm(back, khz as u64, 2), "{} kHz -> {} kHz", khz, back);
        }

        #[test]
        fn any_hz_gives_a_32_bit_mul(hz in 1u64..) {
            let (mul, shift) = pvclock_params_hz(hz).unwrap();
            prop_assert!(mul >= 1 << 31);
            prop_assert!((-34..=30).contains(&shift));
        }

        #[test]
        fn scale_is_monotonic_in_the_delta(a in any::<u64>(), b in any::<u64>(), mul in any::<u32>(), shift in -40i8..40) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(pvclock_scale(lo, mul, shift) <= pvclock_scale(hi, mul, shift));
        }
    }
}
