//! The mapper's maptrack: what each grant handle it was given names.
//!
//! Handles index a table that grows [`MAPTRACK_PER_FRAME`] entries at a time (Xen allocates a
//! maptrack frame at a time) up to the domain's maximum. Free entries form one FIFO list: a
//! freed handle goes to the tail and is reused last, so a stale handle the guest still holds is
//! unlikely to name a new mapping soon (Xen keeps per-vCPU lists with the same discipline).

use alloc::vec::Vec;

use keel_mm::{Gfn, Pfn};
use xen_abi::{DomId, GrantHandle, GrantRef};

use crate::{Access, MAPTRACK_PER_FRAME};

/// One live mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The granting domain.
    pub granter: DomId,
    /// The grant mapped.
    pub gref: GrantRef,
    /// Read-only or writable.
    pub access: Access,
    /// The mapper's guest frame the grant is mapped at.
    pub host_gfn: Gfn,
    /// The host frame mapped there.
    pub mfn: Pfn,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Free { next: Option<u32> },
    Live(Mapping),
}

/// The maptrack.
pub(crate) struct Maptrack {
    slots: Vec<Slot>,
    head: Option<u32>,
    tail: Option<u32>,
    max_slots: u32,
    live: usize,
    /// Every live handle is below this, so teardown scans each slot once in all.
    live_below: usize,
}

impl Maptrack {
    /// An empty maptrack that may grow to `max_frames` frames of entries.
    pub(crate) fn new(max_frames: u32) -> Option<Self> {
        let max_slots = max_frames.checked_mul(MAPTRACK_PER_FRAME)?;
        Some(Self { slots: Vec::new(), head: None, tail: None, max_slots, live: 0, live_below: 0 })
    }

    /// Handles below this have been allocated at some point (Xen's `maptrack_limit`).
    pub(crate) fn limit(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Makes sure a handle is free, growing the maptrack if needed; false if it is full.
    pub(crate) fn make_room(&mut self) -> bool {
        if self.head.is_none() {
            self.grow();
        }
        self.head.is_some()
    }

    /// Takes a free handle and records `mapping` under it; `None` if the maptrack is full.
    pub(crate) fn insert(&mut self, mapping: Mapping) -> Option<GrantHandle> {
        if !self.make_room() {
            return None;
        }
        let handle = self.head?;
        let slot = self.slots.get_mut(usize::try_from(handle).ok()?)?;
        let Slot::Free { next } = *slot else { return None };
        *slot = Slot::Live(mapping);
        self.live_below = self.live_below.max(handle as usize + 1);
        self.head = next;
        if next.is_none() {
            self.tail = None;
        }
        self.live += 1;
        Some(GrantHandle(handle))
    }

    /// Adds one frame's worth of free entries, if the maximum and memory allow.
    fn grow(&mut self) {
        let have = self.limit();
        let add = MAPTRACK_PER_FRAME.min(self.max_slots.saturating_sub(have));
        if add == 0 || self.slots.try_reserve(add as usize).is_err() {
            return;
        }
        for i in have..have + add {
            let next = if i + 1 < have + add { Some(i + 1) } else { None };
            self.slots.push(Slot::Free { next });
        }
        self.link_tail(have, have + add - 1);
    }

    /// Appends the chain `first..=last` (already linked, `last` ending it) to the free list.
    fn link_tail(&mut self, first: u32, last: u32) {
        match self.tail.and_then(|t| self.slots.get_mut(t as usize)) {
            Some(Slot::Free { next }) => *next = Some(first),
            _ => self.head = Some(first),
        }
        self.tail = Some(last);
    }

    pub(crate) fn get(&self, handle: GrantHandle) -> Option<Mapping> {
        match self.slots.get(usize::try_from(handle.0).ok()?)? {
            Slot::Live(m) => Some(*m),
            Slot::Free { .. } => None,
        }
    }

    /// Frees a live handle, putting it at the tail of the free list (reused last).
    pub(crate) fn remove(&mut self, handle: GrantHandle) -> Option<Mapping> {
        let mapping = self.take(handle)?;
        if let Some(slot) = self.slots.get_mut(handle.0 as usize) {
            *slot = Slot::Free { next: None };
        }
        self.link_tail(handle.0, handle.0);
        Some(mapping)
    }

    /// Frees a live handle, putting it back at the head of the free list so the next
    /// allocation returns it again: undoes the [`Maptrack::insert`] that gave it.
    pub(crate) fn unwind(&mut self, handle: GrantHandle) -> Option<Mapping> {
        let mapping = self.take(handle)?;
        let old_head = self.head;
        if let Some(slot) = self.slots.get_mut(handle.0 as usize) {
            *slot = Slot::Free { next: old_head };
        }
        self.head = Some(handle.0);
        if old_head.is_none() {
            self.tail = Some(handle.0);
        }
        Some(mapping)
    }

    fn take(&mut self, handle: GrantHandle) -> Option<Mapping> {
        let mapping = self.get(handle)?;
        self.live -= 1;
        Some(mapping)
    }

    /// The highest live handle (Xen's teardown walks down too), for teardown.
    pub(crate) fn last_live(&mut self) -> Option<GrantHandle> {
        let end = self.live_below.min(self.slots.len());
        let found = self.slots.get(..end)?.iter().rposition(|s| matches!(s, Slot::Live(_)));
        self.live_below = found.map_or(0, |i| i + 1);
        Some(GrantHandle(u32::try_from(found?).ok()?))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (GrantHandle, Mapping)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Live(m) => Some((GrantHandle(u32::try_from(i).ok()?), *m)),
            Slot::Free { .. } => None,
        })
    }

    /// Checks the free list and counters against the slots (for tests).
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let mut seen = std::vec![false; self.slots.len()];
        let mut cur = self.head;
        let mut last = None;
        let mut free = 0;
        while let Some(h) = cur {
            let i = h as usize;
            match self.slots.get(i) {
                Some(Slot::Free { next }) => {
                    if seen[i] {
                        return Err("free list loops");
                    }
                    seen[i] = true;
                    free += 1;
                    last = Some(h);
                    cur = *next;
                }
                _ => return Err("free list reaches a live or missing slot"),
            }
        }
        if last != self.tail {
            return Err("tail is not the end of the free list");
        }
        let live = self.slots.iter().filter(|s| matches!(s, Slot::Live(_))).count();
        if live != self.live || live + free != self.slots.len() {
            return Err("counts disagree");
        }
        if self.slots.len() > self.max_slots as usize {
            return Err("over the maximum");
        }
        if self.slots.iter().skip(self.live_below).any(|s| matches!(s, Slot::Live(_))) {
            return Err("a live handle above the teardown hint");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: u32) -> Mapping {
        Mapping {
            granter: DomId(1),
            gref: GrantRef(i),
            access: Access::ReadOnly,
            host_gfn: Gfn::new(u64::from(i)),
            mfn: Pfn::new(u64::from(i) + 100),
        }
    }

    #[test]
    fn grows_a_frame_at_a_time_up_to_the_maximum() {
        let mut t = Maptrack::new(2).unwrap();
        assert_eq!(t.limit(), 0);
        for i in 0..2 * MAPTRACK_PER_FRAME {
            assert_eq!(t.insert(m(i)), Some(GrantHandle(i)));
            assert_eq!(t.limit(), (i / MAPTRACK_PER_FRAME + 1) * MAPTRACK_PER_FRAME);
        }
        assert_eq!(t.insert(m(0)), None);
        assert_eq!(t.live(), 512);
        t.check().unwrap();
        assert_eq!(t.remove(GrantHandle(7)), Some(m(7)));
        assert_eq!(t.insert(m(99)), Some(GrantHandle(7)));
        assert_eq!(t.get(GrantHandle(7)), Some(m(99)));
        t.check().unwrap();
    }

    #[test]
    fn zero_frames_means_no_handles() {
        let mut t = Maptrack::new(0).unwrap();
        assert_eq!(t.insert(m(0)), None);
        assert!(Maptrack::new(u32::MAX).is_none());
    }

    #[test]
    fn freed_handles_are_reused_last() {
        let mut t = Maptrack::new(1).unwrap();
        let a = t.insert(m(1)).unwrap();
        let b = t.insert(m(2)).unwrap();
        assert_eq!((a, b), (GrantHandle(0), GrantHandle(1)));
        t.remove(a).unwrap();
        assert_eq!(t.remove(a), None, "double free");
        assert_eq!(t.get(a), None);
        // Handle 0 went to the tail: the rest of the frame comes first.
        for i in 2..MAPTRACK_PER_FRAME {
            assert_eq!(t.insert(m(i)), Some(GrantHandle(i)));
        }
        assert_eq!(t.insert(m(0)), Some(GrantHandle(0)));
        assert_eq!(t.insert(m(0)), None);
        t.check().unwrap();
    }

    #[test]
    fn unwind_restores_the_allocation_order() {
        let mut t = Maptrack::new(1).unwrap();
        let a = t.insert(m(1)).unwrap();
        let b = t.insert(m(2)).unwrap();
        t.unwind(b).unwrap();
        assert_eq!(t.insert(m(3)), Some(b));
        t.remove(a).unwrap();
        t.check().unwrap();
        assert_eq!(t.last_live(), Some(b));
        assert_eq!(t.iter().collect::<std::vec::Vec<_>>(), std::vec![(b, m(3))]);
    }

    #[test]
    fn teardown_walks_down_and_sees_new_handles() {
        let mut t = Maptrack::new(2).unwrap();
        for i in 0..300 {
            t.insert(m(i)).unwrap();
        }
        assert_eq!(t.last_live(), Some(GrantHandle(299)));
        t.remove(GrantHandle(299)).unwrap();
        t.remove(GrantHandle(5)).unwrap();
        assert_eq!(t.last_live(), Some(GrantHandle(298)));
        t.check().unwrap();
        // A mapping made meanwhile (at a freed, higher handle) is still found.
        for i in 300..512 {
            t.insert(m(i)).unwrap();
        }
        assert_eq!(t.insert(m(0)), Some(GrantHandle(299)));
        assert_eq!(t.last_live(), Some(GrantHandle(511)));
        let mut n = 0;
        while let Some(h) = t.last_live() {
            t.remove(h).unwrap();
            n += 1;
        }
        assert_eq!(n, 511, "all but the freed handle 5");
        assert_eq!(t.live(), 0);
        t.check().unwrap();
    }

    #[test]
    fn unwind_on_a_full_table() {
        let mut t = Maptrack::new(1).unwrap();
        for i in 0..MAPTRACK_PER_FRAME {
            t.insert(m(i)).unwrap();
        }
        t.unwind(GrantHandle(255)).unwrap();
        t.check().unwrap();
        assert_eq!(t.insert(m(0)), Some(GrantHandle(255)));
        t.check().unwrap();
    }
}
