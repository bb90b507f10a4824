//! `memory_op`: a guest's view of its own memory — its reservation (ballooning: populate,
//! decrease), its memory map, special pages placed where it wants them (shared_info, grant
//! frames, moved RAM). Behaviour and errnos follow Xen 4.17's `do_memory_op` and
//! `arch_memory_op` for an HVM (PVH) domain with hardware-assisted paging.
//!
//! The reservation calls return the number of extents done, never an errno (a bad argument
//! just stops them, as on Xen); long ones are preempted and continued like Xen's, with the
//! extents done so far encoded above `MEMOP_EXTENT_SHIFT` in the command.

use keel_mm::Gfn;
use xen_abi::domid::DomId;
use xen_abi::errno::Errno;
use xen_abi::memory::*;

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::memory::MemError;

/// Largest extent order an unprivileged domain may ask for (Xen's `CONFIG_DOMU_MAX_ORDER`).
const DOMU_MAX_ORDER: u32 = 9;
/// Largest extent order the control/hardware domain may ask for (`CONFIG_HWDOM_MAX_ORDER`).
const DOM0_MAX_ORDER: u32 = 12;
/// Size of a `xen_pfn_t` in the guest's extent arrays.
const PFN_SIZE: u64 = 8;

/// `memory_op(cmd, arg)`: the low bits of `cmd` select the sub-op.
pub fn memory_op(c: &mut Call<'_>, cmd: u64, arg: Gva) -> HcResult {
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    let op = cmd & MEMOP_CMD_MASK;
    match op {
        XENMEM_INCREASE_RESERVATION | XENMEM_DECREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
            reservation(c, op, start, arg)
        }
        XENMEM_MAXIMUM_RAM_PAGE => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(Outcome::Ret(crate::mm::max_ram_pfn() as i64))
        }
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION | XENMEM_MAXIMUM_GPFN => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let domid: DomId = c.read(arg)?;
            let d = super::target_domain(c, domid)?;
            let n = d
                .with_mem(|m| match op {
                    XENMEM_CURRENT_RESERVATION => m.tot_pages(),
                    XENMEM_MAXIMUM_RESERVATION => m.max_pages(),
                    _ => m.max_gfn().map_or(0, |g| g.as_u64()),
                })
                .ok_or(Errno::ESRCH)?;
            Ok(Outcome::Ret(n as i64))
        }
        XENMEM_ADD_TO_PHYSMAP => {
            if start > u16::MAX as u64 {
                return Err(Errno::EDOM);
            }
            let a: XenAddToPhysmap = c.read(arg)?;
            if a.space == XENMAPSPACE_GMFN_FOREIGN {
                return Err(Errno::ENOSYS);
            }
            let d = super::target_domain(c, a.domid)?;
            match a.space {
                XENMAPSPACE_SHARED_INFO => {
                    if a.idx != 0 {
                        return Err(Errno::EINVAL);
                    }
                    d.map_shared_info(Gfn::new(a.gpfn.0)).map_err(mem_errno)?;
                    Ok(Outcome::Ret(0))
                }
                XENMAPSPACE_GRANT_TABLE => {
                    map_grant_frame(&d, a.idx, Gfn::new(a.gpfn.0))?;
                    Ok(Outcome::Ret(0))
                }
                XENMAPSPACE_GMFN => {
                    d.with_mem(|m| m.move_ram(Gfn::new(a.idx), Gfn::new(a.gpfn.0)))
                        .ok_or(Errno::ESRCH)?
                        .map_err(mem_errno)?;
                    d.flush_guest_tlbs();
                    Ok(Outcome::Ret(0))
                }
                XENMAPSPACE_GMFN_RANGE => {
                    // Moves `size` frames; preempted every so often (the frames done so far
                    // ride in the command, as Xen encodes them).
                    let mut done = start;
                    while done < a.size as u64 {
                        let r = d
                            .with_mem(|m| m.move_ram(Gfn::new(a.idx + done), Gfn::new(a.gpfn.0 + done)))
                            .ok_or(Errno::ESRCH)?;
                        r.map_err(mem_errno)?;
                        done += 1;
                        if done < a.size as u64 && c.preempt_due() {
                            d.flush_guest_tlbs();
                            return Ok(c.continuation([op | done << MEMOP_EXTENT_SHIFT, arg.0, 0, 0, 0]));
                        }
                    }
                    d.flush_guest_tlbs();
                    Ok(Outcome::Ret(0))
                }
                _ => Err(Errno::EINVAL),
            }
        }
        XENMEM_REMOVE_FROM_PHYSMAP => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let a: XenRemoveFromPhysmap = c.read(arg)?;
            let d = super::target_domain(c, a.domid)?;
            d.with_mem(|m| m.remove_page(Gfn::new(a.gpfn.0))).ok_or(Errno::ESRCH)?.map_err(|e| match e {
                MemError::NotMapped => Errno::ENOENT,
                other => mem_errno(other),
            })?;
            d.flush_guest_tlbs();
            Ok(Outcome::Ret(0))
        }
        XENMEM_MEMORY_MAP => {
            let mut map: XenMemoryMap = c.read(arg)?;
            let entries = c.domain.memory_map();
            if entries.is_empty() {
                return Err(Errno::ENOSYS);
            }
            let n = (map.nr_entries as usize).min(entries.len());
            for (i, e) in entries.iter().take(n).enumerate() {
                let at = Gva(map.buffer.addr().wrapping_add((i * core::mem::size_of::<E820Entry>()) as u64));
                c.write(at, e)?;
            }
            map.nr_entries = n as u32;
            c.write(arg, &map)?;
            Ok(Outcome::Ret(0))
        }
        // PV-only, or the host's map (which an HVM guest may not read through here).
        XENMEM_MACHINE_MEMORY_MAP | XENMEM_MACHPHYS_MAPPING => Err(Errno::ENOSYS),
        XENMEM_GET_VNUMAINFO => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            // struct xen_vnuma_topology_info: domid at 0, pad at 2.
            let mut head = [0u8; 4];
            c.read_bytes(arg, &mut head)?;
            if head[2..4] != [0, 0] {
                return Err(Errno::EINVAL);
            }
            super::target_domain(c, DomId(u16::from_le_bytes([head[0], head[1]])))?;
            // No keel domain has a virtual NUMA topology.
            Err(Errno::EOPNOTSUPP)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Increase/decrease reservation and populate physmap: the number of extents done.
fn reservation(c: &mut Call<'_>, op: u64, start: u64, arg: Gva) -> HcResult {
    let Ok(r) = c.read::<XenMemoryReservation>(arg) else { return Ok(Outcome::Ret(start as i64)) };
    let stop = Ok(Outcome::Ret(start as i64));
    if r.nr_extents > (u32::MAX >> MEMOP_EXTENT_SHIFT) as u64 || start >= r.nr_extents {
        return stop;
    }
    let Ok(d) = super::domain_by_any_id(c, r.domid) else { return stop };
    if d.id != c.domain.id && !c.domain.privileged {
        return stop;
    }
    let max_order = if c.domain.privileged { DOM0_MAX_ORDER } else { DOMU_MAX_ORDER };
    if r.extent_order > max_order || r.mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0 {
        return stop;
    }
    let list = r.extent_start.addr();
    let pages = 1u64 << r.extent_order;
    let mut i = start;
    while i < r.nr_extents {
        if i != start && c.preempt_due() {
            return Ok(c.continuation([op | i << MEMOP_EXTENT_SHIFT, arg.0, 0, 0, 0]));
        }
        let Ok(gfn) = c.read::<u64>(Gva(list.wrapping_add(i * PFN_SIZE))) else { break };
        let ok = match op {
            XENMEM_POPULATE_PHYSMAP => {
                gfn.is_multiple_of(pages)
                    && d.with_mem(|m| m.populate_exact(Gfn::new(gfn), r.extent_order as u8)).is_some_and(|r| r.is_ok())
            }
            XENMEM_DECREASE_RESERVATION => {
                let mut ok = true;
                for j in 0..pages {
                    if d.with_mem(|m| m.release_ram(Gfn::new(gfn.wrapping_add(j)))).is_none_or(|r| r.is_err()) {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    d.flush_guest_tlbs();
                }
                ok
            }
            // An auto-translated guest's increase_reservation allocates frames it can never
            // reach; keel refuses it (the guest sees 0 extents done) rather than leak memory.
            _ => false,
        };
        if !ok {
            break;
        }
        i += 1;
    }
    Ok(Outcome::Ret(i as i64))
}

/// XENMAPSPACE_grant_table: grant frame `idx` of `d` appears at `gfn` (and leaves the gfn it
/// was at before), the table growing to `idx + 1` frames if needed.
fn map_grant_frame(d: &crate::dom::Domain, idx: u64, gfn: Gfn) -> Result<(), Errno> {
    let mut table = d.grant.lock();
    let frame = table.add_to_physmap(idx, &mut crate::dom::grant::KeelFrames)?;
    let (index, mfn, old) = (frame.index, frame.frame.mfn(), frame.current_gfn);
    d.with_mem(|m| {
        if let Some(old) = old {
            m.unmap_keel_frame(old)?;
        }
        m.map_keel_frame(gfn, mfn, keel_p2m::P2mType::GrantTable).map(|_| ())
    })
    .ok_or(Errno::ESRCH)?
    .map_err(mem_errno)?;
    table.set_frame_gfn(index, Some(gfn));
    drop(table);
    d.flush_guest_tlbs();
    Ok(())
}

/// The errno a memory failure becomes.
fn mem_errno(e: MemError) -> Errno {
    match e {
        MemError::OutOfMemory | MemError::OverLimit => Errno::ENOMEM,
        MemError::NotMapped | MemError::P2m(_) => Errno::EINVAL,
    }
}
