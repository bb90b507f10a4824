//! Test support: builders for synthetic ELF kernels and bzImages, compressors for every
//! supported payload format (the encoder side of the same crates), and a fake guest memory.
//!
//! The builders write every header field at its byte offset from the ELF and boot-protocol
//! specifications, independently of the parsers' layouts, so a layout mistake cannot hide in a
//! round trip.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use keel_mm::{Gfn, Gpa, PAGE_SIZE};

use crate::decompress::crc32;
use crate::{Compression, GuestMemory, Layout};

/// Every format with a decompressor.
pub const ALL_SUPPORTED: [Compression; 5] =
    [Compression::Gzip, Compression::Lzma, Compression::Xz, Compression::Lz4, Compression::Zstd];

fn put16(v: &mut [u8], at: usize, x: u16) {
    v[at..at + 2].copy_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut [u8], at: usize, x: u64) {
    v[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

fn align(v: &mut Vec<u8>, to: usize) {
    v.resize(v.len().next_multiple_of(to), 0);
}

/// One ELF note.
#[derive(Clone)]
pub struct Note {
    /// The name, with its NUL if the note has one.
    pub name: Vec<u8>,
    pub kind: u32,
    pub desc: Vec<u8>,
}

/// Builds ELF64 x86-64 executables.
#[derive(Clone)]
pub struct ElfBuilder {
    /// (paddr, vaddr, file data, memsz).
    loads: Vec<(u64, u64, Vec<u8>, u64)>,
    notes: Vec<Note>,
    note_align: usize,
    notes_in_section: bool,
}

impl ElfBuilder {
    pub fn new() -> Self {
        Self { loads: Vec::new(), notes: Vec::new(), note_align: 4, notes_in_section: false }
    }

    pub fn load(mut self, paddr: u64, vaddr: u64, data: Vec<u8>, memsz: u64) -> Self {
        self.loads.push((paddr, vaddr, data, memsz));
        self
    }

    pub fn note(mut self, note: Note) -> Self {
        self.notes.push(note);
        self
    }

    pub fn note_align(mut self, align: usize) -> Self {
        self.note_align = align;
        self
    }

    /// Puts the notes in an `SHT_NOTE` section instead of a `PT_NOTE` segment.
    pub fn notes_as_section(mut self) -> Self {
        self.notes_in_section = true;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let note_segment = !self.notes.is_empty() && !self.notes_in_section;
        let phnum = self.loads.len() + usize::from(note_segment);
        let mut out = vec![0u8; 64 + 56 * phnum];

        // Notes.
        align(&mut out, 8);
        let notes_at = out.len();
        for n in &self.notes {
            let mut h = [0u8; 12];
            put32(&mut h, 0, n.name.len() as u32);
            put32(&mut h, 4, n.desc.len() as u32);
            put32(&mut h, 8, n.kind);
            out.extend_from_slice(&h);
            out.extend_from_slice(&n.name);
            align(&mut out, self.note_align);
            out.extend_from_slice(&n.desc);
            align(&mut out, self.note_align);
        }
        let notes_len = out.len() - notes_at;

        // Segment data.
        let mut offsets = Vec::new();
        for (_, _, data, _) in &self.loads {
            align(&mut out, 16);
            offsets.push(out.len());
            out.extend_from_slice(data);
        }

        // Section headers: a null section and the notes.
        align(&mut out, 8);
        let (shoff, shnum) = if self.notes_in_section { (out.len(), 2) } else { (0, 0) };
        if self.notes_in_section {
            let mut sh = [0u8; 128];
            put32(&mut sh, 64 + 4, 7); // SHT_NOTE
            put64(&mut sh, 64 + 24, notes_at as u64);
            put64(&mut sh, 64 + 32, notes_len as u64);
            put64(&mut sh, 64 + 48, self.note_align as u64);
            out.extend_from_slice(&sh);
        }

        // File header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        put16(&mut out, 16, 2); // ET_EXEC
        put16(&mut out, 18, 62); // EM_X86_64
        put32(&mut out, 20, 1);
        put64(&mut out, 24, 0x100_0000); // e_entry: the bzImage entry, never used for PVH
        put64(&mut out, 32, 64);
        put64(&mut out, 40, shoff as u64);
        put16(&mut out, 52, 64);
        put16(&mut out, 54, 56);
        put16(&mut out, 56, phnum as u16);
        put16(&mut out, 58, 64);
        put16(&mut out, 60, shnum);

        // Program headers.
        for (i, (paddr, vaddr, data, memsz)) in self.loads.iter().enumerate() {
            let at = 64 + 56 * i;
            put32(&mut out, at, 1); // PT_LOAD
            put32(&mut out, at + 4, 7);
            put64(&mut out, at + 8, offsets[i] as u64);
            put64(&mut out, at + 16, *vaddr);
            put64(&mut out, at + 24, *paddr);
            put64(&mut out, at + 32, data.len() as u64);
            put64(&mut out, at + 40, *memsz);
            put64(&mut out, at + 48, 0x1000);
        }
        if note_segment {
            let at = 64 + 56 * self.loads.len();
            put32(&mut out, at, 4); // PT_NOTE
            put32(&mut out, at + 4, 4);
            put64(&mut out, at + 8, notes_at as u64);
            put64(&mut out, at + 32, notes_len as u64);
            put64(&mut out, at + 40, notes_len as u64);
            put64(&mut out, at + 48, self.note_align as u64);
        }
        out
    }

    /// (offset, length) of the `PT_NOTE` segment of an image this builder made.
    pub fn note_segment_range(elf: &[u8]) -> (usize, usize) {
        let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
        for i in 0..phnum {
            let at = 64 + 56 * i;
            if elf[at..at + 4] == 4u32.to_le_bytes() {
                let off = u64::from_le_bytes(elf[at + 8..at + 16].try_into().unwrap()) as usize;
                let len = u64::from_le_bytes(elf[at + 32..at + 40].try_into().unwrap()) as usize;
                return (off, len);
            }
        }
        panic!("no PT_NOTE");
    }
}

fn xen_note(kind: u32, desc: &[u8]) -> Note {
    Note { name: b"Xen\0".to_vec(), kind, desc: desc.to_vec() }
}

/// A small PVH kernel: code at 1 MiB, entry 1 MiB + 0x10, BSS to 1 MiB + 8 KiB.
pub fn tiny_elf_builder() -> ElfBuilder {
    let code: Vec<u8> = (0..0x800u32).map(|i| (i * 13 + 1) as u8).collect();
    ElfBuilder::new()
        .load(0x10_0000, 0xffff_ffff_8010_0000, code, 0x2000)
        .note(xen_note(xen_abi::elfnote::PHYS32_ENTRY, &0x10_0010u64.to_le_bytes()))
        .note(xen_note(xen_abi::elfnote::SUPPORTED_FEATURES, &0x8801u32.to_le_bytes()))
}

/// [`tiny_elf_builder`], built.
pub fn tiny_elf() -> Vec<u8> {
    tiny_elf_builder().build()
}

/// A bzImage (boot protocol 2.15, `setup_sects` = 4) whose payload is `stream` followed (when
/// compressed) by the size word `declared`, and then `trailer` bytes of other data.
pub fn bzimage(c: Compression, stream: &[u8], declared: u32, trailer: usize) -> Vec<u8> {
    const SETUP: usize = 5 * 512;
    const PAYLOAD_OFFSET: usize = 0x3C0;
    let mut payload = stream.to_vec();
    if c != Compression::None {
        payload.extend_from_slice(&declared.to_le_bytes());
    }
    let mut v = vec![0x5Au8; SETUP + PAYLOAD_OFFSET];
    v[0x1F1] = 4;
    put16(&mut v, 0x1FE, 0xAA55);
    v[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut v, 0x206, 0x020F);
    put32(&mut v, 0x248, PAYLOAD_OFFSET as u32);
    put32(&mut v, 0x24C, payload.len() as u32);
    v.extend_from_slice(&payload);
    v.extend((0..trailer).map(|i| i as u8));
    v
}

/// `data` compressed as a Linux build would (XZ with the x86 BCJ filter and CRC32, LZMA
/// "alone" with unknown size and an end marker, legacy LZ4 in 8 MiB chunks, ...).
pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => gzip_member(data, 1 << 3),
        Compression::Xz => xz(data, 1 << 16, true),
        Compression::Lzma => {
            use lzma_rust2::{LzmaOptions, LzmaWriter, Write};
            let mut opts = LzmaOptions::with_preset(6);
            opts.dict_size = 1 << 16;
            let mut w = LzmaWriter::new_use_header(Vec::new(), &opts, None).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        Compression::Lz4 => lz4_legacy_frame(data, 8 << 20),
        Compression::Zstd => ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
        Compression::None | Compression::Bzip2 | Compression::Lzo => panic!("no encoder for {c}"),
    }
}

fn xz(data: &[u8], dict: u32, bcj: bool) -> Vec<u8> {
    use lzma_rust2::{CheckType, FilterType, Write, XzOptions, XzWriter};
    let mut opts = XzOptions::with_preset(6);
    opts.lzma_options.dict_size = dict;
    opts.set_check_sum_type(CheckType::Crc32);
    if bcj {
        opts.prepend_pre_filter(FilterType::BcjX86, 0);
    }
    let mut w = XzWriter::new(Vec::new(), opts).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// An XZ stream whose block header declares an LZMA2 dictionary of `dict` bytes (a power of
/// two); the data itself is compressed with a small one, which decodes the same.
pub fn xz_with_dict(data: &[u8], dict: u32) -> Vec<u8> {
    let mut v = xz(data, 1 << 16, false);
    // Stream header (12 bytes), then the block header: size byte, flags, filter flags.
    let header_len = (usize::from(v[12]) + 1) * 4;
    let header = 12..12 + header_len;
    let lzma2 = v[header.clone()].windows(2).position(|w| w == [0x21, 0x01]).expect("LZMA2 filter flags") + 12;
    // Dictionary property p: 2^(p/2 + 12) for even p.
    v[lzma2 + 2] = ((dict.trailing_zeros() - 12) * 2) as u8;
    let crc = crc32(&v[header.start..header.end - 4]);
    put32(&mut v, header.end - 4, crc);
    v
}

/// A gzip member with header `flags` (FTEXT..FCOMMENT bits) and their fields.
pub fn gzip_member(data: &[u8], flags: u8) -> Vec<u8> {
    let mut v = vec![0x1F, 0x8B, 8, flags, 0x78, 0x56, 0x34, 0x12, 0, 3];
    if flags & (1 << 2) != 0 {
        v.extend_from_slice(&5u16.to_le_bytes());
        v.extend_from_slice(b"AB\x01\x00z");
    }
    if flags & (1 << 3) != 0 {
        v.extend_from_slice(b"vmlinux.bin\0");
    }
    if flags & (1 << 4) != 0 {
        v.extend_from_slice(b"a comment\0");
    }
    if flags & (1 << 1) != 0 {
        let crc16 = crc32(&v) as u16;
        v.extend_from_slice(&crc16.to_le_bytes());
    }
    v.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
    v.extend_from_slice(&crc32(data).to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v
}

/// A legacy LZ4 frame (`lz4 -l`) with chunks of `chunk` input bytes.
pub fn lz4_legacy_frame(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut v = 0x184C_2102u32.to_le_bytes().to_vec();
    for part in data.chunks(chunk) {
        let block = lz4_flex::block::compress(part);
        v.extend_from_slice(&(block.len() as u32).to_le_bytes());
        v.extend_from_slice(&block);
    }
    v
}

/// Sparse guest memory: only the frames a layout populates exist, and pages read as `fill`
/// until written (so a test sees whether the builder really zeroes what it must).
pub struct FakeMemory {
    populated: Vec<(Gfn, u64)>,
    pages: BTreeMap<u64, Box<[u8]>>,
    fill: u8,
    /// Calls to `write` and `zero`.
    pub calls: usize,
}

impl FakeMemory {
    pub fn new(layout: &Layout, fill: u8) -> Self {
        Self { populated: layout.populate.clone(), pages: BTreeMap::new(), fill, calls: 0 }
    }

    fn backed(&self, gfn: u64) -> bool {
        self.populated.iter().any(|&(first, n)| (first.as_u64()..first.as_u64() + n).contains(&gfn))
    }

    /// Checks that `[gpa, gpa + len)` is populated.
    fn check(&self, gpa: u64, len: u64) -> Result<(), ()> {
        let end = gpa.checked_add(len).ok_or(())?;
        if len == 0 {
            return Ok(());
        }
        (gpa / PAGE_SIZE..=(end - 1) / PAGE_SIZE).all(|g| self.backed(g)).then_some(()).ok_or(())
    }

    fn page(&mut self, gfn: u64) -> &mut [u8] {
        let fill = self.fill;
        self.pages.entry(gfn).or_insert_with(|| vec![fill; PAGE_SIZE as usize].into_boxed_slice())
    }

    /// Applies `f` to each (page slice, offset in the source range) covering `[gpa, gpa+len)`.
    fn each(&mut self, gpa: u64, len: u64, mut f: impl FnMut(&mut [u8], usize)) {
        let mut done = 0u64;
        while done < len {
            let at = gpa + done;
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE - off as u64).min(len - done) as usize;
            let page = self.page(at / PAGE_SIZE);
            f(&mut page[off..off + n], done as usize);
            done += n as u64;
        }
    }

    /// Reads `len` bytes; `None` if any of them is not populated.
    pub fn read(&self, gpa: u64, len: usize) -> Option<Vec<u8>> {
        self.check(gpa, len as u64).ok()?;
        Some(
            (0..len as u64)
                .map(|i| {
                    let a = gpa + i;
                    self.pages.get(&(a / PAGE_SIZE)).map_or(self.fill, |p| p[(a % PAGE_SIZE) as usize])
                })
                .collect(),
        )
    }

    /// True if the memory at `gpa` holds exactly `bytes`.
    pub fn holds(&self, gpa: u64, bytes: &[u8]) -> bool {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = gpa + done as u64;
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(bytes.len() - done);
            let want = &bytes[done..done + n];
            let ok = match self.pages.get(&(at / PAGE_SIZE)) {
                Some(p) => &p[off..off + n] == want,
                None => want.iter().all(|&b| b == self.fill),
            };
            if !ok || !self.backed(at / PAGE_SIZE) {
                return false;
            }
            done += n;
        }
        true
    }

    /// True if every byte of the range reads as zero.
    pub fn is_zero(&self, gpa: u64, len: u64) -> bool {
        let mut at = gpa;
        while at < gpa + len {
            let n = (PAGE_SIZE - at % PAGE_SIZE).min(gpa + len - at);
            let ok = match self.pages.get(&(at / PAGE_SIZE)) {
                Some(p) => p[(at % PAGE_SIZE) as usize..][..n as usize].iter().all(|&b| b == 0),
                None => self.fill == 0,
            };
            if !ok || self.check(at, n).is_err() {
                return false;
            }
            at += n;
        }
        true
    }
}

impl GuestMemory for FakeMemory {
    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), ()> {
        self.calls += 1;
        self.check(gpa.as_u64(), bytes.len() as u64)?;
        self.each(gpa.as_u64(), bytes.len() as u64, |dst, at| dst.copy_from_slice(&bytes[at..at + dst.len()]));
        Ok(())
    }

    fn zero(&mut self, gpa: Gpa, len: u64) -> Result<(), ()> {
        self.calls += 1;
        self.check(gpa.as_u64(), len)?;
        self.each(gpa.as_u64(), len, |dst, _| dst.fill(0));
        Ok(())
    }
}

impl keel_acpi::PhysMemory for FakeMemory {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        let bytes = FakeMemory::read(self, phys, buf.len()).ok_or(())?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// True if `[a, a + alen)` and `[b, b + blen)` overlap.
fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b + blen && b < a + alen
}

/// Checks, from the bytes in `mem` (read at the offsets of `xen-abi.md` §1.3, not through the
/// crate's structures), that `build` wrote the domain `spec` describes where `layout` says and
/// that every placement rule holds. Panics with the first violation.
pub fn check_built(spec: &crate::DomainSpec<'_>, layout: &Layout, mem: &FakeMemory) {
    const FOUR_GIB: u64 = 1 << 32;
    // Start info.
    let si = mem.read(layout.start_info.as_u64(), 56).expect("start info is populated");
    assert_eq!(le_u32(&si, 0), 0x336e_c578, "magic");
    assert_eq!(le_u32(&si, 4), 1, "version");
    assert_eq!(le_u32(&si, 8), spec.flags, "flags");
    let nr_modules = le_u32(&si, 12);
    let (modlist, cmdline, rsdp, memmap, entries) =
        (le_u64(&si, 16), le_u64(&si, 24), le_u64(&si, 32), le_u64(&si, 40), le_u32(&si, 48));
    assert_eq!(le_u32(&si, 52), 0, "reserved");
    assert_eq!(rsdp, layout.acpi.rsdp);

    // Memory map: as planned, sorted, disjoint, RAM from 0, RAM adding up.
    assert_eq!(entries as usize, layout.memmap.len());
    assert!(entries as usize <= crate::layout::MAX_MEMMAP_ENTRIES);
    let table = mem.read(memmap, 24 * entries as usize).expect("memory map is populated");
    let map: Vec<(u64, u64, u32)> = (0..entries as usize)
        .map(|i| (le_u64(&table, 24 * i), le_u64(&table, 24 * i + 8), le_u32(&table, 24 * i + 16)))
        .collect();
    for (i, e) in map.iter().enumerate() {
        let planned = &layout.memmap[i];
        assert_eq!(*e, (planned.addr, planned.size, planned.type_), "memmap entry {i}");
        assert_eq!(le_u32(&table, 24 * i + 20), 0, "memmap reserved field");
        assert!(e.1 > 0 && e.0 % PAGE_SIZE == 0 && e.1 % PAGE_SIZE == 0, "entry {i} is page granular");
    }
    assert!(map.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "memmap sorted and disjoint: {map:x?}");
    assert_eq!(map[0], (0, spec.ram_bytes.min(0xF000_0000), 1), "RAM from 0");
    let ram: u64 = map.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    assert_eq!(ram, spec.ram_bytes, "RAM adds up");
    let in_ram = |at: u64, len: u64| map.iter().any(|e| e.2 == 1 && at >= e.0 && at + len <= e.0 + e.1);
    let typed = |at: u64, len: u64, ty: u32| map.iter().any(|e| e.2 == ty && at >= e.0 && at + len <= e.0 + e.1);

    // Populated frames are exactly the memory map's ranges.
    let populated: Vec<(u64, u64)> =
        layout.populate.iter().map(|&(g, n)| (g.as_u64() * PAGE_SIZE, n * PAGE_SIZE)).collect();
    let mapped: Vec<(u64, u64)> = map.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(populated, mapped, "populate = memory map");

    // Kernel segments: data, zeroed BSS, inside RAM.
    let (kstart, kend) = (layout.kernel_start.as_u64(), layout.kernel_end.as_u64());
    for s in &spec.kernel.segments {
        assert!(in_ram(s.paddr, s.memsz), "segment {:#x} in RAM", s.paddr);
        assert!(s.paddr >= kstart && s.end() <= kend);
        assert!(mem.holds(s.paddr, s.data), "segment {:#x} data", s.paddr);
        let bss = s.paddr + s.data.len() as u64;
        assert!(mem.is_zero(bss, s.memsz - s.data.len() as u64), "segment {:#x} BSS is zero", s.paddr);
    }
    assert_eq!(layout.entry, spec.kernel.entry);

    // Boot data: in RAM below 4 GiB, above 1 MiB, outside the kernel's span, disjoint.
    let boot_data_ok = |what: &str, at: u64, len: u64| {
        assert!(at >= 0x10_0000 && at + len <= FOUR_GIB, "{what} at {at:#x} is in [1 MiB, 4 GiB)");
        assert!(in_ram(at, len), "{what} at {at:#x} is in RAM");
        assert!(!overlaps(at, len, kstart, kend - kstart), "{what} at {at:#x} is outside the kernel");
    };
    let cmd = mem.read(cmdline, spec.cmdline.len() + 1).expect("command line is populated");
    assert_eq!(&cmd[..spec.cmdline.len()], spec.cmdline.as_bytes());
    assert_eq!(cmd[spec.cmdline.len()], 0, "command line NUL");
    let block_end = cmdline + spec.cmdline.len() as u64 + 1;
    let block = layout.start_info.as_u64();
    boot_data_ok("start info block", block, block_end - block);
    assert!(memmap >= block && memmap + 24 * entries as u64 <= block_end);
    match (spec.initrd.filter(|i| !i.is_empty()), layout.initrd) {
        (Some(initrd), Some((at, len))) => {
            assert_eq!(nr_modules, 1);
            assert_eq!(Some(modlist), layout.modlist.map(|m| m.as_u64()));
            let entry = mem.read(modlist, 32).expect("module list is populated");
            assert_eq!((le_u64(&entry, 0), le_u64(&entry, 8)), (at.as_u64(), len));
            assert_eq!((le_u64(&entry, 16), le_u64(&entry, 24)), (0, 0), "module cmdline, reserved");
            assert!(modlist >= block && modlist + 32 <= block_end);
            assert_eq!(len, initrd.len() as u64);
            assert_eq!(at.as_u64() % PAGE_SIZE, 0, "initrd is page aligned");
            boot_data_ok("initrd", at.as_u64(), len);
            assert!(!overlaps(at.as_u64(), len, block, block_end - block), "initrd and start info are disjoint");
            assert!(mem.holds(at.as_u64(), initrd), "initrd contents");
        }
        (None, None) => {
            assert_eq!((nr_modules, modlist), (0, 0));
            assert_eq!(layout.modlist, None);
        }
        other => panic!("initrd planned inconsistently: {:?}", other.1),
    }

    // Special pages: zero, reserved.
    let special = layout.special_pfn_base.as_u64() * PAGE_SIZE;
    assert_eq!(special, 0xFEFF_8000);
    assert!(mem.is_zero(special, 8 * PAGE_SIZE), "special pages are zero");
    assert!(typed(special, 8 * PAGE_SIZE, 2), "special pages are RESERVED");

    // ACPI: parse the tables back from guest memory.
    let acpi = layout.acpi;
    assert!(typed(0xFC00_0000, acpi.end - 0xFC00_0000, 4), "ACPI tables lie in NVS");
    let rsdp_bytes = mem.read(rsdp, 36).expect("RSDP is populated");
    let rsdp = keel_acpi::parse_rsdp(&rsdp_bytes).expect("valid RSDP");
    let mut warnings = Vec::new();
    let tables = keel_acpi::read_tables(mem, &rsdp, &mut |w| warnings.push(w)).expect("tables parse");
    let madt = keel_acpi::parse_madt(mem, tables.find(b"APIC").expect("MADT"), &mut |w| warnings.push(w)).unwrap();
    let fadt = keel_acpi::parse_fadt(mem, tables.find(b"FACP").expect("FADT")).unwrap();
    assert!(warnings.is_empty() || spec.vcpus as usize > keel_acpi::MAX_CPUS, "{warnings:?}");
    assert_eq!(madt.cpu_count, (spec.vcpus as usize).min(keel_acpi::MAX_CPUS));
    for (i, cpu) in madt.cpus().iter().enumerate() {
        assert_eq!((cpu.acpi_uid, cpu.apic_id, cpu.enabled), (i as u32, 2 * i as u32, true));
    }
    assert_eq!(madt.local_apic_addr, 0xFEE0_0000);
    assert_eq!(fadt.revision, 5);
    assert!(tables.find(b"DSDT").is_some() && tables.find(b"FACS").is_some());
}
