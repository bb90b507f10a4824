//! keel's heap (`alloc`), backed by frames from the frame allocator.
//!
//! The allocator is `talc`; it starts with one 1 MiB block and, when it runs out, claims
//! another block from the frame allocator big enough for the request. An allocation that the
//! frame allocator cannot satisfy fails (`alloc` reports it; keel's code paths that allocate on
//! behalf of guests use fallible allocation and return ENOMEM).

use core::alloc::Layout;

use talc::{OomHandler, Span, Talc, Talck};

use crate::arch::x86::paging;
use crate::mm;
use crate::sync::IrqRawMutex;

/// Frames claimed at a time, at least: 2^8 = 1 MiB.
const MIN_CLAIM_ORDER: u8 = 8;

/// Grows the heap from the frame allocator.
pub struct FrameClaimer;

impl OomHandler for FrameClaimer {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        // Room for the request plus talc's per-arena overhead.
        let need = layout.size().max(layout.align()) as u64 + 4096;
        let order = (need.next_power_of_two() / 4096).trailing_zeros().max(MIN_CLAIM_ORDER as u32) as u8;
        let pfn = mm::alloc_frames(order).ok_or(())?;
        let base = paging::phys_to_virt(pfn.addr().as_u64()) as *mut u8;
        // SAFETY: the frames were just allocated for the heap's exclusive use, are mapped
        // read-write in the direct map, and are never returned.
        unsafe { talc.claim(Span::from_base_size(base, 4096usize << order)) }.map(|_| ())
    }
}

#[global_allocator]
static HEAP: Talck<IrqRawMutex, FrameClaimer> = Talc::new(FrameClaimer).lock();
