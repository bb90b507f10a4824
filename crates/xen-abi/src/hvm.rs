//! `hvm_op` (hypercall 34), HVM parameters and the toolstack's special pages
//! (`public/hvm/hvm_op.h`, `public/hvm/params.h`, libxenguest's special-page layout).
//!
//! Called as `hvm_op(cmd, arg)`. A PVH guest uses it mostly to read parameters the toolstack
//! set (where its xenstore and console rings are) and to choose how events are delivered
//! (`HVM_PARAM_CALLBACK_IRQ`, see [`CallbackVia`], or a per-vCPU upcall vector).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;

/// Set an HVM parameter ([`XenHvmParam`]).
pub const HVMOP_SET_PARAM: u32 = 0;
/// Read an HVM parameter ([`XenHvmParam`]).
pub const HVMOP_GET_PARAM: u32 = 1;
/// Device model: set a PCI INTx line level (interface < 4.9).
pub const HVMOP_SET_PCI_INTX_LEVEL: u32 = 2;
/// Device model: set an ISA IRQ level (interface < 4.9).
pub const HVMOP_SET_ISA_IRQ_LEVEL: u32 = 3;
/// Device model: route a PCI link (interface < 4.9).
pub const HVMOP_SET_PCI_LINK_ROUTE: u32 = 4;
/// Flush all guest TLBs (arg must be NULL).
pub const HVMOP_FLUSH_TLBS: u32 = 5;
/// The guest is about to drop a page table ([`XenHvmPagetableDying`]).
pub const HVMOP_PAGETABLE_DYING: u32 = 9;
/// Read the current system time ([`XenHvmGetTime`]).
pub const HVMOP_GET_TIME: u32 = 10;
/// Write a trace record.
pub const HVMOP_XENTRACE: u32 = 11;
/// Toolstack: set memory access rights.
pub const HVMOP_SET_MEM_ACCESS: u32 = 12;
/// Toolstack: read memory access rights.
pub const HVMOP_GET_MEM_ACCESS: u32 = 13;
/// Read the type of a guest frame.
pub const HVMOP_GET_MEM_TYPE: u32 = 15;
/// Set a per-vCPU event upcall vector ([`XenHvmEvtchnUpcallVector`]).
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;
/// Send a vm_event to the monitor.
pub const HVMOP_GUEST_REQUEST_VM_EVENT: u32 = 24;
/// Alternate p2m operations.
pub const HVMOP_ALTP2M: u32 = 25;

/// How event notifications reach the guest ([`CallbackVia`]); set by the guest.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// Guest frame of the xenstore ring (set by the toolstack).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// Guest's port of the xenstore event channel.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// Toolstack only: PAE is enabled.
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
/// Device model: ioreq page.
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
/// Device model: buffered ioreq page.
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// Viridian (Hyper-V) enlightenments (`HVMPV_*` bits).
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// Virtual timer mode (`HVMPTM_*`).
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
/// The HPET is emulated.
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// VMX: identity page table for unpaged real mode.
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// Toolstack only: the device-model domain.
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
/// ACPI S state the guest is in.
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
/// VMX: TSS for virtual 8086 mode.
pub const HVM_PARAM_VM86_TSS: u32 = 15;
/// Virtual platform timer alignment.
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// Guest frame of the PV console ring.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// Guest's port of the PV console event channel.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// Location of the ACPI PM I/O ports (0: old, 1: new).
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
/// Toolstack only (deprecated): memory event on CR0 writes.
pub const HVM_PARAM_MEMORY_EVENT_CR0: u32 = 20;
/// Toolstack only (deprecated): memory event on CR3 writes.
pub const HVM_PARAM_MEMORY_EVENT_CR3: u32 = 21;
/// Toolstack only (deprecated): memory event on CR4 writes.
pub const HVM_PARAM_MEMORY_EVENT_CR4: u32 = 22;
/// Toolstack only (deprecated): memory event on INT3.
pub const HVM_PARAM_MEMORY_EVENT_INT3: u32 = 23;
/// Toolstack only: nested virtualisation enabled.
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
/// Toolstack only (deprecated): memory event on single step.
pub const HVM_PARAM_MEMORY_EVENT_SINGLE_STEP: u32 = 25;
/// Toolstack only: buffered ioreq event channel.
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
/// Memory paging ring page.
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
/// Monitor ring page.
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
/// Memory sharing ring page.
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// Toolstack only (deprecated): memory event on MSR writes.
pub const HVM_PARAM_MEMORY_EVENT_MSR: u32 = 30;
/// `SHUTDOWN_*` reason for a triple fault (default reboot).
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
/// First page of the ioreq servers.
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
/// Number of ioreq server pages.
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// Address of the VM generation id.
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// Alternate p2m mode (`XEN_ALTP2M_*`).
pub const HVM_PARAM_ALTP2M: u32 = 35;
/// Width of the x87 FIP/FDP registers (0, 4 or 8).
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// VMX: vm86 TSS with its size in the top 32 bits.
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// Machine-check capabilities (`XEN_HVM_MCA_CAP_*`).
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// `HVM_NR_PARAMS`: parameter indices are below this.
pub const HVM_NR_PARAMS: u32 = 39;

/// `HVM_PARAM_CALLBACK_IRQ`: the type lives in bits 63:56.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Callback type: bits 55:0 are a GSI (0 would alias "disabled").
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u8 = 0;
/// Callback type: a PCI INTx line (see [`CallbackVia::PciIntx`]).
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u8 = 1;
/// Callback type (x86): bits 7:0 are an interrupt vector injected directly.
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u8 = 2;

/// `HVM_PARAM_TIMER_MODE` values.
pub const HVMPTM_DELAY_FOR_MISSED_TICKS: u64 = 0;
/// `HVM_PARAM_TIMER_MODE`: no delay for missed ticks.
pub const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
/// `HVM_PARAM_TIMER_MODE`: no missed ticks pending.
pub const HVMPTM_NO_MISSED_TICKS_PENDING: u64 = 2;
/// `HVM_PARAM_TIMER_MODE`: one missed tick pending.
pub const HVMPTM_ONE_MISSED_TICK_PENDING: u64 = 3;

/// A decoded `HVM_PARAM_CALLBACK_IRQ` value: where event-channel upcalls are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackVia {
    /// Value 0: no upcall delivery.
    Disabled,
    /// Type 0: a GSI (bits 55:0).
    Gsi(u64),
    /// Type 1: a PCI INTx line.
    PciIntx {
        /// PCI segment, bits 47:32.
        domain: u16,
        /// Bus, bits 31:16 (16 bits in the encoding).
        bus: u16,
        /// Device and function, bits 15:8.
        devfn: u8,
        /// INTA# to INTD# as 0 to 3, bits 1:0.
        intx: u8,
    },
    /// Type 2 (x86): inject this vector directly, no LAPIC or EOI involved.
    Vector(u8),
}

/// An `HVM_PARAM_CALLBACK_IRQ` value with a type Xen does not define (bits 63:56).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCallbackType(pub u8);

impl CallbackVia {
    /// Decodes a parameter value. Bits a type does not use are ignored, as Xen ignores them.
    pub const fn decode(value: u64) -> Result<Self, UnknownCallbackType> {
        if value == 0 {
            return Ok(Self::Disabled);
        }
        match (value >> 56) as u8 {
            HVM_PARAM_CALLBACK_TYPE_GSI => Ok(Self::Gsi(value & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK)),
            HVM_PARAM_CALLBACK_TYPE_PCI_INTX => Ok(Self::PciIntx {
                domain: (value >> 32) as u16,
                bus: (value >> 16) as u16,
                devfn: (value >> 8) as u8,
                intx: (value & 3) as u8,
            }),
            HVM_PARAM_CALLBACK_TYPE_VECTOR => Ok(Self::Vector(value as u8)),
            other => Err(UnknownCallbackType(other)),
        }
    }

    /// The parameter value. A GSI is truncated to its 56 bits and `intx` to its 2.
    pub const fn encode(self) -> u64 {
        const fn with_type(ty: u8, low: u64) -> u64 {
            (ty as u64) << 56 | (low & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK)
        }
        match self {
            Self::Disabled => 0,
            Self::Gsi(gsi) => with_type(HVM_PARAM_CALLBACK_TYPE_GSI, gsi),
            Self::PciIntx { domain, bus, devfn, intx } => with_type(
                HVM_PARAM_CALLBACK_TYPE_PCI_INTX,
                (domain as u64) << 32 | (bus as u64) << 16 | (devfn as u64) << 8 | (intx & 3) as u64,
            ),
            Self::Vector(vector) => with_type(HVM_PARAM_CALLBACK_TYPE_VECTOR, vector as u64),
        }
    }
}

/// `struct xen_hvm_param`: argument of `HVMOP_set_param` and `HVMOP_get_param`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmParam {
    /// Domain (usually [`DomId::SELF`]).
    pub domid: DomId,
    /// Padding (C `pad`).
    pub pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// IN for set, OUT for get.
    pub value: u64,
}

/// `struct xen_hvm_evtchn_upcall_vector`: argument of `HVMOP_set_evtchn_upcall_vector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmEvtchnUpcallVector {
    /// vCPU whose upcalls this vector receives.
    pub vcpu: u32,
    /// Vector, raised in the vCPU's local APIC (Xen rejects vectors below 0x10).
    pub vector: u8,
    /// Padding.
    pub _pad0: [u8; 3],
}

/// `struct xen_hvm_pagetable_dying`: argument of `HVMOP_pagetable_dying`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmPagetableDying {
    /// Domain (usually [`DomId::SELF`]).
    pub domid: DomId,
    /// Padding (C `pad`).
    pub pad: [u16; 3],
    /// Guest-physical address of the top-level page table being dropped.
    pub gpa: u64,
}

/// `struct xen_hvm_get_time`: argument of `HVMOP_get_time`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmGetTime {
    /// OUT: system time in ns.
    pub now: u64,
}

/// End (exclusive) of the special-page region libxenguest places below 4 GiB for an HVM/PVH
/// guest (`X86_HVM_END_SPECIAL_REGION`, a frame number).
pub const X86_HVM_END_SPECIAL_REGION: u64 = 0xff000;
/// Number of special pages (`X86_HVM_NR_SPECIAL_PAGES`).
pub const X86_HVM_NR_SPECIAL_PAGES: u64 = 8;
/// Special page index: memory paging ring.
pub const SPECIALPAGE_PAGING: u64 = 0;
/// Special page index: memory access ring.
pub const SPECIALPAGE_ACCESS: u64 = 1;
/// Special page index: memory sharing ring.
pub const SPECIALPAGE_SHARING: u64 = 2;
/// Special page index: buffered ioreq page.
pub const SPECIALPAGE_BUFIOREQ: u64 = 3;
/// Special page index: xenstore ring (`HVM_PARAM_STORE_PFN`).
pub const SPECIALPAGE_XENSTORE: u64 = 4;
/// Special page index: ioreq page.
pub const SPECIALPAGE_IOREQ: u64 = 5;
/// Special page index: identity page table (VMX).
pub const SPECIALPAGE_IDENT_PT: u64 = 6;
/// Special page index: PV console ring (`HVM_PARAM_CONSOLE_PFN`).
pub const SPECIALPAGE_CONSOLE: u64 = 7;

/// Guest frame of special page `index` (`special_pfn`): the pages end at
/// [`X86_HVM_END_SPECIAL_REGION`]. `None` for an index past the last page.
pub const fn special_pfn(index: u64) -> Option<u64> {
    if index < X86_HVM_NR_SPECIAL_PAGES {
        Some(X86_HVM_END_SPECIAL_REGION - X86_HVM_NR_SPECIAL_PAGES + index)
    } else {
        None
    }
}

assert_layout!(XenHvmParam, 16, { domid: 0, pad: 2, index: 4, value: 8 });
assert_layout!(XenHvmEvtchnUpcallVector, 8, { vcpu: 0, vector: 4 });
assert_layout!(XenHvmPagetableDying, 16, { domid: 0, pad: 2, gpa: 8 });
assert_layout!(XenHvmGetTime, 8, { now: 0 });

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn callback_vector_encoding() {
        assert_eq!(CallbackVia::Vector(0xf3).encode(), 0x0200_0000_0000_00f3);
        assert_eq!(CallbackVia::decode(0x0200_0000_0000_00f3), Ok(CallbackVia::Vector(0xf3)));
        // Xen only looks at the low byte of a vector value.
        assert_eq!(CallbackVia::decode(0x0200_0000_1234_56f3), Ok(CallbackVia::Vector(0xf3)));
    }

    #[test]
    fn callback_gsi_and_disabled() {
        assert_eq!(CallbackVia::decode(0), Ok(CallbackVia::Disabled));
        assert_eq!(CallbackVia::Disabled.encode(), 0);
        assert_eq!(CallbackVia::decode(28), Ok(CallbackVia::Gsi(28)));
        assert_eq!(CallbackVia::Gsi(28).encode(), 28);
        assert_eq!(CallbackVia::Gsi(u64::MAX).encode(), 0x00ff_ffff_ffff_ffff);
    }

    #[test]
    fn callback_pci_intx_fields() {
        let via = CallbackVia::PciIntx { domain: 1, bus: 0x12, devfn: 0x18, intx: 2 };
        assert_eq!(via.encode(), 0x0100_0001_0012_1802);
        assert_eq!(CallbackVia::decode(0x0100_0001_0012_1802), Ok(via));
    }

    #[test]
    fn callback_unknown_types() {
        assert_eq!(CallbackVia::decode(3 << 56), Err(UnknownCallbackType(3)));
        assert_eq!(CallbackVia::decode(u64::MAX), Err(UnknownCallbackType(0xff)));
    }

    #[test]
    fn special_pages_match_libxl() {
        assert_eq!(special_pfn(SPECIALPAGE_XENSTORE), Some(0xfeffc));
        assert_eq!(special_pfn(SPECIALPAGE_CONSOLE), Some(0xfefff));
        assert_eq!(special_pfn(SPECIALPAGE_PAGING), Some(0xfeff8));
        assert_eq!(special_pfn(8), None);
        assert_eq!(special_pfn(u64::MAX), None);
    }

    #[test]
    fn params_are_xens() {
        assert_eq!(HVM_PARAM_STORE_PFN, 1);
        assert_eq!(HVM_PARAM_STORE_EVTCHN, 2);
        assert_eq!(HVM_PARAM_CONSOLE_PFN, 17);
        assert_eq!(HVM_PARAM_CONSOLE_EVTCHN, 18);
        assert_eq!(HVM_PARAM_TRIPLE_FAULT_REASON, 31);
        assert_eq!(HVM_PARAM_MCA_CAP + 1, HVM_NR_PARAMS);
        assert_eq!(HVM_NR_PARAMS, 39);
        assert_eq!(HVMOP_SET_EVTCHN_UPCALL_VECTOR, 23);
    }

    proptest! {
        #[test]
        fn decode_encode_is_the_identity_on_canonical_values(value in any::<u64>()) {
            if let Ok(via) = CallbackVia::decode(value) {
                // Re-encoding keeps what the type uses; decoding that again gives the same via.
                prop_assert_eq!(CallbackVia::decode(via.encode()), Ok(via));
            }
        }

        #[test]
        fn encode_decode_round_trips(domain in any::<u16>(), bus in any::<u16>(), devfn in any::<u8>(), intx in 0u8..4,
                                     gsi in 1u64..(1 << 56), vector in any::<u8>()) {
            for via in [CallbackVia::PciIntx { domain, bus, devfn, intx }, CallbackVia::Gsi(gsi), CallbackVia::Vector(vector)] {
                prop_assert_eq!(CallbackVia::decode(via.encode()), Ok(via));
            }
        }
    }
}
