//! Model-based property tests: three domains grant, ungrant, map, unmap (in two steps, with the
//! window between them), undo maps, copy, grow their tables, swap entries, die and tear down, in
//! random order. A model written from Xen's rules predicts every status and every word of the
//! shared entries; after each step the tables must agree with it, and:
//!
//! * pin counts equal the mappings, pending unmaps and copies that hold them, and every pinned
//!   grant holds exactly one frame reference;
//! * `GTF_reading` is set exactly while a grant is pinned and `GTF_writing` exactly while it is
//!   pinned writable (with a well-behaved guest, one that only changes entries not in use), and a
//!   writable pin never sits on a `GTF_readonly` entry;
//! * handles are never reused while live, and no mapping survives its unmap or a teardown;
//! * at the end, after every unmap, release and teardown, nothing is pinned, referenced,
//!   mapped or allocated.
//!
//! The hostile variant lets the guest also write anything to any entry at any time; the model
//! still predicts everything, only the "exactly while pinned" invariants no longer hold.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use keel_mm::{Gfn, Gpa, Pfn};
use proptest::prelude::*;
use xen_abi::grant_table::{
    GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_PERMIT_ACCESS, GTF_PWT, GTF_READING, GTF_READONLY,
    GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};
use xen_abi::{DomId, GrantHandle, GrantRef};

use crate::testutil::{TestFrame, TestMemory, TestSource, PAGED_OUT_GFN, RAM_GFNS};
use crate::{
    check_map_flags, Access, ActiveGrant, CopyGrant, GrantConfig, GrantStatus, GrantTable, MapRequest, Mapping, Peer,
    PendingUnmap, SharedFrame, MAX_PINS,
};

const DOMS: usize = 3;
/// Grant references the ops use: both ends of the first frame and the start of the second.
const GREFS: [u32; 7] = [0, 1, 2, 3, 511, 512, 513];
/// Frames the guests grant: RAM, not RAM, paged out.
const GFNS: [u32; 5] = [0x10, 0x11, 0x12, RAM_GFNS as u32, PAGED_OUT_GFN as u32];
const RO: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;
const RW: u32 = GNTMAP_HOST_MAP;
/// Flags a mapper may pass that Xen refuses at one stage or another.
const ODD_MAP_FLAGS: [u32; 4] = [0, RO | 1 << 16, RW | 1 << 5, RW | GNTMAP_DEVICE_MAP];
const MAX_FRAMES: u32 = 2;

fn domid(d: usize) -> DomId {
    DomId(d as u16 + 1)
}

type Table = GrantTable<TestFrame>;

/// Two distinct tables of the slice, or `None` if `i == j`.
fn two(tables: &mut [Table], i: usize, j: usize) -> Option<(&mut Table, &mut Table)> {
    if i == j {
        return None;
    }
    if i < j {
        let (lo, hi) = tables.split_at_mut(j);
        Some((&mut lo[i], &mut hi[0]))
    } else {
        let (lo, hi) = tables.split_at_mut(i);
        Some((&mut hi[0], &mut lo[j]))
    }
}

#[derive(Clone, Copy, Debug)]
enum Addr {
    Right(u16),
    Wrong,
    Zero,
}

#[derive(Clone, Debug)]
enum Op {
    Grant { dom: usize, gref: u32, to: u16, gfn: u32, readonly: bool },
    EndAccess { dom: usize, gref: u32 },
    Scribble { dom: usize, gref: u32, header: u32, frame: u32 },
    Map { mapper: Option<usize>, granter: usize, gref: u32, flags: u32, host: u64, fail_p2m: bool },
    Unmap { mapper: usize, pick: usize, addr: Addr, finish_now: bool },
    Finish { pick: usize },
    Acquire { caller: Option<usize>, granter: usize, gref: u32, writable: bool },
    Release { pick: usize },
    Grow { dom: usize, idx: u64 },
    Swap { dom: usize, a: u32, b: u32 },
    Teardown { dom: usize },
    Dying { dom: usize },
}

fn op_strategy(hostile: bool) -> impl Strategy<Value = Op> {
    let dom = 0..DOMS;
    // Mostly a few low references so grants, maps and copies meet; sometimes the edges.
    let gref = prop_oneof![4 => 0..3u32, 1 => proptest::sample::select(&GREFS[..])];
    // Mostly RAM.
    let gfn = prop_oneof![6 => 0x10..0x13u32, 1 => proptest::sample::select(&GFNS[..])];
    // Mostly an existing domain; 4 is none.
    let to = prop_oneof![6 => 1..=3u16, 1 => Just(4u16)];
    // `None`: whoever the entry names (if a domain), so most maps and copies are legitimate.
    let who = prop_oneof![3 => Just(None), 1 => (0..DOMS).prop_map(Some)];
    let flags = prop_oneof![8 => prop_oneof![Just(RO), Just(RW)], 1 => proptest::sample::select(&ODD_MAP_FLAGS[..])];
    let addr = prop_oneof![
        8 => any::<u16>().prop_map(|o| Addr::Right(o & 0xfff)),
        1 => Just(Addr::Wrong),
        1 => Just(Addr::Zero),
    ];
    // proptest wants no zero weights: a well-behaved run draws few scribbles and skips them.
    let scribble_weight = if hostile { 4 } else { 1 };
    prop_oneof![
        10 => (dom.clone(), gref.clone(), to, gfn, any::<bool>())
            .prop_map(|(dom, gref, to, gfn, readonly)| Op::Grant { dom, gref, to, gfn, readonly }),
        2 => (dom.clone(), gref.clone()).prop_map(|(dom, gref)| Op::EndAccess { dom, gref }),
        scribble_weight => (dom.clone(), gref.clone(), any::<u32>(), any::<u32>(), 0..4u32).prop_map(
            |(dom, gref, header, frame, kind)| {
                // Mostly plausible entries (a live grant with random status bits) so pins happen.
                let header = match kind {
                    0 => header,
                    _ => {
                        let bits = GTF_READONLY | GTF_READING | GTF_WRITING | GTF_SUB_PAGE | GTF_PWT;
                        let flags = GTF_PERMIT_ACCESS | (header as u16 & bits);
                        u32::from(flags) | ((header >> 16) % 4 + 1) << 16
                    }
                };
                let frame = if kind == 3 { frame } else { GFNS[frame as usize % GFNS.len()] };
                Op::Scribble { dom, gref, header, frame }
            }
        ),
        10 => (who.clone(), dom.clone(), gref.clone(), flags, 0..4u64, proptest::bool::weighted(0.1)).prop_map(
            |(mapper, granter, gref, flags, host, fail_p2m)| Op::Map { mapper, granter, gref, flags, host, fail_p2m }
        ),
        6 => (dom.clone(), any::<usize>(), addr, any::<bool>())
            .prop_map(|(mapper, pick, addr, finish_now)| Op::Unmap { mapper, pick, addr, finish_now }),
        2 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        4 => (who, dom.clone(), gref.clone(), any::<bool>())
            .prop_map(|(caller, granter, gref, writable)| Op::Acquire { caller, granter, gref, writable }),
        3 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (dom.clone(), 0..4u64).prop_map(|(dom, idx)| Op::Grow { dom, idx }),
        1 => (dom.clone(), gref.clone(), gref).prop_map(|(dom, a, b)| Op::Swap { dom, a, b }),
        1 => dom.clone().prop_map(|dom| Op::Teardown { dom }),
        1 => dom.prop_map(|dom| Op::Dying { dom }),
    ]
}

/// The model of one pinned grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pin {
    grantee: DomId,
    gfn: u32,
    maps: [u16; 2],
    copies: [u16; 2],
}

impl Pin {
    fn readers(&self) -> u16 {
        self.maps[0] + self.copies[0]
    }
    fn writers(&self) -> u16 {
        self.maps[1] + self.copies[1]
    }
    fn pinned(&self) -> bool {
        self.readers() + self.writers() != 0
    }
}

fn slot(access: Access) -> usize {
    match access {
        Access::ReadOnly => 0,
        Access::Writable => 1,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Map,
    Copy,
}

struct Model {
    /// Header and frame word of every entry (missing: zero).
    entries: BTreeMap<(usize, u32), (u32, u32)>,
    nr_frames: [u32; DOMS],
    pins: BTreeMap<(usize, u32), Pin>,
    maps: [BTreeMap<GrantHandle, Mapping>; DOMS],
    dying: [bool; DOMS],
}

fn translate(gfn: u32) -> Result<(), GrantStatus> {
    if u64::from(gfn) == PAGED_OUT_GFN {
        Err(GrantStatus::Eagain)
    } else if u64::from(gfn) >= RAM_GFNS {
        Err(GrantStatus::BadPage)
    } else {
        Ok(())
    }
}

impl Model {
    fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            nr_frames: [1; DOMS],
            pins: BTreeMap::new(),
            maps: Default::default(),
            dying: [false; DOMS],
        }
    }

    fn exists(&self, d: usize, gref: u32) -> bool {
        gref < self.nr_frames[d] * 512
    }

    fn entry(&self, d: usize, gref: u32) -> (u32, u32) {
        self.entries.get(&(d, gref)).copied().unwrap_or((0, 0))
    }

    fn header_mut(&mut self, d: usize, gref: u32) -> &mut u32 {
        &mut self.entries.entry((d, gref)).or_insert((0, 0)).0
    }

    /// `_set_status_v1` on the model's entry.
    fn set_status(&mut self, d: usize, gref: u32, pinned: bool, access: Access, map: bool, grantee: DomId) -> bool {
        let (h, _) = self.entry(d, gref);
        let (flags, dom) = (h as u16, DomId((h >> 16) as u16));
        let mask = if map { GTF_TYPE_MASK | GTF_SUB_PAGE } else { GTF_TYPE_MASK };
        if !pinned && (flags & mask != GTF_PERMIT_ACCESS || dom != grantee) {
            return false;
        }
        if access == Access::Writable && flags & GTF_READONLY != 0 {
            return false;
        }
        let set = if access == Access::Writable { GTF_READING | GTF_WRITING } else { GTF_READING };
        *self.header_mut(d, gref) |= u32::from(set);
        true
    }

    /// `reduce_status_for_pin` on the model's entry.
    fn reduce(&mut self, d: usize, gref: u32, access: Access) {
        let pin = self.pins.get(&(d, gref)).copied();
        let mut clear = 0;
        if pin.is_none_or(|p| !p.pinned()) {
            clear |= GTF_READING;
        }
        if access == Access::Writable && pin.is_none_or(|p| p.writers() == 0) {
            clear |= GTF_WRITING;
        }
        *self.header_mut(d, gref) &= !u32::from(clear);
    }

    /// Xen's pin for a mapping or a copy; the model's prediction of the status.
    fn pin(&mut self, d: usize, gref: u32, grantee: DomId, access: Access, kind: Use) -> Result<u32, GrantStatus> {
        if !self.exists(d, gref) {
            return Err(GrantStatus::BadGntref);
        }
        let key = (d, gref);
        let map = kind == Use::Map;
        match self.pins.get(&key).copied() {
            None => {
                if !self.set_status(d, gref, false, access, map, grantee) {
                    return Err(GrantStatus::GeneralError);
                }
                let gfn = self.entry(d, gref).1;
                if let Err(e) = translate(gfn) {
                    self.reduce(d, gref, access);
                    return Err(e);
                }
                self.pins.insert(key, Pin { grantee, gfn, maps: [0; 2], copies: [0; 2] });
            }
            Some(p) => {
                let count = if access == Access::Writable { p.writers() } else { p.readers() };
                if p.grantee != grantee || count >= MAX_PINS {
                    return Err(GrantStatus::GeneralError);
                }
                if access == Access::Writable && p.writers() == 0 {
                    if !self.set_status(d, gref, true, access, map, grantee) {
                        return Err(GrantStatus::GeneralError);
                    }
                    if !map {
                        let now = self.entry(d, gref).1;
                        let r = translate(now).and(if now == p.gfn { Ok(()) } else { Err(GrantStatus::GeneralError) });
                        if let Err(e) = r {
                            self.reduce(d, gref, access);
                            return Err(e);
                        }
                    }
                } else if !map && self.dying[d] {
                    return Err(GrantStatus::BadDomain);
                }
            }
        }
        let p = self.pins.get_mut(&key).expect("just pinned");
        match kind {
            Use::Map => p.maps[slot(access)] += 1,
            Use::Copy => p.copies[slot(access)] += 1,
        }
        Ok(p.gfn)
    }

    fn unpin(&mut self, d: usize, gref: u32, access: Access, kind: Use) {
        let key = (d, gref);
        let p = self.pins.get_mut(&key).expect("model unpin of an unpinned grant");
        match kind {
            Use::Map => p.maps[slot(access)] -= 1,
            Use::Copy => p.copies[slot(access)] -= 1,
        }
        if !p.pinned() {
            self.pins.remove(&key);
        }
        self.reduce(d, gref, access);
    }
}

struct World {
    tables: Vec<Table>,
    mems: Vec<TestMemory>,
    source: TestSource,
    model: Model,
    pending: Vec<PendingUnmap>,
    copies: Vec<CopyGrant>,
    hostile: bool,
}

fn dom_index(id: DomId) -> usize {
    usize::from(id.0) - 1
}

impl World {
    fn new(hostile: bool) -> Self {
        let mut source = TestSource::default();
        let config = GrantConfig { max_grant_frames: MAX_FRAMES, max_maptrack_frames: 1, max_version: 1 };
        let tables = (0..DOMS).map(|d| GrantTable::new(domid(d), config, &mut source).unwrap()).collect();
        let mems = (0..DOMS).map(|d| TestMemory::new(domid(d).0)).collect();
        Self { tables, mems, source, model: Model::new(), pending: Vec::new(), copies: Vec::new(), hostile }
    }

    fn guest_store(&mut self, d: usize, gref: u32, header: u32, frame: u32) {
        let frame_words = self.tables[d].frame(gref / 512).expect("entry exists").words();
        let e = (gref % 512) as usize;
        frame_words[2 * e + 1].store(frame, std::sync::atomic::Ordering::Release);
        frame_words[2 * e].store(header, std::sync::atomic::Ordering::Release);
        self.model.entries.insert((d, gref), (header, frame));
    }

    /// `who`, or else the domain entry `gref` of `granter` names (domain 0 if none).
    fn pick_grantee(&self, who: Option<usize>, granter: usize, gref: u32) -> usize {
        who.unwrap_or_else(|| {
            let named = (self.model.entry(granter, gref).0 >> 16) as usize;
            if (1..=DOMS).contains(&named) {
                named - 1
            } else {
                0
            }
        })
    }

    fn finish(&mut self, p: PendingUnmap) {
        let g = dom_index(p.granter());
        let (gref, access) = (p.gref().0, p.access());
        let t = &mut self.tables[g];
        t.finish_unmap(p, &mut self.mems[g]).expect("finish on the right table");
        self.model.unpin(g, gref, access, Use::Map);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Grant { dom, gref, to, gfn, readonly } => {
                if !self.model.exists(dom, gref) {
                    return;
                }
                let (h, _) = self.model.entry(dom, gref);
                if !self.hostile && h as u16 & (GTF_READING | GTF_WRITING) != 0 {
                    return; // A well-behaved guest leaves entries in use alone.
                }
                let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
                self.guest_store(dom, gref, u32::from(flags) | u32::from(to) << 16, gfn);
            }
            Op::EndAccess { dom, gref } => {
                if !self.model.exists(dom, gref) {
                    return;
                }
                let ended = crate::testutil::guest_end_access(&self.tables[dom], GrantRef(gref));
                let h = self.model.header_mut(dom, gref);
                assert_eq!(ended, *h as u16 & (GTF_READING | GTF_WRITING) == 0);
                if ended {
                    *h &= 0xffff_0000;
                }
            }
            Op::Scribble { dom, gref, header, frame } => {
                if self.hostile && self.model.exists(dom, gref) {
                    self.guest_store(dom, gref, header, frame);
                }
            }
            Op::Map { mapper, granter, gref, flags, host, fail_p2m } => {
                let mapper = self.pick_grantee(mapper, granter, gref);
                let r = MapRequest { gref: GrantRef(gref), flags, host_addr: Gpa::new((0x500 + host) << 12) };
                let got = match two(&mut self.tables, mapper, granter) {
                    None => self.tables[mapper].map(Peer::Same, &mut self.mems[granter], r),
                    Some((m, g)) => m.map(Peer::Other(g), &mut self.mems[granter], r),
                };
                let access = if flags & GNTMAP_READONLY != 0 { Access::ReadOnly } else { Access::Writable };
                let expected = check_map_flags(flags).and_then(|()| {
                    let gfn = self.model.pin(granter, gref, domid(mapper), access, Use::Map)?;
                    if flags & !GNTMAP_READONLY != GNTMAP_HOST_MAP {
                        self.model.unpin(granter, gref, access, Use::Map);
                        return Err(GrantStatus::GeneralError);
                    }
                    Ok(gfn)
                });
                match (got, expected) {
                    (Ok(m), Ok(gfn)) => {
                        assert_eq!(m.gfn, Gfn::new(u64::from(gfn)));
                        assert_eq!(m.mfn, self.mems[granter].mfn(u64::from(gfn)));
                        assert_eq!(m.host_gfn, Gfn::new(0x500 + host));
                        assert_eq!(m.access, access);
                        assert!(!self.model.maps[mapper].contains_key(&m.handle), "live handle reused");
                        if fail_p2m {
                            let p = self.tables[mapper].undo_map(m.handle).unwrap();
                            self.finish(p);
                        } else {
                            let mapping = Mapping {
                                granter: domid(granter),
                                gref: GrantRef(gref),
                                access,
                                host_gfn: m.host_gfn,
                                mfn: m.mfn,
                            };
                            self.model.maps[mapper].insert(m.handle, mapping);
                        }
                    }
                    (got, expected) => assert_eq!(got.map(|_| ()), expected.map(|_| ()), "map {r:?}"),
                }
            }
            Op::Unmap { mapper, pick, addr, finish_now } => {
                let live: Vec<(GrantHandle, Mapping)> = self.model.maps[mapper].iter().map(|(h, m)| (*h, *m)).collect();
                let (handle, mapping) = match live.get(pick % (live.len() + 1)) {
                    Some((h, m)) => (*h, Some(*m)),
                    None => {
                        // A handle that is not live: never given, beyond the maptrack, or freed.
                        let mut h = (pick % 300) as u32;
                        while self.model.maps[mapper].contains_key(&GrantHandle(h)) {
                            h += 1;
                        }
                        (GrantHandle(h), None)
                    }
                };
                let host_addr = match (addr, mapping) {
                    (Addr::Zero, _) => Gpa::new(0),
                    (Addr::Right(off), Some(m)) => Gpa::new((m.host_gfn.as_u64() << 12) | u64::from(off)),
                    (Addr::Wrong, Some(m)) => Gpa::new((m.host_gfn.as_u64() + 1) << 12),
                    (_, None) => Gpa::new(0x500 << 12),
                };
                let got = self.tables[mapper].unmap(handle, host_addr);
                match mapping {
                    None => assert_eq!(got, Err(GrantStatus::BadHandle)),
                    Some(m) => match addr {
                        Addr::Zero => assert_eq!(got, Ok(None)),
                        Addr::Wrong => assert_eq!(got, Err(GrantStatus::GeneralError)),
                        Addr::Right(_) => {
                            let p = got.expect("unmap").expect("address given");
                            assert_eq!(
                                (p.handle(), p.granter(), p.gref(), p.access()),
                                (handle, m.granter, m.gref, m.access)
                            );
                            assert_eq!((p.host_gfn(), p.mfn()), (m.host_gfn, m.mfn));
                            self.model.maps[mapper].remove(&handle);
                            if finish_now {
                                self.finish(p);
                            } else {
                                self.pending.push(p);
                            }
                        }
                    },
                }
            }
            Op::Finish { pick } => {
                if !self.pending.is_empty() {
                    let p = self.pending.swap_remove(pick % self.pending.len());
                    self.finish(p);
                }
            }
            Op::Acquire { caller, granter, gref, writable } => {
                let caller = self.pick_grantee(caller, granter, gref);
                let access = if writable { Access::Writable } else { Access::ReadOnly };
                let got =
                    self.tables[granter].acquire_copy(domid(caller), GrantRef(gref), access, &mut self.mems[granter]);
                let expected = self.model.pin(granter, gref, domid(caller), access, Use::Copy);
                match (got, expected) {
                    (Ok(g), Ok(gfn)) => {
                        assert_eq!((g.granter(), g.gref(), g.access()), (domid(granter), GrantRef(gref), access));
                        assert_eq!(
                            (g.gfn(), g.mfn()),
                            (Gfn::new(u64::from(gfn)), self.mems[granter].mfn(u64::from(gfn)))
                        );
                        self.copies.push(g);
                    }
                    (got, expected) => assert_eq!(got.map(|_| ()), expected.map(|_| ()), "copy {gref}"),
                }
            }
            Op::Release { pick } => {
                if !self.copies.is_empty() {
                    let g = self.copies.swap_remove(pick % self.copies.len());
                    let d = dom_index(g.granter());
                    let (gref, access) = (g.gref().0, g.access());
                    self.tables[d].release_copy(g, &mut self.mems[d]).expect("release");
                    self.model.unpin(d, gref, access, Use::Copy);
                }
            }
            Op::Grow { dom, idx } => {
                let got = self.tables[dom].add_to_physmap(idx, &mut self.source).map(|f| f.index);
                if idx < u64::from(MAX_FRAMES) {
                    assert_eq!(got, Ok(idx as u32));
                    self.model.nr_frames[dom] = self.model.nr_frames[dom].max(idx as u32 + 1);
                } else {
                    assert_eq!(got, Err(xen_abi::Errno::EINVAL));
                }
            }
            Op::Swap { dom, a, b } => {
                let got = self.tables[dom].swap_grant_ref(GrantRef(a), GrantRef(b));
                let m = &mut self.model;
                let expected = if !m.exists(dom, a) || !m.exists(dom, b) {
                    Err(GrantStatus::BadGntref)
                } else if a == b {
                    Ok(())
                } else if m.pins.contains_key(&(dom, a)) || m.pins.contains_key(&(dom, b)) {
                    Err(GrantStatus::Eagain)
                } else {
                    let (ea, eb) = (m.entry(dom, a), m.entry(dom, b));
                    m.entries.insert((dom, a), eb);
                    m.entries.insert((dom, b), ea);
                    Ok(())
                };
                assert_eq!(got, expected);
            }
            Op::Teardown { dom } => {
                let mut released = 0;
                while let Some(p) = self.tables[dom].release_next_mapping() {
                    assert_eq!(self.model.maps[dom].remove(&p.handle()).map(|m| m.host_gfn), Some(p.host_gfn()));
                    self.finish(p);
                    released += 1;
                }
                assert!(self.model.maps[dom].is_empty(), "teardown left {} mappings", self.model.maps[dom].len());
                assert_eq!(self.tables[dom].mapping_count(), 0);
                let _ = released;
            }
            Op::Dying { dom } => {
                self.tables[dom].mark_dying();
                self.model.dying[dom] = true;
            }
        }
    }

    fn check(&self) {
        for d in 0..DOMS {
            let t = &self.tables[d];
            t.check_invariants().unwrap();
            assert_eq!(t.nr_frames(), self.model.nr_frames[d]);
            // Every entry word as the model says.
            for gref in 0..t.nr_entries() {
                let e = t.entry(GrantRef(gref)).unwrap();
                let (h, f) = self.model.entry(d, gref);
                assert_eq!((u32::from(e.flags) | u32::from(e.domid.0) << 16, e.frame), (h, f), "d{d} ref {gref}");
            }
            // Pins as the model says; one frame reference per pinned grant.
            let pins: Vec<(GrantRef, ActiveGrant)> = t.pinned_grants().collect();
            let expected: Vec<(GrantRef, ActiveGrant)> = self
                .model
                .pins
                .iter()
                .filter(|((g, _), _)| *g == d)
                .map(|(&(_, gref), p)| {
                    let gfn = u64::from(p.gfn);
                    let a = ActiveGrant {
                        grantee: p.grantee,
                        gfn: Gfn::new(gfn),
                        mfn: self.mems[d].mfn(gfn),
                        maps_ro: p.maps[0] as u8,
                        maps_rw: p.maps[1] as u8,
                        copies_ro: p.copies[0] as u8,
                        copies_rw: p.copies[1] as u8,
                    };
                    (GrantRef(gref), a)
                })
                .collect();
            assert_eq!(pins, expected, "d{d} pins");
            assert_eq!(t.pinned_count(), expected.len());
            let mut refs: BTreeMap<Pfn, usize> = BTreeMap::new();
            for (_, a) in &expected {
                *refs.entry(a.mfn).or_default() += 1;
            }
            assert_eq!(self.mems[d].refs, refs, "d{d} frame references");
            // Mappings as the model says.
            let maps: BTreeMap<GrantHandle, Mapping> = t.mappings().collect();
            assert_eq!(maps, self.model.maps[d], "d{d} mappings");

            // The brief's invariants, stated on the tables alone.
            for (gref, a) in &pins {
                let flags = t.entry(*gref).unwrap().flags;
                if a.writers() != 0 && !self.hostile {
                    assert_eq!(flags & GTF_READONLY, 0, "writable pin on a read-only grant");
                }
            }
            if !self.hostile {
                for gref in 0..t.nr_entries() {
                    let flags = t.entry(GrantRef(gref)).unwrap().flags;
                    let act = t.active(GrantRef(gref));
                    assert_eq!(flags & GTF_READING != 0, act.is_some(), "d{d} ref {gref} reading");
                    assert_eq!(
                        flags & GTF_WRITING != 0,
                        act.is_some_and(|a| a.writers() != 0),
                        "d{d} ref {gref} writing"
                    );
                }
            }
        }
        // Pins are exactly the mappings, pending unmaps and copies holding them.
        let mut holders: BTreeMap<(usize, u32), [u16; 4]> = BTreeMap::new();
        for d in 0..DOMS {
            for m in self.model.maps[d].values() {
                holders.entry((dom_index(m.granter), m.gref.0)).or_default()[slot(m.access)] += 1;
            }
        }
        for p in &self.pending {
            holders.entry((dom_index(p.granter()), p.gref().0)).or_default()[slot(p.access())] += 1;
        }
        for c in &self.copies {
            holders.entry((dom_index(c.granter()), c.gref().0)).or_default()[2 + slot(c.access())] += 1;
        }
        let pins: BTreeMap<(usize, u32), [u16; 4]> = self
            .tables
            .iter()
            .enumerate()
            .flat_map(|(d, t)| {
                t.pinned_grants()
                    .map(move |(r, a)| ((d, r.0), [a.maps_ro, a.maps_rw, a.copies_ro, a.copies_rw].map(u16::from)))
            })
            .collect();
        assert_eq!(pins, holders, "pins versus their holders");
    }

    /// Unmaps, releases and tears everything down; then nothing may be left.
    fn finish_all(mut self) {
        while let Some(p) = self.pending.pop() {
            self.finish(p);
        }
        while let Some(g) = self.copies.pop() {
            let d = dom_index(g.granter());
            let (gref, access) = (g.gref().0, g.access());
            self.tables[d].release_copy(g, &mut self.mems[d]).unwrap();
            self.model.unpin(d, gref, access, Use::Copy);
        }
        for d in 0..DOMS {
            self.apply(Op::Teardown { dom: d });
        }
        self.check();
        for d in 0..DOMS {
            assert_eq!(self.tables[d].pinned_count(), 0);
            assert_eq!(self.mems[d].total_refs(), 0);
        }
        let mut source = self.source;
        for t in self.tables {
            assert!(t.destroy(&mut source).is_ok());
        }
        assert_eq!(source.outstanding(), 0, "frames leaked");
    }
}

fn run(ops: Vec<Op>, hostile: bool) {
    let mut w = World::new(hostile);
    for op in ops {
        w.apply(op);
        w.check();
    }
    w.finish_all();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn well_behaved_guests(ops in proptest::collection::vec(op_strategy(false), 1..120)) {
        run(ops, false);
    }

    #[test]
    fn hostile_guests(ops in proptest::collection::vec(op_strategy(true), 1..120)) {
        run(ops, true);
    }
}

/// Enough maps of one grant to reach the pin limit, then unmaps, through the model.
#[test]
fn pin_limit_through_the_model() {
    let mut ops = vec![Op::Grant { dom: 0, gref: 1, to: 2, gfn: 0x10, readonly: false }];
    for _ in 0..=MAX_PINS {
        ops.push(Op::Map { mapper: Some(1), granter: 0, gref: 1, flags: RO, host: 0, fail_p2m: false });
    }
    ops.push(Op::Acquire { caller: Some(1), granter: 0, gref: 1, writable: false });
    for i in 0..40 {
        ops.push(Op::Unmap { mapper: 1, pick: i, addr: Addr::Right(0), finish_now: i % 2 == 0 });
    }
    ops.push(Op::Acquire { caller: Some(1), granter: 0, gref: 1, writable: false });
    run(ops, false);
}
