//! Races with a real guest: threads rewrite entries (flags, grantee, frame) at random, as fast
//! as they can, while keel maps, unmaps and copies those grants. keel must neither panic nor
//! spin (each operation gives up after a bounded number of compare-and-swap attempts), and its
//! own state must stay consistent: pins equal to what holds them, one frame reference per
//! pinned grant, and nothing left once everything is unmapped.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use std::vec::Vec;

use keel_mm::Gpa;
use xen_abi::grant_table::{
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_WRITING,
};
use xen_abi::{DomId, GrantRef};

use crate::frame::SET_STATUS_ATTEMPTS;
use crate::testutil::{grant, table, TestFrame, TestMemory};
use crate::{Access, GrantStatus, MapRequest, Peer, SharedFrame};

/// xorshift64: enough randomness for a racing guest, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const REFS: u32 = 4;
const MAPPER: u16 = 2;

/// Until when a racing test keeps going: enough guest writes, or a time limit.
const MIN_GUEST_WRITES: u64 = 2_000_000;
const TIME_LIMIT: Duration = Duration::from_secs(5);

/// Waits until the guest threads have started writing.
fn wait_for(writes: &AtomicU64) {
    let start = Instant::now();
    while writes.load(Ordering::Relaxed) == 0 && start.elapsed() < TIME_LIMIT {
        thread::yield_now();
    }
}

/// A guest vCPU rewriting entries `0..REFS` of `frame` until `stop`, counting into `writes`.
fn spawn_guest(frame: TestFrame, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>, seed: u64) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut rng = Rng(seed);
        let words: &[AtomicU32; 1024] = frame.words();
        while !stop.load(Ordering::Relaxed) {
            let r = rng.next();
            let e = (r % u64::from(REFS)) as usize;
            let bits = [0, GTF_READONLY, GTF_READING, GTF_WRITING, GTF_SUB_PAGE][(r >> 8) as usize % 5];
            let kind = if (r >> 16).is_multiple_of(8) { 0 } else { GTF_PERMIT_ACCESS };
            let domid = [MAPPER, MAPPER, MAPPER, 3][(r >> 24) as usize % 4];
            match (r >> 32) % 3 {
                // Rewrite the whole header.
                0 => words[2 * e].store(u32::from(kind | bits) | u32::from(domid) << 16, Ordering::Release),
                // Flip a status bit in place, as a buggy guest might.
                1 => {
                    words[2 * e].fetch_xor(u32::from(bits), Ordering::AcqRel);
                }
                // Move the grant to another frame (RAM or not).
                _ => words[2 * e + 1].store([0x10, 0x11, 0x2000][(r >> 40) as usize % 3], Ordering::Release),
            }
            writes.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[test]
fn guests_racing_keel() {
    let mut a = table(1);
    let mut b = table(MAPPER);
    let mut mem = TestMemory::new(1);
    for r in 0..REFS {
        grant(&a, r, MAPPER, 0x10, false);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let guests: Vec<_> = (0..2)
        .map(|i| spawn_guest(a.frame(0).unwrap().clone(), stop.clone(), writes.clone(), 0x9e37_79b9_7f4a_7c15 + i))
        .collect();
    wait_for(&writes);

    let start = Instant::now();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live = Vec::new();
    let mut copies = Vec::new();
    let (mut ok, mut refused) = (0u32, 0u32);
    let mut i = 0u32;
    while i < 20_000 || (writes.load(Ordering::Relaxed) < MIN_GUEST_WRITES && start.elapsed() < TIME_LIMIT) {
        i = i.wrapping_add(1);
        let r = rng.next();
        let gref = GrantRef((r % u64::from(REFS)) as u32);
        match (r >> 8) % 6 {
            0 | 1 => {
                let flags =
                    if (r >> 16).is_multiple_of(2) { GNTMAP_HOST_MAP } else { GNTMAP_HOST_MAP | GNTMAP_READONLY };
                let req = MapRequest { gref, flags, host_addr: Gpa::new(u64::from(0x1000 + i % 0x10_0000) << 12) };
                match b.map(Peer::Other(&mut a), &mut mem, req) {
                    Ok(m) => {
                        ok += 1;
                        live.push(m);
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(
                            matches!(e, GrantStatus::GeneralError | GrantStatus::BadPage),
                            "unexpected status {e:?}"
                        );
                    }
                }
            }
            2 if !live.is_empty() => {
                let m = live.swap_remove((r >> 16) as usize % live.len());
                let p = b.unmap(m.handle, Gpa::new(m.host_gfn.as_u64() << 12)).unwrap().unwrap();
                a.finish_unmap(p, &mut mem).unwrap();
            }
            3 => {
                let access = if (r >> 16).is_multiple_of(2) { Access::ReadOnly } else { Access::Writable };
                match a.acquire_copy(DomId(MAPPER), gref, access, &mut mem) {
                    Ok(g) => copies.push(g),
                    Err(e) => assert!(matches!(e, GrantStatus::GeneralError | GrantStatus::BadPage), "{e:?}"),
                }
            }
            4 if !copies.is_empty() => {
                let g = copies.swap_remove((r >> 16) as usize % copies.len());
                a.release_copy(g, &mut mem).unwrap();
            }
            _ => {}
        }
        if i.is_multiple_of(256) {
            a.check_invariants().unwrap();
            b.check_invariants().unwrap();
            // One reference per pinned grant, pins equal to their holders.
            assert_eq!(mem.total_refs(), a.pinned_count());
            for (gref, act) in a.pinned_grants() {
                let maps = live.iter().filter(|m| b.mapping(m.handle).is_some_and(|x| x.gref == gref));
                let (ro, rw) = maps.fold((0, 0), |(ro, rw), m| match m.access {
                    Access::ReadOnly => (ro + 1, rw),
                    Access::Writable => (ro, rw + 1),
                });
                assert_eq!((u32::from(act.maps_ro), u32::from(act.maps_rw)), (ro, rw));
                let cps = copies.iter().filter(|c| c.gref() == gref);
                assert_eq!(cps.count(), usize::from(act.copies_ro) + usize::from(act.copies_rw));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for g in guests {
        g.join().unwrap();
    }
    let elapsed = start.elapsed();
    let writes = writes.load(Ordering::Relaxed);

    for m in live.drain(..) {
        let p = b.unmap(m.handle, Gpa::new(m.host_gfn.as_u64() << 12)).unwrap().unwrap();
        a.finish_unmap(p, &mut mem).unwrap();
    }
    for g in copies.drain(..) {
        a.release_copy(g, &mut mem).unwrap();
    }
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
    assert_eq!((a.pinned_count(), b.mapping_count(), mem.total_refs()), (0, 0, 0));
    assert!(writes > 0 && ok > 0 && refused > 0, "the race happened: {writes} writes, {ok} maps, {refused} refusals");
    // The loop stops by the time limit; one operation stuck would keep it far beyond.
    assert!(elapsed < TIME_LIMIT + Duration::from_secs(10), "took {elapsed:?}");
}

/// A guest that changes the entry between every read and swap of keel's makes the status update
/// give up after a bounded number of attempts rather than spin.
#[test]
fn an_unstable_entry_is_given_up_on() {
    let mut a = table(1);
    let mut b = table(MAPPER);
    let mut mem = TestMemory::new(1);
    grant(&a, 0, MAPPER, 0x10, false);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let frame = a.frame(0).unwrap().clone();
    let flipper = {
        let (stop, writes) = (stop.clone(), writes.clone());
        thread::spawn(move || {
            // Toggle a harmless cache bit as fast as possible.
            let w = &frame.words()[0];
            while !stop.load(Ordering::Relaxed) {
                w.fetch_xor(u32::from(xen_abi::grant_table::GTF_PWT), Ordering::AcqRel);
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_for(&writes);
    let start = Instant::now();
    let mut outcomes = [0u32; 2];
    let mut i = 0u64;
    while i < 20_000 || (writes.load(Ordering::Relaxed) < MIN_GUEST_WRITES && start.elapsed() < TIME_LIMIT) {
        i += 1;
        let req = MapRequest { gref: GrantRef(0), flags: GNTMAP_HOST_MAP, host_addr: Gpa::new(0x1000 << 12) };
        match b.map(Peer::Other(&mut a), &mut mem, req) {
            Ok(m) => {
                outcomes[0] += 1;
                let p = b.unmap(m.handle, Gpa::new(m.host_gfn.as_u64() << 12)).unwrap().unwrap();
                a.finish_unmap(p, &mut mem).unwrap();
            }
            Err(e) => {
                assert_eq!(e, GrantStatus::GeneralError);
                outcomes[1] += 1;
            }
        }
        assert_eq!(a.pinned_count(), 0);
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(start.elapsed() < TIME_LIMIT + Duration::from_secs(10));
    assert_eq!(u64::from(outcomes.iter().sum::<u32>()), i);
    assert!(outcomes[0] > 0, "some maps get through");
    assert_eq!(SET_STATUS_ATTEMPTS, 5);
    // Whatever the race, the status bits end clear and the guest's own bits survive intact.
    let e = a.entry(GrantRef(0)).unwrap();
    assert_eq!(e.flags & !xen_abi::grant_table::GTF_PWT, GTF_PERMIT_ACCESS);
    assert_eq!(e.domid, DomId(MAPPER));
}
