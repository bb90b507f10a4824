//! End-to-end test on tables shaped like those QEMU's i440fx (`pc`) machine gives SeaBIOS,
//! which is what keel boots on in development.
//!
//! The values come from the disassembled expectations in QEMU's `tests/data/acpi/pc` (FACP,
//! APIC, DSDT) and QEMU's `acpi_get_pm_info`, which keeps the `pc` FADT at revision 1 ("w2k
//! requires FADT(rev1)") through QEMU 7.2: an RSDP revision 0 with an RSDT only; a 116-byte
//! revision-1 FADT with PM1 blocks at 0x600/0x604, the PM timer at 0x608, GPE0 at 0xAFE0 and no
//! reset register; a revision-1 MADT with one IOAPIC, ISA overrides 0→2 and 5/9/10/11
//! level-triggered active-high, and a LINT1 NMI for all processors; a DSDT whose `Scope (\)`
//! declares `_S3_` {1, 1, 0, 0}, `_S4_` {2, 2, 0, 0} and `_S5_` {0, 0, 0, 0}.
//! The bytes are produced by this crate's test builders, not copied.

use crate::testutil::*;
use crate::*;

const EBDA: u64 = 0x9_FC00;
const RSDP_AT: u64 = 0xF_5A80;
const TABLES: u64 = 0x7FFE_0000;
const DSDT_AT: u64 = TABLES;
const FACS_AT: u64 = TABLES + 0x1000;
const FADT_AT: u64 = TABLES + 0x1040;
const MADT_AT: u64 = TABLES + 0x10C0;
const HPET_AT: u64 = TABLES + 0x1140;
const WAET_AT: u64 = TABLES + 0x1180;
const RSDT_AT: u64 = TABLES + 0x11C0;

/// The DSDT's AML: an OperationRegion like QEMU's debug port, then
/// `Scope (\) { Name (_S3_, …) Name (_S4_, …) Name (_S5_, …) }`.
fn dsdt_aml() -> Vec<u8> {
    let mut aml = vec![
        // OperationRegion (DBG_, SystemIO, 0x0402, One)
        0x5B, 0x80, b'D', b'B', b'G', b'_', 0x01, 0x0B, 0x02, 0x04, 0x01,
    ];
    let names: [&[u8]; 3] = [
        b"\x08_S3_\x12\x06\x04\x01\x01\x00\x00",
        b"\x08_S4_\x12\x08\x04\x0A\x02\x0A\x02\x00\x00",
        b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00",
    ];
    let body: Vec<u8> = names.concat();
    // ScopeOp, PkgLength (one byte: itself + "\" NullName + body), RootChar, NullName.
    aml.extend_from_slice(&[0x10, (1 + 2 + body.len()) as u8, b'\\', 0x00]);
    aml.extend_from_slice(&body);
    aml
}

fn qemu_pc_memory() -> FakeMem {
    let mut mem = FakeMem::new();
    let mut low = vec![0u8; 0x10_0000];
    low[0x40E..0x410].copy_from_slice(&((EBDA >> 4) as u16).to_le_bytes());
    mem.add(0, low);
    mem.add(TABLES, vec![0u8; 0x2000]);

    mem.write(RSDP_AT, &rsdp_v1(RSDT_AT as u32));
    let mut dsdt = sdt(b"DSDT", 1, &dsdt_aml());
    dsdt[16..24].copy_from_slice(b"BXPCDSDT");
    fix_sdt(&mut dsdt);
    mem.write(DSDT_AT, &dsdt);
    mem.write(FACS_AT, &facs());
    mem.write(
        FADT_AT,
        &fadt_v1(FadtSpec {
            facs: FACS_AT as u32,
            dsdt: DSDT_AT as u32,
            sci_int: 9,
            smi_cmd: 0xB2,
            acpi_enable: 0xF1,
            pm1a_evt: 0x600,
            pm1a_cnt: 0x604,
            pm_tmr: 0x608,
            gpe0: 0xAFE0,
            flags: 0x80A5,
            ..FadtSpec::default()
        }),
    );
    let mut madt_image = madt(
        0xFEE0_0000,
        1,
        &[
            lapic(0, 0, 1),
            ioapic(0, 0xFEC0_0000, 0),
            iso(0, 2, 0),
            iso(5, 5, 0xD),
            iso(9, 9, 0xD),
            iso(10, 10, 0xD),
            iso(11, 11, 0xD),
            lapic_nmi(0xFF, 1),
        ],
    );
    madt_image[8] = 1;
    fix_sdt(&mut madt_image);
    assert_eq!(madt_image.len(), 0x78);
    mem.write(MADT_AT, &madt_image);
    mem.write(HPET_AT, &sdt(b"HPET", 1, &[0x01, 0xA2, 0x86, 0x80, 0, 0, 0, 0]));
    mem.write(WAET_AT, &sdt(b"WAET", 1, &[2, 0, 0, 0]));
    mem.write(RSDT_AT, &rsdt(&[FADT_AT as u32, MADT_AT as u32, HPET_AT as u32, WAET_AT as u32]));
    mem
}

#[test]
fn qemu_i440fx_end_to_end() {
    let mem = qemu_pc_memory();

    let rsdp_at = find_rsdp_bios(&mem).unwrap();
    assert_eq!(rsdp_at, RSDP_AT);
    let mut bytes = [0u8; 20];
    mem.read(rsdp_at, &mut bytes).unwrap();
    let rsdp = parse_rsdp(&bytes).unwrap();
    assert_eq!((rsdp.revision, rsdp.xsdt), (0, None));

    let mut warnings = Vec::new();
    let tables = read_tables(&mem, &rsdp, &mut |w| warnings.push(w)).unwrap();
    let sigs: Vec<[u8; 4]> = tables.iter().map(|t| t.signature).collect();
    assert_eq!(sigs, [*b"FACP", *b"APIC", *b"HPET", *b"WAET", *b"DSDT", *b"FACS"]);

    let fadt = parse_fadt(&mem, tables.find(b"FACP").unwrap()).unwrap();
    let io = |address, bit_width| {
        Some(Gas { space: AddressSpace::SystemIo, bit_width, bit_offset: 0, access_size: 0, address })
    };
    assert_eq!(
        fadt,
        Fadt {
            revision: 1,
            flags: Fadt::WBINVD
                | Fadt::PROC_C1
                | Fadt::SLP_BUTTON
                | (1 << 7) // RTC_S4
                | Fadt::USE_PLATFORM_CLOCK,
            sci_int: 9,
            smi_cmd: 0xB2,
            acpi_enable: 0xF1,
            pm1a_evt: io(0x600, 32),
            pm1a_cnt: io(0x604, 16),
            pm1b_cnt: None,
            pm_tmr: io(0x608, 32),
            reset_reg: None,
            reset_value: 0,
            iapc_boot_arch: 0,
            dsdt: DSDT_AT,
            facs: FACS_AT,
            hw_reduced: false,
            sleep_control_reg: None,
        }
    );

    let madt = parse_madt(&mem, tables.find(b"APIC").unwrap(), &mut |w| warnings.push(w)).unwrap();
    assert_eq!(madt.local_apic_addr, 0xFEE0_0000);
    assert!(madt.pcat_compat);
    assert_eq!(madt.cpus(), [Cpu { acpi_uid: 0, apic_id: 0, enabled: true, online_capable: false, x2apic: false }]);
    assert_eq!(madt.ioapics(), [IoApic { id: 0, addr: 0xFEC0_0000, gsi_base: 0 }]);
    let isos: Vec<(u8, u32, u16)> = madt.overrides().iter().map(|o| (o.source, o.gsi, o.flags)).collect();
    assert_eq!(isos, [(0, 2, 0), (5, 5, 0xD), (9, 9, 0xD), (10, 10, 0xD), (11, 11, 0xD)]);
    assert_eq!(madt.lapic_nmi_count, 1);

    // QEMU's PIIX4 PM powers off on SLP_TYP 0; `_S3_` and `_S4_` come first and must not match.
    assert_eq!(find_s5(&mem, tables.find(b"DSDT").unwrap()), Ok((0, 0)));
    assert!(warnings.is_empty(), "{warnings:?}");
}
