//! A domain's memory: its p2m (nested page tables), the frames it owns, its accounting, and
//! keel's access to guest-physical memory.
//!
//! Every RAM frame a domain has is allocated to it (`Owner::Domain`) and mapped exactly once
//! in its p2m; destroying the domain walks the p2m and returns every such frame, so the free
//! count after all domains are gone equals the count before the first was built. Frames keel
//! maps into a domain but keeps owning (shared_info, grant table frames) carry their own p2m
//! type and are freed by their owner.

use keel_mm::{Gfn, Gpa, Owner, Pfn, PAGE_SIZE};
use keel_p2m::{Access, Mapping, P2m, P2mError, P2mType, TableMemory};

use crate::arch::x86::paging;
use crate::mm;

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
}

impl DomainMemory {
    /// An empty address space for domain `domid`, allowed up to `max_pages` frames of RAM.
    pub fn new(domid: u16, max_pages: u64) -> Result<Self, MemError> {
        Ok(DomainMemory { domid, p2m: P2m::new(&mut KeelTables)?, tot_pages: 0, max_pages })
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
        match previous {
            Some(m) if m.kind == P2mType::Ram => {
                mm::free_frames_of(m.mfn, 0, Owner::Domain(self.domid));
                self.tot_pages -= 1;
                Ok(None)
            }
            other => Ok(other),
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

    /// Tear the address space down, returning every RAM frame to the allocator.
    pub fn destroy(self) {
        let domid = self.domid;
        let mut freed = 0u64;
        self.p2m.destroy(&mut KeelTables, &mut |_, m| {
            if m.kind == P2mType::Ram {
                mm::free_frames_of(m.mfn, m.order, Owner::Domain(domid));
                freed += 1 << m.order;
            }
        });
        if freed != self.tot_pages {
            log::error!("d{domid}: freed {freed} RAM frames at destruction, but it owned {}", self.tot_pages);
        }
    }
}
