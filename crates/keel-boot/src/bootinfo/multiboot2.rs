//! Multiboot2 information, as GRUB's `multiboot2` command passes it (magic
//! 0x36d76289 in EAX, info pointer in EBX).
//!
//! The information is first copied, bounded by the caller's scratch buffer,
//! into 8-byte-aligned memory keel owns; the `multiboot2` crate then
//! validates the tag list (sizes, padding, end tag) and iterates it. The
//! crate's typed tag views assert on sizes, so each tag's size is checked
//! here before it is viewed as a typed tag: a tag with an impossible size is
//! skipped with a warning instead of panicking.
//!
//! Tags used: command line (1), boot loader name (2), modules (3), basic
//! memory info (4, the fallback), memory map (6), ACPI old (14) and new (15)
//! RSDP copies (new preferred).

use multiboot2::{BasicMemoryInfoTag, BootInformation, BootInformationHeader, LoadError, MemoryMapTag, ModuleTag};

use super::{
    le_u32, read_array, store_c_bytes, AcpiRoot, BootError, BootInfo, BootWarning, MemEntry, PhysMemory, Protocol,
    StrField, MAX_MODULES,
};

const TAG_CMDLINE: u32 = 1;
const TAG_LOADER_NAME: u32 = 2;
const TAG_MODULE: u32 = 3;
const TAG_BASIC_MEMINFO: u32 = 4;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// Tag header: type and size.
const TAG_HEADER: usize = 8;
/// Fixed part of the information: total_size and reserved.
const INFO_HEADER: usize = 8;
/// A valid information block holds at least its header and the end tag.
const INFO_MIN: u32 = 16;
/// Size of a memory-map entry as the crate models it.
const MMAP_ENTRY: usize = 24;
/// ACPI 1.0 and 2.0+ RSDP sizes.
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;

/// Copies the multiboot2 information at physical address `info` into `out`.
///
/// The information is copied into `scratch` first, so it may be at most
/// `scratch.len() * 8` bytes; `scratch` is free for other use afterwards.
/// On error `out` holds partial data and must not be used.
pub fn parse_multiboot2(
    info: u32,
    mem: &dyn PhysMemory,
    scratch: &mut [u64],
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) -> Result<(), BootError> {
    out.reset(Protocol::Multiboot2);
    let base = u64::from(info);
    if base == 0 {
        return Err(BootError::NullPointer);
    }
    let header: [u8; INFO_HEADER] =
        read_array(mem, base).ok_or(BootError::Unreadable { addr: base, len: INFO_HEADER })?;
    let size = le_u32(&header, 0);
    if size < INFO_MIN {
        return Err(BootError::InfoTooSmall { size });
    }
    let capacity = scratch.len().saturating_mul(8);
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    if len > capacity {
        return Err(BootError::InfoTooLarge { size, capacity });
    }
    let words = &mut scratch[..len.div_ceil(8)];
    copy_into_words(mem, base, len, words)?;
    let mbi = load(words)?;
    read_tags(&mbi, out, warn)
}

/// Copies `len` bytes at `base` into `words`, keeping the byte order of
/// memory (so the copy is a faithful, 8-byte-aligned image of it).
fn copy_into_words(mem: &dyn PhysMemory, base: u64, len: usize, words: &mut [u64]) -> Result<(), BootError> {
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len());
        let addr = base.saturating_add(done as u64);
        if read_array_into(mem, addr, &mut chunk[..n]).is_none() {
            return Err(BootError::Unreadable { addr, len: n });
        }
        // `done` is a multiple of the chunk size, hence of 8.
        let dst = words.iter_mut().skip(done / 8);
        for (word, bytes) in dst.zip(chunk[..n].chunks(8)) {
            let mut w = [0u8; 8];
            w[..bytes.len()].copy_from_slice(bytes);
            *word = u64::from_ne_bytes(w);
        }
        done += n;
    }
    Ok(())
}

/// Reads into `buf` at `addr`; `None` if unreadable or the range wraps.
fn read_array_into(mem: &dyn PhysMemory, addr: u64, buf: &mut [u8]) -> Option<()> {
    addr.checked_add(buf.len() as u64)?;
    mem.read(addr, buf).ok()
}

/// Lets the `multiboot2` crate validate the copied information.
fn load(words: &[u64]) -> Result<BootInformation<'_>, BootError> {
    let first = words.first().map_or([0; 8], |w| w.to_ne_bytes());
    let size = u32::from_ne_bytes([first[0], first[1], first[2], first[3]]);
    let available = words.len().saturating_mul(8);
    if usize::try_from(size).map_or(true, |s| s > available) {
        return Err(BootError::InfoTooLarge { size, capacity: available });
    }
    let ptr = words.as_ptr().cast::<BootInformationHeader>();
    // SAFETY: `ptr` comes from a live `&[u64]`, so it is non-null, 8-byte
    // aligned and points to initialised memory that stays borrowed (and so
    // unchanged) for the returned lifetime, which the signature ties to
    // `words`. The crate reads `total_size` bytes from it, and we checked
    // above that `total_size` does not exceed `words`.
    let loaded = unsafe { BootInformation::load(ptr) };
    loaded.map_err(|e| BootError::Malformed {
        why: match e {
            LoadError::NoEndTag => "the tag list has no end tag",
            LoadError::Memory(_) => "a tag's size does not fit the information's total size",
        },
    })
}

/// Copies what keel uses out of the validated tags.
fn read_tags(
    mbi: &BootInformation<'_>,
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) -> Result<(), BootError> {
    let (mut have_cmdline, mut have_name, mut have_mmap) = (false, false, false);
    let mut basic: Option<(u32, u32)> = None;
    let (mut rsdp_old, mut rsdp_new): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    let mut modules_found: u64 = 0;

    for tag in mbi.tags() {
        let typ = tag.header().typ.get();
        let size = tag.header().size;
        let payload = tag.payload();
        let malformed = BootWarning::MalformedTag { tag_type: typ, size };
        match typ {
            TAG_CMDLINE if !have_cmdline => {
                have_cmdline = true;
                store_c_bytes(payload, StrField::Cmdline, &mut out.cmdline, warn);
            }
            TAG_LOADER_NAME if !have_name => {
                have_name = true;
                store_c_bytes(payload, StrField::LoaderName, &mut out.loader_name, warn);
            }
            TAG_MODULE => {
                // ModuleTag needs start and end after the header.
                if payload.len() < 8 {
                    warn(malformed);
                    continue;
                }
                let index = usize::try_from(modules_found).unwrap_or(usize::MAX);
                modules_found += 1;
                if index >= MAX_MODULES {
                    continue;
                }
                let module = tag.cast::<ModuleTag>();
                let start = u64::from(module.start_address());
                let end = u64::from(module.end_address());
                if let Some(slot) = out.push_module(index, start, Some(end), warn) {
                    let field = StrField::ModuleCmdline(index);
                    store_c_bytes(&payload[8..], field, &mut slot.cmdline, warn);
                }
            }
            TAG_BASIC_MEMINFO if basic.is_none() => {
                // The crate's BasicMemoryInfoTag has exactly this size.
                if usize::try_from(size) != Ok(TAG_HEADER + 8) {
                    warn(malformed);
                    continue;
                }
                let info = tag.cast::<BasicMemoryInfoTag>();
                basic = Some((info.memory_lower(), info.memory_upper()));
            }
            TAG_MMAP if !have_mmap => {
                // The crate asserts entry_size == 24 and whole entries.
                let entry_size = le_u32(payload, 0);
                let entries_len = payload.len().checked_sub(8);
                let well_formed = usize::try_from(entry_size) == Ok(MMAP_ENTRY)
                    && entries_len.is_some_and(|l| l.is_multiple_of(MMAP_ENTRY));
                if !well_formed {
                    warn(malformed);
                    continue;
                }
                have_mmap = true;
                for area in tag.cast::<MemoryMapTag>().memory_areas() {
                    let entry = MemEntry { base: area.start_address(), len: area.size(), kind: area.typ().val() };
                    if !out.push_memory(entry) {
                        warn(BootWarning::MemoryMapTruncated { kept: out.memory_entries });
                        break;
                    }
                }
            }
            TAG_ACPI_OLD if rsdp_old.is_none() => {
                if payload.len() < RSDP_V1_LEN {
                    warn(malformed);
                    continue;
                }
                rsdp_old = Some(&payload[..RSDP_V1_LEN]);
            }
            TAG_ACPI_NEW if rsdp_new.is_none() => {
                if payload.len() < RSDP_V2_LEN {
                    warn(malformed);
                    continue;
                }
                rsdp_new = Some(&payload[..RSDP_V2_LEN]);
            }
            _ => {}
        }
    }

    if modules_found > MAX_MODULES as u64 {
        warn(BootWarning::TooManyModules { found: modules_found, kept: MAX_MODULES });
    }
    if let Some(rsdp) = rsdp_new.or(rsdp_old) {
        let mut bytes = [0u8; RSDP_V2_LEN];
        bytes[..rsdp.len()].copy_from_slice(rsdp);
        out.set_acpi_root(AcpiRoot::Copy { bytes, len: rsdp.len() });
    }
    if out.memory_entries == 0 {
        if let Some((lower, upper)) = basic {
            out.synthesise_memory_map(lower, upper, warn);
        }
    }
    if out.memory_entries == 0 {
        return Err(BootError::NoMemoryMap);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::testmem::FakeMem;
    use crate::bootinfo::MAX_MEM_ENTRIES;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    const INFO: u64 = 0x1_0000;

    /// Builds a multiboot2 information block tag by tag.
    struct Mbi(Vec<u8>);

    impl Mbi {
        fn new() -> Self {
            Mbi(vec![0; 8])
        }

        fn tag(mut self, typ: u32, body: &[u8]) -> Self {
            self.0.extend_from_slice(&typ.to_le_bytes());
            self.0.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
            self.0.extend_from_slice(body);
            while !self.0.len().is_multiple_of(8) {
                self.0.push(0);
            }
            self
        }

        fn string(self, typ: u32, s: &[u8]) -> Self {
            let mut body = s.to_vec();
            body.push(0);
            self.tag(typ, &body)
        }

        fn module(self, start: u32, end: u32, cmdline: &str) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&start.to_le_bytes());
            body.extend_from_slice(&end.to_le_bytes());
            body.extend_from_slice(cmdline.as_bytes());
            body.push(0);
            self.tag(TAG_MODULE, &body)
        }

        fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&24u32.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            for (base, len, kind) in entries {
                body.extend_from_slice(&base.to_le_bytes());
                body.extend_from_slice(&len.to_le_bytes());
                body.extend_from_slice(&kind.to_le_bytes());
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(TAG_MMAP, &body)
        }

        fn basic(self, lower: u32, upper: u32) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&lower.to_le_bytes());
            body.extend_from_slice(&upper.to_le_bytes());
            self.tag(TAG_BASIC_MEMINFO, &body)
        }

        fn end(self) -> Vec<u8> {
            let mut v = self.tag(0, &[]).0;
            let total = v.len() as u32;
            v[..4].copy_from_slice(&total.to_le_bytes());
            v
        }
    }

    fn rsdp(len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; len];
        r[..8].copy_from_slice(b"RSD PTR ");
        r
    }

    fn run_with(bytes: &[u8], scratch_words: usize) -> (Result<(), BootError>, Box<BootInfo>, Vec<BootWarning>) {
        let mem = FakeMem::new().with(INFO, bytes);
        let mut scratch = vec![0u64; scratch_words];
        let mut out = Box::new(BootInfo::empty());
        let mut warnings = Vec::new();
        let r = parse_multiboot2(INFO as u32, &mem, &mut scratch, &mut out, &mut |w| warnings.push(w));
        (r, out, warnings)
    }

    fn run(bytes: &[u8]) -> (Result<(), BootError>, Box<BootInfo>, Vec<BootWarning>) {
        run_with(bytes, 1024)
    }

    fn grub_like() -> Mbi {
        Mbi::new()
            .string(TAG_CMDLINE, b"loglvl=all noreboot")
            .string(TAG_LOADER_NAME, b"GRUB 2.06-13+deb12u1")
            .module(0x100_0000, 0x180_0000, "/boot/vmlinuz root=/dev/xvda ro")
            .module(0x200_0000, 0x300_0000, "/boot/initrd.img")
            .basic(639, 2_096_000)
            .mmap(&[(0, 0x9fc00, 1), (0x10_0000, 0x7fee_0000, 1), (0xfec0_0000, 0x1000, 2)])
            .tag(TAG_ACPI_OLD, &rsdp(20, 1))
            .tag(TAG_ACPI_NEW, &rsdp(36, 2))
            .tag(21, &[1, 2, 3])
    }

    #[test]
    fn grub_like_info_is_copied() {
        let (r, out, w) = run(&grub_like().end());
        assert_eq!(r, Ok(()));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(out.protocol, Protocol::Multiboot2);
        assert_eq!(out.cmdline, "loglvl=all noreboot");
        assert_eq!(out.loader_name, "GRUB 2.06-13+deb12u1");
        // GRUB 2 passes no image name on keel's own line.
        assert_eq!(out.options_cmdline(), "loglvl=all noreboot");
        assert_eq!(out.modules().len(), 2);
        assert_eq!(out.modules[0].cmdline, "/boot/vmlinuz root=/dev/xvda ro");
        assert_eq!((out.modules[1].start, out.modules[1].end), (0x200_0000, 0x300_0000));
        assert_eq!(out.memory_map().len(), 3);
        assert_eq!(out.memory_map()[2].kind, MemEntry::RESERVED);
        let root = out.acpi_root().unwrap();
        let copied = root.copied().unwrap();
        assert_eq!(copied.len(), 36);
        assert_eq!(copied[8], 2, "the new RSDP is preferred");
    }

    #[test]
    fn old_rsdp_alone_is_used() {
        let bytes = Mbi::new().mmap(&[(0, 0x1000, 1)]).tag(TAG_ACPI_OLD, &rsdp(20, 7)).end();
        let (r, out, _) = run(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(out.acpi_root().and_then(|a| a.copied().map(<[u8]>::len)), Some(20));
    }

    #[test]
    fn missing_tags() {
        // Only a basic meminfo: map synthesised, nothing else.
        let (r, out, w) = run(&Mbi::new().basic(640, 1024).end());
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::MemoryMapSynthesised { lower_kib: 640, upper_kib: 1024 }]);
        assert_eq!(out.memory_map().len(), 2);
        assert_eq!(out.cmdline, "");
        assert_eq!(out.acpi_root(), None);
        // No memory information at all.
        let (r, _, _) = run(&Mbi::new().string(TAG_CMDLINE, b"x").end());
        assert_eq!(r, Err(BootError::NoMemoryMap));
        // Only an end tag.
        assert_eq!(run(&Mbi::new().end()).0, Err(BootError::NoMemoryMap));
    }

    #[test]
    fn fatal_errors() {
        let mem = FakeMem::new();
        let mut out = Box::new(BootInfo::empty());
        let mut scratch = [0u64; 8];
        assert_eq!(parse_multiboot2(0, &mem, &mut scratch, &mut out, &mut |_| {}), Err(BootError::NullPointer));
        assert_eq!(
            parse_multiboot2(0x1000, &mem, &mut scratch, &mut out, &mut |_| {}),
            Err(BootError::Unreadable { addr: 0x1000, len: 8 })
        );
        let good = grub_like().end();
        // Too small.
        let mut small = good.clone();
        small[..4].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(run(&small).0, Err(BootError::InfoTooSmall { size: 8 }));
        // Larger than the scratch buffer.
        assert_eq!(run_with(&good, 4).0, Err(BootError::InfoTooLarge { size: good.len() as u32, capacity: 32 }));
        // total_size says more than is readable.
        let mut long = good.clone();
        long[..4].copy_from_slice(&(good.len() as u32 + 512).to_le_bytes());
        assert!(matches!(run(&long).0, Err(BootError::Unreadable { .. })));
        // Truncated: the end tag is cut off.
        let mut cut = good[..good.len() - 8].to_vec();
        let n = cut.len() as u32;
        cut[..4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(run(&cut).0, Err(BootError::Malformed { .. })));
        // A tag whose size runs past the end.
        let mut bad = good.clone();
        bad[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(matches!(run(&bad).0, Err(BootError::Malformed { .. })));
        // A tag smaller than its header.
        let mut bad = good;
        bad[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(run(&bad).0, Err(BootError::Malformed { .. })));
    }

    #[test]
    fn malformed_tags_are_skipped_not_trusted() {
        let mut bad_mmap = Vec::new();
        bad_mmap.extend_from_slice(&20u32.to_le_bytes());
        bad_mmap.extend_from_slice(&0u32.to_le_bytes());
        bad_mmap.extend_from_slice(&[0; 40]);
        let bytes = Mbi::new()
            .tag(TAG_MODULE, &[1, 2, 3, 4])
            .tag(TAG_BASIC_MEMINFO, &[0; 12])
            .tag(TAG_MMAP, &bad_mmap)
            .tag(TAG_MMAP, &[24, 0, 0, 0, 0, 0, 0, 0, 1])
            .tag(TAG_ACPI_NEW, &rsdp(20, 0))
            .tag(TAG_ACPI_OLD, &rsdp(8, 0))
            .basic(1, 2)
            .end();
        let (r, out, w) = run(&bytes);
        assert_eq!(r, Ok(()));
        let malformed: Vec<u32> = w
            .iter()
            .filter_map(|w| match w {
                BootWarning::MalformedTag { tag_type, .. } => Some(*tag_type),
                _ => None,
            })
            .collect();
        assert_eq!(malformed, [TAG_MODULE, TAG_BASIC_MEMINFO, TAG_MMAP, TAG_MMAP, TAG_ACPI_NEW, TAG_ACPI_OLD]);
        assert!(out.modules().is_empty());
        assert_eq!(out.acpi_root(), None);
        // The well-formed basic meminfo after the bad one is used.
        assert_eq!(out.memory_map().len(), 2);
    }

    #[test]
    fn strings_garbage_and_missing_nul() {
        let bytes = Mbi::new()
            .tag(TAG_CMDLINE, b"no nul here")
            .string(TAG_LOADER_NAME, b"\xfe\xffloader")
            .module(0x1000, 0x2000, "")
            .mmap(&[(0, 0x1000, 1)])
            .end();
        let (r, out, w) = run(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(out.cmdline, "no nul here");
        assert_eq!(out.loader_name, "\u{fffd}\u{fffd}loader");
        assert_eq!(w, [BootWarning::StringInvalidUtf8 { field: StrField::LoaderName }]);
        // Not GRUB 2: the first word is taken as the image name.
        assert_eq!(out.options_cmdline(), "nul here");
    }

    #[test]
    fn long_cmdline_is_truncated() {
        let long = vec![b'a'; 3000];
        let bytes = Mbi::new().string(TAG_CMDLINE, &long).mmap(&[(0, 0x1000, 1)]).end();
        let (r, out, w) = run(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(out.cmdline.len(), crate::bootinfo::MAX_CMDLINE);
        assert_eq!(w, [BootWarning::StringTruncated { field: StrField::Cmdline }]);
    }

    #[test]
    fn too_many_modules_and_map_entries() {
        let mut m = Mbi::new();
        for i in 0..40u32 {
            m = m.module(i << 20, (i << 20) + 0x1000, "m");
        }
        let entries: Vec<(u64, u64, u32)> = (0..200u64).map(|i| (i << 12, 0x1000, 1)).collect();
        let bytes = m.mmap(&entries).end();
        let (r, out, w) = run_with(&bytes, 2048);
        assert_eq!(r, Ok(()));
        assert_eq!(out.modules().len(), MAX_MODULES);
        assert_eq!(out.modules()[31].start, 31 << 20);
        assert_eq!(out.memory_map().len(), MAX_MEM_ENTRIES);
        assert_eq!(
            w,
            [
                BootWarning::MemoryMapTruncated { kept: MAX_MEM_ENTRIES },
                BootWarning::TooManyModules { found: 40, kept: MAX_MODULES },
            ]
        );
    }

    #[test]
    fn module_end_before_start() {
        let bytes = Mbi::new().module(0x2000, 0x1000, "a").module(0x3000, 0x4000, "b").mmap(&[(0, 0x1000, 1)]).end();
        let (r, out, w) = run(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::ModuleEndBeforeStart { index: 0, start: 0x2000, end: 0x1000 }]);
        assert!(out.modules[0].is_empty());
        assert_eq!(out.modules[1].cmdline, "b");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..1024), fix_size: bool) {
            if fix_size && bytes.len() >= 4 {
                let n = bytes.len() as u32;
                bytes[..4].copy_from_slice(&n.to_le_bytes());
            }
            let (r, out, _) = run(&bytes);
            if r.is_ok() {
                prop_assert!(!out.memory_map().is_empty());
            }
        }

        #[test]
        fn random_tags_never_panic(
            tags in prop::collection::vec(
                (prop::sample::select(vec![0u32, 1, 2, 3, 4, 6, 14, 15, 99]),
                 prop::collection::vec(any::<u8>(), 0..80)),
                0..12),
        ) {
            let mut m = Mbi::new();
            for (typ, body) in &tags {
                m = m.tag(*typ, body);
            }
            let (r, out, _) = run(&m.end());
            if r.is_ok() {
                prop_assert!(!out.memory_map().is_empty());
            }
            for module in out.modules() {
                prop_assert!(module.start <= module.end);
            }
        }

        /// A valid block with one 32-bit word (often a type or size field)
        /// overwritten.
        #[test]
        fn corrupted_fields_never_panic(word in 0usize..128, value in prop_oneof![
            0u32..64, Just(u32::MAX), any::<u32>(),
        ]) {
            let mut bytes = grub_like().end();
            let at = (word * 4) % bytes.len();
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let (r, out, _) = run(&bytes);
            if r.is_ok() {
                prop_assert!(!out.memory_map().is_empty());
            }
        }
    }
}
