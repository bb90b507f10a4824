//! Building the ACPI tables a PVH guest boots with.
//!
//! This follows what Xen's libxl builds for a PVH domU (see `xen-abi.md` §1.4–1.6): an RSDP
//! (revision 2) pointing at an XSDT, which lists a revision-5 FADT and a MADT with one Local
//! APIC per vCPU; the FADT points at a DSDT and a 64-byte-aligned FACS. There is no IOAPIC, HPET
//! or interrupt source override, because a PVH guest has none of that hardware.
//!
//! Differences from Xen, all deliberate:
//!
//! * The FADT sets `HW_REDUCED_ACPI`. A PVH guest has no PM1 event/control blocks, PM timer or
//!   GPE blocks (Xen advertises ports for them that read as all-ones); with the flag set the OS
//!   neither expects nor touches them, so they are all left zero. Linux also takes its
//!   hardware-reduced boot path, which skips the legacy PIC and PIT the guest does not have.
//! * There is no RSDT: every table is reachable through the XSDT, which any OS reading a
//!   revision-2 RSDP uses.
//! * The DSDT is a valid header with no AML. Linux needs a DSDT to exist but nothing in it for a
//!   domU: processors come from the MADT, and there is no `_S5_` (a PVH guest powers off with a
//!   hypercall), exactly as in Xen's PVH DSDT.
//! * The reset register is left zero: nothing emulates port 0xCF9 for a PVH guest (Xen fills it
//!   in but does not set `RESET_REG_SUP`, so it is unused there too).
//! * A vCPU whose APIC ID is above 254 gets a Local x2APIC (type 9) entry, as the ACPI
//!   specification requires; so does one whose index (UID) is above 254, which the 8-bit UID of
//!   a Local APIC entry cannot hold without colliding with the 0xFF "all processors" UID. The
//!   MADT revision is then 3 (ACPI 4.0, which introduced x2APIC entries) instead of Xen's 2.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::fadt::Fadt;
use crate::layout::{
    RawFacs, RawFadt, RawLocalApic, RawMadtHeader, RawRsdp, RawX2Apic, SdtHeader, FACS_LEN, FADT_V5_LEN,
    MADT_HEADER_LEN, MADT_LOCAL_APIC, MADT_X2APIC, RSDP_SIGNATURE, RSDP_V1_LEN, RSDP_V2_LEN, SDT_CHECKSUM_OFFSET,
    SDT_HEADER_LEN, SIG_DSDT, SIG_FACS, SIG_FADT, SIG_MADT, SIG_XSDT,
};
use crate::{checksum, AcpiError};

/// Most vCPUs [`build_guest_tables`] accepts (far above anything keel schedules; it bounds the
/// work and the MADT size for a bad configuration).
pub const MAX_GUEST_VCPUS: u32 = 4096;

/// What the guest's tables describe.
#[derive(Debug, Clone, Copy)]
pub struct GuestAcpiConfig {
    /// Number of vCPUs, `1 ..= MAX_GUEST_VCPUS`. vCPU `i` gets ACPI processor UID `i`, which
    /// Linux uses as its Xen vcpu_id.
    pub vcpus: u32,
    /// Local APIC base address (0xFEE0_0000).
    pub lapic_base: u32,
    /// The APIC ID of vCPU `i`; it must match what the vLAPIC and CPUID report (Xen: `2 * i`).
    pub apic_id_of: fn(u32) -> u32,
    /// OEM ID written into the RSDP and every table header.
    pub oem_id: [u8; 6],
}

/// Guest-physical addresses of the built tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAcpiLayout {
    /// The RSDP (16-byte aligned); goes into `hvm_start_info.rsdp_paddr`.
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FADT.
    pub fadt: u64,
    /// The MADT.
    pub madt: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The FACS (64-byte aligned).
    pub facs: u64,
    /// One past the last byte used; `[base, end)` must be an ACPI/NVS/reserved e820 range.
    pub end: u64,
}

/// Table header revisions.
const XSDT_REVISION: u8 = 1;
const FADT_REVISION: u8 = 5;
const MADT_REVISION: u8 = 2;
const MADT_REVISION_X2APIC: u8 = 3;
const DSDT_REVISION: u8 = 2;
const FACS_VERSION: u8 = 2;
const CREATOR_ID: [u8; 4] = *b"KEEL";
const CREATOR_REVISION: u32 = 1;
const OEM_REVISION: u32 = 1;

/// Tables the XSDT lists: the FADT and the MADT.
const XSDT_LEN: usize = SDT_HEADER_LEN + 2 * 8;
const DSDT_LEN: usize = SDT_HEADER_LEN;
const LOCAL_APIC_LEN: usize = size_of::<RawLocalApic>();
const X2APIC_LEN: usize = size_of::<RawX2Apic>();

/// FADT flags: Xen's set (§1.6) plus `HW_REDUCED_ACPI`.
const GUEST_FADT_FLAGS: u32 = Fadt::WBINVD
    | Fadt::PROC_C1
    | Fadt::PWR_BUTTON
    | Fadt::SLP_BUTTON
    | Fadt::FIX_RTC
    | Fadt::TMR_VAL_EXT
    | Fadt::USE_PLATFORM_CLOCK
    | Fadt::HW_REDUCED_ACPI;
/// No VGA to probe and no CMOS RTC; the 8042 bit is clear (none present).
const GUEST_IAPC_BOOT_ARCH: u16 = Fadt::IAPC_NO_VGA | Fadt::IAPC_NO_CMOS_RTC;
/// Xen's SCI number; OSPM ignores it on a hardware-reduced platform.
const GUEST_SCI_INT: u16 = 9;
/// C2/C3 latencies above 100/1000 µs: "not supported" (as Xen).
const NO_C2_LATENCY: u16 = 0x0FFF;
const NO_C3_LATENCY: u16 = 0x0FFF;
/// MADT flags: PCAT_COMPAT (as Xen).
const MADT_PCAT_COMPAT: u32 = 1;
/// Local APIC flags: enabled.
const LAPIC_ENABLED: u32 = 1;

/// Whether vCPU `uid` with APIC ID `apic_id` needs a Local x2APIC entry: a Local APIC entry has
/// 8-bit fields, and 0xFF means "broadcast" (APIC ID) or "all processors" (UID in NMI entries).
fn needs_x2apic(uid: u32, apic_id: u32) -> bool {
    uid > 0xFE || apic_id > 0xFE
}

/// Builds a PVH guest's ACPI tables into `buf`, which the caller will place at guest-physical
/// `base`. Returns where each table landed; `[base, layout.end)` is the range to map and to mark
/// in the guest's e820. Bytes of `buf` past `end - base` are not touched; padding inside is zeroed.
///
/// # Errors
/// [`AcpiError::InvalidConfig`] for zero or more than [`MAX_GUEST_VCPUS`] vCPUs,
/// [`AcpiError::BufferTooSmall`] if `buf` cannot hold the tables, and
/// [`AcpiError::AddressOverflow`] if they would not fit below 2^64.
pub fn build_guest_tables(cfg: &GuestAcpiConfig, base: u64, buf: &mut [u8]) -> Result<GuestAcpiLayout, AcpiError> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_GUEST_VCPUS {
        return Err(AcpiError::InvalidConfig);
    }
    let mut any_x2apic = false;
    let mut madt_len = MADT_HEADER_LEN;
    for i in 0..cfg.vcpus {
        if needs_x2apic(i, (cfg.apic_id_of)(i)) {
            any_x2apic = true;
            madt_len += X2APIC_LEN;
        } else {
            madt_len += LOCAL_APIC_LEN;
        }
    }

    let mut cursor = Cursor { next: base };
    let layout = GuestAcpiLayout {
        rsdp: cursor.place(RSDP_V2_LEN, 16)?,
        xsdt: cursor.place(XSDT_LEN, 8)?,
        fadt: cursor.place(FADT_V5_LEN, 8)?,
        madt: cursor.place(madt_len, 8)?,
        dsdt: cursor.place(DSDT_LEN, 8)?,
        facs: cursor.place(FACS_LEN, 64)?,
        end: cursor.next,
    };
    let needed = usize::try_from(layout.end - base).map_err(|_| AcpiError::AddressOverflow)?;
    let out = buf.get_mut(..needed).ok_or(AcpiError::BufferTooSmall { needed })?;
    out.fill(0);
    let mut out = Out { buf: out, base };

    // RSDP: both checksums, the 20-byte one first since the extended one covers it.
    let rsdp = RawRsdp {
        signature: RSDP_SIGNATURE,
        checksum: 0,
        oem_id: cfg.oem_id,
        revision: 2,
        rsdt: U32::new(0),
        length: U32::new(RSDP_V2_LEN as u32),
        xsdt: U64::new(layout.xsdt),
        ext_checksum: 0,
        reserved: [0; 3],
    };
    let bytes = out.put(layout.rsdp, rsdp.as_bytes())?;
    bytes[8] = 0u8.wrapping_sub(checksum(&bytes[..RSDP_V1_LEN]));
    bytes[32] = 0u8.wrapping_sub(checksum(bytes));

    // XSDT.
    let mut xsdt = [0u8; XSDT_LEN];
    xsdt[..SDT_HEADER_LEN].copy_from_slice(header(cfg, SIG_XSDT, XSDT_LEN, XSDT_REVISION).as_bytes());
    xsdt[SDT_HEADER_LEN..][..8].copy_from_slice(&layout.fadt.to_le_bytes());
    xsdt[SDT_HEADER_LEN + 8..].copy_from_slice(&layout.madt.to_le_bytes());
    seal(out.put(layout.xsdt, &xsdt)?);

    // FADT (revision 5). The 32-bit pointers are filled only when the target is below 4 GiB;
    // the FACS goes in exactly one of FIRMWARE_CTRL / X_FIRMWARE_CTRL, as the spec requires.
    let low = |addr: u64| u32::try_from(addr).unwrap_or(0);
    let mut fadt = RawFadt::new_zeroed();
    fadt.header = header(cfg, SIG_FADT, FADT_V5_LEN, FADT_REVISION);
    fadt.firmware_ctrl = U32::new(low(layout.facs));
    fadt.x_firmware_ctrl = U64::new(if low(layout.facs) == 0 { layout.facs } else { 0 });
    fadt.dsdt = U32::new(low(layout.dsdt));
    fadt.x_dsdt = U64::new(layout.dsdt);
    fadt.sci_int = U16::new(GUEST_SCI_INT);
    fadt.p_lvl2_lat = U16::new(NO_C2_LATENCY);
    fadt.p_lvl3_lat = U16::new(NO_C3_LATENCY);
    fadt.iapc_boot_arch = U16::new(GUEST_IAPC_BOOT_ARCH);
    fadt.flags = U32::new(GUEST_FADT_FLAGS);
    // No PM1/PM2/PM timer/GPE blocks, no reset or sleep registers: HW_REDUCED_ACPI (see above).
    seal(out.put(layout.fadt, &fadt.as_bytes()[..FADT_V5_LEN])?);

    // MADT: one Local APIC (or x2APIC) entry per vCPU, nothing else.
    let revision = if any_x2apic { MADT_REVISION_X2APIC } else { MADT_REVISION };
    let madt_header = RawMadtHeader {
        header: header(cfg, SIG_MADT, madt_len, revision),
        local_apic_addr: U32::new(cfg.lapic_base),
        flags: U32::new(MADT_PCAT_COMPAT),
    };
    out.put(layout.madt, madt_header.as_bytes())?;
    let mut at = layout.madt + MADT_HEADER_LEN as u64;
    for i in 0..cfg.vcpus {
        let apic_id = (cfg.apic_id_of)(i);
        if needs_x2apic(i, apic_id) {
            let entry = RawX2Apic {
                entry_type: MADT_X2APIC,
                length: X2APIC_LEN as u8,
                reserved: U16::new(0),
                x2apic_id: U32::new(apic_id),
                flags: U32::new(LAPIC_ENABLED),
                acpi_uid: U32::new(i),
            };
            out.put(at, entry.as_bytes())?;
            at += X2APIC_LEN as u64;
        } else {
            let entry = RawLocalApic {
                entry_type: MADT_LOCAL_APIC,
                length: LOCAL_APIC_LEN as u8,
                acpi_uid: i as u8,
                apic_id: apic_id as u8,
                flags: U32::new(LAPIC_ENABLED),
            };
            out.put(at, entry.as_bytes())?;
            at += LOCAL_APIC_LEN as u64;
        }
    }
    if at != layout.madt + madt_len as u64 {
        // `apic_id_of` answered differently the second time round.
        return Err(AcpiError::InvalidConfig);
    }
    seal(out.get(layout.madt, madt_len)?);

    // DSDT: a header and no AML (see the module doc).
    let dsdt = header(cfg, SIG_DSDT, DSDT_LEN, DSDT_REVISION);
    seal(out.put(layout.dsdt, dsdt.as_bytes())?);

    // FACS: no checksum; hardware signature 0, no wake vector, no global lock.
    let mut facs = RawFacs::new_zeroed();
    facs.signature = SIG_FACS;
    facs.length = U32::new(FACS_LEN as u32);
    facs.version = FACS_VERSION;
    out.put(layout.facs, facs.as_bytes())?;

    Ok(layout)
}

/// A table header for `signature`, with the checksum still zero.
fn header(cfg: &GuestAcpiConfig, signature: [u8; 4], len: usize, revision: u8) -> SdtHeader {
    let mut oem_table_id = [0u8; 8];
    oem_table_id[..4].copy_from_slice(&CREATOR_ID);
    oem_table_id[4..].copy_from_slice(&signature);
    SdtHeader {
        signature,
        // Every guest table is far below 4 GiB (MAX_GUEST_VCPUS bounds the MADT).
        length: U32::new(len as u32),
        revision,
        checksum: 0,
        oem_id: cfg.oem_id,
        oem_table_id,
        oem_revision: U32::new(OEM_REVISION),
        creator_id: CREATOR_ID,
        creator_revision: U32::new(CREATOR_REVISION),
    }
}

/// Sets a complete table's checksum byte so that it sums to zero.
fn seal(table: &mut [u8]) {
    table[SDT_CHECKSUM_OFFSET] = 0;
    table[SDT_CHECKSUM_OFFSET] = 0u8.wrapping_sub(checksum(table));
}

/// Allocates aligned, non-overlapping ranges upwards from `next`.
struct Cursor {
    next: u64,
}

impl Cursor {
    fn place(&mut self, len: usize, align: u64) -> Result<u64, AcpiError> {
        let at = self.next.checked_next_multiple_of(align).ok_or(AcpiError::AddressOverflow)?;
        self.next = at.checked_add(len as u64).ok_or(AcpiError::AddressOverflow)?;
        Ok(at)
    }
}

/// The output buffer, addressed by guest-physical address.
struct Out<'a> {
    buf: &'a mut [u8],
    base: u64,
}

impl Out<'_> {
    /// The `len` bytes at guest-physical `addr`.
    fn get(&mut self, addr: u64, len: usize) -> Result<&mut [u8], AcpiError> {
        let needed = self.buf.len();
        usize::try_from(addr - self.base)
            .ok()
            .and_then(|start| self.buf.get_mut(start..start.checked_add(len)?))
            .ok_or(AcpiError::BufferTooSmall { needed })
    }

    /// Copies `bytes` to guest-physical `addr` and returns the written range.
    fn put(&mut self, addr: u64, bytes: &[u8]) -> Result<&mut [u8], AcpiError> {
        let slot = self.get(addr, bytes.len())?;
        slot.copy_from_slice(bytes);
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeMem;
    use crate::*;
    use proptest::prelude::*;

    fn xen_apic_id(i: u32) -> u32 {
        2 * i
    }

    fn cfg(vcpus: u32) -> GuestAcpiConfig {
        GuestAcpiConfig { vcpus, lapic_base: 0xFEE0_0000, apic_id_of: xen_apic_id, oem_id: *b"KEEL  " }
    }

    /// Builds at `base` and returns the layout and the used bytes.
    fn build(cfg: &GuestAcpiConfig, base: u64) -> (GuestAcpiLayout, Vec<u8>) {
        let mut buf = vec![0xAAu8; 64 * 1024];
        let layout = build_guest_tables(cfg, base, &mut buf).unwrap();
        buf.truncate((layout.end - base) as usize);
        (layout, buf)
    }

    struct Parsed {
        tables: Tables,
        warnings: Vec<AcpiWarning>,
        madt: Madt,
        fadt: Fadt,
    }

    /// Parses built tables back with the host-side parser.
    fn parse_back(layout: &GuestAcpiLayout, base: u64, bytes: &[u8]) -> Parsed {
        let mut mem = FakeMem::new();
        mem.add(base, bytes.to_vec());
        let off = (layout.rsdp - base) as usize;
        let rsdp = parse_rsdp(&bytes[off..off + 36]).unwrap();
        assert_eq!(rsdp.revision, 2);
        assert_eq!(rsdp.rsdt, 0);
        assert_eq!(rsdp.xsdt, Some(layout.xsdt));
        let mut warnings = Vec::new();
        let tables = read_tables(&mem, &rsdp, &mut |w| warnings.push(w)).unwrap();
        let madt = parse_madt(&mem, tables.find(b"APIC").unwrap(), &mut |w| warnings.push(w));
        let fadt = parse_fadt(&mem, tables.find(b"FACP").unwrap()).unwrap();
        Parsed { tables, warnings, madt: madt.unwrap(), fadt }
    }

    #[test]
    fn round_trip_xen_like() {
        let base = 0xFC00_1000;
        let (layout, bytes) = build(&cfg(4), base);
        let p = parse_back(&layout, base, &bytes);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);

        assert_eq!(p.tables.root().phys, layout.xsdt);
        let found: Vec<_> = p.tables.iter().map(|t| (t.signature, t.phys)).collect();
        assert_eq!(
            found,
            [(*b"FACP", layout.fadt), (*b"APIC", layout.madt), (*b"DSDT", layout.dsdt), (*b"FACS", layout.facs),]
        );

        assert_eq!(p.madt.local_apic_addr, 0xFEE0_0000);
        assert!(p.madt.pcat_compat);
        assert_eq!(p.madt.ioapic_count, 0);
        assert_eq!(p.madt.override_count, 0);
        for (i, cpu) in p.madt.cpus().iter().enumerate() {
            let i = i as u32;
            assert_eq!(*cpu, Cpu { acpi_uid: i, apic_id: 2 * i, enabled: true, online_capable: false, x2apic: false });
        }
        assert_eq!(p.madt.cpu_count, 4);

        assert_eq!(p.fadt.revision, 5);
        assert!(p.fadt.hw_reduced);
        assert_eq!(p.fadt.flags, GUEST_FADT_FLAGS);
        assert_eq!(p.fadt.iapc_boot_arch, Fadt::IAPC_NO_VGA | Fadt::IAPC_NO_CMOS_RTC);
        assert_eq!(p.fadt.dsdt, layout.dsdt);
        assert_eq!(p.fadt.facs, layout.facs);
        assert_eq!(p.fadt.pm1a_evt, None);
        assert_eq!(p.fadt.pm1a_cnt, None);
        assert_eq!(p.fadt.pm_tmr, None);
        assert_eq!(p.fadt.reset_reg, None);
        assert_eq!(p.fadt.smi_cmd, 0);

        // Like Xen's PVH DSDT, there is no _S5_.
        let mut mem = FakeMem::new();
        mem.add(base, bytes.clone());
        let dsdt = p.tables.find(b"DSDT").unwrap();
        assert_eq!(find_s5(&mem, dsdt), Err(AcpiError::S5NotFound));
    }

    #[test]
    fn fadt_bytes_at_spec_offsets() {
        let base = 0x10_0000;
        let (layout, bytes) = build(&cfg(1), base);
        let f = &bytes[(layout.fadt - base) as usize..][..268];
        let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
        assert_eq!(&f[..4], b"FACP");
        assert_eq!(u32_at(4), 268);
        assert_eq!(f[8], 5);
        assert_eq!(u32_at(36), layout.facs as u32); // FIRMWARE_CTRL
        assert_eq!(u32_at(40), layout.dsdt as u32); // DSDT
        assert_eq!(u16_at(46), 9); // SCI_INT
        assert_eq!(u32_at(56), 0); // PM1a_EVT_BLK
        assert_eq!(u32_at(64), 0); // PM1a_CNT_BLK
        assert_eq!(u32_at(76), 0); // PM_TMR_BLK
        assert_eq!(u16_at(96), 0x0FFF);
        assert_eq!(u16_at(98), 0x0FFF);
        assert_eq!(u16_at(109), 0x24); // IAPC_BOOT_ARCH: NO_VGA | NO_CMOS_RTC
        assert_eq!(u32_at(112), 0x0010_8175); // flags
        assert_eq!(u64_at(132), 0); // X_FIRMWARE_CTRL: FIRMWARE_CTRL is used
        assert_eq!(u64_at(140), layout.dsdt); // X_DSDT
        assert!(f[148..268].iter().all(|&b| b == 0)); // no X_ blocks, no sleep registers
    }

    #[test]
    fn every_checksum_is_valid() {
        let base = 0x7_0000;
        let (layout, bytes) = build(&cfg(3), base);
        let at = |addr: u64| (addr - base) as usize;
        let rsdp = &bytes[at(layout.rsdp)..][..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(rsdp), 0);
        assert_eq!(u32::from_le_bytes(rsdp[20..24].try_into().unwrap()), 36);
        for addr in [layout.xsdt, layout.fadt, layout.madt, layout.dsdt] {
            let table = &bytes[at(addr)..];
            let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
            assert_eq!(checksum(&table[..len]), 0, "table at {addr:#x}");
            assert_eq!(&table[10..16], b"KEEL  ");
        }
        let facs = &bytes[at(layout.facs)..];
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(u32::from_le_bytes(facs[4..8].try_into().unwrap()), 64);
    }

    #[test]
    fn alignment_and_ordering_with_unaligned_base() {
        for base in [0x1000, 0x1003, 0x100F, 0x1039] {
            let (layout, bytes) = build(&cfg(2), base);
            assert_eq!(layout.rsdp % 16, 0);
            assert_eq!(layout.facs % 64, 0);
            for addr in [layout.xsdt, layout.fadt, layout.madt, layout.dsdt] {
                assert_eq!(addr % 8, 0);
            }
            assert!(base <= layout.rsdp);
            assert!(layout.rsdp + 36 <= layout.xsdt);
            assert!(layout.xsdt + 52 <= layout.fadt);
            assert!(layout.fadt + 268 <= layout.madt);
            assert!(layout.madt + 44 + 2 * 8 <= layout.dsdt);
            assert!(layout.dsdt + 36 <= layout.facs);
            assert_eq!(layout.facs + 64, layout.end);
            // Padding is zeroed, whatever the buffer held before.
            assert!(bytes[..(layout.rsdp - base) as usize].iter().all(|&b| b == 0));
            let p = parse_back(&layout, base, &bytes);
            assert!(p.warnings.is_empty());
        }
    }

    #[test]
    fn buffer_too_small() {
        let base = 0x2000;
        let (layout, _) = build(&cfg(8), base);
        let needed = (layout.end - base) as usize;
        let mut buf = vec![0x55u8; needed - 1];
        assert_eq!(build_guest_tables(&cfg(8), base, &mut buf), Err(AcpiError::BufferTooSmall { needed }));
        assert!(buf.iter().all(|&b| b == 0x55), "nothing written on error");
        assert_eq!(build_guest_tables(&cfg(8), base, &mut []), Err(AcpiError::BufferTooSmall { needed }));
        let mut exact = vec![0u8; needed + 3];
        assert_eq!(build_guest_tables(&cfg(8), base, &mut exact), Ok(layout));
        assert_eq!(exact[needed..], [0, 0, 0]);
    }

    #[test]
    fn invalid_configs() {
        let mut buf = vec![0u8; 4096];
        assert_eq!(build_guest_tables(&cfg(0), 0, &mut buf), Err(AcpiError::InvalidConfig));
        assert_eq!(build_guest_tables(&cfg(MAX_GUEST_VCPUS + 1), 0, &mut buf), Err(AcpiError::InvalidConfig));
        assert_eq!(build_guest_tables(&cfg(1), u64::MAX - 100, &mut buf), Err(AcpiError::AddressOverflow));
    }

    #[test]
    fn x2apic_entries_for_large_ids() {
        // APIC IDs 0, 2, … 254 fit a Local APIC entry; 256 and up need x2APIC.
        let base = 0xFC00_1000;
        let (layout, bytes) = build(&cfg(200), base);
        let madt_bytes = &bytes[(layout.madt - base) as usize..];
        assert_eq!(madt_bytes[8], 3, "MADT revision with x2APIC entries");
        let p = parse_back(&layout, base, &bytes);
        assert!(p.warnings.is_empty());
        assert_eq!(p.madt.cpu_count, 200);
        for (i, cpu) in p.madt.cpus().iter().enumerate() {
            let i = i as u32;
            assert_eq!(cpu.acpi_uid, i);
            assert_eq!(cpu.apic_id, 2 * i);
            assert!(cpu.enabled);
            assert_eq!(cpu.x2apic, 2 * i > 254, "vCPU {i}");
        }
        // Without x2APIC entries the revision is Xen's 2.
        let (layout, bytes) = build(&cfg(127), base);
        assert_eq!(bytes[(layout.madt - base) as usize + 8], 2);
    }

    #[test]
    fn large_uid_uses_x2apic() {
        fn identity_low(_: u32) -> u32 {
            1
        }
        let config = GuestAcpiConfig { vcpus: 256, apic_id_of: identity_low, ..cfg(1) };
        let (layout, bytes) = build(&config, 0x1000);
        let p = parse_back(&layout, 0x1000, &bytes);
        assert!(!p.madt.cpus()[254].x2apic);
        assert!(p.madt.cpus()[255].x2apic);
        assert_eq!(p.madt.cpus()[255].acpi_uid, 255);
    }

    #[test]
    fn tables_above_4g_use_64_bit_pointers() {
        let base = 0x1_0000_0000;
        let (layout, bytes) = build(&cfg(2), base);
        let f = &bytes[(layout.fadt - base) as usize..];
        assert_eq!(&f[36..44], [0; 8], "no 32-bit FACS/DSDT pointers above 4 GiB");
        let p = parse_back(&layout, base, &bytes);
        assert_eq!(p.fadt.facs, layout.facs);
        assert_eq!(p.fadt.dsdt, layout.dsdt);
        assert_eq!(p.tables.find(b"FACS").unwrap().phys, layout.facs);
    }

    #[test]
    fn legacy_scan_finds_tables_built_in_bios_area() {
        let base = 0xE_0000;
        let (layout, bytes) = build(&cfg(2), base);
        let mut mem = FakeMem::new();
        let mut area = vec![0u8; 0x2_0000];
        area[..bytes.len()].copy_from_slice(&bytes);
        mem.add(base, area);
        assert_eq!(find_rsdp_bios(&mem), Some(layout.rsdp));
    }

    proptest! {
        #[test]
        fn build_then_parse(
            vcpus in 1u32..300,
            base in 0u64..(1 << 40),
            len in 0usize..8192,
            stride in 1u32..4,
        ) {
            let config = GuestAcpiConfig {
                apic_id_of: match stride { 1 => |i| i, 2 => |i| 2 * i, _ => |i| 3 * i + 1 },
                ..cfg(vcpus)
            };
            let mut buf = vec![0xEEu8; len];
            match build_guest_tables(&config, base, &mut buf) {
                Ok(layout) => {
                    let used = (layout.end - base) as usize;
                    prop_assert!(used <= len);
                    let p = parse_back(&layout, base, &buf[..used]);
                    if vcpus as usize <= MAX_CPUS {
                        prop_assert!(p.warnings.is_empty());
                    } else {
                        // More vCPUs than the host-side parser keeps.
                        prop_assert_eq!(p.warnings, [AcpiWarning::MadtListFull { entry_type: 9 }]);
                    }
                    prop_assert_eq!(p.madt.cpu_count, vcpus.min(MAX_CPUS as u32) as usize);
                    for (i, cpu) in p.madt.cpus().iter().enumerate() {
                        prop_assert_eq!(cpu.apic_id, (config.apic_id_of)(i as u32));
                        prop_assert_eq!(cpu.acpi_uid, i as u32);
                    }
                }
                Err(AcpiError::BufferTooSmall { needed }) => prop_assert!(needed > len),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
