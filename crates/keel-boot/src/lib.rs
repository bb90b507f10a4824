//! keel's view of how it was booted: the hypervisor command line and the
//! information the boot loader handed over.
//!
//! keel is started exactly as Xen is (GRUB `multiboot2 /boot/keel <options>`,
//! or `qemu-system-x86_64 -kernel keel -append "<options>"`), so this crate
//! owns the two things every boot path needs before anything else happens:
//!
//! * [`cmdline`]: parsing Xen-style hypervisor options into typed
//!   [`cmdline::Options`]. Parsing never fails and never panics: unknown
//!   options and bad values are reported through a callback and ignored.
//! * [`bootinfo`]: normalising multiboot1, multiboot2 and PVH start-of-day
//!   information into one fixed-capacity [`bootinfo::BootInfo`], copied out
//!   of the loader's memory before keel has a heap, so the loader's memory can
//!   be reused afterwards. Everything read from the loader is untrusted and
//!   bounds-checked.
//!
//! The crate is `no_std` and needs no allocator.

#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bootinfo;
pub mod cmdline;
pub mod domains;
