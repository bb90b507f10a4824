//! keel's virtual address space.
//!
//! keel runs on its own page tables (built in `paging`) with this layout, modelled on Xen's
//! so that the whole hypervisor lives in the part of the upper half that Xen reserves for
//! itself (0xffff800000000000..0xffff880000000000). That keeps the lower half and the rest of
//! the upper half free, which a PV guest sharing keel's address space will one day need.
//!
//! | range                                    | what                                          |
//! |------------------------------------------|-----------------------------------------------|
//! | `IMAGE_VIRT_OFFSET + phys` (first GiB)   | keel's image: text RX, rodata R, data/bss RW NX |
//! | `IOREMAP_BASE`, 1 GiB                    | device MMIO (local APIC, ...), uncached         |
//! | `STACKS_BASE`, 1 GiB                     | per-CPU stacks, each below an unmapped guard page |
//! | `DIRECTMAP_BASE`, up to 5 TiB            | every byte of RAM (and the first 4 GiB), NX     |

/// Physical address keel's image is loaded at (see linker.ld).
pub const IMAGE_PHYS_BASE: u64 = 0x20_0000;
/// Virtual address of physical address 0 in keel's image mapping (Xen's XEN_VIRT_START).
pub const IMAGE_VIRT_OFFSET: u64 = 0xffff_82d0_4000_0000;
/// Base of the MMIO mapping area.
pub const IOREMAP_BASE: u64 = 0xffff_82d0_8000_0000;
/// Size of the MMIO mapping area.
pub const IOREMAP_SIZE: u64 = 1 << 30;
/// Base of the per-CPU stack area.
pub const STACKS_BASE: u64 = 0xffff_82d0_c000_0000;
/// Size of the per-CPU stack area.
pub const STACKS_SIZE: u64 = 1 << 30;
/// Virtual address of physical address 0 in the direct map (Xen's DIRECTMAP_VIRT_START).
pub const DIRECTMAP_BASE: u64 = 0xffff_8300_0000_0000;
/// Largest physical address the direct map can cover.
pub const DIRECTMAP_SIZE: u64 = 5 << 40;

/// Page-table index of a virtual address at a given level (4 = PML4 ... 1 = PT).
pub const fn pt_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

// The boot code (boot.rs) hard-codes where the first GiB of the image mapping goes.
const _: () = assert!(IMAGE_VIRT_OFFSET.is_multiple_of(1 << 30));
const _: () = assert!(pt_index(IMAGE_VIRT_OFFSET, 4) == 261);
const _: () = assert!(pt_index(IMAGE_VIRT_OFFSET, 3) == 321);
const _: () = assert!(pt_index(DIRECTMAP_BASE, 4) != pt_index(IMAGE_VIRT_OFFSET, 4));
