//! Multiboot (version 1) information, as QEMU's `-kernel` and GRUB's
//! `multiboot` command pass it (magic 0x2BADB002 in EAX, info pointer in EBX).
//!
//! Layout facts from the Multiboot 0.6.96 specification: a `flags` word says
//! which fields are valid; bit 0 `mem_lower`/`mem_upper` (offsets 4, 8),
//! bit 2 `cmdline` (16), bit 3 `mods_count`/`mods_addr` (20, 24; 16-byte
//! entries `mod_start, mod_end, string, reserved`), bit 6
//! `mmap_length`/`mmap_addr` (44, 48; entries `{u32 size; u64 base; u64 len;
//! u32 type}` where `size` excludes itself), bit 9 `boot_loader_name` (64).

use super::{
    le_u32, le_u64, read_array, read_c_string, BootError, BootInfo, BootWarning, MemEntry, PhysMemory, Protocol,
    StrField, MAX_MODULES,
};

const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
const FLAG_LOADER_NAME: u32 = 1 << 9;

/// Bytes of the info structure keel reads: up to `boot_loader_name`.
const INFO_LEN: usize = 68;
/// Size of one module entry.
const MODULE_LEN: u64 = 16;
/// Smallest valid `size` of a memory-map entry (base, len, type).
const MMAP_ENTRY_MIN: u64 = 20;

/// Copies the multiboot1 information at physical address `info` into `out`.
///
/// On error `out` holds partial data and must not be used.
pub fn parse_multiboot1(
    info: u32,
    mem: &dyn PhysMemory,
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) -> Result<(), BootError> {
    out.reset(Protocol::Multiboot1);
    let base = u64::from(info);
    if base == 0 {
        return Err(BootError::NullPointer);
    }
    let raw: [u8; INFO_LEN] = read_array(mem, base).ok_or(BootError::Unreadable { addr: base, len: INFO_LEN })?;
    let flags = le_u32(&raw, 0);
    let field = |off| u64::from(le_u32(&raw, off));

    if flags & FLAG_LOADER_NAME != 0 && field(64) != 0 {
        read_c_string(mem, field(64), StrField::LoaderName, &mut out.loader_name, warn);
    }
    if flags & FLAG_CMDLINE != 0 && field(16) != 0 {
        read_c_string(mem, field(16), StrField::Cmdline, &mut out.cmdline, warn);
    }
    if flags & FLAG_MODS != 0 {
        read_modules(mem, le_u32(&raw, 20), field(24), out, warn);
    }
    if flags & FLAG_MMAP != 0 {
        read_memory_map(mem, field(48), field(44), out, warn);
    }
    if out.memory_entries == 0 && flags & FLAG_MEM != 0 {
        out.synthesise_memory_map(le_u32(&raw, 4), le_u32(&raw, 8), warn);
    }
    if out.memory_entries == 0 {
        return Err(BootError::NoMemoryMap);
    }
    Ok(())
}

fn read_modules(mem: &dyn PhysMemory, count: u32, list: u64, out: &mut BootInfo, warn: &mut dyn FnMut(BootWarning)) {
    if count as usize > MAX_MODULES {
        warn(BootWarning::TooManyModules { found: u64::from(count), kept: MAX_MODULES });
    }
    let kept = (count as usize).min(MAX_MODULES);
    for index in 0..kept {
        // `list` < 2^32 and index < MAX_MODULES: no overflow.
        let addr = list + index as u64 * MODULE_LEN;
        let Some(entry) = (list != 0).then(|| read_array::<16>(mem, addr)).flatten() else {
            warn(BootWarning::ModuleListUnreadable { addr, index });
            return;
        };
        let start = u64::from(le_u32(&entry, 0));
        let end = u64::from(le_u32(&entry, 4));
        let string = u64::from(le_u32(&entry, 8));
        if let Some(module) = out.push_module(index, start, Some(end), warn) {
            if string != 0 {
                let field = StrField::ModuleCmdline(index);
                read_c_string(mem, string, field, &mut module.cmdline, warn);
            }
        }
    }
}

fn read_memory_map(
    mem: &dyn PhysMemory,
    addr: u64,
    length: u64,
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) {
    // Each pass either stops or stores one entry, so this runs at most
    // MAX_MEM_ENTRIES + 1 times whatever `length` says.
    let mut off = 0u64;
    while off < length {
        // `addr` and `length` are below 2^32, so `off` stays below 2^33 + 2^32.
        let at = addr + off;
        let Some(raw) = read_array::<24>(mem, at) else {
            warn(BootWarning::MemoryMapUnreadable { addr: at });
            return;
        };
        let size = u64::from(le_u32(&raw, 0));
        if size < MMAP_ENTRY_MIN {
            warn(BootWarning::MemoryMapMalformed { why: "an entry is smaller than 20 bytes" });
            return;
        }
        if off + 4 + size > length {
            warn(BootWarning::MemoryMapMalformed { why: "the last entry runs past the map's length" });
            return;
        }
        let entry = MemEntry { base: le_u64(&raw, 4), len: le_u64(&raw, 12), kind: le_u32(&raw, 20) };
        if !out.push_memory(entry) {
            warn(BootWarning::MemoryMapTruncated { kept: out.memory_entries });
            return;
        }
        off += 4 + size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::testmem::FakeMem;
    use crate::bootinfo::{Module, MAX_MEM_ENTRIES};
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    const INFO: u64 = 0x9000;
    const STRINGS: u64 = 0xa000;
    const MODS: u64 = 0xb000;
    const MMAP: u64 = 0xc000;

    fn run(info: u32, mem: &FakeMem) -> (Result<(), BootError>, Box<BootInfo>, Vec<BootWarning>) {
        let mut out = Box::new(BootInfo::empty());
        let mut warnings = Vec::new();
        let r = parse_multiboot1(info, mem, &mut out, &mut |w| warnings.push(w));
        (r, out, warnings)
    }

    /// QEMU-like info: name, cmdline, two modules, a three-entry map.
    fn qemu_like() -> FakeMem {
        let mut m = FakeMem::new().region(INFO, 0x100).region(STRINGS, 0x1000).region(MODS, 0x100).region(MMAP, 0x1000);
        m.write_u32(INFO, FLAG_MEM | FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP | FLAG_LOADER_NAME);
        m.write_u32(INFO + 4, 639);
        m.write_u32(INFO + 8, 130_048);
        m.write_cstr(STRINGS, "/keel loglvl=all");
        m.write_u32(INFO + 16, STRINGS as u32);
        m.write_cstr(STRINGS + 0x100, "qemu");
        m.write_u32(INFO + 64, (STRINGS + 0x100) as u32);
        m.write_u32(INFO + 20, 2);
        m.write_u32(INFO + 24, MODS as u32);
        m.write_u32(MODS, 0x100_0000);
        m.write_u32(MODS + 4, 0x180_0000);
        m.write_cstr(STRINGS + 0x200, "vmlinuz console=hvc0");
        m.write_u32(MODS + 8, (STRINGS + 0x200) as u32);
        m.write_u32(MODS + 16, 0x200_0000);
        m.write_u32(MODS + 20, 0x210_0000);
        m.write_u32(MODS + 24, 0);
        let map = [(0u64, 0x9fc00u64, 1u32), (0xf0000, 0x10000, 2), (0x10_0000, 0x7ee0_0000, 1)];
        for (i, (base, len, kind)) in map.iter().enumerate() {
            let e = MMAP + i as u64 * 24;
            m.write_u32(e, 20);
            m.write_u64(e + 4, *base);
            m.write_u64(e + 12, *len);
            m.write_u32(e + 20, *kind);
        }
        m.write_u32(INFO + 44, 72);
        m.write_u32(INFO + 48, MMAP as u32);
        m
    }

    #[test]
    fn qemu_like_info_is_copied() {
        let (r, out, w) = run(INFO as u32, &qemu_like());
        assert_eq!(r, Ok(()));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(out.protocol, Protocol::Multiboot1);
        assert_eq!(out.loader_name, "qemu");
        assert_eq!(out.cmdline, "/keel loglvl=all");
        assert_eq!(out.options_cmdline(), "loglvl=all");
        assert_eq!(out.modules().len(), 2);
        assert_eq!((out.modules[0].start, out.modules[0].end), (0x100_0000, 0x180_0000));
        assert_eq!(out.modules[0].cmdline, "vmlinuz console=hvc0");
        assert_eq!(out.modules[0].len(), 0x80_0000);
        assert_eq!(out.modules[1].cmdline, "");
        assert_eq!(out.memory_map().len(), 3);
        assert_eq!(out.memory_map()[2], MemEntry { base: 0x10_0000, len: 0x7ee0_0000, kind: MemEntry::RAM });
        assert_eq!(out.acpi_root(), None);
    }

    #[test]
    fn reused_bootinfo_is_reset() {
        let mut out = Box::new(BootInfo::empty());
        parse_multiboot1(INFO as u32, &qemu_like(), &mut out, &mut |_| {}).unwrap();
        let mut m = qemu_like();
        m.write_u32(INFO, FLAG_MEM);
        parse_multiboot1(INFO as u32, &m, &mut out, &mut |_| {}).unwrap();
        assert_eq!(out.cmdline, "");
        assert_eq!(out.loader_name, "");
        assert!(out.modules().is_empty());
        assert_eq!(out.modules[0], Module::EMPTY);
        assert_eq!(out.memory_map().len(), 2);
    }

    #[test]
    fn fatal_errors() {
        assert_eq!(run(0, &qemu_like()).0, Err(BootError::NullPointer));
        assert_eq!(run(0x5000, &qemu_like()).0, Err(BootError::Unreadable { addr: 0x5000, len: INFO_LEN }));
        // Info ends 8 bytes too early.
        let m = FakeMem::new().region(INFO, INFO_LEN - 8);
        assert!(matches!(run(INFO as u32, &m).0, Err(BootError::Unreadable { .. })));
        // Neither a map nor mem_lower/upper.
        let mut m = qemu_like();
        m.write_u32(INFO, FLAG_CMDLINE);
        assert_eq!(run(INFO as u32, &m).0, Err(BootError::NoMemoryMap));
    }

    #[test]
    fn missing_map_is_synthesised_from_mem_fields() {
        let mut m = qemu_like();
        m.write_u32(INFO, FLAG_MEM);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::MemoryMapSynthesised { lower_kib: 639, upper_kib: 130_048 }]);
        assert_eq!(
            out.memory_map(),
            [
                MemEntry { base: 0, len: 639 * 1024, kind: MemEntry::RAM },
                MemEntry { base: 0x10_0000, len: 130_048 * 1024, kind: MemEntry::RAM },
            ]
        );
    }

    #[test]
    fn unreadable_map_falls_back_to_mem_fields() {
        let mut m = qemu_like();
        m.write_u32(INFO + 48, 0x7_0000);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w[0], BootWarning::MemoryMapUnreadable { addr: 0x7_0000 });
        assert!(matches!(w[1], BootWarning::MemoryMapSynthesised { .. }));
        assert_eq!(out.memory_map().len(), 2);
    }

    #[test]
    fn malformed_map_entries() {
        // Entry size below 20.
        let mut m = qemu_like();
        m.write_u32(MMAP + 24, 16);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(out.memory_map().len(), 1);
        assert!(matches!(w[..], [BootWarning::MemoryMapMalformed { .. }]));
        // Length cuts the last entry in half.
        let mut m = qemu_like();
        m.write_u32(INFO + 44, 60);
        let (_, out, w) = run(INFO as u32, &m);
        assert_eq!(out.memory_map().len(), 2);
        assert!(matches!(w[..], [BootWarning::MemoryMapMalformed { .. }]));
        // A larger entry size (future fields) is skipped over correctly.
        let mut m = qemu_like();
        for i in 0..3u64 {
            let e = MMAP + i * 32;
            m.write_u32(e, 28);
            m.write_u64(e + 4, i << 20);
            m.write_u64(e + 12, 0x1000);
            m.write_u32(e + 20, 1);
        }
        m.write_u32(INFO + 44, 96);
        let (_, out, w) = run(INFO as u32, &m);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(out.memory_map()[2].base, 2 << 20);
    }

    #[test]
    fn huge_map_is_truncated_not_walked() {
        let mut m = FakeMem::new().region(INFO, 0x100).region(MMAP, 200 * 24);
        m.write_u32(INFO, FLAG_MMAP);
        m.write_u32(INFO + 44, u32::MAX);
        m.write_u32(INFO + 48, MMAP as u32);
        for i in 0..200u64 {
            m.write_u32(MMAP + i * 24, 20);
            m.write_u64(MMAP + i * 24 + 4, i << 12);
            m.write_u64(MMAP + i * 24 + 12, 0x1000);
            m.write_u32(MMAP + i * 24 + 20, 1);
        }
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(out.memory_map().len(), MAX_MEM_ENTRIES);
        assert_eq!(w, [BootWarning::MemoryMapTruncated { kept: MAX_MEM_ENTRIES }]);
    }

    #[test]
    fn module_problems() {
        let mut m = qemu_like();
        // Module 0 ends before it starts; module 1 is empty.
        m.write_u32(MODS + 4, 0x80_0000);
        m.write_u32(MODS + 20, 0x200_0000);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(
            w,
            [
                BootWarning::ModuleEndBeforeStart { index: 0, start: 0x100_0000, end: 0x80_0000 },
                BootWarning::ModuleEmpty { index: 1, start: 0x200_0000 },
            ]
        );
        // Positions are kept: both are there, empty.
        assert_eq!(out.modules().len(), 2);
        assert!(out.modules().iter().all(Module::is_empty));
        assert_eq!(out.modules[0].cmdline, "vmlinuz console=hvc0");
    }

    #[test]
    fn absurd_module_count_keeps_the_first_modules() {
        let mut m = qemu_like();
        m.write_u32(INFO + 20, u32::MAX);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w[0], BootWarning::TooManyModules { found: u64::from(u32::MAX), kept: MAX_MODULES });
        // The list region holds 16 entries; entries 2.. are zero (empty).
        assert_eq!(*w.last().unwrap(), BootWarning::ModuleListUnreadable { addr: MODS + 16 * 16, index: 16 });
        assert_eq!(out.modules().len(), 16);
    }

    #[test]
    fn module_list_at_null_or_unreadable() {
        let mut m = qemu_like();
        m.write_u32(INFO + 24, 0);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::ModuleListUnreadable { addr: 0, index: 0 }]);
        assert!(out.modules().is_empty());
    }

    #[test]
    fn strings_bad_pointers_garbage_and_length() {
        let mut m = qemu_like();
        // Cmdline points into unreadable memory; loader name is not UTF-8;
        // module 0's string runs to the end of its region without a NUL.
        m.write_u32(INFO + 16, 0x6_0000);
        m.write(STRINGS + 0x100, b"gr\xffb\0");
        // (The map region is the last one; nothing follows it.)
        m.write_u32(MODS + 8, (MMAP + 0xff0) as u32);
        m.write(MMAP + 0xff0, &[b'x'; 16]);
        let (r, out, w) = run(INFO as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(out.cmdline, "");
        assert_eq!(out.loader_name, "gr\u{fffd}b");
        assert_eq!(out.modules[0].cmdline, "xxxxxxxxxxxxxxxx");
        assert_eq!(
            w,
            [
                BootWarning::StringInvalidUtf8 { field: StrField::LoaderName },
                BootWarning::StringUnreadable { field: StrField::Cmdline, addr: 0x6_0000 },
                BootWarning::StringUnreadable { field: StrField::ModuleCmdline(0), addr: MMAP + 0x1000 },
            ]
        );
    }

    #[test]
    fn long_strings_are_truncated_and_read_boundedly() {
        let mut m = qemu_like();
        m.write(STRINGS + 0x300, &[b'a'; 0xd00]);
        m.write_u32(INFO + 16, (STRINGS + 0x300) as u32);
        let (_, out, w) = run(INFO as u32, &m);
        assert_eq!(out.cmdline.len(), crate::bootinfo::MAX_CMDLINE);
        assert!(out.cmdline.is_truncated());
        assert_eq!(w, [BootWarning::StringTruncated { field: StrField::Cmdline }]);
        // Exactly MAX_CMDLINE bytes followed by NUL is not truncated.
        m.write(STRINGS + 0x300 + crate::bootinfo::MAX_CMDLINE as u64, &[0]);
        let (_, out, w) = run(INFO as u32, &m);
        assert!(!out.cmdline.is_truncated());
        assert!(w.is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            info in prop::collection::vec(any::<u8>(), INFO_LEN),
            low in prop::collection::vec(any::<u8>(), 0..512),
            flags: u32,
        ) {
            // Random info struct, and a random blob at the low addresses the
            // random pointers most often hit when masked small.
            let mut m = FakeMem::new().with(INFO, &info).with(0, &low);
            m.write_u32(INFO, flags);
            let (r, out, w) = run(INFO as u32, &m);
            prop_assert!(out.memory_map().len() <= MAX_MEM_ENTRIES);
            prop_assert!(out.modules().len() <= MAX_MODULES);
            if r.is_ok() {
                prop_assert!(!out.memory_map().is_empty());
            }
            for warning in &w {
                let text = std::string::ToString::to_string(&warning);
                prop_assert!(!text.is_empty());
            }
        }

        #[test]
        fn random_pointers_into_random_memory_never_panic(
            blob in prop::collection::vec(any::<u8>(), 0..2048),
            ptrs in prop::collection::vec(0u32..2048, 5),
            counts in prop::collection::vec(any::<u32>(), 2),
        ) {
            let mut m = FakeMem::new().region(INFO, INFO_LEN).with(0x1000, &blob);
            m.write_u32(INFO, 0xffff_ffff);
            m.write_u32(INFO + 16, 0x1000 + ptrs[0]);
            m.write_u32(INFO + 20, counts[0]);
            m.write_u32(INFO + 24, 0x1000 + ptrs[1]);
            m.write_u32(INFO + 44, counts[1]);
            m.write_u32(INFO + 48, 0x1000 + ptrs[2]);
            m.write_u32(INFO + 64, 0x1000 + ptrs[3]);
            m.write_u32(INFO + 4, ptrs[4]);
            let (_, out, _) = run(INFO as u32, &m);
            for module in out.modules() {
                prop_assert!(module.start <= module.end);
            }
        }
    }
}
