//! [`Runqueue`]: a group of pCPUs sharing one credit-ordered queue of vCPUs.
//!
//! credit2 groups pCPUs into runqueues (by default one per socket) and
//! balances load between them. keel has one runqueue holding every pCPU, so
//! there is no balancing yet; the type exists so that more can be added.
//! Besides the queue itself it tracks which of its CPUs are idle and which
//! have been asked ("tickled") to reschedule but have not done so yet.

use alloc::vec::Vec;

use crate::cpuset::CpuSet;
use crate::VcpuKey;

/// pCPUs sharing a queue of runnable vCPUs ordered by credit.
#[derive(Clone, Debug)]
pub(crate) struct Runqueue {
    /// Its CPUs.
    pub(crate) active: CpuSet,
    /// Its CPUs running no vCPU.
    pub(crate) idle: CpuSet,
    /// Its CPUs asked to reschedule that have not done so yet.
    pub(crate) tickled: CpuSet,
    /// Highest weight among the vCPUs assigned to it (at least 1).
    pub(crate) max_weight: u32,
    /// Waiting vCPUs, highest credit first; equal credits in arrival order.
    queue: Vec<VcpuKey>,
}

impl Runqueue {
    /// An empty runqueue over `cpus`, all idle.
    pub(crate) fn new(cpus: CpuSet) -> Self {
        Runqueue { active: cpus, idle: cpus, tickled: CpuSet::new(), max_weight: 1, queue: Vec::new() }
    }

    /// Queues `v` with `credit` behind every vCPU with at least as much
    /// credit; `credit_of` gives the credit of those already queued.
    pub(crate) fn insert(&mut self, v: VcpuKey, credit: i64, credit_of: impl Fn(VcpuKey) -> i64) {
        let pos = self.queue.iter().position(|&q| credit > credit_of(q)).unwrap_or(self.queue.len());
        self.queue.insert(pos, v);
    }

    /// Takes `v` out of the queue; returns whether it was there.
    pub(crate) fn remove(&mut self, v: VcpuKey) -> bool {
        match self.queue.iter().position(|&q| q == v) {
            Some(pos) => {
                self.queue.remove(pos);
                true
            }
            None => false,
        }
    }

    /// The `i`-th waiting vCPU (0 = most credit).
    pub(crate) fn at(&self, i: usize) -> Option<VcpuKey> {
        self.queue.get(i).copied()
    }

    /// The waiting vCPU with the most credit.
    pub(crate) fn head(&self) -> Option<VcpuKey> {
        self.at(0)
    }

    /// The waiting vCPUs in queue order.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> &[VcpuKey] {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[test]
    fn ordered_by_credit_then_arrival() {
        let credits: BTreeMap<u32, i64> = [(1, 5), (2, 9), (3, 5), (4, 7), (5, 5)].into_iter().collect();
        let mut rq = Runqueue::new(CpuSet::range(0..2));
        for (&k, &c) in &credits {
            rq.insert(VcpuKey(k), c, |q| credits[&q.0]);
        }
        let order: Vec<u32> = rq.queued().iter().map(|k| k.0).collect();
        assert_eq!(order, [2, 4, 1, 3, 5]);
        assert_eq!(rq.head(), Some(VcpuKey(2)));
        assert!(rq.remove(VcpuKey(4)));
        assert!(!rq.remove(VcpuKey(4)));
        assert_eq!(rq.at(1), Some(VcpuKey(1)));
        assert_eq!(rq.at(4), None);
    }
}
