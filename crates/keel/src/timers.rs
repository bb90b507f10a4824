//! Timers that fire while no vCPU of theirs runs: the wake-up times of blocked vCPUs (their
//! vLAPIC and Xen timers, their poll timeouts) and domains' watchdogs.
//!
//! A running vCPU's timers are the business of the CPU running it (it arms its own APIC timer
//! for them). When a vCPU blocks, its next deadline goes here, and CPU 0 arms its timer for
//! the earliest and wakes the vCPUs whose time has come. Entries are never removed early: a
//! stale one (the vCPU woke, the watchdog was fed) finds nothing to do when it expires.

use alloc::collections::BinaryHeap;
use alloc::sync::{Arc, Weak};
use core::cmp::{Ordering as CmpOrdering, Reverse};

use crate::dom::vcpu::Vcpu;
use crate::sync::IrqMutex;

/// What an entry is for.
enum Target {
    /// Wake this vCPU (it re-checks its own timers).
    Vcpu(Weak<Vcpu>),
    /// Watchdog `slot` of domain `domid`, if it is still set to this entry's deadline.
    Watchdog { domid: crate::dom::DomId, slot: usize },
}

struct Entry {
    deadline: u64,
    seq: u64,
    target: Target,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (self.deadline, self.seq).cmp(&(o.deadline, o.seq))
    }
}

struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

static QUEUE: IrqMutex<Queue> = IrqMutex::new(Queue { heap: BinaryHeap::new(), seq: 0 });

/// Wake `v` at `deadline` (monotonic ns) if it is still blocked then.
pub fn add(deadline: u64, v: &Arc<Vcpu>) {
    push(deadline, Target::Vcpu(Arc::downgrade(v)));
}

/// Fire watchdog `slot` of domain `domid` at `deadline`, unless it was fed or stopped.
pub fn add_watchdog(deadline: u64, domid: crate::dom::DomId, slot: usize) {
    push(deadline, Target::Watchdog { domid, slot });
}

fn push(deadline: u64, target: Target) {
    let earliest = {
        let mut q = QUEUE.lock();
        q.seq += 1;
        let seq = q.seq;
        q.heap.push(Reverse(Entry { deadline, seq, target }));
        q.heap.peek().map(|e| e.0.deadline)
    };
    if earliest == Some(deadline) {
        // CPU 0 may be halted with its timer armed for later.
        crate::sched::kick_idle();
    }
}

/// The earliest deadline, for the CPU that keeps the queue (CPU 0); `None` for the others.
pub fn earliest_for(cpu: u32) -> Option<u64> {
    if cpu != 0 {
        return None;
    }
    QUEUE.lock().heap.peek().map(|e| e.0.deadline)
}

/// Wake every vCPU whose deadline has passed.
pub fn expire(now: u64) {
    loop {
        let due = {
            let mut q = QUEUE.lock();
            match q.heap.peek() {
                Some(e) if e.0.deadline <= now => q.heap.pop().map(|e| e.0),
                _ => None,
            }
        };
        let Some(entry) = due else { break };
        match entry.target {
            Target::Vcpu(weak) => {
                if let Some(v) = weak.upgrade() {
                    v.timer_expired(now);
                }
            }
            Target::Watchdog { domid, slot } => {
                if let Some(d) = crate::dom::get(domid) {
                    d.watchdog_expired(slot, entry.deadline);
                }
            }
        }
    }
}
