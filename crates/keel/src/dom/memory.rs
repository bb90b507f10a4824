//! A domain's memory: its p2m (nested page tables), the frames it owns, its accounting, and
//! keel's access to guest-physical memory.
//!
//! Every RAM frame a domain has is allocated to it (`Owner::Domain`) and mapped exactly once
//! in its p2m; destroying the domain walks the p2m and returns every such frame, so the free
//! count after all domains are gone equals the count before the first was built. Frames keel
//! maps into a domain but keeps owning (shared_info, grant table frames) carry their own p2m
//! type and are freed by their owner.
//!
//! keel keeps some guest frames mapped for itself (a registered vcpu_info, FIFO event pages):
//! a [`PinnedPage`] holds a reference that keeps the frame allocated to the domain even if the
//! guest gives the page back meanwhile (it is then freed with the last reference, as Xen's page
//! references do), so keel never writes to a frame that went to someone else.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use keel_mm::{Gfn, Gpa, Owner, Pfn, PAGE_SIZE};
use keel_p2m::{Access, Mapping, P2m, P2mError, P2mType, TableMemory};

use crate::arch::x86::paging;
use crate::mm;
use crate::sync::IrqMutex;

/// A domain's memory behind its lock, shared with the pins on it. It outlives the memory
/// itself: frames still pinned when the domain is destroyed stay allocated, counted here, and
/// are freed by the last pin.
pub struct MemCell {
    inner: IrqMutex<MemInner>,
}

struct MemInner {
    domid: u16,
    mem: Option<DomainMemory>,
    /// Pins outliving the memory (mfn -> count).
    orphans: BTreeMap<u64, u32>,
}

impl MemCell {
    /// A cell holding `mem`.
    pub fn new(mem: DomainMemory) -> Self {
        MemCell { inner: IrqMutex::new(MemInner { domid: mem.domid, mem: Some(mem), orphans: BTreeMap::new() }) }
    }

    /// Run `f` on the memory; `None` once destroyed.
    pub fn with<R>(&self, f: impl FnOnce(&mut DomainMemory) -> R) -> Option<R> {
        self.inner.lock().mem.as_mut().map(f)
    }

    /// Take a reference on the RAM frame at `gfn` (writable RAM if `write`), as for a grant
    /// pinned by another domain; returns the host frame. Undo with [`MemCell::unpin_raw`].
    pub fn pin_raw(&self, gfn: Gfn, write: bool) -> Result<Pfn, MemError> {
        let mut inner = self.inner.lock();
        let mem = inner.mem.as_mut().ok_or(MemError::NotMapped)?;
        let m = mem.p2m.lookup(&KeelTables, gfn).ok_or(MemError::NotMapped)?;
        if m.kind != P2mType::Ram || (write && !m.access.writable()) {
            return Err(MemError::NotMapped);
        }
        *mem.pins.entry(m.mfn.as_u64()).or_insert(0) += 1;
        Ok(m.mfn)
    }

    /// Drop a reference taken by [`MemCell::pin_raw`] (or held by a [`PinnedPage`]); a frame
    /// the guest gave back, or whose domain is gone, is freed with its last reference.
    pub fn unpin_raw(&self, mfn: Pfn) {
        let mut inner = self.inner.lock();
        let domid = inner.domid;
        if let Some(mem) = inner.mem.as_mut() {
            mem.unpin(mfn);
            return;
        }
        let key = mfn.as_u64();
        match inner.orphans.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                inner.orphans.remove(&key);
                mm::free_frames_of(mfn, 0, Owner::Domain(domid));
            }
            None => log::error!("d{domid}: pinned frame {mfn} unknown after destruction"),
        }
    }

    /// Destroy the memory (see [`DomainMemory::destroy`]); returns the RAM frames it held.
    pub fn destroy(&self) -> u64 {
        let mut inner = self.inner.lock();
        let Some(mem) = inner.mem.take() else { return 0 };
        let pages = mem.tot_pages;
        inner.orphans = mem.destroy();
        pages
    }
}

/// A 4 KiB frame keel reads and writes concurrently with a guest (and other CPUs): every access
/// is atomic or a volatile copy, since the guest may change any byte at any time.
/// The lifetime is that of whatever keeps the frame allocated (a [`KeelFrame`], a
/// [`PinnedPage`]).
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    va: u64,
    _frame: core::marker::PhantomData<&'a ()>,
}

impl<'a> FrameView<'a> {
    /// The frame `mfn`, through the direct map.
    ///
    /// # Safety
    /// `mfn` must be RAM that stays allocated (to keel or to a domain) for as long as the view
    /// (its lifetime) lasts.
    unsafe fn new(mfn: Pfn) -> Self {
        FrameView { va: paging::phys_to_virt(mfn.addr().as_u64()), _frame: core::marker::PhantomData }
    }

    fn at<T>(&self, offset: usize) -> *const T {
        let size = core::mem::size_of::<T>();
        assert!(offset.is_multiple_of(size) && offset + size <= PAGE_SIZE as usize, "misaligned frame access");
        (self.va + offset as u64) as *const T
    }

    /// The byte at `offset`.
    pub fn u8(&self, offset: usize) -> &'a AtomicU8 {
        // SAFETY: in bounds of a frame that outlives `self` (constructor's contract); atomics
        // make concurrent guest access well-defined.
        unsafe { &*self.at(offset) }
    }

    /// The naturally aligned 32-bit word at `offset` (panics if misaligned: a keel bug).
    pub fn u32(&self, offset: usize) -> &'a AtomicU32 {
        // SAFETY: as in `u8`; `at` checked alignment and bounds.
        unsafe { &*self.at(offset) }
    }

    /// The naturally aligned 64-bit word at `offset`.
    pub fn u64(&self, offset: usize) -> &'a AtomicU64 {
        // SAFETY: as in `u32`.
        unsafe { &*self.at(offset) }
    }

    /// Copy `bytes` in at `offset` (bounded by the page).
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= PAGE_SIZE as usize, "frame write out of bounds");
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: in bounds (checked above) of a live frame; volatile because the guest
            // reads it concurrently.
            unsafe { core::ptr::write_volatile((self.va + (offset + i) as u64) as *mut u8, b) };
        }
    }

    /// Copy out `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset + buf.len() <= PAGE_SIZE as usize, "frame read out of bounds");
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `write`.
            *b = unsafe { core::ptr::read_volatile((self.va + (offset + i) as u64) as *const u8) };
        }
    }

    /// Zero the frame.
    pub fn zero(&self) {
        // SAFETY: the whole frame is live (constructor's contract); nobody else uses it yet.
        unsafe { core::ptr::write_bytes(self.va as *mut u8, 0, PAGE_SIZE as usize) };
    }
}

/// A frame keel owns outright (shared_info, grant frames), freed when dropped.
pub struct KeelFrame {
    mfn: Pfn,
}

impl KeelFrame {
    /// A zeroed frame, or `None` when the host is out of memory.
    pub fn new() -> Option<Self> {
        let mfn = mm::alloc_frames(0)?;
        let f = KeelFrame { mfn };
        f.view().zero();
        Some(f)
    }

    /// Its frame number.
    pub fn mfn(&self) -> Pfn {
        self.mfn
    }

    /// Its contents.
    pub fn view(&self) -> FrameView<'_> {
        // SAFETY: the frame is keel's until `self` is dropped; the view borrows `self`.
        unsafe { FrameView::new(self.mfn) }
    }

    /// Its contents as 32-bit words (a grant frame, which the guest shares).
    pub fn words(&self) -> &[AtomicU32; 1024] {
        // SAFETY: a whole page-aligned 4 KiB frame that is keel's for as long as `self` lives
        // (the borrow); only atomics touch it, since the guest writes it concurrently.
        unsafe { &*(paging::phys_to_virt(self.mfn.addr().as_u64()) as *const [AtomicU32; 1024]) }
    }
}

impl Drop for KeelFrame {
    fn drop(&mut self) {
        mm::free_frames(self.mfn, 0);
    }
}

/// A reference keel holds on one of a domain's RAM frames (see the module doc).
pub struct PinnedPage {
    cell: Arc<MemCell>,
    gfn: Gfn,
    mfn: Pfn,
}

impl core::fmt::Debug for PinnedPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PinnedPage({} -> {})", self.gfn, self.mfn)
    }
}

impl PinnedPage {
    /// Pin the RAM frame at `gfn` (it must be the domain's writable RAM, as Xen requires of
    /// pages it writes: vcpu_info, FIFO pages). Must not be called with `cell` locked.
    pub fn pin(cell: &Arc<MemCell>, gfn: Gfn) -> Result<Self, MemError> {
        let mut guard = cell.inner.lock();
        let mem = guard.mem.as_mut().ok_or(MemError::NotMapped)?;
        let m = mem.p2m.lookup(&KeelTables, gfn).ok_or(MemError::NotMapped)?;
        if m.kind != P2mType::Ram || !m.access.writable() {
            return Err(MemError::NotMapped);
        }
        *mem.pins.entry(m.mfn.as_u64()).or_insert(0) += 1;
        Ok(PinnedPage { cell: cell.clone(), gfn, mfn: m.mfn })
    }

    /// The guest frame it was pinned at.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// Its contents.
    pub fn view(&self) -> FrameView<'_> {
        // SAFETY: the pin keeps the frame allocated to the domain until `self` is dropped;
        // the view borrows `self`.
        unsafe { FrameView::new(self.mfn) }
    }

    /// Its direct-map address (valid while the pin lasts).
    pub fn va(&self) -> u64 {
        paging::phys_to_virt(self.mfn.addr().as_u64())
    }

    /// Its contents as 32-bit words (FIFO event pages).
    pub fn words(&self) -> &[AtomicU32; 1024] {
        // SAFETY: a whole page-aligned 4 KiB frame the pin keeps allocated for the borrow;
        // only atomics touch it, since the guest writes it concurrently.
        unsafe { &*(self.va() as *const [AtomicU32; 1024]) }
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        self.cell.unpin_raw(self.mfn);
    }
}

/// Page-table frames for p2ms: keel's own frames, reached through the direct map.
pub struct KeelTables;

impl TableMemory for KeelTables {
    fn alloc_table(&mut self) -> Option<Pfn> {
        let pfn = mm::alloc_frames(0)?;
        // SAFETY: a frame just allocated to keel, zeroed through the direct map.
        unsafe { core::ptr::write_bytes(paging::phys_to_virt(pfn.addr().as_u64()) as *mut u8, 0, PAGE_SIZE as usize) };
        Some(pfn)
    }

    fn free_table(&mut self, table: Pfn) {
        mm::free_frames(table, 0);
    }

    fn read(&self, table: Pfn, index: usize) -> u64 {
        let va = paging::phys_to_virt(table.addr().as_u64()) + 8 * (index as u64 % 512);
        // SAFETY: `table` is a p2m table frame (keel's), in the direct map; the entry is read
        // atomically because CPUs running the guest walk it concurrently.
        unsafe { (*(va as *const core::sync::atomic::AtomicU64)).load(core::sync::atomic::Ordering::Acquire) }
    }

    fn write(&mut self, table: Pfn, index: usize, value: u64) {
        let va = paging::phys_to_virt(table.addr().as_u64()) + 8 * (index as u64 % 512);
        // SAFETY: as in `read`; written atomically so a concurrent hardware walk sees either
        // the old or the new entry.
        unsafe { (*(va as *const core::sync::atomic::AtomicU64)).store(value, core::sync::atomic::Ordering::Release) }
    }
}

/// Why a memory operation on a domain failed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum MemError {
    /// The host is out of memory.
    OutOfMemory,
    /// The domain would exceed its maximum.
    OverLimit,
    /// The guest frame is not mapped, or not with the needed access.
    NotMapped,
    /// The p2m refused (bad range, already mapped, ...).
    P2m(P2mError),
}

impl From<P2mError> for MemError {
    fn from(e: P2mError) -> Self {
        match e {
            P2mError::OutOfMemory => MemError::OutOfMemory,
            other => MemError::P2m(other),
        }
    }
}

/// A domain's memory.
pub struct DomainMemory {
    domid: u16,
    p2m: P2m,
    /// RAM frames the domain owns.
    tot_pages: u64,
    /// The most it may own.
    max_pages: u64,
    /// References keel holds on RAM frames (mfn -> count), see [`PinnedPage`].
    pins: BTreeMap<u64, u32>,
    /// Pinned RAM frames the guest gave back: freed when their last pin goes.
    released: BTreeSet<u64>,
    /// RAM frames taken out of the p2m by XENMEM_remove_from_physmap: as on Xen, they stay
    /// the domain's (counted in `tot_pages`) until it is destroyed.
    detached: BTreeSet<u64>,
    /// The highest gfn ever mapped (XENMEM_maximum_gpfn; like Xen's, it never goes down).
    max_mapped: Option<Gfn>,
}

impl DomainMemory {
    /// An empty address space for domain `domid`, allowed up to `max_pages` frames of RAM.
    pub fn new(domid: u16, max_pages: u64) -> Result<Self, MemError> {
        Ok(DomainMemory {
            domid,
            p2m: P2m::new(&mut KeelTables)?,
            tot_pages: 0,
            max_pages,
            pins: BTreeMap::new(),
            released: BTreeSet::new(),
            detached: BTreeSet::new(),
            max_mapped: None,
        })
    }

    /// The p2m root, for the vCPUs' nested CR3.
    pub fn root(&self) -> u64 {
        self.p2m.root().addr().as_u64()
    }

    /// RAM frames the domain owns.
    pub fn tot_pages(&self) -> u64 {
        self.tot_pages
    }

    /// The most RAM frames it may own.
    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// The highest gfn ever mapped.
    pub fn max_gfn(&self) -> Option<Gfn> {
        self.max_mapped
    }

    fn note_mapped(&mut self, last: Gfn) {
        if self.max_mapped.is_none_or(|m| last > m) {
            self.max_mapped = Some(last);
        }
    }

    /// Frames keel uses for this domain's p2m tables.
    pub fn table_frames(&self) -> u64 {
        self.p2m.table_frames()
    }

    /// Give the domain zeroed RAM at [gfn, gfn + count), in the largest pages alignment and
    /// the host's free memory allow.
    pub fn populate(&mut self, gfn: Gfn, count: u64) -> Result<(), MemError> {
        if self.tot_pages + count > self.max_pages {
            return Err(MemError::OverLimit);
        }
        let (mut g, end) = (gfn.as_u64(), gfn.as_u64() + count);
        while g < end {
            let mut placed = false;
            for order in [18u8, 9, 0] {
                if !g.is_multiple_of(1 << order) || end - g < (1 << order) {
                    continue;
                }
                let Some(mfn) = mm::alloc_frames_for(order, Owner::Domain(self.domid)) else { continue };
                // SAFETY: the frames were just allocated to this domain; zeroing them through
                // the direct map so no other domain's or keel's data leaks into the guest.
                unsafe {
                    core::ptr::write_bytes(
                        paging::phys_to_virt(mfn.addr().as_u64()) as *mut u8,
                        0,
                        (PAGE_SIZE << order) as usize,
                    )
                };
                if let Err(e) = self.p2m.map(&mut KeelTables, Gfn::new(g), mfn, order, Access::RWX, P2mType::Ram) {
                    mm::free_frames_of(mfn, order, Owner::Domain(self.domid));
                    return Err(e.into());
                }
                self.tot_pages += 1 << order;
                self.note_mapped(Gfn::new(g + (1 << order) - 1));
                g += 1 << order;
                placed = true;
                break;
            }
            if !placed {
                return Err(MemError::OutOfMemory);
            }
        }
        Ok(())
    }

    /// Map a frame keel owns (shared_info, a grant frame) at `gfn`, replacing whatever was
    /// there; a RAM frame displaced this way is freed (as Xen does for add_to_physmap).
    /// Returns the previous mapping if it was not RAM (the caller decides about it).
    pub fn map_keel_frame(&mut self, gfn: Gfn, mfn: Pfn, kind: P2mType) -> Result<Option<Mapping>, MemError> {
        self.split_to_4k(gfn)?;
        let new = Mapping { mfn, order: 0, access: Access::RW, kind };
        let previous = self.p2m.replace(&mut KeelTables, gfn, Some(new))?;
        self.note_mapped(gfn);
        match previous {
            Some(m) if m.kind == P2mType::Ram => {
                mm::free_frames_of(m.mfn, 0, Owner::Domain(self.domid));
                self.tot_pages -= 1;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Drop one reference on `mfn`; a frame given back meanwhile is freed with the last one.
    fn unpin(&mut self, mfn: Pfn) {
        let key = mfn.as_u64();
        match self.pins.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.pins.remove(&key);
                if self.released.remove(&key) {
                    mm::free_frames_of(mfn, 0, Owner::Domain(self.domid));
                    self.tot_pages -= 1;
                }
            }
            None => log::error!("d{}: unpinning frame {mfn} that is not pinned", self.domid),
        }
    }

    /// The guest gives back the RAM page at `gfn` (XENMEM_decrease_reservation): it leaves
    /// the p2m; its frame is freed now, or with the last pin on it.
    pub fn release_ram(&mut self, gfn: Gfn) -> Result<(), MemError> {
        match self.p2m.lookup(&KeelTables, gfn) {
            Some(m) if m.kind == P2mType::Ram => {}
            _ => return Err(MemError::NotMapped),
        }
        self.split_to_4k(gfn)?;
        let m = self.p2m.replace(&mut KeelTables, gfn, None)?.ok_or(MemError::NotMapped)?;
        if self.pins.contains_key(&m.mfn.as_u64()) {
            self.released.insert(m.mfn.as_u64());
        } else {
            mm::free_frames_of(m.mfn, 0, Owner::Domain(self.domid));
            self.tot_pages -= 1;
        }
        Ok(())
    }

    /// XENMEM_populate_physmap of one extent: `2^order` fresh zeroed frames at `gfn`, which
    /// must be free (nothing mapped anywhere in the extent).
    pub fn populate_exact(&mut self, gfn: Gfn, order: u8) -> Result<(), MemError> {
        let count = 1u64 << order;
        for i in 0..count {
            if self.p2m.lookup(&KeelTables, Gfn::new(gfn.as_u64() + i)).is_some() {
                return Err(MemError::P2m(P2mError::AlreadyMapped));
            }
        }
        self.populate(gfn, count)
    }

    /// Remove whatever is mapped at `gfn` (XENMEM_remove_from_physmap): RAM leaves the p2m
    /// but stays the domain's until it dies (Xen's behaviour); a keel frame (shared_info,
    /// grant frame) is just unmapped.
    pub fn remove_page(&mut self, gfn: Gfn) -> Result<(), MemError> {
        match self.p2m.lookup(&KeelTables, gfn) {
            // Xen takes the page out of the p2m and leaves it allocated to the domain.
            Some(m) if m.kind == P2mType::Ram => {
                self.split_to_4k(gfn)?;
                let m = self.p2m.replace(&mut KeelTables, gfn, None)?.ok_or(MemError::NotMapped)?;
                self.detached.insert(m.mfn.as_u64());
                Ok(())
            }
            // Grant mappings go away only through GNTTABOP_unmap_grant_ref (the grant stays
            // pinned until then).
            Some(m) if matches!(m.kind, P2mType::ForeignGrant | P2mType::ForeignMap) => Err(MemError::NotMapped),
            Some(_) => {
                self.split_to_4k(gfn)?;
                self.p2m.replace(&mut KeelTables, gfn, None)?;
                Ok(())
            }
            None => Err(MemError::NotMapped),
        }
    }

    /// Move the RAM page at `from` to `to` (XENMAPSPACE_gmfn); whatever RAM was at `to` is
    /// given back first, as Xen does.
    pub fn move_ram(&mut self, from: Gfn, to: Gfn) -> Result<(), MemError> {
        match self.p2m.lookup(&KeelTables, from) {
            Some(m) if m.kind == P2mType::Ram => {}
            _ => return Err(MemError::NotMapped),
        }
        if from == to {
            return Ok(());
        }
        // Make room at the destination (a failure here leaves the source untouched).
        match self.p2m.lookup(&KeelTables, to) {
            Some(m) if m.kind == P2mType::Ram => self.release_ram(to)?,
            Some(_) => self.remove_page(to)?,
            None => {}
        }
        self.split_to_4k(from)?;
        let m = self.p2m.replace(&mut KeelTables, from, None)?.ok_or(MemError::NotMapped)?;
        if let Err(e) = self.p2m.map(&mut KeelTables, to, m.mfn, 0, m.access, P2mType::Ram) {
            // Put it back where it was (the table there exists: it was just emptied).
            let _ = self.p2m.map(&mut KeelTables, from, m.mfn, 0, m.access, P2mType::Ram);
            return Err(e.into());
        }
        self.note_mapped(to);
        Ok(())
    }

    /// Map another domain's frame `mfn` (a grant, pinned by its granter's grant table) at
    /// `gfn`. RAM there is given back first, as when Xen replaces it; another special
    /// mapping there (a grant, shared_info, a grant frame) is refused.
    pub fn map_grant(&mut self, gfn: Gfn, mfn: Pfn, read_only: bool) -> Result<(), MemError> {
        match self.p2m.lookup(&KeelTables, gfn) {
            Some(m) if m.kind == P2mType::Ram => self.release_ram(gfn)?,
            Some(_) => return Err(MemError::P2m(P2mError::AlreadyMapped)),
            None => {}
        }
        let access = if read_only { Access::R } else { Access::RW };
        self.p2m.map(&mut KeelTables, gfn, mfn, 0, access, P2mType::ForeignGrant)?;
        self.note_mapped(gfn);
        Ok(())
    }

    /// Remove the grant mapping of `mfn` at `gfn` (false if that is not what is there).
    pub fn unmap_grant(&mut self, gfn: Gfn, mfn: Pfn) -> bool {
        match self.p2m.lookup(&KeelTables, gfn) {
            Some(m) if m.kind == P2mType::ForeignGrant && m.mfn == mfn => {
                self.p2m.replace(&mut KeelTables, gfn, None).is_ok()
            }
            _ => false,
        }
    }

    /// Make the mapping containing `gfn` a 4 KiB one; for RAM the frames' allocation is split
    /// the same way, so each 4 KiB frame can later be freed on its own.
    fn split_to_4k(&mut self, gfn: Gfn) -> Result<(), MemError> {
        while let Some(m) = self.p2m.lookup(&KeelTables, gfn) {
            if m.order == 0 {
                break;
            }
            let into = if m.order > 9 { 9 } else { 0 };
            // The p2m first: it may fail (no memory for a table) and then nothing changed.
            self.p2m.split(&mut KeelTables, gfn)?;
            if m.kind == P2mType::Ram {
                // `lookup` gives the frame backing `gfn`; the block starts at the large page's head.
                let offset = gfn.as_u64() & ((1 << m.order) - 1);
                let head = Pfn::new(m.mfn.as_u64() - offset);
                if !mm::split_frames_of(head, m.order, into, Owner::Domain(self.domid)) {
                    log::error!("d{}: RAM at {gfn} is not allocated as mapped", self.domid);
                }
            }
        }
        Ok(())
    }

    /// Remove a keel-owned frame's mapping at `gfn` (when it moves elsewhere).
    pub fn unmap_keel_frame(&mut self, gfn: Gfn) -> Result<(), MemError> {
        match self.p2m.lookup(&KeelTables, gfn) {
            Some(m) if m.kind != P2mType::Ram => {
                self.p2m.replace(&mut KeelTables, gfn, None)?;
                Ok(())
            }
            _ => Err(MemError::NotMapped),
        }
    }

    /// The mapping of `gfn`.
    pub fn lookup(&self, gfn: Gfn) -> Option<Mapping> {
        self.p2m.lookup(&KeelTables, gfn)
    }

    /// The host frame behind `gfn` for keel to read (or write), if the guest could.
    fn host_frame(&self, gfn: Gfn, write: bool) -> Option<Pfn> {
        let m = self.lookup(gfn)?;
        let ok = if write { m.access.writable() } else { m.access.readable() };
        (ok && matches!(m.kind, P2mType::Ram | P2mType::SharedInfo | P2mType::GrantTable)).then_some(m.mfn)
    }

    /// Copy guest-physical memory out: fails (copying nothing) if any page is not the
    /// domain's readable memory.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.for_pages(gpa, buf.len(), false, |va, off, n| {
            // SAFETY: `va` maps n bytes of one of the domain's frames (checked by `for_pages`)
            // through the direct map; guest memory is plain bytes.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, buf[off..].as_mut_ptr(), n) };
        })
    }

    /// Copy into guest-physical memory (fails, writing nothing, unless all of it is writable).
    pub fn write(&self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemError> {
        self.for_pages(gpa, bytes.len(), true, |va, off, n| {
            // SAFETY: as in `read`, for writable frames.
            unsafe { core::ptr::copy_nonoverlapping(bytes[off..].as_ptr(), va as *mut u8, n) };
        })
    }

    /// Atomically replace the naturally aligned `u64` (`wide`) or `u32` at `gpa` with `new` if
    /// it still holds `current` (guest page-table A/D updates race with the guest). Returns
    /// whether it did; Err if the address is not the domain's writable memory or misaligned.
    pub fn compare_exchange(&self, gpa: Gpa, current: u64, new: u64, wide: bool) -> Result<bool, MemError> {
        let size = if wide { 8 } else { 4 };
        if !gpa.as_u64().is_multiple_of(size) {
            return Err(MemError::NotMapped);
        }
        let mfn = self.host_frame(gpa.gfn(), true).ok_or(MemError::NotMapped)?;
        let va = paging::phys_to_virt(mfn.addr().as_u64() + gpa.page_offset());
        use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
        // SAFETY: `va` is a naturally aligned word of one of the domain's writable frames,
        // reached through the direct map; the guest may access it concurrently, hence atomics.
        Ok(unsafe {
            if wide {
                (*(va as *const AtomicU64)).compare_exchange(current, new, SeqCst, SeqCst).is_ok()
            } else {
                (*(va as *const AtomicU32)).compare_exchange(current as u32, new as u32, SeqCst, SeqCst).is_ok()
            }
        })
    }

    /// Zero guest-physical memory.
    pub fn zero(&self, gpa: Gpa, len: u64) -> Result<(), MemError> {
        self.for_pages(gpa, len as usize, true, |va, _, n| {
            // SAFETY: as in `write`.
            unsafe { core::ptr::write_bytes(va as *mut u8, 0, n) };
        })
    }

    /// Resolve every page of [gpa, gpa+len) first (so nothing is done unless all of it is
    /// accessible), then call `f(host va, offset in the buffer, bytes)` page by page.
    fn for_pages(
        &self,
        gpa: Gpa,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemError> {
        let start = gpa.as_u64();
        let end = start.checked_add(len as u64).ok_or(MemError::NotMapped)?;
        let mut a = start;
        while a < end {
            self.host_frame(Gpa::new(a).gfn(), write).ok_or(MemError::NotMapped)?;
            a = (a & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
        let mut a = start;
        while a < end {
            let page_end = ((a & !(PAGE_SIZE - 1)) + PAGE_SIZE).min(end);
            let mfn = self.host_frame(Gpa::new(a).gfn(), write).ok_or(MemError::NotMapped)?;
            let va = paging::phys_to_virt(mfn.addr().as_u64() + (a & (PAGE_SIZE - 1)));
            f(va, (a - start) as usize, (page_end - a) as usize);
            a = page_end;
        }
        Ok(())
    }

    /// Tear the address space down, returning every RAM frame to the allocator except those
    /// keel still holds pins on: those stay allocated to the domain and are returned (mfn ->
    /// pin count) for their pins to free.
    fn destroy(self) -> BTreeMap<u64, u32> {
        let domid = self.domid;
        // Pinned frames given back by the guest are out of the p2m; they count as freed here
        // and are freed by their last pin.
        let mut freed = self.released.len() as u64;
        let pins = &self.pins;
        for &mfn in &self.detached {
            free_ram_except(Pfn::new(mfn), 0, pins, domid);
            freed += 1;
        }
        self.p2m.destroy(&mut KeelTables, &mut |_, m| {
            if m.kind == P2mType::Ram {
                free_ram_except(m.mfn, m.order, pins, domid);
                freed += 1 << m.order;
            }
        });
        if freed != self.tot_pages {
            log::error!("d{domid}: freed {freed} RAM frames at destruction, but it owned {}", self.tot_pages);
        }
        if !self.pins.is_empty() {
            log::debug!("d{domid}: {} frame(s) still referenced by keel; freed when released", self.pins.len());
        }
        self.pins
    }
}

/// Free the RAM block `[mfn, mfn + 2^order)` of domain `domid`, except the frames in `pins`
/// (the allocation is split down to 4 KiB around them).
fn free_ram_except(mfn: Pfn, order: u8, pins: &BTreeMap<u64, u32>, domid: u16) {
    let block = mfn.as_u64()..mfn.as_u64() + (1 << order);
    if pins.range(block).next().is_none() {
        mm::free_frames_of(mfn, order, Owner::Domain(domid));
        return;
    }
    if order == 0 {
        return; // pinned: its pins free it
    }
    let into = if order > 9 { 9 } else { 0 };
    if !mm::split_frames_of(mfn, order, into, Owner::Domain(domid)) {
        log::error!("d{domid}: cannot split RAM block {mfn} (order {order}); leaking it");
        return;
    }
    for i in 0..1u64 << (order - into) {
        free_ram_except(Pfn::new(mfn.as_u64() + (i << into)), into, pins, domid);
    }
}
