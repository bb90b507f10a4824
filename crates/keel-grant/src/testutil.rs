//! Test doubles: shared frames, a frame source and a granter memory that count what they hand
//! out, and the guest's side of the grant protocol (as Linux's `gnttab_*_v1` does it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keel_mm::{Gfn, Pfn};
use xen_abi::grant_table::{
    GrantEntryV1, GRANT_ENTRIES_V1_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
};
use xen_abi::{DomId, GrantRef};

use crate::{Access, FrameSource, GrantConfig, GrantStatus, GrantTable, GranterMemory, SharedFrame, WORDS_PER_FRAME};

/// A frame the test (playing the guest) can keep a handle to while the table owns it.
#[derive(Clone, Debug)]
pub struct TestFrame(Arc<[AtomicU32; WORDS_PER_FRAME]>);

impl TestFrame {
    pub fn new() -> Self {
        Self(Arc::new(core::array::from_fn(|_| AtomicU32::new(0))))
    }
}

impl SharedFrame for TestFrame {
    fn words(&self) -> &[AtomicU32; WORDS_PER_FRAME] {
        &self.0
    }
}

/// Hands out zeroed frames, optionally only a limited number of them.
#[derive(Debug, Default)]
pub struct TestSource {
    pub allocated: usize,
    pub freed: usize,
    /// How many more frames it will give; `None` for no limit.
    pub budget: Option<usize>,
}

impl TestSource {
    pub fn limited(budget: usize) -> Self {
        Self { budget: Some(budget), ..Self::default() }
    }

    pub fn outstanding(&self) -> usize {
        self.allocated - self.freed
    }
}

impl FrameSource for TestSource {
    type Frame = TestFrame;

    fn alloc_frame(&mut self) -> Option<TestFrame> {
        if let Some(b) = &mut self.budget {
            *b = b.checked_sub(1)?;
        }
        self.allocated += 1;
        Some(TestFrame::new())
    }

    fn free_frame(&mut self, _frame: TestFrame) {
        self.freed += 1;
    }
}

/// Gfns below this are the granter's RAM in [`TestMemory`].
pub const RAM_GFNS: u64 = 0x1000;
/// A gfn [`TestMemory`] reports as paged out.
pub const PAGED_OUT_GFN: u64 = 0xeaa;

/// A granter's memory: gfn `g` below [`RAM_GFNS`] is host frame `base + g`; references are
/// counted and must balance.
#[derive(Debug, Default)]
pub struct TestMemory {
    pub base: u64,
    pub refs: BTreeMap<Pfn, usize>,
    pub lookups: usize,
    /// Gfns the granter has "ballooned out" (no longer RAM).
    pub removed: std::collections::BTreeSet<u64>,
}

impl TestMemory {
    pub fn new(domain: u16) -> Self {
        Self { base: 0x10_0000 * (u64::from(domain) + 1), ..Self::default() }
    }

    pub fn mfn(&self, gfn: u64) -> Pfn {
        Pfn::new(self.base + gfn)
    }

    pub fn total_refs(&self) -> usize {
        self.refs.values().sum()
    }
}

impl GranterMemory for TestMemory {
    fn get_frame(&mut self, gfn: Gfn, _access: Access) -> Result<Pfn, GrantStatus> {
        self.lookups += 1;
        let g = gfn.as_u64();
        if g == PAGED_OUT_GFN {
            return Err(GrantStatus::Eagain);
        }
        if g >= RAM_GFNS || self.removed.contains(&g) {
            return Err(GrantStatus::BadPage);
        }
        let mfn = self.mfn(g);
        *self.refs.entry(mfn).or_default() += 1;
        Ok(mfn)
    }

    fn put_frame(&mut self, mfn: Pfn) {
        let n = self.refs.get_mut(&mfn).expect("put_frame of a frame with no reference");
        *n -= 1;
        if *n == 0 {
            self.refs.remove(&mfn);
        }
    }
}

pub type Table = GrantTable<TestFrame>;

/// A table for `domid` with Xen's default limits.
pub fn table(domid: u16) -> Table {
    table_with(domid, GrantConfig::default())
}

pub fn table_with(domid: u16, config: GrantConfig) -> Table {
    GrantTable::new(DomId(domid), config, &mut TestSource::default()).unwrap()
}

/// The header and frame words of entry `gref`, as the guest sees them.
fn words(t: &Table, gref: GrantRef) -> (&AtomicU32, &AtomicU32) {
    let i = gref.0 as usize;
    let frame = t.frame((i / GRANT_ENTRIES_V1_PER_FRAME) as u32).expect("no such frame");
    let w = frame.words();
    let e = i % GRANT_ENTRIES_V1_PER_FRAME;
    (&w[2 * e], &w[2 * e + 1])
}

/// The guest overwrites entry `gref` (frame first, then the header, as Linux publishes).
pub fn guest_write(t: &Table, gref: GrantRef, entry: GrantEntryV1) {
    let (header, frame) = words(t, gref);
    frame.store(entry.frame, Ordering::Release);
    header.store(u32::from(entry.flags) | u32::from(entry.domid.0) << 16, Ordering::Release);
}

/// The guest grants `gfn` to `to` under `gref`.
pub fn grant(t: &Table, gref: u32, to: u16, gfn: u32, readonly: bool) {
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    guest_write(t, GrantRef(gref), GrantEntryV1 { flags, domid: DomId(to), frame: gfn });
}

/// Linux's `gnttab_end_foreign_access_ref_v1`: clears the entry unless it is in use.
pub fn guest_end_access(t: &Table, gref: GrantRef) -> bool {
    let (header, _) = words(t, gref);
    let mut cur = header.load(Ordering::Acquire);
    loop {
        if cur as u16 & (GTF_READING | GTF_WRITING) != 0 {
            return false;
        }
        match header.compare_exchange(cur, cur & 0xffff_0000, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// The entry's flags now.
pub fn flags(t: &Table, gref: u32) -> u16 {
    t.entry(GrantRef(gref)).expect("no such entry").flags
}
