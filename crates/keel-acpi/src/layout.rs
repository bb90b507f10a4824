//! Byte layouts of the ACPI structures this crate reads and writes (ACPI 6.5, chapter 5).
//!
//! All fields are little-endian and unaligned (`zerocopy` byte-order types), so a layout can be
//! read from, or written to, any byte offset. Sizes and the offsets that matter are checked at
//! compile time against the specification.

use core::mem::{offset_of, size_of};

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `"RSD PTR "`.
pub(crate) const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// Bytes covered by the ACPI 1.0 RSDP checksum.
pub(crate) const RSDP_V1_LEN: usize = 20;
/// Size of the ACPI 2.0+ RSDP, covered by the extended checksum.
pub(crate) const RSDP_V2_LEN: usize = 36;

pub(crate) const SIG_XSDT: [u8; 4] = *b"XSDT";
pub(crate) const SIG_RSDT: [u8; 4] = *b"RSDT";
pub(crate) const SIG_FADT: [u8; 4] = *b"FACP";
pub(crate) const SIG_MADT: [u8; 4] = *b"APIC";
pub(crate) const SIG_DSDT: [u8; 4] = *b"DSDT";
pub(crate) const SIG_SSDT: [u8; 4] = *b"SSDT";
pub(crate) const SIG_FACS: [u8; 4] = *b"FACS";

/// Root System Description Pointer (ACPI 2.0+ form; ACPI 1.0 uses the first 20 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawRsdp {
    pub signature: [u8; 8],
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt: U32,
    pub length: U32,
    pub xsdt: U64,
    pub ext_checksum: u8,
    pub reserved: [u8; 3],
}

/// The header every System Description Table starts with.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct SdtHeader {
    pub signature: [u8; 4],
    pub length: U32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: U32,
    pub creator_id: [u8; 4],
    pub creator_revision: U32,
}

/// Size of [`SdtHeader`].
pub(crate) const SDT_HEADER_LEN: usize = size_of::<SdtHeader>();
/// Offset of the checksum byte in [`SdtHeader`].
pub(crate) const SDT_CHECKSUM_OFFSET: usize = offset_of!(SdtHeader, checksum);

/// Generic Address Structure.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawGas {
    pub space_id: u8,
    pub bit_width: u8,
    pub bit_offset: u8,
    pub access_size: u8,
    pub address: U64,
}

/// Fixed ACPI Description Table, up to the ACPI 6.0 hypervisor vendor identity (276 bytes).
/// Shorter, older FADTs are read into a zeroed copy of this.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawFadt {
    pub header: SdtHeader,
    pub firmware_ctrl: U32,
    pub dsdt: U32,
    pub reserved0: u8,
    pub preferred_pm_profile: u8,
    pub sci_int: U16,
    pub smi_cmd: U32,
    pub acpi_enable: u8,
    pub acpi_disable: u8,
    pub s4bios_req: u8,
    pub pstate_cnt: u8,
    pub pm1a_evt_blk: U32,
    pub pm1b_evt_blk: U32,
    pub pm1a_cnt_blk: U32,
    pub pm1b_cnt_blk: U32,
    pub pm2_cnt_blk: U32,
    pub pm_tmr_blk: U32,
    pub gpe0_blk: U32,
    pub gpe1_blk: U32,
    pub pm1_evt_len: u8,
    pub pm1_cnt_len: u8,
    pub pm2_cnt_len: u8,
    pub pm_tmr_len: u8,
    pub gpe0_blk_len: u8,
    pub gpe1_blk_len: u8,
    pub gpe1_base: u8,
    pub cst_cnt: u8,
    pub p_lvl2_lat: U16,
    pub p_lvl3_lat: U16,
    pub flush_size: U16,
    pub flush_stride: U16,
    pub duty_offset: u8,
    pub duty_width: u8,
    pub day_alrm: u8,
    pub mon_alrm: u8,
    pub century: u8,
    pub iapc_boot_arch: U16,
    pub reserved1: u8,
    pub flags: U32,
    pub reset_reg: RawGas,
    pub reset_value: u8,
    pub arm_boot_arch: U16,
    pub minor_version: u8,
    pub x_firmware_ctrl: U64,
    pub x_dsdt: U64,
    pub x_pm1a_evt_blk: RawGas,
    pub x_pm1b_evt_blk: RawGas,
    pub x_pm1a_cnt_blk: RawGas,
    pub x_pm1b_cnt_blk: RawGas,
    pub x_pm2_cnt_blk: RawGas,
    pub x_pm_tmr_blk: RawGas,
    pub x_gpe0_blk: RawGas,
    pub x_gpe1_blk: RawGas,
    pub sleep_control_reg: RawGas,
    pub sleep_status_reg: RawGas,
    pub hypervisor_vendor_id: U64,
}

/// Length of an ACPI 1.0 (revision 1) FADT: everything up to and including `flags`.
pub(crate) const FADT_V1_LEN: usize = offset_of!(RawFadt, reset_reg);
/// Length of an ACPI 5.0 (revision 5) FADT: up to and including `sleep_status_reg`.
pub(crate) const FADT_V5_LEN: usize = offset_of!(RawFadt, hypervisor_vendor_id);

/// The fixed part of the Multiple APIC Description Table.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawMadtHeader {
    pub header: SdtHeader,
    pub local_apic_addr: U32,
    pub flags: U32,
}

/// Size of [`RawMadtHeader`]; interrupt controller entries follow.
pub(crate) const MADT_HEADER_LEN: usize = size_of::<RawMadtHeader>();

/// MADT entry type 0: Processor Local APIC.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawLocalApic {
    pub entry_type: u8,
    pub length: u8,
    pub acpi_uid: u8,
    pub apic_id: u8,
    pub flags: U32,
}

/// MADT entry type 1: I/O APIC.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawIoApic {
    pub entry_type: u8,
    pub length: u8,
    pub id: u8,
    pub reserved: u8,
    pub addr: U32,
    pub gsi_base: U32,
}

/// MADT entry type 2: Interrupt Source Override.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawIntOverride {
    pub entry_type: u8,
    pub length: u8,
    pub bus: u8,
    pub source: u8,
    pub gsi: U32,
    pub flags: U16,
}

/// MADT entry type 5: Local APIC Address Override.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawLapicOverride {
    pub entry_type: u8,
    pub length: u8,
    pub reserved: U16,
    pub addr: U64,
}

/// MADT entry type 9: Processor Local x2APIC.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawX2Apic {
    pub entry_type: u8,
    pub length: u8,
    pub reserved: U16,
    pub x2apic_id: U32,
    pub flags: U32,
    pub acpi_uid: U32,
}

pub(crate) const MADT_LOCAL_APIC: u8 = 0;
pub(crate) const MADT_IO_APIC: u8 = 1;
pub(crate) const MADT_INT_OVERRIDE: u8 = 2;
pub(crate) const MADT_LOCAL_APIC_NMI: u8 = 4;
pub(crate) const MADT_LAPIC_OVERRIDE: u8 = 5;
pub(crate) const MADT_X2APIC: u8 = 9;
pub(crate) const MADT_X2APIC_NMI: u8 = 0xA;

/// Firmware ACPI Control Structure (version 2 and later; 64 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawFacs {
    pub signature: [u8; 4],
    pub length: U32,
    pub hardware_signature: U32,
    pub firmware_waking_vector: U32,
    pub global_lock: U32,
    pub flags: U32,
    pub x_firmware_waking_vector: U64,
    pub version: u8,
    pub reserved: [u8; 3],
    pub ospm_flags: U32,
    pub reserved2: [u8; 24],
}

/// Size of [`RawFacs`], also the minimum valid FACS length.
pub(crate) const FACS_LEN: usize = size_of::<RawFacs>();

// Compile-time checks against the specification's tables.
const _: () = {
    assert!(size_of::<RawRsdp>() == RSDP_V2_LEN);
    assert!(offset_of!(RawRsdp, length) == RSDP_V1_LEN);
    assert!(SDT_HEADER_LEN == 36);
    assert!(size_of::<RawGas>() == 12);
    assert!(offset_of!(RawFadt, sci_int) == 46);
    assert!(offset_of!(RawFadt, pm1a_evt_blk) == 56);
    assert!(offset_of!(RawFadt, pm_tmr_len) == 91);
    assert!(offset_of!(RawFadt, iapc_boot_arch) == 109);
    assert!(offset_of!(RawFadt, flags) == 112);
    assert!(FADT_V1_LEN == 116);
    assert!(offset_of!(RawFadt, reset_value) == 128);
    assert!(offset_of!(RawFadt, x_firmware_ctrl) == 132);
    assert!(offset_of!(RawFadt, x_dsdt) == 140);
    assert!(offset_of!(RawFadt, x_pm1a_evt_blk) == 148);
    assert!(offset_of!(RawFadt, x_pm_tmr_blk) == 208);
    assert!(offset_of!(RawFadt, sleep_control_reg) == 244);
    assert!(FADT_V5_LEN == 268);
    assert!(size_of::<RawFadt>() == 276);
    assert!(MADT_HEADER_LEN == 44);
    assert!(size_of::<RawLocalApic>() == 8);
    assert!(size_of::<RawIoApic>() == 12);
    assert!(size_of::<RawIntOverride>() == 10);
    assert!(size_of::<RawLapicOverride>() == 12);
    assert!(size_of::<RawX2Apic>() == 16);
    assert!(FACS_LEN == 64);
};
