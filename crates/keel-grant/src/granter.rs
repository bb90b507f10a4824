//! The granter's half of a grant table: its shared frames, where the guest mapped them, and the
//! active entries that pin its grants.
//!
//! An active entry exists while a grant is pinned by a mapping or an in-flight copy. It records
//! what Xen's `active_grant_entry` records for a version-1 grant: the grantee and the frame
//! captured at the first pin (later changes the guest makes to the entry's `domid` or `frame`
//! have no effect until the last pin goes) and the pin counts. The rules for taking and dropping
//! pins, and for the entry's `GTF_reading`/`GTF_writing` bits, are Xen 4.17's
//! `map_grant_ref`, `acquire_grant_for_copy`, `release_grant_for_copy` and
//! `reduce_status_for_pin`.

use alloc::vec::Vec;

use keel_mm::{Gfn, Pfn};
use xen_abi::grant_table::{GrantEntryV1, GRANT_ENTRIES_V1_PER_FRAME, GTF_READING, GTF_WRITING};
use xen_abi::{DomId, GrantRef};

use crate::frame::{EntryWords, FrameSource, SharedFrame};
use crate::{Access, GrantStatus, GranterMemory, INITIAL_GRANT_FRAMES, MAX_PINS};

/// Why a grant is pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinKind {
    /// A host mapping (`GNTTABOP_map_grant_ref`).
    Map(Access),
    /// An in-flight `GNTTABOP_copy`.
    Copy(Access),
}

impl PinKind {
    fn access(self) -> Access {
        match self {
            Self::Map(a) | Self::Copy(a) => a,
        }
    }
}

/// One pinned grant, as the granter's active table records it (a snapshot when returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveGrant {
    /// The domain the grant was pinned for (the entry's `domid` at the first pin).
    pub grantee: DomId,
    /// The granter's frame (the entry's `frame` at the first pin).
    pub gfn: Gfn,
    /// The host frame `gfn` translated to at the first pin; keel holds a reference on it.
    pub mfn: Pfn,
    /// Read-only host mappings.
    pub maps_ro: u8,
    /// Writable host mappings.
    pub maps_rw: u8,
    /// In-flight copies reading the frame.
    pub copies_ro: u8,
    /// In-flight copies writing the frame.
    pub copies_rw: u8,
}

impl ActiveGrant {
    fn new(grantee: DomId, gfn: Gfn, mfn: Pfn) -> Self {
        Self { grantee, gfn, mfn, maps_ro: 0, maps_rw: 0, copies_ro: 0, copies_rw: 0 }
    }

    /// Read-only pins (Xen's `GNTPIN_hstr` count: mappings and copies together).
    pub fn readers(&self) -> u16 {
        u16::from(self.maps_ro) + u16::from(self.copies_ro)
    }

    /// Writable pins (Xen's `GNTPIN_hstw` count).
    pub fn writers(&self) -> u16 {
        u16::from(self.maps_rw) + u16::from(self.copies_rw)
    }

    /// True while any pin is held.
    pub fn is_pinned(&self) -> bool {
        self.readers() + self.writers() != 0
    }

    /// True if one more pin for `access` would overflow Xen's 8-bit count.
    fn is_full(&self, access: Access) -> bool {
        match access {
            Access::ReadOnly => self.readers() >= MAX_PINS,
            Access::Writable => self.writers() >= MAX_PINS,
        }
    }

    fn counter(&mut self, kind: PinKind) -> &mut u8 {
        match kind {
            PinKind::Map(Access::ReadOnly) => &mut self.maps_ro,
            PinKind::Map(Access::Writable) => &mut self.maps_rw,
            PinKind::Copy(Access::ReadOnly) => &mut self.copies_ro,
            PinKind::Copy(Access::Writable) => &mut self.copies_rw,
        }
    }

    /// Adds a pin; the caller has checked [`ActiveGrant::is_full`].
    fn add(&mut self, kind: PinKind) {
        let c = self.counter(kind);
        *c = c.saturating_add(1);
    }

    /// Drops a pin; false if there was none of that kind.
    fn remove(&mut self, kind: PinKind) -> bool {
        let c = self.counter(kind);
        match c.checked_sub(1) {
            Some(n) => {
                *c = n;
                true
            }
            None => false,
        }
    }
}

/// What a successful pin gives the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pinned {
    pub(crate) gfn: Gfn,
    pub(crate) mfn: Pfn,
}

/// The granter's state.
pub(crate) struct Granter<F> {
    domid: DomId,
    frames: Vec<F>,
    /// Where the guest has each frame mapped (Xen reads this back from the M2P).
    frame_gfns: Vec<Option<Gfn>>,
    /// One slot per entry of the frames in use; `Some` exactly while pinned.
    active: Vec<Option<ActiveGrant>>,
    max_frames: u32,
    pinned: usize,
    dying: bool,
}

/// The entry `gref` of `frames`, if it exists.
fn entry_words<F: SharedFrame>(frames: &[F], gref: GrantRef) -> Option<EntryWords<'_>> {
    let i = usize::try_from(gref.0).ok()?;
    let frame = frames.get(i / GRANT_ENTRIES_V1_PER_FRAME)?;
    EntryWords::new(frame.words(), i % GRANT_ENTRIES_V1_PER_FRAME)
}

/// Xen's `reduce_status_for_pin`: after a pin was dropped (or a pin attempt failed), clears
/// `GTF_reading` if nothing is pinned and, for a writable access, `GTF_writing` if no writable
/// pin is left.
fn reduce_status(entry: EntryWords<'_>, act: Option<&ActiveGrant>, access: Access) {
    let mut clear = 0;
    if act.is_none_or(|a| !a.is_pinned()) {
        clear |= GTF_READING;
    }
    if access == Access::Writable && act.is_none_or(|a| a.writers() == 0) {
        clear |= GTF_WRITING;
    }
    if clear != 0 {
        entry.clear_flags(clear);
    }
}

impl<F: SharedFrame> Granter<F> {
    /// An empty table (no frames yet) for `domid`.
    pub(crate) fn new(domid: DomId, max_frames: u32) -> Self {
        Self {
            domid,
            frames: Vec::new(),
            frame_gfns: Vec::new(),
            active: Vec::new(),
            max_frames,
            pinned: 0,
            dying: false,
        }
    }

    pub(crate) fn domid(&self) -> DomId {
        self.domid
    }

    pub(crate) fn nr_frames(&self) -> u32 {
        // At most `max_frames`, a u32.
        u32::try_from(self.frames.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn max_frames(&self) -> u32 {
        self.max_frames
    }

    pub(crate) fn nr_entries(&self) -> u32 {
        u32::try_from(self.active.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn frame(&self, index: u32) -> Option<&F> {
        self.frames.get(usize::try_from(index).ok()?)
    }

    pub(crate) fn frame_gfn(&self, index: u32) -> Option<Gfn> {
        *self.frame_gfns.get(usize::try_from(index).ok()?)?
    }

    /// Records where frame `index` is mapped; false if there is no such frame.
    pub(crate) fn set_frame_gfn(&mut self, index: u32, gfn: Option<Gfn>) -> bool {
        match usize::try_from(index).ok().and_then(|i| self.frame_gfns.get_mut(i)) {
            Some(slot) => {
                *slot = gfn;
                true
            }
            None => false,
        }
    }

    pub(crate) fn frame_at_gfn(&self, gfn: Gfn) -> Option<u32> {
        let i = self.frame_gfns.iter().position(|g| *g == Some(gfn))?;
        u32::try_from(i).ok()
    }

    /// Xen's `gnttab_grow_table`: grows to `want` frames (at least the initial number), all or
    /// nothing. False if `want` is over the maximum or memory ran out.
    pub(crate) fn grow<S: FrameSource<Frame = F>>(&mut self, want: u32, source: &mut S) -> bool {
        let want = want.max(INITIAL_GRANT_FRAMES);
        let have = self.frames.len();
        let Ok(want_len) = usize::try_from(want) else { return false };
        if want_len <= have {
            return true;
        }
        if want > self.max_frames {
            return false;
        }
        let extra = want_len - have;
        let Some(entries) = want_len.checked_mul(GRANT_ENTRIES_V1_PER_FRAME) else { return false };
        if self.frames.try_reserve(extra).is_err()
            || self.frame_gfns.try_reserve(extra).is_err()
            || self.active.try_reserve(entries.saturating_sub(self.active.len())).is_err()
        {
            return false;
        }
        while self.frames.len() < want_len {
            match source.alloc_frame() {
                Some(frame) => self.frames.push(frame),
                None => {
                    while self.frames.len() > have {
                        if let Some(frame) = self.frames.pop() {
                            source.free_frame(frame);
                        }
                    }
                    return false;
                }
            }
        }
        self.frame_gfns.resize(want_len, None);
        self.active.resize_with(entries, || None);
        true
    }

    /// Gives every frame back; the caller has checked nothing is pinned.
    pub(crate) fn free_frames<S: FrameSource<Frame = F>>(self, source: &mut S) {
        for frame in self.frames {
            source.free_frame(frame);
        }
    }

    pub(crate) fn entry(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        Some(entry_words(&self.frames, gref)?.load())
    }

    pub(crate) fn active(&self, gref: GrantRef) -> Option<ActiveGrant> {
        *self.active.get(usize::try_from(gref.0).ok()?)?
    }

    pub(crate) fn pinned_grants(&self) -> impl Iterator<Item = (GrantRef, ActiveGrant)> + '_ {
        self.active.iter().enumerate().filter_map(|(i, a)| Some((GrantRef(u32::try_from(i).ok()?), (*a)?)))
    }

    pub(crate) fn pinned_count(&self) -> usize {
        self.pinned
    }

    pub(crate) fn mark_dying(&mut self) {
        self.dying = true;
    }

    pub(crate) fn is_dying(&self) -> bool {
        self.dying
    }

    /// Pins `gref` for `grantee`: Xen's checks and status update from `map_grant_ref` (for
    /// [`PinKind::Map`]) or `acquire_grant_for_copy` (for [`PinKind::Copy`]), version 1.
    pub(crate) fn pin<M: GranterMemory + ?Sized>(
        &mut self,
        grantee: DomId,
        gref: GrantRef,
        kind: PinKind,
        mem: &mut M,
    ) -> Result<Pinned, GrantStatus> {
        let access = kind.access();
        let for_mapping = matches!(kind, PinKind::Map(_));
        let index = usize::try_from(gref.0).map_err(|_| GrantStatus::BadGntref)?;
        let entry = entry_words(&self.frames, gref).ok_or(GrantStatus::BadGntref)?;
        let slot = self.active.get_mut(index).ok_or(GrantStatus::BadGntref)?;

        let Some(act) = slot else {
            // First pin: check the entry and capture its grantee and frame.
            entry.set_status(false, access, for_mapping, grantee)?;
            let gfn = entry.frame();
            let mfn = match mem.get_frame(gfn, access) {
                Ok(mfn) => mfn,
                Err(status) => {
                    reduce_status(entry, None, access);
                    return Err(status);
                }
            };
            let mut act = ActiveGrant::new(grantee, gfn, mfn);
            act.add(kind);
            *slot = Some(act);
            self.pinned += 1;
            return Ok(Pinned { gfn, mfn });
        };

        // Already pinned: only for the same grantee, and without overflowing a count.
        if act.grantee != grantee || act.is_full(access) {
            return Err(GrantStatus::GeneralError);
        }
        if access == Access::Writable && act.writers() == 0 {
            // First writer: GTF_writing must be set, which needs GTF_readonly clear now.
            entry.set_status(true, access, for_mapping, grantee)?;
            if matches!(kind, PinKind::Copy(_)) {
                // acquire_grant_for_copy looks the entry's frame up again here and insists it is
                // the frame pinned (map_grant_ref does not).
                let looked_up = mem.get_frame(entry.frame(), access).and_then(|mfn| {
                    mem.put_frame(mfn);
                    if mfn == act.mfn {
                        Ok(())
                    } else {
                        Err(GrantStatus::GeneralError)
                    }
                });
                if let Err(status) = looked_up {
                    reduce_status(entry, Some(act), access);
                    return Err(status);
                }
            }
        } else if matches!(kind, PinKind::Copy(_)) && self.dying {
            // acquire_grant_for_copy, pinned path: "td != rd || rd->is_dying" gives
            // GNTST_bad_domain. (Its reduce_status_for_pin changes nothing here.)
            return Err(GrantStatus::BadDomain);
        }
        act.add(kind);
        Ok(Pinned { gfn: act.gfn, mfn: act.mfn })
    }

    /// Drops a pin of `kind` on `gref`, clearing the entry's status bits as Xen does and
    /// releasing the frame with the last pin. False (and nothing changed) if there is no such
    /// pin.
    pub(crate) fn unpin<M: GranterMemory + ?Sized>(&mut self, gref: GrantRef, kind: PinKind, mem: &mut M) -> bool {
        let Ok(index) = usize::try_from(gref.0) else { return false };
        let Some(entry) = entry_words(&self.frames, gref) else { return false };
        let Some(slot) = self.active.get_mut(index) else { return false };
        let Some(act) = slot.as_mut() else { return false };
        if !act.remove(kind) {
            return false;
        }
        if act.is_pinned() {
            reduce_status(entry, Some(act), kind.access());
        } else {
            reduce_status(entry, None, kind.access());
            mem.put_frame(act.mfn);
            *slot = None;
            self.pinned -= 1;
        }
        true
    }

    /// Xen's `swap_grant_ref`.
    pub(crate) fn swap(&mut self, a: GrantRef, b: GrantRef) -> Result<(), GrantStatus> {
        let ea = entry_words(&self.frames, a).ok_or(GrantStatus::BadGntref)?;
        let eb = entry_words(&self.frames, b).ok_or(GrantStatus::BadGntref)?;
        if a == b {
            return Ok(());
        }
        if self.active(a).is_some() || self.active(b).is_some() {
            return Err(GrantStatus::Eagain);
        }
        let (va, vb) = (ea.load(), eb.load());
        ea.store(vb);
        eb.store(va);
        Ok(())
    }

    /// Checks the pinned count and that every active entry holds a pin (for tests).
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.active.len() != self.frames.len() * GRANT_ENTRIES_V1_PER_FRAME
            || self.frame_gfns.len() != self.frames.len()
        {
            return Err("active or gfn table does not match the frames");
        }
        if self.active.iter().flatten().any(|a| !a.is_pinned()) {
            return Err("an active entry without pins");
        }
        if self.active.iter().flatten().count() != self.pinned {
            return Err("pinned count is off");
        }
        if self.frames.len() > self.max_frames as usize {
            return Err("over the maximum");
        }
        Ok(())
    }
}
