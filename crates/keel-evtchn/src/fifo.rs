//! Delivery for the FIFO ABI: event words in guest pages, per-vCPU control blocks, and the
//! per-(vCPU, priority) queues whose tails only the hypervisor knows.
//!
//! The guest consumes a queue from its head while keel appends at the tail, both at once, so
//! the tail word is updated with the compare-exchange protocol of Xen's `evtchn_fifo_set_link`
//! (`xen/common/event_fifo.c`): the link is written only while the tail word is still LINKED;
//! if the guest already unlinked it, the queue is empty and the new event becomes the head in
//! the control block instead (and sets the queue's `ready` bit, which may need an upcall).
//! While keel retries, it sets BUSY in the tail word so that the guest cannot clear MASKED
//! under it (Linux's `clear_masked_cond` waits for BUSY to clear); a guest that keeps
//! changing the word anyway gets at most five attempts, after which Xen (and keel) gives up,
//! leaving the event pending and linked.
//!
//! A port remembers the last queue it was linked on. When it is linked again, on a queue
//! that may differ (`EVTCHNOP_bind_vcpu` or `EVTCHNOP_set_priority` in between), and it was
//! still that old queue's tail, the old tail is forgotten: otherwise the next event on the
//! old queue would be linked after this port, which now lives in another queue, and be
//! lost. An event that is still LINKED when its port moves stays where it is and is
//! consumed from the old queue, as with Xen.
//!
//! The crate never follows a LINK or head written by the guest: it only reads the event
//! words of ports it owns and the tails it recorded itself, so hostile contents cannot make
//! it index out of bounds.

use alloc::vec::Vec;
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::SeqCst;

use xen_abi::event_channel::{
    EvtchnFifoControlBlock, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_DEFAULT,
};
use xen_abi::{Errno, EvtchnPort, XEN_PAGE_SIZE};

use crate::memory::{GuestPage, SharedWords, WORDS_PER_PAGE};
use crate::notify::Raised;
use crate::two_level::mark_events_pending;

const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;

/// Pages of event words a domain can have: enough for every port the ABI addresses.
pub const MAX_EVENT_ARRAY_PAGES: usize = EVTCHN_FIFO_NR_CHANNELS as usize / WORDS_PER_PAGE;

/// Compare-exchange attempts on a tail word after the first one fails (Xen's bound).
const SET_LINK_RETRIES: usize = 4;

/// Size of `struct evtchn_fifo_control_block`.
const CONTROL_BLOCK_SIZE: usize = core::mem::size_of::<EvtchnFifoControlBlock>();

/// One of a domain's FIFO queues: a vCPU's queue of one priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueId {
    /// The vCPU.
    pub vcpu: u32,
    /// The priority (0 highest, 15 lowest).
    pub priority: u8,
}

/// A port's FIFO state in the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortFifo {
    /// Priority for the next time the port is linked.
    pub priority: u8,
    /// The queue the port was last linked on. Kept when the port is freed: its old queue
    /// may still name it as tail.
    pub last_queue: QueueId,
    /// Raised while its event word's page was missing: raise again when the page is added.
    pub pending_without_word: bool,
}

impl PortFifo {
    /// A port that was never linked: default priority, last queue (vCPU 0, priority 0) as
    /// Xen's zeroed `fifo_lastq`.
    pub const INITIAL: PortFifo = PortFifo {
        priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
        last_queue: QueueId { vcpu: 0, priority: 0 },
        pending_without_word: false,
    };
}

impl Default for PortFifo {
    fn default() -> Self {
        Self::INITIAL
    }
}

/// A vCPU's registered control block.
struct ControlBlock<P> {
    page: P,
    /// Index of `ready` in the page's words.
    base: usize,
}

impl<P: GuestPage> ControlBlock<P> {
    fn ready(&self) -> &AtomicU32 {
        &self.page.words()[self.base]
    }

    fn head(&self, priority: u8) -> &AtomicU32 {
        // `head[]` follows `ready` and `_rsvd`; `base` was checked so that the whole block
        // fits in the page, and `priority` < 16.
        &self.page.words()[self.base + 2 + usize::from(priority) % EVTCHN_FIFO_MAX_QUEUES]
    }
}

/// A vCPU's FIFO state.
struct FifoVcpu<P> {
    control: Option<ControlBlock<P>>,
    /// Tail port of each priority's queue; 0 when the hypervisor knows of no tail.
    tails: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

/// A domain's FIFO state: event array pages and per-vCPU queues.
pub(crate) struct Fifo<P> {
    vcpus: Vec<FifoVcpu<P>>,
    pages: Vec<P>,
}

/// Checks a control block offset from `EVTCHNOP_init_control` and returns the index of its
/// first word. Xen: the block must not cross the page (`-EINVAL`), then must be 8-aligned
/// (`-EINVAL`).
pub(crate) fn control_block_base(offset: u32) -> Result<usize, Errno> {
    let offset = offset as usize;
    if offset > XEN_PAGE_SIZE - CONTROL_BLOCK_SIZE || !offset.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    Ok(offset / 4)
}

/// The event word of `port` in `pages`, if its page is present.
fn word_in<P: GuestPage>(pages: &[P], port: EvtchnPort) -> Option<&AtomicU32> {
    let port = port.0 as usize;
    pages.get(port / WORDS_PER_PAGE).map(|page| &page.words()[port % WORDS_PER_PAGE])
}

/// Tries once to write `link` into the tail word if it is still LINKED (clearing BUSY in the
/// same write). `Some(linked)`: done; `None`: the word changed under us, `seen` holds it.
fn try_set_link(word: &AtomicU32, seen: &mut u32, link: u32) -> Option<bool> {
    if *seen & LINKED == 0 {
        return Some(false);
    }
    let new = (*seen & !(BUSY | EVTCHN_FIFO_LINK_MASK)) | link;
    match word.compare_exchange(*seen, new, SeqCst, SeqCst) {
        Ok(_) => Some(true),
        Err(now) => {
            *seen = now;
            None
        }
    }
}

/// Links `link` after the tail `word` if the tail is still LINKED (Xen
/// `evtchn_fifo_set_link`). False: the guest already consumed the tail, the queue is empty.
fn set_link(word: &AtomicU32, link: u32) -> bool {
    let mut seen = word.load(SeqCst);
    if let Some(linked) = try_set_link(word, &mut seen, link) {
        return linked;
    }
    // Keep the guest from unmasking the tail while we retry. The guest may still set
    // MASKED, clear PENDING and unlink; a well-behaved guest can thus fail us at most four
    // more times.
    word.fetch_or(BUSY, SeqCst);
    seen = word.load(SeqCst);
    for _ in 0..SET_LINK_RETRIES {
        if let Some(linked) = try_set_link(word, &mut seen, link) {
            if !linked {
                word.fetch_and(!BUSY, SeqCst);
            }
            return linked;
        }
    }
    // A guest breaking the protocol: give up as Xen does, treating the event as linked (it
    // stays PENDING and LINKED in its own word).
    word.fetch_and(!BUSY, SeqCst);
    true
}

impl<P: GuestPage> Fifo<P> {
    /// FIFO state for `nr_vcpus` vCPUs with no control block and no event page yet.
    pub fn new(nr_vcpus: u32) -> Self {
        let vcpus = (0..nr_vcpus).map(|_| FifoVcpu { control: None, tails: [0; EVTCHN_FIFO_MAX_QUEUES] }).collect();
        Self { vcpus, pages: Vec::new() }
    }

    /// Ports that have an event word (pages present × 1024).
    pub fn event_words(&self) -> u32 {
        // At most MAX_EVENT_ARRAY_PAGES × 1024 = 2^17.
        (self.pages.len() * WORDS_PER_PAGE) as u32
    }

    /// The event word of `port`, if its page is present.
    pub fn word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        word_in(&self.pages, port)
    }

    /// Whether `vcpu` has a control block (false for a vCPU the domain does not have).
    pub fn has_control_block(&self, vcpu: u32) -> bool {
        self.vcpus.get(vcpu as usize).is_some_and(|v| v.control.is_some())
    }

    /// Registers `vcpu`'s control block at word index `base` of `page` (from
    /// [`control_block_base`]). The caller checked that `vcpu` exists and has none yet.
    pub fn set_control_block(&mut self, vcpu: u32, page: P, base: usize) {
        if let Some(v) = self.vcpus.get_mut(vcpu as usize) {
            v.control = Some(ControlBlock { page, base });
        }
    }

    /// Whether another event array page fits (else `EVTCHNOP_expand_array` fails -ENOSPC).
    pub fn can_add_page(&self) -> bool {
        self.pages.len() < MAX_EVENT_ARRAY_PAGES
    }

    /// Appends an event array page (the caller checked [`Fifo::can_add_page`]); returns the
    /// ports it covers.
    pub fn add_page(&mut self, page: P) -> core::ops::Range<u32> {
        let first = self.event_words();
        self.pages.push(page);
        first..self.event_words()
    }

    /// Whether `port` is pending (false without an event word, as Xen).
    pub fn is_pending(&self, port: EvtchnPort) -> bool {
        self.word(port).is_some_and(|w| w.load(SeqCst) & PENDING != 0)
    }

    /// Whether `port` is masked (true without an event word, as Xen).
    pub fn is_masked(&self, port: EvtchnPort) -> bool {
        self.word(port).is_none_or(|w| w.load(SeqCst) & MASKED != 0)
    }

    /// Whether `port` is still on a queue, and so not reusable yet (Xen `evtchn_fifo_is_busy`).
    pub fn is_busy(&self, port: EvtchnPort) -> bool {
        self.word(port).is_some_and(|w| w.load(SeqCst) & LINKED != 0)
    }

    /// Clears PENDING (Xen `evtchn_fifo_clear_pending`). The word stays linked if it is: the
    /// guest unlinks it and ignores it because it is not pending.
    pub fn clear_pending(&self, port: EvtchnPort) {
        if let Some(w) = self.word(port) {
            w.fetch_and(!PENDING, SeqCst);
        }
    }

    /// Raises `port` for `vcpu` (Xen `evtchn_fifo_set_pending`).
    pub fn set_pending<S: SharedWords>(
        &mut self,
        shared: &S,
        fifo: &mut PortFifo,
        port: EvtchnPort,
        vcpu: u32,
    ) -> Raised {
        let Some(word) = word_in(&self.pages, port) else {
            // No event word yet: remember it for when the page arrives.
            fifo.pending_without_word = true;
            return Raised::NONE;
        };
        let q = QueueId { vcpu, priority: fifo.priority };
        let old_q = fifo.last_queue;
        // A vCPU without a control block cannot have unmasked anything yet (the guest must
        // register it first): Xen drops the event.
        let Some(v) = self.vcpus.get(vcpu as usize) else {
            return Raised::NONE;
        };
        if v.control.is_none() {
            return Raised::NONE;
        }

        let newly_pending = word.fetch_or(PENDING, SeqCst) & PENDING == 0;
        let mut started_queue = false;
        if word.load(SeqCst) & MASKED == 0 && word.fetch_or(LINKED, SeqCst) & LINKED == 0 {
            if let Some(tail) = self.tail_mut(old_q) {
                if *tail == port.0 {
                    *tail = 0;
                }
            }
            fifo.last_queue = q;
            let tail = self.tail_mut(q).map_or(0, |t| *t);
            // The tail is a port we linked ourselves; its page cannot have gone away.
            let linked = tail != 0 && word_in(&self.pages, EvtchnPort(tail)).is_some_and(|tw| set_link(tw, port.0));
            if !linked {
                if let Some(cb) = self.control(vcpu) {
                    cb.head(q.priority).store(port.0, SeqCst);
                }
                started_queue = true;
            }
            if let Some(t) = self.tail_mut(q) {
                *t = port.0;
            }
        }

        let mut upcall = None;
        if started_queue {
            if let Some(cb) = self.control(vcpu) {
                let bit = 1u32 << q.priority;
                if cb.ready().fetch_or(bit, SeqCst) & bit == 0 {
                    upcall = mark_events_pending(shared, vcpu);
                }
            }
        }
        Raised { newly_pending, upcall }
    }

    /// `EVTCHNOP_unmask` (Xen `evtchn_fifo_unmask`): clears MASKED and, if the port is
    /// pending, raises it again so that it gets linked.
    pub fn unmask<S: SharedWords>(&mut self, shared: &S, fifo: &mut PortFifo, port: EvtchnPort, vcpu: u32) -> Raised {
        let Some(word) = self.word(port) else {
            return Raised::NONE;
        };
        word.fetch_and(!MASKED, SeqCst);
        if word.load(SeqCst) & PENDING != 0 {
            self.set_pending(shared, fifo, port, vcpu)
        } else {
            Raised::NONE
        }
    }

    fn control(&self, vcpu: u32) -> Option<&ControlBlock<P>> {
        self.vcpus.get(vcpu as usize)?.control.as_ref()
    }

    fn tail_mut(&mut self, q: QueueId) -> Option<&mut u32> {
        self.vcpus.get_mut(q.vcpu as usize)?.tails.get_mut(usize::from(q.priority))
    }

    /// The tail the hypervisor recorded for queue `q` (0: none), for tests.
    #[cfg(test)]
    pub fn tail(&self, vcpu: u32, priority: u8) -> u32 {
        self.vcpus[vcpu as usize].tails[usize::from(priority)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakePage, FakeShared};

    fn fifo_with(vcpus: u32) -> (Fifo<FakePage>, FakeShared, std::vec::Vec<FakePage>) {
        let shared = FakeShared::new(vcpus);
        let mut fifo = Fifo::new(vcpus);
        let mut cbs = std::vec::Vec::new();
        for v in 0..vcpus {
            let page = FakePage::new();
            cbs.push(page.clone());
            fifo.set_control_block(v, page, control_block_base(8).unwrap());
        }
        let _ = fifo.add_page(FakePage::new());
        (fifo, shared, cbs)
    }

    fn word(f: &Fifo<FakePage>, port: u32) -> u32 {
        f.word(EvtchnPort(port)).unwrap().load(SeqCst)
    }

    /// `head[prio]` of the control block at offset 8.
    fn head(cb: &FakePage, prio: usize) -> u32 {
        cb.0.words[2 + 2 + prio].load(SeqCst)
    }

    fn ready(cb: &FakePage) -> u32 {
        cb.0.words[2].load(SeqCst)
    }

    #[test]
    fn control_block_offsets() {
        assert_eq!(control_block_base(0), Ok(0));
        assert_eq!(control_block_base(8), Ok(2));
        assert_eq!(control_block_base(4096 - 72), Ok((4096 - 72) / 4));
        assert_eq!(control_block_base(4096 - 64), Err(Errno::EINVAL));
        assert_eq!(control_block_base(4), Err(Errno::EINVAL));
        assert_eq!(control_block_base(u32::MAX), Err(Errno::EINVAL));
    }

    #[test]
    fn first_event_starts_a_queue_and_upcalls_then_others_link_behind() {
        let (mut f, s, cbs) = fifo_with(1);
        let mut a = PortFifo::default();
        let mut b = PortFifo::default();
        let r = f.set_pending(&s, &mut a, EvtchnPort(3), 0);
        assert_eq!(r, Raised { newly_pending: true, upcall: Some(0) });
        assert_eq!(word(&f, 3), PENDING | LINKED);
        assert_eq!(head(&cbs[0], 7), 3);
        assert_eq!(ready(&cbs[0]), 1 << 7);
        assert_eq!(f.tail(0, 7), 3);
        assert_eq!(a.last_queue, QueueId { vcpu: 0, priority: 7 });
        // Second event: linked behind port 3, no ready change, no upcall.
        let r = f.set_pending(&s, &mut b, EvtchnPort(9), 0);
        assert_eq!(r, Raised { newly_pending: true, upcall: None });
        assert_eq!(word(&f, 3), PENDING | LINKED | 9);
        assert_eq!(head(&cbs[0], 7), 3, "head untouched");
        assert_eq!(f.tail(0, 7), 9);
        // Raising a linked, pending port again does nothing.
        assert_eq!(f.set_pending(&s, &mut a, EvtchnPort(3), 0), Raised::NONE);
    }

    #[test]
    fn consumed_tail_makes_the_next_event_a_new_head() {
        let (mut f, s, cbs) = fifo_with(1);
        let mut a = PortFifo::default();
        let mut b = PortFifo::default();
        let _ = f.set_pending(&s, &mut a, EvtchnPort(3), 0);
        // The guest consumes port 3 (unlinks it, clears PENDING, clears ready).
        f.word(EvtchnPort(3)).unwrap().store(0, SeqCst);
        cbs[0].0.words[2].store(0, SeqCst);
        s.0.vcpus[0].upcall.store(0, SeqCst);
        let r = f.set_pending(&s, &mut b, EvtchnPort(4), 0);
        assert_eq!(r, Raised { newly_pending: true, upcall: Some(0) });
        assert_eq!(head(&cbs[0], 7), 4);
        assert_eq!(word(&f, 3), 0, "stale tail not written");
    }

    #[test]
    fn masked_event_is_pending_but_not_linked_until_unmask() {
        let (mut f, s, cbs) = fifo_with(1);
        let mut a = PortFifo::default();
        f.word(EvtchnPort(5)).unwrap().store(MASKED, SeqCst);
        assert_eq!(f.set_pending(&s, &mut a, EvtchnPort(5), 0), Raised { newly_pending: true, upcall: None });
        assert_eq!(word(&f, 5), PENDING | MASKED);
        assert!(f.is_masked(EvtchnPort(5)) && f.is_pending(EvtchnPort(5)) && !f.is_busy(EvtchnPort(5)));
        let r = f.unmask(&s, &mut a, EvtchnPort(5), 0);
        assert_eq!(r, Raised { newly_pending: false, upcall: Some(0) });
        assert_eq!(word(&f, 5), PENDING | LINKED);
        assert_eq!(head(&cbs[0], 7), 5);
        // Unmask of a port that is not pending only clears the mask.
        f.word(EvtchnPort(6)).unwrap().store(MASKED, SeqCst);
        assert_eq!(f.unmask(&s, &mut a, EvtchnPort(6), 0), Raised::NONE);
        assert_eq!(word(&f, 6), 0);
    }

    #[test]
    fn no_word_is_remembered_and_no_control_block_drops() {
        let shared = FakeShared::new(2);
        let mut f: Fifo<FakePage> = Fifo::new(2);
        let mut a = PortFifo::default();
        assert_eq!(f.set_pending(&shared, &mut a, EvtchnPort(5), 0), Raised::NONE);
        assert!(a.pending_without_word);
        assert!(!f.is_pending(EvtchnPort(5)) && f.is_masked(EvtchnPort(5)) && !f.is_busy(EvtchnPort(5)));
        assert_eq!(f.add_page(FakePage::new()), 0..1024);
        // vCPU 1 has no control block: dropped, word untouched.
        let mut b = PortFifo::default();
        assert_eq!(f.set_pending(&shared, &mut b, EvtchnPort(6), 1), Raised::NONE);
        assert_eq!(word(&f, 6), 0);
        assert!(!b.pending_without_word);
        // A vCPU the domain does not have: dropped.
        assert_eq!(f.set_pending(&shared, &mut b, EvtchnPort(6), 9), Raised::NONE);
        assert!(!f.has_control_block(9));
    }

    #[test]
    fn moved_port_clears_its_old_tail() {
        let (mut f, s, cbs) = fifo_with(2);
        let mut a = PortFifo::default();
        let mut b = PortFifo::default();
        let _ = f.set_pending(&s, &mut a, EvtchnPort(3), 0);
        // Guest consumes port 3 on vCPU 0.
        f.word(EvtchnPort(3)).unwrap().store(0, SeqCst);
        // Port 3 moves to vCPU 1, priority 2, and is raised there.
        a.priority = 2;
        let r = f.set_pending(&s, &mut a, EvtchnPort(3), 1);
        assert_eq!(r, Raised { newly_pending: true, upcall: Some(1) });
        assert_eq!(f.tail(0, 7), 0, "old queue forgot its tail");
        assert_eq!(f.tail(1, 2), 3);
        assert_eq!(head(&cbs[1], 2), 3);
        // A new event on vCPU 0's queue must not be linked behind port 3 (now on vCPU 1).
        s.0.vcpus[0].upcall.store(0, SeqCst);
        cbs[0].0.words[2].store(0, SeqCst);
        let r = f.set_pending(&s, &mut b, EvtchnPort(8), 0);
        assert_eq!(r, Raised { newly_pending: true, upcall: Some(0) });
        assert_eq!(head(&cbs[0], 7), 8);
        assert_eq!(word(&f, 3) & EVTCHN_FIFO_LINK_MASK, 0);
    }

    #[test]
    fn linked_port_moved_stays_on_its_old_queue() {
        let (mut f, s, cbs) = fifo_with(2);
        let mut a = PortFifo::default();
        let _ = f.set_pending(&s, &mut a, EvtchnPort(3), 0);
        // The guest handled it (cleared PENDING) but has not unlinked it yet.
        f.word(EvtchnPort(3)).unwrap().fetch_and(!PENDING, SeqCst);
        a.priority = 1;
        let r = f.set_pending(&s, &mut a, EvtchnPort(3), 1);
        assert_eq!(r, Raised { newly_pending: true, upcall: None });
        assert_eq!(word(&f, 3), PENDING | LINKED);
        assert_eq!(head(&cbs[1], 1), 0, "not linked on the new queue");
        assert_eq!(a.last_queue, QueueId { vcpu: 0, priority: 7 });
    }

    #[test]
    fn set_link_protocol() {
        let w = AtomicU32::new(LINKED | PENDING | 5);
        assert!(set_link(&w, 9));
        assert_eq!(w.load(SeqCst), LINKED | PENDING | 9);
        let w = AtomicU32::new(PENDING);
        assert!(!set_link(&w, 9));
        assert_eq!(w.load(SeqCst), PENDING);
        // BUSY left over from an earlier attempt is cleared by a successful link.
        let w = AtomicU32::new(LINKED | BUSY);
        assert!(set_link(&w, 7));
        assert_eq!(w.load(SeqCst), LINKED | 7);
    }

    #[test]
    fn set_link_with_a_guest_changing_the_word_concurrently() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        // A hostile guest flips MASKED as fast as it can; a cooperative guest unlinks. Either
        // way set_link terminates, and BUSY is not left set.
        for unlink in [false, true] {
            let w = Arc::new(AtomicU32::new(LINKED | PENDING));
            let stop = Arc::new(AtomicBool::new(false));
            let guest = {
                let (w, stop) = (w.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u32;
                    while !stop.load(SeqCst) {
                        w.fetch_xor(MASKED, SeqCst);
                        n += 1;
                        if unlink && n == 1000 {
                            w.fetch_and(!(LINKED | EVTCHN_FIFO_LINK_MASK), SeqCst);
                        }
                    }
                })
            };
            for _ in 0..10_000 {
                let _ = set_link(&w, 11);
            }
            stop.store(true, SeqCst);
            guest.join().unwrap();
            assert_eq!(w.load(SeqCst) & BUSY, 0);
        }
    }
}
