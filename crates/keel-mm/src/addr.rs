//! Typed host-physical addresses and frame numbers.
//!
//! Physical addresses and frame numbers are both `u64` underneath, and mixing
//! them up (or mixing either with a virtual address) is one of the classic
//! hypervisor bugs. [`PhysAddr`] and [`Pfn`] make the unit part of the type;
//! conversions between them are explicit and say which way they round.

use core::fmt;

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// Size of a base page (and of a frame) in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Largest buddy order: blocks of `2^18` frames, i.e. 1 GiB (order 9 is 2 MiB).
pub const MAX_ORDER: u8 = 18;

/// True if `value` is a multiple of `2^bits` (any `bits`, including >= 64).
const fn low_bits_clear(value: u64, bits: u32) -> bool {
    if bits >= u64::BITS {
        value == 0
    } else {
        value & ((1u64 << bits) - 1) == 0
    }
}

/// A host-physical byte address.
#[derive(Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The frame containing this address (rounds down).
    pub const fn pfn_floor(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }

    /// The first frame starting at or above this address (rounds up).
    /// Never overflows: the result is at most `2^52`.
    pub const fn pfn_ceil(self) -> Pfn {
        Pfn((self.0 >> PAGE_SHIFT) + !low_bits_clear(self.0, PAGE_SHIFT) as u64)
    }

    /// Offset of this address within its page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }

    /// True if the address is aligned to a block of `2^order` pages
    /// (`is_aligned(0)` means page-aligned, `is_aligned(9)` 2 MiB-aligned).
    pub const fn is_aligned(self, order: u8) -> bool {
        low_bits_clear(self.0, PAGE_SHIFT + order as u32)
    }

    /// `self + bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(a) => Some(Self(a)),
            None => None,
        }
    }

    /// Rounds down to a multiple of `align`, which must be a power of two
    /// (otherwise the address is returned unchanged).
    pub const fn align_down(self, align: u64) -> Self {
        if align.is_power_of_two() {
            Self(self.0 & !(align - 1))
        } else {
            self
        }
    }

    /// Rounds up to a multiple of `align`, which must be a power of two.
    /// `None` if `align` is not a power of two or the result would overflow.
    pub const fn align_up(self, align: u64) -> Option<Self> {
        if !align.is_power_of_two() {
            return None;
        }
        match self.0.checked_add(align - 1) {
            Some(a) => Some(Self(a & !(align - 1))),
            None => None,
        }
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A host frame number: a [`PhysAddr`] shifted right by [`PAGE_SHIFT`].
#[derive(Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(u64);

impl Pfn {
    /// The frame number `pfn`.
    pub const fn new(pfn: u64) -> Self {
        Self(pfn)
    }

    /// The raw frame number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Address of the first byte of the frame.
    ///
    /// Frame numbers at or above `2^52` have no 64-bit address (x86-64 physical
    /// addresses are at most 52 bits wide); for them the high bits are lost.
    /// Use [`Pfn::checked_addr`] where the frame number is untrusted.
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }

    /// Address of the first byte of the frame, or `None` if it does not fit
    /// in 64 bits.
    pub const fn checked_addr(self) -> Option<PhysAddr> {
        if self.0 >> (u64::BITS - PAGE_SHIFT) == 0 {
            Some(PhysAddr(self.0 << PAGE_SHIFT))
        } else {
            None
        }
    }

    /// True if the frame number is a multiple of `2^order`, i.e. the frame
    /// can be the head of a naturally aligned buddy block of that order.
    pub const fn is_aligned(self, order: u8) -> bool {
        low_bits_clear(self.0, order as u32)
    }

    /// `self + frames`, or `None` on overflow.
    pub const fn checked_add(self, frames: u64) -> Option<Self> {
        match self.0.checked_add(frames) {
            Some(p) => Some(Self(p)),
            None => None,
        }
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn pfn_rounding() {
        assert_eq!(PhysAddr::new(0).pfn_floor(), Pfn::new(0));
        assert_eq!(PhysAddr::new(0).pfn_ceil(), Pfn::new(0));
        assert_eq!(PhysAddr::new(0x1000).pfn_floor(), Pfn::new(1));
        assert_eq!(PhysAddr::new(0x1000).pfn_ceil(), Pfn::new(1));
        assert_eq!(PhysAddr::new(0x1001).pfn_floor(), Pfn::new(1));
        assert_eq!(PhysAddr::new(0x1001).pfn_ceil(), Pfn::new(2));
        assert_eq!(PhysAddr::new(u64::MAX).pfn_ceil(), Pfn::new(1 << 52));
        assert_eq!(Pfn::new(0x9f).addr(), PhysAddr::new(0x9f000));
    }

    #[test]
    fn alignment() {
        assert!(PhysAddr::new(0).is_aligned(MAX_ORDER));
        assert!(PhysAddr::new(0x20_0000).is_aligned(9));
        assert!(!PhysAddr::new(0x20_0000).is_aligned(10));
        assert!(!PhysAddr::new(0x800).is_aligned(0));
        assert!(PhysAddr::new(0x4000_0000).is_aligned(18));
        assert!(PhysAddr::new(1 << 63).is_aligned(51));
        assert!(!PhysAddr::new(1 << 63).is_aligned(52));
        assert!(PhysAddr::new(0).is_aligned(255));
        assert!(Pfn::new(512).is_aligned(9));
        assert!(!Pfn::new(513).is_aligned(1));
        assert!(Pfn::new(0).is_aligned(255));
        assert!(!Pfn::new(1 << 63).is_aligned(64));
    }

    #[test]
    fn align_helpers() {
        let a = PhysAddr::new(0x1234);
        assert_eq!(a.align_down(0x1000), PhysAddr::new(0x1000));
        assert_eq!(a.align_up(0x1000), Some(PhysAddr::new(0x2000)));
        assert_eq!(a.align_up(0x1001), None);
        assert_eq!(PhysAddr::new(u64::MAX).align_up(0x1000), None);
        assert_eq!(a.page_offset(), 0x234);
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(Pfn::new(1 << 52).checked_addr(), None);
        assert_eq!(Pfn::new((1 << 52) - 1).checked_addr(), Some(PhysAddr::new(!0xfff)));
    }

    #[test]
    fn formatting_is_hex() {
        assert_eq!(format!("{}", PhysAddr::new(0x9fc00)), "0x9fc00");
        assert_eq!(format!("{:?}", PhysAddr::new(0x9fc00)), "PhysAddr(0x9fc00)");
        assert_eq!(format!("{}", Pfn::new(0xfeffc)), "0xfeffc");
        assert_eq!(format!("{:?}", Pfn::new(0xfeffc)), "Pfn(0xfeffc)");
        assert_eq!(format!("{:x}", Pfn::new(255)), "ff");
    }

    proptest! {
        #[test]
        fn floor_and_ceil_bracket_the_address(a in any::<u64>()) {
            let a = PhysAddr::new(a);
            let floor = a.pfn_floor().as_u64() as u128 * PAGE_SIZE as u128;
            let ceil = a.pfn_ceil().as_u64() as u128 * PAGE_SIZE as u128;
            prop_assert!(floor <= a.as_u64() as u128);
            prop_assert!(ceil >= a.as_u64() as u128);
            prop_assert!(ceil - floor <= PAGE_SIZE as u128);
            prop_assert_eq!(ceil == floor, a.is_aligned(0));
        }
    }
}

/// A guest-physical byte address (what a guest believes is physical; the p2m translates it).
#[derive(Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash, Default)]
#[repr(transparent)]
pub struct Gpa(u64);

impl Gpa {
    /// The guest-physical address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The guest frame containing this address.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }

    /// Offset within the page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }

    /// `self + bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(a) => Some(Self(a)),
            None => None,
        }
    }
}

impl fmt::Debug for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpa({:#x})", self.0)
    }
}

impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A guest frame number (Xen's gfn): a [`Gpa`] shifted right by [`PAGE_SHIFT`].
#[derive(Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash, Default)]
#[repr(transparent)]
pub struct Gfn(u64);

impl Gfn {
    /// The guest frame number `gfn`.
    pub const fn new(gfn: u64) -> Self {
        Self(gfn)
    }

    /// The raw frame number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Address of the first byte, or `None` if it does not fit in 64 bits.
    pub const fn checked_gpa(self) -> Option<Gpa> {
        if self.0 >> (u64::BITS - PAGE_SHIFT) == 0 {
            Some(Gpa(self.0 << PAGE_SHIFT))
        } else {
            None
        }
    }

    /// True if the frame number is a multiple of `2^order`.
    pub const fn is_aligned(self, order: u8) -> bool {
        low_bits_clear(self.0, order as u32)
    }

    /// `self + frames`, or `None` on overflow.
    pub const fn checked_add(self, frames: u64) -> Option<Self> {
        match self.0.checked_add(frames) {
            Some(p) => Some(Self(p)),
            None => None,
        }
    }
}

impl fmt::Debug for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfn({:#x})", self.0)
    }
}

impl fmt::Display for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod guest_address_tests {
    use super::*;

    #[test]
    fn gpa_and_gfn_convert() {
        let a = Gpa::new(0xfeff_c123);
        assert_eq!(a.gfn(), Gfn::new(0xfeffc));
        assert_eq!(a.page_offset(), 0x123);
        assert_eq!(Gfn::new(0xfeffc).checked_gpa(), Some(Gpa::new(0xfeff_c000)));
        assert_eq!(Gfn::new(u64::MAX).checked_gpa(), None);
        assert!(Gfn::new(0x200).is_aligned(9));
        assert!(!Gfn::new(0x201).is_aligned(9));
        assert_eq!(Gpa::new(u64::MAX).checked_add(1), None);
    }
}
