//! The MADT ("APIC" table): the host's CPUs, I/O APICs and interrupt source overrides.
//!
//! keel brings up every enabled CPU listed here and programs the I/O APICs with the ISA
//! overrides. Entries are variable-length records; unknown types are skipped by their length,
//! and a length that is zero or runs past the table ends the walk with a warning, since nothing
//! after it can be trusted to be aligned on an entry.

use zerocopy::FromBytes;

use crate::layout::{
    RawIntOverride, RawIoApic, RawLapicOverride, RawLocalApic, RawMadtHeader, RawX2Apic, MADT_HEADER_LEN,
    MADT_INT_OVERRIDE, MADT_IO_APIC, MADT_LAPIC_OVERRIDE, MADT_LOCAL_APIC, MADT_LOCAL_APIC_NMI, MADT_X2APIC,
    MADT_X2APIC_NMI, SIG_MADT,
};
use crate::mem::{open_table, read_obj};
use crate::{AcpiError, AcpiWarning, PhysMemory, TableRef};

/// Capacity of [`Madt::cpus`].
pub const MAX_CPUS: usize = 256;
/// Capacity of [`Madt::ioapics`].
pub const MAX_IOAPICS: usize = 16;
/// Capacity of [`Madt::overrides`].
pub const MAX_OVERRIDES: usize = 32;

/// Local APIC flags: the processor is usable now.
const LAPIC_ENABLED: u32 = 1 << 0;
/// Local APIC flags (ACPI 6.3+): the processor can be brought online later.
const LAPIC_ONLINE_CAPABLE: u32 = 1 << 1;
/// MADT flags: the system also has dual 8259 PICs.
const PCAT_COMPAT: u32 = 1 << 0;

/// One processor, from a Local APIC (type 0) or Local x2APIC (type 9) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// ACPI processor UID (matches the DSDT's processor objects).
    pub acpi_uid: u32,
    /// Local APIC ID (x2APIC ID for type 9 entries).
    pub apic_id: u32,
    /// Usable now.
    pub enabled: bool,
    /// Not enabled now, but may be hot-added later.
    pub online_capable: bool,
    /// Came from a Local x2APIC entry.
    pub x2apic: bool,
}

impl Cpu {
    const EMPTY: Self = Self { acpi_uid: 0, apic_id: 0, enabled: false, online_capable: false, x2apic: false };
}

/// One I/O APIC (type 1 entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// I/O APIC ID.
    pub id: u8,
    /// Physical address of its registers.
    pub addr: u32,
    /// First global system interrupt it handles.
    pub gsi_base: u32,
}

impl IoApic {
    const EMPTY: Self = Self { id: 0, addr: 0, gsi_base: 0 };
}

/// An interrupt source override (type 2 entry): ISA IRQ `source` is wired to `gsi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntOverride {
    /// Always 0 (ISA).
    pub bus: u8,
    /// ISA IRQ.
    pub source: u8,
    /// Global system interrupt it arrives on.
    pub gsi: u32,
    /// MPS INTI flags: polarity in bits 0–1, trigger mode in bits 2–3.
    pub flags: u16,
}

impl IntOverride {
    const EMPTY: Self = Self { bus: 0, source: 0, gsi: 0, flags: 0 };
}

/// What keel needs from the MADT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Madt {
    /// Local APIC base: the header's 32-bit address, or the type-5 override if present.
    pub local_apic_addr: u64,
    /// The system also has 8259 PICs (which keel must mask).
    pub pcat_compat: bool,
    /// Processors, in table order; only the first `cpu_count` are valid.
    pub cpus: [Cpu; MAX_CPUS],
    /// Number of valid entries in `cpus`.
    pub cpu_count: usize,
    /// I/O APICs; only the first `ioapic_count` are valid.
    pub ioapics: [IoApic; MAX_IOAPICS],
    /// Number of valid entries in `ioapics`.
    pub ioapic_count: usize,
    /// Interrupt source overrides; only the first `override_count` are valid.
    pub overrides: [IntOverride; MAX_OVERRIDES],
    /// Number of valid entries in `overrides`.
    pub override_count: usize,
    /// Number of Local APIC NMI (type 4) and Local x2APIC NMI (type 0xA) entries seen. Their
    /// contents are not kept: keel programs LINT1 as NMI on every CPU, as they all say in practice.
    pub lapic_nmi_count: usize,
}

impl Madt {
    /// The valid processors.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus[..self.cpu_count]
    }

    /// The valid I/O APICs.
    pub fn ioapics(&self) -> &[IoApic] {
        &self.ioapics[..self.ioapic_count]
    }

    /// The valid interrupt source overrides.
    pub fn overrides(&self) -> &[IntOverride] {
        &self.overrides[..self.override_count]
    }

    /// Appends `cpu`; warns once (per parse) if the list is full.
    fn push_cpu(&mut self, cpu: Cpu, entry_type: u8, full: &mut Full, warn: &mut Warn<'_>) {
        push(&mut self.cpus, &mut self.cpu_count, cpu, entry_type, &mut full.cpus, warn);
    }
}

type Warn<'a> = dyn FnMut(AcpiWarning) + 'a;

/// Which lists have already reported overflowing.
#[derive(Default)]
struct Full {
    cpus: bool,
    ioapics: bool,
    overrides: bool,
}

fn push<T>(list: &mut [T], count: &mut usize, item: T, entry_type: u8, reported: &mut bool, warn: &mut Warn<'_>) {
    if let Some(slot) = list.get_mut(*count) {
        *slot = item;
        *count += 1;
    } else if !*reported {
        *reported = true;
        warn(AcpiWarning::MadtListFull { entry_type });
    }
}

/// Parses the MADT `table` (as listed by [`read_tables`](crate::read_tables)).
///
/// Entry types handled: 0 (Local APIC), 1 (I/O APIC), 2 (interrupt source override),
/// 4 and 0xA (local NMI: counted only), 5 (Local APIC address override), 9 (Local x2APIC).
/// Other types are skipped by their length. A known type shorter than its layout is skipped with
/// [`AcpiWarning::MadtEntryTooShort`]; a length below 2 or past the table's end stops the walk
/// with [`AcpiWarning::MadtEntryOverrun`]. Lists that overflow their capacity warn once.
///
/// # Errors
/// If the table itself is unusable: unreadable, wrong signature, length shorter than the
/// 44-byte MADT header or different from `table.length`, or a bad checksum.
pub fn parse_madt(mem: &dyn PhysMemory, table: TableRef, warn: &mut dyn FnMut(AcpiWarning)) -> Result<Madt, AcpiError> {
    let reader = open_table(mem, table, &[SIG_MADT], MADT_HEADER_LEN)?;
    let header: RawMadtHeader = read_obj(mem, table.phys)?;
    let mut madt = Madt {
        local_apic_addr: u64::from(header.local_apic_addr.get()),
        pcat_compat: header.flags.get() & PCAT_COMPAT != 0,
        cpus: [Cpu::EMPTY; MAX_CPUS],
        cpu_count: 0,
        ioapics: [IoApic::EMPTY; MAX_IOAPICS],
        ioapic_count: 0,
        overrides: [IntOverride::EMPTY; MAX_OVERRIDES],
        override_count: 0,
        lapic_nmi_count: 0,
    };
    let mut full = Full::default();

    let mut offset = MADT_HEADER_LEN as u32;
    let end = reader.len();
    // An entry is at most 255 bytes (its length is a byte).
    let mut entry = [0u8; 255];
    while offset < end {
        let mut head = [0u8; 2];
        if reader.read(offset, &mut head).is_err() {
            // One stray byte at the end: not even a type and a length.
            warn(AcpiWarning::MadtEntryOverrun { offset, length: 0 });
            break;
        }
        let [entry_type, length] = head;
        let bytes = &mut entry[..usize::from(length)];
        if length < 2 || reader.read(offset, bytes).is_err() {
            warn(AcpiWarning::MadtEntryOverrun { offset, length });
            break;
        }
        let too_short = || AcpiWarning::MadtEntryTooShort { offset, entry_type, length };
        match entry_type {
            MADT_LOCAL_APIC => match RawLocalApic::read_from_prefix(bytes) {
                Ok((e, _)) => {
                    let flags = e.flags.get();
                    let cpu = Cpu {
                        acpi_uid: u32::from(e.acpi_uid),
                        apic_id: u32::from(e.apic_id),
                        enabled: flags & LAPIC_ENABLED != 0,
                        online_capable: flags & LAPIC_ONLINE_CAPABLE != 0,
                        x2apic: false,
                    };
                    madt.push_cpu(cpu, entry_type, &mut full, warn);
                }
                Err(_) => warn(too_short()),
            },
            MADT_X2APIC => match RawX2Apic::read_from_prefix(bytes) {
                Ok((e, _)) => {
                    let flags = e.flags.get();
                    let cpu = Cpu {
                        acpi_uid: e.acpi_uid.get(),
                        apic_id: e.x2apic_id.get(),
                        enabled: flags & LAPIC_ENABLED != 0,
                        online_capable: flags & LAPIC_ONLINE_CAPABLE != 0,
                        x2apic: true,
                    };
                    madt.push_cpu(cpu, entry_type, &mut full, warn);
                }
                Err(_) => warn(too_short()),
            },
            MADT_IO_APIC => match RawIoApic::read_from_prefix(bytes) {
                Ok((e, _)) => {
                    let ioapic = IoApic { id: e.id, addr: e.addr.get(), gsi_base: e.gsi_base.get() };
                    push(&mut madt.ioapics, &mut madt.ioapic_count, ioapic, entry_type, &mut full.ioapics, warn);
                }
                Err(_) => warn(too_short()),
            },
            MADT_INT_OVERRIDE => match RawIntOverride::read_from_prefix(bytes) {
                Ok((e, _)) => {
                    let iso = IntOverride { bus: e.bus, source: e.source, gsi: e.gsi.get(), flags: e.flags.get() };
                    push(&mut madt.overrides, &mut madt.override_count, iso, entry_type, &mut full.overrides, warn);
                }
                Err(_) => warn(too_short()),
            },
            MADT_LAPIC_OVERRIDE => match RawLapicOverride::read_from_prefix(bytes) {
                Ok((e, _)) => madt.local_apic_addr = e.addr.get(),
                Err(_) => warn(too_short()),
            },
            MADT_LOCAL_APIC_NMI | MADT_X2APIC_NMI => madt.lapic_nmi_count += 1,
            _ => {}
        }
        offset += u32::from(length);
    }
    Ok(madt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    const AT: u64 = 0x8000;

    fn parse(image: &[u8]) -> (Result<Madt, AcpiError>, Vec<AcpiWarning>) {
        let mut mem = FakeMem::new();
        mem.add(AT, image.to_vec());
        let table = TableRef { signature: *b"APIC", phys: AT, length: image.len() as u32 };
        let mut warnings = Vec::new();
        let madt = parse_madt(&mem, table, &mut |w| warnings.push(w));
        (madt, warnings)
    }

    #[test]
    fn typical_host() {
        let image = madt(
            0xFEE0_0000,
            PCAT_COMPAT,
            &[
                lapic(0, 0, 1),
                lapic(1, 2, 1),
                lapic(2, 4, 0),
                lapic(3, 6, 2),
                ioapic(8, 0xFEC0_0000, 0),
                ioapic(9, 0xFEC0_1000, 24),
                iso(0, 2, 0),
                iso(9, 9, 0xD),
                lapic_nmi(0xFF, 1),
                vec![0x7F, 4, 0xAA, 0xBB], // unknown type: skipped by length
            ],
        );
        let (madt, warnings) = parse(&image);
        let madt = madt.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(madt.local_apic_addr, 0xFEE0_0000);
        assert!(madt.pcat_compat);
        assert_eq!(madt.cpu_count, 4);
        assert_eq!(
            madt.cpus()[1],
            Cpu { acpi_uid: 1, apic_id: 2, enabled: true, online_capable: false, x2apic: false }
        );
        assert!(!madt.cpus()[2].enabled && !madt.cpus()[2].online_capable);
        assert!(!madt.cpus()[3].enabled && madt.cpus()[3].online_capable);
        assert_eq!(
            madt.ioapics(),
            [IoApic { id: 8, addr: 0xFEC0_0000, gsi_base: 0 }, IoApic { id: 9, addr: 0xFEC0_1000, gsi_base: 24 }]
        );
        assert_eq!(
            madt.overrides(),
            [
                IntOverride { bus: 0, source: 0, gsi: 2, flags: 0 },
                IntOverride { bus: 0, source: 9, gsi: 9, flags: 0xD }
            ]
        );
        assert_eq!(madt.lapic_nmi_count, 1);
    }

    #[test]
    fn lapic_address_override() {
        let image = madt(0xFEE0_0000, 0, &[lapic_override(0x1_FEE0_0000), lapic(0, 0, 1)]);
        let (madt, warnings) = parse(&image);
        let madt = madt.unwrap();
        assert!(warnings.is_empty());
        assert_eq!(madt.local_apic_addr, 0x1_FEE0_0000);
        assert!(!madt.pcat_compat);
    }

    #[test]
    fn x2apic_entries() {
        let image = madt(
            0xFEE0_0000,
            0,
            &[lapic(0, 0, 1), x2apic(0x100, 300, 1), x2apic(0x101, 0xFFFF_FFF0, 2), x2apic_nmi(0xFFFF_FFFF, 1)],
        );
        let (madt, warnings) = parse(&image);
        let madt = madt.unwrap();
        assert!(warnings.is_empty());
        assert_eq!(madt.cpu_count, 3);
        assert_eq!(
            madt.cpus()[1],
            Cpu { acpi_uid: 0x100, apic_id: 300, enabled: true, online_capable: false, x2apic: true }
        );
        assert_eq!(madt.cpus()[2].apic_id, 0xFFFF_FFF0);
        assert!(madt.cpus()[2].online_capable);
        assert_eq!(madt.lapic_nmi_count, 1);
    }

    #[test]
    fn truncated_known_entries_are_skipped() {
        // A Local APIC entry with length 6 (needs 8), then a good one.
        let short = vec![0u8, 6, 1, 1, 1, 0];
        let short_ioapic = vec![1u8, 8, 1, 0, 0, 0, 0xC0, 0xFE];
        let image = madt(0xFEE0_0000, 0, &[short, short_ioapic, lapic(2, 2, 1)]);
        let (madt, warnings) = parse(&image);
        let madt = madt.unwrap();
        assert_eq!(madt.cpus(), [Cpu { acpi_uid: 2, apic_id: 2, enabled: true, ..Cpu::EMPTY }]);
        assert_eq!(madt.ioapic_count, 0);
        assert_eq!(
            warnings,
            [
                AcpiWarning::MadtEntryTooShort { offset: 44, entry_type: 0, length: 6 },
                AcpiWarning::MadtEntryTooShort { offset: 50, entry_type: 1, length: 8 },
            ]
        );
    }

    #[test]
    fn longer_entries_are_accepted() {
        // Future revisions may append fields; the known prefix is still used.
        let mut long = lapic(0, 5, 1);
        long[1] = 12;
        long.extend_from_slice(&[0xEE; 4]);
        let image = madt(0xFEE0_0000, 0, &[long, lapic(1, 6, 1)]);
        let (madt, warnings) = parse(&image);
        assert!(warnings.is_empty());
        let ids: Vec<u32> = madt.unwrap().cpus().iter().map(|c| c.apic_id).collect();
        assert_eq!(ids, [5, 6]);
    }

    #[test]
    fn zero_length_entry_stops_the_walk() {
        let image = madt(0xFEE0_0000, 0, &[lapic(0, 0, 1), vec![0, 0], lapic(1, 1, 1)]);
        let (madt, warnings) = parse(&image);
        assert_eq!(madt.unwrap().cpu_count, 1);
        assert_eq!(warnings, [AcpiWarning::MadtEntryOverrun { offset: 52, length: 0 }]);
    }

    #[test]
    fn length_one_entry_stops_the_walk() {
        let image = madt(0xFEE0_0000, 0, &[vec![0x55, 1], lapic(1, 1, 1)]);
        let (madt, warnings) = parse(&image);
        assert_eq!(madt.unwrap().cpu_count, 0);
        assert_eq!(warnings, [AcpiWarning::MadtEntryOverrun { offset: 44, length: 1 }]);
    }

    #[test]
    fn entry_running_past_the_table_stops_the_walk() {
        let mut last = lapic(1, 1, 1);
        last[1] = 20;
        let image = madt(0xFEE0_0000, 0, &[lapic(0, 0, 1), last]);
        let (madt, warnings) = parse(&image);
        assert_eq!(madt.unwrap().cpu_count, 1);
        assert_eq!(warnings, [AcpiWarning::MadtEntryOverrun { offset: 52, length: 20 }]);
    }

    #[test]
    fn single_trailing_byte_stops_the_walk() {
        let image = madt(0xFEE0_0000, 0, &[lapic(0, 0, 1), vec![0]]);
        let (madt, warnings) = parse(&image);
        assert_eq!(madt.unwrap().cpu_count, 1);
        assert_eq!(warnings, [AcpiWarning::MadtEntryOverrun { offset: 52, length: 0 }]);
    }

    #[test]
    fn full_lists_warn_once_each() {
        let mut entries: Vec<Vec<u8>> = (0..MAX_CPUS as u32 + 5).map(|i| x2apic(i, i, 1)).collect();
        entries.extend((0..MAX_IOAPICS as u8 + 2).map(|i| ioapic(i, 0xFEC0_0000, 0)));
        entries.extend((0..MAX_OVERRIDES as u8 + 2).map(|i| iso(i, u32::from(i), 0)));
        let image = madt(0xFEE0_0000, 0, &entries);
        let (madt, warnings) = parse(&image);
        let madt = madt.unwrap();
        assert_eq!(madt.cpu_count, MAX_CPUS);
        assert_eq!(madt.cpus()[MAX_CPUS - 1].apic_id, MAX_CPUS as u32 - 1);
        assert_eq!(madt.ioapic_count, MAX_IOAPICS);
        assert_eq!(madt.override_count, MAX_OVERRIDES);
        assert_eq!(
            warnings,
            [
                AcpiWarning::MadtListFull { entry_type: 9 },
                AcpiWarning::MadtListFull { entry_type: 1 },
                AcpiWarning::MadtListFull { entry_type: 2 },
            ]
        );
    }

    #[test]
    fn unusable_tables_are_errors() {
        let good = madt(0xFEE0_0000, 0, &[lapic(0, 0, 1)]);
        let mut bad_sum = good.clone();
        bad_sum[44 + 3] ^= 1;
        assert_eq!(parse(&bad_sum).0.unwrap_err(), AcpiError::BadChecksum);

        let wrong_sig = sdt(b"APIX", 1, &good[36..]);
        assert_eq!(parse(&wrong_sig).0.unwrap_err(), AcpiError::BadSignature);

        let too_short = sdt(b"APIC", 1, &[0; 4]);
        assert_eq!(parse(&too_short).0.unwrap_err(), AcpiError::BadLength { length: 40 });

        // The directory's length disagrees with the header.
        let mut mem = FakeMem::new();
        mem.add(AT, good.clone());
        let table = TableRef { signature: *b"APIC", phys: AT, length: good.len() as u32 - 1 };
        assert_eq!(
            parse_madt(&mem, table, &mut |_| {}).unwrap_err(),
            AcpiError::BadLength { length: good.len() as u32 }
        );
    }

    proptest! {
        #[test]
        fn random_entries_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let mut full_body = vec![0, 0, 0xE0, 0xFE, 1, 0, 0, 0];
            full_body.extend_from_slice(&body);
            let image = sdt(b"APIC", 3, &full_body);
            let (madt, _) = parse(&image);
            let madt = madt.unwrap();
            prop_assert!(madt.cpu_count <= MAX_CPUS);
            prop_assert!(madt.ioapic_count <= MAX_IOAPICS);
            prop_assert!(madt.override_count <= MAX_OVERRIDES);
        }

        #[test]
        fn random_whole_table_never_panics(image in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&image);
        }
    }
}
