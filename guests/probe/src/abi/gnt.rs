//! `grant_table_op` (hypercall 20), version 1, with the probe granting pages to itself: the
//! table's frames placed with `XENMEM_add_to_physmap` as PVH Linux does, `setup_table`,
//! `query_size`, versions, mapping and unmapping (read-only and writable), and copies.
//!
//! Xen 4.17: mapping needs the granter's real domid (`DOMID_SELF` is `GNTST_bad_domain`) and
//! exactly `GNTMAP_host_map` (plus `GNTMAP_readonly`) from an HVM domain; the granted frame
//! is mapped at the guest-physical `host_addr`; while mapped the entry carries `GTF_reading`
//! (and `GTF_writing` for a writable mapping); a read-only grant mapped writable is
//! `GNTST_general_error`; an unknown handle or a second unmap is `GNTST_bad_handle`. A copy
//! names frames only with `DOMID_SELF` (else `GNTST_permission_denied`) and may not cross a
//! page (`GNTST_bad_copy_arg`). HVM guests get `-ENOSYS` for the PV-only ops. Mapping one's
//! own grant also takes the frame away from its own gfn in Xen (a frame has one gfn), so the
//! checks never touch a granted page while it is mapped, and give it fresh RAM afterwards.

use core::sync::atomic::{AtomicU16, Ordering};

use xen_abi::grant_table::*;
use xen_abi::memory::{XenAddToPhysmap, XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP};
use xen_abi::{DomId, GuestHandle, XenPfn};

use super::fw::{
    self, ensure, gnttab, gnttab_n, memop, nr, num, raw, Msg, EBUSY, EFAULT, EINVAL, ENOSYS, ESRCH, R, UNMAPPED,
};
use super::{mem, pages, Ctx};
use crate::checks::Tap;

/// Grant references the checks use (0 to 7 are reserved for the toolstack).
const REF_A: u32 = 16;
const REF_B: u32 = 17;
/// The peer checks' grant.
pub const REF_PEER: u32 = 20;

/// Map grant-table frame `idx` at pool page `page`.
pub fn map_frame(idx: u64, page: usize) -> i64 {
    let mut x = XenAddToPhysmap {
        domid: DomId::SELF,
        space: XENMAPSPACE_GRANT_TABLE,
        idx,
        gpfn: XenPfn(pages::gfn(page)),
        ..Default::default()
    };
    memop(XENMEM_ADD_TO_PHYSMAP, &mut x)
}

/// Make sure frame 0 is mapped (the peer checks and benchmarks need it).
pub fn ensure_frame0() -> bool {
    static MAPPED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if MAPPED.load(Ordering::Acquire) {
        return true;
    }
    let ok = map_frame(0, pages::GNT_FRAME) == 0;
    MAPPED.store(ok, Ordering::Release);
    ok
}

fn entry_addr(r: u32) -> u64 {
    pages::addr(pages::GNT_FRAME) + 8 * (r as u64 % 512)
}

fn flags_of(r: u32) -> &'static AtomicU16 {
    // SAFETY: the flags word of entry `r` in grant frame 0, mapped at GNT_FRAME; the
    // hypervisor updates it atomically too.
    unsafe { &*(entry_addr(r) as *const AtomicU16) }
}

/// Write grant entry `r`: `frame` for `domid` with `flags` (flags last, as the ABI wants).
pub fn grant(r: u32, domid: u16, frame: u64, flags: u16) {
    let e = entry_addr(r);
    // SAFETY: entry `r` of the mapped grant frame 0 (8 bytes, 8-byte aligned).
    unsafe {
        core::ptr::write_volatile((e + 2) as *mut u16, domid);
        core::ptr::write_volatile((e + 4) as *mut u32, frame as u32);
    }
    core::sync::atomic::fence(Ordering::Release);
    flags_of(r).store(flags, Ordering::Release);
}

/// Revoke grant entry `r`.
pub fn revoke(r: u32) {
    flags_of(r).store(0, Ordering::Release);
}

/// The hypervisor-maintained flags of entry `r`.
pub fn entry_flags(r: u32) -> u16 {
    flags_of(r).load(Ordering::Acquire)
}

/// `GNTTABOP_map_grant_ref` of (`dom`, `r`) at guest-physical `host_addr`; (status, handle).
pub fn map(dom: u16, r: u32, host_addr: u64, flags: u32) -> (i16, u32) {
    let mut m = GnttabMapGrantRef {
        host_addr,
        flags,
        ref_: GrantRef(r),
        dom: DomId(dom),
        status: 0x7777,
        handle: GrantHandle(u32::MAX),
        dev_bus_addr: 0,
    };
    let rc = gnttab(GNTTABOP_MAP_GRANT_REF, &mut m);
    if rc != 0 {
        return (rc as i16, u32::MAX);
    }
    (m.status, m.handle.0)
}

/// `GNTTABOP_unmap_grant_ref`; returns the status.
pub fn unmap(handle: u32, host_addr: u64) -> i16 {
    let mut u =
        GnttabUnmapGrantRef { host_addr, dev_bus_addr: 0, handle: GrantHandle(handle), status: 0x7777, _pad0: 0 };
    let rc = gnttab(GNTTABOP_UNMAP_GRANT_REF, &mut u);
    if rc != 0 {
        return rc as i16;
    }
    u.status
}

/// One grant copy; returns the status.
pub fn copy(src: GnttabCopyPtr, dst: GnttabCopyPtr, len: u16, flags: u16) -> i16 {
    let mut c = GnttabCopy { source: src, dest: dst, len, flags, status: 0x7777, _pad0: 0 };
    let rc = gnttab(GNTTABOP_COPY, &mut c);
    if rc != 0 {
        return rc as i16;
    }
    c.status
}

/// Balloon out pool page `page` so that a grant can be mapped there.
pub fn make_hole(page: usize) -> bool {
    mem::decrease(&[pages::gfn(page)]) == 1
}

/// Give pool page `page` RAM again, whether or not a grant mapping or the hypervisor took it:
/// decrease (gives nothing back if it is already empty) then populate.
pub fn refill(page: usize) -> bool {
    mem::decrease(&[pages::gfn(page)]);
    mem::populate(&[pages::gfn(page)]) == 1
}

fn query(dom: DomId) -> (i64, GnttabQuerySize) {
    let mut q = GnttabQuerySize { dom, nr_frames: 0xffff, max_nr_frames: 0xffff, status: 0x7777, ..Default::default() };
    let rc = gnttab(GNTTABOP_QUERY_SIZE, &mut q);
    (rc, q)
}

fn query_size() -> R {
    let (rc, q) = query(DomId::SELF);
    ensure!(rc == 0 && q.status == GNTST_OKAY, "rc {rc}, status {}", q.status);
    ensure!(
        q.nr_frames >= 1 && q.nr_frames <= q.max_nr_frames,
        "nr_frames {}, max_nr_frames {}",
        q.nr_frames,
        q.max_nr_frames
    );
    let (rc, q) = query(DomId(1000));
    ensure!(rc == 0 && q.status == GNTST_BAD_DOMAIN, "dom 1000: rc {rc}, status {} (want GNTST_bad_domain)", q.status);
    let mut two = [GnttabQuerySize { dom: DomId::SELF, ..Default::default() }; 2];
    let rc = gnttab_n(GNTTABOP_QUERY_SIZE, &mut two);
    ensure!(rc == EINVAL, "count 2: rc {rc}, want -EINVAL");
    let rc = num(nr::GRANT_TABLE_OP, [GNTTABOP_QUERY_SIZE as u64, UNMAPPED, 1, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn get_version(dom: DomId) -> (i64, u32) {
    let mut g = GnttabGetVersion { dom, pad: 0, version: 0x77 };
    let rc = gnttab(GNTTABOP_GET_VERSION, &mut g);
    (rc, g.version)
}

fn set_version(v: u32) -> (i64, u32) {
    let mut s = GnttabSetVersion { version: v };
    let rc = gnttab(GNTTABOP_SET_VERSION, &mut s);
    (rc, s.version)
}

fn versions() -> R {
    let (rc, v) = get_version(DomId::SELF);
    ensure!(rc == 0 && v == 1, "get_version: rc {rc}, version {v}; want version 1");
    let (rc, _) = get_version(DomId(1000));
    ensure!(rc == ESRCH, "get_version of dom 1000: rc {rc}, want -ESRCH");
    let (rc, v) = set_version(1);
    ensure!(rc == 0 && v == 1, "set_version(1): rc {rc}, version {v}");
    for bad in [0, 3] {
        let (rc, v) = set_version(bad);
        ensure!(rc == EINVAL && v == 1, "set_version({bad}): rc {rc}, version {v}; want -EINVAL and 1");
    }
    let (rc, v) = set_version(2);
    if rc == 0 {
        ensure!(v == 2, "set_version(2) succeeded but reports version {v}");
        let (_, now) = get_version(DomId::SELF);
        let (rc1, v1) = set_version(1);
        ensure!(now == 2, "get_version after switching to 2 says {now}");
        ensure!(rc1 == 0 && v1 == 1, "back to version 1: rc {rc1}, version {v1}");
    } else {
        ensure!(rc == ENOSYS && v == 1, "set_version(2): rc {rc}, version {v}; want 0 or -ENOSYS (v2 disabled)");
    }
    let rc = num(nr::GRANT_TABLE_OP, [GNTTABOP_GET_VERSION as u64, UNMAPPED, 1, 0, 0]);
    ensure!(rc == EFAULT, "get_version with an unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn frames_via_add_to_physmap() -> R {
    let rc = map_frame(0, pages::GNT_FRAME);
    ensure!(rc == 0, "add_to_physmap(grant_table, 0): rc {rc}");
    let rc = map_frame(1, pages::GNT_FRAME + 1);
    ensure!(rc == 0, "add_to_physmap(grant_table, 1): rc {rc}");
    let (rc, q) = query(DomId::SELF);
    ensure!(rc == 0 && q.nr_frames >= 2, "query_size after mapping frame 1: nr_frames {}", q.nr_frames);
    let rc = map_frame(q.max_nr_frames as u64, pages::HOLE + 3);
    ensure!(rc == EINVAL, "frame {} (= max_nr_frames): rc {rc}, want -EINVAL", q.max_nr_frames);
    Ok(())
}

fn setup_table() -> R {
    let (_, q) = query(DomId::SELF);
    let mut frames = [0u64; 4];
    let mut st = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 2,
        status: 0x7777,
        frame_list: GuestHandle::new(frames.as_mut_ptr() as u64),
        ..Default::default()
    };
    // SAFETY: the frame list has room for 4 frames; 2 are asked for.
    let rc = unsafe { raw(nr::GRANT_TABLE_OP, [GNTTABOP_SETUP_TABLE as u64, &mut st as *mut _ as u64, 1, 0, 0]) };
    ensure!(rc == 0 && st.status == GNTST_OKAY, "2 frames: rc {rc}, status {}", st.status);
    // For a translated guest: the gfns where the frames are mapped.
    let want = [pages::gfn(pages::GNT_FRAME), pages::gfn(pages::GNT_FRAME + 1)];
    ensure!(frames[..2] == want, "frame list {:#x?}, want the gfns they are mapped at {want:#x?}", &frames[..2]);
    st.nr_frames = q.max_nr_frames + 1;
    st.status = 0x7777;
    // SAFETY: refused before anything is written (more frames than the maximum).
    let rc = unsafe { raw(nr::GRANT_TABLE_OP, [GNTTABOP_SETUP_TABLE as u64, &mut st as *mut _ as u64, 1, 0, 0]) };
    ensure!(rc == 0 && st.status == GNTST_GENERAL_ERROR, "max + 1 frames: rc {rc}, status {}", st.status);
    st.nr_frames = 1;
    st.dom = DomId(1000);
    // SAFETY: as above, for a domain that does not exist.
    let rc = unsafe { raw(nr::GRANT_TABLE_OP, [GNTTABOP_SETUP_TABLE as u64, &mut st as *mut _ as u64, 1, 0, 0]) };
    ensure!(rc == 0 && st.status == GNTST_BAD_DOMAIN, "dom 1000: rc {rc}, status {}", st.status);
    st.dom = DomId::SELF;
    // SAFETY: count 2 is refused before the argument is read.
    let rc = unsafe { raw(nr::GRANT_TABLE_OP, [GNTTABOP_SETUP_TABLE as u64, &mut st as *mut _ as u64, 2, 0, 0]) };
    ensure!(rc == EINVAL, "count 2: rc {rc}, want -EINVAL");
    let mut st = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 1,
        status: 0x7777,
        frame_list: GuestHandle::new(UNMAPPED),
        ..Default::default()
    };
    // SAFETY: the frame list is UNMAPPED.
    let rc = unsafe { raw(nr::GRANT_TABLE_OP, [GNTTABOP_SETUP_TABLE as u64, &mut st as *mut _ as u64, 1, 0, 0]) };
    ensure!(rc == 0 && st.status == GNTST_BAD_VIRT_ADDR, "unmapped frame list: rc {rc}, status {}", st.status);
    Ok(())
}

fn with_holes<T>(f: impl FnOnce() -> Result<T, Msg>) -> Result<T, Msg> {
    for i in 0..3 {
        ensure!(make_hole(pages::HOLE + i), "ballooning out scratch page {i} failed");
    }
    let r = f();
    for i in 0..3 {
        refill(pages::HOLE + i);
    }
    revoke(REF_A);
    revoke(REF_B);
    refill(pages::GRANTED);
    r
}

fn map_writable(ctx: &Ctx) -> R {
    let me = ctx.domid;
    with_holes(|| {
        let (h1, h2) = (pages::addr(pages::HOLE), pages::addr(pages::HOLE + 1));
        fw::fill(pages::addr(pages::GRANTED), 0x40);
        grant(REF_A, me, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS);
        let (st, wh) = map(me, REF_A, h1, GNTMAP_HOST_MAP);
        ensure!(st == GNTST_OKAY, "writable map: status {st}");
        let flags = entry_flags(REF_A);
        let ok = fw::holds(h1, 0x40, 0, 4096);
        fw::fill(h1, 0x41);
        let (st2, rh) = map(me, REF_A, h2, GNTMAP_HOST_MAP | GNTMAP_READONLY);
        let seen = st2 == GNTST_OKAY && fw::holds(h2, 0x41, 0, 4096);
        let u2 = if st2 == GNTST_OKAY { unmap(rh, h2) } else { GNTST_OKAY };
        let u1 = unmap(wh, h1);
        let after = entry_flags(REF_A);
        let again = unmap(wh, h1);
        ensure!(
            flags & (GTF_READING | GTF_WRITING) == GTF_READING | GTF_WRITING,
            "entry flags {flags:#x} while mapped writable"
        );
        ensure!(ok, "the mapping does not show the granted page's contents");
        ensure!(st2 == GNTST_OKAY, "a second, read-only map of the same grant: status {st2}");
        ensure!(seen, "a write through the writable mapping is not visible through the other mapping");
        ensure!(u1 == GNTST_OKAY && u2 == GNTST_OKAY, "unmap: statuses {u1}, {u2}");
        ensure!(after & (GTF_READING | GTF_WRITING) == 0, "entry flags {after:#x} after the unmaps");
        ensure!(again == GNTST_BAD_HANDLE, "unmapping twice: status {again}, want GNTST_bad_handle");
        Ok(())
    })
}

fn map_readonly(ctx: &Ctx) -> R {
    let me = ctx.domid;
    with_holes(|| {
        let h1 = pages::addr(pages::HOLE);
        fw::fill(pages::addr(pages::GRANTED), 0x50);
        grant(REF_A, me, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS | GTF_READONLY);
        let (st, h) = map(me, REF_A, h1, GNTMAP_HOST_MAP);
        if st == GNTST_OKAY {
            unmap(h, h1);
        }
        ensure!(st == GNTST_GENERAL_ERROR, "a read-only grant mapped writable: status {st}, want GNTST_general_error");
        let (st, h) = map(me, REF_A, h1, GNTMAP_HOST_MAP | GNTMAP_READONLY);
        ensure!(st == GNTST_OKAY, "a read-only grant mapped read-only: status {st}");
        let flags = entry_flags(REF_A);
        let ok = fw::holds(h1, 0x50, 0, 4096);
        let u = unmap(h, h1);
        ensure!(flags & (GTF_READING | GTF_WRITING) == GTF_READING, "entry flags {flags:#x} while mapped read-only");
        ensure!(ok, "the read-only mapping does not show the page");
        ensure!(u == GNTST_OKAY, "unmap: status {u}");
        Ok(())
    })
}

fn map_errors(ctx: &Ctx) -> R {
    let me = ctx.domid;
    with_holes(|| {
        let h1 = pages::addr(pages::HOLE);
        let (_, q) = query(DomId::SELF);
        let nr_entries = q.nr_frames * GRANT_ENTRIES_V1_PER_FRAME as u32;
        grant(REF_A, me, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS);
        let cases: [(&str, u16, u32, u32, i16); 5] = [
            ("ref = nr_entries", me, nr_entries, GNTMAP_HOST_MAP, GNTST_BAD_GNTREF),
            ("dom 1000", 1000, REF_A, GNTMAP_HOST_MAP, GNTST_BAD_DOMAIN),
            ("DOMID_SELF as the granter", DomId::SELF.0, REF_A, GNTMAP_HOST_MAP, GNTST_BAD_DOMAIN),
            ("no map flags", me, REF_A, 0, GNTST_BAD_GNTREF),
            (
                "GNTMAP_device_map from an HVM domain",
                me,
                REF_A,
                GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP,
                GNTST_GENERAL_ERROR,
            ),
        ];
        for (what, dom, r, flags, want) in cases {
            let (st, h) = map(dom, r, h1, flags);
            if st == GNTST_OKAY {
                unmap(h, h1);
            }
            ensure!(st == want, "{what}: status {st}, want {want}");
        }
        // Entries that do not grant this domain.
        grant(REF_B, me, pages::gfn(pages::GRANTED), 0);
        let (st, h) = map(me, REF_B, h1, GNTMAP_HOST_MAP);
        if st == GNTST_OKAY {
            unmap(h, h1);
        }
        ensure!(st == GNTST_GENERAL_ERROR, "an invalid entry: status {st}, want GNTST_general_error");
        grant(REF_B, 1000, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS);
        let (st, h) = map(me, REF_B, h1, GNTMAP_HOST_MAP);
        if st == GNTST_OKAY {
            unmap(h, h1);
        }
        ensure!(st == GNTST_GENERAL_ERROR, "an entry for dom 1000: status {st}, want GNTST_general_error");
        let rc = num(nr::GRANT_TABLE_OP, [GNTTABOP_MAP_GRANT_REF as u64, UNMAPPED, 1, 0, 0]);
        ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
        Ok(())
    })
}

fn unmap_errors(ctx: &Ctx) -> R {
    let me = ctx.domid;
    with_holes(|| {
        let (h1, h2) = (pages::addr(pages::HOLE), pages::addr(pages::HOLE + 1));
        let st = unmap(0x00ff_ffff, h1);
        ensure!(st == GNTST_BAD_HANDLE, "handle 0xffffff: status {st}, want GNTST_bad_handle");
        grant(REF_A, me, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS);
        let (st, h) = map(me, REF_A, h1, GNTMAP_HOST_MAP);
        ensure!(st == GNTST_OKAY, "map: status {st}");
        let wrong = unmap(h, h2);
        let right = if wrong == GNTST_OKAY { GNTST_OKAY } else { unmap(h, h1) };
        ensure!(wrong == GNTST_GENERAL_ERROR, "unmap at another address: status {wrong}, want GNTST_general_error");
        ensure!(right == GNTST_OKAY, "unmap at the right address after that: status {right}");
        Ok(())
    })
}

fn set_version_busy(ctx: &Ctx) -> R {
    let me = ctx.domid;
    with_holes(|| {
        let h1 = pages::addr(pages::HOLE);
        grant(REF_A, me, pages::gfn(pages::GRANTED), GTF_PERMIT_ACCESS);
        let (st, h) = map(me, REF_A, h1, GNTMAP_HOST_MAP);
        ensure!(st == GNTST_OKAY, "map: status {st}");
        let (rc, v) = set_version(2);
        if rc == 0 {
            set_version(1);
        }
        let u = unmap(h, h1);
        ensure!(
            rc == EBUSY || rc == ENOSYS,
            "set_version(2) with a grant mapped: rc {rc}, want -EBUSY (or -ENOSYS without v2)"
        );
        ensure!(v == 1, "version {v}");
        ensure!(u == GNTST_OKAY, "unmap: status {u}");
        Ok(())
    })
}

fn copies(ctx: &Ctx) -> R {
    let me = ctx.domid;
    let (src, dst) = (pages::addr(pages::COPY_SRC), pages::addr(pages::COPY_DST));
    fw::fill(src, 0x60);
    fw::fill(dst, 0x00);
    grant(REF_A, me, pages::gfn(pages::COPY_DST), GTF_PERMIT_ACCESS);
    let st = copy(
        GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_SRC)), DomId::SELF, 100),
        GnttabCopyPtr::by_gref(GrantRef(REF_A), DomId::SELF, 200),
        1000,
        GNTCOPY_DEST_GREF,
    );
    let flags = entry_flags(REF_A);
    revoke(REF_A);
    ensure!(st == GNTST_OKAY, "gmfn -> gref: status {st}");
    ensure!(flags & (GTF_READING | GTF_WRITING) == 0, "entry flags {flags:#x} after the copy");
    let moved = (0..1000).all(|i| fw::peek(dst, 200 + i) == fw::peek(src, 100 + i));
    let untouched = (0..200).chain(1200..4096).all(|i| fw::peek(dst, i) == 0u8.wrapping_add((i as u8).wrapping_mul(7)));
    ensure!(moved, "the copied bytes differ");
    ensure!(untouched, "bytes outside the copy changed");
    grant(REF_B, me, pages::gfn(pages::COPY_SRC), GTF_PERMIT_ACCESS | GTF_READONLY);
    let st = copy(
        GnttabCopyPtr::by_gref(GrantRef(REF_B), DomId::SELF, 0),
        GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_DST)), DomId::SELF, 0),
        4096,
        GNTCOPY_SOURCE_GREF,
    );
    revoke(REF_B);
    ensure!(st == GNTST_OKAY, "gref (read-only grant) -> gmfn, 4096 bytes: status {st}");
    ensure!(fw::holds(dst, 0x60, 0, 4096), "the page copied through the read-only grant differs");
    Ok(())
}

fn copy_errors(ctx: &Ctx) -> R {
    let me = ctx.domid;
    let src = || GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_SRC)), DomId::SELF, 0);
    let dst = || GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_DST)), DomId::SELF, 0);
    let with_offset = |mut p: GnttabCopyPtr, o: u16| {
        p.offset = o;
        p
    };
    grant(REF_A, me, pages::gfn(pages::COPY_DST), GTF_PERMIT_ACCESS | GTF_READONLY);
    let (_, q) = query(DomId::SELF);
    let beyond = q.nr_frames * GRANT_ENTRIES_V1_PER_FRAME as u32;
    let cases: [(&str, GnttabCopyPtr, GnttabCopyPtr, u16, u16, i16); 8] = [
        ("source crossing its page", with_offset(src(), 4000), dst(), 200, 0, GNTST_BAD_COPY_ARG),
        ("destination crossing its page", src(), with_offset(dst(), 3997), 100, 0, GNTST_BAD_COPY_ARG),
        ("length 4097", src(), dst(), 4097, 0, GNTST_BAD_COPY_ARG),
        (
            "a frame named with the domain's own id, not DOMID_SELF",
            GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_SRC)), DomId(me), 0),
            dst(),
            16,
            0,
            GNTST_PERMISSION_DENIED,
        ),
        (
            "a grant ref beyond the table",
            GnttabCopyPtr::by_gref(GrantRef(beyond), DomId::SELF, 0),
            dst(),
            16,
            GNTCOPY_SOURCE_GREF,
            GNTST_BAD_GNTREF,
        ),
        (
            "a grant of dom 1000",
            GnttabCopyPtr::by_gref(GrantRef(REF_A), DomId(1000), 0),
            dst(),
            16,
            GNTCOPY_SOURCE_GREF,
            GNTST_BAD_DOMAIN,
        ),
        (
            "writing through a read-only grant",
            src(),
            GnttabCopyPtr::by_gref(GrantRef(REF_A), DomId::SELF, 0),
            16,
            GNTCOPY_DEST_GREF,
            GNTST_GENERAL_ERROR,
        ),
        (
            "a frame with no memory",
            GnttabCopyPtr::by_gmfn(XenPfn(0xf_ffff_ffff), DomId::SELF, 0),
            dst(),
            16,
            0,
            GNTST_BAD_PAGE,
        ),
    ];
    let mut r = Ok(());
    for (what, s, d, len, flags, want) in cases {
        let st = copy(s, d, len, flags);
        if st != want {
            r = Err(Msg::new(format_args!("{what}: status {st}, want {want}")));
            break;
        }
    }
    revoke(REF_A);
    r?;
    let mut none: [GnttabCopy; 0] = [];
    let rc = gnttab_n(GNTTABOP_COPY, &mut none);
    ensure!(rc == 0, "no copies: rc {rc}");
    Ok(())
}

fn pv_only_ops() -> R {
    for (what, cmd) in [
        ("dump_table", GNTTABOP_DUMP_TABLE),
        ("transfer", GNTTABOP_TRANSFER),
        ("unmap_and_replace", GNTTABOP_UNMAP_AND_REPLACE),
        ("get_status_frames", GNTTABOP_GET_STATUS_FRAMES),
        ("cache_flush", GNTTABOP_CACHE_FLUSH),
        ("op 100", 100),
    ] {
        let rc = num(nr::GRANT_TABLE_OP, [cmd as u64, UNMAPPED, 1, 0, 0]);
        ensure!(rc == ENOSYS, "{what}: rc {rc}, want -ENOSYS for an HVM domain");
    }
    let rc = num(nr::GRANT_TABLE_OP, [GNTTABOP_QUERY_SIZE as u64, UNMAPPED, 0x8000_0000, 0, 0]);
    ensure!(rc == EINVAL, "a negative count: rc {rc}, want -EINVAL");
    Ok(())
}

/// The `gnt-` checks (and `mem-add-to-physmap-grant-frames`).
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("gnt-query-size", query_size());
    t.run("gnt-versions", versions());
    t.run("mem-add-to-physmap-grant-frames", frames_via_add_to_physmap());
    t.run("gnt-setup-table", setup_table());
    t.run("gnt-map-writable", map_writable(ctx));
    t.run("gnt-map-readonly", map_readonly(ctx));
    t.run("gnt-map-errors", map_errors(ctx));
    t.run("gnt-unmap-errors", unmap_errors(ctx));
    t.run("gnt-set-version-busy", set_version_busy(ctx));
    t.run("gnt-copy", copies(ctx));
    t.run("gnt-copy-errors", copy_errors(ctx));
    t.run("gnt-pv-only-ops", pv_only_ops());
}
