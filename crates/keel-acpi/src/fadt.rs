//! The FADT ("FACP"): fixed hardware registers keel uses to enable ACPI, power off and reset
//! the host, and the pointers to the DSDT and FACS.
//!
//! FADTs come in every size from the 116-byte ACPI 1.0 layout up. Like ACPICA, field presence is
//! decided by the table's length (firmware revision numbers are unreliable): the table is copied
//! into a zeroed full-size layout, and each 64-bit `X_` register block is preferred when it is
//! present and non-zero, falling back to the 32-bit legacy I/O port block otherwise.

use core::mem::offset_of;

use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{RawFadt, RawGas, FADT_V1_LEN, SIG_FADT};
use crate::mem::open_table;
use crate::{AcpiError, PhysMemory, TableRef};

/// The address space of a [`Gas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpace {
    /// Memory-mapped registers.
    SystemMemory,
    /// I/O ports.
    SystemIo,
    /// PCI configuration space (segment 0; bus 0 device/function/offset encoded in the address).
    PciConfig,
    /// Anything else (embedded controller, SMBus, functional fixed hardware, …).
    Other(u8),
}

impl AddressSpace {
    fn from_id(id: u8) -> Self {
        match id {
            0 => Self::SystemMemory,
            1 => Self::SystemIo,
            2 => Self::PciConfig,
            other => Self::Other(other),
        }
    }
}

/// A Generic Address Structure: where a register lives and how wide it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gas {
    /// Address space of `address`.
    pub space: AddressSpace,
    /// Register width in bits.
    pub bit_width: u8,
    /// Bit offset of the register at `address`.
    pub bit_offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    /// Address within `space`.
    pub address: u64,
}

impl Gas {
    fn from_raw(raw: &RawGas) -> Self {
        Self {
            space: AddressSpace::from_id(raw.space_id),
            bit_width: raw.bit_width,
            bit_offset: raw.bit_offset,
            access_size: raw.access_size,
            address: raw.address.get(),
        }
    }

    /// A legacy FADT I/O port block of `len` bytes at `port`, if `port` is non-zero.
    fn legacy_io(port: u32, len: u8) -> Option<Self> {
        (port != 0).then_some(Self {
            space: AddressSpace::SystemIo,
            bit_width: len.saturating_mul(8),
            bit_offset: 0,
            access_size: 0,
            address: u64::from(port),
        })
    }
}

/// What keel needs from the FADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fadt {
    /// Table revision (1 for ACPI 1.0, 3 for 2.0/3.0, 4, 5, 6).
    pub revision: u8,
    /// Fixed feature flags; see the associated constants.
    pub flags: u32,
    /// The SCI's interrupt (an ISA IRQ, or a GSI on systems without 8259s).
    pub sci_int: u16,
    /// I/O port to which `acpi_enable` is written to switch to ACPI mode; 0 if always in ACPI mode.
    pub smi_cmd: u32,
    /// Value that switches to ACPI mode.
    pub acpi_enable: u8,
    /// PM1a event register block.
    pub pm1a_evt: Option<Gas>,
    /// PM1a control register block (SLP_TYPa and SLP_EN for S5).
    pub pm1a_cnt: Option<Gas>,
    /// PM1b control register block, if the system has one.
    pub pm1b_cnt: Option<Gas>,
    /// ACPI PM timer.
    pub pm_tmr: Option<Gas>,
    /// Reset register: only if the FADT has one and sets [`Fadt::RESET_REG_SUP`].
    pub reset_reg: Option<Gas>,
    /// Value to write to `reset_reg`.
    pub reset_value: u8,
    /// IA-PC boot architecture flags (FADT revision 2+; reserved, normally 0, in ACPI 1.0
    /// tables). See the `IAPC_*` constants.
    pub iapc_boot_arch: u16,
    /// Physical address of the DSDT (`X_DSDT` if non-zero, else `DSDT`), or 0.
    pub dsdt: u64,
    /// Physical address of the FACS (`X_FIRMWARE_CTRL` if non-zero, else `FIRMWARE_CTRL`), or 0.
    pub facs: u64,
    /// [`Fadt::HW_REDUCED_ACPI`] is set: no fixed hardware, no SCI, no PM1 blocks.
    pub hw_reduced: bool,
    /// Sleep control register (ACPI 5.0+, used for S5 instead of PM1 on HW-reduced systems).
    pub sleep_control_reg: Option<Gas>,
}

impl Fadt {
    /// Flag: WBINVD works.
    pub const WBINVD: u32 = 1 << 0;
    /// Flag: C1 is supported on all processors.
    pub const PROC_C1: u32 = 1 << 2;
    /// Flag: the power button is a control-method device, not fixed hardware (or absent).
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// Flag: the sleep button is a control-method device, not fixed hardware (or absent).
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// Flag: the RTC wake status is not in the fixed register space.
    pub const FIX_RTC: u32 = 1 << 6;
    /// Flag: the PM timer is 32 bits wide.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// Flag: the reset register is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// Flag: OSPM should use a platform clock, not the PM timer, for timekeeping.
    pub const USE_PLATFORM_CLOCK: u32 = 1 << 15;
    /// Flag: hardware-reduced ACPI (ACPI 5.0+).
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;

    /// Boot architecture: there are legacy (LPC/ISA) devices.
    pub const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
    /// Boot architecture: an 8042 keyboard controller is present.
    pub const IAPC_8042: u16 = 1 << 1;
    /// Boot architecture: VGA must not be probed.
    pub const IAPC_NO_VGA: u16 = 1 << 2;
    /// Boot architecture: there is no CMOS RTC.
    pub const IAPC_NO_CMOS_RTC: u16 = 1 << 5;
}

/// Parses the FADT `table` (as listed by [`read_tables`](crate::read_tables)).
///
/// # Errors
/// If the table is unreadable, has the wrong signature or a bad checksum, its length differs
/// from `table.length`, or it is shorter than the 116-byte ACPI 1.0 layout.
pub fn parse_fadt(mem: &dyn PhysMemory, table: TableRef) -> Result<Fadt, AcpiError> {
    let reader = open_table(mem, table, &[SIG_FADT], FADT_V1_LEN)?;
    let mut raw = RawFadt::new_zeroed();
    let len = (reader.len() as usize).min(size_of_val(&raw));
    reader.read(0, &mut raw.as_mut_bytes()[..len])?;
    // Whether the field ending at `end` lies within the table.
    let has = |end: usize| len >= end;
    macro_rules! field_end {
        ($field:ident) => {
            offset_of!(RawFadt, $field) + size_of_val(&raw.$field)
        };
    }
    // Prefer the X_ block if present and non-zero, else the legacy I/O port block.
    let block = |x: &RawGas, x_end: usize, port: u32, port_len: u8| {
        if has(x_end) && x.address.get() != 0 {
            Some(Gas::from_raw(x))
        } else {
            Gas::legacy_io(port, port_len)
        }
    };

    let flags = raw.flags.get();
    let x_or = |x: u64, x_end: usize, legacy: u32| {
        if has(x_end) && x != 0 {
            x
        } else {
            u64::from(legacy)
        }
    };
    Ok(Fadt {
        revision: raw.header.revision,
        flags,
        sci_int: raw.sci_int.get(),
        smi_cmd: raw.smi_cmd.get(),
        acpi_enable: raw.acpi_enable,
        pm1a_evt: block(&raw.x_pm1a_evt_blk, field_end!(x_pm1a_evt_blk), raw.pm1a_evt_blk.get(), raw.pm1_evt_len),
        pm1a_cnt: block(&raw.x_pm1a_cnt_blk, field_end!(x_pm1a_cnt_blk), raw.pm1a_cnt_blk.get(), raw.pm1_cnt_len),
        pm1b_cnt: block(&raw.x_pm1b_cnt_blk, field_end!(x_pm1b_cnt_blk), raw.pm1b_cnt_blk.get(), raw.pm1_cnt_len),
        pm_tmr: block(&raw.x_pm_tmr_blk, field_end!(x_pm_tmr_blk), raw.pm_tmr_blk.get(), raw.pm_tmr_len),
        reset_reg: (flags & Fadt::RESET_REG_SUP != 0
            && has(field_end!(reset_value))
            && raw.reset_reg.address.get() != 0)
            .then(|| Gas::from_raw(&raw.reset_reg)),
        reset_value: raw.reset_value,
        iapc_boot_arch: raw.iapc_boot_arch.get(),
        dsdt: x_or(raw.x_dsdt.get(), field_end!(x_dsdt), raw.dsdt.get()),
        facs: x_or(raw.x_firmware_ctrl.get(), field_end!(x_firmware_ctrl), raw.firmware_ctrl.get()),
        hw_reduced: flags & Fadt::HW_REDUCED_ACPI != 0,
        sleep_control_reg: (has(field_end!(sleep_control_reg)) && raw.sleep_control_reg.address.get() != 0)
            .then(|| Gas::from_raw(&raw.sleep_control_reg)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    const AT: u64 = 0x9000;

    fn parse(image: &[u8]) -> Result<Fadt, AcpiError> {
        let mut mem = FakeMem::new();
        mem.add(AT, image.to_vec());
        parse_fadt(&mem, TableRef { signature: *b"FACP", phys: AT, length: image.len() as u32 })
    }

    fn io(address: u64, bit_width: u8) -> Gas {
        Gas { space: AddressSpace::SystemIo, bit_width, bit_offset: 0, access_size: 0, address }
    }

    #[test]
    fn revision_1_uses_legacy_blocks() {
        let fadt = parse(&fadt_v1(FadtSpec {
            dsdt: 0x7FE0_0000,
            facs: 0x7FE1_0000,
            sci_int: 9,
            smi_cmd: 0xB2,
            acpi_enable: 0xF1,
            pm1a_evt: 0x600,
            pm1a_cnt: 0x604,
            pm_tmr: 0x608,
            // Set but meaningless: a 116-byte FADT has no reset register.
            flags: Fadt::RESET_REG_SUP | Fadt::WBINVD,
            ..FadtSpec::default()
        }))
        .unwrap();
        assert_eq!(fadt.revision, 1);
        assert_eq!(fadt.sci_int, 9);
        assert_eq!(fadt.smi_cmd, 0xB2);
        assert_eq!(fadt.acpi_enable, 0xF1);
        assert_eq!(fadt.pm1a_evt, Some(io(0x600, 32)));
        assert_eq!(fadt.pm1a_cnt, Some(io(0x604, 16)));
        assert_eq!(fadt.pm1b_cnt, None);
        assert_eq!(fadt.pm_tmr, Some(io(0x608, 32)));
        assert_eq!(fadt.reset_reg, None);
        assert_eq!(fadt.dsdt, 0x7FE0_0000);
        assert_eq!(fadt.facs, 0x7FE1_0000);
        assert!(!fadt.hw_reduced);
        assert_eq!(fadt.sleep_control_reg, None);
    }

    #[test]
    fn revision_5_with_only_legacy_fields() {
        let fadt = parse(&fadt_v5(FadtSpec {
            dsdt: 0x7FE0_0000,
            facs: 0x7FE1_0000,
            pm1a_cnt: 0x1804,
            pm1b_cnt: 0x1904,
            iapc_boot_arch: Fadt::IAPC_LEGACY_DEVICES | Fadt::IAPC_8042,
            ..FadtSpec::default()
        }))
        .unwrap();
        assert_eq!(fadt.revision, 5);
        assert_eq!(fadt.pm1a_cnt, Some(io(0x1804, 16)));
        assert_eq!(fadt.pm1b_cnt, Some(io(0x1904, 16)));
        assert_eq!(fadt.iapc_boot_arch, 3);
        assert_eq!(fadt.dsdt, 0x7FE0_0000);
        assert_eq!(fadt.facs, 0x7FE1_0000);
    }

    #[test]
    fn x_fields_are_preferred() {
        let mem_gas = Gas {
            space: AddressSpace::SystemMemory,
            bit_width: 32,
            bit_offset: 0,
            access_size: 3,
            address: 0xFED8_0804,
        };
        let fadt = parse(&fadt_v5(FadtSpec {
            dsdt: 0x7FE0_0000,
            x_dsdt: 0x1_2000_0000,
            facs: 0x7FE1_0000,
            x_facs: 0x1_2001_0000,
            pm1a_cnt: 0x604,
            x_pm1a_cnt: Some(mem_gas),
            pm_tmr: 0x608,
            // Present but zero: the legacy block is used.
            x_pm_tmr: Some(Gas { address: 0, ..mem_gas }),
            ..FadtSpec::default()
        }))
        .unwrap();
        assert_eq!(fadt.pm1a_cnt, Some(mem_gas));
        assert_eq!(fadt.pm_tmr, Some(io(0x608, 32)));
        assert_eq!(fadt.dsdt, 0x1_2000_0000);
        assert_eq!(fadt.facs, 0x1_2001_0000);
    }

    #[test]
    fn x_fields_beyond_a_short_table_are_ignored() {
        // A 144-byte FADT has X_FIRMWARE_CTRL but only half of X_DSDT: that half must not be
        // read as an address, nor the bytes after the table's end.
        let mut image = fadt_v5(FadtSpec {
            dsdt: 0x7FE0_0000,
            facs: 0x7FE1_0000,
            x_facs: 0x1_0000_0000,
            x_dsdt: 0x1_2000_0000,
            ..FadtSpec::default()
        });
        image.truncate(144);
        fix_sdt(&mut image);
        let mut mem = FakeMem::new();
        let mut region = image.clone();
        region.extend_from_slice(&[0xFF; 64]);
        mem.add(AT, region);
        let fadt = parse_fadt(&mem, TableRef { signature: *b"FACP", phys: AT, length: 144 }).unwrap();
        assert_eq!(fadt.facs, 0x1_0000_0000);
        assert_eq!(fadt.dsdt, 0x7FE0_0000);
    }

    #[test]
    fn reset_register_absent_and_present() {
        let reset = Gas { space: AddressSpace::SystemIo, bit_width: 8, bit_offset: 0, access_size: 1, address: 0xCF9 };
        let with = |flags| parse(&fadt_v5(FadtSpec { flags, reset: Some((reset, 6)), ..FadtSpec::default() })).unwrap();
        let present = with(Fadt::RESET_REG_SUP);
        assert_eq!(present.reset_reg, Some(reset));
        assert_eq!(present.reset_value, 6);
        // Filled in but not advertised (as Xen does): absent.
        assert_eq!(with(0).reset_reg, None);
        // Advertised but zero address: absent.
        let zero = parse(&fadt_v5(FadtSpec { flags: Fadt::RESET_REG_SUP, ..FadtSpec::default() })).unwrap();
        assert_eq!(zero.reset_reg, None);
    }

    #[test]
    fn hw_reduced_and_sleep_control() {
        let sleep = Gas {
            space: AddressSpace::SystemMemory,
            bit_width: 8,
            bit_offset: 0,
            access_size: 1,
            address: 0xFE00_0100,
        };
        let fadt = parse(&fadt_v5(FadtSpec {
            flags: Fadt::HW_REDUCED_ACPI,
            sleep_control: Some(sleep),
            ..FadtSpec::default()
        }))
        .unwrap();
        assert!(fadt.hw_reduced);
        assert_eq!(fadt.sleep_control_reg, Some(sleep));
        assert_eq!(fadt.pm1a_cnt, None);
    }

    #[test]
    fn other_address_spaces() {
        let mut gas = io(0x10, 8);
        for (id, space) in
            [(2, AddressSpace::PciConfig), (3, AddressSpace::Other(3)), (0x7F, AddressSpace::Other(0x7F))]
        {
            gas.space = space;
            let image = fadt_v5(FadtSpec { x_pm1a_cnt: Some(gas), ..FadtSpec::default() });
            assert_eq!(image[172], id);
            assert_eq!(parse(&image).unwrap().pm1a_cnt.unwrap().space, space);
        }
    }

    #[test]
    fn long_fadt_is_accepted() {
        // ACPI 6.x FADTs are 276 bytes; a future one may be longer still.
        let mut image = fadt_v5(FadtSpec::default());
        image.resize(300, 0);
        image[8] = 7;
        fix_sdt(&mut image);
        assert_eq!(parse(&image).unwrap().revision, 7);
    }

    #[test]
    fn short_or_corrupt_fadt_is_an_error() {
        let mut image = fadt_v1(FadtSpec::default());
        image.truncate(112);
        fix_sdt(&mut image);
        assert_eq!(parse(&image), Err(AcpiError::BadLength { length: 112 }));

        let mut bad = fadt_v1(FadtSpec::default());
        bad[50] ^= 1;
        assert_eq!(parse(&bad), Err(AcpiError::BadChecksum));

        let madt_image = madt(0xFEE0_0000, 0, &[]);
        assert_eq!(parse(&madt_image), Err(AcpiError::BadSignature));
    }

    proptest! {
        #[test]
        fn random_fadt_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let image = sdt(b"FACP", body.first().copied().unwrap_or(0), &body);
            let _ = parse(&image);
        }
    }
}
