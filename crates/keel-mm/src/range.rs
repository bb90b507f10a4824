//! [`RangeSet`]: a fixed-capacity, sorted set of disjoint physical ranges.
//!
//! Before keel has a frame allocator it reasons about memory as sets of
//! ranges: the RAM from the sanitised map, minus keel's own image, the boot
//! modules, the boot loader's data and whatever the boot allocator handed
//! out. This type does that set arithmetic with no allocator, in a fixed
//! array. Every operation either succeeds completely or, when the result
//! would not fit, fails with [`CapacityError`] and leaves the set unchanged.

use core::fmt;

use crate::addr::PhysAddr;

/// Capacity of a [`RangeSet`] in ranges.
pub const MAX_RANGES: usize = 512;

/// The result of a [`RangeSet`] operation would need more than
/// [`MAX_RANGES`] ranges; the set was left unchanged.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub struct CapacityError;

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "range set is full ({MAX_RANGES} ranges)")
    }
}

/// Disjoint, sorted set of [start, end) physical ranges (fixed capacity, no alloc).
///
/// Invariant: `ranges()` is sorted, every range is non-empty, and ranges
/// neither overlap nor touch (touching ranges are merged).
#[derive(Clone)]
pub struct RangeSet {
    ranges: [(PhysAddr, PhysAddr); MAX_RANGES],
    len: usize,
}

const EMPTY: (PhysAddr, PhysAddr) = (PhysAddr::new(0), PhysAddr::new(0));

impl RangeSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { ranges: [EMPTY; MAX_RANGES], len: 0 }
    }

    /// Adds `[start, end)`, merging with overlapping and touching ranges.
    /// An empty range (`start >= end`) is a no-op.
    pub fn insert(&mut self, start: PhysAddr, end: PhysAddr) -> Result<(), CapacityError> {
        if start >= end {
            return Ok(());
        }
        let set = self.ranges();
        // Ranges [i, j) overlap or touch the new one.
        let i = set.partition_point(|r| r.1 < start);
        let j = set.partition_point(|r| r.0 <= end);
        if i == j {
            if self.len == MAX_RANGES {
                return Err(CapacityError);
            }
            self.ranges.copy_within(i..self.len, i + 1);
            self.ranges[i] = (start, end);
            self.len += 1;
        } else {
            let merged = (start.min(set[i].0), end.max(set[j - 1].1));
            self.ranges[i] = merged;
            self.ranges.copy_within(j..self.len, i + 1);
            self.len -= j - i - 1;
        }
        Ok(())
    }

    /// Removes `[start, end)`, splitting a range if the hole is inside it.
    /// An empty range (`start >= end`) is a no-op.
    pub fn remove(&mut self, start: PhysAddr, end: PhysAddr) -> Result<(), CapacityError> {
        if start >= end {
            return Ok(());
        }
        let set = self.ranges();
        // Ranges [i, j) overlap the hole.
        let i = set.partition_point(|r| r.1 <= start);
        let j = set.partition_point(|r| r.0 < end);
        if i >= j {
            return Ok(());
        }
        let left = (set[i].0 < start).then_some((set[i].0, start));
        let right = (set[j - 1].1 > end).then_some((end, set[j - 1].1));
        let keep = usize::from(left.is_some()) + usize::from(right.is_some());
        let new_len = self.len - (j - i) + keep;
        if new_len > MAX_RANGES {
            return Err(CapacityError);
        }
        self.ranges.copy_within(j..self.len, i + keep);
        for (at, piece) in (i..).zip([left, right].into_iter().flatten()) {
            self.ranges[at] = piece;
        }
        self.len = new_len;
        Ok(())
    }

    /// The ranges, sorted by address.
    pub fn ranges(&self) -> &[(PhysAddr, PhysAddr)] {
        &self.ranges[..self.len]
    }

    /// Total bytes in the set. Cannot overflow: the ranges are disjoint.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(|&(s, e)| e.as_u64() - s.as_u64()).sum()
    }

    /// True if all of `[start, end)` is in the set (an empty range always is).
    pub fn contains_range(&self, start: PhysAddr, end: PhysAddr) -> bool {
        if start >= end {
            return true;
        }
        let set = self.ranges();
        let i = set.partition_point(|r| r.1 <= start);
        set.get(i).is_some_and(|r| r.0 <= start && end <= r.1)
    }

    /// True if `[start, end)` shares at least one byte with the set.
    pub fn intersects(&self, start: PhysAddr, end: PhysAddr) -> bool {
        if start >= end {
            return false;
        }
        let set = self.ranges();
        let i = set.partition_point(|r| r.1 <= start);
        set.get(i).is_some_and(|r| r.0 < end)
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ranges().iter().map(|&(s, e)| s..e)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn a(x: u64) -> PhysAddr {
        PhysAddr::new(x)
    }

    fn raw(set: &RangeSet) -> Vec<(u64, u64)> {
        set.ranges().iter().map(|&(s, e)| (s.as_u64(), e.as_u64())).collect()
    }

    #[test]
    fn insert_merges_overlapping_and_touching() {
        let mut s = RangeSet::new();
        s.insert(a(10), a(20)).unwrap();
        s.insert(a(30), a(40)).unwrap();
        s.insert(a(0), a(5)).unwrap();
        assert_eq!(raw(&s), vec![(0, 5), (10, 20), (30, 40)]);
        s.insert(a(20), a(30)).unwrap(); // touches both neighbours
        assert_eq!(raw(&s), vec![(0, 5), (10, 40)]);
        s.insert(a(3), a(12)).unwrap(); // overlaps both
        assert_eq!(raw(&s), vec![(0, 40)]);
        s.insert(a(50), a(50)).unwrap(); // empty
        s.insert(a(60), a(55)).unwrap(); // reversed = empty
        assert_eq!(raw(&s), vec![(0, 40)]);
        assert_eq!(s.total(), 40);
    }

    #[test]
    fn remove_splits_and_trims() {
        let mut s = RangeSet::new();
        s.insert(a(0), a(100)).unwrap();
        s.remove(a(40), a(60)).unwrap();
        assert_eq!(raw(&s), vec![(0, 40), (60, 100)]);
        s.remove(a(30), a(70)).unwrap(); // trims both
        assert_eq!(raw(&s), vec![(0, 30), (70, 100)]);
        s.remove(a(0), a(30)).unwrap(); // whole range
        assert_eq!(raw(&s), vec![(70, 100)]);
        s.remove(a(0), a(10)).unwrap(); // nothing there
        s.remove(a(90), a(80)).unwrap(); // reversed = empty
        assert_eq!(raw(&s), vec![(70, 100)]);
        s.remove(a(0), a(u64::MAX)).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn contains_and_intersects() {
        let mut s = RangeSet::new();
        s.insert(a(0x1000), a(0x3000)).unwrap();
        s.insert(a(0x5000), a(0x6000)).unwrap();
        assert!(s.contains_range(a(0x1000), a(0x3000)));
        assert!(s.contains_range(a(0x2000), a(0x2800)));
        assert!(!s.contains_range(a(0x2000), a(0x5800)));
        assert!(!s.contains_range(a(0x0), a(0x1001)));
        assert!(s.contains_range(a(0x9000), a(0x9000)));
        assert!(s.intersects(a(0x2fff), a(0x5000)));
        assert!(!s.intersects(a(0x3000), a(0x5000)));
    }

    #[test]
    fn capacity_errors_leave_the_set_unchanged() {
        let mut s = RangeSet::new();
        for i in 0..MAX_RANGES as u64 {
            s.insert(a(i * 10), a(i * 10 + 5)).unwrap();
        }
        let before = raw(&s);
        assert_eq!(s.insert(a(10_000), a(10_001)), Err(CapacityError));
        assert_eq!(s.remove(a(1), a(2)), Err(CapacityError)); // would split
        assert_eq!(raw(&s), before);
        // Operations that do not grow the set still work when full.
        s.insert(a(5), a(10)).unwrap();
        assert_eq!(s.ranges().len(), MAX_RANGES - 1);
        s.remove(a(0), a(1)).unwrap();
        s.remove(a(20), a(25)).unwrap();
        assert_eq!(s.ranges().len(), MAX_RANGES - 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64, u64),
    }

    const MODEL_BYTES: u64 = 256;

    fn arb_op() -> impl Strategy<Value = Op> {
        (any::<bool>(), 0..=MODEL_BYTES, 0..=MODEL_BYTES).prop_map(|(ins, s, e)| {
            if ins {
                Op::Insert(s, e)
            } else {
                Op::Remove(s, e)
            }
        })
    }

    fn model_ranges(bits: &[bool]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
            let i = i as u64;
            match out.last_mut() {
                Some(last) if last.1 == i => last.1 = i + 1,
                _ => out.push((i, i + 1)),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_a_bitmap_model(ops in proptest::collection::vec(arb_op(), 0..64)) {
            let mut set = RangeSet::new();
            let mut bits = [false; MODEL_BYTES as usize];
            for op in ops {
                let (s, e, v) = match op {
                    Op::Insert(s, e) => (s, e, true),
                    Op::Remove(s, e) => (s, e, false),
                };
                if v {
                    set.insert(a(s), a(e)).unwrap();
                } else {
                    set.remove(a(s), a(e)).unwrap();
                }
                for b in bits.iter_mut().take(e as usize).skip(s as usize) {
                    *b = v;
                }
                prop_assert_eq!(raw(&set), model_ranges(&bits));
                prop_assert_eq!(set.total(), bits.iter().filter(|b| **b).count() as u64);
            }
            for s in 0..MODEL_BYTES {
                for e in s + 1..=MODEL_BYTES.min(s + 16) {
                    let all = bits[s as usize..e as usize].iter().all(|b| *b);
                    let any = bits[s as usize..e as usize].iter().any(|b| *b);
                    prop_assert_eq!(set.contains_range(a(s), a(e)), all);
                    prop_assert_eq!(set.intersects(a(s), a(e)), any);
                }
            }
        }
    }
}
