//! A test boot loader that hands keel hostile boot information.
//!
//! QEMU boots it as a PVH kernel with keel's ELF image as its module:
//! `qemu-system-x86_64 -kernel badloader -initrd keel -append "<keel options>"`. It loads keel's
//! segments at their physical addresses, then starts keel through its PVH entry with a start
//! info of its own making: QEMU's memory map plus entries that overlap, nest, wrap, have no
//! length or lie beyond the address width, and modules that are missing (outside RAM), empty
//! or fine. It prints what it injected and the RAM keel must end up with, so the test can
//! hold keel to it.
//!
//! Every injected entry is chosen so that a correct sanitiser ends with exactly QEMU's RAM
//! minus one 1 MiB hole: "badloader: expect <K> KiB usable RAM" states that figure.
#![no_std]
#![no_main]

use pvh_rt::println;
use xen_abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, MAGIC, MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED,
};

/// Where the new start info and everything it points to are built: low RAM, below keel's
/// image (2 MiB) and this loader (16 MiB), above the real-mode IVT/BDA.
const STAGE: u64 = 0x8_0000;
/// Where the "good" module's bytes are put.
const GOOD_MODULE_AT: u64 = 0x0300_0000;
/// Content of the good module.
const GOOD_MODULE: &[u8] = b"keel badloader test module\n";
/// A module address QEMU's pc machine never backs with RAM (its reserved HyperTransport hole).
const MISSING_MODULE_AT: u64 = 0xfd_0000_0000;

/// Read `len` bytes of physical memory (identity-mapped by pvh-rt).
///
/// # Safety
/// The range must be mapped memory that nothing else writes while the slice lives.
unsafe fn phys<'a>(addr: u64, len: usize) -> &'a [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn fail(why: &str) -> ! {
    println!("badloader: FAILED: {why}");
    loop {
        // SAFETY: halting is always allowed.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    let mut v = 0u64;
    for i in (0..n).rev() {
        v = (v << 8) | *b.get(off + i).unwrap_or_else(|| fail("ELF truncated")) as u64;
    }
    v
}

/// Load keel's PT_LOAD segments at their physical addresses; returns its PVH entry point.
fn load_elf(image: &[u8], avoid: &[(u64, u64)]) -> u32 {
    if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&2) {
        fail("module 0 is not a 64-bit ELF file");
    }
    let (phoff, phentsize, phnum) = (le(image, 32, 8) as usize, le(image, 54, 2) as usize, le(image, 56, 2) as usize);
    let mut entry = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (ty, off, paddr) = (le(image, ph, 4), le(image, ph + 8, 8) as usize, le(image, ph + 24, 8));
        let (filesz, memsz) = (le(image, ph + 32, 8) as usize, le(image, ph + 40, 8));
        match ty {
            1 => {
                let end = paddr + memsz;
                if avoid.iter().any(|&(s, e)| paddr < e && s < end) {
                    fail("a keel segment overlaps the loader, its module or its staging area");
                }
                let src = image.get(off..off + filesz).unwrap_or_else(|| fail("segment outside the file"));
                // SAFETY: [paddr, end) is RAM in QEMU's map that overlaps nothing in use
                // (checked above); it is identity-mapped.
                unsafe {
                    core::ptr::copy_nonoverlapping(src.as_ptr(), paddr as *mut u8, filesz);
                    core::ptr::write_bytes((paddr + filesz as u64) as *mut u8, 0, (memsz as usize) - filesz);
                }
            }
            4 => {
                let notes = image.get(off..off + filesz).unwrap_or_else(|| fail("note outside the file"));
                let mut n = 0;
                while n + 12 <= notes.len() {
                    let (namesz, descsz, nty) =
                        (le(notes, n, 4) as usize, le(notes, n + 4, 4) as usize, le(notes, n + 8, 4) as u32);
                    let name_at = n + 12;
                    let desc_at = name_at + namesz.next_multiple_of(4);
                    if notes.get(name_at..name_at + 4) == Some(b"Xen\0") && nty == xen_abi::elfnote::PHYS32_ENTRY {
                        entry = Some(le(notes, desc_at, descsz.min(8)) as u32);
                    }
                    n = desc_at + descsz.next_multiple_of(4);
                }
            }
            _ => {}
        }
    }
    entry.unwrap_or_else(|| fail("keel has no PVH entry note"))
}

/// Bump writer for the staging area.
struct Stage {
    next: u64,
}

impl Stage {
    fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.next.next_multiple_of(8);
        // SAFETY: the staging area [STAGE, STAGE + 64 KiB) is low RAM nobody else uses; checked
        // against its end below.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
        self.next = at + bytes.len() as u64;
        if self.next > STAGE + 0x1_0000 {
            fail("staging area overflow");
        }
        at
    }

    fn put_str(&mut self, s: &[u8]) -> u64 {
        let at = self.put(s);
        self.put(&[0]);
        at
    }
}

fn ram_kib(map: &[HvmMemmapTableEntry]) -> u64 {
    // Page-trimmed RAM, the way keel counts it (QEMU's map has no overlaps of its own).
    map.iter()
        .filter(|e| e.type_ == MEMMAP_TYPE_RAM)
        .map(|e| ((e.addr + e.size) & !0xfff).saturating_sub(e.addr.next_multiple_of(4096)) / 1024)
        .sum()
}

#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info: u64) -> ! {
    pvh_rt::serial::init();
    // SAFETY: QEMU's PVH loader put a start info at `start_info` (identity-mapped).
    let si: HvmStartInfo = unsafe { core::ptr::read_unaligned(start_info as *const HvmStartInfo) };
    if si.magic != MAGIC || si.version < 1 || si.nr_modules < 1 {
        fail("QEMU's start info lacks a memory map or the keel module");
    }
    // SAFETY: the module list and memory map QEMU wrote (counts from the same structure).
    let (module, fw_map) = unsafe {
        (
            core::ptr::read_unaligned(si.modlist_paddr as *const HvmModlistEntry),
            core::slice::from_raw_parts(si.memmap_paddr as *const HvmMemmapTableEntry, si.memmap_entries as usize),
        )
    };
    // SAFETY: the keel image QEMU loaded as the module.
    let image = unsafe { phys(module.paddr, module.size as usize) };
    let me = pvh_rt::image_range();
    let avoid = [
        me,
        (module.paddr, module.paddr + module.size),
        (STAGE, STAGE + 0x1_0000),
        (GOOD_MODULE_AT, GOOD_MODULE_AT + 4096),
    ];
    let entry = load_elf(image, &avoid);

    let largest = fw_map
        .iter()
        .filter(|e| e.type_ == MEMMAP_TYPE_RAM)
        .max_by_key(|e| e.size)
        .copied()
        .unwrap_or_else(|| fail("no RAM in QEMU's map"));
    // Non-RAM regions of QEMU's map big enough to hide injected RAM in.
    let reserved_after_largest = fw_map
        .iter()
        .any(|e| e.addr == largest.addr + largest.size && e.type_ != MEMMAP_TYPE_RAM && e.size >= 0x1_0000);
    let reservation = fw_map
        .iter()
        .find(|e| e.type_ != MEMMAP_TYPE_RAM && e.size >= 0x1_0000)
        .copied()
        .unwrap_or_else(|| fail("QEMU's map has no reservation of 64 KiB or more"));
    let hole = largest.addr + 0x0100_0000; // 1 MiB reserved, 16 MiB into the largest RAM region
    let entry_of = |addr: u64, size: u64, type_: u32| HvmMemmapTableEntry { addr, size, type_, reserved: 0 };
    let mut map = [HvmMemmapTableEntry::default(); 64];
    let mut n = 0;
    for e in fw_map.iter().take(48) {
        map[n] = *e;
        n += 1;
    }
    let injected = [
        // An identical duplicate of the largest RAM region.
        largest,
        // A reserved hole inside it (the only change keel's RAM may show).
        entry_of(hole, 0x10_0000, MEMMAP_TYPE_RESERVED),
        // RAM nested inside one of QEMU's reservations: the reservation must win.
        entry_of(reservation.addr + 0x4000, 0x8000, MEMMAP_TYPE_RAM),
        // No length.
        entry_of(0x500_0000, 0, MEMMAP_TYPE_RAM),
        // Wraps around the end of the address space.
        entry_of(0xffff_ffff_ffff_f000, 0x2000, MEMMAP_TYPE_RAM),
        // Beyond any physical address width.
        entry_of(0x4000_0000_0000_0000, 0x10_0000, MEMMAP_TYPE_RAM),
        // RAM reaching 64 KiB into the reservation after the largest region (overlap at its end).
        if reserved_after_largest {
            entry_of(largest.addr + largest.size - 0x10_0000, 0x11_0000, MEMMAP_TYPE_RAM)
        } else {
            largest
        },
    ];
    for e in injected {
        map[n] = e;
        n += 1;
    }
    // The firmware's own order is kept, with the bad entries in the middle of it.
    map[..n].rotate_right(injected.len() / 2);
    let map = &map[..n];

    // SAFETY: GOOD_MODULE_AT is RAM the loader reserved (see `avoid`), identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(GOOD_MODULE.as_ptr(), GOOD_MODULE_AT as *mut u8, GOOD_MODULE.len()) };

    let mut stage = Stage { next: STAGE + core::mem::size_of::<HvmStartInfo>() as u64 };
    // SAFETY: QEMU's command line, NUL-terminated (bounded at 4 KiB).
    let qemu_cmdline = unsafe { phys(si.cmdline_paddr, 4096) };
    let len = qemu_cmdline.iter().position(|&b| b == 0).unwrap_or(0);
    let cmdline = stage.put_str(&qemu_cmdline[..len]);
    let name_missing = stage.put_str(b"missing-module");
    let name_empty = stage.put_str(b"empty-module");
    let name_good = stage.put_str(b"good-module args");
    let modules = [
        HvmModlistEntry { paddr: MISSING_MODULE_AT, size: 4096, cmdline_paddr: name_missing, reserved: 0 },
        HvmModlistEntry { paddr: GOOD_MODULE_AT + 0x1000, size: 0, cmdline_paddr: name_empty, reserved: 0 },
        HvmModlistEntry {
            paddr: GOOD_MODULE_AT,
            size: GOOD_MODULE.len() as u64,
            cmdline_paddr: name_good,
            reserved: 0,
        },
    ];
    let modlist = stage.put(zerocopy::IntoBytes::as_bytes(&modules[..]));
    let memmap = stage.put(zerocopy::IntoBytes::as_bytes(map));
    let new = HvmStartInfo {
        magic: MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: modlist,
        cmdline_paddr: cmdline,
        rsdp_paddr: si.rsdp_paddr,
        memmap_paddr: memmap,
        memmap_entries: map.len() as u32,
        reserved: 0,
    };
    // SAFETY: the start of the staging area was kept free for the start info.
    unsafe { core::ptr::write_unaligned(STAGE as *mut HvmStartInfo, new) };

    println!("badloader: QEMU's map has {} entries, {} KiB RAM", fw_map.len(), ram_kib(fw_map));
    println!("badloader: injected {} bad entries and 3 modules (missing, empty, good)", injected.len());
    println!("badloader: expect {} KiB usable RAM", ram_kib(fw_map) - 1024);
    println!("badloader: starting keel at {entry:#x}");
    // SAFETY: keel is loaded and `STAGE` holds its start info.
    unsafe { pvh_rt::exit_to_pvh32(entry, STAGE as u32) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("badloader: panic: {}", info.message());
    fail("panic")
}
