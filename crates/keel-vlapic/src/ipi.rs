//! Inter-processor interrupts: the message a vLAPIC sends when the guest
//! writes its interrupt command register, and the destination matching that
//! decides which vLAPICs receive it.
//!
//! A write to the ICR (xAPIC `0x300`, x2APIC MSR `0x830`) or to x2APIC
//! `SELF_IPI` becomes an [`Ipi`] in [`Actions::ipi`](crate::Actions::ipi).
//! keel then walks the domain's vCPUs, asks [`Ipi::targets`] about each
//! vLAPIC, and hands the message to the matching ones with
//! [`Vlapic::deliver`]. For [`Delivery::LowestPrio`], keel picks a single
//! vLAPIC among the matches (for instance the lowest [`Vlapic::ppr`]).
//!
//! Destination matching follows SDM vol. 3 §11.6.2 and §11.12.9-10: physical
//! IDs (broadcast `0xFF` in xAPIC mode, `0xFFFFFFFF` in x2APIC mode), the
//! xAPIC flat and cluster logical models, and the x2APIC cluster model. Like
//! Xen, each candidate interprets the destination in its own mode; mixing
//! xAPIC and x2APIC vCPUs in one domain is architecturally unsupported.

use crate::regs;
use crate::vlapic::{Mode, Vlapic};

/// How an interrupt message is delivered (ICR and LVT bits 10:8).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Delivery {
    /// 000: the vector, to every destination.
    Fixed,
    /// 001: the vector, to the destination with the lowest priority.
    LowestPrio,
    /// 010: system management interrupt (keel has no SMM: ignored).
    Smi,
    /// 100: non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (vector ignored).
    Init,
    /// 110: STARTUP, with the vector as the start page number.
    Startup,
    /// 111: external interrupt from an 8259. Valid in LVT entries and I/O
    /// APIC redirection entries but not in the ICR. No keel vLAPIC has an
    /// 8259 behind it, so delivery ignores it.
    ExtInt,
}

impl Delivery {
    /// Decodes the ICR delivery mode field (bits 10:8 of `icr`). `None` for
    /// the reserved encodings 011 (remote read on the 82489DX) and 111.
    pub(crate) fn from_icr(icr: u32) -> Option<Self> {
        Some(match (icr & regs::DELIVERY_MODE_MASK) >> 8 {
            0 => Delivery::Fixed,
            1 => Delivery::LowestPrio,
            2 => Delivery::Smi,
            4 => Delivery::Nmi,
            5 => Delivery::Init,
            6 => Delivery::Startup,
            _ => return None,
        })
    }

    /// Whether the message carries an interrupt vector, which must then be
    /// 16 or above.
    pub(crate) fn carries_vector(self) -> bool {
        matches!(self, Delivery::Fixed | Delivery::LowestPrio)
    }
}

/// Where an interrupt message goes.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Dest {
    /// Physical destination mode, no shorthand: the APIC with this ID. `0xFF`
    /// reaches every xAPIC-mode APIC and `0xFFFF_FFFF` every x2APIC-mode one.
    Physical(u32),
    /// Logical destination mode, no shorthand: the message destination
    /// address, compared with each APIC's LDR (and, in xAPIC mode, its DFR).
    Logical(u32),
    /// Shorthand 01: the sender only.
    Self_,
    /// Shorthand 10: every APIC, the sender included.
    AllIncludingSelf,
    /// Shorthand 11: every APIC but the sender.
    AllButSelf,
}

/// An interrupt message sent by a vLAPIC.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct Ipi {
    /// The vector (the start page for [`Delivery::Startup`]; ignored for
    /// NMI, SMI and INIT).
    pub vector: u8,
    /// How the message is delivered.
    pub delivery: Delivery,
    /// Where it goes.
    pub dest: Dest,
    /// Level (ICR bit 14): assert (`true`) or de-assert. It only matters for
    /// INIT, where a level-triggered de-assert is a no-op.
    pub level: bool,
    /// Trigger mode (ICR bit 15): level (`true`) or edge. The ICR's trigger
    /// bit only has a meaning for INIT (SDM §11.6.1), so decoding an ICR
    /// clears it for every other delivery mode. A level-triggered fixed
    /// message (as an I/O APIC would send) sets the receiver's TMR bit.
    pub trigger_level: bool,
}

impl Ipi {
    /// Decodes an ICR: `low` is bits 31:0, `dest` the destination field
    /// (ICR bits 63:56 in xAPIC mode, 63:32 in x2APIC mode). `None` for the
    /// reserved delivery modes, which send nothing.
    pub(crate) fn from_icr(low: u32, dest: u32) -> Option<Self> {
        let delivery = Delivery::from_icr(low)?;
        let dest = match (low & regs::ICR_SHORTHAND_MASK) >> 18 {
            0 if low & regs::ICR_DEST_LOGICAL != 0 => Dest::Logical(dest),
            0 => Dest::Physical(dest),
            1 => Dest::Self_,
            2 => Dest::AllIncludingSelf,
            _ => Dest::AllButSelf,
        };
        Some(Ipi {
            vector: (low & regs::VECTOR_MASK) as u8,
            delivery,
            dest,
            level: low & regs::ICR_ASSERT != 0,
            trigger_level: delivery == Delivery::Init && low & regs::TRIGGER_LEVEL != 0,
        })
    }

    /// Whether `candidate` is among the destinations of this message sent by
    /// the APIC whose ID is `sender_apic_id`. A hardware-disabled APIC is
    /// never a destination; whether a software-disabled one accepts the
    /// message is up to [`Vlapic::deliver`].
    pub fn targets(&self, sender_apic_id: u32, candidate: &Vlapic) -> bool {
        let x2apic = match candidate.mode() {
            Mode::Disabled => return false,
            Mode::XApic => false,
            Mode::X2Apic => true,
        };
        match self.dest {
            Dest::Physical(id) => id == candidate.apic_id() || id == if x2apic { u32::MAX } else { 0xFF },
            Dest::Logical(mda) if x2apic => matches_x2apic_logical(candidate.ldr(), mda),
            Dest::Logical(mda) => matches_xapic_logical(candidate.ldr(), candidate.dfr(), mda),
            Dest::Self_ => candidate.apic_id() == sender_apic_id,
            Dest::AllIncludingSelf => true,
            Dest::AllButSelf => candidate.apic_id() != sender_apic_id,
        }
    }
}

/// xAPIC logical destination matching (SDM §11.6.2.2), with the 8-bit
/// logical ID in LDR bits 31:24 and the model in DFR bits 31:28. An APIC
/// whose logical ID is 0 (as after reset) matches nothing.
fn matches_xapic_logical(ldr: u32, dfr: u32, mda: u32) -> bool {
    let id = (ldr >> 24) as u8;
    let mda = mda as u8;
    match dfr | !regs::DFR_MODEL_MASK {
        // Flat: a bitmap of up to eight APICs; 0xFF reaches all of them.
        regs::DFR_FLAT => id & mda != 0,
        // Cluster: cluster number in bits 7:4, a bitmap of four APICs in
        // bits 3:0; 0xFF reaches every cluster.
        regs::DFR_CLUSTER => (mda == 0xFF || id >> 4 == mda >> 4) && id & mda & 0xF != 0,
        // Other models are invalid and match nothing (as on Xen).
        _ => false,
    }
}

/// x2APIC logical destination matching (SDM §11.12.10.2): cluster in bits
/// 31:16, a bitmap of sixteen APICs in bits 15:0; `0xFFFF_FFFF` broadcasts.
fn matches_x2apic_logical(ldr: u32, mda: u32) -> bool {
    mda == u32::MAX || (ldr >> 16 == mda >> 16 && ldr & mda & 0xFFFF != 0)
}

/// The read-only x2APIC LDR derived from the x2APIC ID (SDM §11.12.10.2):
/// cluster `id[19:4]` in bits 31:16, bit `id[3:0]` set in bits 15:0.
pub(crate) fn x2apic_ldr(apic_id: u32) -> u32 {
    ((apic_id >> 4) << 16) | (1 << (apic_id & 0xF))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::{offset, BASE_EXTD};

    fn icr(low: u32, dest: u32) -> Ipi {
        Ipi::from_icr(low, dest).expect("valid ICR")
    }

    #[test]
    fn icr_decodes_every_delivery_mode() {
        let modes = [
            (0, Delivery::Fixed),
            (1, Delivery::LowestPrio),
            (2, Delivery::Smi),
            (4, Delivery::Nmi),
            (5, Delivery::Init),
            (6, Delivery::Startup),
        ];
        for (bits, delivery) in modes {
            let ipi = icr(bits << 8 | 0x42, 3);
            assert_eq!(ipi.delivery, delivery);
            assert_eq!(ipi.vector, 0x42);
            assert_eq!(ipi.dest, Dest::Physical(3));
        }
        assert_eq!(Ipi::from_icr(3 << 8 | 0x42, 3), None);
        assert_eq!(Ipi::from_icr(7 << 8 | 0x42, 3), None);
    }

    #[test]
    fn icr_decodes_every_shorthand_and_destination_mode() {
        assert_eq!(icr(0x30, 7).dest, Dest::Physical(7));
        assert_eq!(icr(0x830, 7).dest, Dest::Logical(7));
        assert_eq!(icr(1 << 18 | 0x830, 7).dest, Dest::Self_);
        assert_eq!(icr(2 << 18 | 0x30, 7).dest, Dest::AllIncludingSelf);
        assert_eq!(icr(3 << 18 | 0x830, 7).dest, Dest::AllButSelf);
    }

    #[test]
    fn icr_level_and_trigger_bits() {
        // Linux: INIT assert, then INIT de-assert, both level-triggered.
        let assert = icr(0xC500, 2);
        assert!(assert.level && assert.trigger_level);
        let deassert = icr(0x8500, 2);
        assert!(!deassert.level && deassert.trigger_level);
        // The trigger bit means nothing for a fixed IPI.
        let fixed = icr(0xC0F6, 2);
        assert!(fixed.level && !fixed.trigger_level);
    }

    fn xapic(apic_id: u32) -> Vlapic {
        Vlapic::new(apic_id, apic_id == 0)
    }

    fn x2apic(apic_id: u32) -> Vlapic {
        let mut v = xapic(apic_id);
        let _ = v.write_apic_base(v.apic_base() | BASE_EXTD).expect("xAPIC to x2APIC");
        v
    }

    fn logical(apic_id: u32, ldr: u32, dfr: u32) -> Vlapic {
        let mut v = xapic(apic_id);
        let _ = v.mmio_write(offset::LDR, ldr, 0);
        let _ = v.mmio_write(offset::DFR, dfr, 0);
        v
    }

    fn to(dest: Dest) -> Ipi {
        Ipi { vector: 0x40, delivery: Delivery::Fixed, dest, level: true, trigger_level: false }
    }

    #[test]
    fn physical_destinations_and_broadcast() {
        let (a, b) = (xapic(2), xapic(4));
        assert!(to(Dest::Physical(2)).targets(0, &a));
        assert!(!to(Dest::Physical(2)).targets(0, &b));
        assert!(to(Dest::Physical(0xFF)).targets(0, &a));
        assert!(to(Dest::Physical(0xFF)).targets(0, &b));
        // 0xFF is an ordinary ID to an x2APIC, 0xFFFFFFFF the broadcast.
        let (c, d) = (x2apic(0xFF), x2apic(0x100));
        assert!(to(Dest::Physical(0xFF)).targets(0, &c));
        assert!(!to(Dest::Physical(0xFF)).targets(0, &d));
        assert!(to(Dest::Physical(0x100)).targets(0, &d));
        assert!(to(Dest::Physical(u32::MAX)).targets(0, &c));
        assert!(to(Dest::Physical(u32::MAX)).targets(0, &d));
    }

    #[test]
    fn shorthands() {
        let (me, other) = (xapic(2), xapic(4));
        assert!(to(Dest::Self_).targets(2, &me));
        assert!(!to(Dest::Self_).targets(2, &other));
        assert!(to(Dest::AllIncludingSelf).targets(2, &me));
        assert!(to(Dest::AllIncludingSelf).targets(2, &other));
        assert!(!to(Dest::AllButSelf).targets(2, &me));
        assert!(to(Dest::AllButSelf).targets(2, &other));
    }

    #[test]
    fn hardware_disabled_apics_are_never_destinations() {
        let mut v = xapic(2);
        let _ = v.write_apic_base(regs::XAPIC_BASE).expect("disable");
        for dest in [Dest::Physical(2), Dest::Physical(0xFF), Dest::AllIncludingSelf, Dest::Self_, Dest::Logical(0xFF)]
        {
            assert!(!to(dest).targets(2, &v), "{dest:?}");
        }
    }

    #[test]
    fn xapic_flat_logical() {
        let a = logical(0, 0x0100_0000, 0xFFFF_FFFF);
        let b = logical(2, 0x0200_0000, 0xFFFF_FFFF);
        let unset = logical(4, 0, 0xFFFF_FFFF);
        assert!(to(Dest::Logical(0x01)).targets(0, &a));
        assert!(!to(Dest::Logical(0x01)).targets(0, &b));
        assert!(to(Dest::Logical(0x03)).targets(0, &a));
        assert!(to(Dest::Logical(0x03)).targets(0, &b));
        assert!(to(Dest::Logical(0xFF)).targets(0, &b));
        assert!(!to(Dest::Logical(0xFF)).targets(0, &unset));
    }

    #[test]
    fn xapic_cluster_logical() {
        // Cluster 1, member bit 2; cluster 2, member bit 2.
        let a = logical(0, 0x1400_0000, 0x0FFF_FFFF);
        let b = logical(2, 0x2400_0000, 0x0FFF_FFFF);
        assert!(to(Dest::Logical(0x14)).targets(0, &a));
        assert!(to(Dest::Logical(0x1F)).targets(0, &a));
        assert!(!to(Dest::Logical(0x14)).targets(0, &b));
        assert!(!to(Dest::Logical(0x11)).targets(0, &a));
        assert!(to(Dest::Logical(0x24)).targets(0, &b));
        // 0xFF reaches every cluster.
        assert!(to(Dest::Logical(0xFF)).targets(0, &a));
        assert!(to(Dest::Logical(0xFF)).targets(0, &b));
        // An invalid model matches nothing.
        let bad = logical(4, 0x1400_0000, 0x5FFF_FFFF);
        assert!(!to(Dest::Logical(0x14)).targets(0, &bad));
    }

    #[test]
    fn x2apic_cluster_logical() {
        // x2APIC ID 0x12: cluster 1, member bit 2: LDR 0x0001_0004.
        let v = x2apic(0x12);
        assert_eq!(v.ldr(), 0x0001_0004);
        assert!(to(Dest::Logical(0x0001_0004)).targets(0, &v));
        assert!(to(Dest::Logical(0x0001_FFFF)).targets(0, &v));
        assert!(!to(Dest::Logical(0x0001_0008)).targets(0, &v));
        assert!(!to(Dest::Logical(0x0002_0004)).targets(0, &v));
        assert!(to(Dest::Logical(u32::MAX)).targets(0, &v));
        assert_eq!(x2apic_ldr(0), 1);
        assert_eq!(x2apic_ldr(0xF), 0x8000);
        assert_eq!(x2apic_ldr(0xFFFF_FFFF), 0xFFFF_8000);
    }
}
