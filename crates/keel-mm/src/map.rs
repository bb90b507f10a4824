//! The firmware memory map: E820 region kinds and [`sanitize`], which turns
//! the untrusted list the boot loader handed over into a [`MemoryMap`] keel
//! can rely on.
//!
//! Boot loaders pass on whatever the firmware said, and firmware maps are
//! routinely unsorted, overlapping, unaligned, or simply wrong. Everything
//! else in keel (the free-RAM set, the frame table, dom0's e820) is derived
//! from the sanitised map, so this is where every such anomaly is resolved,
//! once, by fixed rules, and reported so the operator can see it:
//!
//! * zero-length and wrapping entries are dropped;
//! * entries are clipped to the CPU's physical address width;
//! * where entries overlap, the more restrictive kind wins (any non-RAM kind
//!   beats RAM; among non-RAM kinds the higher E820 number wins), the rule
//!   Linux and Xen apply, so a reserved range is never handed out as RAM;
//! * adjacent regions of the same kind are merged;
//! * RAM is trimmed inward to whole pages.
//!
//! Capacity is fixed (no allocator exists yet). Whenever something has to be
//! dropped for lack of space, the map is cut at an address and everything
//! above it is discarded, so a lost entry can only ever make RAM disappear,
//! never make reserved memory look like RAM.

use core::fmt;

use crate::addr::{PhysAddr, PAGE_SIZE};

/// Memory region type, E820 numbering (multiboot2 and PVH use the same numbers).
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum RegionKind {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved, e.g. firmware or MMIO (type 2).
    Reserved,
    /// ACPI tables, reusable once they have been read (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage, must be preserved (type 4).
    AcpiNvs,
    /// Memory with errors (type 5).
    Unusable,
    /// Disabled memory (type 6).
    Disabled,
    /// Persistent memory (type 7).
    Persistent,
    /// Any other type number. [`RegionKind::from_e820`] never produces this
    /// for the numbers 1 to 7.
    Unknown(u32),
}

impl RegionKind {
    /// The kind for E820 type number `t`.
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            6 => Self::Disabled,
            7 => Self::Persistent,
            other => Self::Unknown(other),
        }
    }

    /// The E820 type number of this kind.
    pub fn to_e820(self) -> u32 {
        match self {
            Self::Ram => 1,
            Self::Reserved => 2,
            Self::AcpiReclaimable => 3,
            Self::AcpiNvs => 4,
            Self::Unusable => 5,
            Self::Disabled => 6,
            Self::Persistent => 7,
            Self::Unknown(t) => t,
        }
    }

    /// The canonical spelling of this kind: `Unknown(2)` becomes `Reserved`,
    /// `Unknown(1)` becomes `Ram`, and so on.
    pub fn normalized(self) -> Self {
        Self::from_e820(self.to_e820())
    }

    /// How restrictive the kind is; where regions overlap the higher rank wins.
    /// RAM is the least restrictive; other kinds rank by E820 number.
    fn rank(self) -> u64 {
        match self.normalized() {
            Self::Ram => 0,
            other => u64::from(other.to_e820()) + 1,
        }
    }

    /// The kind that wins where `self` and `other` overlap.
    pub fn more_restrictive(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.normalized() {
            Self::Ram => f.write_str("RAM"),
            Self::Reserved => f.write_str("reserved"),
            Self::AcpiReclaimable => f.write_str("ACPI reclaimable"),
            Self::AcpiNvs => f.write_str("ACPI NVS"),
            Self::Unusable => f.write_str("unusable"),
            Self::Disabled => f.write_str("disabled"),
            Self::Persistent => f.write_str("persistent memory"),
            Self::Unknown(t) => write!(f, "unknown type {t}"),
        }
    }
}

/// One entry as the firmware/boot loader reported it (untrusted).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct RawRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the firmware says the range is.
    pub kind: RegionKind,
}

/// One sanitised region: [start, end), non-empty, no overlaps with any other, sorted.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct Region {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
    /// What the range is (always in [`RegionKind::normalized`] form).
    pub kind: RegionKind,
}

impl Region {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.end.as_u64().saturating_sub(self.start.as_u64())
    }
}

/// Capacity of a [`MemoryMap`].
pub const MAX_REGIONS: usize = 256;

/// How many raw entries [`sanitize`] looks at. Sanitising costs
/// O(entries²), so untrusted input must be bounded; real firmware maps have
/// at most a few hundred entries (Xen's own limit is 1024).
pub const MAX_RAW_ENTRIES: usize = 1024;

/// Sorted, disjoint, adjacent same-kind regions merged. RAM regions 4 KiB-aligned inward.
#[derive(Clone)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

// All zero bytes (RegionKind::Ram is tag 0), so an empty MemoryMap can live in .bss.
const EMPTY_REGION: Region = Region { start: PhysAddr::new(0), end: PhysAddr::new(0), kind: RegionKind::Ram };

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self { regions: [EMPTY_REGION; MAX_REGIONS], len: 0 }
    }

    /// The regions, sorted by address.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// The regions of one kind, sorted by address.
    pub fn regions_of(&self, kind: RegionKind) -> impl Iterator<Item = &Region> + '_ {
        let kind = kind.normalized();
        self.regions().iter().filter(move |r| r.kind == kind)
    }

    /// Total bytes of `kind`. Cannot overflow: the regions are disjoint.
    pub fn total(&self, kind: RegionKind) -> u64 {
        self.regions_of(kind).map(Region::size).sum()
    }

    /// End of the highest RAM region (0 if there is no RAM).
    pub fn max_ram_end(&self) -> PhysAddr {
        self.regions_of(RegionKind::Ram).last().map_or(PhysAddr::new(0), |r| r.end)
    }

    /// Appends `[start, end)`, merging with the last region if they touch and
    /// have the same kind. `false` if the map is full.
    fn push_merge(&mut self, start: u64, end: u64, kind: RegionKind) -> bool {
        if let Some(last) = self.len.checked_sub(1).map(|i| &mut self.regions[i]) {
            if last.end.as_u64() == start && last.kind == kind {
                last.end = PhysAddr::new(end);
                return true;
            }
        }
        match self.regions.get_mut(self.len) {
            Some(slot) => {
                *slot = Region { start: PhysAddr::new(start), end: PhysAddr::new(end), kind };
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.regions()).finish()
    }
}

/// Every anomaly sanitise() met, so keel can report it on the console. Must carry enough data
/// to print a precise operator message (index of the raw entry, addresses, what was done).
///
/// Indices are positions in the raw map; addresses are byte addresses and
/// ranges are half-open `[start, end)`.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum MapIssue {
    /// Entry `index` has length 0; it was ignored.
    ZeroLength {
        /// Raw entry.
        index: usize,
    },
    /// Entry `index` runs past the end of the 64-bit address space; it was ignored.
    Wraps {
        /// Raw entry.
        index: usize,
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// Entry `index` = `[base, end)` reaches beyond the physical address
    /// width. It was clipped to `[base, limit)`, or ignored if `base >= limit`.
    BeyondAddressWidth {
        /// Raw entry.
        index: usize,
        /// Its base.
        base: u64,
        /// Its end.
        end: u64,
        /// `2^phys_addr_bits`.
        limit: u64,
    },
    /// Entries `first` < `second` overlap on `[start, end)`; `winner` is the
    /// kind that range has in the sanitised map unless a third entry beats it.
    Overlap {
        /// Lower raw index.
        first: usize,
        /// Higher raw index.
        second: usize,
        /// Start of the overlap.
        start: u64,
        /// End of the overlap.
        end: u64,
        /// The more restrictive of the two kinds.
        winner: RegionKind,
    },
    /// The RAM region `[base, end)` (entry `index` supplied its unaligned
    /// edge) did not start or end on a page boundary next to a hole, so it
    /// was trimmed inward to whole pages, or dropped if no whole page was left.
    ///
    /// Not reported when the partial page is shared with a non-RAM region
    /// (e.g. the EBDA at `0x9fc00`): that page is legitimately not RAM.
    RamTrimmed {
        /// Raw entry.
        index: usize,
        /// Region start before trimming.
        base: u64,
        /// Region end before trimming.
        end: u64,
    },
    /// The raw map has more than [`MAX_RAW_ENTRIES`] entries; entries from
    /// index `dropped_from` on were ignored.
    TooManyRegions {
        /// First ignored raw entry.
        dropped_from: usize,
    },
    /// Everything at and above `from` was dropped from the sanitised map,
    /// either because it needed more than [`MAX_REGIONS`] regions, or because
    /// an entry ignored under [`MapIssue::TooManyRegions`] marks memory from
    /// `from` as non-RAM.
    Truncated {
        /// Lowest dropped address.
        from: u64,
    },
}

impl fmt::Display for MapIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroLength { index } => {
                write!(f, "memory map entry {index} has zero length; ignored it")
            }
            Self::Wraps { index, base, len } => write!(
                f,
                "memory map entry {index} (base {base:#x}, length {len:#x}) runs past the end \
                 of the address space; ignored it"
            ),
            Self::BeyondAddressWidth { index, base, end, limit } => {
                if base >= limit {
                    write!(
                        f,
                        "memory map entry {index} [{base:#x}, {end:#x}) lies above the physical \
                         address limit {limit:#x}; ignored it"
                    )
                } else {
                    write!(
                        f,
                        "memory map entry {index} [{base:#x}, {end:#x}) extends beyond the \
                         physical address limit {limit:#x}; clipped it to [{base:#x}, {limit:#x})"
                    )
                }
            }
            Self::Overlap { first, second, start, end, winner } => write!(
                f,
                "memory map entries {first} and {second} overlap on [{start:#x}, {end:#x}); \
                 treated it as {winner}"
            ),
            Self::RamTrimmed { index, base, end } => {
                let (s, e) = page_trim(base, end);
                if s < e {
                    write!(
                        f,
                        "RAM [{base:#x}, {end:#x}) (memory map entry {index}) is not page-aligned; \
                         trimmed it to [{s:#x}, {e:#x})"
                    )
                } else {
                    write!(
                        f,
                        "RAM [{base:#x}, {end:#x}) (memory map entry {index}) holds no whole page; \
                         ignored it"
                    )
                }
            }
            Self::TooManyRegions { dropped_from } => write!(
                f,
                "memory map has more than {MAX_RAW_ENTRIES} entries; ignored entries \
                 {dropped_from} and up"
            ),
            Self::Truncated { from } => write!(
                f,
                "memory map does not fit in {MAX_REGIONS} regions or an ignored entry reserves \
                 memory; dropped everything from {from:#x} up"
            ),
        }
    }
}

/// `[start, end)` trimmed inward to whole pages; `s >= e` if nothing is left.
fn page_trim(start: u64, end: u64) -> (u64, u64) {
    let s = start.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
    let e = end & !(PAGE_SIZE - 1);
    (s, e)
}

/// A raw entry after the silent validity checks of [`sanitize`].
#[derive(Copy, Clone)]
struct Entry {
    start: u64,
    end: u64,
    kind: RegionKind,
}

/// The usable part of `raw` below `limit` (`None` = no limit), or `None` if
/// it is empty, wraps or lies entirely beyond the limit.
fn clip(raw: &RawRegion, limit: Option<u64>) -> Option<Entry> {
    let end = raw.base.checked_add(raw.len)?;
    let end = limit.map_or(end, |l| end.min(l));
    (raw.base < end).then_some(Entry { start: raw.base, end, kind: raw.kind.normalized() })
}

/// Sanitise an untrusted map. `phys_addr_bits` (from CPUID, e.g. 48) bounds addresses.
/// Overlap rule (Linux/Xen semantics): where entries overlap, the "more restrictive" kind wins:
/// anything non-RAM wins over RAM; among non-RAM kinds the higher E820 number wins (Unknown(n) counts as n).
/// Never panics, whatever the input.
///
/// `out` is cleared first. `report` is called once per anomaly, in this
/// order: per-entry problems (by index), [`MapIssue::TooManyRegions`], every
/// overlapping pair, [`MapIssue::Truncated`], then trimmed RAM. A hostile map
/// can produce many overlap reports; the caller decides how many to print.
/// A `phys_addr_bits` of 64 or more means no limit. Runs in
/// O(min(raw.len(), [`MAX_RAW_ENTRIES`])²) time and O(1) stack beyond `out`.
pub fn sanitize(raw: &[RawRegion], phys_addr_bits: u8, out: &mut MemoryMap, report: &mut dyn FnMut(MapIssue)) {
    out.len = 0;
    let limit = 1u64.checked_shl(u32::from(phys_addr_bits));
    let (used, ignored) = raw.split_at(raw.len().min(MAX_RAW_ENTRIES));

    for (index, r) in used.iter().enumerate() {
        if r.len == 0 {
            report(MapIssue::ZeroLength { index });
            continue;
        }
        let Some(end) = r.base.checked_add(r.len) else {
            report(MapIssue::Wraps { index, base: r.base, len: r.len });
            continue;
        };
        if let Some(limit) = limit.filter(|&l| end > l) {
            report(MapIssue::BeyondAddressWidth { index, base: r.base, end, limit });
        }
    }

    // Entries beyond the cap are not looked at one by one, but the lowest
    // non-RAM one among them still bounds what may be called RAM.
    let mut cut = None;
    if !ignored.is_empty() {
        report(MapIssue::TooManyRegions { dropped_from: MAX_RAW_ENTRIES });
        cut =
            ignored.iter().filter_map(|r| clip(r, limit)).filter(|e| e.kind != RegionKind::Ram).map(|e| e.start).min();
    }

    for (first, a) in used.iter().enumerate() {
        let Some(a) = clip(a, limit) else { continue };
        for (second, b) in used.iter().enumerate().skip(first + 1) {
            let Some(b) = clip(b, limit) else { continue };
            let (start, end) = (a.start.max(b.start), a.end.min(b.end));
            if start < end {
                report(MapIssue::Overlap { first, second, start, end, winner: a.kind.more_restrictive(b.kind) });
            }
        }
    }

    sweep(used, limit, cut, out, report);
    trim_ram(used, limit, out, report);
}

/// Walks the elementary intervals between entry boundaries in address order
/// and appends each covered one with its winning kind.
fn sweep(
    used: &[RawRegion],
    limit: Option<u64>,
    cut: Option<u64>,
    out: &mut MemoryMap,
    report: &mut dyn FnMut(MapIssue),
) {
    let entries = || used.iter().filter_map(|r| clip(r, limit));
    let Some(mut cur) = entries().map(|e| e.start).min() else {
        return;
    };
    loop {
        if let Some(cut) = cut.filter(|&c| cur >= c) {
            if entries().any(|e| e.end > cut) {
                report(MapIssue::Truncated { from: cut });
            }
            return;
        }
        let mut winner: Option<RegionKind> = None;
        let mut next: Option<u64> = None;
        for e in entries() {
            if e.start <= cur && cur < e.end {
                winner = Some(winner.map_or(e.kind, |w| w.more_restrictive(e.kind)));
            }
            for b in [e.start, e.end] {
                if b > cur {
                    next = Some(next.map_or(b, |n| n.min(b)));
                }
            }
        }
        let Some(next) = next else { return };
        let next = cut.map_or(next, |c| next.min(c));
        if let Some(kind) = winner {
            if !out.push_merge(cur, next, kind) {
                report(MapIssue::Truncated { from: cur });
                return;
            }
        }
        cur = next;
    }
}

/// Trims RAM regions inward to whole pages, dropping those with none left.
fn trim_ram(used: &[RawRegion], limit: Option<u64>, out: &mut MemoryMap, report: &mut dyn FnMut(MapIssue)) {
    let len = out.len;
    let mut kept = 0;
    let mut prev_end = None;
    for i in 0..len {
        let mut r = out.regions[i];
        let next_start = out.regions[..len].get(i + 1).map(|n| n.start.as_u64());
        let (start, end) = (r.start.as_u64(), r.end.as_u64());
        let this_prev_end = prev_end.replace(end);
        if r.kind == RegionKind::Ram {
            let (s, e) = page_trim(start, end);
            let hole_before = s != start && this_prev_end != Some(start);
            let hole_after = e != end && next_start != Some(end);
            if hole_before || hole_after {
                let edge = if hole_before { start } else { end - 1 };
                // A RAM byte of the sanitised map is always covered by some RAM entry.
                let index = used
                    .iter()
                    .position(|raw| {
                        clip(raw, limit).is_some_and(|e| e.kind == RegionKind::Ram && e.start <= edge && edge < e.end)
                    })
                    .unwrap_or(usize::MAX);
                report(MapIssue::RamTrimmed { index, base: start, end });
            }
            if s >= e {
                continue;
            }
            r.start = PhysAddr::new(s);
            r.end = PhysAddr::new(e);
        }
        out.regions[kept] = r;
        kept += 1;
    }
    out.len = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;
    use std::{format, vec};

    use RegionKind::*;

    fn raw(base: u64, len: u64, kind: RegionKind) -> RawRegion {
        RawRegion { base, len, kind }
    }

    fn run(input: &[RawRegion], bits: u8) -> (Vec<(u64, u64, RegionKind)>, Vec<MapIssue>) {
        let mut map = MemoryMap::new();
        let mut issues = Vec::new();
        sanitize(input, bits, &mut map, &mut |i| issues.push(i));
        let regions = map.regions().iter().map(|r| (r.start.as_u64(), r.end.as_u64(), r.kind)).collect();
        (regions, issues)
    }

    #[test]
    fn e820_numbers_round_trip() {
        for t in 0..20 {
            assert_eq!(RegionKind::from_e820(t).to_e820(), t);
        }
        assert_eq!(RegionKind::from_e820(1), Ram);
        assert_eq!(RegionKind::from_e820(7), Persistent);
        assert_eq!(RegionKind::from_e820(12), Unknown(12));
        assert_eq!(Unknown(2).normalized(), Reserved);
        assert_eq!(format!("{}", Unknown(12)), "unknown type 12");
        assert_eq!(format!("{}", AcpiNvs), "ACPI NVS");
    }

    #[test]
    fn restrictiveness() {
        assert_eq!(Ram.more_restrictive(Reserved), Reserved);
        assert_eq!(Reserved.more_restrictive(Ram), Reserved);
        assert_eq!(AcpiReclaimable.more_restrictive(AcpiNvs), AcpiNvs);
        assert_eq!(Unknown(0).more_restrictive(Ram), Unknown(0));
        assert_eq!(Unknown(12).more_restrictive(Persistent), Unknown(12));
        assert_eq!(Reserved.more_restrictive(Unusable), Unusable);
    }

    /// QEMU 7.2 `pc` machine, SeaBIOS, `-m 6G`: the map Linux prints as BIOS-e820.
    #[test]
    fn qemu_seabios_map_has_no_issues() {
        let input = [
            raw(0x0, 0x9fc00, Ram),
            raw(0x9fc00, 0x400, Reserved),
            raw(0xf0000, 0x10000, Reserved),
            raw(0x10_0000, 0xbfee_0000, Ram),
            raw(0xbffe_0000, 0x2_0000, Reserved),
            raw(0xfeff_c000, 0x4000, Reserved),
            raw(0xfffc_0000, 0x4_0000, Reserved),
            raw(0x1_0000_0000, 0x1_4000_0000, Ram),
        ];
        let (regions, issues) = run(&input, 40);
        assert_eq!(issues, vec![]);
        assert_eq!(
            regions,
            vec![
                (0x0, 0x9f000, Ram),
                (0x9fc00, 0xa0000, Reserved),
                (0xf0000, 0x10_0000, Reserved),
                (0x10_0000, 0xbffe_0000, Ram),
                (0xbffe_0000, 0xc000_0000, Reserved),
                (0xfeff_c000, 0xff00_0000, Reserved),
                (0xfffc_0000, 0x1_0000_0000, Reserved),
                (0x1_0000_0000, 0x2_4000_0000, Ram),
            ]
        );
        let mut map = MemoryMap::new();
        sanitize(&input, 40, &mut map, &mut |_| {});
        assert_eq!(map.max_ram_end(), PhysAddr::new(0x2_4000_0000));
        assert_eq!(map.total(Ram), 0x9f000 + 0xbfee_0000 + 0x1_4000_0000);
        assert_eq!(map.total(Reserved), 0x400 + 0x1_0000 + 0x2_0000 + 0x4000 + 0x4_0000);
        assert_eq!(map.total(AcpiNvs), 0);
    }

    #[test]
    fn reserved_inside_ram_splits_it() {
        let (regions, issues) = run(&[raw(0x0, 0x10_0000, Ram), raw(0x4_0000, 0x1000, Reserved)], 48);
        assert_eq!(regions, vec![(0x0, 0x4_0000, Ram), (0x4_0000, 0x4_1000, Reserved), (0x4_1000, 0x10_0000, Ram),]);
        assert_eq!(
            issues,
            vec![MapIssue::Overlap { first: 0, second: 1, start: 0x4_0000, end: 0x4_1000, winner: Reserved }]
        );
    }

    #[test]
    fn partial_overlap_reserved_wins_either_order() {
        let a = raw(0x0, 0x8000, Ram);
        let b = raw(0x6000, 0x4000, AcpiNvs);
        let expect = vec![(0x0, 0x6000, Ram), (0x6000, 0xa000, AcpiNvs)];
        assert_eq!(run(&[a, b], 48).0, expect);
        assert_eq!(run(&[b, a], 48).0, expect);
    }

    #[test]
    fn nested_overlaps() {
        // RAM contains reserved contains NVS; the innermost, most restrictive kind wins.
        let (regions, issues) = run(
            &[
                raw(0x0, 0x10000, Ram),
                raw(0x2000, 0x8000, Reserved),
                raw(0x4000, 0x2000, AcpiNvs),
                raw(0x5000, 0x4000, AcpiReclaimable),
            ],
            48,
        );
        assert_eq!(
            regions,
            vec![
                (0x0, 0x2000, Ram),
                (0x2000, 0x4000, Reserved),
                (0x4000, 0x6000, AcpiNvs),
                // Reserved (2) loses to ACPI reclaimable (3) where they overlap.
                (0x6000, 0x9000, AcpiReclaimable),
                (0x9000, 0xa000, Reserved),
                (0xa000, 0x10000, Ram),
            ]
        );
        assert_eq!(issues.len(), 6, "every pair overlaps: {issues:?}");
    }

    #[test]
    fn identical_duplicates_collapse() {
        let e = raw(0x10_0000, 0x10_0000, Ram);
        let (regions, issues) = run(&[e, e, e], 48);
        assert_eq!(regions, vec![(0x10_0000, 0x20_0000, Ram)]);
        assert_eq!(issues.len(), 3);
        assert!(issues.iter().all(|i| matches!(i, MapIssue::Overlap { winner: Ram, .. })));
    }

    #[test]
    fn zero_length_ignored() {
        let (regions, issues) = run(&[raw(0x1000, 0, Ram), raw(0x2000, 0x1000, Ram)], 48);
        assert_eq!(regions, vec![(0x2000, 0x3000, Ram)]);
        assert_eq!(issues, vec![MapIssue::ZeroLength { index: 0 }]);
    }

    #[test]
    fn wrapping_ignored() {
        let (regions, issues) = run(&[raw(u64::MAX - 0xfff, 0x2000, Reserved), raw(0, 0x1000, Ram)], 64);
        assert_eq!(regions, vec![(0, 0x1000, Ram)]);
        assert_eq!(issues, vec![MapIssue::Wraps { index: 0, base: u64::MAX - 0xfff, len: 0x2000 }]);
        // Ending exactly at 2^64 is not representable either.
        let (_, issues) = run(&[raw(u64::MAX - 0xfff, 0x1000, Ram)], 64);
        assert!(matches!(issues[..], [MapIssue::Wraps { index: 0, .. }]));
    }

    #[test]
    fn beyond_address_width_clipped_or_dropped() {
        let (regions, issues) = run(
            &[raw(0xf_ffff_0000, 0x2_0000, Ram), raw(0x10_0000_0000, 0x1000, Reserved), raw(0x1000, 0x1000, Ram)],
            36,
        );
        assert_eq!(regions, vec![(0x1000, 0x2000, Ram), (0xf_ffff_0000, 0x10_0000_0000, Ram)]);
        assert_eq!(
            issues,
            vec![
                MapIssue::BeyondAddressWidth {
                    index: 0,
                    base: 0xf_ffff_0000,
                    end: 0x10_0001_0000,
                    limit: 0x10_0000_0000
                },
                MapIssue::BeyondAddressWidth {
                    index: 1,
                    base: 0x10_0000_0000,
                    end: 0x10_0000_1000,
                    limit: 0x10_0000_0000
                },
            ]
        );
        assert!(format!("{}", issues[0]).contains("clipped it to [0xfffff0000, 0x1000000000)"));
        assert!(format!("{}", issues[1]).contains("ignored"));
    }

    #[test]
    fn unaligned_ram_trimmed_inward() {
        let (regions, issues) = run(
            &[
                raw(0x1800, 0x3000, Ram),       // [0x1800, 0x4800) -> [0x2000, 0x4000)
                raw(0x10100, 0x200, Ram),       // no whole page: dropped
                raw(0x20000, 0x1234, Reserved), // non-RAM is never trimmed
            ],
            48,
        );
        assert_eq!(regions, vec![(0x2000, 0x4000, Ram), (0x20000, 0x21234, Reserved)]);
        assert_eq!(
            issues,
            vec![
                MapIssue::RamTrimmed { index: 0, base: 0x1800, end: 0x4800 },
                MapIssue::RamTrimmed { index: 1, base: 0x10100, end: 0x10300 },
            ]
        );
        assert_eq!(
            format!("{}", issues[0]),
            "RAM [0x1800, 0x4800) (memory map entry 0) is not page-aligned; trimmed it to \
             [0x2000, 0x4000)"
        );
        assert!(format!("{}", issues[1]).contains("holds no whole page"));
    }

    #[test]
    fn ram_sharing_a_page_with_reserved_is_trimmed_silently() {
        let (regions, issues) = run(&[raw(0x0, 0x9fc00, Ram), raw(0x9fc00, 0x400, Reserved)], 48);
        assert_eq!(regions, vec![(0x0, 0x9f000, Ram), (0x9fc00, 0xa0000, Reserved)]);
        assert_eq!(issues, vec![]);
    }

    #[test]
    fn trimmed_index_names_the_entry_with_the_unaligned_edge() {
        // Two RAM entries merge; the second one's end is unaligned.
        let (regions, issues) = run(&[raw(0x0, 0x1000, Ram), raw(0x1000, 0x1800, Ram)], 48);
        assert_eq!(regions, vec![(0x0, 0x2000, Ram)]);
        assert_eq!(issues, vec![MapIssue::RamTrimmed { index: 1, base: 0, end: 0x2800 }]);
    }

    #[test]
    fn merged_unaligned_pieces_keep_the_whole_pages() {
        // Trimming after merging keeps [0x1000, 0x3000); trimming each entry first would not.
        let (regions, issues) = run(&[raw(0x1000, 0x1800, Ram), raw(0x2800, 0x800, Ram)], 48);
        assert_eq!(regions, vec![(0x1000, 0x3000, Ram)]);
        assert_eq!(issues, vec![]);
    }

    #[test]
    fn adjacent_same_kind_merged() {
        let (regions, issues) = run(
            &[
                raw(0x0, 0x1000, Ram),
                raw(0x1000, 0x1000, Ram),
                raw(0x2000, 0x1000, Reserved),
                raw(0x3000, 0x1000, Reserved),
                raw(0x4000, 0x1000, AcpiNvs),
            ],
            48,
        );
        assert_eq!(regions, vec![(0x0, 0x2000, Ram), (0x2000, 0x4000, Reserved), (0x4000, 0x5000, AcpiNvs)]);
        assert_eq!(issues, vec![]);
    }

    #[test]
    fn unsorted_input_sorted() {
        let (regions, issues) =
            run(&[raw(0x10_0000, 0x1000, Ram), raw(0x0, 0x1000, Reserved), raw(0x5000, 0x1000, Ram)], 48);
        assert_eq!(regions, vec![(0x0, 0x1000, Reserved), (0x5000, 0x6000, Ram), (0x10_0000, 0x10_1000, Ram)]);
        assert_eq!(issues, vec![]);
    }

    #[test]
    fn too_many_output_regions_truncates_at_an_address() {
        // 300 disjoint, alternating, non-mergeable regions.
        let input: Vec<_> =
            (0..300u64).map(|i| raw(i * 0x1000, 0x1000, if i % 2 == 0 { Ram } else { Reserved })).collect();
        let (regions, issues) = run(&input, 48);
        assert_eq!(regions.len(), MAX_REGIONS);
        assert_eq!(regions.last().unwrap().1, MAX_REGIONS as u64 * 0x1000);
        assert_eq!(issues, vec![MapIssue::Truncated { from: MAX_REGIONS as u64 * 0x1000 }]);
    }

    #[test]
    fn too_many_raw_entries_reported_and_cut_below_ignored_reservations() {
        let mut input: Vec<_> = (0..MAX_RAW_ENTRIES as u64 + 5).map(|i| raw(i * 0x10_0000, 0x10_0000, Ram)).collect();
        let n = input.len();
        // An ignored entry reserves memory inside RAM that was looked at.
        input[n - 2] = raw(0x20_0000, 0x1000, Reserved);
        let (regions, issues) = run(&input, 48);
        assert_eq!(regions, vec![(0, 0x20_0000, Ram)]);
        assert_eq!(
            issues,
            vec![MapIssue::TooManyRegions { dropped_from: MAX_RAW_ENTRIES }, MapIssue::Truncated { from: 0x20_0000 },]
        );
        // Ignored RAM alone only costs that RAM.
        input[n - 2] = raw(0x20_0000, 0x1000, Ram);
        let (regions, issues) = run(&input, 48);
        assert_eq!(regions, vec![(0, MAX_RAW_ENTRIES as u64 * 0x10_0000, Ram)]);
        assert_eq!(issues, vec![MapIssue::TooManyRegions { dropped_from: MAX_RAW_ENTRIES }]);
    }

    #[test]
    fn empty_and_all_invalid_inputs() {
        assert_eq!(run(&[], 48), (vec![], vec![]));
        let (regions, issues) = run(&[raw(0, 0, Ram), raw(5, u64::MAX, Ram)], 48);
        assert_eq!(regions, vec![]);
        assert_eq!(issues.len(), 2);
        // A zero address width leaves nothing.
        let (regions, _) = run(&[raw(0, 0x1000, Ram)], 0);
        assert_eq!(regions, vec![]);
    }

    #[test]
    fn sanitize_clears_the_output() {
        let mut map = MemoryMap::new();
        sanitize(&[raw(0, 0x1000, Ram)], 48, &mut map, &mut |_| {});
        sanitize(&[raw(0x5000, 0x1000, Reserved)], 48, &mut map, &mut |_| {});
        assert_eq!(map.regions().len(), 1);
        assert_eq!(map.max_ram_end(), PhysAddr::new(0));
    }

    #[test]
    fn every_issue_displays_a_sentence() {
        let issues = [
            MapIssue::ZeroLength { index: 3 },
            MapIssue::Wraps { index: 1, base: 1, len: u64::MAX },
            MapIssue::Overlap { first: 0, second: 2, start: 0x1000, end: 0x2000, winner: Reserved },
            MapIssue::TooManyRegions { dropped_from: 1024 },
            MapIssue::Truncated { from: 0x1000 },
        ];
        let texts: Vec<_> = issues.iter().map(|i| format!("{i}")).collect();
        assert!(texts[0].contains("entry 3"));
        assert!(texts[1].contains("0xffffffffffffffff"));
        assert!(texts[2].contains("[0x1000, 0x2000)") && texts[2].contains("reserved"));
        assert!(texts[3].contains("1024"));
        assert!(texts[4].contains("0x1000"));
    }

    // ---- property tests against a brute-force model ----

    /// Model granularity: 256 bytes, so RAM can be unaligned by whole units.
    const UNIT: u64 = 256;
    /// Entries start below unit 512 and are shorter than 171 units; the model
    /// covers 256 KiB = 2^18 bytes, the largest limit tested.
    const UNITS: usize = 1024;
    const UNITS_PER_PAGE: usize = (PAGE_SIZE / UNIT) as usize;

    fn arb_kind() -> impl Strategy<Value = RegionKind> {
        prop_oneof![
            4 => Just(Ram),
            2 => Just(Reserved),
            1 => Just(AcpiReclaimable),
            1 => Just(AcpiNvs),
            1 => Just(Unusable),
            1 => Just(Persistent),
            1 => Just(Unknown(0)),
            1 => Just(Unknown(12)),
        ]
    }

    fn arb_small_raw() -> impl Strategy<Value = RawRegion> {
        (0..512u64, 0..171u64, arb_kind()).prop_map(|(b, l, kind)| RawRegion { base: b * UNIT, len: l * UNIT, kind })
    }

    /// Byte-unit model: winner per unit, runs merged, RAM trimmed inward.
    fn model(input: &[RawRegion], bits: u8) -> Vec<(u64, u64, RegionKind)> {
        let limit_units = ((1u64 << bits) / UNIT).min(UNITS as u64) as usize;
        let mut unit: Vec<Option<RegionKind>> = vec![None; UNITS];
        for r in input {
            let (b, l) = ((r.base / UNIT) as usize, (r.len / UNIT) as usize);
            for u in unit.iter_mut().take((b + l).min(limit_units)).skip(b) {
                *u = Some(u.map_or(r.kind.normalized(), |k| k.more_restrictive(r.kind)));
            }
        }
        let mut runs: Vec<(usize, usize, RegionKind)> = Vec::new();
        for (i, u) in unit.iter().enumerate() {
            let Some(k) = *u else { continue };
            match runs.last_mut() {
                Some(last) if last.1 == i && last.2 == k => last.1 = i + 1,
                _ => runs.push((i, i + 1, k)),
            }
        }
        runs.into_iter()
            .filter_map(|(s, e, k)| {
                let (s, e) = if k == Ram {
                    (s.next_multiple_of(UNITS_PER_PAGE), e / UNITS_PER_PAGE * UNITS_PER_PAGE)
                } else {
                    (s, e)
                };
                (s < e).then_some((s as u64 * UNIT, e as u64 * UNIT, k))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn sanitize_matches_model(
            input in proptest::collection::vec(arb_small_raw(), 0..24),
            bits in 13u8..=18,
        ) {
            let (regions, issues) = run(&input, bits);
            for w in regions.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "sorted and disjoint");
                prop_assert!(w[0].1 < w[1].0 || w[0].2 != w[1].2, "same kind merged");
            }
            for &(s, e, k) in &regions {
                prop_assert!(s < e);
                if k == Ram {
                    prop_assert!(s % PAGE_SIZE == 0 && e % PAGE_SIZE == 0);
                }
            }
            prop_assert_eq!(&regions, &model(&input, bits));

            let limit = 1u64 << bits;
            let valid: Vec<_> = input.iter().map(|r| clip(r, Some(limit))).collect();
            let mut overlaps = 0;
            for (i, a) in valid.iter().enumerate() {
                for b in &valid[i + 1..] {
                    if let (Some(a), Some(b)) = (a, b) {
                        overlaps += usize::from(a.start.max(b.start) < a.end.min(b.end));
                    }
                }
            }
            let count = |f: fn(&MapIssue) -> bool| issues.iter().filter(|i| f(i)).count();
            prop_assert_eq!(count(|i| matches!(i, MapIssue::Overlap { .. })), overlaps);
            prop_assert_eq!(
                count(|i| matches!(i, MapIssue::ZeroLength { .. })),
                input.iter().filter(|r| r.len == 0).count()
            );
            prop_assert_eq!(
                count(|i| matches!(i, MapIssue::BeyondAddressWidth { .. })),
                input.iter().filter(|r| r.len != 0 && r.base + r.len > limit).count()
            );
        }

        #[test]
        fn sanitize_never_panics_on_arbitrary_input(
            input in proptest::collection::vec(
                (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(base, len, t)| RawRegion {
                    base, len, kind: RegionKind::from_e820(t % 10),
                }),
                0..40,
            ),
            bits in any::<u8>(),
        ) {
            let (regions, _) = run(&input, bits);
            for w in regions.windows(2) {
                prop_assert!(w[0].1 <= w[1].0);
            }
            for &(s, e, k) in &regions {
                prop_assert!(s < e);
                prop_assert!(k != Ram || (s % PAGE_SIZE == 0 && e % PAGE_SIZE == 0));
                // The region's first and last bytes come from input entries of its kind.
                let covered = |x: u64| input.iter().any(|r| {
                    r.kind.normalized() == k
                        && r.base <= x
                        && r.base.checked_add(r.len).is_some_and(|end| x < end)
                });
                prop_assert!(covered(s) && covered(e - 1));
            }
        }
    }
}
