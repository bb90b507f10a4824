//! [`GrantTable`]: one domain's grant table in both roles, and the grant-table operations keel
//! runs on it.
//!
//! Only [`GrantTable::map`] needs two tables at once: the mapper's (`self`) and the granter's,
//! given as a [`Peer`] so that "my own grant" ([`Peer::Same`], which Xen allows when the grant
//! names the domain itself) and "another domain's" cannot be confused. Everything else touches
//! one table: an unmap frees the handle on the mapper's table and hands a [`PendingUnmap`] to
//! the granter's; a copy pins and releases on the granter's table alone.

use keel_mm::{Gfn, Gpa, Pfn};
use xen_abi::errno::Errno;
use xen_abi::grant_table::{
    GnttabMapGrantRef, GrantEntryV1, GNTMAP_APPLICATION_MAP, GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP,
    GNTMAP_READONLY, GRANT_ENTRIES_V1_PER_FRAME,
};
use xen_abi::{DomId, GrantHandle, GrantRef, XenPfn};

use crate::copy::CopyGrant;
use crate::frame::{FrameSource, SharedFrame};
use crate::granter::{Granter, PinKind};
use crate::maptrack::Maptrack;
use crate::{
    Access, GrantStatus, GranterMemory, DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES, INITIAL_GRANT_FRAMES,
    INVALID_GFN,
};

pub use crate::granter::ActiveGrant;
pub use crate::maptrack::Mapping;

/// Per-domain limits, fixed when the table is created (Xen's `grant_table_init` arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantConfig {
    /// Most grant frames the domain may have (`max_grant_frames`, at least 1).
    pub max_grant_frames: u32,
    /// Most maptrack frames, of [`crate::MAPTRACK_PER_FRAME`] handles each
    /// (`max_maptrack_frames`; 0 means the domain cannot map grants).
    pub max_maptrack_frames: u32,
    /// Highest grant-table version the domain may select: must be 1, the only one this crate
    /// implements.
    pub max_version: u32,
}

impl Default for GrantConfig {
    /// Xen's defaults: 64 grant frames, 1024 maptrack frames; version 1.
    fn default() -> Self {
        Self {
            max_grant_frames: DEFAULT_MAX_GRANT_FRAMES,
            max_maptrack_frames: DEFAULT_MAX_MAPTRACK_FRAMES,
            max_version: 1,
        }
    }
}

/// The granter of a mapping, seen from the mapper's table.
pub enum Peer<'a, F> {
    /// The mapper maps its own grant.
    Same,
    /// Another domain's table (keel holds its lock as well as the mapper's).
    Other(&'a mut GrantTable<F>),
}

/// A `GNTTABOP_map_grant_ref` request, once keel has resolved `dom` to a [`Peer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// The grant to map.
    pub gref: GrantRef,
    /// `GNTMAP_*`.
    pub flags: u32,
    /// Where to map it: a guest-physical address of the mapper (only its frame counts).
    pub host_addr: Gpa,
}

impl From<&GnttabMapGrantRef> for MapRequest {
    fn from(op: &GnttabMapGrantRef) -> Self {
        Self { gref: op.ref_, flags: op.flags, host_addr: Gpa::new(op.host_addr) }
    }
}

/// A mapping [`GrantTable::map`] recorded; keel now maps `mfn` at `host_gfn` in the mapper's
/// p2m (read-only or writable per `access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The handle for the guest (`op.handle`).
    pub handle: GrantHandle,
    /// Where to map, in the mapper's guest frames.
    pub host_gfn: Gfn,
    /// The granter's frame, as captured when the grant was first pinned.
    pub gfn: Gfn,
    /// The host frame [`GranterMemory::get_frame`] gave for `gfn` then. Xen also returns
    /// `mfn << 12` to the guest in `op.dev_bus_addr`, even for a translated mapper.
    pub mfn: Pfn,
    /// Read-only or writable.
    pub access: Access,
}

/// An unmapping whose maptrack entry is gone but whose pin is still held.
///
/// keel removes `host_gfn` from the mapper's p2m (it maps `mfn`), flushes the mapper's TLBs,
/// and then passes this to [`GrantTable::finish_unmap`] on the granter's table (the mapper's
/// own for a self-grant). Until then the granter sees the grant as in use.
///
/// Only this crate makes them, so a pending unmap always stands for a pin that exists.
#[must_use = "the grant stays pinned until finish_unmap"]
#[derive(Debug, PartialEq, Eq)]
pub struct PendingUnmap {
    handle: GrantHandle,
    mapping: Mapping,
}

impl PendingUnmap {
    fn new(handle: GrantHandle, mapping: Mapping) -> Self {
        Self { handle, mapping }
    }

    /// The handle that was freed.
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }

    /// The domain whose table finishes the unmap.
    pub fn granter(&self) -> DomId {
        self.mapping.granter
    }

    /// The grant that was mapped.
    pub fn gref(&self) -> GrantRef {
        self.mapping.gref
    }

    /// How it was mapped.
    pub fn access(&self) -> Access {
        self.mapping.access
    }

    /// The mapper's guest frame to unmap.
    pub fn host_gfn(&self) -> Gfn {
        self.mapping.host_gfn
    }

    /// The host frame mapped there.
    pub fn mfn(&self) -> Pfn {
        self.mapping.mfn
    }

    /// Everything the maptrack recorded for the mapping.
    pub fn mapping(&self) -> Mapping {
        self.mapping
    }
}

/// A grant frame `XENMEM_add_to_physmap` is to map: keel removes it from `current_gfn` (if
/// any), maps it at the requested gfn and calls [`GrantTable::set_frame_gfn`].
#[derive(Debug)]
pub struct PhysmapFrame<'a, F> {
    /// The frame's index in the table.
    pub index: u32,
    /// The frame.
    pub frame: &'a F,
    /// Where the guest has the frame mapped now.
    pub current_gfn: Option<Gfn>,
}

/// `GNTTABOP_query_size`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuerySize {
    /// Frames in use.
    pub nr_frames: u32,
    /// The domain's maximum.
    pub max_nr_frames: u32,
}

/// `GNTTABOP_set_version`'s answer: Xen writes the version in force back even on failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetVersion {
    /// The hypercall's return value.
    pub result: Result<(), Errno>,
    /// The version to write back into `op.version`.
    pub version: u32,
}

/// The checks `map_grant_ref` makes on a request's flags before it looks the granter up, in
/// Xen's order: neither `GNTMAP_host_map` nor `GNTMAP_device_map` is `GNTST_bad_gntref` (sic);
/// then, for a translated mapper, `GNTMAP_device_map`, `GNTMAP_application_map` or
/// `GNTMAP_contains_pte` is `GNTST_general_error`.
///
/// keel calls this before resolving `op.dom` (`GNTST_bad_domain` comes after it);
/// [`GrantTable::map`] repeats it.
pub fn check_map_flags(flags: u32) -> Result<(), GrantStatus> {
    if flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
        return Err(GrantStatus::BadGntref);
    }
    if flags & (GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE) != 0 {
        return Err(GrantStatus::GeneralError);
    }
    Ok(())
}

/// One domain's grant table: its grants (granter side) and its mappings of grants (mapper side).
pub struct GrantTable<F> {
    granter: Granter<F>,
    maptrack: Maptrack,
}

impl<F: SharedFrame> GrantTable<F> {
    /// A table for `domid` with one frame, as Xen's `grant_table_init` makes it.
    ///
    /// `EINVAL` for a `max_version` other than 1 (Xen: 0 is invalid and keel supports no
    /// higher), a `max_grant_frames` of 0, or limits whose entries or handles would not fit in
    /// 32 bits; `ENOMEM` if the first frame cannot be allocated.
    pub fn new<S: FrameSource<Frame = F>>(domid: DomId, config: GrantConfig, source: &mut S) -> Result<Self, Errno> {
        if config.max_version != 1 || config.max_grant_frames < INITIAL_GRANT_FRAMES {
            return Err(Errno::EINVAL);
        }
        let entries = u64::from(config.max_grant_frames) * GRANT_ENTRIES_V1_PER_FRAME as u64;
        if entries > u64::from(u32::MAX) + 1 {
            return Err(Errno::EINVAL);
        }
        let maptrack = Maptrack::new(config.max_maptrack_frames).ok_or(Errno::EINVAL)?;
        let mut granter = Granter::new(domid, config.max_grant_frames);
        if !granter.grow(INITIAL_GRANT_FRAMES, source) {
            return Err(Errno::ENOMEM);
        }
        Ok(Self { granter, maptrack })
    }

    /// The domain this table belongs to.
    pub fn domid(&self) -> DomId {
        self.granter.domid()
    }

    // ---- Frames -------------------------------------------------------------------------------

    /// Frames in use.
    pub fn nr_frames(&self) -> u32 {
        self.granter.nr_frames()
    }

    /// Grant entries in use (512 per frame); references at or above this are invalid.
    pub fn nr_entries(&self) -> u32 {
        self.granter.nr_entries()
    }

    /// Frame `index`, if the table has grown that far.
    pub fn frame(&self, index: u32) -> Option<&F> {
        self.granter.frame(index)
    }

    /// Where the guest has frame `index` mapped, as last recorded with
    /// [`GrantTable::set_frame_gfn`].
    pub fn frame_gfn(&self, index: u32) -> Option<Gfn> {
        self.granter.frame_gfn(index)
    }

    /// Records that frame `index` is now mapped at `gfn` (`None`: no longer mapped). keel calls
    /// this after every p2m change that maps or unmaps a grant frame. False if there is no such
    /// frame.
    pub fn set_frame_gfn(&mut self, index: u32, gfn: Option<Gfn>) -> bool {
        self.granter.set_frame_gfn(index, gfn)
    }

    /// The frame mapped at `gfn`, if any (so keel can notice a p2m change replacing it).
    pub fn frame_at_gfn(&self, gfn: Gfn) -> Option<u32> {
        self.granter.frame_at_gfn(gfn)
    }

    /// `GNTTABOP_query_size` on this domain. (keel resolves `op.dom` with `DOMID_SELF`
    /// allowed, `GNTST_bad_domain`, and checks the caller may query it,
    /// `GNTST_permission_denied`.)
    pub fn query_size(&self) -> QuerySize {
        QuerySize { nr_frames: self.granter.nr_frames(), max_nr_frames: self.granter.max_frames() }
    }

    /// `GNTTABOP_setup_table` on this domain: grows the table to `nr_frames` if it is smaller.
    /// Over the domain's maximum, or out of memory, is `GNTST_general_error`. On success keel
    /// writes [`GrantTable::frame_list`]`(nr_frames)` to `op.frame_list`.
    ///
    /// (keel first answers `count != 1` with `-EINVAL`, an unwritable `frame_list` with
    /// `-EFAULT`, then resolves `op.dom` like [`GrantTable::query_size`].)
    pub fn setup_table<S: FrameSource<Frame = F>>(
        &mut self,
        nr_frames: u32,
        source: &mut S,
    ) -> Result<(), GrantStatus> {
        if nr_frames > self.granter.max_frames() {
            return Err(GrantStatus::GeneralError);
        }
        if nr_frames > self.granter.nr_frames() && !self.granter.grow(nr_frames, source) {
            return Err(GrantStatus::GeneralError);
        }
        Ok(())
    }

    /// The frame numbers `GNTTABOP_setup_table` reports for the first `nr_frames` frames: for
    /// a translated guest Xen gives the gfn each frame is mapped at, or [`INVALID_GFN`].
    pub fn frame_list(&self, nr_frames: u32) -> impl Iterator<Item = XenPfn> + '_ {
        (0..nr_frames.min(self.nr_frames()))
            .map(|i| XenPfn(self.granter.frame_gfn(i).map_or(INVALID_GFN, |g| g.as_u64())))
    }

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: frame `idx` must exist
    /// afterwards, so the table grows to `idx + 1` frames if it is smaller.
    ///
    /// As Xen's `gnttab_map_frame_begin`/`gnttab_get_shared_frame_mfn`, the index is taken as a
    /// 32-bit number (the upper half of `idx` is ignored), and an index at or over the maximum,
    /// or a growth that fails, is `EINVAL`. A version-2 status frame
    /// (`idx | XENMAPIDX_grant_table_status`) is not special for a version-1 table: bit 31 makes
    /// the index too large, so `EINVAL` too.
    pub fn add_to_physmap<S: FrameSource<Frame = F>>(
        &mut self,
        idx: u64,
        source: &mut S,
    ) -> Result<PhysmapFrame<'_, F>, Errno> {
        let index = idx as u32; // Xen's `unsigned int idx` parameter.
        if index >= self.granter.nr_frames() {
            let want = index.checked_add(1).ok_or(Errno::EINVAL)?;
            if want <= self.granter.max_frames() {
                // Xen ignores the failure here and lets the check below report it.
                self.granter.grow(want, source);
            }
        }
        let frame = self.granter.frame(index).ok_or(Errno::EINVAL)?;
        Ok(PhysmapFrame { index, frame, current_gfn: self.granter.frame_gfn(index) })
    }

    // ---- Version ------------------------------------------------------------------------------

    /// `GNTTABOP_get_version`: always 1. (keel resolves `op.dom`, `DOMID_SELF` allowed:
    /// `-ESRCH` if there is no such domain, `-EPERM` if the caller may not query it.)
    pub fn version(&self) -> u32 {
        1
    }

    /// `GNTTABOP_set_version` by the domain itself, as Xen answers a domain limited to version 1:
    /// 1 succeeds (even with grants in use: Xen returns before its busy check when the version
    /// does not change), 2 is `ENOSYS` ("behave as before set_version was introduced"), anything
    /// else `EINVAL`. The version written back is 1 in every case.
    pub fn set_version(&mut self, version: u32) -> SetVersion {
        let result = match version {
            1 => Ok(()),
            2 => Err(Errno::ENOSYS),
            _ => Err(Errno::EINVAL),
        };
        SetVersion { result, version: self.version() }
    }

    // ---- Granter side -------------------------------------------------------------------------

    /// A snapshot of entry `gref` as the guest has it now.
    pub fn entry(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        self.granter.entry(gref)
    }

    /// The active entry of `gref`, while it is pinned.
    pub fn active(&self, gref: GrantRef) -> Option<ActiveGrant> {
        self.granter.active(gref)
    }

    /// Every pinned grant of this domain.
    pub fn pinned_grants(&self) -> impl Iterator<Item = (GrantRef, ActiveGrant)> + '_ {
        self.granter.pinned_grants()
    }

    /// How many of this domain's grants are pinned. While this is non-zero after the domain
    /// died, other domains still map or copy its frames: keel keeps the table (and the frames
    /// [`GrantTable::pinned_grants`] name) until it drops to zero, as Xen keeps a zombie.
    pub fn pinned_count(&self) -> usize {
        self.granter.pinned_count()
    }

    /// Marks the domain dying. New pins still follow Xen's rules (keel's
    /// [`GranterMemory::get_frame`] should refuse the dying domain's frames, as Xen's p2m
    /// lookup does once its memory is relinquished); a copy from or to an already-pinned grant
    /// is `GNTST_bad_domain`, as in Xen's `acquire_grant_for_copy`.
    pub fn mark_dying(&mut self) {
        self.granter.mark_dying();
    }

    /// True once [`GrantTable::mark_dying`] was called.
    pub fn is_dying(&self) -> bool {
        self.granter.is_dying()
    }

    /// `GNTTABOP_swap_grant_ref` on the caller's own table: a reference beyond the table is
    /// `GNTST_bad_gntref`; swapping a reference with itself does nothing; a pinned entry is
    /// `GNTST_eagain`.
    pub fn swap_grant_ref(&mut self, a: GrantRef, b: GrantRef) -> Result<(), GrantStatus> {
        self.granter.swap(a, b)
    }

    // ---- Mapper side --------------------------------------------------------------------------

    /// `GNTTABOP_map_grant_ref` by this domain (a translated guest) of `granter`'s grant.
    ///
    /// keel resolves `op.dom` by number before calling (after [`check_map_flags`]): Xen looks it
    /// up with `rcu_lock_domain_by_id`, which does not know `DOMID_SELF`, so that and any
    /// domain that does not exist are `GNTST_bad_domain`. A domain mapping its own grant names
    /// its own domid and passes [`Peer::Same`].
    ///
    /// Checks in Xen's order: [`check_map_flags`]; a free handle (`GNTST_no_space`); the
    /// reference within the granter's table (`GNTST_bad_gntref`); if already pinned, pinned
    /// for this domain and not at [`crate::MAX_PINS`] (`GNTST_general_error`); on the first pin
    /// (or first writable pin), the entry is `GTF_permit_access` for this domain, not
    /// `GTF_sub_page`, and not `GTF_readonly` for a writable mapping (`GNTST_general_error`);
    /// on the first pin, the frame is translated by `mem` (its status). Last, the flags must be
    /// exactly `GNTMAP_host_map`, optionally with `GNTMAP_readonly`: Xen's
    /// `create_grant_p2m_mapping` refuses anything else (guest-available bits included) with
    /// `GNTST_general_error` after pinning, and the pin is undone.
    ///
    /// `mem` is the granter's memory. On success the granter's entry has `GTF_reading` (and
    /// `GTF_writing` if writable) set, and keel maps [`Mapped::mfn`] at [`Mapped::host_gfn`];
    /// if that fails, [`GrantTable::undo_map`] (Xen: `GNTST_general_error`).
    pub fn map<M: GranterMemory + ?Sized>(
        &mut self,
        granter: Peer<'_, F>,
        mem: &mut M,
        req: MapRequest,
    ) -> Result<Mapped, GrantStatus> {
        check_map_flags(req.flags)?;
        let access = if req.flags & GNTMAP_READONLY != 0 { Access::ReadOnly } else { Access::Writable };
        let mapper = self.granter.domid();
        let host_gfn = req.host_addr.gfn();
        let granter = match granter {
            Peer::Same => &mut self.granter,
            Peer::Other(table) => &mut table.granter,
        };
        // Xen takes the handle before it looks at the grant, so a full maptrack is reported
        // first; the entry is only written once everything succeeded.
        if !self.maptrack.make_room() {
            return Err(GrantStatus::NoSpace);
        }
        let kind = PinKind::Map(access);
        let pinned = granter.pin(mapper, req.gref, kind, mem)?;
        if req.flags & !GNTMAP_READONLY != GNTMAP_HOST_MAP {
            // create_grant_p2m_mapping, after the pin: undone as Xen's undo_out does.
            granter.unpin(req.gref, kind, mem);
            return Err(GrantStatus::GeneralError);
        }
        let mapping = Mapping { granter: granter.domid(), gref: req.gref, access, host_gfn, mfn: pinned.mfn };
        let Some(handle) = self.maptrack.insert(mapping) else {
            // Not reached: make_room left a free handle and nothing took it.
            granter.unpin(req.gref, kind, mem);
            return Err(GrantStatus::NoSpace);
        };
        Ok(Mapped { handle, host_gfn, gfn: pinned.gfn, mfn: pinned.mfn, access })
    }

    /// Undoes the [`GrantTable::map`] that returned `handle` when keel could not install the
    /// mapping: frees the handle so that the next map gets it again, and returns the pin to
    /// drop with [`GrantTable::finish_unmap`] (at once: nothing was mapped). Afterwards every
    /// table is as before the map. `GNTST_bad_handle` if `handle` is not live.
    pub fn undo_map(&mut self, handle: GrantHandle) -> Result<PendingUnmap, GrantStatus> {
        let m = self.maptrack.unwind(handle).ok_or(GrantStatus::BadHandle)?;
        Ok(PendingUnmap::new(handle, m))
    }

    /// `GNTTABOP_unmap_grant_ref` by this domain, first step.
    ///
    /// A handle that is not live (never given, or already unmapped) is `GNTST_bad_handle`. A
    /// `host_addr` of 0 does nothing and succeeds (`Ok(None)`): Xen only removes the host
    /// mapping when an address is given, so the handle stays live. Otherwise `host_addr` must
    /// be in the frame the grant was mapped at, else `GNTST_general_error` (Xen finds no grant
    /// mapping of the frame there in the p2m).
    ///
    /// On success the handle is free and the [`PendingUnmap`] says what keel removes from the
    /// mapper's p2m before it calls [`GrantTable::finish_unmap`] on the granter.
    ///
    /// Divergence: Xen checks the p2m at `host_addr` rather than a recorded address, so it
    /// also accepts the address of *another* mapping of the same frame (leaving this one's p2m
    /// entry in place, untracked). keel insists on the handle's own frame.
    pub fn unmap(&mut self, handle: GrantHandle, host_addr: Gpa) -> Result<Option<PendingUnmap>, GrantStatus> {
        let m = self.maptrack.get(handle).ok_or(GrantStatus::BadHandle)?;
        if host_addr.as_u64() == 0 {
            return Ok(None);
        }
        if host_addr.gfn() != m.host_gfn {
            return Err(GrantStatus::GeneralError);
        }
        let _ = self.maptrack.remove(handle);
        Ok(Some(PendingUnmap::new(handle, m)))
    }

    /// The mapping `handle` names, if live.
    pub fn mapping(&self, handle: GrantHandle) -> Option<Mapping> {
        self.maptrack.get(handle)
    }

    /// Every live mapping of this domain.
    pub fn mappings(&self) -> impl Iterator<Item = (GrantHandle, Mapping)> + '_ {
        self.maptrack.iter()
    }

    /// How many mappings this domain holds.
    pub fn mapping_count(&self) -> usize {
        self.maptrack.live()
    }

    /// Handles below this have been handed out at some point (Xen's `maptrack_limit`).
    pub fn maptrack_limit(&self) -> u32 {
        self.maptrack.limit()
    }

    /// Teardown of a dying mapper, one mapping at a time (Xen's `gnttab_release_mappings`):
    /// frees a live handle and returns it as a [`PendingUnmap`], `None` when none is left.
    /// keel removes the mapping (or destroys the whole p2m) and finishes each on its granter.
    pub fn release_next_mapping(&mut self) -> Option<PendingUnmap> {
        let handle = self.maptrack.last_live()?;
        let m = self.maptrack.remove(handle)?;
        Some(PendingUnmap::new(handle, m))
    }

    /// Second step of an unmap, on the granter's table: drops the mapping's pin; with the last
    /// writable pin `GTF_writing` clears, with the last pin `GTF_reading` clears and `mem` gets
    /// the frame back. Gives the unmap back if it is not for this table (keel's mistake).
    pub fn finish_unmap<M: GranterMemory + ?Sized>(
        &mut self,
        unmap: PendingUnmap,
        mem: &mut M,
    ) -> Result<(), PendingUnmap> {
        if unmap.granter() != self.domid() || !self.granter.unpin(unmap.gref(), PinKind::Map(unmap.access()), mem) {
            return Err(unmap);
        }
        Ok(())
    }

    /// Teardown: gives the frames back to `source`. Refused (the table is returned) while a
    /// grant is pinned or the domain still maps a grant.
    #[allow(clippy::result_large_err)] // The table itself, handed back as `Arc::try_unwrap` does.
    pub fn destroy<S: FrameSource<Frame = F>>(self, source: &mut S) -> Result<(), Self> {
        if self.pinned_count() != 0 || self.mapping_count() != 0 {
            return Err(self);
        }
        self.granter.free_frames(source);
        Ok(())
    }

    // ---- Copy ---------------------------------------------------------------------------------

    /// Pins this domain's grant `gref` for a `GNTTABOP_copy` by `caller` (the source side with
    /// [`Access::ReadOnly`], the destination with [`Access::Writable`]). See [`crate::copy`]
    /// for the whole operation.
    ///
    /// Xen's `acquire_grant_for_copy`, version 1: `GNTST_bad_gntref` beyond the table;
    /// `GNTST_general_error` if pinned for another domain or at [`crate::MAX_PINS`], or (first
    /// pin or first writer) the entry is not `GTF_permit_access` for `caller` or is
    /// `GTF_readonly` for a write; the translation's status from `mem`; for a first writer on
    /// a grant already pinned, `GNTST_general_error` if the entry's frame no longer translates
    /// to the pinned frame; `GNTST_bad_domain` for other uses of a pinned grant once the
    /// granter is dying. Unlike a mapping, `GTF_sub_page` is not checked.
    pub fn acquire_copy<M: GranterMemory + ?Sized>(
        &mut self,
        caller: DomId,
        gref: GrantRef,
        access: Access,
        mem: &mut M,
    ) -> Result<CopyGrant, GrantStatus> {
        let pinned = self.granter.pin(caller, gref, PinKind::Copy(access), mem)?;
        Ok(CopyGrant::new(self.domid(), gref, access, pinned.gfn, pinned.mfn))
    }

    /// Drops the pin [`GrantTable::acquire_copy`] took (Xen's `release_grant_for_copy`). Gives
    /// the grant back if it is not one of this table's pins.
    pub fn release_copy<M: GranterMemory + ?Sized>(&mut self, grant: CopyGrant, mem: &mut M) -> Result<(), CopyGrant> {
        if grant.granter() != self.domid() || !self.granter.unpin(grant.gref(), PinKind::Copy(grant.access()), mem) {
            return Err(grant);
        }
        Ok(())
    }

    /// Checks the table's internal bookkeeping (for tests).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        self.maptrack.check()?;
        self.granter.check()
    }
}

#[cfg(test)]
mod tests;
