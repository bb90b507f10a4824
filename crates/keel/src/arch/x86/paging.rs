//! keel's own page tables: the direct map of physical memory, the image mapped W^X, per-CPU
//! stacks with guard pages, and uncached MMIO mappings.
//!
//! The boot code enters with temporary tables (identity-mapped low 4 GiB, image at its high
//! address, all RWX). `build` makes the real ones from frames of the boot-time allocator and
//! `activate` switches to them; from then on the low half of the address space is empty, so a
//! stray low pointer faults instead of touching memory.
//!
//! Page-table frames are reached through `phys_to_virt`: the identity map before `activate`
//! (so they must lie below 4 GiB then), the direct map after.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr as X86PhysAddr;

use super::cpu;
use super::layout::{pt_index, DIRECTMAP_BASE, DIRECTMAP_SIZE, IMAGE_VIRT_OFFSET, IOREMAP_BASE, IOREMAP_SIZE};

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const W: u64 = 1 << 1;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Large page (in a PDPT or PD entry).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// No execute.
    pub const NX: u64 = 1 << 63;
    /// Physical-address bits of an entry.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// What a mapping allows.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Access {
    /// Read-only data.
    Read,
    /// Read-write data.
    ReadWrite,
    /// Code: read and execute.
    ReadExecute,
    /// Device memory: read-write, uncached, never executed.
    Mmio,
}

static DIRECTMAP_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Where keel can reach physical address `pa` right now (see the module comment).
pub fn phys_to_virt(pa: u64) -> u64 {
    if DIRECTMAP_ACTIVE.load(Ordering::Relaxed) {
        DIRECTMAP_BASE + pa
    } else {
        pa
    }
}

/// Physical address of a direct-map (or image) virtual address.
pub fn virt_to_phys(va: u64) -> Option<u64> {
    if (DIRECTMAP_BASE..DIRECTMAP_BASE + DIRECTMAP_SIZE).contains(&va) {
        Some(va - DIRECTMAP_BASE)
    } else if (IMAGE_VIRT_OFFSET..IMAGE_VIRT_OFFSET + (1 << 30)).contains(&va) {
        Some(va - IMAGE_VIRT_OFFSET)
    } else {
        None
    }
}

/// A source of zeroed page-table frames.
pub trait FrameSource {
    /// A 4 KiB frame (physical address), not yet zeroed; `None` when memory is exhausted.
    fn frame(&mut self) -> Option<u64>;
}

/// Memory exhausted while building page tables.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub struct OutOfFrames;

fn table(pa: u64) -> *mut u64 {
    phys_to_virt(pa) as *mut u64
}

fn new_table(frames: &mut dyn FrameSource) -> Result<u64, OutOfFrames> {
    let pa = frames.frame().ok_or(OutOfFrames)?;
    // SAFETY: the frame was just handed to us by the allocator and is reachable at
    // `phys_to_virt(pa)` (identity below 4 GiB before activation, the direct map after).
    unsafe { core::ptr::write_bytes(table(pa), 0, 512) };
    Ok(pa)
}

/// An address space: the physical address of its PML4.
pub struct AddressSpace {
    root: u64,
    nx: u64,
    global: u64,
}

impl AddressSpace {
    /// An empty address space.
    pub fn new(frames: &mut dyn FrameSource) -> Result<Self, OutOfFrames> {
        let f = cpu::features();
        Ok(AddressSpace {
            root: new_table(frames)?,
            nx: if f.nx { pte::NX } else { 0 },
            global: if f.pge { pte::G } else { 0 },
        })
    }

    /// Physical address of the PML4.
    pub fn root(&self) -> u64 {
        self.root
    }

    fn leaf_flags(&self, access: Access) -> u64 {
        pte::P
            | self.global
            | match access {
                Access::Read => self.nx,
                Access::ReadWrite => pte::W | self.nx,
                Access::ReadExecute => 0,
                Access::Mmio => pte::W | pte::PCD | pte::PWT | self.nx,
            }
    }

    /// Map [va, va+len) to [pa, pa+len) using the largest pages alignment allows (1 GiB pages
    /// only with `allow_1g`). Existing mappings in the range are replaced only if they are
    /// not tables; ranges must not overlap differently-sized existing mappings.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        access: Access,
        allow_1g: bool,
        frames: &mut dyn FrameSource,
    ) -> Result<(), OutOfFrames> {
        let flags = self.leaf_flags(access);
        let end = va + len;
        let (mut va, mut pa) = (va, pa);
        while va < end {
            let left = end - va;
            let (level, size) = if allow_1g && va % (1 << 30) == 0 && pa % (1 << 30) == 0 && left >= 1 << 30 {
                (3, 1u64 << 30)
            } else if va % (1 << 21) == 0 && pa % (1 << 21) == 0 && left >= 1 << 21 {
                (2, 1u64 << 21)
            } else {
                (1, 1u64 << 12)
            };
            let entry = self.walk_create(va, level, frames)?;
            let large = if level > 1 { pte::PS } else { 0 };
            // SAFETY: `entry` points into a page table owned by this address space.
            unsafe { *entry = pa | flags | large };
            va += size;
            pa += size;
        }
        Ok(())
    }

    /// The entry for `va` at `level` (3 = PDPT, 2 = PD, 1 = PT), creating missing tables.
    fn walk_create(&mut self, va: u64, level: u32, frames: &mut dyn FrameSource) -> Result<*mut u64, OutOfFrames> {
        let mut tbl = self.root;
        for l in (level + 1..=4).rev() {
            // SAFETY: `tbl` is a page table of this address space, reachable via phys_to_virt.
            let e = unsafe { table(tbl).add(pt_index(va, l)) };
            // SAFETY: as above; the entry is read and possibly written by this CPU only
            // (callers hold the address space exclusively).
            let cur = unsafe { *e };
            if cur & pte::P == 0 {
                let t = new_table(frames)?;
                // Intermediate entries are permissive; leaves decide.
                // SAFETY: as above.
                unsafe { *e = t | pte::P | pte::W };
                tbl = t;
            } else {
                assert!(cur & pte::PS == 0, "mapping {va:#x} would split a large page");
                tbl = cur & pte::ADDR;
            }
        }
        // SAFETY: `tbl` is a table at `level`.
        Ok(unsafe { table(tbl).add(pt_index(va, level)) })
    }

    /// The leaf entry and page size mapping `va`, if mapped.
    pub fn lookup(&self, va: u64) -> Option<(u64, u64)> {
        let mut tbl = self.root;
        for level in (1..=4).rev() {
            // SAFETY: `tbl` is a page table of this address space.
            let e = unsafe { *table(tbl).add(pt_index(va, level)) };
            if e & pte::P == 0 {
                return None;
            }
            if level == 1 || e & pte::PS != 0 {
                return Some((e, 1u64 << (12 + 9 * (level - 1))));
            }
            tbl = e & pte::ADDR;
        }
        None
    }

    /// Visit every present leaf mapping (virtual address, entry, size) in the upper half.
    pub fn for_each_leaf(&self, mut f: impl FnMut(u64, u64, u64)) {
        fn walk(tbl: u64, level: u32, base: u64, f: &mut dyn FnMut(u64, u64, u64)) {
            for i in 0..512u64 {
                // SAFETY: `tbl` is a page table reachable via phys_to_virt.
                let e = unsafe { *table(tbl).add(i as usize) };
                if e & pte::P == 0 {
                    continue;
                }
                let mut va = base | (i << (12 + 9 * (level - 1)));
                if level == 4 && i >= 256 {
                    va |= 0xffff_0000_0000_0000;
                }
                if level == 1 || e & pte::PS != 0 {
                    f(va, e, 1u64 << (12 + 9 * (level - 1)));
                } else {
                    walk(e & pte::ADDR, level - 1, va, f);
                }
            }
        }
        walk(self.root, 4, 0, &mut f);
    }
}

/// Physical and virtual bounds of the image's parts (from the linker script).
pub struct ImageLayout {
    /// .text: [start, end) virtual.
    pub text: (u64, u64),
    /// .rodata (+ notes).
    pub rodata: (u64, u64),
    /// .data + .bss.
    pub data: (u64, u64),
    /// First physical byte of the image (the 32-bit boot section).
    pub phys_start: u64,
    /// One past the last physical byte (end of .bss).
    pub phys_end: u64,
}

unsafe extern "C" {
    static __image_phys_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
}

/// Where the linker put the image's parts.
pub fn image_layout() -> ImageLayout {
    // Only addresses of linker symbols are taken.
    let a = |p: *const u8| p as u64;
    ImageLayout {
        text: (a(core::ptr::addr_of!(__text_start)), a(core::ptr::addr_of!(__text_end))),
        rodata: (a(core::ptr::addr_of!(__rodata_start)), a(core::ptr::addr_of!(__rodata_end))),
        data: (a(core::ptr::addr_of!(__data_start)), a(core::ptr::addr_of!(__image_end))),
        phys_start: a(core::ptr::addr_of!(__image_phys_start)),
        phys_end: a(core::ptr::addr_of!(__image_end)) - IMAGE_VIRT_OFFSET,
    }
}

/// Build keel's address space: the direct map of [0, directmap_end) and the image W^X.
pub fn build(directmap_end: u64, frames: &mut dyn FrameSource) -> Result<AddressSpace, OutOfFrames> {
    let mut space = AddressSpace::new(frames)?;
    let end = directmap_end.min(DIRECTMAP_SIZE).next_multiple_of(1 << 21);
    space.map(DIRECTMAP_BASE, 0, end, Access::ReadWrite, cpu::features().page_1g, frames)?;
    let img = image_layout();
    for (range, access) in [(img.text, Access::ReadExecute), (img.rodata, Access::Read), (img.data, Access::ReadWrite)]
    {
        space.map(range.0, range.0 - IMAGE_VIRT_OFFSET, range.1 - range.0, access, false, frames)?;
    }
    Ok(space)
}

/// Switch this CPU to `space` (global pages on first), and from now on reach page tables
/// through the direct map.
///
/// # Safety
/// `space` must map everything the CPU is about to touch: the running code, its stack, and
/// every static; `build` guarantees that for keel's image and direct map.
pub unsafe fn activate(root: u64) {
    enable_global_pages();
    let frame = PhysFrame::containing_address(X86PhysAddr::new(root));
    // SAFETY: forwarded to the caller.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    DIRECTMAP_ACTIVE.store(true, Ordering::Relaxed);
}

/// Turn on global pages on this CPU (keel's mappings are global; guests never share them).
pub fn enable_global_pages() {
    if cpu::features().pge {
        // SAFETY: enabling global pages does not change any translation.
        unsafe { Cr4::update(|f| f.insert(Cr4Flags::PAGE_GLOBAL)) };
    }
}

/// Check that no mapping in `space` is both writable and executable, and count what is
/// mapped how; returns (rx pages, r pages, rw pages) of the image, or the first bad address.
pub fn check_wx(space: &AddressSpace) -> Result<(u64, u64, u64), u64> {
    let nx_supported = cpu::features().nx;
    let mut counts = (0, 0, 0);
    let mut bad = None;
    space.for_each_leaf(|va, e, size| {
        let writable = e & pte::W != 0;
        let executable = nx_supported && e & pte::NX == 0;
        if writable && executable && bad.is_none() {
            bad = Some(va);
        }
        if (IMAGE_VIRT_OFFSET..IMAGE_VIRT_OFFSET + (1 << 30)).contains(&va) {
            let pages = size / 4096;
            match (writable, executable) {
                (false, true) => counts.0 += pages,
                (false, false) => counts.1 += pages,
                _ => counts.2 += pages,
            }
        }
    });
    match bad {
        Some(va) => Err(va),
        None => Ok(counts),
    }
}

/// Bounds of the MMIO mapping area (see `layout`).
pub const IOREMAP: (u64, u64) = (IOREMAP_BASE, IOREMAP_BASE + IOREMAP_SIZE);
