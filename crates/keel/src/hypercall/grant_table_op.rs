//! `grant_table_op`: sharing pages between domains (grant tables, version 1). The state
//! machine is `keel-grant`; this decodes the guest's arrays, resolves domains, updates the
//! p2ms and copies the bytes. An HVM (PVH) guest reaches the sub-ops Xen 4.17's
//! `hvm_grant_table_op` lets through; per-element results go into each element's `status`,
//! and long batches continue like Xen's (the remaining elements in the continuation).

use alloc::sync::Arc;

use keel_grant::{check_copy_end, check_copy_range, check_map_flags, Access, CopyGrant, GrantStatus, MapRequest};
use keel_mm::{Gfn, Gpa, Pfn};
use xen_abi::errno::Errno;
use xen_abi::grant_table::*;
use xen_abi::DomId;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::grant::{self, GranterMem, KeelFrames};
use crate::dom::memory::MemError;
use crate::dom::Domain;

/// Bits of `cmd` above this are Xen's continuation argument (only GNTTABOP_cache_flush uses
/// them).
const CMD_MASK: u32 = (1 << 12) - 1;

/// `grant_table_op(cmd, uop, count)`.
pub fn grant_table_op(c: &mut Call<'_>, cmd: u32, uop: Gva, count: u32) -> HcResult {
    if (count as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    if cmd & !CMD_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        GNTTABOP_MAP_GRANT_REF => batch(c, cmd, uop, count, map_one),
        GNTTABOP_UNMAP_GRANT_REF => batch(c, cmd, uop, count, unmap_one),
        GNTTABOP_COPY => batch(c, cmd, uop, count, copy_one),
        GNTTABOP_SWAP_GRANT_REF => batch(c, cmd, uop, count, swap_one),
        GNTTABOP_SETUP_TABLE => setup_table(c, uop, count),
        GNTTABOP_QUERY_SIZE => query_size(c, uop, count),
        GNTTABOP_SET_VERSION => {
            let mut op: GnttabSetVersion = c.read(uop)?;
            let r = c.domain.grant.lock().set_version(op.version);
            op.version = r.version;
            c.write(uop, &op)?;
            r.result.map(|_| Outcome::Ret(0))
        }
        GNTTABOP_GET_VERSION => {
            let mut op: GnttabGetVersion = c.read(uop)?;
            let d = super::target_domain(c, op.dom)?;
            op.version = d.grant.lock().version();
            c.write(uop, &op)?;
            Ok(Outcome::Ret(0))
        }
        // The others need auditing before an HVM guest may use them (Xen's rule), or do not
        // exist for version 1.
        _ => Err(Errno::ENOSYS),
    }
}

/// Run `one` on each of the `count` elements at `uop`, writing each back; continue later (the
/// rest of the array) when preemption is due.
fn batch<T: FromBytes + IntoBytes + Immutable>(
    c: &mut Call<'_>,
    cmd: u32,
    uop: Gva,
    count: u32,
    one: fn(&mut Call<'_>, &mut T),
) -> HcResult {
    let size = core::mem::size_of::<T>() as u64;
    for i in 0..count as u64 {
        let at = Gva(uop.0.wrapping_add(i * size));
        if i > 0 && c.preempt_due() {
            return Ok(c.continuation([cmd as u64, at.0, count as u64 - i, 0, 0]));
        }
        let mut op: T = c.read(at)?;
        one(c, &mut op);
        c.write(at, &op)?;
    }
    Ok(Outcome::Ret(0))
}

fn map_one(c: &mut Call<'_>, op: &mut GnttabMapGrantRef) {
    op.status = GrantStatus::of(&map(c.domain, op));
}

/// Why a map did not happen.
enum MapFail {
    /// The grant state machine refused.
    Status(GrantStatus),
    /// Pinned, but keel could not install the mapping: the pin to drop.
    Undo(keel_grant::PendingUnmap),
}

fn map(mapper: &Arc<Domain>, op: &mut GnttabMapGrantRef) -> Result<(), GrantStatus> {
    check_map_flags(op.flags)?;
    // By number: DOMID_SELF names no domain here (GNTST_bad_domain, as Xen).
    let granter =
        if op.dom.0 == mapper.id { mapper.clone() } else { crate::dom::get(op.dom.0).ok_or(GrantStatus::BadDomain)? };
    let mut mem = GranterMem::of(&granter);
    let req = MapRequest::from(&*op);
    let result = grant::with_tables(mapper, &granter, |table, peer| {
        let m = table.map(peer, &mut mem, req).map_err(MapFail::Status)?;
        let installed = mapper.with_mem(|p2m| p2m.map_grant(m.host_gfn, m.mfn, m.access.is_read_only()));
        if installed.is_some_and(|r| r.is_ok()) {
            return Ok(m);
        }
        // Put everything back as it was (nothing was mapped, so no flush is needed).
        table.undo_map(m.handle).map_err(MapFail::Status).and_then(|p| Err(MapFail::Undo(p)))
    });
    match result {
        Ok(m) => {
            op.handle = m.handle;
            // Xen gives the machine address here; keel does not hand host addresses to guests
            // (an auto-translated guest has no use for it).
            op.dev_bus_addr = 0;
            Ok(())
        }
        Err(MapFail::Status(s)) => Err(s),
        Err(MapFail::Undo(p)) => {
            grant::finish_unmap(mapper, p);
            Err(GrantStatus::GeneralError)
        }
    }
}

fn unmap_one(c: &mut Call<'_>, op: &mut GnttabUnmapGrantRef) {
    let mapper = c.domain.clone();
    let r = mapper.grant.lock().unmap(op.handle, Gpa::new(op.host_addr));
    op.status = match r {
        Ok(None) => 0,
        Ok(Some(pending)) => {
            if !mapper.with_mem(|m| m.unmap_grant(pending.host_gfn(), pending.mfn())).unwrap_or(false) {
                log::debug!("d{}: grant mapping at {} was already gone from the p2m", mapper.id, pending.host_gfn());
            }
            // No vCPU of the mapper may reach the frame once its granter can reuse it.
            mapper.flush_guest_tlbs();
            grant::finish_unmap(&mapper, pending);
            0
        }
        Err(s) => s.raw(),
    };
}

fn swap_one(c: &mut Call<'_>, op: &mut GnttabSwapGrantRef) {
    op.status = GrantStatus::of(&c.domain.grant.lock().swap_grant_ref(op.ref_a, op.ref_b));
}

/// One end of a copy, acquired: a grant pin, or a pin on one of the caller's own frames.
enum End {
    Grant(Arc<Domain>, CopyGrant),
    Own(Pfn),
}

impl End {
    fn mfn(&self) -> Pfn {
        match self {
            End::Grant(_, g) => g.mfn(),
            End::Own(m) => *m,
        }
    }

    fn release(self, caller: &Arc<Domain>) {
        match self {
            End::Grant(d, g) => {
                let mut mem = GranterMem::of(&d);
                if d.grant.lock().release_copy(g, &mut mem).is_err() {
                    log::error!("d{}: copy grant released on the wrong table", caller.id);
                }
            }
            End::Own(m) => caller.mem.unpin_raw(m),
        }
    }
}

fn copy_one(c: &mut Call<'_>, op: &mut GnttabCopy) {
    op.status = GrantStatus::of(&copy(c.domain, op));
}

/// One GNTTABOP_copy element, in Xen's order (see `keel_grant::copy`).
fn copy(caller: &Arc<Domain>, op: &GnttabCopy) -> Result<(), GrantStatus> {
    let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
    let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
    check_copy_end(op.source.domid, src_gref)?;
    let src_dom = lookup_any(caller, op.source.domid)?;
    check_copy_end(op.dest.domid, dst_gref)?;
    let dst_dom = lookup_any(caller, op.dest.domid)?;
    let src = acquire(caller, &src_dom, src_gref, op.source, Access::ReadOnly)?;
    let dst = match acquire(caller, &dst_dom, dst_gref, op.dest, Access::Writable) {
        Ok(d) => d,
        Err(e) => {
            src.release(caller);
            return Err(e);
        }
    };
    let result = check_copy_range(op).map(|()| {
        copy_bytes(src.mfn(), op.source.offset as usize, dst.mfn(), op.dest.offset as usize, op.len as usize)
    });
    src.release(caller);
    dst.release(caller);
    result
}

/// A copy end's domain: DOMID_SELF allowed (GNTST_bad_domain if there is none).
fn lookup_any(caller: &Arc<Domain>, id: DomId) -> Result<Arc<Domain>, GrantStatus> {
    if id == DomId::SELF || id.0 == caller.id {
        return Ok(caller.clone());
    }
    crate::dom::get(id.0).ok_or(GrantStatus::BadDomain)
}

fn acquire(
    caller: &Arc<Domain>,
    d: &Arc<Domain>,
    gref: bool,
    ptr: GnttabCopyPtr,
    access: Access,
) -> Result<End, GrantStatus> {
    if gref {
        let mut mem = GranterMem::of(d);
        let g = d.grant.lock().acquire_copy(xen_abi::DomId(caller.id), ptr.gref(), access, &mut mem)?;
        return Ok(End::Grant(d.clone(), g));
    }
    // The caller's own frame (check_copy_end allowed only DOMID_SELF).
    match caller.mem.pin_raw(Gfn::new(ptr.gmfn().0), !access.is_read_only()) {
        Ok(m) => Ok(End::Own(m)),
        Err(MemError::NotMapped) if !access.is_read_only() => Err(GrantStatus::GeneralError),
        Err(_) => Err(GrantStatus::BadPage),
    }
}

/// Copy `len` bytes between two frames both sides keep pinned; the offsets and length were
/// checked to stay within the page.
fn copy_bytes(src: Pfn, src_off: usize, dst: Pfn, dst_off: usize, len: usize) {
    use crate::arch::x86::paging::phys_to_virt;
    let s = phys_to_virt(src.addr().as_u64()) as *const u8;
    let d = phys_to_virt(dst.addr().as_u64()) as *mut u8;
    for i in 0..len {
        // SAFETY: both frames are pinned for the copy (a grant pin or keel's own pin), the
        // range lies within each page (check_copy_range), and guests may change the bytes
        // concurrently, hence volatile byte accesses (an overlap of source and destination in
        // the same frame is copied byte by byte, as memcpy semantics do not promise more).
        unsafe { core::ptr::write_volatile(d.add(dst_off + i), core::ptr::read_volatile(s.add(src_off + i))) };
    }
}

/// GNTTABOP_setup_table (one element).
fn setup_table(c: &mut Call<'_>, uop: Gva, count: u32) -> HcResult {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op: GnttabSetupTable = c.read(uop)?;
    op.status = match super::target_domain(c, op.dom) {
        Err(Errno::ESRCH) => GrantStatus::BadDomain.raw(),
        Err(_) => GrantStatus::PermissionDenied.raw(),
        Ok(d) => {
            let mut table = d.grant.lock();
            match table.setup_table(op.nr_frames, &mut KeelFrames) {
                Err(s) => s.raw(),
                Ok(()) => {
                    let list: alloc::vec::Vec<_> = table.frame_list(op.nr_frames).collect();
                    drop(table);
                    let base = op.frame_list.addr();
                    let mut status = 0;
                    for (i, pfn) in list.iter().enumerate() {
                        if c.write(Gva(base.wrapping_add(8 * i as u64)), pfn).is_err() {
                            status = GrantStatus::BadVirtAddr.raw();
                        }
                    }
                    status
                }
            }
        }
    };
    write_status(c, uop, core::mem::offset_of!(GnttabSetupTable, status), op.status)?;
    Ok(Outcome::Ret(0))
}

/// GNTTABOP_query_size (one element).
fn query_size(c: &mut Call<'_>, uop: Gva, count: u32) -> HcResult {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op: GnttabQuerySize = c.read(uop)?;
    match super::target_domain(c, op.dom) {
        Err(Errno::ESRCH) => op.status = GrantStatus::BadDomain.raw(),
        Err(_) => op.status = GrantStatus::PermissionDenied.raw(),
        Ok(d) => {
            let q = d.grant.lock().query_size();
            op.nr_frames = q.nr_frames;
            op.max_nr_frames = q.max_nr_frames;
            op.status = 0;
        }
    }
    c.write(uop, &op)?;
    Ok(Outcome::Ret(0))
}

fn write_status(c: &Call<'_>, uop: Gva, offset: usize, status: i16) -> Result<(), Errno> {
    c.write(Gva(uop.0.wrapping_add(offset as u64)), &status)
}
