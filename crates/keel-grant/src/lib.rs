//! keel-grant: Xen grant tables (version 1) for one domain, as a state machine keel drives and
//! the host can test.
//!
//! A domain shares a page by writing an entry into its grant table, a few frames that keel
//! allocated and mapped into the domain's physical address space; another domain (or the same
//! one) then maps the page, or copies to or from it, by naming `(granter, grant reference)`.
//! This crate owns, per domain, both halves of that bookkeeping:
//!
//! * **as granter**: the shared frames (read and updated only atomically, since the guest writes
//!   them concurrently), how many are in use and the maximum, and the *active* entries (Xen's
//!   `active_grant_entry`: per grant reference, the pin counts, and the grantee and frame
//!   captured when it was first pinned);
//! * **as mapper**: the maptrack, handle to `(granter, grant reference, access, guest frame it
//!   is mapped at)`.
//!
//! It has no locks and no globals: keel keeps each domain's [`GrantTable`] behind its own mutex
//! and passes the other domain's table to two-domain operations as a [`Peer`].
//!
//! # Behaviour
//!
//! Every status (`GNTST_*`, as [`GrantStatus`]) and errno is the one Xen 4.17 gives in the same
//! situation to an auto-translated (HVM/PVH) caller, and checks are made in Xen's order so that
//! when several things are wrong the same one is reported. The source of each rule is
//! `xen/common/grant_table.c` in Xen 4.17 unless a comment says otherwise; where keel diverges
//! on purpose the item's documentation says so.
//!
//! Only version 1 exists here: a table behaves as Xen's does for a domain created with
//! `max_grant_version = 1` ([`GrantTable::set_version`]).
//!
//! # How keel drives it
//!
//! * **Creation**: [`GrantTable::new`] with a [`GrantConfig`] and a [`FrameSource`]; the table
//!   starts with one frame, as Xen's does.
//! * **Frames into the guest**: `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)` is
//!   [`GrantTable::add_to_physmap`] (grows the table, says which frame and where it is mapped
//!   now), then keel's p2m update, then [`GrantTable::set_frame_gfn`]. `GNTTABOP_setup_table`
//!   is [`GrantTable::setup_table`] and [`GrantTable::frame_list`].
//! * **Map**: [`check_map_flags`], resolve the granter by number (`GNTST_bad_domain`, also for
//!   `DOMID_SELF`), then [`GrantTable::map`] on the mapper's table; then insert the frame into
//!   the mapper's p2m. If that fails, [`GrantTable::undo_map`] and [`GrantTable::finish_unmap`]
//!   put everything back.
//! * **Unmap**: [`GrantTable::unmap`] on the mapper's table gives a [`PendingUnmap`]; keel
//!   removes the p2m entry, flushes the TLBs of the mapper's CPUs, and only then calls
//!   [`GrantTable::finish_unmap`] on the granter's table, which drops the pin and clears
//!   `GTF_reading`/`GTF_writing`. (The granter may reuse the page as soon as those flags clear,
//!   so they must not clear while a stale translation can still reach it.)
//! * **Copy**: see [`copy`]: [`check_copy_end`] per side, [`GrantTable::acquire_copy`] per
//!   grant side, [`check_copy_range`], the copy itself, [`GrantTable::release_copy`].
//! * **Teardown**: a dying mapper gives back its mappings one at a time with
//!   [`GrantTable::release_next_mapping`]; a dying granter is [`GrantTable::mark_dying`] and
//!   kept (with the frames its pinned grants name) while [`GrantTable::pinned_count`] is
//!   non-zero; [`GrantTable::destroy`] then hands its frames back.
//!
//! Frames of the granter's memory are taken and released through [`GranterMemory`]: the crate
//! takes one reference when a grant is first pinned and drops it when the last pin goes, so
//! keel can keep a granted page alive however the granter changes its p2m meanwhile.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(test)]
extern crate std;

pub mod copy;
mod frame;
mod granter;
mod maptrack;
mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod thread_tests;

use core::fmt;

use keel_mm::{Gfn, Pfn};
use xen_abi::grant_table::{
    GNTST_ADDRESS_TOO_BIG, GNTST_BAD_COPY_ARG, GNTST_BAD_DEV_ADDR, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF,
    GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_BAD_VIRT_ADDR, GNTST_EAGAIN, GNTST_GENERAL_ERROR, GNTST_NO_DEVICE_SPACE,
    GNTST_NO_SPACE, GNTST_OKAY, GNTST_PERMISSION_DENIED,
};

pub use copy::{check_copy_end, check_copy_range, CopyGrant};
pub use frame::{FrameSource, SharedFrame, WORDS_PER_FRAME};
pub use table::{
    check_map_flags, ActiveGrant, GrantConfig, GrantTable, MapRequest, Mapped, Mapping, Peer, PendingUnmap,
    PhysmapFrame, QuerySize, SetVersion,
};

/// Xen's default maximum number of grant frames per domain (`gnttab_max_frames`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// Xen's default maximum number of maptrack frames per domain (`gnttab_max_maptrack_frames`).
pub const DEFAULT_MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Frames a table has from creation (Xen's `INITIAL_NR_GRANT_FRAMES` on x86).
pub const INITIAL_GRANT_FRAMES: u32 = 1;
/// Maptrack entries per maptrack frame: Xen's `struct grant_mapping` is 16 bytes, so a 4 KiB
/// frame holds 256 and the maptrack limit grows in steps of 256 handles.
pub const MAPTRACK_PER_FRAME: u32 = 256;
/// The most pins of one kind (read-only, or writable) a grant can hold at once. Xen keeps each
/// count in 8 bits and refuses an increment once the top bit is set, i.e. at 128.
pub const MAX_PINS: u16 = 128;
/// The value `GNTTABOP_setup_table` reports for a frame the guest has not mapped anywhere
/// (Xen returns the frame's M2P entry, `INVALID_M2P_ENTRY`, for a translated guest).
pub const INVALID_GFN: u64 = u64::MAX;

/// A failed grant operation's `GNTST_*` status (success is the `Ok` side of a `Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GrantStatus {
    /// `GNTST_general_error`.
    GeneralError = GNTST_GENERAL_ERROR,
    /// `GNTST_bad_domain`.
    BadDomain = GNTST_BAD_DOMAIN,
    /// `GNTST_bad_gntref`.
    BadGntref = GNTST_BAD_GNTREF,
    /// `GNTST_bad_handle`.
    BadHandle = GNTST_BAD_HANDLE,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr = GNTST_BAD_VIRT_ADDR,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr = GNTST_BAD_DEV_ADDR,
    /// `GNTST_no_device_space`.
    NoDeviceSpace = GNTST_NO_DEVICE_SPACE,
    /// `GNTST_permission_denied`.
    PermissionDenied = GNTST_PERMISSION_DENIED,
    /// `GNTST_bad_page`.
    BadPage = GNTST_BAD_PAGE,
    /// `GNTST_bad_copy_arg`.
    BadCopyArg = GNTST_BAD_COPY_ARG,
    /// `GNTST_address_too_big`.
    AddressTooBig = GNTST_ADDRESS_TOO_BIG,
    /// `GNTST_eagain`.
    Eagain = GNTST_EAGAIN,
    /// `GNTST_no_space`.
    NoSpace = GNTST_NO_SPACE,
}

impl GrantStatus {
    /// Every status, in Xen's numbering order.
    pub const ALL: [GrantStatus; 13] = [
        Self::GeneralError,
        Self::BadDomain,
        Self::BadGntref,
        Self::BadHandle,
        Self::BadVirtAddr,
        Self::BadDevAddr,
        Self::NoDeviceSpace,
        Self::PermissionDenied,
        Self::BadPage,
        Self::BadCopyArg,
        Self::AddressTooBig,
        Self::Eagain,
        Self::NoSpace,
    ];

    /// The `GNTST_*` value to store in the operation's `status` field.
    pub const fn raw(self) -> i16 {
        self as i16
    }

    /// The status whose value is `raw`; `None` for `GNTST_okay` and undefined values.
    pub fn from_raw(raw: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.raw() == raw)
    }

    /// The `status` field for an operation's result: `GNTST_okay` or the error's value.
    pub fn of<T>(result: &Result<T, GrantStatus>) -> i16 {
        match result {
            Ok(_) => GNTST_OKAY,
            Err(e) => e.raw(),
        }
    }
}

/// Xen's message for the status (`GNTTABOP_error_msgs`).
impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(xen_abi::grant_table::gntst_message(self.raw()).unwrap_or("unknown grant status"))
    }
}

/// Read-only or writable access to a granted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only: a `GNTMAP_readonly` mapping, or the source of a copy.
    ReadOnly,
    /// Read and write: a writable mapping, or the destination of a copy.
    Writable,
}

impl Access {
    /// True for [`Access::ReadOnly`].
    pub const fn is_read_only(self) -> bool {
        matches!(self, Self::ReadOnly)
    }
}

/// The granter's memory as keel sees it: translating a granted guest frame and keeping the
/// host frame alive while the grant is pinned.
///
/// Calls are made with the granter's table borrowed, as Xen looks frames up with the granter's
/// grant lock held (`get_paged_frame` inside `map_grant_ref`/`acquire_grant_for_copy`).
pub trait GranterMemory {
    /// Translates `gfn` through the granter's p2m and takes a reference on the host frame so it
    /// stays allocated until [`GranterMemory::put_frame`], whatever the granter does to its p2m
    /// meanwhile.
    ///
    /// Errors are the operation's status, as Xen's `get_paged_frame`: `GNTST_bad_page` for a
    /// gfn that is not the granter's own RAM (unmapped, MMIO, foreign, a grant mapping),
    /// `GNTST_eagain` for a frame that is paged out or shared.
    fn get_frame(&mut self, gfn: Gfn, access: Access) -> Result<Pfn, GrantStatus>;

    /// Drops the reference [`GranterMemory::get_frame`] took on `mfn`.
    fn put_frame(&mut self, mfn: Pfn);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn statuses_are_xens() {
        for (i, status) in GrantStatus::ALL.into_iter().enumerate() {
            assert_eq!(status.raw(), -(i as i16) - 1);
            assert_eq!(GrantStatus::from_raw(status.raw()), Some(status));
        }
        assert_eq!(GrantStatus::from_raw(GNTST_OKAY), None);
        assert_eq!(GrantStatus::from_raw(-14), None);
        assert_eq!(GrantStatus::of(&Ok::<(), GrantStatus>(())), 0);
        assert_eq!(GrantStatus::of(&Err::<(), _>(GrantStatus::NoSpace)), -13);
        assert_eq!(GrantStatus::BadCopyArg.to_string(), "copy arguments cross page boundary");
    }

    #[test]
    fn access() {
        assert!(Access::ReadOnly.is_read_only());
        assert!(!Access::Writable.is_read_only());
    }
}
