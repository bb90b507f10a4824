//! The table directory: every table the host's root table lists, each verified once.
//!
//! The XSDT is used when the RSDP is revision 2+ and points at one; if it is unusable keel falls
//! back to the RSDT (ACPICA would give up instead, but an RSDT that checks out is better than
//! no ACPI at all). The DSDT and FACS are not listed in the root table; they are found through
//! the FADT and added too. Bad tables become warnings, never errors.

use crate::fadt::parse_fadt;
use crate::layout::{SdtHeader, FACS_LEN, SDT_HEADER_LEN, SIG_DSDT, SIG_FACS, SIG_FADT, SIG_RSDT, SIG_XSDT};
use crate::mem::{load_table, read_exact, read_obj};
use crate::{AcpiError, AcpiWarning, PhysMemory, Rsdp, MAX_TABLE_LEN};

/// Capacity of the table directory.
pub const MAX_TABLES: usize = 64;

/// Where a table is: enough to map it and hand it to a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRef {
    /// The table's four-byte signature, e.g. `*b"APIC"`.
    pub signature: [u8; 4],
    /// Physical address of the table's first byte.
    pub phys: u64,
    /// Length in bytes, from the table's header.
    pub length: u32,
}

impl TableRef {
    const EMPTY: Self = Self { signature: [0; 4], phys: 0, length: 0 };
}

/// The host's table directory, built by [`read_tables`].
#[derive(Debug, Clone)]
pub struct Tables {
    root: TableRef,
    entries: [TableRef; MAX_TABLES],
    count: usize,
}

impl Tables {
    /// The first table with signature `sig`.
    pub fn find(&self, sig: &[u8; 4]) -> Option<TableRef> {
        self.iter().find(|t| &t.signature == sig)
    }

    /// Every table in the directory, in root-table order, then the DSDT and FACS.
    pub fn iter(&self) -> impl Iterator<Item = TableRef> + '_ {
        self.entries[..self.count].iter().copied()
    }

    /// Number of tables in the directory.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the directory is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The root table (XSDT or RSDT) the directory was read from.
    pub fn root(&self) -> TableRef {
        self.root
    }

    fn contains_phys(&self, phys: u64) -> bool {
        self.iter().any(|t| t.phys == phys)
    }

    /// Appends `table`; `Err(())` when the directory is full.
    fn push(&mut self, table: TableRef) -> Result<(), ()> {
        let slot = self.entries.get_mut(self.count).ok_or(())?;
        *slot = table;
        self.count += 1;
        Ok(())
    }
}

/// Reads the root table the RSDP points at and verifies every table it lists.
///
/// Each table's header is read and its checksum verified; unreadable tables, bad checksums and
/// lengths outside `36 ..= 16 MiB` are reported through `warn` and left out. Duplicated
/// addresses are listed once. The DSDT and FACS the FADT points at are added after the listed
/// tables.
///
/// # Errors
/// Only if no root table is usable: [`AcpiError::NoRootTable`] when the RSDP has neither a usable
/// XSDT nor an RSDT address, otherwise the RSDT's own error.
pub fn read_tables(mem: &dyn PhysMemory, rsdp: &Rsdp, warn: &mut dyn FnMut(AcpiWarning)) -> Result<Tables, AcpiError> {
    let xsdt = rsdp.xsdt.and_then(|phys| {
        open_root(mem, phys, SIG_XSDT).map_err(|reason| warn(AcpiWarning::XsdtUnusable { phys, reason })).ok()
    });
    let (root, entry_size) = match xsdt {
        Some(root) => (root, 8),
        None if rsdp.rsdt != 0 => (open_root(mem, u64::from(rsdp.rsdt), SIG_RSDT)?, 4),
        None => return Err(AcpiError::NoRootTable),
    };

    let mut tables = Tables { root, entries: [TableRef::EMPTY; MAX_TABLES], count: 0 };

    let body = root.length - SDT_HEADER_LEN as u32;
    let trailing = body % entry_size;
    if trailing != 0 {
        warn(AcpiWarning::RootTrailingBytes { signature: root.signature, count: trailing });
    }
    for index in 0..body / entry_size {
        let at = root.phys + u64::from(SDT_HEADER_LEN as u32 + index * entry_size);
        let mut raw = [0u8; 8];
        if let Err(reason) = read_exact(mem, at, &mut raw[..entry_size as usize]) {
            // The root table was readable a moment ago; treat a failure like a bad entry.
            warn(AcpiWarning::TableSkipped { phys: at, signature: root.signature, reason });
            continue;
        }
        let phys = u64::from_le_bytes(raw);
        if phys == 0 {
            warn(AcpiWarning::NullEntry { index });
            continue;
        }
        if add(&mut tables, mem, phys, None, warn).is_err() {
            return Ok(tables);
        }
    }

    if let Some(fadt) = tables.find(&SIG_FADT) {
        match parse_fadt(mem, fadt) {
            Ok(fadt) => {
                if fadt.dsdt != 0 && add(&mut tables, mem, fadt.dsdt, Some(SIG_DSDT), warn).is_err() {
                    return Ok(tables);
                }
                if fadt.facs != 0 {
                    // Directory full is already reported; nothing follows the FACS.
                    let _ = add_facs(&mut tables, mem, fadt.facs, warn);
                }
            }
            Err(reason) => warn(AcpiWarning::BadFadt { reason }),
        }
    }
    Ok(tables)
}

/// Validates the root table at `phys`, which must carry `signature`.
fn open_root(mem: &dyn PhysMemory, phys: u64, signature: [u8; 4]) -> Result<TableRef, AcpiError> {
    let header = load_table(mem, phys, SDT_HEADER_LEN)?;
    if header.signature != signature {
        return Err(AcpiError::BadSignature);
    }
    Ok(TableRef { signature, phys, length: header.length.get() })
}

/// Verifies the table at `phys` (and its signature, if `expected`) and adds it.
/// `Err(())` once the directory is full (already reported).
fn add(
    tables: &mut Tables,
    mem: &dyn PhysMemory,
    phys: u64,
    expected: Option<[u8; 4]>,
    warn: &mut dyn FnMut(AcpiWarning),
) -> Result<(), ()> {
    if tables.contains_phys(phys) {
        return Ok(());
    }
    // For the warning: the signature, if at least the header is readable.
    let signature = read_obj::<SdtHeader>(mem, phys).map_or([0; 4], |h| h.signature);
    let checked = load_table(mem, phys, SDT_HEADER_LEN).and_then(|header| match expected {
        Some(sig) if sig != header.signature => Err(AcpiError::BadSignature),
        _ => Ok(header),
    });
    match checked {
        Ok(header) => push(tables, TableRef { signature: header.signature, phys, length: header.length.get() }, warn),
        Err(reason) => {
            warn(AcpiWarning::TableSkipped { phys, signature, reason });
            Ok(())
        }
    }
}

/// Adds the FACS, which has no checksum: only its signature and length are checked.
fn add_facs(tables: &mut Tables, mem: &dyn PhysMemory, phys: u64, warn: &mut dyn FnMut(AcpiWarning)) -> Result<(), ()> {
    if tables.contains_phys(phys) {
        return Ok(());
    }
    let mut head = [0u8; 8];
    let checked = read_exact(mem, phys, &mut head).and_then(|()| {
        let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if head[..4] != SIG_FACS {
            Err(AcpiError::BadSignature)
        } else if (length as usize) < FACS_LEN || length > MAX_TABLE_LEN {
            Err(AcpiError::BadLength { length })
        } else {
            Ok(length)
        }
    });
    match checked {
        Ok(length) => push(tables, TableRef { signature: SIG_FACS, phys, length }, warn),
        Err(reason) => {
            warn(AcpiWarning::TableSkipped { phys, signature: [head[0], head[1], head[2], head[3]], reason });
            Ok(())
        }
    }
}

fn push(tables: &mut Tables, table: TableRef, warn: &mut dyn FnMut(AcpiWarning)) -> Result<(), ()> {
    tables.push(table).map_err(|()| {
        warn(AcpiWarning::DirectoryFull { phys: table.phys });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    fn collect(mem: &FakeMem, rsdp: &Rsdp) -> (Result<Tables, AcpiError>, Vec<AcpiWarning>) {
        let mut warnings = Vec::new();
        let result = read_tables(mem, rsdp, &mut |w| warnings.push(w));
        (result, warnings)
    }

    fn sigs(tables: &Tables) -> Vec<[u8; 4]> {
        tables.iter().map(|t| t.signature).collect()
    }

    /// A small firmware image: FADT (-> DSDT, FACS), MADT, SSDT at fixed addresses.
    fn firmware(mem: &mut FakeMem) {
        mem.add(0x10_0000, vec![0u8; 0x1_0000]);
        mem.write(0x10_1000, &fadt_v5(FadtSpec { dsdt: 0x10_2000, facs: 0x10_3000, ..FadtSpec::default() }));
        mem.write(0x10_2000, &sdt(b"DSDT", 2, &[0x10, 0x05, 0x5C, 0x00]));
        mem.write(0x10_3000, &facs());
        mem.write(0x10_4000, &madt(0xFEE0_0000, 1, &[lapic(0, 0, 1)]));
        mem.write(0x10_5000, &sdt(b"SSDT", 2, &[1, 2, 3]));
    }

    #[test]
    fn rsdt_only_revision_0() {
        let mut mem = FakeMem::new();
        firmware(&mut mem);
        mem.write(0x10_8000, &rsdt(&[0x10_1000, 0x10_4000, 0x10_5000]));
        let rsdp = parse_rsdp_bytes(&rsdp_v1(0x10_8000));
        let (tables, warnings) = collect(&mem, &rsdp);
        let tables = tables.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(tables.root().signature, *b"RSDT");
        assert_eq!(sigs(&tables), [*b"FACP", *b"APIC", *b"SSDT", *b"DSDT", *b"FACS"]);
        let madt = tables.find(b"APIC").unwrap();
        assert_eq!(madt.phys, 0x10_4000);
        assert_eq!(madt.length, 44 + 8);
        assert_eq!(tables.find(b"FACS").unwrap().length, 64);
        assert_eq!(tables.find(b"HPET"), None);
        assert_eq!(tables.len(), 5);
        assert!(!tables.is_empty());
    }

    #[test]
    fn xsdt_preferred_over_rsdt() {
        let mut mem = FakeMem::new();
        firmware(&mut mem);
        mem.write(0x10_8000, &rsdt(&[0x10_5000]));
        mem.write(0x10_9000, &xsdt(&[0x10_1000, 0x10_4000]));
        let rsdp = parse_rsdp_bytes(&rsdp_v2(0x10_8000, 0x10_9000));
        let (tables, warnings) = collect(&mem, &rsdp);
        let tables = tables.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(tables.root().signature, *b"XSDT");
        assert_eq!(sigs(&tables), [*b"FACP", *b"APIC", *b"DSDT", *b"FACS"]);
    }

    #[test]
    fn xsdt_tables_above_4g() {
        let mut mem = FakeMem::new();
        mem.add(0x1_0000_0000, vec![0u8; 0x2000]);
        mem.write(0x1_0000_0000, &sdt(b"SSDT", 1, &[]));
        mem.write(0x1_0000_1000, &xsdt(&[0x1_0000_0000]));
        let rsdp = parse_rsdp_bytes(&rsdp_v2(0, 0x1_0000_1000));
        let (tables, _) = collect(&mem, &rsdp);
        assert_eq!(tables.unwrap().find(b"SSDT").unwrap().phys, 0x1_0000_0000);
    }

    #[test]
    fn bad_xsdt_falls_back_to_rsdt() {
        let mut mem = FakeMem::new();
        firmware(&mut mem);
        mem.write(0x10_8000, &rsdt(&[0x10_4000]));
        let mut bad = xsdt(&[0x10_1000]);
        bad[40] ^= 1;
        mem.write(0x10_9000, &bad);
        let rsdp = parse_rsdp_bytes(&rsdp_v2(0x10_8000, 0x10_9000));
        let (tables, warnings) = collect(&mem, &rsdp);
        assert_eq!(sigs(&tables.unwrap()), [*b"APIC"]);
        assert_eq!(warnings, [AcpiWarning::XsdtUnusable { phys: 0x10_9000, reason: AcpiError::BadChecksum }]);
    }

    #[test]
    fn no_root_table_is_an_error() {
        let mem = FakeMem::new();
        let (result, _) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0)));
        assert_eq!(result.unwrap_err(), AcpiError::NoRootTable);
        let (result, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0x5000)));
        assert_eq!(result.unwrap_err(), AcpiError::NoRootTable);
        assert_eq!(warnings.len(), 1);
        let (result, _) = collect(&mem, &parse_rsdp_bytes(&rsdp_v1(0x5000)));
        assert_eq!(result.unwrap_err(), AcpiError::Unreadable { phys: 0x5000 });
    }

    #[test]
    fn root_with_wrong_signature_is_rejected() {
        let mut mem = FakeMem::new();
        mem.add(0x8000, sdt(b"XSDT", 1, &[]));
        let (result, _) = collect(&mem, &parse_rsdp_bytes(&rsdp_v1(0x8000)));
        assert_eq!(result.unwrap_err(), AcpiError::BadSignature);
    }

    #[test]
    fn bad_tables_are_skipped_with_warnings() {
        let mut mem = FakeMem::new();
        mem.add(0x10_0000, vec![0u8; 0x1_0000]);
        let mut bad_sum = sdt(b"SSDT", 1, &[1, 2, 3, 4]);
        bad_sum[37] ^= 0xFF;
        mem.write(0x10_1000, &bad_sum);
        // Length 20: shorter than a header.
        let mut short = sdt(b"HPET", 1, &[]);
        short[4..8].copy_from_slice(&20u32.to_le_bytes());
        mem.write(0x10_2000, &short);
        // Absurd length (32 MiB).
        let mut huge = sdt(b"BGRT", 1, &[]);
        huge[4..8].copy_from_slice(&(32u32 << 20).to_le_bytes());
        mem.write(0x10_3000, &huge);
        // A good one.
        mem.write(0x10_4000, &sdt(b"WAET", 1, &[0; 4]));
        // Runs past readable memory.
        let mut past = sdt(b"SRAT", 1, &[]);
        past[4..8].copy_from_slice(&0x2000u32.to_le_bytes());
        mem.write(0x10_F000, &past);
        mem.write(0x10_8000, &xsdt(&[0x10_1000, 0, 0x10_2000, 0x10_3000, 0xDEAD_0000, 0x10_4000, 0x10_F000]));
        let (tables, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0x10_8000)));
        assert_eq!(sigs(&tables.unwrap()), [*b"WAET"]);
        assert_eq!(
            warnings,
            [
                AcpiWarning::TableSkipped { phys: 0x10_1000, signature: *b"SSDT", reason: AcpiError::BadChecksum },
                AcpiWarning::NullEntry { index: 1 },
                AcpiWarning::TableSkipped {
                    phys: 0x10_2000,
                    signature: *b"HPET",
                    reason: AcpiError::BadLength { length: 20 }
                },
                AcpiWarning::TableSkipped {
                    phys: 0x10_3000,
                    signature: *b"BGRT",
                    reason: AcpiError::BadLength { length: 32 << 20 }
                },
                AcpiWarning::TableSkipped {
                    phys: 0xDEAD_0000,
                    signature: [0; 4],
                    reason: AcpiError::Unreadable { phys: 0xDEAD_0000 }
                },
                AcpiWarning::TableSkipped {
                    phys: 0x10_F000,
                    signature: *b"SRAT",
                    reason: AcpiError::Unreadable { phys: 0x11_0000 }
                },
            ]
        );
    }

    #[test]
    fn trailing_bytes_and_duplicates() {
        let mut mem = FakeMem::new();
        mem.add(0x10_0000, vec![0u8; 0x1_0000]);
        mem.write(0x10_1000, &sdt(b"SSDT", 1, &[]));
        let mut body = Vec::new();
        body.extend_from_slice(&0x10_1000u32.to_le_bytes());
        body.extend_from_slice(&0x10_1000u32.to_le_bytes());
        body.extend_from_slice(&[0xAA, 0xBB]);
        mem.write(0x10_8000, &sdt(b"RSDT", 1, &body));
        let (tables, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v1(0x10_8000)));
        assert_eq!(sigs(&tables.unwrap()), [*b"SSDT"]);
        assert_eq!(warnings, [AcpiWarning::RootTrailingBytes { signature: *b"RSDT", count: 2 }]);
    }

    #[test]
    fn directory_full_stops_with_one_warning() {
        let mut mem = FakeMem::new();
        mem.add(0x10_0000, vec![0u8; 0x2_0000]);
        let addrs: Vec<u64> = (0..MAX_TABLES as u64 + 3).map(|i| 0x10_0000 + i * 0x100).collect();
        for &a in &addrs {
            mem.write(a, &sdt(b"SSDT", 1, &[]));
        }
        mem.write(0x11_8000, &xsdt(&addrs));
        let (tables, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0x11_8000)));
        assert_eq!(tables.unwrap().len(), MAX_TABLES);
        assert_eq!(warnings, [AcpiWarning::DirectoryFull { phys: addrs[MAX_TABLES] }]);
    }

    #[test]
    fn bad_dsdt_and_facs_from_fadt_are_warned() {
        let mut mem = FakeMem::new();
        mem.add(0x10_0000, vec![0u8; 0x1_0000]);
        mem.write(0x10_1000, &fadt_v5(FadtSpec { dsdt: 0x10_2000, facs: 0x10_3000, ..FadtSpec::default() }));
        // The DSDT pointer leads to an SSDT; the FACS pointer to garbage.
        mem.write(0x10_2000, &sdt(b"SSDT", 1, &[]));
        mem.write(0x10_3000, b"FACX");
        mem.write(0x10_8000, &xsdt(&[0x10_1000]));
        let (tables, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0x10_8000)));
        assert_eq!(sigs(&tables.unwrap()), [*b"FACP"]);
        assert_eq!(
            warnings,
            [
                AcpiWarning::TableSkipped { phys: 0x10_2000, signature: *b"SSDT", reason: AcpiError::BadSignature },
                AcpiWarning::TableSkipped { phys: 0x10_3000, signature: *b"FACX", reason: AcpiError::BadSignature },
            ]
        );
    }

    #[test]
    fn short_fadt_is_warned() {
        let mut mem = FakeMem::new();
        mem.add(0x10_0000, vec![0u8; 0x1_0000]);
        mem.write(0x10_1000, &sdt(b"FACP", 1, &[0; 40]));
        mem.write(0x10_8000, &rsdt(&[0x10_1000]));
        let (tables, warnings) = collect(&mem, &parse_rsdp_bytes(&rsdp_v1(0x10_8000)));
        assert_eq!(sigs(&tables.unwrap()), [*b"FACP"]);
        assert_eq!(warnings, [AcpiWarning::BadFadt { reason: AcpiError::BadLength { length: 76 } }]);
    }

    proptest! {
        #[test]
        fn random_root_and_tables_never_panic(
            root_body in proptest::collection::vec(any::<u8>(), 0..128),
            region in proptest::collection::vec(any::<u8>(), 0..4096),
            use_xsdt in any::<bool>(),
        ) {
            let mut mem = FakeMem::new();
            mem.add(0x1000, region);
            let sig = if use_xsdt { b"XSDT" } else { b"RSDT" };
            mem.add(0x10_0000, sdt(sig, 1, &root_body));
            let rsdp = if use_xsdt {
                parse_rsdp_bytes(&rsdp_v2(0, 0x10_0000))
            } else {
                parse_rsdp_bytes(&rsdp_v1(0x10_0000))
            };
            let (tables, _) = collect(&mem, &rsdp);
            let tables = tables.unwrap();
            prop_assert!(tables.len() <= MAX_TABLES);
            for t in tables.iter() {
                prop_assert!(t.length as usize >= 36 || t.signature == *b"FACS");
            }
        }

        #[test]
        fn fadt_pointers_into_random_memory_never_panic(
            mut region in proptest::collection::vec(any::<u8>(), 512..2048),
            mut body in proptest::collection::vec(any::<u8>(), 80..240),
            dsdt_off in 0u32..2048,
            facs_off in 0u32..2048,
            valid_dsdt in any::<bool>(),
        ) {
            // A checksum-valid FADT with random contents whose DSDT and FACS pointers lead
            // into random bytes (or, sometimes, to a valid DSDT).
            body[0..4].copy_from_slice(&(0x1000 + facs_off).to_le_bytes());
            body[4..8].copy_from_slice(&(0x1000 + dsdt_off).to_le_bytes());
            let dsdt_image = sdt(b"DSDT", 2, &[]);
            let dsdt_at = dsdt_off as usize;
            let placed = valid_dsdt && dsdt_at + dsdt_image.len() <= region.len();
            if placed {
                region[dsdt_at..dsdt_at + dsdt_image.len()].copy_from_slice(&dsdt_image);
            }
            let mut mem = FakeMem::new();
            mem.add(0x1000, region);
            mem.add(0x8_0000, sdt(b"FACP", body[0], &body));
            mem.add(0x10_0000, xsdt(&[0x8_0000]));
            let (tables, _) = collect(&mem, &parse_rsdp_bytes(&rsdp_v2(0, 0x10_0000)));
            let tables = tables.unwrap();
            prop_assert_eq!(tables.iter().next().map(|t| t.signature), Some(*b"FACP"));
            // X_DSDT (random here) overrides DSDT when the FADT is long enough to have it.
            let x_dsdt_present = body.len() + 36 >= 148 && body[104..112] != [0; 8];
            if placed && !x_dsdt_present {
                prop_assert_eq!(
                    tables.find(b"DSDT").map(|t| t.phys),
                    Some(0x1000 + u64::from(dsdt_off))
                );
            }
        }
    }
}
