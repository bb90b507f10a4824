//! `grant_table_op` (hypercall 20): grant tables, version 1 (`public/grant_table.h`).
//!
//! Called as `grant_table_op(cmd, arg, count)`: `arg` points to an array of `count` structures
//! of the sub-op's type. A domain shares a page by writing a [`GrantEntryV1`] in its grant
//! table (which it maps with `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)`); the grantee
//! maps or copies it by `(domain, grant reference)`. Per-operation results are `GNTST_*`
//! values in each structure's `status`, separate from the hypercall's return value.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;
use crate::guest_handle::GuestHandle;
use crate::memory::XenPfn;

/// `grant_ref_t`: an index into a domain's grant table.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

impl fmt::Debug for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantRef({})", self.0)
    }
}

/// `grant_handle_t`: names one mapping made by `GNTTABOP_map_grant_ref`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct GrantHandle(pub u32);

impl fmt::Debug for GrantHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantHandle({})", self.0)
    }
}

/// Map foreign grants ([`GnttabMapGrantRef`]).
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// Remove mappings ([`GnttabUnmapGrantRef`]).
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// Read the table's frame numbers ([`GnttabSetupTable`]; PV only).
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// Dump the table to the hypervisor console ([`GnttabDumpTable`]).
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// Transfer a page ([`GnttabTransfer`]; PV only).
pub const GNTTABOP_TRANSFER: u32 = 4;
/// Copy between grants or frames ([`GnttabCopy`]).
pub const GNTTABOP_COPY: u32 = 5;
/// Read the table's current and maximum size ([`GnttabQuerySize`]).
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// Unmap and replace with another mapping ([`GnttabUnmapAndReplace`]; PV only).
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// Choose the table format ([`GnttabSetVersion`]).
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// Read the v2 status frames ([`GnttabGetStatusFrames`]).
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
/// Read a domain's table format ([`GnttabGetVersion`]).
pub const GNTTABOP_GET_VERSION: u32 = 10;
/// Swap two entries ([`GnttabSwapGrantRef`]).
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
/// Cache maintenance on granted memory ([`GnttabCacheFlush`]; ARM).
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

/// Entries 0 to 7 are reserved for the toolstack.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry granting the console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = GrantRef(0);
/// Reserved entry granting the xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = GrantRef(1);
/// Version-1 entries per 4 KiB grant frame.
pub const GRANT_ENTRIES_V1_PER_FRAME: usize = crate::XEN_PAGE_SIZE / core::mem::size_of::<GrantEntryV1>();

/// Entry type (bits 0-1): unused.
pub const GTF_INVALID: u16 = 0;
/// Entry type: `domid` may map or copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Entry type: `domid` may transfer a page into this entry (PV).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Entry type: transitive grant (v2 only).
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the entry type.
pub const GTF_TYPE_MASK: u16 = 3;
/// The grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while the grantee has the frame mapped or copies from it.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while the grantee has the frame mapped writable or copies to it.
pub const GTF_WRITING: u16 = 1 << 4;
/// Cache attribute for the grantee's mapping: write-through.
pub const GTF_PWT: u16 = 1 << 5;
/// Cache attribute: cache disable.
pub const GTF_PCD: u16 = 1 << 6;
/// Cache attribute: PAT.
pub const GTF_PAT: u16 = 1 << 7;
/// Sub-page grant (v2 only).
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `accept_transfer` entries: the transfer is committed (shares bit 2).
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// `accept_transfer` entries: the transfer is complete (shares bit 3).
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// Map flag: map for device (IOMMU) access.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// Map flag: map at `host_addr` for CPU access.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// Map flag: map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// Map flag: the mapping is for user space (PV).
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// Map flag: `host_addr` is the address of a PTE to write (PV).
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// Map flags: bits 16 and up are for the guest's own use.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0 << 16;

/// Copy flag: `source` names a grant reference (otherwise a frame of `source.domid`).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// Copy flag: `dest` names a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// Status: success.
pub const GNTST_OKAY: i16 = 0;
/// Status: unspecified error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// Status: unrecognised domain id.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// Status: unrecognised or inappropriate grant reference.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// Status: unrecognised or inappropriate mapping handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// Status: inappropriate virtual address to map.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// Status: inappropriate device address to unmap.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// Status: out of space in the I/O MMU.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// Status: not enough privilege.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// Status: the page was invalid for the operation.
pub const GNTST_BAD_PAGE: i16 = -9;
/// Status: copy arguments cross a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// Status: transfer page address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// Status: not done; try again.
pub const GNTST_EAGAIN: i16 = -12;
/// Status: out of space (handles etc.).
pub const GNTST_NO_SPACE: i16 = -13;

/// Xen's message for a `GNTST_*` value (`GNTTABOP_error_msgs`), or `None` if undefined.
pub const fn gntst_message(status: i16) -> Option<&'static str> {
    Some(match status {
        GNTST_OKAY => "okay",
        GNTST_GENERAL_ERROR => "undefined error",
        GNTST_BAD_DOMAIN => "unrecognised domain id",
        GNTST_BAD_GNTREF => "invalid grant reference",
        GNTST_BAD_HANDLE => "invalid mapping handle",
        GNTST_BAD_VIRT_ADDR => "invalid virtual address",
        GNTST_BAD_DEV_ADDR => "invalid device address",
        GNTST_NO_DEVICE_SPACE => "no spare translation slot in the I/O MMU",
        GNTST_PERMISSION_DENIED => "permission denied",
        GNTST_BAD_PAGE => "bad page",
        GNTST_BAD_COPY_ARG => "copy arguments cross page boundary",
        GNTST_ADDRESS_TOO_BIG => "page address size too large",
        GNTST_EAGAIN => "operation not done; try again",
        GNTST_NO_SPACE => "out of space",
        _ => return None,
    })
}

/// `struct grant_entry_v1`: one entry of a version-1 grant table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*`. The granter writes the type and READONLY; the hypervisor sets and clears
    /// READING/WRITING, so updates must be atomic.
    pub flags: u16,
    /// The domain allowed to use the grant.
    pub domid: DomId,
    /// The granting domain's frame (a guest frame number; 32 bits in v1).
    pub frame: u32,
}

impl GrantEntryV1 {
    /// The entry type, `flags & GTF_TYPE_MASK`.
    pub const fn grant_type(&self) -> u16 {
        self.flags & GTF_TYPE_MASK
    }
}

/// `struct gnttab_map_grant_ref`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// Where to map (for an HVM/PVH caller with `GNTMAP_host_map`: a guest-physical address).
    pub host_addr: u64,
    /// `GNTMAP_*`.
    pub flags: u32,
    /// C `ref`: the grant to map.
    pub ref_: GrantRef,
    /// The granting domain.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for the unmap.
    pub handle: GrantHandle,
    /// OUT: bus address, with `GNTMAP_device_map`.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// The address given to the map (0 to skip the host mapping).
    pub host_addr: u64,
    /// The bus address returned by the map (0 to skip the device mapping).
    pub dev_bus_addr: u64,
    /// The handle returned by the map.
    pub handle: GrantHandle,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

/// `struct gnttab_setup_table`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// Domain whose table to read.
    pub dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// Number of frames wanted (capacity of `frame_list`).
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
    /// OUT: the table's frame numbers.
    pub frame_list: GuestHandle<XenPfn>,
}

/// `struct gnttab_dump_table`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabDumpTable {
    /// Domain whose table to dump.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
}

/// `struct gnttab_transfer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabTransfer {
    /// Frame to give away.
    pub mfn: XenPfn,
    /// Receiving domain.
    pub domid: DomId,
    /// Padding.
    pub _pad0: u16,
    /// C `ref`: the receiver's `accept_transfer` entry.
    pub ref_: GrantRef,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
}

raw_union!(
    /// C union `u` of `struct gnttab_copy_ptr`: a grant reference (`ref`, 32 bits) or a frame
    /// number (`gmfn`, 64 bits), starting at the same byte.
    pub struct GnttabCopyPtrU, 8, 8
);

/// `struct gnttab_copy_ptr`: one end of a [`GnttabCopy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// Grant reference or frame, per the copy's `GNTCOPY_*` flags.
    pub u: GnttabCopyPtrU,
    /// Domain owning the grant or frame.
    pub domid: DomId,
    /// Byte offset in the page.
    pub offset: u16,
    /// Padding.
    pub _pad0: u32,
}

impl GnttabCopyPtr {
    /// An end named by grant reference.
    pub fn by_gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        let mut p = Self { domid, offset, ..Self::default() };
        p.set_gref(gref);
        p
    }

    /// An end named by frame number.
    pub fn by_gmfn(gmfn: XenPfn, domid: DomId, offset: u16) -> Self {
        let mut p = Self { domid, offset, ..Self::default() };
        p.set_gmfn(gmfn);
        p
    }

    /// `u.ref`.
    pub fn gref(&self) -> GrantRef {
        self.u.read()
    }

    /// `u.gmfn`.
    pub fn gmfn(&self) -> XenPfn {
        self.u.read()
    }

    /// Sets `u.ref` (and clears the rest of the union).
    pub fn set_gref(&mut self, gref: GrantRef) {
        self.u.write(&gref);
    }

    /// Sets `u.gmfn`.
    pub fn set_gmfn(&mut self, gmfn: XenPfn) {
        self.u.write(&gmfn);
    }
}

/// `struct gnttab_copy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCopy {
    /// Where to copy from.
    pub source: GnttabCopyPtr,
    /// Where to copy to.
    pub dest: GnttabCopyPtr,
    /// Bytes to copy (neither end may cross its page).
    pub len: u16,
    /// `GNTCOPY_*`: which ends are grant references.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

/// One end of a copy, decoded with the copy's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// A grant of `domid`.
    Gref(GrantRef),
    /// A frame of `domid` (the caller's own, or any with privilege).
    Gmfn(XenPfn),
}

impl GnttabCopy {
    /// The source, as the flags say to read it.
    pub fn source_end(&self) -> CopyEnd {
        if self.flags & GNTCOPY_SOURCE_GREF != 0 {
            CopyEnd::Gref(self.source.gref())
        } else {
            CopyEnd::Gmfn(self.source.gmfn())
        }
    }

    /// The destination, as the flags say to read it.
    pub fn dest_end(&self) -> CopyEnd {
        if self.flags & GNTCOPY_DEST_GREF != 0 {
            CopyEnd::Gref(self.dest.gref())
        } else {
            CopyEnd::Gmfn(self.dest.gmfn())
        }
    }
}

/// `struct gnttab_query_size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// Domain to query.
    pub dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// OUT: current number of frames.
    pub nr_frames: u32,
    /// OUT: maximum number of frames.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: u16,
}

/// `struct gnttab_unmap_and_replace`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    /// Mapping to remove.
    pub host_addr: u64,
    /// Mapping to move there.
    pub new_addr: u64,
    /// Handle of the mapping.
    pub handle: GrantHandle,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

/// `struct gnttab_set_version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// IN: 1 or 2; OUT: the version in force.
    pub version: u32,
}

/// `struct gnttab_get_status_frames`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    /// Number of frames wanted.
    pub nr_frames: u32,
    /// Domain to query.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: frame numbers.
    pub frame_list: GuestHandle<u64>,
}

/// `struct gnttab_get_version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// Domain to query.
    pub dom: DomId,
    /// Padding (C `pad`).
    pub pad: u16,
    /// OUT: 1 or 2.
    pub version: u32,
}

/// `struct gnttab_swap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    /// First entry.
    pub ref_a: GrantRef,
    /// Second entry.
    pub ref_b: GrantRef,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

raw_union!(
    /// C union `a` of `struct gnttab_cache_flush`: a bus address (`dev_bus_addr`, 64 bits) or
    /// a grant reference (`ref`, 32 bits).
    pub struct GnttabCacheFlushA, 8, 8
);

/// `GnttabCacheFlush::op`: clean.
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `GnttabCacheFlush::op`: invalidate.
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `GnttabCacheFlush::op`: `a` is a grant reference.
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// `struct gnttab_cache_flush`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCacheFlush {
    /// Bus address or grant reference (see [`GNTTAB_CACHE_SOURCE_GREF`]).
    pub a: GnttabCacheFlushA,
    /// Offset in the page.
    pub offset: u16,
    /// Length.
    pub length: u16,
    /// `GNTTAB_CACHE_*`.
    pub op: u32,
}

assert_layout!(GrantRef, 4);
assert_layout!(GrantHandle, 4);
assert_layout!(GrantEntryV1, 8, { flags: 0, domid: 2, frame: 4 });
assert_layout!(GnttabMapGrantRef, 32, {
    host_addr: 0, flags: 8, ref_: 12, dom: 16, status: 18, handle: 20, dev_bus_addr: 24,
});
assert_layout!(GnttabUnmapGrantRef, 24, { host_addr: 0, dev_bus_addr: 8, handle: 16, status: 20 });
assert_layout!(GnttabSetupTable, 24, { dom: 0, nr_frames: 4, status: 8, frame_list: 16 });
assert_layout!(GnttabDumpTable, 4, { dom: 0, status: 2 });
assert_layout!(GnttabTransfer, 24, { mfn: 0, domid: 8, ref_: 12, status: 16 });
assert_layout!(GnttabCopyPtrU, 8);
assert_layout!(GnttabCacheFlushA, 8);
assert_layout!(GnttabCopyPtr, 16, { u: 0, domid: 8, offset: 10 });
assert_layout!(GnttabCopy, 40, { source: 0, dest: 16, len: 32, flags: 34, status: 36 });
assert_layout!(GnttabQuerySize, 16, { dom: 0, nr_frames: 4, max_nr_frames: 8, status: 12 });
assert_layout!(GnttabUnmapAndReplace, 24, { host_addr: 0, new_addr: 8, handle: 16, status: 20 });
assert_layout!(GnttabSetVersion, 4, { version: 0 });
assert_layout!(GnttabGetStatusFrames, 16, { nr_frames: 0, dom: 4, status: 6, frame_list: 8 });
assert_layout!(GnttabGetVersion, 8, { dom: 0, pad: 2, version: 4 });
assert_layout!(GnttabSwapGrantRef, 12, { ref_a: 0, ref_b: 4, status: 8 });
assert_layout!(GnttabCacheFlush, 16, { a: 0, offset: 8, length: 10, op: 12 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_xens() {
        let all = [
            GNTST_OKAY,
            GNTST_GENERAL_ERROR,
            GNTST_BAD_DOMAIN,
            GNTST_BAD_GNTREF,
            GNTST_BAD_HANDLE,
            GNTST_BAD_VIRT_ADDR,
            GNTST_BAD_DEV_ADDR,
            GNTST_NO_DEVICE_SPACE,
            GNTST_PERMISSION_DENIED,
            GNTST_BAD_PAGE,
            GNTST_BAD_COPY_ARG,
            GNTST_ADDRESS_TOO_BIG,
            GNTST_EAGAIN,
            GNTST_NO_SPACE,
        ];
        for (i, status) in all.into_iter().enumerate() {
            assert_eq!(status, -(i as i16));
            assert!(gntst_message(status).is_some());
        }
        assert_eq!(gntst_message(-14), None);
        assert_eq!(gntst_message(1), None);
        assert_eq!(gntst_message(i16::MIN), None);
    }

    #[test]
    fn flags_are_xens() {
        assert_eq!(GTF_READONLY, 0x4);
        assert_eq!(GTF_READING, 0x8);
        assert_eq!(GTF_WRITING, 0x10);
        assert_eq!(GTF_SUB_PAGE, 0x100);
        assert_eq!(GNTMAP_HOST_MAP | GNTMAP_READONLY, 0x6);
        assert_eq!(GNTMAP_GUEST_AVAIL_MASK, 0xffff_0000);
        assert_eq!(GRANT_ENTRIES_V1_PER_FRAME, 512);
        let e = GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: DomId(0), frame: 0x1234 };
        assert_eq!(e.grant_type(), GTF_PERMIT_ACCESS);
    }

    #[test]
    fn copy_ptr_union_members() {
        let by_ref = GnttabCopyPtr::by_gref(GrantRef(0x1122_3344), DomId(5), 0x80);
        assert_eq!(by_ref.gref(), GrantRef(0x1122_3344));
        assert_eq!(&by_ref.as_bytes()[..8], &[0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0]);
        let by_frame = GnttabCopyPtr::by_gmfn(XenPfn(0xdead_beef_0000), DomId::SELF, 0);
        assert_eq!(by_frame.gmfn(), XenPfn(0xdead_beef_0000));

        let copy =
            GnttabCopy { source: by_ref, dest: by_frame, len: 64, flags: GNTCOPY_SOURCE_GREF, ..Default::default() };
        assert_eq!(copy.source_end(), CopyEnd::Gref(GrantRef(0x1122_3344)));
        assert_eq!(copy.dest_end(), CopyEnd::Gmfn(XenPfn(0xdead_beef_0000)));
        let swapped = GnttabCopy { flags: GNTCOPY_DEST_GREF, ..copy };
        assert_eq!(swapped.source_end(), CopyEnd::Gmfn(XenPfn(0x1122_3344)));
        assert_eq!(swapped.dest_end(), CopyEnd::Gref(GrantRef(0xbeef_0000)));
    }
}
