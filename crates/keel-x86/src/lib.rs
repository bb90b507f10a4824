//! Hardware-free x86 interpretation for keel: instruction lengths, MMIO instruction decoding and
//! guest page-table walks.
//!
//! keel runs guests under AMD SVM, and QEMU's TCG implementation of SVM has no NRIP-save and no
//! decode assists. So on a VM exit keel must itself work out what the guest was doing:
//!
//! - [`instruction_length`] ([`decode`]): how long the intercepted instruction is, to advance RIP
//!   past `CPUID`, `RDMSR`, `IN`, `VMMCALL` and friends. Every opcode map, prefix and encoding
//!   (legacy, REX, VEX, EVEX, XOP, 3DNow!) in every [`CpuMode`].
//! - [`decode_mmio`] ([`mmio`]): for a nested page fault on emulated MMIO (the xAPIC page), whether
//!   the instruction loads or stores, how wide, which register or immediate.
//! - [`translate`] ([`paging`]): guest linear to guest-physical addresses through the guest's own
//!   page tables, for hypercall arguments (all guest virtual addresses), with the page fault the
//!   guest would have taken when that fails; [`split_by_page`] cuts a buffer into per-page pieces.
//!
//! Everything here consumes untrusted guest bytes and registers: no panics, no out-of-bounds
//! indexing, errors instead. The crate is `no_std`, needs no allocator and has no `unsafe`.
//!
//! # Cross-checking against objdump
//!
//! Besides the hand-written corpus in the unit tests, `tests/objdump.rs` compares
//! [`instruction_length`] with GNU objdump on random, instruction-shaped bytes in 64-, 32- and
//! 16-bit mode. It needs binutils and is not part of the normal test run:
//!
//! ```text
//! KEEL_X86_FUZZ=1 cargo test -p keel-x86 --test objdump -- --nocapture
//! ```
//!
//! See that file for its options and for the deliberate differences from objdump it tolerates.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod decode;
pub mod mmio;
pub mod mode;
pub mod paging;

pub use decode::{instruction_length, DecodeError, MAX_INSN_LEN};
pub use mmio::{decode_mmio, Extend, MmioInsn, MmioOp, Operand, Reg};
pub use mode::CpuMode;
pub use paging::{
    split_by_page, translate, Access, GuestMemError, GuestPhys, PageChunks, PagingKind, PagingMode, WalkError,
};
