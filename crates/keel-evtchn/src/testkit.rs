//! Test fixtures: guest memory as plain heap atomics, and a guest that consumes events the
//! way Linux 6.1 does (`drivers/xen/events/events_2l.c` and `events_fifo.c`), so that tests
//! can check what a real guest would see.

use std::string::{String, ToString};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};
use std::sync::Arc;
use std::vec::Vec;

use xen_abi::event_channel::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_PENDING,
};
use xen_abi::{DomId, EvtchnPort};

use crate::memory::{GuestPage, SharedWords, TWO_LEVEL_WORDS, WORDS_PER_PAGE};
use crate::{Evtchn, Notify};

pub const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
pub const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
pub const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
pub const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;

/// One vCPU's `vcpu_info` fields.
#[derive(Default)]
pub struct VcpuInfo {
    pub sel: AtomicU64,
    pub upcall: AtomicU8,
}

/// The shared-info bitmaps and every vCPU's `vcpu_info`.
pub struct SharedMem {
    pub pending: [AtomicU64; TWO_LEVEL_WORDS],
    pub mask: [AtomicU64; TWO_LEVEL_WORDS],
    pub vcpus: Vec<VcpuInfo>,
}

/// [`SharedWords`] on the heap, shared between the hypervisor side and the test's guest.
#[derive(Clone)]
pub struct FakeShared(pub Arc<SharedMem>);

impl FakeShared {
    /// `nr_vcpus` vCPUs with a `vcpu_info`; higher vCPU numbers have none.
    pub fn new(nr_vcpus: u32) -> Self {
        Self(Arc::new(SharedMem {
            pending: std::array::from_fn(|_| AtomicU64::new(0)),
            mask: std::array::from_fn(|_| AtomicU64::new(0)),
            vcpus: (0..nr_vcpus).map(|_| VcpuInfo::default()).collect(),
        }))
    }
}

impl SharedWords for FakeShared {
    fn pending(&self, word: usize) -> &AtomicU64 {
        &self.0.pending[word]
    }
    fn mask(&self, word: usize) -> &AtomicU64 {
        &self.0.mask[word]
    }
    fn pending_sel(&self, vcpu: u32) -> Option<&AtomicU64> {
        self.0.vcpus.get(vcpu as usize).map(|v| &v.sel)
    }
    fn upcall_pending(&self, vcpu: u32) -> Option<&AtomicU8> {
        self.0.vcpus.get(vcpu as usize).map(|v| &v.upcall)
    }
}

/// A guest page's words.
pub struct PageMem {
    pub words: [AtomicU32; WORDS_PER_PAGE],
}

/// [`GuestPage`] on the heap, shared between the hypervisor side and the test's guest.
#[derive(Clone)]
pub struct FakePage(pub Arc<PageMem>);

impl FakePage {
    /// A zeroed page.
    pub fn new() -> Self {
        Self(Arc::new(PageMem { words: std::array::from_fn(|_| AtomicU32::new(0)) }))
    }

    /// A page of event words all MASKED, as Linux initialises each page it adds.
    pub fn masked() -> Self {
        Self(Arc::new(PageMem { words: std::array::from_fn(|_| AtomicU32::new(MASKED)) }))
    }
}

impl GuestPage for FakePage {
    fn words(&self) -> &[AtomicU32; WORDS_PER_PAGE] {
        &self.0.words
    }
}

pub type TestEvtchn = Evtchn<FakeShared, FakePage>;

/// The guest side of a domain: what Linux keeps and does. Clones share the memory (one
/// clone per vCPU thread in the concurrency tests).
#[derive(Clone)]
pub struct Guest {
    pub shared: FakeShared,
    /// FIFO control block page of each vCPU (block at offset 0), once registered.
    pub control: Vec<Option<FakePage>>,
    /// FIFO event array pages.
    pub array: Vec<FakePage>,
    /// Linux's per-CPU copy of each queue's head (`cpu_queue`).
    pub local_heads: Vec<[u32; EVTCHN_FIFO_MAX_QUEUES]>,
}

/// A domain with `vcpus` vCPUs and ports up to `max_port`, and its guest.
pub fn domain(domid: u16, vcpus: u32, max_port: u32) -> (TestEvtchn, Guest) {
    let shared = FakeShared::new(vcpus);
    let guest = Guest {
        shared: shared.clone(),
        control: (0..vcpus).map(|_| None).collect(),
        array: Vec::new(),
        local_heads: (0..vcpus).map(|_| [0; EVTCHN_FIFO_MAX_QUEUES]).collect(),
    };
    (Evtchn::new(DomId(domid), vcpus, max_port, shared), guest)
}

impl Guest {
    pub fn is_fifo(&self) -> bool {
        !self.control.is_empty() && self.control.iter().any(|c| c.is_some())
    }

    /// Switches to FIFO as Linux does: a control block for every vCPU, then `pages` event
    /// array pages initialised MASKED.
    pub fn init_fifo(&mut self, evtchn: &mut TestEvtchn, pages: usize) -> Vec<Notify> {
        for v in 0..self.control.len() {
            let page = FakePage::new();
            let p = page.clone();
            evtchn.init_control(v as u32, 0, move || Ok(p)).expect("init_control");
            self.control[v] = Some(page);
            self.local_heads[v] = [0; EVTCHN_FIFO_MAX_QUEUES];
        }
        let mut out = Vec::new();
        for _ in 0..pages {
            let page = FakePage::masked();
            let p = page.clone();
            out.extend(evtchn.expand_array(move || Ok(p)).expect("expand_array"));
            self.array.push(page);
        }
        out
    }

    /// Forgets the FIFO state (after `EVTCHNOP_reset` put the domain back on 2-level).
    pub fn back_to_two_level(&mut self) {
        for c in &mut self.control {
            *c = None;
        }
        self.array.clear();
    }

    pub fn word(&self, port: u32) -> Option<&AtomicU32> {
        let page = self.array.get(port as usize / WORDS_PER_PAGE)?;
        Some(&page.0.words[port as usize % WORDS_PER_PAGE])
    }

    fn bits(port: u32) -> (usize, u64) {
        (port as usize / 64, 1u64 << (port % 64))
    }

    pub fn is_masked(&self, port: u32) -> bool {
        if self.is_fifo() {
            self.word(port).is_none_or(|w| w.load(SeqCst) & MASKED != 0)
        } else {
            let (w, b) = Self::bits(port);
            self.shared.0.mask[w].load(SeqCst) & b != 0
        }
    }

    pub fn is_pending(&self, port: u32) -> bool {
        if self.is_fifo() {
            self.word(port).is_some_and(|w| w.load(SeqCst) & PENDING != 0)
        } else {
            let (w, b) = Self::bits(port);
            self.shared.0.pending[w].load(SeqCst) & b != 0
        }
    }

    /// Linux `mask_evtchn`.
    pub fn mask(&self, port: u32) {
        if self.is_fifo() {
            if let Some(w) = self.word(port) {
                w.fetch_or(MASKED, SeqCst);
            }
        } else {
            let (w, b) = Self::bits(port);
            self.shared.0.mask[w].fetch_or(b, SeqCst);
        }
    }

    /// Linux `unmask_evtchn` for an HVM guest: clear the mask locally unless the port is
    /// pending, in which case `EVTCHNOP_unmask` (through `hypercall`) redelivers it.
    pub fn unmask(&self, port: u32, hypercall: impl FnOnce(EvtchnPort)) {
        if self.is_fifo() {
            let Some(word) = self.word(port) else { return };
            // `clear_masked_cond`: waits while BUSY, never clears MASKED of a pending port.
            let mut w = word.load(SeqCst);
            loop {
                if w & MASKED == 0 {
                    return;
                }
                if w & PENDING != 0 {
                    hypercall(EvtchnPort(port));
                    return;
                }
                let old = w & !BUSY;
                match word.compare_exchange(old, old & !MASKED, SeqCst, SeqCst) {
                    Ok(_) => return,
                    Err(now) => {
                        w = now;
                        std::hint::spin_loop();
                    }
                }
            }
        } else {
            let (w, b) = Self::bits(port);
            self.shared.0.mask[w].fetch_and(!b, SeqCst);
            if self.shared.0.pending[w].load(SeqCst) & b != 0 {
                self.shared.0.mask[w].fetch_or(b, SeqCst);
                hypercall(EvtchnPort(port));
            }
        }
    }

    /// The upcall handler of `vcpu` (`__xen_evtchn_do_upcall`): handles events until
    /// `evtchn_upcall_pending` stays clear and returns the ports handled. `bound_here` says
    /// whether a port is bound to this vCPU (Linux's `cpu_evtchn_mask`, 2-level only; the
    /// FIFO queues are per vCPU already). Handling a port clears its pending bit (Linux
    /// acks edge events that way); a port seen pending but already cleared is not counted.
    pub fn upcall(&mut self, vcpu: u32, bound_here: impl Fn(u32) -> bool) -> Result<Vec<u32>, String> {
        let mut handled = Vec::new();
        let shared = self.shared.clone();
        let info = &shared.0.vcpus[vcpu as usize];
        for _ in 0..10_000 {
            info.upcall.store(0, SeqCst);
            if self.is_fifo() {
                self.fifo_events(vcpu, &mut handled)?;
            } else {
                self.two_level_events(vcpu, &bound_here, &mut handled);
            }
            if info.upcall.load(SeqCst) == 0 {
                return Ok(handled);
            }
        }
        Err("upcall handler never finished".to_string())
    }

    /// `evtchn_2l_handle_events`, without the fairness bookkeeping.
    fn two_level_events(&self, vcpu: u32, bound_here: &impl Fn(u32) -> bool, handled: &mut Vec<u32>) {
        let s = &self.shared.0;
        let mut words = s.vcpus[vcpu as usize].sel.swap(0, SeqCst);
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut bits = s.pending[w].load(SeqCst) & !s.mask[w].load(SeqCst);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let port = (w as u32) * 64 + b;
                if bound_here(port) && s.pending[w].fetch_and(!(1 << b), SeqCst) & (1 << b) != 0 {
                    handled.push(port);
                }
            }
        }
    }

    /// `__evtchn_fifo_handle_events`.
    fn fifo_events(&mut self, vcpu: u32, handled: &mut Vec<u32>) -> Result<(), String> {
        let Some(cb) = self.control[vcpu as usize].clone() else {
            return Err(std::format!("vCPU {vcpu} upcalled without a control block"));
        };
        let mut ready = cb.0.words[0].swap(0, SeqCst);
        let mut steps = 0;
        while ready != 0 {
            steps += 1;
            if steps > 1_000_000 {
                return Err("FIFO queue never drained".to_string());
            }
            let q = ready.trailing_zeros() as usize;
            self.consume_one(vcpu, &cb, q, &mut ready, handled)?;
            ready |= cb.0.words[0].swap(0, SeqCst);
        }
        Ok(())
    }

    /// `consume_one_event`.
    fn consume_one(
        &mut self,
        vcpu: u32,
        cb: &FakePage,
        q: usize,
        ready: &mut u32,
        handled: &mut Vec<u32>,
    ) -> Result<(), String> {
        let mut head = self.local_heads[vcpu as usize][q];
        if head == 0 {
            head = cb.0.words[2 + q].load(SeqCst);
        }
        let port = head;
        let word = self.word(port).ok_or_else(|| std::format!("queue {q} of vCPU {vcpu} names port {port}"))?;
        // `clear_linked`.
        let mut w = word.load(SeqCst);
        let next = loop {
            let new = w & !(LINKED | EVTCHN_FIFO_LINK_MASK);
            match word.compare_exchange(w, new, SeqCst, SeqCst) {
                Ok(_) => break w & EVTCHN_FIFO_LINK_MASK,
                Err(now) => w = now,
            }
        };
        if next == 0 {
            *ready &= !(1 << q);
        }
        let now = word.load(SeqCst);
        if port != 0 && now & PENDING != 0 && now & MASKED == 0 && word.fetch_and(!PENDING, SeqCst) & PENDING != 0 {
            handled.push(port);
        }
        self.local_heads[vcpu as usize][q] = next;
        Ok(())
    }
}
