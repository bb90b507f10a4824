//! `memory_op` (hypercall 12): reservations, the memory map, the physmap and ballooning.
//!
//! Xen 4.17: the reservation ops (`increase`/`decrease_reservation`, `populate_physmap`)
//! return how many extents they did and stop at the first bad one (0 for bad arguments, never
//! an errno); `current`/`maximum_reservation` and `maximum_gpfn` take a domid (`-ESRCH` for
//! none); `memory_map` truncates to the caller's capacity; `machine_memory_map` and
//! `machphys_mapping` are `-ENOSYS` for HVM guests; a page given back reads as zeroes when
//! populated again.

use xen_abi::memory::*;
use xen_abi::{DomId, GuestHandle, XenPfn};

use super::fw::{ensure, memop, nr, num, raw, EFAULT, EINVAL, ENOENT, ENOSYS, ESRCH, R, UNMAPPED};
use super::{pages, Ctx};
use crate::checks::Tap;

fn reservation_op(cmd: u64, gfns: &mut [u64], order: u32, domid: DomId, list: Option<u64>) -> i64 {
    let mut r = XenMemoryReservation {
        extent_start: GuestHandle::new(list.unwrap_or(gfns.as_mut_ptr() as u64)),
        nr_extents: gfns.len() as u64,
        extent_order: order,
        mem_flags: 0,
        domid,
        _pad0: [0; 6],
    };
    // SAFETY: the extent list is `gfns` (read, and for translated guests never written) or
    // UNMAPPED; the frames named are the probe's own pool pages, whose contents nothing else
    // relies on while they are ballooned out.
    unsafe { raw(nr::MEMORY_OP, [cmd, &mut r as *mut XenMemoryReservation as u64, 0, 0, 0]) }
}

/// Give RAM back at each of `gfns`; returns the extents done.
pub fn populate(gfns: &[u64]) -> i64 {
    let mut list = [0u64; 8];
    let n = gfns.len().min(8);
    list[..n].copy_from_slice(&gfns[..n]);
    reservation_op(XENMEM_POPULATE_PHYSMAP, &mut list[..n], 0, DomId::SELF, None)
}

/// Give the RAM at each of `gfns` back to the hypervisor; returns the extents done.
pub fn decrease(gfns: &[u64]) -> i64 {
    let mut list = [0u64; 8];
    let n = gfns.len().min(8);
    list[..n].copy_from_slice(&gfns[..n]);
    reservation_op(XENMEM_DECREASE_RESERVATION, &mut list[..n], 0, DomId::SELF, None)
}

fn domain_query(cmd: u64, domid: DomId) -> i64 {
    let mut d = domid.0;
    memop(cmd, &mut d)
}

/// `XENMEM_current_reservation` of this domain.
pub fn current_reservation() -> i64 {
    domain_query(XENMEM_CURRENT_RESERVATION, DomId::SELF)
}

/// The memory map (up to 64 entries) and how many entries the hypervisor gave.
fn memory_map(entries: &mut [E820Entry; 64], cap: u32) -> (i64, u32) {
    let mut map =
        XenMemoryMap { nr_entries: cap.min(64), _pad0: 0, buffer: GuestHandle::new(entries.as_mut_ptr() as u64) };
    // SAFETY: the buffer holds 64 entries and the capacity is at most 64.
    let rc = unsafe { raw(nr::MEMORY_OP, [XENMEM_MEMORY_MAP, &mut map as *mut XenMemoryMap as u64, 0, 0, 0]) };
    (rc, map.nr_entries)
}

fn maximum_ram_page() -> R {
    let rc = num(nr::MEMORY_OP, [XENMEM_MAXIMUM_RAM_PAGE, 0, 0, 0, 0]);
    ensure!(rc > 0, "rc {rc}");
    Ok(())
}

fn reservations() -> R {
    let cur = current_reservation();
    let max = domain_query(XENMEM_MAXIMUM_RESERVATION, DomId::SELF);
    ensure!(cur > 0 && max > 0, "current {cur}, maximum {max}");
    ensure!(cur <= max, "current reservation {cur} pages above the maximum {max}");
    // 32 MiB of RAM or so: the probe's own image alone is more than 64 pages.
    ensure!(cur > 64, "current reservation {cur} pages is less than the probe's image");
    Ok(())
}

fn reservation_bad_domain() -> R {
    for (name, cmd) in [
        ("current_reservation", XENMEM_CURRENT_RESERVATION),
        ("maximum_reservation", XENMEM_MAXIMUM_RESERVATION),
        ("maximum_gpfn", XENMEM_MAXIMUM_GPFN),
    ] {
        let rc = domain_query(cmd, DomId(1000));
        ensure!(rc == ESRCH, "{name}(dom 1000): rc {rc}, want -ESRCH");
    }
    let rc = num(nr::MEMORY_OP, [XENMEM_CURRENT_RESERVATION, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "current_reservation with an unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn highest_ram_end(entries: &[E820Entry]) -> u64 {
    entries.iter().filter(|e| ({ e.type_ }) == 1).map(|e| { e.addr }.saturating_add(e.size)).max().unwrap_or(0)
}

fn memory_map_check(ctx: &Ctx) -> R {
    let mut entries = [E820Entry::default(); 64];
    let (rc, n) = memory_map(&mut entries, 64);
    ensure!(rc == 0, "rc {rc}");
    ensure!((1..=64).contains(&n), "{n} entries");
    let list = &entries[..n as usize];
    let (image_start, image_end) = pvh_rt::image_range();
    let covers = list.iter().any(|e| {
        let (a, s, ty) = ({ e.addr }, { e.size }, { e.type_ });
        ty == 1 && a <= image_start && image_end <= a.saturating_add(s)
    });
    ensure!(covers, "no RAM entry covers the probe's image [{image_start:#x}, {image_end:#x})");
    for w in list.windows(2) {
        let (a0, s0, a1) = ({ w[0].addr }, { w[0].size }, { w[1].addr });
        ensure!(a0.saturating_add(s0) <= a1, "entries overlap or are unsorted at {a0:#x}+{s0:#x} / {a1:#x}");
    }
    // The start info's map (version 1) must be the same map.
    if ctx.si.version >= 1 && ctx.si.memmap_entries > 0 && ctx.si.memmap_paddr != 0 {
        let count = (ctx.si.memmap_entries as usize).min(64);
        for (i, e) in list.iter().enumerate().take(count) {
            // SAFETY: the start info's memmap (identity-mapped RAM), read within its length.
            let (addr, size, ty) = unsafe {
                let p = ctx.si.memmap_paddr + 24 * i as u64;
                (
                    core::ptr::read_unaligned(p as *const u64),
                    core::ptr::read_unaligned((p + 8) as *const u64),
                    core::ptr::read_unaligned((p + 16) as *const u32),
                )
            };
            ensure!(
                addr == { e.addr } && size == { e.size } && ty == { e.type_ },
                "entry {i} differs from the start info's memmap"
            );
        }
    }
    Ok(())
}

fn memory_map_truncated() -> R {
    let mut entries = [E820Entry::default(); 64];
    let (rc, n) = memory_map(&mut entries, 64);
    ensure!(rc == 0, "rc {rc}");
    let mut small = [E820Entry::default(); 64];
    let (rc, m) = memory_map(&mut small, 1);
    ensure!(rc == 0 && m == 1, "capacity 1: rc {rc}, {m} entries");
    ensure!(small[0] == entries[0], "capacity 1 gave another first entry");
    let (rc, z) = memory_map(&mut small, 0);
    ensure!(rc == 0 && z == 0, "capacity 0: rc {rc}, {z} entries");
    let _ = n;
    Ok(())
}

fn memory_map_bad_buffer() -> R {
    let mut map = XenMemoryMap { nr_entries: 8, _pad0: 0, buffer: GuestHandle::new(UNMAPPED) };
    // SAFETY: the buffer is UNMAPPED.
    let rc = unsafe { raw(nr::MEMORY_OP, [XENMEM_MEMORY_MAP, &mut map as *mut XenMemoryMap as u64, 0, 0, 0]) };
    ensure!(rc == EFAULT, "rc {rc}, want -EFAULT");
    let rc = num(nr::MEMORY_OP, [XENMEM_MEMORY_MAP, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn maximum_gpfn() -> R {
    let rc = domain_query(XENMEM_MAXIMUM_GPFN, DomId::SELF);
    let mut entries = [E820Entry::default(); 64];
    let (_, n) = memory_map(&mut entries, 64);
    let ram_end = highest_ram_end(&entries[..n as usize]);
    let (_, image_end) = pvh_rt::image_range();
    ensure!(rc > 0, "rc {rc}");
    ensure!((rc as u64 + 1) << 12 >= image_end, "maximum gpfn {rc:#x} is below the probe's image end {image_end:#x}");
    ensure!((rc as u64 + 1) << 12 >= ram_end.min(1 << 32), "maximum gpfn {rc:#x} below the map's RAM end {ram_end:#x}");
    Ok(())
}

fn filtered_ops() -> R {
    for (name, cmd) in
        [("machine_memory_map", XENMEM_MACHINE_MEMORY_MAP), ("machphys_mapping", XENMEM_MACHPHYS_MAPPING)]
    {
        let rc = num(nr::MEMORY_OP, [cmd, UNMAPPED, 0, 0, 0]);
        ensure!(rc == ENOSYS, "{name}: rc {rc}, want -ENOSYS (HVM guests)");
    }
    let rc = num(nr::MEMORY_OP, [63, UNMAPPED, 0, 0, 0]);
    ensure!(rc == ENOSYS, "sub-op 63: rc {rc}, want -ENOSYS");
    Ok(())
}

fn add_to_physmap_errors() -> R {
    let page = pages::gfn(pages::SHINFO_A);
    let mut xatp = XenAddToPhysmap {
        domid: DomId::SELF,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 1,
        gpfn: XenPfn(page),
        ..Default::default()
    };
    let rc = memop(XENMEM_ADD_TO_PHYSMAP, &mut xatp);
    ensure!(rc == EINVAL, "shared_info index 1: rc {rc}, want -EINVAL");
    xatp.space = 100;
    xatp.idx = 0;
    let rc = memop(XENMEM_ADD_TO_PHYSMAP, &mut xatp);
    ensure!(rc == EINVAL, "space 100: rc {rc}, want -EINVAL");
    xatp.space = XENMAPSPACE_GMFN_FOREIGN;
    let rc = memop(XENMEM_ADD_TO_PHYSMAP, &mut xatp);
    ensure!(rc == ENOSYS, "gmfn_foreign: rc {rc}, want -ENOSYS (only the batch form maps foreign frames)");
    xatp.space = XENMAPSPACE_SHARED_INFO;
    xatp.domid = DomId(1000);
    let rc = memop(XENMEM_ADD_TO_PHYSMAP, &mut xatp);
    ensure!(rc == ESRCH, "dom 1000: rc {rc}, want -ESRCH");
    let rc = num(nr::MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn balloon_cycle() -> R {
    let mut gfns = [0u64; pages::BALLOON_PAGES];
    for (i, g) in gfns.iter_mut().enumerate() {
        *g = pages::gfn(pages::BALLOON + i);
        super::fw::fill(pages::addr(pages::BALLOON + i), 0x33);
    }
    let before = current_reservation();
    let done = decrease(&gfns);
    ensure!(done == gfns.len() as i64, "decrease_reservation did {done} of {} extents", gfns.len());
    let during = current_reservation();
    ensure!(during == before - gfns.len() as i64, "reservation {before} -> {during} after giving back {}", gfns.len());
    // A gfn already given back cannot be given back again: nothing done.
    let again = decrease(&gfns[..1]);
    let done = populate(&gfns);
    ensure!(again == 0, "decreasing an empty gfn did {again} extents, want 0");
    ensure!(done == gfns.len() as i64, "populate_physmap did {done} of {} extents", gfns.len());
    let after = current_reservation();
    ensure!(after == before, "reservation {after} after taking the pages again, {before} before");
    // Xen 4.17 does not scrub pages a running domain gives back: only check they are RAM.
    for i in 0..gfns.len() {
        let a = pages::addr(pages::BALLOON + i);
        super::fw::fill(a, 0x34 + i as u8);
        ensure!(super::fw::holds(a, 0x34 + i as u8, 0, 4096), "page {i} does not keep what is written");
    }
    Ok(())
}

fn reservation_bad_args() -> R {
    let g = pages::gfn(pages::BALLOON);
    let mut one = [g];
    let rc = reservation_op(XENMEM_POPULATE_PHYSMAP, &mut one, 0, DomId::SELF, Some(UNMAPPED));
    ensure!(rc == 0, "populate with an unmapped extent list: rc {rc}, want 0 extents");
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, &mut one, 0, DomId::SELF, Some(UNMAPPED));
    ensure!(rc == 0, "decrease with an unmapped extent list: rc {rc}, want 0 extents");
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, &mut one, 0, DomId(1000), None);
    ensure!(rc == 0, "decrease for dom 1000: rc {rc}, want 0 extents");
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, &mut one, 30, DomId::SELF, None);
    ensure!(rc == 0, "decrease of order 30: rc {rc}, want 0 extents");
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, &mut one[..0], 0, DomId::SELF, None);
    ensure!(rc == 0, "decrease of no extents: rc {rc}");
    // A gfn far beyond anything the domain has: nothing there to give back.
    let mut far = [0xffff_ffff_u64];
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, &mut far, 0, DomId::SELF, None);
    ensure!(rc == 0, "decrease of an empty far gfn: rc {rc}, want 0 extents");
    let rc = num(nr::MEMORY_OP, [XENMEM_POPULATE_PHYSMAP, UNMAPPED, 0, 0, 0]);
    ensure!(rc == 0, "populate with an unmapped argument: rc {rc}, want 0");
    Ok(())
}

fn remove_from_physmap() -> R {
    let g = pages::gfn(pages::REMOVE);
    let before = current_reservation();
    let mut x = XenRemoveFromPhysmap { domid: DomId::SELF, _pad0: [0; 6], gpfn: XenPfn(g) };
    let rc = memop(XENMEM_REMOVE_FROM_PHYSMAP, &mut x);
    let during = current_reservation();
    let rc2 = memop(XENMEM_REMOVE_FROM_PHYSMAP, &mut x);
    let done = populate(&[g]);
    let after = current_reservation();
    ensure!(rc == 0, "removing a RAM page: rc {rc}");
    ensure!(rc2 == ENOENT, "removing it again: rc {rc2}, want -ENOENT");
    ensure!(done == 1, "repopulating: {done} extents");
    // Unmapped, not freed: the page still counts until the domain dies.
    ensure!(during == before, "reservation {before} -> {during} after remove_from_physmap, want unchanged");
    ensure!(after == before + 1, "reservation {before} -> {after} after populating the gfn again, want one more");
    super::fw::fill(pages::addr(pages::REMOVE), 0x21);
    ensure!(
        super::fw::holds(pages::addr(pages::REMOVE), 0x21, 0, 4096),
        "the repopulated page does not keep what is written"
    );
    let mut x = XenRemoveFromPhysmap { domid: DomId(1000), _pad0: [0; 6], gpfn: XenPfn(g) };
    let rc = memop(XENMEM_REMOVE_FROM_PHYSMAP, &mut x);
    ensure!(rc == ESRCH, "dom 1000: rc {rc}, want -ESRCH");
    Ok(())
}

/// The `mem-` checks (shared_info's are in `time`, grant frames' in `gnt`).
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("mem-maximum-ram-page", maximum_ram_page());
    t.run("mem-reservation", reservations());
    t.run("mem-reservation-bad-domain", reservation_bad_domain());
    t.run("mem-memory-map", memory_map_check(ctx));
    t.run("mem-memory-map-truncated", memory_map_truncated());
    t.run("mem-memory-map-bad-buffer", memory_map_bad_buffer());
    t.run("mem-maximum-gpfn", maximum_gpfn());
    t.run("mem-hvm-filtered-ops", filtered_ops());
    t.run("mem-add-to-physmap-errors", add_to_physmap_errors());
    t.run("mem-balloon-cycle", balloon_cycle());
    t.run("mem-reservation-bad-args", reservation_bad_args());
    t.run("mem-remove-from-physmap", remove_from_physmap());
}
