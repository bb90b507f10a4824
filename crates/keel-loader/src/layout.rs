//! Where everything goes in a PVH domain's guest-physical memory, decided before anything is
//! written: the memory map the guest sees, the frames keel must back with RAM, and the places of
//! the kernel, the initrd, the start info block and the ACPI tables.
//!
//! This is what Xen's libxl builds for a PVH domU (`xen-abi.md` §1.4):
//!
//! ```text
//! 0            RAM [0, lowmem_end)         lowmem_end = min(RAM, 0xF000_0000)
//!   1 MiB ..   initrd, start info block    (first fit above the kernel, else below it)
//!   16 MiB ..  the kernel's PT_LOADs       (at their p_paddr; Linux's PVH entry is not relocatable)
//! 0xFC00_0000  ACPI tables, RSDP first     (memory map type NVS, as recent Xen marks them)
//! 0xFEFF_8000  the 8 special pages         (RESERVED; xenstore = +4, console = +7)
//! 4 GiB        RAM [4 GiB, 4 GiB + RAM - lowmem_end), if the domain has more
//! ```
//!
//! Rules the plan enforces, each from a Linux 6.1 PVH constraint (`xen-abi.md` §1.3, §7):
//! every kernel segment lies in RAM; the initrd and the start info block (start info, module
//! list, memory map copy, command line) lie in RAM below 4 GiB, above 1 MiB (Linux wants the
//! memory below 1 MiB for its real-mode trampoline) and outside the kernel's whole span (the
//! gaps between its segments are freed by Linux later); the memory map has at most 127
//! entries and RAM starting at 0.
//!
//! The RSDP always sits at the start of the ACPI block and is passed in `rsdp_paddr`, the only
//! place a Linux PVH kernel with `XENFEAT_linux_rsdp_unrestricted` (every 6.1 kernel) looks.

use alloc::vec;
use alloc::vec::Vec;

use keel_acpi::{build_guest_tables, AcpiError, GuestAcpiConfig, GuestAcpiLayout, MAX_GUEST_VCPUS};
use keel_mm::{Gfn, Gpa, PAGE_SIZE};
use xen_abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, MEMMAP_TYPE_NVS, MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED,
    SIF_INITDOMAIN, SIF_PRIVILEGED,
};

use crate::{LoadError, PvhKernel};

/// Top of the RAM below 4 GiB (Xen's `HVM_BELOW_4G_RAM_END`); above it is the MMIO hole.
pub const HVM_BELOW_4G_RAM_END: u64 = 0xF000_0000;
/// First of the special pages (`special_pfn(0)` = `X86_HVM_END_SPECIAL_REGION` - 8).
pub const SPECIAL_PFN_BASE: Gfn = Gfn::new(0xFEFF8);
/// Number of special pages.
pub const NR_SPECIAL_PAGES: u64 = 8;
/// Index of the xenstore ring among the special pages (`HVM_PARAM_STORE_PFN` = base + 4).
pub const SPECIAL_PAGE_XENSTORE: u64 = 4;
/// Index of the console ring among the special pages (`HVM_PARAM_CONSOLE_PFN` = base + 7).
pub const SPECIAL_PAGE_CONSOLE: u64 = 7;
/// Where the guest's ACPI tables start (libxl's ACPI region).
pub const ACPI_BASE: Gpa = Gpa::new(0xFC00_0000);
/// Lowest address for the initrd and the start info block (the first MiB is Linux's).
pub const BOOT_DATA_MIN: Gpa = Gpa::new(0x10_0000);
/// Linux copies at most this many memory-map entries, without checking (its table has 128
/// and it appends one).
pub const MAX_MEMMAP_ENTRIES: usize = 127;

const FOUR_GIB: u64 = 1 << 32;
/// x86-64's architectural limit on physical addresses.
const MAX_GPA: u64 = 1 << 52;
/// Local APIC base every vCPU sees.
const LAPIC_BASE: u32 = 0xFEE0_0000;
/// OEM ID in the guest's ACPI tables.
const ACPI_OEM_ID: [u8; 6] = *b"KEEL  ";
/// The start-info flags a PVH domain may carry (the others are for PV guests).
const ALLOWED_FLAGS: u32 = SIF_PRIVILEGED | SIF_INITDOMAIN;

// The largest MADT (MAX_GUEST_VCPUS x2APIC entries) plus the other tables fits below the
// special pages, so the ACPI block can never run into them.
const _: () = assert!(ACPI_BASE.as_u64() + 4 * PAGE_SIZE + 16 * MAX_GUEST_VCPUS as u64 <= 0xFEFF_8000);

/// The domain to build.
#[derive(Debug, Clone, Copy)]
pub struct DomainSpec<'a> {
    /// Guest RAM in bytes, a multiple of the page size. The ACPI pages and special pages
    /// come on top.
    pub ram_bytes: u64,
    /// Number of vCPUs, `1 ..= keel_acpi::MAX_GUEST_VCPUS`; vCPU `i` has APIC ID `2 * i`.
    pub vcpus: u32,
    /// The kernel to load.
    pub kernel: &'a PvhKernel<'a>,
    /// The initrd, passed as module 0 (an empty one is no initrd).
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line (no NUL bytes).
    pub cmdline: &'a str,
    /// `hvm_start_info.flags`: 0 for a domU, `SIF_PRIVILEGED | SIF_INITDOMAIN` for dom0.
    pub flags: u32,
}

/// Where everything goes: the result of [`plan`], the input of [`build`](crate::build).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The memory map the guest sees (`hvm_start_info` and `XENMEM_memory_map`), sorted.
    pub memmap: Vec<HvmMemmapTableEntry>,
    /// Guest frame ranges keel must back with zeroed RAM, as (first frame, number of frames):
    /// the RAM, the ACPI pages and the special pages. Sorted, disjoint.
    pub populate: Vec<(Gfn, u64)>,
    /// First special page (xenstore is `+ SPECIAL_PAGE_XENSTORE`, console `+ SPECIAL_PAGE_CONSOLE`).
    pub special_pfn_base: Gfn,
    /// The `hvm_start_info`: EBX of vCPU 0.
    pub start_info: Gpa,
    /// The module list (one entry, the initrd), if there is an initrd.
    pub modlist: Option<Gpa>,
    /// The copy of the memory map the start info points at.
    pub memmap_table: Gpa,
    /// The NUL-terminated command line.
    pub cmdline: Gpa,
    /// The PVH entry point: EIP of vCPU 0.
    pub entry: u32,
    /// The ACPI tables (the RSDP address goes into the start info).
    pub acpi: GuestAcpiLayout,
    /// First byte of the kernel's span (its lowest segment, page aligned down).
    pub kernel_start: Gpa,
    /// One past the kernel's span (its highest segment end, page aligned up).
    pub kernel_end: Gpa,
    /// The initrd's address and length, if there is one.
    pub initrd: Option<(Gpa, u64)>,
}

impl Layout {
    /// The guest frame of special page `index` (< [`NR_SPECIAL_PAGES`]).
    pub fn special_gfn(&self, index: u64) -> Option<Gfn> {
        (index < NR_SPECIAL_PAGES).then(|| self.special_pfn_base.checked_add(index)).flatten()
    }

    /// True if both describe the same placement (the memory map compared byte for byte).
    pub(crate) fn same_as(&self, other: &Layout) -> bool {
        use zerocopy::IntoBytes;
        self.memmap.as_bytes() == other.memmap.as_bytes()
            && self.populate == other.populate
            && self.special_pfn_base == other.special_pfn_base
            && self.start_info == other.start_info
            && self.modlist == other.modlist
            && self.memmap_table == other.memmap_table
            && self.cmdline == other.cmdline
            && self.entry == other.entry
            && self.acpi == other.acpi
            && self.kernel_start == other.kernel_start
            && self.kernel_end == other.kernel_end
            && self.initrd == other.initrd
    }
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_next_multiple_of(PAGE_SIZE)
}

fn page_down(x: u64) -> u64 {
    x - x % PAGE_SIZE
}

/// Guest RAM split at the MMIO hole: `[0, low_end)` and `[4 GiB, 4 GiB + high)`.
#[derive(Clone, Copy)]
struct Ram {
    low_end: u64,
    high: u64,
}

impl Ram {
    fn new(ram_bytes: u64) -> Self {
        let low_end = ram_bytes.min(HVM_BELOW_4G_RAM_END);
        Self { low_end, high: ram_bytes - low_end }
    }

    fn contains(&self, start: u64, end: u64) -> bool {
        end <= self.low_end || (start >= FOUR_GIB && end - FOUR_GIB <= self.high)
    }
}

/// The free low RAM for boot data: above the kernel first (as libxl), then below it.
struct Gaps {
    gaps: [(u64, u64); 2],
}

impl Gaps {
    fn new(ram: Ram, kernel_start: u64, kernel_end: u64) -> Self {
        let min = BOOT_DATA_MIN.as_u64();
        let above = (kernel_end.max(min), ram.low_end);
        let below = (min, kernel_start.min(ram.low_end));
        Self { gaps: [above, below] }
    }

    /// Takes `len` bytes (a multiple of the page size) from the first gap that has them.
    fn take(&mut self, len: u64) -> Option<u64> {
        let gap = self.gaps.iter_mut().find(|(start, end)| start.checked_add(len).is_some_and(|e| e <= *end))?;
        let at = gap.0;
        gap.0 += len;
        Some(at)
    }
}

/// Bytes of the start info block: start info, module list, memory map copy, command line.
fn boot_block_len(modules: u64, memmap_entries: u64, cmdline_len: u64) -> u64 {
    size_of::<HvmStartInfo>() as u64
        + modules * size_of::<HvmModlistEntry>() as u64
        + memmap_entries * size_of::<HvmMemmapTableEntry>() as u64
        + cmdline_len
        + 1
}

/// The ACPI configuration for `vcpus` vCPUs (APIC ID `2 * i`, as Xen).
fn acpi_config(vcpus: u32) -> GuestAcpiConfig {
    GuestAcpiConfig { vcpus, lapic_base: LAPIC_BASE, apic_id_of: |i| 2 * i, oem_id: ACPI_OEM_ID }
}

/// Builds the guest's ACPI tables at [`ACPI_BASE`]: their layout and bytes, padded to pages.
pub(crate) fn acpi_tables(vcpus: u32) -> Result<(GuestAcpiLayout, Vec<u8>), LoadError> {
    let cfg = acpi_config(vcpus);
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    let layout = match build_guest_tables(&cfg, ACPI_BASE.as_u64(), &mut buf) {
        Err(AcpiError::BufferTooSmall { needed }) => {
            buf.resize(needed, 0);
            build_guest_tables(&cfg, ACPI_BASE.as_u64(), &mut buf)?
        }
        other => other?,
    };
    let len = page_up(layout.end - ACPI_BASE.as_u64()).ok_or(LoadError::Acpi(AcpiError::AddressOverflow))?;
    buf.resize(len as usize, 0);
    Ok((layout, buf))
}

fn check_spec(spec: &DomainSpec<'_>) -> Result<(), LoadError> {
    if spec.vcpus == 0 || spec.vcpus > MAX_GUEST_VCPUS {
        return Err(LoadError::InvalidSpec("vCPU count out of range"));
    }
    if spec.ram_bytes == 0 || !spec.ram_bytes.is_multiple_of(PAGE_SIZE) {
        return Err(LoadError::InvalidSpec("RAM size must be a non-zero multiple of the page size"));
    }
    let top = match Ram::new(spec.ram_bytes) {
        Ram { high: 0, low_end } => low_end,
        Ram { high, .. } => FOUR_GIB.saturating_add(high),
    };
    if top > MAX_GPA {
        return Err(LoadError::InvalidSpec("RAM size exceeds the physical address space"));
    }
    if spec.flags & !ALLOWED_FLAGS != 0 {
        return Err(LoadError::InvalidSpec("only SIF_PRIVILEGED and SIF_INITDOMAIN are valid PVH flags"));
    }
    if spec.cmdline.as_bytes().contains(&0) {
        return Err(LoadError::InvalidSpec("command line contains a NUL byte"));
    }
    if spec.kernel.segments.is_empty() {
        return Err(LoadError::InvalidSpec("kernel has no segments"));
    }
    Ok(())
}

/// Plans the domain's layout without writing any memory; [`build`](crate::build) then writes
/// exactly this.
///
/// # Errors
/// [`LoadError::InvalidSpec`] for an impossible request (no vCPUs, RAM not page-sized, PV-only
/// flags, a NUL in the command line), [`LoadError::SegmentOutsideRam`] if a kernel segment is
/// not in the domain's RAM, [`LoadError::NoRoom`] if the initrd or start info block does not
/// fit below 4 GiB, [`LoadError::Acpi`] if the ACPI tables cannot be built.
pub fn plan(spec: &DomainSpec<'_>) -> Result<Layout, LoadError> {
    check_spec(spec)?;
    let ram = Ram::new(spec.ram_bytes);
    let kernel = spec.kernel;
    for s in &kernel.segments {
        if !ram.contains(s.paddr, s.end()) {
            return Err(LoadError::SegmentOutsideRam { paddr: s.paddr, end: s.end() });
        }
    }
    // Inside RAM, so below 2^52: rounding up cannot overflow.
    let kernel_start = page_down(kernel.start());
    let kernel_end = page_up(kernel.end()).unwrap_or(u64::MAX);

    let (acpi, acpi_bytes) = acpi_tables(spec.vcpus)?;
    let acpi_pages = acpi_bytes.len() as u64 / PAGE_SIZE;

    let entry = |addr: u64, size: u64, type_: u32| HvmMemmapTableEntry { addr, size, type_, reserved: 0 };
    let special = SPECIAL_PFN_BASE.as_u64() * PAGE_SIZE;
    let mut memmap = vec![
        entry(0, ram.low_end, MEMMAP_TYPE_RAM),
        entry(ACPI_BASE.as_u64(), acpi_pages * PAGE_SIZE, MEMMAP_TYPE_NVS),
        entry(special, NR_SPECIAL_PAGES * PAGE_SIZE, MEMMAP_TYPE_RESERVED),
    ];
    let mut populate = vec![
        (Gfn::new(0), ram.low_end / PAGE_SIZE),
        (ACPI_BASE.gfn(), acpi_pages),
        (SPECIAL_PFN_BASE, NR_SPECIAL_PAGES),
    ];
    if ram.high != 0 {
        memmap.push(entry(FOUR_GIB, ram.high, MEMMAP_TYPE_RAM));
        populate.push((Gfn::new(FOUR_GIB / PAGE_SIZE), ram.high / PAGE_SIZE));
    }
    debug_assert!(memmap.len() <= MAX_MEMMAP_ENTRIES);

    let mut gaps = Gaps::new(ram, kernel_start, kernel_end);
    let initrd = match spec.initrd {
        Some(initrd) if !initrd.is_empty() => {
            let len = initrd.len() as u64;
            let room = NoRoomFor("initrd", len);
            let at = page_up(len).and_then(|pages| gaps.take(pages)).ok_or(room.err())?;
            Some((Gpa::new(at), len))
        }
        _ => None,
    };
    let modules = u64::from(initrd.is_some());
    let block_len = boot_block_len(modules, memmap.len() as u64, spec.cmdline.len() as u64);
    let block = page_up(block_len).and_then(|len| gaps.take(len)).ok_or(NoRoomFor("start info", block_len).err())?;

    let modlist = block + size_of::<HvmStartInfo>() as u64;
    let memmap_table = modlist + modules * size_of::<HvmModlistEntry>() as u64;
    let cmdline = memmap_table + memmap.len() as u64 * size_of::<HvmMemmapTableEntry>() as u64;
    Ok(Layout {
        memmap,
        populate,
        special_pfn_base: SPECIAL_PFN_BASE,
        start_info: Gpa::new(block),
        modlist: initrd.map(|_| Gpa::new(modlist)),
        memmap_table: Gpa::new(memmap_table),
        cmdline: Gpa::new(cmdline),
        entry: kernel.entry,
        acpi,
        kernel_start: Gpa::new(kernel_start),
        kernel_end: Gpa::new(kernel_end),
        initrd,
    })
}

/// Names what did not fit, for [`LoadError::NoRoom`].
struct NoRoomFor(&'static str, u64);

impl NoRoomFor {
    fn err(self) -> LoadError {
        LoadError::NoRoom { what: self.0, size: self.1 }
    }
}

/// The least RAM (bytes, a multiple of the page size) a domain needs for `kernel`: enough for
/// every segment to lie in RAM and for a start info block (with a command line of up to a few
/// KiB) outside the kernel. An initrd needs its size on top. `u64::MAX` if no amount of RAM
/// works (a segment in the MMIO hole between 0xF000_0000 and 4 GiB, or no segments at all).
pub fn min_ram_for(kernel: &PvhKernel<'_>) -> u64 {
    let mut need = 0u64;
    for s in &kernel.segments {
        let end = match page_up(s.end()) {
            Some(end) => end,
            None => return u64::MAX,
        };
        need = need.max(if end <= HVM_BELOW_4G_RAM_END {
            end
        } else if s.paddr >= FOUR_GIB {
            HVM_BELOW_4G_RAM_END + (end - FOUR_GIB)
        } else {
            return u64::MAX;
        });
    }
    if kernel.segments.is_empty() || need > MAX_GPA {
        return u64::MAX;
    }
    // One page for the start info block: below the kernel if there is room, else above it.
    let kernel_start = page_down(kernel.start());
    let kernel_end = page_up(kernel.end()).unwrap_or(u64::MAX);
    if Gaps::new(Ram::new(need), kernel_start, kernel_end).take(PAGE_SIZE).is_some() {
        return need;
    }
    let above = kernel_end.max(BOOT_DATA_MIN.as_u64()) + PAGE_SIZE;
    if above > HVM_BELOW_4G_RAM_END {
        return u64::MAX;
    }
    need.max(above)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_built, tiny_elf_builder, ElfBuilder, FakeMemory, Note};
    use crate::{build, parse_pvh_kernel};
    use proptest::prelude::*;
    use std::vec;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// A kernel shaped like Debian's: text at 16 MiB, a vaddr-0 segment, BSS up to 74 MiB.
    fn debian_like() -> std::vec::Vec<u8> {
        ElfBuilder::new()
            .load(16 * MIB, 0xffff_ffff_8100_0000, vec![0x90; 0x1000], 0x18e_a9f0)
            .load(0x2a0_0000, 0xffff_ffff_82a0_0000, vec![0x11; 0x800], 0x64_4000)
            .load(0x304_4000, 0, vec![0x22; 0x100], 0x3_5000)
            .load(0x307_9000, 0xffff_ffff_8307_9000, vec![0x33; 0x200], 0x198_7000)
            .note(Note { name: b"Xen\0".to_vec(), kind: 18, desc: 0x100_0850u64.to_le_bytes().to_vec() })
            .build()
    }

    fn spec<'a>(kernel: &'a PvhKernel<'a>, ram: u64, initrd: Option<&'a [u8]>) -> DomainSpec<'a> {
        DomainSpec { ram_bytes: ram, vcpus: 2, kernel, initrd, cmdline: "console=hvc0 root=/dev/xvda1", flags: 0 }
    }

    /// Plans, builds into a fake memory that reads 0xDB where nothing was written, and checks.
    fn plan_build_check(spec: &DomainSpec<'_>) -> Layout {
        let layout = plan(spec).unwrap();
        let mut mem = FakeMemory::new(&layout, 0xDB);
        build(spec, &layout, &mut mem).unwrap();
        check_built(spec, &layout, &mem);
        layout
    }

    fn ranges(layout: &Layout) -> std::vec::Vec<(u64, u64, u32)> {
        layout.memmap.iter().map(|e| (e.addr, e.size, e.type_)).collect()
    }

    #[test]
    fn one_gib_domu() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let initrd = vec![0x5Au8; 3 * MIB as usize + 5];
        let layout = plan_build_check(&spec(&kernel, GIB, Some(&initrd)));
        let acpi_len = layout.acpi.end.next_multiple_of(PAGE_SIZE) - ACPI_BASE.as_u64();
        assert_eq!(
            ranges(&layout),
            [
                (0, GIB, MEMMAP_TYPE_RAM),
                (0xFC00_0000, acpi_len, MEMMAP_TYPE_NVS),
                (0xFEFF_8000, 0x8000, MEMMAP_TYPE_RESERVED)
            ]
        );
        assert_eq!(
            layout.populate,
            [(Gfn::new(0), GIB / PAGE_SIZE), (Gfn::new(0xFC000), acpi_len / PAGE_SIZE), (Gfn::new(0xFEFF8), 8)]
        );
        assert_eq!(layout.acpi.rsdp, 0xFC00_0000, "RSDP first in the ACPI block");
        // libxl order: kernel, initrd right after it, then the start info block.
        assert_eq!((layout.kernel_start, layout.kernel_end), (Gpa::new(16 * MIB), Gpa::new(0x4A0_0000)));
        assert_eq!(layout.initrd, Some((Gpa::new(0x4A0_0000), initrd.len() as u64)));
        assert_eq!(layout.start_info, Gpa::new(0x4A0_0000 + 3 * MIB + PAGE_SIZE));
        assert_eq!(layout.entry, 0x100_0850);
        assert_eq!(layout.special_gfn(SPECIAL_PAGE_XENSTORE), Some(Gfn::new(0xFEFFC)));
        assert_eq!(layout.special_gfn(SPECIAL_PAGE_CONSOLE), Some(Gfn::new(0xFEFFF)));
        assert_eq!(layout.special_gfn(NR_SPECIAL_PAGES), None);
    }

    #[test]
    fn small_domain_128_mib() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let initrd = vec![1u8; 40 * MIB as usize];
        let layout = plan_build_check(&spec(&kernel, 128 * MIB, Some(&initrd)));
        assert_eq!(ranges(&layout)[0], (0, 128 * MIB, MEMMAP_TYPE_RAM));
        assert_eq!(layout.initrd.unwrap().0, Gpa::new(0x4A0_0000));
    }

    #[test]
    fn ram_above_4_gib() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let ram = 6 * GIB;
        let layout = plan_build_check(&spec(&kernel, ram, Some(&[7; 100])));
        let map = ranges(&layout);
        assert_eq!(map.len(), 4);
        assert_eq!(map[0], (0, HVM_BELOW_4G_RAM_END, MEMMAP_TYPE_RAM));
        assert_eq!(map[3], (FOUR_GIB, ram - HVM_BELOW_4G_RAM_END, MEMMAP_TYPE_RAM));
        assert_eq!(layout.populate[3], (Gfn::new(0x10_0000), (ram - HVM_BELOW_4G_RAM_END) / PAGE_SIZE));
        // Exactly at the hole: no high RAM.
        let at_hole = plan(&spec(&kernel, HVM_BELOW_4G_RAM_END, None)).unwrap();
        assert_eq!(at_hole.memmap.len(), 3);
    }

    #[test]
    fn too_small_for_the_kernel() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        assert_eq!(
            plan(&spec(&kernel, 64 * MIB, None)).unwrap_err(),
            LoadError::SegmentOutsideRam { paddr: 0x307_9000, end: 0x4A0_0000 }
        );
        assert_eq!(
            plan(&spec(&kernel, 8 * MIB, None)).unwrap_err(),
            LoadError::SegmentOutsideRam { paddr: 16 * MIB, end: 0x28e_a9f0 }
        );
    }

    #[test]
    fn kernel_in_the_mmio_hole_or_high_memory() {
        let entry = Note { name: b"Xen\0".to_vec(), kind: 18, desc: 0xF000_0000u32.to_le_bytes().to_vec() };
        let hole = ElfBuilder::new().load(0xF000_0000, 0, vec![0; 16], 0x1000).note(entry).build();
        let kernel = parse_pvh_kernel(&hole).unwrap();
        assert_eq!(min_ram_for(&kernel), u64::MAX);
        assert_eq!(
            plan(&spec(&kernel, 8 * GIB, None)).unwrap_err(),
            LoadError::SegmentOutsideRam { paddr: 0xF000_0000, end: 0xF000_1000 }
        );
        // A segment in high RAM is fine (its entry still has to be below 4 GiB).
        let entry = Note { name: b"Xen\0".to_vec(), kind: 18, desc: 0x20_0000u32.to_le_bytes().to_vec() };
        let high = ElfBuilder::new()
            .load(0x20_0000, 0, vec![0xC3; 16], 0x1000)
            .load(FOUR_GIB + GIB, 0, vec![0x44; 64], 0x2000)
            .note(entry)
            .build();
        let kernel = parse_pvh_kernel(&high).unwrap();
        let need = min_ram_for(&kernel);
        assert_eq!(need, HVM_BELOW_4G_RAM_END + GIB + 0x2000);
        let layout = plan_build_check(&spec(&kernel, need, Some(&[1; 10])));
        // The kernel spans the hole, so boot data can only go below it.
        assert!(layout.initrd.unwrap().0 < Gpa::new(0x20_0000));
        assert_eq!(
            plan(&spec(&kernel, need - PAGE_SIZE, None)).unwrap_err(),
            LoadError::SegmentOutsideRam { paddr: FOUR_GIB + GIB, end: FOUR_GIB + GIB + 0x2000 }
        );
    }

    #[test]
    fn initrd_goes_below_the_kernel_when_it_does_not_fit_above() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        // 80 MiB: 6 MiB above the kernel, 15 MiB below it.
        let initrd = vec![3u8; 10 * MIB as usize];
        let layout = plan_build_check(&spec(&kernel, 80 * MIB, Some(&initrd)));
        assert_eq!(layout.initrd.unwrap().0, BOOT_DATA_MIN);
        assert_eq!(layout.start_info, Gpa::new(0x4A0_0000), "start info still fits above");

        let huge = vec![3u8; 16 * MIB as usize];
        assert_eq!(
            plan(&spec(&kernel, 80 * MIB, Some(&huge))).unwrap_err(),
            LoadError::NoRoom { what: "initrd", size: 16 * MIB }
        );
    }

    #[test]
    fn start_info_needs_room_too() {
        // A kernel filling [1 MiB, 2 MiB) in a 2 MiB domain leaves nothing for the start info.
        let entry = Note { name: b"Xen\0".to_vec(), kind: 18, desc: 0x10_0000u32.to_le_bytes().to_vec() };
        let elf = ElfBuilder::new().load(MIB, 0, vec![0xC3; 16], MIB).note(entry).build();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let err = plan(&spec(&kernel, 2 * MIB, None)).unwrap_err();
        assert!(matches!(err, LoadError::NoRoom { what: "start info", .. }), "{err:?}");
        assert_eq!(min_ram_for(&kernel), 2 * MIB + PAGE_SIZE);
        plan_build_check(&spec(&kernel, 2 * MIB + PAGE_SIZE, None));
    }

    #[test]
    fn min_ram_for_a_debian_like_kernel() {
        let elf = debian_like();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let need = min_ram_for(&kernel);
        assert_eq!(need, 0x4A0_0000, "start info fits below the kernel");
        plan_build_check(&spec(&kernel, need, None));
        assert!(plan(&spec(&kernel, need - PAGE_SIZE, None)).is_err());
        let empty = PvhKernel { entry: 0, segments: vec![], features: None };
        assert_eq!(min_ram_for(&empty), u64::MAX);
    }

    #[test]
    fn dom0_flags_and_no_initrd() {
        let elf = tiny_elf_builder().build();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let dom0 = DomainSpec { flags: SIF_PRIVILEGED | SIF_INITDOMAIN, cmdline: "", ..spec(&kernel, 256 * MIB, None) };
        let layout = plan_build_check(&dom0);
        assert_eq!(layout.initrd, None);
        // An empty initrd is no initrd.
        let empty = plan_build_check(&spec(&kernel, 256 * MIB, Some(&[])));
        assert_eq!(empty.modlist, None);
    }

    #[test]
    fn many_vcpus_acpi_round_trip() {
        let elf = tiny_elf_builder().build();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        for vcpus in [1, 4, 128, 300] {
            plan_build_check(&DomainSpec { vcpus, ..spec(&kernel, 64 * MIB, Some(&[9; 4096])) });
        }
    }

    #[test]
    fn invalid_specs() {
        let elf = tiny_elf_builder().build();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let base = spec(&kernel, 64 * MIB, None);
        let bad = |s: DomainSpec<'_>| match plan(&s) {
            Err(LoadError::InvalidSpec(why)) => why,
            other => panic!("{other:?}"),
        };
        bad(DomainSpec { vcpus: 0, ..base });
        bad(DomainSpec { vcpus: MAX_GUEST_VCPUS + 1, ..base });
        bad(DomainSpec { ram_bytes: 0, ..base });
        bad(DomainSpec { ram_bytes: 64 * MIB + 1, ..base });
        bad(DomainSpec { ram_bytes: 1 << 53, ..base });
        bad(DomainSpec { flags: xen_abi::start_info::SIF_MOD_START_PFN, ..base });
        bad(DomainSpec { cmdline: "a\0b", ..base });
        let empty = PvhKernel { entry: 0, segments: vec![], features: None };
        bad(DomainSpec { kernel: &empty, ..base });
        assert!(plan(&DomainSpec { vcpus: MAX_GUEST_VCPUS, ..base }).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn plans_obey_the_rules(
            ram_pages in (512u64..4 * 1024 * 1024),
            vcpus in 1u32..64,
            initrd_len in 0usize..300_000,
            cmdline in "[ -~]{0,300}",
            at_16m in any::<bool>(),
        ) {
            let base = if at_16m { 16 * MIB } else { MIB };
            let entry = Note { name: b"Xen\0".to_vec(), kind: 18, desc: (base as u32).to_le_bytes().to_vec() };
            let elf = ElfBuilder::new().load(base, 0, vec![0xC3; 64], 0x30_0000).note(entry).build();
            let kernel = parse_pvh_kernel(&elf).unwrap();
            let initrd = vec![0xA5u8; initrd_len];
            let s = DomainSpec { ram_bytes: ram_pages * PAGE_SIZE, vcpus, kernel: &kernel, initrd: Some(&initrd), cmdline: &cmdline, flags: 0 };
            match plan(&s) {
                Ok(layout) => {
                    let mut mem = FakeMemory::new(&layout, 0xDB);
                    build(&s, &layout, &mut mem).unwrap();
                    check_built(&s, &layout, &mem);
                }
                Err(LoadError::SegmentOutsideRam { .. }) => prop_assert!(s.ram_bytes < min_ram_for(&kernel)),
                Err(LoadError::NoRoom { .. }) => {
                    // Only when low RAM outside [0, 1 MiB) and the kernel is too small for the data.
                    let low = s.ram_bytes.min(HVM_BELOW_4G_RAM_END);
                    let free = low.saturating_sub(MIB) - 0x30_0000;
                    prop_assert!(free < initrd_len as u64 + PAGE_SIZE * 2 + cmdline.len() as u64);
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn min_ram_is_exact(
            segs in proptest::collection::vec((0u64..0x4000, 1u64..0x400), 1..4),
            high in any::<bool>(),
        ) {
            // Segments at page-granular positions below 64 MiB (or, for one of them, above 4 GiB).
            let mut builder = ElfBuilder::new();
            let mut at = 0;
            let mut entry = None;
            for (i, (gap, pages)) in segs.iter().enumerate() {
                let paddr = if high && i == 1 { FOUR_GIB + gap * PAGE_SIZE } else { at + gap * PAGE_SIZE };
                builder = builder.load(paddr, 0, vec![1; 16], pages * PAGE_SIZE);
                entry.get_or_insert(paddr);
                if paddr < FOUR_GIB {
                    at = paddr + pages * PAGE_SIZE;
                }
            }
            let entry = entry.unwrap() as u32;
            let elf = builder.note(Note { name: b"Xen\0".to_vec(), kind: 18, desc: entry.to_le_bytes().to_vec() }).build();
            let kernel = match parse_pvh_kernel(&elf) {
                Ok(k) => k,
                Err(_) => return Ok(()), // overlapping draws
            };
            let need = min_ram_for(&kernel);
            prop_assume!(need != u64::MAX);
            let s = |ram| DomainSpec { ram_bytes: ram, vcpus: 1, kernel: &kernel, initrd: None, cmdline: "", flags: 0 };
            prop_assert!(plan(&s(need)).is_ok(), "min {need:#x} does not work");
            prop_assert!(plan(&s(need - PAGE_SIZE)).is_err(), "min {need:#x} is not minimal");
        }
    }
}
