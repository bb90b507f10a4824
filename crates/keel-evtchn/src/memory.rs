//! The guest-shared memory event delivery writes to, as traits.
//!
//! The guest reads and writes these words concurrently with keel, from other physical CPUs,
//! so every access is an atomic read-modify-write or load/store (sequentially consistent:
//! x86's locked instructions, which is what Xen's `guest_test_and_set_bit` and friends are).
//! keel implements the traits with pointers into mapped guest frames; the tests use plain
//! atomics on the heap. The crate never dereferences anything else of the guest's.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

/// Number of 64-bit words in each of the 2-level bitmaps (`evtchn_pending`, `evtchn_mask`):
/// 4096 ports on x86-64.
pub const TWO_LEVEL_WORDS: usize = (xen_abi::event_channel::EVTCHN_2L_NR_CHANNELS / 64) as usize;

/// 32-bit event words (FIFO) in one guest page.
pub const WORDS_PER_PAGE: usize = xen_abi::XEN_PAGE_SIZE / 4;

/// The 2-level ABI's words in the shared-info page and every vCPU's `vcpu_info` fields the
/// upcall protocol uses (the FIFO ABI uses `evtchn_upcall_pending` too).
pub trait SharedWords {
    /// `shared_info.evtchn_pending[word]`. The crate only asks for `word < TWO_LEVEL_WORDS`.
    fn pending(&self, word: usize) -> &AtomicU64;

    /// `shared_info.evtchn_mask[word]`. The crate only asks for `word < TWO_LEVEL_WORDS`.
    fn mask(&self, word: usize) -> &AtomicU64;

    /// `vcpu_info.evtchn_pending_sel` of vCPU `vcpu`, or `None` when that vCPU has no
    /// `vcpu_info` (a vCPU >= 32 that has not registered one, or a vCPU number the domain
    /// does not have): the event then only stays pending in the bitmap, as with Xen's dummy
    /// `vcpu_info`, until the guest registers one (keel then sets every selector bit and
    /// `evtchn_upcall_pending`, as Xen does).
    fn pending_sel(&self, vcpu: u32) -> Option<&AtomicU64>;

    /// `vcpu_info.evtchn_upcall_pending` of vCPU `vcpu`, or `None` as for
    /// [`SharedWords::pending_sel`].
    fn upcall_pending(&self, vcpu: u32) -> Option<&AtomicU8>;
}

/// A mapped, pinned guest page for the FIFO ABI: a page holding a control block, or a page
/// of event words. keel maps the guest frame and pins it; dropping the value unmaps and
/// unpins it. The crate keeps the pages it is given until the domain leaves the FIFO ABI
/// (`EVTCHNOP_reset`) or the [`crate::Evtchn`] is dropped.
pub trait GuestPage {
    /// The page as 32-bit words (event words, or the control block's `ready` and `head[]`).
    fn words(&self) -> &[AtomicU32; WORDS_PER_PAGE];
}
