//! Property tests of [`P2m`] against simple models: random sequences of map, unmap, split and
//! replace (some of them starved of table memory) must leave the p2m translating exactly as
//! the model says, with consistent counters, no empty tables, and nothing leaked at destroy.
//!
//! Two models: one entry per 4 KiB frame (exact and obvious, over a window of four 2 MiB
//! regions that straddles a 1 GiB boundary), and one of disjoint runs (compact enough for 1 GiB
//! pages, over two 1 GiB regions that straddle a 512 GiB boundary).

use std::collections::BTreeMap;
use std::vec::Vec;

use keel_mm::{Gfn, Pfn};
use proptest::prelude::*;

use crate::fake::FakeMemory;
use crate::{Access, Mapping, P2m, P2mError, P2mType, MAX_MFN_BITS};

const MIB2: u64 = 512;
const GIB: u64 = 1 << 18;

/// What a model says one guest frame maps to.
type Frame = (Pfn, Access, P2mType);

/// A run of frames `[gfn, gfn + len)` mapped to consecutive mfns with the same attributes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Run {
    gfn: u64,
    len: u64,
    mfn: u64,
    access: Access,
    kind: P2mType,
}

/// Merges sorted, disjoint runs that continue each other, so equal translations compare equal.
fn normalize(runs: impl IntoIterator<Item = Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for run in runs {
        match out.last_mut() {
            Some(last)
                if last.gfn + last.len == run.gfn
                    && last.mfn + last.len == run.mfn
                    && (last.access, last.kind) == (run.access, run.kind) =>
            {
                last.len += run.len;
            }
            _ => out.push(run),
        }
    }
    out
}

/// What the p2m should translate.
trait Model {
    fn get(&self, gfn: u64) -> Option<Frame>;
    fn any_in(&self, start: u64, end: u64) -> bool;
    fn insert(&mut self, run: Run);
    /// Removes `[start, end)`; returns the number of frames that were mapped.
    fn remove(&mut self, start: u64, end: u64) -> u64;
    fn frames(&self) -> u64;
    fn runs(&self) -> Vec<Run>;
}

/// The obvious model: one entry per 4 KiB frame.
#[derive(Default)]
struct FrameModel(BTreeMap<u64, Frame>);

impl Model for FrameModel {
    fn get(&self, gfn: u64) -> Option<Frame> {
        self.0.get(&gfn).copied()
    }
    fn any_in(&self, start: u64, end: u64) -> bool {
        self.0.range(start..end).next().is_some()
    }
    fn insert(&mut self, run: Run) {
        for i in 0..run.len {
            self.0.insert(run.gfn + i, (Pfn::new(run.mfn + i), run.access, run.kind));
        }
    }
    fn remove(&mut self, start: u64, end: u64) -> u64 {
        let gone: Vec<u64> = self.0.range(start..end).map(|(&gfn, _)| gfn).collect();
        for gfn in &gone {
            self.0.remove(gfn);
        }
        gone.len() as u64
    }
    fn frames(&self) -> u64 {
        self.0.len() as u64
    }
    fn runs(&self) -> Vec<Run> {
        normalize(self.0.iter().map(|(&gfn, &(mfn, access, kind))| Run {
            gfn,
            len: 1,
            mfn: mfn.as_u64(),
            access,
            kind,
        }))
    }
}

/// A compact model: disjoint runs keyed by first gfn.
#[derive(Default)]
struct RunModel(BTreeMap<u64, Run>);

impl Model for RunModel {
    fn get(&self, gfn: u64) -> Option<Frame> {
        let (_, run) = self.0.range(..=gfn).next_back()?;
        (gfn < run.gfn + run.len).then(|| (Pfn::new(run.mfn + gfn - run.gfn), run.access, run.kind))
    }
    fn any_in(&self, start: u64, end: u64) -> bool {
        // The last run starting before `end` is the only one that can reach furthest.
        self.0.range(..end).next_back().is_some_and(|(_, run)| run.gfn + run.len > start)
    }
    fn insert(&mut self, run: Run) {
        self.0.insert(run.gfn, run);
    }
    fn remove(&mut self, start: u64, end: u64) -> u64 {
        let hit: Vec<Run> =
            self.0.range(..end).rev().map(|(_, run)| *run).take_while(|run| run.gfn + run.len > start).collect();
        let mut removed = 0;
        for run in hit {
            self.0.remove(&run.gfn);
            let (lo, hi) = (run.gfn.max(start), (run.gfn + run.len).min(end));
            removed += hi - lo;
            if run.gfn < lo {
                self.insert(Run { len: lo - run.gfn, ..run });
            }
            if hi < run.gfn + run.len {
                self.insert(Run { gfn: hi, len: run.gfn + run.len - hi, mfn: run.mfn + hi - run.gfn, ..run });
            }
        }
        removed
    }
    fn frames(&self) -> u64 {
        self.0.values().map(|run| run.len).sum()
    }
    fn runs(&self) -> Vec<Run> {
        normalize(self.0.values().copied())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map { gfn: u64, order: u8, mfn: u64, access: Access, kind: P2mType },
    Unmap { gfn: u64, order: u8 },
    Split { gfn: u64 },
    Replace { gfn: u64, new: Option<(u64, Access, P2mType)> },
}

/// One operation, run with at most `budget` new tables if given.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    budget: Option<usize>,
}

fn arb_access() -> impl Strategy<Value = Access> {
    proptest::sample::select(Access::ALL.to_vec())
}

fn arb_kind() -> impl Strategy<Value = P2mType> {
    proptest::sample::select(P2mType::ALL.to_vec())
}

/// Steps over gfns from `gfns`, mapping with orders from `map_orders` and unmapping with
/// orders from `unmap_orders`. Alignment is left to the harness.
fn arb_step(
    gfns: impl Strategy<Value = u64> + Clone + 'static,
    map_orders: Vec<u8>,
    unmap_orders: Vec<u8>,
) -> impl Strategy<Value = Step> {
    let mfn = 0u64..(1 << MAX_MFN_BITS);
    let op = prop_oneof![
        4 => (gfns.clone(), proptest::sample::select(map_orders), mfn.clone(), arb_access(), arb_kind())
            .prop_map(|(gfn, order, mfn, access, kind)| Op::Map { gfn, order, mfn, access, kind }),
        3 => (gfns.clone(), proptest::sample::select(unmap_orders)).prop_map(|(gfn, order)| Op::Unmap { gfn, order }),
        1 => gfns.clone().prop_map(|gfn| Op::Split { gfn }),
        2 => (gfns, proptest::option::of((mfn, arb_access(), arb_kind())))
            .prop_map(|(gfn, new)| Op::Replace { gfn, new }),
    ];
    let budget = prop_oneof![4 => Just(None), 1 => (0usize..2).prop_map(Some)];
    (op, budget).prop_map(|(op, budget)| Step { op, budget })
}

/// `Ok` unless out of memory, which is only allowed when the step had a budget.
fn allowed_oom<T>(result: Result<T, P2mError>, step: &Step) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(P2mError::OutOfMemory) if step.budget.is_some() => Ok(None),
        Err(e) => Err(TestCaseError::fail(std::format!("unexpected {e:?}"))),
    }
}

fn frame_of(mapping: Mapping) -> Frame {
    (mapping.mfn, mapping.access, mapping.kind)
}

/// Runs `step` on both the p2m and the model, checking the p2m's answer.
fn apply(step: &Step, p2m: &mut P2m, mem: &mut FakeMemory, model: &mut impl Model) -> Result<(), TestCaseError> {
    if let Some(budget) = step.budget {
        mem.allow(budget);
    }
    match step.op {
        Op::Map { gfn, order, mfn, access, kind } => {
            let (gfn, mfn) = (gfn & !((1 << order) - 1), mfn & !((1 << order) - 1));
            let result = p2m.map(mem, Gfn::new(gfn), Pfn::new(mfn), order, access, kind);
            if model.any_in(gfn, gfn + (1 << order)) {
                prop_assert_eq!(result, Err(P2mError::AlreadyMapped));
            } else if allowed_oom(result, step)?.is_some() {
                model.insert(Run { gfn, len: 1 << order, mfn, access, kind });
            }
        }
        Op::Unmap { gfn, order } => {
            let gfn = gfn & !((1 << order) - 1);
            let mut reported = Vec::new();
            let result = p2m.unmap(mem, Gfn::new(gfn), order, &mut |g, m| reported.push((g.as_u64(), m)));
            if !model.any_in(gfn, gfn + (1 << order)) {
                prop_assert_eq!(result, Err(P2mError::NotMapped));
                prop_assert!(reported.is_empty());
            } else if allowed_oom(result, step)?.is_some() {
                let mut frames = 0;
                for &(g, m) in &reported {
                    prop_assert!(g >= gfn && g + m.frames() <= gfn + (1 << order), "{:#x} outside", g);
                    prop_assert_eq!(model.get(g), Some(frame_of(m)));
                    let last = Mapping { mfn: Pfn::new(m.mfn.as_u64() + m.frames() - 1), ..m };
                    prop_assert_eq!(model.get(g + m.frames() - 1), Some(frame_of(last)));
                    frames += m.frames();
                }
                prop_assert!(reported.windows(2).all(|w| w[0].0 < w[1].0), "reports in gfn order");
                prop_assert_eq!(model.remove(gfn, gfn + (1 << order)), frames);
            } else {
                prop_assert!(reported.is_empty());
            }
        }
        Op::Split { gfn } => {
            let before = p2m.lookup(mem, Gfn::new(gfn));
            let result = p2m.split(mem, Gfn::new(gfn));
            match before {
                None => prop_assert_eq!(result, Err(P2mError::NotMapped)),
                Some(m) if m.order == 0 => prop_assert_eq!(result, Err(P2mError::NotLarge)),
                Some(m) => {
                    if allowed_oom(result, step)?.is_some() {
                        let after = p2m.lookup(mem, Gfn::new(gfn));
                        prop_assert_eq!(after.map(|a| a.order), Some(m.order - 9));
                    }
                }
            }
        }
        Op::Replace { gfn, new } => {
            let new = new.map(|(mfn, access, kind)| Mapping::page(Pfn::new(mfn), access, kind));
            let old = model.get(gfn);
            let result = p2m.replace(mem, Gfn::new(gfn), new);
            if let Some(returned) = allowed_oom(result, step)? {
                prop_assert_eq!(returned.map(|m| m.order), old.map(|_| 0));
                prop_assert_eq!(returned.map(frame_of), old);
                model.remove(gfn, gfn + 1);
                if let Some(m) = new {
                    model.insert(Run { gfn, len: 1, mfn: m.mfn.as_u64(), access: m.access, kind: m.kind });
                }
            }
        }
    }
    mem.unlimited();
    Ok(())
}

/// The p2m's leaves as runs.
fn leaf_runs(p2m: &P2m, mem: &FakeMemory) -> Vec<Run> {
    let mut runs = Vec::new();
    p2m.for_each(mem, &mut |gfn, m| {
        runs.push(Run { gfn: gfn.as_u64(), len: m.frames(), mfn: m.mfn.as_u64(), access: m.access, kind: m.kind })
    });
    runs
}

/// Everything that must hold between steps.
fn check(p2m: &P2m, mem: &FakeMemory, model: &impl Model, probes: &[u64]) -> Result<(), TestCaseError> {
    for &gfn in probes {
        let got = p2m.lookup(mem, Gfn::new(gfn));
        prop_assert_eq!(got.map(frame_of), model.get(gfn), "lookup of {:#x}", gfn);
        if let Some(m) = got {
            prop_assert!(matches!(m.order, 0 | 9 | 18));
        }
    }
    prop_assert_eq!(p2m.mapped_frames(), model.frames());
    prop_assert_eq!(normalize(leaf_runs(p2m, mem)), model.runs());
    prop_assert_eq!(p2m.check_invariants(mem), Ok(()));
    prop_assert_eq!(mem.live() as u64, p2m.table_frames());
    Ok(())
}

/// Runs `steps`, checking after each, then destroys the p2m.
fn run(steps: &[Step], mut model: impl Model, probes: &[u64]) -> Result<(), TestCaseError> {
    let mut mem = FakeMemory::new();
    let mut p2m = P2m::new(&mut mem).unwrap();
    for step in steps {
        apply(step, &mut p2m, &mut mem, &mut model)?;
        check(&p2m, &mem, &model, probes)?;
    }
    let leaves = leaf_runs(&p2m, &mem);
    let mut reported = Vec::new();
    p2m.destroy(&mut mem, &mut |gfn, m| {
        reported.push(Run { gfn: gfn.as_u64(), len: m.frames(), mfn: m.mfn.as_u64(), access: m.access, kind: m.kind })
    });
    prop_assert_eq!(reported, leaves);
    prop_assert_eq!(mem.live(), 0);
    Ok(())
}

/// First gfn of the per-frame window: four 2 MiB regions, two on each side of a 1 GiB line.
const WINDOW: u64 = GIB - 2 * MIB2;
/// First gfn of the run-model space: two 1 GiB regions, one on each side of a 512 GiB line.
const SPACE: u64 = (1 << 27) - GIB;
/// Offsets inside a 2 MiB region that ops in the run-model space use (and that ops in the
/// window favour, so that they meet each other's mappings).
const OFFSETS: [u64; 7] = [0, 1, 31, 32, 255, 256, 511];
/// 2 MiB regions of the run-model space that ops favour: the ends, and both sides of the
/// 512 GiB line (region 512).
const HOT_REGIONS: [u64; 7] = [0, 1, 255, 511, 512, 513, 1023];

/// Gfns in the per-frame window, mostly at a few offsets of its four 2 MiB regions.
fn window_gfns() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        3 => (0..4u64, proptest::sample::select(OFFSETS.to_vec())).prop_map(|(region, offset)| WINDOW + region * MIB2 + offset),
        1 => WINDOW..WINDOW + 4 * MIB2,
    ]
}

/// Gfns in the run-model space, mostly in a few of its 2 MiB regions.
fn space_gfns() -> impl Strategy<Value = u64> + Clone {
    let region = prop_oneof![3 => proptest::sample::select(HOT_REGIONS.to_vec()), 1 => 0..2 * GIB / MIB2];
    (region, proptest::sample::select(OFFSETS.to_vec())).prop_map(|(region, offset)| SPACE + region * MIB2 + offset)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_ops_match_a_per_frame_model(
        steps in proptest::collection::vec(
            arb_step(window_gfns(), std::vec![0, 0, 9], (0..=11).chain([18]).collect()),
            1..40,
        )
    ) {
        // Every frame of the window, and one on each side.
        let probes: Vec<u64> = (WINDOW - 1..=WINDOW + 4 * MIB2).collect();
        run(&steps, FrameModel::default(), &probes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_ops_with_1g_pages_match_a_run_model(
        steps in proptest::collection::vec(
            arb_step(space_gfns(), std::vec![0, 9, 18], std::vec![0, 5, 9, 12, 18]),
            1..24,
        )
    ) {
        let probes: Vec<u64> = (0..2 * GIB / MIB2)
            .flat_map(|region| OFFSETS.iter().map(move |offset| SPACE + region * MIB2 + offset))
            .collect();
        run(&steps, RunModel::default(), &probes)?;
    }
}
