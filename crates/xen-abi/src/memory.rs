//! `memory_op` (hypercall 12): reservations and the guest physical map (`public/memory.h`).
//!
//! Called as `memory_op(cmd, arg)`. Only the low [`MEMOP_CMD_MASK`] bits of `cmd` are the
//! sub-op; Xen keeps the extent to restart from in the bits above ([`MEMOP_EXTENT_SHIFT`])
//! when it preempts a long reservation call, so the dispatcher must mask before matching.
//!
//! For an HVM/PVH guest every frame number here (`xen_pfn_t`: `gpfn`, `gmfn`, `mfn`) is a
//! guest frame number, carried as [`XenPfn`].

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;
use crate::guest_handle::GuestHandle;

/// `xen_pfn_t`: a frame number as the ABI carries it (a guest frame number for HVM/PVH).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct XenPfn(pub u64);

impl fmt::Debug for XenPfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XenPfn({:#x})", self.0)
    }
}

impl fmt::Display for XenPfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Bits of `cmd` that select the sub-op (`MEMOP_CMD_MASK`).
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;
/// `cmd >> MEMOP_EXTENT_SHIFT` is the extent a preempted call continues from.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;

/// Splits a `memory_op` command word into (sub-op, start extent).
pub const fn split_cmd(cmd: u64) -> (u64, u64) {
    (cmd & MEMOP_CMD_MASK, cmd >> MEMOP_EXTENT_SHIFT)
}

/// Allocate extents ([`XenMemoryReservation`]).
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
/// Free extents ([`XenMemoryReservation`]); the balloon driver's call.
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// Returns the largest machine frame number in use (arg unused).
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
/// Returns the domain's current page count (arg: `domid_t`).
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
/// Returns the domain's maximum page count (arg: `domid_t`).
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
/// PV: list the frames of the machine-to-physical table.
pub const XENMEM_MACHPHYS_MFN_LIST: u64 = 5;
/// Populate guest frames with memory ([`XenMemoryReservation`]).
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// Map a special page at a guest frame ([`XenAddToPhysmap`]).
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// Read the domain's E820 memory map ([`XenMemoryMap`] of [`E820Entry`]).
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// Read the host's E820 memory map (privileged; [`XenMemoryMap`]).
pub const XENMEM_MACHINE_MEMORY_MAP: u64 = 10;
/// Exchange extents for others with different properties.
pub const XENMEM_EXCHANGE: u64 = 11;
/// PV: where the machine-to-physical table is mapped (HVM: `-ENOSYS`).
pub const XENMEM_MACHPHYS_MAPPING: u64 = 12;
/// Set a domain's memory map (toolstack; [`XenForeignMemoryMap`]).
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
/// Returns the largest guest frame number the domain uses (arg: `domid_t`).
pub const XENMEM_MAXIMUM_GPFN: u64 = 14;
/// Unmap the page at a guest frame ([`XenRemoveFromPhysmap`]).
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
/// Set the populate-on-demand target (toolstack).
pub const XENMEM_SET_POD_TARGET: u64 = 16;
/// Read the populate-on-demand target (toolstack).
pub const XENMEM_GET_POD_TARGET: u64 = 17;
/// Memory sharing: pages freed.
pub const XENMEM_GET_SHARING_FREED_PAGES: u64 = 18;
/// Memory sharing: pages shared.
pub const XENMEM_GET_SHARING_SHARED_PAGES: u64 = 19;
/// Memory paging (toolstack).
pub const XENMEM_PAGING_OP: u64 = 20;
/// Memory access control (toolstack).
pub const XENMEM_ACCESS_OP: u64 = 21;
/// Memory sharing (toolstack).
pub const XENMEM_SHARING_OP: u64 = 22;
/// Map several pages at once ([`XenAddToPhysmapBatch`]).
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
/// Claim pages for a domain being built (toolstack).
pub const XENMEM_CLAIM_PAGES: u64 = 24;
/// PV compat: machine-to-physical frames of the compat table.
pub const XENMEM_MACHPHYS_COMPAT_MFN_LIST: u64 = 25;
/// Read the virtual NUMA topology.
pub const XENMEM_GET_VNUMAINFO: u64 = 26;
/// Read reserved device memory regions.
pub const XENMEM_RESERVED_DEVICE_MEMORY_MAP: u64 = 27;
/// Map a resource (ioreq server pages, grant table frames) of another domain.
pub const XENMEM_ACQUIRE_RESOURCE: u64 = 28;

/// `mem_flags`: restrict allocations to machine addresses of at most `bits` bits
/// (`XENMEMF_address_bits`).
pub const fn xenmemf_address_bits(bits: u32) -> u32 {
    bits & 0xff
}
/// `XENMEMF_get_address_bits`.
pub const fn xenmemf_get_address_bits(flags: u32) -> u32 {
    flags & 0xff
}
/// `mem_flags`: prefer NUMA node `node` (`XENMEMF_node`; nodes 0 to 254).
pub const fn xenmemf_node(node: u32) -> u32 {
    (node.wrapping_add(1) & 0xff) << 8
}
/// `XENMEMF_get_node`: the node requested, `None` for no preference.
pub const fn xenmemf_get_node(flags: u32) -> Option<u32> {
    match (flags >> 8) & 0xff {
        0 => None,
        n => Some(n - 1),
    }
}
/// `mem_flags`: populate on demand.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `mem_flags`: the node request is a requirement, not a preference.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `mem_flags`: the node is a virtual node.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// Map space: the shared-info page (`idx` 0).
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// Map space: grant-table frame `idx` (OR [`XENMAPIDX_GRANT_TABLE_STATUS`] for v2 status).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// Map space: move guest frame `idx`.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// Map space: move `size` guest frames from `idx` ([`XENMEM_ADD_TO_PHYSMAP`] only).
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// Map space: frame `idx` of another domain ([`XENMEM_ADD_TO_PHYSMAP_BATCH`] only).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// Map space: device MMIO (ARM only).
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;
/// `idx` flag for [`XENMAPSPACE_GRANT_TABLE`]: a v2 status frame rather than a shared frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// `struct xen_memory_reservation`: argument of increase/decrease reservation and
/// populate physmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryReservation {
    /// Array of `nr_extents` frame numbers (IN and/or OUT depending on the sub-op).
    pub extent_start: GuestHandle<XenPfn>,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// Domain to act on (unprivileged callers: [`DomId::SELF`]).
    pub domid: DomId,
    /// Padding.
    pub _pad0: [u8; 6],
}

/// `struct xen_add_to_physmap`: argument of `XENMEM_add_to_physmap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// Domain whose map changes.
    pub domid: DomId,
    /// Number of pages, for [`XENMAPSPACE_GMFN_RANGE`] only.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (e.g. the grant frame number).
    pub idx: u64,
    /// Guest frame where the page should appear.
    pub gpfn: XenPfn,
}

/// `struct xen_add_to_physmap_batch`: argument of `XENMEM_add_to_physmap_batch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmapBatch {
    /// Domain whose map changes.
    pub domid: DomId,
    /// `XENMAPSPACE_*`.
    pub space: u16,
    /// Number of pages.
    pub size: u16,
    /// C union `u`: `foreign_domid` for [`XENMAPSPACE_GMFN_FOREIGN`], `res0` (must be 0)
    /// otherwise. Both members are 16 bits at the same place.
    pub foreign_domid: DomId,
    /// `size` indexes into the space.
    pub idxs: GuestHandle<u64>,
    /// `size` guest frames where the pages should appear.
    pub gpfns: GuestHandle<XenPfn>,
    /// OUT: `size` per-page error codes (`-errno` or 0).
    pub errs: GuestHandle<i32>,
}

/// `struct xen_remove_from_physmap`: argument of `XENMEM_remove_from_physmap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenRemoveFromPhysmap {
    /// Domain whose map changes.
    pub domid: DomId,
    /// Padding.
    pub _pad0: [u8; 6],
    /// Guest frame to unmap.
    pub gpfn: XenPfn,
}

/// `struct xen_memory_map`: argument of `XENMEM_memory_map` and `XENMEM_machine_memory_map`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryMap {
    /// IN: capacity of `buffer` in entries; OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub _pad0: u32,
    /// Array of [`E820Entry`] (C: `XEN_GUEST_HANDLE(void)`).
    pub buffer: GuestHandle<E820Entry>,
}

/// `struct xen_foreign_memory_map`: argument of `XENMEM_set_memory_map`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenForeignMemoryMap {
    /// Domain whose map is set.
    pub domid: DomId,
    /// Padding.
    pub _pad0: [u8; 6],
    /// The map.
    pub map: XenMemoryMap,
}

/// One entry of the map `XENMEM_memory_map` returns: the packed 20-byte E820 layout
/// (`type_` uses the `start_info::MEMMAP_TYPE_*` numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 RAM, 2 reserved, ...).
    pub type_: u32,
}

assert_layout!(XenPfn, 8);
assert_layout!(XenMemoryReservation, 32, {
    extent_start: 0, nr_extents: 8, extent_order: 16, mem_flags: 20, domid: 24,
});
assert_layout!(XenAddToPhysmap, 24, { domid: 0, size: 2, space: 4, idx: 8, gpfn: 16 });
assert_layout!(XenAddToPhysmapBatch, 32, {
    domid: 0, space: 2, size: 4, foreign_domid: 6, idxs: 8, gpfns: 16, errs: 24,
});
assert_layout!(XenRemoveFromPhysmap, 16, { domid: 0, gpfn: 8 });
assert_layout!(XenMemoryMap, 16, { nr_entries: 0, buffer: 8 });
assert_layout!(XenForeignMemoryMap, 24, { domid: 0, map: 8 });
assert_layout!(E820Entry, 20, { addr: 0, size: 8, type_: 16 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_mask_keeps_six_bits() {
        assert_eq!(MEMOP_CMD_MASK, 63);
        assert_eq!(split_cmd(XENMEM_POPULATE_PHYSMAP), (XENMEM_POPULATE_PHYSMAP, 0));
        assert_eq!(split_cmd(5 << 6 | XENMEM_DECREASE_RESERVATION), (XENMEM_DECREASE_RESERVATION, 5));
        assert_eq!(split_cmd(u64::MAX), (63, u64::MAX >> 6));
    }

    #[test]
    fn sub_ops_are_xens() {
        assert_eq!(XENMEM_ADD_TO_PHYSMAP, 7);
        assert_eq!(XENMEM_MEMORY_MAP, 9);
        assert_eq!(XENMEM_REMOVE_FROM_PHYSMAP, 15);
        assert_eq!(XENMEM_ADD_TO_PHYSMAP_BATCH, 23);
        assert_eq!(XENMEM_ACQUIRE_RESOURCE, 28);
        assert_eq!([XENMAPSPACE_SHARED_INFO, XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_GMFN], [0, 1, 2]);
        assert_eq!([XENMAPSPACE_GMFN_RANGE, XENMAPSPACE_GMFN_FOREIGN, XENMAPSPACE_DEV_MMIO], [3, 4, 5]);
    }

    #[test]
    fn mem_flags_helpers() {
        assert_eq!(xenmemf_address_bits(32), 32);
        assert_eq!(xenmemf_get_address_bits(xenmemf_address_bits(32) | xenmemf_node(3)), 32);
        assert_eq!(xenmemf_node(0), 1 << 8);
        assert_eq!(xenmemf_get_node(xenmemf_node(3) | XENMEMF_EXACT_NODE_REQUEST), Some(3));
        assert_eq!(xenmemf_get_node(0), None);
    }

    #[test]
    fn e820_entries_are_packed() {
        let mut bytes = [0u8; 40];
        bytes[8..16].copy_from_slice(&0x9fc00u64.to_le_bytes());
        bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
        bytes[20..28].copy_from_slice(&0x100000u64.to_le_bytes());
        let entries = <[E820Entry; 2]>::read_from_bytes(&bytes).unwrap();
        assert_eq!({ entries[0].size }, 0x9fc00);
        assert_eq!({ entries[0].type_ }, 1);
        assert_eq!({ entries[1].addr }, 0x100000);
    }
}
