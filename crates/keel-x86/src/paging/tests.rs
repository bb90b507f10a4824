//! Page-table walks over a fake guest memory with hand-built tables in every paging mode.

use super::*;
use core::cell::{Cell, RefCell};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const P: u64 = PTE_P;
const RW: u64 = PTE_RW;
const US: u64 = PTE_US;
const A: u64 = PTE_A;
const D: u64 = PTE_D;
const PS: u64 = PTE_PS;
const NX: u64 = PTE_NX;
/// Present, writable, user.
const URW: u64 = P | RW | US;

const CR0_PE: u64 = 1;
const EFER_LME: u64 = 1 << 8;

/// Guest memory starting at GPA 0; table pages are handed out from 0x1000 up.
struct Mem {
    bytes: RefCell<Vec<u8>>,
    next_page: Cell<u64>,
    /// Makes every compare-exchange lose its race.
    lose_races: bool,
    reads: Cell<usize>,
}

impl Mem {
    fn new(pages: usize) -> Self {
        Self {
            bytes: RefCell::new(vec![0; pages * 4096]),
            next_page: Cell::new(0x1000),
            lose_races: false,
            reads: Cell::new(0),
        }
    }

    fn alloc(&self) -> u64 {
        let page = self.next_page.get();
        assert!((page as usize) < self.bytes.borrow().len(), "test memory exhausted");
        self.next_page.set(page + 0x1000);
        page
    }

    fn range(&self, gpa: Gpa, len: usize) -> Result<core::ops::Range<usize>, GuestMemError> {
        let start = usize::try_from(gpa.as_u64()).map_err(|_| GuestMemError)?;
        let end = start.checked_add(len).ok_or(GuestMemError)?;
        if end <= self.bytes.borrow().len() {
            Ok(start..end)
        } else {
            Err(GuestMemError)
        }
    }

    fn w64(&self, gpa: u64, v: u64) {
        let r = self.range(Gpa::new(gpa), 8).unwrap();
        self.bytes.borrow_mut()[r].copy_from_slice(&v.to_le_bytes());
    }

    fn r64(&self, gpa: u64) -> u64 {
        let r = self.range(Gpa::new(gpa), 8).unwrap();
        u64::from_le_bytes(self.bytes.borrow()[r].try_into().unwrap())
    }

    fn w32(&self, gpa: u64, v: u32) {
        let r = self.range(Gpa::new(gpa), 4).unwrap();
        self.bytes.borrow_mut()[r].copy_from_slice(&v.to_le_bytes());
    }

    fn r32(&self, gpa: u64) -> u32 {
        let r = self.range(Gpa::new(gpa), 4).unwrap();
        u32::from_le_bytes(self.bytes.borrow()[r].try_into().unwrap())
    }
}

impl GuestPhys for Mem {
    fn read_u32(&self, gpa: Gpa) -> Result<u32, GuestMemError> {
        self.reads.set(self.reads.get() + 1);
        let r = self.range(gpa, 4)?;
        Ok(u32::from_le_bytes(self.bytes.borrow()[r].try_into().unwrap()))
    }

    fn read_u64(&self, gpa: Gpa) -> Result<u64, GuestMemError> {
        self.reads.set(self.reads.get() + 1);
        let r = self.range(gpa, 8)?;
        Ok(u64::from_le_bytes(self.bytes.borrow()[r].try_into().unwrap()))
    }

    fn compare_exchange_u32(&self, gpa: Gpa, current: u32, new: u32) -> Result<bool, GuestMemError> {
        if self.read_u32(gpa)? != current || self.lose_races {
            return Ok(false);
        }
        self.w32(gpa.as_u64(), new);
        Ok(true)
    }

    fn compare_exchange_u64(&self, gpa: Gpa, current: u64, new: u64) -> Result<bool, GuestMemError> {
        if self.read_u64(gpa)? != current || self.lose_races {
            return Ok(false);
        }
        self.w64(gpa.as_u64(), new);
        Ok(true)
    }
}

/// Builds PAE/4-level/5-level tables under `root` mapping `linear` to `phys`. `flags` are the
/// entries' flags from the top level down; the last is the leaf (PS is added for large leaves).
/// Returns the GPAs of the entries written, top first.
fn map_wide(mem: &Mem, root: u64, levels: u32, linear: u64, flags: &[u64], phys: u64) -> Vec<u64> {
    let pae = levels == 3;
    let mut table = root;
    let mut entries = Vec::new();
    for (i, &f) in flags.iter().enumerate() {
        let level = levels - i as u32;
        let shift = 12 + 9 * (level - 1);
        let index = (linear >> shift) & if pae && level == 3 { 3 } else { 0x1ff };
        let gpa = table + index * 8;
        entries.push(gpa);
        if i + 1 == flags.len() {
            let ps = if level > 1 { PS } else { 0 };
            mem.w64(gpa, phys | f | ps);
        } else {
            let existing = mem.r64(gpa);
            let next =
                if existing & 0x000f_ffff_ffff_f000 != 0 { existing & 0x000f_ffff_ffff_f000 } else { mem.alloc() };
            mem.w64(gpa, next | f);
            table = next;
        }
    }
    entries
}

fn long4(cr3: u64) -> PagingMode {
    PagingMode {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA | EFER_NXE,
        maxphyaddr: 40,
    }
}

fn long5(cr3: u64) -> PagingMode {
    PagingMode { cr4: CR4_PAE | CR4_LA57, ..long4(cr3) }
}

fn pae(cr3: u64) -> PagingMode {
    PagingMode { cr0: CR0_PE | CR0_PG | CR0_WP, cr3, cr4: CR4_PAE, efer: EFER_NXE, maxphyaddr: 40 }
}

fn legacy32(cr3: u64, pse: bool) -> PagingMode {
    PagingMode { cr0: CR0_PE | CR0_PG | CR0_WP, cr3, cr4: if pse { CR4_PSE } else { 0 }, efer: 0, maxphyaddr: 40 }
}

fn pf(error_code: u32) -> Result<Gpa, WalkError> {
    Err(WalkError::PageFault { error_code })
}

const USER_READ: Access = Access::READ.user();
const USER_WRITE: Access = Access::WRITE.user();
const USER_FETCH: Access = Access::FETCH.user();

#[test]
fn kinds() {
    let m = long4(0);
    assert_eq!(m.kind(), PagingKind::Level4);
    assert_eq!(long5(0).kind(), PagingKind::Level5);
    assert_eq!(pae(0).kind(), PagingKind::Pae);
    assert_eq!(legacy32(0, true).kind(), PagingKind::Bits32);
    assert_eq!(PagingMode { cr0: CR0_PE, ..m }.kind(), PagingKind::Off);
}

#[test]
fn paging_off_is_identity_and_reads_nothing() {
    let mem = Mem::new(1);
    let mode = PagingMode { cr0: CR0_PE, cr3: 0xdead_0000, cr4: 0, efer: 0, maxphyaddr: 40 };
    assert_eq!(translate(&mem, &mode, 0xfee0_0300, Access::WRITE), Ok(Gpa::new(0xfee0_0300)));
    // Linear addresses are 32 bits wide outside long mode.
    assert_eq!(translate(&mem, &mode, 0x1_0000_1234, USER_FETCH), Ok(Gpa::new(0x1234)));
    assert_eq!(mem.reads.get(), 0);
}

#[test]
fn four_level_4k_page_and_accessed_dirty_bits() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let lin = 0x0000_7fff_1234_5000;
    let entries = map_wide(&mem, root, 4, lin, &[URW, URW, URW, URW], 0xab_cdef_0000);
    let mode = long4(root);
    assert_eq!(translate(&mem, &mode, lin + 0x678, USER_READ), Ok(Gpa::new(0xab_cdef_0678)));
    for &e in &entries {
        assert_eq!(mem.r64(e) & (A | D), A, "entry at {e:#x} accessed, not dirty");
    }
    assert_eq!(translate(&mem, &mode, lin + 0xfff, Access::WRITE), Ok(Gpa::new(0xab_cdef_0fff)));
    let (leaf, upper) = entries.split_last().unwrap();
    assert_eq!(mem.r64(*leaf) & (A | D), A | D);
    for &e in upper {
        assert_eq!(mem.r64(e) & D, 0, "only the leaf becomes dirty");
    }
    // The address bits are untouched.
    assert_eq!(mem.r64(*leaf) & 0x000f_ffff_ffff_f000, 0xab_cdef_0000);
}

#[test]
fn four_level_large_pages() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let mode = long4(root);
    // 2 MiB page.
    let lin2m = 0xffff_8000_0040_0000;
    let e2m = map_wide(&mem, root, 4, lin2m, &[URW, URW, URW], 0x1_2340_0000);
    assert_eq!(translate(&mem, &mode, lin2m + 0x1f_ffff, Access::READ), Ok(Gpa::new(0x1_235f_ffff)));
    assert_eq!(translate(&mem, &mode, lin2m + 0x12_3456, Access::WRITE), Ok(Gpa::new(0x1_2352_3456)));
    assert_eq!(mem.r64(e2m[2]) & (A | D | PS), A | D | PS);
    // 1 GiB page.
    let lin1g = 0x0000_0040_0000_0000;
    map_wide(&mem, root, 4, lin1g, &[URW, URW], 0x80_4000_0000);
    assert_eq!(translate(&mem, &mode, lin1g + 0x3fff_ffff, Access::READ), Ok(Gpa::new(0x80_7fff_ffff)));
    assert_eq!(translate(&mem, &mode, lin1g + 0x1234_5678, USER_WRITE), Ok(Gpa::new(0x80_5234_5678)));
}

#[test]
fn not_present_at_every_level() {
    for missing in 0..4 {
        let mem = Mem::new(16);
        let root = mem.alloc();
        let lin = 0x0000_1234_5678_9000;
        let mut flags = [URW; 4];
        flags[missing] = RW | US;
        map_wide(&mem, root, 4, lin, &flags, 0x5000);
        let mode = long4(root);
        assert_eq!(translate(&mem, &mode, lin, Access::READ), pf(0), "level {}", 4 - missing);
        assert_eq!(translate(&mem, &mode, lin, Access::WRITE), pf(PFEC_WRITE));
        assert_eq!(translate(&mem, &mode, lin, USER_READ), pf(PFEC_USER));
        assert_eq!(translate(&mem, &mode, lin, USER_WRITE), pf(PFEC_USER | PFEC_WRITE));
        assert_eq!(translate(&mem, &mode, lin, Access::FETCH), pf(PFEC_FETCH));
        assert_eq!(translate(&mem, &mode, lin, USER_FETCH), pf(PFEC_USER | PFEC_FETCH));
    }
}

#[test]
fn empty_tables_fault_and_set_nothing() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    assert_eq!(translate(&mem, &long4(root), 0x1000, Access::READ), pf(0));
    // A walk that faults late sets no accessed bits on the way.
    let lin = 0x7000_0000;
    let entries = map_wide(&mem, root, 4, lin, &[URW, URW, URW, RW], 0x5000);
    assert_eq!(translate(&mem, &long4(root), lin, Access::READ), pf(0));
    for e in entries {
        assert_eq!(mem.r64(e) & A, 0);
    }
}

#[test]
fn reserved_bits_long_mode() {
    let rsvd = PFEC_PRESENT | PFEC_RESERVED;
    let lin = 0x0000_0012_3456_7000;
    let cases: &[(&str, &[u64], Result<(), ()>)] = &[
        ("PS in a PML4E", &[URW | PS, URW, URW, URW], Err(())),
        ("address bit above MAXPHYADDR in a PTE", &[URW, URW, URW, URW | 1 << 45], Err(())),
        ("address bit 51 in a PDPTE", &[URW, URW | 1 << 51, URW, URW], Err(())),
        ("bits 62:52 are software-available in long mode", &[URW | 1 << 52, URW, URW, URW | 0x7ff << 52], Ok(())),
        ("ignored bits 11:9", &[URW | 0xe00, URW, URW, URW | 0xe00], Ok(())),
        ("2 MiB page with bit 13 set", &[URW, URW, URW | 1 << 13], Err(())),
        ("2 MiB page with bit 12 (PAT) set", &[URW, URW, URW | 1 << 12], Ok(())),
        ("1 GiB page with bit 29 set", &[URW, URW | 1 << 29], Err(())),
    ];
    for (what, flags, expect) in cases {
        let mem = Mem::new(16);
        let root = mem.alloc();
        let phys = match flags.len() {
            2 => 0x4000_0000,
            3 => 0x20_0000,
            _ => 0x5000,
        };
        map_wide(&mem, root, 4, lin, flags, phys);
        let r = translate(&mem, &long4(root), lin, Access::READ);
        match expect {
            Ok(()) => assert!(r.is_ok(), "{what}: {r:?}"),
            Err(()) => assert_eq!(r, pf(rsvd), "{what}"),
        }
        // Reserved-bit faults report the access kind too.
        if expect.is_err() {
            assert_eq!(translate(&mem, &long4(root), lin, USER_WRITE), pf(rsvd | PFEC_USER | PFEC_WRITE), "{what}");
        }
    }
}

#[test]
fn nx_bit() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let lin = 0x40_0000;
    map_wide(&mem, root, 4, lin, &[URW, URW, URW | NX, URW], 0x9000);
    let mode = long4(root);
    assert_eq!(translate(&mem, &mode, lin, Access::READ), Ok(Gpa::new(0x9000)));
    assert_eq!(translate(&mem, &mode, lin, Access::FETCH), pf(PFEC_PRESENT | PFEC_FETCH));
    assert_eq!(translate(&mem, &mode, lin, USER_FETCH), pf(PFEC_PRESENT | PFEC_FETCH | PFEC_USER));
    // Without EFER.NXE bit 63 is reserved.
    let no_nx = PagingMode { efer: EFER_LME | EFER_LMA, ..mode };
    assert_eq!(translate(&mem, &no_nx, lin, Access::READ), pf(PFEC_PRESENT | PFEC_RESERVED));
    // And fetch faults carry no I/D bit (unless SMEP is on).
    let other = 0x80_0000;
    assert_eq!(translate(&mem, &no_nx, other, Access::FETCH), pf(0));
    let smep = PagingMode { cr4: CR4_PAE | CR4_SMEP, ..no_nx };
    assert_eq!(translate(&mem, &smep, other, Access::FETCH), pf(PFEC_FETCH));
}

#[test]
fn user_supervisor_and_write_protect() {
    let mem = Mem::new(32);
    let root = mem.alloc();
    let mode = long4(root);
    // Supervisor-only at the PDPT level.
    let kernel = 0x1000_0000;
    map_wide(&mem, root, 4, kernel, &[URW, P | RW, URW, URW], 0x1_0000);
    assert_eq!(translate(&mem, &mode, kernel, Access::WRITE), Ok(Gpa::new(0x1_0000)));
    assert_eq!(translate(&mem, &mode, kernel, USER_READ), pf(PFEC_PRESENT | PFEC_USER));
    assert_eq!(translate(&mem, &mode, kernel, USER_FETCH), pf(PFEC_PRESENT | PFEC_USER | PFEC_FETCH));
    // Read-only at the PML4 level.
    let ro = 0x0000_0080_0000_0000;
    map_wide(&mem, root, 4, ro, &[P | US, URW, URW, URW], 0x2_0000);
    assert_eq!(translate(&mem, &mode, ro, USER_READ), Ok(Gpa::new(0x2_0000)));
    assert_eq!(translate(&mem, &mode, ro, USER_WRITE), pf(PFEC_PRESENT | PFEC_USER | PFEC_WRITE));
    assert_eq!(translate(&mem, &mode, ro, Access::WRITE), pf(PFEC_PRESENT | PFEC_WRITE));
    // With CR0.WP clear supervisor writes ignore R/W; user writes do not.
    let no_wp = PagingMode { cr0: CR0_PE | CR0_PG, ..mode };
    assert_eq!(translate(&mem, &no_wp, ro, Access::WRITE), Ok(Gpa::new(0x2_0000)));
    assert_eq!(translate(&mem, &no_wp, ro, USER_WRITE), pf(PFEC_PRESENT | PFEC_USER | PFEC_WRITE));
    // A fully user-accessible page: SMEP/SMAP are not enforced for supervisor accesses.
    let user = 0x0000_0100_0000_0000;
    map_wide(&mem, root, 4, user, &[URW, URW, URW, URW], 0x3_0000);
    let smep = PagingMode { cr4: CR4_PAE | CR4_SMEP | (1 << 21), ..mode };
    assert_eq!(translate(&mem, &smep, user, Access::FETCH), Ok(Gpa::new(0x3_0000)));
    assert_eq!(translate(&mem, &smep, user, Access::WRITE), Ok(Gpa::new(0x3_0000)));
}

#[test]
fn canonical_addresses() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let mode = long4(root);
    assert_eq!(translate(&mem, &mode, 0x0000_8000_0000_0000, Access::READ), Err(WalkError::NonCanonical));
    assert_eq!(translate(&mem, &mode, 0xffff_7fff_ffff_ffff, Access::READ), Err(WalkError::NonCanonical));
    assert_eq!(translate(&mem, &mode, 0x00ff_0000_0000_1000, Access::READ), Err(WalkError::NonCanonical));
    // Canonical but unmapped: a page fault, not #GP.
    assert_eq!(translate(&mem, &mode, 0xffff_8000_0000_0000, Access::READ), pf(0));
    assert_eq!(translate(&mem, &mode, 0x0000_7fff_ffff_f000, Access::READ), pf(0));
    // The top half indexes the upper PML4 entries.
    let high = 0xffff_ff80_0000_0000;
    let e = map_wide(&mem, root, 4, high, &[URW, URW, URW, URW], 0x7000);
    assert_eq!(e[0], root + 511 * 8);
    assert_eq!(translate(&mem, &mode, high + 0x10, Access::READ), Ok(Gpa::new(0x7010)));
}

#[test]
fn five_level_paging() {
    let mem = Mem::new(32);
    let root = mem.alloc();
    let mode = long5(root);
    let lin = 0x00ff_0000_0000_1000; // canonical only with 57 bits
    let e = map_wide(&mem, root, 5, lin, &[URW, URW, URW, URW, URW], 0x6000);
    assert_eq!(e[0], root + 0xff * 8);
    assert_eq!(translate(&mem, &mode, lin + 0x10, Access::WRITE), Ok(Gpa::new(0x6010)));
    for gpa in &e {
        assert_ne!(mem.r64(*gpa) & A, 0);
    }
    assert_eq!(translate(&mem, &mode, 0x0100_0000_0000_0000, Access::READ), Err(WalkError::NonCanonical));
    assert_eq!(translate(&mem, &mode, 0xff00_0000_0000_0000, Access::READ), pf(0));
    // PS in a PML5E is reserved.
    let lin2 = 0x0000_0000_0040_0000;
    let e2 = map_wide(&mem, root, 5, lin2, &[URW, URW, URW, URW, URW], 0x8000);
    mem.w64(e2[0], mem.r64(e2[0]) | PS);
    assert_eq!(translate(&mem, &mode, lin2, Access::READ), pf(PFEC_PRESENT | PFEC_RESERVED));
    // 1 GiB pages under 5-level paging.
    let lin3 = 0x0001_0000_4000_0000;
    map_wide(&mem, root, 5, lin3, &[URW, URW, URW], 0xc000_0000);
    assert_eq!(translate(&mem, &mode, lin3 + 0x123, Access::READ), Ok(Gpa::new(0xc000_0123)));
}

#[test]
fn pae_paging() {
    let mem = Mem::new(16);
    let page = mem.alloc();
    let root = page + 0x20; // the PDPT only needs 32-byte alignment
    let mode = pae(root);
    let lin = 0xc012_3456;
    let e = map_wide(&mem, root, 3, lin, &[P, URW, URW], 0xf_ffff_f000);
    assert_eq!(e[0], root + 3 * 8);
    assert_eq!(translate(&mem, &mode, lin, Access::WRITE), Ok(Gpa::new(0xf_ffff_f456)));
    // PDPTEs have no A bit; the others get A, the leaf D.
    assert_eq!(mem.r64(e[0]) & (A | D), 0);
    assert_eq!(mem.r64(e[1]) & (A | D), A);
    assert_eq!(mem.r64(e[2]) & (A | D), A | D);
    // Linear addresses are 32 bits.
    assert_eq!(translate(&mem, &mode, 0x1_0000_0000 | lin, Access::READ), Ok(Gpa::new(0xf_ffff_f456)));
    // 2 MiB page.
    let lin2m = 0x4060_0000;
    map_wide(&mem, root, 3, lin2m, &[P, URW], 0x1_0020_0000);
    assert_eq!(translate(&mem, &mode, lin2m + 0x1234, USER_READ), Ok(Gpa::new(0x1_0020_1234)));
    // NX.
    let nx = 0x0080_0000;
    map_wide(&mem, root, 3, nx, &[P, URW | NX, URW], 0x3000);
    assert_eq!(translate(&mem, &mode, nx, Access::FETCH), pf(PFEC_PRESENT | PFEC_FETCH));
    // Not present.
    assert_eq!(translate(&mem, &mode, 0x8000_0000, Access::READ), pf(0));
}

#[test]
fn pae_reserved_bits() {
    let rsvd = PFEC_PRESENT | PFEC_RESERVED;
    let lin = 0x0040_1000;
    let cases: &[(&str, &[u64], bool)] = &[
        ("R/W in a PDPTE", &[P | RW, URW, URW], false),
        ("U/S in a PDPTE", &[P | US, URW, URW], false),
        ("PS in a PDPTE", &[P | PS, URW, URW], false),
        ("NX in a PDPTE", &[P | NX, URW, URW], false),
        ("PWT/PCD in a PDPTE", &[P | 0x18, URW, URW], true),
        ("bit 52 in a PDE: reserved under PAE", &[P, URW | 1 << 52, URW], false),
        ("bit 62 in a PTE", &[P, URW, URW | 1 << 62], false),
        ("address above MAXPHYADDR", &[P, URW, URW | 1 << 40], false),
        ("2 MiB page with bit 20 set", &[P, URW | 1 << 20], false),
    ];
    for (what, flags, ok) in cases {
        let mem = Mem::new(16);
        let root = mem.alloc();
        let phys = if flags.len() == 2 { 0x20_0000 } else { 0x5000 };
        map_wide(&mem, root, 3, lin, flags, phys);
        let r = translate(&mem, &pae(root), lin, Access::READ);
        if *ok {
            assert!(r.is_ok(), "{what}: {r:?}");
        } else {
            assert_eq!(r, pf(rsvd), "{what}");
        }
    }
}

/// Builds 32-bit tables: a 4 KiB mapping if `pte` is given, else a 4 MiB PDE leaf.
fn map32(mem: &Mem, root: u64, linear: u64, pde: u32, pte: Option<u32>, phys: u32) -> (u64, Option<u64>) {
    let pde_gpa = root + ((linear >> 22) & 0x3ff) * 4;
    match pte {
        None => {
            mem.w32(pde_gpa, phys | pde);
            (pde_gpa, None)
        }
        Some(pte) => {
            let existing = mem.r32(pde_gpa) & 0xffff_f000;
            let table = if existing != 0 { u64::from(existing) } else { mem.alloc() };
            mem.w32(pde_gpa, table as u32 | pde);
            let pte_gpa = table + ((linear >> 12) & 0x3ff) * 4;
            mem.w32(pte_gpa, phys | pte);
            (pde_gpa, Some(pte_gpa))
        }
    }
}

#[test]
fn legacy_32bit_paging() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let mode = legacy32(root, true);
    let urw = URW as u32;
    let (pde, pte) = map32(&mem, root, 0xc010_2000, urw, Some(urw), 0x0abc_d000);
    assert_eq!(translate(&mem, &mode, 0xc010_2abc, Access::READ), Ok(Gpa::new(0x0abc_dabc)));
    assert_eq!(mem.r32(pde) as u64 & (A | D), A);
    assert_eq!(mem.r32(pte.unwrap()) as u64 & (A | D), A);
    assert_eq!(translate(&mem, &mode, 0xc010_2000, USER_WRITE), Ok(Gpa::new(0x0abc_d000)));
    assert_eq!(mem.r32(pte.unwrap()) as u64 & (A | D), A | D);
    assert_eq!(mem.r32(pde) as u64 & D, 0);
    // No NX in 32-bit paging: fetches are always allowed and report no I/D bit.
    assert_eq!(translate(&mem, &mode, 0xc010_2000, USER_FETCH), Ok(Gpa::new(0x0abc_d000)));
    assert_eq!(translate(&mem, &mode, 0x1000, Access::FETCH), pf(0));
    // Linear addresses are 32 bits.
    assert_eq!(translate(&mem, &mode, 0xffff_ffff_c010_2004, Access::READ), Ok(Gpa::new(0x0abc_d004)));
    // Read-only PDE, user-only PTE.
    let (_, _) = map32(&mem, root, 0x0040_0000, (P | US) as u32, Some(urw), 0x5000);
    assert_eq!(translate(&mem, &mode, 0x0040_0000, USER_WRITE), pf(PFEC_PRESENT | PFEC_USER | PFEC_WRITE));
    assert_eq!(translate(&mem, &mode, 0x0040_0000, Access::WRITE), pf(PFEC_PRESENT | PFEC_WRITE));
    let no_wp = PagingMode { cr0: CR0_PE | CR0_PG, ..mode };
    assert_eq!(translate(&mem, &no_wp, 0x0040_0000, Access::WRITE), Ok(Gpa::new(0x5000)));
    let (_, _) = map32(&mem, root, 0x0080_0000, urw, Some((P | RW) as u32), 0x6000);
    assert_eq!(translate(&mem, &mode, 0x0080_0000, USER_READ), pf(PFEC_PRESENT | PFEC_USER));
    // Not-present PTE.
    let (_, _) = map32(&mem, root, 0x00c0_0000, urw, Some(RW as u32), 0x7000);
    assert_eq!(translate(&mem, &mode, 0x00c0_0000, Access::WRITE), pf(PFEC_WRITE));
    // SMEP makes fetch faults report I/D even here.
    let smep = PagingMode { cr4: CR4_PSE | CR4_SMEP, ..mode };
    assert_eq!(translate(&mem, &smep, 0x1000, Access::FETCH), pf(PFEC_FETCH));
}

#[test]
fn legacy_32bit_large_pages() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let urw = URW as u32;
    let ps = PS as u32;
    let (pde, _) = map32(&mem, root, 0x8000_0000, urw | ps, None, 0x1240_0000);
    let mode = legacy32(root, true);
    assert_eq!(translate(&mem, &mode, 0x803f_fffe, Access::WRITE), Ok(Gpa::new(0x127f_fffe)));
    assert_eq!(mem.r32(pde) as u64 & (A | D), A | D);
    // PSE-36: PDE bits 20:13 are physical-address bits 39:32.
    map32(&mem, root, 0x8040_0000, urw | ps | (0x85 << 13), None, 0x0040_0000);
    assert_eq!(translate(&mem, &mode, 0x8040_0123, Access::READ), Ok(Gpa::new(0x85_0040_0123)));
    // With a 36-bit physical address width bits 20:17 are reserved.
    let narrow = PagingMode { maxphyaddr: 36, ..mode };
    assert_eq!(translate(&mem, &narrow, 0x8040_0123, Access::READ), pf(PFEC_PRESENT | PFEC_RESERVED));
    // Bit 21 is always reserved in a 4 MiB PDE.
    map32(&mem, root, 0x8080_0000, urw | ps | 1 << 21, None, 0x0080_0000);
    assert_eq!(translate(&mem, &mode, 0x8080_0000, Access::READ), pf(PFEC_PRESENT | PFEC_RESERVED));
    // Without CR4.PSE the PS bit is ignored and the PDE points to a page table.
    let table = mem.alloc();
    mem.w32(table + 4, 0x0055_5000 | urw);
    mem.w32(root + 0x300 * 4, table as u32 | urw | ps);
    let no_pse = legacy32(root, false);
    assert_eq!(translate(&mem, &no_pse, 0xc000_1010, Access::READ), Ok(Gpa::new(0x0055_5010)));
    // With it, the same PDE is a 4 MiB page whose PSE-36 bits come from the table address.
    let large = (((table >> 13) & 0xff) << 32) | 0x1010;
    assert_eq!(translate(&mem, &mode, 0xc000_1010, Access::READ), Ok(Gpa::new(large)));
}

#[test]
fn unreadable_tables_are_bad_gpa() {
    let mem = Mem::new(4);
    let root = 0x10_0000; // outside the fake memory
    assert_eq!(
        translate(&mem, &long4(root), 0xffff_8000_0000_0000, Access::READ),
        Err(WalkError::BadGpa { gpa: Gpa::new(root + 256 * 8) })
    );
    let root = mem.alloc();
    mem.w64(root, 0x7fff_f000 | URW);
    assert_eq!(
        translate(&mem, &long4(root), 0x10, Access::READ),
        Err(WalkError::BadGpa { gpa: Gpa::new(0x7fff_f000) })
    );
    assert_eq!(
        translate(&mem, &legacy32(0x4000_0000, true), 0, Access::READ),
        Err(WalkError::BadGpa { gpa: Gpa::new(0x4000_0000) })
    );
}

#[test]
fn lost_accessed_dirty_races_leave_entries_alone() {
    let mut mem = Mem::new(16);
    mem.lose_races = true;
    let root = mem.alloc();
    let lin = 0x1234_5000;
    let entries = map_wide(&mem, root, 4, lin, &[URW, URW, URW, URW], 0x9000);
    let before: Vec<u64> = entries.iter().map(|&e| mem.r64(e)).collect();
    assert_eq!(translate(&mem, &long4(root), lin, Access::WRITE), Ok(Gpa::new(0x9000)));
    let after: Vec<u64> = entries.iter().map(|&e| mem.r64(e)).collect();
    assert_eq!(before, after);
}

#[test]
fn already_accessed_entries_are_not_rewritten() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let lin = 0x1234_5000;
    map_wide(&mem, root, 4, lin, &[URW | A, URW | A, URW | A, URW | A | D], 0x9000);
    let reads_before = mem.reads.get();
    assert_eq!(translate(&mem, &long4(root), lin, Access::WRITE), Ok(Gpa::new(0x9000)));
    // Four table reads, no compare-exchange (which would read again).
    assert_eq!(mem.reads.get() - reads_before, 4);
}

#[test]
fn odd_physical_address_widths_are_clamped() {
    let mem = Mem::new(16);
    let root = mem.alloc();
    let lin = 0x5000;
    map_wide(&mem, root, 4, lin, &[URW, URW, URW, URW | 1 << 51], 0x5000);
    let wide = PagingMode { maxphyaddr: 255, ..long4(root) };
    assert_eq!(translate(&mem, &wide, lin, Access::READ), Ok(Gpa::new(0x8_0000_0000_5000)));
    let tiny = PagingMode { maxphyaddr: 0, ..long4(root) };
    assert_eq!(translate(&mem, &tiny, lin, Access::READ), pf(PFEC_PRESENT | PFEC_RESERVED));
}

#[test]
fn access_constructors() {
    assert_eq!(USER_WRITE, Access { write: true, user: true, fetch: false });
    assert_eq!(Access::default(), Access::READ);
    assert_eq!(USER_FETCH, Access { write: false, user: true, fetch: true });
}

#[test]
fn split_by_page_examples() {
    let v: Vec<_> = split_by_page(0x1000, 0).collect();
    assert!(v.is_empty());
    let v: Vec<_> = split_by_page(0x1ff0, 0x10).collect();
    assert_eq!(v, [(0x1ff0, 0x10)]);
    let v: Vec<_> = split_by_page(0x1ff0, 0x11).collect();
    assert_eq!(v, [(0x1ff0, 0x10), (0x2000, 1)]);
    let v: Vec<_> = split_by_page(0x1000, 0x2000).collect();
    assert_eq!(v, [(0x1000, 0x1000), (0x2000, 0x1000)]);
    let v: Vec<_> = split_by_page(0x1800, 0x2000).collect();
    assert_eq!(v, [(0x1800, 0x800), (0x2000, 0x1000), (0x3000, 0x800)]);
    let it = split_by_page(0x1800, 0x2000);
    assert_eq!(it.len(), 3);
    // Wrapping at the top of the address space.
    let v: Vec<_> = split_by_page(u64::MAX - 0xf, 0x20).collect();
    assert_eq!(v, [(u64::MAX - 0xf, 0x10), (0, 0x10)]);
}

/// A fake memory filled with arbitrary words, for walks over garbage tables.
struct Garbage {
    words: Vec<u64>,
}

impl GuestPhys for Garbage {
    fn read_u32(&self, gpa: Gpa) -> Result<u32, GuestMemError> {
        let w = self.read_u64(Gpa::new(gpa.as_u64() & !7))?;
        Ok((w >> ((gpa.as_u64() & 4) * 8)) as u32)
    }

    fn read_u64(&self, gpa: Gpa) -> Result<u64, GuestMemError> {
        let index = usize::try_from(gpa.as_u64() / 8).map_err(|_| GuestMemError)?;
        self.words.get(index).copied().ok_or(GuestMemError)
    }

    fn compare_exchange_u32(&self, _: Gpa, _: u32, _: u32) -> Result<bool, GuestMemError> {
        Err(GuestMemError)
    }

    fn compare_exchange_u64(&self, _: Gpa, _: u64, _: u64) -> Result<bool, GuestMemError> {
        Err(GuestMemError)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn walks_over_garbage_never_panic(
        // Words mostly point back into the 8 KiB of fake memory, with random flag bits.
        words in prop::collection::vec(
            prop_oneof![any::<u64>(), (0u64..2, any::<u16>(), any::<u64>()).prop_map(|(page, flags, high)| {
                (page << 12) | u64::from(flags & 0xfff) | (high & 0xfff0_0000_0000_0000)
            })],
            1024,
        ),
        cr0 in any::<u64>(), cr3 in 0u64..0x2000, cr4 in any::<u64>(), efer in any::<u64>(),
        maxphyaddr in any::<u8>(), linear in any::<u64>(),
        write in any::<bool>(), user in any::<bool>(), fetch in any::<bool>(),
    ) {
        let mem = Garbage { words };
        let mode = PagingMode { cr0, cr3, cr4, efer, maxphyaddr };
        match translate(&mem, &mode, linear, Access { write, user, fetch }) {
            Ok(gpa) => {
                prop_assert_eq!(gpa.page_offset(), linear & 0xfff);
                prop_assert!(gpa.as_u64() < 1 << 52);
            }
            Err(WalkError::PageFault { error_code }) => {
                prop_assert_eq!(error_code & !0x1f, 0);
                prop_assert_eq!(error_code & PFEC_WRITE != 0, write);
                prop_assert_eq!(error_code & PFEC_USER != 0, user);
                prop_assert!(error_code & PFEC_RESERVED == 0 || error_code & PFEC_PRESENT != 0);
            }
            Err(WalkError::NonCanonical) => prop_assert!(mode.kind() == PagingKind::Level4 || mode.kind() == PagingKind::Level5),
            Err(WalkError::BadGpa { .. }) => {}
        }
    }

    #[test]
    fn split_by_page_covers_the_buffer(linear in any::<u64>(), len in 0usize..0x5000) {
        let chunks: Vec<_> = split_by_page(linear, len).collect();
        prop_assert_eq!(chunks.len(), split_by_page(linear, len).len());
        prop_assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), len);
        let mut expect = linear;
        for (i, &(addr, n)) in chunks.iter().enumerate() {
            prop_assert_eq!(addr, expect);
            prop_assert!(n >= 1);
            // No piece crosses a page boundary; all but the first start on one.
            prop_assert!((addr & 0xfff) + n as u64 <= 0x1000);
            if i > 0 {
                prop_assert_eq!(addr & 0xfff, 0);
            }
            expect = addr.wrapping_add(n as u64);
        }
    }
}
