//! `physdev_op` (hypercall 33): physical interrupts and PCI devices (`public/physdev.h`).
//!
//! Called as `physdev_op(cmd, arg)`. Mostly for the hardware domain (dom0): mapping GSIs and
//! MSIs to PIRQs, reporting PCI devices and MMCONFIG areas to the hypervisor.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;
use crate::memory::XenPfn;

/// PV: raise the IRQ-unmask notification (obsolete).
pub const PHYSDEVOP_IRQ_UNMASK_NOTIFY: u32 = 4;
/// Query a PIRQ's flags ([`PhysdevIrqStatusQuery`]).
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u32 = 5;
/// PV: set the I/O privilege level.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// PV: set the I/O port bitmap.
pub const PHYSDEVOP_SET_IOBITMAP: u32 = 7;
/// Read an IOAPIC register.
pub const PHYSDEVOP_APIC_READ: u32 = 8;
/// Write an IOAPIC register.
pub const PHYSDEVOP_APIC_WRITE: u32 = 9;
/// Allocate a vector for an IRQ.
pub const PHYSDEVOP_ALLOC_IRQ_VECTOR: u32 = 10;
/// Free an IRQ's vector.
pub const PHYSDEVOP_FREE_IRQ_VECTOR: u32 = 11;
/// End of interrupt for a PIRQ ([`PhysdevEoi`]).
pub const PHYSDEVOP_EOI: u32 = 12;
/// Map a GSI or MSI to a PIRQ ([`PhysdevMapPirq`]).
pub const PHYSDEVOP_MAP_PIRQ: u32 = 13;
/// Unmap a PIRQ ([`PhysdevUnmapPirq`]).
pub const PHYSDEVOP_UNMAP_PIRQ: u32 = 14;
/// Report a PCI device (old form).
pub const PHYSDEVOP_MANAGE_PCI_ADD: u32 = 15;
/// Remove a PCI device (old form).
pub const PHYSDEVOP_MANAGE_PCI_REMOVE: u32 = 16;
/// Register a PIRQ EOI bitmap frame (v1).
pub const PHYSDEVOP_PIRQ_EOI_GMFN_V1: u32 = 17;
/// Restore a device's MSI state after resume.
pub const PHYSDEVOP_RESTORE_MSI: u32 = 19;
/// Report a PCI device with extended information (old form).
pub const PHYSDEVOP_MANAGE_PCI_ADD_EXT: u32 = 20;
/// Configure a GSI's trigger and polarity ([`PhysdevSetupGsi`]).
pub const PHYSDEVOP_SETUP_GSI: u32 = 21;
/// Allocate a free PIRQ ([`PhysdevGetFreePirq`]).
pub const PHYSDEVOP_GET_FREE_PIRQ: u32 = 23;
/// Report an MMCONFIG area ([`PhysdevPciMmcfgReserved`]).
pub const PHYSDEVOP_PCI_MMCFG_RESERVED: u32 = 24;
/// Report a PCI device ([`PhysdevPciDeviceAdd`]).
pub const PHYSDEVOP_PCI_DEVICE_ADD: u32 = 25;
/// Remove a PCI device ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_PCI_DEVICE_REMOVE: u32 = 26;
/// Restore a device's MSI state ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_RESTORE_MSI_EXT: u32 = 27;
/// Register a PIRQ EOI bitmap frame (v2; [`PhysdevPirqEoiGmfn`]).
pub const PHYSDEVOP_PIRQ_EOI_GMFN_V2: u32 = 28;
/// Debug-port (USB debug) operation.
pub const PHYSDEVOP_DBGP_OP: u32 = 29;
/// Prepare a device's MSI-X table ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_PREPARE_MSIX: u32 = 30;
/// Release a device's MSI-X table ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_RELEASE_MSIX: u32 = 31;

/// PIRQ flag: the guest must issue `PHYSDEVOP_eoi`.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// PIRQ flag: the IRQ is shared.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// Map type: MSI.
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
/// Map type: GSI.
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
/// Map type: unknown.
pub const MAP_PIRQ_TYPE_UNKNOWN: i32 = 2;
/// Map type: MSI with a PCI segment (`bus` carries `seg << 16 | bus`).
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
/// Map type: several MSI vectors (`entry_nr` of them).
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `physdev_pci_mmcfg_reserved.flags`: the area is reserved in the E820 map.
pub const XEN_PCI_MMCFG_RESERVED: u32 = 1;
/// `physdev_pci_device_add.flags`: an ARI extended function.
pub const XEN_PCI_DEV_EXTFN: u32 = 1;
/// `physdev_pci_device_add.flags`: an SR-IOV virtual function (`physfn` is its parent).
pub const XEN_PCI_DEV_VIRTFN: u32 = 2;
/// `physdev_pci_device_add.flags`: `optarr[0]` is the device's proximity domain.
pub const XEN_PCI_DEV_PXM: u32 = 4;

/// `struct physdev_eoi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevEoi {
    /// PIRQ.
    pub irq: u32,
}

/// `struct physdev_pirq_eoi_gmfn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPirqEoiGmfn {
    /// Guest frame of the EOI bitmap.
    pub gmfn: XenPfn,
}

/// `struct physdev_irq_status_query`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevIrqStatusQuery {
    /// PIRQ.
    pub irq: u32,
    /// OUT: `XENIRQSTAT_*`.
    pub flags: u32,
}

/// `struct physdev_map_pirq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevMapPirq {
    /// Domain to map for.
    pub domid: DomId,
    /// Padding.
    pub _pad0: u16,
    /// C `type`: `MAP_PIRQ_TYPE_*`.
    pub type_: i32,
    /// GSI, or MSI-X entry index.
    pub index: i32,
    /// IN: wanted PIRQ (or -1 for any); OUT: the PIRQ.
    pub pirq: i32,
    /// PCI bus (MSI).
    pub bus: i32,
    /// PCI device/function (MSI).
    pub devfn: i32,
    /// MSI-X entry, or number of vectors for multi-MSI.
    pub entry_nr: i32,
    /// Padding.
    pub _pad1: u32,
    /// MSI-X table base.
    pub table_base: u64,
}

/// `struct physdev_unmap_pirq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevUnmapPirq {
    /// Domain.
    pub domid: DomId,
    /// Padding.
    pub _pad0: u16,
    /// PIRQ to unmap.
    pub pirq: i32,
}

/// `struct physdev_setup_gsi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevSetupGsi {
    /// GSI.
    pub gsi: i32,
    /// 0 edge, 1 level.
    pub triggering: u8,
    /// 0 active high, 1 active low.
    pub polarity: u8,
    /// Padding.
    pub _pad0: u16,
}

/// `struct physdev_get_free_pirq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevGetFreePirq {
    /// C `type`: `MAP_PIRQ_TYPE_*`.
    pub type_: i32,
    /// OUT: the PIRQ.
    pub pirq: u32,
}

/// `struct physdev_pci_mmcfg_reserved`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPciMmcfgReserved {
    /// Base address of the area.
    pub address: u64,
    /// PCI segment.
    pub segment: u16,
    /// First bus covered.
    pub start_bus: u8,
    /// Last bus covered.
    pub end_bus: u8,
    /// `XEN_PCI_MMCFG_*`.
    pub flags: u32,
}

/// A PCI bus and device/function pair (the anonymous `physfn` struct).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPhysfn {
    /// Bus.
    pub bus: u8,
    /// Device and function.
    pub devfn: u8,
}

/// `struct physdev_pci_device_add`, without its variable-length tail `optarr[]` (one `u32`
/// per optional flag, e.g. the proximity domain after [`XEN_PCI_DEV_PXM`]), which starts at
/// byte 12.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPciDeviceAdd {
    /// PCI segment.
    pub seg: u16,
    /// Bus.
    pub bus: u8,
    /// Device and function.
    pub devfn: u8,
    /// `XEN_PCI_DEV_*`.
    pub flags: u32,
    /// The physical function, for a virtual function.
    pub physfn: PhysdevPhysfn,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `struct physdev_pci_device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPciDevice {
    /// PCI segment.
    pub seg: u16,
    /// Bus.
    pub bus: u8,
    /// Device and function.
    pub devfn: u8,
}

assert_layout!(PhysdevEoi, 4, { irq: 0 });
assert_layout!(PhysdevPirqEoiGmfn, 8, { gmfn: 0 });
assert_layout!(PhysdevIrqStatusQuery, 8, { irq: 0, flags: 4 });
assert_layout!(PhysdevMapPirq, 40, {
    domid: 0, type_: 4, index: 8, pirq: 12, bus: 16, devfn: 20, entry_nr: 24, table_base: 32,
});
assert_layout!(PhysdevUnmapPirq, 8, { domid: 0, pirq: 4 });
assert_layout!(PhysdevSetupGsi, 8, { gsi: 0, triggering: 4, polarity: 5 });
assert_layout!(PhysdevGetFreePirq, 8, { type_: 0, pirq: 4 });
assert_layout!(PhysdevPciMmcfgReserved, 16, { address: 0, segment: 8, start_bus: 10, end_bus: 11, flags: 12 });
assert_layout!(PhysdevPhysfn, 2, { bus: 0, devfn: 1 });
assert_layout!(PhysdevPciDeviceAdd, 12, { seg: 0, bus: 2, devfn: 3, flags: 4, physfn: 8 });
assert_layout!(PhysdevPciDevice, 4, { seg: 0, bus: 2, devfn: 3 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_ops_are_xens() {
        assert_eq!(PHYSDEVOP_EOI, 12);
        assert_eq!(PHYSDEVOP_MAP_PIRQ, 13);
        assert_eq!(PHYSDEVOP_UNMAP_PIRQ, 14);
        assert_eq!(PHYSDEVOP_SETUP_GSI, 21);
        assert_eq!(PHYSDEVOP_GET_FREE_PIRQ, 23);
        assert_eq!(PHYSDEVOP_PCI_DEVICE_ADD, 25);
        assert_eq!(PHYSDEVOP_RELEASE_MSIX, 31);
        assert_eq!(MAP_PIRQ_TYPE_MULTI_MSI, 4);
    }
}
