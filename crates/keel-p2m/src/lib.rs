//! keel-p2m: a domain's physical-to-machine map (p2m), kept as the nested page tables the CPU
//! walks to turn guest frames (gfns) into host frames (mfns).
//!
//! keel runs guests under AMD SVM with nested paging: the VMCB's nCR3 points at the root of a
//! [`P2m`], an ordinary x86-64 4-level page table whose "virtual" addresses are guest-physical.
//! There is no second structure: each leaf entry also records keel's [`P2mType`] in
//! software-available bits, so the p2m alone says what every guest frame is ([`entry`] has the
//! exact format).
//!
//! # Map
//!
//! * [`P2m`]: map, unmap, replace, split, lookup, iterate and destroy a domain's mappings.
//! * [`TableMemory`]: where the table frames come from and how they are read and written.
//! * [`Mapping`], [`Access`], [`P2mType`]: what one mapping is.
//! * [`pte_for`], [`decode_pte`], [`decode_entry`], [`Level`], [`bits`]: the entry format,
//!   for keel's own walks of the tables and for tests.
//!
//! # Rules
//!
//! * **Guest input never brings keel down.** Every gfn, mfn and order is checked and a bad one
//!   is an error ([`P2mError`]); no operation panics or indexes unchecked.
//! * **A failed operation changes no translation.** An operation that runs out of table memory
//!   half-way either gives the tables it took back or has only split large pages (which maps the
//!   same frames the same way).
//! * **Tables are freed eagerly.** A table that becomes empty is unlinked and handed back to
//!   [`TableMemory::free_table`] at once, so the table memory a domain holds is bounded by what
//!   it has mapped now, not by every gfn it ever touched (a guest cannot grow keel's memory by
//!   mapping and unmapping scattered gfns). Every table except the root is therefore non-empty,
//!   which [`P2m::check_invariants`] verifies.
//! * **TLB flushes are the caller's job.** After [`P2m::unmap`], [`P2m::replace`] or a freed
//!   table, CPUs that ran the domain may still hold the old translations and cached table
//!   entries until keel flushes the domain's ASID on them. Frames reported as removed, and table
//!   frames given to `free_table`, must not be reused before that flush.
//!
//! # Guest-physical address width
//!
//! A 4-level table translates 48-bit guest-physical addresses, so gfns are below
//! `2^`[`MAX_GFN_BITS`] = `2^36`. Xen limits HAP guests to 48 bits for the same reason (its
//! 4-level p2m), and keel must not report more than 48 in the guest's CPUID leaf 0x80000008.
//! Host frames may use the full 52-bit physical address width ([`MAX_MFN_BITS`]).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod entry;
mod p2m;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod proptests;

use core::fmt;

use keel_mm::{Gfn, Pfn};

pub use entry::{bits, decode_entry, decode_pte, pte_for, Access, Entry, Level, Mapping, P2mType};
pub use p2m::{P2m, TableMemory};

/// Width of a gfn: guest-physical addresses are 48 bits (`36 + 12`), all a 4-level nested
/// table can translate.
pub const MAX_GFN_BITS: u32 = 36;

/// Width of an mfn: host-physical addresses are at most 52 bits (`40 + 12`) on x86-64.
pub const MAX_MFN_BITS: u32 = 40;

/// Why a [`P2m`] operation failed. Whatever failed, no translation changed.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
pub enum P2mError {
    /// [`TableMemory::alloc_table`] had no frame.
    OutOfMemory,
    /// The gfn or mfn is not a multiple of `2^order`.
    Misaligned,
    /// The order is not one the operation supports.
    BadOrder,
    /// Part of the range is already mapped.
    AlreadyMapped,
    /// Nothing is mapped there.
    NotMapped,
    /// The gfn is mapped by a 4 KiB page, which cannot be split.
    NotLarge,
    /// The gfn is at or above `2^`[`MAX_GFN_BITS`].
    OutOfRange {
        /// The offending gfn.
        gfn: Gfn,
    },
    /// The mfn is at or above `2^`[`MAX_MFN_BITS`].
    MfnOutOfRange {
        /// The offending mfn.
        mfn: Pfn,
    },
    /// A table entry on the way to `gfn` is not one keel writes (a keel bug or memory
    /// corruption); the operation did not touch it.
    Corrupt {
        /// The gfn whose walk met the entry.
        gfn: Gfn,
    },
}

impl fmt::Display for P2mError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory => f.write_str("out of memory for p2m tables"),
            Self::Misaligned => f.write_str("frame not aligned to the order"),
            Self::BadOrder => f.write_str("unsupported order"),
            Self::AlreadyMapped => f.write_str("range already mapped"),
            Self::NotMapped => f.write_str("nothing mapped"),
            Self::NotLarge => f.write_str("not a large page"),
            Self::OutOfRange { gfn } => write!(f, "gfn {gfn} beyond the guest-physical address width"),
            Self::MfnOutOfRange { mfn } => write!(f, "mfn {mfn} beyond the physical address width"),
            Self::Corrupt { gfn } => write!(f, "corrupt p2m entry on the walk for gfn {gfn}"),
        }
    }
}
