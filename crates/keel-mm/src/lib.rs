//! keel's physical memory management, from the firmware's memory map to the
//! buddy frame allocator.
//!
//! keel uses this crate before it has a heap, so it is `no_std`, needs no
//! allocator and has fixed-capacity data structures throughout. The boot
//! path uses the modules in this order:
//!
//! 1. [`map::sanitize`] turns the untrusted E820-style map from the boot
//!    loader into a sorted, disjoint [`map::MemoryMap`], reporting every
//!    anomaly it resolves.
//! 2. A [`range::RangeSet`] of free RAM is built from it, minus everything
//!    keel must not hand out (its image, boot modules, loader data).
//! 3. A [`bump::BumpAllocator`] over that set provides early page tables and
//!    the frame table.
//! 4. The [`frame::FrameAllocator`] (a buddy allocator over the frame table)
//!    is seeded with what the bump allocator left, and serves every later
//!    allocation of host frames.
//!
//! Addresses and frame numbers are typed ([`addr::PhysAddr`], [`addr::Pfn`])
//! so the two cannot be confused.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod addr;
pub mod bump;
pub mod frame;
pub mod map;
pub mod range;

pub use addr::{Gfn, Gpa, Pfn, PhysAddr, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE};
pub use bump::{BumpAllocator, OutOfMemory};
pub use frame::{FrameAllocator, FrameError, FrameInfo, FrameState, Owner, MAX_TABLE_FRAMES};
pub use map::{sanitize, MapIssue, MemoryMap, RawRegion, Region, RegionKind, MAX_RAW_ENTRIES, MAX_REGIONS};
pub use range::{CapacityError, RangeSet, MAX_RANGES};
