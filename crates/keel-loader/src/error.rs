//! Why a kernel could not be loaded or a domain could not be laid out: one precise variant per
//! failure, so keel can tell the operator exactly what is wrong with the image or the request.

use core::fmt;

use keel_acpi::AcpiError;

/// The compression of a bzImage payload, identified by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The payload is the ELF image itself.
    None,
    /// gzip (`1F 8B`, or the old `1F 9E`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// Legacy `.lzma` ("LZMA alone", `5D 00`).
    Lzma,
    /// XZ (`FD 37 7A 58 5A 00`); Debian's amd64 kernels, with the x86 BCJ filter.
    Xz,
    /// LZO as written by `lzop` (`89 4C 5A 4F`).
    Lzo,
    /// LZ4 in the legacy frame format (`02 21 4C 18`); Debian's cloud kernels.
    Lz4,
    /// Zstandard (`28 B5 2F FD`).
    Zstd,
}

impl Compression {
    /// The format's usual name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "uncompressed",
            Self::Gzip => "gzip",
            Self::Bzip2 => "bzip2",
            Self::Lzma => "lzma",
            Self::Xz => "xz",
            Self::Lzo => "lzo",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong between a boot module and a guest ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// The module is neither an ELF image nor a bzImage (no `HdrS` setup header).
    NotAKernel,
    /// The input ends inside a structure it declares (header, table, segment or payload).
    Truncated,
    /// The bzImage setup header is inconsistent; the text says how.
    BadSetupHeader(&'static str),
    /// The bzImage payload's magic number matches no known compression format.
    UnknownCompression,
    /// The payload uses a format keel has no decompressor for.
    UnsupportedCompression(Compression),
    /// The compressed stream is corrupt (or its integrity check failed); the text says where.
    Decompress(&'static str),
    /// The decompressed size differs from the size word at the end of the bzImage payload.
    SizeMismatch {
        /// The size the payload's trailing word declares.
        declared: u32,
        /// The size actually produced.
        actual: u64,
    },
    /// The image is larger than the caller's limit.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Memory for the decompressed image could not be allocated.
    OutOfMemory,
    /// The ELF image is malformed or not an x86-64 executable; the text says how.
    BadElf(&'static str),
    /// The ELF image has no `XEN_ELFNOTE_PHYS32_ENTRY` note: it is not a PVH kernel.
    NoPvhEntry,
    /// The PVH entry point does not lie inside the file data of any loadable segment.
    EntryOutsideImage {
        /// The entry point from the note.
        entry: u32,
    },
    /// A loadable segment is not entirely inside the guest's RAM.
    SegmentOutsideRam {
        /// First guest-physical byte of the segment.
        paddr: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Two loadable segments overlap in guest-physical memory.
    SegmentsOverlap {
        /// Physical address of the lower segment.
        first: u64,
        /// Physical address of the segment that overlaps it.
        second: u64,
    },
    /// The domain description cannot be built as asked; the text says why.
    InvalidSpec(&'static str),
    /// No room for `what` (`size` bytes) in guest RAM below 4 GiB outside the kernel.
    NoRoom {
        /// "initrd" or "start info".
        what: &'static str,
        /// Bytes needed.
        size: u64,
    },
    /// The guest's ACPI tables could not be built.
    Acpi(AcpiError),
    /// The layout given to `build` is not the one `plan` makes for the same domain.
    LayoutMismatch,
    /// Guest memory refused a write or zero-fill of `len` bytes at `gpa`.
    GuestWrite {
        /// First guest-physical byte.
        gpa: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAKernel => f.write_str("not a kernel: neither an ELF image nor a bzImage"),
            Self::Truncated => f.write_str("image is truncated"),
            Self::BadSetupHeader(why) => write!(f, "bad bzImage setup header: {why}"),
            Self::UnknownCompression => f.write_str("bzImage payload has an unknown compression format"),
            Self::UnsupportedCompression(c) => write!(f, "{c}-compressed kernels are not supported"),
            Self::Decompress(why) => write!(f, "decompression failed: {why}"),
            Self::SizeMismatch { declared, actual } => {
                write!(f, "payload declares {declared} decompressed bytes but holds {actual}")
            }
            Self::TooLarge { limit } => write!(f, "image exceeds the limit of {limit} bytes"),
            Self::OutOfMemory => f.write_str("out of memory for the decompressed image"),
            Self::BadElf(why) => write!(f, "bad ELF image: {why}"),
            Self::NoPvhEntry => f.write_str("no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel"),
            Self::EntryOutsideImage { entry } => write!(f, "PVH entry {entry:#x} is outside the loaded image"),
            Self::SegmentOutsideRam { paddr, end } => {
                write!(f, "kernel segment [{paddr:#x}, {end:#x}) is not inside guest RAM")
            }
            Self::SegmentsOverlap { first, second } => {
                write!(f, "kernel segments at {first:#x} and {second:#x} overlap")
            }
            Self::InvalidSpec(why) => write!(f, "invalid domain: {why}"),
            Self::NoRoom { what, size } => {
                write!(f, "no room for the {what} ({size} bytes) in RAM below 4 GiB outside the kernel")
            }
            Self::Acpi(e) => write!(f, "guest ACPI tables: {e}"),
            Self::LayoutMismatch => f.write_str("layout does not match the domain it is built for"),
            Self::GuestWrite { gpa, len } => write!(f, "guest memory write of {len:#x} bytes at {gpa:#x} failed"),
        }
    }
}

impl core::error::Error for LoadError {}

impl From<AcpiError> for LoadError {
    fn from(e: AcpiError) -> Self {
        Self::Acpi(e)
    }
}
