//! [`VectorSet`]: a 256-bit set of interrupt vectors laid out like the APIC's
//! IRR, ISR and TMR (eight 32-bit words, vector `v` at bit `v % 32` of word
//! `v / 32`), so register reads are plain word reads.

/// A set of interrupt vectors.
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct VectorSet([u32; 8]);

impl VectorSet {
    /// The empty set.
    pub(crate) const fn new() -> Self {
        Self([0; 8])
    }

    const fn split(vector: u8) -> (usize, u32) {
        ((vector / 32) as usize, 1 << (vector % 32))
    }

    /// Whether `vector` is in the set.
    pub(crate) fn contains(&self, vector: u8) -> bool {
        let (word, bit) = Self::split(vector);
        self.0[word] & bit != 0
    }

    /// Adds `vector`.
    pub(crate) fn insert(&mut self, vector: u8) {
        let (word, bit) = Self::split(vector);
        self.0[word] |= bit;
    }

    /// Removes `vector`; returns whether it was there.
    pub(crate) fn remove(&mut self, vector: u8) -> bool {
        let (word, bit) = Self::split(vector);
        let was = self.0[word] & bit != 0;
        self.0[word] &= !bit;
        was
    }

    /// The highest vector in the set (the highest priority), if any.
    pub(crate) fn highest(&self) -> Option<u8> {
        self.0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u32 * 32 + (31 - w.leading_zeros())) as u8)
    }

    /// Register word `index` (`0..8`); 0 for any other index.
    pub(crate) fn word(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }

    /// Whether the set is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[test]
    fn layout_matches_the_apic_registers() {
        let mut s = VectorSet::new();
        s.insert(0x31);
        s.insert(0xFF);
        assert_eq!(s.word(1), 1 << 17);
        assert_eq!(s.word(7), 1 << 31);
        assert_eq!(s.word(8), 0);
        assert_eq!(s.highest(), Some(0xFF));
        assert!(s.remove(0xFF));
        assert!(!s.remove(0xFF));
        assert_eq!(s.highest(), Some(0x31));
        assert!(s.remove(0x31));
        assert!(s.is_empty());
        assert_eq!(s.highest(), None);
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), any::<u8>()), 0..64)) {
            let mut s = VectorSet::new();
            let mut model = BTreeSet::new();
            for (add, v) in ops {
                if add {
                    s.insert(v);
                    model.insert(v);
                } else {
                    prop_assert_eq!(s.remove(v), model.remove(&v));
                }
                prop_assert_eq!(s.highest(), model.iter().next_back().copied());
                prop_assert_eq!(s.is_empty(), model.is_empty());
                let all: Vec<u8> = (0..=255u8).filter(|v| s.contains(*v)).collect();
                prop_assert_eq!(all, model.iter().copied().collect::<Vec<_>>());
            }
        }
    }
}
