//! Physical memory, put together: from the boot loader's memory map to keel's page tables,
//! the frame allocator and the mapping services the rest of keel uses (stacks, MMIO).
//!
//! Order at boot (`init`):
//! 1. sanitise the firmware map (every anomaly reported);
//! 2. free RAM = RAM minus the first MiB (BIOS data, EBDA, AP trampoline), keel's image and
//!    every boot module;
//! 3. a bump allocator over that builds keel's page tables (below 4 GiB, reachable through
//!    the boot identity map) and the switch to them happens;
//! 4. the frame table (16 bytes per frame) is taken from the bump allocator, and everything
//!    the bump allocator did not hand out is donated to the buddy allocator.
//!
//! After `init` every frame is either keel's (image, tables, frame table), a boot module's,
//! or in the buddy allocator; `free_frames` is what the ready line reports.

use keel_boot::bootinfo::BootInfo;
use keel_mm::{
    BumpAllocator, FrameAllocator, FrameInfo, MapIssue, MemoryMap, Pfn, PhysAddr, RangeSet, RawRegion, RegionKind,
    PAGE_SIZE,
};
use spin::Once;

use crate::arch::x86::cpu;
use crate::arch::x86::layout::{DIRECTMAP_SIZE, IOREMAP_BASE, IOREMAP_SIZE, STACKS_BASE, STACKS_SIZE};
use crate::arch::x86::paging::{self, Access, AddressSpace, FrameSource, OutOfFrames};
use crate::sync::IrqMutex;

/// The first MiB stays out of the allocator (see the module comment).
const LOW_MEMORY_END: u64 = 0x10_0000;

/// What `init` found, for reports and for later stages.
pub struct MemorySummary {
    /// Bytes of RAM in the sanitised map.
    pub usable: u64,
    /// Bytes taken by the frame table.
    pub frame_table: u64,
    /// Bytes keel took at boot (page tables, frame table).
    pub boot_allocated: u64,
    /// End of the direct map (physical).
    pub directmap_end: u64,
    /// A RAM page below 1 MiB for the AP trampoline, if there is one.
    pub trampoline_page: Option<u64>,
    /// Physical address of keel's page-table root.
    pub root: u64,
    /// Bit i: boot module i lies in RAM and is not empty (the domain builder's input).
    pub usable_modules: u64,
}

static SUMMARY: Once<MemorySummary> = Once::new();
static FRAMES: IrqMutex<Option<FrameAllocator<'static>>> = IrqMutex::new(None);
static KERNEL_SPACE: IrqMutex<Option<AddressSpace>> = IrqMutex::new(None);

/// The sanitised memory map (kept for later: guests' maps, dom0's e820, `xl info`).
static MEMORY_MAP: IrqMutex<MemoryMap> = IrqMutex::new(MemoryMap::new());

struct BumpFrames<'a> {
    bump: &'a mut BumpAllocator,
    below: Option<PhysAddr>,
}

impl FrameSource for BumpFrames<'_> {
    fn frame(&mut self) -> Option<u64> {
        self.bump.alloc(PAGE_SIZE, PAGE_SIZE, self.below).ok().map(|a| a.as_u64())
    }
}

struct BuddyFrames;

impl FrameSource for BuddyFrames {
    fn frame(&mut self) -> Option<u64> {
        alloc_frames(0).map(|p| p.addr().as_u64())
    }
}

fn describe(kind: RegionKind) -> &'static str {
    match kind {
        RegionKind::Ram => "RAM",
        RegionKind::Reserved => "reserved",
        RegionKind::AcpiReclaimable => "ACPI data",
        RegionKind::AcpiNvs => "ACPI NVS",
        RegionKind::Unusable => "unusable",
        RegionKind::Disabled => "disabled",
        RegionKind::Persistent => "persistent",
        RegionKind::Unknown(_) => "unknown",
    }
}

/// Bring up physical memory and keel's page tables (see the module comment).
///
/// Panics only if the machine has too little RAM for keel's own tables, which is reported.
pub fn init(boot: &BootInfo) -> &'static MemorySummary {
    let features = cpu::features();
    let mut raw = [RawRegion { base: 0, len: 0, kind: RegionKind::Ram }; keel_boot::bootinfo::MAX_MEM_ENTRIES];
    let entries = boot.memory_map();
    for (r, e) in raw.iter_mut().zip(entries) {
        *r = RawRegion { base: e.base, len: e.len, kind: RegionKind::from_e820(e.kind) };
    }
    let mut map = MEMORY_MAP.lock();
    // A hostile map can hold hundreds of problems; report the first few of them.
    const MAX_REPORTED: usize = 32;
    let mut issues = 0usize;
    keel_mm::sanitize(&raw[..entries.len()], features.phys_addr_bits, &mut map, &mut |issue: MapIssue| {
        issues += 1;
        if issues <= MAX_REPORTED {
            log::warn!("mm: memory map: {issue}");
        }
    });
    if issues > MAX_REPORTED {
        log::warn!("mm: memory map: {} more problems not shown", issues - MAX_REPORTED);
    }
    for r in map.regions() {
        log::debug!("mm:   {:#014x}-{:#014x} {}", r.start.as_u64(), r.end.as_u64(), describe(r.kind));
    }
    let usable = map.total(RegionKind::Ram);
    log::info!("mm: memory map: {} KiB usable RAM", usable / 1024);

    // Free RAM: everything the map calls RAM, minus what is already in use.
    let mut free = RangeSet::new();
    for r in map.regions_of(RegionKind::Ram) {
        let end = r.end.as_u64().min(DIRECTMAP_SIZE);
        if r.start.as_u64() < end && free.insert(r.start, PhysAddr::new(end)).is_err() {
            log::warn!("mm: too many RAM ranges; ignoring RAM from {:#x}", r.start.as_u64());
        }
    }
    let img = paging::image_layout();
    let mut reserve = |start: u64, end: u64, what: &str| {
        let s = PhysAddr::new(start).align_down(PAGE_SIZE);
        let e = PhysAddr::new(end).align_up(PAGE_SIZE).unwrap_or(PhysAddr::new(!(PAGE_SIZE - 1)));
        if free.remove(s, e).is_err() {
            log::warn!("mm: cannot track the reservation of {what}; it may be handed out");
        }
    };
    reserve(0, LOW_MEMORY_END, "low memory");
    reserve(img.phys_start, img.phys_end, "keel's image");
    let mut usable_modules = 0u64;
    for (i, m) in boot.modules().iter().enumerate() {
        reserve(m.start, m.end, "a boot module");
        let in_ram = map.regions_of(RegionKind::Ram).any(|r| r.start.as_u64() <= m.start && m.end <= r.end.as_u64());
        // (Empty modules were already reported when the boot information was read.)
        if m.end <= m.start {
        } else if !in_ram {
            log::warn!(
                "boot: module {i} at {:#x}-{:#x} is not in RAM (missing or misreported); ignored",
                m.start,
                m.end
            );
        } else if i < 64 {
            usable_modules |= 1 << i;
        }
    }
    let ram_end = map.max_ram_end().as_u64().min(DIRECTMAP_SIZE);
    // The direct map covers all RAM and at least the first 4 GiB (ACPI tables, MMIO below 4G).
    let directmap_end = ram_end.max(1 << 32);
    let trampoline_page = map
        .regions_of(RegionKind::Ram)
        .filter_map(|r| {
            let start = r.start.as_u64().max(PAGE_SIZE);
            (start + PAGE_SIZE <= r.end.as_u64().min(0xa0000)).then_some(start)
        })
        .next();
    drop(map);

    // Keel's page tables, from frames below 4 GiB (reachable through the boot identity map).
    let mut bump = BumpAllocator::new(free);
    let space = paging::build(directmap_end, &mut BumpFrames { bump: &mut bump, below: Some(PhysAddr::new(1 << 32)) })
        .unwrap_or_else(|OutOfFrames| panic!("not enough memory below 4 GiB for keel's page tables"));
    let root = space.root();
    // SAFETY: `build` mapped keel's image (code, data, the boot stack in .bss) and the direct
    // map, which is everything keel touches from here on.
    unsafe { paging::activate(root) };
    *KERNEL_SPACE.lock() = Some(space);

    // The frame table covers frames [0, end of RAM).
    let frames = ram_end / PAGE_SIZE;
    let table_bytes = FrameAllocator::table_bytes(frames);
    let table_pa = bump
        .alloc(table_bytes, 1 << 21, None)
        .or_else(|_| bump.alloc(table_bytes, PAGE_SIZE, None))
        .unwrap_or_else(|_| panic!("not enough memory for the frame table ({table_bytes} bytes)"));
    let table_va = paging::phys_to_virt(table_pa.as_u64());
    // SAFETY: the bump allocator handed out [table_pa, +table_bytes), inside the direct map,
    // to nobody else; it is zeroed first so every `FrameInfo` starts as a valid value, and it
    // is never freed, hence 'static.
    let table: &'static mut [FrameInfo] = unsafe {
        core::ptr::write_bytes(table_va as *mut u8, 0, table_bytes as usize);
        core::slice::from_raw_parts_mut(table_va as *mut FrameInfo, frames as usize)
    };
    let mut alloc = FrameAllocator::new(table, Pfn::new(0));
    for &(s, e) in bump.remaining().ranges() {
        let (s, e) = (s.pfn_ceil(), e.pfn_floor().min(Pfn::new(frames)));
        if s < e {
            if let Err(err) = alloc.add_free_range(s, e) {
                log::warn!("mm: could not donate {:#x}-{:#x} to the frame allocator: {err:?}", s.as_u64(), e.as_u64());
            }
        }
    }
    *FRAMES.lock() = Some(alloc);
    let boot_allocated = bump.allocated().total();
    log::info!("mm: frame table: {} KiB", table_bytes / 1024);
    SUMMARY.call_once(|| MemorySummary {
        usable,
        frame_table: table_bytes,
        boot_allocated,
        directmap_end,
        trampoline_page,
        root,
        usable_modules,
    })
}

/// What `init` found.
pub fn summary() -> &'static MemorySummary {
    SUMMARY.get().expect("mm::init has run")
}

/// One past the highest RAM frame number (Xen's `max_page`, XENMEM_maximum_ram_page).
pub fn max_ram_pfn() -> u64 {
    summary().directmap_end >> 12
}

/// Allocate 2^order contiguous frames for keel itself; `None` when memory is exhausted.
pub fn alloc_frames(order: u8) -> Option<Pfn> {
    FRAMES.lock().as_mut()?.alloc(order).ok()
}

/// Allocate 2^order contiguous frames owned by `owner`.
pub fn alloc_frames_for(order: u8, owner: keel_mm::Owner) -> Option<Pfn> {
    FRAMES.lock().as_mut()?.alloc_owned(order, owner).ok()
}

/// Split `owner`'s allocated block at `pfn` (2^order frames) into blocks of 2^into frames.
pub fn split_frames_of(pfn: Pfn, order: u8, into: u8, owner: keel_mm::Owner) -> bool {
    FRAMES.lock().as_mut().is_some_and(|a| a.split_block(pfn, order, into, owner).is_ok())
}

/// Return `owner`'s frames (refused, and reported, if they are not `owner`'s).
pub fn free_frames_of(pfn: Pfn, order: u8, owner: keel_mm::Owner) {
    if let Some(a) = FRAMES.lock().as_mut() {
        if let Err(e) = a.free_owned(pfn, order, owner) {
            log::error!("mm: refused to free {:#x} (order {order}) for {owner:?}: {e}", pfn.as_u64());
        }
    }
}

/// Return frames from `alloc_frames` with the same order.
pub fn free_frames(pfn: Pfn, order: u8) {
    if let Some(a) = FRAMES.lock().as_mut() {
        if let Err(e) = a.free(pfn, order) {
            // Freeing what keel does not own is a keel bug; the allocator refused it intact.
            log::error!("mm: refused to free {:#x} (order {order}): {e:?}", pfn.as_u64());
        }
    }
}

/// Free frames right now.
pub fn free_frame_count() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |a| a.free_frames())
}

/// Map `len` bytes of device memory at physical `pa` uncached; returns the virtual address
/// of `pa`. MMIO mappings are permanent.
pub fn ioremap(pa: u64, len: u64) -> Option<u64> {
    static NEXT: IrqMutex<u64> = IrqMutex::new(IOREMAP_BASE);
    let offset = pa % PAGE_SIZE;
    let size = (offset + len).next_multiple_of(PAGE_SIZE);
    let mut next = NEXT.lock();
    if *next + size > IOREMAP_BASE + IOREMAP_SIZE {
        return None;
    }
    let va = *next;
    let mut space = KERNEL_SPACE.lock();
    space.as_mut()?.map(va, pa - offset, size, Access::Mmio, false, &mut BuddyFrames).ok()?;
    *next += size;
    Some(va + offset)
}

/// Size of one CPU's slot in the stack area: guard, stack, then a guard and a stack per IST.
pub const STACK_SLOT: u64 = 128 * 1024;
/// Size of a CPU's normal stack.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Size of each interrupt stack.
pub const IST_SIZE: u64 = 16 * 1024;

/// Map CPU `index`'s stacks (normal and IST), each below an unmapped guard page.
/// Returns (normal stack, IST stacks) as [bottom, top) ranges.
pub fn map_cpu_stacks(
    index: u32,
) -> Option<(crate::arch::x86::percpu::StackRange, [crate::arch::x86::percpu::StackRange; 3])> {
    use crate::arch::x86::percpu::StackRange;
    let slot = STACKS_BASE + index as u64 * STACK_SLOT;
    if slot + STACK_SLOT > STACKS_BASE + STACKS_SIZE {
        return None;
    }
    let map_stack = |bottom: u64, size: u64| -> Option<StackRange> {
        let order = (size / PAGE_SIZE).trailing_zeros() as u8;
        let pfn = alloc_frames(order)?;
        let mut space = KERNEL_SPACE.lock();
        space.as_mut()?.map(bottom, pfn.addr().as_u64(), size, Access::ReadWrite, false, &mut BuddyFrames).ok()?;
        Some(StackRange { bottom, top: bottom + size })
    };
    // Layout: [guard][stack 64K][guard][ist 16K][guard][ist 16K][guard][ist 16K]
    let main = map_stack(slot + PAGE_SIZE, STACK_SIZE)?;
    let mut ists = [StackRange::default(); 3];
    let mut at = main.top;
    for ist in ists.iter_mut() {
        *ist = map_stack(at + PAGE_SIZE, IST_SIZE)?;
        at = ist.top;
    }
    Some((main, ists))
}

/// Check keel's own mappings are W^X; returns (RX, R, RW) image pages.
pub fn check_wx() -> Result<(u64, u64, u64), u64> {
    let space = KERNEL_SPACE.lock();
    match space.as_ref() {
        Some(s) => paging::check_wx(s),
        None => Err(0),
    }
}
