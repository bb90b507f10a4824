//! ACPI for keel: reading the host firmware's tables at boot, and building the tables a
//! PVH guest boots with.
//!
//! # Why hand-written instead of the `acpi` crate
//!
//! keel needs two things the general-purpose crates do not give together:
//!
//! * **Parsing the host's tables**, which are untrusted firmware input. Every length, offset and
//!   pointer is bounds-checked, bad tables are reported as [`AcpiWarning`]s and skipped instead of
//!   aborting boot, and the whole parser is host-testable through the one-method [`PhysMemory`]
//!   trait, with no mapping handler or allocator.
//! * **Building tables for guests**: a PVH domain needs an RSDP, XSDT, FADT, MADT, DSDT and FACS
//!   ([`build_guest_tables`]), laid out like Xen's libxl does.
//!
//! keel only needs five tables (RSDP/XSDT/RSDT for discovery, FADT, MADT, DSDT for `_S5_`), and
//! the hypervisor image must stay small. So this crate is `no_std`, has no `alloc`, no `unsafe`,
//! and its only dependency is `zerocopy` for the table layouts.
//!
//! # Map
//!
//! * [`find_rsdp_bios`], [`parse_rsdp`]: locating and validating the root pointer.
//! * [`read_tables`] → [`Tables`]: the directory of every table the XSDT (or RSDT) lists, plus
//!   the DSDT and FACS the FADT points at, each checksum-verified.
//! * [`parse_madt`] → [`Madt`], [`parse_fadt`] → [`Fadt`], [`find_s5`]: what keel needs from them.
//! * [`build_guest_tables`]: a PVH guest's tables, in a caller-provided buffer.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aml;
mod fadt;
mod guest;
mod layout;
mod madt;
mod mem;
#[cfg(test)]
mod qemu_test;
mod rsdp;
mod tables;
#[cfg(test)]
mod testutil;

use core::fmt;

pub use aml::find_s5;
pub use fadt::{parse_fadt, AddressSpace, Fadt, Gas};
pub use guest::{build_guest_tables, GuestAcpiConfig, GuestAcpiLayout, MAX_GUEST_VCPUS};
pub use madt::{parse_madt, Cpu, IntOverride, IoApic, Madt, MAX_CPUS, MAX_IOAPICS, MAX_OVERRIDES};
pub use rsdp::{find_rsdp_bios, parse_rsdp, Rsdp};
pub use tables::{read_tables, TableRef, Tables, MAX_TABLES};

/// Read access to host physical memory, as the parser needs it.
///
/// keel implements this over its direct map; tests implement it over a byte vector. A read of a
/// range that is not (entirely) readable must fail rather than return made-up bytes.
pub trait PhysMemory {
    /// Fills `buf` with the bytes at physical addresses `phys .. phys + buf.len()`.
    ///
    /// # Errors
    /// `Err(())` if any byte of the range cannot be read. The parser turns it into
    /// [`AcpiError::Unreadable`] with the address.
    // The parser attaches the failing address itself, so an error type would carry nothing.
    #[allow(clippy::result_unit_err)]
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()>;
}

/// Largest table length accepted; anything longer is firmware garbage.
pub const MAX_TABLE_LEN: u32 = 16 << 20;

/// Why an ACPI structure could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The memory at `phys` could not be read.
    Unreadable {
        /// First address of the failed read.
        phys: u64,
    },
    /// An address computation overflowed 64 bits.
    AddressOverflow,
    /// The input is shorter than the structure it must hold.
    Truncated,
    /// The signature is not the expected one.
    BadSignature,
    /// The bytes do not sum to zero.
    BadChecksum,
    /// A length field is below the structure's minimum, above [`MAX_TABLE_LEN`], or disagrees
    /// with the length the caller expected.
    BadLength {
        /// The length found.
        length: u32,
    },
    /// Neither a usable XSDT nor an RSDT was found.
    NoRootTable,
    /// The DSDT has no `Name (_S5_, Package ...)`.
    S5NotFound,
    /// `_S5_` was found, but its package could not be decoded.
    S5Malformed,
    /// The output buffer is too small; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes the tables need, including alignment padding.
        needed: usize,
    },
    /// The guest configuration cannot be expressed (for example zero vCPUs).
    InvalidConfig,
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { phys } => write!(f, "memory at {phys:#x} is unreadable"),
            Self::AddressOverflow => f.write_str("address overflows 64 bits"),
            Self::Truncated => f.write_str("structure is truncated"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::BadChecksum => f.write_str("bad checksum"),
            Self::BadLength { length } => write!(f, "bad length {length:#x}"),
            Self::NoRootTable => f.write_str("no usable XSDT or RSDT"),
            Self::S5NotFound => f.write_str("no _S5_ package in the DSDT"),
            Self::S5Malformed => f.write_str("malformed _S5_ package"),
            Self::BufferTooSmall { needed } => write!(f, "buffer too small, {needed} bytes needed"),
            Self::InvalidConfig => f.write_str("invalid guest ACPI configuration"),
        }
    }
}

impl core::error::Error for AcpiError {}

/// A problem in the host's tables that was worked around; reported, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiWarning {
    /// The RSDP's XSDT could not be used, so the RSDT was used instead.
    XsdtUnusable {
        /// The XSDT address from the RSDP.
        phys: u64,
        /// Why it was rejected.
        reason: AcpiError,
    },
    /// The root table's length is not a whole number of entries; the tail was ignored.
    RootTrailingBytes {
        /// `XSDT` or `RSDT`.
        signature: [u8; 4],
        /// Bytes ignored.
        count: u32,
    },
    /// Root-table entry `index` is a null pointer.
    NullEntry {
        /// Index of the entry in the root table.
        index: u32,
    },
    /// A table was left out of the directory.
    TableSkipped {
        /// Where the root table (or FADT) said it was.
        phys: u64,
        /// Its signature, or zeros if even the header was unreadable.
        signature: [u8; 4],
        /// Why it was rejected.
        reason: AcpiError,
    },
    /// The directory holds [`MAX_TABLES`] tables; this one and any later ones were dropped.
    DirectoryFull {
        /// The first table that did not fit.
        phys: u64,
    },
    /// The FADT could not be decoded, so its DSDT and FACS were not added to the directory.
    BadFadt {
        /// Why.
        reason: AcpiError,
    },
    /// A MADT entry of a known type is shorter than that type's layout; it was skipped.
    MadtEntryTooShort {
        /// Offset of the entry from the start of the MADT.
        offset: u32,
        /// Entry type.
        entry_type: u8,
        /// Its length byte.
        length: u8,
    },
    /// A MADT entry has a length below 2 or runs past the end of the table; parsing stopped there.
    MadtEntryOverrun {
        /// Offset of the entry from the start of the MADT.
        offset: u32,
        /// Its length byte (0 if even the length byte lay outside the table).
        length: u8,
    },
    /// A [`Madt`] array is full; entries of this type beyond its capacity were ignored.
    MadtListFull {
        /// The entry type that overflowed (0 and 9 both fill the CPU list).
        entry_type: u8,
    },
}

impl fmt::Display for AcpiWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::XsdtUnusable { phys, reason } => {
                write!(f, "XSDT at {phys:#x} unusable ({reason}), using the RSDT")
            }
            Self::RootTrailingBytes { signature, count } => {
                write!(f, "{}: {count} trailing bytes ignored", sig_str(signature))
            }
            Self::NullEntry { index } => write!(f, "root table entry {index} is null"),
            Self::TableSkipped { phys, signature, reason } => {
                write!(f, "table {} at {phys:#x} skipped: {reason}", sig_str(signature))
            }
            Self::DirectoryFull { phys } => {
                write!(f, "more than {MAX_TABLES} tables; dropped from {phys:#x} on")
            }
            Self::BadFadt { reason } => write!(f, "FADT unusable: {reason}"),
            Self::MadtEntryTooShort { offset, entry_type, length } => {
                write!(f, "MADT entry type {entry_type} at {offset:#x} too short ({length}), skipped")
            }
            Self::MadtEntryOverrun { offset, length } => {
                write!(f, "MADT entry at {offset:#x} has bad length {length}, rest of MADT ignored")
            }
            Self::MadtListFull { entry_type } => {
                write!(f, "too many MADT entries of type {entry_type}, extra ignored")
            }
        }
    }
}

/// A signature for display; bytes that are not UTF-8 show as `????`.
fn sig_str(signature: &[u8; 4]) -> &str {
    core::str::from_utf8(signature).unwrap_or("????")
}

/// The byte sum of `bytes`; a valid ACPI structure sums to zero.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}
