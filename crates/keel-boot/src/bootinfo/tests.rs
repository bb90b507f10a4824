//! Tests of the protocol-independent parts of boot-info handling.

use super::testmem::FakeMem;
use super::*;
use std::boxed::Box;
use std::string::ToString;
use std::vec::Vec;

fn info(protocol: Protocol, loader: &str, cmdline: &str) -> Box<BootInfo> {
    let mut b = Box::new(BootInfo::empty());
    b.protocol = protocol;
    b.loader_name.push_str(loader);
    b.cmdline.push_str(cmdline);
    b
}

#[test]
fn options_cmdline_follows_xen() {
    // QEMU -kernel (multiboot1) puts the kernel file name first.
    let b = info(Protocol::Multiboot1, "qemu", "/tmp/keel maxcpus=2 noreboot");
    assert_eq!(b.options_cmdline(), "maxcpus=2 noreboot");
    // GRUB legacy too.
    let b = info(Protocol::Multiboot1, "GNU GRUB 0.97", "/boot/keel maxcpus=2");
    assert_eq!(b.options_cmdline(), "maxcpus=2");
    // GRUB 2 does not, whichever multiboot version.
    for p in [Protocol::Multiboot1, Protocol::Multiboot2] {
        let b = info(p, "GRUB 2.06", " maxcpus=2");
        assert_eq!(b.options_cmdline(), "maxcpus=2");
    }
    // PVH never does.
    let b = info(Protocol::Pvh, "PVH start info", "maxcpus=2");
    assert_eq!(b.options_cmdline(), "maxcpus=2");
    // Only the image name, or nothing.
    assert_eq!(info(Protocol::Multiboot1, "qemu", "/keel").options_cmdline(), "");
    assert_eq!(info(Protocol::Multiboot1, "", "").options_cmdline(), "");
}

#[test]
fn module_cmdline_follows_the_loader() {
    let module = |line: &str| {
        let mut m = Module::EMPTY;
        m.cmdline.push_str(line);
        m
    };
    let qemu = info(Protocol::Multiboot1, "qemu", "/keel");
    let m = module("/boot/vmlinuz root=/dev/xvda ro");
    assert_eq!(qemu.module_cmdline(&m), (Some("/boot/vmlinuz"), "root=/dev/xvda ro"));
    assert_eq!(qemu.module_cmdline(&module("")), (None, ""));
    let grub = info(Protocol::Multiboot2, "GRUB 2.06", "");
    assert_eq!(grub.module_cmdline(&module(" root=/dev/xvda ro")), (None, "root=/dev/xvda ro"));
    let pvh = info(Protocol::Pvh, "", "");
    assert_eq!(pvh.module_cmdline(&module("initrd args")), (None, "initrd args"));
}

#[test]
fn grub2_detection() {
    assert!(loader_is_grub2("GRUB 2.06-13+deb12u1"));
    assert!(loader_is_grub2("GRUB2 GRUB 2.12"));
    assert!(loader_is_grub2("GRUB "));
    assert!(!loader_is_grub2("GNU GRUB 0.97"));
    assert!(!loader_is_grub2("GRUB2 2.00"));
    assert!(!loader_is_grub2("qemu"));
    assert!(!loader_is_grub2(""));
}

#[test]
fn empty_bootinfo() {
    let b = BootInfo::empty();
    assert!(b.memory_map().is_empty());
    assert!(b.modules().is_empty());
    assert_eq!(b.cmdline, "");
    assert_eq!(b.acpi_root(), None);
    // Out-of-range counts written through the public fields do not panic.
    let mut b = Box::new(BootInfo::empty());
    b.memory_entries = usize::MAX;
    b.module_count = MAX_MODULES + 1;
    assert_eq!(b.memory_map().len(), MAX_MEM_ENTRIES);
    assert_eq!(b.modules().len(), MAX_MODULES);
}

#[test]
fn small_types() {
    let e = MemEntry { base: u64::MAX - 1, len: 2, kind: MemEntry::RAM };
    assert_eq!(e.end(), None);
    let e = MemEntry { len: 1, ..e };
    assert_eq!(e.end(), Some(u64::MAX));
    assert_eq!(AcpiRoot::Address(0xe0000).copied(), None);
    let root = AcpiRoot::Copy { bytes: [7; 36], len: 20 };
    assert_eq!(root.copied(), Some(&[7u8; 20][..]));
    let bad = AcpiRoot::Copy { bytes: [7; 36], len: 99 };
    assert_eq!(bad.copied(), None);
    assert_eq!(Protocol::Pvh.to_string(), "PVH");
}

#[test]
fn messages_are_sentences() {
    let warnings = [
        BootWarning::StringTruncated { field: StrField::ModuleCmdline(3) },
        BootWarning::TooManyModules { found: 40, kept: 32 },
        BootWarning::MemoryMapSynthesised { lower_kib: 639, upper_kib: 1024 },
        BootWarning::MalformedTag { tag_type: 6, size: 9 },
    ];
    let texts: Vec<_> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(texts[0], "the command line of module 3 is longer than keel keeps and was truncated");
    assert_eq!(texts[1], "the boot loader passed 40 modules; only the first 32 are used");
    assert!(texts[2].contains("639 KiB"));
    assert!(texts[3].contains("type 6"));
    assert_eq!(BootError::BadMagic { found: 1 }.to_string(), "the PVH start info has magic 0x1 instead of 0x336ec578");
    assert_eq!(BootError::NoMemoryMap.to_string(), "the boot loader provided no memory map");
}

fn read_str<const N: usize>(mem: &FakeMem, addr: u64) -> (FixedStr<N>, Vec<BootWarning>) {
    let mut s = FixedStr::new();
    let mut w = Vec::new();
    read_c_string(mem, addr, StrField::Cmdline, &mut s, &mut |x| w.push(x));
    (s, w)
}

#[test]
fn c_string_ending_just_before_unreadable_memory() {
    // "hi\0" at the very end of a region: the chunked read fails, the
    // byte-wise fallback still finds the NUL.
    let mem = FakeMem::new().with(0x1000, b"hi\0");
    let (s, w) = read_str::<64>(&mem, 0x1000);
    assert_eq!(s, "hi");
    assert!(w.is_empty());
}

#[test]
fn c_string_spanning_two_regions() {
    let mem = FakeMem::new().with(0x1000, &[b'a'; 100]).with(0x1064, b"bc\0");
    let (s, w) = read_str::<1024>(&mem, 0x1000);
    assert_eq!(s.len(), 102);
    assert!(s.as_str().ends_with("abc"));
    assert!(w.is_empty());
}

#[test]
fn c_string_limits() {
    // Exactly N bytes then NUL: fits. N + 1 bytes: truncated after N.
    let mem = FakeMem::new().with(0x1000, b"abcd\0").with(0x2000, b"abcde\0");
    let (s, w) = read_str::<4>(&mem, 0x1000);
    assert_eq!((s.as_str(), s.is_truncated(), w.len()), ("abcd", false, 0));
    let (s, w) = read_str::<4>(&mem, 0x2000);
    assert_eq!((s.as_str(), s.is_truncated()), ("abcd", true));
    assert_eq!(w, [BootWarning::StringTruncated { field: StrField::Cmdline }]);
    // A string at the top of the address space cannot wrap around.
    let mem = FakeMem::new().with(u64::MAX - 1, b"xy");
    let (s, w) = read_str::<16>(&mem, u64::MAX - 1);
    assert_eq!(s, "xy");
    assert_eq!(w, [BootWarning::StringUnreadable { field: StrField::Cmdline, addr: u64::MAX }]);
}

/// A memory that counts the bytes it is asked for, to prove reads are
/// bounded.
struct Counting(core::cell::Cell<usize>);

impl PhysMemory for Counting {
    fn read(&self, _phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        self.0.set(self.0.get() + buf.len());
        buf.fill(b'z');
        Ok(())
    }
}

#[test]
fn c_string_reads_are_bounded() {
    let mem = Counting(core::cell::Cell::new(0));
    let mut s = FixedStr::<MAX_CMDLINE>::new();
    read_c_string(&mem, 0, StrField::Cmdline, &mut s, &mut |_| {});
    assert!(s.is_truncated());
    assert_eq!(mem.0.get(), MAX_CMDLINE + 1);
}

#[test]
fn content_hash_is_fnv1a_64() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(content_hash(b"foobar"), 0x8594_4171_f739_67e8);
}
