//! The local APIC register file: where each register lives (xAPIC MMIO offset
//! and its x2APIC MSR alias) and the bits keel gives meaning to.
//!
//! Both access paths decode into one crate-private register enum, so the
//! xAPIC and x2APIC interfaces share a single register model and differ only
//! in their access rules, which live beside the state machine in
//! [`crate::vlapic`]. The numbers are architectural (Intel SDM vol. 3 §11.4.1 table 11-1 and
//! §11.12.1.2 table 11-6; AMD APM vol. 2 §16.3).

/// `IA32_APIC_BASE` MSR index.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// First MSR of the x2APIC range (`0x800 + xAPIC offset / 16`).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last MSR of the x2APIC range.
pub const MSR_X2APIC_LAST: u32 = 0x8FF;

/// Guest-physical address of the xAPIC MMIO window. keel never moves it: an
/// `IA32_APIC_BASE` write that enables xAPIC mode elsewhere raises #GP, as on Xen.
pub const XAPIC_BASE: u64 = 0xFEE0_0000;
/// Size of the xAPIC MMIO window.
pub const XAPIC_SIZE: u64 = 0x1000;

/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor.
pub const BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode (EXTD).
pub const BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: the APIC is enabled (EN).
pub const BASE_EN: u64 = 1 << 11;
/// `IA32_APIC_BASE` bits 51:12: the xAPIC window address. keel assumes a
/// 52-bit physical address width, as Xen does; higher bits are reserved.
pub const BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Version register value: version `0x14` (integrated APIC), max LVT entry 5
/// (six LVTs: timer, thermal, performance, LINT0, LINT1, error), no EOI
/// broadcast suppression. Xen's `VLAPIC_VERSION`.
pub const VERSION: u32 = 0x0005_0014;

/// xAPIC register offsets within the MMIO window.
pub mod offset {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority (TPR).
    pub const TPR: u32 = 0x080;
    /// Arbitration priority (APR), xAPIC only.
    pub const APR: u32 = 0x090;
    /// Processor priority (PPR).
    pub const PPR: u32 = 0x0A0;
    /// End of interrupt.
    pub const EOI: u32 = 0x0B0;
    /// Remote read (RRD), xAPIC only.
    pub const RRD: u32 = 0x0C0;
    /// Logical destination (LDR).
    pub const LDR: u32 = 0x0D0;
    /// Destination format (DFR), xAPIC only.
    pub const DFR: u32 = 0x0E0;
    /// Spurious interrupt vector (SVR).
    pub const SVR: u32 = 0x0F0;
    /// In-service register, first of eight 32-bit words.
    pub const ISR: u32 = 0x100;
    /// Trigger mode register, first of eight 32-bit words.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register, first of eight 32-bit words.
    pub const IRR: u32 = 0x200;
    /// Error status (ESR).
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half (writing it sends the IPI in xAPIC mode).
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (destination in bits 31:24), xAPIC only.
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance counter.
    pub const LVT_PERF: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
    /// Self IPI, x2APIC only (MSR `0x83F`).
    pub const SELF_IPI: u32 = 0x3F0;
}

/// The x2APIC MSR that aliases xAPIC register `offset` (a multiple of 16).
pub const fn x2apic_msr(offset: u32) -> u32 {
    MSR_X2APIC_FIRST + offset / 16
}

/// Spurious-interrupt vector register: APIC software enable (bit 8).
pub(crate) const SVR_ENABLE: u32 = 1 << 8;
/// SVR bits that exist: vector (7:0), software enable (8) and focus
/// processor checking (9). EOI-broadcast suppression (12) is not offered.
pub(crate) const SVR_VALID: u32 = 0x3FF;
/// SVR after reset and INIT: vector 0xFF, software-disabled.
pub(crate) const SVR_RESET: u32 = 0xFF;

/// DFR bits software can change (the model, 31:28); the rest read as ones.
pub(crate) const DFR_MODEL_MASK: u32 = 0xF000_0000;
/// DFR after reset: the flat model.
pub(crate) const DFR_FLAT: u32 = 0xFFFF_FFFF;
/// DFR model field value of the cluster model.
pub(crate) const DFR_CLUSTER: u32 = 0x0FFF_FFFF;
/// xAPIC LDR bits that exist: the 8-bit logical ID in 31:24.
pub(crate) const LDR_XAPIC_MASK: u32 = 0xFF00_0000;

/// ESR bit 5: this APIC tried to send an IPI with an illegal vector.
pub(crate) const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: this APIC received (or its LVT raised) an illegal vector.
pub(crate) const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// ICR / LVT vector field.
pub(crate) const VECTOR_MASK: u32 = 0xFF;
/// ICR / LVT delivery mode field (10:8).
pub(crate) const DELIVERY_MODE_MASK: u32 = 0x700;
/// ICR destination mode (bit 11): logical.
pub(crate) const ICR_DEST_LOGICAL: u32 = 1 << 11;
/// ICR / LVT delivery status (bit 12). keel delivers at once, so it reads 0.
pub(crate) const DELIVERY_STATUS: u32 = 1 << 12;
/// ICR level (bit 14): assert.
pub(crate) const ICR_ASSERT: u32 = 1 << 14;
/// ICR / LVT trigger mode (bit 15): level.
pub(crate) const TRIGGER_LEVEL: u32 = 1 << 15;
/// ICR destination shorthand (19:18).
pub(crate) const ICR_SHORTHAND_MASK: u32 = 3 << 18;
/// ICR bits that exist (low half); the rest are reserved.
pub(crate) const ICR_VALID: u32 =
    VECTOR_MASK | DELIVERY_MODE_MASK | ICR_DEST_LOGICAL | ICR_ASSERT | TRIGGER_LEVEL | ICR_SHORTHAND_MASK;
/// xAPIC ICR high half: the destination field (31:24).
pub(crate) const ICR_HIGH_XAPIC_MASK: u32 = 0xFF00_0000;

/// LVT mask bit (16).
pub(crate) const LVT_MASKED: u32 = 1 << 16;
/// LVT input pin polarity (13), LINT0/LINT1 only.
pub(crate) const LVT_POLARITY: u32 = 1 << 13;
/// LVT remote IRR (14, read-only), LINT0/LINT1 only.
pub(crate) const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT timer mode bit 17: periodic. Bit 18 (TSC-deadline) is reserved
/// because keel does not offer TSC-deadline mode.
pub(crate) const LVT_TIMER_PERIODIC: u32 = 1 << 17;

/// Timer divide configuration bits that exist (0, 1 and 3).
pub(crate) const DIVIDE_VALID: u32 = 0xB;

/// One of the six local vector table entries.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) enum Lvt {
    Timer,
    Thermal,
    Perf,
    Lint0,
    Lint1,
    Error,
}

impl Lvt {
    /// Number of LVT entries (max LVT entry 5 in [`VERSION`]).
    pub(crate) const COUNT: usize = 6;

    /// Index into the LVT array, in register order.
    pub(crate) const fn index(self) -> usize {
        match self {
            Lvt::Timer => 0,
            Lvt::Thermal => 1,
            Lvt::Perf => 2,
            Lvt::Lint0 => 3,
            Lvt::Lint1 => 4,
            Lvt::Error => 5,
        }
    }

    /// Bits software can set in this entry.
    pub(crate) const fn writable(self) -> u32 {
        let base = VECTOR_MASK | LVT_MASKED;
        match self {
            Lvt::Timer => base | LVT_TIMER_PERIODIC,
            Lvt::Thermal | Lvt::Perf => base | DELIVERY_MODE_MASK,
            Lvt::Lint0 | Lvt::Lint1 => base | DELIVERY_MODE_MASK | LVT_POLARITY | TRIGGER_LEVEL,
            Lvt::Error => base,
        }
    }

    /// Read-only bits that exist in this entry: writing them is not an
    /// error, the value written is just dropped.
    pub(crate) const fn read_only(self) -> u32 {
        match self {
            Lvt::Lint0 | Lvt::Lint1 => DELIVERY_STATUS | LVT_REMOTE_IRR,
            _ => DELIVERY_STATUS,
        }
    }
}

/// A local APIC register, decoded from an xAPIC offset or an x2APIC MSR.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) enum Reg {
    Id,
    Version,
    Tpr,
    Apr,
    Ppr,
    Eoi,
    Rrd,
    Ldr,
    Dfr,
    Svr,
    /// ISR word `0..8` (vectors `32 * n ..`).
    Isr(usize),
    /// TMR word `0..8`.
    Tmr(usize),
    /// IRR word `0..8`.
    Irr(usize),
    Esr,
    IcrLow,
    IcrHigh,
    Lvt(Lvt),
    TimerInitial,
    TimerCurrent,
    TimerDivide,
    SelfIpi,
}

impl Reg {
    /// The register at xAPIC `offset`, or `None` for reserved offsets and
    /// offsets that are not 16-byte aligned. [`Reg::SelfIpi`] decodes here
    /// too; the xAPIC access rules reject it.
    pub(crate) fn from_offset(offset: u32) -> Option<Self> {
        use offset::*;
        if !offset.is_multiple_of(16) {
            return None;
        }
        // Word index of an 8-register bank; the match arms bound it to 0..8.
        let word = |first: u32| ((offset - first) / 16) as usize;
        Some(match offset {
            ID => Reg::Id,
            VERSION => Reg::Version,
            TPR => Reg::Tpr,
            APR => Reg::Apr,
            PPR => Reg::Ppr,
            EOI => Reg::Eoi,
            RRD => Reg::Rrd,
            LDR => Reg::Ldr,
            DFR => Reg::Dfr,
            SVR => Reg::Svr,
            0x100..=0x170 => Reg::Isr(word(ISR)),
            0x180..=0x1F0 => Reg::Tmr(word(TMR)),
            0x200..=0x270 => Reg::Irr(word(IRR)),
            ESR => Reg::Esr,
            ICR_LOW => Reg::IcrLow,
            ICR_HIGH => Reg::IcrHigh,
            LVT_TIMER => Reg::Lvt(Lvt::Timer),
            LVT_THERMAL => Reg::Lvt(Lvt::Thermal),
            LVT_PERF => Reg::Lvt(Lvt::Perf),
            LVT_LINT0 => Reg::Lvt(Lvt::Lint0),
            LVT_LINT1 => Reg::Lvt(Lvt::Lint1),
            LVT_ERROR => Reg::Lvt(Lvt::Error),
            TIMER_INITIAL => Reg::TimerInitial,
            TIMER_CURRENT => Reg::TimerCurrent,
            TIMER_DIVIDE => Reg::TimerDivide,
            SELF_IPI => Reg::SelfIpi,
            _ => return None,
        })
    }

    /// The register behind x2APIC MSR `msr`, or `None` outside
    /// `0x800..=0x8FF` and for reserved MSRs in it.
    pub(crate) fn from_msr(msr: u32) -> Option<Self> {
        if !(MSR_X2APIC_FIRST..=MSR_X2APIC_LAST).contains(&msr) {
            return None;
        }
        Self::from_offset((msr - MSR_X2APIC_FIRST) * 16)
    }

    /// Whether the register exists in xAPIC mode (reads of others return 0).
    pub(crate) fn in_xapic(self) -> bool {
        self != Reg::SelfIpi
    }

    /// Whether xAPIC-mode writes change anything (others are ignored).
    pub(crate) fn xapic_writable(self) -> bool {
        matches!(
            self,
            Reg::Tpr
                | Reg::Eoi
                | Reg::Ldr
                | Reg::Dfr
                | Reg::Svr
                | Reg::Esr
                | Reg::IcrLow
                | Reg::IcrHigh
                | Reg::Lvt(_)
                | Reg::TimerInitial
                | Reg::TimerDivide
        )
    }

    /// Whether RDMSR of the register works in x2APIC mode (others #GP).
    pub(crate) fn x2apic_readable(self) -> bool {
        !matches!(self, Reg::Apr | Reg::Eoi | Reg::Rrd | Reg::Dfr | Reg::IcrHigh | Reg::SelfIpi)
    }

    /// For registers WRMSR accepts in x2APIC mode, the bits a write may set;
    /// a write with any other bit set raises #GP. `None`: WRMSR always #GPs
    /// (read-only, or absent in x2APIC mode).
    pub(crate) fn x2apic_write_mask(self) -> Option<u64> {
        let mask = match self {
            Reg::Tpr => 0xFF,
            // EOI and ESR accept only zero.
            Reg::Eoi | Reg::Esr => 0,
            Reg::Svr => SVR_VALID,
            Reg::IcrLow => return Some(0xFFFF_FFFF_0000_0000 | u64::from(ICR_VALID)),
            Reg::Lvt(lvt) => lvt.writable() | lvt.read_only(),
            Reg::TimerInitial => u32::MAX,
            Reg::TimerDivide => DIVIDE_VALID,
            Reg::SelfIpi => VECTOR_MASK,
            _ => return None,
        };
        Some(u64::from(mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_msrs_decode_to_the_same_registers() {
        assert_eq!(Reg::from_offset(offset::ID), Some(Reg::Id));
        assert_eq!(Reg::from_msr(0x802), Some(Reg::Id));
        assert_eq!(Reg::from_msr(0x803), Some(Reg::Version));
        assert_eq!(Reg::from_msr(0x808), Some(Reg::Tpr));
        assert_eq!(Reg::from_msr(0x80A), Some(Reg::Ppr));
        assert_eq!(Reg::from_msr(0x80B), Some(Reg::Eoi));
        assert_eq!(Reg::from_msr(0x80D), Some(Reg::Ldr));
        assert_eq!(Reg::from_msr(0x80F), Some(Reg::Svr));
        assert_eq!(Reg::from_msr(0x810), Some(Reg::Isr(0)));
        assert_eq!(Reg::from_msr(0x817), Some(Reg::Isr(7)));
        assert_eq!(Reg::from_msr(0x818), Some(Reg::Tmr(0)));
        assert_eq!(Reg::from_msr(0x81F), Some(Reg::Tmr(7)));
        assert_eq!(Reg::from_msr(0x820), Some(Reg::Irr(0)));
        assert_eq!(Reg::from_msr(0x827), Some(Reg::Irr(7)));
        assert_eq!(Reg::from_msr(0x828), Some(Reg::Esr));
        assert_eq!(Reg::from_msr(0x830), Some(Reg::IcrLow));
        assert_eq!(Reg::from_msr(0x832), Some(Reg::Lvt(Lvt::Timer)));
        assert_eq!(Reg::from_msr(0x837), Some(Reg::Lvt(Lvt::Error)));
        assert_eq!(Reg::from_msr(0x838), Some(Reg::TimerInitial));
        assert_eq!(Reg::from_msr(0x839), Some(Reg::TimerCurrent));
        assert_eq!(Reg::from_msr(0x83E), Some(Reg::TimerDivide));
        assert_eq!(Reg::from_msr(0x83F), Some(Reg::SelfIpi));
        assert_eq!(x2apic_msr(offset::SELF_IPI), 0x83F);
        assert_eq!(x2apic_msr(offset::ICR_LOW), 0x830);
    }

    #[test]
    fn reserved_and_unaligned_locations_decode_to_nothing() {
        for offset in [0x000, 0x010, 0x040, 0x070, 0x290, 0x2F0, 0x3A0, 0x3D0, 0x400, 0xFF0, u32::MAX] {
            assert_eq!(Reg::from_offset(offset), None, "offset {offset:#x}");
        }
        for offset in [0x021, 0x024, 0x08C, 0x30F] {
            assert_eq!(Reg::from_offset(offset), None, "offset {offset:#x}");
        }
        for msr in [0x7FF, 0x800, 0x801, 0x82F, 0x840, 0x8FF, 0x900, 0x1B, 0] {
            assert_eq!(Reg::from_msr(msr), None, "msr {msr:#x}");
        }
    }

    #[test]
    fn lvt_bits_never_overlap_between_writable_and_read_only() {
        for lvt in [Lvt::Timer, Lvt::Thermal, Lvt::Perf, Lvt::Lint0, Lvt::Lint1, Lvt::Error] {
            assert_eq!(lvt.writable() & lvt.read_only(), 0);
            assert_ne!(lvt.writable() & LVT_MASKED, 0);
        }
    }
}
