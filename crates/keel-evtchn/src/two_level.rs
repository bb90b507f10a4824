//! Delivery for the 2-level ABI: the pending and mask bitmaps in the shared-info page and the
//! per-vCPU selector word and upcall flag in `vcpu_info`.
//!
//! The order of the bit operations is the protocol (Xen's `evtchn_2l_set_pending` and
//! `evtchn_2l_unmask`, `xen/common/event_2l.c`): set the port's pending bit; if it was clear
//! and the port is not masked, set the selector bit of the port's word in the notify vCPU's
//! `evtchn_pending_sel`; if that was clear, set `evtchn_upcall_pending`; if that was clear,
//! the vCPU needs an upcall. The guest clears them in the opposite order, so an event is
//! never left pending without a path from `evtchn_upcall_pending` down to it, and each step
//! that finds its bit already set knows someone upstream will look.

use core::sync::atomic::Ordering::SeqCst;

use xen_abi::event_channel::two_level_position;
use xen_abi::EvtchnPort;

use crate::memory::SharedWords;
use crate::notify::Raised;

/// `vcpu_mark_events_pending` (x86): set `evtchn_upcall_pending`; `Some(vcpu)` if it was
/// clear, i.e. the vCPU needs an upcall. A vCPU without `vcpu_info` gets nothing.
pub(crate) fn mark_events_pending<S: SharedWords>(shared: &S, vcpu: u32) -> Option<u32> {
    let flag = shared.upcall_pending(vcpu)?;
    (flag.fetch_or(1, SeqCst) & 1 == 0).then_some(vcpu)
}

/// The second half of raising a port: set the selector bit of the port's word on `vcpu`
/// and, if it was clear, mark events pending on `vcpu`.
fn select<S: SharedWords>(shared: &S, word: usize, vcpu: u32) -> Option<u32> {
    let sel = shared.pending_sel(vcpu)?;
    let bit = 1u64 << word;
    if sel.fetch_or(bit, SeqCst) & bit != 0 {
        return None;
    }
    mark_events_pending(shared, vcpu)
}

/// Raises `port` for `vcpu` (Xen `evtchn_2l_set_pending`). A port the 2-level ABI cannot
/// address does nothing.
pub(crate) fn set_pending<S: SharedWords>(shared: &S, port: EvtchnPort, vcpu: u32) -> Raised {
    let Some((word, bit)) = two_level_position(port) else {
        return Raised::NONE;
    };
    let bit = 1u64 << bit;
    if shared.pending(word).fetch_or(bit, SeqCst) & bit != 0 {
        return Raised::NONE;
    }
    let upcall = if shared.mask(word).load(SeqCst) & bit == 0 { select(shared, word, vcpu) } else { None };
    Raised { newly_pending: true, upcall }
}

/// Clears `port`'s pending bit (Xen `evtchn_2l_clear_pending`, used when a port is freed).
pub(crate) fn clear_pending<S: SharedWords>(shared: &S, port: EvtchnPort) {
    if let Some((word, bit)) = two_level_position(port) {
        shared.pending(word).fetch_and(!(1u64 << bit), SeqCst);
    }
}

/// `EVTCHNOP_unmask` (Xen `evtchn_2l_unmask`): clears the mask bit and, only if it was set
/// and the port is pending, re-runs the second half of [`set_pending`] on `vcpu`.
pub(crate) fn unmask<S: SharedWords>(shared: &S, port: EvtchnPort, vcpu: u32) -> Option<u32> {
    let (word, bit) = two_level_position(port)?;
    let bit = 1u64 << bit;
    let was_masked = shared.mask(word).fetch_and(!bit, SeqCst) & bit != 0;
    if was_masked && shared.pending(word).load(SeqCst) & bit != 0 {
        select(shared, word, vcpu)
    } else {
        None
    }
}

/// Re-announces a pending, unmasked `port` on `vcpu` (after `EVTCHNOP_bind_vcpu` moved it
/// there): the second half of [`set_pending`], without touching the pending bit.
pub(crate) fn reannounce<S: SharedWords>(shared: &S, port: EvtchnPort, vcpu: u32) -> Option<u32> {
    let (word, bit) = two_level_position(port)?;
    let bit = 1u64 << bit;
    let live = shared.pending(word).load(SeqCst) & bit != 0 && shared.mask(word).load(SeqCst) & bit == 0;
    if live {
        select(shared, word, vcpu)
    } else {
        None
    }
}

/// Whether `port`'s pending bit is set (false for a port the ABI cannot address).
pub(crate) fn is_pending<S: SharedWords>(shared: &S, port: EvtchnPort) -> bool {
    two_level_position(port).is_some_and(|(word, bit)| shared.pending(word).load(SeqCst) & (1 << bit) != 0)
}

/// Whether `port`'s mask bit is set (true for a port the ABI cannot address, as Xen).
pub(crate) fn is_masked<S: SharedWords>(shared: &S, port: EvtchnPort) -> bool {
    two_level_position(port).is_none_or(|(word, bit)| shared.mask(word).load(SeqCst) & (1 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::FakeShared;

    #[test]
    fn first_raise_walks_the_whole_chain_then_stops_early() {
        let s = FakeShared::new(2);
        let r = set_pending(&s, EvtchnPort(70), 1);
        assert_eq!(r, Raised { newly_pending: true, upcall: Some(1) });
        assert_eq!(s.0.pending[1].load(SeqCst), 1 << 6);
        assert_eq!(s.0.vcpus[1].sel.load(SeqCst), 1 << 1);
        assert_eq!(s.0.vcpus[1].upcall.load(SeqCst), 1);
        // Already pending: nothing at all.
        assert_eq!(set_pending(&s, EvtchnPort(70), 1), Raised::NONE);
        // Another port in the same word: pending, but the selector bit is already set.
        assert_eq!(set_pending(&s, EvtchnPort(71), 1), Raised { newly_pending: true, upcall: None });
        // Another word, upcall flag still set: selector set, no new upcall.
        assert_eq!(set_pending(&s, EvtchnPort(3), 1), Raised { newly_pending: true, upcall: None });
        assert_eq!(s.0.vcpus[1].sel.load(SeqCst), 0b11);
        // The guest acknowledged the upcall but not the selector: no new upcall either.
        s.0.vcpus[1].upcall.store(0, SeqCst);
        assert_eq!(set_pending(&s, EvtchnPort(4), 1), Raised { newly_pending: true, upcall: None });
        assert_eq!(s.0.vcpus[0].sel.load(SeqCst), 0, "vCPU 0 untouched");
    }

    #[test]
    fn masked_port_stays_pending_and_unmask_delivers() {
        let s = FakeShared::new(1);
        s.0.mask[0].store(1 << 5, SeqCst);
        assert_eq!(set_pending(&s, EvtchnPort(5), 0), Raised { newly_pending: true, upcall: None });
        assert_eq!(s.0.vcpus[0].sel.load(SeqCst), 0);
        assert_eq!(unmask(&s, EvtchnPort(5), 0), Some(0));
        assert_eq!(s.0.mask[0].load(SeqCst), 0);
        assert_eq!(s.0.vcpus[0].sel.load(SeqCst), 1);
        // Unmasking an unmasked port does nothing even though it is pending (Xen only acts
        // when the mask bit was set).
        s.0.vcpus[0].sel.store(0, SeqCst);
        s.0.vcpus[0].upcall.store(0, SeqCst);
        assert_eq!(unmask(&s, EvtchnPort(5), 0), None);
        assert_eq!(s.0.vcpus[0].sel.load(SeqCst), 0);
        // Unmasking a masked port that is not pending only clears the mask.
        s.0.mask[0].store(1 << 6, SeqCst);
        assert_eq!(unmask(&s, EvtchnPort(6), 0), None);
        assert_eq!(s.0.mask[0].load(SeqCst), 0);
    }

    #[test]
    fn vcpu_without_vcpu_info_keeps_the_event_in_the_bitmap() {
        let s = FakeShared::new(1);
        assert_eq!(set_pending(&s, EvtchnPort(9), 40), Raised { newly_pending: true, upcall: None });
        assert!(is_pending(&s, EvtchnPort(9)));
        assert_eq!(reannounce(&s, EvtchnPort(9), 0), Some(0));
    }

    #[test]
    fn ports_out_of_range_are_ignored() {
        let s = FakeShared::new(1);
        assert_eq!(set_pending(&s, EvtchnPort(4096), 0), Raised::NONE);
        assert_eq!(unmask(&s, EvtchnPort(5000), 0), None);
        assert_eq!(reannounce(&s, EvtchnPort(5000), 0), None);
        clear_pending(&s, EvtchnPort(4096));
        assert!(!is_pending(&s, EvtchnPort(4096)));
        assert!(is_masked(&s, EvtchnPort(4096)));
        assert!(!is_masked(&s, EvtchnPort(4095)));
    }

    #[test]
    fn reannounce_needs_pending_and_unmasked() {
        let s = FakeShared::new(2);
        assert_eq!(reannounce(&s, EvtchnPort(1), 1), None);
        s.0.pending[0].store(0b10, SeqCst);
        s.0.mask[0].store(0b10, SeqCst);
        assert_eq!(reannounce(&s, EvtchnPort(1), 1), None);
        s.0.mask[0].store(0, SeqCst);
        assert_eq!(reannounce(&s, EvtchnPort(1), 1), Some(1));
        clear_pending(&s, EvtchnPort(1));
        assert!(!is_pending(&s, EvtchnPort(1)));
    }
}
