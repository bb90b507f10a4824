//! PVH domain building for keel: from a boot module to guest memory ready for vCPU 0.
//!
//! keel starts dom0 (and boot-time domUs) from the modules its boot loader hands over, as Xen
//! does: a Debian `vmlinuz` (a bzImage whose payload is a compressed ELF `vmlinux`) or an ELF
//! image carrying the Xen PVH entry note. This crate owns every step between those bytes and a
//! guest that can run, and nothing that touches hardware, so all of it is tested on the host:
//!
//! 1. [`kernel_elf`] unwraps a bzImage ([`parse_bzimage`]) and decompresses its payload
//!    (XZ with the x86 BCJ filter, LZ4 legacy frames, zstd, gzip, LZMA), bounded by a limit.
//! 2. [`parse_pvh_kernel`] reads the ELF: loadable segments by physical address, the
//!    `XEN_ELFNOTE_PHYS32_ENTRY` entry point and the supported-features note.
//! 3. [`plan`] lays the domain out as Xen's libxl does for a PVH domU (memory map, special
//!    pages, ACPI tables, initrd and start info placement) without writing anything, and
//!    [`build`] writes it through the [`GuestMemory`] trait (keel: its p2m; tests: a fake).
//!
//! Everything here reads untrusted input (the boot modules, whatever a boot loader passed):
//! every offset and length is bounds-checked, every failure is a [`LoadError`], and nothing
//! panics. The crate is `no_std` with `alloc` (keel has a heap) and has no `unsafe`.
//!
//! References: `xen-abi.md` §1 (the PVH boot protocol) and §7 pitfall 2 (placement rules),
//! Linux's `Documentation/x86/boot.rst` for the bzImage setup header.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod build;
mod bzimage;
#[cfg(all(test, feature = "debian-kernels"))]
mod debian_tests;
mod decompress;
mod elf;
mod error;
mod layout;
#[cfg(test)]
mod testutil;

pub use build::{build, GuestMemory};
pub use bzimage::{kernel_elf, parse_bzimage, BzImage};
pub use elf::{parse_pvh_kernel, PvhKernel, Segment};
pub use error::{Compression, LoadError};
pub use layout::{
    min_ram_for, plan, DomainSpec, Layout, ACPI_BASE, BOOT_DATA_MIN, HVM_BELOW_4G_RAM_END, MAX_MEMMAP_ENTRIES,
    NR_SPECIAL_PAGES, SPECIAL_PAGE_CONSOLE, SPECIAL_PAGE_XENSTORE, SPECIAL_PFN_BASE,
};
