//! [`Cpu`] and [`CpuSet`]: physical CPU numbers and fixed-size sets of them.
//!
//! Affinities, the runqueue's idle and tickled masks and the CPUs a decision
//! asks keel to interrupt are all sets of physical CPUs. A set is a 256-bit
//! bitmap (no allocation, `Copy`), so it can be built from untrusted
//! toolstack input without failing: CPU numbers outside the bitmap are simply
//! never members.

use core::fmt;
use core::ops::{BitAnd, BitOr, Range, Sub};

/// How many physical CPUs a [`CpuSet`] can hold (CPU numbers `0..MAX_CPUS`).
pub const MAX_CPUS: u32 = 256;

const WORDS: usize = (MAX_CPUS / 64) as usize;

/// A physical CPU, by keel's logical CPU number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u32);

/// A set of physical CPUs numbered below [`MAX_CPUS`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    bits: [u64; WORDS],
}

/// Word index and bit mask of `cpu`, or `None` if it cannot be a member.
fn locate(cpu: Cpu) -> Option<(usize, u64)> {
    (cpu.0 < MAX_CPUS).then(|| ((cpu.0 / 64) as usize, 1u64 << (cpu.0 % 64)))
}

impl CpuSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { bits: [0; WORDS] }
    }

    /// Every CPU number a set can hold (`0..MAX_CPUS`).
    pub const fn all() -> Self {
        Self { bits: [u64::MAX; WORDS] }
    }

    /// The CPUs numbered in `range` (clipped to `0..MAX_CPUS`).
    pub fn range(range: Range<u32>) -> Self {
        range.map(Cpu).collect()
    }

    /// The set holding only `cpu` (empty if `cpu` is out of range).
    pub fn single(cpu: Cpu) -> Self {
        let mut set = Self::new();
        set.insert(cpu);
        set
    }

    /// Adds `cpu`; returns whether it was newly added. CPUs numbered
    /// [`MAX_CPUS`] or above are ignored (and `false` returned).
    pub fn insert(&mut self, cpu: Cpu) -> bool {
        match locate(cpu) {
            Some((w, m)) => {
                let new = self.bits[w] & m == 0;
                self.bits[w] |= m;
                new
            }
            None => false,
        }
    }

    /// Removes `cpu`; returns whether it was a member.
    pub fn remove(&mut self, cpu: Cpu) -> bool {
        match locate(cpu) {
            Some((w, m)) => {
                let was = self.bits[w] & m != 0;
                self.bits[w] &= !m;
                was
            }
            None => false,
        }
    }

    /// Whether `cpu` is a member.
    pub fn contains(&self, cpu: Cpu) -> bool {
        locate(cpu).is_some_and(|(w, m)| self.bits[w] & m != 0)
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// Number of members.
    pub fn len(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether every member of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        (*self - *other).is_empty()
    }

    /// Whether `self` and `other` have a member in common.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        !(*self & *other).is_empty()
    }

    /// The lowest-numbered member.
    pub fn first(&self) -> Option<Cpu> {
        self.first_from(0)
    }

    /// The lowest-numbered member that is `>= start`.
    fn first_from(&self, start: u32) -> Option<Cpu> {
        let mut w = (start / 64) as usize;
        let mut word = self.bits.get(w)? & (u64::MAX << (start % 64));
        loop {
            if word != 0 {
                return Some(Cpu(w as u32 * 64 + word.trailing_zeros()));
            }
            w += 1;
            word = *self.bits.get(w)?;
        }
    }

    /// The first member after `cpu` in the cyclic order `cpu+1, ...,
    /// MAX_CPUS-1, 0, ..., cpu`: `cpu` itself only if it is the sole member
    /// (Xen's `cpumask_cycle`).
    pub fn cycle(&self, cpu: Cpu) -> Option<Cpu> {
        cpu.0.checked_add(1).and_then(|next| self.first_from(next)).or_else(|| self.first())
    }

    /// `cpu` if it is a member, otherwise [`CpuSet::cycle`] from it.
    pub fn test_or_cycle(&self, cpu: Cpu) -> Option<Cpu> {
        if self.contains(cpu) {
            Some(cpu)
        } else {
            self.cycle(cpu)
        }
    }

    /// The members in increasing order.
    pub fn iter(&self) -> Iter {
        Iter { set: *self, next: 0 }
    }
}

impl BitAnd for CpuSet {
    type Output = CpuSet;

    /// Intersection.
    fn bitand(mut self, rhs: CpuSet) -> CpuSet {
        self.bits.iter_mut().zip(rhs.bits).for_each(|(a, b)| *a &= b);
        self
    }
}

impl BitOr for CpuSet {
    type Output = CpuSet;

    /// Union.
    fn bitor(mut self, rhs: CpuSet) -> CpuSet {
        self.bits.iter_mut().zip(rhs.bits).for_each(|(a, b)| *a |= b);
        self
    }
}

impl Sub for CpuSet {
    type Output = CpuSet;

    /// Difference: the members of `self` that are not in `rhs`.
    fn sub(mut self, rhs: CpuSet) -> CpuSet {
        self.bits.iter_mut().zip(rhs.bits).for_each(|(a, b)| *a &= !b);
        self
    }
}

impl FromIterator<Cpu> for CpuSet {
    fn from_iter<I: IntoIterator<Item = Cpu>>(iter: I) -> Self {
        let mut set = CpuSet::new();
        for cpu in iter {
            set.insert(cpu);
        }
        set
    }
}

impl fmt::Debug for CpuSet {
    /// Runs of consecutive CPUs as ranges: `{0-3, 8, 10-11}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut cpus = self.iter().map(|c| c.0).peekable();
        let mut first = true;
        while let Some(lo) = cpus.next() {
            let mut hi = lo;
            while cpus.next_if_eq(&(hi + 1)).is_some() {
                hi += 1;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if hi == lo {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        f.write_str("}")
    }
}

/// Iterator over the members of a [`CpuSet`], lowest first.
#[derive(Clone, Debug)]
pub struct Iter {
    set: CpuSet,
    next: u32,
}

impl Iterator for Iter {
    type Item = Cpu;

    fn next(&mut self) -> Option<Cpu> {
        let cpu = self.set.first_from(self.next)?;
        self.next = cpu.0 + 1;
        Some(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn out_of_range_cpus_are_never_members() {
        let mut set = CpuSet::new();
        assert!(!set.insert(Cpu(MAX_CPUS)));
        assert!(!set.insert(Cpu(u32::MAX)));
        assert!(set.is_empty());
        assert!(!CpuSet::all().contains(Cpu(MAX_CPUS)));
        assert_eq!(CpuSet::range(250..300).len(), 6);
        assert_eq!(CpuSet::single(Cpu(999)), CpuSet::new());
        assert!(!set.remove(Cpu(u32::MAX)));
    }

    #[test]
    fn cycle_wraps_and_returns_self_only_when_alone() {
        let set: CpuSet = [Cpu(1), Cpu(5), Cpu(200)].into_iter().collect();
        assert_eq!(set.cycle(Cpu(1)), Some(Cpu(5)));
        assert_eq!(set.cycle(Cpu(5)), Some(Cpu(200)));
        assert_eq!(set.cycle(Cpu(200)), Some(Cpu(1)));
        assert_eq!(set.cycle(Cpu(255)), Some(Cpu(1)));
        assert_eq!(set.cycle(Cpu(u32::MAX)), Some(Cpu(1)));
        assert_eq!(CpuSet::single(Cpu(7)).cycle(Cpu(7)), Some(Cpu(7)));
        assert_eq!(CpuSet::new().cycle(Cpu(0)), None);
        assert_eq!(set.test_or_cycle(Cpu(5)), Some(Cpu(5)));
        assert_eq!(set.test_or_cycle(Cpu(6)), Some(Cpu(200)));
    }

    #[test]
    fn debug_lists_members_as_ranges() {
        let set: CpuSet = [0, 1, 2, 3, 8, 10, 11, 64].into_iter().map(Cpu).collect();
        assert_eq!(alloc::format!("{set:?}"), "{0-3, 8, 10-11, 64}");
        assert_eq!(alloc::format!("{:?}", CpuSet::all()), "{0-255}");
        assert_eq!(alloc::format!("{:?}", CpuSet::new()), "{}");
    }

    fn cpus() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec(0u32..300, 0..40)
    }

    fn model(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().filter(|&c| c < MAX_CPUS).collect()
    }

    proptest! {
        #[test]
        fn set_operations_match_a_model(a in cpus(), b in cpus(), probe in 0u32..300) {
            let (sa, sb): (CpuSet, CpuSet) = (a.iter().map(|&c| Cpu(c)).collect(), b.iter().map(|&c| Cpu(c)).collect());
            let (ma, mb) = (model(&a), model(&b));
            let members = |s: CpuSet| s.iter().map(|c| c.0).collect::<BTreeSet<_>>();
            prop_assert_eq!(members(sa), ma.clone());
            prop_assert_eq!(members(sa & sb), ma.intersection(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(members(sa | sb), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(members(sa - sb), ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(sa.len() as usize, ma.len());
            prop_assert_eq!(sa.is_subset(&sb), ma.is_subset(&mb));
            prop_assert_eq!(sa.intersects(&sb), !ma.is_disjoint(&mb));
            prop_assert_eq!(sa.first().map(|c| c.0), ma.first().copied());
            prop_assert_eq!(sa.contains(Cpu(probe)), ma.contains(&probe));
            let expect_cycle = ma.range(probe.saturating_add(1)..).next().or(ma.first()).copied();
            prop_assert_eq!(sa.cycle(Cpu(probe)).map(|c| c.0), expect_cycle);
            let mut removed = sa;
            prop_assert_eq!(removed.remove(Cpu(probe)), ma.contains(&probe));
            prop_assert!(!removed.contains(Cpu(probe)));
        }
    }
}
