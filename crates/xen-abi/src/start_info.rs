//! The PVH start of day (`public/arch-x86/hvm/start_info.h`): what a PVH kernel finds at the
//! physical address in EBX when it enters at its `XEN_ELFNOTE_PHYS32_ENTRY` point.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;

/// `flags`: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `flags`: the domain is the initial domain (dom0).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `flags`: modules are multiboot modules (for a PV loader).
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `flags`: `mod_start` is a frame number.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;

/// `struct hvm_start_info`. Version 1 adds the memory map.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmStartInfo {
    /// [`MAGIC`].
    pub magic: u32,
    /// 0 or 1.
    pub version: u32,
    /// `SIF_*`.
    pub flags: u32,
    /// Number of entries at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of an array of [`HvmModlistEntry`].
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Version 1: physical address of an array of [`HvmMemmapTableEntry`].
    pub memmap_paddr: u64,
    /// Version 1: number of memory-map entries (0: ask with XENMEM_memory_map).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of its NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

/// `struct hvm_memmap_table_entry`; `type_` uses E820 numbering.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmMemmapTableEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// One of the `MEMMAP_TYPE_*` values.
    pub type_: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// Memory-map entry types (the E820 numbers).
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// Reserved.
pub const MEMMAP_TYPE_RESERVED: u32 = 2;
/// ACPI tables, reclaimable.
pub const MEMMAP_TYPE_ACPI: u32 = 3;
/// ACPI non-volatile storage.
pub const MEMMAP_TYPE_NVS: u32 = 4;
/// Unusable.
pub const MEMMAP_TYPE_UNUSABLE: u32 = 5;
/// Disabled.
pub const MEMMAP_TYPE_DISABLED: u32 = 6;
/// Persistent memory.
pub const MEMMAP_TYPE_PMEM: u32 = 7;

assert_layout!(HvmStartInfo, 56, {
    magic: 0, version: 4, flags: 8, nr_modules: 12, modlist_paddr: 16, cmdline_paddr: 24, rsdp_paddr: 32,
    memmap_paddr: 40, memmap_entries: 48, reserved: 52,
});
assert_layout!(HvmModlistEntry, 32, { paddr: 0, size: 8, cmdline_paddr: 16, reserved: 24 });
assert_layout!(HvmMemmapTableEntry, 24, { addr: 0, size: 8, type_: 16, reserved: 20 });
