//! Tests against Debian 12's real kernels (`linux-image-amd64`, an XZ bzImage, and
//! `linux-image-cloud-amd64`, an LZ4 one), compiled only with the `debian-kernels` feature.
//!
//! They read every `vmlinuz-*` file in the directory named by `KEEL_DEBIAN_KERNELS` and fail
//! (never skip) if the variable is unset or the directory has no kernel of either flavour. What
//! they check is derived from each file itself (its setup header, program headers and section
//! table, read here independently of the crate's parsers), not from one build's numbers.
//! Decompression, parsing and building are timed on stderr, which the test harness does not
//! capture, so every run shows what they cost in this profile.

use std::borrow::Cow;
use std::io::Write as _;
use std::path::PathBuf;
use std::string::String;
use std::time::Instant;
use std::vec::Vec;
use std::{env, format, fs};

use crate::testutil::{check_built, FakeMemory};
use crate::{build, kernel_elf, min_ram_for, parse_bzimage, parse_pvh_kernel, plan, Compression, DomainSpec};

/// Output limit for the decompressed image (Debian's is about 63 MiB).
const LIMIT: usize = 256 << 20;
/// `XENFEAT_linux_rsdp_unrestricted`: the RSDP may be anywhere (keel puts it at 0xFC00_0000).
const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 1 << 15;

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn report(line: String) {
    // Straight to the process's stderr: libtest captures only the print macros.
    let _ = writeln!(std::io::stderr(), "[debian-kernels] {line}");
}

/// The `vmlinuz-*` files to test; panics unless both flavours are there.
fn kernels() -> Vec<PathBuf> {
    let dir = env::var_os("KEEL_DEBIAN_KERNELS")
        .expect("KEEL_DEBIAN_KERNELS must name a directory holding Debian's vmlinuz-* files");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read KEEL_DEBIAN_KERNELS={}: {e}", PathBuf::from(&dir).display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    found.sort();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(found.iter().any(|p| name(p).ends_with("-cloud-amd64")), "no vmlinuz-*-cloud-amd64 in {found:?}");
    assert!(
        found.iter().any(|p| name(p).ends_with("-amd64") && !name(p).ends_with("-cloud-amd64")),
        "no generic vmlinuz-*-amd64 in {found:?}"
    );
    found
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The trailing size word of a bzImage's payload, read straight from the setup header.
fn size_word(module: &[u8]) -> u32 {
    let setup_sects = match module[0x1F1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + le32(module, 0x248) as usize;
    let end = start + le32(module, 0x24C) as usize;
    le32(module, end - 4)
}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

struct Section {
    name: String,
    offset: u64,
    size: u64,
    nobits: bool,
}

fn phdrs(elf: &[u8]) -> Vec<Phdr> {
    let (phoff, phentsize, phnum) = (le64(elf, 32) as usize, le16(elf, 54) as usize, le16(elf, 56) as usize);
    (0..phnum)
        .map(|i| {
            let h = &elf[phoff + i * phentsize..];
            Phdr {
                p_type: le32(h, 0),
                offset: le64(h, 8),
                vaddr: le64(h, 16),
                paddr: le64(h, 24),
                filesz: le64(h, 32),
                memsz: le64(h, 40),
            }
        })
        .collect()
}

fn sections(elf: &[u8]) -> Vec<Section> {
    let (shoff, shentsize, shnum, shstrndx) =
        (le64(elf, 40) as usize, le16(elf, 58) as usize, le16(elf, 60) as usize, le16(elf, 62) as usize);
    let sh = |i: usize| &elf[shoff + i * shentsize..];
    let strtab = le64(sh(shstrndx), 24) as usize;
    (0..shnum)
        .map(|i| {
            let h = sh(i);
            let name_at = strtab + le32(h, 0) as usize;
            let len = elf[name_at..].iter().position(|&b| b == 0).unwrap();
            Section {
                name: String::from_utf8_lossy(&elf[name_at..name_at + len]).into_owned(),
                offset: le64(h, 24),
                size: le64(h, 32),
                nobits: le32(h, 4) == 8,
            }
        })
        .collect()
}

/// The PT_LOAD holding a (file-backed) section, and the section's physical address in it.
fn section_paddr<'a>(loads: &'a [&'a Phdr], s: &Section) -> (&'a Phdr, u64) {
    let ph = loads
        .iter()
        .find(|p| s.offset >= p.offset && s.offset + s.size <= p.offset + p.filesz)
        .unwrap_or_else(|| panic!("section {} is in no PT_LOAD", s.name));
    (ph, ph.paddr + (s.offset - ph.offset))
}

#[test]
fn debian_kernels_load_and_build() {
    for path in kernels() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let module = fs::read(&path).unwrap();

        // bzImage -> ELF, timed.
        let bz = parse_bzimage(&module).unwrap();
        let expected = if name.ends_with("-cloud-amd64") { Compression::Lz4 } else { Compression::Xz };
        assert_eq!(bz.compression, expected, "{name}");
        let started = Instant::now();
        let elf = kernel_elf(&module, LIMIT).unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        assert!(matches!(elf, Cow::Owned(_)));
        report(format!(
            "{name}: {} payload {} bytes -> {} bytes in {:.0} ms ({} profile)",
            bz.compression,
            bz.payload.len(),
            elf.len(),
            took.as_secs_f64() * 1000.0,
            profile()
        ));
        assert_eq!(elf.len(), size_word(&module) as usize, "{name}: decompressed size = trailing size word");
        assert_eq!(Some(size_word(&module)), bz.decompressed_size);

        // ELF -> PVH kernel, checked against the file's own headers.
        let started = Instant::now();
        let kernel = parse_pvh_kernel(&elf).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parse_took = started.elapsed();
        let all = phdrs(&elf);
        let loads: Vec<&Phdr> = all.iter().filter(|p| p.p_type == 1).collect();
        assert_eq!(kernel.segments.len(), 4, "{name}: 4 PT_LOADs");
        assert_eq!(loads.len(), 4);
        for (seg, ph) in kernel.segments.iter().zip(&loads) {
            assert_eq!(seg.paddr, ph.paddr, "{name}: loaded at p_paddr");
            assert_eq!(seg.memsz, ph.memsz);
            assert_eq!(seg.data.len() as u64, ph.filesz);
            assert_eq!(seg.data.as_ptr() as usize - elf.as_ptr() as usize, ph.offset as usize);
        }
        let secs = sections(&elf);
        let find = |n: &str| secs.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("{name}: no {n} section"));
        let percpu = find(".data..percpu");
        let (percpu_load, _) = section_paddr(&loads, percpu);
        assert_eq!(percpu_load.vaddr, 0, "{name}: .data..percpu is the vaddr-0 segment");
        assert_eq!(loads.iter().filter(|p| p.vaddr == 0).count(), 1);

        // The image lies in [16 MiB, 80 MiB), starting at 16 MiB.
        assert_eq!(kernel.start(), 16 << 20, "{name}");
        assert!(kernel.end() <= 80 << 20, "{name}: image ends at {:#x}", kernel.end());
        // The PVH entry is in .text, and everything file-backed lies inside the image.
        let text = find(".text");
        let (_, text_paddr) = section_paddr(&loads, text);
        let entry = u64::from(kernel.entry);
        assert!((text_paddr..text_paddr + text.size).contains(&entry), "{name}: entry {entry:#x} not in .text");
        for s in secs.iter().filter(|s| !s.nobits && s.size > 0) {
            if let Some(ph) = loads.iter().find(|p| s.offset >= p.offset && s.offset < p.offset + p.filesz) {
                assert!(ph.paddr + (s.offset - ph.offset) + s.size <= kernel.end(), "{name}: {}", s.name);
            }
        }
        assert!(
            kernel.features.is_some_and(|f| f & XENFEAT_LINUX_RSDP_UNRESTRICTED != 0),
            "{name}: features {:x?}",
            kernel.features
        );
        let need = min_ram_for(&kernel);
        assert_eq!(need, kernel.end().next_multiple_of(4096), "{name}: start info fits below the kernel");

        // A 512 MiB domU with a fake initrd, built into a fake memory and read back.
        let initrd: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let spec = DomainSpec {
            ram_bytes: 512 << 20,
            vcpus: 2,
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: "console=hvc0 root=/dev/xvda1 ro",
            flags: 0,
        };
        let started = Instant::now();
        let layout = plan(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut mem = FakeMemory::new(&layout, 0xDB);
        build(&spec, &layout, &mut mem).unwrap_or_else(|e| panic!("{name}: {e}"));
        let build_took = started.elapsed();
        check_built(&spec, &layout, &mem);
        assert_eq!(layout.entry, kernel.entry);
        assert!(layout.initrd.unwrap().0.as_u64() >= kernel.end(), "{name}: initrd after the kernel, as libxl");
        report(format!(
            "{name}: parse {:.1} ms, plan+build 512 MiB domain {:.0} ms; entry {:#x}, image [{:#x}, {:#x}), \
             initrd at {}, start info at {}, RSDP at {:#x}, min RAM {} MiB",
            parse_took.as_secs_f64() * 1000.0,
            build_took.as_secs_f64() * 1000.0,
            kernel.entry,
            kernel.start(),
            kernel.end(),
            layout.initrd.unwrap().0,
            layout.start_info,
            layout.acpi.rsdp,
            need >> 20
        ));

        // Too small a domain is refused with the segment that does not fit.
        let small = DomainSpec { ram_bytes: need - 4096, initrd: None, ..spec };
        assert!(matches!(plan(&small), Err(crate::LoadError::SegmentOutsideRam { .. })), "{name}");
    }
}
