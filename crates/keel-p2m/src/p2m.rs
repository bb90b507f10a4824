//! [`P2m`]: one domain's nested page tables, and the operations keel performs on them.
//!
//! The tables live in frames obtained through [`TableMemory`], so this code never touches memory
//! itself: keel backs it with its frame allocator and direct map, the tests with a vector. Table
//! levels are walked by hand (at most four steps), and every operation keeps two invariants:
//! every entry decodes as one of keel's ([`Entry::Invalid`] never appears), and every table but
//! the root holds at least one entry.

use core::ops::Range;

use keel_mm::{Gfn, Pfn};

use crate::entry::{decode_entry, encode_leaf, encode_table, Access, Entry, Level, Mapping, P2mType};
use crate::{P2mError, MAX_GFN_BITS};

/// Entries per table.
const ENTRIES: usize = 512;
/// First gfn the p2m cannot map.
const GFN_END: u64 = 1 << MAX_GFN_BITS;
/// Largest range [`P2m::unmap`] takes: one 1 GiB page.
const MAX_UNMAP_ORDER: u8 = 18;

/// Where table frames come from and how they are read and written: keel's frame allocator and
/// direct map, or a fake in tests. A table is 512 `u64` entries in one 4 KiB frame.
///
/// The CPU may walk a table while it is being changed, so [`TableMemory::write`] must be a
/// single 64-bit store (no tearing) and frames must not be reused before the flush described
/// at [`TableMemory::free_table`].
pub trait TableMemory {
    /// A zeroed 4 KiB frame for a new table, or `None` if there is none (or the domain's quota
    /// of table frames is used up).
    fn alloc_table(&mut self) -> Option<Pfn>;

    /// Takes back a table frame the p2m no longer links to. CPUs that ran the domain may still
    /// cache entries of it until the domain's next TLB flush: the implementation must not reuse
    /// the frame before then.
    fn free_table(&mut self, table: Pfn);

    /// Entry `index` (below 512) of `table`.
    fn read(&self, table: Pfn, index: usize) -> u64;

    /// Sets entry `index` (below 512) of `table` to `value`, in one store.
    fn write(&mut self, table: Pfn, index: usize, value: u64);
}

/// Where the walk for one gfn ends.
enum Walk {
    /// At a leaf: entry `index` of `table`, at `level`, holds `mapping`.
    Leaf { level: Level, table: Pfn, index: usize, mapping: Mapping },
    /// At an empty entry: nothing is mapped there.
    Hole,
    /// At an entry keel did not write.
    Corrupt,
}

/// Where one step of a walk sits: entry `index` of `parent` points at `table`.
#[derive(Clone, Copy)]
struct Link {
    parent: Pfn,
    index: usize,
    table: Pfn,
}

/// A domain's p2m: nested page tables rooted at [`P2m::root`], and counts of what they hold.
///
/// The tables are only reachable through the [`TableMemory`] passed to each call; always pass
/// the same one. Dropping a `P2m` without [`P2m::destroy`] leaks its tables.
#[derive(Debug)]
#[must_use = "a P2m owns table frames: give them back with P2m::destroy"]
pub struct P2m {
    root: Pfn,
    /// 4 KiB frames covered by leaves.
    mapped: u64,
    /// Table frames, including the root.
    tables: u64,
}

/// Checks that `[gfn, gfn + 2^order)` is naturally aligned and translatable (the caller has
/// checked `order <= 18`, so an aligned `gfn` below [`GFN_END`] has its whole range below it).
fn check_range(gfn: Gfn, order: u8) -> Result<(), P2mError> {
    if !gfn.is_aligned(order) {
        return Err(P2mError::Misaligned);
    }
    if gfn.as_u64() >= GFN_END {
        return Err(P2mError::OutOfRange { gfn });
    }
    Ok(())
}

/// True if every entry of `table` is 0.
fn is_empty(mem: &dyn TableMemory, table: Pfn) -> bool {
    (0..ENTRIES).all(|index| mem.read(table, index) == 0)
}

impl P2m {
    /// An empty p2m: a zeroed root table.
    ///
    /// # Errors
    /// [`P2mError::OutOfMemory`] if no frame is available for the root.
    pub fn new(mem: &mut dyn TableMemory) -> Result<Self, P2mError> {
        let root = mem.alloc_table().ok_or(P2mError::OutOfMemory)?;
        Ok(Self { root, mapped: 0, tables: 1 })
    }

    /// The root table's frame, for the VMCB's nCR3.
    pub fn root(&self) -> Pfn {
        self.root
    }

    /// Number of 4 KiB guest frames mapped (a 2 MiB leaf counts 512), including mappings with
    /// [`Access::None`].
    pub fn mapped_frames(&self) -> u64 {
        self.mapped
    }

    /// Number of frames used by the tables themselves, including the root.
    pub fn table_frames(&self) -> u64 {
        self.tables
    }

    /// Maps the `2^order` frames from `mfn` at `gfn` (order 0, 9 or 18; both frame numbers
    /// naturally aligned), allocating tables as needed.
    ///
    /// # Errors
    /// [`P2mError::BadOrder`], [`P2mError::Misaligned`], [`P2mError::OutOfRange`] and
    /// [`P2mError::MfnOutOfRange`] for bad arguments; [`P2mError::AlreadyMapped`] if any frame
    /// of the range is mapped (unmap first, so every removed frame is accounted for);
    /// [`P2mError::OutOfMemory`]; [`P2mError::Corrupt`]. Nothing changes on error.
    pub fn map(
        &mut self,
        mem: &mut dyn TableMemory,
        gfn: Gfn,
        mfn: Pfn,
        order: u8,
        access: Access,
        kind: P2mType,
    ) -> Result<(), P2mError> {
        let mapping = Mapping { mfn, order, access, kind };
        mapping.validate()?;
        check_range(gfn, order)?;
        let level = Level::for_leaf_order(order).ok_or(P2mError::BadOrder)?;
        let (table, index) = self.descend(mem, gfn, level)?;
        match decode_entry(mem.read(table, index), level) {
            Entry::Empty => {}
            // With no empty tables, a table here means something is mapped below it.
            Entry::Table(_) | Entry::Leaf(_) => return Err(P2mError::AlreadyMapped),
            Entry::Invalid => return Err(P2mError::Corrupt { gfn }),
        }
        mem.write(table, index, encode_leaf(mapping));
        self.mapped += mapping.frames();
        Ok(())
    }

    /// Removes every mapping in `[gfn, gfn + 2^order)` (order at most 18, `gfn` naturally
    /// aligned). A large page only partly inside the range is split first, and the rest of it
    /// stays mapped. Calls `removed` once per removed leaf, in gfn order, with its first gfn
    /// and its mapping, so the caller can release the frames (after flushing the TLBs). Tables
    /// left empty are freed. Holes inside the range are fine.
    ///
    /// # Errors
    /// [`P2mError::BadOrder`], [`P2mError::Misaligned`], [`P2mError::OutOfRange`] for bad
    /// arguments; [`P2mError::NotMapped`] if nothing in the range was mapped;
    /// [`P2mError::OutOfMemory`] if splitting needed a table there was none for;
    /// [`P2mError::Corrupt`]. Nothing is removed on error. Entries that do not decode are left
    /// in place and not reported.
    pub fn unmap(
        &mut self,
        mem: &mut dyn TableMemory,
        gfn: Gfn,
        order: u8,
        removed: &mut dyn FnMut(Gfn, Mapping),
    ) -> Result<(), P2mError> {
        if order > MAX_UNMAP_ORDER {
            return Err(P2mError::BadOrder);
        }
        check_range(gfn, order)?;
        // Ranges and leaves are both naturally aligned, so the only leaf that can straddle the
        // range is one containing all of it.
        self.split_down_to(mem, gfn, order)?;
        let gfns = gfn.as_u64()..gfn.as_u64() + (1 << order);
        let removed_frames = self.clear(mem, self.root, Level::Pml4, 0, &gfns, removed);
        if removed_frames == 0 {
            return Err(P2mError::NotMapped);
        }
        Ok(())
    }

    /// Sets the 4 KiB entry for `gfn` to `new` (`None` removes it) and returns the mapping it
    /// replaced, as a 4 KiB mapping. A large page containing `gfn` is split first, so only this
    /// frame changes; with `new == None` and nothing mapped, nothing happens. Used to overlay
    /// keel's frames (shared_info, grant table) on guest-chosen gfns and to move them.
    ///
    /// # Errors
    /// [`P2mError::BadOrder`] if `new` is not a 4 KiB mapping; [`P2mError::MfnOutOfRange`],
    /// [`P2mError::OutOfRange`] for bad arguments; [`P2mError::OutOfMemory`];
    /// [`P2mError::Corrupt`]. No translation changes on error.
    pub fn replace(
        &mut self,
        mem: &mut dyn TableMemory,
        gfn: Gfn,
        new: Option<Mapping>,
    ) -> Result<Option<Mapping>, P2mError> {
        if let Some(mapping) = new {
            if mapping.order != 0 {
                return Err(P2mError::BadOrder);
            }
            mapping.validate()?;
        }
        check_range(gfn, 0)?;
        let Some(mapping) = new else {
            return self.remove_page(mem, gfn);
        };
        self.split_down_to(mem, gfn, 0)?;
        let (table, index) = self.descend(mem, gfn, Level::Pt)?;
        let old = match decode_entry(mem.read(table, index), Level::Pt) {
            Entry::Empty => None,
            Entry::Leaf(old) => Some(old),
            Entry::Table(_) | Entry::Invalid => return Err(P2mError::Corrupt { gfn }),
        };
        mem.write(table, index, encode_leaf(mapping));
        if old.is_none() {
            self.mapped += 1;
        }
        Ok(old)
    }

    /// The mapping containing `gfn`, with `mfn` adjusted to `gfn`'s own frame (so for a large
    /// page, `mfn` is generally not aligned to `order`). `None` if nothing is mapped there or
    /// `gfn` is out of range.
    pub fn lookup(&self, mem: &dyn TableMemory, gfn: Gfn) -> Option<Mapping> {
        if gfn.as_u64() >= GFN_END {
            return None;
        }
        match self.walk(mem, gfn) {
            Walk::Leaf { mapping, .. } => {
                let offset = gfn.as_u64() & (mapping.frames() - 1);
                Some(Mapping { mfn: Pfn::new(mapping.mfn.as_u64() + offset), ..mapping })
            }
            Walk::Hole | Walk::Corrupt => None,
        }
    }

    /// Splits the large page containing `gfn` into 512 pages of the next size down (a 1 GiB
    /// page into 2 MiB pages, a 2 MiB page into 4 KiB pages), with the same frames, access and
    /// type. Translations do not change.
    ///
    /// # Errors
    /// [`P2mError::OutOfRange`]; [`P2mError::NotMapped`] if nothing is mapped at `gfn`;
    /// [`P2mError::NotLarge`] if it is a 4 KiB page; [`P2mError::OutOfMemory`];
    /// [`P2mError::Corrupt`].
    pub fn split(&mut self, mem: &mut dyn TableMemory, gfn: Gfn) -> Result<(), P2mError> {
        check_range(gfn, 0)?;
        match self.walk(mem, gfn) {
            Walk::Leaf { table, index, mapping, .. } => self.split_leaf(mem, table, index, mapping),
            Walk::Hole => Err(P2mError::NotMapped),
            Walk::Corrupt => Err(P2mError::Corrupt { gfn }),
        }
    }

    /// Calls `f` for every leaf, in gfn order, with its first gfn and its mapping.
    pub fn for_each(&self, mem: &dyn TableMemory, f: &mut dyn FnMut(Gfn, Mapping)) {
        Self::visit(mem, self.root, Level::Pml4, 0, f);
    }

    /// Tears the p2m down: reports every leaf as [`P2m::for_each`] would, then frees every
    /// table including the root. No CPU may be running on these tables. (A table reachable
    /// only through an entry that does not decode, which [`P2m::check_invariants`] would
    /// report, cannot be found and is not freed.)
    pub fn destroy(self, mem: &mut dyn TableMemory, removed: &mut dyn FnMut(Gfn, Mapping)) {
        Self::teardown(mem, self.root, Level::Pml4, 0, removed);
        mem.free_table(self.root);
    }

    /// Walks every table and checks keel's invariants: every entry decodes, no table but the
    /// root is empty, and the counters match the tables. For tests and keel's debug checks.
    ///
    /// # Errors
    /// A description of the first violation found.
    pub fn check_invariants(&self, mem: &dyn TableMemory) -> Result<(), &'static str> {
        let mut counts = (0, 1);
        Self::check_table(mem, self.root, Level::Pml4, &mut counts)?;
        if counts.0 != self.mapped {
            return Err("mapped-frame count does not match the leaves");
        }
        if counts.1 != self.tables {
            return Err("table count does not match the tables");
        }
        Ok(())
    }

    /// Follows `gfn`'s path from the root to the leaf or hole it ends at.
    fn walk(&self, mem: &dyn TableMemory, gfn: Gfn) -> Walk {
        let mut table = self.root;
        let mut level = Level::Pml4;
        loop {
            let index = level.index(gfn.as_u64());
            match decode_entry(mem.read(table, index), level) {
                Entry::Leaf(mapping) => return Walk::Leaf { level, table, index, mapping },
                Entry::Empty => return Walk::Hole,
                Entry::Invalid => return Walk::Corrupt,
                Entry::Table(next) => {
                    let Some(below) = level.below() else { return Walk::Corrupt };
                    table = next;
                    level = below;
                }
            }
        }
    }

    /// The tables on `gfn`'s path below the root, top down, and how many there are.
    fn path(&self, mem: &dyn TableMemory, gfn: Gfn) -> ([Option<Link>; 3], usize) {
        let mut links = [None; 3];
        let mut depth = 0;
        let mut parent = self.root;
        let mut level = Level::Pml4;
        while let (Some(below), Some(slot)) = (level.below(), links.get_mut(depth)) {
            let index = level.index(gfn.as_u64());
            let Entry::Table(table) = decode_entry(mem.read(parent, index), level) else { break };
            *slot = Some(Link { parent, index, table });
            depth += 1;
            parent = table;
            level = below;
        }
        (links, depth)
    }

    /// Frees the tables on `gfn`'s path that are empty, bottom up.
    fn prune(&mut self, mem: &mut dyn TableMemory, gfn: Gfn) {
        let (links, _) = self.path(mem, gfn);
        for link in links.iter().rev().flatten() {
            if !is_empty(mem, link.table) {
                break;
            }
            mem.write(link.parent, link.index, 0);
            mem.free_table(link.table);
            self.tables -= 1;
        }
    }

    /// The table and index of `gfn`'s entry at `target`, creating missing tables on the way.
    /// Fails with [`P2mError::AlreadyMapped`] at a leaf above `target`; on any failure the
    /// tables it created are freed again.
    fn descend(&mut self, mem: &mut dyn TableMemory, gfn: Gfn, target: Level) -> Result<(Pfn, usize), P2mError> {
        let mut table = self.root;
        let mut level = Level::Pml4;
        while level != target {
            // The walk starts at the root and target is a leaf level, so there is a level below.
            let Some(below) = level.below() else { return Err(P2mError::Corrupt { gfn }) };
            let index = level.index(gfn.as_u64());
            let next = match decode_entry(mem.read(table, index), level) {
                Entry::Table(next) => Ok(next),
                Entry::Empty => match mem.alloc_table() {
                    Some(new) => {
                        mem.write(table, index, encode_table(new));
                        self.tables += 1;
                        Ok(new)
                    }
                    None => Err(P2mError::OutOfMemory),
                },
                Entry::Leaf(_) => Err(P2mError::AlreadyMapped),
                Entry::Invalid => Err(P2mError::Corrupt { gfn }),
            };
            table = match next {
                Ok(next) => next,
                Err(e) => {
                    self.prune(mem, gfn);
                    return Err(e);
                }
            };
            level = below;
        }
        Ok((table, target.index(gfn.as_u64())))
    }

    /// Replaces the large leaf `mapping` (entry `index` of `table`) by a table of
    /// 512 leaves of the next size down. The new table is complete before it is linked, so a
    /// CPU walking concurrently sees either the old leaf or the new table.
    fn split_leaf(
        &mut self,
        mem: &mut dyn TableMemory,
        table: Pfn,
        index: usize,
        mapping: Mapping,
    ) -> Result<(), P2mError> {
        let Some(order) = mapping.order.checked_sub(9) else {
            return Err(P2mError::NotLarge);
        };
        let new = mem.alloc_table().ok_or(P2mError::OutOfMemory)?;
        for i in 0..ENTRIES {
            // The leaf decoded, so mfn < 2^40 and this cannot overflow.
            let mfn = Pfn::new(mapping.mfn.as_u64() + ((i as u64) << order));
            mem.write(new, i, encode_leaf(Mapping { mfn, order, ..mapping }));
        }
        mem.write(table, index, encode_table(new));
        self.tables += 1;
        Ok(())
    }

    /// Splits the leaf containing `gfn` until it is no larger than `2^order` frames.
    fn split_down_to(&mut self, mem: &mut dyn TableMemory, gfn: Gfn, order: u8) -> Result<(), P2mError> {
        loop {
            match self.walk(mem, gfn) {
                Walk::Leaf { table, index, mapping, .. } if mapping.order > order => {
                    self.split_leaf(mem, table, index, mapping)?;
                }
                Walk::Corrupt => return Err(P2mError::Corrupt { gfn }),
                Walk::Leaf { .. } | Walk::Hole => return Ok(()),
            }
        }
    }

    /// Removes the 4 KiB mapping at `gfn` (splitting a large page around it) and returns it.
    fn remove_page(&mut self, mem: &mut dyn TableMemory, gfn: Gfn) -> Result<Option<Mapping>, P2mError> {
        self.split_down_to(mem, gfn, 0)?;
        match self.walk(mem, gfn) {
            Walk::Leaf { level: Level::Pt, table, index, mapping } => {
                mem.write(table, index, 0);
                self.mapped -= 1;
                self.prune(mem, gfn);
                Ok(Some(mapping))
            }
            Walk::Hole => Ok(None),
            Walk::Leaf { .. } | Walk::Corrupt => Err(P2mError::Corrupt { gfn }),
        }
    }

    /// Removes the leaves of `table` (at `level`, covering gfns from `base`) that lie in `gfns`,
    /// a non-empty range that intersects the table, and frees tables left empty. Returns the
    /// number of frames removed.
    fn clear(
        &mut self,
        mem: &mut dyn TableMemory,
        table: Pfn,
        level: Level,
        base: u64,
        gfns: &Range<u64>,
        removed: &mut dyn FnMut(Gfn, Mapping),
    ) -> u64 {
        let span = 1u64 << level.entry_order();
        let first = (gfns.start.max(base) - base) / span;
        let last = (gfns.end.min(base + span * ENTRIES as u64) - 1 - base) / span;
        let mut frames = 0;
        for index in first..=last {
            let entry_base = base + index * span;
            // index <= last < 512.
            let index = index as usize;
            match decode_entry(mem.read(table, index), level) {
                Entry::Leaf(mapping) if gfns.start <= entry_base && entry_base + span <= gfns.end => {
                    mem.write(table, index, 0);
                    self.mapped -= mapping.frames();
                    frames += mapping.frames();
                    removed(Gfn::new(entry_base), mapping);
                }
                Entry::Table(child) => {
                    let Some(below) = level.below() else { continue };
                    frames += self.clear(mem, child, below, entry_base, gfns, removed);
                    if is_empty(mem, child) {
                        mem.write(table, index, 0);
                        mem.free_table(child);
                        self.tables -= 1;
                    }
                }
                // A straddling leaf was split by the caller; holes and foreign entries stay.
                Entry::Leaf(_) | Entry::Empty | Entry::Invalid => {}
            }
        }
        frames
    }

    /// Calls `f` for each leaf under `table` (at `level`, covering gfns from `base`).
    fn visit(mem: &dyn TableMemory, table: Pfn, level: Level, base: u64, f: &mut dyn FnMut(Gfn, Mapping)) {
        let span = 1u64 << level.entry_order();
        for index in 0..ENTRIES {
            let entry_base = base + index as u64 * span;
            match decode_entry(mem.read(table, index), level) {
                Entry::Leaf(mapping) => f(Gfn::new(entry_base), mapping),
                Entry::Table(child) => {
                    if let Some(below) = level.below() {
                        Self::visit(mem, child, below, entry_base, f);
                    }
                }
                Entry::Empty | Entry::Invalid => {}
            }
        }
    }

    /// Reports each leaf under `table` and frees the tables below it (not `table` itself).
    fn teardown(mem: &mut dyn TableMemory, table: Pfn, level: Level, base: u64, removed: &mut dyn FnMut(Gfn, Mapping)) {
        let span = 1u64 << level.entry_order();
        for index in 0..ENTRIES {
            let entry_base = base + index as u64 * span;
            match decode_entry(mem.read(table, index), level) {
                Entry::Leaf(mapping) => removed(Gfn::new(entry_base), mapping),
                Entry::Table(child) => {
                    if let Some(below) = level.below() {
                        Self::teardown(mem, child, below, entry_base, removed);
                        mem.free_table(child);
                    }
                }
                Entry::Empty | Entry::Invalid => {}
            }
        }
    }

    /// Checks the tables under `table` (at `level`), adding their leaf frames and tables to
    /// `counts`.
    fn check_table(
        mem: &dyn TableMemory,
        table: Pfn,
        level: Level,
        counts: &mut (u64, u64),
    ) -> Result<(), &'static str> {
        for index in 0..ENTRIES {
            match decode_entry(mem.read(table, index), level) {
                Entry::Empty => {}
                Entry::Invalid => return Err("an entry does not decode"),
                Entry::Leaf(mapping) => counts.0 += mapping.frames(),
                Entry::Table(child) => {
                    let Some(below) = level.below() else { return Err("a table below a page table") };
                    if is_empty(mem, child) {
                        return Err("an empty table is still linked");
                    }
                    counts.1 += 1;
                    Self::check_table(mem, child, below, counts)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::fake::FakeMemory;
    use crate::{decode_pte, MAX_MFN_BITS};

    const GIB: u64 = 1 << 18;
    const MIB2: u64 = 512;

    fn g(gfn: u64) -> Gfn {
        Gfn::new(gfn)
    }

    fn m(mfn: u64) -> Pfn {
        Pfn::new(mfn)
    }

    fn setup() -> (FakeMemory, P2m) {
        let mut mem = FakeMemory::new();
        let p2m = P2m::new(&mut mem).unwrap();
        (mem, p2m)
    }

    fn leaves(p2m: &P2m, mem: &FakeMemory) -> Vec<(Gfn, Mapping)> {
        let mut out = Vec::new();
        p2m.for_each(mem, &mut |gfn, mapping| out.push((gfn, mapping)));
        out
    }

    fn unmap_collect(
        p2m: &mut P2m,
        mem: &mut FakeMemory,
        gfn: u64,
        order: u8,
    ) -> Result<Vec<(Gfn, Mapping)>, P2mError> {
        let mut out = Vec::new();
        p2m.unmap(mem, g(gfn), order, &mut |gfn, mapping| out.push((gfn, mapping)))?;
        Ok(out)
    }

    fn ram(mfn: u64, order: u8) -> Mapping {
        Mapping { mfn: m(mfn), order, access: Access::RWX, kind: P2mType::Ram }
    }

    /// Checks the invariants and that the fake's live tables are exactly the p2m's.
    fn check(p2m: &P2m, mem: &FakeMemory) {
        p2m.check_invariants(mem).unwrap();
        assert_eq!(mem.live() as u64, p2m.table_frames());
    }

    fn destroy_all(p2m: P2m, mem: &mut FakeMemory) -> Vec<(Gfn, Mapping)> {
        let mut out = Vec::new();
        p2m.destroy(mem, &mut |gfn, mapping| out.push((gfn, mapping)));
        assert_eq!(mem.live(), 0, "destroy frees every table");
        out
    }

    #[test]
    fn new_p2m_is_empty() {
        let (mem, p2m) = setup();
        assert_eq!(p2m.table_frames(), 1);
        assert_eq!(p2m.mapped_frames(), 0);
        assert_eq!(mem.live(), 1);
        assert!((0..ENTRIES).all(|i| mem.read(p2m.root(), i) == 0));
        assert_eq!(p2m.lookup(&mem, g(0)), None);
        assert!(leaves(&p2m, &mem).is_empty());
        let mut none = FakeMemory::new();
        none.set_limit(0);
        assert_eq!(P2m::new(&mut none).unwrap_err(), P2mError::OutOfMemory);
    }

    #[test]
    fn map_and_lookup_each_size() {
        let (mut mem, mut p2m) = setup();
        // 4 KiB: root, PDPT, PD and PT.
        p2m.map(&mut mem, g(0x1234), m(0x5678), 0, Access::RW, P2mType::SharedInfo).unwrap();
        let page = Mapping { mfn: m(0x5678), order: 0, access: Access::RW, kind: P2mType::SharedInfo };
        assert_eq!(p2m.lookup(&mem, g(0x1234)), Some(page));
        assert_eq!(p2m.lookup(&mem, g(0x1233)), None);
        assert_eq!(p2m.lookup(&mem, g(0x1235)), None);
        assert_eq!((p2m.mapped_frames(), p2m.table_frames()), (1, 4));
        check(&p2m, &mem);

        // 2 MiB in another 1 GiB region: a new PDPT entry and PD.
        let base = 3 * GIB + 7 * MIB2;
        p2m.map(&mut mem, g(base), m(0x40_0000), 9, Access::R, P2mType::Mmio).unwrap();
        let large = Mapping { mfn: m(0x40_0005), order: 9, access: Access::R, kind: P2mType::Mmio };
        assert_eq!(p2m.lookup(&mem, g(base + 5)), Some(large));
        assert_eq!(p2m.lookup(&mem, g(base + 511)).unwrap().mfn, m(0x40_01ff));
        assert_eq!(p2m.lookup(&mem, g(base + 512)), None);
        assert_eq!(p2m.lookup(&mem, g(base - 1)), None);
        assert_eq!((p2m.mapped_frames(), p2m.table_frames()), (1 + 512, 5));

        // 1 GiB in another 512 GiB region: a new PML4 entry and PDPT.
        let huge = (5 << 27) | (9 * GIB);
        p2m.map(&mut mem, g(huge), m(7 * GIB), 18, Access::None, P2mType::ForeignMap).unwrap();
        let got = p2m.lookup(&mem, g(huge + GIB - 1)).unwrap();
        assert_eq!(got, Mapping { mfn: m(8 * GIB - 1), order: 18, access: Access::None, kind: P2mType::ForeignMap });
        assert_eq!((p2m.mapped_frames(), p2m.table_frames()), (1 + 512 + GIB, 6));
        check(&p2m, &mem);

        // The highest gfn and the highest mfn work.
        let top = (1 << MAX_GFN_BITS) - 1;
        let top_mfn = (1 << MAX_MFN_BITS) - 1;
        p2m.map(&mut mem, g(top), m(top_mfn), 0, Access::RX, P2mType::Ram).unwrap();
        assert_eq!(p2m.lookup(&mem, g(top)), Some(Mapping::page(m(top_mfn), Access::RX, P2mType::Ram)));

        assert_eq!(
            leaves(&p2m, &mem),
            vec![
                (g(0x1234), page),
                (g(base), Mapping { mfn: m(0x40_0000), ..large }),
                (g(huge), Mapping { mfn: m(7 * GIB), ..got }),
                (g(top), Mapping::page(m(top_mfn), Access::RX, P2mType::Ram)),
            ]
        );
        let reported = destroy_all(p2m, &mut mem);
        assert_eq!(reported.len(), 4);
    }

    #[test]
    fn the_cpu_sees_user_tables_and_leaves() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(0x201), m(0x99), 0, Access::R, P2mType::Ram).unwrap();
        // Walk by hand as the CPU would.
        let mut table = p2m.root();
        for level in [Level::Pml4, Level::Pdpt, Level::Pd] {
            let pte = mem.read(table, level.index(0x201));
            assert_eq!(pte & 0x7, 0x7, "{level}: present, writable, user");
            assert_eq!(pte & (crate::bits::NX | crate::bits::LARGE), 0, "{level}");
            table = Pfn::new((pte & crate::bits::ADDR) >> 12);
        }
        let pte = mem.read(table, 1);
        assert_eq!(pte & 0x7, 0x5, "present, read-only, user");
        assert_ne!(pte & crate::bits::NX, 0);
        assert_eq!(decode_pte(pte, Level::Pt), Some(Mapping::page(m(0x99), Access::R, P2mType::Ram)));
    }

    #[test]
    fn bad_arguments_change_nothing() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(0), m(0), 9, Access::RW, P2mType::Ram).unwrap();
        let before = leaves(&p2m, &mem);
        let cases = [
            (0x400, 0x400, 1, P2mError::BadOrder),
            (0x400, 0x400, 10, P2mError::BadOrder),
            (0, 0, 27, P2mError::BadOrder),
            (0, 0, 255, P2mError::BadOrder),
            (0x401, 0x400, 9, P2mError::Misaligned),
            (0x400, 0x401, 9, P2mError::Misaligned),
            (GIB + MIB2, 0, 18, P2mError::Misaligned),
            (GIB, MIB2, 18, P2mError::Misaligned),
            (1 << MAX_GFN_BITS, 0, 0, P2mError::OutOfRange { gfn: g(1 << MAX_GFN_BITS) }),
            (u64::MAX, 0, 0, P2mError::OutOfRange { gfn: g(u64::MAX) }),
            (!0 << 18, 0, 18, P2mError::OutOfRange { gfn: g(!0 << 18) }),
            (0x400, 1 << MAX_MFN_BITS, 0, P2mError::MfnOutOfRange { mfn: m(1 << MAX_MFN_BITS) }),
            (0x400, !0x1ff, 9, P2mError::MfnOutOfRange { mfn: m(!0x1ff) }),
        ];
        for (gfn, mfn, order, err) in cases {
            assert_eq!(
                p2m.map(&mut mem, g(gfn), m(mfn), order, Access::RW, P2mType::Ram),
                Err(err),
                "{gfn:#x} {order}"
            );
        }
        for (gfn, order, err) in [
            (0, 19, P2mError::BadOrder),
            (0, 255, P2mError::BadOrder),
            (1, 1, P2mError::Misaligned),
            (0x100, 9, P2mError::Misaligned),
            (1 << MAX_GFN_BITS, 0, P2mError::OutOfRange { gfn: g(1 << MAX_GFN_BITS) }),
            (u64::MAX, 0, P2mError::OutOfRange { gfn: g(u64::MAX) }),
        ] {
            assert_eq!(unmap_collect(&mut p2m, &mut mem, gfn, order), Err(err), "{gfn:#x} {order}");
        }
        assert_eq!(p2m.split(&mut mem, g(u64::MAX)), Err(P2mError::OutOfRange { gfn: g(u64::MAX) }));
        assert_eq!(p2m.replace(&mut mem, g(1 << 40), None), Err(P2mError::OutOfRange { gfn: g(1 << 40) }));
        assert_eq!(p2m.replace(&mut mem, g(0x400), Some(ram(0x200, 9))), Err(P2mError::BadOrder));
        assert_eq!(
            p2m.replace(&mut mem, g(0x400), Some(ram(1 << MAX_MFN_BITS, 0))),
            Err(P2mError::MfnOutOfRange { mfn: m(1 << MAX_MFN_BITS) })
        );
        assert_eq!(p2m.lookup(&mem, g(u64::MAX)), None);
        assert_eq!(p2m.lookup(&mem, g(1 << MAX_GFN_BITS)), None);
        assert_eq!(leaves(&p2m, &mem), before);
        assert_eq!(p2m.mapped_frames(), 512);
        check(&p2m, &mem);
    }

    #[test]
    fn overlapping_maps_are_refused() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(MIB2), m(0), 9, Access::RW, P2mType::Ram).unwrap();
        p2m.map(&mut mem, g(5 * MIB2 + 3), m(0), 0, Access::RW, P2mType::Ram).unwrap();
        p2m.map(&mut mem, g(2 * GIB), m(0), 18, Access::RW, P2mType::Ram).unwrap();
        let before = leaves(&p2m, &mem);
        let tables = mem.live();
        for (gfn, order) in [
            (MIB2, 9),               // the same 2 MiB
            (MIB2 + 17, 0),          // a 4 KiB page inside it
            (0, 18),                 // a 1 GiB page over it
            (5 * MIB2 + 3, 0),       // the same 4 KiB page
            (5 * MIB2, 9),           // a 2 MiB page over it
            (2 * GIB, 18),           // the same 1 GiB page
            (2 * GIB + 1, 0),        // a 4 KiB page inside it
            (2 * GIB + 3 * MIB2, 9), // a 2 MiB page inside it
        ] {
            assert_eq!(
                p2m.map(&mut mem, g(gfn), m(0), order, Access::R, P2mType::Ram),
                Err(P2mError::AlreadyMapped),
                "{gfn:#x} {order}"
            );
        }
        assert_eq!(leaves(&p2m, &mem), before);
        assert_eq!(mem.live(), tables);
        check(&p2m, &mem);
    }

    #[test]
    fn unmapping_a_whole_large_page_frees_its_tables() {
        let (mut mem, mut p2m) = setup();
        let large = ram(0x80_0000, 9);
        p2m.map(&mut mem, g(3 * MIB2), large.mfn, 9, large.access, large.kind).unwrap();
        assert_eq!(mem.live(), 3);
        assert_eq!(unmap_collect(&mut p2m, &mut mem, 3 * MIB2, 9), Ok(vec![(g(3 * MIB2), large)]));
        assert_eq!(p2m.mapped_frames(), 0);
        assert_eq!(mem.live(), 1, "PD and PDPT freed, root kept");
        check(&p2m, &mem);
        assert_eq!(unmap_collect(&mut p2m, &mut mem, 3 * MIB2, 9), Err(P2mError::NotMapped));

        let huge = ram(GIB, 18);
        p2m.map(&mut mem, g(GIB), huge.mfn, 18, huge.access, huge.kind).unwrap();
        assert_eq!(unmap_collect(&mut p2m, &mut mem, GIB, 18), Ok(vec![(g(GIB), huge)]));
        assert_eq!((p2m.mapped_frames(), mem.live()), (0, 1));
    }

    #[test]
    fn unmapping_part_of_a_2m_page_keeps_the_rest() {
        let (mut mem, mut p2m) = setup();
        let base = 7 * MIB2;
        p2m.map(&mut mem, g(base), m(0x20_0000), 9, Access::RW, P2mType::Ram).unwrap();
        let removed = unmap_collect(&mut p2m, &mut mem, base + 100, 0).unwrap();
        assert_eq!(removed, vec![(g(base + 100), Mapping::page(m(0x20_0064), Access::RW, P2mType::Ram))]);
        assert_eq!(p2m.mapped_frames(), 511);
        assert_eq!(p2m.table_frames(), 4, "a page table replaced the 2 MiB leaf");
        for i in 0..512 {
            let got = p2m.lookup(&mem, g(base + i));
            if i == 100 {
                assert_eq!(got, None);
            } else {
                assert_eq!(
                    got,
                    Some(Mapping { mfn: m(0x20_0000 + i), order: 0, access: Access::RW, kind: P2mType::Ram })
                );
            }
        }
        check(&p2m, &mem);

        // A 32-frame run from the split page: 32 reports, in order.
        let removed = unmap_collect(&mut p2m, &mut mem, base + 64, 5).unwrap();
        let gfns: Vec<u64> = removed.iter().map(|(gfn, _)| gfn.as_u64()).collect();
        assert_eq!(gfns, (base + 64..base + 96).collect::<Vec<_>>());
        assert_eq!(p2m.mapped_frames(), 511 - 32);

        // Removing the rest (with the hole at 100) frees the page table again.
        let removed = unmap_collect(&mut p2m, &mut mem, base, 9).unwrap();
        assert_eq!(removed.len(), 511 - 32);
        assert_eq!((p2m.mapped_frames(), mem.live()), (0, 1));
        check(&p2m, &mem);
    }

    #[test]
    fn unmapping_a_4k_page_of_a_1g_page_splits_twice() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(GIB), m(3 * GIB), 18, Access::RX, P2mType::Mmio).unwrap();
        let hole = GIB + 5 * MIB2 + 9;
        let removed = unmap_collect(&mut p2m, &mut mem, hole, 0).unwrap();
        assert_eq!(
            removed,
            vec![(
                g(hole),
                Mapping { mfn: m(3 * GIB + 5 * MIB2 + 9), order: 0, access: Access::RX, kind: P2mType::Mmio }
            )]
        );
        assert_eq!(p2m.mapped_frames(), GIB - 1);
        assert_eq!(p2m.table_frames(), 4);
        let at = |gfn: u64| p2m.lookup(&mem, g(gfn)).map(|x| (x.mfn.as_u64() - 3 * GIB + GIB, x.order));
        assert_eq!(at(GIB), Some((GIB, 9)));
        assert_eq!(at(hole - 1), Some((hole - 1, 0)));
        assert_eq!(at(hole), None);
        assert_eq!(at(hole + 1), Some((hole + 1, 0)));
        assert_eq!(at(GIB + 5 * MIB2 + 511), Some((GIB + 5 * MIB2 + 511, 0)));
        assert_eq!(at(GIB + 6 * MIB2), Some((GIB + 6 * MIB2, 9)));
        assert_eq!(at(2 * GIB - 1), Some((2 * GIB - 1, 9)));
        assert_eq!(leaves(&p2m, &mem).len(), 511 + 511);
        check(&p2m, &mem);
    }

    #[test]
    fn unmapping_a_2m_run_of_a_1g_page_splits_once() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(0), m(0), 18, Access::RW, P2mType::Ram).unwrap();
        let removed = unmap_collect(&mut p2m, &mut mem, 8 * MIB2, 12).unwrap();
        assert_eq!(removed.len(), 8);
        assert!(removed.iter().all(|(gfn, x)| x.order == 9 && x.mfn.as_u64() == gfn.as_u64()));
        assert_eq!(p2m.mapped_frames(), GIB - 8 * MIB2);
        assert_eq!(p2m.table_frames(), 3);
        assert_eq!(p2m.lookup(&mem, g(8 * MIB2 - 1)).map(|x| x.order), Some(9));
        assert_eq!(p2m.lookup(&mem, g(16 * MIB2)).map(|x| x.mfn), Some(m(16 * MIB2)));
        check(&p2m, &mem);
    }

    #[test]
    fn unmapping_a_mixed_range_reports_each_leaf_once() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(7), m(70), 0, Access::R, P2mType::GrantTable).unwrap();
        p2m.map(&mut mem, g(0), m(1), 0, Access::R, P2mType::Ram).unwrap();
        p2m.map(&mut mem, g(MIB2), m(0x1000), 9, Access::RW, P2mType::Ram).unwrap();
        p2m.map(&mut mem, g(2 * MIB2), m(0x2000), 9, Access::RW, P2mType::Ram).unwrap();
        let removed = unmap_collect(&mut p2m, &mut mem, 0, 10).unwrap();
        let gfns: Vec<u64> = removed.iter().map(|(gfn, _)| gfn.as_u64()).collect();
        assert_eq!(gfns, vec![0, 7, MIB2]);
        assert_eq!(removed[1].1, Mapping::page(m(70), Access::R, P2mType::GrantTable));
        assert_eq!(p2m.mapped_frames(), 512);
        assert_eq!(p2m.table_frames(), 3, "the page table for the first 2 MiB is gone");
        check(&p2m, &mem);
    }

    #[test]
    fn unmapping_nothing_is_an_error() {
        let (mut mem, mut p2m) = setup();
        assert_eq!(unmap_collect(&mut p2m, &mut mem, 0, 18), Err(P2mError::NotMapped));
        p2m.map(&mut mem, g(5), m(5), 0, Access::R, P2mType::Ram).unwrap();
        assert_eq!(unmap_collect(&mut p2m, &mut mem, 4, 0), Err(P2mError::NotMapped));
        assert_eq!(unmap_collect(&mut p2m, &mut mem, MIB2, 9), Err(P2mError::NotMapped));
        assert_eq!(p2m.mapped_frames(), 1);
        check(&p2m, &mem);
    }

    #[test]
    fn running_out_of_tables_changes_no_translation() {
        let (mut mem, mut p2m) = setup();
        // Mapping needs three tables; with two available, both are given back.
        mem.allow(2);
        assert_eq!(p2m.map(&mut mem, g(0x1234), m(1), 0, Access::R, P2mType::Ram), Err(P2mError::OutOfMemory));
        assert_eq!((mem.live(), p2m.table_frames()), (1, 1));
        mem.unlimited();
        p2m.map(&mut mem, g(0), m(0), 18, Access::RW, P2mType::Ram).unwrap();
        check(&p2m, &mem);

        // Unmapping a 4 KiB page of a 1 GiB page needs two tables; with one, the 1 GiB page is
        // split into 2 MiB pages but nothing is removed.
        mem.allow(1);
        assert_eq!(unmap_collect(&mut p2m, &mut mem, 0x777, 0), Err(P2mError::OutOfMemory));
        assert_eq!(p2m.mapped_frames(), GIB);
        for gfn in [0, 0x776, 0x777, 0x778, GIB - 1] {
            assert_eq!(p2m.lookup(&mem, g(gfn)).map(|x| x.mfn), Some(m(gfn)));
        }
        check(&p2m, &mem);

        mem.allow(0);
        assert_eq!(p2m.replace(&mut mem, g(0x777), None), Err(P2mError::OutOfMemory));
        assert_eq!(p2m.replace(&mut mem, g(0x777), Some(ram(9, 0))), Err(P2mError::OutOfMemory));
        assert_eq!(p2m.split(&mut mem, g(0x777)), Err(P2mError::OutOfMemory));
        assert_eq!(p2m.replace(&mut mem, g(GIB), Some(ram(9, 0))), Err(P2mError::OutOfMemory));
        assert_eq!(p2m.lookup(&mem, g(0x777)).map(|x| (x.mfn, x.order)), Some((m(0x777), 9)));
        assert_eq!(p2m.lookup(&mem, g(GIB)), None);
        assert_eq!(p2m.mapped_frames(), GIB);
        check(&p2m, &mem);
        mem.unlimited();
        assert_eq!(destroy_all(p2m, &mut mem).len(), 512);
    }

    #[test]
    fn replace_swaps_one_frame() {
        let (mut mem, mut p2m) = setup();
        let shared_info = Mapping::page(m(0xabc), Access::RW, P2mType::SharedInfo);

        // Onto an empty gfn: like a map.
        assert_eq!(p2m.replace(&mut mem, g(0x10), Some(shared_info)), Ok(None));
        assert_eq!(p2m.lookup(&mem, g(0x10)), Some(shared_info));
        assert_eq!(p2m.mapped_frames(), 1);

        // Onto a 4 KiB RAM page: returns the page.
        p2m.map(&mut mem, g(0x11), m(0x111), 0, Access::RWX, P2mType::Ram).unwrap();
        assert_eq!(p2m.replace(&mut mem, g(0x11), Some(shared_info)), Ok(Some(ram(0x111, 0))));
        assert_eq!(p2m.lookup(&mem, g(0x11)), Some(shared_info));
        assert_eq!(p2m.mapped_frames(), 2);

        // Moving it: remove the old place.
        assert_eq!(p2m.replace(&mut mem, g(0x10), None), Ok(Some(shared_info)));
        assert_eq!(p2m.lookup(&mem, g(0x10)), None);
        assert_eq!(p2m.replace(&mut mem, g(0x10), None), Ok(None));
        assert_eq!(p2m.mapped_frames(), 1);

        // Into a 2 MiB page: split, the old 4 KiB piece comes back.
        p2m.map(&mut mem, g(4 * MIB2), m(0x4_0000), 9, Access::RWX, P2mType::Ram).unwrap();
        assert_eq!(p2m.replace(&mut mem, g(4 * MIB2 + 3), Some(shared_info)), Ok(Some(ram(0x4_0003, 0))));
        assert_eq!(p2m.lookup(&mem, g(4 * MIB2 + 3)), Some(shared_info));
        assert_eq!(p2m.lookup(&mem, g(4 * MIB2 + 4)), Some(ram(0x4_0004, 0)));
        assert_eq!(p2m.mapped_frames(), 1 + 512);
        check(&p2m, &mem);

        // Removing the last page of a table frees the tables.
        assert_eq!(p2m.replace(&mut mem, g(0x11), None), Ok(Some(shared_info)));
        assert_eq!(p2m.table_frames(), 4, "root, PDPT, PD and the split page's table");
        check(&p2m, &mem);
    }

    #[test]
    fn split_keeps_every_translation() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(GIB), m(5 * GIB), 18, Access::R, P2mType::ForeignGrant).unwrap();
        let probes = [GIB, GIB + 1, GIB + 3 * MIB2 + 77, 2 * GIB - 1];
        let before: Vec<_> = probes.iter().map(|&gfn| p2m.lookup(&mem, g(gfn)).unwrap()).collect();

        p2m.split(&mut mem, g(GIB + 3 * MIB2 + 77)).unwrap();
        let after = leaves(&p2m, &mem);
        assert_eq!(after.len(), 512);
        for (i, (gfn, x)) in after.iter().enumerate() {
            assert_eq!(gfn.as_u64(), GIB + i as u64 * MIB2);
            assert_eq!(
                *x,
                Mapping { mfn: m(5 * GIB + i as u64 * MIB2), order: 9, access: Access::R, kind: P2mType::ForeignGrant }
            );
        }
        p2m.split(&mut mem, g(GIB + 3 * MIB2 + 77)).unwrap();
        assert_eq!(leaves(&p2m, &mem).len(), 511 + 512);
        assert_eq!(p2m.split(&mut mem, g(GIB + 3 * MIB2 + 77)), Err(P2mError::NotLarge));
        assert_eq!(p2m.split(&mut mem, g(0)), Err(P2mError::NotMapped));

        for (&gfn, old) in probes.iter().zip(before) {
            let new = p2m.lookup(&mem, g(gfn)).unwrap();
            assert_eq!((new.mfn, new.access, new.kind), (old.mfn, old.access, old.kind));
        }
        assert_eq!(p2m.mapped_frames(), GIB);
        assert_eq!(p2m.table_frames(), 4);
        check(&p2m, &mem);
    }

    #[test]
    fn for_each_and_destroy_report_every_leaf_once_in_order() {
        let (mut mem, mut p2m) = setup();
        let spots = [(9 * GIB, 18), (3, 0), (1 << 35, 0), (MIB2, 9), (2, 0), (GIB + MIB2, 9)];
        for (i, &(gfn, order)) in spots.iter().enumerate() {
            p2m.map(&mut mem, g(gfn), m((i as u64) << 18), order, Access::RW, P2mType::Ram).unwrap();
        }
        let all = leaves(&p2m, &mem);
        let gfns: Vec<u64> = all.iter().map(|(gfn, _)| gfn.as_u64()).collect();
        assert_eq!(gfns, vec![2, 3, MIB2, GIB + MIB2, 9 * GIB, 1 << 35]);
        check(&p2m, &mem);
        assert_eq!(destroy_all(p2m, &mut mem), all);
    }

    #[test]
    fn churning_scattered_gfns_does_not_grow_the_tables() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(0), m(0), 0, Access::RW, P2mType::Ram).unwrap();
        for i in 1..200u64 {
            let gfn = i.wrapping_mul(0x9e37_79b9) & ((1 << MAX_GFN_BITS) - 1);
            p2m.map(&mut mem, g(gfn), m(i), 0, Access::RW, P2mType::ForeignGrant).unwrap();
            p2m.unmap(&mut mem, g(gfn), 0, &mut |_, _| {}).unwrap();
            assert_eq!(mem.live(), 4);
        }
        check(&p2m, &mem);
    }

    #[test]
    fn corrupt_entries_are_never_followed() {
        let (mut mem, mut p2m) = setup();
        p2m.map(&mut mem, g(MIB2), m(0), 9, Access::RW, P2mType::Ram).unwrap();
        // An entry keel never writes (a global bit) in the root's second slot.
        mem.write(p2m.root(), 1, 1 << 8 | 1);
        let far = 1 << 27;
        assert_eq!(p2m.lookup(&mem, g(far)), None);
        assert_eq!(p2m.map(&mut mem, g(far), m(0), 0, Access::R, P2mType::Ram), Err(P2mError::Corrupt { gfn: g(far) }));
        assert_eq!(p2m.split(&mut mem, g(far)), Err(P2mError::Corrupt { gfn: g(far) }));
        assert_eq!(p2m.replace(&mut mem, g(far), None), Err(P2mError::Corrupt { gfn: g(far) }));
        assert_eq!(unmap_collect(&mut p2m, &mut mem, far, 0), Err(P2mError::Corrupt { gfn: g(far) }));
        assert!(p2m.check_invariants(&mem).is_err());
        assert_eq!(leaves(&p2m, &mem).len(), 1);
        mem.write(p2m.root(), 1, 0);
        check(&p2m, &mem);
        assert_eq!(destroy_all(p2m, &mut mem).len(), 1);
    }
}
