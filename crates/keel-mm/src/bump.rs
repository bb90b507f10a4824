//! [`BumpAllocator`]: keel's boot-time allocator, used for page tables and
//! the frame table before the buddy allocator exists.
//!
//! It carves page-aligned chunks out of a [`RangeSet`] of free memory,
//! lowest address first, and never gives memory back. It keeps both what is
//! still free and what it handed out, so that keel can later seed the buddy
//! allocator with exactly the memory nobody took (and account the rest to
//! itself).

use core::fmt;

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::range::RangeSet;

/// No free range can satisfy the request (or the request itself was invalid:
/// an alignment that is not a power of two, or a size that overflows).
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub struct OutOfMemory;

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("out of boot memory")
    }
}

/// Boot-time allocator: hands out page-aligned, zero-length-safe chunks from a RangeSet,
/// lowest address first (or below a limit), and remembers what it handed out so keel can
/// exclude it when it later seeds the buddy allocator.
#[derive(Clone, Debug)]
pub struct BumpAllocator {
    free: RangeSet,
    allocated: RangeSet,
}

impl BumpAllocator {
    /// An allocator handing out memory from `free`. Only the whole pages of
    /// `free` are ever used.
    pub fn new(free: RangeSet) -> Self {
        Self { free, allocated: RangeSet::new() }
    }

    /// Allocates `size` bytes, rounded up to whole pages (a request for 0
    /// bytes gets one page, so every success is a distinct chunk), at the
    /// lowest address that is a multiple of `align` and whose end is at or
    /// below `below`.
    ///
    /// `align` is a power of two >= PAGE_SIZE; `below` an exclusive upper bound on the end.
    /// Smaller alignments are raised to [`PAGE_SIZE`]; an alignment that is
    /// not a power of two fails. The memory is not zeroed.
    pub fn alloc(&mut self, size: u64, align: u64, below: Option<PhysAddr>) -> Result<PhysAddr, OutOfMemory> {
        if !align.is_power_of_two() {
            return Err(OutOfMemory);
        }
        let align = align.max(PAGE_SIZE);
        let size = size.max(1).checked_next_multiple_of(PAGE_SIZE).ok_or(OutOfMemory)?;
        let limit = below.unwrap_or(PhysAddr::new(u64::MAX));
        let (start, end) = self
            .free
            .ranges()
            .iter()
            .find_map(|&(lo, hi)| {
                let start = lo.align_up(align)?;
                let end = start.checked_add(size)?;
                (end <= hi && end <= limit).then_some((start, end))
            })
            .ok_or(OutOfMemory)?;
        // Either both sets change or neither does.
        self.free.remove(start, end).map_err(|_| OutOfMemory)?;
        if self.allocated.insert(start, end).is_err() {
            // Re-inserting what was just removed restores the previous
            // layout, which fitted, so this cannot fail.
            let _ = self.free.insert(start, end);
            return Err(OutOfMemory);
        }
        Ok(start)
    }

    /// What is still free.
    pub fn remaining(&self) -> &RangeSet {
        &self.free
    }

    /// Everything handed out so far.
    pub fn allocated(&self) -> &RangeSet {
        &self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::MAX_RANGES;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn a(x: u64) -> PhysAddr {
        PhysAddr::new(x)
    }

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(lo, hi) in ranges {
            s.insert(a(lo), a(hi)).unwrap();
        }
        s
    }

    #[test]
    fn lowest_address_first_and_page_rounded() {
        let mut b = BumpAllocator::new(set(&[(0x10_0000, 0x20_0000), (0x1000, 0x3000)]));
        assert_eq!(b.alloc(1, PAGE_SIZE, None), Ok(a(0x1000)));
        assert_eq!(b.alloc(0, PAGE_SIZE, None), Ok(a(0x2000)));
        assert_eq!(b.alloc(0x1001, PAGE_SIZE, None), Ok(a(0x10_0000)));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, None), Ok(a(0x10_2000)));
        assert_eq!(b.allocated().total(), 0x5000);
        assert_eq!(b.remaining().total(), 0x10_2000 - 0x5000);
    }

    #[test]
    fn alignment_is_honoured() {
        let mut b = BumpAllocator::new(set(&[(0x1000, 0x80_0000)]));
        assert_eq!(b.alloc(0x1000, 0x20_0000, None), Ok(a(0x20_0000)));
        // The padding below the aligned chunk is still free and used next.
        assert_eq!(b.alloc(0x1000, 1, None), Ok(a(0x1000)));
        assert_eq!(b.alloc(0x1000, 0x10_0000, None), Ok(a(0x10_0000)));
        assert_eq!(b.alloc(0x1000, 0x3000, None), Err(OutOfMemory));
        assert_eq!(b.alloc(0x1000, 0, None), Err(OutOfMemory));
        assert!(b.remaining().contains_range(a(0x2000), a(0x10_0000)));
    }

    #[test]
    fn below_limit_is_honoured() {
        let mut b = BumpAllocator::new(set(&[(0x1000, 0x3000), (0x10_0000, 0x20_0000)]));
        assert_eq!(b.alloc(0x2000, PAGE_SIZE, Some(a(0x3000))), Ok(a(0x1000)));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, Some(a(0x10_1000))), Ok(a(0x10_0000)));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, Some(a(0x10_1000))), Err(OutOfMemory));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, Some(a(0))), Err(OutOfMemory));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, None), Ok(a(0x10_1000)));
    }

    #[test]
    fn exhaustion_and_bad_requests_fail_without_change() {
        let mut b = BumpAllocator::new(set(&[(0x1000, 0x3000)]));
        assert_eq!(b.alloc(0x3000, PAGE_SIZE, None), Err(OutOfMemory));
        assert_eq!(b.alloc(u64::MAX, PAGE_SIZE, None), Err(OutOfMemory));
        assert_eq!(b.alloc(0x1000, 0x3000, None), Err(OutOfMemory));
        assert_eq!(b.remaining().total(), 0x2000);
        assert_eq!(b.alloc(0x2000, PAGE_SIZE, None), Ok(a(0x1000)));
        assert_eq!(b.alloc(1, PAGE_SIZE, None), Err(OutOfMemory));
        assert!(b.remaining().is_empty());
        assert_eq!(BumpAllocator::new(RangeSet::new()).alloc(1, PAGE_SIZE, None), Err(OutOfMemory));
    }

    #[test]
    fn unaligned_free_ranges_only_yield_whole_pages() {
        let mut b = BumpAllocator::new(set(&[(0x1800, 0x3800)]));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, None), Ok(a(0x2000)));
        assert_eq!(b.alloc(0x1000, PAGE_SIZE, None), Err(OutOfMemory));
    }

    #[test]
    fn full_free_set_reports_out_of_memory() {
        // Every allocation in the middle of a range splits it: fill the set.
        let ranges: Vec<_> =
            (0..MAX_RANGES as u64).map(|i| (i * 0x10_0000 + 0x1000, i * 0x10_0000 + 0x8_0000)).collect();
        let mut b = BumpAllocator::new(set(&ranges));
        let before = b.remaining().clone();
        assert_eq!(b.alloc(0x1000, 0x4_0000, None), Err(OutOfMemory));
        assert_eq!(b.remaining().ranges(), before.ranges());
        assert!(b.allocated().is_empty());
    }

    proptest! {
        #[test]
        fn allocations_never_overlap_and_stay_in_bounds(
            free in proptest::collection::vec((0u64..256, 1u64..32), 1..8),
            reqs in proptest::collection::vec((0u64..0x8000, 12u32..17, proptest::option::of(0u64..300)), 1..40),
        ) {
            let free: Vec<_> = free.iter().map(|&(s, l)| (s * 0x1000, (s + l) * 0x1000)).collect();
            let initial = set(&free);
            let mut b = BumpAllocator::new(initial.clone());
            let mut got: Vec<(u64, u64)> = Vec::new();
            for (size, align_shift, below) in reqs {
                let align = 1u64 << align_shift;
                let below = below.map(|p| a(p * 0x1000));
                let before = b.remaining().total();
                match b.alloc(size, align, below) {
                    Ok(start) => {
                        let len = size.max(1).next_multiple_of(PAGE_SIZE);
                        let (s, e) = (start.as_u64(), start.as_u64() + len);
                        prop_assert_eq!(s % align, 0);
                        prop_assert!(below.is_none_or(|l| e <= l.as_u64()));
                        prop_assert!(initial.contains_range(a(s), a(e)));
                        for &(os, oe) in &got {
                            prop_assert!(e <= os || oe <= s, "overlap");
                        }
                        // Lowest fit: no lower aligned start would have worked.
                        let mut probe = 0;
                        while probe < s {
                            let fits = b.remaining().contains_range(a(probe), a(probe + len))
                                && below.is_none_or(|l| probe + len <= l.as_u64());
                            prop_assert!(!fits, "{:#x} would have fitted below {:#x}", probe, s);
                            probe += align;
                        }
                        got.push((s, e));
                        prop_assert_eq!(b.remaining().total(), before - len);
                    }
                    Err(OutOfMemory) => prop_assert_eq!(b.remaining().total(), before),
                }
                prop_assert_eq!(b.remaining().total() + b.allocated().total(), initial.total());
                for &(s, e) in b.allocated().ranges() {
                    prop_assert!(!b.remaining().intersects(s, e));
                }
            }
        }
    }
}
