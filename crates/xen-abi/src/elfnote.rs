//! Xen ELF notes (`public/elfnote.h`): the name is "Xen", the type says what the descriptor is.

/// Name of every Xen note (with its NUL: namesz = 4).
pub const NAME: &[u8; 4] = b"Xen\0";

/// Guest OS name (string).
pub const GUEST_OS: u32 = 6;
/// Virtual base of the kernel (PV).
pub const VIRT_BASE: u32 = 3;
/// PV entry point (virtual).
pub const ENTRY: u32 = 1;
/// Features the kernel supports (bitmap).
pub const SUPPORTED_FEATURES: u32 = 17;
/// 32-bit physical entry point of a PVH kernel: 32-bit protected mode, paging off,
/// EBX = physical address of `hvm_start_info`.
pub const PHYS32_ENTRY: u32 = 18;
/// Physical relocation range of a PVH kernel.
pub const PHYS32_RELOC: u32 = 19;
