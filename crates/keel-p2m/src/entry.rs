//! The nested-page-table entry format: what a p2m mapping looks like to the CPU, and how keel
//! reads its own information back out of an entry.
//!
//! Under AMD nested paging the CPU walks the p2m as an ordinary x86-64 4-level page table, with
//! every guest access treated as a *user* access. A leaf entry therefore has:
//!
//! | bits  | meaning                                                                        |
//! |-------|--------------------------------------------------------------------------------|
//! | 0     | Present: set unless the access is [`Access::None`]                             |
//! | 1     | Writable: only for [`Access::RW`] and [`Access::RWX`]                          |
//! | 2     | User: always (a supervisor-only nested entry would fault every guest access)   |
//! | 3, 4  | PWT, PCD: always 0, so with PAT index 0 the host memory type is WB             |
//! | 5, 6  | Accessed, Dirty: preset on present leaves, so the walker never writes the table |
//! | 7     | PS (large page) on 2 MiB (PD) and 1 GiB (PDPT) leaves, present or not          |
//! | 12-51 | the host frame (for large pages bit 12 is PAT and stays 0 by alignment)        |
//! | 52-55 | keel's [`P2mType`] code (software-available bits)                              |
//! | 63    | NX: set unless the access is [`Access::RX`] or [`Access::RWX`]                 |
//!
//! Bits 8-11 and 56-62 stay 0 (9-11 and 56-58 are free for later software use). An entry
//! without Present is ignored by the CPU, so keel keeps the same layout there (User, PS, frame
//! and type) for [`Access::None`] mappings: the guest faults, but keel still knows what the
//! frame is. Because User is always set, a leaf is never 0; 0 always means "nothing here".
//!
//! Non-leaf entries (pointers to the next table) are Present, Writable and User with NX clear,
//! so the leaf alone decides the permissions.
//!
//! The decoder is strict: anything keel would not have written (apart from the Accessed and
//! Dirty bits the CPU may set) decodes as [`Entry::Invalid`], so a corrupted entry is never
//! mistaken for a mapping. NX in a nested entry needs `EFER.NXE` set on the host.

use core::fmt;

use keel_mm::{Pfn, PAGE_SHIFT};

use crate::{P2mError, MAX_MFN_BITS};

/// The bits of a nested-page-table entry (see the module documentation for how keel uses them).
pub mod bits {
    /// Present: the CPU uses the entry.
    pub const PRESENT: u64 = 1 << 0;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// User: must be set for the guest to reach the mapping at all.
    pub const USER: u64 = 1 << 2;
    /// Page-level write-through (part of the PAT index; keel keeps it 0).
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable (part of the PAT index; keel keeps it 0).
    pub const PCD: u64 = 1 << 4;
    /// Accessed (set by the CPU; keel presets it).
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty, on leaves (set by the CPU; keel presets it).
    pub const DIRTY: u64 = 1 << 6;
    /// Page size: the PDPT or PD entry is a 1 GiB or 2 MiB leaf.
    pub const LARGE: u64 = 1 << 7;
    /// The frame-address field.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
    /// Position of keel's p2m type code.
    pub const KIND_SHIFT: u32 = 52;
    /// keel's p2m type code (software-available bits 52-55).
    pub const KIND: u64 = 0xf << KIND_SHIFT;
    /// No execute.
    pub const NX: u64 = 1 << 63;
}

use bits::*;

/// Flags of an entry pointing at the next table.
const TABLE_FLAGS: u64 = PRESENT | WRITABLE | USER;
/// Bits a present leaf may have.
const PRESENT_LEAF_BITS: u64 = PRESENT | WRITABLE | USER | ACCESSED | DIRTY | LARGE | ADDR | KIND | NX;
/// Bits a non-present ([`Access::None`]) leaf may have.
const ABSENT_LEAF_BITS: u64 = USER | LARGE | ADDR | KIND;

/// The guest-visible permissions of a mapping. x86 paging has no write-only or execute-only
/// pages, so these are all the combinations there are.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
pub enum Access {
    /// No access: the entry is not present and every access faults to keel, which still knows
    /// the frame and type.
    None,
    /// Read only.
    R,
    /// Read and write.
    RW,
    /// Read and execute.
    RX,
    /// Read, write and execute.
    RWX,
}

impl Access {
    /// Every access value.
    pub const ALL: [Access; 5] = [Access::None, Access::R, Access::RW, Access::RX, Access::RWX];

    /// True if the guest can read (the entry is present).
    pub const fn readable(self) -> bool {
        !matches!(self, Access::None)
    }

    /// True if the guest can write.
    pub const fn writable(self) -> bool {
        matches!(self, Access::RW | Access::RWX)
    }

    /// True if the guest can execute.
    pub const fn executable(self) -> bool {
        matches!(self, Access::RX | Access::RWX)
    }
}

/// What kind of frame a mapping points at, kept in the entry's software-available bits so keel
/// knows (e.g. on a nested page fault, or when tearing down) what it is dealing with.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
#[repr(u8)]
pub enum P2mType {
    /// The domain's own RAM.
    Ram = 0,
    /// keel's shared_info page for the domain (`XENMAPSPACE_shared_info`).
    SharedInfo = 1,
    /// A frame of the domain's grant table, shared or status (`XENMAPSPACE_grant_table`).
    GrantTable = 2,
    /// Another domain's frame, mapped through a grant (`GNTTABOP_map_grant_ref`).
    ForeignGrant = 3,
    /// Another domain's frame, mapped by a privileged domain (`XENMAPSPACE_gmfn_foreign`).
    ForeignMap = 4,
    /// Host device memory passed through to the domain.
    Mmio = 5,
}

impl P2mType {
    /// Every type.
    pub const ALL: [P2mType; 6] = [
        P2mType::Ram,
        P2mType::SharedInfo,
        P2mType::GrantTable,
        P2mType::ForeignGrant,
        P2mType::ForeignMap,
        P2mType::Mmio,
    ];

    /// The type with code `code`, if there is one.
    const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => P2mType::Ram,
            1 => P2mType::SharedInfo,
            2 => P2mType::GrantTable,
            3 => P2mType::ForeignGrant,
            4 => P2mType::ForeignMap,
            5 => P2mType::Mmio,
            _ => return None,
        })
    }
}

/// One mapping: `2^order` host frames starting at `mfn`, with the same permissions and type.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
pub struct Mapping {
    /// First host frame.
    pub mfn: Pfn,
    /// log2 of the number of frames: 0 (4 KiB), 9 (2 MiB) or 18 (1 GiB).
    pub order: u8,
    /// What the guest may do with it.
    pub access: Access,
    /// What kind of frame it is.
    pub kind: P2mType,
}

impl Mapping {
    /// A 4 KiB mapping.
    pub const fn page(mfn: Pfn, access: Access, kind: P2mType) -> Self {
        Self { mfn, order: 0, access, kind }
    }

    /// Number of 4 KiB frames covered (`2^order`; meaningful for valid orders).
    pub const fn frames(&self) -> u64 {
        1u64 << (self.order as u32 % u64::BITS)
    }

    /// Checks that the mapping can be written as a leaf entry.
    ///
    /// # Errors
    /// [`P2mError::BadOrder`] unless the order is 0, 9 or 18; [`P2mError::Misaligned`] if `mfn`
    /// is not a multiple of `2^order`; [`P2mError::MfnOutOfRange`] if the frames do not fit in
    /// a 52-bit physical address.
    pub const fn validate(&self) -> Result<(), P2mError> {
        if Level::for_leaf_order(self.order).is_none() {
            return Err(P2mError::BadOrder);
        }
        if !self.mfn.is_aligned(self.order) {
            return Err(P2mError::Misaligned);
        }
        // Aligned and below 2^40, so the last frame is below 2^40 too.
        if self.mfn.as_u64() >> MAX_MFN_BITS != 0 {
            return Err(P2mError::MfnOutOfRange { mfn: self.mfn });
        }
        Ok(())
    }
}

/// A level of the nested page table, named after the table it is in.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
pub enum Level {
    /// Page table: 4 KiB leaves.
    Pt,
    /// Page directory: 2 MiB leaves or page tables.
    Pd,
    /// Page-directory-pointer table: 1 GiB leaves or page directories.
    Pdpt,
    /// The root (PML4): only page-directory-pointer tables.
    Pml4,
}

impl Level {
    /// log2 of the number of 4 KiB frames one entry at this level covers: 0, 9, 18 or 27.
    pub const fn entry_order(self) -> u8 {
        match self {
            Level::Pt => 0,
            Level::Pd => 9,
            Level::Pdpt => 18,
            Level::Pml4 => 27,
        }
    }

    /// The order of a leaf at this level; `None` for the root, which cannot hold leaves.
    pub const fn leaf_order(self) -> Option<u8> {
        match self {
            Level::Pml4 => None,
            _ => Some(self.entry_order()),
        }
    }

    /// The level whose leaves have `order`, if any (orders 0, 9 and 18).
    pub const fn for_leaf_order(order: u8) -> Option<Level> {
        match order {
            0 => Some(Level::Pt),
            9 => Some(Level::Pd),
            18 => Some(Level::Pdpt),
            _ => None,
        }
    }

    /// The level of the tables this level's entries point at; `None` for [`Level::Pt`].
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::Pt => None,
            Level::Pd => Some(Level::Pt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pml4 => Some(Level::Pdpt),
        }
    }

    /// Index of the entry for guest frame `gfn` in a table at this level (always below 512).
    pub const fn index(self, gfn: u64) -> usize {
        ((gfn >> self.entry_order()) & 0x1ff) as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pt => "PT",
            Level::Pd => "PD",
            Level::Pdpt => "PDPT",
            Level::Pml4 => "PML4",
        })
    }
}

/// What one entry of a table holds.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Entry {
    /// Nothing (the entry is 0).
    Empty,
    /// A pointer to the next-level table in this frame.
    Table(Pfn),
    /// A mapping (with the mfn of its first frame).
    Leaf(Mapping),
    /// Something keel would never have written.
    Invalid,
}

/// The leaf entry for `mapping`, which must have passed [`Mapping::validate`].
pub(crate) const fn encode_leaf(mapping: Mapping) -> u64 {
    let mut pte = USER | (mapping.mfn.as_u64() << PAGE_SHIFT) & ADDR | (mapping.kind as u64) << KIND_SHIFT;
    if mapping.order != 0 {
        pte |= LARGE;
    }
    if mapping.access.readable() {
        pte |= PRESENT | ACCESSED | DIRTY;
    }
    if mapping.access.writable() {
        pte |= WRITABLE;
    }
    if mapping.access.readable() && !mapping.access.executable() {
        pte |= NX;
    }
    pte
}

/// The entry pointing at the table in frame `table` (a frame keel allocated, so below 2^40).
pub(crate) const fn encode_table(table: Pfn) -> u64 {
    TABLE_FLAGS | ACCESSED | (table.as_u64() << PAGE_SHIFT) & ADDR
}

/// The leaf entry the CPU should see for `mapping`.
///
/// # Errors
/// As [`Mapping::validate`].
pub const fn pte_for(mapping: Mapping) -> Result<u64, P2mError> {
    match mapping.validate() {
        Ok(()) => Ok(encode_leaf(mapping)),
        Err(e) => Err(e),
    }
}

/// The mapping a leaf entry at `level` holds, or `None` if `pte` is empty, points at a table or
/// is not something keel writes.
pub const fn decode_pte(pte: u64, level: Level) -> Option<Mapping> {
    match decode_entry(pte, level) {
        Entry::Leaf(mapping) => Some(mapping),
        _ => None,
    }
}

/// What entry `pte` of a table at `level` holds.
pub const fn decode_entry(pte: u64, level: Level) -> Entry {
    if pte == 0 {
        return Entry::Empty;
    }
    let present = pte & PRESENT != 0;
    let large = pte & LARGE != 0;
    if present && !large && !matches!(level, Level::Pt) {
        return if pte & !(ADDR | ACCESSED) == TABLE_FLAGS {
            Entry::Table(Pfn::new((pte & ADDR) >> PAGE_SHIFT))
        } else {
            Entry::Invalid
        };
    }
    let Some(order) = level.leaf_order() else {
        return Entry::Invalid;
    };
    let allowed = if present { PRESENT_LEAF_BITS } else { ABSENT_LEAF_BITS };
    if large != (order != 0) || pte & !allowed != 0 || pte & USER == 0 {
        return Entry::Invalid;
    }
    let Some(kind) = P2mType::from_code((pte & KIND) >> KIND_SHIFT) else {
        return Entry::Invalid;
    };
    let mfn = Pfn::new((pte & ADDR) >> PAGE_SHIFT);
    if !mfn.is_aligned(order) {
        return Entry::Invalid;
    }
    let access = match (present, pte & WRITABLE != 0, pte & NX != 0) {
        (false, _, _) => Access::None,
        (true, false, true) => Access::R,
        (true, true, true) => Access::RW,
        (true, false, false) => Access::RX,
        (true, true, false) => Access::RWX,
    };
    Entry::Leaf(Mapping { mfn, order, access, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEAF_LEVELS: [Level; 3] = [Level::Pt, Level::Pd, Level::Pdpt];

    fn mapping(mfn: u64, order: u8, access: Access, kind: P2mType) -> Mapping {
        Mapping { mfn: Pfn::new(mfn), order, access, kind }
    }

    /// Every valid combination of access, type and size, at a high frame.
    fn all_mappings() -> impl Iterator<Item = (Level, Mapping)> {
        LEAF_LEVELS.into_iter().flat_map(|level| {
            let order = level.entry_order();
            let mfn = ((1u64 << MAX_MFN_BITS) - 1) & !((1 << order) - 1);
            Access::ALL.into_iter().flat_map(move |access| {
                P2mType::ALL.into_iter().map(move |kind| (level, mapping(mfn, order, access, kind)))
            })
        })
    }

    #[test]
    fn bits_follow_the_access() {
        for (level, m) in all_mappings() {
            let pte = pte_for(m).unwrap();
            assert_ne!(pte & USER, 0, "{m:?}: user always set");
            assert_eq!(pte & (PWT | PCD), 0, "{m:?}: write-back");
            assert_eq!(pte & (1 << 8 | 0x7 << 9 | 0x7f << 56), 0, "{m:?}: unused bits clear");
            assert_eq!(pte & PRESENT != 0, m.access != Access::None, "{m:?}: present");
            assert_eq!(pte & WRITABLE != 0, m.access.writable(), "{m:?}: writable");
            let nx = m.access.readable() && !m.access.executable();
            assert_eq!(pte & NX != 0, nx, "{m:?}: nx");
            assert_eq!(pte & LARGE != 0, level != Level::Pt, "{m:?}: page size");
            assert_eq!((pte & ADDR) >> PAGE_SHIFT, m.mfn.as_u64());
            assert_eq!(pte & KIND, (m.kind as u64) << KIND_SHIFT);
            assert_eq!(decode_entry(pte, level), Entry::Leaf(m));
            assert_eq!(decode_pte(pte, level), Some(m));
        }
    }

    #[test]
    fn specific_encodings() {
        // A read-write 4 KiB RAM page at host frame 0x1234.
        assert_eq!(
            pte_for(mapping(0x1234, 0, Access::RW, P2mType::Ram)),
            Ok(0x8000_0000_0123_4067) // NX | frame | D A U W P
        );
        // An executable 2 MiB grant-table mapping (type 2).
        assert_eq!(pte_for(mapping(0x200, 9, Access::RX, P2mType::GrantTable)), Ok(0x0020_0000_0020_00e5));
        // A non-present 1 GiB MMIO mapping keeps user, size, frame and type.
        assert_eq!(pte_for(mapping(1 << 18, 18, Access::None, P2mType::Mmio)), Ok(0x0050_0000_4000_0084));
        assert_eq!(encode_table(Pfn::new(0x42)), 0x4_2027);
    }

    #[test]
    fn invalid_mappings_are_refused() {
        assert_eq!(pte_for(mapping(0, 1, Access::R, P2mType::Ram)), Err(P2mError::BadOrder));
        assert_eq!(pte_for(mapping(0, 27, Access::R, P2mType::Ram)), Err(P2mError::BadOrder));
        assert_eq!(pte_for(mapping(0, 255, Access::R, P2mType::Ram)), Err(P2mError::BadOrder));
        assert_eq!(pte_for(mapping(1, 9, Access::R, P2mType::Ram)), Err(P2mError::Misaligned));
        assert_eq!(pte_for(mapping(1 << 17, 18, Access::R, P2mType::Ram)), Err(P2mError::Misaligned));
        assert_eq!(
            pte_for(mapping(1 << 40, 0, Access::R, P2mType::Ram)),
            Err(P2mError::MfnOutOfRange { mfn: Pfn::new(1 << 40) })
        );
        assert_eq!(
            pte_for(mapping(u64::MAX, 0, Access::R, P2mType::Ram)),
            Err(P2mError::MfnOutOfRange { mfn: Pfn::new(u64::MAX) })
        );
    }

    #[test]
    fn tables_and_empty_entries() {
        let t = encode_table(Pfn::new(0xabcde));
        for level in [Level::Pd, Level::Pdpt, Level::Pml4] {
            assert_eq!(decode_entry(t, level), Entry::Table(Pfn::new(0xabcde)));
            assert_eq!(decode_entry(t & !ACCESSED, level), Entry::Table(Pfn::new(0xabcde)));
            assert_eq!(decode_pte(t, level), None);
            // A table pointer lacking write or user, or with NX, is not one of keel's.
            assert_eq!(decode_entry(t & !WRITABLE, level), Entry::Invalid);
            assert_eq!(decode_entry(t & !USER, level), Entry::Invalid);
            assert_eq!(decode_entry(t | NX, level), Entry::Invalid);
        }
        for level in [Level::Pt, Level::Pd, Level::Pdpt, Level::Pml4] {
            assert_eq!(decode_entry(0, level), Entry::Empty);
        }
    }

    #[test]
    fn garbage_is_invalid() {
        let page = pte_for(mapping(0x1000, 0, Access::RW, P2mType::Ram)).unwrap();
        let large = pte_for(mapping(0x1000, 9, Access::RW, P2mType::Ram)).unwrap();
        // Leaves in the root, or a page-size bit in a PT (that is PAT there).
        assert_eq!(decode_entry(large, Level::Pml4), Entry::Invalid);
        assert_eq!(decode_entry(page | LARGE, Level::Pt), Entry::Invalid);
        // A non-present entry without PS above the PT is not a leaf keel wrote.
        let absent = pte_for(mapping(0x1000, 0, Access::None, P2mType::Ram)).unwrap();
        assert_eq!(decode_entry(absent, Level::Pd), Entry::Invalid);
        // Unknown type codes, caching bits, global, unused software bits, missing user.
        for bad in [6u64 << KIND_SHIFT, 0xf << KIND_SHIFT, PWT, PCD, 1 << 8, 1 << 9, 1 << 58, 1 << 62] {
            assert_eq!(decode_entry(page | bad, Level::Pt), Entry::Invalid, "{bad:#x}");
            assert_eq!(decode_entry(absent | bad, Level::Pt), Entry::Invalid, "{bad:#x}");
        }
        assert_eq!(decode_entry(page & !USER, Level::Pt), Entry::Invalid);
        // A large page whose frame is not aligned (bit 12 would be PAT).
        assert_eq!(decode_entry(large | 1 << 12, Level::Pd), Entry::Invalid);
        assert_eq!(decode_entry(large | 1 << 21, Level::Pd), Entry::Leaf(mapping(0x1200, 9, Access::RW, P2mType::Ram)));
        assert_eq!(decode_entry(large | 1 << 21, Level::Pdpt), Entry::Invalid);
    }

    #[test]
    fn accessed_and_dirty_from_the_cpu_are_ignored() {
        let m = mapping(0x1000, 0, Access::R, P2mType::ForeignGrant);
        let pte = pte_for(m).unwrap() & !(ACCESSED | DIRTY);
        assert_eq!(decode_pte(pte, Level::Pt), Some(m));
        assert_eq!(decode_pte(pte | ACCESSED, Level::Pt), Some(m));
    }

    #[test]
    fn levels() {
        assert_eq!(Level::Pml4.index(0xf_ffff_ffff), 0x1ff);
        assert_eq!(Level::Pml4.index(1 << 27), 1);
        assert_eq!(Level::Pdpt.index(3 << 18 | 5), 3);
        assert_eq!(Level::Pd.index(7 << 9 | 5), 7);
        assert_eq!(Level::Pt.index(0x3ff), 0x1ff);
        let mut level = Level::Pml4;
        let mut seen = 1;
        while let Some(below) = level.below() {
            assert_eq!(below.entry_order() + 9, level.entry_order());
            assert_eq!(Level::for_leaf_order(below.entry_order()), Some(below));
            level = below;
            seen += 1;
        }
        assert_eq!(seen, 4);
        assert_eq!(Level::Pml4.leaf_order(), None);
    }

    fn arb_mapping() -> impl Strategy<Value = (Level, Mapping)> {
        (0usize..3, 0u64..(1 << MAX_MFN_BITS), 0usize..5, 0usize..6).prop_map(|(l, mfn, a, k)| {
            let level = LEAF_LEVELS[l];
            let order = level.entry_order();
            (level, mapping(mfn & !((1 << order) - 1), order, Access::ALL[a], P2mType::ALL[k]))
        })
    }

    fn arb_level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Level::Pt), Just(Level::Pd), Just(Level::Pdpt), Just(Level::Pml4)]
    }

    proptest! {
        #[test]
        fn valid_mappings_round_trip((level, m) in arb_mapping()) {
            let pte = pte_for(m).unwrap();
            prop_assert_eq!(decode_pte(pte, level), Some(m));
            // A 4 KiB leaf is no leaf at any other level, nor is a large leaf in a PT or the
            // root. (A large leaf aligned for 1 GiB also reads as a 2 MiB leaf in a PD.)
            prop_assert_eq!(decode_pte(pte, Level::Pml4), None);
            if level == Level::Pt {
                prop_assert_eq!(decode_pte(pte, Level::Pd), None);
                prop_assert_eq!(decode_pte(pte, Level::Pdpt), None);
            } else {
                prop_assert_eq!(decode_pte(pte, Level::Pt), None);
            }
        }

        #[test]
        fn decoding_is_total_and_exact(pte in any::<u64>(), level in arb_level()) {
            match decode_entry(pte, level) {
                Entry::Empty => prop_assert_eq!(pte, 0),
                Entry::Table(t) => prop_assert_eq!(encode_table(t), pte | ACCESSED),
                Entry::Leaf(m) => {
                    prop_assert_eq!(Level::for_leaf_order(m.order), Some(level));
                    let hw = if pte & PRESENT != 0 { ACCESSED | DIRTY } else { 0 };
                    prop_assert_eq!(pte_for(m), Ok(pte | hw));
                }
                Entry::Invalid => {}
            }
        }
    }
}
