//! Writing a planned PVH domain into guest memory: the kernel's segments (with their BSS
//! zeroed), the initrd, the ACPI tables, the start info block and clean special pages.
//!
//! Memory is reached only through [`GuestMemory`], so keel writes through its p2m while the
//! tests write into a fake that refuses anything outside the frames the plan populates. The
//! start info block is assembled in a buffer and written once; it holds, in this order, the
//! `hvm_start_info` (version 1, with the memory map), the module list (the initrd, if any), the
//! memory map copy and the NUL-terminated command line, as `xen-abi.md` §1.3 lays them out.

use alloc::vec::Vec;

use keel_mm::{Gpa, PAGE_SIZE};
use xen_abi::start_info::{HvmModlistEntry, HvmStartInfo, MAGIC};
use zerocopy::IntoBytes;

use crate::layout::{acpi_tables, plan, ACPI_BASE, NR_SPECIAL_PAGES};
use crate::{DomainSpec, Layout, LoadError};

/// Guest memory as the domain builder writes it.
///
/// keel implements it over the domain's p2m (the frames [`Layout::populate`] lists are backed
/// and zeroed before [`build`] runs); tests implement it over a fake. Writes outside the
/// populated frames must fail rather than be dropped.
pub trait GuestMemory {
    /// Copies `bytes` to guest-physical `gpa ..`.
    ///
    /// # Errors
    /// `Err(())` if any byte of the range is not backed; [`build`] reports it as
    /// [`LoadError::GuestWrite`] with the range.
    // The builder attaches the range itself, so an error type would carry nothing.
    #[allow(clippy::result_unit_err)]
    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), ()>;

    /// Zero-fills guest-physical `gpa .. gpa + len`.
    ///
    /// # Errors
    /// As [`GuestMemory::write`].
    #[allow(clippy::result_unit_err)]
    fn zero(&mut self, gpa: Gpa, len: u64) -> Result<(), ()>;
}

fn write(mem: &mut dyn GuestMemory, gpa: u64, bytes: &[u8]) -> Result<(), LoadError> {
    mem.write(Gpa::new(gpa), bytes).map_err(|()| LoadError::GuestWrite { gpa, len: bytes.len() as u64 })
}

fn zero(mem: &mut dyn GuestMemory, gpa: u64, len: u64) -> Result<(), LoadError> {
    if len == 0 {
        return Ok(());
    }
    mem.zero(Gpa::new(gpa), len).map_err(|()| LoadError::GuestWrite { gpa, len })
}

/// Writes the domain `layout` describes; `layout` must be what [`plan`] returned for `spec`.
///
/// Written: the special pages (zeroed), every kernel segment at its physical address with the
/// part past its file data zeroed, the initrd, the ACPI tables at
/// [`ACPI_BASE`](crate::ACPI_BASE) and the start info block. Nothing else is touched: the rest of
/// RAM is expected to be zero already, as freshly populated frames are.
///
/// # Errors
/// [`LoadError::LayoutMismatch`] if `layout` is not the plan for `spec`, whatever [`plan`]
/// reports for `spec`, and [`LoadError::GuestWrite`] if guest memory refuses a write.
pub fn build(spec: &DomainSpec<'_>, layout: &Layout, mem: &mut dyn GuestMemory) -> Result<(), LoadError> {
    if !plan(spec)?.same_as(layout) {
        return Err(LoadError::LayoutMismatch);
    }
    let special = layout.special_pfn_base.as_u64() * PAGE_SIZE;
    zero(mem, special, NR_SPECIAL_PAGES * PAGE_SIZE)?;

    for s in &spec.kernel.segments {
        write(mem, s.paddr, s.data)?;
        zero(mem, s.paddr + s.data.len() as u64, s.memsz - s.data.len() as u64)?;
    }

    if let (Some((at, _)), Some(initrd)) = (layout.initrd, spec.initrd) {
        write(mem, at.as_u64(), initrd)?;
    }

    let (acpi, tables) = acpi_tables(spec.vcpus)?;
    debug_assert_eq!(acpi, layout.acpi);
    write(mem, ACPI_BASE.as_u64(), &tables)?;

    write(mem, layout.start_info.as_u64(), &boot_block(spec, layout))?;
    Ok(())
}

/// The start info block: start info, module list, memory map copy, command line.
fn boot_block(spec: &DomainSpec<'_>, layout: &Layout) -> Vec<u8> {
    let base = layout.start_info.as_u64();
    let modules = layout.initrd.map(|(paddr, size)| HvmModlistEntry {
        paddr: paddr.as_u64(),
        size,
        cmdline_paddr: 0,
        reserved: 0,
    });
    let start_info = HvmStartInfo {
        magic: MAGIC,
        version: 1,
        flags: spec.flags,
        nr_modules: u32::from(modules.is_some()),
        modlist_paddr: layout.modlist.map_or(0, Gpa::as_u64),
        cmdline_paddr: layout.cmdline.as_u64(),
        rsdp_paddr: layout.acpi.rsdp,
        memmap_paddr: layout.memmap_table.as_u64(),
        // At most MAX_MEMMAP_ENTRIES.
        memmap_entries: layout.memmap.len() as u32,
        reserved: 0,
    };
    let mut block = Vec::new();
    block.extend_from_slice(start_info.as_bytes());
    if let Some(entry) = modules {
        debug_assert_eq!(layout.modlist.map(|m| m.as_u64() - base), Some(block.len() as u64));
        block.extend_from_slice(entry.as_bytes());
    }
    debug_assert_eq!(layout.memmap_table.as_u64() - base, block.len() as u64);
    block.extend_from_slice(layout.memmap.as_bytes());
    debug_assert_eq!(layout.cmdline.as_u64() - base, block.len() as u64);
    block.extend_from_slice(spec.cmdline.as_bytes());
    block.push(0);
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_built, tiny_elf, FakeMemory};
    use crate::{parse_pvh_kernel, plan};
    use keel_mm::Gfn;

    fn spec<'a>(kernel: &'a crate::PvhKernel<'a>, initrd: &'a [u8]) -> DomainSpec<'a> {
        DomainSpec { ram_bytes: 64 << 20, vcpus: 2, kernel, initrd: Some(initrd), cmdline: "quiet", flags: 0 }
    }

    #[test]
    fn builds_what_was_planned() {
        let elf = tiny_elf();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let initrd = [0x42u8; 5000];
        let s = spec(&kernel, &initrd);
        let layout = plan(&s).unwrap();
        let mut mem = FakeMemory::new(&layout, 0xDB);
        build(&s, &layout, &mut mem).unwrap();
        check_built(&s, &layout, &mem);
        // Special pages, one segment (data + BSS), initrd, ACPI, start info block.
        assert_eq!(mem.calls, 6);
    }

    #[test]
    fn refuses_a_layout_planned_for_another_domain() {
        let elf = tiny_elf();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let initrd = [0x42u8; 5000];
        let s = spec(&kernel, &initrd);
        let layout = plan(&s).unwrap();
        let mut mem = FakeMemory::new(&layout, 0);
        let bigger = [0x42u8; 9000];
        for other in [
            DomainSpec { initrd: Some(&bigger), ..s },
            DomainSpec { vcpus: 3, ..s },
            DomainSpec { ram_bytes: 128 << 20, ..s },
            DomainSpec { initrd: None, ..s },
        ] {
            assert_eq!(build(&other, &layout, &mut mem), Err(LoadError::LayoutMismatch));
        }
        let mut moved = layout.clone();
        moved.memmap[0].size -= PAGE_SIZE;
        assert_eq!(build(&s, &moved, &mut mem), Err(LoadError::LayoutMismatch));
        assert_eq!(mem.calls, 0, "nothing written");
        // What matters is the placement: a spec that plans the same layout is accepted.
        build(&DomainSpec { cmdline: "quiet splash", ..s }, &layout, &mut mem).unwrap();
    }

    #[test]
    fn reports_refused_writes() {
        let elf = tiny_elf();
        let kernel = parse_pvh_kernel(&elf).unwrap();
        let initrd = [0x42u8; 5000];
        let s = spec(&kernel, &initrd);
        let layout = plan(&s).unwrap();

        // Memory without the special pages.
        let mut short = layout.clone();
        short.populate.retain(|&(gfn, _)| gfn != Gfn::new(0xFEFF8));
        let mut mem = FakeMemory::new(&short, 0);
        assert_eq!(build(&s, &layout, &mut mem), Err(LoadError::GuestWrite { gpa: 0xFEFF_8000, len: 0x8000 }));

        // Memory without the kernel's RAM.
        let mut short = layout.clone();
        short.populate[0] = (Gfn::new(0), 0x100);
        let mut mem = FakeMemory::new(&short, 0);
        assert_eq!(build(&s, &layout, &mut mem), Err(LoadError::GuestWrite { gpa: 0x10_0000, len: 0x800 }));
    }
}
