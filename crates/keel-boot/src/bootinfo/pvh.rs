//! Xen's PVH start of day: `struct hvm_start_info`, pointed to by EBX.
//!
//! Layout (all little-endian; see docs/xen-abi.md §1.3): magic 0x336ec578 at
//! 0, version 4, flags 8, nr_modules 12, modlist_paddr 16, cmdline_paddr 24,
//! rsdp_paddr 32; version 1 adds memmap_paddr 40 and memmap_entries 48, for
//! 56 bytes. Module entries are 32 bytes (paddr, size, cmdline_paddr,
//! reserved), memory-map entries 24 bytes (addr, size, type, reserved).
//! A 0 address means "not present". Xen guarantees newer versions are
//! backwards compatible, so they are read as version 1.

use super::{
    le_u32, le_u64, read_array, read_c_string, AcpiRoot, BootError, BootInfo, BootWarning, MemEntry, PhysMemory,
    Protocol, StrField, MAX_MEM_ENTRIES, MAX_MODULES,
};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub(crate) const START_MAGIC: u32 = 0x336e_c578;
/// Size of the version 0 structure.
const V0_LEN: usize = 40;
/// Size of the version 1 additions (memmap_paddr, memmap_entries, reserved).
const V1_EXTRA_LEN: usize = 16;
const MODLIST_ENTRY: u64 = 32;
const MEMMAP_ENTRY: u64 = 24;

/// Copies the PVH start info at physical address `start_info` into `out`.
///
/// PVH has no fallback memory information, so version 0 or a version 1
/// structure without a memory map is [`BootError::NoMemoryMap`]. On error
/// `out` holds partial data and must not be used.
pub fn parse_pvh(
    start_info: u32,
    mem: &dyn PhysMemory,
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) -> Result<(), BootError> {
    out.reset(Protocol::Pvh);
    out.loader_name.push_str("PVH start info");
    let base = u64::from(start_info);
    if base == 0 {
        return Err(BootError::NullPointer);
    }
    let v0: [u8; V0_LEN] = read_array(mem, base).ok_or(BootError::Unreadable { addr: base, len: V0_LEN })?;
    let magic = le_u32(&v0, 0);
    if magic != START_MAGIC {
        return Err(BootError::BadMagic { found: magic });
    }
    let version = le_u32(&v0, 4);
    if version == 0 {
        return Err(BootError::NoMemoryMap);
    }
    // `base` < 2^32, so this cannot overflow.
    let extra_at = base + V0_LEN as u64;
    let v1: [u8; V1_EXTRA_LEN] =
        read_array(mem, extra_at).ok_or(BootError::Unreadable { addr: extra_at, len: V1_EXTRA_LEN })?;
    if version > 1 {
        warn(BootWarning::PvhVersionNewer { version });
    }
    let memmap = le_u64(&v1, 0);
    let memmap_entries = le_u32(&v1, 8);
    if memmap == 0 || memmap_entries == 0 {
        return Err(BootError::NoMemoryMap);
    }

    let cmdline = le_u64(&v0, 24);
    if cmdline != 0 {
        read_c_string(mem, cmdline, StrField::Cmdline, &mut out.cmdline, warn);
    }
    read_modules(mem, le_u32(&v0, 12), le_u64(&v0, 16), out, warn);
    let rsdp = le_u64(&v0, 32);
    if rsdp != 0 {
        out.set_acpi_root(AcpiRoot::Address(rsdp));
    }
    read_memory_map(mem, memmap, memmap_entries, out, warn);
    if out.memory_entries == 0 {
        return Err(BootError::NoMemoryMap);
    }
    Ok(())
}

/// Address of entry `index` of a table at `base`, if it does not wrap.
fn entry_addr(base: u64, index: usize, entry_len: u64) -> Option<u64> {
    base.checked_add(u64::try_from(index).ok()?.checked_mul(entry_len)?)
}

fn read_modules(mem: &dyn PhysMemory, count: u32, list: u64, out: &mut BootInfo, warn: &mut dyn FnMut(BootWarning)) {
    if count as usize > MAX_MODULES {
        warn(BootWarning::TooManyModules { found: u64::from(count), kept: MAX_MODULES });
    }
    for index in 0..(count as usize).min(MAX_MODULES) {
        let addr = entry_addr(list, index, MODLIST_ENTRY);
        let entry = addr.filter(|_| list != 0).and_then(|a| read_array::<32>(mem, a));
        let Some(entry) = entry else {
            let addr = addr.unwrap_or(u64::MAX);
            warn(BootWarning::ModuleListUnreadable { addr, index });
            return;
        };
        let start = le_u64(&entry, 0);
        let size = le_u64(&entry, 8);
        let cmdline = le_u64(&entry, 16);
        let end = start.checked_add(size);
        if end.is_none() {
            warn(BootWarning::ModuleSizeOverflow { index, start, size });
        }
        if let Some(module) = out.push_module(index, start, end, warn) {
            if cmdline != 0 {
                let field = StrField::ModuleCmdline(index);
                read_c_string(mem, cmdline, field, &mut module.cmdline, warn);
            }
        }
    }
}

fn read_memory_map(
    mem: &dyn PhysMemory,
    table: u64,
    entries: u32,
    out: &mut BootInfo,
    warn: &mut dyn FnMut(BootWarning),
) {
    for index in 0..(entries as usize).min(MAX_MEM_ENTRIES) {
        let addr = entry_addr(table, index, MEMMAP_ENTRY);
        let Some(raw) = addr.and_then(|a| read_array::<24>(mem, a)) else {
            warn(BootWarning::MemoryMapUnreadable { addr: addr.unwrap_or(u64::MAX) });
            return;
        };
        out.push_memory(MemEntry { base: le_u64(&raw, 0), len: le_u64(&raw, 8), kind: le_u32(&raw, 16) });
    }
    if entries as usize > MAX_MEM_ENTRIES {
        warn(BootWarning::MemoryMapTruncated { kept: out.memory_entries });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::testmem::FakeMem;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    const START: u64 = 0x6000;
    const MODLIST: u64 = 0x7000;
    const MEMMAP: u64 = 0x8000;
    const STRINGS: u64 = 0x9000;

    fn run(start: u32, mem: &FakeMem) -> (Result<(), BootError>, Box<BootInfo>, Vec<BootWarning>) {
        let mut out = Box::new(BootInfo::empty());
        let mut warnings = Vec::new();
        let r = parse_pvh(start, mem, &mut out, &mut |w| warnings.push(w));
        (r, out, warnings)
    }

    /// A QEMU/Xen-like version 1 start info: cmdline, kernel + initrd, RSDP,
    /// a three-entry map.
    fn good() -> FakeMem {
        let mut m =
            FakeMem::new().region(START, 56).region(MODLIST, 0x100).region(MEMMAP, 0x1000).region(STRINGS, 0x1000);
        m.write_u32(START, START_MAGIC);
        m.write_u32(START + 4, 1);
        m.write_u32(START + 8, 0x3);
        m.write_u32(START + 12, 2);
        m.write_u64(START + 16, MODLIST);
        m.write_cstr(STRINGS, "maxcpus=2 loglvl=debug");
        m.write_u64(START + 24, STRINGS);
        m.write_u64(START + 32, 0xf_5a40);
        m.write_u64(START + 40, MEMMAP);
        m.write_u32(START + 48, 3);
        m.write_u64(MODLIST, 0x100_0000);
        m.write_u64(MODLIST + 8, 0x80_0000);
        m.write_cstr(STRINGS + 0x100, "vmlinuz console=hvc0");
        m.write_u64(MODLIST + 16, STRINGS + 0x100);
        m.write_u64(MODLIST + 32, 0x200_0000);
        m.write_u64(MODLIST + 40, 0x10_0000);
        let map = [(0u64, 0xa0000u64, 1u32), (0xf0000, 0x10000, 2), (0x10_0000, 0x3ff0_0000, 1)];
        for (i, (addr, size, kind)) in map.iter().enumerate() {
            let e = MEMMAP + i as u64 * 24;
            m.write_u64(e, *addr);
            m.write_u64(e + 8, *size);
            m.write_u32(e + 16, *kind);
        }
        m
    }

    #[test]
    fn good_start_info_is_copied() {
        let (r, out, w) = run(START as u32, &good());
        assert_eq!(r, Ok(()));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(out.protocol, Protocol::Pvh);
        assert_eq!(out.cmdline, "maxcpus=2 loglvl=debug");
        // PVH passes options only.
        assert_eq!(out.options_cmdline(), "maxcpus=2 loglvl=debug");
        assert_eq!(out.modules().len(), 2);
        assert_eq!((out.modules[0].start, out.modules[0].end), (0x100_0000, 0x180_0000));
        assert_eq!(out.modules[0].cmdline, "vmlinuz console=hvc0");
        assert_eq!(out.modules[1].cmdline, "");
        assert_eq!(out.acpi_root(), Some(AcpiRoot::Address(0xf_5a40)));
        assert_eq!(out.memory_map().len(), 3);
        assert_eq!(out.memory_map()[1].kind, MemEntry::RESERVED);
    }

    #[test]
    fn fatal_errors() {
        assert_eq!(run(0, &good()).0, Err(BootError::NullPointer));
        assert_eq!(run(0x1000, &good()).0, Err(BootError::Unreadable { addr: 0x1000, len: V0_LEN }));
        let mut m = good();
        m.write_u32(START, 0xdead_beef);
        assert_eq!(run(START as u32, &m).0, Err(BootError::BadMagic { found: 0xdead_beef }));
        let mut m = good();
        m.write_u32(START + 4, 0);
        assert_eq!(run(START as u32, &m).0, Err(BootError::NoMemoryMap));
        let mut m = good();
        m.write_u32(START + 48, 0);
        assert_eq!(run(START as u32, &m).0, Err(BootError::NoMemoryMap));
        let mut m = good();
        m.write_u64(START + 40, 0);
        assert_eq!(run(START as u32, &m).0, Err(BootError::NoMemoryMap));
        // A version 1 structure cut short after its version 0 part.
        let mut m = FakeMem::new().region(START, V0_LEN);
        m.write_u32(START, START_MAGIC);
        m.write_u32(START + 4, 1);
        assert_eq!(run(START as u32, &m).0, Err(BootError::Unreadable { addr: START + 40, len: 16 }));
        // The memory map table is unreadable.
        let mut m = good();
        m.write_u64(START + 40, 0x5_0000);
        let (r, _, w) = run(START as u32, &m);
        assert_eq!(r, Err(BootError::NoMemoryMap));
        assert_eq!(w, [BootWarning::MemoryMapUnreadable { addr: 0x5_0000 }]);
    }

    #[test]
    fn newer_version_is_read_as_v1() {
        let mut m = good();
        m.write_u32(START + 4, 2);
        let (r, out, w) = run(START as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::PvhVersionNewer { version: 2 }]);
        assert_eq!(out.memory_map().len(), 3);
    }

    #[test]
    fn absurd_counts_are_bounded() {
        let mut m = good();
        m.write_u32(START + 12, u32::MAX);
        m.write_u32(START + 48, u32::MAX);
        let (r, out, w) = run(START as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w[0], BootWarning::TooManyModules { found: u64::from(u32::MAX), kept: MAX_MODULES });
        // The modlist region holds 8 entries; the map region 170.
        assert!(w.contains(&BootWarning::ModuleListUnreadable { addr: MODLIST + 8 * 32, index: 8 }));
        assert_eq!(out.modules().len(), 8);
        assert_eq!(out.memory_map().len(), MAX_MEM_ENTRIES);
        assert_eq!(*w.last().unwrap(), BootWarning::MemoryMapTruncated { kept: MAX_MEM_ENTRIES });
    }

    #[test]
    fn module_problems() {
        let mut m = good();
        m.write_u64(MODLIST + 8, u64::MAX);
        m.write_u64(MODLIST + 40, 0);
        let (r, out, w) = run(START as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(
            w,
            [
                BootWarning::ModuleSizeOverflow { index: 0, start: 0x100_0000, size: u64::MAX },
                BootWarning::ModuleEmpty { index: 1, start: 0x200_0000 },
            ]
        );
        assert!(out.modules().iter().all(|m| m.is_empty()));
        // Modules but no list.
        let mut m = good();
        m.write_u64(START + 16, 0);
        let (r, out, w) = run(START as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(w, [BootWarning::ModuleListUnreadable { addr: 0, index: 0 }]);
        assert!(out.modules().is_empty());
    }

    #[test]
    fn strings_in_bad_places() {
        let mut m = good();
        m.write_u64(START + 24, 0xffff_ffff_ffff_fff0);
        m.write_u64(MODLIST + 16, STRINGS + 0xffe);
        m.write(STRINGS + 0xffe, b"ab");
        let (r, out, w) = run(START as u32, &m);
        assert_eq!(r, Ok(()));
        assert_eq!(out.cmdline, "");
        assert_eq!(out.modules[0].cmdline, "ab");
        assert_eq!(
            w,
            [
                BootWarning::StringUnreadable { field: StrField::Cmdline, addr: 0xffff_ffff_ffff_fff0 },
                BootWarning::StringUnreadable { field: StrField::ModuleCmdline(0), addr: STRINGS + 0x1000 },
            ]
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            mut start in prop::collection::vec(any::<u8>(), 56),
            blob in prop::collection::vec(any::<u8>(), 0..1024),
            magic: bool,
        ) {
            if magic {
                start[..4].copy_from_slice(&START_MAGIC.to_le_bytes());
            }
            let m = FakeMem::new().with(START, &start).with(0, &blob);
            let (r, out, w) = run(START as u32, &m);
            if r.is_ok() {
                prop_assert!(!out.memory_map().is_empty());
            }
            for module in out.modules() {
                prop_assert!(module.start <= module.end);
            }
            for warning in w {
                let text = std::string::ToString::to_string(&warning);
                prop_assert!(!text.is_empty());
            }
        }

        #[test]
        fn random_tables_never_panic(
            blob in prop::collection::vec(any::<u8>(), 0..2048),
            nr_modules: u32, memmap_entries: u32,
            offsets in prop::collection::vec(0u64..2048, 3),
        ) {
            let mut m = FakeMem::new().region(START, 56).with(0x10_0000, &blob);
            m.write_u32(START, START_MAGIC);
            m.write_u32(START + 4, 1);
            m.write_u32(START + 12, nr_modules);
            m.write_u64(START + 16, 0x10_0000 + offsets[0]);
            m.write_u64(START + 24, 0x10_0000 + offsets[1]);
            m.write_u64(START + 40, 0x10_0000 + offsets[2]);
            m.write_u32(START + 48, memmap_entries);
            let (_, out, _) = run(START as u32, &m);
            prop_assert!(out.memory_map().len() <= MAX_MEM_ENTRIES);
            prop_assert!(out.modules().len() <= MAX_MODULES);
        }
    }
}
