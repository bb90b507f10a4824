//! Boot-loader information, normalised: multiboot1, multiboot2 and PVH.
//!
//! keel has three 32-bit entry points; each saves (protocol, info pointer).
//! Early, before keel has a heap, it calls one of [`parse_multiboot1`],
//! [`parse_multiboot2`] or [`parse_pvh`] to copy everything it needs into a
//! [`BootInfo`] (fixed capacity, meant to live in keel's `.bss`). After that
//! the loader's memory may be reused.
//!
//! All loader data is untrusted: every pointer is read through
//! [`PhysMemory`], which may refuse; every count and length is bounded by the
//! fixed capacities; strings are read at most [`MAX_CMDLINE`] bytes far. What
//! does not fit or does not make sense is dropped with a [`BootWarning`];
//! only a missing or unusable info structure (or no memory map at all) is a
//! [`BootError`].

mod fixed_str;
mod multiboot1;
mod multiboot2;
mod pvh;
#[cfg(test)]
mod testmem;

use core::fmt;

pub use fixed_str::FixedStr;
pub use multiboot1::parse_multiboot1;
pub use multiboot2::parse_multiboot2;
pub use pvh::parse_pvh;

/// Read access to physical memory, as keel has it early in boot.
pub trait PhysMemory {
    /// Copies `buf.len()` bytes starting at physical address `phys` into
    /// `buf`. Returns `Err(())` if any of those bytes is unreadable; `buf`'s
    /// contents are then unspecified.
    #[allow(clippy::result_unit_err)] // The only failure is "not readable".
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()>;
}

/// How keel was entered.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Protocol {
    /// Multiboot (version 1): QEMU `-kernel`, GRUB `multiboot`.
    Multiboot1,
    /// Multiboot2: GRUB `multiboot2`.
    Multiboot2,
    /// Xen's PVH direct boot (`hvm_start_info`).
    Pvh,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Multiboot1 => "multiboot1",
            Protocol::Multiboot2 => "multiboot2",
            Protocol::Pvh => "PVH",
        })
    }
}

/// Most boot modules kept; more are dropped with a warning.
pub const MAX_MODULES: usize = 32;
/// Longest command line kept, in bytes (keel's and each module's).
pub const MAX_CMDLINE: usize = 1024;
/// Most memory-map entries kept; more are dropped with a warning.
pub const MAX_MEM_ENTRIES: usize = 128;
/// Longest boot-loader name kept, in bytes.
pub const MAX_LOADER_NAME: usize = 64;

/// One memory-map entry as the loader reported it (not sorted, merged or
/// checked for overlap; keel's memory manager does that).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct MemEntry {
    /// Physical start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// E820 type: [`MemEntry::RAM`], [`MemEntry::RESERVED`], ...
    pub kind: u32,
}

impl MemEntry {
    /// E820 type 1: usable RAM.
    pub const RAM: u32 = 1;
    /// E820 type 2: reserved.
    pub const RESERVED: u32 = 2;
    /// E820 type 3: ACPI tables, reclaimable after reading them.
    pub const ACPI: u32 = 3;
    /// E820 type 4: ACPI non-volatile storage.
    pub const NVS: u32 = 4;
    /// E820 type 5: unusable (defective) RAM.
    pub const UNUSABLE: u32 = 5;

    const EMPTY: Self = Self { base: 0, len: 0, kind: 0 };

    /// The exclusive end address, or `None` if it does not fit in 64 bits.
    pub const fn end(&self) -> Option<u64> {
        self.base.checked_add(self.len)
    }
}

/// A boot module (dom0 kernel, initrd, ...), copied out of the loader data.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Module {
    /// Physical start address.
    pub start: u64,
    /// Physical end address, exclusive; never below `start`.
    pub end: u64,
    /// The module's command line as the loader gave it; GRUB and QEMU put
    /// the image name first (see [`crate::cmdline::split_image_name`]).
    pub cmdline: FixedStr<MAX_CMDLINE>,
}

impl Module {
    const EMPTY: Self = Self { start: 0, end: 0, cmdline: FixedStr::new() };

    /// Size in bytes.
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True for a zero-length module.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the ACPI root (RSDP) is.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum AcpiRoot {
    /// Its physical address (PVH).
    Address(u64),
    /// A copy of it (multiboot2's ACPI tags); `len` bytes of `bytes` are
    /// valid: 20 for an ACPI 1.0 RSDP, 36 for ACPI 2.0 and later.
    Copy {
        /// The copied RSDP.
        bytes: [u8; 36],
        /// Number of valid bytes.
        len: usize,
    },
}

impl AcpiRoot {
    /// The copied RSDP bytes, for [`AcpiRoot::Copy`].
    pub fn copied(&self) -> Option<&[u8]> {
        match self {
            AcpiRoot::Address(_) => None,
            AcpiRoot::Copy { bytes, len } => bytes.get(..*len),
        }
    }
}

/// Everything keel keeps from the boot loader.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BootInfo {
    /// How keel was entered.
    pub protocol: Protocol,
    /// The loader's name, if it gave one ("PVH start info" for PVH).
    pub loader_name: FixedStr<MAX_LOADER_NAME>,
    /// keel's own command line as the loader gave it; see
    /// [`BootInfo::options_cmdline`] for the part holding the options.
    pub cmdline: FixedStr<MAX_CMDLINE>,
    /// Storage for the memory map; [`BootInfo::memory_map`] is the used part.
    pub memory_map: [MemEntry; MAX_MEM_ENTRIES],
    /// Number of used entries in `memory_map`.
    pub memory_entries: usize,
    /// Storage for the modules; [`BootInfo::modules`] is the used part.
    pub modules: [Module; MAX_MODULES],
    /// Number of used entries in `modules`.
    pub module_count: usize,
    /// The ACPI root, if the loader said where it is (see [`BootInfo::acpi_root`]).
    acpi: AcpiSlot,
}

/// Storage for the ACPI root whose empty state is all zero bytes, so that an empty
/// `BootInfo` can live in .bss (an `Option<AcpiRoot>`'s `None` is a non-zero tag, which
/// would put the whole 38 KiB structure into keel's image file).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u8)] // an explicit tag: without it `Absent` would take a niche value of `AcpiRoot`'s tag
enum AcpiSlot {
    Absent,
    Given(AcpiRoot),
}

impl BootInfo {
    /// An empty `BootInfo`, usable as a `static` initialiser.
    pub const fn empty() -> Self {
        Self {
            protocol: Protocol::Multiboot1,
            loader_name: FixedStr::new(),
            cmdline: FixedStr::new(),
            memory_map: [MemEntry::EMPTY; MAX_MEM_ENTRIES],
            memory_entries: 0,
            modules: [Module::EMPTY; MAX_MODULES],
            module_count: 0,
            acpi: AcpiSlot::Absent,
        }
    }

    /// The ACPI root, if the loader said where it is.
    pub fn acpi_root(&self) -> Option<AcpiRoot> {
        match self.acpi {
            AcpiSlot::Absent => None,
            AcpiSlot::Given(root) => Some(root),
        }
    }

    /// Record where the ACPI root is.
    pub(crate) fn set_acpi_root(&mut self, root: AcpiRoot) {
        self.acpi = AcpiSlot::Given(root);
    }

    /// The memory map entries, in the loader's order.
    pub fn memory_map(&self) -> &[MemEntry] {
        let n = self.memory_entries.min(MAX_MEM_ENTRIES);
        &self.memory_map[..n]
    }

    /// The boot modules, in the loader's order.
    pub fn modules(&self) -> &[Module] {
        let n = self.module_count.min(MAX_MODULES);
        &self.modules[..n]
    }

    /// The part of [`BootInfo::cmdline`] that holds keel's options, following
    /// Xen: multiboot loaders other than GRUB 2 (QEMU, GRUB legacy) put the
    /// image name first, so it is skipped; GRUB 2 and PVH pass options only.
    pub fn options_cmdline(&self) -> &str {
        let line = self.cmdline.as_str().trim_ascii_start();
        if self.has_image_names() {
            crate::cmdline::split_image_name(line).1
        } else {
            line
        }
    }

    /// Whether this loader puts the image's file name first on keel's command line and on
    /// each module's (multiboot loaders other than GRUB 2 do; GRUB 2 and PVH do not).
    pub fn has_image_names(&self) -> bool {
        self.protocol != Protocol::Pvh && !loader_is_grub2(self.loader_name.as_str())
    }

    /// A module's file name (when the loader gives one) and its arguments.
    pub fn module_cmdline<'a>(&self, module: &'a Module) -> (Option<&'a str>, &'a str) {
        let line = module.cmdline.as_str();
        if self.has_image_names() {
            let (name, args) = crate::cmdline::split_image_name(line);
            (Some(name).filter(|n| !n.is_empty()), args)
        } else {
            (None, line.trim())
        }
    }

    /// Clears everything in place (no large temporary on the stack).
    fn reset(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.loader_name.clear();
        self.cmdline.clear();
        self.memory_entries = 0;
        for m in &mut self.modules {
            m.start = 0;
            m.end = 0;
            m.cmdline.clear();
        }
        self.module_count = 0;
        self.acpi = AcpiSlot::Absent;
    }

    /// Appends a memory-map entry; false if the map is full.
    fn push_memory(&mut self, entry: MemEntry) -> bool {
        match self.memory_map.get_mut(self.memory_entries) {
            Some(slot) => {
                *slot = entry;
                self.memory_entries += 1;
                true
            }
            None => false,
        }
    }

    /// Appends a module covering `[start, end)` and returns it for its
    /// command line; `None` if the table is full. `end: None` means the
    /// range was invalid and already reported: the module is kept empty so
    /// the positions of the following modules do not shift. An end below the
    /// start is reported and treated the same way.
    fn push_module(
        &mut self,
        index: usize,
        start: u64,
        end: Option<u64>,
        warn: &mut dyn FnMut(BootWarning),
    ) -> Option<&mut Module> {
        let end = match end {
            Some(end) if end < start => {
                warn(BootWarning::ModuleEndBeforeStart { index, start, end });
                start
            }
            Some(end) => {
                if end == start {
                    warn(BootWarning::ModuleEmpty { index, start });
                }
                end
            }
            None => start,
        };
        let slot = self.modules.get_mut(self.module_count)?;
        self.module_count += 1;
        slot.start = start;
        slot.end = end;
        slot.cmdline.clear();
        Some(slot)
    }

    /// Fills an empty memory map from multiboot's `mem_lower`/`mem_upper`
    /// (KiB below 640K and above 1M).
    fn synthesise_memory_map(&mut self, lower_kib: u32, upper_kib: u32, warn: &mut dyn FnMut(BootWarning)) {
        warn(BootWarning::MemoryMapSynthesised { lower_kib, upper_kib });
        for (base, kib) in [(0, lower_kib), (1 << 20, upper_kib)] {
            if kib != 0 {
                self.push_memory(MemEntry { base, len: u64::from(kib) * 1024, kind: MemEntry::RAM });
            }
        }
    }
}

/// Xen's test: GRUB legacy calls itself "GNU GRUB 0.9x", GRUB 2 "GRUB 2.xx".
fn loader_is_grub2(name: &str) -> bool {
    name.find("GRUB ").is_some_and(|i| name.as_bytes().get(i + 5) != Some(&b'0'))
}

/// Which string a [`BootWarning`] is about.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum StrField {
    /// keel's command line.
    Cmdline,
    /// The boot loader's name.
    LoaderName,
    /// The command line of the module at this position in the loader's list.
    ModuleCmdline(usize),
}

impl fmt::Display for StrField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrField::Cmdline => f.write_str("the command line"),
            StrField::LoaderName => f.write_str("the boot loader name"),
            StrField::ModuleCmdline(i) => write!(f, "the command line of module {i}"),
        }
    }
}

/// Something in the loader's information that keel tolerated.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum BootWarning {
    /// A string was longer than keel keeps; the rest was dropped.
    StringTruncated {
        /// Which string.
        field: StrField,
    },
    /// A string held invalid UTF-8, replaced by U+FFFD.
    StringInvalidUtf8 {
        /// Which string.
        field: StrField,
    },
    /// A string ran into unreadable memory at `addr`; it was cut there.
    StringUnreadable {
        /// Which string.
        field: StrField,
        /// The first unreadable address.
        addr: u64,
    },
    /// More modules than [`MAX_MODULES`]; the first ones were kept.
    TooManyModules {
        /// How many the loader reported.
        found: u64,
        /// How many were kept.
        kept: usize,
    },
    /// The module list was unreadable at `addr`; modules from `index` on
    /// were dropped.
    ModuleListUnreadable {
        /// Address of the unreadable entry (0 if there was no list).
        addr: u64,
        /// Position of the first dropped module.
        index: usize,
    },
    /// A module ends before it starts; it was kept as an empty module.
    ModuleEndBeforeStart {
        /// Position in the loader's list.
        index: usize,
        /// Reported start.
        start: u64,
        /// Reported end.
        end: u64,
    },
    /// A module's start plus size passes 2^64; it was kept as an empty
    /// module.
    ModuleSizeOverflow {
        /// Position in the loader's list.
        index: usize,
        /// Reported start.
        start: u64,
        /// Reported size.
        size: u64,
    },
    /// A module has zero length.
    ModuleEmpty {
        /// Position in the loader's list.
        index: usize,
        /// Its address.
        start: u64,
    },
    /// More memory-map entries than [`MAX_MEM_ENTRIES`]; the rest were
    /// dropped.
    MemoryMapTruncated {
        /// How many were kept.
        kept: usize,
    },
    /// The memory map was unreadable at `addr`; it was cut there.
    MemoryMapUnreadable {
        /// The unreadable address.
        addr: u64,
    },
    /// The memory map is malformed; it was cut at the problem.
    MemoryMapMalformed {
        /// What is wrong.
        why: &'static str,
    },
    /// No usable memory map: one was made up from the loader's basic
    /// `mem_lower`/`mem_upper` figures.
    MemoryMapSynthesised {
        /// KiB of RAM from 0.
        lower_kib: u32,
        /// KiB of RAM from 1 MiB.
        upper_kib: u32,
    },
    /// A multiboot2 tag of a type keel uses has an impossible size; it was
    /// ignored.
    MalformedTag {
        /// Tag type.
        tag_type: u32,
        /// Its size field.
        size: u32,
    },
    /// A newer PVH start-info version than keel knows; Xen guarantees it is
    /// compatible, so it was read as version 1.
    PvhVersionNewer {
        /// The reported version.
        version: u32,
    },
}

impl fmt::Display for BootWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootWarning::StringTruncated { field } => {
                write!(f, "{field} is longer than keel keeps and was truncated")
            }
            BootWarning::StringInvalidUtf8 { field } => {
                write!(f, "{field} is not valid UTF-8; bad bytes were replaced")
            }
            BootWarning::StringUnreadable { field, addr } => {
                write!(f, "{field} runs into unreadable memory at {addr:#x} and was cut there")
            }
            BootWarning::TooManyModules { found, kept } => {
                write!(f, "the boot loader passed {found} modules; only the first {kept} are used")
            }
            BootWarning::ModuleListUnreadable { addr, index } => {
                write!(f, "the module list is unreadable at {addr:#x}; modules from {index} on are ignored")
            }
            BootWarning::ModuleEndBeforeStart { index, start, end } => {
                write!(f, "module {index} ends ({end:#x}) before it starts ({start:#x}); treated as empty; ignored")
            }
            BootWarning::ModuleSizeOverflow { index, start, size } => write!(
                f,
                "module {index} at {start:#x} with size {size:#x} passes the end of the \
                 address space; treated as empty; ignored"
            ),
            BootWarning::ModuleEmpty { index, start } => {
                write!(f, "module {index} at {start:#x} is empty; ignored")
            }
            BootWarning::MemoryMapTruncated { kept } => {
                write!(f, "the memory map has more entries than keel keeps; only the first {kept} are used")
            }
            BootWarning::MemoryMapUnreadable { addr } => {
                write!(f, "the memory map is unreadable at {addr:#x}; entries from there on are ignored")
            }
            BootWarning::MemoryMapMalformed { why } => {
                write!(f, "the memory map is malformed ({why}); the rest is ignored")
            }
            BootWarning::MemoryMapSynthesised { lower_kib, upper_kib } => write!(
                f,
                "no usable memory map from the boot loader; assuming {lower_kib} KiB of RAM \
                 at 0 and {upper_kib} KiB at 1 MiB"
            ),
            BootWarning::MalformedTag { tag_type, size } => {
                write!(f, "multiboot2 tag of type {tag_type} has an impossible size ({size} bytes); ignored")
            }
            BootWarning::PvhVersionNewer { version } => {
                write!(f, "PVH start info version {version} is newer than keel knows; reading it as version 1")
            }
        }
    }
}

/// The loader's information is unusable.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum BootError {
    /// The info pointer is 0.
    NullPointer,
    /// The info structure itself cannot be read.
    Unreadable {
        /// Where the read failed.
        addr: u64,
        /// How many bytes were being read.
        len: usize,
    },
    /// The PVH start info does not start with its magic value.
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The multiboot2 information is smaller than its fixed part.
    InfoTooSmall {
        /// Its `total_size`.
        size: u32,
    },
    /// The multiboot2 information is larger than the scratch buffer.
    InfoTooLarge {
        /// Its `total_size`.
        size: u32,
        /// The scratch buffer's size in bytes.
        capacity: usize,
    },
    /// The multiboot2 tag list is inconsistent.
    Malformed {
        /// What is wrong.
        why: &'static str,
    },
    /// No memory map and nothing to make one from (for PVH: start info
    /// version 0, or version 1 without a map).
    NoMemoryMap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootError::NullPointer => f.write_str("the boot loader passed no information (null pointer)"),
            BootError::Unreadable { addr, len } => {
                write!(f, "the boot information at {addr:#x} ({len} bytes) is not readable")
            }
            BootError::BadMagic { found } => {
                write!(f, "the PVH start info has magic {found:#x} instead of {:#x}", pvh::START_MAGIC)
            }
            BootError::InfoTooSmall { size } => {
                write!(f, "the multiboot2 information is only {size} bytes; it needs at least 16")
            }
            BootError::InfoTooLarge { size, capacity } => {
                write!(f, "the multiboot2 information is {size} bytes; keel has room for {capacity}")
            }
            BootError::Malformed { why } => {
                write!(f, "the multiboot2 information is malformed: {why}")
            }
            BootError::NoMemoryMap => f.write_str("the boot loader provided no memory map"),
        }
    }
}

/// Reads `N` bytes at `addr`; `None` if unreadable or if the range wraps.
fn read_array<const N: usize>(mem: &dyn PhysMemory, addr: u64) -> Option<[u8; N]> {
    let len = u64::try_from(N).ok()?;
    addr.checked_add(len)?;
    let mut buf = [0u8; N];
    mem.read(addr, &mut buf).ok()?;
    Some(buf)
}

/// Little-endian `u32` at `off` in `b`; the offsets used are constants
/// within the fixed-size arrays read by [`read_array`].
fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(src) = b.get(off..off + 4) {
        v.copy_from_slice(src);
    }
    u32::from_le_bytes(v)
}

/// Little-endian `u64` at `off` in `b` (see [`le_u32`]).
fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(src) = b.get(off..off + 8) {
        v.copy_from_slice(src);
    }
    u64::from_le_bytes(v)
}

/// Reads a NUL-terminated string at `addr` into `out`: at most `N + 1` bytes
/// are read (the extra one only tells whether the string ends there), in
/// small chunks so a string ending just before unreadable memory is still
/// read whole.
fn read_c_string<const N: usize>(
    mem: &dyn PhysMemory,
    addr: u64,
    field: StrField,
    out: &mut FixedStr<N>,
    warn: &mut dyn FnMut(BootWarning),
) {
    const CHUNK: usize = 64;
    let mut buf = [0u8; MAX_CMDLINE + 1];
    let limit = N.saturating_add(1).min(buf.len());
    let mut len = 0;
    let mut terminated = false;
    let mut unreadable_at = None;
    while len < limit {
        let n = (limit - len).min(CHUNK);
        let Some(at) = u64::try_from(len).ok().and_then(|l| addr.checked_add(l)) else {
            unreadable_at = Some(addr);
            break;
        };
        let dst = &mut buf[len..len + n];
        let got = if mem.read(at, dst).is_ok() { n } else { read_bytewise(mem, at, dst) };
        if let Some(nul) = dst[..got].iter().position(|b| *b == 0) {
            len += nul;
            terminated = true;
            break;
        }
        len += got;
        if got < n {
            unreadable_at = Some(at.saturating_add(got as u64));
            break;
        }
    }
    if let Some(addr) = unreadable_at {
        warn(BootWarning::StringUnreadable { field, addr });
    }
    let too_long = !terminated && unreadable_at.is_none() && len > N;
    store_string(&buf[..len.min(N)], too_long, field, out, warn);
}

/// Reads `dst.len()` bytes at `at` one by one; returns how many were read
/// before the first unreadable byte.
fn read_bytewise(mem: &dyn PhysMemory, at: u64, dst: &mut [u8]) -> usize {
    for (i, byte) in dst.iter_mut().enumerate() {
        let Some(a) = at.checked_add(i as u64) else {
            return i;
        };
        let mut one = [0u8; 1];
        if mem.read(a, &mut one).is_err() {
            return i;
        }
        *byte = one[0];
    }
    dst.len()
}

/// Stores string bytes already in memory (a multiboot2 tag's payload) into
/// `out`, stopping at the first NUL.
fn store_c_bytes<const N: usize>(
    bytes: &[u8],
    field: StrField,
    out: &mut FixedStr<N>,
    warn: &mut dyn FnMut(BootWarning),
) {
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    store_string(text, text.len() > N, field, out, warn);
}

/// Decodes `text` into `out`, reporting invalid UTF-8 and truncation.
fn store_string<const N: usize>(
    text: &[u8],
    too_long: bool,
    field: StrField,
    out: &mut FixedStr<N>,
    warn: &mut dyn FnMut(BootWarning),
) {
    if out.set_lossy(text) {
        warn(BootWarning::StringInvalidUtf8 { field });
    }
    if too_long {
        out.mark_truncated();
    }
    if out.is_truncated() {
        warn(BootWarning::StringTruncated { field });
    }
}

#[cfg(test)]
mod tests;

/// FNV-1a (64-bit) of a module's bytes: keel prints it once it has made all its boot-time
/// allocations, so an operator (and the tests) can check that the module keel will use is
/// byte for byte the file that was loaded.
pub fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
