//! Grant tables, keel's side of `keel-grant`: the frames a table is made of, the granter's
//! memory as the state machine sees it, and the operations that span two domains' tables and
//! p2ms (map, unmap, copy, teardown).
//!
//! Locking: a domain's grant table lock comes before any memory lock. When two tables are
//! needed (a map), they are taken in domid order; unmap and teardown take them one after the
//! other, never nested. A granted frame is pinned in its granter's memory (`MemCell::pin_raw`)
//! from its first use until its last, so it stays allocated whatever the granter does.

use alloc::sync::Arc;
use core::sync::atomic::AtomicU32;

use keel_grant::{Access, FrameSource, GrantStatus, GrantTable, GranterMemory, Peer};
use keel_mm::{Gfn, Pfn};

use super::memory::{KeelFrame, MemCell};
use super::Domain;

/// A domain's grant table.
pub type Table = GrantTable<KeelFrame>;

impl keel_grant::SharedFrame for KeelFrame {
    fn words(&self) -> &[AtomicU32; 1024] {
        self.words()
    }
}

/// Grant frames come from keel's allocator, zeroed.
pub struct KeelFrames;

impl FrameSource for KeelFrames {
    type Frame = KeelFrame;

    fn alloc_frame(&mut self) -> Option<KeelFrame> {
        KeelFrame::new()
    }

    fn free_frame(&mut self, frame: KeelFrame) {
        drop(frame);
    }
}

/// A granter's memory: its RAM frames, pinned while granted.
pub struct GranterMem<'a> {
    cell: &'a MemCell,
    dying: bool,
}

impl<'a> GranterMem<'a> {
    /// The memory of `d`.
    pub fn of(d: &'a Domain) -> Self {
        GranterMem { cell: &d.mem, dying: d.is_dying() }
    }
}

impl GranterMemory for GranterMem<'_> {
    fn get_frame(&mut self, gfn: Gfn, access: Access) -> Result<Pfn, GrantStatus> {
        if self.dying {
            return Err(GrantStatus::BadDomain);
        }
        self.cell.pin_raw(gfn, !access.is_read_only()).map_err(|_| GrantStatus::BadPage)
    }

    fn put_frame(&mut self, mfn: Pfn) {
        self.cell.unpin_raw(mfn);
    }
}

/// Run `f` on `mapper`'s table with `granter`'s as its peer, both locked (in domid order).
pub fn with_tables<R>(mapper: &Domain, granter: &Domain, f: impl FnOnce(&mut Table, Peer<'_, KeelFrame>) -> R) -> R {
    if mapper.id == granter.id {
        return f(&mut mapper.grant.lock(), Peer::Same);
    }
    if mapper.id < granter.id {
        let mut m = mapper.grant.lock();
        let mut g = granter.grant.lock();
        f(&mut m, Peer::Other(&mut g))
    } else {
        let mut g = granter.grant.lock();
        let mut m = mapper.grant.lock();
        f(&mut m, Peer::Other(&mut g))
    }
}

/// The domain a pending unmap or copy grant belongs to (`mapper` itself, or another live one).
fn granter_of(mapper: &Arc<Domain>, id: xen_abi::DomId) -> Option<Arc<Domain>> {
    if id.0 == mapper.id {
        Some(mapper.clone())
    } else {
        super::get(id.0)
    }
}

/// Second half of an unmap, once no vCPU of the mapper can reach the frame any more: the
/// granter drops the pin (and clears GTF_reading/GTF_writing with the last one).
pub fn finish_unmap(mapper: &Arc<Domain>, pending: keel_grant::PendingUnmap) {
    let Some(granter) = granter_of(mapper, pending.granter()) else {
        // Cannot happen: a granter with pinned grants is not destroyed (see `Domain::reap`).
        log::error!("d{}: grant of d{} unmapped after that domain was destroyed", mapper.id, pending.granter().0);
        return;
    };
    let mut mem = GranterMem::of(&granter);
    if granter.grant.lock().finish_unmap(pending, &mut mem).is_err() {
        log::error!("d{}: grant unmap finished on the wrong table", mapper.id);
    }
}

/// A dying domain gives back every grant mapping it holds (its vCPUs no longer run, so no
/// TLB can reach the frames; its p2m goes with the domain).
pub fn release_mappings(d: &Arc<Domain>) {
    loop {
        let Some(pending) = d.grant.lock().release_next_mapping() else { break };
        d.with_mem(|m| m.unmap_grant(pending.host_gfn(), pending.mfn()));
        finish_unmap(d, pending);
    }
}
