//! Unit tests of [`GrantTable`]: every status and errno path, for self-grants and two-domain
//! grants.

use std::vec::Vec;

use keel_mm::{Gfn, Gpa, Pfn};
use xen_abi::errno::Errno;
use xen_abi::grant_table::{
    GrantEntryV1, GNTMAP_APPLICATION_MAP, GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY,
    GTF_ACCEPT_TRANSFER, GTF_PCD, GTF_PERMIT_ACCESS, GTF_PWT, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_WRITING,
};
use xen_abi::memory::XENMAPIDX_GRANT_TABLE_STATUS;
use xen_abi::{DomId, GrantHandle, GrantRef, XenPfn};

use super::*;
use crate::testutil::{
    flags, grant, guest_end_access, guest_write, table, table_with, Table, TestMemory, TestSource, PAGED_OUT_GFN,
    RAM_GFNS,
};
use crate::{Access, GrantStatus, MAPTRACK_PER_FRAME, MAX_PINS};

const RO: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;
const RW: u32 = GNTMAP_HOST_MAP;
const A: u16 = 1;
const B: u16 = 2;

fn req(gref: u32, flags: u32, host_gfn: u64) -> MapRequest {
    MapRequest { gref: GrantRef(gref), flags, host_addr: Gpa::new(host_gfn << 12) }
}

/// Granter A, mapper B, A's memory.
fn pair() -> (Table, Table, TestMemory) {
    (table(A), table(B), TestMemory::new(A))
}

fn map(b: &mut Table, a: &mut Table, mem: &mut TestMemory, r: MapRequest) -> Result<Mapped, GrantStatus> {
    b.map(Peer::Other(a), mem, r)
}

/// Unmaps and finishes at once.
fn unmap(b: &mut Table, a: &mut Table, mem: &mut TestMemory, h: GrantHandle, host_gfn: u64) -> Result<(), GrantStatus> {
    let p = b.unmap(h, Gpa::new(host_gfn << 12))?.expect("host_addr was not 0");
    a.finish_unmap(p, mem).expect("finish on the granter");
    Ok(())
}

/// Everything observable about two tables and a memory.
#[derive(Debug, PartialEq)]
struct Snapshot {
    entries: Vec<GrantEntryV1>,
    active: Vec<(GrantRef, ActiveGrant)>,
    mappings: Vec<(GrantHandle, Mapping)>,
    refs: std::collections::BTreeMap<Pfn, usize>,
    maptrack_limit: u32,
}

fn snapshot(granter: &Table, mapper: &Table, mem: &TestMemory) -> Snapshot {
    Snapshot {
        entries: (0..16).map(|r| granter.entry(GrantRef(r)).unwrap()).collect(),
        active: granter.pinned_grants().collect(),
        mappings: mapper.mappings().collect(),
        refs: mem.refs.clone(),
        maptrack_limit: mapper.maptrack_limit(),
    }
}

// ---- Creation, size, frames ---------------------------------------------------------------------

#[test]
fn new_checks_the_config_as_grant_table_init() {
    let mut src = TestSource::default();
    let bad = |c: GrantConfig| GrantTable::new(DomId(1), c, &mut TestSource::default()).err();
    let d = GrantConfig::default();
    assert_eq!(bad(GrantConfig { max_version: 0, ..d }), Some(Errno::EINVAL));
    assert_eq!(bad(GrantConfig { max_version: 2, ..d }), Some(Errno::EINVAL));
    assert_eq!(bad(GrantConfig { max_grant_frames: 0, ..d }), Some(Errno::EINVAL));
    assert_eq!(bad(GrantConfig { max_grant_frames: (1 << 23) + 1, ..d }), Some(Errno::EINVAL));
    assert_eq!(bad(GrantConfig { max_maptrack_frames: 1 << 24, ..d }), Some(Errno::EINVAL));
    assert!(bad(GrantConfig { max_grant_frames: 1 << 23, max_maptrack_frames: (1 << 24) - 1, ..d }).is_none());
    assert_eq!(
        GrantTable::new(DomId(1), d, &mut TestSource::limited(0)).err(),
        Some(Errno::ENOMEM),
        "the first frame is allocated at creation"
    );

    let t = GrantTable::new(DomId(7), d, &mut src).unwrap();
    assert_eq!(src.allocated, 1);
    assert_eq!(t.domid(), DomId(7));
    assert_eq!(t.nr_frames(), 1);
    assert_eq!(t.nr_entries(), 512);
    assert_eq!(t.query_size(), QuerySize { nr_frames: 1, max_nr_frames: 64 });
    assert_eq!(d, GrantConfig { max_grant_frames: 64, max_maptrack_frames: 1024, max_version: 1 });
    assert_eq!(t.entry(GrantRef(511)), Some(GrantEntryV1::default()));
    assert_eq!(t.entry(GrantRef(512)), None);
}

#[test]
fn setup_table_grows_up_to_the_maximum() {
    let mut src = TestSource::default();
    let mut t = GrantTable::new(DomId(1), GrantConfig { max_grant_frames: 4, ..Default::default() }, &mut src).unwrap();
    assert_eq!(t.setup_table(0, &mut src), Ok(()));
    assert_eq!(t.setup_table(1, &mut src), Ok(()));
    assert_eq!(t.nr_frames(), 1);
    assert_eq!(t.setup_table(5, &mut src), Err(GrantStatus::GeneralError));
    assert_eq!(t.nr_frames(), 1);
    assert_eq!(t.setup_table(3, &mut src), Ok(()));
    assert_eq!((t.nr_frames(), t.nr_entries(), src.allocated), (3, 1536, 3));
    assert_eq!(t.setup_table(2, &mut src), Ok(()), "never shrinks");
    assert_eq!(t.nr_frames(), 3);
    assert_eq!(t.query_size(), QuerySize { nr_frames: 3, max_nr_frames: 4 });
    // The frame list: gfns for mapped frames, INVALID_M2P_ENTRY for the others.
    assert!(t.set_frame_gfn(1, Some(Gfn::new(0xf000))));
    let list: Vec<XenPfn> = t.frame_list(3).collect();
    assert_eq!(list, [XenPfn(u64::MAX), XenPfn(0xf000), XenPfn(u64::MAX)]);
    assert_eq!(t.frame_list(9).count(), 3);
}

#[test]
fn growth_is_all_or_nothing() {
    let mut src = TestSource::limited(3);
    let mut t = GrantTable::new(DomId(1), GrantConfig::default(), &mut src).unwrap();
    assert_eq!(t.setup_table(5, &mut src), Err(GrantStatus::GeneralError));
    assert_eq!(t.nr_frames(), 1);
    assert_eq!((src.allocated, src.freed), (3, 2), "the frames of the failed growth went back");
    assert_eq!(t.add_to_physmap(4, &mut src).err(), Some(Errno::EINVAL), "Xen: failed growth is EINVAL");
    assert_eq!(t.nr_frames(), 1);
}

#[test]
fn add_to_physmap_grows_to_the_index() {
    let mut src = TestSource::default();
    let mut t = GrantTable::new(DomId(1), GrantConfig { max_grant_frames: 8, ..Default::default() }, &mut src).unwrap();
    let f = t.add_to_physmap(0, &mut src).unwrap();
    assert_eq!((f.index, f.current_gfn), (0, None));
    assert_eq!(t.nr_frames(), 1);
    let f = t.add_to_physmap(5, &mut src).unwrap();
    assert_eq!(f.index, 5);
    assert_eq!(t.nr_frames(), 6);
    assert_eq!(t.add_to_physmap(7, &mut src).unwrap().index, 7);
    assert_eq!(t.add_to_physmap(8, &mut src).err(), Some(Errno::EINVAL));
    assert_eq!(t.add_to_physmap(u64::from(u32::MAX), &mut src).err(), Some(Errno::EINVAL));
    // v2 status frames do not exist for a v1 table.
    assert_eq!(t.add_to_physmap(XENMAPIDX_GRANT_TABLE_STATUS, &mut src).err(), Some(Errno::EINVAL));
    assert_eq!(t.add_to_physmap(XENMAPIDX_GRANT_TABLE_STATUS | 1, &mut src).err(), Some(Errno::EINVAL));
    // Xen takes the index as a 32-bit number.
    assert_eq!(t.add_to_physmap((1 << 32) | 3, &mut src).unwrap().index, 3);
    assert_eq!(t.nr_frames(), 8);

    // keel records where it mapped a frame; a second add_to_physmap reports it.
    assert!(t.set_frame_gfn(3, Some(Gfn::new(0xfee00))));
    assert_eq!(t.add_to_physmap(3, &mut src).unwrap().current_gfn, Some(Gfn::new(0xfee00)));
    assert_eq!(t.frame_at_gfn(Gfn::new(0xfee00)), Some(3));
    assert_eq!(t.frame_gfn(3), Some(Gfn::new(0xfee00)));
    assert!(t.set_frame_gfn(3, None));
    assert_eq!(t.frame_at_gfn(Gfn::new(0xfee00)), None);
    assert!(!t.set_frame_gfn(8, Some(Gfn::new(1))));
    assert!(std::ptr::eq(t.add_to_physmap(2, &mut src).unwrap().frame, t.frame(2).unwrap()));
}

#[test]
fn versions_as_for_a_v1_only_domain() {
    let (mut a, mut b, mut mem) = pair();
    assert_eq!(a.version(), 1);
    assert_eq!(a.set_version(1), SetVersion { result: Ok(()), version: 1 });
    assert_eq!(a.set_version(2), SetVersion { result: Err(Errno::ENOSYS), version: 1 });
    for v in [0, 3, u32::MAX] {
        assert_eq!(a.set_version(v), SetVersion { result: Err(Errno::EINVAL), version: 1 });
    }
    // With grants in use (beyond the reserved eight), version 1 is still fine.
    grant(&a, 100, B, 0x10, false);
    map(&mut b, &mut a, &mut mem, req(100, RW, 0x500)).unwrap();
    assert_eq!(a.set_version(1).result, Ok(()));
    assert_eq!(a.set_version(2).result, Err(Errno::ENOSYS));
}

// ---- Map --------------------------------------------------------------------------------------

#[test]
fn map_flags_are_checked_first() {
    let (mut a, mut b, mut mem) = pair();
    assert_eq!(check_map_flags(0), Err(GrantStatus::BadGntref));
    assert_eq!(check_map_flags(GNTMAP_READONLY), Err(GrantStatus::BadGntref));
    assert_eq!(check_map_flags(GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE), Err(GrantStatus::BadGntref));
    assert_eq!(check_map_flags(GNTMAP_DEVICE_MAP), Err(GrantStatus::GeneralError));
    assert_eq!(check_map_flags(RW | GNTMAP_DEVICE_MAP), Err(GrantStatus::GeneralError));
    assert_eq!(check_map_flags(RO | GNTMAP_APPLICATION_MAP), Err(GrantStatus::GeneralError));
    assert_eq!(check_map_flags(RW | GNTMAP_CONTAINS_PTE), Err(GrantStatus::GeneralError));
    assert_eq!(check_map_flags(RO), Ok(()));
    // map repeats them, before even the reference is looked at.
    assert_eq!(map(&mut b, &mut a, &mut mem, req(9999, 0, 1)), Err(GrantStatus::BadGntref));
    assert_eq!(map(&mut b, &mut a, &mut mem, req(9999, RW | GNTMAP_DEVICE_MAP, 1)), Err(GrantStatus::GeneralError));
    assert_eq!(b.mapping_count(), 0);
}

#[test]
fn a_two_domain_map_and_unmap() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 10, B, 0x42, false);
    let m = map(&mut b, &mut a, &mut mem, req(10, RW, 0x500)).unwrap();
    assert_eq!(
        m,
        Mapped {
            handle: GrantHandle(0),
            host_gfn: Gfn::new(0x500),
            gfn: Gfn::new(0x42),
            mfn: mem.mfn(0x42),
            access: Access::Writable
        }
    );
    assert_eq!(flags(&a, 10), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    assert_eq!(
        a.active(GrantRef(10)),
        Some(ActiveGrant {
            grantee: DomId(B),
            gfn: Gfn::new(0x42),
            mfn: mem.mfn(0x42),
            maps_ro: 0,
            maps_rw: 1,
            copies_ro: 0,
            copies_rw: 0
        })
    );
    assert_eq!(a.pinned_count(), 1);
    assert_eq!(mem.total_refs(), 1);
    assert_eq!(
        b.mapping(m.handle),
        Some(Mapping {
            granter: DomId(A),
            gref: GrantRef(10),
            access: Access::Writable,
            host_gfn: Gfn::new(0x500),
            mfn: mem.mfn(0x42)
        })
    );

    let p = b.unmap(m.handle, Gpa::new(0x500_123)).unwrap().unwrap();
    assert_eq!(p.handle(), m.handle);
    assert_eq!(
        p.mapping(),
        Mapping {
            granter: DomId(A),
            gref: GrantRef(10),
            access: Access::Writable,
            host_gfn: Gfn::new(0x500),
            mfn: mem.mfn(0x42)
        }
    );
    assert_eq!((p.granter(), p.gref(), p.access()), (DomId(A), GrantRef(10), Access::Writable));
    assert_eq!((p.host_gfn(), p.mfn()), (Gfn::new(0x500), mem.mfn(0x42)));
    // Until keel finishes (after its TLB flush) the granter still sees the grant in use.
    assert_eq!(flags(&a, 10), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    assert_eq!(b.mapping(m.handle), None);
    a.finish_unmap(p, &mut mem).unwrap();
    assert_eq!(flags(&a, 10), GTF_PERMIT_ACCESS);
    assert_eq!(a.pinned_count(), 0);
    assert_eq!(mem.total_refs(), 0);
    assert!(guest_end_access(&a, GrantRef(10)));
}

#[test]
fn self_grants() {
    let mut a = table(A);
    let mut mem = TestMemory::new(A);
    grant(&a, 3, A, 0x77, true);
    let m = a.map(Peer::Same, &mut mem, req(3, RO, 0x900)).unwrap();
    assert_eq!((m.gfn, m.access), (Gfn::new(0x77), Access::ReadOnly));
    assert_eq!(flags(&a, 3), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    assert_eq!(a.mapping(m.handle).unwrap().granter, DomId(A));
    assert_eq!(a.map(Peer::Same, &mut mem, req(3, RW, 0x901)), Err(GrantStatus::GeneralError));
    let p = a.unmap(m.handle, Gpa::new(0x900 << 12)).unwrap().unwrap();
    a.finish_unmap(p, &mut mem).unwrap();
    assert_eq!(flags(&a, 3), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!((a.pinned_count(), a.mapping_count(), mem.total_refs()), (0, 0, 0));

    // A self-map needs the entry to name the domain itself.
    grant(&a, 4, B, 0x78, false);
    assert_eq!(a.map(Peer::Same, &mut mem, req(4, RW, 0x900)), Err(GrantStatus::GeneralError));
    assert_eq!(flags(&a, 4), GTF_PERMIT_ACCESS);
}

#[test]
fn map_refuses_what_xen_refuses() {
    let (mut a, mut b, mut mem) = pair();
    let base = snapshot(&a, &b, &mem);
    let mut refused = |a: &mut Table, b: &mut Table, gref: u32, flags: u32, status: GrantStatus| {
        assert_eq!(map(b, a, &mut mem, req(gref, flags, 0x500)), Err(status), "ref {gref} flags {flags:#x}");
    };
    // Beyond the table (one frame: 512 entries).
    refused(&mut a, &mut b, 512, RO, GrantStatus::BadGntref);
    refused(&mut a, &mut b, u32::MAX, RO, GrantStatus::BadGntref);
    // Not granted, granted to someone else, or not a permit_access entry.
    refused(&mut a, &mut b, 1, RO, GrantStatus::GeneralError);
    grant(&a, 2, 3, 0x10, false);
    refused(&mut a, &mut b, 2, RO, GrantStatus::GeneralError);
    guest_write(&a, GrantRef(3), GrantEntryV1 { flags: GTF_ACCEPT_TRANSFER, domid: DomId(B), frame: 0x10 });
    refused(&mut a, &mut b, 3, RO, GrantStatus::GeneralError);
    guest_write(&a, GrantRef(4), GrantEntryV1 { flags: 3, domid: DomId(B), frame: 0x10 }); // transitive
    refused(&mut a, &mut b, 4, RO, GrantStatus::GeneralError);
    guest_write(
        &a,
        GrantRef(5),
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE, domid: DomId(B), frame: 0x10 },
    );
    refused(&mut a, &mut b, 5, RO, GrantStatus::GeneralError);
    // A read-only grant mapped writable.
    grant(&a, 6, B, 0x10, true);
    refused(&mut a, &mut b, 6, RW, GrantStatus::GeneralError);
    // Frames that are not the granter's RAM.
    grant(&a, 7, B, RAM_GFNS as u32, false);
    refused(&mut a, &mut b, 7, RW, GrantStatus::BadPage);
    grant(&a, 8, B, PAGED_OUT_GFN as u32, false);
    refused(&mut a, &mut b, 8, RO, GrantStatus::Eagain);
    // Flags create_grant_p2m_mapping refuses after the pin (guest-available bits, unknown bits).
    grant(&a, 9, B, 0x10, false);
    refused(&mut a, &mut b, 9, RW | 1 << 16, GrantStatus::GeneralError);
    refused(&mut a, &mut b, 9, RO | 1 << 5, GrantStatus::GeneralError);

    // Nothing changed: no pins, no handles, no references, status bits clear...
    let after = snapshot(&a, &b, &mem);
    assert_eq!(after.active, base.active);
    assert_eq!(after.mappings, base.mappings);
    assert_eq!(after.refs, base.refs);
    for r in 0..16 {
        assert_eq!(flags(&a, r) & (GTF_READING | GTF_WRITING), 0, "ref {r}");
    }
    // ...and the handle the next map gets is still the first.
    assert_eq!(map(&mut b, &mut a, &mut mem, req(9, RW, 0x500)).unwrap().handle, GrantHandle(0));
}

#[test]
fn cache_attributes_do_not_matter_for_ram() {
    let (mut a, mut b, mut mem) = pair();
    guest_write(
        &a,
        GrantRef(1),
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_PWT | GTF_PCD, domid: DomId(B), frame: 5 },
    );
    assert!(map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).is_ok());
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_PWT | GTF_PCD | GTF_READING);
}

#[test]
fn a_full_maptrack_is_no_space_before_the_reference_is_checked() {
    let mut a = table(A);
    let mut b = table_with(B, GrantConfig { max_maptrack_frames: 0, ..Default::default() });
    let mut mem = TestMemory::new(A);
    grant(&a, 1, B, 5, false);
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)), Err(GrantStatus::NoSpace));
    assert_eq!(map(&mut b, &mut a, &mut mem, req(9999, RO, 0x500)), Err(GrantStatus::NoSpace));
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS);

    let mut b = table_with(B, GrantConfig { max_maptrack_frames: 1, ..Default::default() });
    // 256 handles; a grant takes at most MAX_PINS of each kind, so use two grants.
    grant(&a, 2, B, 6, false);
    for i in 0..MAPTRACK_PER_FRAME {
        let (gref, flags) = if i < 128 { (1, RO) } else { (2, RW) };
        assert_eq!(
            map(&mut b, &mut a, &mut mem, req(gref, flags, 0x500 + u64::from(i))).unwrap().handle,
            GrantHandle(i)
        );
    }
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RO, 0x600)), Err(GrantStatus::NoSpace));
    assert_eq!(b.maptrack_limit(), 256);
    unmap(&mut b, &mut a, &mut mem, GrantHandle(17), 0x500 + 17).unwrap();
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RO, 0x600)).unwrap().handle, GrantHandle(17));
}

#[test]
fn pins_stop_at_128_per_kind() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    for i in 0..u64::from(MAX_PINS) {
        map(&mut b, &mut a, &mut mem, req(1, RO, 0x1000 + i)).unwrap();
    }
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RO, 0x2000)), Err(GrantStatus::GeneralError));
    // Writable pins are counted apart.
    for i in 0..u64::from(MAX_PINS) {
        map(&mut b, &mut a, &mut mem, req(1, RW, 0x3000 + i)).unwrap();
    }
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RW, 0x2000)), Err(GrantStatus::GeneralError));
    // Copies share the counts with mappings (Xen's GNTPIN_hstr/hstw).
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::ReadOnly, &mut mem), Err(GrantStatus::GeneralError));
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem), Err(GrantStatus::GeneralError));
    let act = a.active(GrantRef(1)).unwrap();
    assert_eq!((act.maps_ro, act.maps_rw, act.readers(), act.writers()), (128, 128, 128, 128));
    assert_eq!(mem.total_refs(), 1, "one frame reference per pinned grant");
    unmap(&mut b, &mut a, &mut mem, GrantHandle(0), 0x1000).unwrap();
    assert!(a.acquire_copy(DomId(B), GrantRef(1), Access::ReadOnly, &mut mem).is_ok());
}

#[test]
fn the_first_pin_captures_grantee_and_frame() {
    let (mut a, mut b, mut mem) = pair();
    let mut c = table(3);
    grant(&a, 1, B, 5, false);
    let m1 = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    // The guest rewrites the entry while it is pinned (misbehaving, but allowed to).
    grant(&a, 1, 3, 6, false);
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS, "the guest even cleared GTF_reading");
    // B still maps the captured frame; the new grantee is refused while B has it pinned.
    let m2 = map(&mut b, &mut a, &mut mem, req(1, RO, 0x501)).unwrap();
    assert_eq!((m2.gfn, m2.mfn), (Gfn::new(5), mem.mfn(5)));
    assert_eq!(c.map(Peer::Other(&mut a), &mut mem, req(1, RO, 0x500)), Err(GrantStatus::GeneralError));
    // A first writer on a pinned grant only checks GTF_readonly (and sets the bits again).
    let m3 = map(&mut b, &mut a, &mut mem, req(1, RW, 0x502)).unwrap();
    assert_eq!(m3.gfn, Gfn::new(5));
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    for (h, g) in [(m1.handle, 0x500), (m2.handle, 0x501), (m3.handle, 0x502)] {
        unmap(&mut b, &mut a, &mut mem, h, g).unwrap();
    }
    // Now the entry as the guest rewrote it applies.
    let m = c.map(Peer::Other(&mut a), &mut mem, req(1, RO, 0x500)).unwrap();
    assert_eq!(m.gfn, Gfn::new(6));
    assert_eq!(mem.total_refs(), 1);
}

#[test]
fn a_readonly_flag_set_while_pinned_stops_new_writers() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let m = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    guest_write(
        &a,
        GrantRef(1),
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING, domid: DomId(B), frame: 5 },
    );
    assert_eq!(map(&mut b, &mut a, &mut mem, req(1, RW, 0x501)), Err(GrantStatus::GeneralError));
    // The failed writer left GTF_reading alone: the read-only mapping still holds it.
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    unmap(&mut b, &mut a, &mut mem, m.handle, 0x500).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READONLY);
}

#[test]
fn status_bits_follow_the_pins() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let r1 = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    let w1 = map(&mut b, &mut a, &mut mem, req(1, RW, 0x501)).unwrap();
    let w2 = map(&mut b, &mut a, &mut mem, req(1, RW, 0x502)).unwrap();
    let both = GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING;
    assert_eq!(flags(&a, 1), both);
    unmap(&mut b, &mut a, &mut mem, w1.handle, 0x501).unwrap();
    assert_eq!(flags(&a, 1), both, "one writer left");
    unmap(&mut b, &mut a, &mut mem, w2.handle, 0x502).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING, "readers only");
    assert!(!guest_end_access(&a, GrantRef(1)), "the guest cannot end access while it is mapped");
    unmap(&mut b, &mut a, &mut mem, r1.handle, 0x500).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS);
    assert!(guest_end_access(&a, GrantRef(1)));
}

#[test]
fn undo_map_restores_everything() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    grant(&a, 2, B, 6, false);
    let keep = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    for (gref, flags) in [(1, RW), (1, RO), (2, RW), (2, RO)] {
        let before = snapshot(&a, &b, &mem);
        let m = map(&mut b, &mut a, &mut mem, req(gref, flags, 0x600)).unwrap();
        // keel's p2m insertion failed.
        let p = b.undo_map(m.handle).unwrap();
        a.finish_unmap(p, &mut mem).unwrap();
        assert_eq!(snapshot(&a, &b, &mem), before, "ref {gref} flags {flags:#x}");
        // The next map gets the same handle again.
        let again = map(&mut b, &mut a, &mut mem, req(gref, flags, 0x600)).unwrap();
        assert_eq!(again.handle, m.handle);
        let p = b.undo_map(again.handle).unwrap();
        a.finish_unmap(p, &mut mem).unwrap();
    }
    assert_eq!(b.undo_map(GrantHandle(1)), Err(GrantStatus::BadHandle));
    assert_eq!(b.undo_map(GrantHandle(u32::MAX)), Err(GrantStatus::BadHandle));
    unmap(&mut b, &mut a, &mut mem, keep.handle, 0x500).unwrap();
    assert_eq!(mem.total_refs(), 0);
}

// ---- Unmap ------------------------------------------------------------------------------------

#[test]
fn unmap_statuses() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let m = map(&mut b, &mut a, &mut mem, req(1, RW, 0x500)).unwrap();
    // Never handed out, beyond the maptrack, or free.
    assert_eq!(b.unmap(GrantHandle(1), Gpa::new(0x500 << 12)), Err(GrantStatus::BadHandle));
    assert_eq!(b.unmap(GrantHandle(256), Gpa::new(0x500 << 12)), Err(GrantStatus::BadHandle));
    assert_eq!(b.unmap(GrantHandle(u32::MAX), Gpa::new(0x500 << 12)), Err(GrantStatus::BadHandle));
    // Another address: Xen finds no grant mapping of the frame there.
    assert_eq!(b.unmap(m.handle, Gpa::new(0x501 << 12)), Err(GrantStatus::GeneralError));
    // Address 0: nothing is done, and that is a success.
    assert_eq!(b.unmap(m.handle, Gpa::new(0)), Ok(None));
    assert!(b.mapping(m.handle).is_some());
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    // The granter's table only finishes its own unmaps.
    let p = b.unmap(m.handle, Gpa::new((0x500 << 12) + 0xfff)).unwrap().unwrap();
    let mut other = table(3);
    let p = other.finish_unmap(p, &mut mem).unwrap_err();
    assert_eq!(b.unmap(m.handle, Gpa::new(0x500 << 12)), Err(GrantStatus::BadHandle), "already unmapped");
    a.finish_unmap(p, &mut mem).unwrap();
    // Were the crate ever to make a second one, finishing it would find no pin.
    let forged = PendingUnmap::new(
        m.handle,
        Mapping {
            granter: DomId(A),
            gref: GrantRef(1),
            access: Access::Writable,
            host_gfn: Gfn::new(0x500),
            mfn: mem.mfn(5),
        },
    );
    assert!(a.finish_unmap(forged, &mut mem).is_err());
    assert_eq!((a.pinned_count(), mem.total_refs()), (0, 0));
}

#[test]
fn self_map_of_frame_zero_at_address_zero_cannot_be_unmapped_by_address() {
    // Xen's host_addr == 0 rule applies even when the mapping is at gfn 0.
    let mut a = table(A);
    let mut mem = TestMemory::new(A);
    grant(&a, 1, A, 0, false);
    let m = a.map(Peer::Same, &mut mem, req(1, RW, 0)).unwrap();
    assert_eq!(a.unmap(m.handle, Gpa::new(0)), Ok(None));
    let p = a.release_next_mapping().unwrap();
    a.finish_unmap(p, &mut mem).unwrap();
    assert_eq!(mem.total_refs(), 0);
}

// ---- Copy -------------------------------------------------------------------------------------

#[test]
fn copy_acquire_and_release() {
    let (mut a, _, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let src = a.acquire_copy(DomId(B), GrantRef(1), Access::ReadOnly, &mut mem).unwrap();
    assert_eq!(src, CopyGrant::new(DomId(A), GrantRef(1), Access::ReadOnly, Gfn::new(5), mem.mfn(5)));
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING);
    let dst = a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let act = a.active(GrantRef(1)).unwrap();
    assert_eq!((act.copies_ro, act.copies_rw, act.maps_ro, act.maps_rw), (1, 1, 0, 0));
    a.release_copy(dst, &mut mem).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING);
    let mut other = table(3);
    let src = other.release_copy(src, &mut mem).unwrap_err();
    a.release_copy(src, &mut mem).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS);
    assert_eq!((a.pinned_count(), mem.total_refs()), (0, 0));
}

#[test]
fn copy_refuses_what_xen_refuses() {
    let (mut a, _, mut mem) = pair();
    let mut acq = |a: &mut Table, gref: u32, access| a.acquire_copy(DomId(B), GrantRef(gref), access, &mut mem);
    assert_eq!(acq(&mut a, 512, Access::ReadOnly).err(), Some(GrantStatus::BadGntref));
    assert_eq!(acq(&mut a, 1, Access::ReadOnly).err(), Some(GrantStatus::GeneralError));
    grant(&a, 2, 3, 5, false);
    assert_eq!(acq(&mut a, 2, Access::ReadOnly).err(), Some(GrantStatus::GeneralError));
    grant(&a, 3, B, 5, true);
    assert_eq!(acq(&mut a, 3, Access::Writable).err(), Some(GrantStatus::GeneralError));
    grant(&a, 4, B, RAM_GFNS as u32 + 1, false);
    assert_eq!(acq(&mut a, 4, Access::Writable).err(), Some(GrantStatus::BadPage));
    grant(&a, 5, B, PAGED_OUT_GFN as u32, false);
    assert_eq!(acq(&mut a, 5, Access::ReadOnly).err(), Some(GrantStatus::Eagain));
    for r in 1..6 {
        assert_eq!(flags(&a, r) & (GTF_READING | GTF_WRITING), 0);
    }
    // A sub-page flag is not part of the type check for copies.
    guest_write(&a, GrantRef(6), GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE, domid: DomId(B), frame: 5 });
    let g = acq(&mut a, 6, Access::ReadOnly).unwrap();
    a.release_copy(g, &mut mem).unwrap();
    assert_eq!((a.pinned_count(), mem.total_refs()), (0, 0));
}

#[test]
fn a_first_writing_copy_rechecks_the_frame() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let m = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    // Same frame: fine.
    let g = a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem).unwrap();
    a.release_copy(g, &mut mem).unwrap();
    // The guest moved the grant to another frame while pinned: a map does not care, a writing
    // copy does (and leaves GTF_writing clear again).
    guest_write(&a, GrantRef(1), GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READING, domid: DomId(B), frame: 6 });
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem), Err(GrantStatus::GeneralError));
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING);
    guest_write(
        &a,
        GrantRef(1),
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READING, domid: DomId(B), frame: PAGED_OUT_GFN as u32 },
    );
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem), Err(GrantStatus::Eagain));
    // Reading copies use the pinned frame without looking.
    let g = a.acquire_copy(DomId(B), GrantRef(1), Access::ReadOnly, &mut mem).unwrap();
    assert_eq!(g.mfn(), mem.mfn(5));
    a.release_copy(g, &mut mem).unwrap();
    let w = map(&mut b, &mut a, &mut mem, req(1, RW, 0x501)).unwrap();
    assert_eq!(w.mfn, mem.mfn(5));
    for (h, gfn) in [(m.handle, 0x500), (w.handle, 0x501)] {
        unmap(&mut b, &mut a, &mut mem, h, gfn).unwrap();
    }
    assert_eq!((a.pinned_count(), mem.total_refs()), (0, 0));
}

#[test]
fn copies_and_maps_share_the_grant() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    let g = a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem).unwrap();
    let m = map(&mut b, &mut a, &mut mem, req(1, RO, 0x500)).unwrap();
    a.release_copy(g, &mut mem).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS | GTF_READING, "the mapping still reads");
    // A copy by another domain is refused while B has it pinned.
    assert_eq!(a.acquire_copy(DomId(3), GrantRef(1), Access::ReadOnly, &mut mem), Err(GrantStatus::GeneralError));
    unmap(&mut b, &mut a, &mut mem, m.handle, 0x500).unwrap();
    assert_eq!(flags(&a, 1), GTF_PERMIT_ACCESS);
    assert_eq!(mem.total_refs(), 0);
}

#[test]
fn self_copy() {
    let mut a = table(A);
    let mut mem = TestMemory::new(A);
    grant(&a, 9, A, 5, false);
    let g = a.acquire_copy(DomId(A), GrantRef(9), Access::Writable, &mut mem).unwrap();
    assert_eq!(flags(&a, 9), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    a.release_copy(g, &mut mem).unwrap();
    assert_eq!(flags(&a, 9), GTF_PERMIT_ACCESS);
}

// ---- Swap -------------------------------------------------------------------------------------

#[test]
fn swap_grant_ref() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    grant(&a, 2, 3, 6, true);
    assert_eq!(a.swap_grant_ref(GrantRef(1), GrantRef(512)), Err(GrantStatus::BadGntref));
    assert_eq!(a.swap_grant_ref(GrantRef(512), GrantRef(1)), Err(GrantStatus::BadGntref));
    assert_eq!(a.swap_grant_ref(GrantRef(1), GrantRef(1)), Ok(()));
    assert_eq!(a.swap_grant_ref(GrantRef(1), GrantRef(2)), Ok(()));
    assert_eq!(
        a.entry(GrantRef(1)).unwrap(),
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: DomId(3), frame: 6 }
    );
    assert_eq!(a.entry(GrantRef(2)).unwrap(), GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DomId(B), frame: 5 });
    let m = map(&mut b, &mut a, &mut mem, req(2, RW, 0x500)).unwrap();
    assert_eq!(a.swap_grant_ref(GrantRef(1), GrantRef(2)), Err(GrantStatus::Eagain));
    assert_eq!(a.swap_grant_ref(GrantRef(2), GrantRef(3)), Err(GrantStatus::Eagain));
    assert_eq!(a.swap_grant_ref(GrantRef(2), GrantRef(2)), Ok(()), "a no-op even when pinned");
    unmap(&mut b, &mut a, &mut mem, m.handle, 0x500).unwrap();
    assert_eq!(a.swap_grant_ref(GrantRef(1), GrantRef(2)), Ok(()));
}

// ---- Teardown ---------------------------------------------------------------------------------

#[test]
fn a_dying_mapper_releases_everything() {
    let (mut a, mut b, mut mem_a) = pair();
    let mut mem_b = TestMemory::new(B);
    grant(&a, 1, B, 5, false);
    grant(&a, 2, B, 6, true);
    grant(&b, 7, B, 8, false);
    map(&mut b, &mut a, &mut mem_a, req(1, RW, 0x500)).unwrap();
    map(&mut b, &mut a, &mut mem_a, req(1, RO, 0x501)).unwrap();
    map(&mut b, &mut a, &mut mem_a, req(2, RO, 0x502)).unwrap();
    b.map(Peer::Same, &mut mem_b, req(7, RW, 0x503)).unwrap();
    let mut released = Vec::new();
    while let Some(p) = b.release_next_mapping() {
        released.push(p.host_gfn().as_u64());
        if p.granter() == DomId(A) {
            a.finish_unmap(p, &mut mem_a).unwrap();
        } else {
            b.finish_unmap(p, &mut mem_b).unwrap();
        }
    }
    released.sort();
    assert_eq!(released, [0x500, 0x501, 0x502, 0x503]);
    assert_eq!(b.mapping_count(), 0);
    for (t, r) in [(&a, 1), (&a, 2), (&b, 7)] {
        assert_eq!(flags(t, r) & (GTF_READING | GTF_WRITING), 0);
    }
    assert_eq!((a.pinned_count(), b.pinned_count(), mem_a.total_refs(), mem_b.total_refs()), (0, 0, 0, 0));
}

#[test]
fn a_dying_granter_is_kept_while_mapped() {
    let mut src = TestSource::default();
    let mut a = GrantTable::new(DomId(A), GrantConfig::default(), &mut src).unwrap();
    a.setup_table(2, &mut src).unwrap();
    let mut b = table(B);
    let mut mem = TestMemory::new(A);
    grant(&a, 1, B, 5, false);
    grant(&a, 600, B, 9, false);
    let m1 = map(&mut b, &mut a, &mut mem, req(1, RW, 0x500)).unwrap();
    let m2 = map(&mut b, &mut a, &mut mem, req(600, RO, 0x501)).unwrap();
    a.mark_dying();
    assert!(a.is_dying());
    assert_eq!(a.pinned_count(), 2);
    let pinned: Vec<(GrantRef, Pfn)> = a.pinned_grants().map(|(r, g)| (r, g.mfn)).collect();
    assert_eq!(pinned, [(GrantRef(1), mem.mfn(5)), (GrantRef(600), mem.mfn(9))]);
    // Copies of a pinned grant of a dying domain: GNTST_bad_domain (except a first writer,
    // which Xen sends down the translation path instead).
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::ReadOnly, &mut mem), Err(GrantStatus::BadDomain));
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(1), Access::Writable, &mut mem), Err(GrantStatus::BadDomain));
    mem.removed.insert(9);
    assert_eq!(a.acquire_copy(DomId(B), GrantRef(600), Access::Writable, &mut mem), Err(GrantStatus::BadPage));
    assert_eq!(flags(&a, 600), GTF_PERMIT_ACCESS | GTF_READING);

    let mut a = match a.destroy(&mut src) {
        Err(a) => a,
        Ok(()) => panic!("destroyed while mapped"),
    };
    unmap(&mut b, &mut a, &mut mem, m1.handle, 0x500).unwrap();
    assert_eq!(a.pinned_count(), 1);
    unmap(&mut b, &mut a, &mut mem, m2.handle, 0x501).unwrap();
    assert_eq!((a.pinned_count(), mem.total_refs()), (0, 0));
    assert!(a.destroy(&mut src).is_ok());
    assert_eq!(src.outstanding(), 0);
}

#[test]
fn destroy_refuses_a_table_that_still_maps() {
    let (mut a, mut b, mut mem) = pair();
    grant(&a, 1, B, 5, false);
    map(&mut b, &mut a, &mut mem, req(1, RW, 0x500)).unwrap();
    let mut src = TestSource::default();
    let mut b = b.destroy(&mut src).expect_err("refused");
    let p = b.release_next_mapping().unwrap();
    assert!(b.release_next_mapping().is_none());
    a.finish_unmap(p, &mut mem).unwrap();
    assert!(b.destroy(&mut src).is_ok());
    assert_eq!(src.freed, 1);
}

#[test]
fn map_request_from_the_abi_struct() {
    let op = xen_abi::grant_table::GnttabMapGrantRef {
        host_addr: 0xfeed_f123,
        flags: RO,
        ref_: GrantRef(77),
        dom: DomId(1),
        ..Default::default()
    };
    assert_eq!(MapRequest::from(&op), MapRequest { gref: GrantRef(77), flags: RO, host_addr: Gpa::new(0xfeed_f123) });
}
