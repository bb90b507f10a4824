//! Reading a PVH kernel's ELF64 image: its loadable segments and its Xen notes.
//!
//! Only what a PVH loader needs is read, and all of it is bounds-checked:
//!
//! * `PT_LOAD` segments, by **physical** address (`p_paddr`). Linux's PVH entry code uses
//!   absolute physical addresses and one of its segments (`.data..percpu`) has virtual address 0,
//!   so a segment's virtual address is never used. Empty segments are skipped; overlapping ones
//!   are refused.
//! * The Xen notes (name `"Xen"`) in `PT_NOTE` segments, or in `SHT_NOTE` sections when the
//!   image has no `PT_NOTE`: `XEN_ELFNOTE_PHYS32_ENTRY` (the 32-bit entry point; its descriptor
//!   is a 1, 2, 4 or 8-byte little-endian number, 8 in 64-bit Linux) and
//!   `XEN_ELFNOTE_SUPPORTED_FEATURES` (a bitmap of `XENFEAT_*`), as Xen's libelf reads them.
//!
//! Data after the last structure the headers describe (the relocation table a bzImage payload
//! carries after `vmlinux`) is ignored. The ELF entry point `e_entry` is the bzImage-style
//! `startup_64` and is deliberately not used.

use alloc::vec::Vec;

use xen_abi::elfnote;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::LoadError;

/// The four bytes every ELF file starts with.
pub(crate) const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
/// `e_phnum` value meaning "the real count is in section 0".
const PN_XNUM: u16 = 0xFFFF;

/// ELF64 file header.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Ehdr {
    ident: [u8; 16],
    e_type: U16,
    machine: U16,
    version: U32,
    entry: U64,
    phoff: U64,
    shoff: U64,
    flags: U32,
    ehsize: U16,
    phentsize: U16,
    phnum: U16,
    shentsize: U16,
    shnum: U16,
    shstrndx: U16,
}

/// ELF64 program header.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Phdr {
    p_type: U32,
    flags: U32,
    offset: U64,
    vaddr: U64,
    paddr: U64,
    filesz: U64,
    memsz: U64,
    align: U64,
}

/// ELF64 section header.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Shdr {
    name: U32,
    sh_type: U32,
    flags: U64,
    addr: U64,
    offset: U64,
    size: U64,
    link: U32,
    info: U32,
    addralign: U64,
    entsize: U64,
}

const _: () = {
    assert!(size_of::<Ehdr>() == 64);
    assert!(size_of::<Phdr>() == 56);
    assert!(size_of::<Shdr>() == 64);
};

/// One loadable segment, to be copied to guest-physical `paddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Guest-physical address of the first byte (`p_paddr`).
    pub paddr: u64,
    /// Bytes the segment occupies in memory (`p_memsz`, at least `data.len()`); the part past
    /// the file data is zero-filled (BSS).
    pub memsz: u64,
    /// The file data (`p_filesz` bytes).
    pub data: &'a [u8],
}

impl Segment<'_> {
    /// One past the segment's last guest-physical byte (never overflows: checked when parsed).
    pub fn end(&self) -> u64 {
        self.paddr + self.memsz
    }
}

/// What loading a PVH kernel needs from its ELF image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvhKernel<'a> {
    /// The 32-bit physical entry point (`XEN_ELFNOTE_PHYS32_ENTRY`): EIP of vCPU 0.
    pub entry: u32,
    /// The non-empty `PT_LOAD` segments, sorted by physical address, pairwise disjoint.
    pub segments: Vec<Segment<'a>>,
    /// The `XEN_ELFNOTE_SUPPORTED_FEATURES` bitmap (`XENFEAT_*` bits), if the kernel has one.
    pub features: Option<u32>,
}

impl PvhKernel<'_> {
    /// The lowest physical address any segment occupies.
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.paddr)
    }

    /// One past the highest physical address any segment occupies.
    pub fn end(&self) -> u64 {
        self.segments.iter().map(Segment::end).max().unwrap_or(0)
    }
}

/// `len` bytes at `offset` in `bytes`, or [`LoadError::Truncated`].
fn range(bytes: &[u8], offset: u64, len: u64) -> Result<&[u8], LoadError> {
    let start = usize::try_from(offset).map_err(|_| LoadError::Truncated)?;
    let len = usize::try_from(len).map_err(|_| LoadError::Truncated)?;
    bytes.get(start..start.checked_add(len).ok_or(LoadError::Truncated)?).ok_or(LoadError::Truncated)
}

/// A table of `count` entries of `entsize` bytes (each at least a `T`) at `offset`.
fn table<'a, T: FromBytes + KnownLayout + Immutable + Unaligned + 'a>(
    bytes: &'a [u8],
    offset: u64,
    count: u16,
    entsize: u16,
) -> Result<impl Iterator<Item = &'a T> + 'a, LoadError> {
    if count != 0 && usize::from(entsize) < size_of::<T>() {
        return Err(LoadError::BadElf("header table entries are too small"));
    }
    let table = range(bytes, offset, u64::from(count) * u64::from(entsize))?;
    // `chunks` needs a non-zero size; with zero entries it is never used.
    Ok(table.chunks(usize::from(entsize).max(1)).filter_map(|entry| T::ref_from_prefix(entry).ok().map(|(t, _)| t)))
}

/// The Xen notes this loader uses.
#[derive(Default)]
struct XenNotes {
    entry: Option<u32>,
    features: Option<u32>,
}

/// A note descriptor as a little-endian number of 1, 2, 4 or 8 bytes (libelf's rule).
fn note_number(desc: &[u8]) -> Option<u64> {
    match desc.len() {
        1 | 2 | 4 | 8 => Some(desc.iter().rev().fold(0u64, |n, &b| (n << 8) | u64::from(b))),
        _ => None,
    }
}

/// Walks the notes in `data` and records the Xen ones; the first note of each type wins.
/// Descriptors and entries are aligned to `align` from the start of the note: 4 bytes, or 8
/// in a segment or section aligned to 8 (as GNU property notes are).
fn read_notes(mut data: &[u8], align: u64, notes: &mut XenNotes) -> Result<(), LoadError> {
    let align = if align == 8 { 8 } else { 4 };
    let pad = |n: u64| n.div_ceil(align) * align;
    let malformed = LoadError::BadElf("malformed note");
    while !data.is_empty() {
        let header = data.get(..12).ok_or(malformed)?;
        let word = |i: usize| u64::from(u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]));
        let (namesz, descsz, kind) = (word(0), word(4), word(8) as u32);
        let name = range(data, 12, namesz).map_err(|_| malformed)?;
        // Offsets from the start of the note; the sizes are u32, so nothing overflows.
        let desc_at = pad(12 + namesz);
        let desc = range(data, desc_at, descsz).map_err(|_| malformed)?;
        let next = pad(desc_at + descsz);
        data = data.get(usize::try_from(next).unwrap_or(usize::MAX)..).unwrap_or(&[]);

        if name.strip_suffix(b"\0").unwrap_or(name) != &elfnote::NAME[..3] {
            continue;
        }
        match kind {
            elfnote::PHYS32_ENTRY if notes.entry.is_none() => {
                let entry = note_number(desc).ok_or(LoadError::BadElf("PHYS32_ENTRY note has a bad size"))?;
                let entry = u32::try_from(entry).map_err(|_| LoadError::BadElf("PHYS32_ENTRY is above 4 GiB"))?;
                notes.entry = Some(entry);
            }
            elfnote::SUPPORTED_FEATURES if notes.features.is_none() => {
                let bits = note_number(desc).ok_or(LoadError::BadElf("SUPPORTED_FEATURES note has a bad size"))?;
                // Only the first 32 feature bits (submap 0) exist.
                notes.features = Some(bits as u32);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses an ELF64 x86-64 PVH kernel: its `PT_LOAD` segments by physical address and its
/// `XEN_ELFNOTE_PHYS32_ENTRY` entry point (plus the supported-features note, if present).
///
/// # Errors
/// [`LoadError::BadElf`] for anything that is not a well-formed little-endian x86-64
/// executable (or has malformed notes), [`LoadError::Truncated`] if a header table, segment or
/// note lies past the end of `elf`, [`LoadError::SegmentsOverlap`],
/// [`LoadError::NoPvhEntry`] without the entry note, and [`LoadError::EntryOutsideImage`] if
/// the entry is not inside a segment's file data.
pub fn parse_pvh_kernel(elf: &[u8]) -> Result<PvhKernel<'_>, LoadError> {
    let (ehdr, _) = Ehdr::ref_from_prefix(elf).map_err(|_| LoadError::Truncated)?;
    let ident = &ehdr.ident;
    if ident[..4] != ELF_MAGIC[..] {
        return Err(LoadError::BadElf("no ELF magic"));
    }
    if ident[4] != ELFCLASS64 {
        return Err(LoadError::BadElf("not a 64-bit ELF file"));
    }
    if ident[5] != ELFDATA2LSB {
        return Err(LoadError::BadElf("not little-endian"));
    }
    if ident[6] != EV_CURRENT {
        return Err(LoadError::BadElf("unknown ELF version"));
    }
    if ehdr.machine.get() != EM_X86_64 {
        return Err(LoadError::BadElf("not an x86-64 image"));
    }
    if !matches!(ehdr.e_type.get(), ET_EXEC | ET_DYN) {
        return Err(LoadError::BadElf("not an executable"));
    }
    let phnum = ehdr.phnum.get();
    if phnum == PN_XNUM {
        return Err(LoadError::BadElf("extended program header numbering is not supported"));
    }

    let mut segments = Vec::new();
    let mut notes = XenNotes::default();
    let mut saw_note_segment = false;
    for ph in table::<Phdr>(elf, ehdr.phoff.get(), phnum, ehdr.phentsize.get())? {
        match ph.p_type.get() {
            PT_LOAD => {
                let (filesz, memsz, paddr) = (ph.filesz.get(), ph.memsz.get(), ph.paddr.get());
                if filesz > memsz {
                    return Err(LoadError::BadElf("segment file size exceeds its memory size"));
                }
                if paddr.checked_add(memsz).is_none() {
                    return Err(LoadError::BadElf("segment wraps around the address space"));
                }
                let data = range(elf, ph.offset.get(), filesz)?;
                if memsz != 0 {
                    segments.try_reserve(1).map_err(|_| LoadError::OutOfMemory)?;
                    segments.push(Segment { paddr, memsz, data });
                }
            }
            PT_NOTE => {
                saw_note_segment = true;
                read_notes(range(elf, ph.offset.get(), ph.filesz.get())?, ph.align.get(), &mut notes)?;
            }
            _ => {}
        }
    }
    if !saw_note_segment {
        for sh in table::<Shdr>(elf, ehdr.shoff.get(), ehdr.shnum.get(), ehdr.shentsize.get())? {
            if sh.sh_type.get() == SHT_NOTE {
                read_notes(range(elf, sh.offset.get(), sh.size.get())?, sh.addralign.get(), &mut notes)?;
            }
        }
    }

    if segments.is_empty() {
        return Err(LoadError::BadElf("no loadable segment"));
    }
    segments.sort_unstable_by_key(|s| s.paddr);
    for pair in segments.windows(2) {
        if pair[1].paddr < pair[0].end() {
            return Err(LoadError::SegmentsOverlap { first: pair[0].paddr, second: pair[1].paddr });
        }
    }
    let entry = notes.entry.ok_or(LoadError::NoPvhEntry)?;
    let inside = |s: &Segment<'_>| (s.paddr..s.paddr + s.data.len() as u64).contains(&u64::from(entry));
    if !segments.iter().any(inside) {
        return Err(LoadError::EntryOutsideImage { entry });
    }
    Ok(PvhKernel { entry, segments, features: notes.features })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ElfBuilder, Note};
    use proptest::prelude::*;
    use std::vec;

    fn xen_note(kind: u32, desc: &[u8]) -> Note {
        Note { name: b"Xen\0".to_vec(), kind, desc: desc.to_vec() }
    }

    /// A Linux-like image: text, data, a vaddr-0 percpu segment, init+bss; 8-byte entry note.
    fn linux_like() -> ElfBuilder {
        ElfBuilder::new()
            .load(0x100_0000, 0xffff_ffff_8100_0000, vec![0x90; 0x3000], 0x3000)
            .load(0x100_4000, 0xffff_ffff_8100_4000, vec![0x11; 0x800], 0x1000)
            .load(0x100_5000, 0, vec![0x22; 0x100], 0x1000)
            .load(0x100_6000, 0xffff_ffff_8100_6000, vec![0x33; 0x200], 0x8000)
            .note(xen_note(elfnote::GUEST_OS, b"linux\0"))
            .note(xen_note(elfnote::SUPPORTED_FEATURES, &0x8801u32.to_le_bytes()))
            .note(Note { name: b"GNU\0".to_vec(), kind: 3, desc: vec![0xAB; 20] })
            .note(xen_note(elfnote::PHYS32_ENTRY, &0x100_0850u64.to_le_bytes()))
    }

    #[test]
    fn linux_like_image() {
        let mut elf = linux_like().build();
        elf.extend_from_slice(&[0xEE; 1000]); // relocations after the ELF
        let k = parse_pvh_kernel(&elf).unwrap();
        assert_eq!(k.entry, 0x100_0850);
        assert_eq!(k.features, Some(0x8801));
        assert_eq!(k.segments.len(), 4);
        assert_eq!(k.segments[2].paddr, 0x100_5000, "vaddr-0 segment goes by paddr");
        assert_eq!(k.segments[2].data, &[0x22; 0x100][..]);
        assert_eq!(k.segments[3].memsz, 0x8000);
        assert_eq!(k.start(), 0x100_0000);
        assert_eq!(k.end(), 0x100_e000);
    }

    #[test]
    fn entry_descriptor_sizes() {
        for size in [1usize, 2, 4, 8] {
            let entry: u64 = [0x80, 0x1080, 0x100_0080, 0x100_0080][size.trailing_zeros() as usize];
            let elf = ElfBuilder::new()
                .load(0, 0, vec![0; 0x200_0000.min(entry as usize + 16)], 0x200_0000)
                .note(xen_note(elfnote::PHYS32_ENTRY, &entry.to_le_bytes()[..size]))
                .build();
            assert_eq!(parse_pvh_kernel(&elf).unwrap().entry, entry as u32, "size {size}");
        }
        let bad = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 16)
            .note(xen_note(elfnote::PHYS32_ENTRY, &[0, 0x10, 0]))
            .build();
        assert_eq!(parse_pvh_kernel(&bad), Err(LoadError::BadElf("PHYS32_ENTRY note has a bad size")));
        let high = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 16)
            .note(xen_note(elfnote::PHYS32_ENTRY, &0x1_0000_1000u64.to_le_bytes()))
            .build();
        assert_eq!(parse_pvh_kernel(&high), Err(LoadError::BadElf("PHYS32_ENTRY is above 4 GiB")));
    }

    #[test]
    fn notes_in_sections_when_there_is_no_note_segment() {
        let elf = linux_like().notes_as_section().build();
        let k = parse_pvh_kernel(&elf).unwrap();
        assert_eq!(k.entry, 0x100_0850);
        assert_eq!(k.features, Some(0x8801));
    }

    #[test]
    fn eight_byte_aligned_notes() {
        let elf = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 16)
            .note_align(8)
            .note(Note { name: b"GNU\0\0".to_vec(), kind: 5, desc: vec![1; 12] })
            .note(xen_note(elfnote::PHYS32_ENTRY, &0x1004u32.to_le_bytes()))
            .build();
        assert_eq!(parse_pvh_kernel(&elf).unwrap().entry, 0x1004);
    }

    #[test]
    fn missing_and_misplaced_entry() {
        let none = ElfBuilder::new().load(0x1000, 0, vec![0; 16], 16).build();
        assert_eq!(parse_pvh_kernel(&none), Err(LoadError::NoPvhEntry));
        let other_owner = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 16)
            .note(Note { name: b"Linux\0".to_vec(), kind: elfnote::PHYS32_ENTRY, desc: vec![0, 0x10, 0, 0] })
            .build();
        assert_eq!(parse_pvh_kernel(&other_owner), Err(LoadError::NoPvhEntry));
        // In the BSS part of a segment: no code there.
        let in_bss = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 0x1000)
            .note(xen_note(elfnote::PHYS32_ENTRY, &0x1800u32.to_le_bytes()))
            .build();
        assert_eq!(parse_pvh_kernel(&in_bss), Err(LoadError::EntryOutsideImage { entry: 0x1800 }));
    }

    #[test]
    fn segment_rules() {
        let entry = xen_note(elfnote::PHYS32_ENTRY, &0x1000u32.to_le_bytes());
        let overlap = ElfBuilder::new()
            .load(0x1000, 0, vec![0; 16], 0x2000)
            .load(0x2000, 0, vec![0; 16], 16)
            .note(entry.clone())
            .build();
        assert_eq!(parse_pvh_kernel(&overlap), Err(LoadError::SegmentsOverlap { first: 0x1000, second: 0x2000 }));

        let empty_skipped =
            ElfBuilder::new().load(0x1000, 0, vec![0; 16], 16).load(0x1008, 0, vec![], 0).note(entry.clone()).build();
        assert_eq!(parse_pvh_kernel(&empty_skipped).unwrap().segments.len(), 1);

        let no_load = ElfBuilder::new().note(entry.clone()).build();
        assert_eq!(parse_pvh_kernel(&no_load), Err(LoadError::BadElf("no loadable segment")));

        let mut filesz_big = ElfBuilder::new().load(0x1000, 0, vec![0; 16], 16).note(entry.clone()).build();
        // memsz of the first program header (offset 64 + 40).
        filesz_big[64 + 40..64 + 48].copy_from_slice(&8u64.to_le_bytes());
        assert_eq!(parse_pvh_kernel(&filesz_big), Err(LoadError::BadElf("segment file size exceeds its memory size")));

        let mut wraps = ElfBuilder::new().load(0x1000, 0, vec![0; 16], 16).note(entry.clone()).build();
        wraps[64 + 24..64 + 32].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
        assert_eq!(parse_pvh_kernel(&wraps), Err(LoadError::BadElf("segment wraps around the address space")));

        let mut past_end = ElfBuilder::new().load(0x1000, 0, vec![0; 16], 16).note(entry).build();
        past_end[64 + 8..64 + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(parse_pvh_kernel(&past_end), Err(LoadError::Truncated));
    }

    #[test]
    fn header_checks() {
        let good = linux_like().build();
        let with = |at: usize, bytes: &[u8]| {
            let mut v = good.clone();
            v[at..at + bytes.len()].copy_from_slice(bytes);
            parse_pvh_kernel(&v).map(|_| ())
        };
        assert_eq!(parse_pvh_kernel(&good[..63]).map(|_| ()), Err(LoadError::Truncated));
        assert_eq!(with(0, b"\x7fELG"), Err(LoadError::BadElf("no ELF magic")));
        assert_eq!(with(4, &[1]), Err(LoadError::BadElf("not a 64-bit ELF file")));
        assert_eq!(with(5, &[2]), Err(LoadError::BadElf("not little-endian")));
        assert_eq!(with(6, &[0]), Err(LoadError::BadElf("unknown ELF version")));
        assert_eq!(with(18, &3u16.to_le_bytes()), Err(LoadError::BadElf("not an x86-64 image")));
        assert_eq!(with(16, &1u16.to_le_bytes()), Err(LoadError::BadElf("not an executable")));
        assert!(with(16, &3u16.to_le_bytes()).is_ok(), "ET_DYN is accepted");
        assert_eq!(
            with(56, &0xFFFFu16.to_le_bytes()),
            Err(LoadError::BadElf("extended program header numbering is not supported"))
        );
        assert_eq!(with(54, &40u16.to_le_bytes()), Err(LoadError::BadElf("header table entries are too small")));
        assert_eq!(with(32, &(good.len() as u64).to_le_bytes()), Err(LoadError::Truncated));
    }

    #[test]
    fn malformed_notes() {
        let mut elf = linux_like().build();
        let (off, _) = ElfBuilder::note_segment_range(&elf);
        // namesz far past the note segment.
        elf[off..off + 4].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(parse_pvh_kernel(&elf), Err(LoadError::BadElf("malformed note")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn damaged_images_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut elf = linux_like().build();
            for (at, value) in flips {
                let i = at.index(elf.len());
                elf[i] ^= value;
            }
            let cut = cut.index(elf.len() + 1);
            if let Ok(k) = parse_pvh_kernel(&elf[..cut]) {
                // Whatever parses obeys the documented invariants.
                prop_assert!(!k.segments.is_empty());
                for pair in k.segments.windows(2) {
                    prop_assert!(pair[0].end() <= pair[1].paddr);
                }
                for s in &k.segments {
                    prop_assert!(s.data.len() as u64 <= s.memsz);
                }
                prop_assert!(k.segments.iter().any(|s| (s.paddr..s.paddr + s.data.len() as u64).contains(&u64::from(k.entry))));
            }
        }

        #[test]
        fn random_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut bytes = bytes;
            if bytes.len() >= 20 {
                bytes[..4].copy_from_slice(ELF_MAGIC);
                bytes[4] = ELFCLASS64;
                bytes[5] = ELFDATA2LSB;
                bytes[6] = EV_CURRENT;
                bytes[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
                bytes[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
            }
            let _ = parse_pvh_kernel(&bytes);
        }
    }
}
